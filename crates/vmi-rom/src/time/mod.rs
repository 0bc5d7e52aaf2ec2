//! Time and the local APIC through the ROM: the state kept in private RAM and the routines a
//! backend on real (or fully virtualized) hardware uses for APICRead/APICWrite (63–64) and the
//! VMI timer (66–71). Shared by every backend that needs them ([`crate::native`] now).
//!
//! - [`clock`]: the TSC as REAL and AVAILABLE (STOLEN is 0), its rate measured once at Init
//!   against PIT channel 2, and the wall clock from the CMOS RTC carried forward by the TSC.
//! - [`apic`]: finding the kernel's mapping of the local APIC (IA32_APIC_BASE, then a walk of
//!   the page tables under CR3 through the lowmem linear map — no guessed fixmap address), and
//!   APICRead/APICWrite on the calling CPU's APIC.
//! - [`alarm`]: SetAlarm/CancelAlarm: one alarm per CPU and counter, raised through the calling
//!   CPU's LVTT (with the vector and mask the kernel programmed) or IRQ0 (PIT channel 0).
//!
//! Why a page-table walk finds the APIC for every kernel 2.6.22–2.6.36: the kernel maps the
//! APIC page at a fixmap slot whose address depends on the configuration (NR_CPUS, highmem,
//! ACPI), never at a fixed address; but the physical base is architectural (MSR 0x1B), the
//! kernel's page tables are always in lowmem, which the ROM reads through the linear map at
//! `PAGE_OFFSET` = (the ROM's linear address − its physical address), and 2-level and PAE
//! tables are both walked. The walk runs once, at the first call that needs the APIC — after
//! the kernel mapped it — and its answer is kept.
//!
//! The routines shared between calls are [helpers](crate::Backend::helper_names): placed once
//! in the image and reached with a relative `call`.

pub mod alarm;
pub mod apic;
pub mod clock;

use crate::emit::Emit;
use crate::error::GenError;
use crate::ram::{self, Region};
use iced_x86::code_asm::*;

/// Tag of the per-ROM region.
pub const TIME: [u8; 4] = *b"time";
/// Tag of the per-CPU region (alarms).
pub const ALARMS: [u8; 4] = *b"alrm";

/// Offsets in the per-ROM region.
pub mod tm {
    /// Flag bits ([`super::flag`]).
    pub const FLAGS: i32 = 0x00;
    /// Linear address of the local APIC's page (0: not found yet).
    pub const APIC: i32 = 0x04;
    /// TSC cycles per second (u64).
    pub const TSC_HZ: i32 = 0x08;
    /// APIC-timer ticks (divide by 1) per TSC cycle, 32.32 fixed point (u64).
    pub const APIC_Q32: i32 = 0x10;
    /// Nanoseconds per TSC cycle, 32.32 (u64).
    pub const NS_Q32: i32 = 0x18;
    /// PIT ticks per TSC cycle, 32.32 (u64).
    pub const PIT_Q32: i32 = 0x20;
    /// Wall-clock time at [`WALL_TSC`], ns since 1970 (u64).
    pub const WALL_NS: i32 = 0x28;
    /// TSC when the RTC was read (u64).
    pub const WALL_TSC: i32 = 0x30;
    /// CPUs whose alarms need servicing at the APIC EOI (more than the hardware holds).
    pub const SERVICED: i32 = 0x38;
    /// The kernel's `PAGE_OFFSET`, as Init found it.
    pub const PAGE_OFFSET: i32 = 0x3C;
    /// Per-CPU slot keys: the GDT base of the CPU owning slot *n* (0: free).
    pub const KEYS: i32 = 0x40;
    /// The highest REAL value handed out (u64), when the counter must be kept monotonic
    /// across CPUs by hand (a hypervisor clock without the stable bit).
    pub const LAST: i32 = KEYS + 4 * crate::ram::MAX_CPUS as i32;
    /// Counter cycles per nanosecond, 32.32 (u64): a hypervisor's stolen ns to cycles.
    pub const CPN_Q32: i32 = LAST + 8;
    /// A hypervisor's wall-clock structure (KVM: version, seconds, nanoseconds).
    pub const WALL: i32 = CPN_Q32 + 8;
    /// Size of the region.
    pub const SIZE: u32 = WALL as u32 + 16;
}

/// Flag bits of [`tm::FLAGS`].
pub mod flag {
    /// The TSC rate is known.
    pub const CALIBRATED: u32 = 1 << 0;
    /// The APIC-timer rate is known.
    pub const APIC_TIMER: u32 = 1 << 1;
    /// The CPU has the TSC-deadline timer (CPUID.1:ECX.24).
    pub const TSC_DEADLINE: u32 = 1 << 2;
    /// Time comes from the KVM paravirtual clock ([`crate::kvm`]).
    pub const KVMCLOCK: u32 = 1 << 8;
    /// KVM steal time is registered: STOLEN counts.
    pub const STEAL: u32 = 1 << 9;
    /// KVM's paravirtual EOI is enabled.
    pub const PV_EOI: u32 = 1 << 10;
    /// The paravirtual clock is stable across CPUs (its TSC needs no clamp).
    pub const STABLE: u32 = 1 << 11;
}

/// Offsets in one CPU's alarm slot.
pub mod al {
    /// VMI flags of the REAL alarm | [`ARMED`] (AVAILABLE's at +4).
    pub const FLAGS: i32 = 0x00;
    /// Next expiry of the REAL alarm (u64; AVAILABLE's at +8).
    pub const EXPIRY: i32 = 0x08;
    /// Period of the REAL alarm (u64, 0 = one-shot; AVAILABLE's at +8).
    pub const PERIOD: i32 = 0x18;
    /// The expiry the hardware was set for (u64; 0 = none pending).
    pub const PROGRAMMED: i32 = 0x28;
    /// How the hardware runs ([`super::mode`]).
    pub const MODE: i32 = 0x30;
    /// 1 while the alarms need service at the APIC EOI (more than the hardware holds: two
    /// alarms, or a one-shot beyond the hardware's range); counted in [`super::tm::SERVICED`].
    pub const SERVICE: i32 = 0x34;
    /// Size of a slot.
    pub const SIZE: u32 = 0x40;
    /// Bit in [`FLAGS`]: the alarm is armed.
    pub const ARMED: u32 = 1 << 31;
}

/// Hardware modes of a CPU's alarm ([`al::MODE`]).
pub mod mode {
    /// Nothing armed.
    pub const IDLE: u32 = 0;
    /// LVTT one-shot (TMICT) for [`super::al::PROGRAMMED`].
    pub const LVTT_ONESHOT: u32 = 1;
    /// LVTT periodic: one periodic alarm, no service needed.
    pub const LVTT_PERIODIC: u32 = 2;
    /// TSC-deadline for [`super::al::PROGRAMMED`].
    pub const TSC_DEADLINE: u32 = 3;
    /// PIT channel 0 one-shot (mode 0).
    pub const PIT_ONESHOT: u32 = 4;
    /// PIT channel 0 periodic (mode 2): one periodic alarm.
    pub const PIT_PERIODIC: u32 = 5;
}

/// The private-RAM regions the time machinery needs.
pub fn regions() -> Vec<Region> {
    vec![
        Region {
            tag: TIME,
            size: tm::SIZE,
            align: 64,
            per_cpu: false,
        },
        Region {
            tag: ALARMS,
            size: al::SIZE,
            align: 64,
            per_cpu: true,
        },
    ]
}

/// Loads the per-ROM region's linear address into `reg` (or jumps to `none` without RAM).
/// Changes the flags; uses 4 bytes of stack transiently.
pub fn time_ptr(e: &mut Emit, reg: AsmRegister32, none: CodeLabel) -> Result<(), GenError> {
    let at = e.ram_region(&TIME)?.offset as i32;
    let bias = ram::pointer(e, reg, none)?;
    e.a.add(reg, at - bias)?;
    Ok(())
}

/// Helper names (see [`crate::Backend::helper_names`]).
pub mod helper {
    /// [`super::apic::emit_find`].
    pub const APIC_FIND: &str = "apic_find";
    /// [`super::alarm::emit_cpu_slot`].
    pub const CPU_SLOT: &str = "cpu_slot";
    /// [`super::alarm::emit_program`].
    pub const ALARM_PROGRAM: &str = "alarm_program";
    /// [`super::alarm::emit_service`].
    pub const ALARM_SERVICE: &str = "alarm_service";
    /// [`super::clock::emit_calibrate`].
    pub const CALIBRATE: &str = "calibrate";
    /// [`super::clock::emit_rtc_read`].
    pub const RTC_READ: &str = "rtc_read";
    /// [`crate::kvm::emit_cpu`] (the kvm backend's slot finder).
    pub const KVM_CPU: &str = "kvm_cpu";
    /// Every helper the shared machinery has, in placement order.
    pub const ALL: [&str; 6] = [
        CALIBRATE,
        RTC_READ,
        APIC_FIND,
        CPU_SLOT,
        ALARM_PROGRAM,
        ALARM_SERVICE,
    ];
}

/// Emits helper `name`.
pub fn emit_helper(name: &str, e: &mut Emit) -> Result<(), GenError> {
    match name {
        helper::APIC_FIND => apic::emit_find(e),
        helper::CPU_SLOT => alarm::emit_cpu_slot(e),
        helper::ALARM_PROGRAM => alarm::emit_program(e),
        helper::ALARM_SERVICE => alarm::emit_service(e),
        helper::CALIBRATE => clock::emit_calibrate(e),
        helper::RTC_READ => clock::emit_rtc_read(e),
        _ => Err(GenError::Inconsistent {
            backend: "time".into(),
            call: 0,
            name: "-",
            problem: "asked for a helper the time machinery does not have",
        }),
    }
}

/// EDX:EAX = (EDX:EAX × the u64 32.32 value at `[q]`) >> 32, modulo 2^64. Clobbers EBX, ECX,
/// EDI (keep them around it).
pub(crate) fn mul_q32(a: &mut CodeAssembler, q: AsmMemoryOperand) -> Result<(), GenError> {
    let q_hi = q + 4;
    a.mov(ebx, edx)?; // x hi
    a.mov(edi, eax)?; // x lo
    a.mul(dword_ptr(q))?; // lo × q lo
    a.mov(ecx, edx)?;
    a.mov(eax, edi)?;
    a.mul(dword_ptr(q_hi))?; // lo × q hi
    a.add(ecx, eax)?;
    a.adc(edx, 0)?;
    a.mov(edi, edx)?;
    a.mov(eax, ebx)?;
    a.mul(dword_ptr(q))?; // hi × q lo
    a.add(ecx, eax)?;
    a.adc(edi, edx)?;
    a.mov(eax, ebx)?;
    a.mul(dword_ptr(q_hi))?; // hi × q hi: its low half lands in the result's high word
    a.add(edi, eax)?;
    a.mov(eax, ecx)?;
    a.mov(edx, edi)?;
    Ok(())
}

/// EDX:EAX = (EDX << 32) / ECX as a 32.32 quotient of two u32 values (EDX = numerator, ECX =
/// denominator ≠ 0): the 64-bit result of `(n << 32) / d` by two 32-bit divisions that cannot
/// overflow. Clobbers EBX.
pub(crate) fn div_q32(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.mov(eax, edx)?;
    a.xor(edx, edx)?;
    a.div(ecx)?; // EAX = n / d, EDX = n % d
    a.mov(ebx, eax)?;
    a.xor(eax, eax)?;
    a.div(ecx)?; // EAX = (rem << 32) / d
    a.mov(edx, ebx)?;
    Ok(())
}
