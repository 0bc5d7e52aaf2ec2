//! The few legacy devices the KVM runner answers on: the 8254 PIT's counters (ports
//! 0x40–0x43), system control port B (0x61), the CMOS real-time clock (0x70/0x71) and an
//! ACPI PM timer (0x608).
//!
//! They exist because a ROM's Init may measure time with them (the native backend calibrates
//! the TSC against PIT channel 2 and reads the RTC): on a machine whose ports all read `0xFF`
//! such a ROM would poll a counter that never moves until its bound runs out (at ~12 µs per
//! port-I/O exit on kvm-pvm, minutes). Each device is a model of what a guest *reads*, driven
//! by the host's clocks. Nothing here raises an interrupt itself: with the in-kernel irqchip
//! the runner gives counter 0 an OUT line wired to IRQ0 ([`super::irq0`], from
//! [`Platform::channel0`]); without it IRQ0 never fires whatever channel 0 is programmed to.
//!
//! The PM timer is the conformance suite's clock: a 32-bit count at 3.579545 MHz of the
//! host's monotonic clock since the platform's time origin, at the port QEMU's PIIX4 puts it
//! (PM base 0x600 + 8). No ACPI table describes it (the runner has no firmware), so a guest
//! finds it only by being told ([`PM_TIMER_PORT`]); the suite times GetCycleCounter and
//! GetWallclockTime with it, and — knowing the Unix time at count 0 ([`Platform::new`]'s
//! origin, [`crate::kvm::KvmRun::pm_timer_origin`]) — holds GetWallclockTime against the
//! host's clock.
//!
//! | Port | Model |
//! |---|---|
//! | 0x40–0x42 | counters 0–2 at 1 193 182 Hz from the host's monotonic clock: modes 0 (and 1, 4, 5 like 0), 2 and 3; access lobyte, hibyte, lobyte/hibyte; counter latch and the read-back command's count latch; binary counting only (the BCD bit is ignored); counters 0 and 1 always gated, counter 2 gated by port 0x61 bit 0 |
//! | 0x43 | the control word |
//! | 0x61 | bits 0–1 (gate 2, speaker data) as written; bit 4 the refresh toggle (every 15.085 µs); bit 5 counter 2's output |
//! | 0x70 | the CMOS index (bit 7, NMI disable, is ignored) |
//! | 0x71 | registers 0x00–0x09 the host's UTC time (BCD, 24 h, unless status B was set to binary or 12 h), 0x0A status A with UIP clear, 0x0B status B (0x02), 0x0C 0, 0x0D 0x80 (valid), 0x32 the century; writes to 0x00–0x09 are ignored, other registers are 128 bytes of RAM |
//! | 0x608–0x60B | the ACPI PM timer: a 32-bit count ([`PM_TIMER_HZ`] from the host's monotonic clock since the time origin, wrapping), little-endian, so `in eax, dx` at 0x608 reads it whole; writes are ignored |

use std::time::Duration;

/// The PIT's input clock, Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Period of port 0x61's refresh toggle (bit 4), ns.
pub const REFRESH_NS: u128 = 15_085;

/// The ACPI PM timer's port: a 32-bit `in` there reads its count (QEMU's PIIX4 puts it at
/// the PM base 0x600 + 8).
pub const PM_TIMER_PORT: u16 = 0x608;
/// The PM timer's rate, Hz (ACPI: 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// The ports [`Platform`] answers on (the PM timer's four byte ports included).
pub const PORTS: [u16; 11] = [
    0x40,
    0x41,
    0x42,
    0x43,
    0x61,
    0x70,
    0x71,
    PM_TIMER_PORT,
    PM_TIMER_PORT + 1,
    PM_TIMER_PORT + 2,
    PM_TIMER_PORT + 3,
];

/// The PM timer's count `now` after the time origin (32 bits, wrapping).
pub fn pm_timer_count(now: Duration) -> u32 {
    (now.as_nanos() * u128::from(PM_TIMER_HZ) / 1_000_000_000) as u32
}

/// One 8254 counter.
#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    /// Mode 0–5 (6 and 7 are stored as 2 and 3).
    mode: u8,
    /// 1 lobyte, 2 hibyte, 3 lobyte then hibyte.
    access: u8,
    /// The count loaded (1..=65536), None until the guest wrote one.
    reload: Option<u32>,
    /// When counting started from `reload`.
    start: Duration,
    /// The low byte of a lobyte/hibyte write waiting for its high byte.
    pending_low: Option<u8>,
    /// The next read of a lobyte/hibyte access returns the high byte.
    read_high: bool,
    /// A latched count.
    latch: Option<u16>,
    /// Ticks counted before the gate went low (counting is suspended while it is low).
    held: Option<u64>,
}

impl Counter {
    fn ticks(&self, now: Duration) -> u64 {
        if let Some(t) = self.held {
            return t;
        }
        let ns = now.saturating_sub(self.start).as_nanos();
        (ns * u128::from(PIT_HZ) / 1_000_000_000) as u64
    }

    /// The count as a read shows it.
    fn count(&self, now: Duration) -> u16 {
        let Some(n) = self.reload else { return 0 };
        let n = u64::from(n);
        let t = self.ticks(now);
        let v = match self.mode {
            2 => n - t % n,
            3 => n - (2 * t) % n,
            _ => (n + 0x1_0000 - t % 0x1_0000) % 0x1_0000,
        };
        v as u16
    }

    /// The counter's OUT line.
    fn output(&self, now: Duration) -> bool {
        let Some(n) = self.reload else { return false };
        let n = u64::from(n);
        let t = self.ticks(now);
        match self.mode {
            2 => t % n != n - 1,
            3 => t % n < n.div_ceil(2),
            _ => t >= n,
        }
    }

    fn control(&mut self, access: u8, mode: u8) {
        *self = Counter {
            mode: if mode >= 6 { mode - 4 } else { mode },
            access,
            ..Counter::default()
        };
    }

    fn latch(&mut self, now: Duration) {
        if self.latch.is_none() {
            self.latch = Some(self.count(now));
            self.read_high = false;
        }
    }

    fn load(&mut self, n: u16, now: Duration) {
        self.reload = Some(if n == 0 { 0x1_0000 } else { u32::from(n) });
        self.start = now;
        if self.held.is_some() {
            self.held = Some(0);
        }
    }

    fn write(&mut self, v: u8, now: Duration) {
        match self.access {
            1 => self.load(u16::from(v), now),
            2 => self.load(u16::from(v) << 8, now),
            _ => match self.pending_low.take() {
                None => self.pending_low = Some(v),
                Some(lo) => self.load(u16::from_le_bytes([lo, v]), now),
            },
        }
    }

    fn read(&mut self, now: Duration) -> u8 {
        let value = self.latch.unwrap_or_else(|| self.count(now));
        let [lo, hi] = value.to_le_bytes();
        let (byte, done) = match self.access {
            1 => (lo, true),
            2 => (hi, true),
            _ if self.read_high => (hi, true),
            _ => (lo, false),
        };
        self.read_high = !done;
        if done {
            self.latch = None;
        }
        byte
    }

    /// The gate input changed to `high`.
    fn gate(&mut self, high: bool, now: Duration) {
        match (high, self.held) {
            (false, None) => self.held = Some(self.ticks(now)),
            (true, Some(t)) => {
                self.held = None;
                // Modes 2 and 3 restart from the reload value on a rising gate; the others
                // resume where they stopped.
                let resume = if matches!(self.mode, 2 | 3) { 0 } else { t };
                let back = Duration::from_nanos(resume.saturating_mul(1_000_000_000) / PIT_HZ);
                self.start = now.saturating_sub(back);
            }
            _ => {}
        }
    }
}

/// CMOS status B bits.
const B_24H: u8 = 0x02;
const B_BINARY: u8 = 0x04;

/// The CMOS RTC and its RAM.
#[derive(Clone, Debug)]
struct Cmos {
    index: u8,
    ram: [u8; 128],
}

/// The calendar of `unix` seconds (UTC): (year, month 1–12, day 1–31, weekday 1–7 with
/// Sunday = 1, hour, minute, second).
pub fn civil(unix: u64) -> (u64, u8, u8, u8, u8, u8, u8) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days to civil date (March-based years, 400-year eras), for dates from 1970 on.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    // 1970-01-01 was a Thursday (weekday 5 with Sunday = 1).
    let weekday = (days + 4) % 7 + 1;
    (
        year,
        month as u8,
        day as u8,
        weekday as u8,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
    )
}

fn bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl Cmos {
    fn new() -> Cmos {
        let mut ram = [0u8; 128];
        ram[0x0A] = 0x26;
        ram[0x0B] = B_24H;
        ram[0x0D] = 0x80;
        Cmos { index: 0, ram }
    }

    fn read(&self, unix: u64) -> u8 {
        let (year, month, day, weekday, hour, minute, second) = civil(unix);
        let b = self.ram[0x0B];
        let enc = |v: u8| if b & B_BINARY != 0 { v } else { bcd(v) };
        let hour = if b & B_24H != 0 {
            enc(hour)
        } else {
            let h12 = match hour % 12 {
                0 => 12,
                h => h,
            };
            enc(h12) | if hour >= 12 { 0x80 } else { 0 }
        };
        match self.index {
            0x00 => enc(second),
            0x02 => enc(minute),
            0x04 => hour,
            0x06 => enc(weekday),
            0x07 => enc(day),
            0x08 => enc(month),
            0x09 => enc((year % 100) as u8),
            0x32 => enc((year / 100) as u8),
            i => self.ram.get(usize::from(i)).copied().unwrap_or(0),
        }
    }

    fn write(&mut self, v: u8) {
        match self.index {
            0x00..=0x09 | 0x0C | 0x0D | 0x32 => {}
            0x0A => self.ram[0x0A] = v & 0x7F,
            i => {
                if let Some(r) = self.ram.get_mut(usize::from(i)) {
                    *r = v;
                }
            }
        }
    }
}

/// The devices, with the clocks that drive them.
#[derive(Clone, Debug)]
pub struct Platform {
    counters: [Counter; 3],
    port61: u8,
    cmos: Cmos,
    /// Unix time at the platform's time origin.
    unix_at_start: Duration,
}

impl Platform {
    /// The devices at power-on; `unix_at_start` is the wall-clock time (since 1970-01-01
    /// UTC) at the moment the callers' `now` arguments count from (the time origin: the RTC
    /// reads it plus `now`, the PM timer counts from 0 there).
    pub fn new(unix_at_start: Duration) -> Platform {
        Platform {
            counters: [Counter::default(); 3],
            port61: 0,
            cmos: Cmos::new(),
            unix_at_start,
        }
    }

    /// A guest `out` of `v` to `port` at `now`; false when no device here answers on it.
    pub fn write(&mut self, port: u16, v: u8, now: Duration) -> bool {
        match port {
            0x40..=0x42 => {
                if let Some(c) = self.counters.get_mut(usize::from(port - 0x40)) {
                    c.write(v, now);
                }
            }
            0x43 => self.control(v, now),
            0x61 => {
                let was = self.port61 & 1 != 0;
                self.port61 = v & 0x03;
                let high = v & 1 != 0;
                if was != high {
                    self.counters[2].gate(high, now);
                }
            }
            0x70 => self.cmos.index = v & 0x7F,
            0x71 => self.cmos.write(v),
            p if (PM_TIMER_PORT..PM_TIMER_PORT + 4).contains(&p) => {}
            _ => return false,
        }
        true
    }

    /// A guest `in` from `port` at `now`; None when no device here answers on it.
    pub fn read(&mut self, port: u16, now: Duration) -> Option<u8> {
        Some(match port {
            0x40..=0x42 => self.counters.get_mut(usize::from(port - 0x40))?.read(now),
            0x61 => {
                let refresh = (now.as_nanos() / REFRESH_NS) as u8 & 1;
                let out2 = u8::from(self.counters[2].output(now));
                self.port61 & 0x03 | refresh << 4 | out2 << 5
            }
            0x70 => 0xFF,
            0x71 => self.cmos.read((self.unix_at_start + now).as_secs()),
            p if (PM_TIMER_PORT..PM_TIMER_PORT + 4).contains(&p) => {
                let k = usize::from(p - PM_TIMER_PORT);
                pm_timer_count(now)
                    .to_le_bytes()
                    .get(k)
                    .copied()
                    .unwrap_or(0xFF)
            }
            _ => return None,
        })
    }

    /// Counter 0's programming, for its OUT line ([`super::irq0`]): None until a count was
    /// written after the last control word.
    pub fn channel0(&self) -> Option<super::irq0::Program> {
        let c = &self.counters[0];
        c.reload.map(|reload| super::irq0::Program {
            mode: c.mode,
            reload,
            start: c.start,
        })
    }

    fn control(&mut self, v: u8, now: Duration) {
        let channel = usize::from(v >> 6);
        if channel == 3 {
            // Read-back: bit 5 clear latches the count of each counter selected in bits 1–3
            // (status latching, bit 4, is not modelled).
            if v & 0x20 == 0 {
                for (i, c) in self.counters.iter_mut().enumerate() {
                    if v & (2 << i) != 0 {
                        c.latch(now);
                    }
                }
            }
            return;
        }
        let Some(c) = self.counters.get_mut(channel) else {
            return;
        };
        match (v >> 4) & 3 {
            0 => c.latch(now),
            access => {
                let gate_low = channel == 2 && self.port61 & 1 == 0;
                c.control(access, (v >> 1) & 7);
                if gate_low {
                    c.held = Some(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Latches and reads counter 2 (lobyte/hibyte) the way the native ROM does.
    fn read2(p: &mut Platform, now: Duration) -> u16 {
        p.write(0x43, 0x80, now);
        let lo = p.read(0x42, now).unwrap();
        let hi = p.read(0x42, now).unwrap();
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn counter_2_in_mode_2_counts_down_at_the_pit_rate_when_gated() {
        let mut p = Platform::new(Duration::ZERO);
        p.write(0x61, 0x01, ms(0));
        p.write(0x43, 0xB4, ms(0)); // counter 2, lobyte/hibyte, mode 2
        p.write(0x42, 0xFF, ms(0));
        p.write(0x42, 0xFF, ms(1));
        assert_eq!(read2(&mut p, ms(1)), 0xFFFF);
        // 35 ms = 41 761 ticks.
        let ticks = 35 * PIT_HZ / 1000;
        assert_eq!(read2(&mut p, ms(36)), (0xFFFF - ticks) as u16);
        // Mode 2 reloads: 65535 ticks later the count is where it was.
        let period = Duration::from_nanos(0xFFFF * 1_000_000_000 / PIT_HZ + 1);
        let a = read2(&mut p, ms(36));
        let b = read2(&mut p, ms(36) + period);
        assert!(a.abs_diff(b) <= 1, "{a:#x} {b:#x}");
        // Gate low: the count holds; high again: mode 2 restarts from the reload value.
        p.write(0x61, 0x00, ms(40));
        let held = read2(&mut p, ms(40));
        assert_eq!(read2(&mut p, ms(80)), held);
        p.write(0x61, 0x01, ms(80));
        assert_eq!(read2(&mut p, ms(80)), 0xFFFF);
    }

    #[test]
    fn a_latch_holds_the_count_until_both_bytes_were_read() {
        let mut p = Platform::new(Duration::ZERO);
        p.write(0x43, 0x34, ms(0)); // counter 0, lobyte/hibyte, mode 2
        p.write(0x40, 0x00, ms(0));
        p.write(0x40, 0x10, ms(0)); // 0x1000
        p.write(0x43, 0x00, ms(1));
        let lo = p.read(0x40, ms(2)).unwrap();
        let hi = p.read(0x40, ms(3)).unwrap();
        let latched = u16::from_le_bytes([lo, hi]);
        assert_eq!(latched, (0x1000 - PIT_HZ / 1000) as u16);
        // Unlatched reads follow the live count; read-back latches too.
        p.write(0x43, 0xC2, ms(2));
        let lo = p.read(0x40, ms(3)).unwrap();
        let hi = p.read(0x40, ms(3)).unwrap();
        assert_eq!(
            u16::from_le_bytes([lo, hi]),
            (0x1000 - 2 * PIT_HZ / 1000) as u16
        );
    }

    #[test]
    fn counter_2_output_and_the_refresh_toggle_show_in_port_0x61() {
        let mut p = Platform::new(Duration::ZERO);
        p.write(0x61, 0x01, ms(0));
        p.write(0x43, 0xB0, ms(0)); // counter 2, lobyte/hibyte, mode 0
        p.write(0x42, 0x9C, ms(0));
        p.write(0x42, 0x2E, ms(0)); // 11932 ticks = 10 ms
        assert_eq!(p.read(0x61, ms(5)).unwrap() & 0x21, 0x01);
        assert_eq!(p.read(0x61, ms(11)).unwrap() & 0x21, 0x21);
        let a = p.read(0x61, Duration::from_nanos(0)).unwrap() & 0x10;
        let b = p
            .read(0x61, Duration::from_nanos(REFRESH_NS as u64))
            .unwrap()
            & 0x10;
        assert_ne!(a, b);
        assert_eq!(p.read(0x60, ms(0)), None);
        assert!(!p.write(0x80, 0, ms(0)));
    }

    #[test]
    fn the_pm_timer_counts_the_time_origin_at_3_579545_mhz_on_four_byte_ports() {
        let mut p = Platform::new(Duration::ZERO);
        let read = |p: &mut Platform, now: Duration| {
            let b: Vec<u8> = (0..4)
                .map(|k| p.read(PM_TIMER_PORT + k, now).unwrap())
                .collect();
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        assert_eq!(read(&mut p, ms(0)), 0);
        assert_eq!(read(&mut p, ms(1000)), 3_579_545);
        assert_eq!(read(&mut p, Duration::from_nanos(280)), 1);
        // 32 bits wrap after 1199.86 s.
        let wrap = Duration::from_nanos((1u128 << 32) as u64 * 1_000_000_000 / PM_TIMER_HZ + 1);
        assert_eq!(read(&mut p, wrap + ms(1000)), 3_579_545);
        // Writes are taken and ignored; the ports around it are not the timer's.
        assert!(p.write(PM_TIMER_PORT, 0x12, ms(1)));
        assert_eq!(read(&mut p, ms(1000)), 3_579_545);
        assert_eq!(p.read(PM_TIMER_PORT - 1, ms(0)), None);
        assert_eq!(p.read(PM_TIMER_PORT + 4, ms(0)), None);
        assert!(PORTS.contains(&(PM_TIMER_PORT + 3)));
    }

    #[test]
    fn the_rtc_reads_the_host_clock_in_bcd() {
        // 2026-11-29T13:45:07Z, a Sunday.
        let t = 1_795_959_907;
        assert_eq!(civil(t), (2026, 11, 29, 1, 13, 45, 7));
        assert_eq!(civil(0), (1970, 1, 1, 5, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 3, 0, 0, 0));
        let mut p = Platform::new(Duration::from_secs(t - 2));
        let reg = |p: &mut Platform, r: u8| {
            p.write(0x70, r | 0x80, ms(0));
            p.read(0x71, ms(2500)).unwrap()
        };
        let got: Vec<u8> = [
            0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0A, 0x0B, 0x0D,
        ]
        .iter()
        .map(|r| reg(&mut p, *r))
        .collect();
        assert_eq!(
            got,
            [
                0x07, 0x45, 0x13, 0x01, 0x29, 0x11, 0x26, 0x20, 0x26, 0x02, 0x80
            ]
        );
        // Binary, 12-hour: 13 h is 1 PM.
        p.write(0x70, 0x0B, ms(0));
        p.write(0x71, 0x04, ms(0));
        assert_eq!(reg(&mut p, 0x04), 0x81);
        assert_eq!(reg(&mut p, 0x02), 45);
        // RAM keeps what was written; the clock ignores writes.
        p.write(0x70, 0x40, ms(0));
        p.write(0x71, 0x5A, ms(0));
        assert_eq!(reg(&mut p, 0x40), 0x5A);
        p.write(0x70, 0x00, ms(0));
        p.write(0x71, 0x00, ms(0));
        assert_eq!(reg(&mut p, 0x00), 7);
    }
}
