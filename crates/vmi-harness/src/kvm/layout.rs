//! The KVM runner's guest-physical memory map, the ROM's placement, and the multiboot image's
//! header: every check that needs no `/dev/kvm`.

use crate::error::HarnessError;
use crate::multiboot::{FLAG_ADDRESSES, MAGIC};
use vmi_abi::consts::{SCAN_END, SCAN_START, SCAN_STRIDE};

/// End of low RAM: the legacy hole (VGA memory, option ROMs, system BIOS) starts here.
pub const LOW_RAM_END: u32 = 0xA_0000;
/// Start of RAM above the legacy hole (1 MiB).
pub const HIGH_RAM_START: u32 = 0x10_0000;
/// First address a ROM may start at (Linux's scan start).
pub const ROM_WINDOW_START: u32 = SCAN_START;
/// A ROM must end at or below this address (Linux's scan end).
pub const ROM_WINDOW_END: u32 = SCAN_END;
/// A ROM starts on a multiple of this (Linux's scan stride, 2 KiB).
pub const ROM_ALIGN: u32 = SCAN_STRIDE;
/// Where the ROM goes when the caller does not say.
pub const DEFAULT_ROM_BASE: u32 = 0xC_8000;
/// Physical address of the multiboot information structure (low RAM, unused by the guest).
pub const MBI_ADDR: u32 = 0x8000;
/// Size reserved for the multiboot information structure.
pub const MBI_LEN: u32 = 0x1000;
/// ESP at entry: a small stack below the multiboot information (the spec leaves ESP undefined;
/// the guest sets its own).
pub const BOOT_STACK_TOP: u32 = MBI_ADDR;
/// Bottom of the loader's stack area: nothing may be loaded in `[BOOT_STACK, MBI_ADDR + MBI_LEN)`.
pub const BOOT_STACK: u32 = 0x7000;
/// KVM slots are made of whole pages.
pub const PAGE: u32 = 0x1000;
/// Smallest and largest RAM sizes (MiB): the guest lives above 1 MiB; 32-bit guests keep RAM
/// below the 3 GiB line (and KVM's TSS pages near 4 GiB).
pub const MEMORY_MIB: std::ops::RangeInclusive<u32> = 2..=3072;
/// Multiboot flags bits 0–15 are requirements; the loader meets bit 0 (page-aligned modules:
/// there are none) and bit 1 (memory information).
pub const SUPPORTED_REQUIRED_FLAGS: u32 = 0b11;
/// The multiboot header must lie in the first 8 KiB of the image.
pub const HEADER_SEARCH: usize = 8192;
/// Multiboot information flag: `mem_lower`/`mem_upper` are valid.
pub const MBI_FLAG_MEM: u32 = 1 << 0;

/// Where a ROM image sits: its base and length, and the page-rounded read-only slot around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RomPlacement {
    /// Physical address of byte 0 of the image.
    pub base: u32,
    /// Length of the image in bytes.
    pub len: u32,
}

impl RomPlacement {
    /// Places a `len`-byte image at `base`: a multiple of [`ROM_ALIGN`] with
    /// `ROM_WINDOW_START <= base` and `base + len <= ROM_WINDOW_END`.
    pub fn new(base: u32, len: usize) -> Result<RomPlacement, HarnessError> {
        let bad = |reason: String| HarnessError::RomPlacement { base, len, reason };
        if len == 0 {
            return Err(bad("the image is empty".into()));
        }
        if base % ROM_ALIGN != 0 {
            return Err(bad(format!(
                "not a multiple of {ROM_ALIGN:#x} (Linux only looks at 2 KiB boundaries)"
            )));
        }
        if !(ROM_WINDOW_START..ROM_WINDOW_END).contains(&base) {
            return Err(bad(format!(
                "outside the window Linux scans ({ROM_WINDOW_START:#x}-{:#x})",
                ROM_WINDOW_END - 1
            )));
        }
        let end = u64::from(base) + len as u64;
        if end > u64::from(ROM_WINDOW_END) {
            return Err(bad(format!(
                "the image would end at {end:#x}, past {ROM_WINDOW_END:#x} (where Linux's scan \
                 window ends)"
            )));
        }
        Ok(RomPlacement {
            base,
            len: len as u32,
        })
    }

    /// One past the last byte of the image.
    pub const fn end(&self) -> u32 {
        self.base + self.len
    }

    /// The read-only slot: the image rounded out to whole pages.
    pub const fn slot(&self) -> (u32, u32) {
        let start = self.base & !(PAGE - 1);
        let end = (self.end() + PAGE - 1) & !(PAGE - 1);
        (start, end - start)
    }

    /// The offset inside the image of physical `addr`, if it lies inside.
    pub fn offset_of(&self, addr: u64) -> Option<u32> {
        let off = addr.checked_sub(u64::from(self.base))?;
        (off < u64::from(self.len)).then_some(off as u32)
    }
}

/// RAM size in bytes for `memory_mib`, checked against [`MEMORY_MIB`].
pub fn ram_bytes(memory_mib: u32) -> Result<u64, HarnessError> {
    if !MEMORY_MIB.contains(&memory_mib) {
        return Err(HarnessError::InvalidConfig {
            reason: format!(
                "KVM guest RAM of {memory_mib} MiB: must be {}..={} MiB",
                MEMORY_MIB.start(),
                MEMORY_MIB.end()
            ),
        });
    }
    Ok(u64::from(memory_mib) << 20)
}

/// The RAM ranges `(start, len)` for `ram` bytes: low RAM and RAM above 1 MiB.
pub fn ram_ranges(ram: u64) -> [(u64, u64); 2] {
    [
        (0, u64::from(LOW_RAM_END)),
        (
            u64::from(HIGH_RAM_START),
            ram.saturating_sub(u64::from(HIGH_RAM_START)),
        ),
    ]
}

/// A parsed multiboot (v1) header with the address fields, checked against the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootLayout {
    /// Offset of the header in the image.
    pub header_offset: usize,
    /// Flags word.
    pub flags: u32,
    /// `header_addr`: physical address of the header.
    pub header_addr: u32,
    /// `load_addr`: physical address of the first loaded byte.
    pub load_addr: u32,
    /// One past the last loaded byte (`load_end_addr`, or the end of the file when 0).
    pub load_end: u32,
    /// One past the last bss byte (`bss_end_addr`, or `load_end` when 0).
    pub bss_end: u32,
    /// `entry_addr`.
    pub entry: u32,
    /// Offset in the image of the byte loaded at `load_addr`.
    pub file_offset: usize,
}

impl MultibootLayout {
    /// Finds and checks the header of `image` for a guest with `ram` bytes of RAM: magic,
    /// checksum, only requirements this loader meets, the address fields present and
    /// consistent, the loaded bytes inside the file, `[load_addr, bss_end)` inside one RAM
    /// range and clear of the multiboot information, the entry point inside the loaded bytes.
    pub fn parse(image: &[u8], ram: u64) -> Result<MultibootLayout, HarnessError> {
        let bad = |reason: String| HarnessError::Multiboot { reason };
        let word = |off: usize| -> Option<u32> {
            let b = image.get(off..off.checked_add(4)?)?;
            Some(u32::from_le_bytes([
                *b.first()?,
                *b.get(1)?,
                *b.get(2)?,
                *b.get(3)?,
            ]))
        };
        let header_offset = (0..HEADER_SEARCH.min(image.len()))
            .step_by(4)
            .find(|&o| {
                word(o) == Some(MAGIC)
                    && match (word(o + 4), word(o + 8)) {
                        (Some(f), Some(c)) => MAGIC.wrapping_add(f).wrapping_add(c) == 0,
                        _ => false,
                    }
            })
            .ok_or_else(|| {
                bad(format!(
                    "no header (magic {MAGIC:#010x} with a valid checksum) in the first {} \
                     bytes of the {}-byte image",
                    HEADER_SEARCH,
                    image.len()
                ))
            })?;
        let field = |i: usize| {
            word(header_offset + 4 * i)
                .ok_or_else(|| bad(format!("the header is cut off at word {i}")))
        };
        let flags = field(1)?;
        let unsupported = flags & 0xFFFF & !SUPPORTED_REQUIRED_FLAGS;
        if unsupported != 0 {
            return Err(bad(format!(
                "flags {flags:#010x} require features this loader does not provide (bits \
                 {unsupported:#06x}; video mode information is not supported)"
            )));
        }
        if flags & FLAG_ADDRESSES == 0 {
            return Err(bad(format!(
                "flags {flags:#010x} lack bit 16 (address fields): only flat images are loaded, \
                 not ELF"
            )));
        }
        let [header_addr, load_addr, load_end_addr, bss_end_addr, entry] =
            [field(3)?, field(4)?, field(5)?, field(6)?, field(7)?];
        let into_header = header_addr.checked_sub(load_addr).ok_or_else(|| {
            bad(format!(
                "load_addr {load_addr:#x} is above header_addr {header_addr:#x}"
            ))
        })?;
        let file_offset = header_offset
            .checked_sub(into_header as usize)
            .ok_or_else(|| {
                bad(format!(
                    "header_addr - load_addr = {into_header:#x} but the header is at file \
                     offset {header_offset:#x}"
                ))
            })?;
        let available = (image.len() - file_offset) as u64;
        let load_end = if load_end_addr == 0 {
            u64::from(load_addr) + available
        } else {
            u64::from(load_end_addr)
        };
        if load_end <= u64::from(load_addr) {
            return Err(bad(format!(
                "load_end_addr {load_end:#x} is not above load_addr {load_addr:#x}"
            )));
        }
        if load_end - u64::from(load_addr) > available {
            return Err(bad(format!(
                "load_end_addr {load_end:#x} asks for {:#x} bytes from file offset \
                 {file_offset:#x}, the file has {available:#x}",
                load_end - u64::from(load_addr)
            )));
        }
        let bss_end = if bss_end_addr == 0 {
            load_end
        } else {
            u64::from(bss_end_addr)
        };
        if bss_end < load_end {
            return Err(bad(format!(
                "bss_end_addr {bss_end:#x} is below load_end_addr {load_end:#x}"
            )));
        }
        let (start, end) = (u64::from(load_addr), bss_end);
        let fits = ram_ranges(ram)
            .iter()
            .any(|&(s, l)| start >= s && end <= s + l);
        if !fits {
            return Err(bad(format!(
                "[{start:#x}, {end:#x}) is not inside guest RAM ([0, {LOW_RAM_END:#x}) or \
                 [{HIGH_RAM_START:#x}, {ram:#x}))"
            )));
        }
        if start < u64::from(MBI_ADDR + MBI_LEN) && end > u64::from(BOOT_STACK) {
            return Err(bad(format!(
                "[{start:#x}, {end:#x}) overlaps the loader's stack and multiboot information \
                 at [{BOOT_STACK:#x}, {:#x})",
                MBI_ADDR + MBI_LEN
            )));
        }
        if !(start..load_end).contains(&u64::from(entry)) {
            return Err(bad(format!(
                "entry_addr {entry:#x} is outside the loaded bytes [{start:#x}, {load_end:#x})"
            )));
        }
        Ok(MultibootLayout {
            header_offset,
            flags,
            header_addr,
            load_addr,
            load_end: load_end as u32,
            bss_end: bss_end as u32,
            entry,
            file_offset,
        })
    }

    /// The bytes loaded at `load_addr`.
    pub fn payload<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        let len = (self.load_end - self.load_addr) as usize;
        image
            .get(self.file_offset..self.file_offset.saturating_add(len))
            .unwrap_or(&[])
    }
}

/// The multiboot information structure (flags, `mem_lower`, `mem_upper`; 12 bytes) for a guest
/// with `ram` bytes of RAM: 640 KiB of low memory and everything from 1 MiB up, in KiB.
pub fn multiboot_info(ram: u64) -> [u8; 12] {
    multiboot_info_with(ram, LOW_RAM_END / 1024)
}

/// [`multiboot_info`] with `lower` KiB of conventional memory (what the BDA says after a ROM's
/// init took some: a loader asks the BIOS, `int 0x12`).
pub fn multiboot_info_with(ram: u64, lower: u32) -> [u8; 12] {
    let upper = (ram.saturating_sub(u64::from(HIGH_RAM_START)) / 1024) as u32;
    let mut out = [0u8; 12];
    for (dst, w) in out.chunks_exact_mut(4).zip([MBI_FLAG_MEM, lower, upper]) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::multiboot;

    #[test]
    fn rom_placements() {
        let p = RomPlacement::new(0xC_0000, 0x9000).unwrap();
        assert_eq!((p.end(), p.slot()), (0xC_9000, (0xC_0000, 0x9000)));
        // A 2 KiB (not 4 KiB) boundary: the slot is rounded out to pages.
        let p = RomPlacement::new(0xD_F000 - 0x800, 0x1200).unwrap();
        assert_eq!(p.slot(), (0xD_E000, 0x2000));
        assert_eq!(p.offset_of(0xD_E800), Some(0));
        assert_eq!(p.offset_of(0xD_F9FF), Some(0x11FF));
        assert_eq!(p.offset_of(0xD_FA00), None);
        assert_eq!(p.offset_of(0xD_E7FF), None);
        // Ends exactly at 0xE0000.
        assert!(RomPlacement::new(0xD_F800, 0x800).is_ok());
        for (base, len, why) in [
            (0xC_8400, 512, "not a multiple of 0x800"),
            (0xB_F800, 512, "outside the window"),
            (0xE_0000, 512, "outside the window"),
            (0xD_F800, 0x1000, "would end at 0xe0800"),
            (0xC_8000, 0, "empty"),
        ] {
            let e = RomPlacement::new(base, len).unwrap_err().to_string();
            assert!(e.contains(why), "{base:#x}+{len:#x}: {e}");
            assert!(e.contains(&format!("{base:#x}")), "{e}");
        }
    }

    #[test]
    fn multiboot_header_of_the_guest_builder() {
        let img = multiboot::image(0x10_0000, &[0x90; 64], 8, 0x1000);
        let m = MultibootLayout::parse(&img, 64 << 20).unwrap();
        assert_eq!(m.header_offset, 0);
        assert_eq!((m.load_addr, m.load_end), (0x10_0000, 0x10_0000 + 96));
        assert_eq!(m.bss_end, 0x10_0000 + 96 + 0x1000);
        assert_eq!(m.entry, 0x10_0000 + 32 + 8);
        assert_eq!(m.payload(&img), &img[..]);
    }

    fn header(words: [u32; 8]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn with_fields(load: u32, load_end: u32, bss_end: u32, entry: u32, len: usize) -> Vec<u8> {
        let mut v = header([
            MAGIC,
            FLAG_ADDRESSES,
            0u32.wrapping_sub(MAGIC.wrapping_add(FLAG_ADDRESSES)),
            load,
            load,
            load_end,
            bss_end,
            entry,
        ]);
        v.resize(len, 0x90);
        v
    }

    #[test]
    fn multiboot_rejections() {
        let ram = 4 << 20;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0; 64], "no header"),
            (
                {
                    let mut v = with_fields(0x10_0000, 0, 0, 0x10_0020, 64);
                    v[8] ^= 1;
                    v
                },
                "no header",
            ),
            (
                header([MAGIC, 4, 0u32.wrapping_sub(MAGIC + 4), 0, 0, 0, 0, 0]),
                "require features",
            ),
            (
                header([MAGIC, 0, 0u32.wrapping_sub(MAGIC), 0, 0, 0, 0, 0]),
                "lack bit 16",
            ),
            (
                with_fields(0x10_0000, 0x10_1000, 0, 0x10_0020, 64),
                "the file has 0x40",
            ),
            (
                with_fields(0x10_0000, 0x10_0040, 0x10_0020, 0x10_0020, 64),
                "below load_end_addr",
            ),
            (
                with_fields(0x3F_FFC0, 0, 0x40_1000, 0x3F_FFE0, 64),
                "not inside guest RAM",
            ),
            (
                with_fields(0x9_FFC0, 0, 0xA_0040, 0x9_FFE0, 64),
                "not inside guest RAM",
            ),
            (
                with_fields(0x7800, 0, 0, 0x7820, 64),
                "overlaps the loader's stack",
            ),
            (
                with_fields(0x10_0000, 0, 0x10_1000, 0x10_0040, 64),
                "entry_addr 0x100040 is outside",
            ),
        ];
        for (img, why) in cases {
            let e = MultibootLayout::parse(&img, ram).unwrap_err().to_string();
            assert!(e.starts_with("multiboot image: "), "{e}");
            assert!(e.contains(why), "expected {why:?}: {e}");
        }
        // Low RAM below the loader's area is fine.
        assert!(MultibootLayout::parse(&with_fields(0x1000, 0, 0, 0x1020, 64), ram).is_ok());
    }

    #[test]
    fn info_structure_bytes() {
        assert_eq!(
            multiboot_info(64 << 20),
            [1, 0, 0, 0, 0x80, 2, 0, 0, 0x00, 0xFC, 0, 0]
        );
        assert!(ram_bytes(1).is_err() && ram_bytes(4096).is_err());
        assert_eq!(ram_bytes(64).unwrap(), 64 << 20);
    }
}
