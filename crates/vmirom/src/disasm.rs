//! Decoding ROM code for `vmirom info --disasm` (iced-x86, AT&T syntax).

use iced_x86::{Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction};

/// One decoded instruction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    /// Image offset.
    pub offset: usize,
    /// Raw bytes, hex.
    pub bytes: String,
    /// AT&T text.
    pub text: String,
}

/// Decodes straight-line code at `offset` of `image` as `bitness`-bit code, stopping after a
/// return, an unconditional jump, an invalid instruction, the end of the image, or `max`
/// instructions. Addresses are image offsets.
pub fn straight_line(image: &[u8], offset: usize, bitness: u32, max: usize) -> Vec<Line> {
    let Some(code) = image.get(offset..) else {
        return Vec::new();
    };
    let mut dec = Decoder::with_ip(bitness, code, offset as u64, DecoderOptions::NONE);
    let mut fmt = GasFormatter::new();
    let mut out = Vec::new();
    let mut ins = Instruction::default();
    while dec.can_decode() && out.len() < max {
        let pos = dec.position();
        dec.decode_out(&mut ins);
        let mut text = String::new();
        fmt.format(&ins, &mut text);
        let bytes = code
            .get(pos..pos + ins.len())
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        out.push(Line {
            offset: ins.ip() as usize,
            bytes,
            text,
        });
        if ins.is_invalid()
            || matches!(
                ins.flow_control(),
                FlowControl::Return
                    | FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
            )
        {
            break;
        }
    }
    out
}

/// Decodes one instruction at each of `offsets` (as from `vmi_rom::audit::reachable`).
pub fn at_offsets(image: &[u8], offsets: &[u32], bitness: u32) -> Vec<Line> {
    offsets
        .iter()
        .filter_map(|&o| {
            straight_line(image, o as usize, bitness, 1)
                .into_iter()
                .next()
        })
        .collect()
}

/// Prints lines indented.
pub fn print(lines: &[Line], indent: &str) {
    for l in lines {
        println!("{indent}{:05x}  {:<24} {}", l.offset, l.bytes, l.text);
    }
}
