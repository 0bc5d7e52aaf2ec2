//! The `pci` rules of an x86 image's `$PnP` expansion header chain (Plug and Play BIOS
//! Specification 1.0A §3.2; the PCI Firmware Specification keeps the pointer at 0x1A of the
//! legacy ROM header). `pnp-header` is judged once per non-EFI image, the others once per
//! header of its chain, header by header.

use super::super::{Out, cstr_problem, hex_bytes};
use super::{ImageCx, PROFILE};
use crate::build::PNP_PTR;
use crate::bytes::cstr_at;
use crate::image::Slot;
use crate::pnp::{self, PnpHeader};

#[cfg(test)]
use super::super::examples::{Examples, PNP, patched, vmi};

/// One `$PnP` header of an image's chain.
pub(super) struct HeaderCx<'a> {
    /// The image.
    pub image: &'a ImageCx<'a>,
    /// The whole chain, as followed from the pointer at 0x1A.
    pub chain: &'a [PnpHeader],
    /// The header's position in the chain.
    pub k: usize,
    /// The header.
    pub h: &'a PnpHeader,
}

impl HeaderCx<'_> {
    /// File offset of field `field` of the header.
    fn at(&self, field: usize) -> Option<usize> {
        self.image.abs(self.h.offset + field)
    }

    /// `$PnP header K at OFFSET`, the start of every message.
    fn who(&self) -> String {
        format!("$PnP header {} at {:#x}", self.k, self.h.offset)
    }
}

crate::rule! {
    /// The `$PnP` pointer at 0x1A is 0 or leads to a whole header inside the image.
    ///
    /// The legacy ROM header's offset 0x1A points at the first `$PnP` expansion header (Plug
    /// and Play BIOS Specification 1.0A §3.2); a header is 0x20 bytes and must lie inside the
    /// image. It is optional, but without one a BIOS runs the init entry only as a
    /// boot-connection vector. EFI images are not judged.
    pub static PNP_HEADER {
        profile: PROFILE,
        id: "pnp-header",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2; PCI Firmware 3.0 §5.1.1",
    }
}

pub(super) fn pnp_header(cx: &ImageCx<'_>, o: &mut Out) {
    if cx.img.efi.is_some() {
        return;
    }
    match &cx.img.pnp {
        Slot::Absent => o.pass(
            cx.abs(PNP_PTR),
            "no $PnP header (pointer at 0x1A is 0); it is optional, but without one a BIOS runs \
             the init entry only as a boot-connection vector"
                .into(),
        ),
        Slot::OutOfBounds { offset, need, .. } => o.fail(
            cx.abs(PNP_PTR),
            format!(
                "the $PnP pointer at 0x1A is {offset:#x}: the {need:#x}-byte header would end at \
                 {:#x}, past the image end {:#x}",
                offset + need,
                cx.vlen()
            ),
        ),
        Slot::Present(chain) => o.pass(
            cx.abs(PNP_PTR),
            format!(
                "{} $PnP header(s), the first at {:#x}",
                chain.len(),
                cx.img.pnp_ptr
            ),
        ),
    }
}

#[cfg(test)]
pub(super) fn pnp_header_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[0x1A..0x1C].copy_from_slice(&0x1F0u16.to_le_bytes())
    }))
}

crate::rule! {
    /// Each `$PnP` header starts with the signature `"$PnP"`.
    ///
    /// The header's first four bytes are `24 50 6E 50` (Plug and Play BIOS Specification 1.0A
    /// §3.2); a BIOS that walks the chain (SeaBIOS `get_pnp_rom`, `get_pnp_next`) stops at a
    /// header without them.
    pub static PNP_SIGNATURE {
        profile: PROFILE,
        id: "pnp-signature",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2; SeaBIOS `get_pnp_rom` (src/optionroms.c)",
    }
}

pub(super) fn pnp_signature(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who) = (hx.h, hx.who());
    if h.signature_ok() {
        o.pass(hx.at(0), format!("{who}: \"$PnP\""));
    } else {
        o.fail(
            hx.at(0),
            format!(
                "{who}: found {}, expected \"$PnP\" (24 50 6E 50)",
                hex_bytes(&h.signature.to_le_bytes())
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pnp_signature_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[PNP] = b'#'))
}

crate::rule! {
    /// Each `$PnP` header's structure revision (offset 0x04) is 1.
    ///
    /// Plug and Play BIOS Specification 1.0A §3.2 defines revision 1; a header of another
    /// revision may lay its fields out differently, so it warns.
    pub static PNP_REVISION {
        profile: PROFILE,
        id: "pnp-revision",
        severity: Warn,
        source: "Plug and Play BIOS Specification 1.0A §3.2",
    }
}

pub(super) fn pnp_revision(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who) = (hx.h, hx.who());
    if h.revision == 1 {
        o.pass(hx.at(pnp::off::REVISION), format!("{who}: revision 1"));
    } else {
        o.warn(
            hx.at(pnp::off::REVISION),
            format!(
                "{who}: revision {} at {:#x}, expected 1",
                h.revision,
                h.offset + pnp::off::REVISION
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pnp_revision_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[PNP + 4] = 2;
        d[PNP + 9] = d[PNP + 9].wrapping_sub(1);
    }))
}

crate::rule! {
    /// Each `$PnP` header's length (offset 0x05) is 2 (×16 = 0x20 bytes).
    ///
    /// The length is counted in 16-byte units and covers the whole 0x20-byte header (Plug and
    /// Play BIOS Specification 1.0A §3.2); the header checksum covers that many bytes.
    pub static PNP_LENGTH {
        profile: PROFILE,
        id: "pnp-length",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2",
    }
}

pub(super) fn pnp_length(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who) = (hx.h, hx.who());
    let want_len = (pnp::LEN / 16) as u8;
    if h.length == want_len {
        o.pass(
            hx.at(pnp::off::LENGTH),
            format!("{who}: length {want_len} (×16 bytes)"),
        );
    } else {
        o.fail(
            hx.at(pnp::off::LENGTH),
            format!(
                "{who}: length {} at {:#x}, expected {want_len} (×16 = {:#x} bytes)",
                h.length,
                h.offset + pnp::off::LENGTH,
                pnp::LEN
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pnp_length_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[PNP + 5] = 1;
        d[PNP + 9] = d[PNP + 9].wrapping_add(1);
    }))
}

crate::rule! {
    /// Each `$PnP` header's length×16 bytes sum to 0 mod 256.
    ///
    /// The checksum byte at offset 0x09 makes the header's bytes sum to 0 (Plug and Play BIOS
    /// Specification 1.0A §3.2); a length that runs past the image leaves nothing to verify.
    /// The finding gives the value the checksum byte would have to hold.
    pub static PNP_CHECKSUM {
        profile: PROFILE,
        id: "pnp-checksum",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2",
    }
}

pub(super) fn pnp_checksum(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who) = (hx.h, hx.who());
    let covered = usize::from(h.length) * 16;
    let at = hx.at(pnp::off::CHECKSUM);
    match h.sum {
        Some(0) => o.pass(at, format!("{who}: its {covered:#x} bytes sum to 0")),
        Some(s) => o.fail(
            at,
            format!(
                "{who}: its {covered:#x} bytes sum to {s:#04x}, expected 0 (checksum byte at \
                 {:#x} is {:#04x}, would have to be {:#04x})",
                h.offset + pnp::off::CHECKSUM,
                h.checksum_byte,
                h.checksum_byte.wrapping_sub(s)
            ),
        ),
        None => o.fail(
            at,
            format!(
                "{who}: its length ({} × 16 bytes) runs past the image end {:#x}; the checksum \
                 cannot cover it",
                h.length,
                hx.image.vlen()
            ),
        ),
    }
}

#[cfg(test)]
pub(super) fn pnp_checksum_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[PNP + 9] ^= 1))
}

crate::rule! {
    /// Each `$PnP` header's next pointer (offset 0x06) is 0 or leads to the next header.
    ///
    /// Headers chain through their next-header offset, 0 ending the chain (Plug and Play BIOS
    /// Specification 1.0A §3.2). A pointer whose header would end past the image, or that
    /// loops back to an earlier header, fails; the walk also stops (a warning) after 16
    /// headers or at a header whose signature is wrong.
    pub static PNP_NEXT {
        profile: PROFILE,
        id: "pnp-next",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2; SeaBIOS `get_pnp_next` (src/optionroms.c)",
    }
}

pub(super) fn pnp_next(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who, k, chain) = (hx.h, hx.who(), hx.k, hx.chain);
    let next = usize::from(h.next);
    let at = hx.at(pnp::off::NEXT);
    if next == 0 {
        o.pass(at, format!("{who}: last header (next = 0)"));
    } else if next + pnp::LEN > hx.image.vlen() {
        o.fail(
            at,
            format!(
                "{who}: next pointer {next:#x}: a {:#x}-byte header there would end past the \
                 image end {:#x}",
                pnp::LEN,
                hx.image.vlen()
            ),
        );
    } else if chain.iter().take(k + 1).any(|c| c.offset == next) {
        o.fail(
            at,
            format!("{who}: next pointer {next:#x} loops back to an earlier header"),
        );
    } else if chain.get(k + 1).is_some_and(|c| c.offset == next) {
        o.pass(at, format!("{who}: next header at {next:#x}"));
    } else if k + 1 >= pnp::MAX_CHAIN {
        o.warn(
            at,
            format!(
                "{who}: the chain is longer than {} headers; the walk stopped here",
                pnp::MAX_CHAIN
            ),
        );
    } else {
        o.warn(
            at,
            format!(
                "{who}: next pointer {next:#x} is not followed because this header's signature is \
                 wrong"
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pnp_next_examples() -> Examples {
    // The header's next pointer leads back to itself.
    Examples::flagging(patched(vmi(), |d| {
        d[PNP + 6] = 0x40;
        d[PNP + 9] = d[PNP + 9].wrapping_sub(0x40);
    }))
}

crate::rule! {
    /// Each `$PnP` header's manufacturer and product strings lie inside the image, NUL-ended.
    ///
    /// The header's offsets 0x0E and 0x10 point (from the ROM start) at the manufacturer and
    /// product strings, 0 when there is none (Plug and Play BIOS Specification 1.0A §3.2); a
    /// BIOS shows them as the boot device's name. Each must lie inside the image and end with
    /// a NUL before the image end.
    pub static PNP_STRINGS {
        profile: PROFILE,
        id: "pnp-strings",
        severity: Fail,
        source: "Plug and Play BIOS Specification 1.0A §3.2",
    }
}

pub(super) fn pnp_strings(hx: &HeaderCx<'_>, o: &mut Out) {
    let (h, who, view) = (hx.h, hx.who(), hx.image.view);
    let mut problems = Vec::new();
    let mut first_bad = None;
    let mut names = Vec::new();
    for (what, field, ptr) in [
        ("manufacturer", pnp::off::MANUFACTURER, h.manufacturer_ptr),
        ("product", pnp::off::PRODUCT, h.product_ptr),
    ] {
        let ptr = usize::from(ptr);
        if ptr == 0 {
            names.push(format!("no {what} string"));
            continue;
        }
        match cstr_at(view, ptr) {
            Ok(s) => names.push(format!("{what} \"{s}\" at {ptr:#x}")),
            Err(e) => {
                first_bad.get_or_insert(h.offset + field);
                problems.push(format!(
                    "the {what} pointer at {:#x} ({ptr:#x}) {}",
                    h.offset + field,
                    cstr_problem(e, ptr, view.len())
                ));
            }
        }
    }
    if problems.is_empty() {
        o.pass(
            hx.at(pnp::off::MANUFACTURER),
            format!("{who}: {}", names.join(", ")),
        );
    } else {
        o.fail(
            first_bad.and_then(|f| hx.image.abs(f)),
            format!(
                "{who}: {}; expected NUL-terminated strings inside the image",
                problems.join("; ")
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn pnp_strings_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| {
        d[PNP + 0x0E..PNP + 0x10].copy_from_slice(&0x300u16.to_le_bytes());
        d[PNP + 9] = d[PNP + 9].wrapping_sub(2);
    }))
}
