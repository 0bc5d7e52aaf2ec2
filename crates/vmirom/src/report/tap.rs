//! TAP version 13 (the Test Anything Protocol, as kvm-unit-tests and `prove` speak it).
//!
//! ```text
//! TAP version 13
//! 1..76
//! # vmi.rom on qemu-tcg
//! ok 1 - activation
//! ok 2 - call 0 CPUID
//! ...
//! not ok 32 - call 30 DisableInterrupts
//!   ---
//!   message: "DisableInterrupts() with IF=1: EBX: expected 0xc0de0b0b (canary), got …"
//!   severity: fail
//!   data:
//!     call: 30
//!     answer: "CALL_REL"
//!     ...
//!   ...
//! ok 44 - call 42 MachineToPhysical # SKIP not implemented: NONE: Linux keeps the native operation
//! ok 76 - re-entrancy (IRQ0 storm, second CPU)
//! # result: FAIL (49 pass, 1 fail, 23 not implemented, 1 skipped) in 2.1 s, 5 guest run(s)
//! ```
//!
//! The plan comes first; every point is numbered. A failure carries a YAML block (indented two
//! spaces, between `---` and `...`) with its detail as `message` and the facts under `data`;
//! strings are double-quoted with backslash escapes, so any detail survives (a YAMLish reader
//! such as TAP::Parser's reads it back). Descriptions escape `#` and `\` as TAP asks; the
//! `# SKIP` reason runs to the end of the line.

use super::{EngineRun, Outcome, Point, Value, points};
use std::fmt::Write as _;

/// The TAP stream of the engine runs, ending in a newline.
pub fn render(runs: &[EngineRun<'_>]) -> String {
    let all: Vec<Vec<Point>> = runs.iter().map(points).collect();
    let total: usize = all.iter().map(Vec::len).sum();
    let mut o = String::from("TAP version 13\n");
    let _ = writeln!(o, "1..{total}");
    let mut n = 0;
    for (run, pts) in runs.iter().zip(&all) {
        let _ = writeln!(
            o,
            "# {}",
            one_line(&format!("{} on {}", run.report.rom, run.report.engine))
        );
        for p in pts {
            n += 1;
            point(&mut o, n, p);
        }
        let _ = writeln!(o, "# result: {}", super::summary(run.report));
    }
    o
}

fn point(o: &mut String, n: usize, p: &Point) {
    let desc = description(&p.name);
    match p.outcome {
        Outcome::Pass => {
            let _ = writeln!(o, "ok {n} - {desc}");
        }
        Outcome::Skip => {
            let _ = writeln!(o, "ok {n} - {desc} # SKIP {}", one_line(&p.detail));
        }
        Outcome::Fail => {
            let _ = writeln!(o, "not ok {n} - {desc}");
            yaml(o, p);
        }
    }
}

/// The YAML diagnostics block of a failed point.
fn yaml(o: &mut String, p: &Point) {
    o.push_str("  ---\n");
    let _ = writeln!(o, "  message: {}", quoted(&p.detail));
    o.push_str("  severity: fail\n");
    if let Some(t) = p.time {
        let _ = writeln!(o, "  duration_ms: {}", t.as_millis());
    }
    o.push_str("  data:\n");
    for (key, value) in &p.data {
        match value {
            Value::Text(s) => {
                let _ = writeln!(o, "    {key}: {}", quoted(s));
            }
            Value::Number(v) => {
                let _ = writeln!(o, "    {key}: {v}");
            }
            Value::Flag(b) => {
                let _ = writeln!(o, "    {key}: {b}");
            }
            Value::List(items) if items.is_empty() => {
                let _ = writeln!(o, "    {key}: []");
            }
            Value::List(items) => {
                let _ = writeln!(o, "    {key}:");
                for item in items {
                    let _ = writeln!(o, "      - {}", quoted(item));
                }
            }
        }
    }
    o.push_str("  ...\n");
}

/// A test point's description: one line, `\` and `#` escaped (an unescaped `#` would start a
/// directive).
fn description(s: &str) -> String {
    one_line(s).replace('\\', "\\\\").replace('#', "\\#")
}

/// `s` on one line (line breaks become spaces).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// A YAML double-quoted scalar: `\` and `"` escaped, control characters as `\n`, `\t`, `\r`,
/// `\xNN` (the escapes YAML and TAP's YAMLish readers share).
pub fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(q, "\\x{:02x}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Group;
    use std::time::Duration;

    #[test]
    fn quoting_escapes_what_yaml_needs() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(
            quoted("a \"b\" \\ c\nd\te\u{1}\u{7f} — ≤"),
            "\"a \\\"b\\\" \\\\ c\\nd\\te\\x01\\x7f — ≤\""
        );
    }

    #[test]
    fn descriptions_escape_hash_and_backslash() {
        assert_eq!(description("#UD at a\\b\nc"), "\\#UD at a\\\\b c");
    }

    #[test]
    fn points_become_lines_and_yaml() {
        let fail = Point {
            group: Group::Call,
            name: "call 30 DisableInterrupts".into(),
            outcome: Outcome::Fail,
            detail: "EBX: expected \"canary\" <0xc0de0b0b> & kept".into(),
            data: vec![
                ("call", Value::Number(30)),
                ("answer", Value::Text("CALL_REL".into())),
                ("paging", Value::Flag(true)),
                ("problems", Value::List(vec![])),
                ("mix", Value::List(vec!["a".into(), "b # c".into()])),
            ],
            time: Some(Duration::from_millis(1250)),
        };
        let mut o = String::new();
        point(&mut o, 7, &fail);
        assert_eq!(
            o,
            "not ok 7 - call 30 DisableInterrupts\n  ---\n  message: \"EBX: expected \
             \\\"canary\\\" <0xc0de0b0b> & kept\"\n  severity: fail\n  duration_ms: 1250\n  \
             data:\n    call: 30\n    answer: \"CALL_REL\"\n    paging: true\n    problems: \
             []\n    mix:\n      - \"a\"\n      - \"b # c\"\n  ...\n"
        );
        let skip = Point {
            outcome: Outcome::Skip,
            detail: "a native rdpmc raises #UD\n(vector 6)".into(),
            time: None,
            name: "call 26 RDPMC".into(),
            ..fail.clone()
        };
        let mut o = String::new();
        point(&mut o, 28, &skip);
        assert_eq!(
            o,
            "ok 28 - call 26 RDPMC # SKIP a native rdpmc raises #UD (vector 6)\n"
        );
        let pass = Point {
            outcome: Outcome::Pass,
            ..skip
        };
        let mut o = String::new();
        point(&mut o, 3, &pass);
        assert_eq!(o, "ok 3 - call 26 RDPMC\n");
    }
}
