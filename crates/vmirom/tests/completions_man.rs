//! `vmirom completions SHELL` and `vmirom man`: generated from the clap definitions, they name
//! every subcommand; bash loads the script and completes with it; groff renders every page
//! without a warning.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

mod common;

use common::{s, text, vmirom};

/// Every subcommand, as `vmirom --help` lists them.
const SUBCOMMANDS: [&str; 10] = [
    "build",
    "info",
    "check",
    "fix",
    "pack",
    "test",
    "header",
    "trace",
    "completions",
    "man",
];
const TRACE: [&str; 2] = ["report", "run"];

fn stdout(args: &[&str]) -> String {
    let o = vmirom(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Sources the bash script and completes the words (the last one being typed): COMPREPLY.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = words[cword - 1];
    let line = format!(
        "source '{}' && COMP_WORDS=({}) && COMP_CWORD={cword} && _vmirom vmirom '{}' '{prev}' \
         && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        s(script),
        quoted.join(" "),
        words[cword]
    );
    let o = Command::new("bash").args(["-c", &line]).output().unwrap();
    assert!(o.status.success(), "{line}: {}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_every_subcommand() {
    let script = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vmirom.bash");
    std::fs::write(&f, &script).unwrap();
    let o = Command::new("bash").args(["-n", s(&f)]).output().unwrap();
    assert!(o.status.success(), "bash -n: {}", text(&o));
    let top = bash_complete(&f, &["vmirom", ""]);
    for c in SUBCOMMANDS {
        assert!(top.iter().any(|w| w == c), "{c} not in {top:?}");
    }
    let trace = bash_complete(&f, &["vmirom", "trace", ""]);
    for c in TRACE {
        assert!(trace.iter().any(|w| w == c), "{c} not in {trace:?}");
    }
    assert_eq!(
        bash_complete(&f, &["vmirom", "test", "x.rom", "--format", ""]),
        ["table", "json", "tap", "junit"]
    );
    let shells = bash_complete(&f, &["vmirom", "completions", ""]);
    let shells: Vec<&String> = shells.iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(shells, ["bash", "elvish", "fish", "powershell", "zsh"]);
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    let zsh = stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef vmirom\n"), "{zsh}");
    for c in SUBCOMMANDS.iter().chain(&TRACE) {
        assert!(zsh.contains(&format!("'{c}:")), "zsh: {c}");
    }
    let fish = stdout(&["completions", "fish"]);
    for c in SUBCOMMANDS.iter().chain(&TRACE) {
        assert!(
            fish.lines()
                .any(|l| l.starts_with("complete -c vmirom ") && l.contains(&format!("-a \"{c}\""))),
            "fish: {c}"
        );
    }
    // Where the shells are installed, they parse the scripts too.
    let dir = tempfile::tempdir().unwrap();
    for (shell, script, check) in [("zsh", &zsh, "-n"), ("fish", &fish, "--no-execute")] {
        let f = dir.path().join(shell);
        std::fs::write(&f, script).unwrap();
        if let Ok(o) = Command::new(shell).args([check, s(&f)]).output() {
            assert!(o.status.success(), "{shell} {check}: {}", text(&o));
        }
    }
    let o = vmirom(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}

/// groff (groff-base, installed by .ci/run) renders a page as man would: no warning at all.
fn groff(page: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-u"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff (groff-base) is installed: see .ci/run");
    child.stdin.take().unwrap().write_all(page).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "groff warnings");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_man_page_is_roff_that_groff_renders_with_every_subcommand() {
    let page = stdout(&["man"]);
    assert!(
        page.is_ascii(),
        "non-ASCII characters must be groff escapes"
    );
    let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
    assert!(th.starts_with(".TH vmirom 1 "), "{th}");
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    for c in SUBCOMMANDS {
        assert!(page.contains(&format!("vmirom\\-{c}(1)")), "{c}");
    }
    let shown = groff(page.as_bytes());
    let shown = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(shown.contains("vmirom - Build, inspect, check"), "{shown}");
    assert!(
        shown.contains("0 success, 1 a check or test failed, 2 usage or input error"),
        "{shown}"
    );
    for c in SUBCOMMANDS {
        assert!(shown.contains(&format!("vmirom-{c}(1)")), "{c}: {shown}");
    }
    // Only pages that exist are referred to (no `help` page).
    assert!(!shown.contains("vmirom-help(1)"), "{shown}");
    assert!(shown.contains("EXIT STATUS"), "{shown}");
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man/man1");
    let listed = stdout(&["man", "--out", s(&out)]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = vec!["vmirom.1".into()];
    want.extend(SUBCOMMANDS.iter().map(|c| format!("vmirom-{c}.1")));
    want.extend(TRACE.iter().map(|c| format!("vmirom-trace-{c}.1")));
    want.sort();
    assert_eq!(names, want);
    for n in &names {
        assert!(
            listed.contains(&format!("wrote {}", s(&out.join(n)))),
            "{listed}"
        );
        let page = std::fs::read(out.join(n)).unwrap();
        let stem = n.trim_end_matches(".1");
        let th = format!(".TH {stem} 1 ");
        assert!(String::from_utf8_lossy(&page).contains(&th), "{n}: no {th}");
        let shown = groff(&page);
        assert!(shown.contains("SYNOPSIS"), "{n}: {shown}");
    }
    // The test page documents the formats (words compared with single spaces: groff
    // justifies lines, alternating the side it pads, so the gaps depend on the lines above).
    let test = groff(&std::fs::read(out.join("vmirom-test.1")).unwrap());
    let words = test.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("--format <FORMAT>"), "{test}");
    assert!(words.contains("junit: JUnit XML"), "{test}");
    // A file where the directory should be: the problem is named.
    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let o = vmirom(&["man", "--out", s(&file)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("--out {}:", s(&file))),
        "{}",
        text(&o)
    );
}
