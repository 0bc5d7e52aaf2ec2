//! Activation (one guest run) and its verdicts: the guest reports the native CPU, probes for
//! the ROM like Linux, calls Init and asks GetRelocationInfo about calls 0–73 and the
//! [`UNKNOWN_CALLS`]. What it finds goes into [`Activation`] (problems here are top-level
//! failures); what the rest of the suite needs is [`Activated`]. When no call can be executed
//! every call is skipped with the reason.

use super::judge;
use super::run::{Boot, Runner};
use super::vectors::Irqs;
use super::{
    Activation, SuiteOptions, SuiteReport, UNKNOWN_CALLS, Verdict, describe_exception, log_run,
    verdict,
};
use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::{MemoryMap, Step};
use crate::probe::{self, InitResult, ProbeReport, RelocAnswer};
use crate::protocol::{Machine, StepId};
use vmi_abi::calls::{CALLS, NUM_CALLS};

/// What activation produced, for the rest of the suite.
pub(crate) struct Activated {
    /// GetRelocationInfo answers by call number (None: never asked).
    pub(crate) answers: Vec<Option<RelocAnswer>>,
    /// The native CPU.
    pub(crate) machine: Machine,
    /// The ROM's linear base and length.
    pub(crate) linear: u32,
    pub(crate) len: u32,
    /// The interrupt sources the engine gave the activation run.
    pub(crate) irqs: Irqs,
}

/// The steps every run starts with: probe, Init, GetRelocationInfo for 0–73.
pub(crate) fn activation_steps() -> Vec<Step> {
    let mut steps = vec![Step::Probe, Step::Init];
    steps.extend((0..NUM_CALLS as u32).map(Step::GetReloc));
    steps
}

/// Runs activation and logs its run in `report`, with what it found in
/// [`SuiteReport::activation`]. None when no call can be executed: then every call is skipped
/// with why ([`skip_all`]).
pub(crate) fn run(
    runner: &Runner,
    opts: &SuiteOptions,
    map: &MemoryMap,
    report: &mut SuiteReport,
) -> Result<Option<Activated>, HarnessError> {
    let mut steps = vec![Step::Machine];
    steps.extend(activation_steps());
    steps.extend(UNKNOWN_CALLS.iter().map(|n| Step::GetReloc(*n)));
    let boot = runner.boot(steps, Vec::new(), Vec::new(), Some(opts.hang_timeout), 0)?;
    log_run(report, "activation", 0, &boot);
    if let Some(note) = init16_note(&boot, opts) {
        report.activation.notes.push(note);
    }
    if let Some(note) = irqchip_note(&boot) {
        report.activation.notes.push(note);
    }
    let act = activation(&boot, map, opts.engine, &mut report.activation);
    if act.is_none() {
        skip_all(report, &boot);
    }
    Ok(act)
}

/// Activation failed: every call is skipped with the problems as the reason (also
/// [`SuiteReport::skipped_reason`]), except the call whose GetRelocationInfo raised an
/// exception, which fails.
fn skip_all(report: &mut SuiteReport, boot: &Boot) {
    let why = format!(
        "not run: activation failed ({})",
        report.activation.problems.join("; ")
    );
    report.calls = CALLS
        .iter()
        .map(|c| verdict(c.number, String::new(), Verdict::Skipped, why.clone()))
        .collect();
    // The call whose GetRelocationInfo raised the exception fails.
    if let Some(e) = boot.stream.exception() {
        if let StepId::GetReloc(n) = e.step {
            let rom = report.activation.linear.zip(report.activation.rom_len);
            let what = format!(
                "GetRelocationInfo({n}) raised {}",
                describe_exception(e, rom)
            );
            if let Some(c) = report.calls.get_mut(n as usize) {
                c.verdict = Verdict::Fail;
                c.detail = what;
            }
        }
    }
    report.skipped_reason = Some(why);
}

/// KVM engine: what the runner's BIOS step did in `boot`, in words.
fn init16_note(boot: &Boot, opts: &SuiteOptions) -> Option<String> {
    if opts.engine != Engine::Kvm {
        return None;
    }
    Some(match &boot.init16 {
        Some(crate::kvm::Init16::Ran(r)) => format!("the KVM runner {r}"),
        Some(crate::kvm::Init16::Skipped { reason }) => format!(
            "the KVM runner did not run the ROM's 16-bit init (SeaBIOS would not either): \
             {reason}"
        ),
        None if !opts.run_init16 => "the KVM runner did not run the ROM's 16-bit init (asked \
                                     not to): the ROM has no private RAM"
            .into(),
        None => return None,
    })
}

/// KVM engine: whether the run had KVM's in-kernel irqchip, in words.
fn irqchip_note(boot: &Boot) -> Option<String> {
    Some(match boot.engine_run.kvm_irqchip? {
        true if boot.engine_run.kvm_irq0 == Some(true) => {
            "the KVM runner gave the guest KVM's in-kernel irqchip: a local APIC at 0xfee00000 \
             whose timer and self-IPIs are delivered, and the PICs and IOAPIC, to which the \
             runner's PIT raises IRQ0 (its counter 0 as the guest programs it)"
                .into()
        }
        true => "the KVM runner gave the guest KVM's in-kernel irqchip: a local APIC at \
                 0xfee00000 whose timer and self-IPIs are delivered (PIC and IOAPIC present, \
                 but no device raises IRQ0)"
            .into(),
        false => "the KVM runner gave the guest no interrupt controller (no in-kernel \
                  irqchip): no local APIC, nothing raises an interrupt"
            .into(),
    })
}

/// Judges the activation run; None when no call can be executed.
fn activation(
    boot: &Boot,
    map: &MemoryMap,
    engine: Engine,
    a: &mut Activation,
) -> Option<Activated> {
    let p: ProbeReport =
        match probe::report(&boot.stream, map, &boot.engine_run, engine, boot.nonce) {
            Ok(p) => p,
            Err(e) => {
                a.problems
                    .push(format!("the activation run is unusable: {e}"));
                return None;
            }
        };
    found(&p, boot, a);
    let rom = p.chosen_linear.zip(p.rom_len);
    if let Some(e) = &p.exception {
        a.problems
            .push(format!("{} raised {}", e.step, describe_exception(e, rom)));
    }
    if !a.found {
        a.problems.push(not_found(&p));
    }
    if p.end.is_none() && p.exception.is_none() {
        a.problems.push(format!(
            "the activation run did not finish: {}{}",
            boot.end,
            boot.decode_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if let Some(init) = &p.init {
        judge_init(init, a);
    }
    let answers = judge_relocations(&p.relocations, a);
    a.ok = a.problems.is_empty();
    // An exception anywhere in activation would recur in every later run at the same step.
    let usable = a.found
        && p.exception.is_none()
        && p.init.as_ref().is_some_and(|i| i.eax == 0)
        && answers.iter().any(Option::is_some);
    if !usable {
        return None;
    }
    let machine = boot.stream.machine().copied()?;
    Some(Activated {
        answers,
        machine,
        linear: p.chosen_linear.unwrap_or(0),
        len: p.rom_len.unwrap_or(0),
        irqs: Irqs::of(
            engine,
            boot.engine_run.kvm_irqchip,
            boot.engine_run.kvm_irq0,
        ),
    })
}

/// What the probe found and the CPU the guest ran on, into `a`.
fn found(p: &ProbeReport, boot: &Boot, a: &mut Activation) {
    a.candidates = p.candidates.len();
    a.found = p.chosen.is_some();
    a.base = p.chosen;
    a.linear = p.chosen_linear;
    a.rom_len = p.rom_len;
    if let Some(m) = boot.stream.machine() {
        let [_, ebx, ecx, edx] = m.cpuid0;
        a.cpu_vendor = [ebx, edx, ecx]
            .into_iter()
            .flat_map(u32::to_le_bytes)
            .filter(|b| b.is_ascii_graphic() || *b == b' ')
            .map(char::from)
            .collect();
    }
}

/// The problem when the probe accepted no ROM: the candidates it looked at and why each was
/// rejected, and SeaBIOS's word when it dropped the image for a bad checksum.
fn not_found(p: &ProbeReport) -> String {
    let mut why = format!(
        "no VMI ROM found by the probe ({} option-ROM candidate{} looked at",
        p.candidates.len(),
        if p.candidates.len() == 1 { "" } else { "s" }
    );
    let rejected: Vec<String> = p
        .candidates
        .iter()
        .map(|c| format!("{:#x}: {:?}", c.base, c.outcome))
        .collect();
    if !rejected.is_empty() {
        why.push_str(&format!(": {}", rejected.join(", ")));
    }
    why.push(')');
    if p.seabios_log.contains("bad checksum") {
        why.push_str(
            "; SeaBIOS logged \"Found option rom with bad checksum\" and dropped the image",
        );
    }
    why
}

/// Init's result: EAX 0, the callee-saved registers and ESP kept (problems); IF = 1 is noted.
fn judge_init(init: &InitResult, a: &mut Activation) {
    a.init_eax = Some(init.eax);
    a.kernel_rpl = Some(init.kernel_rpl);
    if init.eax != 0 {
        a.problems.push(format!(
            "Init returned EAX {:#010x}: Linux prints \"VMI ROM failed to initialize!\" and \
             stays native",
            init.eax
        ));
    }
    for r in &init.clobbered {
        a.problems.push(format!(
            "Init changed {} (callee-saved)",
            judge::reg_name(*r)
        ));
    }
    if !init.esp_ok {
        a.problems
            .push(format!("Init returned with ESP {:#010x}", init.regs.esp));
    }
    if init.regs.eflags & judge::IF != 0 {
        a.notes
            .push("Init returned with IF = 1 (Linux activates with interrupts off)".into());
    }
}

/// GetRelocationInfo's answers: no register but ECX changed, ESP restored, DF = 0, NONE for
/// a number that is not a call (problems). Returns the answers by call number.
fn judge_relocations(relocations: &[RelocAnswer], a: &mut Activation) -> Vec<Option<RelocAnswer>> {
    let mut answers: Vec<Option<RelocAnswer>> = vec![None; NUM_CALLS];
    for r in relocations {
        let bad: Vec<String> = r
            .changed
            .iter()
            .filter(|x| !matches!(x, vmi_abi::calls::Reg::Ecx))
            .map(|x| judge::reg_name(*x))
            .collect();
        if !bad.is_empty() {
            a.problems.push(format!(
                "GetRelocationInfo({}) changed {} (callee-saved)",
                r.call,
                bad.join(", ")
            ));
        }
        if !r.esp_ok {
            a.problems.push(format!(
                "GetRelocationInfo({}) returned with ESP {:#010x}",
                r.call, r.regs.esp
            ));
        }
        if r.regs.eflags & judge::DF != 0 {
            a.problems.push(format!(
                "GetRelocationInfo({}) returned with DF = 1",
                r.call
            ));
        }
        if UNKNOWN_CALLS.contains(&r.call) && r.reloc_type != 0 {
            a.problems.push(format!(
                "GetRelocationInfo({}) answered {} for a number that is not a VMI call (must be \
                 NONE)",
                r.call,
                judge::reloc_name(r.reloc_type)
            ));
        }
        if let Some(slot) = answers.get_mut(r.call as usize) {
            *slot = Some(r.clone());
        }
    }
    answers
}
