//! Stress configurations: a loop of VMI calls with their results checked, while the PIT fires
//! IRQ0 at a high rate and the timer handler makes VMI calls of its own — the way a kernel's
//! interrupt path re-enters the ROM between any two instructions of whatever call it
//! interrupted. [`Step::Stress`](super::Step::Stress) runs one; the guest reports `STRESS`
//! ([`StressResult`](crate::protocol::StressResult)).
//!
//! # What the guest does
//!
//! 1. Checks that the ROM answered CALL_REL for every call of the configuration (otherwise the
//!    step ends at once with [`Violation::NotCallRel`](crate::protocol::Violation)).
//! 2. Programs PIT channel 0 (mode 2, [`Stress::divisor`]), unmasks IRQ0, marks the
//!    configuration active (the timer handler now makes [`Stress::handler`]'s calls on every
//!    tick), `sti`.
//! 3. Loops over [`Stress::mix`]: each item loads its inputs and a
//!    [canary](crate::protocol::canary) into every other register, counts the invocation
//!    ([`Invocations`](super::Invocations)), calls the relocation target, then checks ESP, every
//!    register the call's class keeps, DF = 0, IF (on, except right after DisableInterrupts)
//!    and the result against the native value. The first violation ends the loop. It runs
//!    [`Stress::loops`] iterations and then goes on until [`Stress::ticks`] timer interrupts
//!    were handled, for at most [`Stress::max_loops`] iterations.
//! 4. `cli`, masks IRQ0, waits for the second CPU if there is one, reports loops, handler
//!    runs, the violation, the TSC cycles, the second CPU's loops and the run's invocation
//!    counters.
//!
//! # A second CPU
//!
//! With [`Stress::ap_loops`] > 0 (and QEMU's `-smp 2`), step 2 first copies a real-mode
//! trampoline to [`AP_TRAMPOLINE`](super::layout::AP_TRAMPOLINE), software-enables the local
//! APIC and sends INIT, SIPI, SIPI to all other CPUs. The trampoline loads the boot GDT, enters
//! protected mode, turns on paging with the same page directory and jumps into the guest code,
//! where the second CPU loads the kernel GDT/IDT and segments, reports in, waits for the go
//! the first CPU gives with its timer, and makes its loop of [`Stress::ap_mix`] calls (with
//! interrupts off), counting each invocation with the same `lock`ed counters.
//!
//! # Call sites
//!
//! Each call the loop, the timer handler and the second CPU make is its own `call` instruction
//! in the guest's code, so every call has a distinct, known return address: the guest reports
//! them as [`CallSite`]s ([`GuestImage::call_sites`](super::GuestImage::call_sites)), for
//! checking a ROM that attributes calls to their callers. With [`Stress::shared_sites`] every
//! call of one number goes through one subroutine instead (`call [slot]; ret`): the loop, the
//! handler and the second CPU then all call the ROM from the same place.

use vmi_abi::Call;
use vmi_abi::calls::Reg;

/// One stress configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stress {
    /// The calls each loop iteration makes, in order ([`Stress::mix_supported`]).
    /// DisableInterrupts is followed by an EnableInterrupts (both counted) so the loop goes on
    /// with interrupts on.
    pub mix: Vec<Call>,
    /// The calls the timer handler makes on every IRQ0 while the step runs
    /// ([`Stress::handler_supported`]); their results are not checked.
    pub handler: Vec<Call>,
    /// Iterations the loop runs at least.
    pub loops: u32,
    /// Timer interrupts to wait for after [`Stress::loops`] iterations.
    pub ticks: u32,
    /// Hard limit of iterations (a timer that never fires cannot hang the step).
    pub max_loops: u32,
    /// PIT channel 0 divisor: 1 193 182 / divisor interrupts per second.
    pub divisor: u16,
    /// Loop iterations a second CPU makes at the same time (0: no second CPU). It is started
    /// with INIT-SIPI-SIPI through a real-mode trampoline, and calls [`Stress::ap_mix`] —
    /// counted, not checked — while the first CPU runs its loop, so both update the same
    /// counters concurrently. Needs `-smp 2` (QEMU runs the two vCPUs on two host threads).
    pub ap_loops: u32,
    /// The calls each iteration of the second CPU makes ([`Stress::handler_supported`]).
    pub ap_mix: Vec<Call>,
    /// Every call of one number is made through one shared subroutine (one call site per call
    /// number for the loop, the handler and the second CPU together) instead of from its own
    /// `call` instruction.
    pub shared_sites: bool,
}

/// Who calls the ROM from a [`CallSite`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteRole {
    /// The loop: once per iteration ([`StressResult::loops`](crate::protocol::StressResult)).
    Loop,
    /// The timer handler: once per interrupt served while the step runs.
    Handler,
    /// The second CPU: once per iteration it makes.
    SecondCpu,
    /// The shared subroutine of [`Stress::shared_sites`]: every call of its number.
    Shared,
}

/// One place a stress step calls the ROM from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSite {
    /// Index of the stress configuration ([`GuestConfig::stress`](super::GuestConfig)).
    pub stress: u32,
    /// The call made there.
    pub call: Call,
    /// Who makes it.
    pub role: SiteRole,
    /// The return address the `call` pushes (linear: the address the code runs at).
    pub ret: u32,
}

impl Stress {
    /// A mix like a kernel's hot paths (interrupt flag, CR reads, TSC, CPUID), with the
    /// handler reading the TSC and CR3 and masking interrupts: 10 calls per iteration, IRQ0
    /// at ~20 kHz (divisor 60), at least `loops` iterations and `ticks` interrupts.
    pub fn linux_like(loops: u32, ticks: u32) -> Stress {
        Stress {
            mix: vec![
                Call::GetInterruptMask,
                Call::DisableInterrupts,
                Call::SetInterruptMask,
                Call::GetCR0,
                Call::GetCR3,
                Call::RDTSC,
                Call::EnableInterrupts,
                Call::CPUID,
                Call::GetDR,
            ],
            handler: vec![Call::RDTSC, Call::GetCR3, Call::DisableInterrupts],
            loops,
            ticks,
            max_loops: loops.saturating_mul(64),
            divisor: 60,
            ap_loops: 0,
            ap_mix: Vec::new(),
            shared_sites: false,
        }
    }

    /// [`Stress::linux_like`] plus a second CPU making `ap_loops` iterations of RDTSC, GetCR3,
    /// GetCR0, GetInterruptMask and DisableInterrupts — mostly the same calls as the first
    /// CPU and its timer handler, so the same counters are contended.
    pub fn with_second_cpu(loops: u32, ticks: u32, ap_loops: u32) -> Stress {
        Stress {
            ap_loops,
            ap_mix: vec![
                Call::RDTSC,
                Call::GetCR3,
                Call::GetCR0,
                Call::GetInterruptMask,
                Call::DisableInterrupts,
            ],
            ..Stress::linux_like(loops, ticks)
        }
    }

    /// Whether the loop knows how to call and check `c`.
    pub fn mix_supported(c: Call) -> bool {
        matches!(
            c,
            Call::CPUID
                | Call::WBINVD
                | Call::GetCR0
                | Call::GetCR2
                | Call::GetCR3
                | Call::GetCR4
                | Call::GetDR
                | Call::RDTSC
                | Call::CLTS
                | Call::EnableInterrupts
                | Call::DisableInterrupts
                | Call::GetInterruptMask
                | Call::SetInterruptMask
        )
    }

    /// Whether the timer handler may make `c` (nothing that enables interrupts inside it; the
    /// counter and local-APIC calls as a kernel's interrupt path makes them: [`inputs`]).
    pub fn handler_supported(c: Call) -> bool {
        (Stress::mix_supported(c) && !matches!(c, Call::EnableInterrupts | Call::SetInterruptMask))
            || matches!(c, Call::GetCycleCounter | Call::APICRead | Call::APICWrite)
    }

    /// Every call the configuration makes (DisableInterrupts in the mix brings
    /// EnableInterrupts).
    pub fn calls(&self) -> impl Iterator<Item = Call> + '_ {
        let enable = self
            .mix
            .contains(&Call::DisableInterrupts)
            .then_some(Call::EnableInterrupts);
        self.mix
            .iter()
            .chain(&self.handler)
            .chain(&self.ap_mix)
            .copied()
            .chain(enable)
    }

    /// Why the guest cannot run it (None: it can).
    pub fn problem(&self) -> Option<String> {
        if self.mix.is_empty() {
            return Some("the mix is empty".into());
        }
        if let Some(c) = self.mix.iter().find(|c| !Stress::mix_supported(**c)) {
            return Some(format!("{c:?} cannot be called by the stress loop"));
        }
        if let Some(c) = self
            .handler
            .iter()
            .find(|c| !Stress::handler_supported(**c))
        {
            return Some(format!("{c:?} cannot be called by the timer handler"));
        }
        if let Some(c) = self.ap_mix.iter().find(|c| !Stress::handler_supported(**c)) {
            return Some(format!("{c:?} cannot be called by the second CPU"));
        }
        if self.ap_loops > 0 && self.ap_mix.is_empty() {
            return Some("the second CPU has loops but no calls".into());
        }
        if self.divisor < 16 {
            return Some(format!(
                "PIT divisor {} is too small (at least 16)",
                self.divisor
            ));
        }
        if self.max_loops < self.loops {
            return Some(format!(
                "max_loops {} is below loops {}",
                self.max_loops, self.loops
            ));
        }
        None
    }
}

/// The register inputs the guest gives call `c` in a stress step (CPUID leaf 0, DR7,
/// interrupts on, the REAL counter, the local-APIC version register, an EOI).
pub fn inputs(c: Call) -> &'static [(Reg, u32)] {
    match c {
        Call::CPUID => &[(Reg::Eax, 0), (Reg::Ecx, 0)],
        Call::GetDR => &[(Reg::Eax, 7)],
        Call::SetInterruptMask => &[(Reg::Eax, 0x200)],
        Call::GetCycleCounter => &[(Reg::Eax, 0)],
        Call::APICRead => &[(Reg::Eax, 0x30)],
        Call::APICWrite => &[(Reg::Eax, 0xB0), (Reg::Edx, 0)],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_like_is_runnable_and_problems_are_named() {
        let s = Stress::linux_like(100, 10);
        assert_eq!(s.problem(), None);
        assert_eq!(
            s.calls().filter(|c| *c == Call::EnableInterrupts).count(),
            2
        );
        let mut bad = s.clone();
        bad.mix.push(Call::SetCR3);
        assert_eq!(
            bad.problem().unwrap(),
            "SetCR3 cannot be called by the stress loop"
        );
        let mut bad = s.clone();
        bad.handler.push(Call::EnableInterrupts);
        assert!(bad.problem().unwrap().contains("timer handler"));
        let mut bad = s.clone();
        bad.divisor = 2;
        assert!(bad.problem().unwrap().contains("divisor"));
        let mut bad = s;
        bad.mix.clear();
        assert_eq!(bad.problem().unwrap(), "the mix is empty");
    }
}
