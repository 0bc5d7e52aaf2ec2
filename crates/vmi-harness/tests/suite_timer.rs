//! The suite checks the local-APIC and timer calls for real (QEMU TCG): a second, independent
//! implementation (the tests' own, `common::timer_rom`) passes every alarm, rate, frequency,
//! wallclock and APIC scenario as the native ROM does (`suite_native`), and deliberately
//! broken variants of the native ROM — an alarm that fires early, the wrong vector, a periodic
//! alarm that drifts, an APICWrite that lands on the wrong register — each get the exact
//! verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::timer_rom::{TestTimer, host_tsc_hz};
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict};
use vmi_rom::backend::EmitFn;
use vmi_rom::generate::{BuildOptions, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::{Backend, Override};

/// The APIC and timer calls.
const TIME_CALLS: [u32; 8] = [63, 64, 66, 67, 68, 69, 70, 71];

/// One suite at a time: the timing checks measure the host's interrupt delivery, and suites
/// of the same binary running side by side would only load it further.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(backend: &impl Backend) -> SuiteReport {
    let g = generate_unaudited(backend, &BuildOptions::default()).unwrap();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::suite(
        &g.image,
        &SuiteOptions {
            only: Some(TIME_CALLS.to_vec()),
            ..SuiteOptions::default()
        },
    )
}

/// The native ROM with `call`'s routine from `emit` (code that alters the arguments, then the
/// native routine).
fn broken(call: Call, emit: EmitFn) -> SuiteReport {
    run(&Override {
        base: Native,
        call,
        emit,
    })
}

/// The verdict of `call`, which must be a failure.
fn failed(r: &SuiteReport, call: Call) -> String {
    let c = r.call(call as u8).unwrap();
    assert_eq!(c.verdict, Verdict::Fail, "{}: {}", c.name, c.detail);
    c.detail.clone()
}

/// Every time call but `except` passes.
fn others_pass(r: &SuiteReport, except: &[Call]) {
    for n in TIME_CALLS {
        let c = r.call(n as u8).unwrap();
        if except.iter().any(|e| *e as u32 == n) {
            continue;
        }
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

#[test]
fn a_second_implementation_passes_every_time_scenario() {
    let r = run(&TestTimer::paged(host_tsc_hz()));
    others_pass(&r, &[]);
    let detail = |c: Call| r.call(c as u8).unwrap().detail.clone();
    // Each rate was judged, or the host was too busy to time it.
    for what in [
        "freq/100) on IRQ0: ",
        "freq/1000) on IRQ0: ",
        "freq/100) on LVTT vector 0x31, EOI through APICWrite: ",
        "freq/1000) on LVTT vector 0x41, EOI through APICWrite: ",
        "freq/1000) on LVTT vector 0x41, native EOI: ",
        "masked (APICWrite), then unmasked: ",
    ] {
        let d = detail(Call::SetAlarm);
        let judged = [
            format!("{what}rate: every "),
            format!("{what}after unmasking: every "),
        ];
        let busy = format!("{what}the host was too busy to time");
        assert!(
            judged.iter().any(|j| d.contains(j.as_str())) || d.contains(&busy),
            "{what}: {d}"
        );
    }
    for what in [
        "on the second CPU's LVTT 0x41, CancelAlarm on the first: the second CPU took",
        "on IRQ0: fired",
        "on LVTT vector 0x31: fired",
    ] {
        assert!(
            detail(Call::SetAlarm).contains(what),
            "{what}: {}",
            detail(Call::SetAlarm)
        );
    }
    assert_eq!(r.call(Call::SetAlarm as u8).unwrap().checks, 10);
    assert_eq!(r.call(Call::CancelAlarm as u8).unwrap().checks, 6);
    assert!(detail(Call::GetCycleFrequency).contains("REAL measured at"));
    assert!(detail(Call::GetWallclockTime).contains("s from the RTC"));
    assert!(detail(Call::GetWallclockTime).contains(", the PM timer "));
    assert_eq!(r.call(Call::APICWrite as u8).unwrap().checks, 4);
    assert_eq!(r.call(Call::APICRead as u8).unwrap().checks, 3);
}

/// SetAlarm's prefix: a one-shot's expiry (EDX:ECX) moved to a sixteenth of the way there.
fn one_shots_early(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut keep = a.create_label();
    let mut done = a.create_label();
    a.test(eax, 0x100)?;
    a.jnz(keep)?;
    a.push(eax)?;
    a.push(ebx)?;
    a.push(ecx)?;
    a.push(edx)?;
    // EBX = the low half of expiry − now; only when the high half is 0.
    a.rdtsc()?;
    a.mov(ebx, dword_ptr(esp))?;
    a.sub(ebx, eax)?;
    a.mov(ecx, dword_ptr(esp + 4))?;
    a.sbb(ecx, edx)?;
    a.jnz(done)?;
    a.shr(ebx, 4)?;
    a.add(eax, ebx)?;
    a.adc(edx, 0)?;
    a.mov(dword_ptr(esp), eax)?;
    a.mov(dword_ptr(esp + 4), edx)?;
    a.set_label(&mut done)?;
    a.pop(edx)?;
    a.pop(ecx)?;
    a.pop(ebx)?;
    a.pop(eax)?;
    a.set_label(&mut keep)?;
    a.nop()
}

/// APICWrite's prefix: 0x10 added to the value written to LVTT (0x320).
fn lvtt_vector_plus_0x10(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut other = a.create_label();
    a.cmp(eax, 0x320)?;
    a.jne(other)?;
    a.add(edx, 0x10)?;
    a.set_label(&mut other)?;
    a.nop()
}

/// SetAlarm's prefix: the period (the stack word at [esp + 4], low half) × 1.3125.
fn period_times_1_3125(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.push(eax)?;
    a.push(edx)?;
    // [esp + 12] = period low (after the two pushes and the return address)
    a.mov(eax, dword_ptr(esp + 12))?;
    a.mov(edx, eax)?;
    a.shr(edx, 2)?;
    a.add(eax, edx)?;
    a.shr(edx, 2)?;
    a.add(eax, edx)?;
    a.mov(dword_ptr(esp + 12), eax)?;
    a.pop(edx)?;
    a.pop(eax)
}

/// SetAlarm with a one-shot's expiry moved to a sixteenth of the way there: the one-shots
/// (50 ms ahead) fire ~47 ms before their expiry, by the TSC at the handler's entry.
#[test]
fn an_alarm_that_fires_early() {
    let r = broken(Call::SetAlarm, |e| {
        one_shots_early(&mut e.a)?;
        Native.emit(Call::SetAlarm, e)
    });
    let d = failed(&r, Call::SetAlarm);
    for wiring in ["IRQ0", "LVTT vector 0x31"] {
        let what = format!("SetAlarm(ONESHOT|REAL, now + freq/20, 0) on {wiring}: fired ");
        let at = d.find(&what).unwrap_or_else(|| panic!("{what}: {d}"));
        assert!(
            d[at + what.len()..]
                .split_once(" ms before its expiry: the TSC at the handler's entry 0x")
                .is_some_and(|(ms, _)| (5.0..=50.0).contains(&ms.parse::<f64>().unwrap())),
            "{d}"
        );
    }
    // The periodic alarms keep their rate; nothing else is wrong.
    assert!(!d.contains("rate:"), "{d}");
    others_pass(&r, &[Call::SetAlarm]);
}

/// An APICWrite that adds 0x10 to the vector it writes to LVTT: the alarm arrives at the
/// wrong vector, and the LVTT read back differs.
#[test]
fn an_lvtt_alarm_at_the_wrong_vector() {
    let r = broken(Call::APICWrite, |e| {
        lvtt_vector_plus_0x10(&mut e.a)?;
        Native.emit(Call::APICWrite, e)
    });
    let d = failed(&r, Call::SetAlarm);
    for (wrong, right) in [("0x41", "0x31"), ("0x51", "0x41")] {
        let what = format!(
            "interrupt(s) arrived at vector {wrong} (the last one), expected them at vector \
             {right} (the vector written to LVTT), where 0 arrived"
        );
        assert!(d.contains(&what), "{what}: {d}");
    }
    let d = failed(&r, Call::APICWrite);
    assert!(
        d.contains(
            "APICWrite(0x320 LVTT, 0x10041) read back with APICRead: APICRead(0x320) & 0x100ff: \
             expected 0x00010041 (vector and mask as written), got 0x00010051"
        ),
        "{d}"
    );
    others_pass(&r, &[Call::SetAlarm, Call::APICWrite, Call::CancelAlarm]);
}

/// SetAlarm with the period scaled by 1.3125: every periodic alarm runs slow against the
/// reference timer.
#[test]
fn a_periodic_alarm_that_drifts() {
    // A host too busy to time interrupts leaves rates inconclusive (after the suite's own
    // retries): at most three suites until one rate was timed.
    let mut caught = 0;
    for _ in 0..3 {
        let r = broken(Call::SetAlarm, |e| {
            period_times_1_3125(&mut e.a)?;
            Native.emit(Call::SetAlarm, e)
        });
        let c = r.call(Call::SetAlarm as u8).unwrap();
        if c.verdict != Verdict::Fail {
            // Only when every rate was inconclusive.
            assert!(c.detail.contains("; inconclusive: "), "{}", c.detail);
            assert!(!c.detail.contains("rate: every"), "{}", c.detail);
            continue;
        }
        let d = c.detail.clone();
        for (what, rate) in [
            ("freq/100) on IRQ0: rate: interrupts every ", 100.0),
            ("freq/1000) on IRQ0: rate: interrupts every ", 1000.0),
            (
                "freq/100) on LVTT vector 0x31, EOI through APICWrite: rate: interrupts every ",
                100.0,
            ),
            (
                "freq/1000) on LVTT vector 0x41, EOI through APICWrite: rate: interrupts every ",
                1000.0,
            ),
            (
                "freq/1000) on LVTT vector 0x41, native EOI: rate: interrupts every ",
                1000.0,
            ),
            ("then unmasked: after unmasking: interrupts every ", 1000.0),
        ] {
            let Some(at) = d.find(what) else { continue };
            let item = d[at..].split("; ").next().unwrap();
            let hz: f64 = item
                .strip_suffix(" Hz")
                .and_then(|s| s.rsplit_once(": "))
                .map(|(_, hz)| hz.parse().unwrap())
                .unwrap_or_else(|| panic!("{what}: {item}"));
            // 1/1.3125 of the rate.
            let ratio = hz / rate;
            assert!((0.70..0.82).contains(&ratio), "{what}: {hz} Hz: {d}");
            caught += 1;
        }
        assert!(!d.contains("before its expiry"), "{d}");
        others_pass(&r, &[Call::SetAlarm]);
        if caught > 0 {
            break;
        }
    }
    assert!(caught > 0, "no rate could be timed in three suites");
}

/// An APICWrite 0x10 past the register it is given: the TPR write lands on the APR, the EOI
/// on the (read-only) remote-read register.
#[test]
fn an_apic_write_that_lands_on_the_wrong_register() {
    let r = broken(Call::APICWrite, |e| {
        e.a.add(eax, 0x10)?;
        Native.emit(Call::APICWrite, e)
    });
    let d = failed(&r, Call::APICWrite);
    for what in [
        "APICWrite(0x80 TPR, 0x20): TPR (read directly): expected 0x00000020 (the value \
         written), got 0x00000000",
        "APICWrite(0xb0 EOI, 0) after an interrupt at 0x41: the in-service bit of vector 0x41 \
         (ISR 0x120, bit 1) is still set after the call: the EOI did not reach the local APIC",
    ] {
        assert!(d.contains(what), "{what}: {d}");
    }
}
