//! Every command that takes a file says what is really wrong with an unusable one (issue 12:
//! `vmirom test /dev/null` said "no such file"): no such file, a directory, a device, empty,
//! too large, permission denied — for inputs and for outputs, exit code 2, before any QEMU runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{s, text, vmirom};

/// The unusable inputs, each with the problem vmirom must name (`{holds}`: what the file
/// should hold).
struct Bad {
    missing: PathBuf,
    dir: PathBuf,
    empty: PathBuf,
    huge: PathBuf,
}

impl Bad {
    fn new(d: &Path) -> Bad {
        let b = Bad {
            missing: d.join("missing.bin"),
            dir: d.join("a-directory"),
            empty: d.join("empty.bin"),
            huge: d.join("huge.bin"),
        };
        std::fs::create_dir(&b.dir).unwrap();
        std::fs::write(&b.empty, b"").unwrap();
        let f = std::fs::File::create(&b.huge).unwrap();
        f.set_len((16 << 20) + 1).unwrap();
        b
    }

    /// `(path, problem)` for each case; `empty`/`huge` only where the command refuses them.
    fn cases(&self, holds: &str, empty: bool, huge: bool) -> Vec<(String, String)> {
        let mut v = vec![
            (s(&self.missing).to_string(), "no such file".to_string()),
            (
                s(&self.dir).to_string(),
                format!("is a directory; expected {holds}"),
            ),
            (
                "/dev/null".to_string(),
                format!(
                    "not a regular file but a character device; expected a file holding {holds}"
                ),
            ),
        ];
        if empty {
            v.push((
                s(&self.empty).to_string(),
                format!("the file is empty (0 bytes); expected {holds}"),
            ));
        }
        if huge {
            v.push((
                s(&self.huge).to_string(),
                format!(
                    "16777217 bytes: too large for {holds}, which is at most 16777216 bytes \
                     (16 MiB)"
                ),
            ));
        }
        v
    }
}

const ROM: &str = "an option-ROM image";

/// Runs `args` with `{}` replaced by `path` and expects exit 2 and exactly
/// `vmirom: LABEL PATH: PROBLEM` on stderr, nothing on stdout.
fn refuses(args: &[&str], path: &str, label: &str, problem: &str) {
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "{}" { path } else { a })
        .collect();
    let o = vmirom(&args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("vmirom: {label} {path}: {problem}\n"),
        "{args:?}"
    );
    assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
}

fn built(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["build", "-q", "-o", s(&p)];
    args.extend_from_slice(extra);
    let o = vmirom(&args);
    assert!(o.status.success(), "{}", text(&o));
    p
}

#[test]
fn rom_inputs_of_every_command_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Bad::new(dir.path());
    let out = dir.path().join("out.rom");
    let out = s(&out);
    // Read once by vmirom and judged there: an empty file is the command's verdict.
    for args in [
        vec!["info", "{}"],
        vec!["check", "{}"],
        vec!["check", "{}", "--json"],
    ] {
        for (p, problem) in bad.cases(ROM, false, true) {
            refuses(&args, &p, "reading", &problem);
        }
    }
    // Repaired, or handed to QEMU: an empty file is refused too.
    for args in [
        vec!["fix", "{}"],
        vec!["fix", "{}", "-o", out],
        vec!["test", "{}"],
        vec!["test", "{}", "--format", "junit"],
        vec!["trace", "run", "{}"],
    ] {
        for (p, problem) in bad.cases(ROM, true, true) {
            refuses(&args, &p, "reading", &problem);
        }
    }
    // `check` still judges an empty file itself (exit 1, rule `signature`).
    let o = vmirom(&["check", s(&bad.empty)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the file is empty"), "{}", text(&o));
}

#[test]
fn pack_objects_and_qemu_files_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Bad::new(dir.path());
    let out = dir.path().join("out.rom");
    for (p, problem) in bad.cases("an ELF32 i386 relocatable object", false, false) {
        refuses(&["pack", "{}", "-o", s(&out)], &p, "reading", &problem);
    }
    let trace = built(dir.path(), "t.rom", &["--trace"]);
    let t = s(&trace);
    for (p, problem) in bad.cases("a kernel image", true, false) {
        refuses(
            &["trace", "run", t, "--kernel", "{}"],
            &p,
            "--kernel",
            &problem,
        );
    }
    let kernel = dir.path().join("kernel.bin");
    std::fs::write(&kernel, [0u8; 64]).unwrap();
    let k = s(&kernel);
    for (p, problem) in bad.cases("an initrd image", true, false) {
        refuses(
            &["trace", "run", t, "--kernel", k, "--initrd", "{}"],
            &p,
            "--initrd",
            &problem,
        );
    }
    for (p, problem) in bad.cases("a guest-RAM image", false, false) {
        refuses(&["trace", "report", "--mem", "{}"], &p, "--mem", &problem);
    }
}

/// `trace report --rom` and `--svg` are reached only with a RAM image that holds an area: a
/// trace ROM run under QEMU without a guest leaves one (no calls counted).
#[test]
fn trace_report_rom_and_svg_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Bad::new(dir.path());
    let trace = built(dir.path(), "t.rom", &["--trace"]);
    let mem = dir.path().join("low.bin");
    let o = vmirom(&[
        "trace",
        "run",
        s(&trace),
        "-q",
        "--timeout",
        "3",
        "--save-mem",
        s(&mem),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m = s(&mem);
    for (p, problem) in bad.cases(ROM, false, true) {
        refuses(
            &["trace", "report", "--mem", m, "--rom", "{}"],
            &p,
            "reading",
            &problem,
        );
    }
    let o = vmirom(&["trace", "report", "--mem", m, "--svg", s(&bad.dir)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "vmirom: writing {}: is a directory; expected a file name\n",
            s(&bad.dir)
        )
    );
}

#[test]
fn outputs_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Bad::new(dir.path());
    let rom = built(dir.path(), "vmi.rom", &[]);
    let obj = dir.path().join("x.o");
    std::fs::write(&obj, b"").unwrap();
    let nodir = dir.path().join("no/such/dir");
    let under_file = bad.empty.join("x");
    let cases = [
        (
            s(&bad.dir).to_string(),
            "is a directory; expected a file name".to_string(),
        ),
        (
            s(&nodir.join("x")).to_string(),
            format!("the directory {} does not exist", s(&nodir)),
        ),
        (
            s(&under_file).to_string(),
            format!("{} is not a directory", s(&bad.empty)),
        ),
    ];
    for args in [
        vec!["build", "-q", "-o", "{}"],
        vec!["header", "-o", "{}"],
        vec!["fix", s(&rom), "-o", "{}"],
    ] {
        for (p, problem) in &cases {
            refuses(&args, p, "writing", problem);
        }
    }
    // A device is a fine output: `-o /dev/null` discards, `-o /dev/stdout` prints.
    let o = vmirom(&["build", "-q", "-o", "/dev/null"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Runs vmirom as an unprivileged user: `nobody` through `setpriv` when the tests run as root
/// (root reads any file), the current user otherwise.
fn unprivileged(dir: &Path, args: &[&str]) -> Output {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return vmirom(args);
    }
    // nobody must be able to run the binary: a copy in a directory it can enter.
    let bin = dir.join("vmirom");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_vmirom"), &bin).unwrap();
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs vmirom as nobody")
}

#[test]
fn permission_denied_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rom = built(d, "vmi.rom", &[]);
    std::fs::set_permissions(&rom, std::fs::Permissions::from_mode(0o000)).unwrap();
    let ro = d.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let r = s(&rom);
    for args in [vec!["check", r], vec!["info", r], vec!["test", r]] {
        let o = unprivileged(d, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            format!("vmirom: reading {r}: permission denied\n"),
            "{args:?}"
        );
    }
    let out = ro.join("x.rom");
    let o = unprivileged(d, &["build", "-q", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("vmirom: writing {}: permission denied\n", s(&out))
    );
}
