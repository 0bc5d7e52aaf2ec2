//! Running the `vmirom` binary from the integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

/// Runs `vmirom ARGS…` to its end.
pub fn vmirom(args: &[&str]) -> Output {
    timed(args).0
}

/// Runs `vmirom ARGS…` and measures its wall time in seconds.
pub fn timed(args: &[&str]) -> (Output, f64) {
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_vmirom"))
        .args(args)
        .output()
        .unwrap();
    (o, t.elapsed().as_secs_f64())
}

/// stdout then stderr, for assertion messages and `contains` checks.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
