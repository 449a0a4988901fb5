//! Interleaved mode (RFC 9769) end to end: a real chronyd, `server …
//! xleave`, polls ntpx over a veth pair; its measurements log says, for
//! every sample, whether the reply was interleaved ('I') or basic ('B'),
//! and the offset it measured. Both datapaths, and both AF_XDP reply
//! paths: replies from the workers, and replies in XDP (which send
//! interleaved requests up to the workers, who hold the transmit times).

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// One sample of chronyd's measurements log.
#[derive(Debug)]
struct Sample {
    interleaved: bool,
    offset_s: f64,
}

/// Reads chronyd's `measurements.log`: the column after the refid is
/// `<version><I|B>`, the offset is the 9th field counted from the date.
fn samples(log: &Path) -> Vec<Sample> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('=') && !l.trim_start().starts_with("Date"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Date Time IP L St 123 567 ABCD LP RP Score Offset PeerDel
            // PeerDisp RootDel RootDisp Refid MTxRx
            let mode = f.get(17)?;
            Some(Sample {
                interleaved: mode.ends_with('I'),
                offset_s: f.get(11)?.parse().ok()?,
            })
        })
        .collect()
}

/// A chronyd in the client namespace polling `server` in interleaved
/// mode, never touching the clock (`-x`), logging its measurements.
struct XleaveClient {
    chronyd: Option<Chronyd>,
    dir: std::path::PathBuf,
}

impl XleaveClient {
    fn start(topo: &Topology, server: &str, tag: &str) -> XleaveClient {
        let dir = std::env::temp_dir().join(format!(
            "ntpx-xleave-{tag}-{}-{}",
            topo.name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let directives = format!(
            "server {server} xleave minpoll -3 maxpoll -3 iburst\n\
             logdir {d}\nlog measurements\nport 0\ndriftfile {d}/drift",
            d = dir.display()
        );
        XleaveClient {
            chronyd: Some(Chronyd::start(topo.cli_cmd("chronyd"), &dir, &directives)),
            dir,
        }
    }

    fn samples(&self) -> Vec<Sample> {
        samples(&self.dir.join("measurements.log"))
    }
}

impl Drop for XleaveClient {
    fn drop(&mut self) {
        // chronyd first, then its directory.
        self.chronyd.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median_abs(v: &mut [f64]) -> f64 {
    for x in v.iter_mut() {
        *x = x.abs();
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Polls ntpx with an `xleave` chronyd until it has `want` samples (or a
/// generous deadline passes); asserts that, after the first exchanges
/// (chronyd's first request has no origin; its second is the first that
/// ntpx records), at least 90 % of the samples are interleaved. Returns
/// the server's summary.
fn xleave_against(test: &str, replies: &str) -> String {
    let topo = Topology::up();
    let mut server = match replies {
        "socket" => Server::start_socket(&topo, 2, &[]),
        _ => {
            if replies == "xdp" {
                // XDP_TX on a veth needs an XDP program on the peer.
                peer_pass(&topo);
            }
            Server::start(&topo, &["--iface", &topo.srv_if, "--replies", replies])
        }
    };
    let client = XleaveClient::start(&topo, &topo.srv_v4.to_string(), test);
    let want = 40;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60);
    while client.samples().len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let all = client.samples();
    drop(client);
    let out = server.stop();
    println!(
        "{test}: {} samples in {:.1} s",
        all.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        all.len() >= want,
        "chronyd logged {} samples:\n{all:?}\n{out}",
        all.len()
    );
    let later = &all[3..];
    let inter = later.iter().filter(|s| s.interleaved).count();
    let mut basic: Vec<f64> = all
        .iter()
        .filter(|s| !s.interleaved)
        .map(|s| s.offset_s)
        .collect();
    let mut xl: Vec<f64> = later
        .iter()
        .filter(|s| s.interleaved)
        .map(|s| s.offset_s)
        .collect();
    println!(
        "{test}: {inter} of {} samples after the first three interleaved; median |offset| \
         interleaved {:.0} ns, basic {:.0} ns ({} basic samples)",
        later.len(),
        median_abs(&mut xl) * 1e9,
        median_abs(&mut basic) * 1e9,
        basic.len()
    );
    assert!(
        inter * 10 >= later.len() * 9,
        "only {inter} of {} samples interleaved:\n{all:?}\n{out}",
        later.len()
    );
    assert!(out.contains("interleaved: "), "{out}");
    out
}

#[test]
fn chronyd_xleave_gets_interleaved_replies_from_the_workers() {
    let test = "chronyd_xleave_gets_interleaved_replies_from_the_workers";
    if !require_root(test) || !require_tool(test, "chronyd") {
        return;
    }
    xleave_against(test, "workers");
}

#[test]
fn chronyd_xleave_gets_interleaved_replies_with_replies_in_xdp() {
    let test = "chronyd_xleave_gets_interleaved_replies_with_replies_in_xdp";
    if !require_root(test) || !require_tool(test, "chronyd") {
        return;
    }
    let out = xleave_against(test, "xdp");
    // The interleaved requests went up to the workers.
    assert!(out.contains("interleaved"), "{out}");
}

#[test]
fn chronyd_xleave_gets_interleaved_replies_from_the_socket_datapath() {
    let test = "chronyd_xleave_gets_interleaved_replies_from_the_socket_datapath";
    if !require_root(test) || !require_tool(test, "chronyd") {
        return;
    }
    xleave_against(test, "socket");
}

/// `ntpx load --ping --xleave` against ntpx (replies in XDP, the workers,
/// the socket datapath): after each client's first two exchanges every
/// reply is interleaved, and the interleaved samples fill histograms of
/// their own. Prints the median |offset| of both kinds (not asserted:
/// this is a shared VM).
#[test]
fn ntpx_load_xleave_gets_interleaved_replies() {
    let test = "ntpx_load_xleave_gets_interleaved_replies";
    if !require_root(test) {
        return;
    }
    for replies in ["workers", "xdp", "socket"] {
        let topo = Topology::up();
        // (The generator's own XDP program on the client's veth is what
        // XDP_TX replies need there.)
        let mut server = match replies {
            "socket" => Server::start_socket(&topo, 1, &[]),
            _ => Server::start(&topo, &["--iface", &topo.srv_if, "--replies", replies]),
        };
        let out = run_with_timeout(
            topo.cli_cmd(NTPX).args([
                "load",
                &topo.srv_v4.to_string(),
                "--iface",
                &topo.cli_if,
                "--json",
                "--cpus",
                "0",
                "--ping",
                "8",
                "--interval",
                "20ms",
                "--duration",
                "2s",
                "--xleave",
            ]),
            60,
        );
        let summary = server.stop();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: ntpx::load::report::Summary = serde_json::from_str(&stdout).expect("JSON");
        let t = &s.total;
        println!(
            "{replies}: {} good, {} interleaved; median |offset| basic {:?} ns, interleaved {:?} ns",
            t.good,
            t.interleaved,
            t.offset_abs.p50_ns,
            t.xleave_offset_abs.as_ref().map(|p| p.p50_ns)
        );
        // 8 clients: two basic exchanges each to start, then interleaved
        // (a reply whose stamp was not yet stored, or an evicted slot,
        // costs a basic one now and then: at least 90 %).
        assert!(t.good >= 80, "{stdout}\n{summary}");
        assert!(t.interleaved * 10 >= t.good * 9, "{stdout}\n{summary}");
        assert!(t.xleave_offset_abs.is_some(), "{stdout}");
        assert!(summary.contains("interleaved: "), "{summary}");
    }
}
