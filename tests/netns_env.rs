//! Tests of the end-to-end test environment itself: scripts/netns, the
//! helpers in tests/common, tshark decoding and the golden fixtures.

mod common;
#[path = "fixtures/requests.rs"]
mod requests;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn env_ok(test: &str, tools: &[&str]) -> bool {
    require_root(test) && tools.iter().all(|t| require_tool(test, t))
}

#[test]
fn topology_up_ping_down() {
    if !env_ok("topology_up_ping_down", &["ip", "ping", "ethtool", "tc"]) {
        return;
    }
    let topo = Topology::up();
    let (srv_ns, cli_ns) = (topo.srv_ns.clone(), topo.cli_ns.clone());
    assert!(
        netns_exists(&srv_ns) && netns_exists(&cli_ns),
        "{:?}",
        netns_list()
    );
    assert!(topo.srv_if.len() <= 15 && topo.cli_if.len() <= 15);

    run_ok(
        topo.cli_cmd("ping")
            .args(["-c", "1", "-W", "2", &topo.srv_v4.to_string()]),
    );
    run_ok(
        topo.cli_cmd("ping")
            .args(["-6", "-c", "1", "-W", "2", &topo.srv_v6.to_string()]),
    );

    // The client side looks as scripts/netns promises.
    let qdisc = run_ok(
        topo.cli_cmd("tc")
            .args(["qdisc", "show", "dev", &topo.cli_if]),
    );
    assert!(
        qdisc.contains("pfifo") && qdisc.contains("limit 10000"),
        "{qdisc}"
    );
    // Offloads as the kernel makes them; off only when asked for.
    let feats = run_ok(topo.cli_cmd("ethtool").args(["-k", &topo.cli_if]));
    assert!(feats.contains("tx-checksumming: on"), "{feats}");
    let full = Topology::up_full_checksums();
    for (ns, iface) in [(&full.cli_ns, &full.cli_if), (&full.srv_ns, &full.srv_if)] {
        let feats = run_ok(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-k", iface]));
        assert!(feats.contains("tx-checksumming: off"), "{feats}");
    }
    drop(full);
    let addrs = run_ok(
        topo.srv_cmd("ip")
            .args(["-o", "addr", "show", "dev", &topo.srv_if]),
    );
    assert!(
        addrs.contains("198.18.0.1/24") && addrs.contains("2001:db8::1/64"),
        "{addrs}"
    );
    assert!(
        !addrs.contains("tentative"),
        "IPv6 address must be usable at once: {addrs}"
    );

    drop(topo);
    let left = netns_list();
    assert!(
        !left.contains(&srv_ns) && !left.contains(&cli_ns),
        "namespaces left: {left:?}"
    );
}

#[test]
fn panicking_test_still_cleans_up() {
    if !env_ok("panicking_test_still_cleans_up", &["ip"]) {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::up();
        names
            .lock()
            .unwrap()
            .extend([topo.srv_ns.clone(), topo.cli_ns.clone()]);
        assert!(netns_exists(&topo.srv_ns));
        panic!("deliberate panic with a live topology");
    }));
    assert!(res.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    let left = netns_list();
    for n in &names {
        assert!(!left.contains(n), "{n} survived the panic: {left:?}");
    }
}

#[test]
fn names_are_unique_and_scripts_are_idempotent() {
    if !env_ok(
        "names_are_unique_and_scripts_are_idempotent",
        &["ip", "ethtool", "tc"],
    ) {
        return;
    }
    let a = Topology::up();
    let b = Topology::up();
    assert_ne!(a.name, b.name);
    assert!(a.name.len() <= 6 && b.name.len() <= 6);
    // `up` on an existing NAME re-creates it; `down` twice is fine.
    run_ok(Command::new(netns_script()).args(["up", &a.name]));
    run_ok(a.cli_cmd("ping").args(["-c", "1", "-W", "2", "198.18.0.1"]));
    run_ok(Command::new(netns_script()).args(["down", &b.name]));
    run_ok(Command::new(netns_script()).args(["down", &b.name]));
    assert!(!netns_exists(&b.srv_ns));
    // Bad names are refused.
    let out = run_with_timeout(Command::new(netns_script()).args(["up", "waytoolong"]), 10);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid NAME"));
}

#[test]
fn run_with_timeout_kills() {
    let t0 = std::time::Instant::now();
    let out = run_with_timeout(Command::new("sh").args(["-c", "echo hi; sleep 30"]), 1);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), None, "killed by a signal");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = run_with_timeout(Command::new("sh").args(["-c", "echo err >&2; exit 3"]), 10);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// A tiny stand-in server in the server namespace (plain kernel sockets),
/// answering each golden request with CHRONY_REPLY's header and the request's
/// transmit timestamp as origin; the capture on the client veth must then show
/// tshark decoding org == the client's xmt, bit for bit.
#[test]
fn capture_and_decode_ntp_exchange() {
    if !env_ok(
        "capture_and_decode_ntp_exchange",
        &["ip", "tshark", "ethtool", "tc"],
    ) {
        return;
    }
    let topo = Topology::up();
    let srv_addrs = [IpAddr::V4(topo.srv_v4), IpAddr::V6(topo.srv_v6)];
    let servers: Vec<UdpSocket> = topo.in_srv(|| {
        srv_addrs
            .iter()
            .map(|a| UdpSocket::bind(SocketAddr::new(*a, 123)).expect("bind :123"))
            .collect()
    });
    let (cli4, cli6) = topo.in_cli(|| {
        (
            UdpSocket::bind("198.18.0.2:0").expect("bind v4"),
            UdpSocket::bind("[2001:db8::2]:0").expect("bind v6"),
        )
    });
    let mut cap = topo.capture_cli("udp port 123");

    let exchanges = [
        (&cli4, &servers[0], requests::CHRONY_REQUEST),
        (&cli6, &servers[1], requests::SNTP_V6_REQUEST),
    ];
    for (cli, srv, req) in exchanges {
        cli.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        cli.send_to(req, srv.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = srv.recv_from(&mut buf).expect("server got the request");
        assert_eq!(&buf[..n], req);
        let mut reply = requests::CHRONY_REPLY.to_vec();
        reply[24..32].copy_from_slice(&req[40..48]);
        srv.send_to(&reply, from).unwrap();
        let (n, _) = cli.recv_from(&mut buf).expect("client got the reply");
        assert_eq!(&buf[..n], &reply[..]);
    }

    let pcap = cap.stop();
    let pk = tshark_ntp_fields(&pcap);
    assert_eq!(pk.len(), 4, "{pk:#?}");
    for (pair, req_bytes) in pk
        .chunks(2)
        .zip([requests::CHRONY_REQUEST, requests::SNTP_V6_REQUEST])
    {
        let (req, rep) = (&pair[0], &pair[1]);
        assert!(req.clean() && rep.clean(), "{pair:#?}");
        assert!(req.is_request() && rep.is_reply());
        assert_eq!((req.vn, rep.vn), (4, 4));
        assert_eq!((req.dst_port, rep.src_port), (123, 123));
        assert_eq!((req.src, req.dst), (rep.dst, rep.src));
        assert_eq!((req.udp_len, rep.udp_len), (56, 56));
        assert_eq!(req.payload, req_bytes);
        // The point of the exercise: bit-exact origin == client transmit.
        assert_eq!(rep.org, req.xmt);
        assert_eq!(rep.org_text, req.xmt_text, "tshark renders them alike");
        assert_eq!(
            req.xmt,
            u64::from_be_bytes(req_bytes[40..48].try_into().unwrap())
        );
        // Header fields as tshark decodes them from CHRONY_REPLY.
        assert_eq!(
            (rep.li, rep.stratum, rep.ppoll, rep.precision),
            (0, 1, 6, -26)
        );
        assert_eq!((rep.root_delay, rep.root_dispersion), (0, 0));
        assert_eq!(rep.refid, [0x7f, 0x7f, 0x01, 0x01]);
        assert_eq!(
            rep.xmt,
            u64::from_be_bytes(requests::CHRONY_REPLY[40..48].try_into().unwrap())
        );
    }
    assert!(!pk[0].is_v6() && pk[2].is_v6());
    assert_eq!(pk[0].src, IpAddr::V4(topo.cli_v4));
    assert_eq!(pk[2].dst, IpAddr::V6(topo.srv_v6));
}

/// Writes Ethernet frames into a classic pcap file (linktype 1).
fn write_pcap(path: &Path, frames: &[&[u8]]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32 + 1).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// The golden frames are what tshark calls clean NTP, and their payload
/// constants are exactly the UDP payload of their frames. Needs only tshark.
#[test]
fn golden_frames_decode_in_tshark() {
    if !require_tool("golden_frames_decode_in_tshark", "tshark") {
        return;
    }
    use requests::*;
    let pairs: &[(&[u8], &[u8])] = &[
        (CHRONY_REQUEST_FRAME, CHRONY_REQUEST),
        (NTPDATE_REQUEST_FRAME, NTPDATE_REQUEST),
        (SNTP_REQUEST_FRAME, SNTP_REQUEST),
        (SNTP_V6_REQUEST_FRAME, SNTP_V6_REQUEST),
        (NTPD_REQUEST_FRAME, NTPD_REQUEST),
        (CHRONY_REPLY_FRAME, CHRONY_REPLY),
    ];
    let dir = TempDir::new("ntpx-golden");
    let pcap = dir.path().join("golden.pcap");
    write_pcap(&pcap, &pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let pk = tshark_ntp_fields(&pcap);

    assert_eq!(pk.len(), pairs.len(), "{pk:#?}");
    for (d, (_, payload)) in pk.iter().zip(pairs) {
        assert!(d.clean(), "{d:#?}");
        assert_eq!(&d.payload[..], *payload);
        assert_eq!(d.vn, 4);
        assert_eq!(d.udp_len as usize, 8 + payload.len());
    }
    assert!(pk[..5].iter().all(|d| d.is_request() && d.dst_port == 123));
    assert!(pk[3].is_v6());
    assert_eq!(pk[4].src_port, 123, "ntpd sends from port 123");
    assert!(pk[5].is_reply());
    assert_eq!(pk[5].org, pk[0].xmt, "chronyd echoed chrony's xmt");
    assert_eq!(ALL_REQUESTS.len(), 5);
}
