//! `optionrom::pack` on objects gcc and GNU as build on the spot (nothing checked in).
//!
//! Every test compiles its sources into a temporary directory and packs the objects. The
//! expected bytes are derived from the objects' own symbol tables and relocation lists (read
//! with the `object` crate) and from what the instructions mean, not from pack's report alone.
//! If gcc or as is missing, the tests say so on stderr and pass without checking anything.

// Test helpers fail loudly: a broken toolchain or a wrong byte is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationFlags};
use optionrom::bytes::checksum;
use optionrom::pack::{
    self, DropReason, Object, PackError, PackOptions, Packed, RelocKind, SectionClass,
};
use optionrom::validate::{self, Profile, Severity};
use optionrom::{Error, parse};
use std::path::Path;
use std::process::Command;
use vmirom_testkit::sources::{HELPER_C, INIT16_S};
use vmirom_testkit::toolchain;

/// The 32-bit side: Init, GetRelocationInfo returning run-time addresses, a pointer-free
/// `.rodata` table, references to the helper object's function and data.
const MAIN_C: &str = r#"
typedef unsigned int u32;
typedef unsigned long long u64;

#define VMI_CALL_REL 1
#define VMI_NOP 3

extern u32 vmi_helper(u32 x);
extern const char vmi_banner[];

static u32 __attribute__((noinline)) call_cpuid(void) { return 0x11; }
static u32 __attribute__((noinline)) call_halt(void) { return 0x22; }

/* Call number -> relocation type: pointer-free, so it stays in .rodata. */
static const unsigned char reloc_type[40] = { [5] = VMI_CALL_REL, [35] = VMI_CALL_REL, [7] = VMI_NOP };

u32 vmi_init(void) { return vmi_helper(0) + (u32)(vmi_banner[0] - 'v'); }

u64 __attribute__((regparm(1))) vmi_get_reloc(u32 call) {
    u32 eip;
    switch (call) {
    case 5: eip = (u32)&call_cpuid; break;
    case 35: eip = (u32)&call_halt; break;
    default: return 0;
    }
    return ((u64)reloc_type[call] << 32) | eip;
}
"#;

/// A static const table of function pointers: `.data.rel.ro.local` with R_386_32 entries.
const TABLE_C: &str = r#"
typedef unsigned int u32;
typedef unsigned long long u64;
static u32 __attribute__((noinline)) f0(void) { return 0; }
static u32 __attribute__((noinline)) f1(void) { return 1; }
typedef u32 (*fn_t)(void);
static fn_t const table[2] = { f0, f1 };
u32 vmi_init(void) { return 0; }
u64 __attribute__((regparm(1))) vmi_get_reloc(u32 call) {
    if (call >= 2) return 0;
    return ((u64)1 << 32) | (u32)table[call];
}
"#;

// ---------------------------------------------------------------------------------------------
// Building objects (vmirom-testkit).

/// Whether gcc and as are present; says so when they are not.
fn toolchain() -> bool {
    toolchain::available(&["gcc", "as"])
}

/// Compiles `src` with gcc -m32 -ffreestanding -O2 `flags` -c.
fn gcc(dir: &Path, name: &str, src: &str, flags: &[&str]) -> Vec<u8> {
    toolchain::read(&toolchain::gcc(dir, name, src, flags).unwrap()).unwrap()
}

/// Assembles `src` with as --32.
fn gas(dir: &Path, name: &str, src: &str) -> Vec<u8> {
    toolchain::read(&toolchain::gas(dir, name, src).unwrap()).unwrap()
}

fn pack_err(objects: &[Object<'_>], opts: &PackOptions) -> PackError {
    match pack::pack(objects, opts) {
        Err(Error::Pack(e)) => *e,
        Err(e) => panic!("expected a pack error, got {e}"),
        Ok(p) => panic!(
            "expected a pack error, got an image of {} bytes",
            p.image.len()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading objects independently of pack.

/// Image offset of `sym` defined in object `obj` (its section's placement + its value).
fn sym_at(p: &Packed, obj: &str, data: &[u8], sym: &str) -> usize {
    let f = object::File::parse(data).unwrap();
    let s = f
        .symbols()
        .find(|s| s.name() == Ok(sym))
        .unwrap_or_else(|| panic!("{sym} not in {obj}"));
    let sec = f.section_by_index(s.section_index().unwrap()).unwrap();
    section_at(p, obj, sec.name().unwrap()) + s.address() as usize
}

/// Image offset of section `name` of object `obj`.
fn section_at(p: &Packed, obj: &str, name: &str) -> usize {
    p.sections
        .iter()
        .find(|s| s.object == obj && s.name == name)
        .unwrap_or_else(|| panic!("{obj}:{name} not placed: {:#?}", p.sections))
        .offset
}

/// Relocations of section `sec` in `data`: (offset, r_type, target symbol name or section name).
fn relocs(data: &[u8], sec: &str) -> Vec<(usize, u32, String)> {
    let f = object::File::parse(data).unwrap();
    let s = f.section_by_name(sec).unwrap();
    s.relocations()
        .map(|(off, r)| {
            let RelocationFlags::Elf { r_type } = r.flags() else {
                panic!("not ELF")
            };
            let name = match r.target() {
                object::RelocationTarget::Symbol(i) => {
                    let sym = f.symbol_by_index(i).unwrap();
                    match sym.section_index() {
                        Some(si) if sym.kind() == object::SymbolKind::Section => {
                            f.section_by_index(si).unwrap().name().unwrap().to_string()
                        }
                        _ => sym.name().unwrap().to_string(),
                    }
                }
                _ => String::new(),
            };
            (off as usize, r_type, name)
        })
        .collect()
}

fn le32(img: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(img[at..at + 4].try_into().unwrap())
}

fn le16(img: &[u8], at: usize) -> i16 {
    i16::from_le_bytes(img[at..at + 2].try_into().unwrap())
}

/// Checks what parse and validate see in a packed VMI image.
fn check_image(p: &Packed, opts: &PackOptions) {
    let img = &p.image;
    assert_eq!(img.len() % 512, 0);
    assert_eq!(img[2] as usize * 512, img.len());
    assert_eq!(checksum(img), 0, "image does not sum to 0");
    let rom = parse(img);
    let image = &rom.images[0];
    let pcir = image.pcir.present().expect("PCIR");
    assert_eq!((pcir.vendor_id, pcir.device_id), opts.pci_id);
    assert_eq!(pcir.revision, 3);
    assert_eq!(pcir.class_code, pack::CLASS_CODE);
    assert_eq!(
        pcir.code_revision,
        u16::from(opts.version.0) << 8 | u16::from(opts.version.1)
    );
    assert!(pcir.is_last());
    assert_eq!(usize::from(pcir.image_length) * 512, img.len());
    assert_eq!(image.pcir_ptr as usize, pack::PCIR_OFFSET);
    let pnp = &image.pnp.present().expect("$PnP")[0];
    assert_eq!(pnp.offset, pack::PNP_OFFSET);
    assert_eq!(pnp.sum, Some(0));
    assert_eq!(pnp.device_type, pack::CLASS_CODE);
    let vmi = image.vmi.as_ref().expect("cVmi header");
    assert_eq!(&img[8..12], b"cVmi");
    assert_eq!((vmi.api_major, vmi.api_minor), (3, 0));
    assert_eq!(vmi.license_for_linux().to_string(), opts.license);
    assert_eq!(vmi.virtual_top, opts.virtual_top);
    assert_eq!(
        vmi.manufacturer
            .clone()
            .and_then(Result::ok)
            .map(|s| s.to_string())
            .as_deref(),
        Some(opts.vendor.as_str())
    );
    assert_eq!(
        vmi.product
            .clone()
            .and_then(Result::ok)
            .map(|s| s.to_string())
            .as_deref(),
        Some(opts.product.as_str())
    );
    assert_eq!(vmi.init_target, Some(p.entries.init));
    assert_eq!(vmi.get_reloc_target, Some(p.entries.get_reloc));
    // The strings sit between the header and the code.
    assert!(usize::from(vmi.license_offs) >= 0x90 && usize::from(vmi.license_offs) < p.code_start);
    for profile in [Profile::LinuxVmi, Profile::Seabios] {
        let findings = validate::validate(img, &rom, profile);
        let fails: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .collect();
        assert!(fails.is_empty(), "{profile:?} fails: {fails:#?}");
    }
}

/// `jmp rel32` at `slot` lands on `target`.
fn assert_jmp32(img: &[u8], slot: usize, target: usize) {
    assert_eq!(img[slot], 0xE9, "slot {slot:#x} is not a jmp rel32");
    assert_eq!(
        slot as i64 + 5 + i64::from(le32(img, slot + 1)),
        target as i64,
        "slot {slot:#x}"
    );
    assert_eq!(&img[slot + 5..slot + 8], &[0xCC; 3]);
}

// ---------------------------------------------------------------------------------------------

#[test]
fn pie_objects_pack_into_a_vmi_rom() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main = gcc(dir.path(), "main", MAIN_C, &["-fPIE"]);
    let helper = gcc(dir.path(), "helper", HELPER_C, &["-fPIE"]);
    let init16 = gas(dir.path(), "init16", INIT16_S);
    let objects = [
        Object {
            name: "main.o",
            data: &main,
        },
        Object {
            name: "helper.o",
            data: &helper,
        },
        Object {
            name: "init16.o",
            data: &init16,
        },
    ];
    let opts = PackOptions {
        version: (2, 7),
        virtual_top: 0xFC00_0000,
        ..PackOptions::default()
    };
    let p = pack::pack(&objects, &opts).unwrap();
    let img = &p.image;
    check_image(&p, &opts);
    // Same inputs, same bytes; also from buffers that are not 4-byte aligned.
    assert_eq!(pack::pack(&objects, &opts).unwrap(), p);
    let shifted: Vec<Vec<u8>> = objects
        .iter()
        .map(|o| [&[0u8][..], o.data].concat())
        .collect();
    let unaligned: Vec<Object<'_>> = objects
        .iter()
        .zip(&shifted)
        .map(|(o, s)| Object {
            name: o.name,
            data: &s[1..],
        })
        .collect();
    assert_eq!(pack::pack(&unaligned, &opts).unwrap(), p);

    // Entries: slots at 0x80/0x88 jump to the symbols, offset 3 jumps (rel16) to vmi_init16.
    let init = sym_at(&p, "main.o", &main, "vmi_init");
    let get_reloc = sym_at(&p, "main.o", &main, "vmi_get_reloc");
    let init16_at = sym_at(&p, "init16.o", &init16, "vmi_init16");
    assert_eq!(
        (p.entries.init, p.entries.get_reloc, p.entries.init16),
        (init, get_reloc, Some(init16_at))
    );
    assert_jmp32(img, 0x80, init);
    assert_jmp32(img, 0x88, get_reloc);
    assert_eq!(img[3], 0xE9);
    assert_eq!(6 + le16(img, 4) as i64, init16_at as i64);

    // Layout: text, then rodata, in input order; sections honour their alignment.
    let classes: Vec<SectionClass> = p.sections.iter().map(|s| s.class).collect();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(classes, sorted, "{:#?}", p.sections);
    assert!(p.sections.iter().all(|s| s.offset % s.align == 0));
    assert_eq!(p.sections[0].object, "main.o");
    assert_eq!(p.sections[0].name, ".text");
    assert!(
        p.sections
            .iter()
            .all(|s| s.offset >= p.code_start && s.offset + s.size <= p.code_end)
    );
    // Code and data bytes are the objects' (outside relocated fields): vmi_helper's first byte
    // is the call to the PC thunk.
    let helper_at = sym_at(&p, "helper.o", &helper, "vmi_helper");
    assert_eq!(img[helper_at], 0xE8);

    // COMDAT: helper.o's copy of __x86.get_pc_thunk.cx is dropped, main.o's is kept.
    let thunk = ".text.__x86.get_pc_thunk.cx";
    assert!(
        p.sections
            .iter()
            .any(|s| s.object == "main.o" && s.name == thunk)
    );
    assert!(
        !p.sections
            .iter()
            .any(|s| s.object == "helper.o" && s.name == thunk)
    );
    assert!(p.dropped.iter().any(|d| d.object == "helper.o"
        && d.name == thunk
        && d.reason
            == DropReason::ComdatDuplicate {
                group: "__x86.get_pc_thunk.cx".into(),
                kept_in: "main.o".into()
            }));
    assert!(
        p.dropped
            .iter()
            .any(|d| d.name == ".eh_frame" && d.reason == DropReason::Unwind)
    );
    let thunk_at = section_at(&p, "main.o", thunk);
    assert_eq!(&img[thunk_at..thunk_at + 4], &[0x8B, 0x0C, 0x24, 0xC3]); // mov (%esp),%ecx; ret

    let text = section_at(&p, "main.o", ".text");
    let main_relocs = relocs(&main, ".text");
    // R_386_PLT32 vmi_init -> vmi_helper (other object): call rel32 lands on vmi_helper.
    let (site, _, _) = main_relocs
        .iter()
        .find(|(_, t, n)| *t == object::elf::R_386_PLT32 && n == "vmi_helper")
        .unwrap()
        .clone();
    let pos = text + site;
    assert_eq!(img[pos - 1], 0xE8);
    assert_eq!(pos as i64 + 4 + i64::from(le32(img, pos)), helper_at as i64);
    // R_386_PC32 to the thunk (a call in helper.o to the thunk kept from main.o).
    let (hsite, _, _) = relocs(&helper, ".text")
        .into_iter()
        .find(|(_, t, n)| *t == object::elf::R_386_PC32 && n == "__x86.get_pc_thunk.cx")
        .unwrap();
    let hpos = section_at(&p, "helper.o", ".text") + hsite;
    assert_eq!(
        hpos as i64 + 4 + i64::from(le32(img, hpos)),
        thunk_at as i64
    );
    // R_386_GOTPC: `add $imm, %reg` right after the thunk call makes reg = image start (GOT = 0).
    let gotpc: Vec<usize> = main_relocs
        .iter()
        .filter(|r| r.1 == object::elf::R_386_GOTPC)
        .map(|r| text + r.0)
        .collect();
    assert_eq!(gotpc.len(), 2);
    for pos in gotpc {
        assert_eq!(img[pos - 2], 0x81, "add imm32");
        // The thunk returns the address of the add, which starts 2 bytes before the field.
        assert_eq!((pos - 2) as i64 + i64::from(le32(img, pos)), 0);
    }
    // R_386_GOTOFF: `lea call_cpuid@GOTOFF(%ecx)` and `lea call_halt@GOTOFF(%ecx)` hold the
    // functions' image offsets; the reloc_type table access holds the table's offset.
    let cpuid = sym_at(&p, "main.o", &main, "call_cpuid") as i32;
    let halt = sym_at(&p, "main.o", &main, "call_halt") as i32;
    let table = sym_at(&p, "main.o", &main, "reloc_type") as i32;
    let gotoff: Vec<i32> = main_relocs
        .iter()
        .filter(|r| r.1 == object::elf::R_386_GOTOFF)
        .map(|r| le32(img, text + r.0))
        .collect();
    for want in [cpuid, halt, table] {
        assert!(gotoff.contains(&want), "{want:#x} not among {gotoff:x?}");
    }
    // R_386_GOT32X: `mov vmi_banner@GOT(%ebx), %edx` (8b 93) became `lea vmi_banner@GOTOFF(%ebx), %edx`.
    let (gsite, _, _) = main_relocs
        .iter()
        .find(|r| r.1 == object::elf::R_386_GOT32X)
        .unwrap()
        .clone();
    let gpos = text + gsite;
    assert_eq!(main[file_offset(&main, ".text") + gsite - 2], 0x8B);
    assert_eq!(&img[gpos - 2..gpos], &[0x8D, 0x93]);
    assert_eq!(
        le32(img, gpos) as usize,
        sym_at(&p, "helper.o", &helper, "vmi_banner")
    );
    assert_eq!(
        &img[sym_at(&p, "helper.o", &helper, "vmi_banner")..][..16],
        b"vmirom test ROM\0"
    );

    // 16-bit init: R_386_16 `mov $marker, %si` (be imm16) holds the marker's image offset
    // (= its offset in the ROM's segment); the R_386_PC16 calls land on puts16 and hex16.
    let marker = section_at(&p, "init16.o", ".rodata.init16");
    assert_eq!(&img[marker..marker + 18], b"vmi_init16 ran at ");
    let i16text = section_at(&p, "init16.o", ".text.init16");
    let r16 = relocs(&init16, ".text.init16");
    let abs16: Vec<_> = r16
        .iter()
        .filter(|r| r.1 == object::elf::R_386_16)
        .collect();
    assert_eq!(abs16.len(), 1);
    let pos = i16text + abs16[0].0;
    assert_eq!(img[pos - 1], 0xBE, "mov imm16, %si");
    assert_eq!(le16(img, pos) as u16 as usize, marker);
    for (callee, name) in [("puts16", "puts16"), ("hex16", "hex16")] {
        let r = r16
            .iter()
            .find(|r| r.1 == object::elf::R_386_PC16 && r.2 == name)
            .unwrap();
        let pos = i16text + r.0;
        assert_eq!(img[pos - 1], 0xE8, "call rel16");
        assert_eq!(
            pos as i64 + 2 + i64::from(le16(img, pos)),
            sym_at(&p, "init16.o", &init16, callee) as i64
        );
    }

    // Relocation counts by type, as the objects list them (.eh_frame and the dropped thunk
    // copy excluded).
    let count = |k: RelocKind| p.relocations.get(&k).copied().unwrap_or(0);
    assert_eq!(count(RelocKind::Abs16), 1);
    assert_eq!(count(RelocKind::Pc16), 2);
    assert_eq!(count(RelocKind::Got32X), 1);
    assert_eq!(count(RelocKind::Abs32), 0);
    let in_objects = |t: u32| {
        [(&main, ".text"), (&helper, ".text")]
            .iter()
            .map(|(d, s)| relocs(d, s).iter().filter(|r| r.1 == t).count())
            .sum::<usize>()
    };
    assert_eq!(
        count(RelocKind::GotPc),
        in_objects(object::elf::R_386_GOTPC)
    );
    assert_eq!(
        count(RelocKind::GotOff),
        in_objects(object::elf::R_386_GOTOFF)
    );
    assert_eq!(
        count(RelocKind::Plt32),
        in_objects(object::elf::R_386_PLT32)
    );
    assert_eq!(count(RelocKind::Pc32), in_objects(object::elf::R_386_PC32));

    // The report lists global symbols with their offsets.
    let reported = |n: &str| p.symbols.iter().find(|s| s.name == n).map(|s| s.offset);
    assert_eq!(reported("vmi_helper"), Some(helper_at));
    assert_eq!(reported("vmi_init16"), Some(init16_at));
}

/// File offset of section `name` in `data`.
fn file_offset(data: &[u8], name: &str) -> usize {
    let f = object::File::parse(data).unwrap();
    f.section_by_name(name).unwrap().file_range().unwrap().0 as usize
}

#[test]
fn pic_and_no_plt_got_loads_are_relaxed() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // -fPIC: extern functions through the PLT, extern data through the GOT (GOT32X mov).
    // -fno-plt: extern calls become `call *sym@GOT(%ebx)` (GOT32X, FF /2).
    let main = gcc(dir.path(), "main", MAIN_C, &["-fPIC", "-fno-plt"]);
    let helper = gcc(dir.path(), "helper", HELPER_C, &["-fPIC"]);
    let objects = [
        Object {
            name: "main.o",
            data: &main,
        },
        Object {
            name: "helper.o",
            data: &helper,
        },
    ];
    let opts = PackOptions::default();
    let p = pack::pack(&objects, &opts).unwrap();
    check_image(&p, &opts);
    assert_eq!(p.entries.init16, None);
    assert_eq!(&p.image[3..6], &optionrom::build::DEFAULT_INIT16);
    let img = &p.image;
    let text = section_at(&p, "main.o", ".text");
    let ftext = file_offset(&main, ".text");
    let helper_at = sym_at(&p, "helper.o", &helper, "vmi_helper");
    let banner = sym_at(&p, "helper.o", &helper, "vmi_banner");
    let mut calls = 0;
    let mut movs = 0;
    for (site, t, name) in relocs(&main, ".text") {
        if t != object::elf::R_386_GOT32X {
            continue;
        }
        let pos = text + site;
        match main[ftext + site - 2] {
            0xFF => {
                // call *vmi_helper@GOT(%ebx) -> addr32 call vmi_helper
                assert_eq!(name, "vmi_helper");
                assert_eq!(&img[pos - 2..pos], &[0x67, 0xE8]);
                assert_eq!(pos as i64 + 4 + i64::from(le32(img, pos)), helper_at as i64);
                calls += 1;
            }
            0x8B => {
                assert_eq!(name, "vmi_banner");
                assert_eq!(img[pos - 2], 0x8D);
                assert_eq!(img[pos - 1], main[ftext + site - 1], "same ModRM");
                assert_eq!(le32(img, pos) as usize, banner);
                movs += 1;
            }
            other => panic!("unexpected GOT32X instruction {other:#x}"),
        }
    }
    assert_eq!((calls, movs), (1, 1));
    assert_eq!(p.relocations.get(&RelocKind::Got32X), Some(&2));
    // helper.o (-fPIC) calls vmi_twice through the PLT: straight to the function.
    let (site, _, _) = relocs(&helper, ".text")
        .into_iter()
        .find(|r| r.1 == object::elf::R_386_PLT32)
        .unwrap();
    let pos = section_at(&p, "helper.o", ".text") + site;
    assert_eq!(
        pos as i64 + 4 + i64::from(le32(img, pos)),
        sym_at(&p, "helper.o", &helper, "vmi_twice") as i64
    );
}

#[test]
fn absolute_relocations_need_a_pinned_base() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main = gcc(dir.path(), "main", MAIN_C, &["-fno-pic"]);
    let helper = gcc(dir.path(), "helper", HELPER_C, &["-fno-pic"]);
    let objects = [
        Object {
            name: "main.o",
            data: &main,
        },
        Object {
            name: "helper.o",
            data: &helper,
        },
    ];
    // The first R_386_32 of main.o's .text is the error.
    let (site, _, sym) = relocs(&main, ".text")
        .into_iter()
        .find(|r| r.1 == object::elf::R_386_32)
        .expect("-fno-pic code has R_386_32");
    let e = pack_err(&objects, &PackOptions::default());
    let msg = e.to_string();
    match &e {
        PackError::PositionDependent {
            site: s,
            kind,
            symbol,
            ..
        } => {
            assert_eq!(*kind, RelocKind::Abs32);
            assert_eq!(symbol, &sym);
            assert_eq!(
                (s.object.as_str(), s.section.as_str(), s.offset),
                ("main.o", ".text", site as u64)
            );
        }
        other => panic!("expected PositionDependent, got {other:?}"),
    }
    for part in [
        "R_386_32",
        &format!("`{sym}`"),
        &format!("{site:#x}"),
        "main.o",
        "-fPIE",
        "--base",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg:?}");
    }

    // With the load address pinned, every absolute field holds base + image offset.
    const BASE: u32 = 0xC00C_0000;
    let opts = PackOptions {
        base: Some(BASE),
        ..PackOptions::default()
    };
    let p = pack::pack(&objects, &opts).unwrap();
    check_image(&p, &opts);
    let img = &p.image;
    let mut abs = 0;
    for (obj, data) in [("main.o", &main), ("helper.o", &helper)] {
        let f = object::File::parse(&data[..]).unwrap();
        for sec in f.sections() {
            let Ok(sname) = sec.name() else { continue };
            if !p
                .sections
                .iter()
                .any(|s| s.object == obj && s.name == sname)
            {
                continue;
            }
            let (foff, _) = sec.file_range().unwrap();
            for (site, t, target) in relocs(data, sname) {
                if t != object::elf::R_386_32 {
                    continue;
                }
                let addend =
                    i32::from_le_bytes(data[foff as usize + site..][..4].try_into().unwrap());
                let s = if target.starts_with('.') {
                    section_at(&p, obj, &target)
                } else {
                    p.symbols.iter().find(|s| s.name == target).unwrap().offset
                };
                let want = BASE as i64 + s as i64 + i64::from(addend);
                let pos = section_at(&p, obj, sname) + site;
                assert_eq!(
                    le32(img, pos) as u32 as i64,
                    want,
                    "{obj}:{sname}+{site:#x}"
                );
                abs += 1;
            }
        }
    }
    assert!(abs >= 2, "expected several R_386_32 sites, saw {abs}");
    assert_eq!(p.relocations.get(&RelocKind::Abs32), Some(&abs));
    // By hand: vmi_get_reloc's case 5 loads `mov $call_cpuid, %eax`-style immediates; the
    // reloc_type table read uses the absolute table address. At least one field is exactly
    // the address of call_cpuid.
    let cpuid = BASE as usize + sym_at(&p, "main.o", &main, "call_cpuid");
    let text = section_at(&p, "main.o", ".text");
    assert!(
        relocs(&main, ".text")
            .iter()
            .filter(|r| r.1 == object::elf::R_386_32)
            .any(|r| le32(img, text + r.0) as u32 as usize == cpuid)
    );
}

#[test]
fn function_pointer_tables_need_a_pinned_base() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let table = gcc(dir.path(), "table", TABLE_C, &["-fPIC"]);
    let objects = [Object {
        name: "table.o",
        data: &table,
    }];
    let e = pack_err(&objects, &PackOptions::default());
    match &e {
        PackError::PositionDependent {
            site, kind, symbol, ..
        } => {
            assert_eq!(*kind, RelocKind::Abs32);
            assert_eq!(site.section, ".data.rel.ro.local");
            assert_eq!(site.offset, 0);
            assert_eq!(symbol, ".text");
        }
        other => panic!("expected PositionDependent, got {other:?}"),
    }
    assert!(e.to_string().contains("pointer stored in data"), "{e}");

    const BASE: u32 = 0xC00C_A000;
    let p = pack::pack(
        &objects,
        &PackOptions {
            base: Some(BASE),
            ..PackOptions::default()
        },
    )
    .unwrap();
    let relro = p
        .sections
        .iter()
        .find(|s| s.name == ".data.rel.ro.local")
        .unwrap();
    assert_eq!(relro.class, SectionClass::RelRo);
    assert_eq!(p.sections.last().unwrap().name, ".data.rel.ro.local");
    let f0 = BASE as usize + sym_at(&p, "table.o", &table, "f0");
    let f1 = BASE as usize + sym_at(&p, "table.o", &table, "f1");
    assert_eq!(le32(&p.image, relro.offset) as u32 as usize, f0);
    assert_eq!(le32(&p.image, relro.offset + 4) as u32 as usize, f1);
    // vmi_get_reloc reads the table PIC-style: its GOTOFF field is the table's image offset.
    let text = section_at(&p, "table.o", ".text");
    let gotoff: Vec<usize> = relocs(&table, ".text")
        .iter()
        .filter(|r| r.1 == object::elf::R_386_GOTOFF)
        .map(|r| le32(&p.image, text + r.0) as usize)
        .collect();
    assert_eq!(gotoff, vec![relro.offset]);
}

#[test]
fn writable_data_bss_and_common_are_rejected() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = gcc(dir.path(), "main", MAIN_C, &["-fPIE"]);
    let helper = gcc(dir.path(), "helper", HELPER_C, &["-fPIE"]);
    let bss = "unsigned int counter;\nunsigned int *p(void) { return &counter; }\n";
    let data = "unsigned int counter = 7;\nunsigned int *p(void) { return &counter; }\n";
    for (src, flags, want) in [
        (bss, &["-fPIE", "-fno-common"][..], "bss"),
        (data, &["-fPIE"][..], "data"),
        (bss, &["-fPIE", "-fcommon"][..], "common"),
    ] {
        let state = gcc(dir.path(), "state", src, flags);
        let objects = [
            Object {
                name: "main.o",
                data: &base,
            },
            Object {
                name: "helper.o",
                data: &helper,
            },
            Object {
                name: "state.o",
                data: &state,
            },
        ];
        let e = pack_err(&objects, &PackOptions::default());
        let ok = match want {
            "bss" => matches!(&e, PackError::NoBits { object, section, size: 4 }
                if object == "state.o" && section == ".bss"),
            "data" => matches!(&e, PackError::Writable { object, section, size: 4 }
                if object == "state.o" && section == ".data"),
            _ => matches!(&e, PackError::Common { object, symbol, size: 4 }
                if object == "state.o" && symbol == "counter"),
        };
        assert!(ok, "{flags:?}: unexpected {e:?}");
        assert!(e.to_string().contains("writable"), "{e}");
    }
}

#[test]
fn symbol_errors_name_the_symbol_and_the_objects() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main = gcc(dir.path(), "main", MAIN_C, &["-fPIE"]);
    let helper = gcc(dir.path(), "helper", HELPER_C, &["-fPIE"]);
    let dup = gcc(
        dir.path(),
        "dup",
        "unsigned int vmi_helper(unsigned int x) { return x + 1; }\n",
        &["-fPIE"],
    );
    let obj = |name, data| Object { name, data };

    // Two strong definitions.
    let e = pack_err(
        &[
            obj("main.o", &main),
            obj("helper.o", &helper),
            obj("dup.o", &dup),
        ],
        &PackOptions::default(),
    );
    assert_eq!(
        e,
        PackError::DuplicateSymbol {
            symbol: "vmi_helper".into(),
            first: "helper.o".into(),
            second: "dup.o".into()
        }
    );

    // A weak definition yields to a strong one.
    let weak = gcc(
        dir.path(),
        "weak",
        "__attribute__((weak)) unsigned int vmi_helper(unsigned int x) { return x + 1; }\n",
        &["-fPIE"],
    );
    let p = pack::pack(
        &[
            obj("main.o", &main),
            obj("weak.o", &weak),
            obj("helper.o", &helper),
        ],
        &PackOptions::default(),
    )
    .unwrap();
    let s = p.symbols.iter().find(|s| s.name == "vmi_helper").unwrap();
    assert_eq!(s.object, "helper.o");

    // Undefined: main.o without helper.o.
    let (site, _, _) = relocs(&main, ".text")
        .into_iter()
        .find(|r| r.2 == "vmi_helper")
        .unwrap();
    let e = pack_err(&[obj("main.o", &main)], &PackOptions::default());
    match &e {
        PackError::Undefined { site: s, symbol } => {
            assert_eq!(symbol, "vmi_helper");
            assert_eq!(
                (s.object.as_str(), s.section.as_str(), s.offset),
                ("main.o", ".text", site as u64)
            );
        }
        other => panic!("expected Undefined, got {other:?}"),
    }
    assert!(e.to_string().contains(&format!("{site:#x}")));

    // Missing entries.
    let no_reloc = gcc(
        dir.path(),
        "noreloc",
        "unsigned int vmi_init(void) { return 0; }\n",
        &["-fPIE"],
    );
    let e = pack_err(&[obj("noreloc.o", &no_reloc)], &PackOptions::default());
    assert!(
        matches!(
            e,
            PackError::MissingEntry {
                symbol: "vmi_get_reloc",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("vmi_get_reloc"));
    let no_init = gcc(
        dir.path(),
        "noinit",
        "unsigned long long __attribute__((regparm(1))) vmi_get_reloc(unsigned c) { return c; }\n",
        &["-fPIE"],
    );
    let e = pack_err(&[obj("noinit.o", &no_init)], &PackOptions::default());
    assert!(
        matches!(
            e,
            PackError::MissingEntry {
                symbol: "vmi_init",
                ..
            }
        ),
        "{e:?}"
    );

    // An entry that is data, not code.
    let data_entry = gcc(
        dir.path(),
        "dataentry",
        "const unsigned int vmi_init = 0;\nunsigned long long __attribute__((regparm(1))) vmi_get_reloc(unsigned c) { return c; }\n",
        &["-fPIE"],
    );
    let e = pack_err(&[obj("dataentry.o", &data_entry)], &PackOptions::default());
    assert!(
        matches!(
            e,
            PackError::EntryNotCode {
                symbol: "vmi_init",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(".rodata"), "{e}");
}

#[test]
fn inputs_that_are_not_elf32_i386_relocatables_are_rejected() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let main = gcc(dir.path(), "main", MAIN_C, &["-fPIE"]);
    let opts = PackOptions::default();
    let one = |name: &'static str, data: &[u8]| pack_err(&[Object { name, data }], &opts);

    assert_eq!(
        pack::pack(&[], &opts).unwrap_err(),
        Error::from(PackError::NoObjects)
    );
    let e = one("readme.txt", b"hello");
    assert!(
        matches!(&e, PackError::NotElf { object, .. } if object == "readme.txt"),
        "{e:?}"
    );
    assert!(e.to_string().contains("expected an ELF32 i386 relocatable"));

    let out = Command::new("gcc")
        .args(["-m64", "-ffreestanding", "-c", "-o"])
        .arg(dir.path().join("x64.o"))
        .arg(dir.path().join("main.c"))
        .output()
        .unwrap();
    if out.status.success() {
        let x64 = std::fs::read(dir.path().join("x64.o")).unwrap();
        let e = one("x64.o", &x64);
        assert!(matches!(&e, PackError::NotElf32 { class: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("expected ELF32"), "{e}");
    }

    // e_machine (offset 18) = EM_X86_64 in a 32-bit header.
    let mut wrong_machine = main.clone();
    wrong_machine[18..20].copy_from_slice(&62u16.to_le_bytes());
    let e = one("x32.o", &wrong_machine);
    assert!(
        matches!(&e, PackError::NotI386 { object, .. } if object == "x32.o"),
        "{e:?}"
    );
    assert!(e.to_string().contains("EM_386"));

    // e_type (offset 16) = ET_EXEC.
    let mut exec = main.clone();
    exec[16..18].copy_from_slice(&2u16.to_le_bytes());
    let e = one("a.out", &exec);
    assert!(
        matches!(&e, PackError::NotRelocatable { e_type: 2, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("ET_REL"));

    // Truncated: malformed, not a panic.
    for cut in [10, 52, 200, main.len() / 2, main.len() - 1] {
        let r = pack::pack(
            &[Object {
                name: "cut.o",
                data: &main[..cut],
            }],
            &opts,
        );
        assert!(r.is_err(), "cut at {cut} packed");
    }
}

#[test]
fn unsupported_and_overflowing_relocations_are_named() {
    if !toolchain() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let entries = r#"
    .text
    .globl vmi_init, vmi_get_reloc
vmi_init:
    xorl %eax, %eax
    ret
vmi_get_reloc:
    xorl %eax, %eax
    xorl %edx, %edx
    ret
"#;
    // R_386_SIZE32 (38) through a .reloc directive.
    let size = gas(
        dir.path(),
        "size",
        &format!(
            "{entries}\n    .section .rodata\n    .globl sz\nsz:\n    .reloc ., R_386_SIZE32, vmi_init\n    .long 0\n"
        ),
    );
    let e = pack_err(
        &[Object {
            name: "size.o",
            data: &size,
        }],
        &PackOptions::default(),
    );
    match &e {
        PackError::UnsupportedRelocation {
            site,
            r_type,
            symbol,
            ..
        } => {
            assert_eq!(*r_type, 38);
            assert_eq!(symbol, "vmi_init");
            assert_eq!((site.section.as_str(), site.offset), (".rodata", 0));
        }
        other => panic!("expected UnsupportedRelocation, got {other:?}"),
    }
    assert!(e.to_string().contains("R_386_SIZE32 (38)"), "{e}");

    // R_386_PC8 out of range: jcxz to a label 300 bytes away in another section.
    let far = gas(
        dir.path(),
        "far",
        &format!(
            "{entries}\n    .code16\n    .section .text.a,\"ax\"\n    jcxz faraway\n    .section .text.b,\"ax\"\n    .fill 300, 1, 0x90\n    .globl faraway\nfaraway:\n    retw\n"
        ),
    );
    let e = pack_err(
        &[Object {
            name: "far.o",
            data: &far,
        }],
        &PackOptions::default(),
    );
    assert!(
        matches!(&e, PackError::Overflow { kind: RelocKind::Pc8, symbol, bits: 8, .. } if symbol == "faraway"),
        "{e:?}"
    );

    // A mov without a base register cannot lose its GOT load.
    let nobase = gas(
        dir.path(),
        "nobase",
        &format!(
            "{entries}\n    .globl f\nf:\n    movl data@GOT, %eax\n    ret\n    .section .rodata\ndata:\n    .long 1\n"
        ),
    );
    let e = pack_err(
        &[Object {
            name: "nobase.o",
            data: &nobase,
        }],
        &PackOptions::default(),
    );
    assert!(matches!(&e, PackError::NotRelaxable { .. }), "{e:?}");
    assert!(e.to_string().contains("base register"), "{e}");
}
