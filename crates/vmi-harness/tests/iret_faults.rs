//! IRET faults are reported at the call site (vmi-abi.md §4.3): the suite's bad-frame
//! scenarios — every rule of IRET's checks, to ring 3 and to ring 0, each compared with a
//! native `iret` at the site — pass for the native and the trace ROM under QEMU, and fail for
//! an IRET that executes `iret` inside the ROM (the native ROM before the fix), naming the EIP
//! the fault was reported at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_harness::suite::{SuiteOptions, SuiteReport, Verdict};
use vmi_rom::generate::{BuildOptions, generate_unaudited};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;
use vmi_rom::{Answer, Backend, Override};

/// The bad-frame cases the suite runs (their names appear in the verdict's detail).
const CASES: [&str; 21] = [
    "cs-null",
    "cs-ldt-without-ldt",
    "cs-beyond-gdt",
    "cs-data",
    "cs-system",
    "cs-dpl-not-rpl",
    "cs-not-present",
    "ss-null",
    "ss-rpl-not-cs-rpl",
    "ss-beyond-gdt",
    "ss-ldt-without-ldt",
    "ss-code",
    "ss-read-only",
    "ss-dpl-not-rpl",
    "ss-not-present",
    "eip-beyond-limit",
    "cs-before-ss",
    "ss-before-eip",
    "interrupt-gate",
    "trap-gate",
    "cs-conforming-dpl-above-rpl",
];

fn iret_only(backend: &dyn Backend) -> SuiteReport {
    let g = generate_unaudited(backend, &BuildOptions::default()).unwrap();
    let opts = SuiteOptions {
        only: Some(vec![Call::IRET as u32]),
        ..SuiteOptions::default()
    };
    common::suite(&g.image, &opts)
}

fn assert_passes_every_case(r: &SuiteReport) {
    assert!(r.activation.ok, "{:?}", r.activation.problems);
    let c = r.call(Call::IRET as u8).unwrap();
    assert_eq!(c.verdict, Verdict::Pass, "{}", c.detail);
    // 3 valid-frame scenarios + a reference and a ROM run for each of 31 frames.
    assert_eq!(c.checks, 3 + 2 * 31, "{}", c.detail);
    for case in CASES {
        assert!(
            c.detail.contains(&format!("({case})")),
            "{case}: {}",
            c.detail
        );
    }
    // Both rings, and the valid frames that take the full check without a fault.
    for what in [
        "IRET to ring 0: CS not present (cs-not-present)",
        "IRET to ring 3: CS not present (cs-not-present)",
        "(valid-ldt)",
        "(valid-conforming)",
    ] {
        assert!(c.detail.contains(what), "{what}: {}", c.detail);
    }
    // The native reference faulted as the SDM says in every case but the EIP-limit ones,
    // where QEMU does not check the limit on IRET (and the ROM is held to the SDM).
    assert_eq!(
        c.detail.matches("departs from the SDM").count(),
        2,
        "{}",
        c.detail
    );
    assert!(
        c.detail.contains("native iret: #GP(0x000c) at 0x0060:"),
        "the sigreturn frame with CS 0x0f: {}",
        c.detail
    );
}

#[test]
fn native_rom_reports_every_iret_fault_at_the_call_site() {
    assert_passes_every_case(&iret_only(&Native));
}

#[test]
fn trace_rom_reports_every_iret_fault_at_the_call_site() {
    assert_passes_every_case(&iret_only(&Trace {
        ring: 64,
        ..Trace::new(Native)
    }));
}

#[test]
fn an_iret_inside_the_rom_fails_naming_the_eip_it_reported() {
    // The native IRET before the fix: drop the return address, `iret` in the ROM.
    let r = iret_only(&Override {
        base: Native,
        call: Call::IRET,
        emit: |e| {
            e.a.lea(esp, ptr(esp + 4))?;
            e.a.iretd()?;
            Ok(Answer::Call)
        },
    });
    let c = r.call(Call::IRET as u8).unwrap();
    assert_eq!(c.verdict, Verdict::Fail, "{}", c.detail);
    let rom = r.activation.linear.unwrap();
    let len = r.activation.rom_len.unwrap();
    // The sigreturn case, to ring 3 with CS 0x0f: the right fault at the wrong EIP, which
    // lies inside the ROM.
    let line = c
        .detail
        .split("; ")
        .find(|d| d.contains("(cs-ldt-without-ldt): #GP(0x000c) reported at EIP 0x"))
        .unwrap_or_else(|| panic!("{}", c.detail));
    let eip = line
        .split("reported at EIP 0x")
        .nth(1)
        .and_then(|s| s.get(..8))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap();
    assert!((rom..rom + len).contains(&eip), "{eip:#x}: {line}");
    assert!(line.contains("not at the call site 0x"), "{line}");
    // Every fault case fails the same way; the valid frames still pass. (QEMU checks no
    // code-segment limit, so an EIP beyond it is not even noticed by an `iret` in the ROM.)
    for case in CASES.iter().filter(|c| **c != "eip-beyond-limit") {
        assert!(
            c.detail
                .split("; ")
                .any(|d| d.contains(&format!("({case}): ")) && d.contains("reported at EIP")),
            "{case}: {}",
            c.detail
        );
    }
    for fails in [
        "IRET to ring 3: EIP beyond the CS limit (eip-beyond-limit): expected #GP(0x0000) at \
         the call site",
        "IRET to ring 0: EIP beyond the CS limit (eip-beyond-limit): no exception was delivered",
    ] {
        assert!(c.detail.contains(fails), "{fails}: {}", c.detail);
    }
    assert!(!c.detail.contains("(valid-ldt): "), "{}", c.detail);
    assert!(!c.detail.contains("(valid-conforming): "), "{}", c.detail);
}
