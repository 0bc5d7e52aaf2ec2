//! The conformance suite: run any VMI ROM for real and check every call.
//!
//! ```no_run
//! use vmi_harness::suite::{run_suite, SuiteOptions};
//!
//! let report = run_suite("vmi.rom".as_ref(), &SuiteOptions::default())?;
//! for c in &report.calls {
//!     println!("{:2} {:<20} {:<9} {:?}: {}", c.call, c.name, c.reloc, c.verdict, c.detail);
//! }
//! if !report.passed() {
//!     eprintln!("activation: {:?}", report.activation.problems);
//! }
//! # Ok::<(), vmi_harness::HarnessError>(())
//! ```
//!
//! # How it runs
//!
//! 1. **Activation** (one guest run): the guest reports what the CPU is natively
//!    (`MACHINE`), probes for the ROM like Linux, calls Init, and asks GetRelocationInfo about
//!    calls 0–73 and a few numbers that are not calls. Problems here (no ROM found — e.g.
//!    SeaBIOS dropped it for a bad checksum —, Init failing or clobbering registers,
//!    GetRelocationInfo clobbering registers or answering anything but NONE for an unknown
//!    number) are top-level failures ([`Activation::problems`]).
//! 2. **Relocation answers** are judged against vmi-abi.md §3.5 without executing anything: a
//!    type not allowed for the call (JUMP_REL for anything but IRET/SYSEXIT, NOP for a
//!    value-returning call, NONE for a mandatory one, a type ≥ 4), a target outside the ROM,
//!    66 without 67–70 as CALL_REL → [`Verdict::Fail`]; NONE → [`Verdict::NotImplemented`];
//!    an allowed NOP → [`Verdict::Pass`] ("NOP: nothing to execute").
//! 3. **Vectors**: every CALL_REL/JUMP_REL call gets one or more call vectors built on the
//!    host from vmi-abi (table below): argument registers and stack words per the call's
//!    `args`, a canary in every other GPR, a known EFLAGS pattern (CF, ZF, SF, AC, ID set;
//!    DF = 0), the call through the relocation target; then the guest captures all GPRs,
//!    EFLAGS, CR0/2/3/4, GDTR, IDTR, LDTR, TR, DR0–3/6/7, the segment registers and whatever
//!    memory, MSRs or native readings the vector asks for, streams a `VECTOR_RESULT`, and
//!    restores its own state (see [`crate::guest::vector`]). All vectors go into one guest
//!    run; a vector that kills the guest (exception, hang, reset, triple fault) fails its call
//!    with the reason, and the remaining vectors continue in a fresh guest. Every run also
//!    re-asks GetRelocationInfo: an answer that changes between runs fails the call.
//! 4. **Scenarios** for calls that do not simply return: IRET to ring 0 (IF = 1 and IF = 0 in
//!    the frame) and to a ring-3 stub, SYSEXIT to a ring-3 stub, Halt woken by the PIT,
//!    InvalPage/FlushTLB against a stale TLB entry, and Shutdown / Reboot in runs of their own
//!    (judged by how the run ends), in parallel with the vector runs.
//! 5. **Judging** on the host: the register class (C: EBX/ESI/EDI/EBP/ESP and the segments
//!    preserved, system flags — TF, IF, IOPL, NT, AC, ID — unchanged; X: every GPR but the
//!    outputs, only the arithmetic flags; DF = 0 for all), the outputs and the architectural
//!    effect of each call:
//! 6. **Re-entrancy** (one more guest run, QEMU engines; [`SuiteReport::stress`]): the
//!    hot-path calls that passed so far (interrupt flag, CR reads, RDTSC, CPUID, GetDR) in a
//!    loop with every result and kept register checked, while IRQ0 fires at ~20 kHz and the
//!    timer handler calls RDTSC, GetCR3 and DisableInterrupts through the ROM — a kernel's
//!    interrupt path re-entering the ROM in the middle of a call — and a second CPU (`-smp 2`)
//!    calls RDTSC, GetCR3, GetCR0, GetInterruptMask and DisableInterrupts at the same time (a
//!    second CPU that never finishes fails the run). A violation fails the call
//!    it names ("… under an IRQ0 storm") and the suite (see [`StressSummary`] and
//!    [`crate::guest::stress`]).
//!
//! | Call | Vectors: what is checked besides the class |
//! |---|---|
//! | 0 CPUID | leaves 0, 1, 0x80000000, 0x80000001: EAX–EDX equal a native `cpuid` |
//! | 1 WRMSR, 2 RDMSR | SYSENTER_ESP / SYSENTER_EIP round trip against native `rdmsr`/`wrmsr` |
//! | 3 SetGDT, 5 SetIDT | load a copy of the table: GDTR/IDTR = the copy |
//! | 4 SetLDT | 0x88 (a descriptor the test wrote to entry 17) and 0: LDTR |
//! | 6 SetTR | a second available TSS at 0xF8, and 0x80 after clearing its busy bit: TR (busy bit noted) |
//! | 7 GetGDT, 9 GetIDT | the 6 bytes equal `sgdt`/`sidt`; bytes 6–7 of the buffer untouched |
//! | 8 GetLDT, 10 GetTR | EAX = LDTR (0x88, 0) / TR (0x80, 0xF8) |
//! | 11–13 Write{GDT,LDT,IDT}Entry | two descriptors into a scratch table: the 8 bytes at table+8·index, no other entry changed, the live table unchanged |
//! | 14 UpdateKernelStack | (0x68, esp0): the TSS unchanged |
//! | 15 SetCR0 | CR0\|TS, CR0&~TS, CR0\|AM: CR0 = the value |
//! | 16 SetCR2, 17 SetCR3 | CR2 two values; CR3 = a copy of the page directory and back |
//! | 18 SetCR4 | CR4\|TSD, CR4\|PGE, CR4&~PGE (as the CPU supports), CR4 |
//! | 19–22 GetCRn | EAX = the register, also after changing it (TS, 0xcafe0000, the copy, TSD) |
//! | 23 WBINVD, 65 IODelay | return with the class kept |
//! | 24 SetDR, 25 GetDR | DR0–3 and DR7 (and DR6 for GetDR) round trip |
//! | 26 RDPMC | only where a native `rdpmc` works (TCG: #UD → skipped) |
//! | 27 RDTSC | between two native `rdtsc`, monotonic across calls |
//! | 28 CLTS | CR0.TS cleared, nothing else |
//! | 29–32 interrupt flag | IF after Enable/Disable/SetInterruptMask(0x200, 0, 0xfffffdff, …) and EAX & 0x200 of GetInterruptMask; every GPR kept (EAX too); with a pending IRQ0, Enable/SetInterruptMask deliver it (QEMU) |
//! | 33 IRET, 34 SYSEXIT, 35 Halt, 36 Reboot, 37 Shutdown, 46 InvalPage, 47 FlushTLB | scenarios (above and in the scenarios module) |
//! | 38 SetPxE, 39 SetPxELong | the 32/64-bit entry in memory (guards around the 64-bit one intact); with paging the new mapping is read through |
//! | 40, 41 UpdatePxE(Long), 44 AllocatePage, 45 ReleasePage, 48 SetLinearMapping, 62 SetInitialAPState, 73 SetLazyMode | Linux-like arguments: the entry / page / structure / window PTEs unchanged |
//! | 49–51, 55–57 port I/O | Doc v2 convention: INB(0x21) reads the PIC mask 0xFF; the others return with the class kept (string variants skipped: convention unconfirmed) |
//! | 61 SetIOPLMask | 0x3000, 0x1000, 0 from IOPL 3: EFLAGS.IOPL |
//! | 63 APICWrite, 64 APICRead | TPR written and read back directly; version register equals a direct read |
//! | 66–71 timer | frequency sane (0 < f < 1 THz, f/1000 fits 32 bits), REAL monotonic, STOLEN 0 or ≤ REAL, SetAlarm (far future) / CancelAlarm return, wallclock between 2000 and 2200 |
//!
//! # Scenarios
//!
//! | Call | Scenario | Passes when |
//! |---|---|---|
//! | IRET (33) | frame `EIP = resume point, CS 0x60, EFLAGS image with IF=1` (and one with IF=0) at `[esp+4]` (CALL_REL) or `[esp]` (JUMP_REL), current IF the opposite | execution continues at the frame's EIP with ESP just above the frame, EFLAGS = the image (IF included), every GPR and segment intact |
//! | IRET (33) | frame to the ring-3 stub: `EIP, CS 0x73, EFLAGS (IF=1), ESP, SS 0x7B` | the stub's `int 0x80` arrives from CS 0x73 at the stub's EIP with SS 0x7B, the frame's ESP, IF = 1, every GPR intact |
//! | IRET (33) | 31 frames the CPU faults on or must check fully (the `iret_faults` cases: every rule of IRET's checks — null, beyond-limit, LDT-without-LDT, wrong-type, wrong-DPL, not-present CS and SS, EIP beyond the CS limit — to ring 3 and to ring 0, the order of the rules, an interrupt and a trap gate, and two valid frames from an LDT and a conforming segment), each run first through a native `iret` at the site (the reference), then through the ROM, reached by a 5-byte `call rel32` like Linux's patched site | the ROM raises what the native `iret` raised (where the engine departs from the SDM, what the SDM says; noted): same vector and error code, EIP = the ROM's call site, the site's CS and EFLAGS, the interrupted ESP at the frame, the handler entered with the gate's EFLAGS, every GPR and data segment intact; a valid frame reaches its ring-3 code |
//! | SYSEXIT (34) | SYSENTER_CS = 0x60 (like Linux), EDX = stub, ECX = user stack, IF = 0 | the stub runs at CPL 3 (CS 0x73, SS 0x7B), ESP = ECX, IF = 1, other flags as they were, EAX/EBX/ESI/EDI/EBP intact |
//! | Halt (35) | PIT IRQ0 at 1 kHz unmasked, IF = 0 | Halt returns after the timer handler ran, with IF = 1 (QEMU only: the kvm engine has no interrupt controller) |
//! | InvalPage (46), FlushTLB (47) | a window page mapped to frame A and read (TLB filled), then its PTE changed to frame B *without* a flush | after the call the page reads frame B. Whether the stale frame-A read could be demonstrated before the call is reported (TCG keeps stale entries like hardware). FlushTLB(3) uses a global page with CR4.PGE |
//! | Shutdown (37) | own run; IF = 1 and the timer running, so a bare `hlt` would wake up | QEMU: nothing at all is written after the call for the settle time (no record, no exception, no reset) — judged by silence, QEMU keeps running halted; kvm engine: the vCPU halts |
//! | Reboot (36) | own run, QEMU with `-no-reboot` | QEMU exits by itself (the reset) with no record after the call; kvm engine: the vCPU shuts down (triple fault = reset) |
//!
//! # Engines
//!
//! On QEMU (TCG or KVM) everything runs, with paging. On the kvm engine (the built-in VMM)
//! there is no BIOS image, no interrupt controller and no local APIC, and on kvm-pvm no
//! paging: the guest runs flat, the page-table checks are [`Verdict::Skipped`] with "needs
//! paging; this KVM cannot page", Halt and the APIC calls are skipped, the interrupt calls
//! lose their pending-IRQ vectors, and whatever KVM cannot emulate (kvm-pvm: a protected-mode
//! `iret`, the reset the native Reboot ends in) is skipped with KVM's own reason rather than
//! failed; a #UD at exactly the ring-3 stub's `int 0x80` (kvm-pvm cannot run it) still lets
//! the ring-3 state be checked from that frame.
//!
//! Before every kvm guest run the runner does what SeaBIOS does for an option ROM
//! ([`SuiteOptions::run_init16`], on by default; see [`crate::kvm`]): it far-calls the ROM's
//! 16-bit init in real mode with the image writable and a BIOS data area saying 639 KiB of
//! base memory, then maps the ROM read-only — so a ROM that takes private RAM at POST has it,
//! as under QEMU, and an activation note says what the init did. The PIT's counters, port
//! 0x61 and the CMOS clock can be read there (a ROM's Init may measure the TSC with them), but
//! nothing raises an interrupt. With `run_init16` off nothing runs the init (what a hypervisor
//! that maps the ROM itself presents): the calls that need private RAM answer NONE.
//! [`SuiteReport::bios_init`] says which.
//!
//! # VM exits (kvm engine)
//!
//! The kvm engine counts every exit to user space by kind (port I/O per port and direction,
//! MMIO reads and writes, `hlt`, other) and by where the exiting instruction lay (inside the
//! ROM's slot or in the guest's own code), and gives each to the step of the guest's record
//! stream it happened in: a vector's exits are those from its `STEP` record to the next
//! step's. [`RunSummary::exits`] holds a run's ([`RunExits`]: all, the ROM's, the 16-bit
//! init's, and per call), [`CallVerdict::exits`] a call's over every run ([`CallExits`]:
//! vectors, invocations, the ROM's and the guest's exits) — so the native IODelay's one
//! `out 0x80` per invocation reads `calls[65].exits.rom.io_out["0x80"] == invocations`; a
//! call answered NOP (nothing to execute) gets all-zero counts with no vectors. Exits
//! KVM handles in the kernel (kvmclock's MSRs, CPUID, …) never reach user space and are not
//! counted. QEMU counts none: both fields are None (`null` in JSON) there.
//!
//! Every run is bounded: QEMU runs are killed after [`SuiteOptions::hang_timeout`] without
//! progress (the guest streams a record per step, so silence means a hang) and after
//! [`SuiteOptions::timeout_per_run`] in any case; KVM runs have the latter only.

mod iret_faults;
mod judge;
mod run;
mod scenarios;
mod stress;
mod vectors;

use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::{LAYOUT_VERSION, MemoryMap, Step, Vector, layout};
use crate::kvm::ExitCounts;
use crate::probe::{self, ProbeReport, RelocAnswer};
use crate::protocol::{EndStatus, Exception, Machine, Record, StepId, VectorResult};
use judge::{Findings, Judged, Seen};
use run::{Boot, End, Runner};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};
pub use stress::StressSummary;
use vectors::{Ctx, Flow, Plan, Spec};
use vmi_abi::calls::{CALLS, NUM_CALLS, RelocType};
use vmi_abi::{Call, call};

/// Numbers that are not VMI calls: GetRelocationInfo must answer NONE for them.
pub const UNKNOWN_CALLS: [u32; 4] = [74, 80, 0x100, 0xFF_FFFF];

/// How to run the suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteOptions {
    /// What runs the guest (default: QEMU with TCG).
    pub engine: Engine,
    /// Only these call numbers (None: all). Activation always runs.
    pub only: Option<Vec<u32>>,
    /// Linux's `PAGE_OFFSET`.
    pub page_offset: u32,
    /// Paging on or off (None: on where the engine can page).
    pub paging: Option<bool>,
    /// Hard time limit of one guest run.
    pub timeout_per_run: Duration,
    /// QEMU: a run that writes nothing for this long is hung and killed.
    pub hang_timeout: Duration,
    /// QEMU: how long the Shutdown run must stay silent after the call to pass.
    pub settle: Duration,
    /// KVM engine: where the ROM is mapped (None: [`crate::kvm::DEFAULT_ROM_BASE`]).
    pub rom_base: Option<u32>,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Further QEMU arguments (QEMU engines only).
    pub extra_args: Vec<OsString>,
    /// Run Shutdown and Reboot alongside the vector runs.
    pub parallel: bool,
    /// Keep every run's low RAM: the guest's own invocation counts per run
    /// ([`RunSummary::invoked`], [`SuiteReport::invocations`]) and conventional memory
    /// ([`RunSummary::low_ram`], where a trace ROM keeps its counters). QEMU runs get a
    /// shared-file memory backend; the KVM runner copies its memory.
    pub keep_ram: bool,
    /// Run the re-entrancy check ([`SuiteReport::stress`]): the hot-path calls in a loop
    /// while IRQ0 fires at ~20 kHz and the timer handler calls the ROM too (QEMU engines).
    pub stress: bool,
    /// KVM engine: run the ROM's 16-bit init before every guest run, as a BIOS does
    /// ([`crate::kvm::KvmConfig::run_init16`]; default on). Off: no private RAM, what a
    /// hypervisor that maps the ROM itself presents. Under QEMU SeaBIOS always runs it, so it
    /// must stay on there.
    pub run_init16: bool,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            engine: Engine::default(),
            only: None,
            page_offset: 0xC000_0000,
            paging: None,
            timeout_per_run: Duration::from_secs(20),
            hang_timeout: Duration::from_secs(2),
            settle: Duration::from_millis(500),
            rom_base: None,
            memory_mib: 64,
            extra_args: Vec::new(),
            parallel: true,
            keep_ram: false,
            stress: true,
            run_init16: true,
        }
    }
}

/// A call's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every check passed (or an allowed NOP: nothing to execute).
    Pass,
    /// A check failed, the relocation answer is not allowed, or the call killed the guest.
    Fail,
    /// GetRelocationInfo answered NONE.
    NotImplemented,
    /// Implemented, but not checked here (see the detail).
    Skipped,
}

/// The verdict for one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallVerdict {
    /// Call number.
    pub call: u8,
    /// Call name.
    pub name: &'static str,
    /// The relocation answer: `"CALL_REL"`, `"JUMP_REL"`, `"NOP"`, `"NONE"`, `"type 7"`, or
    /// `""` when it was never asked.
    pub reloc: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why: what was checked, or what failed (every failing vector, `"; "`-separated).
    pub detail: String,
    /// Vectors and scenario checks run.
    pub checks: usize,
    /// The relocation target (linear), for CALL_REL/JUMP_REL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eip: Option<u32>,
    /// KVM engine: the VM exits of the call's vectors over every run (None under QEMU, which
    /// counts no exits, and for a call none of whose vectors ran to its result). A call
    /// answered NOP costs nothing by construction (Linux turns its sites into NOPs): its
    /// counts are all zero, with no vectors.
    pub exits: Option<CallExits>,
}

/// The VM exits of one call's vectors (KVM engine), summed over the suite's runs. A vector's
/// exits are those from its `STEP` record to the next step's: the call itself, and the
/// guest's own setting up, capturing and restoring around it — told apart by where the
/// exiting instruction lay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallExits {
    /// Vectors counted (each ran to its `VECTOR_RESULT`).
    pub vectors: u32,
    /// How many of them invoked the ROM (the others ran a native reference instruction): the
    /// ROM's exits per invocation are `rom` ÷ this.
    pub invocations: u32,
    /// Exits raised by instructions inside the ROM's slot.
    pub rom: ExitCounts,
    /// Exits raised by the guest's own code around the calls.
    pub guest: ExitCounts,
}

/// The VM exits of one guest run (KVM engine).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunExits {
    /// Every exit after the ROM's 16-bit init, the record channel's own (port 0xE9, the exit
    /// port) included.
    pub all: ExitCounts,
    /// Those raised by instructions inside the ROM's slot (Init, GetRelocationInfo, the calls).
    pub rom: ExitCounts,
    /// The exits during the ROM's 16-bit init (None: the runner did not run it).
    pub init16: Option<ExitCounts>,
    /// Per call number: the exits of its vectors in this run.
    pub calls: BTreeMap<u8, CallExits>,
}

/// What activation found.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
pub struct Activation {
    /// Whether the ROM was found, Init succeeded and GetRelocationInfo behaved.
    pub ok: bool,
    /// Whether the probe accepted a ROM.
    pub found: bool,
    /// Physical base of the accepted ROM.
    pub base: Option<u32>,
    /// Linear base the guest used.
    pub linear: Option<u32>,
    /// Its size (size byte × 512).
    pub rom_len: Option<u32>,
    /// EAX returned by Init.
    pub init_eax: Option<u32>,
    /// `CS & 3` after Init.
    pub kernel_rpl: Option<u8>,
    /// Option-ROM candidates the probe looked at.
    pub candidates: usize,
    /// `PAGE_OFFSET` of the guest.
    pub page_offset: u32,
    /// Whether the guest paged.
    pub paging: bool,
    /// CPUID vendor string of the CPU the guest ran on.
    pub cpu_vendor: String,
    /// Top-level failures.
    pub problems: Vec<String>,
    /// Observations.
    pub notes: Vec<String>,
}

/// One guest run of the suite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// What the run was for.
    pub purpose: String,
    /// Vectors in its program.
    pub vectors: usize,
    /// How it ended.
    pub ended: String,
    /// Its wall-clock time.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// With [`SuiteOptions::keep_ram`]: how often the guest invoked each call 0–73 in this run,
    /// counted by the guest itself right before each `call`/`jmp` to a relocation target
    /// (see [`Invocations`](crate::guest::Invocations)); None without it or when the engine
    /// lost the RAM.
    pub invoked: Option<Vec<u32>>,
    /// With [`SuiteOptions::keep_ram`]: guest-physical `0..0xA0000` (conventional memory) as
    /// the run left it.
    #[serde(skip)]
    pub low_ram: Option<RamImage>,
    /// KVM engine: the run's VM exits (None under QEMU, which counts none).
    pub exits: Option<RunExits>,
}

/// A copy of guest RAM from physical address 0 (its `Debug` shows only the size).
#[derive(Clone, PartialEq, Eq)]
pub struct RamImage(pub Vec<u8>);

impl std::fmt::Debug for RamImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RamImage({} bytes)", self.0.len())
    }
}

impl std::ops::Deref for RamImage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl RunSummary {
    fn of(purpose: &str, vectors: usize, boot: &Boot) -> RunSummary {
        let ram = boot.ram.as_deref();
        let conventional = crate::qemu::CONVENTIONAL_END as usize;
        RunSummary {
            purpose: purpose.to_string(),
            vectors,
            ended: boot.end.to_string(),
            wall: boot.engine_run.wall,
            invoked: ram
                .and_then(crate::guest::Invocations::from_ram)
                .map(|i| i.counts.into_iter().take(NUM_CALLS).collect()),
            low_ram: ram.map(|r| RamImage(r.get(..conventional).unwrap_or(r).to_vec())),
            exits: boot.exits.as_ref().map(|log| RunExits {
                all: log.all.clone(),
                rom: log.rom.clone(),
                init16: match &boot.init16 {
                    Some(crate::kvm::Init16::Ran(r)) => Some(r.exits.clone()),
                    _ => None,
                },
                calls: call_exits(&boot.vector_exits),
            }),
        }
    }
}

/// The exits of `vectors`, summed per call.
fn call_exits(vectors: &[run::VectorExits]) -> BTreeMap<u8, CallExits> {
    let mut out: BTreeMap<u8, CallExits> = BTreeMap::new();
    for v in vectors {
        let c = out.entry(v.call).or_default();
        c.vectors += 1;
        c.invocations += u32::from(v.invoked);
        c.rom += &v.rom;
        c.guest += &v.guest;
    }
    out
}

/// Gives every call the exits of its vectors over `runs` (calls without any keep None; a
/// passing NOP answer gets zero counts where exits are counted).
fn attach_exits(verdicts: &mut [CallVerdict], runs: &[RunSummary]) {
    let counted = runs.iter().any(|r| r.exits.is_some());
    for v in verdicts {
        let mut sum: Option<CallExits> = None;
        for c in runs
            .iter()
            .filter_map(|r| r.exits.as_ref()?.calls.get(&v.call))
        {
            let s = sum.get_or_insert_with(CallExits::default);
            s.vectors += c.vectors;
            s.invocations += c.invocations;
            s.rom += &c.rom;
            s.guest += &c.guest;
        }
        let nop = RelocType::Nop.name();
        if sum.is_none() && counted && v.reloc == nop && v.verdict == Verdict::Pass {
            sum = Some(CallExits::default());
        }
        v.exits = sum;
    }
}

/// The whole suite's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SuiteReport {
    /// The ROM file.
    pub rom: String,
    /// The engine (`qemu-tcg`, `qemu-kvm`, `kvm`).
    pub engine: String,
    /// What activation found.
    pub activation: Activation,
    /// One verdict per call 0–73.
    pub calls: Vec<CallVerdict>,
    /// Wall-clock time of the whole suite.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// Guest boots.
    pub runs: usize,
    /// Why no call could be executed at all (None: they were).
    pub skipped_reason: Option<String>,
    /// Every run, in order.
    pub run_log: Vec<RunSummary>,
    /// With [`SuiteOptions::keep_ram`]: invocations per call 0–73 summed over every run (None
    /// without it, or if a run's RAM could not be read).
    pub invocations: Option<Vec<u32>>,
    /// The re-entrancy check under a timer-interrupt storm (None: activation failed).
    pub stress: Option<StressSummary>,
    /// Whether something ran the ROM's 16-bit init before each guest run: SeaBIOS (QEMU
    /// engines), or the KVM runner's BIOS step ([`SuiteOptions::run_init16`]).
    pub bios_init: bool,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl SuiteReport {
    /// Activation succeeded, no call failed (NOT_IMPLEMENTED and skipped calls are fine) and
    /// the stress run did not fail.
    pub fn passed(&self) -> bool {
        self.activation.ok
            && self.calls.iter().all(|c| c.verdict != Verdict::Fail)
            && self
                .stress
                .as_ref()
                .is_none_or(|s| s.verdict != Verdict::Fail)
    }

    /// The verdict for call `n`.
    pub fn call(&self, n: u8) -> Option<&CallVerdict> {
        self.calls.iter().find(|c| c.call == n)
    }

    /// Calls with this verdict.
    pub fn with(&self, v: Verdict) -> impl Iterator<Item = &CallVerdict> {
        self.calls.iter().filter(move |c| c.verdict == v)
    }
}

fn verdict(n: u8, reloc: String, verdict: Verdict, detail: impl Into<String>) -> CallVerdict {
    CallVerdict {
        call: n,
        name: call(u32::from(n)).map_or("?", |c| c.name),
        reloc,
        verdict,
        detail: detail.into(),
        checks: 0,
        eip: None,
        exits: None,
    }
}

/// The steps every run starts with: probe, Init, GetRelocationInfo for 0–73.
fn activation_steps() -> Vec<Step> {
    let mut steps = vec![Step::Probe, Step::Init];
    steps.extend((0..NUM_CALLS as u32).map(Step::GetReloc));
    steps
}

/// Runs the conformance suite against the ROM at `rom`.
///
/// Errors only when nothing could run: the ROM file cannot be read, the engine is not
/// available (QEMU missing, KVM unusable), paging was asked for where the engine cannot page,
/// or a guest could not be built or started. Everything the ROM does — including not being
/// found by the probe — is in the report.
pub fn run_suite(rom: &Path, opts: &SuiteOptions) -> Result<SuiteReport, HarnessError> {
    let start = Instant::now();
    std::fs::metadata(rom).map_err(|source| HarnessError::Io {
        what: "reading",
        path: rom.to_path_buf(),
        source,
    })?;
    match opts.engine {
        Engine::Qemu(crate::qemu::Accel::Tcg) => {
            crate::qemu::find_qemu()?;
        }
        other => other
            .available()
            .map_err(|reason| HarnessError::KvmUnavailable { reason })?,
    }
    let bad = |reason: String| Err(HarnessError::InvalidConfig { reason });
    match opts.engine {
        Engine::Kvm if !opts.extra_args.is_empty() => {
            return bad(format!(
                "QEMU arguments {:?} were given for the kvm engine",
                opts.extra_args
            ));
        }
        Engine::Qemu(_) if opts.rom_base.is_some() => {
            return bad(format!(
                "a ROM base ({:#x?}) was given for {}: under QEMU SeaBIOS chooses where the ROM \
                 goes",
                opts.rom_base, opts.engine
            ));
        }
        Engine::Qemu(_) if !opts.run_init16 => {
            return bad(format!(
                "not running the ROM's 16-bit init was asked for {}: under QEMU SeaBIOS always \
                 runs it (use the kvm engine)",
                opts.engine
            ));
        }
        _ => {}
    }
    let can_page = opts.engine.can_page();
    let paging = match (opts.paging, &can_page) {
        (Some(true), Err(why)) => {
            return Err(HarnessError::PagingUnsupported {
                reason: why.clone(),
            });
        }
        (Some(p), _) => p,
        (None, r) => r.is_ok(),
    };
    let map = MemoryMap::new(opts.page_offset, paging)?;
    let runner = Runner {
        rom: rom.to_path_buf(),
        engine: opts.engine,
        map,
        rom_base: opts.rom_base,
        memory_mib: opts.memory_mib,
        timeout: opts.timeout_per_run,
        extra_args: opts.extra_args.clone(),
        keep_ram: opts.keep_ram,
        run_init16: opts.run_init16,
    };
    let mut report = SuiteReport {
        rom: rom.display().to_string(),
        engine: opts.engine.to_string(),
        activation: Activation {
            page_offset: opts.page_offset,
            paging,
            ..Activation::default()
        },
        calls: Vec::new(),
        wall: Duration::ZERO,
        runs: 0,
        skipped_reason: None,
        run_log: Vec::new(),
        invocations: None,
        stress: None,
        bios_init: opts.engine.uses_seabios() || opts.run_init16,
    };
    if !paging {
        report.activation.notes.push(match &can_page {
            Err(why) => format!("running without paging: {why}"),
            Ok(()) => "running without paging (asked for)".into(),
        });
    }

    // 1. Activation.
    let mut steps = vec![Step::Machine];
    steps.extend(activation_steps());
    steps.extend(UNKNOWN_CALLS.iter().map(|n| Step::GetReloc(*n)));
    let boot = runner.boot(steps, Vec::new(), Vec::new(), Some(opts.hang_timeout), 0)?;
    log_run(&mut report, "activation", 0, &boot);
    if let Some(note) = init16_note(&boot, opts) {
        report.activation.notes.push(note);
    }
    let act = activation(&boot, &map, opts.engine, &mut report.activation);
    let Some(act) = act else {
        let why = format!(
            "not run: activation failed ({})",
            report.activation.problems.join("; ")
        );
        report.calls = CALLS
            .iter()
            .map(|c| verdict(c.number, String::new(), Verdict::Skipped, why.clone()))
            .collect();
        // The call whose GetRelocationInfo raised the exception fails.
        if let Some(e) = boot.stream.exception() {
            if let StepId::GetReloc(n) = e.step {
                let rom = report.activation.linear.zip(report.activation.rom_len);
                let what = format!(
                    "GetRelocationInfo({n}) raised {}",
                    describe_exception(e, rom)
                );
                if let Some(c) = report.calls.get_mut(n as usize) {
                    c.verdict = Verdict::Fail;
                    c.detail = what;
                }
            }
        }
        report.skipped_reason = Some(why);
        report.invocations = total_invocations(&report.run_log, opts.keep_ram);
        report.wall = start.elapsed();
        return Ok(report);
    };

    // 2. Relocation answers.
    let selected = |n: u8| {
        opts.only
            .as_ref()
            .is_none_or(|only| only.contains(&u32::from(n)))
    };
    let mut verdicts: Vec<CallVerdict> = Vec::with_capacity(NUM_CALLS);
    let mut to_run: Vec<Call> = Vec::new();
    for c in CALLS.iter() {
        let (v, run) = reloc_verdict(c.number, &act, selected(c.number));
        if run {
            if let Some(id) = Call::from_number(u32::from(c.number)) {
                to_run.push(id);
            }
        }
        verdicts.push(v);
    }

    // 3. Plans.
    let ctx = Ctx {
        map,
        machine: act.machine,
        engine: opts.engine,
        stack_top: map.va(layout::STACK_TOP),
        jump: act
            .answers
            .iter()
            .flatten()
            .filter(|a| a.kind == Some(RelocType::JumpRel))
            .filter_map(|a| u8::try_from(a.call).ok())
            .collect(),
    };
    let mut specs: Vec<Spec> = Vec::new();
    let mut notes: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for id in &to_run {
        let n = *id as u8;
        match vectors::plan(&ctx, *id) {
            Plan::Skip(why) => set(&mut verdicts, n, Verdict::Skipped, why),
            Plan::Run(mut s, note) => {
                let before = s.len();
                if !paging {
                    s.retain(|x| !x.needs_paging);
                }
                if s.is_empty() {
                    let why = if before > 0 {
                        scenarios::needs_paging(&ctx)
                    } else {
                        "no vector applies".into()
                    };
                    set(&mut verdicts, n, Verdict::Skipped, why);
                    continue;
                }
                notes.insert(n, note);
                specs.extend(s);
            }
        }
    }

    // 4. Runs: the vector batch here, Shutdown/Reboot on their own (in parallel).
    let (terminal, batch): (Vec<Spec>, Vec<Spec>) = specs
        .into_iter()
        .partition(|s| matches!(s.flow, Flow::Shutdown | Flow::Reboot));
    let jobs: Vec<(Vector, Duration)> = terminal
        .iter()
        .map(|s| {
            let idle = match s.flow {
                Flow::Shutdown => opts.settle,
                _ => opts.hang_timeout,
            };
            (s.vector.clone(), idle)
        })
        .collect();
    let mut batch_log = Vec::new();
    let (batch_out, terminal_boots) = if opts.parallel && !jobs.is_empty() {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| run_terminals(&runner, jobs, opts.hang_timeout));
            let out = run_batch(&runner, &batch, &act, opts, &mut batch_log);
            let t = handle.join().unwrap_or_default();
            (out, t)
        })
    } else {
        let out = run_batch(&runner, &batch, &act, opts, &mut batch_log);
        (out, run_terminals(&runner, jobs, opts.hang_timeout))
    };
    let (outcomes, inconsistent) = batch_out?;
    for run in batch_log {
        log_summary(&mut report, run);
    }

    // 5. Judging.
    let mut per_call: BTreeMap<u8, Vec<(String, Judged)>> = BTreeMap::new();
    let mut earlier: BTreeMap<u8, Vec<&VectorResult>> = BTreeMap::new();
    let mut reference: Option<(u8, judge::Reference<'_>)> = None;
    for (spec, out) in batch.iter().zip(&outcomes) {
        let entry = per_call.entry(spec.call).or_default();
        let this_reference = reference
            .take()
            .filter(|(call, _)| *call == spec.call)
            .map(|(_, r)| r);
        match out {
            Outcome::Result(r, trap) => {
                if spec.reference {
                    reference = Some((
                        spec.call,
                        judge::Reference {
                            r,
                            trap: trap.as_ref(),
                        },
                    ));
                }
                let prev = earlier.entry(spec.call).or_default();
                let seen = Seen {
                    r,
                    trap: trap.as_ref(),
                    earlier: prev,
                    reference: this_reference,
                };
                let f = judge_vector(spec, &ctx, &seen);
                prev.push(r);
                entry.push((spec.what.clone(), Judged::Checked(f)));
            }
            Outcome::Killed(why) => entry.push((spec.what.clone(), Judged::Failed(why.clone()))),
            Outcome::Unsupported(why) => {
                entry.push((spec.what.clone(), Judged::Unsupported(why.clone())))
            }
            Outcome::NotRun(why) => {
                if let Some(why) = why {
                    entry.push((spec.what.clone(), Judged::Failed(why.clone())));
                }
            }
        }
    }
    // (A panicked runner thread leaves no runs: "could not run".)
    let padded = terminal_boots
        .into_iter()
        .chain(std::iter::repeat_with(Vec::new));
    for (spec, boots) in terminal.iter().zip(padded) {
        let mut out = Judged::Failed("could not run".into());
        for boot in boots {
            out = match boot {
                Ok(b) => {
                    log_run(&mut report, &spec.what, 1, &b);
                    judge_terminal(spec, &b, &act)
                }
                Err(e) => Judged::Failed(format!("could not run: {e}")),
            };
        }
        per_call
            .entry(spec.call)
            .or_default()
            .push((spec.what.clone(), out));
    }
    // 6. Re-entrancy under a timer-interrupt storm, for the calls that passed so far.
    let failed: Vec<u8> = per_call
        .iter()
        .filter(|(n, outs)| {
            inconsistent.contains_key(n)
                || outs.iter().any(|(_, o)| match o {
                    Judged::Failed(_) => true,
                    Judged::Checked(f) => !f.problems.is_empty(),
                    Judged::Unsupported(_) => false,
                })
        })
        .map(|(n, _)| *n)
        .collect();
    let stressable = |n: u8| selected(n) && !failed.contains(&n);
    let (summary, boot) = stress::run(&runner, opts, &act, &stressable, &mut per_call)?;
    if let Some(boot) = boot {
        log_run(&mut report, "stress", 0, &boot);
    }
    report.stress = Some(summary);
    for (n, mut outs) in per_call {
        if let Some(why) = inconsistent.get(&n) {
            outs.push(("GetRelocationInfo".into(), Judged::Failed(why.clone())));
        }
        let idx = usize::from(n);
        if let Some(v) = verdicts.get_mut(idx) {
            let note = notes.get(&n).cloned().unwrap_or_default();
            *v = judge::aggregate(v.clone(), &outs, &note);
        }
    }
    for v in &mut verdicts {
        if v.verdict == Verdict::Skipped && v.detail.is_empty() {
            v.detail = "not run".into();
        }
    }
    attach_exits(&mut verdicts, &report.run_log);
    report.calls = verdicts;
    report.invocations = total_invocations(&report.run_log, opts.keep_ram);
    report.wall = start.elapsed();
    Ok(report)
}

/// KVM engine: what the runner's BIOS step did in `boot`, in words.
fn init16_note(boot: &Boot, opts: &SuiteOptions) -> Option<String> {
    if opts.engine != Engine::Kvm {
        return None;
    }
    Some(match &boot.init16 {
        Some(crate::kvm::Init16::Ran(r)) => format!("the KVM runner {r}"),
        Some(crate::kvm::Init16::Skipped { reason }) => format!(
            "the KVM runner did not run the ROM's 16-bit init (SeaBIOS would not either): \
             {reason}"
        ),
        None if !opts.run_init16 => "the KVM runner did not run the ROM's 16-bit init (asked \
                                     not to): the ROM has no private RAM"
            .into(),
        None => return None,
    })
}

/// Invocations per call summed over `runs` (None unless RAM was kept for every run).
fn total_invocations(runs: &[RunSummary], kept: bool) -> Option<Vec<u32>> {
    if !kept {
        return None;
    }
    runs.iter().try_fold(vec![0u32; NUM_CALLS], |mut sum, r| {
        for (s, n) in sum.iter_mut().zip(r.invoked.as_ref()?) {
            *s = s.saturating_add(*n);
        }
        Some(sum)
    })
}

/// Shutdown / Reboot: one run each, the vector right after activation. A run whose short
/// settle time ran out before the guest even reached the call (the host was busy) is run once
/// more with the hang timeout.
/// Returns every run of each job (the last one counts).
fn run_terminals(
    runner: &Runner,
    jobs: Vec<(Vector, Duration)>,
    hang: Duration,
) -> Vec<Vec<Result<Boot, HarnessError>>> {
    jobs.into_iter()
        .enumerate()
        .map(|(k, (v, idle))| {
            let mut steps = activation_steps();
            steps.push(Step::Vector(0));
            let salt = 1000 + 2 * k as u32;
            let first = runner.boot(steps.clone(), vec![v.clone()], Vec::new(), Some(idle), salt);
            let early = first.as_ref().is_ok_and(|b| {
                matches!(b.end, End::Idle(_))
                    && b.stream.last_step() != StepId::Vector(0)
                    && idle < hang
            });
            let mut runs = vec![first];
            if early {
                runs.push(runner.boot(steps, vec![v], Vec::new(), Some(hang), salt + 1));
            }
            runs
        })
        .collect()
}

fn set(verdicts: &mut [CallVerdict], n: u8, v: Verdict, detail: String) {
    if let Some(x) = verdicts.get_mut(usize::from(n)) {
        x.verdict = v;
        x.detail = detail;
    }
}

fn log_run(report: &mut SuiteReport, purpose: &str, vectors: usize, boot: &Boot) {
    log_summary(report, RunSummary::of(purpose, vectors, boot));
}

fn log_summary(report: &mut SuiteReport, run: RunSummary) {
    report.runs += 1;
    report.run_log.push(run);
}

/// What activation produced, for the rest of the suite.
struct Activated {
    /// GetRelocationInfo answers by call number (None: never asked).
    answers: Vec<Option<RelocAnswer>>,
    /// The native CPU.
    machine: Machine,
    /// The ROM's linear base and length.
    linear: u32,
    len: u32,
}

/// Describes an exception for a verdict: mnemonic, vector, EIP with its ROM offset.
fn describe_exception(e: &Exception, rom: Option<(u32, u32)>) -> String {
    let off = rom
        .and_then(|(base, len)| {
            let o = e.eip.checked_sub(base)?;
            (o < len).then_some(o)
        })
        .map(|o| format!(" (ROM offset {o:#x})"))
        .unwrap_or_default();
    if e.vector >= 32 {
        format!(
            "unexpected interrupt {:#x} at EIP {:#010x}{off}",
            e.vector, e.eip
        )
    } else {
        let cr2 = if e.vector == 14 {
            format!(", CR2 {:#010x}", e.cr2)
        } else {
            String::new()
        };
        format!(
            "{} (vector {}) at EIP {:#010x}{off}, error code {:#x}{cr2}",
            e.mnemonic(),
            e.vector,
            e.eip,
            e.error_code
        )
    }
}

/// Judges the activation run; None when no call can be executed.
fn activation(
    boot: &Boot,
    map: &MemoryMap,
    engine: Engine,
    a: &mut Activation,
) -> Option<Activated> {
    let p: ProbeReport =
        match probe::report(&boot.stream, map, &boot.engine_run, engine, boot.nonce) {
            Ok(p) => p,
            Err(e) => {
                a.problems
                    .push(format!("the activation run is unusable: {e}"));
                return None;
            }
        };
    a.candidates = p.candidates.len();
    a.found = p.chosen.is_some();
    a.base = p.chosen;
    a.linear = p.chosen_linear;
    a.rom_len = p.rom_len;
    if let Some(m) = boot.stream.machine() {
        let [_, ebx, ecx, edx] = m.cpuid0;
        a.cpu_vendor = [ebx, edx, ecx]
            .into_iter()
            .flat_map(u32::to_le_bytes)
            .filter(|b| b.is_ascii_graphic() || *b == b' ')
            .map(char::from)
            .collect();
    }
    let rom = p.chosen_linear.zip(p.rom_len);
    if let Some(e) = &p.exception {
        a.problems
            .push(format!("{} raised {}", e.step, describe_exception(e, rom)));
    }
    if !a.found {
        let mut why = format!(
            "no VMI ROM found by the probe ({} option-ROM candidate{} looked at",
            p.candidates.len(),
            if p.candidates.len() == 1 { "" } else { "s" }
        );
        let rejected: Vec<String> = p
            .candidates
            .iter()
            .map(|c| format!("{:#x}: {:?}", c.base, c.outcome))
            .collect();
        if !rejected.is_empty() {
            why.push_str(&format!(": {}", rejected.join(", ")));
        }
        why.push(')');
        if p.seabios_log.contains("bad checksum") {
            why.push_str(
                "; SeaBIOS logged \"Found option rom with bad checksum\" and dropped the image",
            );
        }
        a.problems.push(why);
    }
    if p.end.is_none() && p.exception.is_none() {
        a.problems.push(format!(
            "the activation run did not finish: {}{}",
            boot.end,
            boot.decode_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    if let Some(init) = &p.init {
        a.init_eax = Some(init.eax);
        a.kernel_rpl = Some(init.kernel_rpl);
        if init.eax != 0 {
            a.problems.push(format!(
                "Init returned EAX {:#010x}: Linux prints \"VMI ROM failed to initialize!\" and \
                 stays native",
                init.eax
            ));
        }
        for r in &init.clobbered {
            a.problems.push(format!(
                "Init changed {} (callee-saved)",
                judge::reg_name(*r)
            ));
        }
        if !init.esp_ok {
            a.problems
                .push(format!("Init returned with ESP {:#010x}", init.regs.esp));
        }
        if init.regs.eflags & judge::IF != 0 {
            a.notes
                .push("Init returned with IF = 1 (Linux activates with interrupts off)".into());
        }
    }
    let mut answers: Vec<Option<RelocAnswer>> = vec![None; NUM_CALLS];
    for r in &p.relocations {
        let bad: Vec<String> = r
            .changed
            .iter()
            .filter(|x| !matches!(x, vmi_abi::calls::Reg::Ecx))
            .map(|x| judge::reg_name(*x))
            .collect();
        if !bad.is_empty() {
            a.problems.push(format!(
                "GetRelocationInfo({}) changed {} (callee-saved)",
                r.call,
                bad.join(", ")
            ));
        }
        if !r.esp_ok {
            a.problems.push(format!(
                "GetRelocationInfo({}) returned with ESP {:#010x}",
                r.call, r.regs.esp
            ));
        }
        if r.regs.eflags & judge::DF != 0 {
            a.problems.push(format!(
                "GetRelocationInfo({}) returned with DF = 1",
                r.call
            ));
        }
        if UNKNOWN_CALLS.contains(&r.call) && r.reloc_type != 0 {
            a.problems.push(format!(
                "GetRelocationInfo({}) answered {} for a number that is not a VMI call (must be \
                 NONE)",
                r.call,
                judge::reloc_name(r.reloc_type)
            ));
        }
        if let Some(slot) = answers.get_mut(r.call as usize) {
            *slot = Some(r.clone());
        }
    }
    a.ok = a.problems.is_empty();
    // An exception anywhere in activation would recur in every later run at the same step.
    let usable = a.found
        && p.exception.is_none()
        && p.init.as_ref().is_some_and(|i| i.eax == 0)
        && answers.iter().any(Option::is_some);
    if !usable {
        return None;
    }
    let machine = boot.stream.machine().copied()?;
    Some(Activated {
        answers,
        machine,
        linear: p.chosen_linear.unwrap_or(0),
        len: p.rom_len.unwrap_or(0),
    })
}

/// The verdict from the relocation answer alone; `true` when the call's code must be run.
fn reloc_verdict(n: u8, act: &Activated, selected: bool) -> (CallVerdict, bool) {
    let Some(spec) = call(u32::from(n)) else {
        return (
            verdict(n, String::new(), Verdict::Skipped, "no such call"),
            false,
        );
    };
    if !selected {
        let reloc = act
            .answers
            .get(usize::from(n))
            .and_then(Option::as_ref)
            .map(|a| judge::reloc_name(a.reloc_type))
            .unwrap_or_default();
        return (verdict(n, reloc, Verdict::Skipped, "not selected"), false);
    }
    let Some(a) = act.answers.get(usize::from(n)).and_then(Option::as_ref) else {
        return (
            verdict(
                n,
                String::new(),
                Verdict::Skipped,
                "not asked: activation stopped before GetRelocationInfo reached it",
            ),
            false,
        );
    };
    let reloc = judge::reloc_name(a.reloc_type);
    let fail = |why: String| (verdict(n, reloc.clone(), Verdict::Fail, why), false);
    let Some(kind) = a.kind else {
        return fail(format!(
            "GetRelocationInfo answered type {}: not a relocation type (Linux BUG()s on it at \
             inline-patched sites)",
            a.reloc_type
        ));
    };
    if !spec.allowed.contains(kind) {
        let allowed: Vec<&str> = spec.allowed.iter().map(RelocType::name).collect();
        return fail(format!(
            "{} not allowed for {} (vmi-abi.md §3.5 allows {})",
            kind.name(),
            spec.name,
            allowed.join("|")
        ));
    }
    if kind != RelocType::None {
        for r in spec.requires {
            let dep = act.answers.get(usize::from(*r)).and_then(Option::as_ref);
            if dep.and_then(|d| d.kind) != Some(RelocType::CallRel) {
                return fail(format!(
                    "{} is implemented, so {} must be CALL_REL (Linux calls it without a NULL \
                     check), but it is {}",
                    spec.name,
                    call(u32::from(*r)).map_or("?", |c| c.name),
                    dep.map_or_else(|| "unknown".into(), |d| judge::reloc_name(d.reloc_type))
                ));
            }
        }
    }
    match kind {
        RelocType::None => (
            verdict(
                n,
                reloc,
                Verdict::NotImplemented,
                "NONE: Linux keeps the native operation",
            ),
            false,
        ),
        RelocType::Nop => (
            verdict(n, reloc, Verdict::Pass, "NOP: nothing to execute"),
            false,
        ),
        RelocType::CallRel | RelocType::JumpRel => {
            let inside = a.eip.checked_sub(act.linear).is_some_and(|o| o < act.len);
            if !inside {
                return fail(format!(
                    "target {:#010x} lies outside the ROM image ({:#010x}..{:#010x})",
                    a.eip,
                    act.linear,
                    act.linear.wrapping_add(act.len)
                ));
            }
            let mut v = verdict(n, reloc, Verdict::Skipped, "");
            v.eip = Some(a.eip);
            (v, true)
        }
    }
}

/// What one batch vector produced.
#[derive(Debug)]
enum Outcome {
    /// Its `VECTOR_RESULT` and the first `TRAP` it caused.
    Result(Box<VectorResult>, Option<Exception>),
    /// It killed the guest, because …
    Killed(String),
    /// The engine could not run it (kvm-pvm emulation), because …
    Unsupported(String),
    /// It never ran (Some: a reason to report; None: its call was already failed by another
    /// vector that killed the guest).
    NotRun(Option<String>),
}

type BatchLog = Vec<RunSummary>;

/// Runs `specs` in as few guest runs as possible: one, plus one more after every vector that
/// kills the guest. Returns one outcome per spec and the calls whose GetRelocationInfo answer
/// changed between runs.
fn run_batch(
    runner: &Runner,
    specs: &[Spec],
    act: &Activated,
    opts: &SuiteOptions,
    log: &mut BatchLog,
) -> Result<(Vec<Outcome>, BTreeMap<u8, String>), HarnessError> {
    let mut outcomes: Vec<Option<Outcome>> = (0..specs.len()).map(|_| None).collect();
    let mut inconsistent: BTreeMap<u8, String> = BTreeMap::new();
    let mut killed_calls: Vec<u8> = Vec::new();
    let mut pending: Vec<usize> = (0..specs.len()).collect();
    let mut round = 0u32;
    while !pending.is_empty() {
        round += 1;
        let vectors: Vec<Vector> = pending
            .iter()
            .filter_map(|i| specs.get(*i))
            .map(|s| s.vector.clone())
            .collect();
        let mut steps = activation_steps();
        steps.extend((0..vectors.len() as u32).map(Step::Vector));
        let boot = runner.boot(steps, vectors, Vec::new(), Some(opts.hang_timeout), round)?;
        log.push(RunSummary::of(
            &format!("vectors (run {round})"),
            pending.len(),
            &boot,
        ));
        let rom = match check_run(&boot, act, &mut inconsistent, round) {
            Ok(rom) => rom,
            Err(why) => {
                for i in &pending {
                    if let Some(slot) = outcomes.get_mut(*i) {
                        *slot = Some(Outcome::NotRun(Some(format!("not run: {why}"))));
                    }
                }
                break;
            }
        };
        let rom = Some(rom);
        // Group the records by vector.
        let mut results: BTreeMap<u32, (Option<Box<VectorResult>>, Option<Exception>)> =
            BTreeMap::new();
        let mut fatal: Option<Exception> = None;
        for (_, rec) in &boot.stream.records {
            match rec {
                Record::VectorResult(r) => {
                    if let StepId::Vector(k) = r.step {
                        results.entry(k).or_default().0 = Some(r.clone());
                    }
                }
                Record::Trap(t) => {
                    if let StepId::Vector(k) = t.step {
                        let e = results.entry(k).or_default();
                        if e.1.is_none() {
                            e.1 = Some(*t);
                        }
                    }
                }
                Record::Exception(e) => fatal = Some(*e),
                _ => {}
            }
        }
        let clean = boot.end == End::Done && boot.stream.end() == Some(EndStatus::Complete);
        let last = boot.stream.last_step();
        let killed: Option<(usize, String, bool)> = if clean {
            None
        } else {
            match last {
                StepId::Vector(k) if (k as usize) < pending.len() => {
                    let why = match (&fatal, &boot.end) {
                        (Some(e), _) if e.step == last => describe_exception(e, rom),
                        (_, End::Unsupported(detail)) => detail.clone(),
                        (_, end) => end.to_string(),
                    };
                    let why = match &boot.decode_error {
                        Some(d) if fatal.is_none() => format!("{why} (stream: {d})"),
                        _ => why,
                    };
                    let unsupported = matches!(boot.end, End::Unsupported(_)) && fatal.is_none();
                    Some((k as usize, why, unsupported))
                }
                _ => None,
            }
        };
        let mut next = Vec::new();
        for (pos, &i) in pending.iter().enumerate() {
            let Some(spec) = specs.get(i) else { continue };
            let slot = outcomes.get_mut(i);
            let Some(slot) = slot else { continue };
            match (results.remove(&(pos as u32)), &killed) {
                (_, Some((k, why, unsupported))) if *k == pos => {
                    *slot = Some(if *unsupported {
                        Outcome::Unsupported(why.clone())
                    } else {
                        Outcome::Killed(why.clone())
                    });
                    killed_calls.push(spec.call);
                }
                (Some((Some(r), trap)), _) => *slot = Some(Outcome::Result(r, trap)),
                (_, Some((k, _, _))) if pos > *k => next.push(i),
                _ => {}
            }
        }
        for &i in &pending {
            let Some(slot) = outcomes.get_mut(i) else {
                continue;
            };
            if slot.is_none() && !next.contains(&i) {
                let why = if killed.is_some() {
                    "not run".to_string()
                } else {
                    match boot.stream.end() {
                        Some(EndStatus::NoRom) => {
                            "not run: the probe found no ROM in this run".into()
                        }
                        Some(EndStatus::InitFailed) => "not run: Init failed in this run".into(),
                        _ => format!("not run: the guest stopped before it: {}", boot.end),
                    }
                };
                *slot = Some(Outcome::NotRun(Some(why)));
            }
        }
        // Vectors of a call that already killed the guest need not run again.
        next.retain(|i| {
            let dead = specs
                .get(*i)
                .is_some_and(|s| killed_calls.contains(&s.call));
            if dead {
                if let Some(slot) = outcomes.get_mut(*i) {
                    *slot = Some(Outcome::NotRun(None));
                }
            }
            !dead
        });
        if next.len() >= pending.len() {
            for i in &next {
                if let Some(slot) = outcomes.get_mut(*i) {
                    *slot = Some(Outcome::NotRun(Some("not run: no progress".into())));
                }
            }
            break;
        }
        pending = next;
    }
    Ok((
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::NotRun(Some("not run".into()))))
            .collect(),
        inconsistent,
    ))
}

/// Checks a vector run's header and GetRelocationInfo answers against activation; returns
/// the ROM's (linear base, length) in this run, or why the run's stream cannot be used.
fn check_run(
    boot: &Boot,
    act: &Activated,
    inconsistent: &mut BTreeMap<u8, String>,
    round: u32,
) -> Result<(u32, u32), String> {
    let mut linear = None;
    match boot.stream.records.first() {
        Some((_, Record::Hello(h)))
            if h.nonce == boot.nonce && h.layout_version == LAYOUT_VERSION => {}
        Some((_, Record::Hello(h))) => {
            return Err(format!(
                "the guest stream does not belong to the image (nonce {:#x}, layout {})",
                h.nonce, h.layout_version
            ));
        }
        _ => {
            return Err(format!(
                "the guest wrote no usable stream ({}{})",
                boot.end,
                boot.decode_error
                    .as_ref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    for (_, rec) in &boot.stream.records {
        match rec {
            Record::ProbeDone(p) => linear = p.base.map(|_| p.linear),
            Record::CallResult(c) => {
                let StepId::GetReloc(n) = c.step else {
                    continue;
                };
                let Some(Some(first)) = act.answers.get(n as usize) else {
                    continue;
                };
                let dl = c.regs.edx as u8;
                let base = linear.unwrap_or(act.linear);
                let code = matches!(
                    first.kind,
                    Some(RelocType::CallRel) | Some(RelocType::JumpRel)
                );
                let same = dl == first.reloc_type
                    && (!code
                        || c.regs.eax.wrapping_sub(base) == first.eip.wrapping_sub(act.linear));
                if !same {
                    if let Ok(n) = u8::try_from(n) {
                        inconsistent.entry(n).or_insert_with(|| {
                            format!(
                                "GetRelocationInfo answered differently in run {round}: {} at \
                                 {:#010x} (activation: {} at {:#010x})",
                                judge::reloc_name(dl),
                                c.regs.eax,
                                judge::reloc_name(first.reloc_type),
                                first.eip
                            )
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok((linear.unwrap_or(act.linear), act.len))
}

/// The common checks, then the vector's own.
fn judge_vector(spec: &Spec, ctx: &Ctx, seen: &Seen<'_>) -> Findings {
    let mut f = Findings::default();
    let Some(cs) = call(u32::from(spec.call)) else {
        f.fail("no such call");
        return f;
    };
    if spec.reference {
        // A measurement of the engine's native instruction, not of the ROM: only notes.
        (spec.check)(seen, &mut f);
        return f;
    }
    judge::common(spec, cs, ctx, seen, &mut f);
    let go_on = match spec.flow {
        Flow::Returns => seen.r.returned_to_site,
        Flow::Traps | Flow::Faults => seen.trap.is_some() && !seen.r.returned_to_site,
        _ => true,
    };
    if go_on {
        (spec.check)(seen, &mut f);
    }
    f
}

/// Shutdown / Reboot: judged by how their run ended.
fn judge_terminal(spec: &Spec, boot: &Boot, act: &Activated) -> Judged {
    match terminal_findings(spec, boot, act) {
        Ok(f) => Judged::Checked(f),
        Err(_) if matches!(boot.end, End::Unsupported(_)) => Judged::Unsupported(match &boot.end {
            End::Unsupported(d) => d.clone(),
            other => other.to_string(),
        }),
        Err(why) => Judged::Failed(why),
    }
}

fn terminal_findings(spec: &Spec, boot: &Boot, act: &Activated) -> Result<Findings, String> {
    let mut f = Findings::default();
    let rom = Some((act.linear, act.len));
    let last = boot.stream.last_step();
    let returned = boot
        .stream
        .records
        .iter()
        .any(|(_, r)| matches!(r, Record::VectorResult(v) if v.step == StepId::Vector(0)));
    if let Some(e) = boot.stream.exception() {
        return Err(describe_exception(e, rom));
    }
    if returned {
        return Err(format!(
            "{} returned to its caller",
            call(u32::from(spec.call)).map_or("?", |c| c.name)
        ));
    }
    if last != StepId::Vector(0) {
        return Err(format!(
            "the guest never reached the call (stopped in step {last}): {}",
            boot.end
        ));
    }
    match (spec.flow, &boot.end) {
        (Flow::Shutdown, End::Idle(d)) => f.note(format!(
            "no record, exception or reset for {:.1}s after the call: the CPU stopped (judged by \
             silence; QEMU kept running)",
            d.as_secs_f64()
        )),
        (Flow::Shutdown, End::Halted(eip)) => f.note(format!("the vCPU halted at EIP {eip:#010x}")),
        (Flow::Reboot, End::Reset) => f.note("QEMU exited on the reset (-no-reboot)".to_string()),
        (Flow::Reboot, End::TripleFault(eip)) => f.note(format!(
            "the vCPU shut down (triple fault) at EIP {eip:#010x}: a reset on the kvm engine"
        )),
        (Flow::Shutdown, End::Reset) => {
            return Err("the machine reset instead of halting".into());
        }
        (Flow::Reboot, End::Idle(d)) => {
            return Err(format!(
                "no reset: nothing happened for {:.1}s after the call",
                d.as_secs_f64()
            ));
        }
        (Flow::Reboot, End::Halted(eip)) => {
            return Err(format!(
                "the CPU halted at EIP {eip:#010x} instead of resetting"
            ));
        }
        (_, end) => return Err(end.to_string()),
    }
    Ok(f)
}
