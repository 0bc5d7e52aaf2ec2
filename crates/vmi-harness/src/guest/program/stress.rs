//! Code generation for [`Step::Stress`](super::Step::Stress) (see [`crate::guest::stress`]) and
//! the timer handler's stress calls.

use super::executor::count_invocation;
use super::{Gen, d, gpr, rec_word, u, vars};
use crate::error::HarnessError;
use crate::guest::layout::{self as l, var};
use crate::guest::stress::{CallSite, SiteRole, Stress, inputs};
use crate::protocol::{self as p, StepId, canary, stress as st};
use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_abi::calls::{Reg, RelocType, call};
use vmi_abi::consts::{LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_USER_DS};

type R = Result<(), HarnessError>;

/// EFLAGS.IF.
const IF: u32 = 0x200;
/// EFLAGS.DF.
const DF: u32 = 0x400;

/// Offset of the trampoline's 32-bit part.
const TRAMPOLINE_32: u32 = 0x40;
/// Offset of the trampoline's GDTR image.
const TRAMPOLINE_GDTR: u32 = 0xF0;
/// Spins (with `pause`) the first CPU waits for the second to come up or finish.
const AP_SPINS: u32 = 400_000_000;

/// The second CPU's real-mode start code, for [`l::AP_TRAMPOLINE`] (SIPI vector 0x08): load
/// the boot GDT, enter protected mode, take the kernel data segments and the AP stack, turn on
/// paging like the first CPU did at boot, and jump to [`var::AP_ENTRY`].
pub(super) fn ap_trampoline(map: &crate::guest::MemoryMap) -> Result<Vec<u8>, HarnessError> {
    let base = l::AP_TRAMPOLINE;
    let mut a = CodeAssembler::new(16)?;
    a.cli()?;
    a.cld()?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.lgdt(ptr(base + TRAMPOLINE_GDTR))?;
    a.mov(eax, cr0)?;
    a.or(eax, 1)?;
    a.mov(cr0, eax)?;
    a.jmp_far(LINUX_KERNEL_CS, base + TRAMPOLINE_32)?;
    let mut real = a.assemble(u64::from(base))?;
    let mut a = CodeAssembler::new(32)?;
    a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
    a.mov(ss, ax)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(esp, l::AP_STACK_TOP)?;
    if map.paging() {
        a.mov(eax, cr4)?;
        a.or(eax, crate::guest::paging::CR4_PSE as i32)?;
        a.mov(cr4, eax)?;
        a.mov(eax, l::PAGE_DIR)?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr0)?;
        a.or(
            eax,
            (crate::guest::paging::CR0_PG | crate::guest::paging::CR0_WP) as i32,
        )?;
        a.mov(cr0, eax)?;
    }
    a.mov(eax, d(vars(var::AP_ENTRY)))?;
    a.jmp(eax)?;
    let prot = a.assemble(u64::from(base + TRAMPOLINE_32))?;
    if real.len() > TRAMPOLINE_32 as usize
        || TRAMPOLINE_32 as usize + prot.len() > TRAMPOLINE_GDTR as usize
    {
        return Err(HarnessError::InvalidConfig {
            reason: format!(
                "the AP trampoline does not fit ({} + {} bytes)",
                real.len(),
                prot.len()
            ),
        });
    }
    real.resize(TRAMPOLINE_32 as usize, 0x90);
    real.extend_from_slice(&prot);
    real.resize(TRAMPOLINE_GDTR as usize, 0x90);
    real.extend_from_slice(&crate::guest::gdt::pseudo_descriptor(
        l::GDT,
        l::GDT_ENTRIES * 8,
    ));
    real.resize(l::AP_TRAMPOLINE_LEN as usize, 0);
    Ok(real)
}

/// Where the stress code calls the ROM from (see [`crate::guest::stress`]'s "Call sites"): a
/// label after every `call` to a relocation target, and the shared subroutines.
#[derive(Debug, Default)]
pub(super) struct Sites {
    /// (configuration, call, role, label right after the `call`).
    sites: Vec<(u32, Call, SiteRole, CodeLabel)>,
    /// (configuration, call, entry) of each shared subroutine, emitted by [`Sites::emit_shared`].
    shared: Vec<(u32, Call, CodeLabel)>,
}

impl Sites {
    /// Calls relocation target `c` for configuration `n`: from a call site of its own recorded
    /// as `role`, or through the configuration's shared subroutine for `c`.
    fn call(&mut self, a: &mut CodeAssembler, n: u32, s: &Stress, c: Call, role: SiteRole) -> R {
        if s.shared_sites {
            let entry = match self.shared.iter().find(|(k, x, _)| *k == n && *x == c) {
                Some((_, _, l)) => *l,
                None => {
                    let l = a.create_label();
                    self.shared.push((n, c, l));
                    l
                }
            };
            a.call(entry)?;
            return Ok(());
        }
        self.direct(a, n, c, role)
    }

    /// `call [relocation slot of c]`, and a label on the return address.
    fn direct(&mut self, a: &mut CodeAssembler, n: u32, c: Call, role: SiteRole) -> R {
        a.call(d(vars(var::RELOC_EIPS) + 4 * c as u32))?;
        let mut ret = a.create_label();
        a.set_label(&mut ret)?;
        a.zero_bytes()?;
        self.sites.push((n, c, role, ret));
        Ok(())
    }

    /// The shared subroutines the code calls: `call [slot]; ret` each.
    pub(super) fn emit_shared(&mut self, a: &mut CodeAssembler) -> R {
        for (n, c, mut entry) in std::mem::take(&mut self.shared) {
            a.set_label(&mut entry)?;
            self.direct(a, n, c, SiteRole::Shared)?;
            a.ret()?;
        }
        Ok(())
    }

    /// The sites at their run-time (linear) addresses once the code is assembled.
    pub(super) fn resolve(
        &self,
        res: &CodeAssemblerResult,
        map: &crate::guest::MemoryMap,
    ) -> Result<Vec<CallSite>, HarnessError> {
        self.sites
            .iter()
            .map(|(n, c, role, l)| {
                Ok(CallSite {
                    stress: *n,
                    call: *c,
                    role: *role,
                    ret: map.va(res.label_ip(l)? as u32),
                })
            })
            .collect()
    }
}

/// A violation exit of the loop: the code it stores and its label.
struct Exit {
    code: u32,
    label: CodeLabel,
}

impl Gen<'_> {
    /// One stress step: configuration `n`.
    pub(super) fn stress(&mut self, n: u32, s: &Stress) -> R {
        if let Some(why) = s.problem() {
            return Err(HarnessError::InvalidConfig {
                reason: format!("stress {n}: {why}"),
            });
        }
        self.begin(StepId::Stress(n))?;
        self.skip_unless_active()?;
        let stack_top = self.map.va(l::STACK_TOP);
        let mut exits: Vec<Exit> = Vec::new();
        let mut end = self.a.create_label();
        let mut exit = |a: &mut CodeAssembler, item: usize, check: u32| -> CodeLabel {
            let label = a.create_label();
            exits.push(Exit {
                code: (u(item) + 1) << 8 | check,
                label,
            });
            label
        };
        let a = &mut self.a;
        let sites = &mut self.sites;
        a.mov(d(vars(var::STRESS_VIOLATION)), 0u32)?;
        a.mov(d(vars(var::STRESS_LOOPS)), 0u32)?;
        // 1. Every call must be CALL_REL (item index: the mix, then the handler's calls).
        let mix_then_handler = s.mix.iter().chain(&s.handler).chain(&s.ap_mix).enumerate();
        for (k, c) in mix_then_handler {
            let mut calls = vec![*c];
            if *c == Call::DisableInterrupts {
                calls.push(Call::EnableInterrupts);
            }
            for c in calls {
                let bad = exit(a, k, st::CHECK_NOT_CALL_REL);
                a.cmp(
                    byte_ptr(vars(var::RELOC_TYPES) + c as u32),
                    u32::from(RelocType::CallRel as u8),
                )?;
                a.jne(bad)?;
            }
        }
        // 2. The second CPU, if any: started now, waiting for the go.
        if s.ap_loops > 0 {
            let no_start = exit(a, 0, st::CHECK_AP_START);
            start_ap(a, self.map.apic(), no_start, |a| ap_loop(a, (n, s), sites))?;
        }
        // 3. Timer, TSC, go.
        a.mov(esp, stack_top)?;
        Self::linux_data_segments(a)?;
        a.cld()?;
        a.mov(d(vars(var::TICKS)), 0u32)?;
        a.mov(d(vars(var::STRESS_TSC_PREV)), 0u32)?;
        a.mov(d(vars(var::STRESS_TSC_PREV) + 4), 0u32)?;
        a.rdtsc()?;
        a.mov(d(vars(var::STRESS_TSC)), eax)?;
        a.mov(d(vars(var::STRESS_TSC) + 4), edx)?;
        let [lo, hi] = s.divisor.to_le_bytes();
        for (port, val) in [(0x43u32, 0x34u8), (0x40, lo), (0x40, hi)] {
            a.mov(al, u32::from(val))?;
            a.out(port, al)?;
        }
        a.in_(al, 0x21)?;
        a.and(al, 0xFE)?;
        a.out(0x21, al)?;
        a.mov(d(vars(var::STRESS_ACTIVE)), n + 1)?;
        if s.ap_loops > 0 {
            a.mov(d(vars(var::AP_READY)), 2u32)?;
        }
        a.sti()?;
        // 4. The loop.
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        for (k, c) in s.mix.iter().enumerate() {
            let mut call = |a: &mut CodeAssembler, c: Call| sites.call(a, n, s, c, SiteRole::Loop);
            match c {
                Call::DisableInterrupts => {
                    checked_call(a, *c, k, false, stack_top, &mut exit, &mut call)?;
                    checked_call(
                        a,
                        Call::EnableInterrupts,
                        k,
                        true,
                        stack_top,
                        &mut exit,
                        &mut call,
                    )?;
                }
                _ => checked_call(a, *c, k, true, stack_top, &mut exit, &mut call)?,
            }
        }
        a.inc(d(vars(var::STRESS_LOOPS)))?;
        a.mov(eax, d(vars(var::STRESS_LOOPS)))?;
        a.cmp(eax, s.loops)?;
        a.jb(top)?;
        a.cmp(d(vars(var::TICKS)), s.ticks)?;
        a.jae(end)?;
        a.cmp(eax, s.max_loops)?;
        a.jb(top)?;
        a.jmp(end)?;
        for mut e in exits {
            a.set_label(&mut e.label)?;
            a.mov(d(vars(var::STRESS_VIOLATION)), e.code)?;
            a.jmp(end)?;
        }
        // 5. Stop, wait for the second CPU, report.
        a.set_label(&mut end)?;
        a.cli()?;
        a.mov(d(vars(var::STRESS_ACTIVE)), 0u32)?;
        a.in_(al, 0x21)?;
        a.or(al, 0x01)?;
        a.out(0x21, al)?;
        if s.ap_loops > 0 {
            // (only if it was given the go; a violation already recorded stays the first)
            let mut done = a.create_label();
            let mut late = a.create_label();
            a.cmp(d(vars(var::AP_READY)), 2)?;
            a.jne(done)?;
            wait_nonzero(a, var::AP_DONE, late)?;
            a.jmp(done)?;
            a.set_label(&mut late)?;
            a.cmp(d(vars(var::STRESS_VIOLATION)), 0)?;
            a.jne(done)?;
            a.mov(d(vars(var::STRESS_VIOLATION)), 1 << 8 | st::CHECK_AP_DONE)?;
            a.set_label(&mut done)?;
        }
        a.mov(esp, stack_top)?;
        Self::linux_data_segments(a)?;
        a.cld()?;
        a.rdtsc()?;
        a.sub(eax, d(vars(var::STRESS_TSC)))?;
        a.sbb(edx, d(vars(var::STRESS_TSC) + 4))?;
        a.mov(d(rec_word(st::CYCLES_LO)), eax)?;
        a.mov(d(rec_word(st::CYCLES_HI)), edx)?;
        for (word, from) in [
            (st::STEP, var::CUR_STEP),
            (st::LOOPS, var::STRESS_LOOPS),
            (st::HANDLER_RUNS, var::TICKS),
            (st::VIOLATION, var::STRESS_VIOLATION),
            (st::TOTAL, var::INVOKE_TOTAL),
            (st::AP_LOOPS, var::AP_LOOPS),
        ] {
            a.mov(eax, d(vars(from)))?;
            a.mov(d(rec_word(word)), eax)?;
        }
        a.mov(esi, vars(var::INVOKED))?;
        a.mov(edi, rec_word(st::COUNTS))?;
        a.mov(ecx, u(st::COUNT_WORDS))?;
        a.rep().movsd()?;
        self.send(p::tag::STRESS)?;
        self.a.call(self.x.restore)?;
        Ok(())
    }

    /// The timer handler's stress part, entered (with a jump) after the tick was counted when
    /// a stress configuration is active: makes the active configuration's handler calls,
    /// acknowledges the PIC and returns from the interrupt with every register intact.
    pub(super) fn stress_timer(&mut self, entry: &mut CodeLabel) -> R {
        let no_iret = self.no_iret;
        let a = &mut self.a;
        a.set_label(entry)?;
        a.pushad()?;
        a.push(ds)?;
        a.push(es)?;
        a.mov(ax, u32::from(LINUX_USER_DS))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.cld()?;
        let mut done = a.create_label();
        for (n, s) in self.stress.iter().enumerate() {
            let mut next = a.create_label();
            a.cmp(d(vars(var::STRESS_ACTIVE)), u(n) + 1)?;
            a.jne(next)?;
            for c in &s.handler {
                count_invocation(a, *c as u8)?;
                for (reg, v) in inputs(*c) {
                    a.mov(gpr(*reg), *v)?;
                }
                self.sites.call(a, u(n), s, *c, SiteRole::Handler)?;
            }
            a.jmp(done)?;
            a.set_label(&mut next)?;
        }
        a.nop()?;
        a.set_label(&mut done)?;
        a.mov(al, 0x20)?;
        a.out(0x20, al)?;
        a.pop(es)?;
        a.pop(ds)?;
        a.popad()?;
        super::irq_return(a, no_iret)?;
        Ok(())
    }
}

/// Wakes the second CPU on `body` ([`launch_ap`], pausing 1M times after each IPI) and waits
/// for it to report in ([`var::AP_READY`]); jumps to `no_start` if it does not.
pub(super) fn start_ap(
    a: &mut CodeAssembler,
    apic: u32,
    no_start: CodeLabel,
    body: impl FnOnce(&mut CodeAssembler) -> R,
) -> R {
    launch_ap(a, apic, body, |a| {
        let mut idle = a.create_label();
        a.mov(ecx, 1_000_000u32)?;
        a.set_label(&mut idle)?;
        a.pause()?;
        a.dec(ecx)?;
        a.jnz(idle)?;
        Ok(())
    })?;
    wait_nonzero(a, var::AP_READY, no_start)
}

/// Copies the trampoline down, points it at the second CPU's code (`body`, emitted right here)
/// and wakes the second CPU with INIT-SIPI-SIPI (to all but self, through the local APIC at
/// linear `apic`), running `delay` after each IPI.
pub(super) fn launch_ap(
    a: &mut CodeAssembler,
    apic: u32,
    body: impl FnOnce(&mut CodeAssembler) -> R,
    delay: impl Fn(&mut CodeAssembler) -> R,
) -> R {
    for v in [var::AP_READY, var::AP_DONE, var::AP_LOOPS] {
        a.mov(d(vars(v)), 0u32)?;
    }
    a.cld()?;
    a.mov(esi, l::HOST_DATA + super::host_data::AP_TRAMPOLINE)?;
    a.mov(edi, l::AP_TRAMPOLINE)?;
    a.mov(ecx, l::AP_TRAMPOLINE_LEN / 4)?;
    a.rep().movsd()?;
    // `call` over the second CPU's code pushes its (physical) address.
    let mut after = a.create_label();
    a.call(after)?;
    body(a)?;
    a.set_label(&mut after)?;
    a.pop(eax)?;
    a.mov(d(vars(var::AP_ENTRY)), eax)?;
    // Software-enable the local APIC, then INIT, SIPI, SIPI (vector = trampoline page).
    a.or(d(apic + 0xF0), 0x100)?;
    a.mov(d(apic + 0x310), 0u32)?;
    let sipi = 0x000C_4600 | l::AP_TRAMPOLINE >> 12;
    for icr in [0x000C_4500, sipi, sipi] {
        a.mov(d(apic + 0x300), icr)?;
        delay(a)?;
    }
    Ok(())
}

/// Spins (with `pause`, at most [`AP_SPINS`] times) until guest variable `v` is non-zero and
/// falls through; jumps to `timeout` if it stays zero. Uses ECX.
fn wait_nonzero(a: &mut CodeAssembler, v: u32, timeout: CodeLabel) -> R {
    let mut wait = a.create_label();
    let mut set = a.create_label();
    a.mov(ecx, AP_SPINS)?;
    a.set_label(&mut wait)?;
    a.cmp(d(vars(v)), 0)?;
    a.jne(set)?;
    a.pause()?;
    a.dec(ecx)?;
    a.jnz(wait)?;
    a.jmp(timeout)?;
    a.set_label(&mut set)?;
    a.nop()?;
    Ok(())
}

/// The second CPU's code, entered from the trampoline: the kernel descriptor tables and
/// segments, report in, wait for the go, make `ap_loops` iterations of the mix (counted like
/// every invocation), report done, halt for good.
fn ap_loop(a: &mut CodeAssembler, (n, s): (u32, &Stress), sites: &mut Sites) -> R {
    a.lgdt(ptr(l::GDTR_KERNEL))?;
    a.lidt(ptr(l::IDTR_KERNEL))?;
    a.mov(ax, u32::from(LINUX_KERNEL_DS))?;
    a.mov(ss, ax)?;
    a.mov(esp, l::AP_STACK_TOP)?;
    Gen::linux_data_segments(a)?;
    a.cld()?;
    a.mov(d(vars(var::AP_READY)), 1u32)?;
    let mut go = a.create_label();
    a.set_label(&mut go)?;
    a.pause()?;
    a.cmp(d(vars(var::AP_READY)), 2)?;
    a.jne(go)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    for c in &s.ap_mix {
        count_invocation(a, *c as u8)?;
        for (reg, v) in inputs(*c) {
            a.mov(gpr(*reg), *v)?;
        }
        sites.call(a, n, s, *c, SiteRole::SecondCpu)?;
    }
    a.inc(d(vars(var::AP_LOOPS)))?;
    a.cmp(d(vars(var::AP_LOOPS)), s.ap_loops)?;
    a.jb(top)?;
    a.mov(d(vars(var::AP_DONE)), 1u32)?;
    super::halt_forever(a)
}

/// One checked call of the loop: inputs and canaries, count, call (with `call_rom`), then
/// ESP, the kept registers, the result, DF and IF (`if_on`: IF must be set afterwards; else
/// clear).
fn checked_call(
    a: &mut CodeAssembler,
    c: Call,
    item: usize,
    if_on: bool,
    stack_top: u32,
    exit: &mut impl FnMut(&mut CodeAssembler, usize, u32) -> CodeLabel,
    call_rom: &mut impl FnMut(&mut CodeAssembler, Call) -> R,
) -> R {
    let spec = call(c as u32).ok_or_else(|| HarnessError::InvalidConfig {
        reason: format!("{c:?} is not in the call table"),
    })?;
    let ins = inputs(c);
    let value = |r: Reg| {
        ins.iter()
            .find(|(x, _)| *x == r)
            .map_or(canary(r), |(_, v)| *v)
    };
    // The native value to compare with, in STRESS_TEMP.
    let temp = d(vars(var::STRESS_TEMP));
    match c {
        Call::GetCR0 | Call::GetCR2 | Call::GetCR3 | Call::GetCR4 => {
            let cr = match c {
                Call::GetCR0 => cr0,
                Call::GetCR2 => cr2,
                Call::GetCR3 => cr3,
                _ => cr4,
            };
            a.mov(eax, cr)?;
            a.mov(temp, eax)?;
        }
        Call::GetDR => {
            a.mov(eax, dr7)?;
            a.mov(temp, eax)?;
        }
        Call::CPUID => {
            a.xor(eax, eax)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            a.mov(temp, eax)?;
        }
        _ => {}
    }
    count_invocation(a, c as u8)?;
    for r in Reg::ALL {
        a.mov(gpr(r), value(r))?;
    }
    call_rom(a, c)?;
    let bad_esp = exit(a, item, st::CHECK_ESP);
    a.cmp(esp, stack_top)?;
    a.jne(bad_esp)?;
    let clobbered = spec.clobbers();
    for (k, r) in Reg::ALL.into_iter().enumerate() {
        if clobbered.contains(r) {
            continue;
        }
        let bad = exit(a, item, st::CHECK_REG + u(k));
        a.cmp(gpr(r), value(r))?;
        a.jne(bad)?;
    }
    let bad_result = exit(a, item, st::CHECK_RESULT);
    match c {
        Call::GetCR0 | Call::GetCR2 | Call::GetCR3 | Call::GetCR4 | Call::GetDR | Call::CPUID => {
            a.cmp(eax, temp)?;
            a.jne(bad_result)?;
        }
        Call::GetInterruptMask => {
            a.test(eax, IF)?;
            a.jz(bad_result)?;
        }
        Call::RDTSC => {
            // EDX:EAX must not be below the previous reading.
            let mut ok = a.create_label();
            let prev = vars(var::STRESS_TSC_PREV);
            a.cmp(edx, d(prev + 4))?;
            a.ja(ok)?;
            a.jb(bad_result)?;
            a.cmp(eax, d(prev))?;
            a.jb(bad_result)?;
            a.set_label(&mut ok)?;
            a.mov(d(prev), eax)?;
            a.mov(d(prev + 4), edx)?;
        }
        _ => {}
    }
    a.pushfd()?;
    a.pop(ecx)?;
    let bad_df = exit(a, item, st::CHECK_DF);
    a.test(ecx, DF)?;
    a.jnz(bad_df)?;
    a.test(ecx, IF)?;
    if if_on {
        let bad_if = exit(a, item, st::CHECK_IF);
        a.jz(bad_if)?;
    } else {
        a.jnz(bad_result)?;
    }
    Ok(())
}
