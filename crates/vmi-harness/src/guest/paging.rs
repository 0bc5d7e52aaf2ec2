//! The guest page directory: non-PAE, 4 MiB PSE pages, like an early Linux kernel's
//! `swapper_pg_dir` (identity map of low memory kept alongside the `PAGE_OFFSET` map).

use super::layout::{LARGE_PAGE, LOWMEM_MAPPED, MemoryMap};

/// PDE bit: present.
pub const PDE_PRESENT: u32 = 1 << 0;
/// PDE bit: writable.
pub const PDE_RW: u32 = 1 << 1;
/// PDE bit: accessed.
pub const PDE_ACCESSED: u32 = 1 << 5;
/// PDE bit: dirty.
pub const PDE_DIRTY: u32 = 1 << 6;
/// PDE bit: 4 MiB page (needs CR4.PSE).
pub const PDE_PSE: u32 = 1 << 7;
/// Flags of every mapping PDE (supervisor only, like Linux's `_PAGE_KERNEL_LARGE` without G).
pub const PDE_KERNEL_LARGE: u32 = PDE_PRESENT | PDE_RW | PDE_ACCESSED | PDE_DIRTY | PDE_PSE;

/// CR0 bit: paging.
pub const CR0_PG: u32 = 1 << 31;
/// CR0 bit: supervisor write protection.
pub const CR0_WP: u32 = 1 << 16;
/// CR4 bit: 4 MiB pages.
pub const CR4_PSE: u32 = 1 << 4;

/// PDE flags of the test window: a 4 KiB page table, present, writable, user (the PTEs
/// decide per page).
pub const PDE_TABLE_USER: u32 = PDE_PRESENT | PDE_RW | PDE_USER;
/// PDE bit: user accessible.
pub const PDE_USER: u32 = 1 << 2;
/// CR4 bit: global pages.
pub const CR4_PGE: u32 = 1 << 7;
/// CR4 bit: RDTSC at CPL 0 only.
pub const CR4_TSD: u32 = 1 << 2;
/// CR0 bit: task switched.
pub const CR0_TS: u32 = 1 << 3;
/// CR0 bit: alignment mask.
pub const CR0_AM: u32 = 1 << 18;

/// The 1024 PDEs: [0, LOWMEM_MAPPED) mapped at 0 and at `PAGE_OFFSET`, and the test window
/// ([`MemoryMap::window`]) through the page table [`test::PT_WINDOW`](super::layout::test::PT_WINDOW).
/// Without paging the directory is all zero (it is never loaded).
pub fn page_directory(map: &MemoryMap) -> [u32; 1024] {
    let mut pd = [0u32; 1024];
    if !map.paging() {
        return pd;
    }
    for phys in (0..LOWMEM_MAPPED).step_by(LARGE_PAGE as usize) {
        for linear in [phys, map.va(phys)] {
            if let Some(e) = pd.get_mut((linear / LARGE_PAGE) as usize) {
                *e = phys | PDE_KERNEL_LARGE;
            }
        }
    }
    if let Some(e) = pd.get_mut((map.window() / LARGE_PAGE) as usize) {
        *e = super::layout::test::PT_WINDOW | PDE_TABLE_USER;
    }
    pd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_alias() {
        let pd = page_directory(&MemoryMap::new(0xC000_0000, true).unwrap());
        assert_eq!(pd[0], 0xE3);
        assert_eq!(pd[15], 0x03C0_00E3);
        assert_eq!(pd[0x300], 0xE3);
        assert_eq!(pd[0x30F], 0x03C0_00E3);
        // The test window at 64 MiB: a 4 KiB page table, user accessible.
        assert_eq!(pd[16], 0x0019_0007);
        assert_eq!(pd.iter().filter(|e| **e != 0).count(), 33);
        let pd = page_directory(&MemoryMap::new(0x4000_0000, true).unwrap());
        assert_eq!(pd[0x100], 0xE3);
        assert!(
            page_directory(&MemoryMap::new(0x4000_0000, false).unwrap())
                .iter()
                .all(|e| *e == 0)
        );
    }
}
