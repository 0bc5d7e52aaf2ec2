//! What the kvm backend saves in VM exits (returns to user space) against the native one, on
//! the KVM runner (`/dev/kvm`; kvm-pvm here):
//!
//! 1. Per call kind: the conformance suite's vectors of IODelay and the time calls (65–71)
//!    with the native and the kvm ROM, the exits raised inside the ROM per vector that
//!    invoked it, by kind; Init's (the activation run's exits inside the ROM: Init and
//!    GetRelocationInfo) and the BIOS step's. PV EOI's saving is not measurable on this
//!    runner: with its in-kernel irqchip the local APIC's MMIO (an EOI among it) is handled in
//!    KVM and never exits to user space, and without it there is no local APIC.
//! 2. A traced guest run: the whole suite on the kvm engine with the native and the kvm trace
//!    ROM (`vmirom build --trace`, `--backend kvm --trace`), each run's calls counted by the
//!    ROM's trace area; the exits inside the ROM measured for both, and predicted from the
//!    counts × the per-call exits of (1).
//!
//! `cargo bench -p vmi-harness --bench kvm_exits` (skips, saying why, without KVM).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use vmi_abi::Call;
use vmi_abi::calls::NUM_CALLS;
use vmi_harness::Engine;
use vmi_harness::kvm::{self, ExitCounts};
use vmi_harness::suite::{SuiteOptions, SuiteReport, run_suite};
use vmi_rom::Backend;
use vmi_rom::generate::{BuildOptions, generate};
use vmi_rom::kvm::Kvm;
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};

/// IODelay and the time calls the runner can run.
const CALLS: [Call; 7] = [
    Call::IODelay,
    Call::GetCycleFrequency,
    Call::GetCycleCounter,
    Call::SetAlarm,
    Call::CancelAlarm,
    Call::GetWallclockTime,
    Call::WallclockUpdated,
];

fn suite(b: &impl Backend, only: Option<Vec<u32>>, keep_ram: bool) -> SuiteReport {
    let g = generate(b, &BuildOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rom = dir.path().join("vmi.rom");
    std::fs::write(&rom, &g.image).unwrap();
    run_suite(
        &rom,
        &SuiteOptions {
            engine: Engine::Kvm,
            only,
            keep_ram,
            ..SuiteOptions::default()
        },
    )
    .unwrap()
}

/// `c` in a few words: the total and its kinds.
fn kinds(c: &ExitCounts) -> String {
    let mut parts = Vec::new();
    for (dir, ports) in [("out", &c.io_out), ("in", &c.io_in)] {
        for (p, n) in &ports.0 {
            parts.push(format!("{dir} {p:#x}: {n}"));
        }
    }
    for (what, n) in [
        ("mmio read", c.mmio_read),
        ("mmio write", c.mmio_write),
        ("hlt", c.hlt),
        ("other", c.other),
    ] {
        if n > 0 {
            parts.push(format!("{what}: {n}"));
        }
    }
    if parts.is_empty() {
        "0".into()
    } else {
        format!("{} ({})", c.total, parts.join(", "))
    }
}

/// ROM exits per vector that invoked the ROM, per call (None: no vector ran; Some(0.0) for a
/// NOP answer, which costs nothing).
fn per_call(r: &SuiteReport) -> BTreeMap<u8, (f64, String)> {
    r.calls
        .iter()
        .filter_map(|c| {
            let e = c.exits.as_ref()?;
            let what = if c.reloc == "NOP" {
                "NOP: nothing to execute".to_string()
            } else {
                format!("{} vectors: {}", e.invocations, kinds(&e.rom))
            };
            let each = if e.invocations == 0 {
                0.0
            } else {
                e.rom.total as f64 / f64::from(e.invocations)
            };
            Some((c.call, (each, what)))
        })
        .collect()
}

/// The activation run's exits inside the ROM (Init, GetRelocationInfo) and the BIOS step's.
fn init(r: &SuiteReport) -> (ExitCounts, ExitCounts) {
    let act = r.run_log[0].exits.as_ref().unwrap();
    (act.rom.clone(), act.init16.clone().unwrap_or_default())
}

fn per_call_kinds() -> (BTreeMap<u8, f64>, BTreeMap<u8, f64>) {
    let only = Some(CALLS.iter().map(|c| *c as u32).collect::<Vec<_>>());
    let native = suite(&Native, only.clone(), false);
    let kvm = suite(&Kvm, only, false);
    let (n, k) = (per_call(&native), per_call(&kvm));
    println!("VM exits inside the ROM per vector that invoked it, on the KVM runner (kvm-pvm):");
    println!("  {:<20} {:<44} kvm", "call", "native");
    for c in CALLS {
        let get = |m: &BTreeMap<u8, (f64, String)>| {
            m.get(&(c as u8))
                .map_or("-".to_string(), |(each, what)| format!("{each:.2}: {what}"))
        };
        println!(
            "  {:<20} {:<44} {}",
            format!("{} ({})", c.spec().name, c as u8),
            get(&n),
            get(&k)
        );
    }
    let (n_init, n16) = init(&native);
    let (k_init, k16) = init(&kvm);
    println!(
        "  {:<20} {:<44} {}",
        "Init (+ GetRelocationInfo ×81)",
        kinds(&n_init),
        kinds(&k_init)
    );
    println!(
        "  {:<20} {:<44} {}",
        "16-bit init (BIOS step)",
        kinds(&n16),
        kinds(&k16)
    );
    println!(
        "  APIC EOI (PV EOI): not measurable on the runner (the local APIC is KVM's \
         in-kernel one: its MMIO never exits to user space)"
    );
    let strip = |m: BTreeMap<u8, (f64, String)>| m.into_iter().map(|(c, (e, _))| (c, e)).collect();
    (strip(n), strip(k))
}

/// The calls the trace areas of `r`'s runs counted, summed per call number (and how many
/// runs had an area).
fn traced_counts(r: &SuiteReport) -> (Vec<u64>, usize) {
    let mut total = vec![0u64; NUM_CALLS];
    let mut runs = 0;
    for run in &r.run_log {
        let Some(a) = run.low_ram.as_ref().and_then(|ram| area::find(ram).ok()) else {
            continue;
        };
        runs += 1;
        for (t, c) in total.iter_mut().zip(&a.counters) {
            *t += c.count;
        }
    }
    (total, runs)
}

/// Exits inside the ROM over `r`'s runs: (all, those outside the call vectors that ran to
/// their result — Init and GetRelocationInfo, and the calls that ended their run: Reboot's
/// reset, Shutdown's `hlt`, an instruction the KVM could not emulate).
fn rom_exits(r: &SuiteReport) -> (u64, u64) {
    let mut all = 0;
    let mut outside = 0;
    for e in r.run_log.iter().filter_map(|run| run.exits.as_ref()) {
        let calls: u64 = e.calls.values().map(|c| c.rom.total).sum();
        all += e.rom.total;
        outside += e.rom.total.saturating_sub(calls);
    }
    (all, outside)
}

fn traced_run(native_each: &BTreeMap<u8, f64>, kvm_each: &BTreeMap<u8, f64>) {
    let native = suite(&Trace::new(Native), None, true);
    let kvm = suite(&Trace::new(Kvm), None, true);
    // The workload as the guest made it: what the native trace ROM counted (under KVM the
    // kvm ROM answers IODelay NOP, so its area never sees those calls).
    let (counts, areas) = traced_counts(&native);
    println!(
        "\ntraced guest run: the whole suite on the kvm engine with the trace ROMs ({} runs; \
         the native trace ROM's area counted the calls of {areas})",
        native.run_log.len(),
    );
    println!("  calls counted × the exits per call the kvm ROM saves (native − kvm, above):");
    let mut predicted = 0.0;
    for c in CALLS {
        let n = counts.get(c as usize).copied().unwrap_or(0);
        let saved = native_each.get(&(c as u8)).copied().unwrap_or(0.0)
            - kvm_each.get(&(c as u8)).copied().unwrap_or(0.0);
        predicted += n as f64 * saved;
        println!(
            "    {:<20} {n:>6} calls × {saved:>5.2} = {:>8.0}",
            c.spec().name,
            n as f64 * saved
        );
    }
    let (n_all, n_init) = rom_exits(&native);
    let (k_all, k_init) = rom_exits(&kvm);
    let runs = native.run_log.len().max(1) as f64;
    println!(
        "    {:<20} {:>6} runs  × {:>5.0} = {:>8.0}  (mean per run, measured)",
        "Init, runs' ends",
        native.run_log.len(),
        (n_init as f64 - k_init as f64) / runs,
        n_init as f64 - k_init as f64
    );
    predicted += n_init as f64 - k_init as f64;
    println!(
        "  exits inside the ROM, measured: trace(native) {n_all} ({n_init} outside the vectors: \
         Init, GetRelocationInfo, the runs' ends), trace(kvm) {k_all} ({k_init}): {} avoided; \
         predicted from the counts {predicted:.0}",
        n_all.saturating_sub(k_all)
    );
    println!(
        "  (a traced 2.6.32 boot's 100,000+ IODelay calls: 100,000+ port-I/O exits avoided, one \
         per call)"
    );
}

fn main() {
    if let Err(why) = kvm::available() {
        println!("SKIP: KVM unavailable: {why}");
        return;
    }
    let (native_each, kvm_each) = per_call_kinds();
    traced_run(&native_each, &kvm_each);
}
