//! Starting QEMU with SeaBIOS, a ROM and (optionally) a multiboot guest, bounded in time.
//!
//! Every run gets a private temporary directory. The guest's debug console (port 0xE9) and
//! SeaBIOS's own log (port 0x402) are captured to files and returned; `isa-debug-exit` at port
//! 0xF4 lets a guest end the run (QEMU exits with status `(v << 1) | 1`). A run is killed at
//! [`QemuConfig::timeout`], and — if [`QemuConfig::idle_timeout`] is set — as soon as the guest,
//! once it started writing to the debug console, has been silent that long (a guest that
//! streams records as it goes is hung or stopped by then).
//!
//! # Guest RAM the host can read
//!
//! With [`QemuConfig::shared_ram`] the guest's RAM is a file in the run's directory
//! (`-object memory-backend-file,id=vmi-ram,size=…M,mem-path=DIR/ram,share=on -machine
//! pc,memory-backend=vmi-ram`): byte `p` of the file is guest-physical address `p` (for the
//! first [`QemuConfig::memory_mib`] MiB below the PCI hole, which is all of it for the sizes
//! used here). The host reads it while the guest runs ([`Session::read_ram`]) and after QEMU
//! ended, even after it was killed: the file outlives the process until the [`Session`] is
//! dropped. [`QemuRun::conventional`] is its first 640 KiB after the run.
//!
//! # One way to start QEMU
//!
//! [`run`] is [`Session::spawn`] + [`Session::run_bounded`] + [`Session::finish`]; a caller that
//! wants to watch a running guest (poll its RAM, stop it when it likes) drives a [`Session`]
//! itself. Both build the command line with [`command_args`]:
//!
//! ```text
//! qemu-system-i386 -nodefaults -machine pc[,memory-backend=vmi-ram] -no-reboot
//!   -display none -net none -serial none -parallel none -monitor none
//!   -m MIB -accel tcg|kvm [-object memory-backend-file,…]
//!   -chardev file,id=dbg,path=DIR/debugcon.bin -device isa-debugcon,iobase=0xe9,chardev=dbg
//!   -chardev file,id=bios,path=DIR/seabios.log -device isa-debugcon,iobase=0x402,chardev=bios
//!   -device isa-debug-exit,iobase=0xf4,iosize=1
//!   [-option-rom ROM] [-kernel GUEST] EXTRA…
//! ```
//!
//! [`QemuConfig::extra_args`] come last, verbatim: `-kernel bzImage -initrd … -append …` boots a
//! real Linux guest (leave [`QemuConfig::kernel`] unset then). An extra `-display`, `-net`,
//! `-serial`, `-parallel` or `-monitor` *replaces* the harness's `none` default for that option
//! (so `-serial stdio` or `-serial file:console.log` gives a Linux guest its ttyS0). Do not pass
//! `-m` or `-machine`: the memory size is [`QemuConfig::memory_mib`] and the machine option
//! carries the shared memory backend.

use crate::error::HarnessError;
use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// I/O port of the guest debug console.
pub const DEBUGCON_PORT: u16 = 0xE9;
/// I/O port SeaBIOS writes its log to.
pub const SEABIOS_LOG_PORT: u16 = 0x402;
/// I/O port of `isa-debug-exit`.
pub const EXIT_PORT: u16 = 0xF4;
/// End of conventional memory (640 KiB): [`QemuRun::conventional`] is guest-physical
/// `0..CONVENTIONAL_END`.
pub const CONVENTIONAL_END: u64 = 0xA_0000;
/// Id of the shared memory backend on the command line.
pub const RAM_BACKEND_ID: &str = "vmi-ram";

/// File names inside a run's directory.
mod file {
    /// The guest's debug console.
    pub const DEBUGCON: &str = "debugcon.bin";
    /// SeaBIOS's log.
    pub const SEABIOS_LOG: &str = "seabios.log";
    /// Guest RAM (with [`super::QemuConfig::shared_ram`]).
    pub const RAM: &str = "ram";
}

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
    /// A multiboot guest booted with `-kernel` (None: SeaBIOS boots nothing and stops — or
    /// whatever [`QemuConfig::extra_args`] boot).
    pub kernel: Option<PathBuf>,
    /// Accelerator.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Kill QEMU after this long (in [`run`] and [`Session::run_bounded`]).
    pub timeout: Duration,
    /// Kill QEMU when the guest, once it started writing to the debug console, has written
    /// nothing more for this long (None: only [`QemuConfig::timeout`] applies). A guest that
    /// streams records as it goes is hung or stopped after such a silence.
    pub idle_timeout: Option<Duration>,
    /// Further arguments appended verbatim (see the [module docs](self) for what they may
    /// replace).
    pub extra_args: Vec<OsString>,
    /// Back guest RAM with a shared file in the run's directory, so the host can read it while
    /// the guest runs ([`Session::read_ram`]) and after it stopped
    /// ([`QemuRun::conventional`]).
    pub shared_ram: bool,
    /// QEMU's stdin and stdout are the caller's (for `-serial stdio` or `-serial mon:stdio` in
    /// [`QemuConfig::extra_args`]: a guest console in the caller's terminal). Off: stdin is
    /// empty and stdout discarded.
    pub console: bool,
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
            shared_ram: false,
            console: false,
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
    /// With [`QemuConfig::shared_ram`]: guest-physical `0..`[`CONVENTIONAL_END`] as the guest
    /// left it (shorter only if the RAM is smaller; None without shared RAM or if the file
    /// could not be read).
    pub conventional: Option<Vec<u8>>,
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

/// The QEMU option that makes TCG translate one instruction per block, so that interrupts can
/// arrive between any two guest instructions (TCG otherwise takes them between blocks):
/// `-one-insn-per-tb` (QEMU 8.1 and later) or its older name `-singlestep`, whichever this
/// QEMU lists in its `-help`.
///
/// Errors: QEMU missing, or it knows neither option.
pub fn one_insn_per_tb() -> Result<&'static str, HarnessError> {
    let out = Command::new(find_qemu()?)
        .arg("-help")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            binary: "qemu-system-i386".into(),
            source,
        })?;
    let help = String::from_utf8_lossy(&out.stdout);
    let listed = |opt: &str| {
        help.lines()
            .any(|l| l.split_whitespace().next() == Some(opt))
    };
    ["-one-insn-per-tb", "-singlestep"]
        .into_iter()
        .find(|o| listed(o))
        .ok_or_else(|| HarnessError::InvalidConfig {
            reason: "this QEMU lists neither -one-insn-per-tb nor -singlestep in its -help".into(),
        })
}

/// Runs QEMU once and collects its output: [`Session::spawn`], [`Session::run_bounded`],
/// [`Session::finish`].
pub fn run(cfg: &QemuConfig) -> Result<QemuRun, HarnessError> {
    let mut s = Session::spawn(cfg)?;
    s.run_bounded()?;
    Ok(s.finish())
}

/// Options the harness passes with `none` unless [`QemuConfig::extra_args`] name them.
const REPLACEABLE: [&str; 5] = ["-display", "-net", "-serial", "-parallel", "-monitor"];

/// Whether `args` contain option `opt` (`-opt` or `--opt`).
fn has_option(args: &[OsString], opt: &str) -> bool {
    let long = format!("-{opt}");
    args.iter().any(|a| a == opt || *a == *long)
}

/// A path as a QEMU option value: commas doubled (QEMU's escape).
fn opt_path(path: &Path) -> OsString {
    let s = path.as_os_str().to_string_lossy();
    OsString::from(s.replace(',', ",,"))
}

/// The arguments (without the binary) QEMU gets for `cfg`, with the run's files in `dir` (see
/// the [module docs](self)).
pub fn command_args(cfg: &QemuConfig, dir: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &dyn AsRef<OsStr>| a.push(s.as_ref().to_os_string());
    push(&"-nodefaults");
    push(&"-machine");
    push(&if cfg.shared_ram {
        format!("pc,memory-backend={RAM_BACKEND_ID}")
    } else {
        "pc".to_string()
    });
    push(&"-no-reboot");
    for opt in REPLACEABLE {
        if !has_option(&cfg.extra_args, opt) {
            push(&opt);
            push(&"none");
        }
    }
    push(&"-m");
    push(&cfg.memory_mib.to_string());
    push(&"-accel");
    push(&match cfg.accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    });
    if cfg.shared_ram {
        let mut obj = OsString::from(format!(
            "memory-backend-file,id={RAM_BACKEND_ID},size={}M,share=on,mem-path=",
            cfg.memory_mib
        ));
        obj.push(opt_path(&dir.join(file::RAM)));
        push(&"-object");
        push(&obj);
    }
    push(&"-chardev");
    push(&chardev("dbg", &dir.join(file::DEBUGCON)));
    push(&"-device");
    push(&format!(
        "isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=dbg"
    ));
    push(&"-chardev");
    push(&chardev("bios", &dir.join(file::SEABIOS_LOG)));
    push(&"-device");
    push(&format!(
        "isa-debugcon,iobase={SEABIOS_LOG_PORT:#x},chardev=bios"
    ));
    push(&"-device");
    push(&format!("isa-debug-exit,iobase={EXIT_PORT:#x},iosize=1"));
    if let Some(rom) = &cfg.rom {
        push(&"-option-rom");
        push(rom);
    }
    if let Some(kernel) = &cfg.kernel {
        push(&"-kernel");
        push(kernel);
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

/// A running (or finished) QEMU and its directory: the debug console, SeaBIOS's log and — with
/// [`QemuConfig::shared_ram`] — the guest's RAM, readable while it runs.
///
/// Dropping a session kills QEMU if it still runs and deletes the directory.
///
/// ```no_run
/// use std::time::Duration;
/// use vmi_harness::qemu::{CONVENTIONAL_END, QemuConfig, Session};
///
/// let mut s = Session::spawn(&QemuConfig {
///     rom: Some("trace.rom".into()),
///     shared_ram: true,
///     console: true,
///     extra_args: ["-kernel", "bzImage", "-append", "console=ttyS0", "-serial", "stdio"]
///         .map(Into::into)
///         .to_vec(),
///     ..QemuConfig::default()
/// })?;
/// while s.wait_timeout(Duration::from_secs(1))?.is_none() {
///     let low = s.read_ram(0..CONVENTIONAL_END)?;
///     // decode the counters in `low` …
/// #   let _ = low;
/// }
/// let run = s.finish();
/// # let _ = run;
/// # Ok::<(), vmi_harness::HarnessError>(())
/// ```
#[derive(Debug)]
pub struct Session {
    child: Child,
    binary: PathBuf,
    dir: tempfile::TempDir,
    cfg: QemuConfig,
    started: Instant,
    /// Exit status and when it was seen.
    ended: Option<(ExitStatus, Duration)>,
    /// Killed by this session (a timeout or [`Session::kill`]).
    killed: bool,
    timed_out: bool,
    idle_timed_out: bool,
    stderr_reader: Option<JoinHandle<String>>,
    stderr: String,
}

impl Session {
    /// Starts QEMU for `cfg` in a fresh temporary directory.
    ///
    /// Errors: QEMU not on PATH, the directory cannot be created, the process cannot start.
    pub fn spawn(cfg: &QemuConfig) -> Result<Session, HarnessError> {
        let binary = find_qemu()?;
        let dir = tempfile::tempdir().map_err(|source| HarnessError::Io {
            what: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        let (stdin, stdout) = if cfg.console {
            (Stdio::inherit(), Stdio::inherit())
        } else {
            (Stdio::null(), Stdio::null())
        };
        cmd.args(command_args(cfg, dir.path()))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            binary: binary.clone(),
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
        Ok(Session {
            child,
            binary,
            dir,
            cfg: cfg.clone(),
            started,
            ended: None,
            killed: false,
            timed_out: false,
            idle_timed_out: false,
            stderr_reader: Some(stderr_reader),
            stderr: String::new(),
        })
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &QemuConfig {
        &self.cfg
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The run's directory (deleted when the session is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The guest-RAM file, with [`QemuConfig::shared_ram`].
    pub fn ram_path(&self) -> Option<PathBuf> {
        self.cfg.shared_ram.then(|| self.dir.path().join(file::RAM))
    }

    /// Size of guest RAM in bytes.
    pub fn ram_len(&self) -> u64 {
        u64::from(self.cfg.memory_mib) << 20
    }

    /// Reads guest-physical `range` from the shared RAM file — while QEMU runs or after it
    /// ended. Bytes past the end of RAM are not returned (the result is shorter).
    ///
    /// Errors: the session has no shared RAM, or the file cannot be read (QEMU has not created
    /// it yet, or it went away).
    pub fn read_ram(&self, range: Range<u64>) -> Result<Vec<u8>, HarnessError> {
        use std::io::{Read, Seek, SeekFrom};
        let Some(path) = self.ram_path() else {
            return Err(HarnessError::InvalidConfig {
                reason: "this QEMU session has no shared guest RAM (QemuConfig::shared_ram is \
                         off)"
                    .into(),
            });
        };
        let io = |source| HarnessError::Io {
            what: "reading guest RAM from",
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(&path).map_err(io)?;
        let end = range.end.min(self.ram_len());
        let len = end.saturating_sub(range.start);
        f.seek(SeekFrom::Start(range.start)).map_err(io)?;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        f.take(len).read_to_end(&mut buf).map_err(io)?;
        buf.resize(usize::try_from(len).unwrap_or(0), 0);
        // A sparse file shorter than RAM reads as zero beyond its end, as the guest sees it.
        Ok(buf)
    }

    /// Bytes the guest wrote to the debug console so far.
    pub fn debugcon(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join(file::DEBUGCON)).unwrap_or_default()
    }

    /// SeaBIOS's log so far (port 0x402; lossy UTF-8).
    pub fn seabios_log(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join(file::SEABIOS_LOG)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of bytes the guest wrote to the debug console so far.
    pub fn debugcon_len(&self) -> u64 {
        std::fs::metadata(self.dir.path().join(file::DEBUGCON)).map_or(0, |m| m.len())
    }

    /// Time since QEMU was started (until it ended, once it has).
    pub fn elapsed(&self) -> Duration {
        self.ended
            .map_or_else(|| self.started.elapsed(), |(_, at)| at)
    }

    /// QEMU's exit status if it has ended (without waiting).
    ///
    /// Errors: the OS could not tell.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        if let Some((status, _)) = self.ended {
            return Ok(Some(status));
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.ended = Some((status, self.started.elapsed()));
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(HarnessError::Io {
                what: "waiting for",
                path: self.binary.clone(),
                source,
            }),
        }
    }

    /// Waits up to `limit` for QEMU to end; its exit status if it did.
    ///
    /// Errors: as [`Session::try_wait`].
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>, HarnessError> {
        let until = Instant::now().checked_add(limit);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let left = until.map_or(POLL, |u| u.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    /// Kills QEMU (if it still runs) and reaps it. The shared RAM file stays readable.
    ///
    /// Errors: as [`Session::try_wait`].
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        self.killed = true;
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => {
                self.ended = Some((status, self.started.elapsed()));
                Ok(())
            }
            Err(source) => Err(HarnessError::Io {
                what: "waiting for",
                path: self.binary.clone(),
                source,
            }),
        }
    }

    /// Runs QEMU to its end under the configuration's time limits: killed at
    /// [`QemuConfig::timeout`], or after [`QemuConfig::idle_timeout`] of debug-console silence
    /// once the guest started writing.
    ///
    /// Errors: as [`Session::try_wait`].
    pub fn run_bounded(&mut self) -> Result<(), HarnessError> {
        // (bytes seen, when that count was first seen)
        let mut progress = (0u64, Instant::now());
        loop {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            if self.started.elapsed() >= self.cfg.timeout {
                self.timed_out = true;
                return self.kill();
            }
            if let Some(idle) = self.cfg.idle_timeout {
                let len = self.debugcon_len();
                if len != progress.0 {
                    progress = (len, Instant::now());
                } else if len > 0 && progress.1.elapsed() >= idle {
                    self.timed_out = true;
                    self.idle_timed_out = true;
                    return self.kill();
                }
            }
            std::thread::sleep(POLL);
        }
    }

    /// Ends the session's run (kills QEMU if it still runs) and collects what it produced.
    /// Calling it again collects again (the files are still there); the session keeps the
    /// directory — and the RAM file — until it is dropped.
    pub fn finish(&mut self) -> QemuRun {
        let _ = self.kill();
        if let Some(h) = self.stderr_reader.take() {
            self.stderr = h.join().unwrap_or_default();
        }
        let read = |name: &str| std::fs::read(self.dir.path().join(name)).unwrap_or_default();
        let conventional = if self.cfg.shared_ram {
            self.read_ram(0..CONVENTIONAL_END).ok()
        } else {
            None
        };
        let exit_code = match self.ended {
            Some((status, _)) if !self.killed => status.code(),
            _ => None,
        };
        QemuRun {
            exit_code,
            timed_out: self.timed_out,
            idle_timed_out: self.idle_timed_out,
            debugcon: read(file::DEBUGCON),
            seabios_log: String::from_utf8_lossy(&read(file::SEABIOS_LOG)).into_owned(),
            stderr: self.stderr.clone(),
            wall: self.elapsed(),
            conventional,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.ended.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How often a waiting session looks at QEMU.
const POLL: Duration = Duration::from_millis(5);

fn chardev(id: &str, path: &Path) -> OsString {
    let mut s = OsString::from(format!("file,id={id},path="));
    s.push(opt_path(path));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cfg: &QemuConfig) -> Vec<String> {
        command_args(cfg, Path::new("/run/x,y"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn command_line_without_and_with_shared_ram() {
        let plain = args(&QemuConfig::default());
        assert_eq!(&plain[..4], ["-nodefaults", "-machine", "pc", "-no-reboot"]);
        assert!(!plain.iter().any(|a| a.contains("memory-backend")));
        assert!(plain.contains(&"file,id=dbg,path=/run/x,,y/debugcon.bin".to_string()));
        let shared = args(&QemuConfig {
            shared_ram: true,
            memory_mib: 32,
            ..QemuConfig::default()
        });
        assert_eq!(shared[2], "pc,memory-backend=vmi-ram");
        let obj = shared
            .iter()
            .position(|a| a == "-object")
            .map(|i| shared[i + 1].clone())
            .unwrap();
        assert_eq!(
            obj,
            "memory-backend-file,id=vmi-ram,size=32M,share=on,mem-path=/run/x,,y/ram"
        );
        let m = shared.iter().position(|a| a == "-m").unwrap();
        assert_eq!(shared[m + 1], "32");
    }

    #[test]
    fn extra_args_come_last_and_replace_the_none_defaults() {
        let cfg = QemuConfig {
            extra_args: [
                "-kernel",
                "bzImage",
                "-append",
                "console=ttyS0",
                "--serial",
                "stdio",
            ]
            .map(OsString::from)
            .to_vec(),
            ..QemuConfig::default()
        };
        let a = args(&cfg);
        assert_eq!(
            &a[a.len() - 6..],
            [
                "-kernel",
                "bzImage",
                "-append",
                "console=ttyS0",
                "--serial",
                "stdio"
            ]
        );
        assert_eq!(a.iter().filter(|x| x.ends_with("serial")).count(), 1);
        for opt in ["-display", "-net", "-parallel", "-monitor"] {
            let i = a.iter().position(|x| x == opt).unwrap();
            assert_eq!(a[i + 1], "none", "{opt}");
        }
    }
}
