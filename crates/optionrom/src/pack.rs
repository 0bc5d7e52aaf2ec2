//! Packing ELF32 i386 relocatable objects into a VMI option ROM (the post-build tool).

use crate::error::Error;

/// Packing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {}

/// What `vmirom pack` takes besides the objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// Pin the load address: allows R_386_32 absolute relocations (image base, linear).
    pub base: Option<u32>,
    /// Manufacturer string (`$PnP`), printed by Linux.
    pub vendor: String,
    /// Product string (`$PnP`), printed by Linux.
    pub product: String,
    /// License string (Linux accepts exactly "GPL" or "GPL v2").
    pub license: String,
    /// ROM code revision (major, minor) in the PCIR.
    pub version: (u8, u8),
    /// PCI vendor and device id.
    pub pci_id: (u16, u16),
    /// Lowest linear address claimed (VMI header `virtual_top`).
    pub virtual_top: u32,
}

/// An input object: a name for messages and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Object<'a> {
    /// File name (used in error messages).
    pub name: &'a str,
    /// ELF bytes.
    pub data: &'a [u8],
}

/// The packed image and where things went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The finished ROM image.
    pub image: Vec<u8>,
}

/// Packs `objects` into a VMI ROM.
pub fn pack(objects: &[Object<'_>], opts: &PackOptions) -> Result<Packed, Error> {
    let _ = (objects, opts);
    Err(Error::NotARom("pack: not implemented yet".into()))
}
