//! Which machine runs the test guest.
//!
//! | Engine | Name | What runs the guest | Firmware | Paging |
//! |---|---|---|---|---|
//! | [`Engine::Qemu`]`(`[`Accel::Tcg`]`)` | `qemu-tcg` | QEMU binary translation | SeaBIOS (runs the ROM's 16-bit init) | yes |
//! | [`Engine::Qemu`]`(`[`Accel::Kvm`]`)` | `qemu-kvm` | QEMU on hardware virtualization | SeaBIOS | yes |
//! | [`Engine::Kvm`] | `kvm` | the [built-in VMM](crate::kvm) on `/dev/kvm` | no BIOS image: the runner itself far-calls the ROM's 16-bit init in real mode as SeaBIOS does, then maps the ROM read-only ([`run_init16`](crate::kvm::KvmConfig::run_init16), default on; off: nothing runs it) | only where the KVM can page |
//!
//! `qemu-kvm` needs VMX or SVM: on a machine whose `/dev/kvm` is *kvm-pvm* (a software KVM
//! inside a VM, see the project's PLATFORM.md) QEMU's KVM accelerator cannot run a paged
//! 32-bit guest, while the built-in VMM still runs the flat (non-paged) guest there.
//! [`qemu_kvm_available`] and [`Engine::available`] say which engines work here, and why not.

use crate::qemu::{self, Accel};
use std::fmt;
use std::str::FromStr;

/// A machine that runs the test guest against a ROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// QEMU with SeaBIOS loading the ROM through `-option-rom`.
    Qemu(Accel),
    /// The built-in KVM VMM ([`crate::kvm`]): no BIOS image; the ROM's 16-bit init run by the
    /// runner's BIOS step (unless turned off), then the ROM mapped read-only.
    Kvm,
}

impl Default for Engine {
    /// `qemu-tcg`: works everywhere QEMU is installed.
    fn default() -> Self {
        Engine::Qemu(Accel::Tcg)
    }
}

impl Engine {
    /// Every engine, in the order of [`Engine::NAMES`].
    pub const ALL: [Engine; 3] = [
        Engine::Qemu(Accel::Tcg),
        Engine::Qemu(Accel::Kvm),
        Engine::Kvm,
    ];
    /// The names [`FromStr`] accepts (and [`fmt::Display`] prints).
    pub const NAMES: [&'static str; 3] = ["qemu-tcg", "qemu-kvm", "kvm"];

    /// The engine's name: `qemu-tcg`, `qemu-kvm` or `kvm`.
    pub const fn name(self) -> &'static str {
        match self {
            Engine::Qemu(Accel::Tcg) => "qemu-tcg",
            Engine::Qemu(Accel::Kvm) => "qemu-kvm",
            Engine::Kvm => "kvm",
        }
    }

    /// Whether the engine loads the ROM through SeaBIOS (which then also runs its 16-bit init;
    /// the KVM engine runs it itself, see [`crate::kvm::KvmConfig::run_init16`]).
    pub const fn uses_seabios(self) -> bool {
        matches!(self, Engine::Qemu(_))
    }

    /// Ok if the engine can run a guest on this machine; otherwise why not, in plain words.
    pub fn available(self) -> Result<(), String> {
        match self {
            Engine::Qemu(Accel::Tcg) => qemu::find_qemu().map(|_| ()).map_err(|e| e.to_string()),
            Engine::Qemu(Accel::Kvm) => qemu_kvm_available(),
            Engine::Kvm => crate::kvm::available(),
        }
    }

    /// Ok if the engine can run a *paged* 32-bit guest here; otherwise why not.
    ///
    /// For [`Engine::Kvm`] this runs a tiny guest that turns paging on (once per process; the
    /// answer is cached).
    pub fn can_page(self) -> Result<(), String> {
        self.available()?;
        match self {
            Engine::Qemu(_) => Ok(()),
            Engine::Kvm => crate::kvm::paging_supported(),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEngine(pub String);

impl fmt::Display for UnknownEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown engine `{}` (expected one of: {})",
            self.0,
            Engine::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownEngine {}

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownEngine(s.to_string()))
    }
}

/// The CPU flags line of `/proc/cpuinfo` has `vmx` (Intel VT-x) or `svm` (AMD-V).
fn cpu_has_hardware_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

/// Whether `/dev/kvm` is provided by kvm-pvm (software KVM without VMX/SVM).
fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Ok if QEMU's `-accel kvm` can run real 32-bit paged guests here: the CPU has hardware
/// virtualization (`vmx`/`svm` in `/proc/cpuinfo`), `/dev/kvm` is usable, and
/// `qemu-system-i386` is installed. Otherwise says plainly why not — on a machine whose
/// `/dev/kvm` is kvm-pvm: "no VMX/SVM: /dev/kvm is kvm-pvm; qemu-kvm unavailable".
pub fn qemu_kvm_available() -> Result<(), String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpu_has_hardware_virtualization(&cpuinfo) {
        let kvm = match crate::kvm::available() {
            Ok(()) if kvm_is_pvm() => "/dev/kvm is kvm-pvm".to_string(),
            Ok(()) => "/dev/kvm is a software KVM".to_string(),
            Err(why) => why,
        };
        return Err(format!("no VMX/SVM: {kvm}; qemu-kvm unavailable"));
    }
    crate::kvm::available().map_err(|why| format!("{why}; qemu-kvm unavailable"))?;
    qemu::find_qemu()
        .map(|_| ())
        .map_err(|e| format!("{e}; qemu-kvm unavailable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (e, n) in Engine::ALL.into_iter().zip(Engine::NAMES) {
            assert_eq!(e.to_string(), n);
            assert_eq!(n.parse::<Engine>(), Ok(e));
            assert_eq!(n.to_uppercase().parse::<Engine>(), Ok(e));
        }
        let err = "bochs".parse::<Engine>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown engine `bochs` (expected one of: qemu-tcg, qemu-kvm, kvm)"
        );
        assert_eq!(Engine::default(), Engine::Qemu(Accel::Tcg));
        assert!(Engine::Qemu(Accel::Kvm).uses_seabios() && !Engine::Kvm.uses_seabios());
    }

    #[test]
    fn cpu_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme de pse tsc vmx ept\n";
        let amd = "flags\t\t: fpu svm npt\n";
        let none = "flags\t\t: fpu vme hypervisor vmxnet\nmodel name\t: vmx svm\n";
        assert!(cpu_has_hardware_virtualization(intel));
        assert!(cpu_has_hardware_virtualization(amd));
        assert!(!cpu_has_hardware_virtualization(none));
        assert!(!cpu_has_hardware_virtualization(""));
    }
}
