//! Replies in XDP against the Rust responder: the differential test.
//!
//! Thousands of frames (requests captured from real clients, every
//! single-byte mutation of a set of base requests, with their checksums
//! left broken and fixed again, random frames, and crafted frames for every
//! reason the program can drop under) go once each through the XDP program
//! (`BPF_PROG_TEST_RUN`) and through [`respond`]. For every frame:
//!
//! - `XDP_TX` ⇔ the responder answers, with the same bytes, when it reads
//!   the program's T2 and T3 and draws the program's random bits below the
//!   precision; T2 and T3 are in order, near now, and the UDP checksum
//!   holds (checked by etherparse);
//! - `XDP_DROP` ⇔ the responder drops it under the same reason, which the
//!   program counted in its `drops` map;
//! - passed to the kernel (not for the server, or a mode 4 reply) ⇒ the
//!   responder does not answer it either;
//! - handed to a worker (no socket in a test run: `pass_no_socket`) ⇒ the
//!   frame is untouched: the worker runs the responder itself.
//!
//! Then the state's age: a state written long ago grows the root
//! dispersion at 15 ppm, and past its bound the program answers LI 3.
//! Needs root (BPF); skips with a message without it, fails under CI.

mod common;
#[path = "fixtures/requests.rs"]
mod fixtures;

use etherparse::{PacketBuilder, VlanId};
use ntpx::proto::drops::DropReason;
use ntpx::proto::ntp::{Leap, Marker, NtpShort, NtpTimestamp, ServerState};
use ntpx::proto::respond::{Responder, respond};
use ntpx::server::program::{DROP_REASONS, ProgramConfig, XdpCounters, XdpProgram, XdpState};
use ntpx::sys::bpf::{XDP_DROP, XDP_PASS, XDP_TX};
use ntpx::sys::clock::{TaiScale, tai_now_ns, tai_to_unix_nanos};
use std::collections::BTreeMap;
use std::net::Ipv6Addr;

const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const CLI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// The captured requests' addresses.
const SRV4: [u8; 4] = [198, 18, 0, 1];
const CLI4: [u8; 4] = [198, 18, 0, 2];
const SRV6: &str = "2001:db8::1";
const CLI6: &str = "2001:db8::2";
const PRECISION: i8 = -20;

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn responder() -> Responder {
    let mut r = Responder::new(SRV_MAC, vec![SRV4.into()], vec![SRV6.parse().unwrap()]);
    r.add_local_prefixes(
        &[
            "198.18.0.1/24".parse().unwrap(),
            "198.18.0.3/24".parse().unwrap(),
            "203.0.113.9/30".parse().unwrap(),
        ],
        &[
            "2001:db8::1/64".parse().unwrap(),
            "2001:db8:1::5/64".parse().unwrap(),
        ],
    );
    r.accept_partial_checksum = true;
    r
}

fn state() -> ServerState {
    ServerState {
        leap: Leap::Insert,
        stratum: 2,
        precision: PRECISION,
        root_delay: NtpShort::from_bits(0x0000_0123),
        root_dispersion: NtpShort::from_bits(0x0000_0456),
        ref_id: [192, 0, 2, 53],
        ref_time: NtpTimestamp::from_unix_nanos(tai_to_unix_nanos(tai_now_ns(), 0))
            .wrapping_add_units(-(5i64 << 32)),
    }
}

struct Bench {
    prog: XdpProgram,
    writer: ntpx::server::program::StateWriter,
    reader: ntpx::server::program::CountersReader,
    responder: Responder,
    state: ServerState,
    /// TAI − UTC that the program converts with (this machine's kernel
    /// says 0; the program must not care), and a leap second's instant.
    tai: TaiScale,
    partial_to_workers: bool,
}

impl Bench {
    fn new(responder: Responder) -> Bench {
        Bench::with(responder, |_| {})
    }

    /// A bench whose program config `tweak` adjusts.
    fn with(responder: Responder, tweak: impl FnOnce(&mut ProgramConfig)) -> Bench {
        let mut cfg = ProgramConfig::for_responder(&responder);
        tweak(&mut cfg);
        let prog =
            XdpProgram::load(&cfg).unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
        let writer = prog.state_writer().unwrap();
        let reader = prog.counters_reader().unwrap();
        let mut b = Bench {
            prog,
            writer,
            reader,
            responder,
            state: state(),
            tai: TaiScale::fixed(37),
            partial_to_workers: false,
        };
        b.publish(tai_now_ns(), 10_000_000_000);
        b
    }

    fn publish(&mut self, written_tai_ns: u64, max_age_ns: u64) {
        self.writer
            .publish(&XdpState {
                ntp: self.state,
                tai: self.tai,
                phc: None,
                written_tai_ns,
                max_age_ns,
                reply_in_xdp: true,
                partial_to_workers: self.partial_to_workers,
                draining: false,
            })
            .unwrap();
    }

    fn drops(&self) -> [u64; DROP_REASONS] {
        let mut out = [0; DROP_REASONS];
        for (i, (_, n)) in self.reader.drops().unwrap().into_iter().enumerate() {
            out[i] = n;
        }
        out
    }
}

/// What one frame did in the program.
#[derive(Debug)]
enum Fate {
    /// The reply, the CLOCK_TAI reads around the run, and whether the
    /// program counted the request's checksum as partial.
    Tx(Vec<u8>, u64, u64, bool),
    Drop(DropReason),
    Worker,
    /// Sent to the workers as a request from an interleaved client.
    Interleaved,
    Kernel(&'static str),
}

fn run_xdp(b: &Bench, frame: &[u8]) -> Fate {
    let c0 = b.prog.counters().unwrap();
    let d0 = b.drops();
    let before = tai_now_ns();
    let r = b.prog.test_run(frame).expect("BPF_PROG_TEST_RUN");
    let after = tai_now_ns();
    let c = b.prog.counters().unwrap().since(&c0);
    let nonzero: Vec<_> = c
        .fields()
        .into_iter()
        .filter(|&(n, v)| v != 0 && n != "seen")
        .collect();
    assert_eq!(c.seen, 1);
    match r.verdict {
        XDP_TX => {
            assert!(c.replied == 1 && c.dropped == 0, "{nonzero:?}");
            Fate::Tx(r.frame().to_vec(), before, after, c.replied_partial == 1)
        }
        XDP_DROP => {
            assert_eq!(nonzero, [("dropped", 1)], "drop counters");
            let d = b.drops();
            let hit: Vec<usize> = (0..DROP_REASONS).filter(|&i| d[i] != d0[i]).collect();
            assert_eq!(hit.len(), 1, "one drop reason per dropped frame: {hit:?}");
            assert_eq!(d[hit[0]] - d0[hit[0]], 1);
            Fate::Drop(DropReason::ALL[hit[0]])
        }
        XDP_PASS => {
            assert_eq!(r.frame(), frame, "a passed frame is untouched");
            if c.interleaved == 1 {
                assert_eq!(
                    nonzero,
                    [("pass_no_socket", 1), ("interleaved", 1)],
                    "fate counters"
                );
                return Fate::Interleaved;
            }
            assert_eq!(nonzero.len(), 1, "one fate counter: {nonzero:?}");
            if c.pass_no_socket == 1 {
                Fate::Worker
            } else {
                Fate::Kernel(nonzero[0].0)
            }
        }
        v => panic!("unexpected verdict {v} ({nonzero:?})"),
    }
}

/// The NTP header's offset in a reply frame of length `len`.
fn ntp_at(len: usize) -> usize {
    len - 48
}

fn ts(b: &[u8]) -> NtpTimestamp {
    NtpTimestamp::from_bits(u64::from_be_bytes(b.try_into().unwrap()))
}

/// UDP checksum check of an untagged-or-tagged reply (independent sum).
fn udp_checksum_ok(frame: &[u8]) -> bool {
    let h = etherparse::SlicedPacket::from_ethernet(frame).expect("reply parses");
    let udp = match h.transport {
        Some(etherparse::TransportSlice::Udp(u)) => u,
        other => panic!("reply is not UDP: {other:?}"),
    };
    let expect = match h.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => udp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
            .unwrap(),
        Some(etherparse::NetSlice::Ipv6(ip)) => udp
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), udp.payload())
            .unwrap(),
        _ => panic!("reply is not IP"),
    };
    udp.checksum() == expect
}

/// One frame through both sides; returns what happened, for the tallies.
fn compare(b: &Bench, frame: &[u8]) -> Fate {
    let fate = run_xdp(b, frame);
    let mut buf = frame.to_vec();
    // The responder reads the same clock values (T2, T3) and draws the
    // same random bits below the precision as the program did: its reply
    // must then be the program's, byte for byte.
    let rust = |buf: &mut Vec<u8>, t2: NtpTimestamp, t3: NtpTimestamp| {
        let noise = (t3.to_bits() << 32) | (t2.to_bits() & 0xffff_ffff);
        respond(buf, &b.responder, &b.state, t2, || t3, noise)
    };
    match &fate {
        Fate::Tx(out, before, after, partial) => {
            let at = ntp_at(out.len());
            let (t2, t3) = (ts(&out[at + 32..at + 40]), ts(&out[at + 40..at + 48]));
            let reply = rust(&mut buf, t2, t3).unwrap_or_else(|r| {
                panic!("XDP answered what the responder drops ({r:?}): {frame:02x?}")
            });
            assert_eq!(reply.len, out.len(), "reply length");
            assert_eq!(
                reply.partial_checksum, *partial,
                "partial checksum counted alike"
            );
            assert!(
                !(*partial && b.partial_to_workers),
                "partial answered in XDP"
            );
            assert_eq!(
                out[..],
                buf[..reply.len],
                "reply bytes differ from the responder's"
            );
            assert!(udp_checksum_ok(out), "UDP checksum of the XDP reply");
            // In order, and between the clock reads around the run (give
            // or take the random bits below the precision).
            // TAI, converted with the state's offset.
            let slack = 1i64 << (32 + i32::from(PRECISION));
            let utc = |tai| NtpTimestamp::from_unix_nanos(b.tai.to_unix_nanos(tai));
            let lo = utc(*before).wrapping_add_units(-slack);
            let hi = utc(*after).wrapping_add_units(slack);
            assert!(
                !lo.is_after(t2) && t3.is_after(t2) && !t3.is_after(hi),
                "{lo:?} {t2:?} {t3:?} {hi:?}"
            );
        }
        Fate::Drop(reason) => {
            let now = NtpTimestamp::from_unix_nanos(tai_now_ns());
            assert_eq!(
                rust(&mut buf, now, now).err(),
                Some(*reason),
                "XDP dropped under {reason:?}: {frame:02x?}"
            );
        }
        Fate::Kernel(why) => {
            let now = NtpTimestamp::from_unix_nanos(tai_now_ns());
            assert!(
                rust(&mut buf, now, now).is_err(),
                "XDP passed to the kernel ({why}) a frame the responder answers: {frame:02x?}"
            );
        }
        Fate::Interleaved => {
            // The responder finds the mark too: it would record the reply.
            let now = NtpTimestamp::from_unix_nanos(tai_now_ns());
            let r = rust(&mut buf, now, now).unwrap_or_else(|r| {
                panic!("sent to the workers as interleaved, dropped by the responder ({r:?})")
            });
            assert!(
                r.record.is_some(),
                "not an interleaved request to the responder: {frame:02x?}"
            );
        }
        Fate::Worker => {
            // Only what the program may not judge goes to the workers: a
            // plain request judged by the responder never does (but for a
            // partial checksum when those go to the workers).
            if let Some(partial) = plain(b, frame) {
                assert!(
                    partial && b.partial_to_workers,
                    "a plain request went to the workers: {frame:02x?}"
                );
            }
        }
    }
    fate
}

/// `Some(partial checksum?)` if `frame` is a plain request for the server
/// that the program must judge itself (its own reading of the rule, with
/// etherparse): IPv4 without options or IPv6 with UDP next, not a
/// fragment, IP and UDP lengths agreeing on 48 bytes of NTP, to a served
/// address and port, not mode 4, and good enough that the responder
/// answers it.
fn plain(b: &Bench, frame: &[u8]) -> Option<bool> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let udp = match p.transport? {
        TransportSlice::Udp(u) => u,
        _ => return None,
    };
    let ours = match p.net? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            h.ihl() == 5
                && !h.is_fragmenting_payload()
                && h.total_len() == 76
                && b.responder.v4.contains(&h.destination_addr())
        }
        NetSlice::Ipv6(ip) => {
            ip.extensions().is_empty()
                && ip.header().payload_length() == 56
                && b.responder.v6.contains(&ip.header().destination_addr())
        }
        _ => false,
    };
    let payload = udp.payload();
    if !ours || udp.length() != 56 || udp.destination_port() != 123 || payload.len() != 48 {
        return None;
    }
    if payload[0] & 7 == 4 {
        return None;
    }
    let mut buf = frame.to_vec();
    let now = NtpTimestamp::from_unix_nanos(tai_now_ns());
    respond(&mut buf, &b.responder, &b.state, now, || now, 0)
        .ok()
        .map(|r| r.partial_checksum)
}

// ---- frames ----

fn ntp_request(first: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = first;
    p[2] = 6;
    p[3] = 0xe9;
    if len >= 48 {
        p[40..48].copy_from_slice(&[0xe9, 0x1b, 0x2c, 0x3d, 0x11, 0x22, 0x33, 0x44]);
    }
    p
}

fn build4(vlans: &[u16], src: [u8; 4], sport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLI_MAC, SRV_MAC);
    let step = match vlans {
        [] => eth.ipv4(src, SRV4, 64),
        [a] => eth
            .single_vlan(VlanId::try_new(*a).unwrap())
            .ipv4(src, SRV4, 64),
        [a, b, ..] => eth
            .double_vlan(VlanId::try_new(*a).unwrap(), VlanId::try_new(*b).unwrap())
            .ipv4(src, SRV4, 64),
    };
    let step = step.udp(sport, 123);
    let mut f = Vec::new();
    step.write(&mut f, payload).unwrap();
    f
}

fn build6(vlans: &[u16], src: [u8; 16], sport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLI_MAC, SRV_MAC);
    let step = match vlans {
        [] => eth.ipv6(src, v6(SRV6), 64),
        [a, ..] => eth
            .single_vlan(VlanId::try_new(*a).unwrap())
            .ipv6(src, v6(SRV6), 64),
    };
    let step = step.udp(sport, 123);
    let mut f = Vec::new();
    step.write(&mut f, payload).unwrap();
    f
}

/// Base requests: built ones (both families, tags, a v3 request, padding)
/// and every captured one, readdressed to our MAC.
fn bases() -> Vec<Vec<u8>> {
    let req = ntp_request(0x23, 48);
    let mut v = vec![
        build4(&[], CLI4, 40123, &req),
        build6(&[], v6(CLI6), 40123, &req),
        build4(&[100], CLI4, 50000, &req),
        build4(&[7, 100], CLI4, 50001, &ntp_request(0x1b, 48)),
        build6(&[42], v6(CLI6), 123, &req),
    ];
    let mut padded = build4(&[], CLI4, 40124, &req);
    padded.extend_from_slice(&[0; 6]);
    v.push(padded);
    for (_, frame) in captured() {
        v.push(frame);
    }
    v
}

fn captured() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("chrony", fixtures::CHRONY_REQUEST_FRAME),
        ("ntpdate", fixtures::NTPDATE_REQUEST_FRAME),
        ("sntp", fixtures::SNTP_REQUEST_FRAME),
        ("sntp v6", fixtures::SNTP_V6_REQUEST_FRAME),
        ("ntpd", fixtures::NTPD_REQUEST_FRAME),
    ]
    .into_iter()
    .map(|(n, f)| {
        let mut f = f.to_vec();
        f[..6].copy_from_slice(&SRV_MAC);
        (n, f)
    })
    .collect()
}

fn sum16(mut acc: u64, data: &[u8]) -> u64 {
    for c in data.chunks(2) {
        acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Recomputes the IPv4 header and UDP checksums of an untagged or tagged
/// frame wherever its (possibly mutated) headers let us: mutations then
/// reach the checks behind the checksums.
fn fix_checksums(f: &mut [u8]) {
    let mut at = 12;
    let mut et = u16::from_be_bytes([f[at], f[at + 1]]);
    while (et == 0x8100 || et == 0x88a8) && f.len() >= at + 6 {
        at += 4;
        et = u16::from_be_bytes([f[at], f[at + 1]]);
    }
    let l3 = at + 2;
    if et == 0x0800 && f.len() >= l3 + 20 {
        let ihl = usize::from(f[l3] & 0xf) * 4;
        if ihl < 20 || f.len() < l3 + ihl {
            return;
        }
        f[l3 + 10..l3 + 12].fill(0);
        let c = !fold(sum16(0, &f[l3..l3 + ihl]));
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
        if f[l3 + 9] != 17 || total < ihl + 8 || f.len() < l3 + total {
            return;
        }
        let u = l3 + ihl;
        let len = total - ihl;
        f[u + 6..u + 8].fill(0);
        let pseudo = sum16(
            sum16(17 + len as u64, &f[l3 + 12..l3 + 16]),
            &f[l3 + 16..l3 + 20],
        );
        let c = !fold(sum16(pseudo, &f[u..u + len]));
        f[u + 6..u + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    } else if et == 0x86dd && f.len() >= l3 + 48 && f[l3 + 6] == 17 {
        let u = l3 + 40;
        let len = usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
        if f.len() < u + len || len < 8 {
            return;
        }
        f[u + 6..u + 8].fill(0);
        let pseudo = sum16(17 + len as u64, &f[l3 + 8..l3 + 40]);
        let c = !fold(sum16(pseudo, &f[u..u + len]));
        f[u + 6..u + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    }
}

/// Frames made to hit each reason the program drops under.
fn crafted() -> Vec<(DropReason, Vec<u8>)> {
    let req = ntp_request(0x23, 48);
    let mut out = Vec::new();
    for i in 0..10u8 {
        let port = 40000 + u16::from(i);
        let base4 = build4(&[], CLI4, port, &req);
        let base6 = build6(&[], v6(CLI6), port, &req);
        let mut f = base4.clone();
        f[0] = 0x01 | (i << 2);
        out.push((DropReason::NonUnicast, f));
        let mut f = base6.clone();
        f[5] ^= i + 1;
        out.push((DropReason::OtherHost, f));
        let mut f = base4.clone();
        f[6..12].fill(0);
        out.push((DropReason::BadSourceMac, f.clone()));
        f[6] = 0xff;
        out.push((DropReason::BadSourceMac, f));
        let mut f = base4.clone();
        f[14 + 10] ^= i + 1;
        out.push((DropReason::BadIpChecksum, f));
        for src in [[0, 1, 2, i], [127, 0, 0, i], [224 + i, 0, 0, 1]] {
            out.push((DropReason::BadSource, build4(&[], src, port, &req)));
        }
        for src in ["::", "::1", "ff02::1", "::ffff:198.18.0.2"] {
            out.push((DropReason::BadSource, build6(&[], v6(src), port, &req)));
        }
        out.push((
            DropReason::OwnSource,
            build4(&[], [198, 18, 0, 3], port, &req),
        ));
        out.push((
            DropReason::OwnSource,
            build6(&[], v6("2001:db8:1::5"), port, &req),
        ));
        for src in [[198, 18, 0, 255], [198, 18, 0, 0], [203, 0, 113, 11]] {
            out.push((DropReason::DirectedBroadcast, build4(&[], src, port, &req)));
        }
        out.push((DropReason::SrcPortZero, build4(&[], CLI4, 0, &req)));
        out.push((DropReason::SrcPortZero, build6(&[], v6(CLI6), 0, &req)));
        for p in [7, 13, 17, 19, 37] {
            out.push((
                DropReason::LoopPort,
                build4(&[u16::from(i % 3)], CLI4, p, &req),
            ));
        }
        let mut f = base4.clone();
        let n = f.len();
        f[n - 1] ^= 0x55 ^ i;
        out.push((DropReason::BadUdpChecksum, f));
        let mut f = base6.clone();
        f[14 + 40 + 6..14 + 40 + 8].fill(0);
        out.push((DropReason::BadUdpChecksum, f));
        for vn in [0, 5, 6, 7] {
            out.push((
                DropReason::NtpVersion,
                build4(&[], CLI4, port, &ntp_request(vn << 3 | 3, 48)),
            ));
        }
        for mode in [0, 1, 2, 5, 6, 7] {
            out.push((
                DropReason::NtpMode,
                build6(&[], v6(CLI6), port, &ntp_request(0x20 | mode, 48)),
            ));
        }
    }
    out
}

type Tally = BTreeMap<String, u64>;

/// One frame through both sides, counted under its fate; keeps the state
/// young (no aging in these comparisons) every 200 frames.
fn go(b: &mut Bench, frame: &[u8], tally: &mut Tally) {
    let n: u64 = tally.values().sum();
    if n.is_multiple_of(200) {
        b.publish(tai_now_ns(), 10_000_000_000);
    }
    let key = match compare(b, frame) {
        Fate::Tx(.., true) => "xdp_tx partial".to_string(),
        Fate::Tx(..) => "xdp_tx".to_string(),
        Fate::Drop(r) => format!("drop {}", r.label()),
        Fate::Worker => "worker".to_string(),
        Fate::Interleaved => "interleaved".to_string(),
        Fate::Kernel(why) => format!("kernel {why}"),
    };
    *tally.entry(key).or_default() += 1;
}

/// Every single-byte mutation of every base (checksums broken, and fixed),
/// every truncation, `random` random variations and a tenth as many
/// frames of noise.
fn mutations(b: &mut Bench, bases: &[Vec<u8>], random: usize, tally: &mut Tally) {
    for base in bases {
        for i in 0..base.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut f = base.clone();
                f[i] ^= x;
                go(b, &f, tally);
                fix_checksums(&mut f);
                go(b, &f, tally);
            }
        }
        for len in 60..base.len() {
            go(b, &base[..len], tally);
        }
    }
    let mut rng = fastrand::Rng::with_seed(0x6e74_7078);
    for _ in 0..random {
        let mut f = bases[rng.usize(..bases.len())].clone();
        for _ in 0..rng.usize(1..5) {
            let i = rng.usize(..f.len());
            f[i] = rng.u8(..);
        }
        match rng.u8(..8) {
            0 => f.truncate(rng.usize(60..=f.len())),
            1 => f.extend((0..rng.usize(1..40)).map(|_| rng.u8(..))),
            _ => {}
        }
        if rng.bool() {
            fix_checksums(&mut f);
        }
        go(b, &f, tally);
    }
    for _ in 0..random / 10 {
        let f: Vec<u8> = (0..rng.usize(60..200)).map(|_| rng.u8(..)).collect();
        go(b, &f, tally);
    }
}

/// `frame` (untagged) with its UDP checksum in the partial form a veth
/// peer's offload leaves: the folded pseudo-header sum only.
fn partial(mut f: Vec<u8>) -> Vec<u8> {
    let (u, pseudo) = if f[12..14] == [0x08, 0x00] {
        (34, sum16(sum16(17 + 56, &f[26..30]), &f[30..34]))
    } else {
        (54, sum16(17 + 56, &f[22..54]))
    };
    f[u + 6..u + 8].copy_from_slice(&fold(pseudo).to_be_bytes());
    f
}

#[test]
fn replies_in_xdp_match_the_rust_responder() {
    if !common::require_root("replies_in_xdp_match_the_rust_responder") {
        return;
    }
    let mut b = Bench::new(responder());
    let mut tally = Tally::new();

    // Every captured request is answered in XDP.
    for (name, f) in captured() {
        assert!(
            matches!(compare(&b, &f), Fate::Tx(..)),
            "the captured {name} request is answered in XDP"
        );
    }
    // Crafted frames drop under the reason they were made for.
    for (reason, f) in crafted() {
        match compare(&b, &f) {
            Fate::Drop(r) => assert_eq!(r, reason, "{f:02x?}"),
            other => panic!("made for {reason:?}, got {other:?}: {f:02x?}"),
        }
        *tally.entry(format!("drop {}", reason.label())).or_default() += 1;
    }
    let mut bases = bases();
    let req = ntp_request(0x23, 48);
    bases.push(partial(build4(&[], CLI4, 40200, &req)));
    bases.push(partial(build6(&[], v6(CLI6), 40201, &req)));
    mutations(&mut b, &bases, 4000, &mut tally);

    let total: u64 = tally.values().sum();
    eprintln!("{total} frames: {tally:#?}");
    assert!(total >= 10_000, "at least ten thousand frames, got {total}");
    assert!(
        tally.get("xdp_tx").copied().unwrap_or(0) >= 500,
        "{tally:?}"
    );
    assert!(
        tally.get("xdp_tx partial").copied().unwrap_or(0) >= 10,
        "{tally:?}"
    );
    for r in [
        DropReason::NonUnicast,
        DropReason::OtherHost,
        DropReason::BadSourceMac,
        DropReason::BadIpChecksum,
        DropReason::BadSource,
        DropReason::OwnSource,
        DropReason::DirectedBroadcast,
        DropReason::SrcPortZero,
        DropReason::LoopPort,
        DropReason::BadUdpChecksum,
        DropReason::NtpVersion,
        DropReason::NtpMode,
    ] {
        let seen = tally
            .get(&format!("drop {}", r.label()))
            .copied()
            .unwrap_or(0);
        assert!(
            seen >= 10,
            "at least 10 frames dropped under {r:?}, got {seen}"
        );
    }
    assert!(
        tally.get("worker").copied().unwrap_or(0) >= 100,
        "{tally:?}"
    );
}

/// The other settings of the responder, each of which the program must
/// follow too: partial checksums refused, loop ports allowed, a minimum
/// poll, a reference time in the future (clamped to T3), and (as in
/// generic mode) requests with partial checksums sent to the workers.
/// Interleaved mode: with a marker, every T2 the program writes carries
/// the responder's mark (the replies still match byte for byte, every T3
/// has its lowest bit clear), and a request that echoes a T2 as its origin
/// (NTPv4, receive ≠ transmit) from the client it was sent to goes to the
/// workers, counted. From another client, with a bit of the mark flipped,
/// with receive = transmit, or as NTPv3, it is answered here.
#[test]
fn interleaved_requests_go_to_the_workers() {
    if !common::require_root("interleaved_requests_go_to_the_workers") {
        return;
    }
    let mut r = responder();
    r.interleave = Some(Marker::new(
        [0x5eed_0000_1234_5678, 0x0bad_cafe_f00d_d00d],
        PRECISION,
    ));
    let mut b = Bench::new(r);
    let mut tally = Tally::new();
    mutations(&mut b, &bases()[..2], 300, &mut tally);
    eprintln!("with marks: {tally:#?}");
    let count = |t: &Tally, k: &str| t.get(k).copied().unwrap_or(0);
    assert!(count(&tally, "xdp_tx") >= 100, "{tally:?}");

    let other4 = [198, 18, 0, 77];
    let mut other6 = v6(CLI6);
    other6[15] = 0x77;
    for family in [4, 6] {
        let build = |src_other: bool, payload: &[u8]| match (family, src_other) {
            (4, false) => build4(&[], CLI4, 40100, payload),
            (4, true) => build4(&[], other4, 40100, payload),
            (_, false) => build6(&[], v6(CLI6), 40100, payload),
            (_, true) => build6(&[], other6, 40100, payload),
        };
        let req = ntp_request(0x23, 48);
        let Fate::Tx(out, ..) = compare(&b, &build(false, &req)) else {
            panic!("a plain request was not answered");
        };
        let at = ntp_at(out.len());
        let t2: [u8; 8] = out[at + 32..at + 40].try_into().unwrap();
        let t3: [u8; 8] = out[at + 40..at + 48].try_into().unwrap();
        assert_eq!(t2[7] & 1, 1, "T2 carries the flag");
        assert_eq!(t3[7] & 1, 0, "T3 does not");
        // The interleaved client's next request.
        let mut next = req.clone();
        next[24..32].copy_from_slice(&t2);
        next[32..40].copy_from_slice(&[0xe9, 0x1b, 0x2c, 0x3e, 0, 0, 0, 1]);
        next[40..48].copy_from_slice(&[0xe9, 0x1b, 0x2c, 0x3f, 0, 0, 0, 2]);
        assert!(matches!(
            compare(&b, &build(false, &next)),
            Fate::Interleaved
        ));
        // A basic client echoing T3: answered here.
        let mut basic = next.clone();
        basic[24..32].copy_from_slice(&t3);
        assert!(matches!(compare(&b, &build(false, &basic)), Fate::Tx(..)));
        // Another client with that origin (spoofed, or a guess).
        assert!(matches!(compare(&b, &build(true, &next)), Fate::Tx(..)));
        // A bit of the mark flipped.
        let mut flipped = next.clone();
        flipped[31] ^= 0x02;
        assert!(matches!(compare(&b, &build(false, &flipped)), Fate::Tx(..)));
        // receive = transmit.
        let mut same = next.clone();
        same.copy_within(40..48, 32);
        assert!(matches!(compare(&b, &build(false, &same)), Fate::Tx(..)));
        // NTPv3.
        let mut v3 = next.clone();
        v3[0] = 0x1b;
        assert!(matches!(compare(&b, &build(false, &v3)), Fate::Tx(..)));
    }
}

#[test]
fn other_settings_match_the_rust_responder_too() {
    if !common::require_root("other_settings_match_the_rust_responder_too") {
        return;
    }
    let req = ntp_request(0x23, 48);
    let mut bases = bases();
    bases.push(partial(build4(&[], CLI4, 40200, &req)));
    bases.push(partial(build6(&[], v6(CLI6), 40201, &req)));
    for p in [7, 19, 37] {
        bases.push(build4(&[], CLI4, p, &req));
    }
    let mut poll = ntp_request(0x23, 48);
    poll[2] = 3;
    bases.push(build6(&[], v6(CLI6), 40202, &poll));

    for (accept_partial, to_workers) in [(false, false), (true, true)] {
        let mut r = responder();
        r.accept_partial_checksum = accept_partial;
        r.drop_loop_ports = false;
        r.policy.min_poll = 6;
        let mut b = Bench::new(r);
        b.partial_to_workers = to_workers;
        b.tai = TaiScale::fixed(0);
        b.state.ref_time =
            NtpTimestamp::from_unix_nanos(tai_now_ns()).wrapping_add_units(3600i64 << 32);
        b.publish(tai_now_ns(), 10_000_000_000);
        let mut tally = Tally::new();
        mutations(&mut b, &bases, 1000, &mut tally);
        eprintln!("partial accepted {accept_partial}, to workers {to_workers}: {tally:#?}");
        let count = |k: &str| tally.get(k).copied().unwrap_or(0);
        assert!(count("xdp_tx") >= 500, "{tally:?}");
        assert_eq!(count("xdp_tx partial"), 0, "{tally:?}");
        if accept_partial {
            assert!(count("worker") >= 20, "{tally:?}");
        } else {
            assert!(count("drop bad_udp_checksum") >= 100, "{tally:?}");
        }
        assert_eq!(count("drop loop_port"), 0, "{tally:?}");
    }
}

/// `on_unsync = "drop"`: an unsynchronised server (its own state, or one
/// older than its bound) sends nothing, counted as `unsynchronized`, in
/// XDP exactly where the responder does; a synchronised one answers.
#[test]
fn unsynchronised_drop_matches_the_rust_responder() {
    if !common::require_root("unsynchronised_drop_matches_the_rust_responder") {
        return;
    }
    let mut r = responder();
    r.policy.drop_unsynchronized = true;
    let mut b = Bench::new(r);
    b.state = ServerState::unsynchronized(PRECISION);
    b.publish(tai_now_ns(), 10_000_000_000);
    let mut tally = Tally::new();
    mutations(&mut b, &bases()[..2], 500, &mut tally);
    let count = |t: &Tally, k: &str| t.get(k).copied().unwrap_or(0);
    assert_eq!(count(&tally, "xdp_tx"), 0, "{tally:?}");
    assert!(count(&tally, "drop unsynchronized") >= 100, "{tally:?}");
    // Synchronised but stale: the same.
    b.state = state();
    b.publish(tai_now_ns() - 11_000_000_000, 10_000_000_000);
    let frame = build4(&[], CLI4, 40123, &ntp_request(0x23, 48));
    assert!(matches!(
        run_xdp(&b, &frame),
        Fate::Drop(DropReason::Unsynchronized)
    ));
    // Synchronised and fresh: answered.
    b.publish(tai_now_ns(), 10_000_000_000);
    let mut tally = Tally::new();
    mutations(&mut b, &bases()[..2], 500, &mut tally);
    assert!(count(&tally, "xdp_tx") >= 50, "{tally:?}");
    assert_eq!(count(&tally, "drop unsynchronized"), 0, "{tally:?}");
}

/// A leap second in XDP: the program converts each stamp with the TAI
/// offset in force at its instant (not one refreshed once a second), and
/// stops announcing the leap once it is over, as the workers do
/// (`Snapshot::header_at`, `TaiScale`). The instant is set around this
/// machine's real `CLOCK_TAI`, which the program reads.
#[test]
fn a_leap_second_in_xdp() {
    if !common::require_root("a_leap_second_in_xdp") {
        return;
    }
    let mut b = Bench::new(responder());
    assert_eq!(b.state.leap, Leap::Insert);
    let frame = build4(&[], CLI4, 40123, &ntp_request(0x23, 48));
    let at = ntp_at(frame.len());
    let slack = 1i64 << (32 + i32::from(PRECISION));
    // (leap instant relative to now, offset after, LI expected, offset
    // expected for the stamps)
    let s = 1_000_000_000i64;
    for (rel, after, li, off) in [
        (10 * s, 38, 1, 37), // ahead: announced, old offset
        // Just inside the inserted second (23:59:59 again): the run must
        // follow within 0.9 s of the publish, which it does by far.
        (-s / 10, 38, 1, 38),
        (-3 * s, 38, 0, 38),    // over: no LI, new offset
        (-s / 1000, 36, 0, 36), // a deleted second: over at once
    ] {
        b.tai = TaiScale {
            offset_s: 37,
            leap_tai_ns: tai_now_ns().wrapping_add_signed(rel),
            offset_after_s: after,
        };
        b.publish(tai_now_ns(), 10_000_000_000);
        let Fate::Tx(out, before, after_tai, _) = run_xdp(&b, &frame) else {
            panic!("no reply");
        };
        assert_eq!(out[at] >> 6, li, "LI with the leap {rel} ns from now");
        let utc = |tai: u64, o: i32| NtpTimestamp::from_unix_nanos(tai_to_unix_nanos(tai, o));
        let (lo, hi) = (
            utc(before, off).wrapping_add_units(-slack),
            utc(after_tai, off).wrapping_add_units(slack),
        );
        for (name, f) in [("T2", 32), ("T3", 40)] {
            let t = ts(&out[at + f..at + f + 8]);
            assert!(
                !lo.is_after(t) && !t.is_after(hi),
                "{name} {t:?} not in {lo:?}..{hi:?} (offset {off})"
            );
        }
    }
}

#[test]
fn an_old_state_ages_and_then_says_unsynchronised() {
    if !common::require_root("an_old_state_ages_and_then_says_unsynchronised") {
        return;
    }
    let mut b = Bench::new(responder());
    let frame = build4(&[], CLI4, 40123, &ntp_request(0x23, 48));
    let reply = |b: &Bench| match run_xdp(b, &frame) {
        Fate::Tx(out, ..) => out,
        other => panic!("expected a reply, got {other:?}"),
    };
    let at = ntp_at(frame.len());
    let disp = |out: &[u8]| u32::from_be_bytes(out[at + 8..at + 12].try_into().unwrap());

    // Young: LI and dispersion as published.
    let out = reply(&b);
    assert_eq!(out[at] >> 6, Leap::Insert as u8);
    assert_eq!(out[at + 1], 2);
    assert_eq!(disp(&out), 0x456);

    // Written 100 s ago, bound 1000 s: 100 s × 15 ppm = 1.5 ms ≈ 98 units
    // of 2^-16 s more (the same sum as ServerState::aged).
    let c0 = b.prog.counters().unwrap();
    b.publish(tai_now_ns() - 100_000_000_000, 1_000_000_000_000);
    let out = reply(&b);
    let grown = disp(&out) - 0x456;
    assert!(
        (98..=99).contains(&grown),
        "dispersion grew by {grown} units"
    );
    assert_eq!(out[at] >> 6, Leap::Insert as u8);
    let expect = b.state.aged(100_000_000_000, 1_000_000_000_000);
    assert!(disp(&out).abs_diff(expect.root_dispersion.to_bits()) <= 1);

    // Older than the bound: LI 3, stratum 0, not fresh-looking time.
    b.publish(tai_now_ns() - 11_000_000_000, 10_000_000_000);
    let out = reply(&b);
    assert_eq!(out[at] >> 6, 3, "LI 3 from a stale state");
    assert_eq!(out[at + 1], 0, "stratum 0 from a stale state");
    // Never written: the same.
    b.publish(0, 10_000_000_000);
    let out = reply(&b);
    assert_eq!(out[at] >> 6, 3);
    let c = b.prog.counters().unwrap().since(&c0);
    assert_eq!(
        (c.replied, c.replied_stale),
        (3, 2),
        "stale replies are counted: {:?}",
        XdpCounters::fields(&c)
    );
}

/// A reply whose T3 − T2 would pass the residence bound is dropped and
/// counted as late, as in the workers (with a bound of 1 ns, every one).
#[test]
fn a_reply_past_the_residence_bound_is_dropped() {
    if !common::require_root("a_reply_past_the_residence_bound_is_dropped") {
        return;
    }
    let b = Bench::with(responder(), |c| {
        c.judge.as_mut().unwrap().max_residence_ns = 1;
    });
    let frame = build4(&[], CLI4, 40123, &ntp_request(0x23, 48));
    let c0 = b.prog.counters().unwrap();
    let r = b.prog.test_run(&frame).unwrap();
    let c = b.prog.counters().unwrap().since(&c0);
    assert_eq!(r.verdict, XDP_DROP);
    assert_eq!((c.seen, c.late, c.replied, c.dropped), (1, 1, 0, 0));
    // With the default bound (500 µs) the same request is answered.
    let b = Bench::with(responder(), |c| {
        c.judge.as_mut().unwrap().max_residence_ns = 500_000;
    });
    assert!(matches!(run_xdp(&b, &frame), Fate::Tx(..)));
}

#[test]
fn replies_can_be_switched_to_the_workers() {
    if !common::require_root("replies_can_be_switched_to_the_workers") {
        return;
    }
    let mut b = Bench::new(responder());
    let frame = build6(&[3], v6(CLI6), 40123, &ntp_request(0x23, 48));
    assert!(matches!(run_xdp(&b, &frame), Fate::Tx(..)));
    b.writer
        .publish(&XdpState {
            ntp: b.state,
            tai: TaiScale::fixed(0),
            phc: None,
            written_tai_ns: tai_now_ns(),
            max_age_ns: 10_000_000_000,
            reply_in_xdp: false,
            partial_to_workers: false,
            draining: false,
        })
        .unwrap();
    assert!(matches!(run_xdp(&b, &frame), Fate::Worker));
    // Junk is still judged in XDP.
    let junk = build6(&[3], v6(CLI6), 40123, &ntp_request(0x25, 48));
    assert!(matches!(
        run_xdp(&b, &junk),
        Fate::Drop(DropReason::NtpMode)
    ));
}
