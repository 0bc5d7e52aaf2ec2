//! A small KVM VMM (rust-vmm crates) that boots the multiboot [test guest](crate::guest)
//! against a ROM mapped read-only — no QEMU, no BIOS image, but by default the one thing a
//! BIOS does for an option ROM.
//!
//! Under QEMU, SeaBIOS copies the ROM into shadow RAM, runs its 16-bit init and then
//! write-protects it. Here the image sits at a caller-chosen 2 KiB boundary, and
//! [`KvmConfig::run_init16`] (on by default) does what SeaBIOS does before the guest runs: the
//! ROM's slot is writable, low memory holds a real-mode IVT, a BIOS data area whose word at
//! 0x413 says 639 KiB of base memory (640 KiB minus SeaBIOS's 1 KiB EBDA, whose segment is at
//! 0x40E) and a `$PnP` installation check structure, and the vCPU far-calls the ROM's init
//! (offset 3) in real mode with SeaBIOS's registers (AX = 0, BX = DX = 0xFFFF, ES:DI → the
//! `$PnP` structure; see [`bios`]) until it returns with `retf`. Then the slot becomes
//! read-only (`KVM_MEM_READONLY`) and the guest boots in protected mode; a ROM that took
//! private RAM at POST (lowered 0x413) finds it, and the multiboot information's `mem_lower`
//! is what the BDA says. An init that faults, halts, hangs past [`KvmConfig::timeout`] or
//! cannot be run is an error ([`HarnessError::RomInit`]) naming it; an image SeaBIOS would
//! not run (bad signature, size or checksum) is mapped without running its init
//! ([`Init16::Skipped`]). What happened is in [`KvmRun::init16`].
//!
//! With `run_init16` off the image is simply *there*, the way a hypervisor that maps the ROM
//! itself presents it: nothing ran the 16-bit init (a ROM that relies on private RAM answers
//! NONE for the calls that need it). Either way the pages are read-only for real once the
//! guest runs, so a ROM that tries to keep writable state inside its own image is caught
//! writing.
//!
//! [`HarnessError::RomInit`]: crate::HarnessError::RomInit
//!
//! ```no_run
//! use vmi_harness::kvm::{self, KvmConfig};
//!
//! kvm::available().map_err(|why| vmi_harness::HarnessError::KvmUnavailable { reason: why })?;
//! let run = kvm::run(&KvmConfig {
//!     kernel: vmi_harness::multiboot::exit_stub(0x21),
//!     ..KvmConfig::default()
//! })?;
//! assert_eq!(run.guest_exit_value(), Some(0x21));
//! # Ok::<(), vmi_harness::HarnessError>(())
//! ```
//!
//! # Memory map (guest physical)
//!
//! | Range | What | KVM slot |
//! |---|---|---|
//! | `0x0000_0000`–`0x0009_FFFF` | low RAM (640 KiB); with the BIOS step the IVT, BDA and EBDA ([`bios`]) and whatever the ROM's init took below 639 KiB; the multiboot info at [`MBI_ADDR`], the loader's stack below [`BOOT_STACK_TOP`] (also the init's real-mode stack) | 0, read/write |
//! | `0x000A_0000`–`0x000F_FFFF` | legacy hole: no memory (reads `0xFF`, writes recorded) | — |
//! | ROM base (default [`DEFAULT_ROM_BASE`]) | the ROM image, in a slot rounded out to 4 KiB pages (bytes around the image read `0xFF`) | 2, `KVM_MEM_READONLY` (writable during the BIOS step's init) |
//! | `0x0010_0000`–`memory_mib` MiB | RAM: the multiboot image at its `load_addr`, bss zeroed | 1, read/write |
//!
//! The ROM base must be a multiple of 2 KiB inside the window Linux scans
//! (`0xC0000`–`0xDFFFF`, [`ROM_WINDOW_START`]..[`ROM_WINDOW_END`]) with the whole image ending
//! at or below `0xE0000`; anything else is an error.
//!
//! # The vCPU at entry (what a multiboot loader leaves)
//!
//! 32-bit protected mode, paging off: CR0 = PE|ET, CR4 = EFER = 0; CS = flat 4 GiB
//! execute/read code (selector `0x10`), DS = ES = FS = GS = SS = flat 4 GiB read/write data
//! (selector `0x18`) — set in the hidden descriptor caches through `KVM_SET_SREGS`, with an
//! empty GDTR and IDTR (the guest loads its own); EFLAGS = 0x2, EIP = the multiboot entry,
//! EAX = `0x2BADB002`, EBX = [`MBI_ADDR`], ESP = [`BOOT_STACK_TOP`]. CPUID answers what KVM
//! supports (`KVM_GET_SUPPORTED_CPUID` → `KVM_SET_CPUID2`).
//!
//! # Interrupts
//!
//! Where the host's KVM has them (`KVM_CAP_IRQCHIP`, [`irqchip_supported`]) and
//! [`KvmConfig::irqchip`] is on (the default), the VM gets KVM's in-kernel interrupt
//! controllers before its vCPU (`KVM_CREATE_IRQCHIP`): the two 8259A PICs, an IOAPIC at
//! `0xFEC00000` and a local APIC for the vCPU, which resets as the BSP with IA32_APIC_BASE =
//! `0xFEE00900` (base `0xFEE00000`, enabled, BSP). KVM handles all of them itself: the guest
//! programs its local APIC (timer, TPR, self-IPIs, EOI; `0xFEE00030` reads version 0x14) and
//! KVM delivers what it raises; [`KvmRun::irqchip`] says whether the run had them. The one
//! device line raised is IRQ0: the PIT here is the runner's own ([`devices`], *not* KVM's
//! in-kernel PIT), and a runner thread raises GSI 0 (`KVM_IRQ_LINE`, KVM's default routing:
//! the master PIC's IRQ0 and IOAPIC pin 0) at each rising edge of its counter 0's output, at
//! the rate and in the mode the guest programmed ([`irq0`]: modes 2 and 3 every count ticks
//! of 1 193 182 Hz, modes 0 and 4 once; absolute deadlines, late edges coalesced);
//! [`KvmRun::irq0`] says how many edges it raised and how many it coalesced. The thread is
//! stopped and joined before the VM is closed. Besides IRQ0 the interrupt sources are the
//! local APIC's (its timer, IPIs the guest sends itself). kvm-pvm injects a pending interrupt
//! when it enters the vCPU with IF = 1 or wakes it from `hlt`: a guest that leaves
//! `KVM_RUN` only with IF = 0 (a `cli` loop around port reads) takes almost none of them.
//!
//! Without the irqchip (a KVM without it, or [`KvmConfig::irqchip`] off) there is no
//! interrupt controller: the guest's writes to the 8259A ports are ignored, the local APIC's
//! page is unmapped space (reads `0xFF`), the PIT raises nothing ([`KvmRun::irq0`] is None)
//! and no interrupt is ever delivered.
//!
//! Either way the PIT's counters, port 0x61, the CMOS RTC and an ACPI PM timer at port 0x608
//! (no ACPI table names it) can be read ([`devices`]: a ROM may measure time with them, the
//! suite times the ROM's clocks with the PM timer).
//!
//! # Exits
//!
//! | KVM exit | Action |
//! |---|---|
//! | `IoOut` port [`DEBUGCON_PORT`] (0xE9) | bytes appended to [`KvmRun::debugcon`] (up to [`DEBUGCON_LIMIT`]) |
//! | `IoOut` port [`EXIT_PORT`] (0xF4) | the run ends: [`EndReason::ExitPort`] with the byte written |
//! | `IoOut` ports 0x40–0x43, 0x61, 0x70, 0x71, 0x608–0x60B | the [`devices`] (PIT, port B, CMOS; the PM timer ignores writes) |
//! | `IoOut` other ports | ignored (Linux's delay port 0x80; without the irqchip also the 8259A PICs, which KVM handles with it) |
//! | `IoIn` ports 0x40–0x42, 0x61, 0x70, 0x71, 0x608–0x60B | the [`devices`] answer (0x608: the ACPI PM timer, 32 bits, on the host's monotonic clock) |
//! | `IoIn` any other port | the guest reads `0xFF` bytes |
//! | `MmioWrite` | recorded as an [`MmioWrite`] (address, size, value; which ROM offset) and the guest continues: this is a write to the read-only ROM slot or to unmapped space |
//! | `MmioRead` | the guest reads `0xFF` bytes (unmapped space) |
//! | `Hlt` (without the irqchip) | the run ends: [`EndReason::Halted`] (nothing can wake the vCPU); during the BIOS step, the init returned (or faulted, [`bios`]) |
//! | (with the irqchip) | `hlt` stays in KVM, which wakes the vCPU for an interrupt. The runner kicks the vCPU out of `KVM_RUN` every 10 ms and looks: halted (`KVM_GET_MP_STATE`) with IF = 0, or with IF = 1, nothing in the local APIC's IRR, no APIC timer counting down (one-shot count left, periodic count set, TSC deadline set) and no IRQ0 edge to come from PIT counter 0 — a halt nothing can end, seen on two polls in a row with a `KVM_RUN` between them (which injects what `KVM_GET_LAPIC` cannot show: an expired one-shot's interrupt, a PIC's) — ends the run as [`EndReason::Halted`], counted as one `Hlt` exit; any other halt goes on (to the interrupt or the time limit) |
//! | `Shutdown` | the run ends: [`EndReason::Shutdown`] (triple fault), or [`EndReason::PagingUnsupported`] when the vCPU stopped on a `mov cr0` that sets PG — the way kvm-pvm refuses paging |
//! | `FailEntry`, `InternalError` | error [`HarnessError::KvmExit`] with the hardware reason / suberror |
//! | any other exit | error [`HarnessError::KvmExit`] naming it |
//!
//! Local-APIC and IOAPIC MMIO and the PICs' ports are handled in KVM with the irqchip: they
//! are not exits and are not counted. Every exit is counted by kind ([`exits`]): [`KvmRun::exit_log`] holds those after the BIOS
//! step — all of them, those whose instruction lay inside the ROM's slot, and the same split
//! into segments between writes to the debug console, which a host decoding the guest's
//! record stream gives to the step that caused them (the conformance suite reports them per
//! call); [`Init16Report::exits`] holds the init's.
//!
//! # Time bound
//!
//! The vCPU runs on its own thread, which owns the VM, its memory and the vCPU. When the
//! [`KvmConfig::timeout`] passes, the caller sets a stop flag and sends the thread a real-time
//! signal; the handler sets `kvm_run.immediate_exit`, so `KVM_RUN` returns `EINTR` whether the
//! signal landed inside it or just before it. The run then ends with
//! [`EndReason::TimedOut`]. The signal is repeated every few milliseconds until the thread
//! answers; the thread is always joined and every file descriptor closed. A vCPU blocked in
//! KVM on a `hlt` (with the irqchip) leaves `KVM_RUN` on the signal like a running one; the
//! same signal, without the stop flag, is the 10 ms halt poll.
//!
//! # kvm-pvm
//!
//! On this project's machines `/dev/kvm` is kvm-pvm (software KVM inside a VM, no VMX/SVM):
//! real mode and flat 32-bit protected mode *without paging* run, one emulated instruction at
//! a time (~350 ns each). A `mov cr0` that sets PG raises #GP with CR0 unchanged: with no IDT
//! that is a triple fault *on* the `mov cr0`, which this runner reports as
//! [`EndReason::PagingUnsupported`] rather than a bare shutdown; a guest with an IDT (the test
//! guest) sees the #GP itself, and [`crate::probe`] turns that into
//! [`HarnessError::PagingUnsupported`]. Only the non-paged guest runs there:
//! [`paging_supported`] finds out once with a ten-instruction guest, and `probe` asks it
//! before booting a paged guest on the KVM engine.
//!
//! [`HarnessError::PagingUnsupported`]: crate::HarnessError::PagingUnsupported
//!
//! [`DEBUGCON_PORT`]: crate::qemu::DEBUGCON_PORT
//! [`EXIT_PORT`]: crate::qemu::EXIT_PORT
//! [`HarnessError::KvmExit`]: crate::HarnessError::KvmExit

pub mod bios;
pub mod devices;
pub mod exits;
pub mod irq0;
pub mod lapic;
pub mod layout;

#[cfg(target_os = "linux")]
mod kick;
#[cfg(target_os = "linux")]
mod post;
#[cfg(target_os = "linux")]
mod vcpu;
#[cfg(target_os = "linux")]
mod vmm;

use crate::error::HarnessError;
use std::fmt;
use std::time::Duration;

pub use exits::{ExitCounts, ExitLog};

pub use layout::{
    BOOT_STACK_TOP, DEFAULT_ROM_BASE, HIGH_RAM_START, LOW_RAM_END, MBI_ADDR, ROM_ALIGN,
    ROM_WINDOW_END, ROM_WINDOW_START, RomPlacement,
};

/// The runner's ACPI PM timer ([`devices::PM_TIMER_PORT`], 32 bits), as the guest's timing
/// operations take it: the suite's clock on this engine, where no firmware table names one.
pub const PM_TIMER: crate::protocol::PmTimer = crate::protocol::PmTimer {
    port: devices::PM_TIMER_PORT,
    bits: 32,
};

/// At most this many debug-console bytes are kept (a guest spinning on port 0xE9 cannot
/// exhaust the host's memory); [`KvmRun::debugcon_truncated`] says when more were written.
pub const DEBUGCON_LIMIT: usize = 16 << 20;
/// At most this many MMIO writes are recorded ([`KvmRun::mmio_writes_total`] counts them all).
pub const MMIO_WRITE_LIMIT: usize = 4096;

/// One KVM run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmConfig {
    /// The ROM image (None: no ROM; the window stays empty).
    pub rom: Option<Vec<u8>>,
    /// Physical address of the ROM (a 2 KiB boundary in `0xC0000`–`0xDFFFF`).
    pub rom_base: u32,
    /// The flat multiboot image (header with the address fields, [`crate::multiboot`]).
    pub kernel: Vec<u8>,
    /// Guest RAM in MiB (2 ..= 3072).
    pub memory_mib: u32,
    /// Stop the vCPU after this long.
    pub timeout: Duration,
    /// Copy guest-physical `0..`[`KEPT_RAM_END`] into [`KvmRun::ram`] when the run ends
    /// (conventional memory, the ROM window and the test guest's image and bss).
    pub keep_ram: bool,
    /// Do what a BIOS does for an option ROM before the guest runs (default on): low memory
    /// with an IVT, BDA and EBDA, the ROM's 16-bit init far-called in real mode with its image
    /// writable, then the image read-only ([`bios`]). Off: the ROM is mapped read-only and
    /// nothing runs its init (no private RAM). Nothing happens without a ROM.
    pub run_init16: bool,
    /// Create KVM's in-kernel interrupt controllers (`KVM_CREATE_IRQCHIP`: the 8259A PICs,
    /// the IOAPIC and the vCPU's local APIC at `0xFEE00000`) when the host's KVM has them
    /// (default on; [`irqchip_supported`]). Off: no interrupt controller, as on a KVM without
    /// `KVM_CAP_IRQCHIP`. [`KvmRun::irqchip`] says what the run had.
    pub irqchip: bool,
}

impl Default for KvmConfig {
    fn default() -> Self {
        KvmConfig {
            rom: None,
            rom_base: DEFAULT_ROM_BASE,
            kernel: Vec::new(),
            memory_mib: 64,
            timeout: Duration::from_secs(20),
            keep_ram: false,
            run_init16: true,
            irqchip: true,
        }
    }
}

/// End (exclusive) of the guest-physical range [`KvmConfig::keep_ram`] copies: 2 MiB.
pub const KEPT_RAM_END: u64 = 0x20_0000;

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The guest wrote this byte to the exit port (0xF4).
    ExitPort(u8),
    /// The guest executed `hlt` and nothing can wake it: without an irqchip, any `hlt`; with
    /// one, a `hlt` with IF = 0, or with IF = 1 and no local-APIC timer counting down and no
    /// interrupt pending (nothing else raises one).
    Halted {
        /// EIP after the `hlt`.
        eip: u32,
    },
    /// The vCPU shut down (triple fault).
    Shutdown {
        /// EIP at the shutdown.
        eip: u32,
        /// CR0 at the shutdown.
        cr0: u32,
    },
    /// The vCPU shut down on a `mov cr0` that sets PG, with paging still off: this KVM cannot
    /// run paged guests (kvm-pvm).
    PagingUnsupported {
        /// EIP of the `mov cr0`.
        eip: u32,
        /// CR0 at the shutdown (PG clear).
        cr0: u32,
        /// The value the guest tried to load.
        value: u32,
    },
    /// The run hit its timeout and the vCPU was kicked out of `KVM_RUN`.
    TimedOut,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ExitPort(v) => write!(f, "guest wrote {v:#04x} to the exit port"),
            EndReason::Halted { eip } => write!(f, "guest halted at EIP {eip:#010x}"),
            EndReason::Shutdown { eip, cr0 } => write!(
                f,
                "vCPU shut down (triple fault) at EIP {eip:#010x}, CR0 {cr0:#010x}"
            ),
            EndReason::PagingUnsupported { eip, cr0, value } => write!(
                f,
                "paging not supported by this KVM: the vCPU shut down on `mov cr0` at EIP \
                 {eip:#010x} loading {value:#010x} (PG set) into CR0 {cr0:#010x}"
            ),
            EndReason::TimedOut => f.write_str("timed out"),
        }
    }
}

/// A guest write KVM could not complete in memory: to the read-only ROM slot or to unmapped
/// space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioWrite {
    /// Guest-physical address.
    pub addr: u64,
    /// Access size in bytes (1–8).
    pub size: u8,
    /// The value written (little-endian, `size` bytes).
    pub value: u64,
    /// The offset inside the ROM image when the address lies inside it.
    pub rom_offset: Option<u32>,
}

impl fmt::Display for MmioWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = 2 + 2 * usize::from(self.size);
        write!(
            f,
            "{}-byte write of {:#0width$x} at {:#x}",
            self.size, self.value, self.addr
        )?;
        match self.rom_offset {
            Some(o) => write!(f, " (ROM offset {o:#x})"),
            None => f.write_str(" (unmapped)"),
        }
    }
}

/// What the BIOS step ([`KvmConfig::run_init16`]) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init16 {
    /// The init was called and returned.
    Ran(Init16Report),
    /// The image is not one SeaBIOS would run ([`bios::check_image`]): mapped, init not run.
    Skipped {
        /// Why, in SeaBIOS's terms.
        reason: String,
    },
}

/// A ROM's 16-bit init that returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init16Report {
    /// The segment it ran in (CS; the ROM's base ÷ 16).
    pub segment: u16,
    /// BDA base memory (KiB, word at 0x413) before the call: [`bios::BASE_MEMORY_KIB`].
    pub base_kib_before: u16,
    /// … and after it (lower when the ROM took conventional memory).
    pub base_kib_after: u16,
    /// The size byte (offset 2) after it (a ROM may shrink itself; SeaBIOS re-reads it).
    pub size_byte_after: u8,
    /// Bytes of the image the init changed (written while the image was writable).
    pub image_bytes_changed: usize,
    /// VM exits during the init.
    pub exits: ExitCounts,
    /// Wall-clock time of the call.
    pub wall: Duration,
}

impl Init16Report {
    /// KiB of conventional memory the init took.
    pub fn kib_taken(&self) -> u16 {
        self.base_kib_before.saturating_sub(self.base_kib_after)
    }
}

impl fmt::Display for Init16Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ran the ROM's 16-bit init at {:04X}:0003: base memory {} → {} KiB, {} image bytes \
             changed, {} exits, {:.1} ms",
            self.segment,
            self.base_kib_before,
            self.base_kib_after,
            self.image_bytes_changed,
            self.exits.total,
            self.wall.as_secs_f64() * 1000.0
        )
    }
}

/// What a KVM run produced (the counterpart of [`crate::qemu::QemuRun`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmRun {
    /// Bytes the guest wrote to port 0xE9.
    pub debugcon: Vec<u8>,
    /// More than [`DEBUGCON_LIMIT`] bytes were written; the rest were dropped.
    pub debugcon_truncated: bool,
    /// Why the run ended.
    pub end: EndReason,
    /// Whether the run hit the timeout.
    pub timed_out: bool,
    /// Writes to the ROM slot or to unmapped space, in order (the first [`MMIO_WRITE_LIMIT`]).
    pub mmio_writes: Vec<MmioWrite>,
    /// How many such writes there were in all.
    pub mmio_writes_total: u64,
    /// Where the ROM was mapped (None: no ROM).
    pub rom: Option<RomPlacement>,
    /// Wall-clock time of the run (VM setup included).
    pub wall: Duration,
    /// Number of returns from `KVM_RUN` (the BIOS step's included).
    pub exits: u64,
    /// The exits after the BIOS step by kind, place and time ([`exits`]).
    pub exit_log: ExitLog,
    /// What the BIOS step did (None: [`KvmConfig::run_init16`] off, or no ROM).
    pub init16: Option<Init16>,
    /// With [`KvmConfig::keep_ram`]: guest-physical `0..`[`KEPT_RAM_END`] as the run left it
    /// (capped at the end of RAM; what no slot backs reads as zero, the ROM slot as mapped).
    pub ram: Option<Vec<u8>>,
    /// The host's wall-clock time (since 1970-01-01 UTC) at the devices' time origin: the
    /// moment the PM timer ([`devices::PM_TIMER_PORT`]) read 0 — so a count `c` the guest
    /// read was taken at `pm_timer_origin + c / PM_TIMER_HZ` (within 1200 s: 32 bits).
    pub pm_timer_origin: Duration,
    /// Whether the run had KVM's in-kernel interrupt controllers (a local APIC at
    /// `0xFEE00000`, the PICs, the IOAPIC): [`KvmConfig::irqchip`] and a host that has them.
    pub irqchip: bool,
    /// With the irqchip: what PIT counter 0's OUT line did — the runner raises IRQ0 (GSI 0)
    /// at each of its rising edges ([`irq0`]). None: nothing raises IRQ0 (no irqchip).
    pub irq0: Option<irq0::Irq0Report>,
}

impl KvmRun {
    /// The value the guest wrote to the exit port, if it ended the run that way (like
    /// [`crate::qemu::QemuRun::guest_exit_value`]).
    pub fn guest_exit_value(&self) -> Option<u8> {
        match self.end {
            EndReason::ExitPort(v) => Some(v),
            _ => None,
        }
    }

    /// The recorded writes that hit the ROM image.
    pub fn rom_writes(&self) -> impl Iterator<Item = &MmioWrite> {
        self.mmio_writes.iter().filter(|w| w.rom_offset.is_some())
    }
}

/// Ok if this process can run KVM guests; otherwise why not, in plain words: no `/dev/kvm`,
/// permission denied, an unexpected API version, `KVM_CREATE_VM` failing, or a KVM without
/// read-only memory slots.
pub fn available() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        vmm::available()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("the KVM runner needs Linux".into())
    }
}

/// Whether this host's KVM can give a run its in-kernel interrupt controllers
/// (`KVM_CAP_IRQCHIP`): what [`KvmConfig::irqchip`] gets. False where KVM is unavailable.
pub fn irqchip_supported() -> bool {
    #[cfg(target_os = "linux")]
    {
        vmm::irqchip_supported()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Ok if this KVM runs paged 32-bit guests; otherwise why not (on kvm-pvm: "paging not
/// supported by this KVM: …"). Found out once per process by running a guest that builds a
/// one-entry page directory, sets CR0.PG and writes to the exit port.
pub fn paging_supported() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        vmm::paging_supported()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("the KVM runner needs Linux".into())
    }
}

/// What a run that failed after the vCPU started still left behind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partial {
    /// The debug-console bytes the guest wrote until then.
    pub debugcon: Vec<u8>,
    /// With [`KvmConfig::keep_ram`]: guest memory as the vCPU left it.
    pub ram: Option<Vec<u8>>,
    /// The exits until then.
    pub exit_log: Box<ExitLog>,
    /// What the BIOS step did, if it got that far.
    pub init16: Option<Box<Init16>>,
}

/// [`run`], but when the run fails after the vCPU started (an exit the VMM does not model,
/// e.g. an instruction kvm-pvm cannot emulate), the error comes with what the guest left
/// ([`Partial`]).
pub(crate) fn run_partial(cfg: &KvmConfig) -> Result<KvmRun, (HarnessError, Partial)> {
    #[cfg(target_os = "linux")]
    {
        vmm::run_partial(cfg)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cfg;
        Err((
            HarnessError::KvmUnavailable {
                reason: "the KVM runner needs Linux".into(),
            },
            Partial::default(),
        ))
    }
}

/// Runs the ROM's 16-bit init (with [`KvmConfig::run_init16`]), then boots `cfg.kernel` with
/// `cfg.rom` mapped read-only and runs it until it writes to the exit port, halts, shuts down
/// or times out.
///
/// Errors: a misplaced ROM or a multiboot image that does not fit ([`RomPlacement::new`],
/// [`layout::MultibootLayout::parse`]), KVM unavailable or an ioctl failing, a ROM init that
/// does not return ([`HarnessError::RomInit`]), a vCPU that KVM
/// cannot run (`FailEntry`, `InternalError`) or an exit this VMM does not model.
pub fn run(cfg: &KvmConfig) -> Result<KvmRun, HarnessError> {
    #[cfg(target_os = "linux")]
    {
        vmm::run(cfg)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cfg;
        Err(HarnessError::KvmUnavailable {
            reason: "the KVM runner needs Linux".into(),
        })
    }
}
