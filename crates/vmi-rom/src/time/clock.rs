//! The cycle counters, their frequency and the wall clock (calls 66, 67, 70, 71).
//!
//! REAL and AVAILABLE are the TSC (the machine is not shared, so nothing is stolen: STOLEN is
//! 0, and any other counter number reads 0 as the VMI spec says). The TSC's rate is measured
//! once, at Init, against PIT channel 2 — three measurements of 35 ms, each between two
//! counter samples bracketed tightly by TSC reads, and their median (a host that deschedules
//! the guest widens some brackets, not the narrowest one) — and GetCycleFrequency returns it. The wall clock is the CMOS RTC read at Init (BCD or binary,
//! 12 or 24 hours, the century register where it holds one), carried forward by the TSC, so
//! successive GetWallclockTime values are consistent with the counter; WallclockUpdated reads
//! the RTC again and, when it disagrees with that by more than a second (someone set it),
//! takes it as the new base and answers 1.

use super::{flag, helper, mul_q32, time_ptr, tm};
use crate::emit::Emit;
use crate::error::GenError;
use crate::ram;
use iced_x86::code_asm::*;
use vmi_abi::consts::VMI_CYCLES_STOLEN;

/// PIT input clock, Hz.
pub const PIT_HZ: u32 = 1_193_182;
/// PIT ticks one measurement spans at least (35 ms: inside one turn of the 16-bit counter).
pub const LATCH: u32 = 41_760;
/// [`LATCH`] ticks in nanoseconds.
pub const WINDOW_NS: u32 = (LATCH as u64 * 1_000_000_000 / PIT_HZ as u64) as u32;
/// Measurements taken; their median counts.
pub const WINDOWS: u32 = 3;
/// Tries per sample: the one with the narrowest TSC bracket around the counter read wins.
pub const TRIES: u32 = 16;
/// Counter reads before a measurement is given up (no PIT answers).
const POLL_LIMIT: u32 = 20_000_000;
/// Measurements restarted (the counter went round while the host had the guest descheduled)
/// before calibration is given up.
pub const RESTART_LIMIT: u32 = 64;
/// Most ticks (3.4 ms) the second sample may follow the last poll by; more means the guest
/// was descheduled in between and the 16-bit count may have gone round.
pub const SAMPLE_SLACK: u32 = 4096;
/// TSC cycles between two polls (or the last poll and the second sample) that mean the guest
/// may have missed the 16-bit count going round (55 ms): 45 ms at 1 GHz, 19.6 ms at 2.3 GHz,
/// 9 ms at 5 GHz. Shorter gaps are common on a loaded host (a descheduled vCPU) and harmless:
/// the count is read again after them and the polls see a wrap. A TSC below 820 MHz could
/// miss a stop of 55 ms or more; such a stop only ever makes a measurement too high, and the
/// median of [`WINDOWS`] discards one.
pub const STALL_CYCLES: u32 = 45_000_000;
/// The calibration's stack frame, bytes.
const FRAME: i32 = 44;

/// Offsets of `calibrate`'s stack slots; the measurements are the first [`WINDOWS`] dwords.
mod slot {
    /// Port 0x61 as found.
    pub const PORT61: i32 = 12;
    /// The first sample's TSC (low dword).
    pub const TSC_A: i32 = 16;
    /// The first sample's count.
    pub const COUNT_A: i32 = 20;
    /// The next measurement's index.
    pub const INDEX: i32 = 24;
    /// Elapsed ticks at the last poll before the second sample.
    pub const LAST: i32 = 28;
    /// Restarts left.
    pub const RESTARTS: i32 = 32;
    /// The TSC at the last poll (low, high dword).
    pub const PREV_LO: i32 = 36;
    /// See [`PREV_LO`].
    pub const PREV_HI: i32 = 40;
}
const _: () = assert!(WINDOWS as i32 * 4 <= slot::PORT61 && slot::PREV_HI + 4 <= FRAME);
/// CPUID.1:ECX: the TSC-deadline timer.
const CPUID_TSC_DEADLINE: u32 = 1 << 24;

/// Helper `calibrate`: ESI = the per-ROM region. Measures the TSC against PIT channel 2 (free
/// running, mode 2) and stores the rate, the ns and PIT conversions and
/// [`flag::CALIBRATED`]. Keeps every register.
///
/// Each measurement takes a *sample* — the counter latched and read between two TSC reads,
/// the narrowest of [`TRIES`] brackets, its TSC the bracket's middle — then waits until at
/// least [`LATCH`] ticks have passed and takes another: a host that deschedules the guest
/// widens some brackets, not the narrowest. The median of [`WINDOWS`] measurements counts.
/// The count is 16 bits, so a host that deschedules the guest for a while can make it go
/// round unseen: a measurement is taken again when its polls see the elapsed ticks shrink,
/// when the TSC shows a gap of [`STALL_CYCLES`] or more between two polls or between the last
/// poll and the second sample, or when that sample comes more than [`SAMPLE_SLACK`] ticks
/// after the last poll (at most [`RESTART_LIMIT`] times in all; then the TSC stays
/// uncalibrated and the calls that need it answer NONE).
pub fn emit_calibrate(e: &mut Emit) -> Result<(), GenError> {
    let a = &mut e.a;
    let mut measure = a.create_label();
    let mut wait = a.create_label();
    let mut restart = a.create_label();
    let mut fail = a.create_label();
    let mut sample = a.create_label();
    let mut read_count = a.create_label();
    a.pushad()?;
    a.sub(esp, FRAME)?;
    a.in_(al, 0x61)?;
    a.mov(dword_ptr(esp + slot::PORT61), eax)?;
    a.and(al, 0xFC)?;
    a.or(al, 0x01)?; // gate 2 high, speaker off
    a.out(0x61, al)?;
    a.mov(al, 0xB4)?; // channel 2, lobyte/hibyte, mode 2, binary
    a.out(0x43, al)?;
    a.mov(al, 0xFF)?;
    a.out(0x42, al)?;
    a.out(0x42, al)?;
    a.mov(dword_ptr(esp + slot::INDEX), 0)?;
    a.mov(dword_ptr(esp + slot::RESTARTS), RESTART_LIMIT)?;
    a.set_label(&mut measure)?;
    a.call(sample)?;
    a.mov(dword_ptr(esp + slot::TSC_A), ebx)?;
    a.mov(dword_ptr(esp + slot::COUNT_A), ecx)?;
    a.mov(dword_ptr(esp + slot::PREV_LO), ebx)?;
    a.rdtsc()?;
    a.mov(dword_ptr(esp + slot::PREV_HI), edx)?;
    a.mov(esi, POLL_LIMIT)?;
    a.xor(edi, edi)?; // the last poll's elapsed ticks
    a.set_label(&mut wait)?;
    a.dec(esi)?;
    a.jz(fail)?;
    stall_check(a, restart)?;
    a.call(read_count)?;
    a.mov(eax, dword_ptr(esp + slot::COUNT_A))?;
    a.sub(eax, edx)?;
    a.and(eax, 0xFFFF)?;
    a.cmp(eax, edi)?;
    a.jb(restart)?; // fewer than at the last poll: the counter went round (guest descheduled)
    a.mov(edi, eax)?;
    a.cmp(eax, LATCH)?;
    a.jb(wait)?;
    a.mov(dword_ptr(esp + slot::LAST), edi)?;
    a.call(sample)?;
    // ticks = (count A − count B) mod 2^16; B must follow the last poll closely (no wrap in
    // between), which also keeps ticks ≥ LATCH, so the quotient below fits 32 bits.
    a.mov(eax, dword_ptr(esp + slot::COUNT_A))?;
    a.sub(eax, ecx)?;
    a.and(eax, 0xFFFF)?;
    a.mov(ecx, eax)?;
    a.mov(edx, ebx)?;
    a.sub(edx, dword_ptr(esp + slot::PREV_LO))?;
    a.cmp(edx, STALL_CYCLES)?;
    a.jae(restart)?; // stalled between the last poll and the second sample
    a.sub(eax, dword_ptr(esp + slot::LAST))?;
    a.cmp(eax, SAMPLE_SLACK)?;
    a.jae(restart)?; // negative (wrapped) or too late
    a.cmp(ecx, LATCH)?;
    a.jb(restart)?;
    // cycles = TSC B − TSC A, normalised to LATCH ticks.
    a.mov(eax, ebx)?;
    a.sub(eax, dword_ptr(esp + slot::TSC_A))?;
    a.mov(edx, LATCH)?;
    a.mul(edx)?;
    a.div(ecx)?;
    a.mov(ecx, dword_ptr(esp + slot::INDEX))?;
    a.mov(dword_ptr(esp + ecx * 4), eax)?;
    a.inc(ecx)?;
    a.mov(dword_ptr(esp + slot::INDEX), ecx)?;
    a.cmp(ecx, WINDOWS)?;
    a.jb(measure)?;
    median(a)?;
    a.mov(esi, dword_ptr(esp + FRAME + 4))?; // the caller's ESI, from the pushad block
    store_rates(a)?;
    a.jmp(fail)?;
    a.set_label(&mut restart)?;
    a.dec(dword_ptr(esp + slot::RESTARTS))?;
    a.jnz(measure)?;
    a.set_label(&mut fail)?;
    a.mov(eax, dword_ptr(esp + slot::PORT61))?;
    a.out(0x61, al)?;
    a.add(esp, FRAME)?;
    a.popad()?;
    a.ret()?;
    // sample: EBX = the TSC (low) in the middle of the narrowest bracket, ECX = the count
    // read in it. Uses EAX, EDX, EDI, EBP.
    a.set_label(&mut sample)?;
    a.sub(esp, 8)?;
    a.mov(ebp, -1)?;
    a.mov(edi, TRIES)?;
    let mut try_ = a.create_label();
    let mut next = a.create_label();
    a.set_label(&mut try_)?;
    a.rdtsc()?;
    a.mov(dword_ptr(esp), eax)?;
    a.call(read_count)?;
    a.mov(dword_ptr(esp + 4), edx)?;
    a.rdtsc()?;
    a.sub(eax, dword_ptr(esp))?;
    a.cmp(eax, ebp)?;
    a.jae(next)?;
    a.mov(ebp, eax)?;
    a.shr(eax, 1)?;
    a.add(eax, dword_ptr(esp))?;
    a.mov(ebx, eax)?;
    a.mov(ecx, dword_ptr(esp + 4))?;
    a.set_label(&mut next)?;
    a.dec(edi)?;
    a.jnz(try_)?;
    a.add(esp, 8)?;
    a.ret()?;
    // read_count: EDX = PIT channel 2's count (latched). Uses EAX.
    a.set_label(&mut read_count)?;
    a.mov(al, 0x80)?; // latch channel 2
    a.out(0x43, al)?;
    a.in_(al, 0x42)?;
    a.movzx(edx, al)?;
    a.in_(al, 0x42)?;
    a.mov(dh, al)?;
    a.ret()?;
    Ok(())
}

/// One poll's stall check: the TSC now against the last poll's ([`slot::PREV_LO`]); a gap of
/// [`STALL_CYCLES`] or more (or a negative one) goes to `restart`, else the TSC becomes the
/// last poll's. Uses EAX, EBX, ECX, EDX.
fn stall_check(a: &mut CodeAssembler, restart: CodeLabel) -> Result<(), GenError> {
    a.rdtsc()?;
    a.mov(ecx, eax)?;
    a.mov(ebx, edx)?;
    a.sub(eax, dword_ptr(esp + slot::PREV_LO))?;
    a.sbb(edx, dword_ptr(esp + slot::PREV_HI))?;
    a.jnz(restart)?;
    a.cmp(eax, STALL_CYCLES)?;
    a.jae(restart)?;
    a.mov(dword_ptr(esp + slot::PREV_LO), ecx)?;
    a.mov(dword_ptr(esp + slot::PREV_HI), ebx)?;
    Ok(())
}

/// EAX = the median of the [`WINDOWS`] dwords at `[esp]` (insertion sort in place).
fn median(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut outer = a.create_label();
    let mut inner = a.create_label();
    let mut place = a.create_label();
    a.mov(ecx, 1)?;
    a.set_label(&mut outer)?;
    a.mov(eax, dword_ptr(esp + ecx * 4))?;
    a.mov(edx, ecx)?;
    a.set_label(&mut inner)?;
    a.test(edx, edx)?;
    a.jz(place)?;
    a.mov(ebx, dword_ptr(esp + edx * 4 - 4))?;
    a.cmp(ebx, eax)?;
    a.jbe(place)?;
    a.mov(dword_ptr(esp + edx * 4), ebx)?;
    a.dec(edx)?;
    a.jmp(inner)?;
    a.set_label(&mut place)?;
    a.mov(dword_ptr(esp + edx * 4), eax)?;
    a.inc(ecx)?;
    a.cmp(ecx, WINDOWS)?;
    a.jb(outer)?;
    a.mov(eax, dword_ptr(esp + 4 * (WINDOWS as i32 / 2)))?;
    Ok(())
}

/// From EAX = TSC cycles per window (ESI = the per-ROM region): TSC_HZ = cycles × PIT_HZ /
/// LATCH, NS_Q32 = (WINDOW_NS << 32) / cycles, PIT_Q32 = (LATCH << 32) / cycles, and the
/// calibrated flag. Uses EAX, EBX, ECX, EDX, EBP.
fn store_rates(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut bad = a.create_label();
    a.test(eax, eax)?;
    a.jz(bad)?;
    a.mov(ebp, eax)?;
    // Rate: the 64-bit product, then a two-step division (the quotient may exceed 32 bits).
    a.mov(ecx, PIT_HZ)?;
    a.mul(ecx)?;
    a.mov(ecx, LATCH)?;
    a.mov(ebx, eax)?;
    a.mov(eax, edx)?;
    a.xor(edx, edx)?;
    a.div(ecx)?;
    a.mov(dword_ptr(esi + tm::TSC_HZ + 4), eax)?;
    a.mov(eax, ebx)?;
    a.div(ecx)?;
    a.mov(dword_ptr(esi + tm::TSC_HZ), eax)?;
    for (field, numerator) in [(tm::NS_Q32, WINDOW_NS), (tm::PIT_Q32, LATCH)] {
        a.mov(edx, numerator)?;
        a.mov(ecx, ebp)?;
        super::div_q32(a)?;
        a.mov(dword_ptr(esi + field), eax)?;
        a.mov(dword_ptr(esi + field + 4), edx)?;
    }
    a.or(dword_ptr(esi + tm::FLAGS), flag::CALIBRATED)?;
    a.set_label(&mut bad)?;
    a.nop()?;
    Ok(())
}

/// Init for a backend with the time machinery (interrupts are off): with ESI = the per-ROM
/// region and EBX = the private-RAM block, PAGE_OFFSET and the TSC-deadline flag, then `body`
/// (the rates, the wall clock, the ready word); returns 0. Without private RAM it just
/// returns 0. Keeps EBX, ESI, EDI, EBP.
pub fn init32(
    e: &mut Emit,
    body: impl FnOnce(&mut Emit) -> Result<(), GenError>,
) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    let mut no_deadline = e.a.create_label();
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    e.a.push(ebp)?;
    let bias = ram::pointer(e, ebx, none)?;
    e.a.sub(ebx, bias)?;
    let time = e.ram_region(&super::TIME)?.offset as i32;
    e.a.lea(esi, ptr(ebx + time))?;
    // PAGE_OFFSET = the image's linear address − its physical address.
    e.image_base(eax)?;
    e.a.sub(eax, dword_ptr(ebx + ram::off::ROM_PHYS as i32))?;
    e.a.mov(dword_ptr(esi + tm::PAGE_OFFSET), eax)?;
    e.a.push(ebx)?;
    e.a.mov(eax, 1)?;
    e.a.cpuid()?;
    e.a.pop(ebx)?;
    e.a.test(ecx, CPUID_TSC_DEADLINE)?;
    e.a.jz(no_deadline)?;
    e.a.or(dword_ptr(esi + tm::FLAGS), flag::TSC_DEADLINE)?;
    e.a.set_label(&mut no_deadline)?;
    body(e)?;
    e.a.set_label(&mut none)?;
    e.a.pop(ebp)?;
    e.a.pop(edi)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.xor(eax, eax)?;
    e.a.ret()?;
    Ok(())
}

/// Init's native time part (ESI = the per-ROM region, EBX = the block): the TSC rate against
/// PIT channel 2, the RTC base; the block is made ready when the rate is known. Keeps EBX,
/// ESI.
pub fn init_native(e: &mut Emit) -> Result<(), GenError> {
    let mut not_ready = e.a.create_label();
    let calibrate = e.helper(helper::CALIBRATE)?;
    e.a.call(calibrate)?;
    rebase_wallclock(e)?;
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::CALIBRATED)?;
    e.a.jz(not_ready)?;
    e.a.or(dword_ptr(ebx + ram::off::READY as i32), ram::ready::READY)?;
    e.a.set_label(&mut not_ready)?;
    e.a.nop()?;
    Ok(())
}

/// WALL_NS := the RTC's seconds × 10^9, WALL_TSC := now (ESI = the per-ROM region). Uses EAX,
/// ECX, EDX.
fn rebase_wallclock(e: &mut Emit) -> Result<(), GenError> {
    let rtc = e.helper(helper::RTC_READ)?;
    e.a.call(rtc)?;
    e.a.mov(ecx, 1_000_000_000)?;
    e.a.mul(ecx)?;
    e.a.mov(dword_ptr(esi + tm::WALL_NS), eax)?;
    e.a.mov(dword_ptr(esi + tm::WALL_NS + 4), edx)?;
    e.a.rdtsc()?;
    e.a.mov(dword_ptr(esi + tm::WALL_TSC), eax)?;
    e.a.mov(dword_ptr(esi + tm::WALL_TSC + 4), edx)?;
    Ok(())
}

/// Helper `rtc_read`: EAX = the CMOS RTC as seconds since 1970-01-01T00:00Z (read twice until
/// two reads agree, after the update-in-progress flag clears). Keeps every other register.
pub fn emit_rtc_read(e: &mut Emit) -> Result<(), GenError> {
    let a = &mut e.a;
    let mut again = a.create_label();
    let mut uip = a.create_label();
    a.push(ebx)?;
    a.push(ecx)?;
    a.push(edx)?;
    a.push(esi)?;
    a.push(edi)?;
    a.push(ebp)?;
    a.set_label(&mut again)?;
    a.mov(ecx, 1_000_000)?;
    a.set_label(&mut uip)?;
    cmos(a, 0x0A)?;
    a.test(al, 0x80)?;
    a.loopne(uip)?;
    read_fields(a)?; // EBX = s | m << 8 | h << 16 | B << 24, EDX = d | mon << 8 | y << 16 | c << 24
    a.push(ebx)?;
    a.push(edx)?;
    read_fields(a)?;
    a.pop(ecx)?;
    a.pop(eax)?;
    a.cmp(eax, ebx)?;
    a.jne(again)?;
    a.cmp(ecx, edx)?;
    a.jne(again)?;
    to_binary(a)?;
    to_seconds(a)?;
    a.pop(ebp)?;
    a.pop(edi)?;
    a.pop(esi)?;
    a.pop(edx)?;
    a.pop(ecx)?;
    a.pop(ebx)?;
    a.ret()?;
    Ok(())
}

/// AL = CMOS register `reg` (NMI left enabled, as Linux's CMOS_READ does).
fn cmos(a: &mut CodeAssembler, reg: u32) -> Result<(), GenError> {
    a.mov(al, reg)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    Ok(())
}

/// EBX = seconds | minutes << 8 | hours << 16 | status B << 24; EDX = day | month << 8 |
/// year << 16 | century << 24 (raw register values). Uses EAX.
fn read_fields(a: &mut CodeAssembler) -> Result<(), GenError> {
    for (regs, out) in [
        ([0x0Bu32, 0x04, 0x02, 0x00], ebx),
        ([0x32, 0x09, 0x08, 0x07], edx),
    ] {
        a.xor(out, out)?;
        for reg in regs {
            a.shl(out, 8)?;
            cmos(a, reg)?;
            a.mov(out_low(out), al)?;
        }
    }
    Ok(())
}

fn out_low(r: AsmRegister32) -> AsmRegister8 {
    if r == ebx { bl } else { dl }
}

/// Converts the fields in EBX/EDX to binary (status B bit 2 clear = BCD) and the hour to 24 h
/// (status B bit 1 clear = 12 h, PM in the hour's bit 7); ESI = seconds, EDI = minutes,
/// EBP = hours, EBX = day, ECX = month, EDX = full year (the century register when it holds
/// 19–21, else 20xx for years below 70).
fn to_binary(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut binary = a.create_label();
    let mut h24 = a.create_label();
    let mut century_ok = a.create_label();
    let mut have_year = a.create_label();
    // Unpack into the stack: [esp] s, m, h, B, d, mon, y, c (bytes).
    a.push(edx)?;
    a.push(ebx)?;
    a.test(byte_ptr(esp + 3), 0x04)?;
    a.jnz(binary)?;
    for i in [0, 1, 4, 5, 6, 7] {
        bcd_byte(a, i)?;
    }
    // The hour keeps its PM bit.
    a.mov(al, byte_ptr(esp + 2))?;
    a.and(al, 0x80)?;
    a.and(byte_ptr(esp + 2), 0x7F)?;
    bcd_byte(a, 2)?;
    a.or(byte_ptr(esp + 2), al)?;
    a.set_label(&mut binary)?;
    a.movzx(ebp, byte_ptr(esp + 2))?;
    a.test(byte_ptr(esp + 3), 0x02)?;
    a.jnz(h24)?;
    // 12 h: 12 AM = 0, 12 PM = 12, PM adds 12.
    a.mov(eax, ebp)?;
    a.and(eax, 0x7F)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 12)?;
    a.div(ecx)?;
    a.test(ebp, 0x80)?;
    a.mov(ebp, edx)?;
    a.jz(h24)?;
    a.add(ebp, 12)?;
    a.set_label(&mut h24)?;
    a.and(ebp, 0x7F)?;
    a.movzx(esi, byte_ptr(esp))?;
    a.movzx(edi, byte_ptr(esp + 1))?;
    a.movzx(ebx, byte_ptr(esp + 4))?;
    a.movzx(ecx, byte_ptr(esp + 5))?;
    a.movzx(edx, byte_ptr(esp + 6))?;
    a.movzx(eax, byte_ptr(esp + 7))?;
    a.lea(esp, ptr(esp + 8))?;
    a.cmp(eax, 19)?;
    a.jb(century_ok)?;
    a.cmp(eax, 21)?;
    a.ja(century_ok)?;
    a.imul_3(eax, eax, 100)?;
    a.add(edx, eax)?;
    a.jmp(have_year)?;
    a.set_label(&mut century_ok)?;
    a.add(edx, 1900)?;
    a.cmp(edx, 1970)?;
    a.jae(have_year)?;
    a.add(edx, 100)?;
    a.set_label(&mut have_year)?;
    Ok(())
}

/// Byte `[esp + i]` from BCD to binary. Uses ECX.
fn bcd_byte(a: &mut CodeAssembler, i: i32) -> Result<(), GenError> {
    a.movzx(ecx, byte_ptr(esp + i))?;
    a.shr(ecx, 4)?;
    a.imul_3(ecx, ecx, 6)?;
    a.sub(byte_ptr(esp + i), cl)?;
    Ok(())
}

/// EAX = seconds since 1970 from ESI s, EDI min, EBP h, EBX day, ECX month, EDX year
/// (days from the civil date: March-based years, eras of 400 years).
fn to_seconds(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut after_feb = a.create_label();
    let mut doy = a.create_label();
    // y -= month <= 2; month index from March: mp = month > 2 ? month - 3 : month + 9.
    a.cmp(ecx, 2)?;
    a.ja(after_feb)?;
    a.dec(edx)?;
    a.add(ecx, 9)?;
    a.jmp(doy)?;
    a.set_label(&mut after_feb)?;
    a.sub(ecx, 3)?;
    a.set_label(&mut doy)?;
    // doy = (153 * mp + 2) / 5 + day - 1.
    a.push(edx)?;
    a.imul_3(eax, ecx, 153)?;
    a.add(eax, 2)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 5)?;
    a.div(ecx)?;
    a.lea(ecx, ptr(eax + ebx - 1))?; // ECX = doy
    a.pop(eax)?; // EAX = y (≥ 1969: no eras before 1600 matter, y / 400 with y > 0)
    a.push(ecx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 400)?;
    a.div(ecx)?; // EAX = era, EDX = yoe
    a.imul_3(ebx, eax, 146_097)?; // era days
    a.imul_3(eax, edx, 365)?;
    a.add(ebx, eax)?;
    a.mov(eax, edx)?;
    a.shr(eax, 2)?;
    a.add(ebx, eax)?; // + yoe / 4
    a.mov(eax, edx)?;
    a.xor(edx, edx)?;
    a.mov(ecx, 100)?;
    a.div(ecx)?;
    a.sub(ebx, eax)?; // − yoe / 100
    a.pop(ecx)?;
    a.add(ebx, ecx)?; // + doy
    a.sub(ebx, 719_468)?; // days since 1970-01-01
    a.imul_3(eax, ebx, 86_400)?;
    a.imul_3(ebp, ebp, 3_600)?;
    a.add(eax, ebp)?;
    a.imul_3(edi, edi, 60)?;
    a.add(eax, edi)?;
    a.add(eax, esi)?;
    Ok(())
}

/// GetCycleFrequency: EDX:EAX = TSC cycles per second (measured at Init).
pub fn emit_frequency(e: &mut Emit) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    time_ptr(e, ecx, none)?;
    e.a.mov(eax, dword_ptr(ecx + tm::TSC_HZ))?;
    e.a.mov(edx, dword_ptr(ecx + tm::TSC_HZ + 4))?;
    e.a.ret()?;
    e.a.set_label(&mut none)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.ret()?;
    Ok(())
}

/// GetCycleCounter: EAX = counter → EDX:EAX. REAL (0) and AVAILABLE (1) are the TSC; STOLEN
/// and anything else read 0.
pub fn emit_counter(e: &mut Emit) -> Result<(), GenError> {
    let mut zero = e.a.create_label();
    e.a.cmp(eax, VMI_CYCLES_STOLEN as i32)?;
    e.a.jae(zero)?;
    e.a.rdtsc()?;
    e.a.ret()?;
    e.a.set_label(&mut zero)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.ret()?;
    Ok(())
}

/// EDX:EAX = the wall clock now, ns (ESI = the per-ROM region): WALL_NS + (TSC − WALL_TSC) ×
/// NS_Q32 >> 32. Uses EBX, ECX, EDI.
fn wallclock_now(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.rdtsc()?;
    a.sub(eax, dword_ptr(esi + tm::WALL_TSC))?;
    a.sbb(edx, dword_ptr(esi + tm::WALL_TSC + 4))?;
    mul_q32(a, dword_ptr(esi + tm::NS_Q32))?;
    a.add(eax, dword_ptr(esi + tm::WALL_NS))?;
    a.adc(edx, dword_ptr(esi + tm::WALL_NS + 4))?;
    Ok(())
}

/// GetWallclockTime: EDX:EAX = ns since 1970.
pub fn emit_wallclock(e: &mut Emit) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    let mut out = e.a.create_label();
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    time_ptr(e, esi, none)?;
    wallclock_now(&mut e.a)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut none)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.set_label(&mut out)?;
    e.a.pop(edi)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.ret()?;
    Ok(())
}

/// WallclockUpdated: EAX = 1 if the RTC moved away from the wall clock the ROM keeps (by more
/// than a second: it was set) — the RTC then becomes the new base — else 0.
pub fn emit_updated(e: &mut Emit) -> Result<(), GenError> {
    let mut same = e.a.create_label();
    let mut out = e.a.create_label();
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    time_ptr(e, esi, same)?;
    wallclock_now(&mut e.a)?;
    e.a.mov(ecx, 1_000_000_000)?;
    e.a.div(ecx)?; // EAX = the kept wall clock in seconds
    e.a.mov(ebx, eax)?;
    let rtc = e.helper(helper::RTC_READ)?;
    e.a.call(rtc)?;
    e.a.sub(eax, ebx)?;
    e.a.inc(eax)?; // the difference + 1 within 0..=2 means |difference| ≤ 1
    e.a.cmp(eax, 2)?;
    e.a.jbe(same)?;
    rebase_wallclock(e)?;
    e.a.mov(eax, 1)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut same)?;
    e.a.xor(eax, eax)?;
    e.a.set_label(&mut out)?;
    e.a.pop(edi)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.ret()?;
    Ok(())
}
