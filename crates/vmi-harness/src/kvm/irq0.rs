//! IRQ0 from the userspace PIT's counter 0, with the in-kernel irqchip.
//!
//! The PIT model ([`super::devices`]) only answers reads; this module gives its counter 0 an
//! OUT line wired to IRQ0. The vCPU thread publishes counter 0's programming ([`Program`])
//! whenever a guest write to port 0x40 or 0x43 changes it; a runner thread ([`Line::run`])
//! sleeps until the next rising edge of OUT, computed from the count's load time on the
//! devices' clock (absolute deadlines: edge *k* of a periodic mode is at `start + k·n` PIT
//! ticks, so nothing drifts), and raises GSI 0 with `KVM_IRQ_LINE` (level 1, then 0: an
//! edge). KVM's default routing sends GSI 0 to the master PIC's IRQ0 and to IOAPIC pin 0 —
//! the PIC path a legacy guest uses (KVM resets the BSP's LVT0 to ExtINT).
//!
//! | Mode | Rising edges of OUT (ticks after the count was written) |
//! |---|---|
//! | 2, 3 (rate generator, square wave) | every `n` ticks: `n`, `2n`, … (1 193 182 / `n` Hz) |
//! | 0 (interrupt on terminal count) | once, at `n` |
//! | 4 (software strobe) | once, at `n + 1` |
//! | 1, 5 (hardware-triggered) | none: counter 0's gate never rises |
//!
//! A thread woken late (a busy host) raises one edge for every edge it missed, as a real
//! PIT's edges coalesce in the PIC's IRR, and counts the missed ones ([`Irq0Report`]).

use super::devices::PIT_HZ;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counter 0's programming: what decides the edges of its OUT line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// Mode 0–5.
    pub mode: u8,
    /// The count loaded (1..=65536).
    pub reload: u32,
    /// When the count was written, on the devices' clock.
    pub start: Duration,
}

impl Program {
    /// The tick (after `start`) of rising edge `k` (from 1), None when there is none.
    pub fn edge_tick(&self, k: u64) -> Option<u64> {
        let n = u64::from(self.reload);
        match self.mode {
            2 | 3 => Some(k.saturating_mul(n)),
            0 if k == 1 => Some(n),
            4 if k == 1 => Some(n + 1),
            _ => None,
        }
    }

    /// The time of `tick` on the devices' clock.
    pub fn at(&self, tick: u64) -> Duration {
        let ns = u128::from(tick) * 1_000_000_000 / u128::from(PIT_HZ);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The index of the first edge after edge `k` that lies after `now` (edges between them
    /// were missed).
    pub fn next_after(&self, k: u64, now: Duration) -> u64 {
        match self.mode {
            2 | 3 => {
                let ns = now.saturating_sub(self.start).as_nanos();
                let ticks =
                    u64::try_from(ns * u128::from(PIT_HZ) / 1_000_000_000).unwrap_or(u64::MAX);
                (ticks / u64::from(self.reload.max(1)))
                    .saturating_add(1)
                    .max(k + 1)
            }
            _ => k + 1,
        }
    }
}

/// What the IRQ0 line did in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Irq0Report {
    /// Edges raised on GSI 0 (`KVM_IRQ_LINE` level 1 then 0).
    pub raised: u64,
    /// Edges the runner thread woke too late for, coalesced into the next one it raised.
    pub coalesced: u64,
    /// Why raising the line failed (the thread then stopped), if it did.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    program: Option<Program>,
    /// Index of the next edge of `program`.
    next: u64,
    /// An edge is being raised (the ioctl runs outside the lock).
    raising: bool,
    stop: bool,
    report: Irq0Report,
}

/// Counter 0's OUT line, shared by the vCPU thread (which programs it) and the runner thread
/// that raises IRQ0 ([`Line::run`]).
#[derive(Debug, Default)]
pub struct Line {
    state: Mutex<State>,
    wake: Condvar,
}

impl Line {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counter 0 is now programmed as `program` (None: no count loaded); a change restarts
    /// the edges.
    pub fn program(&self, program: Option<Program>) {
        let mut s = self.lock();
        if s.program != program {
            s.program = program;
            s.next = 1;
            self.wake.notify_all();
        }
    }

    /// Whether an edge is still to come (or being raised).
    pub fn armed(&self) -> bool {
        let s = self.lock();
        s.raising
            || s.report.error.is_none() && s.program.and_then(|p| p.edge_tick(s.next)).is_some()
    }

    /// Ends [`Line::run`].
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// What the line did so far.
    pub fn report(&self) -> Irq0Report {
        self.lock().report.clone()
    }

    /// Raises an edge with `raise` at each rising edge of OUT (`clock`: the devices' time
    /// origin) until [`Line::stop`]; a failing `raise` ends it.
    pub fn run(&self, clock: Instant, mut raise: impl FnMut() -> Result<(), String>) {
        let mut s = self.lock();
        loop {
            if s.stop {
                return;
            }
            let due = s
                .program
                .and_then(|p| Some((p, p.at(p.edge_tick(s.next)?))));
            let Some((p, due)) = due else {
                s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = clock.elapsed();
            if now < due {
                s = self
                    .wake
                    .wait_timeout(s, due - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                continue;
            }
            let next = p.next_after(s.next, now);
            s.report.coalesced += next - s.next - 1;
            s.next = next;
            s.report.raised += 1;
            s.raising = true;
            drop(s);
            let result = raise();
            s = self.lock();
            s.raising = false;
            if let Err(e) = result {
                s.report.error = Some(e);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(mode: u8, reload: u32) -> Program {
        Program {
            mode,
            reload,
            start: Duration::from_millis(5),
        }
    }

    #[test]
    fn edges_follow_the_mode() {
        assert_eq!(p(2, 1193).edge_tick(3), Some(3579));
        assert_eq!(p(3, 100).edge_tick(1), Some(100));
        assert_eq!(p(0, 100).edge_tick(1), Some(100));
        assert_eq!(p(0, 100).edge_tick(2), None);
        assert_eq!(p(4, 100).edge_tick(1), Some(101));
        assert_eq!(p(1, 100).edge_tick(1), None);
        assert_eq!(p(5, 100).edge_tick(1), None);
        // 1 193 182 ticks are one second after the count was written.
        assert_eq!(p(2, 1).at(PIT_HZ), Duration::from_millis(1005));
    }

    #[test]
    fn a_late_wakeup_skips_to_the_first_edge_still_ahead() {
        // Edges every 1 ms (1193 ticks ≈ 999.8 µs): at 10.5 ms after start, edges 1–10 are
        // past; after raising edge 1 the next is 11 (9 coalesced).
        let q = p(2, 1193);
        assert_eq!(q.next_after(1, Duration::from_micros(15_500)), 11);
        // On time: the next edge.
        assert_eq!(q.next_after(4, q.at(4 * 1193)), 5);
        assert_eq!(p(0, 100).next_after(1, Duration::from_secs(9)), 2);
    }

    /// Waits (at most 10 s) until `done` holds for the line's report.
    fn wait_for(line: &Line, done: impl Fn(&Irq0Report) -> bool) -> Irq0Report {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let r = line.report();
            if done(&r) || Instant::now() > give_up {
                return r;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_line_raises_periodic_edges_never_early_and_a_one_shot_once() {
        let line = Line::default();
        let clock = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| line.run(clock, || Ok(())));
            // Mode 2, 1193 ticks (999.8 µs): edge 50 comes no earlier than 49.99 ms after
            // the count was written, however late the thread runs.
            let start = clock.elapsed();
            line.program(Some(Program {
                mode: 2,
                reload: 1193,
                start,
            }));
            assert!(line.armed());
            let r = wait_for(&line, |r| r.raised + r.coalesced >= 50);
            let took = clock.elapsed() - start;
            line.program(None);
            assert!(r.raised + r.coalesced >= 50, "{r:?}");
            assert!(took >= Duration::from_micros(49_990), "{took:?} {r:?}");
            assert!(!line.armed());
            // Mode 0, 2 ms: one edge, then nothing more is armed.
            let before = line.report().raised;
            let start = clock.elapsed();
            line.program(Some(Program {
                mode: 0,
                reload: 2386,
                start,
            }));
            let r = wait_for(&line, |r| r.raised > before);
            assert!(clock.elapsed() - start >= Duration::from_millis(2));
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(line.report().raised, before + 1, "{r:?}");
            assert!(!line.armed());
            line.stop();
        });
    }

    #[test]
    fn a_failing_raise_stops_the_line() {
        let line = Line::default();
        let clock = Instant::now();
        line.program(Some(p(2, 1)));
        line.run(clock, || Err("EBADF".into()));
        assert_eq!(line.report().error.as_deref(), Some("EBADF"));
        assert!(!line.armed());
    }
}
