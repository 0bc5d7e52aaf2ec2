//! Running a batch of vectors: all in one guest run, and after every vector that kills the
//! guest the rest in a fresh one. Every run re-asks GetRelocationInfo: an answer that changes
//! between runs is noted for the call.

use super::activation::{Activated, activation_steps};
use super::run::{Boot, End, Runner};
use super::vectors::Spec;
use super::{RunSummary, SuiteOptions, describe_exception, judge};
use crate::error::HarnessError;
use crate::guest::{LAYOUT_VERSION, Step, Vector};
use crate::probe::RelocAnswer;
use crate::protocol::{CallResult, EndStatus, Exception, Record, Samples, StepId, VectorResult};
use std::collections::BTreeMap;
use std::time::Duration;
use vmi_abi::calls::RelocType;

/// What one batch vector produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Its `VECTOR_RESULT`, the first `TRAP` it caused, its `SAMPLES`, the run's host
    /// clock ([`super::judge::Seen::host_clock`]) and the IRQ0 edges its runner coalesced
    /// ([`super::judge::Seen::irq0_coalesced`]).
    Result(
        Box<VectorResult>,
        Option<Exception>,
        Option<Box<Samples>>,
        Option<Duration>,
        Option<u64>,
    ),
    /// It killed the guest, because …
    Killed(String),
    /// The engine could not run it (kvm-pvm emulation), because …
    Unsupported(String),
    /// It never ran (Some: a reason to report; None: its call was already failed by another
    /// vector that killed the guest).
    NotRun(Option<String>),
}

pub(crate) type BatchLog = Vec<RunSummary>;

/// A vector's records in one run: its `VECTOR_RESULT`, first `TRAP` and `SAMPLES`.
type Produced = (
    Option<Box<VectorResult>>,
    Option<Exception>,
    Option<Box<Samples>>,
);

/// The vector that killed a run's guest.
struct Killer {
    /// Its position in the run's program.
    pos: usize,
    /// How the run ended.
    why: String,
    /// The engine could not run it (rather than the ROM killing the guest).
    unsupported: bool,
}

/// A batch's outcomes so far.
struct Progress {
    /// One per spec (None: not known yet).
    outcomes: Vec<Option<Outcome>>,
    /// The calls one of whose vectors killed the guest.
    killed_calls: Vec<u8>,
}

impl Progress {
    /// Sets the outcome of spec `i`.
    fn set(&mut self, i: usize, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }
}

/// Runs `specs` in as few guest runs as possible: one, plus one more after every vector that
/// kills the guest. Returns one outcome per spec and the calls whose GetRelocationInfo answer
/// changed between runs.
pub(crate) fn run_batch(
    runner: &Runner,
    specs: &[&Spec],
    act: &Activated,
    opts: &SuiteOptions,
    log: &mut BatchLog,
) -> Result<(Vec<Outcome>, BTreeMap<u8, String>), HarnessError> {
    let mut progress = Progress {
        outcomes: (0..specs.len()).map(|_| None).collect(),
        killed_calls: Vec::new(),
    };
    let mut inconsistent: BTreeMap<u8, String> = BTreeMap::new();
    let mut pending: Vec<usize> = (0..specs.len()).collect();
    let mut round = 0u32;
    // A vector that needs a second CPU gets it for the whole batch.
    let mut smp = runner.clone();
    if specs.iter().any(|s| s.smp) {
        smp.extra_args.extend(["-smp".into(), "2".into()]);
    }
    let runner = &smp;
    while !pending.is_empty() {
        round += 1;
        let boot = boot_round(runner, specs, &pending, opts, round)?;
        log.push(RunSummary::of(
            &format!("vectors (run {round})"),
            pending.len(),
            &boot,
        ));
        let rom = match check_run(&boot, act, &mut inconsistent, round) {
            Ok(rom) => rom,
            Err(why) => {
                for i in &pending {
                    progress.set(*i, Outcome::NotRun(Some(format!("not run: {why}"))));
                }
                break;
            }
        };
        let next = settle(&boot, Some(rom), specs, &pending, &mut progress);
        if next.len() >= pending.len() {
            for i in &next {
                progress.set(*i, Outcome::NotRun(Some("not run: no progress".into())));
            }
            break;
        }
        pending = next;
    }
    Ok((
        progress
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NotRun(Some("not run".into()))))
            .collect(),
        inconsistent,
    ))
}

/// Boots run `round` of the batch: activation, then the `pending` vectors in order.
fn boot_round(
    runner: &Runner,
    specs: &[&Spec],
    pending: &[usize],
    opts: &SuiteOptions,
    round: u32,
) -> Result<Boot, HarnessError> {
    let vectors: Vec<Vector> = pending
        .iter()
        .filter_map(|i| specs.get(*i))
        .map(|s| s.vector.clone())
        .collect();
    let mut steps = activation_steps();
    steps.extend((0..vectors.len() as u32).map(Step::Vector));
    runner.boot(steps, vectors, Vec::new(), Some(opts.hang_timeout), round)
}

/// Gives the `pending` vectors of one run their outcomes from its records; returns those that
/// must run again (after the one that killed the guest, unless their call already failed).
fn settle(
    boot: &Boot,
    rom: Option<(u32, u32)>,
    specs: &[&Spec],
    pending: &[usize],
    progress: &mut Progress,
) -> Vec<usize> {
    let (mut results, fatal) = by_vector(boot);
    let killed = killer(boot, fatal.as_ref(), rom, pending.len());
    let mut next = Vec::new();
    for (pos, &i) in pending.iter().enumerate() {
        let Some(spec) = specs.get(i) else { continue };
        let slot = progress.outcomes.get_mut(i);
        let Some(slot) = slot else { continue };
        match (results.remove(&(pos as u32)), &killed) {
            (_, Some(k)) if k.pos == pos => {
                *slot = Some(if k.unsupported {
                    Outcome::Unsupported(k.why.clone())
                } else {
                    Outcome::Killed(k.why.clone())
                });
                progress.killed_calls.push(spec.call);
            }
            (Some((Some(r), trap, samples)), _) => {
                *slot = Some(Outcome::Result(
                    r,
                    trap,
                    samples,
                    boot.host_clock,
                    boot.engine_run.kvm_irq0_coalesced,
                ))
            }
            (_, Some(k)) if pos > k.pos => next.push(i),
            _ => {}
        }
    }
    not_reached(boot, killed.is_some(), pending, &next, progress);
    // Vectors of a call that already killed the guest need not run again.
    next.retain(|i| {
        let dead = specs
            .get(*i)
            .is_some_and(|s| progress.killed_calls.contains(&s.call));
        if dead {
            progress.set(*i, Outcome::NotRun(None));
        }
        !dead
    });
    next
}

/// The run's records grouped by vector, and the exception that ended the run (if one did).
fn by_vector(boot: &Boot) -> (BTreeMap<u32, Produced>, Option<Exception>) {
    let mut results: BTreeMap<u32, Produced> = BTreeMap::new();
    let mut fatal: Option<Exception> = None;
    for (_, rec) in &boot.stream.records {
        match rec {
            Record::VectorResult(r) => {
                if let StepId::Vector(k) = r.step {
                    results.entry(k).or_default().0 = Some(r.clone());
                }
            }
            Record::Trap(t) => {
                if let StepId::Vector(k) = t.step {
                    let e = results.entry(k).or_default();
                    if e.1.is_none() {
                        e.1 = Some(*t);
                    }
                }
            }
            Record::Samples(x) => {
                if let StepId::Vector(k) = x.step {
                    results.entry(k).or_default().2 = Some(x.clone());
                }
            }
            Record::Exception(e) => fatal = Some(*e),
            _ => {}
        }
    }
    (results, fatal)
}

/// The vector (of `pending` in the run's program) whose step the run ended in without
/// completing, and why; None when the run completed or ended elsewhere.
fn killer(
    boot: &Boot,
    fatal: Option<&Exception>,
    rom: Option<(u32, u32)>,
    pending: usize,
) -> Option<Killer> {
    let clean = boot.end == End::Done && boot.stream.end() == Some(EndStatus::Complete);
    let last = boot.stream.last_step();
    if clean {
        return None;
    }
    match last {
        StepId::Vector(k) if (k as usize) < pending => {
            let why = match (fatal, &boot.end) {
                (Some(e), _) if e.step == last => describe_exception(e, rom),
                (_, End::Unsupported(detail)) => detail.clone(),
                (_, end) => end.to_string(),
            };
            let why = match &boot.decode_error {
                Some(d) if fatal.is_none() => format!("{why} (stream: {d})"),
                _ => why,
            };
            let unsupported = matches!(boot.end, End::Unsupported(_)) && fatal.is_none();
            Some(Killer {
                pos: k as usize,
                why,
                unsupported,
            })
        }
        _ => None,
    }
}

/// The `pending` vectors the run neither reached nor will run again (not in `next`): not run,
/// and why when the run stopped for a reason of its own.
fn not_reached(
    boot: &Boot,
    killed: bool,
    pending: &[usize],
    next: &[usize],
    progress: &mut Progress,
) {
    for &i in pending {
        let Some(slot) = progress.outcomes.get_mut(i) else {
            continue;
        };
        if slot.is_none() && !next.contains(&i) {
            let why = if killed {
                "not run".to_string()
            } else {
                match boot.stream.end() {
                    Some(EndStatus::NoRom) => "not run: the probe found no ROM in this run".into(),
                    Some(EndStatus::InitFailed) => "not run: Init failed in this run".into(),
                    _ => format!("not run: the guest stopped before it: {}", boot.end),
                }
            };
            *slot = Some(Outcome::NotRun(Some(why)));
        }
    }
}

/// Checks a vector run's header and GetRelocationInfo answers against activation; returns
/// the ROM's (linear base, length) in this run, or why the run's stream cannot be used.
fn check_run(
    boot: &Boot,
    act: &Activated,
    inconsistent: &mut BTreeMap<u8, String>,
    round: u32,
) -> Result<(u32, u32), String> {
    check_hello(boot)?;
    let mut linear = None;
    for (_, rec) in &boot.stream.records {
        match rec {
            Record::ProbeDone(p) => linear = p.base.map(|_| p.linear),
            Record::CallResult(c) => {
                let StepId::GetReloc(n) = c.step else {
                    continue;
                };
                let Some(Some(first)) = act.answers.get(n as usize) else {
                    continue;
                };
                let base = linear.unwrap_or(act.linear);
                if let (Some(why), Ok(n)) = (changed(c, first, base, act, round), u8::try_from(n)) {
                    inconsistent.entry(n).or_insert(why);
                }
            }
            _ => {}
        }
    }
    Ok((linear.unwrap_or(act.linear), act.len))
}

/// The run's stream starts with the `HELLO` of this image (its nonce and layout version).
fn check_hello(boot: &Boot) -> Result<(), String> {
    match boot.stream.records.first() {
        Some((_, Record::Hello(h)))
            if h.nonce == boot.nonce && h.layout_version == LAYOUT_VERSION =>
        {
            Ok(())
        }
        Some((_, Record::Hello(h))) => Err(format!(
            "the guest stream does not belong to the image (nonce {:#x}, layout {})",
            h.nonce, h.layout_version
        )),
        _ => Err(format!(
            "the guest wrote no usable stream ({}{})",
            boot.end,
            boot.decode_error
                .as_ref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )),
    }
}

/// How GetRelocationInfo's answer `c` in run `round` (the ROM at `base`) differs from the
/// activation's `first`: the type, and for code the target's offset in the ROM; None if alike.
fn changed(
    c: &CallResult,
    first: &RelocAnswer,
    base: u32,
    act: &Activated,
    round: u32,
) -> Option<String> {
    let dl = c.regs.edx as u8;
    let code = matches!(
        first.kind,
        Some(RelocType::CallRel) | Some(RelocType::JumpRel)
    );
    let same = dl == first.reloc_type
        && (!code || c.regs.eax.wrapping_sub(base) == first.eip.wrapping_sub(act.linear));
    (!same).then(|| {
        format!(
            "GetRelocationInfo answered differently in run {round}: {} at {:#010x} (activation: \
             {} at {:#010x})",
            judge::reloc_name(dl),
            c.regs.eax,
            judge::reloc_name(first.reloc_type),
            first.eip
        )
    })
}
