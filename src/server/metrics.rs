//! The metrics endpoint: a running `ntpx serve` answers `GET /metrics`
//! over HTTP with OpenMetrics text, for Prometheus (`--metrics ADDR`; off
//! by default; a bare port means loopback).
//!
//! The text is written by `prometheus-client` from the same totals the
//! stats socket and the exit summary show ([`Collector::totals`], summed at
//! each scrape, workers never blocked) and from the clock state the
//! workers put in replies ([`SharedState::load`]). No label ever names a
//! client. The HTTP side is `tiny_http`, a small blocking server: one
//! thread of its own, never a worker, stopped when [`MetricsServer`] is
//! dropped. Its metric names are listed in README.md, "Operating ntpx".

use crate::proto::drops::DropReason;
use crate::proto::ntp::NtpTimestamp;
use crate::server::state::SharedState;
use crate::server::stats::{Collector, Totals};
use crate::sys::Datapath;
use crate::sys::clock::{Clock as _, SystemClock};
use anyhow::Context;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// The port a bare `--metrics` would suggest, and the README's examples use.
pub const DEFAULT_PORT: u16 = 9123;

/// The content type of OpenMetrics text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the service-time histogram's buckets: 1 µs
/// to 100 ms, then +Inf.
const SERVICE_BOUNDS: [f64; 16] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1,
];

/// Parses `--metrics`: `ADDR:PORT`, `[V6]:PORT`, or a bare `PORT` on
/// loopback.
pub fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse().map_err(|_| {
        anyhow::anyhow!(
            "metrics must be ADDRESS:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT}) \
             or a port on loopback, not {s:?}"
        )
    })
}

/// The endpoint's listening socket, bound early (so that a taken port
/// fails the start, before any packet is steered).
pub struct MetricsEndpoint {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MetricsEndpoint {
    /// Listens on `addr`.
    pub fn bind(addr: SocketAddr) -> anyhow::Result<MetricsEndpoint> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("metrics: cannot listen on {addr}: {e}"))?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "metrics endpoint on a non-loopback address: whoever reaches it reads the counters");
        }
        Ok(MetricsEndpoint {
            server: Arc::new(server),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers scrapes on a thread of its own until the returned guard is
    /// dropped.
    pub fn serve(
        self,
        counts: Arc<Collector>,
        state: Arc<SharedState>,
        datapath: Datapath,
        start: Instant,
    ) -> anyhow::Result<MetricsServer> {
        let mut registry = Registry::with_prefix("ntpx");
        registry.register_collector(Box::new(Scrape {
            counts,
            state,
            datapath,
            start,
        }));
        let server = self.server.clone();
        let thread = std::thread::Builder::new()
            .name("ntpx-metrics".into())
            .spawn(move || answer(&server, &registry))
            .context("spawning the metrics thread")?;
        Ok(MetricsServer {
            server: self.server,
            thread: Some(thread),
        })
    }
}

/// The running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests until the server is unblocked.
fn answer(server: &tiny_http::Server, registry: &Registry) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("");
        let get = matches!(
            req.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let resp = match (get, path) {
            (true, "/metrics") => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, registry) {
                    Ok(()) => response(200, CONTENT_TYPE, text),
                    Err(_) => response(500, "text/plain", "encoding failed\n".into()),
                }
            }
            (true, "/") => response(
                200,
                "text/plain; charset=utf-8",
                "ntpx: metrics at /metrics\n".into(),
            ),
            (true, _) => response(404, "text/plain", "not found: try /metrics\n".into()),
            (false, _) => response(405, "text/plain", "only GET\n".into()),
        };
        // A client that went away is no concern of ours.
        let _ = req.respond(resp);
    }
}

fn response(
    code: u16,
    content_type: &str,
    body: String,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a valid header");
    tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(header)
}

/// What one scrape reads.
#[derive(Debug)]
struct Scrape {
    counts: Arc<Collector>,
    state: Arc<SharedState>,
    datapath: Datapath,
    start: Instant,
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = self.counts.totals();
        let info = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("datapath", self.datapath.label()),
        ];
        let mut m = enc.encode_descriptor(
            "server",
            "This ntpx: its version and datapath",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&info)?;
        counter(&mut enc, "requests", "Requests received", t.rx)?;
        counter(
            &mut enc,
            "replies",
            "Replies sent (Kiss-o'-Death included)",
            t.tx,
        )?;
        drops(&mut enc, &t)?;
        policy(&mut enc, &t)?;
        counter(
            &mut enc,
            "partial_checksum_replies",
            "Requests answered whose UDP checksum was in the partial form a veth peer leaves",
            t.partial_checksum,
        )?;
        service(&mut enc, &t)?;
        stamps(&mut enc, &t)?;
        tables(&mut enc, &t)?;
        clients(&mut enc, &t)?;
        self.breakdown(&mut enc, &t)?;
        gauge(
            &mut enc,
            "uptime_seconds",
            "Seconds since the server started",
            self.start.elapsed().as_secs_f64(),
        )?;
        self.clock(&mut enc)?;
        self.talkers(&mut enc)?;
        self.probe(&mut enc)
    }
}

impl Scrape {
    /// Where the numbers were counted: replies by path, each worker, the
    /// XDP program's counters, each AF_XDP socket's kernel statistics.
    fn breakdown(&self, enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
        let b = &t.breakdown;
        let by_workers: u64 = b.workers.iter().map(|w| w.tx).sum();
        let worker_path = match self.datapath {
            Datapath::Xdp => "af_xdp",
            Datapath::Socket => "socket",
        };
        let mut m = enc.encode_descriptor(
            "path_replies",
            "Replies by the path that sent them: xdp (the XDP program), af_xdp or socket (the workers)",
            None,
            MetricType::Counter,
        )?;
        let mut paths = vec![(worker_path, by_workers)];
        if self.datapath == Datapath::Xdp {
            paths.insert(0, ("xdp", b.xdp_replies));
        }
        for (path, n) in paths {
            m.encode_family(&[("path", path)])?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        type Pick = fn(&crate::server::stats::WorkerTotals) -> u64;
        let counters: [(&str, &str, Pick); 3] = [
            (
                "worker_requests",
                "Requests each worker received (worker: q<queue> on AF_XDP, s<n> on sockets)",
                |w| w.rx,
            ),
            ("worker_replies", "Replies each worker sent", |w| w.tx),
            (
                "worker_stalls",
                "Times the watchdog found the worker stalled and left its queue to the kernel",
                |w| w.stalls,
            ),
        ];
        for (name, help, pick) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for w in &b.workers {
                m.encode_family(&[("worker", w.name.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&pick(w), None)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "worker_stalled",
            "1 while the worker is stalled and its queue goes to the kernel",
            None,
            MetricType::Gauge,
        )?;
        for w in &b.workers {
            m.encode_family(&[("worker", w.name.as_str())])?
                .encode_gauge(&i64::from(w.stalled))?;
        }
        if !b.xdp_events.is_empty() {
            let mut m = enc.encode_descriptor(
                "xdp_program_events",
                "The XDP program's counters (README: Replies in XDP, Defence)",
                None,
                MetricType::Counter,
            )?;
            for (event, n) in &b.xdp_events {
                m.encode_family(&[("event", *event)])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        if !b.sockets.is_empty() {
            let mut m = enc.encode_descriptor(
                "xsk_events",
                "Each AF_XDP socket's kernel statistics (XDP_STATISTICS)",
                None,
                MetricType::Counter,
            )?;
            for (queue, fields) in &b.sockets {
                let queue = queue.to_string();
                for (event, n) in fields {
                    m.encode_family(&[("queue", queue.as_str()), ("event", *event)])?
                        .encode_counter::<NoLabelSet, _, u64>(n, None)?;
                }
            }
        }
        Ok(())
    }

    /// The top talkers (sampled; at most ten series, each a prefix).
    fn talkers(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(
            "top_talker_requests_per_second",
            "The networks sending the most requests (IPv4 /24, IPv6 /48), estimated from 1 in 64 requests over the last minute; at most 10, by rank",
            None,
            MetricType::Gauge,
        )?;
        for (i, t) in self.state.talkers().iter().enumerate() {
            let rank = (i + 1).to_string();
            m.encode_family(&[("rank", rank.as_str()), ("prefix", t.prefix.as_str())])?
                .encode_gauge(&t.rate)?;
        }
        Ok(())
    }

    /// What the self-probe saw (nothing without one).
    fn probe(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.state.probe() else {
            return Ok(());
        };
        let d = crate::server::probe::ProbeDoc::of(&s, SystemClock.now_unix_nanos());
        counter(
            enc,
            "self_probe",
            "Self-probes sent: requests from this host through the live path",
            d.probes,
        )?;
        counter(
            enc,
            "self_probe_failures",
            "Self-probes without a valid answer (none, a KoD, a wrong one)",
            d.failures,
        )?;
        let nan = f64::NAN;
        gauge(
            enc,
            "self_probe_answer_age_seconds",
            "Seconds since a self-probe was last answered validly; NaN before any (grows when the control thread is stuck)",
            d.answered_age_s.unwrap_or(nan),
        )?;
        gauge(
            enc,
            "self_probe_offset_seconds",
            "Offset of the time the last answered self-probe carried from the host's clock",
            d.offset_s.unwrap_or(nan),
        )?;
        gauge(
            enc,
            "self_probe_delay_seconds",
            "Round trip of the last answered self-probe",
            d.delay_s.unwrap_or(nan),
        )?;
        gauge(
            enc,
            "self_probe_leap_indicator",
            "LI of the last answered self-probe",
            d.leap.map_or(nan, f64::from),
        )?;
        gauge(
            enc,
            "self_probe_stratum",
            "Stratum of the last answered self-probe",
            d.stratum.map_or(nan, f64::from),
        )
    }

    /// The clock state replies carry now.
    fn clock(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.state.load();
        let now = NtpTimestamp::from_unix_nanos(SystemClock.now_unix_nanos());
        let s = snap.ntp;
        gauge(
            enc,
            "leap_indicator",
            "LI of replies now (3: unsynchronised)",
            f64::from(s.leap as u8),
        )?;
        gauge(
            enc,
            "stratum",
            "Stratum of replies now",
            f64::from(s.stratum),
        )?;
        gauge(
            enc,
            "root_delay_seconds",
            "Root delay of replies now",
            s.root_delay.to_nanos() as f64 / 1e9,
        )?;
        gauge(
            enc,
            "root_dispersion_seconds",
            "Root dispersion of replies now",
            s.root_dispersion.to_nanos() as f64 / 1e9,
        )?;
        gauge(
            enc,
            "state_age_seconds",
            "Seconds since the clock state was last computed (about 1 while the control thread runs)",
            now.signed_nanos_since(snap.computed) as f64 / 1e9,
        )?;
        let since_update = if s.ref_time == NtpTimestamp::default() {
            f64::NAN
        } else {
            now.signed_nanos_since(s.ref_time) as f64 / 1e9
        };
        gauge(
            enc,
            "reference_age_seconds",
            "Seconds since the time source last updated the clock (the reference timestamp); NaN before any",
            since_update,
        )?;
        gauge(
            enc,
            "drain_mode",
            "Out of service for maintenance (ntpx drain): 0 no, 1 replies say LI 3, 2 no replies",
            f64::from(snap.drain as u8),
        )?;
        let (upstream, held, fallbacks) = self.state.upstream_counts();
        counter(
            enc,
            "state_from_upstream",
            "Clock states taken from the upstream daemon's report",
            upstream,
        )?;
        counter(
            enc,
            "state_held",
            "Clock states that held the daemon's last report over a missed one",
            held,
        )?;
        counter(
            enc,
            "state_fallbacks",
            "Falls back from the upstream daemon to the kernel's state",
            fallbacks,
        )
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Drops by reason: every reason, zero or not, so that a query finds it
/// from the start.
fn drops(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        "drops",
        "Requests that got no reply, by reason (README: What ntpx drops)",
        None,
        MetricType::Counter,
    )?;
    for &r in DropReason::ALL.iter() {
        let labels = [("reason", r.label())];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&t.drops[r as usize], None)?;
    }
    Ok(())
}

/// What the access lists, rate limits and reverse-path check did.
fn policy(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    let p = &t.policy;
    let mut m = enc.encode_descriptor(
        "kod",
        "Kiss-o'-Death replies sent, by code",
        None,
        MetricType::Counter,
    )?;
    for (code, n) in [("RATE", p.kod_rate), ("DENY", p.kod_deny)] {
        m.encode_family(&[("code", code)])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    counter(
        enc,
        "rate_limited_requests",
        "Requests over their client's limit",
        p.limited,
    )?;
    counter(
        enc,
        "rate_limit_leaked",
        "Requests over their client's limit answered anyway (the leak)",
        p.leaked,
    )?;
    counter(
        enc,
        "rate_limited_clients",
        "Clients that went over their limit, once per episode",
        p.limited_clients,
    )?;
    counter(
        enc,
        "rate_limit_speedups",
        "Limited clients that went on to ask twice as fast",
        p.speedups,
    )?;
    counter(
        enc,
        "rate_limit_clients_entered",
        "Clients entered into the rate limiter's table",
        p.entered,
    )?;
    counter(
        enc,
        "reverse_path_unchecked",
        "Requests the reverse-path check let through because its route lookup failed",
        p.rp_unchecked,
    )
}

/// The fill of the server's tables.
fn tables(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    for (name, help, value) in [
        (
            "table_entries",
            "Entries in use in each of the server's fixed-size tables (rate_limit_clients: the rate limiter's clients; a full table evicts its least recently used)",
            (|f: &crate::server::stats::TableFill| f.entries) as fn(&_) -> u64,
        ),
        (
            "table_capacity",
            "Entries each of the server's fixed-size tables holds at most",
            |f| f.capacity,
        ),
    ] {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for f in &t.tables {
            m.encode_family(&[("table", f.name)])?
                .encode_gauge(&i64::try_from(value(f)).unwrap_or(i64::MAX))?;
        }
    }
    Ok(())
}

/// Replies with time by the source of their receive stamp (every source,
/// zero or not).
fn stamps(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        "replies_by_stamp",
        "Replies with time by where their receive time (T2) came from: the NIC (hardware), the XDP program, the kernel's socket stamp, or the worker's clock",
        None,
        MetricType::Counter,
    )?;
    for (s, n) in crate::sys::clock::StampSource::ALL.iter().zip(t.stamps) {
        m.encode_family(&[("source", s.label())])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

/// The client mix: packets by version and mode, requests by poll
/// exponent (the kinds and polls seen so far only).
fn clients(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        "packets_by_kind",
        "NTP packets for the server by address family, version and mode (no client named)",
        None,
        MetricType::Counter,
    )?;
    for (f, v, mode, n) in t.clients.kinds() {
        let (f, v, mode) = (format!("ipv{f}"), v.to_string(), mode.to_string());
        m.encode_family(&[
            ("family", f.as_str()),
            ("version", v.as_str()),
            ("mode", mode.as_str()),
        ])?
        .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    let mut m = enc.encode_descriptor(
        "requests_by_poll",
        "Client requests (mode 3) by the poll exponent they carry (log2 s; -8 and 23 include beyond)",
        None,
        MetricType::Counter,
    )?;
    for (p, n) in t.clients.polls() {
        let p = p.to_string();
        m.encode_family(&[("poll", p.as_str())])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

/// The RX→TX service time, from the merged HdrHistogram.
fn service(enc: &mut DescriptorEncoder, t: &Totals) -> Result<(), std::fmt::Error> {
    let h = &t.service;
    let mut buckets = Vec::with_capacity(SERVICE_BOUNDS.len() + 1);
    let mut below = 0u64;
    for bound in SERVICE_BOUNDS {
        let ns = (bound * 1e9).round() as u64;
        let upto = h.count_between(0, ns);
        buckets.push((bound, upto.saturating_sub(below)));
        below = upto;
    }
    // f64::MAX is how prometheus-client spells the +Inf bucket.
    buckets.push((f64::MAX, h.len().saturating_sub(below)));
    let sum = h.mean() * h.len() as f64 / 1e9;
    let unit = Unit::Seconds;
    let mut m = enc.encode_descriptor(
        "service_time",
        "RX to TX time of each reply (the request's receive stamp to its transmit stamp)",
        Some(&unit),
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)
}
