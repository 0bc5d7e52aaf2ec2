//! The trace ROM under a timer-interrupt storm (QEMU TCG, SeaBIOS): the guest loops over a mix
//! of VMI calls while the PIT fires IRQ0 at ~20 kHz and the timer handler makes VMI calls of
//! its own, re-entering the ROM between any two instructions of the call it interrupted. Every
//! result and register is checked by the guest, and afterwards the trace area's counters must
//! equal, call by call, the invocations the guest counted: no count lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use iced_x86::code_asm::{cr0, cr3, eax, ebx};
use std::time::Duration;
use vmi_abi::Call;
use vmi_abi::calls::{NUM_CALLS, Reg};
use vmi_harness::guest::{self, GuestConfig, Invocations, Step, Stress};
use vmi_harness::protocol::{self, EndStatus, StepId, StressResult, Violation};
use vmi_harness::qemu::{self, QemuConfig};
use vmi_rom::emit::Emit;
use vmi_rom::generate::{BuildOptions, generate, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};
use vmi_rom::{Answer, GenError, Override};

/// Boots activation + one stress step against `image` with shared RAM; returns the STRESS
/// record, the guest's invocation counters read from RAM, and conventional memory.
fn run(image: &[u8], stress: Stress, extra: &[&str]) -> (StressResult, Invocations, Vec<u8>) {
    let (dir, rom) = common::rom_file(image);
    let mut steps = vec![Step::Probe, Step::Init];
    steps.extend((0..NUM_CALLS as u32).map(Step::GetReloc));
    steps.push(Step::Stress(0));
    let g = guest::build(&GuestConfig {
        stress: vec![stress],
        ..GuestConfig {
            steps,
            ..GuestConfig::linux(0xC000_0000, true, &[])
        }
    })
    .unwrap();
    let kernel = dir.path().join("guest.bin");
    std::fs::write(&kernel, &g.image).unwrap();
    let mut s = qemu::Session::spawn(&QemuConfig {
        rom: Some(rom),
        kernel: Some(kernel),
        shared_ram: true,
        timeout: Duration::from_secs(60),
        extra_args: extra.iter().map(Into::into).collect(),
        ..QemuConfig::default()
    })
    .unwrap();
    s.run_bounded().unwrap();
    let vars = s
        .read_ram(u64::from(guest::layout::VARS)..u64::from(guest::layout::PERCPU))
        .unwrap();
    let run = s.finish();
    // The trace ROM's init writes into its own image during POST and re-balances the checksum:
    // SeaBIOS's second look at the ROM (for boot vectors) still finds it valid.
    assert!(
        !run.seabios_log.contains("bad checksum"),
        "{}",
        run.seabios_log
    );
    let stream = protocol::decode(&run.debugcon).unwrap();
    assert_eq!(stream.end(), Some(EndStatus::Complete), "{run:?}");
    let result = stream.stress().next().cloned().expect("no STRESS record");
    assert_eq!(result.step, StepId::Stress(0));
    let invoked = Invocations::from_vars(&vars).unwrap();
    (result, invoked, run.conventional.unwrap())
}

/// Runs the storm against a trace ROM with a `ring`-entry event ring and checks every count;
/// `extra`: further QEMU arguments; `ap_loops`: iterations of a second CPU (0: none).
fn storm(ring: u32, extra: &[&str], ap_loops: u32) {
    let stress = Stress::with_second_cpu(20_000, 2_000, ap_loops);
    let mix_len = stress.mix.len() as u32 + 1; // DisableInterrupts brings EnableInterrupts
    let ap_len = stress.ap_mix.len() as u32;
    let t = generate(
        &Trace {
            inner: Native,
            ring,
        },
        &BuildOptions::default(),
    )
    .unwrap();
    let (r, invoked, low) = run(&t.image, stress, extra);
    eprintln!(
        "stress {extra:?}: {} loops, {} timer interrupts, {} second-CPU loops, {} invocations, \
         {} cycles",
        r.loops, r.handler_runs, r.ap_loops, r.total, r.cycles
    );
    assert_eq!(r.violation, None, "the wrapper changed a call's behaviour");
    assert!(r.loops >= 20_000, "{r:?}");
    assert!(r.handler_runs >= 1000, "only {} interrupts", r.handler_runs);
    assert_eq!(r.ap_loops, ap_loops);
    // The record and the RAM agree on what the guest did.
    assert_eq!(invoked.total, r.total);
    assert_eq!(&invoked.counts[..NUM_CALLS], &r.counts[..]);
    assert_eq!(
        r.counts.iter().map(|c| u64::from(*c)).sum::<u64>(),
        u64::from(r.total)
    );
    // The loop's calls: loops × mix (EnableInterrupts twice per iteration), plus the second
    // CPU's (each of its calls once per iteration).
    assert_eq!(r.counts[Call::GetCR0 as usize], r.loops + r.ap_loops);
    assert_eq!(r.counts[Call::EnableInterrupts as usize], 2 * r.loops);
    // The handler's calls: once per interrupt it served while the step was active (the
    // handler counts the tick before the check, so ticks ≥ handler calls).
    let handler_rdtsc = r.counts[Call::RDTSC as usize] - r.loops - r.ap_loops;
    assert!(handler_rdtsc > 0 && handler_rdtsc <= r.handler_runs);
    assert_eq!(
        r.counts[Call::DisableInterrupts as usize] - r.loops - r.ap_loops,
        handler_rdtsc
    );
    assert_eq!(
        r.total,
        mix_len * r.loops + 3 * handler_rdtsc + ap_len * r.ap_loops
    );
    // The trace area: exactly the same counts, call by call.
    let a = area::find(&low).unwrap();
    assert_eq!(a.build_id, t.build_id);
    for n in 0..NUM_CALLS {
        assert_eq!(
            a.counters[n].count,
            u64::from(r.counts[n]),
            "call {n}: the trace area disagrees with the guest's count"
        );
    }
    assert!(a.counters[Call::RDTSC as usize].cycles > 0);
    if ring > 0 {
        // Every invocation reserved one ring slot; the ring holds the newest `ring` of them.
        assert_eq!(a.events_total, r.total);
        assert_eq!(a.events.len(), ring as usize);
        assert!(a.events.iter().all(|e| r.counts[e.call as usize] > 0));
    }
}

#[test]
fn no_count_is_lost_under_a_timer_interrupt_storm() {
    storm(0, &[], 0);
}

/// TCG takes interrupts only between translation blocks; `-one-insn-per-tb` makes every
/// instruction a block, so IRQ0 can land between any two instructions of a wrapper.
#[test]
fn no_count_is_lost_when_interrupts_land_between_any_two_instructions() {
    storm(64, &[qemu::one_insn_per_tb().unwrap()], 0);
}

/// Two vCPUs (QEMU runs them on two host threads): the second calls RDTSC, GetCR3, GetCR0,
/// GetInterruptMask and DisableInterrupts 200,000 times while the first runs its loop and its
/// timer handler — the same counters updated from two CPUs at once.
#[test]
fn no_count_is_lost_when_two_cpus_call_at_once() {
    storm(64, &["-smp", "2"], 200_000);
}

#[test]
fn the_stress_loop_catches_a_clobbered_register_and_a_wrong_result() {
    // GetCR3 that clobbers EBX (class C must keep it).
    let clobber = broken(Call::GetCR3, |e| {
        e.a.mov(eax, cr3)?;
        e.a.xor(ebx, ebx)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    let mut stress = Stress::linux_like(100, 0);
    stress.handler.clear();
    let item = stress.mix.iter().position(|c| *c == Call::GetCR3).unwrap() as u32;
    let (r, _, _) = run(&clobber, stress.clone(), &[]);
    assert_eq!(r.violation, Some((item, Violation::Register(Reg::Ebx))));
    assert_eq!(r.loops, 0);
    // A GetCR0 that returns CR0 | TS.
    let wrong = broken(Call::GetCR0, |e| {
        e.a.mov(eax, cr0)?;
        e.a.or(eax, 8)?;
        e.a.ret()?;
        Ok(Answer::Call)
    });
    let item = stress.mix.iter().position(|c| *c == Call::GetCR0).unwrap() as u32;
    let (r, _, _) = run(&wrong, stress, &[]);
    assert_eq!(r.violation, Some((item, Violation::Result)));
}

fn broken(call: Call, bad: fn(&mut Emit) -> Result<Answer, GenError>) -> Vec<u8> {
    let o = Override {
        base: Native,
        call,
        emit: bad,
    };
    generate_unaudited(&o, &BuildOptions::default())
        .unwrap()
        .image
}

/// The two-CPU test can fail: the same trace ROM with its `lock` prefixes turned into `nop`s
/// (so each counter update is a plain read-modify-write) loses counts when two vCPUs update the
/// same counters — what the exact equality above rules out.
#[test]
fn without_lock_prefixes_two_cpus_lose_counts() {
    use iced_x86::{Decoder, DecoderOptions};
    let t = generate(&Trace::new(Native), &BuildOptions::default()).unwrap();
    let mut img = t.image.clone();
    let code = t
        .calls
        .iter()
        .filter(|c| c.size > 0)
        .map(|c| (c.offset, c.size));
    let mut patched = 0;
    for (off, size) in code {
        let (off, size) = (off as usize, size as usize);
        let bytes = img[off..off + size].to_vec();
        let mut dec = Decoder::with_ip(32, &bytes, off as u64, DecoderOptions::NONE);
        for ins in &mut dec {
            if ins.has_lock_prefix() {
                let at = ins.ip() as usize;
                assert_eq!(img[at], 0xF0);
                img[at] = 0x90;
                patched += 1;
            }
        }
    }
    assert!(patched > 80, "{patched}");
    let last = img.len() - 1;
    img[last] = 0;
    img[last] = 0u8.wrapping_sub(img.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    let (r, _, low) = run(
        &img,
        Stress::with_second_cpu(20_000, 2_000, 200_000),
        &["-smp", "2"],
    );
    assert_eq!(r.violation, None);
    let a = area::find(&low).unwrap();
    let lost: u64 = (0..NUM_CALLS)
        .map(|n| u64::from(r.counts[n]).saturating_sub(a.counters[n].count))
        .sum();
    eprintln!("unlocked counters lost {lost} of {} invocations", r.total);
    assert!(lost > 0);
}
