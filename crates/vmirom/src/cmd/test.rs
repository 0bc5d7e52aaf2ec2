//! `vmirom test ROM [--engine E] [--only CALLS] [--json]`: run every call for real and judge it.
//! Exit 0 only if every implemented call passes.

use super::CliError;
use std::path::PathBuf;
use std::process::ExitCode;
use vmi_harness::engine::Engine;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict, run_suite};

/// Arguments of `vmirom test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ROM file.
    rom: PathBuf,
    /// Where to run: qemu-tcg (works everywhere), qemu-kvm (hardware virtualization), kvm
    /// (vmirom's own KVM VMM, no BIOS, no paging).
    #[arg(long, default_value = "qemu-tcg", value_parser = parse_engine)]
    engine: Engine,
    /// Only these calls: numbers, ranges and names, comma separated (`17,29-32,CPUID`).
    #[arg(long, value_parser = parse_calls)]
    only: Option<Vec<u32>>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    s.parse::<Engine>().map_err(|e| e.to_string())
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
    if !a.rom.is_file() {
        return Err(CliError(format!("{}: no such file", a.rom.display())));
    }
    let opts = SuiteOptions {
        engine: a.engine,
        only: a.only.clone(),
        ..SuiteOptions::default()
    };
    let report = run_suite(&a.rom, &opts).map_err(|e| CliError(e.to_string()))?;
    if a.json {
        super::print_json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::NotImplemented => "not implemented",
        Verdict::Skipped => "skipped",
    }
}

fn print_table(r: &SuiteReport) {
    println!("{} on {}", r.rom, r.engine);
    let act = &r.activation;
    match (act.base, act.linear) {
        (Some(b), Some(l)) => println!(
            "activation: ROM found at {b:#x}, called at {l:#x} (PAGE_OFFSET {:#x}, paging {}), Init returned {}",
            act.page_offset,
            if act.paging { "on" } else { "off" },
            act.init_eax.map_or("-".to_string(), |e| format!("{e:#x}"))
        ),
        _ => println!("activation: no VMI ROM found by the Linux-style probe"),
    }
    for p in &act.problems {
        println!("  problem: {p}");
    }
    for n in &act.notes {
        println!("  note: {n}");
    }
    if let Some(why) = &r.skipped_reason {
        println!("calls not run: {why}");
    }
    let quiet_skips = !act.ok;
    println!(
        "{:>3}  {:<20} {:<9} {:<16} detail",
        "#", "call", "answer", "verdict"
    );
    for c in &r.calls {
        if quiet_skips && c.verdict == Verdict::Skipped {
            continue;
        }
        println!(
            "{:>3}  {:<20} {:<9} {:<16} {}",
            c.call,
            c.name,
            c.reloc,
            verdict_name(c.verdict),
            c.detail
        );
    }
    if let Some(s) = &r.stress {
        println!(
            "re-entrancy under an IRQ0 storm: {} — {}",
            verdict_name(s.verdict),
            s.detail
        );
    }
    let n = |v: Verdict| r.calls.iter().filter(|c| c.verdict == v).count();
    println!(
        "result: {} ({} pass, {} fail, {} not implemented, {} skipped) in {:.1} s, {} guest run(s)",
        if r.passed() { "PASS" } else { "FAIL" },
        n(Verdict::Pass),
        n(Verdict::Fail),
        n(Verdict::NotImplemented),
        n(Verdict::Skipped),
        r.wall.as_secs_f64(),
        r.runs
    );
}
