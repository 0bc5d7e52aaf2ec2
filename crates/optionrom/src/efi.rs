//! The EFI PCI expansion-ROM image header (UEFI specification, "PCI Option ROMs").
//! Recognised and described only; never executed.

use crate::bytes::{u16_at, u32_at};
use serde::Serialize;

/// EFI signature at offset 4 of an EFI image.
pub const EFI_SIGNATURE: u32 = 0x0EF1;

/// The EFI-specific fields of an image whose PCIR code type is 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EfiHeader {
    /// Initialization size in 512-byte units (u16 at 0x02).
    pub initialization_size: u16,
    /// Signature (0x0EF1 when valid).
    pub signature: u32,
    /// Subsystem (10 application, 11 boot-service driver, 12 runtime driver).
    pub subsystem: u16,
    /// Machine type (PE/COFF machine: 0x14C IA32, 0x8664 x64, 0xAA64 AArch64, 0xEBC EBC).
    pub machine: u16,
    /// Compression type (0 none, 1 EFI compression).
    pub compression: u16,
    /// Offset of the PE/COFF image from the image start.
    pub pe_offset: u16,
}

impl EfiHeader {
    /// Reads the EFI fields of the image starting at offset 0 of `image`.
    pub fn read(image: &[u8]) -> Option<EfiHeader> {
        Some(EfiHeader {
            initialization_size: u16_at(image, 0x02)?,
            signature: u32_at(image, 0x04)?,
            subsystem: u16_at(image, 0x08)?,
            machine: u16_at(image, 0x0A)?,
            compression: u16_at(image, 0x0C)?,
            pe_offset: u16_at(image, 0x16)?,
        })
    }

    /// Name of the machine type.
    pub fn machine_name(&self) -> &'static str {
        match self.machine {
            0x014C => "IA32",
            0x8664 => "x64",
            0x0200 => "IA64",
            0x0EBC => "EBC",
            0xAA64 => "AArch64",
            0x01C2 => "ARM",
            0x5064 => "RISC-V64",
            _ => "unknown",
        }
    }

    /// Name of the subsystem.
    pub fn subsystem_name(&self) -> &'static str {
        match self.subsystem {
            10 => "EFI application",
            11 => "EFI boot-service driver",
            12 => "EFI runtime driver",
            _ => "unknown",
        }
    }
}
