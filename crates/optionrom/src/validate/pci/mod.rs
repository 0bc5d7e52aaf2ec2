//! The `pci` profile: the structure the PCI Firmware Specification 3.0 (§5.1) gives a PCI
//! expansion ROM, image by image along the chain, then the file as a whole. Messages about an
//! image start with `image N at OFFSET: `.
//!
//! Rules are evaluated in the order of [`RULES`], at three scopes: each image's rules (its
//! header, its PCI data structure — [`data_structure`] — its checksum when it is an x86 image,
//! its EFI header — [`efi_header`] — or its `$PnP` header chain — [`pnp_headers`]), then each
//! `$PnP` header's rules, header by header, before the next image; then the file's rules
//! ([`chain`]).

pub mod chain;
pub mod data_structure;
pub mod efi_header;
pub mod pnp_headers;

pub use chain::{CHAIN_END, TRAILING_BYTES};
pub use data_structure::{
    CODE_TYPE, CONFIG_UTILITY, DEVICE_LIST, DMTF_CLP, IMAGE_LENGTH, LAST_IMAGE, PCIR_ALIGNMENT,
    PCIR_LENGTH, PCIR_REVISION, PCIR_SIGNATURE,
};
pub use efi_header::{EFI_MACHINE, EFI_PE_OFFSET, EFI_SIGNATURE, EFI_SUBSYSTEM};
pub use pnp_headers::{
    PNP_CHECKSUM, PNP_HEADER, PNP_LENGTH, PNP_NEXT, PNP_REVISION, PNP_SIGNATURE, PNP_STRINGS,
};

use super::rule::profile_rules;
use super::{Out, no_image};
use crate::build::PCIR_PTR;
use crate::image::{Image, Rom, Slot};
use crate::pcir::{CodeType, Pcir};
use crate::pnp::PnpHeader;
use Check::{File, Header, Image as Img};

#[cfg(test)]
use super::examples::{Examples, chain as two_images, patched, vmi};

/// The profile's name.
pub const PROFILE: &str = "pci";

/// What the profile says of a file that holds no image.
const NOT_A_ROM: &str = "not a PCI expansion ROM image";

/// A rule's check, by the scope it judges.
#[derive(Clone, Copy)]
enum Check {
    /// Once per image.
    Image(fn(&ImageCx<'_>, &mut Out)),
    /// Once per `$PnP` header of an x86 image, after the image's rules.
    Header(fn(&pnp_headers::HeaderCx<'_>, &mut Out)),
    /// Once for the file, after every image.
    File(fn(&chain::FileCx<'_>, &mut Out)),
}

profile_rules! {
    /// The `pci` rules, in the order the profile evaluates and reports them (per image, then
    /// per `$PnP` header of the image, then for the file):
    Check;
    (SIGNATURE, Img(signature)),
    (IMAGE_COMPLETE, Img(image_complete)),
    (PCIR_POINTER, Img(pcir_pointer)),
    (PCIR_SIGNATURE, Img(data_structure::pcir_signature)),
    (PCIR_ALIGNMENT, Img(data_structure::pcir_alignment)),
    (PCIR_LENGTH, Img(data_structure::pcir_length)),
    (PCIR_REVISION, Img(data_structure::pcir_revision)),
    (IMAGE_LENGTH, Img(data_structure::image_length)),
    (CODE_TYPE, Img(data_structure::code_type)),
    (LAST_IMAGE, Img(data_structure::last_image)),
    (DEVICE_LIST, Img(data_structure::device_list)),
    (CONFIG_UTILITY, Img(data_structure::config_utility)),
    (DMTF_CLP, Img(data_structure::dmtf_clp)),
    (CHECKSUM, Img(checksum)),
    (EFI_SIGNATURE, Img(efi_header::efi_signature)),
    (EFI_SUBSYSTEM, Img(efi_header::efi_subsystem)),
    (EFI_MACHINE, Img(efi_header::efi_machine)),
    (EFI_PE_OFFSET, Img(efi_header::efi_pe_offset)),
    (PNP_HEADER, Img(pnp_headers::pnp_header)),
    (PNP_SIGNATURE, Header(pnp_headers::pnp_signature)),
    (PNP_REVISION, Header(pnp_headers::pnp_revision)),
    (PNP_LENGTH, Header(pnp_headers::pnp_length)),
    (PNP_CHECKSUM, Header(pnp_headers::pnp_checksum)),
    (PNP_NEXT, Header(pnp_headers::pnp_next)),
    (PNP_STRINGS, Header(pnp_headers::pnp_strings)),
    (CHAIN_END, File(chain::chain_end)),
    (TRAILING_BYTES, File(chain::trailing_bytes)),
}

/// Runs the profile on `data`: every image's rules and its `$PnP` headers' rules, then the
/// file's; or the failing `signature` of a non-ROM.
pub(super) fn run(o: &mut Out, data: &[u8], rom: &Rom) {
    if rom.images.is_empty() {
        return no_image(o, &SIGNATURE, data, NOT_A_ROM);
    }
    let n = rom.images.len();
    for img in &rom.images {
        o.prefix = format!("image {} at {:#x}: ", img.index, img.offset);
        let cx = ImageCx {
            img,
            view: img.bytes(data),
            last: img.index + 1 == n,
        };
        for (rule, check) in CHECKS {
            if let Img(f) = check {
                o.check(rule, &cx, *f);
            }
        }
        let headers = cx.pnp_chain();
        for (k, h) in headers.iter().enumerate() {
            let hx = pnp_headers::HeaderCx {
                image: &cx,
                chain: headers,
                k,
                h,
            };
            for (rule, check) in CHECKS {
                if let Header(f) = check {
                    o.check(rule, &hx, *f);
                }
            }
        }
    }
    o.prefix.clear();
    let fx = chain::FileCx { data, rom };
    for (rule, check) in CHECKS {
        if let File(f) = check {
            o.check(rule, &fx, *f);
        }
    }
}

/// One image of the chain.
struct ImageCx<'a> {
    img: &'a Image,
    /// The image's bytes (its declared length, cut to the file).
    view: &'a [u8],
    /// Whether it is the last image of the file.
    last: bool,
}

impl ImageCx<'_> {
    fn vlen(&self) -> usize {
        self.view.len()
    }

    /// File offset of image offset `rel`.
    fn abs(&self, rel: usize) -> Option<usize> {
        Some(self.img.offset.saturating_add(rel))
    }

    /// The PCI data structure and its offset, when the pointer leads to one inside the image.
    fn pcir(&self) -> Option<(usize, &Pcir)> {
        let p = self.img.pcir.present()?;
        Some((usize::from(self.img.pcir_ptr), p))
    }

    /// Whether it is a legacy x86 image (no EFI header; code type 0 or no PCIR).
    fn x86(&self) -> bool {
        self.img.efi.is_none()
            && self
                .img
                .pcir
                .present()
                .is_none_or(|p| p.code_type == CodeType::X86)
    }

    /// The `$PnP` headers judged header by header: those of a non-EFI image.
    fn pnp_chain(&self) -> &[PnpHeader] {
        match (&self.img.efi, &self.img.pnp) {
            (None, Slot::Present(chain)) => chain,
            _ => &[],
        }
    }
}

crate::rule! {
    /// Each image starts with the option-ROM signature `55 AA`.
    ///
    /// Every image of a PCI expansion ROM begins with the ROM header whose first two bytes are
    /// 55h AAh (PCI Firmware 3.0 §5.1.1); the chain walk stops at the first image without
    /// them (`chain-end`). A file that does not start with them is not an expansion ROM: then
    /// this is the profile's only finding.
    pub static SIGNATURE {
        profile: PROFILE,
        id: "signature",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.1",
    }
}

fn signature(cx: &ImageCx<'_>, o: &mut Out) {
    o.pass(cx.abs(0), "55 AA".into());
}

#[cfg(test)]
fn signature_examples() -> Examples {
    Examples::flagging(vec![0x7F, b'E', b'L', b'F'])
}

crate::rule! {
    /// The file holds every byte the image declares.
    ///
    /// An image declares its length twice: the size byte at 0x2 and the PCI data structure's
    /// image length, both in 512-byte units (PCI Firmware 3.0 §5.1.1, §5.1.2). A file that
    /// ends before the longer of the two is truncated. Not reported when both are 0.
    pub static IMAGE_COMPLETE {
        profile: PROFILE,
        id: "image-complete",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.1, §5.1.2",
    }
}

fn image_complete(cx: &ImageCx<'_>, o: &mut Out) {
    let img = cx.img;
    let need = img.declared_len.max(img.chain_len);
    if need == 0 {
        return;
    }
    if img.available >= need {
        o.pass(
            cx.abs(2),
            format!("all {need:#x} declared bytes are in the file"),
        );
    } else {
        o.fail(
            cx.abs(2),
            format!(
                "the image declares {need:#x} bytes (size byte {}, PCIR image length {}) but the \
                 file holds only {:#x} from {:#x}: truncated",
                img.size_byte,
                img.pcir.present().map_or(0, |p| p.image_length),
                img.available,
                img.offset
            ),
        );
    }
}

#[cfg(test)]
fn image_complete_examples() -> Examples {
    Examples::flagging(vmi()[..0x180].to_vec())
}

crate::rule! {
    /// The pointer at 0x18 leads to a PCI data structure inside the image.
    ///
    /// A PCI expansion ROM image carries a `"PCIR"` data structure, its offset in the ROM
    /// header at 0x18 (PCI Firmware 3.0 §5.1.1); the structure must lie inside the image.
    /// Without one the image cannot be matched to a device and the chain cannot continue.
    /// The structure's own rules follow only when it is there.
    pub static PCIR_POINTER {
        profile: PROFILE,
        id: "pcir-pointer",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.1",
    }
}

fn pcir_pointer(cx: &ImageCx<'_>, o: &mut Out) {
    let vlen = cx.vlen();
    match &cx.img.pcir {
        Slot::Absent => o.fail(
            cx.abs(PCIR_PTR),
            "the PCI data structure pointer at 0x18 is 0: a PCI expansion ROM image needs a \
             \"PCIR\" structure"
                .into(),
        ),
        Slot::OutOfBounds { offset, need, .. } => o.fail(
            cx.abs(PCIR_PTR),
            format!(
                "the PCI data structure pointer at 0x18 is {offset:#x}: the {need:#x}-byte \
                 structure would end at {:#x}, past the image end {vlen:#x}",
                offset + need
            ),
        ),
        Slot::Present(_) => o.pass(
            cx.abs(PCIR_PTR),
            format!(
                "PCI data structure at {:#x}, inside the image",
                cx.img.pcir_ptr
            ),
        ),
    }
}

#[cfg(test)]
fn pcir_pointer_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0x18..0x1A].fill(0)))
}

crate::rule! {
    /// An x86 image's size×512 bytes sum to 0 mod 256.
    ///
    /// A legacy x86 image (code type 0, or no PCI data structure) is checksummed over the
    /// length its size byte declares, and a BIOS drops an image that does not sum to 0 (PCI
    /// Firmware 3.0 §5.1.1; SeaBIOS `is_valid_rom`). A size byte of 0 or a truncated image
    /// leaves nothing to verify and fails too. EFI and other code types are not checked.
    pub static CHECKSUM {
        profile: PROFILE,
        id: "checksum",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.1; SeaBIOS `is_valid_rom` (src/optionroms.c)",
    }
}

fn checksum(cx: &ImageCx<'_>, o: &mut Out) {
    if !cx.x86() {
        return;
    }
    let img = cx.img;
    let declared = img.declared_len;
    let ck_at = declared.checked_sub(1).and_then(|o| cx.abs(o));
    match img.sum {
        Some(0) => o.pass(ck_at, format!("the {declared:#x} bytes sum to 0 mod 256")),
        Some(s) => o.fail(
            ck_at,
            format!("the {declared:#x} bytes sum to {s:#04x}, expected 0: a BIOS drops the image"),
        ),
        None if declared == 0 => o.fail(
            cx.abs(2),
            "the size byte at 0x2 is 0: no checksum range (expected the length in 512-byte \
             units)"
                .into(),
        ),
        None => o.fail(
            cx.abs(2),
            format!(
                "cannot be verified: the image is truncated ({:#x} of {declared:#x} bytes)",
                img.available
            ),
        ),
    }
}

#[cfg(test)]
fn checksum_examples() -> Examples {
    let mut d = vmi();
    d[0x1FF] ^= 1;
    Examples::flagging(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Profile;
    use crate::validate::examples::{Table, check_profile};

    /// Every rule of the profile, with the examples declared next to it.
    const EXAMPLES: Table = &[
        (&SIGNATURE, signature_examples),
        (&IMAGE_COMPLETE, image_complete_examples),
        (&PCIR_POINTER, pcir_pointer_examples),
        (&PCIR_SIGNATURE, data_structure::pcir_signature_examples),
        (&PCIR_ALIGNMENT, data_structure::pcir_alignment_examples),
        (&PCIR_LENGTH, data_structure::pcir_length_examples),
        (&PCIR_REVISION, data_structure::pcir_revision_examples),
        (&IMAGE_LENGTH, data_structure::image_length_examples),
        (&CODE_TYPE, data_structure::code_type_examples),
        (&LAST_IMAGE, data_structure::last_image_examples),
        (&DEVICE_LIST, data_structure::device_list_examples),
        (&CONFIG_UTILITY, data_structure::config_utility_examples),
        (&DMTF_CLP, data_structure::dmtf_clp_examples),
        (&CHECKSUM, checksum_examples),
        (&EFI_SIGNATURE, efi_header::efi_signature_examples),
        (&EFI_SUBSYSTEM, efi_header::efi_subsystem_examples),
        (&EFI_MACHINE, efi_header::efi_machine_examples),
        (&EFI_PE_OFFSET, efi_header::efi_pe_offset_examples),
        (&PNP_HEADER, pnp_headers::pnp_header_examples),
        (&PNP_SIGNATURE, pnp_headers::pnp_signature_examples),
        (&PNP_REVISION, pnp_headers::pnp_revision_examples),
        (&PNP_LENGTH, pnp_headers::pnp_length_examples),
        (&PNP_CHECKSUM, pnp_headers::pnp_checksum_examples),
        (&PNP_NEXT, pnp_headers::pnp_next_examples),
        (&PNP_STRINGS, pnp_headers::pnp_strings_examples),
        (&CHAIN_END, chain::chain_end_examples),
        (&TRAILING_BYTES, chain::trailing_bytes_examples),
    ];

    #[test]
    fn every_rule_passes_one_image_and_flags_another() {
        check_profile(Profile::Pci, EXAMPLES);
    }

    #[test]
    fn the_two_image_chain_passes_every_rule() {
        let d = two_images();
        let f = crate::validate::validate(&d, &crate::parse(&d), Profile::Pci);
        assert_eq!(crate::validate::worst(&f), crate::validate::Severity::Pass);
    }
}
