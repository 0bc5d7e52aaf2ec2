//! The `pci` rules of an EFI image's header (code type 3): the fields the UEFI specification
//! adds after the size ("PCI Option ROMs", EFI PCI expansion ROM header), judged for EFI images
//! only.

use super::super::Out;
use super::{ImageCx, PROFILE};
use crate::efi::{EFI_SIGNATURE as SIGNATURE_VALUE, EfiHeader};

#[cfg(test)]
use super::super::examples::{Examples, chain, chain_efi};

/// The EFI header, for EFI images.
fn header<'a>(cx: &'a ImageCx<'_>) -> Option<&'a EfiHeader> {
    cx.img.efi.as_ref()
}

/// Examples: [`chain`] passes; its EFI image changed by `f` is flagged.
#[cfg(test)]
fn flagging(f: fn(&mut [u8])) -> Examples {
    Examples {
        passes: chain(),
        flags: chain_efi(f),
    }
}

crate::rule! {
    /// An EFI image's signature at 0x4 is 0x0EF1.
    ///
    /// The EFI PCI expansion ROM header carries the u32 0x0EF1 after the initialization size
    /// (UEFI specification, "PCI Option ROMs"); firmware ignores an EFI image without it.
    pub static EFI_SIGNATURE {
        profile: PROFILE,
        id: "efi-signature",
        severity: Fail,
        source: "UEFI specification, PCI Option ROMs (EFI PCI expansion ROM header)",
    }
}

pub(super) fn efi_signature(cx: &ImageCx<'_>, o: &mut Out) {
    let Some(e) = header(cx) else {
        return;
    };
    if e.signature == SIGNATURE_VALUE {
        o.pass(cx.abs(4), "EFI signature 0x0EF1 at 0x4".into());
    } else {
        o.fail(
            cx.abs(4),
            format!(
                "EFI signature at 0x4 is {:#x}, expected {SIGNATURE_VALUE:#06x}",
                e.signature
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn efi_signature_examples() -> Examples {
    flagging(|e| e[4] = 0xF0)
}

crate::rule! {
    /// An EFI image's subsystem at 0x8 is an application or a driver.
    ///
    /// The subsystem is the PE/COFF subsystem of the EFI image: 10 (EFI application), 11
    /// (boot-service driver) or 12 (runtime driver) (UEFI specification, "PCI Option ROMs");
    /// firmware does not load another.
    pub static EFI_SUBSYSTEM {
        profile: PROFILE,
        id: "efi-subsystem",
        severity: Warn,
        source: "UEFI specification, PCI Option ROMs (EFI PCI expansion ROM header)",
    }
}

pub(super) fn efi_subsystem(cx: &ImageCx<'_>, o: &mut Out) {
    let Some(e) = header(cx) else {
        return;
    };
    if e.subsystem_name() == "unknown" {
        o.warn(
            cx.abs(8),
            format!(
                "EFI subsystem at 0x8 is {}, expected 10 (application), 11 (boot-service driver) \
                 or 12 (runtime driver)",
                e.subsystem
            ),
        );
    } else {
        o.pass(
            cx.abs(8),
            format!("EFI subsystem {} ({})", e.subsystem, e.subsystem_name()),
        );
    }
}

#[cfg(test)]
pub(super) fn efi_subsystem_examples() -> Examples {
    flagging(|e| e[8] = 99)
}

crate::rule! {
    /// An EFI image's machine type at 0xA is a known PE/COFF machine.
    ///
    /// The machine type says which processor the EFI image's code is for (PE/COFF machine
    /// types: 0x14C IA32, 0x8664 x64, 0xAA64 AArch64, 0xEBC EFI byte code, …; UEFI
    /// specification, "PCI Option ROMs"); firmware skips images for another machine.
    pub static EFI_MACHINE {
        profile: PROFILE,
        id: "efi-machine",
        severity: Warn,
        source: "UEFI specification, PCI Option ROMs; PE/COFF machine types",
    }
}

pub(super) fn efi_machine(cx: &ImageCx<'_>, o: &mut Out) {
    let Some(e) = header(cx) else {
        return;
    };
    if e.machine_name() == "unknown" {
        o.warn(
            cx.abs(0xA),
            format!(
                "EFI machine type at 0xa is {:#06x}, not a known PE/COFF machine (0x14c IA32, \
                 0x8664 x64, 0xaa64 AArch64, 0xebc EBC, …)",
                e.machine
            ),
        );
    } else {
        o.pass(
            cx.abs(0xA),
            format!("EFI machine type {:#06x} ({})", e.machine, e.machine_name()),
        );
    }
}

#[cfg(test)]
pub(super) fn efi_machine_examples() -> Examples {
    flagging(|e| e[0xA..0xC].copy_from_slice(&0x1234u16.to_le_bytes()))
}

crate::rule! {
    /// An EFI image's image offset at 0x16 leads to a PE/COFF image (`"MZ"`) inside it.
    ///
    /// The offset gives where the (possibly compressed) PE/COFF image starts within the ROM
    /// image (UEFI specification, "PCI Option ROMs"). 0 or an offset past the image fails; an
    /// offset inside it without the `"MZ"` of a DOS/PE header warns.
    pub static EFI_PE_OFFSET {
        profile: PROFILE,
        id: "efi-pe-offset",
        severity: Fail,
        source: "UEFI specification, PCI Option ROMs; PE/COFF",
    }
}

pub(super) fn efi_pe_offset(cx: &ImageCx<'_>, o: &mut Out) {
    let Some(e) = header(cx) else {
        return;
    };
    let (pe, vlen) = (usize::from(e.pe_offset), cx.vlen());
    if pe == 0 || pe >= vlen {
        o.fail(
            cx.abs(0x16),
            format!(
                "the EFI image offset at 0x16 is {pe:#x}, expected the offset of the PE/COFF image \
                 inside the image ({vlen:#x} bytes)"
            ),
        );
    } else if cx.view.get(pe..pe + 2) == Some(b"MZ".as_slice()) {
        o.pass(cx.abs(pe), format!("PE/COFF image (\"MZ\") at {pe:#x}"));
    } else {
        o.warn(
            cx.abs(pe),
            format!(
                "the EFI image offset {pe:#x} is inside the image, but no \"MZ\" header is there"
            ),
        );
    }
}

#[cfg(test)]
pub(super) fn efi_pe_offset_examples() -> Examples {
    flagging(|e| e[0x16..0x18].fill(0))
}
