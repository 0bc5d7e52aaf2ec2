//! The trace area: where a trace ROM keeps its counters, and how a host finds and decodes it in
//! a raw guest-RAM image.
//!
//! The 16-bit init of a trace ROM takes [`Area::kib`] KiB from the top of conventional memory by
//! lowering the BIOS data area's base-memory size (the word at 0x413, in KiB) — the classic way
//! an option ROM gets private RAM. Linux reserves `[min(BDA size, EBDA), 1 MiB)` and never uses
//! it, SeaBIOS's e820 map reports it as reserved, so neither the firmware nor the guest kernel
//! touches it afterwards. The init zeroes it, writes this header, and records the area's
//! position relative to the ROM inside the ROM image (still writable during POST; a byte next to
//! it keeps the image's checksum zero), so the 32-bit calls find it through the kernel's linear
//! map without knowing `PAGE_OFFSET`.
//!
//! Header (little-endian, at the area's start, 1 KiB aligned):
//!
//! | Off | Size | Field |
//! |---|---|---|
//! | 0x00 | 8 | magic `"VMITRACE"` |
//! | 0x08 | 4 | layout version (1) |
//! | 0x0C | 4 | build id of the ROM that wrote it (its manifest's) |
//! | 0x10 | 4 | header size (0x40) |
//! | 0x14 | 4 | number of counter slots (one per call number, 74) |
//! | 0x18 | 4 | offset of the counters |
//! | 0x1C | 4 | counter slot size (16: u64 count, u64 cycles) |
//! | 0x20 | 4 | offset of the event ring (0 = no ring) |
//! | 0x24 | 4 | ring entries (a power of two) |
//! | 0x28 | 4 | ring entry size (32) |
//! | 0x2C | 4 | ring next index (incremented atomically; entry = index mod entries) |
//! | 0x30 | 4 | physical address of the ROM that wrote it |
//! | 0x34 | 4 | area size in bytes |
//! | 0x38 | 4 | check word: `0xFFFFFFFF ^` the sum of the u32 words 0x08–0x28 and 0x30–0x34 |
//! | 0x3C | 4 | reserved |
//!
//! Ring entry (32 bytes): u32 call, u32 caller EIP (the return address: call site + 5), u64
//! start TSC, u64 duration in TSC cycles, 8 reserved bytes. IRET and SYSEXIT do not return:
//! they are counted (and logged) with zero cycles.

use thiserror::Error;

/// `"VMITRACE"`.
pub const MAGIC: [u8; 8] = *b"VMITRACE";
/// Layout version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Header size.
pub const HEADER_SIZE: u32 = 0x40;
/// Size of one counter slot.
pub const SLOT_SIZE: u32 = 16;
/// Size of one ring entry.
pub const EVENT_SIZE: u32 = 32;
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
}

/// The layout a trace ROM uses (fixed at build time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Counter slots (one per call number).
    pub slots: u32,
    /// Ring entries (0 = no ring; otherwise a power of two).
    pub ring: u32,
}

impl Layout {
    /// Offset of the counters.
    pub const fn counters(&self) -> u32 {
        HEADER_SIZE
    }

    /// Offset of the ring (0 when there is none).
    pub const fn ring_offset(&self) -> u32 {
        if self.ring == 0 {
            0
        } else {
            HEADER_SIZE + self.slots * SLOT_SIZE
        }
    }

    /// Bytes the area needs.
    pub const fn bytes(&self) -> u32 {
        HEADER_SIZE + self.slots * SLOT_SIZE + self.ring * EVENT_SIZE
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
}

/// The check word over the header words that do not change at run time.
pub fn check_word(words: impl IntoIterator<Item = u32>) -> u32 {
    0xFFFF_FFFF ^ words.into_iter().fold(0u32, u32::wrapping_add)
}

/// Offsets of the words the check word covers.
pub const CHECKED: [u32; 10] = [
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

/// A decoded area.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Area {
    /// Physical address of the area in the RAM image.
    pub phys: u32,
    /// Build id of the ROM that wrote it.
    pub build_id: u32,
    /// Physical address of that ROM.
    pub rom_phys: u32,
    /// Counters, by call number.
    pub counters: Vec<Counter>,
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

/// Decodes the area whose header starts at `phys` in `ram`.
pub fn decode(ram: &[u8], phys: usize) -> Result<Area, AreaError> {
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
    let expected = check_word(CHECKED.iter().filter_map(|o| get(*o)));
    let found = get(off::CHECK).unwrap_or(0);
    if found != expected {
        return Err(AreaError::BadCheck {
            phys: p,
            found,
            expected,
        });
    }
    need("version", off::VERSION, &|v| v == VERSION, "1")?;
    need(
        "header size",
        off::HEADER_SIZE,
        &|v| v == HEADER_SIZE,
        "0x40",
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
        "0x40",
    )?;
    need(
        "counter slot size",
        off::SLOT_SIZE,
        &|v| v == SLOT_SIZE,
        "16",
    )?;
    let ring_n = need(
        "ring entries",
        off::RING_ENTRIES,
        &|v| v == 0 || (v.is_power_of_two() && v <= 1 << 16),
        "0 or a power of two up to 65536",
    )?;
    let layout = Layout {
        slots,
        ring: ring_n,
    };
    need(
        "ring offset",
        off::RING,
        &|v| v == layout.ring_offset(),
        &format!("{:#x}", layout.ring_offset()),
    )?;
    need("event size", off::EVENT_SIZE, &|v| v == EVENT_SIZE, "32")?;
    let size = need(
        "area size",
        off::AREA_SIZE,
        &|v| v == layout.kib() * 1024,
        &format!("{:#x}", layout.kib() * 1024),
    )?;
    if phys + size as usize > ram.len() {
        return Err(AreaError::Truncated {
            phys: p,
            need: size,
            len: ram.len(),
        });
    }
    let counters: Vec<Counter> = (0..slots)
        .map(|n| Counter {
            count: qword(ram, phys + layout.count_at(n) as usize).unwrap_or(0),
            cycles: qword(ram, phys + layout.cycles_at(n) as usize).unwrap_or(0),
        })
        .collect();
    let inconsistent = |what: String| Err(AreaError::Inconsistent { phys: p, what });
    // A wrapper adds to the count before the cycles: cycles without a call never happen.
    if let Some(n) = counters.iter().position(|c| c.count == 0 && c.cycles != 0) {
        return inconsistent(format!(
            "call {n} has {} cycles but no calls (counter at offset {:#x})",
            counters.get(n).map_or(0, |c| c.cycles),
            layout.count_at(n as u32)
        ));
    }
    let events_total = get(off::RING_NEXT).unwrap_or(0);
    let mut events = Vec::new();
    if ring_n > 0 {
        let first = events_total.saturating_sub(ring_n);
        for i in first..events_total {
            let at = phys + (layout.ring_offset() + (i % ring_n) * EVENT_SIZE) as usize;
            let e = Event {
                call: word(ram, at).unwrap_or(0),
                caller: word(ram, at + 4).unwrap_or(0),
                start: qword(ram, at + 8).unwrap_or(0),
                cycles: qword(ram, at + 16).unwrap_or(0),
            };
            if e.call >= slots {
                return inconsistent(format!(
                    "ring entry {} (offset {:#x}) names call {}, but there are {slots} counters",
                    i % ring_n,
                    at - phys,
                    e.call
                ));
            }
            events.push(e);
        }
    }
    Ok(Area {
        phys: p,
        build_id: get(off::BUILD_ID).unwrap_or(0),
        rom_phys: get(off::ROM_PHYS).unwrap_or(0),
        counters,
        events,
        events_total,
    })
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

    /// An area as the 16-bit init writes it, with some counts.
    pub(crate) fn sample(layout: Layout, rom_phys: u32, build_id: u32) -> Vec<u8> {
        let mut a = vec![0u8; layout.kib() as usize * 1024];
        let mut put =
            |o: u32, v: u32| a[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
        put(off::VERSION, VERSION);
        put(off::BUILD_ID, build_id);
        put(off::HEADER_SIZE, HEADER_SIZE);
        put(off::SLOTS, layout.slots);
        put(off::COUNTERS, layout.counters());
        put(off::SLOT_SIZE, SLOT_SIZE);
        put(off::RING, layout.ring_offset());
        put(off::RING_ENTRIES, layout.ring);
        put(off::EVENT_SIZE, EVENT_SIZE);
        put(off::ROM_PHYS, rom_phys);
        put(off::AREA_SIZE, layout.kib() * 1024);
        let words: Vec<u32> = CHECKED
            .iter()
            .map(|o| u32::from_le_bytes(a[*o as usize..*o as usize + 4].try_into().unwrap()))
            .collect();
        let c = check_word(words);
        a[off::CHECK as usize..off::CHECK as usize + 4].copy_from_slice(&c.to_le_bytes());
        a[..8].copy_from_slice(&MAGIC);
        a
    }

    #[test]
    fn finds_and_decodes_an_area_and_rejects_damage() {
        let layout = Layout { slots: 74, ring: 4 };
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
        assert_eq!(
            a.counters[17],
            Counter {
                count: 5,
                cycles: 500
            }
        );
        assert_eq!(a.counters.len(), 74);
        // Damage: a changed header word.
        ram[phys + off::SLOTS as usize] = 75;
        assert!(matches!(find(&ram), Err(AreaError::BadCheck { .. })));
        // A consistent header with a value this version does not allow.
        let bad = sample(
            Layout {
                slots: 300,
                ring: 0,
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
        assert!(matches!(
            find(&[0u8; 4096]),
            Err(AreaError::NotFound { .. })
        ));
    }

    #[test]
    fn impossible_data_is_an_error_not_numbers() {
        let layout = Layout { slots: 74, ring: 4 };
        let mut ram = sample(layout, 0xC_0000, 1);
        let c = layout.cycles_at(20) as usize;
        ram[c..c + 8].copy_from_slice(&99u64.to_le_bytes());
        let e = decode(&ram, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "trace area at 0x0: call 20 has 99 cycles but no calls (counter at offset 0x180): \
             damaged or not written by a trace ROM"
        );
        let mut ram = sample(layout, 0xC_0000, 1);
        let at = (layout.ring_offset() + EVENT_SIZE) as usize;
        ram[at..at + 4].copy_from_slice(&74u32.to_le_bytes());
        let n = off::RING_NEXT as usize;
        ram[n..n + 4].copy_from_slice(&2u32.to_le_bytes());
        let e = decode(&ram, 0).unwrap_err().to_string();
        assert!(
            e.contains("ring entry 1 (offset 0x500) names call 74"),
            "{e}"
        );
    }

    #[test]
    fn every_single_byte_change_to_the_header_is_caught_or_harmless() {
        let layout = Layout { slots: 74, ring: 4 };
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

    #[test]
    fn ring_is_read_oldest_first_after_wrapping() {
        let layout = Layout { slots: 74, ring: 4 };
        let mut ram = sample(layout, 0xC_0000, 1);
        for i in 0..6u32 {
            let at = (layout.ring_offset() + (i % 4) * EVENT_SIZE) as usize;
            ram[at..at + 4].copy_from_slice(&i.to_le_bytes());
        }
        let n = off::RING_NEXT as usize;
        ram[n..n + 4].copy_from_slice(&6u32.to_le_bytes());
        let a = decode(&ram, 0).unwrap();
        assert_eq!(
            a.events.iter().map(|e| e.call).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(a.events_total, 6);
    }
}
