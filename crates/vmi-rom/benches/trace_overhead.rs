//! Trace overhead: extra instructions each traced call executes compared with the native
//! routine, and the image sizes. `cargo bench -p vmi-rom --bench trace_overhead`.
//!
//! Two measures per call, both static (from the image's code):
//! - **common path**: the instructions executed when every conditional branch falls through —
//!   in a trace wrapper that is the path with a trace area present and the call site already
//!   owning the first slot its lookup tries (every call but a site's first); the native
//!   routine's own code is walked the same way on both sides, so the difference is the
//!   wrapper's;
//! - **longest path**: the static audit's longest path without repeating a loop (a site's
//!   first call: probing, claiming a slot, logging).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use iced_x86::{Decoder, DecoderOptions, FlowControl, Mnemonic};
use vmi_rom::audit::{RoutineStats, audit};
use vmi_rom::generate::{BuildOptions, Generated, generate};
use vmi_rom::native::Native;
use vmi_rom::trace::{Trace, area};

/// Instructions from `entry` to the routine's exit when every conditional branch falls
/// through (calls are followed, `ret` returns to the caller's next instruction, `call` to the
/// next instruction is the position-independent address idiom, not a call); a routine
/// that never leaves (Shutdown's `hlt` loop) ends where its path repeats.
fn common_path(image: &[u8], entry: u32) -> u32 {
    let (mut at, mut returns, mut n) = (u64::from(entry), Vec::new(), 0);
    let mut seen = std::collections::BTreeSet::new();
    while n < 10_000 {
        if !seen.insert((at, returns.len())) {
            return n;
        }
        let mut d = Decoder::with_ip(32, &image[at as usize..], at, DecoderOptions::NONE);
        let ins = d.decode();
        n += 1;
        at = match ins.flow_control() {
            // `call next; next: pop reg` (the image's address) is not a subroutine call.
            FlowControl::Call if ins.near_branch_target() == ins.next_ip() => ins.next_ip(),
            FlowControl::Call => {
                returns.push(ins.next_ip());
                ins.near_branch_target()
            }
            FlowControl::UnconditionalBranch => ins.near_branch_target(),
            FlowControl::Return if ins.mnemonic() == Mnemonic::Ret => match returns.pop() {
                Some(r) => r,
                None => return n,
            },
            FlowControl::Return | FlowControl::Interrupt | FlowControl::Exception => return n,
            _ => ins.next_ip(),
        };
    }
    panic!("no exit on the common path from {entry:#x}");
}

/// Per implemented call: (number, name, common path, longest path).
fn paths(g: &Generated) -> Vec<(u8, &'static str, u32, u32)> {
    let stats: Vec<RoutineStats> = audit(&g.image).routines;
    g.calls
        .iter()
        .filter(|c| c.size > 0)
        .map(|c| {
            let longest = stats
                .iter()
                .find(|s| s.call == Some(c.number))
                .map_or(0, |s| s.max_path);
            (c.number, c.name, common_path(&g.image, c.offset), longest)
        })
        .collect()
}

/// min/median/max of `v`.
fn spread(mut v: Vec<i64>) -> String {
    v.sort_unstable();
    format!("{}/{}/{}", v[0], v[v.len() / 2], v[v.len() - 1])
}

fn trace(ring: u32, sites: u32) -> Trace<Native> {
    Trace {
        inner: Native,
        ring,
        sites,
    }
}

fn traced(ring: u32, sites: u32) -> Generated {
    generate(&trace(ring, sites), &BuildOptions::default()).unwrap()
}

/// Per call, `a`'s path minus `b`'s: (common, longest).
fn extra(a: &Generated, b: &Generated) -> Vec<(&'static str, i64, i64)> {
    let pb = paths(b);
    paths(a)
        .into_iter()
        .filter_map(|(n, name, common, longest)| {
            let (_, _, c, l) = pb.iter().find(|p| p.0 == n)?;
            Some((
                name,
                i64::from(common) - i64::from(*c),
                i64::from(longest) - i64::from(*l),
            ))
        })
        .collect()
}

fn main() {
    let native = generate(&Native, &BuildOptions::default()).unwrap();
    println!("native ROM: {} bytes", native.image.len());
    let plain = traced(0, 0);
    for (ring, sites) in [(0, 0), (0, area::DEFAULT_SITES), (64, area::DEFAULT_SITES)] {
        let t = traced(ring, sites);
        let e = extra(&t, &native);
        println!(
            "trace ROM, ring {ring}, {sites} call-site slots: {} bytes, {} KiB of conventional \
             memory; extra instructions per traced call over native, min/median/max: common \
             path {}, longest path {} ({} calls)",
            t.image.len(),
            trace(ring, sites).layout().kib(),
            spread(e.iter().map(|x| x.1).collect()),
            spread(e.iter().map(|x| x.2).collect()),
            e.len(),
        );
    }
    let with = traced(0, area::DEFAULT_SITES);
    let e = extra(&with, &plain);
    println!(
        "the call-site table ({} slots) against none, extra instructions per traced call \
         min/median/max: common path {}, longest path {}",
        area::DEFAULT_SITES,
        spread(e.iter().map(|x| x.1).collect()),
        spread(e.iter().map(|x| x.2).collect()),
    );
    let list: Vec<String> = extra(&with, &native)
        .iter()
        .map(|(c, n, _)| format!("{c} +{n}"))
        .collect();
    println!(
        "  common path over native with the table, per call: {}",
        list.join(", ")
    );
}
