//! Overload, live: a burst of valid requests far beyond what the server's
//! rings or socket buffer hold, sent while the server is stopped
//! (SIGSTOP), so that the kernel must drop most of it. Whatever the kernel
//! drops before a worker sees it must show, while
//! the server runs, in `ntpx stats` and in the periodic stats line, as
//! requests and under a reason: requests = replies + drops, and on the XDP
//! datapath requests = what the XDP program took.
//!
//! Needs root; under `CI=true` these tests fail instead of skipping.

mod common;

use common::*;
use etherparse::PacketBuilder;
use std::time::Duration;

const BURST: usize = 40_000;

fn request_frames(topo: &Topology) -> Vec<Vec<u8>> {
    let (srv, cli) = (topo.mac("srv"), topo.mac("cli"));
    (0..BURST)
        .map(|i| {
            let mut ntp = [0u8; 48];
            ntp[0] = 0x23;
            ntp[40..48].copy_from_slice(&(0x6f76_6572_0000_0000u64 | i as u64).to_be_bytes());
            let mut f = Vec::new();
            PacketBuilder::ethernet2(cli, srv)
                .ipv4(topo.cli_v4.octets(), topo.srv_v4.octets(), 64)
                .udp(20000 + (i % 40_000) as u16, 123)
                .write(&mut f, &ntp)
                .expect("build");
            f
        })
        .collect()
}

/// `name=N` from the exit summary's `XDP program:` line.
fn program_counter(out: &str, name: &str) -> u64 {
    out.lines()
        .filter(|l| l.starts_with("XDP program:"))
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends the burst while the server is stopped, then lets it go on.
fn burst(topo: &Topology, server: &Server) -> usize {
    let link = RawLink::open(topo);
    let frames = request_frames(topo);
    server.signal(libc::SIGSTOP);
    let sent = link.send_burst(&frames);
    server.signal(libc::SIGCONT);
    sent
}

fn run(test: &str, socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("ntpx-overload");
    let sock = dir.path().join("stats.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let mut args = vec![
        "--iface",
        topo.srv_if.as_str(),
        "--stats-socket",
        &sock_arg,
        "--stats-interval",
        "1",
    ];
    if socket_datapath {
        args.extend(["--datapath", "socket", "--workers", "1"]);
    } else {
        peer_pass(&topo);
        // The AF_XDP rings are what overflows here: replies in XDP would
        // answer everything while the process is stopped.
        args.extend([
            "--replies",
            "workers",
            "--xdp-mode",
            "native",
            "--ring-size",
            "64",
            "--frames",
            "128",
        ]);
    }
    let mut server = Server::start(&topo, &args);
    let sent = burst(&topo, &server);
    let doc = settled_stats(&topo, &sock);
    // One more stats line after the burst.
    std::thread::sleep(Duration::from_millis(1500));
    let out = server.stop();
    let d = drops_of(&doc);
    let (rx, tx, dropped) = (
        doc["rx"].as_u64().unwrap_or(0),
        doc["tx"].as_u64().unwrap_or(0),
        doc["dropped"].as_u64().unwrap_or(0),
    );
    let report = format!("sent {sent}, live {doc}\n--- server ---\n{out}");
    assert_eq!(rx, tx + dropped, "requests = replies + drops: {report}");
    assert_eq!(d.values().sum::<u64>(), dropped, "{report}");
    let kernel_reasons: &[&str] = if socket_datapath {
        &["socket_kernel_drop"]
    } else {
        &["rx_ring_full", "xsk_rx_dropped"]
    };
    let kernel_drops: u64 = kernel_reasons.iter().filter_map(|r| d.get(*r)).sum();
    assert!(
        kernel_drops > 0,
        "the burst must overflow the server (else this test proves nothing): {report}"
    );
    // The periodic stats line shows them too.
    assert!(
        out.lines().any(|l| l.contains("| total rx")
            && kernel_reasons.iter().any(|r| l.contains(&format!("{r}=")))),
        "no stats line names {kernel_reasons:?}: {report}"
    );
    if !socket_datapath {
        // Everything the XDP program took is a request, once.
        let took = program_counter(&out, "redirected")
            + [
                "drop_short",
                "drop_mode",
                "drop_version",
                "drop_src_port_zero",
            ]
            .iter()
            .map(|c| program_counter(&out, c))
            .sum::<u64>();
        assert_eq!(rx, took, "requests = what XDP took: {report}");
    }
}

#[test]
fn xdp_ring_drops_are_counted_live() {
    run("xdp_ring_drops_are_counted_live", false);
}

#[test]
fn socket_kernel_drops_are_counted_live() {
    run("socket_kernel_drops_are_counted_live", true);
}

/// Seconds of each run from many sources: 10 (`scripts/test`), or
/// `NTPX_OVERLOAD_SECS` (`scripts/test --long` sets 60).
fn overload_secs() -> u64 {
    std::env::var("NTPX_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| (1..=3600).contains(&s))
        .unwrap_or(10)
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The generator at its highest rate from 65,534 random source addresses
/// (more clients than the rate limiter's table holds by default), with
/// the default limits: no crash, memory flat, and every request the server
/// took accounted for (requests = replies + counted drops).
fn many_sources(test: &str, extra: &[&str]) {
    if !require_root(test) {
        return;
    }
    let secs = overload_secs();
    let topo = Topology::up();
    // The kernel (socket datapath) routes replies to the sources through
    // the generator's address; ntpx's XDP paths answer in place.
    run_ok(
        topo.srv_cmd("ip")
            .args(["route", "add", "198.19.0.0/16", "via"])
            .arg(topo.cli_v4.to_string()),
    );
    let dir = TempDir::new("ntpx-many");
    let sock = dir.path().join("stats.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let mut args = vec![
        "--iface",
        topo.srv_if.as_str(),
        "--stats-socket",
        &sock_arg,
        "--rate-burst",
        "256",
    ];
    args.extend_from_slice(extra);
    let mut server = Server::start(&topo, &args);
    let pid = server.pid().expect("running");
    let duration = format!("{secs}s");
    let generator = {
        let mut cmd = topo.cli_cmd(NTPX);
        cmd.args([
            "load",
            "198.18.0.1",
            "--iface",
            &topo.cli_if,
            "--json",
            "--quiet",
        ])
        .args(["--cpus", "0", "--rate", "2M", "--duration", &duration])
        .args(["--sources", "198.19.0.0/16", "--timeout", "200ms"])
        .stdout(std::process::Stdio::piped());
        cmd.spawn().expect("spawn ntpx load")
    };
    // Memory once the run is under way, and at its end.
    std::thread::sleep(Duration::from_secs(secs.div_ceil(4).max(2)));
    let early = rss(pid);
    let out = generator.wait_with_output().expect("ntpx load");
    let late = rss(pid);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ntpx load --json");
    let doc = settled_stats(&topo, &sock);
    let stopped = server.stop();
    let t = &summary["total"];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let (rx, tx, dropped) = (n(&doc, "rx"), n(&doc, "tx"), n(&doc, "dropped"));
    println!(
        "{test}: {secs} s at the generator's highest rate from 65,534 sources: sent {} ({:.0}/s), \
         the server took {rx}: replies {tx}, drops {dropped} {}; the generator got {} good, {} KoD; \
         policy {}; memory {} -> {} MiB",
        n(t, "sent"),
        t["sent_rate"].as_f64().unwrap_or(0.0),
        doc["drops"],
        n(t, "good"),
        n(t, "kod"),
        doc["policy"],
        early >> 20,
        late >> 20
    );
    assert!(out.status.success(), "ntpx load failed");
    assert!(
        stopped.contains("requests "),
        "the server ran to the end: {stopped}"
    );
    assert_eq!(rx, tx + dropped, "requests = replies + drops: {doc}");
    assert_eq!(drops_of(&doc).values().sum::<u64>(), dropped, "{doc}");
    assert!(
        rx > 0 && rx <= n(t, "sent") + 16,
        "the server took what was sent: {doc}"
    );
    assert!(n(t, "good") + n(t, "kod") <= tx, "no reply from nowhere");
    assert!(
        late <= early + (16 << 20),
        "memory grew from {early} to {late} bytes"
    );
    // More clients than the table holds: it evicted and never grew.
    assert!(doc["policy"]["entered"].as_u64().unwrap_or(0) > 0, "{doc}");
}

#[test]
fn many_sources_replies_in_xdp() {
    many_sources("many_sources_replies_in_xdp", &["--replies", "xdp"]);
}

#[test]
fn many_sources_af_xdp_workers() {
    many_sources("many_sources_af_xdp_workers", &["--replies", "workers"]);
}

#[test]
fn many_sources_socket_datapath() {
    many_sources(
        "many_sources_socket_datapath",
        &["--datapath", "socket", "--workers", "1"],
    );
}
