//! Host-built call vectors, one or more per call, from vmi-abi: the inputs, what the guest
//! sets up and reads back around the call, and what the result must show.
//!
//! Every vector also gets the checks of its call's register class ([`super::judge::common`]):
//! registers outside the call's clobber set hold their canary (or input), ESP is back, the
//! segment registers are Linux's, DF = 0, and the flags the class keeps are unchanged.

use super::judge::{AC, Findings, ID, IF, IOPL, Seen, VEC_EFLAGS, ZF};
use super::scenarios;
use super::timer;
use crate::engine::Engine;
use crate::guest::gdt;
use crate::guest::idt;
use crate::guest::layout::{self as l, MemoryMap, test};
use crate::guest::paging::{CR0_AM, CR0_TS, CR4_PGE, CR4_TSD};
use crate::guest::vector::{Invoke, Op, Val, Vector, hash, xslot};
use crate::protocol::Machine;
use vmi_abi::Call;
use vmi_abi::calls::Reg::{self, Eax, Ecx, Edx};
use vmi_abi::consts::{
    LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_LDT, LINUX_TSS, VMI_PAGE_CLONE, VMI_PAGE_CURRENT_AS,
    VMI_PAGE_L1, VMI_PAGE_L2, VMI_PAGE_PT,
};

/// How control comes back from a vector's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// A plain return to the call site.
    Returns,
    /// Through the vector's resume point (an IRET frame's EIP).
    Resumes,
    /// Through an expected trap: the ring-3 stub's `int 0x80`.
    Traps,
    /// Through an expected trap: a fault (or, for a valid frame, the code the frame returns
    /// to trapping).
    Faults,
    /// Never: the CPU stops (own run; judged by how the run ends).
    Shutdown,
    /// Never: the machine resets (own run).
    Reboot,
}

/// A vector's own check.
pub(crate) type Check = Box<dyn Fn(&Seen<'_>, &mut Findings)>;

/// One vector and how to judge it.
pub(crate) struct Spec {
    /// The call it exercises.
    pub call: u8,
    /// Short description (`"SetCR0(CR0|TS)"`).
    pub what: String,
    /// What the guest runs.
    pub vector: Vector,
    /// How control comes back.
    pub flow: Flow,
    /// EFLAGS bits beyond the arithmetic ones the call may change (IF for the interrupt
    /// calls, IOPL for SetIOPLMask).
    pub may_change: u32,
    /// Its own check (after the common ones).
    pub check: Check,
    /// Needs paging to mean anything.
    pub needs_paging: bool,
    /// A reference run (the native instruction in place of the ROM call): the next vector of
    /// the same call is compared with it.
    pub reference: bool,
    /// Needs a second CPU (the run gets `-smp 2`).
    pub smp: bool,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("call", &self.call)
            .field("what", &self.what)
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}

/// The interrupt sources the engine gives the guest, as its run reported them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Irqs {
    /// A PIC with a PIT that raises IRQ0 and an RTC that raises IRQ8, both delivered the
    /// moment IF is set, without the vCPU leaving the hypervisor (QEMU).
    pub pic: bool,
    /// The PIT's IRQ0 reaches the guest through the PIC (QEMU; the KVM runner when its run
    /// reported an IRQ0 source, [`crate::kvm::KvmRun::irq0`]).
    pub irq0: bool,
    /// The local APIC delivers its timer's interrupts and self-IPIs (QEMU; the KVM runner
    /// when its run had the in-kernel irqchip, [`crate::kvm::KvmRun::irqchip`]).
    pub lapic: bool,
    /// A second CPU can be started (QEMU with `-smp 2`; the KVM runner has one vCPU).
    pub smp: bool,
}

impl Irqs {
    /// What `engine` gives; `kvm_irqchip`: whether the KVM run had the irqchip, `kvm_irq0`:
    /// whether its runner raised IRQ0.
    pub(crate) fn of(engine: Engine, kvm_irqchip: Option<bool>, kvm_irq0: Option<bool>) -> Irqs {
        match engine {
            Engine::Qemu(_) => Irqs {
                pic: true,
                irq0: true,
                lapic: true,
                smp: true,
            },
            Engine::Kvm => Irqs {
                pic: false,
                irq0: kvm_irq0 == Some(true),
                lapic: kvm_irqchip == Some(true),
                smp: false,
            },
        }
    }
}

/// What the vectors know about the guest and the ROM.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The guest's memory map.
    pub map: MemoryMap,
    /// The native CPU.
    pub machine: Machine,
    /// What runs the guest.
    pub engine: Engine,
    /// The interrupt sources it gives the guest.
    pub irqs: Irqs,
    /// Linear top of the kernel stack (ESP at every call).
    pub stack_top: u32,
    /// Calls answered JUMP_REL (reached with `jmp`).
    pub jump: Vec<u8>,
    /// Calls answered CALL_REL.
    pub call_rel: Vec<u8>,
    /// The ROM promises kvmclock where the CPU offers it ([`super::SuiteOptions::expect_kvmclock`]).
    pub expect_kvmclock: bool,
}

impl Ctx {
    /// `call` or `jmp` for `call`.
    pub(crate) fn invoke(&self, call: Call) -> Invoke {
        if self.jump.contains(&(call as u8)) {
            Invoke::Jump
        } else {
            Invoke::Call
        }
    }

    /// Whether the ROM answered CALL_REL for `call`.
    pub(crate) fn implements(&self, call: Call) -> bool {
        self.call_rel.contains(&(call as u8))
    }

    /// Whether the engine has a PIC and a PIT that raises IRQ0 (QEMU).
    pub(crate) fn has_pic(&self) -> bool {
        self.irqs.pic
    }

    /// Whether the local APIC answers and delivers its interrupts (timer, self-IPI).
    pub(crate) fn has_lapic_irqs(&self) -> bool {
        self.irqs.lapic && self.machine.has_apic()
    }

    /// The ACPI PM timer to measure time with: the one the firmware's FADT names (QEMU), or
    /// the KVM runner's, which no table names ([`crate::kvm::PM_TIMER`]).
    pub(crate) fn pm_timer(&self) -> Option<crate::protocol::PmTimer> {
        match self.engine {
            Engine::Kvm => self.machine.pm_timer.or(Some(crate::kvm::PM_TIMER)),
            Engine::Qemu(_) => self.machine.pm_timer,
        }
    }

    /// Kernel linear address of `phys`.
    pub(crate) fn va(&self, phys: u32) -> u32 {
        self.map.va(phys)
    }
}

/// What to do with an implemented call.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Run these vectors; the notes go into the verdict.
    Run(Vec<Spec>, Vec<String>),
    /// Nothing can be run for it here, because …
    Skip(String),
}

/// A vector under construction.
pub(crate) struct B {
    call: Call,
    what: String,
    v: Vector,
    flow: Flow,
    may_change: u32,
    needs_paging: bool,
    smp: bool,
}

/// Starts a vector of `call`: no inputs, [`VEC_EFLAGS`], a plain return.
pub(crate) fn b(ctx: &Ctx, call: Call, what: impl Into<String>) -> B {
    B {
        call,
        what: what.into(),
        v: Vector {
            call: call as u8,
            invoke: ctx.invoke(call),
            regs: Vec::new(),
            stack: Vec::new(),
            eflags: VEC_EFLAGS,
            pre: Vec::new(),
            post: Vec::new(),
        },
        flow: Flow::Returns,
        may_change: 0,
        needs_paging: false,
        smp: false,
    }
}

impl B {
    /// Input `reg` = `v`.
    pub(crate) fn reg(self, reg: Reg, v: u32) -> B {
        self.regv(reg, Val::Imm(v))
    }

    /// Input `reg` = `v`.
    pub(crate) fn regv(mut self, reg: Reg, v: Val) -> B {
        self.v.regs.retain(|(r, _)| *r != reg);
        self.v.regs.push((reg, v));
        self
    }

    /// Stack words (word 0 at `[esp + 4]`).
    pub(crate) fn stack(mut self, words: impl IntoIterator<Item = Val>) -> B {
        self.v.stack = words.into_iter().collect();
        self
    }

    /// EFLAGS before the call.
    pub(crate) fn eflags(mut self, e: u32) -> B {
        self.v.eflags = e;
        self
    }

    /// Ops before the call.
    pub(crate) fn pre(mut self, ops: impl IntoIterator<Item = Op>) -> B {
        self.v.pre.extend(ops);
        self
    }

    /// Ops after the capture.
    pub(crate) fn post(mut self, ops: impl IntoIterator<Item = Op>) -> B {
        self.v.post.extend(ops);
        self
    }

    /// How control comes back.
    pub(crate) fn flow(mut self, flow: Flow) -> B {
        self.flow = flow;
        self
    }

    /// EFLAGS bits the call may change.
    pub(crate) fn may_change(mut self, bits: u32) -> B {
        self.may_change = bits;
        self
    }

    /// How the guest reaches the call (default: as the ROM answered).
    pub(crate) fn invoke(mut self, how: Invoke) -> B {
        self.v.invoke = how;
        self
    }

    /// Marks the vector as meaningful with paging only.
    pub(crate) fn paging(mut self) -> B {
        self.needs_paging = true;
        self
    }

    /// Marks the vector as needing a second CPU.
    pub(crate) fn second_cpu(mut self) -> B {
        self.smp = true;
        self
    }

    /// Calls `call` at the site instead (the vector still judges the call it was started
    /// for: a scenario of one call whose last step is another call).
    pub(crate) fn site(mut self, ctx: &Ctx, call: Call) -> B {
        self.v.call = call as u8;
        self.v.invoke = ctx.invoke(call);
        self
    }

    /// Finishes with its own check.
    pub(crate) fn check(self, check: impl Fn(&Seen<'_>, &mut Findings) + 'static) -> Spec {
        let reference = self.v.invoke == Invoke::NativeIret;
        Spec {
            call: self.call as u8,
            what: self.what,
            vector: self.v,
            flow: self.flow,
            may_change: self.may_change,
            check: Box::new(check),
            needs_paging: self.needs_paging,
            reference,
            smp: self.smp,
        }
    }

    /// Finishes with the common checks only.
    pub(crate) fn plain(self) -> Spec {
        self.check(|_, _| {})
    }
}

/// A pseudo-descriptor as the two dwords a `Store` writes (`limit`, `base`; bytes 6–7 get
/// `pad`).
fn pseudo(limit: u16, base: u32, pad: u16) -> [u32; 2] {
    [
        u32::from(limit) | (base & 0xFFFF) << 16,
        base >> 16 | u32::from(pad) << 16,
    ]
}

/// Ops that write the 8-byte descriptor `d` at `addr`.
fn store64(addr: u32, d: u64) -> [Op; 2] {
    [
        Op::Store {
            addr,
            value: Val::Imm(d as u32),
        },
        Op::Store {
            addr: addr + 4,
            value: Val::Imm((d >> 32) as u32),
        },
    ]
}

/// The descriptor of the LDT SetLDT loads (entry 17, selector 0x88, like Linux's).
fn ldt_descriptor(ctx: &Ctx) -> u64 {
    gdt::descriptor(ctx.va(test::LDT), 0xFF, 0x82, gdt::FLAGS_BYTE)
}

/// The available-TSS descriptor of the second TSS.
fn tss2_descriptor(ctx: &Ctx) -> u64 {
    gdt::descriptor(
        ctx.va(test::TSS2),
        l::TSS_LEN as u32 - 1,
        gdt::ACCESS_TSS,
        gdt::FLAGS_BYTE,
    )
}

/// GDT entry 31: free in Linux's layout (the double-fault TSS lives there in Linux 2.6.2x),
/// used here for a second TSS.
const SPARE_TSS: u16 = 0xF8;

/// Type-field busy bit of a TSS descriptor, in its high dword.
const TSS_BUSY: u32 = 1 << 9;

/// The vectors of `call` (implemented by the ROM), or why none can run.
pub(crate) fn plan(ctx: &Ctx, call: Call) -> Plan {
    use Call::*;
    let v = |specs: Vec<Spec>| Plan::Run(specs, Vec::new());
    match call {
        CPUID => v(cpuid(ctx)),
        WRMSR | RDMSR => msr(ctx, call),
        SetGDT | SetIDT => v(set_dt(ctx, call)),
        SetLDT => v(set_ldt(ctx)),
        SetTR => v(set_tr(ctx)),
        GetGDT | GetIDT => v(get_dt(ctx, call)),
        GetLDT => v(get_ldt(ctx)),
        GetTR => v(get_tr(ctx)),
        WriteGDTEntry | WriteLDTEntry | WriteIDTEntry => v(write_entry(ctx, call)),
        UpdateKernelStack => v(update_kernel_stack(ctx)),
        SetCR0 | SetCR2 | SetCR3 | SetCR4 => v(set_cr(ctx, call)),
        GetCR0 | GetCR2 | GetCR3 | GetCR4 => v(get_cr(ctx, call)),
        WBINVD | IODelay => v(vec![
            b(ctx, call, format!("{}()", call.spec().name)).plain(),
        ]),
        SetDR | GetDR => v(debug_regs(ctx, call)),
        RDPMC => rdpmc(ctx),
        RDTSC => v(rdtsc(ctx)),
        CLTS => v(clts(ctx)),
        EnableInterrupts | DisableInterrupts | GetInterruptMask | SetInterruptMask => {
            v(interrupt_flag(ctx, call))
        }
        IRET => v(scenarios::iret(ctx)),
        SYSEXIT => scenarios::sysexit(ctx),
        Halt => scenarios::halt(ctx),
        Reboot | Shutdown => v(scenarios::terminal(ctx, call)),
        SetPxE | SetPxELong | UpdatePxE | UpdatePxELong => pxe(ctx, call),
        AllocatePage | ReleasePage => v(page_hints(ctx, call)),
        InvalPage | FlushTLB => scenarios::tlb(ctx, call),
        SetLinearMapping => v(set_linear_mapping(ctx)),
        INL | INB | INW | OUTL | OUTB | OUTW => v(port_io(ctx, call)),
        INSL | INSB | INSW | OUTSL | OUTSB | OUTSW => Plan::Skip(
            "string port I/O: calling convention unconfirmed (vmi-abi.md §4.2; Linux never \
             asks); not exercised"
                .into(),
        ),
        MachineToPhysical | PhysicalToMachine | SetCallbacks => Plan::Skip(
            "semantics unconfirmed (vmi-abi.md §4.2; Linux never asks); not exercised".into(),
        ),
        SetIOPLMask => v(set_iopl(ctx)),
        SetInitialAPState => v(ap_state(ctx)),
        APICWrite | APICRead => timer::apic(ctx, call),
        GetCycleFrequency | GetCycleCounter | SetAlarm | CancelAlarm | GetWallclockTime
        | WallclockUpdated => timer::timer(ctx, call),
        SetLazyMode => v(lazy(ctx)),
    }
}

fn cpuid(ctx: &Ctx) -> Vec<Spec> {
    [0u32, 1, 0x8000_0000, 0x8000_0001]
        .into_iter()
        .map(|leaf| {
            b(ctx, Call::CPUID, format!("CPUID({leaf:#x})"))
                .reg(Eax, leaf)
                .reg(Ecx, 0)
                .pre([Op::Cpuid {
                    leaf,
                    subleaf: 0,
                    slot: 0,
                }])
                .check(|s, f| {
                    for (k, (name, got)) in [
                        ("EAX", s.r.regs.eax),
                        ("EBX", s.r.regs.ebx),
                        ("ECX", s.r.regs.ecx),
                        ("EDX", s.r.regs.edx),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        f.expect(name, s.r.x(k), got, "native cpuid");
                    }
                })
        })
        .collect()
}

/// IA32_SYSENTER_ESP and IA32_SYSENTER_EIP: harmless to write (the guest sets them itself
/// before SYSEXIT).
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;

fn msr(ctx: &Ctx, call: Call) -> Plan {
    if !ctx.machine.has_edx1(11) {
        return Plan::Skip(
            "this CPU has no SYSENTER MSRs (CPUID.1:EDX.SEP = 0) to round-trip harmlessly".into(),
        );
    }
    let specs = [
        (MSR_SYSENTER_ESP, 0x00AB_C000u32),
        (MSR_SYSENTER_EIP, 0x00DE_F000),
    ]
    .into_iter()
    .map(|(msr, value)| {
        if call == Call::WRMSR {
            b(ctx, call, format!("WRMSR({msr:#x}, {value:#x})"))
                .reg(Eax, value)
                .reg(Edx, 0)
                .reg(Ecx, msr)
                .post([Op::Rdmsr { msr, slot: 0 }])
                .check(move |s, f| {
                    f.expect64(
                        "the MSR",
                        u64::from(value),
                        s.r.x64(0),
                        "native rdmsr after",
                    )
                })
        } else {
            b(ctx, call, format!("RDMSR({msr:#x})"))
                .reg(Ecx, msr)
                .pre([Op::Wrmsr {
                    msr,
                    lo: Val::Imm(value),
                    hi: Val::Imm(0),
                }])
                .post([Op::Rdmsr { msr, slot: 0 }])
                .check(|s, f| {
                    let got = u64::from(s.r.regs.eax) | u64::from(s.r.regs.edx) << 32;
                    f.expect64("EDX:EAX", s.r.x64(0), got, "native rdmsr");
                })
        }
    })
    .collect();
    Plan::Run(specs, Vec::new())
}

fn set_dt(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let (src, copy, len, name) = if call == Call::SetGDT {
        (l::GDT, test::GDT2, l::GDT_ENTRIES as u32 * 8, "GDTR")
    } else {
        (l::IDT_KERNEL, test::IDT2, l::IDT_ENTRIES as u32 * 8, "IDTR")
    };
    let base = ctx.va(copy);
    let limit = (len - 1) as u16;
    let [w0, w1] = pseudo(limit, base, 0);
    vec![
        b(
            ctx,
            call,
            format!("{}(copy at {base:#x})", call.spec().name),
        )
        .reg(Eax, ctx.va(test::PSEUDO))
        .pre([
            Op::Copy {
                src,
                dst: copy,
                dwords: len / 4,
            },
            Op::Store {
                addr: test::PSEUDO,
                value: Val::Imm(w0),
            },
            Op::Store {
                addr: test::PSEUDO + 4,
                value: Val::Imm(w1),
            },
        ])
        .check(move |s, f| {
            let got = if call == Call::SetGDT {
                s.r.gdtr
            } else {
                s.r.idtr
            };
            f.expect(&format!("{name} base"), base, got.base, "the copy");
            f.expect(
                &format!("{name} limit"),
                u32::from(limit),
                u32::from(got.limit),
                "",
            );
        }),
    ]
}

fn set_ldt(ctx: &Ctx) -> Vec<Spec> {
    let desc = store64(l::GDT + u32::from(LINUX_LDT), ldt_descriptor(ctx));
    vec![
        b(ctx, Call::SetLDT, "SetLDT(0x88)")
            .reg(Eax, u32::from(LINUX_LDT))
            .pre(desc)
            .check(|s, f| f.expect("LDTR", u32::from(LINUX_LDT), u32::from(s.r.ldtr), "")),
        b(ctx, Call::SetLDT, "SetLDT(0)")
            .reg(Eax, 0)
            .pre(desc)
            .pre([Op::Lldt {
                selector: LINUX_LDT,
            }])
            .check(|s, f| f.expect("LDTR", 0, u32::from(s.r.ldtr), "")),
    ]
}

fn set_tr(ctx: &Ctx) -> Vec<Spec> {
    let spare = store64(l::GDT + u32::from(SPARE_TSS), tss2_descriptor(ctx));
    let busy = |f: &mut Findings, high: u32, sel: u16| {
        if high & TSS_BUSY == 0 {
            f.note(format!(
                "the TSS descriptor {sel:#x} was not marked busy (ltr would have)"
            ));
        }
    };
    vec![
        b(ctx, Call::SetTR, "SetTR(0xf8, a second TSS)")
            .reg(Eax, u32::from(SPARE_TSS))
            .pre(spare)
            .pre([Op::Copy {
                src: l::TSS,
                dst: test::TSS2,
                dwords: l::TSS_LEN as u32 / 4,
            }])
            .post([Op::Load {
                addr: l::GDT + u32::from(SPARE_TSS) + 4,
                slot: 0,
            }])
            .check(move |s, f| {
                f.expect("TR", u32::from(SPARE_TSS), u32::from(s.r.tr), "");
                busy(f, s.r.x(0), SPARE_TSS);
            }),
        b(ctx, Call::SetTR, "SetTR(0x80) after clearing its busy bit")
            .reg(Eax, u32::from(LINUX_TSS))
            .pre([Op::And {
                addr: l::GDT + u32::from(LINUX_TSS) + 4,
                mask: !TSS_BUSY,
            }])
            .post([Op::Load {
                addr: l::GDT + u32::from(LINUX_TSS) + 4,
                slot: 0,
            }])
            .check(move |s, f| {
                f.expect("TR", u32::from(LINUX_TSS), u32::from(s.r.tr), "");
                busy(f, s.r.x(0), LINUX_TSS);
            }),
    ]
}

fn get_dt(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let get_gdt = call == Call::GetGDT;
    vec![
        b(ctx, call, format!("{}(buffer)", call.spec().name))
            .reg(Eax, ctx.va(test::PSEUDO))
            .pre([Op::Fill {
                dst: test::PSEUDO,
                value: 0xA5A5_A5A5,
                dwords: 2,
            }])
            .post([
                Op::Load {
                    addr: test::PSEUDO,
                    slot: 0,
                },
                Op::Load {
                    addr: test::PSEUDO + 4,
                    slot: 1,
                },
            ])
            .check(move |s, f| {
                let real = if get_gdt { s.r.gdtr } else { s.r.idtr };
                let (w0, w1) = (s.r.x(0), s.r.x(1));
                f.expect(
                    "limit in the buffer",
                    u32::from(real.limit),
                    w0 & 0xFFFF,
                    "sgdt/sidt",
                );
                f.expect(
                    "base in the buffer",
                    real.base,
                    w0 >> 16 | (w1 & 0xFFFF) << 16,
                    "sgdt/sidt",
                );
                f.ensure(w1 >> 16 == 0xA5A5, || {
                    format!(
                        "wrote past the 6-byte buffer (bytes 6-7 now {:#06x})",
                        w1 >> 16
                    )
                });
            }),
    ]
}

fn get_ldt(ctx: &Ctx) -> Vec<Spec> {
    vec![
        b(ctx, Call::GetLDT, "GetLDT() with LDTR = 0x88")
            .pre(store64(l::GDT + u32::from(LINUX_LDT), ldt_descriptor(ctx)))
            .pre([Op::Lldt {
                selector: LINUX_LDT,
            }])
            .check(|s, f| {
                f.expect("EAX", u32::from(s.r.ldtr), s.r.regs.eax, "LDTR");
            }),
        b(ctx, Call::GetLDT, "GetLDT() with LDTR = 0").check(|s, f| {
            f.expect("EAX", u32::from(s.r.ldtr), s.r.regs.eax, "LDTR");
        }),
    ]
}

fn get_tr(ctx: &Ctx) -> Vec<Spec> {
    vec![
        b(ctx, Call::GetTR, "GetTR() with TR = 0x80").check(|s, f| {
            f.expect("EAX", u32::from(s.r.tr), s.r.regs.eax, "TR");
        }),
        b(ctx, Call::GetTR, "GetTR() with TR = 0xf8")
            .pre(store64(l::GDT + u32::from(SPARE_TSS), tss2_descriptor(ctx)))
            .pre([
                Op::Copy {
                    src: l::TSS,
                    dst: test::TSS2,
                    dwords: l::TSS_LEN as u32 / 4,
                },
                Op::Ltr {
                    selector: SPARE_TSS,
                },
            ])
            .check(|s, f| {
                f.expect("EAX", u32::from(SPARE_TSS), s.r.regs.eax, "TR");
            }),
    ]
}

fn write_entry(ctx: &Ctx, call: Call) -> Vec<Spec> {
    const PATTERN: u32 = 0x5A5A_5A5A;
    let (table, entries, live, live_len, cases): (u32, u32, u32, u32, Vec<(u32, u64)>) = match call
    {
        Call::WriteGDTEntry => (
            test::DESC_TABLE,
            test::DESC_ENTRIES,
            l::GDT,
            l::GDT_ENTRIES as u32 * 2,
            vec![
                (u32::from(LINUX_LDT >> 3), ldt_descriptor(ctx)),
                (
                    6,
                    gdt::descriptor(0x1234_5000, 0xF_FFFF, 0xF2, gdt::FLAGS_G_D),
                ),
            ],
        ),
        Call::WriteLDTEntry => (
            test::DESC_TABLE,
            test::DESC_ENTRIES,
            l::GDT,
            l::GDT_ENTRIES as u32 * 2,
            vec![
                (0, gdt::descriptor(0, 0xF_FFFF, 0xFA, gdt::FLAGS_G_D)),
                (
                    5,
                    gdt::descriptor(0x0804_8000, 0xF_FFFF, 0xF2, gdt::FLAGS_G_D),
                ),
            ],
        ),
        _ => (
            test::IDT_SCRATCH,
            test::IDT_SCRATCH_ENTRIES,
            l::IDT_KERNEL,
            l::IDT_ENTRIES as u32 * 2,
            vec![
                (0x21, idt::gate(LINUX_KERNEL_CS, 0xC012_3456)),
                (3, idt::gate_with(LINUX_KERNEL_CS, 0xC065_4321, 0xEF)),
            ],
        ),
    };
    cases
        .into_iter()
        .map(|(index, desc)| {
            let (low, high) = (desc as u32, (desc >> 32) as u32);
            let dwords = entries * 2;
            b(
                ctx,
                call,
                format!("{}(table, {index}, {desc:#018x})", call.spec().name),
            )
            .reg(Eax, ctx.va(table))
            .reg(Edx, index)
            .reg(Ecx, low)
            .stack([Val::Imm(high)])
            .pre([
                Op::Fill {
                    dst: table,
                    value: PATTERN,
                    dwords,
                },
                Op::Hash {
                    addr: live,
                    dwords: live_len,
                    slot: 8,
                },
            ])
            .post([
                Op::Load {
                    addr: table + 8 * index,
                    slot: 0,
                },
                Op::Load {
                    addr: table + 8 * index + 4,
                    slot: 1,
                },
                Op::Hash {
                    addr: table,
                    dwords,
                    slot: 2,
                },
                Op::Hash {
                    addr: live,
                    dwords: live_len,
                    slot: 9,
                },
            ])
            .check(move |s, f| {
                let at = format!("entry {index}");
                f.expect64(&at, desc, s.r.x64(0), "the descriptor passed");
                let expected = hash((0..dwords).map(|k| {
                    if k == 2 * index {
                        low
                    } else if k == 2 * index + 1 {
                        high
                    } else {
                        PATTERN
                    }
                }));
                f.ensure(s.r.x(2) == expected || s.r.x64(0) != desc, || {
                    "other entries of the table changed too".into()
                });
                f.ensure(s.r.x(8) == s.r.x(9), || {
                    "the guest's live table changed (the write went to the wrong table)".into()
                });
            })
        })
        .collect()
}

fn update_kernel_stack(ctx: &Ctx) -> Vec<Spec> {
    let esp0 = ctx.va(l::RING0_STACK_TOP);
    vec![
        b(
            ctx,
            Call::UpdateKernelStack,
            "UpdateKernelStack(0x68, esp0)",
        )
        .reg(Eax, u32::from(LINUX_KERNEL_DS))
        .reg(Edx, esp0)
        .pre([Op::Hash {
            addr: l::TSS,
            dwords: l::TSS_LEN as u32 / 4,
            slot: 0,
        }])
        .post([Op::Hash {
            addr: l::TSS,
            dwords: l::TSS_LEN as u32 / 4,
            slot: 1,
        }])
        .check(|s, f| {
            f.ensure(s.r.x(0) == s.r.x(1), || {
                "the TSS changed (Linux already stored esp0 there)".into()
            })
        }),
    ]
}

/// Ops that compute `CRn op bits` into extra word `slot` (for a `Val::Mem(xslot(slot))`).
fn cr_with(cr: u8, slot: u8, or: u32, and: u32) -> [Op; 3] {
    [
        Op::ReadCr { cr, slot },
        Op::Or {
            addr: xslot(slot),
            bits: or,
        },
        Op::And {
            addr: xslot(slot),
            mask: and,
        },
    ]
}

fn set_cr(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let name = call.spec().name;
    let round_trip = |what: String, cr: u8, or: u32, and: u32, setup: Vec<Op>| {
        b(ctx, call, what)
            .pre(setup)
            .pre(cr_with(cr, 0, or, and))
            .regv(Eax, Val::Mem(xslot(0)))
            .check(move |s, f| {
                let got = match cr {
                    0 => s.r.cr0,
                    3 => s.r.cr3,
                    _ => s.r.cr4,
                };
                f.expect(&format!("CR{cr}"), s.r.x(0), got, "the value passed");
            })
    };
    match call {
        Call::SetCR0 => vec![
            round_trip(format!("{name}(CR0|TS)"), 0, CR0_TS, !0, Vec::new()),
            round_trip(
                format!("{name}(CR0&~TS) with TS set"),
                0,
                0,
                !CR0_TS,
                cr_with(0, 1, CR0_TS, !0)
                    .into_iter()
                    .chain([Op::WriteCr {
                        cr: 0,
                        value: Val::Mem(xslot(1)),
                    }])
                    .collect(),
            ),
            round_trip(format!("{name}(CR0|AM)"), 0, CR0_AM, !0, Vec::new()),
        ],
        Call::SetCR2 => [0x1234_5000u32, 0xC0FF_EE00]
            .into_iter()
            .map(|v| {
                b(ctx, call, format!("{name}({v:#x})"))
                    .reg(Eax, v)
                    .check(move |s, f| f.expect("CR2", v, s.r.cr2, "the value passed"))
            })
            .collect(),
        Call::SetCR3 => [test::PAGE_DIR2, l::PAGE_DIR]
            .into_iter()
            .map(|v| {
                let what = if v == test::PAGE_DIR2 {
                    "a copy of the page directory"
                } else {
                    "the page directory"
                };
                b(ctx, call, format!("{name}({v:#x}, {what})"))
                    .reg(Eax, v)
                    .pre([Op::WriteCr {
                        cr: 3,
                        value: Val::Imm(if v == l::PAGE_DIR {
                            test::PAGE_DIR2
                        } else {
                            l::PAGE_DIR
                        }),
                    }])
                    .check(move |s, f| f.expect("CR3", v, s.r.cr3, "the value passed"))
            })
            .collect(),
        _ => {
            let mut specs = Vec::new();
            if ctx.machine.has_edx1(4) {
                specs.push(round_trip(
                    format!("{name}(CR4|TSD)"),
                    4,
                    CR4_TSD,
                    !0,
                    Vec::new(),
                ));
            }
            if ctx.machine.has_edx1(13) {
                specs.push(round_trip(
                    format!("{name}(CR4|PGE)"),
                    4,
                    CR4_PGE,
                    !0,
                    Vec::new(),
                ));
                specs.push(round_trip(
                    format!("{name}(CR4&~PGE) with PGE set"),
                    4,
                    0,
                    !CR4_PGE,
                    cr_with(4, 1, CR4_PGE, !0)
                        .into_iter()
                        .chain([Op::WriteCr {
                            cr: 4,
                            value: Val::Mem(xslot(1)),
                        }])
                        .collect(),
                ));
            }
            specs.push(round_trip(format!("{name}(CR4)"), 4, 0, !0, Vec::new()));
            specs
        }
    }
}

fn get_cr(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let name = call.spec().name;
    let (cr, what_real): (u8, fn(&crate::protocol::VectorResult) -> u32) = match call {
        Call::GetCR0 => (0, |r| r.cr0),
        Call::GetCR2 => (2, |r| r.cr2),
        Call::GetCR3 => (3, |r| r.cr3),
        _ => (4, |r| r.cr4),
    };
    let read = move |s: &Seen<'_>, f: &mut Findings| {
        f.expect("EAX", what_real(s.r), s.r.regs.eax, &format!("CR{cr}"));
    };
    let mut specs = vec![b(ctx, call, format!("{name}()")).check(read)];
    let setup: Option<(String, Vec<Op>)> = match cr {
        0 => Some((
            "with TS set".into(),
            cr_with(0, 0, CR0_TS, !0)
                .into_iter()
                .chain([Op::WriteCr {
                    cr: 0,
                    value: Val::Mem(xslot(0)),
                }])
                .collect(),
        )),
        2 => Some((
            "with CR2 = 0xcafe0000".into(),
            vec![Op::WriteCr {
                cr: 2,
                value: Val::Imm(0xCAFE_0000),
            }],
        )),
        3 => Some((
            "with CR3 = the copy of the page directory".into(),
            vec![Op::WriteCr {
                cr: 3,
                value: Val::Imm(test::PAGE_DIR2),
            }],
        )),
        _ if ctx.machine.has_edx1(4) => Some((
            "with TSD set".into(),
            cr_with(4, 0, CR4_TSD, !0)
                .into_iter()
                .chain([Op::WriteCr {
                    cr: 4,
                    value: Val::Mem(xslot(0)),
                }])
                .collect(),
        )),
        _ => None,
    };
    if let Some((what, ops)) = setup {
        specs.push(
            b(ctx, call, format!("{name}() {what}"))
                .pre(ops)
                .check(read),
        );
    }
    specs
}

fn debug_regs(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let cases: [(u8, u32); 5] = [
        (0, 0x0ABC_0000),
        (1, 0x0ABC_1111),
        (2, 0x0ABC_2222),
        (3, 0x0ABC_3333),
        (7, 0x000F_0400),
    ];
    let mut specs: Vec<Spec> = cases
        .into_iter()
        .map(|(n, value)| {
            if call == Call::SetDR {
                b(ctx, call, format!("SetDR({n}, {value:#x})"))
                    .reg(Eax, u32::from(n))
                    .reg(Edx, value)
                    .check(move |s, f| {
                        f.expect(
                            &format!("DR{n}"),
                            value,
                            s.r.dr(n).unwrap_or(0),
                            "the value passed",
                        )
                    })
            } else {
                b(ctx, call, format!("GetDR({n}) = {value:#x}"))
                    .reg(Eax, u32::from(n))
                    .pre([Op::WriteDr {
                        dr: n,
                        value: Val::Imm(value),
                    }])
                    .check(move |s, f| {
                        f.expect(
                            "EAX",
                            s.r.dr(n).unwrap_or(0),
                            s.r.regs.eax,
                            &format!("DR{n}"),
                        )
                    })
            }
        })
        .collect();
    if call == Call::GetDR {
        specs.push(
            b(ctx, call, "GetDR(6)")
                .reg(Eax, 6)
                .check(|s, f| f.expect("EAX", s.r.dr(6).unwrap_or(0), s.r.regs.eax, "DR6")),
        );
    }
    specs
}

fn rdpmc(ctx: &Ctx) -> Plan {
    match ctx.machine.rdpmc {
        Err(v) => Plan::Skip(format!(
            "a native rdpmc raises {} (vector {v}) on this CPU{}: no counter to compare with",
            idt::mnemonic(v),
            if matches!(ctx.engine, Engine::Qemu(crate::qemu::Accel::Tcg)) {
                " (QEMU's TCG does not implement performance counters)"
            } else {
                ""
            }
        )),
        Ok(_) => Plan::Run(
            vec![b(ctx, Call::RDPMC, "RDPMC(0)").reg(Ecx, 0).check(|s, f| {
                f.note(format!(
                    "counter 0 read {:#x}",
                    u64::from(s.r.regs.eax) | u64::from(s.r.regs.edx) << 32
                ))
            })],
            Vec::new(),
        ),
    }
}

fn rdtsc(ctx: &Ctx) -> Vec<Spec> {
    (1..=2)
        .map(|k| {
            b(ctx, Call::RDTSC, format!("RDTSC() #{k}"))
                .pre([Op::Rdtsc { slot: 0 }])
                .post([Op::Rdtsc { slot: 2 }])
                .check(|s, f| {
                    let got = u64::from(s.r.regs.eax) | u64::from(s.r.regs.edx) << 32;
                    let (before, after) = (s.r.x64(0), s.r.x64(2));
                    f.ensure(before <= got && got <= after, || {
                        format!(
                            "EDX:EAX {got:#x} is not between the native rdtsc before \
                             ({before:#x}) and after ({after:#x})"
                        )
                    });
                    for e in s.earlier {
                        let prev = u64::from(e.regs.eax) | u64::from(e.regs.edx) << 32;
                        f.ensure(got > prev, || {
                            format!("not monotonic: {got:#x} after an earlier {prev:#x}")
                        });
                    }
                })
        })
        .collect()
}

fn clts(ctx: &Ctx) -> Vec<Spec> {
    vec![
        b(ctx, Call::CLTS, "CLTS() with TS set")
            .pre(cr_with(0, 0, CR0_TS, !0))
            .pre([Op::WriteCr {
                cr: 0,
                value: Val::Mem(xslot(0)),
            }])
            .check(|s, f| {
                f.expect(
                    "CR0",
                    s.r.x(0) & !CR0_TS,
                    s.r.cr0,
                    "TS cleared, nothing else",
                );
            }),
    ]
}

/// PIT divisor of the timer the interrupt tests use: 1193 ≈ 1 kHz.
pub(crate) const PIT_1KHZ: u16 = 1193;

fn interrupt_flag(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let if_is = |want: bool| {
        move |s: &Seen<'_>, f: &mut Findings| {
            let got = s.r.regs.eflags & IF != 0;
            f.ensure(got == want, || {
                format!(
                    "EFLAGS.IF: expected {}, got {} (EFLAGS {:#010x})",
                    u8::from(want),
                    u8::from(got),
                    s.r.regs.eflags
                )
            });
        }
    };
    let pending = |v: B, what: &str| {
        v.pre([
            Op::StartTimer { divisor: PIT_1KHZ },
            Op::WaitIrq0Pending { spins: 2_000_000 },
        ])
        .post([Op::Cli, Op::StopTimer])
        .check({
            let what = what.to_string();
            move |s, f| {
                f.ensure(s.r.ticks >= 1, || {
                    format!("a pending IRQ0 was not delivered by {what}")
                });
                f.ensure(s.r.regs.eflags & IF != 0, || {
                    "EFLAGS.IF: expected 1, got 0".into()
                });
            }
        })
    };
    let name = call.spec().name;
    let mut specs = Vec::new();
    match call {
        Call::EnableInterrupts => {
            specs.push(
                b(ctx, call, format!("{name}() with IF=0"))
                    .may_change(IF)
                    .post([Op::Cli])
                    .check(if_is(true)),
            );
            if ctx.has_pic() {
                specs.push(pending(
                    b(ctx, call, format!("{name}() with IRQ0 pending")).may_change(IF),
                    name,
                ));
            }
        }
        Call::DisableInterrupts => {
            specs.push(
                b(ctx, call, format!("{name}() with IF=1"))
                    .eflags(VEC_EFLAGS | IF)
                    .may_change(IF)
                    .check(if_is(false)),
            );
            specs.push(
                b(ctx, call, format!("{name}() with IF=0"))
                    .may_change(IF)
                    .check(if_is(false)),
            );
        }
        Call::GetInterruptMask => {
            for on in [true, false] {
                specs.push(
                    b(ctx, call, format!("{name}() with IF={}", u8::from(on)))
                        .eflags(if on { VEC_EFLAGS | IF } else { VEC_EFLAGS })
                        .post([Op::Cli])
                        .check(move |s, f| {
                            f.expect(
                                "EAX & 0x200",
                                if on { IF } else { 0 },
                                s.r.regs.eax & IF,
                                "the interrupt flag",
                            )
                        }),
                );
            }
        }
        _ => {
            for (mask, from_if, want) in [
                (IF, false, true),
                (0, true, false),
                (!IF, true, false),
                (IF | IOPL | AC | ID | ZF, false, true),
            ] {
                specs.push(
                    b(
                        ctx,
                        call,
                        format!("{name}({mask:#x}) with IF={}", u8::from(from_if)),
                    )
                    .reg(Eax, mask)
                    .eflags(if from_if { VEC_EFLAGS | IF } else { VEC_EFLAGS })
                    .may_change(IF)
                    .post([Op::Cli])
                    .check(if_is(want)),
                );
            }
            if ctx.has_pic() {
                specs.push(pending(
                    b(ctx, call, format!("{name}(0x200) with IRQ0 pending"))
                        .reg(Eax, IF)
                        .may_change(IF),
                    name,
                ));
            }
        }
    }
    specs
}

fn pxe(ctx: &Ctx, call: Call) -> Plan {
    let paging = ctx.map.paging();
    let mut notes = Vec::new();
    if !paging {
        notes.push("no paging: entries checked in memory only, not through the MMU".into());
    }
    let slot_pte = test::PT_WINDOW + 4 * test::WIN_SETPXE;
    let page = ctx.map.window_page(test::WIN_SETPXE);
    let specs = match call {
        Call::SetPxE => {
            let mut specs = Vec::new();
            for (what, value, flags) in [
                ("PT", test::FRAME_B | test::PTE_KERNEL, VMI_PAGE_PT),
                (
                    "PT|CURRENT_AS|va",
                    test::FRAME_B | test::PTE_KERNEL,
                    VMI_PAGE_PT | VMI_PAGE_CURRENT_AS | page,
                ),
                ("PT, clearing it", 0, VMI_PAGE_PT),
            ] {
                let mut v = b(ctx, call, format!("SetPxE({value:#x}, ptep, {what})"))
                    .reg(Eax, value)
                    .reg(Edx, ctx.va(slot_pte))
                    .reg(Ecx, flags)
                    .pre([Op::Store {
                        addr: slot_pte,
                        value: Val::Imm(if value == 0 {
                            test::FRAME_A | test::PTE_KERNEL
                        } else {
                            0
                        }),
                    }])
                    .post([Op::Load {
                        addr: slot_pte,
                        slot: 0,
                    }]);
                let mapped = paging && value != 0;
                if mapped {
                    v = v.post([
                        Op::Invlpg { addr: page },
                        Op::Load {
                            addr: page,
                            slot: 1,
                        },
                    ]);
                }
                specs.push(v.check(move |s, f| {
                    f.expect("the entry", value, s.r.x(0), "the value passed");
                    if mapped {
                        f.expect(
                            "a read through the new mapping",
                            test::MARK_B,
                            s.r.x(1),
                            "frame B's marker",
                        );
                    }
                }));
            }
            specs
        }
        Call::SetPxELong => [
            (0x0019_3063u32, 0x8000_0000u32, VMI_PAGE_PT),
            (0, 0, VMI_PAGE_PT),
        ]
        .into_iter()
        .map(|(lo, hi, flags)| {
            let value = u64::from(lo) | u64::from(hi) << 32;
            b(ctx, call, format!("SetPxELong({value:#x}, ptep, PT)"))
                .reg(Eax, lo)
                .reg(Edx, hi)
                .reg(Ecx, ctx.va(test::PXE_LONG + 4))
                .stack([Val::Imm(flags)])
                .pre([Op::Fill {
                    dst: test::PXE_LONG,
                    value: 0xFFFF_FFFF,
                    dwords: 4,
                }])
                .post((0..4).map(|k| Op::Load {
                    addr: test::PXE_LONG + 4 * k,
                    slot: k as u8,
                }))
                .check(move |s, f| {
                    f.expect64("the 64-bit entry", value, s.r.x64(1), "the value passed");
                    f.ensure(s.r.x(0) == u32::MAX && s.r.x(3) == u32::MAX, || {
                        format!(
                            "wrote outside the entry (guards now {:#x} / {:#x})",
                            s.r.x(0),
                            s.r.x(3)
                        )
                    });
                })
        })
        .collect(),
        Call::UpdatePxE => {
            let pte = test::PT_WINDOW + 4 * test::WIN_UPDATE;
            let page = ctx.map.window_page(test::WIN_UPDATE);
            let value = test::FRAME_B | test::PTE_KERNEL;
            let mut v = b(
                ctx,
                call,
                "UpdatePxE(ptep, PT|CURRENT_AS|va) after a direct write",
            )
            .reg(Eax, ctx.va(pte))
            .reg(Edx, VMI_PAGE_PT | VMI_PAGE_CURRENT_AS | page)
            .pre([Op::Store {
                addr: pte,
                value: Val::Imm(value),
            }])
            .post([Op::Load { addr: pte, slot: 0 }]);
            if paging {
                v = v.post([
                    Op::Invlpg { addr: page },
                    Op::Load {
                        addr: page,
                        slot: 1,
                    },
                ]);
            }
            vec![v.check(move |s, f| {
                f.expect("the entry", value, s.r.x(0), "as the guest wrote it");
                if paging {
                    f.expect(
                        "a read through it",
                        test::MARK_B,
                        s.r.x(1),
                        "frame B's marker",
                    );
                }
            })]
        }
        _ => {
            let value = 0x8000_0000_0019_3063u64;
            vec![
                b(ctx, call, "UpdatePxELong(ptep, PT) after a direct write")
                    .reg(Eax, ctx.va(test::PXE_LONG + 4))
                    .reg(Edx, VMI_PAGE_PT)
                    .pre([
                        Op::Store {
                            addr: test::PXE_LONG + 4,
                            value: Val::Imm(value as u32),
                        },
                        Op::Store {
                            addr: test::PXE_LONG + 8,
                            value: Val::Imm((value >> 32) as u32),
                        },
                    ])
                    .post([
                        Op::Load {
                            addr: test::PXE_LONG + 4,
                            slot: 0,
                        },
                        Op::Load {
                            addr: test::PXE_LONG + 8,
                            slot: 1,
                        },
                    ])
                    .check(move |s, f| {
                        f.expect64("the entry", value, s.r.x64(0), "as the guest wrote it")
                    }),
            ]
        }
    };
    Plan::Run(specs, notes)
}

fn page_hints(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let unchanged = |addr: u32, what: &'static str| {
        (
            Op::Hash {
                addr,
                dwords: 1024,
                slot: 0,
            },
            Op::Hash {
                addr,
                dwords: 1024,
                slot: 1,
            },
            move |s: &Seen<'_>, f: &mut Findings| {
                f.ensure(s.r.x(0) == s.r.x(1), || format!("{what} changed"))
            },
        )
    };
    let zero_pfn = test::ZERO_PAGE >> 12;
    if call == Call::ReleasePage {
        let (pre, post, check) = unchanged(test::ZERO_PAGE, "the page");
        return vec![
            b(ctx, call, "ReleasePage(pfn, L1)")
                .reg(Eax, zero_pfn)
                .reg(Edx, VMI_PAGE_L1)
                .pre([pre])
                .post([post])
                .check(check),
        ];
    }
    let (pre, post, check) = unchanged(test::ZERO_PAGE, "the page");
    let (pre2, post2, check2) = unchanged(test::PAGE_DIR2, "the page directory");
    vec![
        b(ctx, call, "AllocatePage(pfn, L1, 0, 0, 0)")
            .reg(Eax, zero_pfn)
            .reg(Edx, VMI_PAGE_L1)
            .reg(Ecx, 0)
            .stack([Val::Imm(0), Val::Imm(0)])
            .pre([pre])
            .post([post])
            .check(check),
        b(ctx, call, "AllocatePage(pd, L2|CLONE, swapper, 768, 256)")
            .reg(Eax, test::PAGE_DIR2 >> 12)
            .reg(Edx, VMI_PAGE_L2 | VMI_PAGE_CLONE)
            .reg(Ecx, l::PAGE_DIR >> 12)
            .stack([Val::Imm(768), Val::Imm(256)])
            .pre([pre2])
            .post([post2])
            .check(check2),
    ]
}

fn set_linear_mapping(ctx: &Ctx) -> Vec<Spec> {
    vec![
        b(
            ctx,
            Call::SetLinearMapping,
            "SetLinearMapping(0, PAGE_OFFSET, lowmem, 0)",
        )
        .reg(Eax, 0)
        .reg(Edx, ctx.va(0))
        .reg(Ecx, l::LOWMEM_MAPPED >> 12)
        .stack([Val::Imm(0)])
        .plain(),
        b(
            ctx,
            Call::SetLinearMapping,
            "SetLinearMapping(1, kmap page, 1, pfn)",
        )
        .reg(Eax, 1)
        .reg(Edx, ctx.map.window_page(test::WIN_UPDATE))
        .reg(Ecx, 1)
        .stack([Val::Imm(test::FRAME_A >> 12)])
        .plain(),
    ]
}

fn port_io(ctx: &Ctx, call: Call) -> Vec<Spec> {
    let name = call.spec().name;
    match call {
        Call::INB | Call::INW | Call::INL => {
            let v = b(ctx, call, format!("{name}(0x21), Doc v2 convention")).reg(Edx, 0x21);
            vec![if call == Call::INB {
                v.check(|s, f| {
                    f.expect(
                        "AL",
                        0xFF,
                        s.r.regs.eax & 0xFF,
                        "the PIC mask, all lines masked",
                    )
                })
            } else {
                v.plain()
            }]
        }
        _ => vec![
            b(ctx, call, format!("{name}(0x80, 0x5a), Doc v2 convention"))
                .reg(Edx, 0x80)
                .reg(Eax, 0x5A)
                .plain(),
        ],
    }
}

fn set_iopl(ctx: &Ctx) -> Vec<Spec> {
    [
        (0x3000u32, VEC_EFLAGS),
        (0x1000, VEC_EFLAGS),
        (0, VEC_EFLAGS | IOPL),
    ]
    .into_iter()
    .map(|(iopl, eflags)| {
        b(
            ctx,
            Call::SetIOPLMask,
            format!("SetIOPLMask({iopl:#x}) from IOPL {}", eflags >> 12 & 3),
        )
        .reg(Eax, iopl)
        .eflags(eflags)
        .may_change(IOPL)
        .check(move |s, f| f.expect("EFLAGS.IOPL", iopl >> 12, s.r.regs.eflags >> 12 & 3, ""))
    })
    .collect()
}

fn ap_state(ctx: &Ctx) -> Vec<Spec> {
    // Linux's values (vmi-abi.md §6), 92 bytes.
    let mut words = [0u32; 23];
    let put = |w: &mut [u32; 23], off: usize, v: u32| {
        if let Some(x) = w.get_mut(off / 4) {
            *x = v;
        }
    };
    put(&mut words, 0, 0x8005_0023);
    put(&mut words, 8, l::PAGE_DIR);
    put(&mut words, 12, 0x10);
    put(&mut words, 24, 0xC010_0000);
    put(&mut words, 48, ctx.stack_top - 0x1000);
    put(&mut words, 64, 0x0068_0060);
    put(&mut words, 68, 0x007B_007B);
    put(&mut words, 72, 0x00D8);
    put(&mut words, 76, 0x00FF_0000);
    put(&mut words, 80, ctx.va(l::GDT));
    put(&mut words, 84, ctx.va(l::IDT_KERNEL));
    put(&mut words, 88, 0x7FF);
    let mut pre: Vec<Op> = words
        .iter()
        .enumerate()
        .map(|(k, w)| Op::Store {
            addr: test::AP_STATE + 4 * k as u32,
            value: Val::Imm(*w),
        })
        .collect();
    pre.push(Op::Hash {
        addr: test::AP_STATE,
        dwords: 23,
        slot: 0,
    });
    vec![
        b(
            ctx,
            Call::SetInitialAPState,
            "SetInitialAPState(state, apic id 1)",
        )
        .reg(Eax, ctx.va(test::AP_STATE))
        .reg(Edx, 1)
        .pre(pre)
        .post([Op::Hash {
            addr: test::AP_STATE,
            dwords: 23,
            slot: 1,
        }])
        .check(|s, f| {
            f.ensure(s.r.x(0) == s.r.x(1), || {
                "the AP-state structure (the caller's) changed".into()
            })
        }),
    ]
}

fn lazy(ctx: &Ctx) -> Vec<Spec> {
    [(1u32, "MMU"), (2, "CPU"), (0, "NONE")]
        .into_iter()
        .map(|(mode, what)| {
            b(
                ctx,
                Call::SetLazyMode,
                format!("SetLazyMode({mode}, {what})"),
            )
            .reg(Eax, mode)
            .pre([Op::Hash {
                addr: test::PT_WINDOW,
                dwords: test::WIN_PAGES,
                slot: 0,
            }])
            .post([Op::Hash {
                addr: test::PT_WINDOW,
                dwords: test::WIN_PAGES,
                slot: 1,
            }])
            .check(|s, f| f.ensure(s.r.x(0) == s.r.x(1), || "page-table entries changed".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_descriptor_words() {
        assert_eq!(
            pseudo(0xFF, 0xC010_2000, 0xA5A5),
            [0x2000_00FF, 0xA5A5_C010]
        );
        let [a, b] = store64(0x100, 0x1122_3344_5566_7788);
        assert_eq!(
            (a, b),
            (
                Op::Store {
                    addr: 0x100,
                    value: Val::Imm(0x5566_7788)
                },
                Op::Store {
                    addr: 0x104,
                    value: Val::Imm(0x1122_3344)
                }
            )
        );
    }
}
