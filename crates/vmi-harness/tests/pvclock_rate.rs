//! The kvm backend's pvclock arithmetic ([`vmi_rom::kvm::rate_routine`]: the TSC rate Init
//! takes from a pvclock's `tsc_to_system_mul`/`tsc_shift`) run on a CPU — QEMU TCG always,
//! and KVM where this host has it — over scales no host at hand gives: TSCs from 1 MHz to
//! 4 THz, either side of 1 GHz (where ns per cycle crosses 2^32 in 32.32), and scales Init
//! must refuse. Each rate must be what the scale says, within the rounding the suite's
//! kvmclock check allows (`2 · (f / (mul · 2^shift) + 1)` Hz).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::code_asm::*;
use vmi_harness::{kvm, multiboot, qemu};

/// Where the scratch time region and the stack live (guest-physical, above the image).
const SCRATCH: u32 = 0x30_0000;
const STACK_TOP: u32 = 0x31_0000;

/// The scale KVM publishes for a TSC of `hz`: `mul · 2^shift` = ns per cycle in 32.32, with
/// `mul` normalised to its top bit (bit 31) as KVM's own scale has it.
fn scale_for(hz: u64) -> (u32, i32) {
    let ns = 1_000_000_000u128 << 32;
    for shift in -32i32..=32 {
        let mul = if shift < 0 {
            (ns << -shift) / u128::from(hz)
        } else {
            ns / (u128::from(hz) << shift)
        };
        if (1u128 << 31..1u128 << 32).contains(&mul) {
            return (mul as u32, shift);
        }
    }
    panic!("no 32.32 scale for {hz} Hz")
}

/// The rate a (mul, shift) scale states, in Hz, and how far the ROM may be from it.
fn stated(mul: u32, shift: i32) -> (f64, f64) {
    let ns_per_cycle = f64::from(mul) * 2f64.powi(shift) / 2f64.powi(32);
    let hz = 1e9 / ns_per_cycle;
    let scale = f64::from(mul) * 2f64.powi(shift);
    (hz, 2.0 * (hz / scale + 1.0))
}

/// A flat multiboot guest that calls the routine for every (mul, shift) and writes each
/// EDX:EAX (8 bytes, little-endian) to port 0xE9, then ends through isa-debug-exit.
fn guest(cases: &[(u32, i32)]) -> Vec<u8> {
    let base = multiboot::LOAD_ADDR + multiboot::HEADER_LEN as u32;
    // The case table follows the code; `mov edi, imm32` has one length whatever the address.
    let code_len = driver(base, 0, cases.len()).len() as u32;
    let mut body = driver(base, base + code_len, cases.len());
    for &(mul, shift) in cases {
        body.extend_from_slice(&mul.to_le_bytes());
        body.extend_from_slice(&shift.to_le_bytes());
    }
    multiboot::image(multiboot::LOAD_ADDR, &body, 0, 0)
}

/// The driver's code at `base` and the routine after it, for `n` cases at `table`.
fn driver(base: u32, table: u32, n: usize) -> Vec<u8> {
    let routine = vmi_rom::kvm::rate_routine().unwrap();
    let mut a = CodeAssembler::new(32).unwrap();
    let mut code = a.create_label();
    let mut next = a.create_label();
    a.mov(esp, STACK_TOP).unwrap();
    a.mov(esi, SCRATCH).unwrap();
    a.mov(edi, table).unwrap();
    a.mov(ebp, n as u32).unwrap();
    a.set_label(&mut next).unwrap();
    a.push(dword_ptr(edi + 4)).unwrap();
    a.push(dword_ptr(edi)).unwrap();
    a.call(code).unwrap();
    a.add(esp, 8).unwrap();
    for reg in [eax, edx] {
        a.mov(ebx, reg).unwrap();
        for _ in 0..4 {
            a.mov(al, bl).unwrap();
            a.out(0xE9, al).unwrap();
            a.shr(ebx, 8).unwrap();
        }
    }
    a.add(edi, 8).unwrap();
    a.dec(ebp).unwrap();
    a.jnz(next).unwrap();
    a.mov(al, 0x31).unwrap();
    a.mov(dx, u32::from(qemu::EXIT_PORT)).unwrap();
    a.out(dx, al).unwrap();
    a.cli().unwrap();
    a.hlt().unwrap();
    a.set_label(&mut code).unwrap();
    a.db(&routine).unwrap();
    a.assemble(u64::from(base)).unwrap()
}

/// The rates out of a run's debug console, one per case.
fn rates(debugcon: &[u8], n: usize) -> Vec<u64> {
    assert_eq!(debugcon.len(), 8 * n, "the guest wrote {debugcon:02x?}");
    debugcon
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn on_qemu(cases: &[(u32, i32)]) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("rate.bin");
    std::fs::write(&kernel, guest(cases)).unwrap();
    let run = qemu::run(&qemu::QemuConfig {
        kernel: Some(kernel),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(run.guest_exit_value(), Some(0x31), "{}", run.stderr);
    rates(&run.debugcon, cases.len())
}

fn on_kvm(cases: &[(u32, i32)]) -> Option<Vec<u64>> {
    if let Err(why) = kvm::available() {
        eprintln!("SKIP (kvm half): KVM unavailable: {why}");
        return None;
    }
    let run = kvm::run(&kvm::KvmConfig {
        kernel: guest(cases),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(run.guest_exit_value(), Some(0x31), "{:?}", run.end);
    Some(rates(&run.debugcon, cases.len()))
}

/// Runs `cases` on every engine at hand and hands each engine's rates to `check`.
fn each_engine(cases: &[(u32, i32)], check: impl Fn(&str, &[u64])) {
    check("qemu-tcg", &on_qemu(cases));
    if let Some(r) = on_kvm(cases) {
        check("kvm", &r);
    }
}

#[test]
fn every_tsc_rate_from_1_mhz_to_4_thz_is_what_the_scale_says() {
    let hz = [
        4_000_000_000_000u64,
        3_700_000_000,
        2_300_000_000,
        1_000_000_001,
        1_000_000_000,
        999_999_999,
        999_000_000,
        700_000_000,
        500_000_000,
        400_000_000,
        133_333_333,
        25_000_000,
        1_500_000,
        1_000_001,
    ];
    let cases: Vec<(u32, i32)> = hz.iter().map(|&f| scale_for(f)).collect();
    each_engine(&cases, |engine, got| {
        for ((&f, &(mul, shift)), &rom) in hz.iter().zip(&cases).zip(got) {
            let (want, slack) = stated(mul, shift);
            let off = rom as f64 - want;
            eprintln!(
                "{engine}: {f} Hz: mul {mul:#x} shift {shift}: ROM {rom} Hz, scale {want:.1} Hz, {off:+.2} Hz (±{slack:.2})"
            );
            assert!(
                off.abs() <= slack,
                "{engine}: a TSC of {f} Hz (mul {mul:#x}, shift {shift}): the ROM took {rom} Hz, the scale says {want:.1} Hz: {off:+.1} Hz, more than ±{slack:.2}"
            );
        }
    });
}

#[test]
fn scales_init_must_refuse_give_no_rate() {
    let cases = [
        (0, 0),                       // a pvclock KVM never wrote
        scale_for(999_000),           // below 1 MHz
        scale_for(5_000_000_000_000), // the kHz would not fit 32 bits
        (0x8000_0000, 32),            // a shift the ROM's shifts would take modulo 32
        (0x8000_0000, -33),
        (0xffff_ffff, 127),
    ];
    each_engine(&cases, |engine, got| {
        for (&(mul, shift), &rom) in cases.iter().zip(got) {
            assert_eq!(
                rom, 0,
                "{engine}: mul {mul:#x} shift {shift}: the ROM took {rom} Hz where Init must fall back"
            );
        }
    });
}
