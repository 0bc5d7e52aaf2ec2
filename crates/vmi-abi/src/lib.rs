//! The VMware VMI 3.0 option-ROM interface, exactly as the Linux i386 client (2.6.21–2.6.36,
//! `CONFIG_VMI`) uses it.
//!
//! This crate is the single source of truth for the rest of vmirom: the [call table](calls::CALLS)
//! (numbers, names, argument locations, outputs, register classes, the relocation answers Linux
//! tolerates, and what Linux uses each call for), the byte [layouts](layout) of the ROM header, the
//! PCI data structure and `$PnP` header as Linux reads them, the relocation record and the AP-state
//! structure, and the [flags and constants](consts). Nothing else in the project restates them.
//!
//! ```
//! use vmi_abi::calls::{call, RegClass, RelocType};
//!
//! let cr3 = call(17).unwrap();
//! assert_eq!(cr3.name, "SetCR3");
//! assert_eq!(cr3.class, RegClass::C);
//! assert!(cr3.allowed.contains(RelocType::CallRel));
//! assert!(!cr3.allowed.contains(RelocType::JumpRel));
//! ```
#![no_std]

pub mod calls;
pub mod consts;
pub mod layout;

pub use calls::{CALLS, Call, CallSpec, RegClass, RelocSet, RelocType, call};
