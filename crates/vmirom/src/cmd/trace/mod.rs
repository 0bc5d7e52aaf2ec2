//! `vmirom trace report|run`: read a trace ROM's counters out of guest RAM — from a RAM image
//! after the fact (`report`), or from a QEMU it starts and watches (`run`). Both decode the area
//! the same way and print the same report (table, JSON, SVG) with the functions here.

mod live;
pub mod run;

use super::CliError;
use crate::svg;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmi_rom::manifest::Manifest;
use vmi_rom::trace::area::{self, Area};

/// `vmirom trace` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Decode the trace area from a guest-RAM image (QEMU memory-backend-file or pmemsave dump).
    Report(ReportArgs),
    /// Boot a guest under QEMU with a trace ROM, show per-call rates live, report at the end.
    Run(run::RunArgs),
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
    /// Also write a bar chart of counts and time per call.
    #[arg(long)]
    svg: Option<PathBuf>,
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

/// Builds the report from an area.
pub fn build_report(area: Area) -> Report {
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
    Report {
        area,
        calls,
        total_count,
        total_cycles,
    }
}

/// The report as a table (one line per call made, then the totals).
pub fn table(r: &Report) -> String {
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
    o
}

/// Writes the bar chart of counts and time per call to `path`.
pub fn write_svg(r: &Report, path: &Path) -> Result<(), CliError> {
    let bars: Vec<svg::Bar> = r
        .calls
        .iter()
        .map(|c| svg::Bar {
            label: format!("{} ({})", c.name, c.call),
            count: c.count,
            cycles: c.cycles,
        })
        .collect();
    super::write(
        path,
        svg::chart("VMI calls: count and ROM time per call", &bars).as_bytes(),
    )
}

fn report(a: &ReportArgs) -> Result<ExitCode, CliError> {
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
    let r = build_report(found);
    if let Some(p) = &a.svg {
        write_svg(&r, p)?;
    }
    if a.json {
        super::print_json(&r)?;
    } else {
        print!("{}", table(&r));
    }
    Ok(ExitCode::SUCCESS)
}
