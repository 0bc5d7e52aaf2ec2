//! Writes the test guest's stress program as a multiboot kernel, and a System.map naming its
//! call sites — a guest to try `vmirom trace run` on:
//!
//! ```sh
//! cargo run -p vmi-harness --example stress_guest -- guest.bin System.map
//! vmirom trace run trace.rom --kernel guest.bin --system-map System.map -- -smp 2
//! ```
//!
//! The guest probes and activates the ROM like Linux, then loops over ten checked VMI calls
//! (`LOOPS` times at least) while the PIT fires IRQ0 at ~20 kHz and the timer handler makes
//! three calls of its own, and a second CPU (with `-smp 2`) makes `AP_LOOPS` iterations of
//! five calls; then it writes to isa-debug-exit and QEMU ends.

use std::process::ExitCode;
use vmi_harness::guest::{GuestConfig, Step, Stress, build};

/// Loop iterations of the first CPU.
const LOOPS: u32 = 200_000;
/// Timer interrupts it waits for after them.
const TICKS: u32 = 2_000;
/// Iterations of the second CPU.
const AP_LOOPS: u32 = 400_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [guest, map] = &args[..] else {
        eprintln!("usage: stress_guest GUEST.bin SYSTEM.map");
        return ExitCode::from(2);
    };
    let mut steps = vec![Step::Probe, Step::Init];
    steps.extend((0..vmi_abi::calls::NUM_CALLS as u32).map(Step::GetReloc));
    steps.push(Step::Stress(0));
    let cfg = GuestConfig {
        steps,
        stress: vec![Stress::with_second_cpu(LOOPS, TICKS, AP_LOOPS)],
        ..GuestConfig::linux(0xC000_0000, true, &[])
    };
    let g = match build(&cfg) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("stress_guest: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, bytes) in [(guest, g.image.clone()), (map, g.system_map().into_bytes())] {
        if let Err(e) = std::fs::write(path, bytes) {
            eprintln!("stress_guest: writing {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
