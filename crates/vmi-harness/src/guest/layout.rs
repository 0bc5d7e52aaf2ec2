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
/// End of the guest (multiboot `bss_end_addr`).
pub const GUEST_END: u32 = 0x0019_0000;
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
            GUEST_END,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(PAGE_DIR % 4096, 0);
        assert!(GDT + (GDT_ENTRIES as u32) * 8 <= GDTR_BOOT);
        assert!(IDT_BOOT + (IDT_ENTRIES as u32) * 8 <= IDT_KERNEL);
        assert!(IDT_KERNEL + (IDT_ENTRIES as u32) * 8 <= VARS);
        const { assert!(GUEST_END <= LOWMEM_MAPPED) };
        assert_eq!(CODE_END, RING0_STACK);
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
