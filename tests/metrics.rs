//! The metrics endpoint (`--metrics`) end to end: a server in a throwaway
//! namespace, loaded by `ntpx load` and sent a few requests it must drop,
//! is scraped over HTTP, and the text is parsed by the OpenMetrics parser
//! of the Python Prometheus client (Debian's python3-prometheus-client,
//! strict about the format). Its numbers must be those of the stats
//! socket; the clock state those the server puts in replies. A port that
//! is taken fails the start with a clear message.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::UdpSocket;

/// Scrapes `url` from the server's namespace and prints every sample as
/// `name{labels} value`, one per line, after the content type; the
/// parser raises on anything that is not valid OpenMetrics.
const SCRAPE: &str = r#"
import sys, urllib.request, urllib.error
from prometheus_client.openmetrics.parser import text_string_to_metric_families
r = urllib.request.urlopen(sys.argv[1], timeout=5)
print(r.headers["Content-Type"])
for fam in text_string_to_metric_families(r.read().decode()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
try:
    urllib.request.urlopen(sys.argv[1].replace("/metrics", "/nothing"), timeout=5)
    print("404: no")
except urllib.error.HTTPError as e:
    print(f"404: {e.code == 404}")
"#;

fn scrape(topo: &Topology, port: u16) -> (String, BTreeMap<String, f64>, String) {
    let out = run_ok(topo.srv_cmd("/usr/bin/python3").args([
        "-c",
        SCRAPE,
        &format!("http://127.0.0.1:{port}/metrics"),
    ]));
    let mut lines = out.lines();
    let content_type = lines.next().unwrap_or_default().to_owned();
    let mut samples = BTreeMap::new();
    let mut not_found = String::new();
    for l in lines {
        if let Some(v) = l.strip_prefix("404: ") {
            not_found = v.to_owned();
        } else if let Some((k, v)) = l.rsplit_once(' ') {
            samples.insert(k.to_owned(), v.parse::<f64>().expect("a number"));
        }
    }
    (content_type, samples, not_found)
}

#[test]
fn the_metrics_endpoint_serves_what_the_server_counted() {
    let test = "the_metrics_endpoint_serves_what_the_server_counted";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    // One self-probe at the start, then none for an hour: the counts the
    // test compares stay put.
    let mut srv = Server::start(
        &topo,
        &[
            "--iface",
            &topo.srv_if,
            "--metrics",
            "9123",
            "--self-probe",
            "3600",
            // The rate limiter on, with room for the load's 1,000
            // requests from one address: one client in its table.
            "--rate-burst",
            "100000",
        ],
    );
    let s = ntpx_load(&topo, "198.18.0.1", &["--rate", "500", "--duration", "2s"]);
    assert!(s.total.good > 500, "{:?}", s.total);
    // Mode 7 (ntpdc's monlist), which is never answered: a counted drop.
    topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
        let mut req = [0u8; 48];
        req[0] = 0x27;
        for _ in 0..5 {
            sock.send_to(&req, "198.18.0.1:123").expect("send");
        }
    });
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let doc = settled_stats(&topo, &socket);
    // Workers hand their service times over every half second (and when
    // they go idle): the histogram may lag the counters by that much.
    let mut tries = 0;
    let (content_type, m, not_found) = loop {
        let s = scrape(&topo, 9123);
        tries += 1;
        let count = s.1.get("ntpx_service_time_seconds_count{}").copied();
        // The top talkers are shown anew every second.
        let talkers =
            s.1.keys()
                .any(|k| k.starts_with("ntpx_top_talker_requests_per_second{"));
        if count == doc["tx"].as_f64() && talkers || tries == 25 {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("{test}: {content_type}; {} samples", m.len());
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(not_found, "True");
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(get("ntpx_requests_total{}"), doc["rx"].as_f64().unwrap());
    assert_eq!(get("ntpx_replies_total{}"), doc["tx"].as_f64().unwrap());
    // Every reason, zero or not; the non-zero ones as the stats socket.
    let reasons = m
        .keys()
        .filter(|k| k.starts_with("ntpx_drops_total{"))
        .count();
    assert_eq!(reasons, ntpx::proto::drops::COUNT);
    for (reason, n) in drops_of(&doc) {
        assert_eq!(
            get(&format!("ntpx_drops_total{{reason={reason}}}")),
            n as f64
        );
    }
    assert_eq!(get("ntpx_drops_total{reason=ntp_mode}"), 5.0);
    // The service-time histogram holds every reply, in order.
    let count = get("ntpx_service_time_seconds_count{}");
    assert_eq!(count, doc["tx"].as_f64().unwrap());
    assert_eq!(get("ntpx_service_time_seconds_bucket{le=+Inf}"), count);
    assert!(get("ntpx_service_time_seconds_sum{}") > 0.0);
    // The clock state replies carry (a synchronised stratum 1, the test's
    // local clock).
    assert_eq!(get("ntpx_stratum{}"), 1.0);
    assert_eq!(get("ntpx_leap_indicator{}"), 0.0);
    assert!(get("ntpx_state_age_seconds{}") < 5.0);
    let info = format!(
        "ntpx_server_info{{datapath=xdp,version={}}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get(&info), 1.0);
    assert!(get("ntpx_rate_limit_clients_entered_total{}") >= 0.0);
    // Where they were counted: the paths' replies add up; the program's
    // and the socket's own counters are there.
    let tx = doc["tx"].as_f64().unwrap();
    assert_eq!(
        get("ntpx_path_replies_total{path=xdp}") + get("ntpx_path_replies_total{path=af_xdp}"),
        tx
    );
    assert_eq!(
        get("ntpx_worker_replies_total{worker=q0}"),
        get("ntpx_path_replies_total{path=af_xdp}")
    );
    assert!(get("ntpx_xdp_program_events_total{event=seen}") >= doc["rx"].as_f64().unwrap());
    assert_eq!(
        get("ntpx_xsk_events_total{event=rx_ring_full,queue=0}"),
        0.0
    );
    // The client mix: the five monlist probes (v4 mode 7), the load's
    // requests (v4 mode 3), each with its poll.
    assert_eq!(
        get("ntpx_packets_by_kind_total{family=ipv4,mode=7,version=4}"),
        5.0
    );
    let mode3 = get("ntpx_packets_by_kind_total{family=ipv4,mode=3,version=4}");
    assert!(mode3 >= s.total.good as f64, "{mode3}");
    let polled: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ntpx_requests_by_poll_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(polled, mode3);
    // The self-probe: answered, its time the host's within half its
    // round trip.
    assert_eq!(get("ntpx_self_probe_total{}"), 1.0);
    assert_eq!(get("ntpx_self_probe_failures_total{}"), 0.0);
    let (off, delay) = (
        get("ntpx_self_probe_offset_seconds{}"),
        get("ntpx_self_probe_delay_seconds{}"),
    );
    assert!(off.abs() <= delay / 2.0 + 1e-6, "{off} {delay}");
    assert_eq!(get("ntpx_self_probe_stratum{}"), 1.0);
    // Every reply's T2 was the XDP program's stamp (in XDP or by a worker).
    assert_eq!(
        get("ntpx_replies_by_stamp_total{source=xdp}"),
        get("ntpx_replies_total{}")
    );
    assert_eq!(get("ntpx_replies_by_stamp_total{source=worker}"), 0.0);
    assert_eq!(get("ntpx_table_entries{table=rate_limit_clients}"), 1.0);
    // The load's /24 is the top talker (its address is never shown).
    assert!(get("ntpx_top_talker_requests_per_second{prefix=198.18.0.0/24,rank=1}") > 0.0);
    assert!(!m.keys().any(|k| k.contains("198.18.0.2")), "{m:?}");
    assert_eq!(
        get("ntpx_table_capacity{table=rate_limit_clients}"),
        65536.0
    );
    dashboard_names_served_metrics(&m);
    let out = srv.stop();
    assert!(out.contains("metrics endpoint ready"), "{out}");
}

/// Every query of the Grafana dashboard (`scripts/grafana-ntpx.json`)
/// names only metrics the endpoint serves (`served`: a scrape's samples).
fn dashboard_names_served_metrics(served: &BTreeMap<String, f64>) {
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                            out.push(q.clone())
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }
    let text = include_str!("../scripts/grafana-ntpx.json");
    let dash: serde_json::Value = serde_json::from_str(text).expect("the dashboard is JSON");
    let mut qs = Vec::new();
    queries(&dash, &mut qs);
    let names: std::collections::BTreeSet<&str> =
        served.keys().filter_map(|k| k.split('{').next()).collect();
    let mut used = std::collections::BTreeSet::new();
    for q in &qs {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("ntpx_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            used.insert(&tail[..end]);
            rest = &tail[end..];
        }
    }
    println!("dashboard: {} queries, {} metrics", qs.len(), used.len());
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<_> = used.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}, not served"
    );
}

#[test]
fn the_socket_datapath_serves_metrics_too() {
    let test = "the_socket_datapath_serves_metrics_too";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let mut srv = Server::start_socket(&topo, 2, &["--metrics", "[::1]:9125"]);
    let answered = topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
        sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = 0x23;
        let mut buf = [0u8; 64];
        (0..3)
            .filter(|_| {
                sock.send_to(&req, "198.18.0.1:123").expect("send");
                sock.recv(&mut buf).is_ok()
            })
            .count()
    });
    assert_eq!(answered, 3);
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let doc = settled_stats(&topo, &socket);
    // The client mix is published with the histogram, every half second:
    // scrape until it shows the three requests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let out = loop {
        let out = run_ok(topo.srv_cmd("/usr/bin/python3").args([
            "-c",
            SCRAPE,
            "http://[::1]:9125/metrics",
        ]));
        let shows = out.lines().any(|l| {
            l.strip_prefix("ntpx_packets_by_kind_total{family=ipv4,mode=3,version=4} ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                == Some(3.0)
        });
        if shows || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("{test}: {} lines", out.lines().count());
    let line = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("no {k} in {out}"))
    };
    assert_eq!(
        line("ntpx_path_replies_total{path=socket}"),
        doc["tx"].as_f64().unwrap()
    );
    assert_eq!(line("ntpx_replies_total{}"), 3.0);
    // The kernel stamped each request (SO_TIMESTAMPNS).
    assert_eq!(line("ntpx_replies_by_stamp_total{source=kernel}"), 3.0);
    // The limiter is off (the harness's default), its table empty.
    assert_eq!(line("ntpx_table_entries{table=rate_limit_clients}"), 0.0);
    assert_eq!(
        line("ntpx_packets_by_kind_total{family=ipv4,mode=3,version=4}"),
        3.0
    );
    assert_eq!(line("ntpx_requests_by_poll_total{poll=0}"), 3.0);
    assert_eq!(
        line("ntpx_worker_replies_total{worker=s0}") + line("ntpx_worker_replies_total{worker=s1}"),
        3.0
    );
    assert!(!out.contains("ntpx_xdp_program_events"), "{out}");
    assert!(!out.contains("path=xdp"), "{out}");
    srv.stop();
}

#[test]
fn a_taken_metrics_port_fails_the_start_by_name() {
    let test = "a_taken_metrics_port_fails_the_start_by_name";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let holder = topo.in_srv(|| std::net::TcpListener::bind("127.0.0.1:9124").expect("bind"));
    let out = run_with_timeout(
        topo.srv_cmd(NTPX).args([
            "serve",
            "--iface",
            &topo.srv_if,
            "--clock",
            "local",
            "--no-stats-socket",
            "--metrics",
            "9124",
        ]),
        30,
    );
    drop(holder);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{test}: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("metrics: cannot listen on 127.0.0.1:9124"),
        "{err}"
    );
}
