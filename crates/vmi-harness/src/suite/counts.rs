//! What the runs counted, per call: the VM exits of its vectors (kvm engine; see
//! [`CallExits`]) and the guest's own count of its invocations ([`SuiteOptions::keep_ram`]).
//!
//! [`SuiteOptions::keep_ram`]: super::SuiteOptions::keep_ram

use super::run::VectorExits;
use super::{CallExits, CallVerdict, RunSummary, Verdict};
use std::collections::BTreeMap;
use vmi_abi::calls::{NUM_CALLS, RelocType};

/// The exits of `vectors`, summed per call.
pub(crate) fn call_exits(vectors: &[VectorExits]) -> BTreeMap<u8, CallExits> {
    let mut out: BTreeMap<u8, CallExits> = BTreeMap::new();
    for v in vectors {
        let c = out.entry(v.call).or_default();
        c.vectors += 1;
        c.invocations += u32::from(v.invoked);
        c.rom += &v.rom;
        c.guest += &v.guest;
    }
    out
}

/// Gives every call the exits of its vectors over `runs` (calls without any keep None; a
/// passing NOP answer gets zero counts where exits are counted).
pub(crate) fn attach_exits(verdicts: &mut [CallVerdict], runs: &[RunSummary]) {
    let counted = runs.iter().any(|r| r.exits.is_some());
    for v in verdicts {
        let mut sum: Option<CallExits> = None;
        for c in runs
            .iter()
            .filter_map(|r| r.exits.as_ref()?.calls.get(&v.call))
        {
            let s = sum.get_or_insert_with(CallExits::default);
            s.vectors += c.vectors;
            s.invocations += c.invocations;
            s.rom += &c.rom;
            s.guest += &c.guest;
        }
        let nop = RelocType::Nop.name();
        if sum.is_none() && counted && v.reloc == nop && v.verdict == Verdict::Pass {
            sum = Some(CallExits::default());
        }
        v.exits = sum;
    }
}

/// Invocations per call summed over `runs` (None unless RAM was kept for every run).
pub(crate) fn total_invocations(runs: &[RunSummary], kept: bool) -> Option<Vec<u32>> {
    if !kept {
        return None;
    }
    runs.iter().try_fold(vec![0u32; NUM_CALLS], |mut sum, r| {
        for (s, n) in sum.iter_mut().zip(r.invoked.as_ref()?) {
            *s = s.saturating_add(*n);
        }
        Some(sum)
    })
}
