//! IRET frames the CPU faults on: every rule of IRET's checks (Intel SDM Vol. 2A, IRET; the
//! table in `vmi_rom::iret`), to ring 3 and to ring 0, each run twice in a row — once through
//! a native `iret` at the call site (the reference) and once through the ROM — and compared.
//!
//! A ROM passes a case when the fault it delivers is the one the native `iret` raised, at the
//! ROM's own call site: same vector and error code, EIP = the site (the `call` Linux patches,
//! so Linux's `iret_exc` fixup applies), CS and EFLAGS of the site, the interrupted ESP where
//! the frame begins (the exception frame pushed right below it), the handler entered with the
//! gate's EFLAGS (IF cleared through an interrupt gate, kept through a trap gate), and every
//! register of the interrupted code intact. Where the engine's native `iret` itself departs
//! from the SDM (QEMU does not check EIP against the CS limit on IRET; it faults at the
//! target instead), the ROM is held to the SDM and the difference is noted.
//!
//! The valid cases (an LDT code/stack pair, a conforming code segment) take the ROM's full
//! check without a fault: the frame's ring-3 code must run, as it does natively.

use super::judge::{Findings, IF, NT, RF, Reference, Seen, TF, VEC_EFLAGS, VM, reg_name};
use super::vectors::{Ctx, Flow, Spec, b};
use crate::guest::gdt::{self, ACCESS_CODE, ACCESS_DATA, ACCESS_DPL3, FLAGS_G_D};
use crate::guest::idt;
use crate::guest::layout::{self as l, test};
use crate::guest::vector::{Invoke, Op, Val};
use crate::protocol::{Exception, canary};
use vmi_abi::Call;
use vmi_abi::calls::Reg;
use vmi_abi::consts::{
    LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_LDT, LINUX_PERCPU, LINUX_USER_CS, LINUX_USER_DS,
};

/// #NP.
const NP: u8 = 11;
/// #GP.
const GP: u8 = 13;
/// Access-byte present bit.
const PRESENT: u8 = 0x80;
/// Access-byte conforming bit (code).
const CONFORMING: u8 = 0x04;
/// Access-byte writable bit (data).
const WRITABLE: u8 = 0x02;
/// Flags nibble: 32-bit, byte granularity.
const FLAGS_D: u8 = 0x4;
/// Limit of the small code segments: 4 KiB, below every address the guest returns to.
const SMALL_LIMIT: u32 = 0xFFF;

/// Spare GDT entries the cases fill (free in Linux's layout; restored after every vector).
mod sel {
    /// Ring-3 code, not present.
    pub const CODE3_ABSENT: u16 = 0x08;
    /// Ring-0 code, not present.
    pub const CODE0_ABSENT: u16 = 0x10;
    /// Ring-3 read-only data.
    pub const DATA3_RO: u16 = 0x18;
    /// Ring-3 writable data, not present.
    pub const DATA3_ABSENT: u16 = 0x20;
    /// Conforming code, DPL 3.
    pub const CONF3: u16 = 0x28;
    /// Conforming code, DPL 0.
    pub const CONF0: u16 = 0x48;
    /// Ring-3 code with a 4 KiB limit.
    pub const SMALL3: u16 = 0x50;
    /// Ring-0 code with a 4 KiB limit.
    pub const SMALL0: u16 = 0x58;
    /// LDT entry 0 (with an LDT loaded): flat ring-3 code.
    pub const LDT_CODE3: u16 = 0x07;
    /// LDT entry 1 (with an LDT loaded): flat ring-3 data.
    pub const LDT_DATA3: u16 = 0x0F;
    /// A GDT index past the guest GDT's 32 entries.
    pub const BEYOND: u16 = 0x100;
}

/// The spare GDT descriptors every case installs.
fn spare_descriptors() -> [(u16, u64); 8] {
    let flat = |access: u8| gdt::descriptor(0, 0xF_FFFF, access, FLAGS_G_D);
    let small = |access: u8| gdt::descriptor(0, SMALL_LIMIT, access, FLAGS_D);
    let code3 = ACCESS_CODE | ACCESS_DPL3;
    let data3 = ACCESS_DATA | ACCESS_DPL3;
    [
        (sel::CODE3_ABSENT, flat(code3 & !PRESENT)),
        (sel::CODE0_ABSENT, flat(ACCESS_CODE & !PRESENT)),
        (sel::DATA3_RO, flat(data3 & !WRITABLE)),
        (sel::DATA3_ABSENT, flat(data3 & !PRESENT)),
        (sel::CONF3, flat(code3 | CONFORMING)),
        (sel::CONF0, flat(ACCESS_CODE | CONFORMING)),
        (sel::SMALL3, small(code3)),
        (sel::SMALL0, small(ACCESS_CODE)),
    ]
}

/// Where the frame returns to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ring {
    /// Same level: EIP, CS, EFLAGS (EIP = the vector's resume point).
    Kernel,
    /// Outer level: EIP (the ring-3 stub), CS, EFLAGS, ESP, SS.
    User,
}

/// What the CPU does with the frame, by the SDM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sdm {
    /// Raises `vector` with `error` at the `iret`.
    Fault(u8, u32),
    /// Returns: the ring-3 stub runs (its `int 0x80` traps from the frame's CS).
    Returns,
}

/// The gate the fault goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// The guest's interrupt gate (IF cleared on entry).
    Interrupt,
    /// #GP's gate turned into a trap gate for the vector (IF kept).
    Trap,
}

/// One frame.
#[derive(Clone, Copy, Debug)]
struct Case {
    /// Short name.
    name: &'static str,
    /// The rule (the SDM's wording).
    rule: &'static str,
    ring: Ring,
    cs: u16,
    /// The frame's SS (ring 3 only).
    ss: u16,
    /// Load the test LDT (entries [`sel::LDT_CODE3`], [`sel::LDT_DATA3`]) first.
    ldt: bool,
    /// The caller's IF at the site.
    caller_if: bool,
    gate: Gate,
    sdm: Sdm,
}

const fn user(name: &'static str, rule: &'static str, cs: u16, ss: u16, sdm: Sdm) -> Case {
    Case {
        name,
        rule,
        ring: Ring::User,
        cs,
        ss,
        ldt: false,
        caller_if: false,
        gate: Gate::Interrupt,
        sdm,
    }
}

const fn kernel(name: &'static str, rule: &'static str, cs: u16, sdm: Sdm) -> Case {
    Case {
        name,
        rule,
        ring: Ring::Kernel,
        cs,
        ss: 0,
        ldt: false,
        caller_if: false,
        gate: Gate::Interrupt,
        sdm,
    }
}

/// #GP with the selector (RPL cleared) as error code.
const fn gp(selector: u16) -> Sdm {
    Sdm::Fault(GP, (selector & 0xFFFC) as u32)
}

/// #NP with the selector (RPL cleared) as error code.
const fn np(selector: u16) -> Sdm {
    Sdm::Fault(NP, (selector & 0xFFFC) as u32)
}

/// #GP(0).
const GP0: Sdm = Sdm::Fault(GP, 0);

const UCS: u16 = LINUX_USER_CS;
const UDS: u16 = LINUX_USER_DS;

/// Every case: the SDM's list of IRET faults, to ring 3 and to ring 0, the order between the
/// rules, the gate's IF rule, and the valid frames the full check must let through.
const CASES: &[Case] = &[
    user("cs-null", "return CS selector null", 0x0003, UDS, GP0),
    user(
        "cs-ldt-without-ldt",
        "CS is an LDT selector and no LDT is loaded (sigreturn with CS 0x0f)",
        0x000F,
        UDS,
        gp(0x000F),
    ),
    user(
        "cs-beyond-gdt",
        "CS index beyond the GDT limit",
        sel::BEYOND | 3,
        UDS,
        gp(sel::BEYOND),
    ),
    user(
        "cs-data",
        "CS descriptor is a data segment",
        UDS,
        UDS,
        gp(UDS),
    ),
    user(
        "cs-system",
        "CS descriptor is a system segment (the TSS)",
        0x0083,
        UDS,
        gp(0x0080),
    ),
    user(
        "cs-dpl-not-rpl",
        "non-conforming CS with DPL (0) ≠ RPL (3)",
        LINUX_KERNEL_CS | 3,
        UDS,
        gp(LINUX_KERNEL_CS),
    ),
    user(
        "cs-not-present",
        "CS not present",
        sel::CODE3_ABSENT | 3,
        UDS,
        np(sel::CODE3_ABSENT),
    ),
    user("ss-null", "return SS selector null", UCS, 0x0000, GP0),
    user(
        "ss-rpl-not-cs-rpl",
        "SS RPL (0) ≠ CS RPL (3)",
        UCS,
        UDS & !3,
        gp(UDS),
    ),
    user(
        "ss-beyond-gdt",
        "SS index beyond the GDT limit",
        UCS,
        sel::BEYOND | 3,
        gp(sel::BEYOND),
    ),
    user(
        "ss-ldt-without-ldt",
        "SS is an LDT selector and no LDT is loaded (sigreturn with SS 0x0f)",
        UCS,
        0x000F,
        gp(0x000F),
    ),
    user(
        "ss-code",
        "SS descriptor is a code segment",
        UCS,
        UCS,
        gp(UCS),
    ),
    user(
        "ss-read-only",
        "SS descriptor is read-only data",
        UCS,
        sel::DATA3_RO | 3,
        gp(sel::DATA3_RO),
    ),
    user(
        "ss-dpl-not-rpl",
        "SS DPL (0) ≠ CS RPL (3)",
        UCS,
        LINUX_KERNEL_DS | 3,
        gp(LINUX_KERNEL_DS),
    ),
    user(
        "ss-not-present",
        "SS not present",
        UCS,
        sel::DATA3_ABSENT | 3,
        np(sel::DATA3_ABSENT),
    ),
    user(
        "eip-beyond-limit",
        "EIP beyond the CS limit",
        sel::SMALL3 | 3,
        UDS,
        GP0,
    ),
    user(
        "cs-before-ss",
        "CS is checked before SS (CS not present, SS an LDT selector)",
        sel::CODE3_ABSENT | 3,
        0x000F,
        np(sel::CODE3_ABSENT),
    ),
    user(
        "ss-before-eip",
        "SS is checked before EIP (SS RPL 0, EIP beyond the limit)",
        sel::SMALL3 | 3,
        UDS & !3,
        gp(UDS),
    ),
    Case {
        caller_if: true,
        ..user(
            "interrupt-gate",
            "through an interrupt gate IF is cleared (caller IF = 1)",
            0x000F,
            UDS,
            gp(0x000F),
        )
    },
    Case {
        caller_if: true,
        gate: Gate::Trap,
        ..user(
            "trap-gate",
            "through a trap gate IF is kept (caller IF = 1)",
            0x000F,
            UDS,
            gp(0x000F),
        )
    },
    Case {
        ldt: true,
        ..user(
            "valid-ldt",
            "valid: CS and SS from a loaded LDT",
            sel::LDT_CODE3,
            sel::LDT_DATA3,
            Sdm::Returns,
        )
    },
    user(
        "valid-conforming",
        "valid: a conforming DPL 0 code segment, RPL 3",
        sel::CONF0 | 3,
        UDS,
        Sdm::Returns,
    ),
    kernel("cs-null", "return CS selector null", 0x0000, GP0),
    kernel(
        "cs-ldt-without-ldt",
        "CS is an LDT selector and no LDT is loaded",
        0x000C,
        gp(0x000C),
    ),
    kernel(
        "cs-beyond-gdt",
        "CS index beyond the GDT limit",
        sel::BEYOND,
        gp(sel::BEYOND),
    ),
    kernel(
        "cs-data",
        "CS descriptor is a data segment",
        LINUX_KERNEL_DS,
        gp(LINUX_KERNEL_DS),
    ),
    kernel(
        "cs-system",
        "CS descriptor is a system segment (the TSS)",
        0x0080,
        gp(0x0080),
    ),
    kernel(
        "cs-dpl-not-rpl",
        "non-conforming CS with DPL (3) ≠ RPL (0)",
        UCS & !3,
        gp(UCS),
    ),
    kernel(
        "cs-conforming-dpl-above-rpl",
        "conforming CS with DPL (3) > RPL (0)",
        sel::CONF3,
        gp(sel::CONF3),
    ),
    kernel(
        "cs-not-present",
        "CS not present",
        sel::CODE0_ABSENT,
        np(sel::CODE0_ABSENT),
    ),
    kernel(
        "eip-beyond-limit",
        "EIP beyond the CS limit",
        sel::SMALL0,
        GP0,
    ),
];

impl Case {
    fn title(&self) -> String {
        let ring = match self.ring {
            Ring::User => "ring 3",
            Ring::Kernel => "ring 0",
        };
        format!("IRET to {ring}: {} ({})", self.rule, self.name)
    }
}

/// The ops that install a case's descriptors, LDT and gate, and arm the trap.
fn pre_ops(ctx: &Ctx, case: &Case) -> Vec<Op> {
    let mut ops = Vec::new();
    let store64 = |ops: &mut Vec<Op>, addr: u32, d: u64| {
        ops.push(Op::Store {
            addr,
            value: Val::Imm(d as u32),
        });
        ops.push(Op::Store {
            addr: addr + 4,
            value: Val::Imm((d >> 32) as u32),
        });
    };
    for (selector, d) in spare_descriptors() {
        store64(&mut ops, l::GDT + 8 * u32::from(selector >> 3), d);
    }
    if case.ldt {
        let ldt = gdt::descriptor(ctx.va(test::LDT), 0xFF, 0x82, gdt::FLAGS_BYTE);
        store64(&mut ops, l::GDT + 8 * u32::from(LINUX_LDT >> 3), ldt);
        let code = gdt::descriptor(0, 0xF_FFFF, ACCESS_CODE | ACCESS_DPL3, FLAGS_G_D);
        let data = gdt::descriptor(0, 0xF_FFFF, ACCESS_DATA | ACCESS_DPL3, FLAGS_G_D);
        store64(&mut ops, test::LDT, code);
        store64(&mut ops, test::LDT + 8, data);
        ops.push(Op::Lldt {
            selector: LINUX_LDT,
        });
    }
    if case.gate == Gate::Trap {
        ops.push(Op::Or {
            addr: gate_high(GP),
            bits: TRAP_GATE_BIT,
        });
    }
    ops.push(Op::ArmTrap);
    ops
}

/// The type bit that turns a 32-bit interrupt gate into a trap gate (in the gate's high dword).
const TRAP_GATE_BIT: u32 = 0x100;

/// Physical address of the high dword of the kernel IDT's gate for `vector`.
fn gate_high(vector: u8) -> u32 {
    l::IDT_KERNEL + 8 * u32::from(vector) + 4
}

/// EFLAGS image in the frame: CF, PF, ZF, and IF for ring 3.
fn frame_image(ring: Ring) -> u32 {
    let base = 0x2 | 0x1 | 0x4 | 0x40;
    match ring {
        Ring::User => base | IF,
        Ring::Kernel => base,
    }
}

/// The reference and the ROM vector of every case (in this order, adjacent).
pub(crate) fn specs(ctx: &Ctx) -> Vec<Spec> {
    CASES
        .iter()
        .flat_map(|case| [spec(ctx, case, true), spec(ctx, case, false)])
        .collect()
}

fn spec(ctx: &Ctx, case: &Case, reference: bool) -> Spec {
    let user_code = ctx.map.user_code();
    let user_esp = ctx.map.user_stack_top() - 16;
    let mut frame = vec![
        match case.ring {
            Ring::User => Val::Imm(user_code),
            Ring::Kernel => Val::Resume,
        },
        Val::Imm(u32::from(case.cs)),
        Val::Imm(frame_image(case.ring)),
    ];
    if case.ring == Ring::User {
        frame.extend([Val::Imm(user_esp), Val::Imm(u32::from(case.ss))]);
    }
    let frame_at = ctx.stack_top - 4 * frame.len() as u32;
    let caller = VEC_EFLAGS | if case.caller_if { IF } else { 0 };
    let (how, what) = if reference {
        (
            Invoke::NativeIret,
            format!("{} — reference: native iret at the site", case.title()),
        )
    } else {
        (ctx.invoke(Call::IRET), case.title())
    };
    let case = *case;
    let mut v = b(ctx, Call::IRET, what)
        .invoke(how)
        .eflags(caller)
        .stack(frame)
        .pre(pre_ops(ctx, &case))
        .flow(Flow::Faults);
    if case.gate == Gate::Trap {
        v = v.post([Op::And {
            addr: gate_high(GP),
            mask: !TRAP_GATE_BIT,
        }]);
    }
    let want = Want {
        case,
        frame_at,
        caller,
        user_code,
        user_esp,
        via: how,
    };
    if reference {
        v.check(move |s, f| note_reference(&want, s, f))
    } else {
        v.check(move |s, f| judge_rom(&want, s, f))
    }
}

/// What a case's outcome is held to.
#[derive(Clone, Copy, Debug)]
struct Want {
    case: Case,
    /// Linear address of the frame (ESP at the site).
    frame_at: u32,
    /// EFLAGS at the site.
    caller: u32,
    user_code: u32,
    user_esp: u32,
    /// How the vector reached IRET.
    via: Invoke,
}

impl Want {
    /// EFLAGS the handler starts with, by the gate.
    fn handler_eflags(&self) -> u32 {
        let kept = self.caller & !(TF | NT | RF | VM);
        match self.case.gate {
            Gate::Interrupt => kept & !IF,
            Gate::Trap => kept,
        }
    }
}

/// `#GP(0x000c)`.
fn fault_name(vector: u8, error: u32) -> String {
    format!("{}({error:#06x})", idt::mnemonic(vector))
}

/// How a trap reads: `#GP(0x000c) at 0x08:0xc0112345`.
fn trap_name(t: &Exception) -> String {
    let what = if idt::has_error_code(t.vector) {
        fault_name(t.vector, t.error_code)
    } else {
        format!("{} (vector {:#x})", t.mnemonic(), t.vector)
    };
    format!("{what} at {:#06x}:{:#010x}", t.cs, t.eip)
}

/// Whether the native `iret` did what the SDM says.
fn matches_sdm(want: &Want, t: &Exception, site: u32) -> bool {
    match want.case.sdm {
        Sdm::Fault(vector, error) => t.vector == vector && t.error_code == error && t.eip == site,
        Sdm::Returns => {
            t.vector == test::USER_RETURN_VECTOR
                && t.eip == want.user_code + test::USER_STUB_INT_LEN
        }
    }
}

/// A reference vector passes when it ran; what it did is noted (with any departure from the
/// SDM, which the ROM is then held to instead).
fn note_reference(want: &Want, s: &Seen<'_>, f: &mut Findings) {
    let Some(t) = s.trap else {
        f.note(format!(
            "this engine's native iret departs from the SDM ({}): it raised nothing and the \
             frame's code ran; the ROM is held to the SDM",
            expected_text(want, s.r.site_eip)
        ));
        return;
    };
    if matches_sdm(want, t, s.r.site_eip) {
        f.note(format!("native iret: {}", trap_name(t)));
    } else {
        f.note(format!(
            "this engine's native iret departs from the SDM ({}): {}; the ROM is held to the SDM",
            expected_text(want, s.r.site_eip),
            trap_name(t)
        ));
    }
}

fn expected_text(want: &Want, site: u32) -> String {
    match want.case.sdm {
        Sdm::Fault(v, e) => format!("{} at the site {site:#010x}", fault_name(v, e)),
        Sdm::Returns => "the frame's code runs".into(),
    }
}

/// The ROM's run against the reference (or the SDM where the reference departs from it).
fn judge_rom(want: &Want, s: &Seen<'_>, f: &mut Findings) {
    let Some(t) = s.trap else { return };
    let reference = s
        .reference
        .and_then(|r: Reference<'_>| r.trap.map(|t| (t, r.r.site_eip)))
        .filter(|(rt, site)| matches_sdm(want, rt, *site));
    if s.reference.is_none() {
        f.note("the reference run did not complete: compared with the SDM");
    }
    match want.case.sdm {
        Sdm::Fault(vector, error) => {
            judge_fault(want, s, t, vector, error, f);
            if let Some((rt, _)) = reference {
                same_as_reference(t, rt, f);
            }
        }
        Sdm::Returns => judge_return(want, t, f),
    }
}

fn judge_fault(want: &Want, s: &Seen<'_>, t: &Exception, vector: u8, error: u32, f: &mut Findings) {
    let site = s.r.site_eip;
    if t.vector != vector || t.error_code != error {
        f.fail(format!(
            "expected {} at the call site (rule: {}), got {}",
            fault_name(vector, error),
            want.case.rule,
            trap_name(t)
        ));
        return;
    }
    if t.eip != site {
        let why = if want.via == Invoke::Jump {
            "a JUMP_REL IRET has no return address to find its site by: answer CALL_REL \
             (vmi-abi.md §4.3)"
        } else {
            "the return address − 5"
        };
        f.fail(format!(
            "{} reported at EIP {:#010x}, not at the call site {site:#010x} ({why}): Linux's \
             exception-table fixup for the site cannot apply",
            fault_name(vector, error),
            t.eip
        ));
    }
    f.expect(
        "CS pushed",
        u32::from(LINUX_KERNEL_CS),
        u32::from(t.cs),
        "the site's",
    );
    f.expect(
        "EFLAGS pushed (RF aside)",
        want.caller,
        t.eflags & !RF,
        "the site's",
    );
    f.expect(
        "interrupted ESP",
        want.frame_at,
        t.esp,
        "the IRET frame: the exception frame goes right below it",
    );
    f.expect(
        "handler EFLAGS (RF aside)",
        want.handler_eflags(),
        t.handler_eflags & !RF,
        match want.case.gate {
            Gate::Interrupt => "interrupt gate: TF, NT, VM and IF cleared",
            Gate::Trap => "trap gate: TF, NT, VM cleared, IF kept",
        },
    );
    for r in Reg::ALL {
        let got = t.regs.get(r);
        f.ensure(got == canary(r), || {
            format!(
                "{}: expected {:#010x} (the interrupted code's), got {got:#010x}",
                reg_name(r),
                canary(r)
            )
        });
    }
    for (name, want_sel, got) in [
        ("DS", LINUX_USER_DS, t.regs.ds),
        ("ES", LINUX_USER_DS, t.regs.es),
        ("FS", LINUX_PERCPU, t.regs.fs),
        ("GS", 0, t.regs.gs),
    ] {
        f.expect(name, u32::from(want_sel), u32::from(got), "the site's");
    }
}

/// Field by field, the ROM's fault against the native one (EIP aside: each at its own site).
fn same_as_reference(t: &Exception, rt: &Exception, f: &mut Findings) {
    let pairs = [
        ("vector", u32::from(rt.vector), u32::from(t.vector)),
        ("error code", rt.error_code, t.error_code),
        ("CS pushed", u32::from(rt.cs), u32::from(t.cs)),
        ("EFLAGS pushed (RF aside)", rt.eflags & !RF, t.eflags & !RF),
        ("interrupted ESP", rt.esp, t.esp),
        (
            "handler EFLAGS (RF aside)",
            rt.handler_eflags & !RF,
            t.handler_eflags & !RF,
        ),
    ];
    for (what, native, rom) in pairs {
        f.expect(what, native, rom, "as the native iret at the site");
    }
}

/// A valid frame: the ring-3 stub ran with the frame's CS, SS, ESP and EFLAGS.
fn judge_return(want: &Want, t: &Exception, f: &mut Findings) {
    if t.vector != test::USER_RETURN_VECTOR {
        f.fail(format!(
            "a valid frame: expected the ring-3 stub's int 0x80, got {}",
            trap_name(t)
        ));
        return;
    }
    f.expect(
        "CS in ring 3",
        u32::from(want.case.cs),
        u32::from(t.cs),
        "the frame's",
    );
    f.expect(
        "EIP in ring 3",
        want.user_code + test::USER_STUB_INT_LEN,
        t.eip,
        "the stub's int 0x80",
    );
    f.expect(
        "SS in ring 3",
        u32::from(want.case.ss),
        u32::from(t.ss),
        "the frame's",
    );
    f.expect("ESP in ring 3", want.user_esp, t.esp, "the frame's");
    f.expect(
        "EFLAGS in ring 3 (RF aside)",
        frame_image(Ring::User),
        t.eflags & !RF,
        "the frame's image",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_of_the_table_has_cases_to_both_rings() {
        let names = |ring: Ring| -> Vec<&str> {
            CASES
                .iter()
                .filter(|c| c.ring == ring)
                .map(|c| c.name)
                .collect()
        };
        for rule in [
            "cs-null",
            "cs-ldt-without-ldt",
            "cs-beyond-gdt",
            "cs-data",
            "cs-system",
            "cs-dpl-not-rpl",
            "cs-not-present",
            "eip-beyond-limit",
        ] {
            assert!(names(Ring::User).contains(&rule), "ring 3: {rule}");
            assert!(names(Ring::Kernel).contains(&rule), "ring 0: {rule}");
        }
        for rule in [
            "ss-null",
            "ss-rpl-not-cs-rpl",
            "ss-beyond-gdt",
            "ss-ldt-without-ldt",
            "ss-code",
            "ss-read-only",
            "ss-dpl-not-rpl",
            "ss-not-present",
        ] {
            assert!(names(Ring::User).contains(&rule), "{rule}");
        }
        assert!(names(Ring::Kernel).contains(&"cs-conforming-dpl-above-rpl"));
    }

    #[test]
    fn spare_descriptors_use_free_linux_entries() {
        let used = [12u16, 13, 14, 15, 16, 17, 27];
        for (s, d) in spare_descriptors() {
            assert!(!used.contains(&(s >> 3)), "{s:#x}");
            assert!(usize::from(s >> 3) < l::GDT_ENTRIES);
            assert_ne!(d, 0);
        }
        // Not present, yet a code segment of DPL 3: access byte 0x7A.
        assert_eq!((spare_descriptors()[0].1 >> 40) as u8, 0x7A);
    }

    #[test]
    fn error_codes_clear_the_rpl() {
        assert_eq!(gp(0x000F), Sdm::Fault(13, 0x000C));
        assert_eq!(np(sel::DATA3_ABSENT | 3), Sdm::Fault(11, 0x0020));
    }
}
