//! Deliberately broken variants of the kvm ROM, for the tests that prove the kvmclock checks
//! can fail — built in the tests, so that the production ROM carries no test switch.
//!
//! - [`Unregistered`]: the per-CPU helper (`kvm_cpu`) finds the calling CPU's slots but never
//!   registers its pvclock, steal-time or PV-EOI areas — a ROM that forgot the registration.
//!   With one CPU (the KVM runner's) that includes the boot CPU at Init, whose pvclock then
//!   stays unwritten.
//! - [`scaled_by_1_01`]: GetCycleFrequency answers the pvclock rate × 1.01 — a wrong scale.
//! - [`pv_eoi_unregistered`]: APICWrite first writes MSR_KVM_PV_EOI_EN = 0 (the calling
//!   CPU's PV-EOI word unregistered; the ROM, having marked the CPU registered, does not
//!   register it again) — a ROM that sets the PV-EOI enable bit wrongly.
#![allow(dead_code)]

use iced_x86::code_asm::*;
use vmi_abi::Call;
use vmi_rom::emit::Emit;
use vmi_rom::kvm::{KVMC, Kvm, kv};
use vmi_rom::ram::{Layout, Region};
use vmi_rom::time::{self, al, helper};
use vmi_rom::{Answer, Backend, GenError, Override};

/// The kvm ROM whose per-CPU helper never registers the CPU's areas.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unregistered;

/// The helper without the registration: EDI = the calling CPU's alarm slot (0 when every
/// slot is taken), EBX = its kvmc slot (as the kvm backend computes it); nothing else.
fn cpu_without_registration(e: &mut Emit) -> Result<(), GenError> {
    let time = e.ram_region(&time::TIME)?.offset as i32;
    let alarms = e.ram_region(&time::ALARMS)?.offset as i32;
    let kvmc = e.ram_region(&KVMC)?.offset as i32;
    assert_eq!(
        kv::SIZE,
        2 * al::SIZE,
        "kvmc slots are twice the alarm slots"
    );
    let slot = e.helper(helper::CPU_SLOT)?;
    let mut out = e.a.create_label();
    e.a.call(slot)?;
    e.a.test(edi, edi)?;
    e.a.jz(out)?;
    e.a.lea(ebx, ptr(edi + edi))?;
    e.a.sub(ebx, esi)?;
    e.a.add(ebx, (kvmc - time) - 2 * (alarms - time))?;
    e.a.set_label(&mut out)?;
    e.a.ret()?;
    Ok(())
}

impl Backend for Unregistered {
    fn name(&self) -> String {
        "kvm+unregistered".into()
    }
    fn emit(&self, call: Call, e: &mut Emit) -> Result<Answer, GenError> {
        Kvm.emit(call, e)
    }
    fn note(&self, call: Call) -> &'static str {
        Kvm.note(call)
    }
    fn init32(&self, e: &mut Emit) -> Result<(), GenError> {
        Kvm.init32(e)
    }
    fn init16(&self, a: &mut CodeAssembler) -> Result<(), GenError> {
        Kvm.init16(a)
    }
    fn ram(&self) -> Result<Vec<Region>, GenError> {
        Kvm.ram()
    }
    fn ram_init16(&self, a: &mut CodeAssembler, layout: &Layout) -> Result<(), GenError> {
        Kvm.ram_init16(a, layout)
    }
    fn needs_ram(&self, call: Call) -> bool {
        Kvm.needs_ram(call)
    }
    fn nop_on_hypervisor(&self, call: Call) -> bool {
        Kvm.nop_on_hypervisor(call)
    }
    fn helper_names(&self) -> Vec<&'static str> {
        Kvm.helper_names()
    }
    fn emit_helper(&self, name: &str, e: &mut Emit) -> Result<(), GenError> {
        if name == helper::KVM_CPU {
            cpu_without_registration(e)
        } else {
            Kvm.emit_helper(name, e)
        }
    }
}

/// The kvm ROM whose GetCycleFrequency answers its rate × 1.01: the kvm routine, called, then
/// EAX × 101 / 100 (rates below 4.29 GHz: EDX is 0).
pub fn scaled_by_1_01() -> Override<Kvm> {
    Override {
        base: Kvm,
        call: Call::GetCycleFrequency,
        emit: |e| {
            let mut inner = e.a.create_label();
            e.a.call(inner)?;
            e.a.mov(ecx, 101)?;
            e.a.mul(ecx)?;
            e.a.mov(ecx, 100)?;
            e.a.div(ecx)?;
            e.a.xor(edx, edx)?;
            e.a.ret()?;
            e.a.set_label(&mut inner)?;
            Kvm.emit(Call::GetCycleFrequency, e)
        },
    }
}

/// The kvm ROM whose APICWrite first unregisters the calling CPU's PV-EOI word
/// (MSR_KVM_PV_EOI_EN = 0), then runs the kvm routine (ECX, EAX, EDX kept for it).
pub fn pv_eoi_unregistered() -> Override<Kvm> {
    Override {
        base: Kvm,
        call: Call::APICWrite,
        emit: |e| {
            e.a.push(eax)?;
            e.a.push(ecx)?;
            e.a.push(edx)?;
            e.a.xor(eax, eax)?;
            e.a.xor(edx, edx)?;
            e.a.mov(ecx, 0x4B56_4D04u32)?;
            e.a.wrmsr()?;
            e.a.pop(edx)?;
            e.a.pop(ecx)?;
            e.a.pop(eax)?;
            Kvm.emit(Call::APICWrite, e)
        },
    }
}
