//! Judging: the checks every vector gets from its call's register class (vmi-abi.md §4.1), the
//! relocation answers (§3.2, §3.5), and turning vector outcomes into one verdict per call.

use super::vectors::{Ctx, Flow, Spec};
use super::{CallVerdict, Verdict};
use crate::guest::Val;
use crate::protocol::{Exception, Regs, Samples, VectorResult};
use vmi_abi::calls::{CallSpec, Reg, RegClass, RelocType};
use vmi_abi::consts::{LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_PERCPU, LINUX_USER_DS};

/// EFLAGS.CF.
pub(crate) const CF: u32 = 1 << 0;
/// EFLAGS.PF.
pub(crate) const PF: u32 = 1 << 2;
/// EFLAGS.AF.
pub(crate) const AF: u32 = 1 << 4;
/// EFLAGS.ZF.
pub(crate) const ZF: u32 = 1 << 6;
/// EFLAGS.SF.
pub(crate) const SF: u32 = 1 << 7;
/// EFLAGS.TF.
pub(crate) const TF: u32 = 1 << 8;
/// EFLAGS.IF.
pub(crate) const IF: u32 = 1 << 9;
/// EFLAGS.DF.
pub(crate) const DF: u32 = 1 << 10;
/// EFLAGS.OF.
pub(crate) const OF: u32 = 1 << 11;
/// EFLAGS.IOPL.
pub(crate) const IOPL: u32 = 3 << 12;
/// EFLAGS.NT.
pub(crate) const NT: u32 = 1 << 14;
/// EFLAGS.RF.
pub(crate) const RF: u32 = 1 << 16;
/// EFLAGS.VM.
pub(crate) const VM: u32 = 1 << 17;
/// EFLAGS.AC.
pub(crate) const AC: u32 = 1 << 18;
/// EFLAGS.VIF.
pub(crate) const VIF: u32 = 1 << 19;
/// EFLAGS.VIP.
pub(crate) const VIP: u32 = 1 << 20;
/// EFLAGS.ID.
pub(crate) const ID: u32 = 1 << 21;
/// The arithmetic flags: the only ones a class-X call may change.
pub(crate) const ARITH: u32 = CF | PF | AF | ZF | SF | OF;
/// EFLAGS of most vectors: CF, ZF, SF, AC and ID set (a pattern a routine that rewrites
/// EFLAGS wholesale cannot keep by accident), IF = DF = TF = NT = 0, IOPL 0.
pub(crate) const VEC_EFLAGS: u32 = 0x2 | CF | ZF | SF | AC | ID;
/// System flags a class-C call must not change either (the C compiler never does).
const C_SYSTEM: u32 = TF | IF | IOPL | NT | AC | ID;

const FLAG_NAMES: [(u32, &str); 17] = [
    (CF, "CF"),
    (PF, "PF"),
    (AF, "AF"),
    (ZF, "ZF"),
    (SF, "SF"),
    (TF, "TF"),
    (IF, "IF"),
    (DF, "DF"),
    (OF, "OF"),
    (IOPL, "IOPL"),
    (NT, "NT"),
    (RF, "RF"),
    (VM, "VM"),
    (AC, "AC"),
    (VIF, "VIF"),
    (VIP, "VIP"),
    (ID, "ID"),
];

/// The names of the flags in `bits` (`"IF|AC"`).
pub(crate) fn flag_names(bits: u32) -> String {
    let names: Vec<&str> = FLAG_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{bits:#x}")
    } else {
        names.join("|")
    }
}

/// What a vector's checks found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    /// Why the vector fails (empty: it passes).
    pub problems: Vec<String>,
    /// Observations worth reporting either way.
    pub notes: Vec<String>,
    /// Why the vector could not be judged although it ran (the platform could not measure
    /// what it checks, e.g. a host too busy to time an alarm): it neither passes nor fails.
    pub inconclusive: Option<String>,
}

impl Findings {
    /// Records a failure.
    pub(crate) fn fail(&mut self, why: impl Into<String>) {
        self.problems.push(why.into());
    }

    /// Records an observation.
    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    /// Fails with "`what`: expected E (`why`), got G" unless `got == expected`.
    pub(crate) fn expect(&mut self, what: &str, expected: u32, got: u32, why: &str) {
        if got != expected {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            self.fail(format!(
                "{what}: expected {expected:#010x}{why}, got {got:#010x}"
            ));
        }
    }

    /// [`Findings::expect`] for 64-bit values.
    pub(crate) fn expect64(&mut self, what: &str, expected: u64, got: u64, why: &str) {
        if got != expected {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            self.fail(format!(
                "{what}: expected {expected:#018x}{why}, got {got:#018x}"
            ));
        }
    }

    /// Records why the vector cannot be judged (the first reason counts).
    pub(crate) fn inconclusive(&mut self, why: impl Into<String>) {
        self.inconclusive.get_or_insert_with(|| why.into());
    }

    /// Fails with `why` unless `ok`.
    pub(crate) fn ensure(&mut self, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(why());
        }
    }
}

/// What the guest reported for one vector, as its check sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen<'a> {
    /// The `VECTOR_RESULT`.
    pub r: &'a VectorResult,
    /// The first `TRAP` the vector caused.
    pub trap: Option<&'a Exception>,
    /// Its `SAMPLES` (alarm scenarios).
    pub samples: Option<&'a Samples>,
    /// Results of the same call's earlier vectors, in order.
    pub earlier: &'a [&'a VectorResult],
    /// The reference run right before this vector (a spec marked
    /// [`reference`](super::vectors::Spec::reference) of the same call), if it ran.
    pub reference: Option<Reference<'a>>,
    /// The host's Unix time at the count 0 of the run's PM timer, where that timer runs on
    /// the host's clock (the kvm engine's); None elsewhere.
    pub host_clock: Option<std::time::Duration>,
    /// The PIT edges the KVM runner's IRQ0 thread coalesced in the run because it woke late
    /// ([`crate::kvm::irq0::Irq0Report::coalesced`]); None where the engine's PIT is not the
    /// runner's.
    pub irq0_coalesced: Option<u64>,
}

/// What a reference vector (the native instruction in place of the ROM call) showed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reference<'a> {
    /// Its `VECTOR_RESULT`.
    pub r: &'a VectorResult,
    /// Its first `TRAP`.
    pub trap: Option<&'a Exception>,
}

/// Upper-case register name (`"EBX"`).
pub(crate) fn reg_name(r: Reg) -> String {
    r.name().to_ascii_uppercase()
}

/// Linux's kernel-mode segments, as the guest loads them before every call.
pub(crate) const KERNEL_SEGMENTS: [(&str, u16); 6] = [
    ("CS", LINUX_KERNEL_CS),
    ("SS", LINUX_KERNEL_DS),
    ("DS", LINUX_USER_DS),
    ("ES", LINUX_USER_DS),
    ("FS", LINUX_PERCPU),
    ("GS", 0),
];

fn segment(regs: &Regs, name: &str) -> u16 {
    match name {
        "CS" => regs.cs,
        "SS" => regs.ss,
        "DS" => regs.ds,
        "ES" => regs.es,
        "FS" => regs.fs,
        _ => regs.gs,
    }
}

/// Registers outside `clobbers` must hold what the guest loaded (input or canary).
pub(crate) fn check_preserved(
    spec: &Spec,
    class: RegClass,
    clobbers: vmi_abi::calls::RegSet,
    regs: &Regs,
    f: &mut Findings,
) {
    for reg in Reg::ALL {
        if clobbers.contains(reg) {
            continue;
        }
        let Val::Imm(expected) = spec.vector.input(reg) else {
            continue;
        };
        let got = regs.get(reg);
        if got != expected {
            let kind = if spec.vector.regs.iter().any(|(r, _)| *r == reg) {
                "its input"
            } else {
                "canary"
            };
            f.fail(format!(
                "{}: expected {expected:#010x} ({kind}), got {got:#010x} (a class-{} call must \
                 preserve it)",
                reg_name(reg),
                class.tag()
            ));
        }
    }
}

/// Segment registers must be Linux's kernel-mode ones.
pub(crate) fn check_segments(regs: &Regs, f: &mut Findings) {
    for (name, expected) in KERNEL_SEGMENTS {
        let got = segment(regs, name);
        if got != expected {
            f.fail(format!("{name}: expected {expected:#06x}, got {got:#06x}"));
        }
    }
}

/// DF must be clear; class X keeps every non-arithmetic flag, class C the system flags
/// (except what the call is about, `may_change`).
pub(crate) fn check_flags(spec: &Spec, class: RegClass, after: u32, f: &mut Findings) {
    if after & DF != 0 {
        f.fail(format!(
            "EFLAGS.DF set on return (EFLAGS {after:#010x}); it must be 0"
        ));
    }
    let before = spec.vector.eflags;
    let kept = match class {
        RegClass::X => !(ARITH | RF | DF | spec.may_change),
        RegClass::C | RegClass::N => C_SYSTEM & !spec.may_change,
    };
    let diff = (after ^ before) & kept;
    if diff != 0 {
        f.fail(format!(
            "EFLAGS.{} changed (before {before:#010x}, after {after:#010x}); a class-{} call \
             may change {}",
            flag_names(diff),
            class.tag(),
            match class {
                RegClass::X => "only the arithmetic flags",
                _ => "the arithmetic flags but not the system flags",
            }
        ));
    }
}

/// The checks every vector of `spec`'s flow gets, before its own.
pub(crate) fn common(spec: &Spec, call: &CallSpec, ctx: &Ctx, seen: &Seen<'_>, f: &mut Findings) {
    let r = seen.r;
    match spec.flow {
        Flow::Returns => {
            if !r.returned_to_site {
                f.fail("did not return to its call site");
                return;
            }
            check_preserved(spec, call.class, call.clobbers(), &r.regs, f);
            let expected_esp = ctx
                .stack_top
                .wrapping_sub(4 * spec.vector.stack.len() as u32);
            if r.regs.esp != expected_esp {
                f.fail(format!(
                    "ESP: expected {expected_esp:#010x} (as before the call), got {:#010x}",
                    r.regs.esp
                ));
            }
            check_segments(&r.regs, f);
            check_flags(spec, call.class, r.regs.eflags, f);
        }
        Flow::Resumes => {
            if r.returned_to_site {
                f.fail(
                    "returned to its call site like a plain function instead of continuing at \
                     the frame's EIP",
                );
            }
        }
        Flow::Traps => {
            if r.returned_to_site {
                f.fail("returned to its call site instead of leaving to ring 3");
            } else if seen.trap.is_none() {
                f.fail("never reached the ring-3 stub (no trap came from it)");
            }
        }
        Flow::Faults => {
            if r.returned_to_site {
                f.fail("returned to its call site instead of raising the fault");
            } else if seen.trap.is_none() {
                f.fail(
                    "no exception was delivered: the return completed (control reached the \
                     frame's EIP)",
                );
            }
        }
        Flow::Shutdown | Flow::Reboot => {}
    }
}

/// The relocation type a DL value stands for, as the report spells it.
pub(crate) fn reloc_name(dl: u8) -> String {
    match RelocType::from_u8(dl) {
        Some(t) => t.name().to_string(),
        None => format!("type {dl}"),
    }
}

/// How one vector (or scenario run) of a call came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Judged {
    /// It ran; these are its findings.
    Checked(Findings),
    /// It killed the guest, or never got to run because of the ROM, because …
    Failed(String),
    /// The engine cannot run it (kvm-pvm cannot emulate an instruction), because …
    Unsupported(String),
    /// It ran, but the platform could not measure what it checks, because …
    Inconclusive(String),
}

impl Judged {
    /// A vector's findings: checked, or inconclusive when nothing failed but it could not be
    /// judged.
    pub(crate) fn of(f: Findings) -> Judged {
        match (&f.inconclusive, f.problems.is_empty()) {
            (Some(why), true) => Judged::Inconclusive(why.clone()),
            _ => Judged::Checked(f),
        }
    }
}

/// The verdict of a call from its vectors' outcomes.
pub(crate) fn aggregate(
    base: CallVerdict,
    outcomes: &[(String, Judged)],
    notes: &[String],
) -> CallVerdict {
    let mut v = base;
    let mut problems = Vec::new();
    let mut unsupported = Vec::new();
    let mut inconclusive = Vec::new();
    let mut passed = Vec::new();
    let mut all_notes: Vec<String> = notes.to_vec();
    for (what, o) in outcomes {
        match o {
            Judged::Checked(f) => {
                for p in &f.problems {
                    problems.push(format!("{what}: {p}"));
                }
                if f.problems.is_empty() {
                    passed.push(what.as_str());
                }
                for n in &f.notes {
                    let n = format!("{what}: {n}");
                    if !all_notes.contains(&n) {
                        all_notes.push(n);
                    }
                }
            }
            Judged::Failed(why) => problems.push(format!("{what}: {why}")),
            Judged::Unsupported(why) => unsupported.push(format!("{what}: {why}")),
            Judged::Inconclusive(why) => inconclusive.push(format!("{what}: {why}")),
        }
    }
    v.checks = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, Judged::Unsupported(_)))
        .count();
    if !problems.is_empty() {
        v.verdict = Verdict::Fail;
        v.detail = problems.join("; ");
    } else if passed.is_empty() {
        v.verdict = Verdict::Skipped;
        let mut why = Vec::new();
        if !unsupported.is_empty() {
            why.push(format!(
                "the engine cannot run it: {}",
                unsupported.join("; ")
            ));
        }
        if !inconclusive.is_empty() {
            why.push(format!("inconclusive: {}", inconclusive.join("; ")));
        }
        v.detail = why.join("; ");
    } else {
        v.verdict = Verdict::Pass;
        let mut detail = format!(
            "{} check{} passed: {}",
            passed.len(),
            if passed.len() == 1 { "" } else { "s" },
            passed.join(", ")
        );
        if !unsupported.is_empty() {
            detail.push_str(&format!(
                "; not run (the engine cannot): {}",
                unsupported.join("; ")
            ));
        }
        if !inconclusive.is_empty() {
            detail.push_str(&format!("; inconclusive: {}", inconclusive.join("; ")));
        }
        if !all_notes.is_empty() {
            detail.push_str("; ");
            detail.push_str(&all_notes.join("; "));
        }
        v.detail = detail;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(flag_names(IF | AC), "IF|AC");
        assert_eq!(flag_names(0), "0x0");
        assert_eq!(VEC_EFLAGS, 0x0024_00C3);
        assert_eq!(ARITH, 0x8D5);
        let mut f = Findings::default();
        f.expect("EAX", 0x101000, 0x101004, "CR3");
        assert_eq!(
            f.problems,
            ["EAX: expected 0x00101000 (CR3), got 0x00101004"]
        );
        assert_eq!(reloc_name(2), "JUMP_REL");
        assert_eq!(reloc_name(7), "type 7");
    }

    #[test]
    fn inconclusive_vectors_neither_pass_nor_fail() {
        let base = CallVerdict {
            call: 68,
            name: "SetAlarm",
            reloc: "CALL_REL".into(),
            verdict: Verdict::Skipped,
            detail: String::new(),
            checks: 0,
            eip: None,
            exits: None,
        };
        let busy = |why: &str| {
            let mut f = Findings::default();
            f.inconclusive(why);
            f.inconclusive("a later reason is dropped");
            Judged::of(f)
        };
        assert_eq!(busy("host busy"), Judged::Inconclusive("host busy".into()));
        // A failure wins over being inconclusive.
        let mut f = Findings::default();
        f.inconclusive("host busy");
        f.fail("fired early");
        assert!(matches!(Judged::of(f), Judged::Checked(_)));
        let passed = ("one-shot".to_string(), Judged::Checked(Findings::default()));
        let rate = ("rate".to_string(), busy("host busy"));
        let v = aggregate(base.clone(), &[passed, rate.clone()], &[]);
        assert_eq!(v.verdict, Verdict::Pass);
        assert_eq!(v.checks, 2);
        assert_eq!(
            v.detail,
            "1 check passed: one-shot; inconclusive: rate: host busy"
        );
        let v = aggregate(base, &[rate], &[]);
        assert_eq!(v.verdict, Verdict::Skipped);
        assert_eq!(v.detail, "inconclusive: rate: host busy");
    }
}
