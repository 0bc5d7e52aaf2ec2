//! Code generation for time: the alarm handler (interrupts counted per vector, with the TSC at
//! entry, the CPU that took them and the in-service bit around the EOI), the timing operations
//! of call vectors ([`Op::Rom`], [`Op::Window`], [`Op::TimePair`], [`Op::ReadRtc`], …), the
//! second CPU's alarm scenario, and the search for the ACPI PM timer in the firmware's tables.

use super::executor::count_invocation;
use super::{Gen, d, vars};
use crate::error::HarnessError;
use crate::guest::layout::{self as l, alarm, test, var};
use crate::guest::vector::{Op, Val, xslot};
use crate::protocol::{self as p, PmTimer};
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_abi::consts::{LINUX_KERNEL_DS, LINUX_USER_DS, VMI_CYCLES_REAL};

type R = Result<(), HarnessError>;

/// IRQ0 after the PIC remap.
const IRQ0_VECTOR: u8 = 0x20;
/// IRQ8 (the RTC) after the PIC remap.
const RTC_VECTOR: u8 = 0x28;
/// RTC register B: periodic interrupt enable.
const RTC_PIE: u32 = 0x40;
/// Local-APIC registers (offsets in its page).
const APIC_ID: u32 = 0x20;
const APIC_EOI: u32 = 0xB0;
const APIC_SVR: u32 = 0xF0;
const APIC_ISR: u32 = 0x100;
const APIC_ICR_LO: u32 = 0x300;
const APIC_ICR_HI: u32 = 0x310;
const APIC_LVTT: u32 = 0x320;
const APIC_TMICT: u32 = 0x380;
/// SVR bit 8: the APIC is software-enabled.
const SVR_ENABLE: u32 = 0x100;
/// LVTT bit 16: masked.
const LVT_MASKED: u32 = 0x1_0000;
/// ICR: destination shorthand "self", level assert, fixed delivery.
const ICR_SELF: u32 = 0x4_4000;
/// How long the first CPU waits for the second one's steps (PM-timer seconds).
const AP_WAIT_SECS: f64 = 0.5;
/// Polls of the draining spin (interrupts on) that delivers whatever is pending.
const DRAIN_SPINS: u32 = 2000;

/// Why the guest cannot run `op` (None: it can, or it is not a timing operation).
pub(super) fn problem(op: &Op) -> Option<String> {
    match *op {
        Op::Rom {
            call, stack_words, ..
        } => {
            if u32::from(call) >= var::RELOC_SLOTS {
                return Some(format!("call {call} has no relocation slot"));
            }
            (stack_words > 2).then(|| format!("{stack_words} stack words (at most 2)"))
        }
        Op::Div64 { by: 0, .. } => Some("division by zero".into()),
        Op::RealRun { count, .. } => (count < 2).then(|| format!("{count} calls (at least 2)")),
        Op::RefTimer { pit, rate } => {
            let ok = if pit {
                (19..=10_000).contains(&rate)
            } else {
                rate.is_power_of_two() && (2..=8192).contains(&rate)
            };
            (!ok).then(|| format!("a rate of {rate} Hz"))
        }
        Op::Window { pm, run, max, .. } => {
            if run == 0 || max == 0 {
                Some("an empty window".into())
            } else {
                (max > pm.mask() / 2)
                    .then(|| format!("{max} ticks do not fit half the {}-bit PM timer", pm.bits))
            }
        }
        _ => None,
    }
}

/// `dx` = the timer's port; `eax` = its count (masked).
fn read_pm(a: &mut CodeAssembler, pm: PmTimer) -> R {
    a.mov(dx, u32::from(pm.port))?;
    a.in_(eax, dx)?;
    if pm.bits < 32 {
        a.and(eax, pm.mask() as i32)?;
    }
    Ok(())
}

/// `reg` = `val`.
fn load(a: &mut CodeAssembler, reg: AsmRegister32, val: Val) -> R {
    match val {
        Val::Imm(v) => a.mov(reg, v)?,
        Val::Mem(addr) => a.mov(reg, d(addr))?,
        Val::Resume => a.mov(reg, d(vars(var::RESUME)))?,
    }
    Ok(())
}

/// Calls `call`'s relocation target (counted first; the count uses EAX, so the inputs are
/// loaded after it by `inputs`).
fn rom_call(a: &mut CodeAssembler, call: Call, inputs: impl FnOnce(&mut CodeAssembler) -> R) -> R {
    count_invocation(a, call as u8)?;
    inputs(a)?;
    a.call(d(vars(var::RELOC_EIPS) + 4 * call as u32))?;
    Ok(())
}

/// Spins until guest variable `v` is non-zero or `ticks` of the PM timer passed. Uses EAX,
/// EBX, EDX.
fn wait_var(a: &mut CodeAssembler, v: u32, pm: PmTimer, ticks: u32) -> R {
    let mut again = a.create_label();
    let mut done = a.create_label();
    read_pm(a, pm)?;
    a.mov(ebx, eax)?;
    a.set_label(&mut again)?;
    a.cmp(d(vars(v)), 0)?;
    a.jne(done)?;
    a.pause()?;
    read_pm(a, pm)?;
    a.sub(eax, ebx)?;
    if pm.bits < 32 {
        a.and(eax, pm.mask() as i32)?;
    }
    a.cmp(eax, ticks)?;
    a.jb(again)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// CMOS register `reg` = (`reg` & `keep`) | `set`. Uses EAX.
fn cmos_update(a: &mut CodeAssembler, reg: u8, keep: u32, set: u32) -> R {
    a.mov(al, u32::from(reg))?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    a.and(al, keep & 0xFF)?;
    a.or(al, set & 0xFF)?;
    a.mov(ah, al)?;
    a.mov(al, u32::from(reg))?;
    a.out(0x70, al)?;
    a.mov(al, ah)?;
    a.out(0x71, al)?;
    Ok(())
}

/// Reads RTC register C: acknowledges the RTC's interrupt. Uses EAX.
fn rtc_ack(a: &mut CodeAssembler) -> R {
    a.mov(al, 0x0C)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    Ok(())
}

/// [`Op::Div64`] and [`Op::Add64`] (nothing for other ops).
fn arith64(a: &mut CodeAssembler, op: &Op) -> R {
    match *op {
        Op::Div64 { src, by, dst } => {
            a.mov(ecx, by)?;
            a.xor(edx, edx)?;
            a.mov(eax, d(xslot(src.saturating_add(1))))?;
            a.div(ecx)?;
            a.mov(ebx, eax)?;
            a.mov(eax, d(xslot(src)))?;
            a.div(ecx)?;
            a.mov(d(xslot(dst)), eax)?;
            a.mov(d(xslot(dst.saturating_add(1))), ebx)?;
        }
        Op::Add64 { a: x, b: y, dst } => {
            a.mov(eax, d(xslot(x)))?;
            a.mov(edx, d(xslot(x.saturating_add(1))))?;
            a.add(eax, d(xslot(y)))?;
            a.adc(edx, d(xslot(y.saturating_add(1))))?;
            a.mov(d(xslot(dst)), eax)?;
            a.mov(d(xslot(dst.saturating_add(1))), edx)?;
        }
        _ => {}
    }
    Ok(())
}

/// [`Op::RealRun`]. Scratch: the last reading (2 words), calls left.
fn real_run(a: &mut CodeAssembler, count: u32, slot: u8) -> R {
    let t = |k: u32| d(vars(var::TIME_TEMP) + 4 * k);
    let s = |k: u8| d(xslot(slot.saturating_add(k)));
    let real = |a: &mut CodeAssembler| {
        rom_call(a, Call::GetCycleCounter, |a| {
            a.mov(eax, VMI_CYCLES_REAL)?;
            Ok(())
        })
    };
    let mut again = a.create_label();
    let mut back = a.create_label();
    let mut keep = a.create_label();
    let mut counted = a.create_label();
    for k in [0, 1, 2, 3, 4] {
        a.mov(s(k), 0u32)?;
    }
    real(a)?;
    for (k, r) in [(5, eax), (6, edx)] {
        a.mov(s(k), r)?;
    }
    a.mov(t(0), eax)?;
    a.mov(t(1), edx)?;
    a.mov(t(2), count - 1)?;
    a.set_label(&mut again)?;
    real(a)?;
    a.cmp(edx, t(1))?;
    a.ja(keep)?;
    a.jb(back)?;
    a.cmp(eax, t(0))?;
    a.jae(keep)?;
    a.set_label(&mut back)?;
    a.cmp(s(0), 0)?;
    a.jne(counted)?;
    for (k, v) in [(3, eax), (4, edx)] {
        a.mov(s(k), v)?;
    }
    for (k, from) in [(1, 0), (2, 1)] {
        a.mov(ecx, t(from))?;
        a.mov(s(k), ecx)?;
    }
    a.set_label(&mut counted)?;
    a.inc(s(0))?;
    a.set_label(&mut keep)?;
    a.mov(t(0), eax)?;
    a.mov(t(1), edx)?;
    a.dec(t(2))?;
    a.jnz(again)?;
    for (k, r) in [(7, eax), (8, edx)] {
        a.mov(s(k), r)?;
    }
    Ok(())
}

/// [`Op::ApAlarmStop`].
fn ap_alarm_stop(a: &mut CodeAssembler, pm: PmTimer, slot: u8) -> R {
    a.mov(d(vars(var::AP_STOP)), 1u32)?;
    wait_var(a, var::AP_DONE, pm, PmTimer::ticks(AP_WAIT_SECS))?;
    for (k, v) in [var::AP_DONE, var::AP_CANCEL, var::AP_LOOPS]
        .into_iter()
        .enumerate()
    {
        a.mov(eax, d(vars(v)))?;
        a.mov(d(xslot(slot.saturating_add(k as u8))), eax)?;
    }
    Ok(())
}

/// [`Op::Rom`]: the stack words, the count, EAX/EDX/ECX, the call, the result.
fn rom_op(
    a: &mut CodeAssembler,
    call: u8,
    regs: [Val; 3],
    stack: [Val; 2],
    words: u8,
    out: Option<u8>,
) -> R {
    let n = usize::from(words.min(2));
    for w in stack.iter().take(n).rev() {
        load(a, ebx, *w)?;
        a.push(ebx)?;
    }
    count_invocation(a, call)?;
    for (reg, v) in [eax, edx, ecx].into_iter().zip(regs) {
        load(a, reg, v)?;
    }
    a.call(d(vars(var::RELOC_EIPS) + 4 * u32::from(call)))?;
    if n > 0 {
        a.add(esp, 4 * n as i32)?;
    }
    if let Some(slot) = out {
        a.mov(d(xslot(slot)), eax)?;
        a.mov(d(xslot(slot.saturating_add(1))), edx)?;
    }
    Ok(())
}

/// [`Op::AlarmQuiesce`]: PIT channel 0 off (mode 5 with no count written never fires again),
/// IRQ0 masked, the RTC's periodic interrupt off, the local-APIC timer off with whatever is
/// pending drained, recording off.
fn quiesce(a: &mut CodeAssembler, apic: u32) -> R {
    a.cli()?;
    a.mov(d(vars(var::ALARM_MODE)), alarm::DRAIN | alarm::EOI_NATIVE)?;
    a.mov(al, 0x3A)?;
    a.out(0x43, al)?;
    a.in_(al, 0x21)?;
    a.or(al, 0x01)?;
    a.out(0x21, al)?;
    cmos_update(a, 0x0B, !RTC_PIE, 0)?;
    rtc_ack(a)?;
    apic_timer_off(a, apic)?;
    a.mov(d(vars(var::ALARM_MODE)), 0u32)?;
    Ok(())
}

/// Unmasks IRQ0 at the PIC, then acknowledges what is left pending from before (poll mode).
/// Interrupts must be off.
fn unmask_irq0(a: &mut CodeAssembler) -> R {
    let mut again = a.create_label();
    let mut done = a.create_label();
    a.in_(al, 0x21)?;
    a.and(al, 0xFE)?;
    a.out(0x21, al)?;
    a.mov(ecx, 4u32)?;
    a.set_label(&mut again)?;
    a.mov(al, 0x0C)?;
    a.out(0x20, al)?;
    a.in_(al, 0x20)?;
    a.test(al, 0x80)?;
    a.jz(done)?;
    a.mov(al, 0x20)?;
    a.out(0x20, al)?;
    a.dec(ecx)?;
    a.jnz(again)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// `sti`, a short spin, `cli`: whatever interrupt is pending gets delivered.
fn open_briefly(a: &mut CodeAssembler, spins: u32) -> R {
    let mut spin = a.create_label();
    a.sti()?;
    a.mov(ecx, spins)?;
    a.set_label(&mut spin)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(spin)?;
    a.cli()?;
    Ok(())
}

/// The local-APIC timer off natively (LVTT masked, one-shot, vector 0xFF; initial count 0),
/// pending interrupts delivered (the alarm handler must be draining or nothing must be
/// pending), eight EOIs for any in-service bit left.
fn apic_timer_off(a: &mut CodeAssembler, apic: u32) -> R {
    a.mov(d(apic + APIC_LVTT), LVT_MASKED | 0xFF)?;
    a.mov(d(apic + APIC_TMICT), 0u32)?;
    open_briefly(a, DRAIN_SPINS)?;
    for _ in 0..8 {
        a.mov(d(apic + APIC_EOI), 0u32)?;
    }
    Ok(())
}

/// Payload word `k` of the `SAMPLES` record assembled in [`test::SAMPLES`].
fn sample_word(k: usize) -> AsmMemoryOperand {
    d(test::SAMPLES + p::RECORD_HEADER_LEN as u32 + 4 * k as u32)
}

/// Keeps ESI (the TSC's low half) in the next slot of the list at `list` counted by guest
/// variable `count`, while there is one. Uses EAX.
fn sample(a: &mut CodeAssembler, count: u32, list: u32) -> R {
    let mut full = a.create_label();
    a.mov(eax, 1u32)?;
    a.lock().xadd(d(vars(count)), eax)?;
    a.cmp(eax, test::SAMPLE_SLOTS)?;
    a.jae(full)?;
    a.mov(dword_ptr(eax * 4 + list as i32), esi)?;
    a.set_label(&mut full)?;
    a.nop()?;
    Ok(())
}

/// EAX = 1 if the in-service bit of the vector in EBX is set, else 0. Uses ECX.
fn isr_bit(a: &mut CodeAssembler, apic: u32) -> R {
    a.mov(ecx, ebx)?;
    a.shr(ecx, 5)?;
    a.shl(ecx, 4)?;
    a.mov(eax, dword_ptr(ecx + (apic + APIC_ISR) as i32))?;
    a.mov(ecx, ebx)?;
    a.shr(eax, cl)?;
    a.and(eax, 1)?;
    Ok(())
}

impl Gen<'_> {
    /// One timing operation of a call vector (may use EAX, EBX, ECX, EDX, ESI, EDI).
    pub(super) fn timer_op(&mut self, op: &Op) -> R {
        let apic = self.map.apic();
        match *op {
            Op::Rom {
                call,
                eax: ea,
                edx: ed,
                ecx: ec,
                stack,
                stack_words,
                out,
            } => rom_op(&mut self.a, call, [ea, ed, ec], stack, stack_words, out)?,
            Op::Div64 { .. } | Op::Add64 { .. } => arith64(&mut self.a, op)?,
            Op::AlarmStart { vector, mode } => self.alarm_start(vector, mode)?,
            Op::AlarmQuiesce => quiesce(&mut self.a, apic)?,
            Op::Window {
                pm,
                run,
                max,
                period,
                sti,
                slot,
            } => self.window(pm, run, max, period, sti, slot)?,
            Op::TimePair { pm, real, slot } => self.time_pair(pm, real, slot)?,
            Op::RefTimer { pit, rate } => self.ref_timer(pit, rate)?,
            Op::ReadRtc { slot } => self.read_rtc(slot)?,
            Op::ReadPm { pm, slot } => {
                read_pm(&mut self.a, pm)?;
                self.a.mov(d(xslot(slot)), eax)?;
            }
            Op::RealRun { count, slot } => real_run(&mut self.a, count, slot)?,
            Op::SendSamples => self.send_samples()?,
            Op::SelfIpi { vector } => {
                let a = &mut self.a;
                a.or(d(apic + APIC_SVR), SVR_ENABLE as i32)?;
                a.mov(d(apic + APIC_ICR_HI), 0u32)?;
                a.mov(d(apic + APIC_ICR_LO), ICR_SELF | u32::from(vector))?;
                open_briefly(a, DRAIN_SPINS)?;
            }
            Op::ApAlarmStart {
                flags,
                vector,
                via_rom,
                period,
                pm,
                slot,
            } => self.ap_alarm_start(flags, vector, via_rom, period, pm, slot)?,
            Op::ApAlarmStop { pm, slot } => ap_alarm_stop(&mut self.a, pm, slot)?,
            _ => {
                return Err(HarnessError::InvalidConfig {
                    reason: format!("{op:?} is not a timing operation"),
                });
            }
        }
        Ok(())
    }

    /// [`Op::AlarmStart`].
    fn alarm_start(&mut self, vector: u8, mode: u32) -> R {
        let apic = self.map.apic();
        let a = &mut self.a;
        a.cli()?;
        a.cld()?;
        a.xor(eax, eax)?;
        a.mov(edi, vars(var::ALARM_HITS))?;
        a.mov(ecx, (var::BSP_APIC_ID - var::ALARM_HITS) / 4)?;
        a.rep().stosd()?;
        a.mov(d(vars(var::ALARM_VECTOR)), u32::from(vector))?;
        if mode & alarm::PV_EOI != 0 {
            a.mov(d(vars(var::ALARM_PV_ARMED)), 0u32)?;
            a.mov(d(vars(var::ALARM_PV_LEFT)), 0u32)?;
        }
        if vector == IRQ0_VECTOR {
            unmask_irq0(a)?;
        } else {
            a.or(d(apic + APIC_SVR), SVR_ENABLE as i32)?;
        }
        if mode & alarm::PER_CPU != 0 {
            a.mov(eax, d(apic + APIC_ID))?;
            a.shr(eax, 24)?;
            a.mov(d(vars(var::BSP_APIC_ID)), eax)?;
        }
        a.mov(d(vars(var::ALARM_MODE)), mode)?;
        Ok(())
    }

    /// [`Op::Window`]: EBX = the start, ESI = the previous reading; the hits and reference hits
    /// at the start wait in the first two extra words, the lost time in the third.
    fn window(&mut self, pm: PmTimer, run: u32, max: u32, period: u32, sti: bool, slot: u8) -> R {
        use crate::protocol::samples as sa;
        let s = |k: u8| d(xslot(slot.saturating_add(k)));
        let a = &mut self.a;
        let mut top = a.create_label();
        let mut short = a.create_label();
        let mut done = a.create_label();
        for k in [2, 4] {
            a.mov(s(k), 0u32)?;
        }
        a.rdtsc()?;
        a.mov(sample_word(sa::TSC_START), eax)?;
        a.mov(sample_word(sa::TSC_START + 1), edx)?;
        read_pm(a, pm)?;
        a.mov(ebx, eax)?;
        a.mov(esi, eax)?;
        for (k, v) in [(0, var::ALARM_HITS), (1, var::ALARM_REF_HITS)] {
            a.mov(eax, d(vars(v)))?;
            a.mov(s(k), eax)?;
        }
        a.mov(d(vars(var::ALARM_SAMPLES)), 0u32)?;
        a.mov(d(vars(var::REF_SAMPLES)), 0u32)?;
        if sti {
            a.sti()?;
        }
        a.set_label(&mut top)?;
        read_pm(a, pm)?;
        a.mov(ecx, eax)?;
        a.sub(ecx, esi)?;
        if pm.bits < 32 {
            a.and(ecx, pm.mask() as i32)?;
        }
        a.mov(esi, eax)?;
        a.cmp(ecx, period)?;
        a.jbe(short)?;
        a.inc(s(4))?;
        a.sub(ecx, period)?;
        a.add(s(2), ecx)?;
        a.set_label(&mut short)?;
        // EAX = total, EDX = effective.
        a.mov(eax, esi)?;
        a.sub(eax, ebx)?;
        if pm.bits < 32 {
            a.and(eax, pm.mask() as i32)?;
        }
        a.mov(edx, eax)?;
        a.sub(edx, s(2))?;
        a.cmp(edx, run)?;
        a.jae(done)?;
        a.cmp(eax, max)?;
        a.jb(top)?;
        a.set_label(&mut done)?;
        if sti {
            a.cli()?;
        }
        a.mov(s(3), eax)?;
        a.mov(sample_word(sa::PM_TICKS), eax)?;
        a.mov(s(2), edx)?;
        a.rdtsc()?;
        a.mov(sample_word(sa::TSC_END), eax)?;
        a.mov(sample_word(sa::TSC_END + 1), edx)?;
        for (k, v) in [(0, var::ALARM_HITS), (1, var::ALARM_REF_HITS)] {
            a.mov(eax, d(vars(v)))?;
            a.sub(eax, s(k))?;
            a.mov(s(k), eax)?;
        }
        Ok(())
    }

    /// [`Op::RefTimer`].
    fn ref_timer(&mut self, pit: bool, rate: u32) -> R {
        let a = &mut self.a;
        if pit {
            let divisor = (1_193_182 + rate / 2) / rate.max(1);
            let [lo, hi, ..] = divisor.to_le_bytes();
            for (port, v) in [(0x43u32, 0x34u8), (0x40, lo), (0x40, hi)] {
                a.mov(al, u32::from(v))?;
                a.out(port, al)?;
            }
            unmask_irq0(a)?;
            a.mov(d(vars(var::ALARM_REF_VECTOR)), u32::from(IRQ0_VECTOR))?;
            return Ok(());
        }
        // RTC: register A's rate select (32768 Hz >> (select − 1)), register B's periodic
        // interrupt enable; clear what is pending (register C); unmask IRQ8 and the cascade.
        let select = 16 - rate.max(2).ilog2();
        cmos_update(a, 0x0A, 0xF0, select)?;
        cmos_update(a, 0x0B, 0xFF, RTC_PIE)?;
        rtc_ack(a)?;
        a.in_(al, 0xA1)?;
        a.and(al, 0xFE)?;
        a.out(0xA1, al)?;
        a.in_(al, 0x21)?;
        a.and(al, 0xFB)?;
        a.out(0x21, al)?;
        a.mov(d(vars(var::ALARM_REF_VECTOR)), u32::from(RTC_VECTOR))?;
        Ok(())
    }

    /// [`Op::TimePair`]. Scratch: best width, tries left, counter before (2), PM reading.
    fn time_pair(&mut self, pm: PmTimer, real: bool, slot: u8) -> R {
        let t = |k: u32| d(vars(var::TIME_TEMP) + 4 * k);
        let s = |k: u8| d(xslot(slot.saturating_add(k)));
        let a = &mut self.a;
        let counter = |a: &mut CodeAssembler| -> R {
            if real {
                rom_call(a, Call::GetCycleCounter, |a| {
                    a.mov(eax, VMI_CYCLES_REAL)?;
                    Ok(())
                })
            } else {
                a.rdtsc()?;
                Ok(())
            }
        };
        let mut again = a.create_label();
        let mut worse = a.create_label();
        a.mov(t(0), u32::MAX)?;
        a.mov(t(1), 16u32)?;
        a.set_label(&mut again)?;
        counter(a)?;
        a.mov(t(2), eax)?;
        a.mov(t(3), edx)?;
        read_pm(a, pm)?;
        a.mov(t(4), eax)?;
        counter(a)?;
        a.mov(ecx, eax)?;
        a.sub(ecx, t(2))?;
        a.cmp(ecx, t(0))?;
        a.jae(worse)?;
        a.mov(t(0), ecx)?;
        a.mov(s(2), eax)?;
        a.mov(s(3), edx)?;
        for (from, to) in [(2, 0), (3, 1), (4, 4)] {
            a.mov(eax, t(from))?;
            a.mov(s(to), eax)?;
        }
        a.set_label(&mut worse)?;
        a.dec(t(1))?;
        a.jnz(again)?;
        Ok(())
    }

    /// [`Op::SendSamples`]: the record is assembled in [`test::SAMPLES`] around the lists.
    fn send_samples(&mut self) -> R {
        use crate::protocol::samples as sa;
        let word = sample_word;
        let len = p::payload_len(p::tag::SAMPLES).unwrap_or(0);
        let a = &mut self.a;
        a.mov(
            d(test::SAMPLES),
            u32::from(p::tag::SAMPLES) | (len as u32) << 16,
        )?;
        a.mov(eax, d(vars(var::CUR_STEP)))?;
        a.mov(word(sa::STEP), eax)?;
        a.mov(eax, d(vars(var::ALARM_SAMPLES)))?;
        a.mov(word(sa::ALARMS), eax)?;
        a.mov(eax, d(vars(var::REF_SAMPLES)))?;
        a.mov(word(sa::REFERENCES), eax)?;
        a.cld()?;
        a.mov(esi, test::SAMPLES)?;
        a.mov(ecx, (p::RECORD_HEADER_LEN + len) as u32)?;
        a.mov(dx, u32::from(crate::qemu::DEBUGCON_PORT))?;
        a.rep().outsb()?;
        Ok(())
    }

    /// [`Op::ReadRtc`]: up to 8 reads until two in a row agree.
    fn read_rtc(&mut self, slot: u8) -> R {
        let s = |k: u8| d(xslot(slot.saturating_add(k)));
        let tries = d(vars(var::TIME_TEMP));
        let a = &mut self.a;
        let mut again = a.create_label();
        let mut uip = a.create_label();
        let mut idle = a.create_label();
        let mut differ = a.create_label();
        let mut done = a.create_label();
        a.mov(tries, 8u32)?;
        a.set_label(&mut again)?;
        a.mov(ecx, 1_000_000u32)?;
        a.set_label(&mut uip)?;
        a.mov(al, 0x0A)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)?;
        a.test(al, 0x80)?;
        a.jz(idle)?;
        a.dec(ecx)?;
        a.jnz(uip)?;
        a.set_label(&mut idle)?;
        for (reg, regs) in [
            (ebx, [0x07u8, 0x04, 0x02, 0x00]),
            (esi, [0x0B, 0x32, 0x09, 0x08]),
        ] {
            a.xor(reg, reg)?;
            for r in regs {
                a.mov(al, u32::from(r))?;
                a.out(0x70, al)?;
                a.in_(al, 0x71)?;
                a.shl(reg, 8)?;
                a.movzx(eax, al)?;
                a.or(reg, eax)?;
            }
        }
        a.cmp(ebx, s(0))?;
        a.jne(differ)?;
        a.cmp(esi, s(1))?;
        a.je(done)?;
        a.set_label(&mut differ)?;
        a.mov(s(0), ebx)?;
        a.mov(s(1), esi)?;
        a.dec(tries)?;
        a.jnz(again)?;
        a.set_label(&mut done)?;
        a.nop()?;
        Ok(())
    }

    /// [`Op::ApAlarmStart`] (the second CPU's code is emitted inside, jumped over).
    fn ap_alarm_start(
        &mut self,
        flags: u32,
        vector: u8,
        via_rom: bool,
        period: u8,
        pm: PmTimer,
        slot: u8,
    ) -> R {
        let apic = self.map.apic();
        let a = &mut self.a;
        let mut no_start = a.create_label();
        let mut out = a.create_label();
        a.mov(d(vars(var::AP_ARMED)), 0u32)?;
        a.mov(d(vars(var::AP_STOP)), 0u32)?;
        a.mov(d(vars(var::AP_CANCEL)), u32::MAX)?;
        for k in 0..2u8 {
            a.mov(eax, d(xslot(period.saturating_add(k))))?;
            a.mov(d(vars(var::AP_PERIOD) + 4 * u32::from(k)), eax)?;
        }
        // The second CPU's own GDT, a copy of the first's.
        a.cld()?;
        a.mov(esi, l::GDT)?;
        a.mov(edi, test::AP_GDT)?;
        a.mov(ecx, l::GDT_ENTRIES as u32 * 2)?;
        a.rep().movsd()?;
        let gdtr =
            crate::guest::gdt::pseudo_descriptor(self.map.va(test::AP_GDT), l::GDT_ENTRIES * 8);
        let [l0, l1, b0, b1, b2, b3] = gdtr;
        a.mov(d(test::AP_GDTR), u32::from_le_bytes([l0, l1, b0, b1]))?;
        a.mov(
            word_ptr(test::AP_GDTR + 4),
            u32::from(u16::from_le_bytes([b2, b3])),
        )?;
        // INIT, then SIPI, SIPI, 10 ms apart (PM timer: `pause` is slow under TCG).
        let delay = |a: &mut CodeAssembler| wait_var(a, var::TIME_TEMP, pm, PmTimer::ticks(0.01));
        a.mov(d(vars(var::TIME_TEMP)), 0u32)?;
        super::stress::launch_ap(
            a,
            apic,
            |a| ap_alarm_body(a, apic, flags, vector, via_rom),
            delay,
        )?;
        wait_var(a, var::AP_READY, pm, PmTimer::ticks(AP_WAIT_SECS))?;
        a.cmp(d(vars(var::AP_READY)), 0)?;
        a.je(no_start)?;
        a.mov(d(xslot(slot)), 1u32)?;
        a.mov(d(vars(var::AP_READY)), 2u32)?;
        wait_var(a, var::AP_ARMED, pm, PmTimer::ticks(AP_WAIT_SECS))?;
        a.mov(eax, d(vars(var::AP_ARMED)))?;
        a.mov(d(xslot(slot.saturating_add(1))), eax)?;
        a.jmp(out)?;
        a.set_label(&mut no_start)?;
        a.mov(d(xslot(slot)), 0u32)?;
        a.mov(d(xslot(slot.saturating_add(1))), 0u32)?;
        a.set_label(&mut out)?;
        a.nop()?;
        Ok(())
    }

    /// The alarm handler, entered by jump from a stub with the vector and a dummy error code
    /// pushed over the interrupt frame: counts the interrupt (expected vector, reference timer
    /// or stray), notes the TSC at the first hit's entry, the CPU and the in-service bit as
    /// the mode asks, acknowledges it (IRQ0 at the PIC, the reference natively, others as the
    /// mode says) and returns with every register intact.
    pub(super) fn alarm_handler(&mut self, entry: &mut CodeLabel) -> R {
        let apic = self.map.apic();
        let mode = d(vars(var::ALARM_MODE));
        let no_iret = self.no_iret;
        let a = &mut self.a;
        let mut stray = a.create_label();
        let mut expected = a.create_label();
        let mut eoi = a.create_label();
        let mut done = a.create_label();
        a.set_label(entry)?;
        a.pushad()?;
        a.push(ds)?;
        a.push(es)?;
        a.rdtsc()?;
        a.mov(esi, eax)?;
        a.mov(edi, edx)?;
        a.mov(ax, u32::from(LINUX_USER_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.cld()?;
        // pushad (32 bytes) and two segments: the vector is at esp + 40.
        a.mov(ebx, dword_ptr(esp + 40))?;
        a.test(mode, alarm::DRAIN as i32)?;
        a.jnz(eoi)?;
        a.cmp(ebx, d(vars(var::ALARM_VECTOR)))?;
        a.je(expected)?;
        a.cmp(ebx, d(vars(var::ALARM_REF_VECTOR)))?;
        a.jne(stray)?;
        a.lock().inc(d(vars(var::ALARM_REF_HITS)))?;
        sample(a, var::REF_SAMPLES, test::SAMPLE_REFERENCES)?;
        a.jmp(eoi)?;
        a.set_label(&mut expected)?;
        alarm_hit(a, apic)?;
        a.jmp(eoi)?;
        a.set_label(&mut stray)?;
        a.lock().inc(d(vars(var::ALARM_STRAY)))?;
        a.mov(d(vars(var::ALARM_STRAY_VEC)), ebx)?;
        a.set_label(&mut eoi)?;
        alarm_eoi(a, apic, done)?;
        a.set_label(&mut done)?;
        a.pop(es)?;
        a.pop(ds)?;
        a.popad()?;
        a.add(esp, 8)?;
        super::irq_return(a, no_iret)?;
        Ok(())
    }
}

/// APICWrite(0xB0, 0) through the ROM; with [`alarm::PV_EOI`] in the mode, KVM's PV-EOI word
/// (at the guest-physical address MSR_KVM_PV_EOI_EN holds with its enable bit, identity-mapped
/// low memory) read before and after it ([`var::ALARM_PV_ARMED`], [`var::ALARM_PV_LEFT`]).
/// Then on to `after`. May use EAX, ECX, EDX.
fn rom_eoi_watched(a: &mut CodeAssembler, after: CodeLabel) -> R {
    let eoi = |a: &mut CodeAssembler| {
        rom_call(a, Call::APICWrite, |a| {
            a.mov(eax, APIC_EOI)?;
            a.xor(edx, edx)?;
            Ok(())
        })
    };
    let mut plain = a.create_label();
    let mut call = a.create_label();
    a.test(d(vars(var::ALARM_MODE)), alarm::PV_EOI as i32)?;
    a.jz(plain)?;
    a.mov(ecx, crate::protocol::MSR_KVM_PV_EOI_EN)?;
    a.rdmsr()?;
    a.test(eax, 1)?;
    a.jz(plain)?;
    a.and(eax, !1)?;
    a.cmp(eax, l::LOWMEM_MAPPED - 4)?;
    a.jae(plain)?;
    a.push(eax)?;
    a.test(dword_ptr(eax), 1)?;
    a.jz(call)?;
    a.lock().inc(d(vars(var::ALARM_PV_ARMED)))?;
    a.set_label(&mut call)?;
    eoi(a)?;
    a.pop(eax)?;
    a.test(dword_ptr(eax), 1)?;
    a.jz(after)?;
    a.lock().inc(d(vars(var::ALARM_PV_LEFT)))?;
    a.jmp(after)?;
    a.set_label(&mut plain)?;
    eoi(a)?;
    a.jmp(after)?;
    Ok(())
}

/// The alarm handler's bookkeeping of a hit at the expected vector (EBX; ESI:EDI = the TSC at
/// entry): its sample, the CPU, the in-service bit, the count, the first hit's TSC (and REAL
/// through the ROM).
fn alarm_hit(a: &mut CodeAssembler, apic: u32) -> R {
    let mode = d(vars(var::ALARM_MODE));
    let mut cpu_done = a.create_label();
    let mut isr_done = a.create_label();
    let mut not_first = a.create_label();
    sample(a, var::ALARM_SAMPLES, test::SAMPLE_ALARMS)?;
    a.test(mode, alarm::PER_CPU as i32)?;
    a.jz(cpu_done)?;
    a.mov(eax, d(apic + APIC_ID))?;
    a.shr(eax, 24)?;
    a.cmp(eax, d(vars(var::BSP_APIC_ID)))?;
    a.je(cpu_done)?;
    a.lock().inc(d(vars(var::ALARM_HITS_AP)))?;
    a.set_label(&mut cpu_done)?;
    a.test(mode, alarm::CHECK_ISR as i32)?;
    a.jz(isr_done)?;
    isr_bit(a, apic)?;
    a.test(eax, eax)?;
    a.jz(isr_done)?;
    a.lock().inc(d(vars(var::ALARM_ISR_IN)))?;
    a.set_label(&mut isr_done)?;
    a.mov(eax, 1u32)?;
    a.lock().xadd(d(vars(var::ALARM_HITS)), eax)?;
    a.test(eax, eax)?;
    a.jnz(not_first)?;
    a.mov(d(vars(var::ALARM_FIRST_TSC)), esi)?;
    a.mov(d(vars(var::ALARM_FIRST_TSC) + 4), edi)?;
    a.test(mode, alarm::READ_REAL as i32)?;
    a.jz(not_first)?;
    rom_call(a, Call::GetCycleCounter, |a| {
        a.mov(eax, VMI_CYCLES_REAL)?;
        Ok(())
    })?;
    a.mov(d(vars(var::ALARM_FIRST_REAL)), eax)?;
    a.mov(d(vars(var::ALARM_FIRST_REAL) + 4), edx)?;
    a.set_label(&mut not_first)?;
    a.nop()?;
    Ok(())
}

/// The alarm handler's acknowledgement of the interrupt at the vector in EBX: IRQ0 and the RTC
/// at the PIC, the rest as the mode says (draining: natively), then — checking the in-service
/// bit — whether the EOI cleared it; jumps to (or falls into) `done`.
fn alarm_eoi(a: &mut CodeAssembler, apic: u32, done: CodeLabel) -> R {
    let mode = d(vars(var::ALARM_MODE));
    let mut native_eoi = a.create_label();
    let mut rom_eoi = a.create_label();
    let mut after_eoi = a.create_label();
    let mut pic_eoi = a.create_label();
    let mut rtc_eoi = a.create_label();
    a.cmp(ebx, u32::from(IRQ0_VECTOR))?;
    a.je(pic_eoi)?;
    a.cmp(ebx, u32::from(RTC_VECTOR))?;
    a.je(rtc_eoi)?;
    a.mov(ecx, mode)?;
    a.test(ecx, alarm::DRAIN as i32)?;
    a.jnz(native_eoi)?;
    a.and(ecx, alarm::EOI_MASK as i32)?;
    a.cmp(ecx, alarm::EOI_NONE)?;
    a.je(done)?;
    a.cmp(ecx, alarm::EOI_ROM)?;
    a.je(rom_eoi)?;
    a.set_label(&mut native_eoi)?;
    a.mov(d(apic + APIC_EOI), 0u32)?;
    a.jmp(after_eoi)?;
    a.set_label(&mut rom_eoi)?;
    rom_eoi_watched(a, after_eoi)?;
    a.set_label(&mut after_eoi)?;
    a.test(mode, alarm::CHECK_ISR as i32)?;
    a.jz(done)?;
    a.test(mode, alarm::DRAIN as i32)?;
    a.jnz(done)?;
    a.cmp(ebx, d(vars(var::ALARM_VECTOR)))?;
    a.jne(done)?;
    isr_bit(a, apic)?;
    a.test(eax, eax)?;
    a.jz(done)?;
    a.lock().inc(d(vars(var::ALARM_ISR_STUCK)))?;
    a.jmp(done)?;
    a.set_label(&mut rtc_eoi)?;
    rtc_ack(a)?;
    a.mov(al, 0x20)?;
    a.out(0xA0, al)?;
    a.set_label(&mut pic_eoi)?;
    a.mov(al, 0x20)?;
    a.out(0x20, al)?;
    Ok(())
}

/// The second CPU's alarm scenario (see [`Op::ApAlarmStart`]), entered from the trampoline.
fn ap_alarm_body(a: &mut CodeAssembler, apic: u32, flags: u32, vector: u8, via_rom: bool) -> R {
    a.lgdt(ptr(test::AP_GDTR))?;
    a.lidt(ptr(l::IDTR_KERNEL))?;
    a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
    a.mov(ss, ax)?;
    a.mov(esp, l::AP_STACK_TOP)?;
    Gen::linux_data_segments(a)?;
    a.cld()?;
    a.or(d(apic + APIC_SVR), SVR_ENABLE as i32)?;
    a.mov(d(vars(var::AP_READY)), 1u32)?;
    let mut go = a.create_label();
    a.set_label(&mut go)?;
    a.pause()?;
    a.cmp(d(vars(var::AP_READY)), 2)?;
    a.jne(go)?;
    if via_rom {
        rom_call(a, Call::APICWrite, |a| {
            a.mov(eax, APIC_LVTT)?;
            a.mov(edx, u32::from(vector))?;
            Ok(())
        })?;
    } else {
        a.mov(d(apic + APIC_LVTT), u32::from(vector))?;
    }
    rom_call(a, Call::GetCycleCounter, |a| {
        a.mov(eax, VMI_CYCLES_REAL)?;
        Ok(())
    })?;
    a.mov(ebx, eax)?;
    a.mov(esi, edx)?;
    a.push(d(vars(var::AP_PERIOD) + 4))?;
    a.push(d(vars(var::AP_PERIOD)))?;
    rom_call(a, Call::SetAlarm, |a| {
        a.mov(eax, flags)?;
        a.mov(edx, ebx)?;
        a.mov(ecx, esi)?;
        Ok(())
    })?;
    a.add(esp, 8)?;
    a.mov(d(vars(var::AP_ARMED)), 1u32)?;
    a.sti()?;
    let mut wait = a.create_label();
    a.set_label(&mut wait)?;
    a.inc(d(vars(var::AP_LOOPS)))?;
    a.pause()?;
    a.cmp(d(vars(var::AP_STOP)), 0)?;
    a.je(wait)?;
    a.cli()?;
    rom_call(a, Call::CancelAlarm, |a| {
        a.mov(eax, flags)?;
        Ok(())
    })?;
    a.mov(d(vars(var::AP_CANCEL)), eax)?;
    apic_timer_off(a, apic)?;
    a.mov(d(vars(var::AP_DONE)), 1u32)?;
    super::halt_forever(a)
}

/// Looks for the ACPI PM timer like an OS: the RSDP ("RSD PTR ") on a 16-byte boundary in
/// 0xE0000–0xFFFFF, its RSDT, the FADT ("FACP") among the RSDT's entries, and in it
/// `PM_TMR_BLK` (offset 76) and the `TMR_VAL_EXT` flag (bit 8 of the flags at offset 112).
/// Tables above the low 64 MiB (outside the guest's identity map) are not followed. Extra
/// word `port` = the port (0: none), `flags` = 1 for a 32-bit timer. Without a BIOS (the
/// reset vector reads all ones) there is nothing to look for.
pub(super) fn find_pm_timer(a: &mut CodeAssembler, port: u8, flags: u8) -> R {
    let sig = |s: &[u8; 4]| u32::from_le_bytes(*s);
    let limit = l::LOWMEM_MAPPED - 0x1000;
    let mut scan = a.create_label();
    let mut next = a.create_label();
    let mut found = a.create_label();
    let mut entry = a.create_label();
    let mut skip = a.create_label();
    let mut none = a.create_label();
    a.mov(d(xslot(port)), 0u32)?;
    a.mov(d(xslot(flags)), 0u32)?;
    a.cmp(d(0xF_FFF0), -1)?;
    a.je(none)?;
    a.mov(esi, 0xE_0000u32)?;
    a.set_label(&mut scan)?;
    a.cmp(dword_ptr(esi), sig(b"RSD ") as i32)?;
    a.jne(next)?;
    a.cmp(dword_ptr(esi + 4), sig(b"PTR ") as i32)?;
    a.je(found)?;
    a.set_label(&mut next)?;
    a.add(esi, 16)?;
    a.cmp(esi, 0x10_0000)?;
    a.jb(scan)?;
    a.jmp(none)?;
    a.set_label(&mut found)?;
    a.mov(esi, dword_ptr(esi + 16))?;
    a.cmp(esi, limit)?;
    a.jae(none)?;
    a.cmp(dword_ptr(esi), sig(b"RSDT") as i32)?;
    a.jne(none)?;
    a.mov(ecx, dword_ptr(esi + 4))?;
    a.sub(ecx, 36)?;
    a.jb(none)?;
    a.shr(ecx, 2)?;
    a.cmp(ecx, 64)?;
    a.ja(none)?;
    a.lea(ebx, dword_ptr(esi + 36))?;
    a.set_label(&mut entry)?;
    a.test(ecx, ecx)?;
    a.jz(none)?;
    a.mov(edi, dword_ptr(ebx))?;
    a.cmp(edi, limit)?;
    a.jae(skip)?;
    a.cmp(dword_ptr(edi), sig(b"FACP") as i32)?;
    a.jne(skip)?;
    a.mov(eax, dword_ptr(edi + 76))?;
    a.cmp(eax, 0xFFFF)?;
    a.ja(none)?;
    a.mov(d(xslot(port)), eax)?;
    a.cmp(dword_ptr(edi + 4), 116)?;
    a.jb(none)?;
    a.mov(eax, dword_ptr(edi + 112))?;
    a.shr(eax, 8)?;
    a.and(eax, 1)?;
    a.mov(d(xslot(flags)), eax)?;
    a.jmp(none)?;
    a.set_label(&mut skip)?;
    a.add(ebx, 4)?;
    a.dec(ecx)?;
    a.jmp(entry)?;
    a.set_label(&mut none)?;
    a.nop()?;
    Ok(())
}
