//! Repairing existing images: the checksum of every legacy image, and optionally the size.
//!
//! The checksum byte of an image is, by default, the last byte of its size×512 range (what QEMU's
//! `signrom` does); a single-image ROM may name another one. The byte must not change anything a
//! consumer reads: the option-ROM header (0x00–0x1B), the PCI data structure and its device list,
//! the `$PnP` headers, the VMI entry slots, the license string and the `$PnP` strings (their NUL
//! terminators included). Repair never turns a passing rule into a failing one.
//!
//! ```
//! use optionrom::repair::{RepairOptions, repair};
//! use optionrom::{ImageBuilder, build::Finish};
//!
//! let mut rom = ImageBuilder::new(0x20).unwrap().finish(&Finish::default()).unwrap();
//! rom[0x100] = 0x42; // breaks the checksum
//! let fixed = repair(&rom, &RepairOptions::default()).unwrap();
//! assert_eq!(fixed.image.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
//! assert_eq!(fixed.changes.len(), 1);
//! // Repairing again changes nothing, and says so.
//! let again = repair(&fixed.image, &RepairOptions::default()).unwrap();
//! assert_eq!(again.image, fixed.image);
//! assert!(again.changes[0].starts_with("nothing to change"));
//! ```

use crate::build::{BLOCK, MAX_LEGACY_LEN, MIN_HEADER};
use crate::bytes::{checksum, cstr_at, u16_at};
use crate::error::Error;
use crate::image::{Image, Slot};
use crate::parse::parse;
use crate::pcir::{self, CodeType};
use crate::pnp;
use std::ops::Range;
use vmi_abi::consts;
use vmi_abi::layout::pnp as pnp_layout;

/// What [`repair`] may change besides checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Pad the last image to a multiple of 512 bytes (everything from its start to the end of
    /// the file is its content) and set its size byte and PCIR image length to match.
    pub fix_size: bool,
    /// File offset of the byte to adjust instead of the image's last byte (single-image ROMs
    /// only; must lie inside the image and outside its header fields and structures).
    pub checksum_byte: Option<usize>,
}

/// The repaired file and what was done to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repaired {
    /// The whole repaired file.
    pub image: Vec<u8>,
    /// One line per change, naming the offset and the old and new values. When nothing had to
    /// change, a single line starting with "nothing to change".
    pub changes: Vec<String>,
}

/// Recomputes the checksum of every legacy (x86) image of the chain in `data`, and with
/// [`RepairOptions::fix_size`] pads and sizes the last image first.
///
/// Errors: the input is not an option ROM; an image is truncated or has size 0 (without
/// `fix_size`); its size byte reaches into the next image; the checksum byte is outside the
/// image or inside a header field or structure; `fix_size` would need more than 255 blocks.
pub fn repair(data: &[u8], opts: &RepairOptions) -> Result<Repaired, Error> {
    let rom = parse(data);
    if rom.images.is_empty() {
        return Err(Error::NotARom(match data {
            [] => "the file is empty".to_string(),
            [_] | [_, _] => format!(
                "the file is {} byte(s), shorter than an option-ROM header",
                data.len()
            ),
            [a, b, ..] => format!("bytes at 0x0 are {a:02X} {b:02X}, expected the signature 55 AA"),
        }));
    }
    if let (Some(at), true) = (opts.checksum_byte, rom.images.len() > 1) {
        return Err(Error::Placement {
            what: "checksum byte",
            offset: at,
            len: 1,
            reason: "an explicit checksum byte applies to single-image ROMs only (this file \
                     holds a chain of images)",
        });
    }
    let mut out = data.to_vec();
    let mut changes = Vec::new();
    let last_index = rom.images.len() - 1;
    // Byte range [start, end) of each image's checksum, with the image.
    let mut ranges: Vec<(usize, usize, &Image)> = Vec::with_capacity(rom.images.len());
    for img in &rom.images {
        let start = img.offset;
        let mut len = img.declared_len;
        if opts.fix_size && img.index == last_index {
            len = fix_size(&mut out, img, &mut changes)?;
        } else {
            check_extent(img, data.len(), rom.images.get(img.index + 1))?;
        }
        ranges.push((start, start + len, img));
    }
    for &(start, end, img) in &ranges {
        if !is_legacy(img) {
            continue;
        }
        let at = match opts.checksum_byte {
            Some(at) => at,
            None => end - 1,
        };
        let range = out.get(start..end).ok_or(Error::Placement {
            what: "image",
            offset: start,
            len: end - start,
            reason: "runs past the end of the file",
        })?;
        let sum = checksum(range);
        // Where the byte may go is only judged when it has to change: an already correct image
        // repairs to itself even if its last byte now ends a string.
        check_checksum_byte(
            img,
            range,
            start,
            at,
            opts.checksum_byte.is_some(),
            sum != 0,
        )?;
        if sum == 0 {
            continue;
        }
        // Any image may be summed by someone (SeaBIOS sums image 0 whatever its code type), so
        // the byte must not lie in another image's range.
        if ranges
            .iter()
            .any(|&(s, e, other)| other.index != img.index && (s..e).contains(&at))
        {
            return Err(Error::Placement {
                what: "checksum byte",
                offset: at,
                len: 1,
                reason: "lies inside another image's size×512 range (a size byte reaches into \
                         the next image): changing it would break that image's checksum",
            });
        }
        let byte = out.get_mut(at).ok_or(Error::Placement {
            what: "checksum byte",
            offset: at,
            len: 1,
            reason: "is past the end of the file",
        })?;
        let old = *byte;
        *byte = old.wrapping_sub(sum);
        changes.push(format!(
            "image {} at {start:#x}: checksum byte at {at:#x} {old:#04x} → {:#04x} (the \
             {:#x} bytes summed to {sum:#04x}, now 0)",
            img.index,
            *byte,
            end - start
        ));
    }
    if changes.is_empty() {
        changes.push(format!(
            "nothing to change: {} already correct",
            if rom.images.len() == 1 {
                "the image's checksum is".to_string()
            } else {
                format!("the checksums of all {} images are", rom.images.len())
            }
        ));
    }
    Ok(Repaired {
        image: out,
        changes,
    })
}

/// Whether the BIOS checksums this image: x86 code (or no PCIR to say otherwise), not EFI.
fn is_legacy(img: &Image) -> bool {
    img.efi.is_none()
        && img
            .pcir
            .present()
            .is_none_or(|p| p.code_type == CodeType::X86)
}

/// Without `fix_size`: the image must have a non-zero size that the file holds and that does
/// not reach into the next image.
fn check_extent(img: &Image, file_len: usize, next: Option<&Image>) -> Result<(), Error> {
    if !is_legacy(img) {
        return Ok(());
    }
    if img.declared_len == 0 {
        return Err(Error::Placement {
            what: "image",
            offset: img.offset,
            len: 0,
            reason: "its size byte (offset 2 of the image) is 0, so there is no checksum range \
                     (use fix_size to set it)",
        });
    }
    if img.offset + img.declared_len > file_len {
        return Err(Error::Placement {
            what: "image",
            offset: img.offset,
            len: img.declared_len,
            reason: "the size byte declares more bytes than the file holds: the image is \
                     truncated (use fix_size to pad it and set the size)",
        });
    }
    if let Some(n) = next
        && img.offset + img.declared_len > n.offset
    {
        return Err(Error::Placement {
            what: "image",
            offset: img.offset,
            len: img.declared_len,
            reason: "its size byte reaches into the next image (the size byte and the PCIR \
                     image length disagree)",
        });
    }
    Ok(())
}

/// Pads the last image to a 512 multiple and sets its size byte and PCIR image length.
/// Returns the image's new length.
fn fix_size(out: &mut Vec<u8>, img: &Image, changes: &mut Vec<String>) -> Result<usize, Error> {
    let content = out.len().saturating_sub(img.offset);
    let len = content.div_ceil(BLOCK).max(1) * BLOCK;
    let legacy = is_legacy(img);
    if legacy && len > MAX_LEGACY_LEN {
        return Err(Error::TooLarge {
            len,
            max: MAX_LEGACY_LEN,
            what: "legacy option ROM (size byte)",
        });
    }
    let blocks = len / BLOCK;
    if len != content {
        out.resize(img.offset + len, 0);
        changes.push(format!(
            "image {} at {:#x}: padded with {} zero byte(s) from {content:#x} to {len:#x} bytes",
            img.index,
            img.offset,
            len - content
        ));
    }
    if legacy {
        let at = img.offset + 2;
        let new = u8::try_from(blocks).unwrap_or(u8::MAX);
        if let Some(b) = out.get_mut(at)
            && *b != new
        {
            changes.push(format!(
                "image {} at {:#x}: size byte at {at:#x} {} → {new} ({len:#x} bytes)",
                img.index, img.offset, *b
            ));
            *b = new;
        }
    }
    if let Slot::Present(p) = &img.pcir {
        let at = img.offset + usize::from(img.pcir_ptr) + pcir::off::IMAGE_LENGTH;
        let new = u16::try_from(blocks).map_err(|_| Error::TooLarge {
            len,
            max: usize::from(u16::MAX) * BLOCK,
            what: "PCIR image length",
        })?;
        if p.image_length != new
            && let Some(d) = out.get_mut(at..at + 2)
        {
            d.copy_from_slice(&new.to_le_bytes());
            changes.push(format!(
                "image {} at {:#x}: PCIR image length at {at:#x} {} → {new}",
                img.index, img.offset, p.image_length
            ));
        }
    }
    Ok(len)
}

/// Byte ranges (image-relative) the checksum byte must not change, each with the reason: the
/// header fields, the structures the header points at (even when they run past the image end),
/// the VMI entry slots, the strings Linux and the PnP headers name, and the PCIR device list.
fn protected(img: &Image, view: &[u8]) -> Vec<(Range<usize>, &'static str)> {
    let mut out: Vec<(Range<usize>, &'static str)> = vec![(
        0..MIN_HEADER,
        "lies in the option-ROM header fields 0x00-0x1B",
    )];
    let pcir_at = usize::from(img.pcir_ptr);
    if pcir_at != 0 {
        out.push((
            pcir_at..pcir_at + usize::from(pcir::LEN_REV3),
            "lies inside the PCI data structure",
        ));
    }
    if let Some(p) = img.pcir.present()
        && p.is_rev3()
        && p.device_list_ptr != 0
    {
        let start = pcir_at + usize::from(p.device_list_ptr);
        let mut at = start;
        for _ in 0..=pcir::MAX_DEVICE_LIST {
            let Some(id) = u16_at(view, at) else { break };
            at += 2;
            if id == 0 {
                out.push((start..at, "lies inside the PCIR device list"));
                break;
            }
        }
    }
    let string = |ptr: usize| -> Option<Range<usize>> {
        let s = cstr_at(view, ptr).ok()?;
        (ptr != 0).then(|| ptr..ptr + s.0.len() + 1)
    };
    let pnp_at = usize::from(img.pnp_ptr);
    let mut pnp_headers: Vec<(usize, usize)> = Vec::new();
    if pnp_at != 0 {
        pnp_headers.push((pnp_at, pnp::LEN));
    }
    if let Slot::Present(chain) = &img.pnp {
        pnp_headers.extend(
            chain
                .iter()
                .map(|h| (h.offset, pnp::LEN.max(usize::from(h.length) * 16))),
        );
    }
    for (at, len) in pnp_headers {
        out.push((at..at + len, "lies inside a $PnP header"));
        let header = view.get(at..).unwrap_or_default();
        for f in [pnp_layout::MANUFACTURER_OFFSET, pnp_layout::PRODUCT_OFFSET] {
            if let Some(r) = f.read(header).and_then(|p| string(p as usize)) {
                out.push((r, "lies inside a $PnP manufacturer or product string"));
            }
        }
    }
    if let Some(v) = &img.vmi {
        out.push((
            consts::ENTRY_INIT..consts::HEADER_SIZE,
            "lies inside the VMI entry slots 0x80-0x8F",
        ));
        if let Some(r) = string(usize::from(v.license_offs)) {
            out.push((r, "lies inside the license string"));
        }
    }
    out
}

/// The checksum byte must be inside [start, end) and, when it `changes`, outside every
/// [`protected`] range.
fn check_checksum_byte(
    img: &Image,
    view: &[u8],
    start: usize,
    at: usize,
    explicit: bool,
    changes: bool,
) -> Result<(), Error> {
    let what = if explicit {
        "checksum byte"
    } else {
        "checksum byte (the image's last byte; choose another with checksum_byte)"
    };
    let err = |reason: &'static str| Error::Placement {
        what,
        offset: at,
        len: 1,
        reason,
    };
    let rel = at.checked_sub(start).filter(|&r| r < view.len());
    let Some(rel) = rel else {
        return Err(err("is outside the image's size×512 range"));
    };
    if !changes {
        return Ok(());
    }
    match protected(img, view)
        .into_iter()
        .find(|(r, _)| r.contains(&rel))
    {
        Some((_, reason)) => Err(err(reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Finish;
    use crate::pcir::Pcir;
    use crate::pnp::PnpHeader;
    use crate::vmi::{VmiHeaderSpec, write_header};
    use crate::{ImageBuilder, parse};

    fn vmi_rom() -> Vec<u8> {
        let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
        b.set_pcir(
            Some(0x20),
            Pcir::new(consts::PCI_VENDOR_VMWARE, consts::PCI_DEVICE_VMI, 0),
        )
        .unwrap();
        let m = b.add_string("VMware").unwrap();
        b.add_pnp(Some(0x40), PnpHeader::new(m, 0, 0)).unwrap();
        let init = b.append(&[0x31, 0xC0, 0xC3], 16);
        let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
        write_header(&mut b, &VmiHeaderSpec::default(), init, reloc).unwrap();
        b.finish(&Finish::default()).unwrap()
    }

    fn nic(last: bool, extra: usize) -> Vec<u8> {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.set_pcir(None, Pcir::new(0x10EC, 0x8139, 0x02_00_00))
            .unwrap();
        b.append(&vec![0x90; extra], 1);
        b.finish(&Finish {
            last_image: last,
            min_len: 0,
        })
        .unwrap()
    }

    fn opts(fix_size: bool, checksum_byte: Option<usize>) -> RepairOptions {
        RepairOptions {
            fix_size,
            checksum_byte,
        }
    }

    #[test]
    fn valid_image_is_unchanged_and_says_so() {
        let d = vmi_rom();
        for o in [opts(false, None), opts(true, None)] {
            let r = repair(&d, &o).unwrap();
            assert_eq!(r.image, d);
            assert_eq!(
                r.changes,
                ["nothing to change: the image's checksum is already correct"]
            );
        }
    }

    #[test]
    fn a_repaired_image_repairs_to_itself_even_when_its_last_byte_ends_a_string() {
        // Found by fuzzing: the product string runs unterminated to the image end, so the last
        // byte is free to change; the fix makes it 0, which terminates the string. Repairing
        // again must not then refuse that (now protected) byte: nothing has to change.
        let mut d = vmi_rom();
        d[0x50..0x52].copy_from_slice(&0x1F0u16.to_le_bytes());
        d[0x1F0..0x200].fill(b'A');
        d[0x1EF] = 0;
        let rest = checksum(&d[..0x1FF]);
        d[0x1EF] = 0u8.wrapping_sub(rest);
        let r = repair(&d, &RepairOptions::default()).unwrap();
        assert_eq!(r.image[0x1FF], 0);
        assert_eq!(checksum(&r.image), 0);
        let again = repair(&r.image, &RepairOptions::default()).unwrap();
        assert_eq!(again.image, r.image);
        assert!(again.changes[0].starts_with("nothing to change"));
    }

    #[test]
    fn fixes_the_last_byte_by_default() {
        let mut d = vmi_rom();
        d[0x150] ^= 0x5A;
        let old = d[0x1FF];
        let r = repair(&d, &RepairOptions::default()).unwrap();
        assert_eq!(checksum(&r.image), 0);
        assert_eq!(r.image.len(), d.len());
        // Only the checksum byte changed.
        let diff: Vec<usize> = (0..d.len()).filter(|&i| d[i] != r.image[i]).collect();
        assert_eq!(diff, [0x1FF]);
        assert_eq!(
            r.changes,
            [format!(
                "image 0 at 0x0: checksum byte at 0x1ff {old:#04x} → {:#04x} (the 0x200 bytes \
                 summed to {:#04x}, now 0)",
                r.image[0x1FF],
                old.wrapping_sub(r.image[0x1FF])
            )]
        );
    }

    #[test]
    fn explicit_checksum_byte() {
        let mut d = vmi_rom();
        d[0x150] ^= 0x5A;
        let r = repair(&d, &opts(false, Some(0x1C))).unwrap();
        // "VMware" at 0x90 (NUL at 0x96) and "GPL v2" at `lic` (NUL at lic + 6).
        assert_eq!(&d[0x90..0x97], b"VMware\0");
        let lic = usize::from(u16::from_le_bytes([d[0x16], d[0x17]]));
        assert_eq!(&d[lic..lic + 7], b"GPL v2\0");
        assert_eq!(checksum(&r.image), 0);
        assert_ne!(r.image[0x1C], d[0x1C]);
        assert_eq!(r.image[0x1FF], d[0x1FF]);
        for (at, reason) in [
            (0x02, "header fields"),
            (0x1B, "header fields"),
            (0x20, "PCI data structure"),
            (0x3B, "PCI data structure"),
            (0x40, "$PnP header"),
            (0x5F, "$PnP header"),
            (0x84, "VMI entry slots"),
            (0x90, "$PnP manufacturer or product string"),
            (0x96, "$PnP manufacturer or product string"),
            (lic, "license string"),
            (lic + 6, "license string"),
            (0x200, "outside the image"),
        ] {
            let e = repair(&d, &opts(false, Some(at))).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(reason), "{at:#x}: {msg}");
            assert!(msg.contains(&format!("offset {at:#x}")), "{msg}");
        }
        // Not for chains.
        let mut c = nic(false, 0);
        c.extend(nic(true, 0));
        assert!(
            repair(&c, &opts(false, Some(0x100)))
                .unwrap_err()
                .to_string()
                .contains("single-image ROMs only")
        );
    }

    #[test]
    fn every_image_of_a_chain() {
        let mut c = nic(false, 600);
        c.extend(nic(true, 10));
        c[0x300] ^= 1;
        c[0x500] ^= 2;
        let r = repair(&c, &RepairOptions::default()).unwrap();
        assert_eq!(r.changes.len(), 2, "{:?}", r.changes);
        assert!(r.changes[0].starts_with("image 0 at 0x0: checksum byte at 0x3ff"));
        assert!(r.changes[1].starts_with("image 1 at 0x400: checksum byte at 0x5ff"));
        let rom = parse(&r.image);
        assert_eq!(rom.images.len(), 2);
        assert!(rom.images.iter().all(|i| i.sum == Some(0)));
    }

    #[test]
    fn fix_size_pads_and_sets_lengths() {
        let d = vmi_rom();
        // Code appended after the image was sized: 0x200 + 0x123 bytes.
        let mut grown = d.clone();
        grown.extend(vec![0x90; 0x123]);
        let e = repair(&grown, &RepairOptions::default());
        // Without fix_size the trailing bytes are left alone, the image is already fine.
        assert_eq!(e.unwrap().image, grown);
        let r = repair(&grown, &opts(true, None)).unwrap();
        assert_eq!(r.image.len(), 0x400);
        assert_eq!(r.image[2], 2);
        assert_eq!(&r.image[0x30..0x32], &[2, 0]);
        assert_eq!(checksum(&r.image), 0);
        assert_eq!(r.changes.len(), 4, "{:?}", r.changes);
        assert_eq!(
            r.changes[0],
            "image 0 at 0x0: padded with 221 zero byte(s) from 0x323 to 0x400 bytes"
        );
        assert_eq!(
            r.changes[1],
            "image 0 at 0x0: size byte at 0x2 1 → 2 (0x400 bytes)"
        );
        assert_eq!(
            r.changes[2],
            "image 0 at 0x0: PCIR image length at 0x30 1 → 2"
        );
        assert!(r.changes[3].starts_with("image 0 at 0x0: checksum byte at 0x3ff"));
        // A truncated image: error without fix_size, padded with it.
        let cut = &d[..0x150];
        let e = repair(cut, &RepairOptions::default()).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let r = repair(cut, &opts(true, None)).unwrap();
        assert_eq!(r.image.len(), 0x200);
        assert_eq!(checksum(&r.image), 0);
        // Size byte 0.
        let mut z = d.clone();
        z[2] = 0;
        assert!(
            repair(&z, &RepairOptions::default())
                .unwrap_err()
                .to_string()
                .contains("size byte")
        );
        let r = repair(&z, &opts(true, None)).unwrap();
        assert_eq!((r.image[2], checksum(&r.image)), (1, 0));
    }

    #[test]
    fn fix_size_limit() {
        let mut big = vmi_rom();
        big.resize(MAX_LEGACY_LEN + 1, 0);
        assert_eq!(
            repair(&big, &opts(true, None)).unwrap_err(),
            Error::TooLarge {
                len: MAX_LEGACY_LEN + BLOCK,
                max: MAX_LEGACY_LEN,
                what: "legacy option ROM (size byte)"
            }
        );
    }

    #[test]
    fn non_roms_and_overlaps_are_errors() {
        assert_eq!(
            repair(&[], &RepairOptions::default()).unwrap_err(),
            Error::NotARom("the file is empty".into())
        );
        assert_eq!(
            repair(&[0x55, 0xAA], &RepairOptions::default())
                .unwrap_err()
                .to_string(),
            "not an option ROM: the file is 2 byte(s), shorter than an option-ROM header"
        );
        assert_eq!(
            repair(b"MZ\x90\x00", &RepairOptions::default())
                .unwrap_err()
                .to_string(),
            "not an option ROM: bytes at 0x0 are 4D 5A, expected the signature 55 AA"
        );
        // Size byte 2 but the PCIR says 1 block and a second image follows at 0x200.
        let mut c = nic(false, 0);
        c.extend(nic(true, 0));
        c[2] = 2;
        let e = repair(&c, &RepairOptions::default()).unwrap_err();
        assert!(e.to_string().contains("reaches into the next image"), "{e}");
        // A non-x86 first image (code type 1, not checksummed by repair) whose size byte
        // reaches over the x86 image after it: fixing that image's last byte would break the
        // first image's sum, which SeaBIOS checks for an -option-rom file.
        let mut c = nic(false, 0);
        c[0x20 + 0x14] = 1;
        c[2] = 2;
        c.extend(nic(true, 0));
        c[0x300] ^= 1;
        let e = repair(&c, &RepairOptions::default()).unwrap_err();
        assert_eq!(
            e,
            Error::Placement {
                what: "checksum byte",
                offset: 0x3FF,
                len: 1,
                reason: "lies inside another image's size×512 range (a size byte reaches into \
                         the next image): changing it would break that image's checksum",
            }
        );
        // The last byte of a 1-block image inside a PCIR placed at the end.
        let mut d = nic(true, 0);
        d[0x18..0x1A].copy_from_slice(&0x1E4u16.to_le_bytes());
        let p = Pcir::read(&d, 0x20).unwrap();
        d[0x1E4..0x1E4 + 0x1C].copy_from_slice(&p.to_bytes());
        let e = repair(&d, &RepairOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checksum byte (the image's last byte; choose another with checksum_byte) at offset \
             0x1ff (+1) does not fit: lies inside the PCI data structure"
        );
        assert!(repair(&d, &opts(false, Some(0x100))).is_ok());
        // A license string whose NUL is the image's last byte: changing it would break the
        // license, so the default checksum byte is refused.
        let mut d = vmi_rom();
        d[0x16..0x18].copy_from_slice(&0x1FCu16.to_le_bytes());
        d[0x1FC..0x200].copy_from_slice(b"GPL\0");
        assert!(
            repair(&d, &RepairOptions::default())
                .unwrap_err()
                .to_string()
                .ends_with("lies inside the license string")
        );
    }
}
