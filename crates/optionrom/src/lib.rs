//! x86 option ROM images in general, and VMI ROMs in particular.
//!
//! - [`parse`](parse::parse): read every field of every image of a ROM (legacy header, PCI data
//!   structure rev 2.x/3.0, the `$PnP` header chain, the VMI header when `cVmi` is present, EFI
//!   images), never reading out of bounds, never looping, never panicking.
//! - [`validate`]: judge an image against named rule [profiles](validate::Profile)
//!   (`linux-vmi`, `seabios`, `pci`), each rule reported as pass / warn / fail with the offset and
//!   the expected value.
//! - [`build`]: lay out a new image (header, PCIR, `$PnP`, strings, code, padding, size, checksum).
//! - [`repair`]: fix the checksum (and optionally size and padding) of an existing image.
//! - [`pack`]: turn ELF32 i386 relocatable objects from any compiler into a VMI ROM.
#![deny(clippy::indexing_slicing)]

pub mod build;
pub mod bytes;
pub mod efi;
pub mod error;
pub mod image;
pub mod pack;
pub mod parse;
pub mod pcir;
pub mod pnp;
pub mod repair;
pub mod validate;
pub mod vmi;

pub use build::ImageBuilder;
pub use error::Error;
pub use image::{Image, Rom, Slot};
pub use parse::parse;
