//! `vmirom build --backend native|kvm [-o FILE] [...]`: generate a VMI ROM.

use super::CliError;
use std::path::PathBuf;
use std::process::ExitCode;
use vmi_rom::audit::{RoutineStats, audit};
use vmi_rom::generate::{BuildOptions, Generated, generate};
use vmi_rom::kvm::Kvm;
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};
use vmi_rom::{Backend, GenError};

fn parse_ring(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 || (n.is_power_of_two() && n <= 1 << 16) {
        Ok(n)
    } else {
        Err(format!(
            "{n}: the ring size must be 0 or a power of two up to 65536"
        ))
    }
}

fn parse_sites(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 || (n.is_power_of_two() && n <= area::MAX_SITES) {
        Ok(n)
    } else {
        Err(format!(
            "{n}: the call-site slots must be 0 or a power of two up to {}",
            area::MAX_SITES
        ))
    }
}

/// Which backend generates the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendName {
    /// The native instructions (hardware, or a hypervisor that traps them).
    Native,
    /// KVM's paravirtual clock, steal time, PV EOI and no-op I/O delays, found at Init; the
    /// native behaviour anywhere else.
    Kvm,
}

/// Arguments of `vmirom build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backend.
    #[arg(long, value_enum, default_value = "native")]
    backend: BackendName,
    /// Output ROM file.
    #[arg(short, long, default_value = "vmi.rom")]
    output: PathBuf,
    /// Manufacturer string ($PnP), printed by Linux.
    #[arg(long)]
    vendor: Option<String>,
    /// Product string ($PnP), printed by Linux.
    #[arg(long)]
    product: Option<String>,
    /// License string (Linux accepts exactly "GPL" or "GPL v2").
    #[arg(long)]
    license: Option<String>,
    /// VMI header virtual_top (0 = no hole).
    #[arg(long, value_parser = super::parse_u32)]
    virtual_top: Option<u32>,
    /// PCI ids VVVV:DDDD in hex.
    #[arg(long, value_parser = super::pack::parse_pci_id)]
    pci_id: Option<(u16, u16)>,
    /// ROM code revision MAJOR.MINOR.
    #[arg(long, value_parser = super::pack::parse_version)]
    version: Option<(u8, u8)>,
    /// Wrap the backend with the trace backend (counts and times every call).
    #[arg(long)]
    trace: bool,
    /// With --trace: also keep a ring of the last N events (a power of two; 0 = none).
    #[arg(long, default_value_t = 0, value_parser = parse_ring)]
    ring: u32,
    /// With --trace: slots of the call-site table, counts and cycles per (call, caller) (a
    /// power of two up to 1024, 32 bytes each; 0 = none; default 1024). Sites that find no
    /// slot are counted per call as overflow.
    #[arg(long, value_name = "N", value_parser = parse_sites)]
    sites: Option<u32>,
    /// Print the layout as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
}

/// Generates `inner`, wrapped by the trace backend with `--trace`.
fn build<B: Backend>(inner: B, a: &Args, opts: &BuildOptions) -> Result<Generated, GenError> {
    if a.trace {
        generate(
            &Trace {
                inner,
                ring: a.ring,
                sites: a.sites.unwrap_or(area::DEFAULT_SITES),
            },
            opts,
        )
    } else {
        generate(&inner, opts)
    }
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    let d = BuildOptions::default();
    let opts = BuildOptions {
        vendor: a.vendor.clone().unwrap_or(d.vendor),
        product: a.product.clone().unwrap_or(d.product),
        license: a.license.clone().unwrap_or(d.license),
        virtual_top: a.virtual_top.unwrap_or(d.virtual_top),
        pci_id: a.pci_id.unwrap_or(d.pci_id),
        version: a.version.unwrap_or(d.version),
        class_code: d.class_code,
    };
    if a.ring != 0 && !a.trace {
        return Err(CliError("--ring needs --trace".into()));
    }
    if a.sites.is_some() && !a.trace {
        return Err(CliError("--sites needs --trace".into()));
    }
    let g = match a.backend {
        BackendName::Native => build(Native, a, &opts),
        BackendName::Kvm => build(Kvm, a, &opts),
    }
    .map_err(|e| CliError(e.to_string()))?;
    super::write(&a.output, &g.image)?;
    let stats = audit(&g.image).routines;
    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            file: String,
            size: usize,
            #[serde(flatten)]
            layout: &'a Generated,
            routines: &'a [RoutineStats],
        }
        return super::print_json(&Out {
            file: a.output.display().to_string(),
            size: g.image.len(),
            layout: &g,
            routines: &stats,
        })
        .map(|()| ExitCode::SUCCESS);
    }
    println!(
        "wrote {}: {} bytes, backend {}, build id {:#010x}; audit passed",
        a.output.display(),
        g.image.len(),
        g.backend,
        g.build_id
    );
    if !a.quiet {
        print_table(&g, &stats);
    }
    print_summary(&g, &stats);
    Ok(ExitCode::SUCCESS)
}

fn print_table(g: &Generated, stats: &[RoutineStats]) {
    println!(
        "{:>3}  {:<20} {:<9} {:>7} {:>5} {:>5} {:>7}  note",
        "#", "call", "answer", "offset", "bytes", "stack", "path"
    );
    for c in &g.calls {
        let s = stats.iter().find(|s| s.call == Some(c.number));
        let (stack, path) = s.map_or((String::new(), String::new()), |s| {
            (
                s.max_stack.to_string(),
                format!("{}..{}", s.min_path, s.max_path),
            )
        });
        let offset = if c.offset == 0 {
            String::new()
        } else {
            format!("{:#06x}", c.offset)
        };
        println!(
            "{:>3}  {:<20} {:<9} {:>7} {:>5} {:>5} {:>7}  {}",
            c.number,
            c.name,
            c.answer.reloc().name(),
            offset,
            if c.size == 0 {
                String::new()
            } else {
                c.size.to_string()
            },
            stack,
            path,
            c.note
        );
    }
}

fn print_summary(g: &Generated, stats: &[RoutineStats]) {
    let count = |a: vmi_rom::Answer| g.calls.iter().filter(|c| c.answer == a).count();
    let mut paths: Vec<u32> = stats
        .iter()
        .filter(|s| s.call.is_some())
        .map(|s| s.max_path)
        .collect();
    paths.sort_unstable();
    let median = paths.get(paths.len() / 2).copied().unwrap_or(0);
    let max_stack = stats.iter().map(|s| s.max_stack).max().unwrap_or(0);
    println!(
        "calls: {} CALL_REL, {} JUMP_REL, {} NOP, {} NONE; path length (longest path per call) min/median/max {}/{}/{} instructions; max stack {} bytes",
        count(vmi_rom::Answer::Call),
        count(vmi_rom::Answer::Jump),
        count(vmi_rom::Answer::Nop),
        count(vmi_rom::Answer::None),
        paths.first().copied().unwrap_or(0),
        median,
        paths.last().copied().unwrap_or(0),
        max_stack
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sites_option_accepts_what_the_area_allows_and_its_help_is_true() {
        assert_eq!(parse_sites("0"), Ok(0));
        assert_eq!(parse_sites("16"), Ok(16));
        assert_eq!(parse_sites("1024"), Ok(1024));
        for bad in ["12", "2048", "-1", "many"] {
            assert!(parse_sites(bad).is_err(), "{bad}");
        }
        // The --sites help names these numbers.
        assert_eq!((area::MAX_SITES, area::DEFAULT_SITES), (1024, 1024));
    }
}
