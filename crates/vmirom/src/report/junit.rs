//! JUnit XML, as Jenkins, GitLab and most CI systems read test results (the dialect of the
//! Jenkins xUnit plugin's `junit-10.xsd`, which the tests validate against).
//!
//! ```text
//! <testsuites name="vmirom test" tests="76" failures="1" errors="0" time="2.134">
//!   <testsuite name="vmi.rom on qemu-tcg" tests="76" failures="1" errors="0" skipped="24" time="2.134">
//!     <properties>
//!       <property name="rom" value="vmi.rom"/> ...
//!     </properties>
//!     <testcase classname="vmirom.qemu-tcg.suite" name="activation" time="0.113"/>
//!     <testcase classname="vmirom.qemu-tcg.calls" name="call 30 DisableInterrupts">
//!       <failure type="FAIL" message="DisableInterrupts() with IF=1: EBX: …">…</failure>
//!     </testcase>
//!     <testcase classname="vmirom.qemu-tcg.calls" name="call 42 MachineToPhysical">
//!       <skipped message="not implemented: NONE: Linux keeps the native operation"/>
//!     </testcase>
//!   </testsuite>
//! </testsuites>
//! ```
//!
//! One `<testsuite>` per engine run, one `<testcase>` per test point (see [`super::points`]).
//! `errors` is always 0: a run that could not happen at all exits 2 without a report. Every
//! string is escaped for XML 1.0; characters XML cannot carry at all (control characters)
//! are written as `\xNN`.

use super::{EngineRun, Group, Outcome, Point, Value, points};
use std::fmt::Write as _;
use std::time::Duration;

/// The JUnit XML document of the engine runs, ending in a newline.
pub fn render(runs: &[EngineRun<'_>]) -> String {
    let suites: Vec<(&EngineRun<'_>, Vec<Point>)> = runs.iter().map(|r| (r, points(r))).collect();
    let count = |o: Outcome| {
        suites
            .iter()
            .flat_map(|(_, p)| p)
            .filter(|p| p.outcome == o)
            .count()
    };
    let tests: usize = suites.iter().map(|(_, p)| p.len()).sum();
    let wall: Duration = runs.iter().map(|r| r.report.wall).sum();
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"vmirom test\" tests=\"{tests}\" failures=\"{}\" errors=\"0\" \
         time=\"{}\">",
        count(Outcome::Fail),
        secs(wall)
    );
    for (run, pts) in &suites {
        testsuite(&mut o, run, pts);
    }
    o.push_str("</testsuites>\n");
    o
}

fn testsuite(o: &mut String, run: &EngineRun<'_>, pts: &[Point]) {
    let r = run.report;
    let count = |want: Outcome| pts.iter().filter(|p| p.outcome == want).count();
    let _ = writeln!(
        o,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" \
         time=\"{}\">",
        attr(&format!("{} on {}", r.rom, r.engine)),
        pts.len(),
        count(Outcome::Fail),
        count(Outcome::Skip),
        secs(r.wall)
    );
    o.push_str("    <properties>\n");
    let mut props = vec![
        ("rom", r.rom.clone()),
        ("engine", r.engine.clone()),
        ("guest_runs", r.runs.to_string()),
        ("result", super::summary(r)),
    ];
    if let Some(why) = &r.skipped_reason {
        props.push(("calls_not_run", why.clone()));
    }
    for (name, value) in props {
        let _ = writeln!(
            o,
            "      <property name=\"{name}\" value=\"{}\"/>",
            attr(&value)
        );
    }
    o.push_str("    </properties>\n");
    let classname = |g: Group| {
        let group = match g {
            Group::Suite => "suite",
            Group::Call => "calls",
        };
        attr(&format!("vmirom.{}.{group}", r.engine))
    };
    for p in pts {
        testcase(o, &classname(p.group), p);
    }
    o.push_str("  </testsuite>\n");
}

fn testcase(o: &mut String, classname: &str, p: &Point) {
    let time = p
        .time
        .map_or(String::new(), |t| format!(" time=\"{}\"", secs(t)));
    let head = format!(
        "    <testcase classname=\"{classname}\" name=\"{}\"{time}",
        attr(&p.name)
    );
    match p.outcome {
        Outcome::Pass => {
            let _ = writeln!(o, "{head}/>");
        }
        Outcome::Skip => {
            let _ = writeln!(
                o,
                "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                attr(&p.detail)
            );
        }
        Outcome::Fail => {
            let _ = writeln!(
                o,
                "{head}>\n      <failure type=\"FAIL\" message=\"{}\">{}</failure>\n    \
                 </testcase>",
                attr(&p.detail),
                text(&body(p))
            );
        }
    }
}

/// A failure's text: the detail, then the facts, one per line.
fn body(p: &Point) -> String {
    let mut b = p.detail.clone();
    for (key, value) in &p.data {
        let v = match value {
            Value::Text(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Flag(f) => f.to_string(),
            Value::List(items) if items.is_empty() => "-".into(),
            Value::List(items) => format!("\n  {}", items.join("\n  ")),
        };
        let _ = write!(b, "\n{key}: {v}");
    }
    b
}

/// Seconds with millisecond precision (`SUREFIRE_TIME`: no exponent, at most 3 decimals).
fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// An attribute value: markup and quotes escaped, line breaks and tabs as character
/// references (a parser would fold them to spaces otherwise).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

/// Element text: markup escaped; line breaks kept.
pub fn text(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut e = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => e.push_str("&amp;"),
            '<' => e.push_str("&lt;"),
            '>' => e.push_str("&gt;"),
            '"' if in_attr => e.push_str("&quot;"),
            '\'' if in_attr => e.push_str("&apos;"),
            '\n' if in_attr => e.push_str("&#10;"),
            '\t' if in_attr => e.push_str("&#9;"),
            '\r' => e.push_str("&#13;"),
            '\n' | '\t' => e.push(c),
            // Not allowed in XML 1.0 at all, not even as a character reference.
            c if u32::from(c) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(e, "\\x{:02x}", u32::from(c));
            }
            c => e.push(c),
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        let s = "a \"b\" 'c' <d> & e\nf\tg\r\u{1}\u{FFFF} — ≤";
        assert_eq!(
            attr(s),
            "a &quot;b&quot; &apos;c&apos; &lt;d&gt; &amp; e&#10;f&#9;g&#13;\\x01\\xffff — ≤"
        );
        assert_eq!(
            text(s),
            "a \"b\" 'c' &lt;d&gt; &amp; e\nf\tg&#13;\\x01\\xffff — ≤"
        );
        assert_eq!(text("]]>"), "]]&gt;");
    }

    #[test]
    fn a_failure_and_a_skip_become_elements() {
        let fail = Point {
            group: Group::Call,
            name: "call 15 SetCR0".into(),
            outcome: Outcome::Fail,
            detail: "SetCR0(CR0&~TS): CR0 \"expected\" <x>".into(),
            data: vec![
                ("call", Value::Number(15)),
                ("problems", Value::List(vec!["one".into(), "two".into()])),
            ],
            time: Some(Duration::from_micros(113_390)),
        };
        let mut o = String::new();
        testcase(&mut o, "vmirom.qemu-tcg.calls", &fail);
        assert_eq!(
            o,
            "    <testcase classname=\"vmirom.qemu-tcg.calls\" name=\"call 15 SetCR0\" \
             time=\"0.113\">\n      <failure type=\"FAIL\" message=\"SetCR0(CR0&amp;~TS): CR0 \
             &quot;expected&quot; &lt;x&gt;\">SetCR0(CR0&amp;~TS): CR0 \"expected\" \
             &lt;x&gt;\ncall: 15\nproblems: \n  one\n  two</failure>\n    </testcase>\n"
        );
        let skip = Point {
            outcome: Outcome::Skip,
            time: None,
            detail: "not implemented: NONE".into(),
            ..fail
        };
        let mut o = String::new();
        testcase(&mut o, "c", &skip);
        assert_eq!(
            o,
            "    <testcase classname=\"c\" name=\"call 15 SetCR0\">\n      <skipped \
             message=\"not implemented: NONE\"/>\n    </testcase>\n"
        );
    }
}
