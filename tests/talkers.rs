//! Top talkers (sampled, by prefix) end to end on both datapaths: a load
//! of 3,000 requests from the client's address shows as the top talker,
//! its /24, in `ntpx stats` (text and JSON) and with a rate; no address
//! of a single client appears anywhere.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn check(test: &str, socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let mut srv = if socket_datapath {
        Server::start_socket(&topo, 1, &[])
    } else {
        Server::start(&topo, &["--iface", &topo.srv_if])
    };
    let s = ntpx_load(
        &topo,
        "198.18.0.1",
        &["--datapath", "socket", "--rate", "1500", "--duration", "2s"],
    );
    assert!(s.total.good > 2000, "{:?}", s.total);
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    // Shown anew every second.
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let doc = live_stats(&topo, &socket);
        if doc["talkers"].as_array().is_some_and(|a| !a.is_empty()) || Instant::now() > deadline {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let top = &doc["talkers"];
    println!("{test}: {top}");
    assert_eq!(top[0]["prefix"], "198.18.0.0/24", "{top}");
    assert!(top[0]["rate"].as_f64().unwrap() > 0.0, "{top}");
    assert!(top[0]["share"].as_f64().unwrap() > 0.5, "{top}");
    let text = run_with_timeout(
        Command::new(NTPX).args(["stats", "--socket", &socket.to_string_lossy()]),
        10,
    );
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("top talkers (sampled): 198.18.0.0/24"),
        "{text}"
    );
    assert!(!text.contains("198.18.0.2"), "no client address: {text}");
    srv.stop();
}

#[test]
fn xdp_datapath_top_talkers() {
    check("xdp_datapath_top_talkers", false);
}

#[test]
fn socket_datapath_top_talkers() {
    check("socket_datapath_top_talkers", true);
}
