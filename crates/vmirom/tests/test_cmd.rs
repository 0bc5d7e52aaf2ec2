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

/// On the kvm engine the JSON carries VM exit counts: the native IODelay's one `out 0x80` per
/// invocation can be read off call 65; a trace ROM's counters are accounted there too, since
/// the runner runs the ROM's 16-bit init like a BIOS (`--no-bios-init` turns that off).
#[test]
fn on_the_kvm_engine_the_json_counts_exits_and_a_trace_rom_is_accounted() {
    if let Err(why) = vmi_harness::kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let native = rom(dir.path(), "n.rom", &|| image(&Native));
    let n = native.to_str().unwrap();
    for extra in [&[][..], &["--no-bios-init"][..]] {
        let mut args = vec!["test", n, "--engine", "kvm", "--only", "IODelay", "--json"];
        args.extend_from_slice(extra);
        let o = vmirom(&args);
        assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
        let j = json(&o);
        assert_eq!(j["bios_init"], extra.is_empty());
        let e = &j["calls"][65]["exits"];
        assert_eq!(j["calls"][65]["verdict"], "pass");
        let invocations = e["invocations"].as_u64().unwrap();
        assert!(invocations >= 1, "{e}");
        assert_eq!(e["rom"]["io_out"]["0x80"], invocations, "{e}");
        assert_eq!(e["rom"]["total"], invocations, "{e}");
        assert!(j["calls"][17]["exits"].is_null());
        assert!(j["run_log"][0]["exits"]["all"]["total"].as_u64().unwrap() > 0);
    }
    let trace = rom(dir.path(), "t.rom", &|| image(&Trace::new(Native)));
    let o = vmirom(&["test", trace.to_str().unwrap(), "--engine", "kvm", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let t = &json(&o)["trace_accounting"];
    assert_eq!(t["problems"], serde_json::json!([]));
    assert_eq!(t["runs_without_bios"], 0);
    assert!(t["runs_compared"].as_u64().unwrap() >= 3, "{t}");
    let o = vmirom(&[
        "test",
        trace.to_str().unwrap(),
        "--engine",
        "kvm",
        "--no-bios-init",
        "--json",
    ]);
    let t = &json(&o)["trace_accounting"];
    assert_eq!(t["runs_compared"], 0);
    assert!(t["runs_without_bios"].as_u64().unwrap() >= 3, "{t}");
    // Under QEMU SeaBIOS always runs the init: asking otherwise is a usage error.
    let o = vmirom(&["test", n, "--no-bios-init"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::text(&o).contains("under QEMU SeaBIOS always runs it"),
        "{}",
        common::text(&o)
    );
}

/// `--no-irqchip`: the kvm engine's guest gets no interrupt controller (the APIC calls are
/// skipped, saying why); with it (the default, where the host's KVM has the irqchip) they
/// run and pass. Under QEMU it is a usage error.
#[test]
fn no_irqchip_takes_the_local_apic_away_on_the_kvm_engine_and_is_refused_under_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let native = rom(dir.path(), "n.rom", &|| image(&Native));
    let n = native.to_str().unwrap();
    let o = vmirom(&["test", n, "--no-irqchip", "--only", "APICRead"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::text(&o).contains("QEMU's machine always has its PICs and local APIC"),
        "{}",
        common::text(&o)
    );
    if let Err(why) = vmi_harness::kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return;
    }
    let base = ["test", n, "--engine", "kvm", "--only", "APICRead", "--json"];
    let o = vmirom(&[&base[..], &["--no-irqchip"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let c = &json(&o)["calls"][64];
    assert_eq!(c["verdict"], "skipped", "{c}");
    assert_eq!(
        c["detail"],
        "no local APIC answers at 0xfee00000 on the kvm engine"
    );
    if !vmi_harness::kvm::irqchip_supported() {
        eprintln!("SKIP (part): this KVM has no in-kernel irqchip");
        return;
    }
    let o = vmirom(&base);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let c = &json(&o)["calls"][64];
    assert_eq!(
        (&c["verdict"], &c["checks"]),
        (&"pass".into(), &3.into()),
        "{c}"
    );
}

/// GetCycleFrequency's prefix: MSR_KVM_SYSTEM_TIME_NEW written 0 (the calling CPU's pvclock
/// area unregistered; the kvm ROM, having marked the CPU registered, does not register it
/// again), then the kvm routine.
fn unregister_first(e: &mut vmi_rom::emit::Emit) -> Result<Answer, vmi_rom::GenError> {
    use iced_x86::code_asm::{ecx, edx};
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.mov(ecx, 0x4B56_4D01u32)?;
    e.a.wrmsr()?;
    vmi_rom::kvm::Kvm.emit(Call::GetCycleFrequency, e)
}

/// A ROM whose manifest names the kvm backend is held to kvmclock on the kvm engine: the kvm
/// ROM passes the pvclock check; one whose calling CPU ends without a registered pvclock area
/// fails it (exit 1) — the same ROM's verdict would be a note were it not built on the kvm
/// backend.
#[test]
fn on_the_kvm_engine_a_kvm_rom_is_held_to_kvmclock() {
    if let Err(why) = vmi_harness::kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = |p: &Path| -> Vec<String> {
        [
            "test",
            p.to_str().unwrap(),
            "--engine",
            "kvm",
            "--only",
            "66",
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |p: &Path| {
        let a = args(p);
        vmirom(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let kvm = rom(dir.path(), "k.rom", &|| image(&vmi_rom::kvm::Kvm));
    let o = run(&kvm);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o));
    let d = json(&o)["calls"][66]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("GetCycleFrequency() against the pvclock area the calling CPU registered: ")
            && d.contains(" Hz from the pvclock area at 0x"),
        "{d}"
    );
    let broken = rom(dir.path(), "u.rom", &|| {
        image(&Override {
            base: vmi_rom::kvm::Kvm,
            call: Call::GetCycleFrequency,
            emit: unregister_first,
        })
    });
    let o = run(&broken);
    assert_eq!(o.status.code(), Some(1), "{}", common::text(&o));
    let c = &json(&o)["calls"][66];
    assert_eq!(c["verdict"], "fail");
    assert_eq!(
        c["detail"],
        "GetCycleFrequency() against the pvclock area the calling CPU registered: the calling \
         CPU has no pvclock area registered after the call (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 \
         reads 0x0): a ROM built for KVM takes its time from kvmclock where CPUID offers it"
    );
}
