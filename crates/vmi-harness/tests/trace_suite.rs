//! The trace ROM under the whole conformance suite: the wrapper changes no semantics and no
//! register discipline (every call the native ROM passes, the traced one passes too), and
//! after each guest run the trace area's counters equal, call by call, the invocations the
//! guest itself counted in that run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use vmi_abi::calls::NUM_CALLS;
use vmi_harness::guest;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict};
use vmi_harness::{Engine, kvm};
use vmi_rom::generate::{BuildOptions, generate};
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};

fn traced(ring: u32) -> vmi_rom::generate::Generated {
    generate(
        &Trace {
            inner: Native,
            ring,
            sites: area::DEFAULT_SITES,
        },
        &BuildOptions::default(),
    )
    .unwrap()
}

fn keep(engine: Engine) -> SuiteOptions {
    SuiteOptions {
        engine,
        keep_ram: true,
        ..SuiteOptions::default()
    }
}

/// Every call has the verdict the native ROM gets on the same engine.
fn same_verdicts(traced: &SuiteReport, native: &SuiteReport) {
    assert!(traced.activation.ok, "{:?}", traced.activation.problems);
    assert!(traced.passed());
    for (t, n) in traced.calls.iter().zip(&native.calls) {
        assert_eq!(
            (t.call, t.verdict),
            (n.call, n.verdict),
            "{}: traced {:?} ({}) vs native {:?} ({})",
            t.name,
            t.verdict,
            t.detail,
            n.verdict,
            n.detail
        );
    }
}

#[test]
fn the_trace_rom_passes_the_suite_and_counts_exactly_what_the_suite_called() {
    for ring in [0, 64] {
        let t = traced(ring);
        let r = common::suite(&t.image, &keep(Engine::default()));
        let native = common::suite(
            &generate(&Native, &BuildOptions::default()).unwrap().image,
            &SuiteOptions::default(),
        );
        same_verdicts(&r, &native);
        let mut from_areas = vec![0u64; NUM_CALLS];
        let mut sited = vec![0u64; NUM_CALLS];
        for run in &r.run_log {
            let low = run.low_ram.as_ref().expect("RAM kept");
            let invoked = run.invoked.as_ref().expect("guest counters read");
            let a = area::find(low).unwrap_or_else(|e| panic!("{}: {e}", run.purpose));
            assert_eq!(a.build_id, t.build_id);
            for n in 0..NUM_CALLS {
                assert_eq!(
                    a.counters[n].count,
                    u64::from(invoked[n]),
                    "ring {ring}, run {:?}, call {n}: trace area vs guest",
                    run.purpose
                );
                from_areas[n] += a.counters[n].count;
            }
            // Every call came with a return address in the guest's code (IRET and SYSEXIT,
            // reached by `call`, too): all attributed to sites, none unattributed.
            assert!(a.overflow.iter().all(|c| c.count == 0), "{}", run.purpose);
            for s in &a.sites {
                sited[s.call as usize] += s.count;
                let phys = s.caller.checked_sub(0xC000_0000).unwrap_or(s.caller);
                assert!(
                    (guest::layout::CODE..guest::layout::CODE_END).contains(&phys),
                    "{}: {s:?} is not a return address in the guest's code",
                    run.purpose
                );
            }
            if ring > 0 {
                // The ring holds the newest events (all of them when fewer than its size).
                let total: u32 = invoked.iter().sum();
                assert_eq!(a.events_total, total, "{}", run.purpose);
                assert_eq!(a.events.len(), total.min(ring) as usize);
            }
        }
        let sum = r.invocations.clone().expect("every run's RAM was read");
        let sum: Vec<u64> = sum.into_iter().map(u64::from).collect();
        assert_eq!(from_areas, sum);
        assert_eq!(sited, sum, "every call attributed to its site");
        for c in [vmi_abi::Call::IRET, vmi_abi::Call::SYSEXIT] {
            assert!(
                sited[c as usize] > 0,
                "{c:?}: the suite calls it, from a site"
            );
        }
        let called = sum.iter().filter(|c| **c > 0).count();
        let passed = r.with(Verdict::Pass).count();
        eprintln!(
            "ring {ring}: {} runs, {} invocations of {called} calls ({passed} calls pass)",
            r.runs,
            sum.iter().sum::<u64>()
        );
        // Every call that passes with code was invoked (NOP answers have no code to call).
        for c in r.with(Verdict::Pass) {
            if c.reloc == "CALL_REL" || c.reloc == "JUMP_REL" {
                assert!(sum[c.call as usize] > 0, "{} passed uncalled", c.name);
            }
        }
    }
}

#[test]
fn without_a_bios_the_kvm_runner_has_no_trace_area_and_the_calls_still_pass() {
    if let Err(why) = kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return;
    }
    let t = traced(0);
    let no_bios = |o: SuiteOptions| SuiteOptions {
        run_init16: false,
        ..o
    };
    let r = common::suite(&t.image, &no_bios(keep(Engine::Kvm)));
    let native = common::suite(
        &generate(&Native, &BuildOptions::default()).unwrap().image,
        &no_bios(SuiteOptions {
            engine: Engine::Kvm,
            ..SuiteOptions::default()
        }),
    );
    same_verdicts(&r, &native);
    for run in &r.run_log {
        let low = run.low_ram.as_ref().expect("RAM kept");
        assert!(
            matches!(area::find(low), Err(area::AreaError::NotFound { .. })),
            "{}: an area without a BIOS",
            run.purpose
        );
    }
    let sum = r.invocations.expect("every run's RAM was read");
    assert!(sum.iter().sum::<u32>() > 50);
}

/// The KVM runner's BIOS step runs the trace ROM's 16-bit init: every run has a trace area
/// in conventional memory, below the base memory the BDA reports, and its counters equal
/// the guest's own counts call by call.
#[test]
fn with_the_bios_step_the_kvm_runner_has_a_trace_area_that_counts_exactly() {
    if let Err(why) = kvm::available() {
        eprintln!("SKIP: KVM unavailable: {why}");
        return;
    }
    let t = traced(16);
    let r = common::suite(&t.image, &keep(Engine::Kvm));
    let native = common::suite(
        &generate(&Native, &BuildOptions::default()).unwrap().image,
        &SuiteOptions {
            engine: Engine::Kvm,
            ..SuiteOptions::default()
        },
    );
    same_verdicts(&r, &native);
    assert!(r.bios_init);
    let mut compared = 0;
    for run in &r.run_log {
        let low = run.low_ram.as_ref().expect("RAM kept");
        let invoked = run.invoked.as_ref().expect("guest counters read");
        let a = area::find(low).unwrap_or_else(|e| panic!("{}: {e}", run.purpose));
        assert_eq!(a.build_id, t.build_id);
        // The block sits where the BDA says conventional memory now ends.
        let bda = u32::from(u16::from_le_bytes([low[0x413], low[0x414]]));
        let block = vmi_rom::ram::find(low).unwrap().unwrap();
        assert_eq!(block.phys, bda * 1024, "{}", run.purpose);
        assert_eq!(block.rom_phys, kvm::DEFAULT_ROM_BASE);
        assert!(a.phys >= block.phys && a.phys < 0xA_0000);
        assert_eq!((invoked.len(), a.counters.len()), (NUM_CALLS, NUM_CALLS));
        for (n, (counter, guest)) in a.counters.iter().zip(invoked).enumerate() {
            assert_eq!(
                counter.count,
                u64::from(*guest),
                "run {:?}, call {n}: trace area vs guest",
                run.purpose
            );
        }
        compared += 1;
    }
    assert_eq!(compared, r.run_log.len());
    let sum = r.invocations.expect("every run's RAM was read");
    assert!(sum.iter().sum::<u32>() > 50);
}
