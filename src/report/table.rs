//! An aligned text table of percentiles, one row per histogram.
//!
//! ```text
//! name         count     p50     p90     p99   p99.9  p99.99     max
//! ntpx xdp   1000000  12.3us  15.0us  21.1us  40.2us  95.0us  1.20ms
//! chronyd          0       -       -       -       -       -       -
//! ```

use super::{NamedHist, QUANTILES, fmt_ns, fmt_signed_ns};
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// A text table: one row per histogram, columns name, count, p50, p90, p99,
/// p99.9, p99.99, max (aligned, readable units). Empty histograms show "-".
pub fn percentile_table(rows: &[NamedHist]) -> String {
    let mut cells = vec![header()];
    cells.extend(rows.iter().map(row));
    let widths = column_widths(&cells);
    let mut out = String::new();
    for line in &cells {
        write_line(&mut out, line, &widths);
    }
    out
}

fn header() -> Vec<String> {
    let mut h = vec!["name".to_string(), "count".to_string()];
    h.extend(QUANTILES.iter().map(|(label, _)| label.to_string()));
    h.push("max".to_string());
    h
}

fn row(h: &NamedHist) -> Vec<String> {
    let mut r = vec![h.name.to_string(), h.count().to_string()];
    let value = |ns: i64| {
        if h.hist.is_empty() {
            "-".to_string()
        } else {
            fmt_signed_ns(ns)
        }
    };
    r.extend(QUANTILES.iter().map(|&(_, q)| value(h.quantile_ns(q))));
    r.push(value(h.max_ns()));
    r
}

fn column_widths(cells: &[Vec<String>]) -> Vec<usize> {
    let columns = cells.first().map_or(0, Vec::len);
    (0..columns)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// The name is left-aligned, the numbers right-aligned, two spaces apart.
fn write_line(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        if i == 0 {
            let _ = write!(line, "{cell:<w$}");
        } else {
            let _ = write!(line, "  {cell:>w$}");
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// One histogram's percentiles (p50 … max) as an indented list under a
/// title with the sample count: the server's exit summary and `ntpx stats`.
pub fn quantile_list(title: &str, h: &Histogram<u64>) -> String {
    let mut s = format!("{title} ({} samples)\n", h.len());
    if h.is_empty() {
        return s;
    }
    for (label, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ] {
        let _ = writeln!(s, "  {label:<7} {}", fmt_ns(h.value_at_quantile(q)));
    }
    let _ = writeln!(s, "  {:<7} {}", "max", fmt_ns(h.max()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;

    #[test]
    fn rows_columns_and_dashes() {
        let mut full = new_histogram();
        for us in 1..=1000 {
            full.record(us * 1000).unwrap();
        }
        let empty = new_histogram();
        let t = percentile_table(&[
            NamedHist {
                name: "ntpx xdp",
                hist: &full,
                bias_ns: 0,
            },
            NamedHist {
                name: "chronyd",
                hist: &empty,
                bias_ns: 0,
            },
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let head: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            head,
            [
                "name", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
            ]
        );

        assert!(lines[1].starts_with("ntpx xdp"), "{t}");
        let xdp: Vec<&str> = lines[1]["ntpx xdp".len()..].split_whitespace().collect();
        // Each is the highest value its bucket holds (3 significant digits).
        let want = [
            "1000", "500.2us", "900.1us", "990.2us", "999.4us", "1.00ms", "1.00ms",
        ];
        assert_eq!(xdp, want);

        let chrony: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(chrony, ["chronyd", "0", "-", "-", "-", "-", "-", "-"]);
    }

    #[test]
    fn columns_line_up_and_signs_show() {
        let mut h = new_histogram();
        let bias = 10_000_000u64;
        for v in [bias - 2_000_000, bias + 300] {
            h.record(v).unwrap();
        }
        let t = percentile_table(&[
            NamedHist {
                name: "offset",
                hist: &h,
                bias_ns: bias,
            },
            NamedHist {
                name: "a much longer name",
                hist: &h,
                bias_ns: bias,
            },
        ]);
        assert!(t.contains("-2.00ms"), "{t}");
        let lens: Vec<usize> = t.lines().map(str::len).collect();
        assert!(lens.windows(2).all(|w| w[0] == w[1]), "ragged:\n{t}");
    }

    #[test]
    fn no_rows_is_just_the_header() {
        assert_eq!(percentile_table(&[]).lines().count(), 1);
    }
}
