//! Reload without loss (`ntpx reload`, SIGHUP): a server taking 1,000
//! requests/s from `ntpx load` is reloaded ten times, each reload changing
//! what a second client sees: the stratum every time; its address denied
//! with a KoD DENY every other time, then allowed again; and the rate
//! limit, tightened (a burst of 200) at the 3rd and 7th reload and
//! loosened again at the next, which a quick burst of the second client's
//! requests shows as KoD RATE replies or none. One more reload that
//! changes a setting that cannot change live is refused while the old
//! config stays. The last reload also sets `log_level` to `warn`, which
//! silences its own line at `info`. The load must lose nothing; the
//! printed numbers are the note's.
//!
//! Needs root; skips with a printed reason without it, fails under CI=true.

mod common;

use common::*;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

/// The config of reload `i`: stratum `stratum`; 198.18.0.3 denied (KoD
/// DENY) when `deny`; a client's burst 200 requests when `tight`, else
/// 2,000 (5,000/s each way: the load's 1,000/s is never limited); `extra`
/// appended to `[server]`. The server runs with `--rate-leak 0 --rate-kod
/// 1`: every limited request gets a KoD RATE.
fn config(topo: &Topology, stratum: u8, deny: bool, tight: bool, extra: &str) -> String {
    format!(
        "[server]\ninterface = \"{}\"\ndrain_file = \"\"\n{extra}\n[clock]\nsource = \"local\"\nstratum = {stratum}\nref_id = \"RLD\"\n\
         [access]\naction = \"deny\"\ndeny = [{}]\n\
         [rate_limit]\ninterval = 0.0002\nburst = {}\nkod_interval = 0\n",
        topo.srv_if,
        if deny { "\"198.18.0.3/32\"" } else { "" },
        if tight { 200 } else { 2000 }
    )
}

/// The second client sends `n` requests within a few milliseconds: the
/// replies it got, and how many of them were KoD RATE.
fn burst(topo: &Topology, n: usize) -> (usize, usize) {
    topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.3:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        // Read as the replies come: the socket's buffer holds only
        // about 200.
        let rx = sock.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let (mut got, mut rate) = (0, 0);
            let mut buf = [0u8; 64];
            while rx.recv(&mut buf).is_ok() {
                got += 1;
                rate += usize::from(buf[1] == 0 && buf[12..16] == *b"RATE");
            }
            (got, rate)
        });
        let mut req = [0u8; 48];
        req[0] = 0x23;
        // In groups of 50 a millisecond apart: a veth takes at most 256
        // frames at once into its XDP ring.
        for i in 0..n {
            sock.send_to(&req, "198.18.0.1:123").expect("send");
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        reader.join().expect("reader")
    })
}

/// What the second client sees: the stratum of a reply (0: a KoD), and
/// its reference ID.
fn probe(topo: &Topology) -> Option<(u8, [u8; 4])> {
    topo.in_cli(|| {
        let sock = UdpSocket::bind("198.18.0.3:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut req = [0u8; 48];
        req[0] = 0x23;
        sock.send_to(&req, "198.18.0.1:123").expect("send");
        let mut buf = [0u8; 64];
        sock.recv(&mut buf).ok()?;
        Some((buf[1], [buf[12], buf[13], buf[14], buf[15]]))
    })
}

#[test]
fn ten_reloads_under_load_lose_nothing() {
    check("ten_reloads_under_load_lose_nothing", false);
}

#[test]
fn ten_reloads_of_the_socket_datapath_lose_nothing() {
    check("ten_reloads_of_the_socket_datapath_lose_nothing", true);
}

fn check(test: &str, socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    run_ok(
        topo.cli_cmd("ip")
            .args(["addr", "add", "198.18.0.3/32", "dev", &topo.cli_if]),
    );
    let dir = TempDir::new("ntpx-reload");
    let file = dir.path().join("ntpx.toml");
    std::fs::write(&file, config(&topo, 2, false, false, "")).unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    let socket = std::env::temp_dir().join(format!("ntpx-{}.sock", topo.name));
    let socket_arg = socket.to_string_lossy().into_owned();
    let mut args = vec![
        "--config",
        file_arg.as_str(),
        "--clock",
        "local",
        "--rate-leak",
        "0",
        "--rate-kod",
        "1",
    ];
    if socket_datapath {
        args.extend(["--datapath", "socket", "--workers", "1"]);
    }
    // No NTPX_LOG: the config's log_level rules, and a reload changes it.
    let mut srv = Server::start_logging(&topo, &args, None);
    peer_pass(&topo);
    assert_eq!(probe(&topo).map(|p| p.0), Some(2));

    let (summary, seen) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            ntpx_load(
                &topo,
                "198.18.0.1",
                &[
                    "--datapath",
                    "socket",
                    "--rate",
                    "1000",
                    "--duration",
                    "14s",
                ],
            )
        });
        std::thread::sleep(Duration::from_secs(1));
        let mut seen = Vec::new();
        let mut bursts = Vec::new();
        for i in 0..10u8 {
            let (stratum, deny, tight) = (3 + i, i % 2 == 1, i % 4 == 2);
            // The last reload also quiets the log to warnings: its own
            // "applied" line, at info, is then not written.
            let log = if i == 9 { "log_level = \"warn\"" } else { "" };
            std::fs::write(&file, config(&topo, stratum, deny, tight, log)).unwrap();
            let asked = Instant::now();
            run_ok(Command::new(NTPX).args(["reload", "--socket", &socket_arg]));
            let want = if deny {
                (0, *b"DENY")
            } else {
                (stratum, *b"RLD\0")
            };
            loop {
                let got = probe(&topo);
                if got == Some(want) {
                    break;
                }
                assert!(
                    asked.elapsed() < Duration::from_secs(3),
                    "reload {i}: still {got:?}, want {want:?}"
                );
                // 200/s at most: the polling itself never spends the
                // client's burst (it refills at 5,000/s).
                std::thread::sleep(Duration::from_millis(5));
            }
            seen.push(asked.elapsed());
            if !deny {
                // 400 at once: over the tight burst, well within the
                // loose one (which the 0.4 s since refilled).
                let (got, rate) = burst(&topo, 400);
                assert!(got > 0, "reload {i}: no reply to the burst");
                if tight {
                    assert!(rate > 0, "reload {i}: tight, yet no KoD RATE in {got}");
                } else {
                    assert_eq!(rate, 0, "reload {i}: loose, yet KoD RATE in {got}");
                }
                bursts.push((i, got, rate));
            }
            std::thread::sleep(Duration::from_millis(800));
        }
        (load.join().unwrap(), (seen, bursts))
    });
    let (seen, bursts) = seen;
    println!(
        "{test}: the second client's bursts of 400 after reload (i, replies, KoD RATE): {bursts:?}"
    );
    let t = &summary.total;
    println!(
        "{test}: 10 reloads, each seen by the second client within {:?}; the load: sent {} good {} lost {} invalid {}",
        seen.iter().max().unwrap(),
        t.sent,
        t.good,
        t.lost,
        t.invalid
    );
    assert!(t.sent > 10_000, "{t:?}");
    assert_eq!((t.good, t.lost, t.invalid), (t.sent, 0, 0), "{t:?}");

    // A setting that cannot change live: refused, the old config stays.
    std::fs::write(
        &file,
        config(&topo, 9, false, false, "log_level = \"warn\"\nport = 124"),
    )
    .unwrap();
    run_ok(Command::new(NTPX).args(["reload", "--socket", &socket_arg]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        probe(&topo),
        Some((0, *b"DENY")),
        "the running config stays"
    );
    let out = srv.stop();
    assert!(out.contains("reload refused"), "{out}");
    assert!(
        out.contains("port cannot change while ntpx serves"),
        "{out}"
    );
    assert_eq!(out.matches("reload: applied").count(), 9, "{out}");
}
