//! A small, dependency-free SVG bar chart for `vmirom trace report --svg`.

use std::fmt::Write as _;

/// One row of the chart.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label (call name).
    pub label: String,
    /// Call count.
    pub count: u64,
    /// Cycles.
    pub cycles: u64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Two side-by-side horizontal bar charts: calls per call number and share of ROM time.
pub fn chart(title: &str, bars: &[Bar]) -> String {
    let row = 18;
    let label_w = 170;
    let bar_w = 330;
    let gap = 40;
    let top = 56;
    let width = label_w + 2 * bar_w + gap + 40;
    let height = top + row * bars.len().max(1) + 30;
    let max_count = bars.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let total_cycles: u64 = bars.iter().map(|b| b.cycles).sum::<u64>().max(1);
    let max_cycles = bars.iter().map(|b| b.cycles).max().unwrap_or(1).max(1);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let x1 = label_w;
    let x2 = label_w + bar_w + gap;
    let _ = writeln!(
        o,
        r#"<text x="{x1}" y="44" font-weight="bold">calls (max {max_count})</text>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{x2}" y="44" font-weight="bold">share of ROM time (TSC cycles)</text>"#
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + i * row;
        let cw = (b.count as f64 / max_count as f64 * bar_w as f64).round() as usize;
        let tw = (b.cycles as f64 / max_cycles as f64 * bar_w as f64).round() as usize;
        let share = b.cycles as f64 * 100.0 / total_cycles as f64;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            label_w - 8,
            y + 13,
            esc(&b.label)
        );
        let _ = writeln!(
            o,
            r##"<rect x="{x1}" y="{}" width="{cw}" height="{}" fill="#4e79a7"/>"##,
            y + 2,
            row - 4
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{}</text>"#,
            x1 + cw + 4,
            y + 13,
            b.count
        );
        let _ = writeln!(
            o,
            r##"<rect x="{x2}" y="{}" width="{tw}" height="{}" fill="#f28e2b"/>"##,
            y + 2,
            row - 4
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}">{share:.1}%</text>"#,
            x2 + tw + 4,
            y + 13
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_row_per_bar_and_escapes_labels() {
        let svg = chart(
            "t<1>",
            &[
                Bar {
                    label: "SetCR3".into(),
                    count: 10,
                    cycles: 300,
                },
                Bar {
                    label: "A&B".into(),
                    count: 5,
                    cycles: 100,
                },
            ],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("t&lt;1&gt;") && svg.contains("A&amp;B"));
        assert_eq!(svg.matches("fill=\"#4e79a7\"").count(), 2);
        assert!(svg.contains(">75.0%<") && svg.contains(">25.0%<"));
    }
}
