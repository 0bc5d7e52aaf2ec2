//! The harness error type.

use std::path::PathBuf;
use thiserror::Error;

/// What can stop a run from producing a verdict.
#[derive(Debug, Error)]
pub enum HarnessError {
    /// No QEMU binary was found.
    #[error("{binary} not found on PATH (install it: apt-get install qemu-system-x86)")]
    QemuMissing {
        /// The binary looked for.
        binary: String,
    },
    /// QEMU could not be started.
    #[error("starting {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file of the run could not be written or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
