//! Shutdown and Reboot: each in a run of its own, right after activation, judged by how the
//! run ended (QEMU: silence after Shutdown, its exit on Reboot's reset; kvm engine: the vCPU
//! halting or shutting down).

use super::activation::{Activated, activation_steps};
use super::judge::{Findings, Judged};
use super::outcomes::PerCall;
use super::run::{Boot, End, Runner};
use super::vectors::{Flow, Spec};
use super::{SuiteOptions, SuiteReport, describe_exception, log_run};
use crate::error::HarnessError;
use crate::guest::{Step, Vector};
use crate::protocol::{Record, StepId};
use std::time::Duration;
use vmi_abi::call;

/// Every run of each terminal job, in order (the last one counts).
pub(crate) type TerminalRuns = Vec<Vec<Result<Boot, HarnessError>>>;

/// The jobs for `terminal`'s runs: each spec's vector and how long its run may stay silent
/// (Shutdown: the settle time it must stay silent for; Reboot: the hang timeout).
pub(crate) fn jobs(terminal: &[Spec], opts: &SuiteOptions) -> Vec<(Vector, Duration)> {
    terminal
        .iter()
        .map(|s| {
            let idle = match s.flow {
                Flow::Shutdown => opts.settle,
                _ => opts.hang_timeout,
            };
            (s.vector.clone(), idle)
        })
        .collect()
}

/// Shutdown / Reboot: one run each, the vector right after activation. A run whose short
/// settle time ran out before the guest even reached the call (the host was busy) is run once
/// more with the hang timeout.
/// Returns every run of each job (the last one counts).
pub(crate) fn run_terminals(
    runner: &Runner,
    jobs: Vec<(Vector, Duration)>,
    hang: Duration,
) -> TerminalRuns {
    jobs.into_iter()
        .enumerate()
        .map(|(k, (v, idle))| {
            let mut steps = activation_steps();
            steps.push(Step::Vector(0));
            let salt = 1000 + 2 * k as u32;
            let first = runner.boot(steps.clone(), vec![v.clone()], Vec::new(), Some(idle), salt);
            let early = first.as_ref().is_ok_and(|b| {
                matches!(b.end, End::Idle(_))
                    && b.stream.last_step() != StepId::Vector(0)
                    && idle < hang
            });
            let mut runs = vec![first];
            if early {
                runs.push(runner.boot(steps, vec![v], Vec::new(), Some(hang), salt + 1));
            }
            runs
        })
        .collect()
}

/// Judges each of `terminal`'s runs into `per_call`, logging them in `report`. A job without
/// runs (a panicked runner thread leaves none) fails with "could not run".
pub(crate) fn judge_terminals(
    terminal: &[Spec],
    boots: TerminalRuns,
    act: &Activated,
    report: &mut SuiteReport,
    per_call: &mut PerCall,
) {
    let padded = boots.into_iter().chain(std::iter::repeat_with(Vec::new));
    for (spec, boots) in terminal.iter().zip(padded) {
        let mut out = Judged::Failed("could not run".into());
        for boot in boots {
            out = match boot {
                Ok(b) => {
                    log_run(report, &spec.what, 1, &b);
                    judge_terminal(spec, &b, act)
                }
                Err(e) => Judged::Failed(format!("could not run: {e}")),
            };
        }
        per_call
            .entry(spec.call)
            .or_default()
            .push((spec.what.clone(), out));
    }
}

/// Shutdown / Reboot: judged by how their run ended.
fn judge_terminal(spec: &Spec, boot: &Boot, act: &Activated) -> Judged {
    match terminal_findings(spec, boot, act) {
        Ok(f) => Judged::Checked(f),
        Err(_) if matches!(boot.end, End::Unsupported(_)) => Judged::Unsupported(match &boot.end {
            End::Unsupported(d) => d.clone(),
            other => other.to_string(),
        }),
        Err(why) => Judged::Failed(why),
    }
}

fn terminal_findings(spec: &Spec, boot: &Boot, act: &Activated) -> Result<Findings, String> {
    let mut f = Findings::default();
    let rom = Some((act.linear, act.len));
    let last = boot.stream.last_step();
    let returned = boot
        .stream
        .records
        .iter()
        .any(|(_, r)| matches!(r, Record::VectorResult(v) if v.step == StepId::Vector(0)));
    if let Some(e) = boot.stream.exception() {
        return Err(describe_exception(e, rom));
    }
    if returned {
        return Err(format!(
            "{} returned to its caller",
            call(u32::from(spec.call)).map_or("?", |c| c.name)
        ));
    }
    if last != StepId::Vector(0) {
        return Err(format!(
            "the guest never reached the call (stopped in step {last}): {}",
            boot.end
        ));
    }
    match (spec.flow, &boot.end) {
        (Flow::Shutdown, End::Idle(d)) => f.note(format!(
            "no record, exception or reset for {:.1}s after the call: the CPU stopped (judged by \
             silence; QEMU kept running)",
            d.as_secs_f64()
        )),
        (Flow::Shutdown, End::Halted(eip)) => f.note(format!("the vCPU halted at EIP {eip:#010x}")),
        (Flow::Reboot, End::Reset) => f.note("QEMU exited on the reset (-no-reboot)".to_string()),
        (Flow::Reboot, End::TripleFault(eip)) => f.note(format!(
            "the vCPU shut down (triple fault) at EIP {eip:#010x}: a reset on the kvm engine"
        )),
        (Flow::Shutdown, End::Reset) => {
            return Err("the machine reset instead of halting".into());
        }
        (Flow::Reboot, End::Idle(d)) => {
            return Err(format!(
                "no reset: nothing happened for {:.1}s after the call",
                d.as_secs_f64()
            ));
        }
        (Flow::Reboot, End::Halted(eip)) => {
            return Err(format!(
                "the CPU halted at EIP {eip:#010x} instead of resetting"
            ));
        }
        (_, end) => return Err(end.to_string()),
    }
    Ok(f)
}
