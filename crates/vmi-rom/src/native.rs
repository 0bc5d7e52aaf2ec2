//! The `native` backend: every call does what the native instruction does.
//!
//! This is the ROM for running a VMI kernel on hardware or on a hypervisor that virtualizes the
//! privileged instructions itself (QEMU, KVM): paravirtualization without a hypervisor-specific
//! layer. It is the reference the conformance suite checks and the inner backend the trace
//! backend wraps.
//!
//! What it answers, and why:
//! - **CALL_REL** with the native instruction for every call whose native equivalent is known:
//!   CPUID, MSRs, descriptor tables, control and debug registers, TSC/PMC, the interrupt flag,
//!   IRET (checked first, so that a fault of the return is delivered at the call site: see
//!   [`crate::iret`]), SYSEXIT, Halt, Reboot, Shutdown, SetPxE(Long), InvalPage, FlushTLB, SetIOPLMask,
//!   WBINVD, CLTS, IODelay.
//! - **NOP** where the operation is a notification a native machine does not need: the kernel has
//!   already done the work (UpdateKernelStack: Linux stored esp0 in the TSS; UpdatePxE(Long):
//!   the entry is in memory), or there is nothing to tell (AllocatePage, ReleasePage,
//!   SetLinearMapping, SetLazyMode; SetInitialAPState: the APs start through the kernel's own
//!   INIT/STARTUP sequence).
//! - **CALL_REL through the private RAM** ([`crate::ram`]) for time and the local APIC
//!   ([`crate::time`]): APICRead/APICWrite on the calling CPU's APIC through the kernel's own
//!   mapping (found by walking the page tables), the TSC as the VMI counters with its rate
//!   measured at Init, the CMOS RTC carried forward by the TSC, alarms on the CPU's LVTT or on
//!   IRQ0. Without private RAM (no BIOS ran the 16-bit init) GetRelocationInfo answers NONE for
//!   them and Linux keeps its own APIC accessors and clocks.
//! - **NONE** where the convention is unknown: MachineToPhysical/PhysicalToMachine/
//!   SetCallbacks and the port-I/O calls 49–60 (unconfirmed; Linux never asks).
//!
//! Register discipline: class-X calls (CPUID, the interrupt-flag quartet) touch nothing but
//! their outputs and the arithmetic flags; class-C calls touch only EAX, ECX, EDX (SetPxELong
//! and the time routines save what else they use). No FPU/MMX/SSE, DF never set, plain `ret`.

use crate::backend::{Answer, Backend};
use crate::emit::Emit;
use crate::error::GenError;
use crate::time;
use iced_x86::code_asm::*;
use vmi_abi::Call;

/// EFLAGS.IF.
const EFLAGS_IF: u32 = 0x200;
/// EFLAGS.IOPL.
const EFLAGS_IOPL: u32 = 0x3000;
/// CR4.PGE.
const CR4_PGE: u32 = 0x80;

/// The native backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

type R = Result<Answer, GenError>;

/// `op; ret` for a single native instruction.
fn one(e: &mut Emit, op: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> R {
    op(&mut e.a)?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// Dispatches on the debug-register number in EAX (0–7); out-of-range numbers do nothing.
fn debug_reg(e: &mut Emit, write: bool) -> R {
    let regs = [dr0, dr1, dr2, dr3, dr4, dr5, dr6, dr7];
    let mut labels: Vec<CodeLabel> = regs.iter().map(|_| e.a.create_label()).collect();
    for (n, l) in labels.iter().enumerate() {
        e.a.cmp(eax, n as i32)?;
        e.a.je(*l)?;
    }
    e.a.ret()?;
    for (r, l) in regs.iter().zip(labels.iter_mut()) {
        e.a.set_label(l)?;
        if write {
            e.a.mov(*r, edx)?;
        } else {
            e.a.mov(eax, *r)?;
        }
        e.a.ret()?;
    }
    Ok(Answer::Call)
}

/// WriteGDTEntry/WriteLDTEntry/WriteIDTEntry: `table[index] = ECX | [esp+4] << 32`.
fn write_descriptor(e: &mut Emit) -> R {
    e.a.mov(dword_ptr(eax + edx * 8), ecx)?;
    e.a.mov(ecx, dword_ptr(esp + 4))?;
    e.a.mov(dword_ptr(eax + edx * 8 + 4), ecx)?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// SetPxELong: a 64-bit store that never exposes a torn entry (`lock cmpxchg8b` loop).
fn set_pxe_long(e: &mut Emit) -> R {
    let mut retry = e.a.create_label();
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.mov(esi, ecx)?;
    e.a.mov(ebx, eax)?;
    e.a.mov(ecx, edx)?;
    e.a.mov(eax, dword_ptr(esi))?;
    e.a.mov(edx, dword_ptr(esi + 4))?;
    e.a.set_label(&mut retry)?;
    e.a.lock().cmpxchg8b(qword_ptr(esi))?;
    e.a.jne(retry)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// FlushTLB: reload CR3; with VMI_FLUSH_GLOBAL also toggle CR4.PGE (flushes global entries).
fn flush_tlb(e: &mut Emit) -> R {
    let mut cr3_only = e.a.create_label();
    e.a.test(eax, vmi_abi::consts::VMI_FLUSH_GLOBAL as i32)?;
    e.a.jz(cr3_only)?;
    e.a.mov(ecx, cr4)?;
    e.a.test(ecx, CR4_PGE as i32)?;
    e.a.jz(cr3_only)?;
    e.a.mov(edx, ecx)?;
    e.a.and(edx, !(CR4_PGE as i32))?;
    e.a.mov(cr4, edx)?;
    e.a.mov(cr4, ecx)?;
    e.a.ret()?;
    e.a.set_label(&mut cr3_only)?;
    e.a.mov(ecx, cr3)?;
    e.a.mov(cr3, ecx)?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// SetInterruptMask: IF := bit 9 of EAX, nothing else (only arithmetic flags change).
fn set_interrupt_mask(e: &mut Emit) -> R {
    let mut off = e.a.create_label();
    e.a.test(eax, EFLAGS_IF as i32)?;
    e.a.jz(off)?;
    e.a.sti()?;
    e.a.ret()?;
    e.a.set_label(&mut off)?;
    e.a.cli()?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// SetIOPLMask: EFLAGS.IOPL := bits 12–13 of EAX, keeping every other flag (IF included).
fn set_iopl(e: &mut Emit) -> R {
    e.a.pushfd()?;
    e.a.pop(ecx)?;
    e.a.and(ecx, !(EFLAGS_IOPL as i32))?;
    e.a.and(eax, EFLAGS_IOPL as i32)?;
    e.a.or(ecx, eax)?;
    e.a.push(ecx)?;
    e.a.popfd()?;
    e.a.ret()?;
    Ok(Answer::Call)
}

/// Reboot: keyboard-controller reset, then the PCI reset port, then a triple fault.
fn reboot(e: &mut Emit) -> R {
    e.a.cli()?;
    e.a.mov(al, 0xFE)?;
    e.a.out(0x64, al)?;
    e.a.mov(dx, 0xCF9)?;
    e.a.mov(al, 0x06)?;
    e.a.out(dx, al)?;
    // Triple fault: an empty IDT, then an exception.
    e.a.push(0)?;
    e.a.push(0)?;
    e.a.lidt(ptr(esp + 2))?;
    e.a.int3()?;
    halt_forever(e)
}

/// `cli; hlt` in a loop: this CPU stops for good.
fn halt_forever(e: &mut Emit) -> R {
    let mut again = e.a.create_label();
    e.a.set_label(&mut again)?;
    e.a.cli()?;
    e.a.hlt()?;
    e.a.jmp(again)?;
    Ok(Answer::Call)
}

/// A routine from the shared time machinery: CALL_REL.
fn routine(e: &mut Emit, body: impl FnOnce(&mut Emit) -> Result<(), GenError>) -> R {
    body(e)?;
    Ok(Answer::Call)
}

impl Backend for Native {
    fn name(&self) -> String {
        "native".into()
    }

    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        time::clock::init32(e, time::clock::init_native)
    }

    fn ram(&self) -> Result<Vec<crate::ram::Region>, GenError> {
        Ok(time::regions())
    }

    fn needs_ram(&self, call: Call) -> bool {
        use Call::*;
        matches!(
            call,
            APICWrite
                | APICRead
                | GetCycleFrequency
                | GetCycleCounter
                | SetAlarm
                | CancelAlarm
                | GetWallclockTime
                | WallclockUpdated
        )
    }

    fn helper_names(&self) -> Vec<&'static str> {
        time::helper::ALL.to_vec()
    }

    fn emit_helper(&self, name: &str, e: &mut Emit) -> Result<(), GenError> {
        time::emit_helper(name, e)
    }

    fn emit(&self, call: Call, e: &mut Emit) -> R {
        use Call::*;
        match call {
            CPUID => one(e, |a| a.cpuid()),
            WRMSR => one(e, |a| a.wrmsr()),
            RDMSR => one(e, |a| a.rdmsr()),
            SetGDT => one(e, |a| a.lgdt(ptr(eax))),
            SetLDT => one(e, |a| a.lldt(ax)),
            SetIDT => one(e, |a| a.lidt(ptr(eax))),
            SetTR => one(e, |a| a.ltr(ax)),
            GetGDT => one(e, |a| a.sgdt(ptr(eax))),
            GetLDT => {
                e.a.xor(eax, eax)?;
                one(e, |a| a.sldt(ax))
            }
            GetIDT => one(e, |a| a.sidt(ptr(eax))),
            GetTR => {
                e.a.xor(eax, eax)?;
                one(e, |a| a.str(ax))
            }
            WriteGDTEntry | WriteLDTEntry | WriteIDTEntry => write_descriptor(e),
            SetCR0 => one(e, |a| a.mov(cr0, eax)),
            SetCR2 => one(e, |a| a.mov(cr2, eax)),
            SetCR3 => one(e, |a| a.mov(cr3, eax)),
            SetCR4 => one(e, |a| a.mov(cr4, eax)),
            GetCR0 => one(e, |a| a.mov(eax, cr0)),
            GetCR2 => one(e, |a| a.mov(eax, cr2)),
            GetCR3 => one(e, |a| a.mov(eax, cr3)),
            GetCR4 => one(e, |a| a.mov(eax, cr4)),
            WBINVD => one(e, |a| a.wbinvd()),
            SetDR => debug_reg(e, true),
            GetDR => debug_reg(e, false),
            RDPMC => one(e, |a| a.rdpmc()),
            RDTSC => one(e, |a| a.rdtsc()),
            CLTS => one(e, |a| a.clts()),
            EnableInterrupts => one(e, |a| a.sti()),
            DisableInterrupts => one(e, |a| a.cli()),
            GetInterruptMask => {
                e.a.pushfd()?;
                e.a.pop(eax)?;
                one(e, |a| a.and(eax, EFLAGS_IF as i32))
            }
            SetInterruptMask => set_interrupt_mask(e),
            IRET => {
                crate::iret::emit(e)?;
                Ok(Answer::Call)
            }
            SYSEXIT => {
                // STI's interrupt shadow covers SYSEXIT: enabling and leaving are atomic.
                e.a.sti()?;
                e.a.sysexit()?;
                Ok(Answer::Call)
            }
            Halt => {
                // STI's shadow covers HLT: no wake-up is lost between them.
                e.a.sti()?;
                one(e, |a| a.hlt())
            }
            Reboot => reboot(e),
            Shutdown => halt_forever(e),
            SetPxE => one(e, |a| a.mov(dword_ptr(edx), eax)),
            SetPxELong => set_pxe_long(e),
            InvalPage => one(e, |a| a.invlpg(ptr(eax))),
            FlushTLB => flush_tlb(e),
            SetIOPLMask => set_iopl(e),
            IODelay => one(e, |a| a.out(0x80, al)),
            UpdateKernelStack | UpdatePxE | UpdatePxELong | AllocatePage | ReleasePage
            | SetLinearMapping | SetInitialAPState | SetLazyMode => Ok(Answer::Nop),
            APICWrite => routine(e, |e| {
                time::apic::emit_write(e, time::helper::CPU_SLOT, false)
            }),
            APICRead => routine(e, time::apic::emit_read),
            GetCycleFrequency => routine(e, time::clock::emit_frequency),
            GetCycleCounter => routine(e, time::clock::emit_counter),
            SetAlarm => routine(e, |e| time::alarm::emit_set(e, time::helper::CPU_SLOT)),
            CancelAlarm => routine(e, |e| time::alarm::emit_cancel(e, time::helper::CPU_SLOT)),
            GetWallclockTime => routine(e, time::clock::emit_wallclock),
            WallclockUpdated => routine(e, time::clock::emit_updated),
            MachineToPhysical | PhysicalToMachine | INL | INB | INW | INSL | INSB | INSW | OUTL
            | OUTB | OUTW | OUTSL | OUTSB | OUTSW | SetCallbacks => Ok(Answer::None),
        }
    }

    fn note(&self, call: Call) -> &'static str {
        use Call::*;
        match call {
            UpdateKernelStack => "Linux already stored esp0 in the TSS",
            UpdatePxE | UpdatePxELong => "the entry is already in memory",
            AllocatePage | ReleasePage => "page-table pages need no announcement natively",
            SetLinearMapping => "the kernel's own page tables are authoritative",
            SetInitialAPState => "APs start through the kernel's INIT/STARTUP sequence",
            SetLazyMode => "every update takes effect at once; nothing to batch",
            APICWrite | APICRead => {
                "the calling CPU's APIC through the kernel's mapping (found by a page-table walk)"
            }
            GetCycleFrequency => "the TSC rate, measured at Init against PIT channel 2",
            GetCycleCounter => "the TSC (REAL, AVAILABLE); STOLEN is 0",
            SetAlarm | CancelAlarm => {
                "per CPU and counter, on the CPU's LVTT (the kernel's vector) or IRQ0 (PIT)"
            }
            GetWallclockTime | WallclockUpdated => "the CMOS RTC, carried forward by the TSC",
            MachineToPhysical | PhysicalToMachine | SetCallbacks => {
                "semantics unconfirmed; Linux never asks"
            }
            INL | INB | INW | INSL | INSB | INSW | OUTL | OUTB | OUTW | OUTSL | OUTSB | OUTSW => {
                "calling convention unconfirmed; Linux never asks"
            }
            IRET => {
                "iret after checking the frame like the CPU; a fault is delivered at the call site"
            }
            SYSEXIT => "sti; sysexit (atomic through STI's interrupt shadow)",
            Halt => "sti; hlt (atomic through STI's interrupt shadow)",
            SetPxELong => "lock cmpxchg8b loop: never a torn entry",
            FlushTLB => "reload CR3; toggle CR4.PGE for global entries",
            Reboot => "keyboard controller, then port 0xCF9, then a triple fault",
            Shutdown => "cli; hlt forever",
            _ => "the native instruction",
        }
    }
}
