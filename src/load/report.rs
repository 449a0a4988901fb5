//! What `ntpx load` prints and writes: the step table (ntpperf's columns
//! plus latency), percentile tables, a JSON summary, `.hgrm` files and SVG
//! plots.

use super::run::{LoadResult, StepResult};
use super::spec::fmt_rate;
use super::tally::Tally;
use crate::report::fmt_ns;
use crate::report::hgrm::write_hgrm;
use crate::report::plot::{RampPoint, latency_svg, ramp_svg};
use crate::report::table::percentile_table;
use crate::report::{NamedHist, Percentiles};
use anyhow::Context;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Format version of the JSON summary.
pub const JSON_VERSION: u32 = 1;

/// One step (or the total) in the JSON summary.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StepJson {
    /// Asked-for rate (requests/s; 0 in ping mode).
    pub target_rate: f64,
    /// When the step started (Unix seconds), to line up other measurements
    /// (e.g. the server's CPU use) with it.
    pub start_unix_s: f64,
    /// Length (s).
    pub seconds: f64,
    /// Requests sent.
    pub sent: u64,
    /// Sent per second.
    pub sent_rate: f64,
    /// Good replies.
    pub good: u64,
    /// Good replies per second.
    pub good_rate: f64,
    /// Kiss-o'-Death replies.
    pub kod: u64,
    /// Valid replies after the timeout.
    pub late: u64,
    /// Replies that echoed a request but failed a check.
    pub invalid: u64,
    /// Requests without any reply.
    pub lost: u64,
    /// 1 − good / sent.
    pub loss: f64,
    /// Rejected frames by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Replies accepted with a UDP checksum the server's stack left
    /// partial (veth only).
    #[serde(default)]
    pub partial_checksum: u64,
    /// Round-trip time T4 − T1.
    pub rtt: Percentiles,
    /// Server residence T3 − T2.
    pub residence: Percentiles,
    /// |offset| (the server's timestamp error, client and server sharing a clock).
    pub offset_abs: Percentiles,
    /// Mean signed offset (ns).
    pub offset_mean_ns: f64,
    /// Network delay (T4 − T1) − (T3 − T2).
    pub delay: Percentiles,
    /// Interleaved mode (`--xleave`): interleaved replies, and the |offset|
    /// and delay of their samples (each the previous exchange, with the
    /// precise transmit time); the fields above are then basic replies'.
    #[serde(default)]
    pub interleaved: u64,
    /// |offset| of the interleaved samples.
    #[serde(default)]
    pub xleave_offset_abs: Option<Percentiles>,
    /// Mean signed offset of the interleaved samples (ns).
    #[serde(default)]
    pub xleave_offset_mean_ns: Option<f64>,
    /// Delay of the interleaved samples.
    #[serde(default)]
    pub xleave_delay: Option<Percentiles>,
}

/// The JSON summary of a run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// [`JSON_VERSION`].
    pub version: u32,
    /// `ADDR:PORT` of the server.
    pub server: String,
    /// How the generator sent: `xdp` (AF_XDP) or `socket` (kernel UDP).
    pub datapath: String,
    /// The steps in order.
    pub steps: Vec<StepJson>,
    /// All steps together.
    pub total: StepJson,
    /// Replies the generator itself dropped (its AF_XDP RX rings, or its
    /// UDP sockets' receive buffers).
    pub generator_rx_dropped: u64,
}

fn named<'a>(name: &'a str, h: &'a hdrhistogram::Histogram<u64>) -> NamedHist<'a> {
    NamedHist {
        name,
        hist: h,
        bias_ns: 0,
    }
}

fn step_json(target_rate: f64, start_unix_s: f64, seconds: f64, t: &Tally) -> StepJson {
    let per_s = |n: u64| n as f64 / seconds.max(1e-9);
    StepJson {
        target_rate,
        start_unix_s,
        seconds,
        sent: t.sent,
        sent_rate: per_s(t.sent),
        good: t.good,
        good_rate: per_s(t.good),
        kod: t.kod,
        late: t.late,
        invalid: t.invalid,
        lost: t.lost,
        loss: if t.sent == 0 {
            0.0
        } else {
            1.0 - t.good as f64 / t.sent as f64
        },
        rejected: t
            .rejected_list()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        partial_checksum: t.partial_checksum,
        rtt: Percentiles::of(&named("rtt", &t.hists.rtt)),
        residence: Percentiles::of(&named("residence", &t.hists.residence)),
        offset_abs: Percentiles::of(&named("offset", &t.hists.offset)),
        offset_mean_ns: t.hists.mean_offset_ns(),
        delay: Percentiles::of(&named("delay", &t.hists.delay)),
        interleaved: t.interleaved,
        xleave_offset_abs: (t.interleaved > 0)
            .then(|| Percentiles::of(&named("offset", &t.xhists.offset))),
        xleave_offset_mean_ns: (t.interleaved > 0).then(|| t.xhists.mean_offset_ns()),
        xleave_delay: (t.interleaved > 0)
            .then(|| Percentiles::of(&named("delay", &t.xhists.delay))),
    }
}

/// The JSON summary of `r`.
pub fn summary(r: &LoadResult, server: &str, datapath: &str) -> Summary {
    let seconds: f64 = r.steps.iter().map(|s| s.seconds).sum();
    Summary {
        version: JSON_VERSION,
        server: server.to_owned(),
        datapath: datapath.to_owned(),
        steps: r
            .steps
            .iter()
            .map(|s| step_json(s.target_rate, s.start_unix_s, s.seconds, &s.tally))
            .collect(),
        total: step_json(
            0.0,
            r.steps.first().map_or(0.0, |s| s.start_unix_s),
            seconds,
            &r.total,
        ),
        generator_rx_dropped: r.generator_rx_dropped,
    }
}

/// The step table: one line per step.
pub fn step_table(steps: &[StepResult]) -> String {
    let mut s = format!(
        "{:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
        "target",
        "sent/s",
        "good/s",
        "loss%",
        "kod",
        "late",
        "invalid",
        "rejected",
        "rtt p50",
        "rtt p99",
        "rtt p99.9",
        "|off| p99"
    );
    for st in steps {
        let t = &st.tally;
        let h = &t.hists;
        let q = |h: &hdrhistogram::Histogram<u64>, q: f64| {
            if h.is_empty() {
                "-".to_owned()
            } else {
                fmt_ns(h.value_at_quantile(q))
            }
        };
        let target = if st.target_rate > 0.0 {
            fmt_rate(st.target_rate)
        } else {
            "ping".to_owned()
        };
        let _ = writeln!(
            s,
            "{:>8} {:>8} {:>8} {:>7.3} {:>6} {:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
            target,
            fmt_rate(st.sent_rate()),
            fmt_rate(st.good_rate()),
            st.loss() * 100.0,
            t.kod,
            t.late,
            t.invalid,
            t.rejected_total(),
            q(&h.rtt, 0.5),
            q(&h.rtt, 0.99),
            q(&h.rtt, 0.999),
            q(&h.offset, 0.99),
        );
    }
    s
}

/// The human report: step table, outcome totals, percentile table.
pub fn text(r: &LoadResult) -> String {
    let t = &r.total;
    let mut s = step_table(&r.steps);
    let _ = writeln!(
        s,
        "\ntotal: sent {}  good {}  kod {}  late {}  invalid {}  lost {}  (loss {:.3}%)",
        t.sent,
        t.good,
        t.kod,
        t.late,
        t.invalid,
        t.lost,
        if t.sent == 0 {
            0.0
        } else {
            100.0 * (1.0 - t.good as f64 / t.sent as f64)
        }
    );
    let rejected = t.rejected_list();
    if !rejected.is_empty() {
        let list: Vec<String> = rejected.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "rejected frames: {}", list.join(" "));
    }
    if t.partial_checksum > 0 {
        let _ = writeln!(
            s,
            "replies with a UDP checksum left partial by the server's stack (veth): {}",
            t.partial_checksum
        );
    }
    if r.no_socket > 0 {
        let _ = writeln!(
            s,
            "replies on a queue without a generator thread: {}",
            r.no_socket
        );
    }
    if r.generator_rx_dropped > 0 {
        let _ = writeln!(
            s,
            "WARNING: the generator's own {} dropped {} replies: it, not the server, lost them",
            match r.datapath {
                crate::sys::Datapath::Xdp => "AF_XDP RX rings",
                crate::sys::Datapath::Socket => "socket receive buffers",
            },
            r.generator_rx_dropped
        );
    }
    let _ = writeln!(s, "\nlatency of good replies (all steps):");
    s.push_str(&percentile_table(&hist_list(t)));
    let _ = writeln!(s, "mean offset {:.0}ns", t.hists.mean_offset_ns());
    if t.interleaved > 0 {
        let _ = writeln!(
            s,
            "\ninterleaved replies: {} of {} good; their samples (the previous exchange, with the \
             time the previous reply really left):",
            t.interleaved, t.good
        );
        s.push_str(&percentile_table(&[
            named("|offset|", &t.xhists.offset),
            named("delay", &t.xhists.delay),
        ]));
        let _ = writeln!(s, "mean offset {:.0}ns", t.xhists.mean_offset_ns());
    }
    s
}

fn hist_list(t: &Tally) -> [NamedHist<'_>; 4] {
    [
        named("rtt", &t.hists.rtt),
        named("residence", &t.hists.residence),
        named("|offset|", &t.hists.offset),
        named("delay", &t.hists.delay),
    ]
}

/// Writes `summary.json`, one `.hgrm` per histogram, `latency.svg` and,
/// for a ramp, `ramp.svg` into `dir` (created if missing).
pub fn write_files(
    dir: &Path,
    r: &LoadResult,
    summary: &Summary,
    label: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    write(
        "summary.json",
        serde_json::to_string_pretty(summary)?.as_bytes(),
    )?;
    for (file, h) in ["rtt", "residence", "offset", "delay"]
        .iter()
        .zip(hist_list(&r.total))
    {
        let mut buf = Vec::new();
        write_hgrm(&mut buf, &h, 1000.0)?;
        write(&format!("{file}.hgrm"), &buf)?;
    }
    // Latency: each step's RTT curve (a ramp), else the four histograms.
    let names: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} rtt @ {}/s", label, fmt_rate(s.target_rate)))
        .collect();
    let svg = if r.steps.len() > 1 {
        let series: Vec<NamedHist> = r
            .steps
            .iter()
            .zip(&names)
            .filter(|(s, _)| !s.tally.hists.rtt.is_empty())
            .map(|(s, n)| named(n, &s.tally.hists.rtt))
            .collect();
        latency_svg(
            &format!("{label}: round-trip time per step"),
            "us",
            1000.0,
            &series,
        )?
    } else {
        latency_svg(
            &format!("{label}: latency"),
            "us",
            1000.0,
            &hist_list(&r.total),
        )?
    };
    write("latency.svg", svg.as_bytes())?;
    if r.steps.len() > 1 {
        let points = ramp_points(&r.steps);
        write(
            "ramp.svg",
            ramp_svg(&format!("{label}: rate ramp"), &[(label, &points)])?.as_bytes(),
        )?;
    }
    Ok(())
}

/// A ramp's points for [`ramp_svg`].
pub fn ramp_points(steps: &[StepResult]) -> Vec<RampPoint> {
    steps
        .iter()
        .filter(|s| s.seconds > 0.0)
        .map(|s| RampPoint {
            offered: s.sent_rate(),
            answered: s.good_rate(),
            loss: s.loss(),
        })
        .collect()
}
