//! `vmirom trace report|run`: read a trace ROM's counters out of guest RAM — from a RAM image
//! after the fact (`report`), or from a QEMU it starts and watches (`run`). Both decode the area
//! the same way and print the same report (table, JSON, SVG, Chrome trace, folded stacks) with
//! the functions here; [`sites`] names the call sites with kernel symbols.

mod chrome;
mod live;
pub mod run;
mod sites;

use super::CliError;
use crate::svg;
use crate::symbols::Symbols;
use sites::{Profile, SortKey};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmi_rom::manifest::Manifest;
use vmi_rom::trace::area::{self, Area};

/// `vmirom trace` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decode the trace area from a guest-RAM image (QEMU memory-backend-file or pmemsave dump).
    Report(Box<ReportArgs>),
    /// Boot a guest under QEMU with a trace ROM, show per-call rates live, report at the end.
    Run(Box<run::RunArgs>),
}

/// Arguments of `vmirom trace report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Guest RAM image: byte 0 is physical address 0.
    #[arg(long)]
    mem: PathBuf,
    /// The trace ROM, to check the area's build id against.
    #[arg(long)]
    rom: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    out: ReportOptions,
}

/// What `trace report` and `trace run` both show and write, besides the per-call table.
#[derive(Debug, Default, clap::Args)]
pub struct ReportOptions {
    /// The guest kernel's vmlinux (ELF symbol table; file:line from its DWARF when it has
    /// one): name each call site `function+0xoff` and total the calls per kernel function.
    #[arg(long, value_name = "FILE", conflicts_with = "system_map")]
    vmlinux: Option<PathBuf>,
    /// The guest kernel's System.map, instead of --vmlinux.
    #[arg(long, value_name = "FILE")]
    system_map: Option<PathBuf>,
    /// Who calls X: only the call sites and functions making this call (a name, any case, or
    /// a number).
    #[arg(long, value_name = "NAME|NUMBER", value_parser = sites::parse_call)]
    call: Option<u32>,
    /// Order of call sites and functions.
    #[arg(long, value_enum, default_value = "count")]
    sort: SortKey,
    /// Call sites and functions listed in the table (0: all; --json always has all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    top: usize,
    /// Also write a bar chart of counts and time per call.
    #[arg(long, value_name = "OUT")]
    svg: Option<PathBuf>,
    /// Log-scale bars in the --svg chart (calls and cycles spanning several decades).
    #[arg(long, requires = "svg")]
    log_scale: bool,
    /// Also write the ring's events (and `trace run`'s call rates) as Chrome trace-event JSON,
    /// for Perfetto or chrome://tracing.
    #[arg(long, value_name = "OUT")]
    chrome_trace: Option<PathBuf>,
    /// The guest's TSC frequency in MHz, to put --chrome-trace times in microseconds
    /// (default: one TSC cycle is shown as one microsecond).
    #[arg(long, value_name = "MHZ", value_parser = chrome::parse_mhz, requires = "chrome_trace")]
    tsc_mhz: Option<f64>,
    /// Also write folded stacks (`call;function count` lines) for flame-graph tools.
    #[arg(long, value_name = "OUT")]
    folded: Option<PathBuf>,
}

impl ReportOptions {
    /// The kernel symbols named by --vmlinux or --system-map (loaded before QEMU starts, so
    /// a bad file is a usage error at once).
    pub fn symbols(&self) -> Result<Option<Symbols>, CliError> {
        match (&self.vmlinux, &self.system_map) {
            (Some(p), _) => Symbols::load_elf(p).map(Some),
            (None, Some(p)) => Symbols::load_system_map(p).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// What the profile needs.
    fn profile(&self) -> ProfileOptions {
        ProfileOptions {
            call: self.call,
            sort: self.sort,
        }
    }
}

/// How the call-site profile is cut.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileOptions {
    /// Only this call's sites and functions.
    pub call: Option<u32>,
    /// Their order.
    pub sort: SortKey,
}

/// Runs the command.
pub fn run(c: &Command) -> Result<ExitCode, CliError> {
    match c {
        Command::Report(a) => report(a),
        Command::Run(a) => run::run(a),
    }
}

/// Reads the part of a RAM image a trace area can live in (conventional memory).
pub fn read_low_ram(path: &Path) -> Result<Vec<u8>, CliError> {
    let e = super::files::Expect::RAM_IMAGE;
    super::files::read_prefix(path, &e, area::CONVENTIONAL_END as u64)
}

/// The vmirom manifest of the ROM file at `rom`: `None` when the image has none (not built by
/// vmirom); an error when the file cannot be read or the manifest is damaged.
pub fn rom_manifest(rom: &Path) -> Result<Option<Manifest>, CliError> {
    let img = super::read(rom)?;
    Manifest::read(&img)
        .transpose()
        .map_err(|e| CliError(format!("{}: {e}", rom.display())))
}

/// Ok if the area was written by the ROM whose build id is `rom_build_id`; otherwise the
/// message that says which build wrote it.
pub fn check_build_id(found: &Area, rom: &Path, rom_build_id: u32) -> Result<(), CliError> {
    if found.build_id == rom_build_id {
        return Ok(());
    }
    Err(CliError(format!(
        "the trace area at {:#x} was written by build {:#010x}, but {} is build {:#010x}",
        found.phys,
        found.build_id,
        rom.display(),
        rom_build_id
    )))
}

/// One call's line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallLine {
    /// Call number.
    pub call: u32,
    /// Call name.
    pub name: &'static str,
    /// Calls.
    pub count: u64,
    /// Total TSC cycles.
    pub cycles: u64,
    /// Mean cycles per call.
    pub mean_cycles: u64,
    /// Share of all cycles spent in the ROM, percent.
    pub share: f64,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The decoded area.
    pub area: Area,
    /// Calls made at least once, by number.
    pub calls: Vec<CallLine>,
    /// All calls.
    pub total_count: u64,
    /// All cycles.
    pub total_cycles: u64,
    /// Where the calls come from: call sites, functions, the unattributed.
    #[serde(flatten)]
    pub profile: Profile,
}

/// The name of call `n` (`?` for a slot past the ABI's table).
pub fn call_name(n: u32) -> &'static str {
    vmi_abi::call(n).map_or("?", |s| s.name)
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Builds the report from an area, naming its call sites with `symbols`.
pub fn build_report(area: Area, symbols: Option<&Symbols>, opts: &ProfileOptions) -> Report {
    let total_cycles: u64 = area.counters.iter().map(|c| c.cycles).sum();
    let total_count: u64 = area.counters.iter().map(|c| c.count).sum();
    let calls = area
        .counters
        .iter()
        .enumerate()
        .filter(|(_, c)| c.count > 0)
        .map(|(n, c)| CallLine {
            call: n as u32,
            name: call_name(n as u32),
            count: c.count,
            cycles: c.cycles,
            mean_cycles: c.cycles / c.count,
            share: percent(c.cycles, total_cycles),
        })
        .collect();
    let profile = sites::profile(&area, symbols, opts.call, opts.sort);
    Report {
        area,
        calls,
        total_count,
        total_cycles,
        profile,
    }
}

/// The report as a table (one line per call made, then the totals), then the busiest `top`
/// call sites and functions.
pub fn table(r: &Report, top: usize) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "trace area at {:#x} (ROM at {:#x}, build id {:#010x})",
        r.area.phys, r.area.rom_phys, r.area.build_id
    );
    let _ = writeln!(
        o,
        "{:>3}  {:<20} {:>12} {:>16} {:>10} {:>7}",
        "#", "call", "count", "cycles", "mean", "share"
    );
    for c in &r.calls {
        let _ = writeln!(
            o,
            "{:>3}  {:<20} {:>12} {:>16} {:>10} {:>6.1}%",
            c.call, c.name, c.count, c.cycles, c.mean_cycles, c.share
        );
    }
    let _ = writeln!(
        o,
        "total: {} calls, {} cycles in the ROM{}",
        r.total_count,
        r.total_cycles,
        if r.area.events_total > 0 {
            format!(
                ", {} events logged ({} kept)",
                r.area.events_total,
                r.area.events.len()
            )
        } else {
            String::new()
        }
    );
    o.push_str(&sites::table(&r.profile, &r.area, top));
    o
}

/// Writes the bar chart of counts and time per call to `path` (log-scale bars if `log`).
pub fn write_svg(r: &Report, path: &Path, log: bool) -> Result<(), CliError> {
    let bars: Vec<svg::Bar> = r
        .calls
        .iter()
        .map(|c| svg::Bar {
            label: format!("{} ({})", c.name, c.call),
            count: c.count,
            cycles: c.cycles,
        })
        .collect();
    let scale = if log {
        svg::Scale::Log
    } else {
        svg::Scale::Linear
    };
    super::write(
        path,
        svg::chart("VMI calls: count and ROM time per call", &bars, scale).as_bytes(),
    )
}

/// Writes the files `o` asks for: the SVG chart, the Chrome trace (with the `intervals` of a
/// run) and the folded stacks.
pub fn write_outputs(
    r: &Report,
    o: &ReportOptions,
    symbols: Option<&Symbols>,
    intervals: &[live::Interval],
) -> Result<(), CliError> {
    if let Some(p) = &o.svg {
        write_svg(r, p, o.log_scale)?;
    }
    if let Some(p) = &o.chrome_trace {
        let v = chrome::trace_events(r, symbols, intervals, o.tsc_mhz);
        let text =
            serde_json::to_string(&v).map_err(|e| CliError(format!("encoding JSON: {e}")))?;
        super::write(p, text.as_bytes())?;
    }
    if let Some(p) = &o.folded {
        super::write(p, sites::folded(&r.profile).as_bytes())?;
    }
    Ok(())
}

fn report(a: &ReportArgs) -> Result<ExitCode, CliError> {
    let symbols = a.out.symbols()?;
    let ram = read_low_ram(&a.mem)?;
    let found = area::find(&ram).map_err(|e| CliError(format!("{}: {e}", a.mem.display())))?;
    if let Some(rom) = &a.rom {
        let m = rom_manifest(rom)?.ok_or_else(|| {
            CliError(format!(
                "{}: no vmirom manifest (not a vmirom-built ROM)",
                rom.display()
            ))
        })?;
        check_build_id(&found, rom, m.build_id)?;
    }
    let r = build_report(found, symbols.as_ref(), &a.out.profile());
    write_outputs(&r, &a.out, symbols.as_ref(), &[])?;
    if a.json {
        super::print_json(&r)?;
    } else {
        print!("{}", table(&r, a.out.top));
    }
    Ok(ExitCode::SUCCESS)
}
