//! Small, dependency-free SVG charts for `vmirom trace`: the per-call bar chart (`--svg`) and
//! the calls-per-second timeline of a run (`trace run --timeline`).
//!
//! Text widths are estimated ([`text_width`], generous for sans-serif), and the layout gives
//! every label the room its estimate needs: a value label after a bar never reaches the next
//! column, a call name never leaves the image.

use std::fmt::Write as _;

/// One row of the bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label (call name).
    pub label: String,
    /// Call count.
    pub count: u64,
    /// Cycles.
    pub cycles: u64,
}

/// How bar lengths follow values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Proportional to the value.
    Linear,
    /// Proportional to log10(1 + value): values over several decades stay visible.
    Log,
}

/// Font size of the chart text, in px.
const FONT: f64 = 12.0;

/// Width in px that `s` needs at `size` px: 0.62 em per character, more than sans-serif
/// digits and most letters take.
pub fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * 0.62 * size
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The length of a bar for `v` out of `max` in `width` px.
fn length(v: u64, max: u64, width: f64, scale: Scale) -> f64 {
    let max = max.max(1) as f64;
    let f = match scale {
        Scale::Linear => v as f64 / max,
        Scale::Log => (1.0 + v as f64).log10() / (1.0 + max).log10(),
    };
    (f * width).round()
}

/// Widest text among `items`, in px.
fn widest<'a>(items: impl Iterator<Item = &'a str>) -> f64 {
    items.map(|s| text_width(s, FONT)).fold(0.0, f64::max)
}

/// Two side-by-side horizontal bar charts: calls per call number and share of ROM time.
pub fn chart(title: &str, bars: &[Bar], scale: Scale) -> String {
    let (row, bar_w, gap, top) = (18.0, 330.0, 30.0, 56.0);
    let total_cycles: u64 = bars.iter().map(|b| b.cycles).sum::<u64>().max(1);
    let share = |b: &Bar| format!("{:.1}%", b.cycles as f64 * 100.0 / total_cycles as f64);
    let counts: Vec<String> = bars.iter().map(|b| b.count.to_string()).collect();
    let shares: Vec<String> = bars.iter().map(share).collect();
    let label_w = (widest(bars.iter().map(|b| b.label.as_str())) + 18.0).max(120.0);
    let x1 = label_w;
    let x2 = x1 + bar_w + 4.0 + widest(counts.iter().map(String::as_str)) + gap;
    let width = x2 + bar_w + 4.0 + widest(shares.iter().map(String::as_str)) + 20.0;
    let height = top + row * bars.len().max(1) as f64 + 30.0;
    let max_count = bars.iter().map(|b| b.count).max().unwrap_or(1);
    let max_cycles = bars.iter().map(|b| b.cycles).max().unwrap_or(1);
    let log = if scale == Scale::Log {
        ", log scale"
    } else {
        ""
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        o,
        r#"<text x="{x1}" y="44" font-weight="bold">calls (max {max_count}{log})</text>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{x2}" y="44" font-weight="bold">ROM time (TSC cycles{log}): share</text>"#
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + i as f64 * row;
        let cw = length(b.count, max_count, bar_w, scale);
        let tw = length(b.cycles, max_cycles, bar_w, scale);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8.0,
            y + 13.0,
            esc(&b.label)
        );
        let _ = writeln!(
            o,
            r##"<rect x="{x1}" y="{}" width="{cw}" height="{}" fill="#4e79a7"/>"##,
            y + 2.0,
            row - 4.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            x1 + cw + 4.0,
            y + 13.0,
            counts[i]
        );
        let _ = writeln!(
            o,
            r##"<rect x="{x2}" y="{}" width="{tw}" height="{}" fill="#f28e2b"/>"##,
            y + 2.0,
            row - 4.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            x2 + tw + 4.0,
            y + 13.0,
            shares[i]
        );
    }
    o.push_str("</svg>\n");
    o
}

/// One line of the timeline.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label (call name).
    pub label: String,
    /// (seconds, calls per second).
    pub points: Vec<(f64, f64)>,
}

/// Line colours (Tableau 10).
const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// `10^e` as an axis label: 1, 10, 100, 1k … 100M, then 1e9 ….
fn decade(e: i32) -> String {
    match e {
        ..0 => format!("1e{e}"),
        0..=2 => 10u64.pow(e.unsigned_abs()).to_string(),
        3..=5 => format!("{}k", 10u64.pow(e.unsigned_abs() - 3)),
        6..=8 => format!("{}M", 10u64.pow(e.unsigned_abs() - 6)),
        _ => format!("1e{e}"),
    }
}

/// A step of 1, 2 or 5 × 10^k giving at most about 8 ticks over `span`.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1e-3);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// The decades the y axis spans: from the lowest positive rate's (at most 7 below the top) to
/// the highest's.
fn y_range(series: &[Series]) -> (i32, i32) {
    let rates = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let max = rates().fold(0.0, f64::max);
    let min = rates().filter(|r| *r > 0.0).fold(f64::INFINITY, f64::min);
    if max <= 0.0 {
        return (0, 1);
    }
    let hi = max.log10().ceil().max(min.log10().floor() + 1.0) as i32;
    let lo = (min.log10().floor() as i32).max(hi - 7);
    (lo, hi.max(lo + 1))
}

/// A line chart of calls per second over time, one line per series, log-scale y axis with a
/// label per decade, x axis in seconds, and a legend. A rate of 0 is drawn on the bottom axis.
pub fn timeline(title: &str, series: &[Series]) -> String {
    let (left, top, plot_w, plot_h) = (70.0, 40.0, 640.0, 320.0);
    let legend_x = left + plot_w + 20.0;
    let legend_w = widest(series.iter().map(|s| s.label.as_str())) + 40.0;
    let width = legend_x + legend_w.max(80.0);
    let height = top + plot_h + 64.0;
    let t_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1e-3);
    let (lo, hi) = y_range(series);
    let x = |t: f64| left + t / t_max * plot_w;
    let y = |r: f64| {
        let l = if r > 0.0 { r.log10() } else { f64::from(lo) };
        let f = (l.clamp(f64::from(lo), f64::from(hi)) - f64::from(lo)) / f64::from(hi - lo);
        top + plot_h - f * plot_h
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for e in lo..=hi {
        let yy = y(10f64.powi(e));
        let _ = writeln!(
            o,
            r##"<line x1="{left}" y1="{yy}" x2="{}" y2="{yy}" stroke="#dddddd"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            decade(e)
        );
    }
    let step = tick_step(t_max);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let xx = x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{xx}" y1="{}" x2="{xx}" y2="{}" stroke="#dddddd"/>"##,
            top,
            top + plot_h
        );
        let _ = writeln!(
            o,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{}</text>"#,
            top + plot_h + 16.0,
            format_secs(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333333"/>"##
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since QEMU started</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 36.0
    );
    let _ = writeln!(
        o,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">calls per second (log scale)</text>"#,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        o,
        r##"<text x="{left}" y="{}" font-size="10" fill="#666666">an interval without calls is drawn on the bottom edge</text>"##,
        top + plot_h + 52.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, r)| format!("{:.1},{:.1}", x(*t), y(*r)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            o,
            r#"<rect x="{legend_x}" y="{}" width="14" height="4" fill="{colour}"/>"#,
            ly - 4.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            legend_x + 20.0,
            ly + 2.0,
            esc(&s.label)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// `t` seconds as a tick label, with decimals only when the step needs them.
fn format_secs(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        let digits = (-step.log10().floor()) as usize;
        format!("{t:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `<text>` of an SVG: (x, anchor is end, content).
    fn texts(svg: &str) -> Vec<(f64, bool, String)> {
        svg.lines()
            .filter(|l| l.starts_with("<text x="))
            .map(|l| {
                let x: f64 = l["<text x=\"".len()..]
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let content = l.split('>').nth(1).unwrap().split('<').next().unwrap();
                (x, l.contains("text-anchor=\"end\""), content.to_string())
            })
            .collect()
    }

    fn bars() -> Vec<Bar> {
        vec![
            Bar {
                label: "SetCR3 (17)".into(),
                count: 10,
                cycles: 300,
            },
            Bar {
                label: "A&B".into(),
                count: 5,
                cycles: 100,
            },
        ]
    }

    #[test]
    fn chart_has_a_row_per_bar_and_escapes_labels() {
        let svg = chart("t<1>", &bars(), Scale::Linear);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t&lt;1&gt;") && svg.contains("A&amp;B"));
        assert_eq!(svg.matches("fill=\"#4e79a7\"").count(), 2);
        assert!(svg.contains(">75.0%<") && svg.contains(">25.0%<"));
    }

    #[test]
    fn no_label_runs_into_the_other_column_or_out_of_the_image() {
        let huge = vec![
            Bar {
                label: "SetInitialAPState (63)".into(),
                count: u64::MAX,
                cycles: u64::MAX / 2,
            },
            Bar {
                label: "GetCR0 (19)".into(),
                count: u64::MAX - 1,
                cycles: u64::MAX / 3,
            },
            Bar {
                label: "IODelay (73)".into(),
                count: 1,
                cycles: 0,
            },
        ];
        for scale in [Scale::Linear, Scale::Log] {
            let svg = chart("VMI calls", &huge, scale);
            let t = texts(&svg);
            let column2 = t
                .iter()
                .find(|x| x.2.starts_with("ROM time"))
                .map(|x| x.0)
                .unwrap();
            let width: f64 = svg
                .split("width=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            for (x, end, s) in &t {
                let w = text_width(s, FONT);
                let (from, to) = if *end { (x - w, *x) } else { (*x, x + w) };
                assert!(from >= 0.0 && to <= width, "{s:?} leaves the image");
                if !*end && *x < column2 {
                    assert!(
                        to < column2,
                        "{s:?} ({from}..{to}) runs into column 2 at {column2}"
                    );
                }
            }
        }
        // Log scale: a bar of 1 among 2^64 is still visible, linear it is not.
        let log = chart("c", &huge, Scale::Log);
        assert!(
            !log.contains("width=\"0\" height=\"14\" fill=\"#4e79a7\""),
            "{log}"
        );
        assert!(log.contains("log scale"));
    }

    #[test]
    fn the_timeline_has_log_decades_seconds_and_a_legend() {
        let s = vec![
            Series {
                label: "GetInterruptMask".into(),
                points: vec![(1.0, 1000.0), (2.0, 250_000.0), (3.0, 0.0)],
            },
            Series {
                label: "Halt".into(),
                points: vec![(1.0, 18.0), (2.0, 18.2), (3.0, 17.9)],
            },
        ];
        let svg = timeline("rates", &s);
        let labels: Vec<String> = texts(&svg).into_iter().map(|t| t.2).collect();
        for want in [
            "10",
            "100",
            "1k",
            "10k",
            "100k",
            "1M",
            "0.0",
            "1.5",
            "3.0",
            "GetInterruptMask",
            "Halt",
        ] {
            assert!(labels.iter().any(|l| l == want), "{want} in {labels:?}");
        }
        assert!(svg.contains("calls per second (log scale)"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!((y_range(&s), y_range(&[])), ((1, 6), (0, 1)));
        assert_eq!(
            (tick_step(3.0), tick_step(60.0), tick_step(0.5)),
            (0.5, 10.0, 0.1)
        );
    }
}
