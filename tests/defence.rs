//! Rate limiting end to end, with the default limits, on each of the three
//! paths (replies in XDP, AF_XDP workers, the socket datapath), over a
//! veth between two throwaway namespaces, driven by `ntpx load` (which
//! rotates its source port with every request):
//!
//! - a flood aimed at one victim, 10,000 requests/s: the victim receives
//!   its burst, 64/s, and about one in four of the rest (the leak); a few
//!   well-formed KoD RATE (the generator validates them: mode, version,
//!   origin echo), at most about one a second; one limited client, whatever
//!   the ports; every request accounted for by the server's counters;
//! - a NAT of well-behaved clients behind one address (40 requests/s, more
//!   than 2,000 clients polling every 64 s): every request answered.
//!
//! Then kill -9 of a server under load: its XDP program goes with it,
//! the kernel's port 123 (a chronyd) answers, and a restart brings the
//! bypass back.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::time::Duration;

fn socket_of(topo: &Topology) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name))
}

/// Turns the per-client limit on with its defaults (the test harness turns
/// it off unless a `--rate-` flag is given).
const DEFAULTS: [&str; 2] = ["--rate-burst", "256"];

fn flood_and_nat(test: &str, extra: &[&str]) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let mut args = vec!["--iface", topo.srv_if.as_str()];
    args.extend_from_slice(&DEFAULTS);
    args.extend_from_slice(extra);
    let mut srv = Server::start(&topo, &args);

    // The NAT: 40 requests/s from one address for 5 s, all answered.
    let s = ntpx_load(&topo, "198.18.0.1", &["--rate", "40", "--duration", "5s"]);
    let t = &s.total;
    println!(
        "{test}: NAT at 40/s: sent {} good {} kod {} lost {}",
        t.sent, t.good, t.kod, t.lost
    );
    assert!(t.sent >= 150, "{t:?}");
    assert_eq!(
        (t.good, t.kod, t.lost, t.invalid),
        (t.sent, 0, 0, 0),
        "{t:?}"
    );
    let before = settled_stats(&topo, &socket_of(&topo));
    assert_eq!(before["policy"]["limited"], 0, "{}", before["policy"]);

    // The flood at a victim (the same address, ports rotating): after
    // its burst, 64/s and one in four of the rest.
    let s = ntpx_load(&topo, "198.18.0.1", &["--rate", "10k", "--duration", "3s"]);
    let t = &s.total;
    let doc = settled_stats(&topo, &socket_of(&topo));
    let p = &doc["policy"];
    let secs = t.seconds;
    let within = 256.0 + 64.0 * secs;
    let expected = within + (t.sent as f64 - within) / 4.0;
    println!(
        "{test}: flood at 10k/s for {secs:.1} s: sent {} good {} ({:.1} % of sent; \
         expected about {expected:.0}) kod {} lost {}; server: {p}",
        t.sent,
        t.good,
        100.0 * t.good as f64 / t.sent as f64,
        t.kod,
        t.lost
    );
    let stopped = srv.stop();
    assert_eq!(t.invalid, 0, "every reply well formed: {t:?}");
    assert!(
        (0.8 * expected..=1.25 * expected).contains(&(t.good as f64)),
        "the victim got {} replies, about {expected:.0} expected",
        t.good
    );
    assert!(
        t.kod >= 1 && t.kod as f64 <= secs + 2.0,
        "KoD RATE: some, at most one a second: {}",
        t.kod
    );
    assert_eq!(
        p["limited_clients"], 1,
        "one client whatever its ports: {p}"
    );
    assert_eq!(p["speedups"], 0, "{p}");
    assert_eq!(p["kod_rate"].as_u64(), Some(t.kod), "{p}");
    let n = |k: &str| doc[k].as_u64().unwrap_or(0);
    assert_eq!(
        n("rx"),
        n("tx") + n("dropped"),
        "every request accounted: {doc}"
    );
    let limited = doc["drops"]["rate_limited"].as_u64().unwrap_or(0);
    assert_eq!(
        limited, t.lost,
        "each lost request counted as rate_limited: {doc}\n{stopped}"
    );
    assert!(stopped.contains("rate limited:"), "{stopped}");
}

#[test]
fn xdp_replies_limit_a_flood_and_spare_a_nat() {
    flood_and_nat(
        "xdp_replies_limit_a_flood_and_spare_a_nat",
        &["--replies", "xdp"],
    );
}

#[test]
fn workers_limit_a_flood_and_spare_a_nat() {
    flood_and_nat(
        "workers_limit_a_flood_and_spare_a_nat",
        &["--replies", "workers"],
    );
}

#[test]
fn socket_datapath_limits_a_flood_and_spares_a_nat() {
    flood_and_nat(
        "socket_datapath_limits_a_flood_and_spares_a_nat",
        &["--datapath", "socket", "--workers", "1"],
    );
}

/// kill -9 under a stream of requests: the program goes with the process
/// (a BPF link), chronyd on the kernel's port 123 answers, and a restart
/// brings ntpx back. Reports both times.
#[test]
fn kill_9_falls_back_to_the_kernel_and_a_restart_restores_the_bypass() {
    let test = "kill_9_falls_back_to_the_kernel_and_a_restart_restores_the_bypass";
    if !require_root(test) || !require_tool(test, "chronyd") {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let dir = TempDir::new("ntpx-kill9");
    let chronyd = Chronyd::start(
        topo.srv_cmd("chronyd"),
        &dir.path().join("chronyd"),
        "local stratum 3\nallow all\nport 123",
    );
    let srv_args = ["--iface", topo.srv_if.as_str()];
    let srv = Server::start(&topo, &srv_args);
    let prober = topo
        .cli_cmd("python3")
        .args(["-c", PROBER, &topo.srv_v4.to_string(), "9"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the prober");
    let now = unix_now;
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = now();
    srv.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(2));
    let restarted_at = now();
    let mut again = Server::start(&topo, &srv_args);
    let out = prober.wait_with_output().expect("the prober");
    let _ = again.stop();
    drop(chronyd);
    let replies = probe_replies(&out.stdout);
    let (before, fallback, back) = fallback_times(&replies, (1, 3), killed_at, restarted_at);
    println!(
        "{test}: {} replies; {before} from ntpx before the kill; chronyd answered {:?} ms \
         after kill -9; ntpx again {:?} ms after the restart began",
        replies.len(),
        fallback.map(|s| (s * 1e3).round()),
        back.map(|s| (s * 1e3).round())
    );
    assert!(before > 100, "ntpx (stratum 1) answered before the kill");
    let fallback = fallback.expect("chronyd answered after the kill");
    assert!(
        fallback < 2.0,
        "the kernel took over within 2 s: {fallback} s"
    );
    let back = back.expect("ntpx answered again after the restart");
    assert!(back < 10.0, "{back} s");
}
