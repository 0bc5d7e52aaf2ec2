//! The harness error type.

use crate::protocol::{ProtocolError, StepId};
use std::path::PathBuf;
use std::time::Duration;
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
    /// A guest or probe configuration that cannot be built.
    #[error("invalid guest configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The assembler rejected the guest code.
    #[error("assembling the guest: {0}")]
    Assemble(#[from] iced_x86::IcedError),
    /// The guest's record stream is malformed.
    #[error("malformed guest stream: {0}")]
    Protocol(#[from] ProtocolError),
    /// The stream does not belong to the image that was booted.
    #[error("guest stream mismatch: {what} is {found:#x}, expected {expected:#x}")]
    StreamMismatch {
        /// Which field.
        what: &'static str,
        /// What the guest reported.
        found: u32,
        /// What the host built.
        expected: u32,
    },
    /// The guest took an exception (or an unexpected interrupt) while running a step.
    #[error(
        "guest {mnemonic} (vector {vector}) at EIP {eip:#010x}{}, error code {error_code:#x}, \
         in step {step}",
        rom_offset.map(|o| format!(" (ROM offset {o:#x})")).unwrap_or_default()
    )]
    GuestException {
        /// The step that was running.
        step: StepId,
        /// Vector.
        vector: u8,
        /// Its mnemonic.
        mnemonic: &'static str,
        /// Faulting EIP.
        eip: u32,
        /// The EIP as an offset into the ROM image, if it lies inside.
        rom_offset: Option<u32>,
        /// Error code (0 when the CPU pushes none).
        error_code: u32,
    },
    /// The run hit its time limit.
    #[error("guest timed out after {after:?} in step {step}")]
    Timeout {
        /// The limit.
        after: Duration,
        /// The last step the guest announced.
        step: StepId,
    },
    /// QEMU ended without the guest finishing (reset, crash, or an exit the guest did not write).
    #[error("guest died in step {step}: QEMU exit status {exit_code:?}, no END record{}", if stderr.is_empty() { String::new() } else { format!("; QEMU: {stderr}") })]
    GuestDied {
        /// The last step the guest announced.
        step: StepId,
        /// QEMU's exit status.
        exit_code: Option<i32>,
        /// QEMU's stderr (trimmed).
        stderr: String,
    },
    /// The guest stopped without finishing, on an engine without a QEMU exit status (the KVM
    /// runner: `hlt`, a shutdown).
    #[error("guest stopped in step {step} without an END record: {how}")]
    GuestStopped {
        /// The last step the guest announced.
        step: StepId,
        /// How the run ended.
        how: String,
    },
    /// KVM cannot be used on this machine.
    #[error("KVM unavailable: {reason}")]
    KvmUnavailable {
        /// Why, in plain words.
        reason: String,
    },
    /// A KVM ioctl (or the vCPU thread) failed.
    #[error("KVM {what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The vCPU stopped in a way the KVM runner does not model (entry failure, internal error,
    /// an unexpected exit).
    #[error("KVM exit {exit}: {detail}")]
    KvmExit {
        /// The exit.
        exit: String,
        /// What KVM said about it.
        detail: String,
    },
    /// The KVM runner's guest memory could not be set up.
    #[error("guest memory: {what}: {reason}")]
    GuestMemory {
        /// What was being done.
        what: &'static str,
        /// The vm-memory error.
        reason: String,
    },
    /// The KVM runner's BIOS step: the ROM's 16-bit init did not return (it faulted, halted,
    /// hung, or KVM could not run it).
    #[error(
        "the ROM's 16-bit init (far-called at {segment:04X}:0003 in real mode, as a BIOS does \
         at POST) {reason}"
    )]
    RomInit {
        /// The ROM's segment (its base ÷ 16).
        segment: u16,
        /// What happened.
        reason: String,
    },
    /// The ROM cannot be mapped where it was asked to go.
    #[error("ROM of {len} bytes at {base:#x}: {reason}")]
    RomPlacement {
        /// The requested physical base.
        base: u32,
        /// The image length.
        len: usize,
        /// What is wrong.
        reason: String,
    },
    /// The multiboot image cannot be loaded.
    #[error("multiboot image: {reason}")]
    Multiboot {
        /// What is wrong.
        reason: String,
    },
    /// A paged guest was asked for on a KVM that cannot page (kvm-pvm).
    #[error("{reason}")]
    PagingUnsupported {
        /// Why (starts with "paging not supported by this KVM").
        reason: String,
    },
}
