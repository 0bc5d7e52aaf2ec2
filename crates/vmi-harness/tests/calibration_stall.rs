//! The native ROM's TSC calibration survives a host that keeps stopping the guest while Init
//! measures (QEMU TCG): every QEMU the suite starts is stopped for 70 ms and let run for
//! 30 ms, fifteen times — stops longer than the 55 ms PIT channel 2's 16-bit count takes to
//! go round — and GetCycleFrequency must still agree with REAL measured against the PM timer
//! within ±0.1 %. (Before the calibration checked the TSC between its polls, such stops made
//! it report 4.9–5.5 GHz on a 2.3 GHz host.)
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::Duration;
use vmi_abi::Call;
use vmi_harness::suite::{SuiteOptions, Verdict};
use vmi_rom::generate::{BuildOptions, generate};
use vmi_rom::native::Native;

/// Stops (and their length) each QEMU gets, and the run time between them.
const PULSES: u32 = 15;
const STOPPED: Duration = Duration::from_millis(70);
const RUNNING: Duration = Duration::from_millis(30);

/// The QEMU processes this test process started.
fn qemu_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid …
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            comm.contains("(qemu-system") && rest.split(' ').nth(1) == Some(me.as_str())
        })
        .collect()
}

/// Sends `sig` to `pid`; false when the process is gone.
fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) on a process this test started; a pid that has exited meanwhile only
    // makes the call fail with ESRCH.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Stops `pid` [`PULSES`] times while it lives; counts the stops in `stops`.
fn stall(pid: i32, stops: &AtomicU32) {
    for _ in 0..PULSES {
        if !signal(pid, libc::SIGSTOP) {
            return;
        }
        thread::sleep(STOPPED);
        signal(pid, libc::SIGCONT);
        stops.fetch_add(1, Ordering::Relaxed);
        thread::sleep(RUNNING);
    }
}

/// Stalls every new QEMU child (each in a thread of its own) until `done`.
fn stall_each_qemu(done: &AtomicBool, stops: &AtomicU32) {
    thread::scope(|s| {
        let mut seen = Vec::new();
        while !done.load(Ordering::Relaxed) {
            for pid in qemu_children() {
                if !seen.contains(&pid) {
                    seen.push(pid);
                    s.spawn(move || stall(pid, stops));
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
}

#[test]
fn get_cycle_frequency_is_right_when_the_guest_is_stopped_during_calibration() {
    let image = generate(&Native, &BuildOptions::default()).unwrap().image;
    let done = AtomicBool::new(false);
    let stops = AtomicU32::new(0);
    let report = thread::scope(|s| {
        s.spawn(|| stall_each_qemu(&done, &stops));
        let r = common::suite(
            &image,
            &SuiteOptions {
                only: Some(vec![Call::GetCycleFrequency as u32]),
                ..SuiteOptions::default()
            },
        );
        done.store(true, Ordering::Relaxed);
        r
    });
    // The vector run, at least, was stopped again and again.
    assert!(
        stops.load(Ordering::Relaxed) >= PULSES,
        "only {} stops",
        stops.load(Ordering::Relaxed)
    );
    let c = report.call(Call::GetCycleFrequency as u8).unwrap();
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
    assert!(c.detail.contains("against the PM timer"), "{}", c.detail);
}
