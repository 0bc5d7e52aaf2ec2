//! The generator's error type.

use thiserror::Error;

/// Why a ROM could not be generated.
#[derive(Debug, Error)]
pub enum GenError {
    /// The assembler rejected an instruction or could not encode a block.
    #[error("assembling {what}: {source}")]
    Asm {
        /// The routine being assembled.
        what: String,
        /// iced-x86's error.
        source: iced_x86::IcedError,
    },
    /// The position-independent base computation did not settle.
    #[error("assembling {what}: code size did not converge after {passes} passes")]
    NoConvergence {
        /// The routine.
        what: String,
        /// Passes tried.
        passes: usize,
    },
    /// A backend answered something the ABI forbids for a call (vmi-abi.md §3.5).
    #[error("backend {backend}: call {call} ({name}) answered {answer}, allowed: {allowed}")]
    ForbiddenAnswer {
        /// Backend name.
        backend: String,
        /// Call number.
        call: u8,
        /// Call name.
        name: &'static str,
        /// The answer given.
        answer: &'static str,
        /// What the ABI allows.
        allowed: String,
    },
    /// A backend emitted code for a call it answered NONE or NOP for, or none for CALL_REL.
    #[error("backend {backend}: call {call} ({name}): {problem}")]
    Inconsistent {
        /// Backend name.
        backend: String,
        /// Call number.
        call: u8,
        /// Call name.
        name: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The option-ROM layer rejected the image.
    #[error(transparent)]
    Image(#[from] optionrom::Error),
    /// A private-RAM region cannot be placed.
    #[error("private RAM region {tag:?}: {problem}")]
    Ram {
        /// The region's tag.
        tag: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A generated image failed its own audit.
    #[error("the generated image fails its audit: {0}")]
    Audit(String),
}

/// Wraps an iced-x86 error with the routine it happened in.
pub(crate) fn asm(what: impl Into<String>) -> impl FnOnce(iced_x86::IcedError) -> GenError {
    let what = what.into();
    move |source| GenError::Asm { what, source }
}

impl From<iced_x86::IcedError> for GenError {
    fn from(source: iced_x86::IcedError) -> Self {
        GenError::Asm {
            what: "an instruction".into(),
            source,
        }
    }
}
