//! Maintenance without a restart (`ntpx drain on|off`), end to end on each
//! path (replies in XDP, AF_XDP workers, the socket datapath): a server in
//! service answers; `ntpx drain on` makes its replies say LI 3, stratum 0;
//! `--mode stop` silences it, every request counted as `draining`; `ntpx
//! drain off` puts it back. The time each change took to show in replies is
//! printed (the server looks at its drain file four times a second).
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// One request from the client; the reply's (LI, stratum), if any came.
fn query(topo: &Topology) -> Option<(u8, u8)> {
    topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = 0x23;
        req[40..48].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        sock.send_to(&req, "198.18.0.1:123").expect("send");
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).ok()?;
        assert_eq!(n, 48);
        assert_eq!(&buf[24..32], &req[40..48], "origin echoed");
        Some((buf[0] >> 6, buf[1]))
    })
}

/// Queries until the reply is `want`, for at most 5 s; how long it took.
fn until(topo: &Topology, want: Option<(u8, u8)>) -> Duration {
    let start = Instant::now();
    loop {
        let got = query(topo);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {got:?}, want {want:?}"
        );
    }
}

fn drain(file: &str, args: &[&str]) {
    run_ok(
        Command::new(NTPX)
            .arg("drain")
            .args(args)
            .args(["--file", file]),
    );
}

fn check(test: &str, extra: &[&str], socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let file = std::env::temp_dir()
        .join(format!("ntpx-drain-{}", topo.name))
        .to_string_lossy()
        .into_owned();
    let _ = std::fs::remove_file(&file);
    let mut args = vec!["--drain-file", file.as_str()];
    args.extend_from_slice(extra);
    let mut srv = if socket_datapath {
        Server::start_socket(&topo, 1, &args)
    } else {
        args.extend_from_slice(&["--iface", &topo.srv_if]);
        Server::start(&topo, &args)
    };
    assert_eq!(query(&topo), Some((0, 1)), "in service");

    drain(&file, &["on"]);
    let t = until(&topo, Some((3, 0)));
    println!("{test}: drain on (unsync): LI 3, stratum 0 after {t:?}");

    drain(&file, &["on", "--mode", "stop"]);
    let t = until(&topo, None);
    println!("{test}: drain on --mode stop: silent after {t:?}");
    for _ in 0..5 {
        assert_eq!(query(&topo), None);
    }
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let doc = settled_stats(&topo, &socket);
    let drained = drops_of(&doc).get("draining").copied().unwrap_or(0);
    assert!(drained >= 6, "{doc}");

    drain(&file, &["off"]);
    let t = until(&topo, Some((0, 1)));
    println!("{test}: drain off: in service after {t:?}");
    assert!(!std::path::Path::new(&file).exists());
    let out = srv.stop();
    assert!(out.contains("draining: replies say LI 3"), "{out}");
    assert!(out.contains("drain off: back in service"), "{out}");
}

#[test]
fn xdp_replies_drain() {
    check("xdp_replies_drain", &["--replies", "xdp"], false);
}

#[test]
fn workers_drain() {
    check("workers_drain", &["--replies", "workers"], false);
}

#[test]
fn the_socket_datapath_drains() {
    check("the_socket_datapath_drains", &[], true);
}

#[test]
fn drain_on_needs_a_mode_that_drains() {
    let out = run_with_timeout(
        Command::new(NTPX).args(["drain", "on", "--mode", "off", "--file", "/nonexistent/x"]),
        10,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--mode is unsync or stop"), "{err}");
}

#[test]
fn a_server_started_with_the_drain_file_there_starts_drained() {
    let test = "a_server_started_with_the_drain_file_there_starts_drained";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let file = std::env::temp_dir()
        .join(format!("ntpx-drain-{}", topo.name))
        .to_string_lossy()
        .into_owned();
    drain(&file, &["on", "--mode", "stop"]);
    let mut srv = Server::start(&topo, &["--drain-file", &file, "--iface", &topo.srv_if]);
    // From its very first request on.
    assert_eq!(query(&topo), None, "silent from the start");
    drain(&file, &["off"]);
    let t = until(&topo, Some((0, 1)));
    println!("{test}: in service {t:?} after drain off");
    let out = srv.stop();
    assert!(out.contains("starting drained"), "{out}");
}
