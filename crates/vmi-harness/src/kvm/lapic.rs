//! The in-kernel local APIC's registers as `KVM_GET_LAPIC` hands them over (the 1 KiB
//! register page, each register at its MMIO offset), and what the runner asks of them.

/// Offset of the spurious-interrupt vector register (bit 8: APIC software-enabled).
pub const SVR: usize = 0xF0;
/// Offset of the first ISR word (eight 32-bit words, 16 bytes apart).
pub const ISR: usize = 0x100;
/// Offset of the first IRR word.
pub const IRR: usize = 0x200;
/// Offset of the LVT timer register.
pub const LVTT: usize = 0x320;
/// Offset of the timer's initial count.
pub const TMICT: usize = 0x380;
/// Offset of the timer's current count (KVM computes it at `KVM_GET_LAPIC`).
pub const TMCCT: usize = 0x390;

/// A copy of the local APIC's register page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registers(Vec<u8>);

impl Registers {
    /// The registers of a `KVM_GET_LAPIC` answer.
    #[cfg(target_os = "linux")]
    pub fn from_state(state: &kvm_bindings::kvm_lapic_state) -> Registers {
        Registers(state.regs.iter().map(|b| *b as u8).collect())
    }

    /// The 32-bit register at `offset` (0 outside the page).
    pub fn get(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        if let Some(s) = self.0.get(offset..offset + 4) {
            b.copy_from_slice(s);
        }
        u32::from_le_bytes(b)
    }

    /// Whether bit `vector` of the 256-bit register starting at `base` (ISR, IRR) is set.
    pub fn bit(&self, base: usize, vector: u8) -> bool {
        let v = usize::from(vector);
        self.get(base + (v / 32) * 16) & (1 << (v % 32)) != 0
    }

    /// Whether any interrupt is requested (IRR non-zero).
    pub fn irr_pending(&self) -> bool {
        (0..8).any(|i| self.get(IRR + i * 16) != 0)
    }

    /// Whether the APIC timer will still raise an interrupt: the APIC software-enabled, LVTT
    /// unmasked, and a one-shot count running, a periodic count set, or (TSC-deadline mode)
    /// `tsc_deadline()` non-zero.
    pub fn timer_armed(&self, tsc_deadline: impl FnOnce() -> u64) -> bool {
        let lvtt = self.get(LVTT);
        if self.get(SVR) & (1 << 8) == 0 || lvtt & (1 << 16) != 0 {
            return false;
        }
        match (lvtt >> 17) & 3 {
            0 => self.get(TMCCT) != 0,
            1 => self.get(TMICT) != 0,
            2 => tsc_deadline() != 0,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(writes: &[(usize, u32)]) -> Registers {
        let mut p = vec![0u8; 1024];
        for &(at, v) in writes {
            p[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        Registers(p)
    }

    #[test]
    fn timer_armed_by_mode() {
        let on = (SVR, 0x1FF);
        assert!(page(&[on, (LVTT, 0x20), (TMCCT, 5)]).timer_armed(|| 0));
        assert!(!page(&[on, (LVTT, 0x20), (TMICT, 5)]).timer_armed(|| 0));
        assert!(!page(&[on, (LVTT, 0x1_0020), (TMCCT, 5)]).timer_armed(|| 0));
        assert!(!page(&[(SVR, 0xFF), (LVTT, 0x20), (TMCCT, 5)]).timer_armed(|| 0));
        assert!(page(&[on, (LVTT, 0x2_0020), (TMICT, 5)]).timer_armed(|| 0));
        assert!(page(&[on, (LVTT, 0x4_0020)]).timer_armed(|| 7));
        assert!(!page(&[on, (LVTT, 0x4_0020)]).timer_armed(|| 0));
    }

    #[test]
    fn bits() {
        let r = page(&[(ISR + 0x10, 0b10), (IRR + 0x70, 1 << 31)]);
        assert!(r.bit(ISR, 0x21));
        assert!(!r.bit(ISR, 0x20));
        assert!(r.bit(IRR, 0xFF));
        assert!(r.irr_pending());
        assert!(!page(&[]).irr_pending());
    }
}
