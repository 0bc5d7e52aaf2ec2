//! Packing ELF32 objects. Filled in below.

/// Packing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {}
