//! `vmirom header` output compiles, and its layouts agree with vmi-abi.md as a C compiler and
//! rustc lay them out (offsets below are written from the document, not from the generator).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use vmirom_testkit::toolchain;

fn vmirom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmirom"))
}

#[test]
fn c_header_compiles_with_gcc_m32_and_offsets_match_the_document() {
    if !toolchain::available(&["gcc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let h = dir.path().join("vmi.h");
    let st = vmirom()
        .args(["header", "--lang", "c", "-o"])
        .arg(&h)
        .status()
        .unwrap();
    assert!(st.success());
    let test_c = dir.path().join("t.c");
    std::fs::write(
        &test_c,
        r#"#include "vmi.h"
#define PIN(s, f, o) _Static_assert(offsetof(struct s, f) == (o), #s "." #f)
PIN(vrom_header, rom_signature, 0x00);
PIN(vrom_header, rom_length, 0x02);
PIN(vrom_header, rom_entry, 0x03);
PIN(vrom_header, vrom_signature, 0x08);
PIN(vrom_header, api_version_min, 0x0C);
PIN(vrom_header, api_version_maj, 0x0D);
PIN(vrom_header, jump_slots, 0x0E);
PIN(vrom_header, virtual_top, 0x10);
PIN(vrom_header, license_offs, 0x16);
PIN(vrom_header, pci_header_offs, 0x18);
PIN(vrom_header, pnp_header_offs, 0x1A);
PIN(vrom_header, vmi_init, 0x80);
PIN(vrom_header, get_reloc, 0x88);
_Static_assert(sizeof(struct vrom_header) == 0x90, "vrom_header");
PIN(pci_header, vendorID, 0x04);
PIN(pci_header, deviceID, 0x06);
PIN(pci_header, rom_version_min, 0x12);
PIN(pci_header, rom_version_maj, 0x13);
_Static_assert(sizeof(struct pci_header) == 0x18, "pci_header");
PIN(pnp_header, manufacturer_offset, 0x0E);
PIN(pnp_header, product_offset, 0x10);
PIN(vmi_relocation_info, type, 4);
_Static_assert(sizeof(struct vmi_relocation_info) == 8, "reloc");
PIN(vmi_ap_state, efer, 16);
PIN(vmi_ap_state, eip, 24);
PIN(vmi_ap_state, esp, 48);
PIN(vmi_ap_state, cs, 64);
PIN(vmi_ap_state, gdtr_base, 80);
PIN(vmi_ap_state, idtr_limit, 88);
_Static_assert(sizeof(struct vmi_ap_state) == 92, "ap_state");
_Static_assert(VMI_CALL_CPUID == 0 && VMI_CALL_SetCR3 == 17 && VMI_CALL_IRET == 33, "calls");
_Static_assert(VMI_CALL_SetInitialAPState == 62 && VMI_CALL_SetLazyMode == 73, "calls");
_Static_assert(VMI_SIGNATURE == 0x696D5663 && VMI_RELOCATION_CALL_REL == 1, "consts");
_Static_assert(VMI_PAGE_L1 == 0x41 && VMI_ALARM_WIRED_LVTT == 0x10000, "flags");
"#,
    )
    .unwrap();
    let out = Command::new("gcc")
        .args([
            "-m32",
            "-ffreestanding",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(dir.path())
        .arg(&test_c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rust_module_compiles_and_asserts_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("vmi.rs");
    let st = vmirom()
        .args(["header", "--lang", "rust", "-o"])
        .arg(&m)
        .status()
        .unwrap();
    assert!(st.success());
    let mut src = std::fs::read_to_string(&m).unwrap();
    src.push_str(
        "const _: () = assert!(core::mem::offset_of!(VromHeader, license_offs) == 0x16);\n\
         const _: () = assert!(core::mem::offset_of!(VmiApState, gdtr_base) == 80);\n\
         const _: () = assert!(core::mem::size_of::<VmiApState>() == 92);\n\
         const _: () = assert!(VMI_CALL_SetPxELong == 39);\n",
    );
    std::fs::write(&m, src).unwrap();
    let out = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
            "-o",
        ])
        .arg(dir.path().join("libvmi.rmeta"))
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
