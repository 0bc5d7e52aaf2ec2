//! Trace overhead: extra instructions each traced call executes (longest path through the
//! traced routine minus the native routine's, from the static audit's control-flow walk), and
//! the image sizes. `cargo bench -p vmi-rom --bench trace_overhead`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vmi_rom::audit::{RoutineStats, audit};
use vmi_rom::generate::{BuildOptions, generate};
use vmi_rom::native::Native;
use vmi_rom::trace::Trace;

fn paths(image: &[u8]) -> Vec<RoutineStats> {
    audit(image)
        .routines
        .into_iter()
        .filter(|r| r.call.is_some())
        .collect()
}

fn main() {
    let opts = BuildOptions::default();
    let native = generate(&Native, &opts).unwrap();
    let base = paths(&native.image);
    println!("native ROM: {} bytes", native.image.len());
    for ring in [0u32, 64] {
        let t = generate(
            &Trace {
                inner: Native,
                ring,
                sites: 0,
            },
            &opts,
        )
        .unwrap();
        let traced = paths(&t.image);
        let mut extra: Vec<(i64, &str)> = traced
            .iter()
            .filter_map(|r| {
                let b = base.iter().find(|b| b.call == r.call)?;
                Some((
                    i64::from(r.max_path) - i64::from(b.max_path),
                    b.name.as_str(),
                ))
            })
            .collect();
        extra.sort();
        let median = extra[extra.len() / 2].0;
        println!(
            "trace ROM, ring {ring}: {} bytes; extra instructions per traced call min/median/max {}/{}/{} ({} calls; max {})",
            t.image.len(),
            extra[0].0,
            median,
            extra[extra.len() - 1].0,
            extra.len(),
            extra[extra.len() - 1].1
        );
        if ring == 0 {
            let list: Vec<String> = extra.iter().map(|(n, c)| format!("{c} +{n}")).collect();
            println!("  {}", list.join(", "));
        }
    }
}
