//! Laying out a new option-ROM image.
//!
//! ```
//! use optionrom::{ImageBuilder, build::Finish, pcir::Pcir, pnp::PnpHeader};
//!
//! let mut b = ImageBuilder::new(0x20).unwrap();
//! let code = b.append(&[0x31, 0xC0, 0xCB], 1); // xor ax,ax; retf
//! b.set_init_entry(code).unwrap();
//! let maker = b.add_string("ACME").unwrap();
//! b.set_pcir(None, Pcir::new(0x1234, 0x5678, 0x02_00_00)).unwrap();
//! b.add_pnp(None, PnpHeader::new(maker, 0, 0x02_00_00)).unwrap();
//! let rom = b.finish(&Finish::default()).unwrap();
//! assert_eq!(rom.len(), 512);
//! assert_eq!(rom.iter().fold(0u8, |s, x| s.wrapping_add(*x)), 0);
//! ```

use crate::bytes::checksum;
use crate::error::Error;
use crate::pcir::{LAST_IMAGE, Pcir};
use crate::pnp::{self, PnpHeader};
use vmi_abi::layout::Field;

/// Option-ROM block size: the size byte and the PCIR image length count these.
pub const BLOCK: usize = 512;
/// Largest image a legacy size byte can describe (255 blocks).
pub const MAX_LEGACY_LEN: usize = 255 * BLOCK;
/// Offset of the legacy init entry.
pub const INIT_ENTRY: usize = 0x03;
/// Offset of the PCIR pointer in the legacy header.
pub const PCIR_PTR: usize = 0x18;
/// Offset of the `$PnP` pointer in the legacy header.
pub const PNP_PTR: usize = 0x1A;
/// Smallest header: signature, size, entry, reserved, PCIR and `$PnP` pointers.
pub const MIN_HEADER: usize = 0x1C;
/// Default 16-bit init when none is given: `xor ax,ax; retf`.
pub const DEFAULT_INIT16: [u8; 3] = [0x31, 0xC0, 0xCB];

/// Options for [`ImageBuilder::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finish {
    /// Set the PCIR last-image bit (clear it for all but the final image of a chain).
    pub last_image: bool,
    /// Pad to at least this many bytes (rounded up to 512).
    pub min_len: usize,
}

impl Default for Finish {
    fn default() -> Self {
        Finish {
            last_image: true,
            min_len: 0,
        }
    }
}

/// Builds one image: allocate space, place structures, then [`finish`](Self::finish) pads,
/// sizes and checksums it. Same calls, same bytes.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    buf: Vec<u8>,
    header_size: usize,
    pcir: Option<(usize, Pcir)>,
    pnp: Vec<(usize, PnpHeader)>,
    init_set: bool,
}

impl ImageBuilder {
    /// A builder whose first `header_size` bytes (at least [`MIN_HEADER`]) are a zeroed header
    /// area with the `55 AA` signature.
    pub fn new(header_size: usize) -> Result<ImageBuilder, Error> {
        if header_size < MIN_HEADER {
            return Err(Error::Placement {
                what: "header",
                offset: 0,
                len: header_size,
                reason: "an option-ROM header needs at least 0x1C bytes",
            });
        }
        let mut buf = vec![0x55, 0xAA];
        buf.resize(header_size, 0);
        Ok(ImageBuilder {
            buf,
            header_size,
            pcir: None,
            pnp: Vec::new(),
            init_set: false,
        })
    }

    /// Current length (before padding).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was laid out after the header area given to [`ImageBuilder::new`].
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= self.header_size
    }

    /// The bytes laid out so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Pads with zeros to a multiple of `align` (a power of two or 1).
    pub fn align(&mut self, align: usize) {
        let a = align.max(1);
        let rem = self.buf.len() % a;
        if rem != 0 {
            self.buf.resize(self.buf.len() + a - rem, 0);
        }
    }

    /// Appends `data` at the next multiple of `align`; returns its offset.
    pub fn append(&mut self, data: &[u8], align: usize) -> usize {
        self.align(align);
        let at = self.buf.len();
        self.buf.extend_from_slice(data);
        at
    }

    /// Overwrites bytes already laid out.
    pub fn write_at(&mut self, at: usize, data: &[u8]) -> Result<(), Error> {
        let len = self.buf.len();
        let dst = at
            .checked_add(data.len())
            .and_then(|end| self.buf.get_mut(at..end))
            .ok_or(Error::Placement {
                what: "data",
                offset: at,
                len: data.len(),
                reason: if at >= len {
                    "offset is past the laid-out bytes"
                } else {
                    "runs past the laid-out bytes"
                },
            })?;
        dst.copy_from_slice(data);
        Ok(())
    }

    /// Writes an integer header field.
    pub fn set(&mut self, field: &Field, value: u64) -> Result<(), Error> {
        field.write(&mut self.buf, value).ok_or(Error::Placement {
            what: field.name,
            offset: field.offset,
            len: field.size(),
            reason: "field lies outside the header area",
        })
    }

    /// Appends a NUL-terminated string; returns its offset (strings live in the first 64 KiB).
    pub fn add_string(&mut self, s: &str) -> Result<u16, Error> {
        if s.as_bytes().contains(&0) {
            return Err(Error::NulInString(s.to_string()));
        }
        let at = self.append(s.as_bytes(), 1);
        self.buf.push(0);
        u16::try_from(at).map_err(|_| Error::Placement {
            what: "string",
            offset: at,
            len: s.len() + 1,
            reason: "a 16-bit string pointer cannot reach it",
        })
    }

    fn reserve(
        &mut self,
        at: Option<usize>,
        len: usize,
        align: usize,
        what: &'static str,
    ) -> Result<u16, Error> {
        let off = match at {
            Some(o) => {
                self.write_at(o, &vec![0u8; len])
                    .map_err(|_| Error::Placement {
                        what,
                        offset: o,
                        len,
                        reason: "not inside the header area or the laid-out bytes",
                    })?;
                o
            }
            None => self.append(&vec![0u8; len], align),
        };
        u16::try_from(off).map_err(|_| Error::Placement {
            what,
            offset: off,
            len,
            reason: "a 16-bit header pointer cannot reach it",
        })
    }

    /// Places the PCI data structure at `at` (or appended, 4-aligned) and points the header at
    /// it. Its image length and last-image bit are filled in by [`finish`](Self::finish).
    pub fn set_pcir(&mut self, at: Option<usize>, pcir: Pcir) -> Result<u16, Error> {
        let len = pcir.to_bytes().len();
        let off = self.reserve(at, len, 4, "PCI data structure")?;
        if off % 4 != 0 {
            return Err(Error::Placement {
                what: "PCI data structure",
                offset: usize::from(off),
                len,
                reason: "must be 4-byte aligned",
            });
        }
        self.write_at(PCIR_PTR, &off.to_le_bytes())?;
        self.pcir = Some((usize::from(off), pcir));
        Ok(off)
    }

    /// Places a `$PnP` header at `at` (or appended, 16-aligned). The first one is pointed at by
    /// the legacy header, later ones are chained through `next`. Checksums are set by
    /// [`finish`](Self::finish).
    pub fn add_pnp(&mut self, at: Option<usize>, header: PnpHeader) -> Result<u16, Error> {
        let off = self.reserve(at, pnp::LEN, 16, "$PnP header")?;
        if self.pnp.is_empty() {
            self.write_at(PNP_PTR, &off.to_le_bytes())?;
        } else if let Some((_, prev)) = self.pnp.last_mut() {
            prev.next = off;
        }
        self.pnp.push((usize::from(off), header));
        Ok(off)
    }

    /// Points the 16-bit init entry (offset 3) at `target` with `jmp rel16`.
    pub fn set_init_entry(&mut self, target: usize) -> Result<(), Error> {
        let rel = i64::try_from(target).unwrap_or(i64::MAX) - (INIT_ENTRY as i64 + 3);
        let rel = i16::try_from(rel).map_err(|_| Error::JumpOutOfRange {
            from: INIT_ENTRY,
            to: target,
            bits: 16,
        })?;
        let [lo, hi] = rel.to_le_bytes();
        self.write_at(INIT_ENTRY, &[0xE9, lo, hi])?;
        self.init_set = true;
        Ok(())
    }

    /// Writes `jmp rel32` to `target` at `at`, padding the `slot`-byte slot with `int3`.
    pub fn write_slot_jump32(
        &mut self,
        at: usize,
        slot: usize,
        target: usize,
    ) -> Result<(), Error> {
        let rel = i64::try_from(target).unwrap_or(i64::MAX) - (at as i64 + 5);
        let rel = i32::try_from(rel).map_err(|_| Error::JumpOutOfRange {
            from: at,
            to: target,
            bits: 32,
        })?;
        let mut bytes = vec![0xE9];
        bytes.extend_from_slice(&rel.to_le_bytes());
        bytes.resize(slot.max(5), 0xCC);
        self.write_at(at, &bytes)
    }

    /// Pads to a multiple of 512 bytes (keeping one spare byte for the checksum), sets the size
    /// byte, the PCIR image length and last-image bit, the `$PnP` checksums, and makes the last
    /// byte the checksum byte so that the whole image sums to 0.
    pub fn finish(mut self, opts: &Finish) -> Result<Vec<u8>, Error> {
        if !self.init_set {
            self.write_at(INIT_ENTRY, &DEFAULT_INIT16)?;
        }
        let len = (self.buf.len() + 1).max(opts.min_len).div_ceil(BLOCK) * BLOCK;
        if len > MAX_LEGACY_LEN {
            return Err(Error::TooLarge {
                len,
                max: MAX_LEGACY_LEN,
                what: "legacy option ROM (size byte)",
            });
        }
        self.buf.resize(len, 0);
        let blocks = (len / BLOCK) as u8;
        self.write_at(2, &[blocks])?;
        if let Some((at, mut pcir)) = self.pcir.take() {
            pcir.image_length = u16::from(blocks);
            if opts.last_image {
                pcir.indicator |= LAST_IMAGE;
            } else {
                pcir.indicator &= !LAST_IMAGE;
            }
            self.write_at(at, &pcir.to_bytes())?;
        }
        for (at, h) in std::mem::take(&mut self.pnp) {
            self.write_at(at, &h.to_bytes())?;
        }
        let last = len - 1;
        self.write_at(last, &[0])?;
        self.write_at(last, &[0u8.wrapping_sub(checksum(&self.buf))])?;
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    #[test]
    fn minimal_image_is_valid_and_deterministic() {
        let make = || {
            let mut b = ImageBuilder::new(0x20).unwrap();
            b.set_pcir(None, Pcir::new(0x8086, 0x100E, 0x02_00_00))
                .unwrap();
            b.finish(&Finish::default()).unwrap()
        };
        let a = make();
        assert_eq!(a, make());
        assert_eq!(a.len(), 512);
        assert_eq!(&a[..3], &[0x55, 0xAA, 1]);
        assert_eq!(&a[3..6], &DEFAULT_INIT16);
        assert_eq!(checksum(&a), 0);
        let rom = parse(&a);
        let pcir = rom.images[0].pcir.present().unwrap();
        assert_eq!(
            (pcir.vendor_id, pcir.image_length, pcir.indicator),
            (0x8086, 1, 0x80)
        );
    }

    #[test]
    fn pads_to_blocks_keeping_a_checksum_byte() {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.append(&[0x90; 512 - 0x20], 1);
        let img = b.finish(&Finish::default()).unwrap();
        // 512 bytes of content need a second block for the checksum byte.
        assert_eq!(img.len(), 1024);
        assert_eq!(img[2], 2);
        assert_eq!(checksum(&img), 0);
    }

    #[test]
    fn too_large_and_bad_placements_are_errors() {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.append(&vec![0; MAX_LEGACY_LEN], 1);
        assert!(matches!(
            b.finish(&Finish::default()),
            Err(Error::TooLarge { .. })
        ));
        assert!(ImageBuilder::new(4).is_err());
        let mut b = ImageBuilder::new(0x20).unwrap();
        assert!(b.write_at(0x1F, &[1, 2]).is_err());
        assert!(b.set_pcir(Some(0x1E), Pcir::new(1, 2, 3)).is_err());
        assert!(b.add_string("a\0b").is_err());
        assert!(matches!(
            b.set_init_entry(0x10000),
            Err(Error::JumpOutOfRange { .. })
        ));
    }

    #[test]
    fn pnp_chain_and_jumps() {
        let mut b = ImageBuilder::new(0x20).unwrap();
        let p1 = b.add_pnp(None, PnpHeader::new(0, 0, 0)).unwrap();
        let p2 = b.add_pnp(None, PnpHeader::new(0, 0, 0)).unwrap();
        let code = b.append(&[0xCB], 1);
        b.set_init_entry(code).unwrap();
        let slot = b.append(&[0; 8], 8);
        b.write_slot_jump32(slot, 8, code).unwrap();
        let img = b.finish(&Finish::default()).unwrap();
        assert_eq!(&img[0x1A..0x1C], &p1.to_le_bytes());
        assert_eq!((p1, p2), (0x20, 0x40));
        assert_eq!(&img[0x26..0x28], &p2.to_le_bytes());
        assert_eq!(checksum(&img[0x20..0x40]), 0);
        assert_eq!(img[3], 0xE9);
        let rel = i16::from_le_bytes([img[4], img[5]]);
        assert_eq!(6 + rel as usize, code);
        assert_eq!(&img[slot + 5..slot + 8], &[0xCC; 3]);
    }
}
