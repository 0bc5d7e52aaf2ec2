//! Multiboot (v1) flat images: what QEMU's `-kernel` boots in 32-bit protected mode.
//!
//! The image is a flat binary loaded at a fixed physical address; the header uses the address
//! fields (flags bit 16), so no ELF is needed. On entry EAX = 0x2BADB002, EBX = the multiboot
//! information address, paging and interrupts off, flat 4 GiB CS/DS (QEMU's loader).

/// Header magic.
pub const MAGIC: u32 = 0x1BAD_B002;
/// Flags: the address fields are valid.
pub const FLAG_ADDRESSES: u32 = 1 << 16;
/// Size of the header this module writes.
pub const HEADER_LEN: usize = 32;
/// Default load address (1 MiB).
pub const LOAD_ADDR: u32 = 0x10_0000;

/// A flat multiboot image: the 32-byte header at `load_addr`, then `body` right after it.
/// `entry` is the offset of the entry point inside `body`; `bss` zeroed bytes follow the body.
pub fn image(load_addr: u32, body: &[u8], entry: u32, bss: u32) -> Vec<u8> {
    let body_len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let load_end = load_addr
        .wrapping_add(HEADER_LEN as u32)
        .wrapping_add(body_len);
    let words = [
        MAGIC,
        FLAG_ADDRESSES,
        0u32.wrapping_sub(MAGIC.wrapping_add(FLAG_ADDRESSES)),
        load_addr,
        load_addr,
        load_end,
        if bss == 0 {
            0
        } else {
            load_end.wrapping_add(bss)
        },
        load_addr
            .wrapping_add(HEADER_LEN as u32)
            .wrapping_add(entry),
    ];
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    out.extend_from_slice(body);
    out
}

/// Address of byte `offset` of the body of an image loaded at `load_addr`.
pub const fn body_addr(load_addr: u32, offset: u32) -> u32 {
    load_addr + HEADER_LEN as u32 + offset
}

/// A guest that immediately ends the run: writes `value` to `isa-debug-exit` (QEMU then exits
/// with status `(value << 1) | 1`). SeaBIOS has run every option ROM's init by the time it boots
/// this image, so it is the fastest way to observe POST.
pub fn exit_stub(value: u8) -> Vec<u8> {
    let port = crate::qemu::EXIT_PORT.to_le_bytes();
    // mov al, value ; mov dx, port ; out dx, al ; cli ; hlt ; jmp $-2
    let body = [
        0xB0, value, 0x66, 0xBA, port[0], port[1], 0xEE, 0xFA, 0xF4, 0xEB, 0xFD,
    ];
    image(LOAD_ADDR, &body, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_words() {
        let img = image(0x10_0000, &[0x90; 4], 2, 16);
        let w = |i: usize| u32::from_le_bytes(img[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(w(0), MAGIC);
        assert_eq!(w(0).wrapping_add(w(1)).wrapping_add(w(2)), 0);
        assert_eq!((w(3), w(4)), (0x10_0000, 0x10_0000));
        assert_eq!(w(5), 0x10_0000 + 32 + 4);
        assert_eq!(w(6), 0x10_0000 + 32 + 4 + 16);
        assert_eq!(w(7), 0x10_0000 + 32 + 2);
        assert_eq!(img.len(), 36);
    }
}
