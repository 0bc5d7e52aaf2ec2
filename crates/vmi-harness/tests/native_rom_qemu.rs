//! The generated `native` ROM under QEMU/SeaBIOS (TCG): SeaBIOS accepts and initialises it, and
//! the test guest finds it exactly as Linux does, activates it, and gets GetRelocationInfo
//! answers for 0–80 that match the image's own table — at every 2 KiB placement, under several
//! PAGE_OFFSETs and with paging off. (Running without any BIOS is the KVM runner's job: SeaBIOS
//! always calls the 16-bit init, during its scan or, without `$PnP`, as a boot-connection vector.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsString;
use vmi_harness::probe::{ProbeOptions, ProbeReport, probe};
use vmi_harness::protocol::{EndStatus, Outcome};
use vmi_rom::generate::{BuildOptions, Generated, generate};
use vmi_rom::native::Native;

fn native() -> Generated {
    generate(&Native, &BuildOptions::default()).unwrap()
}

fn run(image: &[u8], opts: &ProbeOptions) -> ProbeReport {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmi.rom");
    std::fs::write(&path, image).unwrap();
    let r = probe(&path, opts).unwrap();
    r.check().unwrap();
    r
}

/// The segment of the first "Running option rom at SEG:0003" line after the option-ROM scan.
fn seabios_ran_init_at(log: &str) -> Option<u32> {
    let scan = log.find("Scan for option roms")?;
    let line = log[scan..]
        .lines()
        .find(|l| l.starts_with("Running option rom at "))?;
    let seg = line
        .trim_start_matches("Running option rom at ")
        .split(':')
        .next()?;
    u32::from_str_radix(seg, 16).ok().map(|s| s << 4)
}

fn assert_activated(r: &ProbeReport) {
    assert_eq!(r.end, Some(EndStatus::Complete));
    let init = r.init.as_ref().unwrap();
    assert_eq!(init.eax, 0, "Init failed");
    assert!(init.clobbered.is_empty() && init.esp_ok, "{init:?}");
    assert_eq!(init.kernel_rpl, 0);
}

#[test]
fn seabios_loads_it_and_the_guest_finds_and_activates_it() {
    let g = native();
    let r = run(&g.image, &ProbeOptions::default());
    let base = r.chosen.unwrap();
    assert_eq!(base % 2048, 0);
    assert!((0xC_0000..0xE_0000).contains(&base));
    assert_eq!(
        seabios_ran_init_at(&r.seabios_log),
        Some(base),
        "{}",
        r.seabios_log
    );
    assert!(!r.seabios_log.contains("bad checksum"));
    assert_eq!(r.accepted().unwrap().outcome, Outcome::Accepted);
    assert_activated(&r);
    common::assert_answers_match(&g, &r);
}

#[test]
fn works_above_the_vga_bios_and_under_other_page_offsets() {
    let g = native();
    let vga = ProbeOptions {
        extra_args: vec![OsString::from("-vga"), OsString::from("std")],
        ..ProbeOptions::default()
    };
    let r = run(&g.image, &vga);
    assert!(r.chosen.unwrap() > 0xC_0000, "{:x?}", r.chosen);
    assert_activated(&r);
    common::assert_answers_match(&g, &r);
    for page_offset in [0x8000_0000, 0x4000_0000] {
        let r = run(
            &g.image,
            &ProbeOptions {
                page_offset,
                ..ProbeOptions::default()
            },
        );
        assert_eq!(r.linear_base(), Some(page_offset + r.chosen.unwrap()));
        assert_activated(&r);
        common::assert_answers_match(&g, &r);
    }
    let flat = run(
        &g.image,
        &ProbeOptions {
            paging: false,
            ..ProbeOptions::default()
        },
    );
    assert_eq!(flat.linear_base(), flat.chosen);
    assert_activated(&flat);
    common::assert_answers_match(&g, &flat);
}
