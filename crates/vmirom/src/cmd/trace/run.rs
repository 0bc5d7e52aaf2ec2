//! `vmirom trace run ROM [options] [-- QEMU ARGS]`: boot a guest under QEMU with a trace ROM and
//! the guest's RAM in a shared file, show per-call rates while it runs (re-reading the trace
//! area every interval), and print the report when QEMU stops.
//!
//! Exit codes: 0 the area was found and decoded at the end; 1 QEMU ran but left no usable area
//! (none appeared, it was damaged, or another ROM wrote it); 2 usage or input error (missing
//! files, not a trace ROM, KVM unusable, QEMU could not be started).

use super::live::{self, Interval};
use super::{Report, ReportOptions, build_report, check_build_id, rom_manifest, table};
use crate::cmd::CliError;
use crate::cmd::files::{self, Expect};
use crate::symbols::Symbols;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vmi_harness::HarnessError;
use vmi_harness::qemu::{Accel, CONVENTIONAL_END, QemuConfig, QemuRun, Session};
use vmi_rom::trace::area::{self, AreaError, Counter};

/// Which accelerator QEMU uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelName {
    /// Binary translation: works everywhere.
    Tcg,
    /// Hardware virtualization (/dev/kvm and VMX/SVM).
    Kvm,
}

/// Arguments of `vmirom trace run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
QEMU runs with SeaBIOS, `-option-rom ROM`, `-m MIB`, its RAM in a shared file, and `-display \
none -serial none -net none -parallel none -monitor none` unless the QEMU ARGS name those \
options. With a console on stdio (`-- -serial stdio` or `-serial mon:stdio`) QEMU gets the \
terminal's stdin and stdout and the live view goes to stderr as appended blocks (or use `-q`, \
or send the console to a file: `-- -serial file:console.log`). Ctrl-C stops QEMU and prints the report of what the guest did until then; \
a second Ctrl-C ends vmirom at once.")]
pub struct RunArgs {
    /// The trace ROM (`vmirom build --trace`), handed to SeaBIOS with -option-rom.
    rom: PathBuf,
    /// Guest kernel (multiboot or Linux bzImage), booted with QEMU's -kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk for a Linux --kernel (QEMU's -initrd).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line (QEMU's -append).
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// Guest RAM in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(2..=65536))]
    memory: u32,
    /// Accelerator: tcg (works everywhere) or kvm (needs a usable /dev/kvm and VMX/SVM).
    #[arg(long, value_enum, default_value = "tcg")]
    accel: AccelName,
    /// Seconds between two readings of the counters (the live view's refresh).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    interval: Duration,
    /// Stop QEMU after this many seconds (default: run until the guest stops or Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Print the final report as one JSON object (the live view goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the calls per second of the busiest calls over the run as an SVG line
    /// chart (log scale).
    #[arg(long, value_name = "OUT")]
    timeline: Option<PathBuf>,
    #[command(flatten)]
    out: ReportOptions,
    /// Save guest RAM below 640 KiB at the end, for `vmirom trace report --mem FILE`.
    #[arg(long, value_name = "FILE")]
    save_mem: Option<PathBuf>,
    /// No live view: only the final report.
    #[arg(short, long)]
    quiet: bool,
    /// Further QEMU arguments, passed verbatim (after `--`).
    #[arg(last = true, value_name = "QEMU ARGS")]
    qemu_args: Vec<OsString>,
}

/// Parses a positive number of seconds (`0.2`, `5`).
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    if !(0.01..=1e7).contains(&v) {
        return Err(format!("{s:?}: expected 0.01 to 10000000 seconds"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

/// QEMU options the tool sets itself, and the option that replaces each.
const OWN_OPTIONS: [(&str, &str); 5] = [
    ("m", "--memory"),
    (
        "machine",
        "nothing: the machine option carries the shared RAM backend",
    ),
    (
        "M",
        "nothing: the machine option carries the shared RAM backend",
    ),
    ("accel", "--accel"),
    ("enable-kvm", "--accel kvm"),
];

/// Rejects QEMU arguments that would fight the tool's own command line.
fn check_qemu_args(args: &[OsString], kernel: bool) -> Result<(), CliError> {
    for arg in args {
        let Some(s) = arg.to_str() else { continue };
        let name = s.strip_prefix("--").or_else(|| s.strip_prefix('-'));
        let Some(name) = name else { continue };
        if let Some((_, instead)) = OWN_OPTIONS.iter().find(|(o, _)| *o == name) {
            return Err(CliError(format!(
                "QEMU argument {s} is set by vmirom trace run; use {instead}"
            )));
        }
        if kernel && matches!(name, "kernel" | "initrd" | "append") {
            return Err(CliError(format!(
                "QEMU argument {s} together with --kernel: use --kernel, --initrd and --append, \
                 or pass all three after `--`"
            )));
        }
    }
    Ok(())
}

/// Checks everything that can be checked before QEMU starts; the ROM's build id if it has a
/// vmirom manifest, and the kernel symbols if any were given.
fn preflight(a: &RunArgs) -> Result<(Option<u32>, Option<Symbols>), CliError> {
    files::check(&a.rom, &Expect::QEMU_ROM)?;
    let manifest = rom_manifest(&a.rom)?;
    let build_id = match manifest {
        Some(m) if !m.backend.starts_with("trace(") => {
            return Err(CliError(format!(
                "{} is not a trace ROM (its manifest names the backend `{}`), so no trace area \
                 would appear: build one with `vmirom build --trace`",
                a.rom.display(),
                m.backend
            )));
        }
        Some(m) => Some(m.build_id),
        None => {
            eprintln!(
                "vmirom: note: {} has no vmirom manifest: the trace area's build id cannot be \
                 checked against it",
                a.rom.display()
            );
            None
        }
    };
    for (p, what, holds) in [
        (&a.kernel, "--kernel", "a kernel image"),
        (&a.initrd, "--initrd", "an initrd image"),
    ] {
        if let Some(p) = p {
            files::check(p, &Expect::for_qemu(what, holds))?;
        }
    }
    if a.accel == AccelName::Kvm {
        vmi_harness::engine::qemu_kvm_available()
            .map_err(|why| CliError(format!("--accel kvm: {why} (use --accel tcg)")))?;
    }
    check_qemu_args(&a.qemu_args, a.kernel.is_some())?;
    Ok((build_id, a.out.symbols()?))
}

/// The QEMU configuration for the arguments.
fn qemu_config(a: &RunArgs) -> QemuConfig {
    let mut extra_args: Vec<OsString> = Vec::new();
    if let Some(p) = &a.initrd {
        extra_args.extend(["-initrd".into(), p.clone().into_os_string()]);
    }
    if let Some(s) = &a.append {
        extra_args.extend(["-append".into(), s.into()]);
    }
    extra_args.extend(a.qemu_args.iter().cloned());
    QemuConfig {
        rom: Some(a.rom.clone()),
        kernel: a.kernel.clone(),
        accel: match a.accel {
            AccelName::Tcg => Accel::Tcg,
            AccelName::Kvm => Accel::Kvm,
        },
        memory_mib: a.memory,
        // The session is driven here (run_bounded's limits are not used): no limit by default.
        timeout: a
            .timeout
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX))),
        idle_timeout: None,
        console: wants_console(&extra_args),
        extra_args,
        shared_ram: true,
    }
}

/// Whether QEMU arguments put a chardev on stdio (`-serial stdio`, `-serial mon:stdio`,
/// `-chardev stdio,…`): QEMU then needs the terminal.
fn wants_console(args: &[OsString]) -> bool {
    args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == "stdio" || a.starts_with("stdio,") || a.ends_with(":stdio")
    })
}

/// Set by the first Ctrl-C.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; the default disposition makes a second Ctrl-C end
    // the process at once.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Turns the first Ctrl-C into [`INTERRUPTED`] (QEMU, in the same process group, gets it too
/// and stops; vmirom then reports).
fn catch_ctrl_c() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic and calls signal(), both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// How QEMU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// The guest wrote a value to `isa-debug-exit`.
    GuestExit,
    /// QEMU exited by itself (guest power-off or reset, or a QEMU error).
    Exited,
    /// A signal vmirom did not send ended QEMU.
    Signal,
    /// Killed at `--timeout`.
    Timeout,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// Stopped by vmirom: SeaBIOS finished its option-ROM scan and moved on to booting, and no
    /// trace area had appeared (it never will: the ROM's init runs during that scan).
    NoArea,
}

/// How QEMU ended, for the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QemuEnd {
    /// How.
    pub how: How,
    /// QEMU's exit code when it exited by itself.
    pub exit_code: Option<i32>,
    /// The value the guest wrote to `isa-debug-exit` (QEMU's exit code is `value * 2 + 1`).
    pub guest_exit_value: Option<u8>,
    /// Seconds QEMU ran.
    pub wall_secs: f64,
}

impl QemuEnd {
    /// From what the session saw; `stopped` is why vmirom stopped QEMU itself, if it did.
    fn new(stopped: Option<How>, run: &QemuRun) -> QemuEnd {
        // Exit code 1 is both "the guest wrote 0" and QEMU's own failure; QEMU says why then.
        let qemu_failed = run.exit_code == Some(1) && !run.stderr.trim().is_empty();
        let guest_exit_value = if stopped.is_none() && !qemu_failed {
            run.guest_exit_value()
        } else {
            None
        };
        let how = stopped.unwrap_or(match (run.exit_code, guest_exit_value) {
            (_, Some(_)) => How::GuestExit,
            (Some(_), None) => How::Exited,
            (None, None) => How::Signal,
        });
        QemuEnd {
            how,
            exit_code: if stopped.is_none() {
                run.exit_code
            } else {
                None
            },
            guest_exit_value,
            wall_secs: run.wall.as_secs_f64(),
        }
    }

    /// One line for a person.
    fn describe(&self, timeout: Option<Duration>) -> String {
        let after = format!("QEMU ran {:.1} s", self.wall_secs);
        match (self.how, self.exit_code, self.guest_exit_value) {
            (How::GuestExit, Some(c), Some(v)) => {
                format!("{after}: the guest wrote {v} to isa-debug-exit (QEMU exit code {c})")
            }
            (How::Exited, Some(0), _) => {
                format!("{after}: QEMU exited with code 0 (the guest powered off or reset)")
            }
            (How::Exited, Some(c), _) => format!("{after}: QEMU exited with code {c}"),
            (How::Timeout, _, _) => format!(
                "{after}: killed at the --timeout of {} s",
                timeout.map_or(0.0, |t| t.as_secs_f64())
            ),
            (How::Interrupted, _, _) => format!("{after}: stopped by Ctrl-C"),
            (How::NoArea, _, _) => format!(
                "{after}: stopped by vmirom once SeaBIOS was booting with no trace area in RAM"
            ),
            _ => format!("{after}: QEMU was killed by a signal"),
        }
    }
}

/// The JSON `trace run --json` prints: the same fields as `trace report --json`, `qemu`, and
/// the live view's readings.
#[derive(Debug, serde::Serialize)]
struct RunReport<'a> {
    #[serde(flatten)]
    report: &'a Report,
    qemu: &'a QemuEnd,
    intervals: &'a [Interval],
}

/// Where and how the live view is drawn.
#[derive(Debug, Clone, Copy)]
struct View {
    /// On stderr (the final report is JSON on stdout) rather than stdout.
    stderr: bool,
    /// A terminal: redraw the screen in place; otherwise append blocks.
    redraw: bool,
}

impl View {
    fn show(&self, text: &str) {
        let text = if self.redraw {
            format!("\x1b[H\x1b[2J{text}")
        } else {
            text.to_string()
        };
        // The live view is best effort: a closed pipe must not end the run.
        if self.stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(text.as_bytes());
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
    }
}

/// The running guest as the live view sees it.
#[derive(Debug)]
struct Watch<'a> {
    rom: &'a Path,
    build_id: Option<u32>,
    view: Option<View>,
    pid: u32,
    /// When the counters were last read and what they were (empty: no area then).
    prev: (Duration, Vec<Counter>),
    /// Where the area was found, once it was.
    seen: Option<u32>,
    /// The last waiting message shown (append mode shows each once).
    waiting: Option<String>,
    /// Every reading's rates.
    intervals: Vec<Interval>,
}

impl Watch<'_> {
    /// The interval from the last reading to the end of the run (`end` after QEMU started),
    /// read from the final RAM, if it lasted 10 ms or more.
    fn last_interval(&mut self, counters: &[Counter], end: Duration) {
        let dt = end.saturating_sub(self.prev.0);
        if dt >= Duration::from_millis(10) {
            let lines = live::lines(&self.prev.1, counters, dt);
            self.intervals.push(Interval::of(end.as_secs_f64(), &lines));
        }
    }

    fn header(&self, at: Duration) -> String {
        let t = at.as_secs_f64();
        if self.view.is_some_and(|v| v.redraw) {
            format!(
                "vmirom trace run {} - QEMU pid {} - {t:.1} s - Ctrl-C stops the guest",
                self.rom.display(),
                self.pid
            )
        } else {
            format!("--- t+{t:.1} s ---")
        }
    }

    /// One reading of guest RAM taken `at` after QEMU started. Errors: the area belongs to
    /// another ROM.
    fn tick(&mut self, ram: Result<Vec<u8>, HarnessError>, at: Duration) -> Result<(), CliError> {
        let found = match ram {
            Ok(ram) => area::find(&ram),
            // QEMU has not created the RAM file yet.
            Err(_) => Err(AreaError::NotFound { len: 0 }),
        };
        match found {
            Ok(a) => {
                if let Some(id) = self.build_id {
                    check_build_id(&a, self.rom, id)?;
                }
                self.seen = Some(a.phys);
                self.waiting = None;
                let lines = live::lines(&self.prev.1, &a.counters, at.saturating_sub(self.prev.0));
                self.intervals.push(Interval::of(at.as_secs_f64(), &lines));
                if let Some(v) = self.view {
                    v.show(&live::render(&self.header(at), &lines));
                }
                self.prev = (at, a.counters);
            }
            Err(e) => {
                let why = match (e, self.seen) {
                    (AreaError::NotFound { .. }, None) => {
                        "waiting for the trace area (SeaBIOS has not run the ROM's init yet)"
                            .to_string()
                    }
                    (AreaError::NotFound { .. }, Some(phys)) => {
                        format!("the trace area at {phys:#x} is gone from guest RAM")
                    }
                    (e, _) => format!("the trace area cannot be read yet: {e}"),
                };
                // Keep the last good reading: the next rate spans the gap.
                if self.seen.is_none() {
                    self.prev = (at, Vec::new());
                }
                if let Some(v) = self.view {
                    if v.redraw {
                        v.show(&format!("{}\n{why}\n", self.header(at)));
                    } else if self.waiting.as_deref() != Some(why.as_str()) {
                        v.show(&format!("{} {why}\n", self.header(at)));
                    }
                }
                self.waiting = Some(why);
            }
        }
        Ok(())
    }
}

/// Prints `msg` as vmirom's error and how QEMU ended; exit code 1.
fn failed(msg: &str, end: &str) -> ExitCode {
    eprintln!("vmirom: {msg}");
    eprintln!("vmirom: {end}");
    ExitCode::from(1)
}

/// Why no area was found at the end, with what the run tells about the cause.
fn no_area_message(rom: &Path, seen: Option<u32>, run: &QemuRun) -> String {
    if let Some(phys) = seen {
        return format!(
            "the trace area at {phys:#x} was there while the guest ran but is gone from guest \
             RAM at the end: the guest or its firmware overwrote conventional memory"
        );
    }
    let inits: Vec<&str> = run
        .seabios_log
        .lines()
        .filter(|l| l.starts_with("Running option rom at"))
        .collect();
    let bios = if run.seabios_log.trim().is_empty() {
        "SeaBIOS never started (QEMU's messages are above)".to_string()
    } else if inits.is_empty() {
        "SeaBIOS ran no option ROM's init (its log has no \"Running option rom at\" line)"
            .to_string()
    } else {
        format!("SeaBIOS's log: {}", inits.join(", "))
    };
    format!(
        "no trace area appeared in guest RAM (no \"VMITRACE\" signature at any 1 KiB boundary \
         below 0xA0000): {} may not be a trace ROM (build one with `vmirom build --trace`), or \
         SeaBIOS did not run its 16-bit init; {bios}",
        rom.display()
    )
}

/// Whether SeaBIOS's log shows POST past the option-ROM scan (it is booting something, or
/// found nothing to boot): every option ROM's init has run by then.
fn post_done(seabios_log: &str) -> bool {
    seabios_log
        .lines()
        .any(|l| l.starts_with("Booting from ") || l.starts_with("No bootable device"))
}

/// Runs the command.
pub fn run(a: &RunArgs) -> Result<ExitCode, CliError> {
    let (build_id, symbols) = preflight(a)?;
    let cfg = qemu_config(a);
    catch_ctrl_c();
    let mut s = Session::spawn(&cfg).map_err(|e| CliError(e.to_string()))?;
    // A guest console on stdout: the live view moves to stderr and only appends.
    let to_stderr = a.json || cfg.console;
    let live_stream_is_terminal = !cfg.console
        && if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
    let mut w = Watch {
        rom: &a.rom,
        build_id,
        view: (!a.quiet).then_some(View {
            stderr: to_stderr,
            redraw: live_stream_is_terminal,
        }),
        pid: s.pid(),
        prev: (Duration::ZERO, Vec::new()),
        seen: None,
        waiting: None,
        intervals: Vec::new(),
    };
    let mut next = a.interval;
    let mut foreign = None;
    let stopped = loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break Some(How::Interrupted);
        }
        let now = s.elapsed();
        if a.timeout.is_some_and(|t| now >= t) {
            break Some(How::Timeout);
        }
        // (the log first: a RAM reading taken after POST was seen done is final)
        let booted = w.seen.is_none() && post_done(&s.seabios_log());
        if booted || now >= next {
            let ram = s.read_ram(0..CONVENTIONAL_END);
            let none = ram
                .as_ref()
                .is_ok_and(|r| matches!(area::find(r), Err(AreaError::NotFound { .. })));
            if booted && none {
                break Some(How::NoArea);
            }
            if let Err(e) = w.tick(ram, now) {
                foreign = Some(e);
                break None;
            }
            next = (next + a.interval).max(now);
        }
        let until = a.timeout.map_or(next, |t| t.min(next));
        let wait = until.saturating_sub(now).min(Duration::from_millis(100));
        if s.wait_timeout(wait)
            .map_err(|e| CliError(e.to_string()))?
            .is_some()
        {
            break INTERRUPTED
                .load(Ordering::SeqCst)
                .then_some(How::Interrupted);
        }
    };
    // finish() kills QEMU if it still runs (a timeout, Ctrl-C, a foreign area).
    let run = s.finish();
    let end = QemuEnd::new(stopped, &run);
    let ended = end.describe(a.timeout);
    if !run.stderr.trim().is_empty() {
        eprint!("{}", run.stderr);
    }
    if let Some(e) = foreign {
        return Ok(failed(&e.0, &ended));
    }
    if let (Some(p), Some(ram)) = (&a.save_mem, &run.conventional) {
        crate::cmd::write(p, ram)?;
    }
    let Some(ram) = &run.conventional else {
        let why = if run.seabios_log.trim().is_empty() {
            "QEMU failed to start the guest: SeaBIOS never started and the guest's RAM was never \
             created (QEMU's messages are above)"
        } else {
            "the guest's RAM could not be read after the run"
        };
        return Ok(failed(why, &ended));
    };
    let found = match area::find(ram) {
        Ok(found) => found,
        Err(AreaError::NotFound { .. }) => {
            return Ok(failed(&no_area_message(&a.rom, w.seen, &run), &ended));
        }
        Err(e) => return Ok(failed(&e.to_string(), &ended)),
    };
    if let Some(id) = build_id {
        if let Err(e) = check_build_id(&found, &a.rom, id) {
            return Ok(failed(&e.0, &ended));
        }
    }
    w.last_interval(&found.counters, run.wall);
    let r = build_report(found, symbols.as_ref(), &a.out.profile());
    super::write_outputs(&r, &a.out, symbols.as_ref(), &w.intervals)?;
    if let Some(p) = &a.timeline {
        crate::cmd::write(p, timeline(&w.intervals, &r).as_bytes())?;
    }
    if a.json {
        crate::cmd::print_json(&RunReport {
            report: &r,
            qemu: &end,
            intervals: &w.intervals,
        })?;
        if !a.quiet {
            eprintln!("{ended}");
        }
    } else {
        print!("{}", table(&r, a.out.top));
        println!("{ended}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls shown in the timeline: the busiest by total.
const TIMELINE_CALLS: usize = 8;

/// The timeline chart: calls per second of the [`TIMELINE_CALLS`] busiest calls, per interval.
fn timeline(intervals: &[Interval], r: &Report) -> String {
    let mut busiest: Vec<&super::CallLine> = r.calls.iter().collect();
    busiest.sort_by(|a, b| b.count.cmp(&a.count).then(a.call.cmp(&b.call)));
    let series: Vec<crate::svg::Series> = busiest
        .iter()
        .take(TIMELINE_CALLS)
        .map(|c| crate::svg::Series {
            label: c.name.to_string(),
            points: intervals
                .iter()
                .map(|i| {
                    let rate = i.rates.iter().find(|x| x.0 == c.call).map_or(0.0, |x| x.1);
                    (i.secs, rate)
                })
                .collect(),
        })
        .collect();
    crate::svg::timeline("VMI calls per second over the run", &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_qemu_arguments_are_checked() {
        assert_eq!(parse_secs("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_secs(" 5 "), Ok(Duration::from_secs(5)));
        for bad in ["0", "-1", "nan", "inf", "1e9", "soon"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(check_qemu_args(&args(&["-serial", "stdio", "-smp", "2"]), true).is_ok());
        assert!(check_qemu_args(&args(&["-kernel", "bzImage"]), false).is_ok());
        let e = check_qemu_args(&args(&["-m", "512"]), false).unwrap_err();
        assert!(e.0.contains("--memory"), "{e}");
        assert!(check_qemu_args(&args(&["--machine", "q35"]), false).is_err());
        assert!(check_qemu_args(&args(&["-enable-kvm"]), false).is_err());
        assert!(check_qemu_args(&args(&["-append", "x"]), true).is_err());
        for (v, console) in [
            (&["-serial", "stdio"][..], true),
            (&["-serial", "mon:stdio"], true),
            (&["-chardev", "stdio,id=c0"], true),
            (&["-serial", "file:console.log"], false),
            (&["-serial", "file:stdio.log"], false),
        ] {
            assert_eq!(wants_console(&args(v)), console, "{v:?}");
        }
    }

    fn run_with(exit_code: Option<i32>, stderr: &str) -> QemuRun {
        QemuRun {
            exit_code,
            timed_out: false,
            idle_timed_out: false,
            debugcon: Vec::new(),
            seabios_log: String::new(),
            stderr: stderr.into(),
            wall: Duration::from_millis(1500),
            conventional: None,
        }
    }

    #[test]
    fn post_is_done_once_seabios_boots() {
        let scan = "Scan for option roms\nRunning option rom at c000:0003\n";
        assert!(!post_done(scan));
        assert!(post_done(&format!("{scan}Booting from ROM...\n")));
        assert!(post_done(&format!("{scan}No bootable device.\n")));
        assert!(!post_done("xBooting from ROM"));
    }

    #[test]
    fn how_qemu_ended_is_told_apart() {
        let e = QemuEnd::new(None, &run_with(Some(0x11), ""));
        assert_eq!((e.how, e.guest_exit_value), (How::GuestExit, Some(8)));
        assert_eq!(
            e.describe(None),
            "QEMU ran 1.5 s: the guest wrote 8 to isa-debug-exit (QEMU exit code 17)"
        );
        let e = QemuEnd::new(
            None,
            &run_with(Some(1), "qemu-system-i386: -foo: invalid option"),
        );
        assert_eq!((e.how, e.guest_exit_value), (How::Exited, None));
        assert_eq!(e.describe(None), "QEMU ran 1.5 s: QEMU exited with code 1");
        let e = QemuEnd::new(None, &run_with(Some(0), ""));
        assert!(e.describe(None).contains("powered off or reset"));
        let e = QemuEnd::new(Some(How::Timeout), &run_with(None, ""));
        assert_eq!(
            e.describe(Some(Duration::from_secs(2))),
            "QEMU ran 1.5 s: killed at the --timeout of 2 s"
        );
        let e = QemuEnd::new(None, &run_with(None, ""));
        assert_eq!(e.how, How::Signal);
        let e = QemuEnd::new(Some(How::Interrupted), &run_with(Some(0), ""));
        assert_eq!((e.how, e.exit_code), (How::Interrupted, None));
    }

    #[test]
    fn the_no_area_message_says_what_the_run_shows() {
        let rom = Path::new("t.rom");
        let mut r = run_with(Some(1), "qemu: bad");
        assert!(no_area_message(rom, None, &r).contains("SeaBIOS never started"));
        r.seabios_log = "SeaBIOS (version 1.16)\nScan for option roms\n".into();
        let m = no_area_message(rom, None, &r);
        assert!(m.contains("no trace area appeared") && m.contains("t.rom may not be a trace ROM"));
        assert!(m.contains("ran no option ROM's init"), "{m}");
        r.seabios_log.push_str("Running option rom at c000:0003\n");
        assert!(no_area_message(rom, None, &r).contains("Running option rom at c000:0003"));
        assert!(no_area_message(rom, Some(0x9_f000), &r).contains("0x9f000 was there"));
    }
}
