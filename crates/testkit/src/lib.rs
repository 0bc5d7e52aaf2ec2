//! Test support for the vmirom crates' integration tests (not part of any product).
//!
//! - [`toolchain`]: whether gcc / GNU binutils are present, and building ELF32 i386 objects
//!   from source on the spot (tests never use checked-in binaries).
//! - [`sources`]: C and assembly sources more than one test suite packs into ROMs.

pub mod sources;
pub mod toolchain;
