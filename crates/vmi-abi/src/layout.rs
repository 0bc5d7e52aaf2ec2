//! Byte layouts of the structures the ABI defines (vmi-abi.md §1, §3.2, §6).
//!
//! Each structure is a [`Layout`]: a list of [`Field`]s with offsets and kinds. Parsers read fields
//! through [`Field::read`], builders write through [`Field::write`], and the C header and Rust
//! module that `vmirom header` prints are generated from the same tables.

/// The kind (size and C type) of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unsigned byte.
    U8,
    /// Little-endian u16.
    U16,
    /// Little-endian u32.
    U32,
    /// Little-endian u64.
    U64,
    /// A byte array of the given length (strings, code, reserved space).
    Bytes(usize),
}

impl Kind {
    /// Size in bytes.
    pub const fn size(self) -> usize {
        match self {
            Kind::U8 => 1,
            Kind::U16 => 2,
            Kind::U32 => 4,
            Kind::U64 => 8,
            Kind::Bytes(n) => n,
        }
    }
}

/// One field of a [`Layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Name as in the Linux/C declaration.
    pub name: &'static str,
    /// Byte offset from the start of the structure.
    pub offset: usize,
    /// Size and type.
    pub kind: Kind,
    /// One-line meaning.
    pub doc: &'static str,
}

impl Field {
    /// A field at `offset` of the given kind.
    pub const fn new(name: &'static str, offset: usize, kind: Kind, doc: &'static str) -> Field {
        Field {
            name,
            offset,
            kind,
            doc,
        }
    }

    /// Size in bytes.
    pub const fn size(&self) -> usize {
        self.kind.size()
    }

    /// Offset one past the field's last byte.
    pub const fn end(&self) -> usize {
        self.offset + self.kind.size()
    }

    /// The field's bytes within `structure` (the structure's own bytes, starting at offset 0),
    /// or `None` if `structure` is too short.
    pub fn bytes<'a>(&self, structure: &'a [u8]) -> Option<&'a [u8]> {
        structure.get(self.offset..self.end())
    }

    /// The integer value of the field (little-endian), or `None` if `structure` is too short or
    /// the field is a byte array.
    pub fn read(&self, structure: &[u8]) -> Option<u64> {
        let b = self.bytes(structure)?;
        match self.kind {
            Kind::U8 | Kind::U16 | Kind::U32 | Kind::U64 => {
                let mut v = [0u8; 8];
                v.get_mut(..b.len())?.copy_from_slice(b);
                Some(u64::from_le_bytes(v))
            }
            Kind::Bytes(_) => None,
        }
    }

    /// Writes the integer `value` (little-endian, truncated to the field size). Returns `None`
    /// if `structure` is too short or the field is a byte array.
    pub fn write(&self, structure: &mut [u8], value: u64) -> Option<()> {
        let size = match self.kind {
            Kind::Bytes(_) => return None,
            k => k.size(),
        };
        let dst = structure.get_mut(self.offset..self.offset + size)?;
        dst.copy_from_slice(value.to_le_bytes().get(..size)?);
        Some(())
    }
}

/// A structure layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// C struct name.
    pub name: &'static str,
    /// `sizeof` on i386.
    pub size: usize,
    /// Whether the C declaration is `packed`.
    pub packed: bool,
    /// Fields in offset order.
    pub fields: &'static [Field],
}

impl Layout {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

use Kind::{Bytes, U8, U16, U32, U64};

/// `struct vrom_header`: the VMI ROM header at offset 0 of the image (§1.1).
pub mod vrom {
    use super::*;

    /// 0xAA55.
    pub const ROM_SIGNATURE: Field =
        Field::new("rom_signature", 0x00, U16, "option-ROM signature 0xAA55");
    /// Size in 512-byte units.
    pub const ROM_LENGTH: Field =
        Field::new("rom_length", 0x02, U8, "image size in 512-byte units");
    /// 16-bit init entry, far-called by the BIOS.
    pub const ROM_ENTRY: Field = Field::new(
        "rom_entry",
        0x03,
        Bytes(4),
        "16-bit real-mode init entry (code)",
    );
    /// Pad.
    pub const ROM_PAD0: Field = Field::new("rom_pad0", 0x07, U8, "alignment pad");
    /// `"cVmi"`.
    pub const VROM_SIGNATURE: Field = Field::new(
        "vrom_signature",
        0x08,
        U32,
        "VMI signature 0x696D5663 (\"cVmi\")",
    );
    /// API minor version.
    pub const API_VERSION_MIN: Field =
        Field::new("api_version_min", 0x0C, U8, "API minor version (any)");
    /// API major version.
    pub const API_VERSION_MAJ: Field =
        Field::new("api_version_maj", 0x0D, U8, "API major version (must be 3)");
    /// Number of jump slots.
    pub const JUMP_SLOTS: Field = Field::new(
        "jump_slots",
        0x0E,
        U8,
        "number of 8-byte entry slots at 0x80 (never read by Linux)",
    );
    /// Reserved.
    pub const RESERVED1: Field = Field::new("reserved1", 0x0F, U8, "reserved");
    /// Lowest linear address the hypervisor claims.
    pub const VIRTUAL_TOP: Field = Field::new(
        "virtual_top",
        0x10,
        U32,
        "lowest linear address claimed by the hypervisor (0 = none)",
    );
    /// Reserved.
    pub const RESERVED2: Field = Field::new("reserved2", 0x14, U16, "reserved");
    /// Offset of the license string.
    pub const LICENSE_OFFS: Field = Field::new(
        "license_offs",
        0x16,
        U16,
        "offset of the NUL-terminated license string",
    );
    /// Offset of the PCI data structure.
    pub const PCI_HEADER_OFFS: Field = Field::new(
        "pci_header_offs",
        0x18,
        U16,
        "offset of the PCI data structure",
    );
    /// Offset of the `$PnP` header.
    pub const PNP_HEADER_OFFS: Field = Field::new(
        "pnp_header_offs",
        0x1A,
        U16,
        "offset of the $PnP header (0 = none)",
    );
    /// Reserved.
    pub const ROM_PAD3: Field = Field::new("rom_pad3", 0x1C, U32, "reserved");
    /// Room for the PCI and PnP structures.
    pub const RESERVED: Field = Field::new("reserved", 0x20, Bytes(96), "reserved for headers");
    /// Init entry slot.
    pub const VMI_INIT: Field = Field::new(
        "vmi_init",
        0x80,
        Bytes(8),
        "Init entry (32-bit code, near-called)",
    );
    /// GetRelocationInfo entry slot.
    pub const GET_RELOC: Field = Field::new(
        "get_reloc",
        0x88,
        Bytes(8),
        "GetRelocationInfo entry (32-bit code)",
    );

    /// The whole header.
    pub const LAYOUT: Layout = Layout {
        name: "vrom_header",
        size: 0x90,
        packed: true,
        fields: &[
            ROM_SIGNATURE,
            ROM_LENGTH,
            ROM_ENTRY,
            ROM_PAD0,
            VROM_SIGNATURE,
            API_VERSION_MIN,
            API_VERSION_MAJ,
            JUMP_SLOTS,
            RESERVED1,
            VIRTUAL_TOP,
            RESERVED2,
            LICENSE_OFFS,
            PCI_HEADER_OFFS,
            PNP_HEADER_OFFS,
            ROM_PAD3,
            RESERVED,
            VMI_INIT,
            GET_RELOC,
        ],
    };
}

/// `struct pci_header`: the PCI data structure as Linux reads it (§1.2).
pub mod pci {
    use super::*;

    /// `"PCIR"`.
    pub const SIG: Field = Field::new("sig", 0x00, U32, "\"PCIR\" (not checked by Linux)");
    /// Vendor id.
    pub const VENDOR_ID: Field =
        Field::new("vendorID", 0x04, U16, "vendor id (Linux expects 0x15AD)");
    /// Device id.
    pub const DEVICE_ID: Field =
        Field::new("deviceID", 0x06, U16, "device id (Linux expects 0x0801)");
    /// VPD pointer.
    pub const VPD_DATA: Field = Field::new("vpdData", 0x08, U16, "VPD pointer");
    /// Structure length.
    pub const SIZE: Field = Field::new("size", 0x0A, U16, "structure length");
    /// Structure revision.
    pub const REV: Field = Field::new("rev", 0x0C, U8, "structure revision");
    /// Class code, programming interface byte.
    pub const CLASS: Field = Field::new("class", 0x0D, U8, "class code: programming interface");
    /// Class code, sub-class byte.
    pub const SUBCLASS: Field = Field::new("subclass", 0x0E, U8, "class code: sub-class");
    /// Class code, base class byte.
    pub const INTERFACE: Field = Field::new("interface", 0x0F, U8, "class code: base class");
    /// Image length in 512-byte units.
    pub const CHUNKS: Field = Field::new("chunks", 0x10, U16, "image length in 512-byte units");
    /// Code revision, low byte.
    pub const ROM_VERSION_MIN: Field = Field::new(
        "rom_version_min",
        0x12,
        U8,
        "code revision, low byte (printed)",
    );
    /// Code revision, high byte.
    pub const ROM_VERSION_MAJ: Field = Field::new(
        "rom_version_maj",
        0x13,
        U8,
        "code revision, high byte (printed)",
    );
    /// Code type.
    pub const CODETYPE: Field = Field::new("codetype", 0x14, U8, "code type (0 = x86 PC-AT)");
    /// Last-image indicator.
    pub const LAST_ROM: Field = Field::new("lastRom", 0x15, U8, "bit 7 = last image");
    /// Reserved.
    pub const RESERVED: Field = Field::new("reserved", 0x16, U16, "reserved");

    /// The whole structure.
    pub const LAYOUT: Layout = Layout {
        name: "pci_header",
        size: 0x18,
        packed: true,
        fields: &[
            SIG,
            VENDOR_ID,
            DEVICE_ID,
            VPD_DATA,
            SIZE,
            REV,
            CLASS,
            SUBCLASS,
            INTERFACE,
            CHUNKS,
            ROM_VERSION_MIN,
            ROM_VERSION_MAJ,
            CODETYPE,
            LAST_ROM,
            RESERVED,
        ],
    };
}

/// `struct pnp_header`: the first 18 bytes of the `$PnP` header, as Linux reads them (§1.3).
pub mod pnp {
    use super::*;

    /// `"$PnP"`.
    pub const SIG: Field = Field::new("sig", 0x00, U32, "\"$PnP\" (not checked by Linux)");
    /// Structure revision.
    pub const REV: Field = Field::new("rev", 0x04, U8, "structure revision");
    /// Size in 16-byte units.
    pub const SIZE: Field = Field::new("size", 0x05, U8, "length in 16-byte units");
    /// Next header offset.
    pub const NEXT: Field = Field::new("next", 0x06, U16, "offset of the next header (0 = none)");
    /// Reserved and checksum bytes.
    pub const RES: Field = Field::new("res", 0x08, U16, "reserved byte and checksum byte");
    /// Device id.
    pub const DEVID: Field = Field::new("devID", 0x0A, U32, "PnP device id");
    /// Manufacturer string offset.
    pub const MANUFACTURER_OFFSET: Field = Field::new(
        "manufacturer_offset",
        0x0E,
        U16,
        "offset from ROM start of the manufacturer string (0 = UNKNOWN)",
    );
    /// Product string offset.
    pub const PRODUCT_OFFSET: Field = Field::new(
        "product_offset",
        0x10,
        U16,
        "offset from ROM start of the product string (0 = UNKNOWN)",
    );

    /// The structure as Linux declares it.
    pub const LAYOUT: Layout = Layout {
        name: "pnp_header",
        size: 0x12,
        packed: true,
        fields: &[
            SIG,
            REV,
            SIZE,
            NEXT,
            RES,
            DEVID,
            MANUFACTURER_OFFSET,
            PRODUCT_OFFSET,
        ],
    };
}

/// `struct vmi_relocation_info`: GetRelocationInfo's EDX:EAX result (§3.2).
pub mod reloc {
    use super::*;

    /// Absolute linear address of the implementation (EAX).
    pub const EIP: Field = Field::new(
        "eip",
        0,
        U32,
        "absolute linear address of the implementation (EAX)",
    );
    /// Relocation type (DL).
    pub const TYPE: Field = Field::new("type", 4, U8, "relocation type (DL)");
    /// Ignored (EDX bits 8-31).
    pub const RESERVED: Field =
        Field::new("reserved", 5, Bytes(3), "reserved (EDX bits 8-31, ignored)");

    /// The whole record.
    pub const LAYOUT: Layout = Layout {
        name: "vmi_relocation_info",
        size: 8,
        packed: true,
        fields: &[EIP, TYPE, RESERVED],
    };
}

/// `struct vmi_ap_state`: SetInitialAPState's argument (§6). Not packed; i386 aligns u64 to 4.
pub mod ap_state {
    use super::*;

    /// The whole structure.
    pub const LAYOUT: Layout = Layout {
        name: "vmi_ap_state",
        size: 92,
        packed: false,
        fields: &[
            Field::new("cr0", 0, U32, "0x80050023"),
            Field::new("cr2", 4, U32, "0"),
            Field::new("cr3", 8, U32, "physical address of swapper_pg_dir"),
            Field::new("cr4", 12, U32, "mmu_cr4_features"),
            Field::new("efer", 16, U64, "BSP EFER (PAE+NX) or 0"),
            Field::new("eip", 24, U32, "start_secondary"),
            Field::new("eflags", 28, U32, "0"),
            Field::new("eax", 32, U32, "0"),
            Field::new("ebx", 36, U32, "0"),
            Field::new("ecx", 40, U32, "0"),
            Field::new("edx", 44, U32, "0"),
            Field::new("esp", 48, U32, "stack_start"),
            Field::new("ebp", 52, U32, "0"),
            Field::new("esi", 56, U32, "0"),
            Field::new("edi", 60, U32, "0"),
            Field::new("cs", 64, U16, "0x60"),
            Field::new("ss", 66, U16, "0x68"),
            Field::new("ds", 68, U16, "0x7B"),
            Field::new("es", 70, U16, "0x7B"),
            Field::new("fs", 72, U16, "0xD8"),
            Field::new("gs", 74, U16, "0 or 0xE0"),
            Field::new("ldtr", 76, U16, "0"),
            Field::new("gdtr_limit", 78, U16, "255"),
            Field::new("gdtr_base", 80, U32, "this CPU's GDT (indexed by APIC id)"),
            Field::new("idtr_base", 84, U32, "idt_table"),
            Field::new("idtr_limit", 88, U16, "2047"),
        ],
    };
}

/// Every layout the ABI defines, in header order.
pub const ALL: [&Layout; 5] = [
    &vrom::LAYOUT,
    &pci::LAYOUT,
    &pnp::LAYOUT,
    &reloc::LAYOUT,
    &ap_state::LAYOUT,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, offset, size) as written in vmi-abi.md.
    fn pin(layout: &Layout, expect: &[(&str, usize, usize)], size: usize) {
        assert_eq!(layout.size, size, "{}", layout.name);
        assert_eq!(layout.fields.len(), expect.len(), "{}", layout.name);
        for (f, (name, off, sz)) in layout.fields.iter().zip(expect) {
            assert_eq!(
                (f.name, f.offset, f.size()),
                (*name, *off, *sz),
                "{}",
                layout.name
            );
        }
    }

    #[test]
    fn vrom_header_matches_section_1_1() {
        pin(
            &vrom::LAYOUT,
            &[
                ("rom_signature", 0x00, 2),
                ("rom_length", 0x02, 1),
                ("rom_entry", 0x03, 4),
                ("rom_pad0", 0x07, 1),
                ("vrom_signature", 0x08, 4),
                ("api_version_min", 0x0C, 1),
                ("api_version_maj", 0x0D, 1),
                ("jump_slots", 0x0E, 1),
                ("reserved1", 0x0F, 1),
                ("virtual_top", 0x10, 4),
                ("reserved2", 0x14, 2),
                ("license_offs", 0x16, 2),
                ("pci_header_offs", 0x18, 2),
                ("pnp_header_offs", 0x1A, 2),
                ("rom_pad3", 0x1C, 4),
                ("reserved", 0x20, 96),
                ("vmi_init", 0x80, 8),
                ("get_reloc", 0x88, 8),
            ],
            0x90,
        );
        assert_eq!(vrom::VMI_INIT.offset, crate::consts::ENTRY_INIT);
        assert_eq!(vrom::GET_RELOC.offset, crate::consts::ENTRY_GET_RELOC);
    }

    #[test]
    fn pci_header_matches_section_1_2() {
        pin(
            &pci::LAYOUT,
            &[
                ("sig", 0x00, 4),
                ("vendorID", 0x04, 2),
                ("deviceID", 0x06, 2),
                ("vpdData", 0x08, 2),
                ("size", 0x0A, 2),
                ("rev", 0x0C, 1),
                ("class", 0x0D, 1),
                ("subclass", 0x0E, 1),
                ("interface", 0x0F, 1),
                ("chunks", 0x10, 2),
                ("rom_version_min", 0x12, 1),
                ("rom_version_maj", 0x13, 1),
                ("codetype", 0x14, 1),
                ("lastRom", 0x15, 1),
                ("reserved", 0x16, 2),
            ],
            0x18,
        );
    }

    #[test]
    fn pnp_header_matches_section_1_3() {
        pin(
            &pnp::LAYOUT,
            &[
                ("sig", 0x00, 4),
                ("rev", 0x04, 1),
                ("size", 0x05, 1),
                ("next", 0x06, 2),
                ("res", 0x08, 2),
                ("devID", 0x0A, 4),
                ("manufacturer_offset", 0x0E, 2),
                ("product_offset", 0x10, 2),
            ],
            0x12,
        );
    }

    #[test]
    fn relocation_info_matches_section_3_2() {
        pin(
            &reloc::LAYOUT,
            &[("eip", 0, 4), ("type", 4, 1), ("reserved", 5, 3)],
            8,
        );
    }

    #[test]
    fn ap_state_matches_section_6() {
        let l = &ap_state::LAYOUT;
        assert_eq!(l.size, 92);
        let expect = [
            ("cr0", 0, 4),
            ("efer", 16, 8),
            ("eip", 24, 4),
            ("eflags", 28, 4),
            ("eax", 32, 4),
            ("esp", 48, 4),
            ("edi", 60, 4),
            ("cs", 64, 2),
            ("ss", 66, 2),
            ("fs", 72, 2),
            ("gs", 74, 2),
            ("ldtr", 76, 2),
            ("gdtr_limit", 78, 2),
            ("gdtr_base", 80, 4),
            ("idtr_base", 84, 4),
            ("idtr_limit", 88, 2),
        ];
        for (name, off, size) in expect {
            let f = l.field(name).unwrap();
            assert_eq!((f.offset, f.size()), (off, size), "{name}");
        }
    }

    #[test]
    fn fields_are_contiguous_and_fit() {
        for l in ALL {
            let mut at = 0;
            for f in l.fields {
                assert_eq!(
                    f.offset, at,
                    "{}.{} leaves a gap or overlaps",
                    l.name, f.name
                );
                at = f.end();
            }
            // Unpacked structures may end in tail padding (vmi_ap_state: 90 bytes + 2).
            assert!(at <= l.size && l.size - at < 4, "{}", l.name);
            if l.packed {
                assert_eq!(at, l.size, "{}", l.name);
            }
        }
    }

    #[test]
    fn read_and_write_are_little_endian_and_bounded() {
        let mut hdr = [0u8; 0x90];
        vrom::VROM_SIGNATURE.write(&mut hdr, 0x696D_5663).unwrap();
        assert_eq!(&hdr[8..12], b"cVmi");
        assert_eq!(vrom::VROM_SIGNATURE.read(&hdr), Some(0x696D_5663));
        assert_eq!(vrom::VIRTUAL_TOP.read(&hdr[..0x12]), None);
        assert_eq!(vrom::RESERVED.read(&hdr), None);
        assert!(vrom::PNP_HEADER_OFFS.write(&mut hdr[..0x1B], 1).is_none());
    }
}
