//! Building 32-bit objects with the machine's gcc and GNU as.
//!
//! Failures here are test-setup failures, so they are reported as `Err` with the tool's stderr
//! (callers in tests unwrap them).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags every C object is compiled with: 32-bit, freestanding, optimised, object only.
pub const CFLAGS: [&str; 4] = ["-m32", "-ffreestanding", "-O2", "-c"];

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether all of `tools` are present; prints a SKIPPED line naming them when they are not.
pub fn available(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} not installed (apt-get install gcc binutils)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// Runs a build tool; `Err` carries its stderr.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("starting {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Compiles `src` as `dir/name.c` with [`CFLAGS`] plus `flags`; returns the object's path.
pub fn gcc(dir: &Path, name: &str, src: &str, flags: &[&str]) -> Result<PathBuf, String> {
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&c, src).map_err(|e| format!("writing {}: {e}", c.display()))?;
    run(Command::new("gcc")
        .args(CFLAGS)
        .args(flags)
        .arg("-o")
        .arg(&o)
        .arg(&c))?;
    Ok(o)
}

/// Assembles `src` as `dir/name.s` with `as --32`; returns the object's path.
pub fn gas(dir: &Path, name: &str, src: &str) -> Result<PathBuf, String> {
    let s = dir.join(format!("{name}.s"));
    let o = dir.join(format!("{name}.o"));
    std::fs::write(&s, src).map_err(|e| format!("writing {}: {e}", s.display()))?;
    run(Command::new("as").arg("--32").arg("-o").arg(&o).arg(&s))?;
    Ok(o)
}

/// Reads an object built by [`gcc`] or [`gas`].
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}
