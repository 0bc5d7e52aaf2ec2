//! The table of every VMI 3.0 call (vmi-abi.md §3.5, §4, §5).
//!
//! [`CALLS`] has one [`CallSpec`] per number 0–73, in order (`CALLS[n].number == n`). Numbers
//! above 73 are not VMI calls; a ROM must answer [`RelocType::None`] for them.

use core::fmt;

/// A 32-bit general-purpose register other than ESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reg {
    /// EAX
    Eax,
    /// EBX
    Ebx,
    /// ECX
    Ecx,
    /// EDX
    Edx,
    /// ESI
    Esi,
    /// EDI
    Edi,
    /// EBP
    Ebp,
}

impl Reg {
    /// All seven registers, in encoding-independent display order.
    pub const ALL: [Reg; 7] = [
        Reg::Eax,
        Reg::Ebx,
        Reg::Ecx,
        Reg::Edx,
        Reg::Esi,
        Reg::Edi,
        Reg::Ebp,
    ];

    /// Lower-case assembler name (`"eax"`).
    pub const fn name(self) -> &'static str {
        match self {
            Reg::Eax => "eax",
            Reg::Ebx => "ebx",
            Reg::Ecx => "ecx",
            Reg::Edx => "edx",
            Reg::Esi => "esi",
            Reg::Edi => "edi",
            Reg::Ebp => "ebp",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Reg`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RegSet(u8);

impl RegSet {
    /// The empty set.
    pub const EMPTY: RegSet = RegSet(0);

    /// The set holding exactly `regs`.
    pub const fn of(regs: &[Reg]) -> RegSet {
        let mut bits = 0;
        let mut i = 0;
        while i < regs.len() {
            bits |= regs[i].bit();
            i += 1;
        }
        RegSet(bits)
    }

    /// Whether `reg` is in the set.
    pub const fn contains(self, reg: Reg) -> bool {
        self.0 & reg.bit() != 0
    }

    /// Union of two sets.
    pub const fn union(self, other: RegSet) -> RegSet {
        RegSet(self.0 | other.0)
    }

    /// The registers in the set, in [`Reg::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Reg> {
        Reg::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// Where an argument arrives at the ROM entry point (`-mregparm=3`, caller pops).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// In a register.
    Reg(Reg),
    /// In the 32-bit stack word at `[esp + n]` on entry (`[esp]` is the return address, so n ≥ 4).
    Stack(u8),
    /// The interrupt-return frame of IRET (vmi-abi.md §4.3), not a single word.
    IretFrame,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Reg(r) => write!(f, "{r}"),
            Loc::Stack(n) => write!(f, "[esp+{n}]"),
            Loc::IretFrame => f.write_str("frame at [esp+4]"),
        }
    }
}

/// One input of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Short name (`"pte"`, `"ptep"`, `"flags"`).
    pub name: &'static str,
    /// Where it arrives.
    pub loc: Loc,
}

/// Register discipline a call must keep (vmi-abi.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegClass {
    /// Standard C: may clobber EAX, ECX, EDX and EFLAGS; preserves EBX, ESI, EDI, EBP, ESP and
    /// segment registers; DF = 0 on return.
    C,
    /// Strict: preserves every GPR except the listed outputs; only EFLAGS arithmetic bits change.
    X,
    /// Does not return to the caller.
    N,
}

impl RegClass {
    /// Registers a call of this class may change besides its outputs.
    pub const fn scratch(self) -> RegSet {
        match self {
            RegClass::C => RegSet::of(&[Reg::Eax, Reg::Ecx, Reg::Edx]),
            RegClass::X | RegClass::N => RegSet::EMPTY,
        }
    }

    /// One-letter tag used in vmi-abi.md.
    pub const fn tag(self) -> &'static str {
        match self {
            RegClass::C => "C",
            RegClass::X => "X",
            RegClass::N => "N",
        }
    }
}

/// Relocation type returned by GetRelocationInfo in DL (vmi-abi.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RelocType {
    /// Not implemented: Linux keeps the native operation.
    None = 0,
    /// Reach `eip` with `call`.
    CallRel = 1,
    /// Reach `eip` with `jmp`.
    JumpRel = 2,
    /// The operation needs nothing: Linux deletes it.
    Nop = 3,
}

impl RelocType {
    /// All four types, by value.
    pub const ALL: [RelocType; 4] = [
        RelocType::None,
        RelocType::CallRel,
        RelocType::JumpRel,
        RelocType::Nop,
    ];

    /// The type with this DL value, if it is one of the four.
    pub const fn from_u8(v: u8) -> Option<RelocType> {
        match v {
            0 => Some(RelocType::None),
            1 => Some(RelocType::CallRel),
            2 => Some(RelocType::JumpRel),
            3 => Some(RelocType::Nop),
            _ => None,
        }
    }

    /// Name as in Linux's `VMI_RELOCATION_*` constants, without the prefix.
    pub const fn name(self) -> &'static str {
        match self {
            RelocType::None => "NONE",
            RelocType::CallRel => "CALL_REL",
            RelocType::JumpRel => "JUMP_REL",
            RelocType::Nop => "NOP",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for RelocType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`RelocType`]s: the answers a ROM may give for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelocSet(u8);

impl RelocSet {
    /// The set holding exactly `types`.
    pub const fn of(types: &[RelocType]) -> RelocSet {
        let mut bits = 0;
        let mut i = 0;
        while i < types.len() {
            bits |= types[i].bit();
            i += 1;
        }
        RelocSet(bits)
    }

    /// Whether `t` is in the set.
    pub const fn contains(self, t: RelocType) -> bool {
        self.0 & t.bit() != 0
    }

    /// The members, by value.
    pub fn iter(self) -> impl Iterator<Item = RelocType> {
        RelocType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

/// How the Linux client obtains and uses a call (vmi-abi.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinuxUse {
    /// Linux never asks for it.
    NotUsed,
    /// `para_fill`: the pv op becomes the ROM function itself (NOP ⇒ an empty C function).
    Fill,
    /// `para_fill` and the call sites are patched inline (`call rel32`).
    FillPatched,
    /// Only inline-patched sites (IRET, SYSEXIT).
    Patched,
    /// `para_wrap`: a Linux wrapper calls the ROM (JUMP_REL ⇒ BUG).
    Wrap,
    /// `vmi_get_function`: the pointer enables a feature (JUMP_REL ⇒ BUG, NOP ⇒ feature off).
    GetFunction,
    /// Timer probe: any non-NONE answer switches the VMI timer on.
    TimerProbe,
}

impl LinuxUse {
    /// Short tag (`"fill"`, `"wrap"`, …).
    pub const fn tag(self) -> &'static str {
        match self {
            LinuxUse::NotUsed => "unused",
            LinuxUse::Fill => "fill",
            LinuxUse::FillPatched => "fill+patch",
            LinuxUse::Patched => "patch",
            LinuxUse::Wrap => "wrap",
            LinuxUse::GetFunction => "getf",
            LinuxUse::TimerProbe => "probe",
        }
    }
}

/// One VMI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallSpec {
    /// Call number (the index Linux passes to GetRelocationInfo).
    pub number: u8,
    /// Name as in Linux's `VMI_CALL_*` constants, without the prefix.
    pub name: &'static str,
    /// Inputs, in argument order.
    pub args: &'static [Arg],
    /// Output registers (EDX:EAX for 64-bit results).
    pub outputs: &'static [Reg],
    /// Register discipline.
    pub class: RegClass,
    /// Relocation answers the Linux client tolerates for this call.
    pub allowed: RelocSet,
    /// Calls that must also be CALL_REL when this one is not NONE (66 ⇒ 67–70).
    pub requires: &'static [u8],
    /// How Linux uses it.
    pub linux: LinuxUse,
    /// Which Linux versions use it, and how.
    pub linux_note: &'static str,
    /// What the call does (its native equivalent).
    pub semantics: &'static str,
    /// False where no source settled the calling convention (42, 43, 49–60, 72).
    pub confirmed: bool,
}

impl CallSpec {
    /// Registers the call may change: its outputs plus its class's scratch registers.
    pub fn clobbers(&self) -> RegSet {
        self.class.scratch().union(RegSet::of(self.outputs))
    }

    /// Whether Linux ever asks GetRelocationInfo for this call.
    pub const fn used_by_linux(&self) -> bool {
        !matches!(self.linux, LinuxUse::NotUsed)
    }

    /// Whether a ROM must implement it (NONE is not acceptable to Linux).
    pub const fn mandatory(&self) -> bool {
        !self.allowed.contains(RelocType::None)
    }

    /// Number of 32-bit stack words the caller pushes (and pops) for this call.
    pub fn stack_words(&self) -> usize {
        self.args
            .iter()
            .filter(|a| matches!(a.loc, Loc::Stack(_)))
            .count()
    }
}

/// The call with number `n`, if `n` is a VMI 3.0 call number (0–73).
pub fn call(n: u32) -> Option<&'static CallSpec> {
    let spec = CALLS.get(usize::try_from(n).ok()?)?;
    debug_assert_eq!(u32::from(spec.number), n);
    Some(spec)
}

/// The call named `name` (case-insensitive), e.g. `"SetCR3"`.
pub fn call_by_name(name: &str) -> Option<&'static CallSpec> {
    CALLS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// Every VMI 3.0 call by name, with its number as the discriminant. [`Call::spec`] gives the
/// table row; a test checks that names and numbers agree with [`CALLS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(clippy::upper_case_acronyms)]
pub enum Call {
    /// CPUID (0).
    CPUID = 0,
    /// WRMSR (1).
    WRMSR = 1,
    /// RDMSR (2).
    RDMSR = 2,
    /// SetGDT (3).
    SetGDT = 3,
    /// SetLDT (4).
    SetLDT = 4,
    /// SetIDT (5).
    SetIDT = 5,
    /// SetTR (6).
    SetTR = 6,
    /// GetGDT (7).
    GetGDT = 7,
    /// GetLDT (8).
    GetLDT = 8,
    /// GetIDT (9).
    GetIDT = 9,
    /// GetTR (10).
    GetTR = 10,
    /// WriteGDTEntry (11).
    WriteGDTEntry = 11,
    /// WriteLDTEntry (12).
    WriteLDTEntry = 12,
    /// WriteIDTEntry (13).
    WriteIDTEntry = 13,
    /// UpdateKernelStack (14).
    UpdateKernelStack = 14,
    /// SetCR0 (15).
    SetCR0 = 15,
    /// SetCR2 (16).
    SetCR2 = 16,
    /// SetCR3 (17).
    SetCR3 = 17,
    /// SetCR4 (18).
    SetCR4 = 18,
    /// GetCR0 (19).
    GetCR0 = 19,
    /// GetCR2 (20).
    GetCR2 = 20,
    /// GetCR3 (21).
    GetCR3 = 21,
    /// GetCR4 (22).
    GetCR4 = 22,
    /// WBINVD (23).
    WBINVD = 23,
    /// SetDR (24).
    SetDR = 24,
    /// GetDR (25).
    GetDR = 25,
    /// RDPMC (26).
    RDPMC = 26,
    /// RDTSC (27).
    RDTSC = 27,
    /// CLTS (28).
    CLTS = 28,
    /// EnableInterrupts (29).
    EnableInterrupts = 29,
    /// DisableInterrupts (30).
    DisableInterrupts = 30,
    /// GetInterruptMask (31).
    GetInterruptMask = 31,
    /// SetInterruptMask (32).
    SetInterruptMask = 32,
    /// IRET (33).
    IRET = 33,
    /// SYSEXIT (34).
    SYSEXIT = 34,
    /// Halt (35).
    Halt = 35,
    /// Reboot (36).
    Reboot = 36,
    /// Shutdown (37).
    Shutdown = 37,
    /// SetPxE (38).
    SetPxE = 38,
    /// SetPxELong (39).
    SetPxELong = 39,
    /// UpdatePxE (40).
    UpdatePxE = 40,
    /// UpdatePxELong (41).
    UpdatePxELong = 41,
    /// MachineToPhysical (42).
    MachineToPhysical = 42,
    /// PhysicalToMachine (43).
    PhysicalToMachine = 43,
    /// AllocatePage (44).
    AllocatePage = 44,
    /// ReleasePage (45).
    ReleasePage = 45,
    /// InvalPage (46).
    InvalPage = 46,
    /// FlushTLB (47).
    FlushTLB = 47,
    /// SetLinearMapping (48).
    SetLinearMapping = 48,
    /// INL (49).
    INL = 49,
    /// INB (50).
    INB = 50,
    /// INW (51).
    INW = 51,
    /// INSL (52).
    INSL = 52,
    /// INSB (53).
    INSB = 53,
    /// INSW (54).
    INSW = 54,
    /// OUTL (55).
    OUTL = 55,
    /// OUTB (56).
    OUTB = 56,
    /// OUTW (57).
    OUTW = 57,
    /// OUTSL (58).
    OUTSL = 58,
    /// OUTSB (59).
    OUTSB = 59,
    /// OUTSW (60).
    OUTSW = 60,
    /// SetIOPLMask (61).
    SetIOPLMask = 61,
    /// SetInitialAPState (62).
    SetInitialAPState = 62,
    /// APICWrite (63).
    APICWrite = 63,
    /// APICRead (64).
    APICRead = 64,
    /// IODelay (65).
    IODelay = 65,
    /// GetCycleFrequency (66).
    GetCycleFrequency = 66,
    /// GetCycleCounter (67).
    GetCycleCounter = 67,
    /// SetAlarm (68).
    SetAlarm = 68,
    /// CancelAlarm (69).
    CancelAlarm = 69,
    /// GetWallclockTime (70).
    GetWallclockTime = 70,
    /// WallclockUpdated (71).
    WallclockUpdated = 71,
    /// SetCallbacks (72).
    SetCallbacks = 72,
    /// SetLazyMode (73).
    SetLazyMode = 73,
}

impl Call {
    /// The table row of this call.
    pub fn spec(self) -> &'static CallSpec {
        // The discriminants are 0..NUM_CALLS, so the index is always in range.
        &CALLS[self as usize]
    }

    /// The call with number `n`.
    pub fn from_number(n: u32) -> Option<Call> {
        CALL_IDS.get(usize::try_from(n).ok()?).copied()
    }
}

/// Every [`Call`], by number.
pub const CALL_IDS: [Call; NUM_CALLS] = [
    Call::CPUID,
    Call::WRMSR,
    Call::RDMSR,
    Call::SetGDT,
    Call::SetLDT,
    Call::SetIDT,
    Call::SetTR,
    Call::GetGDT,
    Call::GetLDT,
    Call::GetIDT,
    Call::GetTR,
    Call::WriteGDTEntry,
    Call::WriteLDTEntry,
    Call::WriteIDTEntry,
    Call::UpdateKernelStack,
    Call::SetCR0,
    Call::SetCR2,
    Call::SetCR3,
    Call::SetCR4,
    Call::GetCR0,
    Call::GetCR2,
    Call::GetCR3,
    Call::GetCR4,
    Call::WBINVD,
    Call::SetDR,
    Call::GetDR,
    Call::RDPMC,
    Call::RDTSC,
    Call::CLTS,
    Call::EnableInterrupts,
    Call::DisableInterrupts,
    Call::GetInterruptMask,
    Call::SetInterruptMask,
    Call::IRET,
    Call::SYSEXIT,
    Call::Halt,
    Call::Reboot,
    Call::Shutdown,
    Call::SetPxE,
    Call::SetPxELong,
    Call::UpdatePxE,
    Call::UpdatePxELong,
    Call::MachineToPhysical,
    Call::PhysicalToMachine,
    Call::AllocatePage,
    Call::ReleasePage,
    Call::InvalPage,
    Call::FlushTLB,
    Call::SetLinearMapping,
    Call::INL,
    Call::INB,
    Call::INW,
    Call::INSL,
    Call::INSB,
    Call::INSW,
    Call::OUTL,
    Call::OUTB,
    Call::OUTW,
    Call::OUTSL,
    Call::OUTSB,
    Call::OUTSW,
    Call::SetIOPLMask,
    Call::SetInitialAPState,
    Call::APICWrite,
    Call::APICRead,
    Call::IODelay,
    Call::GetCycleFrequency,
    Call::GetCycleCounter,
    Call::SetAlarm,
    Call::CancelAlarm,
    Call::GetWallclockTime,
    Call::WallclockUpdated,
    Call::SetCallbacks,
    Call::SetLazyMode,
];

/// Number of VMI 3.0 call numbers (0–73).
pub const NUM_CALLS: usize = 74;

use Loc::{Reg as R, Stack as S};
use Reg::{Eax, Ebx, Ecx, Edi, Edx, Esi};
use RelocType::{CallRel, JumpRel, Nop};

const fn a(name: &'static str, loc: Loc) -> Arg {
    Arg { name, loc }
}

/// Hints and notifications: an implementation, none, or NOP (the operation may need nothing).
const HINT: RelocSet = RelocSet::of(&[RelocType::None, CallRel, Nop]);
/// A real implementation or none (value-returning or state-reading calls: never NOP).
const CALL_OR_NONE: RelocSet = RelocSet::of(&[RelocType::None, CallRel]);
/// Mandatory: the Linux patch writes a `call` unconditionally.
const CALL_ONLY: RelocSet = RelocSet::of(&[CallRel]);
/// Mandatory: IRET / SYSEXIT may be reached by call or jump.
const CALL_OR_JUMP: RelocSet = RelocSet::of(&[CallRel, JumpRel]);
/// Unknown semantics: a ROM should answer NONE (Linux never asks).
const NONE_ONLY: RelocSet = RelocSet::of(&[RelocType::None]);

const EDX_EAX: &[Reg] = &[Eax, Edx];

#[allow(clippy::too_many_arguments)]
const fn spec(
    number: u8,
    name: &'static str,
    args: &'static [Arg],
    outputs: &'static [Reg],
    class: RegClass,
    allowed: RelocSet,
    linux: LinuxUse,
    linux_note: &'static str,
    semantics: &'static str,
) -> CallSpec {
    CallSpec {
        number,
        name,
        args,
        outputs,
        class,
        allowed,
        requires: &[],
        linux,
        linux_note,
        semantics,
        confirmed: true,
    }
}

const fn unconfirmed(mut s: CallSpec) -> CallSpec {
    s.confirmed = false;
    s
}

const fn port_io(
    number: u8,
    name: &'static str,
    args: &'static [Arg],
    out: &'static [Reg],
) -> CallSpec {
    unconfirmed(spec(
        number,
        name,
        args,
        out,
        RegClass::C,
        CALL_OR_NONE,
        LinuxUse::NotUsed,
        "not defined in Linux headers, never requested",
        "port I/O (Doc v2 conventions, UNCONFIRMED)",
    ))
}

use LinuxUse::{Fill, FillPatched, GetFunction, NotUsed, Patched, TimerProbe, Wrap};
use RegClass::{C, N, X};

const PORT_IN: &[Arg] = &[a("port", R(Edx))];
const PORT_INS: &[Arg] = &[a("port", R(Edx)), a("dest", R(Edi)), a("count", R(Ecx))];
const PORT_OUT: &[Arg] = &[a("port", R(Edx)), a("value", R(Eax))];
const PORT_OUTS: &[Arg] = &[a("port", R(Edx)), a("src", R(Esi)), a("count", R(Ecx))];
const DESC_WRITE: &[Arg] = &[
    a("table", R(Eax)),
    a("index", R(Edx)),
    a("low", R(Ecx)),
    a("high", S(4)),
];
const ONE_EAX: &[Arg] = &[a("value", R(Eax))];
const PTR_EAX: &[Arg] = &[a("pseudo_desc", R(Eax))];

/// Every VMI 3.0 call, indexed by number (vmi-abi.md §4.2 and §5).
pub static CALLS: [CallSpec; NUM_CALLS] = [
    spec(
        0,
        "CPUID",
        &[a("leaf", R(Eax)), a("subleaf", R(Ecx))],
        &[Eax, Ebx, Ecx, Edx],
        X,
        CALL_OR_NONE,
        Wrap,
        "wrap -> vmi_cpuid, called from inline asm with the target in any free register (all versions)",
        "cpuid; preserves ESI, EDI, EBP",
    ),
    spec(
        1,
        "WRMSR",
        &[a("lo", R(Eax)), a("hi", R(Edx)), a("msr", R(Ecx))],
        &[],
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested (MSR writes stay native)",
        "wrmsr",
    ),
    spec(
        2,
        "RDMSR",
        &[a("msr", R(Ecx))],
        EDX_EAX,
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested (MSR reads stay native)",
        "rdmsr",
    ),
    spec(
        3,
        "SetGDT",
        PTR_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill load_gdt",
        "lgdt [eax]",
    ),
    spec(
        4,
        "SetLDT",
        &[a("selector", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        Wrap,
        "wrap set_ldt: 0x88 after writing GDT entry 17, or 0 when the LDT is empty",
        "lldt ax",
    ),
    spec(
        5,
        "SetIDT",
        PTR_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill load_idt",
        "lidt [eax]",
    ),
    spec(
        6,
        "SetTR",
        &[a("selector", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        Wrap,
        "wrap load_tr_desc (always 0x80)",
        "ltr ax",
    ),
    spec(
        7,
        "GetGDT",
        PTR_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill store_gdt",
        "sgdt [eax] (writes the 6-byte buffer)",
    ),
    spec(
        8,
        "GetLDT",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested",
        "sldt ax",
    ),
    spec(
        9,
        "GetIDT",
        PTR_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill store_idt",
        "sidt [eax] (writes the 6-byte buffer)",
    ),
    spec(
        10,
        "GetTR",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill store_tr",
        "str ax (zero-extended)",
    ),
    spec(
        11,
        "WriteGDTEntry",
        DESC_WRITE,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill (21/22), wrap (24+) write_gdt_entry; TLS entries 6-8; LDT descriptor",
        "store the 8-byte descriptor at table + 8*index",
    ),
    spec(
        12,
        "WriteLDTEntry",
        DESC_WRITE,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill (21/22), wrap (24+) write_ldt_entry; 24/25-era bugs pass a descriptor pointer in ECX",
        "store the 8-byte descriptor at table + 8*index",
    ),
    spec(
        13,
        "WriteIDTEntry",
        DESC_WRITE,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill (21/22), wrap (24+) write_idt_entry",
        "store the 8-byte gate at table + 8*index",
    ),
    spec(
        14,
        "UpdateKernelStack",
        &[a("ss0", R(Eax)), a("esp0", R(Edx))],
        &[],
        C,
        HINT,
        Wrap,
        "wrap load_esp0 / load_sp0 (Linux already stored esp0 in the TSS)",
        "notify the new TSS.esp0",
    ),
    spec(
        15,
        "SetCR0",
        ONE_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill write_cr0",
        "mov cr0, eax",
    ),
    spec(
        16,
        "SetCR2",
        ONE_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill write_cr2",
        "mov cr2, eax",
    ),
    spec(
        17,
        "SetCR3",
        ONE_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill write_cr3",
        "mov cr3, eax (flushes non-global TLB entries)",
    ),
    spec(
        18,
        "SetCR4",
        ONE_EAX,
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill write_cr4",
        "mov cr4, eax",
    ),
    spec(
        19,
        "GetCR0",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill read_cr0",
        "mov eax, cr0",
    ),
    spec(
        20,
        "GetCR2",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill read_cr2",
        "mov eax, cr2",
    ),
    spec(
        21,
        "GetCR3",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill read_cr3",
        "mov eax, cr3",
    ),
    spec(
        22,
        "GetCR4",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill read_cr4",
        "mov eax, cr4",
    ),
    spec(
        23,
        "WBINVD",
        &[],
        &[],
        C,
        HINT,
        Fill,
        "fill wbinvd",
        "wbinvd",
    ),
    spec(
        24,
        "SetDR",
        &[a("regno", R(Eax)), a("value", R(Edx))],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill set_debugreg",
        "mov drN, edx",
    ),
    spec(
        25,
        "GetDR",
        &[a("regno", R(Eax))],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill get_debugreg",
        "mov eax, drN",
    ),
    spec(
        26,
        "RDPMC",
        &[a("counter", R(Ecx))],
        EDX_EAX,
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested",
        "rdpmc",
    ),
    spec(
        27,
        "RDTSC",
        &[],
        EDX_EAX,
        C,
        CALL_OR_NONE,
        Fill,
        "fill read_tsc",
        "rdtsc",
    ),
    spec(
        28,
        "CLTS",
        &[],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill clts",
        "clts",
    ),
    spec(
        29,
        "EnableInterrupts",
        &[],
        &[],
        X,
        CALL_ONLY,
        FillPatched,
        "fill + inline patch irq_enable (C sites and entry.S, some CLBR_NONE)",
        "sti; pending interrupts delivered before returning",
    ),
    spec(
        30,
        "DisableInterrupts",
        &[],
        &[],
        X,
        CALL_ONLY,
        FillPatched,
        "fill + inline patch irq_disable; 2.6.21 calls it right after GetInterruptMask (EAX live)",
        "cli",
    ),
    spec(
        31,
        "GetInterruptMask",
        &[],
        &[Eax],
        X,
        CALL_ONLY,
        FillPatched,
        "fill + inline patch save_fl",
        "pushf; pop eax (only bit 9, IF, is meaningful)",
    ),
    spec(
        32,
        "SetInterruptMask",
        &[a("mask", R(Eax))],
        &[],
        X,
        CALL_ONLY,
        FillPatched,
        "fill + inline patch restore_fl; also ends activation with 0 or 0x200",
        "IF := bit 9 of EAX; pending interrupts delivered when enabling",
    ),
    spec(
        33,
        "IRET",
        &[a("frame", Loc::IretFrame)],
        &[],
        N,
        CALL_OR_JUMP,
        Patched,
        "inline patch of every INTERRUPT_RETURN site (pv pointer poisoned to 0xBADBAB0)",
        "iret from the frame; faults reported at the call site",
    ),
    spec(
        34,
        "SYSEXIT",
        &[a("user_eip", R(Edx)), a("user_esp", R(Ecx))],
        &[],
        N,
        CALL_OR_JUMP,
        Patched,
        "inline patch of irq_enable_sysexit / irq_enable_syscall_ret (pointer poisoned to 0xFEEDBAB0)",
        "sti; sysexit to CS 0x73 / SS 0x7B",
    ),
    spec(
        35,
        "Halt",
        &[],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill safe_halt (21: wrap with NO_IDLE_HZ); Linux's halt() maps here too",
        "sti; hlt atomically; returns after the wake-up interrupt was delivered, IF = 1",
    ),
    spec(
        36,
        "Reboot",
        &[a("how", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested",
        "reset the machine",
    ),
    spec(
        37,
        "Shutdown",
        &[],
        &[],
        C,
        CALL_OR_NONE,
        NotUsed,
        "never requested",
        "halt this CPU with IF = 0",
    ),
    spec(
        38,
        "SetPxE",
        &[a("pte", R(Eax)), a("ptep", R(Edx)), a("flags", R(Ecx))],
        &[],
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: set_pte/set_pte_at/set_pmd (non-PAE kernels)",
        "*ptep = pte; notify",
    ),
    spec(
        39,
        "SetPxELong",
        &[
            a("pte_lo", R(Eax)),
            a("pte_hi", R(Edx)),
            a("ptep", R(Ecx)),
            a("flags", S(4)),
        ],
        &[],
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: set_pte/set_pmd/set_pud/pte_clear (PAE kernels)",
        "64-bit *ptep = pte without exposing a torn entry; notify",
    ),
    spec(
        40,
        "UpdatePxE",
        &[a("ptep", R(Eax)), a("flags", R(Edx))],
        &[],
        C,
        HINT,
        GetFunction,
        "getf: pte_update / pte_update_defer (non-PAE)",
        "entry already written by the guest; resync",
    ),
    spec(
        41,
        "UpdatePxELong",
        &[a("ptep", R(Eax)), a("flags", R(Edx))],
        &[],
        C,
        HINT,
        GetFunction,
        "getf: pte_update / set_pte_atomic (PAE)",
        "entry already written by the guest; resync",
    ),
    unconfirmed(spec(
        42,
        "MachineToPhysical",
        &[],
        &[],
        C,
        NONE_ONLY,
        NotUsed,
        "not used",
        "UNCONFIRMED",
    )),
    unconfirmed(spec(
        43,
        "PhysicalToMachine",
        &[],
        &[],
        C,
        NONE_ONLY,
        NotUsed,
        "not used",
        "UNCONFIRMED",
    )),
    spec(
        44,
        "AllocatePage",
        &[
            a("pfn", R(Eax)),
            a("flags", R(Edx)),
            a("clone_pfn", R(Ecx)),
            a("start", S(4)),
            a("count", S(8)),
        ],
        &[],
        C,
        HINT,
        GetFunction,
        "getf: alloc_pt/alloc_pd/alloc_pd_clone",
        "announce a page-table page",
    ),
    spec(
        45,
        "ReleasePage",
        &[a("pfn", R(Eax)), a("flags", R(Edx))],
        &[],
        C,
        HINT,
        GetFunction,
        "getf: release_pt/release_pd (33+: also pgd_free)",
        "page is no longer a page table",
    ),
    spec(
        46,
        "InvalPage",
        &[a("va", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill flush_tlb_single",
        "invlpg [eax]",
    ),
    spec(
        47,
        "FlushTLB",
        &[a("flags", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        Wrap,
        "wrap flush_tlb_user (1) / flush_tlb_kernel (3)",
        "1: reload CR3; 3: also global entries",
    ),
    spec(
        48,
        "SetLinearMapping",
        &[
            a("slot", R(Eax)),
            a("va", R(Edx)),
            a("pages", R(Ecx)),
            a("pfn", S(4)),
        ],
        &[],
        C,
        HINT,
        GetFunction,
        "getf: vmi_bringup (slot 0 = lowmem), kmap of PTE pages (slots 1/2, 21-32)",
        "register a va -> pa range",
    ),
    port_io(49, "INL", PORT_IN, &[Eax]),
    port_io(50, "INB", PORT_IN, &[Eax]),
    port_io(51, "INW", PORT_IN, &[Eax]),
    port_io(52, "INSL", PORT_INS, &[]),
    port_io(53, "INSB", PORT_INS, &[]),
    port_io(54, "INSW", PORT_INS, &[]),
    port_io(55, "OUTL", PORT_OUT, &[]),
    port_io(56, "OUTB", PORT_OUT, &[]),
    port_io(57, "OUTW", PORT_OUT, &[]),
    port_io(58, "OUTSL", PORT_OUTS, &[]),
    port_io(59, "OUTSB", PORT_OUTS, &[]),
    port_io(60, "OUTSW", PORT_OUTS, &[]),
    spec(
        61,
        "SetIOPLMask",
        &[a("iopl", R(Eax))],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill set_iopl_mask (0, 0x1000, 0x2000, 0x3000)",
        "EFLAGS.IOPL := bits 12-13 of EAX",
    ),
    spec(
        62,
        "SetInitialAPState",
        &[a("ap_state", R(Eax)), a("apic_id", R(Edx))],
        &[],
        C,
        HINT,
        Wrap,
        "wrap startup_ipi_hook (SMP kernels); the struct is a BSP stack local",
        "record (copy) the AP start state",
    ),
    spec(
        63,
        "APICWrite",
        &[a("reg", R(Eax)), a("value", R(Edx))],
        &[],
        C,
        CALL_OR_NONE,
        Fill,
        "fill apic_write (+ apic_write_atomic <= 25; apic->write 33+)",
        "local-APIC register (EAX & 0xFFF) := EDX",
    ),
    spec(
        64,
        "APICRead",
        &[a("reg", R(Eax))],
        &[Eax],
        C,
        CALL_OR_NONE,
        Fill,
        "fill apic_read / apic->read",
        "EAX := local-APIC register (EAX & 0xFFF)",
    ),
    spec(
        65,
        "IODelay",
        &[],
        &[],
        C,
        HINT,
        Fill,
        "fill io_delay",
        "replaces outb %al,$0x80",
    ),
    CallSpec {
        requires: &[67, 68, 69, 70],
        ..spec(
            66,
            "GetCycleFrequency",
            &[],
            EDX_EAX,
            C,
            CALL_OR_NONE,
            TimerProbe,
            "probe: non-NONE switches the VMI timer on; 67-70 then called without NULL checks",
            "counter ticks per second",
        )
    },
    spec(
        67,
        "GetCycleCounter",
        &[a("which", R(Eax))],
        EDX_EAX,
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: clocksource read (REAL), sched_clock (AVAILABLE)",
        "64-bit count of REAL/AVAILABLE/STOLEN",
    ),
    spec(
        68,
        "SetAlarm",
        &[
            a("flags", R(Eax)),
            a("expiry_lo", R(Edx)),
            a("expiry_hi", R(Ecx)),
            a("period_lo", S(4)),
            a("period_hi", S(8)),
        ],
        &[],
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: clockevents set_mode / set_next_event",
        "arm the per-VCPU alarm",
    ),
    spec(
        69,
        "CancelAlarm",
        &[a("flags", R(Eax))],
        &[Eax],
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: clockevents shutdown",
        "disarm; EAX = 1 if it was armed",
    ),
    spec(
        70,
        "GetWallclockTime",
        &[],
        EDX_EAX,
        C,
        CALL_OR_NONE,
        GetFunction,
        "getf: read_persistent_clock",
        "ns since 1970-01-01T00:00Z",
    ),
    spec(
        71,
        "WallclockUpdated",
        &[],
        &[Eax],
        C,
        CALL_OR_NONE,
        GetFunction,
        "fetched, never called",
        "EAX = 1 if the wallclock changed",
    ),
    unconfirmed(spec(
        72,
        "SetCallbacks",
        &[],
        &[],
        C,
        NONE_ONLY,
        NotUsed,
        "not defined in Linux",
        "UNCONFIRMED",
    )),
    spec(
        73,
        "SetLazyMode",
        &[a("mode", R(Eax))],
        &[],
        C,
        HINT,
        Wrap,
        "wrap set_lazy_mode / lazy enter-leave / start-end_context_switch",
        "0 none (flush), 1 MMU, 2 CPU",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn table_is_indexed_by_number() {
        for (i, c) in CALLS.iter().enumerate() {
            assert_eq!(usize::from(c.number), i, "{}", c.name);
        }
        assert!(call(74).is_none());
        assert!(call(u32::MAX).is_none());
    }

    #[test]
    fn call_ids_agree_with_the_table() {
        for (i, id) in CALL_IDS.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(id.spec().number as usize, i);
            assert_eq!(format!("{id:?}"), id.spec().name);
            assert_eq!(Call::from_number(i as u32), Some(*id));
        }
        assert_eq!(Call::from_number(74), None);
    }

    #[test]
    fn names_are_unique() {
        for (i, c) in CALLS.iter().enumerate() {
            for d in &CALLS[i + 1..] {
                assert_ne!(c.name, d.name);
            }
        }
        assert_eq!(call_by_name("setcr3").map(|c| c.number), Some(17));
    }

    #[test]
    fn numbering_matches_linux_vmi_h() {
        let pins = [
            (0, "CPUID"),
            (3, "SetGDT"),
            (11, "WriteGDTEntry"),
            (14, "UpdateKernelStack"),
            (17, "SetCR3"),
            (27, "RDTSC"),
            (29, "EnableInterrupts"),
            (33, "IRET"),
            (34, "SYSEXIT"),
            (35, "Halt"),
            (38, "SetPxE"),
            (44, "AllocatePage"),
            (48, "SetLinearMapping"),
            (49, "INL"),
            (60, "OUTSW"),
            (61, "SetIOPLMask"),
            (62, "SetInitialAPState"),
            (63, "APICWrite"),
            (65, "IODelay"),
            (66, "GetCycleFrequency"),
            (71, "WallclockUpdated"),
            (72, "SetCallbacks"),
            (73, "SetLazyMode"),
        ];
        for (n, name) in pins {
            assert_eq!(CALLS[n].name, name);
        }
    }

    #[test]
    fn register_classes_follow_section_4() {
        let strict: [u8; 5] = [0, 29, 30, 31, 32];
        for c in &CALLS {
            let expect = if strict.contains(&c.number) {
                RegClass::X
            } else if c.number == 33 || c.number == 34 {
                RegClass::N
            } else {
                RegClass::C
            };
            assert_eq!(c.class, expect, "{}", c.name);
        }
        // Class X: only the outputs may change.
        assert_eq!(call(30).unwrap().clobbers(), RegSet::EMPTY);
        assert_eq!(call(31).unwrap().clobbers(), RegSet::of(&[Reg::Eax]));
        // CPUID preserves ESI/EDI/EBP.
        let cpuid = call(0).unwrap().clobbers();
        assert!(
            !cpuid.contains(Reg::Esi) && !cpuid.contains(Reg::Edi) && !cpuid.contains(Reg::Ebp)
        );
        // Class C may clobber EAX/ECX/EDX but never EBX.
        let c = call(17).unwrap().clobbers();
        assert!(c.contains(Reg::Ecx) && !c.contains(Reg::Ebx));
    }

    #[test]
    fn relocation_rules_follow_section_3_5() {
        for c in &CALLS {
            let jump_ok = c.allowed.contains(RelocType::JumpRel);
            assert_eq!(jump_ok, c.number == 33 || c.number == 34, "{}", c.name);
            // Value-returning calls are never NOP.
            if !c.outputs.is_empty() {
                assert!(!c.allowed.contains(RelocType::Nop), "{}", c.name);
            }
        }
        for n in [29, 30, 31, 32, 33, 34] {
            assert!(call(n).unwrap().mandatory());
        }
        assert_eq!(call(66).unwrap().requires, &[67, 68, 69, 70]);
        assert!(!call(35).unwrap().mandatory());
    }

    #[test]
    fn stack_arguments_follow_regparm3() {
        assert_eq!(call(11).unwrap().stack_words(), 1);
        assert_eq!(call(44).unwrap().stack_words(), 2);
        assert_eq!(call(68).unwrap().stack_words(), 2);
        assert_eq!(call(39).unwrap().args[3].loc, Loc::Stack(4));
        assert_eq!(call(68).unwrap().args[4].loc, Loc::Stack(8));
        for c in &CALLS {
            // Only EAX, EDX, ECX carry arguments, except the never-used string port I/O.
            for arg in c.args {
                if let Loc::Reg(r) = arg.loc {
                    assert!(
                        matches!(r, Reg::Eax | Reg::Edx | Reg::Ecx) || !c.confirmed,
                        "{} {}",
                        c.name,
                        arg.name
                    );
                }
            }
        }
    }

    #[test]
    fn linux_never_requests_the_unused_numbers() {
        let unused = [1, 2, 8, 26, 36, 37, 42, 43, 72];
        for c in &CALLS {
            let expect_unused = unused.contains(&c.number) || (49..=60).contains(&c.number);
            assert_eq!(!c.used_by_linux(), expect_unused, "{}", c.name);
        }
    }
}
