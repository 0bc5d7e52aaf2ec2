//! Booting one guest program against the ROM on the chosen engine, bounded in time, and
//! saying how the run ended in the suite's terms.

use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::{self, GuestConfig, GuestImage, MemoryMap};
use crate::kvm::{self, EndReason, KvmConfig};
use crate::probe::EngineRun;
use crate::protocol::{self, EXIT_DONE, EXIT_NESTED, ProtocolError, Record, StepId, Stream};
use crate::qemu::{self, QemuConfig};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The guest wrote `END` and exited through `isa-debug-exit`.
    Done,
    /// The guest exited with another value (after an `EXCEPTION` record, or a nested fault).
    GuestExit(u8),
    /// QEMU exited by itself with status 0: the machine reset (with `-no-reboot`) or powered
    /// off.
    Reset,
    /// Killed after the guest wrote nothing for this long.
    Idle(Duration),
    /// Killed at the hard time limit.
    Timeout(Duration),
    /// KVM engine: the vCPU executed `hlt` (nothing can wake it there).
    Halted(u32),
    /// KVM engine: the vCPU shut down (triple fault).
    TripleFault(u32),
    /// KVM engine: KVM could not run an instruction (kvm-pvm cannot emulate e.g. `sysexit`):
    /// a limit of the engine, not a verdict on the ROM.
    Unsupported(String),
    /// Anything else (QEMU crashed, a KVM exit the runner does not model).
    Died(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Done => f.write_str("the guest finished"),
            End::GuestExit(v) if *v == EXIT_NESTED => f.write_str(
                "the guest's own exception handler faulted (stack, IDT or segments unusable)",
            ),
            End::GuestExit(v) => write!(f, "the guest exited with {v:#04x}"),
            End::Reset => f.write_str("the machine reset (QEMU exited under -no-reboot)"),
            End::Idle(d) => write!(
                f,
                "timed out: hung, nothing written for {:.1}s after it started; run killed",
                d.as_secs_f64()
            ),
            End::Timeout(d) => write!(f, "timed out after {:.1}s, run killed", d.as_secs_f64()),
            End::Halted(eip) => write!(f, "the CPU halted at EIP {eip:#010x}"),
            End::TripleFault(eip) => {
                write!(f, "the vCPU shut down (triple fault) at EIP {eip:#010x}")
            }
            End::Unsupported(why) => write!(f, "the engine cannot run it: {why}"),
            End::Died(why) => write!(f, "the run died: {why}"),
        }
    }
}

/// One finished run.
#[derive(Debug)]
pub(crate) struct Boot {
    /// The decoded records (up to the first problem).
    pub stream: Stream,
    /// Why decoding stopped early, if it did.
    pub decode_error: Option<ProtocolError>,
    /// How the run ended.
    pub end: End,
    /// The engine's view (for [`crate::probe::report`]).
    pub engine_run: EngineRun,
    /// Its nonce.
    pub nonce: u32,
    /// With [`Runner::keep_ram`]: guest-physical `0..`[`kvm::KEPT_RAM_END`] as the run left
    /// it (None when the engine could not provide it).
    pub ram: Option<Vec<u8>>,
    /// KVM engine: what the runner's BIOS step did.
    pub init16: Option<kvm::Init16>,
    /// KVM engine: the run's exits.
    pub exits: Option<kvm::ExitLog>,
    /// KVM engine: the exits of each vector that ran to its `VECTOR_RESULT`.
    pub vector_exits: Vec<VectorExits>,
    /// KVM engine: the host's Unix time when the runner's PM timer read 0
    /// ([`kvm::KvmRun::pm_timer_origin`]): a count the guest read maps to the host's clock.
    pub host_clock: Option<Duration>,
}

/// The exits one vector caused: from its `STEP` record to the next step's (the guest's
/// restoring included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VectorExits {
    /// Its call.
    pub call: u8,
    /// Whether it invoked the ROM (not a native reference instruction).
    pub invoked: bool,
    /// Exits raised inside the ROM's slot.
    pub rom: kvm::ExitCounts,
    /// Exits raised by the guest's own code.
    pub guest: kvm::ExitCounts,
}

/// Gives each vector of `vectors` that ran to its `VECTOR_RESULT` the exits between its
/// `STEP` record and the next record that starts a step or ends the stream.
fn vector_exits(
    stream: &Stream,
    vectors: &[guest::Vector],
    log: &kvm::ExitLog,
    written: u64,
) -> Vec<VectorExits> {
    let starts: Vec<(u64, StepId)> = stream
        .records
        .iter()
        .filter_map(|(at, r)| match r {
            Record::Step(s) => Some((*at as u64, *s)),
            Record::End(_) => Some((*at as u64, StepId::Boot)),
            _ => None,
        })
        .collect();
    let done: Vec<u32> = stream
        .records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::VectorResult(v) => match v.step {
                StepId::Vector(k) => Some(k),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, (at, step)) in starts.iter().enumerate() {
        let StepId::Vector(k) = step else { continue };
        let Some(v) = vectors.get(*k as usize).filter(|_| done.contains(k)) else {
            continue;
        };
        let end = starts.get(i + 1).map_or(written, |(e, _)| *e);
        let (rom, guest) = log.between(*at, end);
        out.push(VectorExits {
            call: v.call,
            invoked: v.invoke != guest::Invoke::NativeIret,
            rom,
            guest,
        });
    }
    out
}

/// What every run of one suite shares.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    pub rom: PathBuf,
    pub engine: Engine,
    pub map: MemoryMap,
    pub rom_base: Option<u32>,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub extra_args: Vec<OsString>,
    /// Keep each run's low RAM ([`Boot::ram`]).
    pub keep_ram: bool,
    /// KVM engine: run the ROM's 16-bit init first ([`KvmConfig::run_init16`]).
    pub run_init16: bool,
    /// KVM engine: the in-kernel irqchip where the host has it ([`KvmConfig::irqchip`]).
    pub irqchip: bool,
}

fn nonce(salt: u32) -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16) ^ salt.rotate_left(7)
}

impl Runner {
    /// Boots `steps`/`vectors`/`stress`; `idle` kills a QEMU run after that much silence.
    /// Errors only when nothing could run (QEMU missing, KVM unusable, a file not written).
    pub(crate) fn boot(
        &self,
        steps: Vec<guest::Step>,
        vectors: Vec<guest::Vector>,
        stress: Vec<guest::Stress>,
        idle: Option<Duration>,
        salt: u32,
    ) -> Result<Boot, HarnessError> {
        let cfg = GuestConfig {
            page_offset: self.map.page_offset(),
            paging: self.map.paging(),
            steps,
            vectors,
            stress,
            nonce: nonce(salt),
            // kvm-pvm cannot emulate a protected-mode iret; popfd + retf work everywhere.
            no_iret: self.engine == Engine::Kvm,
        };
        let image = guest::build(&cfg)?;
        let (mut engine_run, end, ram, host_clock) = match self.engine {
            Engine::Qemu(accel) => {
                let (run, end, ram) = self.qemu(&image, accel, idle)?;
                (run, end, ram, None)
            }
            Engine::Kvm => self.kvm(&image)?,
        };
        let (stream, decode_error) = protocol::decode_partial(&engine_run.debugcon);
        let exits = engine_run.kvm_exits.take();
        let vector_exits = exits.as_ref().map_or_else(Vec::new, |log| {
            let written = engine_run.debugcon.len() as u64;
            vector_exits(&stream, &cfg.vectors, log, written)
        });
        Ok(Boot {
            stream,
            decode_error,
            end,
            init16: engine_run.kvm_init16.take(),
            engine_run,
            nonce: cfg.nonce,
            ram,
            exits,
            vector_exits,
            host_clock,
        })
    }

    fn qemu(
        &self,
        g: &GuestImage,
        accel: qemu::Accel,
        idle: Option<Duration>,
    ) -> Result<(EngineRun, End, Option<Vec<u8>>), HarnessError> {
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
        let mut session = qemu::Session::spawn(&QemuConfig {
            rom: Some(self.rom.clone()),
            kernel: Some(kernel),
            accel,
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            idle_timeout: idle,
            extra_args: self.extra_args.clone(),
            shared_ram: self.keep_ram,
            console: false,
        })?;
        session.run_bounded()?;
        let ram = if self.keep_ram {
            session.read_ram(0..kvm::KEPT_RAM_END).ok()
        } else {
            None
        };
        let run = session.finish();
        let exit_value = run.guest_exit_value();
        let end = if run.idle_timed_out {
            End::Idle(idle.unwrap_or_default())
        } else if run.timed_out {
            End::Timeout(self.timeout)
        } else {
            match (exit_value, run.exit_code) {
                (Some(EXIT_DONE), _) => End::Done,
                (Some(v), _) => End::GuestExit(v),
                (None, Some(0)) => End::Reset,
                (None, code) => End::Died(format!(
                    "QEMU exit status {code:?}{}",
                    if run.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", run.stderr.trim())
                    }
                )),
            }
        };
        Ok((
            EngineRun {
                debugcon: run.debugcon,
                timed_out: run.timed_out,
                exit_value,
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
            },
            end,
            ram,
        ))
    }

    /// The run, how it ended, its RAM, and the Unix time at its PM timer's count 0 (None
    /// when the run failed before it finished).
    #[allow(clippy::type_complexity)]
    fn kvm(
        &self,
        g: &GuestImage,
    ) -> Result<(EngineRun, End, Option<Vec<u8>>, Option<Duration>), HarnessError> {
        let image = std::fs::read(&self.rom).map_err(|source| HarnessError::Io {
            what: "reading",
            path: self.rom.clone(),
            source,
        })?;
        let started = std::time::Instant::now();
        let run = match kvm::run_partial(&KvmConfig {
            rom: Some(image),
            rom_base: self.rom_base.unwrap_or(kvm::DEFAULT_ROM_BASE),
            kernel: g.image.clone(),
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            keep_ram: self.keep_ram,
            run_init16: self.run_init16,
            irqchip: self.irqchip,
        }) {
            Ok(run) => run,
            // The vCPU stopped in a way the VMM does not model: a verdict, not a failure to run.
            // So is a ROM init that does not return (the BIOS step).
            Err((e @ (HarnessError::KvmExit { .. } | HarnessError::RomInit { .. }), partial)) => {
                let end = match &e {
                    HarnessError::KvmExit { exit, detail } if exit == "InternalError" => {
                        End::Unsupported(detail.clone())
                    }
                    other => End::Died(other.to_string()),
                };
                return Ok((
                    EngineRun {
                        debugcon: partial.debugcon,
                        timed_out: false,
                        exit_value: None,
                        wall: started.elapsed(),
                        seabios_log: String::new(),
                        mmio_writes: Vec::new(),
                        exit_code: None,
                        stderr: String::new(),
                        kvm_end: None,
                        kvm_init16: partial.init16.map(|i| *i),
                        kvm_exits: Some(*partial.exit_log),
                        kvm_irqchip: None,
                        kvm_irq0: None,
                        kvm_irq0_coalesced: None,
                    },
                    end,
                    partial.ram,
                    None,
                ));
            }
            Err((e, _)) => return Err(e),
        };
        let end = match run.end {
            EndReason::ExitPort(EXIT_DONE) => End::Done,
            EndReason::ExitPort(v) => End::GuestExit(v),
            EndReason::Halted { eip } => End::Halted(eip),
            EndReason::Shutdown { eip, .. } => End::TripleFault(eip),
            EndReason::PagingUnsupported { .. } => End::Died(run.end.to_string()),
            EndReason::TimedOut => End::Timeout(self.timeout),
        };
        Ok((
            EngineRun {
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
            },
            end,
            run.ram,
            Some(run.pm_timer_origin),
        ))
    }
}
