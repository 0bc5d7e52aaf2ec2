//! Rule profiles: judge an image the way a consumer of option ROMs would.
//!
//! Each rule yields a [`Finding`] (pass / warn / fail) whose message names the offset and the
//! expected value. Profiles: [`Profile::LinuxVmi`] (what the Linux 2.6.21–2.6.36 VMI client
//! accepts, vmi-abi.md §2), [`Profile::Seabios`] (what SeaBIOS 1.16 requires and does),
//! [`Profile::Pci`] (PCI Firmware specification structure sanity).
//!
//! Rule identifiers, in the order each profile reports them:
//!
//! - `linux-vmi` (image 0 only): `scope`, `signature`, `vmi-signature`, `api-version`,
//!   `pci-header`, `pci-ids`, `pnp-strings`, `found-line`, `license`, `header-length`,
//!   `init-slot`, `get-reloc-slot`, `scan-window`, `virtual-top`, `checksum`.
//! - `seabios` (image 0 only): `signature`, `size`, `length`, `checksum`, `pcir-alignment`,
//!   `pnp`, `init-entry`, `placement`, `images`, `size-reread`. `length` and `checksum` are
//!   not reported when the size byte is 0 (SeaBIOS rejects the ROM before looking further).
//!   `missing-bytes` follows `checksum` only for a file shorter than its size byte declares
//!   whose present bytes sum to 0: SeaBIOS accepts it and runs bytes the file does not hold
//!   (otherwise `checksum` already fails: SeaBIOS drops the ROM).
//! - `pci` (every image, messages prefixed with the image): `signature`, `image-complete`,
//!   `pcir-pointer`, `pcir-signature`, `pcir-alignment`, `pcir-length`, `pcir-revision`,
//!   `image-length`, `code-type`, `last-image`, `device-list`, `config-utility`, `dmtf-clp`,
//!   `checksum` (x86 images), `pnp-header`, `pnp-signature`, `pnp-revision`, `pnp-length`,
//!   `pnp-checksum`, `pnp-next`, `pnp-strings` (one set per `$PnP` header), `efi-signature`,
//!   `efi-subsystem`, `efi-machine`, `efi-pe-offset` (EFI images); then once for the file:
//!   `chain-end`, `trailing-bytes`.
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

use crate::build::{BLOCK, INIT_ENTRY, PCIR_PTR, PNP_PTR};
use crate::bytes::{CStrError, Mode, checksum, cstr_at, jump_target, u16_at, u32_at};
use crate::efi::{EFI_SIGNATURE, EfiHeader};
use crate::image::{ChainEnd, Image, Rom, Slot};
use crate::pcir::{self, CodeType, Pcir};
use crate::pnp::{self, PnpHeader};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use vmi_abi::consts;
use vmi_abi::layout::{self, vrom};

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

/// SeaBIOS facts the `seabios` profile uses (measured with QEMU 7.2 / SeaBIOS 1.16, PLATFORM.md).
pub mod seabios {
    use vmi_abi::consts;

    /// Option ROMs are placed at multiples of this (SeaBIOS `OPTION_ROM_ALIGN`).
    pub const ROM_ALIGN: u32 = 2048;
    /// Size of QEMU's VGA BIOS at the start of the option-ROM area (≈39 KiB).
    pub const VGA_ROM_LEN: u32 = 39 * 1024;
    /// Where the first `-option-rom` file lands after that VGA ROM (with `-net none`): the next
    /// [`ROM_ALIGN`] boundary, 0xCA000. A NIC ROM or another option ROM moves it up.
    pub const TYPICAL_START: u32 =
        (consts::SCAN_START + VGA_ROM_LEN).div_ceil(ROM_ALIGN) * ROM_ALIGN;
}

/// Judges `data` (parsed as `rom`) against `profile`. Never panics; every
/// [`Finding::offset`] is inside `data`.
pub fn validate(data: &[u8], rom: &Rom, profile: Profile) -> Vec<Finding> {
    let mut o = Out {
        profile: profile.name(),
        len: data.len(),
        prefix: String::new(),
        findings: Vec::new(),
    };
    match (rom.images.first(), profile) {
        (None, Profile::LinuxVmi) => not_a_rom(&mut o, data, "Linux skips the candidate silently"),
        (None, Profile::Seabios) => not_a_rom(&mut o, data, "SeaBIOS ignores the file"),
        (None, Profile::Pci) => not_a_rom(&mut o, data, "not a PCI expansion ROM image"),
        (Some(img), Profile::LinuxVmi) => linux_vmi(&mut o, data, rom, img),
        (Some(img), Profile::Seabios) => seabios(&mut o, data, rom, img),
        (Some(_), Profile::Pci) => pci(&mut o, data, rom),
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

/// Collects findings for one profile; keeps every offset inside the file.
struct Out {
    profile: &'static str,
    len: usize,
    prefix: String,
    findings: Vec<Finding>,
}

impl Out {
    fn add(&mut self, rule: &'static str, severity: Severity, offset: Option<usize>, msg: String) {
        let message = if self.prefix.is_empty() {
            msg
        } else {
            format!("{}{msg}", self.prefix)
        };
        self.findings.push(Finding {
            profile: self.profile,
            rule,
            severity,
            offset: offset.filter(|&o| o < self.len),
            message,
        });
    }
    fn pass(&mut self, rule: &'static str, offset: Option<usize>, msg: String) {
        self.add(rule, Severity::Pass, offset, msg);
    }
    fn warn(&mut self, rule: &'static str, offset: Option<usize>, msg: String) {
        self.add(rule, Severity::Warn, offset, msg);
    }
    fn fail(&mut self, rule: &'static str, offset: Option<usize>, msg: String) {
        self.add(rule, Severity::Fail, offset, msg);
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

fn not_a_rom(o: &mut Out, data: &[u8], consequence: &str) {
    match data {
        [] => o.fail(
            "signature",
            None,
            format!(
                "the file is empty; expected the option-ROM signature 55 AA at 0x0: {consequence}"
            ),
        ),
        [_] | [_, _] => o.fail(
            "signature",
            Some(0),
            format!(
                "the file is {} byte(s) ({}), too short for an option-ROM header (55 AA and the \
                 size byte at 0x0..0x3): {consequence}",
                data.len(),
                hex_bytes(data)
            ),
        ),
        [a, b, ..] => o.fail(
            "signature",
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

// ---------------------------------------------------------------------------------------------
// linux-vmi
// ---------------------------------------------------------------------------------------------

fn linux_vmi(o: &mut Out, data: &[u8], rom: &Rom, img: &Image) {
    let view = img.bytes(data);
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    let read = |f: &layout::Field| f.read(view);

    // scope
    let mut msg = format!(
        "judging image 0 only ({}, {vlen} bytes): Linux scans memory in {}-byte steps and SeaBIOS \
         keeps only the first image's size×512 bytes",
        image_span(img),
        consts::SCAN_STRIDE
    );
    if let Some(rest) = rom.images.get(1..).filter(|r| !r.is_empty()) {
        let mut at: Vec<String> = rest
            .iter()
            .take(4)
            .map(|i| format!("{:#x}", i.offset))
            .collect();
        if rest.len() > 4 {
            at.push("…".into());
        }
        msg.push_str(&format!(
            "; the file's {} further image(s) (at {}) are never seen by Linux",
            rest.len(),
            at.join(", ")
        ));
    }
    o.pass("scope", abs(0), msg);

    // 1. signature
    o.pass(
        "signature",
        abs(0),
        "55 AA at 0x0 (u16 0xAA55 as Linux compares it)".into(),
    );
    let mut stop: Option<&'static str> = None;

    // 2. "cVmi"
    let sig_field = vrom::VROM_SIGNATURE;
    match read(&sig_field) {
        Some(v) if v == u64::from(consts::VMI_SIGNATURE) => o.pass(
            "vmi-signature",
            abs(sig_field.offset),
            format!("\"cVmi\" at {:#x}", sig_field.offset),
        ),
        Some(v) => {
            stop.get_or_insert("vmi-signature");
            o.fail(
                "vmi-signature",
                abs(sig_field.offset),
                format!(
                    "found {} at {:#x}, expected \"cVmi\" ({}): Linux skips the ROM silently",
                    hex_bytes(&v.to_le_bytes()[..4]),
                    sig_field.offset,
                    hex_bytes(&consts::VMI_SIGNATURE.to_le_bytes())
                ),
            );
        }
        None => {
            stop.get_or_insert("vmi-signature");
            o.fail(
                "vmi-signature",
                None,
                format!(
                    "the image ({vlen} bytes) ends before {:#x}..{:#x}: no \"cVmi\"; Linux skips \
                     the ROM silently",
                    sig_field.offset,
                    sig_field.end()
                ),
            );
        }
    }

    // 3. API version
    let (maj_f, min_f) = (vrom::API_VERSION_MAJ, vrom::API_VERSION_MIN);
    let api = read(&maj_f).zip(read(&min_f));
    match api {
        Some((maj, min)) if maj == u64::from(consts::VMI_API_MAJOR) => o.pass(
            "api-version",
            abs(maj_f.offset),
            format!(
                "API version {maj}.{min} ({:#x} major, {:#x} minor): major {} as required; every \
                 minor passes (Linux's minor test `min + 1 < 0 + 1` is never true)",
                maj_f.offset,
                min_f.offset,
                consts::VMI_API_MAJOR
            ),
        ),
        Some((maj, min)) => {
            stop.get_or_insert("api-version");
            o.fail(
                "api-version",
                abs(maj_f.offset),
                format!(
                    "`VMI: Found mismatched rom version {maj}.{min}`: api_version_maj at {:#x} is \
                     {maj}, expected {}; Linux skips the ROM",
                    maj_f.offset,
                    consts::VMI_API_MAJOR
                ),
            );
        }
        None => {
            stop.get_or_insert("api-version");
            o.fail(
                "api-version",
                None,
                format!(
                    "the image ({vlen} bytes) ends before the API version at {:#x}..{:#x}",
                    min_f.offset,
                    maj_f.end()
                ),
            );
        }
    }

    // 4. PCI header pointer and structure
    let pci_f = vrom::PCI_HEADER_OFFS;
    let pci_size = layout::pci::LAYOUT.size;
    let mut pci_at: Option<usize> = None;
    match read(&pci_f).map(|v| v as usize) {
        None => {
            stop.get_or_insert("pci-header");
            o.fail(
                "pci-header",
                None,
                format!(
                    "the image ({vlen} bytes) ends before pci_header_offs at {:#x}",
                    pci_f.offset
                ),
            );
        }
        Some(0) => {
            stop.get_or_insert("pci-header");
            o.fail(
                "pci-header",
                abs(pci_f.offset),
                format!(
                    "`VMI: ROM does not contain PCI header.`: pci_header_offs at {:#x} is 0, \
                     expected the offset of the PCI data structure; Linux skips the ROM",
                    pci_f.offset
                ),
            );
        }
        Some(p) if p + pci_size <= vlen => {
            pci_at = Some(p);
            let sig_note = if u32_at(view, p) == Some(pcir::SIGNATURE) {
                ""
            } else {
                " (its signature is not \"PCIR\"; Linux does not check it)"
            };
            o.pass(
                "pci-header",
                abs(p),
                format!(
                    "PCI data structure at {p:#x} (pci_header_offs at {:#x}) lies inside the \
                     image{sig_note}",
                    pci_f.offset
                ),
            );
        }
        Some(p) => o.fail(
            "pci-header",
            abs(pci_f.offset),
            format!(
                "pci_header_offs at {:#x} is {p:#x}: the {pci_size:#x}-byte PCI data structure \
                 would end at {:#x}, past the image end {vlen:#x}; Linux reads the ids and the ROM \
                 version from whatever memory follows",
                pci_f.offset,
                p + pci_size
            ),
        ),
    }
    let pci_bytes = pci_at.and_then(|p| view.get(p..p + pci_size));

    // 5. PCI ids
    let (ven_f, dev_f) = (layout::pci::VENDOR_ID, layout::pci::DEVICE_ID);
    match pci_bytes.and_then(|b| ven_f.read(b).zip(dev_f.read(b))) {
        Some((v, d))
            if v == u64::from(consts::PCI_VENDOR_VMWARE)
                && d == u64::from(consts::PCI_DEVICE_VMI) =>
        {
            o.pass(
                "pci-ids",
                pci_at.and_then(|p| abs(p + ven_f.offset)),
                format!("PCI vendor:device {v:04X}:{d:04X} (VMware VMI)"),
            );
        }
        Some((v, d)) => o.warn(
            "pci-ids",
            pci_at.and_then(|p| abs(p + ven_f.offset)),
            format!(
                "`VMI: ROM from unknown manufacturer`: PCI vendor:device at {:#x} is \
                 {v:04X}:{d:04X}, expected {:04X}:{:04X}; Linux still uses the ROM",
                pci_at.unwrap_or(0) + ven_f.offset,
                consts::PCI_VENDOR_VMWARE,
                consts::PCI_DEVICE_VMI
            ),
        ),
        None => o.warn(
            "pci-ids",
            None,
            format!(
                "the PCI data structure is not inside the image, so the vendor:device ids cannot \
                 be checked; Linux compares whatever memory holds with {:04X}:{:04X} and most \
                 likely prints `VMI: ROM from unknown manufacturer`",
                consts::PCI_VENDOR_VMWARE,
                consts::PCI_DEVICE_VMI
            ),
        ),
    }

    // 6. $PnP manufacturer / product strings
    let unknown = || consts::PNP_STRING_UNKNOWN.to_string();
    let pnp_f = vrom::PNP_HEADER_OFFS;
    let pnp_offs = read(&pnp_f).unwrap_or(0) as usize;
    let (manufacturer, product) = if pnp_offs == 0 {
        o.pass(
            "pnp-strings",
            abs(pnp_f.offset),
            format!(
                "no $PnP header (pnp_header_offs at {:#x} is 0): Linux prints {} for the \
                 manufacturer and the product",
                pnp_f.offset,
                consts::PNP_STRING_UNKNOWN
            ),
        );
        (unknown(), unknown())
    } else if let Some(h) = view.get(pnp_offs..pnp_offs + layout::pnp::LAYOUT.size) {
        let mut problems = Vec::new();
        let mut first_bad: Option<usize> = None;
        let mut names = Vec::new();
        for (what, f) in [
            ("manufacturer", layout::pnp::MANUFACTURER_OFFSET),
            ("product", layout::pnp::PRODUCT_OFFSET),
        ] {
            let ptr = f.read(h).unwrap_or(0) as usize;
            let name = if ptr == 0 {
                unknown()
            } else {
                match cstr_at(view, ptr) {
                    Ok(s) => s.to_string(),
                    Err(e) => {
                        first_bad.get_or_insert(pnp_offs + f.offset);
                        problems.push(format!(
                            "the {what} offset at {:#x} ({ptr:#x}) {}",
                            pnp_offs + f.offset,
                            cstr_problem(e, ptr, vlen)
                        ));
                        "<unreadable>".to_string()
                    }
                }
            };
            names.push((what, ptr, name));
        }
        let sig_note = if u32_at(view, pnp_offs) == Some(pnp::SIGNATURE) {
            ""
        } else {
            " (its signature is not \"$PnP\"; Linux does not check it)"
        };
        if problems.is_empty() {
            let described: Vec<String> = names
                .iter()
                .map(|(what, ptr, name)| match ptr {
                    0 => format!("{what} offset 0 → \"{name}\""),
                    p => format!("{what} \"{name}\" at {p:#x}"),
                })
                .collect();
            o.pass(
                "pnp-strings",
                abs(pnp_offs),
                format!(
                    "$PnP header at {pnp_offs:#x}{sig_note}: {}",
                    described.join(", ")
                ),
            );
        } else {
            o.warn(
                "pnp-strings",
                first_bad.and_then(abs),
                format!(
                    "$PnP header at {pnp_offs:#x}: {}; Linux prints whatever bytes memory holds \
                     there (expected NUL-terminated strings inside the image)",
                    problems.join("; ")
                ),
            );
        }
        let mut it = names.into_iter().map(|(_, _, n)| n);
        (
            it.next().unwrap_or_else(unknown),
            it.next().unwrap_or_else(unknown),
        )
    } else {
        o.warn(
            "pnp-strings",
            abs(pnp_f.offset),
            format!(
                "pnp_header_offs at {:#x} is {pnp_offs:#x}: the header's string offsets \
                 ({:#x}..{:#x}) lie outside the image ({vlen:#x} bytes); Linux reads them from \
                 whatever memory follows",
                pnp_f.offset,
                pnp_offs + layout::pnp::MANUFACTURER_OFFSET.offset,
                pnp_offs + layout::pnp::PRODUCT_OFFSET.end()
            ),
        );
        ("<unreadable>".into(), "<unreadable>".into())
    };

    // 8. The line Linux prints (before the license decision).
    let license_f = vrom::LICENSE_OFFS;
    let license_offs = read(&license_f);
    let license = match license_offs {
        Some(0) | None => Ok(consts::LICENSE_UNSPECIFIED.to_string()),
        Some(p) => cstr_at(view, p as usize).map(|s| s.to_string()),
    };
    let rom_version = pci_bytes
        .and_then(|b| {
            layout::pci::ROM_VERSION_MAJ
                .read(b)
                .zip(layout::pci::ROM_VERSION_MIN.read(b))
        })
        .map_or("?.?".to_string(), |(a, b)| format!("{a}.{b}"));
    let api_text = api.map_or("?.?".to_string(), |(maj, min)| format!("{maj}.{min}"));
    match stop {
        None => o.pass(
            "found-line",
            None,
            format!(
                "Linux prints: `VMI: Found {manufacturer} {product}, API version {api_text}, ROM \
                 version {rom_version}`"
            ),
        ),
        Some(rule) => o.pass(
            "found-line",
            None,
            format!(
                "Linux prints no `VMI: Found` line: it already rejected the ROM at rule `{rule}`"
            ),
        ),
    }

    // 7 + 9. License
    let lic_at = license_offs.filter(|&p| p != 0).map(|p| p as usize);
    match (license_offs, &license) {
        (None, _) => o.fail(
            "license",
            None,
            format!(
                "the image ({vlen} bytes) ends before license_offs at {:#x}",
                license_f.offset
            ),
        ),
        (Some(0), _) => o.fail(
            "license",
            abs(license_f.offset),
            format!(
                "license_offs at {:#x} is 0: Linux assumes \"{1}\" and prints ``VMI: Non GPL \
                 license `{1}' found for ROM. Not used.``; expected the offset of \"GPL\" or \"GPL \
                 v2\"",
                license_f.offset,
                consts::LICENSE_UNSPECIFIED
            ),
        ),
        (Some(_), Ok(s)) if consts::ACCEPTED_LICENSES.contains(&s.as_str()) => o.pass(
            "license",
            lic_at.and_then(abs),
            format!(
                "license \"{s}\" at {:#x}: accepted (exactly \"GPL\" or \"GPL v2\")",
                lic_at.unwrap_or(0)
            ),
        ),
        (Some(_), Ok(s)) => o.fail(
            "license",
            lic_at.and_then(abs),
            format!(
                "``VMI: Non GPL license `{s}' found for ROM. Not used.``: the license at {:#x} is \
                 \"{s}\", expected exactly \"GPL\" or \"GPL v2\"",
                lic_at.unwrap_or(0)
            ),
        ),
        (Some(p), Err(e)) => o.fail(
            "license",
            abs(license_f.offset),
            format!(
                "license_offs at {:#x} ({p:#x}) {}: Linux compares unrelated memory with \"GPL\" \
                 and \"GPL v2\" and almost surely prints ``VMI: Non GPL license `…' found for ROM. \
                 Not used.``",
                license_f.offset,
                cstr_problem(*e, p as usize, vlen)
            ),
        ),
    }

    // Entry slots.
    if vlen >= consts::HEADER_SIZE {
        o.pass(
            "header-length",
            abs(0),
            format!(
                "the image ({vlen:#x} bytes) holds the {:#x}-byte VMI header with the entry slots \
                 at {:#x} and {:#x}",
                consts::HEADER_SIZE,
                consts::ENTRY_INIT,
                consts::ENTRY_GET_RELOC
            ),
        );
    } else {
        o.fail(
            "header-length",
            abs(0),
            format!(
                "the image is only {vlen:#x} bytes; the VMI header with the entry slots Linux \
                 near-calls at {:#x} and {:#x} needs {:#x}",
                consts::ENTRY_INIT,
                consts::ENTRY_GET_RELOC,
                consts::HEADER_SIZE
            ),
        );
    }
    entry_slot(o, view, img.offset, "init-slot", "Init", consts::ENTRY_INIT);
    entry_slot(
        o,
        view,
        img.offset,
        "get-reloc-slot",
        "GetRelocationInfo",
        consts::ENTRY_GET_RELOC,
    );

    // Scan window.
    let span = img.declared_len.max(vlen);
    let window = (consts::SCAN_END - consts::SCAN_START) as usize;
    if span <= window {
        o.pass(
            "scan-window",
            None,
            format!(
                "the image spans {span:#x} bytes ≤ {window:#x}: it fits the window {:#x}–{:#x} \
                 Linux scans (candidates every {} bytes)",
                consts::SCAN_START,
                consts::SCAN_END - 1,
                consts::SCAN_STRIDE
            ),
        );
    } else {
        o.fail(
            "scan-window",
            None,
            format!(
                "the image spans {span:#x} bytes, more than the {window:#x}-byte window {:#x}–{:#x} \
                 Linux scans: no placement keeps it below {:#x}",
                consts::SCAN_START,
                consts::SCAN_END - 1,
                consts::SCAN_END
            ),
        );
    }

    // virtual_top.
    let vt_f = vrom::VIRTUAL_TOP;
    match read(&vt_f) {
        None => o.warn(
            "virtual-top",
            None,
            format!(
                "the image ends before virtual_top at {:#x}; Linux reads it from memory",
                vt_f.offset
            ),
        ),
        Some(0) => o.pass(
            "virtual-top",
            abs(vt_f.offset),
            format!(
                "virtual_top at {:#x} is 0: Linux reserves no address-space hole",
                vt_f.offset
            ),
        ),
        Some(vt) => {
            let hole = (1u64 << 32) - vt;
            let mut msg = format!(
                "virtual_top at {:#x} is {vt:#x}: Linux reserves [{vt:#x}, 4 GiB) ({} KiB) with \
                 reserve_top_address and moves FIXADDR_TOP below it; 2.6.21 kernels built with \
                 CONFIG_COMPAT_VDSO hit BUG_ON(reserve != 0) (only virtual_top = 0 works there)",
                vt_f.offset,
                hole / 1024
            );
            if vt % 4096 != 0 {
                msg.push_str(&format!(
                    "; it is not 4 KiB aligned (expected a multiple of 0x1000, e.g. {:#x})",
                    vt & !0xFFF
                ));
            }
            o.warn("virtual-top", abs(vt_f.offset), msg);
        }
    }

    // Checksum: Linux never checks it.
    let ck_at = img.declared_len.checked_sub(1).and_then(abs);
    match img.sum {
        Some(0) => o.pass(
            "checksum",
            ck_at,
            format!(
                "Linux never checks the checksum; the {:#x} bytes sum to 0 as a BIOS requires",
                img.declared_len
            ),
        ),
        Some(s) => o.warn(
            "checksum",
            ck_at,
            format!(
                "Linux never checks the checksum, but the {:#x} bytes sum to {s:#04x}, expected 0: \
                 a BIOS that loads the ROM (SeaBIOS) drops it, so Linux never finds it",
                img.declared_len
            ),
        ),
        None => o.warn(
            "checksum",
            abs(2),
            format!(
                "Linux never checks the checksum, but it cannot be verified: the size byte is {} \
                 and the file holds {:#x} bytes of the image; a BIOS sums size×512 bytes to 0",
                img.size_byte, img.available
            ),
        ),
    }
}

/// One 8-byte VMI entry slot: present, not all zero, and a `jmp` in it stays inside the image.
fn entry_slot(o: &mut Out, view: &[u8], base: usize, rule: &'static str, name: &str, off: usize) {
    let vlen = view.len();
    let end = off + consts::ENTRY_SLOT_SIZE;
    let at = Some(base.saturating_add(off));
    let Some(slot) = view.get(off..end) else {
        o.fail(
            rule,
            None,
            format!(
                "the {name} slot {off:#x}..{end:#x} lies outside the image ({vlen:#x} bytes): \
                 Linux near-calls ROM+{off:#x} and executes whatever memory holds"
            ),
        );
        return;
    };
    if slot.iter().all(|&b| b == 0) {
        o.fail(
            rule,
            at,
            format!(
                "the {name} slot at {off:#x} is all zero: Linux near-calls ROM+{off:#x}, expected \
                 code (e.g. a 5-byte jmp rel32 to the implementation)"
            ),
        );
        return;
    }
    match slot.first() {
        Some(0xEB | 0xE9) => match jump_target(view, off, Mode::Bits32) {
            Some(t) if t < vlen => o.pass(
                rule,
                at,
                format!("the {name} slot at {off:#x} jumps to {t:#x}, inside the image"),
            ),
            Some(t) => o.fail(
                rule,
                at,
                format!(
                    "the {name} slot at {off:#x} jumps to {t:#x}, outside the image ({vlen:#x} \
                     bytes); expected a target inside the image"
                ),
            ),
            None => o.fail(
                rule,
                at,
                format!(
                    "the {name} slot at {off:#x} ({}) jumps before the image start; expected a \
                     target inside the image",
                    hex_bytes(slot)
                ),
            ),
        },
        _ => o.pass(
            rule,
            at,
            format!(
                "the {name} slot at {off:#x} holds {}: not a near jmp, executed in place",
                hex_bytes(slot)
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// seabios
// ---------------------------------------------------------------------------------------------

fn seabios(o: &mut Out, data: &[u8], rom: &Rom, img: &Image) {
    let view = img.bytes(data);
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    let declared = img.declared_len;

    o.pass("signature", abs(0), "55 AA at 0x0".into());

    // size byte
    if img.size_byte == 0 {
        o.fail(
            "size",
            abs(2),
            "the size byte at 0x2 is 0: SeaBIOS's is_valid_rom rejects the ROM (expected the \
             image length in 512-byte units)"
                .into(),
        );
    } else {
        o.pass(
            "size",
            abs(2),
            format!("size byte at 0x2 is {}: {declared:#x} bytes", img.size_byte),
        );
        // length
        if img.available >= declared {
            o.pass(
                "length",
                abs(2),
                format!("all {declared:#x} bytes the size byte declares are in the file"),
            );
        } else {
            o.warn(
                "length",
                abs(2),
                format!(
                    "the file holds only {:#x} of the {declared:#x} bytes the size byte declares: \
                     SeaBIOS checksums and keeps {declared:#x} bytes, the missing ones read as \
                     whatever memory follows the copy (zero after SeaBIOS clears the ROM area, \
                     unless an earlier ROM file was longer)",
                    img.available
                ),
            );
        }
        // checksum
        let ck = declared - 1;
        let ck_at = abs(ck);
        match img.sum {
            Some(0) => o.pass(
                "checksum",
                ck_at,
                format!("the {declared:#x} bytes 0x0..{declared:#x} sum to 0 mod 256"),
            ),
            Some(s) => {
                let fix = view.get(ck).map_or(String::new(), |&b| {
                    format!(
                        "; e.g. the last byte at {ck:#x} ({b:#04x}) would have to be {:#04x}",
                        b.wrapping_sub(s)
                    )
                });
                o.fail(
                    "checksum",
                    ck_at,
                    format!(
                        "the {declared:#x} bytes sum to {s:#04x}, expected 0: SeaBIOS logs 'Found \
                         option rom with bad checksum' and drops it{fix}"
                    ),
                );
            }
            None => {
                let s = checksum(view);
                if s == 0 {
                    o.warn(
                        "checksum",
                        abs(2),
                        format!(
                            "only {vlen:#x} of {declared:#x} bytes are present; they sum to 0, so \
                             the checksum holds only if the missing bytes read as 0"
                        ),
                    );
                    missing_bytes(o, img, vlen, abs(2));
                } else {
                    o.fail(
                        "checksum",
                        abs(2),
                        format!(
                            "the {vlen:#x} present bytes (of {declared:#x}) sum to {s:#04x} with \
                             the missing bytes read as 0, expected 0: SeaBIOS logs 'Found option \
                             rom with bad checksum' and drops it"
                        ),
                    );
                }
            }
        }
    }

    // PCIR alignment
    let ptr = usize::from(img.pcir_ptr);
    if ptr == 0 {
        o.pass(
            "pcir-alignment",
            abs(PCIR_PTR),
            "no PCI data structure (pointer at 0x18 is 0); SeaBIOS does not need one for an \
             -option-rom file"
                .into(),
        );
    } else if ptr % 4 != 0 {
        o.warn(
            "pcir-alignment",
            abs(PCIR_PTR),
            format!(
                "the PCI data structure pointer at 0x18 is {ptr:#x}, not a multiple of 4: SeaBIOS \
                 prints 'WARNING! Found unaligned PCI rom' when it maps the ROM from a PCI ROM BAR"
            ),
        );
    } else {
        o.pass(
            "pcir-alignment",
            abs(PCIR_PTR),
            format!("the PCI data structure pointer at 0x18 is {ptr:#x}, 4-byte aligned"),
        );
    }

    // $PnP: SeaBIOS's get_pnp_rom checks only the signature.
    let pnp_ptr = usize::from(img.pnp_ptr);
    let later = "SeaBIOS registers the ROM as a boot-connection vector; init runs only when \
                 booting from it";
    if pnp_ptr == 0 {
        o.warn(
            "pnp",
            abs(PNP_PTR),
            format!("no $PnP header (pointer at 0x1A is 0): {later}"),
        );
    } else if u32_at(view, pnp_ptr) == Some(pnp::SIGNATURE) {
        let vectors = match img.pnp.present().and_then(|c| c.first()) {
            Some(h) if h.bev != 0 => format!("; it has a bootstrap entry vector at {:#x}", h.bev),
            Some(h) if h.bcv != 0 => format!("; it has a boot-connection vector at {:#x}", h.bcv),
            _ => "; no BEV/BCV: not offered as a boot device".to_string(),
        };
        o.pass(
            "pnp",
            abs(pnp_ptr),
            format!(
                "$PnP header at {pnp_ptr:#x}: the init entry is far-called during the option-ROM \
                 scan (real mode, AX=0, ES:DI → SeaBIOS's $PnP structure){vectors}"
            ),
        );
    } else {
        let found = view
            .get(pnp_ptr..pnp_ptr + 4)
            .map_or("bytes outside the image".to_string(), hex_bytes);
        o.warn(
            "pnp",
            abs(PNP_PTR),
            format!(
                "the $PnP pointer at 0x1A ({pnp_ptr:#x}) leads to {found}, not \"$PnP\": {later}"
            ),
        );
    }

    // init entry
    let entry = &img.init_entry;
    if entry.len() < 3 {
        o.fail(
            "init-entry",
            abs(INIT_ENTRY),
            format!(
                "the image ends at {vlen:#x}, inside the init entry at 0x3; expected code there"
            ),
        );
    } else if entry.iter().all(|&b| b == 0) {
        o.fail(
            "init-entry",
            abs(INIT_ENTRY),
            format!(
                "the init entry at 0x3 is {}: zero bytes, expected code (usually a near jmp); \
                 SeaBIOS far-calls ROM:0003",
                hex_bytes(entry)
            ),
        );
    } else {
        match (entry.first(), img.init_target) {
            (Some(0xEB | 0xE9), Some(t)) if t < vlen => o.pass(
                "init-entry",
                abs(INIT_ENTRY),
                format!("the init entry at 0x3 jumps to {t:#x}, inside the image"),
            ),
            (Some(0xEB | 0xE9), Some(t)) => o.fail(
                "init-entry",
                abs(INIT_ENTRY),
                format!(
                    "the init entry at 0x3 jumps to {t:#x}, outside the image ({vlen:#x} bytes); \
                     expected a target inside the image"
                ),
            ),
            (Some(0xEB | 0xE9), None) => o.fail(
                "init-entry",
                abs(INIT_ENTRY),
                format!(
                    "the init entry at 0x3 ({}) jumps before the image start",
                    hex_bytes(entry)
                ),
            ),
            _ => o.pass(
                "init-entry",
                abs(INIT_ENTRY),
                format!(
                    "the init entry at 0x3 holds {}: not a near jmp, executed in place",
                    hex_bytes(entry)
                ),
            ),
        }
    }

    // placement
    let reserve = data.len().saturating_sub(img.offset).max(declared);
    let window = (consts::SCAN_END - consts::SCAN_START) as usize;
    let start = seabios::TYPICAL_START as usize;
    let end = start.saturating_add(reserve);
    let what = format!(
        "SeaBIOS reserves {reserve:#x} bytes (the file, {:#x}, then keeps size×512 = {declared:#x})",
        data.len()
    );
    if reserve > window {
        o.fail(
            "placement",
            None,
            format!(
                "{what}: more than the whole {window:#x}-byte area {:#x}–{:#x}; the ROM cannot \
                 end below {:#x} where the VMI client stops scanning",
                consts::SCAN_START,
                consts::SCAN_END - 1,
                consts::SCAN_END
            ),
        );
    } else if end > consts::SCAN_END as usize {
        o.warn(
            "placement",
            None,
            format!(
                "{what}: after QEMU's ≈{} KiB VGA ROM it lands at {start:#x} (next {}-byte \
                 boundary) and would end at {:#x}, past {:#x} where the VMI client stops scanning \
                 (it fits only with a smaller VGA ROM)",
                seabios::VGA_ROM_LEN / 1024,
                seabios::ROM_ALIGN,
                end - 1,
                consts::SCAN_END - 1
            ),
        );
    } else {
        o.pass(
            "placement",
            None,
            format!(
                "{what}: it is copied to the next {}-byte boundary after the VGA ROM ({start:#x} \
                 after QEMU's ≈{} KiB VGA ROM with -net none; a NIC ROM or the file name moves \
                 it) and ends at {:#x}, below {:#x}",
                seabios::ROM_ALIGN,
                seabios::VGA_ROM_LEN / 1024,
                end - 1,
                consts::SCAN_END
            ),
        );
    }

    // images
    match rom.images.get(1) {
        None => o.pass("images", None, "one image".into()),
        Some(second) => o.pass(
            "images",
            Some(second.offset),
            format!(
                "{} images: for -option-rom SeaBIOS keeps only image 0's size×512 bytes; images \
                 1..{} (from {:#x}) are ignored",
                rom.images.len(),
                rom.images.len() - 1,
                second.offset
            ),
        ),
    }

    // size re-read
    o.pass(
        "size-reread",
        abs(2),
        format!(
            "after init SeaBIOS re-reads the size byte at 0x2 (now {} = {declared:#x} bytes) and \
             keeps that many; an init routine may shrink the ROM by lowering it (the later \
             boot-vector scan checksums the ROM again)",
            img.size_byte
        ),
    );
}

/// `missing-bytes`: a file shorter than its size byte declares whose `present` bytes sum to 0.
/// SeaBIOS accepts it, then checksums, keeps and runs bytes the file does not hold (when the
/// present bytes do not sum to 0, `checksum` fails instead: SeaBIOS drops the ROM).
fn missing_bytes(o: &mut Out, img: &Image, present: usize, at: Option<usize>) {
    let declared = img.declared_len;
    let runs = match img.init_target {
        Some(t) if t >= present => {
            format!(" (the init entry at 0x3 jumps to {t:#x}, into the missing bytes)")
        }
        _ => String::new(),
    };
    let blocks = present.div_ceil(BLOCK);
    o.fail(
        "missing-bytes",
        at,
        format!(
            "the size byte at 0x2 declares {declared:#x} bytes but the file ends at {present:#x}: \
             the bytes {present:#x}..{declared:#x} that SeaBIOS checksums, keeps and runs are not \
             in the file{runs}; the present bytes sum to 0, so SeaBIOS accepts the ROM and what \
             it loads depends on memory the file does not control; expected all {declared:#x} \
             bytes in the file, or a size byte of {blocks} ({:#x} bytes) declaring what it holds",
            blocks * BLOCK
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// pci
// ---------------------------------------------------------------------------------------------

fn pci(o: &mut Out, data: &[u8], rom: &Rom) {
    let n = rom.images.len();
    for img in &rom.images {
        o.prefix = format!("image {} at {:#x}: ", img.index, img.offset);
        pci_image(o, data, img, img.index + 1 == n);
    }
    o.prefix.clear();
    chain_end(o, data, rom);
}

fn pci_image(o: &mut Out, data: &[u8], img: &Image, last: bool) {
    let view = img.bytes(data);
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));

    o.pass("signature", abs(0), "55 AA".into());

    // image-complete
    let need = img.declared_len.max(img.chain_len);
    if need > 0 {
        if img.available >= need {
            o.pass(
                "image-complete",
                abs(2),
                format!("all {need:#x} declared bytes are in the file"),
            );
        } else {
            o.fail(
                "image-complete",
                abs(2),
                format!(
                    "the image declares {need:#x} bytes (size byte {}, PCIR image length {}) but \
                     the file holds only {:#x} from {:#x}: truncated",
                    img.size_byte,
                    img.pcir.present().map_or(0, |p| p.image_length),
                    img.available,
                    img.offset
                ),
            );
        }
    }

    // PCI data structure
    let ptr = usize::from(img.pcir_ptr);
    match &img.pcir {
        Slot::Absent => o.fail(
            "pcir-pointer",
            abs(PCIR_PTR),
            "the PCI data structure pointer at 0x18 is 0: a PCI expansion ROM image needs a \
             \"PCIR\" structure"
                .into(),
        ),
        Slot::OutOfBounds { offset, need, .. } => o.fail(
            "pcir-pointer",
            abs(PCIR_PTR),
            format!(
                "the PCI data structure pointer at 0x18 is {offset:#x}: the {need:#x}-byte \
                 structure would end at {:#x}, past the image end {vlen:#x}",
                offset + need
            ),
        ),
        Slot::Present(p) => {
            o.pass(
                "pcir-pointer",
                abs(PCIR_PTR),
                format!("PCI data structure at {ptr:#x}, inside the image"),
            );
            pcir_rules(o, img, view, ptr, p, last);
        }
    }

    // checksum (x86 images)
    let x86 = img.efi.is_none()
        && img
            .pcir
            .present()
            .is_none_or(|p| p.code_type == CodeType::X86);
    if x86 {
        let declared = img.declared_len;
        let ck_at = declared.checked_sub(1).and_then(abs);
        match img.sum {
            Some(0) => o.pass(
                "checksum",
                ck_at,
                format!("the {declared:#x} bytes sum to 0 mod 256"),
            ),
            Some(s) => o.fail(
                "checksum",
                ck_at,
                format!(
                    "the {declared:#x} bytes sum to {s:#04x}, expected 0: a BIOS drops the image"
                ),
            ),
            None if declared == 0 => o.fail(
                "checksum",
                abs(2),
                "the size byte at 0x2 is 0: no checksum range (expected the length in 512-byte \
                 units)"
                    .into(),
            ),
            None => o.fail(
                "checksum",
                abs(2),
                format!(
                    "cannot be verified: the image is truncated ({:#x} of {declared:#x} bytes)",
                    img.available
                ),
            ),
        }
    }

    if let Some(e) = &img.efi {
        efi_rules(o, img, view, e);
    } else {
        pnp_rules(o, img, view);
    }
}

fn pcir_rules(o: &mut Out, img: &Image, view: &[u8], ptr: usize, p: &Pcir, last: bool) {
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    let f = |field: usize| abs(ptr + field);

    if p.signature == pcir::SIGNATURE {
        o.pass("pcir-signature", f(0), format!("\"PCIR\" at {ptr:#x}"));
    } else {
        o.fail(
            "pcir-signature",
            f(0),
            format!(
                "found {} at {ptr:#x}, expected \"PCIR\" (50 43 49 52)",
                hex_bytes(&p.signature.to_le_bytes())
            ),
        );
    }

    if ptr % 4 == 0 {
        o.pass(
            "pcir-alignment",
            abs(PCIR_PTR),
            format!("{ptr:#x} is DWORD aligned"),
        );
    } else {
        o.warn(
            "pcir-alignment",
            abs(PCIR_PTR),
            format!(
                "{ptr:#x} is not DWORD aligned: the PCI Firmware specification requires a \
                 multiple of 4"
            ),
        );
    }

    let len_at = f(pcir::off::LENGTH);
    let expected = match p.revision {
        0 => Some(pcir::LEN_REV2),
        pcir::REVISION_3 => Some(pcir::LEN_REV3),
        _ => None,
    };
    let struct_end = ptr + usize::from(p.length);
    match expected {
        Some(e) if p.length != e => o.fail(
            "pcir-length",
            len_at,
            format!(
                "structure length at {:#x} is {:#x}, expected {e:#x} for revision {}",
                ptr + pcir::off::LENGTH,
                p.length,
                p.revision
            ),
        ),
        None if p.length < pcir::LEN_REV2 => o.fail(
            "pcir-length",
            len_at,
            format!(
                "structure length at {:#x} is {:#x}, expected at least {:#x}",
                ptr + pcir::off::LENGTH,
                p.length,
                pcir::LEN_REV2
            ),
        ),
        _ if struct_end > vlen => o.fail(
            "pcir-length",
            len_at,
            format!(
                "structure length {:#x} makes the structure end at {struct_end:#x}, past the image \
                 end {vlen:#x}",
                p.length
            ),
        ),
        _ => o.pass(
            "pcir-length",
            len_at,
            format!("structure length {:#x}", p.length),
        ),
    }

    let rev_at = f(pcir::off::REVISION);
    match p.revision {
        0 | pcir::REVISION_3 => o.pass(
            "pcir-revision",
            rev_at,
            format!(
                "revision {} ({})",
                p.revision,
                if p.revision == 0 {
                    "PCI 2.x"
                } else {
                    "PCI Firmware 3.0"
                }
            ),
        ),
        r => o.warn(
            "pcir-revision",
            rev_at,
            format!(
                "revision {r} at {:#x}: expected 0 (PCI 2.x) or 3 (PCI Firmware 3.0)",
                ptr + pcir::off::REVISION
            ),
        ),
    }

    let il_at = f(pcir::off::IMAGE_LENGTH);
    let il = p.image_length;
    match (&img.efi, p.code_type) {
        _ if il == 0 => o.fail(
            "image-length",
            il_at,
            format!(
                "PCIR image length at {:#x} is 0, expected the image length in 512-byte units",
                ptr + pcir::off::IMAGE_LENGTH
            ),
        ),
        (None, CodeType::X86) if il != u16::from(img.size_byte) => o.fail(
            "image-length",
            il_at,
            format!(
                "PCIR image length at {:#x} is {il} blocks, the size byte at 0x2 says {}: a legacy \
                 x86 image must give the same length in both",
                ptr + pcir::off::IMAGE_LENGTH,
                img.size_byte
            ),
        ),
        (Some(e), _) if e.initialization_size > il => o.fail(
            "image-length",
            il_at,
            format!(
                "the EFI initialization size ({} blocks) exceeds the PCIR image length ({il} \
                 blocks)",
                e.initialization_size
            ),
        ),
        _ => o.pass(
            "image-length",
            il_at,
            format!(
                "image length {il} blocks ({:#x} bytes)",
                usize::from(il) * BLOCK
            ),
        ),
    }

    let ct_at = f(pcir::off::CODE_TYPE);
    match p.code_type {
        CodeType::Other(v) => o.warn(
            "code-type",
            ct_at,
            format!(
                "code type {v:#04x} at {:#x} is not one the PCI Firmware specification defines \
                 (0 x86, 1 Open Firmware, 2 PA-RISC, 3 EFI)",
                ptr + pcir::off::CODE_TYPE
            ),
        ),
        c => o.pass(
            "code-type",
            ct_at,
            format!("code type {} ({})", c.value(), img.kind()),
        ),
    }

    let ind_at = f(pcir::off::INDICATOR);
    match (last, p.is_last()) {
        (true, true) => o.pass(
            "last-image",
            ind_at,
            "the final image has the last-image bit (indicator bit 7) set".into(),
        ),
        (false, false) => o.pass(
            "last-image",
            ind_at,
            "the last-image bit is clear and another image follows".into(),
        ),
        (true, false) => o.fail(
            "last-image",
            ind_at,
            format!(
                "indicator at {:#x} is {:#04x}: the final image of the file must set bit 7 (last \
                 image)",
                ptr + pcir::off::INDICATOR,
                p.indicator
            ),
        ),
        (false, true) => o.fail(
            "last-image",
            ind_at,
            format!(
                "indicator at {:#x} is {:#04x}: the last-image bit is set but another image follows",
                ptr + pcir::off::INDICATOR,
                p.indicator
            ),
        ),
    }

    if p.is_rev3() {
        let dl_at = f(pcir::off::DEVICE_LIST);
        if p.device_list_ptr == 0 {
            o.pass("device-list", dl_at, "no device list".into());
        } else {
            let start = ptr + usize::from(p.device_list_ptr);
            let mut at = start;
            let mut count = 0usize;
            loop {
                match u16_at(view, at) {
                    Some(0) => {
                        o.pass(
                            "device-list",
                            abs(start),
                            format!("device list at {start:#x}: {count} id(s), 0-terminated"),
                        );
                        break;
                    }
                    Some(_) if count >= pcir::MAX_DEVICE_LIST => {
                        o.fail(
                            "device-list",
                            abs(start),
                            format!(
                                "the device list at {start:#x} has no 0 terminator within its \
                                 first {} ids",
                                pcir::MAX_DEVICE_LIST
                            ),
                        );
                        break;
                    }
                    Some(_) => {
                        count += 1;
                        at += 2;
                    }
                    None if at == start => {
                        o.fail(
                            "device-list",
                            dl_at,
                            format!(
                                "the device list pointer at {:#x} ({:#x}, from the structure) \
                                 leads to {start:#x}, outside the image ({vlen:#x} bytes)",
                                ptr + pcir::off::DEVICE_LIST,
                                p.device_list_ptr
                            ),
                        );
                        break;
                    }
                    None => {
                        o.fail(
                            "device-list",
                            abs(start),
                            format!(
                                "the device list at {start:#x} has no 0 terminator before the \
                                 image end {vlen:#x}"
                            ),
                        );
                        break;
                    }
                }
            }
        }
        for (rule, name, field, value) in [
            (
                "config-utility",
                "configuration-utility code header",
                pcir::off::CONFIG_UTILITY,
                p.config_utility_ptr,
            ),
            (
                "dmtf-clp",
                "DMTF CLP entry point",
                pcir::off::DMTF_CLP,
                p.dmtf_clp_ptr,
            ),
        ] {
            match value.map(usize::from) {
                None => {}
                Some(0) => o.pass(rule, f(field), format!("no {name}")),
                Some(v) if v < vlen => o.pass(
                    rule,
                    abs(v),
                    format!("{name} at {v:#x}, inside the image"),
                ),
                Some(v) => o.fail(
                    rule,
                    f(field),
                    format!(
                        "the {name} pointer at {:#x} is {v:#x}, outside the image ({vlen:#x} bytes)",
                        ptr + field
                    ),
                ),
            }
        }
    }
}

fn pnp_rules(o: &mut Out, img: &Image, view: &[u8]) {
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    match &img.pnp {
        Slot::Absent => o.pass(
            "pnp-header",
            abs(PNP_PTR),
            "no $PnP header (pointer at 0x1A is 0); it is optional, but without one a BIOS runs \
             the init entry only as a boot-connection vector"
                .into(),
        ),
        Slot::OutOfBounds { offset, need, .. } => o.fail(
            "pnp-header",
            abs(PNP_PTR),
            format!(
                "the $PnP pointer at 0x1A is {offset:#x}: the {need:#x}-byte header would end at \
                 {:#x}, past the image end {vlen:#x}",
                offset + need
            ),
        ),
        Slot::Present(chain) => {
            o.pass(
                "pnp-header",
                abs(PNP_PTR),
                format!(
                    "{} $PnP header(s), the first at {:#x}",
                    chain.len(),
                    img.pnp_ptr
                ),
            );
            for (k, h) in chain.iter().enumerate() {
                pnp_header_rules(o, img, view, chain, k, h);
            }
        }
    }
}

fn pnp_header_rules(
    o: &mut Out,
    img: &Image,
    view: &[u8],
    chain: &[PnpHeader],
    k: usize,
    h: &PnpHeader,
) {
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    let at = h.offset;
    let f = |field: usize| abs(at + field);
    let who = format!("$PnP header {k} at {at:#x}");

    if h.signature_ok() {
        o.pass("pnp-signature", f(0), format!("{who}: \"$PnP\""));
    } else {
        o.fail(
            "pnp-signature",
            f(0),
            format!(
                "{who}: found {}, expected \"$PnP\" (24 50 6E 50)",
                hex_bytes(&h.signature.to_le_bytes())
            ),
        );
    }

    if h.revision == 1 {
        o.pass(
            "pnp-revision",
            f(pnp::off::REVISION),
            format!("{who}: revision 1"),
        );
    } else {
        o.warn(
            "pnp-revision",
            f(pnp::off::REVISION),
            format!(
                "{who}: revision {} at {:#x}, expected 1",
                h.revision,
                at + pnp::off::REVISION
            ),
        );
    }

    let want_len = (pnp::LEN / 16) as u8;
    if h.length == want_len {
        o.pass(
            "pnp-length",
            f(pnp::off::LENGTH),
            format!("{who}: length {want_len} (×16 bytes)"),
        );
    } else {
        o.fail(
            "pnp-length",
            f(pnp::off::LENGTH),
            format!(
                "{who}: length {} at {:#x}, expected {want_len} (×16 = {:#x} bytes)",
                h.length,
                at + pnp::off::LENGTH,
                pnp::LEN
            ),
        );
    }

    let covered = usize::from(h.length) * 16;
    match h.sum {
        Some(0) => o.pass(
            "pnp-checksum",
            f(pnp::off::CHECKSUM),
            format!("{who}: its {covered:#x} bytes sum to 0"),
        ),
        Some(s) => o.fail(
            "pnp-checksum",
            f(pnp::off::CHECKSUM),
            format!(
                "{who}: its {covered:#x} bytes sum to {s:#04x}, expected 0 (checksum byte at \
                 {:#x} is {:#04x}, would have to be {:#04x})",
                at + pnp::off::CHECKSUM,
                h.checksum_byte,
                h.checksum_byte.wrapping_sub(s)
            ),
        ),
        None => o.fail(
            "pnp-checksum",
            f(pnp::off::CHECKSUM),
            format!(
                "{who}: its length ({} × 16 bytes) runs past the image end {vlen:#x}; the \
                 checksum cannot cover it",
                h.length
            ),
        ),
    }

    let next = usize::from(h.next);
    let next_at = f(pnp::off::NEXT);
    if next == 0 {
        o.pass(
            "pnp-next",
            next_at,
            format!("{who}: last header (next = 0)"),
        );
    } else if next + pnp::LEN > vlen {
        o.fail(
            "pnp-next",
            next_at,
            format!(
                "{who}: next pointer {next:#x}: a {:#x}-byte header there would end past the \
                 image end {vlen:#x}",
                pnp::LEN
            ),
        );
    } else if chain.iter().take(k + 1).any(|c| c.offset == next) {
        o.fail(
            "pnp-next",
            next_at,
            format!("{who}: next pointer {next:#x} loops back to an earlier header"),
        );
    } else if chain.get(k + 1).is_some_and(|c| c.offset == next) {
        o.pass(
            "pnp-next",
            next_at,
            format!("{who}: next header at {next:#x}"),
        );
    } else if k + 1 >= pnp::MAX_CHAIN {
        o.warn(
            "pnp-next",
            next_at,
            format!(
                "{who}: the chain is longer than {} headers; the walk stopped here",
                pnp::MAX_CHAIN
            ),
        );
    } else {
        o.warn(
            "pnp-next",
            next_at,
            format!(
                "{who}: next pointer {next:#x} is not followed because this header's signature is \
                 wrong"
            ),
        );
    }

    let mut problems = Vec::new();
    let mut first_bad = None;
    let mut names = Vec::new();
    for (what, field, ptr) in [
        ("manufacturer", pnp::off::MANUFACTURER, h.manufacturer_ptr),
        ("product", pnp::off::PRODUCT, h.product_ptr),
    ] {
        let ptr = usize::from(ptr);
        if ptr == 0 {
            names.push(format!("no {what} string"));
            continue;
        }
        match cstr_at(view, ptr) {
            Ok(s) => names.push(format!("{what} \"{s}\" at {ptr:#x}")),
            Err(e) => {
                first_bad.get_or_insert(at + field);
                problems.push(format!(
                    "the {what} pointer at {:#x} ({ptr:#x}) {}",
                    at + field,
                    cstr_problem(e, ptr, vlen)
                ));
            }
        }
    }
    if problems.is_empty() {
        o.pass(
            "pnp-strings",
            f(pnp::off::MANUFACTURER),
            format!("{who}: {}", names.join(", ")),
        );
    } else {
        o.fail(
            "pnp-strings",
            first_bad.and_then(abs),
            format!(
                "{who}: {}; expected NUL-terminated strings inside the image",
                problems.join("; ")
            ),
        );
    }
}

fn efi_rules(o: &mut Out, img: &Image, view: &[u8], e: &EfiHeader) {
    let vlen = view.len();
    let abs = |rel: usize| Some(img.offset.saturating_add(rel));
    if e.signature == EFI_SIGNATURE {
        o.pass(
            "efi-signature",
            abs(4),
            "EFI signature 0x0EF1 at 0x4".into(),
        );
    } else {
        o.fail(
            "efi-signature",
            abs(4),
            format!(
                "EFI signature at 0x4 is {:#x}, expected {EFI_SIGNATURE:#06x}",
                e.signature
            ),
        );
    }
    if e.subsystem_name() == "unknown" {
        o.warn(
            "efi-subsystem",
            abs(8),
            format!(
                "EFI subsystem at 0x8 is {}, expected 10 (application), 11 (boot-service driver) \
                 or 12 (runtime driver)",
                e.subsystem
            ),
        );
    } else {
        o.pass(
            "efi-subsystem",
            abs(8),
            format!("EFI subsystem {} ({})", e.subsystem, e.subsystem_name()),
        );
    }
    if e.machine_name() == "unknown" {
        o.warn(
            "efi-machine",
            abs(0xA),
            format!(
                "EFI machine type at 0xa is {:#06x}, not a known PE/COFF machine (0x14c IA32, \
                 0x8664 x64, 0xaa64 AArch64, 0xebc EBC, …)",
                e.machine
            ),
        );
    } else {
        o.pass(
            "efi-machine",
            abs(0xA),
            format!("EFI machine type {:#06x} ({})", e.machine, e.machine_name()),
        );
    }
    let pe = usize::from(e.pe_offset);
    if pe == 0 || pe >= vlen {
        o.fail(
            "efi-pe-offset",
            abs(0x16),
            format!(
                "the EFI image offset at 0x16 is {pe:#x}, expected the offset of the PE/COFF image \
                 inside the image ({vlen:#x} bytes)"
            ),
        );
    } else if view.get(pe..pe + 2) == Some(b"MZ".as_slice()) {
        o.pass(
            "efi-pe-offset",
            abs(pe),
            format!("PE/COFF image (\"MZ\") at {pe:#x}"),
        );
    } else {
        o.warn(
            "efi-pe-offset",
            abs(pe),
            format!(
                "the EFI image offset {pe:#x} is inside the image, but no \"MZ\" header is there"
            ),
        );
    }
}

fn chain_end(o: &mut Out, data: &[u8], rom: &Rom) {
    let n = rom.images.len();
    let last = n.saturating_sub(1);
    let last_off = rom.images.last().map_or(0, |i| i.offset);
    match rom.chain_end {
        ChainEnd::LastImageBit => o.pass(
            "chain-end",
            None,
            format!("the chain ends at image {last} (last-image bit set); {n} image(s)"),
        ),
        ChainEnd::NoPcir => o.pass(
            "chain-end",
            None,
            format!(
                "the chain ends at image {last}: it has no readable PCI data structure, so no \
                 further image can be located"
            ),
        ),
        ChainEnd::EndOfFile => o.fail(
            "chain-end",
            None,
            format!(
                "image {last} is not marked last, but the file ends where the next image would \
                 start ({:#x})",
                rom.next_offset.unwrap_or(data.len())
            ),
        ),
        ChainEnd::ZeroLength => o.fail(
            "chain-end",
            Some(last_off.saturating_add(2)),
            format!(
                "image {last} has length 0 (size byte and PCIR image length) and is not marked \
                 last: the chain cannot advance"
            ),
        ),
        ChainEnd::NextNotAnImage => {
            let next = rom.next_offset.unwrap_or(data.len());
            let found = data
                .get(next..next.saturating_add(2))
                .map_or("nothing".to_string(), hex_bytes);
            o.fail(
                "chain-end",
                Some(next),
                format!(
                    "image {last} is not marked last, but at {next:#x}, where the next image \
                     would start, the bytes are {found}, not 55 AA"
                ),
            );
        }
        ChainEnd::TooManyImages => o.fail(
            "chain-end",
            None,
            format!(
                "the walk stopped after {n} images, the most a {}-byte file can hold",
                data.len()
            ),
        ),
        ChainEnd::TooShort | ChainEnd::NoSignature => o.fail(
            "chain-end",
            None,
            "no image: the file does not start with an option-ROM header".into(),
        ),
    }
    match rom.trailing {
        Some((off, len)) => o.warn(
            "trailing-bytes",
            Some(off),
            format!(
                "{len} byte(s) after the last image, from {off:#x} to the end of the file: not \
                 part of any image"
            ),
        ),
        None => o.pass(
            "trailing-bytes",
            None,
            "no bytes after the last image".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Finish;
    use crate::parse;
    use crate::vmi::{VmiHeaderSpec, write_header};
    use crate::{ImageBuilder, pcir::Pcir, pnp::PnpHeader};

    /// A valid VMI ROM: PCIR at 0x20 (15AD:0801, code revision 1.2), $PnP at 0x40 with
    /// manufacturer and product strings, 32-bit Init and GetRelocationInfo code.
    fn vmi_rom_with(spec: &VmiHeaderSpec) -> Vec<u8> {
        let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
        let mut p = Pcir::new(
            consts::PCI_VENDOR_VMWARE,
            consts::PCI_DEVICE_VMI,
            0x05_80_00,
        );
        p.code_revision = 0x0102;
        b.set_pcir(Some(0x20), p).unwrap();
        let m = b.add_string("VMware").unwrap();
        let n = b.add_string("VMI ROM").unwrap();
        b.add_pnp(Some(0x40), PnpHeader::new(m, n, 0x05_80_00))
            .unwrap();
        let init = b.append(&[0x31, 0xC0, 0xC3], 16);
        let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
        write_header(&mut b, spec, init, reloc).unwrap();
        b.finish(&Finish::default()).unwrap()
    }

    fn vmi_rom() -> Vec<u8> {
        vmi_rom_with(&VmiHeaderSpec::default())
    }

    /// Makes the image sum to 0 again by adjusting its last byte.
    fn resum(d: &mut [u8]) {
        let len = usize::from(d[2]) * 512;
        d[len - 1] = 0;
        d[len - 1] = 0u8.wrapping_sub(checksum(&d[..len]));
    }

    fn run(d: &[u8], p: Profile) -> Vec<Finding> {
        let f = validate(d, &parse(d), p);
        for x in &f {
            assert!(x.offset.is_none_or(|o| o < d.len()), "{x:?}");
            assert_eq!(x.profile, p.name());
        }
        f
    }

    fn get<'a>(f: &'a [Finding], rule: &str) -> &'a Finding {
        f.iter()
            .find(|x| x.rule == rule)
            .unwrap_or_else(|| panic!("no finding {rule} in {f:#?}"))
    }

    fn sev(f: &[Finding], rule: &str) -> Severity {
        get(f, rule).severity
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|x| x.rule).collect()
    }

    /// Rules that are not `Pass`, with their severity.
    fn non_pass(f: &[Finding]) -> Vec<(&'static str, Severity)> {
        f.iter()
            .filter(|x| x.severity != Severity::Pass)
            .map(|x| (x.rule, x.severity))
            .collect()
    }

    #[test]
    fn valid_vmi_rom_passes_every_rule_of_linux_vmi() {
        let d = vmi_rom();
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(
            rules(&f),
            [
                "scope",
                "signature",
                "vmi-signature",
                "api-version",
                "pci-header",
                "pci-ids",
                "pnp-strings",
                "found-line",
                "license",
                "header-length",
                "init-slot",
                "get-reloc-slot",
                "scan-window",
                "virtual-top",
                "checksum"
            ]
        );
        assert_eq!(non_pass(&f), []);
        assert_eq!(
            get(&f, "found-line").message,
            "Linux prints: `VMI: Found VMware VMI ROM, API version 3.0, ROM version 1.2`"
        );
        assert_eq!(get(&f, "pci-ids").offset, Some(0x24));
        assert_eq!(get(&f, "init-slot").offset, Some(0x80));
        assert!(get(&f, "init-slot").message.contains("jumps to 0x"));
        assert_eq!(get(&f, "checksum").offset, Some(d.len() - 1));
    }

    #[test]
    fn valid_vmi_rom_passes_seabios_and_pci() {
        let d = vmi_rom();
        let f = run(&d, Profile::Seabios);
        assert_eq!(
            rules(&f),
            [
                "signature",
                "size",
                "length",
                "checksum",
                "pcir-alignment",
                "pnp",
                "init-entry",
                "placement",
                "images",
                "size-reread"
            ]
        );
        assert_eq!(non_pass(&f), []);
        assert!(
            get(&f, "pnp")
                .message
                .contains("far-called during the option-ROM scan")
        );
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), []);
        for r in [
            "pcir-signature",
            "pcir-length",
            "image-length",
            "last-image",
            "device-list",
            "config-utility",
            "dmtf-clp",
            "checksum",
            "pnp-signature",
            "pnp-revision",
            "pnp-length",
            "pnp-checksum",
            "pnp-next",
            "pnp-strings",
            "chain-end",
            "trailing-bytes",
        ] {
            assert_eq!(sev(&f, r), Severity::Pass, "{r}");
        }
        assert!(get(&f, "checksum").message.starts_with("image 0 at 0x0: "));
    }

    #[test]
    fn non_roms_get_one_failing_signature_finding_in_every_profile() {
        for (d, off, text) in [
            (&[][..], None, "the file is empty"),
            (&[0x55, 0xAA][..], Some(0), "the file is 2 byte(s) (55 AA)"),
            (
                &b"\x7fELF"[..],
                Some(0),
                "bytes at 0x0 are 7F 45, expected 55 AA",
            ),
        ] {
            for p in Profile::ALL {
                let f = run(d, p);
                assert_eq!(f.len(), 1, "{f:?}");
                assert_eq!(
                    (f[0].rule, f[0].severity, f[0].offset),
                    ("signature", Severity::Fail, off)
                );
                assert!(f[0].message.starts_with(text), "{}", f[0].message);
            }
        }
    }

    #[test]
    fn api_major_must_be_3_and_any_minor_passes() {
        let d = vmi_rom_with(&VmiHeaderSpec {
            api_major: 2,
            api_minor: 7,
            ..VmiHeaderSpec::default()
        });
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("api-version", Severity::Fail)]);
        let a = get(&f, "api-version");
        assert_eq!(a.offset, Some(0xD));
        assert!(
            a.message
                .starts_with("`VMI: Found mismatched rom version 2.7`")
        );
        assert_eq!(
            get(&f, "found-line").message,
            "Linux prints no `VMI: Found` line: it already rejected the ROM at rule `api-version`"
        );
        let d = vmi_rom_with(&VmiHeaderSpec {
            api_minor: 255,
            ..VmiHeaderSpec::default()
        });
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), []);
        assert!(
            get(&f, "api-version")
                .message
                .contains("every minor passes")
        );
    }

    #[test]
    fn license_rules_use_the_linux_messages() {
        let d = vmi_rom_with(&VmiHeaderSpec {
            license: "MIT".into(),
            ..VmiHeaderSpec::default()
        });
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("license", Severity::Fail)]);
        assert!(
            get(&f, "license")
                .message
                .starts_with("``VMI: Non GPL license `MIT' found for ROM. Not used.``")
        );
        // "GPL" (exact) passes, "GPLv2" does not.
        for (lic, want) in [("GPL", Severity::Pass), ("GPLv2", Severity::Fail)] {
            let d = vmi_rom_with(&VmiHeaderSpec {
                license: lic.into(),
                ..VmiHeaderSpec::default()
            });
            assert_eq!(sev(&run(&d, Profile::LinuxVmi), "license"), want, "{lic}");
        }
        let mut d = vmi_rom();
        d[0x16] = 0;
        d[0x17] = 0;
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("license", Severity::Fail)]);
        let l = get(&f, "license");
        assert_eq!(l.offset, Some(0x16));
        assert!(
            l.message
                .contains("``VMI: Non GPL license `unspecified' found for ROM. Not used.``")
        );
        // The Found line is still printed: Linux prints it before the license decision.
        assert!(
            get(&f, "found-line")
                .message
                .starts_with("Linux prints: `VMI: Found VMware")
        );
    }

    #[test]
    fn pci_header_rules() {
        let mut d = vmi_rom();
        d[0x18] = 0;
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        let p = get(&f, "pci-header");
        assert_eq!((p.severity, p.offset), (Severity::Fail, Some(0x18)));
        assert!(
            p.message
                .starts_with("`VMI: ROM does not contain PCI header.`")
        );
        assert_eq!(sev(&f, "pci-ids"), Severity::Warn);
        // Pointing past the image.
        let mut d = vmi_rom();
        d[0x18..0x1A].copy_from_slice(&0x1F0u16.to_le_bytes());
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(sev(&f, "pci-header"), Severity::Fail);
        assert!(get(&f, "pci-header").message.contains("would end at 0x208"));
        // Wrong ids only warn.
        let mut d = vmi_rom();
        d[0x24] = 0xEC;
        d[0x25] = 0x10;
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("pci-ids", Severity::Warn)]);
        assert!(get(&f, "pci-ids").message.starts_with("`VMI: ROM from unknown manufacturer`: PCI vendor:device at 0x24 is 10EC:0801, expected 15AD:0801"));
    }

    #[test]
    fn missing_cvmi_and_pnp_strings() {
        let mut d = vmi_rom();
        d[8] = b'x';
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("vmi-signature", Severity::Fail)]);
        assert!(
            get(&f, "vmi-signature")
                .message
                .starts_with("found 78 56 6D 69 at 0x8")
        );
        // Manufacturer pointer past the image: warn.
        let mut d = vmi_rom();
        d[0x4E..0x50].copy_from_slice(&0x7000u16.to_le_bytes());
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("pnp-strings", Severity::Warn)]);
        assert_eq!(get(&f, "pnp-strings").offset, Some(0x4E));
        assert!(
            get(&f, "found-line")
                .message
                .contains("Found <unreadable> VMI ROM")
        );
        // The pci profile fails the same pointer (and the $PnP checksum it broke).
        let f = run(&d, Profile::Pci);
        assert_eq!(
            non_pass(&f),
            [
                ("pnp-checksum", Severity::Fail),
                ("pnp-strings", Severity::Fail)
            ]
        );
        // No $PnP header: UNKNOWN UNKNOWN for Linux, a warning for SeaBIOS.
        let mut d = vmi_rom();
        d[0x1A] = 0;
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), []);
        assert!(
            get(&f, "found-line")
                .message
                .contains("Found UNKNOWN UNKNOWN, API")
        );
        let f = run(&d, Profile::Seabios);
        assert_eq!(non_pass(&f), [("pnp", Severity::Warn)]);
        assert!(get(&f, "pnp").message.contains(
            "registers the ROM as a boot-connection vector; init runs only when booting from it"
        ));
    }

    #[test]
    fn entry_slots() {
        let mut d = vmi_rom();
        d[0x80..0x88].fill(0);
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("init-slot", Severity::Fail)]);
        // jmp rel32 far past the end.
        let mut d = vmi_rom();
        d[0x89..0x8D].copy_from_slice(&0x1000i32.to_le_bytes());
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("get-reloc-slot", Severity::Fail)]);
        assert!(
            get(&f, "get-reloc-slot")
                .message
                .contains("jumps to 0x108d, outside the image (0x200 bytes)")
        );
        // Code in place (xor eax,eax; ret) passes.
        let mut d = vmi_rom();
        d[0x80..0x88].copy_from_slice(&[0x31, 0xC0, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC]);
        resum(&mut d);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), []);
        assert!(
            get(&f, "init-slot")
                .message
                .contains("31 C0 C3 CC CC CC CC CC: not a near jmp")
        );
    }

    #[test]
    fn virtual_top_warns() {
        let d = vmi_rom_with(&VmiHeaderSpec {
            virtual_top: 0xFFC0_0100,
            ..VmiHeaderSpec::default()
        });
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("virtual-top", Severity::Warn)]);
        let m = &get(&f, "virtual-top").message;
        assert!(m.contains("[0xffc00100, 4 GiB)"), "{m}");
        assert!(m.contains("CONFIG_COMPAT_VDSO"));
        assert!(m.contains("not 4 KiB aligned"));
        let d = vmi_rom_with(&VmiHeaderSpec {
            virtual_top: 0xFC00_0000,
            ..VmiHeaderSpec::default()
        });
        let f = run(&d, Profile::LinuxVmi);
        let m = &get(&f, "virtual-top").message;
        assert!(!m.contains("aligned") && m.contains("(65536 KiB)"), "{m}");
    }

    #[test]
    fn checksum_is_a_linux_warning_and_a_seabios_failure() {
        let mut d = vmi_rom();
        let last = d.len() - 1;
        d[last] = d[last].wrapping_add(1);
        let f = run(&d, Profile::LinuxVmi);
        assert_eq!(non_pass(&f), [("checksum", Severity::Warn)]);
        let f = run(&d, Profile::Seabios);
        assert_eq!(non_pass(&f), [("checksum", Severity::Fail)]);
        let c = get(&f, "checksum");
        assert_eq!(c.offset, Some(last));
        assert!(c.message.contains("sum to 0x01, expected 0: SeaBIOS logs 'Found option rom with bad checksum' and drops it"));
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), [("checksum", Severity::Fail)]);
    }

    #[test]
    fn seabios_size_truncation_and_init_entry() {
        let mut d = vmi_rom();
        d[2] = 0;
        let f = run(&d, Profile::Seabios);
        assert_eq!(non_pass(&f), [("size", Severity::Fail)]);
        assert!(!rules(&f).contains(&"checksum"));
        // Truncated: SeaBIOS reads the rest as memory; sum of the present bytes decides.
        let d = vmi_rom();
        let f = run(&d[..300], Profile::Seabios);
        assert_eq!(
            non_pass(&f),
            [("length", Severity::Warn), ("checksum", Severity::Fail)]
        );
        let f = run(&d[..300], Profile::Pci);
        assert_eq!(sev(&f, "image-complete"), Severity::Fail);
        // Zero init entry.
        let mut d = vmi_rom();
        d[3..7].fill(0);
        resum(&mut d);
        let f = run(&d, Profile::Seabios);
        assert_eq!(non_pass(&f), [("init-entry", Severity::Fail)]);
        // jmp rel16 past the end of a 512-byte image.
        d[3..6].copy_from_slice(&[0xE9, 0x00, 0x04]);
        resum(&mut d);
        let f = run(&d, Profile::Seabios);
        assert_eq!(non_pass(&f), [("init-entry", Severity::Fail)]);
        assert!(get(&f, "init-entry").message.contains("jumps to 0x406"));
        // Unaligned PCIR.
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.append(&[0; 2], 1);
        let mut img = b.finish(&Finish::default()).unwrap();
        img[0x18] = 0x22;
        img[0x22..0x3A].copy_from_slice(&Pcir::new(1, 2, 3).to_bytes()[..0x18]);
        resum(&mut img);
        assert_eq!(
            sev(&run(&img, Profile::Seabios), "pcir-alignment"),
            Severity::Warn
        );
    }

    /// A file cut short whose present bytes still sum to 0: Linux does not care, but SeaBIOS
    /// accepts it and runs bytes that are not in the file (issue 12: 4 × 512 bytes cut to 700).
    #[test]
    fn seabios_fails_a_cut_file_whose_present_bytes_sum_to_0() {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.append(&[0xCB], 1);
        let whole = b
            .finish(&Finish {
                min_len: 4 * 512,
                ..Finish::default()
            })
            .unwrap();
        assert_eq!(whole[2], 4);
        let mut cut = whole[..700].to_vec();
        cut[699] = 0;
        cut[699] = 0u8.wrapping_sub(checksum(&cut));
        let f = run(&cut, Profile::Seabios);
        assert_eq!(
            non_pass(&f),
            [
                ("length", Severity::Warn),
                ("checksum", Severity::Warn),
                ("missing-bytes", Severity::Fail),
                ("pnp", Severity::Warn)
            ]
        );
        assert_eq!(worst(&f), Severity::Fail);
        let m = get(&f, "missing-bytes");
        assert_eq!(m.offset, Some(2));
        assert_eq!(
            m.message,
            "the size byte at 0x2 declares 0x800 bytes but the file ends at 0x2bc: the bytes \
             0x2bc..0x800 that SeaBIOS checksums, keeps and runs are not in the file; the present \
             bytes sum to 0, so SeaBIOS accepts the ROM and what it loads depends on memory the \
             file does not control; expected all 0x800 bytes in the file, or a size byte of 2 \
             (0x400 bytes) declaring what it holds"
        );
        // The rule follows `checksum` and is absent for the whole file.
        let r = rules(&f);
        let at = r.iter().position(|x| *x == "missing-bytes").unwrap();
        assert_eq!(r[at - 1], "checksum");
        assert!(!rules(&run(&whole, Profile::Seabios)).contains(&"missing-bytes"));
        // An init entry that jumps into the missing bytes is named.
        let mut far = whole.clone();
        far[3..6].copy_from_slice(&[0xE9, 0x00, 0x04]);
        let mut cut = far[..700].to_vec();
        cut[699] = 0;
        cut[699] = 0u8.wrapping_sub(checksum(&cut));
        let f = run(&cut, Profile::Seabios);
        assert!(
            get(&f, "missing-bytes")
                .message
                .contains("(the init entry at 0x3 jumps to 0x406, into the missing bytes)"),
            "{f:#?}"
        );
        // Linux never sums the image: only its checksum warning.
        let mut vmi = vmi_rom();
        assert_eq!(vmi.len(), 512);
        vmi.resize(4 * 512, 0);
        vmi[2] = 4;
        let mut cut = vmi[..0x1FF].to_vec();
        cut[0x1FE] = 0;
        cut[0x1FE] = 0u8.wrapping_sub(checksum(&cut));
        assert_eq!(
            non_pass(&run(&cut, Profile::LinuxVmi)),
            [("checksum", Severity::Warn)]
        );
        assert_eq!(
            sev(&run(&cut, Profile::Seabios), "missing-bytes"),
            Severity::Fail
        );
    }

    #[test]
    fn seabios_placement_limits() {
        // 100 KiB: fits the window but not after a 39 KiB VGA ROM.
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.append(&[0x90; 100 * 1024 - 0x40], 1);
        let d = b.finish(&Finish::default()).unwrap();
        assert_eq!(d.len(), 100 * 1024);
        let f = run(&d, Profile::Seabios);
        assert_eq!(
            non_pass(&f),
            [("pnp", Severity::Warn), ("placement", Severity::Warn)]
        );
        assert!(get(&f, "placement").message.contains("lands at 0xca000"));
        // A 129 KiB file cannot be below 0xE0000 at all.
        let mut big = d.clone();
        big.resize(129 * 1024, 0);
        let f = run(&big, Profile::Seabios);
        assert_eq!(sev(&f, "placement"), Severity::Fail);
        assert_eq!(seabios::TYPICAL_START, 0xC_A000);
    }

    /// Two images: x86 (not last) then EFI (last), as a PCI ROM chain.
    fn chain() -> Vec<u8> {
        let mut b = ImageBuilder::new(0x20).unwrap();
        b.set_pcir(None, Pcir::new(0x8086, 0x100E, 0x02_00_00))
            .unwrap();
        let mut d = b
            .finish(&Finish {
                last_image: false,
                min_len: 0,
            })
            .unwrap();
        let mut e = vec![0u8; 1024];
        e[0..2].copy_from_slice(&[0x55, 0xAA]);
        e[2] = 2; // initialization size (u16)
        e[4..8].copy_from_slice(&EFI_SIGNATURE.to_le_bytes());
        e[8] = 11; // boot-service driver
        e[0xA..0xC].copy_from_slice(&0x8664u16.to_le_bytes());
        e[0x16] = 0x40; // PE image offset
        e[0x18] = 0x1C; // PCIR pointer
        let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
        p.code_type = CodeType::Efi;
        p.image_length = 2;
        e[0x1C..0x38].copy_from_slice(&p.to_bytes());
        e[0x40..0x42].copy_from_slice(b"MZ");
        d.extend(e);
        d
    }

    #[test]
    fn pci_chain_with_an_efi_image() {
        let d = chain();
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), []);
        assert_eq!(f.iter().filter(|x| x.rule == "last-image").count(), 2);
        let efi: Vec<_> = f.iter().filter(|x| x.rule.starts_with("efi-")).collect();
        assert_eq!(efi.len(), 4);
        assert!(
            efi.iter()
                .all(|x| x.message.starts_with("image 1 at 0x200: "))
        );
        // The EFI image gets no x86 checksum or $PnP rules.
        assert_eq!(f.iter().filter(|x| x.rule == "checksum").count(), 1);
        // linux-vmi and seabios judge image 0 and mention the rest.
        let f = run(&d, Profile::LinuxVmi);
        assert!(
            get(&f, "scope")
                .message
                .contains("1 further image(s) (at 0x200)")
        );
        let f = run(&d, Profile::Seabios);
        assert_eq!(get(&f, "images").offset, Some(0x200));
    }

    #[test]
    fn pci_chain_faults() {
        // Last image without the last-image bit, and bytes after it.
        let mut d = chain();
        d[0x200 + 0x1C + 0x15] = 0;
        let f = run(&d, Profile::Pci);
        assert_eq!(
            non_pass(&f),
            [
                ("last-image", Severity::Fail),
                ("chain-end", Severity::Fail)
            ]
        );
        // Garbage where the second image should be.
        let mut d = chain();
        d[0x200] = 0;
        let f = run(&d, Profile::Pci);
        assert_eq!(
            non_pass(&f),
            [
                ("last-image", Severity::Fail),
                ("chain-end", Severity::Fail),
                ("trailing-bytes", Severity::Warn)
            ]
        );
        assert_eq!(get(&f, "chain-end").offset, Some(0x200));
        // Zero length, not last.
        let mut d = chain();
        d.truncate(512);
        d[2] = 0;
        d[0x20 + 0x10] = 0;
        let f = run(&d, Profile::Pci);
        assert_eq!(sev(&f, "chain-end"), Severity::Fail);
        assert_eq!(sev(&f, "image-length"), Severity::Fail);
        assert!(get(&f, "chain-end").message.contains("length 0"));
        // PCIR length and revision.
        let mut d = vmi_rom();
        d[0x20 + 0x0A] = 0x20;
        d[0x20 + 0x0C] = 2;
        resum(&mut d);
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), [("pcir-revision", Severity::Warn)]);
        d[0x20 + 0x0C] = 0;
        resum(&mut d);
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), [("pcir-length", Severity::Fail)]);
        // Image length disagreeing with the size byte.
        let mut d = vmi_rom();
        d[0x20 + 0x10] = 2;
        resum(&mut d);
        let f = run(&d, Profile::Pci);
        assert_eq!(
            non_pass(&f),
            [
                ("image-complete", Severity::Fail),
                ("image-length", Severity::Fail)
            ]
        );
    }

    #[test]
    fn pci_rev3_pointers_and_pnp_chain() {
        let mut d = vmi_rom();
        // Device list 0x1C after the PCIR (at 0x3C): 0x1234 then no terminator before... give one.
        d[0x20 + 0x08] = 0x1C;
        d[0x3C..0x40].copy_from_slice(&[0x34, 0x12, 0, 0]);
        d[0x20 + 0x18..0x20 + 0x1A].copy_from_slice(&0x0300u16.to_le_bytes());
        resum(&mut d);
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), [("config-utility", Severity::Fail)]);
        assert!(
            get(&f, "device-list")
                .message
                .contains("1 id(s), 0-terminated")
        );
        // A device list without a terminator among its first 256 ids (bounded scan).
        let mut b = ImageBuilder::new(0x20).unwrap();
        let mut p = Pcir::new(1, 2, 3);
        p.device_list_ptr = 0x1C;
        b.set_pcir(None, p).unwrap();
        b.append(&[0x41; 600], 1);
        let img = b.finish(&Finish::default()).unwrap();
        let f = run(&img, Profile::Pci);
        assert_eq!(non_pass(&f), [("device-list", Severity::Fail)]);
        assert!(
            get(&f, "device-list")
                .message
                .ends_with("no 0 terminator within its first 256 ids")
        );
        // $PnP next pointer looping to itself.
        let mut d = vmi_rom();
        d[0x46] = 0x40;
        d[0x49] = d[0x49].wrapping_sub(0x40);
        resum(&mut d);
        let f = run(&d, Profile::Pci);
        assert_eq!(non_pass(&f), [("pnp-next", Severity::Fail)]);
        assert!(get(&f, "pnp-next").message.contains("loops back"));
    }

    #[test]
    fn offsets_stay_inside_odd_inputs() {
        let d = vmi_rom();
        // Cut inside the VMI header: every profile fails (the truncated image no longer sums
        // to 0, and Linux misses header fields or entry slots).
        for cut in [3, 7, 8, 0x10, 0x1C, 0x22, 0x3C, 0x45, 0x81, 0x8A] {
            for p in Profile::ALL {
                let f = run(&d[..cut], p);
                assert_eq!(worst(&f), Severity::Fail, "{cut} {p:?}: {f:#?}");
            }
        }
        // Only the checksum byte missing: Linux does not care, SeaBIOS and PCI do.
        let cut = &d[..0x1FF];
        assert_eq!(
            non_pass(&run(cut, Profile::LinuxVmi)),
            [("checksum", Severity::Warn)]
        );
        assert_eq!(
            non_pass(&run(cut, Profile::Seabios)),
            [("length", Severity::Warn), ("checksum", Severity::Fail)]
        );
        assert_eq!(
            non_pass(&run(cut, Profile::Pci)),
            [
                ("image-complete", Severity::Fail),
                ("checksum", Severity::Fail)
            ]
        );
    }
}
