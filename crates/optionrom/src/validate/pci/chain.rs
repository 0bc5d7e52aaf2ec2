//! The `pci` rules of the file as a whole: how the chain of images ends, and what follows it.

use super::super::{Out, hex_bytes};
use super::PROFILE;
use crate::image::{ChainEnd, Rom};

#[cfg(test)]
use super::super::examples::{Examples, chain, patched, vmi};

/// The whole file.
pub(super) struct FileCx<'a> {
    /// The file's bytes.
    pub data: &'a [u8],
    /// The file, parsed.
    pub rom: &'a Rom,
}

crate::rule! {
    /// The chain of images ends at an image marked last.
    ///
    /// A BIOS walks a PCI expansion ROM image by image, each image's PCI data structure giving
    /// its length, until one has the last-image bit (PCI Firmware 3.0 §5.1, §5.1.2). The walk
    /// must end there: not at the end of the file, not at a zero-length image, not at bytes
    /// that are not an image (`55 AA`). An image without a readable PCI data structure also
    /// ends the chain, since no next image can be located.
    pub static CHAIN_END {
        profile: PROFILE,
        id: "chain-end",
        severity: Fail,
        source: "PCI Firmware 3.0 §5.1, §5.1.2",
    }
}

pub(super) fn chain_end(fx: &FileCx<'_>, o: &mut Out) {
    let (data, rom) = (fx.data, fx.rom);
    let n = rom.images.len();
    let last = n.saturating_sub(1);
    let last_off = rom.images.last().map_or(0, |i| i.offset);
    let next = || rom.next_offset.unwrap_or(data.len());
    match rom.chain_end {
        ChainEnd::LastImageBit => o.pass(
            None,
            format!("the chain ends at image {last} (last-image bit set); {n} image(s)"),
        ),
        ChainEnd::NoPcir => o.pass(
            None,
            format!(
                "the chain ends at image {last}: it has no readable PCI data structure, so no \
                 further image can be located"
            ),
        ),
        ChainEnd::EndOfFile => o.fail(
            None,
            format!(
                "image {last} is not marked last, but the file ends where the next image would \
                 start ({:#x})",
                next()
            ),
        ),
        ChainEnd::ZeroLength => o.fail(
            Some(last_off.saturating_add(2)),
            format!(
                "image {last} has length 0 (size byte and PCIR image length) and is not marked \
                 last: the chain cannot advance"
            ),
        ),
        ChainEnd::NextNotAnImage => {
            let at = next();
            let found = data
                .get(at..at.saturating_add(2))
                .map_or("nothing".to_string(), hex_bytes);
            o.fail(
                Some(at),
                format!(
                    "image {last} is not marked last, but at {at:#x}, where the next image would \
                     start, the bytes are {found}, not 55 AA"
                ),
            );
        }
        ChainEnd::TooManyImages => o.fail(
            None,
            format!(
                "the walk stopped after {n} images, the most a {}-byte file can hold",
                data.len()
            ),
        ),
        ChainEnd::TooShort | ChainEnd::NoSignature => o.fail(
            None,
            "no image: the file does not start with an option-ROM header".into(),
        ),
    }
}

#[cfg(test)]
pub(super) fn chain_end_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0x20 + 0x15] = 0))
}

crate::rule! {
    /// No bytes follow the last image.
    ///
    /// Bytes after the last image's declared length belong to no image (PCI Firmware 3.0
    /// §5.1): a BIOS never reads them, and a tool that pads or signs the ROM may mistake them
    /// for part of it. A warning.
    pub static TRAILING_BYTES {
        profile: PROFILE,
        id: "trailing-bytes",
        severity: Warn,
        source: "PCI Firmware 3.0 §5.1",
    }
}

pub(super) fn trailing_bytes(fx: &FileCx<'_>, o: &mut Out) {
    match fx.rom.trailing {
        Some((off, len)) => o.warn(
            Some(off),
            format!(
                "{len} byte(s) after the last image, from {off:#x} to the end of the file: not \
                 part of any image"
            ),
        ),
        None => o.pass(None, "no bytes after the last image".into()),
    }
}

#[cfg(test)]
pub(super) fn trailing_bytes_examples() -> Examples {
    let mut d = chain();
    d.extend([0xFF; 16]);
    Examples {
        passes: chain(),
        flags: d,
    }
}
