//! Scenarios: the calls that do not simply return, and the ones whose effect needs a set-up
//! of its own.
//!
//! The list of scenarios and what passes is in the [suite's documentation](super).

use super::judge::{
    ARITH, Findings, IF, RF, Seen, VEC_EFLAGS, VIF, VIP, ZF, check_segments, flag_names, reg_name,
};
use super::vectors::{B, Ctx, Flow, PIT_1KHZ, Plan, Spec, b};
use crate::engine::Engine;
use crate::guest::layout::{self as l, test};
use crate::guest::paging::CR4_PGE;
use crate::guest::vector::{Op, Val, xslot};
use crate::protocol::{Exception, canary};
use vmi_abi::Call;
use vmi_abi::calls::Reg;
use vmi_abi::consts::{LINUX_KERNEL_CS, LINUX_USER_CS, LINUX_USER_DS};

/// IA32_SYSENTER_CS.
const MSR_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
const MSR_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
const MSR_SYSENTER_EIP: u32 = 0x176;

/// Why a paging-only check cannot run.
pub(crate) fn needs_paging(ctx: &Ctx) -> String {
    match ctx.engine {
        Engine::Kvm => "needs paging; this KVM cannot page".into(),
        _ => "needs paging; the suite ran without it".into(),
    }
}

fn eflags_ok(f: &mut Findings, got: u32, image: u32, what: &str) {
    let want_if = image & IF != 0;
    let got_if = got & IF != 0;
    f.ensure(got_if == want_if, || {
        format!(
            "EFLAGS.IF: expected {} ({what} {image:#010x}), got {} (EFLAGS {got:#010x})",
            u8::from(want_if),
            u8::from(got_if)
        )
    });
    let diff = (got ^ image) & !(IF | RF | VIF | VIP);
    f.ensure(diff == 0, || {
        format!(
            "EFLAGS.{} differ from the {what} {image:#010x} (got {got:#010x})",
            flag_names(diff)
        )
    });
}

fn gprs_ok(f: &mut Findings, regs: &crate::protocol::Regs, which: &[Reg], inputs: &[(Reg, u32)]) {
    for r in which {
        let expected = inputs
            .iter()
            .find(|(x, _)| x == r)
            .map_or(canary(*r), |(_, v)| *v);
        let got = regs.get(*r);
        f.ensure(got == expected, || {
            format!(
                "{}: expected {expected:#010x} (it is live state of the interrupted code), got {got:#010x}",
                reg_name(*r)
            )
        });
    }
}

/// The trap a ring-3 scenario expects: the stub's `int 0x80` from CS 0x73. On the kvm engine
/// (kvm-pvm) the stub's `int 0x80` itself raises #UD: a #UD from CS 0x73 at exactly the stub
/// shows the ROM got there, and its frame carries the same ring-3 state, so it is accepted
/// (with a note).
fn user_trap<'a>(
    s: &Seen<'a>,
    f: &mut Findings,
    stub: u32,
    engine: Engine,
) -> Option<&'a Exception> {
    let t = s.trap?;
    let at_int = t.vector == test::USER_RETURN_VECTOR
        && t.cs == LINUX_USER_CS
        && t.eip == stub + test::USER_STUB_INT_LEN;
    let ud_at_stub =
        engine == Engine::Kvm && t.vector == 6 && t.cs == LINUX_USER_CS && t.eip == stub;
    if ud_at_stub {
        f.note(
            "the kvm engine raises #UD for the stub's int 0x80 at CPL 3; the ring-3 state was \
             checked in that #UD frame",
        );
        return Some(t);
    }
    if t.vector != test::USER_RETURN_VECTOR || t.cs != LINUX_USER_CS {
        f.fail(format!(
            "expected the ring-3 stub's int 0x80 from CS {LINUX_USER_CS:#06x}; got {} (vector \
             {:#x}) from {:#06x}:{:#010x}",
            t.mnemonic(),
            t.vector,
            t.cs,
            t.eip
        ));
        return None;
    }
    if !at_int {
        f.expect(
            "EIP in ring 3",
            stub + test::USER_STUB_INT_LEN,
            t.eip,
            "the stub's int 0x80",
        );
    }
    Some(t)
}

/// IRET: to ring 0 with IF = 1 and IF = 0 in the frame image, and to the ring-3 stub.
pub(crate) fn iret(ctx: &Ctx) -> Vec<Spec> {
    let stack_top = ctx.stack_top;
    let via = match ctx.invoke(Call::IRET) {
        crate::guest::Invoke::Jump => "JUMP_REL: frame at [esp]",
        _ => "CALL_REL: frame at [esp+4]",
    };
    let ring0 = |if_on: bool| -> Spec {
        // The interrupted code's flags: CF, PF, ZF (and IF); the caller's current flags differ
        // (AC, ID, SF set, IF the opposite), so flags that are not taken from the frame show.
        let image = 0x2 | 0x1 | 0x4 | ZF | if if_on { IF } else { 0 };
        let before = if if_on { VEC_EFLAGS } else { VEC_EFLAGS | IF };
        b(
            ctx,
            Call::IRET,
            format!(
                "IRET to ring 0 with IF={} in the frame ({via})",
                u8::from(if_on)
            ),
        )
        .eflags(before)
        .stack([
            Val::Resume,
            Val::Imm(u32::from(LINUX_KERNEL_CS)),
            Val::Imm(image),
        ])
        .flow(Flow::Resumes)
        .post([Op::Cli])
        .check(move |s, f| {
            if s.r.returned_to_site {
                return;
            }
            eflags_ok(f, s.r.regs.eflags, image, "frame image");
            f.expect(
                "ESP",
                stack_top,
                s.r.regs.esp,
                "just above the 3-word frame",
            );
            gprs_ok(f, &s.r.regs, &Reg::ALL, &[]);
            check_segments(&s.r.regs, f);
        })
    };
    let user_code = ctx.map.user_code();
    let engine = ctx.engine;
    let user_esp = ctx.map.user_stack_top() - 16;
    let user_image = 0x2 | 0x1 | IF;
    let ring3 = b(
        ctx,
        Call::IRET,
        format!("IRET to a ring-3 stub with IF=1 ({via})"),
    )
    .stack([
        Val::Imm(user_code),
        Val::Imm(u32::from(LINUX_USER_CS)),
        Val::Imm(user_image),
        Val::Imm(user_esp),
        Val::Imm(u32::from(LINUX_USER_DS)),
    ])
    .pre([Op::ArmTrap])
    .flow(Flow::Traps)
    .check(move |s, f| {
        let Some(t) = user_trap(s, f, user_code, engine) else {
            return;
        };
        f.expect(
            "SS in ring 3",
            u32::from(LINUX_USER_DS),
            u32::from(t.ss),
            "the frame's SS",
        );
        f.expect("ESP in ring 3", user_esp, t.esp, "the frame's ESP");
        eflags_ok(f, t.eflags, user_image, "frame image");
        gprs_ok(f, &t.regs, &Reg::ALL, &[]);
    });
    let mut specs = vec![ring0(true), ring0(false), ring3];
    specs.extend(super::iret_faults::specs(ctx));
    specs
}

/// SYSEXIT to the ring-3 stub, SYSENTER MSRs as Linux sets them.
pub(crate) fn sysexit(ctx: &Ctx) -> Plan {
    if !ctx.machine.has_edx1(11) {
        return Plan::Skip("this CPU has no SYSENTER/SYSEXIT (CPUID.1:EDX.SEP = 0)".into());
    }
    let user_code = ctx.map.user_code();
    let engine = ctx.engine;
    let user_esp = ctx.map.user_stack_top() - 32;
    let via = match ctx.invoke(Call::SYSEXIT) {
        crate::guest::Invoke::Jump => "JUMP_REL",
        _ => "CALL_REL",
    };
    let msr = |msr: u32, v: u32| Op::Wrmsr {
        msr,
        lo: Val::Imm(v),
        hi: Val::Imm(0),
    };
    let spec = b(
        ctx,
        Call::SYSEXIT,
        format!("SYSEXIT to a ring-3 stub with IF=0 ({via}, SYSENTER_CS 0x60)"),
    )
    .reg(Reg::Edx, user_code)
    .reg(Reg::Ecx, user_esp)
    .pre([
        msr(MSR_SYSENTER_CS, u32::from(LINUX_KERNEL_CS)),
        msr(MSR_SYSENTER_ESP, ctx.va(l::RING0_STACK_TOP)),
        msr(MSR_SYSENTER_EIP, 0),
        Op::ArmTrap,
    ])
    .flow(Flow::Traps)
    .check(move |s, f| {
        let Some(t) = user_trap(s, f, user_code, engine) else {
            return;
        };
        f.expect("SS in ring 3", u32::from(LINUX_USER_DS), u32::from(t.ss), "__USER_DS");
        f.expect("ESP in ring 3", user_esp, t.esp, "ECX");
        f.ensure(t.eflags & IF != 0, || {
            format!("EFLAGS.IF: expected 1 in ring 3, got 0 (EFLAGS {:#010x})", t.eflags)
        });
        let diff = (t.eflags ^ (VEC_EFLAGS | IF)) & !(ARITH | RF | VIF | VIP);
        f.ensure(diff == 0, || {
            format!(
                "EFLAGS.{} changed on the way to ring 3 (before {VEC_EFLAGS:#010x} + IF, got {:#010x})",
                flag_names(diff),
                t.eflags
            )
        });
        gprs_ok(
            f,
            &t.regs,
            &[Reg::Eax, Reg::Ebx, Reg::Esi, Reg::Edi, Reg::Ebp],
            &[],
        );
    });
    Plan::Run(vec![spec], Vec::new())
}

/// Halt woken by the PIT (a PIC whose IRQ0 arrives the moment IF is set: QEMU), else by a
/// one-shot of the local APIC's timer (an engine whose local APIC delivers interrupts: the
/// KVM runner with its irqchip).
pub(crate) fn halt(ctx: &Ctx) -> Plan {
    if ctx.has_pic() {
        return Plan::Run(vec![halt_pit(ctx)], Vec::new());
    }
    if ctx.has_lapic_irqs() {
        return Plan::Run(vec![halt_lapic(ctx)], Vec::new());
    }
    Plan::Skip(format!(
        "no interrupt controller or timer on the {} engine: nothing could wake a halted CPU",
        ctx.engine
    ))
}

/// Halt returned with IF = 1 (`woke`: whether the interrupt came first, and what it was).
fn judge_halt(s: &Seen<'_>, f: &mut Findings, woke: bool) {
    f.ensure(woke, || {
        "returned before the timer interrupt was delivered".into()
    });
    f.ensure(s.r.regs.eflags & IF != 0, || {
        format!(
            "EFLAGS.IF: expected 1 after Halt, got 0 (EFLAGS {:#010x})",
            s.r.regs.eflags
        )
    });
}

fn halt_pit(ctx: &Ctx) -> Spec {
    b(ctx, Call::Halt, "Halt() with IF=0 and PIT IRQ0 at 1 kHz")
        .pre([Op::StartTimer { divisor: PIT_1KHZ }])
        .post([Op::Cli, Op::StopTimer])
        .may_change(IF)
        .check(|s, f| judge_halt(s, f, s.r.ticks >= 1))
}

/// The local APIC's vector for [`halt_lapic`].
const HALT_VECTOR: u8 = 0x41;

/// Halt with IF = 0 and the local APIC's timer armed one-shot 1 ms ahead (÷1, 10^6 counts
/// of KVM's 1 GHz APIC bus) at [`HALT_VECTOR`], the alarm handler counting it: Halt must
/// enable interrupts and return after the interrupt (whether it fired before the `sti` or
/// during the `hlt`).
fn halt_lapic(ctx: &Ctx) -> Spec {
    let apic = ctx.map.apic();
    let store = |reg: u32, value: u32| Op::Store {
        addr: apic + reg,
        value: Val::Imm(value),
    };
    b(
        ctx,
        Call::Halt,
        format!("Halt() with IF=0 and the local APIC timer one-shot at {HALT_VECTOR:#04x}"),
    )
    .pre([
        Op::AlarmStart {
            vector: HALT_VECTOR,
            mode: l::alarm::EOI_NATIVE,
        },
        store(0x3E0, 0xB),
        store(0x320, u32::from(HALT_VECTOR)),
        store(0x380, 1_000_000),
    ])
    .post([
        Op::Cli,
        Op::Load {
            addr: l::VARS + l::var::ALARM_HITS,
            slot: 0,
        },
        Op::AlarmQuiesce,
    ])
    .may_change(IF)
    .check(|s, f| judge_halt(s, f, s.r.x(0) >= 1))
}

/// Shutdown and Reboot: one vector each, run on its own.
pub(crate) fn terminal(ctx: &Ctx, call: Call) -> Vec<Spec> {
    if call == Call::Reboot {
        return vec![
            b(ctx, call, "Reboot(0)")
                .reg(Reg::Eax, 0)
                .flow(Flow::Reboot)
                .plain(),
        ];
    }
    let mut v: B = b(ctx, call, "Shutdown() with IF=1")
        .eflags(VEC_EFLAGS | IF)
        .flow(Flow::Shutdown);
    if ctx.has_pic() {
        v = b(ctx, call, "Shutdown() with IF=1 and the timer running")
            .eflags(VEC_EFLAGS | IF)
            .pre([Op::StartTimer { divisor: PIT_1KHZ }])
            .flow(Flow::Shutdown);
    }
    vec![v.plain()]
}

/// The TLB scenario for InvalPage / FlushTLB.
pub(crate) fn tlb(ctx: &Ctx, call: Call) -> Plan {
    if !ctx.map.paging() {
        return Plan::Skip(needs_paging(ctx));
    }
    let stale = |what: String, win: u32, global: bool, eax: u32| -> Spec {
        let page = ctx.map.window_page(win);
        let pte = test::PT_WINDOW + 4 * win;
        let g = if global { test::PTE_GLOBAL } else { 0 };
        let mut pre = Vec::new();
        if global {
            pre.extend([
                Op::ReadCr { cr: 4, slot: 5 },
                Op::Or {
                    addr: xslot(5),
                    bits: CR4_PGE,
                },
                Op::WriteCr {
                    cr: 4,
                    value: Val::Mem(xslot(5)),
                },
            ]);
        }
        pre.extend([
            Op::Store {
                addr: pte,
                value: Val::Imm(test::FRAME_A | test::PTE_KERNEL | g),
            },
            Op::Invlpg { addr: page },
            Op::Load {
                addr: page,
                slot: 0,
            },
            Op::Store {
                addr: pte,
                value: Val::Imm(test::FRAME_B | test::PTE_KERNEL | g),
            },
            Op::Load {
                addr: page,
                slot: 1,
            },
        ]);
        b(ctx, call, what)
            .reg(Reg::Eax, eax)
            .pre(pre)
            .post([Op::Load {
                addr: page,
                slot: 2,
            }])
            .paging()
            .check(move |s, f| {
                if s.r.x(0) != test::MARK_A {
                    f.fail(format!(
                        "set-up: the page read {:#010x}, not frame A's marker",
                        s.r.x(0)
                    ));
                    return;
                }
                if s.r.x(2) == test::MARK_A {
                    f.fail("after the call the stale mapping (frame A) is still seen");
                } else {
                    f.expect(
                        "a read after the call",
                        test::MARK_B,
                        s.r.x(2),
                        "frame B, the new mapping",
                    );
                }
                if s.r.x(1) == test::MARK_A {
                    f.note("stale mapping demonstrated before the call");
                } else {
                    f.note(
                        "the CPU refilled the TLB by itself (no stale read before the call): \
                         only the new mapping after the call is checked",
                    );
                }
            })
    };
    let specs = if call == Call::InvalPage {
        let page = ctx.map.window_page(test::WIN_TLB);
        vec![stale(
            format!("InvalPage({page:#x}) after a PTE change"),
            test::WIN_TLB,
            false,
            page,
        )]
    } else {
        let mut specs = vec![stale(
            "FlushTLB(1) after a PTE change".into(),
            test::WIN_TLB,
            false,
            1,
        )];
        if ctx.machine.has_edx1(13) {
            specs.push(stale(
                "FlushTLB(3) after a change of a global PTE (CR4.PGE)".into(),
                test::WIN_TLB_GLOBAL,
                true,
                3,
            ));
        }
        specs
    };
    Plan::Run(specs, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::super::judge::KERNEL_SEGMENTS;
    use super::*;

    #[test]
    fn kernel_segments_are_linux_ones() {
        assert_eq!(KERNEL_SEGMENTS[0], ("CS", LINUX_KERNEL_CS));
        assert_eq!(KERNEL_SEGMENTS[3], ("ES", LINUX_USER_DS));
    }
}
