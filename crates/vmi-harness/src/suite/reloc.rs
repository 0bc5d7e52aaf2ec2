//! Relocation answers judged against vmi-abi.md §3.5 without executing anything: a type not
//! allowed for the call, a target outside the ROM, or a dependency that is not CALL_REL fails;
//! NONE is not implemented; an allowed NOP passes. Only CALL_REL/JUMP_REL calls go on to run.

use super::activation::Activated;
use super::{CallVerdict, Verdict, judge, verdict};
use crate::probe::RelocAnswer;
use vmi_abi::calls::{CALLS, CallSpec, NUM_CALLS, RelocType};
use vmi_abi::{Call, call};

/// Every call's verdict from its relocation answer (in call order), and the calls whose code
/// must be run.
pub(crate) fn verdicts(
    act: &Activated,
    selected: impl Fn(u8) -> bool,
) -> (Vec<CallVerdict>, Vec<Call>) {
    let mut verdicts: Vec<CallVerdict> = Vec::with_capacity(NUM_CALLS);
    let mut to_run: Vec<Call> = Vec::new();
    for c in CALLS.iter() {
        let (v, run) = reloc_verdict(c.number, act, selected(c.number));
        if run {
            if let Some(id) = Call::from_number(u32::from(c.number)) {
                to_run.push(id);
            }
        }
        verdicts.push(v);
    }
    (verdicts, to_run)
}

/// The verdict from the relocation answer alone; `true` when the call's code must be run.
fn reloc_verdict(n: u8, act: &Activated, selected: bool) -> (CallVerdict, bool) {
    let Some(spec) = call(u32::from(n)) else {
        return (
            verdict(n, String::new(), Verdict::Skipped, "no such call"),
            false,
        );
    };
    if !selected {
        let reloc = act
            .answers
            .get(usize::from(n))
            .and_then(Option::as_ref)
            .map(|a| judge::reloc_name(a.reloc_type))
            .unwrap_or_default();
        return (verdict(n, reloc, Verdict::Skipped, "not selected"), false);
    }
    let Some(a) = act.answers.get(usize::from(n)).and_then(Option::as_ref) else {
        return (
            verdict(
                n,
                String::new(),
                Verdict::Skipped,
                "not asked: activation stopped before GetRelocationInfo reached it",
            ),
            false,
        );
    };
    let reloc = judge::reloc_name(a.reloc_type);
    let kind = match allowed_kind(spec, a, act) {
        Ok(kind) => kind,
        Err(why) => return (verdict(n, reloc, Verdict::Fail, why), false),
    };
    match kind {
        RelocType::None => (
            verdict(
                n,
                reloc,
                Verdict::NotImplemented,
                "NONE: Linux keeps the native operation",
            ),
            false,
        ),
        RelocType::Nop => (
            verdict(n, reloc, Verdict::Pass, "NOP: nothing to execute"),
            false,
        ),
        RelocType::CallRel | RelocType::JumpRel => code_target(n, reloc, a, act),
    }
}

/// The answer's relocation type when vmi-abi.md §3.5 allows it: a relocation type at all, one
/// allowed for the call, and — for an implemented call — its dependencies CALL_REL; else why
/// not.
fn allowed_kind(spec: &CallSpec, a: &RelocAnswer, act: &Activated) -> Result<RelocType, String> {
    let Some(kind) = a.kind else {
        return Err(format!(
            "GetRelocationInfo answered type {}: not a relocation type (Linux BUG()s on it at \
             inline-patched sites)",
            a.reloc_type
        ));
    };
    if !spec.allowed.contains(kind) {
        let allowed: Vec<&str> = spec.allowed.iter().map(RelocType::name).collect();
        return Err(format!(
            "{} not allowed for {} (vmi-abi.md §3.5 allows {})",
            kind.name(),
            spec.name,
            allowed.join("|")
        ));
    }
    if kind != RelocType::None {
        for r in spec.requires {
            let dep = act.answers.get(usize::from(*r)).and_then(Option::as_ref);
            if dep.and_then(|d| d.kind) != Some(RelocType::CallRel) {
                return Err(format!(
                    "{} is implemented, so {} must be CALL_REL (Linux calls it without a NULL \
                     check), but it is {}",
                    spec.name,
                    call(u32::from(*r)).map_or("?", |c| c.name),
                    dep.map_or_else(|| "unknown".into(), |d| judge::reloc_name(d.reloc_type))
                ));
            }
        }
    }
    Ok(kind)
}

/// A CALL_REL/JUMP_REL answer: its target must lie inside the ROM image; then the call runs
/// (its verdict waits for the runs, with the target as [`CallVerdict::eip`]).
fn code_target(n: u8, reloc: String, a: &RelocAnswer, act: &Activated) -> (CallVerdict, bool) {
    let inside = a.eip.checked_sub(act.linear).is_some_and(|o| o < act.len);
    if !inside {
        return (
            verdict(
                n,
                reloc,
                Verdict::Fail,
                format!(
                    "target {:#010x} lies outside the ROM image ({:#010x}..{:#010x})",
                    a.eip,
                    act.linear,
                    act.linear.wrapping_add(act.len)
                ),
            ),
            false,
        );
    }
    let mut v = verdict(n, reloc, Verdict::Skipped, "");
    v.eip = Some(a.eip);
    (v, true)
}
