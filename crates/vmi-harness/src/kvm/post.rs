//! The BIOS step on a live vCPU ([`super::bios`] has the data): low memory as a BIOS leaves
//! it, the far call of the ROM's 16-bit init in real mode, and what came of it.

use super::bios::{self, InitStop};
use super::vcpu::{self, Collected, Env};
use super::vmm::{kvm_err, read_u16, write_mem};
use super::{EndReason, Init16, Init16Report, RomPlacement};
use crate::error::HarnessError;
use kvm_ioctls::VcpuFd;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Writes the BIOS's low memory, then — for an image SeaBIOS would run — far-calls its init
/// until it returns, bounded by the run's stop flag (`timeout` is only named in the error).
/// Errors name the init: it faulted, halted, hung, or KVM could not run it.
pub fn run(
    vcpu: &mut VcpuFd,
    env: &mut Env<'_>,
    c: &mut Collected,
    image: &[u8],
    timeout: Duration,
) -> Result<Init16, HarnessError> {
    let memory = env.memory;
    write_mem(
        memory,
        "writing the BIOS's low memory",
        &bios::low_memory()?,
        0,
    )?;
    write_mem(
        memory,
        "writing the EBDA",
        &bios::EBDA_HEADER,
        u64::from(bios::EBDA),
    )?;
    let Some(rom) = env.rom else {
        return Ok(Init16::Skipped {
            reason: "no ROM".into(),
        });
    };
    if let Err(reason) = bios::check_image(image) {
        return Ok(Init16::Skipped { reason });
    }
    let started = Instant::now();
    let segment = (rom.base >> 4) as u16;
    call(vcpu, env, c, segment)
        .and_then(|()| returned(vcpu, memory))
        .map_err(|reason| match reason {
            Stop::Reason(reason) => HarnessError::RomInit { segment, reason },
            Stop::TimedOut => HarnessError::RomInit {
                segment,
                reason: format!(
                    "did not return within {timeout:?} (the run's time limit): it hangs"
                ),
            },
            Stop::Kvm(e) => e,
        })?;
    report(memory, image, rom, c, started)
}

/// Why the init did not return.
enum Stop {
    /// It faulted, halted or stopped in another way (the reason).
    Reason(String),
    /// The run's time limit passed.
    TimedOut,
    /// An ioctl failed.
    Kvm(HarnessError),
}

/// Puts the vCPU at the init in real mode with SeaBIOS's registers and runs it until it
/// stops on a `hlt` (the return stub, a fault stub, or its own).
fn call(vcpu: &mut VcpuFd, env: &mut Env<'_>, c: &mut Collected, segment: u16) -> Result<(), Stop> {
    write_mem(
        env.memory,
        "writing the init's return address",
        &bios::init_stack(),
        u64::from(bios::INIT_STACK_TOP - 4),
    )
    .map_err(Stop::Kvm)?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| Stop::Kvm(kvm_err("KVM_GET_SREGS")(e)))?;
    vcpu.set_sregs(&vcpu::init16_sregs(sregs, segment))
        .map_err(|e| Stop::Kvm(kvm_err("KVM_SET_SREGS")(e)))?;
    vcpu.set_regs(&vcpu::init16_regs())
        .map_err(|e| Stop::Kvm(kvm_err("KVM_SET_REGS")(e)))?;
    c.in_init16 = true;
    let end = vcpu::run_loop(vcpu, env, c);
    c.in_init16 = false;
    match end.map_err(|e| Stop::Reason(e.to_string()))? {
        EndReason::Halted { .. } => Ok(()),
        EndReason::TimedOut => Err(Stop::TimedOut),
        other => Err(Stop::Reason(other.to_string())),
    }
}

/// Ok if the `hlt` the vCPU stopped on is the return stub; otherwise the fault (with the
/// faulting CS:IP from its frame) or the init's own `hlt`.
fn returned(vcpu: &VcpuFd, memory: &GuestMemoryMmap) -> Result<(), Stop> {
    let regs = vcpu
        .get_regs()
        .map_err(|e| Stop::Kvm(kvm_err("KVM_GET_REGS")(e)))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| Stop::Kvm(kvm_err("KVM_GET_SREGS")(e)))?;
    let (cs, ip) = (sregs.cs.selector, regs.rip as u16);
    match bios::init_stop(cs, ip) {
        InitStop::Returned => Ok(()),
        InitStop::Fault { vector } => {
            let frame = sregs.ss.base + (regs.rsp & 0xFFFF);
            let (at_ip, at_cs) = (read_u16(memory, frame), read_u16(memory, frame + 2));
            Err(Stop::Reason(format!(
                "raised {} (vector {vector:#x}) at {at_cs:04X}:{at_ip:04X}",
                bios::vector_name(vector)
            )))
        }
        InitStop::Halted => Err(Stop::Reason(format!(
            "executed hlt at {cs:04X}:{:04X}: nothing can wake it (no interrupt can arrive)",
            ip.wrapping_sub(1)
        ))),
    }
}

/// What the init left: the BDA's base memory, its image, its exits.
fn report(
    memory: &GuestMemoryMmap,
    image: &[u8],
    rom: RomPlacement,
    c: &Collected,
    started: Instant,
) -> Result<Init16, HarnessError> {
    let mut after = vec![0u8; image.len()];
    memory
        .read_slice(&mut after, GuestAddress(u64::from(rom.base)))
        .map_err(|e| HarnessError::GuestMemory {
            what: "reading the ROM back after its init",
            reason: e.to_string(),
        })?;
    Ok(Init16::Ran(Init16Report {
        segment: (rom.base >> 4) as u16,
        base_kib_before: bios::BASE_MEMORY_KIB,
        base_kib_after: read_u16(memory, u64::from(bios::BDA_BASE_MEMORY)),
        size_byte_after: after.get(2).copied().unwrap_or(0),
        image_bytes_changed: after.iter().zip(image).filter(|(a, b)| a != b).count(),
        exits: c.init16_exits.clone(),
        wall: started.elapsed(),
    }))
}
