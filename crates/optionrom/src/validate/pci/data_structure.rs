//! The `pci` rules of an image's PCI data structure (`"PCIR"`, PCI Firmware 3.0 §5.1.2),
//! judged when the pointer at 0x18 leads to one inside the image (`pcir-pointer`); the
//! revision-3 pointers only in a revision-3 structure.

use super::super::{Out, hex_bytes};
use super::{ImageCx, PROFILE};
use crate::build::{BLOCK, PCIR_PTR};
use crate::bytes::u16_at;
use crate::pcir::{self, CodeType, Pcir};

#[cfg(test)]
use super::super::examples::{Examples, chain, patched, plain, vmi};
#[cfg(test)]
use crate::{ImageBuilder, build::Finish};

/// Offset of the PCI data structure in the examples' VMI ROM.
#[cfg(test)]
const AT: usize = super::super::examples::PCIR;

/// The structure and its image offset, when it is inside the image.
fn structure<'a>(cx: &'a ImageCx<'_>) -> Option<(usize, &'a Pcir)> {
    cx.pcir()
}

/// File offset of field `field` of the structure at `ptr`.
fn at(cx: &ImageCx<'_>, ptr: usize, field: usize) -> Option<usize> {
    cx.abs(ptr + field)
}

crate::rule! {
    /// The PCI data structure starts with the signature `"PCIR"`.
    ///
    /// The structure's first four bytes are `50 43 49 52` (PCI Firmware 3.0 §5.1.2); a BIOS that
    /// looks for the image of a device (SeaBIOS `get_pci_rom`) ignores an image without them.
    pub static PCIR_SIGNATURE {
        profile: PROFILE,
        id: "pcir-signature",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2; SeaBIOS `get_pci_rom` (src/optionroms.c)",
    }
}

pub(super) fn pcir_signature(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    if p.signature == pcir::SIGNATURE {
        o.pass(at(cx, ptr, 0), format!("\"PCIR\" at {ptr:#x}"));
    } else {
        o.fail(
            at(cx, ptr, 0),
            format!(
                "found {} at {ptr:#x}, expected \"PCIR\" (50 43 49 52)",
                hex_bytes(&p.signature.to_le_bytes())
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pcir_signature_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[AT] = b'X'))
}

crate::rule! {
    /// The PCI data structure starts on a DWORD boundary.
    ///
    /// The PCI Firmware Specification requires the pointer at 0x18 to be a multiple of 4
    /// (§5.1.1, §5.1.2); SeaBIOS only warns about an unaligned one, so this rule warns.
    pub static PCIR_ALIGNMENT {
        profile: PROFILE,
        id: "pcir-alignment",
        severity: Warn,
        source: "PCI Firmware 3.0 §5.1.1, §5.1.2",
    }
}

pub(super) fn pcir_alignment(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, _)) = structure(cx) else {
        return;
    };
    if ptr % 4 == 0 {
        o.pass(cx.abs(PCIR_PTR), format!("{ptr:#x} is DWORD aligned"));
    } else {
        o.warn(
            cx.abs(PCIR_PTR),
            format!(
                "{ptr:#x} is not DWORD aligned: the PCI Firmware specification requires a \
                 multiple of 4"
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pcir_alignment_examples() -> Examples {
    Examples::flagging(unaligned_pcir())
}

/// A plain image whose (revision 3) PCI data structure sits at 0x22.
#[cfg(test)]
fn unaligned_pcir() -> Vec<u8> {
    let mut img = plain(0);
    img[0x18] = 0x22;
    img[0x22..0x3E].copy_from_slice(&Pcir::new(1, 2, 3).to_bytes());
    super::super::examples::resum(img)
}

crate::rule! {
    /// The structure length (offset 0x0A) matches the revision and stays inside the image.
    ///
    /// A revision 0 (PCI 2.x) structure is 0x18 bytes long, a revision 3 (PCI Firmware 3.0)
    /// one 0x1C (PCI Firmware 3.0 §5.1.2); any other revision needs at least 0x18. The
    /// structure must end inside the image.
    pub static PCIR_LENGTH {
        profile: PROFILE,
        id: "pcir-length",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn pcir_length(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    let len_at = at(cx, ptr, pcir::off::LENGTH);
    let expected = match p.revision {
        0 => Some(pcir::LEN_REV2),
        pcir::REVISION_3 => Some(pcir::LEN_REV3),
        _ => None,
    };
    let struct_end = ptr + usize::from(p.length);
    match expected {
        Some(e) if p.length != e => o.fail(
            len_at,
            format!(
                "structure length at {:#x} is {:#x}, expected {e:#x} for revision {}",
                ptr + pcir::off::LENGTH,
                p.length,
                p.revision
            ),
        ),
        None if p.length < pcir::LEN_REV2 => o.fail(
            len_at,
            format!(
                "structure length at {:#x} is {:#x}, expected at least {:#x}",
                ptr + pcir::off::LENGTH,
                p.length,
                pcir::LEN_REV2
            ),
        ),
        _ if struct_end > cx.vlen() => o.fail(
            len_at,
            format!(
                "structure length {:#x} makes the structure end at {struct_end:#x}, past the image \
                 end {:#x}",
                p.length,
                cx.vlen()
            ),
        ),
        _ => o.pass(len_at, format!("structure length {:#x}", p.length)),
    }
}

#[cfg(test)]
pub(super) fn pcir_length_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[AT + 0x0A] = 0x20))
}

crate::rule! {
    /// The structure revision (offset 0x0C) is 0 (PCI 2.x) or 3 (PCI Firmware 3.0).
    ///
    /// PCI Firmware 3.0 §5.1.2 defines revision 3 and keeps revision 0 for the PCI 2.x
    /// layout; a consumer may read another revision's fields differently, so any other value
    /// warns.
    pub static PCIR_REVISION {
        profile: PROFILE,
        id: "pcir-revision",
        severity: Warn,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn pcir_revision(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    let rev_at = at(cx, ptr, pcir::off::REVISION);
    match p.revision {
        0 | pcir::REVISION_3 => o.pass(
            rev_at,
            format!(
                "revision {} ({})",
                p.revision,
                if p.revision == 0 {
                    "PCI 2.x"
                } else {
                    "PCI Firmware 3.0"
                }
            ),
        ),
        r => o.warn(
            rev_at,
            format!(
                "revision {r} at {:#x}: expected 0 (PCI 2.x) or 3 (PCI Firmware 3.0)",
                ptr + pcir::off::REVISION
            ),
        ),
    }
}

#[cfg(test)]
pub(super) fn pcir_revision_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[AT + 0x0A] = 0x20;
        d[AT + 0x0C] = 2;
    }))
}

crate::rule! {
    /// The image length (offset 0x10) is not 0 and agrees with the image's header.
    ///
    /// The structure gives the image's length in 512-byte units (PCI Firmware 3.0 §5.1.2); the
    /// chain's next image starts that far on. A legacy x86 image must give the same length in
    /// its size byte; an EFI image's initialization size may not exceed it.
    pub static IMAGE_LENGTH {
        profile: PROFILE,
        id: "image-length",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn image_length(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    let il_at = at(cx, ptr, pcir::off::IMAGE_LENGTH);
    let il = p.image_length;
    match (&cx.img.efi, p.code_type) {
        _ if il == 0 => o.fail(
            il_at,
            format!(
                "PCIR image length at {:#x} is 0, expected the image length in 512-byte units",
                ptr + pcir::off::IMAGE_LENGTH
            ),
        ),
        (None, CodeType::X86) if il != u16::from(cx.img.size_byte) => o.fail(
            il_at,
            format!(
                "PCIR image length at {:#x} is {il} blocks, the size byte at 0x2 says {}: a legacy \
                 x86 image must give the same length in both",
                ptr + pcir::off::IMAGE_LENGTH,
                cx.img.size_byte
            ),
        ),
        (Some(e), _) if e.initialization_size > il => o.fail(
            il_at,
            format!(
                "the EFI initialization size ({} blocks) exceeds the PCIR image length ({il} \
                 blocks)",
                e.initialization_size
            ),
        ),
        _ => o.pass(
            il_at,
            format!(
                "image length {il} blocks ({:#x} bytes)",
                usize::from(il) * BLOCK
            ),
        ),
    }
}

#[cfg(test)]
pub(super) fn image_length_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[AT + 0x10] = 0))
}

crate::rule! {
    /// The code type (offset 0x14) is one the specification defines.
    ///
    /// PCI Firmware 3.0 §5.1.2 defines 0 (x86, PC-AT compatible), 1 (Open Firmware), 2
    /// (PA-RISC) and 3 (EFI); a consumer skips an image of another type.
    pub static CODE_TYPE {
        profile: PROFILE,
        id: "code-type",
        severity: Warn,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn code_type(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    let ct_at = at(cx, ptr, pcir::off::CODE_TYPE);
    match p.code_type {
        CodeType::Other(v) => o.warn(
            ct_at,
            format!(
                "code type {v:#04x} at {:#x} is not one the PCI Firmware specification defines \
                 (0 x86, 1 Open Firmware, 2 PA-RISC, 3 EFI)",
                ptr + pcir::off::CODE_TYPE
            ),
        ),
        c => o.pass(
            ct_at,
            format!("code type {} ({})", c.value(), cx.img.kind()),
        ),
    }
}

#[cfg(test)]
pub(super) fn code_type_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[AT + 0x14] = 9))
}

crate::rule! {
    /// Exactly the file's final image has the last-image bit (indicator bit 7) set.
    ///
    /// The indicator byte's bit 7 marks the last image of the ROM (PCI Firmware 3.0 §5.1.2): a
    /// final image without it sends a BIOS looking past the end of the ROM, an earlier image
    /// with it hides the images after it.
    pub static LAST_IMAGE {
        profile: PROFILE,
        id: "last-image",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn last_image(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx) else {
        return;
    };
    let ind_at = at(cx, ptr, pcir::off::INDICATOR);
    match (cx.last, p.is_last()) {
        (true, true) => o.pass(
            ind_at,
            "the final image has the last-image bit (indicator bit 7) set".into(),
        ),
        (false, false) => o.pass(
            ind_at,
            "the last-image bit is clear and another image follows".into(),
        ),
        (true, false) => o.fail(
            ind_at,
            format!(
                "indicator at {:#x} is {:#04x}: the final image of the file must set bit 7 (last \
                 image)",
                ptr + pcir::off::INDICATOR,
                p.indicator
            ),
        ),
        (false, true) => o.fail(
            ind_at,
            format!(
                "indicator at {:#x} is {:#04x}: the last-image bit is set but another image follows",
                ptr + pcir::off::INDICATOR,
                p.indicator
            ),
        ),
    }
}

#[cfg(test)]
pub(super) fn last_image_examples() -> Examples {
    Examples {
        passes: chain(),
        flags: patched(vmi(), |d| d[AT + 0x15] = 0),
    }
}

crate::rule! {
    /// A revision-3 structure's device list is 0-terminated inside the image.
    ///
    /// PCI Firmware 3.0 §5.1.2 adds a device list pointer (offset 0x08, from the structure's
    /// start; 0 when there is none): a list of further device ids the image supports, ended by
    /// a 0 id. The list must end inside the image, and within its first 256 ids here (the walk
    /// is bounded).
    pub static DEVICE_LIST {
        profile: PROFILE,
        id: "device-list",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn device_list(cx: &ImageCx<'_>, o: &mut Out) {
    let Some((ptr, p)) = structure(cx).filter(|(_, p)| p.is_rev3()) else {
        return;
    };
    let dl_at = at(cx, ptr, pcir::off::DEVICE_LIST);
    if p.device_list_ptr == 0 {
        return o.pass(dl_at, "no device list".into());
    }
    let vlen = cx.vlen();
    let start = ptr + usize::from(p.device_list_ptr);
    let mut next = start;
    let mut count = 0usize;
    loop {
        match u16_at(cx.view, next) {
            Some(0) => {
                return o.pass(
                    cx.abs(start),
                    format!("device list at {start:#x}: {count} id(s), 0-terminated"),
                );
            }
            Some(_) if count >= pcir::MAX_DEVICE_LIST => {
                return o.fail(
                    cx.abs(start),
                    format!(
                        "the device list at {start:#x} has no 0 terminator within its first {} ids",
                        pcir::MAX_DEVICE_LIST
                    ),
                );
            }
            Some(_) => {
                count += 1;
                next += 2;
            }
            None if next == start => {
                return o.fail(
                    dl_at,
                    format!(
                        "the device list pointer at {:#x} ({:#x}, from the structure) leads to \
                         {start:#x}, outside the image ({vlen:#x} bytes)",
                        ptr + pcir::off::DEVICE_LIST,
                        p.device_list_ptr
                    ),
                );
            }
            None => {
                return o.fail(
                    cx.abs(start),
                    format!(
                        "the device list at {start:#x} has no 0 terminator before the image end \
                         {vlen:#x}"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
pub(super) fn device_list_examples() -> Examples {
    // 600 bytes of 0x41: no terminator among the first 256 ids.
    let mut b = ImageBuilder::new(0x20).unwrap();
    let mut p = Pcir::new(1, 2, 3);
    p.device_list_ptr = 0x1C;
    b.set_pcir(None, p).unwrap();
    b.append(&[0x41; 600], 1);
    Examples::flagging(b.finish(&Finish::default()).unwrap())
}

crate::rule! {
    /// A revision-3 structure's configuration-utility code header pointer stays in the image.
    ///
    /// PCI Firmware 3.0 §5.1.2 adds the offset of a configuration-utility code header (offset
    /// 0x18 of the structure, from the image start; 0 when there is none); it must lead inside
    /// the image.
    pub static CONFIG_UTILITY {
        profile: PROFILE,
        id: "config-utility",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn config_utility(cx: &ImageCx<'_>, o: &mut Out) {
    rev3_pointer(
        cx,
        o,
        "configuration-utility code header",
        pcir::off::CONFIG_UTILITY,
        |p| p.config_utility_ptr,
    );
}

#[cfg(test)]
pub(super) fn config_utility_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[AT + 0x18..AT + 0x1A].copy_from_slice(&0x0300u16.to_le_bytes())
    }))
}

crate::rule! {
    /// A revision-3 structure's DMTF CLP entry point pointer stays in the image.
    ///
    /// PCI Firmware 3.0 §5.1.2 adds the offset of a DMTF CLP (command-line protocol) entry
    /// point (offset 0x1A of the structure, from the image start; 0 when there is none); it
    /// must lead inside the image.
    pub static DMTF_CLP {
        profile: PROFILE,
        id: "dmtf-clp",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1.2",
    }
}

pub(super) fn dmtf_clp(cx: &ImageCx<'_>, o: &mut Out) {
    rev3_pointer(cx, o, "DMTF CLP entry point", pcir::off::DMTF_CLP, |p| {
        p.dmtf_clp_ptr
    });
}

#[cfg(test)]
pub(super) fn dmtf_clp_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[AT + 0x1A..AT + 0x1C].copy_from_slice(&0x0400u16.to_le_bytes())
    }))
}

/// A revision-3 pointer from the image start: 0, or inside the image.
fn rev3_pointer(
    cx: &ImageCx<'_>,
    o: &mut Out,
    name: &str,
    field: usize,
    value: fn(&Pcir) -> Option<u16>,
) {
    let Some((ptr, p)) = structure(cx).filter(|(_, p)| p.is_rev3()) else {
        return;
    };
    let vlen = cx.vlen();
    match value(p).map(usize::from) {
        None => {}
        Some(0) => o.pass(at(cx, ptr, field), format!("no {name}")),
        Some(v) if v < vlen => o.pass(cx.abs(v), format!("{name} at {v:#x}, inside the image")),
        Some(v) => o.fail(
            at(cx, ptr, field),
            format!(
                "the {name} pointer at {:#x} is {v:#x}, outside the image ({vlen:#x} bytes)",
                ptr + field
            ),
        ),
    }
}
