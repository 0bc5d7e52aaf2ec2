//! Probe a ROM the way Linux does: boot the [test guest](crate::guest) under QEMU with the ROM
//! loaded by SeaBIOS, and report what the guest saw.
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

use crate::error::HarnessError;
use crate::guest::{self, GuestConfig, layout};
use crate::protocol::{
    self, Candidate, EXIT_DONE, EndStatus, Exception, Outcome, Record, Regs, StepId, Stream,
};
use crate::qemu::{self, Accel, QemuConfig};
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
    /// QEMU accelerator.
    pub accel: Accel,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Further QEMU arguments (e.g. `-vga std`).
    pub extra_args: Vec<OsString>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            page_offset: 0xC000_0000,
            paging: true,
            calls: (0..=80).collect(),
            accel: Accel::Tcg,
            timeout: Duration::from_secs(20),
            memory_mib: 64,
            extra_args: Vec::new(),
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
    /// Wall-clock time of the QEMU run.
    pub wall: Duration,
    /// SeaBIOS's log (it says where it put each option ROM).
    pub seabios_log: String,
    /// The decoded record stream.
    pub stream: Stream,
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

/// Boots the test guest with `rom` loaded by SeaBIOS and returns what it saw.
///
/// Errors: QEMU missing or failing to start, a timeout, a malformed stream, a stream from
/// another image, a guest that died without finishing, or an exception while the guest was
/// still setting up (step `boot`). An exception inside a ROM step is *not* an error here: it is
/// in [`ProbeReport::exception`], and [`ProbeReport::check`] turns it into one.
pub fn probe(rom: &Path, opts: &ProbeOptions) -> Result<ProbeReport, HarnessError> {
    let mut cfg = GuestConfig::linux(opts.page_offset, opts.paging, &opts.calls);
    cfg.nonce = nonce();
    let g = guest::build(&cfg)?;
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
        accel: opts.accel,
        memory_mib: opts.memory_mib,
        timeout: opts.timeout,
        extra_args: opts.extra_args.clone(),
    })?;
    let (stream, err) = protocol::decode_partial(&run.debugcon);
    if run.timed_out {
        return Err(HarnessError::Timeout {
            after: opts.timeout,
            step: stream.last_step(),
        });
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    let report = report(&stream, &g.map, &run, cfg.nonce)?;
    // A fault while setting up says nothing about the ROM: the platform cannot run the guest
    // (e.g. a KVM that refuses paging raises #GP on `mov cr0`).
    if report.exception.is_some_and(|e| e.step == StepId::Boot) {
        report.check()?;
    }
    let finished = report.exception.is_some()
        || (report.end.is_some() && report.exit_value == Some(EXIT_DONE));
    if !finished {
        return Err(HarnessError::GuestDied {
            step: stream.last_step(),
            exit_code: run.exit_code,
            stderr: run.stderr.trim().to_string(),
        });
    }
    Ok(report)
}

fn nonce() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

fn report(
    stream: &Stream,
    map: &guest::MemoryMap,
    run: &qemu::QemuRun,
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
        exit_value: run.guest_exit_value(),
        wall: run.wall,
        seabios_log: run.seabios_log.clone(),
        stream: stream.clone(),
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
                StepId::Boot | StepId::Probe => {}
            },
            Record::Exception(e) => r.exception = Some(*e),
            Record::End(s) => r.end = Some(*s),
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
