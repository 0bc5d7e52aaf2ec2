//! The suite's re-entrancy check: one extra guest run (QEMU with `-smp 2`) that loops over the
//! hot-path calls the ROM implements while IRQ0 fires at ~20 kHz and the timer handler calls the
//! ROM too, and a second CPU calls it at the same time (see [`crate::guest::stress`]). A call
//! that keeps state in memory, uses the stack below ESP, or otherwise breaks when an interrupt
//! handler or another CPU enters the ROM in the middle of it shows up as a wrong result or
//! register here, and fails.

use super::judge::{Findings, Judged};
use super::run::{Boot, Runner};
use super::{Activated, SuiteOptions, Verdict, describe_exception};
use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::{Step, Stress};
use crate::protocol::Violation;
use serde::Serialize;
use std::collections::BTreeMap;
use vmi_abi::Call;
use vmi_abi::calls::RelocType;

/// Loop iterations the suite's stress run makes at least.
const LOOPS: u32 = 2000;
/// Timer interrupts it waits for.
const TICKS: u32 = 300;
/// Iterations of the second CPU.
const AP_LOOPS: u32 = 20_000;
/// The run writes nothing while it loops (and while the first CPU waits for the second): it
/// counts as hung only after this much silence (≥ the suite's hang timeout). Normally the
/// loops take ~0.1 s under TCG, over 1 s with `-singlestep`.
const QUIET: std::time::Duration = std::time::Duration::from_secs(6);

/// What the stress run found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StressSummary {
    /// Pass, Fail, or Skipped (not run, or the timer never fired).
    pub verdict: Verdict,
    /// What was run and found.
    pub detail: String,
    /// The calls each loop iteration made.
    pub mix: Vec<&'static str>,
    /// The calls the timer handler made.
    pub handler: Vec<&'static str>,
    /// Loop iterations completed.
    pub loops: u32,
    /// Timer interrupts handled while it ran.
    pub interrupts: u32,
    /// ROM invocations of the run (loop, handler and second CPU).
    pub invocations: u32,
    /// Loop iterations the second CPU made (0: it did not run).
    pub second_cpu_loops: u32,
}

impl StressSummary {
    fn skipped(why: impl Into<String>) -> StressSummary {
        StressSummary {
            verdict: Verdict::Skipped,
            detail: why.into(),
            mix: Vec::new(),
            handler: Vec::new(),
            loops: 0,
            interrupts: 0,
            invocations: 0,
            second_cpu_loops: 0,
        }
    }
}

/// The Linux-like configuration restricted to the calls the ROM answered CALL_REL for and the
/// suite was asked to check.
fn config(act: &Activated, selected: &dyn Fn(u8) -> bool) -> Stress {
    let ok = |c: &Call| {
        selected(*c as u8)
            && act
                .answers
                .get(*c as usize)
                .and_then(|a| a.as_ref())
                .is_some_and(|a| a.kind == Some(RelocType::CallRel))
    };
    let mut s = Stress::with_second_cpu(LOOPS, TICKS, AP_LOOPS);
    // A kernel's timer interrupt also reads the clock and acknowledges at the local APIC.
    s.handler
        .extend([Call::GetCycleCounter, Call::APICRead, Call::APICWrite]);
    let enable = ok(&Call::EnableInterrupts);
    s.mix
        .retain(|c| ok(c) && (*c != Call::DisableInterrupts || enable));
    s.handler.retain(ok);
    s.ap_mix.retain(ok);
    if s.ap_mix.is_empty() {
        s.ap_loops = 0;
    }
    s
}

/// Runs the stress step if it applies; the outcome per call goes into `per_call` (one check for
/// every call the run made), the summary is returned.
pub(super) fn run(
    runner: &Runner,
    opts: &SuiteOptions,
    act: &Activated,
    selected: &dyn Fn(u8) -> bool,
    per_call: &mut BTreeMap<u8, Vec<(String, Judged)>>,
) -> Result<(StressSummary, Option<Boot>), HarnessError> {
    if !opts.stress {
        return Ok((StressSummary::skipped("not asked for"), None));
    }
    if opts.engine == Engine::Kvm {
        let why = if act.irqs.irq0 {
            "the kvm engine has one vCPU and the check needs a second CPU (its runner's PIT \
             does raise IRQ0 there: the IRQ0 storm alone is not run)"
        } else {
            "nothing raises IRQ0 on the kvm engine (its PIT is the runner's own model, wired \
             to no interrupt line without the in-kernel irqchip) and it has one vCPU: the \
             check needs both"
        };
        return Ok((StressSummary::skipped(why), None));
    }
    let s = config(act, selected);
    if s.mix.is_empty() {
        return Ok((
            StressSummary::skipped(
                "none of the calls the stress loop makes (interrupt flag, CR reads, RDTSC, CPUID, \
                 GetDR) is implemented or selected",
            ),
            None,
        ));
    }
    let mut steps = super::activation_steps();
    steps.push(Step::Stress(0));
    let mut smp = runner.clone();
    smp.extra_args.extend(["-smp".into(), "2".into()]);
    let boot = smp.boot(
        steps,
        Vec::new(),
        vec![s.clone()],
        Some(opts.hang_timeout.max(QUIET)),
        7000,
    )?;
    let name = |c: &Call| c.spec().name;
    let mut summary = StressSummary {
        mix: s.mix.iter().map(name).collect(),
        handler: s.handler.iter().map(name).collect(),
        ..StressSummary::skipped("")
    };
    const WHAT: &str = "under an IRQ0 storm";
    let Some(r) = boot.stream.stress().next() else {
        let how = match boot.stream.exception() {
            Some(e) => describe_exception(e, Some((act.linear, act.len))),
            None => boot.end.to_string(),
        };
        summary.verdict = Verdict::Fail;
        summary.detail = format!("the stress run died before it reported: {how}");
        return Ok((summary, Some(boot)));
    };
    summary.loops = r.loops;
    summary.interrupts = r.handler_runs;
    summary.invocations = r.total;
    summary.second_cpu_loops = r.ap_loops;
    let mut calls: Vec<Call> = s.calls().collect();
    calls.sort();
    calls.dedup();
    match r.violation {
        Some((_, Violation::ApNotStarted)) => {
            summary.detail = format!(
                "the second CPU did not come up (INIT-SIPI-SIPI under {}): not run",
                opts.engine
            );
        }
        Some((_, Violation::ApNotDone)) => {
            summary.verdict = Verdict::Fail;
            summary.detail = format!(
                "the second CPU did not finish its {} iterations of {} ({} done): a call hung \
                 or crashed on it",
                s.ap_loops,
                s.ap_mix.iter().map(name).collect::<Vec<_>>().join(", "),
                r.ap_loops
            );
        }
        Some((item, v)) => {
            let item = item as usize;
            let Some(culprit) = s
                .mix
                .iter()
                .chain(&s.handler)
                .chain(&s.ap_mix)
                .nth(item)
                .copied()
            else {
                // The guest named an item the configuration does not have: blame nobody.
                summary.verdict = Verdict::Fail;
                summary.detail = format!(
                    "the stress loop reported \"{v}\" for item {item}, which does not exist \
                     (the configuration has {} calls)",
                    s.mix.len() + s.handler.len() + s.ap_mix.len()
                );
                return Ok((summary, Some(boot)));
            };
            let pair = if culprit == Call::DisableInterrupts && item < s.mix.len() {
                " (or the EnableInterrupts that follows it)"
            } else {
                ""
            };
            let why = format!(
                "{}{pair} {v} {WHAT} (iteration {} of the loop, {} interrupts so far)",
                name(&culprit),
                r.loops + 1,
                r.handler_runs
            );
            per_call
                .entry(culprit as u8)
                .or_default()
                .push((WHAT.into(), Judged::Failed(why.clone())));
            summary.verdict = Verdict::Fail;
            summary.detail = why;
        }
        None if r.handler_runs == 0 => {
            summary.detail = format!(
                "{} iterations ran, but IRQ0 never fired: re-entry not exercised",
                r.loops
            );
        }
        None => {
            for c in calls {
                per_call
                    .entry(c as u8)
                    .or_default()
                    .push((WHAT.into(), Judged::Checked(Findings::default())));
            }
            summary.verdict = Verdict::Pass;
            summary.detail = format!(
                "{} iterations × {} call(s) with every result and kept register checked, {} timer \
                 interrupts each making {} call(s), a second CPU making {} iterations × {} \
                 call(s) meanwhile; {} invocations in {:.1} M TSC cycles",
                r.loops,
                s.mix.len() + usize::from(s.mix.contains(&Call::DisableInterrupts)),
                r.handler_runs,
                s.handler.len(),
                r.ap_loops,
                s.ap_mix.len(),
                r.total,
                r.cycles as f64 / 1e6
            );
        }
    }
    Ok((summary, Some(boot)))
}
