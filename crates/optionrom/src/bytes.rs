//! Bounded little-endian reads, C strings and the option-ROM checksum.

use serde::Serialize;
use std::fmt;

/// The u8 at `off`, if inside `b`.
pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// The little-endian u16 at `off`, if inside `b`.
pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([*s.first()?, *s.get(1)?]))
}

/// The little-endian u32 at `off`, if inside `b`.
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

/// Sum of `b` modulo 256 (0 for a correctly checksummed image).
pub fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
}

/// A NUL-terminated byte string read from an image, kept as bytes (it may not be UTF-8).
#[derive(Clone, PartialEq, Eq)]
pub struct CString(pub Vec<u8>);

impl CString {
    /// Whether the bytes equal `s` exactly (a C `strcmp` == 0).
    pub fn is(&self, s: &str) -> bool {
        self.0 == s.as_bytes()
    }
}

impl fmt::Display for CString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &c in &self.0 {
            if c.is_ascii_graphic() || c == b' ' {
                write!(f, "{}", char::from(c))?;
            } else {
                write!(f, "\\x{c:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for CString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl Serialize for CString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Why a C string could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CStrError {
    /// The start offset lies outside the bytes.
    OutOfBounds,
    /// No NUL byte before the end of the bytes.
    Unterminated,
}

/// The NUL-terminated string starting at `off` in `b` (the terminator must lie inside `b`).
pub fn cstr_at(b: &[u8], off: usize) -> Result<CString, CStrError> {
    let tail = b.get(off..).ok_or(CStrError::OutOfBounds)?;
    if tail.is_empty() {
        return Err(CStrError::OutOfBounds);
    }
    let end = tail
        .iter()
        .position(|&c| c == 0)
        .ok_or(CStrError::Unterminated)?;
    Ok(CString(tail.get(..end).unwrap_or_default().to_vec()))
}

/// Operand size of a decoded jump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 16-bit code (real-mode init entry): `E9 rel16`, `EB rel8`.
    Bits16,
    /// 32-bit code (VMI entry slots): `E9 rel32`, `EB rel8`.
    Bits32,
}

/// The target of the near `jmp` at `at` in `b` (`EB rel8`, or `E9` with a 16- or 32-bit
/// displacement per `mode`), as an offset into `b`'s address space. 16-bit targets wrap at 64 KiB.
/// `None` if the bytes there are not such a jump or the target would be negative.
pub fn jump_target(b: &[u8], at: usize, mode: Mode) -> Option<usize> {
    let at_i = i64::try_from(at).ok()?;
    let target = match (u8_at(b, at)?, mode) {
        (0xEB, _) => at_i + 2 + i64::from(u8_at(b, at + 1)? as i8),
        (0xE9, Mode::Bits16) => {
            let rel = u16_at(b, at + 1)?;
            i64::from((at_i as u16).wrapping_add(3).wrapping_add(rel))
        }
        (0xE9, Mode::Bits32) => at_i + 5 + i64::from(u32_at(b, at + 1)? as i32),
        _ => return None,
    };
    usize::try_from(target).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let b = [1, 2, 3, 4, 5];
        assert_eq!(u16_at(&b, 3), Some(0x0504));
        assert_eq!(u16_at(&b, 4), None);
        assert_eq!(u32_at(&b, 1), Some(0x0504_0302));
        assert_eq!(u32_at(&b, 2), None);
        assert_eq!(u32_at(&b, usize::MAX), None);
        assert_eq!(u8_at(&b, 5), None);
    }

    #[test]
    fn jumps() {
        let b = [0xEB, 0x10, 0xE9, 0xFD, 0xFF, 0xE9, 0x10, 0, 0, 0];
        assert_eq!(jump_target(&b, 0, Mode::Bits16), Some(0x12));
        // E9 FDFF at 2: 2 + 3 - 3 = 2 (jump to itself).
        assert_eq!(jump_target(&b, 2, Mode::Bits16), Some(2));
        assert_eq!(jump_target(&b, 5, Mode::Bits32), Some(5 + 5 + 0x10));
        assert_eq!(jump_target(&b, 5, Mode::Bits16), Some(5 + 3 + 0x10));
        assert_eq!(jump_target(&b, 6, Mode::Bits32), None);
        assert_eq!(jump_target(&b, 9, Mode::Bits32), None);
    }

    #[test]
    fn checksum_wraps() {
        assert_eq!(checksum(&[0xFF, 0x01]), 0);
        assert_eq!(checksum(&[0x80, 0x81]), 1);
    }

    #[test]
    fn cstrings() {
        let b = b"GPL\0GPL v2";
        assert!(cstr_at(b, 0).unwrap().is("GPL"));
        assert_eq!(cstr_at(b, 4), Err(CStrError::Unterminated));
        assert_eq!(cstr_at(b, 10), Err(CStrError::OutOfBounds));
        assert_eq!(cstr_at(b"\x01a\0", 0).unwrap().to_string(), "\\x01a");
    }
}
