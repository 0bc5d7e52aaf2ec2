//! Test support for the rules' examples: the images they start from, and the check that every
//! rule of a profile has an image it passes and one it flags (fails or warns; for a rule that
//! only informs, one on which it says something else).

use super::rule::{Level, Rule};
use super::{Finding, Profile, Severity, validate};
use crate::build::Finish;
use crate::bytes::checksum;
use crate::efi::EFI_SIGNATURE;
use crate::pcir::{CodeType, Pcir};
use crate::pnp::PnpHeader;
use crate::vmi::{VmiHeaderSpec, write_header};
use crate::{ImageBuilder, parse};
use vmi_abi::consts;

/// A rule's two example images.
#[derive(Debug)]
pub(super) struct Examples {
    /// An image on which the rule reports only passes.
    pub passes: Vec<u8>,
    /// An image on which the rule reports its severity (for an `Info` rule: other words).
    pub flags: Vec<u8>,
}

impl Examples {
    /// [`vmi`] passes, `flags` is flagged.
    pub(super) fn flagging(flags: Vec<u8>) -> Examples {
        Examples {
            passes: vmi(),
            flags,
        }
    }
}

/// The examples of each rule of a profile, by rule.
pub(super) type Table = &'static [(&'static Rule, fn() -> Examples)];

/// Offset of the PCI data structure in [`vmi`].
pub(super) const PCIR: usize = 0x20;
/// Offset of the `$PnP` header in [`vmi`].
pub(super) const PNP: usize = 0x40;

/// A valid 512-byte VMI ROM: PCIR at 0x20 (15AD:0801, code revision 1.0), `$PnP` at 0x40 with
/// manufacturer and product strings, Init = `xor eax,eax; ret`, GetRelocationInfo = `xor
/// eax,eax; xor edx,edx; ret`.
pub(super) fn vmi() -> Vec<u8> {
    vmi_spec(&VmiHeaderSpec::default())
}

/// [`vmi`] with another VMI header.
pub(super) fn vmi_spec(spec: &VmiHeaderSpec) -> Vec<u8> {
    let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
    let mut p = Pcir::new(
        consts::PCI_VENDOR_VMWARE,
        consts::PCI_DEVICE_VMI,
        0x05_80_00,
    );
    p.code_revision = 0x0100;
    b.set_pcir(Some(PCIR), p).unwrap();
    let m = b.add_string("vmirom project").unwrap();
    let n = b.add_string("test VMI ROM").unwrap();
    b.add_pnp(Some(PNP), PnpHeader::new(m, n, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, spec, init, reloc).unwrap();
    b.finish(&Finish::default()).unwrap()
}

/// `d` changed by `f`, with image 0's checksum restored (so only the change is judged).
pub(super) fn patched(mut d: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut d);
    resum(d)
}

/// Sets the last byte of image 0 so that its size×512 bytes sum to 0.
pub(super) fn resum(mut d: Vec<u8>) -> Vec<u8> {
    let len = usize::from(d[2]) * 512;
    if len > 0 && len <= d.len() {
        d[len - 1] = 0;
        d[len - 1] = 0u8.wrapping_sub(checksum(&d[..len]));
    }
    d
}

/// A plain x86 image (no PCIR, no `$PnP`) whose code is a `retf`, at least `min_len` bytes.
pub(super) fn plain(min_len: usize) -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0xCB], 1);
    b.finish(&Finish {
        min_len,
        ..Finish::default()
    })
    .unwrap()
}

/// A 1024-byte EFI image (boot-service driver, x64, PE image at 0x40), last in its chain.
pub(super) fn efi_image() -> Vec<u8> {
    let mut e = vec![0u8; 1024];
    e[0..2].copy_from_slice(&[0x55, 0xAA]);
    e[2] = 2;
    e[4..8].copy_from_slice(&EFI_SIGNATURE.to_le_bytes());
    e[8] = 11;
    e[0xA..0xC].copy_from_slice(&0x8664u16.to_le_bytes());
    e[0x16] = 0x40;
    e[0x18] = 0x1C;
    let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
    p.code_type = CodeType::Efi;
    p.image_length = 2;
    e[0x1C..0x38].copy_from_slice(&p.to_bytes());
    e[0x40..0x42].copy_from_slice(b"MZ");
    e
}

/// Two images: an x86 image with a PCIR (not last) at 0, then [`efi_image`] at 0x200.
pub(super) fn chain() -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.set_pcir(None, Pcir::new(0x8086, 0x100E, 0x02_00_00))
        .unwrap();
    let mut d = b
        .finish(&Finish {
            last_image: false,
            min_len: 0,
        })
        .unwrap();
    d.extend(efi_image());
    d
}

/// [`chain`] with its EFI image (at 0x200) changed by `f`, given the image's bytes.
pub(super) fn chain_efi(f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut d = chain();
    f(&mut d[0x200..]);
    d
}

/// The findings of `rule` when `profile` judges `data`.
fn of(profile: Profile, rule: &Rule, data: &[u8]) -> Vec<Finding> {
    validate(data, &parse(data), profile)
        .into_iter()
        .filter(|f| f.rule == rule.id)
        .collect()
}

/// Rules that report nothing while they hold: their passing example shows no finding at all.
const SILENT_WHEN_HOLDING: &[&str] = &["missing-bytes"];

/// Asserts that `table` gives every rule of `profile` exactly one pair of examples, that the
/// rule passes the first and reports its severity on the second, and that every finding the
/// examples produce carries a rule of the profile.
pub(super) fn check_profile(profile: Profile, table: Table) {
    let rules = profile.rules();
    for rule in rules {
        let n = table
            .iter()
            .filter(|(r, _)| std::ptr::eq(*r, *rule))
            .count();
        assert_eq!(n, 1, "{}: {n} example pairs", rule.qualified());
    }
    assert_eq!(
        table.len(),
        rules.len(),
        "examples of rules not in {profile:?}"
    );
    for (rule, examples) in table {
        let Examples { passes, flags } = examples();
        let pass = of(profile, rule, &passes);
        let holds = SILENT_WHEN_HOLDING.contains(&rule.id) || !pass.is_empty();
        assert!(
            holds,
            "{}: no finding on the passing example",
            rule.qualified()
        );
        let bad: Vec<_> = pass
            .iter()
            .filter(|f| f.severity != Severity::Pass)
            .collect();
        assert!(bad.is_empty(), "{}: {bad:#?}", rule.qualified());
        let flagged = of(profile, rule, &flags);
        assert_eq!(
            super::worst(&flagged),
            rule.severity.verdict(),
            "{}: the flagged example gives {flagged:#?}",
            rule.qualified()
        );
        if rule.severity == Level::Info {
            let said = |f: &[Finding]| f.iter().map(|x| x.message.clone()).collect::<Vec<_>>();
            assert!(!flagged.is_empty(), "{}", rule.qualified());
            assert_ne!(said(&pass), said(&flagged), "{}", rule.qualified());
        }
        for data in [&passes, &flags] {
            for f in validate(data, &parse(data), profile) {
                assert!(rules.iter().any(|r| r.id == f.rule), "undeclared {f:?}");
            }
        }
    }
}
