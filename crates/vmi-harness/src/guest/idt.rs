//! IDT gates and which exception vectors push an error code.

/// Type/attribute byte of a present, DPL 0, 32-bit interrupt gate (IF cleared on entry).
pub const INTERRUPT_GATE: u8 = 0x8E;
/// Type/attribute byte of a present, DPL 3, 32-bit interrupt gate (`int n` from ring 3).
pub const USER_INTERRUPT_GATE: u8 = 0xEE;
/// Number of architectural exception vectors (0–31); higher vectors are interrupts.
pub const EXCEPTION_VECTORS: u8 = 32;

/// Exception vectors for which the CPU pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP, #VC, #SX).
pub const ERROR_CODE_VECTORS: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

/// Whether the CPU pushes an error code for `vector`.
pub fn has_error_code(vector: u8) -> bool {
    ERROR_CODE_VECTORS.contains(&vector)
}

/// Mnemonic of an exception vector (`"#UD"`), or `"INT"` for vectors 32 and up.
pub const fn mnemonic(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        9 => "#MF-old",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        29 => "#VC",
        30 => "#SX",
        v if v < EXCEPTION_VECTORS => "reserved",
        _ => "INT",
    }
}

/// Encodes an interrupt gate to `offset` through code selector `selector`.
pub const fn gate(selector: u16, offset: u32) -> u64 {
    gate_with(selector, offset, INTERRUPT_GATE)
}

/// Encodes a gate with type/attribute byte `attr` (e.g. [`USER_INTERRUPT_GATE`]).
pub const fn gate_with(selector: u16, offset: u32, attr: u8) -> u64 {
    let offset = offset as u64;
    (offset & 0xFFFF) | (selector as u64) << 16 | (attr as u64) << 40 | (offset >> 16) << 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_bytes() {
        assert_eq!(gate(0x60, 0xC011_2345), 0xC011_8E00_0060_2345);
        assert_eq!(
            gate_with(0x60, 0xC011_2345, USER_INTERRUPT_GATE),
            0xC011_EE00_0060_2345
        );
        assert!(has_error_code(14) && !has_error_code(6));
        assert_eq!(mnemonic(6), "#UD");
        assert_eq!(mnemonic(0x30), "INT");
    }
}
