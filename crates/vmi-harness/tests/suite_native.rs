//! The conformance suite against ROMs that are right: the generated native ROM passes every
//! call it implements under QEMU/SeaBIOS (TCG) and its no-paging subset on the KVM runner;
//! JUMP_REL SYSEXIT and a ROM that implements every call (APIC, timer, port I/O, the
//! notification calls as real routines) pass too; a JUMP_REL IRET fails the bad-frame
//! scenarios, since it cannot report a fault at its call site.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::timer_rom::{TestTimer, host_tsc_hz};
use iced_x86::code_asm::*;
use std::time::Duration;
use vmi_abi::Call;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict};
use vmi_harness::{Engine, kvm};
use vmi_rom::emit::Emit;
use vmi_rom::generate::{BuildOptions, Generated, generate, generate_unaudited};
use vmi_rom::kvm::Kvm;
use vmi_rom::native::Native;
use vmi_rom::{Answer, Backend, GenError, Override};

fn assert_passes(r: &SuiteReport) {
    assert!(r.activation.ok, "{:?}", r.activation.problems);
    assert!(
        r.passed(),
        "{:#?}",
        r.with(Verdict::Fail).collect::<Vec<_>>()
    );
}

/// Every call's verdict follows from the backend's answer: NONE → not implemented, NOP →
/// pass without code, CALL_REL → pass (or skipped with the reason given by `skipped`). Where
/// nothing ran the ROM's 16-bit init (the KVM runner without its BIOS step) the ROM has no
/// private RAM: the calls that need it answer NONE.
fn assert_follows_answers(g: &Generated, r: &SuiteReport, skipped: &[(u8, &str)]) {
    assert_eq!(r.calls.len(), 74);
    let m = vmi_rom::manifest::Manifest::read(&g.image)
        .unwrap()
        .unwrap();
    let entries = m.entries(&g.image);
    let ram_less = !r.bios_init;
    for (e, c) in g.calls.iter().zip(&r.calls) {
        assert_eq!(e.number, c.call);
        let answer = if ram_less && entries[usize::from(e.number)].needs_ram {
            Answer::None
        } else {
            e.answer
        };
        assert_eq!(c.reloc, answer.reloc().name(), "{}", c.name);
        match answer {
            Answer::None => {
                assert_eq!(c.verdict, Verdict::NotImplemented, "{}", c.name);
                assert_eq!(c.detail, "NONE: Linux keeps the native operation");
            }
            Answer::Nop => {
                assert_eq!(c.verdict, Verdict::Pass, "{}", c.name);
                assert_eq!(c.detail, "NOP: nothing to execute");
            }
            Answer::Call | Answer::Jump => match skipped.iter().find(|(n, _)| *n == c.call) {
                Some((_, why)) => {
                    assert_eq!(c.verdict, Verdict::Skipped, "{}: {}", c.name, c.detail);
                    assert!(c.detail.contains(why), "{}: {}", c.name, c.detail);
                }
                None => {
                    assert_eq!(c.verdict, Verdict::Pass, "{}: {}", c.name, c.detail);
                    assert!(c.checks >= 1, "{}", c.name);
                }
            },
        }
    }
}

#[test]
fn native_rom_passes_under_qemu_tcg_in_well_under_a_minute() {
    let g = generate(&Native, &BuildOptions::default()).unwrap();
    let r = common::suite(&g.image, &SuiteOptions::default());
    assert_passes(&r);
    assert_eq!(r.engine, "qemu-tcg");
    assert!(r.activation.paging);
    // TCG does not implement performance counters: a native rdpmc raises #UD.
    assert_follows_answers(&g, &r, &[(26, "a native rdpmc raises #UD")]);
    assert!(r.wall < Duration::from_secs(60), "{:?}", r.wall);
    // Activation, one vector run, Shutdown, Reboot (Shutdown may be re-run once if a busy
    // host kept the guest silent before it even reached the call).
    assert_eq!(r.run_log[0].purpose, "activation");
    let vector_runs = r
        .run_log
        .iter()
        .filter(|l| l.purpose.starts_with("vectors"))
        .count();
    assert_eq!(vector_runs, 1, "{:#?}", r.run_log);
    // Activation, the vector run, Shutdown, Reboot (maybe once more), the stress run — and
    // up to two runs of the timing a busy host left inconclusive.
    let timing_again = r
        .run_log
        .iter()
        .filter(|l| l.purpose.starts_with("timing again"))
        .count();
    assert!(timing_again <= 2, "{:#?}", r.run_log);
    assert!(
        (5..=6).contains(&(r.runs - timing_again)),
        "{:#?}",
        r.run_log
    );
    assert_eq!(r.run_log.last().unwrap().purpose, "stress");
    let detail = |n: u8| r.call(n).unwrap().detail.clone();
    // TCG keeps stale TLB entries like hardware does (either way the note says which).
    assert!(
        detail(46).contains("stale mapping demonstrated before the call")
            || detail(46).contains("refilled the TLB by itself"),
        "{}",
        detail(46)
    );
    assert!(detail(37).contains("no record, exception or reset for 0.5s after the call"));
    assert!(detail(36).contains("QEMU exited on the reset (-no-reboot)"));
    assert!(detail(33).contains("IRET to a ring-3 stub with IF=1"));
    assert_eq!(r.call(35).unwrap().checks, 1);
    // The report serializes the way the CLI prints it.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["engine"], "qemu-tcg");
    assert_eq!(json["calls"][17]["name"], "SetCR3");
    assert_eq!(json["calls"][17]["reloc"], "CALL_REL");
    assert_eq!(json["calls"][17]["verdict"], "pass");
    assert_eq!(json["calls"][42]["verdict"], "not-implemented");
    assert_eq!(json["calls"][26]["verdict"], "skipped");
    assert!(json["wall"].as_f64().unwrap() > 0.0);
    assert_eq!(json["stress"]["verdict"], "pass");
    assert!(json["stress"]["invocations"].as_u64().unwrap() > 20_000);
    // QEMU counts no VM exits: null, per call and per run.
    assert_eq!(json["bios_init"], true);
    assert!(
        json["calls"][65]["exits"].is_null(),
        "{}",
        json["calls"][65]
    );
    assert!(r.calls.iter().all(|c| c.exits.is_none()));
    assert!(json["run_log"][0]["exits"].is_null());
    assert!(r.run_log.iter().all(|l| l.exits.is_none()));
}

#[test]
fn native_rom_passes_under_another_page_offset_and_without_paging() {
    let g = generate(&Native, &BuildOptions::default()).unwrap();
    let r = common::suite(
        &g.image,
        &SuiteOptions {
            page_offset: 0x8000_0000,
            ..SuiteOptions::default()
        },
    );
    assert_passes(&r);
    assert_eq!(
        r.activation.linear,
        Some(0x8000_0000 + r.activation.base.unwrap())
    );
    let flat = common::suite(
        &g.image,
        &SuiteOptions {
            paging: Some(false),
            ..SuiteOptions::default()
        },
    );
    assert_passes(&flat);
    assert_follows_answers(
        &g,
        &flat,
        &[
            (26, "a native rdpmc raises #UD"),
            (46, "needs paging; the suite ran without it"),
            (47, "needs paging; the suite ran without it"),
        ],
    );
}

/// The calls the kvm engine skips with the native ROM, and why (`irqchip`: the runner gave
/// the guest KVM's in-kernel irqchip, so Halt is woken by the local APIC's timer).
fn kvm_skips(r: &SuiteReport, irqchip: bool) -> Vec<(u8, &'static str)> {
    let mut skipped = vec![(26u8, "a native rdpmc raises")];
    if !irqchip {
        skipped.push((35, "no interrupt controller or timer on the kvm engine"));
    }
    if let Err(why) = kvm::paging_supported() {
        eprintln!("this KVM cannot page: {why}");
        assert!(!r.activation.paging);
        skipped.push((46, "needs paging; this KVM cannot page"));
        skipped.push((47, "needs paging; this KVM cannot page"));
    }
    // kvm-pvm emulates every instruction and cannot emulate a protected-mode iret, nor the
    // reset the native Reboot ends in: those are skipped with KVM's reason, never failed.
    for n in [33u8, 36] {
        if r.call(n).unwrap().verdict == Verdict::Skipped {
            skipped.push((n, "the engine cannot run it"));
        }
    }
    skipped
}

/// The native ROM and its suite report on the kvm engine with `opts` (its engine set to kvm); None,
/// after a `SKIP:` line, where KVM is unavailable.
fn native_on_kvm(opts: SuiteOptions) -> Option<(Generated, SuiteReport)> {
    if let Err(why) = kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return None;
    }
    let g = generate(&Native, &BuildOptions::default()).unwrap();
    let r = common::suite(
        &g.image,
        &SuiteOptions {
            engine: Engine::Kvm,
            ..opts
        },
    );
    Some((g, r))
}

/// With the runner's BIOS step (the default) the native ROM has its private RAM: the time
/// calls answer CALL_REL and pass (Init measured the TSC against the runner's PIT). Where
/// the host's KVM has the in-kernel irqchip the runner gives the guest a local APIC: the APIC
/// calls, Halt (woken by the APIC timer) and the alarm scenarios — LVTT with PIT channel 0
/// as their reference, and IRQ0, which the runner's PIT raises through KVM's PIC — run and
/// pass. Without it, see
/// [`native_rom_on_the_kvm_engine_without_the_irqchip_skips_the_apic_and_alarms`].
#[test]
fn native_rom_passes_its_no_paging_subset_on_the_kvm_engine() {
    let Some((g, r)) = native_on_kvm(SuiteOptions {
        ..SuiteOptions::default()
    }) else {
        return;
    };
    assert_passes(&r);
    assert_eq!(r.engine, "kvm");
    assert!(r.bios_init);
    let irqchip = kvm::irqchip_supported();
    let mut skipped = kvm_skips(&r, irqchip);
    if irqchip {
        assert_lapic_calls_ran(&r);
    } else {
        eprintln!("SKIP (part): this KVM has no in-kernel irqchip");
        skipped.push((63, "no local APIC answers at 0xfee00000 on the kvm engine"));
        skipped.push((64, "no local APIC answers at 0xfee00000 on the kvm engine"));
    }
    assert_follows_answers(&g, &r, &skipped);
    for n in [66u8, 67, 68, 69, 70, 71] {
        assert_eq!(r.call(n).unwrap().reloc, "CALL_REL", "{n}");
    }
    assert!(
        r.activation
            .notes
            .iter()
            .any(|n| n.starts_with("the KVM runner ran the ROM's 16-bit init at C800:0003")),
        "{:?}",
        r.activation.notes
    );
    assert!(r.wall < Duration::from_secs(60), "{:?}", r.wall);
}

/// Without the BIOS step nothing runs the ROM's 16-bit init: no private RAM, the calls that
/// need it answer NONE, everything else passes as before.
#[test]
fn native_rom_passes_its_no_paging_subset_on_the_kvm_engine_without_a_bios() {
    let Some((g, r)) = native_on_kvm(SuiteOptions {
        run_init16: false,
        ..SuiteOptions::default()
    }) else {
        return;
    };
    assert_passes(&r);
    assert!(!r.bios_init);
    assert_follows_answers(&g, &r, &kvm_skips(&r, kvm::irqchip_supported()));
    for n in [63u8, 64, 66, 67] {
        assert_eq!(r.call(n).unwrap().reloc, "NONE", "{n}");
    }
    assert!(
        r.activation
            .notes
            .iter()
            .any(|n| n.contains("did not run the ROM's 16-bit init (asked not to)")),
        "{:?}",
        r.activation.notes
    );
    assert!(r.wall < Duration::from_secs(60), "{:?}", r.wall);
}

/// With the runner's local APIC: APICRead and APICWrite ran their vectors (the EOI one
/// passes, or where the engine's APIC keeps nothing in service — kvm-pvm — is inconclusive
/// saying so), Halt was woken by the APIC timer, SetAlarm ran its five LVTT scenarios (rates
/// judged) and noted the IRQ0 ones as not measured naming the missing IRQ0 source, and
/// CancelAlarm ran its five scenarios.
fn assert_lapic_calls_ran(r: &SuiteReport) {
    let c = |n: u8| r.call(n).unwrap();
    assert!(
        r.activation
            .notes
            .iter()
            .any(|n| n.starts_with("the KVM runner gave the guest KVM's in-kernel irqchip")),
        "{:?}",
        r.activation.notes
    );
    assert_eq!(
        (c(64).verdict, c(64).checks),
        (Verdict::Pass, 3),
        "{}",
        c(64).detail
    );
    assert_eq!(
        (c(63).verdict, c(63).checks),
        (Verdict::Pass, 4),
        "{}",
        c(63).detail
    );
    assert!(
        c(63)
            .detail
            .contains("APICWrite(0x320 LVTT, 0x10041) read back with APICRead"),
        "{}",
        c(63).detail
    );
    let eoi = "APICWrite(0xb0 EOI, 0) after an interrupt at 0x41";
    assert!(
        c(63).detail.contains(&format!("{eoi}, ")) // passed, listed
            || c(63).detail.contains(&format!(
                "inconclusive: {eoi}: the engine's local APIC delivered the self-IPI at 0x41 \
                 but did not keep it in service"
            )),
        "{}",
        c(63).detail
    );
    assert_eq!(c(35).verdict, Verdict::Pass, "{}", c(35).detail);
    assert!(
        c(35)
            .detail
            .contains("Halt() with IF=0 and the local APIC timer one-shot at 0x41"),
        "{}",
        c(35).detail
    );
    let alarm = &c(68).detail;
    // The runner's PIT raises IRQ0 through KVM's PIC: the IRQ0 alarms run (100 Hz, 1 kHz,
    // the one-shot) beside the LVTT alarms, which have PIT channel 0 as their reference.
    assert_eq!((c(68).verdict, c(68).checks), (Verdict::Pass, 9), "{alarm}");
    // A rate is judged, or — on a host too busy to deliver on time — inconclusive, saying so.
    for what in [
        "SetAlarm(PERIODIC|REAL, now, freq/100) on IRQ0: ",
        "SetAlarm(PERIODIC|REAL, now, freq/1000) on IRQ0: ",
        "SetAlarm(PERIODIC|REAL, now, freq/100) on LVTT vector 0x31, EOI through APICWrite: ",
        "SetAlarm(PERIODIC|REAL, now, freq/1000) on LVTT vector 0x41, native EOI: ",
    ] {
        // (One "inconclusive: " heads the list of every inconclusive vector.)
        let busy = format!("{what}the host was too busy to time interrupts");
        assert!(
            alarm.contains(&format!("{what}rate: every")) || alarm.contains(&busy),
            "{what} not in {alarm}"
        );
    }
    for what in [
        "SetAlarm(ONESHOT|REAL, now + freq/20, 0) on LVTT vector 0x31: fired",
        "SetAlarm(ONESHOT|REAL, now + freq/20, 0) on IRQ0: fired",
        "the IRQ0 alarms ran without a reference timer (the RTC's periodic interrupt, which \
         would be it, is not raised on the kvm engine",
        "the second-CPU alarm not run: the kvm engine has one vCPU",
    ] {
        assert!(alarm.contains(what), "{what} not in {alarm}");
    }
    // The LVTT alarms' reference: PIT channel 0 at the alarm's rate, where it kept time.
    let busy = "SetAlarm(PERIODIC|REAL, now, freq/100) on LVTT vector 0x31, EOI through \
                APICWrite: the host was too busy to time interrupts";
    assert!(
        alarm.contains("(PIT channel 0 at 100 Hz: ") || alarm.contains(busy),
        "{alarm}"
    );
    assert!(!alarm.contains("nothing raises IRQ0"), "{alarm}");
    assert_eq!(
        (c(69).verdict, c(69).checks),
        (Verdict::Pass, 6),
        "{}",
        c(69).detail
    );
    assert!(
        c(69)
            .detail
            .contains("CancelAlarm(PERIODIC|REAL|LVTT) of a running 1000 Hz alarm"),
        "{}",
        c(69).detail
    );
}

/// Without the in-kernel irqchip (a KVM without it; here asked for with
/// `SuiteOptions::irqchip` off) the guest has no local APIC and nothing raises an interrupt:
/// the APIC calls and Halt are skipped, and SetAlarm and CancelAlarm get their sanity
/// vectors only, noted "not measured" with why.
#[test]
fn native_rom_on_the_kvm_engine_without_the_irqchip_skips_the_apic_and_alarms() {
    let Some((g, r)) = native_on_kvm(SuiteOptions {
        irqchip: false,
        ..SuiteOptions::default()
    }) else {
        return;
    };
    assert_passes(&r);
    let mut skipped = kvm_skips(&r, false);
    skipped.push((63, "no local APIC answers at 0xfee00000 on the kvm engine"));
    skipped.push((64, "no local APIC answers at 0xfee00000 on the kvm engine"));
    assert_follows_answers(&g, &r, &skipped);
    assert!(
        r.activation.notes.iter().any(|n| n.starts_with(
            "the KVM runner gave the guest no interrupt controller (no in-kernel irqchip)"
        )),
        "{:?}",
        r.activation.notes
    );
    for n in [68u8, 69] {
        let c = r.call(n).unwrap();
        assert_eq!((c.verdict, c.checks), (Verdict::Pass, 1), "{}", c.detail);
        assert!(
            c.detail.contains(
                "not measured: no interrupt controller on the kvm engine: nothing raises an \
                 alarm's interrupt"
            ),
            "{}",
            c.detail
        );
    }
}

/// Native, with IRET and SYSEXIT reached by `jmp` (JUMP_REL).
fn jump_returns() -> Override<Override<Native>> {
    Override {
        base: Override {
            base: Native,
            call: Call::IRET,
            emit: |e| {
                e.a.iretd()?;
                Ok(Answer::Jump)
            },
        },
        call: Call::SYSEXIT,
        emit: |e| {
            e.a.sti()?;
            e.a.sysexit()?;
            Ok(Answer::Jump)
        },
    }
}

/// JUMP_REL SYSEXIT passes. A JUMP_REL IRET returns valid frames right, but it cannot
/// report a fault of the return at its call site — it has no return address to find the
/// site by — so every bad-frame scenario fails it, saying so (vmi-abi.md §4.3).
#[test]
fn jump_rel_sysexit_passes_and_jump_rel_iret_cannot_report_faults_at_the_site() {
    let g = generate_unaudited(&jump_returns(), &BuildOptions::default()).unwrap();
    let r = common::suite(
        &g.image,
        &SuiteOptions {
            only: Some(vec![33, 34]),
            ..SuiteOptions::default()
        },
    );
    let sysexit = r.call(34).unwrap();
    assert_eq!(
        (sysexit.reloc.as_str(), sysexit.verdict),
        ("JUMP_REL", Verdict::Pass),
        "{}",
        sysexit.detail
    );
    let iret = r.call(33).unwrap();
    assert_eq!(
        (iret.reloc.as_str(), iret.verdict),
        ("JUMP_REL", Verdict::Fail),
        "{}",
        iret.detail
    );
    let problems: Vec<&str> = iret.detail.split("; ").collect();
    // The three valid-frame scenarios and the two valid bad-frame-suite frames pass.
    for valid in [
        "IRET to ring 0 with IF=1",
        "IRET to a ring-3 stub",
        "(valid-ldt)",
    ] {
        assert!(
            !problems.iter().any(|p| p.contains(valid)),
            "{valid}: {}",
            iret.detail
        );
    }
    assert!(
        problems.iter().any(
            |p| p.contains("(cs-ldt-without-ldt): #GP(0x000c) reported at EIP")
                && p.contains("a JUMP_REL IRET has no return address to find its site by")
        ),
        "{}",
        iret.detail
    );
    // Everything else was not selected; activation and one vector run only.
    assert_eq!(r.call(17).unwrap().verdict, Verdict::Skipped);
    assert_eq!(r.call(17).unwrap().detail, "not selected");
    assert_eq!(r.runs, 2);
}

/// Native plus real routines for everything the native ROM answers NONE or NOP for: the local
/// APIC and the timer of the tests' own implementation ([`TestTimer`], for a guest without
/// paging: the APIC at its physical address), port I/O, and `ret` for the notifications.
struct Everything(TestTimer);

impl Backend for Everything {
    fn name(&self) -> String {
        "everything".into()
    }
    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        use Call::*;
        let a = &mut e.a;
        match call {
            APICWrite | APICRead | GetCycleFrequency | GetCycleCounter | SetAlarm | CancelAlarm
            | GetWallclockTime | WallclockUpdated => return self.0.emit(call, e),
            INB => {
                a.in_(al, dx)?;
                a.movzx(eax, al)?;
            }
            INW => {
                a.in_(ax, dx)?;
                a.movzx(eax, ax)?;
            }
            INL => a.in_(eax, dx)?,
            OUTB => a.out(dx, al)?,
            OUTW => a.out(dx, ax)?,
            OUTL => a.out(dx, eax)?,
            UpdateKernelStack | UpdatePxE | UpdatePxELong | AllocatePage | ReleasePage
            | SetLinearMapping | SetInitialAPState | SetLazyMode => {}
            _ => return Native.emit(call, e),
        }
        e.a.ret()?;
        Ok(Answer::Call)
    }
    fn note(&self, call: Call) -> &'static str {
        Native.note(call)
    }
}

#[test]
fn a_rom_implementing_every_call_passes() {
    let g = generate_unaudited(
        &Everything(TestTimer::flat(host_tsc_hz())),
        &BuildOptions::default(),
    )
    .unwrap();
    let r = common::suite(
        &g.image,
        &SuiteOptions {
            paging: Some(false),
            ..SuiteOptions::default()
        },
    );
    assert_passes(&r);
    let unconfirmed = "not exercised";
    assert_follows_answers(
        &g,
        &r,
        &[
            (26, "a native rdpmc raises #UD"),
            (46, "needs paging; the suite ran without it"),
            (47, "needs paging; the suite ran without it"),
            (52, unconfirmed),
            (53, unconfirmed),
            (54, unconfirmed),
            (58, unconfirmed),
            (59, unconfirmed),
            (60, unconfirmed),
        ],
    );
    assert!(
        r.call(66)
            .unwrap()
            .detail
            .contains("GetCycleFrequency() against GetCycleCounter(REAL) over 200 ms")
    );
    // The vectors, and (APICWrite, APICRead, GetCycleCounter) the IRQ0 handler's calls under
    // the interrupt storm.
    assert_eq!(r.call(63).unwrap().checks, 5);
    assert_eq!(r.call(64).unwrap().checks, 4);
    assert_eq!(r.call(67).unwrap().checks, 6);
    assert_eq!(r.call(68).unwrap().checks, 10);
    let s = r.stress.as_ref().unwrap();
    assert_eq!(
        s.handler,
        [
            "RDTSC",
            "GetCR3",
            "DisableInterrupts",
            "GetCycleCounter",
            "APICRead",
            "APICWrite"
        ]
    );
}

/// The kvm ROM under QEMU TCG (no KVM, no kvmclock): its native fallback passes every call it
/// implements, as the native ROM does. It promises kvmclock (as `vmirom test` says for its
/// manifest), so the time calls' verdicts say why the kvmclock checks did not run — and
/// nothing fails for their absence.
#[test]
fn kvm_rom_passes_under_qemu_tcg_through_its_fallback() {
    let g = generate(&Kvm, &BuildOptions::default()).unwrap();
    let r = common::suite(
        &g.image,
        &SuiteOptions {
            expect_kvmclock: true,
            ..SuiteOptions::default()
        },
    );
    assert_passes(&r);
    assert_follows_answers(&g, &r, &[(26, "a native rdpmc raises #UD")]);
    // No KVM: IODelay stays the native out 0x80 (CALL_REL), not NOP.
    assert_eq!(r.call(Call::IODelay as u8).unwrap().reloc, "CALL_REL");
    for c in [Call::GetCycleFrequency, Call::GetWallclockTime] {
        let d = &r.call(c as u8).unwrap().detail;
        assert!(
            d.contains("; kvmclock not checked: CPUID 0x40000000 does not say KVM (signature \""),
            "{c:?}: {d}"
        );
        assert!(!d.contains("pvclock"), "{c:?}: {d}");
    }
}
