//! SetAlarm / CancelAlarm (68–69): one alarm per CPU and counter (REAL, AVAILABLE; STOLEN
//! and other counters are no-ops), raised through the calling CPU's local-APIC timer (flags
//! bit 16 set: LVTT, with the vector and mask bit the kernel programmed there) or through
//! IRQ0 (bit 16 clear: PIT channel 0).
//!
//! State: each CPU's alarms live in its slot of the per-CPU region, the slot found by the
//! CPU's GDT base (`sgdt`: every CPU of an SMP kernel runs on its own GDT, and reading it
//! costs no VM exit — unlike CPUID or an APIC read). A guest whose CPUs share one GDT
//! therefore shares one slot: its CPUs' alarms replace each other, and CancelAlarm on one CPU
//! answers for another's (Linux never does this: each CPU has its per-CPU GDT from early
//! boot, before it can call SetAlarm). Semantics (VMI spec, vmi-abi.md §5.1):
//! absolute expiries on the counter; a period of 0 (or the one-shot flag) is a one-shot, which
//! disarms on firing; a periodic alarm fires at e0 + k·p, and after firing its next expiry is
//! the first one after now (missed periods coalesce); re-arming replaces; CancelAlarm answers
//! whether the alarm was armed (a one-shot past its expiry has fired: not armed).
//!
//! Hardware, chosen anew on every change ([`emit_program`]):
//! - one periodic alarm: the timer's own periodic mode (LVTT periodic with TMICT = the period
//!   in APIC-timer ticks, or PIT mode 2), so ticks go on even while the kernel keeps the LVTT
//!   masked for a while; an expiry already due also gets its tick at once (a self-IPI on the
//!   LVTT vector, unless the LVTT is masked);
//! - otherwise the earliest expiry as a one-shot: TSC-deadline where the CPU has it (exact),
//!   else LVTT one-shot (ticks rounded up, plus a margin of 1/2048, so it never fires early),
//!   or PIT mode 0 for IRQ0. When more is armed than the hardware holds — two alarms, or a
//!   one-shot beyond the timer's range (2^32 APIC-timer ticks; 65535 PIT ticks ≈ 55 ms) —
//!   the CPU's alarms are serviced at the kernel's APIC EOI after the timer interrupt
//!   ([`after_eoi`]): due one-shots disarm, periodic ones advance, the next expiry is
//!   programmed. A one-shot beyond the range so fires early by design, never late (Linux's
//!   clockevents reprogram on an early event); IRQ0 behind a PIC (EOI not through the ROM)
//!   gets no service, and a periodic IRQ0 alarm's period is limited to the PIT's 55 ms.
//! - nothing armed: the hardware stopped (TMICT 0, the TSC deadline cleared, PIT channel 0 in
//!   mode 5 — waiting for a gate edge it never gets — as Linux leaves it).

use super::{al, flag, helper, mode, mul_q32, time_ptr, tm};
use crate::emit::Emit;
use crate::error::GenError;
use crate::ram;
use iced_x86::code_asm::*;
use vmi_abi::consts::{VMI_ALARM_COUNTER_MASK, VMI_ALARM_IS_PERIODIC, VMI_ALARM_WIRED_LVTT};

/// APIC registers.
mod reg {
    /// Interrupt command, low.
    pub const ICR: i32 = 0x300;
    /// LVT timer.
    pub const LVTT: i32 = 0x320;
    /// Timer initial count.
    pub const TMICT: i32 = 0x380;
    /// Timer current count.
    pub const TMCCT: i32 = 0x390;
    /// Timer divide configuration.
    pub const TDCR: i32 = 0x3E0;
}
/// LVTT: masked.
const LVT_MASKED: u32 = 1 << 16;
use super::apic::LVT_MODE;
/// LVTT: periodic.
const LVT_PERIODIC: u32 = 1 << 17;
/// LVTT: TSC-deadline.
const LVT_DEADLINE: u32 = 2 << 17;
/// TDCR: divide by 1.
const DIVIDE_BY_1: u32 = 0xB;
/// ICR: destination shorthand "self".
const ICR_SELF: u32 = 1 << 18;
/// IA32_TSC_DEADLINE.
const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// PIT command: channel 0, lobyte/hibyte, mode 0 / mode 2 / mode 5 (stopped), binary.
const PIT_MODE0: u32 = 0x30;
const PIT_MODE2: u32 = 0x34;
const PIT_STOP: u32 = 0x3A;
/// TSC cycles the APIC-timer calibration counts over (at least; 10 ms at 2 GHz).
const APIC_WINDOW: u32 = 20_000_000;
/// Offset from the per-ROM region to the per-CPU region.
fn slots_from_time(e: &Emit) -> Result<i32, GenError> {
    let time = e.ram_region(&super::TIME)?.offset as i32;
    let cpus = e.ram_region(&super::ALARMS)?.offset as i32;
    Ok(cpus - time)
}

/// Helper `cpu_slot`: ESI = the per-ROM region → EDI = the calling CPU's alarm slot (keyed by
/// its GDT base, claimed with `lock cmpxchg` on first use), or 0 when every slot is taken.
/// Keeps EBX, ESI, EBP; changes EAX, ECX, EDX.
pub fn emit_cpu_slot(e: &mut Emit) -> Result<(), GenError> {
    let off = slots_from_time(e)?;
    let a = &mut e.a;
    let mut probe = a.create_label();
    let mut next = a.create_label();
    let mut hit = a.create_label();
    a.sub(esp, 8)?;
    a.sgdt(ptr(esp))?;
    a.mov(edx, dword_ptr(esp + 2))?;
    a.add(esp, 8)?;
    a.mov(ecx, edx)?;
    a.shr(ecx, 12)?;
    a.and(ecx, (ram::MAX_CPUS - 1) as i32)?;
    a.mov(edi, ram::MAX_CPUS)?;
    a.set_label(&mut probe)?;
    a.mov(eax, dword_ptr(esi + ecx * 4 + tm::KEYS))?;
    a.cmp(eax, edx)?;
    a.je(hit)?;
    a.test(eax, eax)?;
    a.jnz(next)?;
    a.lock().cmpxchg(dword_ptr(esi + ecx * 4 + tm::KEYS), edx)?;
    a.je(hit)?;
    a.cmp(eax, edx)?;
    a.je(hit)?;
    a.set_label(&mut next)?;
    a.inc(ecx)?;
    a.and(ecx, (ram::MAX_CPUS - 1) as i32)?;
    a.dec(edi)?;
    a.jnz(probe)?;
    a.ret()?;
    a.set_label(&mut hit)?;
    a.shl(ecx, al::SIZE.trailing_zeros())?;
    a.lea(edi, ptr(esi + ecx + off))?;
    a.ret()?;
    Ok(())
}

/// EDX:EAX compared with the u64 at `m`: jumps to `below` when EDX:EAX < [m].
fn jb64(a: &mut CodeAssembler, m: AsmMemoryOperand, below: CodeLabel) -> Result<(), GenError> {
    let mut done = a.create_label();
    a.cmp(edx, dword_ptr(m + 4))?;
    a.jb(below)?;
    a.ja(done)?;
    a.cmp(eax, dword_ptr(m))?;
    a.jb(below)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// ECX = the APIC's linear address (found on first use), or a jump to `none`. ESI = the
/// per-ROM region. Changes EAX.
fn apic_in_ecx(e: &mut Emit, none: CodeLabel) -> Result<(), GenError> {
    let mut have = e.a.create_label();
    e.a.mov(ecx, dword_ptr(esi + tm::APIC))?;
    e.a.test(ecx, ecx)?;
    e.a.jnz(have)?;
    let find = e.helper(helper::APIC_FIND)?;
    e.a.call(find)?;
    e.a.mov(ecx, eax)?;
    e.a.test(ecx, ecx)?;
    e.a.jz(none)?;
    e.a.set_label(&mut have)?;
    Ok(())
}

/// Helper `alarm_program`: ESI = the per-ROM region, EDI = a CPU's slot (interrupts off).
/// Stops the hardware the slot used, then programs it for the slot's armed alarms (see the
/// module documentation); updates MODE, PROGRAMMED, SERVICE. Keeps ESI, EDI, EBP; changes
/// EAX, EBX, ECX, EDX.
pub fn emit_program(e: &mut Emit) -> Result<(), GenError> {
    let mut idle = e.a.create_label();
    let mut periodic = e.a.create_label();
    let mut oneshot = e.a.create_label();
    let mut done = e.a.create_label();
    e.a.push(ebp)?;
    stop_hardware(e)?;
    // [esp] = now (u64), [esp+8] = clamped flag.
    e.a.push(0)?;
    e.a.rdtsc()?;
    e.a.push(edx)?;
    e.a.push(eax)?;
    earliest(&mut e.a)?; // EBP = armed count, EBX = earliest counter
    e.a.test(ebp, ebp)?;
    e.a.jz(idle)?;
    e.a.cmp(ebp, 1)?;
    e.a.jne(oneshot)?;
    e.a.mov(eax, dword_ptr(edi + ebx * 8 + al::PERIOD))?;
    e.a.or(eax, dword_ptr(edi + ebx * 8 + al::PERIOD + 4))?;
    e.a.jnz(periodic)?;
    e.a.set_label(&mut oneshot)?;
    program_oneshot(e)?;
    e.a.jmp(done)?;
    e.a.set_label(&mut periodic)?;
    program_periodic(e)?;
    e.a.jmp(done)?;
    e.a.set_label(&mut idle)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::IDLE)?;
    e.a.set_label(&mut done)?;
    update_service(&mut e.a)?;
    e.a.add(esp, 12)?;
    e.a.pop(ebp)?;
    e.a.ret()?;
    Ok(())
}

/// EBP = how many of the slot's two alarms are armed, EBX = the one with the earliest expiry.
fn earliest(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.xor(ebp, ebp)?;
    a.mov(ebx, -1)?;
    for c in 0..2i32 {
        let mut skip = a.create_label();
        let mut take = a.create_label();
        a.test(dword_ptr(edi + al::FLAGS + 4 * c), al::ARMED)?;
        a.jz(skip)?;
        a.inc(ebp)?;
        if c == 1 {
            a.cmp(ebx, -1)?;
            a.je(take)?;
            a.mov(eax, dword_ptr(edi + al::EXPIRY + 8))?;
            a.mov(edx, dword_ptr(edi + al::EXPIRY + 12))?;
            jb64(a, dword_ptr(edi + al::EXPIRY), take)?;
            a.jmp(skip)?;
        }
        a.set_label(&mut take)?;
        a.mov(ebx, c)?;
        a.set_label(&mut skip)?;
        a.nop()?;
    }
    Ok(())
}

/// Stops the hardware the slot's MODE says is running (ESI, EDI). Changes EAX, ECX, EDX.
fn stop_hardware(e: &mut Emit) -> Result<(), GenError> {
    let mut lvtt = e.a.create_label();
    let mut done = e.a.create_label();
    let mut deadline = e.a.create_label();
    e.a.mov(eax, dword_ptr(edi + al::MODE))?;
    e.a.cmp(eax, mode::IDLE)?;
    e.a.je(done)?;
    e.a.cmp(eax, mode::PIT_ONESHOT)?;
    e.a.jb(lvtt)?;
    e.a.mov(al, PIT_STOP)?;
    e.a.out(0x43, al)?;
    e.a.jmp(done)?;
    e.a.set_label(&mut lvtt)?;
    e.a.cmp(eax, mode::TSC_DEADLINE)?;
    e.a.je(deadline)?;
    apic_in_ecx(e, done)?;
    e.a.mov(dword_ptr(ecx + reg::TMICT), 0)?;
    e.a.jmp(done)?;
    e.a.set_label(&mut deadline)?;
    e.a.mov(ecx, MSR_TSC_DEADLINE)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.wrmsr()?;
    e.a.set_label(&mut done)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::IDLE)?;
    e.a.mov(dword_ptr(edi + al::PROGRAMMED), 0)?;
    e.a.mov(dword_ptr(edi + al::PROGRAMMED + 4), 0)?;
    Ok(())
}

/// SERVICE := armed count ≥ 2 or clamped; the global count follows (EBP = armed count,
/// [esp+8] = clamped, at entry to this sequence [esp] = now).
fn update_service(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut set = a.create_label();
    let mut store = a.create_label();
    let mut same = a.create_label();
    let mut up = a.create_label();
    a.xor(eax, eax)?;
    a.cmp(ebp, 2)?;
    a.jae(set)?;
    a.cmp(dword_ptr(esp + 8), 0)?;
    a.je(store)?;
    a.set_label(&mut set)?;
    a.mov(eax, 1)?;
    a.set_label(&mut store)?;
    a.cmp(eax, dword_ptr(edi + al::SERVICE))?;
    a.je(same)?;
    a.mov(dword_ptr(edi + al::SERVICE), eax)?;
    a.test(eax, eax)?;
    a.jnz(up)?;
    a.lock().dec(dword_ptr(esi + tm::SERVICED))?;
    a.jmp(same)?;
    a.set_label(&mut up)?;
    a.lock().inc(dword_ptr(esi + tm::SERVICED))?;
    a.set_label(&mut same)?;
    a.nop()?;
    Ok(())
}

/// The earliest alarm (EBX) as a one-shot: TSC-deadline, LVTT one-shot or PIT mode 0.
/// Stack: [esp+4] = the return address of a `program_*` body is not used: [esp] = now.
fn program_oneshot(e: &mut Emit) -> Result<(), GenError> {
    let mut pit = e.a.create_label();
    let mut no_deadline = e.a.create_label();
    let mut out = e.a.create_label();
    // PROGRAMMED := the expiry.
    e.a.mov(eax, dword_ptr(edi + ebx * 8 + al::EXPIRY))?;
    e.a.mov(edx, dword_ptr(edi + ebx * 8 + al::EXPIRY + 4))?;
    e.a.mov(dword_ptr(edi + al::PROGRAMMED), eax)?;
    e.a.mov(dword_ptr(edi + al::PROGRAMMED + 4), edx)?;
    e.a.test(dword_ptr(edi + ebx * 4 + al::FLAGS), VMI_ALARM_WIRED_LVTT)?;
    e.a.jz(pit)?;
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::TSC_DEADLINE)?;
    e.a.jz(no_deadline)?;
    // TSC-deadline: LVTT mode 10, a fence, the absolute expiry.
    apic_in_ecx(e, out)?;
    lvtt_mode(&mut e.a, LVT_DEADLINE)?;
    e.a.lock().or(dword_ptr(esp), 0)?;
    e.a.mov(eax, dword_ptr(edi + al::PROGRAMMED))?;
    e.a.mov(edx, dword_ptr(edi + al::PROGRAMMED + 4))?;
    e.a.mov(ecx, MSR_TSC_DEADLINE)?;
    e.a.wrmsr()?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::TSC_DEADLINE)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut no_deadline)?;
    apic_timer_ready(e, out)?;
    apic_in_ecx(e, out)?;
    delta(&mut e.a)?;
    ticks(&mut e.a, tm::APIC_Q32, true)?;
    clamp(&mut e.a, u32::MAX)?;
    e.a.mov(edx, eax)?;
    lvtt_mode(&mut e.a, 0)?;
    e.a.mov(dword_ptr(ecx + reg::TDCR), DIVIDE_BY_1)?;
    e.a.mov(dword_ptr(ecx + reg::TMICT), edx)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::LVTT_ONESHOT)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut pit)?;
    delta(&mut e.a)?;
    ticks(&mut e.a, tm::PIT_Q32, true)?;
    clamp(&mut e.a, 0xFFFF)?;
    pit_load(&mut e.a, PIT_MODE0)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::PIT_ONESHOT)?;
    e.a.set_label(&mut out)?;
    e.a.nop()?;
    Ok(())
}

/// The one periodic alarm (EBX): LVTT periodic (and a tick at once if it is due) or PIT mode 2.
fn program_periodic(e: &mut Emit) -> Result<(), GenError> {
    let mut pit = e.a.create_label();
    let mut out = e.a.create_label();
    let mut not_due = e.a.create_label();
    e.a.test(dword_ptr(edi + ebx * 4 + al::FLAGS), VMI_ALARM_WIRED_LVTT)?;
    e.a.jz(pit)?;
    apic_timer_ready(e, out)?;
    apic_in_ecx(e, out)?;
    e.a.mov(eax, dword_ptr(edi + ebx * 8 + al::PERIOD))?;
    e.a.mov(edx, dword_ptr(edi + ebx * 8 + al::PERIOD + 4))?;
    ticks(&mut e.a, tm::APIC_Q32, false)?;
    clamp(&mut e.a, u32::MAX)?;
    e.a.mov(edx, eax)?;
    lvtt_mode(&mut e.a, LVT_PERIODIC)?;
    e.a.mov(dword_ptr(ecx + reg::TDCR), DIVIDE_BY_1)?;
    e.a.mov(dword_ptr(ecx + reg::TMICT), edx)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::LVTT_PERIODIC)?;
    // Due already (expiry ≤ now): its first tick at once, unless the LVTT is masked.
    e.a.mov(eax, dword_ptr(esp))?;
    e.a.mov(edx, dword_ptr(esp + 4))?;
    jb64(&mut e.a, dword_ptr(edi + ebx * 8 + al::EXPIRY), not_due)?;
    e.a.mov(eax, dword_ptr(ecx + reg::LVTT))?;
    e.a.test(eax, LVT_MASKED)?;
    e.a.jnz(not_due)?;
    e.a.and(eax, 0xFF)?;
    e.a.or(eax, ICR_SELF)?;
    e.a.mov(dword_ptr(ecx + reg::ICR), eax)?;
    e.a.set_label(&mut not_due)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut pit)?;
    e.a.mov(eax, dword_ptr(edi + ebx * 8 + al::PERIOD))?;
    e.a.mov(edx, dword_ptr(edi + ebx * 8 + al::PERIOD + 4))?;
    ticks(&mut e.a, tm::PIT_Q32, false)?;
    clamp(&mut e.a, 0xFFFF)?;
    pit_load(&mut e.a, PIT_MODE2)?;
    e.a.mov(dword_ptr(edi + al::MODE), mode::PIT_PERIODIC)?;
    e.a.set_label(&mut out)?;
    e.a.nop()?;
    Ok(())
}

/// EDX:EAX = max(PROGRAMMED − now, 1) ([esp] = now, the program frame). Keeps ECX.
fn delta(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut positive = a.create_label();
    let mut out = a.create_label();
    a.mov(eax, dword_ptr(edi + al::PROGRAMMED))?;
    a.mov(edx, dword_ptr(edi + al::PROGRAMMED + 4))?;
    a.sub(eax, dword_ptr(esp))?;
    a.sbb(edx, dword_ptr(esp + 4))?;
    a.jns(positive)?;
    a.mov(eax, 1)?;
    a.xor(edx, edx)?;
    a.jmp(out)?;
    a.set_label(&mut positive)?;
    a.test(edx, edx)?;
    a.jnz(out)?;
    a.test(eax, eax)?;
    a.jnz(out)?;
    a.mov(eax, 1)?;
    a.set_label(&mut out)?;
    a.nop()?;
    Ok(())
}

/// EDX:EAX (cycles) → EDX:EAX timer ticks through the 32.32 rate at `[esi + q]`; `late`: round
/// up and add 1/2048 (a one-shot never fires early), else at least 1. Keeps EBX, ECX, EDI.
fn ticks(a: &mut CodeAssembler, q: i32, late: bool) -> Result<(), GenError> {
    a.push(ecx)?;
    a.push(edi)?;
    a.push(ebx)?;
    mul_q32(a, dword_ptr(esi + q))?;
    if late {
        a.mov(ebx, eax)?;
        a.mov(ecx, edx)?;
        a.shrd(ebx, ecx, 11)?;
        a.shr(ecx, 11)?;
        a.add(eax, ebx)?;
        a.adc(edx, ecx)?;
        a.add(eax, 1)?;
        a.adc(edx, 0)?;
    } else {
        let mut nonzero = a.create_label();
        a.mov(ebx, eax)?;
        a.or(ebx, edx)?;
        a.jnz(nonzero)?;
        a.inc(eax)?;
        a.set_label(&mut nonzero)?;
        a.nop()?;
    }
    a.pop(ebx)?;
    a.pop(edi)?;
    a.pop(ecx)?;
    Ok(())
}

/// EAX = min(EDX:EAX, max); a clamp sets the program frame's clamped flag (`[esp+8]`).
fn clamp(a: &mut CodeAssembler, max: u32) -> Result<(), GenError> {
    let mut big = a.create_label();
    let mut out = a.create_label();
    a.test(edx, edx)?;
    a.jnz(big)?;
    a.cmp(eax, max)?;
    a.jbe(out)?;
    a.set_label(&mut big)?;
    a.mov(eax, max)?;
    a.mov(dword_ptr(esp + 8), 1)?;
    a.set_label(&mut out)?;
    a.nop()?;
    Ok(())
}

/// LVTT timer mode := `bits` (ECX = the APIC), keeping the kernel's vector and mask. Uses EAX.
fn lvtt_mode(a: &mut CodeAssembler, bits: u32) -> Result<(), GenError> {
    a.mov(eax, dword_ptr(ecx + reg::LVTT))?;
    a.and(eax, !LVT_MODE)?;
    if bits != 0 {
        a.or(eax, bits)?;
    }
    a.mov(dword_ptr(ecx + reg::LVTT), eax)?;
    Ok(())
}

/// PIT channel 0 := `command`, count AX (0 = 65536). Uses EDX.
fn pit_load(a: &mut CodeAssembler, command: u32) -> Result<(), GenError> {
    a.mov(edx, eax)?;
    a.mov(al, command)?;
    a.out(0x43, al)?;
    a.mov(al, dl)?;
    a.out(0x40, al)?;
    a.mov(al, dh)?;
    a.out(0x40, al)?;
    Ok(())
}

/// Makes sure the APIC-timer rate is known (jumps to `none` without an APIC): with the LVTT
/// masked and the timer counting down from 2^32 − 1 (divide by 1), two samples of the current
/// count [`APIC_WINDOW`] TSC cycles apart, each the narrowest of 8 TSC brackets around the
/// read (as the TSC calibration does), give APIC_Q32 = ticks / cycles. Once. Changes EAX,
/// ECX, EDX.
fn apic_timer_ready(e: &mut Emit, none: CodeLabel) -> Result<(), GenError> {
    let mut ready = e.a.create_label();
    let mut spin = e.a.create_label();
    let mut sample = e.a.create_label();
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::APIC_TIMER)?;
    e.a.jnz(ready)?;
    apic_in_ecx(e, none)?;
    let a = &mut e.a;
    a.push(ebx)?;
    a.push(ebp)?;
    a.push(edi)?;
    a.push(dword_ptr(ecx + reg::LVTT))?;
    a.mov(eax, dword_ptr(esp))?;
    a.and(eax, !LVT_MODE)?;
    a.or(eax, LVT_MASKED)?;
    a.mov(dword_ptr(ecx + reg::LVTT), eax)?;
    a.mov(dword_ptr(ecx + reg::TDCR), DIVIDE_BY_1)?;
    a.mov(dword_ptr(ecx + reg::TMICT), u32::MAX)?;
    a.call(sample)?; // EBX = TSC, EDI = count
    a.push(ebx)?;
    a.push(edi)?;
    a.set_label(&mut spin)?;
    a.rdtsc()?;
    a.sub(eax, dword_ptr(esp + 4))?;
    a.cmp(eax, APIC_WINDOW)?;
    a.jb(spin)?;
    a.call(sample)?;
    a.mov(dword_ptr(ecx + reg::TMICT), 0)?;
    a.pop(edx)?;
    a.sub(edx, edi)?; // ticks (the count falls)
    a.pop(eax)?;
    a.sub(ebx, eax)?; // cycles
    a.pop(dword_ptr(ecx + reg::LVTT))?;
    a.push(ecx)?;
    a.mov(ecx, ebx)?;
    super::div_q32(a)?;
    a.pop(ecx)?;
    a.mov(dword_ptr(esi + tm::APIC_Q32), eax)?;
    a.mov(dword_ptr(esi + tm::APIC_Q32 + 4), edx)?;
    a.or(dword_ptr(esi + tm::FLAGS), flag::APIC_TIMER)?;
    a.pop(edi)?;
    a.pop(ebp)?;
    a.pop(ebx)?;
    a.jmp(ready)?;
    // sample: EBX = the TSC in the middle of the narrowest of 8 brackets around a read of the
    // current count, EDI = that count (ECX = the APIC). Uses EAX, EDX, EBP.
    a.set_label(&mut sample)?;
    let mut try_ = a.create_label();
    let mut next = a.create_label();
    a.sub(esp, 8)?;
    a.mov(ebp, -1)?;
    a.mov(dword_ptr(esp + 4), 8)?;
    a.set_label(&mut try_)?;
    a.rdtsc()?;
    a.mov(dword_ptr(esp), eax)?;
    a.mov(edx, dword_ptr(ecx + reg::TMCCT))?;
    a.push(edx)?;
    a.rdtsc()?;
    a.pop(edx)?;
    a.sub(eax, dword_ptr(esp))?;
    a.cmp(eax, ebp)?;
    a.jae(next)?;
    a.mov(ebp, eax)?;
    a.shr(eax, 1)?;
    a.add(eax, dword_ptr(esp))?;
    a.mov(ebx, eax)?;
    a.mov(edi, edx)?;
    a.set_label(&mut next)?;
    a.dec(dword_ptr(esp + 4))?;
    a.jnz(try_)?;
    a.add(esp, 8)?;
    a.ret()?;
    a.set_label(&mut ready)?;
    a.nop()?;
    Ok(())
}

/// Helper `alarm_service`: ESI, EDI as for [`emit_program`]. If the programmed expiry has
/// passed: due one-shots disarm, due periodic alarms advance to their first expiry after now,
/// and the hardware is programmed again. Same registers as `alarm_program`.
pub fn emit_service(e: &mut Emit) -> Result<(), GenError> {
    let mut not_yet = e.a.create_label();
    e.a.rdtsc()?;
    e.a.push(edx)?;
    e.a.push(eax)?;
    jb64(&mut e.a, dword_ptr(edi + al::PROGRAMMED), not_yet)?;
    for c in 0..2i32 {
        advance(&mut e.a, c)?;
    }
    let program = e.helper(helper::ALARM_PROGRAM)?;
    e.a.call(program)?;
    e.a.set_label(&mut not_yet)?;
    e.a.add(esp, 8)?;
    e.a.ret()?;
    Ok(())
}

/// Alarm `c`: if armed and due ([esp] = now): a one-shot disarms, a periodic one moves to
/// expiry + (⌊(now − expiry) / period⌋ + 1) · period (periods of 2^32 cycles or more step one
/// period at a time, 64 steps at most, then start from now).
fn advance(a: &mut CodeAssembler, c: i32) -> Result<(), GenError> {
    let exp = al::EXPIRY + 8 * c;
    let per = al::PERIOD + 8 * c;
    let mut skip = a.create_label();
    let mut periodic = a.create_label();
    let mut long = a.create_label();
    let mut step = a.create_label();
    a.test(dword_ptr(edi + al::FLAGS + 4 * c), al::ARMED)?;
    a.jz(skip)?;
    a.mov(eax, dword_ptr(esp))?;
    a.mov(edx, dword_ptr(esp + 4))?;
    jb64(a, dword_ptr(edi + exp), skip)?; // now < expiry: not due
    a.mov(ecx, dword_ptr(edi + per))?;
    a.or(ecx, dword_ptr(edi + per + 4))?;
    a.jnz(periodic)?;
    a.and(dword_ptr(edi + al::FLAGS + 4 * c), !al::ARMED)?;
    a.jmp(skip)?;
    a.set_label(&mut periodic)?;
    a.cmp(dword_ptr(edi + per + 4), 0)?;
    a.jne(long)?;
    // gap = now − expiry; q = gap / period (two divisions); expiry += (q + 1) · period.
    a.sub(eax, dword_ptr(edi + exp))?;
    a.sbb(edx, dword_ptr(edi + exp + 4))?;
    a.push(ebx)?;
    a.mov(ecx, dword_ptr(edi + per))?;
    a.mov(ebx, eax)?;
    a.mov(eax, edx)?;
    a.xor(edx, edx)?;
    a.div(ecx)?;
    a.push(eax)?; // q hi
    a.mov(eax, ebx)?;
    a.div(ecx)?; // EAX = q lo
    a.add(eax, 1)?;
    a.adc(dword_ptr(esp), 0)?;
    a.mul(ecx)?; // (q lo + 1) · period
    a.add(dword_ptr(edi + exp), eax)?;
    a.adc(dword_ptr(edi + exp + 4), edx)?;
    a.pop(eax)?;
    a.imul_2(eax, ecx)?; // q hi · period lands in the high word
    a.add(dword_ptr(edi + exp + 4), eax)?;
    a.pop(ebx)?;
    a.jmp(skip)?;
    a.set_label(&mut long)?;
    a.push(ebx)?;
    a.mov(ebx, 64)?;
    a.set_label(&mut step)?;
    a.mov(eax, dword_ptr(edi + per))?;
    a.add(dword_ptr(edi + exp), eax)?;
    a.mov(eax, dword_ptr(edi + per + 4))?;
    a.adc(dword_ptr(edi + exp + 4), eax)?;
    a.mov(eax, dword_ptr(esp + 4))?;
    a.mov(edx, dword_ptr(esp + 8))?;
    let mut past = a.create_label();
    jb64(a, dword_ptr(edi + exp), past)?;
    a.dec(ebx)?;
    a.jnz(step)?;
    // Still not past now after 64 periods: the next one after now.
    a.add(eax, dword_ptr(edi + per))?;
    a.adc(edx, dword_ptr(edi + per + 4))?;
    a.mov(dword_ptr(edi + exp), eax)?;
    a.mov(dword_ptr(edi + exp + 4), edx)?;
    a.set_label(&mut past)?;
    a.pop(ebx)?;
    a.set_label(&mut skip)?;
    a.nop()?;
    Ok(())
}

/// Loads ESI = the per-ROM region and EDI = the calling CPU's slot, saving the caller's EBX,
/// ESI, EDI, EBP and EFLAGS (interrupts off until [`leave`]); EAX is kept. Without RAM or a
/// slot it jumps to `none` with everything saved (so `none` is followed by [`leave`]).
fn enter(e: &mut Emit, none: CodeLabel, slot: &str) -> Result<(), GenError> {
    let mut no_ram = e.a.create_label();
    let mut have = e.a.create_label();
    e.a.pushfd()?;
    e.a.cli()?;
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    e.a.push(ebp)?;
    e.a.push(eax)?;
    time_ptr(e, esi, no_ram)?;
    let slot = e.helper(slot)?;
    e.a.call(slot)?;
    e.a.pop(eax)?;
    e.a.test(edi, edi)?;
    e.a.jnz(have)?;
    e.a.jmp(none)?;
    e.a.set_label(&mut no_ram)?;
    e.a.pop(eax)?;
    e.a.jmp(none)?;
    e.a.set_label(&mut have)?;
    Ok(())
}

/// Restores what [`enter`] saved (EFLAGS last: IF as the caller had it).
fn leave(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.pop(ebp)?;
    a.pop(edi)?;
    a.pop(esi)?;
    a.pop(ebx)?;
    a.popfd()?;
    Ok(())
}

/// SetAlarm: EAX = flags, EDX:ECX = absolute expiry (low in EDX), [esp+4]/[esp+8] = period.
/// `slot`: the helper that finds the calling CPU's slot ([`helper::CPU_SLOT`], or one that
/// also sets the CPU up for a hypervisor).
pub fn emit_set(e: &mut Emit, slot: &str) -> Result<(), GenError> {
    let mut out = e.a.create_label();
    let mut store_period = e.a.create_label();
    e.a.push(ecx)?;
    e.a.push(edx)?;
    enter(e, out, slot)?;
    // Stack: EBP, EDI, ESI, EBX, EFLAGS, expiry lo, expiry hi, return, period lo, period hi.
    let base = 4 * 7;
    e.a.mov(ebx, eax)?;
    e.a.and(ebx, VMI_ALARM_COUNTER_MASK as i32)?;
    e.a.cmp(ebx, 2)?;
    e.a.jae(out)?;
    e.a.or(eax, al::ARMED)?;
    e.a.mov(dword_ptr(edi + ebx * 4 + al::FLAGS), eax)?;
    e.a.mov(ecx, dword_ptr(esp + 4 * 5))?;
    e.a.mov(dword_ptr(edi + ebx * 8 + al::EXPIRY), ecx)?;
    e.a.mov(ecx, dword_ptr(esp + 4 * 6))?;
    e.a.mov(dword_ptr(edi + ebx * 8 + al::EXPIRY + 4), ecx)?;
    e.a.xor(ecx, ecx)?;
    e.a.xor(edx, edx)?;
    e.a.test(eax, VMI_ALARM_IS_PERIODIC)?;
    e.a.jz(store_period)?;
    e.a.mov(ecx, dword_ptr(esp + base + 4))?;
    e.a.mov(edx, dword_ptr(esp + base + 8))?;
    e.a.set_label(&mut store_period)?;
    e.a.mov(dword_ptr(edi + ebx * 8 + al::PERIOD), ecx)?;
    e.a.mov(dword_ptr(edi + ebx * 8 + al::PERIOD + 4), edx)?;
    let program = e.helper(helper::ALARM_PROGRAM)?;
    e.a.call(program)?;
    e.a.set_label(&mut out)?;
    leave(&mut e.a)?;
    e.a.add(esp, 8)?;
    e.a.ret()?;
    Ok(())
}

/// CancelAlarm: EAX = flags → EAX = 1 if that counter's alarm was armed (a one-shot past its
/// expiry has fired and is not), else 0. `slot` as for [`emit_set`].
pub fn emit_cancel(e: &mut Emit, slot: &str) -> Result<(), GenError> {
    let mut out = e.a.create_label();
    let mut was = e.a.create_label();
    let mut answer = e.a.create_label();
    e.a.push(0)?; // the answer
    enter(e, out, slot)?;
    let answer_at = 4 * 5;
    e.a.and(eax, VMI_ALARM_COUNTER_MASK as i32)?;
    e.a.cmp(eax, 2)?;
    e.a.jae(out)?;
    e.a.mov(ebx, eax)?;
    e.a.test(dword_ptr(edi + ebx * 4 + al::FLAGS), al::ARMED)?;
    e.a.jz(out)?;
    e.a.and(dword_ptr(edi + ebx * 4 + al::FLAGS), !al::ARMED)?;
    e.a.mov(eax, dword_ptr(edi + ebx * 8 + al::PERIOD))?;
    e.a.or(eax, dword_ptr(edi + ebx * 8 + al::PERIOD + 4))?;
    e.a.jnz(was)?;
    e.a.rdtsc()?;
    jb64(&mut e.a, dword_ptr(edi + ebx * 8 + al::EXPIRY), was)?;
    e.a.jmp(answer)?;
    e.a.set_label(&mut was)?;
    e.a.mov(dword_ptr(esp + answer_at), 1)?;
    e.a.set_label(&mut answer)?;
    let program = e.helper(helper::ALARM_PROGRAM)?;
    e.a.call(program)?;
    e.a.set_label(&mut out)?;
    leave(&mut e.a)?;
    e.a.pop(eax)?;
    e.a.ret()?;
    Ok(())
}

/// Inside APICWrite after an EOI (ESI = the per-ROM region; EAX, ECX, EDX free): if any CPU's
/// alarms need service, find this CPU's slot and service it.
pub fn after_eoi(e: &mut Emit, slot: &str) -> Result<(), GenError> {
    let mut done = e.a.create_label();
    e.a.cmp(dword_ptr(esi + tm::SERVICED), 0)?;
    e.a.je(done)?;
    e.a.push(ebx)?;
    e.a.push(edi)?;
    e.a.push(ebp)?;
    e.a.pushfd()?;
    e.a.cli()?;
    let slot = e.helper(slot)?;
    e.a.call(slot)?;
    let mut skip = e.a.create_label();
    e.a.test(edi, edi)?;
    e.a.jz(skip)?;
    e.a.cmp(dword_ptr(edi + al::SERVICE), 0)?;
    e.a.je(skip)?;
    let service = e.helper(helper::ALARM_SERVICE)?;
    e.a.call(service)?;
    e.a.set_label(&mut skip)?;
    e.a.popfd()?;
    e.a.pop(ebp)?;
    e.a.pop(edi)?;
    e.a.pop(ebx)?;
    e.a.set_label(&mut done)?;
    e.a.nop()?;
    Ok(())
}
