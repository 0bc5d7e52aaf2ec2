//! `vmirom test`'s table for people: the activation, one line per call, the re-entrancy run,
//! the result line, and for a trace ROM the trace accounting.

use super::EngineRun;
use crate::cmd::test::TraceAccounting;
use std::fmt::Write as _;
use vmi_harness::suite::{SuiteReport, Verdict};

/// The whole table, ending in a newline.
pub fn render(run: &EngineRun<'_>) -> String {
    let mut o = suite(run.report);
    if let Some(t) = run.accounting {
        o.push_str(&accounting(t));
    }
    o
}

/// A verdict as the table writes it.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::NotImplemented => "not implemented",
        Verdict::Skipped => "skipped",
    }
}

/// What activation found, after `activation: `.
pub fn activation_text(r: &SuiteReport) -> String {
    let act = &r.activation;
    match (act.base, act.linear) {
        (Some(b), Some(l)) => format!(
            "ROM found at {b:#x}, called at {l:#x} (PAGE_OFFSET {:#x}, paging {}), Init returned {}",
            act.page_offset,
            if act.paging { "on" } else { "off" },
            act.init_eax.map_or("-".to_string(), |e| format!("{e:#x}"))
        ),
        _ => "no VMI ROM found by the Linux-style probe".into(),
    }
}

/// `PASS (50 pass, 0 fail, …) in 2.1 s, 5 guest run(s)`: the table's last line after
/// `result: `.
pub fn result_text(r: &SuiteReport) -> String {
    let n = |v: Verdict| r.calls.iter().filter(|c| c.verdict == v).count();
    format!(
        "{} ({} pass, {} fail, {} not implemented, {} skipped) in {:.1} s, {} guest run(s)",
        if r.passed() { "PASS" } else { "FAIL" },
        n(Verdict::Pass),
        n(Verdict::Fail),
        n(Verdict::NotImplemented),
        n(Verdict::Skipped),
        r.wall.as_secs_f64(),
        r.runs
    )
}

fn suite(r: &SuiteReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} on {}", r.rom, r.engine);
    let act = &r.activation;
    let _ = writeln!(o, "activation: {}", activation_text(r));
    for p in &act.problems {
        let _ = writeln!(o, "  problem: {p}");
    }
    for n in &act.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    if let Some(why) = &r.skipped_reason {
        let _ = writeln!(o, "calls not run: {why}");
    }
    let quiet_skips = !act.ok;
    let _ = writeln!(
        o,
        "{:>3}  {:<20} {:<9} {:<16} detail",
        "#", "call", "answer", "verdict"
    );
    for c in &r.calls {
        if quiet_skips && c.verdict == Verdict::Skipped {
            continue;
        }
        let _ = writeln!(
            o,
            "{:>3}  {:<20} {:<9} {:<16} {}",
            c.call,
            c.name,
            c.reloc,
            verdict_name(c.verdict),
            c.detail
        );
    }
    if let Some(s) = &r.stress {
        let _ = writeln!(
            o,
            "{}: {} — {}",
            super::STRESS,
            verdict_name(s.verdict),
            s.detail
        );
    }
    let _ = writeln!(o, "result: {}", result_text(r));
    o
}

fn accounting(t: &TraceAccounting) -> String {
    let mut o = String::new();
    let bios = if t.runs_without_bios > 0 {
        format!(
            " ({} run(s) without a BIOS have no trace area: counting is off there)",
            t.runs_without_bios
        )
    } else {
        String::new()
    };
    if t.problems.is_empty() && t.runs_compared == 0 {
        let _ = writeln!(
            o,
            "trace accounting: not checked, no run had a trace area{bios}"
        );
    } else if t.problems.is_empty() {
        let _ = writeln!(
            o,
            "trace accounting: exact — {} invocations in {} run(s) equal the trace area's \
             counts, call by call{bios}",
            t.invocations, t.runs_compared
        );
    } else {
        let _ = writeln!(o, "trace accounting: WRONG{bios}");
        for p in &t.problems {
            let _ = writeln!(o, "  {p}");
        }
    }
    o
}
