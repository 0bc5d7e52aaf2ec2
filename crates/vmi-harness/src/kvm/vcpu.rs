//! The vCPU: the register state a multiboot loader leaves (and the real-mode state a BIOS
//! calls an option ROM's init with), and the exit loop.

use super::devices::Platform;
use super::exits::{ExitCounts, ExitKind, ExitLog};
use super::{DEBUGCON_LIMIT, EndReason, MMIO_WRITE_LIMIT, MmioWrite, RomPlacement, bios};
use crate::error::HarnessError;
use crate::qemu::{DEBUGCON_PORT, EXIT_PORT};
use iced_x86::{Code, Decoder, DecoderOptions, Register};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Selector of the flat code segment in CS (no GDT backs it: only the hidden part counts).
pub const CODE_SELECTOR: u16 = 0x10;
/// Selector of the flat data segment in DS, ES, FS, GS, SS.
pub const DATA_SELECTOR: u16 = 0x18;
/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: always 1 on 486 and later.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// EAX at a multiboot entry.
pub const MULTIBOOT_EAX: u32 = 0x2BAD_B002;
/// EFLAGS at entry: only the reserved bit 1.
pub const BOOT_EFLAGS: u64 = 0x2;

/// A flat 4 GiB 32-bit segment: execute/read (type 0xB) for code, read/write (type 0x3) for
/// data; accessed, present, DPL 0, 32-bit, 4 KiB granularity.
pub fn flat_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// `sregs` (KVM's reset state: TR and LDTR are kept) changed to what a multiboot loader
/// leaves: protected mode without paging, flat segments, empty GDTR/IDTR.
pub fn boot_sregs(mut s: kvm_sregs) -> kvm_sregs {
    s.cs = flat_segment(CODE_SELECTOR, true);
    let data = flat_segment(DATA_SELECTOR, false);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (data, data, data, data, data);
    s.gdt.base = 0;
    s.gdt.limit = 0;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = CR0_PE | CR0_ET;
    (s.cr2, s.cr3, s.cr4, s.efer) = (0, 0, 0, 0);
    s
}

/// The general registers at a multiboot entry.
pub fn boot_regs(entry: u32, mbi: u32, stack_top: u32) -> kvm_regs {
    kvm_regs {
        rip: u64::from(entry),
        rax: u64::from(MULTIBOOT_EAX),
        rbx: u64::from(mbi),
        rsp: u64::from(stack_top),
        rflags: BOOT_EFLAGS,
        ..kvm_regs::default()
    }
}

/// A real-mode segment as KVM's reset state has them (limit 64 KiB, present, accessed):
/// execute/read code or read/write data.
pub fn real_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: u64::from(selector) << 4,
        limit: 0xFFFF,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// `sregs` changed to what a BIOS far-calls an option ROM's init with: real mode, CS = the
/// ROM's segment, DS = ES = SS = 0 (ES:DI points at the `$PnP` structure in segment 0).
pub fn init16_sregs(mut s: kvm_sregs, rom_segment: u16) -> kvm_sregs {
    s.cs = real_segment(rom_segment, true);
    let zero = real_segment(0, false);
    (s.ds, s.es, s.fs, s.gs, s.ss) = (zero, zero, zero, zero, zero);
    s.cr0 = (s.cr0 & !(CR0_PE | CR0_PG)) | CR0_ET;
    s.efer = 0;
    s
}

/// The general registers of the init call ([`bios`]: SeaBIOS's `callrom`).
pub fn init16_regs() -> kvm_regs {
    kvm_regs {
        rip: u64::from(bios::INIT_OFFSET),
        rax: 0,
        rbx: 0xFFFF,
        rdx: 0xFFFF,
        rdi: u64::from(bios::PNP_CHECK),
        rsp: u64::from(bios::INIT_STACK_TOP - 4),
        rflags: bios::INIT_EFLAGS,
        ..kvm_regs::default()
    }
}

/// What the exit loop collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// Debug-console bytes.
    pub debugcon: Vec<u8>,
    /// Bytes dropped past [`DEBUGCON_LIMIT`].
    pub debugcon_truncated: bool,
    /// Every debug-console byte written (kept or dropped).
    pub debugcon_written: u64,
    /// Recorded MMIO writes.
    pub mmio_writes: Vec<MmioWrite>,
    /// All MMIO writes.
    pub mmio_writes_total: u64,
    /// Returns from `KVM_RUN`.
    pub exits: u64,
    /// The exits after the ROM's 16-bit init, by kind, place and time.
    pub exit_log: ExitLog,
    /// The exits during the ROM's 16-bit init.
    pub init16_exits: ExitCounts,
    /// The loop runs the ROM's 16-bit init (its exits count in `init16_exits`).
    pub in_init16: bool,
    /// What the BIOS step did.
    pub init16: Option<super::Init16>,
    /// Guest memory at the end of the run ([`super::KvmConfig::keep_ram`]).
    pub ram: Option<Vec<u8>>,
    /// Unix time at the devices' time origin ([`super::KvmRun::pm_timer_origin`]).
    pub pm_timer_origin: std::time::Duration,
    /// The VM has the in-kernel irqchip ([`super::KvmRun::irqchip`]).
    pub irqchip: bool,
    /// What PIT counter 0's IRQ0 line did ([`super::KvmRun::irq0`]).
    pub irq0: Option<super::irq0::Irq0Report>,
}

/// What the exit loop works with besides the vCPU.
pub struct Env<'a> {
    /// Guest memory (read to tell why the vCPU shut down).
    pub memory: &'a GuestMemoryMmap,
    /// Where the ROM is mapped.
    pub rom: Option<RomPlacement>,
    /// Set when the run must stop.
    pub stop: &'a AtomicBool,
    /// The devices on ports 0x40–0x43, 0x61, 0x70, 0x71.
    pub devices: &'a mut Platform,
    /// The devices' time origin.
    pub clock: Instant,
    /// The VM has the in-kernel irqchip: `hlt` stays in KVM, and a kick that finds the vCPU
    /// halted for good ([`halted_for_good`]) ends the run as [`EndReason::Halted`].
    pub irqchip: bool,
    /// With the irqchip: PIT counter 0's OUT line, told of every change a guest write makes
    /// to counter 0 ([`super::irq0`]).
    pub irq0: Option<&'a super::irq0::Line>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("rom", &self.rom)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

/// What one exit asks of the loop.
enum Next {
    Continue,
    End(EndReason),
    Shutdown,
    Halted,
    Internal,
    Interrupted,
    Fail(HarnessError),
}

fn errno_is(e: &kvm_ioctls::Error, code: i32) -> bool {
    e.errno() == code
}

fn eip(vcpu: &VcpuFd) -> u32 {
    vcpu.get_regs().map(|r| r.rip as u32).unwrap_or(0)
}

/// Runs `vcpu` until the guest ends the run, `env.stop` is set (after a kick), or KVM fails;
/// what it sees goes into `c`.
pub fn run_loop(
    vcpu: &mut VcpuFd,
    env: &mut Env<'_>,
    c: &mut Collected,
) -> Result<EndReason, HarnessError> {
    // A halt poll that found the vCPU halted for good: the run ends if the next poll finds
    // it so again, after one more KVM_RUN (which injects what KVM_GET_LAPIC cannot show: a
    // one-shot APIC timer that expired, a PIC interrupt).
    let mut dead_halt_seen = false;
    loop {
        if env.stop.load(Ordering::SeqCst) {
            return Ok(EndReason::TimedOut);
        }
        let written = c.debugcon_written;
        let next = match vcpu.run() {
            Ok(exit) => {
                c.exits += 1;
                let kind = kind_of(&exit);
                let next = handle(exit, env, c);
                count(vcpu, env.rom, c, kind, written);
                next
            }
            Err(e) if errno_is(&e, libc::EINTR) => Next::Interrupted,
            Err(e) if errno_is(&e, libc::EAGAIN) => Next::Continue,
            Err(e) => Next::Fail(HarnessError::Kvm {
                what: "KVM_RUN",
                source: std::io::Error::from_raw_os_error(e.errno()),
            }),
        };
        if !matches!(next, Next::Interrupted) {
            dead_halt_seen = false;
        }
        match next {
            Next::Continue => {}
            Next::Interrupted => {
                // A kick: `immediate_exit` stays set until cleared; the top of the loop
                // decides whether the run is over. With an irqchip the kick may be a halt
                // poll.
                vcpu.set_kvm_immediate_exit(0);
                let pit_armed = env.irq0.is_some_and(|l| l.armed());
                let dead = env.irqchip
                    && !env.stop.load(Ordering::SeqCst)
                    && !pit_armed
                    && halted_for_good(vcpu);
                let seen_before = std::mem::replace(&mut dead_halt_seen, dead);
                if dead && seen_before {
                    // Counted as the one `Hlt` exit KVM gives without an irqchip.
                    c.exits += 1;
                    count(vcpu, env.rom, c, (ExitKind::Hlt, false), c.debugcon_written);
                    return Ok(EndReason::Halted { eip: eip(vcpu) });
                }
            }
            Next::End(r) => return Ok(r),
            Next::Halted => return Ok(EndReason::Halted { eip: eip(vcpu) }),
            Next::Shutdown => return Ok(shutdown_reason(vcpu, env.memory)),
            Next::Internal => {
                return Err(HarnessError::KvmExit {
                    exit: "InternalError".into(),
                    detail: format!(
                        "KVM could not continue the vCPU at EIP {:#010x}: {}",
                        eip(vcpu),
                        internal_error(vcpu)
                    ),
                });
            }
            Next::Fail(e) => return Err(e),
        }
    }
}

/// EFLAGS.IF.
const EFLAGS_IF: u64 = 1 << 9;
/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6E0;

/// With an in-kernel irqchip: whether the vCPU sits in a `hlt` that nothing can end — with
/// IF = 0, or with IF = 1, no interrupt requested in its local APIC's IRR and no APIC timer
/// counting down (the caller also checks that PIT counter 0 has no IRQ0 edge to come, the
/// only device line this VMM raises).
fn halted_for_good(vcpu: &VcpuFd) -> bool {
    let halted = vcpu
        .get_mp_state()
        .is_ok_and(|m| m.mp_state == kvm_bindings::KVM_MP_STATE_HALTED);
    let Ok(regs) = vcpu.get_regs() else {
        return false;
    };
    if !halted || regs.rflags & EFLAGS_IF == 0 {
        return halted;
    }
    let Ok(lapic) = vcpu.get_lapic() else {
        return false;
    };
    let regs = super::lapic::Registers::from_state(&lapic);
    // Unknown: taken as armed (the run then ends at its time limit, not early).
    let deadline = || read_msr(vcpu, MSR_TSC_DEADLINE).unwrap_or(1);
    !regs.irr_pending() && !regs.timer_armed(deadline)
}

/// One MSR of the vCPU (None: KVM would not read it).
pub fn read_msr(vcpu: &VcpuFd, index: u32) -> Option<u64> {
    let mut msrs = kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
        index,
        ..Default::default()
    }])
    .ok()?;
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice().first().map(|e| e.data),
        _ => None,
    }
}

/// What kind of exit `exit` is, for counting, and whether it is the record channel's own (a
/// debug-console write or the exit port).
fn kind_of(exit: &VcpuExit<'_>) -> (ExitKind, bool) {
    match exit {
        VcpuExit::IoOut(port, _) => (
            ExitKind::Out(*port),
            *port == DEBUGCON_PORT || *port == EXIT_PORT,
        ),
        VcpuExit::IoIn(port, _) => (ExitKind::In(*port), false),
        VcpuExit::MmioRead(..) => (ExitKind::MmioRead, false),
        VcpuExit::MmioWrite(..) => (ExitKind::MmioWrite, false),
        VcpuExit::Hlt => (ExitKind::Hlt, false),
        _ => (ExitKind::Other, false),
    }
}

/// Counts one exit: during the init in `c.init16_exits`, otherwise in `c.exit_log` (the
/// record channel's own exits without a place; the others with whether the instruction lay
/// in the ROM's slot). `written`: debug-console bytes before this exit.
fn count(
    vcpu: &VcpuFd,
    rom: Option<RomPlacement>,
    c: &mut Collected,
    (kind, channel): (ExitKind, bool),
    written: u64,
) {
    if c.in_init16 {
        c.init16_exits.add(kind);
    } else if channel {
        c.exit_log
            .channel(kind, written, kind == ExitKind::Out(DEBUGCON_PORT));
    } else {
        c.exit_log.exit(kind, in_rom(vcpu, rom));
    }
}

/// Whether the instruction the vCPU exited on lies inside the ROM's slot (its linear address
/// translated when paging is on).
fn in_rom(vcpu: &VcpuFd, rom: Option<RomPlacement>) -> bool {
    let Some(rom) = rom else { return false };
    let (Ok(regs), Ok(sregs)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return false;
    };
    let linear = sregs.cs.base.wrapping_add(regs.rip) & 0xFFFF_FFFF;
    let phys = if sregs.cr0 & CR0_PG == 0 {
        linear
    } else {
        match vcpu.translate_gva(linear) {
            Ok(t) if t.valid != 0 => t.physical_address,
            _ => return false,
        }
    };
    let (start, len) = rom.slot();
    (u64::from(start)..u64::from(start) + u64::from(len)).contains(&phys)
}

/// A shutdown is [`EndReason::PagingUnsupported`] when the vCPU stopped *on* a `mov cr0, r32`
/// that sets PG, with paging still off (kvm-pvm refuses the instruction); otherwise a plain
/// [`EndReason::Shutdown`] (triple fault).
fn shutdown_reason(vcpu: &VcpuFd, memory: &GuestMemoryMmap) -> EndReason {
    let (regs, sregs) = match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => (r, s),
        (r, s) => {
            return EndReason::Shutdown {
                eip: r.map(|r| r.rip as u32).unwrap_or(0),
                cr0: s.map(|s| s.cr0 as u32).unwrap_or(0),
            };
        }
    };
    let (eip, cr0) = (regs.rip as u32, sregs.cr0 as u32);
    if sregs.cr0 & CR0_PG == 0 {
        // Paging off: the linear address of the instruction is its physical address.
        let at = sregs.cs.base.wrapping_add(regs.rip) & 0xFFFF_FFFF;
        let mut bytes = [0u8; 15];
        let n = memory.read(&mut bytes, GuestAddress(at)).unwrap_or(0);
        let ins =
            Decoder::with_ip(32, bytes.get(..n).unwrap_or(&[]), at, DecoderOptions::NONE).decode();
        if ins.code() == Code::Mov_cr_r32 && ins.op0_register() == Register::CR0 {
            let value = gpr32(&regs, ins.op1_register());
            if u64::from(value) & CR0_PG != 0 {
                return EndReason::PagingUnsupported { eip, cr0, value };
            }
        }
    }
    EndReason::Shutdown { eip, cr0 }
}

/// The value of a 32-bit general register in `regs`.
fn gpr32(regs: &kvm_regs, r: Register) -> u32 {
    (match r {
        Register::EAX => regs.rax,
        Register::ECX => regs.rcx,
        Register::EDX => regs.rdx,
        Register::EBX => regs.rbx,
        Register::ESP => regs.rsp,
        Register::EBP => regs.rbp,
        Register::ESI => regs.rsi,
        Register::EDI => regs.rdi,
        _ => 0,
    }) as u32
}

/// KVM's suberror and data words of an `InternalError` exit.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: called right after `KVM_RUN` returned `KVM_EXIT_INTERNAL_ERROR`, so `internal`
    // is the union member the kernel filled in; every bit pattern is a valid `u32`/`u64`.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal
        .data
        .iter()
        .take(n)
        .map(|d| format!("{d:#x}"))
        .collect();
    let what = match internal.suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => " (instruction emulation failed)",
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => " (exception while delivering one)",
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => " (event delivery)",
        _ => "",
    };
    format!(
        "suberror {}{what}, data [{}]",
        internal.suberror,
        data.join(", ")
    )
}

fn handle(exit: VcpuExit<'_>, env: &mut Env<'_>, c: &mut Collected) -> Next {
    let rom = env.rom;
    match exit {
        VcpuExit::IoOut(port, data) if port == EXIT_PORT => {
            Next::End(EndReason::ExitPort(data.first().copied().unwrap_or(0)))
        }
        VcpuExit::IoOut(port, data) if port == DEBUGCON_PORT => {
            c.debugcon_written += data.len() as u64;
            let room = DEBUGCON_LIMIT.saturating_sub(c.debugcon.len());
            if data.len() > room {
                c.debugcon_truncated = true;
            }
            c.debugcon
                .extend_from_slice(data.get(..room.min(data.len())).unwrap_or(&[]));
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            // A wider access reaches the consecutive ports; ports no device claims ignore it
            // (the guest programs the 8259A PICs).
            let now = env.clock.elapsed();
            for (port, b) in (port..).zip(data.iter()) {
                env.devices.write(port, *b, now);
                if let (Some(line), 0x40 | 0x43) = (env.irq0, port) {
                    line.program(env.devices.channel0());
                }
            }
            Next::Continue
        }
        VcpuExit::IoIn(port, data) => {
            let now = env.clock.elapsed();
            for (port, b) in (port..).zip(data.iter_mut()) {
                *b = env.devices.read(port, now).unwrap_or(0xFF);
            }
            Next::Continue
        }
        VcpuExit::MmioRead(_, data) => {
            data.fill(0xFF);
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            c.mmio_writes_total += 1;
            if c.mmio_writes.len() < MMIO_WRITE_LIMIT {
                let value = data
                    .iter()
                    .take(8)
                    .rev()
                    .fold(0u64, |v, b| (v << 8) | u64::from(*b));
                c.mmio_writes.push(MmioWrite {
                    addr,
                    size: data.len().min(8) as u8,
                    value,
                    rom_offset: rom.and_then(|r| r.offset_of(addr)),
                });
            }
            Next::Continue
        }
        VcpuExit::Hlt => Next::Halted,
        VcpuExit::Shutdown => Next::Shutdown,
        VcpuExit::FailEntry(reason, cpu) => Next::Fail(HarnessError::KvmExit {
            exit: "FailEntry".into(),
            detail: format!(
                "KVM could not enter the vCPU: hardware entry failure reason {reason:#x} on host CPU {cpu}"
            ),
        }),
        VcpuExit::InternalError => Next::Internal,
        other => Next::Fail(HarnessError::KvmExit {
            exit: format!("{other:?}"),
            detail: "this VMM does not model it".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segment as the 8-byte GDT descriptor a loader would have loaded it from.
    fn descriptor(s: &kvm_segment) -> u64 {
        let limit = if s.g == 1 { s.limit >> 12 } else { s.limit } as u64;
        let base = s.base;
        let access = u64::from(s.type_)
            | u64::from(s.s) << 4
            | u64::from(s.dpl) << 5
            | u64::from(s.present) << 7;
        let flags =
            u64::from(s.avl) | u64::from(s.l) << 1 | u64::from(s.db) << 2 | u64::from(s.g) << 3;
        (limit & 0xFFFF)
            | (base & 0xFF_FFFF) << 16
            | access << 40
            | (limit >> 16 & 0xF) << 48
            | flags << 52
            | (base >> 24 & 0xFF) << 56
    }

    #[test]
    fn flat_segments_are_the_classic_descriptors() {
        assert_eq!(
            descriptor(&flat_segment(CODE_SELECTOR, true)),
            0x00CF_9B00_0000_FFFF
        );
        assert_eq!(
            descriptor(&flat_segment(DATA_SELECTOR, false)),
            0x00CF_9300_0000_FFFF
        );
    }

    #[test]
    fn boot_state() {
        let s = boot_sregs(kvm_sregs {
            cr0: 0x6000_0010,
            cr4: 0x20,
            efer: 0x500,
            ..kvm_sregs::default()
        });
        assert_eq!(s.cr0, 0x11);
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!(
            (s.cs.selector, s.ss.selector, s.gs.selector),
            (0x10, 0x18, 0x18)
        );
        assert_eq!((s.gdt.limit, s.idt.limit), (0, 0));
        let r = boot_regs(0x11_0000, 0x8000, 0x8000);
        assert_eq!(
            (r.rip, r.rax, r.rbx, r.rsp, r.rflags),
            (0x11_0000, 0x2BAD_B002, 0x8000, 0x8000, 2)
        );
        assert_eq!((r.rcx, r.rdx, r.rsi, r.rdi, r.rbp), (0, 0, 0, 0, 0));
    }
}
