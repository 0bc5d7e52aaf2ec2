//! Counting the KVM runner's VM exits: by kind (port I/O by port and direction, MMIO, `hlt`,
//! anything else), by where the exiting instruction lay (inside the ROM's slot or not), and
//! by when — relative to the bytes the guest had written to its record channel, so that a
//! host that decodes the stream can give each exit to the step (or call vector) that caused
//! it ([`ExitSegment`]).
//!
//! Only exits to user space are seen: whatever KVM handles in the kernel (CPUID, `rdmsr` and
//! `wrmsr` of the MSRs it implements — kvmclock's among them —, `rdtsc`, faults, and on real
//! hardware every exit KVM completes by itself) never returns from `KVM_RUN` and is not
//! counted. With the in-kernel irqchip ([`super::KvmConfig::irqchip`]) that includes every
//! access to the local APIC's page at `0xFEE00000` (an EOI, a TPR or LVTT write, a register
//! read), to the IOAPIC's at `0xFEC00000`, and port I/O to the 8259A PICs (0x20, 0x21, 0xA0,
//! 0xA1) and their ELCR (0x4D0, 0x4D1): none of it is counted. A `hlt` does not exit either;
//! the runner counts the one that ends a run (nothing can wake it) as one `hlt` exit, as it
//! would be without the irqchip. Port I/O to a port no in-kernel device claims always
//! reaches user space, and that is the cost a ROM can avoid (Linux's `out 0x80` delay).

use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::ops::AddAssign;

/// Exits per port, serialised as a JSON object keyed by the port in hex (`{"0x80": 1}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortCounts(pub BTreeMap<u16, u64>);

impl PortCounts {
    /// Exits on `port` (0 when there were none).
    pub fn get(&self, port: u16) -> u64 {
        self.0.get(&port).copied().unwrap_or(0)
    }
}

impl Serialize for PortCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(p, n)| (format!("{p:#x}"), *n)))
    }
}

/// What one exit was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// `out` (or `outs`) to this port.
    Out(u16),
    /// `in` (or `ins`) from this port.
    In(u16),
    /// A read of guest-physical memory no slot backs (or the ROM slot read-only: reads never
    /// exit there).
    MmioRead,
    /// A write to the read-only ROM slot or to memory no slot backs.
    MmioWrite,
    /// `hlt`.
    Hlt,
    /// Anything else (shutdown, internal error, entry failure, an exit the runner does not
    /// model).
    Other,
}

/// VM exits by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitCounts {
    /// Every exit counted here.
    pub total: u64,
    /// Port-I/O exits (both directions, every port).
    pub io: u64,
    /// `out` exits per port.
    pub io_out: PortCounts,
    /// `in` exits per port.
    pub io_in: PortCounts,
    /// MMIO reads (unbacked memory).
    pub mmio_read: u64,
    /// MMIO writes (the read-only ROM, unbacked memory).
    pub mmio_write: u64,
    /// `hlt` exits.
    pub hlt: u64,
    /// Other exits.
    pub other: u64,
}

impl ExitCounts {
    /// Counts one exit.
    pub fn add(&mut self, kind: ExitKind) {
        self.total += 1;
        match kind {
            ExitKind::Out(p) => {
                self.io += 1;
                *self.io_out.0.entry(p).or_default() += 1;
            }
            ExitKind::In(p) => {
                self.io += 1;
                *self.io_in.0.entry(p).or_default() += 1;
            }
            ExitKind::MmioRead => self.mmio_read += 1,
            ExitKind::MmioWrite => self.mmio_write += 1,
            ExitKind::Hlt => self.hlt += 1,
            ExitKind::Other => self.other += 1,
        }
    }

    /// `out` exits on `port`.
    pub fn outs(&self, port: u16) -> u64 {
        self.io_out.get(port)
    }

    /// `in` exits on `port`.
    pub fn ins(&self, port: u16) -> u64 {
        self.io_in.get(port)
    }

    /// No exit was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl AddAssign<&ExitCounts> for ExitCounts {
    fn add_assign(&mut self, o: &ExitCounts) {
        self.total += o.total;
        self.io += o.io;
        for (mine, theirs) in [(&mut self.io_out, &o.io_out), (&mut self.io_in, &o.io_in)] {
            for (p, n) in &theirs.0 {
                *mine.0.entry(*p).or_default() += n;
            }
        }
        self.mmio_read += o.mmio_read;
        self.mmio_write += o.mmio_write;
        self.hlt += o.hlt;
        self.other += o.other;
    }
}

/// The exits between two writes to the record channel (the debug console), split by where
/// the exiting instruction lay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitSegment {
    /// Debug-console bytes written before the channel write that ended the segment (every
    /// exit here happened before byte `at` and after the previous channel write); the last
    /// segment of a run ends at the run's end, `at` = every byte written.
    pub at: u64,
    /// Exits raised by instructions inside the ROM's slot.
    pub rom: ExitCounts,
    /// Exits raised by any other instruction (the guest's own).
    pub guest: ExitCounts,
}

/// Every exit of a run after the ROM's 16-bit init, three ways.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitLog {
    /// All of them, the record channel's own exits (port 0xE9, the exit port) included.
    pub all: ExitCounts,
    /// Those raised by instructions inside the ROM's slot.
    pub rom: ExitCounts,
    /// All but the record channel's, in segments between channel writes (empty segments are
    /// left out).
    pub segments: Vec<ExitSegment>,
    /// The segment being counted.
    current: ExitSegment,
}

impl ExitLog {
    /// Counts an exit of the record channel itself (a debug-console write, the exit port):
    /// `written` debug-console bytes came before it. A debug-console write ends the current
    /// segment.
    pub fn channel(&mut self, kind: ExitKind, written: u64, ends_segment: bool) {
        self.all.add(kind);
        if ends_segment {
            self.close(written);
        }
    }

    /// Counts any other exit; `in_rom`: its instruction lay inside the ROM's slot.
    pub fn exit(&mut self, kind: ExitKind, in_rom: bool) {
        self.all.add(kind);
        if in_rom {
            self.rom.add(kind);
            self.current.rom.add(kind);
        } else {
            self.current.guest.add(kind);
        }
    }

    /// Ends the current segment at `written` bytes (kept only if it counted anything).
    pub fn close(&mut self, written: u64) {
        let seg = std::mem::take(&mut self.current);
        if !seg.rom.is_empty() || !seg.guest.is_empty() {
            self.segments.push(ExitSegment { at: written, ..seg });
        }
    }

    /// The exits of the segments that ended in `(after, upto]` bytes, summed: (ROM, guest).
    pub fn between(&self, after: u64, upto: u64) -> (ExitCounts, ExitCounts) {
        let mut rom = ExitCounts::default();
        let mut guest = ExitCounts::default();
        for s in self
            .segments
            .iter()
            .filter(|s| s.at > after && s.at <= upto)
        {
            rom += &s.rom;
            guest += &s.guest;
        }
        (rom, guest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_port_and_serialises_ports_in_hex() {
        let mut c = ExitCounts::default();
        for k in [
            ExitKind::Out(0x80),
            ExitKind::Out(0x80),
            ExitKind::In(0x61),
            ExitKind::Out(0x402),
            ExitKind::MmioWrite,
            ExitKind::Hlt,
        ] {
            c.add(k);
        }
        assert_eq!((c.total, c.io, c.outs(0x80), c.ins(0x61)), (6, 4, 2, 1));
        assert_eq!((c.outs(0x61), c.mmio_write, c.hlt, c.other), (0, 1, 1, 0));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"total":6,"io":4,"io_out":{"0x80":2,"0x402":1},"io_in":{"0x61":1},"mmio_read":0,"mmio_write":1,"hlt":1,"other":0}"#
        );
        let mut sum = c.clone();
        sum += &c;
        assert_eq!((sum.total, sum.outs(0x80), sum.ins(0x61)), (12, 4, 2));
    }

    #[test]
    fn segments_split_at_channel_writes() {
        let mut log = ExitLog::default();
        log.exit(ExitKind::Out(0x21), false); // before the first record
        log.channel(ExitKind::Out(0xE9), 0, true);
        log.channel(ExitKind::Out(0xE9), 8, true); // nothing in between: no segment
        log.exit(ExitKind::Out(0x80), true);
        log.exit(ExitKind::In(0x42), false);
        log.channel(ExitKind::Out(0xE9), 20, true);
        log.exit(ExitKind::Out(0x80), true);
        log.channel(ExitKind::Out(0xF4), 40, false);
        log.close(40);
        assert_eq!(log.all.total, 8);
        assert_eq!(log.all.outs(0xE9), 3);
        assert_eq!(log.rom.outs(0x80), 2);
        let at: Vec<u64> = log.segments.iter().map(|s| s.at).collect();
        assert_eq!(at, [0, 20, 40]);
        let (rom, guest) = log.between(8, 20);
        assert_eq!((rom.outs(0x80), guest.ins(0x42), rom.total), (1, 1, 1));
        let (rom, guest) = log.between(0, 40);
        assert_eq!((rom.outs(0x80), guest.total), (2, 1));
        let (rom, guest) = log.between(40, u64::MAX);
        assert!(rom.is_empty() && guest.is_empty());
    }
}
