//! What `vmirom test` found, in the formats people and CI systems read: the table
//! ([`table`]), TAP version 13 ([`tap`]) and JUnit XML ([`junit`]); JSON is the serialized
//! [`SuiteReport`] itself.
//!
//! TAP and JUnit report the same test points, built once by [`points`]: the activation, one
//! per call 0–73, the re-entrancy run, and for a trace ROM the trace accounting.

pub mod junit;
pub mod table;
pub mod tap;

use crate::cmd::test::TraceAccounting;
use std::time::Duration;
use vmi_harness::suite::{SuiteReport, Verdict};

/// `vmirom test --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A verdict table for people.
    Table,
    /// One JSON object: the suite report (and the trace accounting).
    Json,
    /// TAP version 13: one test point per call, `# SKIP` for skipped and not implemented ones.
    Tap,
    /// JUnit XML: one testsuite per engine run, one testcase per call.
    Junit,
}

/// One run of the suite on one engine, with the trace accounting of a trace ROM.
#[derive(Debug, Clone, Copy)]
pub struct EngineRun<'a> {
    /// The suite's report.
    pub report: &'a SuiteReport,
    /// A trace ROM's counters against the guest's calls (None: not a trace ROM).
    pub accounting: Option<&'a TraceAccounting>,
}

/// A test point's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Failed: the suite fails.
    Fail,
    /// Not run or not applicable (skipped, not implemented): the suite does not fail for it.
    Skip,
}

/// What a test point is about (JUnit's classname).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Activation, re-entrancy and trace accounting: the suite as a whole.
    Suite,
    /// One VMI call.
    Call,
}

/// A value in a test point's diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// A count or number.
    Number(u64),
    /// A yes/no fact.
    Flag(bool),
    /// Several lines of text.
    List(Vec<String>),
}

/// One test point: what TAP prints as `ok`/`not ok` and JUnit as a `<testcase>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// What it is about.
    pub group: Group,
    /// Its name: `activation`, `call 30 DisableInterrupts`, …
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// One line: why it failed or was skipped, or what passed.
    pub detail: String,
    /// The facts behind it, in order.
    pub data: Vec<(&'static str, Value)>,
    /// Wall-clock time, where it is its own guest run.
    pub time: Option<Duration>,
}

/// Name of the re-entrancy test point (as in the table).
pub const STRESS: &str = "re-entrancy (IRQ0 storm, second CPU)";

/// The test points of one engine run, in order: activation, calls 0–73, re-entrancy, trace
/// accounting (the last two when there are).
pub fn points(run: &EngineRun<'_>) -> Vec<Point> {
    let r = run.report;
    let mut v = vec![activation(r)];
    v.extend(r.calls.iter().map(call));
    if let Some(s) = &r.stress {
        v.push(Point {
            group: Group::Suite,
            name: STRESS.into(),
            outcome: outcome(s.verdict),
            detail: s.detail.clone(),
            data: vec![
                (
                    "verdict",
                    Value::Text(table::verdict_name(s.verdict).into()),
                ),
                ("loops", Value::Number(u64::from(s.loops))),
                ("interrupts", Value::Number(u64::from(s.interrupts))),
                (
                    "second_cpu_loops",
                    Value::Number(u64::from(s.second_cpu_loops)),
                ),
                ("invocations", Value::Number(u64::from(s.invocations))),
                ("mix", Value::List(names(&s.mix))),
                ("handler", Value::List(names(&s.handler))),
            ],
            time: run_time(r, "stress"),
        });
    }
    if let Some(t) = run.accounting {
        v.push(accounting(t));
    }
    v
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

fn outcome(v: Verdict) -> Outcome {
    match v {
        Verdict::Pass => Outcome::Pass,
        Verdict::Fail => Outcome::Fail,
        Verdict::NotImplemented | Verdict::Skipped => Outcome::Skip,
    }
}

/// The wall time of the guest run with this purpose.
fn run_time(r: &SuiteReport, purpose: &str) -> Option<Duration> {
    r.run_log
        .iter()
        .find(|run| run.purpose == purpose)
        .map(|run| run.wall)
}

fn activation(r: &SuiteReport) -> Point {
    let a = &r.activation;
    let hex = |v: Option<u32>| v.map_or(String::from("-"), |x| format!("{x:#x}"));
    let detail = if a.ok || a.problems.is_empty() {
        table::activation_text(r)
    } else {
        a.problems.join("; ")
    };
    Point {
        group: Group::Suite,
        name: "activation".into(),
        outcome: if a.ok { Outcome::Pass } else { Outcome::Fail },
        detail,
        data: vec![
            ("found", Value::Flag(a.found)),
            ("rom_base", Value::Text(hex(a.base))),
            ("linear", Value::Text(hex(a.linear))),
            ("init_eax", Value::Text(hex(a.init_eax))),
            ("page_offset", Value::Text(format!("{:#x}", a.page_offset))),
            ("paging", Value::Flag(a.paging)),
            ("cpu_vendor", Value::Text(a.cpu_vendor.clone())),
            ("candidates", Value::Number(a.candidates as u64)),
            ("problems", Value::List(a.problems.clone())),
            ("notes", Value::List(a.notes.clone())),
        ],
        time: run_time(r, "activation"),
    }
}

fn call(c: &vmi_harness::suite::CallVerdict) -> Point {
    let detail = match c.verdict {
        Verdict::NotImplemented => format!("not implemented: {}", c.detail),
        _ => c.detail.clone(),
    };
    let mut data = vec![
        ("call", Value::Number(u64::from(c.call))),
        ("name", Value::Text(c.name.into())),
        ("answer", Value::Text(c.reloc.clone())),
        (
            "verdict",
            Value::Text(table::verdict_name(c.verdict).into()),
        ),
        ("checks", Value::Number(c.checks as u64)),
    ];
    if let Some(eip) = c.eip {
        data.push(("eip", Value::Text(format!("{eip:#x}"))));
    }
    Point {
        group: Group::Call,
        name: format!("call {} {}", c.call, c.name),
        outcome: outcome(c.verdict),
        detail,
        data,
        time: None,
    }
}

fn accounting(t: &TraceAccounting) -> Point {
    let (outcome, detail) = if !t.problems.is_empty() {
        (Outcome::Fail, t.problems.join("; "))
    } else if t.runs_compared == 0 {
        let bios = match t.runs_without_bios {
            0 => String::new(),
            n => format!(" ({n} run(s) without a BIOS: counting is off there)"),
        };
        (Outcome::Skip, format!("no run had a trace area{bios}"))
    } else {
        (
            Outcome::Pass,
            format!(
                "{} invocations in {} run(s) equal the trace area's counts, call by call",
                t.invocations, t.runs_compared
            ),
        )
    };
    Point {
        group: Group::Suite,
        name: "trace accounting".into(),
        outcome,
        detail,
        data: vec![
            ("runs_compared", Value::Number(t.runs_compared as u64)),
            (
                "runs_without_bios",
                Value::Number(t.runs_without_bios as u64),
            ),
            ("invocations", Value::Number(t.invocations)),
            ("problems", Value::List(t.problems.clone())),
        ],
        time: None,
    }
}

/// `PASS`/`FAIL` and the counts, as the table's last line says them.
pub fn summary(r: &SuiteReport) -> String {
    table::result_text(r)
}
