//! `vmirom trace report` naming call sites: a kernel in miniature built with gcc (functions at
//! addresses a linker script fixes, DWARF line information), a guest-RAM image holding the
//! trace area a trace ROM would leave after calls from those functions' call sites
//! (`area::encode`), and the report's sites, functions, Chrome trace and folded stacks checked
//! against what the ELF says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{s, text, vmirom};
use iced_x86::{Decoder, DecoderOptions};
use object::{Object, ObjectSymbol};
use std::path::{Path, PathBuf};
use vmi_abi::Call;
use vmi_rom::trace::area::{self, Event, Layout, Site};
use vmirom_testkit::toolchain;

/// Each function calls the ROM through a pointer, as a patched paravirt site does; the comment
/// `site N` marks the line of call site N.
const KERNEL_C: &str = r#"typedef unsigned (*vmi_op)(void);
vmi_op vmi_ops[4];

__attribute__((section(".text.irq_save"), noinline))
unsigned irq_save(void)
{
	unsigned f = vmi_ops[0](); /* site 0 */
	return f & 0x200;
}

__attribute__((section(".text.irq_restore"), noinline))
unsigned irq_restore(unsigned f)
{
	if (f)
		vmi_ops[1](); /* site 1 */
	vmi_ops[2](); /* site 2 */
	return f + 1;
}

__attribute__((section(".text.schedule"), noinline))
unsigned schedule(void)
{
	unsigned n = irq_save();
	n += vmi_ops[3](); /* site 3 */
	return irq_restore(n) + 1;
}
"#;

/// Where each function goes.
const LINK_LD: &str = "ENTRY(schedule)
SECTIONS {
  . = 0xC0101000; .text.irq_save : { *(.text.irq_save) }
  . = 0xC0101400; .text.irq_restore : { *(.text.irq_restore) }
  . = 0xC0102000; .text.schedule : { *(.text.schedule) }
  . = 0xC0200000; .data : { *(.data) *(.bss) *(COMMON) }
}
";

/// Function start addresses the linker script sets.
const FUNCTIONS: [(&str, u32); 3] = [
    ("irq_save", 0xC010_1000),
    ("irq_restore", 0xC010_1400),
    ("schedule", 0xC010_2000),
];

/// A return address outside every function.
const NOWHERE: u32 = 0xC030_0005;

/// One call site found in the ELF: its function, return address, source line.
#[derive(Debug, Clone)]
struct KernelSite {
    function: &'static str,
    ret: u32,
    line: usize,
}

/// Builds the miniature kernel in `dir`; its path.
fn vmlinux(dir: &Path) -> PathBuf {
    let obj = toolchain::gcc(dir, "kernel", KERNEL_C, &["-g", "-O1", "-fno-pic"]).unwrap();
    let ld = dir.join("link.ld");
    std::fs::write(&ld, LINK_LD).unwrap();
    let out = dir.join("vmlinux");
    toolchain::run(
        std::process::Command::new("ld")
            .args(["-m", "elf_i386", "-T"])
            .arg(&ld)
            .arg("-o")
            .arg(&out)
            .arg(&obj),
    )
    .unwrap();
    out
}

/// The indirect calls of each function, in address order: their return addresses, and the
/// line of the `site N` comment the N-th of them belongs to.
fn kernel_sites(elf: &[u8]) -> Vec<KernelSite> {
    let file = object::File::parse(elf).unwrap();
    let line_of = |n: usize| {
        1 + KERNEL_C
            .lines()
            .position(|l| l.contains(&format!("/* site {n} */")))
            .unwrap()
    };
    let mut sites = Vec::new();
    for (name, addr) in FUNCTIONS {
        let sym = file.symbols().find(|s| s.name() == Ok(name)).unwrap();
        assert_eq!(
            sym.address(),
            u64::from(addr),
            "{name} is where link.ld put it"
        );
        let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let data = object::ObjectSection::data(&sec).unwrap();
        let at = (sym.address() - object::ObjectSection::address(&sec)) as usize;
        let code = &data[at..at + sym.size() as usize];
        for ins in Decoder::with_ip(32, code, sym.address(), DecoderOptions::NONE) {
            if ins.is_call_near_indirect() {
                sites.push(KernelSite {
                    function: name,
                    ret: ins.next_ip() as u32,
                    line: line_of(sites.len()),
                });
            }
        }
    }
    assert_eq!(sites.len(), 4, "{sites:?}");
    sites
}

/// The calls made from each site (and from nowhere, and unattributed), as the area counts them.
fn calls(sites: &[KernelSite]) -> Vec<Site> {
    let site = |call: Call, caller, count, cycles| Site {
        call: call as u32,
        caller,
        count,
        cycles,
    };
    vec![
        site(Call::GetInterruptMask, sites[0].ret, 1000, 50_000),
        site(Call::SetInterruptMask, sites[1].ret, 300, 60_000),
        site(Call::EnableInterrupts, sites[2].ret, 200, 4_000),
        site(Call::RDTSC, sites[3].ret, 50, 1_500),
        site(Call::GetInterruptMask, sites[3].ret, 5, 100),
        site(Call::DisableInterrupts, NOWHERE, 7, 70),
        site(Call::GetCR0, 0, 11, 110),
    ]
}

/// A 640 KiB guest-RAM image with the area of `calls` at 0x90000 and 10 ring events.
fn ram(dir: &Path, sites: &[KernelSite]) -> PathBuf {
    let layout = Layout {
        slots: vmi_abi::calls::NUM_CALLS as u32,
        ring: 8,
        sites: 64,
    };
    let events: Vec<Event> = (0..10)
        .map(|i| Event {
            call: Call::GetInterruptMask as u32,
            caller: sites[i % 4].ret,
            start: 1_000_000 + 400 * i as u64,
            cycles: 50,
        })
        .collect();
    let a = area::encode(&layout, 0xC_0000, 0x1234, &calls(sites), &events);
    let mut ram = vec![0u8; area::CONVENTIONAL_END];
    ram[0x9_0000..0x9_0000 + a.len()].copy_from_slice(&a);
    let p = dir.join("ram.bin");
    std::fs::write(&p, ram).unwrap();
    p
}

fn report(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["trace", "report"];
    a.extend_from_slice(args);
    a.push("--json");
    let o = vmirom(&a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// (name, function, offset, count) of every site of a JSON report.
fn named(j: &serde_json::Value) -> Vec<(String, Option<String>, Option<u64>, u64)> {
    j["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["function"].as_str().map(String::from),
                s["offset"].as_u64(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn call_sites_are_named_from_a_gcc_built_vmlinux_and_its_system_map() {
    if !toolchain::available(&["gcc", "ld"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let elf = vmlinux(dir.path());
    let ks = kernel_sites(&std::fs::read(&elf).unwrap());
    let mem = ram(dir.path(), &ks);
    let off = |i: usize| {
        let f = FUNCTIONS.iter().find(|f| f.0 == ks[i].function).unwrap();
        Some(u64::from(ks[i].ret - f.1))
    };
    let f = |i: usize| Some(ks[i].function.to_string());
    let want = vec![
        ("GetInterruptMask".to_string(), f(0), off(0), 1000),
        ("SetInterruptMask".to_string(), f(1), off(1), 300),
        ("EnableInterrupts".to_string(), f(2), off(2), 200),
        ("RDTSC".to_string(), f(3), off(3), 50),
        ("DisableInterrupts".to_string(), None, None, 7),
        ("GetInterruptMask".to_string(), f(3), off(3), 5),
    ];
    let j = report(&["--mem", s(&mem), "--vmlinux", s(&elf)]);
    assert_eq!(named(&j), want);
    assert_eq!(
        ks.iter().map(|k| k.function).collect::<Vec<_>>(),
        ["irq_save", "irq_restore", "irq_restore", "schedule"]
    );
    // File and line from the DWARF: the line of each call.
    for (i, k) in ks.iter().enumerate() {
        let site = j["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["caller"] == k.ret)
            .unwrap();
        let line = site["line"].as_str().unwrap();
        assert!(
            line.ends_with(&format!("kernel.c:{}", k.line)),
            "site {i}: {line}, expected kernel.c:{}",
            k.line
        );
    }
    assert_eq!(j["symbol_lines"], true);
    // Per function: its sites' calls.
    let funcs: Vec<(String, u64, u64)> = j["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap().to_string(),
                f["count"].as_u64().unwrap(),
                f["sites"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        funcs,
        [
            ("irq_save".to_string(), 1000, 1),
            ("irq_restore".to_string(), 500, 2),
            ("schedule".to_string(), 55, 2),
            (format!("{NOWHERE:#010x}"), 7, 1),
        ]
    );
    assert_eq!(j["functions"][2]["calls"]["RDTSC"]["count"], 50);
    assert_eq!(j["unattributed"][0]["name"], "GetCR0");
    assert_eq!(j["unattributed"][0]["count"], 11);
    assert_eq!(j["total_count"], 1573);

    // The System.map of the same kernel names the same sites (no lines).
    let map = dir.path().join("System.map");
    let lines: String = FUNCTIONS
        .iter()
        .map(|(n, a)| format!("{a:08x} T {n}\n"))
        .chain([
            "c0200000 D vmi_ops\n".to_string(),
            "c0102100 T _etext\n".into(),
        ])
        .collect();
    std::fs::write(&map, lines).unwrap();
    let m = report(&["--mem", s(&mem), "--system-map", s(&map)]);
    assert_eq!(named(&m), want);
    assert_eq!(m["symbol_lines"], false);
    assert!(m["sites"][0].get("line").is_none());

    // Who calls GetInterruptMask, busiest by cycles: both its sites, nothing else.
    let c = report(&[
        "--mem",
        s(&mem),
        "--vmlinux",
        s(&elf),
        "--call",
        "getinterruptmask",
        "--sort",
        "cycles",
    ]);
    let who: Vec<(Option<String>, u64)> = named(&c).into_iter().map(|x| (x.1, x.3)).collect();
    assert_eq!(who, [(f(0), 1000), (f(3), 5)]);
    assert_eq!(c["only_call"], Call::GetInterruptMask as u32);
    // Sorted by cycles, SetInterruptMask's site (60000) leads.
    let by = report(&[
        "--mem",
        s(&mem),
        "--system-map",
        s(&map),
        "--sort",
        "cycles",
    ]);
    assert_eq!(by["sites"][0]["name"], "SetInterruptMask");
    assert_eq!(by["functions"][0]["function"], "irq_restore");

    // The table a person reads.
    let o = vmirom(&["trace", "report", "--mem", s(&mem), "--vmlinux", s(&elf)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    eprintln!("{t}");
    let first = format!("irq_save+{:#x}", off(0).unwrap());
    assert!(t.contains(&first) && t.contains("kernel.c:"), "{t}");
    assert!(t.contains(&format!("{NOWHERE:#010x}")), "{t}");
    assert!(t.contains("unattributed: GetCR0 11 calls"), "{t}");
}

#[test]
fn chrome_trace_and_folded_stacks_match_the_area() {
    if !toolchain::available(&["gcc", "ld"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let elf = vmlinux(dir.path());
    let ks = kernel_sites(&std::fs::read(&elf).unwrap());
    let mem = ram(dir.path(), &ks);
    let chrome = dir.path().join("trace.json");
    let folded = dir.path().join("calls.folded");
    let j = report(&[
        "--mem",
        s(&mem),
        "--vmlinux",
        s(&elf),
        "--chrome-trace",
        s(&chrome),
        "--tsc-mhz",
        "100",
        "--folded",
        s(&folded),
    ]);
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&chrome).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let x: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    // The ring kept its last 8 of 10 events; each is one complete event, 4 µs apart at 100 MHz.
    assert_eq!(x.len(), 8);
    assert_eq!(x.len(), j["area"]["events"].as_array().unwrap().len());
    assert_eq!(x[1]["ts"].as_f64(), Some(4.0));
    assert_eq!(x[0]["dur"].as_f64(), Some(0.5));
    assert_eq!(x[0]["name"], "GetInterruptMask");
    assert_eq!(
        x[0]["args"]["site"],
        format!("irq_restore+{:#x}", ks[2].ret - 0xC010_1400)
    );
    assert!(
        events.iter().all(|e| e["ph"] != "C"),
        "no rates without a run"
    );
    let text = std::fs::read_to_string(&folded).unwrap();
    eprintln!("{text}");
    let sum: u64 = text
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, j["total_count"].as_u64().unwrap());
    assert!(text.contains("GetInterruptMask;irq_save 1000\n"), "{text}");
    assert!(text.contains("GetInterruptMask;schedule 5\n"), "{text}");
    assert!(text.contains("GetCR0;[unattributed] 11\n"), "{text}");
}

#[test]
fn malformed_symbol_files_are_errors_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mem = dir.path().join("ram.bin");
    let a = area::encode(
        &Layout {
            slots: 74,
            ring: 0,
            sites: 16,
        },
        0xC_0000,
        1,
        &[],
        &[],
    );
    let mut ram = vec![0u8; area::CONVENTIONAL_END];
    ram[0x9_0000..0x9_0000 + a.len()].copy_from_slice(&a);
    std::fs::write(&mem, ram).unwrap();
    let bad_elf = dir.path().join("vmlinux");
    std::fs::write(&bad_elf, b"\x7fELF\x01\x01\x01\0garbage").unwrap();
    let map = dir.path().join("System.map");
    std::fs::write(&map, "c0100000 T _text\nc0100010 T f\nc01000zz T g\n").unwrap();
    for (flag, file, says) in [
        (
            "--vmlinux",
            &bad_elf,
            "vmlinux: not a readable ELF file".to_string(),
        ),
        (
            "--system-map",
            &map,
            format!("{}:3: not a hex address", map.display()),
        ),
        ("--vmlinux", &dir.path().join("none"), "none".to_string()),
    ] {
        let o = vmirom(&["trace", "report", "--mem", s(&mem), flag, s(file)]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(&says), "{}", text(&o));
    }
    // Both at once: a usage error.
    let o = vmirom(&[
        "trace",
        "report",
        "--mem",
        s(&mem),
        "--vmlinux",
        "a",
        "--system-map",
        "b",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
