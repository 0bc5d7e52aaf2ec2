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

use crate::protocol::PmTimer;
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
    /// Extra word `slot` = the dword at guest-physical address (extra word `base` & `mask`) +
    /// `offset`: memory a hypervisor interface pointed the guest to (e.g. the pvclock area
    /// whose address [`Op::Rdmsr`] of MSR_KVM_SYSTEM_TIME_NEW returned, `mask` dropping its
    /// enable bit). 0, with nothing read, when the masked address is 0 or the dword does not
    /// lie in the low memory the guest maps identically
    /// ([`LOWMEM_MAPPED`](super::layout::LOWMEM_MAPPED)).
    LoadVia {
        /// The extra word holding the address.
        base: u8,
        /// Bits of it that are the address.
        mask: u32,
        /// Bytes past the address.
        offset: u32,
        /// Extra word.
        slot: u8,
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
    /// Call the ROM routine of `call` (counted like every invocation) with these EAX, EDX, ECX
    /// and the first `stack_words` of `stack` pushed (word 0 at `[esp + 4]` on entry); then
    /// extra words `out`, `out + 1` = EDX:EAX, if given. Interrupts stay as they are.
    Rom {
        /// The call whose relocation target is called.
        call: u8,
        /// EAX.
        eax: Val,
        /// EDX.
        edx: Val,
        /// ECX.
        ecx: Val,
        /// Stack words.
        stack: [Val; 2],
        /// How many of them are pushed (0–2).
        stack_words: u8,
        /// First extra word of the result.
        out: Option<u8>,
    },
    /// 64-bit extra words `dst` = `src` / `by` (low word first; `by` ≠ 0).
    Div64 {
        /// First extra word of the dividend.
        src: u8,
        /// Divisor.
        by: u32,
        /// First extra word of the quotient.
        dst: u8,
    },
    /// 64-bit extra words `dst` = `a` + `b` (low word first).
    Add64 {
        /// First extra word of one addend.
        a: u8,
        /// First extra word of the other.
        b: u8,
        /// First extra word of the sum.
        dst: u8,
    },
    /// Start counting interrupts with the alarm handler (interrupts must be off): zero its
    /// counters, expect `vector`, handle as `mode` says ([`alarm`](super::layout::alarm)
    /// flags). Vector 0x20: IRQ0 requests left pending in the PIC are acknowledged, then IRQ0 is
    /// unmasked. Any other vector: the local APIC is software-enabled (SVR bit 8). The first
    /// CPU's APIC ID is noted.
    AlarmStart {
        /// The expected vector.
        vector: u8,
        /// Mode flags.
        mode: u32,
    },
    /// Stop every timer natively and stop counting: LVTT masked and its initial count 0, PIT
    /// channel 0 switched off (mode 5 without a count, as Linux does) and IRQ0 masked; then,
    /// with interrupts briefly on, whatever is still pending is delivered and acknowledged
    /// without being counted, eight native EOIs clear any in-service bit left, and recording
    /// ends.
    AlarmQuiesce,
    /// A stretch of time measured by the ACPI PM timer, with interrupts on (`sti`) or off: the
    /// guest reads the timer in a loop until the *effective* time reaches `run` ticks or the
    /// total reaches `max` ticks. A step between two readings longer than `period` (the alarm
    /// period being counted) is a stall: the host did not run the vCPU, and of the alarms due
    /// meanwhile one is delivered late and the others are coalesced — so a stall of `g`
    /// ticks costs `g − period` ticks of effective time. Extra words from `slot`: hits at the
    /// expected vector in the window, hits of the reference timer, effective ticks, total
    /// ticks, stalls.
    Window {
        /// The timer.
        pm: PmTimer,
        /// Effective ticks wanted.
        run: u32,
        /// Total ticks at most.
        max: u32,
        /// The alarm period in PM-timer ticks (`u32::MAX`: no alarm, nothing is a stall).
        period: u32,
        /// Interrupts on while it runs.
        sti: bool,
        /// First of the 5 extra words.
        slot: u8,
    },
    /// Start a reference timer the guest programs itself at `rate` Hz, counted by the alarm
    /// handler beside the alarm (start recording first): `pit` — PIT channel 0 as a rate
    /// generator on IRQ0 (1.193182 MHz / `rate`; stale IRQ0 requests acknowledged, IRQ0
    /// unmasked); else the RTC's periodic interrupt on IRQ8 (vector 0x28; `rate` a power of
    /// two, 2–8192 Hz). Whatever makes the host deliver the alarm's interrupts late or
    /// coalesce them does the same to a reference on the same path (the PIC).
    /// [`Op::AlarmQuiesce`] stops it.
    RefTimer {
        /// PIT channel 0 (else the RTC).
        pit: bool,
        /// Interrupts per second.
        rate: u32,
    },
    /// A counter reading paired with the PM timer: 16 tries of (counter, PM timer, counter),
    /// keeping the one whose counter readings are closest. The counter is the TSC (`rdtsc`)
    /// or, with `real`, GetCycleCounter(REAL) through the ROM. Extra words from `slot`: the
    /// counter before (2 words), after (2 words), the PM timer.
    TimePair {
        /// The timer.
        pm: PmTimer,
        /// GetCycleCounter(REAL) instead of the TSC.
        real: bool,
        /// First of the 5 extra words.
        slot: u8,
    },
    /// GetCycleCounter(REAL) `count` times in a row through the ROM (each call counted as an
    /// invocation; interrupts as they are), every reading compared with the one before.
    /// Extra words from `slot`: how many readings were lower than the one before; the first
    /// such pair — the reading before (2 words) and the lower one (2 words); the first
    /// reading (2 words); the last (2 words).
    RealRun {
        /// Calls (at least 2).
        count: u32,
        /// First of the 9 extra words.
        slot: u8,
    },
    /// Extra word `slot` = the PM timer's count.
    ReadPm {
        /// The timer.
        pm: PmTimer,
        /// The extra word.
        slot: u8,
    },
    /// The CMOS real-time clock, read when no update is in progress, twice alike. Extra word
    /// `slot`: seconds, minutes, hours, day of month (a byte each, low first); `slot + 1`:
    /// month, year, century (register 0x32), status register B — as the RTC holds them
    /// (BCD or binary, 12 or 24 hours, as register B says).
    ReadRtc {
        /// First of the 2 extra words.
        slot: u8,
    },
    /// A fixed interrupt of `vector` to this CPU through the local APIC's ICR (destination
    /// shorthand "self"), taken with interrupts briefly on.
    SelfIpi {
        /// The vector.
        vector: u8,
    },
    /// Send a `SAMPLES` record: the TSC at each alarm and reference-timer interrupt of the
    /// last [`Op::Window`].
    SendSamples,
    /// Start the second CPU (INIT-SIPI-SIPI; needs `-smp 2`) on the alarm scenario: it loads
    /// its own copy of the GDT (every Linux CPU has its own), software-enables its local APIC, writes `vector` to its LVTT (through APICWrite with
    /// `via_rom`, else natively), reads GetCycleCounter(REAL) and calls SetAlarm(`flags`,
    /// that count, the period in extra words `period`, `period + 1`), reports it armed and
    /// waits with interrupts on until [`Op::ApAlarmStop`]; then CancelAlarm(`flags`), stops
    /// its timer natively and halts. The first CPU waits (bounded by the PM timer) for it to
    /// come up and to arm. Extra words from `slot`: 1 if it came up, 1 if it armed.
    ApAlarmStart {
        /// SetAlarm's and CancelAlarm's flags.
        flags: u32,
        /// The LVTT vector.
        vector: u8,
        /// Write LVTT with APICWrite (else natively).
        via_rom: bool,
        /// First extra word of the period.
        period: u8,
        /// The timer bounding the waits.
        pm: PmTimer,
        /// First of the 2 extra words.
        slot: u8,
    },
    /// Tell the second CPU of [`Op::ApAlarmStart`] to cancel and finish, and wait for it
    /// (bounded). Extra words from `slot`: 1 if it finished, its CancelAlarm's EAX, how often
    /// it polled while it waited (how much it ran).
    ApAlarmStop {
        /// The timer bounding the wait.
        pm: PmTimer,
        /// First of the 3 extra words.
        slot: u8,
    },
}

impl Op {
    /// The extra words the op writes: (first, how many).
    pub const fn writes(&self) -> Option<(u8, u8)> {
        match *self {
            Op::Load { slot, .. } | Op::Hash { slot, .. } | Op::In { slot, .. } => Some((slot, 1)),
            Op::LoadVia { slot, .. } => Some((slot, 1)),
            Op::RealRun { slot, .. } => Some((slot, 9)),
            Op::ReadPm { slot, .. } => Some((slot, 1)),
            Op::ReadCr { slot, .. } | Op::ReadDr { slot, .. } => Some((slot, 1)),
            Op::Rdmsr { slot, .. } | Op::Rdtsc { slot } => Some((slot, 2)),
            Op::Cpuid { slot, .. } => Some((slot, 4)),
            Op::Rom {
                out: Some(slot), ..
            } => Some((slot, 2)),
            Op::Div64 { dst, .. } | Op::Add64 { dst, .. } => Some((dst, 2)),
            Op::Window { slot, .. } | Op::TimePair { slot, .. } => Some((slot, 5)),
            Op::ReadRtc { slot } | Op::ApAlarmStart { slot, .. } => Some((slot, 2)),
            Op::ApAlarmStop { slot, .. } => Some((slot, 3)),
            _ => None,
        }
    }

    /// The extra words the op reads as 32-bit operands.
    pub fn reads32(&self) -> Vec<u8> {
        match *self {
            Op::LoadVia { base, .. } => vec![base],
            _ => Vec::new(),
        }
    }

    /// The extra words the op reads as 64-bit operands (first word of each).
    pub fn reads64(&self) -> Vec<u8> {
        match *self {
            Op::Div64 { src, .. } => vec![src],
            Op::Add64 { a, b, .. } => vec![a, b],
            Op::ApAlarmStart { period, .. } => vec![period],
            _ => Vec::new(),
        }
    }
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
