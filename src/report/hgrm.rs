//! HdrHistogram's percentile-distribution text format (`.hgrm`).
//!
//! This is what Java HdrHistogram's `outputPercentileDistribution` prints and
//! what the HdrHistogram plotter (hdrhistogram.github.io/HdrHistogram/plotFiles.html)
//! and wrk2-style tooling read:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        1.000 0.000000000000          1           1.00
//!      100.031 0.100000000000        100           1.11
//!          …
//!      500.223 0.500000000000        500           2.00
//!          …
//!     1000.447 1.000000000000       1000
//! #[Mean    =      500.505, StdDeviation   =      288.676]
//! #[Max     =     1000.447, Total count    =         1000]
//! #[Buckets =           26, SubBuckets     =         2048]
//! ```
//!
//! Rows step through the percentiles with 5 ticks per half distance to 100 %
//! (50 %, 75 %, 87.5 %, … each half split into 5); each value is the highest
//! value equivalent to the bucket reached, minus the bias, divided by the unit
//! ratio, printed with as many decimals as the histogram has significant
//! digits. The last row (100 %) has no `1/(1-Percentile)` column.

use super::NamedHist;
use std::io::{self, Write};

/// Percentile ticks per half distance to 100 %, as the Java default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One row of the distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct HgrmRow {
    /// The value at this percentile, in output units (bias removed).
    pub value: f64,
    /// The percentile as a fraction, 0..=1.
    pub percentile: f64,
    /// Values recorded up to and including this one.
    pub total_count: u64,
    /// `1/(1-percentile)`; `None` on the final 100 % row, which prints none.
    pub inverted: Option<f64>,
}

/// A parsed `.hgrm` file.
#[derive(Clone, Debug, PartialEq)]
pub struct Hgrm {
    /// The rows, in file order (percentile ascending).
    pub rows: Vec<HgrmRow>,
    /// Footer: mean, in output units.
    pub mean: f64,
    /// Footer: standard deviation, in output units.
    pub std_dev: f64,
    /// Footer: largest value, in output units.
    pub max: f64,
    /// Footer: number of recorded values.
    pub total_count: u64,
    /// Footer: the histogram's bucket count.
    pub buckets: u32,
    /// Footer: the histogram's sub-bucket count.
    pub sub_buckets: u32,
}

/// Why a `.hgrm` text was refused; `line` is 1-based.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HgrmError {
    /// The first line is not the column header.
    #[error("line {line}: expected the header \"Value Percentile TotalCount 1/(1-Percentile)\"")]
    Header {
        /// Line number.
        line: usize,
    },
    /// A distribution row that does not parse.
    #[error("line {line}: bad row: {reason}")]
    Row {
        /// Line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A footer line that does not parse.
    #[error("line {line}: bad footer: {reason}")]
    Footer {
        /// Line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The text ended without a footer field.
    #[error("line {line}: footer field {field:?} missing")]
    Missing {
        /// The last line number.
        line: usize,
        /// The missing field.
        field: &'static str,
    },
}

impl HgrmError {
    /// The 1-based line the error is about.
    pub fn line(&self) -> usize {
        match self {
            HgrmError::Header { line }
            | HgrmError::Row { line, .. }
            | HgrmError::Footer { line, .. }
            | HgrmError::Missing { line, .. } => *line,
        }
    }
}

/// The distribution rows of `h`, values divided by `unit_ratio`.
pub fn hgrm_rows(h: &NamedHist, unit_ratio: f64) -> Vec<HgrmRow> {
    let mut total = 0u64;
    let mut rows = Vec::new();
    if h.hist.is_empty() {
        return rows;
    }
    for v in h.hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total = total.saturating_add(v.count_since_last_iteration());
        let p = v.quantile_iterated_to();
        rows.push(HgrmRow {
            value: h.unbias(v.value_iterated_to()) as f64 / unit_ratio,
            percentile: p,
            total_count: total,
            inverted: (p < 1.0).then(|| 1.0 / (1.0 - p)),
        });
    }
    rows
}

/// Writes HdrHistogram's standard percentile-distribution text for `h`, values
/// as `(recorded − bias) / unit_ratio` (1e3 for microseconds from ns).
pub fn write_hgrm(w: &mut dyn Write, h: &NamedHist, unit_ratio: f64) -> io::Result<()> {
    if !(unit_ratio.is_finite() && unit_ratio > 0.0) {
        let msg = format!("unit ratio {unit_ratio} is not a positive number");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    }
    let d = usize::from(h.hist.sigfig());
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    for r in hgrm_rows(h, unit_ratio) {
        write!(
            w,
            "{:12.d$} {:.12} {:10}",
            r.value, r.percentile, r.total_count
        )?;
        match r.inverted {
            Some(inv) => writeln!(w, " {inv:14.2}")?,
            None => writeln!(w)?,
        }
    }
    let (mean, sd) = (h.mean_ns() / unit_ratio, h.hist.stdev() / unit_ratio);
    writeln!(w, "#[Mean    = {mean:12.d$}, StdDeviation   = {sd:12.d$}]")?;
    let (max, n) = (h.max_ns() as f64 / unit_ratio, h.count());
    writeln!(w, "#[Max     = {max:12.d$}, Total count    = {n:12}]")?;
    let (b, sb) = (h.hist.buckets(), sub_bucket_count(h.hist.sigfig()));
    writeln!(w, "#[Buckets = {b:12}, SubBuckets     = {sb:12}]")
}

/// HdrHistogram's sub-bucket count: 2·10^digits rounded up to a power of two.
fn sub_bucket_count(sigfig: u8) -> u32 {
    (2 * 10u32.pow(u32::from(sigfig))).next_power_of_two()
}

/// Parses the text [`write_hgrm`] (or Java HdrHistogram) writes. Blank lines
/// may precede the header, and the 100 % row may end in `inf` (as wrk2 writes).
pub fn read_hgrm(text: &str) -> Result<Hgrm, HgrmError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let header = ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"];
    match lines.find(|(_, l)| !l.is_empty()) {
        Some((_, l)) if l.split_whitespace().eq(header) => {}
        other => {
            return Err(HgrmError::Header {
                line: other.map_or(1, |(n, _)| n),
            });
        }
    }
    let mut rows: Vec<HgrmRow> = Vec::new();
    let mut footer = Footer::default();
    let mut last_line = 1;
    for (n, l) in lines {
        last_line = n;
        if l.is_empty() {
            continue;
        } else if l.starts_with('#') {
            footer.parse_line(n, l)?;
        } else if footer.started {
            return Err(row_err(n, "distribution row after the footer"));
        } else {
            let row = parse_row(n, l)?;
            check_order(n, rows.last(), &row)?;
            rows.push(row);
        }
    }
    footer.finish(last_line, rows)
}

fn row_err(line: usize, reason: impl Into<String>) -> HgrmError {
    HgrmError::Row {
        line,
        reason: reason.into(),
    }
}

fn parse_row(n: usize, l: &str) -> Result<HgrmRow, HgrmError> {
    let f: Vec<&str> = l.split_whitespace().collect();
    if !(3..=4).contains(&f.len()) {
        return Err(row_err(n, format!("{} columns, expected 3 or 4", f.len())));
    }
    let num = |i: usize, what: &str| {
        f[i].parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| row_err(n, format!("{what} {:?} is not a number", f[i])))
    };
    let value = num(0, "value")?;
    let percentile = num(1, "percentile")?;
    if !(0.0..=1.0).contains(&percentile) {
        return Err(row_err(
            n,
            format!("percentile {percentile} is outside 0..=1"),
        ));
    }
    let total_count = f[2]
        .parse()
        .map_err(|_| row_err(n, format!("total count {:?} is not a count", f[2])))?;
    let inverted = match f.get(3) {
        None => None,
        Some(s) if s.eq_ignore_ascii_case("inf") || s.eq_ignore_ascii_case("infinity") => None,
        Some(_) => Some(num(3, "1/(1-percentile)")?),
    };
    Ok(HgrmRow {
        value,
        percentile,
        total_count,
        inverted,
    })
}

/// Values, percentiles and counts never go down from one row to the next.
fn check_order(n: usize, prev: Option<&HgrmRow>, row: &HgrmRow) -> Result<(), HgrmError> {
    let Some(p) = prev else { return Ok(()) };
    let what = if row.value < p.value {
        "value"
    } else if row.percentile < p.percentile {
        "percentile"
    } else if row.total_count < p.total_count {
        "total count"
    } else {
        return Ok(());
    };
    Err(row_err(
        n,
        format!("{what} goes down from the previous row"),
    ))
}

/// The footer's fields as they are found.
#[derive(Default)]
struct Footer {
    started: bool,
    mean: Option<f64>,
    std_dev: Option<f64>,
    max: Option<f64>,
    total_count: Option<u64>,
    /// Where the total count was read, for a mismatch error.
    count_line: usize,
    buckets: Option<u32>,
    sub_buckets: Option<u32>,
}

impl Footer {
    /// Parses `#[Key = value, Key = value]`.
    fn parse_line(&mut self, n: usize, l: &str) -> Result<(), HgrmError> {
        self.started = true;
        let err = |reason: String| HgrmError::Footer { line: n, reason };
        let body = l
            .strip_prefix("#[")
            .and_then(|b| b.strip_suffix(']'))
            .ok_or_else(|| err("expected #[Key = value, ...]".into()))?;
        for pair in body.split(',') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| err(format!("{:?} has no '='", pair.trim())))?;
            let key = k.trim();
            self.set(key, v.trim()).map_err(err)?;
            if key == "Total count" {
                self.count_line = n;
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<Option<T>, String> {
            v.parse()
                .map(Some)
                .map_err(|_| format!("{key} {v:?} does not parse"))
        }
        match key {
            "Mean" => self.mean = num(key, v)?,
            "StdDeviation" => self.std_dev = num(key, v)?,
            "Max" => self.max = num(key, v)?,
            "Total count" => self.total_count = num(key, v)?,
            "Buckets" => self.buckets = num(key, v)?,
            "SubBuckets" => self.sub_buckets = num(key, v)?,
            _ => return Err(format!("unknown field {key:?}")),
        }
        Ok(())
    }

    fn finish(self, line: usize, rows: Vec<HgrmRow>) -> Result<Hgrm, HgrmError> {
        let need = |field| HgrmError::Missing { line, field };
        let hgrm = Hgrm {
            mean: self.mean.ok_or(need("Mean"))?,
            std_dev: self.std_dev.ok_or(need("StdDeviation"))?,
            max: self.max.ok_or(need("Max"))?,
            total_count: self.total_count.ok_or(need("Total count"))?,
            buckets: self.buckets.ok_or(need("Buckets"))?,
            sub_buckets: self.sub_buckets.ok_or(need("SubBuckets"))?,
            rows,
        };
        match hgrm.rows.last() {
            Some(last) if last.total_count != hgrm.total_count => Err(HgrmError::Footer {
                line: self.count_line,
                reason: format!(
                    "total count {} but the last row counts {}",
                    hgrm.total_count, last.total_count
                ),
            }),
            _ => Ok(hgrm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;
    use hdrhistogram::Histogram;

    fn hgrm_text(h: &NamedHist, unit_ratio: f64) -> String {
        let mut out = Vec::new();
        write_hgrm(&mut out, h, unit_ratio).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn uniform_us() -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us * 1000).unwrap();
        }
        h
    }

    #[test]
    fn single_value_matches_the_java_layout() {
        let mut h = new_histogram();
        h.record(1000).unwrap();
        let text = hgrm_text(
            &NamedHist {
                name: "one",
                hist: &h,
                bias_ns: 0,
            },
            1.0,
        );
        let want = format!(
            "       Value     Percentile TotalCount 1/(1-Percentile)\n\
             \n\
             \x20   1000.000 0.000000000000          1           1.00\n\
             \x20   1000.000 1.000000000000          1\n\
             #[Mean    =     1000.000, StdDeviation   =        0.000]\n\
             #[Max     =     1000.000, Total count    =            1]\n\
             #[Buckets = {:12}, SubBuckets     =         2048]\n",
            h.buckets()
        );
        assert_eq!(text, want);
    }

    #[test]
    fn round_trip_latencies() {
        let h = uniform_us();
        let n = NamedHist {
            name: "u",
            hist: &h,
            bias_ns: 0,
        };
        let g = read_hgrm(&hgrm_text(&n, 1e3)).unwrap();
        assert!(g.rows.len() > 20, "{}", g.rows.len());
        let (first, last) = (&g.rows[0], g.rows.last().unwrap());
        assert_eq!((first.value, first.percentile), (1.0, 0.0)); // 1 us, the min
        assert_eq!(
            (last.percentile, last.total_count, last.inverted),
            (1.0, 1000, None)
        );
        assert_eq!(g.total_count, 1000);
        assert!((g.max - n.max_ns() as f64 / 1e3).abs() < 1e-3, "{}", g.max);
        assert!((g.mean - n.mean_ns() / 1e3).abs() < 1e-3, "{}", g.mean);
        assert!((g.std_dev - 288.7).abs() < 1.0, "{}", g.std_dev);
        assert_eq!((g.buckets, g.sub_buckets), (u32::from(h.buckets()), 2048));
        let p50 = g.rows.iter().find(|r| r.percentile == 0.5).unwrap();
        assert!((p50.value - 500.0).abs() < 0.5, "{}", p50.value);
        assert_eq!(p50.inverted, Some(2.0));
    }

    #[test]
    fn round_trip_biased_offsets() {
        let bias = 1_000_000_u64;
        let mut h = new_histogram();
        for us in -300i64..=200 {
            h.record((us * 1000 + bias as i64) as u64).unwrap();
        }
        let n = NamedHist {
            name: "offset",
            hist: &h,
            bias_ns: bias,
        };
        let g = read_hgrm(&hgrm_text(&n, 1e3)).unwrap();
        let want_first = n.unbias(h.highest_equivalent(h.min())) as f64 / 1e3;
        assert!(
            (g.rows[0].value - want_first).abs() < 1e-3,
            "{}",
            g.rows[0].value
        );
        assert!(g.rows[0].value < -299.0, "{}", g.rows[0].value);
        assert!((g.max - n.max_ns() as f64 / 1e3).abs() < 1e-3);
        assert!((g.mean + 50.0).abs() < 1.5, "{}", g.mean); // mean of -300..=200 us
        assert_eq!(g.total_count, 501);
    }

    #[test]
    fn reads_wrk2_style_inf_and_leading_blank_lines() {
        let text = "\n       Value   Percentile   TotalCount 1/(1-Percentile)\n\n\
                    \x20      0.295     0.000000            1         1.00\n\
                    \x20      3.255     1.000000            2          inf\n\
                    #[Mean    =        1.775, StdDeviation   =        1.480]\n\
                    #[Max     =        3.255, Total count    =            2]\n\
                    #[Buckets =           27, SubBuckets     =         2048]\n";
        let g = read_hgrm(text).unwrap();
        assert_eq!(g.rows.len(), 2);
        assert_eq!((g.rows[1].value, g.rows[1].inverted), (3.255, None));
        assert_eq!((g.total_count, g.buckets, g.sub_buckets), (2, 27, 2048));
        assert_eq!(
            read_hgrm(&text.replace("Percentile ", "Percent "))
                .unwrap_err()
                .line(),
            2
        );
    }

    #[test]
    fn empty_histogram_has_a_footer_only() {
        let h = new_histogram();
        let g = read_hgrm(&hgrm_text(
            &NamedHist {
                name: "e",
                hist: &h,
                bias_ns: 0,
            },
            1.0,
        ));
        let g = g.unwrap();
        assert!(g.rows.is_empty());
        assert_eq!((g.total_count, g.max, g.mean), (0, 0.0, 0.0));
    }

    #[test]
    fn bad_unit_ratio_is_an_error() {
        let h = uniform_us();
        let n = NamedHist {
            name: "u",
            hist: &h,
            bias_ns: 0,
        };
        for r in [0.0, -1.0, f64::NAN] {
            assert!(write_hgrm(&mut Vec::new(), &n, r).is_err(), "{r}");
        }
    }

    /// `good` with line `line` (1-based) replaced by `with`.
    fn corrupt(good: &str, line: usize, with: &str) -> String {
        let mut lines: Vec<&str> = good.lines().collect();
        lines[line - 1] = with;
        lines.join("\n")
    }

    #[test]
    fn malformed_input_is_refused_with_its_line() {
        let h = uniform_us();
        let good = hgrm_text(
            &NamedHist {
                name: "u",
                hist: &h,
                bias_ns: 0,
            },
            1e3,
        );
        let rows = good
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count()
            - 1;
        let footer = rows + 3; // header, blank, rows, then the footer
        let cases = [
            (1, "Value Percentile"),
            (4, "   12.000 0.1"),
            (5, "   abc 0.100000000000 10 1.11"),
            (5, "   12.000 1.500000000000 10 1.11"),
            (6, "   0.500 0.200000000000 200 1.25"),
            (footer, "#[Mean = 1.0, StdDeviation 2.0]"),
            (footer, "#[Mean = x, StdDeviation = 2.0]"),
            (footer + 1, "#[Max     = 1.0, Total count    =  999]"),
        ];
        for (line, with) in cases {
            let err = read_hgrm(&corrupt(&good, line, with)).unwrap_err();
            assert_eq!(err.line(), line, "{with:?}: {err}");
        }
        let cut = good.lines().take(footer).collect::<Vec<_>>().join("\n");
        let err = read_hgrm(&cut).unwrap_err();
        assert!(
            matches!(err, HgrmError::Missing { field: "Max", .. }),
            "{err}"
        );
        assert!(read_hgrm("").is_err());
        assert!(read_hgrm(&good).is_ok());
    }
}
