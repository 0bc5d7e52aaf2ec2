//! The vmirom manifest: a 32-byte block at offset 0x60 of a generated image (inside the header
//! area vmi-abi.md §1.1 reserves for headers) that tells tools where the GetRelocationInfo table
//! is, which backend built the image and its build id. Linux never reads it.
//!
//! | Off | Size | Field |
//! |---|---|---|
//! | 0x00 | 4 | magic `"VMRM"` |
//! | 0x04 | 1 | manifest version (1) |
//! | 0x05 | 1 | number of table entries (calls 0..n-1) |
//! | 0x06 | 2 | offset of the GetRelocationInfo table |
//! | 0x08 | 4 | build id (FNV-1a of the image with this field and the checksum byte zero) |
//! | 0x0C | 2 | offset of the NUL-terminated backend name |
//! | 0x0E | 2 | size of the backend's private data area |
//! | 0x10 | 2 | offset of the backend's private data area (0 = none) |
//! | 0x12 | 2 | offset of the private-RAM header template (0 = no private RAM; [`crate::ram`]) |
//!
//! Each table entry is a little-endian u32: bits 0–5 the relocation type, bit 6
//! [`NOP_ON_HYPERVISOR`](crate::ram::NOP_ON_HYPERVISOR), bit 7
//! [`NEEDS_RAM`](crate::ram::NEEDS_RAM), bits 8–31 the image offset of the implementation (0
//! for NONE/NOP). GetRelocationInfo returns `image base + offset` in EAX and the type in EDX
//! (NONE for a NEEDS_RAM entry while the ROM has no private RAM).

use optionrom::bytes::{cstr_at, u32_at};
use vmi_abi::RelocType;
use vmi_abi::layout::{Field, Kind, Layout};

/// Where the manifest lives in the image.
pub const OFFSET: usize = 0x60;
/// Magic.
pub const MAGIC: u32 = u32::from_le_bytes(*b"VMRM");
/// Manifest version this crate writes.
pub const VERSION: u8 = 1;

/// Magic field.
pub const F_MAGIC: Field = Field::new("magic", 0x00, Kind::U32, "\"VMRM\"");
/// Version field.
pub const F_VERSION: Field = Field::new("version", 0x04, Kind::U8, "manifest version");
/// Table entry count.
pub const F_COUNT: Field = Field::new("count", 0x05, Kind::U8, "table entries");
/// Table offset.
pub const F_TABLE: Field = Field::new("table", 0x06, Kind::U16, "GetRelocationInfo table offset");
/// Build id.
pub const F_BUILD_ID: Field = Field::new("build_id", 0x08, Kind::U32, "build id");
/// Backend name offset.
pub const F_BACKEND: Field = Field::new("backend", 0x0C, Kind::U16, "backend name offset");
/// Data area size.
pub const F_DATA_SIZE: Field = Field::new("data_size", 0x0E, Kind::U16, "private data size");
/// Data area offset.
pub const F_DATA: Field = Field::new("data", 0x10, Kind::U16, "private data offset");
/// Private-RAM header template offset.
pub const F_RAM: Field = Field::new("ram", 0x12, Kind::U16, "private-RAM header template offset");

/// The whole block.
pub const LAYOUT: Layout = Layout {
    name: "vmirom_manifest",
    size: 0x20,
    packed: true,
    fields: &[
        F_MAGIC,
        F_VERSION,
        F_COUNT,
        F_TABLE,
        F_BUILD_ID,
        F_BACKEND,
        F_DATA_SIZE,
        F_DATA,
        F_RAM,
    ],
};

/// A decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Manifest {
    /// Manifest version.
    pub version: u8,
    /// Number of table entries.
    pub count: u8,
    /// Table offset.
    pub table: u16,
    /// Build id.
    pub build_id: u32,
    /// Backend name.
    pub backend: String,
    /// Private data area (offset, size), if any.
    pub data: Option<(u16, u16)>,
    /// Image offset of the private-RAM header template, if the ROM takes private RAM.
    pub ram: Option<u16>,
}

/// One table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Call number.
    pub call: u8,
    /// Raw type byte.
    pub raw_type: u8,
    /// The type, if it is one of the four.
    #[serde(skip)]
    pub reloc: Option<RelocType>,
    /// Image offset of the implementation (0 for NONE/NOP).
    pub offset: u32,
    /// The call needs the ROM's private RAM: GetRelocationInfo answers NONE without it
    /// ([`crate::ram::NEEDS_RAM`]).
    pub needs_ram: bool,
    /// GetRelocationInfo answers NOP for it once Init found the backend's hypervisor
    /// ([`crate::ram::NOP_ON_HYPERVISOR`]).
    pub nop_on_hypervisor: bool,
}

impl Manifest {
    /// Reads the manifest of `image`: `None` if there is none, `Some(Err)` if it is damaged.
    pub fn read(image: &[u8]) -> Option<Result<Manifest, String>> {
        let block = image.get(OFFSET..OFFSET + LAYOUT.size)?;
        if F_MAGIC.read(block)? != u64::from(MAGIC) {
            return None;
        }
        Some(Self::decode(image, block))
    }

    fn decode(image: &[u8], block: &[u8]) -> Result<Manifest, String> {
        let get = |f: &Field| f.read(block).unwrap_or(0);
        let version = get(&F_VERSION) as u8;
        if version != VERSION {
            return Err(format!(
                "manifest version {version} at {OFFSET:#x}, expected {VERSION}"
            ));
        }
        let count = get(&F_COUNT) as u8;
        let table = get(&F_TABLE) as u16;
        let end = usize::from(table) + 4 * usize::from(count);
        if end > image.len() {
            return Err(format!(
                "GetRelocationInfo table at {table:#x} ({count} entries) ends at {end:#x}, past the image end {:#x}",
                image.len()
            ));
        }
        let name_at = get(&F_BACKEND) as usize;
        let backend = cstr_at(image, name_at)
            .map(|s| s.to_string())
            .map_err(|e| format!("backend name at {name_at:#x}: {e:?}"))?;
        let data_size = get(&F_DATA_SIZE) as u16;
        let data_at = get(&F_DATA) as u16;
        let ram_at = get(&F_RAM) as u16;
        Ok(Manifest {
            version,
            count,
            table,
            build_id: get(&F_BUILD_ID) as u32,
            backend,
            data: (data_at != 0).then_some((data_at, data_size)),
            ram: (ram_at != 0).then_some(ram_at),
        })
    }

    /// The backend the image was built on, without the wrappers around it: `kvm` for
    /// `trace(kvm)`, `native` for `native+override(IRET)` (an [`Override`](crate::Override)
    /// keeps its base's behaviour but for one call). What a ROM promises to do — the kvm
    /// backend: kvmclock under KVM — follows from it.
    pub fn base_backend(&self) -> &str {
        let mut name = self.backend.as_str();
        loop {
            if let Some(inner) = name
                .strip_prefix("trace(")
                .and_then(|n| n.strip_suffix(')'))
            {
                name = inner;
            } else if let Some((base, _)) = name.split_once('+') {
                name = base;
            } else {
                return name;
            }
        }
    }

    /// The table entries.
    pub fn entries(&self, image: &[u8]) -> Vec<Entry> {
        (0..self.count)
            .filter_map(|n| {
                let raw = u32_at(image, usize::from(self.table) + 4 * usize::from(n))?;
                let byte = (raw & 0xFF) as u8;
                let t = byte & !(crate::ram::NEEDS_RAM | crate::ram::NOP_ON_HYPERVISOR);
                Some(Entry {
                    call: n,
                    raw_type: t,
                    reloc: RelocType::from_u8(t),
                    offset: raw >> 8,
                    needs_ram: byte & crate::ram::NEEDS_RAM != 0,
                    nop_on_hypervisor: byte & crate::ram::NOP_ON_HYPERVISOR != 0,
                })
            })
            .collect()
    }
}

/// Encodes a table entry.
pub fn entry(reloc: RelocType, offset: u32) -> u32 {
    (offset << 8) | reloc as u32
}

/// 32-bit FNV-1a.
pub fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811C_9DC5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_backend_is_the_name_inside_the_wrappers() {
        let m = |backend: &str| Manifest {
            version: VERSION,
            count: 0,
            table: 0,
            build_id: 0,
            backend: backend.into(),
            data: None,
            ram: None,
        };
        for (name, base) in [
            ("kvm", "kvm"),
            ("native", "native"),
            ("trace(kvm)", "kvm"),
            ("kvm+override(GetCycleFrequency)", "kvm"),
            ("trace(native+override(IRET))", "native"),
            ("native+override(IRET)+override(SYSEXIT)", "native"),
            ("trace(trace(kvm))", "kvm"),
            ("vendor-rom", "vendor-rom"),
        ] {
            assert_eq!(m(name).base_backend(), base, "{name}");
        }
    }
}
