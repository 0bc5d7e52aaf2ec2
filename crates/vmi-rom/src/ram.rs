//! Private RAM: the writable memory a ROM takes at POST — one facility for every backend.
//!
//! After POST a ROM's own pages are read-only (SeaBIOS write-protects shadow RAM), so state a
//! backend keeps at run time (the local APIC's address, the TSC frequency, alarms, a trace
//! area) lives in conventional memory instead: the generator's 16-bit init, run by the BIOS
//! during POST, lowers the BIOS data area's base-memory size (the word at 0x413, in KiB) by the
//! block's size, zeroes the block, writes its header, lets each backend initialise its regions,
//! and records the block's position relative to the ROM inside the ROM image (still writable
//! during POST; a byte next to it keeps the image's checksum zero). Linux reserves
//! `[min(BDA size, EBDA), 1 MiB)` and never uses it; SeaBIOS's e820 map reports it reserved.
//! The 32-bit calls find the block through the kernel's linear map without knowing
//! `PAGE_OFFSET` ([`pointer()`]): image base + recorded offset. A ROM whose 16-bit init never ran
//! (no BIOS, e.g. the KVM runner) finds the offset 0 — GetRelocationInfo then answers NONE for
//! every call that needs the block (see [`NEEDS_RAM`]), so Linux keeps its native operation.
//!
//! Backends declare [`Region`]s ([`crate::Backend::ram`]); a region is per ROM or per CPU
//! ([`MAX_CPUS`] slots, indexed as the backend's code decides). The layout is fixed at build
//! time and written into the header, so a host can decode the block from a RAM image.
//!
//! Header (little-endian, at the block's start, 1 KiB aligned):
//!
//! | Off | Size | Field |
//! |---|---|---|
//! | 0x00 | 8 | magic `"VMIRAM\0\0"` |
//! | 0x08 | 4 | layout version (1) |
//! | 0x0C | 4 | build id of the ROM that wrote it |
//! | 0x10 | 4 | block size in bytes |
//! | 0x14 | 4 | physical address of the ROM that wrote it |
//! | 0x18 | 4 | number of regions |
//! | 0x1C | 4 | check word: `0xFFFFFFFF ^` the sum of the u32 words 0x08–0x18 and of the table |
//! | 0x20 | 4 | ready: non-zero once the backend's Init has set its state up ([`off::READY`]) |
//! | 0x24 | 12 | reserved |
//! | 0x30 | 16·n | region table: tag (4 ASCII bytes), offset, slot size, slots |

use crate::emit::Emit;
use crate::error::GenError;
use crate::manifest;
use iced_x86::code_asm::*;

/// `"VMIRAM\0\0"`.
pub const MAGIC: [u8; 8] = *b"VMIRAM\0\0";
/// Layout version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Size of the fixed header (the region table follows).
pub const FIXED_HEADER: u32 = 0x30;
/// Size of one region-table entry.
pub const TABLE_ENTRY: u32 = 16;
/// Slots of a per-CPU region.
pub const MAX_CPUS: u32 = 64;
/// Blocks start on this boundary (the BDA counts memory in KiB).
pub const ALIGN: u32 = 1024;
/// The largest block: SeaBIOS keeps the top of conventional memory for its EBDA, and a block
/// of 64 KiB or more would reach below what option ROMs may take.
pub const MAX_BYTES: u32 = 63 * 1024;
/// Size of the link the generator keeps in the image: the block's offset from the ROM (u32,
/// 0 = no block) and a byte that re-balances the checksum after the 16-bit init wrote it.
pub const LINK_SIZE: usize = 5;
/// Flag in a GetRelocationInfo table entry's type byte: the call needs the block, set up by
/// Init — GetRelocationInfo answers NONE unless the block exists and its
/// [ready](off::READY) word is non-zero.
pub const NEEDS_RAM: u8 = 0x80;
/// Flag in a GetRelocationInfo table entry's type byte: the call has nothing to do under the
/// hypervisor the backend is for — GetRelocationInfo answers NOP once Init found it (the
/// [`ready::HYPERVISOR`] bit), else the entry's own answer.
pub const NOP_ON_HYPERVISOR: u8 = 0x40;

/// Bits of the [ready](off::READY) word.
pub mod ready {
    /// The backend's state is set up: calls flagged [`NEEDS_RAM`](super::NEEDS_RAM) may run.
    pub const READY: u32 = 1 << 0;
    /// Init found the hypervisor the backend is for
    /// ([`NOP_ON_HYPERVISOR`](super::NOP_ON_HYPERVISOR)).
    pub const HYPERVISOR: u32 = 1 << 1;
}

/// Header field offsets.
pub mod off {
    /// Magic.
    pub const MAGIC: u32 = 0x00;
    /// Layout version.
    pub const VERSION: u32 = 0x08;
    /// Build id.
    pub const BUILD_ID: u32 = 0x0C;
    /// Block size.
    pub const SIZE: u32 = 0x10;
    /// ROM physical address.
    pub const ROM_PHYS: u32 = 0x14;
    /// Region count.
    pub const REGIONS: u32 = 0x18;
    /// Check word.
    pub const CHECK: u32 = 0x1C;
    /// Ready word: the backend's Init sets it once its state is usable (it is zero until
    /// then, and the calls flagged [`NEEDS_RAM`](super::NEEDS_RAM) answer NONE).
    pub const READY: u32 = 0x20;
}

/// A region a backend asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Four ASCII bytes naming it in the header (`b"time"`).
    pub tag: [u8; 4],
    /// Bytes per slot.
    pub size: u32,
    /// Alignment of its start (a power of two, at least 4).
    pub align: u32,
    /// One slot per CPU ([`MAX_CPUS`]) rather than one per ROM.
    pub per_cpu: bool,
}

/// A region's place in the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placed {
    /// Its tag.
    #[serde(serialize_with = "tag_str")]
    pub tag: [u8; 4],
    /// Offset from the block's start.
    pub offset: u32,
    /// Bytes per slot.
    pub size: u32,
    /// Slots (1, or [`MAX_CPUS`]).
    pub slots: u32,
}

fn tag_str<S: serde::Serializer>(t: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(t))
}

/// The block's layout: fixed at build time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// The regions, in the order they were asked for.
    pub regions: Vec<Placed>,
    /// Bytes in all (header included).
    pub bytes: u32,
}

impl Layout {
    /// Places `regions` after the header; an empty list is an empty layout (no block).
    pub fn of(regions: &[Region]) -> Result<Layout, GenError> {
        if regions.is_empty() {
            return Ok(Layout::default());
        }
        let mut at = FIXED_HEADER + TABLE_ENTRY * regions.len() as u32;
        let mut placed = Vec::with_capacity(regions.len());
        for r in regions {
            let align = r.align.max(4);
            if !r.align.is_power_of_two() || r.size == 0 {
                return Err(bad_layout(
                    r,
                    "size 0 or an alignment that is not a power of two",
                ));
            }
            let slots = if r.per_cpu { MAX_CPUS } else { 1 };
            at = at.next_multiple_of(align);
            placed.push(Placed {
                tag: r.tag,
                offset: at,
                size: r.size,
                slots,
            });
            at = at
                .checked_add(r.size.saturating_mul(slots))
                .filter(|end| *end <= MAX_BYTES)
                .ok_or_else(|| {
                    bad_layout(
                        r,
                        "the private RAM would exceed the 63 KiB of conventional memory SeaBIOS \
                         keeps (it clears everything below 0x90000 before booting)",
                    )
                })?;
        }
        Ok(Layout {
            regions: placed,
            bytes: at,
        })
    }

    /// KiB taken from conventional memory (0 without regions).
    pub fn kib(&self) -> u32 {
        self.bytes.div_ceil(ALIGN)
    }

    /// The region tagged `tag`.
    pub fn region(&self, tag: &[u8; 4]) -> Option<Placed> {
        self.regions.iter().copied().find(|p| &p.tag == tag)
    }

    /// The header words after the magic, in order (what the 16-bit init writes and the
    /// check word covers), given the build id and the ROM's physical address.
    fn words(&self, build_id: u32, rom_phys: u32) -> Vec<(u32, u32)> {
        let mut w = vec![
            (off::VERSION, VERSION),
            (off::BUILD_ID, build_id),
            (off::SIZE, self.bytes),
            (off::ROM_PHYS, rom_phys),
            (off::REGIONS, self.regions.len() as u32),
        ];
        for (i, p) in self.regions.iter().enumerate() {
            let at = FIXED_HEADER + TABLE_ENTRY * i as u32;
            w.extend([
                (at, u32::from_le_bytes(p.tag)),
                (at + 4, p.offset),
                (at + 8, p.size),
                (at + 12, p.slots),
            ]);
        }
        w
    }
}

fn bad_layout(r: &Region, problem: &'static str) -> GenError {
    GenError::Ram {
        tag: String::from_utf8_lossy(&r.tag).into_owned(),
        problem,
    }
}

/// The check word over the header words (all but the magic and the check word itself).
pub fn check_word(words: impl IntoIterator<Item = u32>) -> u32 {
    0xFFFF_FFFF ^ words.into_iter().fold(0u32, u32::wrapping_add)
}

/// Offset of the manifest's data-offset field (the 16-bit init finds the link through it).
fn manifest_data_field() -> u32 {
    (manifest::OFFSET + manifest::F_DATA.offset) as u32
}

/// Offset of the manifest's build-id field.
fn manifest_build_id_field() -> u32 {
    (manifest::OFFSET + manifest::F_BUILD_ID.offset) as u32
}

/// Offset of the manifest's template field.
fn manifest_ram_field() -> u32 {
    (manifest::OFFSET + manifest::F_RAM.offset) as u32
}

/// The block's header as the image carries it (its template): the magic, the layout, build id
/// and ROM address 0 (the 16-bit init fills them in and corrects the check word by their sum).
/// `vmirom info` reads the layout from it; the manifest points at it.
pub fn template(layout: &Layout) -> Vec<u8> {
    let words = layout.words(0, 0);
    let len = words
        .iter()
        .map(|(o, _)| o + 4)
        .max()
        .unwrap_or(FIXED_HEADER)
        .max(FIXED_HEADER);
    let mut t = vec![0u8; len as usize];
    let mut put = |at: u32, v: u32| {
        if let Some(d) = t.get_mut(at as usize..at as usize + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    };
    for (o, v) in &words {
        put(*o, *v);
    }
    put(off::CHECK, check_word(words.iter().map(|(_, v)| *v)));
    if let Some(m) = t.get_mut(..8) {
        m.copy_from_slice(&MAGIC);
    }
    t
}

/// The 16-bit part (runs at POST with CS = the ROM's segment and the image writable; keeps
/// every register): take the block below 640 KiB, zero it, write the header, run
/// `regions_init` with ES = the block's segment, ECX = the build id and EDX = the ROM's
/// physical address (each backend initialises its regions there), record the block's offset
/// in the link. Does nothing when the link is already set (a second
/// call as a boot-connection vector) or conventional memory is too small.
pub fn init16(
    a: &mut CodeAssembler,
    layout: &Layout,
    regions_init: &dyn Fn(&mut CodeAssembler) -> Result<(), GenError>,
) -> Result<(), GenError> {
    if layout.regions.is_empty() {
        return Ok(());
    }
    let kib = layout.kib();
    let mut done = a.create_label();
    a.pushad()?;
    a.push(ds)?;
    a.push(es)?;
    body16(a, layout, kib, &mut done, regions_init)?;
    a.set_label(&mut done)?;
    a.pop(es)?;
    a.pop(ds)?;
    a.popad()?;
    Ok(())
}

fn body16(
    a: &mut CodeAssembler,
    layout: &Layout,
    kib: u32,
    done: &mut CodeLabel,
    regions_init: &dyn Fn(&mut CodeAssembler) -> Result<(), GenError>,
) -> Result<(), GenError> {
    a.cld()?;
    // Where is the link? The manifest says.
    a.xor(ebx, ebx)?;
    a.mov(bx, word_ptr(manifest_data_field()).cs())?;
    a.test(bx, bx)?;
    a.jz(*done)?;
    a.cmp(dword_ptr(bx).cs(), 0)?;
    a.jne(*done)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(ax, word_ptr(0x413))?;
    a.sub(ax, kib as i32)?;
    a.jc(*done)?;
    a.mov(word_ptr(0x413), ax)?;
    a.shl(ax, 6)?;
    a.mov(es, ax)?;
    a.xor(di, di)?;
    a.mov(cx, (kib * 512) as i32)?;
    a.xor(ax, ax)?;
    a.rep().stosw()?;
    // The header: the image's template, then the build id (from the manifest), the ROM's
    // address (from CS) and the check word corrected by their sum.
    a.push(cs)?;
    a.pop(ds)?;
    a.mov(si, word_ptr(manifest_ram_field()))?;
    a.xor(di, di)?;
    a.mov(cx, template(layout).len() as u32)?;
    a.rep().movsb()?;
    a.xor(edx, edx)?;
    a.mov(dx, cs)?;
    a.shl(edx, 4)?;
    a.mov(ecx, dword_ptr(manifest_build_id_field()))?;
    a.mov(dword_ptr(off::BUILD_ID).es(), ecx)?;
    a.mov(dword_ptr(off::ROM_PHYS).es(), edx)?;
    a.sub(dword_ptr(off::CHECK).es(), ecx)?;
    a.sub(dword_ptr(off::CHECK).es(), edx)?;
    // Not signed until the regions are set up: a host never sees a half-written block.
    a.mov(dword_ptr(off::MAGIC).es(), 0)?;
    a.push(edx)?;
    a.push(ebx)?;
    regions_init(a)?;
    a.pop(ebx)?;
    a.pop(edx)?;
    // Magic last: a host never sees a signed but half-written header.
    a.mov(
        dword_ptr(0).es(),
        u32::from_le_bytes([b'V', b'M', b'I', b'R']),
    )?;
    a.mov(dword_ptr(4).es(), u32::from_le_bytes([b'A', b'M', 0, 0]))?;
    // The link := block physical − ROM physical; the byte after it := minus the sum of its
    // bytes, so the image still sums to zero.
    a.xor(eax, eax)?;
    a.mov(ax, es)?;
    a.shl(eax, 4)?;
    a.sub(eax, edx)?;
    a.mov(dword_ptr(bx).cs(), eax)?;
    a.mov(dl, al)?;
    a.add(dl, ah)?;
    a.shr(eax, 16)?;
    a.add(dl, al)?;
    a.add(dl, ah)?;
    a.neg(dl)?;
    a.mov(byte_ptr(bx + 4).cs(), dl)?;
    Ok(())
}

/// Loads the block's linear address plus the returned bias into `reg` (address block offset
/// `o` as `[reg + o - bias]`), or jumps to `none` when the ROM has no block. Changes the
/// arithmetic flags; uses 4 bytes of stack transiently.
pub fn pointer(e: &mut Emit, reg: AsmRegister32, none: CodeLabel) -> Result<i32, GenError> {
    let link = e.data_offset().ok_or(GenError::Inconsistent {
        backend: "private RAM".into(),
        call: 0,
        name: "-",
        problem: "a routine asked for private RAM in a ROM without the RAM link",
    })? as i32;
    let bias = e.image_base_biased(reg)? as i32;
    e.a.cmp(dword_ptr(reg + (link - bias)), 0)?;
    e.a.je(none)?;
    e.a.add(reg, dword_ptr(reg + (link - bias)))?;
    Ok(bias)
}

/// A decoded block header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Block {
    /// Physical address of the block in the RAM image.
    pub phys: u32,
    /// Build id of the ROM that wrote it.
    pub build_id: u32,
    /// Physical address of that ROM.
    pub rom_phys: u32,
    /// Its layout.
    pub layout: Layout,
}

/// Finds and decodes the private-RAM block in a RAM image (physical address 0 first): the
/// highest 1 KiB boundary below 640 KiB with the magic and a valid header. None if there is
/// none; a block whose header is damaged is an error naming the field.
pub fn find(ram: &[u8]) -> Option<Result<Block, String>> {
    let end = ram.len().min(0xA_0000);
    let at = (0..end)
        .step_by(ALIGN as usize)
        .rev()
        .find(|a| ram.get(*a..a + 8) == Some(&MAGIC[..]))?;
    Some(decode(ram, at))
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// Decodes the block at `phys`.
pub fn decode(ram: &[u8], phys: usize) -> Result<Block, String> {
    let get = |o: u32| {
        word(ram, phys + o as usize)
            .ok_or_else(|| format!("private RAM at {phys:#x}: header cut at offset {o:#x}"))
    };
    let version = get(off::VERSION)?;
    if version != VERSION {
        return Err(format!(
            "private RAM at {phys:#x}: version {version} at offset {:#x}, expected {VERSION}",
            off::VERSION
        ));
    }
    let n = get(off::REGIONS)?;
    if n > 64 {
        return Err(format!(
            "private RAM at {phys:#x}: {n} regions at offset {:#x}, expected at most 64",
            off::REGIONS
        ));
    }
    let mut covered = Vec::new();
    for o in [
        off::VERSION,
        off::BUILD_ID,
        off::SIZE,
        off::ROM_PHYS,
        off::REGIONS,
    ] {
        covered.push(get(o)?);
    }
    let mut regions = Vec::new();
    for i in 0..n {
        let at = FIXED_HEADER + TABLE_ENTRY * i;
        let e = [get(at)?, get(at + 4)?, get(at + 8)?, get(at + 12)?];
        covered.extend(e);
        regions.push(Placed {
            tag: e[0].to_le_bytes(),
            offset: e[1],
            size: e[2],
            slots: e[3],
        });
    }
    let expected = check_word(covered);
    let found = get(off::CHECK)?;
    if found != expected {
        return Err(format!(
            "private RAM at {phys:#x}: check word {found:#010x} at offset {:#x} does not match \
             the header ({expected:#010x}): damaged",
            off::CHECK
        ));
    }
    let bytes = get(off::SIZE)?;
    Ok(Block {
        phys: phys as u32,
        build_id: get(off::BUILD_ID)?,
        rom_phys: get(off::ROM_PHYS)?,
        layout: Layout { regions, bytes },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(tag: &[u8; 4], size: u32, align: u32, per_cpu: bool) -> Region {
        Region {
            tag: *tag,
            size,
            align,
            per_cpu,
        }
    }

    #[test]
    fn regions_are_placed_after_the_table_aligned() {
        let l = Layout::of(&[
            region(b"time", 100, 16, false),
            region(b"cpus", 64, 64, true),
            region(b"trce", 2000, 1024, false),
        ])
        .unwrap();
        assert_eq!(l.regions[0].offset, FIXED_HEADER + 3 * TABLE_ENTRY);
        let cpus = (l.regions[0].offset + 100).next_multiple_of(64);
        assert_eq!(l.regions[1].offset, cpus);
        assert_eq!(l.regions[1].slots, MAX_CPUS);
        assert_eq!(
            l.regions[2].offset,
            (cpus + 64 * 64u32).next_multiple_of(1024)
        );
        assert_eq!(l.bytes, l.regions[2].offset + 2000);
        assert_eq!(l.kib(), l.bytes.div_ceil(1024));
        assert_eq!(l.region(b"cpus").unwrap().size, 64);
        assert!(Layout::of(&[]).unwrap().regions.is_empty());
        assert!(Layout::of(&[region(b"big!", 70_000, 4, false)]).is_err());
        assert!(Layout::of(&[region(b"odd!", 4, 3, false)]).is_err());
    }

    #[test]
    fn a_written_header_decodes_and_damage_is_named() {
        let l = Layout::of(&[region(b"time", 32, 16, false)]).unwrap();
        let mut ram = vec![0u8; 0xA_0000];
        let at = 0x9_F000usize;
        ram[at..at + 8].copy_from_slice(&MAGIC);
        let words = l.words(0x1234_5678, 0xC_A000);
        for (o, v) in &words {
            ram[at + *o as usize..at + *o as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        let check = check_word(words.iter().map(|(_, v)| *v));
        ram[at + off::CHECK as usize..at + off::CHECK as usize + 4]
            .copy_from_slice(&check.to_le_bytes());
        let b = find(&ram).unwrap().unwrap();
        assert_eq!(
            (b.phys, b.build_id, b.rom_phys),
            (0x9_F000, 0x1234_5678, 0xC_A000)
        );
        assert_eq!(b.layout, l);
        ram[at + 0x10] ^= 1;
        let e = find(&ram).unwrap().unwrap_err();
        assert!(e.contains("check word") && e.contains("0x9f000"), "{e}");
        assert!(find(&[0u8; 4096]).is_none());
    }
}
