//! `vmirom check` says exactly what it said before the rules became named items (issue 13):
//! the findings of every profile (`linux-vmi`, `seabios`, `pci`, `vmi-audit`) on a fixed corpus
//! — the bogus and valid ROMs the tests build, the generated native, kvm and trace ROMs
//! (`tests/golden/*.rom`, frozen so that changes to the generator do not move them), and
//! thousands of deterministic mutants of all of these — and the command's text and JSON
//! output on the frozen ROMs are compared with `tests/golden/check_findings.txt`, recorded
//! before the refactoring.
//!
//! Each line of the golden file is `INPUT PROFILE COUNT WORST HASH`: how many findings, the
//! worst verdict, and an FNV-1a hash of the findings as JSON (profile, rule, severity, offset,
//! message). A mismatch names the input and prints its findings. After an intended change of
//! a verdict or message, regenerate with `VMIROM_BLESS=1 cargo test -p vmirom --test
//! check_golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use optionrom::bytes::checksum;
use optionrom::efi::EFI_SIGNATURE;
use optionrom::pcir::{CodeType, Pcir};
use optionrom::pnp::PnpHeader;
use optionrom::validate::{Finding, Profile, validate, worst};
use optionrom::vmi::{VmiHeaderSpec, write_header};
use optionrom::{ImageBuilder, build::Finish, parse};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use vmi_abi::consts;

/// Mutants per base image (the validation profiles are cheap).
const MUTANTS: usize = 400;
/// Mutants per generated ROM that the static audit also judges.
const AUDITED_MUTANTS: usize = 120;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(golden_dir().join(name)).unwrap()
}

/// FNV-1a, 64 bits: stable across platforms and releases.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Sets the last byte of image 0 so that it sums to 0.
fn resum(mut d: Vec<u8>) -> Vec<u8> {
    let len = usize::from(d[2]) * 512;
    if len == 0 || len > d.len() {
        return d;
    }
    d[len - 1] = 0;
    d[len - 1] = 0u8.wrapping_sub(checksum(&d[..len]));
    d
}

fn with(d: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = d.to_vec();
    f(&mut v);
    v
}

/// The VMI ROM of `crates/optionrom/tests/bogus_roms.rs` (and, with other strings and code
/// revision, of the validate unit tests).
fn vmi_rom(spec: &VmiHeaderSpec, strings: (&str, &str), revision: u16) -> Vec<u8> {
    let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
    let mut p = Pcir::new(
        consts::PCI_VENDOR_VMWARE,
        consts::PCI_DEVICE_VMI,
        0x05_80_00,
    );
    p.code_revision = revision;
    b.set_pcir(Some(0x20), p).unwrap();
    let m = b.add_string(strings.0).unwrap();
    let n = b.add_string(strings.1).unwrap();
    b.add_pnp(Some(0x40), PnpHeader::new(m, n, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, spec, init, reloc).unwrap();
    b.finish(&Finish::default()).unwrap()
}

fn bogus_base(spec: &VmiHeaderSpec) -> Vec<u8> {
    vmi_rom(spec, ("vmirom project", "test VMI ROM"), 0x0100)
}

/// A legacy x86 image with a rev-3 PCIR, a device list and two `$PnP` headers (prop.rs).
fn x86_image(last: bool, extra: usize) -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
    p.device_list_ptr = 0x1C;
    b.set_pcir(None, p).unwrap();
    b.append(&[0x0F, 0x10, 0x0E, 0x10, 0, 0], 1);
    let m = b.add_string("Intel").unwrap();
    b.add_pnp(None, PnpHeader::new(m, 0, 0x02_00_00)).unwrap();
    b.add_pnp(None, PnpHeader::new(0, m, 0x02_00_00)).unwrap();
    b.append(&vec![0x90; extra], 1);
    b.finish(&Finish {
        last_image: last,
        min_len: 0,
    })
    .unwrap()
}

fn efi_image() -> Vec<u8> {
    let mut e = vec![0u8; 1024];
    e[0..2].copy_from_slice(&[0x55, 0xAA]);
    e[2] = 2;
    e[4..8].copy_from_slice(&EFI_SIGNATURE.to_le_bytes());
    e[8] = 11;
    e[0xA..0xC].copy_from_slice(&0x8664u16.to_le_bytes());
    e[0x16] = 0x40;
    e[0x18] = 0x1C;
    let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
    p.code_type = CodeType::Efi;
    p.image_length = 2;
    e[0x1C..0x38].copy_from_slice(&p.to_bytes());
    e[0x40..0x42].copy_from_slice(b"MZ");
    e
}

/// The validate unit tests' chain: an x86 image (not last) then an EFI image.
fn x86_efi_chain() -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.set_pcir(None, Pcir::new(0x8086, 0x100E, 0x02_00_00))
        .unwrap();
    let mut d = b
        .finish(&Finish {
            last_image: false,
            min_len: 0,
        })
        .unwrap();
    d.extend(efi_image());
    d
}

/// A ROM of `blocks` × 512 bytes whose code is a `retf`, cut to `keep` bytes that sum to 0.
fn cut_to_zero_sum(whole: &[u8], keep: usize) -> Vec<u8> {
    let mut cut = whole[..keep].to_vec();
    cut[keep - 1] = 0;
    cut[keep - 1] = 0u8.wrapping_sub(checksum(&cut));
    cut
}

fn retf_rom(min_len: usize) -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0xCB], 1);
    b.finish(&Finish {
        min_len,
        ..Finish::default()
    })
    .unwrap()
}

/// The bogus ROMs of `crates/optionrom/tests/bogus_roms.rs`.
fn bogus_roms(out: &mut Vec<(String, Vec<u8>)>) {
    let v = bogus_base(&VmiHeaderSpec::default());
    let spec = |f: fn(&mut VmiHeaderSpec)| {
        let mut s = VmiHeaderSpec::default();
        f(&mut s);
        bogus_base(&s)
    };
    let mut add = |n: &str, d: Vec<u8>| out.push((format!("bogus/{n}"), d));
    add("valid", v.clone());
    add("signature", with(&v, |d| d[0] = 0x56));
    add(
        "checksum",
        with(&v, |d| d[0x1FF] = d[0x1FF].wrapping_add(3)),
    );
    add("truncated-0x180", v[..0x180].to_vec());
    add("truncated-0x88", v[..0x88].to_vec());
    add("size-0", with(&v, |d| d[2] = 0));
    add("pcir-length-0", resum(with(&v, |d| d[0x30] = 0)));
    add(
        "pcir-outside",
        resum(with(&v, |d| d[0x18..0x1A].copy_from_slice(&[0xF0, 0x01]))),
    );
    add("non-gpl", spec(|s| s.license = "Proprietary".into()));
    add(
        "api-13.3",
        spec(|s| {
            s.api_major = 13;
            s.api_minor = 3
        }),
    );
    add("no-cvmi", resum(with(&v, |d| d[8..12].fill(0))));
    add("license-0", resum(with(&v, |d| d[0x16..0x18].fill(0))));
    add("empty", Vec::new());
    add("one-byte", vec![0x55]);
    add("mz", b"MZ\x90\x00\x03".to_vec());
    add("ff-4096", vec![0xFF; 4096]);
}

/// The cases of the validate unit tests (`crates/optionrom/src/validate.rs`).
fn unit_roms(out: &mut Vec<(String, Vec<u8>)>) {
    let rom = |s: &VmiHeaderSpec| vmi_rom(s, ("VMware", "VMI ROM"), 0x0102);
    let v = rom(&VmiHeaderSpec::default());
    let mut add = |n: &str, d: Vec<u8>| out.push((format!("unit/{n}"), d));
    add("valid", v.clone());
    add("two-bytes", vec![0x55, 0xAA]);
    add("elf", b"\x7fELF".to_vec());
    for (n, maj, min, vt) in [
        ("api-2.7", 2, 7, 0),
        ("api-3.255", 3, 255, 0),
        ("virtual-top-unaligned", 3, 0, 0xFFC0_0100),
        ("virtual-top", 3, 0, 0xFC00_0000),
    ] {
        add(
            n,
            rom(&VmiHeaderSpec {
                api_major: maj,
                api_minor: min,
                virtual_top: vt,
                ..VmiHeaderSpec::default()
            }),
        );
    }
    add("init-slot-zero", resum(with(&v, |d| d[0x80..0x88].fill(0))));
    add(
        "get-reloc-far",
        resum(with(&v, |d| {
            d[0x89..0x8D].copy_from_slice(&0x1000i32.to_le_bytes())
        })),
    );
    add(
        "init-in-place",
        resum(with(&v, |d| {
            d[0x80..0x88].copy_from_slice(&[0x31, 0xC0, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC])
        })),
    );
    add(
        "checksum+1",
        with(&v, |d| d[0x1FF] = d[0x1FF].wrapping_add(1)),
    );
    add("size-0", with(&v, |d| d[2] = 0));
    add("cut-300", v[..300].to_vec());
    add("init-zero", resum(with(&v, |d| d[3..7].fill(0))));
    add(
        "init-past-end",
        resum(with(&v, |d| {
            d[3..7].fill(0);
            d[3..6].copy_from_slice(&[0xE9, 0x00, 0x04])
        })),
    );
    for cut in [3, 7, 8, 0x10, 0x1C, 0x22, 0x3C, 0x45, 0x81, 0x8A, 0x1FF] {
        add(&format!("cut-{cut:#x}"), v[..cut].to_vec());
    }
    // Unaligned PCIR.
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0; 2], 1);
    let mut img = b.finish(&Finish::default()).unwrap();
    img[0x18] = 0x22;
    img[0x22..0x3A].copy_from_slice(&Pcir::new(1, 2, 3).to_bytes()[..0x18]);
    add("pcir-unaligned", resum(img));
    // Cut files whose present bytes sum to 0 (issue 12).
    let whole = retf_rom(4 * 512);
    add("retf-whole", whole.clone());
    add("retf-cut-700", cut_to_zero_sum(&whole, 700));
    let far = with(&whole, |d| d[3..6].copy_from_slice(&[0xE9, 0x00, 0x04]));
    add("retf-far-cut-700", cut_to_zero_sum(&far, 700));
    let mut vmi4 = v.clone();
    vmi4.resize(4 * 512, 0);
    vmi4[2] = 4;
    add("vmi-4-blocks-cut", cut_to_zero_sum(&vmi4, 0x1FF));
    // Placement.
    let mut b = ImageBuilder::new(0x20).unwrap();
    b.append(&[0x90; 100 * 1024 - 0x40], 1);
    let big = b.finish(&Finish::default()).unwrap();
    add("100k", big.clone());
    add("129k", with(&big, |d| d.resize(129 * 1024, 0)));
    // Chains.
    let c = x86_efi_chain();
    add("chain", c.clone());
    add("chain-last-clear", with(&c, |d| d[0x200 + 0x1C + 0x15] = 0));
    add("chain-garbage", with(&c, |d| d[0x200] = 0));
    add(
        "chain-zero-length",
        with(&c, |d| {
            d.truncate(512);
            d[2] = 0;
            d[0x30] = 0
        }),
    );
    add(
        "pcir-length-rev2",
        resum(with(&v, |d| {
            d[0x2A] = 0x20;
            d[0x2C] = 2
        })),
    );
    add(
        "pcir-length-rev0",
        resum(with(&v, |d| {
            d[0x2A] = 0x20;
            d[0x2C] = 0
        })),
    );
    add("image-length-2", resum(with(&v, |d| d[0x30] = 2)));
    add(
        "device-list",
        resum(with(&v, |d| {
            d[0x28] = 0x1C;
            d[0x3C..0x40].copy_from_slice(&[0x34, 0x12, 0, 0]);
            d[0x38..0x3A].copy_from_slice(&0x0300u16.to_le_bytes())
        })),
    );
    let mut b = ImageBuilder::new(0x20).unwrap();
    let mut p = Pcir::new(1, 2, 3);
    p.device_list_ptr = 0x1C;
    b.set_pcir(None, p).unwrap();
    b.append(&[0x41; 600], 1);
    add(
        "device-list-unterminated",
        b.finish(&Finish::default()).unwrap(),
    );
    add(
        "pnp-loop",
        resum(with(&v, |d| {
            d[0x46] = 0x40;
            d[0x49] = d[0x49].wrapping_sub(0x40)
        })),
    );
}

/// The images the property tests mutate (`crates/optionrom/tests/prop.rs`).
fn prop_bases() -> Vec<Vec<u8>> {
    let vmi = vmi_rom(&VmiHeaderSpec::default(), ("vmirom", "VMI"), 0);
    let mut chain = x86_image(false, 600);
    chain.extend(x86_image(false, 0));
    chain.extend(efi_image());
    let mut vmi_chain = vmi.clone();
    vmi_chain[0x35] &= 0x7F;
    let s = checksum(&vmi_chain);
    vmi_chain[0x1FF] = vmi_chain[0x1FF].wrapping_sub(s);
    vmi_chain.extend(x86_image(true, 0));
    vec![vmi, chain, x86_image(true, 100), vmi_chain]
}

/// `crates/vmirom/tests/cli.rs`'s mutations of a built ROM.
fn cli_roms(good: &[u8], tag: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let resum_all = |mut i: Vec<u8>| {
        let last = i.len() - 1;
        i[last] = 0;
        i[last] = 0u8.wrapping_sub(checksum(&i));
        i
    };
    let mut add = |n: &str, d: Vec<u8>| out.push((format!("{tag}/{n}"), d));
    add("sig", with(good, |i| i[0] = 0x56));
    add("sum", with(good, |i| i[0x300] ^= 0x40));
    add("trunc", good[..700].to_vec());
    add("zero", with(good, |i| i[2] = 0));
    let beyond = u16::try_from(good.len() + 0x10).unwrap();
    add(
        "pcir",
        resum_all(with(good, |i| {
            i[0x18..0x1A].copy_from_slice(&beyond.to_le_bytes())
        })),
    );
    let at = usize::from(u16::from_le_bytes([good[0x16], good[0x17]]));
    add(
        "license",
        resum_all(with(good, |i| i[at..at + 6].copy_from_slice(b"BSD\0\0\0"))),
    );
    add("major", resum_all(with(good, |i| i[0x0D] = 2)));
}

/// xorshift64*: the mutants are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Header fields worth hitting with extreme values (prop.rs's list).
const FIELDS: &[(usize, usize)] = &[
    (0x02, 1),
    (0x03, 1),
    (0x04, 4),
    (0x08, 4),
    (0x0C, 1),
    (0x0D, 1),
    (0x10, 4),
    (0x16, 2),
    (0x18, 2),
    (0x1A, 2),
    (0x28, 2),
    (0x2A, 2),
    (0x2C, 1),
    (0x30, 2),
    (0x34, 1),
    (0x35, 1),
    (0x38, 2),
    (0x3A, 2),
    (0x3C, 2),
    (0x45, 1),
    (0x46, 2),
    (0x4E, 2),
    (0x50, 2),
    (0x60, 4),
    (0x81, 4),
    (0x89, 4),
];

/// One to four of prop.rs's mutations: byte flips, truncation, insertion, removal, extreme
/// header fields, chaining another base, re-summing image 0.
fn mutate(base: &[u8], bases: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut d = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        match rng.below(14) {
            0..=3 => {
                if len > 0 {
                    let at = rng.below(len);
                    d[at] ^= 1 + rng.below(255) as u8;
                }
            }
            4 => d.truncate(rng.below(len + 1)),
            5 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(63)).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            6 => {
                if len > 0 {
                    let at = rng.below(len);
                    let n = 1 + rng.below(599);
                    d.drain(at..(at + n).min(len));
                }
            }
            7..=10 => {
                let (off, width) = FIELDS[rng.below(FIELDS.len())];
                let at = rng.below(4) * 512 + off;
                let v: u64 = match rng.below(6) {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    3 => 1 << (8 * width - 1),
                    4 => (len as u64 + rng.below(5) as u64).saturating_sub(2),
                    _ => rng.next() & 0xFFFF_FFFF,
                };
                if let Some(dst) = d.get_mut(at..at + width) {
                    dst.copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
            11 => {
                if rng.below(2) == 0 && d.len() > 0x35 {
                    d[0x35] &= 0x7F;
                }
                d.extend_from_slice(&bases[rng.below(bases.len())]);
            }
            _ => {
                if d.len() > 2 {
                    d = resum(d);
                }
            }
        }
    }
    d
}

/// Every input of the corpus, named, and whether the static audit judges it too.
fn corpus() -> Vec<(String, Vec<u8>, bool)> {
    let mut named = Vec::new();
    bogus_roms(&mut named);
    unit_roms(&mut named);
    let props = prop_bases();
    for (i, b) in props.iter().enumerate() {
        named.push((format!("prop/base-{i}"), b.clone()));
    }
    let built: Vec<(&str, Vec<u8>)> = ["native", "kvm", "trace"]
        .into_iter()
        .map(|n| (n, fixture(&format!("{n}.rom"))))
        .collect();
    for (n, rom) in &built {
        named.push((format!("built/{n}"), rom.clone()));
        cli_roms(rom, &format!("cli-{n}"), &mut named);
    }
    let mut all: Vec<(String, Vec<u8>, bool)> =
        named.into_iter().map(|(n, d)| (n, d, true)).collect();
    let mut rng = Rng(0x1313_2025_0BAD_F00D);
    let mut bases: Vec<(String, Vec<u8>)> = props
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("prop-{i}"), b.clone()))
        .collect();
    bases.push(("bogus".into(), bogus_base(&VmiHeaderSpec::default())));
    bases.push(("chain".into(), x86_efi_chain()));
    for (n, base) in &bases {
        for k in 0..MUTANTS {
            all.push((
                format!("mutant/{n}/{k}"),
                mutate(base, &props, &mut rng),
                false,
            ));
        }
    }
    for (n, rom) in &built {
        for k in 0..AUDITED_MUTANTS {
            all.push((
                format!("mutant/{n}/{k}"),
                mutate(rom, &props, &mut rng),
                true,
            ));
        }
    }
    all
}

fn line(input: &str, profile: &str, findings: &[Finding]) -> String {
    let json = serde_json::to_string(findings).unwrap();
    format!(
        "{input} {profile} {} {} {:016x}",
        findings.len(),
        worst(findings),
        fnv(json.as_bytes())
    )
}

/// The golden lines of the library's verdicts on the corpus.
fn library_lines() -> Vec<String> {
    let mut out = Vec::new();
    for (name, data, audited) in corpus() {
        let rom = parse(&data);
        for p in Profile::ALL {
            out.push(line(&name, p.name(), &validate(&data, &rom, p)));
        }
        if audited {
            let f = vmi_rom::audit::audit(&data).findings;
            out.push(line(&name, vmi_rom::audit::PROFILE, &f));
        }
    }
    out
}

/// `vmirom check` on the frozen ROMs and two bogus ones, text and JSON, all four profiles.
fn cli_lines() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let v = bogus_base(&VmiHeaderSpec::default());
    let files = [
        ("native.rom", fixture("native.rom")),
        ("kvm.rom", fixture("kvm.rom")),
        ("trace.rom", fixture("trace.rom")),
        ("sum.rom", with(&v, |d| d[0x1FF] ^= 1)),
        ("chain.rom", x86_efi_chain()),
    ];
    let mut out = Vec::new();
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).unwrap();
        for extra in [&[][..], &["--json"][..], &["-q"][..]] {
            let mut args = vec!["check", name];
            for p in ["linux-vmi", "seabios", "pci", "vmi-audit"] {
                args.extend(["-p", p]);
            }
            args.extend(extra);
            let o = Command::new(env!("CARGO_BIN_EXE_vmirom"))
                .args(&args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            let mut bytes = o.stdout.clone();
            bytes.extend(&o.stderr);
            out.push(format!(
                "cli/{name}{} exit {} {} {:016x}",
                extra.first().map_or(String::new(), |e| format!("/{e}")),
                o.status.code().unwrap_or(-1),
                bytes.len(),
                fnv(&bytes)
            ));
        }
    }
    out
}

#[test]
fn check_output_is_unchanged_on_the_corpus() {
    let path = golden_dir().join("check_findings.txt");
    let mut current = library_lines();
    current.extend(cli_lines());
    if std::env::var_os("VMIROM_BLESS").is_some() {
        let mut text = String::new();
        for l in &current {
            writeln!(text, "{l}").unwrap();
        }
        std::fs::write(&path, text).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    let golden: Vec<&str> = golden.lines().collect();
    assert_eq!(golden.len(), current.len(), "the corpus changed size");
    let mut differ = Vec::new();
    for (g, c) in golden.iter().zip(&current) {
        if *g != c {
            differ.push(format!("golden {g}\n   now {c}"));
        }
    }
    if !differ.is_empty() {
        let first = differ[0]
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let detail = corpus()
            .into_iter()
            .find(|(n, ..)| *n == first)
            .map(|(_, d, _)| {
                let rom = parse(&d);
                Profile::ALL
                    .into_iter()
                    .flat_map(|p| validate(&d, &rom, p))
                    .chain(vmi_rom::audit::audit(&d).findings)
                    .map(|f| {
                        format!(
                            "{} {} {} {:?} {}",
                            f.profile, f.rule, f.severity, f.offset, f.message
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        panic!(
            "{} of {} lines differ:\n{}\n\nfindings of {first} now:\n{detail}",
            differ.len(),
            current.len(),
            differ
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
