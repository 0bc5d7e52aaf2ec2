//! The kvmclock checks: where CPUID says KVM with kvmclock (0x40000000 = "KVMKVMKVM\0\0\0",
//! 0x40000001 EAX bit 3), the guest reads after a time call, on the calling CPU, what KVM
//! itself shows of the ROM's clock — MSR_KVM_SYSTEM_TIME_NEW (the physical address of the
//! `pvclock_vcpu_time_info` the CPU registered, with its enable bit) and the scale KVM wrote
//! into that structure — and the suite holds the ROM's answers to it:
//!
//! - **GetCycleFrequency** equals the rate the pvclock scale implies,
//!   `1e9 · 2^32 / (tsc_to_system_mul · 2^tsc_shift)` Hz, within [`scale_tolerance`].
//! - **GetWallclockTime** (kvm engine: its PM timer runs on the host's clock) lies within
//!   [`HOST_TOLERANCE_S`] of the host's clock at the moment of the call.
//!
//! The guest never registers a pvclock area of its own (that would replace the ROM's).
//! A calling CPU with no area registered after the call (the MSR reads 0, or its enable bit is
//! clear) takes its time elsewhere: that fails the check for a ROM that promised kvmclock
//! ([`super::SuiteOptions::expect_kvmclock`]) and is noted for any other (the native ROM).
//! Where CPUID offers no kvmclock (QEMU TCG) the checks are not planned; for a ROM that
//! promised kvmclock the verdicts say why.

use super::judge::{Findings, Seen};
use super::vectors::{Ctx, Spec, b};
use crate::engine::Engine;
use crate::guest::vector::Op;
use crate::protocol::{PmTimer, VectorResult};
use std::time::Duration;
use vmi_abi::Call;

/// MSR_KVM_SYSTEM_TIME_NEW: the calling CPU's pvclock area (physical address | enable bit 0).
pub(crate) const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4B56_4D01;
/// Offsets in `struct pvclock_vcpu_time_info`.
const PV_VERSION: u32 = 0;
const PV_MUL: u32 = 24;
const PV_SHIFT: u32 = 28;
/// GetWallclockTime must lie within this many seconds of the host's clock.
pub(crate) const HOST_TOLERANCE_S: f64 = 1.0;
/// A call whose PM-timer bracket spans more than this (seconds) cannot be placed on the
/// host's clock: the host was too busy.
const HOST_BRACKET_S: f64 = 0.25;

/// Extra words of the pvclock reads ([`pvclock_reads`]).
mod slot {
    /// MSR_KVM_SYSTEM_TIME_NEW (2 words).
    pub const MSR: u8 = 0;
    /// The structure's version before the other reads.
    pub const VERSION: u8 = 2;
    /// tsc_to_system_mul.
    pub const MUL: u8 = 3;
    /// tsc_shift (byte 0) and flags (byte 1).
    pub const SHIFT: u8 = 4;
    /// The version after them.
    pub const VERSION_AFTER: u8 = 5;
    /// The PM timer before the call, after it (wall clock vector).
    pub const PM_BEFORE: u8 = 6;
    pub const PM_AFTER: u8 = 7;
}

/// After the call: MSR_KVM_SYSTEM_TIME_NEW, then the version, scale and version again of the
/// structure it names.
fn pvclock_reads() -> Vec<Op> {
    let at = |offset: u32, slot: u8| Op::LoadVia {
        base: slot::MSR,
        mask: !1,
        offset,
        slot,
    };
    vec![
        Op::Rdmsr {
            msr: MSR_KVM_SYSTEM_TIME_NEW,
            slot: slot::MSR,
        },
        at(PV_VERSION, slot::VERSION),
        at(PV_MUL, slot::MUL),
        at(PV_SHIFT, slot::SHIFT),
        at(PV_VERSION, slot::VERSION_AFTER),
    ]
}

/// What the guest read of the calling CPU's pvclock area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pvclock {
    /// MSR_KVM_SYSTEM_TIME_NEW.
    pub msr: u64,
    /// The structure's version before and after the reads.
    pub version: (u32, u32),
    /// tsc_to_system_mul.
    pub mul: u32,
    /// tsc_shift.
    pub shift: i8,
    /// flags (bit 0: the clock is stable across CPUs).
    pub flags: u8,
}

impl Pvclock {
    fn at(r: &VectorResult) -> Pvclock {
        let w = |k: u8| r.x(usize::from(k));
        let [shift, flags, ..] = w(slot::SHIFT).to_le_bytes();
        Pvclock {
            msr: r.x64(usize::from(slot::MSR)),
            version: (w(slot::VERSION), w(slot::VERSION_AFTER)),
            mul: w(slot::MUL),
            shift: shift as i8,
            flags,
        }
    }

    /// Whether the enable bit is set.
    pub fn registered(&self) -> bool {
        self.msr & 1 != 0
    }

    /// The structure's physical address.
    pub fn gpa(&self) -> u64 {
        self.msr & !1
    }

    /// Nanoseconds per cycle in 32.32 fixed point as a real number: `mul · 2^shift`.
    pub fn ns_q32(&self) -> f64 {
        f64::from(self.mul) * 2f64.powi(i32::from(self.shift))
    }

    /// The counter rate the scale implies: `1e9 · 2^32 / (mul · 2^shift)` Hz.
    pub fn hz(&self) -> f64 {
        1e9 * 2f64.powi(32) / self.ns_q32()
    }
}

/// How far a ROM's GetCycleFrequency may be from [`Pvclock::hz`]: the rounding of the 32.32
/// scale only. A ROM works with nanoseconds per cycle in 32.32 fixed point — `mul · 2^shift`
/// rounded to an integer, off by less than one unit, a relative `1 / (mul · 2^shift)` — and
/// divides `1e9 · 2^32` by it, rounding again (less than 1 Hz); taking the quotient first and
/// shifting it after (`(1e9 · 2^32 / mul) · 2^-shift`) moves the same units around. Twice
/// both, whatever the order: `2 · (hz / (mul · 2^shift) + 1)` Hz — 4.5 Hz at 2.3 GHz, where a
/// scale 1 % off is 23 MHz.
pub(crate) fn scale_tolerance(pv: &Pvclock) -> f64 {
    2.0 * (pv.hz() / pv.ns_q32() + 1.0)
}

/// The MSR as a verdict names it.
fn msr_name() -> String {
    format!("MSR_KVM_SYSTEM_TIME_NEW {MSR_KVM_SYSTEM_TIME_NEW:#x}")
}

/// The calling CPU's registered pvclock area, or None after judging its absence: a failure
/// when the ROM promised kvmclock (`expect`), a note otherwise.
fn registered(r: &VectorResult, f: &mut Findings, expect: bool, what: &str) -> Option<Pvclock> {
    let pv = Pvclock::at(r);
    if pv.registered() {
        return Some(pv);
    }
    let seen = format!(
        "the calling CPU has no pvclock area registered after the call ({} reads {:#x}{})",
        msr_name(),
        pv.msr,
        if pv.msr == 0 {
            ""
        } else {
            ", enable bit clear"
        }
    );
    if expect {
        f.fail(format!(
            "{seen}: a ROM built for KVM takes its time from kvmclock where CPUID offers it"
        ));
    } else {
        f.note(format!(
            "{seen}: {what} is not from kvmclock, not checked against it"
        ));
    }
    None
}

/// The scale read consistently from a filled structure, or None after judging why not.
fn scale(pv: &Pvclock, f: &mut Findings) -> Option<()> {
    let (before, after) = pv.version;
    if pv.msr >> 32 != 0 || pv.gpa() > u64::from(crate::guest::layout::LOWMEM_MAPPED) {
        f.fail(format!(
            "the pvclock area registered at {:#x} lies outside the guest's low memory",
            pv.gpa()
        ));
        return None;
    }
    if before != after || before & 1 != 0 {
        f.inconclusive(format!(
            "KVM was updating the pvclock area at {:#x} while the guest read it (version \
             {before} then {after})",
            pv.gpa()
        ));
        return None;
    }
    if pv.mul == 0 {
        f.fail(format!(
            "the pvclock area registered at {:#x} holds no scale (version {before}, \
             tsc_to_system_mul 0): KVM never wrote it",
            pv.gpa()
        ));
        return None;
    }
    Some(())
}

/// GetCycleFrequency against the scale of the pvclock area the calling CPU registered.
pub(crate) fn frequency(ctx: &Ctx) -> Spec {
    let expect = ctx.expect_kvmclock;
    b(
        ctx,
        Call::GetCycleFrequency,
        "GetCycleFrequency() against the pvclock area the calling CPU registered",
    )
    .post(pvclock_reads())
    .check(move |s, f| judge_frequency(s.r, f, expect))
}

fn judge_frequency(r: &VectorResult, f: &mut Findings, expect: bool) {
    let Some(pv) = registered(r, f, expect, "GetCycleFrequency") else {
        return;
    };
    if scale(&pv, f).is_none() {
        return;
    }
    let got = u64::from(r.regs.eax) | u64::from(r.regs.edx) << 32;
    let (want, tolerance) = (pv.hz(), scale_tolerance(&pv));
    let off = got as f64 - want;
    let source = format!(
        "the pvclock area at {:#x} ({} = {:#x}, tsc_to_system_mul {:#x}, tsc_shift {}): \
         1e9·2^32/(mul·2^shift) = {want:.1} Hz",
        pv.gpa(),
        msr_name(),
        pv.msr,
        pv.mul,
        pv.shift
    );
    if off.abs() > tolerance {
        f.fail(format!(
            "{got} Hz, but {source}: {off:+.1} Hz ({:+.4} %), more than the ±{tolerance:.1} Hz \
             the 32.32 scale's rounding allows",
            off / want * 100.0
        ));
    } else {
        let stable = if pv.flags & 1 != 0 { ", stable" } else { "" };
        f.note(format!(
            "{got} Hz from {source} ({off:+.1} Hz, within ±{tolerance:.1} Hz{stable})"
        ));
    }
}

/// GetWallclockTime against the host's clock (kvm engine: its PM timer is on the host's
/// monotonic clock, and the suite knows the Unix time of its count 0): two PM-timer readings
/// bracket the call.
pub(crate) fn wallclock(ctx: &Ctx) -> Option<Spec> {
    if ctx.engine != Engine::Kvm {
        return None;
    }
    let pm = ctx.pm_timer()?;
    let expect = ctx.expect_kvmclock;
    let mut post = vec![Op::ReadPm {
        pm,
        slot: slot::PM_AFTER,
    }];
    post.extend(pvclock_reads());
    Some(
        b(
            ctx,
            Call::GetWallclockTime,
            "GetWallclockTime() against the host's clock",
        )
        .pre([Op::ReadPm {
            pm,
            slot: slot::PM_BEFORE,
        }])
        .post(post)
        .check(move |s, f| judge_wallclock(s, f, pm, expect)),
    )
}

fn judge_wallclock(s: &Seen<'_>, f: &mut Findings, pm: PmTimer, expect: bool) {
    let r = s.r;
    if registered(r, f, expect, "GetWallclockTime").is_none() {
        return;
    }
    let Some(origin) = s.host_clock else {
        f.note("the run's PM timer is not on the host's clock: not checked against it");
        return;
    };
    let at = |k: u8| r.x(usize::from(k));
    let (before, after) = (at(slot::PM_BEFORE), at(slot::PM_AFTER));
    let span = PmTimer::secs(pm.elapsed(before, after));
    if span > HOST_BRACKET_S {
        f.inconclusive(format!(
            "the host was too busy to place the call on its clock: {:.1} ms passed between the \
             PM-timer readings around it",
            span * 1e3
        ));
        return;
    }
    let host = |count: u32| (origin + Duration::from_secs_f64(PmTimer::secs(count))).as_secs_f64();
    let (lo, hi) = (host(before), host(before) + span);
    let ns = u64::from(r.regs.eax) | u64::from(r.regs.edx) << 32;
    let got = ns as f64 / 1e9;
    let off = if got < lo {
        got - lo
    } else if got > hi {
        got - hi
    } else {
        0.0
    };
    let when = format!(
        "the host's clock read {lo:.6}–{hi:.6} s since 1970 around the call (PM timer of the \
         kvm engine)"
    );
    if off.abs() > HOST_TOLERANCE_S {
        f.fail(format!(
            "{got:.6} s since 1970, but {when}: {off:+.3} s off, more than ±{HOST_TOLERANCE_S} s"
        ));
    } else {
        f.note(format!(
            "{:+.6} s from the host's clock",
            got - (lo + hi) / 2.0
        ));
    }
}

/// Why the kvmclock checks of a ROM that promised kvmclock did not run (None: they did, or
/// the ROM promised nothing).
pub(crate) fn not_checked(ctx: &Ctx) -> Option<String> {
    if !ctx.expect_kvmclock {
        return None;
    }
    ctx.machine
        .no_kvmclock()
        .map(|why| format!("kvmclock not checked: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(words: &[(u8, u32)], eax: u32, edx: u32) -> VectorResult {
        VectorResult::with_words(words, eax, edx)
    }

    /// KVM's scale for a 2.3 GHz TSC (kvm_get_time_scale(1e9, 2.3e9)): mul 0xde9bd37a,
    /// shift -1.
    const MUL: u32 = 0xDE9B_D37A;

    fn area(mul: u32, shift: i8, version: u32) -> Vec<(u8, u32)> {
        vec![
            (slot::MSR, 0x9_F041),
            (slot::VERSION, version),
            (slot::MUL, mul),
            (slot::SHIFT, u32::from(shift as u8) | 1 << 8),
            (slot::VERSION_AFTER, version),
        ]
    }

    #[test]
    fn the_frequency_is_the_pvclock_scale_within_its_rounding() {
        let pv = Pvclock::at(&result(&area(MUL, -1, 2), 0, 0));
        assert!(pv.registered());
        assert_eq!((pv.gpa(), pv.shift, pv.flags), (0x9_F040, -1, 1));
        assert!((pv.hz() - 2_300_000_000.0).abs() < 1.0, "{}", pv.hz());
        let tol = scale_tolerance(&pv);
        assert!((4.0..5.0).contains(&tol), "{tol}");
        let judge = |hz: u64, expect: bool| {
            let mut f = Findings::default();
            judge_frequency(
                &result(&area(MUL, -1, 2), hz as u32, (hz >> 32) as u32),
                &mut f,
                expect,
            );
            f
        };
        let f = judge(2_300_000_000, true);
        assert!(f.problems.is_empty(), "{f:?}");
        assert!(f.notes[0].starts_with("2300000000 Hz from the pvclock area at 0x9f040"));
        // 1 % too fast.
        let f = judge(2_323_000_000, true);
        assert!(
            f.problems[0].starts_with(
                "2323000000 Hz, but the pvclock area at 0x9f040 (MSR_KVM_SYSTEM_TIME_NEW \
                 0x4b564d01 = 0x9f041, tsc_to_system_mul 0xde9bd37a, tsc_shift -1): \
                 1e9·2^32/(mul·2^shift) = "
            ),
            "{f:?}"
        );
        assert!(f.problems[0].contains("(+1.0000 %)"), "{f:?}");
        // The shift taken one too far: half the rate.
        assert!(!judge(1_150_000_000, false).problems.is_empty());
    }

    #[test]
    fn no_registered_area_fails_a_kvm_rom_and_is_noted_for_others() {
        let unregistered = [(slot::MSR, 0u32)];
        let mut f = Findings::default();
        judge_frequency(&result(&unregistered, 1, 0), &mut f, true);
        assert_eq!(
            f.problems,
            [
                "the calling CPU has no pvclock area registered after the call \
              (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads 0x0): a ROM built for KVM takes its \
              time from kvmclock where CPUID offers it"
            ]
        );
        let mut f = Findings::default();
        judge_frequency(&result(&[(slot::MSR, 0x9_F040)], 1, 0), &mut f, false);
        assert!(f.problems.is_empty());
        assert_eq!(
            f.notes,
            [
                "the calling CPU has no pvclock area registered after the call \
              (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads 0x9f040, enable bit clear): \
              GetCycleFrequency is not from kvmclock, not checked against it"
            ]
        );
        // An area being updated: inconclusive; one never written: a failure.
        let mut f = Findings::default();
        judge_frequency(&result(&area(MUL, -1, 3), 1, 0), &mut f, true);
        assert!(f.problems.is_empty());
        assert!(f.inconclusive.unwrap().starts_with("KVM was updating"));
        let mut f = Findings::default();
        judge_frequency(&result(&area(0, 0, 0), 1, 0), &mut f, true);
        assert!(f.problems[0].ends_with("tsc_to_system_mul 0): KVM never wrote it"));
    }

    #[test]
    fn the_wall_clock_is_held_to_the_host_clock_around_the_call() {
        let pm = crate::kvm::PM_TIMER;
        let origin = Duration::from_secs(1_800_000_000);
        // The call between PM counts 3.579545 M and 3.58 M: host time origin + 1 s.
        let mut words = area(MUL, -1, 2);
        words.extend([(slot::PM_BEFORE, 3_579_545), (slot::PM_AFTER, 3_580_000)]);
        let judge = |ns: u64, clock: Option<Duration>| {
            let r = result(&words, ns as u32, (ns >> 32) as u32);
            let seen = Seen {
                r: &r,
                trap: None,
                samples: None,
                earlier: &[],
                reference: None,
                host_clock: clock,
                irq0_coalesced: None,
            };
            let mut f = Findings::default();
            judge_wallclock(&seen, &mut f, pm, true);
            f
        };
        let t = 1_800_000_001 * 1_000_000_000u64;
        let f = judge(t + 50_000, Some(origin));
        assert!(f.problems.is_empty(), "{f:?}");
        assert!(f.notes[0].ends_with(" s from the host's clock"), "{f:?}");
        let f = judge(t - 1_500_000_000, Some(origin));
        assert!(
            f.problems[0].ends_with(": -1.500 s off, more than ±1 s"),
            "{f:?}"
        );
        let f = judge(t, None);
        assert!(f.problems.is_empty() && f.notes[0].contains("not on the host's clock"));
    }
}
