//! `vmirom test --format tap|junit` on real suite runs under QEMU (TCG), read by stock
//! consumers: the TAP by Perl's TAP::Parser and `prove` (Test::Harness, the reference TAP
//! consumer), the JUnit XML by `xmllint --schema` against the Jenkins xUnit plugin's
//! `junit-10.xsd` (vendored in `tests/schemas/`) and by an XML parser for the counts.
//! A native ROM passes; one whose SetCR0 does nothing fails that call, with a detail holding
//! `&`, and shows skipped and not implemented calls too. Exit codes are those of the table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::code_asm::eax;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vmi_abi::Call;
use vmi_rom::generate::{BuildOptions, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;
use vmi_rom::{Answer, Backend, Override};

mod common;

use common::{s, text, vmirom};

/// Calls 0–73, the activation and the re-entrancy run.
const POINTS: usize = 76;
/// Test point of call `n` (1-based, after the activation).
fn point_of(call: Call) -> u64 {
    call as u64 + 2
}

fn rom(dir: &Path, name: &str, b: &impl Backend) -> PathBuf {
    let p = dir.join(name);
    let image = generate_unaudited(b, &BuildOptions::default())
        .unwrap()
        .image;
    std::fs::write(&p, image).unwrap();
    p
}

/// SetCR0 that returns without setting CR0: its vectors (`SetCR0(CR0&~TS)` among them) fail.
fn broken_set_cr0() -> Override<Native> {
    Override {
        base: Native,
        call: Call::SetCR0,
        emit: |e| {
            e.a.mov(eax, eax)?;
            e.a.ret()?;
            Ok(Answer::Call)
        },
    }
}

fn run_tool(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{cmd:?}: {e} (the tests need perl and libxml2-utils: see .ci/run)")
        });
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// What Perl's TAP::Parser (the parser behind `prove`) makes of a TAP stream.
fn tap_parser(tap: &[u8]) -> serde_json::Value {
    let script = r#"
        use strict; use warnings; use TAP::Parser; use JSON::PP;
        my $tap = do { local $/; <STDIN> };
        my $p = TAP::Parser->new({ tap => $tap });
        my (@yaml, @skips, @lines);
        while (my $r = $p->next) {
            push @yaml, $r->data if $r->is_yaml;
            push @skips, [$r->number + 0, $r->description, $r->explanation]
                if $r->is_test && $r->has_skip;
            push @lines, $r->type;
        }
        print JSON::PP->new->canonical->encode({
            version => $p->version + 0,
            planned => $p->tests_planned + 0,
            run => $p->tests_run + 0,
            failed => [map { $_ + 0 } $p->failed],
            passed => scalar(my @passed = $p->passed),
            skipped => [map { $_ + 0 } $p->skipped],
            parse_errors => [$p->parse_errors],
            has_problems => $p->has_problems ? 1 : 0,
            yaml => \@yaml,
            skips => \@skips,
            unknown => scalar(grep { $_ eq 'unknown' } @lines),
        });
    "#;
    let o = run_tool(Command::new("perl").args(["-e", script]), tap);
    assert!(o.status.success(), "perl: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `prove` (Test::Harness) over the stream: its exit code and summary.
fn prove(dir: &Path, tap: &[u8]) -> Output {
    let f = dir.join("suite.tap");
    std::fs::write(&f, tap).unwrap();
    Command::new("prove")
        .args(["--exec", "cat", s(&f)])
        .output()
        .expect("prove (perl) is installed: see .ci/run")
}

/// `xmllint --schema junit-10.xsd`: Ok or its complaint.
fn schema_check(xml: &[u8]) -> Result<(), String> {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/junit-10.xsd");
    let o = run_tool(
        Command::new("xmllint").args(["--noout", "--schema", s(&xsd), "-"]),
        xml,
    );
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

fn tool(args: &[&str], code: i32) -> Vec<u8> {
    let o = vmirom(args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
    o.stdout
}

#[test]
fn tap_of_a_passing_and_a_failing_rom_is_read_by_tap_parser_and_prove() {
    let dir = tempfile::tempdir().unwrap();
    let good = rom(dir.path(), "good.rom", &Native);
    let bad = rom(dir.path(), "bad.rom", &broken_set_cr0());

    let tap = tool(&["test", s(&good), "--format", "tap"], 0);
    let t = String::from_utf8(tap.clone()).unwrap();
    assert!(
        t.starts_with(&format!("TAP version 13\n1..{POINTS}\n")),
        "{t}"
    );
    let p = tap_parser(&tap);
    assert_eq!(p["version"], 13, "{p}");
    assert_eq!(p["planned"], POINTS);
    assert_eq!(p["run"], POINTS);
    assert_eq!(p["failed"], serde_json::json!([]));
    assert_eq!(p["parse_errors"], serde_json::json!([]));
    assert_eq!(p["unknown"], 0, "every line is TAP: {t}");
    assert_eq!(p["has_problems"], 0);
    // RDPMC is skipped under TCG; the calls the native ROM answers NONE are not implemented.
    let skips = p["skips"].as_array().unwrap();
    let skip = |call: Call| {
        skips
            .iter()
            .find(|s| s[0] == point_of(call))
            .unwrap_or_else(|| panic!("{call:?} not skipped: {t}"))
    };
    assert_eq!(skip(Call::RDPMC)[1], "- call 26 RDPMC");
    assert!(skip(Call::RDPMC)[2].as_str().unwrap().contains("rdpmc"));
    assert_eq!(
        skip(Call::MachineToPhysical)[2],
        "not implemented: NONE: Linux keeps the native operation"
    );
    assert!(t.contains("\nok 1 - activation\n"), "{t}");
    assert!(
        t.contains(&format!(
            "\nok {POINTS} - re-entrancy (IRQ0 storm, second CPU)\n"
        )),
        "{t}"
    );
    let o = prove(dir.path(), &tap);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Result: PASS"), "{}", text(&o));

    let tap = tool(&["test", s(&bad), "--format", "tap"], 1);
    let t = String::from_utf8(tap.clone()).unwrap();
    let p = tap_parser(&tap);
    let set_cr0 = point_of(Call::SetCR0);
    assert_eq!(p["failed"], serde_json::json!([set_cr0]), "{t}");
    assert_eq!(p["run"], POINTS);
    assert_eq!(p["parse_errors"], serde_json::json!([]));
    assert_eq!(p["unknown"], 0, "{t}");
    assert!(
        t.contains(&format!("\nnot ok {set_cr0} - call 15 SetCR0\n  ---\n")),
        "{t}"
    );
    // The YAML block reads back to the detail and the facts.
    let yaml = p["yaml"].as_array().unwrap();
    assert_eq!(yaml.len(), 1, "{t}");
    let y = &yaml[0];
    assert_eq!(y["severity"], "fail");
    assert_eq!(y["data"]["call"], "15");
    assert_eq!(y["data"]["answer"], "CALL_REL");
    assert_eq!(y["data"]["verdict"], "FAIL");
    let message = y["message"].as_str().unwrap();
    assert!(
        message.contains("SetCR0(CR0&~TS) with TS set") && message.contains("CR0: expected"),
        "{message}"
    );
    // The same detail as the JSON report.
    let j: serde_json::Value =
        serde_json::from_slice(&tool(&["test", s(&bad), "--json"], 1)).unwrap();
    let detail = j["calls"][15]["detail"].as_str().unwrap();
    assert_eq!(message, detail);
    // Skips and not implemented calls are still there next to the failure: one SKIP per call
    // the JSON report calls skipped or not implemented.
    assert_eq!(p["skipped"].as_array().unwrap().len(), not_run(&j), "{p}");
    let o = prove(dir.path(), &tap);
    assert!(!o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("Failed test:  {set_cr0}")) && out.contains("Result: FAIL"),
        "{out}"
    );
    assert!(!out.contains("Parse errors"), "{out}");
}

/// `(tests, failures, errors, skipped)` of an element, and its testcases.
fn counts(e: roxmltree::Node<'_, '_>) -> (usize, usize, usize, Option<usize>) {
    let n = |a: &str| e.attribute(a).map(|v| v.parse::<usize>().unwrap());
    (
        n("tests").unwrap(),
        n("failures").unwrap(),
        n("errors").unwrap(),
        n("skipped"),
    )
}

/// Calls the JSON report says were skipped or are not implemented.
fn not_run(report: &serde_json::Value) -> usize {
    report["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| matches!(c["verdict"].as_str(), Some("skipped" | "not-implemented")))
        .count()
}

fn children<'a, 'i>(e: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    e.children().filter(|c| c.has_tag_name(name)).collect()
}

#[test]
fn junit_of_a_passing_and_a_failing_rom_is_valid_and_counts_right() {
    let dir = tempfile::tempdir().unwrap();
    let good = rom(dir.path(), "good.rom", &Native);
    let bad = rom(dir.path(), "bad & \"quoted\" <rom>.rom", &broken_set_cr0());

    let xml = tool(&["test", s(&good), "--format", "junit"], 0);
    schema_check(&xml).unwrap();
    let x = String::from_utf8(xml).unwrap();
    let doc = roxmltree::Document::parse(&x).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites = children(root, "testsuite");
    assert_eq!(suites.len(), 1, "one testsuite per engine run");
    let (tests, failures, errors, skipped) = counts(suites[0]);
    assert_eq!((tests, failures, errors), (POINTS, 0, 0));
    let cases = children(suites[0], "testcase");
    assert_eq!(cases.len(), POINTS);
    let skipped_cases = cases
        .iter()
        .filter(|c| !children(**c, "skipped").is_empty())
        .count();
    assert_eq!(skipped, Some(skipped_cases));
    let j: serde_json::Value =
        serde_json::from_slice(&tool(&["test", s(&good), "--json"], 0)).unwrap();
    assert_eq!(skipped_cases, not_run(&j));
    assert_eq!(counts(root).0, POINTS);

    let xml = tool(&["test", s(&bad), "--format", "junit"], 1);
    schema_check(&xml).unwrap();
    let x = String::from_utf8(xml).unwrap();
    // The ROM's name holds markup characters: escaped in the suite name and the property.
    assert!(
        x.contains("name=\"") && x.contains("bad &amp; &quot;quoted&quot; &lt;rom&gt;.rom"),
        "{x}"
    );
    let doc = roxmltree::Document::parse(&x).unwrap();
    let root = doc.root_element();
    let suite = children(root, "testsuite")[0];
    assert!(
        suite
            .attribute("name")
            .unwrap()
            .ends_with("bad & \"quoted\" <rom>.rom on qemu-tcg"),
        "{x}"
    );
    let cases = children(suite, "testcase");
    let failed: Vec<_> = cases
        .iter()
        .filter(|c| !children(**c, "failure").is_empty())
        .collect();
    assert_eq!(failed.len(), 1, "{x}");
    let c = failed[0];
    assert_eq!(c.attribute("name"), Some("call 15 SetCR0"));
    assert_eq!(c.attribute("classname"), Some("vmirom.qemu-tcg.calls"));
    let f = children(*c, "failure")[0];
    let message = f.attribute("message").unwrap();
    assert!(message.contains("SetCR0(CR0&~TS) with TS set"), "{message}");
    assert!(f.text().unwrap().starts_with(message), "{x}");
    assert!(f.text().unwrap().contains("\nanswer: CALL_REL"), "{x}");
    let (tests, failures, errors, skipped) = counts(suite);
    assert_eq!((tests, failures, errors), (POINTS, 1, 0));
    let skip_elems: Vec<_> = cases.iter().flat_map(|c| children(*c, "skipped")).collect();
    assert_eq!(skipped, Some(skip_elems.len()));
    assert!(
        skip_elems.iter().any(|s| s.attribute("message")
            == Some("not implemented: NONE: Linux keeps the native operation")),
        "{x}"
    );
    assert_eq!(counts(root).1, 1);
    // Activation and re-entrancy are test cases of their own, timed.
    let by_name = |n: &str| {
        cases
            .iter()
            .find(|c| c.attribute("name") == Some(n))
            .unwrap()
    };
    for n in ["activation", "re-entrancy (IRQ0 storm, second CPU)"] {
        let c = by_name(n);
        assert_eq!(c.attribute("classname"), Some("vmirom.qemu-tcg.suite"));
        let t: f64 = c.attribute("time").unwrap().parse().unwrap();
        assert!(t > 0.0, "{n}: {t}");
    }
}

#[test]
fn a_trace_rom_has_its_accounting_as_a_test_point() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "t.rom", &Trace::new(Native));
    let tap = tool(
        &[
            "test",
            s(&trace),
            "--format",
            "tap",
            "--only",
            "GetCR0,RDTSC",
        ],
        0,
    );
    let t = String::from_utf8(tap.clone()).unwrap();
    let p = tap_parser(&tap);
    assert_eq!(p["planned"], POINTS + 1, "{t}");
    assert_eq!(p["failed"], serde_json::json!([]));
    assert_eq!(p["parse_errors"], serde_json::json!([]));
    assert!(
        t.contains(&format!("\nok {} - trace accounting\n", POINTS + 1)),
        "{t}"
    );
    // Calls left out by --only are skipped, with the reason.
    assert!(
        t.contains("ok 3 - call 1 WRMSR # SKIP not selected\n"),
        "{t}"
    );
    let xml = tool(
        &["test", s(&trace), "--format", "junit", "--only", "GetCR0"],
        0,
    );
    schema_check(&xml).unwrap();
    let x = String::from_utf8(xml).unwrap();
    assert!(
        x.contains("<testcase classname=\"vmirom.qemu-tcg.suite\" name=\"trace accounting\"/>"),
        "{x}"
    );
}

#[test]
fn json_is_the_short_form_and_formats_do_not_mix() {
    let o = vmirom(&["test", "x.rom", "--json", "--format", "tap"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot be used with"), "{}", text(&o));
    let o = vmirom(&["test", "x.rom", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("[possible values: table, json, tap, junit]"),
        "{}",
        text(&o)
    );
}

/// The schema check is a real check: it rejects what the JUnit readers would.
#[test]
fn the_schema_rejects_a_malformed_report() {
    let bad = br#"<?xml version="1.0"?><testsuites><testsuite name="x" tests="1"><testcase name="a"/></testsuite></testsuites>"#;
    let e = schema_check(bad).unwrap_err();
    assert!(e.contains("failures"), "{e}");
    let bad = br#"<?xml version="1.0"?><testsuites skipped="1"></testsuites>"#;
    assert!(schema_check(bad).is_err());
}

/// A ROM SeaBIOS drops (bad checksum): activation fails, every call is skipped with the
/// reason, and there is no re-entrancy run — in TAP and in JUnit.
#[test]
fn a_rom_that_is_never_found_fails_activation_and_skips_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let p = rom(dir.path(), "sum.rom", &Native);
    let mut img = std::fs::read(&p).unwrap();
    img[0x300] ^= 0x40;
    std::fs::write(&p, &img).unwrap();

    let tap = tool(&["test", s(&p), "--format", "tap"], 1);
    let t = String::from_utf8(tap.clone()).unwrap();
    let parsed = tap_parser(&tap);
    assert_eq!(parsed["planned"], POINTS - 1, "{t}");
    assert_eq!(parsed["run"], POINTS - 1);
    assert_eq!(parsed["failed"], serde_json::json!([1]), "{t}");
    assert_eq!(parsed["skipped"].as_array().unwrap().len(), POINTS - 2);
    assert_eq!(parsed["parse_errors"], serde_json::json!([]));
    let y = &parsed["yaml"][0];
    assert!(
        y["message"].as_str().unwrap().contains("no VMI ROM found"),
        "{y}"
    );
    assert_eq!(y["data"]["found"], "false");
    assert!(
        t.contains("\nok 2 - call 0 CPUID # SKIP not run: activation failed ("),
        "{t}"
    );

    let xml = tool(&["test", s(&p), "--format", "junit"], 1);
    schema_check(&xml).unwrap();
    let x = String::from_utf8(xml).unwrap();
    let doc = roxmltree::Document::parse(&x).unwrap();
    let suite = children(doc.root_element(), "testsuite")[0];
    assert_eq!(counts(suite), (POINTS - 1, 1, 0, Some(POINTS - 2)), "{x}");
    assert!(x.contains("<property name=\"calls_not_run\" value=\"not run: activation failed ("));
}
