//! The kvmclock checks on the KVM runner (kvm-pvm implements kvmclock's MSRs in the kernel):
//! the kvm ROM passes them — GetCycleFrequency is the rate its pvclock scale implies,
//! GetWallclockTime the host's time, REAL never goes backwards over 1000 calls and advances
//! at GetCycleFrequency against the runner's host-timed PM timer —, the native ROM is noted,
//! not failed (it promises no kvmclock), and two broken kvm ROMs get the exact verdicts: one
//! that forgets to register the CPU's pvclock area, one that scales the frequency wrongly.
//!
//! Every test skips (with a `SKIP:` line) where KVM cannot be used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use vmi_abi::Call;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict};
use vmi_harness::{Engine, kvm};
use vmi_rom::Backend;
use vmi_rom::generate::{BuildOptions, generate_unaudited};
use vmi_rom::kvm::Kvm;
use vmi_rom::native::Native;

/// IODelay and the time calls (the alarms run on the runner's local APIC where it has the
/// irqchip; the APIC calls themselves are tested in suite_native.rs).
const CALLS: [u32; 7] = [65, 66, 67, 68, 69, 70, 71];

/// Returns false (after saying why) when KVM cannot be used here.
fn kvm_usable() -> bool {
    match kvm::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIP: KVM unavailable: {why}");
            false
        }
    }
}

/// The suite on the KVM runner for [`CALLS`]; `expect`: the ROM promises kvmclock.
fn run(backend: &impl Backend, expect: bool) -> SuiteReport {
    let g = generate_unaudited(backend, &BuildOptions::default()).unwrap();
    common::suite(
        &g.image,
        &SuiteOptions {
            engine: Engine::Kvm,
            only: Some(CALLS.to_vec()),
            expect_kvmclock: expect,
            ..SuiteOptions::default()
        },
    )
}

/// Every call of `calls` passed.
fn assert_pass(r: &SuiteReport, calls: &[Call]) {
    for &call in calls {
        let c = r.call(call as u8).unwrap();
        assert_eq!(
            c.verdict,
            Verdict::Pass,
            "{} {}: {}",
            c.call,
            c.name,
            c.detail
        );
    }
}

fn detail(r: &SuiteReport, call: Call) -> String {
    r.call(call as u8).unwrap().detail.clone()
}

/// The text of the item of `detail` that starts with `what`, up to the next item.
fn item<'a>(detail: &'a str, what: &str) -> &'a str {
    let at = detail
        .find(what)
        .unwrap_or_else(|| panic!("{what}: {detail}"));
    detail[at + what.len()..].split("; ").next().unwrap()
}

/// GetCycleFrequency against REAL over 200 ms of the runner's PM timer: judged (and passed,
/// or failed with `fails`), or inconclusive because the host was too busy.
fn pm_timer_check(detail: &str, fails: Option<&str>) {
    let what = "GetCycleFrequency() against GetCycleCounter(REAL) over 200 ms of the PM timer: ";
    let busy = format!("{what}the host was too busy to time GetCycleCounter(REAL)");
    if detail.contains(&busy) {
        eprintln!("the PM-timer frequency check was inconclusive: {detail}");
        return;
    }
    match fails {
        None => assert!(
            item(detail, what).starts_with("REAL measured at "),
            "{detail}"
        ),
        Some(f) => assert!(item(detail, what).contains(f), "{f}: {detail}"),
    }
}

#[test]
fn the_kvm_rom_passes_the_kvmclock_checks_on_the_kvm_runner() {
    if !kvm_usable() {
        return;
    }
    let r = run(&Kvm, true);
    assert!(r.passed(), "{:?}", r.activation.problems);
    for n in CALLS {
        let c = r.call(n as u8).unwrap();
        assert_eq!(
            c.verdict,
            Verdict::Pass,
            "{} {}: {}",
            c.call,
            c.name,
            c.detail
        );
    }
    // GetCycleFrequency: the pvclock scale of an area in the ROM's private RAM (conventional
    // memory the runner's BIOS step let it take), within the scale's rounding.
    let d = detail(&r, Call::GetCycleFrequency);
    let pv = item(
        &d,
        "GetCycleFrequency() against the pvclock area the calling CPU registered: ",
    );
    let (hz, rest) = pv.split_once(" Hz from the pvclock area at 0x").unwrap();
    let gpa = u32::from_str_radix(rest.split_once(' ').unwrap().0, 16).unwrap();
    assert!((0x9_0000..0xA_0000).contains(&gpa), "{pv}");
    assert!(
        rest.contains("(MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 = 0x") && rest.contains("Hz, within ±"),
        "{pv}"
    );
    let hz: u64 = hz.parse().unwrap();
    assert!((1_000_000_000..10_000_000_000).contains(&hz), "{hz}");
    pm_timer_check(&d, None);
    // REAL over 1000 calls in a row.
    let d = detail(&r, Call::GetCycleCounter);
    assert!(
        d.contains(
            "GetCycleCounter(REAL) 1000 times in a row: 1000 calls in a row: REAL advanced by "
        ),
        "{d}"
    );
    // GetWallclockTime: the host's clock (microseconds off, KVM's wall clock being the host's;
    // measured from the middle of the PM-timer readings around the call),
    // the runner's RTC (whole seconds), advancing with the PM timer and REAL.
    let d = detail(&r, Call::GetWallclockTime);
    let host = "GetWallclockTime() against the host's clock: ";
    if !d.contains(&format!("{host}the host was too busy")) {
        let off: f64 = item(&d, host)
            .strip_suffix(" s from the host's clock")
            .unwrap_or_else(|| panic!("{d}"))
            .parse()
            .unwrap();
        // From the middle of the readings around the call, at most 250 ms apart.
        assert!(off.abs() < 0.13, "{off} s: {d}");
    }
    assert!(
        d.contains("GetWallclockTime() against the CMOS RTC: "),
        "{d}"
    );
    // IODelay is NOP, the time calls take no exit.
    let io = r.call(Call::IODelay as u8).unwrap();
    assert_eq!(io.reloc, "NOP");
    for c in [
        Call::GetCycleFrequency,
        Call::GetCycleCounter,
        Call::GetWallclockTime,
    ] {
        let e = r.call(c as u8).unwrap().exits.clone().unwrap();
        assert_eq!(e.rom.total, 0, "{c:?}: {e:?}");
    }
}

/// The native ROM promises no kvmclock: the checks note that its time is not from kvmclock,
/// and it passes (its PIT-calibrated rate against the PM timer, its RTC-based wall clock).
#[test]
fn the_native_rom_is_noted_not_failed() {
    if !kvm_usable() {
        return;
    }
    let r = run(&Native, false);
    assert!(r.passed());
    for (call, what) in [
        (
            Call::GetCycleFrequency,
            "GetCycleFrequency() against the pvclock area the calling CPU registered: the \
             calling CPU has no pvclock area registered after the call (MSR_KVM_SYSTEM_TIME_NEW \
             0x4b564d01 reads 0x0): GetCycleFrequency is not from kvmclock, not checked against \
             it",
        ),
        (
            Call::GetWallclockTime,
            "GetWallclockTime() against the host's clock: the calling CPU has no pvclock area \
             registered after the call (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads 0x0): \
             GetWallclockTime is not from kvmclock, not checked against it",
        ),
    ] {
        let c = r.call(call as u8).unwrap();
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
        assert!(c.detail.contains(what), "{what}: {}", c.detail);
    }
    pm_timer_check(&detail(&r, Call::GetCycleFrequency), None);
    assert_eq!(r.call(Call::IODelay as u8).unwrap().reloc, "CALL_REL");
}

/// A kvm ROM whose per-CPU helper never registers the CPU's areas: KVM never fills the boot
/// CPU's pvclock, Init falls back to the native behaviour, and the time calls' kvmclock checks
/// fail with the MSR that shows it; nothing else fails.
#[test]
fn a_kvm_rom_that_forgets_to_register_the_cpus_pvclock_area_gets_the_exact_verdict() {
    if !kvm_usable() {
        return;
    }
    let r = run(&common::kvm_rom::Unregistered, true);
    assert!(r.activation.ok, "{:?}", r.activation.problems);
    let missing = |call: &str| {
        format!(
            "{call} against the pvclock area the calling CPU registered: the calling CPU has no \
             pvclock area registered after the call (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads \
             0x0): a ROM built for KVM takes its time from kvmclock where CPUID offers it"
        )
    };
    let f = r.call(Call::GetCycleFrequency as u8).unwrap();
    assert_eq!(f.verdict, Verdict::Fail);
    assert_eq!(f.detail, missing("GetCycleFrequency()"));
    let w = r.call(Call::GetWallclockTime as u8).unwrap();
    assert_eq!(w.verdict, Verdict::Fail);
    assert_eq!(
        w.detail,
        "GetWallclockTime() against the host's clock: the calling CPU has no pvclock area \
         registered after the call (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads 0x0): a ROM built \
         for KVM takes its time from kvmclock where CPUID offers it"
    );
    assert_pass(
        &r,
        &[
            Call::IODelay,
            Call::GetCycleCounter,
            Call::SetAlarm,
            Call::CancelAlarm,
            Call::WallclockUpdated,
        ],
    );
}

/// A kvm ROM whose GetCycleFrequency answers the pvclock rate × 1.01: 1 % off the scale
/// KVM wrote, where the rounding allows a few Hz — and off the rate REAL advances at against
/// the host-timed PM timer, and off what GetWallclockTime's advance says REAL ÷ frequency
/// should be; nothing else fails.
#[test]
fn a_kvm_rom_that_scales_the_frequency_wrongly_gets_the_exact_verdict() {
    if !kvm_usable() {
        return;
    }
    let r = run(&common::kvm_rom::scaled_by_1_01(), true);
    let f = r.call(Call::GetCycleFrequency as u8).unwrap();
    assert_eq!(f.verdict, Verdict::Fail, "{}", f.detail);
    let pv = item(
        &f.detail,
        "GetCycleFrequency() against the pvclock area the calling CPU registered: ",
    );
    let (hz, rest) = pv.split_once(" Hz, but the pvclock area at 0x").unwrap();
    let hz: u64 = hz.parse().unwrap();
    assert!(
        rest.contains("(MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 = 0x")
            && rest.contains(", tsc_to_system_mul 0x")
            && rest.contains("): 1e9·2^32/(mul·2^shift) = ")
            && rest.contains(" Hz (+1.0000 %), more than the ±")
            && rest.ends_with(" Hz the 32.32 scale's rounding allows"),
        "{pv}"
    );
    pm_timer_check(
        &f.detail,
        Some(&format!("{hz} Hz, but GetCycleCounter(REAL) advanced at ")),
    );
    // The wall clock keeps time, but no longer agrees with REAL ÷ GetCycleFrequency — unless
    // the host stalled the vCPU inside the readings around the calls, leaving brackets too
    // wide to resolve 1 % (the check passes leniently then, never fails wrongly).
    let w = r.call(Call::GetWallclockTime as u8).unwrap();
    let adv = item(
        &w.detail,
        "GetWallclockTime() 150 ms later, against the PM timer and GetCycleCounter(REAL): ",
    );
    if w.verdict == Verdict::Pass {
        let real = adv.rsplit_once(", REAL ").unwrap().1;
        let (lo, hi) = real.strip_suffix(" ms").unwrap().split_once('–').unwrap();
        let width: f64 = hi.parse::<f64>().unwrap() - lo.parse::<f64>().unwrap();
        assert!(
            width > 1.5,
            "REAL known to {width} ms, yet 1 % passed: {adv}"
        );
        eprintln!("the host was too busy for the wall clock's advance to show 1 %: {adv}");
    } else {
        assert_eq!(w.verdict, Verdict::Fail, "{}", w.detail);
        assert!(
            adv.starts_with("advanced ")
                && adv.contains(
                    " ms between two calls, while GetCycleCounter(REAL) advanced between "
                )
                && adv.ends_with(&format!(" ms (at GetCycleFrequency {hz} Hz)")),
            "{adv}"
        );
        assert!(
            !w.detail.contains("against the host's clock"),
            "{}",
            w.detail
        );
    }
    assert_pass(
        &r,
        &[
            Call::IODelay,
            Call::GetCycleCounter,
            Call::SetAlarm,
            Call::CancelAlarm,
            Call::WallclockUpdated,
        ],
    );
}

/// The items of SetAlarm's verdict about PV EOI, one per periodic alarm acknowledged through
/// APICWrite (100 Hz at 0x31, 1 kHz at 0x41).
fn pv_eoi_items(detail: &str) -> Vec<&str> {
    detail
        .split("; ")
        .filter(|i| i.contains("EOI through APICWrite: ") && i.contains("PV"))
        .collect()
}

/// The kvm ROM on the KVM runner with its in-kernel irqchip: the LVTT alarms acknowledged
/// through APICWrite pass, and what KVM did with the ROM's paravirtual EOI is read off KVM
/// itself, never the ROM: MSR_KVM_PV_EOI_EN (read by the guest after the scenario) names a
/// word inside the private RAM the ROM's 16-bit init took, and the alarm handler read that
/// word before and after every APICWrite(0xB0, 0): where KVM armed it the call cleared it.
/// On kvm-pvm KVM never arms it — its local APIC keeps no interrupt in service (measured: the
/// word read 0 at every interrupt), so each EOI there was the APIC write, and the verdict says
/// so; the path that clears an armed word runs only on a KVM that arms it.
#[test]
fn the_kvm_roms_lvtt_alarms_pass_and_kvm_shows_its_pv_eoi_word() {
    if !kvm_usable() || !kvm::irqchip_supported() {
        eprintln!("SKIP: no KVM with an in-kernel irqchip");
        return;
    }
    let r = run(&Kvm, true);
    let c = r.call(Call::SetAlarm as u8).unwrap();
    // The LVTT alarms and the IRQ0 alarms (the runner's PIT raises IRQ0 through KVM's PIC).
    assert_eq!((c.verdict, c.checks), (Verdict::Pass, 9), "{}", c.detail);
    // A vector the busy host could not time is inconclusive as a whole (its notes dropped).
    let busy = c
        .detail
        .matches("EOI through APICWrite: the host was too busy to time interrupts")
        .count();
    let items = pv_eoi_items(&c.detail);
    assert_eq!(items.len() + busy, 2, "{}", c.detail);
    if items.is_empty() {
        eprintln!(
            "SKIP (part): the host was too busy to time either alarm: {}",
            c.detail
        );
    }
    for item in items {
        eprintln!("{item}");
        let armed = item.contains(": PV EOI: KVM armed the word at 0x")
            && item.ends_with("and APICWrite(0xB0, 0) cleared it each time");
        let never = item.contains(": PV EOI registered at 0x")
            && item.contains(
                "but never armed by KVM: its word read 0 before APICWrite(0xB0, 0) at all",
            )
            && item.ends_with("each EOI was the APIC write");
        assert!(armed || never, "{item}");
        // The word lies in conventional memory below the 639 KiB the BIOS data area says
        // (what the ROM's init took for its private RAM), in its upper half.
        let at = item.split(" at 0x").nth(1).unwrap();
        let at = u32::from_str_radix(
            at.split(|c: char| !c.is_ascii_hexdigit()).next().unwrap(),
            16,
        )
        .unwrap();
        assert!((0x8_0000..639 * 1024).contains(&at), "{at:#x}: {item}");
    }
}

/// A kvm ROM whose APICWrite unregisters the calling CPU's PV-EOI word: SetAlarm's alarms
/// acknowledged through it fail, naming the MSR KVM shows; nothing else fails.
#[test]
fn a_kvm_rom_that_unregisters_its_pv_eoi_word_gets_the_exact_verdict() {
    if !kvm_usable() || !kvm::irqchip_supported() {
        eprintln!("SKIP: no KVM with an in-kernel irqchip");
        return;
    }
    let r = run(&common::kvm_rom::pv_eoi_unregistered(), true);
    assert!(r.activation.ok, "{:?}", r.activation.problems);
    let c = r.call(Call::SetAlarm as u8).unwrap();
    assert_eq!(c.verdict, Verdict::Fail, "{}", c.detail);
    let problem = |what: &str| {
        format!(
            "SetAlarm(PERIODIC|REAL, now, {what}, EOI through APICWrite: the calling CPU has no \
             PV-EOI word registered (MSR_KVM_PV_EOI_EN 0x4b564d04 reads 0x0) though KVM offers \
             PV EOI (CPUID 0x40000001 EAX bit 6): a ROM built for KVM acknowledges through PV \
             EOI where KVM offers it (it takes its time from kvmclock: MSR_KVM_SYSTEM_TIME_NEW \
             0x"
        )
    };
    // The two alarms acknowledged through APICWrite fail exactly so (whatever else a busy
    // host may make of the timing).
    let problems: Vec<&str> = c
        .detail
        .split("; ")
        .filter(|p| p.contains("PV-EOI"))
        .collect();
    assert_eq!(problems.len(), 2, "{}", c.detail);
    assert!(
        problems[0].starts_with(&problem("freq/100) on LVTT vector 0x31")),
        "{}",
        c.detail
    );
    assert!(
        problems[1].starts_with(&problem("freq/1000) on LVTT vector 0x41")),
        "{}",
        c.detail
    );
    assert_pass(
        &r,
        &[
            Call::IODelay,
            Call::GetCycleFrequency,
            Call::GetCycleCounter,
            Call::CancelAlarm,
            Call::GetWallclockTime,
            Call::WallclockUpdated,
        ],
    );
}
