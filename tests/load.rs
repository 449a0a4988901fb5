//! `ntpx load` end to end on a veth pair between two throwaway network
//! namespaces: against ntpx itself (both server datapaths, both generator
//! datapaths, IPv4 and IPv6, many source addresses) every request must be
//! answered and validated; against a small fake responder that misbehaves
//! on purpose, each fault must be counted exactly where it belongs.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use ntpx::load::report::Summary;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every request answered, validated, and measured. Steps end on time, so
/// a generator thread delayed past a step's end by a busy machine sends a
/// few less than `expect_sent`; every one it sent must be answered.
fn assert_all_good(s: &Summary, expect_sent: u64) {
    let t = &s.total;
    assert!(
        (expect_sent * 9 / 10..=expect_sent).contains(&t.sent),
        "sent {} of {expect_sent}: {s:#?}",
        t.sent
    );
    assert_eq!(
        (t.good, t.lost, t.late, t.invalid, t.kod),
        (t.sent, 0, 0, 0, 0),
        "{s:#?}"
    );
    assert!(t.rejected.is_empty(), "{:?}", t.rejected);
    assert_eq!(t.rtt.count, t.good);
    assert_eq!(t.residence.count, t.good);
    assert!(
        t.rtt.min_ns > 0 && t.residence.max_ns <= t.rtt.max_ns,
        "{s:#?}"
    );
    // One host, one clock: the server's timestamps are within a few ms.
    assert!(t.offset_abs.p50_ns < 5_000_000, "{:?}", t.offset_abs);
    assert_eq!(s.generator_rx_dropped, 0);
}

#[test]
fn load_against_ntpx_xdp_many_sources() {
    if !require_root("load_against_ntpx_xdp_many_sources") {
        return;
    }
    let topo = Topology::up();
    let mut srv = Server::start(
        &topo,
        &["--iface", &topo.srv_if, "--no-stats-socket", "--bpf-stats"],
    );
    // 2000 requests/s for 1 s from 65534 addresses; ntpx answers in place,
    // so the prefix needs no route.
    let s = ntpx_load(
        &topo,
        "198.18.0.1",
        &[
            "--rate",
            "2k",
            "--duration",
            "1s",
            "--sources",
            "198.19.0.0/16",
        ],
    );
    assert_all_good(&s, 2000);
    assert_eq!(s.steps.len(), 1);
    let out = srv.stop();
    assert!(out.contains("requests 2001  replies 2001"), "{out}"); // + the MAC probe
    // --bpf-stats: the kernel timed every run of the steering program.
    let runs = out
        .split("XDP program run time: ")
        .nth(1)
        .and_then(|r| r.split(" runs").next())
        .and_then(|r| r.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(runs.is_some_and(|n| n >= 2001), "{out}");
}

/// Two queues on each end, a worker per queue and a generator thread per
/// queue: both paths answer every request on both queues. (Thread q on
/// CPU q: a veth hands an XDP_TX frame to its peer's queue numbered like
/// the CPU that sends it, which is the CPU that sent the request.)
#[test]
fn two_queues_both_paths() {
    if !require_root("two_queues_both_paths") {
        return;
    }
    for replies in ["workers", "xdp"] {
        let topo = Topology::up_multiqueue(2);
        let mut srv = Server::start(
            &topo,
            &[
                "--iface",
                &topo.srv_if,
                "--no-stats-socket",
                "--replies",
                replies,
            ],
        );
        let s = ntpx_load(
            &topo,
            "198.18.0.1",
            &[
                "--rate",
                "4k",
                "--duration",
                "1s",
                "--queues",
                "0,1",
                "--cpus",
                "0,1",
            ],
        );
        assert_all_good(&s, 4000);
        let out = srv.stop();
        assert!(out.contains("queues=[0, 1]"), "{out}");
        let total = s.total.sent + 1; // + the MAC probe
        assert!(
            out.contains(&format!("requests {total}  replies {total}")),
            "{replies}: {out}"
        );
        if replies == "workers" {
            // Each queue's worker sent replies: a worker kicks its TX ring
            // only with replies on it, and the kernel then counts the ring
            // empty once it has sent them.
            for q in 0..2 {
                let empty = out
                    .lines()
                    .find(|l| l.starts_with(&format!("AF_XDP queue {q}:")))
                    .and_then(|l| l.split("tx_ring_empty=").nth(1))
                    .and_then(|n| n.trim().parse::<u64>().ok());
                assert!(empty.is_some_and(|n| n > 0), "queue {q}:\n{out}");
            }
        }
    }
}

#[test]
fn load_ramp_against_ntpx_socket_v6_with_files() {
    if !require_root("load_ramp_against_ntpx_socket_v6_with_files") {
        return;
    }
    let topo = Topology::up();
    let _srv = Server::start(
        &topo,
        &[
            "--iface",
            &topo.srv_if,
            "--datapath",
            "socket",
            "--no-stats-socket",
        ],
    );
    let dir = TempDir::new("ntpx-load-files");
    let s = ntpx_load(
        &topo,
        "2001:db8::1",
        &[
            "--ramp",
            "500..1k x2",
            "--step",
            "1s",
            "--out",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_eq!(s.steps.len(), 2);
    assert_eq!((s.steps[0].sent, s.steps[1].sent), (500, 1000));
    assert_all_good(&s, 1500);
    for f in [
        "summary.json",
        "rtt.hgrm",
        "residence.hgrm",
        "offset.hgrm",
        "delay.hgrm",
        "latency.svg",
        "ramp.svg",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let hgrm = std::fs::read_to_string(dir.path().join("rtt.hgrm")).unwrap();
    let parsed = ntpx::report::hgrm::read_hgrm(&hgrm).expect("our .hgrm reads back");
    assert_eq!(parsed.total_count, 1500);
}

#[test]
fn load_over_sockets_against_ntpx_xdp_v4() {
    if !require_root("load_over_sockets_against_ntpx_xdp_v4") {
        return;
    }
    let topo = Topology::up();
    let mut srv = Server::start(&topo, &["--iface", &topo.srv_if, "--no-stats-socket"]);
    // The server answers from AF_XDP. scripts/netns says a veth accepts
    // frames sent from XDP on its peer only if it runs XDP itself, and the
    // socket generator attaches nothing, so attach the pass-through as the
    // e2e tests do for their kernel clients. (On 6.18 copy-mode AF_XDP TX
    // takes the veth's ordinary xmit path and arrives without it too.)
    peer_pass(&topo);
    let s = ntpx_load(
        &topo,
        "198.18.0.1",
        &["--datapath", "socket", "--rate", "1k", "--duration", "1s"],
    );
    assert_eq!(s.datapath, "socket");
    assert_all_good(&s, 1000);
    let out = srv.stop();
    // No MAC probe over sockets: exactly the generator's requests.
    assert!(out.contains("requests 1000  replies 1000"), "{out}");
}

#[test]
fn load_over_sockets_against_ntpx_socket_v6_rate_and_ping() {
    if !require_root("load_over_sockets_against_ntpx_socket_v6_rate_and_ping") {
        return;
    }
    let topo = Topology::up();
    // Kernel sockets on both ends: no XDP anywhere on the link.
    let _srv = Server::start(
        &topo,
        &[
            "--iface",
            &topo.srv_if,
            "--datapath",
            "socket",
            "--no-stats-socket",
        ],
    );
    let s = ntpx_load(
        &topo,
        "2001:db8::1",
        &[
            "--datapath",
            "socket",
            "--rate",
            "1k",
            "--duration",
            "1s",
            "--queues",
            "0,1",
        ],
    );
    assert_eq!(s.datapath, "socket");
    assert_all_good(&s, 1000);
    // Ping: 8 clients (sockets) with one request each in flight.
    let s = ntpx_load(
        &topo,
        "2001:db8::1",
        &[
            "--datapath",
            "socket",
            "--ping",
            "8",
            "--interval",
            "10ms",
            "--duration",
            "1s",
        ],
    );
    let t = &s.total;
    // Each client sends about every 10 ms: ~800 in a second.
    assert!(t.sent > 200, "{s:#?}");
    assert_all_good(&s, t.sent);
}

/// What the fake responder does to every tenth request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Drop,
    CorruptOrigin,
    Late,
}

/// Counts of what the fake responder did.
#[derive(Debug, Default)]
struct FakeCounts {
    received: u64,
    faulted: u64,
}

/// A fake NTP server on 198.18.0.1:123 in the server namespace (kernel UDP
/// socket) that answers correctly except for every tenth request.
fn fake_responder(
    topo: &Topology,
    fault: Fault,
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<FakeCounts>>,
) -> std::thread::JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    let ns = topo.srv_ns.clone();
    let h = std::thread::spawn(move || {
        in_netns(&ns, move || {
            let sock = UdpSocket::bind("198.18.0.1:123").expect("bind 198.18.0.1:123");
            sock.set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            r.store(true, Ordering::SeqCst);
            let mut late: Vec<(Instant, [u8; 48], SocketAddr)> = Vec::new();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                let now = Instant::now();
                late.retain(|(due, reply, to)| {
                    if *due <= now {
                        sock.send_to(reply, to).unwrap();
                    }
                    *due > now
                });
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let t2 = ntp_now();
                if n < 48 || buf[0] & 7 != 3 {
                    continue;
                }
                let mut reply = [0u8; 48];
                reply[0] = (buf[0] & 0x38) | 4; // LI 0, request's version, mode 4
                reply[1] = 1;
                reply[12..16].copy_from_slice(b"FAKE");
                reply[16..24].copy_from_slice(&t2);
                reply[24..32].copy_from_slice(&buf[40..48]);
                reply[32..40].copy_from_slice(&t2);
                reply[40..48].copy_from_slice(&ntp_now());
                let mut c = counts.lock().unwrap();
                c.received += 1;
                if !c.received.is_multiple_of(10) {
                    sock.send_to(&reply, from).unwrap();
                    continue;
                }
                c.faulted += 1;
                match fault {
                    Fault::Drop => {}
                    Fault::CorruptOrigin => {
                        reply[31] ^= 0x5a;
                        sock.send_to(&reply, from).unwrap();
                    }
                    Fault::Late => late.push((now + Duration::from_millis(150), reply, from)),
                }
            }
        })
    });
    while !ready.load(Ordering::SeqCst) {
        assert!(!h.is_finished(), "fake responder failed to start");
        std::thread::sleep(Duration::from_millis(10));
    }
    h
}

fn ntp_now() -> [u8; 8] {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    ((secs << 32) | frac).to_be_bytes()
}

fn run_fake(fault: Fault) {
    let test = format!("load_detects_fake_server_{fault:?}");
    if !require_root(&test) {
        return;
    }
    let topo = Topology::up();
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new(FakeCounts::default()));
    let h = fake_responder(&topo, fault, stop.clone(), counts.clone());
    // The kernel-stack responder answers frames sent from AF_XDP only if
    // its veth runs XDP (see scripts/netns).
    run_ok(
        topo.srv_cmd(NTPX)
            .args(["xdp-pass", "--iface", &topo.srv_if]),
    );
    let s = ntpx_load(
        &topo,
        "198.18.0.1",
        &[
            "--rate",
            "500",
            "--duration",
            "1s",
            "--timeout",
            "100ms",
            "--mac",
            &srv_mac(&topo),
        ],
    );
    stop.store(true, Ordering::SeqCst);
    h.join().expect("fake responder");
    let c = counts.lock().unwrap();
    let t = &s.total;
    // Steps end on time: a generator thread that the machine delays past
    // the end of the step sends fewer (it shows as a lower sent rate), so
    // the accounting is checked against what was sent, not against 500.
    let n = t.sent;
    assert!((450..=500).contains(&n), "sent {n} of 500: {s:#?}");
    assert_eq!(c.received, n, "{c:?}");
    let f = n / 10;
    assert_eq!(c.faulted, f);
    match fault {
        Fault::Drop => {
            assert_eq!((t.good, t.lost, t.late), (n - f, f, 0), "{s:#?}");
            assert!(t.rejected.is_empty());
        }
        Fault::CorruptOrigin => {
            assert_eq!((t.good, t.lost, t.invalid), (n - f, f, 0), "{s:#?}");
            assert_eq!(t.rejected.get("unknown_origin"), Some(&f), "{s:#?}");
        }
        Fault::Late => {
            assert_eq!((t.good, t.late, t.lost), (n - f, f, 0), "{s:#?}");
            assert!(t.rejected.is_empty());
            assert!(
                t.rtt.max_ns < 100_000_000,
                "late replies must not enter the histograms"
            );
        }
    }
}

/// The server veth's MAC (the fake server answers no probe before it runs).
fn srv_mac(topo: &Topology) -> String {
    run_ok(
        topo.srv_cmd("cat")
            .arg(format!("/sys/class/net/{}/address", topo.srv_if)),
    )
    .trim()
    .to_owned()
}

#[test]
fn load_detects_fake_server_dropping() {
    run_fake(Fault::Drop);
}

#[test]
fn load_detects_fake_server_corrupting_origin() {
    run_fake(Fault::CorruptOrigin);
}

#[test]
fn load_detects_fake_server_answering_late() {
    run_fake(Fault::Late);
}

/// `ntpx load --reflector` against `ntpx sink --reflect`: every request
/// comes back, swapped, from the server's end of the link and counts as
/// answered, with a round trip and no server times. The reflector's own
/// count is every request sent, plus none: nothing else reaches it.
#[test]
fn load_against_the_reflector() {
    if !require_root("load_against_the_reflector") {
        return;
    }
    let topo = Topology::up();
    /// Stops the reflector (SIGTERM) even when the test fails.
    struct Stop(Option<std::process::Child>);
    impl Stop {
        fn output(&mut self) -> String {
            let Some(c) = self.0.take() else {
                return String::new();
            };
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let out = c.wait_with_output().expect("reflector output");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    }
    impl Drop for Stop {
        fn drop(&mut self) {
            self.output();
        }
    }
    let mut reflector = Stop(Some(
        topo.srv_cmd(NTPX)
            .args(["sink", "--reflect", "--bpf-stats", "--iface", &topo.srv_if])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start ntpx sink --reflect"),
    ));
    // Attached once `ip link` shows an XDP program on the interface.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run_ok(
        topo.srv_cmd("ip")
            .args(["link", "show", "dev", &topo.srv_if]),
    )
    .contains("xdp")
    {
        assert!(Instant::now() < deadline, "the reflector never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = ntpx_load(
        &topo,
        "198.18.0.1",
        &[
            "--reflector",
            "--rate",
            "2k",
            "--duration",
            "1s",
            "--mac",
            &srv_mac(&topo),
        ],
    );
    // SIGTERM: the reflector detaches and prints its total.
    let text = reflector.output();
    let t = &s.total;
    assert!((1800..=2000).contains(&t.sent), "sent {}: {s:#?}", t.sent);
    assert_eq!(
        (t.good, t.lost, t.late, t.invalid, t.kod),
        (t.sent, 0, 0, 0, 0),
        "{s:#?}"
    );
    assert!(t.rejected.is_empty(), "{:?}", t.rejected);
    assert_eq!(t.rtt.count, t.good);
    assert!(t.rtt.min_ns > 0);
    assert_eq!(t.residence.count, 0, "a reflector has no server times");
    assert!(
        text.contains(&format!("reflect total: {} packets", t.sent)),
        "{text}"
    );
    assert!(text.contains("reflect program run time: "), "{text}");
}
