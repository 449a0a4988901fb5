//! The policy in XDP (`bpf/policy.h`) through `BPF_PROG_TEST_RUN`: access
//! lists with both actions, the rate limiter (burst, leak, KoD RATE and
//! its own limit, one client whatever its source port, IPv6 by /64), the
//! global ceiling and the modes left to the kernel. Every Kiss-o'-Death the
//! program writes must equal, byte for byte, the one the Rust responder
//! writes for the same frame (`respond_kiss`, which the AF_XDP workers and
//! the socket datapath use).
//!
//! The program's clock is the kernel's: the runs here take milliseconds,
//! in which a bucket refills by a request or so; the bounds allow for that
//! and for the random leak, never for timing. Needs root (BPF); skips
//! with a message without it, fails under CI.

mod common;

use etherparse::PacketBuilder;
use ntpx::proto::drops::DropReason;
use ntpx::proto::ntp::{KissCode, Leap, NtpShort, NtpTimestamp, ServerState};
use ntpx::proto::policy::Policy;
use ntpx::proto::policy::access::{Access, Action, Prefixes};
use ntpx::proto::policy::limit::Limits;
use ntpx::proto::respond::{Responder, respond_kiss};
use ntpx::server::program::{ProgramConfig, XdpCounters, XdpProgram, XdpState};
use ntpx::sys::bpf::{XDP_DROP, XDP_PASS, XDP_TX};
use ntpx::sys::clock::{TaiScale, tai_now_ns};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const CLI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const SRV4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SRV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

macro_rules! require_privileges {
    () => {
        if !common::require_bpf_privileges() {
            return;
        }
    };
}

fn responder() -> Responder {
    let mut r = Responder::new(SRV_MAC, vec![SRV4], vec![SRV6]);
    r.add_local_prefixes(
        &["198.18.0.1/24".parse().unwrap()],
        &["2001:db8::1/64".parse().unwrap()],
    );
    r
}

fn state() -> ServerState {
    ServerState {
        leap: Leap::None,
        stratum: 2,
        precision: -20,
        root_delay: NtpShort::from_bits(0x10),
        root_dispersion: NtpShort::from_bits(0x20),
        ref_id: [192, 0, 2, 53],
        ref_time: NtpTimestamp::from_unix_nanos(1_700_000_000_000_000_000),
    }
}

/// The program with `policy` and `kernel_modes`, answering in XDP.
fn load(policy: Policy, kernel_modes: u8) -> XdpProgram {
    let mut cfg = ProgramConfig::for_responder(&responder());
    cfg.policy = Some(policy);
    cfg.kernel_modes = kernel_modes;
    load_cfg(&cfg, true)
}

/// The program of `cfg`, its state published: replies in XDP or not.
fn load_cfg(cfg: &ProgramConfig, reply_in_xdp: bool) -> XdpProgram {
    let prog = XdpProgram::load(cfg).unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
    prog.state_writer()
        .unwrap()
        .publish(&XdpState {
            ntp: state(),
            tai: TaiScale::fixed(37),
            phc: None,
            written_tai_ns: tai_now_ns(),
            max_age_ns: 60_000_000_000,
            reply_in_xdp,
            partial_to_workers: false,
            draining: false,
        })
        .unwrap();
    prog
}

fn ntp(first: u8, nonce: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = first;
    p[2] = 6;
    p[40..48].copy_from_slice(&nonce.to_be_bytes());
    p
}

/// A request from `src`:`sport` (IPv4 or IPv6) carrying `payload`.
fn frame(src: IpAddr, sport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLI_MAC, SRV_MAC);
    let step = match src {
        IpAddr::V4(a) => eth.ipv4(a.octets(), SRV4.octets(), 64).udp(sport, 123),
        IpAddr::V6(a) => eth.ipv6(a.octets(), SRV6.octets(), 64).udp(sport, 123),
    };
    let mut f = Vec::new();
    step.write(&mut f, payload).unwrap();
    f
}

fn request(src: &str, sport: u16, nonce: u64) -> Vec<u8> {
    frame(src.parse().unwrap(), sport, &ntp(0x23, nonce))
}

/// What one frame became.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Answer,
    Kiss(KissCode),
    Drop(DropReason),
    Kernel(&'static str),
}

/// Runs one frame; a KoD must be the Rust responder's, byte for byte.
fn run(prog: &XdpProgram, f: &[u8]) -> Fate {
    let c0 = prog.counters().unwrap();
    let d0 = prog.counters_reader().unwrap().drops().unwrap();
    let r = prog.test_run(f).expect("BPF_PROG_TEST_RUN");
    let c = prog.counters().unwrap().since(&c0);
    match r.verdict {
        XDP_TX if c.replied == 1 => Fate::Answer,
        XDP_TX => {
            let code = if c.kod_rate == 1 {
                KissCode::RATE
            } else {
                assert_eq!(c.kod_deny, 1, "{:?}", c.fields());
                KissCode::DENY
            };
            let mut rust = f.to_vec();
            let reply = respond_kiss(&mut rust, &responder(), &state(), code)
                .expect("the Rust responder answers the same frame");
            assert_eq!(
                r.frame(),
                &rust[..reply.len],
                "the KoD differs from the Rust one"
            );
            Fate::Kiss(code)
        }
        XDP_DROP => {
            let d = prog.counters_reader().unwrap().drops().unwrap();
            let hit: Vec<DropReason> = d
                .iter()
                .zip(&d0)
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, _)| a.0)
                .collect();
            assert_eq!(hit.len(), 1, "{hit:?}");
            Fate::Drop(hit[0])
        }
        XDP_PASS => {
            let fate = c
                .fields()
                .into_iter()
                .find(|&(n, v)| v == 1 && n.starts_with("pass_"))
                .map(|(n, _)| n)
                .expect("a pass counter");
            Fate::Kernel(fate)
        }
        v => panic!("verdict {v}"),
    }
}

fn no_limits() -> Limits {
    Limits {
        interval_ns: 0,
        ..Limits::default()
    }
}

fn nets(s: &[&str]) -> Prefixes {
    Prefixes::new(&s.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>())
}

#[test]
fn access_lists_ignore_or_deny() {
    require_privileges!();
    let access = Access {
        deny: nets(&["198.18.0.128/25", "2001:db8:bad::/48"]),
        allow: nets(&["198.18.0.0/24"]),
        action: Action::Deny,
    };
    let deny = load(
        Policy {
            access: access.clone(),
            limits: no_limits(),
        },
        0,
    );
    let ignore = load(
        Policy {
            access: Access {
                action: Action::Ignore,
                ..access
            },
            limits: no_limits(),
        },
        0,
    );
    let cases = [
        ("198.18.0.2", Fate::Answer),
        ("198.18.0.200", Fate::Kiss(KissCode::DENY)), // denied inside the allowed
        ("203.0.113.5", Fate::Kiss(KissCode::DENY)),  // outside the allow list
        ("2001:db8::2", Fate::Answer),                // no IPv6 allow list
        ("2001:db8:bad:7::2", Fate::Kiss(KissCode::DENY)),
    ];
    for (i, (src, fate)) in cases.into_iter().enumerate() {
        let f = request(src, 40_000, i as u64 + 1);
        let ignored = if fate == Fate::Answer {
            Fate::Answer
        } else {
            Fate::Drop(DropReason::Access)
        };
        assert_eq!(run(&deny, &f), fate, "{src}");
        assert_eq!(run(&ignore, &f), ignored, "{src}");
    }
}

/// The default limits against a flood from one address, rotating its
/// source port: one client, its burst answered, then about one request in
/// four (the leak), at most a KoD or two, the rest dropped.
#[test]
fn a_flood_from_one_address_gets_the_burst_then_the_leak() {
    require_privileges!();
    let limits = Limits::default();
    let prog = load(
        Policy {
            access: Access::default(),
            limits,
        },
        0,
    );
    let c0 = prog.counters().unwrap();
    let start = std::time::Instant::now();
    let n = 4000u64;
    let mut fates = std::collections::BTreeMap::new();
    for i in 0..n {
        let sport = 1024 + (i * 7919 % 64_000) as u16;
        let f = request("198.18.0.2", sport, i + 1);
        *fates.entry(format!("{:?}", run(&prog, &f))).or_insert(0u64) += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let c: XdpCounters = prog.counters().unwrap().since(&c0);
    let answered = fates.get("Answer").copied().unwrap_or(0);
    let refilled = (secs * 1e9 / limits.interval_ns as f64).ceil() as u64 + 1;
    let burst = u64::from(limits.burst);
    let leaked_expected = (n - burst) as f64 / f64::from(limits.leak);
    println!(
        "{n} requests in {secs:.2} s: {fates:?}; counters {:?}",
        c.fields()
    );
    assert_eq!(c.rl_new, 1, "one client, whatever its port");
    assert_eq!(c.rl_clients, 1, "one episode");
    assert_eq!(c.rl_speedup, 0, "a steady flood does not speed up");
    let within = n - c.rl_limited;
    assert!(
        within >= burst && within <= burst + refilled,
        "{within} within the limit"
    );
    assert!(
        (c.rl_leaked as f64) > 0.8 * leaked_expected
            && (c.rl_leaked as f64) < 1.2 * leaked_expected + refilled as f64,
        "leaked {} of {} limited",
        c.rl_leaked,
        c.rl_limited
    );
    assert_eq!(answered, within + c.rl_leaked);
    // KoDs: at most one per second, and some: 1 in 8 of the limited.
    let kod = fates
        .get("Kiss(KissCode([82, 65, 84, 69]))")
        .copied()
        .unwrap_or(0);
    assert!(
        kod >= 1 && kod as f64 <= secs.ceil() + 1.0,
        "{kod} KoD in {secs:.2} s"
    );
    assert_eq!(
        fates.get("Drop(RateLimited)").copied().unwrap_or(0),
        c.rl_limited - c.rl_leaked - kod
    );
}

#[test]
fn ipv6_clients_are_their_slash_64() {
    require_privileges!();
    let limits = Limits {
        burst: 2,
        leak: 0,
        kod: 0,
        ..Limits::default()
    };
    let prog = load(
        Policy {
            access: Access::default(),
            limits,
        },
        0,
    );
    // Two addresses of one /64 share its bucket of 2; another /64 has its own.
    assert_eq!(
        run(&prog, &request("2001:db8:0:7::1", 5000, 1)),
        Fate::Answer
    );
    assert_eq!(
        run(&prog, &request("2001:db8:0:7::ffff", 5001, 2)),
        Fate::Answer
    );
    assert_eq!(
        run(&prog, &request("2001:db8:0:7::2", 5002, 3)),
        Fate::Drop(DropReason::RateLimited)
    );
    assert_eq!(
        run(&prog, &request("2001:db8:0:8::1", 5003, 4)),
        Fate::Answer
    );
    assert_eq!(prog.counters().unwrap().rl_new, 2);
    // The client mix counts them as IPv6, none as IPv4.
    let mix = prog.counters_reader().unwrap().client_mix().unwrap();
    assert_eq!(mix.by_family(), [0, 4]);
    assert_eq!(mix.kinds(), [(6, 4, 3, 4)]);
}

#[test]
fn the_ceiling_holds_over_all_clients() {
    require_privileges!();
    let limits = Limits {
        ceiling_interval_ns: 1_000_000, // 1000/s
        ceiling_burst: 100,
        ..Limits::default()
    };
    let prog = load(
        Policy {
            access: Access::default(),
            limits,
        },
        0,
    );
    let start = std::time::Instant::now();
    let mut answered = 0u64;
    let mut ceiling = 0u64;
    for i in 0..1000u32 {
        let src = Ipv4Addr::from(0xc612_0000 | (i % 250 + 2));
        match run(
            &prog,
            &frame(src.into(), 3000, &ntp(0x23, u64::from(i) + 1)),
        ) {
            Fate::Answer => answered += 1,
            Fate::Drop(DropReason::Ceiling) => ceiling += 1,
            other => panic!("{other:?}"),
        }
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("1000 requests from 250 clients in {ms:.0} ms: {answered} answered");
    assert_eq!(answered + ceiling, 1000);
    assert!(
        answered >= 100 && answered as f64 <= 101.0 + ms,
        "{answered} in {ms:.0} ms"
    );
}

#[test]
fn modes_1_2_6_go_to_the_kernel_only_when_configured() {
    require_privileges!();
    let off = load(Policy::default(), 0);
    let on = load(Policy::default(), (1 << 1) | (1 << 2) | (1 << 6));
    for (mode, n) in [(1u8, 11u64), (2, 12), (6, 13), (7, 14), (5, 15), (0, 16)] {
        let f = frame("198.18.0.2".parse().unwrap(), 123, &ntp(0x20 | mode, n));
        let passed = [1, 2, 6].contains(&mode);
        let expect = if passed {
            Fate::Kernel("pass_kernel_mode")
        } else {
            Fate::Drop(DropReason::NtpMode)
        };
        assert_eq!(run(&on, &f), expect, "mode {mode}");
        assert_eq!(
            run(&off, &f),
            Fate::Drop(DropReason::NtpMode),
            "mode {mode}"
        );
    }
}

/// The program against the Rust model (`Limiter`, which the socket
/// datapath runs) on one scripted sequence, with no randomness (no leak,
/// a KoD for every limited request the KoD gap allows) and a bucket that
/// cannot refill during the run: the same verdict, request by request.
#[test]
fn the_program_decides_as_the_rust_model() {
    require_privileges!();
    let policy = Policy {
        access: Access {
            deny: nets(&["198.18.0.128/25"]),
            allow: Prefixes::default(),
            action: Action::Deny,
        },
        limits: Limits {
            interval_ns: 10_000_000_000,
            burst: 5,
            leak: 0,
            kod: 1,
            kod_gap_ns: 3_600_000_000_000,
            ..Limits::default()
        },
    };
    let prog = load(policy.clone(), 0);
    let model = ntpx::server::limiter::Limiter::new(policy);
    let mut counts = ntpx::server::limiter::PolicyCounts::default();
    let script = [
        "198.18.0.2",
        "198.18.0.3",
        "198.18.0.200",
        "198.18.0.2",
        "198.18.0.201",
        "198.18.0.200",
    ];
    let mut n = 0;
    for round in 0..8 {
        for src in script {
            n += 1;
            let f = request(src, 1024 + n as u16, n);
            let xdp = run(&prog, &f);
            let rust = match model.decide(src.parse().unwrap(), tai_now_ns(), [1, 0], &mut counts) {
                ntpx::proto::policy::Verdict::Answer => Fate::Answer,
                ntpx::proto::policy::Verdict::Kiss(c) => {
                    counts.kissed(c); // counted when sent
                    Fate::Kiss(c)
                }
                ntpx::proto::policy::Verdict::Drop(r) => Fate::Drop(r),
            };
            assert_eq!(xdp, rust, "round {round}, {src}");
        }
    }
    let c = prog.counters().unwrap();
    assert_eq!(
        (c.rl_limited, c.rl_clients, c.kod_rate, c.kod_deny, c.rl_new),
        (
            counts.limited,
            counts.limited_clients,
            counts.kod_rate,
            counts.kod_deny,
            counts.entered
        ),
        "{counts:?}"
    );
    // Each client: its burst of 5, then one KoD RATE, then nothing; the
    // denied ones get KoD DENY while within their bucket.
    assert_eq!(counts.kod_rate, 4, "{counts:?}");
}

/// A KoD verdict for a request only a worker can judge travels in the
/// metadata; with no socket on the queue (as in a test run) it is dropped
/// under its reason, never passed to the host's daemon, which would answer
/// with the time. And a mode left to the kernel meets the policy first.
#[test]
fn a_kod_that_cannot_reach_a_worker_is_dropped() {
    require_privileges!();
    let policy = Policy {
        access: Access {
            deny: nets(&["198.18.0.128/25"]),
            allow: Prefixes::default(),
            action: Action::Deny,
        },
        limits: no_limits(),
    };
    let prog = load(policy, 1 << 6);
    // 48 bytes of NTP and an (ignored) extension field of 28 bytes: not a
    // plain request.
    let mut long = ntp(0x23, 77);
    long.extend_from_slice(&[0x00, 0x02, 0x00, 28]);
    long.resize(48 + 28, 0);
    let denied: IpAddr = "198.18.0.200".parse().unwrap();
    let allowed: IpAddr = "198.18.0.2".parse().unwrap();
    assert_eq!(
        run(&prog, &frame(allowed, 4000, &long)),
        Fate::Kernel("pass_no_socket")
    );
    assert_eq!(
        run(&prog, &frame(denied, 4000, &long)),
        Fate::Drop(DropReason::Access)
    );
    // Mode 6 to the host's daemon: allowed passes, denied is dropped.
    let control = ntp(0x26, 78);
    assert_eq!(
        run(&prog, &frame(allowed, 4001, &control)),
        Fate::Kernel("pass_kernel_mode")
    );
    assert_eq!(
        run(&prog, &frame(denied, 4001, &control)),
        Fate::Drop(DropReason::Access)
    );
}

#[test]
fn a_reload_changes_the_limits_of_the_running_program() {
    require_privileges!();
    let start = Policy {
        access: Access::default(),
        limits: no_limits(),
    };
    let prog = load(start.clone(), 0);
    let maps = prog.policy_maps().unwrap();
    let flood = |n: u64, src: &str| -> Vec<Fate> {
        (0..n)
            .map(|i| run(&prog, &request(src, 1000 + i as u16, i)))
            .collect()
    };
    assert!(flood(20, "198.18.0.9").iter().all(|f| *f == Fate::Answer));
    // On, live: a burst of 4, no leak, a KoD for every limited request.
    let tight = Policy {
        access: Access::default(),
        limits: Limits {
            interval_ns: 3_600_000_000_000,
            burst: 4,
            leak: 0,
            kod: 1,
            kod_gap_ns: 0,
            ..Limits::default()
        },
    };
    maps.apply(Some(&start), &tight).unwrap();
    let fates = flood(20, "198.18.0.10");
    assert!(fates[..4].iter().all(|f| *f == Fate::Answer), "{fates:?}");
    assert!(
        fates[4..].iter().all(|f| *f == Fate::Kiss(KissCode::RATE)),
        "{fates:?}"
    );
    // The mask, live: a /24 is one client, so .12 finds the burst that
    // .11 spent.
    let wide = Policy {
        limits: Limits {
            prefix_v4: 24,
            ..tight.limits
        },
        ..tight.clone()
    };
    maps.apply(Some(&tight), &wide).unwrap();
    assert!(flood(4, "198.18.0.11").iter().all(|f| *f == Fate::Answer));
    assert_eq!(flood(1, "198.18.0.12"), [Fate::Kiss(KissCode::RATE)]);
    // Off again: everything answered.
    maps.apply(Some(&wide), &start).unwrap();
    assert!(flood(20, "198.18.0.10").iter().all(|f| *f == Fate::Answer));
}

#[test]
fn only_the_self_probe_key_passes_the_policy() {
    require_privileges!();
    let key = 0x5eed_1234_abcd_0001u64;
    let mut cfg = ProgramConfig::for_responder(&responder());
    cfg.policy = Some(Policy {
        access: Access {
            deny: nets(&["192.0.2.0/24"]),
            allow: Prefixes::default(),
            action: Action::Ignore,
        },
        limits: no_limits(),
    });
    // A program without a key answers no probe.
    let keyless = load_cfg(&cfg, false);
    cfg.probe_key = key;
    let prog = load_cfg(&cfg, false);
    let req = request("192.0.2.1", 40123, 7);
    // The key: answered in XDP from the live state, though the source is
    // denied and clients' replies go to the workers.
    let r = prog.prober(key).unwrap().run(&req).unwrap();
    assert_eq!(r.verdict, XDP_TX);
    assert_eq!(r.frame().len(), req.len(), "never larger than the request");
    // Another key, or none: the policy drops it.
    for r in [
        prog.prober(key ^ 1).unwrap().run(&req).unwrap(),
        prog.test_run(&req).unwrap(),
        keyless.prober(0).unwrap().run(&req).unwrap(),
    ] {
        assert_eq!(r.verdict, XDP_DROP);
    }
}
