//! Helpers shared by vmi-harness's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use optionrom::ImageBuilder;
use optionrom::pcir::Pcir;
use optionrom::pnp::PnpHeader;
use std::path::PathBuf;
use vmi_abi::calls::{NUM_CALLS, Reg, RelocType};
use vmi_harness::probe::ProbeReport;
use vmi_harness::suite::{SuiteOptions, SuiteReport, run_suite};
use vmi_rom::generate::Generated;

/// Where hand-built test ROMs put their PCI data structure.
pub const PCIR_AT: usize = 0x20;
/// Where hand-built test ROMs put their `$PnP` header.
pub const PNP_AT: usize = 0x40;

/// A builder for a hand-made VMI ROM: VMI-sized header, PCIR 15AD:0801 at 0x20, `$PnP` with
/// "vmirom tests" / `product` at 0x40. The caller adds code and `write_header`.
pub fn vmi_builder(product: &str) -> ImageBuilder {
    let mut b = ImageBuilder::new(vmi_abi::consts::HEADER_SIZE).unwrap();
    b.set_pcir(
        Some(PCIR_AT),
        Pcir::new(
            vmi_abi::consts::PCI_VENDOR_VMWARE,
            vmi_abi::consts::PCI_DEVICE_VMI,
            0x05_80_00,
        ),
    )
    .unwrap();
    let maker = b.add_string("vmirom tests").unwrap();
    let product = b.add_string(product).unwrap();
    b.add_pnp(Some(PNP_AT), PnpHeader::new(maker, product, 0x05_80_00))
        .unwrap();
    b
}

/// Writes `image` to `vmi.rom` in a fresh temporary directory (kept alive by the guard).
pub fn rom_file(image: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmi.rom");
    std::fs::write(&path, image).unwrap();
    (dir, path)
}

/// Every GetRelocationInfo answer the guest got agrees with the generator's table, and the
/// call kept its callee-saved registers. Where nothing ran the ROM's 16-bit init (the KVM
/// runner without its BIOS step) the ROM has no private RAM: the calls that need it answer
/// NONE.
pub fn assert_answers_match(g: &Generated, r: &ProbeReport) {
    let base = r.linear_base().unwrap();
    let ram_less = r.engine == vmi_harness::Engine::Kvm
        && !matches!(r.init16, Some(vmi_harness::kvm::Init16::Ran(_)));
    let m = vmi_rom::manifest::Manifest::read(&g.image)
        .unwrap()
        .unwrap();
    let needs_ram: Vec<u8> = m
        .entries(&g.image)
        .iter()
        .filter(|e| e.needs_ram)
        .map(|e| e.call)
        .collect();
    assert_eq!(r.relocations.len(), 81);
    for a in &r.relocations {
        assert!(a.esp_ok, "call {}: ESP not restored", a.call);
        assert!(
            a.changed
                .iter()
                .all(|reg| matches!(reg, Reg::Eax | Reg::Ecx | Reg::Edx)),
            "call {}: GetRelocationInfo changed {:?}",
            a.call,
            a.changed
        );
        match g.calls.get(a.call as usize) {
            Some(c) if ram_less && needs_ram.contains(&c.number) => {
                assert_eq!(
                    (a.eip, a.edx, a.kind),
                    (0, 0, Some(RelocType::None)),
                    "call {} ({}) needs private RAM and there is none",
                    a.call,
                    c.name
                );
            }
            Some(c) => {
                assert_eq!(
                    a.kind,
                    Some(c.answer.reloc()),
                    "call {} ({})",
                    a.call,
                    c.name
                );
                assert_eq!(a.edx, c.answer.reloc() as u32, "call {}: EDX", a.call);
                if c.answer.has_code() {
                    assert_eq!(a.eip, base + c.offset, "call {} ({}) eip", a.call, c.name);
                    assert_eq!(a.image_offset, Some(c.offset));
                } else {
                    assert_eq!(
                        a.eip, 0,
                        "call {} ({}) eip for {:?}",
                        a.call, c.name, c.answer
                    );
                }
            }
            None => {
                assert!(a.call as usize >= NUM_CALLS);
                assert_eq!((a.eip, a.edx, a.kind), (0, 0, Some(RelocType::None)));
            }
        }
    }
}

/// Runs the suite on `image` and logs every verdict to stderr (shown when a test fails).
pub fn suite(image: &[u8], opts: &SuiteOptions) -> SuiteReport {
    let (_dir, path) = rom_file(image);
    let r = run_suite(&path, opts).unwrap();
    eprintln!(
        "suite on {}: {:?} wall, {} runs, passed {}",
        r.engine,
        r.wall,
        r.runs,
        r.passed()
    );
    for c in &r.calls {
        eprintln!(
            "  {:2} {:<18} {:<8} {:?} [{}] {}",
            c.call, c.name, c.reloc, c.verdict, c.checks, c.detail
        );
    }
    for run in &r.run_log {
        eprintln!("  run: {run:?}");
    }
    r
}

pub mod kvm_rom;
pub mod timer_rom;
