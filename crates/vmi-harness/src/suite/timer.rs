//! The local-APIC calls (63 APICWrite, 64 APICRead) and the timer calls (66–71): the vectors and
//! scenarios the suite runs for them and how it judges them against the ABI's semantics
//! (vmi-abi.md §4.2, §5). Time is measured with the ACPI PM timer and the CMOS RTC, never with
//! the ROM's own figures, so every ROM is judged alike whatever it does inside; the list of
//! checks is in the [suite's documentation](super).
//!
//! Alarm scenarios count interrupts with the guest's alarm handler
//! ([`Op::AlarmStart`]): the hits at the expected vector (IRQ0 = 0x20, or the vector the guest
//! wrote to LVTT), stray ones at any other vector, the TSC at the handler's entry, the CPU
//! that took them, and the in-service bit around the handler's EOI — through APICWrite(0xB0)
//! like Linux when the ROM implements it. Rates are counted over [`Op::Window`]s: running
//! time measured by the PM timer, with the stretches the host did not run the vCPU left out.

use super::judge::{Findings, Seen};
use super::kvmclock;
use super::vectors::{B, Ctx, Plan, Spec, b};
use crate::guest::layout::{self as l, alarm, var};
use crate::guest::vector::{Op, Val, xslot};
use crate::protocol::{MSR_KVM_PV_EOI_EN, PmTimer, Samples, VectorResult};
use vmi_abi::Call;
use vmi_abi::calls::Reg::{Eax, Ecx, Edx};
use vmi_abi::consts::{
    VMI_ALARM_IS_ONESHOT, VMI_ALARM_IS_PERIODIC, VMI_ALARM_WIRED_IRQ0, VMI_ALARM_WIRED_LVTT,
    VMI_CYCLES_AVAILABLE, VMI_CYCLES_REAL, VMI_CYCLES_STOLEN,
};

/// Local-APIC registers the checks use.
const APIC_ID: u32 = 0x20;
const APIC_VERSION: u32 = 0x30;
const APIC_TPR: u32 = 0x80;
const APIC_EOI: u32 = 0xB0;
const APIC_ISR: u32 = 0x100;
const APIC_LVTT: u32 = 0x320;
/// LVTT bit 16.
const LVT_MASKED: u32 = 0x1_0000;
/// The two LVTT vectors the scenarios program (2.6.2x Linux uses 0x31, the 2.6.30-era headers
/// 0x41).
const VEC_A: u8 = 0x31;
const VEC_B: u8 = 0x41;
/// IRQ0 after the PIC remap.
const IRQ0: u8 = 0x20;
/// Rates are judged within this fraction (and one interrupt).
const RATE_TOLERANCE: f64 = 0.10;
/// The reference timer must keep its rate within this fraction for a rate to be judged.
const PLATFORM_TOLERANCE: f64 = 0.05;
/// Polls of its wait that show the second CPU ran through the window.
const AP_RAN: u32 = 1000;
/// Intervals are timed only when their middle half spans at most this fraction of the median.
const REGULARITY: f64 = 0.10;
/// GetCycleFrequency is judged within this fraction of the measured rate.
const FREQ_TOLERANCE: f64 = 0.001;
/// GetCycleCounter(REAL) calls in a row that must never go backwards.
pub(crate) const REAL_RUN: u32 = 1000;
/// GetWallclockTime must agree with the RTC within this many seconds.
const RTC_TOLERANCE_S: f64 = 2.0;

/// Extra words of the alarm vectors.
mod slot {
    /// The first window (5 words).
    pub const W1: u8 = 0;
    /// The second window (5 words) …
    pub const W2: u8 = 5;
    /// … or, in a one-shot, the TSC right before and after the ROM's REAL reading …
    pub const TSC_BEFORE: u8 = 5;
    pub const TSC_AFTER: u8 = 7;
    /// … or, on the second CPU, whether it finished, its CancelAlarm's EAX and how much it
    /// ran …
    pub const AP_END: u8 = 5;
    /// … or, in a periodic alarm acknowledged through the ROM under KVM with PV EOI, the
    /// handler's PV-EOI counts (armed before the EOI, still set after it), and after the
    /// scenario the low word of MSR_KVM_PV_EOI_EN and MSR_KVM_SYSTEM_TIME_NEW (2 words).
    pub const PV_ARMED: u8 = 5;
    pub const PV_LEFT: u8 = 6;
    pub const PV_MSR: u8 = 7;
    pub const PV_SYSTEM_TIME: u8 = 8;
    /// CancelAlarm's EDX:EAX after the scenario.
    pub const CANCEL: u8 = 10;
    /// The alarm handler's counters (see [`super::loads`]).
    pub const HITS: u8 = 12;
    pub const HITS_AP: u8 = 13;
    pub const STRAY: u8 = 14;
    pub const STRAY_VEC: u8 = 15;
    pub const FIRST_TSC: u8 = 16;
    pub const FIRST_REAL: u8 = 18;
    pub const ISR_IN: u8 = 20;
    pub const ISR_STUCK: u8 = 21;
    /// GetCycleFrequency, the period (or one-shot delay), GetCycleCounter(REAL), the expiry.
    pub const FREQ: u8 = 22;
    pub const PERIOD: u8 = 24;
    pub const NOW: u8 = 26;
    pub const EXPIRY: u8 = 28;
    /// Whether the second CPU came up and armed its alarm.
    pub const AP_START: u8 = 30;
}

/// Extra word `k` as a value.
fn x(k: u8) -> Val {
    Val::Mem(xslot(k))
}

/// A ROM call as an op.
fn rom(call: Call, regs: [u32; 3], stack: [Val; 2], words: u8, out: Option<u8>) -> Op {
    Op::Rom {
        call: call as u8,
        eax: Val::Imm(regs[0]),
        edx: Val::Imm(regs[1]),
        ecx: Val::Imm(regs[2]),
        stack,
        stack_words: words,
        out,
    }
}

/// A ROM call with register inputs only.
fn rom0(call: Call, eax: u32, edx: u32, out: Option<u8>) -> Op {
    rom(call, [eax, edx, 0], [Val::Imm(0); 2], 0, out)
}

/// GetCycleCounter(REAL) into `out`.
fn now(out: u8) -> Op {
    rom0(Call::GetCycleCounter, VMI_CYCLES_REAL, 0, Some(out))
}

/// GetCycleFrequency into FREQ, and FREQ / `div` into PERIOD.
fn freq_div(div: u32) -> [Op; 2] {
    [
        rom0(Call::GetCycleFrequency, 0, 0, Some(slot::FREQ)),
        Op::Div64 {
            src: slot::FREQ,
            by: div,
            dst: slot::PERIOD,
        },
    ]
}

/// SetAlarm(`flags`, expiry in extra words `expiry`, period in PERIOD or 0) as an op.
fn set_alarm_op(flags: u32, expiry: u8, periodic: bool) -> Op {
    let (stack, words) = if periodic {
        ([x(slot::PERIOD), x(slot::PERIOD + 1)], 2)
    } else {
        ([Val::Imm(0), Val::Imm(0)], 2)
    };
    Op::Rom {
        call: Call::SetAlarm as u8,
        eax: Val::Imm(flags),
        edx: x(expiry),
        ecx: x(expiry + 1),
        stack,
        stack_words: words,
        out: None,
    }
}

/// The handler's counters into the extra words from [`slot::HITS`].
fn loads() -> Vec<Op> {
    [
        (var::ALARM_HITS, slot::HITS),
        (var::ALARM_HITS_AP, slot::HITS_AP),
        (var::ALARM_STRAY, slot::STRAY),
        (var::ALARM_STRAY_VEC, slot::STRAY_VEC),
        (var::ALARM_FIRST_TSC, slot::FIRST_TSC),
        (var::ALARM_FIRST_TSC + 4, slot::FIRST_TSC + 1),
        (var::ALARM_FIRST_REAL, slot::FIRST_REAL),
        (var::ALARM_FIRST_REAL + 4, slot::FIRST_REAL + 1),
        (var::ALARM_ISR_IN, slot::ISR_IN),
        (var::ALARM_ISR_STUCK, slot::ISR_STUCK),
    ]
    .into_iter()
    .map(|(v, slot)| Op::Load {
        addr: l::VARS + v,
        slot,
    })
    .collect()
}

/// Where an alarm is wired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wiring {
    /// ISA IRQ0 (flags bit 16 clear): vector 0x20 through the PIC.
    Irq0,
    /// The calling CPU's LVTT, with this vector written to it.
    Lvtt(u8),
}

impl Wiring {
    fn flag(self) -> u32 {
        match self {
            Wiring::Irq0 => VMI_ALARM_WIRED_IRQ0,
            Wiring::Lvtt(_) => VMI_ALARM_WIRED_LVTT,
        }
    }

    fn vector(self) -> u8 {
        match self {
            Wiring::Irq0 => IRQ0,
            Wiring::Lvtt(v) => v,
        }
    }

    fn name(self) -> String {
        match self {
            Wiring::Irq0 => "IRQ0".into(),
            Wiring::Lvtt(v) => format!("LVTT vector {v:#04x}"),
        }
    }

    /// What the expected vector is, for a verdict.
    fn expected(self) -> String {
        match self {
            Wiring::Irq0 => "vector 0x20 (IRQ0 through the PIC)".into(),
            Wiring::Lvtt(v) => format!("vector {v:#04x} (the vector written to LVTT)"),
        }
    }
}

/// What the alarm scenarios need: a local APIC that delivers its timer's interrupts (QEMU, or
/// the KVM runner with its irqchip) and a PM timer; IRQ0 alarms and the reference timer
/// beside an LVTT alarm (PIT channel 0) need a PIT whose IRQ0 reaches the guest (QEMU, the
/// KVM runner with its irqchip), the reference beside an IRQ0 alarm an RTC that raises IRQ8
/// (QEMU).
#[derive(Clone, Copy, Debug)]
struct Timing {
    pm: PmTimer,
    /// IRQ0 (the PIT) reaches the guest through the PIC: the IRQ0 alarms run, and the
    /// reference timer beside the LVTT alarms.
    irq0: bool,
    /// The RTC's periodic interrupt reaches the guest (IRQ8): the reference timer beside the
    /// IRQ0 alarms.
    rtc: bool,
    /// The handler acknowledges through APICWrite (the ROM implements it), else natively.
    rom_eoi: bool,
    /// LVTT is written through APICWrite, else natively.
    rom_lvtt: bool,
    apic: u32,
    /// The CPU is KVM's with PV EOI: the handler watches the PV-EOI word around an EOI
    /// through the ROM ([`alarm::PV_EOI`]).
    pv_eoi: bool,
    /// The ROM promised the kvm backend ([`super::SuiteOptions::expect_kvmclock`]): it must
    /// register a PV-EOI word where KVM offers PV EOI.
    kvm_rom: bool,
}

impl Timing {
    fn of(ctx: &Ctx) -> Result<Timing, String> {
        if !ctx.has_pic() && !ctx.irqs.lapic {
            return Err(format!(
                "no interrupt controller on the {} engine: nothing raises an alarm's interrupt",
                ctx.engine
            ));
        }
        if !ctx.machine.has_apic() {
            return Err(format!("no local APIC answers at {:#x}", l::APIC_PHYS));
        }
        let pm = ctx.pm_timer().ok_or_else(|| {
            "no ACPI PM timer found (FADT in the low 64 MiB) to measure time without the ROM"
                .to_string()
        })?;
        Ok(Timing {
            pm,
            irq0: ctx.irqs.irq0,
            rtc: ctx.has_pic(),
            rom_eoi: ctx.implements(Call::APICWrite),
            rom_lvtt: ctx.implements(Call::APICWrite),
            apic: ctx.map.apic(),
            pv_eoi: ctx.machine.kvm_pv_eoi(),
            kvm_rom: ctx.expect_kvmclock,
        })
    }

    /// Writes `value` to LVTT like Linux: through APICWrite, or natively without it.
    fn lvtt(&self, value: u32) -> Op {
        if self.rom_lvtt {
            rom0(Call::APICWrite, APIC_LVTT, value, None)
        } else {
            Op::Store {
                addr: self.apic + APIC_LVTT,
                value: Val::Imm(value),
            }
        }
    }

    /// The handler's mode for `wiring`: EOI like Linux (IRQ0 at the PIC), the in-service bit
    /// checked around an APIC EOI.
    fn mode(&self, wiring: Wiring, native_eoi: bool) -> u32 {
        match wiring {
            Wiring::Irq0 => alarm::EOI_NATIVE,
            Wiring::Lvtt(_) if native_eoi || !self.rom_eoi => alarm::EOI_NATIVE | alarm::CHECK_ISR,
            Wiring::Lvtt(_) if self.pv_eoi => alarm::EOI_ROM | alarm::CHECK_ISR | alarm::PV_EOI,
            Wiring::Lvtt(_) => alarm::EOI_ROM | alarm::CHECK_ISR,
        }
    }

    /// Whether an alarm handler of `mode` watches PV EOI.
    fn watches_pv_eoi(mode: u32) -> bool {
        mode & alarm::PV_EOI != 0
    }

    /// The ops that start recording and program LVTT for `wiring`.
    fn start(&self, wiring: Wiring, mode: u32, lvtt: u32) -> Vec<Op> {
        let mut ops = vec![Op::AlarmStart {
            vector: wiring.vector(),
            mode,
        }];
        if let Wiring::Lvtt(_) = wiring {
            ops.push(self.lvtt(lvtt));
        }
        ops
    }

    /// A window of interrupts on while an alarm of `rate` Hz runs (None: none should fire):
    /// `secs` of effective time, at most 2.5 times as long (and 1 s) in all.
    fn window(&self, secs: f64, rate: Option<u32>, slot: u8) -> Op {
        Op::Window {
            pm: self.pm,
            run: PmTimer::ticks(secs),
            max: PmTimer::ticks((2.5 * secs).clamp(secs, 1.0)),
            period: rate.map_or(u32::MAX, |r| PmTimer::HZ / r.max(1)),
            sti: true,
            slot,
        }
    }

    /// The reference timer for an alarm of `rate` Hz wired as `wiring` ([`Reference::of`]),
    /// where the engine raises its interrupt.
    fn reference(&self, wiring: Wiring, rate: u32) -> Option<Op> {
        let r = self.reference_of(wiring, rate)?;
        Some(Op::RefTimer {
            pit: r.pit,
            rate: r.rate,
        })
    }

    /// [`Reference::of`] where the engine raises the reference's interrupt (None: no
    /// reference timer there).
    fn reference_of(&self, wiring: Wiring, rate: u32) -> Option<Reference> {
        let raised = match wiring {
            Wiring::Lvtt(_) => self.irq0,
            Wiring::Irq0 => self.rtc,
        };
        raised.then(|| Reference::of(wiring, rate))
    }

    /// The end of every alarm scenario: CancelAlarm(`flags`), everything stopped natively,
    /// the handler's counters.
    fn finish(&self, flags: u32) -> Vec<Op> {
        let mut ops = vec![
            rom0(Call::CancelAlarm, flags, 0, Some(slot::CANCEL)),
            Op::AlarmQuiesce,
        ];
        ops.extend(loads());
        ops
    }
}

/// The reference timer beside an alarm: a timer the guest programs itself on hardware the
/// alarm does not use, delivered through the PIC like the most fragile path — PIT channel 0
/// at the same rate beside an LVTT alarm, the RTC's periodic interrupt at the next power of
/// two beside an IRQ0 alarm (the PIT is the ROM's then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reference {
    pit: bool,
    rate: u32,
}

impl Reference {
    fn of(wiring: Wiring, rate: u32) -> Reference {
        match wiring {
            Wiring::Lvtt(_) => Reference { pit: true, rate },
            Wiring::Irq0 => Reference {
                pit: false,
                rate: rate.next_power_of_two().clamp(2, 8192),
            },
        }
    }

    fn name(&self) -> String {
        if self.pit {
            format!("PIT channel 0 at {} Hz", self.rate)
        } else {
            format!("the RTC's periodic interrupt at {} Hz", self.rate)
        }
    }
}

/// What a [`Op::Window`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Win {
    hits: u32,
    reference: u32,
    effective: u32,
    total: u32,
    stalls: u32,
}

impl Win {
    fn at(r: &VectorResult, slot: u8) -> Win {
        let w = |k: u8| r.x(usize::from(slot + k));
        Win {
            hits: w(0),
            reference: w(1),
            effective: w(2),
            total: w(3),
            stalls: w(4),
        }
    }

    fn total_ms(&self) -> f64 {
        PmTimer::secs(self.total) * 1e3
    }

    /// The time the window had, for a verdict.
    fn running(&self) -> String {
        let eff = PmTimer::secs(self.effective) * 1e3;
        if self.stalls == 0 {
            format!("{eff:.1} ms (PM timer)")
        } else {
            format!(
                "{eff:.1} ms effective of {:.1} ms (PM timer, {} stall(s) of the vCPU)",
                self.total_ms(),
                self.stalls
            )
        }
    }
}

/// The quartiles of the intervals between consecutive entries of `tsc` (TSC cycles, low 32
/// bits; None: fewer than 4 intervals).
fn quartiles(tsc: &[u32]) -> Option<Quartiles> {
    let mut d: Vec<u32> = tsc
        .iter()
        .zip(tsc.iter().skip(1))
        .map(|(a, b)| b.wrapping_sub(*a))
        .collect();
    if d.len() < 4 {
        return None;
    }
    d.sort_unstable();
    let n = d.len();
    Some(Quartiles {
        q1: *d.get(n / 4)?,
        median: *d.get(n / 2)?,
        q3: *d.get(3 * n / 4)?,
        n,
    })
}

/// Quartiles of a list of intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quartiles {
    q1: u32,
    median: u32,
    q3: u32,
    n: usize,
}

impl Quartiles {
    /// Whether the middle half lies within [`REGULARITY`] of the median: a periodic source
    /// the host delivered on time (a busy host spreads the intervals wide).
    fn regular(&self) -> bool {
        f64::from(self.q3.saturating_sub(self.q1)) <= REGULARITY * f64::from(self.median)
    }

    fn describe(&self, ms: impl Fn(u32) -> f64) -> String {
        format!(
            "median {:.3} ms, middle half {:.3}–{:.3} ms, of {} intervals",
            ms(self.median),
            ms(self.q1),
            ms(self.q3),
            self.n
        )
    }
}

/// Judges a periodic alarm's rate: the median interval between its interrupts (the TSC at the
/// handler's entry) against the period in TSC cycles — the TSC's rate measured with the PM
/// timer over the window, so time comes without the ROM — within [`RATE_TOLERANCE`]. The
/// count must also agree with the reference timer's within a factor of two (an alarm that
/// stops, or fires twice per period). Timing needs a host that delivers interrupts on time:
/// when the [`Reference`] — the guest's own timer in the same window — strays from its rate
/// by more than [`PLATFORM_TOLERANCE`], or its intervals or the alarm's spread wider than
/// [`REGULARITY`] (a busy host delivers late and in bursts), the vector is inconclusive (and
/// the suite runs it again).
fn judge_rate(
    f: &mut Findings,
    w: Win,
    samples: Option<&Samples>,
    rate: u32,
    reference: Option<Reference>,
    what: &str,
) {
    let (Some(s), Some(hz)) = (samples, samples.and_then(Samples::tsc_hz)) else {
        f.fail(format!(
            "{what}: set-up: the guest sent no SAMPLES record with a measured window"
        ));
        return;
    };
    let case = RateCase {
        w,
        s,
        hz,
        rate,
        reference,
        what,
    };
    match reference {
        Some(_) => {
            if let Some(r) = case.timed_reference(f) {
                case.judge_alarm(f, Some(r));
            }
        }
        None => case.judge_alarm(f, None),
    }
}

/// One periodic alarm's window, for [`judge_rate`].
struct RateCase<'a> {
    w: Win,
    s: &'a Samples,
    /// The TSC's rate over the window (PM timer).
    hz: f64,
    rate: u32,
    /// The reference timer (None: the engine raises none; the count is then judged against
    /// the window's running time).
    reference: Option<Reference>,
    what: &'a str,
}

impl RateCase<'_> {
    /// TSC cycles in ms.
    fn ms(&self, cycles: u32) -> f64 {
        f64::from(cycles) * 1e3 / self.hz
    }

    /// Makes the vector inconclusive: the host was too busy to time interrupts, because …
    fn busy(&self, f: &mut Findings, why: String) {
        let counts = match self.reference {
            Some(_) => format!("{} and {}", self.w.hits, self.w.reference),
            None => self.w.hits.to_string(),
        };
        f.inconclusive(format!(
            "the host was too busy to time interrupts: {why} ({counts} interrupts in {})",
            self.w.running()
        ));
    }

    /// The reference timer's intervals when it kept its rate (else inconclusive, None).
    fn timed_reference(&self, f: &mut Findings) -> Option<Quartiles> {
        let reference = self.reference?;
        let period = 1e3 / f64::from(reference.rate);
        match quartiles(&self.s.reference) {
            Some(r)
                if r.regular()
                    && (self.ms(r.median) / period - 1.0).abs() <= PLATFORM_TOLERANCE =>
            {
                Some(r)
            }
            r => {
                self.busy(
                    f,
                    format!(
                        "{}, programmed by the guest, came at {}, not every {period:.3} ms ± {} %",
                        reference.name(),
                        r.map_or("too few times to time".into(), |r| {
                            r.describe(|c| self.ms(c))
                        }),
                        PLATFORM_TOLERANCE * 100.0
                    ),
                );
                None
            }
        }
    }

    /// How many interrupts the alarm should have raised in the window: what the reference's
    /// count says, else the rate over the window's effective running time.
    fn due(&self) -> f64 {
        match self.reference {
            Some(reference) => {
                f64::from(self.w.reference) * f64::from(self.rate) / f64::from(reference.rate)
            }
            None => PmTimer::secs(self.w.effective) * f64::from(self.rate),
        }
    }

    /// `(name: count)` of the reference timer, for a verdict (empty without one).
    fn reference_count(&self) -> String {
        self.reference
            .map(|r| format!(" ({}: {})", r.name(), self.w.reference))
            .unwrap_or_default()
    }

    /// The alarm's median interval against the period, and its count against the reference's
    /// or, without one, against the window's running time (`r`: the reference's intervals).
    fn judge_alarm(&self, f: &mut Findings, r: Option<Quartiles>) {
        let (w, what, rate) = (self.w, self.what, self.rate);
        let period_ms = 1e3 / f64::from(rate);
        let Some(a) = quartiles(&self.s.alarm) else {
            f.fail(format!(
                "{what}: expected interrupts every {period_ms:.3} ms ({rate} Hz), got {} in {}{}",
                w.hits,
                w.running(),
                self.reference_count()
            ));
            return;
        };
        let ms = |c| self.ms(c);
        let named = self.reference.zip(r);
        if !a.regular() {
            let why = match named {
                Some((reference, r)) => format!(
                    "the alarm's interrupts came at {}, {} at {}",
                    a.describe(ms),
                    reference.name(),
                    r.describe(ms)
                ),
                None => format!("the alarm's interrupts came at {}", a.describe(ms)),
            };
            self.busy(f, why);
            return;
        }
        let measured = self.hz / f64::from(a.median);
        let due = self.due();
        if (measured / f64::from(rate) - 1.0).abs() > RATE_TOLERANCE {
            let beside = named
                .map(|(reference, r)| {
                    format!(", {} came every {:.3} ms", reference.name(), ms(r.median))
                })
                .unwrap_or_default();
            f.fail(format!(
                "{what}: interrupts every {:.3} ms (median of {} intervals), expected every \
                 {period_ms:.3} ms ± {} % (the TSC runs at {:.1} MHz by the PM timer{beside}): \
                 {measured:.1} Hz",
                ms(a.median),
                a.n,
                RATE_TOLERANCE * 100.0,
                self.hz / 1e6,
            ));
        } else if self.reference.is_none() && f64::from(w.hits) < due / 2.0 {
            // A host that does not run the vCPU coalesces its timer interrupts: without a
            // reference timer too few cannot be told from a ROM's fault (too many can).
            self.busy(
                f,
                format!(
                    "the alarm came at {} but only {} times in {}, where about {due:.0} were due \
                     at {rate} Hz (no reference timer to tell lost interrupts from a slow alarm)",
                    a.describe(ms),
                    w.hits,
                    w.running()
                ),
            );
        } else if f64::from(w.hits) < due / 2.0 || f64::from(w.hits) > due * 2.0 {
            let expected = match self.reference {
                Some(reference) => format!(
                    "while {}, programmed by the guest, delivered {} (about {due:.0} at {rate} \
                     Hz)",
                    reference.name(),
                    w.reference
                ),
                None => format!(
                    "expected about {due:.0} at {rate} Hz over that running time (no reference \
                     timer)"
                ),
            };
            f.fail(format!(
                "{what}: {} interrupts in {}, {expected}",
                w.hits,
                w.running(),
            ));
        } else {
            f.note(format!(
                "{what}: every {:.3} ms (median of {}), {measured:.1} Hz, {} interrupts in {}{}",
                ms(a.median),
                a.n,
                w.hits,
                w.running(),
                self.reference_count()
            ));
        }
    }
}

/// Fails for interrupts at other vectors than `wiring`'s.
fn judge_vector(f: &mut Findings, r: &VectorResult, wiring: Wiring) {
    let stray = r.x(usize::from(slot::STRAY));
    if stray > 0 {
        f.fail(format!(
            "{stray} interrupt(s) arrived at vector {:#04x} (the last one), expected them at {}, \
             where {} arrived",
            r.x(usize::from(slot::STRAY_VEC)),
            wiring.expected(),
            r.x(usize::from(slot::HITS))
        ));
    }
}

/// Fails when the handler's EOI left the vector in service (LVTT alarms).
fn judge_eoi(f: &mut Findings, r: &VectorResult, t: Timing, native: bool, wiring: Wiring) {
    let Wiring::Lvtt(v) = wiring else { return };
    let stuck = r.x(usize::from(slot::ISR_STUCK));
    if stuck > 0 {
        let how = if native || !t.rom_eoi {
            "a native EOI".to_string()
        } else {
            "APICWrite(0xB0, 0)".to_string()
        };
        f.fail(format!(
            "after {how} in the handler the in-service bit of vector {v:#04x} was still set \
             ({stuck} of {} interrupts)",
            r.x(usize::from(slot::HITS))
        ));
    }
}

/// A periodic alarm at `rate` Hz wired as `wiring`: the expected number of interrupts over a
/// window measured by the PM timer, at the expected vector, and acknowledged.
fn periodic(ctx: &Ctx, t: Timing, wiring: Wiring, rate: u32, native_eoi: bool) -> Spec {
    let flags = VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL | wiring.flag();
    let eoi = match wiring {
        Wiring::Lvtt(_) if native_eoi || !t.rom_eoi => ", native EOI",
        Wiring::Lvtt(_) => ", EOI through APICWrite",
        Wiring::Irq0 => "",
    };
    let what = format!(
        "SetAlarm(PERIODIC|REAL, now, freq/{rate}) on {}{eoi}",
        wiring.name()
    );
    let secs = if rate >= 1000 { 0.15 } else { 0.4 };
    let mode = t.mode(wiring, native_eoi);
    let pv = Timing::watches_pv_eoi(mode);
    let mut pre = t.start(wiring, mode, u32::from(wiring.vector()));
    pre.extend(t.reference(wiring, rate));
    pre.extend(freq_div(rate));
    pre.push(now(slot::NOW));
    let mut post = vec![t.window(secs, Some(rate), slot::W1), Op::SendSamples];
    post.extend(t.finish(flags));
    if pv {
        post.extend(pv_eoi_reads());
    }
    b(ctx, Call::SetAlarm, what)
        .reg(Eax, flags)
        .regv(Edx, x(slot::NOW))
        .regv(Ecx, x(slot::NOW + 1))
        .stack([x(slot::PERIOD), x(slot::PERIOD + 1)])
        .pre(pre)
        .post(post)
        .check(move |s, f| {
            let reference = t.reference_of(wiring, rate);
            let mut g = Findings::default();
            judge_rate(
                &mut g,
                Win::at(s.r, slot::W1),
                s.samples,
                rate,
                reference,
                "rate",
            );
            late_irq0(f, g, wiring, reference, s.irq0_coalesced);
            judge_vector(f, s.r, wiring);
            judge_eoi(f, s.r, t, native_eoi, wiring);
            if pv {
                judge_pv_eoi(f, s.r, t.kvm_rom);
            }
        })
}

/// Moves the rate findings `g` into `f` — but an IRQ0 alarm without a reference timer whose
/// rate failed in a run where the KVM runner's IRQ0 thread woke late (`coalesced` edges: a
/// busy host delays that thread, and its edges then come regularly but too seldom, which
/// nothing in the guest can tell from a slow alarm) is inconclusive instead.
fn late_irq0(
    f: &mut Findings,
    g: Findings,
    wiring: Wiring,
    reference: Option<Reference>,
    coalesced: Option<u64>,
) {
    f.notes.extend(g.notes);
    if let Some(why) = g.inconclusive {
        f.inconclusive(why);
    }
    match (wiring, reference, coalesced) {
        (Wiring::Irq0, None, Some(n)) if n > 0 && !g.problems.is_empty() => {
            f.inconclusive(format!(
                "the host was too busy to time interrupts: the KVM runner's IRQ0 thread woke \
                 late and coalesced {n} PIT edge(s) in this run, so the rate cannot be judged \
                 ({})",
                g.problems.join("; ")
            ));
        }
        _ => f.problems.extend(g.problems),
    }
}

/// After a scenario whose handler watched PV EOI: its counts, MSR_KVM_PV_EOI_EN's low word
/// (a 32-bit guest's word lies below 4 GiB) and MSR_KVM_SYSTEM_TIME_NEW.
fn pv_eoi_reads() -> [Op; 4] {
    [
        Op::Load {
            addr: l::VARS + var::ALARM_PV_ARMED,
            slot: slot::PV_ARMED,
        },
        Op::Load {
            addr: l::VARS + var::ALARM_PV_LEFT,
            slot: slot::PV_LEFT,
        },
        Op::Rdmsr {
            msr: MSR_KVM_PV_EOI_EN,
            slot: slot::PV_MSR,
        },
        Op::Rdmsr {
            msr: kvmclock::MSR_KVM_SYSTEM_TIME_NEW,
            slot: slot::PV_SYSTEM_TIME,
        },
    ]
}

/// What KVM shows of the ROM's paravirtual EOI (KVM offers it): the calling CPU registered a
/// PV-EOI word (MSR_KVM_PV_EOI_EN's enable bit; a ROM built for KVM must where it takes its
/// time from kvmclock — one running natively, with no pvclock area registered either, is
/// noted, as is any other ROM), and wherever KVM had armed it before the ROM's
/// APICWrite(0xB0, 0) the call cleared it — that is the EOI, no APIC write. A word KVM never
/// armed is noted: the EOI was then the APIC write.
fn judge_pv_eoi(f: &mut Findings, r: &VectorResult, kvm_rom: bool) {
    let msr = u64::from(r.x(usize::from(slot::PV_MSR)));
    let system_time = r.x64(usize::from(slot::PV_SYSTEM_TIME));
    let hits = r.x(usize::from(slot::HITS));
    let (armed, left) = (
        r.x(usize::from(slot::PV_ARMED)),
        r.x(usize::from(slot::PV_LEFT)),
    );
    if msr & 1 == 0 {
        let what = format!(
            "the calling CPU has no PV-EOI word registered (MSR_KVM_PV_EOI_EN \
             {MSR_KVM_PV_EOI_EN:#x} reads {msr:#x}) though KVM offers PV EOI (CPUID 0x40000001 \
             EAX bit 6)"
        );
        if kvm_rom && system_time & 1 != 0 {
            f.fail(format!(
                "{what}: a ROM built for KVM acknowledges through PV EOI where KVM offers it \
                 (it takes its time from kvmclock: MSR_KVM_SYSTEM_TIME_NEW {system_time:#x})"
            ));
        } else if kvm_rom {
            f.note(format!(
                "{what}; nor a pvclock area (MSR_KVM_SYSTEM_TIME_NEW {system_time:#x}): the ROM \
                 runs natively here"
            ));
        } else {
            f.note(format!("{what}: its EOI is the APIC write"));
        }
        return;
    }
    let at = msr & !1;
    if left > 0 {
        f.fail(format!(
            "KVM armed PV EOI (bit 0 of the word at {at:#x}, MSR_KVM_PV_EOI_EN {msr:#x}) and \
             after APICWrite(0xB0, 0) it was still set at {left} of {hits} interrupts (armed \
             at {armed}): the call did not acknowledge them"
        ));
    } else if armed == 0 {
        f.note(format!(
            "PV EOI registered at {at:#x} (MSR_KVM_PV_EOI_EN {msr:#x}) but never armed by KVM: \
             its word read 0 before APICWrite(0xB0, 0) at all {hits} interrupts (KVM arms it \
             only for an interrupt its local APIC keeps in service): each EOI was the APIC \
             write"
        ));
    } else {
        f.note(format!(
            "PV EOI: KVM armed the word at {at:#x} (MSR_KVM_PV_EOI_EN {msr:#x}) at {armed} of \
             {hits} interrupts, and APICWrite(0xB0, 0) cleared it each time"
        ));
    }
}

/// Seconds of counter cycles at the ROM's frequency (for notes).
fn ms(cycles: i128, hz: u64) -> f64 {
    if hz == 0 {
        0.0
    } else {
        cycles as f64 * 1e3 / hz as f64
    }
}

/// A one-shot alarm `1/div` s ahead wired as `wiring`: exactly one interrupt, never before
/// the expiry (the TSC at the handler's entry when REAL is the TSC, else REAL read through
/// the ROM right after the entry).
fn one_shot(ctx: &Ctx, t: Timing, wiring: Wiring, div: u32) -> Spec {
    let flags = VMI_ALARM_IS_ONESHOT | VMI_CYCLES_REAL | wiring.flag();
    let what = format!(
        "SetAlarm(ONESHOT|REAL, now + freq/{div}, 0) on {}",
        wiring.name()
    );
    let mode = t.mode(wiring, false) | alarm::READ_REAL;
    let mut pre = t.start(wiring, mode, u32::from(wiring.vector()));
    pre.extend(freq_div(div));
    pre.extend([
        Op::Rdtsc {
            slot: slot::TSC_BEFORE,
        },
        now(slot::NOW),
        Op::Rdtsc {
            slot: slot::TSC_AFTER,
        },
        Op::Add64 {
            a: slot::NOW,
            b: slot::PERIOD,
            dst: slot::EXPIRY,
        },
    ]);
    let mut post = vec![t.window(0.15, None, slot::W1)];
    post.extend(t.finish(flags));
    b(ctx, Call::SetAlarm, what)
        .reg(Eax, flags)
        .regv(Edx, x(slot::EXPIRY))
        .regv(Ecx, x(slot::EXPIRY + 1))
        .stack([Val::Imm(0), Val::Imm(0)])
        .pre(pre)
        .post(post)
        .check(move |s, f| judge_one_shot(s, f, wiring))
}

fn judge_one_shot(s: &Seen<'_>, f: &mut Findings, wiring: Wiring) {
    let r = s.r;
    let hits = r.x(usize::from(slot::HITS));
    let w = Win::at(r, slot::W1);
    judge_vector(f, r, wiring);
    if hits != 1 {
        f.fail(format!(
            "expected exactly 1 interrupt at {} within {:.1} ms, got {hits}",
            wiring.expected(),
            w.total_ms()
        ));
    }
    if hits == 0 {
        return;
    }
    let hz = r.x64(usize::from(slot::FREQ));
    let expiry = r.x64(usize::from(slot::EXPIRY));
    let now = r.x64(usize::from(slot::NOW));
    let tsc_is_real =
        (r.x64(usize::from(slot::TSC_BEFORE))..=r.x64(usize::from(slot::TSC_AFTER))).contains(&now);
    let (entry, by) = if tsc_is_real {
        (
            r.x64(usize::from(slot::FIRST_TSC)),
            "the TSC at the handler's entry",
        )
    } else {
        (
            r.x64(usize::from(slot::FIRST_REAL)),
            "GetCycleCounter(REAL) right after the handler's entry",
        )
    };
    let late = i128::from(entry) - i128::from(expiry);
    if late < 0 {
        f.fail(format!(
            "fired {:.3} ms before its expiry: {by} {entry:#x} < expiry {expiry:#x}",
            ms(-late, hz)
        ));
    } else {
        f.note(format!(
            "fired {:.3} ms after its expiry ({by}, set {:.3} ms ahead)",
            ms(late, hz),
            ms(i128::from(expiry) - i128::from(now), hz)
        ));
    }
}

/// LVTT masked through APICWrite holds a periodic alarm back; unmasking releases it.
fn masked(ctx: &Ctx, t: Timing) -> Spec {
    let wiring = Wiring::Lvtt(VEC_B);
    let flags = VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL | wiring.flag();
    let rate = 1000;
    let via = if t.rom_lvtt { "APICWrite" } else { "MMIO" };
    let what = format!(
        "SetAlarm(PERIODIC|REAL, now, freq/{rate}) on LVTT {VEC_B:#04x} masked ({via}), then \
         unmasked"
    );
    let mut pre = t.start(wiring, t.mode(wiring, false), LVT_MASKED | u32::from(VEC_B));
    pre.extend(t.reference(wiring, rate));
    pre.extend(freq_div(rate));
    pre.push(now(slot::NOW));
    let mut post = vec![
        t.window(0.05, Some(rate), slot::W1),
        t.lvtt(u32::from(VEC_B)),
        t.window(0.1, Some(rate), slot::W2),
        Op::SendSamples,
    ];
    post.extend(t.finish(flags));
    b(ctx, Call::SetAlarm, what)
        .reg(Eax, flags)
        .regv(Edx, x(slot::NOW))
        .regv(Ecx, x(slot::NOW + 1))
        .stack([x(slot::PERIOD), x(slot::PERIOD + 1)])
        .pre(pre)
        .post(post)
        .check(move |s, f| {
            let held = Win::at(s.r, slot::W1);
            if held.hits > 0 {
                f.fail(format!(
                    "{} interrupt(s) in {:.1} ms while LVTT was masked (bit 16), expected none",
                    held.hits,
                    held.total_ms()
                ));
            }
            judge_rate(
                f,
                Win::at(s.r, slot::W2),
                s.samples,
                rate,
                t.reference_of(wiring, rate),
                "after unmasking",
            );
            judge_vector(f, s.r, wiring);
        })
}

/// A periodic alarm the second CPU sets on its own LVTT arrives there, not on the first CPU,
/// whose CancelAlarm finds nothing armed (alarms are per CPU).
fn second_cpu(ctx: &Ctx, t: Timing) -> Spec {
    let wiring = Wiring::Lvtt(VEC_B);
    let flags = VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL | wiring.flag();
    let rate = 1000;
    let what = format!(
        "SetAlarm(PERIODIC|REAL, now, freq/{rate}) on the second CPU's LVTT {VEC_B:#04x}, \
         CancelAlarm on the first"
    );
    let mut pre = t.start(
        wiring,
        t.mode(wiring, false) | alarm::PER_CPU,
        u32::from(VEC_B),
    );
    pre.extend(freq_div(rate));
    pre.push(Op::ApAlarmStart {
        flags,
        vector: VEC_B,
        via_rom: t.rom_lvtt,
        period: slot::PERIOD,
        pm: t.pm,
        slot: slot::AP_START,
    });
    let mut post = vec![
        t.window(0.1, Some(rate), slot::W1),
        Op::ApAlarmStop {
            pm: t.pm,
            slot: slot::AP_END,
        },
    ];
    post.extend(t.finish(flags));
    b(ctx, Call::SetAlarm, what)
        .site(ctx, Call::CancelAlarm)
        .reg(Eax, flags)
        .pre(pre)
        .post(post)
        .second_cpu()
        .check(move |s, f| judge_second_cpu(s, f, rate))
}

fn judge_second_cpu(s: &Seen<'_>, f: &mut Findings, rate: u32) {
    let r = s.r;
    let w = |k: u8| r.x(usize::from(k));
    if w(slot::AP_START) != 1 {
        f.note("the second CPU did not come up (INIT-SIPI-SIPI): not checked");
        return;
    }
    if w(slot::AP_START + 1) != 1 {
        f.fail("SetAlarm on the second CPU did not return within 0.5 s");
        return;
    }
    let win = Win::at(r, slot::W1);
    let on_ap = w(slot::HITS_AP);
    let on_bsp = w(slot::HITS).saturating_sub(on_ap);
    let polls = w(slot::AP_END + 2);
    if on_bsp > 0 {
        f.fail(format!(
            "{on_bsp} interrupt(s) of the second CPU's alarm arrived on the first CPU (and \
             {on_ap} on the second)"
        ));
    }
    // The rate is judged on the first CPU; here: that the alarm runs on the second.
    if on_ap > 0 {
        f.note(format!(
            "the second CPU took {on_ap} interrupts in {:.1} ms ({rate} Hz), the first none",
            win.total_ms()
        ));
    } else if polls < AP_RAN {
        f.inconclusive(format!(
            "the host hardly ran the second CPU: it polled {polls} times in {:.1} ms and took no \
             interrupt",
            win.total_ms()
        ));
    } else {
        f.fail(format!(
            "the second CPU took no interrupt at {VEC_B:#04x} in {:.1} ms ({rate} Hz), while it \
             ran (it polled {polls} times)",
            win.total_ms()
        ));
    }
    if r.regs.eax != 0 {
        f.fail(format!(
            "CancelAlarm on the first CPU returned EAX {:#x}, expected 0: only the second CPU \
             had an alarm (alarms are per CPU)",
            r.regs.eax
        ));
    }
    if w(slot::AP_END) != 1 {
        f.fail("the second CPU did not finish (its CancelAlarm did not return within 0.5 s)");
    } else {
        f.note(format!(
            "CancelAlarm on the second CPU returned {:#x}",
            w(slot::AP_END + 1)
        ));
    }
    judge_vector(f, r, Wiring::Lvtt(VEC_B));
}

/// The alarm scenarios of SetAlarm: those on IRQ0 where the engine raises it, the second
/// CPU's where it can start one.
fn set_alarm(ctx: &Ctx, t: Timing) -> Vec<Spec> {
    let mut v = Vec::new();
    if t.irq0 {
        v.push(periodic(ctx, t, Wiring::Irq0, 100, false));
        v.push(periodic(ctx, t, Wiring::Irq0, 1000, false));
    }
    v.extend([
        periodic(ctx, t, Wiring::Lvtt(VEC_A), 100, false),
        periodic(ctx, t, Wiring::Lvtt(VEC_B), 1000, false),
        periodic(ctx, t, Wiring::Lvtt(VEC_B), 1000, true),
    ]);
    if t.irq0 {
        v.push(one_shot(ctx, t, Wiring::Irq0, 20));
    }
    v.extend([one_shot(ctx, t, Wiring::Lvtt(VEC_A), 20), masked(ctx, t)]);
    if ctx.irqs.smp {
        v.push(second_cpu(ctx, t));
    }
    v
}

/// What SetAlarm's scenarios leave out on this engine, and why.
fn set_alarm_notes(ctx: &Ctx, t: Timing) -> Vec<String> {
    let mut notes = Vec::new();
    if !t.irq0 {
        notes.push(format!(
            "IRQ0 alarms not measured: nothing raises IRQ0 on the {} engine (its PIT is the \
             runner's own model, wired to no interrupt line without the in-kernel irqchip); \
             the LVTT alarms ran without a reference timer (the PIT's and the RTC's \
             interrupts, which would be it, are not raised there either): their counts are \
             judged against the running time",
            ctx.engine
        ));
    } else if !t.rtc {
        notes.push(format!(
            "the IRQ0 alarms ran without a reference timer (the RTC's periodic interrupt, \
             which would be it, is not raised on the {} engine: its CMOS is the runner's own \
             model): their counts are judged against the running time",
            ctx.engine
        ));
    }
    if !ctx.irqs.smp {
        notes.push(format!(
            "the second-CPU alarm not run: the {} engine has one vCPU",
            ctx.engine
        ));
    }
    notes
}

/// The flags of the CancelAlarm scenarios' LVTT alarms at [`VEC_B`].
const CANCEL_PERIODIC: u32 = VMI_ALARM_IS_PERIODIC | VMI_CYCLES_REAL | VMI_ALARM_WIRED_LVTT;
const CANCEL_ONESHOT: u32 = VMI_ALARM_IS_ONESHOT | VMI_CYCLES_REAL | VMI_ALARM_WIRED_LVTT;

/// Recording and LVTT at [`VEC_B`] like Linux, then `extra`.
fn lvtt_start(t: Timing, extra: &[Op]) -> Vec<Op> {
    let wiring = Wiring::Lvtt(VEC_B);
    let mut ops = t.start(wiring, t.mode(wiring, false), u32::from(VEC_B));
    ops.extend_from_slice(extra);
    ops
}

/// Every timer stopped natively, then the handler's counters.
fn quiesced() -> Vec<Op> {
    let mut ops = vec![Op::AlarmQuiesce];
    ops.extend(loads());
    ops
}

/// CancelAlarm stops a running periodic alarm (at most the interrupt already pending comes
/// after it) and says it was armed.
fn cancel_running(ctx: &Ctx, t: Timing) -> Spec {
    let [freq, div] = freq_div(1000);
    let mut post = vec![t.window(0.06, None, slot::W2)];
    post.extend(quiesced());
    b(
        ctx,
        Call::CancelAlarm,
        "CancelAlarm(PERIODIC|REAL|LVTT) of a running 1000 Hz alarm",
    )
    .reg(Eax, CANCEL_PERIODIC)
    .pre(lvtt_start(
        t,
        &[
            freq,
            div,
            now(slot::NOW),
            set_alarm_op(CANCEL_PERIODIC, slot::NOW, true),
            t.window(0.03, Some(1000), slot::W1),
        ],
    ))
    .post(post)
    .check(|s, f| {
        let before = Win::at(s.r, slot::W1);
        let after = Win::at(s.r, slot::W2);
        f.expect("EAX", 1, s.r.regs.eax, "it was armed");
        if before.hits == 0 {
            f.note(
                "set-up: the alarm never fired before it was cancelled (see SetAlarm): whether \
                 it stops is not judged",
            );
        } else if after.hits > 1 {
            f.fail(format!(
                "{} interrupts in {:.1} ms after CancelAlarm, expected at most the one already \
                 pending",
                after.hits,
                after.total_ms()
            ));
        }
    })
}

/// A one-shot that fired is disarmed: CancelAlarm says 0.
fn cancel_fired(ctx: &Ctx, t: Timing) -> Spec {
    let [freq, div] = freq_div(200);
    b(
        ctx,
        Call::CancelAlarm,
        "CancelAlarm(ONESHOT|REAL|LVTT) after the one-shot fired",
    )
    .reg(Eax, CANCEL_ONESHOT)
    .pre(lvtt_start(
        t,
        &[
            freq,
            div,
            now(slot::NOW),
            Op::Add64 {
                a: slot::NOW,
                b: slot::PERIOD,
                dst: slot::EXPIRY,
            },
            set_alarm_op(CANCEL_ONESHOT, slot::EXPIRY, false),
            t.window(0.04, None, slot::W1),
        ],
    ))
    .post(quiesced())
    .check(|s, f| {
        let hits = s.r.x(usize::from(slot::HITS));
        if hits != 1 {
            f.note(format!(
                "set-up: the one-shot fired {hits} times (see SetAlarm): not judged"
            ));
            return;
        }
        f.expect(
            "EAX",
            0,
            s.r.regs.eax,
            "a one-shot is disarmed when it fires",
        );
    })
}

/// A one-shot 1 s ahead is armed: CancelAlarm says 1 (and it must not have fired).
fn cancel_armed(ctx: &Ctx, t: Timing) -> Spec {
    let [freq, _] = freq_div(1);
    b(
        ctx,
        Call::CancelAlarm,
        "CancelAlarm(ONESHOT|REAL|LVTT) of a one-shot 1 s ahead",
    )
    .reg(Eax, CANCEL_ONESHOT)
    .pre(lvtt_start(
        t,
        &[
            freq,
            now(slot::NOW),
            Op::Add64 {
                a: slot::NOW,
                b: slot::FREQ,
                dst: slot::EXPIRY,
            },
            set_alarm_op(CANCEL_ONESHOT, slot::EXPIRY, false),
        ],
    ))
    .post(quiesced())
    .check(|s, f| {
        f.expect("EAX", 1, s.r.regs.eax, "it was armed");
        let hits = s.r.x(usize::from(slot::HITS));
        if hits > 0 {
            f.fail(format!(
                "the one-shot 1 s ahead fired {hits} time(s) at once"
            ));
        }
    })
}

/// Nothing armed on `counter`: CancelAlarm says 0.
fn cancel_idle(ctx: &Ctx, counter: u32) -> Spec {
    let name = if counter == VMI_CYCLES_REAL {
        "REAL"
    } else {
        "AVAILABLE"
    };
    let flags = counter | VMI_ALARM_WIRED_LVTT;
    b(
        ctx,
        Call::CancelAlarm,
        format!("CancelAlarm({name}|LVTT) with nothing armed"),
    )
    .reg(Eax, flags)
    .pre([rom0(Call::CancelAlarm, flags, 0, None)])
    .post([Op::AlarmQuiesce])
    .check(|s, f| f.expect("EAX", 0, s.r.regs.eax, "nothing was armed"))
}

/// The alarm scenarios of CancelAlarm: it stops a running periodic alarm and says it was
/// armed; it says 0 for a counter with nothing armed, 1 for an armed one-shot, 0 for a
/// one-shot that already fired.
fn cancel_alarm(ctx: &Ctx, t: Timing) -> Vec<Spec> {
    vec![
        cancel_running(ctx, t),
        cancel_fired(ctx, t),
        cancel_armed(ctx, t),
        cancel_idle(ctx, VMI_CYCLES_REAL),
        cancel_idle(ctx, VMI_CYCLES_AVAILABLE),
    ]
}

/// GetCycleFrequency against the rate of GetCycleCounter(REAL) measured with the PM timer over
/// ~200 ms, each end a (REAL, PM timer, REAL) bracket; the TSC's rate is noted too.
fn frequency(ctx: &Ctx, pm: PmTimer) -> Spec {
    let pair = |real: bool, slot: u8| Op::TimePair { pm, real, slot };
    b(
        ctx,
        Call::GetCycleFrequency,
        "GetCycleFrequency() against GetCycleCounter(REAL) over 200 ms of the PM timer",
    )
    .pre([
        pair(true, 0),
        pair(false, 5),
        Op::Window {
            pm,
            run: PmTimer::ticks(0.2),
            max: PmTimer::ticks(0.6),
            period: u32::MAX,
            sti: false,
            slot: 10,
        },
        pair(true, 15),
        pair(false, 20),
    ])
    .check(move |s, f| judge_frequency(s, f, pm))
}

/// The rate of a counter between two [`Op::TimePair`]s: (lowest, highest) Hz it can be.
fn rate_bounds(r: &VectorResult, pm: PmTimer, start: u8, end: u8) -> Option<(f64, f64)> {
    let at = |k: u8| r.x64(usize::from(k));
    let ticks = pm.elapsed(r.x(usize::from(start + 4)), r.x(usize::from(end + 4)));
    if ticks < 2 {
        return None;
    }
    let (before_start, after_start) = (at(start), at(start + 2));
    let (before_end, after_end) = (at(end), at(end + 2));
    let least = before_end.checked_sub(after_start)? as f64;
    let most = after_end.checked_sub(before_start)? as f64;
    let hz = f64::from(PmTimer::HZ);
    Some((
        least * hz / f64::from(ticks + 1),
        most * hz / f64::from(ticks - 1),
    ))
}

fn judge_frequency(s: &Seen<'_>, f: &mut Findings, pm: PmTimer) {
    let hz = u64::from(s.r.regs.eax) | u64::from(s.r.regs.edx) << 32;
    let Some((low, high)) = rate_bounds(s.r, pm, 0, 15) else {
        f.fail(
            "GetCycleCounter(REAL) went backwards, or the PM timer did not advance, over the \
             measurement",
        );
        return;
    };
    let got = hz as f64;
    let mid = (low + high) / 2.0;
    if got < low * (1.0 - FREQ_TOLERANCE) || got > high * (1.0 + FREQ_TOLERANCE) {
        f.fail(format!(
            "{hz} Hz, but GetCycleCounter(REAL) advanced at {mid:.0} Hz (between {low:.0} and \
             {high:.0}) against the PM timer: {:+.3} %, more than ±{} %",
            (got / mid - 1.0) * 100.0,
            FREQ_TOLERANCE * 100.0
        ));
    } else if high - low > FREQ_TOLERANCE * mid {
        // Readings bracketed so loosely that a rate ±0.1 % off would pass: not judged.
        f.inconclusive(format!(
            "the host was too busy to time GetCycleCounter(REAL): its rate against the PM timer \
             lies between {low:.0} and {high:.0} Hz, wider than ±{} %",
            FREQ_TOLERANCE * 100.0 / 2.0
        ));
    } else {
        f.note(format!(
            "REAL measured at {mid:.0} Hz (±{:.4} %) against the PM timer: {:+.4} %",
            (high - low) / mid * 50.0,
            (got / mid - 1.0) * 100.0
        ));
    }
    if let Some((tl, th)) = rate_bounds(s.r, pm, 5, 20) {
        f.note(format!("the TSC ran at {:.0} Hz", (tl + th) / 2.0));
    }
}

/// Unix time of the RTC reading in extra words `slot`, `slot + 1` ([`Op::ReadRtc`]), or why it
/// cannot be decoded.
pub(crate) fn rtc_unix(lo: u32, hi: u32) -> Result<i64, String> {
    let [sec, min, hour, day] = lo.to_le_bytes();
    let [month, year, century, reg_b] = hi.to_le_bytes();
    let binary = reg_b & 0x04 != 0;
    let h24 = reg_b & 0x02 != 0;
    let num = |v: u8| -> Option<i64> {
        if binary {
            Some(i64::from(v))
        } else if v >> 4 < 10 && v & 0xF < 10 {
            Some(i64::from(v >> 4) * 10 + i64::from(v & 0xF))
        } else {
            None
        }
    };
    let bad =
        |what: &str, v: u8| format!("RTC {what} {v:#04x} is not a number (status B {reg_b:#04x})");
    let pm = !h24 && hour & 0x80 != 0;
    let hour_raw = if h24 { hour } else { hour & 0x7F };
    let mut h = num(hour_raw).ok_or_else(|| bad("hours", hour))?;
    if !h24 {
        h %= 12;
        if pm {
            h += 12;
        }
    }
    let y = num(year).ok_or_else(|| bad("year", year))?;
    let c = match num(century) {
        Some(c) if (19..=21).contains(&c) => c,
        _ if y < 70 => 20,
        _ => 19,
    };
    let (sec, min, day, month) = (
        num(sec).ok_or_else(|| bad("seconds", sec))?,
        num(min).ok_or_else(|| bad("minutes", min))?,
        num(day).ok_or_else(|| bad("day", day))?,
        num(month).ok_or_else(|| bad("month", month))?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return Err(format!(
            "RTC date {}-{month:02}-{day:02} {h:02}:{min:02}:{sec:02} is not a date",
            c * 100 + y
        ));
    }
    Ok(days_from_civil(c * 100 + y, month, day) * 86_400 + h * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// GetWallclockTime against the RTC, and advancing with the PM timer and with
/// GetCycleCounter(REAL) (without a PM timer: its sanity only).
fn wallclock(ctx: &Ctx, pm: Option<PmTimer>) -> Vec<Spec> {
    let edx_eax = |r: &VectorResult| u64::from(r.regs.eax) | u64::from(r.regs.edx) << 32;
    let sane = move |s: &Seen<'_>, f: &mut Findings| {
        let ns = edx_eax(s.r);
        const Y2000: u64 = 946_684_800 * 1_000_000_000;
        const Y2200: u64 = 7_258_118_400 * 1_000_000_000;
        f.ensure((Y2000..Y2200).contains(&ns), || {
            format!("{ns} ns since 1970 is not between 2000 and 2200")
        });
    };
    let Some(pm_timer) = pm else {
        return vec![b(ctx, Call::GetWallclockTime, "GetWallclockTime()").check(sane)];
    };
    let rtc = b(
        ctx,
        Call::GetWallclockTime,
        "GetWallclockTime() against the CMOS RTC",
    )
    .pre([Op::ReadRtc { slot: 0 }])
    .check(move |s, f| {
        sane(s, f);
        let ns = edx_eax(s.r);
        match rtc_unix(s.r.x(0), s.r.x(1)) {
            Err(why) => f.fail(format!("set-up: {why}")),
            Ok(unix) => {
                // The RTC shows whole seconds: the time is in [unix, unix + 1).
                let off = ns as f64 / 1e9 - (unix as f64 + 0.5);
                if off.abs() > RTC_TOLERANCE_S + 0.5 {
                    f.fail(format!(
                        "{:.3} s since 1970, but the RTC reads {unix} s: {off:+.3} s off (at most \
                         ±{RTC_TOLERANCE_S} s)",
                        ns as f64 / 1e9
                    ));
                } else {
                    f.note(format!("{off:+.3} s from the RTC"));
                }
            }
        }
    });
    let real = |slot| now(slot);
    let pm = |slot| Op::ReadPm { pm: pm_timer, slot };
    let advance = b(
        ctx,
        Call::GetWallclockTime,
        "GetWallclockTime() 150 ms later, against the PM timer and GetCycleCounter(REAL)",
    )
    .pre([
        pm(18),
        real(0),
        rom0(Call::GetWallclockTime, 0, 0, Some(2)),
        real(4),
        pm(19),
        rom0(Call::GetCycleFrequency, 0, 0, Some(6)),
        Op::Window {
            pm: pm_timer,
            run: PmTimer::ticks(0.15),
            max: PmTimer::ticks(0.5),
            period: u32::MAX,
            sti: false,
            slot: 8,
        },
        pm(20),
        real(14),
    ])
    .post([real(16), pm(21)])
    .check(move |s, f| judge_advance(s, f, edx_eax(s.r), pm_timer));
    vec![rtc, advance]
}

/// GetWallclockTime's second reading (`second`) against its first: it must advance as real
/// time — the PM timer's count between the two calls' brackets — and as GetCycleCounter(REAL)
/// divided by GetCycleFrequency (consistent with the counter), both within 1 ms + 0.1 %.
fn judge_advance(s: &Seen<'_>, f: &mut Findings, second: u64, pm: PmTimer) {
    let r = s.r;
    let moved = second as f64 - r.x64(2) as f64;
    let ms = |ns: f64| ns / 1e6;
    let within = |least: f64, most: f64| {
        let slack = 1e6 + most * 0.001;
        moved >= least - slack && moved <= most + slack
    };
    // The PM timer: the first call lies between readings 18 and 19, the second between 20
    // and 21.
    let pm_ns = |from: usize, to: usize| {
        f64::from(pm.elapsed(r.x(from), r.x(to))) * 1e9 / f64::from(PmTimer::HZ)
    };
    let (least, most) = (pm_ns(19, 20), pm_ns(18, 21));
    if !within(least, most) {
        f.fail(format!(
            "advanced {:.3} ms between two calls, while the PM timer counted between {:.3} and \
             {:.3} ms",
            ms(moved),
            ms(least),
            ms(most)
        ));
    }
    let hz = r.x64(6);
    let at = |k: usize| r.x64(k);
    let (Some(least), Some(most)) = (at(14).checked_sub(at(4)), at(16).checked_sub(at(0))) else {
        f.fail("set-up: GetCycleCounter(REAL) went backwards");
        return;
    };
    if hz == 0 {
        f.fail("set-up: GetCycleFrequency returned 0");
        return;
    }
    let ns = |cycles: u64| cycles as f64 * 1e9 / hz as f64;
    let (least, most) = (ns(least), ns(most));
    if within(least, most) {
        f.note(format!(
            "advanced {:.3} ms, the PM timer {:.3}–{:.3} ms, REAL {:.3}–{:.3} ms",
            ms(moved),
            ms(pm_ns(19, 20)),
            ms(pm_ns(18, 21)),
            ms(least),
            ms(most)
        ));
    } else {
        f.fail(format!(
            "advanced {:.3} ms between two calls, while GetCycleCounter(REAL) advanced between \
             {:.3} and {:.3} ms (at GetCycleFrequency {hz} Hz)",
            ms(moved),
            ms(least),
            ms(most)
        ));
    }
}

/// The existing sanity vectors of the counter calls.
fn counter(ctx: &Ctx) -> Vec<Spec> {
    let edx_eax = |r: &VectorResult| u64::from(r.regs.eax) | u64::from(r.regs.edx) << 32;
    let call = Call::GetCycleCounter;
    let mut specs: Vec<Spec> = (1..=2)
        .map(|k| {
            b(ctx, call, format!("GetCycleCounter(REAL) #{k}"))
                .reg(Eax, VMI_CYCLES_REAL)
                .check(move |s, f| {
                    let now = edx_eax(s.r);
                    for e in s.earlier {
                        let prev = edx_eax(e);
                        f.ensure(now >= prev, || {
                            format!("REAL went backwards: {now:#x} after {prev:#x}")
                        });
                    }
                })
        })
        .collect();
    specs.push(real_run(ctx));
    specs.push(
        b(ctx, call, "GetCycleCounter(AVAILABLE)")
            .reg(Eax, VMI_CYCLES_AVAILABLE)
            .plain(),
    );
    specs.push(
        b(ctx, call, "GetCycleCounter(STOLEN)")
            .reg(Eax, VMI_CYCLES_STOLEN)
            .check(move |s, f| {
                let stolen = edx_eax(s.r);
                let real = s.earlier.iter().map(|e| edx_eax(e)).max().unwrap_or(0);
                f.ensure(stolen == 0 || stolen <= real, || {
                    format!("STOLEN {stolen:#x} exceeds REAL {real:#x}")
                });
            }),
    );
    specs
}

/// GetCycleCounter(REAL) [`REAL_RUN`] times in a row ([`Op::RealRun`]), then once more at the
/// site: each reading at least the one before.
fn real_run(ctx: &Ctx) -> Spec {
    let edx_eax = |r: &VectorResult| u64::from(r.regs.eax) | u64::from(r.regs.edx) << 32;
    b(
        ctx,
        Call::GetCycleCounter,
        format!("GetCycleCounter(REAL) {REAL_RUN} times in a row"),
    )
    .reg(Eax, VMI_CYCLES_REAL)
    .pre([Op::RealRun {
        count: REAL_RUN,
        slot: 0,
    }])
    .check(move |s, f| {
        let r = s.r;
        let back = r.x(0);
        let (first, last, at_site) = (r.x64(5), r.x64(7), edx_eax(r));
        if back > 0 {
            f.fail(format!(
                "REAL went backwards {back} time(s) in {REAL_RUN} calls in a row: the first, \
                 {:#x} after {:#x}",
                r.x64(3),
                r.x64(1)
            ));
        }
        if at_site < last {
            f.fail(format!(
                "REAL went backwards: {at_site:#x} at the call site after {last:#x}, the last of \
                 {REAL_RUN} calls in a row"
            ));
        }
        if f.problems.is_empty() {
            f.note(format!(
                "{REAL_RUN} calls in a row: REAL advanced by {} cycles, never backwards",
                at_site.wrapping_sub(first)
            ));
        }
    })
}

/// The vectors of the timer calls (66–71), or why none can run.
pub(crate) fn timer(ctx: &Ctx, call: Call) -> Plan {
    let timing = Timing::of(ctx);
    let pm = ctx.pm_timer();
    let kvmclock = ctx.machine.kvmclock();
    let mut notes = Vec::new();
    let specs = match call {
        Call::GetCycleFrequency => {
            let mut v = vec![sane_frequency(ctx)];
            v.extend(pm.map(|pm| frequency(ctx, pm)));
            v.extend(kvmclock.then(|| kvmclock::frequency(ctx)));
            notes.extend(
                pm.is_none()
                    .then(|| format!("not measured: {}", no_pm_timer(ctx))),
            );
            notes.extend(kvmclock::not_checked(ctx));
            v
        }
        Call::GetCycleCounter => counter(ctx),
        Call::SetAlarm | Call::CancelAlarm => {
            let t = timing.as_ref().ok().copied();
            if let Err(why) = &timing {
                notes.push(format!("not measured: {why}"));
            }
            if let (Some(t), Call::SetAlarm) = (t, call) {
                notes.extend(set_alarm_notes(ctx, t));
            }
            if call == Call::SetAlarm {
                set_alarm_plan(ctx, t)
            } else {
                cancel_alarm_plan(ctx, t)
            }
        }
        Call::GetWallclockTime => {
            let mut v = wallclock(ctx, pm);
            v.extend(kvmclock.then(|| kvmclock::wallclock(ctx)).flatten());
            notes.extend(
                pm.is_none()
                    .then(|| format!("not measured: {}", no_pm_timer(ctx))),
            );
            notes.extend(kvmclock::not_checked(ctx));
            v
        }
        _ => vec![
            b(ctx, call, "WallclockUpdated()")
                .check(|s, f| f.note(format!("EAX = {:#x}", s.r.regs.eax))),
        ],
    };
    Plan::Run(specs, notes)
}

/// Why there is no PM timer to measure time with.
fn no_pm_timer(ctx: &Ctx) -> String {
    format!(
        "no ACPI PM timer found (FADT in the low 64 MiB) on the {} engine to measure time \
         without the ROM",
        ctx.engine
    )
}

/// GetCycleFrequency's sanity vector.
fn sane_frequency(ctx: &Ctx) -> Spec {
    b(ctx, Call::GetCycleFrequency, "GetCycleFrequency()").check(move |s, f| {
        let hz = u64::from(s.r.regs.eax) | u64::from(s.r.regs.edx) << 32;
        f.ensure(hz != 0 && hz < 1_000_000_000_000, || {
            format!("{hz} Hz is not a sane cycle frequency (0 < f < 1 THz)")
        });
        f.ensure(hz / 1000 <= u64::from(u32::MAX), || {
            format!("{hz} Hz / 1000 does not fit 32 bits (Linux's cpu_khz)")
        });
        f.note(format!("{hz} Hz"));
    })
}

/// SetAlarm: the far-future one-shot everywhere, the alarm scenarios where time can be
/// measured with interrupts.
fn set_alarm_plan(ctx: &Ctx, t: Option<Timing>) -> Vec<Spec> {
    let far = b(ctx, Call::SetAlarm, "SetAlarm(ONESHOT|REAL, far future, 0)")
        .reg(Eax, VMI_ALARM_IS_ONESHOT | VMI_CYCLES_REAL)
        .reg(Edx, 0xFFFF_FFFF)
        .reg(Ecx, 0x7FFF_FFFF)
        .stack([Val::Imm(0), Val::Imm(0)]);
    let far = match t {
        Some(_) => far.post([
            rom0(Call::CancelAlarm, VMI_CYCLES_REAL, 0, None),
            Op::AlarmQuiesce,
        ]),
        None => far,
    };
    let mut v = vec![far.plain()];
    v.extend(t.map(|t| set_alarm(ctx, t)).unwrap_or_default());
    v
}

/// CancelAlarm: with nothing armed everywhere, the scenarios where they can be measured.
fn cancel_alarm_plan(ctx: &Ctx, t: Option<Timing>) -> Vec<Spec> {
    let mut v = vec![
        b(ctx, Call::CancelAlarm, "CancelAlarm(REAL)")
            .reg(Eax, VMI_CYCLES_REAL)
            .check(|s, f| f.note(format!("EAX = {:#x}", s.r.regs.eax))),
    ];
    v.extend(t.map(|t| cancel_alarm(ctx, t)).unwrap_or_default());
    v
}

/// The vectors of APICWrite and APICRead.
pub(crate) fn apic(ctx: &Ctx, call: Call) -> Plan {
    if !ctx.machine.has_apic() {
        return Plan::Skip(format!(
            "no local APIC answers at {:#x} on the {} engine",
            l::APIC_PHYS,
            ctx.engine
        ));
    }
    let apic = ctx.map.apic();
    let specs = if call == Call::APICWrite {
        apic_write(ctx, apic)
    } else {
        apic_read(ctx, apic)
    };
    Plan::Run(specs, Vec::new())
}

/// APICWrite: TPR read back natively, LVTT read back with APICRead, EOI of a taken interrupt.
fn apic_write(ctx: &Ctx, apic: u32) -> Vec<Spec> {
    let tpr = apic + APIC_TPR;
    let mut specs: Vec<Spec> = [0x20u32, 0x10]
        .into_iter()
        .map(|v| {
            b(ctx, Call::APICWrite, format!("APICWrite(0x80 TPR, {v:#x})"))
                .reg(Eax, APIC_TPR)
                .reg(Edx, v)
                .post([
                    Op::Load { addr: tpr, slot: 0 },
                    Op::Store {
                        addr: tpr,
                        value: Val::Imm(0),
                    },
                ])
                .check(move |s, f| {
                    f.expect(
                        "TPR (read directly)",
                        v,
                        s.r.x(0) & 0xFF,
                        "the value written",
                    )
                })
        })
        .collect();
    if ctx.implements(Call::APICRead) {
        specs.push(lvtt_read_back(ctx, apic));
    }
    if ctx.has_lapic_irqs() {
        specs.push(eoi(ctx, apic));
    }
    specs
}

/// APICRead: ID and version against the guest's own MMIO read, TPR as the guest set it.
fn apic_read(ctx: &Ctx, apic: u32) -> Vec<Spec> {
    let tpr = apic + APIC_TPR;
    let direct = |reg: u32, name: &str| -> Spec {
        b(ctx, Call::APICRead, format!("APICRead({reg:#x} {name})"))
            .reg(Eax, reg)
            .post([Op::Load {
                addr: apic + reg,
                slot: 0,
            }])
            .check(|s, f| f.expect("EAX", s.r.x(0), s.r.regs.eax, "a direct read"))
    };
    vec![
        direct(APIC_ID, "ID"),
        direct(APIC_VERSION, "version"),
        b(ctx, Call::APICRead, "APICRead(0x80 TPR) with TPR = 0x30")
            .reg(Eax, APIC_TPR)
            .pre([Op::Store {
                addr: tpr,
                value: Val::Imm(0x30),
            }])
            .post([Op::Store {
                addr: tpr,
                value: Val::Imm(0),
            }])
            .check(|s, f| f.expect("EAX & 0xff", 0x30, s.r.regs.eax & 0xFF, "TPR")),
    ]
}

/// APICWrite(0x320 LVTT, masked vector 0x41) reads back through APICRead (vector and mask
/// bit: Linux's mask and unmask of the timer are a read-modify-write through the ROM).
fn lvtt_read_back(ctx: &Ctx, apic: u32) -> Spec {
    let value = LVT_MASKED | u32::from(VEC_B);
    b(
        ctx,
        Call::APICWrite,
        format!("APICWrite(0x320 LVTT, {value:#x}) read back with APICRead"),
    )
    .reg(Eax, APIC_LVTT)
    .reg(Edx, value)
    .pre([Op::Or {
        addr: apic + 0xF0,
        bits: 0x100,
    }])
    .post([
        rom0(Call::APICRead, APIC_LVTT, 0, Some(0)),
        Op::AlarmQuiesce,
    ])
    .check(move |s, f| {
        f.expect(
            "APICRead(0x320) & 0x100ff",
            value,
            s.r.x(0) & 0x1_00FF,
            "vector and mask as written",
        )
    })
}

/// APICWrite(0xB0 EOI, 0) clears the in-service bit of an interrupt the guest took and left
/// unacknowledged (a self-IPI at [`VEC_B`]).
fn eoi(ctx: &Ctx, apic: u32) -> Spec {
    let isr = apic + APIC_ISR + 0x10 * (u32::from(VEC_B) / 32);
    let bit = 1u32 << (VEC_B % 32);
    let b: B = b(
        ctx,
        Call::APICWrite,
        format!("APICWrite(0xb0 EOI, 0) after an interrupt at {VEC_B:#04x}"),
    );
    b.reg(Eax, APIC_EOI)
        .reg(Edx, 0)
        .pre([
            Op::AlarmStart {
                vector: VEC_B,
                mode: alarm::EOI_NONE,
            },
            Op::SelfIpi { vector: VEC_B },
            Op::Load { addr: isr, slot: 0 },
            Op::Load {
                addr: l::VARS + var::ALARM_HITS,
                slot: 1,
            },
        ])
        .post([Op::Load { addr: isr, slot: 2 }, Op::AlarmQuiesce])
        .check(move |s, f| {
            if s.r.x(1) == 1 && s.r.x(0) & bit == 0 {
                // Measured on kvm-pvm: its local APIC delivers without setting ISR.
                f.inconclusive(format!(
                    "the engine's local APIC delivered the self-IPI at {VEC_B:#04x} but did not \
                     keep it in service (ISR {:#x}, bit {} clear before any EOI): there is no \
                     in-service bit for an EOI to clear",
                    isr - apic,
                    VEC_B % 32
                ));
                return;
            }
            if s.r.x(1) != 1 || s.r.x(0) & bit == 0 {
                f.fail(format!(
                    "set-up: the self-IPI at {VEC_B:#04x} was taken {} time(s), in service {}",
                    s.r.x(1),
                    s.r.x(0) & bit != 0
                ));
                return;
            }
            if s.r.x(2) & bit != 0 {
                f.fail(format!(
                    "the in-service bit of vector {VEC_B:#04x} (ISR {:#x}, bit {}) is still set \
                     after the call: the EOI did not reach the local APIC",
                    isr - apic,
                    VEC_B % 32
                ));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StepId;

    #[test]
    fn a_failed_irq0_rate_is_inconclusive_only_where_the_runners_irq0_thread_woke_late() {
        let failed = || Findings {
            problems: vec!["rate: interrupts every 2.995 ms".into()],
            notes: vec!["seen".into()],
            inconclusive: None,
        };
        let mut f = Findings::default();
        late_irq0(&mut f, failed(), Wiring::Irq0, None, Some(3));
        assert!(f.problems.is_empty(), "{f:?}");
        let why = f.inconclusive.unwrap();
        assert!(why.contains("coalesced 3 PIT edge(s)"), "{why}");
        assert!(why.contains("every 2.995 ms"), "{why}");
        assert_eq!(f.notes, ["seen"]);
        // On time, on LVTT, with a reference, or not the runner's PIT: the failure stands.
        let lvtt = Wiring::Lvtt(0x31);
        let pit = Some(Reference {
            pit: true,
            rate: 100,
        });
        for (wiring, reference, coalesced) in [
            (Wiring::Irq0, None, Some(0)),
            (lvtt, None, Some(3)),
            (Wiring::Irq0, pit, Some(3)),
            (Wiring::Irq0, None, None),
        ] {
            let mut f = Findings::default();
            late_irq0(&mut f, failed(), wiring, reference, coalesced);
            assert_eq!(f.problems.len(), 1, "{wiring:?} {coalesced:?}");
            assert_eq!(f.inconclusive, None);
        }
    }

    #[test]
    fn rtc_readings_decode() {
        // 2026-11-29 18:37:02 in BCD, 24 h, century 0x20.
        let lo = u32::from_le_bytes([0x02, 0x37, 0x18, 0x29]);
        let hi = u32::from_le_bytes([0x11, 0x26, 0x20, 0x02]);
        assert_eq!(rtc_unix(lo, hi), Ok(1_795_977_422));
        // The same in binary, 12 h (6 PM), no century register.
        let lo = u32::from_le_bytes([2, 37, 0x86, 29]);
        let hi = u32::from_le_bytes([11, 26, 0, 0x04]);
        assert_eq!(rtc_unix(lo, hi), Ok(1_795_977_422));
        // 12 AM is hour 0.
        let lo = u32::from_le_bytes([0, 0, 12, 1]);
        let hi = u32::from_le_bytes([1, 70, 19, 0x04]);
        assert_eq!(rtc_unix(lo, hi), Ok(0));
        assert!(
            rtc_unix(0xFFFF_FFFF, 0x02)
                .unwrap_err()
                .contains("not a number")
        );
        let lo = u32::from_le_bytes([0, 0, 0, 0x32]);
        assert!(
            rtc_unix(lo, 0x0220_2601)
                .unwrap_err()
                .contains("not a date")
        );
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    /// A vector result whose extra words are `words`.
    fn result(words: &[(u8, u32)]) -> VectorResult {
        VectorResult::with_words(words, 0, 0)
    }

    #[test]
    fn pv_eoi_is_judged_by_what_kvm_shows() {
        let judge = |words: &[(u8, u32)], kvm_rom: bool| {
            let mut f = Findings::default();
            let mut w = vec![(slot::HITS, 40)];
            w.extend_from_slice(words);
            judge_pv_eoi(&mut f, &result(&w), kvm_rom);
            f
        };
        let registered = (slot::PV_MSR, 0x9_DB61);
        let clock = (slot::PV_SYSTEM_TIME, 0x9_DB41);
        // Armed at every interrupt and cleared by the call: the EOI went through PV EOI.
        let f = judge(&[registered, clock, (slot::PV_ARMED, 40)], true);
        assert!(f.problems.is_empty(), "{f:?}");
        assert_eq!(
            f.notes,
            [
                "PV EOI: KVM armed the word at 0x9db60 (MSR_KVM_PV_EOI_EN 0x9db61) at 40 of 40 \
              interrupts, and APICWrite(0xB0, 0) cleared it each time"
            ]
        );
        // Armed, and the call left it set: no acknowledgement.
        let f = judge(
            &[registered, clock, (slot::PV_ARMED, 40), (slot::PV_LEFT, 40)],
            true,
        );
        assert_eq!(
            f.problems,
            [
                "KVM armed PV EOI (bit 0 of the word at 0x9db60, MSR_KVM_PV_EOI_EN 0x9db61) and \
              after APICWrite(0xB0, 0) it was still set at 40 of 40 interrupts (armed at 40): \
              the call did not acknowledge them"
            ]
        );
        // Never armed (kvm-pvm): noted.
        let f = judge(&[registered, clock], true);
        assert!(f.problems.is_empty() && f.notes[0].contains("but never armed by KVM"));
        // Not registered: a kvm ROM on kvmclock fails, one running natively and any other ROM
        // are noted.
        let f = judge(&[clock], true);
        assert!(
            f.problems[0].starts_with("the calling CPU has no PV-EOI word registered"),
            "{f:?}"
        );
        let f = judge(&[], true);
        assert!(f.problems.is_empty() && f.notes[0].ends_with("the ROM runs natively here"));
        let f = judge(&[clock], false);
        assert!(f.problems.is_empty() && f.notes[0].ends_with("its EOI is the APIC write"));
    }

    #[test]
    fn without_a_reference_timer_the_count_is_judged_against_the_running_time() {
        // 100 ms effective at 1000 Hz: about 100 interrupts due.
        let w = Win {
            hits: 98,
            reference: 0,
            effective: PmTimer::ticks(0.1),
            total: PmTimer::ticks(0.1),
            stalls: 0,
        };
        let samples = |alarm: Vec<u32>| Samples {
            step: StepId::Vector(0),
            tsc_span: 1_000_000,
            pm_ticks: PmTimer::HZ,
            alarm,
            reference: Vec::new(),
        };
        let judge = |w: Win, alarm: Vec<u32>| {
            let mut f = Findings::default();
            judge_rate(&mut f, w, Some(&samples(alarm)), 1000, None, "rate");
            f
        };
        let even: Vec<u32> = (0..20).map(|k| 1000 * k).collect();
        let f = judge(w, even.clone());
        assert!(f.problems.is_empty() && f.inconclusive.is_none(), "{f:?}");
        assert_eq!(
            f.notes,
            [
                "rate: every 1.000 ms (median of 19), 1000.0 Hz, 98 interrupts in 100.0 ms (PM \
              timer)"
            ]
        );
        // Too few: a busy host coalesces interrupts, so without a reference that is
        // inconclusive; too many is a fault.
        let f = judge(Win { hits: 30, ..w }, even.clone());
        assert!(f.problems.is_empty(), "{f:?}");
        assert!(
            f.inconclusive.as_deref().unwrap().ends_with(
                "but only 30 times in 100.0 ms (PM timer), where about 100 were due at 1000 Hz \
                 (no reference timer to tell lost interrupts from a slow alarm) (30 interrupts in \
                 100.0 ms (PM timer))"
            ),
            "{f:?}"
        );
        let f = judge(Win { hits: 250, ..w }, even);
        assert_eq!(
            f.problems,
            [
                "rate: 250 interrupts in 100.0 ms (PM timer), expected about 100 at 1000 Hz over \
              that running time (no reference timer)"
            ]
        );
        let slow: Vec<u32> = (0..20).map(|k| 1300 * k).collect();
        let f = judge(w, slow);
        assert_eq!(
            f.problems,
            [
                "rate: interrupts every 1.300 ms (median of 19 intervals), expected every 1.000 ms \
              ± 10 % (the TSC runs at 1.0 MHz by the PM timer): 769.2 Hz"
            ]
        );
        let spread: Vec<u32> = (0..20u32).map(|k| 1000 * k + 400 * (k % 3)).collect();
        let f = judge(w, spread);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(
            f.inconclusive
                .as_deref()
                .unwrap()
                .starts_with("the host was too busy to time interrupts: the alarm's interrupts"),
            "{f:?}"
        );
    }

    #[test]
    fn rates_are_judged_by_median_intervals() {
        let w = Win {
            hits: 90,
            reference: 92,
            effective: PmTimer::ticks(0.1),
            total: PmTimer::ticks(0.2),
            stalls: 4,
        };
        // A TSC at 1 MHz: the reference every 1000 cycles; the alarm every 1000 with a stall
        // and a burst.
        let reference: Vec<u32> = (0..20).map(|k| 1000 * k).collect();
        let mut alarm: Vec<u32> = (0..20).map(|k| 500 + 1000 * k).collect();
        alarm[5] += 4000;
        alarm[6] = alarm[5] + 10;
        let samples = |alarm: Vec<u32>, reference: Vec<u32>| Samples {
            step: StepId::Vector(0),
            tsc_span: 1_000_000,
            pm_ticks: PmTimer::HZ,
            alarm,
            reference,
        };
        let lvtt = Wiring::Lvtt(VEC_B);
        let judge = |w: Win, s: &Samples, rate: u32, wiring: Wiring| {
            let mut f = Findings::default();
            judge_rate(
                &mut f,
                w,
                Some(s),
                rate,
                Some(Reference::of(wiring, rate)),
                "rate",
            );
            f
        };
        let f = judge(w, &samples(alarm.clone(), reference.clone()), 1000, lvtt);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(
            f.notes[0].starts_with("rate: every 1.000 ms (median of 19), 1000.0 Hz, 90 interrupts"),
            "{:?}",
            f.notes
        );
        // 1.3 times the period.
        let slow: Vec<u32> = (0..20).map(|k| 1300 * k).collect();
        let f = judge(w, &samples(slow, reference.clone()), 1000, lvtt);
        assert_eq!(
            f.problems,
            [
                "rate: interrupts every 1.300 ms (median of 19 intervals), expected every 1.000 ms \
              ± 10 % (the TSC runs at 1.0 MHz by the PM timer, PIT channel 0 at 1000 Hz came \
              every 1.000 ms): 769.2 Hz"
            ]
        );
        // The right period, but a quarter of the interrupts.
        let f = judge(
            Win { hits: 20, ..w },
            &samples(alarm.clone(), reference.clone()),
            1000,
            lvtt,
        );
        assert!(
            f.problems[0].starts_with("rate: 20 interrupts in 100.0 ms effective of 200.0 ms"),
            "{:?}",
            f.problems
        );
        let f = judge(w, &samples(vec![1, 2], reference.clone()), 1000, lvtt);
        assert!(
            f.problems[0].starts_with("rate: expected interrupts every 1.000 ms (1000 Hz), got 90"),
            "{:?}",
            f.problems
        );
        // Beside an IRQ0 alarm the reference is the RTC, at 1024 Hz.
        let rtc: Vec<u32> = (0..20).map(|k| 977 * k).collect();
        let f = judge(w, &samples(alarm.clone(), rtc), 1000, Wiring::Irq0);
        assert!(f.problems.is_empty() && f.inconclusive.is_none(), "{f:?}");
        assert!(
            f.notes[0].ends_with("(the RTC's periodic interrupt at 1024 Hz: 92)"),
            "{f:?}"
        );
        // A reference that ran 1.4 ms apart: the host could not time 1000 Hz.
        let late: Vec<u32> = (0..20).map(|k| 1400 * k).collect();
        let f = judge(w, &samples(vec![1, 2], late), 1000, lvtt);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(
            f.inconclusive
                .as_deref()
                .unwrap()
                .starts_with("the host was too busy to time interrupts: PIT channel 0 at 1000 Hz"),
            "{:?}",
            f.inconclusive
        );
        let mut f = Findings::default();
        judge_rate(
            &mut f,
            w,
            None,
            100,
            Some(Reference::of(Wiring::Irq0, 100)),
            "rate",
        );
        assert_eq!(
            f.problems,
            ["rate: set-up: the guest sent no SAMPLES record with a measured window"]
        );
        // Intervals spread wide (a busy host delivering in bursts): not timed, whatever the
        // median says.
        let spread: Vec<u32> = (0..20u32).map(|k| 1000 * k + 400 * (k % 3)).collect();
        let f = judge(w, &samples(spread.clone(), reference.clone()), 1000, lvtt);
        assert!(f.problems.is_empty(), "{:?}", f.problems);
        assert!(
            f.inconclusive
                .as_deref()
                .unwrap()
                .contains("the alarm's interrupts came at median"),
            "{:?}",
            f.inconclusive
        );
        let f = judge(w, &samples(alarm, spread), 1000, lvtt);
        assert!(
            f.inconclusive
                .as_deref()
                .unwrap()
                .contains("PIT channel 0 at 1000 Hz, programmed by the guest, came at median"),
            "{:?}",
            f.inconclusive
        );
    }

    #[test]
    fn quartiles_of_intervals() {
        let q = quartiles(&[0, 10, 20, 35, 50, 65]).unwrap();
        assert_eq!((q.q1, q.median, q.q3, q.n), (10, 15, 15, 5));
        assert!(!q.regular());
        assert!(quartiles(&[0, 10, 20, 30, 40]).unwrap().regular());
        // The counter's low half wraps between two entries.
        let q = quartiles(&[u32::MAX - 5, 4, 14, 24, 34]).unwrap();
        assert_eq!((q.median, q.n), (10, 4));
        assert_eq!(quartiles(&[1, 2, 3, 4]), None);
    }
}
