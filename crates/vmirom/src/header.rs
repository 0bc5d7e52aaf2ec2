//! `vmirom header`: the ABI as a C header (an OS developer's `vmi.h`) or a Rust module,
//! generated from the `vmi-abi` tables so it cannot drift from them.

use std::fmt::Write as _;
use vmi_abi::calls::{CALLS, Loc, RelocType};
use vmi_abi::consts;
use vmi_abi::layout::{self, Kind, Layout};

/// Output language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// C (gcc/clang, `-m32`), with `_Static_assert`s on every offset.
    C,
    /// Rust (`#![no_std]`-friendly), with `offset_of!` const assertions.
    Rust,
}

/// Flags and constants exported to the headers: (C/Rust name, value, comment).
fn constants() -> Vec<(&'static str, u64, &'static str)> {
    use consts::*;
    vec![
        (
            "VMI_SIGNATURE",
            u64::from(VMI_SIGNATURE),
            "\"cVmi\" at offset 8",
        ),
        (
            "VMI_API_REV_MAJOR",
            u64::from(VMI_API_MAJOR),
            "required API major version",
        ),
        (
            "VMI_API_REV_MINOR",
            u64::from(VMI_API_MINOR),
            "API minor version",
        ),
        (
            "VMI_ROM_SIGNATURE",
            u64::from(ROM_SIGNATURE),
            "option-ROM signature",
        ),
        (
            "VMI_PCI_VENDOR_VMWARE",
            u64::from(PCI_VENDOR_VMWARE),
            "expected PCI vendor id",
        ),
        (
            "VMI_PCI_DEVICE_VMI",
            u64::from(PCI_DEVICE_VMI),
            "expected PCI device id",
        ),
        (
            "VMI_SCAN_START",
            u64::from(SCAN_START),
            "first probed physical address",
        ),
        (
            "VMI_SCAN_END",
            u64::from(SCAN_END),
            "end of the probed range",
        ),
        ("VMI_SCAN_STRIDE", u64::from(SCAN_STRIDE), "probe step"),
        (
            "VMI_ENTRY_INIT",
            ENTRY_INIT as u64,
            "offset of the Init entry slot",
        ),
        (
            "VMI_ENTRY_GET_RELOC",
            ENTRY_GET_RELOC as u64,
            "offset of the GetRelocationInfo slot",
        ),
        (
            "VMI_RELOCATION_NONE",
            RelocType::None as u64,
            "not implemented",
        ),
        (
            "VMI_RELOCATION_CALL_REL",
            RelocType::CallRel as u64,
            "reach eip with call",
        ),
        (
            "VMI_RELOCATION_JUMP_REL",
            RelocType::JumpRel as u64,
            "reach eip with jmp",
        ),
        (
            "VMI_RELOCATION_NOP",
            RelocType::Nop as u64,
            "operation needs nothing",
        ),
        ("VMI_PAGE_PT", u64::from(VMI_PAGE_PT), "page table level"),
        (
            "VMI_PAGE_PD",
            u64::from(VMI_PAGE_PD),
            "page directory level",
        ),
        ("VMI_PAGE_PDP", u64::from(VMI_PAGE_PDP), "PAE PDPT level"),
        ("VMI_PAGE_PML4", u64::from(VMI_PAGE_PML4), "PML4 level"),
        ("VMI_PAGE_NORMAL", u64::from(VMI_PAGE_NORMAL), "no level"),
        (
            "VMI_PAGE_PAE",
            u64::from(VMI_PAGE_PAE),
            "Allocate/ReleasePage: PAE",
        ),
        (
            "VMI_PAGE_CLONE",
            u64::from(VMI_PAGE_CLONE),
            "AllocatePage: cloned",
        ),
        (
            "VMI_PAGE_ZEROED",
            u64::from(VMI_PAGE_ZEROED),
            "AllocatePage: zeroed (hint)",
        ),
        (
            "VMI_PAGE_CURRENT_AS",
            u64::from(VMI_PAGE_CURRENT_AS),
            "SetPxE: current address space",
        ),
        (
            "VMI_PAGE_DEFER",
            u64::from(VMI_PAGE_DEFER),
            "SetPxE: may be deferred",
        ),
        (
            "VMI_PAGE_VA_MASK",
            u64::from(VMI_PAGE_VA_MASK),
            "SetPxE: linear address bits",
        ),
        (
            "VMI_PAGE_L1",
            u64::from(VMI_PAGE_L1),
            "page table (PT|ZEROED)",
        ),
        (
            "VMI_PAGE_L2",
            u64::from(VMI_PAGE_L2),
            "page directory (PD|ZEROED)",
        ),
        (
            "VMI_FLUSH_TLB",
            u64::from(VMI_FLUSH_TLB),
            "FlushTLB: non-global",
        ),
        (
            "VMI_FLUSH_GLOBAL",
            u64::from(VMI_FLUSH_GLOBAL),
            "FlushTLB: global too",
        ),
        (
            "VMI_LAZY_NONE",
            u64::from(VMI_LAZY_NONE),
            "SetLazyMode: none / flush",
        ),
        ("VMI_LAZY_MMU", u64::from(VMI_LAZY_MMU), "SetLazyMode: MMU"),
        ("VMI_LAZY_CPU", u64::from(VMI_LAZY_CPU), "SetLazyMode: CPU"),
        (
            "VMI_CYCLES_REAL",
            u64::from(VMI_CYCLES_REAL),
            "counter: real",
        ),
        (
            "VMI_CYCLES_AVAILABLE",
            u64::from(VMI_CYCLES_AVAILABLE),
            "counter: available",
        ),
        (
            "VMI_CYCLES_STOLEN",
            u64::from(VMI_CYCLES_STOLEN),
            "counter: stolen",
        ),
        (
            "VMI_ALARM_COUNTER_MASK",
            u64::from(VMI_ALARM_COUNTER_MASK),
            "alarm: counter bits",
        ),
        (
            "VMI_ALARM_WIRED_IRQ0",
            u64::from(VMI_ALARM_WIRED_IRQ0),
            "alarm: ISA IRQ 0",
        ),
        (
            "VMI_ALARM_WIRED_LVTT",
            u64::from(VMI_ALARM_WIRED_LVTT),
            "alarm: local-APIC timer",
        ),
        (
            "VMI_ALARM_IS_ONESHOT",
            u64::from(VMI_ALARM_IS_ONESHOT),
            "alarm: one-shot",
        ),
        (
            "VMI_ALARM_IS_PERIODIC",
            u64::from(VMI_ALARM_IS_PERIODIC),
            "alarm: periodic",
        ),
        (
            "VMI_ALARM_COUNTERS",
            u64::from(VMI_ALARM_COUNTERS),
            "alarm counters",
        ),
        (
            "VMI_LINEAR_MAP_SLOTS",
            u64::from(VMI_LINEAR_MAP_SLOTS),
            "SetLinearMapping slots",
        ),
    ]
}

/// How a call's inputs and outputs read in a comment.
fn call_comment(c: &vmi_abi::CallSpec) -> String {
    let args: Vec<String> = c
        .args
        .iter()
        .map(|a| format!("{}={}", a.name, a.loc))
        .collect();
    let outs: Vec<&str> = c.outputs.iter().map(|r| r.name()).collect();
    let mut s = format!(
        "class {}, in: {}, out: {}",
        c.class.tag(),
        if args.is_empty() {
            "-".into()
        } else {
            args.join(" ")
        },
        if outs.is_empty() {
            "-".into()
        } else {
            outs.join(":")
        },
    );
    let allowed: Vec<&str> = c.allowed.iter().map(RelocType::name).collect();
    let _ = write!(s, "; answers: {}", allowed.join("|"));
    if !c.confirmed {
        s.push_str("; UNCONFIRMED");
    }
    if c.args.iter().any(|a| a.loc == Loc::IretFrame) {
        s.push_str("; frame EIP,CS,EFLAGS[,ESP,SS]");
    }
    s
}

fn c_type(kind: Kind) -> (&'static str, Option<usize>) {
    match kind {
        Kind::U8 => ("uint8_t", None),
        Kind::U16 => ("uint16_t", None),
        Kind::U32 => ("uint32_t", None),
        Kind::U64 => ("uint64_t", None),
        Kind::Bytes(n) => ("uint8_t", Some(n)),
    }
}

/// The C header.
pub fn c_header() -> String {
    let mut o = String::new();
    o.push_str(
        "/* vmi.h: the VMI 3.0 option-ROM ABI as the Linux i386 client uses it.\n\
         * Generated by `vmirom header --lang c` from the vmi-abi crate. Do not edit.\n\
         * Calls use -mregparm=3: arguments in EAX, EDX, ECX, then the stack ([esp+4] ...);\n\
         * 64-bit results in EDX:EAX; the caller pops stack arguments. */\n\
         #ifndef VMIROM_VMI_H\n#define VMIROM_VMI_H\n\n#include <stdint.h>\n#include <stddef.h>\n\n",
    );
    for (name, value, doc) in constants() {
        let _ = writeln!(o, "#define {name:<24} 0x{value:08x}u /* {doc} */");
    }
    o.push_str("\n/* Call numbers (GetRelocationInfo argument). */\n");
    for c in &CALLS {
        let _ = writeln!(
            o,
            "#define VMI_CALL_{:<20} {:>2} /* {} */",
            c.name,
            c.number,
            call_comment(c)
        );
    }
    let _ = writeln!(o, "#define VMI_CALL_MAX {}\n", CALLS.len() - 1);
    for l in layout::ALL {
        write_c_struct(&mut o, l);
    }
    o.push_str(
        "/* Entry points, called through ROM+VMI_ENTRY_INIT and ROM+VMI_ENTRY_GET_RELOC. */\n\
         typedef uint32_t (*vmi_init_fn)(void) __attribute__((regparm(3)));\n\
         typedef uint64_t (*vmi_get_reloc_fn)(uint32_t call) __attribute__((regparm(3)));\n\n\
         #endif /* VMIROM_VMI_H */\n",
    );
    o
}

fn write_c_struct(o: &mut String, l: &Layout) {
    let _ = writeln!(o, "struct {} {{", l.name);
    for f in l.fields {
        let (ty, arr) = c_type(f.kind);
        let decl = match arr {
            Some(n) => format!("{ty} {}[{n}];", f.name),
            None => format!("{ty} {};", f.name),
        };
        let _ = writeln!(o, "    {decl:<32} /* 0x{:02x}: {} */", f.offset, f.doc);
    }
    let attr = if l.packed {
        " __attribute__((packed))"
    } else {
        ""
    };
    let _ = writeln!(o, "}}{attr};");
    let _ = writeln!(
        o,
        "_Static_assert(sizeof(struct {0}) == {1}, \"sizeof(struct {0})\");",
        l.name, l.size
    );
    for f in l.fields {
        let _ = writeln!(
            o,
            "_Static_assert(offsetof(struct {0}, {1}) == 0x{2:x}, \"{0}.{1}\");",
            l.name, f.name, f.offset
        );
    }
    o.push('\n');
}

/// A field name as a Rust identifier (`type` → `r#type`).
fn rust_ident(name: &str) -> String {
    let s = snake(name);
    match s.as_str() {
        "type" | "struct" | "fn" | "use" | "mod" | "ref" | "loop" | "move" => format!("r#{s}"),
        _ => s,
    }
}

/// `vendorID` → `vendor_id`, `lastRom` → `last_rom`.
fn snake(name: &str) -> String {
    let mut s = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if ch.is_ascii_uppercase() {
            if prev_lower {
                s.push('_');
            }
            s.push(ch.to_ascii_lowercase());
            prev_lower = false;
        } else {
            s.push(ch);
            prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        }
    }
    s
}

/// `vrom_header` → `VromHeader`.
fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The Rust module.
pub fn rust_module() -> String {
    let mut o = String::new();
    o.push_str(
        "//! The VMI 3.0 option-ROM ABI as the Linux i386 client uses it.\n\
         //! Generated by `vmirom header --lang rust` from the vmi-abi crate. Do not edit.\n\
         //! Calls use -mregparm=3: EAX, EDX, ECX, then [esp+4]...; 64-bit results in EDX:EAX.\n\
         #![allow(dead_code, non_upper_case_globals)]\n\n",
    );
    for (name, value, doc) in constants() {
        let _ = writeln!(o, "/// {doc}\npub const {name}: u32 = 0x{value:08x};");
    }
    o.push('\n');
    for c in &CALLS {
        let _ = writeln!(
            o,
            "/// {}: {}\npub const VMI_CALL_{}: u32 = {};",
            c.name,
            call_comment(c),
            c.name,
            c.number
        );
    }
    let _ = writeln!(
        o,
        "/// Highest call number.\npub const VMI_CALL_MAX: u32 = {};\n",
        CALLS.len() - 1
    );
    for l in layout::ALL {
        let repr = if l.packed {
            "C, packed"
        } else {
            "C, packed(4)"
        };
        let ty = camel(l.name);
        let _ = writeln!(
            o,
            "/// `struct {}`.\n#[repr({repr})]\n#[derive(Clone, Copy)]\npub struct {ty} {{",
            l.name
        );
        for f in l.fields {
            let rty = match f.kind {
                Kind::U8 => "u8".to_string(),
                Kind::U16 => "u16".to_string(),
                Kind::U32 => "u32".to_string(),
                Kind::U64 => "u64".to_string(),
                Kind::Bytes(n) => format!("[u8; {n}]"),
            };
            let _ = writeln!(
                o,
                "    /// 0x{:02x}: {}\n    pub {}: {rty},",
                f.offset,
                f.doc,
                rust_ident(f.name)
            );
        }
        o.push_str("}\n");
        let _ = writeln!(
            o,
            "const _: () = assert!(core::mem::size_of::<{ty}>() == {});",
            l.size
        );
        for f in l.fields {
            let _ = writeln!(
                o,
                "const _: () = assert!(core::mem::offset_of!({ty}, {}) == 0x{:x});",
                rust_ident(f.name),
                f.offset
            );
        }
        o.push('\n');
    }
    o
}

/// The header in `lang`.
pub fn generate(lang: Lang) -> String {
    match lang {
        Lang::C => c_header(),
        Lang::Rust => rust_module(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("vendorID"), "vendor_id");
        assert_eq!(snake("lastRom"), "last_rom");
        assert_eq!(snake("rom_version_min"), "rom_version_min");
        assert_eq!(snake("devID"), "dev_id");
        assert_eq!(camel("vmi_relocation_info"), "VmiRelocationInfo");
    }

    #[test]
    fn c_header_lists_every_call_once() {
        let h = c_header();
        for c in &CALLS {
            let needle = format!("#define VMI_CALL_{} ", c.name);
            assert_eq!(h.matches(&needle).count(), 1, "{}", c.name);
        }
        let setcr3 = h
            .lines()
            .find(|l| l.starts_with("#define VMI_CALL_SetCR3 "))
            .unwrap();
        assert_eq!(setcr3.split_whitespace().nth(2), Some("17"));
        assert!(h.contains("struct vrom_header {"));
    }
}
