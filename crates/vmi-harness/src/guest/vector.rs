//! Call vectors: what the guest's executor does for one ROM call, as data the host prepares.
//!
//! A [`Vector`] names the relocation to reach (its call number: the guest keeps every
//! GetRelocationInfo answer of the run in a table and calls through it), the inputs of the
//! argument registers, the stack words, EFLAGS, and two lists of [`Op`]s: `pre` runs before the
//! call (set up state, take native reference readings), `post` after the registers were
//! captured (read memory the call wrote, undo what `pre` switched on). Everything else is fixed:
//!
//! 1. `STEP` (vector *n*); skip to the end when no ROM is active.
//! 2. Clear the 32 extra words, `call setup`, whose return address is the vector's *resume
//!    point* (saved in [`var::RESUME`](super::layout::var::RESUME)).
//! 3. `setup`: the `pre` ops; ESP = the kernel stack top, Linux's kernel segments; push the
//!    stack words (last first, so word 0 ends at `[esp + 4]` once the call pushed its return
//!    address — or at `[esp]` for [`Invoke::Jump`]); `popfd` the vector's EFLAGS; load the
//!    inputs and a [canary](crate::protocol::canary) into every other GPR; at the call site,
//!    `call` (or `jmp`) the relocation target (or run the native instruction a reference
//!    vector stands for); if control comes back after it, note "returned to the call site"
//!    and go to the resume point. The site's linear address goes into the result.
//! 4. Resume point: save ESP, switch to the capture stack, push every GPR, EFLAGS and the
//!    segment registers, then record CR0/2/3/4, GDTR, IDTR, LDTR, TR, DR0–3/6/7, the call-site
//!    flag and the timer ticks; run the `post` ops; write `VECTOR_RESULT`.
//! 5. Restore the guest: GDTR/IDTR, the GDT and TSS from pristine copies, TR, LDTR = 0,
//!    CR0/CR3/CR4 as after boot, DR0–3 = 0, DR7 = 0x400, the test window's PTEs, PIC masks,
//!    no expected trap, EFLAGS = 0x2.
//!
//! Ops may use EAX, EBX, ECX, EDX, ESI and EDI freely; addresses are what guest code uses
//! (physical for the guest's own data: the identity map stays; window addresses for the test
//! window).

use crate::protocol::vector_result::EXTRA_WORDS;
use vmi_abi::calls::Reg;

/// A 32-bit value the guest loads at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// This value.
    Imm(u32),
    /// The dword at this address when the value is loaded (e.g. an extra word a `pre` op
    /// computed: [`xslot`]).
    Mem(u32),
    /// The vector's resume point (an IRET frame's EIP that returns into the capture).
    Resume,
}

/// How the guest reaches the ROM routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invoke {
    /// `call` (CALL_REL): a 5-byte `call rel32` at the site, like the sites Linux patches, so
    /// the return address is the site + 5 (it reaches the ROM through a `jmp` to the
    /// relocation target).
    Call,
    /// `jmp` (JUMP_REL; only IRET and SYSEXIT): the stack words start at `[esp]`.
    Jump,
    /// No ROM call: a native `iretd` at the site with the stack words as its frame at
    /// `[esp]` — the reference an IRET vector is compared with. Not counted as an invocation.
    NativeIret,
}

/// One guest operation before or after a vector's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `[addr] = value` (32 bits).
    Store {
        /// Address.
        addr: u32,
        /// Value.
        value: Val,
    },
    /// Extra word `slot` = `[addr]`.
    Load {
        /// Address.
        addr: u32,
        /// Extra word.
        slot: u8,
    },
    /// Copy `dwords` dwords from `src` to `dst`.
    Copy {
        /// Source.
        src: u32,
        /// Destination.
        dst: u32,
        /// Length in dwords.
        dwords: u32,
    },
    /// Fill `dwords` dwords at `dst` with `value`.
    Fill {
        /// Destination.
        dst: u32,
        /// Value.
        value: u32,
        /// Length in dwords.
        dwords: u32,
    },
    /// Extra word `slot` = [`hash`] of `dwords` dwords at `addr`.
    Hash {
        /// Address.
        addr: u32,
        /// Length in dwords.
        dwords: u32,
        /// Extra word.
        slot: u8,
    },
    /// `[addr] |= bits`.
    Or {
        /// Address.
        addr: u32,
        /// Bits to set.
        bits: u32,
    },
    /// `[addr] &= mask`.
    And {
        /// Address.
        addr: u32,
        /// Bits to keep.
        mask: u32,
    },
    /// Extra word `slot` = CR`cr` (0, 2, 3, 4).
    ReadCr {
        /// Control register.
        cr: u8,
        /// Extra word.
        slot: u8,
    },
    /// CR`cr` = value.
    WriteCr {
        /// Control register.
        cr: u8,
        /// Value.
        value: Val,
    },
    /// Extra word `slot` = DR`dr` (0–3, 6, 7).
    ReadDr {
        /// Debug register.
        dr: u8,
        /// Extra word.
        slot: u8,
    },
    /// DR`dr` = value.
    WriteDr {
        /// Debug register.
        dr: u8,
        /// Value.
        value: Val,
    },
    /// Extra words `slot`, `slot + 1` = `rdmsr(msr)` (EAX, EDX).
    Rdmsr {
        /// MSR number.
        msr: u32,
        /// First extra word.
        slot: u8,
    },
    /// `wrmsr(msr, hi:lo)`.
    Wrmsr {
        /// MSR number.
        msr: u32,
        /// Low half.
        lo: Val,
        /// High half.
        hi: Val,
    },
    /// Extra words `slot` .. `slot + 4` = native `cpuid(leaf, subleaf)` (EAX, EBX, ECX, EDX).
    Cpuid {
        /// Leaf (EAX).
        leaf: u32,
        /// Subleaf (ECX).
        subleaf: u32,
        /// First extra word.
        slot: u8,
    },
    /// Extra words `slot`, `slot + 1` = native `rdtsc` (EAX, EDX).
    Rdtsc {
        /// First extra word.
        slot: u8,
    },
    /// `invlpg [addr]`.
    Invlpg {
        /// Linear address.
        addr: u32,
    },
    /// `mov cr3, cr3` (flushes non-global TLB entries).
    ReloadCr3,
    /// `lldt selector`.
    Lldt {
        /// Selector.
        selector: u16,
    },
    /// `ltr selector`.
    Ltr {
        /// Selector.
        selector: u16,
    },
    /// `out port, value` (8 bits).
    Out {
        /// Port.
        port: u16,
        /// Byte.
        value: u8,
    },
    /// Extra word `slot` = `in port` (8 bits, zero-extended).
    In {
        /// Port.
        port: u16,
        /// Extra word.
        slot: u8,
    },
    /// Program PIT channel 0 as a rate generator with `divisor` (1.193182 MHz / divisor),
    /// zero the tick counter and unmask IRQ0 (vector 0x20, counted by the guest's timer
    /// handler).
    StartTimer {
        /// PIT divisor.
        divisor: u16,
    },
    /// Mask IRQ0 again.
    StopTimer,
    /// Spin until IRQ0 is pending in the PIC (interrupts must be off), at most `spins` polls.
    WaitIrq0Pending {
        /// Maximum number of polls.
        spins: u32,
    },
    /// `cli`.
    Cli,
    /// `sti`.
    Sti,
    /// Arm an expected trap: the next exception or interrupt writes `TRAP` (not `EXCEPTION`)
    /// and continues at the vector's resume point.
    ArmTrap,
}

/// One call vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vector {
    /// The call number whose GetRelocationInfo answer (EAX) the guest calls or jumps to.
    pub call: u8,
    /// `call` or `jmp`.
    pub invoke: Invoke,
    /// Argument registers; every other GPR gets its canary.
    pub regs: Vec<(Reg, Val)>,
    /// Stack words: word 0 at `[esp + 4]` on entry (`[esp]` for [`Invoke::Jump`]).
    pub stack: Vec<Val>,
    /// EFLAGS loaded right before the call.
    pub eflags: u32,
    /// Ops before the call.
    pub pre: Vec<Op>,
    /// Ops after the capture.
    pub post: Vec<Op>,
}

impl Vector {
    /// A plain `call` of `call` with register inputs and EFLAGS `eflags`, nothing else.
    pub fn call(call: u8, regs: &[(Reg, u32)], eflags: u32) -> Vector {
        Vector {
            call,
            invoke: Invoke::Call,
            regs: regs.iter().map(|(r, v)| (*r, Val::Imm(*v))).collect(),
            stack: Vec::new(),
            eflags,
            pre: Vec::new(),
            post: Vec::new(),
        }
    }

    /// The value the guest loads into `reg` before the call: its input or its canary.
    pub fn input(&self, reg: Reg) -> Val {
        self.regs
            .iter()
            .find(|(r, _)| *r == reg)
            .map_or(Val::Imm(crate::protocol::canary(reg)), |(_, v)| *v)
    }
}

/// Physical address of extra word `slot` of the current vector (for [`Val::Mem`]).
pub const fn xslot(slot: u8) -> u32 {
    super::layout::VARS + super::layout::var::XBUF + 4 * slot as u32
}

/// The hash [`Op::Hash`] computes: `h = rol(h, 5) ^ word` over the dwords, from 0.
pub fn hash(words: impl IntoIterator<Item = u32>) -> u32 {
    words.into_iter().fold(0u32, |h, w| h.rotate_left(5) ^ w)
}

/// Same as [`hash`] over little-endian bytes (a trailing partial dword is ignored).
pub fn hash_bytes(bytes: &[u8]) -> u32 {
    hash(
        bytes
            .chunks_exact(4)
            .map(|c| <[u8; 4]>::try_from(c).map_or(0, u32::from_le_bytes)),
    )
}

/// Whether `slot` names an extra word.
pub const fn slot_ok(slot: u8) -> bool {
    (slot as usize) < EXTRA_WORDS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_rotate_xor() {
        assert_eq!(hash([]), 0);
        assert_eq!(hash([1]), 1);
        assert_eq!(hash([1, 0]), 32);
        assert_eq!(hash_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 9]), 32);
        assert_eq!(
            xslot(3),
            super::super::layout::VARS + super::super::layout::var::XBUF + 12
        );
        let v = Vector::call(17, &[(Reg::Eax, 5)], 2);
        assert_eq!(v.input(Reg::Eax), Val::Imm(5));
        assert_eq!(
            v.input(Reg::Ebx),
            Val::Imm(crate::protocol::canary(Reg::Ebx))
        );
    }
}
