//! The PCI Data Structure (`PCIR`), revisions 2.x and 3.0 of the PCI Firmware specification.

use crate::bytes::{u8_at, u16_at, u32_at};
use serde::Serialize;

/// `"PCIR"` as a little-endian u32.
pub const SIGNATURE: u32 = u32::from_le_bytes(*b"PCIR");
/// Structure length of revision 2.x.
pub const LEN_REV2: u16 = 0x18;
/// Structure length of revision 3.0.
pub const LEN_REV3: u16 = 0x1C;
/// Revision byte of a 3.0 structure.
pub const REVISION_3: u8 = 3;
/// Indicator bit 7: this is the last image of the ROM.
pub const LAST_IMAGE: u8 = 0x80;

/// Offsets within the structure (PCI Firmware 3.0 §5.1.2).
pub mod off {
    /// "PCIR".
    pub const SIGNATURE: usize = 0x00;
    /// Vendor id.
    pub const VENDOR_ID: usize = 0x04;
    /// Device id.
    pub const DEVICE_ID: usize = 0x06;
    /// Device list pointer (3.0; VPD pointer in 2.0/2.1, reserved in 2.2).
    pub const DEVICE_LIST: usize = 0x08;
    /// Structure length.
    pub const LENGTH: usize = 0x0A;
    /// Structure revision.
    pub const REVISION: usize = 0x0C;
    /// Class code (3 bytes: programming interface, sub-class, base class).
    pub const CLASS_CODE: usize = 0x0D;
    /// Image length in 512-byte units.
    pub const IMAGE_LENGTH: usize = 0x10;
    /// Revision level of the code.
    pub const CODE_REVISION: usize = 0x12;
    /// Code type.
    pub const CODE_TYPE: usize = 0x14;
    /// Indicator (bit 7: last image).
    pub const INDICATOR: usize = 0x15;
    /// Maximum run-time image length in 512-byte units (3.0).
    pub const MAX_RUNTIME_LENGTH: usize = 0x16;
    /// Pointer to the configuration-utility code header (3.0).
    pub const CONFIG_UTILITY: usize = 0x18;
    /// Pointer to the DMTF CLP entry point (3.0).
    pub const DMTF_CLP: usize = 0x1A;
}

/// Code type of an image (PCIR offset 0x14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeType {
    /// 0: Intel x86, PC-AT compatible.
    X86,
    /// 1: Open Firmware.
    OpenFirmware,
    /// 2: Hewlett-Packard PA RISC.
    PaRisc,
    /// 3: EFI image.
    Efi,
    /// Anything else.
    Other(u8),
}

impl From<u8> for CodeType {
    fn from(v: u8) -> Self {
        match v {
            0 => CodeType::X86,
            1 => CodeType::OpenFirmware,
            2 => CodeType::PaRisc,
            3 => CodeType::Efi,
            o => CodeType::Other(o),
        }
    }
}

impl CodeType {
    /// Raw value.
    pub fn value(self) -> u8 {
        match self {
            CodeType::X86 => 0,
            CodeType::OpenFirmware => 1,
            CodeType::PaRisc => 2,
            CodeType::Efi => 3,
            CodeType::Other(o) => o,
        }
    }
}

/// A PCI Data Structure, every field as stored (nothing judged here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pcir {
    /// Signature (should be "PCIR").
    pub signature: u32,
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Device list pointer (3.0) / VPD pointer (2.0, 2.1), relative to the structure.
    pub device_list_ptr: u16,
    /// Structure length in bytes.
    pub length: u16,
    /// Structure revision (0 = 2.x, 3 = 3.0).
    pub revision: u8,
    /// Class code as a 24-bit value: base class << 16 | sub-class << 8 | programming interface.
    pub class_code: u32,
    /// Image length in 512-byte units.
    pub image_length: u16,
    /// Code revision level (Linux prints high byte "." low byte as the ROM version).
    pub code_revision: u16,
    /// Code type.
    pub code_type: CodeType,
    /// Indicator byte (bit 7: last image).
    pub indicator: u8,
    /// 3.0 only: maximum run-time length in 512-byte units.
    pub max_runtime_length: Option<u16>,
    /// 3.0 only: configuration-utility code header pointer.
    pub config_utility_ptr: Option<u16>,
    /// 3.0 only: DMTF CLP entry point pointer.
    pub dmtf_clp_ptr: Option<u16>,
    /// 3.0 only: the device ids of the device list, if the pointer is set and the list readable.
    pub device_list: Vec<u16>,
}

impl Pcir {
    /// A revision-3.0 structure with the given ids and class code; everything else zero.
    pub fn new(vendor_id: u16, device_id: u16, class_code: u32) -> Pcir {
        Pcir {
            signature: SIGNATURE,
            vendor_id,
            device_id,
            device_list_ptr: 0,
            length: LEN_REV3,
            revision: REVISION_3,
            class_code: class_code & 0xFF_FFFF,
            image_length: 0,
            code_revision: 0,
            code_type: CodeType::X86,
            indicator: LAST_IMAGE,
            max_runtime_length: Some(0),
            config_utility_ptr: Some(0),
            dmtf_clp_ptr: Some(0),
            device_list: Vec::new(),
        }
    }

    /// Whether the last-image bit is set.
    pub fn is_last(&self) -> bool {
        self.indicator & LAST_IMAGE != 0
    }

    /// Whether the structure declares revision 3.0.
    pub fn is_rev3(&self) -> bool {
        self.revision >= REVISION_3
    }

    /// Reads the structure at `at` in `image`. `None` if its fixed 0x18 bytes are not all inside
    /// `image`. The 3.0 fields are read when the revision is 3 and they are inside `image`.
    pub fn read(image: &[u8], at: usize) -> Option<Pcir> {
        let f16 = |o: usize| u16_at(image, at.checked_add(o)?);
        let f8 = |o: usize| u8_at(image, at.checked_add(o)?);
        // The fixed part must be present in full.
        u16_at(image, at.checked_add(off::MAX_RUNTIME_LENGTH)?)?;
        let revision = f8(off::REVISION)?;
        let class = u32_at(image, at.checked_add(off::CLASS_CODE - 1)?)? >> 8;
        let rev3 = revision >= REVISION_3;
        let device_list_ptr = f16(off::DEVICE_LIST)?;
        let mut p = Pcir {
            signature: u32_at(image, at)?,
            vendor_id: f16(off::VENDOR_ID)?,
            device_id: f16(off::DEVICE_ID)?,
            device_list_ptr,
            length: f16(off::LENGTH)?,
            revision,
            class_code: class,
            image_length: f16(off::IMAGE_LENGTH)?,
            code_revision: f16(off::CODE_REVISION)?,
            code_type: CodeType::from(f8(off::CODE_TYPE)?),
            indicator: f8(off::INDICATOR)?,
            max_runtime_length: rev3.then(|| f16(off::MAX_RUNTIME_LENGTH)).flatten(),
            config_utility_ptr: rev3.then(|| f16(off::CONFIG_UTILITY)).flatten(),
            dmtf_clp_ptr: rev3.then(|| f16(off::DMTF_CLP)).flatten(),
            device_list: Vec::new(),
        };
        if rev3 && device_list_ptr != 0 {
            p.device_list = read_device_list(image, at + usize::from(device_list_ptr));
        }
        Some(p)
    }

    /// The structure's bytes (0x18 or 0x1C of them, per `length`'s revision).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; if self.is_rev3() { 0x1C } else { 0x18 }];
        let mut put = |o: usize, v: &[u8]| {
            if let Some(d) = b.get_mut(o..o + v.len()) {
                d.copy_from_slice(v);
            }
        };
        put(off::SIGNATURE, &self.signature.to_le_bytes());
        put(off::VENDOR_ID, &self.vendor_id.to_le_bytes());
        put(off::DEVICE_ID, &self.device_id.to_le_bytes());
        put(off::DEVICE_LIST, &self.device_list_ptr.to_le_bytes());
        put(off::LENGTH, &self.length.to_le_bytes());
        put(off::REVISION, &[self.revision]);
        put(off::CLASS_CODE, &self.class_code.to_le_bytes()[..3]);
        put(off::IMAGE_LENGTH, &self.image_length.to_le_bytes());
        put(off::CODE_REVISION, &self.code_revision.to_le_bytes());
        put(off::CODE_TYPE, &[self.code_type.value()]);
        put(off::INDICATOR, &[self.indicator]);
        if self.is_rev3() {
            put(
                off::MAX_RUNTIME_LENGTH,
                &self.max_runtime_length.unwrap_or(0).to_le_bytes(),
            );
            put(
                off::CONFIG_UTILITY,
                &self.config_utility_ptr.unwrap_or(0).to_le_bytes(),
            );
            put(off::DMTF_CLP, &self.dmtf_clp_ptr.unwrap_or(0).to_le_bytes());
        }
        b
    }
}

/// Most device ids a device list is read for (the list is 0-terminated; this bounds a list
/// without a terminator).
pub const MAX_DEVICE_LIST: usize = 256;

fn read_device_list(image: &[u8], at: usize) -> Vec<u16> {
    let mut ids = Vec::new();
    for i in 0..MAX_DEVICE_LIST {
        match at.checked_add(2 * i).and_then(|o| u16_at(image, o)) {
            Some(0) | None => break,
            Some(id) => ids.push(id),
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rev3() {
        let mut p = Pcir::new(0x15AD, 0x0801, 0x05_80_00);
        p.image_length = 3;
        p.code_revision = 0x0102;
        let b = p.to_bytes();
        assert_eq!(b.len(), 0x1C);
        assert_eq!(&b[0..4], b"PCIR");
        assert_eq!(&b[4..8], &[0xAD, 0x15, 0x01, 0x08]);
        assert_eq!(&b[0x0D..0x10], &[0x00, 0x80, 0x05]);
        assert_eq!(b[0x15], 0x80);
        assert_eq!(Pcir::read(&b, 0), Some(p));
    }

    #[test]
    fn rev2_has_no_rev3_fields_and_truncation_is_none() {
        let mut p = Pcir::new(1, 2, 3);
        p.revision = 0;
        p.length = LEN_REV2;
        let b = p.to_bytes();
        assert_eq!(b.len(), 0x18);
        let q = Pcir::read(&b, 0).unwrap();
        assert_eq!(q.max_runtime_length, None);
        assert!(Pcir::read(&b[..0x17], 0).is_none());
        assert!(Pcir::read(&b, usize::MAX - 1).is_none());
    }

    #[test]
    fn device_list_is_bounded() {
        let mut p = Pcir::new(1, 2, 3);
        p.device_list_ptr = 0x1C;
        let mut b = p.to_bytes();
        b.extend_from_slice(&[0x34, 0x12, 0x78, 0x56, 0, 0]);
        assert_eq!(Pcir::read(&b, 0).unwrap().device_list, vec![0x1234, 0x5678]);
        // No terminator: stops at the end of the bytes.
        b.truncate(b.len() - 2);
        assert_eq!(Pcir::read(&b, 0).unwrap().device_list, vec![0x1234, 0x5678]);
    }
}
