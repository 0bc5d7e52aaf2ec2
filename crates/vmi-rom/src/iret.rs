//! IRET that reports a fault of the return at the call site (vmi-abi.md §4.3).
//!
//! Linux reaches IRET by `call` (CALL_REL) from its `irq_return` site and keeps an
//! exception-table fixup on that site: when the return faults — a bad CS or SS in a frame a
//! user process built with `sigreturn`, say — the fault must look as if the `iret` had run at
//! the site, or no fixup matches and the kernel oopses. This routine checks the frame the way
//! the CPU's IRET does (Intel SDM Vol. 2A, IRET; the same rules QEMU and Bochs implement) and
//! either executes the `iret`, which then cannot fault, or delivers the fault itself: through
//! the gate of the current IDT, with the stack, the error code, CS, EIP (the site, return
//! address − 5) and EFLAGS the CPU would have pushed there, and the gate's IF rule.
//!
//! The rules, in the CPU's order (protected mode, NT = 0, CPL 0):
//!
//! | # | Condition | Fault |
//! |---|---|---|
//! | 1 | return CS null | #GP(0) |
//! | 2 | CS index beyond the GDT/LDT limit, or an LDT selector without an LDT | #GP(CS) |
//! | 3 | CS descriptor not a code segment (data or system) | #GP(CS) |
//! | 4 | CS RPL < CPL | #GP(CS) (cannot happen at CPL 0) |
//! | 5 | conforming CS with DPL > RPL | #GP(CS) |
//! | 6 | non-conforming CS with DPL ≠ RPL | #GP(CS) |
//! | 7 | CS not present | #NP(CS) |
//! | 8 | (RPL > CPL) SS null | #GP(0) |
//! | 9 | SS RPL ≠ CS RPL | #GP(SS) |
//! | 10 | SS index beyond its table's limit, or an LDT selector without an LDT | #GP(SS) |
//! | 11 | SS not a writable data segment | #GP(SS) |
//! | 12 | SS DPL ≠ CS RPL | #GP(SS) |
//! | 13 | SS not present | #NP(SS) (the SDM's exception list, QEMU and Bochs agree) |
//! | 14 | EIP beyond the CS limit | #GP(0) (QEMU does not check; it faults at the target) |
//!
//! Error codes are the selector with its RPL bits cleared. A frame with EFLAGS.VM set returns
//! to virtual-8086 mode, which raises nothing (Bochs' measurements, QEMU: EIP is truncated to
//! 16 bits), so it goes straight to `iret`.
//!
//! Not emulated — the routine executes the `iret` and a fault is reported inside the ROM, as
//! before: a caller at CPL ≠ 0 (every backend runs the kernel at ring 0), a nested-task return
//! (EFLAGS.NT set at the site; Linux never sets it), a fault gate that is not a present 32-bit
//! interrupt or trap gate inside the IDT limit (the CPU would escalate to #DF), and #SS(0) for
//! a frame beyond the kernel's own stack limit (the kernel's stack, not user data).
//!
//! Paths (instructions, from entry to `iret`): a frame returning to the running code segment
//! (Linux's kernel frames) takes 11; every other frame takes the ordered check (about 45 for
//! Linux's user frames). The check addresses memory only through SS (the frame) and CS (the
//! IDT), since DS/ES/FS already hold the target's selectors.

use crate::emit::Emit;
use crate::error::GenError;
use iced_x86::code_asm::*;

/// EFLAGS.TF.
const TF: u32 = 1 << 8;
/// EFLAGS.IF.
const IF: u32 = 1 << 9;
/// EFLAGS.NT.
const NT: u32 = 1 << 14;
/// EFLAGS.RF.
const RF: u32 = 1 << 16;
/// EFLAGS.VM.
const VM: u32 = 1 << 17;

/// LAR result bits (the descriptor's access byte in bits 8–15).
mod ar {
    /// Data: writable.
    pub const WRITABLE: u32 = 1 << 9;
    /// Code: conforming.
    pub const CONFORMING: u32 = 1 << 10;
    /// Code (not data).
    pub const CODE: u32 = 1 << 11;
    /// Code or data (not system).
    pub const S: u32 = 1 << 12;
    /// DPL field shift.
    pub const DPL_SHIFT: u32 = 13;
    /// Present.
    pub const P: u32 = 1 << 15;
    /// The bits a valid non-conforming return CS is judged by: P, DPL, S, code, conforming.
    pub const CS_MASK: u32 = 0xFC00;
    /// The bits a valid return SS is judged by: P, DPL, S, code, writable.
    pub const SS_MASK: u32 = 0xFA00;
    /// `CS_MASK` expectation with DPL 0: present non-conforming code.
    pub const CS_WANT: u32 = P | S | CODE;
    /// `SS_MASK` expectation with DPL 0: present writable data.
    pub const SS_WANT: u32 = P | S | WRITABLE;
}

/// Gate type bits in the high dword of an IDT entry: P, S (0 for gates), 32-bit gate type
/// 111x (x = 1: trap gate).
const GATE_MASK: u32 = 0x9E00;
/// A present 32-bit interrupt or trap gate.
const GATE_32: u32 = 0x8E00;
/// Trap gate (IF kept) rather than interrupt gate.
const GATE_TRAP: u32 = 0x100;

/// #NP.
const NP: i32 = 11;
/// #GP.
const GP: i32 = 13;

/// Length of the `call rel32` Linux patches the site with.
const SITE_CALL_LEN: i32 = 5;

/// Stack offsets in the checking path, after `pushad`: ESP = entry ESP − [`F`].
///
/// | From ESP | Holds |
/// |---|---|
/// | 0 … 31 | `pushad` block (the caller's GPRs) |
/// | 32 … 51 | gap: 5 free words, where the handler's `iret` frame and the error code go |
/// | 52 | the caller's EFLAGS (`pushfd` at entry) |
/// | 56 = F | the return address (site + 5) |
/// | 60 … | the IRET frame: EIP, CS, EFLAGS, ESP, SS |
const F: i32 = 56;
/// The caller's EFLAGS.
const CALLER_EFLAGS: i32 = F - 4;
/// Frame EIP.
const FRAME_EIP: i32 = F + 4;
/// Frame CS.
const FRAME_CS: i32 = F + 8;
/// Frame EFLAGS.
const FRAME_EFLAGS: i32 = F + 12;
/// Frame SS (outer-level returns).
const FRAME_SS: i32 = F + 20;
/// Gap words below the saved EFLAGS.
const GAP: i32 = 20;

/// Where the checks branch to.
struct Labels {
    cs_ok: CodeLabel,
    cs_bad: CodeLabel,
    ss_bad: CodeLabel,
    eip_check: CodeLabel,
    plain: CodeLabel,
    gp0: CodeLabel,
    gp: CodeLabel,
    np: CodeLabel,
}

/// Emits IRET for CALL_REL (see the module documentation).
pub fn emit(e: &mut Emit) -> Result<(), GenError> {
    let a = &mut e.a;
    let mut slow = a.create_label();
    let mut cs_limit_gp0 = a.create_label();
    let mut l = Labels {
        cs_ok: a.create_label(),
        cs_bad: a.create_label(),
        ss_bad: a.create_label(),
        eip_check: a.create_label(),
        plain: a.create_label(),
        gp0: a.create_label(),
        gp: a.create_label(),
        np: a.create_label(),
    };
    // Fast path: a frame back to the running code segment (same selector, same level) can
    // only fault by an EIP beyond that segment's limit.
    a.pushfd()?;
    a.push(eax)?;
    a.mov(eax, cs)?;
    a.cmp(word_ptr(esp + 16), ax)?;
    a.jne(slow)?;
    a.lsl(eax, eax)?;
    a.cmp(eax, dword_ptr(esp + 12))?;
    a.jb(cs_limit_gp0)?;
    a.pop(eax)?;
    a.lea(esp, ptr(esp + 8))?;
    a.iretd()?;

    a.set_label(&mut cs_limit_gp0)?;
    prologue(a)?;
    a.jmp(l.gp0)?;

    a.set_label(&mut slow)?;
    prologue(a)?;
    checks(a, &mut l)?;
    cold_cs(a, &mut l)?;
    cold_ss(a, &mut l)?;
    deliver(a, &mut l)?;
    Ok(())
}

/// From `[esp]` = saved EAX, `[esp+4]` = caller EFLAGS, `[esp+8]` = return address: restore
/// EAX, open the gap and save every GPR (the layout of [`F`]).
fn prologue(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.pop(eax)?;
    a.lea(esp, ptr(esp - GAP))?;
    a.pushad()?;
    Ok(())
}

/// The ordered check of a frame that returns elsewhere. Falls into `plain` (the `iret`) when
/// nothing faults. ECX = the selector under test, ESI = the return CS's RPL, EDX = the
/// access rights a valid return CS has at that RPL.
fn checks(a: &mut CodeAssembler, l: &mut Labels) -> Result<(), GenError> {
    a.mov(eax, cs)?;
    a.test(al, 3)?;
    a.jnz(l.plain)?;
    a.test(dword_ptr(esp + CALLER_EFLAGS), NT)?;
    a.jnz(l.plain)?;
    a.test(dword_ptr(esp + FRAME_EFLAGS), VM)?;
    a.jnz(l.plain)?;
    a.movzx(ecx, word_ptr(esp + FRAME_CS))?;
    a.lar(eax, ecx)?;
    a.jnz(l.cs_bad)?;
    a.mov(esi, ecx)?;
    a.and(esi, 3)?;
    a.imul_3(edx, esi, 1 << ar::DPL_SHIFT)?;
    a.or(edx, ar::CS_WANT as i32)?;
    a.and(eax, ar::CS_MASK as i32)?;
    a.cmp(eax, edx)?;
    a.jne(l.cs_bad)?;
    a.set_label(&mut l.cs_ok)?;
    a.lsl(edi, ecx)?;
    a.test(esi, esi)?;
    a.jz(l.eip_check)?;
    // Outer level: the SS of the frame.
    a.movzx(ecx, word_ptr(esp + FRAME_SS))?;
    a.mov(eax, ecx)?;
    a.and(eax, 3)?;
    a.cmp(eax, esi)?;
    a.jne(l.ss_bad)?;
    a.lar(eax, ecx)?;
    a.jnz(l.ss_bad)?;
    a.xor(edx, (ar::CS_WANT ^ ar::SS_WANT) as i32)?;
    a.and(eax, ar::SS_MASK as i32)?;
    a.cmp(eax, edx)?;
    a.jne(l.ss_bad)?;
    a.set_label(&mut l.eip_check)?;
    a.cmp(edi, dword_ptr(esp + FRAME_EIP))?;
    a.jb(l.gp0)?;
    a.set_label(&mut l.plain)?;
    a.popad()?;
    a.lea(esp, ptr(esp + GAP + 8))?;
    a.iretd()?;
    Ok(())
}

/// EBX = the DPL field of the access rights in EAX.
fn dpl_of(a: &mut CodeAssembler) -> Result<(), GenError> {
    a.mov(ebx, eax)?;
    a.shr(ebx, ar::DPL_SHIFT)?;
    a.and(ebx, 3)?;
    Ok(())
}

/// EDX = the selector in ECX with RPL cleared (the error code); null → #GP(0).
fn error_code(a: &mut CodeAssembler, l: &Labels) -> Result<(), GenError> {
    a.mov(edx, ecx)?;
    a.and(edx, 0xFFFC)?;
    a.jz(l.gp0)?;
    Ok(())
}

/// Rules 1–7 for the CS in ECX, in order. A valid (conforming) CS goes back to `cs_ok`.
fn cold_cs(a: &mut CodeAssembler, l: &mut Labels) -> Result<(), GenError> {
    let mut non_conforming = a.create_label();
    let mut present = a.create_label();
    a.set_label(&mut l.cs_bad)?;
    error_code(a, l)?;
    a.lar(eax, ecx)?;
    a.jnz(l.gp)?;
    a.mov(esi, ecx)?;
    a.and(esi, 3)?;
    a.mov(ebx, eax)?;
    a.and(ebx, (ar::S | ar::CODE) as i32)?;
    a.cmp(ebx, (ar::S | ar::CODE) as i32)?;
    a.jne(l.gp)?;
    dpl_of(a)?;
    a.test(eax, ar::CONFORMING)?;
    a.jz(non_conforming)?;
    a.cmp(ebx, esi)?;
    a.ja(l.gp)?;
    a.jmp(present)?;
    a.set_label(&mut non_conforming)?;
    a.cmp(ebx, esi)?;
    a.jne(l.gp)?;
    a.set_label(&mut present)?;
    a.test(eax, ar::P)?;
    a.jz(l.np)?;
    a.imul_3(edx, esi, 1 << ar::DPL_SHIFT)?;
    a.or(edx, ar::CS_WANT as i32)?;
    a.jmp(l.cs_ok)?;
    Ok(())
}

/// Rules 8–13 for the SS in ECX (ESI = the CS RPL), in order.
fn cold_ss(a: &mut CodeAssembler, l: &mut Labels) -> Result<(), GenError> {
    a.set_label(&mut l.ss_bad)?;
    error_code(a, l)?;
    a.mov(eax, ecx)?;
    a.and(eax, 3)?;
    a.cmp(eax, esi)?;
    a.jne(l.gp)?;
    a.lar(eax, ecx)?;
    a.jnz(l.gp)?;
    a.mov(ebx, eax)?;
    a.and(ebx, (ar::S | ar::CODE | ar::WRITABLE) as i32)?;
    a.cmp(ebx, (ar::S | ar::WRITABLE) as i32)?;
    a.jne(l.gp)?;
    dpl_of(a)?;
    a.cmp(ebx, esi)?;
    a.jne(l.gp)?;
    a.test(eax, ar::P)?;
    a.jz(l.np)?;
    a.jmp(l.eip_check)?;
    Ok(())
}

/// Delivers vector EBX with error code EDX through the current IDT as the CPU would have at
/// the site: the exception frame (EFLAGS, CS, site, error code) goes where the frame's EIP
/// was minus 16 — i.e. pushed at the site's ESP — and a same-level `iret` enters the handler
/// with the gate's EFLAGS (TF, NT, RF, VM cleared; IF too through an interrupt gate).
fn deliver(a: &mut CodeAssembler, l: &mut Labels) -> Result<(), GenError> {
    let mut trap_gate = a.create_label();
    a.set_label(&mut l.gp0)?;
    a.xor(edx, edx)?;
    a.set_label(&mut l.gp)?;
    a.mov(ebx, GP)?;
    let mut go = a.create_label();
    a.jmp(go)?;
    a.set_label(&mut l.np)?;
    a.mov(ebx, NP)?;
    a.set_label(&mut go)?;
    // The gate: inside the IDT limit, a present 32-bit interrupt or trap gate.
    let idtr = F - 24;
    a.sidt(ptr(esp + idtr))?;
    a.movzx(eax, word_ptr(esp + idtr))?;
    a.lea(ecx, ptr(ebx * 8 + 7))?;
    a.cmp(ecx, eax)?;
    a.ja(l.plain)?;
    a.mov(eax, dword_ptr(esp + idtr + 2))?;
    a.mov(ecx, dword_ptr(eax + ebx * 8).cs())?;
    a.mov(eax, dword_ptr(eax + ebx * 8 + 4).cs())?;
    a.mov(esi, eax)?;
    a.and(esi, GATE_MASK as i32)?;
    a.cmp(esi, GATE_32 as i32)?;
    a.jne(l.plain)?;
    // ESI = the handler's EFLAGS.
    a.mov(esi, dword_ptr(esp + CALLER_EFLAGS))?;
    a.and(esi, !(TF | NT | RF | VM) as i32)?;
    a.test(eax, GATE_TRAP)?;
    a.jnz(trap_gate)?;
    a.and(esi, !IF as i32)?;
    a.set_label(&mut trap_gate)?;
    // EAX = handler EIP, ECX = handler CS (RPL = CPL = 0).
    a.movzx(edi, cx)?;
    a.and(eax, 0xFFFF_0000u32 as i32)?;
    a.or(eax, edi)?;
    a.shr(ecx, 16)?;
    a.and(ecx, 0xFFFC)?;
    // The frames, reading each slot before it is overwritten.
    a.mov(edi, dword_ptr(esp + F))?;
    a.sub(edi, SITE_CALL_LEN)?;
    a.mov(ebp, dword_ptr(esp + CALLER_EFLAGS))?;
    a.mov(dword_ptr(esp + F), ebp)?;
    a.xor(ebp, ebp)?;
    a.mov(bp, cs)?;
    a.mov(dword_ptr(esp + F - 4), ebp)?;
    a.mov(dword_ptr(esp + F - 8), edi)?;
    a.mov(dword_ptr(esp + F - 12), edx)?;
    a.mov(dword_ptr(esp + F - 16), esi)?;
    a.mov(dword_ptr(esp + F - 20), ecx)?;
    a.mov(dword_ptr(esp + F - 24), eax)?;
    a.popad()?;
    a.iretd()?;
    Ok(())
}

/// The frames Linux's own returns use, whose [`path`] the benchmark counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxFrame {
    /// Back to kernel code (same CS): the fast path.
    Kernel,
    /// To user space (`__USER_CS`, `__USER_DS`): the ordered check, no fault.
    User,
}

/// The instructions an IRET routine runs for a valid `frame`, from `ip` (the routine's
/// address; `code` starts there) to its `iret`: follows every jump and call; a conditional
/// branch is taken only for a [`LinuxFrame::User`] frame right after the fast path's 16-bit
/// compare of the frame's CS with the running one ("not the running code segment") — every
/// other condition on the way holds for a valid frame, and this module's layout puts each
/// fault (and a trace wrapper's "no trace area") on a taken branch. None if no `iret` is
/// reached within 1000 instructions.
pub fn path(code: &[u8], ip: u64, frame: LinuxFrame) -> Option<Vec<iced_x86::Instruction>> {
    use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Mnemonic};
    let mut at = ip;
    let mut out: Vec<iced_x86::Instruction> = Vec::new();
    while out.len() < 1000 {
        let off = usize::try_from(at.checked_sub(ip)?).ok()?;
        let mut d = Decoder::with_ip(32, code.get(off..)?, at, DecoderOptions::NONE);
        let ins = d.decode();
        if ins.is_invalid() {
            return None;
        }
        let after_cs_compare = out.last().is_some_and(|p| p.code() == Code::Cmp_rm16_r16);
        out.push(ins);
        at = match ins.flow_control() {
            FlowControl::Return if ins.mnemonic() == Mnemonic::Iretd => return Some(out),
            FlowControl::UnconditionalBranch | FlowControl::Call => ins.near_branch_target(),
            FlowControl::ConditionalBranch => {
                if frame == LinuxFrame::User && after_cs_compare {
                    ins.near_branch_target()
                } else {
                    ins.next_ip()
                }
            }
            FlowControl::Next => ins.next_ip(),
            _ => return None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{BuildOptions, generate};
    use crate::native::Native;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    use vmi_abi::Call;

    fn routine() -> Vec<u8> {
        let g = generate(&Native, &BuildOptions::default()).unwrap();
        let c = &g.calls[Call::IRET as usize];
        g.image[c.offset as usize..(c.offset + c.size) as usize].to_vec()
    }

    fn count(p: &[iced_x86::Instruction], m: Mnemonic) -> usize {
        p.iter().filter(|i| i.mnemonic() == m).count()
    }

    #[test]
    fn kernel_frames_take_the_short_path() {
        let p = path(&routine(), 0, LinuxFrame::Kernel).unwrap();
        assert_eq!(p.len(), 11);
        assert_eq!(count(&p, Mnemonic::Lsl), 1);
        assert_eq!(count(&p, Mnemonic::Pushad), 0);
    }

    #[test]
    fn user_frames_check_cs_ss_and_eip_before_the_iret() {
        let p = path(&routine(), 0, LinuxFrame::User).unwrap();
        // CS and SS access rights, the CS limit, every register saved and restored.
        assert_eq!(count(&p, Mnemonic::Lar), 2);
        assert_eq!(count(&p, Mnemonic::Lsl), 1);
        assert_eq!(count(&p, Mnemonic::Pushad), 1);
        assert_eq!(count(&p, Mnemonic::Popad), 1);
        assert!(p.len() < 50, "{}", p.len());
    }

    #[test]
    fn the_fault_path_delivers_through_the_idt() {
        let code = routine();
        let mut d = Decoder::with_ip(32, &code, 0, DecoderOptions::NONE);
        let all: Vec<Mnemonic> = d.iter().map(|i| i.mnemonic()).collect();
        assert_eq!(all.iter().filter(|m| **m == Mnemonic::Sidt).count(), 1);
        // The fast path's, the checked path's, the delivery's.
        assert_eq!(all.iter().filter(|m| **m == Mnemonic::Iretd).count(), 3);
    }
}
