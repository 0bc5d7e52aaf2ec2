//! Time to generate (and audit) the native ROM, and the generator's share without the audit.
//! Prints medians. `cargo bench -p vmi-rom`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};
use vmi_rom::generate::{BuildOptions, generate, generate_unaudited};
use vmi_rom::native::Native;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let opts = BuildOptions::default();
    let runs = 200;
    let time = |f: &dyn Fn() -> usize| {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let full = median(time(&|| generate(&Native, &opts).unwrap().image.len()));
    let gen_only = median(time(&|| {
        generate_unaudited(&Native, &opts).unwrap().image.len()
    }));
    let size = generate(&Native, &opts).unwrap().image.len();
    println!(
        "native ROM ({size} bytes): generate + audit median {full:?}, generate alone {gen_only:?} ({runs} runs each)"
    );
}
