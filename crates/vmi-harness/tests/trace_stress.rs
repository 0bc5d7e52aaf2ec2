//! The trace ROM under a timer-interrupt storm (QEMU TCG, SeaBIOS): the guest loops over a mix
//! of VMI calls while the PIT fires IRQ0 at ~20 kHz and the timer handler makes VMI calls of
//! its own, re-entering the ROM between any two instructions of the call it interrupted. Every
//! result and register is checked by the guest, and afterwards the trace area's counters must
//! equal, call by call, the invocations the guest counted: no count lost. Each call comes from
//! a known call site of the guest's code, and the area's call-site table must attribute every
//! one of them to exactly that site — or, when the table is too small, count it as its call's
//! overflow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use iced_x86::code_asm::{cr0, cr3, eax, ebx};
use std::time::Duration;
use vmi_abi::Call;
use vmi_abi::calls::{NUM_CALLS, Reg};
use vmi_harness::guest::{self, CallSite, GuestConfig, Invocations, SiteRole, Step, Stress};
use vmi_harness::protocol::{self, EndStatus, StepId, StressResult, Violation};
use vmi_harness::qemu::{self, QemuConfig};
use vmi_rom::emit::Emit;
use vmi_rom::generate::{BuildOptions, generate, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};
use vmi_rom::{Answer, GenError, Override};

/// What one stress run against a trace ROM gave.
struct Ran {
    result: StressResult,
    invoked: Invocations,
    low: Vec<u8>,
    sites: Vec<CallSite>,
}

/// Boots activation + one stress step against `image` with shared RAM: the STRESS record, the
/// guest's invocation counters read from RAM, conventional memory, and the guest's call sites.
fn run(image: &[u8], stress: Stress, extra: &[&str]) -> Ran {
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
    Ran {
        result,
        invoked: Invocations::from_vars(&vars).unwrap(),
        low: run.conventional.unwrap(),
        sites: g.call_sites,
    }
}

/// The trace ROM and guest of one storm.
struct Storm<'a> {
    /// Ring entries.
    ring: u32,
    /// Call-site slots.
    sites: u32,
    /// Further QEMU arguments.
    extra: &'a [&'a str],
    /// Iterations of a second CPU (0: none).
    ap_loops: u32,
    /// Every call of one number through one shared call site.
    shared: bool,
}

impl Storm<'_> {
    fn rom(&self) -> vmi_rom::generate::Generated {
        generate(
            &Trace {
                inner: Native,
                ring: self.ring,
                sites: self.sites,
            },
            &BuildOptions::default(),
        )
        .unwrap()
    }

    fn stress(&self) -> Stress {
        Stress {
            shared_sites: self.shared,
            ..Stress::with_second_cpu(20_000, 2_000, self.ap_loops)
        }
    }

    /// Runs the storm and checks every count (call by call, and site by site).
    fn check(&self) -> Ran {
        let stress = self.stress();
        let mix_len = stress.mix.len() as u32 + 1; // DisableInterrupts brings EnableInterrupts
        let ap_len = stress.ap_mix.len() as u32;
        let t = self.rom();
        let ran = run(&t.image, stress, self.extra);
        let r = &ran.result;
        eprintln!(
            "stress {:?}, {} call-site slots{}: {} loops, {} timer interrupts, {} second-CPU \
             loops, {} invocations, {} cycles",
            self.extra,
            self.sites,
            if self.shared { ", shared sites" } else { "" },
            r.loops,
            r.handler_runs,
            r.ap_loops,
            r.total,
            r.cycles
        );
        assert_eq!(r.violation, None, "the wrapper changed a call's behaviour");
        assert!(r.loops >= 20_000, "{r:?}");
        assert!(r.handler_runs >= 1000, "only {} interrupts", r.handler_runs);
        assert_eq!(r.ap_loops, self.ap_loops);
        // The record and the RAM agree on what the guest did.
        assert_eq!(ran.invoked.total, r.total);
        assert_eq!(&ran.invoked.counts[..NUM_CALLS], &r.counts[..]);
        assert_eq!(
            r.counts.iter().map(|c| u64::from(*c)).sum::<u64>(),
            u64::from(r.total)
        );
        // The loop's calls: loops × mix (EnableInterrupts twice per iteration), plus the
        // second CPU's (each of its calls once per iteration).
        assert_eq!(r.counts[Call::GetCR0 as usize], r.loops + r.ap_loops);
        assert_eq!(r.counts[Call::EnableInterrupts as usize], 2 * r.loops);
        // The handler's calls: once per interrupt it served while the step was active (the
        // handler counts the tick before the check, so ticks ≥ handler calls).
        let handler = handler_runs(r);
        assert!(handler > 0 && handler <= r.handler_runs);
        assert_eq!(
            r.counts[Call::DisableInterrupts as usize] - r.loops - r.ap_loops,
            handler
        );
        assert_eq!(
            r.total,
            mix_len * r.loops + 3 * handler + ap_len * r.ap_loops
        );
        // The trace area: exactly the same counts, call by call.
        let a = area::find(&ran.low).unwrap();
        assert_eq!(a.build_id, t.build_id);
        for n in 0..NUM_CALLS {
            assert_eq!(
                a.counters[n].count,
                u64::from(r.counts[n]),
                "call {n}: the trace area disagrees with the guest's count"
            );
        }
        assert!(a.counters[Call::RDTSC as usize].cycles > 0);
        if self.ring > 0 {
            // Every invocation reserved one ring slot; the ring holds the newest of them.
            assert_eq!(a.events_total, r.total);
            assert_eq!(a.events.len(), self.ring as usize);
            assert!(a.events.iter().all(|e| r.counts[e.call as usize] > 0));
        }
        check_sites(&a, &ran);
        ran
    }
}

/// Calls the timer handler made per call site: the RDTSC calls beyond the loop's and the
/// second CPU's.
fn handler_runs(r: &StressResult) -> u32 {
    r.counts[Call::RDTSC as usize] - r.loops - r.ap_loops
}

/// The calls the guest made from `site` in the run.
fn expected(site: &CallSite, r: &StressResult) -> u64 {
    u64::from(match site.role {
        SiteRole::Loop => r.loops,
        SiteRole::Handler => handler_runs(r),
        SiteRole::SecondCpu => r.ap_loops,
        SiteRole::Shared => r.counts[site.call as usize],
    })
}

/// Every site in the area is one of the guest's, with exactly the calls made there; a guest
/// site missing from the table (no free slot) is in its call's overflow, and per call the
/// sites plus the overflow are the call's count.
fn check_sites(a: &area::Area, ran: &Ran) {
    let r = &ran.result;
    let mut overflow = vec![0u64; NUM_CALLS];
    for site in &ran.sites {
        let want = expected(site, r);
        match a
            .sites
            .iter()
            .find(|s| s.caller == site.ret && s.call == site.call as u32)
        {
            Some(s) => assert_eq!(s.count, want, "{site:?}: calls attributed to it"),
            None => overflow[site.call as usize] += want,
        }
    }
    for s in &a.sites {
        assert!(
            ran.sites
                .iter()
                .any(|g| g.ret == s.caller && g.call as u32 == s.call),
            "{s:?}: a site the guest has not"
        );
    }
    for (n, want) in overflow.iter().enumerate() {
        assert_eq!(a.overflow[n].count, *want, "call {n}: overflow");
        let sites: u64 = a
            .sites
            .iter()
            .filter(|s| s.call == n as u32)
            .map(|s| s.count)
            .sum();
        assert_eq!(sites + a.overflow[n].count, a.counters[n].count, "call {n}");
    }
}

#[test]
fn no_count_is_lost_under_a_timer_interrupt_storm() {
    let ran = Storm {
        ring: 0,
        sites: area::DEFAULT_SITES,
        extra: &[],
        ap_loops: 0,
        shared: false,
    }
    .check();
    // Every call site the guest has got a slot: nothing is overflow.
    let a = area::find(&ran.low).unwrap();
    assert_eq!(a.sites.len(), ran.sites.len());
    assert_eq!(
        ran.sites.len(),
        13,
        "the loop's 10 sites and the handler's 3"
    );
    assert!(a.overflow.iter().all(|c| c.count == 0));
}

/// TCG takes interrupts only between translation blocks; `-one-insn-per-tb` makes every
/// instruction a block, so IRQ0 can land between any two instructions of a wrapper.
#[test]
fn no_count_is_lost_when_interrupts_land_between_any_two_instructions() {
    Storm {
        ring: 64,
        sites: area::DEFAULT_SITES,
        extra: &[qemu::one_insn_per_tb().unwrap()],
        ap_loops: 0,
        shared: false,
    }
    .check();
}

/// Two vCPUs (QEMU runs them on two host threads): the second calls RDTSC, GetCR3, GetCR0,
/// GetInterruptMask and DisableInterrupts 200,000 times while the first runs its loop and its
/// timer handler — the same counters updated from two CPUs at once.
#[test]
fn no_count_is_lost_when_two_cpus_call_at_once() {
    Storm {
        ring: 64,
        sites: area::DEFAULT_SITES,
        extra: &["-smp", "2"],
        ap_loops: 200_000,
        shared: false,
    }
    .check();
}

/// Both CPUs and the timer handler call each number from one shared site: the same call-site
/// slots are claimed and updated from two CPUs and from interrupts at once.
#[test]
fn call_sites_shared_by_two_cpus_and_the_timer_handler_count_exactly() {
    let ran = Storm {
        ring: 0,
        sites: area::DEFAULT_SITES,
        extra: &["-smp", "2"],
        ap_loops: 200_000,
        shared: true,
    }
    .check();
    let a = area::find(&ran.low).unwrap();
    assert_eq!(a.sites.len(), ran.sites.len());
}

/// A table of 4 slots for the guest's 18 call sites (10 of the loop, 3 of the timer handler, 5
/// of the second CPU): the first sites to call take the slots,
/// every other site's calls are its call's overflow — exactly, under the storm and with two
/// CPUs.
#[test]
fn sites_that_find_no_slot_are_counted_exactly_as_overflow() {
    let ran = Storm {
        ring: 0,
        sites: 4,
        extra: &["-smp", "2"],
        ap_loops: 200_000,
        shared: false,
    }
    .check();
    let a = area::find(&ran.low).unwrap();
    assert_eq!((a.site_slots, a.site_slots_used), (4, 4));
    assert!(!a.sites.is_empty() && a.sites.len() <= 4, "{:?}", a.sites);
    let overflow: u64 = a.overflow.iter().map(|c| c.count).sum();
    assert!(overflow > 0);
    eprintln!(
        "{} sites in the table, {overflow} calls of {} in overflow",
        a.sites.len(),
        ran.result.total
    );
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
    let r = run(&clobber, stress.clone(), &[]).result;
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
    let r = run(&wrong, stress, &[]).result;
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

/// The trace ROM of `storm` with its `lock` prefixes turned into `nop`s (so each counter update
/// is a plain read-modify-write, and a claim a plain compare-and-write), run with two CPUs:
/// the calls the area lost.
fn lost_without_lock_prefixes(storm: &Storm) -> u64 {
    use iced_x86::{Decoder, DecoderOptions};
    let t = storm.rom();
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
    let ran = run(&img, storm.stress(), storm.extra);
    let r = &ran.result;
    assert_eq!(r.violation, None);
    let a = area::find(&ran.low).unwrap();
    let lost: u64 = (0..NUM_CALLS)
        .map(|n| u64::from(r.counts[n]).saturating_sub(a.counters[n].count))
        .sum();
    eprintln!(
        "{} call-site slots{}: unlocked counters lost {lost} of {} invocations",
        storm.sites,
        if storm.shared { ", shared sites" } else { "" },
        r.total
    );
    lost
}

/// The two-CPU tests can fail: without `lock` prefixes, counts are lost when two vCPUs update
/// the same counters (here the calls' own counters: a ROM without a call-site table) — what
/// the exact equalities above rule out. Losing needs both vCPU threads on host cores at the
/// same time, which a loaded host may not grant in one run: up to three runs.
#[test]
fn without_lock_prefixes_two_cpus_lose_counts() {
    let storm = Storm {
        ring: 0,
        sites: 0,
        extra: &["-smp", "2"],
        ap_loops: 200_000,
        shared: false,
    };
    assert!((0..3).any(|_| lost_without_lock_prefixes(&storm) > 0));
}
