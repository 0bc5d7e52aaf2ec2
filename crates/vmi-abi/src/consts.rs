//! Signatures, identifiers, flags and constants of the VMI 3.0 ABI (vmi-abi.md §1, §2, §7).

/// Option-ROM signature, the little-endian u16 at offset 0 (bytes `55 AA`).
pub const ROM_SIGNATURE: u16 = 0xAA55;
/// VMI signature at offset 8: ASCII `"cVmi"` read as a little-endian u32.
pub const VMI_SIGNATURE: u32 = 0x696D_5663;
/// The only API major version the Linux client accepts; every minor version passes.
pub const VMI_API_MAJOR: u8 = 3;
/// API minor version a new ROM advertises.
pub const VMI_API_MINOR: u8 = 0;
/// PCI vendor id Linux expects in the ROM's PCI data structure (VMware).
pub const PCI_VENDOR_VMWARE: u16 = 0x15AD;
/// PCI device id Linux expects (VMI).
pub const PCI_DEVICE_VMI: u16 = 0x0801;
/// License strings Linux accepts, compared exactly (strcmp). Anything else rejects the ROM.
pub const ACCEPTED_LICENSES: [&str; 2] = ["GPL", "GPL v2"];
/// License string Linux assumes when `license_offs` is 0 (and then rejects).
pub const LICENSE_UNSPECIFIED: &str = "unspecified";
/// Manufacturer/product string Linux prints when the `$PnP` pointer or string offset is 0.
pub const PNP_STRING_UNKNOWN: &str = "UNKNOWN";

/// First physical address Linux probes for a VMI ROM.
pub const SCAN_START: u32 = 0xC_0000;
/// First physical address past the probed range.
pub const SCAN_END: u32 = 0xE_0000;
/// Distance between probed candidates (64 candidates in all).
pub const SCAN_STRIDE: u32 = 2048;

/// Offset of the 8-byte Init entry slot that Linux near-calls.
pub const ENTRY_INIT: usize = 0x80;
/// Offset of the 8-byte GetRelocationInfo entry slot that Linux near-calls.
pub const ENTRY_GET_RELOC: usize = 0x88;
/// Size of one executable entry slot.
pub const ENTRY_SLOT_SIZE: usize = 8;
/// Size of the fixed VMI header, entry slots included.
pub const HEADER_SIZE: usize = 0x90;
/// Value Init returns in EAX on success.
pub const INIT_SUCCESS: u32 = 0;

/// Page-table level flag: page table (also used for PTE writes).
pub const VMI_PAGE_PT: u32 = 0x01;
/// Page-table level flag: page directory.
pub const VMI_PAGE_PD: u32 = 0x02;
/// Page-table level flag: PAE page-directory-pointer table.
pub const VMI_PAGE_PDP: u32 = 0x04;
/// Page-table level flag: PML4 (never used by i386 Linux).
pub const VMI_PAGE_PML4: u32 = 0x08;
/// No level (debug only).
pub const VMI_PAGE_NORMAL: u32 = 0x00;
/// Allocate/ReleasePage: the page is a PAE shadow.
pub const VMI_PAGE_PAE: u32 = 0x10;
/// AllocatePage: entries were cloned from the page-frame number in ECX.
pub const VMI_PAGE_CLONE: u32 = 0x20;
/// AllocatePage: the page is claimed to be all zero (a hint; not always true).
pub const VMI_PAGE_ZEROED: u32 = 0x40;
/// SetPxE/UpdatePxE: the entry belongs to the current address space; the VA field is valid.
pub const VMI_PAGE_CURRENT_AS: u32 = 0x10;
/// SetPxE/UpdatePxE: the update may be queued until the next TLB flush.
pub const VMI_PAGE_DEFER: u32 = 0x20;
/// SetPxE/UpdatePxE: the linear address the entry maps.
pub const VMI_PAGE_VA_MASK: u32 = 0xFFFF_F000;
/// Allocate/ReleasePage flags for a page table (`PT | ZEROED`).
pub const VMI_PAGE_L1: u32 = VMI_PAGE_PT | VMI_PAGE_ZEROED;
/// Allocate/ReleasePage flags for a page directory (`PD | ZEROED`).
pub const VMI_PAGE_L2: u32 = VMI_PAGE_PD | VMI_PAGE_ZEROED;

/// FlushTLB: flush non-global entries.
pub const VMI_FLUSH_TLB: u32 = 0x01;
/// FlushTLB: flush global entries too.
pub const VMI_FLUSH_GLOBAL: u32 = 0x02;

/// SetLazyMode: no lazy mode (flush everything queued).
pub const VMI_LAZY_NONE: u32 = 0;
/// SetLazyMode: MMU updates may be batched.
pub const VMI_LAZY_MMU: u32 = 1;
/// SetLazyMode: CPU state updates may be batched (context switch).
pub const VMI_LAZY_CPU: u32 = 2;

/// GetCycleCounter / alarm counter: real time, shared by all VCPUs.
pub const VMI_CYCLES_REAL: u32 = 0;
/// GetCycleCounter / alarm counter: time this VCPU was running or halted.
pub const VMI_CYCLES_AVAILABLE: u32 = 1;
/// GetCycleCounter: time this VCPU was ready but not running.
pub const VMI_CYCLES_STOLEN: u32 = 2;
/// Alarm flags: the counter selector bits.
pub const VMI_ALARM_COUNTER_MASK: u32 = 0x0000_00FF;
/// Alarm flags: deliver through ISA IRQ 0.
pub const VMI_ALARM_WIRED_IRQ0: u32 = 0x0000_0000;
/// Alarm flags: deliver as this VCPU's local-APIC timer (LVTT) interrupt.
pub const VMI_ALARM_WIRED_LVTT: u32 = 0x0001_0000;
/// Alarm flags: one-shot alarm.
pub const VMI_ALARM_IS_ONESHOT: u32 = 0x0000_0000;
/// Alarm flags: periodic alarm.
pub const VMI_ALARM_IS_PERIODIC: u32 = 0x0000_0100;
/// Number of counters an alarm can be set on (REAL and AVAILABLE).
pub const VMI_ALARM_COUNTERS: u32 = 2;
/// Number of SetLinearMapping slots (Doc).
pub const VMI_LINEAR_MAP_SLOTS: u32 = 4;

/// Linux kernel code selector (`__KERNEL_CS`).
pub const LINUX_KERNEL_CS: u16 = 0x60;
/// Linux kernel data selector (`__KERNEL_DS`).
pub const LINUX_KERNEL_DS: u16 = 0x68;
/// Linux user code selector (`__USER_CS`).
pub const LINUX_USER_CS: u16 = 0x73;
/// Linux user data selector (`__USER_DS`).
pub const LINUX_USER_DS: u16 = 0x7B;
/// Linux TSS selector.
pub const LINUX_TSS: u16 = 0x80;
/// Linux LDT selector.
pub const LINUX_LDT: u16 = 0x88;
/// Linux per-CPU (PDA) selector.
pub const LINUX_PERCPU: u16 = 0xD8;
/// Linux stack-canary selector (2.6.33+).
pub const LINUX_STACK_CANARY: u16 = 0xE0;
/// Number of GDT entries Linux uses.
pub const LINUX_GDT_ENTRIES: u32 = 32;
