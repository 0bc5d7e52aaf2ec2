//! The bogus ROMs a new user throws at `vmirom check`: each is a valid VMI ROM with one thing
//! broken, and each must fail (or warn) exactly the rule that describes the breakage, in every
//! profile concerned, and nothing else.
// Test helpers outside #[test] functions may unwrap and panic like the tests themselves.
#![allow(clippy::unwrap_used, clippy::panic)]

use optionrom::build::Finish;
use optionrom::bytes::checksum;
use optionrom::pcir::Pcir;
use optionrom::pnp::PnpHeader;
use optionrom::repair::{RepairOptions, repair};
use optionrom::validate::{Finding, Profile, Severity, validate, worst};
use optionrom::vmi::{VmiHeaderSpec, write_header};
use optionrom::{ImageBuilder, parse};
use vmi_abi::consts;

use Severity::{Fail, Warn};

/// PCIR offset in the sample ROM.
const PCIR: usize = 0x20;
/// `$PnP` offset in the sample ROM.
const PNP: usize = 0x40;

/// A valid VMI ROM: header with `cVmi` 3.0, PCIR at 0x20 (15AD:0801, code revision 1.0), `$PnP`
/// at 0x40 with manufacturer and product strings, Init = `xor eax,eax; ret`,
/// GetRelocationInfo = `xor eax,eax; xor edx,edx; ret`.
fn vmi_rom(spec: &VmiHeaderSpec) -> Vec<u8> {
    let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
    let mut p = Pcir::new(
        consts::PCI_VENDOR_VMWARE,
        consts::PCI_DEVICE_VMI,
        0x05_80_00,
    );
    p.code_revision = 0x0100;
    b.set_pcir(Some(PCIR), p).unwrap();
    let manufacturer = b.add_string("vmirom project").unwrap();
    let product = b.add_string("test VMI ROM").unwrap();
    b.add_pnp(Some(PNP), PnpHeader::new(manufacturer, product, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let get_reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, spec, init, get_reloc).unwrap();
    b.finish(&Finish::default()).unwrap()
}

fn valid() -> Vec<u8> {
    vmi_rom(&VmiHeaderSpec::default())
}

/// Restores a zero checksum after a mutation (so only the mutated rule is judged).
fn resum(mut d: Vec<u8>) -> Vec<u8> {
    let len = usize::from(d[2]) * 512;
    d[len - 1] = 0;
    d[len - 1] = 0u8.wrapping_sub(checksum(&d[..len]));
    d
}

fn check(d: &[u8], p: Profile) -> Vec<Finding> {
    let f = validate(d, &parse(d), p);
    assert!(!f.is_empty());
    for x in &f {
        assert!(x.offset.is_none_or(|o| o < d.len()), "{x:?}");
        assert!(!x.message.is_empty());
    }
    f
}

/// Every rule whose verdict is not `pass`, in report order.
fn verdicts(d: &[u8], p: Profile) -> Vec<(&'static str, Severity)> {
    check(d, p)
        .into_iter()
        .filter(|f| f.severity != Severity::Pass)
        .map(|f| (f.rule, f.severity))
        .collect()
}

fn finding(d: &[u8], p: Profile, rule: &str) -> Finding {
    check(d, p)
        .into_iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule} finding"))
}

#[test]
fn the_valid_rom_passes_all_three_profiles() {
    let d = valid();
    assert_eq!(d.len(), 512);
    assert_eq!(checksum(&d), 0);
    for p in Profile::ALL {
        assert_eq!(verdicts(&d, p), [], "{p:?}");
        assert_eq!(worst(&check(&d, p)), Severity::Pass);
    }
    assert_eq!(
        finding(&d, Profile::LinuxVmi, "found-line").message,
        "Linux prints: `VMI: Found vmirom project test VMI ROM, API version 3.0, ROM version 1.0`"
    );
    // And repair leaves it alone.
    let r = repair(&d, &RepairOptions::default()).unwrap();
    assert_eq!(r.image, d);
}

#[test]
fn wrong_signature() {
    let mut d = valid();
    d[0] = 0x56;
    for p in Profile::ALL {
        assert_eq!(verdicts(&d, p), [("signature", Fail)], "{p:?}");
        let f = finding(&d, p, "signature");
        assert_eq!(f.offset, Some(0));
        assert!(
            f.message
                .starts_with("bytes at 0x0 are 56 AA, expected 55 AA")
        );
    }
    assert!(
        finding(&d, Profile::LinuxVmi, "signature")
            .message
            .ends_with("Linux skips the candidate silently")
    );
    assert!(repair(&d, &RepairOptions::default()).is_err());
}

#[test]
fn bad_checksum() {
    let mut d = valid();
    d[0x1FF] = d[0x1FF].wrapping_add(3);
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("checksum", Warn)]);
    assert_eq!(verdicts(&d, Profile::Seabios), [("checksum", Fail)]);
    assert_eq!(verdicts(&d, Profile::Pci), [("checksum", Fail)]);
    let f = finding(&d, Profile::Seabios, "checksum");
    assert_eq!(f.offset, Some(0x1FF));
    assert!(f.message.contains(
        "sum to 0x03, expected 0: SeaBIOS logs 'Found option rom with bad checksum' and drops it"
    ));
    assert!(
        finding(&d, Profile::LinuxVmi, "checksum")
            .message
            .starts_with("Linux never checks the checksum")
    );
    // `vmirom fix` restores exactly the original.
    assert_eq!(
        repair(&d, &RepairOptions::default()).unwrap().image,
        valid()
    );
}

#[test]
fn truncated() {
    let full = valid();
    // Cut after the header, strings and code: Linux still finds everything it reads.
    let d = &full[..0x180];
    assert_eq!(verdicts(d, Profile::LinuxVmi), [("checksum", Warn)]);
    assert_eq!(
        verdicts(d, Profile::Seabios),
        [("length", Warn), ("checksum", Fail)]
    );
    assert_eq!(
        verdicts(d, Profile::Pci),
        [("image-complete", Fail), ("checksum", Fail)]
    );
    assert!(finding(d, Profile::Pci, "image-complete").message.contains(
        "declares 0x200 bytes (size byte 1, PCIR image length 1) but the file holds only 0x180"
    ));
    // Cut inside the entry slots: Linux fails the header length and the GetRelocationInfo slot.
    let d = &full[..0x88];
    let v = verdicts(d, Profile::LinuxVmi);
    assert!(v.contains(&("header-length", Fail)), "{v:?}");
    assert!(v.contains(&("get-reloc-slot", Fail)), "{v:?}");
    // repair refuses without fix_size and pads with it.
    let e = repair(&full[..0x180], &RepairOptions::default()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let r = repair(
        &full[..0x180],
        &RepairOptions {
            fix_size: true,
            checksum_byte: None,
        },
    )
    .unwrap();
    for p in Profile::ALL {
        assert_eq!(verdicts(&r.image, p), [], "{p:?}");
    }
}

#[test]
fn image_length_zero() {
    // Size byte 0.
    let mut d = valid();
    d[2] = 0;
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("checksum", Warn)]);
    assert_eq!(verdicts(&d, Profile::Seabios), [("size", Fail)]);
    assert_eq!(
        verdicts(&d, Profile::Pci),
        [("image-length", Fail), ("checksum", Fail)]
    );
    assert_eq!(
        finding(&d, Profile::Seabios, "size").message,
        "the size byte at 0x2 is 0: SeaBIOS's is_valid_rom rejects the ROM (expected the image \
         length in 512-byte units)"
    );
    // PCIR image length 0 (size byte intact): only the PCI profile cares.
    let mut d = valid();
    d[PCIR + 0x10] = 0;
    let d = resum(d);
    assert_eq!(verdicts(&d, Profile::LinuxVmi), []);
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), [("image-length", Fail)]);
    assert_eq!(finding(&d, Profile::Pci, "image-length").offset, Some(0x30));
}

#[test]
fn pcir_outside_the_image() {
    let mut d = valid();
    d[0x18..0x1A].copy_from_slice(&0x1F0u16.to_le_bytes());
    let d = resum(d);
    assert_eq!(
        verdicts(&d, Profile::LinuxVmi),
        [("pci-header", Fail), ("pci-ids", Warn)]
    );
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), [("pcir-pointer", Fail)]);
    let f = finding(&d, Profile::Pci, "pcir-pointer");
    assert_eq!(f.offset, Some(0x18));
    assert!(f.message.contains("0x1f0") && f.message.contains("past the image end 0x200"));
    assert!(
        finding(&d, Profile::LinuxVmi, "found-line")
            .message
            .ends_with("ROM version ?.?`")
    );
}

#[test]
fn non_gpl_license() {
    let d = vmi_rom(&VmiHeaderSpec {
        license: "Proprietary".into(),
        ..VmiHeaderSpec::default()
    });
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("license", Fail)]);
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), []);
    assert!(
        finding(&d, Profile::LinuxVmi, "license")
            .message
            .starts_with("``VMI: Non GPL license `Proprietary' found for ROM. Not used.``")
    );
}

#[test]
fn wrong_api_major() {
    let d = vmi_rom(&VmiHeaderSpec {
        api_major: 13,
        api_minor: 3,
        ..VmiHeaderSpec::default()
    });
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("api-version", Fail)]);
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), []);
    let f = finding(&d, Profile::LinuxVmi, "api-version");
    assert_eq!(f.offset, Some(0xD));
    assert!(
        f.message
            .starts_with("`VMI: Found mismatched rom version 13.3`")
    );
}

#[test]
fn missing_cvmi() {
    let mut d = valid();
    d[8..12].copy_from_slice(b"\0\0\0\0");
    let d = resum(d);
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("vmi-signature", Fail)]);
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), []);
    assert_eq!(
        finding(&d, Profile::LinuxVmi, "vmi-signature").message,
        "found 00 00 00 00 at 0x8, expected \"cVmi\" (63 56 6D 69): Linux skips the ROM silently"
    );
}

#[test]
fn license_offset_zero() {
    let mut d = valid();
    d[0x16..0x18].fill(0);
    let d = resum(d);
    assert_eq!(verdicts(&d, Profile::LinuxVmi), [("license", Fail)]);
    assert_eq!(verdicts(&d, Profile::Seabios), []);
    assert_eq!(verdicts(&d, Profile::Pci), []);
    let f = finding(&d, Profile::LinuxVmi, "license");
    assert_eq!(f.offset, Some(0x16));
    assert!(f.message.contains(
        "Linux assumes \"unspecified\" and prints ``VMI: Non GPL license `unspecified' found for \
         ROM. Not used.``"
    ));
}

#[test]
fn not_roms_at_all() {
    for d in [&b""[..], b"\x55", b"MZ\x90\x00\x03", &[0xFF; 4096]] {
        for p in Profile::ALL {
            assert_eq!(verdicts(d, p), [("signature", Fail)], "{d:?} {p:?}");
        }
        assert!(repair(d, &RepairOptions::default()).is_err());
    }
}
