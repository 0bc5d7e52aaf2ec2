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
//!    InvalPage/FlushTLB against a stale TLB entry, the alarms of SetAlarm/CancelAlarm (see
//!    [Time](#time)), and Shutdown / Reboot in runs of their own (judged by how the run
//!    ends), in parallel with the vector runs.
//! 5. **Judging** on the host: the register class (C: EBX/ESI/EDI/EBP/ESP and the segments
//!    preserved, system flags — TF, IF, IOPL, NT, AC, ID — unchanged; X: every GPR but the
//!    outputs, only the arithmetic flags; DF = 0 for all), the outputs and the architectural
//!    effect of each call:
//! 6. **Re-entrancy** (one more guest run, QEMU engines; [`SuiteReport::stress`]): the
//!    hot-path calls that passed so far (interrupt flag, CR reads, RDTSC, CPUID, GetDR) in a
//!    loop with every result and kept register checked, while IRQ0 fires at ~20 kHz and the
//!    timer handler calls RDTSC, GetCR3 and DisableInterrupts through the ROM, and — when the
//!    ROM implements them and they passed — GetCycleCounter(REAL), APICRead(0x30) and
//!    APICWrite(0xB0 EOI, 0) — a kernel's interrupt path re-entering the ROM in the middle of
//!    a call — and a second CPU (`-smp 2`)
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
//! | 63 APICWrite | TPR (0x80) written and read back directly (MMIO); LVTT (0x320) written and read back through APICRead (vector and mask); EOI (0xB0) after a self-IPI the guest took and left in service: the in-service bit is clear afterwards (MMIO) |
//! | 64 APICRead | ID (0x20) and version (0x30) equal the guest's own MMIO read; TPR (0x80) as the guest set it |
//! | 66 GetCycleFrequency | sane (0 < f < 1 THz, f/1000 fits 32 bits); within ±0.1 % of the rate of GetCycleCounter(REAL) measured against the ACPI PM timer over 200 ms (each end a REAL/PM/REAL bracket, the tightest of 16; brackets so loose that the rate is known only to ±0.05 % or worse make it inconclusive); the TSC's rate noted; under kvmclock, the rate the calling CPU's pvclock scale implies ([kvmclock](#kvmclock)) |
//! | 67 GetCycleCounter | REAL monotonic (across vectors, and over 1000 calls in a row: each reading at least the one before), AVAILABLE returns, STOLEN 0 or ≤ REAL |
//! | 68 SetAlarm, 69 CancelAlarm | the far-future one-shot returns; CancelAlarm(REAL) returns; the alarm scenarios ([Time](#time)) |
//! | 70 GetWallclockTime | between 2000 and 2200; within 2 s of the CMOS RTC the guest reads itself (BCD or binary, 12/24 h, century); two calls 150 ms apart advance as the PM timer did between them and as GetCycleCounter(REAL) ÷ GetCycleFrequency did (brackets of PM-timer and REAL readings around each call, ±(1 ms + 0.1 %)); under kvmclock on the kvm engine, within 1 s of the host's clock ([kvmclock](#kvmclock)) |
//! | 71 WallclockUpdated | returns (EAX noted) |
//!
//! # Scenarios
//!
//! | Call | Scenario | Passes when |
//! |---|---|---|
//! | IRET (33) | frame `EIP = resume point, CS 0x60, EFLAGS image with IF=1` (and one with IF=0) at `[esp+4]` (CALL_REL) or `[esp]` (JUMP_REL), current IF the opposite | execution continues at the frame's EIP with ESP just above the frame, EFLAGS = the image (IF included), every GPR and segment intact |
//! | IRET (33) | frame to the ring-3 stub: `EIP, CS 0x73, EFLAGS (IF=1), ESP, SS 0x7B` | the stub's `int 0x80` arrives from CS 0x73 at the stub's EIP with SS 0x7B, the frame's ESP, IF = 1, every GPR intact |
//! | IRET (33) | 31 frames the CPU faults on or must check fully (the `iret_faults` cases: every rule of IRET's checks — null, beyond-limit, LDT-without-LDT, wrong-type, wrong-DPL, not-present CS and SS, EIP beyond the CS limit — to ring 3 and to ring 0, the order of the rules, an interrupt and a trap gate, and two valid frames from an LDT and a conforming segment), each run first through a native `iret` at the site (the reference), then through the ROM, reached by a 5-byte `call rel32` like Linux's patched site | the ROM raises what the native `iret` raised (where the engine departs from the SDM, what the SDM says; noted): same vector and error code, EIP = the ROM's call site, the site's CS and EFLAGS, the interrupted ESP at the frame, the handler entered with the gate's EFLAGS, every GPR and data segment intact; a valid frame reaches its ring-3 code |
//! | SYSEXIT (34) | SYSENTER_CS = 0x60 (like Linux), EDX = stub, ECX = user stack, IF = 0 | the stub runs at CPL 3 (CS 0x73, SS 0x7B), ESP = ECX, IF = 1, other flags as they were, EAX/EBX/ESI/EDI/EBP intact |
//! | Halt (35) | PIT IRQ0 at 1 kHz unmasked, IF = 0 (QEMU); where the local APIC delivers interrupts but the PIC's are not known to arrive the moment IF is set (the kvm engine with the runner's irqchip), the APIC timer armed one-shot 1 ms ahead at vector 0x41 instead | Halt returns after the timer handler ran, with IF = 1 (skipped where nothing raises an interrupt) |
//! | InvalPage (46), FlushTLB (47) | a window page mapped to frame A and read (TLB filled), then its PTE changed to frame B *without* a flush | after the call the page reads frame B. Whether the stale frame-A read could be demonstrated before the call is reported (TCG keeps stale entries like hardware). FlushTLB(3) uses a global page with CR4.PGE |
//! | Shutdown (37) | own run; IF = 1 and the timer running, so a bare `hlt` would wake up | QEMU: nothing at all is written after the call for the settle time (no record, no exception, no reset) — judged by silence, QEMU keeps running halted; kvm engine: the vCPU halts |
//! | Reboot (36) | own run, QEMU with `-no-reboot` | QEMU exits by itself (the reset) with no record after the call; kvm engine: the vCPU shuts down (triple fault = reset) |
//!
//! # Time
//!
//! The timer scenarios (an engine whose local APIC delivers interrupts — QEMU, or the kvm
//! engine when its runner has KVM's in-kernel irqchip — and an ACPI PM timer: the one the
//! FADT names under QEMU, port 0x608 on the kvm engine; otherwise only the sanity vectors run
//! and the verdict notes why) judge any ROM by
//! what a guest sees, never by the ROM's own figures: time comes from the PM timer, the TSC
//! and the RTC. GetCycleFrequency's and GetWallclockTime's measurements need only the PM timer
//! and the RTC, and run on the kvm engine too, whose runner has both on the host's clocks (its
//! PM timer at port 0x608, which no ACPI table names: the suite uses it knowingly). The guest's alarm handler counts the interrupts at the vector it expects
//! (0x20 for IRQ0 through the PIC, else the vector the guest wrote to LVTT — through
//! APICWrite when the ROM implements it, natively otherwise) and at every other vector
//! (stray), notes the TSC at its entry and which CPU took it, and acknowledges like Linux:
//! IRQ0 at the PIC, LVTT through APICWrite(0xB0, 0) (the in-service bit checked before and
//! after). Each scenario ends with CancelAlarm and every timer stopped natively.
//!
//! | Scenario (call) | Passes when |
//! |---|---|
//! | periodic alarm, `SetAlarm(PERIODIC\|REAL, now, freq/100)` and `freq/1000`, on IRQ0 and on LVTT (vectors 0x31 at 100 Hz and 0x41 at 1 kHz; 0x41 also with a native EOI) (68) | the median interval between interrupts, timed with the TSC whose rate the PM timer gives over the window, is the period ±10 %; the count agrees with the reference timer's within a factor of 2; none at another vector; LVTT alarms leave nothing in service after the EOI |
//! | one-shot, `SetAlarm(ONESHOT\|REAL, now + freq/20, 0)`, on IRQ0 and on LVTT 0x31 (68) | exactly one interrupt, at the expected vector, within 150 ms, and never before the expiry: the TSC at the handler's entry ≥ the expiry when REAL is the TSC (a REAL reading between two `rdtsc` shows it), else GetCycleCounter(REAL) read right after the entry |
//! | LVTT masked (bit 16, written like Linux) while a 1 kHz alarm runs, then unmasked (68) | no interrupt in 50 ms while masked; the period ±10 % after |
//! | the second CPU (INIT-SIPI-SIPI, `-smp 2`) sets a 1 kHz alarm on its own LVTT 0x41 (68) | its interrupts arrive on the second CPU, none on the first; CancelAlarm on the first CPU returns 0 (alarms are per CPU) |
//! | CancelAlarm of a running 1 kHz alarm; of a one-shot 1 s ahead; after a one-shot fired; with nothing armed on REAL and AVAILABLE (69) | EAX 1, 1, 0, 0; after cancelling the running alarm at most the one interrupt already pending |
//!
//! Timing needs a host that runs the vCPU and delivers interrupts on time, and a busy host
//! (TCG, other work on the machine) does neither: a vCPU that is not run sees its alarms late
//! and coalesced. So rates are judged by the *median* interval, which a late interrupt or a
//! burst does not move, and a [`Op::Window`](crate::guest::Op::Window) leaves the vCPU's
//! stalls out of its running time. Beside every periodic alarm runs a reference timer the
//! guest programs itself on the PIC — PIT channel 0 at the same rate beside an LVTT alarm,
//! the RTC's periodic interrupt at the next power of two beside an IRQ0 alarm: when its
//! median strays more than 5 % from its rate, or its intervals or the alarm's spread wider
//! than 10 % of the median (the middle half), the host was too busy to time interrupts and
//! the vector is *inconclusive* — it runs again, up to twice, in runs of their own ("timing
//! again" in the run log); one still inconclusive neither passes nor fails and the verdict
//! says so ("inconclusive: …"). "Never before the expiry" is exact either way.
//!
//! On the kvm engine with the runner's irqchip the local APIC raises interrupts and so does
//! the runner's PIT, whose counter 0 raises IRQ0 through KVM's PIC as the guest (or the ROM)
//! programmed it ([`crate::kvm::KvmRun::irq0`]): the IRQ0 scenarios run, and the LVTT alarms
//! have PIT channel 0 as their reference timer. The runner's CMOS raises no interrupt, so
//! the IRQ0 alarms run without a reference timer and SetAlarm's verdict says so ("the IRQ0
//! alarms ran without a reference timer …"); the second-CPU scenario does not run (one
//! vCPU). Without the irqchip nothing raises any interrupt (SetAlarm's verdict: "not
//! measured: no interrupt controller on the kvm engine …"). The runner's IRQ0 comes from a
//! host thread: where it woke late in a run (it coalesces the edges it missed and counts
//! them, [`crate::kvm::irq0::Irq0Report::coalesced`]) an IRQ0 alarm rate that would fail is
//! inconclusive instead, saying how many edges were coalesced. An alarm without a reference
//! timer has its count judged against the window's running time (the rate over its
//! effective PM-timer time): more
//! than twice that fails, fewer than half is inconclusive (a host that does not run the vCPU
//! coalesces its timer interrupts, and there is no reference to tell), its median interval is
//! judged as everywhere, and intervals spread wider than 10 % still make it inconclusive.
//!
//! # kvmclock
//!
//! Where the guest's CPUID says KVM with kvmclock (0x40000000 = "KVMKVMKVM\0\0\0" with leaf
//! 0x40000001, whose EAX has KVM_FEATURE_CLOCKSOURCE2: the `MACHINE` record carries both
//! leaves), the suite also holds the time calls to what KVM itself shows of the ROM's clock,
//! read by the guest right after the call on the calling CPU: `rdmsr` of
//! MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01: the physical address of the `pvclock_vcpu_time_info`
//! the CPU registered, with enable bit 0) and the structure's `tsc_to_system_mul` (offset 24)
//! and `tsc_shift` (offset 28), which KVM wrote, not the ROM (the guest reads its version
//! before and after: an update in between makes the vector inconclusive). The guest never
//! registers an area of its own — that would replace the ROM's.
//!
//! | Check (call) | Passes when |
//! |---|---|
//! | GetCycleFrequency() against the pvclock area the calling CPU registered (66) | it equals `1e9 · 2^32 / (mul · 2^shift)` Hz within `2 · (f / (mul · 2^shift) + 1)` Hz — the rounding of the 32.32 nanoseconds-per-cycle scale and of the quotient, in either order, and nothing more (4.5 Hz at 2.3 GHz) |
//! | GetWallclockTime() against the host's clock (70; kvm engine) | it lies within 1 s of the host's UTC at the call: the runner's PM timer runs on the host's monotonic clock and the suite knows the Unix time of its count 0, so two PM-timer readings around the call place it on the host's clock to microseconds (a bracket wider than 250 ms: inconclusive). 1 s because Linux keeps whole seconds of it (`vmi_get_wallclock` sets `xtime` from ns ÷ 10^9); a kvmclock ROM is microseconds off, KVM's wall clock being the host's |
//!
//! A calling CPU with no area registered after the call (the MSR reads 0, or its enable bit
//! is clear) does not take its time from kvmclock: for a ROM that promised kvmclock
//! ([`SuiteOptions::expect_kvmclock`], set by `vmirom test` for a ROM whose manifest names
//! the kvm backend) that fails the check — "the calling CPU has no pvclock area registered
//! after the call (MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01 reads 0x0)" —; for any other ROM (the
//! native one) it is noted and the check passes. Where CPUID offers no kvmclock (QEMU TCG, a
//! CPU without the KVM leaves) these checks are not planned, nothing fails for their absence,
//! and for a ROM that promised kvmclock GetCycleFrequency's and GetWallclockTime's verdicts
//! say why ("kvmclock not checked: CPUID 0x40000000 does not say KVM (signature …)"). The
//! checks that do not depend on kvmclock — GetCycleFrequency against REAL over 200 ms of a
//! host-timed PM timer, REAL over 1000 calls in a row — apply to every ROM on every engine
//! with a PM timer.
//!
//! **PV EOI.** Where CPUID says KVM with paravirtual EOI (0x40000001 EAX bit 6), the periodic
//! LVTT alarms acknowledged through APICWrite(0xB0, 0) also watch it, again through KVM and not
//! the ROM: at every interrupt the guest's handler reads MSR_KVM_PV_EOI_EN (0x4b564d04: the
//! physical address of the calling CPU's PV-EOI word, enable bit 0) and the word's bit 0 —
//! which KVM sets when it delivers an interrupt whose EOI the guest may signal by clearing it
//! — before the call, and the bit again right after it; after the scenario it reads the MSR
//! and MSR_KVM_SYSTEM_TIME_NEW. Where KVM armed the word the call must have cleared it ("KVM
//! armed PV EOI … and after APICWrite(0xB0, 0) it was still set at N of M interrupts …: the
//! call did not acknowledge them" otherwise); a ROM that promised kvmclock and takes its time
//! from it (its pvclock area registered) must have a PV-EOI word registered ("the calling CPU
//! has no PV-EOI word registered (MSR_KVM_PV_EOI_EN 0x4b564d04 reads 0x0) though KVM offers PV
//! EOI …"); any other ROM, or one running natively, is noted. KVM arms the word only for an
//! interrupt its local APIC keeps in service, and kvm-pvm's keeps none: there the word reads 0
//! at every interrupt, the verdict notes "never armed by KVM … each EOI was the APIC write",
//! and whether the ROM clears an armed word cannot be shown on that host.
//!
//! # Engines
//!
//! On QEMU (TCG or KVM) everything runs, with paging. On the kvm engine (the built-in VMM)
//! there is no BIOS image and one vCPU, and on kvm-pvm no paging: the guest runs flat, the
//! page-table checks are [`Verdict::Skipped`] with "needs paging; this KVM cannot page". Where
//! the host's KVM has the in-kernel irqchip the runner gives the guest KVM's PICs, IOAPIC and
//! local APIC ([`crate::kvm::KvmConfig::irqchip`], [`SuiteOptions::irqchip`]; the activation
//! notes say which), and the suite decides from what the activation run reported
//! ([`crate::kvm::KvmRun::irqchip`]), not from the engine's name: APICRead and APICWrite run
//! their vectors, Halt is woken by the APIC timer, and — the runner's own PIT raising IRQ0
//! through KVM's PIC from its counter 0 ([`crate::kvm::KvmRun::irq0`], reported by the
//! activation run) — SetAlarm's LVTT and IRQ0 scenarios (PIT channel 0 the LVTT alarms'
//! reference timer; the IRQ0 alarms have none: the runner's RTC raises no IRQ8) and all of
//! CancelAlarm's run with their judgments (see [Time](#time)). What stays out there: the
//! interrupt calls' pending-IRQ vectors and Halt's PIT wake-up (they need an IRQ0 taken the
//! moment IF is set, without a VM exit: kvm-pvm injects an interrupt only when it enters the
//! vCPU with IF = 1), the re-entrancy check (it needs a second CPU; its IRQ0 storm alone is
//! not run there) and the second-CPU alarm (one vCPU). kvm-pvm's local APIC delivers an
//! interrupt without keeping it in service (its ISR bit reads clear in the handler, in the
//! guest's MMIO read and in `KVM_GET_LAPIC` alike — measured), so APICWrite's EOI vector is
//! inconclusive there, saying so. Without the irqchip (a KVM without it, or
//! [`SuiteOptions::irqchip`] off) there is no interrupt controller and no local APIC: Halt and
//! the APIC calls are skipped, and SetAlarm and CancelAlarm get their sanity vectors only
//! (noted "not measured"). Either way GetCycleFrequency and GetWallclockTime are measured
//! against the runner's PM timer and RTC, and checked against kvmclock where CPUID offers it,
//! see [kvmclock](#kvmclock). Whatever KVM cannot emulate (kvm-pvm: a protected-mode `iret`,
//! the reset the native Reboot ends in) is skipped with KVM's own reason rather than failed —
//! the guest's own interrupt handlers return with `popfd; retf 4` there instead of `iretd`
//! ([`crate::guest::GuestConfig::no_iret`]); a #UD at exactly the ring-3 stub's `int 0x80`
//! (kvm-pvm cannot run it) still lets the ring-3 state be checked from that frame.
//!
//! Before every kvm guest run the runner does what SeaBIOS does for an option ROM
//! ([`SuiteOptions::run_init16`], on by default; see [`crate::kvm`]): it far-calls the ROM's
//! 16-bit init in real mode with the image writable and a BIOS data area saying 639 KiB of
//! base memory, then maps the ROM read-only — so a ROM that takes private RAM at POST has it,
//! as under QEMU, and an activation note says what the init did. The PIT's counters, port
//! 0x61, the CMOS clock and a PM timer can be read there (a ROM's Init may measure the TSC
//! with them; the suite measures the ROM's clocks with the PM timer), but none of them raises
//! an interrupt. With `run_init16` off nothing runs the init (what a hypervisor
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
//! counted — with the irqchip that includes every local-APIC access (an EOI, a TPR or LVTT
//! write, APICRead's MMIO read) and the PICs' ports, so the APIC calls show no exits there. QEMU counts none: both fields are None (`null` in JSON) there.
//!
//! Every run is bounded: QEMU runs are killed after [`SuiteOptions::hang_timeout`] without
//! progress (the guest streams a record per step, so silence means a hang) and after
//! [`SuiteOptions::timeout_per_run`] in any case; KVM runs have the latter only.

mod activation;
mod batch;
mod counts;
mod iret_faults;
mod judge;
mod kvmclock;
mod outcomes;
mod plan;
mod reloc;
mod report;
mod run;
mod scenarios;
mod stress;
mod terminal;
mod timer;
mod vectors;

use crate::engine::Engine;
use crate::error::HarnessError;
use crate::guest::MemoryMap;
use crate::kvm::ExitCounts;
use crate::protocol::Exception;
use activation::{Activated, activation_steps};
use batch::{Outcome, run_batch};
use counts::{attach_exits, call_exits};
use judge::Judged;
use outcomes::PerCall;
use report::{log_run, log_summary};
use run::{Boot, Runner};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};
pub use stress::StressSummary;
use terminal::TerminalRuns;
use vectors::Spec;
use vmi_abi::call;
use vmi_abi::calls::NUM_CALLS;

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
    /// KVM engine: give each run KVM's in-kernel interrupt controllers (a local APIC, PICs,
    /// IOAPIC) where the host's KVM has them ([`crate::kvm::KvmConfig::irqchip`]; default
    /// on). Off: no interrupt controller, what a KVM without `KVM_CAP_IRQCHIP` presents.
    pub irqchip: bool,
    /// The ROM promises to take its time from kvmclock where the CPU offers it (`vmirom
    /// test` sets this for a ROM whose manifest names the kvm backend): where CPUID says KVM
    /// with kvmclock, a calling CPU without a registered pvclock area after a time call then
    /// fails the [kvmclock checks](self#kvmclock) instead of being noted, and elsewhere the
    /// verdicts note why those checks did not run.
    pub expect_kvmclock: bool,
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
            irqchip: true,
            expect_kvmclock: false,
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

/// Runs the conformance suite against the ROM at `rom`.
///
/// Errors only when nothing could run: the ROM file cannot be read, the engine is not
/// available (QEMU missing, KVM unusable), paging was asked for where the engine cannot page,
/// or a guest could not be built or started. Everything the ROM does — including not being
/// found by the probe — is in the report.
pub fn run_suite(rom: &Path, opts: &SuiteOptions) -> Result<SuiteReport, HarnessError> {
    let start = Instant::now();
    check_setup(rom, opts)?;
    let (paging, paging_note) = choose_paging(opts)?;
    let map = MemoryMap::new(opts.page_offset, paging)?;
    let runner = runner(rom, opts, map);
    let mut report = report::empty(rom, opts, paging);
    report.activation.notes.extend(paging_note);

    // 1. Activation.
    let Some(act) = activation::run(&runner, opts, &map, &mut report)? else {
        return Ok(report::finish(report, opts, start));
    };

    // 2. Relocation answers.
    let selected = |n: u8| {
        opts.only
            .as_ref()
            .is_none_or(|only| only.contains(&u32::from(n)))
    };
    let (mut verdicts, to_run) = reloc::verdicts(&act, selected);

    // 3. Plans.
    let ctx = plan::context(map, &act, opts.engine, opts.expect_kvmclock);
    let plan::Chosen {
        batch,
        terminal,
        notes,
    } = plan::choose(&ctx, &to_run, paging, &mut verdicts);

    // 4. Runs: the vector batch here, Shutdown/Reboot on their own (in parallel).
    let (outcomes, inconsistent, terminal_boots) =
        run_vectors(&runner, &batch, &terminal, &act, opts, &mut report)?;

    // 5. Judging.
    let mut judged = outcomes::judge_batch(&batch, &outcomes, &ctx);
    outcomes::time_again(&runner, &batch, &mut judged, &act, opts, &ctx, &mut report)?;
    let mut per_call = outcomes::by_call(&batch, judged);
    terminal::judge_terminals(&terminal, terminal_boots, &act, &mut report, &mut per_call);

    // 6. Re-entrancy under a timer-interrupt storm, for the calls that passed so far.
    let stressable = may_stress(selected, &per_call, &inconsistent);
    let (summary, boot) = stress::run(&runner, opts, &act, &stressable, &mut per_call)?;
    if let Some(boot) = boot {
        log_run(&mut report, "stress", 0, &boot);
    }
    report.stress = Some(summary);

    // 7. The verdicts, with each call's VM exits.
    report::call_verdicts(&mut verdicts, per_call, &inconsistent, &notes);
    attach_exits(&mut verdicts, &report.run_log);
    report.calls = verdicts;
    Ok(report::finish(report, opts, start))
}

/// What must hold before anything runs: the ROM file readable, the engine available, and no
/// option given that the engine cannot honour.
fn check_setup(rom: &Path, opts: &SuiteOptions) -> Result<(), HarnessError> {
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
        Engine::Kvm if !opts.extra_args.is_empty() => bad(format!(
            "QEMU arguments {:?} were given for the kvm engine",
            opts.extra_args
        )),
        Engine::Qemu(_) if opts.rom_base.is_some() => bad(format!(
            "a ROM base ({:#x?}) was given for {}: under QEMU SeaBIOS chooses where the ROM \
             goes",
            opts.rom_base, opts.engine
        )),
        Engine::Qemu(_) if !opts.run_init16 => bad(format!(
            "not running the ROM's 16-bit init was asked for {}: under QEMU SeaBIOS always \
             runs it (use the kvm engine)",
            opts.engine
        )),
        Engine::Qemu(_) if !opts.irqchip => bad(format!(
            "no interrupt controller was asked for {}: QEMU's machine always has its PICs \
             and local APIC (use the kvm engine)",
            opts.engine
        )),
        _ => Ok(()),
    }
}

/// Whether the guest pages ([`SuiteOptions::paging`], else wherever the engine can), and the
/// activation note when it does not; an error when paging was asked for where the engine
/// cannot page.
fn choose_paging(opts: &SuiteOptions) -> Result<(bool, Option<String>), HarnessError> {
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
    let note = (!paging).then(|| match &can_page {
        Err(why) => format!("running without paging: {why}"),
        Ok(()) => "running without paging (asked for)".into(),
    });
    Ok((paging, note))
}

/// The runner of every guest run of the suite.
fn runner(rom: &Path, opts: &SuiteOptions, map: MemoryMap) -> Runner {
    Runner {
        rom: rom.to_path_buf(),
        engine: opts.engine,
        map,
        rom_base: opts.rom_base,
        memory_mib: opts.memory_mib,
        timeout: opts.timeout_per_run,
        extra_args: opts.extra_args.clone(),
        keep_ram: opts.keep_ram,
        run_init16: opts.run_init16,
        irqchip: opts.irqchip,
    }
}

/// The batch's outcomes, the calls whose GetRelocationInfo answer changed between runs, and
/// every run of each terminal job.
type Ran = (Vec<Outcome>, BTreeMap<u8, String>, TerminalRuns);

/// Runs the batch and, alongside it ([`SuiteOptions::parallel`]), Shutdown/Reboot's runs of
/// their own. The batch's runs go into the run log; the terminal ones are logged when judged.
fn run_vectors(
    runner: &Runner,
    batch: &[Spec],
    terminal: &[Spec],
    act: &Activated,
    opts: &SuiteOptions,
    report: &mut SuiteReport,
) -> Result<Ran, HarnessError> {
    let jobs = terminal::jobs(terminal, opts);
    let mut batch_log = Vec::new();
    let batch_refs: Vec<&Spec> = batch.iter().collect();
    let (batch_out, terminal_boots) = if opts.parallel && !jobs.is_empty() {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| terminal::run_terminals(runner, jobs, opts.hang_timeout));
            let out = run_batch(runner, &batch_refs, act, opts, &mut batch_log);
            let t = handle.join().unwrap_or_default();
            (out, t)
        })
    } else {
        let out = run_batch(runner, &batch_refs, act, opts, &mut batch_log);
        (
            out,
            terminal::run_terminals(runner, jobs, opts.hang_timeout),
        )
    };
    let (outcomes, inconsistent) = batch_out?;
    for run in batch_log {
        log_summary(report, run);
    }
    Ok((outcomes, inconsistent, terminal_boots))
}

/// The calls the stress run may make: selected, no judgment of theirs failed, and their
/// GetRelocationInfo answer never changed.
fn may_stress<'a>(
    selected: impl Fn(u8) -> bool + 'a,
    per_call: &PerCall,
    inconsistent: &'a BTreeMap<u8, String>,
) -> impl Fn(u8) -> bool + 'a {
    let failed: Vec<u8> = per_call
        .iter()
        .filter(|(n, outs)| {
            inconsistent.contains_key(n)
                || outs.iter().any(|(_, o)| match o {
                    Judged::Failed(_) => true,
                    Judged::Checked(f) => !f.problems.is_empty(),
                    Judged::Unsupported(_) | Judged::Inconclusive(_) => false,
                })
        })
        .map(|(n, _)| *n)
        .collect();
    move |n: u8| selected(n) && !failed.contains(&n)
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
