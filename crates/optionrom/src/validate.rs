//! Rule profiles: judge an image the way a consumer of option ROMs would.
//!
//! Each rule yields a [`Finding`] (pass / warn / fail) whose message names the offset and the
//! expected value. Profiles: [`Profile::LinuxVmi`] (what the Linux 2.6.21–2.6.36 VMI client
//! accepts, vmi-abi.md §2), [`Profile::Seabios`] (what SeaBIOS 1.16 requires and does),
//! [`Profile::Pci`] (PCI Firmware specification structure sanity).

use crate::image::Rom;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Outcome of one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// The rule holds.
    Pass,
    /// The consumer accepts the image but something is off (it warns, or behaves differently).
    Warn,
    /// The consumer rejects the image, or the image is broken.
    Fail,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Pass => "pass",
            Severity::Warn => "warn",
            Severity::Fail => "FAIL",
        })
    }
}

/// One rule's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Profile name (`linux-vmi`, `seabios`, `pci`, `vmi-audit`).
    pub profile: &'static str,
    /// Rule identifier, stable across releases (`signature`, `checksum`, `license`, …).
    pub rule: &'static str,
    /// Verdict.
    pub severity: Severity,
    /// Offset in the file the rule looked at, when there is one (always inside the file).
    pub offset: Option<usize>,
    /// What was found and what was expected.
    pub message: String,
}

/// A named rule profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// What the Linux i386 VMI client (2.6.21–2.6.36) accepts.
    LinuxVmi,
    /// What SeaBIOS 1.16 requires to load and initialise the ROM.
    Seabios,
    /// PCI Firmware specification structure sanity.
    Pci,
}

impl Profile {
    /// All profiles this crate implements.
    pub const ALL: [Profile; 3] = [Profile::LinuxVmi, Profile::Seabios, Profile::Pci];

    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::LinuxVmi => "linux-vmi",
            Profile::Seabios => "seabios",
            Profile::Pci => "pci",
        }
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile {s:?} (known: linux-vmi, seabios, pci)"))
    }
}

/// Judges `data` (parsed as `rom`) against `profile`.
pub fn validate(data: &[u8], rom: &Rom, profile: Profile) -> Vec<Finding> {
    let _ = (data, rom, profile);
    Vec::new()
}

/// The worst severity among `findings` (`Pass` when empty).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Pass)
}
