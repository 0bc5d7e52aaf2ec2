//! Probe a ROM the way Linux does: boot the [test guest](crate::guest) against the ROM on an
//! [`Engine`] — QEMU with the ROM loaded by SeaBIOS, or the [KVM runner](crate::kvm) with the
//! ROM mapped read-only and no BIOS — and report what the guest saw.
//!
//! ```no_run
//! use vmi_harness::probe::{probe, ProbeOptions};
//!
//! let report = probe("vmi.rom".as_ref(), &ProbeOptions::default())?;
//! report.check()?; // an exception in Init or GetRelocationInfo is an error here
//! println!("ROM at {:#x?}, Init returned {:?}", report.chosen, report.init.map(|i| i.eax));
//! for r in &report.relocations {
//!     println!("call {:2}: type {} eip {:#010x}", r.call, r.reloc_type, r.eip);
//! }
//! # Ok::<(), vmi_harness::HarnessError>(())
//! ```
//!
//! On the KVM engine the ROM goes where [`ProbeOptions::rom_base`] says, and the guest runs
//! without paging unless the host's KVM can page ([`crate::kvm::paging_supported`]):
//!
//! ```no_run
//! use vmi_harness::Engine;
//! use vmi_harness::probe::{probe, ProbeOptions};
//!
//! let report = probe("vmi.rom".as_ref(), &ProbeOptions {
//!     engine: Engine::Kvm,
//!     paging: false,
//!     rom_base: Some(0xD_0000),
//!     ..ProbeOptions::default()
//! })?;
//! assert_eq!(report.chosen, Some(0xD_0000));
//! for w in report.rom_writes() {
//!     println!("the ROM tried to write its own image: {w}");
//! }
//! # Ok::<(), vmi_harness::HarnessError>(())
//! ```

use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::{self, GuestConfig, GuestImage, layout};
use crate::kvm::{self, EndReason, ExitLog, Init16, KvmConfig, MmioWrite};
use crate::protocol::{
    self, Candidate, EXIT_DONE, EndStatus, Exception, Outcome, Record, Regs, StepId, Stream,
};
use crate::qemu::{self, QemuConfig};
use optionrom::build::BLOCK;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vmi_abi::calls::{Reg, RelocType};

/// How to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Linux's `PAGE_OFFSET` (0xC0000000 for the 3G/1G split; 0x80000000, 0x40000000 exist).
    pub page_offset: u32,
    /// Run with paging (off: flat 32-bit, linear = physical — what a non-paging VMM can run).
    pub paging: bool,
    /// Call numbers to ask GetRelocationInfo about, in order.
    pub calls: Vec<u32>,
    /// What runs the guest (default: QEMU with TCG).
    pub engine: Engine,
    /// Where the KVM engine maps the ROM (None: [`kvm::DEFAULT_ROM_BASE`]). Under QEMU SeaBIOS
    /// chooses, so this must be None there.
    pub rom_base: Option<u32>,
    /// Stop the run after this long.
    pub timeout: Duration,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Further QEMU arguments (e.g. `-vga std`); must be empty on the KVM engine.
    pub extra_args: Vec<OsString>,
    /// KVM engine: run the ROM's 16-bit init before the guest, as a BIOS does
    /// ([`KvmConfig::run_init16`], default on). Under QEMU SeaBIOS always does, so it must
    /// stay on there.
    pub run_init16: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            page_offset: 0xC000_0000,
            paging: true,
            calls: (0..=80).collect(),
            engine: Engine::default(),
            rom_base: None,
            timeout: Duration::from_secs(20),
            memory_mib: 64,
            extra_args: Vec::new(),
            run_init16: true,
        }
    }
}

/// What Init did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitResult {
    /// EAX (0 = success).
    pub eax: u32,
    /// Every register right after Init returned.
    pub regs: Regs,
    /// `CS & 3`: what Linux stores as `kernel_rpl`.
    pub kernel_rpl: u8,
    /// Callee-saved registers (EBX, ESI, EDI, EBP) whose canary did not survive.
    pub clobbered: Vec<Reg>,
    /// Whether ESP came back to the value it had before the call.
    pub esp_ok: bool,
}

/// One GetRelocationInfo answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelocAnswer {
    /// The call number (EAX on entry).
    pub call: u32,
    /// EAX: the implementation's linear address.
    pub eip: u32,
    /// EDX as returned (DL = type, the rest reserved).
    pub edx: u32,
    /// DL.
    pub reloc_type: u8,
    /// DL as a relocation type, if it is one of the four.
    pub kind: Option<RelocType>,
    /// `eip − (linear base of the ROM)` when `eip` lies inside the ROM image.
    pub image_offset: Option<u32>,
    /// Non-output registers (EBX, ECX, ESI, EDI, EBP) whose canary changed.
    pub changed: Vec<Reg>,
    /// Whether ESP came back unchanged.
    pub esp_ok: bool,
    /// Every register after the call.
    pub regs: Regs,
}

/// What probing a ROM found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    /// `PAGE_OFFSET` the guest was built for.
    pub page_offset: u32,
    /// Whether paging was on.
    pub paging: bool,
    /// Linear minus physical address of low memory (`PAGE_OFFSET`, or 0 without paging).
    pub linear_offset: u32,
    /// Every 55AA candidate the probe examined, in scan order.
    pub candidates: Vec<Candidate>,
    /// Physical base of the accepted ROM.
    pub chosen: Option<u32>,
    /// The linear address the guest read and called it at (`PAGE_OFFSET + base` with paging).
    pub chosen_linear: Option<u32>,
    /// Its size in bytes as the guest read it (size byte × 512).
    pub rom_len: Option<u32>,
    /// Init's result, if it was called and returned.
    pub init: Option<InitResult>,
    /// GetRelocationInfo answers, in call order.
    pub relocations: Vec<RelocAnswer>,
    /// The exception or unexpected interrupt that ended the run.
    pub exception: Option<Exception>,
    /// How the guest finished (None after an exception).
    pub end: Option<EndStatus>,
    /// The value the guest wrote to `isa-debug-exit`.
    pub exit_value: Option<u8>,
    /// The engine that ran the guest.
    pub engine: Engine,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// SeaBIOS's log (it says where it put each option ROM); empty on the KVM engine.
    pub seabios_log: String,
    /// KVM engine: guest writes to the read-only ROM or to unmapped space, in order (a ROM
    /// keeping state inside its own image shows up here). Always empty under QEMU, where
    /// SeaBIOS's write protection drops such writes silently.
    pub mmio_writes: Vec<MmioWrite>,
    /// The decoded record stream.
    pub stream: Stream,
    /// KVM engine: what the runner's BIOS step did (None: [`ProbeOptions::run_init16`] off,
    /// or QEMU — where SeaBIOS ran the init, see [`ProbeReport::seabios_log`]).
    pub init16: Option<Init16>,
    /// KVM engine: the run's VM exits by kind, place and time (None under QEMU).
    pub exits: Option<ExitLog>,
}

impl ProbeReport {
    /// Linear address of the accepted ROM, as the guest used it.
    pub fn linear_base(&self) -> Option<u32> {
        self.chosen_linear
    }

    /// Offset of `linear` inside the accepted ROM image, if it lies inside.
    pub fn image_offset(&self, linear: u32) -> Option<u32> {
        let start = self.linear_base()?;
        let off = linear.checked_sub(start)?;
        (off < self.rom_len?).then_some(off)
    }

    /// The answer for call `n`.
    pub fn reloc(&self, n: u32) -> Option<&RelocAnswer> {
        self.relocations.iter().find(|r| r.call == n)
    }

    /// The recorded writes that hit the ROM image (KVM engine).
    pub fn rom_writes(&self) -> impl Iterator<Item = &MmioWrite> {
        self.mmio_writes.iter().filter(|w| w.rom_offset.is_some())
    }

    /// The candidate the probe accepted.
    pub fn accepted(&self) -> Option<&Candidate> {
        self.candidates
            .iter()
            .find(|c| c.outcome == Outcome::Accepted)
    }

    /// Ok if the guest finished without an exception; otherwise the exception as an error.
    pub fn check(&self) -> Result<(), HarnessError> {
        match &self.exception {
            None => Ok(()),
            Some(e) => Err(HarnessError::GuestException {
                step: e.step,
                vector: e.vector,
                mnemonic: e.mnemonic(),
                eip: e.eip,
                rom_offset: self.image_offset(e.eip),
                error_code: e.error_code,
            }),
        }
    }
}

/// Boots the test guest against `rom` on `opts.engine` and returns what it saw.
///
/// Errors: options the engine cannot honour (a ROM base under QEMU, QEMU arguments or — on a
/// KVM that cannot page — paging on the KVM engine), QEMU missing or failing to start, KVM
/// unusable, a timeout, a malformed stream, a stream from another image, a guest that died
/// without finishing, or an exception while the guest was still setting up (step `boot`). An
/// exception inside a ROM step is *not* an error here: it is in [`ProbeReport::exception`],
/// and [`ProbeReport::check`] turns it into one.
pub fn probe(rom: &Path, opts: &ProbeOptions) -> Result<ProbeReport, HarnessError> {
    check_options(opts)?;
    let mut cfg = GuestConfig::linux(opts.page_offset, opts.paging, &opts.calls);
    cfg.nonce = nonce();
    let g = guest::build(&cfg)?;
    let run = match opts.engine {
        Engine::Qemu(accel) => run_qemu(rom, &g, accel, opts)?,
        Engine::Kvm => run_kvm(rom, &g, opts)?,
    };
    let (stream, err) = protocol::decode_partial(&run.debugcon);
    if run.timed_out {
        return Err(HarnessError::Timeout {
            after: opts.timeout,
            step: stream.last_step(),
        });
    }
    if let Some(EndReason::PagingUnsupported { .. }) = run.kvm_end {
        return Err(HarnessError::PagingUnsupported {
            reason: format!(
                "{} (in step {})",
                run.kvm_end.map(|e| e.to_string()).unwrap_or_default(),
                stream.last_step()
            ),
        });
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    let report = report(&stream, &g.map, &run, opts.engine, cfg.nonce)?;
    // A fault while setting up says nothing about the ROM: the platform cannot run the guest
    // (e.g. a KVM that refuses paging raises #GP on `mov cr0`).
    if let Some(e) = report.exception.filter(|e| e.step == StepId::Boot) {
        if opts.paging && e.vector == 13 && is_mov_cr0(&g, e.eip) {
            return Err(HarnessError::PagingUnsupported {
                reason: format!(
                    "paging not supported by {}: the guest's `mov cr0` that enables paging \
                     raised #GP at EIP {:#010x}",
                    match opts.engine {
                        Engine::Kvm => "this KVM".to_string(),
                        other => other.to_string(),
                    },
                    e.eip
                ),
            });
        }
        report.check()?;
    }
    let finished = report.exception.is_some()
        || (report.end.is_some() && report.exit_value == Some(EXIT_DONE));
    if !finished {
        return Err(match run.kvm_end {
            Some(end) => HarnessError::GuestStopped {
                step: stream.last_step(),
                how: end.to_string(),
            },
            None => HarnessError::GuestDied {
                step: stream.last_step(),
                exit_code: run.exit_code,
                stderr: run.stderr.trim().to_string(),
            },
        });
    }
    Ok(report)
}

/// Whether the guest instruction at physical `eip` (the boot code runs with linear = physical
/// until paging is on) is a `mov cr0, r32`.
fn is_mov_cr0(g: &GuestImage, eip: u32) -> bool {
    let Some(code) = eip
        .checked_sub(layout::IMAGE_BASE)
        .and_then(|off| g.image.get(off as usize..))
    else {
        return false;
    };
    let ins = iced_x86::Decoder::with_ip(32, code, u64::from(eip), iced_x86::DecoderOptions::NONE)
        .decode();
    ins.code() == iced_x86::Code::Mov_cr_r32 && ins.op0_register() == iced_x86::Register::CR0
}

/// Rejects options the chosen engine cannot honour.
fn check_options(opts: &ProbeOptions) -> Result<(), HarnessError> {
    let bad = |reason: String| Err(HarnessError::InvalidConfig { reason });
    match opts.engine {
        Engine::Qemu(_) => {
            if let Some(base) = opts.rom_base {
                return bad(format!(
                    "a ROM base ({base:#x}) was given for {}: under QEMU SeaBIOS chooses where \
                     the ROM goes (use the kvm engine to place it)",
                    opts.engine
                ));
            }
            if !opts.run_init16 {
                return bad(format!(
                    "not running the ROM's 16-bit init was asked for {}: under QEMU SeaBIOS \
                     always runs it (use the kvm engine)",
                    opts.engine
                ));
            }
        }
        Engine::Kvm => {
            if !opts.extra_args.is_empty() {
                return bad(format!(
                    "QEMU arguments {:?} were given for the kvm engine",
                    opts.extra_args
                ));
            }
            if opts.paging {
                kvm::available().map_err(|reason| HarnessError::KvmUnavailable { reason })?;
                kvm::paging_supported()
                    .map_err(|reason| HarnessError::PagingUnsupported { reason })?;
            }
        }
    }
    Ok(())
}

/// What an engine's run left behind, in the terms the probe (and the conformance suite)
/// needs.
#[derive(Debug)]
pub(crate) struct EngineRun {
    pub(crate) debugcon: Vec<u8>,
    pub(crate) timed_out: bool,
    pub(crate) exit_value: Option<u8>,
    pub(crate) wall: Duration,
    pub(crate) seabios_log: String,
    pub(crate) mmio_writes: Vec<MmioWrite>,
    /// QEMU's exit status and stderr (QEMU engines).
    pub(crate) exit_code: Option<i32>,
    pub(crate) stderr: String,
    /// How the KVM run ended (KVM engine).
    pub(crate) kvm_end: Option<EndReason>,
    /// What the KVM runner's BIOS step did (KVM engine with it on).
    pub(crate) kvm_init16: Option<Init16>,
    /// The KVM run's exits (KVM engine).
    pub(crate) kvm_exits: Option<ExitLog>,
    /// Whether the KVM run had the in-kernel irqchip ([`crate::kvm::KvmRun::irqchip`]; KVM
    /// engine, a run that finished).
    pub(crate) kvm_irqchip: Option<bool>,
    /// Whether the KVM runner raised IRQ0 from its PIT's counter 0
    /// ([`crate::kvm::KvmRun::irq0`]; KVM engine, a run that finished).
    pub(crate) kvm_irq0: Option<bool>,
    /// The PIT edges the KVM runner's IRQ0 thread coalesced because it woke late
    /// ([`crate::kvm::irq0::Irq0Report::coalesced`]; KVM engine with the irqchip).
    pub(crate) kvm_irq0_coalesced: Option<u64>,
}

fn run_qemu(
    rom: &Path,
    g: &GuestImage,
    accel: qemu::Accel,
    opts: &ProbeOptions,
) -> Result<EngineRun, HarnessError> {
    let dir = tempfile::tempdir().map_err(|source| HarnessError::Io {
        what: "creating a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })?;
    let kernel = dir.path().join("guest.bin");
    std::fs::write(&kernel, &g.image).map_err(|source| HarnessError::Io {
        what: "writing",
        path: kernel.clone(),
        source,
    })?;
    let run = qemu::run(&QemuConfig {
        rom: Some(rom.to_path_buf()),
        kernel: Some(kernel),
        accel,
        memory_mib: opts.memory_mib,
        timeout: opts.timeout,
        idle_timeout: None,
        extra_args: opts.extra_args.clone(),
        shared_ram: false,
        console: false,
    })?;
    Ok(EngineRun {
        exit_value: run.guest_exit_value(),
        debugcon: run.debugcon,
        timed_out: run.timed_out,
        wall: run.wall,
        seabios_log: run.seabios_log,
        mmio_writes: Vec::new(),
        exit_code: run.exit_code,
        stderr: run.stderr,
        kvm_end: None,
        kvm_init16: None,
        kvm_exits: None,
        kvm_irqchip: None,
        kvm_irq0: None,
        kvm_irq0_coalesced: None,
    })
}

fn run_kvm(rom: &Path, g: &GuestImage, opts: &ProbeOptions) -> Result<EngineRun, HarnessError> {
    let image = std::fs::read(rom).map_err(|source| HarnessError::Io {
        what: "reading",
        path: rom.to_path_buf(),
        source,
    })?;
    let run = kvm::run(&KvmConfig {
        rom: Some(image),
        rom_base: opts.rom_base.unwrap_or(kvm::DEFAULT_ROM_BASE),
        kernel: g.image.clone(),
        memory_mib: opts.memory_mib,
        timeout: opts.timeout,
        keep_ram: false,
        run_init16: opts.run_init16,
        irqchip: true,
    })?;
    Ok(EngineRun {
        exit_value: run.guest_exit_value(),
        debugcon: run.debugcon,
        timed_out: run.timed_out,
        wall: run.wall,
        seabios_log: String::new(),
        mmio_writes: run.mmio_writes,
        exit_code: None,
        stderr: String::new(),
        kvm_end: Some(run.end),
        kvm_init16: run.init16,
        kvm_exits: Some(run.exit_log),
        kvm_irqchip: Some(run.irqchip),
        kvm_irq0: Some(run.irq0.is_some()),
        kvm_irq0_coalesced: run.irq0.as_ref().map(|r| r.coalesced),
    })
}

fn nonce() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// Builds the report from a decoded stream (checks that `HELLO` belongs to this image).
pub(crate) fn report(
    stream: &Stream,
    map: &guest::MemoryMap,
    run: &EngineRun,
    engine: Engine,
    nonce: u32,
) -> Result<ProbeReport, HarnessError> {
    let mut r = ProbeReport {
        page_offset: map.page_offset(),
        paging: map.paging(),
        linear_offset: map.linear_offset(),
        candidates: Vec::new(),
        chosen: None,
        chosen_linear: None,
        rom_len: None,
        init: None,
        relocations: Vec::new(),
        exception: None,
        end: None,
        exit_value: run.exit_value,
        engine,
        wall: run.wall,
        seabios_log: run.seabios_log.clone(),
        mmio_writes: run.mmio_writes.clone(),
        stream: stream.clone(),
        init16: run.kvm_init16.clone(),
        exits: run.kvm_exits.clone(),
    };
    let stack_top = map.va(layout::STACK_TOP);
    let mut pending = Vec::new();
    for (_, rec) in &stream.records {
        match rec {
            Record::Hello(h) => {
                for (what, found, expected) in [
                    ("nonce", h.nonce, nonce),
                    ("PAGE_OFFSET", h.page_offset, map.page_offset()),
                    ("paging flag", u32::from(h.paging), u32::from(map.paging())),
                    ("layout version", h.layout_version, guest::LAYOUT_VERSION),
                ] {
                    if found != expected {
                        return Err(HarnessError::StreamMismatch {
                            what,
                            found,
                            expected,
                        });
                    }
                }
            }
            Record::Step(_) => {}
            Record::Candidate(c) => {
                if c.outcome == Outcome::Accepted {
                    r.rom_len = Some(u32::from(c.rom_length) * BLOCK as u32);
                }
                r.candidates.push(c.clone());
            }
            Record::ProbeDone(p) => {
                r.chosen = p.base;
                r.chosen_linear = p.base.map(|_| p.linear);
            }
            Record::CallResult(c) => match c.step {
                StepId::Init => {
                    let regs = c.regs;
                    r.init = Some(InitResult {
                        eax: regs.eax,
                        regs,
                        kernel_rpl: (regs.cs & 3) as u8,
                        clobbered: regs.changed(&[Reg::Ebx, Reg::Esi, Reg::Edi, Reg::Ebp]),
                        esp_ok: regs.esp == stack_top,
                    });
                }
                StepId::GetReloc(n) => pending.push((n, c.regs)),
                StepId::Boot
                | StepId::Probe
                | StepId::Vector(_)
                | StepId::Machine
                | StepId::Stress(_) => {}
            },
            Record::Exception(e) => r.exception = Some(*e),
            Record::End(s) => r.end = Some(*s),
            Record::Machine(_)
            | Record::VectorResult(_)
            | Record::Trap(_)
            | Record::Stress(_)
            | Record::Samples(_) => {}
        }
    }
    r.relocations = pending
        .into_iter()
        .map(|(call, regs)| {
            let reloc_type = regs.edx as u8;
            RelocAnswer {
                call,
                eip: regs.eax,
                edx: regs.edx,
                reloc_type,
                kind: RelocType::from_u8(reloc_type),
                image_offset: r.image_offset(regs.eax),
                changed: regs.changed(&[Reg::Ebx, Reg::Ecx, Reg::Esi, Reg::Edi, Reg::Ebp]),
                esp_ok: regs.esp == stack_top,
                regs,
            }
        })
        .collect();
    Ok(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn mov_cr0_is_found_in_the_paged_guest_only_where_it_is() {
        let g = guest::build(&GuestConfig::linux(0xC000_0000, true, &[1])).unwrap();
        // `mov cr0, eax` = 0F 22 C0: the boot code has exactly one.
        let at: Vec<usize> = g
            .image
            .windows(3)
            .enumerate()
            .filter(|(_, w)| *w == [0x0F, 0x22, 0xC0])
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{at:x?}");
        let eip = layout::IMAGE_BASE + at[0] as u32;
        assert!(is_mov_cr0(&g, eip));
        assert!(!is_mov_cr0(&g, eip - 3));
        assert!(!is_mov_cr0(&g, g.entry));
        assert!(!is_mov_cr0(&g, 0x1000));
        assert!(!is_mov_cr0(&g, u32::MAX));
    }

    #[test]
    fn options_an_engine_cannot_honour() {
        let qemu_placed = ProbeOptions {
            rom_base: Some(0xC_8000),
            ..ProbeOptions::default()
        };
        let e = check_options(&qemu_placed).unwrap_err().to_string();
        assert!(e.contains("SeaBIOS chooses"), "{e}");
        let kvm_args = ProbeOptions {
            engine: Engine::Kvm,
            paging: false,
            extra_args: vec!["-vga".into()],
            ..ProbeOptions::default()
        };
        let e = check_options(&kvm_args).unwrap_err().to_string();
        assert!(e.contains("QEMU arguments"), "{e}");
        assert!(check_options(&ProbeOptions::default()).is_ok());
    }
}
