//! Running VMI ROMs for real.
//!
//! - [`qemu`]: start QEMU (SeaBIOS loads the ROM with `-option-rom`), collect the debug-console
//!   streams and the exit status, bounded in time.
//! - [`multiboot`]: flat multiboot images QEMU boots with `-kernel`.
//! - [`guest`]: the generated 32-bit test guest (memory map, GDT/IDT/paging, steps).
//! - [`protocol`]: the record stream the guest writes to port 0xE9, and its decoder.
//! - [`probe`]: boot the guest against a ROM and report what Linux's probe and activation see.
#![deny(clippy::indexing_slicing)]

pub mod error;
pub mod guest;
pub mod multiboot;
pub mod probe;
pub mod protocol;
pub mod qemu;

pub use error::HarnessError;
