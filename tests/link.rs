//! The interface under a running server: the link going down and up again,
//! its RX queue count changing (`ethtool -L`), and the interface
//! disappearing. Each is survived, or ends the server with a clear
//! message; none leaves it hung.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Whether the server answers one request within 300 ms.
fn answers(topo: &Topology) -> bool {
    topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = 0x23;
        sock.send_to(&req, "198.18.0.1:123").is_ok() && sock.recv(&mut [0u8; 64]).is_ok()
    })
}

/// Queries until the server answers, for at most `secs`; how long it took.
fn until_answered(topo: &Topology, secs: u64) -> Duration {
    let start = Instant::now();
    while !answers(topo) {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "no answer for {secs} s"
        );
    }
    start.elapsed()
}

#[test]
fn link_down_and_up_and_queue_count_changes_are_survived() {
    let test = "link_down_and_up_and_queue_count_changes_are_survived";
    if !require_root(test) {
        return;
    }
    // Four RX queues on the server's end; ntpx serves queue 0, where the
    // client's single queue sends.
    let topo = Topology::up_with_queues(4);
    peer_pass(&topo);
    let mut srv = Server::start(&topo, &["--iface", &topo.srv_if, "--queues", "0"]);
    assert!(answers(&topo));

    run_ok(
        topo.srv_cmd("ip")
            .args(["link", "set", &topo.srv_if, "down"]),
    );
    assert!(!answers(&topo), "a link that is down carries nothing");
    run_ok(topo.srv_cmd("ip").args(["link", "set", &topo.srv_if, "up"]));
    let back = until_answered(&topo, 10);
    println!("{test}: answered again {back:?} after the link came up");

    run_ok(
        topo.srv_cmd("ethtool")
            .args(["-L", &topo.srv_if, "rx", "2", "tx", "2"]),
    );
    let said = Instant::now();
    while !srv.output().contains("RX queue count changed") {
        assert!(
            said.elapsed() < Duration::from_secs(5),
            "no word of the new queue count:\n{}",
            srv.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answers(&topo), "still serving on queue 0");
    let out = srv.stop();
    assert!(out.contains("was=4") && out.contains("now=2"), "{out}");
}

#[test]
fn an_interface_that_disappears_ends_the_server_with_a_message() {
    let test = "an_interface_that_disappears_ends_the_server_with_a_message";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let mut srv = Server::start(&topo, &["--iface", &topo.srv_if]);
    assert!(answers(&topo));
    let gone = Instant::now();
    run_ok(topo.srv_cmd("ip").args(["link", "del", &topo.srv_if]));
    let code = srv.wait_exit(10);
    println!(
        "{test}: exited with {code:?} {:?} after the interface went",
        gone.elapsed()
    );
    assert_eq!(code, Some(1), "{}", srv.output());
    let out = srv.output();
    assert!(
        out.contains("disappeared: the XDP program went with it"),
        "{out}"
    );
}
