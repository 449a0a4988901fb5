//! The worker watchdog end to end: "chronyd behind ntpx". A chronyd on the
//! kernel's port 123 of the server's namespace, ntpx in front of it with
//! the AF_XDP workers answering, a prober sending a request every
//! millisecond. The worker's thread alone is frozen (the cgroup v1
//! freezer, which moves single threads): its queue's requests must go to
//! the kernel, where chronyd answers (stratum 3 instead of ntpx's 1), and
//! come back to the worker once it is thawed. Both times are printed.
//!
//! Needs root and the cgroup v1 freezer; skips with a printed reason
//! without them, fails under CI=true.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_stalled_worker_leaves_its_queue_to_the_kernel_until_it_recovers() {
    let test = "a_stalled_worker_leaves_its_queue_to_the_kernel_until_it_recovers";
    if !require_root(test) || !require_tool(test, "chronyd") {
        return;
    }
    if !require_freezer(test) {
        return;
    }
    let topo = Topology::up();
    peer_pass(&topo);
    let dir = TempDir::new("ntpx-watchdog");
    let chronyd = Chronyd::start(
        topo.srv_cmd("chronyd"),
        &dir.path().join("chronyd"),
        "local stratum 3\nallow all\nport 123",
    );
    let mut srv = Server::start(&topo, &["--iface", &topo.srv_if, "--replies", "workers"]);
    let prober = topo
        .cli_cmd("python3")
        .args(["-c", PROBER, &topo.srv_v4.to_string(), "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the prober");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = srv.pid().expect("the server runs");
    let tid = thread_named(pid, "ntpx-q0").expect("the worker of queue 0");
    let frozen_at = unix_now();
    let frozen = Frozen::new(&format!("ntpx-{}", topo.name), &tid);
    std::thread::sleep(Duration::from_secs(3));
    let thawed_at = unix_now();
    frozen.thaw();
    let out = prober.wait_with_output().expect("the prober");
    drop(frozen);
    let log = srv.stop();
    drop(chronyd);

    let replies = probe_replies(&out.stdout);
    let (before, fallback, back) = fallback_times(&replies, (1, 3), frozen_at, thawed_at);
    println!(
        "{test}: {} replies; {before} from ntpx before the freeze; chronyd answered {:?} ms \
         after the worker froze; ntpx again {:?} ms after it thawed",
        replies.len(),
        fallback.map(|s| (s * 1e3).round()),
        back.map(|s| (s * 1e3).round())
    );
    assert!(before > 100, "ntpx (stratum 1) answered before the freeze");
    let fallback = fallback.expect("chronyd answered while the worker was frozen");
    assert!(
        fallback < 2.5,
        "the kernel took over within 2.5 s: {fallback} s"
    );
    let back = back.expect("ntpx answered again after the thaw");
    assert!(back < 2.5, "{back} s");
    assert!(log.contains("a worker stopped making progress"), "{log}");
    assert!(log.contains("the worker turns again"), "{log}");
}
