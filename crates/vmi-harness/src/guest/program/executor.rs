//! The call-vector executor and the machine report: code generation for [`Step::Vector`](super::Step::Vector) and
//! [`Step::Machine`](super::Step::Machine) (see [`crate::guest::vector`] for the sequence), the boot-time set-up of
//! the test area, and the subroutines they share.

use super::{Gen, SNAPSHOT_STACK_BYTES, d, gpr, rec_word, u, vars};
use crate::error::HarnessError;
use crate::guest::layout::{self as l, test, var};
use crate::guest::vector::{Invoke, Op, Val, Vector, xslot};
use crate::protocol::{self as p, CALL_EFLAGS, NO_FAULT, StepId};
use iced_x86::code_asm::*;
use vmi_abi::calls::Reg;
use vmi_abi::consts::{LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_TSS, LINUX_USER_DS};

type R = Result<(), HarnessError>;

/// Labels of the executor's subroutines.
pub(super) struct Subs {
    /// Zeroes the extra words and the tick counter.
    clear_xbuf: CodeLabel,
    /// Records control, descriptor-table and debug registers into `VECTOR_RESULT`.
    capture_rest: CodeLabel,
    /// Copies the extra words into `VECTOR_RESULT` and sends it.
    send_vector: CodeLabel,
    /// Puts the guest back the way it was after boot.
    pub(super) restore: CodeLabel,
}

impl Subs {
    pub(super) fn new(a: &mut CodeAssembler) -> Subs {
        Subs {
            clear_xbuf: a.create_label(),
            capture_rest: a.create_label(),
            send_vector: a.create_label(),
            restore: a.create_label(),
        }
    }
}

const _: () = assert!(p::vector_result::REGS == p::call_result::REGS);

fn cr_reg(cr: u8) -> Result<AsmRegisterCr, HarnessError> {
    match cr {
        0 => Ok(cr0),
        2 => Ok(cr2),
        3 => Ok(cr3),
        4 => Ok(cr4),
        _ => Err(HarnessError::InvalidConfig {
            reason: format!("no control register CR{cr}"),
        }),
    }
}

fn dr_reg(dr: u8) -> Result<AsmRegisterDr, HarnessError> {
    match dr {
        0 => Ok(dr0),
        1 => Ok(dr1),
        2 => Ok(dr2),
        3 => Ok(dr3),
        6 => Ok(dr6),
        7 => Ok(dr7),
        _ => Err(HarnessError::InvalidConfig {
            reason: format!("no debug register DR{dr}"),
        }),
    }
}

/// `reg = val`.
fn load(a: &mut CodeAssembler, reg: AsmRegister32, val: Val) -> R {
    match val {
        Val::Imm(v) => a.mov(reg, v)?,
        Val::Mem(addr) => a.mov(reg, d(addr))?,
        Val::Resume => a.mov(reg, d(vars(var::RESUME)))?,
    }
    Ok(())
}

/// `push val`.
fn push(a: &mut CodeAssembler, val: Val) -> R {
    match val {
        Val::Imm(v) => a.push(v as i32)?,
        Val::Mem(addr) => a.push(d(addr))?,
        Val::Resume => a.push(d(vars(var::RESUME)))?,
    }
    Ok(())
}

fn out8(a: &mut CodeAssembler, port: u16, value: u8) -> R {
    a.mov(al, u32::from(value))?;
    if port <= 0xFF {
        a.out(u32::from(port), al)?;
    } else {
        a.mov(dx, u32::from(port))?;
        a.out(dx, al)?;
    }
    Ok(())
}

/// Counts one invocation of `call` in the guest's [invocation counters](crate::guest::Invocations):
/// `lock inc` of its counter, then a log slot reserved with `lock xadd` on the total. Uses EAX
/// and the flags; safe against an interrupt handler that counts too.
pub(super) fn count_invocation(a: &mut CodeAssembler, call: u8) -> R {
    a.lock().inc(d(vars(var::INVOKED) + 4 * u32::from(call)))?;
    a.mov(eax, 1u32)?;
    a.lock().xadd(d(vars(var::INVOKE_TOTAL)), eax)?;
    a.and(eax, var::INVOKE_LOG_LEN - 1)?;
    a.mov(
        byte_ptr(eax + vars(var::INVOKE_LOG) as i32),
        u32::from(call),
    )?;
    Ok(())
}

impl Gen<'_> {
    /// Boot-time set-up of the test area (after TR is loaded): the boot control registers,
    /// the second page directory, the window's PTEs, the frame markers and the ring-3 stub.
    pub(super) fn setup_test_area(&mut self) -> R {
        let paging = self.map.paging();
        let a = &mut self.a;
        for (cr, at) in [
            (cr0, var::BOOT_CR0),
            (cr3, var::BOOT_CR3),
            (cr4, var::BOOT_CR4),
        ] {
            a.mov(eax, cr)?;
            a.mov(d(vars(at)), eax)?;
        }
        a.mov(d(vars(var::LAST_TRAP)), NO_FAULT)?;
        // The invocation counters, log and relocation types start at zero whatever the loader
        // left there.
        a.cld()?;
        a.xor(eax, eax)?;
        a.mov(d(vars(var::INVOKE_TOTAL)), eax)?;
        a.mov(edi, vars(var::INVOKED))?;
        a.mov(ecx, (var::SIZE - var::INVOKED) / 4)?;
        a.rep().stosd()?;
        if paging {
            a.cld()?;
            a.mov(esi, l::PAGE_DIR)?;
            a.mov(edi, test::PAGE_DIR2)?;
            a.mov(ecx, 1024u32)?;
            a.rep().movsd()?;
        }
        Self::window_ptes(a)?;
        for (at, v) in [
            (test::FRAME_A, test::MARK_A),
            (test::FRAME_B, test::MARK_B),
            (test::FRAME_C, test::MARK_C),
            (test::USER_CODE, test::USER_STUB),
        ] {
            a.mov(d(at), v)?;
        }
        Ok(())
    }

    /// Writes the test window's PTEs.
    fn window_ptes(a: &mut CodeAssembler) -> R {
        for (i, pte) in test::window_ptes().iter().enumerate() {
            a.mov(d(test::PT_WINDOW + 4 * u(i)), *pte)?;
        }
        Ok(())
    }

    /// The `MACHINE` step.
    pub(super) fn machine(&mut self) -> R {
        use p::machine as m;
        self.begin(StepId::Machine)?;
        let apic = self.map.apic();
        let slot = |i: usize| u8::try_from(i).unwrap_or(u8::MAX);
        let a = &mut self.a;
        a.call(self.x.clear_xbuf)?;
        for (cr, at) in [(cr0, m::CR0), (cr3, m::CR3), (cr4, m::CR4)] {
            a.mov(eax, cr)?;
            a.mov(d(xslot(slot(at))), eax)?;
        }
        a.pushfd()?;
        a.pop(d(xslot(slot(m::EFLAGS))))?;
        for (leaf, at) in [(0u32, m::CPUID0), (1, m::CPUID1)] {
            self.op(&Op::Cpuid {
                leaf,
                subleaf: 0,
                slot: slot(at),
            })?;
        }
        let a = &mut self.a;
        a.mov(eax, 0x8000_0000u32)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(d(xslot(slot(m::CPUID_EXT_MAX))), eax)?;
        a.mov(eax, 0x8000_0001u32)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(d(xslot(slot(m::CPUID_EXT1_EDX))), edx)?;
        self.op(&Op::Cpuid {
            leaf: p::HV_LEAF,
            subleaf: 0,
            slot: slot(m::CPUID_HV),
        })?;
        let a = &mut self.a;
        a.mov(eax, p::HV_LEAF + 1)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(d(xslot(slot(m::CPUID_HV1_EAX))), eax)?;
        self.guarded(slot(m::RDPMC_FAULT), |a| {
            a.xor(ecx, ecx)?;
            a.rdpmc()?;
            a.mov(d(xslot(slot(m::RDPMC_LO))), eax)?;
            a.mov(d(xslot(slot(m::RDPMC_HI))), edx)?;
            Ok(())
        })?;
        self.guarded(slot(m::APIC_BASE_FAULT), |a| {
            a.mov(ecx, 0x1Bu32)?;
            a.rdmsr()?;
            a.mov(d(xslot(slot(m::APIC_BASE_LO))), eax)?;
            a.mov(d(xslot(slot(m::APIC_BASE_HI))), edx)?;
            Ok(())
        })?;
        self.guarded(slot(m::APIC_FAULT), |a| {
            a.mov(eax, d(apic + 0x30))?;
            a.mov(d(xslot(slot(m::APIC_VERSION))), eax)?;
            Ok(())
        })?;
        // (a fault while reading the tables leaves no timer: its vector goes to a spare word)
        let spare = slot(p::vector_result::EXTRA_WORDS - 1);
        self.guarded(spare, |a| {
            super::timer::find_pm_timer(a, slot(m::PM_TIMER_PORT), slot(m::PM_TIMER_FLAGS))
        })?;
        let a = &mut self.a;
        a.cld()?;
        a.mov(esi, xslot(0))?;
        a.mov(edi, rec_word(0))?;
        a.mov(ecx, u(m::WORDS))?;
        a.rep().movsd()?;
        self.send(p::tag::MACHINE)
    }

    /// Runs `body` with a trap armed; extra word `fault_slot` = the vector it raised, or
    /// [`NO_FAULT`]. Must run with ESP = the kernel stack top (the trap path resets it).
    fn guarded(&mut self, fault_slot: u8, body: impl FnOnce(&mut CodeAssembler) -> R) -> R {
        let a = &mut self.a;
        let mut arm = a.create_label();
        let mut done = a.create_label();
        a.mov(d(vars(var::LAST_TRAP)), NO_FAULT)?;
        a.call(arm)?;
        a.jmp(done)?;
        a.set_label(&mut arm)?;
        a.pop(d(vars(var::TRAP_RESUME)))?;
        body(a)?;
        a.mov(d(vars(var::TRAP_RESUME)), 0u32)?;
        a.set_label(&mut done)?;
        a.mov(eax, d(vars(var::LAST_TRAP)))?;
        a.mov(d(xslot(fault_slot)), eax)?;
        Ok(())
    }

    /// One call vector (see [`crate::guest::vector`]).
    pub(super) fn vector(&mut self, index: u32, v: &Vector) -> R {
        self.begin(StepId::Vector(index))?;
        self.skip_unless_active()?;
        let stack_top = self.map.va(l::STACK_TOP);
        let capture_top = self.map.va(test::CAPTURE_STACK_TOP);
        let a = &mut self.a;
        let mut setup = a.create_label();
        let mut capture = a.create_label();
        let mut next = a.create_label();
        a.mov(d(vars(var::SITE)), 0u32)?;
        a.call(self.x.clear_xbuf)?;
        a.call(setup)?;
        // The resume point: capture before anything changes a register or a flag.
        a.set_label(&mut capture)?;
        a.mov(dword_ptr(vars(var::SAVE_ESP)).ss(), esp)?;
        a.mov(esp, capture_top)?;
        a.pushad()?;
        a.pushfd()?;
        for s in [cs, ss, ds, es, fs, gs] {
            a.push(s)?;
        }
        a.mov(ax, u32::from(LINUX_USER_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.cld()?;
        a.call(self.snapshot)?;
        a.add(esp, super::i(SNAPSHOT_STACK_BYTES))?;
        a.call(self.x.capture_rest)?;
        for op in &v.post {
            self.op(op)?;
        }
        let a = &mut self.a;
        a.call(self.x.send_vector)?;
        a.mov(esp, stack_top)?;
        a.call(self.x.restore)?;
        a.jmp(next)?;

        a.set_label(&mut setup)?;
        a.pop(d(vars(var::RESUME)))?;
        for op in &v.pre {
            self.op(op)?;
        }
        let a = &mut self.a;
        a.mov(esp, stack_top)?;
        Self::linux_data_segments(a)?;
        for w in v.stack.iter().rev() {
            push(a, *w)?;
        }
        if v.invoke != Invoke::NativeIret {
            count_invocation(a, v.call)?;
        }
        let site_phys = self.prev.sites.get(index as usize).copied().unwrap_or(0);
        a.mov(d(vars(var::SITE_EIP)), self.map.va(site_phys))?;
        a.push(v.eflags as i32)?;
        a.popfd()?;
        for reg in Reg::ALL {
            load(a, gpr(reg), v.input(reg))?;
        }
        let target = d(vars(var::RELOC_EIPS) + 4 * u32::from(v.call));
        let mut site = a.create_label();
        let mut trampoline = a.create_label();
        a.set_label(&mut site)?;
        match v.invoke {
            Invoke::Call => a.call(trampoline)?,
            Invoke::Jump => a.jmp(target)?,
            Invoke::NativeIret => a.iretd()?,
        }
        a.mov(dword_ptr(vars(var::SITE)).ss(), 1u32)?;
        a.jmp(capture)?;
        if v.invoke == Invoke::Call {
            a.set_label(&mut trampoline)?;
            a.jmp(target)?;
        }
        a.set_label(&mut next)?;
        self.vector_sites.push((index, site));
        Ok(())
    }

    /// One op (may use EAX, EBX, ECX, EDX, ESI, EDI).
    fn op(&mut self, op: &Op) -> R {
        let a = &mut self.a;
        match *op {
            Op::Store { addr, value } => match value {
                Val::Imm(v) => a.mov(d(addr), v)?,
                other => {
                    load(a, eax, other)?;
                    a.mov(d(addr), eax)?;
                }
            },
            Op::Load { addr, slot } => {
                a.mov(eax, d(addr))?;
                a.mov(d(xslot(slot)), eax)?;
            }
            Op::Copy { src, dst, dwords } => {
                a.cld()?;
                a.mov(esi, src)?;
                a.mov(edi, dst)?;
                a.mov(ecx, dwords)?;
                a.rep().movsd()?;
            }
            Op::Fill { dst, value, dwords } => {
                a.cld()?;
                a.mov(edi, dst)?;
                a.mov(eax, value)?;
                a.mov(ecx, dwords)?;
                a.rep().stosd()?;
            }
            Op::Hash { addr, dwords, slot } => {
                let mut again = a.create_label();
                let mut done = a.create_label();
                a.mov(esi, addr)?;
                a.mov(ecx, dwords)?;
                a.xor(edx, edx)?;
                a.test(ecx, ecx)?;
                a.jz(done)?;
                a.set_label(&mut again)?;
                a.rol(edx, 5)?;
                a.xor(edx, dword_ptr(esi))?;
                a.add(esi, 4)?;
                a.dec(ecx)?;
                a.jnz(again)?;
                a.set_label(&mut done)?;
                a.mov(d(xslot(slot)), edx)?;
            }
            Op::Or { addr, bits } => a.or(d(addr), bits as i32)?,
            Op::And { addr, mask } => a.and(d(addr), mask as i32)?,
            Op::ReadCr { cr, slot } => {
                a.mov(eax, cr_reg(cr)?)?;
                a.mov(d(xslot(slot)), eax)?;
            }
            Op::WriteCr { cr, value } => {
                load(a, ecx, value)?;
                a.mov(cr_reg(cr)?, ecx)?;
            }
            Op::ReadDr { dr, slot } => {
                a.mov(eax, dr_reg(dr)?)?;
                a.mov(d(xslot(slot)), eax)?;
            }
            Op::WriteDr { dr, value } => {
                load(a, eax, value)?;
                a.mov(dr_reg(dr)?, eax)?;
            }
            Op::LoadVia {
                base,
                mask,
                offset,
                slot,
            } => {
                let mut none = a.create_label();
                let mut done = a.create_label();
                a.mov(eax, d(xslot(base)))?;
                a.and(eax, mask as i32)?;
                a.jz(none)?;
                a.add(eax, offset as i32)?;
                a.jc(none)?;
                a.cmp(eax, l::LOWMEM_MAPPED - 4)?;
                a.ja(none)?;
                a.mov(eax, dword_ptr(eax))?;
                a.jmp(done)?;
                a.set_label(&mut none)?;
                a.xor(eax, eax)?;
                a.set_label(&mut done)?;
                a.mov(d(xslot(slot)), eax)?;
            }
            Op::Rdmsr { msr, slot } => {
                a.mov(ecx, msr)?;
                a.rdmsr()?;
                a.mov(d(xslot(slot)), eax)?;
                a.mov(d(xslot(slot.saturating_add(1))), edx)?;
            }
            Op::Wrmsr { msr, lo, hi } => {
                load(a, eax, lo)?;
                load(a, edx, hi)?;
                a.mov(ecx, msr)?;
                a.wrmsr()?;
            }
            Op::Cpuid {
                leaf,
                subleaf,
                slot,
            } => {
                a.mov(eax, leaf)?;
                a.mov(ecx, subleaf)?;
                a.cpuid()?;
                for (k, r) in [eax, ebx, ecx, edx].into_iter().enumerate() {
                    a.mov(d(xslot(slot) + 4 * u(k)), r)?;
                }
            }
            Op::Rdtsc { slot } => {
                a.rdtsc()?;
                a.mov(d(xslot(slot)), eax)?;
                a.mov(d(xslot(slot.saturating_add(1))), edx)?;
            }
            Op::Invlpg { addr } => a.invlpg(ptr(addr))?,
            Op::ReloadCr3 => {
                a.mov(eax, cr3)?;
                a.mov(cr3, eax)?;
            }
            Op::Lldt { selector } => {
                a.mov(ax, u32::from(selector))?;
                a.lldt(ax)?;
            }
            Op::Ltr { selector } => {
                a.mov(ax, u32::from(selector))?;
                a.ltr(ax)?;
            }
            Op::Out { port, value } => out8(a, port, value)?,
            Op::In { port, slot } => {
                if port <= 0xFF {
                    a.in_(al, u32::from(port))?;
                } else {
                    a.mov(dx, u32::from(port))?;
                    a.in_(al, dx)?;
                }
                a.movzx(eax, al)?;
                a.mov(d(xslot(slot)), eax)?;
            }
            Op::StartTimer { divisor } => {
                let [lo, hi] = divisor.to_le_bytes();
                a.mov(d(vars(var::TICKS)), 0u32)?;
                out8(a, 0x43, 0x34)?;
                out8(a, 0x40, lo)?;
                out8(a, 0x40, hi)?;
                a.in_(al, 0x21)?;
                a.and(al, 0xFE)?;
                a.out(0x21, al)?;
            }
            Op::StopTimer => {
                a.in_(al, 0x21)?;
                a.or(al, 0x01)?;
                a.out(0x21, al)?;
            }
            Op::WaitIrq0Pending { spins } => {
                let mut again = a.create_label();
                let mut done = a.create_label();
                a.mov(ecx, spins.max(1))?;
                a.set_label(&mut again)?;
                out8(a, 0x20, 0x0A)?;
                a.in_(al, 0x20)?;
                a.test(al, 1)?;
                a.jnz(done)?;
                a.dec(ecx)?;
                a.jnz(again)?;
                a.set_label(&mut done)?;
                a.nop()?;
            }
            Op::Cli => a.cli()?,
            Op::Sti => a.sti()?,
            Op::ArmTrap => {
                a.mov(eax, d(vars(var::RESUME)))?;
                a.mov(d(vars(var::TRAP_RESUME)), eax)?;
            }
            Op::Rom { .. }
            | Op::Div64 { .. }
            | Op::Add64 { .. }
            | Op::AlarmStart { .. }
            | Op::AlarmQuiesce
            | Op::Window { .. }
            | Op::TimePair { .. }
            | Op::RefTimer { .. }
            | Op::SendSamples
            | Op::ReadPm { .. }
            | Op::RealRun { .. }
            | Op::ReadRtc { .. }
            | Op::SelfIpi { .. }
            | Op::ApAlarmStart { .. }
            | Op::ApAlarmStop { .. } => self.timer_op(op)?,
        }
        Ok(())
    }

    /// The executor's subroutines.
    pub(super) fn executor_subroutines(&mut self) -> R {
        use p::vector_result as v;
        let mut labels = Subs {
            clear_xbuf: self.x.clear_xbuf,
            capture_rest: self.x.capture_rest,
            send_vector: self.x.send_vector,
            restore: self.x.restore,
        };
        let a = &mut self.a;

        a.set_label(&mut labels.clear_xbuf)?;
        a.cld()?;
        a.mov(edi, xslot(0))?;
        a.xor(eax, eax)?;
        a.mov(ecx, u(v::EXTRA_WORDS))?;
        a.rep().stosd()?;
        a.mov(d(vars(var::TICKS)), 0u32)?;
        a.ret()?;

        a.set_label(&mut labels.capture_rest)?;
        a.mov(eax, d(vars(var::SAVE_ESP)))?;
        a.mov(d(rec_word(v::REGS + p::snap::ESP)), eax)?;
        for (cr, at) in [(cr0, v::CR0), (cr2, v::CR2), (cr3, v::CR3), (cr4, v::CR4)] {
            a.mov(eax, cr)?;
            a.mov(d(rec_word(at)), eax)?;
        }
        let temp = vars(var::DT_TEMP);
        a.sgdt(ptr(temp))?;
        a.movzx(eax, word_ptr(temp))?;
        a.mov(d(rec_word(v::GDTR_LIMIT)), eax)?;
        a.mov(eax, d(temp + 2))?;
        a.mov(d(rec_word(v::GDTR_BASE)), eax)?;
        a.sidt(ptr(temp))?;
        a.movzx(eax, word_ptr(temp))?;
        a.mov(d(rec_word(v::IDTR_LIMIT)), eax)?;
        a.mov(eax, d(temp + 2))?;
        a.mov(d(rec_word(v::IDTR_BASE)), eax)?;
        a.xor(eax, eax)?;
        a.sldt(ax)?;
        a.mov(d(rec_word(v::LDTR)), eax)?;
        a.xor(eax, eax)?;
        a.str(ax)?;
        a.mov(d(rec_word(v::TR)), eax)?;
        for (k, r) in [dr0, dr1, dr2, dr3, dr6, dr7].into_iter().enumerate() {
            a.mov(eax, r)?;
            a.mov(d(rec_word(v::DR + k)), eax)?;
        }
        a.mov(eax, d(vars(var::SITE)))?;
        a.mov(d(rec_word(v::SITE)), eax)?;
        a.mov(eax, d(vars(var::TICKS)))?;
        a.mov(d(rec_word(v::TICKS)), eax)?;
        a.mov(eax, d(vars(var::SITE_EIP)))?;
        a.mov(d(rec_word(v::SITE_EIP)), eax)?;
        a.ret()?;

        a.set_label(&mut labels.send_vector)?;
        a.cld()?;
        a.mov(esi, xslot(0))?;
        a.mov(edi, rec_word(v::EXTRA))?;
        a.mov(ecx, u(v::EXTRA_WORDS))?;
        a.rep().movsd()?;
        a.mov(eax, d(vars(var::CUR_STEP)))?;
        a.mov(d(rec_word(v::STEP)), eax)?;
        self.send(p::tag::VECTOR_RESULT)?;
        self.a.ret()?;

        let a = &mut self.a;
        a.set_label(&mut labels.restore)?;
        a.cli()?;
        // CS = Linux's kernel CS again (an IRET frame may have left another code segment):
        // `retf` to the next instruction.
        let mut far_ret = a.create_label();
        let mut reloaded = a.create_label();
        a.push(u32::from(LINUX_KERNEL_CS))?;
        a.call(far_ret)?;
        a.jmp(reloaded)?;
        a.set_label(&mut far_ret)?;
        a.retf()?;
        a.set_label(&mut reloaded)?;
        a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
        a.mov(ss, ax)?;
        Self::linux_data_segments(a)?;
        a.cld()?;
        a.lgdt(ptr(l::GDTR_KERNEL))?;
        a.lidt(ptr(l::IDTR_KERNEL))?;
        for (src, dst, len) in [
            (super::host_data::GDT_PRISTINE, l::GDT, l::GDT_ENTRIES * 8),
            (super::host_data::TSS_PRISTINE, l::TSS, l::TSS_LEN),
        ] {
            a.mov(esi, l::HOST_DATA + src)?;
            a.mov(edi, dst)?;
            a.mov(ecx, u(len / 4))?;
            a.rep().movsd()?;
        }
        // Segment loads set the descriptors' accessed bits: load them again now, so that the
        // next vector's own loads leave the GDT as it is.
        a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
        a.mov(ss, ax)?;
        Self::linux_data_segments(a)?;
        // The pristine GDT has the TSS descriptor available again.
        a.mov(ax, u32::from(LINUX_TSS))?;
        a.ltr(ax)?;
        a.xor(eax, eax)?;
        a.lldt(ax)?;
        Self::window_ptes(a)?;
        // Through ECX: the boot code's `mov cr0, eax` stays the only one (the probe tells a
        // KVM that refuses paging by the #GP on that instruction).
        for (cr, at) in [
            (cr4, var::BOOT_CR4),
            (cr0, var::BOOT_CR0),
            (cr3, var::BOOT_CR3),
        ] {
            a.mov(ecx, d(vars(at)))?;
            a.mov(cr, ecx)?;
        }
        a.xor(eax, eax)?;
        for r in [dr0, dr1, dr2, dr3, dr6] {
            a.mov(r, eax)?;
        }
        a.mov(eax, 0x400u32)?;
        a.mov(dr7, eax)?;
        a.mov(d(vars(var::TRAP_RESUME)), 0u32)?;
        a.mov(al, 0xFF)?;
        a.out(0x21, al)?;
        a.out(0xA1, al)?;
        a.push(CALL_EFLAGS as i32)?;
        a.popfd()?;
        a.ret()?;
        Ok(())
    }
}
