//! What a BIOS does for an option ROM before the OS boots, as far as the ROM can tell: the
//! low-memory tables it leaves, and the far call of the ROM's 16-bit init (offset 3) in real
//! mode with SeaBIOS's register state. Everything here is data; the vCPU side is in the
//! runner's `vcpu` module.
//!
//! # Low memory during the init
//!
//! | Address | What |
//! |---|---|
//! | `0x000`–`0x3FF` | real-mode IVT: vectors 0x00–0x0F → one `hlt` each at [`FAULT_STUBS`]` + n` (a CPU exception — nothing else can raise them: no device line is ever raised, and the local APIC (with the irqchip) raises nothing the init did not program — stops the init with its vector); 0x10–0xFF → [`SERVICE_STUB`], a BIOS service that supports nothing (CF = 1, AH = 0x86) |
//! | `0x40E` | BDA: the EBDA's segment, [`EBDA_SEGMENT`] |
//! | `0x413` | BDA: base memory in KiB, [`BASE_MEMORY_KIB`] (640 KiB minus the 1 KiB EBDA, as SeaBIOS leaves it) |
//! | [`RETURN_STUB`] | `hlt`: where the init's `retf` lands |
//! | [`PNP_ENTRY_STUB`] | the PnP BIOS entry point: `mov ax, 0x82 ; retf` (every function unsupported) |
//! | [`PNP_CHECK`] | the `$PnP` installation check structure (PnP BIOS 1.0A §4.4; SeaBIOS keeps its own in the F segment, which the runner does not back, so the ROM finds it through ES:DI only) |
//! | `0x7000`–`0x7FFF` | the init's stack (SS:SP = `0000:`[`INIT_STACK_TOP`]` - 4`, the far return address on top) |
//! | [`EBDA`] | the EBDA, 1 KiB (its first byte, the size in KiB, is 1) |
//!
//! # The call (SeaBIOS 1.16 `callrom`, a ROM with a `$PnP` header during the option-ROM scan)
//!
//! CS:IP = ROM segment (base ÷ 16) : 0x0003; AX = 0 (not a PCI device's ROM), BX = DX =
//! 0xFFFF, ES:DI = `0000:`[`PNP_CHECK`]; CX = SI = BP = 0, DS = 0; EFLAGS = 0x202 (IF = 1:
//! no interrupt ever arrives). The image is writable during the call.
//!
//! # Who runs it
//!
//! Only an image SeaBIOS would run ([`check_image`]): signature `55 AA`, a size byte other
//! than 0 that fits the image, and all size × 512 bytes summing to 0 mod 256. SeaBIOS drops
//! any other image with "Found option rom with bad checksum"; the runner still maps it (Linux
//! finds ROMs without a BIOS's help) but does not run its init.

use crate::error::HarnessError;

/// Base memory the BDA reports before the init: 639 KiB (SeaBIOS's 1 KiB EBDA below 640 KiB).
pub const BASE_MEMORY_KIB: u16 = 639;
/// BDA word: base memory in KiB.
pub const BDA_BASE_MEMORY: u32 = 0x413;
/// BDA word: the EBDA's segment.
pub const BDA_EBDA_SEGMENT: u32 = 0x40E;
/// Physical address of the EBDA.
pub const EBDA: u32 = BASE_MEMORY_KIB as u32 * 1024;
/// The EBDA's segment.
pub const EBDA_SEGMENT: u16 = (EBDA >> 4) as u16;
/// Where the init's far return lands: `hlt` (offset in segment 0).
pub const RETURN_STUB: u16 = 0x500;
/// Vectors 0x00–0x0F land on `hlt` number n here (offset in segment 0).
pub const FAULT_STUBS: u16 = 0x510;
/// Vectors whose IVT entry points at a fault stub.
pub const FAULT_VECTORS: u8 = 16;
/// The BIOS-service stub for vectors 0x10–0xFF (offset in segment 0).
pub const SERVICE_STUB: u16 = 0x520;
/// The PnP BIOS entry point (offset in segment 0).
pub const PNP_ENTRY_STUB: u16 = 0x540;
/// The `$PnP` installation check structure (offset in segment 0).
pub const PNP_CHECK: u16 = 0x560;
/// Its length.
pub const PNP_CHECK_LEN: usize = 0x21;
/// Bytes of low memory [`low_memory`] fills from address 0.
pub const LOW_MEMORY_LEN: usize = 0x600;
/// Top of the init's stack (offset in segment 0).
pub const INIT_STACK_TOP: u16 = 0x8000;
/// The init entry's offset in the image.
pub const INIT_OFFSET: u16 = 3;
/// EFLAGS at the call.
pub const INIT_EFLAGS: u64 = 0x202;

fn put(mem: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = mem.get_mut(at..at + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

/// The 16-bit stubs, assembled at their offsets.
fn stubs() -> Result<Vec<(u16, Vec<u8>)>, HarnessError> {
    use iced_x86::code_asm::*;
    let mut out = Vec::new();
    let mut a = CodeAssembler::new(16)?;
    a.hlt()?;
    out.push((RETURN_STUB, a.assemble(u64::from(RETURN_STUB))?));
    out.push((FAULT_STUBS, vec![0xF4; usize::from(FAULT_VECTORS)]));
    let mut a = CodeAssembler::new(16)?;
    a.push(bp)?;
    a.mov(bp, sp)?;
    a.or(byte_ptr(bp + 6), 1)?; // CF in the FLAGS image (IP, CS, FLAGS above BP)
    a.pop(bp)?;
    a.mov(ah, 0x86)?;
    a.iret()?;
    out.push((SERVICE_STUB, a.assemble(u64::from(SERVICE_STUB))?));
    let mut a = CodeAssembler::new(16)?;
    a.mov(ax, 0x82)?;
    a.retf()?;
    out.push((PNP_ENTRY_STUB, a.assemble(u64::from(PNP_ENTRY_STUB))?));
    Ok(out)
}

/// The `$PnP` installation check structure with its checksum.
pub fn pnp_check() -> [u8; PNP_CHECK_LEN] {
    let mut s = [0u8; PNP_CHECK_LEN];
    put(&mut s, 0x00, b"$PnP");
    s[0x04] = 0x10; // version 1.0
    s[0x05] = PNP_CHECK_LEN as u8;
    put(&mut s, 0x0D, &PNP_ENTRY_STUB.to_le_bytes()); // real-mode entry offset
    put(&mut s, 0x0F, &0u16.to_le_bytes()); // … and segment
    put(&mut s, 0x11, &PNP_ENTRY_STUB.to_le_bytes()); // 16-bit protected-mode offset
    put(&mut s, 0x13, &0u32.to_le_bytes()); // … and code segment base
    let sum = s.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    s[0x08] = sum.wrapping_neg();
    s
}

/// Guest-physical `0..`[`LOW_MEMORY_LEN`] as the BIOS leaves it: IVT, BDA, stubs, `$PnP`.
pub fn low_memory() -> Result<Vec<u8>, HarnessError> {
    let mut mem = vec![0u8; LOW_MEMORY_LEN];
    for v in 0..=255u8 {
        let off = if v < FAULT_VECTORS {
            FAULT_STUBS + u16::from(v)
        } else {
            SERVICE_STUB
        };
        let at = usize::from(v) * 4;
        put(&mut mem, at, &off.to_le_bytes());
        put(&mut mem, at + 2, &0u16.to_le_bytes());
    }
    put(
        &mut mem,
        BDA_EBDA_SEGMENT as usize,
        &EBDA_SEGMENT.to_le_bytes(),
    );
    put(
        &mut mem,
        BDA_BASE_MEMORY as usize,
        &BASE_MEMORY_KIB.to_le_bytes(),
    );
    for (at, code) in stubs()? {
        put(&mut mem, usize::from(at), &code);
    }
    put(&mut mem, usize::from(PNP_CHECK), &pnp_check());
    Ok(mem)
}

/// The EBDA's first bytes: its size in KiB.
pub const EBDA_HEADER: [u8; 1] = [1];

/// The init's stack as the call leaves it: the far return address (`0000:`[`RETURN_STUB`])
/// at `INIT_STACK_TOP - 4`.
pub fn init_stack() -> [u8; 4] {
    let ip = RETURN_STUB.to_le_bytes();
    [ip[0], ip[1], 0, 0]
}

/// Ok if SeaBIOS would run this image's init; otherwise why not, in SeaBIOS's terms.
pub fn check_image(image: &[u8]) -> Result<(), String> {
    if image.get(..2) != Some(&[0x55, 0xAA]) {
        return Err("no 55 AA signature at offset 0".into());
    }
    let size = usize::from(image.get(2).copied().unwrap_or(0)) * 512;
    if size == 0 {
        return Err("size byte (offset 2) is 0".into());
    }
    let Some(bytes) = image.get(..size) else {
        return Err(format!(
            "size byte (offset 2) says {size} bytes, the image has {}",
            image.len()
        ));
    };
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if sum != 0 {
        return Err(format!(
            "bad checksum: the {size} bytes sum to {sum:#04x} mod 256, not 0 (SeaBIOS: \
             \"Found option rom with bad checksum\")"
        ));
    }
    Ok(())
}

/// How the vCPU stopped on a `hlt` during the init, from CS and IP *after* the `hlt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitStop {
    /// The init returned (`retf` to [`RETURN_STUB`]).
    Returned,
    /// The init raised exception (or executed `int`) `vector` 0x00–0x0F.
    Fault {
        /// The vector.
        vector: u8,
    },
    /// The init executed `hlt` itself: nothing can wake it.
    Halted,
}

/// Tells [`InitStop`] from where a `hlt` stopped the vCPU.
pub fn init_stop(cs: u16, ip_after: u16) -> InitStop {
    if cs != 0 {
        return InitStop::Halted;
    }
    let at = ip_after.wrapping_sub(1);
    if at == RETURN_STUB {
        InitStop::Returned
    } else if (FAULT_STUBS..FAULT_STUBS + u16::from(FAULT_VECTORS)).contains(&at) {
        InitStop::Fault {
            vector: (at - FAULT_STUBS) as u8,
        }
    } else {
        InitStop::Halted
    }
}

/// The usual name of a real-mode exception vector.
pub fn vector_name(v: u8) -> &'static str {
    match v {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        0x0C => "#SS",
        0x0D => "#GP",
        _ => "int",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    fn word(m: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([m[at], m[at + 1]])
    }

    #[test]
    fn ivt_bda_and_stubs() {
        let m = low_memory().unwrap();
        assert_eq!(m.len(), LOW_MEMORY_LEN);
        // #UD → its own hlt; int 0x10 → the service stub; all in segment 0.
        assert_eq!((word(&m, 6 * 4), word(&m, 6 * 4 + 2)), (0x516, 0));
        assert_eq!((word(&m, 0x10 * 4), word(&m, 0x10 * 4 + 2)), (0x520, 0));
        assert_eq!(word(&m, 0xFF * 4), 0x520);
        assert_eq!(word(&m, 0x413), 639);
        assert_eq!(word(&m, 0x40E), 0x9FC0);
        assert_eq!(EBDA, 0x9_FC00);
        assert_eq!(m[0x500], 0xF4);
        assert!(m[0x510..0x520].iter().all(|b| *b == 0xF4));
        let code = |at: usize, n: usize| -> Vec<Mnemonic> {
            Decoder::with_ip(16, &m[at..], at as u64, DecoderOptions::NONE)
                .iter()
                .take(n)
                .map(|i| i.mnemonic())
                .collect()
        };
        assert_eq!(
            code(0x520, 6),
            [
                Mnemonic::Push,
                Mnemonic::Mov,
                Mnemonic::Or,
                Mnemonic::Pop,
                Mnemonic::Mov,
                Mnemonic::Iret
            ]
        );
        assert_eq!(code(0x540, 2), [Mnemonic::Mov, Mnemonic::Retf]);
        let pnp = &m[0x560..0x560 + PNP_CHECK_LEN];
        assert_eq!(&pnp[..4], b"$PnP");
        assert_eq!((pnp[4], pnp[5]), (0x10, 0x21));
        assert_eq!(pnp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!((word(pnp, 0x0D), word(pnp, 0x0F)), (0x540, 0));
        assert_eq!(init_stack(), [0x00, 0x05, 0, 0]);
    }

    #[test]
    fn where_a_hlt_stopped() {
        assert_eq!(init_stop(0, 0x501), InitStop::Returned);
        assert_eq!(init_stop(0, 0x517), InitStop::Fault { vector: 6 });
        assert_eq!(init_stop(0, 0x520), InitStop::Fault { vector: 15 });
        assert_eq!(init_stop(0, 0x521), InitStop::Halted);
        assert_eq!(init_stop(0xC800, 0x501), InitStop::Halted);
        assert_eq!(vector_name(6), "#UD");
    }

    #[test]
    fn seabios_checks() {
        let mut img = vec![0u8; 1024];
        img[0] = 0x55;
        img[1] = 0xAA;
        img[2] = 2;
        img[3] = 0xCB;
        let sum = img.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        img[1023] = sum.wrapping_neg();
        assert_eq!(check_image(&img), Ok(()));
        let mut bad = img.clone();
        bad[100] = 1;
        assert!(check_image(&bad).unwrap_err().contains("bad checksum"));
        let mut big = img.clone();
        big[2] = 3;
        assert!(
            check_image(&big)
                .unwrap_err()
                .contains("says 1536 bytes, the image has 1024")
        );
        big[2] = 0;
        assert!(check_image(&big).unwrap_err().contains("is 0"));
        assert!(check_image(&img[1..]).unwrap_err().contains("55 AA"));
    }
}
