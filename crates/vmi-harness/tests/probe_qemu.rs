//! The test guest probes real ROMs under QEMU/SeaBIOS (TCG) the way Linux does.
//!
//! Each test builds a small VMI ROM with `optionrom` (header, PCIR at 0x20, `$PnP` at 0x40) and
//! iced-x86-assembled 32-bit code, hands it to SeaBIOS with `-option-rom`, boots the guest and
//! checks what it reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use iced_x86::code_asm::*;
use optionrom::build::Finish;
use optionrom::vmi::{VmiHeaderSpec, write_header};
use std::path::PathBuf;
use vmi_abi::calls::RelocType;
use vmi_harness::HarnessError;
use vmi_harness::probe::{ProbeOptions, ProbeReport, probe};
use vmi_harness::protocol::{EXIT_EXCEPTION_BASE, EndStatus, Outcome, StepId};

/// Call whose answer is CALL_REL to `impl17`.
const CALL_REL_CALL: u32 = 17;
/// Call whose answer is NOP.
const NOP_CALL: u32 = 30;

/// A built test ROM and where things are inside it.
struct TestRom {
    bytes: Vec<u8>,
    /// Image offset of the code CALL_REL points at.
    impl17: u32,
    /// Image offset of the Init code.
    init: u32,
}

/// What Init does.
#[derive(Clone, Copy)]
enum InitKind {
    /// `xor eax, eax; ret`.
    Success,
    /// `ud2`.
    Ud2,
    /// `int 0x30` (an interrupt nobody expects).
    StrayInt,
}

fn build_rom(license: &str, init_kind: InitKind) -> TestRom {
    let mut b = common::vmi_builder("probe ROM");

    // Init.
    let mut a = CodeAssembler::new(32).unwrap();
    match init_kind {
        InitKind::Success => {
            a.xor(eax, eax).unwrap();
            a.ret().unwrap();
        }
        InitKind::Ud2 => a.ud2().unwrap(),
        InitKind::StrayInt => {
            a.int(0x30).unwrap();
            a.ret().unwrap();
        }
    }
    let init = b.append(&a.assemble(0).unwrap(), 16);

    // The implementation call 17 points at.
    let mut a = CodeAssembler::new(32).unwrap();
    a.xor(eax, eax).unwrap();
    a.ret().unwrap();
    let impl17 = b.append(&a.assemble(0).unwrap(), 16);

    // get_reloc: position independent, `call next; next: pop ecx` finds where it runs.
    b.align(16);
    let at = b.len();
    let next = at + 5; // `call rel32` is 5 bytes
    let mut a = CodeAssembler::new(32).unwrap();
    let mut l_next = a.create_label();
    let mut not17 = a.create_label();
    let mut none = a.create_label();
    a.call(l_next).unwrap();
    a.set_label(&mut l_next).unwrap();
    a.pop(ecx).unwrap();
    a.cmp(eax, CALL_REL_CALL).unwrap();
    a.jne(not17).unwrap();
    a.lea(eax, dword_ptr(ecx + (impl17 as i32 - next as i32)))
        .unwrap();
    a.mov(edx, RelocType::CallRel as u32).unwrap();
    a.ret().unwrap();
    a.set_label(&mut not17).unwrap();
    a.cmp(eax, NOP_CALL).unwrap();
    a.jne(none).unwrap();
    a.xor(eax, eax).unwrap();
    a.mov(edx, RelocType::Nop as u32).unwrap();
    a.ret().unwrap();
    a.set_label(&mut none).unwrap();
    a.xor(eax, eax).unwrap();
    a.xor(edx, edx).unwrap();
    a.ret().unwrap();
    let code = a.assemble(at as u64).unwrap();
    let get_reloc = b.append(&code, 1);
    assert_eq!(get_reloc, at);

    let spec = VmiHeaderSpec {
        license: license.into(),
        ..VmiHeaderSpec::default()
    };
    write_header(&mut b, &spec, init, get_reloc).unwrap();
    TestRom {
        bytes: b.finish(&Finish::default()).unwrap(),
        impl17: impl17 as u32,
        init: init as u32,
    }
}

struct Run {
    report: ProbeReport,
    _dir: tempfile::TempDir,
}

fn run(rom: &TestRom, opts: &ProbeOptions) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("vmi.rom");
    std::fs::write(&path, &rom.bytes).unwrap();
    let report = probe(&path, opts).unwrap_or_else(|e| panic!("probe failed: {e}"));
    eprintln!(
        "probe: {:?} wall, exit {:?}, chosen {:#x?}, {} candidates",
        report.wall,
        report.exit_value,
        report.chosen,
        report.candidates.len()
    );
    Run { report, _dir: dir }
}

/// Physical addresses of the non-VGA option ROMs SeaBIOS ran, in order, from its
/// "Running option rom at SEG:0003" lines after "Scan for option roms".
fn seabios_rom_runs(log: &str) -> Vec<u32> {
    log.lines()
        .skip_while(|l| !l.contains("Scan for option roms"))
        .filter_map(|l| l.split("Running option rom at ").nth(1))
        .filter_map(|rest| {
            let (seg, off) = rest.trim().split_once(':')?;
            let seg = u32::from_str_radix(seg, 16).ok()?;
            let off = u32::from_str_radix(off.get(..4)?, 16).ok()?;
            (seg * 16 + off).checked_sub(3)
        })
        .collect()
}

/// The common assertions for a GPL ROM whose Init succeeds.
fn assert_activated(rom: &TestRom, r: &ProbeReport, opts: &ProbeOptions) {
    r.check().unwrap();
    assert_eq!(r.end, Some(EndStatus::Complete));
    let base = r.chosen.expect("no ROM accepted");
    assert_eq!(base % vmi_abi::consts::SCAN_STRIDE, 0);
    assert!((vmi_abi::consts::SCAN_START..vmi_abi::consts::SCAN_END).contains(&base));
    // genroms are placed in reverse alphabetical order: "vmi.rom" is the first one SeaBIOS
    // copies and runs (the others are QEMU's multiboot_dma.bin and kvmvapic.bin).
    let runs = seabios_rom_runs(&r.seabios_log);
    assert_eq!(
        runs.first(),
        Some(&base),
        "guest found the ROM at {base:#x}, SeaBIOS ran option ROMs at {runs:#x?}"
    );
    let acc = r.accepted().unwrap();
    assert_eq!(acc.base, base);
    assert_eq!(acc.license_str().as_deref(), Some("GPL v2"));
    assert!(!acc.unknown_manufacturer);
    assert_eq!(usize::from(acc.rom_length) * 512, rom.bytes.len());
    // Everything before it was rejected, nothing after it looked at.
    assert!(r.candidates.iter().all(|c| c.base <= base));
    assert_eq!(r.candidates.last().unwrap().base, base);

    let init = r.init.as_ref().unwrap();
    assert_eq!(init.eax, vmi_abi::consts::INIT_SUCCESS);
    assert!(init.clobbered.is_empty(), "{:?}", init.clobbered);
    assert!(init.esp_ok);
    assert_eq!(init.kernel_rpl, 0);
    assert_eq!(init.regs.cs, vmi_abi::consts::LINUX_KERNEL_CS);
    assert_eq!(init.regs.eflags & 0x600, 0, "IF or DF set after Init");

    // The guest read and called the ROM through the kernel linear map.
    let linear = if opts.paging { opts.page_offset } else { 0 };
    assert_eq!(r.linear_offset, linear);
    assert_eq!(r.linear_base(), Some(linear + base));
    assert_eq!(r.relocations.len(), opts.calls.len());
    for (a, n) in r.relocations.iter().zip(&opts.calls) {
        assert_eq!(a.call, *n);
        assert!(a.esp_ok, "call {n}");
        // EBX, ESI, EDI, EBP survive; ECX is the C scratch register the ROM uses.
        let survived: Vec<_> = a
            .changed
            .iter()
            .filter(|r| **r != vmi_abi::calls::Reg::Ecx)
            .collect();
        assert!(survived.is_empty(), "call {n}: {:?}", a.changed);
        match *n {
            CALL_REL_CALL => {
                assert_eq!(a.kind, Some(RelocType::CallRel));
                assert_eq!(a.eip, linear + base + rom.impl17);
                assert_eq!(a.image_offset, Some(rom.impl17));
            }
            NOP_CALL => {
                assert_eq!(a.kind, Some(RelocType::Nop));
                assert_eq!(a.eip, 0);
            }
            _ => assert_eq!((a.eip, a.edx), (0, 0), "call {n}"),
        }
    }
}

#[test]
fn finds_and_activates_the_rom_at_c0000_without_vga() {
    let rom = build_rom("GPL v2", InitKind::Success);
    let opts = ProbeOptions::default();
    let r = run(&rom, &opts).report;
    assert_activated(&rom, &r, &opts);
    assert_eq!(r.chosen, Some(0xC_0000));
}

#[test]
fn finds_the_rom_above_the_vga_bios() {
    let rom = build_rom("GPL v2", InitKind::Success);
    let opts = ProbeOptions {
        extra_args: vec!["-vga".into(), "std".into()],
        ..ProbeOptions::default()
    };
    let r = run(&rom, &opts).report;
    assert_activated(&rom, &r, &opts);
    let base = r.chosen.unwrap();
    assert!(base > 0xC_0000, "{base:#x}");
    // The VGA BIOS at 0xC0000 was looked at and skipped: 55AA but no "cVmi".
    let vga = &r.candidates[0];
    assert_eq!((vga.base, vga.outcome), (0xC_0000, Outcome::NotVmi));
    assert_eq!(vga.license, None);
}

#[test]
fn other_page_offsets_and_no_paging() {
    // "GPL" is the other accepted license.
    let rom = build_rom("GPL", InitKind::Success);
    for (page_offset, paging) in [
        (0x8000_0000, true),
        (0x4000_0000, true),
        (0xC000_0000, false),
    ] {
        let opts = ProbeOptions {
            page_offset,
            paging,
            ..ProbeOptions::default()
        };
        let r = run(&rom, &opts).report;
        let acc = r.accepted().unwrap();
        assert_eq!(acc.license_str().as_deref(), Some("GPL"));
        // assert_activated checks the license text of "GPL v2" ROMs; check the rest here.
        r.check().unwrap();
        assert_eq!(r.chosen, Some(0xC_0000));
        assert_eq!(r.linear_offset, if paging { page_offset } else { 0 });
        // Guest-reported: it read the ROM at PAGE_OFFSET + base (base without paging).
        assert_eq!(r.linear_base(), Some(r.linear_offset + 0xC_0000));
        let init = r.init.as_ref().unwrap();
        assert_eq!((init.eax, init.esp_ok), (0, true));
        assert!(init.clobbered.is_empty());
        let a = r.reloc(CALL_REL_CALL).unwrap();
        assert_eq!(a.kind, Some(RelocType::CallRel));
        assert_eq!(a.eip, r.linear_offset + 0xC_0000 + rom.impl17);
        assert_eq!(a.image_offset, Some(rom.impl17));
        assert_eq!(r.reloc(NOP_CALL).unwrap().kind, Some(RelocType::Nop));
        assert_eq!(r.reloc(80).unwrap().kind, Some(RelocType::None));
        assert_eq!(r.relocations.len(), 81);
    }
}

#[test]
fn non_gpl_license_is_rejected() {
    let rom = build_rom("Proprietary", InitKind::Success);
    let r = run(&rom, &ProbeOptions::default()).report;
    r.check().unwrap();
    assert_eq!(r.chosen, None);
    assert_eq!(r.end, Some(EndStatus::NoRom));
    assert!(r.init.is_none() && r.relocations.is_empty());
    // QEMU's own ROMs (multiboot_dma.bin, kvmvapic.bin) are 55AA candidates without "cVmi".
    let c: Vec<_> = r
        .candidates
        .iter()
        .filter(|c| c.outcome != Outcome::NotVmi)
        .collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].outcome, Outcome::NonGplLicense);
    assert_eq!(c[0].license_str().as_deref(), Some("Proprietary"));
    assert!(r.candidates.iter().all(|c| c.outcome != Outcome::Accepted));
    // The scan went on past the rejected ROM (QEMU's own ROMs follow it).
    assert!(r.candidates.len() > 1, "{:#x?}", r.candidates);
}

/// Patches a header field of a finished image and fixes its checksum.
fn patch(rom: &mut TestRom, field: &vmi_abi::layout::Field, value: u64) {
    field.write(&mut rom.bytes, value).unwrap();
    fix_checksum(rom);
}

/// Overwrites bytes of a finished image and fixes its checksum.
fn patch_bytes(rom: &mut TestRom, at: usize, bytes: &[u8]) {
    rom.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    fix_checksum(rom);
}

/// Makes the last byte (the builder's checksum byte) bring the sum back to 0.
fn fix_checksum(rom: &mut TestRom) {
    let last = rom.bytes.len() - 1;
    rom.bytes[last] = 0;
    let sum = rom.bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    rom.bytes[last] = 0u8.wrapping_sub(sum);
}

#[test]
fn rejections_follow_linux_checks_in_order() {
    use vmi_abi::layout::vrom;
    let cases: [(&vmi_abi::layout::Field, u64, Outcome); 3] = [
        (&vrom::API_VERSION_MAJ, 2, Outcome::VersionMismatch),
        (&vrom::PCI_HEADER_OFFS, 0, Outcome::NoPciHeader),
        (&vrom::LICENSE_OFFS, 0, Outcome::NonGplLicense),
    ];
    for (field, value, outcome) in cases {
        let mut rom = build_rom("GPL v2", InitKind::Success);
        patch(&mut rom, field, value);
        let r = run(&rom, &ProbeOptions::default()).report;
        assert_eq!(r.chosen, None, "{}", field.name);
        assert_eq!(r.end, Some(EndStatus::NoRom));
        let c = &r.candidates[0];
        assert_eq!((c.base, c.outcome), (0xC_0000, outcome), "{}", field.name);
        if field.name == "license_offs" {
            assert!(c.license_unspecified);
            assert_eq!(
                c.license_str().as_deref(),
                Some(vmi_abi::consts::LICENSE_UNSPECIFIED)
            );
        }
    }
    // A minor version other than 0 and unknown PCI ids are accepted (the latter with a warning).
    let mut rom = build_rom("GPL v2", InitKind::Success);
    patch(&mut rom, &vrom::API_VERSION_MIN, 0xFF);
    let vendor = common::PCIR_AT + vmi_abi::layout::pci::VENDOR_ID.offset;
    patch_bytes(&mut rom, vendor, &0x8086u16.to_le_bytes());
    let r = run(
        &rom,
        &ProbeOptions {
            calls: vec![17],
            ..ProbeOptions::default()
        },
    )
    .report;
    let acc = r.accepted().unwrap();
    assert_eq!((acc.api_minor, acc.vendor_id), (0xFF, 0x8086));
    assert!(acc.unknown_manufacturer);
    assert_eq!(r.end, Some(EndStatus::Complete));
}

#[test]
fn ud2_in_init_is_reported_and_the_run_ends_cleanly() {
    let rom = build_rom("GPL v2", InitKind::Ud2);
    let r = run(&rom, &ProbeOptions::default()).report;
    let e = r.exception.expect("no exception record");
    let base = r.chosen.unwrap();
    assert_eq!((e.vector, e.step, e.error_code), (6, StepId::Init, 0));
    assert_eq!(e.eip, 0xC000_0000 + base + rom.init);
    assert_eq!(r.image_offset(e.eip), Some(rom.init));
    assert_eq!(e.cs, vmi_abi::consts::LINUX_KERNEL_CS);
    // The ROM was entered by a near call from the kernel stack top: [esp] = return address.
    assert_eq!(e.esp, 0xC000_0000 + 0x0019_0000 - 4);
    assert_eq!(r.exit_value, Some(EXIT_EXCEPTION_BASE | 6));
    assert!(r.end.is_none() && r.init.is_none() && r.relocations.is_empty());
    let err = r.check().unwrap_err();
    assert!(matches!(
        err,
        HarnessError::GuestException {
            vector: 6,
            step: StepId::Init,
            ..
        }
    ));
    let msg = err.to_string();
    for part in [
        "#UD",
        "vector 6",
        "step Init",
        &format!("ROM offset {:#x}", rom.init),
    ] {
        assert!(msg.contains(part), "{msg}");
    }
}

#[test]
fn stray_interrupt_is_reported() {
    let rom = build_rom("GPL v2", InitKind::StrayInt);
    let r = run(
        &rom,
        &ProbeOptions {
            paging: false,
            ..ProbeOptions::default()
        },
    )
    .report;
    let e = r.exception.expect("no exception record");
    assert_eq!((e.vector, e.step), (0x30, StepId::Init));
    // `int n` pushes the address of the next instruction (2 bytes on).
    assert_eq!(r.image_offset(e.eip), Some(rom.init + 2));
    assert_eq!(r.exit_value, Some(vmi_harness::protocol::EXIT_INTERRUPT));
}

#[test]
fn a_hanging_init_is_a_timeout_naming_the_step() {
    let mut rom = build_rom("GPL v2", InitKind::Success);
    // Init: `jmp $`.
    let init = rom.init as usize;
    patch_bytes(&mut rom, init, &[0xEB, 0xFE]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmi.rom");
    std::fs::write(&path, &rom.bytes).unwrap();
    let opts = ProbeOptions {
        timeout: std::time::Duration::from_millis(1500),
        ..ProbeOptions::default()
    };
    match probe(&path, &opts) {
        Err(HarnessError::Timeout { step, .. }) => assert_eq!(step, StepId::Init),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
