//! `--chrome-trace FILE`: the Chrome trace-event format (`{"traceEvents": [...]}`), which
//! Perfetto (ui.perfetto.dev) and chrome://tracing open.
//!
//! - Process 1, "VMI calls (guest TSC)": one complete event (`"ph": "X"`) per ring event,
//!   named after the call, `ts` = its start and `dur` = its cycles, in microseconds at
//!   `--tsc-mhz` — or, without it, one TSC cycle shown as one microsecond (`otherData` says
//!   which). Times start at the oldest event kept. `args` carry the call number, the caller and
//!   its `function+0xoff`, and the cycles.
//! - Process 2, "VMI call rates (host clock)" (`trace run` only): one counter event
//!   (`"ph": "C"`) per interval, `ts` = seconds since QEMU started, `args` = calls per second
//!   of each call made so far.
//!
//! The two processes have different clocks (the guest's TSC, the host's wall clock); each is
//! consistent in itself.

use super::live::Interval;
use super::sites::SiteLine;
use super::{Report, call_name};
use crate::symbols::Symbols;
use serde_json::{Value, json};

/// The trace-event JSON for `r`'s ring events and the `intervals` of a run.
pub fn trace_events(
    r: &Report,
    symbols: Option<&Symbols>,
    intervals: &[Interval],
    tsc_mhz: Option<f64>,
) -> Value {
    let per_us = tsc_mhz.unwrap_or(1.0);
    let t0 = r.area.events.iter().map(|e| e.start).min().unwrap_or(0);
    let mut events = vec![
        meta(1, "VMI calls (guest TSC)"),
        meta(2, "VMI call rates (host clock)"),
    ];
    for e in &r.area.events {
        let place = symbols.and_then(|s| s.place(e.caller));
        let site = SiteLine {
            call: e.call,
            name: call_name(e.call),
            caller: e.caller,
            function: place.as_ref().map(|p| p.function.to_string()),
            offset: place.map(|p| p.offset),
            line: None,
            count: 1,
            cycles: e.cycles,
            mean_cycles: e.cycles,
        };
        events.push(json!({
            "name": call_name(e.call),
            "cat": "vmi",
            "ph": "X",
            "ts": e.start.saturating_sub(t0) as f64 / per_us,
            "dur": e.cycles as f64 / per_us,
            "pid": 1,
            "tid": 1,
            "args": {
                "call": e.call,
                "caller": format!("{:#010x}", e.caller),
                "site": site.place(),
                "cycles": e.cycles,
            },
        }));
    }
    for i in intervals {
        let rates: serde_json::Map<String, Value> = i
            .rates
            .iter()
            .map(|(call, rate)| (call_name(*call).to_string(), json!(rate)))
            .collect();
        events.push(json!({
            "name": "calls/s",
            "ph": "C",
            "ts": i.secs * 1e6,
            "pid": 2,
            "tid": 1,
            "args": rates,
        }));
    }
    let unit = match tsc_mhz {
        Some(f) => format!("microseconds (guest TSC at {f} MHz)"),
        None => "one guest TSC cycle per microsecond (no --tsc-mhz given)".to_string(),
    };
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "producer": "vmirom trace",
            "build_id": format!("{:#010x}", r.area.build_id),
            "ring_time_unit": unit,
            "ring_events_written": r.area.events_total,
            "ring_events_kept": r.area.events.len(),
        },
    })
}

fn meta(pid: u32, name: &str) -> Value {
    json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 1, "args": {"name": name}})
}

/// Parses `--tsc-mhz`.
pub fn parse_mhz(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?} is not a frequency in MHz: {e}"))?;
    if v.is_finite() && (1.0..=100_000.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?}: expected 1 to 100000 MHz"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmi_rom::trace::area::{Area, Counter, Event};

    #[test]
    fn ring_events_are_complete_events_and_rates_are_counters() {
        let ev = |call, start, cycles| Event {
            call,
            caller: 0xC010_1005,
            start,
            cycles,
        };
        let area = Area {
            phys: 0x9_0000,
            build_id: 7,
            rom_phys: 0xC_0000,
            counters: vec![Counter::default(); 74],
            overflow: vec![Counter::default(); 74],
            site_slots: 0,
            site_slots_used: 0,
            sites: Vec::new(),
            events: vec![ev(19, 5000, 300), ev(35, 9000, 2000)],
            events_total: 2,
        };
        let r = super::super::build_report(area, None, &Default::default());
        let intervals = vec![Interval {
            secs: 1.5,
            rates: vec![(19, 10.0), (35, 2.5)],
        }];
        let v = trace_events(&r, None, &intervals, Some(1000.0));
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let events = back["traceEvents"].as_array().unwrap();
        let of = |ph: &str| events.iter().filter(|e| e["ph"] == ph).collect::<Vec<_>>();
        let x = of("X");
        assert_eq!(x.len(), 2);
        assert_eq!(
            (x[0]["name"].as_str(), x[0]["ts"].as_f64()),
            (Some("GetCR0"), Some(0.0))
        );
        assert_eq!(
            (x[1]["ts"].as_f64(), x[1]["dur"].as_f64()),
            (Some(4.0), Some(2.0))
        );
        assert_eq!(x[1]["args"]["site"], "0xc0101005");
        let c = of("C");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["ts"].as_f64(), Some(1.5e6));
        assert_eq!(c[0]["args"]["Halt"].as_f64(), Some(2.5));
        assert_eq!(of("M").len(), 2);
        assert!(parse_mhz("2400").is_ok() && parse_mhz("0").is_err() && parse_mhz("x").is_err());
    }
}
