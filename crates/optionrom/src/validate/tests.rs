//! The profiles' unit tests from before the rules became named items (issue 13), unchanged:
//! whole-profile verdicts on valid and broken images, rule order, messages and offsets.

use super::*;
use crate::build::Finish;
use crate::bytes::checksum;
use crate::efi::EFI_SIGNATURE;
use crate::parse;
use crate::pcir::CodeType;
use crate::vmi::{VmiHeaderSpec, write_header};
use crate::{ImageBuilder, pcir::Pcir, pnp::PnpHeader};
use vmi_abi::consts;

/// A valid VMI ROM: PCIR at 0x20 (15AD:0801, code revision 1.2), $PnP at 0x40 with
/// manufacturer and product strings, 32-bit Init and GetRelocationInfo code.
fn vmi_rom_with(spec: &VmiHeaderSpec) -> Vec<u8> {
    let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
    let mut p = Pcir::new(
        consts::PCI_VENDOR_VMWARE,
        consts::PCI_DEVICE_VMI,
        0x05_80_00,
    );
    p.code_revision = 0x0102;
    b.set_pcir(Some(0x20), p).unwrap();
    let m = b.add_string("VMware").unwrap();
    let n = b.add_string("VMI ROM").unwrap();
    b.add_pnp(Some(0x40), PnpHeader::new(m, n, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, spec, init, reloc).unwrap();
    b.finish(&Finish::default()).unwrap()
}

fn vmi_rom() -> Vec<u8> {
    vmi_rom_with(&VmiHeaderSpec::default())
}

/// Makes the image sum to 0 again by adjusting its last byte.
fn resum(d: &mut [u8]) {
    let len = usize::from(d[2]) * 512;
    d[len - 1] = 0;
    d[len - 1] = 0u8.wrapping_sub(checksum(&d[..len]));
}

fn run(d: &[u8], p: Profile) -> Vec<Finding> {
    let f = validate(d, &parse(d), p);
    for x in &f {
        assert!(x.offset.is_none_or(|o| o < d.len()), "{x:?}");
        assert_eq!(x.profile, p.name());
    }
    f
}

fn get<'a>(f: &'a [Finding], rule: &str) -> &'a Finding {
    f.iter()
        .find(|x| x.rule == rule)
        .unwrap_or_else(|| panic!("no finding {rule} in {f:#?}"))
}

fn sev(f: &[Finding], rule: &str) -> Severity {
    get(f, rule).severity
}

fn rules(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|x| x.rule).collect()
}

/// Rules that are not `Pass`, with their severity.
fn non_pass(f: &[Finding]) -> Vec<(&'static str, Severity)> {
    f.iter()
        .filter(|x| x.severity != Severity::Pass)
        .map(|x| (x.rule, x.severity))
        .collect()
}

#[test]
fn valid_vmi_rom_passes_every_rule_of_linux_vmi() {
    let d = vmi_rom();
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(
        rules(&f),
        [
            "scope",
            "signature",
            "vmi-signature",
            "api-version",
            "pci-header",
            "pci-ids",
            "pnp-strings",
            "found-line",
            "license",
            "header-length",
            "init-slot",
            "get-reloc-slot",
            "scan-window",
            "virtual-top",
            "checksum"
        ]
    );
    assert_eq!(non_pass(&f), []);
    assert_eq!(
        get(&f, "found-line").message,
        "Linux prints: `VMI: Found VMware VMI ROM, API version 3.0, ROM version 1.2`"
    );
    assert_eq!(get(&f, "pci-ids").offset, Some(0x24));
    assert_eq!(get(&f, "init-slot").offset, Some(0x80));
    assert!(get(&f, "init-slot").message.contains("jumps to 0x"));
    assert_eq!(get(&f, "checksum").offset, Some(d.len() - 1));
}

#[test]
fn valid_vmi_rom_passes_seabios_and_pci() {
    let d = vmi_rom();
    let f = run(&d, Profile::Seabios);
    assert_eq!(
        rules(&f),
        [
            "signature",
            "size",
            "length",
            "checksum",
            "pcir-alignment",
            "pnp",
            "init-entry",
            "placement",
            "images",
            "size-reread"
        ]
    );
    assert_eq!(non_pass(&f), []);
    assert!(
        get(&f, "pnp")
            .message
            .contains("far-called during the option-ROM scan")
    );
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), []);
    for r in [
        "pcir-signature",
        "pcir-length",
        "image-length",
        "last-image",
        "device-list",
        "config-utility",
        "dmtf-clp",
        "checksum",
        "pnp-signature",
        "pnp-revision",
        "pnp-length",
        "pnp-checksum",
        "pnp-next",
        "pnp-strings",
        "chain-end",
        "trailing-bytes",
    ] {
        assert_eq!(sev(&f, r), Severity::Pass, "{r}");
    }
    assert!(get(&f, "checksum").message.starts_with("image 0 at 0x0: "));
}

#[test]
fn non_roms_get_one_failing_signature_finding_in_every_profile() {
    for (d, off, text) in [
        (&[][..], None, "the file is empty"),
        (&[0x55, 0xAA][..], Some(0), "the file is 2 byte(s) (55 AA)"),
        (
            &b"\x7fELF"[..],
            Some(0),
            "bytes at 0x0 are 7F 45, expected 55 AA",
        ),
    ] {
        for p in Profile::ALL {
            let f = run(d, p);
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(
                (f[0].rule, f[0].severity, f[0].offset),
                ("signature", Severity::Fail, off)
            );
            assert!(f[0].message.starts_with(text), "{}", f[0].message);
        }
    }
}

#[test]
fn api_major_must_be_3_and_any_minor_passes() {
    let d = vmi_rom_with(&VmiHeaderSpec {
        api_major: 2,
        api_minor: 7,
        ..VmiHeaderSpec::default()
    });
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("api-version", Severity::Fail)]);
    let a = get(&f, "api-version");
    assert_eq!(a.offset, Some(0xD));
    assert!(
        a.message
            .starts_with("`VMI: Found mismatched rom version 2.7`")
    );
    assert_eq!(
        get(&f, "found-line").message,
        "Linux prints no `VMI: Found` line: it already rejected the ROM at rule `api-version`"
    );
    let d = vmi_rom_with(&VmiHeaderSpec {
        api_minor: 255,
        ..VmiHeaderSpec::default()
    });
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), []);
    assert!(
        get(&f, "api-version")
            .message
            .contains("every minor passes")
    );
}

#[test]
fn license_rules_use_the_linux_messages() {
    let d = vmi_rom_with(&VmiHeaderSpec {
        license: "MIT".into(),
        ..VmiHeaderSpec::default()
    });
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("license", Severity::Fail)]);
    assert!(
        get(&f, "license")
            .message
            .starts_with("``VMI: Non GPL license `MIT' found for ROM. Not used.``")
    );
    // "GPL" (exact) passes, "GPLv2" does not.
    for (lic, want) in [("GPL", Severity::Pass), ("GPLv2", Severity::Fail)] {
        let d = vmi_rom_with(&VmiHeaderSpec {
            license: lic.into(),
            ..VmiHeaderSpec::default()
        });
        assert_eq!(sev(&run(&d, Profile::LinuxVmi), "license"), want, "{lic}");
    }
    let mut d = vmi_rom();
    d[0x16] = 0;
    d[0x17] = 0;
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("license", Severity::Fail)]);
    let l = get(&f, "license");
    assert_eq!(l.offset, Some(0x16));
    assert!(
        l.message
            .contains("``VMI: Non GPL license `unspecified' found for ROM. Not used.``")
    );
    // The Found line is still printed: Linux prints it before the license decision.
    assert!(
        get(&f, "found-line")
            .message
            .starts_with("Linux prints: `VMI: Found VMware")
    );
}

#[test]
fn pci_header_rules() {
    let mut d = vmi_rom();
    d[0x18] = 0;
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    let p = get(&f, "pci-header");
    assert_eq!((p.severity, p.offset), (Severity::Fail, Some(0x18)));
    assert!(
        p.message
            .starts_with("`VMI: ROM does not contain PCI header.`")
    );
    assert_eq!(sev(&f, "pci-ids"), Severity::Warn);
    // Pointing past the image.
    let mut d = vmi_rom();
    d[0x18..0x1A].copy_from_slice(&0x1F0u16.to_le_bytes());
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(sev(&f, "pci-header"), Severity::Fail);
    assert!(get(&f, "pci-header").message.contains("would end at 0x208"));
    // Wrong ids only warn.
    let mut d = vmi_rom();
    d[0x24] = 0xEC;
    d[0x25] = 0x10;
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("pci-ids", Severity::Warn)]);
    assert!(get(&f, "pci-ids").message.starts_with("`VMI: ROM from unknown manufacturer`: PCI vendor:device at 0x24 is 10EC:0801, expected 15AD:0801"));
}

#[test]
fn missing_cvmi_and_pnp_strings() {
    let mut d = vmi_rom();
    d[8] = b'x';
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("vmi-signature", Severity::Fail)]);
    assert!(
        get(&f, "vmi-signature")
            .message
            .starts_with("found 78 56 6D 69 at 0x8")
    );
    // Manufacturer pointer past the image: warn.
    let mut d = vmi_rom();
    d[0x4E..0x50].copy_from_slice(&0x7000u16.to_le_bytes());
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("pnp-strings", Severity::Warn)]);
    assert_eq!(get(&f, "pnp-strings").offset, Some(0x4E));
    assert!(
        get(&f, "found-line")
            .message
            .contains("Found <unreadable> VMI ROM")
    );
    // The pci profile fails the same pointer (and the $PnP checksum it broke).
    let f = run(&d, Profile::Pci);
    assert_eq!(
        non_pass(&f),
        [
            ("pnp-checksum", Severity::Fail),
            ("pnp-strings", Severity::Fail)
        ]
    );
    // No $PnP header: UNKNOWN UNKNOWN for Linux, a warning for SeaBIOS.
    let mut d = vmi_rom();
    d[0x1A] = 0;
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), []);
    assert!(
        get(&f, "found-line")
            .message
            .contains("Found UNKNOWN UNKNOWN, API")
    );
    let f = run(&d, Profile::Seabios);
    assert_eq!(non_pass(&f), [("pnp", Severity::Warn)]);
    assert!(get(&f, "pnp").message.contains(
        "registers the ROM as a boot-connection vector; init runs only when booting from it"
    ));
}

#[test]
fn entry_slots() {
    let mut d = vmi_rom();
    d[0x80..0x88].fill(0);
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("init-slot", Severity::Fail)]);
    // jmp rel32 far past the end.
    let mut d = vmi_rom();
    d[0x89..0x8D].copy_from_slice(&0x1000i32.to_le_bytes());
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("get-reloc-slot", Severity::Fail)]);
    assert!(
        get(&f, "get-reloc-slot")
            .message
            .contains("jumps to 0x108d, outside the image (0x200 bytes)")
    );
    // Code in place (xor eax,eax; ret) passes.
    let mut d = vmi_rom();
    d[0x80..0x88].copy_from_slice(&[0x31, 0xC0, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]);
    resum(&mut d);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), []);
    assert!(
        get(&f, "init-slot")
            .message
            .contains("31 C0 C3 CC CC CC CC CC: not a near jmp")
    );
}

#[test]
fn virtual_top_warns() {
    let d = vmi_rom_with(&VmiHeaderSpec {
        virtual_top: 0xFFC0_0100,
        ..VmiHeaderSpec::default()
    });
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("virtual-top", Severity::Warn)]);
    let m = &get(&f, "virtual-top").message;
    assert!(m.contains("[0xffc00100, 4 GiB)"), "{m}");
    assert!(m.contains("CONFIG_COMPAT_VDSO"));
    assert!(m.contains("not 4 KiB aligned"));
    let d = vmi_rom_with(&VmiHeaderSpec {
        virtual_top: 0xFC00_0000,
        ..VmiHeaderSpec::default()
    });
    let f = run(&d, Profile::LinuxVmi);
    let m = &get(&f, "virtual-top").message;
    assert!(!m.contains("aligned") && m.contains("(65536 KiB)"), "{m}");
}

#[test]
fn checksum_is_a_linux_warning_and_a_seabios_failure() {
    let mut d = vmi_rom();
    let last = d.len() - 1;
    d[last] = d[last].wrapping_add(1);
    let f = run(&d, Profile::LinuxVmi);
    assert_eq!(non_pass(&f), [("checksum", Severity::Warn)]);
    let f = run(&d, Profile::Seabios);
    assert_eq!(non_pass(&f), [("checksum", Severity::Fail)]);
    let c = get(&f, "checksum");
    assert_eq!(c.offset, Some(last));
    assert!(c.message.contains(
        "sum to 0x01, expected 0: SeaBIOS logs 'Found option rom with bad checksum' and drops it"
    ));
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), [("checksum", Severity::Fail)]);
}

#[test]
fn seabios_size_truncation_and_init_entry() {
    let mut d = vmi_rom();
    d[2] = 0;
    let f = run(&d, Profile::Seabios);
    assert_eq!(non_pass(&f), [("size", Severity::Fail)]);
    assert!(!rules(&f).contains(&"checksum"));
    // Truncated: SeaBIOS reads the rest as memory; sum of the present bytes decides.
    let d = vmi_rom();
    let f = run(&d[..300], Profile::Seabios);
    assert_eq!(
        non_pass(&f),
        [("length", Severity::Warn), ("checksum", Severity::Fail)]
    );
    let f = run(&d[..300], Profile::Pci);
    assert_eq!(sev(&f, "image-complete"), Severity::Fail);
    // Zero init entry.
    let mut d = vmi_rom();
    d[3..7].fill(0);
    resum(&mut d);
    let f = run(&d, Profile::Seabios);
    assert_eq!(non_pass(&f), [("init-entry", Severity::Fail)]);
    // jmp rel16 past the end of a 512-byte image.
    d[3..6].copy_from_slice(&[0xE9, 0x00, 0x04]);
    resum(&mut d);
    let f = run(&d, Profile::Seabios);
    assert_eq!(non_pass(&f), [("init-entry", Severity::Fail)]);
    assert!(get(&f, "init-entry").message.contains("jumps to 0x406"));
    // Unaligned PCIR.
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0; 2], 1);
    let mut img = b.finish(&Finish::default()).unwrap();
    img[0x18] = 0x22;
    img[0x22..0x3A].copy_from_slice(&Pcir::new(1, 2, 3).to_bytes()[..0x18]);
    resum(&mut img);
    assert_eq!(
        sev(&run(&img, Profile::Seabios), "pcir-alignment"),
        Severity::Warn
    );
}

/// A file cut short whose present bytes still sum to 0: Linux does not care, but SeaBIOS
/// accepts it and runs bytes that are not in the file (issue 12: 4 × 512 bytes cut to 700).
#[test]
fn seabios_fails_a_cut_file_whose_present_bytes_sum_to_0() {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0xCB], 1);
    let whole = b
        .finish(&Finish {
            min_len: 4 * 512,
            ..Finish::default()
        })
        .unwrap();
    assert_eq!(whole[2], 4);
    let mut cut = whole[..700].to_vec();
    cut[699] = 0;
    cut[699] = 0u8.wrapping_sub(checksum(&cut));
    let f = run(&cut, Profile::Seabios);
    assert_eq!(
        non_pass(&f),
        [
            ("length", Severity::Warn),
            ("checksum", Severity::Warn),
            ("missing-bytes", Severity::Fail),
            ("pnp", Severity::Warn)
        ]
    );
    assert_eq!(worst(&f), Severity::Fail);
    let m = get(&f, "missing-bytes");
    assert_eq!(m.offset, Some(2));
    assert_eq!(
        m.message,
        "the size byte at 0x2 declares 0x800 bytes but the file ends at 0x2bc: the bytes \
         0x2bc..0x800 that SeaBIOS checksums, keeps and runs are not in the file; the present \
         bytes sum to 0, so SeaBIOS accepts the ROM and what it loads depends on memory the \
         file does not control; expected all 0x800 bytes in the file, or a size byte of 2 \
         (0x400 bytes) declaring what it holds"
    );
    // The rule follows `checksum` and is absent for the whole file.
    let r = rules(&f);
    let at = r.iter().position(|x| *x == "missing-bytes").unwrap();
    assert_eq!(r[at - 1], "checksum");
    assert!(!rules(&run(&whole, Profile::Seabios)).contains(&"missing-bytes"));
    // An init entry that jumps into the missing bytes is named.
    let mut far = whole.clone();
    far[3..6].copy_from_slice(&[0xE9, 0x00, 0x04]);
    let mut cut = far[..700].to_vec();
    cut[699] = 0;
    cut[699] = 0u8.wrapping_sub(checksum(&cut));
    let f = run(&cut, Profile::Seabios);
    assert!(
        get(&f, "missing-bytes")
            .message
            .contains("(the init entry at 0x3 jumps to 0x406, into the missing bytes)"),
        "{f:#?}"
    );
    // Linux never sums the image: only its checksum warning.
    let mut vmi = vmi_rom();
    assert_eq!(vmi.len(), 512);
    vmi.resize(4 * 512, 0);
    vmi[2] = 4;
    let mut cut = vmi[..0x1FF].to_vec();
    cut[0x1FE] = 0;
    cut[0x1FE] = 0u8.wrapping_sub(checksum(&cut));
    assert_eq!(
        non_pass(&run(&cut, Profile::LinuxVmi)),
        [("checksum", Severity::Warn)]
    );
    assert_eq!(
        sev(&run(&cut, Profile::Seabios), "missing-bytes"),
        Severity::Fail
    );
}

#[test]
fn seabios_placement_limits() {
    // 100 KiB: fits the window but not after a 39 KiB VGA ROM.
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0x90; 100 * 1024 - 0x40], 1);
    let d = b.finish(&Finish::default()).unwrap();
    assert_eq!(d.len(), 100 * 1024);
    let f = run(&d, Profile::Seabios);
    assert_eq!(
        non_pass(&f),
        [("pnp", Severity::Warn), ("placement", Severity::Warn)]
    );
    assert!(get(&f, "placement").message.contains("lands at 0xca000"));
    // A 129 KiB file cannot be below 0xE0000 at all.
    let mut big = d.clone();
    big.resize(129 * 1024, 0);
    let f = run(&big, Profile::Seabios);
    assert_eq!(sev(&f, "placement"), Severity::Fail);
    assert_eq!(seabios::TYPICAL_START, 0xC_A000);
}

/// Two images: x86 (not last) then EFI (last), as a PCI ROM chain.
fn chain() -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.set_pcir(None, Pcir::new(0x8086, 0x100E, 0x02_00_00))
        .unwrap();
    let mut d = b
        .finish(&Finish {
            last_image: false,
            min_len: 0,
        })
        .unwrap();
    let mut e = vec![0u8; 1024];
    e[0..2].copy_from_slice(&[0x55, 0xAA]);
    e[2] = 2; // initialization size (u16)
    e[4..8].copy_from_slice(&EFI_SIGNATURE.to_le_bytes());
    e[8] = 11; // boot-service driver
    e[0xA..0xC].copy_from_slice(&0x8664u16.to_le_bytes());
    e[0x16] = 0x40; // PE image offset
    e[0x18] = 0x1C; // PCIR pointer
    let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
    p.code_type = CodeType::Efi;
    p.image_length = 2;
    e[0x1C..0x38].copy_from_slice(&p.to_bytes());
    e[0x40..0x42].copy_from_slice(b"MZ");
    d.extend(e);
    d
}

#[test]
fn pci_chain_with_an_efi_image() {
    let d = chain();
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), []);
    assert_eq!(f.iter().filter(|x| x.rule == "last-image").count(), 2);
    let efi: Vec<_> = f.iter().filter(|x| x.rule.starts_with("efi-")).collect();
    assert_eq!(efi.len(), 4);
    assert!(
        efi.iter()
            .all(|x| x.message.starts_with("image 1 at 0x200: "))
    );
    // The EFI image gets no x86 checksum or $PnP rules.
    assert_eq!(f.iter().filter(|x| x.rule == "checksum").count(), 1);
    // linux-vmi and seabios judge image 0 and mention the rest.
    let f = run(&d, Profile::LinuxVmi);
    assert!(
        get(&f, "scope")
            .message
            .contains("1 further image(s) (at 0x200)")
    );
    let f = run(&d, Profile::Seabios);
    assert_eq!(get(&f, "images").offset, Some(0x200));
}

#[test]
fn pci_chain_faults() {
    // Last image without the last-image bit, and bytes after it.
    let mut d = chain();
    d[0x200 + 0x1C + 0x15] = 0;
    let f = run(&d, Profile::Pci);
    assert_eq!(
        non_pass(&f),
        [
            ("last-image", Severity::Fail),
            ("chain-end", Severity::Fail)
        ]
    );
    // Garbage where the second image should be.
    let mut d = chain();
    d[0x200] = 0;
    let f = run(&d, Profile::Pci);
    assert_eq!(
        non_pass(&f),
        [
            ("last-image", Severity::Fail),
            ("chain-end", Severity::Fail),
            ("trailing-bytes", Severity::Warn)
        ]
    );
    assert_eq!(get(&f, "chain-end").offset, Some(0x200));
    // Zero length, not last.
    let mut d = chain();
    d.truncate(512);
    d[2] = 0;
    d[0x20 + 0x10] = 0;
    let f = run(&d, Profile::Pci);
    assert_eq!(sev(&f, "chain-end"), Severity::Fail);
    assert_eq!(sev(&f, "image-length"), Severity::Fail);
    assert!(get(&f, "chain-end").message.contains("length 0"));
    // PCIR length and revision.
    let mut d = vmi_rom();
    d[0x20 + 0x0A] = 0x20;
    d[0x20 + 0x0C] = 2;
    resum(&mut d);
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), [("pcir-revision", Severity::Warn)]);
    d[0x20 + 0x0C] = 0;
    resum(&mut d);
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), [("pcir-length", Severity::Fail)]);
    // Image length disagreeing with the size byte.
    let mut d = vmi_rom();
    d[0x20 + 0x10] = 2;
    resum(&mut d);
    let f = run(&d, Profile::Pci);
    assert_eq!(
        non_pass(&f),
        [
            ("image-complete", Severity::Fail),
            ("image-length", Severity::Fail)
        ]
    );
}

#[test]
fn pci_rev3_pointers_and_pnp_chain() {
    let mut d = vmi_rom();
    // Device list 0x1C after the PCIR (at 0x3C): 0x1234 then no terminator before... give one.
    d[0x20 + 0x08] = 0x1C;
    d[0x3C..0x40].copy_from_slice(&[0x34, 0x12, 0, 0]);
    d[0x20 + 0x18..0x20 + 0x1A].copy_from_slice(&0x0300u16.to_le_bytes());
    resum(&mut d);
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), [("config-utility", Severity::Fail)]);
    assert!(
        get(&f, "device-list")
            .message
            .contains("1 id(s), 0-terminated")
    );
    // A device list without a terminator among its first 256 ids (bounded scan).
    let mut b = ImageBuilder::new(0x20).unwrap();
    let mut p = Pcir::new(1, 2, 3);
    p.device_list_ptr = 0x1C;
    b.set_pcir(None, p).unwrap();
    b.append(&[0x41; 600], 1);
    let img = b.finish(&Finish::default()).unwrap();
    let f = run(&img, Profile::Pci);
    assert_eq!(non_pass(&f), [("device-list", Severity::Fail)]);
    assert!(
        get(&f, "device-list")
            .message
            .ends_with("no 0 terminator within its first 256 ids")
    );
    // $PnP next pointer looping to itself.
    let mut d = vmi_rom();
    d[0x46] = 0x40;
    d[0x49] = d[0x49].wrapping_sub(0x40);
    resum(&mut d);
    let f = run(&d, Profile::Pci);
    assert_eq!(non_pass(&f), [("pnp-next", Severity::Fail)]);
    assert!(get(&f, "pnp-next").message.contains("loops back"));
}

#[test]
fn offsets_stay_inside_odd_inputs() {
    let d = vmi_rom();
    // Cut inside the VMI header: every profile fails (the truncated image no longer sums
    // to 0, and Linux misses header fields or entry slots).
    for cut in [3, 7, 8, 0x10, 0x1C, 0x22, 0x3C, 0x45, 0x81, 0x8A] {
        for p in Profile::ALL {
            let f = run(&d[..cut], p);
            assert_eq!(worst(&f), Severity::Fail, "{cut} {p:?}: {f:#?}");
        }
    }
    // Only the checksum byte missing: Linux does not care, SeaBIOS and PCI do.
    let cut = &d[..0x1FF];
    assert_eq!(
        non_pass(&run(cut, Profile::LinuxVmi)),
        [("checksum", Severity::Warn)]
    );
    assert_eq!(
        non_pass(&run(cut, Profile::Seabios)),
        [("length", Severity::Warn), ("checksum", Severity::Fail)]
    );
    assert_eq!(
        non_pass(&run(cut, Profile::Pci)),
        [
            ("image-complete", Severity::Fail),
            ("checksum", Severity::Fail)
        ]
    );
}
