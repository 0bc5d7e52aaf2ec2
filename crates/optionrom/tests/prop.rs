//! Property tests on stable Rust: parse, validate (all three profiles) and repair never panic,
//! finish each input quickly, report offsets inside the input, and describe chains consistently.
//!
//! Inputs: valid images (a VMI ROM, a PCI chain with an EFI image, a ROM with a `$PnP` chain and a
//! device list) mutated by byte flips, truncation, insertion, removal, header-field overwrites with
//! extreme values and chaining; plus random bytes, with and without a `55 AA` header.
//! Run with `--nocapture` to see each test's case count and wall time; `VMIROM_PROP_SCALE=N`
//! multiplies the case counts for a longer soak.
// Test helpers outside #[test] functions may unwrap and panic like the tests themselves.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use optionrom::build::{BLOCK, Finish};
use optionrom::image::{Image, Rom, Slot};
use optionrom::pcir::{CodeType, Pcir};
use optionrom::pnp::PnpHeader;
use optionrom::repair::{RepairOptions, repair};
use optionrom::validate::{Profile, Severity, validate};
use optionrom::vmi::{VmiHeaderSpec, write_header};
use optionrom::{ImageBuilder, parse};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vmi_abi::consts;

/// Longest a single case (parse + 3 profiles + 3 repairs and their checks) may take. Real cases
/// take tens of microseconds; this only catches runaway loops on a loaded machine.
const CASE_BOUND: Duration = Duration::from_secs(2);

fn vmi_rom() -> Vec<u8> {
    let mut b = ImageBuilder::new(consts::HEADER_SIZE).unwrap();
    b.set_pcir(
        Some(0x20),
        Pcir::new(
            consts::PCI_VENDOR_VMWARE,
            consts::PCI_DEVICE_VMI,
            0x05_80_00,
        ),
    )
    .unwrap();
    let m = b.add_string("vmirom").unwrap();
    let n = b.add_string("VMI").unwrap();
    b.add_pnp(Some(0x40), PnpHeader::new(m, n, 0x05_80_00))
        .unwrap();
    let init = b.append(&[0x31, 0xC0, 0xC3], 16);
    let reloc = b.append(&[0x31, 0xC0, 0x31, 0xD2, 0xC3], 16);
    write_header(&mut b, &VmiHeaderSpec::default(), init, reloc).unwrap();
    b.finish(&Finish::default()).unwrap()
}

fn x86_image(last: bool, extra: usize) -> Vec<u8> {
    let mut b = ImageBuilder::new(0x20).unwrap();
    let mut p = Pcir::new(0x8086, 0x100E, 0x02_00_00);
    p.device_list_ptr = 0x1C;
    let at = b.set_pcir(None, p).unwrap();
    // Device list right after the 0x1C-byte structure: two ids and the terminator.
    b.append(&[0x0F, 0x10, 0x0E, 0x10, 0, 0], 1);
    assert_eq!(at, 0x20);
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
    e[4..8].copy_from_slice(&optionrom::efi::EFI_SIGNATURE.to_le_bytes());
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

/// The valid images mutations start from.
fn bases() -> &'static [Vec<u8>] {
    static B: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    B.get_or_init(|| {
        let mut chain = x86_image(false, 600);
        chain.extend(x86_image(false, 0));
        chain.extend(efi_image());
        let mut vmi_chain = vmi_rom();
        vmi_chain[0x35] &= 0x7F; // not last
        let s = vmi_chain.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        vmi_chain[0x1FF] = vmi_chain[0x1FF].wrapping_sub(s);
        vmi_chain.extend(x86_image(true, 0));
        vec![vmi_rom(), chain, x86_image(true, 100), vmi_chain]
    })
}

/// Header fields (offset in an image, width) worth hitting with extreme values: legacy and VMI
/// header, PCIR at 0x20, `$PnP` at 0x40 (where the bases put them), EFI fields.
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

#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate {
        keep: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        n: usize,
    },
    Field {
        image: usize,
        field: usize,
        value: Extreme,
    },
    Chain {
        base: usize,
        clear_last: bool,
    },
    Resum,
}

#[derive(Clone, Debug)]
enum Extreme {
    Zero,
    One,
    Max,
    SignBit,
    Len(i8),
    Any(u32),
}

fn extreme() -> impl Strategy<Value = Extreme> {
    prop_oneof![
        Just(Extreme::Zero),
        Just(Extreme::One),
        Just(Extreme::Max),
        Just(Extreme::SignBit),
        (-2i8..=2).prop_map(Extreme::Len),
        any::<u32>().prop_map(Extreme::Any),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..600).prop_map(|(at, n)| Mutation::Remove { at, n }),
        4 => (0usize..4, 0..FIELDS.len(), extreme())
            .prop_map(|(image, field, value)| Mutation::Field { image, field, value }),
        1 => (any::<usize>(), any::<bool>())
            .prop_map(|(base, clear_last)| Mutation::Chain { base, clear_last }),
        2 => Just(Mutation::Resum),
    ]
}

fn apply(d: &mut Vec<u8>, m: &Mutation) {
    let len = d.len();
    match m {
        Mutation::Flip { at, mask } => {
            if len > 0 {
                d[at % len] ^= mask;
            }
        }
        Mutation::Truncate { keep } => d.truncate(keep % (len + 1)),
        Mutation::Insert { at, bytes } => {
            let at = at % (len + 1);
            d.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, n } => {
            if len > 0 {
                let at = at % len;
                d.drain(at..(at + n).min(len));
            }
        }
        Mutation::Field {
            image,
            field,
            value,
        } => {
            let (off, width) = FIELDS[*field];
            let at = image * BLOCK + off;
            let v: u64 = match value {
                Extreme::Zero => 0,
                Extreme::One => 1,
                Extreme::Max => u64::MAX,
                Extreme::SignBit => 1 << (8 * width - 1),
                Extreme::Len(k) => (len as i64 + i64::from(*k)).max(0) as u64,
                Extreme::Any(x) => u64::from(*x),
            };
            if let Some(dst) = d.get_mut(at..at + width) {
                dst.copy_from_slice(&v.to_le_bytes()[..width]);
            }
        }
        Mutation::Chain { base, clear_last } => {
            let b = &bases()[base % bases().len()];
            if *clear_last && d.len() > 0x35 {
                d[0x35] &= 0x7F;
            }
            d.extend_from_slice(b);
        }
        Mutation::Resum => {
            let n = d.get(2).map_or(0, |&s| usize::from(s) * BLOCK);
            if n > 0 && n <= d.len() {
                d[n - 1] = 0;
                let s = d[..n].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                d[n - 1] = 0u8.wrapping_sub(s);
            }
        }
    }
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (0..bases().len(), prop::collection::vec(mutation(), 0..8)).prop_map(|(b, ms)| {
        let mut d = bases()[b].clone();
        for m in &ms {
            apply(&mut d, m);
        }
        d
    })
}

fn is_legacy(img: &Image) -> bool {
    img.efi.is_none()
        && img
            .pcir
            .present()
            .is_none_or(|p| p.code_type == CodeType::X86)
}

/// The structural invariants of a parse result.
fn check_parse(data: &[u8], rom: &Rom) -> Result<(), TestCaseError> {
    prop_assert_eq!(rom.len, data.len());
    let mut prev: Option<usize> = None;
    for (i, img) in rom.images.iter().enumerate() {
        prop_assert_eq!(img.index, i);
        prop_assert!(
            img.offset < data.len(),
            "image offset {} ≥ {}",
            img.offset,
            data.len()
        );
        prop_assert!(
            prev.is_none_or(|p| p < img.offset),
            "offsets not increasing"
        );
        prev = Some(img.offset);
        prop_assert_eq!(img.available, data.len() - img.offset);
        prop_assert!(img.view_len() <= img.available);
        prop_assert_eq!(img.bytes(data).len(), img.view_len());
        let view = img.view_len();
        if let Slot::OutOfBounds { offset, need, have } = img.pcir {
            prop_assert!(
                offset + need > view,
                "PCIR OOB but fits: {offset} {need} {view}"
            );
            prop_assert_eq!(have, view.saturating_sub(offset));
        }
        if let Slot::Present(_) = img.pcir {
            prop_assert!(usize::from(img.pcir_ptr) + 0x18 <= view);
        }
        match &img.pnp {
            Slot::OutOfBounds { offset, need, have } => {
                prop_assert!(offset + need > view);
                prop_assert_eq!(*have, view.saturating_sub(*offset));
            }
            Slot::Present(chain) => {
                prop_assert!(!chain.is_empty() && chain.len() <= optionrom::pnp::MAX_CHAIN);
                for h in chain {
                    prop_assert!(h.offset + optionrom::pnp::LEN <= view);
                }
            }
            Slot::Absent => prop_assert_eq!(img.pnp_ptr, 0),
        }
        if let Some(s) = img.sum {
            prop_assert!(img.declared_len > 0 && img.declared_len <= img.available);
            let sum = img.bytes(data).iter().fold(0u8, |a, b| a.wrapping_add(*b));
            prop_assert_eq!(s, sum);
        }
    }
    if let Some((off, len)) = rom.trailing {
        prop_assert!(
            off < data.len() && off + len == data.len(),
            "{:?}",
            rom.trailing
        );
    }
    Ok(())
}

/// What a run reached: (profile, rule, severity) triples, repair outcomes, longest chain.
#[derive(Default)]
struct Reached {
    verdicts: BTreeSet<(&'static str, &'static str, Severity)>,
    repaired: [bool; 2],
    max_images: usize,
}

/// The failing rules of all profiles, each keyed by profile, rule and (for `pci`) the image and
/// `$PnP` header it is about. `linux-vmi` counts only for images with `cVmi`: for any other ROM
/// Linux stops at the signature, and repair does not protect VMI fields it does not have.
fn failures(data: &[u8]) -> BTreeSet<(&'static str, &'static str, String)> {
    let rom = parse(data);
    let vmi = rom.images.first().is_some_and(|i| i.vmi.is_some());
    let mut out = BTreeSet::new();
    for p in Profile::ALL {
        if p == Profile::LinuxVmi && !vmi {
            continue;
        }
        for f in validate(data, &rom, p) {
            if f.severity != Severity::Fail {
                continue;
            }
            let per_image = !matches!(f.rule, "chain-end" | "trailing-bytes");
            let scope = if p == Profile::Pci && per_image {
                let mut parts = f.message.split(": ");
                let image = parts.next().unwrap_or_default().to_string();
                if f.rule.starts_with("pnp-") && f.rule != "pnp-header" {
                    format!("{image}: {}", parts.next().unwrap_or_default())
                } else {
                    image
                }
            } else {
                String::new()
            };
            out.insert((f.profile, f.rule, scope));
        }
    }
    out
}

/// Repair never turns a rule that passed (or warned) into a failure.
fn assert_no_new_failures(before: &[u8], after: &[u8], how: &str) -> Result<(), TestCaseError> {
    let (b, a) = (failures(before), failures(after));
    let new: Vec<_> = a.difference(&b).collect();
    prop_assert!(new.is_empty(), "{how} repair introduced failures {new:?}");
    Ok(())
}

fn exercise(data: &[u8], probe: usize, reached: &RefCell<Reached>) -> Result<(), TestCaseError> {
    let t = Instant::now();
    let rom = parse(data);
    check_parse(data, &rom)?;
    for p in Profile::ALL {
        let f = validate(data, &rom, p);
        prop_assert!(!f.is_empty(), "{p:?} gave no finding");
        for x in &f {
            prop_assert!(
                x.offset.is_none_or(|o| o < data.len()),
                "{p:?} offset out of range: {x:?} (len {})",
                data.len()
            );
            prop_assert_eq!(x.profile, p.name());
        }
        let mut r = reached.borrow_mut();
        r.verdicts
            .extend(f.iter().map(|x| (x.profile, x.rule, x.severity)));
        r.max_images = r.max_images.max(rom.images.len());
    }
    // Plain repair: same length, same chain, every legacy image sums to 0, and idempotent.
    let plain = repair(data, &RepairOptions::default());
    reached.borrow_mut().repaired[usize::from(plain.is_ok())] = true;
    if let Ok(r) = plain {
        prop_assert_eq!(r.image.len(), data.len());
        prop_assert!(!r.changes.is_empty());
        let again = parse(&r.image);
        let offs = |rom: &Rom| rom.images.iter().map(|i| i.offset).collect::<Vec<_>>();
        prop_assert_eq!(offs(&again), offs(&rom));
        for img in again.images.iter().filter(|i| is_legacy(i)) {
            prop_assert_eq!(img.sum, Some(0), "image {} not fixed", img.index);
        }
        assert_no_new_failures(data, &r.image, "plain")?;
        let r2 = repair(&r.image, &RepairOptions::default())
            .map_err(|e| TestCaseError::fail(format!("repairing the repaired image: {e}")))?;
        prop_assert_eq!(r2.image, r.image);
        prop_assert!(r2.changes[0].starts_with("nothing to change"));
    }
    // fix_size: the last image ends on a 512 boundary at the end of the file.
    if let Ok(r) = repair(
        data,
        &RepairOptions {
            fix_size: true,
            checksum_byte: None,
        },
    ) {
        let Some(last) = rom.images.last() else {
            return Err(TestCaseError::fail(
                "fix_size repaired a file without images",
            ));
        };
        prop_assert!(r.image.len() >= data.len());
        prop_assert_eq!((r.image.len() - last.offset) % BLOCK, 0);
    }
    // An explicit checksum byte somewhere in the file.
    if !data.is_empty()
        && let Ok(r) = repair(
            data,
            &RepairOptions {
                fix_size: false,
                checksum_byte: Some(probe % data.len()),
            },
        )
    {
        prop_assert_eq!(r.image.len(), data.len());
        let again = parse(&r.image);
        let Some(img) = again.images.first() else {
            return Err(TestCaseError::fail("the repaired file has no image"));
        };
        if is_legacy(img) {
            prop_assert_eq!(img.sum, Some(0));
        }
        assert_no_new_failures(data, &r.image, "explicit-byte")?;
    }
    let took = t.elapsed();
    prop_assert!(
        took < CASE_BOUND,
        "case took {took:?} ({} bytes)",
        data.len()
    );
    Ok(())
}

/// `VMIROM_PROP_SCALE=N` multiplies every case count (for a longer soak than `cargo test`'s).
fn scale() -> u32 {
    std::env::var("VMIROM_PROP_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

fn run<S: Strategy<Value = Vec<u8>>>(name: &str, cases: u32, strategy: S) -> Reached {
    let start = Instant::now();
    let count = AtomicUsize::new(0);
    let reached = RefCell::new(Reached::default());
    let cases = cases.saturating_mul(scale());
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&(strategy, any::<usize>()), |(data, probe)| {
        count.fetch_add(1, Ordering::Relaxed);
        exercise(&data, probe, &reached)
    });
    let n = count.load(Ordering::Relaxed);
    println!(
        "prop {name}: {n} cases in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    assert!(n >= cases as usize);
    reached.into_inner()
}

#[test]
fn mutated_valid_images() {
    let r = run("mutated valid images", 120_000, mutated());
    // The generator is not degenerate: it reaches both verdicts of the rules that matter, and
    // both repair outcomes, and builds longer chains than the bases.
    for (profile, rule) in [
        ("linux-vmi", "vmi-signature"),
        ("linux-vmi", "api-version"),
        ("linux-vmi", "pci-header"),
        ("linux-vmi", "license"),
        ("linux-vmi", "header-length"),
        ("linux-vmi", "init-slot"),
        ("linux-vmi", "get-reloc-slot"),
        ("seabios", "size"),
        ("seabios", "checksum"),
        ("seabios", "init-entry"),
        ("pci", "pcir-pointer"),
        ("pci", "pcir-signature"),
        ("pci", "pcir-length"),
        ("pci", "image-length"),
        ("pci", "last-image"),
        ("pci", "device-list"),
        ("pci", "pnp-checksum"),
        ("pci", "pnp-next"),
        ("pci", "efi-signature"),
        ("pci", "chain-end"),
    ] {
        for sev in [Severity::Pass, Severity::Fail] {
            assert!(
                r.verdicts.contains(&(profile, rule, sev)),
                "never reached {profile} {rule} {sev}"
            );
        }
    }
    assert_eq!(r.repaired, [true, true]);
    assert!(r.max_images >= 4, "longest chain {}", r.max_images);
}

#[test]
fn random_bytes() {
    run(
        "random bytes",
        40_000,
        prop::collection::vec(any::<u8>(), 0..2048),
    );
}

#[test]
fn random_bytes_behind_a_rom_header() {
    // 55 AA, a small size byte, then random bytes: deep enough to reach PCIR/$PnP/VMI parsing.
    let s = (1u8..8, prop::collection::vec(any::<u8>(), 0..4096)).prop_map(|(size, mut v)| {
        v.splice(0..0, [0x55, 0xAA, size]);
        v
    });
    let r = run("random bytes behind 55 AA", 40_000, s);
    assert_eq!(r.repaired, [true, true]);
}

#[test]
fn the_bases_are_valid() {
    // The starting points really are valid images, so mutations explore near-valid inputs.
    for (i, b) in bases().iter().enumerate() {
        let rom = parse(b);
        for p in [Profile::Seabios, Profile::Pci] {
            let worst = optionrom::validate::worst(&validate(b, &rom, p));
            assert_ne!(worst, Severity::Fail, "base {i} {p:?}");
        }
        assert!(
            rom.images
                .iter()
                .filter(|i| is_legacy(i))
                .all(|i| i.sum == Some(0))
        );
    }
    assert_eq!(parse(&bases()[1]).images.len(), 3);
    assert_eq!(parse(&bases()[3]).images.len(), 2);
}
