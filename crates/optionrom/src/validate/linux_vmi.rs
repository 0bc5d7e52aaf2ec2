//! The `linux-vmi` profile: what the Linux i386 VMI client (2.6.21–2.6.36, `CONFIG_VMI`)
//! accepts. It judges image 0 only, the way `probe_vmi_rom` and `check_vmi_rom`
//! (arch/x86/kernel/vmi_32.c; arch/i386/kernel/vmi.c in 2.6.21–2.6.23) read it, then what
//! activation needs (the entry slots Linux near-calls, the scan window, virtual_top), and
//! whether a BIOS would load the image at all (its checksum). vmi-abi.md §1–§2 describe the
//! client.

use super::rule::profile_rules;
use super::{Out, cstr_problem, hex_bytes, image_span, no_image};
use crate::bytes::{CStrError, Mode, cstr_at, jump_target, u32_at};
use crate::image::{Image, Rom};
use crate::{pcir, pnp};
use vmi_abi::consts;
use vmi_abi::layout::{self, Field, vrom};

#[cfg(test)]
use super::examples::{Examples, PCIR, PNP, chain, patched, vmi, vmi_spec};

/// The profile's name.
pub const PROFILE: &str = "linux-vmi";

/// What Linux does with a file that holds no image.
const NOT_A_ROM: &str = "Linux skips the candidate silently";

/// A rule's check.
type Check = fn(&Linux<'_>, &mut Out);

profile_rules! {
    /// The `linux-vmi` rules, in the order the profile evaluates and reports them:
    Check;
    (SCOPE, scope),
    (SIGNATURE, signature),
    (VMI_SIGNATURE, vmi_signature),
    (API_VERSION, api_version),
    (PCI_HEADER, pci_header),
    (PCI_IDS, pci_ids),
    (PNP_STRINGS, pnp_strings),
    (FOUND_LINE, found_line),
    (LICENSE, license),
    (HEADER_LENGTH, header_length),
    (INIT_SLOT, init_slot),
    (GET_RELOC_SLOT, get_reloc_slot),
    (SCAN_WINDOW, scan_window),
    (VIRTUAL_TOP, virtual_top),
    (CHECKSUM, checksum),
}

/// Runs the profile on `data`: image 0's rules, or the failing `signature` of a non-ROM.
pub(super) fn run(o: &mut Out, data: &[u8], rom: &Rom) {
    let Some(img) = rom.images.first() else {
        return no_image(o, &SIGNATURE, data, NOT_A_ROM);
    };
    let cx = Linux {
        rom,
        img,
        view: img.bytes(data),
    };
    for (rule, check) in CHECKS {
        o.check(rule, &cx, *check);
    }
}

/// Image 0 as Linux reads it, and the facts several rules share.
struct Linux<'a> {
    rom: &'a Rom,
    img: &'a Image,
    /// The image's bytes (its declared length, cut to the file).
    view: &'a [u8],
}

impl Linux<'_> {
    fn vlen(&self) -> usize {
        self.view.len()
    }

    /// File offset of image offset `rel`.
    fn abs(&self, rel: usize) -> Option<usize> {
        Some(self.img.offset.saturating_add(rel))
    }

    fn read(&self, f: &Field) -> Option<u64> {
        f.read(self.view)
    }

    /// The API version (major, minor), if the image holds both bytes.
    fn api(&self) -> Option<(u64, u64)> {
        self.read(&vrom::API_VERSION_MAJ)
            .zip(self.read(&vrom::API_VERSION_MIN))
    }

    /// Offset of the PCI data structure when pci_header_offs is not 0 and the structure lies
    /// inside the image.
    fn pci_at(&self) -> Option<usize> {
        let p = self.read(&vrom::PCI_HEADER_OFFS)? as usize;
        (p != 0 && p + layout::pci::LAYOUT.size <= self.vlen()).then_some(p)
    }

    /// The PCI data structure's bytes, when [`Linux::pci_at`] finds it.
    fn pci_bytes(&self) -> Option<&[u8]> {
        let p = self.pci_at()?;
        self.view.get(p..p + layout::pci::LAYOUT.size)
    }

    /// The rule at which `check_vmi_rom` gives up before printing its `VMI: Found` line: no
    /// "cVmi", a major version other than 3, or no PCI header pointer.
    fn rejected_at(&self) -> Option<&'static str> {
        if self.read(&vrom::VROM_SIGNATURE) != Some(u64::from(consts::VMI_SIGNATURE)) {
            return Some(VMI_SIGNATURE.id);
        }
        if self
            .api()
            .is_none_or(|(maj, _)| maj != u64::from(consts::VMI_API_MAJOR))
        {
            return Some(API_VERSION.id);
        }
        if matches!(self.read(&vrom::PCI_HEADER_OFFS), None | Some(0)) {
            return Some(PCI_HEADER.id);
        }
        None
    }

    /// The `$PnP` header's strings as Linux reads them through pnp_header_offs.
    fn pnp(&self) -> PnpStrings<'_> {
        let offs = self.read(&vrom::PNP_HEADER_OFFS).unwrap_or(0) as usize;
        if offs == 0 {
            return PnpStrings::Absent;
        }
        let Some(h) = self.view.get(offs..offs + layout::pnp::LAYOUT.size) else {
            return PnpStrings::Outside { offs };
        };
        let string = |what, f: Field| {
            let ptr = f.read(h).unwrap_or(0) as usize;
            let text = match ptr {
                0 => Ok(consts::PNP_STRING_UNKNOWN.to_string()),
                p => cstr_at(self.view, p).map(|s| s.to_string()),
            };
            PnpString {
                what,
                field: offs + f.offset,
                ptr,
                text,
            }
        };
        PnpStrings::Header {
            offs,
            signature_ok: u32_at(self.view, offs) == Some(pnp::SIGNATURE),
            strings: [
                string("manufacturer", layout::pnp::MANUFACTURER_OFFSET),
                string("product", layout::pnp::PRODUCT_OFFSET),
            ],
        }
    }
}

/// The manufacturer and product strings Linux prints.
enum PnpStrings<'a> {
    /// pnp_header_offs is 0: Linux prints `UNKNOWN` for both.
    Absent,
    /// The header's string offsets lie outside the image.
    Outside { offs: usize },
    /// The header at `offs` and its two strings.
    Header {
        offs: usize,
        signature_ok: bool,
        strings: [PnpString<'a>; 2],
    },
}

/// One string offset of the `$PnP` header.
struct PnpString<'a> {
    what: &'a str,
    /// Image offset of the string offset field.
    field: usize,
    /// The string offset (0: Linux prints `UNKNOWN`).
    ptr: usize,
    text: Result<String, CStrError>,
}

impl PnpStrings<'_> {
    /// (manufacturer, product) as the `VMI: Found` line shows them.
    fn names(&self) -> (String, String) {
        match self {
            PnpStrings::Absent => (
                consts::PNP_STRING_UNKNOWN.into(),
                consts::PNP_STRING_UNKNOWN.into(),
            ),
            PnpStrings::Outside { .. } => ("<unreadable>".into(), "<unreadable>".into()),
            PnpStrings::Header { strings, .. } => {
                let name = |s: &PnpString<'_>| {
                    s.text
                        .clone()
                        .unwrap_or_else(|_| "<unreadable>".to_string())
                };
                (name(&strings[0]), name(&strings[1]))
            }
        }
    }
}

crate::rule! {
    /// Only image 0 is judged: Linux never sees further images of the file.
    ///
    /// `probe_vmi_rom` looks for a ROM every 2048 bytes from 0xC0000 and hands each candidate
    /// to `check_vmi_rom`, which reads the VMI header at the candidate's start; a BIOS keeps
    /// only the first image's size×512 bytes of an `-option-rom` file (SeaBIOS
    /// `init_optionrom`). The finding names the image's range and where any further images of
    /// the file start, which Linux never looks at.
    pub static SCOPE {
        profile: PROFILE,
        id: "scope",
        severity: Info,
        source: "Linux `probe_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §2.1",
    }
}

fn scope(cx: &Linux<'_>, o: &mut Out) {
    let mut msg = format!(
        "judging image 0 only ({}, {} bytes): Linux scans memory in {}-byte steps and SeaBIOS \
         keeps only the first image's size×512 bytes",
        image_span(cx.img),
        cx.vlen(),
        consts::SCAN_STRIDE
    );
    if let Some(rest) = cx.rom.images.get(1..).filter(|r| !r.is_empty()) {
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
    o.pass(cx.abs(0), msg);
}

#[cfg(test)]
fn scope_examples() -> Examples {
    // A second image, named as never seen by Linux.
    Examples::flagging(chain())
}

crate::rule! {
    /// The image starts with the option-ROM signature `55 AA`.
    ///
    /// `probe_vmi_rom` reads the u16 at each candidate address and compares it with 0xAA55
    /// (vmi-abi.md §2.1, check 1); anything else is skipped silently, so a file without the
    /// signature is never found. A file that is empty or shorter than 3 bytes fails the same
    /// way, and then this is the profile's only finding.
    pub static SIGNATURE {
        profile: PROFILE,
        id: "signature",
        severity: Fail,
        source: "Linux `probe_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §2.1 check 1",
    }
}

fn signature(cx: &Linux<'_>, o: &mut Out) {
    o.pass(
        cx.abs(0),
        "55 AA at 0x0 (u16 0xAA55 as Linux compares it)".into(),
    );
}

#[cfg(test)]
fn signature_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0] = 0x56))
}

crate::rule! {
    /// The VMI header's signature `"cVmi"` (`63 56 6D 69`) is at offset 0x8.
    ///
    /// `check_vmi_rom` compares the u32 `vrom_signature` at ROM+0x8 with `VMI_SIGNATURE`
    /// (0x696D5663) and skips the candidate silently when it differs (vmi-abi.md §1.1, §2.1
    /// check 2): the kernel then runs natively, without a word in its log.
    pub static VMI_SIGNATURE {
        profile: PROFILE,
        id: "vmi-signature",
        severity: Fail,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.1, §2.1 check 2",
    }
}

fn vmi_signature(cx: &Linux<'_>, o: &mut Out) {
    let f = vrom::VROM_SIGNATURE;
    match cx.read(&f) {
        Some(v) if v == u64::from(consts::VMI_SIGNATURE) => {
            o.pass(cx.abs(f.offset), format!("\"cVmi\" at {:#x}", f.offset))
        }
        Some(v) => o.fail(
            cx.abs(f.offset),
            format!(
                "found {} at {:#x}, expected \"cVmi\" ({}): Linux skips the ROM silently",
                hex_bytes(&v.to_le_bytes()[..4]),
                f.offset,
                hex_bytes(&consts::VMI_SIGNATURE.to_le_bytes())
            ),
        ),
        None => o.fail(
            None,
            format!(
                "the image ({} bytes) ends before {:#x}..{:#x}: no \"cVmi\"; Linux skips the ROM \
                 silently",
                cx.vlen(),
                f.offset,
                f.end()
            ),
        ),
    }
}

#[cfg(test)]
fn vmi_signature_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[8..12].fill(0)))
}

crate::rule! {
    /// The API version's major number (offset 0xD) is 3; any minor (0xC) passes.
    ///
    /// `check_vmi_rom` rejects the ROM when `api_version_maj != 3 || api_version_min + 1 <
    /// 0 + 1`, printing `VMI: Found mismatched rom version MAJ.MIN`. The minor byte is a u8
    /// promoted to int, so the second test is never true: every minor 0–255 passes
    /// (vmi-abi.md §2.2). Version 13.x is the earlier VMI ("v2") interface (vmi-abi.md §8).
    pub static API_VERSION {
        profile: PROFILE,
        id: "api-version",
        severity: Fail,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §2.1 check 3, §2.2",
    }
}

fn api_version(cx: &Linux<'_>, o: &mut Out) {
    let (maj_f, min_f) = (vrom::API_VERSION_MAJ, vrom::API_VERSION_MIN);
    match cx.api() {
        Some((maj, min)) if maj == u64::from(consts::VMI_API_MAJOR) => o.pass(
            cx.abs(maj_f.offset),
            format!(
                "API version {maj}.{min} ({:#x} major, {:#x} minor): major {} as required; every \
                 minor passes (Linux's minor test `min + 1 < 0 + 1` is never true)",
                maj_f.offset,
                min_f.offset,
                consts::VMI_API_MAJOR
            ),
        ),
        Some((maj, min)) => o.fail(
            cx.abs(maj_f.offset),
            format!(
                "`VMI: Found mismatched rom version {maj}.{min}`: api_version_maj at {:#x} is \
                 {maj}, expected {}; Linux skips the ROM",
                maj_f.offset,
                consts::VMI_API_MAJOR
            ),
        ),
        None => o.fail(
            None,
            format!(
                "the image ({} bytes) ends before the API version at {:#x}..{:#x}",
                cx.vlen(),
                min_f.offset,
                maj_f.end()
            ),
        ),
    }
}

#[cfg(test)]
fn api_version_examples() -> Examples {
    Examples::flagging(spec(|s| s.api_major = 13))
}

crate::rule! {
    /// pci_header_offs (offset 0x18) points at a PCI data structure inside the image.
    ///
    /// `check_vmi_rom` rejects a ROM whose pci_header_offs is 0 with `VMI: ROM does not
    /// contain PCI header.` (vmi-abi.md §2.1 check 4). It does not check the structure's
    /// `"PCIR"` signature; it reads the vendor and device ids and the ROM version from it, so
    /// a pointer that leads past the image makes Linux read whatever memory follows the ROM
    /// (vmi-abi.md §1.2).
    pub static PCI_HEADER {
        profile: PROFILE,
        id: "pci-header",
        severity: Fail,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.2, §2.1 check 4",
    }
}

fn pci_header(cx: &Linux<'_>, o: &mut Out) {
    let f = vrom::PCI_HEADER_OFFS;
    let size = layout::pci::LAYOUT.size;
    match cx.read(&f).map(|v| v as usize) {
        None => o.fail(
            None,
            format!(
                "the image ({} bytes) ends before pci_header_offs at {:#x}",
                cx.vlen(),
                f.offset
            ),
        ),
        Some(0) => o.fail(
            cx.abs(f.offset),
            format!(
                "`VMI: ROM does not contain PCI header.`: pci_header_offs at {:#x} is 0, expected \
                 the offset of the PCI data structure; Linux skips the ROM",
                f.offset
            ),
        ),
        Some(p) if p + size <= cx.vlen() => {
            let sig_note = if u32_at(cx.view, p) == Some(pcir::SIGNATURE) {
                ""
            } else {
                " (its signature is not \"PCIR\"; Linux does not check it)"
            };
            o.pass(
                cx.abs(p),
                format!(
                    "PCI data structure at {p:#x} (pci_header_offs at {:#x}) lies inside the \
                     image{sig_note}",
                    f.offset
                ),
            );
        }
        Some(p) => o.fail(
            cx.abs(f.offset),
            format!(
                "pci_header_offs at {:#x} is {p:#x}: the {size:#x}-byte PCI data structure would \
                 end at {:#x}, past the image end {:#x}; Linux reads the ids and the ROM version \
                 from whatever memory follows",
                f.offset,
                p + size,
                cx.vlen()
            ),
        ),
    }
}

#[cfg(test)]
fn pci_header_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0x18..0x1A].fill(0)))
}

crate::rule! {
    /// The PCI vendor:device ids are VMware's VMI device, 15AD:0801.
    ///
    /// `check_vmi_rom` compares the PCI data structure's vendor and device ids with
    /// `PCI_VENDOR_ID_VMWARE` and `PCI_DEVICE_ID_VMWARE_VMI`; on a mismatch it prints `VMI: ROM
    /// from unknown manufacturer` and still uses the ROM (vmi-abi.md §1.4, §2.1 check 5), so
    /// this rule only warns.
    pub static PCI_IDS {
        profile: PROFILE,
        id: "pci-ids",
        severity: Warn,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.4, §2.1 check 5",
    }
}

fn pci_ids(cx: &Linux<'_>, o: &mut Out) {
    let (ven_f, dev_f) = (layout::pci::VENDOR_ID, layout::pci::DEVICE_ID);
    let at = cx.pci_at().and_then(|p| cx.abs(p + ven_f.offset));
    match cx
        .pci_bytes()
        .and_then(|b| ven_f.read(b).zip(dev_f.read(b)))
    {
        Some((v, d))
            if v == u64::from(consts::PCI_VENDOR_VMWARE)
                && d == u64::from(consts::PCI_DEVICE_VMI) =>
        {
            o.pass(
                at,
                format!("PCI vendor:device {v:04X}:{d:04X} (VMware VMI)"),
            );
        }
        Some((v, d)) => o.warn(
            at,
            format!(
                "`VMI: ROM from unknown manufacturer`: PCI vendor:device at {:#x} is \
                 {v:04X}:{d:04X}, expected {:04X}:{:04X}; Linux still uses the ROM",
                cx.pci_at().unwrap_or(0) + ven_f.offset,
                consts::PCI_VENDOR_VMWARE,
                consts::PCI_DEVICE_VMI
            ),
        ),
        None => o.warn(
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
}

#[cfg(test)]
fn pci_ids_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[PCIR + 4..PCIR + 6].fill(0x11)))
}

crate::rule! {
    /// The `$PnP` header's manufacturer and product strings are readable inside the image.
    ///
    /// When pnp_header_offs (0x1A) is not 0, `check_vmi_rom` takes the manufacturer and product
    /// string offsets (from the ROM start) out of the `$PnP` header and prints the strings in
    /// its `VMI: Found` line; an offset of 0 prints `UNKNOWN` (vmi-abi.md §1.3, §2.1 check 6).
    /// It never checks the header's signature. A string offset outside the image, or a string
    /// without a NUL before the image end, makes Linux print whatever memory holds: a warning,
    /// since the ROM is still used.
    pub static PNP_STRINGS {
        profile: PROFILE,
        id: "pnp-strings",
        severity: Warn,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.3, §2.1 check 6",
    }
}

fn pnp_strings(cx: &Linux<'_>, o: &mut Out) {
    let pnp_f = vrom::PNP_HEADER_OFFS;
    match cx.pnp() {
        PnpStrings::Absent => o.pass(
            cx.abs(pnp_f.offset),
            format!(
                "no $PnP header (pnp_header_offs at {:#x} is 0): Linux prints {} for the \
                 manufacturer and the product",
                pnp_f.offset,
                consts::PNP_STRING_UNKNOWN
            ),
        ),
        PnpStrings::Outside { offs } => o.warn(
            cx.abs(pnp_f.offset),
            format!(
                "pnp_header_offs at {:#x} is {offs:#x}: the header's string offsets \
                 ({:#x}..{:#x}) lie outside the image ({:#x} bytes); Linux reads them from \
                 whatever memory follows",
                pnp_f.offset,
                offs + layout::pnp::MANUFACTURER_OFFSET.offset,
                offs + layout::pnp::PRODUCT_OFFSET.end(),
                cx.vlen()
            ),
        ),
        PnpStrings::Header {
            offs,
            signature_ok,
            strings,
        } => pnp_header_strings(cx, o, offs, signature_ok, &strings),
    }
}

#[cfg(test)]
fn pnp_strings_examples() -> Examples {
    // The product string offset leads past the image end.
    Examples::flagging(patched(vmi(), |d| {
        d[PNP + 0x10..PNP + 0x12].copy_from_slice(&0x400u16.to_le_bytes())
    }))
}

/// `pnp-strings` for a `$PnP` header inside the image.
fn pnp_header_strings(
    cx: &Linux<'_>,
    o: &mut Out,
    offs: usize,
    signature_ok: bool,
    strings: &[PnpString<'_>],
) {
    let problems: Vec<String> = strings
        .iter()
        .filter_map(|s| {
            let e = s.text.as_ref().err()?;
            Some(format!(
                "the {} offset at {:#x} ({:#x}) {}",
                s.what,
                s.field,
                s.ptr,
                cstr_problem(*e, s.ptr, cx.vlen())
            ))
        })
        .collect();
    if problems.is_empty() {
        let sig_note = if signature_ok {
            ""
        } else {
            " (its signature is not \"$PnP\"; Linux does not check it)"
        };
        let described: Vec<String> = strings
            .iter()
            .map(|s| {
                let name = s.text.as_deref().unwrap_or_default();
                match s.ptr {
                    0 => format!("{} offset 0 → \"{name}\"", s.what),
                    p => format!("{} \"{name}\" at {p:#x}", s.what),
                }
            })
            .collect();
        o.pass(
            cx.abs(offs),
            format!(
                "$PnP header at {offs:#x}{sig_note}: {}",
                described.join(", ")
            ),
        );
    } else {
        let first_bad = strings.iter().find(|s| s.text.is_err()).map(|s| s.field);
        o.warn(
            first_bad.and_then(|f| cx.abs(f)),
            format!(
                "$PnP header at {offs:#x}: {}; Linux prints whatever bytes memory holds there \
                 (expected NUL-terminated strings inside the image)",
                problems.join("; ")
            ),
        );
    }
}

crate::rule! {
    /// The `VMI: Found …` line Linux prints for the ROM, or why it prints none.
    ///
    /// After its first checks `check_vmi_rom` prints `VMI: Found MANUFACTURER PRODUCT, API
    /// version MAJ.MIN, ROM version MAJ.MIN` (the ROM version is the PCI data structure's code
    /// revision) before it decides on the license (vmi-abi.md §2.1 check 8). A ROM without
    /// "cVmi", with another major version or without a PCI header pointer is rejected before
    /// that line; the finding then names the rule that rejected it.
    pub static FOUND_LINE {
        profile: PROFILE,
        id: "found-line",
        severity: Info,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §2.1 check 8",
    }
}

fn found_line(cx: &Linux<'_>, o: &mut Out) {
    let (manufacturer, product) = cx.pnp().names();
    let rom_version = cx
        .pci_bytes()
        .and_then(|b| {
            layout::pci::ROM_VERSION_MAJ
                .read(b)
                .zip(layout::pci::ROM_VERSION_MIN.read(b))
        })
        .map_or("?.?".to_string(), |(a, b)| format!("{a}.{b}"));
    let api_text = cx
        .api()
        .map_or("?.?".to_string(), |(maj, min)| format!("{maj}.{min}"));
    let msg = match cx.rejected_at() {
        None => format!(
            "Linux prints: `VMI: Found {manufacturer} {product}, API version {api_text}, ROM \
             version {rom_version}`"
        ),
        Some(rule) => {
            format!(
                "Linux prints no `VMI: Found` line: it already rejected the ROM at rule `{rule}`"
            )
        }
    };
    o.pass(None, msg);
}

#[cfg(test)]
fn found_line_examples() -> Examples {
    // Rejected at vmi-signature: no `VMI: Found` line.
    Examples::flagging(patched(vmi(), |d| d[8] = 0))
}

crate::rule! {
    /// The license string (license_offs, offset 0x16) is exactly `"GPL"` or `"GPL v2"`.
    ///
    /// `check_vmi_rom` reads the NUL-terminated string license_offs points at — `"unspecified"`
    /// when license_offs is 0 — and rejects the ROM unless it compares equal (strcmp) to
    /// `"GPL"` or `"GPL v2"`, printing ``VMI: Non GPL license `…' found for ROM. Not used.``
    /// (vmi-abi.md §1.4, §2.1 checks 7 and 9). The comparison is exact: `"GPLv2"`, `"GPL-2.0"`
    /// or a missing NUL are rejected.
    pub static LICENSE {
        profile: PROFILE,
        id: "license",
        severity: Fail,
        source: "Linux `check_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.4, §2.1 checks 7, 9",
    }
}

fn license(cx: &Linux<'_>, o: &mut Out) {
    let f = vrom::LICENSE_OFFS;
    let offs = cx.read(&f);
    let text = match offs {
        Some(0) | None => Ok(consts::LICENSE_UNSPECIFIED.to_string()),
        Some(p) => cstr_at(cx.view, p as usize).map(|s| s.to_string()),
    };
    let lic_at = offs.filter(|&p| p != 0).map(|p| p as usize);
    match (offs, &text) {
        (None, _) => o.fail(
            None,
            format!(
                "the image ({} bytes) ends before license_offs at {:#x}",
                cx.vlen(),
                f.offset
            ),
        ),
        (Some(0), _) => o.fail(
            cx.abs(f.offset),
            format!(
                "license_offs at {:#x} is 0: Linux assumes \"{1}\" and prints ``VMI: Non GPL \
                 license `{1}' found for ROM. Not used.``; expected the offset of \"GPL\" or \"GPL \
                 v2\"",
                f.offset,
                consts::LICENSE_UNSPECIFIED
            ),
        ),
        (Some(_), Ok(s)) if consts::ACCEPTED_LICENSES.contains(&s.as_str()) => o.pass(
            lic_at.and_then(|p| cx.abs(p)),
            format!(
                "license \"{s}\" at {:#x}: accepted (exactly \"GPL\" or \"GPL v2\")",
                lic_at.unwrap_or(0)
            ),
        ),
        (Some(_), Ok(s)) => o.fail(
            lic_at.and_then(|p| cx.abs(p)),
            format!(
                "``VMI: Non GPL license `{s}' found for ROM. Not used.``: the license at {:#x} is \
                 \"{s}\", expected exactly \"GPL\" or \"GPL v2\"",
                lic_at.unwrap_or(0)
            ),
        ),
        (Some(p), Err(e)) => o.fail(
            cx.abs(f.offset),
            format!(
                "license_offs at {:#x} ({p:#x}) {}: Linux compares unrelated memory with \"GPL\" \
                 and \"GPL v2\" and almost surely prints ``VMI: Non GPL license `…' found for ROM. \
                 Not used.``",
                f.offset,
                cstr_problem(*e, p as usize, cx.vlen())
            ),
        ),
    }
}

#[cfg(test)]
fn license_examples() -> Examples {
    Examples::flagging(spec(|s| s.license = "GPLv2".into()))
}

crate::rule! {
    /// The image holds the whole 0x90-byte VMI header, entry slots included.
    ///
    /// `struct vrom_header` ends with two 8-byte code slots, Init at 0x80 and GetRelocationInfo
    /// at 0x88, which Linux near-calls in place (`activate_vmi` through `call_vrom_func`, and
    /// `vmi_get_function`/`patch_internal` through `call_vrom_long_func`); an image shorter
    /// than 0x90 bytes leaves them to whatever memory follows (vmi-abi.md §1.1, §3.1, §3.2).
    pub static HEADER_LENGTH {
        profile: PROFILE,
        id: "header-length",
        severity: Fail,
        source: "Linux `struct vrom_header` and `activate_vmi` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.1",
    }
}

fn header_length(cx: &Linux<'_>, o: &mut Out) {
    let vlen = cx.vlen();
    if vlen >= consts::HEADER_SIZE {
        o.pass(
            cx.abs(0),
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
            cx.abs(0),
            format!(
                "the image is only {vlen:#x} bytes; the VMI header with the entry slots Linux \
                 near-calls at {:#x} and {:#x} needs {:#x}",
                consts::ENTRY_INIT,
                consts::ENTRY_GET_RELOC,
                consts::HEADER_SIZE
            ),
        );
    }
}

#[cfg(test)]
fn header_length_examples() -> Examples {
    Examples::flagging(vmi()[..0x88].to_vec())
}

crate::rule! {
    /// The Init slot at 0x80 holds code: not all zero, and a `jmp` in it stays in the image.
    ///
    /// Linux activates the ROM by near-calling ROM+0x80 (`call_vrom_func(vmi_rom, vmi_init)`
    /// in `activate_vmi`) and executes the 8 bytes there in place, usually a 5-byte `jmp rel32`
    /// to the implementation (vmi-abi.md §1.1, §3.1). An all-zero slot, or a jump before the
    /// image start or past its end, runs whatever memory holds.
    pub static INIT_SLOT {
        profile: PROFILE,
        id: "init-slot",
        severity: Fail,
        source: "Linux `activate_vmi` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.1, §3.1",
    }
}

fn init_slot(cx: &Linux<'_>, o: &mut Out) {
    entry_slot(cx, o, "Init", consts::ENTRY_INIT);
}

#[cfg(test)]
fn init_slot_examples() -> Examples {
    Examples::flagging(patched(vmi(), |d| d[0x80..0x88].fill(0)))
}

crate::rule! {
    /// The GetRelocationInfo slot at 0x88 holds code: not all zero, and a `jmp` in it stays in
    /// the image.
    ///
    /// For every call it uses, Linux near-calls ROM+0x88 (`call_vrom_long_func(vmi_rom,
    /// get_reloc, call)` in `vmi_get_function` and `patch_internal`) and executes the 8 bytes
    /// there in place (vmi-abi.md §1.1, §3.2). An all-zero slot, or a jump leaving the image,
    /// runs whatever memory holds.
    pub static GET_RELOC_SLOT {
        profile: PROFILE,
        id: "get-reloc-slot",
        severity: Fail,
        source: "Linux `vmi_get_function`, `patch_internal` (arch/x86/kernel/vmi_32.c); vmi-abi.md §1.1, §3.2",
    }
}

fn get_reloc_slot(cx: &Linux<'_>, o: &mut Out) {
    entry_slot(cx, o, "GetRelocationInfo", consts::ENTRY_GET_RELOC);
}

#[cfg(test)]
fn get_reloc_slot_examples() -> Examples {
    // jmp rel32 far past the end.
    Examples::flagging(patched(vmi(), |d| {
        d[0x89..0x8D].copy_from_slice(&0x1000i32.to_le_bytes())
    }))
}

/// One 8-byte VMI entry slot: present, not all zero, and a `jmp` in it stays inside the image.
fn entry_slot(cx: &Linux<'_>, o: &mut Out, name: &str, off: usize) {
    let (view, vlen) = (cx.view, cx.vlen());
    let end = off + consts::ENTRY_SLOT_SIZE;
    let at = cx.abs(off);
    let Some(slot) = view.get(off..end) else {
        return o.fail(
            None,
            format!(
                "the {name} slot {off:#x}..{end:#x} lies outside the image ({vlen:#x} bytes): \
                 Linux near-calls ROM+{off:#x} and executes whatever memory holds"
            ),
        );
    };
    if slot.iter().all(|&b| b == 0) {
        return o.fail(
            at,
            format!(
                "the {name} slot at {off:#x} is all zero: Linux near-calls ROM+{off:#x}, expected \
                 code (e.g. a 5-byte jmp rel32 to the implementation)"
            ),
        );
    }
    let msg = match slot.first() {
        Some(0xEB | 0xE9) => match jump_target(view, off, Mode::Bits32) {
            Some(t) if t < vlen => {
                return o.pass(
                    at,
                    format!("the {name} slot at {off:#x} jumps to {t:#x}, inside the image"),
                );
            }
            Some(t) => format!(
                "the {name} slot at {off:#x} jumps to {t:#x}, outside the image ({vlen:#x} \
                 bytes); expected a target inside the image"
            ),
            None => format!(
                "the {name} slot at {off:#x} ({}) jumps before the image start; expected a \
                 target inside the image",
                hex_bytes(slot)
            ),
        },
        _ => {
            return o.pass(
                at,
                format!(
                    "the {name} slot at {off:#x} holds {}: not a near jmp, executed in place",
                    hex_bytes(slot)
                ),
            );
        }
    };
    o.fail(at, msg);
}

crate::rule! {
    /// The image fits the window 0xC0000–0xDFFFF that Linux scans.
    ///
    /// `probe_vmi_rom` looks for candidates at 0xC0000 ≤ base < 0xE0000 (vmi-abi.md §2.1), and
    /// the whole ROM must lie below 0xE0000 to be mapped there; an image longer than the
    /// 128 KiB window cannot be placed so that it ends inside it.
    pub static SCAN_WINDOW {
        profile: PROFILE,
        id: "scan-window",
        severity: Fail,
        source: "Linux `probe_vmi_rom` (arch/x86/kernel/vmi_32.c); vmi-abi.md §2.1",
    }
}

fn scan_window(cx: &Linux<'_>, o: &mut Out) {
    let span = cx.img.declared_len.max(cx.vlen());
    let window = (consts::SCAN_END - consts::SCAN_START) as usize;
    if span <= window {
        o.pass(
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
}

#[cfg(test)]
fn scan_window_examples() -> Examples {
    // Size byte 0 (no declared length) in a 129 KiB file.
    let mut d = vmi();
    d.resize(129 * 1024, 0);
    d[2] = 0;
    Examples::flagging(d)
}

crate::rule! {
    /// virtual_top (offset 0x10) is 0, or the address-space hole it asks for is spelled out.
    ///
    /// After accepting the ROM Linux calls `reserve_top_address(-virtual_top)`: the hole
    /// [virtual_top, 4 GiB) is taken from the kernel's address space and FIXADDR_TOP moves
    /// below it. 2.6.21 kernels built with CONFIG_COMPAT_VDSO hit `BUG_ON(reserve != 0)` there,
    /// so only virtual_top = 0 works on them (vmi-abi.md §1.1, §2.1, pitfall 14); a value not
    /// 4 KiB aligned is named too.
    pub static VIRTUAL_TOP {
        profile: PROFILE,
        id: "virtual-top",
        severity: Warn,
        source: "Linux `vmi_init`, `reserve_top_address` (arch/x86/kernel/vmi_32.c, arch/x86/mm/pgtable.c); vmi-abi.md §2.1",
    }
}

fn virtual_top(cx: &Linux<'_>, o: &mut Out) {
    let f = vrom::VIRTUAL_TOP;
    match cx.read(&f) {
        None => o.warn(
            None,
            format!(
                "the image ends before virtual_top at {:#x}; Linux reads it from memory",
                f.offset
            ),
        ),
        Some(0) => o.pass(
            cx.abs(f.offset),
            format!(
                "virtual_top at {:#x} is 0: Linux reserves no address-space hole",
                f.offset
            ),
        ),
        Some(vt) => {
            let hole = (1u64 << 32) - vt;
            let mut msg = format!(
                "virtual_top at {:#x} is {vt:#x}: Linux reserves [{vt:#x}, 4 GiB) ({} KiB) with \
                 reserve_top_address and moves FIXADDR_TOP below it; 2.6.21 kernels built with \
                 CONFIG_COMPAT_VDSO hit BUG_ON(reserve != 0) (only virtual_top = 0 works there)",
                f.offset,
                hole / 1024
            );
            if vt % 4096 != 0 {
                msg.push_str(&format!(
                    "; it is not 4 KiB aligned (expected a multiple of 0x1000, e.g. {:#x})",
                    vt & !0xFFF
                ));
            }
            o.warn(cx.abs(f.offset), msg);
        }
    }
}

#[cfg(test)]
fn virtual_top_examples() -> Examples {
    Examples::flagging(spec(|s| s.virtual_top = 0xFFC0_0000))
}

crate::rule! {
    /// The image's size×512 bytes sum to 0 mod 256 (Linux does not check it; a BIOS does).
    ///
    /// Linux never reads rom_length nor the checksum (vmi-abi.md §1.4), but it only finds a
    /// ROM a BIOS has loaded, and SeaBIOS drops an option ROM whose bytes do not sum to 0
    /// (`is_valid_rom` in src/optionroms.c). A warning here is a failure of the `seabios`
    /// profile's `checksum`.
    pub static CHECKSUM {
        profile: PROFILE,
        id: "checksum",
        severity: Warn,
        source: "vmi-abi.md §1.4; SeaBIOS `is_valid_rom` (src/optionroms.c)",
    }
}

fn checksum(cx: &Linux<'_>, o: &mut Out) {
    let img = cx.img;
    let ck_at = img.declared_len.checked_sub(1).and_then(|o| cx.abs(o));
    match img.sum {
        Some(0) => o.pass(
            ck_at,
            format!(
                "Linux never checks the checksum; the {:#x} bytes sum to 0 as a BIOS requires",
                img.declared_len
            ),
        ),
        Some(s) => o.warn(
            ck_at,
            format!(
                "Linux never checks the checksum, but the {:#x} bytes sum to {s:#04x}, expected 0: \
                 a BIOS that loads the ROM (SeaBIOS) drops it, so Linux never finds it",
                img.declared_len
            ),
        ),
        None => o.warn(
            cx.abs(2),
            format!(
                "Linux never checks the checksum, but it cannot be verified: the size byte is {} \
                 and the file holds {:#x} bytes of the image; a BIOS sums size×512 bytes to 0",
                img.size_byte, img.available
            ),
        ),
    }
}

#[cfg(test)]
fn checksum_examples() -> Examples {
    let mut d = vmi();
    d[0x1FF] ^= 1;
    Examples::flagging(d)
}

/// [`vmi_spec`] with the default header changed by `f`.
#[cfg(test)]
fn spec(f: fn(&mut crate::vmi::VmiHeaderSpec)) -> Vec<u8> {
    let mut s = crate::vmi::VmiHeaderSpec::default();
    f(&mut s);
    vmi_spec(&s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Profile;
    use crate::validate::examples::{Table, check_profile};

    /// Every rule of the profile, with the examples declared next to it.
    const EXAMPLES: Table = &[
        (&SCOPE, scope_examples),
        (&SIGNATURE, signature_examples),
        (&VMI_SIGNATURE, vmi_signature_examples),
        (&API_VERSION, api_version_examples),
        (&PCI_HEADER, pci_header_examples),
        (&PCI_IDS, pci_ids_examples),
        (&PNP_STRINGS, pnp_strings_examples),
        (&FOUND_LINE, found_line_examples),
        (&LICENSE, license_examples),
        (&HEADER_LENGTH, header_length_examples),
        (&INIT_SLOT, init_slot_examples),
        (&GET_RELOC_SLOT, get_reloc_slot_examples),
        (&SCAN_WINDOW, scan_window_examples),
        (&VIRTUAL_TOP, virtual_top_examples),
        (&CHECKSUM, checksum_examples),
    ];

    #[test]
    fn every_rule_passes_one_image_and_flags_another() {
        check_profile(Profile::LinuxVmi, EXAMPLES);
    }
}
