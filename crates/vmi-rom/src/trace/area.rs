//! The trace area: where a trace ROM keeps its counters, and how a host finds and decodes it in
//! a raw guest-RAM image.
//!
//! The 16-bit init of a trace ROM takes [`Layout::kib`] KiB from the top of conventional memory by
//! lowering the BIOS data area's base-memory size (the word at 0x413, in KiB) — the classic way
//! an option ROM gets private RAM. Linux reserves `[min(BDA size, EBDA), 1 MiB)` and never uses
//! it, SeaBIOS's e820 map reports it as reserved, so neither the firmware nor the guest kernel
//! touches it afterwards. The init zeroes it, writes this header, and records the area's
//! position relative to the ROM inside the ROM image (still writable during POST; a byte next to
//! it keeps the image's checksum zero), so the 32-bit calls find it through the kernel's linear
//! map without knowing `PAGE_OFFSET`. SeaBIOS zeroes conventional memory below 0x90000 before
//! it boots, so an area must fit in the [`MAX_KIB`] KiB between there and its EBDA: the
//! generator refuses a larger layout.
//!
//! Header (little-endian, at the area's start, 1 KiB aligned):
//!
//! | Off | Size | Field |
//! |---|---|---|
//! | 0x00 | 8 | magic `"VMITRACE"` |
//! | 0x08 | 4 | layout version (2) |
//! | 0x0C | 4 | build id of the ROM that wrote it (its manifest's) |
//! | 0x10 | 4 | header size (0x50) |
//! | 0x14 | 4 | number of counter slots (one per call number, 74) |
//! | 0x18 | 4 | offset of the counters |
//! | 0x1C | 4 | counter slot size (16: u64 count, u64 cycles) |
//! | 0x20 | 4 | offset of the event ring (0 = no ring) |
//! | 0x24 | 4 | ring entries (a power of two) |
//! | 0x28 | 4 | ring entry size (32) |
//! | 0x2C | 4 | ring next index (incremented atomically; entry = index mod entries) |
//! | 0x30 | 4 | physical address of the ROM that wrote it |
//! | 0x34 | 4 | area size in bytes |
//! | 0x38 | 4 | check word: `0xFFFFFFFF ^` the sum of the u32 words 0x08–0x28, 0x30–0x34 and 0x40–0x4C |
//! | 0x3C | 4 | reserved |
//! | 0x40 | 4 | offset of the call-site table (0 = none) |
//! | 0x44 | 4 | call-site slots (0, or a power of two up to [`MAX_SITES`], 1024) |
//! | 0x48 | 4 | probes per lookup (min([`PROBES`], slots)) |
//! | 0x4C | 4 | call-site slot size (32) |
//!
//! Then the counters (one 16-byte slot per call number), the call-site table (32-byte aligned)
//! and the ring.
//!
//! # Counters and call sites
//!
//! Every call the ROM makes is added to exactly one pair of 64-bit counters (a count and a
//! cycle total): the slot of its call site `(call, caller)` in the call-site table, or — when
//! the ROM has no table, the site found no slot, or the call has no return address (JUMP_REL)
//! — the call's own counter slot, which therefore counts the calls *not attributed to a site*
//! (the "overflow"). A call's total is its counter slot plus its sites, so per call the sites
//! plus the overflow equal the call's count by construction; [`Area::counters`] holds those
//! totals, [`Area::overflow`] the counter slots, [`Area::sites`] the sites.
//!
//! Call-site slot (32 bytes): u32 caller (the return address; 0 = free), u32 tag
//! ([`SITE_TAG`] + call number; 0 while the slot is being claimed), u64 count, u64 cycles,
//! 8 reserved bytes. The table is open-addressed: the lookup for caller `c` starts at slot
//! [`site_hash`]`(c)` and tries [`Layout::probes`] slots in a row (wrapping), then gives up
//! (overflow). A free slot is claimed with `lock cmpxchg` on its caller word (0 → caller),
//! after which the claimer writes the tag; only then is anything counted in it.
//!
//! Why the counts stay exact under SMP and interrupts:
//! - every update of a counter is a `lock add` of the low word and a `lock adc` of the high
//!   word; each is atomic, the carry travels in the updating CPU's flags (an interrupt saves
//!   and restores them), so concurrent adds from other CPUs or from an interrupt handler on the
//!   same CPU are never lost;
//! - which counter a call goes to is decided before the first add, from registers and the
//!   call's own stack, and no lookup ever waits: a slot being claimed (caller written, tag
//!   still 0) is just not a match, so a lookup interrupted at any instruction — or re-entered
//!   by the handler of that interrupt — finishes on its own. At worst two contexts claim two
//!   slots for the same site; the host adds them up (a site's count is the sum of its slots);
//! - the claim itself is one `lock cmpxchg`: two CPUs cannot both own a slot, and the loser
//!   sees the winner's caller and goes on probing.
//!
//! A host reading the area while the guest runs may see a slot mid-claim (caller set, tag 0,
//! nothing counted): it is skipped. What a trace ROM can never write is an error naming the
//! slot and its offset: a free slot with a tag or counts, a tag that names no call, counts
//! before the tag, cycles without a count, a caller stored where its probes cannot reach.
//!
//! Ring entry (32 bytes): u32 call, u32 caller EIP (the return address: call site + 5), u64
//! start TSC, u64 duration in TSC cycles, 8 reserved bytes. IRET and SYSEXIT do not return:
//! they are counted (and logged) with zero cycles.

use thiserror::Error;

/// `"VMITRACE"`.
pub const MAGIC: [u8; 8] = *b"VMITRACE";
/// Layout version this crate writes and reads.
pub const VERSION: u32 = 2;
/// Header size.
pub const HEADER_SIZE: u32 = 0x50;
/// Size of one counter slot.
pub const SLOT_SIZE: u32 = 16;
/// Size of one ring entry.
pub const EVENT_SIZE: u32 = 32;
/// Size of one call-site slot.
pub const SITE_SIZE: u32 = 32;
/// Most slots one call-site lookup tries before it counts the call as overflow.
pub const PROBES: u32 = 8;
/// Most call-site slots a ROM may have (32 KiB of table; see [`MAX_KIB`]).
pub const MAX_SITES: u32 = 1024;
/// Call-site slots `vmirom build --trace` gives a ROM unless told otherwise: the most there is
/// room for — enough for the hot call sites of a kernel boot; sites that find no slot are
/// counted per call as overflow and shown as such.
pub const DEFAULT_SITES: u32 = MAX_SITES;
/// Largest area a ROM may carve, in KiB: SeaBIOS zeroes conventional memory below 0x90000
/// before it boots (the PMM specification asks it to) and its EBDA starts at 0x9FC00, so
/// only an area within those 63 KiB survives to the guest.
pub const MAX_KIB: u32 = 63;
/// A claimed call-site slot's tag is this plus the call number.
pub const SITE_TAG: u32 = 0x5354_0000;
/// The multiplier of [`site_hash`] (2^32 / φ, Fibonacci hashing).
pub const HASH_MULTIPLIER: u32 = 0x9E37_79B1;
/// Areas start on this boundary (the BDA counts memory in KiB).
pub const ALIGN: usize = 1024;
/// Areas live below this address (conventional memory).
pub const CONVENTIONAL_END: usize = 0xA_0000;

/// Header field offsets.
pub mod off {
    /// Magic.
    pub const MAGIC: u32 = 0x00;
    /// Layout version.
    pub const VERSION: u32 = 0x08;
    /// Build id.
    pub const BUILD_ID: u32 = 0x0C;
    /// Header size.
    pub const HEADER_SIZE: u32 = 0x10;
    /// Counter slot count.
    pub const SLOTS: u32 = 0x14;
    /// Counters offset.
    pub const COUNTERS: u32 = 0x18;
    /// Counter slot size.
    pub const SLOT_SIZE: u32 = 0x1C;
    /// Ring offset.
    pub const RING: u32 = 0x20;
    /// Ring entries.
    pub const RING_ENTRIES: u32 = 0x24;
    /// Ring entry size.
    pub const EVENT_SIZE: u32 = 0x28;
    /// Ring next index.
    pub const RING_NEXT: u32 = 0x2C;
    /// ROM physical address.
    pub const ROM_PHYS: u32 = 0x30;
    /// Area size.
    pub const AREA_SIZE: u32 = 0x34;
    /// Check word.
    pub const CHECK: u32 = 0x38;
    /// Call-site table offset.
    pub const SITES: u32 = 0x40;
    /// Call-site slots.
    pub const SITE_SLOTS: u32 = 0x44;
    /// Probes per lookup.
    pub const PROBES: u32 = 0x48;
    /// Call-site slot size.
    pub const SITE_SIZE: u32 = 0x4C;
}

/// Offsets within a call-site slot.
pub mod site_off {
    /// Caller (return address; 0 = free).
    pub const CALLER: u32 = 0x00;
    /// Tag: [`SITE_TAG`](super::SITE_TAG) + call (0 while being claimed).
    pub const TAG: u32 = 0x04;
    /// Count.
    pub const COUNT: u32 = 0x08;
    /// Cycles.
    pub const CYCLES: u32 = 0x10;
}

/// The layout a trace ROM uses (fixed at build time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Counter slots (one per call number).
    pub slots: u32,
    /// Ring entries (0 = no ring; otherwise a power of two).
    pub ring: u32,
    /// Call-site slots (0 = no table; otherwise a power of two up to [`MAX_SITES`]).
    pub sites: u32,
}

impl Layout {
    /// Offset of the counters.
    pub const fn counters(&self) -> u32 {
        HEADER_SIZE
    }

    /// Offset of the call-site table (0 when there is none).
    pub const fn sites_offset(&self) -> u32 {
        if self.sites == 0 {
            0
        } else {
            (HEADER_SIZE + self.slots * SLOT_SIZE).next_multiple_of(SITE_SIZE)
        }
    }

    /// Slots one lookup tries.
    pub const fn probes(&self) -> u32 {
        if self.sites < PROBES {
            self.sites
        } else {
            PROBES
        }
    }

    /// `log2` of the call-site slots (0 without a table).
    pub const fn site_bits(&self) -> u32 {
        if self.sites == 0 {
            0
        } else {
            self.sites.trailing_zeros()
        }
    }

    /// End of the counters and the call-site table.
    const fn tables_end(&self) -> u32 {
        if self.sites == 0 {
            HEADER_SIZE + self.slots * SLOT_SIZE
        } else {
            self.sites_offset() + self.sites * SITE_SIZE
        }
    }

    /// Offset of the ring (0 when there is none).
    pub const fn ring_offset(&self) -> u32 {
        if self.ring == 0 { 0 } else { self.tables_end() }
    }

    /// Bytes the area needs.
    pub const fn bytes(&self) -> u32 {
        self.tables_end() + self.ring * EVENT_SIZE
    }

    /// KiB taken from conventional memory.
    pub const fn kib(&self) -> u32 {
        self.bytes().div_ceil(1024)
    }

    /// Offset of call `n`'s event count.
    pub const fn count_at(&self, n: u32) -> u32 {
        self.counters() + n * SLOT_SIZE
    }

    /// Offset of call `n`'s cycle total.
    pub const fn cycles_at(&self, n: u32) -> u32 {
        self.count_at(n) + 8
    }

    /// Offset of call-site slot `i`.
    pub const fn site_at(&self, i: u32) -> u32 {
        self.sites_offset() + i * SITE_SIZE
    }

    /// The slot where the lookup for `caller` starts (see [`site_hash`]).
    pub const fn first_slot(&self, caller: u32) -> u32 {
        site_hash(caller, self.site_bits())
    }
}

/// The first call-site slot tried for `caller` in a table of `2^bits` slots: the top `bits`
/// bits of `caller × HASH_MULTIPLIER` (0 when `bits` is 0). The ROM computes it as
/// `(caller × HASH_MULTIPLIER) >> (27 − bits) & ((2^bits − 1) << 5)`, the slot's byte offset.
pub const fn site_hash(caller: u32, bits: u32) -> u32 {
    if bits == 0 {
        0
    } else {
        caller.wrapping_mul(HASH_MULTIPLIER) >> (32 - bits)
    }
}

/// The check word over the header words that do not change at run time.
pub fn check_word(words: impl IntoIterator<Item = u32>) -> u32 {
    0xFFFF_FFFF ^ words.into_iter().fold(0u32, u32::wrapping_add)
}

/// Offsets of the words the check word covers.
pub const CHECKED: [u32; 14] = [
    off::VERSION,
    off::BUILD_ID,
    off::HEADER_SIZE,
    off::SLOTS,
    off::COUNTERS,
    off::SLOT_SIZE,
    off::RING,
    off::RING_ENTRIES,
    off::EVENT_SIZE,
    off::ROM_PHYS,
    off::SITES,
    off::SITE_SLOTS,
    off::PROBES,
    off::SITE_SIZE,
];

/// One call's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counter {
    /// Number of calls.
    pub count: u64,
    /// TSC cycles spent inside the call (Halt: idle time).
    pub cycles: u64,
}

/// One ring entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Call number.
    pub call: u32,
    /// Return address of the call (site + 5).
    pub caller: u32,
    /// TSC when the call started.
    pub start: u64,
    /// TSC cycles it took.
    pub cycles: u64,
}

/// One call site: the calls of one number made from one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Site {
    /// Call number.
    pub call: u32,
    /// The return address the caller pushed (the instruction after its `call`).
    pub caller: u32,
    /// Calls from there.
    pub count: u64,
    /// Their TSC cycles.
    pub cycles: u64,
}

/// A decoded area.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Area {
    /// Physical address of the area in the RAM image.
    pub phys: u32,
    /// Build id of the ROM that wrote it.
    pub build_id: u32,
    /// Physical address of that ROM.
    pub rom_phys: u32,
    /// Each call's totals (its sites plus its overflow), by call number.
    pub counters: Vec<Counter>,
    /// Each call's calls not attributed to a site (no table, no free slot, or no return
    /// address), by call number.
    pub overflow: Vec<Counter>,
    /// Call-site slots of the ROM's table (0: it has none).
    pub site_slots: u32,
    /// Slots claimed so far.
    pub site_slots_used: u32,
    /// Every call site counted, by call number then caller (slots of the same site merged).
    #[serde(skip)]
    pub sites: Vec<Site>,
    /// Ring entries in the order they were written (oldest first); empty without a ring.
    pub events: Vec<Event>,
    /// Events written in all (may exceed the ring size).
    pub events_total: u32,
}

/// Why a candidate area cannot be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AreaError {
    /// No `VMITRACE` magic at any 1 KiB boundary below 640 KiB.
    #[error(
        "no trace area: no \"VMITRACE\" signature at any 1 KiB boundary below 0xA0000 (RAM image of {len} bytes)"
    )]
    NotFound {
        /// Size of the RAM image.
        len: usize,
    },
    /// A header field has a value this layout version does not allow.
    #[error(
        "trace area at {phys:#x}: {field} at offset {offset:#x} is {value:#x}, expected {expected}"
    )]
    BadField {
        /// Area address.
        phys: u32,
        /// Field name.
        field: &'static str,
        /// Field offset in the header.
        offset: u32,
        /// Value found.
        value: u32,
        /// What it should be.
        expected: String,
    },
    /// The check word does not match: the header was overwritten.
    #[error(
        "trace area at {phys:#x}: check word {found:#010x} does not match the header ({expected:#010x}): damaged"
    )]
    BadCheck {
        /// Area address.
        phys: u32,
        /// Stored value.
        found: u32,
        /// Computed value.
        expected: u32,
    },
    /// The header is valid but the data is impossible for a trace ROM to have written.
    #[error("trace area at {phys:#x}: {what}: damaged or not written by a trace ROM")]
    Inconsistent {
        /// Area address.
        phys: u32,
        /// What is impossible.
        what: String,
    },
    /// The area runs past the end of the RAM image.
    #[error("trace area at {phys:#x} needs {need} bytes but the RAM image ends at {len:#x}")]
    Truncated {
        /// Area address.
        phys: u32,
        /// Bytes needed.
        need: u32,
        /// RAM image size.
        len: usize,
    },
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([
        *s.first()?,
        *s.get(1)?,
        *s.get(2)?,
        *s.get(3)?,
    ]))
}

fn qword(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(word(b, at)?) | u64::from(word(b, at + 4)?) << 32)
}

/// Reads and checks the header at `phys`: the layout it describes.
fn header(ram: &[u8], phys: usize) -> Result<Layout, AreaError> {
    let p = phys as u32;
    let get = |o: u32| word(ram, phys + o as usize);
    let need = |field: &'static str, o: u32, ok: &dyn Fn(u32) -> bool, expected: &str| {
        let value = get(o).ok_or(AreaError::Truncated {
            phys: p,
            need: HEADER_SIZE,
            len: ram.len(),
        })?;
        if ok(value) {
            Ok(value)
        } else {
            Err(AreaError::BadField {
                phys: p,
                field,
                offset: o,
                value,
                expected: expected.into(),
            })
        }
    };
    if ram.get(phys..phys + 8) != Some(&MAGIC[..]) {
        return Err(AreaError::NotFound { len: ram.len() });
    }
    if get(HEADER_SIZE - 4).is_none() {
        return Err(AreaError::Truncated {
            phys: p,
            need: HEADER_SIZE,
            len: ram.len(),
        });
    }
    let expected = check_word(CHECKED.iter().filter_map(|o| get(*o)));
    let found = get(off::CHECK).unwrap_or(0);
    if found != expected {
        return Err(AreaError::BadCheck {
            phys: p,
            found,
            expected,
        });
    }
    need("version", off::VERSION, &|v| v == VERSION, "2")?;
    need(
        "header size",
        off::HEADER_SIZE,
        &|v| v == HEADER_SIZE,
        "0x50",
    )?;
    let slots = need(
        "counter slots",
        off::SLOTS,
        &|v| (1..=256).contains(&v),
        "1..=256",
    )?;
    need(
        "counters offset",
        off::COUNTERS,
        &|v| v == HEADER_SIZE,
        "0x50",
    )?;
    need(
        "counter slot size",
        off::SLOT_SIZE,
        &|v| v == SLOT_SIZE,
        "16",
    )?;
    let ring = need(
        "ring entries",
        off::RING_ENTRIES,
        &|v| v == 0 || (v.is_power_of_two() && v <= 1 << 16),
        "0 or a power of two up to 65536",
    )?;
    let sites = need(
        "call-site slots",
        off::SITE_SLOTS,
        &|v| v == 0 || (v.is_power_of_two() && v <= MAX_SITES),
        &format!("0 or a power of two up to {MAX_SITES}"),
    )?;
    let layout = Layout { slots, ring, sites };
    let exact =
        |field: &'static str, o: u32, v: u32| need(field, o, &|x| x == v, &format!("{v:#x}"));
    exact("ring offset", off::RING, layout.ring_offset())?;
    need("event size", off::EVENT_SIZE, &|v| v == EVENT_SIZE, "32")?;
    exact("call-site table offset", off::SITES, layout.sites_offset())?;
    exact("probes", off::PROBES, layout.probes())?;
    exact("call-site slot size", off::SITE_SIZE, SITE_SIZE)?;
    let size = exact("area size", off::AREA_SIZE, layout.kib() * 1024)?;
    if phys + size as usize > ram.len() {
        return Err(AreaError::Truncated {
            phys: p,
            need: size,
            len: ram.len(),
        });
    }
    Ok(layout)
}

/// Decodes the area whose header starts at `phys` in `ram`.
pub fn decode(ram: &[u8], phys: usize) -> Result<Area, AreaError> {
    let layout = header(ram, phys)?;
    let p = phys as u32;
    let inconsistent = |what: String| AreaError::Inconsistent { phys: p, what };
    let overflow: Vec<Counter> = (0..layout.slots)
        .map(|n| Counter {
            count: qword(ram, phys + layout.count_at(n) as usize).unwrap_or(0),
            cycles: qword(ram, phys + layout.cycles_at(n) as usize).unwrap_or(0),
        })
        .collect();
    // A wrapper adds to the count before the cycles: cycles without a call never happen.
    if let Some(n) = overflow.iter().position(|c| c.count == 0 && c.cycles != 0) {
        return Err(inconsistent(format!(
            "call {n} has {} cycles but no calls (counter at offset {:#x})",
            overflow.get(n).map_or(0, |c| c.cycles),
            layout.count_at(n as u32)
        )));
    }
    let (sites, used) = site_table(ram, phys, &layout).map_err(inconsistent)?;
    let counters = totals(&overflow, &sites).map_err(inconsistent)?;
    let events_total = word(ram, phys + off::RING_NEXT as usize).unwrap_or(0);
    let events = ring(ram, phys, &layout, events_total).map_err(inconsistent)?;
    Ok(Area {
        phys: p,
        build_id: word(ram, phys + off::BUILD_ID as usize).unwrap_or(0),
        rom_phys: word(ram, phys + off::ROM_PHYS as usize).unwrap_or(0),
        counters,
        overflow,
        site_slots: layout.sites,
        site_slots_used: used,
        sites,
        events,
        events_total,
    })
}

/// Each call's total: its overflow plus its sites.
fn totals(overflow: &[Counter], sites: &[Site]) -> Result<Vec<Counter>, String> {
    let mut t = overflow.to_vec();
    for s in sites {
        let c = t.get_mut(s.call as usize).ok_or("a site names no call")?;
        c.count = c
            .count
            .checked_add(s.count)
            .ok_or_else(|| format!("call {}'s count overflows 64 bits", s.call))?;
        c.cycles = c
            .cycles
            .checked_add(s.cycles)
            .ok_or_else(|| format!("call {}'s cycles overflow 64 bits", s.call))?;
    }
    Ok(t)
}

/// What one call-site slot holds: `None` when free or being claimed.
fn site_slot(ram: &[u8], phys: usize, layout: &Layout, i: u32) -> Result<Option<Site>, String> {
    let o = layout.site_at(i);
    let at = phys + o as usize;
    let caller = word(ram, at + site_off::CALLER as usize).unwrap_or(0);
    let tag = word(ram, at + site_off::TAG as usize).unwrap_or(0);
    let count = qword(ram, at + site_off::COUNT as usize).unwrap_or(0);
    let cycles = qword(ram, at + site_off::CYCLES as usize).unwrap_or(0);
    let what = |why: String| Err(format!("call-site slot {i} (offset {o:#x}) {why}"));
    if caller == 0 {
        if tag != 0 || count != 0 || cycles != 0 {
            return what(format!(
                "is free (caller 0) but has tag {tag:#x}, count {count}, cycles {cycles}"
            ));
        }
        return Ok(None);
    }
    let home = layout.first_slot(caller);
    if i.wrapping_sub(home) % layout.sites >= layout.probes() {
        return what(format!(
            "holds caller {caller:#x}, whose lookup tries only the {} slots from slot {home} on",
            layout.probes()
        ));
    }
    if tag == 0 {
        if count != 0 || cycles != 0 {
            return what(format!(
                "has counts ({count} calls, {cycles} cycles) but no tag: a slot is counted only after it is tagged"
            ));
        }
        return Ok(None);
    }
    let call = tag.wrapping_sub(SITE_TAG);
    if tag < SITE_TAG || call >= layout.slots {
        return what(format!(
            "has tag {tag:#x}, expected {SITE_TAG:#x} + a call number below {}",
            layout.slots
        ));
    }
    if count == 0 && cycles != 0 {
        return what(format!("has {cycles} cycles but no calls"));
    }
    Ok(Some(Site {
        call,
        caller,
        count,
        cycles,
    }))
}

/// The call-site table's sites (slots of one site merged) and the number of claimed slots.
fn site_table(ram: &[u8], phys: usize, layout: &Layout) -> Result<(Vec<Site>, u32), String> {
    let mut merged: std::collections::BTreeMap<(u32, u32), Site> = Default::default();
    let mut used = 0;
    for i in 0..layout.sites {
        let at = phys + layout.site_at(i) as usize;
        if word(ram, at).unwrap_or(0) != 0 {
            used += 1;
        }
        let Some(s) = site_slot(ram, phys, layout, i)? else {
            continue;
        };
        let m = merged.entry((s.call, s.caller)).or_insert(Site {
            count: 0,
            cycles: 0,
            ..s
        });
        let sum = |a: u64, b: u64| {
            a.checked_add(b).ok_or_else(|| {
                format!(
                    "the slots of call {} from {:#x} add up to more than 64 bits",
                    s.call, s.caller
                )
            })
        };
        m.count = sum(m.count, s.count)?;
        m.cycles = sum(m.cycles, s.cycles)?;
    }
    Ok((merged.into_values().collect(), used))
}

/// The ring's entries, oldest first.
fn ring(ram: &[u8], phys: usize, layout: &Layout, total: u32) -> Result<Vec<Event>, String> {
    let n = layout.ring;
    let mut events = Vec::new();
    if n == 0 {
        return Ok(events);
    }
    for i in total.saturating_sub(n)..total {
        let at = phys + (layout.ring_offset() + (i % n) * EVENT_SIZE) as usize;
        let e = Event {
            call: word(ram, at).unwrap_or(0),
            caller: word(ram, at + 4).unwrap_or(0),
            start: qword(ram, at + 8).unwrap_or(0),
            cycles: qword(ram, at + 16).unwrap_or(0),
        };
        if e.call >= layout.slots {
            return Err(format!(
                "ring entry {} (offset {:#x}) names call {}, but there are {} counters",
                i % n,
                at - phys,
                e.call,
                layout.slots
            ));
        }
        events.push(e);
    }
    Ok(events)
}

/// The area a trace ROM with `layout`, at `rom_phys` with build id `build_id`, leaves after
/// the calls in `calls` (each added where the ROM adds it: to its site's slot — the first of
/// its probes that is free or already its own — or, for caller 0 or when every probe is taken,
/// to its call's overflow) and the ring events `events` (oldest first). An executable
/// description of the layout, for tests and tools that need an area without a guest.
pub fn encode(
    layout: &Layout,
    rom_phys: u32,
    build_id: u32,
    calls: &[Site],
    events: &[Event],
) -> Vec<u8> {
    let mut a = vec![0u8; layout.kib() as usize * 1024];
    let put = |a: &mut Vec<u8>, o: u32, v: &[u8]| {
        if let Some(d) = a.get_mut(o as usize..o as usize + v.len()) {
            d.copy_from_slice(v);
        }
    };
    for (o, v) in [
        (off::VERSION, VERSION),
        (off::BUILD_ID, build_id),
        (off::HEADER_SIZE, HEADER_SIZE),
        (off::SLOTS, layout.slots),
        (off::COUNTERS, layout.counters()),
        (off::SLOT_SIZE, SLOT_SIZE),
        (off::RING, layout.ring_offset()),
        (off::RING_ENTRIES, layout.ring),
        (off::EVENT_SIZE, EVENT_SIZE),
        (off::ROM_PHYS, rom_phys),
        (off::AREA_SIZE, layout.kib() * 1024),
        (off::SITES, layout.sites_offset()),
        (off::SITE_SLOTS, layout.sites),
        (off::PROBES, layout.probes()),
        (off::SITE_SIZE, SITE_SIZE),
    ] {
        put(&mut a, o, &v.to_le_bytes());
    }
    let check = check_word(CHECKED.iter().filter_map(|o| word(&a, *o as usize)));
    put(&mut a, off::CHECK, &check.to_le_bytes());
    put(&mut a, off::MAGIC, &MAGIC);
    for c in calls {
        let at = site_for(&mut a, layout, c).unwrap_or(layout.count_at(c.call) as usize);
        let add = |a: &mut Vec<u8>, o: usize, v: u64| {
            let sum = qword(a, o).unwrap_or(0).wrapping_add(v);
            put(a, o as u32, &sum.to_le_bytes());
        };
        add(&mut a, at, c.count);
        add(&mut a, at + 8, c.cycles);
    }
    for (i, e) in events.iter().enumerate() {
        let o = layout.ring_offset() + (i as u32 % layout.ring.max(1)) * EVENT_SIZE;
        put(&mut a, o, &e.call.to_le_bytes());
        put(&mut a, o + 4, &e.caller.to_le_bytes());
        put(&mut a, o + 8, &e.start.to_le_bytes());
        put(&mut a, o + 16, &e.cycles.to_le_bytes());
    }
    if layout.ring > 0 {
        put(&mut a, off::RING_NEXT, &(events.len() as u32).to_le_bytes());
    }
    a
}

/// Where the ROM counts `c`'s calls in the table (claiming a slot if needed): the offset of
/// the slot's count, or `None` for overflow.
fn site_for(a: &mut [u8], layout: &Layout, c: &Site) -> Option<usize> {
    if layout.sites == 0 || c.caller == 0 {
        return None;
    }
    let tag = SITE_TAG + c.call;
    let home = layout.first_slot(c.caller);
    for k in 0..layout.probes() {
        let o = layout.site_at((home + k) % layout.sites) as usize;
        let caller = word(a, o)?;
        if caller == 0 {
            a.get_mut(o..o + 4)?
                .copy_from_slice(&c.caller.to_le_bytes());
            a.get_mut(o + 4..o + 8)?.copy_from_slice(&tag.to_le_bytes());
        }
        if word(a, o)? == c.caller && word(a, o + 4)? == tag {
            return Some(o + site_off::COUNT as usize);
        }
    }
    None
}

/// Finds and decodes the trace area in a guest-RAM image (`ram[0]` = physical address 0). The
/// highest candidate with a valid header wins; if there are candidates but none is valid, the
/// first one's error is returned.
pub fn find(ram: &[u8]) -> Result<Area, AreaError> {
    let end = ram.len().min(CONVENTIONAL_END);
    let mut first_err = None;
    for phys in (0..end).step_by(ALIGN).rev() {
        if ram.get(phys..phys + 8) != Some(&MAGIC[..]) {
            continue;
        }
        match decode(ram, phys) {
            Ok(a) => return Ok(a),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(AreaError::NotFound { len: ram.len() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(a: &mut [u8], o: u32, v: u32) {
        a[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put64(a: &mut [u8], o: u32, v: u64) {
        a[o as usize..o as usize + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// An area as the 16-bit init writes it.
    pub(crate) fn sample(layout: Layout, rom_phys: u32, build_id: u32) -> Vec<u8> {
        encode(&layout, rom_phys, build_id, &[], &[])
    }

    /// Writes call-site slot `i` as a trace ROM would.
    fn put_site(a: &mut [u8], l: &Layout, i: u32, caller: u32, tag: u32, count: u64, cycles: u64) {
        let o = l.site_at(i);
        put(a, o + site_off::CALLER, caller);
        put(a, o + site_off::TAG, tag);
        put64(a, o + site_off::COUNT, count);
        put64(a, o + site_off::CYCLES, cycles);
    }

    const NO_SITES: Layout = Layout {
        slots: 74,
        ring: 4,
        sites: 0,
    };

    #[test]
    fn finds_and_decodes_an_area_and_rejects_damage() {
        let layout = NO_SITES;
        let mut ram = vec![0u8; 0xA_0000];
        let phys = 0x9_D000;
        let area = sample(layout, 0xC_0000, 0x1234_5678);
        ram[phys..phys + area.len()].copy_from_slice(&area);
        let count17 = phys + layout.count_at(17) as usize;
        ram[count17..count17 + 8].copy_from_slice(&5u64.to_le_bytes());
        ram[count17 + 8..count17 + 16].copy_from_slice(&500u64.to_le_bytes());
        let a = find(&ram).unwrap();
        assert_eq!(
            (a.phys, a.build_id, a.rom_phys),
            (phys as u32, 0x1234_5678, 0xC_0000)
        );
        let five = Counter {
            count: 5,
            cycles: 500,
        };
        assert_eq!((a.counters[17], a.overflow[17]), (five, five));
        assert_eq!(a.counters.len(), 74);
        assert_eq!((a.site_slots, a.site_slots_used, a.sites.len()), (0, 0, 0));
        // Damage: a changed header word.
        ram[phys + off::SLOTS as usize] = 75;
        assert!(matches!(find(&ram), Err(AreaError::BadCheck { .. })));
        // A consistent header with a value this version does not allow.
        let bad = sample(
            Layout {
                slots: 300,
                ring: 0,
                sites: 0,
            },
            0xC_0000,
            1,
        );
        assert!(matches!(
            decode(&bad, 0),
            Err(AreaError::BadField {
                field: "counter slots",
                value: 300,
                ..
            })
        ));
        let bad = sample(
            Layout {
                slots: 74,
                ring: 0,
                sites: 12,
            },
            0xC_0000,
            1,
        );
        assert_eq!(
            decode(&bad, 0).unwrap_err().to_string(),
            "trace area at 0x0: call-site slots at offset 0x44 is 0xc, expected 0 or a power \
             of two up to 1024"
        );
        assert!(matches!(
            find(&[0u8; 4096]),
            Err(AreaError::NotFound { .. })
        ));
    }

    #[test]
    fn impossible_data_is_an_error_not_numbers() {
        let layout = NO_SITES;
        let mut ram = sample(layout, 0xC_0000, 1);
        put64(&mut ram, layout.cycles_at(20), 99);
        let e = decode(&ram, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "trace area at 0x0: call 20 has 99 cycles but no calls (counter at offset 0x190): \
             damaged or not written by a trace ROM"
        );
        let mut ram = sample(layout, 0xC_0000, 1);
        put(&mut ram, layout.ring_offset() + EVENT_SIZE, 74);
        put(&mut ram, off::RING_NEXT, 2);
        let e = decode(&ram, 0).unwrap_err().to_string();
        assert!(
            e.contains("ring entry 1 (offset 0x510) names call 74"),
            "{e}"
        );
    }

    #[test]
    fn every_single_byte_change_to_the_header_is_caught_or_harmless() {
        for layout in [
            NO_SITES,
            Layout {
                slots: 74,
                ring: 4,
                sites: 16,
            },
        ] {
            let good = sample(layout, 0xC_0000, 0xABCD);
            let want = decode(&good, 0).unwrap();
            for at in 0..HEADER_SIZE as usize {
                for v in 0..=255u8 {
                    if good[at] == v {
                        continue;
                    }
                    let mut ram = good.clone();
                    ram[at] = v;
                    let o = at as u32 & !3;
                    match decode(&ram, 0) {
                        // Only the run-time ring index and the reserved word may change freely.
                        Ok(a) => {
                            assert!(o == off::RING_NEXT || o == 0x3C, "byte {at:#x} = {v:#x}");
                            assert_eq!(
                                (a.build_id, a.rom_phys, &a.counters),
                                (want.build_id, want.rom_phys, &want.counters)
                            );
                        }
                        Err(AreaError::NotFound { .. }) => assert!(at < 8),
                        Err(_) => assert!(o != 0x3C),
                    }
                }
            }
            // Truncated images at every length: an error, never a panic.
            for len in 0..good.len() {
                assert!(decode(&good[..len], 0).is_err());
            }
        }
    }

    #[test]
    fn ring_is_read_oldest_first_after_wrapping() {
        let layout = NO_SITES;
        let mut ram = sample(layout, 0xC_0000, 1);
        for i in 0..6u32 {
            put(&mut ram, layout.ring_offset() + (i % 4) * EVENT_SIZE, i);
        }
        put(&mut ram, off::RING_NEXT, 6);
        let a = decode(&ram, 0).unwrap();
        assert_eq!(
            a.events.iter().map(|e| e.call).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(a.events_total, 6);
    }

    #[test]
    fn the_hash_is_the_one_the_rom_computes() {
        for bits in 0..=MAX_SITES.trailing_zeros() {
            let mask = ((1u32 << bits) - 1) << 5;
            for caller in [1u32, 0xC010_2345, 0xFFFF_FFFF, 0x0011_0005, 12345] {
                let rom = (caller.wrapping_mul(HASH_MULTIPLIER) >> (27 - bits)) & mask;
                assert_eq!(rom, site_hash(caller, bits) << 5, "bits {bits}");
            }
        }
        let l = Layout {
            slots: 74,
            ring: 0,
            sites: 1024,
        };
        assert_eq!(
            (l.sites_offset(), l.probes(), l.site_bits()),
            (0x500, 8, 10)
        );
        assert_eq!(l.kib(), 34);
        let one = Layout { sites: 1, ..l };
        assert_eq!((one.probes(), one.first_slot(0xC000_0000)), (1, 0));
    }

    /// A table of 16 slots with sites of calls 19 and 35, one of them split over two slots,
    /// a slot being claimed, and overflow.
    fn with_sites() -> (Layout, Vec<u8>) {
        let l = Layout {
            slots: 74,
            ring: 0,
            sites: 16,
        };
        let mut ram = sample(l, 0xC_0000, 1);
        let (a, b) = (0xC010_0005, 0xC030_0005);
        let (ha, hb) = (l.first_slot(a), l.first_slot(b));
        put_site(&mut ram, &l, ha, a, SITE_TAG + 19, 10, 1000);
        put_site(&mut ram, &l, (ha + 1) % 16, a, SITE_TAG + 19, 2, 200);
        put_site(&mut ram, &l, (ha + 2) % 16, a, SITE_TAG + 35, 1, 7);
        put_site(&mut ram, &l, (ha + 3) % 16, a, 0, 0, 0);
        put_site(&mut ram, &l, (hb + 4) % 16, b, SITE_TAG + 35, 3, 30);
        put64(&mut ram, l.count_at(19), 5);
        put64(&mut ram, l.cycles_at(19), 50);
        (l, ram)
    }

    #[test]
    fn sites_are_merged_and_added_to_their_calls_totals() {
        let (l, ram) = with_sites();
        let a = decode(&ram, 0).unwrap();
        let site = |call, caller, count, cycles| Site {
            call,
            caller,
            count,
            cycles,
        };
        assert_eq!(
            a.sites,
            [
                site(19, 0xC010_0005, 12, 1200),
                site(35, 0xC010_0005, 1, 7),
                site(35, 0xC030_0005, 3, 30)
            ]
        );
        assert_eq!((a.site_slots, a.site_slots_used), (16, 5));
        let c = |count, cycles| Counter { count, cycles };
        assert_eq!((a.counters[19], a.overflow[19]), (c(17, 1250), c(5, 50)));
        assert_eq!((a.counters[35], a.overflow[35]), (c(4, 37), c(0, 0)));
        // Per call: sites + overflow = total.
        for n in 0..74u32 {
            let s: u64 = a
                .sites
                .iter()
                .filter(|s| s.call == n)
                .map(|s| s.count)
                .sum();
            assert_eq!(
                s + a.overflow[n as usize].count,
                a.counters[n as usize].count
            );
        }
        assert_eq!(l.sites_offset(), 0x500);
    }

    #[test]
    fn impossible_call_site_slots_are_named_with_their_offset() {
        let (l, good) = with_sites();
        let a = 0xC010_0005;
        let ha = l.first_slot(a);
        let free = (0..16).find(|i| good[l.site_at(*i) as usize] == 0).unwrap();
        let cases: Vec<(u32, u32, u32, u64, u64, &str)> = vec![
            (
                free,
                0,
                SITE_TAG + 1,
                0,
                0,
                "is free (caller 0) but has tag 0x53540001",
            ),
            (
                free,
                0,
                0,
                1,
                0,
                "is free (caller 0) but has tag 0x0, count 1",
            ),
            (
                (ha + 3) % 16,
                a,
                0,
                1,
                9,
                "has counts (1 calls, 9 cycles) but no tag",
            ),
            (
                ha,
                a,
                SITE_TAG + 74,
                1,
                1,
                "has tag 0x5354004a, expected 0x53540000 + a call number below 74",
            ),
            (ha, a, 19, 1, 1, "has tag 0x13"),
            (ha, a, SITE_TAG + 19, 0, 5, "has 5 cycles but no calls"),
            (
                (ha + 8) % 16,
                a,
                SITE_TAG + 19,
                1,
                5,
                "whose lookup tries only the 8 slots from slot",
            ),
        ];
        for (i, caller, tag, count, cycles, want) in cases {
            let mut ram = good.clone();
            put_site(&mut ram, &l, i, caller, tag, count, cycles);
            let e = decode(&ram, 0).unwrap_err().to_string();
            let at = format!("call-site slot {i} (offset {:#x}) ", l.site_at(i));
            assert!(e.contains(&at) && e.contains(want), "{e}\nwant: {at}{want}");
        }
    }

    #[test]
    fn damaged_areas_with_sites_decode_consistently_or_not_at_all() {
        let (_, good) = with_sites();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..20_000 {
            let mut ram = good.clone();
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() % ram.len() as u64) as usize;
                ram[at] = rnd() as u8;
            }
            let Ok(a) = decode(&ram, 0) else {
                bad += 1;
                continue;
            };
            ok += 1;
            for (n, total) in a.counters.iter().enumerate() {
                let mine = a.sites.iter().filter(|s| s.call as usize == n);
                let count: u64 = mine.clone().map(|s| s.count).sum();
                assert_eq!(count + a.overflow[n].count, total.count);
                assert!(total.count > 0 || total.cycles == 0);
            }
            assert!(a.sites.len() <= a.site_slots_used as usize);
        }
        assert!(ok > 0 && bad > 0, "{ok} decoded, {bad} refused");
    }

    #[test]
    fn what_encode_writes_decodes_to_the_same_calls() {
        let l = Layout {
            slots: 74,
            ring: 4,
            sites: 4,
        };
        let site = |call, caller, count, cycles| Site {
            call,
            caller,
            count,
            cycles,
        };
        // Six sites for four slots (all homed within reach): two overflow, as do caller-0 calls.
        let calls: Vec<Site> = (0..6)
            .map(|i| site(19 + i % 2, 0xC010_0005 + 0x40 * i, 10 + u64::from(i), 7))
            .chain([site(33, 0, 3, 0)])
            .collect();
        let ev = |call| Event {
            call,
            caller: 0xC010_0005,
            start: u64::from(call) * 100,
            cycles: 9,
        };
        let events: Vec<Event> = (0..6).map(ev).collect();
        let a = decode(&encode(&l, 0xC_8000, 5, &calls, &events), 0).unwrap();
        assert_eq!(
            (a.rom_phys, a.build_id, a.site_slots_used),
            (0xC_8000, 5, 4)
        );
        assert_eq!(a.sites.len(), 4);
        for s in &a.sites {
            assert!(calls.contains(s), "{s:?}");
        }
        for n in [19u32, 20, 33] {
            let want: u64 = calls.iter().filter(|c| c.call == n).map(|c| c.count).sum();
            assert_eq!(a.counters[n as usize].count, want);
        }
        let overflow: u64 = a.overflow.iter().map(|c| c.count).sum();
        assert_eq!(
            overflow,
            calls.iter().map(|c| c.count).sum::<u64>()
                - a.sites.iter().map(|s| s.count).sum::<u64>()
        );
        assert_eq!(a.overflow[33].count, 3);
        assert_eq!(a.events, events[2..]);
        assert_eq!(a.events_total, 6);
    }
}
