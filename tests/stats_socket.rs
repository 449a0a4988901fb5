//! `ntpx stats` against a real `ntpx serve` (socket datapath, loopback, a
//! free high port, a stats socket in a temp dir): the counters and the
//! service-time histogram it reports match the requests sent, and the
//! socket file is gone after a clean exit. Needs no root.
//!
//! The server refuses loopback sources (127/8 can never be a client), so
//! requests are sent from one of the host's other IPv4 addresses when it
//! has one (they still travel over `lo`) and are answered; on a host with
//! only `lo` they are sent from 127.0.0.1 and counted as `bad_source`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NTPX: &str = env!("CARGO_BIN_EXE_ntpx");

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("ntpx-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server process, killed on drop (also when the test fails).
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(port: u16, sock: &Path, log: PathBuf) -> Server {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(NTPX)
            .args(["serve", "--datapath", "socket", "--iface", "lo"])
            .args(["--address", "127.0.0.1", "--port", &port.to_string()])
            .args(["--clock", "local", "--stratum", "1", "--ref-id", "LOCL"])
            .args(["--workers", "1", "--stats-interval", "0"])
            .arg("--stats-socket")
            .arg(sock)
            // A cap in case the test dies before it stops the server.
            .args(["--duration", "30"])
            .env("NTPX_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn ntpx serve");
        let mut s = Server { child, log };
        let t = Instant::now();
        while !s.output().contains("stats socket ready") {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("ntpx serve exited early ({status}):\n{}", s.output());
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "ntpx serve did not start:\n{}",
                s.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 10 s) for a clean exit.
    fn stop(&mut self) -> String {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with a valid signal on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "ntpx serve failed ({status}):\n{}",
                    self.output()
                );
                return self.output();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "ntpx serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// One of this host's IPv4 addresses that the server accepts as a client
/// source (not loopback, not unspecified, not multicast or broadcast).
fn non_loopback_v4() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|ifa| ifa.address?.as_sockaddr_in().map(|a| a.ip()))
        .find(|a| !(a.is_loopback() || a.is_unspecified() || a.is_multicast() || a.is_broadcast()))
}

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

fn stats_json(sock: &str) -> serde_json::Value {
    let out = ntpx_stats(&["--socket", sock, "--json"]);
    assert!(
        out.status.success(),
        "ntpx stats --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ntpx stats --json prints JSON")
}

#[test]
fn stats_reads_a_running_server() {
    let dir = TempDir::new("stats-socket");
    let sock = dir.0.join("s.sock");
    let sock_str = sock.to_str().expect("utf-8 path").to_owned();
    let port = free_udp_port();
    let mut server = Server::start(port, &sock, dir.0.join("serve.log"));

    // A second server on the same stats socket is refused, and leaves the
    // first one's socket alone.
    let second = Command::new(NTPX)
        .args(["serve", "--datapath", "socket", "--address", "127.0.0.1"])
        .args(["--port", &free_udp_port().to_string(), "--clock", "local"])
        .args(["--stats-socket", &sock_str, "--duration", "1"])
        .output()
        .expect("run a second ntpx serve");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another ntpx serve is using"), "{err}");

    let source = non_loopback_v4();
    let client = UdpSocket::bind((source.unwrap_or(Ipv4Addr::LOCALHOST), 0)).expect("bind");
    client
        // Replies come in microseconds; without a source to answer, none come.
        .set_read_timeout(Some(Duration::from_millis(if source.is_some() {
            1000
        } else {
            200
        })))
        .expect("timeout");
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
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
    // Workers merge their histograms at most every 500 ms: the last
    // request, later than that, brings the histogram up to date.
    std::thread::sleep(Duration::from_millis(600));
    answered += u64::from(send(SENT - 1));
    if source.is_some() {
        assert_eq!(answered, SENT, "from {source:?}:\n{}", server.output());
    } else {
        assert_eq!(answered, 0);
        eprintln!(
            "note: this host has only loopback addresses: requests are dropped as bad_source"
        );
    }

    // The counters are published right after each batch is sent: wait
    // until the stats show them all.
    let t = Instant::now();
    let doc = loop {
        let doc = stats_json(&sock_str);
        if doc["rx"].as_u64() >= Some(SENT) && doc["tx"].as_u64() >= Some(answered)
            || t.elapsed() > Duration::from_secs(3)
        {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(doc["version"], 1, "{doc}");
    assert_eq!(doc["datapath"], "socket", "{doc}");
    assert!(doc["uptime_s"].as_f64().is_some_and(|u| u > 0.0), "{doc}");
    let (rx, tx) = (doc["rx"].as_u64().unwrap(), doc["tx"].as_u64().unwrap());
    assert!(rx >= SENT, "rx {rx} < {SENT}: {doc}");
    assert_eq!(tx, answered, "{doc}");
    if source.is_none() {
        assert_eq!(doc["drops"]["bad_source"], SENT, "{doc}");
    }
    let hist = ntpx::control::decode_histogram(doc["service_ns_hist"].as_str().unwrap())
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
