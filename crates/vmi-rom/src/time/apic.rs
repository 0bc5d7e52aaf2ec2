//! The local APIC: finding the kernel's mapping of it, and APICRead/APICWrite (63–64).
//!
//! APICRead(reg) / APICWrite(reg, value) access register `reg & 0xFF0` of the calling CPU's
//! APIC through the kernel's own mapping (found once by [`emit_find`], then kept in private
//! RAM). While a CPU's VMI alarm runs on its LVT timer, a write of the LVTT keeps the timer
//! mode: the kernel chooses the vector and the mask (Linux writes just the vector), the alarm
//! machinery runs the timer; otherwise writes go through unchanged. APICWrite of EOI (0xB0) also gives the alarm machinery its chance to re-arm an alarm
//! the hardware could not hold ([`super::alarm::emit_service`]) — only when some CPU needs it.

use super::{helper, time_ptr, tm};
use crate::emit::Emit;
use crate::error::GenError;
use iced_x86::code_asm::*;

/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE: the APIC is enabled (xAPIC).
const APIC_ENABLE: u32 = 1 << 11;
/// CR4.PAE.
const CR4_PAE: u32 = 1 << 5;
/// CR0.PG.
const CR0_PG: u32 = 1 << 31;
/// PTE/PDE: present.
const P: u32 = 1;
/// PDE: a large page.
const PS: u32 = 1 << 7;
/// The kernel keeps this much of the address space above lowmem for vmalloc: page tables the
/// walk reads through the linear map lie below `4 GiB − PAGE_OFFSET − this`.
const VMALLOC_RESERVE: u32 = 128 << 20;
/// The EOI register.
pub const EOI: i32 = 0xB0;
/// The LVT timer register.
pub const LVTT: i32 = 0x320;
/// LVTT timer-mode bits (17–18): the alarm machinery's, kept across the kernel's writes.
pub const LVT_MODE: u32 = 3 << 17;

/// Helper `apic_find`: ESI = the per-ROM region → EAX = the APIC page's linear address (also
/// stored at [`tm::APIC`]), or 0 when the APIC is disabled, above 4 GiB or not mapped (yet).
/// Keeps every register but EAX; changes the flags.
pub fn emit_find(e: &mut Emit) -> Result<(), GenError> {
    let a = &mut e.a;
    let mut pae = a.create_label();
    let mut found = a.create_label();
    let mut fail = a.create_label();
    let mut out = a.create_label();
    a.push(ebx)?;
    a.push(ecx)?;
    a.push(edx)?;
    a.push(edi)?;
    a.push(ebp)?;
    a.mov(ecx, MSR_APIC_BASE)?;
    a.rdmsr()?;
    a.test(edx, edx)?;
    a.jnz(fail)?;
    a.test(eax, APIC_ENABLE)?;
    a.jz(fail)?;
    a.and(eax, 0xFFFF_F000u32)?;
    a.mov(ebp, eax)?; // EBP = the APIC's physical page
    // Without paging the linear address is the physical one.
    a.mov(edx, cr0)?;
    a.test(edx, CR0_PG)?;
    a.jz(found)?;
    a.mov(ebx, dword_ptr(esi + tm::PAGE_OFFSET))?; // EBX = PAGE_OFFSET
    a.mov(eax, cr4)?;
    a.test(eax, CR4_PAE)?;
    a.jnz(pae)?;
    walk_2level(a, &mut found, fail)?;
    a.set_label(&mut pae)?;
    walk_pae(a, &mut found, fail)?;
    a.set_label(&mut found)?;
    a.mov(dword_ptr(esi + tm::APIC), eax)?;
    a.jmp(out)?;
    a.set_label(&mut fail)?;
    a.xor(eax, eax)?;
    a.set_label(&mut out)?;
    a.pop(ebp)?;
    a.pop(edi)?;
    a.pop(edx)?;
    a.pop(ecx)?;
    a.pop(ebx)?;
    a.ret()?;
    Ok(())
}

/// Jumps to `skip` unless the physical page table in EAX lies in lowmem (EBX = PAGE_OFFSET);
/// EAX becomes its linear address.
fn lowmem(a: &mut CodeAssembler, skip: CodeLabel) -> Result<(), GenError> {
    a.mov(edx, ebx)?;
    a.neg(edx)?;
    a.sub(edx, VMALLOC_RESERVE)?;
    a.cmp(eax, edx)?;
    a.jae(skip)?;
    a.add(eax, ebx)?;
    Ok(())
}

/// 2-level paging: page-directory entries from 1023 down (the fixmap sits at the top), 4 MiB
/// pages and page tables. EBP = the APIC page, EBX = PAGE_OFFSET; on a hit EAX = linear.
fn walk_2level(
    a: &mut CodeAssembler,
    found: &mut CodeLabel,
    fail: CodeLabel,
) -> Result<(), GenError> {
    let mut pde = a.create_label();
    let mut next = a.create_label();
    let mut table = a.create_label();
    let mut pte = a.create_label();
    let mut pte_next = a.create_label();
    let mut hit_pte = a.create_label();
    a.mov(edi, cr3)?;
    a.and(edi, 0xFFFF_F000u32)?;
    a.add(edi, ebx)?; // EDI = the page directory, linear
    a.mov(ecx, 1023)?;
    a.set_label(&mut pde)?;
    a.mov(eax, dword_ptr(edi + ecx * 4))?;
    a.test(eax, P)?;
    a.jz(next)?;
    a.test(eax, PS)?;
    a.jz(table)?;
    a.xor(eax, ebp)?;
    a.test(eax, 0xFFC0_0000u32)?;
    a.jnz(next)?;
    a.mov(eax, ecx)?;
    a.shl(eax, 22)?;
    a.mov(edx, ebp)?;
    a.and(edx, 0x003F_FFFF)?;
    a.or(eax, edx)?;
    a.jmp(*found)?;
    a.set_label(&mut table)?;
    a.and(eax, 0xFFFF_F000u32)?;
    lowmem(a, next)?;
    a.push(edi)?;
    a.mov(edi, eax)?;
    a.mov(edx, 1023)?;
    a.set_label(&mut pte)?;
    a.mov(eax, dword_ptr(edi + edx * 4))?;
    a.and(eax, 0xFFFF_F000u32 | P)?;
    a.dec(eax)?;
    a.cmp(eax, ebp)?;
    a.je(hit_pte)?;
    a.set_label(&mut pte_next)?;
    a.dec(edx)?;
    a.jns(pte)?;
    a.pop(edi)?;
    a.set_label(&mut next)?;
    a.dec(ecx)?;
    a.jns(pde)?;
    a.jmp(fail)?;
    a.set_label(&mut hit_pte)?;
    a.pop(edi)?;
    a.mov(eax, ecx)?;
    a.shl(eax, 22)?;
    a.shl(edx, 12)?;
    a.or(eax, edx)?;
    a.jmp(*found)?;
    Ok(())
}

/// PAE: the four page-directory-pointer entries from the top, then directories of 512 64-bit
/// entries (2 MiB pages or tables), then tables. Entries above 4 GiB are skipped.
fn walk_pae(a: &mut CodeAssembler, found: &mut CodeLabel, fail: CodeLabel) -> Result<(), GenError> {
    let mut pdpte = a.create_label();
    let mut pdpte_next = a.create_label();
    let mut pde = a.create_label();
    let mut pde_next = a.create_label();
    let mut table = a.create_label();
    let mut pte = a.create_label();
    let mut pte_next = a.create_label();
    let mut hit_pte = a.create_label();
    let mut hit_large = a.create_label();
    // Stack while walking: [esp] = directory linear, [esp+4] = PDPT linear, [esp+8] = k.
    a.mov(edi, cr3)?;
    a.and(edi, 0xFFFF_FFE0u32)?;
    a.add(edi, ebx)?;
    a.push(3)?; // k
    a.push(edi)?; // PDPT
    a.push(0)?; // directory
    a.set_label(&mut pdpte)?;
    a.mov(ecx, dword_ptr(esp + 8))?;
    a.mov(edi, dword_ptr(esp + 4))?;
    a.cmp(dword_ptr(edi + ecx * 8 + 4), 0)?;
    a.jne(pdpte_next)?;
    a.mov(eax, dword_ptr(edi + ecx * 8))?;
    a.test(eax, P)?;
    a.jz(pdpte_next)?;
    a.and(eax, 0xFFFF_F000u32)?;
    lowmem(a, pdpte_next)?;
    a.mov(dword_ptr(esp), eax)?;
    a.mov(ecx, 511)?;
    a.set_label(&mut pde)?;
    a.mov(edi, dword_ptr(esp))?;
    // High bits of a PDE: NX (bit 63) may be set; frame bits 32–51 must be clear.
    a.test(dword_ptr(edi + ecx * 8 + 4), 0x000F_FFFF)?;
    a.jnz(pde_next)?;
    a.mov(eax, dword_ptr(edi + ecx * 8))?;
    a.test(eax, P)?;
    a.jz(pde_next)?;
    a.test(eax, PS)?;
    a.jz(table)?;
    a.xor(eax, ebp)?;
    a.test(eax, 0xFFE0_0000u32)?;
    a.jz(hit_large)?;
    a.jmp(pde_next)?;
    a.set_label(&mut table)?;
    a.and(eax, 0xFFFF_F000u32)?;
    lowmem(a, pde_next)?;
    a.mov(edi, eax)?;
    a.mov(edx, 511)?;
    a.set_label(&mut pte)?;
    a.test(dword_ptr(edi + edx * 8 + 4), 0x000F_FFFF)?;
    a.jnz(pte_next)?;
    a.mov(eax, dword_ptr(edi + edx * 8))?;
    a.and(eax, 0xFFFF_F000u32 | P)?;
    a.dec(eax)?;
    a.cmp(eax, ebp)?;
    a.je(hit_pte)?;
    a.set_label(&mut pte_next)?;
    a.dec(edx)?;
    a.jns(pte)?;
    a.set_label(&mut pde_next)?;
    a.dec(ecx)?;
    a.jns(pde)?;
    a.set_label(&mut pdpte_next)?;
    a.dec(dword_ptr(esp + 8))?;
    a.jns(pdpte)?;
    a.lea(esp, ptr(esp + 12))?;
    a.jmp(fail)?;
    // Linear = k << 30 | i << 21 | j << 12 (or the large page's offset).
    a.set_label(&mut hit_large)?;
    a.mov(edx, ebp)?;
    a.and(edx, 0x001F_F000)?;
    a.shr(edx, 12)?;
    a.set_label(&mut hit_pte)?;
    a.mov(eax, dword_ptr(esp + 8))?;
    a.shl(eax, 30)?;
    a.shl(ecx, 21)?;
    a.or(eax, ecx)?;
    a.shl(edx, 12)?;
    a.or(eax, edx)?;
    a.lea(esp, ptr(esp + 12))?;
    a.jmp(*found)?;
    Ok(())
}

/// ESI = the per-ROM region and ECX = the APIC page's linear address (found through the
/// helper on first use), with the caller's ESI pushed; or a jump to `none` (no private RAM, or
/// no APIC mapping) with it pushed too. EAX is kept; EDX and the flags change.
fn apic_base(e: &mut Emit, none: CodeLabel) -> Result<(), GenError> {
    let mut have = e.a.create_label();
    e.a.push(esi)?;
    time_ptr(e, esi, none)?;
    e.a.mov(ecx, dword_ptr(esi + tm::APIC))?;
    e.a.test(ecx, ecx)?;
    e.a.jnz(have)?;
    e.a.push(eax)?;
    let find = e.helper(helper::APIC_FIND)?;
    e.a.call(find)?;
    e.a.mov(ecx, eax)?;
    e.a.pop(eax)?;
    e.a.test(ecx, ecx)?;
    e.a.jz(none)?;
    e.a.set_label(&mut have)?;
    Ok(())
}

/// A write of the LVT timer (EAX = 0x320, ECX = the APIC, EDX = the value, ESI = the
/// per-ROM region): while this CPU's VMI alarm runs on the LVTT, the kernel programs the
/// LVTT's vector and mask and the timer mode stays the alarm's (Linux writes just the vector
/// when it wires the VMI timer there); otherwise — the kernel's own LAPIC timer
/// (`vmi=disable_timer`) — the write goes through as it is. Keeps EAX, ECX, ESI.
fn keep_alarm_mode(e: &mut Emit, slot: &str) -> Result<(), GenError> {
    use super::{al, mode};
    let mut through = e.a.create_label();
    e.a.push(eax)?;
    e.a.push(ecx)?;
    e.a.push(edx)?;
    e.a.push(ebx)?;
    e.a.push(edi)?;
    let find = e.helper(slot)?;
    e.a.call(find)?;
    e.a.xor(eax, eax)?;
    e.a.test(edi, edi)?;
    e.a.jz(through)?;
    e.a.mov(eax, dword_ptr(edi + al::MODE))?;
    e.a.set_label(&mut through)?;
    e.a.pop(edi)?;
    e.a.pop(ebx)?;
    e.a.pop(edx)?;
    e.a.pop(ecx)?;
    // EAX = the CPU's alarm mode: LVTT one-shot, periodic or TSC-deadline keep their bits.
    let mut write = e.a.create_label();
    e.a.cmp(eax, mode::LVTT_ONESHOT)?;
    e.a.jb(write)?;
    e.a.cmp(eax, mode::TSC_DEADLINE)?;
    e.a.ja(write)?;
    e.a.mov(eax, dword_ptr(ecx + LVTT))?;
    e.a.and(eax, LVT_MODE)?;
    e.a.and(edx, !LVT_MODE)?;
    e.a.or(edx, eax)?;
    e.a.set_label(&mut write)?;
    e.a.pop(eax)?;
    Ok(())
}

/// APICRead: EAX = register offset → EAX = its value (class C). 0 without an APIC mapping.
pub fn emit_read(e: &mut Emit) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    apic_base(e, none)?;
    e.a.and(eax, 0xFF0)?;
    e.a.mov(eax, dword_ptr(ecx + eax))?;
    e.a.pop(esi)?;
    e.a.ret()?;
    e.a.set_label(&mut none)?;
    e.a.pop(esi)?;
    e.a.xor(eax, eax)?;
    e.a.ret()?;
    Ok(())
}

/// APICWrite: EAX = register offset, EDX = value (class C). After an EOI, a CPU whose alarms
/// need service gets it ([`super::alarm::after_eoi`]). `slot`: the helper that finds the
/// calling CPU's slot; `pv_eoi`: an EOI first tries the hypervisor's paravirtual EOI (a bit
/// in the CPU's slot that the hypervisor set when it needs no APIC write: clearing it is the
/// EOI, no VM exit), where Init enabled it.
pub fn emit_write(e: &mut Emit, slot: &str, pv_eoi: bool) -> Result<(), GenError> {
    let mut none = e.a.create_label();
    let mut done = e.a.create_label();
    let mut store = e.a.create_label();
    let mut serviced = e.a.create_label();
    e.a.push(edx)?;
    apic_base(e, none)?;
    // Stack: the caller's ESI, then the value.
    e.a.mov(edx, dword_ptr(esp + 4))?;
    e.a.and(eax, 0xFF0)?;
    if pv_eoi {
        let mut not_eoi = e.a.create_label();
        e.a.cmp(eax, EOI)?;
        e.a.jne(not_eoi)?;
        crate::kvm::pv_eoi(e, slot, serviced)?;
        e.a.set_label(&mut not_eoi)?;
    }
    e.a.cmp(eax, LVTT)?;
    e.a.jne(store)?;
    keep_alarm_mode(e, slot)?;
    e.a.set_label(&mut store)?;
    e.a.mov(dword_ptr(ecx + eax), edx)?;
    e.a.cmp(eax, EOI)?;
    e.a.jne(done)?;
    e.a.set_label(&mut serviced)?;
    super::alarm::after_eoi(e, slot)?;
    e.a.set_label(&mut done)?;
    e.a.pop(esi)?;
    e.a.lea(esp, ptr(esp + 4))?;
    e.a.ret()?;
    e.a.set_label(&mut none)?;
    e.a.pop(esi)?;
    e.a.pop(edx)?;
    e.a.ret()?;
    Ok(())
}
