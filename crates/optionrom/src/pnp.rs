//! The `$PnP` expansion header (Plug and Play BIOS Specification 1.0A, §3.2).

use crate::bytes::{checksum, u8_at, u16_at, u32_at};
use serde::Serialize;

/// `"$PnP"` as a little-endian u32.
pub const SIGNATURE: u32 = u32::from_le_bytes(*b"$PnP");
/// Size of the header in bytes (length field 2 × 16).
pub const LEN: usize = 0x20;
/// Most headers a chain is followed for (a loop or a very long chain ends the walk).
pub const MAX_CHAIN: usize = 16;

/// Offsets within the header.
pub mod off {
    /// "$PnP".
    pub const SIGNATURE: usize = 0x00;
    /// Structure revision (1).
    pub const REVISION: usize = 0x04;
    /// Length in 16-byte units (2).
    pub const LENGTH: usize = 0x05;
    /// Offset of the next header from the ROM start (0 = none).
    pub const NEXT: usize = 0x06;
    /// Reserved.
    pub const RESERVED: usize = 0x08;
    /// Checksum byte: the header's length×16 bytes sum to 0.
    pub const CHECKSUM: usize = 0x09;
    /// Device identifier.
    pub const DEVICE_ID: usize = 0x0A;
    /// Manufacturer string pointer (from ROM start).
    pub const MANUFACTURER: usize = 0x0E;
    /// Product name string pointer (from ROM start).
    pub const PRODUCT: usize = 0x10;
    /// Device type code (3 bytes: base, sub, interface).
    pub const DEVICE_TYPE: usize = 0x12;
    /// Device indicators.
    pub const INDICATORS: usize = 0x15;
    /// Boot connection vector.
    pub const BCV: usize = 0x16;
    /// Disconnect vector.
    pub const DV: usize = 0x18;
    /// Bootstrap entry vector.
    pub const BEV: usize = 0x1A;
    /// Reserved.
    pub const RESERVED2: usize = 0x1C;
    /// Static resource information vector.
    pub const STATIC_RESOURCE: usize = 0x1E;
}

/// A `$PnP` header, every field as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PnpHeader {
    /// Offset of the header from the ROM start.
    pub offset: usize,
    /// Signature (should be "$PnP").
    pub signature: u32,
    /// Structure revision.
    pub revision: u8,
    /// Length in 16-byte units.
    pub length: u8,
    /// Next header offset (0 = none).
    pub next: u16,
    /// Checksum byte as stored.
    pub checksum_byte: u8,
    /// Sum of the header's `length`×16 bytes (0 when correct); `None` if they are not all present.
    pub sum: Option<u8>,
    /// Device identifier.
    pub device_id: u32,
    /// Manufacturer string pointer.
    pub manufacturer_ptr: u16,
    /// Product string pointer.
    pub product_ptr: u16,
    /// Device type code as base << 16 | sub << 8 | interface.
    pub device_type: u32,
    /// Device indicators.
    pub indicators: u8,
    /// Boot connection vector.
    pub bcv: u16,
    /// Disconnect vector.
    pub dv: u16,
    /// Bootstrap entry vector.
    pub bev: u16,
    /// Static resource information vector.
    pub static_resource: u16,
}

impl PnpHeader {
    /// A revision-1 header with no vectors and the given string pointers.
    pub fn new(manufacturer_ptr: u16, product_ptr: u16, device_type: u32) -> PnpHeader {
        PnpHeader {
            offset: 0,
            signature: SIGNATURE,
            revision: 1,
            length: (LEN / 16) as u8,
            next: 0,
            checksum_byte: 0,
            sum: None,
            device_id: 0,
            manufacturer_ptr,
            product_ptr,
            device_type: device_type & 0xFF_FFFF,
            indicators: 0,
            bcv: 0,
            dv: 0,
            bev: 0,
            static_resource: 0,
        }
    }

    /// Reads the header at `at` in `rom`; `None` if its 32 bytes are not all inside `rom`.
    pub fn read(rom: &[u8], at: usize) -> Option<PnpHeader> {
        let raw = rom.get(at..at.checked_add(LEN)?)?;
        let length = u8_at(raw, off::LENGTH)?;
        let sum = rom
            .get(at..at.checked_add(usize::from(length) * 16)?)
            .map(checksum);
        Some(PnpHeader {
            offset: at,
            signature: u32_at(raw, off::SIGNATURE)?,
            revision: u8_at(raw, off::REVISION)?,
            length,
            next: u16_at(raw, off::NEXT)?,
            checksum_byte: u8_at(raw, off::CHECKSUM)?,
            sum,
            device_id: u32_at(raw, off::DEVICE_ID)?,
            manufacturer_ptr: u16_at(raw, off::MANUFACTURER)?,
            product_ptr: u16_at(raw, off::PRODUCT)?,
            device_type: u32_at(raw, off::DEVICE_TYPE)? & 0xFF_FFFF,
            indicators: u8_at(raw, off::INDICATORS)?,
            bcv: u16_at(raw, off::BCV)?,
            dv: u16_at(raw, off::DV)?,
            bev: u16_at(raw, off::BEV)?,
            static_resource: u16_at(raw, off::STATIC_RESOURCE)?,
        })
    }

    /// Whether the signature is `$PnP`.
    pub fn signature_ok(&self) -> bool {
        self.signature == SIGNATURE
    }

    /// The header's 32 bytes with a correct checksum byte.
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        let fields: [(usize, &[u8]); 14] = [
            (off::SIGNATURE, &self.signature.to_le_bytes()),
            (off::REVISION, &[self.revision]),
            (off::LENGTH, &[self.length]),
            (off::NEXT, &self.next.to_le_bytes()),
            (off::DEVICE_ID, &self.device_id.to_le_bytes()),
            (off::MANUFACTURER, &self.manufacturer_ptr.to_le_bytes()),
            (off::PRODUCT, &self.product_ptr.to_le_bytes()),
            (off::DEVICE_TYPE, &self.device_type.to_le_bytes()[..3]),
            (off::INDICATORS, &[self.indicators]),
            (off::BCV, &self.bcv.to_le_bytes()),
            (off::DV, &self.dv.to_le_bytes()),
            (off::BEV, &self.bev.to_le_bytes()),
            (off::RESERVED2, &[0, 0]),
            (off::STATIC_RESOURCE, &self.static_resource.to_le_bytes()),
        ];
        for (o, v) in fields {
            if let Some(d) = b.get_mut(o..o + v.len()) {
                d.copy_from_slice(v);
            }
        }
        let fix = 0u8.wrapping_sub(checksum(&b));
        if let Some(c) = b.get_mut(off::CHECKSUM) {
            *c = fix;
        }
        b
    }
}

/// Reads the chain of headers starting at `first` (offsets from the ROM start): follows `next`
/// while it is non-zero, inside `rom`, not yet visited, at most [`MAX_CHAIN`] headers. The walk
/// ends at a header that cannot be read; the caller sees how far it got.
pub fn read_chain(rom: &[u8], first: usize) -> Vec<PnpHeader> {
    let mut out: Vec<PnpHeader> = Vec::new();
    let mut at = first;
    while out.len() < MAX_CHAIN && !out.iter().any(|h| h.offset == at) {
        let Some(h) = PnpHeader::read(rom, at) else {
            break;
        };
        let next = usize::from(h.next);
        let sig_ok = h.signature_ok();
        out.push(h);
        if next == 0 || !sig_ok {
            break;
        }
        at = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_checksum() {
        let mut h = PnpHeader::new(0x60, 0x70, 0x05_80_00);
        h.offset = 0x40;
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"$PnP");
        assert_eq!((b[4], b[5]), (1, 2));
        assert_eq!(checksum(&b), 0);
        let mut rom = vec![0u8; 0x40];
        rom.extend_from_slice(&b);
        let r = PnpHeader::read(&rom, 0x40).unwrap();
        assert_eq!(r.sum, Some(0));
        assert_eq!((r.manufacturer_ptr, r.product_ptr), (0x60, 0x70));
        assert_eq!(r.device_type, 0x05_80_00);
    }

    #[test]
    fn chain_walk_stops_on_loops_and_bounds() {
        let mut rom = vec![0u8; 0x80];
        let mut a = PnpHeader::new(0, 0, 0);
        a.next = 0x40;
        let mut b = PnpHeader::new(0, 0, 0);
        b.next = 0x00;
        rom[0..0x20].copy_from_slice(&a.to_bytes());
        rom[0x40..0x60].copy_from_slice(&b.to_bytes());
        assert_eq!(read_chain(&rom, 0).len(), 2);
        // A loop back to the first header.
        b.next = 0x00;
        a.next = 0x40;
        let mut c = b.clone();
        c.next = 0x40;
        rom[0x40..0x60].copy_from_slice(&c.to_bytes());
        assert_eq!(read_chain(&rom, 0).len(), 2);
        // Pointer past the end.
        a.next = 0x70;
        rom[0..0x20].copy_from_slice(&a.to_bytes());
        assert_eq!(read_chain(&rom, 0).len(), 1);
    }
}
