//! Packing ELF32 i386 relocatable objects into a VMI option ROM (the post-build tool).
//!
//! [`pack`] is a small static linker for one target: it takes the `.o` files any compiler
//! (`gcc -m32 -ffreestanding -fPIE -c`, `clang --target=i386-elf`, `as --32`) produces, lays
//! their code and read-only data out behind a VMI 3.0 header, resolves every relocation and
//! returns a finished, checksummed image.
//!
//! # Entry symbols
//!
//! | Symbol | Mode | Called as | Required |
//! |---|---|---|---|
//! | `vmi_init` | 32-bit | `u32 vmi_init(void)`; returns 0 in EAX on success (vmi-abi.md §3.1) | yes |
//! | `vmi_get_reloc` | 32-bit | `u64 __attribute__((regparm(1))) vmi_get_reloc(u32 call)`: call number in EAX, `struct vmi_relocation_info` in EDX:EAX (§3.2) | yes |
//! | `vmi_init16` | 16-bit real mode | far-called by the BIOS at POST with CS = the ROM's segment; must end with `retf` | no |
//!
//! The 8-byte slots at 0x80 and 0x88 get `jmp rel32` to `vmi_init` and `vmi_get_reloc`
//! ([`write_header`]); the init entry at offset 3 gets `jmp rel16` to `vmi_init16`, or the
//! builder's default `xor ax,ax; retf` when no object defines it. All three must be global
//! symbols defined in an executable section. `vmi_get_reloc` must return absolute addresses:
//! compute them at run time (`&func` in position-independent code), never store them in data
//! unless the load address is pinned with [`PackOptions::base`].
//!
//! # Layout
//!
//! Offset 0 is the option-ROM header, the PCI data structure (rev 3.0) at 0x20, the `$PnP`
//! header at 0x40, the VMI entry slots at 0x80/0x88; then the vendor, product and license
//! strings; then the kept sections in three groups, each in input order (object by object,
//! section by section), each section at its own alignment:
//!
//! 1. executable sections (`.text*`), gaps filled with `int3`;
//! 2. read-only data (`.rodata*` and any other allocated, non-writable section);
//! 3. `.data.rel.ro*`: writable in the object only so that a dynamic loader could relocate it;
//!    here every relocation is resolved at pack time, so it is read-only like the rest.
//!
//! Nothing else may be allocated. The image is write-protected after POST (SeaBIOS sets the
//! shadow-RAM PAM registers read-only, PLATFORM.md), so a non-empty `.bss` (or any
//! `SHT_NOBITS` section), writable data (`.data*`, `.init_array`, …), COMMON symbols and TLS are
//! errors: state must live in memory the ROM claims, not in the image. Alignment above 2048
//! bytes is an error too: option ROMs are placed on 2 KiB boundaries, so larger alignment could
//! not hold at run time.
//!
//! Dropped without error (and listed in [`Packed::dropped`]): non-allocated sections
//! (`.comment`, `.note.GNU-stack`, debug info, symbol and relocation tables), allocated notes
//! (`.note.gnu.property`), `.eh_frame` (nothing unwinds a ROM; its `R_386_PC32` relocations
//! against `.text` are ignored with it; `-fno-asynchronous-unwind-tables` avoids emitting it),
//! empty sections, and every copy but the first of a COMDAT group (gcc puts
//! `__x86.get_pc_thunk.*` in such a group in every `-fPIC`/`-fPIE` object). A kept section
//! that references a dropped one is an error.
//!
//! # Symbols
//!
//! Global and weak definitions are shared by all objects; two strong definitions of one name
//! are an error naming both objects; a strong definition beats weak ones; between weak ones
//! the first wins. Local and section symbols resolve within their object. An undefined weak
//! symbol is the absolute value 0; any other undefined symbol is an error naming the symbol
//! and the referencing object, section and offset.
//!
//! # The GOT is the image start
//!
//! There is no global offset table. `_GLOBAL_OFFSET_TABLE_` is defined as image offset 0, so
//! the PIC register (`call __x86.get_pc_thunk.bx; add $_GLOBAL_OFFSET_TABLE_, %ebx`) holds the
//! run-time address of the image start, and a `sym@GOTOFF` value is simply `sym`'s image
//! offset. GOT loads are relaxed the way `ld` relaxes them, so no GOT entry is ever needed.
//!
//! # Relocations
//!
//! i386 objects use REL sections: the addend A is the value already stored in the field. With
//! S the symbol's image offset, P the field's image offset and GOT = 0:
//!
//! | Type | Value |
//! |---|---|
//! | `R_386_PC32` (2), `R_386_PLT32` (4) | S + A − P |
//! | `R_386_GOTPC` (10) | GOT + A − P |
//! | `R_386_GOTOFF` (9) | S + A − GOT |
//! | `R_386_GOT32X` (43) | relaxed: `mov sym@GOT(%reg),%r` (8B) → `lea sym@GOTOFF(%reg),%r` (8D), S + A − GOT; `call *sym@GOT(%reg)` → `addr32 call sym`; `jmp *sym@GOT(%reg)` → `jmp sym; nop` |
//! | `R_386_GOT32` (3) | relaxed like `R_386_GOT32X`, `mov` form only |
//! | `R_386_32` (1) | base + S + A — only with [`PackOptions::base`]; otherwise an error ("position-dependent code") |
//! | `R_386_16` (20), `R_386_8` (22) | S + A |
//! | `R_386_PC16` (21), `R_386_PC8` (23) | S + A − P |
//!
//! The 16- and 8-bit types serve 16-bit init code (`.code16`): the BIOS runs it with CS = the
//! image's segment, so an image offset *is* the segment offset, and these types resolve to
//! image offsets whether or not `base` is set (load DS from CS before using them for data).
//! An absolute symbol (`SHN_ABS`) stands for its value; 32-bit PC-relative or GOT-relative
//! references to one need `base`. Every value must fit its field (`R_386_PC8` and the 32-bit
//! PC-relative types are signed, the others may be signed or unsigned). `R_386_NONE` is
//! ignored; every other type is an error naming it.

use crate::build::{Finish, ImageBuilder};
use crate::error::Error;
use crate::pcir::Pcir;
use crate::pnp::PnpHeader;
use crate::vmi::{VmiHeaderSpec, write_header};
use object::elf;
use object::read::elf::{FileHeader, Rel as _, SectionHeader as _, SectionTable, Sym as _};
use object::{Endianness, SectionIndex, SymbolIndex};
use std::collections::BTreeMap;
use std::fmt;

/// The 32-bit Init entry symbol (ROM+0x80 jumps to it).
pub const ENTRY_INIT: &str = "vmi_init";
/// The 32-bit GetRelocationInfo entry symbol (ROM+0x88 jumps to it).
pub const ENTRY_GET_RELOC: &str = "vmi_get_reloc";
/// The optional 16-bit POST init symbol (offset 3 jumps to it).
pub const ENTRY_INIT16: &str = "vmi_init16";
/// The GOT symbol PIC code references; it is image offset 0.
pub const GOT_SYMBOL: &str = "_GLOBAL_OFFSET_TABLE_";
/// PCI class code of the image (PCIR) and `$PnP` device type: bridge, other.
pub const CLASS_CODE: u32 = 0x05_80_00;
/// Where the PCI data structure goes.
pub const PCIR_OFFSET: usize = 0x20;
/// Where the `$PnP` header goes.
pub const PNP_OFFSET: usize = 0x40;
/// Largest section alignment that holds at run time (option ROMs load on 2 KiB boundaries).
pub const MAX_ALIGN: u64 = 2048;

const ELF32_HEADER_LEN: usize = 52;

/// Where a problem is: object file, section name and offset within that section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Object file name.
    pub object: String,
    /// Section name.
    pub section: String,
    /// Offset within the section.
    pub offset: u64,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: section {} offset {:#x}",
            self.object, self.section, self.offset
        )
    }
}

/// A supported relocation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RelocKind {
    /// `R_386_32` (1): absolute 32-bit address (needs a pinned base).
    Abs32,
    /// `R_386_PC32` (2): S + A − P.
    Pc32,
    /// `R_386_GOT32` (3): GOT entry; relaxed (mov → lea).
    Got32,
    /// `R_386_PLT32` (4): S + A − P (no PLT: calls go straight to the symbol).
    Plt32,
    /// `R_386_GOTOFF` (9): S + A − GOT.
    GotOff,
    /// `R_386_GOTPC` (10): GOT + A − P.
    GotPc,
    /// `R_386_16` (20): 16-bit segment offset.
    Abs16,
    /// `R_386_PC16` (21): 16-bit PC-relative.
    Pc16,
    /// `R_386_8` (22): 8-bit segment offset.
    Abs8,
    /// `R_386_PC8` (23): 8-bit PC-relative.
    Pc8,
    /// `R_386_GOT32X` (43): relaxable GOT load; relaxed (mov → lea, call/jmp → direct).
    Got32X,
}

impl RelocKind {
    /// Every supported type.
    pub const ALL: [RelocKind; 11] = [
        RelocKind::Abs32,
        RelocKind::Pc32,
        RelocKind::Got32,
        RelocKind::Plt32,
        RelocKind::GotOff,
        RelocKind::GotPc,
        RelocKind::Abs16,
        RelocKind::Pc16,
        RelocKind::Abs8,
        RelocKind::Pc8,
        RelocKind::Got32X,
    ];

    /// The ELF `r_type` number.
    pub fn number(self) -> u32 {
        match self {
            RelocKind::Abs32 => elf::R_386_32,
            RelocKind::Pc32 => elf::R_386_PC32,
            RelocKind::Got32 => elf::R_386_GOT32,
            RelocKind::Plt32 => elf::R_386_PLT32,
            RelocKind::GotOff => elf::R_386_GOTOFF,
            RelocKind::GotPc => elf::R_386_GOTPC,
            RelocKind::Abs16 => elf::R_386_16,
            RelocKind::Pc16 => elf::R_386_PC16,
            RelocKind::Abs8 => elf::R_386_8,
            RelocKind::Pc8 => elf::R_386_PC8,
            RelocKind::Got32X => elf::R_386_GOT32X,
        }
    }

    /// The type for an ELF `r_type` number, if supported.
    pub fn from_number(r_type: u32) -> Option<RelocKind> {
        RelocKind::ALL.into_iter().find(|k| k.number() == r_type)
    }

    /// The ELF name (`R_386_PC32`, …).
    pub fn name(self) -> &'static str {
        r386_name(self.number()).unwrap_or("R_386_?")
    }

    /// Width of the relocated field in bytes.
    pub fn width(self) -> usize {
        match self {
            RelocKind::Abs16 | RelocKind::Pc16 => 2,
            RelocKind::Abs8 | RelocKind::Pc8 => 1,
            _ => 4,
        }
    }

    /// Whether the field holds a signed displacement.
    fn signed(self) -> bool {
        matches!(
            self,
            RelocKind::Pc32 | RelocKind::Plt32 | RelocKind::GotPc | RelocKind::Pc8
        )
    }
}

impl fmt::Display for RelocKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ELF name of an i386 relocation type number, for messages.
pub fn r386_name(r_type: u32) -> Option<&'static str> {
    const NAMES: [&str; 44] = [
        "R_386_NONE",
        "R_386_32",
        "R_386_PC32",
        "R_386_GOT32",
        "R_386_PLT32",
        "R_386_COPY",
        "R_386_GLOB_DAT",
        "R_386_JMP_SLOT",
        "R_386_RELATIVE",
        "R_386_GOTOFF",
        "R_386_GOTPC",
        "R_386_32PLT",
        "R_386_12",
        "R_386_13",
        "R_386_TLS_TPOFF",
        "R_386_TLS_IE",
        "R_386_TLS_GOTIE",
        "R_386_TLS_LE",
        "R_386_TLS_GD",
        "R_386_TLS_LDM",
        "R_386_16",
        "R_386_PC16",
        "R_386_8",
        "R_386_PC8",
        "R_386_TLS_GD_32",
        "R_386_TLS_GD_PUSH",
        "R_386_TLS_GD_CALL",
        "R_386_TLS_GD_POP",
        "R_386_TLS_LDM_32",
        "R_386_TLS_LDM_PUSH",
        "R_386_TLS_LDM_CALL",
        "R_386_TLS_LDM_POP",
        "R_386_TLS_LDO_32",
        "R_386_TLS_IE_32",
        "R_386_TLS_LE_32",
        "R_386_TLS_DTPMOD32",
        "R_386_TLS_DTPOFF32",
        "R_386_TLS_TPOFF32",
        "R_386_SIZE32",
        "R_386_TLS_GOTDESC",
        "R_386_TLS_DESC_CALL",
        "R_386_TLS_DESC",
        "R_386_IRELATIVE",
        "R_386_GOT32X",
    ];
    match r_type {
        12 | 13 => None,
        t => NAMES.get(usize::try_from(t).ok()?).copied(),
    }
}

fn type_name(r_type: u32) -> String {
    match r386_name(r_type) {
        Some(n) => format!("{n} ({r_type})"),
        None => format!("unknown type {r_type}"),
    }
}

/// Packing errors: one variant per cause, each naming the object, section, offset and symbol
/// involved and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// No input objects.
    #[error("no input objects: expected at least one ELF32 i386 relocatable object (.o)")]
    NoObjects,
    /// The input does not start with the ELF magic.
    #[error(
        "{object}: not an ELF file (starts with {found}); expected an ELF32 i386 relocatable object (.o)"
    )]
    NotElf {
        /// Object file name.
        object: String,
        /// The first bytes, in hex.
        found: String,
    },
    /// The input is ELF, but not 32-bit.
    #[error(
        "{object}: ELF class {class} ({desc}); expected ELF32 (compile with gcc -m32 or as --32)"
    )]
    NotElf32 {
        /// Object file name.
        object: String,
        /// The `EI_CLASS` byte.
        class: u8,
        /// What that class is.
        desc: &'static str,
    },
    /// The input is ELF32, but not for i386.
    #[error("{object}: {found}; expected little-endian i386 code (EM_386, machine 3)")]
    NotI386 {
        /// Object file name.
        object: String,
        /// What it is instead.
        found: String,
    },
    /// The input is not a relocatable object.
    #[error(
        "{object}: ELF type {e_type} ({desc}); expected a relocatable object (ET_REL, 1) as made by gcc -c or as"
    )]
    NotRelocatable {
        /// Object file name.
        object: String,
        /// `e_type`.
        e_type: u16,
        /// What that type is.
        desc: &'static str,
    },
    /// The ELF structures are damaged.
    #[error("{object}: malformed ELF: {what}")]
    Malformed {
        /// Object file name.
        object: String,
        /// What could not be read.
        what: String,
    },
    /// A non-empty `SHT_NOBITS` section (`.bss`).
    #[error(
        "{object}: section {section} holds {size} bytes of zero-initialised writable data (.bss/SHT_NOBITS); expected none: the image is write-protected after POST (SeaBIOS), so state must live in memory the ROM claims at run time, or the data must be const"
    )]
    NoBits {
        /// Object file name.
        object: String,
        /// Section name.
        section: String,
        /// Its size.
        size: u64,
    },
    /// A non-empty writable section other than `.data.rel.ro*`.
    #[error(
        "{object}: section {section} holds {size} bytes of writable data; expected only code and read-only data (.text*, .rodata*, .data.rel.ro*): the image is write-protected after POST (SeaBIOS), so make the data const or keep the state in memory the ROM claims at run time"
    )]
    Writable {
        /// Object file name.
        object: String,
        /// Section name.
        section: String,
        /// Its size.
        size: u64,
    },
    /// A thread-local section.
    #[error("{object}: section {section} is thread-local (SHF_TLS); a ROM has no TLS")]
    Tls {
        /// Object file name.
        object: String,
        /// Section name.
        section: String,
    },
    /// A COMMON symbol (an uninitialised global without `-fno-common`).
    #[error(
        "{object}: symbol `{symbol}` is a COMMON symbol of {size} bytes (uninitialised writable data); expected none: compile with -fno-common and keep no writable state in the image"
    )]
    Common {
        /// Object file name.
        object: String,
        /// Symbol name.
        symbol: String,
        /// Its size.
        size: u64,
    },
    /// A section alignment that is not a power of two or exceeds [`MAX_ALIGN`].
    #[error(
        "{object}: section {section} wants alignment {align}; expected a power of two up to 2048 (option ROMs are loaded on 2 KiB boundaries)"
    )]
    Alignment {
        /// Object file name.
        object: String,
        /// Section name.
        section: String,
        /// `sh_addralign`.
        align: u64,
    },
    /// Two strong definitions of one global symbol.
    #[error(
        "symbol `{symbol}` is defined in both {first} and {second}; expected one strong definition"
    )]
    DuplicateSymbol {
        /// Symbol name.
        symbol: String,
        /// Object of the first definition.
        first: String,
        /// Object of the second definition.
        second: String,
    },
    /// A referenced symbol no object defines.
    #[error("{site}: undefined symbol `{symbol}`; expected a definition in one of the objects")]
    Undefined {
        /// Where it is referenced.
        site: Site,
        /// Symbol name.
        symbol: String,
    },
    /// A required entry symbol is missing.
    #[error(
        "no object defines the global symbol `{symbol}` ({role}); expected a global function of that name"
    )]
    MissingEntry {
        /// Symbol name.
        symbol: &'static str,
        /// What it is for.
        role: &'static str,
    },
    /// An entry symbol is not code.
    #[error(
        "entry `{symbol}` is defined {place}; expected a function in an executable section (.text)"
    )]
    EntryNotCode {
        /// Symbol name.
        symbol: &'static str,
        /// Where it is defined instead.
        place: String,
    },
    /// A relocation that needs the absolute load address, which is not pinned.
    #[error("{site}: {kind} against `{symbol}` needs the absolute load address: {hint}")]
    PositionDependent {
        /// Where the relocation is.
        site: Site,
        /// Relocation type.
        kind: RelocKind,
        /// Target symbol.
        symbol: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// An unsupported relocation type.
    #[error(
        "{site}: relocation {type_name} against `{symbol}` is not supported; expected R_386_32, PC32, PLT32, GOTPC, GOTOFF, GOT32(X), 16, PC16, 8 or PC8"
    )]
    UnsupportedRelocation {
        /// Where the relocation is.
        site: Site,
        /// `r_type`.
        r_type: u32,
        /// Its name and number.
        type_name: String,
        /// Target symbol.
        symbol: String,
    },
    /// A relocation in RELA form (i386 objects use REL).
    #[error(
        "{site}: RELA relocation section {rela}; expected REL sections (i386 objects keep the addend in the section bytes)"
    )]
    Rela {
        /// The relocated section.
        site: Site,
        /// The RELA section's name.
        rela: String,
    },
    /// A GOT load that cannot be relaxed into a GOT-free instruction.
    #[error(
        "{site}: {kind} against `{symbol}` in instruction bytes {found}: {why}; there is no GOT in a packed ROM"
    )]
    NotRelaxable {
        /// Where the relocation is.
        site: Site,
        /// Relocation type.
        kind: RelocKind,
        /// Target symbol.
        symbol: String,
        /// The instruction bytes around the field, in hex.
        found: String,
        /// Why it cannot be relaxed.
        why: &'static str,
    },
    /// A resolved value that does not fit its field.
    #[error(
        "{site}: {kind} against `{symbol}` resolves to {value:#x}, which does not fit the {bits}-bit field"
    )]
    Overflow {
        /// Where the relocation is.
        site: Site,
        /// Relocation type.
        kind: RelocKind,
        /// Target symbol.
        symbol: String,
        /// The value.
        value: i64,
        /// Field width in bits.
        bits: u32,
    },
    /// A relocation whose field lies outside its section.
    #[error("{site}: {kind} field of {width} bytes lies outside the section's {size} bytes")]
    OutsideSection {
        /// Where the relocation is.
        site: Site,
        /// Relocation type.
        kind: RelocKind,
        /// Field width.
        width: usize,
        /// Section size.
        size: u64,
    },
    /// A reference to a symbol whose section was dropped.
    #[error(
        "{site}: reference to `{symbol}` in section {target} of {target_object}, which is not packed ({reason})"
    )]
    Discarded {
        /// Where the reference is.
        site: Site,
        /// Target symbol.
        symbol: String,
        /// Section the symbol is in.
        target: String,
        /// Object of that section.
        target_object: String,
        /// Why the section was dropped.
        reason: DropReason,
    },
}

/// Options of `vmirom pack` besides the objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// Pin the load address: allows R_386_32 absolute relocations (the linear address the image
    /// start has when Linux calls it, e.g. PAGE_OFFSET + physical address).
    pub base: Option<u32>,
    /// Manufacturer string (`$PnP`), printed by Linux.
    pub vendor: String,
    /// Product string (`$PnP`), printed by Linux.
    pub product: String,
    /// License string (Linux accepts exactly "GPL" or "GPL v2").
    pub license: String,
    /// ROM code revision (major, minor) in the PCIR.
    pub version: (u8, u8),
    /// PCI vendor and device id.
    pub pci_id: (u16, u16),
    /// Lowest linear address claimed (VMI header `virtual_top`).
    pub virtual_top: u32,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            base: None,
            vendor: "vmirom".into(),
            product: "VMI ROM".into(),
            license: "GPL v2".into(),
            version: (1, 0),
            pci_id: (
                vmi_abi::consts::PCI_VENDOR_VMWARE,
                vmi_abi::consts::PCI_DEVICE_VMI,
            ),
            virtual_top: 0,
        }
    }
}

/// An input object: a name for messages and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Object<'a> {
    /// File name (used in error messages).
    pub name: &'a str,
    /// ELF bytes.
    pub data: &'a [u8],
}

/// The group a kept section is laid out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SectionClass {
    /// Executable sections (`.text*`).
    Text,
    /// Read-only data (`.rodata*` and other allocated, non-writable sections).
    ReadOnly,
    /// `.data.rel.ro*`: relocated at pack time, read-only in the image.
    RelRo,
}

impl fmt::Display for SectionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionClass::Text => "text",
            SectionClass::ReadOnly => "rodata",
            SectionClass::RelRo => "data.rel.ro",
        })
    }
}

/// Why an input section is not in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not allocated (`.comment`, `.note.GNU-stack`, debug info).
    NotAllocated,
    /// An allocated note (`.note.gnu.property`).
    Note,
    /// Unwind tables (`.eh_frame`): nothing unwinds a ROM.
    Unwind,
    /// Zero bytes.
    Empty,
    /// A later copy of a COMDAT group already taken from another object.
    ComdatDuplicate {
        /// The group signature.
        group: String,
        /// Object whose copy is kept.
        kept_in: String,
    },
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotAllocated => f.write_str("not allocated"),
            DropReason::Note => f.write_str("note"),
            DropReason::Unwind => f.write_str("unwind tables are not packed"),
            DropReason::Empty => f.write_str("empty"),
            DropReason::ComdatDuplicate { group, kept_in } => {
                write!(f, "duplicate of COMDAT group {group} kept from {kept_in}")
            }
        }
    }
}

/// Where an input section went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedSection {
    /// Object file name.
    pub object: String,
    /// Section name.
    pub name: String,
    /// Layout group.
    pub class: SectionClass,
    /// Image offset.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Alignment honoured.
    pub align: usize,
}

/// An input section left out of the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedSection {
    /// Object file name.
    pub object: String,
    /// Section name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Why.
    pub reason: DropReason,
}

/// A global symbol defined in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedSymbol {
    /// Symbol name.
    pub name: String,
    /// Object that defines it.
    pub object: String,
    /// Section it is in.
    pub section: String,
    /// Image offset.
    pub offset: usize,
}

/// Image offsets of the entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entries {
    /// `vmi_init` (the slot at 0x80 jumps here).
    pub init: usize,
    /// `vmi_get_reloc` (the slot at 0x88 jumps here).
    pub get_reloc: usize,
    /// `vmi_init16` (offset 3 jumps here), if defined.
    pub init16: Option<usize>,
}

/// The packed image and where things went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The finished ROM image.
    pub image: Vec<u8>,
    /// Kept sections in image order.
    pub sections: Vec<PlacedSection>,
    /// Input sections left out, in input order.
    pub dropped: Vec<DroppedSection>,
    /// Global symbols defined in the image, by offset then name.
    pub symbols: Vec<PlacedSymbol>,
    /// Entry offsets.
    pub entries: Entries,
    /// How many relocations of each type were applied.
    pub relocations: BTreeMap<RelocKind, usize>,
    /// Image offset where the packed sections start (after the header and strings).
    pub code_start: usize,
    /// Image offset where they end (padding and checksum byte follow).
    pub code_end: usize,
}

/// What happens to an input section.
#[derive(Clone, Debug)]
enum Fate {
    /// Symbol tables, string tables, relocations, groups: consumed, not reported.
    Meta,
    Keep(SectionClass),
    Drop(DropReason),
}

#[derive(Debug)]
struct InSection<'a> {
    name: String,
    sh_type: u32,
    flags: u32,
    size: u64,
    align: u64,
    data: &'a [u8],
    fate: Fate,
    /// Image offset once placed.
    placed: Option<usize>,
}

type Elf = elf::FileHeader32<Endianness>;

#[derive(Debug)]
struct InObject<'a> {
    name: &'a str,
    data: &'a [u8],
    endian: Endianness,
    table: SectionTable<'a, Elf>,
    symtab_index: SectionIndex,
    symbols: object::read::elf::SymbolTable<'a, Elf>,
    sections: Vec<InSection<'a>>,
}

/// Where a symbol resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// An image offset.
    Image(u64),
    /// An absolute value (SHN_ABS, undefined weak).
    Absolute(u64),
}

/// A global definition: object index and where in it.
#[derive(Clone, Debug)]
struct GlobalDef {
    obj: usize,
    /// Section index, or None for an absolute symbol.
    section: Option<SectionIndex>,
    value: u64,
    weak: bool,
}

fn fail<T>(e: PackError) -> Result<T, Error> {
    Err(e.into())
}

fn malformed(object: &str) -> impl Fn(object::read::Error) -> PackError + '_ {
    move |e| PackError::Malformed {
        object: object.to_string(),
        what: e.to_string(),
    }
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn open<'a>(obj: &Object<'a>) -> Result<InObject<'a>, Error> {
    let d = obj.data;
    let name = obj.name;
    if d.get(..4) != Some(&elf::ELFMAG[..]) {
        return fail(PackError::NotElf {
            object: name.into(),
            found: if d.is_empty() {
                "nothing: the file is empty".into()
            } else {
                hex_bytes(d.get(..d.len().min(4)).unwrap_or_default())
            },
        });
    }
    let class = d.get(4).copied().unwrap_or(0);
    if class != elf::ELFCLASS32 {
        return fail(PackError::NotElf32 {
            object: name.into(),
            class,
            desc: match class {
                elf::ELFCLASS64 => "ELF64",
                _ => "invalid",
            },
        });
    }
    if d.get(5).copied() != Some(elf::ELFDATA2LSB) {
        return fail(PackError::NotI386 {
            object: name.into(),
            found: "big-endian or invalid data encoding".into(),
        });
    }
    if d.len() < ELF32_HEADER_LEN {
        return fail(PackError::Malformed {
            object: name.into(),
            what: format!(
                "{} bytes, shorter than an ELF32 header ({ELF32_HEADER_LEN})",
                d.len()
            ),
        });
    }
    let header = Elf::parse(d).map_err(malformed(name))?;
    let endian = header.endian().map_err(malformed(name))?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_386 {
        return fail(PackError::NotI386 {
            object: name.into(),
            found: format!(
                "machine {machine}{}",
                match machine {
                    elf::EM_X86_64 => " (x86-64: an -mx32 object?)",
                    _ => "",
                }
            ),
        });
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_REL {
        return fail(PackError::NotRelocatable {
            object: name.into(),
            e_type,
            desc: match e_type {
                elf::ET_EXEC => "executable",
                elf::ET_DYN => "shared object or PIE executable",
                elf::ET_CORE => "core dump",
                _ => "unknown",
            },
        });
    }
    let table = header.sections(endian, d).map_err(malformed(name))?;
    let symtab_index = table
        .enumerate()
        .find(|(_, s)| s.sh_type(endian) == elf::SHT_SYMTAB)
        .map(|(i, _)| i)
        .unwrap_or(SectionIndex(0));
    let symbols = table
        .symbols(endian, d, elf::SHT_SYMTAB)
        .map_err(malformed(name))?;
    let mut sections = Vec::with_capacity(table.len());
    for (i, s) in table.enumerate() {
        let sec_name = table
            .section_name(endian, s)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .map_err(malformed(name))?;
        let sh_type = s.sh_type(endian);
        let data = if i.0 == 0 {
            &[][..]
        } else {
            s.data(endian, d).map_err(|e| PackError::Malformed {
                object: name.into(),
                what: format!("section {sec_name}: {e}"),
            })?
        };
        sections.push(InSection {
            name: sec_name,
            sh_type,
            flags: s.sh_flags(endian),
            size: u64::from(s.sh_size(endian)),
            align: u64::from(s.sh_addralign(endian)),
            data,
            fate: Fate::Meta,
            placed: None,
        });
    }
    Ok(InObject {
        name,
        data: d,
        endian,
        table,
        symtab_index,
        symbols,
        sections,
    })
}

/// Decides every section's fate: COMDAT deduplication first (a dropped copy is never judged),
/// then classification.
fn classify(objs: &mut [InObject<'_>]) -> Result<(), Error> {
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for obj in objs.iter_mut() {
        let mut dups: Vec<(usize, DropReason)> = Vec::new();
        for (i, s) in obj.table.enumerate() {
            let Some((flag, members)) =
                s.group(obj.endian, obj.data).map_err(malformed(obj.name))?
            else {
                continue;
            };
            if flag & elf::GRP_COMDAT == 0 {
                continue;
            }
            let sym_index = SymbolIndex(usize::try_from(s.sh_info(obj.endian)).unwrap_or(0));
            let signature = obj
                .symbols
                .symbol(sym_index)
                .and_then(|sym| obj.symbols.symbol_name(obj.endian, sym))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .map_err(|e| PackError::Malformed {
                    object: obj.name.into(),
                    what: format!("group section {}: signature symbol: {e}", i.0),
                })?;
            match groups.get(&signature) {
                None => {
                    groups.insert(signature, obj.name.into());
                }
                Some(kept_in) => {
                    for m in members {
                        let idx = usize::try_from(m.get(obj.endian)).unwrap_or(usize::MAX);
                        dups.push((
                            idx,
                            DropReason::ComdatDuplicate {
                                group: signature.clone(),
                                kept_in: kept_in.clone(),
                            },
                        ));
                    }
                }
            }
        }
        for (idx, reason) in dups {
            match obj.sections.get_mut(idx) {
                Some(s) => s.fate = Fate::Drop(reason),
                None => {
                    return fail(PackError::Malformed {
                        object: obj.name.into(),
                        what: format!("COMDAT group names section {idx}, which does not exist"),
                    });
                }
            }
        }
        for (i, s) in obj.sections.iter_mut().enumerate() {
            if i == 0 || matches!(s.fate, Fate::Drop(_)) {
                continue;
            }
            s.fate = fate_of(obj.name, s)?;
        }
    }
    Ok(())
}

fn fate_of(object: &str, s: &InSection<'_>) -> Result<Fate, Error> {
    let meta = [
        elf::SHT_NULL,
        elf::SHT_SYMTAB,
        elf::SHT_STRTAB,
        elf::SHT_REL,
        elf::SHT_RELA,
        elf::SHT_GROUP,
        elf::SHT_SYMTAB_SHNDX,
    ];
    if meta.contains(&s.sh_type) {
        return Ok(Fate::Meta);
    }
    if s.flags & elf::SHF_ALLOC == 0 {
        return Ok(Fate::Drop(DropReason::NotAllocated));
    }
    if s.sh_type == elf::SHT_NOTE {
        return Ok(Fate::Drop(DropReason::Note));
    }
    if s.name == ".eh_frame" || s.sh_type == elf::SHT_X86_64_UNWIND {
        return Ok(Fate::Drop(DropReason::Unwind));
    }
    if s.size == 0 {
        return Ok(Fate::Drop(DropReason::Empty));
    }
    if s.flags & elf::SHF_TLS != 0 {
        return fail(PackError::Tls {
            object: object.into(),
            section: s.name.clone(),
        });
    }
    if s.sh_type == elf::SHT_NOBITS {
        return fail(PackError::NoBits {
            object: object.into(),
            section: s.name.clone(),
            size: s.size,
        });
    }
    if s.align > MAX_ALIGN || (s.align > 1 && !s.align.is_power_of_two()) {
        return fail(PackError::Alignment {
            object: object.into(),
            section: s.name.clone(),
            align: s.align,
        });
    }
    if s.flags & elf::SHF_WRITE != 0 {
        if s.name == ".data.rel.ro" || s.name.starts_with(".data.rel.ro.") {
            return Ok(Fate::Keep(SectionClass::RelRo));
        }
        return fail(PackError::Writable {
            object: object.into(),
            section: s.name.clone(),
            size: s.size,
        });
    }
    if s.flags & elf::SHF_EXECINSTR != 0 {
        Ok(Fate::Keep(SectionClass::Text))
    } else {
        Ok(Fate::Keep(SectionClass::ReadOnly))
    }
}

/// Collects global and weak definitions.
fn globals(objs: &[InObject<'_>]) -> Result<BTreeMap<String, GlobalDef>, Error> {
    let mut map: BTreeMap<String, GlobalDef> = BTreeMap::new();
    for (oi, obj) in objs.iter().enumerate() {
        let e = obj.endian;
        for (si, sym) in obj.symbols.enumerate() {
            if sym.st_bind() == elf::STB_LOCAL || sym.st_shndx(e) == elf::SHN_UNDEF {
                continue;
            }
            let name = String::from_utf8_lossy(
                obj.symbols
                    .symbol_name(e, sym)
                    .map_err(malformed(obj.name))?,
            )
            .into_owned();
            if sym.st_shndx(e) == elf::SHN_COMMON {
                return fail(PackError::Common {
                    object: obj.name.into(),
                    symbol: name,
                    size: u64::from(sym.st_size(e)),
                });
            }
            let section = if sym.st_shndx(e) == elf::SHN_ABS {
                None
            } else {
                match obj
                    .symbols
                    .symbol_section(e, sym, si)
                    .map_err(malformed(obj.name))?
                {
                    Some(idx) => Some(idx),
                    None => continue,
                }
            };
            if let Some(idx) = section
                && let Some(InSection {
                    fate: Fate::Drop(DropReason::ComdatDuplicate { .. }),
                    ..
                }) = obj.sections.get(idx.0)
            {
                // The kept copy of the group defines it.
                continue;
            }
            let def = GlobalDef {
                obj: oi,
                section,
                value: u64::from(sym.st_value(e)),
                weak: sym.st_bind() == elf::STB_WEAK,
            };
            match map.get(&name) {
                None => {
                    map.insert(name, def);
                }
                Some(old) if old.weak && !def.weak => {
                    map.insert(name, def);
                }
                Some(old) if !old.weak && !def.weak => {
                    return fail(PackError::DuplicateSymbol {
                        symbol: name,
                        first: objs
                            .get(old.obj)
                            .map(|o| o.name.to_string())
                            .unwrap_or_default(),
                        second: obj.name.into(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(map)
}

fn align_up(x: usize, align: u64) -> usize {
    let a = usize::try_from(align.max(1)).unwrap_or(1);
    x.div_ceil(a).saturating_mul(a)
}

/// Assigns image offsets from `start` on; returns the end offset.
fn layout(objs: &mut [InObject<'_>], start: usize) -> Result<usize, Error> {
    let mut at = start;
    for class in [
        SectionClass::Text,
        SectionClass::ReadOnly,
        SectionClass::RelRo,
    ] {
        for obj in objs.iter_mut() {
            for s in obj.sections.iter_mut() {
                if !matches!(s.fate, Fate::Keep(c) if c == class) {
                    continue;
                }
                at = align_up(at, s.align);
                s.placed = Some(at);
                at = at.saturating_add(s.data.len());
                if at > crate::build::MAX_LEGACY_LEN {
                    return Err(Error::TooLarge {
                        len: at,
                        max: crate::build::MAX_LEGACY_LEN,
                        what: "legacy option ROM (size byte)",
                    });
                }
            }
        }
    }
    Ok(at)
}

/// A relocation being applied, for messages.
struct RelocCtx<'s> {
    site: Site,
    kind: RelocKind,
    symbol: &'s str,
    /// Layout group of the section holding the field.
    class: SectionClass,
    /// Pinned load address.
    base: Option<u32>,
}

impl RelocCtx<'_> {
    fn overflow(&self, value: i64) -> PackError {
        PackError::Overflow {
            site: self.site.clone(),
            kind: self.kind,
            symbol: self.symbol.into(),
            value,
            bits: u32::try_from(self.kind.width() * 8).unwrap_or(32),
        }
    }

    fn position_dependent(&self, hint: &'static str) -> PackError {
        PackError::PositionDependent {
            site: self.site.clone(),
            kind: self.kind,
            symbol: self.symbol.into(),
            hint,
        }
    }

    fn not_relaxable(&self, found: &[u8], why: &'static str) -> PackError {
        PackError::NotRelaxable {
            site: self.site.clone(),
            kind: self.kind,
            symbol: self.symbol.into(),
            found: hex_bytes(found),
            why,
        }
    }
}

/// The symbol a relocation names, resolved.
struct Resolved {
    name: String,
    target: Target,
}

fn resolve(
    objs: &[InObject<'_>],
    globals: &BTreeMap<String, GlobalDef>,
    oi: usize,
    sym_index: Option<SymbolIndex>,
    site: &Site,
) -> Result<Resolved, Error> {
    let Some(obj) = objs.get(oi) else {
        return fail(PackError::Malformed {
            object: site.object.clone(),
            what: "object index".into(),
        });
    };
    let e = obj.endian;
    let Some(si) = sym_index else {
        return Ok(Resolved {
            name: "(no symbol)".into(),
            target: Target::Absolute(0),
        });
    };
    let sym = obj.symbols.symbol(si).map_err(|err| PackError::Malformed {
        object: obj.name.into(),
        what: format!("{site}: relocation names symbol {}: {err}", si.0),
    })?;
    let sec_idx = obj
        .symbols
        .symbol_section(e, sym, si)
        .map_err(malformed(obj.name))?;
    let mut name = String::from_utf8_lossy(
        obj.symbols
            .symbol_name(e, sym)
            .map_err(malformed(obj.name))?,
    )
    .into_owned();
    if sym.st_type() == elf::STT_SECTION
        && let Some(s) = sec_idx.and_then(|i| obj.sections.get(i.0))
    {
        name.clone_from(&s.name);
    }
    if sym.st_bind() == elf::STB_LOCAL {
        if sym.st_shndx(e) == elf::SHN_ABS {
            return Ok(Resolved {
                name,
                target: Target::Absolute(u64::from(sym.st_value(e))),
            });
        }
        let Some(idx) = sec_idx else {
            return fail(PackError::Undefined {
                site: site.clone(),
                symbol: name,
            });
        };
        let target = section_target(obj, idx, u64::from(sym.st_value(e)), site, &name)?;
        return Ok(Resolved { name, target });
    }
    if let Some(def) = globals.get(&name) {
        let Some(dobj) = objs.get(def.obj) else {
            return fail(PackError::Malformed {
                object: site.object.clone(),
                what: "definition object index".into(),
            });
        };
        let target = match def.section {
            None => Target::Absolute(def.value),
            Some(idx) => section_target(dobj, idx, def.value, site, &name)?,
        };
        return Ok(Resolved { name, target });
    }
    if name == GOT_SYMBOL {
        return Ok(Resolved {
            name,
            target: Target::Image(0),
        });
    }
    if sym.st_bind() == elf::STB_WEAK {
        return Ok(Resolved {
            name,
            target: Target::Absolute(0),
        });
    }
    fail(PackError::Undefined {
        site: site.clone(),
        symbol: name,
    })
}

/// Image offset of `value` in section `idx` of `obj`, or why there is none.
fn section_target(
    obj: &InObject<'_>,
    idx: SectionIndex,
    value: u64,
    site: &Site,
    symbol: &str,
) -> Result<Target, Error> {
    let Some(s) = obj.sections.get(idx.0) else {
        return fail(PackError::Malformed {
            object: obj.name.into(),
            what: format!(
                "symbol `{symbol}` names section {}, which does not exist",
                idx.0
            ),
        });
    };
    match (&s.fate, s.placed) {
        (Fate::Keep(_), Some(at)) => Ok(Target::Image((at as u64).saturating_add(value))),
        (Fate::Drop(reason), _) => fail(PackError::Discarded {
            site: site.clone(),
            symbol: symbol.into(),
            target: s.name.clone(),
            target_object: obj.name.into(),
            reason: reason.clone(),
        }),
        _ => fail(PackError::Discarded {
            site: site.clone(),
            symbol: symbol.into(),
            target: s.name.clone(),
            target_object: obj.name.into(),
            reason: DropReason::NotAllocated,
        }),
    }
}

const HINT_CODE: &str =
    "position-dependent code: compile with -fPIE/-fPIC or pass --base ADDR to pin the load address";
const HINT_DATA: &str = "a pointer stored in data holds an absolute address, which depends on where the ROM is loaded: compute addresses at run time (&sym in -fPIC code), store offsets, or pass --base ADDR to pin the load address";
const HINT_ABS: &str = "the target is an absolute symbol (or an undefined weak one, address 0) and the ROM's run-time address is unknown: pass --base ADDR to pin the load address";

/// Applies one relocation to `blob` (image bytes from `blob_start` on).
fn apply(
    blob: &mut [u8],
    blob_start: usize,
    p: usize,
    kind: RelocKind,
    target: Target,
    ctx: &RelocCtx<'_>,
) -> Result<(), Error> {
    let width = kind.width();
    let at = p - blob_start;
    let field = blob.get(at..at + width).ok_or_else(|| ctx.overflow(0))?;
    let addend: i64 = match width {
        1 => i64::from(field.first().copied().unwrap_or(0) as i8),
        2 => i64::from(i16::from_le_bytes([
            field.first().copied().unwrap_or(0),
            field.get(1).copied().unwrap_or(0),
        ])),
        _ => {
            let mut w = [0u8; 4];
            w.copy_from_slice(field);
            i64::from(i32::from_le_bytes(w))
        }
    };
    let pp = p as i64;
    let base = ctx.base.map(i64::from);
    let value: i64 = match kind {
        RelocKind::Abs32 => match target {
            Target::Absolute(v) => v as i64 + addend,
            Target::Image(s) => {
                let b = base.ok_or_else(|| {
                    ctx.position_dependent(if ctx.class == SectionClass::Text {
                        HINT_CODE
                    } else {
                        HINT_DATA
                    })
                })?;
                b + s as i64 + addend
            }
        },
        RelocKind::Pc32 | RelocKind::Plt32 => match target {
            Target::Image(s) => s as i64 + addend - pp,
            Target::Absolute(v) => {
                let b = base.ok_or_else(|| ctx.position_dependent(HINT_ABS))?;
                v as i64 + addend - (b + pp)
            }
        },
        RelocKind::GotPc => addend - pp,
        RelocKind::GotOff => match target {
            Target::Image(s) => s as i64 + addend,
            Target::Absolute(v) => {
                let b = base.ok_or_else(|| ctx.position_dependent(HINT_ABS))?;
                v as i64 + addend - b
            }
        },
        RelocKind::Got32 | RelocKind::Got32X => {
            return relax(blob, at, kind, target, addend, pp, ctx);
        }
        RelocKind::Abs16 | RelocKind::Abs8 => match target {
            Target::Image(s) | Target::Absolute(s) => s as i64 + addend,
        },
        RelocKind::Pc16 | RelocKind::Pc8 => match target {
            Target::Image(s) | Target::Absolute(s) => s as i64 + addend - pp,
        },
    };
    store(blob, at, kind, value, ctx)
}

/// Writes `value` into the `kind.width()`-byte field at `at`, checking its range.
fn store(
    blob: &mut [u8],
    at: usize,
    kind: RelocKind,
    value: i64,
    ctx: &RelocCtx<'_>,
) -> Result<(), Error> {
    let width = kind.width();
    let bits = (width * 8) as u32;
    let (lo, hi) = if kind.signed() {
        (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
    } else {
        (-(1i64 << (bits - 1)), (1i64 << bits) - 1)
    };
    if value < lo || value > hi {
        return fail(ctx.overflow(value));
    }
    let bytes = value.to_le_bytes();
    let dst = blob
        .get_mut(at..at + width)
        .ok_or_else(|| ctx.overflow(value))?;
    dst.copy_from_slice(bytes.get(..width).unwrap_or_default());
    Ok(())
}

/// Relaxes a GOT load (`R_386_GOT32` / `R_386_GOT32X`) into a GOT-free instruction, as `ld`
/// does: `mov sym@GOT(%reg),%r` → `lea sym@GOTOFF(%reg),%r`; for GOT32X also
/// `call *sym@GOT(%reg)` → `addr32 call sym` and `jmp *sym@GOT(%reg)` → `jmp sym; nop`.
fn relax(
    blob: &mut [u8],
    at: usize,
    kind: RelocKind,
    target: Target,
    addend: i64,
    pp: i64,
    ctx: &RelocCtx<'_>,
) -> Result<(), Error> {
    let found = blob
        .get(at.saturating_sub(2)..(at + 4).min(blob.len()))
        .unwrap_or_default()
        .to_vec();
    if ctx.site.offset < 2 {
        return fail(ctx.not_relaxable(&found, "the instruction would start before its section"));
    }
    let (Some(opcode), Some(modrm)) = (
        at.checked_sub(2).and_then(|i| blob.get(i)).copied(),
        at.checked_sub(1).and_then(|i| blob.get(i)).copied(),
    ) else {
        return fail(ctx.not_relaxable(&found, "no instruction precedes the field"));
    };
    let Target::Image(s) = target else {
        return fail(ctx.not_relaxable(
            &found,
            "the target is an absolute symbol; only image symbols can be reached GOT-free",
        ));
    };
    let md = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    // disp32 with a base register and no SIB byte: mod = 10, r/m != 100.
    let based = md == 0b10 && rm != 0b100;
    match opcode {
        0x8B if based => {
            if let Some(op) = blob.get_mut(at - 2) {
                *op = 0x8D;
            }
            let ctx2 = RelocCtx {
                site: ctx.site.clone(),
                kind: RelocKind::GotOff,
                symbol: ctx.symbol,
                class: ctx.class,
                base: ctx.base,
            };
            store(blob, at, RelocKind::GotOff, s as i64 + addend, &ctx2)
        }
        0x8B => fail(ctx.not_relaxable(
            &found,
            "a mov without a base register (or with a SIB byte) cannot become a GOT-relative lea",
        )),
        0xFF if kind == RelocKind::Got32X && based && (reg == 2 || reg == 4) => {
            let call = reg == 2;
            let (prefix, rel) = if call {
                // 67 E8 rel32: the field stays in place, the next instruction is at P + 4.
                ([0x67, 0xE8], s as i64 + addend - (pp + 4))
            } else {
                // E9 rel32 90: the field moves back one byte, the jump ends at P + 3.
                ([0xE9, 0x00], s as i64 + addend - (pp + 3))
            };
            let rel32 = i32::try_from(rel).map_err(|_| ctx.overflow(rel))?;
            let mut bytes = Vec::with_capacity(6);
            if call {
                bytes.extend_from_slice(&prefix);
                bytes.extend_from_slice(&rel32.to_le_bytes());
            } else {
                bytes.push(prefix[0]);
                bytes.extend_from_slice(&rel32.to_le_bytes());
                bytes.push(0x90);
            }
            let dst = blob
                .get_mut(at - 2..at + 4)
                .ok_or_else(|| ctx.overflow(rel))?;
            dst.copy_from_slice(&bytes);
            Ok(())
        }
        _ => fail(ctx.not_relaxable(
            &found,
            match kind {
                RelocKind::Got32 => {
                    "R_386_GOT32 is relaxed only in `mov sym@GOT(%reg), %r` (opcode 8B)"
                }
                _ => {
                    "expected `mov sym@GOT(%reg), %r` (8B), `call *sym@GOT(%reg)` or `jmp *sym@GOT(%reg)` (FF /2, /4) with a base register"
                }
            },
        )),
    }
}

/// Relocates every kept section; returns the count per type.
fn relocate(
    objs: &[InObject<'_>],
    globals: &BTreeMap<String, GlobalDef>,
    blob: &mut [u8],
    blob_start: usize,
    base: Option<u32>,
) -> Result<BTreeMap<RelocKind, usize>, Error> {
    let mut counts = BTreeMap::new();
    for (oi, obj) in objs.iter().enumerate() {
        let e = obj.endian;
        for (ri, rs) in obj.table.enumerate() {
            let sh_type = rs.sh_type(e);
            if sh_type != elf::SHT_REL && sh_type != elf::SHT_RELA {
                continue;
            }
            let target_idx = usize::try_from(rs.sh_info(e)).unwrap_or(usize::MAX);
            let Some(ts) = obj.sections.get(target_idx) else {
                return fail(PackError::Malformed {
                    object: obj.name.into(),
                    what: format!(
                        "relocation section {} applies to section {target_idx}, which does not exist",
                        ri.0
                    ),
                });
            };
            let (Fate::Keep(class), Some(sec_at)) = (&ts.fate, ts.placed) else {
                continue;
            };
            let rel_name = obj
                .sections
                .get(ri.0)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            if sh_type == elf::SHT_RELA {
                return fail(PackError::Rela {
                    site: Site {
                        object: obj.name.into(),
                        section: ts.name.clone(),
                        offset: 0,
                    },
                    rela: rel_name,
                });
            }
            if rs.link(e) != obj.symtab_index {
                return fail(PackError::Malformed {
                    object: obj.name.into(),
                    what: format!("{rel_name} does not use the object's symbol table"),
                });
            }
            let Some((rels, _)) = rs.rel(e, obj.data).map_err(malformed(obj.name))? else {
                continue;
            };
            for r in rels {
                let r_type = r.r_type(e);
                let offset = u64::from(r.r_offset(e));
                let site = Site {
                    object: obj.name.into(),
                    section: ts.name.clone(),
                    offset,
                };
                if r_type == elf::R_386_NONE {
                    continue;
                }
                let resolved = resolve(objs, globals, oi, r.symbol(e), &site);
                let Some(kind) = RelocKind::from_number(r_type) else {
                    return fail(PackError::UnsupportedRelocation {
                        site,
                        r_type,
                        type_name: type_name(r_type),
                        symbol: match resolved {
                            Ok(r) => r.name,
                            Err(_) => "?".into(),
                        },
                    });
                };
                let resolved = resolved?;
                let width = kind.width() as u64;
                if offset.saturating_add(width) > ts.data.len() as u64 {
                    return fail(PackError::OutsideSection {
                        site,
                        kind,
                        width: kind.width(),
                        size: ts.size,
                    });
                }
                let p = sec_at + offset as usize;
                let ctx = RelocCtx {
                    site,
                    kind,
                    symbol: &resolved.name,
                    class: *class,
                    base,
                };
                apply(blob, blob_start, p, kind, resolved.target, &ctx)?;
                *counts.entry(kind).or_insert(0) += 1;
            }
        }
    }
    Ok(counts)
}

/// Finds an entry symbol: its image offset, checked to be in a kept executable section.
fn entry(
    objs: &[InObject<'_>],
    globals: &BTreeMap<String, GlobalDef>,
    symbol: &'static str,
) -> Result<Option<usize>, Error> {
    let Some(def) = globals.get(symbol) else {
        return Ok(None);
    };
    let Some(obj) = objs.get(def.obj) else {
        return Ok(None);
    };
    let Some(idx) = def.section else {
        return fail(PackError::EntryNotCode {
            symbol,
            place: format!("in {} as an absolute value {:#x}", obj.name, def.value),
        });
    };
    match obj.sections.get(idx.0) {
        Some(InSection {
            fate: Fate::Keep(SectionClass::Text),
            placed: Some(at),
            ..
        }) => Ok(Some(at.saturating_add(def.value as usize))),
        Some(s) => fail(PackError::EntryNotCode {
            symbol,
            place: format!("in section {} of {}", s.name, obj.name),
        }),
        None => fail(PackError::EntryNotCode {
            symbol,
            place: format!("in a section of {} that does not exist", obj.name),
        }),
    }
}

/// A copy of `data` starting at a 4-byte-aligned address: the buffer and the copy's offset in it.
fn aligned_copy(data: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; data.len() + 3];
    let off = match buf.as_ptr().align_offset(4) {
        o if o <= 3 => o,
        _ => 0,
    };
    if let Some(dst) = buf.get_mut(off..off + data.len()) {
        dst.copy_from_slice(data);
    }
    (buf, off)
}

fn require(found: Option<usize>, symbol: &'static str, role: &'static str) -> Result<usize, Error> {
    found.ok_or_else(|| PackError::MissingEntry { symbol, role }.into())
}

/// Packs `objects` into a VMI ROM. Same inputs, same bytes.
///
/// See the [module documentation](self) for the entry-symbol convention, the layout and the
/// relocation rules.
pub fn pack(objects: &[Object<'_>], opts: &PackOptions) -> Result<Packed, Error> {
    if objects.is_empty() {
        return fail(PackError::NoObjects);
    }
    // The ELF reader works in place and needs 4-byte-aligned structures: copy input that is
    // not (an object taken from the middle of an archive or a larger buffer).
    let copies: Vec<Option<(Vec<u8>, usize)>> = objects
        .iter()
        .map(|o| (o.data.as_ptr().align_offset(4) != 0).then(|| aligned_copy(o.data)))
        .collect();
    let inputs: Vec<Object<'_>> = objects
        .iter()
        .zip(&copies)
        .map(|(o, c)| match c {
            Some((buf, off)) => Object {
                name: o.name,
                data: buf.get(*off..off + o.data.len()).unwrap_or(o.data),
            },
            None => *o,
        })
        .collect();
    let mut objs = inputs.iter().map(open).collect::<Result<Vec<_>, _>>()?;
    classify(&mut objs)?;
    let globals = globals(&objs)?;
    const INIT_ROLE: &str = "VMI Init, reached through the slot at ROM+0x80";
    const RELOC_ROLE: &str = "VMI GetRelocationInfo, reached through the slot at ROM+0x88";
    for (sym, role) in [(ENTRY_INIT, INIT_ROLE), (ENTRY_GET_RELOC, RELOC_ROLE)] {
        if !globals.contains_key(sym) {
            return fail(PackError::MissingEntry { symbol: sym, role });
        }
    }

    // Header, PCIR, $PnP and the strings.
    let mut b = ImageBuilder::new(vmi_abi::consts::HEADER_SIZE)?;
    let mut pcir = Pcir::new(opts.pci_id.0, opts.pci_id.1, CLASS_CODE);
    pcir.code_revision = u16::from_be_bytes([opts.version.0, opts.version.1]);
    b.set_pcir(Some(PCIR_OFFSET), pcir)?;
    let vendor = b.add_string(&opts.vendor)?;
    let product = b.add_string(&opts.product)?;
    b.add_pnp(
        Some(PNP_OFFSET),
        PnpHeader::new(vendor, product, CLASS_CODE),
    )?;
    let spec = VmiHeaderSpec {
        virtual_top: opts.virtual_top,
        license: opts.license.clone(),
        ..VmiHeaderSpec::default()
    };
    // write_header appends the license string: find out where the strings end.
    let strings_end = {
        let mut probe = b.clone();
        let h = vmi_abi::consts::HEADER_SIZE;
        write_header(&mut probe, &spec, h, h)?;
        probe.len()
    };

    let code_end = layout(&mut objs, strings_end)?;
    let code_start = objs
        .iter()
        .flat_map(|o| o.sections.iter())
        .filter_map(|s| s.placed)
        .min()
        .unwrap_or(strings_end);
    let mut blob = vec![0u8; code_end - strings_end];
    let mut placed = Vec::new();
    for class in [
        SectionClass::Text,
        SectionClass::ReadOnly,
        SectionClass::RelRo,
    ] {
        for obj in &objs {
            for s in &obj.sections {
                if let (Fate::Keep(c), Some(at)) = (&s.fate, s.placed)
                    && *c == class
                {
                    placed.push(PlacedSection {
                        object: obj.name.into(),
                        name: s.name.clone(),
                        class,
                        offset: at,
                        size: s.data.len(),
                        align: usize::try_from(s.align.max(1)).unwrap_or(1),
                    });
                }
            }
        }
    }
    // Fill text gaps with int3, then copy the sections in.
    let mut prev_end: Option<(usize, SectionClass)> = None;
    for p in &placed {
        if let Some((end, SectionClass::Text)) = prev_end
            && let Some(gap) = blob.get_mut(end - strings_end..p.offset - strings_end)
        {
            gap.fill(0xCC);
        }
        prev_end = Some((p.offset + p.size, p.class));
    }
    for obj in &objs {
        for s in &obj.sections {
            if let (Fate::Keep(_), Some(at)) = (&s.fate, s.placed)
                && let Some(dst) = blob.get_mut(at - strings_end..at - strings_end + s.data.len())
            {
                dst.copy_from_slice(s.data);
            }
        }
    }

    let init = require(entry(&objs, &globals, ENTRY_INIT)?, ENTRY_INIT, INIT_ROLE)?;
    let get_reloc = require(
        entry(&objs, &globals, ENTRY_GET_RELOC)?,
        ENTRY_GET_RELOC,
        RELOC_ROLE,
    )?;
    let init16 = entry(&objs, &globals, ENTRY_INIT16)?;
    let relocations = relocate(&objs, &globals, &mut blob, strings_end, opts.base)?;

    write_header(&mut b, &spec, init, get_reloc)?;
    if b.len() != strings_end {
        return Err(Error::Placement {
            what: "packed sections",
            offset: b.len(),
            len: blob.len(),
            reason: "the header strings ended somewhere else than planned",
        });
    }
    b.append(&blob, 1);
    if let Some(t) = init16 {
        b.set_init_entry(t)?;
    }
    let image = b.finish(&Finish::default())?;

    let mut symbols: Vec<PlacedSymbol> = globals
        .iter()
        .filter_map(|(name, def)| {
            let obj = objs.get(def.obj)?;
            let s = obj.sections.get(def.section?.0)?;
            Some(PlacedSymbol {
                name: name.clone(),
                object: obj.name.into(),
                section: s.name.clone(),
                offset: s.placed?.saturating_add(def.value as usize),
            })
        })
        .collect();
    symbols.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    let dropped = objs
        .iter()
        .flat_map(|o| {
            o.sections.iter().filter_map(|s| match &s.fate {
                Fate::Drop(reason) => Some(DroppedSection {
                    object: o.name.into(),
                    name: s.name.clone(),
                    size: s.size,
                    reason: reason.clone(),
                }),
                _ => None,
            })
        })
        .collect();
    Ok(Packed {
        image,
        sections: placed,
        dropped,
        symbols,
        entries: Entries {
            init,
            get_reloc,
            init16,
        },
        relocations,
        code_start,
        code_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation_names_and_numbers_round_trip() {
        for k in RelocKind::ALL {
            assert_eq!(RelocKind::from_number(k.number()), Some(k));
            assert_eq!(r386_name(k.number()), Some(k.name()));
        }
        assert_eq!(RelocKind::Got32X.name(), "R_386_GOT32X");
        assert_eq!(RelocKind::Pc16.number(), 21);
        assert_eq!(RelocKind::from_number(elf::R_386_RELATIVE), None);
        assert_eq!(type_name(38), "R_386_SIZE32 (38)");
        assert_eq!(type_name(12), "unknown type 12");
        assert_eq!(type_name(200), "unknown type 200");
    }

    #[test]
    fn garbage_and_empty_input_are_errors_not_panics() {
        let opts = PackOptions::default();
        let one = |data: &[u8]| pack(&[Object { name: "x.o", data }], &opts);
        assert!(matches!(one(&[]), Err(Error::Pack(e)) if matches!(*e, PackError::NotElf { .. })));
        let mut hdr = vec![0x7F, b'E', b'L', b'F', 1, 1, 1];
        assert!(
            matches!(one(&hdr), Err(Error::Pack(e)) if matches!(*e, PackError::Malformed { .. }))
        );
        hdr.resize(52, 0xFF);
        assert!(one(&hdr).is_err());
        hdr[4] = 2;
        assert!(
            matches!(one(&hdr), Err(Error::Pack(e)) if matches!(*e, PackError::NotElf32 { class: 2, .. }))
        );
    }

    #[test]
    fn store_checks_field_ranges() {
        let ctx = RelocCtx {
            site: Site {
                object: "a.o".into(),
                section: ".text".into(),
                offset: 0,
            },
            kind: RelocKind::Pc8,
            symbol: "x",
            class: SectionClass::Text,
            base: None,
        };
        let mut b = [0u8; 4];
        assert!(store(&mut b, 0, RelocKind::Pc8, -128, &ctx).is_ok());
        assert_eq!(b[0], 0x80);
        assert!(store(&mut b, 0, RelocKind::Pc8, 128, &ctx).is_err());
        assert!(store(&mut b, 0, RelocKind::Abs8, 255, &ctx).is_ok());
        assert!(store(&mut b, 0, RelocKind::Abs16, 0xFFFF, &ctx).is_ok());
        assert!(store(&mut b, 0, RelocKind::Abs16, 0x10000, &ctx).is_err());
        assert!(store(&mut b, 0, RelocKind::Abs32, 0xFFFF_FFFF, &ctx).is_ok());
        assert!(store(&mut b, 0, RelocKind::Pc32, 1 << 31, &ctx).is_err());
        assert!(store(&mut b, 2, RelocKind::Abs32, 0, &ctx).is_err());
    }
}
