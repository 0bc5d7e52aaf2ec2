//! What time through the ROM costs: the path length of every time and APIC call (native and
//! kvm backends, from the static audit: shortest and longest path), and the boot-time ratio of
//! a guest with and without the ROM's timer — the generated test guest under QEMU TCG (probe,
//! Init, GetRelocationInfo: the ROM's timer adds its TSC calibration to Init), and, if
//! `VMIROM_BENCH_KERNEL` names a VMI Linux bzImage whose /init powers off, that kernel booted
//! with the timer and with `vmi=disable_timer` (extra command line in `VMIROM_BENCH_APPEND`).
//! `cargo bench -p vmi-harness --bench time_cost`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vmi_abi::Call;
use vmi_harness::probe::{ProbeOptions, probe};
use vmi_rom::audit::audit;
use vmi_rom::emit::Emit;
use vmi_rom::generate::{BuildOptions, generate};
use vmi_rom::kvm::Kvm;
use vmi_rom::native::Native;
use vmi_rom::{Answer, Backend, GenError};

const TIME_CALLS: [Call; 8] = [
    Call::APICWrite,
    Call::APICRead,
    Call::GetCycleFrequency,
    Call::GetCycleCounter,
    Call::SetAlarm,
    Call::CancelAlarm,
    Call::GetWallclockTime,
    Call::WallclockUpdated,
];

/// The native ROM without the ROM's timer and APIC calls (NONE; no private RAM, no
/// calibration at Init): what the native backend was before.
struct WithoutTimer;

impl Backend for WithoutTimer {
    fn name(&self) -> String {
        "native-without-timer".into()
    }
    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        if TIME_CALLS.contains(&call) || call == Call::WallclockUpdated {
            Ok(Answer::None)
        } else {
            Native.emit(call, e)
        }
    }
    fn note(&self, call: Call) -> &'static str {
        Native.note(call)
    }
}

fn paths(b: &dyn Backend, name: &str) {
    let g = generate(b, &BuildOptions::default()).unwrap();
    let stats = audit(&g.image).routines;
    let row: Vec<String> = TIME_CALLS
        .iter()
        .map(|c| {
            let s = stats.iter().find(|s| s.call == Some(*c as u8)).unwrap();
            format!("{} {}..{}", c.spec().name, s.min_path, s.max_path)
        })
        .collect();
    println!("{name} ({} bytes): {}", g.image.len(), row.join(", "));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn guest_boot(b: &dyn Backend, runs: usize) -> Duration {
    let g = generate(b, &BuildOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rom = dir.path().join("vmi.rom");
    std::fs::write(&rom, &g.image).unwrap();
    median(
        (0..runs)
            .map(|_| {
                let r = probe(&rom, &ProbeOptions::default()).unwrap();
                r.check().unwrap();
                r.wall
            })
            .collect(),
    )
}

fn kernel_boot(rom: &Path, kernel: &str, append: &str, runs: usize) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let st = Command::new("qemu-system-i386")
                    .args(["-M", "pc", "-accel", "tcg", "-m", "512", "-net", "none"])
                    .args(["-display", "none", "-monitor", "none", "-serial", "null"])
                    .args([
                        "-no-reboot",
                        "-device",
                        "isa-debug-exit,iobase=0xf4,iosize=0x04",
                    ])
                    .arg("-option-rom")
                    .arg(rom)
                    .args(["-kernel", kernel, "-append", append])
                    .status()
                    .unwrap();
                assert!(st.code().is_some(), "QEMU died: {st}");
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!("path length (instructions, shortest..longest) of the time and APIC calls:");
    paths(&Native, "native");
    paths(&Kvm, "kvm (under KVM and, natively, its fallback)");
    let runs = 5;
    let with = guest_boot(&Native, runs);
    let without = guest_boot(&WithoutTimer, runs);
    println!(
        "test guest boot to the end of activation under QEMU TCG, median of {runs}: with the ROM's \
         timer {with:?}, without {without:?}: ratio {:.3}",
        with.as_secs_f64() / without.as_secs_f64()
    );
    if let Ok(kernel) = std::env::var("VMIROM_BENCH_KERNEL") {
        let append = std::env::var("VMIROM_BENCH_APPEND").unwrap_or_default();
        let dir = tempfile::tempdir().unwrap();
        let rom = dir.path().join("vmi.rom");
        let g = generate(&Native, &BuildOptions::default()).unwrap();
        std::fs::write(&rom, &g.image).unwrap();
        let on = kernel_boot(&rom, &kernel, &format!("console=ttyS0 {append}"), 3);
        let off = kernel_boot(
            &rom,
            &kernel,
            &format!("console=ttyS0 vmi=disable_timer {append}"),
            3,
        );
        println!(
            "{kernel} to power-off, median of 3: with the ROM's timer {on:?}, with \
             vmi=disable_timer {off:?}: ratio {:.3}",
            on.as_secs_f64() / off.as_secs_f64()
        );
    }
}
