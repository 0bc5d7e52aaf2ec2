//! Choosing the vectors: the context the vectors are built in, each call's plan (vectors that
//! need paging dropped when the guest does not page), and the split into the batch and the runs
//! of their own (Shutdown, Reboot).

use super::activation::Activated;
use super::vectors::{self, Ctx, Flow, Plan, Spec};
use super::{CallVerdict, Verdict, scenarios};
use crate::engine::Engine;
use crate::guest::{MemoryMap, layout};
use std::collections::BTreeMap;
use vmi_abi::Call;
use vmi_abi::calls::RelocType;

/// The vectors chosen for the calls that run.
pub(crate) struct Chosen {
    /// Run in as few guest runs as possible.
    pub(crate) batch: Vec<Spec>,
    /// Shutdown / Reboot: a run of their own each.
    pub(crate) terminal: Vec<Spec>,
    /// Each planned call's notes, for its verdict.
    pub(crate) notes: BTreeMap<u8, Vec<String>>,
}

/// What the vectors are built for: the guest's memory, the native CPU, the engine, and which
/// calls the ROM answered CALL_REL and JUMP_REL, and whether it promised kvmclock.
pub(crate) fn context(
    map: MemoryMap,
    act: &Activated,
    engine: Engine,
    expect_kvmclock: bool,
) -> Ctx {
    Ctx {
        map,
        machine: act.machine,
        engine,
        irqs: act.irqs,
        stack_top: map.va(layout::STACK_TOP),
        jump: act
            .answers
            .iter()
            .flatten()
            .filter(|a| a.kind == Some(RelocType::JumpRel))
            .filter_map(|a| u8::try_from(a.call).ok())
            .collect(),
        call_rel: act
            .answers
            .iter()
            .flatten()
            .filter(|a| a.kind == Some(RelocType::CallRel))
            .filter_map(|a| u8::try_from(a.call).ok())
            .collect(),
        expect_kvmclock,
    }
}

/// Plans the vectors of the calls in `to_run`. A call with nothing to run (the plan skips it,
/// no vector applies, or every vector needs paging the guest does not have) is skipped in
/// `verdicts` with why.
pub(crate) fn choose(
    ctx: &Ctx,
    to_run: &[Call],
    paging: bool,
    verdicts: &mut [CallVerdict],
) -> Chosen {
    let mut specs: Vec<Spec> = Vec::new();
    let mut notes: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for id in to_run {
        let n = *id as u8;
        match vectors::plan(ctx, *id) {
            Plan::Skip(why) => set(verdicts, n, Verdict::Skipped, why),
            Plan::Run(mut s, note) => {
                let before = s.len();
                if !paging {
                    s.retain(|x| !x.needs_paging);
                }
                if s.is_empty() {
                    let why = if before > 0 {
                        scenarios::needs_paging(ctx)
                    } else {
                        "no vector applies".into()
                    };
                    set(verdicts, n, Verdict::Skipped, why);
                    continue;
                }
                notes.insert(n, note);
                specs.extend(s);
            }
        }
    }
    let (terminal, batch): (Vec<Spec>, Vec<Spec>) = specs
        .into_iter()
        .partition(|s| matches!(s.flow, Flow::Shutdown | Flow::Reboot));
    Chosen {
        batch,
        terminal,
        notes,
    }
}

fn set(verdicts: &mut [CallVerdict], n: u8, v: Verdict, detail: String) {
    if let Some(x) = verdicts.get_mut(usize::from(n)) {
        x.verdict = v;
        x.detail = detail;
    }
}
