//! The `vmirom` binary end to end: exit codes (0 pass, 1 check failed, 2 unusable input),
//! rule-by-rule explanations for the bogus ROMs a new user throws at `check`, `fix`, `build`,
//! `info` and `pack`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use vmirom_testkit::toolchain;

mod common;

use common::{text, vmirom};

fn build(dir: &Path) -> PathBuf {
    let rom = dir.join("vmi.rom");
    let o = vmirom(&["build", "-q", "-o", rom.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    rom
}

fn resum(img: &mut [u8]) {
    let last = img.len() - 1;
    img[last] = 0;
    img[last] = 0u8.wrapping_sub(img.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
}

/// A change made to a good image.
type Mutation = Box<dyn Fn(&mut Vec<u8>)>;

/// Writes a variant of `good` changed by `f` and returns `check`'s exit code and output.
fn check_variant(dir: &Path, good: &[u8], name: &str, f: impl Fn(&mut Vec<u8>)) -> (i32, String) {
    let mut img = good.to_vec();
    f(&mut img);
    let p = dir.join(name);
    std::fs::write(&p, &img).unwrap();
    let o = vmirom(&["check", "-q", p.to_str().unwrap()]);
    (o.status.code().unwrap(), text(&o))
}

#[test]
fn check_passes_a_built_rom_and_explains_each_bogus_one() {
    let dir = tempfile::tempdir().unwrap();
    let rom = build(dir.path());
    let all = [
        "check",
        rom.to_str().unwrap(),
        "-p",
        "linux-vmi",
        "-p",
        "seabios",
        "-p",
        "pci",
        "-p",
        "vmi-audit",
    ];
    let o = vmirom(&all);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("VMI: Found vmirom VMI ROM, API version 3.0, ROM version 1.0"));
    let good = std::fs::read(&rom).unwrap();

    let cases: Vec<(&str, Mutation, &str)> = vec![
        ("sig.rom", Box::new(|i| i[0] = 0x56), "signature"),
        ("sum.rom", Box::new(|i| i[0x300] ^= 0x40), "checksum"),
        ("trunc.rom", Box::new(|i| i.truncate(700)), "length"),
        ("zero.rom", Box::new(|i| i[2] = 0), "size"),
        (
            "pcir.rom",
            Box::new(|i| {
                // Past the image's end.
                let beyond = u16::try_from(i.len() + 0x10).unwrap();
                i[0x18..0x1A].copy_from_slice(&beyond.to_le_bytes());
                resum(i)
            }),
            "pci-header",
        ),
        (
            "license.rom",
            Box::new(|i| {
                let at = u16::from_le_bytes([i[0x16], i[0x17]]) as usize;
                i[at..at + 6].copy_from_slice(b"BSD\0\0\0");
                resum(i)
            }),
            "Non GPL license `BSD' found for ROM. Not used.",
        ),
        (
            "major.rom",
            Box::new(|i| {
                i[0x0D] = 2;
                resum(i)
            }),
            "VMI: Found mismatched rom version 2.0",
        ),
    ];
    for (name, f, expect) in cases {
        let (code, out) = check_variant(dir.path(), &good, name, f);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains("FAIL"), "{name}: {out}");
        assert!(
            out.contains(expect),
            "{name}: expected {expect:?} in\n{out}"
        );
    }
}

/// Issue 12: a ROM of 4 × 512 bytes cut to 700 whose present bytes still sum to 0 passed
/// `-p linux-vmi -p seabios` with warnings; SeaBIOS would run bytes that are not in the file.
#[test]
fn check_fails_a_cut_rom_under_seabios_and_says_why() {
    use optionrom::build::{Finish, ImageBuilder};
    use optionrom::pcir::Pcir;
    use optionrom::pnp::PnpHeader;
    use optionrom::vmi::{VmiHeaderSpec, write_header};
    let mut b = ImageBuilder::new(vmi_abi::consts::HEADER_SIZE).unwrap();
    let pcir = Pcir::new(
        vmi_abi::consts::PCI_VENDOR_VMWARE,
        vmi_abi::consts::PCI_DEVICE_VMI,
        0x05_80_00,
    );
    b.set_pcir(Some(0x20), pcir).unwrap();
    let m = b.add_string("ACME").unwrap();
    let n = b.add_string("Cut VMI").unwrap();
    b.add_pnp(Some(0x40), PnpHeader::new(m, n, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, &VmiHeaderSpec::default(), init, reloc).unwrap();
    let whole = b
        .finish(&Finish {
            min_len: 4 * 512,
            ..Finish::default()
        })
        .unwrap();
    assert_eq!(whole[2], 4);
    let mut cut = whole[..700].to_vec();
    cut[699] = 0;
    cut[699] = 0u8.wrapping_sub(cut.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cut.rom");
    std::fs::write(&p, &cut).unwrap();
    let args = [
        "check",
        p.to_str().unwrap(),
        "-p",
        "linux-vmi",
        "-p",
        "seabios",
    ];
    let o = vmirom(&args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("missing-bytes"))
        .unwrap_or_else(|| panic!("no missing-bytes line in\n{t}"));
    assert!(line.trim_start().starts_with("FAIL"), "{line}");
    assert!(
        line.contains("@0x0002")
            && line.contains(
                "the bytes 0x2bc..0x800 that SeaBIOS checksums, keeps and runs are not in the file"
            ),
        "{line}"
    );
    // Linux alone still accepts it (it never sums the image); the whole file passes both.
    let o = vmirom(&["check", p.to_str().unwrap(), "-p", "linux-vmi"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::write(&p, &whole).unwrap();
    let o = vmirom(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("missing-bytes"));
}

#[test]
fn unusable_input_and_bad_usage_exit_2() {
    let o = vmirom(&["check", "/nonexistent/x.rom"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("reading /nonexistent/x.rom"));
    let o = vmirom(&["check", "-p", "nosuch", "x.rom"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown profile"), "{}", text(&o));
    let o = vmirom(&["pack", "-o", "/tmp/x.rom", "--pci-id", "zz", "a.o"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn fix_repairs_a_bad_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let rom = build(dir.path());
    let mut img = std::fs::read(&rom).unwrap();
    img[0x300] ^= 1;
    let bad = dir.path().join("bad.rom");
    std::fs::write(&bad, &img).unwrap();
    let fixed = dir.path().join("fixed.rom");
    let o = vmirom(&["fix", bad.to_str().unwrap(), "-o", fixed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vmirom(&["check", fixed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn info_lists_calls_and_json_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    let rom = build(dir.path());
    let o = vmirom(&["info", rom.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success());
    assert!(t.contains("vmirom manifest: backend native"), "{t}");
    let setcr3 = t.lines().find(|l| l.contains(" SetCR3 ")).unwrap();
    assert!(setcr3.contains("CALL_REL"), "{setcr3}");
    let o = vmirom(&["info", "--json", "--disasm", rom.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["calls"].as_array().unwrap().len(), 74);
    assert_eq!(v["calls"][17]["reloc"], "CALL_REL");
    let dis = v["disasm"].as_array().unwrap();
    let cr3 = dis.iter().find(|d| d["name"] == "SetCR3").unwrap();
    assert_eq!(cr3["lines"][0]["text"], "mov %eax,%cr3");
}

#[test]
fn pack_turns_a_gcc_object_into_a_rom_that_passes_check() {
    if !toolchain::available(&["gcc"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let obj = toolchain::gcc(
        dir.path(),
        "rom",
        "static unsigned cpuid_stub(void) { return 0; }\n\
         unsigned vmi_init(void) { return 0; }\n\
         unsigned long long __attribute__((regparm(1))) vmi_get_reloc(unsigned call) {\n\
           if (call == 0) return (unsigned long long)(unsigned)&cpuid_stub | (1ULL << 32);\n\
           return 0; }\n",
        &["-fPIE"],
    )
    .unwrap();
    let rom = dir.path().join("packed.rom");
    let o = vmirom(&[
        "pack",
        obj.to_str().unwrap(),
        "-o",
        rom.to_str().unwrap(),
        "--vendor",
        "ACME",
        "--product",
        "Test VMI",
        "--version",
        "2.5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vmirom(&[
        "check",
        rom.to_str().unwrap(),
        "-p",
        "linux-vmi",
        "-p",
        "seabios",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("VMI: Found ACME Test VMI, API version 3.0, ROM version 2.5"));
}

#[test]
fn header_prints_c_by_default() {
    let o = vmirom(&["header"]);
    assert!(o.status.success());
    assert!(text(&o).contains("#define VMI_CALL_SetCR3"));
}

/// `vmirom info --disasm --json x.rom | head`: the reader goes away and vmirom ends like any Unix
/// filter (SIGPIPE), without a panic message.
#[test]
fn a_closed_pipe_ends_it_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    // A trace ROM's JSON disassembly (~230 KB) overfills the pipe (64 KiB): vmirom is still
    // writing when the reader goes.
    let rom = dir.path().join("t.rom");
    let o = vmirom(&[
        "build",
        "--trace",
        "--ring",
        "256",
        "-q",
        "-o",
        rom.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmirom"))
        .args(["info", "--disasm", "--json", rom.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // (the pipe's read end is dropped here)
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(13), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
