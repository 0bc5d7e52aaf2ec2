//! Kernel symbols for `vmirom trace report --vmlinux FILE | --system-map FILE`: which function a
//! call site's return address lies in (`function+0xoff`), and its source file and line when the
//! vmlinux carries DWARF line information.
//!
//! Only code symbols count (ELF `STT_FUNC` symbols and other symbols of executable sections;
//! System.map types `t T w W`). An ELF function symbol covers `[address, address + size)`; a
//! symbol without a size (System.map has none) reaches to the next symbol. An address inside
//! no symbol resolves to nothing: the report shows it as a bare address.
//!
//! A return address is looked up at `address − 1`, the last byte of the `call` that pushed
//! it, so a call that ends its function (to a function that does not return) is named after
//! the function it is in, not the one that follows; the offset printed is the return
//! address's, as the guest pushed it.

use crate::cmd::CliError;
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use std::borrow::Cow;
use std::path::Path;
use std::rc::Rc;

/// One code symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sym {
    addr: u32,
    /// Bytes it covers; `None`: up to the next symbol.
    size: Option<u32>,
    name: String,
}

type Reader = gimli::EndianRcSlice<gimli::RunTimeEndian>;

/// The code symbols of a kernel, and its line table when it has one.
pub struct Symbols {
    /// By address, then name.
    syms: Vec<Sym>,
    lines: Option<addr2line::Context<Reader>>,
    /// Where they came from (for messages).
    pub source: String,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols")
            .field("source", &self.source)
            .field("symbols", &self.syms.len())
            .field("lines", &self.lines.is_some())
            .finish()
    }
}

/// A return address resolved to a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    /// Function name.
    pub function: &'a str,
    /// Return address − function start.
    pub offset: u32,
}

impl Symbols {
    /// Loads the symbol table (and DWARF lines, if any) of an ELF vmlinux.
    pub fn load_elf(path: &Path) -> Result<Symbols, CliError> {
        let bytes = crate::cmd::read(path)?;
        Symbols::from_elf(&bytes, &path.display().to_string())
    }

    /// Loads a System.map.
    pub fn load_system_map(path: &Path) -> Result<Symbols, CliError> {
        let bytes = crate::cmd::read(path)?;
        let what = path.display().to_string();
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            CliError(format!(
                "{what}: not a text file (invalid UTF-8 at byte {})",
                e.valid_up_to()
            ))
        })?;
        Symbols::from_system_map(text, &what)
    }

    /// The symbols of ELF image `bytes` (`what` names it in messages).
    pub fn from_elf(bytes: &[u8], what: &str) -> Result<Symbols, CliError> {
        let err = |m: String| CliError(format!("{what}: {m}"));
        let file =
            object::File::parse(bytes).map_err(|e| err(format!("not a readable ELF file: {e}")))?;
        let mut syms = Vec::new();
        for s in file.symbols() {
            let code = s.kind() == SymbolKind::Text
                || s.section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .is_some_and(|sec| sec.kind() == SectionKind::Text);
            if !code || s.is_undefined() || s.kind() == SymbolKind::Section {
                continue;
            }
            let name = s.name().map_err(|e| {
                err(format!(
                    "symbol {} at {:#x}: unreadable name: {e}",
                    s.index().0,
                    s.address()
                ))
            })?;
            if name.is_empty() {
                continue;
            }
            let addr = u32::try_from(s.address()).map_err(|_| {
                err(format!(
                    "symbol {name} at {:#x}: not a 32-bit address (not an i386 kernel)",
                    s.address()
                ))
            })?;
            let size = u32::try_from(s.size()).ok().filter(|n| *n > 0);
            syms.push(Sym {
                addr,
                size,
                name: name.to_string(),
            });
        }
        if syms.is_empty() {
            return Err(err(
                "no code symbols (a stripped image? use the vmlinux the kernel was built as, or \
                 its System.map)"
                    .into(),
            ));
        }
        Ok(Symbols {
            syms: sorted(syms),
            lines: line_table(&file),
            source: what.to_string(),
        })
    }

    /// The code symbols of a System.map (`ADDRESS TYPE NAME` per line).
    pub fn from_system_map(text: &str, what: &str) -> Result<Symbols, CliError> {
        let mut syms = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                CliError(format!(
                    "{what}:{}: {why}, expected `ADDRESS TYPE NAME` (hex address, one-letter \
                     type): `{}`",
                    i + 1,
                    line.trim()
                ))
            };
            let [addr, kind, name] = fields[..] else {
                return Err(bad(&format!("{} fields", fields.len())));
            };
            let addr = u64::from_str_radix(addr, 16).map_err(|_| bad("not a hex address"))?;
            if kind.chars().count() != 1 {
                return Err(bad("the type is not one letter"));
            }
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let addr = u32::try_from(addr)
                .map_err(|_| bad("the address does not fit 32 bits (not an i386 kernel)"))?;
            syms.push(Sym {
                addr,
                size: None,
                name: name.to_string(),
            });
        }
        if syms.is_empty() {
            return Err(CliError(format!(
                "{what}: no code symbols (types t, T, w, W): not a System.map"
            )));
        }
        Ok(Symbols {
            syms: sorted(syms),
            lines: None,
            source: what.to_string(),
        })
    }

    /// Whether file:line information is available.
    pub fn has_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// The function `ret` (a return address) lies in, and its offset there.
    pub fn place(&self, ret: u32) -> Option<Place<'_>> {
        let probe = ret.checked_sub(1)?;
        let i = self
            .syms
            .partition_point(|s| s.addr <= probe)
            .checked_sub(1)?;
        let s = self.syms.get(i)?;
        let end = match s.size {
            Some(n) => s.addr.checked_add(n),
            None => self.syms.get(i + 1).map(|next| next.addr),
        };
        if end.is_some_and(|e| probe >= e) || end.is_none() && probe != s.addr {
            return None;
        }
        Some(Place {
            function: &s.name,
            offset: ret - s.addr,
        })
    }

    /// `file:line` of the call that pushed return address `ret`, from the DWARF line table.
    pub fn line(&self, ret: u32) -> Option<String> {
        let ctx = self.lines.as_ref()?;
        let loc = ctx.find_location(u64::from(ret.checked_sub(1)?)).ok()??;
        match (loc.file, loc.line) {
            (Some(f), Some(l)) => Some(format!("{f}:{l}")),
            (Some(f), None) => Some(f.to_string()),
            _ => None,
        }
    }
}

/// By address; of several symbols at one address, the sized one first, then by name.
fn sorted(mut syms: Vec<Sym>) -> Vec<Sym> {
    syms.sort_by(|a, b| {
        (a.addr, a.size.is_none(), &a.name).cmp(&(b.addr, b.size.is_none(), &b.name))
    });
    syms.dedup_by_key(|s| s.addr);
    syms
}

/// The DWARF line table of `file`, if it has a usable one (uncompressed debug sections).
fn line_table(file: &object::File<'_>) -> Option<addr2line::Context<Reader>> {
    file.section_by_name(".debug_line")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(gimli::EndianRcSlice::new(Rc::from(&*data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_map_names_sites_and_says_where_it_is_wrong() {
        let map = "c0100000 T _text\nc0100000 T startup_32\nc0101000 t do_one\n\
                   c0101040 T do_two\nc0200000 D some_data\nc0101100 T _etext\n";
        let s = Symbols::from_system_map(map, "System.map").unwrap();
        assert_eq!(
            s.place(0xC010_1005),
            Some(Place {
                function: "do_one",
                offset: 5
            })
        );
        // The return address right after a call that ends do_one is still do_one's.
        assert_eq!(s.place(0xC010_1040).map(|p| p.function), Some("do_one"));
        assert_eq!(s.place(0xC010_1041).map(|p| p.function), Some("do_two"));
        // Past the last symbol, before the first: nowhere.
        assert_eq!(s.place(0xC010_1200), None);
        assert_eq!(s.place(0xC000_0000), None);
        assert!(!s.has_lines());
        for (bad, want) in [
            ("c0100000 T\n", "System.map:1: 2 fields"),
            ("c0100000 T a\nzz T b\n", "System.map:2: not a hex address"),
            (
                "c0100000 Tx a\n",
                "System.map:1: the type is not one letter",
            ),
            (
                "ffffffff81000000 T _text\n",
                "System.map:1: the address does not fit 32 bits",
            ),
            ("c0100000 D data\n", "System.map: no code symbols"),
        ] {
            let e = Symbols::from_system_map(bad, "System.map").unwrap_err().0;
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn garbage_is_not_an_elf_file() {
        let e = Symbols::from_elf(b"\x7fELF\x01\x01\x01", "vmlinux")
            .unwrap_err()
            .0;
        assert!(e.starts_with("vmlinux: not a readable ELF file"), "{e}");
        assert!(Symbols::from_elf(&[], "v").is_err());
    }

    /// A small gcc-built ELF with DWARF lines, damaged byte by byte and cut at every length:
    /// loading it is an answer or an error, never a panic, and so is every lookup.
    #[test]
    fn a_damaged_elf_is_an_error_or_symbols_never_a_panic() {
        use vmirom_testkit::toolchain;
        if !toolchain::available(&["gcc"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = "int g(int);\nint f(int x)\n{\n\treturn g(x) + 1;\n}\n";
        let obj = toolchain::gcc(dir.path(), "f", src, &["-g", "-fno-pic"]).unwrap();
        let good = std::fs::read(obj).unwrap();
        let s = Symbols::from_elf(&good, "f.o").unwrap();
        assert!(s.has_lines());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let probe = |elf: &[u8]| {
            if let Ok(s) = Symbols::from_elf(elf, "f.o") {
                for a in [0u32, 1, 4, 9, 0x20, u32::MAX] {
                    let _ = (s.place(a), s.line(a));
                }
            }
        };
        for _ in 0..1500 {
            let mut elf = good.clone();
            for _ in 0..1 + rnd() % 3 {
                let at = (rnd() % elf.len() as u64) as usize;
                elf[at] = rnd() as u8;
            }
            probe(&elf);
        }
        for len in (0..good.len()).step_by(7) {
            probe(&good[..len]);
        }
    }
}
