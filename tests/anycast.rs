//! Anycast scale-out with a real routing daemon: two ntpx servers announce
//! one service address (203.0.113.123, on their `lo`) over BGP to a router,
//! all three running BIRD in namespaces of their own, with a client behind
//! the router. The router installs both routes (ECMP, hashed on ports);
//! `scripts/anycast-health` on each server enables or disables its BIRD
//! static protocol as `ntpx health` says. Then:
//!
//! - drain server A: its route goes within seconds, and the client,
//!   sending a request every millisecond, is answered throughout (LI 3 by
//!   A until its route goes, by B after);
//! - undrain A: its route comes back;
//! - kill -9 A's ntpx: its route goes again.
//!
//! The withdrawal times are printed (the note's figures).
//!
//! Needs root and BIRD (bird2); skips with a printed reason without them,
//! fails under CI=true.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVICE: &str = "203.0.113.123";

/// The namespaces, links and daemons; everything goes on drop, also when
/// the test fails.
struct Anycast {
    tag: String,
    dir: TempDir,
    children: Vec<Child>,
}

impl Anycast {
    fn ns(&self, n: &str) -> String {
        format!("ntpx-{}-{n}", self.tag)
    }

    fn ip(&self, n: &str, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(self.ns(n)).args(args));
    }

    fn exec(&self, n: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(n), prog]);
        c
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    fn spawn(&mut self, mut cmd: Command, log: &str) {
        let out = std::fs::File::create(self.path(log)).expect("log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn");
        self.children.push(child);
    }

    /// The router's next hops for the service address.
    fn next_hops(&self) -> Vec<String> {
        let out = run_ok(Command::new("ip").args(["-n", &self.ns("r"), "route", "show", SERVICE]));
        ["10.2.0.2", "10.3.0.2"]
            .iter()
            .filter(|h| out.contains(*h))
            .map(|h| h.to_string())
            .collect()
    }

    /// Waits until the router's next hops are `want`; how long it took.
    fn until_hops(&self, want: &[&str], secs: u64) -> Duration {
        let start = Instant::now();
        loop {
            if self.next_hops() == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "the router's next hops stay {:?}, want {want:?}",
                self.next_hops()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Anycast {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["c", "r", "a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn bird_server(n: u8) -> String {
    format!(
        "log stderr all;\nrouter id 10.{n}.0.2;\nprotocol device {{ scan time 1; }}\n\
         protocol static anycast {{ ipv4; route {SERVICE}/32 blackhole; }}\n\
         protocol bgp up {{ local 10.{n}.0.2 as 65001; neighbor 10.{n}.0.1 as 65000; \
         hold time 3; connect retry time 1; \
         ipv4 {{ import none; export where proto = \"anycast\"; next hop self; }}; }}\n"
    )
}

const BIRD_ROUTER: &str = "log stderr all;\nrouter id 10.1.0.1;\nprotocol device { scan time 1; }\n\
    protocol kernel { ipv4 { import none; export all; }; merge paths on; }\n\
    protocol bgp a { local 10.2.0.1 as 65000; neighbor 10.2.0.2 as 65001; hold time 3; \
    connect retry time 1; ipv4 { import all; export none; }; }\n\
    protocol bgp b { local 10.3.0.1 as 65000; neighbor 10.3.0.2 as 65001; hold time 3; \
    connect retry time 1; ipv4 { import all; export none; }; }\n";

#[test]
fn anycast_withdraws_a_drained_or_dead_server() {
    let test = "anycast_withdraws_a_drained_or_dead_server";
    if !require_root(test) || !require_tool(test, "bird") || !require_tool(test, "birdc") {
        return;
    }
    let tag = format!("a{}", std::process::id() % 100_000);
    let mut net = Anycast {
        tag: tag.clone(),
        dir: TempDir::new("ntpx-anycast"),
        children: Vec::new(),
    };
    for n in ["c", "r", "a", "b"] {
        run_ok(Command::new("ip").args(["netns", "add", &net.ns(n)]));
        net.ip(n, &["link", "set", "lo", "up"]);
    }
    // Links: client — router — servers A and B.
    for (x, y) in [("c", "r"), ("a", "r"), ("b", "r")] {
        run_ok(Command::new("ip").args([
            "link",
            "add",
            &format!("nx{tag}{x}{y}"),
            "netns",
            &net.ns(x),
            "type",
            "veth",
            "peer",
            "name",
            &format!("nx{tag}{y}{x}"),
            "netns",
            &net.ns(y),
        ]));
    }
    for (n, dev, addr) in [
        ("c", "cr", "10.1.0.2/24"),
        ("r", "rc", "10.1.0.1/24"),
        ("r", "ra", "10.2.0.1/24"),
        ("r", "rb", "10.3.0.1/24"),
        ("a", "ar", "10.2.0.2/24"),
        ("b", "br", "10.3.0.2/24"),
    ] {
        let dev = format!("nx{tag}{dev}");
        net.ip(n, &["addr", "add", addr, "dev", &dev]);
        net.ip(n, &["link", "set", &dev, "up"]);
    }
    net.ip("c", &["route", "add", "default", "via", "10.1.0.1"]);
    net.ip("a", &["route", "add", "default", "via", "10.2.0.1"]);
    net.ip("b", &["route", "add", "default", "via", "10.3.0.1"]);
    let service = format!("{SERVICE}/32");
    net.ip("a", &["addr", "add", &service, "dev", "lo"]);
    net.ip("b", &["addr", "add", &service, "dev", "lo"]);
    run_ok(net.exec("r", "sysctl").args([
        "-qw",
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",
    ]));
    // The servers reply from XDP: the router's ends must run XDP to take
    // such frames (a veth's rule).
    for dev in ["ra", "rb"] {
        run_ok(
            net.exec("r", NTPX)
                .args(["xdp-pass", "--iface", &format!("nx{tag}{dev}")]),
        );
    }

    // ntpx on A (stratum 1) and B (stratum 2), answering for the service
    // address only.
    for (n, stratum) in [("a", "1"), ("b", "2")] {
        let mut cmd = net.exec(n, NTPX);
        cmd.args([
            "serve",
            "--iface",
            &format!("nx{tag}{n}r"),
            "--address",
            SERVICE,
            "--clock",
            "local",
            "--stratum",
            stratum,
            "--rate-interval",
            "0",
            "--stats-interval",
            "0",
            "--stats-socket",
            &net.path(&format!("{n}.sock")),
            "--drain-file",
            &net.path(&format!("{n}.drain")),
        ]);
        net.spawn(cmd, &format!("ntpx-{n}.log"));
    }
    // BIRD everywhere, and the health loop on each server.
    for (n, conf) in [
        ("r", BIRD_ROUTER.to_owned()),
        ("a", bird_server(2)),
        ("b", bird_server(3)),
    ] {
        let file = net.path(&format!("bird-{n}.conf"));
        std::fs::write(&file, conf).unwrap();
        let mut cmd = net.exec(n, "bird");
        cmd.args(["-f", "-c", &file, "-s", &net.path(&format!("bird-{n}.ctl"))])
            .args(["-P", &net.path(&format!("bird-{n}.pid"))]);
        net.spawn(cmd, &format!("bird-{n}.log"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !["a.sock", "b.sock", "bird-a.ctl", "bird-b.ctl"]
        .iter()
        .all(|f| std::path::Path::new(&net.path(f)).exists())
    {
        assert!(
            Instant::now() < deadline,
            "the servers or BIRD did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for n in ["a", "b"] {
        let mut cmd = Command::new(repo_root().join("scripts/anycast-health"));
        cmd.args(["--bird-socket", &net.path(&format!("bird-{n}.ctl"))])
            .args(["--protocol", "anycast", "--interval", "0.2"])
            .args(["--socket", &net.path(&format!("{n}.sock")), "--ntpx", NTPX]);
        net.spawn(cmd, &format!("health-{n}.log"));
    }
    let up = net.until_hops(&["10.2.0.2", "10.3.0.2"], 30);
    println!("{test}: both servers announced, ECMP at the router, after {up:?}");

    // Requests every millisecond from the client while A is drained.
    let prober = net
        .exec("c", "python3")
        .args(["-c", PROBER, SERVICE, "4", "16"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the prober");
    std::thread::sleep(Duration::from_millis(700));
    let drained_at = unix_now();
    run_ok(Command::new(NTPX).args(["drain", "on", "--file", &net.path("a.drain")]));
    let drain_gone = net.until_hops(&["10.3.0.2"], 10);
    let out = prober.wait_with_output().expect("the prober");
    let replies = probe_replies(&out.stdout);
    let count = |from: f64, to: f64, stratum: u8| {
        replies
            .iter()
            .filter(|&&(t, s)| t >= from && t < to && s == stratum)
            .count()
    };
    let gone_at = drained_at + drain_gone.as_secs_f64();
    let end = unix_now();
    println!(
        "{test}: drained A: route withdrawn after {drain_gone:?}; replies before: {} from A, {} from B; \
         while withdrawing: {} LI 3 from A, {} from B; after: {} from A, {} from B",
        count(0.0, drained_at, 1),
        count(0.0, drained_at, 2),
        count(drained_at, gone_at, 0),
        count(drained_at, gone_at, 2),
        count(gone_at + 0.1, end, 1) + count(gone_at + 0.1, end, 0),
        count(gone_at + 0.1, end, 2),
    );
    assert!(
        count(0.0, drained_at, 1) > 20,
        "A answered before the drain"
    );
    assert!(
        count(0.0, drained_at, 2) > 20,
        "B answered before the drain"
    );
    assert!(
        count(gone_at, end, 2) > 200,
        "B answered after the withdrawal"
    );
    assert_eq!(
        count(gone_at + 0.1, end, 1) + count(gone_at + 0.1, end, 0),
        0,
        "nothing from A after its route went"
    );

    run_ok(Command::new(NTPX).args(["drain", "off", "--file", &net.path("a.drain")]));
    let back = net.until_hops(&["10.2.0.2", "10.3.0.2"], 10);
    println!("{test}: undrained A: announced again after {back:?}");

    // kill -9 of A's ntpx: the health loop finds no server, the route goes.
    let a = &mut net.children[0];
    a.kill().expect("kill -9 A's ntpx");
    let _ = a.wait();
    let killed_gone = net.until_hops(&["10.3.0.2"], 10);
    println!("{test}: kill -9 of A's ntpx: route withdrawn after {killed_gone:?}");
    assert!(drain_gone < Duration::from_secs(5) && killed_gone < Duration::from_secs(5));
    let health = std::fs::read_to_string(net.path("health-a.log")).unwrap_or_default();
    assert!(
        health.contains("disable anycast: ntpx: not serving: draining"),
        "{health}"
    );
}
