//! Running VMI ROMs for real.
//!
//! - [`qemu`]: start QEMU (SeaBIOS loads the ROM with `-option-rom`), collect the debug-console
//!   streams and the exit status, bounded in time.
//! - [`multiboot`]: flat multiboot images QEMU boots with `-kernel`.
#![deny(clippy::indexing_slicing)]

pub mod error;
pub mod multiboot;
pub mod qemu;

pub use error::HarnessError;
