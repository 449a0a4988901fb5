//! The systemd unit (`scripts/ntpx.service`) and ntpx's side of it, tested
//! without a running systemd (this machine has none to start units):
//!
//! - the unit passes `systemd-analyze verify`, and `systemd-analyze
//!   security --offline` rates its exposure (printed, and held below 5);
//! - ntpx serves as an unprivileged user holding exactly the unit's
//!   `AmbientCapabilities` (through `setpriv`), and cannot serve without
//!   any one of them: the set is the smallest that works;
//! - on a `NOTIFY_SOCKET` the test owns, ntpx says READY=1 once it serves,
//!   feeds the watchdog (WATCHDOG=1) at half `WATCHDOG_USEC`, reports a
//!   drain in STATUS=, and says STOPPING=1 on SIGTERM.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../scripts/ntpx.service");

/// The unit with `ExecStart` pointing at the binary under test.
fn unit_here(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.path().join("ntpx.service");
    std::fs::write(&path, UNIT.replace("/usr/sbin/ntpx", NTPX)).expect("write the unit");
    path
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let test = "the_unit_verifies_and_is_hardened";
    if !require_tool(test, "systemd-analyze") {
        return;
    }
    let dir = TempDir::new("ntpx-unit");
    let unit = unit_here(&dir);
    // --man=no: the man page the unit names comes with the package.
    let out = run_with_timeout(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit),
        60,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    let out = run_with_timeout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit),
        60,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("ntpx.service: ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    println!("{test}: systemd-analyze security: exposure {level} (0 best, 10 worst)");
    assert!(level < 5.0, "{text}");
}

/// The unit's `AmbientCapabilities`, as setpriv names them.
fn unit_caps() -> Vec<String> {
    UNIT.lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in the unit")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Whether ntpx, run as nobody with just `caps`, answers a query within a
/// few seconds; its log.
fn serves_with(topo: &Topology, caps: &[String]) -> (bool, String) {
    let set: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let log = std::env::temp_dir().join(format!("ntpx-caps-{}.log", topo.name));
    let out = std::fs::File::create(&log).expect("log");
    let mut child = topo
        .srv_cmd("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            NTPX,
            "serve",
            "--iface",
            &topo.srv_if,
            "--clock",
            "local",
            "--stratum",
            "1",
            "--no-stats-socket",
            "--drain-file",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn setpriv");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answered = false;
    while Instant::now() < deadline && !answered {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        answered = topo.in_cli(|| {
            let sock = UdpSocket::bind("198.18.0.2:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_millis(250)))
                .expect("timeout");
            let mut req = [0u8; 48];
            req[0] = 0x23;
            sock.send_to(&req, "198.18.0.1:123").expect("send");
            sock.recv(&mut [0u8; 64]).is_ok()
        });
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (answered, text)
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    let test = "the_units_capabilities_are_enough_and_each_is_needed";
    if !require_root(test) || !require_tool(test, "setpriv") {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let caps = unit_caps();
    let (ok, log) = serves_with(&topo, &caps);
    println!("{test}: as nobody with {caps:?}: answered {ok}");
    assert!(ok, "{log}");
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let (ok, log) = serves_with(&topo, &fewer);
        let why = log
            .lines()
            .find(|l| l.starts_with("ntpx:"))
            .unwrap_or("no error, no answer");
        println!("{test}: without {drop}: answered {ok} ({why})");
        assert!(
            !ok,
            "serves without {drop}: the unit grants more than it needs"
        );
        // Refused for want of a permission, not for another reason.
        assert!(
            why.contains("ermission denied") || why.contains("not permitted"),
            "without {drop}: {log}"
        );
    }
}

#[test]
fn ntpx_notifies_the_service_manager() {
    let test = "ntpx_notifies_the_service_manager";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("ntpx-notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let drain = dir.path().join("drain");
    let drain = drain.to_string_lossy().into_owned();
    let log = dir.path().join("serve.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = topo
        .srv_cmd(NTPX)
        .args([
            "serve",
            "--iface",
            &topo.srv_if,
            "--clock",
            "local",
            "--no-stats-socket",
            "--drain-file",
            &drain,
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn ntpx serve");
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |want: &str, count: usize, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let n = seen.iter().filter(|m| m.contains(want)).count();
            if n >= count {
                return;
            }
            let mut buf = [0u8; 512];
            if let Ok(len) = sock.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            }
        }
        panic!(
            "{want} x{count} not seen in {secs} s: {seen:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    wait_for("READY=1", 1, 20);
    let ready = Instant::now();
    wait_for("WATCHDOG=1", 3, 3);
    println!(
        "{test}: READY=1, then 3 x WATCHDOG=1 within {:?}",
        ready.elapsed()
    );
    run_ok(Command::new(NTPX).args(["drain", "on", "--file", &drain]));
    wait_for("STATUS=draining (unsync)", 1, 3);
    let pid = child.id().to_string();
    run_ok(Command::new("kill").args(["-TERM", &pid]));
    wait_for("STOPPING=1", 1, 10);
    let _ = child.wait();
    println!("{test}: {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.contains("STATUS=serving NTP (xdp datapath)"))
    );
}
