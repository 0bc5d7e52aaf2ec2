//! Running VMI ROMs for real.
//!
//! - [`qemu`]: start QEMU (SeaBIOS loads the ROM with `-option-rom`), collect the debug-console
//!   streams and the exit status, bounded in time.
//! - [`multiboot`]: flat multiboot images QEMU boots with `-kernel`.
//! - [`guest`]: the generated 32-bit test guest (memory map, GDT/IDT/paging, steps).
//! - [`protocol`]: the record stream the guest writes to port 0xE9, and its decoder.
//! - [`kvm`]: a small KVM VMM (rust-vmm crates) that boots the same guest with the ROM mapped
//!   read-only at a chosen address and no BIOS at all.
//! - [`engine`]: which of those runs the guest (`qemu-tcg`, `qemu-kvm`, `kvm`) and whether it
//!   can run here.
//! - [`probe`]: boot the guest against a ROM and report what Linux's probe and activation see.
//! - [`suite`]: the conformance suite: activate the ROM, run call vectors and scenarios for
//!   every call it implements, and judge each call against vmi-abi.
#![deny(clippy::indexing_slicing)]

pub mod engine;
pub mod error;
pub mod guest;
pub mod kvm;
pub mod multiboot;
pub mod probe;
pub mod protocol;
pub mod qemu;
pub mod suite;

pub use engine::Engine;
pub use error::HarnessError;
