//! The VMI extension of the option-ROM header (vmi-abi.md §1.1): parse and write.

use crate::build::ImageBuilder;
use crate::bytes::{CStrError, CString, Mode, cstr_at, jump_target};
use crate::error::Error;
use serde::Serialize;
use vmi_abi::consts;
use vmi_abi::layout::{pnp, vrom};

/// The VMI fields of an image whose bytes 8..12 are `cVmi`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmiHeader {
    /// API minor version.
    pub api_minor: u8,
    /// API major version (3 for VMI 3.x).
    pub api_major: u8,
    /// Number of jump slots.
    pub jump_slots: u8,
    /// Lowest linear address the hypervisor claims.
    pub virtual_top: u32,
    /// Offset of the license string (0 = none).
    pub license_offs: u16,
    /// The license string, if `license_offs` is non-zero.
    pub license: Option<Result<CString, CStrError>>,
    /// Manufacturer string Linux would print (from the `$PnP` header): `None` when there is no
    /// `$PnP` header or the pointer is 0 (Linux prints "UNKNOWN"), `Some(Err)` when it cannot be
    /// read inside the image.
    pub manufacturer: Option<Result<CString, CStrError>>,
    /// Product string, same convention.
    pub product: Option<Result<CString, CStrError>>,
    /// The 8 bytes of the Init slot at 0x80, if present.
    pub init_slot: Option<Vec<u8>>,
    /// The 8 bytes of the GetRelocationInfo slot at 0x88, if present.
    pub get_reloc_slot: Option<Vec<u8>>,
    /// Where the Init slot jumps (image offset), if it starts with a near `jmp`.
    pub init_target: Option<usize>,
    /// Where the GetRelocationInfo slot jumps, if it starts with a near `jmp`.
    pub get_reloc_target: Option<usize>,
}

impl VmiHeader {
    /// The VMI header of `image` (the image's own bytes from offset 0), if it carries `cVmi`.
    pub fn read(image: &[u8]) -> Option<VmiHeader> {
        let r = |f: &vmi_abi::layout::Field| f.read(image);
        if r(&vrom::VROM_SIGNATURE)? != u64::from(consts::VMI_SIGNATURE) {
            return None;
        }
        let license_offs = r(&vrom::LICENSE_OFFS).unwrap_or(0) as u16;
        let slot = |f: &vmi_abi::layout::Field| f.bytes(image).map(<[u8]>::to_vec);
        let pnp_offs = r(&vrom::PNP_HEADER_OFFS).unwrap_or(0) as usize;
        let pnp_string = |f: &vmi_abi::layout::Field| -> Option<Result<CString, CStrError>> {
            if pnp_offs == 0 {
                return None;
            }
            let Some(ptr) = image.get(pnp_offs..).and_then(|h| f.read(h)) else {
                return Some(Err(CStrError::OutOfBounds));
            };
            (ptr != 0).then(|| cstr_at(image, ptr as usize))
        };
        Some(VmiHeader {
            api_minor: r(&vrom::API_VERSION_MIN).unwrap_or(0) as u8,
            api_major: r(&vrom::API_VERSION_MAJ).unwrap_or(0) as u8,
            jump_slots: r(&vrom::JUMP_SLOTS).unwrap_or(0) as u8,
            virtual_top: r(&vrom::VIRTUAL_TOP).unwrap_or(0) as u32,
            license_offs,
            license: (license_offs != 0).then(|| cstr_at(image, usize::from(license_offs))),
            manufacturer: pnp_string(&pnp::MANUFACTURER_OFFSET),
            product: pnp_string(&pnp::PRODUCT_OFFSET),
            init_slot: slot(&vrom::VMI_INIT),
            get_reloc_slot: slot(&vrom::GET_RELOC),
            init_target: jump_target(image, vrom::VMI_INIT.offset, Mode::Bits32),
            get_reloc_target: jump_target(image, vrom::GET_RELOC.offset, Mode::Bits32),
        })
    }

    /// The license as Linux sees it: the string, or "unspecified" when absent or unreadable.
    pub fn license_for_linux(&self) -> CString {
        match &self.license {
            Some(Ok(s)) => s.clone(),
            _ => CString(consts::LICENSE_UNSPECIFIED.as_bytes().to_vec()),
        }
    }
}

/// What goes into the VMI part of a new header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmiHeaderSpec {
    /// API major version (3).
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Jump-slot count (2: Init and GetRelocationInfo).
    pub jump_slots: u8,
    /// Lowest linear address claimed (0 = none).
    pub virtual_top: u32,
    /// License string ("GPL v2").
    pub license: String,
}

impl Default for VmiHeaderSpec {
    fn default() -> Self {
        VmiHeaderSpec {
            api_major: consts::VMI_API_MAJOR,
            api_minor: consts::VMI_API_MINOR,
            jump_slots: 2,
            virtual_top: 0,
            license: "GPL v2".into(),
        }
    }
}

/// Writes the VMI fields into a builder made with a header of at least
/// [`HEADER_SIZE`](consts::HEADER_SIZE) bytes: signature, versions, virtual_top, the license
/// string (appended), and the two 8-byte entry slots as `jmp rel32` to `init` and `get_reloc`
/// (image offsets), padded with `int3`.
pub fn write_header(
    b: &mut ImageBuilder,
    spec: &VmiHeaderSpec,
    init: usize,
    get_reloc: usize,
) -> Result<(), Error> {
    let license = b.add_string(&spec.license)?;
    b.set(&vrom::VROM_SIGNATURE, u64::from(consts::VMI_SIGNATURE))?;
    b.set(&vrom::API_VERSION_MIN, u64::from(spec.api_minor))?;
    b.set(&vrom::API_VERSION_MAJ, u64::from(spec.api_major))?;
    b.set(&vrom::JUMP_SLOTS, u64::from(spec.jump_slots))?;
    b.set(&vrom::VIRTUAL_TOP, u64::from(spec.virtual_top))?;
    b.set(&vrom::LICENSE_OFFS, u64::from(license))?;
    b.write_slot_jump32(vrom::VMI_INIT.offset, consts::ENTRY_SLOT_SIZE, init)?;
    b.write_slot_jump32(vrom::GET_RELOC.offset, consts::ENTRY_SLOT_SIZE, get_reloc)?;
    Ok(())
}
