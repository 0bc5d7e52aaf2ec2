//! The binary record stream the test guest writes to the debug console (port 0xE9), and its
//! decoder.
//!
//! # Format (version 5)
//!
//! All integers are little-endian. The stream is
//!
//! ```text
//! stream  := header record*
//! header  := magic "vmiG" (4 bytes) · version u16 (= 5) · reserved u16 (= 0)
//! record  := tag u16 · len u16 · payload[len]
//! ```
//!
//! Every payload is a fixed number of u32 words (the candidate record ends in 32 string bytes);
//! `len` must be exactly the size listed below, and no bytes may follow the `END` record. Word
//! indices are in the submodules ([`hello`], [`candidate`], …), shared by the guest generator
//! and this decoder.
//!
//! | tag | record | payload words |
//! |---|---|---|
//! | 0x01 | `HELLO` | page_offset, flags (bit 0 paging), nonce, layout version, step count |
//! | 0x02 | `STEP` | step id (a step is starting) |
//! | 0x03 | `CANDIDATE` | one 55AA ROM the probe looked at: base, [`Outcome`], flags, size byte, u32 @8, api major, api minor, pci_header_offs, PCI vendor, PCI device, pnp_header_offs, license_offs, then 32 bytes read at the license pointer |
//! | 0x04 | `PROBE_DONE` | found (0/1), physical base, linear base, candidates reported |
//! | 0x05 | `CALL_RESULT` | step id, then a [register snapshot](snap) taken right after the ROM returned |
//! | 0x06 | `EXCEPTION` | step id, vector, error code (0 when the CPU pushes none), EIP, CS, EFLAGS, CR2, the two frame words above EFLAGS (ESP, SS after a privilege change), handler ESP, EAX, EBX, ECX, EDX, ESI, EDI, EBP, DS, ES, FS, GS, SS |
//! | 0x07 | `MACHINE` | what the CPU is natively ([`machine`]): boot CR0/CR3/CR4/EFLAGS, CPUID leaves 0, 1, 0x80000000 and 0x80000001, a trap-guarded native `rdpmc`, `rdmsr` of IA32_APIC_BASE, a read of the local-APIC version register, the ACPI PM timer's I/O port and width from the FADT, and the hypervisor CPUID leaves 0x40000000 and 0x40000001 (EAX) |
//! | 0x08 | `VECTOR_RESULT` | one [call vector](vector_result): step id, the register snapshot, CR0/CR2/CR3/CR4, GDTR, IDTR, LDTR, TR, DR0–DR3/DR6/DR7, whether the call came back to its call site, timer ticks, and 32 words the vector's own capture operations filled in |
//! | 0x09 | `TRAP` | an exception or interrupt the guest *expected* (same payload as `EXCEPTION`): the guest continues with the step's resume point instead of ending the run |
//! | 0x0A | `STRESS` | one [stress step](stress): step id, loop iterations completed, timer-handler runs, the first violation (0: none), TSC cycles of the step (low, high), the run's total invocations, the second CPU's loop iterations, then the run's [invocation counters](crate::guest::Invocations) for calls 0–73 |
//! | 0x0B | `SAMPLES` | a vector's last measuring window ([`samples`]): step id, the number of alarm and reference-timer interrupts, the TSC at its start and end, its PM-timer ticks, then the TSC (low 32 bits) at each alarm interrupt and each reference-timer interrupt, 128 words each |
//! | 0xFF | `END` | [`EndStatus`] |
//!
//! A step id is `kind << 24 | argument`: kind 0 boot, 1 probe, 2 Init, 3 GetRelocationInfo
//! (argument = the call number), 4 call vector (argument = its index in the guest's program),
//! 5 machine information, 6 stress (argument = its index in the guest's program). Segment-register words carry the selector in their low 16 bits
//! (a 32-bit `push sreg` may leave the upper half unwritten); the decoder masks them.
//!
//! After an `EXCEPTION` record the guest ends the run through `isa-debug-exit` with
//! [`EXIT_EXCEPTION_BASE`]` | vector` (vectors 0–31) or [`EXIT_INTERRUPT`] (vectors 32–255)
//! instead of writing `END`. A `TRAP` record does not end the run.
//!
//! Decoding never panics: a short, garbled or over-long stream is a [`ProtocolError`] naming the
//! byte offset of the offending record.

use std::fmt;
use thiserror::Error;
use vmi_abi::calls::Reg;

/// Stream magic.
pub const MAGIC: [u8; 4] = *b"vmiG";
/// Protocol version this module writes and reads.
pub const VERSION: u16 = 5;
/// Size of the stream header.
pub const STREAM_HEADER_LEN: usize = 8;
/// Size of a record header (tag, length).
pub const RECORD_HEADER_LEN: usize = 4;

/// `isa-debug-exit` value of a run that wrote its `END` record.
pub const EXIT_DONE: u8 = 0x10;
/// `isa-debug-exit` value base of an exception: the value is `EXIT_EXCEPTION_BASE | vector`.
pub const EXIT_EXCEPTION_BASE: u8 = 0x40;
/// `isa-debug-exit` value of an interrupt (vector 32–255) the guest did not expect.
pub const EXIT_INTERRUPT: u8 = 0x60;
/// `isa-debug-exit` value of a fault inside the guest's own exception handler (no record).
pub const EXIT_NESTED: u8 = 0x61;

/// The stream header the guest writes first.
pub const fn stream_header() -> [u8; STREAM_HEADER_LEN] {
    let v = VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0, 0]
}

/// The canary the guest loads into `reg` before calling the ROM (inputs excepted).
pub const fn canary(reg: Reg) -> u32 {
    match reg {
        Reg::Eax => 0xC0DE_0A0A,
        Reg::Ebx => 0xC0DE_0B0B,
        Reg::Ecx => 0xC0DE_0C0C,
        Reg::Edx => 0xC0DE_0D0D,
        Reg::Esi => 0xC0DE_051E,
        Reg::Edi => 0xC0DE_0D1E,
        Reg::Ebp => 0xC0DE_0B9E,
    }
}

/// EFLAGS the guest sets (with `popfd`) right before calling the ROM: only the reserved bit 1,
/// so IF = 0 and DF = 0.
pub const CALL_EFLAGS: u32 = 0x2;

/// A `MACHINE` word meaning "the guarded native instruction did not trap".
pub const NO_FAULT: u32 = 0xFFFF_FFFF;

/// Record tags.
pub mod tag {
    /// Guest configuration echo.
    pub const HELLO: u16 = 0x01;
    /// A step starts.
    pub const STEP: u16 = 0x02;
    /// A 55AA candidate and what the probe made of it.
    pub const CANDIDATE: u16 = 0x03;
    /// The probe's result.
    pub const PROBE_DONE: u16 = 0x04;
    /// Registers after a ROM call returned.
    pub const CALL_RESULT: u16 = 0x05;
    /// An exception or unexpected interrupt.
    pub const EXCEPTION: u16 = 0x06;
    /// What the CPU is natively.
    pub const MACHINE: u16 = 0x07;
    /// The state after one call vector.
    pub const VECTOR_RESULT: u16 = 0x08;
    /// An exception or interrupt the guest expected; the run goes on.
    pub const TRAP: u16 = 0x09;
    /// The result of a stress step.
    pub const STRESS: u16 = 0x0A;
    /// When the alarm and reference-timer interrupts of a vector came.
    pub const SAMPLES: u16 = 0x0B;
    /// The guest finished.
    pub const END: u16 = 0xFF;
}

/// Word indices of a register snapshot (15 words).
pub mod snap {
    /// EAX.
    pub const EAX: usize = 0;
    /// EBX.
    pub const EBX: usize = 1;
    /// ECX.
    pub const ECX: usize = 2;
    /// EDX.
    pub const EDX: usize = 3;
    /// ESI.
    pub const ESI: usize = 4;
    /// EDI.
    pub const EDI: usize = 5;
    /// EBP.
    pub const EBP: usize = 6;
    /// ESP.
    pub const ESP: usize = 7;
    /// EFLAGS.
    pub const EFLAGS: usize = 8;
    /// CS.
    pub const CS: usize = 9;
    /// SS.
    pub const SS: usize = 10;
    /// DS.
    pub const DS: usize = 11;
    /// ES.
    pub const ES: usize = 12;
    /// FS.
    pub const FS: usize = 13;
    /// GS.
    pub const GS: usize = 14;
    /// Number of words.
    pub const WORDS: usize = 15;
}

/// Word indices of `HELLO`.
pub mod hello {
    /// Configured `PAGE_OFFSET`.
    pub const PAGE_OFFSET: usize = 0;
    /// Flags ([`FLAG_PAGING`]).
    pub const FLAGS: usize = 1;
    /// The nonce the host put into the image (ties the stream to the image).
    pub const NONCE: usize = 2;
    /// [`LAYOUT_VERSION`](crate::guest::LAYOUT_VERSION) of the guest's memory map.
    pub const LAYOUT_VERSION: usize = 3;
    /// Number of host-chosen steps in the program.
    pub const STEPS: usize = 4;
    /// Number of words.
    pub const WORDS: usize = 5;
    /// Flag: paging is on.
    pub const FLAG_PAGING: u32 = 1;
}

/// Word indices of `STEP`.
pub mod step {
    /// The step id.
    pub const ID: usize = 0;
    /// Number of words.
    pub const WORDS: usize = 1;
}

/// Word indices of `CANDIDATE`.
pub mod candidate {
    /// Physical base.
    pub const BASE: usize = 0;
    /// [`Outcome`](super::Outcome) code.
    pub const OUTCOME: usize = 1;
    /// Flags ([`FLAG_UNKNOWN_MANUFACTURER`], [`FLAG_LICENSE_UNSPECIFIED`]).
    pub const FLAGS: usize = 2;
    /// Size byte (offset 2).
    pub const ROM_LENGTH: usize = 3;
    /// The u32 at offset 8.
    pub const VMI_SIGNATURE: usize = 4;
    /// `api_version_maj`.
    pub const API_MAJOR: usize = 5;
    /// `api_version_min`.
    pub const API_MINOR: usize = 6;
    /// `pci_header_offs`.
    pub const PCI_HEADER_OFFS: usize = 7;
    /// PCI vendor id (0 when the probe stopped before reading it).
    pub const VENDOR: usize = 8;
    /// PCI device id (0 when the probe stopped before reading it).
    pub const DEVICE: usize = 9;
    /// `pnp_header_offs`.
    pub const PNP_HEADER_OFFS: usize = 10;
    /// `license_offs`.
    pub const LICENSE_OFFS: usize = 11;
    /// First word of the license bytes.
    pub const LICENSE: usize = 12;
    /// License bytes captured (from the license pointer, or from "unspecified").
    pub const LICENSE_BYTES: usize = 32;
    /// Number of words.
    pub const WORDS: usize = LICENSE + LICENSE_BYTES / 4;
    /// Flag: the PCI vendor/device ids are not VMware/VMI (Linux only warns).
    pub const FLAG_UNKNOWN_MANUFACTURER: u32 = 1 << 0;
    /// Flag: `license_offs` is 0, Linux compares "unspecified".
    pub const FLAG_LICENSE_UNSPECIFIED: u32 = 1 << 1;
    /// Flag: the license check ran (the captured bytes are what Linux compared).
    pub const FLAG_LICENSE_READ: u32 = 1 << 2;
}

/// Word indices of `PROBE_DONE`.
pub mod probe_done {
    /// 1 if a ROM was accepted.
    pub const FOUND: usize = 0;
    /// Its physical base (0 if none).
    pub const BASE: usize = 1;
    /// Its linear base (0 if none).
    pub const LINEAR: usize = 2;
    /// Number of `CANDIDATE` records written.
    pub const CANDIDATES: usize = 3;
    /// Number of words.
    pub const WORDS: usize = 4;
}

/// Word indices of `CALL_RESULT`.
pub mod call_result {
    /// Step id.
    pub const STEP: usize = 0;
    /// First word of the [register snapshot](super::snap).
    pub const REGS: usize = 1;
    /// Number of words.
    pub const WORDS: usize = REGS + super::snap::WORDS;
}

/// Word indices of `EXCEPTION`.
pub mod exception {
    /// Step id.
    pub const STEP: usize = 0;
    /// Vector.
    pub const VECTOR: usize = 1;
    /// Error code (0 for vectors without one).
    pub const ERROR_CODE: usize = 2;
    /// Faulting EIP (as pushed by the CPU).
    pub const EIP: usize = 3;
    /// CS of the interrupted code.
    pub const CS: usize = 4;
    /// EFLAGS of the interrupted code.
    pub const EFLAGS: usize = 5;
    /// CR2.
    pub const CR2: usize = 6;
    /// Frame word above EFLAGS: the interrupted ESP after a privilege change.
    pub const FRAME_ESP: usize = 7;
    /// Frame word above that: the interrupted SS after a privilege change.
    pub const FRAME_SS: usize = 8;
    /// ESP in the handler, pointing at the vector word (frame = 5 words above it).
    pub const HANDLER_ESP: usize = 9;
    /// EAX.
    pub const EAX: usize = 10;
    /// EBX.
    pub const EBX: usize = 11;
    /// ECX.
    pub const ECX: usize = 12;
    /// EDX.
    pub const EDX: usize = 13;
    /// ESI.
    pub const ESI: usize = 14;
    /// EDI.
    pub const EDI: usize = 15;
    /// EBP.
    pub const EBP: usize = 16;
    /// DS.
    pub const DS: usize = 17;
    /// ES.
    pub const ES: usize = 18;
    /// FS.
    pub const FS: usize = 19;
    /// GS.
    pub const GS: usize = 20;
    /// SS in the handler.
    pub const SS: usize = 21;
    /// EFLAGS on entry to the handler (what the gate made of the interrupted EFLAGS).
    pub const HANDLER_EFLAGS: usize = 22;
    /// Number of words.
    pub const WORDS: usize = 23;
}

/// Word indices of `MACHINE`.
pub mod machine {
    /// CR0 after boot (paging on when the guest pages).
    pub const CR0: usize = 0;
    /// CR3 after boot.
    pub const CR3: usize = 1;
    /// CR4 after boot.
    pub const CR4: usize = 2;
    /// EFLAGS during the step.
    pub const EFLAGS: usize = 3;
    /// CPUID leaf 0: EAX, EBX, ECX, EDX.
    pub const CPUID0: usize = 4;
    /// CPUID leaf 1: EAX, EBX, ECX, EDX.
    pub const CPUID1: usize = 8;
    /// CPUID leaf 0x80000000: EAX (highest extended leaf).
    pub const CPUID_EXT_MAX: usize = 12;
    /// CPUID leaf 0x80000001: EDX (meaningful only if the highest extended leaf allows it).
    pub const CPUID_EXT1_EDX: usize = 13;
    /// Vector a native `rdpmc` with ECX = 0 raised, or [`NO_FAULT`](super::NO_FAULT).
    pub const RDPMC_FAULT: usize = 14;
    /// Its EAX.
    pub const RDPMC_LO: usize = 15;
    /// Its EDX.
    pub const RDPMC_HI: usize = 16;
    /// Vector a native `rdmsr` of IA32_APIC_BASE (0x1B) raised, or `NO_FAULT`.
    pub const APIC_BASE_FAULT: usize = 17;
    /// Its EAX.
    pub const APIC_BASE_LO: usize = 18;
    /// Its EDX.
    pub const APIC_BASE_HI: usize = 19;
    /// The local-APIC version register (offset 0x30) read through the guest's APIC mapping
    /// (0xFFFFFFFF: nothing answers there).
    pub const APIC_VERSION: usize = 20;
    /// Vector the APIC read raised, or `NO_FAULT`.
    pub const APIC_FAULT: usize = 21;
    /// The ACPI PM timer's I/O port (the FADT's `PM_TMR_BLK`; 0: no FADT found below
    /// 64 MiB, or no timer).
    pub const PM_TIMER_PORT: usize = 22;
    /// Bit 0: the PM timer counts 32 bits (FADT flag `TMR_VAL_EXT`), else 24.
    pub const PM_TIMER_FLAGS: usize = 23;
    /// CPUID leaf 0x40000000 (the hypervisor's: highest hypervisor leaf, signature in
    /// EBX, ECX, EDX): EAX, EBX, ECX, EDX.
    pub const CPUID_HV: usize = 24;
    /// CPUID leaf 0x40000001: EAX (KVM's feature bits; meaningful only if the highest
    /// hypervisor leaf allows it).
    pub const CPUID_HV1_EAX: usize = 28;
    /// Number of words.
    pub const WORDS: usize = 29;
}

/// Word indices of `VECTOR_RESULT`.
pub mod vector_result {
    /// Step id (a vector step).
    pub const STEP: usize = 0;
    /// First word of the [register snapshot](super::snap); its ESP word is the ESP the call
    /// returned with.
    pub const REGS: usize = 1;
    /// CR0.
    pub const CR0: usize = REGS + super::snap::WORDS;
    /// CR2.
    pub const CR2: usize = CR0 + 1;
    /// CR3.
    pub const CR3: usize = CR0 + 2;
    /// CR4.
    pub const CR4: usize = CR0 + 3;
    /// GDTR limit (low 16 bits).
    pub const GDTR_LIMIT: usize = CR0 + 4;
    /// GDTR base.
    pub const GDTR_BASE: usize = CR0 + 5;
    /// IDTR limit (low 16 bits).
    pub const IDTR_LIMIT: usize = CR0 + 6;
    /// IDTR base.
    pub const IDTR_BASE: usize = CR0 + 7;
    /// LDTR selector (low 16 bits).
    pub const LDTR: usize = CR0 + 8;
    /// TR selector (low 16 bits).
    pub const TR: usize = CR0 + 9;
    /// DR0, DR1, DR2, DR3, DR6, DR7.
    pub const DR: usize = CR0 + 10;
    /// 1 if the call returned to the instruction after its call site, 0 if control came back
    /// through the vector's resume point (an IRET frame, an expected trap).
    pub const SITE: usize = DR + 6;
    /// Timer interrupts (IRQ0) the guest counted during the vector.
    pub const TICKS: usize = SITE + 1;
    /// Linear address of the vector's call site: its `call`/`jmp` to the ROM, or the native
    /// instruction a reference vector runs in its place.
    pub const SITE_EIP: usize = TICKS + 1;
    /// First of the words the vector's capture operations wrote.
    pub const EXTRA: usize = SITE_EIP + 1;
    /// Number of extra words.
    pub const EXTRA_WORDS: usize = 32;
    /// Number of words.
    pub const WORDS: usize = EXTRA + EXTRA_WORDS;
}

/// Word indices of `STRESS`.
pub mod stress {
    /// Step id (a stress step).
    pub const STEP: usize = 0;
    /// Loop iterations completed.
    pub const LOOPS: usize = 1;
    /// Timer-interrupt (IRQ0) handler runs while the step was active.
    pub const HANDLER_RUNS: usize = 2;
    /// The first violation: `(item + 1) << 8 | check` (0: none); see
    /// [`Violation`](super::Violation).
    pub const VIOLATION: usize = 3;
    /// TSC cycles from the start of the step to the end of the loop: low word.
    pub const CYCLES_LO: usize = 4;
    /// High word.
    pub const CYCLES_HI: usize = 5;
    /// Invocations of the whole run so far.
    pub const TOTAL: usize = 6;
    /// Loop iterations the second CPU completed (0 without one).
    pub const AP_LOOPS: usize = 7;
    /// First of the run's invocation counters (one word per call number).
    pub const COUNTS: usize = 8;
    /// Number of counters (calls 0–73).
    pub const COUNT_WORDS: usize = vmi_abi::calls::NUM_CALLS;
    /// Number of words.
    pub const WORDS: usize = COUNTS + COUNT_WORDS;
    /// Check code: a register the call must keep changed (code = 1 + its index in
    /// [`Reg::ALL`](vmi_abi::calls::Reg::ALL), so 1–7).
    pub const CHECK_REG: u32 = 1;
    /// Check code: ESP changed.
    pub const CHECK_ESP: u32 = 8;
    /// Check code: interrupts were off after the item.
    pub const CHECK_IF: u32 = 9;
    /// Check code: the call's result differs from the native value.
    pub const CHECK_RESULT: u32 = 10;
    /// Check code: DF was set after the item.
    pub const CHECK_DF: u32 = 11;
    /// Check code: the call is not CALL_REL (the loop did not start).
    pub const CHECK_NOT_CALL_REL: u32 = 12;
    /// Check code: the second CPU did not come up (item 0).
    pub const CHECK_AP_START: u32 = 13;
    /// Check code: the second CPU did not finish its loop in time (item 0).
    pub const CHECK_AP_DONE: u32 = 14;
}

/// Word indices of `END`.
pub mod end {
    /// [`EndStatus`](super::EndStatus) code.
    pub const STATUS: usize = 0;
    /// Number of words.
    pub const WORDS: usize = 1;
}

/// Word indices of `SAMPLES`.
pub mod samples {
    /// Step id (a vector step).
    pub const STEP: usize = 0;
    /// Alarm interrupts recorded (may exceed [`SLOTS`]: only the first are kept).
    pub const ALARMS: usize = 1;
    /// Reference-timer interrupts recorded.
    pub const REFERENCES: usize = 2;
    /// The TSC when the window started (low, high).
    pub const TSC_START: usize = 3;
    /// The TSC when it ended (low, high).
    pub const TSC_END: usize = 5;
    /// PM-timer ticks from start to end.
    pub const PM_TICKS: usize = 7;
    /// The alarm interrupts' TSC (low 32 bits) at the handler's entry.
    pub const ALARM_TSC: usize = 8;
    /// Slots of each list.
    pub const SLOTS: usize = 128;
    /// The reference timer's.
    pub const REFERENCE_TSC: usize = ALARM_TSC + SLOTS;
    /// Number of words.
    pub const WORDS: usize = REFERENCE_TSC + SLOTS;
}

/// Payload size of a record, by tag.
pub const fn payload_len(tag: u16) -> Option<usize> {
    let words = match tag {
        tag::HELLO => hello::WORDS,
        tag::STEP => step::WORDS,
        tag::CANDIDATE => candidate::WORDS,
        tag::PROBE_DONE => probe_done::WORDS,
        tag::CALL_RESULT => call_result::WORDS,
        tag::EXCEPTION | tag::TRAP => exception::WORDS,
        tag::MACHINE => machine::WORDS,
        tag::VECTOR_RESULT => vector_result::WORDS,
        tag::STRESS => stress::WORDS,
        tag::SAMPLES => samples::WORDS,
        tag::END => end::WORDS,
        _ => return None,
    };
    Some(words * 4)
}

/// Name of a record tag.
pub const fn tag_name(t: u16) -> &'static str {
    match t {
        tag::HELLO => "HELLO",
        tag::STEP => "STEP",
        tag::CANDIDATE => "CANDIDATE",
        tag::PROBE_DONE => "PROBE_DONE",
        tag::CALL_RESULT => "CALL_RESULT",
        tag::EXCEPTION => "EXCEPTION",
        tag::MACHINE => "MACHINE",
        tag::VECTOR_RESULT => "VECTOR_RESULT",
        tag::TRAP => "TRAP",
        tag::STRESS => "STRESS",
        tag::SAMPLES => "SAMPLES",
        tag::END => "END",
        _ => "unknown",
    }
}

/// What the guest was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepId {
    /// Setting up (GDT, IDT, paging) before the first step.
    Boot,
    /// Scanning for the ROM.
    Probe,
    /// Calling Init (ROM + 0x80).
    Init,
    /// Calling GetRelocationInfo (ROM + 0x88) with EAX = the call number.
    GetReloc(u32),
    /// Running call vector `n` (its index in the guest's program).
    Vector(u32),
    /// Reporting what the CPU is natively (`MACHINE`).
    Machine,
    /// Running stress configuration `n` (its index in the guest's program).
    Stress(u32),
}

impl StepId {
    /// Largest argument a step id can carry.
    pub const MAX_ARG: u32 = 0x00FF_FFFF;

    /// The 32-bit code written to the stream.
    pub const fn code(self) -> u32 {
        match self {
            StepId::Boot => 0,
            StepId::Probe => 1 << 24,
            StepId::Init => 2 << 24,
            StepId::GetReloc(n) => 3 << 24 | (n & Self::MAX_ARG),
            StepId::Vector(n) => 4 << 24 | (n & Self::MAX_ARG),
            StepId::Machine => 5 << 24,
            StepId::Stress(n) => 6 << 24 | (n & Self::MAX_ARG),
        }
    }

    /// The step with this code, if it is one.
    pub const fn from_code(code: u32) -> Option<StepId> {
        let arg = code & Self::MAX_ARG;
        match (code >> 24, arg) {
            (0, 0) => Some(StepId::Boot),
            (1, 0) => Some(StepId::Probe),
            (2, 0) => Some(StepId::Init),
            (3, n) => Some(StepId::GetReloc(n)),
            (4, n) => Some(StepId::Vector(n)),
            (5, 0) => Some(StepId::Machine),
            (6, n) => Some(StepId::Stress(n)),
            _ => None,
        }
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepId::Boot => f.write_str("boot"),
            StepId::Probe => f.write_str("probe"),
            StepId::Init => f.write_str("Init"),
            StepId::GetReloc(n) => write!(f, "GetRelocationInfo({n})"),
            StepId::Vector(n) => write!(f, "vector {n}"),
            StepId::Machine => f.write_str("machine"),
            StepId::Stress(n) => write!(f, "stress {n}"),
        }
    }
}

/// What the probe decided about a 55AA candidate (the checks of vmi-abi.md §2.1, in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed: this ROM is used.
    Accepted,
    /// The u32 at offset 8 is not `"cVmi"` (skipped silently).
    NotVmi,
    /// API major version is not 3 ("mismatched rom version").
    VersionMismatch,
    /// `pci_header_offs` is 0 ("ROM does not contain PCI header").
    NoPciHeader,
    /// The license is neither "GPL" nor "GPL v2" ("Non GPL license … Not used").
    NonGplLicense,
}

impl Outcome {
    /// Code in the `CANDIDATE` record.
    pub const fn code(self) -> u32 {
        match self {
            Outcome::Accepted => 0,
            Outcome::NotVmi => 1,
            Outcome::VersionMismatch => 2,
            Outcome::NoPciHeader => 3,
            Outcome::NonGplLicense => 4,
        }
    }

    /// The outcome with this code.
    pub const fn from_code(code: u32) -> Option<Outcome> {
        match code {
            0 => Some(Outcome::Accepted),
            1 => Some(Outcome::NotVmi),
            2 => Some(Outcome::VersionMismatch),
            3 => Some(Outcome::NoPciHeader),
            4 => Some(Outcome::NonGplLicense),
            _ => None,
        }
    }
}

/// How the guest finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndStatus {
    /// Every step ran.
    Complete,
    /// No ROM was accepted: the ROM steps were skipped.
    NoRom,
    /// Init returned non-zero: later ROM steps were skipped (Linux stays native).
    InitFailed,
}

impl EndStatus {
    /// Code in the `END` record.
    pub const fn code(self) -> u32 {
        match self {
            EndStatus::Complete => 0,
            EndStatus::NoRom => 1,
            EndStatus::InitFailed => 2,
        }
    }

    /// The status with this code.
    pub const fn from_code(code: u32) -> Option<EndStatus> {
        match code {
            0 => Some(EndStatus::Complete),
            1 => Some(EndStatus::NoRom),
            2 => Some(EndStatus::InitFailed),
            _ => None,
        }
    }
}

/// The `HELLO` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Configured `PAGE_OFFSET`.
    pub page_offset: u32,
    /// Whether paging is on.
    pub paging: bool,
    /// The image's nonce.
    pub nonce: u32,
    /// Memory-map version.
    pub layout_version: u32,
    /// Number of steps.
    pub steps: u32,
}

/// The `CANDIDATE` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Physical base.
    pub base: u32,
    /// What the probe decided.
    pub outcome: Outcome,
    /// PCI ids are not VMware/VMI (a warning; Linux continues).
    pub unknown_manufacturer: bool,
    /// `license_offs` was 0, so "unspecified" was compared.
    pub license_unspecified: bool,
    /// Size byte (offset 2).
    pub rom_length: u8,
    /// The u32 at offset 8.
    pub vmi_signature: u32,
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// `pci_header_offs`.
    pub pci_header_offs: u16,
    /// PCI vendor id (0 if not read).
    pub vendor_id: u16,
    /// PCI device id (0 if not read).
    pub device_id: u16,
    /// `pnp_header_offs`.
    pub pnp_header_offs: u16,
    /// `license_offs`.
    pub license_offs: u16,
    /// The license Linux compared (bytes before the NUL), when the license check ran.
    pub license: Option<Vec<u8>>,
    /// Whether a NUL ended the license within the captured 32 bytes.
    pub license_terminated: bool,
}

impl Candidate {
    /// The license as text (lossy), if it was read.
    pub fn license_str(&self) -> Option<String> {
        self.license
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// The `PROBE_DONE` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeDone {
    /// Physical base of the accepted ROM.
    pub base: Option<u32>,
    /// Its linear base.
    pub linear: u32,
    /// Candidates reported.
    pub candidates: u32,
}

/// A register snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Regs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// EBP.
    pub ebp: u32,
    /// ESP.
    pub esp: u32,
    /// EFLAGS.
    pub eflags: u32,
    /// CS.
    pub cs: u16,
    /// SS.
    pub ss: u16,
    /// DS.
    pub ds: u16,
    /// ES.
    pub es: u16,
    /// FS.
    pub fs: u16,
    /// GS.
    pub gs: u16,
}

impl Regs {
    /// The value of a general-purpose register.
    pub const fn get(&self, reg: Reg) -> u32 {
        match reg {
            Reg::Eax => self.eax,
            Reg::Ebx => self.ebx,
            Reg::Ecx => self.ecx,
            Reg::Edx => self.edx,
            Reg::Esi => self.esi,
            Reg::Edi => self.edi,
            Reg::Ebp => self.ebp,
        }
    }

    /// The registers of `regs` whose value is not their [`canary`].
    pub fn changed(&self, regs: &[Reg]) -> Vec<Reg> {
        regs.iter()
            .copied()
            .filter(|r| self.get(*r) != canary(*r))
            .collect()
    }

    fn from_words(w: &Words<'_>, at: usize) -> Regs {
        let seg = |i| (w.get(at + i) & 0xFFFF) as u16;
        Regs {
            eax: w.get(at + snap::EAX),
            ebx: w.get(at + snap::EBX),
            ecx: w.get(at + snap::ECX),
            edx: w.get(at + snap::EDX),
            esi: w.get(at + snap::ESI),
            edi: w.get(at + snap::EDI),
            ebp: w.get(at + snap::EBP),
            esp: w.get(at + snap::ESP),
            eflags: w.get(at + snap::EFLAGS),
            cs: seg(snap::CS),
            ss: seg(snap::SS),
            ds: seg(snap::DS),
            es: seg(snap::ES),
            fs: seg(snap::FS),
            gs: seg(snap::GS),
        }
    }
}

/// The `CALL_RESULT` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallResult {
    /// Which call.
    pub step: StepId,
    /// Registers right after the ROM returned.
    pub regs: Regs,
}

/// The `EXCEPTION` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// The step that was running.
    pub step: StepId,
    /// Vector.
    pub vector: u8,
    /// Error code (0 where the CPU pushes none).
    pub error_code: u32,
    /// EIP pushed by the CPU (the faulting instruction for faults).
    pub eip: u32,
    /// CS of the interrupted code.
    pub cs: u16,
    /// EFLAGS of the interrupted code.
    pub eflags: u32,
    /// EFLAGS on entry to the handler (the gate clears TF, NT, RF, VM, and IF for an
    /// interrupt gate).
    pub handler_eflags: u32,
    /// CR2.
    pub cr2: u32,
    /// The interrupted ESP.
    pub esp: u32,
    /// The interrupted SS.
    pub ss: u16,
    /// General-purpose and data-segment registers of the interrupted code (ESP as above).
    pub regs: Regs,
}

impl Exception {
    /// Whether the CPU pushed an error code for this vector.
    pub fn has_error_code(&self) -> bool {
        crate::guest::idt::has_error_code(self.vector)
    }

    /// The mnemonic of the vector (`"#UD"`).
    pub fn mnemonic(&self) -> &'static str {
        crate::guest::idt::mnemonic(self.vector)
    }
}

/// The `MACHINE` record: what the CPU under the guest is natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CR0 after boot.
    pub cr0: u32,
    /// CR3 after boot.
    pub cr3: u32,
    /// CR4 after boot.
    pub cr4: u32,
    /// EFLAGS during the step.
    pub eflags: u32,
    /// CPUID leaf 0 (EAX, EBX, ECX, EDX).
    pub cpuid0: [u32; 4],
    /// CPUID leaf 1 (EAX, EBX, ECX, EDX).
    pub cpuid1: [u32; 4],
    /// CPUID 0x80000000 EAX.
    pub cpuid_ext_max: u32,
    /// CPUID 0x80000001 EDX (0 when the highest extended leaf is below 0x80000001).
    pub cpuid_ext1_edx: u32,
    /// A native `rdpmc` (ECX = 0): Ok(EDX:EAX) or Err(the vector it raised).
    pub rdpmc: Result<u64, u8>,
    /// A native `rdmsr` of IA32_APIC_BASE: Ok(value) or Err(vector).
    pub apic_base: Result<u64, u8>,
    /// The local-APIC version register read through the guest's APIC mapping: Ok(value) or
    /// Err(vector). 0xFFFFFFFF means nothing answered (no local APIC).
    pub apic_version: Result<u32, u8>,
    /// The ACPI PM timer the firmware describes (None: no FADT found, or it names no timer).
    pub pm_timer: Option<PmTimer>,
    /// CPUID leaf 0x40000000 (EAX, EBX, ECX, EDX): under a hypervisor its highest leaf and
    /// signature (KVM: "KVMKVMKVM\0\0\0").
    pub cpuid_hv: [u32; 4],
    /// CPUID leaf 0x40000001 EAX (0 when leaf 0x40000000 does not name a highest hypervisor
    /// leaf of 0x40000001 or more).
    pub cpuid_hv1_eax: u32,
}

/// The ACPI power-management timer: a free-running counter at [`PmTimer::HZ`], read with a
/// 32-bit `in` from its port; a time base that does not depend on the ROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmTimer {
    /// Its I/O port.
    pub port: u16,
    /// Counter width: 24 or 32 bits.
    pub bits: u8,
}

impl PmTimer {
    /// The PM timer's rate (ACPI: 3.579545 MHz).
    pub const HZ: u32 = 3_579_545;

    /// The bits the counter has.
    pub const fn mask(&self) -> u32 {
        if self.bits >= 32 {
            u32::MAX
        } else {
            (1 << self.bits) - 1
        }
    }

    /// Ticks from `from` to `to` (one wrap at most).
    pub const fn elapsed(&self, from: u32, to: u32) -> u32 {
        to.wrapping_sub(from) & self.mask()
    }

    /// `ticks` in seconds.
    pub fn secs(ticks: u32) -> f64 {
        f64::from(ticks) / f64::from(Self::HZ)
    }

    /// `secs` seconds in ticks (rounded down).
    pub fn ticks(secs: f64) -> u32 {
        (secs * f64::from(Self::HZ)) as u32
    }
}

impl Machine {
    /// CPUID leaf 1 EDX bit `bit` (e.g. 13 = PGE, 11 = SEP, 4 = TSC).
    pub const fn has_edx1(&self, bit: u32) -> bool {
        self.cpuid1[3] >> bit & 1 == 1
    }

    /// Whether a local APIC answered the version read.
    pub fn has_apic(&self) -> bool {
        matches!(self.apic_version, Ok(v) if v != u32::MAX)
    }

    /// The hypervisor signature of CPUID 0x40000000 (EBX, ECX, EDX; NULs and anything not
    /// printable as `\xNN`).
    pub fn hypervisor_signature(&self) -> String {
        let [_, ebx, ecx, edx] = self.cpuid_hv;
        [ebx, ecx, edx]
            .into_iter()
            .flat_map(u32::to_le_bytes)
            .map(|b| {
                if b.is_ascii_graphic() {
                    char::from(b).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect()
    }

    /// Whether the CPU is KVM's with kvmclock: CPUID 0x40000000 = "KVMKVMKVM\0\0\0" with
    /// leaf 0x40000001 present, whose EAX has KVM_FEATURE_CLOCKSOURCE2 (bit 3:
    /// MSR_KVM_SYSTEM_TIME_NEW and MSR_KVM_WALL_CLOCK_NEW) — the test a ROM's Init makes.
    pub fn kvmclock(&self) -> bool {
        let [max, ebx, ecx, edx] = self.cpuid_hv;
        let kvm = [ebx, ecx, edx] == [KVM_SIGNATURE[0], KVM_SIGNATURE[1], KVM_SIGNATURE[2]];
        kvm && max > HV_LEAF && self.cpuid_hv1_eax & KVM_FEATURE_CLOCKSOURCE2 != 0
    }

    /// Whether the CPU is KVM's with paravirtual EOI: KVM's signature, leaf 0x40000001
    /// present, and KVM_FEATURE_PV_EOI (bit 6 of its EAX: MSR_KVM_PV_EOI_EN).
    pub fn kvm_pv_eoi(&self) -> bool {
        let [max, ..] = self.cpuid_hv;
        self.cpuid_hv[1..] == KVM_SIGNATURE
            && max > HV_LEAF
            && self.cpuid_hv1_eax & KVM_FEATURE_PV_EOI != 0
    }

    /// Why [`Machine::kvmclock`] is false, in words (None: it is true).
    pub fn no_kvmclock(&self) -> Option<String> {
        if self.kvmclock() {
            return None;
        }
        let [max, ..] = self.cpuid_hv;
        let kvm = self.cpuid_hv[1..] == KVM_SIGNATURE;
        Some(if !kvm {
            format!(
                "CPUID 0x40000000 does not say KVM (signature \"{}\")",
                self.hypervisor_signature()
            )
        } else if max <= HV_LEAF {
            format!("KVM's CPUID 0x40000000 names no leaf 0x40000001 (highest {max:#x})")
        } else {
            format!(
                "KVM offers no kvmclock (CPUID 0x40000001 EAX {:#x}: bit 3, \
                 KVM_FEATURE_CLOCKSOURCE2, clear)",
                self.cpuid_hv1_eax
            )
        })
    }
}

/// The hypervisor CPUID leaf.
pub const HV_LEAF: u32 = 0x4000_0000;
/// KVM's signature in CPUID 0x40000000 EBX, ECX, EDX ("KVMKVMKVM\0\0\0").
pub const KVM_SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"KVMK"),
    u32::from_le_bytes(*b"VMKV"),
    u32::from_le_bytes(*b"M\0\0\0"),
];
/// CPUID 0x40000001 EAX bit 3: MSR_KVM_SYSTEM_TIME_NEW and MSR_KVM_WALL_CLOCK_NEW (kvmclock).
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// CPUID 0x40000001 EAX bit 6: MSR_KVM_PV_EOI_EN (paravirtual end of interrupt).
pub const KVM_FEATURE_PV_EOI: u32 = 1 << 6;
/// MSR_KVM_PV_EOI_EN: the guest-physical address of a CPU's PV-EOI word, with enable bit 0.
pub const MSR_KVM_PV_EOI_EN: u32 = 0x4B56_4D04;

/// A descriptor-table register (GDTR, IDTR): limit and linear base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DtReg {
    /// Limit.
    pub limit: u16,
    /// Linear base.
    pub base: u32,
}

/// The `VECTOR_RESULT` record: everything the guest captured after one call vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorResult {
    /// The vector step.
    pub step: StepId,
    /// Registers right after the call came back (ESP as it came back).
    pub regs: Regs,
    /// CR0.
    pub cr0: u32,
    /// CR2.
    pub cr2: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4.
    pub cr4: u32,
    /// GDTR.
    pub gdtr: DtReg,
    /// IDTR.
    pub idtr: DtReg,
    /// LDTR selector.
    pub ldtr: u16,
    /// TR selector.
    pub tr: u16,
    /// DR0, DR1, DR2, DR3, DR6, DR7.
    pub dr: [u32; 6],
    /// Whether the call returned to its call site (false: through the resume point).
    pub returned_to_site: bool,
    /// Timer interrupts counted during the vector.
    pub ticks: u32,
    /// Linear address of the call site (see [`vector_result::SITE_EIP`]).
    pub site_eip: u32,
    /// The words the vector's capture operations wrote.
    pub extra: [u32; vector_result::EXTRA_WORDS],
}

impl VectorResult {
    /// For unit tests of the judges: a result whose EAX/EDX are `eax`/`edx`, whose extra words
    /// are `words` (index, value), and everything else zero.
    #[cfg(test)]
    pub(crate) fn with_words(words: &[(u8, u32)], eax: u32, edx: u32) -> VectorResult {
        let mut extra = [0u32; vector_result::EXTRA_WORDS];
        for &(k, v) in words {
            extra[usize::from(k)] = v;
        }
        VectorResult {
            step: StepId::Vector(0),
            regs: Regs {
                eax,
                edx,
                ..Default::default()
            },
            cr0: 0,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            gdtr: Default::default(),
            idtr: Default::default(),
            ldtr: 0,
            tr: 0,
            dr: [0; 6],
            returned_to_site: true,
            ticks: 0,
            site_eip: 0,
            extra,
        }
    }

    /// Debug register `n` (0–3, 6, 7), if it is one of those.
    pub fn dr(&self, n: u8) -> Option<u32> {
        let i = match n {
            0..=3 => usize::from(n),
            6 => 4,
            7 => 5,
            _ => return None,
        };
        self.dr.get(i).copied()
    }

    /// Extra word `i` (0 when out of range).
    pub fn x(&self, i: usize) -> u32 {
        self.extra.get(i).copied().unwrap_or(0)
    }

    /// Extra words `i` (low) and `i + 1` (high) as a u64.
    pub fn x64(&self, i: usize) -> u64 {
        u64::from(self.x(i)) | u64::from(self.x(i + 1)) << 32
    }
}

/// What a stress loop's check found wrong (the first violation ends the loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The call changed a register its class says it keeps.
    Register(Reg),
    /// ESP was not restored.
    Esp,
    /// Interrupts were off after the item.
    InterruptsOff,
    /// The result differs from the native value (CRn, DR7, CPUID leaf 0's EAX, IF in
    /// GetInterruptMask) or RDTSC went backwards.
    Result,
    /// DF was set after the item.
    Direction,
    /// The ROM did not answer CALL_REL for the item's call: the loop did not start.
    NotCallRel,
    /// The second CPU did not come up.
    ApNotStarted,
    /// The second CPU did not finish its loop in time.
    ApNotDone,
}

impl Violation {
    /// The violation with this check code.
    pub fn from_code(code: u32) -> Option<Violation> {
        use stress as s;
        Some(match code {
            1..=7 => Violation::Register(*Reg::ALL.get(code as usize - 1)?),
            s::CHECK_ESP => Violation::Esp,
            s::CHECK_IF => Violation::InterruptsOff,
            s::CHECK_RESULT => Violation::Result,
            s::CHECK_DF => Violation::Direction,
            s::CHECK_NOT_CALL_REL => Violation::NotCallRel,
            s::CHECK_AP_START => Violation::ApNotStarted,
            s::CHECK_AP_DONE => Violation::ApNotDone,
            _ => return None,
        })
    }

    /// Its check code.
    pub fn code(self) -> u32 {
        use stress as s;
        match self {
            Violation::Register(r) => {
                s::CHECK_REG + Reg::ALL.iter().position(|x| *x == r).unwrap_or(0) as u32
            }
            Violation::Esp => s::CHECK_ESP,
            Violation::InterruptsOff => s::CHECK_IF,
            Violation::Result => s::CHECK_RESULT,
            Violation::Direction => s::CHECK_DF,
            Violation::NotCallRel => s::CHECK_NOT_CALL_REL,
            Violation::ApNotStarted => s::CHECK_AP_START,
            Violation::ApNotDone => s::CHECK_AP_DONE,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Register(r) => write!(f, "changed {r:?}, which it must keep"),
            Violation::Esp => f.write_str("did not restore ESP"),
            Violation::InterruptsOff => f.write_str("left interrupts off"),
            Violation::Result => f.write_str("returned a wrong result"),
            Violation::Direction => f.write_str("left DF set"),
            Violation::NotCallRel => f.write_str("is not CALL_REL"),
            Violation::ApNotStarted => f.write_str("the second CPU did not start"),
            Violation::ApNotDone => f.write_str("the second CPU did not finish its loop"),
        }
    }
}

/// The `STRESS` record: what one stress step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StressResult {
    /// The stress step.
    pub step: StepId,
    /// Loop iterations completed.
    pub loops: u32,
    /// Timer-handler runs while the step was active.
    pub handler_runs: u32,
    /// The first violation: the index of the mix item and what was wrong (None: none).
    pub violation: Option<(u32, Violation)>,
    /// TSC cycles the step took.
    pub cycles: u64,
    /// Invocations of the whole run so far.
    pub total: u32,
    /// Loop iterations the second CPU completed (0 without one).
    pub ap_loops: u32,
    /// The run's invocation counters, by call number (0–73).
    pub counts: Vec<u32>,
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// `HELLO`.
    Hello(Hello),
    /// `STEP`.
    Step(StepId),
    /// `CANDIDATE`.
    Candidate(Candidate),
    /// `PROBE_DONE`.
    ProbeDone(ProbeDone),
    /// `CALL_RESULT`.
    CallResult(CallResult),
    /// `EXCEPTION`.
    Exception(Exception),
    /// `MACHINE`.
    Machine(Machine),
    /// `VECTOR_RESULT`.
    VectorResult(Box<VectorResult>),
    /// `TRAP`: an expected exception or interrupt (the guest went on).
    Trap(Exception),
    /// `STRESS`.
    Stress(Box<StressResult>),
    /// `SAMPLES`.
    Samples(Box<Samples>),
    /// `END`.
    End(EndStatus),
}

/// The `SAMPLES` record: when the alarm and the reference timer interrupted during a vector's
/// last measuring window ([`Op::Window`](crate::guest::Op::Window)), as the TSC's low 32 bits
/// at the alarm handler's entry, the first [`samples::SLOTS`] of each; and the window's TSC
/// and PM-timer span, which give the TSC's rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Samples {
    /// The vector step.
    pub step: StepId,
    /// TSC cycles from the window's start to its end.
    pub tsc_span: u64,
    /// PM-timer ticks from its start to its end.
    pub pm_ticks: u32,
    /// The alarm's interrupts.
    pub alarm: Vec<u32>,
    /// The reference timer's.
    pub reference: Vec<u32>,
}

impl Samples {
    /// The TSC's rate over the window, measured with the PM timer (None: no time passed).
    pub fn tsc_hz(&self) -> Option<f64> {
        (self.pm_ticks > 0)
            .then(|| self.tsc_span as f64 * f64::from(PmTimer::HZ) / f64::from(self.pm_ticks))
    }
}

/// A decoded stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// Protocol version of the header.
    pub version: u16,
    /// The records, each with the byte offset of its header.
    pub records: Vec<(usize, Record)>,
}

impl Stream {
    /// How the guest finished, if it wrote `END`.
    pub fn end(&self) -> Option<EndStatus> {
        self.records.iter().find_map(|(_, r)| match r {
            Record::End(s) => Some(*s),
            _ => None,
        })
    }

    /// The `MACHINE` record, if the guest wrote one.
    pub fn machine(&self) -> Option<&Machine> {
        self.records.iter().find_map(|(_, r)| match r {
            Record::Machine(m) => Some(m),
            _ => None,
        })
    }

    /// The exception that ended the run, if any.
    pub fn exception(&self) -> Option<&Exception> {
        self.records.iter().find_map(|(_, r)| match r {
            Record::Exception(e) => Some(e),
            _ => None,
        })
    }

    /// The `STRESS` records, in order.
    pub fn stress(&self) -> impl Iterator<Item = &StressResult> {
        self.records.iter().filter_map(|(_, r)| match r {
            Record::Stress(s) => Some(&**s),
            _ => None,
        })
    }

    /// The last step the guest announced.
    pub fn last_step(&self) -> StepId {
        self.records
            .iter()
            .rev()
            .find_map(|(_, r)| match r {
                Record::Step(s) => Some(*s),
                _ => None,
            })
            .unwrap_or(StepId::Boot)
    }
}

/// Why a stream could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The guest wrote nothing.
    #[error("empty stream: the guest wrote nothing to the debug console")]
    Empty,
    /// The stream header is cut short.
    #[error("stream header truncated: {len} of {STREAM_HEADER_LEN} bytes")]
    ShortHeader {
        /// Bytes present.
        len: usize,
    },
    /// The stream does not start with the magic.
    #[error("bad stream magic at byte 0: {found:02x?} (expected \"vmiG\")")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version this decoder does not know.
    #[error("stream version {found} at byte 4 (this decoder reads version {VERSION})")]
    Version {
        /// The version in the header.
        found: u16,
    },
    /// A record runs past the end of the stream.
    #[error("record at byte {offset} truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// Offset of the record header.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A tag this version does not define.
    #[error("unknown record tag {tag:#06x} at byte {offset}")]
    UnknownTag {
        /// Offset of the record header.
        offset: usize,
        /// The tag.
        tag: u16,
    },
    /// A known record with the wrong payload length.
    #[error("{name} record at byte {offset} has length {len} (expected {expected})")]
    BadLength {
        /// Offset of the record header.
        offset: usize,
        /// Record name.
        name: &'static str,
        /// Length in the header.
        len: usize,
        /// Length this version defines.
        expected: usize,
    },
    /// A field with a value outside its domain.
    #[error("{name} record at byte {offset}: bad {field} {value:#x}")]
    BadValue {
        /// Offset of the record header.
        offset: usize,
        /// Record name.
        name: &'static str,
        /// Field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// Bytes after the `END` record.
    #[error("{len} bytes after the END record at byte {offset}")]
    AfterEnd {
        /// Offset of the first byte after `END`.
        offset: usize,
        /// How many.
        len: usize,
    },
}

/// A payload read as u32 words (missing words read as 0; lengths are checked before).
struct Words<'a>(&'a [u8]);

impl Words<'_> {
    fn get(&self, i: usize) -> u32 {
        i.checked_mul(4)
            .and_then(|at| self.0.get(at..at.checked_add(4)?))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    }

    fn bytes(&self, word: usize, len: usize) -> &[u8] {
        let at = word.saturating_mul(4);
        self.0.get(at..at.saturating_add(len)).unwrap_or(&[])
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(<[u8; 2]>::try_from(s).ok()?))
}

/// Decodes a whole stream; the first problem is an error.
pub fn decode(bytes: &[u8]) -> Result<Stream, ProtocolError> {
    match decode_partial(bytes) {
        (s, None) => Ok(s),
        (_, Some(e)) => Err(e),
    }
}

/// Decodes as much as possible: the records before the first problem, and the problem.
pub fn decode_partial(bytes: &[u8]) -> (Stream, Option<ProtocolError>) {
    let mut stream = Stream::default();
    if bytes.is_empty() {
        return (stream, Some(ProtocolError::Empty));
    }
    let Some(header) = bytes.get(..STREAM_HEADER_LEN) else {
        return (
            stream,
            Some(ProtocolError::ShortHeader { len: bytes.len() }),
        );
    };
    let mut magic = [0u8; 4];
    magic.copy_from_slice(header.get(..4).unwrap_or(&[0; 4]));
    if magic != MAGIC {
        return (stream, Some(ProtocolError::BadMagic { found: magic }));
    }
    let version = u16_at(header, 4).unwrap_or(0);
    if version != VERSION {
        return (stream, Some(ProtocolError::Version { found: version }));
    }
    stream.version = version;
    let mut at = STREAM_HEADER_LEN;
    while at < bytes.len() {
        if stream.end().is_some() {
            let len = bytes.len() - at;
            return (stream, Some(ProtocolError::AfterEnd { offset: at, len }));
        }
        match record_at(bytes, at) {
            Ok((rec, next)) => {
                stream.records.push((at, rec));
                at = next;
            }
            Err(e) => return (stream, Some(e)),
        }
    }
    (stream, None)
}

fn record_at(bytes: &[u8], offset: usize) -> Result<(Record, usize), ProtocolError> {
    let rest = bytes.get(offset..).unwrap_or(&[]);
    let truncated = |what, needed| ProtocolError::Truncated {
        offset,
        what,
        needed,
        available: rest.len(),
    };
    let (Some(tag), Some(len)) = (u16_at(rest, 0), u16_at(rest, 2)) else {
        return Err(truncated("the record header", RECORD_HEADER_LEN));
    };
    let len = usize::from(len);
    let name = tag_name(tag);
    let expected = payload_len(tag).ok_or(ProtocolError::UnknownTag { offset, tag })?;
    if len != expected {
        return Err(ProtocolError::BadLength {
            offset,
            name,
            len,
            expected,
        });
    }
    let payload = rest
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len)
        .ok_or_else(|| truncated(name, RECORD_HEADER_LEN + len))?;
    let w = Words(payload);
    let bad = |field, value| ProtocolError::BadValue {
        offset,
        name,
        field,
        value,
    };
    let step_at = |i: usize| StepId::from_code(w.get(i)).ok_or_else(|| bad("step id", w.get(i)));
    let rec = match tag {
        tag::HELLO => Record::Hello(Hello {
            page_offset: w.get(hello::PAGE_OFFSET),
            paging: w.get(hello::FLAGS) & hello::FLAG_PAGING != 0,
            nonce: w.get(hello::NONCE),
            layout_version: w.get(hello::LAYOUT_VERSION),
            steps: w.get(hello::STEPS),
        }),
        tag::STEP => Record::Step(step_at(step::ID)?),
        tag::CANDIDATE => {
            use candidate as c;
            let outcome = Outcome::from_code(w.get(c::OUTCOME))
                .ok_or_else(|| bad("outcome", w.get(c::OUTCOME)))?;
            let flags = w.get(c::FLAGS);
            let raw = w.bytes(c::LICENSE, c::LICENSE_BYTES);
            let nul = raw.iter().position(|b| *b == 0);
            let text = raw.get(..nul.unwrap_or(raw.len())).unwrap_or(&[]);
            Record::Candidate(Candidate {
                base: w.get(c::BASE),
                outcome,
                unknown_manufacturer: flags & c::FLAG_UNKNOWN_MANUFACTURER != 0,
                license_unspecified: flags & c::FLAG_LICENSE_UNSPECIFIED != 0,
                rom_length: w.get(c::ROM_LENGTH) as u8,
                vmi_signature: w.get(c::VMI_SIGNATURE),
                api_major: w.get(c::API_MAJOR) as u8,
                api_minor: w.get(c::API_MINOR) as u8,
                pci_header_offs: w.get(c::PCI_HEADER_OFFS) as u16,
                vendor_id: w.get(c::VENDOR) as u16,
                device_id: w.get(c::DEVICE) as u16,
                pnp_header_offs: w.get(c::PNP_HEADER_OFFS) as u16,
                license_offs: w.get(c::LICENSE_OFFS) as u16,
                license: (flags & c::FLAG_LICENSE_READ != 0).then(|| text.to_vec()),
                license_terminated: nul.is_some(),
            })
        }
        tag::PROBE_DONE => {
            let found = w.get(probe_done::FOUND);
            if found > 1 {
                return Err(bad("found flag", found));
            }
            Record::ProbeDone(ProbeDone {
                base: (found == 1).then(|| w.get(probe_done::BASE)),
                linear: w.get(probe_done::LINEAR),
                candidates: w.get(probe_done::CANDIDATES),
            })
        }
        tag::CALL_RESULT => Record::CallResult(CallResult {
            step: step_at(call_result::STEP)?,
            regs: Regs::from_words(&w, call_result::REGS),
        }),
        tag::EXCEPTION => Record::Exception(exception_at(&w, &bad)?),
        tag::TRAP => Record::Trap(exception_at(&w, &bad)?),
        tag::MACHINE => {
            use machine as m;
            let guarded = |fault: usize| -> Result<Option<u8>, ProtocolError> {
                match w.get(fault) {
                    NO_FAULT => Ok(None),
                    v => u8::try_from(v)
                        .map(Some)
                        .map_err(|_| bad("fault vector", v)),
                }
            };
            let pair = |lo: usize| u64::from(w.get(lo)) | u64::from(w.get(lo + 1)) << 32;
            let four = |at: usize| [w.get(at), w.get(at + 1), w.get(at + 2), w.get(at + 3)];
            let ext_max = w.get(m::CPUID_EXT_MAX);
            Record::Machine(Machine {
                cr0: w.get(m::CR0),
                cr3: w.get(m::CR3),
                cr4: w.get(m::CR4),
                eflags: w.get(m::EFLAGS),
                cpuid0: four(m::CPUID0),
                cpuid1: four(m::CPUID1),
                cpuid_ext_max: ext_max,
                cpuid_ext1_edx: if (0x8000_0001..0x8001_0000).contains(&ext_max) {
                    w.get(m::CPUID_EXT1_EDX)
                } else {
                    0
                },
                rdpmc: match guarded(m::RDPMC_FAULT)? {
                    None => Ok(pair(m::RDPMC_LO)),
                    Some(v) => Err(v),
                },
                apic_base: match guarded(m::APIC_BASE_FAULT)? {
                    None => Ok(pair(m::APIC_BASE_LO)),
                    Some(v) => Err(v),
                },
                apic_version: match guarded(m::APIC_FAULT)? {
                    None => Ok(w.get(m::APIC_VERSION)),
                    Some(v) => Err(v),
                },
                pm_timer: match w.get(m::PM_TIMER_PORT) {
                    0 => None,
                    port => Some(PmTimer {
                        port: u16::try_from(port).map_err(|_| bad("PM timer port", port))?,
                        bits: if w.get(m::PM_TIMER_FLAGS) & 1 != 0 {
                            32
                        } else {
                            24
                        },
                    }),
                },
                cpuid_hv: four(m::CPUID_HV),
                cpuid_hv1_eax: if (HV_LEAF + 1..HV_LEAF + 0x100).contains(&w.get(m::CPUID_HV)) {
                    w.get(m::CPUID_HV1_EAX)
                } else {
                    0
                },
            })
        }
        tag::VECTOR_RESULT => {
            use vector_result as v;
            let site = w.get(v::SITE);
            if site > 1 {
                return Err(bad("call-site flag", site));
            }
            let dt = |limit: usize, base: usize| DtReg {
                limit: (w.get(limit) & 0xFFFF) as u16,
                base: w.get(base),
            };
            let mut extra = [0u32; v::EXTRA_WORDS];
            for (k, e) in extra.iter_mut().enumerate() {
                *e = w.get(v::EXTRA + k);
            }
            let mut dr = [0u32; 6];
            for (k, e) in dr.iter_mut().enumerate() {
                *e = w.get(v::DR + k);
            }
            Record::VectorResult(Box::new(VectorResult {
                step: step_at(v::STEP)?,
                regs: Regs::from_words(&w, v::REGS),
                cr0: w.get(v::CR0),
                cr2: w.get(v::CR2),
                cr3: w.get(v::CR3),
                cr4: w.get(v::CR4),
                gdtr: dt(v::GDTR_LIMIT, v::GDTR_BASE),
                idtr: dt(v::IDTR_LIMIT, v::IDTR_BASE),
                ldtr: (w.get(v::LDTR) & 0xFFFF) as u16,
                tr: (w.get(v::TR) & 0xFFFF) as u16,
                dr,
                returned_to_site: site == 1,
                ticks: w.get(v::TICKS),
                site_eip: w.get(v::SITE_EIP),
                extra,
            }))
        }
        tag::STRESS => {
            use stress as s;
            let v = w.get(s::VIOLATION);
            let violation = if v == 0 {
                None
            } else {
                let item = (v >> 8).checked_sub(1).ok_or_else(|| bad("violation", v))?;
                let what = Violation::from_code(v & 0xFF).ok_or_else(|| bad("violation", v))?;
                Some((item, what))
            };
            Record::Stress(Box::new(StressResult {
                step: step_at(s::STEP)?,
                loops: w.get(s::LOOPS),
                handler_runs: w.get(s::HANDLER_RUNS),
                violation,
                cycles: u64::from(w.get(s::CYCLES_LO)) | u64::from(w.get(s::CYCLES_HI)) << 32,
                total: w.get(s::TOTAL),
                ap_loops: w.get(s::AP_LOOPS),
                counts: (0..s::COUNT_WORDS).map(|k| w.get(s::COUNTS + k)).collect(),
            }))
        }
        tag::SAMPLES => {
            use samples as sa;
            let list = |at: usize, n: usize| -> Vec<u32> {
                (0..n.min(sa::SLOTS)).map(|k| w.get(at + k)).collect()
            };
            let pair = |lo: usize| u64::from(w.get(lo)) | u64::from(w.get(lo + 1)) << 32;
            Record::Samples(Box::new(Samples {
                step: step_at(sa::STEP)?,
                tsc_span: pair(sa::TSC_END).wrapping_sub(pair(sa::TSC_START)),
                pm_ticks: w.get(sa::PM_TICKS),
                alarm: list(sa::ALARM_TSC, w.get(sa::ALARMS) as usize),
                reference: list(sa::REFERENCE_TSC, w.get(sa::REFERENCES) as usize),
            }))
        }
        tag::END => {
            let code = w.get(end::STATUS);
            Record::End(EndStatus::from_code(code).ok_or_else(|| bad("status", code))?)
        }
        _ => return Err(ProtocolError::UnknownTag { offset, tag }),
    };
    Ok((rec, offset + RECORD_HEADER_LEN + len))
}

/// Decodes the `EXCEPTION` / `TRAP` payload.
fn exception_at(
    w: &Words<'_>,
    bad: &dyn Fn(&'static str, u32) -> ProtocolError,
) -> Result<Exception, ProtocolError> {
    let step_at = |i: usize| StepId::from_code(w.get(i)).ok_or_else(|| bad("step id", w.get(i)));
    use exception as x;
    let vector = u8::try_from(w.get(x::VECTOR)).map_err(|_| bad("vector", w.get(x::VECTOR)))?;
    let cs = (w.get(x::CS) & 0xFFFF) as u16;
    let handler_ss = (w.get(x::SS) & 0xFFFF) as u16;
    // Same privilege: the frame is EIP, CS, EFLAGS (+ error code, vector) above the
    // handler's ESP. After a privilege change the CPU pushed ESP and SS too.
    let same_cpl = cs & 3 == handler_ss & 3;
    let (esp, ss) = if same_cpl {
        (w.get(x::HANDLER_ESP).wrapping_add(20), handler_ss)
    } else {
        (w.get(x::FRAME_ESP), (w.get(x::FRAME_SS) & 0xFFFF) as u16)
    };
    let seg = |i| (w.get(i) & 0xFFFF) as u16;
    Ok(Exception {
        step: step_at(x::STEP)?,
        vector,
        error_code: w.get(x::ERROR_CODE),
        eip: w.get(x::EIP),
        cs,
        eflags: w.get(x::EFLAGS),
        handler_eflags: w.get(x::HANDLER_EFLAGS),
        cr2: w.get(x::CR2),
        esp,
        ss,
        regs: Regs {
            eax: w.get(x::EAX),
            ebx: w.get(x::EBX),
            ecx: w.get(x::ECX),
            edx: w.get(x::EDX),
            esi: w.get(x::ESI),
            edi: w.get(x::EDI),
            ebp: w.get(x::EBP),
            esp,
            eflags: w.get(x::EFLAGS),
            cs,
            ss,
            ds: seg(x::DS),
            es: seg(x::ES),
            fs: seg(x::FS),
            gs: seg(x::GS),
        },
    })
}

/// Encodes one record (tests and tools; the guest writes the same bytes).
pub fn encode_record(tag: u16, words: &[u32]) -> Vec<u8> {
    let len = u16::try_from(words.len() * 4).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + words.len() * 4);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::HELLO, &[0xC000_0000, 1, 7, 1, 3]));
        s.extend(encode_record(tag::STEP, &[StepId::Probe.code()]));
        let mut cand = vec![0u32; candidate::WORDS];
        cand[candidate::BASE] = 0xC_0000;
        cand[candidate::OUTCOME] = Outcome::NonGplLicense.code();
        cand[candidate::FLAGS] = candidate::FLAG_LICENSE_READ;
        cand[candidate::LICENSE] = u32::from_le_bytes(*b"Prop");
        s.extend(encode_record(tag::CANDIDATE, &cand));
        s.extend(encode_record(tag::PROBE_DONE, &[0, 0, 0, 1]));
        s.extend(encode_record(tag::END, &[EndStatus::NoRom.code()]));
        s
    }

    #[test]
    fn round_trip() {
        let s = decode(&sample()).unwrap();
        assert_eq!(s.version, VERSION);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.end(), Some(EndStatus::NoRom));
        assert_eq!(s.last_step(), StepId::Probe);
        let Record::Candidate(c) = &s.records[2].1 else {
            panic!("{:?}", s.records[2]);
        };
        assert_eq!(c.outcome, Outcome::NonGplLicense);
        assert_eq!(c.license.as_deref(), Some(&b"Prop"[..]));
        assert!(c.license_terminated);
        assert_eq!(s.records[2].0, 8 + 24 + 8);
    }

    #[test]
    fn every_truncation_is_an_error_naming_an_offset() {
        let full = sample();
        // Cuts at record boundaries decode fine (without END); all others must fail.
        let boundaries: Vec<usize> = decode(&full)
            .unwrap()
            .records
            .iter()
            .map(|(at, _)| *at)
            .collect();
        assert_eq!(boundaries, [8, 32, 40, 124, 144]);
        for cut in 0..full.len() {
            match decode(&full[..cut]) {
                Ok(s) => {
                    assert!(boundaries.contains(&cut), "cut {cut}");
                    assert!(s.end().is_none());
                }
                Err(ProtocolError::Truncated { offset, .. }) => assert!(offset < cut),
                Err(ProtocolError::Empty) => assert_eq!(cut, 0),
                Err(ProtocolError::ShortHeader { len }) => assert_eq!(len, cut),
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert!(matches!(
            decode(b"MZ\x90\0\x03\0\0\0"),
            Err(ProtocolError::BadMagic { .. })
        ));
        let mut v = stream_header().to_vec();
        v[4] = 9;
        assert_eq!(decode(&v), Err(ProtocolError::Version { found: 9 }));
        let mut s = stream_header().to_vec();
        s.extend(encode_record(0x77, &[1]));
        assert_eq!(
            decode(&s),
            Err(ProtocolError::UnknownTag {
                offset: 8,
                tag: 0x77
            })
        );
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::END, &[0, 0]));
        assert!(matches!(
            decode(&s),
            Err(ProtocolError::BadLength { offset: 8, .. })
        ));
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::END, &[9]));
        assert!(matches!(
            decode(&s),
            Err(ProtocolError::BadValue {
                field: "status",
                ..
            })
        ));
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::STEP, &[0x0900_0000]));
        assert!(matches!(
            decode(&s),
            Err(ProtocolError::BadValue {
                field: "step id",
                ..
            })
        ));
        let mut s = sample();
        s.extend_from_slice(b"xx");
        assert_eq!(
            decode(&s),
            Err(ProtocolError::AfterEnd {
                offset: sample().len(),
                len: 2
            })
        );
        // Pseudo-random garbage after a valid header: never a panic.
        let mut x = 0x1234_5678u32;
        for n in 0..2000 {
            let mut s = stream_header().to_vec();
            for _ in 0..(n % 97) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                s.push(x as u8);
            }
            let _ = decode_partial(&s);
        }
    }

    #[test]
    fn partial_keeps_the_good_prefix() {
        let mut s = sample();
        s.truncate(s.len() - 3);
        let (stream, err) = decode_partial(&s);
        assert_eq!(stream.records.len(), 4);
        assert!(matches!(
            err,
            Some(ProtocolError::Truncated { what: "END", .. })
        ));
    }

    #[test]
    fn exception_esp_depends_on_privilege() {
        let mut w = vec![0u32; exception::WORDS];
        w[exception::STEP] = StepId::Init.code();
        w[exception::VECTOR] = 6;
        w[exception::CS] = 0x60;
        w[exception::SS] = 0x68;
        w[exception::HANDLER_ESP] = 0x1000;
        w[exception::FRAME_ESP] = 0x5555;
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::EXCEPTION, &w));
        let d = decode(&s).unwrap();
        let Record::Exception(e) = d.records[0].1 else {
            panic!()
        };
        assert_eq!((e.esp, e.ss, e.mnemonic()), (0x1014, 0x68, "#UD"));
        w[exception::CS] = 0x61;
        w[exception::FRAME_SS] = 0x69;
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::EXCEPTION, &w));
        let Record::Exception(e) = decode(&s).unwrap().records[0].1 else {
            panic!()
        };
        assert_eq!((e.esp, e.ss), (0x5555, 0x69));
    }

    #[test]
    fn step_codes_round_trip() {
        for s in [
            StepId::Boot,
            StepId::Probe,
            StepId::Init,
            StepId::GetReloc(0),
            StepId::GetReloc(80),
            StepId::Vector(0),
            StepId::Vector(123),
            StepId::Machine,
            StepId::Stress(0),
            StepId::Stress(7),
        ] {
            assert_eq!(StepId::from_code(s.code()), Some(s));
        }
        assert_eq!(StepId::Stress(2).code(), 0x0600_0002);
        assert_eq!(StepId::Stress(2).to_string(), "stress 2");
        assert_eq!(StepId::GetReloc(17).to_string(), "GetRelocationInfo(17)");
        assert_eq!(StepId::Vector(5).code(), 0x0400_0005);
        assert_eq!(StepId::Machine.code(), 0x0500_0000);
        assert_eq!(StepId::Vector(5).to_string(), "vector 5");
        assert_eq!(StepId::from_code(0x0500_0001), None);
        assert_eq!(StepId::from_code(0x0700_0000), None);
    }

    fn one(tag: u16, words: &[u32]) -> Result<Record, ProtocolError> {
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag, words));
        decode(&s).map(|d| d.records[0].1.clone())
    }

    #[test]
    fn payload_lengths_of_the_new_records() {
        assert_eq!(payload_len(tag::MACHINE), Some(29 * 4));
        assert_eq!(payload_len(tag::VECTOR_RESULT), Some(67 * 4));
        assert_eq!(payload_len(tag::TRAP), payload_len(tag::EXCEPTION));
        assert_eq!(payload_len(tag::EXCEPTION), Some(23 * 4));
        assert_eq!(vector_result::SITE_EIP, 34);
        assert_eq!(vector_result::EXTRA, 35);
        assert_eq!(tag_name(tag::TRAP), "TRAP");
        assert!(matches!(
            one(tag::VECTOR_RESULT, &[0; 66]),
            Err(ProtocolError::BadLength {
                name: "VECTOR_RESULT",
                len: 264,
                expected: 268,
                ..
            })
        ));
    }

    #[test]
    fn machine_round_trip() {
        use machine as m;
        let mut w = vec![0u32; m::WORDS];
        w[m::CR0] = 0x8001_0011;
        w[m::CR3] = 0x10_1000;
        w[m::CR4] = 0x10;
        w[m::CPUID0..m::CPUID0 + 4].copy_from_slice(&[4, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]);
        w[m::CPUID1 + 3] = 0x0781_abfd;
        w[m::CPUID_EXT_MAX] = 0x8000_0004;
        w[m::CPUID_EXT1_EDX] = 0x10_0000;
        w[m::RDPMC_FAULT] = 6;
        w[m::APIC_BASE_FAULT] = NO_FAULT;
        w[m::APIC_BASE_LO] = 0xFEE0_0900;
        w[m::APIC_FAULT] = NO_FAULT;
        w[m::APIC_VERSION] = 0x5_0014;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert_eq!((mc.cr0, mc.cr3, mc.cr4), (0x8001_0011, 0x10_1000, 0x10));
        assert_eq!(mc.rdpmc, Err(6));
        assert_eq!(mc.apic_base, Ok(0xFEE0_0900));
        assert_eq!(mc.apic_version, Ok(0x5_0014));
        assert_eq!(mc.cpuid_ext1_edx, 0x10_0000);
        assert_eq!(mc.pm_timer, None);
        assert!(mc.has_edx1(13) && mc.has_edx1(11) && !mc.has_edx1(31));
        assert!(mc.has_apic());
        // Nothing answering at the APIC reads all ones.
        w[m::APIC_VERSION] = u32::MAX;
        // An extended maximum below 0x80000001 makes the 0x80000001 word meaningless.
        w[m::CPUID_EXT_MAX] = 0x8000_0000;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert!(!mc.has_apic());
        assert_eq!(mc.cpuid_ext1_edx, 0);
        // The PM timer the FADT names: 24 bits unless TMR_VAL_EXT; a port beyond 16 bits is
        // garbage.
        w[m::PM_TIMER_PORT] = 0x608;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        let pm = mc.pm_timer.unwrap();
        assert_eq!((pm.port, pm.bits, pm.mask()), (0x608, 24, 0xFF_FFFF));
        assert_eq!(pm.elapsed(0xFF_FFF0, 0x10), 0x20);
        w[m::PM_TIMER_FLAGS] = 1;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert_eq!(mc.pm_timer.unwrap().elapsed(0xFFFF_FFF0, 0x10), 0x20);
        w[m::PM_TIMER_PORT] = 0x1_0000;
        assert!(matches!(
            one(tag::MACHINE, &w),
            Err(ProtocolError::BadValue {
                field: "PM timer port",
                ..
            })
        ));
        w[m::PM_TIMER_PORT] = 0;
        // No hypervisor: leaf 0x40000000 is whatever the CPU answers out of range.
        assert_eq!(mc.cpuid_hv1_eax, 0);
        assert!(!mc.kvmclock());
        assert_eq!(
            mc.no_kvmclock().unwrap(),
            r#"CPUID 0x40000000 does not say KVM (signature "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")"#
        );
        // KVM with kvmclock (KVM_FEATURE_CLOCKSOURCE2); without the bit; without the leaf.
        w[m::CPUID_HV..m::CPUID_HV + 4].copy_from_slice(&[
            0x4000_0001,
            KVM_SIGNATURE[0],
            KVM_SIGNATURE[1],
            KVM_SIGNATURE[2],
        ]);
        w[m::CPUID_HV1_EAX] = 0x0100_00fb;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert_eq!(mc.hypervisor_signature(), r"KVMKVMKVM\x00\x00\x00");
        assert!(mc.kvmclock() && mc.no_kvmclock().is_none());
        w[m::CPUID_HV1_EAX] = 0x0100_00f3;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert_eq!(
            mc.no_kvmclock().unwrap(),
            "KVM offers no kvmclock (CPUID 0x40000001 EAX 0x10000f3: bit 3, \
             KVM_FEATURE_CLOCKSOURCE2, clear)"
        );
        w[m::CPUID_HV1_EAX] = 0x0100_00fb;
        w[m::CPUID_HV] = 0x4000_0000;
        let Record::Machine(mc) = one(tag::MACHINE, &w).unwrap() else {
            panic!()
        };
        assert_eq!(mc.cpuid_hv1_eax, 0, "leaf 0x40000001 is not there");
        assert_eq!(
            mc.no_kvmclock().unwrap(),
            "KVM's CPUID 0x40000000 names no leaf 0x40000001 (highest 0x40000000)"
        );
        // A fault word that is neither NO_FAULT nor a vector.
        w[m::RDPMC_FAULT] = 0x1234;
        assert!(matches!(
            one(tag::MACHINE, &w),
            Err(ProtocolError::BadValue {
                field: "fault vector",
                value: 0x1234,
                ..
            })
        ));
    }

    #[test]
    fn vector_result_round_trip() {
        use vector_result as v;
        let mut w = vec![0u32; v::WORDS];
        w[v::STEP] = StepId::Vector(7).code();
        w[v::REGS + snap::EAX] = 0x10_1000;
        w[v::REGS + snap::EFLAGS] = 0x24_00C3;
        w[v::REGS + snap::CS] = 0xDEAD_0060;
        w[v::CR0] = 0x8001_0019;
        w[v::CR2] = 0xCAFE_0000;
        w[v::CR3] = 0x10_1000;
        w[v::CR4] = 0x14;
        w[v::GDTR_LIMIT] = 0xFF;
        w[v::GDTR_BASE] = 0xC010_2000;
        w[v::IDTR_LIMIT] = 0x1_07FF;
        w[v::IDTR_BASE] = 0xC010_3800;
        w[v::LDTR] = 0x88;
        w[v::TR] = 0x80;
        w[v::DR..v::DR + 6].copy_from_slice(&[1, 2, 3, 4, 0xFFFF_0FF0, 0x400]);
        w[v::SITE] = 1;
        w[v::TICKS] = 3;
        w[v::EXTRA] = 0x1111;
        w[v::EXTRA + 1] = 0x2222;
        w[v::EXTRA + 31] = 0x3333;
        let Record::VectorResult(r) = one(tag::VECTOR_RESULT, &w).unwrap() else {
            panic!()
        };
        assert_eq!(r.step, StepId::Vector(7));
        assert_eq!(
            (r.regs.eax, r.regs.eflags, r.regs.cs),
            (0x10_1000, 0x24_00C3, 0x60)
        );
        assert_eq!(
            (r.cr0, r.cr2, r.cr3, r.cr4),
            (0x8001_0019, 0xCAFE_0000, 0x10_1000, 0x14)
        );
        assert_eq!(
            r.gdtr,
            DtReg {
                limit: 0xFF,
                base: 0xC010_2000
            }
        );
        assert_eq!(
            r.idtr,
            DtReg {
                limit: 0x7FF,
                base: 0xC010_3800
            }
        );
        assert_eq!((r.ldtr, r.tr), (0x88, 0x80));
        assert_eq!(
            (r.dr(0), r.dr(3), r.dr(6), r.dr(7), r.dr(4)),
            (Some(1), Some(4), Some(0xFFFF_0FF0), Some(0x400), None)
        );
        assert!(r.returned_to_site);
        assert_eq!(r.ticks, 3);
        assert_eq!((r.x(0), r.x(31), r.x(32)), (0x1111, 0x3333, 0));
        assert_eq!(r.x64(0), 0x2222_0000_1111);
        w[v::SITE] = 2;
        assert!(matches!(
            one(tag::VECTOR_RESULT, &w),
            Err(ProtocolError::BadValue {
                field: "call-site flag",
                ..
            })
        ));
        w[v::SITE] = 0;
        w[v::STEP] = 0x0700_0000;
        assert!(matches!(
            one(tag::VECTOR_RESULT, &w),
            Err(ProtocolError::BadValue {
                field: "step id",
                ..
            })
        ));
    }

    #[test]
    fn trap_decodes_like_an_exception_and_does_not_end_the_stream() {
        let mut w = vec![0u32; exception::WORDS];
        w[exception::STEP] = StepId::Vector(2).code();
        w[exception::VECTOR] = 0x80;
        w[exception::EIP] = 0x0400_0002;
        w[exception::CS] = 0x73;
        w[exception::SS] = 0x68;
        w[exception::EFLAGS] = 0x203;
        w[exception::FRAME_ESP] = 0x0400_5FF0;
        w[exception::FRAME_SS] = 0x7B;
        w[exception::EBX] = canary(Reg::Ebx);
        let mut s = stream_header().to_vec();
        s.extend(encode_record(tag::TRAP, &w));
        s.extend(encode_record(tag::END, &[EndStatus::Complete.code()]));
        let d = decode(&s).unwrap();
        let Record::Trap(t) = d.records[0].1 else {
            panic!()
        };
        assert_eq!(
            (t.vector, t.cs, t.eip, t.esp, t.ss),
            (0x80, 0x73, 0x0400_0002, 0x0400_5FF0, 0x7B)
        );
        assert_eq!(t.regs.ebx, canary(Reg::Ebx));
        assert_eq!(t.mnemonic(), "INT");
        assert!(d.exception().is_none());
        assert_eq!(d.end(), Some(EndStatus::Complete));
        w[exception::VECTOR] = 0x100;
        assert!(matches!(
            one(tag::TRAP, &w),
            Err(ProtocolError::BadValue {
                field: "vector",
                ..
            })
        ));
    }

    #[test]
    fn stress_round_trip_and_violations() {
        use stress as st;
        assert_eq!(payload_len(tag::STRESS), Some((8 + 74) * 4));
        let mut w = vec![0u32; st::WORDS];
        w[st::STEP] = StepId::Stress(1).code();
        w[st::LOOPS] = 5000;
        w[st::HANDLER_RUNS] = 1234;
        w[st::CYCLES_LO] = 7;
        w[st::CYCLES_HI] = 1;
        w[st::TOTAL] = 99;
        w[st::COUNTS + 19] = 5000;
        w[st::COUNTS + 73] = 1;
        let Record::Stress(r) = one(tag::STRESS, &w).unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                r.step,
                r.loops,
                r.handler_runs,
                r.violation,
                r.cycles,
                r.total
            ),
            (StepId::Stress(1), 5000, 1234, None, (1 << 32) + 7, 99)
        );
        assert_eq!((r.counts.len(), r.counts[19], r.counts[73]), (74, 5000, 1));
        for v in [
            Violation::Register(Reg::Ebx),
            Violation::Register(Reg::Ebp),
            Violation::Esp,
            Violation::InterruptsOff,
            Violation::Result,
            Violation::Direction,
            Violation::NotCallRel,
            Violation::ApNotStarted,
            Violation::ApNotDone,
        ] {
            assert_eq!(Violation::from_code(v.code()), Some(v));
            w[st::VIOLATION] = 3 << 8 | v.code();
            let Record::Stress(r) = one(tag::STRESS, &w).unwrap() else {
                panic!()
            };
            assert_eq!(r.violation, Some((2, v)));
        }
        assert_eq!(Violation::Register(Reg::Eax).code(), 1);
        for bad in [0x0000_0001, 0x0000_0100, 0x0000_020F, 0x0000_0200] {
            w[st::VIOLATION] = bad;
            assert!(
                matches!(
                    one(tag::STRESS, &w),
                    Err(ProtocolError::BadValue {
                        field: "violation",
                        ..
                    })
                ),
                "{bad:#x}"
            );
        }
    }
}
