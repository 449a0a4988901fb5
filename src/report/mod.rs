//! Reports that people read, made from latency histograms.
//!
//! The load generator and the server record nanoseconds into HdrHistograms
//! (see [`new_histogram`]). Signed quantities such as an NTP
//! offset are recorded with a bias (`recorded = ns + bias_ns`), so every
//! value read back here has that bias taken off again.
//!
//! - [`table`]: an aligned text table of percentiles, one row per histogram;
//! - [`hgrm`]: HdrHistogram's percentile-distribution text format (`.hgrm`),
//!   written and parsed, for the HdrHistogram plotter and other tools;
//! - [`plot`]: SVG plots of percentile curves and of load ramps;
//! - here: [`NamedHist`], the shared [`QUANTILES`], a serializable
//!   [`Percentiles`] summary and [`fmt_signed_ns`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod hgrm;
pub mod plot;
pub mod table;

pub use hgrm::{Hgrm, HgrmError, HgrmRow, read_hgrm, write_hgrm};
pub use plot::{PlotError, RampPoint, latency_svg, ramp_svg};
pub use table::{percentile_table, quantile_list};

use hdrhistogram::Histogram;

/// A histogram with its display name. Values were recorded as `ns + bias_ns`.
///
/// All the accessors return 0 for an empty histogram.
#[derive(Clone, Copy, Debug)]
pub struct NamedHist<'a> {
    /// What the histogram measured, e.g. "ntpx xdp" or "offset".
    pub name: &'a str,
    /// The recorded values, in nanoseconds plus `bias_ns`.
    pub hist: &'a Histogram<u64>,
    /// What was added to each value before recording (0 for latencies).
    pub bias_ns: u64,
}

impl NamedHist<'_> {
    /// Takes the bias off a recorded value.
    pub fn unbias(&self, recorded: u64) -> i64 {
        (i128::from(recorded) - i128::from(self.bias_ns)).clamp(i64::MIN.into(), i64::MAX.into())
            as i64
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1), in ns, bias removed.
    pub fn quantile_ns(&self, q: f64) -> i64 {
        self.when_any(|h| self.unbias(h.value_at_quantile(q)))
    }

    /// The smallest recorded value (lowest equivalent), in ns, bias removed.
    pub fn min_ns(&self) -> i64 {
        self.when_any(|h| self.unbias(h.min()))
    }

    /// The largest recorded value (highest equivalent), in ns, bias removed.
    pub fn max_ns(&self) -> i64 {
        self.when_any(|h| self.unbias(h.max()))
    }

    /// The mean, in ns, bias removed.
    pub fn mean_ns(&self) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.mean() - self.bias_ns as f64
    }

    fn when_any(&self, f: impl FnOnce(&Histogram<u64>) -> i64) -> i64 {
        if self.hist.is_empty() {
            0
        } else {
            f(self.hist)
        }
    }
}

/// The quantiles every report shows.
pub const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// A histogram's summary in nanoseconds (bias removed), for JSON output.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Percentiles {
    /// Number of recorded values; all other fields are 0 when it is 0.
    pub count: u64,
    /// Smallest value.
    pub min_ns: i64,
    /// Mean value.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: i64,
    /// 90th percentile.
    pub p90_ns: i64,
    /// 99th percentile.
    pub p99_ns: i64,
    /// 99.9th percentile.
    pub p999_ns: i64,
    /// 99.99th percentile.
    pub p9999_ns: i64,
    /// Largest value.
    pub max_ns: i64,
}

impl Percentiles {
    /// Summarizes `h`.
    pub fn of(h: &NamedHist) -> Percentiles {
        let [p50_ns, p90_ns, p99_ns, p999_ns, p9999_ns] = QUANTILES.map(|(_, q)| h.quantile_ns(q));
        Percentiles {
            count: h.count(),
            min_ns: h.min_ns(),
            mean_ns: h.mean_ns(),
            p50_ns,
            p90_ns,
            p99_ns,
            p999_ns,
            p9999_ns,
            max_ns: h.max_ns(),
        }
    }
}

/// A rate with a k/M/G suffix and at most two decimals: 0, 950, 10k,
/// 22.78k, 1.5M (the form `ntpx load --rate` reads back).
pub fn fmt_rate(rate: f64) -> String {
    let (div, unit) = match rate.abs() {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let digits = format!("{:.2}", rate / div);
    format!(
        "{}{unit}",
        digits.trim_end_matches('0').trim_end_matches('.')
    )
}

/// Signed nanoseconds with a readable unit, e.g. "-1.5us", "850ns", "2.50ms"
/// (the style of [`fmt_ns`]).
pub fn fmt_signed_ns(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}", fmt_ns(ns.unsigned_abs()))
}

/// Highest value the histograms track (60 s, in ns).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// A new, empty nanosecond histogram (1 ns .. 60 s, 3 significant
/// digits): the server's service times and the generator's latencies.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here
    // would be a bug caught by every test.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// Nanoseconds with a readable unit.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1500), "1.5us");
        assert_eq!(fmt_ns(2_500_000), "2.50ms");
    }

    /// 1..=1000 us, one each.
    fn uniform_us() -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us * 1000).unwrap();
        }
        h
    }

    fn near(got: i64, want: i64, rel: f64) -> bool {
        (got - want).abs() as f64 <= want.abs() as f64 * rel
    }

    #[test]
    fn percentiles_of_uniform_latencies() {
        let h = uniform_us();
        let p = Percentiles::of(&NamedHist {
            name: "u",
            hist: &h,
            bias_ns: 0,
        });
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 % of the exact order statistic.
        for (got, want) in [
            (p.min_ns, 1_000),
            (p.p50_ns, 500_000),
            (p.p90_ns, 900_000),
            (p.p99_ns, 990_000),
            (p.p999_ns, 999_000),
            (p.p9999_ns, 1_000_000),
            (p.max_ns, 1_000_000),
        ] {
            assert!(near(got, want, 1e-3), "{got} vs {want}");
        }
        assert!((p.mean_ns - 500_500.0).abs() < 500.0, "{}", p.mean_ns);
    }

    #[test]
    fn bias_gives_negative_values() {
        // Offsets -500..=499 us recorded with a 1 ms bias.
        let bias = 1_000_000;
        let mut h = new_histogram();
        for us in -500i64..500 {
            h.record((us * 1000 + bias) as u64).unwrap();
        }
        let n = NamedHist {
            name: "offset",
            hist: &h,
            bias_ns: bias as u64,
        };
        assert!(near(n.min_ns(), -500_000, 2e-3), "{}", n.min_ns());
        assert!(near(n.max_ns(), 499_000, 2e-3), "{}", n.max_ns());
        // p50 is the 500th value: -1 us, give or take one 1 us bucket at ~1 ms.
        assert!(
            (n.quantile_ns(0.5) + 1_000).abs() <= 1_000,
            "{}",
            n.quantile_ns(0.5)
        );
        assert!(n.quantile_ns(0.1) < -390_000 && n.quantile_ns(0.1) > -410_000);
        assert!(n.mean_ns().abs() < 1_500.0, "{}", n.mean_ns());
    }

    #[test]
    fn empty_histogram_is_all_zero() {
        let h = new_histogram();
        let p = Percentiles::of(&NamedHist {
            name: "e",
            hist: &h,
            bias_ns: 7,
        });
        let zero = Percentiles {
            count: 0,
            min_ns: 0,
            mean_ns: 0.0,
            p50_ns: 0,
            p90_ns: 0,
            p99_ns: 0,
            p999_ns: 0,
            p9999_ns: 0,
            max_ns: 0,
        };
        assert_eq!(p, zero);
    }

    #[test]
    fn percentiles_serialize_round_trip() {
        let h = uniform_us();
        let p = Percentiles::of(&NamedHist {
            name: "u",
            hist: &h,
            bias_ns: 0,
        });
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"p999_ns\":"), "{json}");
        assert_eq!(serde_json::from_str::<Percentiles>(&json).unwrap(), p);
    }

    #[test]
    fn signed_formatting() {
        assert_eq!(fmt_signed_ns(850), "850ns");
        assert_eq!(fmt_signed_ns(-850), "-850ns");
        assert_eq!(fmt_signed_ns(0), "0ns");
        assert_eq!(fmt_signed_ns(-1500), "-1.5us");
        assert_eq!(fmt_signed_ns(2_500_000), "2.50ms");
        assert_eq!(fmt_signed_ns(-3_000_000_000), "-3.000s");
        assert_eq!(fmt_signed_ns(i64::MIN), "-9223372036.855s");
    }
}
