//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong building, repairing or packing an image.
///
/// Parsing never fails: [`parse()`](crate::parse()) describes whatever it finds and
/// [`validate`](crate::validate) judges it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// The image would exceed the largest size an option-ROM header can describe.
    #[error("image of {len} bytes exceeds the {max}-byte maximum of a {what}")]
    TooLarge {
        /// Bytes needed.
        len: usize,
        /// Largest size allowed.
        max: usize,
        /// What limits it.
        what: &'static str,
    },
    /// A structure would be written outside the image or over another one.
    #[error("{what} at offset {offset:#x} (+{len}) does not fit: {reason}")]
    Placement {
        /// The structure.
        what: &'static str,
        /// Where it was to go.
        offset: usize,
        /// Its size.
        len: usize,
        /// Why it cannot go there.
        reason: &'static str,
    },
    /// A string contains a NUL byte and cannot be stored NUL-terminated.
    #[error("string {0:?} contains a NUL byte")]
    NulInString(String),
    /// A branch target is out of reach of the jump encoding used.
    #[error("jump at offset {from:#x} cannot reach {to:#x} with a {bits}-bit displacement")]
    JumpOutOfRange {
        /// Offset of the jump.
        from: usize,
        /// Target offset.
        to: usize,
        /// Displacement width.
        bits: u32,
    },
    /// The input is not an option ROM image at all.
    #[error("not an option ROM: {0}")]
    NotARom(String),
    /// Packing ELF objects failed (boxed: the pack errors carry names and sites).
    #[error(transparent)]
    Pack(#[from] Box<crate::pack::PackError>),
}

impl From<crate::pack::PackError> for Error {
    fn from(e: crate::pack::PackError) -> Self {
        Error::Pack(Box::new(e))
    }
}
