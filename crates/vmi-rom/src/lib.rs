//! Generates VMI 3.0 option ROMs.
//!
//! A [`Backend`] emits each call's 32-bit x86 code with iced-x86's `code_asm`; the
//! [generator](generate::generate) lays out the header, the entry slots, the GetRelocationInfo
//! table and code, the 16-bit init, and hands the bytes to `optionrom` for padding and
//! checksum. Backends: [`native::Native`] (the native instructions, time and the local APIC
//! through [`time`]), [`trace::Trace`] (around any backend). Shared machinery: [`ram`] (private
//! RAM taken at POST), [`iret`] (IRET with faults reported at the call site), [`time`]. The
//! [audit](audit::audit) checks a generated image statically.
//!
//! ```
//! use vmi_rom::{generate::{generate, BuildOptions}, native::Native};
//!
//! let rom = generate(&Native, &BuildOptions::default()).unwrap();
//! assert_eq!(rom.image.len() % 512, 0);
//! assert_eq!(rom.image.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
//! ```
#![deny(clippy::indexing_slicing)]

pub mod audit;
pub mod backend;
pub mod emit;
pub mod error;
pub mod generate;
pub mod iret;
pub mod kvm;
pub mod manifest;
pub mod native;
pub mod ram;
pub mod time;
pub mod trace;

pub use backend::{Answer, Backend, Override};
pub use error::GenError;
