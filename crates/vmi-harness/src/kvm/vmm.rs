//! The VM: `/dev/kvm`, guest memory and its slots, one vCPU on its own thread, the deadline.

use super::bios;
use super::devices::Platform;
use super::kick;
use super::layout::{self, MultibootLayout, RomPlacement};
use super::post;
use super::vcpu::{self, Collected};
use super::{EndReason, KvmConfig, KvmRun};
use crate::error::HarnessError;
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::signal::Killable;

/// How often a vCPU with an in-kernel irqchip is kicked out of `KVM_RUN` to see whether it
/// sits in a `hlt` nothing can wake (`hlt` does not exit to user space then).
const HALT_POLL: Duration = Duration::from_millis(10);
/// How often a timed-out vCPU thread is kicked until it answers.
const KICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long a kicked vCPU thread may take to stop before the run is given up (the thread is
/// then left behind; it has never happened — the kick makes `KVM_RUN` return at once).
const KICK_GRACE: Duration = Duration::from_secs(5);
/// Where KVM may put the three pages of its real-mode TSS (VMX without unrestricted guest),
/// far from guest RAM and the ROM (Firecracker's choice).
const KVM_TSS_ADDRESS: usize = 0xFFFB_D000;

fn io(e: &kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

/// Maps a failed ioctl to [`HarnessError::Kvm`] naming it.
pub(super) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HarnessError {
    move |e| HarnessError::Kvm {
        what,
        source: io(&e),
    }
}

/// Opens `/dev/kvm`, saying plainly why it cannot be used.
fn open() -> Result<Kvm, String> {
    let path = std::path::Path::new("/dev/kvm");
    if !path.exists() {
        return Err(
            "no /dev/kvm (the kernel has no KVM, or it is not exposed to this container)".into(),
        );
    }
    let kvm = Kvm::new().map_err(|e| match io(&e).kind() {
        ErrorKind::PermissionDenied => {
            "/dev/kvm: permission denied (run as a member of the kvm group)".to_string()
        }
        _ => format!("opening /dev/kvm: {}", io(&e)),
    })?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(format!("/dev/kvm speaks KVM API version {version}, not 12"));
    }
    Ok(kvm)
}

/// See [`super::available`].
pub fn available() -> Result<(), String> {
    let kvm = open()?;
    kvm.create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {}", io(&e)))?;
    if !kvm.check_extension(Cap::ReadonlyMem) {
        return Err("this KVM has no read-only memory slots (KVM_CAP_READONLY_MEM)".into());
    }
    Ok(())
}

/// See [`super::irqchip_supported`].
pub fn irqchip_supported() -> bool {
    open().is_ok_and(|kvm| kvm.check_extension(Cap::Irqchip))
}

/// One VM with one vCPU. Fields drop in order: the vCPU (and its `kvm_run` mapping), then the
/// VM, and only then the memory the VM's slots point into.
struct Vm {
    vcpu: VcpuFd,
    vm: VmFd,
    memory: GuestMemoryMmap,
    /// The ROM's slot as registered.
    rom_slot: Option<kvm_userspace_memory_region>,
    /// The VM has the in-kernel irqchip (PICs, IOAPIC, the vCPU's local APIC).
    irqchip: bool,
}

/// Writes `data` at guest-physical `at`.
pub(super) fn write_mem(
    memory: &GuestMemoryMmap,
    what: &'static str,
    data: &[u8],
    at: u64,
) -> Result<(), HarnessError> {
    memory
        .write_slice(data, GuestAddress(at))
        .map_err(|e| HarnessError::GuestMemory {
            what,
            reason: format!("{} bytes at {at:#x}: {e}", data.len()),
        })
}

impl Vm {
    /// Creates the VM, maps its memory with the ROM loaded (its slot read-only, or writable
    /// when `rom_writable`: a BIOS step runs the init first) and creates the vCPU.
    fn new(
        cfg: &KvmConfig,
        rom: Option<RomPlacement>,
        ram: u64,
        rom_writable: bool,
    ) -> Result<Vm, HarnessError> {
        let kvm = open().map_err(|reason| HarnessError::KvmUnavailable { reason })?;
        if rom.is_some() && !kvm.check_extension(Cap::ReadonlyMem) {
            return Err(HarnessError::KvmUnavailable {
                reason: "this KVM has no read-only memory slots (KVM_CAP_READONLY_MEM)".into(),
            });
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        // Only VMX without unrestricted guest needs it; a KVM that refuses it (kvm-pvm) runs
        // protected-mode guests without it.
        let _ = vm.set_tss_address(KVM_TSS_ADDRESS);

        let mut ranges: Vec<(u64, u64, bool)> = layout::ram_ranges(ram)
            .into_iter()
            .map(|(s, l)| (s, l, false))
            .collect();
        if let Some(r) = rom {
            let (start, len) = r.slot();
            ranges.push((u64::from(start), u64::from(len), true));
        }
        ranges.sort_by_key(|r| r.0);
        let regions: Vec<(GuestAddress, usize)> = ranges
            .iter()
            .map(|&(s, l, _)| (GuestAddress(s), l as usize))
            .collect();
        let memory =
            GuestMemoryMmap::from_ranges(&regions).map_err(|e| HarnessError::GuestMemory {
                what: "allocating guest memory",
                reason: e.to_string(),
            })?;
        // Bytes of the ROM slot around the image read like an empty ROM socket.
        if let Some(r) = rom {
            let (start, len) = r.slot();
            write_mem(
                &memory,
                "filling the ROM slot",
                &vec![0xFF; len as usize],
                u64::from(start),
            )?;
            write_mem(
                &memory,
                "loading the ROM",
                cfg.rom.as_deref().unwrap_or(&[]),
                u64::from(r.base),
            )?;
        }

        let mut rom_slot = None;
        for (slot, region) in memory.iter().enumerate() {
            let start = region.start_addr().0;
            let is_rom = ranges.iter().any(|&(s, _, ro)| ro && s == start);
            let host = memory.get_host_address(region.start_addr()).map_err(|e| {
                HarnessError::GuestMemory {
                    what: "finding the host mapping",
                    reason: format!("{start:#x}: {e}"),
                }
            })?;
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if is_rom && !rom_writable {
                    KVM_MEM_READONLY
                } else {
                    0
                },
                guest_phys_addr: start,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `userspace_addr..+memory_size` is exactly one region of `memory`, an
            // anonymous mapping owned by the returned `Vm`, which drops it only after the VM
            // and vCPU file descriptors are closed (field order); no other slot overlaps it
            // (the ranges are disjoint by construction).
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
            if is_rom {
                rom_slot = Some(region);
            }
        }

        // Before the vCPU: KVM gives a vCPU a local APIC only if the VM has the irqchip. Vcpu
        // 0 resets as the BSP with IA32_APIC_BASE = 0xFEE00000 | enabled | BSP.
        let irqchip = cfg.irqchip && kvm.check_extension(Cap::Irqchip);
        if irqchip {
            vm.create_irq_chip()
                .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        }
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        Ok(Vm {
            vcpu,
            vm,
            memory,
            rom_slot,
            irqchip,
        })
    }
}

/// Makes the ROM's slot read-only, as a BIOS write-protects shadow RAM after POST. KVM does
/// not change the read-only flag of a live slot: the slot is deleted and created again over
/// the same memory (which keeps what the init wrote).
fn protect_rom(vm: &VmFd, slot: Option<kvm_userspace_memory_region>) -> Result<(), HarnessError> {
    let Some(slot) = slot else { return Ok(()) };
    if slot.flags & KVM_MEM_READONLY != 0 {
        return Ok(());
    }
    for region in [
        kvm_userspace_memory_region {
            memory_size: 0,
            ..slot
        },
        kvm_userspace_memory_region {
            flags: KVM_MEM_READONLY,
            ..slot
        },
    ] {
        // SAFETY: the first call deletes the slot; the second registers the same host range
        // as before (one region of the VM's guest memory, alive as long as the VM, no other
        // slot overlapping it), now read-only.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION (ROM read-only)"))?;
    }
    Ok(())
}

/// Loads the multiboot image and its information (`lower_kib` KiB of conventional memory, as
/// the BDA reports it) and puts the vCPU at the multiboot entry.
fn boot(
    vcpu: &VcpuFd,
    memory: &GuestMemoryMmap,
    cfg: &KvmConfig,
    mb: &MultibootLayout,
    ram: u64,
    lower_kib: u32,
) -> Result<(), HarnessError> {
    let taken = lower_kib * 1024;
    if taken < layout::LOW_RAM_END && mb.load_addr < layout::LOW_RAM_END && mb.bss_end > taken {
        return Err(HarnessError::Multiboot {
            reason: format!(
                "[{:#x}, {:#x}) overlaps [{taken:#x}, {:#x}), the conventional memory the \
                 ROM's 16-bit init took (BDA base memory {lower_kib} KiB)",
                mb.load_addr,
                mb.bss_end,
                layout::LOW_RAM_END
            ),
        });
    }
    write_mem(
        memory,
        "loading the multiboot image",
        mb.payload(&cfg.kernel),
        u64::from(mb.load_addr),
    )?;
    // Fresh anonymous memory is already zero; the explicit bss clear documents the contract.
    write_mem(
        memory,
        "zeroing the bss",
        &vec![0; (mb.bss_end - mb.load_end) as usize],
        u64::from(mb.load_end),
    )?;
    write_mem(
        memory,
        "writing the multiboot information",
        &layout::multiboot_info_with(ram, lower_kib),
        u64::from(layout::MBI_ADDR),
    )?;
    let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&vcpu::boot_sregs(sregs))
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&vcpu::boot_regs(
        mb.entry,
        layout::MBI_ADDR,
        layout::BOOT_STACK_TOP,
    ))
    .map_err(kvm_err("KVM_SET_REGS"))?;
    Ok(())
}

/// A u16 of guest memory (0 when it cannot be read).
pub(super) fn read_u16(memory: &GuestMemoryMmap, at: u64) -> u16 {
    let mut b = [0u8; 2];
    let _ = memory.read_slice(&mut b, GuestAddress(at));
    u16::from_le_bytes(b)
}

/// What the vCPU thread hands back.
type ThreadResult = (Result<EndReason, HarnessError>, vcpu::Collected);

/// Wall-clock time now, since 1970 (zero if the clock is before it).
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The vCPU thread: builds the VM, runs the BIOS step when asked, boots the guest, runs it,
/// tears it down.
fn vcpu_thread(
    cfg: &KvmConfig,
    mb: &MultibootLayout,
    rom: Option<RomPlacement>,
    ram: u64,
    stop: &AtomicBool,
) -> ThreadResult {
    let mut c = Collected::default();
    let bios_step = cfg.run_init16 && rom.is_some();
    let mut vm = match Vm::new(cfg, rom, ram, bios_step) {
        Ok(vm) => vm,
        Err(e) => return (Err(e), c),
    };
    let run: *mut kvm_bindings::kvm_run = vm.vcpu.get_kvm_run();
    // SAFETY: `run` points into the vCPU's `kvm_run` mapping, which lives as long as
    // `vm.vcpu`; the registration is dropped below, on this thread, before `vm`.
    let registration = unsafe { kick::Registration::new(run) };
    c.pm_timer_origin = unix_now();
    c.irqchip = vm.irqchip;
    let mut devices = Platform::new(c.pm_timer_origin);
    let line = super::irq0::Line::default();
    let mut env = vcpu::Env {
        memory: &vm.memory,
        rom,
        stop,
        devices: &mut devices,
        clock: Instant::now(),
        irqchip: vm.irqchip,
        irq0: vm.irqchip.then_some(&line),
    };
    let clock = env.clock;
    let (vcpu, vm_fd, rom_slot) = (&mut vm.vcpu, &vm.vm, vm.rom_slot);
    let end = std::thread::scope(|scope| {
        // Stops the IRQ0 thread however the run ends (the scope joins it before the VM is
        // closed: no KVM_IRQ_LINE on a closed descriptor).
        let _stop = StopLine(&line);
        if env.irqchip {
            std::thread::Builder::new()
                .name("vmi-kvm-irq0".into())
                .spawn_scoped(scope, || line.run(clock, || raise_irq0(vm_fd)))
                .map_err(|source| HarnessError::Kvm {
                    what: "spawning the IRQ0 thread",
                    source,
                })?;
        }
        let mut lower_kib = layout::LOW_RAM_END / 1024;
        if bios_step {
            let image = cfg.rom.as_deref().unwrap_or(&[]);
            let init16 = post::run(vcpu, &mut env, &mut c, image, cfg.timeout)?;
            c.init16 = Some(init16);
            protect_rom(vm_fd, rom_slot)?;
            lower_kib =
                u32::from(read_u16(env.memory, u64::from(bios::BDA_BASE_MEMORY))).min(lower_kib);
        }
        if bios_step && env.irqchip {
            // The init's return stub left the vCPU halted in KVM (mp_state HALTED): wake it.
            vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
            })
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        }
        boot(vcpu, env.memory, cfg, mb, ram, lower_kib)?;
        vcpu::run_loop(vcpu, &mut env, &mut c)
    });
    c.irq0 = vm.irqchip.then(|| line.report());
    c.exit_log.close(c.debugcon_written);
    drop(registration);
    if cfg.keep_ram {
        c.ram = Some(kept_ram(&vm.memory, ram.min(super::KEPT_RAM_END)));
    }
    drop(vm);
    (end, c)
}

/// Ends [`super::irq0::Line::run`] when dropped.
struct StopLine<'a>(&'a super::irq0::Line);

impl Drop for StopLine<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// One rising edge on GSI 0: `KVM_IRQ_LINE` level 1, then 0 (KVM's default routing takes
/// GSI 0 to the master PIC's IRQ0 and IOAPIC pin 0).
fn raise_irq0(vm: &VmFd) -> Result<(), String> {
    for level in [true, false] {
        vm.set_irq_line(0, level).map_err(|e| {
            format!(
                "KVM_IRQ_LINE (GSI 0, level {}): {}",
                u8::from(level),
                io(&e)
            )
        })?;
    }
    Ok(())
}

/// Guest-physical `0..end` as the guest left it: every region's bytes where a region lies,
/// zero elsewhere.
fn kept_ram(memory: &GuestMemoryMmap, end: u64) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(end).unwrap_or(0)];
    for region in memory.iter() {
        let start = region.start_addr().0;
        let stop = start.saturating_add(region.len()).min(end);
        if start >= stop {
            continue;
        }
        if let Some(dst) = out.get_mut(start as usize..stop as usize) {
            let _ = memory.read_slice(dst, GuestAddress(start));
        }
    }
    out
}

/// See [`super::run`].
pub fn run(cfg: &KvmConfig) -> Result<KvmRun, HarnessError> {
    run_partial(cfg).map_err(|(e, _)| e)
}

/// [`run`], but a run that fails after the vCPU started also hands back what the guest left
/// ([`super::Partial`]).
pub fn run_partial(cfg: &KvmConfig) -> Result<KvmRun, (HarnessError, super::Partial)> {
    let start = Instant::now();
    let early = |e: HarnessError| (e, super::Partial::default());
    let ram = layout::ram_bytes(cfg.memory_mib).map_err(early)?;
    let mb = MultibootLayout::parse(&cfg.kernel, ram).map_err(early)?;
    let rom = match &cfg.rom {
        Some(image) => Some(RomPlacement::new(cfg.rom_base, image.len()).map_err(early)?),
        None => None,
    };
    kick::install().map_err(|reason| early(HarnessError::KvmUnavailable { reason }))?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<ThreadResult>();
    let thread_cfg = cfg.clone();
    let thread_stop = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("vmi-kvm-vcpu".into())
        .spawn(move || {
            let out = vcpu_thread(&thread_cfg, &mb, rom, ram, &thread_stop);
            let _ = tx.send(out);
        })
        .map_err(|source| {
            early(HarnessError::Kvm {
                what: "spawning the vCPU thread",
                source,
            })
        })?;

    // A timeout too large for an `Instant` means no deadline.
    let deadline = start.checked_add(cfg.timeout);
    let mut kicked_at = None;
    let (end, collected) = loop {
        let wait = match (kicked_at, deadline) {
            (Some(_), _) => KICK_INTERVAL,
            (None, Some(d)) => d.saturating_duration_since(Instant::now()),
            (None, None) => Duration::MAX,
        };
        // With an irqchip the thread is kicked every HALT_POLL to look for a dead halt.
        let wait = if cfg.irqchip {
            wait.min(HALT_POLL)
        } else {
            wait
        };
        match rx.recv_timeout(wait) {
            Ok(out) => {
                let _ = handle.join();
                break out;
            }
            Err(mpsc::RecvTimeoutError::Timeout)
                if kicked_at.is_none() && deadline.is_none_or(|d| Instant::now() < d) =>
            {
                // A halt poll, not the deadline: the thread is alive (it has not sent).
                let _ = handle.kill(kick::signal());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let first = *kicked_at.get_or_insert_with(Instant::now);
                if first.elapsed() > KICK_GRACE {
                    // Dropping the handle detaches the thread: better than hanging the caller.
                    return Err(early(HarnessError::KvmExit {
                        exit: "timeout".into(),
                        detail: format!(
                            "the vCPU thread did not leave KVM_RUN within {KICK_GRACE:?} of \
                             being kicked"
                        ),
                    }));
                }
                stop.store(true, Ordering::SeqCst);
                // The thread is alive (it has not sent) and not joined: its handle is valid.
                let _ = handle.kill(kick::signal());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let detail = match handle.join() {
                    Err(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into()),
                    Ok(()) => "ended without a result".into(),
                };
                return Err(early(HarnessError::KvmExit {
                    exit: "vCPU thread".into(),
                    detail,
                }));
            }
        }
    };
    let end = match end {
        Ok(end) => end,
        Err(e) => {
            let partial = super::Partial {
                debugcon: collected.debugcon,
                ram: collected.ram,
                exit_log: Box::new(collected.exit_log),
                init16: collected.init16.map(Box::new),
            };
            return Err((e, partial));
        }
    };
    Ok(KvmRun {
        debugcon: collected.debugcon,
        debugcon_truncated: collected.debugcon_truncated,
        end,
        timed_out: end == EndReason::TimedOut,
        mmio_writes: collected.mmio_writes,
        mmio_writes_total: collected.mmio_writes_total,
        rom,
        wall: start.elapsed(),
        exits: collected.exits,
        exit_log: collected.exit_log,
        init16: collected.init16,
        ram: collected.ram,
        pm_timer_origin: collected.pm_timer_origin,
        irqchip: collected.irqchip,
        irq0: collected.irq0,
    })
}

/// Value the paging check writes to the exit port once paging is on.
const PAGING_OK: u8 = 0x5A;

/// A guest that identity-maps 4 MiB with one PSE page, turns paging on and writes
/// [`PAGING_OK`] to the exit port.
fn paging_check_image() -> Result<Vec<u8>, HarnessError> {
    use iced_x86::code_asm::*;
    let load = crate::multiboot::LOAD_ADDR;
    let page_dir = load + 0x1000;
    let code_at = crate::multiboot::body_addr(load, 0);
    let mut a = CodeAssembler::new(32)?;
    a.mov(eax, page_dir)?;
    a.mov(cr3, eax)?;
    a.mov(eax, cr4)?;
    a.or(eax, 0x10)?; // PSE
    a.mov(cr4, eax)?;
    a.mov(eax, cr0)?;
    a.or(eax, 0x8000_0000u32 as i32)?; // PG
    a.mov(cr0, eax)?;
    a.mov(al, u32::from(PAGING_OK))?;
    a.out(u32::from(crate::qemu::EXIT_PORT), al)?;
    a.hlt()?;
    let code = a.assemble(u64::from(code_at))?;
    let mut body = code;
    body.resize((page_dir - code_at) as usize, 0);
    // PDE 0: present, writable, 4 MiB page at 0.
    body.extend_from_slice(&0x83u32.to_le_bytes());
    body.resize(body.len() + 4092, 0);
    Ok(crate::multiboot::image(load, &body, 0, 0))
}

/// See [`super::paging_supported`].
pub fn paging_supported() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let image = paging_check_image().map_err(|e| e.to_string())?;
            let run = run(&KvmConfig {
                kernel: image,
                memory_mib: 8,
                timeout: Duration::from_secs(10),
                ..KvmConfig::default()
            })
            .map_err(|e| format!("the paging check failed: {e}"))?;
            let pvm = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
                " (/dev/kvm is kvm-pvm: only flat 32-bit guests without paging run)"
            } else {
                ""
            };
            match run.end {
                EndReason::ExitPort(PAGING_OK) => Ok(()),
                EndReason::PagingUnsupported { .. } => Err(format!("{}{pvm}", run.end)),
                other => Err(format!(
                    "paging not supported by this KVM: a guest that sets CR0.PG ended with \
                     \"{other}\"{pvm}"
                )),
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    #[test]
    fn paging_check_guest_sets_pg_then_exits() {
        let img = paging_check_image().unwrap();
        let mb = MultibootLayout::parse(&img, 8 << 20).unwrap();
        assert_eq!(mb.entry, 0x10_0020);
        let code = mb.payload(&img).get(32..).unwrap();
        let codes: Vec<Code> =
            Decoder::with_ip(32, code, u64::from(mb.entry), DecoderOptions::NONE)
                .iter()
                .take(11)
                .map(|i| i.code())
                .collect();
        assert_eq!(
            codes,
            [
                Code::Mov_r32_imm32,
                Code::Mov_cr_r32,
                Code::Mov_r32_cr,
                Code::Or_EAX_imm32,
                Code::Mov_cr_r32,
                Code::Mov_r32_cr,
                Code::Or_EAX_imm32,
                Code::Mov_cr_r32,
                Code::Mov_r8_imm8,
                Code::Out_imm8_AL,
                Code::Hlt,
            ]
        );
        // PDE 0 of the directory at 0x101000: a present, writable 4 MiB page at 0.
        let pde = mb.payload(&img).get(0x1000..0x1004).unwrap();
        assert_eq!(pde, &0x83u32.to_le_bytes());
    }
}
