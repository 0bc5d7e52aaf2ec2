//! The live view of `vmirom trace run`: per-call totals and rates between two readings of the
//! trace area, laid out like `kvm_stat` (busiest first).

use super::{call_name, percent};
use std::fmt::Write as _;
use std::time::Duration;
use vmi_rom::trace::area::Counter;

/// One call's line of the live view.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveLine {
    /// Call number.
    pub call: u32,
    /// Call name.
    pub name: &'static str,
    /// Calls so far.
    pub total: u64,
    /// Calls per second over the last interval.
    pub rate: f64,
    /// Share of all ROM cycles so far, percent.
    pub share: f64,
}

/// One reading of a run: the calls per second of every call made so far, over the interval
/// that ended `secs` after QEMU started.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Interval {
    /// Seconds since QEMU started.
    pub secs: f64,
    /// (call number, calls per second), by call number.
    pub rates: Vec<(u32, f64)>,
}

impl Interval {
    /// The interval of a reading's lines.
    pub fn of(secs: f64, lines: &[LiveLine]) -> Interval {
        let mut rates: Vec<(u32, f64)> = lines.iter().map(|l| (l.call, l.rate)).collect();
        rates.sort_by_key(|r| r.0);
        Interval { secs, rates }
    }
}

/// The lines for the calls made so far, from the counters read `dt` ago (`prev`; empty when
/// the area did not exist then: every count is new) and now (`cur`). Busiest first: by rate,
/// then total, then call number.
pub fn lines(prev: &[Counter], cur: &[Counter], dt: Duration) -> Vec<LiveLine> {
    let secs = dt.as_secs_f64();
    let all_cycles: u64 = cur.iter().map(|c| c.cycles).sum();
    let mut out: Vec<LiveLine> = cur
        .iter()
        .enumerate()
        .filter(|(_, c)| c.count > 0)
        .map(|(n, c)| {
            let before = prev.get(n).map_or(0, |p| p.count);
            // A counter that went down was reset (a new area): everything is new since then.
            let delta = if c.count >= before {
                c.count - before
            } else {
                c.count
            };
            LiveLine {
                call: n as u32,
                name: call_name(n as u32),
                total: c.count,
                rate: if secs > 0.0 { delta as f64 / secs } else { 0.0 },
                share: percent(c.cycles, all_cycles),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.rate
            .total_cmp(&a.rate)
            .then(b.total.cmp(&a.total))
            .then(a.call.cmp(&b.call))
    });
    out
}

/// A block of the live view: `header`, the column titles, one line per call, and the sums.
pub fn render(header: &str, lines: &[LiveLine]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{header}");
    let _ = writeln!(
        o,
        "{:>3}  {:<20} {:>14} {:>12} {:>7}",
        "#", "call", "total", "/s", "cycles"
    );
    if lines.is_empty() {
        let _ = writeln!(o, "     (no VMI calls yet)");
    }
    for l in lines {
        let _ = writeln!(
            o,
            "{:>3}  {:<20} {:>14} {:>12.1} {:>6.1}%",
            l.call, l.name, l.total, l.rate, l.share
        );
    }
    let total: u64 = lines.iter().map(|l| l.total).sum();
    // (a fold from +0.0: an empty f64 sum is -0.0, printed "-0.0")
    let rate = lines.iter().fold(0.0_f64, |s, l| s + l.rate);
    let _ = writeln!(o, "     {:<20} {total:>14} {rate:>12.1}", "all calls");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(count: u64, cycles: u64) -> Counter {
        Counter { count, cycles }
    }

    #[test]
    fn rates_are_deltas_per_second_busiest_first() {
        let mut prev = vec![Counter::default(); 74];
        let mut cur = prev.clone();
        prev[19] = c(100, 1000);
        cur[19] = c(110, 1100); // GetCR0: 10 in 0.5 s
        prev[35] = c(4, 0);
        cur[35] = c(4, 0); // Halt: nothing new, still listed
        cur[29] = c(50, 2900); // EnableInterrupts: new since the last reading
        let l = lines(&prev, &cur, Duration::from_millis(500));
        let got: Vec<(u32, u64, f64)> = l.iter().map(|l| (l.call, l.total, l.rate)).collect();
        assert_eq!(got, [(29, 50, 100.0), (19, 110, 20.0), (35, 4, 0.0)]);
        assert_eq!(l[0].name, "EnableInterrupts");
        assert!((l[0].share - 72.5).abs() < 1e-9 && (l[1].share - 27.5).abs() < 1e-9);
        // No earlier reading: every count is new.
        let first = lines(&[], &cur, Duration::from_secs(2));
        assert_eq!(first[0].rate, 55.0);
        // A counter that went down was reset: it counts from zero again.
        let reset = lines(&cur, &prev, Duration::from_secs(1));
        assert_eq!(
            reset.iter().find(|l| l.call == 19).map(|l| l.rate),
            Some(100.0)
        );
        assert!(lines(&[c(0, 0); 20], &[c(0, 0); 20], Duration::ZERO).is_empty());
    }

    #[test]
    fn render_lists_every_line_and_the_sums() {
        let mut cur = vec![Counter::default(); 74];
        cur[19] = c(3, 30);
        cur[22] = c(1, 10);
        let s = render("--- t+1.0 s ---", &lines(&[], &cur, Duration::from_secs(1)));
        let rows: Vec<&str> = s.lines().collect();
        assert_eq!(rows[0], "--- t+1.0 s ---");
        assert!(
            rows[2].contains("GetCR0") && rows[2].contains(" 3.0 ") && rows[2].ends_with("75.0%")
        );
        assert!(rows[3].contains("GetCR4"));
        assert!(rows[4].contains("all calls") && rows[4].ends_with("4.0"));
        let empty = render("h", &[]);
        assert!(empty.contains("(no VMI calls yet)"));
        assert!(
            empty.ends_with(" 0.0\n") && !empty.contains("-0.0"),
            "{empty}"
        );
    }
}
