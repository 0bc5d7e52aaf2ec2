//! Where the calls come from: the trace area's call sites named after kernel functions (with
//! [`Symbols`]), per-function totals, "who calls X", and folded stacks for flame graphs.

use super::call_name;
use crate::symbols::Symbols;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use vmi_rom::trace::area::{Area, Counter};

/// How sites and functions are ordered (busiest first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SortKey {
    /// By number of calls.
    #[default]
    Count,
    /// By TSC cycles spent in the calls.
    Cycles,
}

/// Parses `--call`: a VMI call name (any case) or number.
pub fn parse_call(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u32>() {
        return match vmi_abi::call(n) {
            Some(_) => Ok(n),
            None => Err(format!(
                "{n}: VMI calls are 0-{}",
                vmi_abi::calls::NUM_CALLS - 1
            )),
        };
    }
    vmi_abi::calls::call_by_name(t)
        .map(|c| u32::from(c.number))
        .ok_or_else(|| format!("{t:?} is not a VMI call name or number"))
}

/// One call site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteLine {
    /// Call number.
    pub call: u32,
    /// Call name.
    pub name: &'static str,
    /// The return address the caller pushed.
    pub caller: u32,
    /// The kernel function it lies in (null: outside every symbol, or no symbols given).
    pub function: Option<String>,
    /// `caller` − the function's start.
    pub offset: Option<u32>,
    /// Source file and line of the call (from the vmlinux's DWARF, when it has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Calls from there.
    pub count: u64,
    /// Their TSC cycles.
    pub cycles: u64,
    /// Mean cycles per call.
    pub mean_cycles: u64,
}

impl SiteLine {
    /// `function+0xoff`, or the bare address when the site is outside every symbol.
    pub fn place(&self) -> String {
        match (&self.function, self.offset) {
            (Some(f), Some(o)) => format!("{f}+{o:#x}"),
            _ => format!("{:#010x}", self.caller),
        }
    }

    /// The function name, or the bare address (what functions and folded stacks group by).
    pub fn function_key(&self) -> String {
        self.function
            .clone()
            .unwrap_or_else(|| format!("{:#010x}", self.caller))
    }
}

/// One kernel function's calls into the ROM, over all its call sites.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunctionLine {
    /// Function name (the bare address of a site outside every symbol).
    pub function: String,
    /// Calls from it.
    pub count: u64,
    /// Their TSC cycles.
    pub cycles: u64,
    /// Its call sites.
    pub sites: usize,
    /// By call name: the calls it makes.
    pub calls: BTreeMap<&'static str, Counter>,
}

/// Calls not attributed to a site (no call-site table, no free slot, or reached by `jmp`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unattributed {
    /// Call number.
    pub call: u32,
    /// Call name.
    pub name: &'static str,
    /// Calls.
    pub count: u64,
    /// Their TSC cycles.
    pub cycles: u64,
}

/// Everything the report says about where calls come from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Profile {
    /// The symbol source (a vmlinux or System.map path), if one was given.
    pub symbols: Option<String>,
    /// Whether the symbols came with DWARF lines (sites have `line`).
    pub symbol_lines: bool,
    /// `--call`: only this call's sites and functions.
    pub only_call: Option<u32>,
    /// Order of `sites` and `functions`.
    pub sort: SortKey,
    /// Call sites, busiest first.
    pub sites: Vec<SiteLine>,
    /// Kernel functions, busiest first.
    pub functions: Vec<FunctionLine>,
    /// Per call, the calls no site was credited with.
    pub unattributed: Vec<Unattributed>,
}

fn key(sort: SortKey, count: u64, cycles: u64) -> u64 {
    match sort {
        SortKey::Count => count,
        SortKey::Cycles => cycles,
    }
}

/// The profile of `area`: its sites named with `symbols`, restricted to `only_call`.
pub fn profile(
    area: &Area,
    symbols: Option<&Symbols>,
    only_call: Option<u32>,
    sort: SortKey,
) -> Profile {
    let wanted = |call: u32| only_call.is_none_or(|c| c == call);
    let mut sites: Vec<SiteLine> = area
        .sites
        .iter()
        .filter(|s| s.count > 0 && wanted(s.call))
        .map(|s| {
            let place = symbols.and_then(|y| y.place(s.caller));
            SiteLine {
                call: s.call,
                name: call_name(s.call),
                caller: s.caller,
                function: place.as_ref().map(|p| p.function.to_string()),
                offset: place.map(|p| p.offset),
                line: symbols.and_then(|y| y.line(s.caller)),
                count: s.count,
                cycles: s.cycles,
                mean_cycles: s.cycles / s.count,
            }
        })
        .collect();
    sites.sort_by(|a, b| {
        key(sort, b.count, b.cycles)
            .cmp(&key(sort, a.count, a.cycles))
            .then(a.call.cmp(&b.call))
            .then(a.caller.cmp(&b.caller))
    });
    let mut functions = functions(&sites);
    functions.sort_by(|a, b| {
        key(sort, b.count, b.cycles)
            .cmp(&key(sort, a.count, a.cycles))
            .then(a.function.cmp(&b.function))
    });
    let unattributed = area
        .overflow
        .iter()
        .enumerate()
        .filter(|(n, c)| c.count > 0 && wanted(*n as u32))
        .map(|(n, c)| Unattributed {
            call: n as u32,
            name: call_name(n as u32),
            count: c.count,
            cycles: c.cycles,
        })
        .collect();
    Profile {
        symbols: symbols.map(|s| s.source.clone()),
        symbol_lines: symbols.is_some_and(Symbols::has_lines),
        only_call,
        sort,
        sites,
        functions,
        unattributed,
    }
}

/// Sites grouped by function.
fn functions(sites: &[SiteLine]) -> Vec<FunctionLine> {
    let mut by: BTreeMap<String, FunctionLine> = BTreeMap::new();
    for s in sites {
        let f = by.entry(s.function_key()).or_insert_with(|| FunctionLine {
            function: s.function_key(),
            count: 0,
            cycles: 0,
            sites: 0,
            calls: BTreeMap::new(),
        });
        f.count = f.count.saturating_add(s.count);
        f.cycles = f.cycles.saturating_add(s.cycles);
        f.sites += 1;
        let c = f.calls.entry(s.name).or_default();
        c.count = c.count.saturating_add(s.count);
        c.cycles = c.cycles.saturating_add(s.cycles);
    }
    by.into_values().collect()
}

/// `n` of `len` lines (`0`: all).
fn top(n: usize, len: usize) -> usize {
    if n == 0 { len } else { n.min(len) }
}

/// The profile as text: the busiest `n` sites and functions (0: all), then the unattributed.
pub fn table(p: &Profile, area: &Area, n: usize) -> String {
    let mut o = String::new();
    let by = match p.sort {
        SortKey::Count => "count",
        SortKey::Cycles => "cycles",
    };
    let what = match p.only_call {
        Some(c) => format!("who calls {} ({c})", call_name(c)),
        None => "call sites".to_string(),
    };
    let from = p.symbols.as_deref().map_or(
        "no symbols: --vmlinux or --system-map names them".into(),
        |s| {
            let lines = if p.symbol_lines {
                ", with file:line"
            } else {
                ""
            };
            format!("symbols from {s}{lines}")
        },
    );
    if area.site_slots == 0 {
        let _ = writeln!(
            o,
            "\n{what}: none recorded (this ROM has no call-site table: build with --sites N)"
        );
    } else {
        let _ = writeln!(
            o,
            "\n{what}: top {} of {} by {by} ({} of {} table slots used; {from})",
            top(n, p.sites.len()),
            p.sites.len(),
            area.site_slots_used,
            area.site_slots
        );
        let _ = writeln!(
            o,
            "{:>12} {:>16} {:>10}  {:<20} site",
            "count", "cycles", "mean", "call"
        );
        for s in p.sites.iter().take(top(n, p.sites.len())) {
            let line = s
                .line
                .as_deref()
                .map_or(String::new(), |l| format!("  ({l})"));
            let _ = writeln!(
                o,
                "{:>12} {:>16} {:>10}  {:<20} {}{line}",
                s.count,
                s.cycles,
                s.mean_cycles,
                s.name,
                s.place()
            );
        }
        functions_table(&mut o, p, n, by);
    }
    for u in &p.unattributed {
        let _ = writeln!(
            o,
            "unattributed: {} {} calls, {} cycles (no free call-site slot, no table, or reached \
             by jmp)",
            u.name, u.count, u.cycles
        );
    }
    o
}

fn functions_table(o: &mut String, p: &Profile, n: usize, by: &str) {
    let _ = writeln!(
        o,
        "\nfunctions: top {} of {} by {by}",
        top(n, p.functions.len()),
        p.functions.len()
    );
    let _ = writeln!(
        o,
        "{:>12} {:>16} {:>5}  {:<32} calls",
        "count", "cycles", "sites", "function"
    );
    for f in p.functions.iter().take(top(n, p.functions.len())) {
        let mut calls: Vec<(&&str, &Counter)> = f.calls.iter().collect();
        calls.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let calls: Vec<String> = calls
            .iter()
            .map(|(name, c)| format!("{name} {}", c.count))
            .collect();
        let _ = writeln!(
            o,
            "{:>12} {:>16} {:>5}  {:<32} {}",
            f.count,
            f.cycles,
            f.sites,
            f.function,
            calls.join(", ")
        );
    }
}

/// Folded stacks: `call;function count` per (call, function), and `call;[unattributed] count`
/// for the calls no site was credited with; the counts add up to the calls' totals.
pub fn folded(p: &Profile) -> String {
    let mut lines: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in &p.sites {
        let c = lines
            .entry((s.name.to_string(), s.function_key()))
            .or_default();
        *c = c.saturating_add(s.count);
    }
    for u in &p.unattributed {
        let c = lines
            .entry((u.name.to_string(), "[unattributed]".to_string()))
            .or_default();
        *c = c.saturating_add(u.count);
    }
    lines
        .into_iter()
        .map(|((call, f), n)| format!("{call};{} {n}\n", f.replace([' ', ';'], "_")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmi_rom::trace::area::Site;

    fn area() -> Area {
        let mut overflow = vec![Counter::default(); 74];
        overflow[19] = Counter {
            count: 4,
            cycles: 40,
        };
        let site = |call, caller, count, cycles| Site {
            call,
            caller,
            count,
            cycles,
        };
        let sites = vec![
            site(19, 0xC010_1005, 10, 1000),
            site(19, 0xC010_1045, 30, 300),
            site(35, 0xC010_1010, 2, 9000),
            site(22, 0xD000_0000, 1, 5),
        ];
        let mut counters = overflow.clone();
        for s in &sites {
            counters[s.call as usize].count += s.count;
            counters[s.call as usize].cycles += s.cycles;
        }
        Area {
            phys: 0x9_0000,
            build_id: 1,
            rom_phys: 0xC_0000,
            counters,
            overflow,
            site_slots: 16,
            site_slots_used: 4,
            sites,
            events: Vec::new(),
            events_total: 0,
        }
    }

    fn symbols() -> Symbols {
        Symbols::from_system_map(
            "c0101000 t do_one\nc0101040 T do_two\nc0101100 T _etext\n",
            "System.map",
        )
        .unwrap()
    }

    #[test]
    fn sites_are_named_grouped_and_sorted() {
        let a = area();
        let y = symbols();
        let p = profile(&a, Some(&y), None, SortKey::Count);
        let got: Vec<(String, u64)> = p.sites.iter().map(|s| (s.place(), s.count)).collect();
        assert_eq!(
            got,
            [
                ("do_two+0x5".to_string(), 30),
                ("do_one+0x5".to_string(), 10),
                ("do_one+0x10".to_string(), 2),
                // Outside every symbol: the address, never dropped.
                ("0xd0000000".to_string(), 1),
            ]
        );
        assert_eq!(p.sites[3].function, None);
        let f: Vec<(&str, u64, usize)> = p
            .functions
            .iter()
            .map(|f| (f.function.as_str(), f.count, f.sites))
            .collect();
        assert_eq!(
            f,
            [("do_two", 30, 1), ("do_one", 12, 2), ("0xd0000000", 1, 1)]
        );
        assert_eq!(p.functions[1].calls["Halt"].cycles, 9000);
        // By cycles.
        let p = profile(&a, Some(&y), None, SortKey::Cycles);
        assert_eq!(p.sites[0].place(), "do_one+0x10");
        assert_eq!(p.functions[0].function, "do_one");
        // Who calls GetCR0.
        let p = profile(&a, Some(&y), Some(19), SortKey::Count);
        assert!(p.sites.iter().all(|s| s.call == 19) && p.sites.len() == 2);
        assert_eq!(p.unattributed.len(), 1);
        let t = table(&p, &a, 20);
        assert!(
            t.contains("who calls GetCR0 (19): top 2 of 2 by count"),
            "{t}"
        );
        assert!(t.contains("unattributed: GetCR0 4 calls"), "{t}");
    }

    #[test]
    fn folded_stacks_add_up_to_the_totals() {
        let a = area();
        let p = profile(&a, Some(&symbols()), None, SortKey::Count);
        let f = folded(&p);
        assert_eq!(
            f,
            "GetCR0;[unattributed] 4\nGetCR0;do_one 10\nGetCR0;do_two 30\n\
             GetCR4;0xd0000000 1\nHalt;do_one 2\n"
        );
        let sum: u64 = f
            .lines()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum, a.counters.iter().map(|c| c.count).sum::<u64>());
    }

    #[test]
    fn calls_are_named_or_numbered() {
        assert_eq!(parse_call("GetCR0"), Ok(19));
        assert_eq!(parse_call("getcr0"), Ok(19));
        assert_eq!(parse_call("35"), Ok(35));
        assert!(parse_call("74").unwrap_err().contains("0-73"));
        assert!(parse_call("GetCR9").is_err());
    }
}
