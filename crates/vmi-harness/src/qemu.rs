//! Starting QEMU with SeaBIOS, a ROM and (optionally) a multiboot guest, bounded in time.
//!
//! Every run gets a private temporary directory. The guest's debug console (port 0xE9) and
//! SeaBIOS's own log (port 0x402) are captured to files and returned; `isa-debug-exit` at port
//! 0xF4 lets a guest end the run (QEMU exits with status `(v << 1) | 1`). A run is killed at
//! [`QemuConfig::timeout`], and — if [`QemuConfig::idle_timeout`] is set — as soon as the guest,
//! once it started writing to the debug console, has been silent that long (a guest that
//! streams records as it goes is hung or stopped by then).

use crate::error::HarnessError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// I/O port of the guest debug console.
pub const DEBUGCON_PORT: u16 = 0xE9;
/// I/O port SeaBIOS writes its log to.
pub const SEABIOS_LOG_PORT: u16 = 0x402;
/// I/O port of `isa-debug-exit`.
pub const EXIT_PORT: u16 = 0xF4;

/// Which accelerator QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Binary translation: works everywhere.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// One QEMU run.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The ROM handed to SeaBIOS with `-option-rom` (None: no ROM).
    pub rom: Option<PathBuf>,
    /// A multiboot guest booted with `-kernel` (None: SeaBIOS boots nothing and stops).
    pub kernel: Option<PathBuf>,
    /// Accelerator.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Kill QEMU when the guest, once it started writing to the debug console, has written
    /// nothing more for this long (None: only [`QemuConfig::timeout`] applies). A guest that
    /// streams records as it goes is hung or stopped after such a silence.
    pub idle_timeout: Option<Duration>,
    /// Further arguments appended verbatim.
    pub extra_args: Vec<OsString>,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            rom: None,
            kernel: None,
            accel: Accel::Tcg,
            memory_mib: 64,
            timeout: Duration::from_secs(20),
            idle_timeout: None,
            extra_args: Vec::new(),
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct QemuRun {
    /// QEMU's exit code (None if it was killed).
    pub exit_code: Option<i32>,
    /// Whether the run hit a timeout (either one) and was killed.
    pub timed_out: bool,
    /// Whether it was the [idle timeout](QemuConfig::idle_timeout).
    pub idle_timed_out: bool,
    /// Bytes the guest wrote to port 0xE9.
    pub debugcon: Vec<u8>,
    /// SeaBIOS's log (port 0x402).
    pub seabios_log: String,
    /// QEMU's own stderr.
    pub stderr: String,
    /// Wall-clock time of the run.
    pub wall: Duration,
}

impl QemuRun {
    /// The value the guest wrote to `isa-debug-exit`, if it ended the run that way.
    pub fn guest_exit_value(&self) -> Option<u8> {
        match self.exit_code {
            Some(c) if c & 1 == 1 => u8::try_from(c >> 1).ok(),
            _ => None,
        }
    }
}

/// The `qemu-system-i386` binary on PATH.
pub fn find_qemu() -> Result<PathBuf, HarnessError> {
    let name = "qemu-system-i386";
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::QemuMissing {
            binary: name.into(),
        })
}

/// Runs QEMU once and collects its output.
pub fn run(cfg: &QemuConfig) -> Result<QemuRun, HarnessError> {
    let qemu = find_qemu()?;
    let dir = tempfile::tempdir().map_err(|source| HarnessError::Io {
        what: "creating a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })?;
    let debugcon = dir.path().join("debugcon.bin");
    let bios_log = dir.path().join("seabios.log");
    let mut cmd = Command::new(&qemu);
    cmd.args([
        "-nodefaults",
        "-machine",
        "pc",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args([
        "-net",
        "none",
        "-serial",
        "none",
        "-parallel",
        "none",
        "-monitor",
        "none",
    ])
    .arg("-m")
    .arg(cfg.memory_mib.to_string())
    .arg("-accel")
    .arg(match cfg.accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    })
    .arg("-chardev")
    .arg(chardev("dbg", &debugcon))
    .arg("-device")
    .arg(format!(
        "isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=dbg"
    ))
    .arg("-chardev")
    .arg(chardev("bios", &bios_log))
    .arg("-device")
    .arg(format!(
        "isa-debugcon,iobase={SEABIOS_LOG_PORT:#x},chardev=bios"
    ))
    .arg("-device")
    .arg(format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"));
    if let Some(rom) = &cfg.rom {
        cmd.arg("-option-rom").arg(rom);
    }
    if let Some(kernel) = &cfg.kernel {
        cmd.arg("-kernel").arg(kernel);
    }
    cmd.args(&cfg.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        binary: qemu.clone(),
        source,
    })?;
    let mut stderr_pipe = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = std::io::Read::read_to_string(p, &mut s);
        }
        s
    });
    let mut timed_out = false;
    let mut idle_timed_out = false;
    // (bytes seen, when that count was first seen)
    let mut progress = (0u64, Instant::now());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= cfg.timeout => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                if let Some(idle) = cfg.idle_timeout {
                    let len = std::fs::metadata(&debugcon).map_or(0, |m| m.len());
                    if len != progress.0 {
                        progress = (len, Instant::now());
                    } else if len > 0 && progress.1.elapsed() >= idle {
                        timed_out = true;
                        idle_timed_out = true;
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break None,
        }
    };
    let wall = start.elapsed();
    let stderr = stderr_reader.join().unwrap_or_default();
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    Ok(QemuRun {
        exit_code: status.and_then(|s| s.code()),
        timed_out,
        idle_timed_out,
        debugcon: read(&debugcon),
        seabios_log: String::from_utf8_lossy(&read(&bios_log)).into_owned(),
        stderr,
        wall,
    })
}

fn chardev(id: &str, path: &Path) -> OsString {
    let mut s = OsString::from(format!("file,id={id},path="));
    s.push(path);
    s
}
