//! `vmirom trace run` end to end under QEMU (TCG): a trace ROM built by the binary, the
//! generated multiboot test guest making a known set of VMI calls, and the counts the tool
//! reports — live and at the end — checked against exactly those calls.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use vmi_abi::Call;
use vmi_harness::guest::{CallSite, GuestConfig, Op, Step, Stress, Vector, build};
use vmi_harness::protocol::EXIT_DONE;

/// The slowest PIT rate (1.193182 MHz / 65535 ≈ 18.2 Hz): a Halt sleeps up to 55 ms.
const PIT_SLOW: u16 = 65535;

mod common;

use common::{s, text, timed as vmirom};

/// `vmirom build` (with `extra` options) into `dir/name`.
fn rom(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["build", "--backend", "native", "-q", "-o", s(&p)];
    args.extend_from_slice(extra);
    let (o, _) = vmirom(&args);
    assert!(o.status.success(), "{}", text(&o));
    p
}

/// A multiboot guest that probes the ROM, calls Init and GetRelocationInfo for the calls it
/// uses (none of which the trace ROM counts), then runs `vectors` in order: one call each.
fn guest(dir: &Path, vectors: Vec<Vector>) -> PathBuf {
    let mut calls: Vec<u32> = vectors.iter().map(|v| u32::from(v.call)).collect();
    calls.sort_unstable();
    calls.dedup();
    let mut cfg = GuestConfig::linux(0xC000_0000, true, &calls);
    cfg.steps
        .extend((0..vectors.len()).map(|i| Step::Vector(u32::try_from(i).unwrap())));
    cfg.vectors = vectors;
    let p = dir.join("guest.bin");
    std::fs::write(&p, build(&cfg).unwrap().image).unwrap();
    p
}

fn get(call: Call) -> Vector {
    Vector::call(call as u8, &[], 0x2)
}

/// Halt with IF = 0 and the PIT running: returns after the next tick (≤ 55 ms).
fn halt() -> Vector {
    let mut v = get(Call::Halt);
    v.pre = vec![Op::StartTimer { divisor: PIT_SLOW }];
    v.post = vec![Op::Cli, Op::StopTimer];
    v
}

/// `(call number, count)` of every call in a `--json` report, by number.
fn counts(json: &serde_json::Value) -> Vec<(u64, u64)> {
    json["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["call"].as_u64().unwrap(), c["count"].as_u64().unwrap()))
        .collect()
}

#[test]
fn json_counts_are_exactly_the_calls_the_guest_made() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "trace.rom", &["--trace"]);
    let mut vectors: Vec<Vector> = (0..5).map(|_| get(Call::GetCR0)).collect();
    vectors.extend((0..3).map(|_| get(Call::GetCR4)));
    vectors.push(get(Call::GetCR0));
    let kernel = guest(dir.path(), vectors);
    let mem = dir.path().join("low.bin");
    let (o, wall) = vmirom(&[
        "trace",
        "run",
        s(&trace),
        "--kernel",
        s(&kernel),
        "--json",
        "-q",
        "--save-mem",
        s(&mem),
        "--timeout",
        "20",
    ]);
    eprintln!("trace run --json: {wall:.2} s");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stderr.is_empty(), "-q prints nothing else: {}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        counts(&j),
        [(Call::GetCR0 as u64, 6), (Call::GetCR4 as u64, 3)]
    );
    assert_eq!(j["total_count"], 9);
    assert_eq!(j["calls"][0]["name"], "GetCR0");
    assert!(j["calls"][0]["cycles"].as_u64().unwrap() > 0);
    assert_eq!(j["area"]["counters"].as_array().unwrap().len(), 74);
    // The guest finished its program and wrote EXIT_DONE to isa-debug-exit.
    assert_eq!(j["qemu"]["how"], "guest-exit");
    assert_eq!(j["qemu"]["guest_exit_value"], EXIT_DONE);
    assert_eq!(j["qemu"]["exit_code"], i32::from(EXIT_DONE) * 2 + 1);

    // The saved RAM reads back with `trace report`, to the same report.
    assert_eq!(std::fs::metadata(&mem).unwrap().len(), 0xA_0000);
    let (o, _) = vmirom(&[
        "trace",
        "report",
        "--mem",
        s(&mem),
        "--rom",
        s(&trace),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut without_qemu = j.clone();
    without_qemu.as_object_mut().unwrap().remove("qemu");
    without_qemu.as_object_mut().unwrap().remove("intervals");
    assert_eq!(r, without_qemu);

    // Another trace ROM's build id does not match the area.
    let other = rom(dir.path(), "other.rom", &["--trace", "--ring", "16"]);
    let (o, _) = vmirom(&["trace", "report", "--mem", s(&mem), "--rom", s(&other)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("was written by build"), "{}", text(&o));
}

#[test]
fn live_view_shows_rates_while_the_guest_halts_then_the_final_table() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "trace.rom", &["--trace"]);
    // About 0.5 s of Halts woken by the PIT, then Shutdown: cli; hlt for good (counted when
    // called: it never returns), so QEMU runs until the timeout.
    let mut vectors: Vec<Vector> = (0..2).map(|_| get(Call::GetCR0)).collect();
    vectors.extend((0..10).map(|_| halt()));
    vectors.push(get(Call::Shutdown));
    let kernel = guest(dir.path(), vectors);
    let svg = dir.path().join("calls.svg");
    let (o, wall) = vmirom(&[
        "trace",
        "run",
        s(&trace),
        "--kernel",
        s(&kernel),
        "--interval",
        "0.2",
        "--timeout",
        "2.5",
        "--svg",
        s(&svg),
    ]);
    eprintln!("trace run live: {wall:.2} s");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{out}");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Not a terminal: plain blocks with a time header, no escape sequences.
    assert!(!out.contains('\x1b'));
    let blocks: Vec<&str> = out.split("--- t+").skip(1).collect();
    assert!(blocks.len() >= 5, "{out}");
    let halting = blocks.iter().any(|b| {
        b.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"Halt") && f.get(3).is_some_and(|r| r.parse::<f64>().unwrap() > 0.0)
        })
    });
    assert!(halting, "no block caught the guest halting:\n{out}");
    // The final table: exact counts, and how QEMU ended.
    let fin = out.rsplit("trace area at ").next().unwrap();
    let row = |name: &str| -> u64 {
        let l = fin
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{fin}"));
        l.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert_eq!(
        (row("GetCR0"), row("Halt"), row("Shutdown")),
        (2, 10, 1),
        "{fin}"
    );
    assert!(fin.contains("total: 13 calls"), "{fin}");
    assert!(fin.contains("killed at the --timeout of 2.5 s"), "{fin}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("Halt (35)") && chart.contains("Shutdown (37)"));
}

#[test]
fn a_rom_that_makes_no_trace_area_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A native ROM: its manifest says so, and the run does not start.
    let native = rom(dir.path(), "native.rom", &[]);
    let (o, wall) = vmirom(&["trace", "run", s(&native), "-q"]);
    eprintln!("native: {wall:.2} s");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("is not a trace ROM") && t.contains("no trace area") && t.contains("--trace"),
        "{t}"
    );
    // The same ROM without its manifest (a foreign ROM): no area appears during POST, so vmirom
    // stops QEMU as soon as SeaBIOS moves on to booting instead of waiting for the guest.
    let mut img = std::fs::read(&native).unwrap();
    img[0x60..0x64].fill(0);
    let foreign = dir.path().join("foreign.rom");
    std::fs::write(&foreign, &img).unwrap();
    let (o, _) = vmirom(&["fix", s(&foreign)]);
    assert!(o.status.success(), "{}", text(&o));
    // Four Halts keep it running past the first reading (≥ 0.1 s).
    let kernel = guest(
        dir.path(),
        vec![get(Call::GetCR0), halt(), halt(), halt(), halt()],
    );
    let (o, wall) = vmirom(&[
        "trace",
        "run",
        s(&foreign),
        "--kernel",
        s(&kernel),
        "--interval",
        "0.1",
        "--timeout",
        "20",
    ]);
    eprintln!("foreign: {wall:.2} s");
    let t = text(&o);
    eprintln!("{t}");
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("has no vmirom manifest"), "{t}");
    assert!(
        t.contains("no trace area appeared in guest RAM")
            && t.contains("may not be a trace ROM")
            && t.contains("Running option rom at"),
        "{t}"
    );
    assert!(
        t.contains("stopped by vmirom once SeaBIOS was booting with no trace area in RAM"),
        "{t}"
    );
    assert!(!t.contains("isa-debug-exit"), "{t}");
    assert!(wall < 10.0, "{wall}");
}

#[test]
fn bad_arguments_and_unusable_setups_are_refused_before_qemu_starts() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "trace.rom", &["--trace"]);
    let t = s(&trace);
    for (args, says) in [
        (vec!["--interval", "0"], "--interval"),
        (vec!["--memory", "1"], "--memory"),
        (vec!["--accel", "hvf"], "--accel"),
        (vec!["--append", "console=ttyS0"], "--kernel"),
        (vec!["--frobnicate"], "--frobnicate"),
    ] {
        let mut a = vec!["trace", "run", t];
        a.extend(args);
        let (o, _) = vmirom(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.starts_with("error:") && e.contains(says), "{a:?}: {e}");
    }
    for (args, says) in [
        (vec!["missing.rom"], "missing.rom"),
        (
            vec![t, "--kernel", "missing.bin"],
            "--kernel missing.bin: no such file",
        ),
        (vec![t, "--", "-m", "512"], "use --memory"),
    ] {
        let mut a = vec!["trace", "run"];
        a.extend(args);
        let (o, _) = vmirom(&a);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{a:?}: {}", text(&o));
    }
    // KVM: refused with the reason on a machine that cannot run it.
    if let Err(why) = vmi_harness::engine::qemu_kvm_available() {
        let (o, _) = vmirom(&["trace", "run", t, "--accel", "kvm"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("--accel kvm: {why}")),
            "{}",
            text(&o)
        );
    }
    // QEMU refuses an argument: its message is shown, and no area appeared.
    let (o, _) = vmirom(&["trace", "run", t, "-q", "--", "-no-such-option"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = text(&o);
    assert!(
        e.contains("-no-such-option") && e.contains("SeaBIOS never started"),
        "{e}"
    );
}

/// A stress guest (a loop of 10 checked calls from 10 call sites, `loops` times, no calls in
/// the timer handler) and its call sites.
fn stress_guest(dir: &Path, loops: u32) -> (PathBuf, Vec<CallSite>) {
    let mut s = Stress::linux_like(loops, 0);
    s.handler.clear();
    let mut cfg = GuestConfig::linux(0xC000_0000, true, &(0..74).collect::<Vec<_>>());
    cfg.steps.push(Step::Stress(0));
    cfg.stress = vec![s];
    let g = build(&cfg).unwrap();
    let p = dir.join("stress.bin");
    std::fs::write(&p, &g.image).unwrap();
    (p, g.call_sites)
}

#[test]
fn a_run_names_every_call_site_and_writes_the_timeline_chrome_trace_and_folded_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let trace = rom(dir.path(), "trace.rom", &["--trace", "--ring", "64"]);
    let loops = 50_000;
    let (kernel, sites) = stress_guest(dir.path(), loops);
    assert_eq!(sites.len(), 10);
    // A System.map with a function starting at each call instruction (6 bytes before its
    // return address) — except the first site's, which lies before every symbol.
    let mut by_addr = sites.clone();
    by_addr.sort_by_key(|c| c.ret);
    let name = |c: &CallSite| format!("site_{:?}_{:x}", c.call, c.ret);
    let mut map: String = by_addr[1..]
        .iter()
        .map(|c| format!("{:08x} T {}\n", c.ret - 6, name(c)))
        .collect();
    map.push_str(&format!("{:08x} T _etext\n", by_addr[9].ret + 64));
    let system_map = dir.path().join("System.map");
    std::fs::write(&system_map, map).unwrap();
    let (chrome, folded, timeline) = (
        dir.path().join("trace.json"),
        dir.path().join("calls.folded"),
        dir.path().join("timeline.svg"),
    );
    let (o, wall) = vmirom(&[
        "trace",
        "run",
        s(&trace),
        "--kernel",
        s(&kernel),
        "--interval",
        "0.05",
        "--timeout",
        "60",
        "--json",
        "-q",
        "--system-map",
        s(&system_map),
        "--chrome-trace",
        s(&chrome),
        "--folded",
        s(&folded),
        "--timeline",
        s(&timeline),
    ]);
    eprintln!("trace run with a System.map: {wall:.2} s");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["qemu"]["how"], "guest-exit");
    // Every site: named right, with exactly the loop's calls.
    let got = j["sites"].as_array().unwrap();
    assert_eq!(got.len(), sites.len(), "{got:?}");
    for c in &sites {
        let g = got
            .iter()
            .find(|g| g["caller"] == c.ret && g["call"] == c.call as u32)
            .unwrap_or_else(|| panic!("{c:?} missing from {got:?}"));
        assert_eq!(g["count"], loops, "{c:?}");
        if c.ret == by_addr[0].ret {
            assert!(g["function"].is_null(), "{g}");
        } else {
            assert_eq!(
                (g["function"].as_str(), g["offset"].as_u64()),
                (Some(name(c).as_str()), Some(6))
            );
        }
    }
    assert!(j["unattributed"].as_array().unwrap().is_empty());
    // The Chrome trace: one complete event per ring event kept, one counter event per reading.
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&chrome).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let count = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
    assert_eq!(count("X"), 64);
    assert_eq!(count("X"), j["area"]["events"].as_array().unwrap().len());
    let intervals = j["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 2, "{intervals:?}");
    assert_eq!(count("C"), intervals.len());
    // Folded stacks add up to the total.
    let f = std::fs::read_to_string(&folded).unwrap();
    let sum: u64 = f
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, j["total_count"].as_u64().unwrap());
    assert_eq!(sum, u64::from(loops) * 10);
    // The timeline: a line per busy call (8 at most), with its legend.
    let svg = std::fs::read_to_string(&timeline).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 8);
    assert!(svg.contains(">GetCR0<") && svg.contains("calls per second (log scale)"));
}
