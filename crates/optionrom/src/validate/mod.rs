//! Rule profiles: judge an image the way a consumer of option ROMs would.
//!
//! Each rule yields [`Finding`]s (pass / warn / fail) whose message names the offset and the
//! expected value. Profiles: [`Profile::LinuxVmi`] (what the Linux 2.6.21–2.6.36 VMI client
//! accepts, vmi-abi.md §2), [`Profile::Seabios`] (what SeaBIOS 1.16 requires and does),
//! [`Profile::Pci`] (PCI Firmware specification structure sanity).
//!
//! Every rule is a declared [`rule::Rule`] — id, profile, severity, summary, an
//! explanation citing its source — next to the function that checks it and the two images
//! its tests judge (one it passes, one it flags). A profile is the list of its rules, in the
//! order it evaluates and reports them: [`linux_vmi::RULES`] (image 0 only), [`seabios::RULES`]
//! (image 0 only), [`pci::RULES`] (every image, messages prefixed with the image; then the
//! file). [`rules`] lists them all; `vmirom check --list-rules` prints them and `vmirom check
//! --explain RULE` a rule's explanation.
//!
//! A rule reports nothing where it does not apply: `seabios` reports neither `length` nor
//! `checksum` when the size byte is 0 (SeaBIOS rejects the ROM before looking further), and
//! `missing-bytes` only for a file shorter than its size byte declares whose present bytes sum
//! to 0; `pci` judges the PCI data structure only where the pointer leads to one, the checksum
//! of x86 images, the EFI header of EFI images, the `$PnP` headers of the others.
//!
//! An input that is not an option ROM at all (empty, shorter than 3 bytes, no `55 AA`) yields a
//! single failing `signature` finding in every profile.
//!
//! ```
//! use optionrom::validate::{Profile, Severity, validate, worst};
//!
//! let data = [0x7F, b'E', b'L', b'F'];
//! let findings = validate(&data, &optionrom::parse(&data), Profile::Seabios);
//! assert_eq!(findings.len(), 1);
//! assert_eq!(findings[0].rule, "signature");
//! assert_eq!(worst(&findings), Severity::Fail);
//! ```

pub mod linux_vmi;
pub mod pci;
pub mod rule;
pub mod seabios;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod tests;

use crate::bytes::CStrError;
use crate::image::{Image, Rom};
use rule::Rule;
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
            Profile::LinuxVmi => linux_vmi::PROFILE,
            Profile::Seabios => seabios::PROFILE,
            Profile::Pci => pci::PROFILE,
        }
    }

    /// The profile's rules, in the order it evaluates and reports them.
    pub fn rules(self) -> &'static [&'static Rule] {
        match self {
            Profile::LinuxVmi => linux_vmi::RULES,
            Profile::Seabios => seabios::RULES,
            Profile::Pci => pci::RULES,
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

/// Every rule of every profile of this crate, profile by profile, each in evaluation order.
pub fn rules() -> impl Iterator<Item = &'static Rule> {
    Profile::ALL
        .into_iter()
        .flat_map(|p| p.rules().iter().copied())
}

/// Judges `data` (parsed as `rom`) against `profile`. Never panics; every
/// [`Finding::offset`] is inside `data`.
pub fn validate(data: &[u8], rom: &Rom, profile: Profile) -> Vec<Finding> {
    let mut o = Out {
        profile: profile.name(),
        rule: "",
        len: data.len(),
        prefix: String::new(),
        findings: Vec::new(),
    };
    match profile {
        Profile::LinuxVmi => linux_vmi::run(&mut o, data, rom),
        Profile::Seabios => seabios::run(&mut o, data, rom),
        Profile::Pci => pci::run(&mut o, data, rom),
    }
    o.findings
}

/// The worst severity among `findings` (`Pass` when empty).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Pass)
}

/// Collects findings for one profile; keeps every offset inside the file. A profile's
/// evaluator sets [`Out::rule`] to the rule whose check it runs.
struct Out {
    profile: &'static str,
    /// The id of the rule being checked: every finding added carries it.
    rule: &'static str,
    len: usize,
    prefix: String,
    findings: Vec<Finding>,
}

impl Out {
    /// Runs `check` as `rule`: its findings carry the rule's id.
    fn check<C: ?Sized>(&mut self, rule: &'static Rule, cx: &C, check: fn(&C, &mut Out)) {
        self.rule = rule.id;
        check(cx, self);
    }
    fn add(&mut self, severity: Severity, offset: Option<usize>, msg: String) {
        let message = if self.prefix.is_empty() {
            msg
        } else {
            format!("{}{msg}", self.prefix)
        };
        self.findings.push(Finding {
            profile: self.profile,
            rule: self.rule,
            severity,
            offset: offset.filter(|&o| o < self.len),
            message,
        });
    }
    fn pass(&mut self, offset: Option<usize>, msg: String) {
        self.add(Severity::Pass, offset, msg);
    }
    fn warn(&mut self, offset: Option<usize>, msg: String) {
        self.add(Severity::Warn, offset, msg);
    }
    fn fail(&mut self, offset: Option<usize>, msg: String) {
        self.add(Severity::Fail, offset, msg);
    }
}

/// `AB CD EF` for a byte slice.
fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a string a pointer designates is unusable, in words.
fn cstr_problem(e: CStrError, ptr: usize, vlen: usize) -> String {
    match e {
        CStrError::OutOfBounds => format!("points outside the image ({ptr:#x} ≥ {vlen:#x})"),
        CStrError::Unterminated => {
            format!("string at {ptr:#x} is not NUL-terminated before the image end {vlen:#x}")
        }
    }
}

/// The failing `signature` finding of a file that holds no image, in every profile:
/// `consequence` says what the profile's consumer does with it.
fn no_image(o: &mut Out, signature: &'static Rule, data: &[u8], consequence: &str) {
    o.rule = signature.id;
    match data {
        [] => o.fail(
            None,
            format!(
                "the file is empty; expected the option-ROM signature 55 AA at 0x0: {consequence}"
            ),
        ),
        [_] | [_, _] => o.fail(
            Some(0),
            format!(
                "the file is {} byte(s) ({}), too short for an option-ROM header (55 AA and the \
                 size byte at 0x0..0x3): {consequence}",
                data.len(),
                hex_bytes(data)
            ),
        ),
        [a, b, ..] => o.fail(
            Some(0),
            format!("bytes at 0x0 are {a:02X} {b:02X}, expected 55 AA: {consequence}"),
        ),
    }
}

/// Where an image's range ends, for messages.
fn image_span(img: &Image) -> String {
    format!(
        "{:#x}..{:#x}",
        img.offset,
        img.offset.saturating_add(img.view_len())
    )
}
