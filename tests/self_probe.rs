//! The self-probe (`[server] self_probe`), end to end on each path
//! (replies in XDP, AF_XDP workers, the socket datapath): a server probing
//! itself every 0.2 s reports answers whose time is its host's (the offset
//! within half the round trip, which any reply from a clock equal to the
//! host's must be), with the LI and stratum its replies carry, no
//! failures, in `ntpx stats` and to `ntpx health`, with an allow list that
//! only the clients' network passes (the probe is no client).
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn check(test: &str, extra: &[&str], socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    // Only the clients' network is allowed: the probe is no client, and
    // passes the policy all the same.
    let mut args = vec![
        "--self-probe",
        "0.2",
        "--allow",
        "198.18.0.0/24",
        "--access-action",
        "ignore",
    ];
    args.extend_from_slice(extra);
    let mut srv = if socket_datapath {
        Server::start_socket(&topo, 1, &args)
    } else {
        args.extend_from_slice(&["--iface", &topo.srv_if]);
        Server::start(&topo, &args)
    };
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = loop {
        let doc = live_stats(&topo, &socket);
        let p = doc["state"]["probe"].clone();
        if p["probes"].as_u64().unwrap_or(0) >= 5 || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("{test}: {probe}");
    if probe.is_null() {
        panic!("no probe in the stats:\n{}", srv.stop());
    }
    assert!(probe["probes"].as_u64().unwrap() >= 5, "{probe}");
    assert_eq!(probe["failures"], 0, "{probe}");
    assert_eq!(probe["error"], serde_json::Value::Null, "{probe}");
    let (offset, delay) = (
        probe["offset_s"].as_f64().unwrap(),
        probe["delay_s"].as_f64().unwrap(),
    );
    // T1 ≤ T2 ≤ T3 ≤ T4 on one clock: |offset| ≤ delay / 2 (plus the
    // NTP fraction's rounding).
    assert!(delay >= 0.0, "{probe}");
    assert!(offset.abs() <= delay / 2.0 + 1e-6, "{probe}");
    assert_eq!(
        (probe["leap"].as_u64(), probe["stratum"].as_u64()),
        (Some(0), Some(1))
    );

    let out = run_with_timeout(
        Command::new(NTPX).args(["health", "--socket", &socket.to_string_lossy()]),
        10,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = run_with_timeout(
        Command::new(NTPX).args(["stats", "--socket", &socket.to_string_lossy()]),
        10,
    );
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("self-probe: offset"), "{text}");
    srv.stop();
}

#[test]
fn xdp_replies_probe_themselves() {
    check("xdp_replies_probe_themselves", &["--replies", "xdp"], false);
}

#[test]
fn workers_probe_themselves() {
    check("workers_probe_themselves", &["--replies", "workers"], false);
}

#[test]
fn the_socket_datapath_probes_itself() {
    check("the_socket_datapath_probes_itself", &[], true);
}

/// `ntpx health`'s verdict: None when healthy, else what it said.
fn health(socket: &std::path::Path) -> Option<String> {
    let out = run_with_timeout(
        Command::new(NTPX).args(["health", "--socket", &socket.to_string_lossy()]),
        10,
    );
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Polls `ntpx health` until `pred` holds of its verdict (for at most
/// 15 s); the last verdict.
fn health_until(
    socket: &std::path::Path,
    pred: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let h = health(socket);
        if pred(&h) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A socket worker frozen (the cgroup v1 freezer): its probe goes
/// unanswered, and `ntpx health` says so (the control thread, which still
/// turns, keeps the state fresh: only the probe can tell); thawed, the
/// server is healthy again.
#[test]
fn a_frozen_worker_fails_the_probe_and_the_health_check() {
    let test = "a_frozen_worker_fails_the_probe_and_the_health_check";
    if !require_root(test) || !require_freezer(test) {
        return;
    }
    let topo = Topology::up();
    let mut srv = Server::start_socket(&topo, 1, &["--self-probe", "0.2"]);
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    assert_eq!(
        health_until(&socket, Option::is_none),
        None,
        "healthy at first"
    );
    let pid = srv.pid().expect("the server runs");
    let tid = thread_named(pid, "ntpx-s0").expect("the socket worker");
    let frozen = Frozen::new(&format!("ntpx-{}", topo.name), &tid);
    let sick = health_until(&socket, Option::is_some);
    println!("{test}: frozen: {sick:?}");
    let sick = sick.expect("unhealthy while the worker is frozen");
    assert!(
        sick.contains("self-probe") && sick.contains("no reply"),
        "{sick}"
    );
    frozen.thaw();
    drop(frozen);
    let well = health_until(&socket, Option::is_none);
    assert_eq!(well, None, "healthy again after the thaw");
    let doc = live_stats(&topo, &socket);
    let probe = &doc["state"]["probe"];
    println!("{test}: thawed: {probe}");
    assert!(probe["failures"].as_u64().unwrap() > 0, "{probe}");
    srv.stop();
}
