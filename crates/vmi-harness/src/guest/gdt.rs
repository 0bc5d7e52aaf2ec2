//! The guest's GDT (Linux's selectors), TSS and descriptor-table register images.
//!
//! Entry numbers follow Linux i386 (`asm/segment.h`, 2.6.22+): 12 kernel code (`0x60`),
//! 13 kernel data (`0x68`), 14 user code (`0x73`, DPL 3), 15 user data (`0x7B`, DPL 3),
//! 16 TSS (`0x80`), 27 per-CPU (`0xD8`, the FS base). All other entries are null.

use vmi_abi::consts::{
    LINUX_KERNEL_CS, LINUX_KERNEL_DS, LINUX_PERCPU, LINUX_TSS, LINUX_USER_CS, LINUX_USER_DS,
};

/// Access byte: present, DPL 0, code, execute/read.
pub const ACCESS_CODE: u8 = 0x9A;
/// Access byte: present, DPL 0, data, read/write.
pub const ACCESS_DATA: u8 = 0x92;
/// Access byte bits of the DPL 3 variants.
pub const ACCESS_DPL3: u8 = 0x60;
/// Access byte: present, DPL 0, available 32-bit TSS.
pub const ACCESS_TSS: u8 = 0x89;
/// Flags nibble: 4 KiB granularity, 32-bit.
pub const FLAGS_G_D: u8 = 0xC;
/// Flags nibble: byte granularity (TSS).
pub const FLAGS_BYTE: u8 = 0x0;

/// Encodes a segment descriptor (`limit` is 20 bits, interpreted per the granularity flag).
pub const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = base as u64;
    let limit = (limit & 0xF_FFFF) as u64;
    (limit & 0xFFFF)
        | (base & 0xFF_FFFF) << 16
        | (access as u64) << 40
        | (limit >> 16) << 48
        | ((flags & 0xF) as u64) << 52
        | (base >> 24) << 56
}

/// GDT index of a selector.
pub const fn index(selector: u16) -> usize {
    (selector >> 3) as usize
}

/// The guest GDT. `tss` and `percpu` are the linear addresses the TSS and per-CPU segments
/// start at (Linux puts both in the kernel linear map).
pub fn linux_gdt(tss: u32, percpu: u32) -> [u64; super::layout::GDT_ENTRIES] {
    let mut gdt = [0u64; super::layout::GDT_ENTRIES];
    let mut set = |sel: u16, d: u64| {
        if let Some(e) = gdt.get_mut(index(sel)) {
            *e = d;
        }
    };
    set(
        LINUX_KERNEL_CS,
        descriptor(0, 0xF_FFFF, ACCESS_CODE, FLAGS_G_D),
    );
    set(
        LINUX_KERNEL_DS,
        descriptor(0, 0xF_FFFF, ACCESS_DATA, FLAGS_G_D),
    );
    set(
        LINUX_USER_CS,
        descriptor(0, 0xF_FFFF, ACCESS_CODE | ACCESS_DPL3, FLAGS_G_D),
    );
    set(
        LINUX_USER_DS,
        descriptor(0, 0xF_FFFF, ACCESS_DATA | ACCESS_DPL3, FLAGS_G_D),
    );
    set(
        LINUX_TSS,
        descriptor(
            tss,
            super::layout::TSS_LEN as u32 - 1,
            ACCESS_TSS,
            FLAGS_BYTE,
        ),
    );
    set(
        LINUX_PERCPU,
        descriptor(percpu, 0xF_FFFF, ACCESS_DATA, FLAGS_G_D),
    );
    gdt
}

/// The 6-byte image `lgdt`/`lidt` read: 16-bit limit, 32-bit linear base.
pub fn pseudo_descriptor(base: u32, len: usize) -> [u8; 6] {
    let limit = u16::try_from(len.saturating_sub(1)).unwrap_or(u16::MAX);
    let mut out = [0u8; 6];
    let (l, b) = out.split_at_mut(2);
    l.copy_from_slice(&limit.to_le_bytes());
    b.copy_from_slice(&base.to_le_bytes());
    out
}

/// A 32-bit TSS with only SS0:ESP0 set and the I/O map base past the limit (no bitmap).
pub fn tss(ss0: u16, esp0: u32) -> [u8; super::layout::TSS_LEN] {
    let mut t = [0u8; super::layout::TSS_LEN];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(d) = t.get_mut(at..at + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    };
    put(4, &esp0.to_le_bytes());
    put(8, &u32::from(ss0).to_le_bytes());
    put(102, &(super::layout::TSS_LEN as u16).to_le_bytes());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_linux() {
        let g = linux_gdt(0xC010_2200, 0xC010_4800);
        // The exact qwords Linux's GDT_ENTRY_INIT produces for the flat segments.
        assert_eq!(g[12], 0x00CF_9A00_0000_FFFF);
        assert_eq!(g[13], 0x00CF_9200_0000_FFFF);
        assert_eq!(g[14], 0x00CF_FA00_0000_FFFF);
        assert_eq!(g[15], 0x00CF_F200_0000_FFFF);
        assert_eq!(g[16], 0xC000_8910_2200_0067);
        assert_eq!(g[27], 0xC0CF_9210_4800_FFFF);
        let used = [12, 13, 14, 15, 16, 27];
        for (i, d) in g.iter().enumerate() {
            assert_eq!(*d != 0, used.contains(&i), "entry {i}");
        }
    }

    #[test]
    fn tss_and_pseudo_descriptors() {
        let t = tss(0x68, 0x0018_0000);
        assert_eq!(&t[4..12], &[0, 0, 0x18, 0, 0x68, 0, 0, 0]);
        assert_eq!(&t[102..104], &[104, 0]);
        assert_eq!(
            pseudo_descriptor(0xC010_2000, 256),
            [0xFF, 0, 0, 0x20, 0x10, 0xC0]
        );
    }
}
