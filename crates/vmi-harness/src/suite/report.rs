//! Assembling the report: the empty report a suite starts from, the run log, each call's
//! verdict from everything judged about it, and the totals at the end.

use super::counts::total_invocations;
use super::judge::{self, Judged};
use super::outcomes::PerCall;
use super::run::Boot;
use super::{Activation, CallVerdict, RunSummary, SuiteOptions, SuiteReport, Verdict};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The report before anything ran: the ROM, the engine, the memory map's settings.
pub(crate) fn empty(rom: &Path, opts: &SuiteOptions, paging: bool) -> SuiteReport {
    SuiteReport {
        rom: rom.display().to_string(),
        engine: opts.engine.to_string(),
        activation: Activation {
            page_offset: opts.page_offset,
            paging,
            ..Activation::default()
        },
        calls: Vec::new(),
        wall: Duration::ZERO,
        runs: 0,
        skipped_reason: None,
        run_log: Vec::new(),
        invocations: None,
        stress: None,
        bios_init: opts.engine.uses_seabios() || opts.run_init16,
    }
}

/// Logs the run `boot` (for `purpose`, with `vectors` in its program) in the run log.
pub(crate) fn log_run(report: &mut SuiteReport, purpose: &str, vectors: usize, boot: &Boot) {
    log_summary(report, RunSummary::of(purpose, vectors, boot));
}

/// Logs a run in the run log.
pub(crate) fn log_summary(report: &mut SuiteReport, run: RunSummary) {
    report.runs += 1;
    report.run_log.push(run);
}

/// Each run call's verdict from its judgments (with a changed GetRelocationInfo answer as one
/// more failure) and its plan's notes; a call still skipped without a reason was "not run".
pub(crate) fn call_verdicts(
    verdicts: &mut [CallVerdict],
    per_call: PerCall,
    inconsistent: &BTreeMap<u8, String>,
    notes: &BTreeMap<u8, Vec<String>>,
) {
    for (n, mut outs) in per_call {
        if let Some(why) = inconsistent.get(&n) {
            outs.push(("GetRelocationInfo".into(), Judged::Failed(why.clone())));
        }
        let idx = usize::from(n);
        if let Some(v) = verdicts.get_mut(idx) {
            let note = notes.get(&n).cloned().unwrap_or_default();
            *v = judge::aggregate(v.clone(), &outs, &note);
        }
    }
    for v in verdicts.iter_mut() {
        if v.verdict == Verdict::Skipped && v.detail.is_empty() {
            v.detail = "not run".into();
        }
    }
}

/// The totals at the end: the invocations over every run (with [`SuiteOptions::keep_ram`])
/// and the suite's wall-clock time since `start`.
pub(crate) fn finish(mut report: SuiteReport, opts: &SuiteOptions, start: Instant) -> SuiteReport {
    report.invocations = total_invocations(&report.run_log, opts.keep_ram);
    report.wall = start.elapsed();
    report
}
