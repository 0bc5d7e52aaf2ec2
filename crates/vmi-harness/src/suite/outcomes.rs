//! Judging what the batch produced: each vector's outcome against its spec (with the same
//! call's earlier results and the reference vector right before it at hand), the "timing
//! again" runs of the vectors the host was too busy to time, and the judgments gathered per
//! call.

use super::activation::Activated;
use super::batch::{Outcome, run_batch};
use super::judge::{self, Findings, Judged, Seen};
use super::run::Runner;
use super::vectors::{Ctx, Flow, Spec};
use super::{SuiteOptions, SuiteReport, log_summary};
use crate::error::HarnessError;
use crate::protocol::VectorResult;
use std::collections::BTreeMap;
use vmi_abi::call;

/// How often a vector the host was too busy to time runs again.
const TIMING_RETRIES: u32 = 2;

/// Every call's judged vectors and scenarios, `(what, judgment)` in order.
pub(crate) type PerCall = BTreeMap<u8, Vec<(String, Judged)>>;

/// Judges the batch's outcomes, one per spec in order (None: it never ran because its call
/// already failed). A reference vector's result goes to the next vector of its call; each
/// vector sees its call's earlier results.
pub(crate) fn judge_batch(batch: &[Spec], outcomes: &[Outcome], ctx: &Ctx) -> Vec<Option<Judged>> {
    let mut earlier: BTreeMap<u8, Vec<&VectorResult>> = BTreeMap::new();
    let mut reference: Option<(u8, judge::Reference<'_>)> = None;
    let mut judged: Vec<Option<Judged>> = Vec::with_capacity(batch.len());
    for (spec, out) in batch.iter().zip(outcomes) {
        let this_reference = reference
            .take()
            .filter(|(call, _)| *call == spec.call)
            .map(|(_, r)| r);
        if let Outcome::Result(r, trap, ..) = out {
            if spec.reference {
                reference = Some((
                    spec.call,
                    judge::Reference {
                        r,
                        trap: trap.as_ref(),
                    },
                ));
            }
        }
        let prev = earlier.entry(spec.call).or_default();
        judged.push(judge_outcome(spec, out, ctx, prev, this_reference));
        if let Outcome::Result(r, ..) = out {
            prev.push(r);
        }
    }
    judged
}

/// Timing the host was too busy for: the inconclusive vectors again, in runs of their own
/// ("timing again (round)" in the run log), up to [`TIMING_RETRIES`] times; each new judgment
/// replaces the old one.
pub(crate) fn time_again(
    runner: &Runner,
    batch: &[Spec],
    judged: &mut [Option<Judged>],
    act: &Activated,
    opts: &SuiteOptions,
    ctx: &Ctx,
    report: &mut SuiteReport,
) -> Result<(), HarnessError> {
    for round in 1..=TIMING_RETRIES {
        let again: Vec<usize> = judged
            .iter()
            .enumerate()
            .filter(|(_, j)| matches!(j, Some(Judged::Inconclusive(_))))
            .map(|(i, _)| i)
            .collect();
        let specs: Vec<&Spec> = again.iter().filter_map(|i| batch.get(*i)).collect();
        if specs.is_empty() {
            break;
        }
        let mut log = Vec::new();
        let (outs, _) = run_batch(runner, &specs, act, opts, &mut log)?;
        for mut run in log {
            run.purpose = format!("timing again ({round})");
            log_summary(report, run);
        }
        for ((i, spec), out) in again.iter().zip(&specs).zip(&outs) {
            if let (Some(slot), Some(j)) =
                (judged.get_mut(*i), judge_outcome(spec, out, ctx, &[], None))
            {
                *slot = Some(j);
            }
        }
    }
    Ok(())
}

/// The batch's judgments by call (a call of the batch gets its entry even when none of its
/// vectors was judged).
pub(crate) fn by_call(batch: &[Spec], judged: Vec<Option<Judged>>) -> PerCall {
    let mut per_call = PerCall::new();
    for (spec, j) in batch.iter().zip(judged) {
        let entry = per_call.entry(spec.call).or_default();
        if let Some(j) = j {
            entry.push((spec.what.clone(), j));
        }
    }
    per_call
}

/// Judges one batch vector's outcome (None: it never ran because its call already failed).
fn judge_outcome(
    spec: &Spec,
    out: &Outcome,
    ctx: &Ctx,
    earlier: &[&VectorResult],
    reference: Option<judge::Reference<'_>>,
) -> Option<Judged> {
    Some(match out {
        Outcome::Result(r, trap, samples, host_clock, irq0_coalesced) => {
            let seen = Seen {
                r,
                trap: trap.as_ref(),
                samples: samples.as_deref(),
                earlier,
                reference,
                host_clock: *host_clock,
                irq0_coalesced: *irq0_coalesced,
            };
            Judged::of(judge_vector(spec, ctx, &seen))
        }
        Outcome::Killed(why) => Judged::Failed(why.clone()),
        Outcome::Unsupported(why) => Judged::Unsupported(why.clone()),
        Outcome::NotRun(why) => Judged::Failed(why.clone()?),
    })
}

/// The common checks, then the vector's own.
fn judge_vector(spec: &Spec, ctx: &Ctx, seen: &Seen<'_>) -> Findings {
    let mut f = Findings::default();
    let Some(cs) = call(u32::from(spec.call)) else {
        f.fail("no such call");
        return f;
    };
    if spec.reference {
        // A measurement of the engine's native instruction, not of the ROM: only notes.
        (spec.check)(seen, &mut f);
        return f;
    }
    judge::common(spec, cs, ctx, seen, &mut f);
    let go_on = match spec.flow {
        Flow::Returns => seen.r.returned_to_site,
        Flow::Traps | Flow::Faults => seen.trap.is_some() && !seen.r.returned_to_site,
        _ => true,
    };
    if go_on {
        (spec.check)(seen, &mut f);
    }
    f
}
