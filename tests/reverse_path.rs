//! The reverse-path check (`[access] reverse_path`) end to end, over a
//! veth between two throwaway namespaces, on both XDP paths (replies in
//! XDP and AF_XDP workers), against routes the kernel holds:
//!
//! | the client's source       | server's route back                  | off | loose | strict |
//! |---------------------------|--------------------------------------|-----|-------|--------|
//! | 198.18.0.2, 2001:db8::2   | the link it came in on               | yes | yes   | yes    |
//! | 10.5.0.5, 2001:db8:5::5   | a macvlan on that link               | yes | yes   | yes    |
//! | 10.4.0.5, 2001:db8:4::5   | that link, by a rule `from` our address (the main table: another interface) | yes | yes | yes |
//! | 10.9.0.5, 2001:db8:9::5   | another interface                    | yes | yes   | no     |
//! | 10.7.0.5, 2001:db8:7::5   | `unreachable`                        | yes | no    | no     |
//! | 10.3.0.5                  | `blackhole`                          | yes | no    | no     |
//! | 2001:db8:2::5             | `prohibit`                           | yes | no    | no     |
//! | 10.6.0.5, 2001:db8:6::5   | none (no default route)              | yes | no    | no     |
//!
//! Every request left unanswered is counted under `reverse_path`. A
//! default route added while the server runs (the usual shape of a
//! server's table) is followed at once; a link-local source passes; when
//! the lookups fail (forwarding on lo turned off under the server) the
//! requests pass, counted `rp_unchecked`. A start with the check on but
//! without forwarding on lo fails with a message that names the sysctl.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The sources, the route the server holds back to each, and whether
/// (loose, strict) answer them.
const SOURCES: [(&str, &str, bool, bool); 14] = [
    ("198.18.0.2", "the ingress link", true, true),
    ("2001:db8::2", "the ingress link", true, true),
    ("10.5.0.5", "a macvlan on the ingress link", true, true),
    ("2001:db8:5::5", "a macvlan on the ingress link", true, true),
    (
        "10.4.0.5",
        "the ingress link, by a rule from our address",
        true,
        true,
    ),
    (
        "2001:db8:4::5",
        "the ingress link, by a rule from our address",
        true,
        true,
    ),
    ("10.9.0.5", "another interface", true, false),
    ("2001:db8:9::5", "another interface", true, false),
    ("10.7.0.5", "unreachable", false, false),
    ("2001:db8:7::5", "unreachable", false, false),
    ("10.3.0.5", "blackhole", false, false),
    ("2001:db8:2::5", "prohibit", false, false),
    ("10.6.0.5", "none", false, false),
    ("2001:db8:6::5", "none", false, false),
];

/// Requests sent from each source.
const TRIES: usize = 3;

/// The routes and addresses of the table above, and forwarding on lo in
/// the server's namespace as `lo_forwarding` says (set either way: a new
/// namespace takes lo's from the host's defaults, which may forward).
fn routes(topo: &Topology, lo_forwarding: bool) {
    let other = format!("nx-{}-o", topo.name);
    let peer = format!("nx-{}-p", topo.name);
    let macvlan = format!("nx-{}-m", topo.name);
    let srv = |args: &[&str]| {
        run_ok(topo.srv_cmd("ip").args(args));
    };
    srv(&["link", "add", &other, "type", "veth", "peer", "name", &peer]);
    srv(&["link", "set", &other, "up"]);
    srv(&["link", "set", &peer, "up"]);
    srv(&[
        "link",
        "add",
        "link",
        &topo.srv_if,
        "name",
        &macvlan,
        "type",
        "macvlan",
    ]);
    srv(&["link", "set", &macvlan, "up"]);
    srv(&["route", "add", "10.9.0.0/24", "dev", &other]);
    srv(&["-6", "route", "add", "2001:db8:9::/64", "dev", &other]);
    srv(&["route", "add", "10.5.0.0/24", "dev", &macvlan]);
    srv(&["-6", "route", "add", "2001:db8:5::/64", "dev", &macvlan]);
    // The main table says another interface; a rule for replies from our
    // address says the ingress link.
    srv(&["route", "add", "10.4.0.0/24", "dev", &other]);
    srv(&["-6", "route", "add", "2001:db8:4::/64", "dev", &other]);
    srv(&[
        "route",
        "add",
        "10.4.0.0/24",
        "dev",
        &topo.srv_if,
        "table",
        "100",
    ]);
    srv(&[
        "-6",
        "route",
        "add",
        "2001:db8:4::/64",
        "dev",
        &topo.srv_if,
        "table",
        "100",
    ]);
    srv(&["rule", "add", "from", "198.18.0.1", "lookup", "100"]);
    srv(&["-6", "rule", "add", "from", "2001:db8::1", "lookup", "100"]);
    srv(&["route", "add", "unreachable", "10.7.0.0/24"]);
    srv(&["-6", "route", "add", "unreachable", "2001:db8:7::/64"]);
    srv(&["route", "add", "blackhole", "10.3.0.0/24"]);
    srv(&["-6", "route", "add", "prohibit", "2001:db8:2::/64"]);
    let on = if lo_forwarding { "1" } else { "0" };
    run_ok(topo.srv_cmd("sysctl").args([
        "-q".to_owned(),
        "-w".to_owned(),
        format!("net.ipv4.conf.lo.forwarding={on}"),
        format!("net.ipv6.conf.lo.forwarding={on}"),
    ]));
    for (src, ..) in &SOURCES[2..] {
        let (family, len) = if src.contains(':') {
            ("-6", "128")
        } else {
            ("-4", "32")
        };
        let addr = format!("{src}/{len}");
        let mut args = vec![
            family,
            "addr",
            "add",
            addr.as_str(),
            "dev",
            topo.cli_if.as_str(),
        ];
        if family == "-6" {
            args.push("nodad");
        }
        run_ok(topo.cli_cmd("ip").args(&args));
    }
}

/// Replies to `TRIES` requests sent from `src` to the server.
fn answered(topo: &Topology, src: &str) -> usize {
    let src: IpAddr = src.parse().expect("address");
    let dst: IpAddr = if src.is_ipv4() {
        topo.srv_v4.into()
    } else {
        topo.srv_v6.into()
    };
    topo.in_cli(|| {
        let mut from = SocketAddr::new(src, 0);
        if let SocketAddr::V6(a) = &mut from
            && a.ip().is_unicast_link_local()
        {
            let ifindex = nix::net::if_::if_nametoindex(topo.cli_if.as_str()).expect("ifindex");
            a.set_scope_id(ifindex);
        }
        let sock = UdpSocket::bind(from).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = 0x23; // LI 0, version 4, mode 3
        let mut got = 0;
        let mut buf = [0u8; 128];
        for i in 0..TRIES {
            req[47] = i as u8; // a transmit timestamp of its own
            sock.send_to(&req, SocketAddr::new(dst, 123)).expect("send");
            if let Ok(n) = sock.recv(&mut buf) {
                assert_eq!(n, 48);
                assert_eq!(buf[0] & 7, 4, "mode 4");
                got += 1;
            }
        }
        got
    })
}

fn check(test: &str, mode: &str, replies: &str) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    routes(&topo, true);
    peer_pass(&topo);
    let mut srv = Server::start(
        &topo,
        &[
            "--iface",
            &topo.srv_if,
            "--replies",
            replies,
            "--reverse-path",
            mode,
        ],
    );
    let mut refused = 0;
    for (src, route, loose, strict) in SOURCES {
        let want = match mode {
            "off" => true,
            "loose" => loose,
            _ => strict,
        };
        let got = answered(&topo, src);
        println!("{test}: from {src} (route back: {route}): {got} of {TRIES} answered");
        assert_eq!(got, if want { TRIES } else { 0 }, "{src}, {mode}");
        refused += if want { 0 } else { TRIES };
    }
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let stats = settled_stats(&topo, &socket);
    let drops = drops_of(&stats);
    assert_eq!(
        drops.get("reverse_path").copied().unwrap_or(0),
        refused as u64,
        "{drops:?}"
    );
    assert_eq!(stats["policy"]["rp_unchecked"], 0, "{}", stats["policy"]);

    if mode != "off" {
        // The check reads the routing table as it is now: a default route
        // through the ingress link (a server's usual table), and sources
        // with no route of their own are answered.
        run_ok(
            topo.srv_cmd("ip")
                .args(["route", "add", "default", "via", "198.18.0.2"]),
        );
        run_ok(
            topo.srv_cmd("ip")
                .args(["-6", "route", "add", "default", "via", "2001:db8::2"]),
        );
        assert_eq!(
            answered(&topo, "10.6.0.5"),
            TRIES,
            "a default route added live"
        );
        assert_eq!(
            answered(&topo, "2001:db8:6::5"),
            TRIES,
            "a default route added live"
        );

        // A link-local source is on the link by definition: answered.
        let ip = run_ok(topo.cli_cmd("ip").args([
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            &topo.cli_if,
            "scope",
            "link",
        ]));
        let link_local = ip
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .expect("the client's link-local address")
            .to_owned();
        assert_eq!(answered(&topo, &link_local), TRIES, "from {link_local}");

        // A check that cannot decide (lo's forwarding turned off under
        // the server: every lookup fails) lets requests through, counted
        // and warned about.
        run_ok(topo.srv_cmd("sysctl").args([
            "-q",
            "-w",
            "net.ipv4.conf.lo.forwarding=0",
            "net.ipv6.conf.lo.forwarding=0",
        ]));
        assert_eq!(answered(&topo, "10.7.0.5"), TRIES, "unchecked");
        assert_eq!(answered(&topo, "2001:db8:7::5"), TRIES, "unchecked");
        let stats = settled_stats(&topo, &socket);
        assert_eq!(
            stats["policy"]["rp_unchecked"],
            2 * TRIES as u64,
            "{}",
            stats["policy"]
        );
        // The control loop looks once a second.
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let out = srv.stop();
    assert!(!out.contains("panicked"), "{out}");
    if mode != "off" {
        assert!(
            out.contains("route lookups fail, requests pass unchecked"),
            "{out}"
        );
        assert!(out.contains("reverse path: 6 requests unchecked"), "{out}");
    }
}

#[test]
fn xdp_replies_check_the_reverse_path_strictly() {
    check(
        "xdp_replies_check_the_reverse_path_strictly",
        "strict",
        "xdp",
    );
}

#[test]
fn xdp_replies_check_the_reverse_path_loosely() {
    check("xdp_replies_check_the_reverse_path_loosely", "loose", "xdp");
}

#[test]
fn workers_check_the_reverse_path_strictly() {
    check(
        "workers_check_the_reverse_path_strictly",
        "strict",
        "workers",
    );
}

#[test]
fn workers_check_the_reverse_path_loosely() {
    check("workers_check_the_reverse_path_loosely", "loose", "workers");
}

#[test]
fn without_the_check_every_source_is_answered() {
    check("without_the_check_every_source_is_answered", "off", "xdp");
}

#[test]
fn the_check_without_forwarding_on_lo_is_refused_by_name() {
    let test = "the_check_without_forwarding_on_lo_is_refused_by_name";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    routes(&topo, false);
    let out = run_with_timeout(
        topo.srv_cmd(NTPX).args([
            "serve",
            "--iface",
            &topo.srv_if,
            "--clock",
            "local",
            "--no-stats-socket",
            "--reverse-path",
            "strict",
        ]),
        30,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{test}: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("net.ipv4.conf.lo.forwarding=1") && err.contains("reverse_path"),
        "{err}"
    );
}
