//! `vmirom test ROM [--engine E] [--no-bios-init] [--only CALLS] [--format table|json|tap|junit]`:
//! run every call for real and judge it. Exit 0 only if every implemented call passes (and,
//! for a trace ROM, its counts are exact), whatever the format. The formats live in
//! [`crate::report`]; on the kvm engine the JSON also carries VM exit counts per run and per
//! call. A ROM whose manifest names the kvm backend is held to kvmclock where the CPU offers
//! it ([`SuiteOptions::expect_kvmclock`]).

use super::CliError;
use super::files::{self, Expect};
use crate::report::{self, EngineRun, Format};
use std::path::PathBuf;
use std::process::ExitCode;
use vmi_abi::calls::NUM_CALLS;
use vmi_harness::engine::Engine;
use vmi_harness::suite::{SuiteOptions, SuiteReport, run_suite};
use vmi_rom::manifest::Manifest;
use vmi_rom::trace::area::{self, AreaError};

/// Arguments of `vmirom test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ROM file.
    rom: PathBuf,
    /// Where to run: qemu-tcg (works everywhere), qemu-kvm (hardware virtualization), kvm
    /// (vmirom's own KVM VMM: no BIOS image, but it runs the ROM's 16-bit init first as a
    /// BIOS does; no paging on kvm-pvm).
    #[arg(long, default_value = "qemu-tcg", value_parser = parse_engine)]
    engine: Engine,
    /// kvm engine: do not run the ROM's 16-bit init before the guest (the ROM is simply
    /// mapped, as a hypervisor that maps it itself presents it: no private RAM).
    #[arg(long)]
    no_bios_init: bool,
    /// kvm engine: give the guest no interrupt controller, as on a KVM without the in-kernel
    /// irqchip (by default the runner creates KVM's PICs, IOAPIC and local APIC where the
    /// host has them: the APIC calls, Halt and the LVTT alarms then run).
    #[arg(long)]
    no_irqchip: bool,
    /// Only these calls: numbers, ranges and names, comma separated (`17,29-32,CPUID`).
    #[arg(long, value_parser = parse_call_list)]
    only: Option<CallList>,
    /// How to print the result: a table, one JSON object, TAP version 13, or JUnit XML.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Short for --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    s.parse::<Engine>().map_err(|e| e.to_string())
}

/// Call numbers given as one argument (clap would read an `Option<Vec<_>>` as repeated
/// arguments, so the list is one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallList(pub Vec<u32>);

fn parse_call_list(s: &str) -> Result<CallList, String> {
    parse_calls(s).map(CallList)
}

/// Parses `17,29-32,CPUID` into call numbers.
pub fn parse_calls(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: u32 = a.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
            let b: u32 = b.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
            if a > b || b as usize >= vmi_abi::calls::NUM_CALLS {
                return Err(format!("{part:?}: expected a range within 0-73"));
            }
            out.extend(a..=b);
        } else if let Ok(n) = part.parse::<u32>() {
            if n as usize >= vmi_abi::calls::NUM_CALLS {
                return Err(format!("{n}: VMI calls are 0-73"));
            }
            out.push(n);
        } else {
            let c = vmi_abi::calls::call_by_name(part)
                .ok_or_else(|| format!("{part:?} is not a VMI call name or number"))?;
            out.push(u32::from(c.number));
        }
    }
    if out.is_empty() {
        return Err("no calls given".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Runs the command.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    // QEMU loads the file once per guest run: a regular, non-empty file.
    let image = files::read(&a.rom, &Expect::QEMU_ROM)?;
    // A trace ROM (its manifest names a `trace(…)` backend): keep each run's RAM so that its
    // counters can be held against the guest's own count of what it called.
    let manifest = Manifest::read(&image).and_then(Result::ok);
    let trace_build = manifest
        .as_ref()
        .filter(|m| m.backend.starts_with("trace("))
        .map(|m| m.build_id);
    // A ROM built on the kvm backend promises kvmclock where the CPU offers it: a CPU without
    // a registered pvclock area then fails the kvmclock checks instead of being noted.
    let kvm_build = manifest.as_ref().is_some_and(|m| m.base_backend() == "kvm");
    let opts = SuiteOptions {
        engine: a.engine,
        only: a.only.as_ref().map(|c| c.0.clone()),
        keep_ram: trace_build.is_some(),
        run_init16: !a.no_bios_init,
        irqchip: !a.no_irqchip,
        expect_kvmclock: kvm_build,
        ..SuiteOptions::default()
    };
    let report = run_suite(&a.rom, &opts).map_err(|e| CliError(e.to_string()))?;
    let accounting = trace_build.map(|id| TraceAccounting::check(&report, id));
    let run = EngineRun {
        report: &report,
        accounting: accounting.as_ref(),
    };
    match if a.json { Format::Json } else { a.format } {
        Format::Table => print!("{}", report::table::render(&run)),
        Format::Json => super::print_json(&Json {
            report: &report,
            trace_accounting: accounting.as_ref(),
        })?,
        Format::Tap => print!("{}", report::tap::render(&[run])),
        Format::Junit => print!("{}", report::junit::render(&[run])),
    }
    let exact = accounting.as_ref().is_none_or(|t| t.problems.is_empty());
    Ok(if report.passed() && exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--json`: the suite report, plus the trace accounting for a trace ROM.
#[derive(serde::Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    report: &'a SuiteReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_accounting: Option<&'a TraceAccounting>,
}

/// A trace ROM's counters held against what the guest called, run by run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceAccounting {
    /// Runs whose trace area was compared.
    pub runs_compared: usize,
    /// Runs without an area because nothing ran the ROM's 16-bit init (kvm engine with
    /// `--no-bios-init`): the counting is off there by design.
    pub runs_without_bios: usize,
    /// Invocations compared (the guest's count over the compared runs).
    pub invocations: u64,
    /// Every difference or unreadable area (empty: exact).
    pub problems: Vec<String>,
}

impl TraceAccounting {
    /// Compares each run's area (decoded from its conventional memory) with the guest's
    /// invocation counts; `build_id` is the ROM's.
    pub fn check(r: &SuiteReport, build_id: u32) -> TraceAccounting {
        let mut t = TraceAccounting {
            runs_compared: 0,
            runs_without_bios: 0,
            invocations: 0,
            problems: Vec::new(),
        };
        let no_bios = !r.bios_init;
        for run in &r.run_log {
            let what = &run.purpose;
            let (Some(low), Some(invoked)) = (&run.low_ram, &run.invoked) else {
                t.problems.push(format!(
                    "{what}: the guest's RAM could not be read after the run"
                ));
                continue;
            };
            let a = match area::find(low) {
                Ok(a) => a,
                Err(AreaError::NotFound { .. }) if no_bios => {
                    t.runs_without_bios += 1;
                    continue;
                }
                Err(e) => {
                    t.problems.push(format!("{what}: {e}"));
                    continue;
                }
            };
            if a.build_id != build_id {
                t.problems.push(format!(
                    "{what}: the area at {:#x} was written by build {:#010x}, not this ROM's \
                     {build_id:#010x}",
                    a.phys, a.build_id
                ));
                continue;
            }
            t.runs_compared += 1;
            for n in 0..NUM_CALLS {
                let counted = a.counters.get(n).map_or(0, |c| c.count);
                let called = u64::from(invoked.get(n).copied().unwrap_or(0));
                t.invocations += called;
                if counted != called {
                    let name = vmi_abi::calls::call(n as u32).map_or("?", |c| c.name);
                    t.problems.push(format!(
                        "{what}: call {n} ({name}): the trace area counted {counted}, the guest \
                         called it {called} time(s)"
                    ));
                }
            }
        }
        t
    }
}
