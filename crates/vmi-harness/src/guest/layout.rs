//! The guest's fixed physical memory map and its linear (kernel) view.
//!
//! Every address here is physical. The image QEMU loads covers [`IMAGE_BASE`, end of code); the
//! stacks lie in the multiboot bss (zeroed by the loader) up to [`GUEST_END`]. With paging on,
//! the first [`LOWMEM_MAPPED`] bytes are mapped twice: identity and at `PAGE_OFFSET`, so
//! physical `p` is also linear `PAGE_OFFSET + p` ([`MemoryMap::va`]).

use crate::error::HarnessError;

/// Physical load address of the image (the multiboot header sits here).
pub const IMAGE_BASE: u32 = crate::multiboot::LOAD_ADDR;
/// Page directory: 1024 host-prepared PDEs (4 KiB, page aligned).
pub const PAGE_DIR: u32 = 0x0010_1000;
/// The GDT: [`GDT_ENTRIES`] host-prepared descriptors.
pub const GDT: u32 = 0x0010_2000;
/// Number of GDT entries (Linux's `GDT_ENTRIES`).
pub const GDT_ENTRIES: usize = vmi_abi::consts::LINUX_GDT_ENTRIES as usize;
/// GDTR image for the boot phase (base = physical GDT address), 6 bytes.
pub const GDTR_BOOT: u32 = 0x0010_2100;
/// GDTR image for the kernel phase (base = linear GDT address), 6 bytes.
pub const GDTR_KERNEL: u32 = 0x0010_2108;
/// IDTR image for the boot phase (boot IDT, physical base), 6 bytes.
pub const IDTR_BOOT: u32 = 0x0010_2110;
/// IDTR image for the kernel phase (kernel IDT, linear base), 6 bytes.
pub const IDTR_KERNEL: u32 = 0x0010_2118;
/// The 32-bit TSS loaded into TR (selector `LINUX_TSS`), 104 bytes.
pub const TSS: u32 = 0x0010_2200;
/// Size of the TSS (no I/O bitmap).
pub const TSS_LEN: usize = 104;
/// Boot-phase IDT: 256 gates whose handler offsets are physical.
pub const IDT_BOOT: u32 = 0x0010_3000;
/// Kernel-phase IDT: 256 gates whose handler offsets are linear (`PAGE_OFFSET` alias).
pub const IDT_KERNEL: u32 = 0x0010_3800;
/// Number of IDT gates.
pub const IDT_ENTRIES: usize = 256;
/// Guest variables (see [`var`]); zero at load.
pub const VARS: u32 = 0x0010_4000;
/// Per-CPU area: base of the `LINUX_PERCPU` segment loaded into FS (2 KiB).
pub const PERCPU: u32 = 0x0010_4800;
/// Size of the per-CPU area.
pub const PERCPU_LEN: u32 = 0x800;
/// Record buffer: a record (4-byte header + payload) is assembled here, then streamed out.
pub const RECORD_BUF: u32 = 0x0010_5000;
/// Size of the record buffer.
pub const RECORD_BUF_LEN: u32 = 0x1000;
/// Host data: the stream header, the strings the probe compares with, later call vectors.
pub const HOST_DATA: u32 = 0x0010_6000;
/// End of the host-data area.
pub const HOST_DATA_END: u32 = 0x0011_0000;
/// Code: the entry point is the first byte.
pub const CODE: u32 = 0x0011_0000;
/// End of the code area.
pub const CODE_END: u32 = 0x0017_0000;
/// Ring-0 stack used on a privilege change (TSS.ESP0 = its top), in the bss.
pub const RING0_STACK: u32 = 0x0017_0000;
/// Top of the ring-0 stack.
pub const RING0_STACK_TOP: u32 = 0x0018_0000;
/// Kernel stack (64 KiB, bss); every call step starts with ESP = its top (linear).
pub const STACK: u32 = 0x0018_0000;
/// Top of the kernel stack.
pub const STACK_TOP: u32 = 0x0019_0000;
/// The test area (64 KiB, bss): pages the call vectors use ([`mod@test`]).
pub const TEST_AREA: u32 = 0x0019_0000;
/// End of the guest (multiboot `bss_end_addr`).
pub const GUEST_END: u32 = 0x001A_0000;
/// The second CPU's stack top (64 KiB below it, outside the image; identity-mapped).
pub const AP_STACK_TOP: u32 = 0x001B_0000;
/// Where the second CPU starts in real mode: the SIPI vector's page (vector 0x08). The stress
/// step copies the trampoline here; QEMU's multiboot information sits at 0x9000, above it.
pub const AP_TRAMPOLINE: u32 = 0x8000;
/// Bytes of the trampoline.
pub const AP_TRAMPOLINE_LEN: u32 = 0x100;

/// Physical address of the local APIC (Linux's `APIC_DEFAULT_PHYS_BASE`).
pub const APIC_PHYS: u32 = 0xFEE0_0000;
/// Size of a small page.
pub const PAGE: u32 = 0x1000;

/// The test area: physical pages and scratch buffers the call vectors use. All of it is bss
/// (zero at load); the boot code fills in the page table of the test window, the second page
/// directory, the frame markers and the ring-3 stub.
pub mod test {
    use super::TEST_AREA;

    /// Page table of the test window (the PDE covering [`MemoryMap::window`](super::MemoryMap::window)).
    pub const PT_WINDOW: u32 = TEST_AREA;
    /// A second page directory, a copy of the guest's (SetCR3 loads it).
    pub const PAGE_DIR2: u32 = TEST_AREA + 0x1000;
    /// Frame A of the TLB tests (first dword: [`MARK_A`]).
    pub const FRAME_A: u32 = TEST_AREA + 0x2000;
    /// Frame B of the TLB tests (first dword: [`MARK_B`]).
    pub const FRAME_B: u32 = TEST_AREA + 0x3000;
    /// The ring-3 stub's page: `int 0x80; jmp $` ([`USER_STUB`]).
    pub const USER_CODE: u32 = TEST_AREA + 0x4000;
    /// The ring-3 stack page.
    pub const USER_STACK: u32 = TEST_AREA + 0x5000;
    /// Scratch page: copies of descriptor tables and buffers the ROM writes.
    pub const SCRATCH: u32 = TEST_AREA + 0x6000;
    /// A copy of the GDT (SetGDT loads it).
    pub const GDT2: u32 = SCRATCH;
    /// The LDT that SetLDT's descriptor points at (32 entries).
    pub const LDT: u32 = SCRATCH + 0x100;
    /// Scratch descriptor table for WriteGDTEntry / WriteLDTEntry (32 entries).
    pub const DESC_TABLE: u32 = SCRATCH + 0x200;
    /// Entries in [`DESC_TABLE`].
    pub const DESC_ENTRIES: u32 = 32;
    /// Pseudo-descriptor buffers (4 × 16 bytes): inputs of SetGDT/SetIDT, outputs of
    /// GetGDT/GetIDT.
    pub const PSEUDO: u32 = SCRATCH + 0x300;
    /// A `vmi_ap_state` for SetInitialAPState (92 bytes).
    pub const AP_STATE: u32 = SCRATCH + 0x380;
    /// 16 bytes around the 64-bit entry SetPxELong writes (the entry is at +4).
    pub const PXE_LONG: u32 = SCRATCH + 0x400;
    /// A second TSS (SetTR loads a descriptor pointing at it).
    pub const TSS2: u32 = SCRATCH + 0x500;
    /// A copy of the kernel IDT (SetIDT loads it).
    pub const IDT2: u32 = TEST_AREA + 0x7000;
    /// Scratch gate table for WriteIDTEntry (64 entries).
    pub const IDT_SCRATCH: u32 = TEST_AREA + 0x7800;
    /// Entries in [`IDT_SCRATCH`].
    pub const IDT_SCRATCH_ENTRIES: u32 = 64;
    /// Frame C of the global-page TLB test (first dword: [`MARK_C`]).
    pub const FRAME_C: u32 = TEST_AREA + 0x8000;
    /// Stack the guest switches to while capturing a vector's registers.
    pub const CAPTURE_STACK: u32 = TEST_AREA + 0x9000;
    /// Top of the capture stack.
    pub const CAPTURE_STACK_TOP: u32 = TEST_AREA + 0xA000;
    /// A page announced to AllocatePage / ReleasePage (left all zero).
    pub const ZERO_PAGE: u32 = TEST_AREA + 0xA000;
    /// A `SAMPLES` record being assembled (header, then the payload): the alarm handler
    /// writes the TSC (low 32 bits) at each alarm and reference-timer interrupt into its
    /// lists ([`SAMPLE_ALARMS`], [`SAMPLE_REFERENCES`]), and the guest streams it from here
    /// (the record buffer holds the `VECTOR_RESULT` being captured).
    pub const SAMPLES: u32 = TEST_AREA + 0xB000;
    /// The alarm's list in [`SAMPLES`].
    pub const SAMPLE_ALARMS: u32 = SAMPLES
        + crate::protocol::RECORD_HEADER_LEN as u32
        + 4 * crate::protocol::samples::ALARM_TSC as u32;
    /// The reference timer's list in [`SAMPLES`].
    pub const SAMPLE_REFERENCES: u32 = SAMPLES
        + crate::protocol::RECORD_HEADER_LEN as u32
        + 4 * crate::protocol::samples::REFERENCE_TSC as u32;
    /// Words of each list.
    pub const SAMPLE_SLOTS: u32 = crate::protocol::samples::SLOTS as u32;
    /// The second CPU's own copy of the GDT in the alarm scenario (as in Linux, every CPU
    /// has its own: a ROM may tell CPUs apart by their GDT base).
    pub const AP_GDT: u32 = TEST_AREA + 0xC000;
    /// Its GDTR image (6 bytes: limit, linear base).
    pub const AP_GDTR: u32 = AP_GDT + 0x100;
    /// End of the test area.
    pub const END: u32 = TEST_AREA + 0x1_0000;

    /// First dword of frame A.
    pub const MARK_A: u32 = 0xA11C_E00A;
    /// First dword of frame B.
    pub const MARK_B: u32 = 0xB0B0_000B;
    /// First dword of frame C.
    pub const MARK_C: u32 = 0xC0C0_000C;
    /// The ring-3 stub as a little-endian dword: `CD 80` (`int 0x80`), `EB FE` (`jmp $`).
    pub const USER_STUB: u32 = 0xFEEB_80CD;
    /// Length of the stub's `int 0x80`: the trap frame's EIP is the stub plus this.
    pub const USER_STUB_INT_LEN: u32 = 2;
    /// Vector of the DPL-3 gate the ring-3 stub returns through.
    pub const USER_RETURN_VECTOR: u8 = 0x80;

    /// Window page: the ring-3 stub (user, read/write).
    pub const WIN_USER_CODE: u32 = 0;
    /// Window page: the ring-3 stack (user, read/write).
    pub const WIN_USER_STACK: u32 = 1;
    /// Window page: TLB test page (supervisor, initially frame A).
    pub const WIN_TLB: u32 = 2;
    /// Window page: global TLB test page (supervisor, G, initially frame A).
    pub const WIN_TLB_GLOBAL: u32 = 3;
    /// Window page: the local APIC (PCD, PWT).
    pub const WIN_APIC: u32 = 4;
    /// Window page: the entry SetPxE writes (initially not present).
    pub const WIN_SETPXE: u32 = 5;
    /// Window page: an entry the guest wrote itself (UpdatePxE's subject; frame A).
    pub const WIN_UPDATE: u32 = 6;
    /// Number of window entries the guest sets up (and restores after every vector).
    pub const WIN_PAGES: u32 = 7;

    /// PTE bits: present, writable.
    pub const PTE_KERNEL: u32 = 0x003;
    /// PTE bits: present, writable, user.
    pub const PTE_USER: u32 = 0x007;
    /// PTE bit: global.
    pub const PTE_GLOBAL: u32 = 0x100;
    /// PTE bits: write-through, cache disabled.
    pub const PTE_UNCACHED: u32 = 0x018;

    /// The initial (and restored) PTEs of the window, by page.
    pub const fn window_ptes() -> [u32; WIN_PAGES as usize] {
        [
            USER_CODE | PTE_USER,
            USER_STACK | PTE_USER,
            FRAME_A | PTE_KERNEL,
            FRAME_A | PTE_KERNEL | PTE_GLOBAL,
            super::APIC_PHYS | PTE_KERNEL | PTE_UNCACHED,
            0,
            FRAME_A | PTE_KERNEL,
        ]
    }
}
/// Bytes of low memory that are mapped (identity and at `PAGE_OFFSET`) with paging on.
pub const LOWMEM_MAPPED: u32 = 64 << 20;
/// Size of one PSE page.
pub const LARGE_PAGE: u32 = 4 << 20;

/// Offsets of the guest variables inside [`VARS`] (each a u32).
pub mod var {
    /// Linear address of the accepted ROM (0: none yet).
    pub const ROM_BASE: u32 = 0x00;
    /// Linear address of the ROM's Init entry (`ROM + 0x80`): target of `call [INIT_PTR]`.
    pub const INIT_PTR: u32 = 0x04;
    /// Linear address of the ROM's GetRelocationInfo entry (`ROM + 0x88`).
    pub const RELOC_PTR: u32 = 0x08;
    /// The step being executed (a [`StepId`](crate::protocol::StepId) code).
    pub const CUR_STEP: u32 = 0x0C;
    /// End status (an [`EndStatus`](crate::protocol::EndStatus) code); non-zero skips ROM steps.
    pub const END_STATUS: u32 = 0x10;
    /// Non-zero while the exception handler runs (a nested fault exits at once).
    pub const IN_HANDLER: u32 = 0x14;
    /// Number of 55AA candidates the probe reported.
    pub const CANDIDATES: u32 = 0x18;
    /// ESP as a call vector's call came back (saved before anything else runs).
    pub const SAVE_ESP: u32 = 0x20;
    /// Non-zero: a trap is expected; the exception handler writes `TRAP` and jumps here.
    pub const TRAP_RESUME: u32 = 0x24;
    /// Vector of the last expected trap (`NO_FAULT` when none came).
    pub const LAST_TRAP: u32 = 0x28;
    /// Timer interrupts (IRQ0) counted by the timer handler.
    pub const TICKS: u32 = 0x2C;
    /// CR0 after boot (restored after every vector).
    pub const BOOT_CR0: u32 = 0x30;
    /// CR3 after boot (restored after every vector).
    pub const BOOT_CR3: u32 = 0x34;
    /// CR4 after boot (restored after every vector).
    pub const BOOT_CR4: u32 = 0x38;
    /// The current vector's resume point (where an IRET frame or an expected trap returns).
    pub const RESUME: u32 = 0x3C;
    /// 1 once the current vector's call came back to its call site.
    pub const SITE: u32 = 0x40;
    /// 8 bytes for `sgdt` / `sidt`.
    pub const DT_TEMP: u32 = 0x48;
    /// Which stress configuration runs (its index + 1; 0: none): while it is non-zero the
    /// timer handler makes the configuration's handler calls.
    pub const STRESS_ACTIVE: u32 = 0x50;
    /// Iterations of the stress loop completed.
    pub const STRESS_LOOPS: u32 = 0x54;
    /// The first violation the stress loop found (0: none; see
    /// [`StressResult::violation`](crate::protocol::StressResult::violation)).
    pub const STRESS_VIOLATION: u32 = 0x58;
    /// TSC when the stress step started (8 bytes).
    pub const STRESS_TSC: u32 = 0x5C;
    /// Total ROM-call invocations of the run: the next index into [`INVOKE_LOG`] (mod its
    /// length), taken with `xadd`.
    pub const INVOKE_TOTAL: u32 = 0x64;
    /// The stress loop's previous RDTSC result (8 bytes; it checks monotonicity).
    pub const STRESS_TSC_PREV: u32 = 0x68;
    /// Scratch word of the stress loop's result checks.
    pub const STRESS_TEMP: u32 = 0x70;
    /// Where the second CPU continues after its trampoline (physical address of its code).
    pub const AP_ENTRY: u32 = 0x74;
    /// Set by the second CPU once it runs the guest's code.
    pub const AP_READY: u32 = 0x78;
    /// Set by the second CPU when its loop is over.
    pub const AP_DONE: u32 = 0x7C;
    /// Loop iterations the second CPU completed.
    pub const AP_LOOPS: u32 = 0x80;
    /// Linear address of the current vector's call site (reported in `VECTOR_RESULT`).
    pub const SITE_EIP: u32 = 0x84;
    /// Alarm recording: 0 (off: an interrupt other than IRQ0 ends the run) or a mode word of
    /// [`alarm`](super::alarm) flags; while it is non-zero the interrupt stubs of vectors
    /// 0x20–0xFF (but 0x27 and 0x80) go to the alarm handler, which counts them.
    pub const ALARM_MODE: u32 = 0x88;
    /// The vector the alarm is expected at (0x20: IRQ0 through the PIC).
    pub const ALARM_VECTOR: u32 = 0x8C;
    /// Interrupts at [`ALARM_VECTOR`], on any CPU.
    pub const ALARM_HITS: u32 = 0x90;
    /// Of those, the ones a CPU other than the first took (with
    /// [`alarm::PER_CPU`](super::alarm::PER_CPU)).
    pub const ALARM_HITS_AP: u32 = 0x94;
    /// Interrupts at any other vector.
    pub const ALARM_STRAY: u32 = 0x98;
    /// The last such vector.
    pub const ALARM_STRAY_VEC: u32 = 0x9C;
    /// TSC at the alarm handler's entry for the first hit (8 bytes).
    pub const ALARM_FIRST_TSC: u32 = 0xA0;
    /// The vector of the reference timer ([`Op::RefTimer`](crate::guest::Op::RefTimer); 0:
    /// none).
    pub const ALARM_REF_VECTOR: u32 = 0xA8;
    /// Interrupts of the reference timer.
    pub const ALARM_REF_HITS: u32 = 0xAC;
    /// GetCycleCounter(REAL) through the ROM right after the first hit's entry (8 bytes; with
    /// [`alarm::READ_REAL`](super::alarm::READ_REAL)).
    pub const ALARM_FIRST_REAL: u32 = 0xB0;
    /// Hits whose in-service bit was set at the handler's entry (with
    /// [`alarm::CHECK_ISR`](super::alarm::CHECK_ISR)).
    pub const ALARM_ISR_IN: u32 = 0xB8;
    /// Hits whose in-service bit was still set after the handler's EOI.
    pub const ALARM_ISR_STUCK: u32 = 0xBC;
    /// The first CPU's local-APIC ID (ID register bits 24–31).
    pub const BSP_APIC_ID: u32 = 0xC0;
    /// Set by the second CPU once its alarm is armed (the alarm scenario on the second CPU).
    pub const AP_ARMED: u32 = 0xC4;
    /// Set by the first CPU: the second CPU cancels its alarm and finishes.
    pub const AP_STOP: u32 = 0xC8;
    /// CancelAlarm's EAX on the second CPU.
    pub const AP_CANCEL: u32 = 0xCC;
    /// The period of the second CPU's alarm (8 bytes).
    pub const AP_PERIOD: u32 = 0xD0;
    /// Scratch words of the timing operations (6 words).
    pub const TIME_TEMP: u32 = 0xD8;
    /// Alarm interrupts whose TSC went into [`test::SAMPLES`](super::test::SAMPLES) since
    /// the last [`Op::Window`](crate::guest::Op::Window) started (only the first
    /// [`SAMPLE_SLOTS`](super::test::SAMPLE_SLOTS) are kept).
    pub const ALARM_SAMPLES: u32 = 0xF0;
    /// The same for the reference timer.
    pub const REF_SAMPLES: u32 = 0xF4;
    /// Hits at which KVM had armed paravirtual EOI — the word MSR_KVM_PV_EOI_EN names had its
    /// bit 0 set — when the handler was about to acknowledge through the ROM (with
    /// [`alarm::PV_EOI`](super::alarm::PV_EOI)).
    pub const ALARM_PV_ARMED: u32 = 0xF8;
    /// Of those, the ones whose bit was still set right after the ROM's acknowledgement.
    pub const ALARM_PV_LEFT: u32 = 0xFC;
    /// The 32 extra words of the current vector ([`crate::protocol::vector_result::EXTRA`]).
    pub const XBUF: u32 = 0x100;
    /// GetRelocationInfo's EAX for calls 0 .. [`RELOC_SLOTS`]: what call vectors call.
    pub const RELOC_EIPS: u32 = 0x200;
    /// Number of [`RELOC_EIPS`] slots.
    pub const RELOC_SLOTS: u32 = 128;
    /// Invocation counters, one u32 per call number (0 .. [`RELOC_SLOTS`]): the guest adds 1
    /// to call *n*'s counter right before every `call`/`jmp` to call *n*'s relocation target
    /// (see [`Invocations`](super::Invocations)). Never reset during a run.
    pub const INVOKED: u32 = 0x400;
    /// The call numbers of the run's last [`INVOKE_LOG_LEN`] invocations, one byte each: the
    /// invocation with index *k* (counting from 0 in the run) writes slot *k* mod the length.
    pub const INVOKE_LOG: u32 = 0x600;
    /// Slots of [`INVOKE_LOG`].
    pub const INVOKE_LOG_LEN: u32 = 256;
    /// GetRelocationInfo's relocation type (DL) per call, one byte each (0 .. [`RELOC_SLOTS`]).
    pub const RELOC_TYPES: u32 = 0x700;
    /// Size of the variables page.
    pub const SIZE: u32 = 0x800;
}

/// Mode flags of the alarm handler ([`var::ALARM_MODE`]). IRQ0 (vector 0x20) is always
/// acknowledged at the PIC, the reference timer's vector natively, the other vectors as the
/// EOI kind says.
pub mod alarm {
    /// Count; acknowledge nothing (the vector's in-service bit stays set).
    pub const EOI_NONE: u32 = 1;
    /// Count; acknowledge with a native write to the local APIC's EOI register.
    pub const EOI_NATIVE: u32 = 2;
    /// Count; acknowledge with APICWrite(0xB0, 0) through the ROM, like Linux.
    pub const EOI_ROM: u32 = 3;
    /// The bits of the EOI kind.
    pub const EOI_MASK: u32 = 3;
    /// At the first hit also read GetCycleCounter(REAL) through the ROM.
    pub const READ_REAL: u32 = 1 << 8;
    /// Tell the CPUs apart: read the local-APIC ID at every hit.
    pub const PER_CPU: u32 = 1 << 9;
    /// Check the vector's in-service bit at entry and after the EOI.
    pub const CHECK_ISR: u32 = 1 << 10;
    /// Draining: count nothing, acknowledge every interrupt natively.
    pub const DRAIN: u32 = 1 << 11;
    /// Around an acknowledgement through the ROM, watch KVM's paravirtual EOI (KVM with
    /// MSR_KVM_PV_EOI_EN only: the handler reads that MSR): count in
    /// [`var::ALARM_PV_ARMED`](super::var::ALARM_PV_ARMED) the hits whose PV-EOI word had bit
    /// 0 set before the call, in [`var::ALARM_PV_LEFT`](super::var::ALARM_PV_LEFT) those where
    /// it was still set after it.
    pub const PV_EOI: u32 = 1 << 12;
}

/// How often a run invoked each call, as the guest counted it: read from the guest's
/// variables page ([`VARS`], [`var::SIZE`] bytes) in a RAM image taken during or after the
/// run — so a run that died in the middle of a call still tells what it invoked.
///
/// **What counts as an invocation**: one execution of a guest `call` or `jmp` whose target is
/// a relocation target GetRelocationInfo returned (the guest increments the call's counter
/// immediately before that instruction) — by a call vector (exactly once per vector that got
/// that far), by the stress loop, or by the timer handler during a stress step. A call that
/// does not return (IRET, SYSEXIT, Shutdown, Reboot) counts once, like any other. Init and
/// GetRelocationInfo are entry points, not calls: they are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocations {
    /// Invocations per call number (`counts[n]`, n < [`var::RELOC_SLOTS`]).
    pub counts: Vec<u32>,
    /// All invocations of the run.
    pub total: u32,
    /// The call numbers of the last `min(total, `[`var::INVOKE_LOG_LEN`]`)` invocations,
    /// oldest first (the order the guest reserved log slots in).
    pub last: Vec<u8>,
}

impl Invocations {
    /// Reads the counters from the variables page `vars` (its first byte = [`VARS`]); None
    /// when the page is too short. Never panics, whatever the bytes.
    pub fn from_vars(vars: &[u8]) -> Option<Invocations> {
        let word = |off: u32| -> Option<u32> {
            let at = off as usize;
            let b = vars.get(at..at + 4)?;
            Some(u32::from_le_bytes([
                *b.first()?,
                *b.get(1)?,
                *b.get(2)?,
                *b.get(3)?,
            ]))
        };
        let counts = (0..var::RELOC_SLOTS)
            .map(|n| word(var::INVOKED + 4 * n))
            .collect::<Option<Vec<u32>>>()?;
        let total = word(var::INVOKE_TOTAL)?;
        let log_at = var::INVOKE_LOG as usize;
        let log = vars.get(log_at..log_at + var::INVOKE_LOG_LEN as usize)?;
        let kept = total.min(var::INVOKE_LOG_LEN);
        let last = (total - kept..total)
            .filter_map(|k| log.get((k % var::INVOKE_LOG_LEN) as usize).copied())
            .collect();
        Some(Invocations {
            counts,
            total,
            last,
        })
    }

    /// Reads them from a RAM image whose first byte is guest-physical address 0.
    pub fn from_ram(ram: &[u8]) -> Option<Invocations> {
        let at = VARS as usize;
        Invocations::from_vars(ram.get(at..at + var::SIZE as usize)?)
    }

    /// Invocations of call `n` (0 for numbers without a counter).
    pub fn of(&self, n: u32) -> u32 {
        self.counts.get(n as usize).copied().unwrap_or(0)
    }
}

/// Where the guest runs: the `PAGE_OFFSET` split and whether paging is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    page_offset: u32,
    paging: bool,
}

impl MemoryMap {
    /// A map for `page_offset` (a multiple of 4 MiB, at least [`LOWMEM_MAPPED`], leaving room
    /// for the alias below 4 GiB). With `paging` off the offset is recorded but unused: linear
    /// addresses equal physical ones.
    pub fn new(page_offset: u32, paging: bool) -> Result<MemoryMap, HarnessError> {
        let bad = |reason: &str| HarnessError::InvalidConfig {
            reason: format!("PAGE_OFFSET {page_offset:#010x}: {reason}"),
        };
        if page_offset % LARGE_PAGE != 0 {
            return Err(bad("not a multiple of 4 MiB"));
        }
        if page_offset < LOWMEM_MAPPED {
            return Err(bad(
                "the alias would overlap the identity map of low memory",
            ));
        }
        if u64::from(page_offset) + u64::from(LOWMEM_MAPPED) > 1 << 32 {
            return Err(bad("the alias of low memory would run past 4 GiB"));
        }
        Ok(MemoryMap {
            page_offset,
            paging,
        })
    }

    /// The configured `PAGE_OFFSET`.
    pub const fn page_offset(&self) -> u32 {
        self.page_offset
    }

    /// Whether the guest enables paging.
    pub const fn paging(&self) -> bool {
        self.paging
    }

    /// Offset between a physical address and its kernel linear address: `PAGE_OFFSET` with
    /// paging, 0 without.
    pub const fn linear_offset(&self) -> u32 {
        if self.paging { self.page_offset } else { 0 }
    }

    /// Kernel linear address of physical `phys` (Linux's `__va`).
    pub const fn va(&self, phys: u32) -> u32 {
        phys.wrapping_add(self.linear_offset())
    }

    /// Linear base of the test window: 4 MiB mapped through the page table
    /// [`test::PT_WINDOW`] with 4 KiB pages, outside both the identity map and the
    /// `PAGE_OFFSET` alias (at 64 MiB, or right above the alias when `PAGE_OFFSET` < 128 MiB).
    pub const fn window(&self) -> u32 {
        if self.page_offset >= 2 * LOWMEM_MAPPED {
            LOWMEM_MAPPED
        } else {
            self.page_offset + LOWMEM_MAPPED
        }
    }

    /// Linear address of window page `i` (meaningful with paging only).
    pub const fn window_page(&self, i: u32) -> u32 {
        self.window() + i * PAGE
    }

    /// Where the ring-3 stub runs: its window page with paging, its frame without.
    pub const fn user_code(&self) -> u32 {
        if self.paging {
            self.window_page(test::WIN_USER_CODE)
        } else {
            test::USER_CODE
        }
    }

    /// Top of the ring-3 stack (linear).
    pub const fn user_stack_top(&self) -> u32 {
        PAGE + if self.paging {
            self.window_page(test::WIN_USER_STACK)
        } else {
            test::USER_STACK
        }
    }

    /// Where the guest reaches the local APIC: its window page with paging, the physical
    /// address without.
    pub const fn apic(&self) -> u32 {
        if self.paging {
            self.window_page(test::WIN_APIC)
        } else {
            APIC_PHYS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_ordered_and_aligned() {
        let order = [
            IMAGE_BASE,
            PAGE_DIR,
            GDT,
            GDTR_BOOT,
            TSS,
            IDT_BOOT,
            IDT_KERNEL,
            VARS,
            PERCPU,
            RECORD_BUF,
            HOST_DATA,
            CODE,
            RING0_STACK,
            STACK,
            TEST_AREA,
            GUEST_END,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(PAGE_DIR % 4096, 0);
        assert!(GDT + (GDT_ENTRIES as u32) * 8 <= GDTR_BOOT);
        assert!(IDT_BOOT + (IDT_ENTRIES as u32) * 8 <= IDT_KERNEL);
        assert!(IDT_KERNEL + (IDT_ENTRIES as u32) * 8 <= VARS);
        const { assert!(GUEST_END <= LOWMEM_MAPPED) };
        assert_eq!(CODE_END, RING0_STACK);
        assert_eq!(STACK_TOP, TEST_AREA);
        assert_eq!(test::END, GUEST_END);
        const { assert!(var::RELOC_EIPS + 4 * var::RELOC_SLOTS <= var::INVOKED) };
        const { assert!(var::INVOKED + 4 * var::RELOC_SLOTS <= var::INVOKE_LOG) };
        const { assert!(var::INVOKE_LOG + var::INVOKE_LOG_LEN <= var::RELOC_TYPES) };
        const { assert!(var::RELOC_TYPES + var::RELOC_SLOTS <= var::SIZE) };
        const { assert!(VARS + var::SIZE <= PERCPU) };
        const { assert!(var::AP_LOOPS + 4 <= var::SITE_EIP) };
        const { assert!(var::SITE_EIP + 4 <= var::ALARM_MODE) };
        const { assert!(var::AP_PERIOD + 8 <= var::TIME_TEMP) };
        const { assert!(var::TIME_TEMP + 24 <= var::ALARM_SAMPLES) };
        const { assert!(var::REF_SAMPLES + 4 <= var::XBUF) };
        const { assert!(test::SAMPLE_REFERENCES + 4 * test::SAMPLE_SLOTS <= test::AP_GDT) };
        const { assert!(test::AP_GDTR + 8 <= test::END) };
        const { assert!(AP_TRAMPOLINE + AP_TRAMPOLINE_LEN <= 0x9000) };
        const { assert!(AP_STACK_TOP - 0x1_0000 >= GUEST_END) };
        assert!(var::INVOKE_LOG_LEN.is_power_of_two() && var::INVOKE_LOG_LEN <= 256);
        assert!(
            var::XBUF + 4 * crate::protocol::vector_result::EXTRA_WORDS as u32 <= var::RELOC_EIPS
        );
        const { assert!(test::LDT + 0x100 <= test::DESC_TABLE) };
        assert!(test::TSS2 + TSS_LEN as u32 <= test::SCRATCH + PAGE);
        const { assert!(test::IDT_SCRATCH + 8 * test::IDT_SCRATCH_ENTRIES <= test::FRAME_C) };
    }

    #[test]
    fn invocations_decode_from_the_variables_page() {
        let mut ram = vec![0u8; (VARS + var::SIZE) as usize];
        let put = |ram: &mut Vec<u8>, off: u32, v: u32| {
            let at = (VARS + off) as usize;
            ram[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut ram, var::INVOKED + 4 * 19, 3);
        put(&mut ram, var::INVOKED + 4 * 27, 300);
        put(&mut ram, var::INVOKE_TOTAL, 303);
        for k in 0..303u32 {
            let at = (VARS + var::INVOKE_LOG + k % 256) as usize;
            ram[at] = if k < 300 { 27 } else { 19 };
        }
        let inv = Invocations::from_ram(&ram).unwrap();
        assert_eq!(
            (inv.of(19), inv.of(27), inv.of(200), inv.total),
            (3, 300, 0, 303)
        );
        assert_eq!(inv.counts.len(), var::RELOC_SLOTS as usize);
        assert_eq!(inv.last.len(), 256);
        assert_eq!(&inv.last[253..], &[19, 19, 19]);
        assert!(inv.last[..253].iter().all(|c| *c == 27));
        assert_eq!(Invocations::from_ram(&ram[..0x10_4000]), None);
        assert_eq!(Invocations::from_vars(&[0xFF; 3]), None);
    }

    #[test]
    fn the_window_avoids_both_maps() {
        for po in [
            0xC000_0000u32,
            0x8000_0000,
            0x4000_0000,
            0x0800_0000,
            0x0400_0000,
            0xFC00_0000,
        ] {
            let m = MemoryMap::new(po, true).unwrap();
            let w = m.window();
            assert_eq!(w % LARGE_PAGE, 0);
            assert!(w >= LOWMEM_MAPPED, "{po:#x}");
            assert!(w + LARGE_PAGE <= po || w >= po + LOWMEM_MAPPED, "{po:#x}");
        }
        let m = MemoryMap::new(0xC000_0000, true).unwrap();
        assert_eq!(m.user_code(), 0x0400_0000);
        assert_eq!(m.apic(), 0x0400_4000);
        let flat = MemoryMap::new(0xC000_0000, false).unwrap();
        assert_eq!(
            (flat.user_code(), flat.apic()),
            (test::USER_CODE, APIC_PHYS)
        );
        assert_eq!(flat.user_stack_top(), test::USER_STACK + PAGE);
    }

    #[test]
    fn page_offsets() {
        for po in [0xC000_0000, 0x8000_0000, 0x4000_0000] {
            let m = MemoryMap::new(po, true).unwrap();
            assert_eq!(m.va(0xC_0000), po + 0xC_0000);
            assert_eq!(MemoryMap::new(po, false).unwrap().va(0xC_0000), 0xC_0000);
        }
        assert!(MemoryMap::new(0xC010_0000, true).is_err());
        assert!(MemoryMap::new(0, true).is_err());
        assert!(MemoryMap::new(0xFE00_0000 & !(LARGE_PAGE - 1), true).is_err());
    }
}
