//! Parse + validate (all three profiles) time for a 128 KiB ROM: a 64 KiB x86 VMI image followed
//! by a 64 KiB EFI image. Prints the median of many runs. `cargo bench -p optionrom`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use optionrom::build::{Finish, ImageBuilder};
use optionrom::pcir::{CodeType, Pcir};
use optionrom::pnp::PnpHeader;
use optionrom::validate::{Profile, validate};
use optionrom::vmi::{VmiHeaderSpec, write_header};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn rom_128k() -> Vec<u8> {
    let mut b = ImageBuilder::new(vmi_abi::consts::HEADER_SIZE).unwrap();
    b.set_pcir(Some(0x20), Pcir::new(0x15AD, 0x0801, 0x05_80_00))
        .unwrap();
    let m = b.add_string("bench").unwrap();
    b.add_pnp(Some(0x40), PnpHeader::new(m, m, 0x05_80_00))
        .unwrap();
    let code = b.append(&[0x31, 0xC0, 0xC3], 16);
    write_header(&mut b, &VmiHeaderSpec::default(), code, code).unwrap();
    b.append(&vec![0x90; 60 * 1024], 1);
    let mut rom = b
        .finish(&Finish {
            last_image: false,
            min_len: 64 * 1024,
        })
        .unwrap();
    let mut e = ImageBuilder::new(0x1C).unwrap();
    let mut p = Pcir::new(0x15AD, 0x0801, 0x05_80_00);
    p.code_type = CodeType::Efi;
    e.set_pcir(None, p).unwrap();
    e.write_at(4, &0x0EF1u32.to_le_bytes()).unwrap();
    e.append(&vec![0; 60 * 1024], 1);
    let efi = e
        .finish(&Finish {
            last_image: true,
            min_len: 64 * 1024 - 512,
        })
        .unwrap();
    rom.extend(efi);
    rom.resize(128 * 1024, 0);
    rom
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rom = rom_128k();
    let runs = 2000;
    let mut parse_t = Vec::with_capacity(runs);
    let mut all_t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let parsed = black_box(optionrom::parse(black_box(&rom)));
        parse_t.push(t.elapsed());
        let t = Instant::now();
        let parsed2 = optionrom::parse(black_box(&rom));
        let n: usize = Profile::ALL
            .iter()
            .map(|p| validate(&rom, &parsed2, *p).len())
            .sum();
        black_box(n);
        all_t.push(t.elapsed());
        black_box(parsed);
    }
    let images = optionrom::parse(&rom).images.len();
    println!(
        "128 KiB ROM ({images} images): parse median {:?}, parse + validate (linux-vmi, seabios, pci) median {:?} over {runs} runs",
        median(parse_t),
        median(all_t)
    );
}
