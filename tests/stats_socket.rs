//! `ntpx stats` against a real `ntpx serve` (socket datapath, in a network
//! namespace joined by a veth to a client namespace, a stats socket in a
//! temp dir): the counters and the service-time histogram it reports match
//! the requests sent, and the socket file is gone after a clean exit.
//!
//! Needs root; under `CI=true` it fails instead of skipping.

mod common;

use common::{NTPX, Server, TempDir, Topology, live_stats, require_root};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A 48-byte NTPv4 client (mode 3) request with `tag` as its transmit time.
fn request(tag: u64) -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23; // LI 0, VN 4, mode 3
    p[40..48].copy_from_slice(&tag.to_be_bytes());
    p
}

fn ntpx_stats(args: &[&str]) -> Output {
    Command::new(NTPX)
        .arg("stats")
        .args(args)
        .output()
        .expect("run ntpx stats")
}

#[test]
fn stats_reads_a_running_server() {
    if !require_root("stats_reads_a_running_server") {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("stats-socket");
    let sock = dir.path().join("s.sock");
    let sock_str = sock.to_str().expect("utf-8 path").to_owned();
    let mut server = Server::start_socket(&topo, 1, &["--stats-socket", &sock_str]);

    // A second server on the same stats socket is refused, and leaves the
    // first one's socket alone.
    let second = topo
        .srv_cmd(NTPX)
        .args(["serve", "--datapath", "socket", "--iface", &topo.srv_if])
        .args(["--port", "1123", "--clock", "local"])
        .args(["--stats-socket", &sock_str, "--duration", "1"])
        .output()
        .expect("run a second ntpx serve");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another ntpx serve is using"), "{err}");

    let client = topo.in_cli(|| UdpSocket::bind("0.0.0.0:0").expect("bind"));
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let target = SocketAddr::from((topo.srv_v4, 123));
    let send = |n: u64| {
        client
            .send_to(&request(0x5eed_0000_0000_0000 | n), target)
            .expect("send");
        let mut buf = [0u8; 128];
        matches!(client.recv_from(&mut buf), Ok((48, _)) if buf[0] & 7 == 4 && buf[24..32] == (0x5eed_0000_0000_0000 | n).to_be_bytes())
    };
    const SENT: u64 = 6;
    let mut answered = 0;
    for n in 0..SENT - 1 {
        answered += u64::from(send(n));
    }
    std::thread::sleep(Duration::from_millis(600));
    answered += u64::from(send(SENT - 1));
    assert_eq!(answered, SENT, "{}", server.output());

    // The counters are published right after each batch is sent; workers
    // hand their histograms over every 500 ms, busy or idle: wait until
    // the stats show them all.
    let t = Instant::now();
    let timed = |doc: &serde_json::Value| {
        doc["service_ns_hist"]
            .as_str()
            .and_then(|h| ntpx::server::stats_socket::decode_histogram(h).ok())
            .map(|h| h.len())
    };
    let doc = loop {
        let doc = live_stats(&topo, &sock);
        if doc["rx"].as_u64() >= Some(SENT)
            && doc["tx"].as_u64() >= Some(answered)
            && timed(&doc) >= Some(answered)
            || t.elapsed() > Duration::from_secs(5)
        {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["datapath"], "socket", "{doc}");
    assert!(doc["uptime_s"].as_f64().is_some_and(|u| u > 0.0), "{doc}");
    let (rx, tx) = (doc["rx"].as_u64().unwrap(), doc["tx"].as_u64().unwrap());
    assert_eq!(rx, SENT, "{doc}");
    assert_eq!(tx, answered, "{doc}");
    let hist =
        ntpx::server::stats_socket::decode_histogram(doc["service_ns_hist"].as_str().unwrap())
            .expect("the histogram decodes");
    assert_eq!(hist.len(), tx, "one service time per reply: {doc}");

    let out = ntpx_stats(&["--socket", &sock_str]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("(socket datapath), up "), "{text}");
    assert!(text.contains(&format!("replies {tx}")), "{text}");
    assert!(
        text.contains(&format!("RX->TX service time ({tx} samples)")),
        "{text}"
    );
    if tx > 0 {
        assert!(text.contains("p99.9"), "{text}");
    }

    let exit = server.stop();
    assert!(exit.contains(&format!("replies {tx}")), "{exit}");
    assert!(!sock.exists(), "the socket file is removed on a clean exit");
    let out = ntpx_stats(&["--socket", &sock_str]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no ntpx serve is listening on {sock_str}")),
        "{err}"
    );
}

#[test]
fn stats_watch_shows_rates_live() {
    let test = "stats_watch_shows_rates_live";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("ntpx-watch");
    let socket = dir.path().join("s.sock");
    let socket_arg = socket.to_string_lossy().into_owned();
    let mut srv = Server::start_socket(&topo, 1, &["--stats-socket", &socket_arg]);
    // Requests at about 200/s while the views are taken (until told).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = std::thread::spawn({
        let ns = topo.cli_ns.clone();
        let stop = stop.clone();
        move || {
            common::in_netns(&ns, || {
                let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
                let to: SocketAddr = "198.18.0.1:123".parse().unwrap();
                let mut tag = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tag += 1;
                    sock.send_to(&request(tag), to).expect("send");
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        }
    });
    let out = ntpx_stats(&["--socket", &socket_arg, "--watch", "0.5", "--count", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{test}:\n{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let views: Vec<&str> = text.split("ntpx serve (socket datapath)").skip(1).collect();
    assert_eq!(views.len(), 3, "{text}");
    for v in &views {
        // "requests   N/s": the rate of the interval, while requests flow.
        let rate: f64 = v
            .split("requests")
            .nth(1)
            .and_then(|r| r.split("/s").next())
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no request rate in {v}"));
        assert!(rate > 20.0, "{v}");
        assert!(v.contains("RX->TX service time"), "{v}");
    }
    // --json: one document per line.
    let out = ntpx_stats(&[
        "--socket",
        &socket_arg,
        "--watch",
        "0.2",
        "--count",
        "2",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 2, "{text}");
    assert!(docs[1]["rx"].as_u64() >= docs[0]["rx"].as_u64());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    srv.stop();
}
