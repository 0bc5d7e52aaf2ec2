//! The `kvm` backend: the VMI layer for KVM guests — the native backend where KVM has
//! nothing better, KVM's paravirtual interfaces where it does.
//!
//! **Detection.** Init looks for KVM: CPUID 0x40000000 = "KVMKVMKVM\0\0\0" with leaf
//! 0x40000001 present, and the kvmclock feature (KVM_FEATURE_CLOCKSOURCE2, bit 3 of
//! 0x40000001.EAX). Anywhere else the same image runs as the native ROM (PIT-calibrated TSC,
//! CMOS RTC, port 0x80 delays): a fallback decided at run time rather than refusing Init,
//! because refusing would also take IRET's fault reporting and the rest of the ROM away from a
//! guest that can use them — a ROM must not get worse because it runs somewhere unexpected.
//! The same holds where KVM offers kvmclock but the boot CPU's pvclock holds no usable scale
//! after its registration (never written: `tsc_to_system_mul` 0; or a rate below 1 MHz or
//! above 4.29 THz): Init unregisters the CPU's areas, clears the kvmclock flags and
//! calibrates natively instead of dividing by it.
//!
//! **Time on kvmclock.** Each CPU registers its own `pvclock_vcpu_time_info` (32 bytes in its
//! slot of the private RAM's `kvmc` region) with MSR_KVM_SYSTEM_TIME_NEW, and its steal-time
//! record (MSR_KVM_STEAL_TIME, where KVM offers it) and paravirtual-EOI word
//! (MSR_KVM_PV_EOI_EN, likewise), the first time it calls the ROM for time or the APIC
//! ([`emit_cpu`]; the boot CPU at Init). The counter is the TSC, whose rate the pvclock scale
//! gives exactly — `1e9 · 2^32 / (mul · 2^shift)` Hz, no calibration loop; nanoseconds per
//! cycle are `mul · 2^shift` (32.32). REAL is the TSC, clamped to the highest value handed
//! out on any CPU (`lock cmpxchg8b`) unless the pvclock says the clock is stable across CPUs;
//! STOLEN is KVM's steal time in cycles; AVAILABLE = REAL − STOLEN. The wall clock is
//! MSR_KVM_WALL_CLOCK_NEW's boot time plus the kvmclock system time, read at Init and carried
//! forward by the TSC at the pvclock rate. Alarms: the native LAPIC machinery ([`time::alarm`]),
//! with the TSC-deadline timer KVM offers.
//!
//! **Exits avoided** (and only these; nothing guest-visible changes — CPUID, MSR behaviour and
//! ordering are the CPU's):
//! - IODelay: NOP under KVM (GetRelocationInfo answers NOP once Init found KVM:
//!   [`crate::ram::NOP_ON_HYPERVISOR`]) — one port-I/O exit per `out 0x80` saved; elsewhere the
//!   native `out 0x80`.
//! - APIC EOI: through PV EOI where KVM offers it — the MMIO write (an APIC-access exit
//!   without APIC virtualization) is skipped whenever KVM set the pending bit.
//! - GetCycleFrequency: no PIT calibration at boot (about 110 port-I/O exits and 110 ms).

use crate::backend::{Answer, Backend};
use crate::emit::Emit;
use crate::error::GenError;
use crate::native::Native;
use crate::ram::{self, Region};
use crate::time::{self, al, flag, helper, time_ptr, tm};
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_abi::consts::{VMI_CYCLES_AVAILABLE, VMI_CYCLES_STOLEN};

/// Tag of the per-CPU KVM region.
pub const KVMC: [u8; 4] = *b"kvmc";
/// MSR_KVM_WALL_CLOCK_NEW.
const MSR_WALL_CLOCK: u32 = 0x4B56_4D00;
/// MSR_KVM_SYSTEM_TIME_NEW.
const MSR_SYSTEM_TIME: u32 = 0x4B56_4D01;
/// MSR_KVM_STEAL_TIME.
const MSR_STEAL_TIME: u32 = 0x4B56_4D03;
/// MSR_KVM_PV_EOI_EN.
const MSR_PV_EOI: u32 = 0x4B56_4D04;
/// KVM CPUID leaves.
const CPUID_KVM: u32 = 0x4000_0000;
/// Feature bits of CPUID 0x40000001.EAX.
mod feature {
    /// MSR_KVM_SYSTEM_TIME_NEW / WALL_CLOCK_NEW.
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    /// MSR_KVM_STEAL_TIME.
    pub const STEAL_TIME: u32 = 1 << 5;
    /// MSR_KVM_PV_EOI_EN.
    pub const PV_EOI: u32 = 1 << 6;
}
/// pvclock flags: the clock is stable across CPUs.
const PVCLOCK_STABLE: u32 = 1;

/// Offsets in one CPU's `kvmc` slot.
pub mod kv {
    /// `struct kvm_steal_time` (64 bytes, 64-aligned): u64 steal (ns), u32 version, …
    pub const STEAL: i32 = 0x00;
    /// `struct pvclock_vcpu_time_info` (32 bytes).
    pub const PVCLOCK: i32 = 0x40;
    /// The paravirtual-EOI word (bit 0: KVM needs no EOI write).
    pub const PV_EOI: i32 = 0x60;
    /// Non-zero once this CPU registered its areas.
    pub const REGISTERED: i32 = 0x64;
    /// Size of a slot.
    pub const SIZE: u32 = 0x80;
}

/// Offsets in `struct pvclock_vcpu_time_info`.
mod pv {
    pub const VERSION: i32 = 0;
    pub const TSC_TIMESTAMP: i32 = 8;
    pub const SYSTEM_TIME: i32 = 16;
    pub const MUL: i32 = 24;
    pub const SHIFT: i32 = 28;
    pub const FLAGS: i32 = 29;
}

/// The kvm backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kvm;

/// EBX = this CPU's `kvmc` slot from EDI = its alarm slot (ESI = the per-ROM region).
fn kvmc_slot(e: &mut Emit) -> Result<(), GenError> {
    let time = e.ram_region(&time::TIME)?.offset as i32;
    let alarms = e.ram_region(&time::ALARMS)?.offset as i32;
    let kvmc = e.ram_region(&KVMC)?.offset as i32;
    const _: () = assert!(
        kv::SIZE == 2 * al::SIZE,
        "kvmc slots are twice the alarm slots"
    );
    // kvmc + 2·(EDI − alarms) relative to the block = 2·EDI − ESI + (kvmc − time) − 2·(alarms − time).
    e.a.lea(ebx, ptr(edi + edi))?;
    e.a.sub(ebx, esi)?;
    e.a.add(ebx, (kvmc - time) - 2 * (alarms - time))?;
    Ok(())
}

/// Helper `kvm_cpu`: ESI = the per-ROM region → EDI = the calling CPU's alarm slot (0 when
/// every slot is taken), EBX = its `kvmc` slot; under kvmclock the CPU's pvclock, steal-time
/// and PV-EOI areas are registered the first time. Keeps ESI, EBP; changes EAX, ECX, EDX.
pub fn emit_cpu(e: &mut Emit) -> Result<(), GenError> {
    let mut out = e.a.create_label();
    let slot = e.helper(helper::CPU_SLOT)?;
    e.a.call(slot)?;
    e.a.test(edi, edi)?;
    e.a.jz(out)?;
    kvmc_slot(e)?;
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::KVMCLOCK)?;
    e.a.jz(out)?;
    e.a.cmp(dword_ptr(ebx + kv::REGISTERED), 0)?;
    e.a.jne(out)?;
    register(&mut e.a)?;
    e.a.set_label(&mut out)?;
    e.a.ret()?;
    Ok(())
}

/// Registers the CPU's areas at EBX (physical = linear − PAGE_OFFSET). Changes EAX, ECX, EDX.
fn register(a: &mut CodeAssembler) -> Result<(), GenError> {
    let msr = |a: &mut CodeAssembler, msr: u32, at: i32| -> Result<(), GenError> {
        a.lea(eax, ptr(ebx + at + 1))?; // + 1: the enable bit
        a.sub(eax, dword_ptr(esi + tm::PAGE_OFFSET))?;
        a.xor(edx, edx)?;
        a.mov(ecx, msr)?;
        a.wrmsr()?;
        Ok(())
    };
    msr(a, MSR_SYSTEM_TIME, kv::PVCLOCK)?;
    for (bit, m, at) in [
        (flag::STEAL, MSR_STEAL_TIME, kv::STEAL),
        (flag::PV_EOI, MSR_PV_EOI, kv::PV_EOI),
    ] {
        let mut skip = a.create_label();
        a.test(dword_ptr(esi + tm::FLAGS), bit)?;
        a.jz(skip)?;
        msr(a, m, at)?;
        a.set_label(&mut skip)?;
        a.nop()?;
    }
    a.mov(dword_ptr(ebx + kv::REGISTERED), 1)?;
    Ok(())
}

/// Inside APICWrite for an EOI (ESI = the per-ROM region; EAX, ECX, EDX live): if PV EOI is
/// enabled and KVM set this CPU's bit, clear it — that is the EOI — and jump to `done`.
pub(crate) fn pv_eoi(e: &mut Emit, slot: &str, done: CodeLabel) -> Result<(), GenError> {
    let mut skip = e.a.create_label();
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::PV_EOI)?;
    e.a.jz(skip)?;
    e.a.push(eax)?;
    e.a.push(ecx)?;
    e.a.push(edx)?;
    e.a.push(ebx)?;
    e.a.push(edi)?;
    let find = e.helper(slot)?;
    e.a.call(find)?;
    e.a.test(edi, edi)?;
    let mut no_slot = e.a.create_label();
    e.a.jz(no_slot)?;
    e.a.btr(dword_ptr(ebx + kv::PV_EOI), 0)?;
    e.a.set_label(&mut no_slot)?;
    e.a.pop(edi)?;
    e.a.pop(ebx)?;
    e.a.pop(edx)?;
    e.a.pop(ecx)?;
    e.a.pop(eax)?;
    e.a.jc(done)?;
    e.a.set_label(&mut skip)?;
    e.a.nop()?;
    Ok(())
}

/// Reads the pvclock at `[ebx + kv::PVCLOCK]` consistently (version even and unchanged) into
/// the stack frame the caller made: [esp+4] TSC timestamp (u64), [esp+12] system time (u64),
/// [esp+20] mul, [esp+24] shift (sign-extended), [esp+28] flags — offsets as seen inside.
/// Uses EAX, ECX, EDX.
fn read_pvclock(a: &mut CodeAssembler, frame: i32) -> Result<(), GenError> {
    let mut again = a.create_label();
    let p = kv::PVCLOCK;
    a.set_label(&mut again)?;
    a.mov(ecx, dword_ptr(ebx + p + pv::VERSION))?;
    a.test(ecx, 1)?;
    a.jnz(again)?;
    a.lock().or(dword_ptr(esp), 0)?; // read barrier: the fields after the version
    for (i, off) in [
        pv::TSC_TIMESTAMP,
        pv::TSC_TIMESTAMP + 4,
        pv::SYSTEM_TIME,
        pv::SYSTEM_TIME + 4,
        pv::MUL,
    ]
    .into_iter()
    .enumerate()
    {
        a.mov(eax, dword_ptr(ebx + p + off))?;
        a.mov(dword_ptr(esp + frame + 4 * i as i32), eax)?;
    }
    a.movsx(eax, byte_ptr(ebx + p + pv::SHIFT))?;
    a.mov(dword_ptr(esp + frame + 20), eax)?;
    a.movzx(eax, byte_ptr(ebx + p + pv::FLAGS))?;
    a.mov(dword_ptr(esp + frame + 24), eax)?;
    a.lock().or(dword_ptr(esp), 0)?;
    a.cmp(ecx, dword_ptr(ebx + p + pv::VERSION))?;
    a.jne(again)?;
    Ok(())
}

/// Bytes of the pvclock copy [`read_pvclock`] makes.
const PV_FRAME: i32 = 28;

/// Init under KVM (ESI = the per-ROM region, EBX = the block; interrupts off): registers the
/// boot CPU, takes the rates from its pvclock and the wall clock from KVM, marks the block
/// ready and KVM found. Jumps to `native` when this is not KVM with kvmclock — or when the
/// boot CPU's pvclock holds no usable scale (a hypervisor that offers kvmclock but never
/// filled the structure: a zero scale would divide by zero): its areas are then unregistered
/// and the kvmclock flags cleared, and the ROM runs as the native one.
fn init_kvm(e: &mut Emit, native: CodeLabel) -> Result<(), GenError> {
    let mut unusable = e.a.create_label();
    let mut done = e.a.create_label();
    detect(e, native)?;
    e.a.push(ebx)?;
    e.a.push(edi)?;
    let cpu = e.helper(helper::KVM_CPU)?;
    e.a.call(cpu)?; // EBX = the boot CPU's kvmc slot
    e.a.sub(esp, PV_FRAME)?;
    read_pvclock(&mut e.a, 0)?;
    rates_from_pvclock(&mut e.a, unusable)?;
    stable_flag(&mut e.a)?;
    wallclock(&mut e.a)?;
    e.a.add(esp, PV_FRAME)?;
    e.a.pop(edi)?;
    e.a.pop(ebx)?;
    e.a.or(
        dword_ptr(ebx + ram::off::READY as i32),
        ram::ready::READY | ram::ready::HYPERVISOR,
    )?;
    e.a.jmp(done)?;
    e.a.set_label(&mut unusable)?;
    unregister(&mut e.a)?;
    e.a.add(esp, PV_FRAME)?;
    e.a.pop(edi)?;
    e.a.pop(ebx)?;
    e.a.jmp(native)?;
    e.a.set_label(&mut done)?;
    e.a.nop()?;
    Ok(())
}

/// Undoes [`register`] for the CPU whose kvmc slot is EBX (ESI = the per-ROM region): every
/// MSR it wrote gets 0 (disabled), the slot is unmarked, and the kvmclock flags are cleared
/// (the calls then take the native paths). Changes EAX, ECX, EDX.
fn unregister(a: &mut CodeAssembler) -> Result<(), GenError> {
    let off = |a: &mut CodeAssembler, msr: u32| -> Result<(), GenError> {
        a.xor(eax, eax)?;
        a.xor(edx, edx)?;
        a.mov(ecx, msr)?;
        a.wrmsr()?;
        Ok(())
    };
    off(a, MSR_SYSTEM_TIME)?;
    for (bit, m) in [(flag::STEAL, MSR_STEAL_TIME), (flag::PV_EOI, MSR_PV_EOI)] {
        let mut skip = a.create_label();
        a.test(dword_ptr(esi + tm::FLAGS), bit)?;
        a.jz(skip)?;
        off(a, m)?;
        a.set_label(&mut skip)?;
        a.nop()?;
    }
    a.mov(dword_ptr(ebx + kv::REGISTERED), 0)?;
    let kvm_flags = flag::KVMCLOCK | flag::STEAL | flag::PV_EOI | flag::STABLE | flag::CALIBRATED;
    a.and(dword_ptr(esi + tm::FLAGS), !kvm_flags as i32)?;
    Ok(())
}

/// CPUID: KVM's signature and kvmclock, else `native`; the feature flags into FLAGS.
fn detect(e: &mut Emit, native: CodeLabel) -> Result<(), GenError> {
    let a = &mut e.a;
    a.push(ebx)?;
    a.mov(eax, CPUID_KVM)?;
    a.cpuid()?;
    let mut no = a.create_label();
    let mut yes = a.create_label();
    for (reg, want) in [(ebx, *b"KVMK"), (ecx, *b"VMKV"), (edx, *b"M\0\0\0")] {
        a.cmp(reg, u32::from_le_bytes(want))?;
        a.jne(no)?;
    }
    a.cmp(eax, CPUID_KVM + 1)?;
    a.jb(no)?;
    a.mov(eax, CPUID_KVM + 1)?;
    a.cpuid()?;
    a.test(eax, feature::CLOCKSOURCE2)?;
    a.jz(no)?;
    a.mov(ecx, flag::KVMCLOCK)?;
    for (f, bit) in [
        (feature::STEAL_TIME, flag::STEAL),
        (feature::PV_EOI, flag::PV_EOI),
    ] {
        let mut skip = a.create_label();
        a.test(eax, f)?;
        a.jz(skip)?;
        a.or(ecx, bit)?;
        a.set_label(&mut skip)?;
        a.nop()?;
    }
    a.or(dword_ptr(esi + tm::FLAGS), ecx)?;
    a.pop(ebx)?;
    a.jmp(yes)?;
    a.set_label(&mut no)?;
    a.pop(ebx)?;
    a.jmp(native)?;
    a.set_label(&mut yes)?;
    a.nop()?;
    Ok(())
}

/// The rates Init accepts from a pvclock: at least this many Hz …
const MIN_HZ: u32 = 1_000_000;
/// … and a high dword below this (under 4.29 THz: the kHz fit 32 bits, as Linux needs).
const MAX_HZ_HIGH: u32 = 1000;

/// From the pvclock copy at [esp]: NS_Q32 = mul · 2^shift, TSC_HZ = 1e9 · 2^32 / NS_Q32,
/// CPN_Q32 = 2^64 / NS_Q32 (cycles per ns), PIT_Q32 = 1193182 / TSC_HZ (32.32); CALIBRATED.
/// Jumps to `unusable` (stack as on entry) when NS_Q32 is 0 — a structure KVM never filled —
/// or the rate lies outside [`MIN_HZ`]..[`MAX_HZ_HIGH`] · 2^32: nothing is divided by it then.
fn rates_from_pvclock(a: &mut CodeAssembler, unusable: CodeLabel) -> Result<(), GenError> {
    let mut left = a.create_label();
    let mut shifted = a.create_label();
    let mut bad = a.create_label();
    let mut sane = a.create_label();
    a.mov(eax, dword_ptr(esp + 16))?; // mul
    a.xor(edx, edx)?;
    a.mov(ecx, dword_ptr(esp + 20))?; // shift
    // A shift beyond ±31 would be taken modulo 32 by the shifts below: no TSC KVM can describe
    // needs one (1 MHz is +10, 4 THz −12).
    a.cmp(ecx, MAX_SHIFT)?;
    a.jg(unusable)?;
    a.cmp(ecx, -MAX_SHIFT)?;
    a.jl(unusable)?;
    a.test(ecx, ecx)?;
    a.jns(left)?;
    a.neg(ecx)?;
    a.shr(eax, cl)?;
    a.jmp(shifted)?;
    a.set_label(&mut left)?;
    a.shld(edx, eax, cl)?;
    a.shl(eax, cl)?;
    a.set_label(&mut shifted)?;
    a.mov(dword_ptr(esi + tm::NS_Q32), eax)?;
    a.mov(dword_ptr(esi + tm::NS_Q32 + 4), edx)?;
    a.mov(ecx, eax)?;
    a.or(ecx, edx)?;
    a.jz(unusable)?;
    // Hz = (1e9 << 32) / ns_q32: one 64/32 division for an ns_q32 below 2^32 (a TSC faster
    // than 1 GHz), else [`slow_hz`].
    a.push(ebx)?;
    a.mov(ecx, eax)?;
    a.test(edx, edx)?;
    let mut fast = a.create_label();
    let mut hz_done = a.create_label();
    a.jz(fast)?;
    slow_hz(a, bad)?;
    a.jmp(hz_done)?;
    a.set_label(&mut fast)?;
    a.mov(edx, 1_000_000_000)?;
    time::div_q32(a)?; // (1e9 << 32) / ns_q32
    a.mov(dword_ptr(esi + tm::TSC_HZ), eax)?;
    a.mov(dword_ptr(esi + tm::TSC_HZ + 4), edx)?;
    a.set_label(&mut hz_done)?;
    a.mov(eax, dword_ptr(esi + tm::TSC_HZ + 4))?;
    a.cmp(eax, MAX_HZ_HIGH)?;
    a.jae(bad)?;
    a.test(eax, eax)?;
    a.jnz(sane)?;
    a.cmp(dword_ptr(esi + tm::TSC_HZ), MIN_HZ)?;
    a.jae(sane)?;
    a.set_label(&mut bad)?;
    a.pop(ebx)?;
    a.jmp(unusable)?;
    a.set_label(&mut sane)?;
    // Cycles per ns (32.32) = (TSC_HZ / 1000 << 32) / 1e6.
    a.mov(eax, dword_ptr(esi + tm::TSC_HZ))?;
    a.mov(edx, dword_ptr(esi + tm::TSC_HZ + 4))?;
    a.mov(ecx, 1000)?;
    a.div(ecx)?; // kHz
    a.mov(edx, eax)?;
    a.mov(ecx, 1_000_000)?;
    time::div_q32(a)?;
    a.mov(dword_ptr(esi + tm::CPN_Q32), eax)?;
    a.mov(dword_ptr(esi + tm::CPN_Q32 + 4), edx)?;
    // PIT ticks per cycle (for IRQ0 alarms): 1193182 / kHz / 1000 in 32.32.
    a.mov(eax, dword_ptr(esi + tm::TSC_HZ))?;
    a.mov(edx, dword_ptr(esi + tm::TSC_HZ + 4))?;
    a.mov(ecx, 1000)?;
    a.div(ecx)?;
    a.mov(ecx, eax)?; // kHz
    a.mov(edx, time::clock::PIT_HZ / 1000)?;
    time::div_q32(a)?;
    a.mov(dword_ptr(esi + tm::PIT_Q32), eax)?;
    a.mov(dword_ptr(esi + tm::PIT_Q32 + 4), edx)?;
    a.pop(ebx)?;
    a.or(dword_ptr(esi + tm::FLAGS), flag::CALIBRATED)?;
    Ok(())
}

/// The largest pvclock shift (either sign) the rate arithmetic accepts.
const MAX_SHIFT: i32 = 31;

/// TSC_HZ = (1e9 << 32) / ns_q32 for a TSC of 1 GHz or slower (EDX:EAX = ns_q32, EDX ≠ 0; EBX
/// free). Both sides drop the k = bsr(EDX) + 1 low bits that bring the divisor into 32 bits
/// (k ≤ 10: a high dword above 1000 — under 1 MHz — goes to `bad` first), so the divisor keeps
/// its top bit at bit 31 and the rate is off by less than 1 + Hz / 2^31 (1.5 Hz at 1 GHz), where
/// the 32.32 scale itself is only good to Hz / ns_q32. Changes EAX, ECX, EDX, EBX.
fn slow_hz(a: &mut CodeAssembler, bad: CodeLabel) -> Result<(), GenError> {
    a.cmp(edx, 1000)?;
    a.ja(bad)?;
    a.bsr(ecx, edx)?;
    a.inc(ecx)?; // k: EDX < 2^k
    a.shrd(eax, edx, cl)?; // ns_q32 >> k, in 2^31..2^32
    a.mov(ebx, eax)?;
    a.neg(ecx)?;
    a.add(ecx, 32)?; // 32 − k
    a.mov(eax, 1_000_000_000)?;
    a.xor(edx, edx)?;
    a.shld(edx, eax, cl)?;
    a.shl(eax, cl)?; // (1e9 << 32) >> k: its high dword is below 2^30, so the quotient fits
    a.div(ebx)?;
    a.mov(dword_ptr(esi + tm::TSC_HZ), eax)?;
    a.mov(dword_ptr(esi + tm::TSC_HZ + 4), 0)?;
    Ok(())
}

/// The pvclock arithmetic Init runs, alone, as a position-independent 32-bit routine — for
/// tests that run it on a real (or emulated) CPU over scales no host at hand would give.
/// cdecl `u64 rate(u32 mul, i32 shift)`, ESI → a scratch region of [`tm::SIZE`] bytes: EDX:EAX
/// = the TSC rate in Hz Init would take from a pvclock with that scale, or 0 when Init would
/// refuse it and calibrate natively. Preserves EBX, ESI, EDI, EBP.
pub fn rate_routine() -> Result<Vec<u8>, GenError> {
    let mut a = CodeAssembler::new(32)?;
    let mut unusable = a.create_label();
    a.sub(esp, PV_FRAME)?;
    a.mov(eax, dword_ptr(esp + PV_FRAME + 4))?;
    a.mov(dword_ptr(esp + 16), eax)?;
    a.mov(eax, dword_ptr(esp + PV_FRAME + 8))?;
    a.mov(dword_ptr(esp + 20), eax)?;
    a.mov(dword_ptr(esi + tm::FLAGS), 0)?;
    rates_from_pvclock(&mut a, unusable)?;
    a.add(esp, PV_FRAME)?;
    a.mov(eax, dword_ptr(esi + tm::TSC_HZ))?;
    a.mov(edx, dword_ptr(esi + tm::TSC_HZ + 4))?;
    a.ret()?;
    a.set_label(&mut unusable)?;
    a.add(esp, PV_FRAME)?;
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.ret()?;
    Ok(a.assemble(0)?)
}

/// STABLE from the pvclock copy's flags ([esp+24]).
fn stable_flag(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut not = a.create_label();
    a.test(dword_ptr(esp + 24), PVCLOCK_STABLE)?;
    a.jz(not)?;
    a.or(dword_ptr(esi + tm::FLAGS), flag::STABLE)?;
    a.set_label(&mut not)?;
    a.nop()?;
    Ok(())
}

/// WALL_NS := KVM's boot wall clock + the system time now, WALL_TSC := the TSC now.
fn wallclock(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut again = a.create_label();
    // The structure's physical address into the MSR; KVM fills it.
    a.lea(eax, ptr(esi + tm::WALL))?;
    a.sub(eax, dword_ptr(esi + tm::PAGE_OFFSET))?;
    a.xor(edx, edx)?;
    a.mov(ecx, MSR_WALL_CLOCK)?;
    a.wrmsr()?;
    a.set_label(&mut again)?;
    a.mov(ecx, dword_ptr(esi + tm::WALL))?;
    a.test(ecx, 1)?;
    a.jnz(again)?;
    a.mov(eax, dword_ptr(esi + tm::WALL + 4))?; // seconds
    a.mov(edx, 1_000_000_000)?;
    a.mul(edx)?;
    a.add(eax, dword_ptr(esi + tm::WALL + 8))?; // + nanoseconds
    a.adc(edx, 0)?;
    a.cmp(ecx, dword_ptr(esi + tm::WALL))?;
    a.jne(again)?;
    a.mov(dword_ptr(esi + tm::WALL_NS), eax)?;
    a.mov(dword_ptr(esi + tm::WALL_NS + 4), edx)?;
    // + the system time at the pvclock's timestamp, carried to now by the TSC.
    a.mov(eax, dword_ptr(esp + 8))?;
    a.add(dword_ptr(esi + tm::WALL_NS), eax)?;
    a.mov(eax, dword_ptr(esp + 12))?;
    a.adc(dword_ptr(esi + tm::WALL_NS + 4), eax)?;
    a.mov(eax, dword_ptr(esp))?;
    a.mov(dword_ptr(esi + tm::WALL_TSC), eax)?;
    a.mov(eax, dword_ptr(esp + 4))?;
    a.mov(dword_ptr(esi + tm::WALL_TSC + 4), eax)?;
    Ok(())
}

/// GetCycleCounter under the kvm backend: EAX = counter → EDX:EAX (see the module docs).
/// Without kvmclock (the native fallback): the TSC, STOLEN 0.
fn emit_counter(e: &mut Emit) -> Result<(), GenError> {
    let mut zero = e.a.create_label();
    let mut native = e.a.create_label();
    let mut out = e.a.create_label();
    let mut none = e.a.create_label();
    e.a.cmp(eax, VMI_CYCLES_STOLEN as i32)?;
    e.a.ja(zero)?;
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    e.a.push(eax)?;
    time_ptr(e, esi, none)?;
    e.a.test(dword_ptr(esi + tm::FLAGS), flag::KVMCLOCK)?;
    e.a.jz(native)?;
    let cpu = e.helper(helper::KVM_CPU)?;
    e.a.call(cpu)?;
    e.a.pop(eax)?;
    counter_kvm(&mut e.a)?;
    e.a.jmp(out)?;
    e.a.set_label(&mut native)?;
    e.a.pop(eax)?;
    e.a.cmp(eax, VMI_CYCLES_STOLEN as i32)?;
    e.a.rdtsc()?;
    e.a.jne(out)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.set_label(&mut out)?;
    e.a.pop(edi)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.ret()?;
    e.a.set_label(&mut none)?;
    e.a.pop(eax)?;
    e.a.pop(edi)?;
    e.a.pop(esi)?;
    e.a.pop(ebx)?;
    e.a.set_label(&mut zero)?;
    e.a.xor(eax, eax)?;
    e.a.xor(edx, edx)?;
    e.a.ret()?;
    Ok(())
}

/// EAX = REAL/AVAILABLE/STOLEN under kvmclock (ESI = the per-ROM region, EBX = the CPU's kvmc
/// slot) → EDX:EAX. Uses ECX, EDI.
fn counter_kvm(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut stolen = a.create_label();
    let mut done = a.create_label();
    a.cmp(eax, VMI_CYCLES_STOLEN as i32)?;
    a.je(stolen)?;
    a.push(eax)?;
    real(a)?;
    a.pop(ecx)?;
    a.cmp(ecx, VMI_CYCLES_AVAILABLE as i32)?;
    a.jne(done)?;
    // AVAILABLE = REAL − STOLEN.
    a.push(edx)?;
    a.push(eax)?;
    steal_cycles(a)?;
    a.sub(dword_ptr(esp), eax)?;
    a.sbb(dword_ptr(esp + 4), edx)?;
    a.pop(eax)?;
    a.pop(edx)?;
    a.jmp(done)?;
    a.set_label(&mut stolen)?;
    steal_cycles(a)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// EDX:EAX = the TSC; unless the clock is stable across CPUs, no lower than any value handed
/// out before on any CPU (the highest kept at LAST with `lock cmpxchg8b`). Uses ECX.
fn real(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut done = a.create_label();
    let mut retry = a.create_label();
    let mut store = a.create_label();
    let mut use_last = a.create_label();
    a.rdtsc()?;
    a.test(dword_ptr(esi + tm::FLAGS), flag::STABLE)?;
    a.jnz(done)?;
    a.push(ebx)?;
    a.mov(ebx, eax)?;
    a.mov(ecx, edx)?;
    a.mov(eax, dword_ptr(esi + tm::LAST))?;
    a.mov(edx, dword_ptr(esi + tm::LAST + 4))?;
    a.set_label(&mut retry)?;
    // EDX:EAX = the last value, ECX:EBX = the TSC.
    a.cmp(ecx, edx)?;
    a.ja(store)?;
    a.jb(use_last)?;
    a.cmp(ebx, eax)?;
    a.jbe(use_last)?;
    a.set_label(&mut store)?;
    a.lock().cmpxchg8b(qword_ptr(esi + tm::LAST))?;
    a.jnz(retry)?; // another CPU moved LAST: EDX:EAX holds it now
    a.mov(eax, ebx)?;
    a.mov(edx, ecx)?;
    a.set_label(&mut use_last)?;
    a.pop(ebx)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// EDX:EAX = this CPU's stolen time in cycles (KVM steal time × cycles per ns; 0 without it).
/// Uses ECX, EDI (and EBX, kept).
fn steal_cycles(a: &mut CodeAssembler) -> Result<(), GenError> {
    let mut none = a.create_label();
    let mut again = a.create_label();
    let mut done = a.create_label();
    a.test(dword_ptr(esi + tm::FLAGS), flag::STEAL)?;
    a.jz(none)?;
    a.set_label(&mut again)?;
    a.mov(ecx, dword_ptr(ebx + kv::STEAL + 8))?; // version
    a.test(ecx, 1)?;
    a.jnz(again)?;
    a.lock().or(dword_ptr(esp), 0)?;
    a.mov(eax, dword_ptr(ebx + kv::STEAL))?;
    a.mov(edx, dword_ptr(ebx + kv::STEAL + 4))?;
    a.lock().or(dword_ptr(esp), 0)?;
    a.cmp(ecx, dword_ptr(ebx + kv::STEAL + 8))?;
    a.jne(again)?;
    a.push(ebx)?;
    time::mul_q32(a, dword_ptr(esi + tm::CPN_Q32))?;
    a.pop(ebx)?;
    a.jmp(done)?;
    a.set_label(&mut none)?;
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// GetCycleFrequency under the kvm backend: registers the calling CPU (its first time call
/// may be this one), then the rate Init took from the pvclock (or measured, natively).
fn emit_frequency(e: &mut Emit) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    let mut out = e.a.create_label();
    e.a.push(ebx)?;
    e.a.push(esi)?;
    e.a.push(edi)?;
    time_ptr(e, esi, none)?;
    let cpu = e.helper(helper::KVM_CPU)?;
    e.a.call(cpu)?;
    e.a.mov(eax, dword_ptr(esi + tm::TSC_HZ))?;
    e.a.mov(edx, dword_ptr(esi + tm::TSC_HZ + 4))?;
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

impl Backend for Kvm {
    fn name(&self) -> String {
        "kvm".into()
    }

    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        let kvm_cpu = helper::KVM_CPU;
        match call {
            Call::GetCycleCounter => {
                emit_counter(e)?;
                Ok(Answer::Call)
            }
            Call::GetCycleFrequency => {
                emit_frequency(e)?;
                Ok(Answer::Call)
            }
            Call::APICWrite => {
                time::apic::emit_write(e, kvm_cpu, true)?;
                Ok(Answer::Call)
            }
            Call::SetAlarm => {
                time::alarm::emit_set(e, kvm_cpu)?;
                Ok(Answer::Call)
            }
            Call::CancelAlarm => {
                time::alarm::emit_cancel(e, kvm_cpu)?;
                Ok(Answer::Call)
            }
            _ => Native.emit(call, e),
        }
    }

    fn note(&self, call: Call) -> &'static str {
        match call {
            Call::IODelay => "NOP under KVM (decided at Init); out 0x80 elsewhere",
            Call::GetCycleFrequency => {
                "the TSC rate from the kvmclock scale (PIT-measured elsewhere)"
            }
            Call::GetCycleCounter => {
                "TSC (clamped unless kvmclock is stable); STOLEN = KVM steal time; AVAILABLE = REAL − STOLEN"
            }
            Call::GetWallclockTime => {
                "KVM's wall clock plus kvmclock time (the CMOS RTC elsewhere)"
            }
            Call::APICWrite => "the calling CPU's APIC; EOI through KVM's PV EOI where offered",
            _ => Native.note(call),
        }
    }

    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        time::clock::init32(e, |e| {
            let mut native = e.a.create_label();
            let mut done = e.a.create_label();
            init_kvm(e, native)?;
            e.a.jmp(done)?;
            e.a.set_label(&mut native)?;
            time::clock::init_native(e)?;
            e.a.set_label(&mut done)?;
            e.a.nop()?;
            Ok(())
        })
    }

    fn ram(&self) -> Result<Vec<Region>, GenError> {
        let mut r = Native.ram()?;
        r.push(Region {
            tag: KVMC,
            size: kv::SIZE,
            align: 64,
            per_cpu: true,
        });
        Ok(r)
    }

    fn needs_ram(&self, call: Call) -> bool {
        Native.needs_ram(call)
    }

    fn nop_on_hypervisor(&self, call: Call) -> bool {
        call == Call::IODelay
    }

    fn helper_names(&self) -> Vec<&'static str> {
        let mut h = Native.helper_names();
        h.push(helper::KVM_CPU);
        h
    }

    fn emit_helper(&self, name: &str, e: &mut Emit) -> Result<(), GenError> {
        if name == helper::KVM_CPU {
            emit_cpu(e)
        } else {
            Native.emit_helper(name, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{BuildOptions, generate};
    use crate::manifest::Manifest;

    #[test]
    fn the_kvm_rom_passes_its_audit_and_marks_what_kvm_changes() {
        let g = generate(&Kvm, &BuildOptions::default()).unwrap();
        let n = generate(&Native, &BuildOptions::default()).unwrap();
        assert_eq!(g.backend, "kvm");
        let m = Manifest::read(&g.image).unwrap().unwrap();
        let entries = m.entries(&g.image);
        for (k, nat) in g.calls.iter().zip(&n.calls) {
            // The same answers as native; only IODelay turns NOP under KVM.
            assert_eq!(k.answer, nat.answer, "{}", k.name);
            let e = &entries[usize::from(k.number)];
            assert_eq!(e.nop_on_hypervisor, k.call == Call::IODelay, "{}", k.name);
            assert_eq!(e.needs_ram, Native.needs_ram(k.call), "{}", k.name);
        }
        assert!(
            g.ram
                .region(&KVMC)
                .is_some_and(|r| r.size == kv::SIZE && r.slots > 1)
        );
        assert!(g.helpers.iter().any(|(n, _)| *n == helper::KVM_CPU));
    }
}
