//! `vmirom check --list-rules` and `--explain RULE` (issue 13): every rule of the four
//! profiles is listed with its severity and summary, explained in the rule's own words, and
//! every `FAIL`/`warn` line `check` prints names a rule `--explain` knows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use optionrom::validate::rule::Rule;
use optionrom::validate::rules;
use std::collections::BTreeSet;

mod common;

use common::{s, text, vmirom};

/// Every rule, profile by profile, as the library declares them.
fn catalog() -> Vec<&'static Rule> {
    rules()
        .chain(vmi_rom::audit::rules::RULES.iter().copied())
        .collect()
}

#[test]
fn list_rules_prints_every_rule_of_every_profile_in_report_order() {
    let o = vmirom(&["check", "--list-rules"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8(o.stdout).unwrap();
    let all = catalog();
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(lines.len(), all.len(), "{t}");
    for (line, r) in lines.iter().zip(&all) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (cells[0], cells[1]),
            (r.id, &*r.severity.to_string()),
            "{line}"
        );
        assert!(line.ends_with(&r.summary()), "{line}");
    }
    for p in ["linux-vmi (15 rules", "seabios (11 rules", "pci (27 rules"] {
        assert!(t.contains(p), "{p} in {t}");
    }
    assert!(t.contains("vmi-audit (20 rules, each reported where it is broken)"));
    // One profile.
    let o = vmirom(&["check", "--list-rules", "-p", "seabios"]);
    let t = text(&o);
    assert_eq!(t.lines().filter(|l| l.starts_with("  ")).count(), 11, "{t}");
    assert!(
        !t.contains("linux-vmi") && t.starts_with("seabios (11 rules"),
        "{t}"
    );
}

#[test]
fn list_rules_json_carries_the_explanations() {
    let o = vmirom(&["check", "--list-rules", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let listed = v["rules"].as_array().unwrap();
    let all = catalog();
    assert_eq!(listed.len(), all.len());
    for (j, r) in listed.iter().zip(&all) {
        assert_eq!(j["profile"], r.profile);
        assert_eq!(j["id"], r.id);
        assert_eq!(j["severity"], r.severity.to_string());
        assert_eq!(j["summary"], r.summary());
        assert_eq!(j["explanation"], r.explanation());
        assert_eq!(j["source"], r.source);
    }
    let profiles: BTreeSet<&str> = listed
        .iter()
        .map(|j| j["profile"].as_str().unwrap())
        .collect();
    assert_eq!(
        profiles,
        BTreeSet::from(["linux-vmi", "pci", "seabios", "vmi-audit"])
    );
}

#[test]
fn explain_prints_the_rule_in_its_own_words() {
    let o = vmirom(&["check", "--explain", "seabios:missing-bytes"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8(o.stdout).unwrap();
    let r = &optionrom::validate::seabios::MISSING_BYTES;
    assert_eq!(
        t,
        format!(
            "seabios:missing-bytes (fail)\n{}\n\n{}\n\nSource: {}\n",
            r.summary(),
            r.explanation(),
            r.source
        )
    );
    assert!(t.contains("is_valid_rom"), "{t}");
    // An id without a profile: every profile's rule of that id.
    let o = vmirom(&["check", "--explain", "checksum"]);
    let t = text(&o);
    let heads: Vec<&str> = t
        .lines()
        .filter(|l| {
            ["(info)", "(warn)", "(fail)"]
                .iter()
                .any(|x| l.ends_with(x))
        })
        .collect();
    assert_eq!(
        heads,
        [
            "linux-vmi:checksum (warn)",
            "seabios:checksum (fail)",
            "pci:checksum (fail)"
        ],
        "{t}"
    );
    // --profile narrows it; --json gives the same fields as --list-rules.
    let o = vmirom(&["check", "--explain", "checksum", "-p", "pci", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rules"].as_array().unwrap().len(), 1);
    assert_eq!(v["rules"][0]["profile"], "pci");
    let o = vmirom(&["check", "--explain", "vmi-audit:registers-preserved"]);
    assert!(text(&o).contains("class X"), "{}", text(&o));
}

#[test]
fn an_unknown_rule_is_a_usage_error_naming_close_ones() {
    let o = vmirom(&["check", "--explain", "stack-balance"]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("unknown rule \"stack-balance\" (did you mean vmi-audit:stack-balanced"),
        "{t}"
    );
    let o = vmirom(&["check", "--explain", "checksum", "-p", "vmi-audit"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains(
            "unknown rule \"checksum\" in profile vmi-audit (did you mean linux-vmi:checksum"
        ),
        "{}",
        text(&o)
    );
    let o = vmirom(&["check", "--explain", "qqqqqq"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("unknown rule \"qqqqqq\"; `vmirom check --list-rules` lists the rules"),
        "{}",
        text(&o)
    );
    // Neither a file nor a rule; both.
    assert_eq!(vmirom(&["check"]).status.code(), Some(2));
    let o = vmirom(&["check", "x.rom", "--list-rules"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Each `FAIL`/`warn` line of `check` on broken ROMs names a rule `--explain` explains.
#[test]
fn every_fail_and_warn_line_names_a_rule_explain_knows() {
    let dir = tempfile::tempdir().unwrap();
    let rom = dir.path().join("vmi.rom");
    let o = vmirom(&["build", "-q", "-o", s(&rom)]);
    assert!(o.status.success(), "{}", text(&o));
    let good = std::fs::read(&rom).unwrap();
    let mut broken = Vec::new();
    let mut bad = good.clone();
    bad[0x300] ^= 0x40; // checksum
    bad[0x0D] = 2; // API major
    bad[0x1A] = 0x41; // $PnP pointer
    broken.push(bad);
    let mut cut = good[..700].to_vec();
    cut.extend([0x55, 0xAA, 0, 1]);
    broken.push(cut);
    let mut seen = BTreeSet::new();
    for (i, b) in broken.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.rom"));
        std::fs::write(&p, b).unwrap();
        let mut args = vec!["check", s(&p), "-q"];
        for prof in ["linux-vmi", "seabios", "pci", "vmi-audit"] {
            args.extend(["-p", prof]);
        }
        let t = text(&vmirom(&args));
        let mut profile = "";
        for line in t.lines() {
            if let Some(rest) = line.strip_suffix(']') {
                profile = rest.rsplit('[').next().unwrap();
                continue;
            }
            let cells: Vec<&str> = line.split_whitespace().collect();
            if let ["FAIL" | "warn", rule, ..] = cells[..] {
                seen.insert(format!("{profile}:{rule}"));
            }
        }
    }
    assert!(seen.len() >= 8, "{seen:?}");
    for name in &seen {
        let o = vmirom(&["check", "--explain", name]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        assert!(text(&o).starts_with(name.as_str()), "{}", text(&o));
    }
}

/// The README's `--explain` example and rule counts are what the command prints.
#[test]
fn the_readme_shows_the_rules_as_they_are() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let cmd = "$ vmirom check --explain seabios:checksum\n";
    let at = readme.find(cmd).expect("the README's --explain example") + cmd.len();
    let shown = &readme[at..at + readme[at..].find("```").unwrap()];
    let o = vmirom(&["check", "--explain", "seabios:checksum"]);
    assert_eq!(shown, String::from_utf8(o.stdout).unwrap());
    let count = |p: &str| catalog().iter().filter(|r| r.profile == p).count();
    let counts = format!(
        "`linux-vmi` {}, `seabios` {}, `pci` {}, `vmi-audit` {}",
        count("linux-vmi"),
        count("seabios"),
        count("pci"),
        count("vmi-audit")
    );
    assert!(readme.contains(&counts), "{counts}");
}
