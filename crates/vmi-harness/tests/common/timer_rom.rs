//! A second, independent implementation of the local-APIC and timer calls (63, 64, 66–71) for
//! the suite's own tests: crude, but right in everything a guest can see, under QEMU TCG on
//! this host.
//!
//! - APICRead/APICWrite: the local APIC at the address the test guest maps it (an LVTT write
//!   keeps the timer-mode bits the ROM set).
//! - REAL = AVAILABLE = the TSC, STOLEN = 0; GetCycleFrequency = the host's TSC rate, measured
//!   by the test (under TCG the guest's TSC runs at the host's rate).
//! - SetAlarm on LVTT: the local-APIC timer (QEMU counts it at 1 GHz, divide 1) in one-shot or
//!   periodic mode, the vector and mask bit as the guest wrote them; on IRQ0: PIT channel 0,
//!   mode 0 or 2. One-shots are rounded up (never early); CancelAlarm says armed when the APIC
//!   timer still counts or an IRQ0 alarm is periodic or not yet due.
//! - GetWallclockTime: the CMOS RTC (BCD, 24 h: QEMU's) on the first call, then that plus the
//!   TSC, kept in 4 KiB of guest RAM the test guest leaves alone.
#![allow(dead_code)]

use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_rom::emit::Emit;
use vmi_rom::native::Native;
use vmi_rom::{Answer, Backend, GenError};

/// The host's TSC rate: TSC ticks over 300 ms of `Instant`.
pub fn host_tsc_hz() -> u64 {
    use std::time::{Duration, Instant};
    let read = || {
        // SAFETY: `rdtsc` reads the time-stamp counter; it has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    };
    let (t0, c0) = (Instant::now(), read());
    std::thread::sleep(Duration::from_millis(300));
    let (t1, c1) = (Instant::now(), read());
    ((c1 - c0) as f64 / (t1 - t0).as_secs_f64()) as u64
}

/// Native, with the test's own APIC and timer routines.
#[derive(Clone, Copy, Debug)]
pub struct TestTimer {
    /// GetCycleFrequency: the TSC rate.
    pub tsc_hz: u64,
    /// Linear address of the local APIC in the test guest.
    pub apic: u32,
    /// Linear address of 4 KiB of guest RAM nothing else uses.
    pub ram: u32,
}

/// RAM: the wallclock base (ns, TSC, valid), then IRQ0 alarm state per CPU (armed: 1
/// one-shot, 2 periodic; the one-shot's expiry).
const WALL_NS: u32 = 0;
const WALL_TSC: u32 = 8;
const WALL_VALID: u32 = 16;
const IRQ0_STATE: u32 = 32;

impl TestTimer {
    /// For a guest with paging at PAGE_OFFSET 0xC0000000 (the suite's default).
    pub fn paged(tsc_hz: u64) -> TestTimer {
        let map = vmi_harness::guest::MemoryMap::new(0xC000_0000, true).unwrap();
        TestTimer {
            tsc_hz,
            apic: map.apic(),
            ram: map.va(0x1C_0000),
        }
    }

    /// For a guest without paging.
    pub fn flat(tsc_hz: u64) -> TestTimer {
        TestTimer {
            tsc_hz,
            apic: 0xFEE0_0000,
            ram: 0x1C_0000,
        }
    }

    /// `rate` × 2^32 / the TSC rate: multiply cycles by it and keep the high dword.
    fn per_cycle(&self, rate: u64) -> u32 {
        u32::try_from((u128::from(rate) << 32) / u128::from(self.tsc_hz)).unwrap_or(u32::MAX)
    }

    fn m(&self, off: u32) -> AsmMemoryOperand {
        dword_ptr(self.ram + off)
    }

    fn reg(&self, off: u32) -> AsmMemoryOperand {
        dword_ptr(self.apic + off)
    }

    /// ECX = this CPU's IRQ0 state (APIC ID bit 0 picks the slot).
    fn irq0_state(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        a.mov(ecx, self.reg(0x20))?;
        a.shr(ecx, 24)?;
        a.and(ecx, 1)?;
        a.shl(ecx, 4)?;
        a.add(ecx, self.ram + IRQ0_STATE)?;
        Ok(())
    }

    /// EDX = ceil(ESI (cycles) × `k` / 2^32) + 1, at most `max`; EDI ≠ 0 means "very long".
    fn scale(&self, a: &mut CodeAssembler, k: u32, max: u32) -> Result<(), GenError> {
        let mut big = a.create_label();
        let mut done = a.create_label();
        a.test(edi, edi)?;
        a.jnz(big)?;
        a.mov(eax, esi)?;
        a.mov(edx, k)?;
        a.mul(edx)?;
        a.add(edx, 2)?;
        a.jc(big)?;
        a.cmp(edx, max)?;
        a.jbe(done)?;
        a.set_label(&mut big)?;
        a.mov(edx, max)?;
        a.set_label(&mut done)?;
        Ok(())
    }

    fn set_alarm(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        let mut out = a.create_label();
        let mut future = a.create_label();
        let mut pit = a.create_label();
        let mut lvtt_oneshot = a.create_label();
        let mut lvtt_go = a.create_label();
        let mut pit_oneshot = a.create_label();
        a.push(ebx)?;
        a.push(esi)?;
        a.push(edi)?;
        a.mov(ebx, eax)?;
        a.mov(esi, edx)?;
        a.mov(edi, ecx)?;
        a.and(eax, 0xFF)?;
        a.cmp(eax, 1)?;
        a.ja(out)?;
        // This CPU's IRQ0 state keeps the expiry (CancelAlarm of a one-shot compares with it).
        self.irq0_state(a)?;
        a.mov(dword_ptr(ecx + 8), esi)?;
        a.mov(dword_ptr(ecx + 12), edi)?;
        // EDI:ESI = expiry − now, 0 if past.
        a.rdtsc()?;
        a.sub(esi, eax)?;
        a.sbb(edi, edx)?;
        a.jns(future)?;
        a.xor(esi, esi)?;
        a.xor(edi, edi)?;
        a.set_label(&mut future)?;
        a.test(ebx, 0x1_0000)?;
        a.jz(pit)?;
        // LVTT: vector and mask as the guest wrote them, one-shot or periodic, divide 1.
        a.mov(eax, self.reg(0x320))?;
        a.and(eax, 0x1_00FF)?;
        a.test(ebx, 0x100)?;
        a.jz(lvtt_oneshot)?;
        a.or(eax, 0x2_0000)?;
        a.mov(self.reg(0x320), eax)?;
        a.mov(esi, dword_ptr(esp + 16))?;
        a.mov(edi, dword_ptr(esp + 20))?;
        a.jmp(lvtt_go)?;
        a.set_label(&mut lvtt_oneshot)?;
        a.mov(self.reg(0x320), eax)?;
        a.set_label(&mut lvtt_go)?;
        a.mov(self.reg(0x3E0), 0xBu32)?;
        self.scale(a, self.per_cycle(1_000_000_000), u32::MAX)?;
        a.mov(self.reg(0x380), edx)?;
        a.jmp(out)?;
        // IRQ0: PIT channel 0.
        a.set_label(&mut pit)?;
        self.irq0_state(a)?;
        a.test(ebx, 0x100)?;
        a.jz(pit_oneshot)?;
        a.mov(dword_ptr(ecx), 2u32)?;
        a.mov(esi, dword_ptr(esp + 16))?;
        a.mov(edi, dword_ptr(esp + 20))?;
        self.scale(a, self.per_cycle(1_193_182), 0xFFFF)?;
        a.mov(al, 0x34)?;
        a.out(0x43, al)?;
        a.mov(eax, edx)?;
        a.out(0x40, al)?;
        a.mov(al, ah)?;
        a.out(0x40, al)?;
        a.jmp(out)?;
        a.set_label(&mut pit_oneshot)?;
        self.irq0_state(a)?;
        a.mov(dword_ptr(ecx), 1u32)?;
        self.scale(a, self.per_cycle(1_193_182), 0xFFFF)?;
        a.mov(al, 0x30)?;
        a.out(0x43, al)?;
        a.mov(eax, edx)?;
        a.out(0x40, al)?;
        a.mov(al, ah)?;
        a.out(0x40, al)?;
        a.set_label(&mut out)?;
        a.pop(edi)?;
        a.pop(esi)?;
        a.pop(ebx)?;
        Ok(())
    }

    fn cancel_alarm(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        let mut no_lvtt = a.create_label();
        let mut armed_pit = a.create_label();
        let mut stop_pit = a.create_label();
        let mut out = a.create_label();
        a.push(ebx)?;
        a.xor(ebx, ebx)?;
        a.and(eax, 0xFF)?;
        a.cmp(eax, 1)?;
        a.ja(out)?;
        a.cmp(self.reg(0x390), 0)?;
        a.je(no_lvtt)?;
        a.mov(ebx, 1u32)?;
        a.mov(self.reg(0x380), 0u32)?;
        a.set_label(&mut no_lvtt)?;
        self.irq0_state(a)?;
        a.mov(eax, dword_ptr(ecx))?;
        a.test(eax, eax)?;
        a.jz(out)?;
        a.cmp(eax, 2)?;
        a.je(armed_pit)?;
        // A one-shot is armed until its expiry.
        a.push(ecx)?;
        a.rdtsc()?;
        a.pop(ecx)?;
        a.sub(eax, dword_ptr(ecx + 8))?;
        a.sbb(edx, dword_ptr(ecx + 12))?;
        a.jns(stop_pit)?;
        a.set_label(&mut armed_pit)?;
        a.mov(ebx, 1u32)?;
        a.set_label(&mut stop_pit)?;
        a.mov(dword_ptr(ecx), 0u32)?;
        a.mov(al, 0x3A)?;
        a.out(0x43, al)?;
        a.set_label(&mut out)?;
        a.mov(eax, ebx)?;
        a.pop(ebx)?;
        Ok(())
    }

    /// EAX = the BCD CMOS register `reg` in binary. Uses ECX.
    fn cmos(&self, a: &mut CodeAssembler, reg: u8) -> Result<(), GenError> {
        a.mov(al, u32::from(reg))?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.movzx(eax, al)?;
        a.mov(ecx, eax)?;
        a.shr(ecx, 4)?;
        a.imul_3(ecx, ecx, 10)?;
        a.and(eax, 0xF)?;
        a.add(eax, ecx)?;
        Ok(())
    }

    /// EDX:EAX = the RTC as ns since 1970. Uses EBX, ECX, ESI, EDI.
    fn rtc_ns(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        let mut uip = a.create_label();
        let mut march = a.create_label();
        a.set_label(&mut uip)?;
        a.mov(al, 0x0A)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.test(al, 0x80)?;
        a.jnz(uip)?;
        // ESI = year, EDI = month (March = 0), EBX = day − 1.
        self.cmos(a, 0x32)?;
        a.imul_3(esi, eax, 100)?;
        self.cmos(a, 0x09)?;
        a.add(esi, eax)?;
        self.cmos(a, 0x08)?;
        a.lea(edi, dword_ptr(eax + 9))?;
        a.cmp(eax, 2)?;
        a.ja(march)?;
        a.dec(esi)?;
        a.set_label(&mut march)?;
        a.mov(eax, edi)?;
        a.xor(edx, edx)?;
        a.mov(ecx, 12u32)?;
        a.div(ecx)?;
        a.mov(edi, edx)?;
        self.cmos(a, 0x07)?;
        a.lea(ebx, dword_ptr(eax - 1))?;
        // days = 365 y + y/4 − y/100 + y/400 + (153 mp + 2)/5 + d − 1 − 719468
        a.imul_3(eax, edi, 153)?;
        a.add(eax, 2)?;
        a.xor(edx, edx)?;
        a.mov(ecx, 5u32)?;
        a.div(ecx)?;
        a.add(ebx, eax)?;
        a.imul_3(eax, esi, 365)?;
        a.add(ebx, eax)?;
        for (div, sign) in [(4u32, 1), (100, -1), (400, 1)] {
            a.mov(eax, esi)?;
            a.xor(edx, edx)?;
            a.mov(ecx, div)?;
            a.div(ecx)?;
            if sign > 0 {
                a.add(ebx, eax)?;
            } else {
                a.sub(ebx, eax)?;
            }
        }
        a.sub(ebx, 719_468)?;
        // seconds = days × 86400 + h × 3600 + m × 60 + s
        a.imul_3(ebx, ebx, 86_400)?;
        for (reg, mul) in [(0x04u8, 3600), (0x02, 60), (0x00, 1)] {
            self.cmos(a, reg)?;
            a.imul_3(eax, eax, mul)?;
            a.add(ebx, eax)?;
        }
        a.mov(eax, ebx)?;
        a.mov(ecx, 1_000_000_000u32)?;
        a.mul(ecx)?;
        Ok(())
    }

    fn wallclock(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        let mut have = a.create_label();
        a.push(ebx)?;
        a.push(esi)?;
        a.push(edi)?;
        a.cmp(self.m(WALL_VALID), 0)?;
        a.jne(have)?;
        self.rtc_ns(a)?;
        a.mov(self.m(WALL_NS), eax)?;
        a.mov(self.m(WALL_NS + 4), edx)?;
        a.rdtsc()?;
        a.mov(self.m(WALL_TSC), eax)?;
        a.mov(self.m(WALL_TSC + 4), edx)?;
        a.mov(self.m(WALL_VALID), 1u32)?;
        a.set_label(&mut have)?;
        // ns = base + (TSC − base TSC) × 1e9 / f, as (Δ × k) >> 32.
        a.rdtsc()?;
        a.sub(eax, self.m(WALL_TSC))?;
        a.sbb(edx, self.m(WALL_TSC + 4))?;
        a.mov(ecx, edx)?;
        a.mov(ebx, self.per_cycle(1_000_000_000))?;
        a.mul(ebx)?;
        a.mov(esi, edx)?;
        a.mov(eax, ecx)?;
        a.mul(ebx)?;
        a.add(eax, esi)?;
        a.adc(edx, 0)?;
        a.add(eax, self.m(WALL_NS))?;
        a.adc(edx, self.m(WALL_NS + 4))?;
        a.pop(edi)?;
        a.pop(esi)?;
        a.pop(ebx)?;
        Ok(())
    }
}

impl Backend for TestTimer {
    fn name(&self) -> String {
        "native+test-timer".into()
    }

    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        let a = &mut e.a;
        match call {
            Call::APICWrite => {
                let mut plain = a.create_label();
                a.and(eax, 0xFFF)?;
                a.cmp(eax, 0x320)?;
                a.jne(plain)?;
                a.push(ecx)?;
                a.mov(ecx, self.reg(0x320))?;
                a.and(ecx, 0x6_0000)?;
                a.and(edx, !0x6_0000)?;
                a.or(edx, ecx)?;
                a.pop(ecx)?;
                a.set_label(&mut plain)?;
                a.mov(dword_ptr(eax + self.apic as i32), edx)?;
            }
            Call::APICRead => {
                a.and(eax, 0xFFF)?;
                a.mov(eax, dword_ptr(eax + self.apic as i32))?;
            }
            Call::GetCycleFrequency => {
                a.mov(eax, self.tsc_hz as u32)?;
                a.mov(edx, (self.tsc_hz >> 32) as u32)?;
            }
            Call::GetCycleCounter => {
                let mut zero = a.create_label();
                a.cmp(eax, 1)?;
                a.ja(zero)?;
                a.rdtsc()?;
                a.ret()?;
                a.set_label(&mut zero)?;
                a.xor(eax, eax)?;
                a.xor(edx, edx)?;
            }
            Call::SetAlarm => self.set_alarm(a)?,
            Call::CancelAlarm => self.cancel_alarm(a)?,
            Call::GetWallclockTime => self.wallclock(a)?,
            Call::WallclockUpdated => a.xor(eax, eax)?,
            _ => return Native.emit(call, e),
        }
        e.a.ret()?;
        Ok(Answer::Call)
    }

    fn note(&self, call: Call) -> &'static str {
        Native.note(call)
    }
}
