//! `vmirom test` end to end under QEMU (TCG): the verdict table and JSON, the re-entrancy run,
//! and for a trace ROM the accounting of its counters against what the guest called — exact
//! for the real trace ROM, and caught when one call's counting is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::code_asm::{cr0, eax};
use std::path::{Path, PathBuf};
use std::process::Output;
use vmi_abi::Call;
use vmi_rom::generate::{BuildOptions, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;
use vmi_rom::{Answer, Backend, Override};

mod common;

use common::vmirom;

fn rom(dir: &Path, name: &str, backend: &dyn Fn() -> Vec<u8>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, backend()).unwrap();
    p
}

fn image(b: &impl Backend) -> Vec<u8> {
    generate_unaudited(b, &BuildOptions::default())
        .unwrap()
        .image
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn native_rom_passes_with_the_reentrancy_run_and_no_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let native = rom(dir.path(), "n.rom", &|| image(&Native));
    let o = vmirom(&["test", native.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let j = json(&o);
    assert_eq!(j["stress"]["verdict"], "pass");
    assert!(j["stress"]["interrupts"].as_u64().unwrap() >= 300);
    assert!(j.get("trace_accounting").is_none());
    let o = vmirom(&["test", native.to_str().unwrap(), "--only", "GetCR0,RDTSC"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("re-entrancy (IRQ0 storm, second CPU): pass"),
        "{out}"
    );
    assert!(!out.contains("trace accounting"));
}

#[test]
fn a_trace_rom_is_accounted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "t.rom", &|| image(&Trace::new(Native)));
    let o = vmirom(&["test", trace.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("trace accounting: exact — "), "{out}");
    let o = vmirom(&["test", trace.to_str().unwrap(), "--json"]);
    let t = &json(&o)["trace_accounting"];
    assert_eq!(t["problems"], serde_json::json!([]));
    assert!(t["runs_compared"].as_u64().unwrap() >= 4);
    assert!(t["invocations"].as_u64().unwrap() > 1000);
}

#[test]
fn a_trace_rom_that_misses_a_call_fails_the_accounting() {
    // GetCR0 replaced by plain native code: it works, but the area never counts it.
    let bad = Override {
        base: Trace::new(Native),
        call: Call::GetCR0,
        emit: |e| {
            e.a.mov(eax, cr0)?;
            e.a.ret()?;
            Ok(Answer::Call)
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let p = rom(dir.path(), "bad.rom", &|| image(&bad));
    let o = vmirom(&["test", p.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&o);
    assert_eq!(j["calls"][19]["verdict"], "pass");
    let problems: Vec<String> = j["trace_accounting"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.contains("call 19 (GetCR0): the trace area counted 0, the guest called it")),
        "{problems:#?}"
    );
}
