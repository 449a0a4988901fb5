//! The XDP program (bpf/ntpx.bpf.c) on crafted frames, through
//! `BPF_PROG_TEST_RUN`, plus attach/detach and one live run over a veth pair
//! into a real AF_XDP socket. Every test loads a fresh program (so the
//! verifier runs each time) and checks the verdict and the exact counter
//! deltas.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for the
//! throwaway network namespaces). Without it each test prints why it skips;
//! with `CI=true` it fails instead.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Header, PacketBuilder, PacketBuilderStep, UdpHeader,
};
use ntpx::proto::drops::DropReason;
use ntpx::proto::respond::Responder;
use ntpx::server::program::{ProgramConfig, XdpCounters, XdpProgram};
use ntpx::sys::bpf::{
    AttachMode, ProgramError, TestRun, XDP_DROP, XDP_PASS, XDP_REDIRECT, XdpMode,
};
use ntpx::sys::xsk::meta::{META_LEN, META_MAGIC, Meta};

// ---------------------------------------------------------------------------
// Privilege gate
// ---------------------------------------------------------------------------

macro_rules! require_privileges {
    () => {
        if !common::require_bpf_privileges() {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
// Documentation ranges: these frames never leave the test.
const CLIENT_V4: [u8; 4] = [192, 0, 2, 99];
const SERVER_V4: [u8; 4] = [192, 0, 2, 1];
const OTHER_V4: [u8; 4] = [192, 0, 2, 2];
const CLIENT_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
];
const SERVER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];
const OTHER_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];
const CLIENT_PORT: u16 = 40123;
const NTP: u16 = 123;
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const IPV6_LEN: usize = 40;

/// First NTP byte: LI (2 bits), VN (3 bits), mode (3 bits).
fn li_vn_mode(li: u8, vn: u8, mode: u8) -> u8 {
    (li << 6) | (vn << 3) | mode
}

/// An NTP payload of `len` bytes starting with `first`.
fn ntp(first: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if let Some(b) = p.first_mut() {
        *b = first;
    }
    p
}

/// A v4 client request (mode 3, version 4).
fn request() -> Vec<u8> {
    ntp(li_vn_mode(0, 4, 3), 48)
}

fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER)
}

fn write_udp(step: PacketBuilderStep<UdpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(step.size(payload.len()));
    step.write(&mut out, payload).expect("serialize frame");
    out
}

fn udp4(dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    write_udp(eth().ipv4(CLIENT_V4, dst, 64).udp(sport, dport), payload)
}

fn udp6(dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    write_udp(eth().ipv6(CLIENT_V6, dst, 64).udp(sport, dport), payload)
}

fn request4() -> Vec<u8> {
    udp4(SERVER_V4, CLIENT_PORT, NTP, &request())
}

fn request6() -> Vec<u8> {
    udp6(SERVER_V6, CLIENT_PORT, NTP, &request())
}

/// An IPv4 request with a hand-tuned IPv4 header (fragment bits, options).
fn request4_with(tune: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, CLIENT_V4, SERVER_V4).expect("ipv4 header");
    tune(&mut ip);
    write_udp(
        eth()
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(CLIENT_PORT, NTP),
        &request(),
    )
}

/// Sets IPv4 options (a multiple of 4 bytes, at most 40).
fn set_options(ip: &mut Ipv4Header, options: &[u8]) {
    ip.options = options.try_into().expect("valid IPv4 options length");
}

/// Offset of the UDP header in an untagged IPv4 frame with a 20-byte header.
const UDP4: usize = ETH_LEN + IPV4_LEN;

fn set_u16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

fn load(cfg: &ProgramConfig) -> XdpProgram {
    match XdpProgram::load(cfg) {
        Ok(p) => p,
        Err(e) => panic!("loading the XDP program failed: {e}"),
    }
}

fn load_default() -> XdpProgram {
    load(&ProgramConfig::default())
}

/// A program that judges plain requests itself, as the server loads it:
/// with the responder's view of this test host (replies in XDP stay off:
/// the state map is never written).
fn load_judging() -> XdpProgram {
    let r = Responder::new(MAC_SERVER, vec![SERVER_V4.into()], vec![SERVER_V6.into()]);
    let cfg = ProgramConfig::for_responder(&r);
    assert!(cfg.judge.is_some());
    load(&cfg)
}

/// Runs `frame` once, returns the result and what the counters did.
fn run(prog: &XdpProgram, frame: &[u8]) -> (TestRun, XdpCounters) {
    let before = prog.counters().expect("read counters");
    let r = prog.test_run(frame).expect("BPF_PROG_TEST_RUN");
    let after = prog.counters().expect("read counters");
    (r, after.since(&before))
}

/// The counter deltas of one frame counted as `seen` plus `reason`.
macro_rules! counted {
    ($($reason:ident),+) => {
        XdpCounters { seen: 1, $($reason: 1,)+ ..XdpCounters::default() }
    };
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}

/// Runs `frame` and checks verdict and exact counter deltas; returns the run.
#[track_caller]
fn check(prog: &XdpProgram, frame: &[u8], verdict: u32, deltas: XdpCounters) -> TestRun {
    let (r, d) = run(prog, frame);
    assert_eq!(
        verdict_name(r.verdict),
        verdict_name(verdict),
        "verdict; counter deltas were {:?}",
        nonzero(&d)
    );
    assert_eq!(nonzero(&d), nonzero(&deltas), "counter deltas");
    r
}

fn nonzero(c: &XdpCounters) -> Vec<(&'static str, u64)> {
    c.fields().into_iter().filter(|&(_, v)| v != 0).collect()
}

/// A frame the program passes untouched: same bytes out, no metadata.
#[track_caller]
fn check_untouched(prog: &XdpProgram, frame: &[u8], verdict: u32, deltas: XdpCounters) {
    let r = check(prog, frame, verdict, deltas);
    assert_eq!(r.meta_len, 0);
    assert_eq!(r.meta, None);
    assert_eq!(r.frame(), frame);
}

/// Runs `frame` through a judging program: dropped, counted as `dropped`
/// and under `reason` in the drops map, untouched.
#[track_caller]
fn check_dropped(prog: &XdpProgram, frame: &[u8], reason: DropReason) {
    let reader = prog.counters_reader().expect("counters reader");
    let before = reader.drops().expect("read drops");
    check_untouched(prog, frame, XDP_DROP, counted!(dropped));
    let after = reader.drops().expect("read drops");
    let hit: Vec<DropReason> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(_, a)| a.0)
        .collect();
    assert_eq!(hit, [reason]);
}

// ---------------------------------------------------------------------------
// Valid requests: no socket in test runs, so XDP_PASS / pass_no_socket
// ---------------------------------------------------------------------------

#[test]
fn ipv4_request_without_socket_passes() {
    require_privileges!();
    let prog = load_default();
    check_untouched(&prog, &request4(), XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn ipv6_request_without_socket_passes() {
    require_privileges!();
    let prog = load_default();
    check_untouched(&prog, &request6(), XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn versions_1_to_4_are_requests() {
    require_privileges!();
    let prog = load_default();
    for vn in 1..=4 {
        for li in 0..=3 {
            let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &ntp(li_vn_mode(li, vn, 3), 48));
            check(&prog, &f, XDP_PASS, counted!(pass_no_socket));
        }
    }
}

#[test]
fn long_payload_and_ethernet_padding_are_requests() {
    require_privileges!();
    let prog = load_default();
    // Extension fields / MAC: more than 48 bytes.
    let f = udp4(
        SERVER_V4,
        CLIENT_PORT,
        NTP,
        &ntp(li_vn_mode(0, 4, 3), 48 + 20 + 68),
    );
    check(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // Trailing bytes after the UDP datagram (padding) are fine.
    let mut f = request4();
    f.extend_from_slice(&[0u8; 16]);
    check(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn single_vlan_request() {
    require_privileges!();
    let prog = load_default();
    let f = write_udp(
        eth()
            .single_vlan(100.try_into().unwrap())
            .ipv4(CLIENT_V4, SERVER_V4, 64)
            .udp(CLIENT_PORT, NTP),
        &request(),
    );
    assert_eq!(&f[12..14], &[0x81, 0x00]);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    let f = write_udp(
        eth()
            .single_vlan(100.try_into().unwrap())
            .ipv6(CLIENT_V6, SERVER_V6, 64)
            .udp(CLIENT_PORT, NTP),
        &request(),
    );
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

fn double_vlan_request4() -> Vec<u8> {
    write_udp(
        eth()
            .double_vlan(100.try_into().unwrap(), 200.try_into().unwrap())
            .ipv4(CLIENT_V4, SERVER_V4, 64)
            .udp(CLIENT_PORT, NTP),
        &request(),
    )
}

#[test]
fn double_vlan_request() {
    require_privileges!();
    let prog = load_default();
    let mut f = double_vlan_request4();
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // 802.1ad (QinQ) outer tag.
    set_u16(&mut f, 12, 0x88a8);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn three_vlan_tags_are_not_parsed() {
    require_privileges!();
    let prog = load_default();
    let mut f = double_vlan_request4();
    // Insert a third tag after the MAC addresses.
    f.splice(12..12, [0x81, 0x00, 0x00, 0x2a]);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_ip));
}

// ---------------------------------------------------------------------------
// Not for us
// ---------------------------------------------------------------------------

#[test]
fn other_udp_port_passes() {
    require_privileges!();
    let prog = load_default();
    check_untouched(
        &prog,
        &udp4(SERVER_V4, CLIENT_PORT, 124, &request()),
        XDP_PASS,
        counted!(pass_other_port),
    );
    check_untouched(
        &prog,
        &udp6(SERVER_V6, CLIENT_PORT, 53, &request()),
        XDP_PASS,
        counted!(pass_other_port),
    );
    // From port 123 to another port: the host's own client talking out.
    check_untouched(
        &prog,
        &udp4(SERVER_V4, NTP, CLIENT_PORT, &request()),
        XDP_PASS,
        counted!(pass_other_port),
    );
}

#[test]
fn configured_port() {
    require_privileges!();
    let prog = load(&ProgramConfig {
        port: 1123,
        ..Default::default()
    });
    check(&prog, &request4(), XDP_PASS, counted!(pass_other_port));
    check(
        &prog,
        &udp4(SERVER_V4, CLIENT_PORT, 1123, &request()),
        XDP_PASS,
        counted!(pass_no_socket),
    );
}

#[test]
fn tcp_passes() {
    require_privileges!();
    let prog = load_default();
    let step = eth()
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .tcp(CLIENT_PORT, NTP, 1, 65535);
    let payload = request();
    let mut f = Vec::new();
    step.write(&mut f, &payload).expect("serialize");
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_udp));
    let step = eth()
        .ipv6(CLIENT_V6, SERVER_V6, 64)
        .tcp(CLIENT_PORT, NTP, 1, 65535);
    let mut f = Vec::new();
    step.write(&mut f, &payload).expect("serialize");
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_udp));
}

#[test]
fn icmp_and_ipv6_extension_headers_pass() {
    require_privileges!();
    let prog = load_default();
    let step = eth()
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .icmpv4_echo_request(1, 1);
    let mut f = Vec::new();
    step.write(&mut f, &[0u8; 56]).expect("serialize");
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_udp));
    // IPv6 with a (here: bogus) hop-by-hop header in front of UDP: not parsed.
    let mut f = request6();
    f[ETH_LEN + 6] = 0;
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_udp));
}

#[test]
fn arp_passes() {
    require_privileges!();
    let prog = load_default();
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_CLIENT,
        &CLIENT_V4,
        &[0; 6],
        &SERVER_V4,
    )
    .expect("arp packet");
    let step = eth().arp(arp);
    let mut f = Vec::with_capacity(step.size());
    step.write(&mut f).expect("serialize");
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_not_ip));
}

/// The first fragment of a request is dropped, so that the kernel never
/// reassembles it (the host's own daemon may listen on port 123); later
/// fragments carry no port and go to the kernel, which discards them
/// without their first.
#[test]
fn ipv4_fragments() {
    require_privileges!();
    let prog = load_default();
    let f = request4_with(|ip| ip.more_fragments = true);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    let f = request4_with(|ip| ip.fragment_offset = IpFragOffset::try_new(8).unwrap());
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_fragment));
    // The first fragment of something else goes to the kernel.
    let mut f = request4_with(|ip| ip.more_fragments = true);
    set_u16(&mut f, UDP4 + 2, 53);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_fragment));
    // DF alone is not a fragment.
    let f = request4_with(|ip| ip.dont_fragment = true);
    check(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

/// `frame` (an untagged IPv6 UDP frame) with a fragment header put in
/// front of its UDP header: `offset` in bytes, `more` the M flag.
fn ipv6_fragment(frame: &[u8], offset: u16, more: bool) -> Vec<u8> {
    let at = ETH_LEN + IPV6_LEN;
    let mut f = frame[..at].to_vec();
    let payload = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]) + 8;
    f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&payload.to_be_bytes());
    let next = f[ETH_LEN + 6];
    f[ETH_LEN + 6] = 44;
    f.extend_from_slice(&[next, 0]);
    f.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x12, 0x34]);
    f.extend_from_slice(&frame[at..]);
    f
}

#[test]
fn ipv6_fragments() {
    require_privileges!();
    let prog = load_default();
    let first = ipv6_fragment(&request6(), 0, true);
    check_untouched(&prog, &first, XDP_PASS, counted!(pass_no_socket));
    let later = ipv6_fragment(&request6(), 64, false);
    check_untouched(&prog, &later, XDP_PASS, counted!(pass_fragment));
    let mut other = ipv6_fragment(&request6(), 0, true);
    set_u16(&mut other, ETH_LEN + IPV6_LEN + 8 + 2, 53);
    check_untouched(&prog, &other, XDP_PASS, counted!(pass_fragment));
    // A fragment header over something other than UDP.
    let mut tcp = ipv6_fragment(&request6(), 0, true);
    tcp[ETH_LEN + IPV6_LEN] = 6;
    check_untouched(&prog, &tcp, XDP_PASS, counted!(pass_fragment));
}

#[test]
fn destination_must_be_ours_when_configured() {
    require_privileges!();
    let cfg = ProgramConfig {
        port: NTP,
        v4: vec![Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::from(SERVER_V4)],
        v6: vec![Ipv6Addr::from(SERVER_V6)],
        judge: None,
        ..ProgramConfig::default()
    };
    let prog = load(&cfg);
    check(&prog, &request4(), XDP_PASS, counted!(pass_no_socket));
    check(
        &prog,
        &udp4([198, 51, 100, 7], CLIENT_PORT, NTP, &request()),
        XDP_PASS,
        counted!(pass_no_socket),
    );
    check(&prog, &request6(), XDP_PASS, counted!(pass_no_socket));
    check_untouched(
        &prog,
        &udp4(OTHER_V4, CLIENT_PORT, NTP, &request()),
        XDP_PASS,
        counted!(pass_not_ours),
    );
    check_untouched(
        &prog,
        &udp6(OTHER_V6, CLIENT_PORT, NTP, &request()),
        XDP_PASS,
        counted!(pass_not_ours),
    );
    // Other port beats "not ours".
    check(
        &prog,
        &udp4(OTHER_V4, CLIENT_PORT, 124, &request()),
        XDP_PASS,
        counted!(pass_other_port),
    );
}

#[test]
fn one_family_configured_excludes_the_other() {
    require_privileges!();
    let prog = load(&ProgramConfig {
        v4: vec![Ipv4Addr::from(SERVER_V4)],
        ..Default::default()
    });
    check(&prog, &request4(), XDP_PASS, counted!(pass_no_socket));
    check(&prog, &request6(), XDP_PASS, counted!(pass_not_ours));
}

#[test]
fn all_sixteen_addresses_are_checked() {
    require_privileges!();
    let v4: Vec<Ipv4Addr> = (1..=16).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    let v6: Vec<Ipv6Addr> = (1..=16)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i))
        .collect();
    let prog = load(&ProgramConfig {
        port: NTP,
        v4: v4.clone(),
        v6: v6.clone(),
        judge: None,
        ..ProgramConfig::default()
    });
    for a in &v4 {
        check(
            &prog,
            &udp4(a.octets(), CLIENT_PORT, NTP, &request()),
            XDP_PASS,
            counted!(pass_no_socket),
        );
    }
    for a in &v6 {
        check(
            &prog,
            &udp6(a.octets(), CLIENT_PORT, NTP, &request()),
            XDP_PASS,
            counted!(pass_no_socket),
        );
    }
    check(
        &prog,
        &udp4([198, 51, 100, 17], CLIENT_PORT, NTP, &request()),
        XDP_PASS,
        counted!(pass_not_ours),
    );
    // A v6 address that only differs in the last word.
    let near = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 17);
    check(
        &prog,
        &udp6(near.octets(), CLIENT_PORT, NTP, &request()),
        XDP_PASS,
        counted!(pass_not_ours),
    );
}

#[test]
fn too_many_addresses_is_an_error() {
    // No privileges needed: refused before anything is loaded.
    let cfg = ProgramConfig {
        v6: vec![Ipv6Addr::LOCALHOST; 17],
        ..Default::default()
    };
    let err = XdpProgram::load(&cfg).expect_err("17 addresses must be refused");
    assert!(
        matches!(
            err,
            ProgramError::TooManyAddresses {
                family: 6,
                count: 17,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Malformed and junk requests
// ---------------------------------------------------------------------------

/// Short requests are not plain: the worker judges them.
#[test]
fn short_payload_goes_to_the_worker() {
    require_privileges!();
    let prog = load_judging();
    let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, 4, 3), 47));
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    let f = udp6(SERVER_V6, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, 4, 3), 47));
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &[]);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // Short by the UDP length even though the frame (padding) is long enough.
    let mut f = request4();
    set_u16(&mut f, UDP4 + 4, 8 + 47);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

/// A UDP length that disagrees with the frame goes to the worker (here:
/// no socket, so to the kernel with `pass_no_socket`), which drops it
/// under its reason; never to the kernel's UDP stack as such, which would
/// take an IPv6 length of 0 as "to the end of the packet".
#[test]
fn udp_length_disagreeing_with_frame_goes_to_the_worker() {
    require_privileges!();
    let prog = load_default();
    // Longer than the frame.
    let mut f = request4();
    set_u16(&mut f, UDP4 + 4, 8 + 49);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // Shorter than the UDP header itself.
    let mut f = request4();
    set_u16(&mut f, UDP4 + 4, 7);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // IPv6, length 0 (the jumbogram form).
    let mut f = request6();
    set_u16(&mut f, ETH_LEN + IPV6_LEN + 4, 0);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // Frame cut inside the NTP header.
    let f = request4();
    check_untouched(&prog, &f[..f.len() - 1], XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn cut_headers_are_truncated() {
    require_privileges!();
    let prog = load_default();
    let f = request4();
    for len in [ETH_LEN, ETH_LEN + 1, ETH_LEN + IPV4_LEN - 1, UDP4, UDP4 + 7] {
        check_untouched(&prog, &f[..len], XDP_PASS, counted!(pass_truncated));
    }
    let f = request6();
    for len in [ETH_LEN + IPV6_LEN - 1, ETH_LEN + IPV6_LEN + 7] {
        check_untouched(&prog, &f[..len], XDP_PASS, counted!(pass_truncated));
    }
    let f = double_vlan_request4();
    for len in [ETH_LEN + 3, ETH_LEN + 7] {
        check_untouched(&prog, &f[..len], XDP_PASS, counted!(pass_truncated));
    }
}

#[test]
fn ipv4_ihl() {
    require_privileges!();
    let prog = load_default();
    // IHL 6: one word of options (four NOPs).
    let f = request4_with(|ip| set_options(ip, &[1, 1, 1, 1]));
    assert_eq!(f[ETH_LEN], 0x46);
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // IHL 15: the largest header.
    let f = request4_with(|ip| set_options(ip, &[1; 40]));
    assert_eq!(f[ETH_LEN], 0x4f);
    check(&prog, &f, XDP_PASS, counted!(pass_no_socket));
    // IHL 6 and mode 1: the NTP byte must be found after the options.
    // IHL 6 and mode 4: the NTP byte is found after the options.
    let mut f = request4_with(|ip| set_options(ip, &[1, 1, 1, 1]));
    let ntp_at = ETH_LEN + 24 + 8;
    f[ntp_at] = li_vn_mode(0, 4, 4);
    check(&prog, &f, XDP_PASS, counted!(pass_server_reply));
    // IHL < 5 is malformed.
    for ihl in 0..5u8 {
        let mut f = request4();
        f[ETH_LEN] = 0x40 | ihl;
        check_untouched(&prog, &f, XDP_PASS, counted!(pass_truncated));
    }
    // IHL larger than the frame.
    let mut f = request4();
    f.truncate(UDP4 + 8);
    f[ETH_LEN] = 0x4f;
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_truncated));
}

#[test]
fn modes_other_than_3_and_4_are_dropped() {
    require_privileges!();
    let prog = load_judging();
    for mode in [0, 1, 2, 5, 6, 7] {
        let f = udp4(
            SERVER_V4,
            CLIENT_PORT,
            NTP,
            &ntp(li_vn_mode(0, 4, mode), 48),
        );
        check_dropped(&prog, &f, DropReason::NtpMode);
        let f = udp6(
            SERVER_V6,
            CLIENT_PORT,
            NTP,
            &ntp(li_vn_mode(3, 3, mode), 48),
        );
        check_dropped(&prog, &f, DropReason::NtpMode);
    }
    // Without the responder's view the program judges nothing.
    let prog = load_default();
    let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, 4, 6), 48));
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_no_socket));
}

#[test]
fn mode_4_server_reply_passes() {
    require_privileges!();
    let prog = load_default();
    let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, 4, 4), 48));
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_server_reply));
    let f = udp6(SERVER_V6, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, 4, 4), 48));
    check_untouched(&prog, &f, XDP_PASS, counted!(pass_server_reply));
}

#[test]
fn bad_versions_are_dropped() {
    require_privileges!();
    let prog = load_judging();
    for vn in [0, 5, 6, 7] {
        let f = udp4(SERVER_V4, CLIENT_PORT, NTP, &ntp(li_vn_mode(0, vn, 3), 48));
        check_dropped(&prog, &f, DropReason::NtpVersion);
    }
}

#[test]
fn source_port_zero_is_dropped() {
    require_privileges!();
    let prog = load_judging();
    check_dropped(
        &prog,
        &udp4(SERVER_V4, 0, NTP, &request()),
        DropReason::SrcPortZero,
    );
    check_dropped(
        &prog,
        &udp6(SERVER_V6, 0, NTP, &request()),
        DropReason::SrcPortZero,
    );
    // Not plain (short): the worker's.
    check_untouched(
        &prog,
        &udp4(SERVER_V4, 0, NTP, &[0u8; 4]),
        XDP_PASS,
        counted!(pass_no_socket),
    );
}

#[test]
fn counters_accumulate() {
    require_privileges!();
    let prog = load_judging();
    assert_eq!(prog.counters().unwrap(), XdpCounters::default());
    for _ in 0..3 {
        prog.test_run(&request4()).unwrap();
    }
    prog.test_run(&udp4(SERVER_V4, 0, NTP, &request())).unwrap();
    let c = prog.counters().unwrap();
    assert_eq!(
        c,
        XdpCounters {
            seen: 4,
            pass_no_socket: 3,
            dropped: 1,
            ..Default::default()
        }
    );
    assert_eq!(c.fields().len(), ntpx::server::program::COUNTERS);
}

#[test]
fn test_run_rejects_tiny_frames() {
    require_privileges!();
    let prog = load_default();
    assert!(matches!(
        prog.test_run(&[0u8; 13]),
        Err(ProgramError::TestFrameTooShort { len: 13, .. })
    ));
}

// ---------------------------------------------------------------------------
// Network namespaces, AF_XDP sockets
// ---------------------------------------------------------------------------

/// Runs `f` on a new thread moved into a new, empty network namespace (only
/// `lo`, brought up), which disappears with the thread.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare() only changes this thread's namespaces; it has
            // no memory-safety preconditions.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            ip(&["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Runs `ip ARGS` (in the calling thread's network namespace).
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (up to 5 s) until `ip link` reports `dev` as `state UP`.
fn wait_up(dev: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "dev", dev])
            .output()
            .expect("run ip(8)");
        if String::from_utf8_lossy(&out.stdout).contains(" state UP ") {
            return;
        }
        assert!(Instant::now() < deadline, "{dev} did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).unwrap();
    xdp::nic::NicIndex::lookup_by_name(&name)
        .expect("if_nametoindex")
        .expect("interface exists")
        .0
}

/// An AF_XDP socket bound (copy mode) to queue 0 of `ifindex`, with a UMEM
/// whose frames all sit in the fill ring.
struct Xsk {
    socket: xdp::socket::XdpSocket,
    rings: xdp::Rings,
    umem: xdp::Umem,
}

/// UMEM headroom so that the metadata in front of a received frame lies
/// inside what `xdp::Packet` can reach with `adjust_head`.
const XSK_HEADROOM: u32 = 64;

impl Xsk {
    fn bind(ifindex: u32) -> Self {
        let cfg = xdp::umem::UmemCfgBuilder {
            frame_count: 64,
            head_room: XSK_HEADROOM,
            ..Default::default()
        }
        .build()
        .expect("umem config");
        let mut umem = xdp::Umem::map(cfg).expect("map umem");
        let mut builder = xdp::socket::XdpSocketBuilder::new().expect("AF_XDP socket");
        let ring_cfg = xdp::RingConfigBuilder {
            rx_count: 64,
            tx_count: 0,
            fill_count: 64,
            completion_count: 64,
        }
        .build()
        .expect("ring config");
        let (mut rings, mut flags) = builder.build_rings(&umem, ring_cfg).expect("rings");
        flags.force_copy();
        let socket = builder
            .bind(xdp::nic::NicIndex(ifindex), 0, flags)
            .expect("bind AF_XDP socket");
        // SAFETY: `umem` is kept in the same struct as the socket and dropped
        // after it (field order), so it outlives the socket.
        let queued = unsafe { rings.fill_ring.enqueue(&mut umem, 64) };
        assert!(queued > 0);
        Self {
            socket,
            rings,
            umem,
        }
    }

    fn fd(&self) -> i32 {
        self.socket.raw_fd()
    }

    /// Waits up to `timeout` for one frame; returns (metadata area in front
    /// of it, frame).
    fn recv(&mut self, timeout: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let rx = self.rings.rx_ring.as_mut().expect("rx ring");
        let mut slab = xdp::slab::HeapSlab::with_capacity(1);
        loop {
            // SAFETY: the packets are copied out and dropped before `umem`.
            let n = unsafe { rx.recv(&self.umem, &mut slab) };
            if n > 0 {
                let mut p = xdp::slab::Slab::pop_back(&mut slab).expect("received packet");
                let frame = p.to_vec();
                p.adjust_head(-(META_LEN as i32))
                    .expect("headroom for metadata");
                let meta = p[..META_LEN].to_vec();
                self.umem.free_packet(p);
                return Some((meta, frame));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn clock_tai_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) };
    assert_eq!(rc, 0);
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
}

#[test]
fn registered_socket_gets_redirect_and_metadata() {
    require_privileges!();
    in_netns(|| {
        let prog = load_judging();
        let xsk = Xsk::bind(ifindex("lo"));
        prog.register_socket(0, xsk.fd()).expect("register socket");

        let frame = request4();
        let before = clock_tai_ns();
        let r = check(&prog, &frame, XDP_REDIRECT, counted!(redirected));
        let after = clock_tai_ns();
        // BPF_PROG_TEST_RUN hands back data_meta..data_end: metadata first.
        assert_eq!(r.meta_len, META_LEN);
        assert_eq!(r.data.len(), META_LEN + frame.len());
        assert_eq!(r.frame(), &frame[..]);
        let meta = r.meta.expect("metadata");
        assert_eq!(&r.data[META_LEN - 4..META_LEN], &META_MAGIC.to_ne_bytes());
        assert_eq!(meta.rx_hw_ns, 0);
        assert_eq!(meta.flags, 0);
        assert!(
            (before..=after).contains(&meta.rx_sw_tai_ns),
            "stamp {} not within [{before}, {after}] (CLOCK_TAI)",
            meta.rx_sw_tai_ns
        );

        // Junk still gets dropped, other traffic passed, with a socket.
        check_dropped(
            &prog,
            &udp4(SERVER_V4, 0, NTP, &request()),
            DropReason::SrcPortZero,
        );
        check_untouched(
            &prog,
            &udp4(SERVER_V4, CLIENT_PORT, 53, &request()),
            XDP_PASS,
            counted!(pass_other_port),
        );

        prog.unregister_socket(0).expect("unregister");
        prog.unregister_socket(0).expect("unregister twice is fine");
        check_untouched(&prog, &frame, XDP_PASS, counted!(pass_no_socket));
    });
}

#[test]
fn register_socket_errors() {
    require_privileges!();
    let prog = load_default();
    let err = prog.register_socket(256, 0).unwrap_err();
    assert!(
        matches!(err, ProgramError::QueueOutOfRange { queue: 256, .. }),
        "{err}"
    );
    assert!(matches!(
        prog.unregister_socket(1000),
        Err(ProgramError::QueueOutOfRange { .. })
    ));
    // A UDP socket is not an AF_XDP socket.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = prog.register_socket(0, udp.as_raw_fd()).unwrap_err();
    assert!(
        matches!(err, ProgramError::RegisterSocket { queue: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("AF_XDP"), "{err}");
}

// ---------------------------------------------------------------------------
// Attaching
// ---------------------------------------------------------------------------

/// The XDP program id `ip link` reports for `dev`, if any.
fn attached_prog_id(dev: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "dev", dev])
        .output()
        .expect("run ip(8)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "prog/xdp" || w == "prog/xdpgeneric" || w == "prog/xdpdrv" {
            // "prog/xdp id 42 ..."
            if words.next() == Some("id") {
                return words.next().and_then(|id| id.parse().ok());
            }
        }
    }
    None
}

#[test]
fn attach_detach_on_veth_and_lo() {
    require_privileges!();
    in_netns(|| {
        ip(&[
            "link", "add", "ntpx0", "type", "veth", "peer", "name", "ntpx1",
        ]);
        ip(&["link", "set", "ntpx0", "up"]);
        ip(&["link", "set", "ntpx1", "up"]);
        let veth = ifindex("ntpx1");

        let mut a = load_default();
        assert_eq!(
            a.attach(veth, AttachMode::Auto).expect("attach"),
            XdpMode::Native
        );
        assert_eq!(a.attached(), Some((veth, XdpMode::Native)));
        assert_eq!(attached_prog_id("ntpx1"), Some(a.id()));
        let err = a.attach(veth, AttachMode::Generic).unwrap_err();
        assert!(matches!(err, ProgramError::AttachedTwice { .. }), "{err}");

        // A second program on the same interface: busy, with the hint.
        let mut b = load_default();
        let err = b.attach(veth, AttachMode::Native).unwrap_err();
        assert!(matches!(err, ProgramError::AlreadyAttached { .. }), "{err}");
        assert!(
            err.to_string().contains("ip link set dev ntpx1 xdp off"),
            "{err}"
        );
        let err = b.attach(veth, AttachMode::Generic).unwrap_err();
        assert!(matches!(err, ProgramError::AlreadyAttached { .. }), "{err}");

        a.detach().expect("detach");
        assert_eq!(a.attached(), None);
        assert_eq!(attached_prog_id("ntpx1"), None);
        assert_eq!(
            b.attach(veth, AttachMode::Generic).expect("attach"),
            XdpMode::Generic
        );
        assert_eq!(attached_prog_id("ntpx1"), Some(b.id()));
        // Dropping detaches.
        drop(b);
        assert_eq!(attached_prog_id("ntpx1"), None);

        // lo has no native XDP: Native fails with a hint, Auto falls back.
        let lo = ifindex("lo");
        let mut c = load_default();
        let err = c.attach(lo, AttachMode::Native).unwrap_err();
        assert!(
            matches!(
                err,
                ProgramError::XdpUnsupported {
                    mode: XdpMode::Native,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            c.attach(lo, AttachMode::Auto).expect("attach"),
            XdpMode::Generic
        );

        let err = load_default()
            .attach(999_999, AttachMode::Auto)
            .unwrap_err();
        assert!(
            matches!(err, ProgramError::NoSuchInterface { ifindex: 999_999 }),
            "{err}"
        );
    });
}

/// A raw AF_PACKET socket that sends whole Ethernet frames out of `ifindex`.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    fn new(ifindex: u32) -> Self {
        // SAFETY: plain socket(2) call; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Self { fd, ifindex }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = i32::try_from(self.ifindex).unwrap();
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// End to end: a request sent into a veth pair comes out of the AF_XDP socket
/// with the metadata in front of it, in both attach modes.
#[test]
fn live_redirect_over_veth() {
    require_privileges!();
    for mode in [AttachMode::Native, AttachMode::Generic] {
        in_netns(|| {
            // veth gets one queue per CPU by default and a frame lands on
            // the peer's queue matching the tx queue it was sent on: force
            // one queue so everything arrives on queue 0, where the socket is.
            ip(&[
                "link",
                "add",
                "ntpx0",
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
                "type",
                "veth",
                "peer",
                "name",
                "ntpx1",
                "numtxqueues",
                "1",
                "numrxqueues",
                "1",
            ]);
            ip(&["link", "set", "ntpx0", "up"]);
            ip(&["link", "set", "ntpx1", "up"]);
            let (tx_if, rx_if) = (ifindex("ntpx0"), ifindex("ntpx1"));

            let mut prog = load_default();
            prog.attach(rx_if, mode).expect("attach");
            let mut xsk = Xsk::bind(rx_if);
            prog.register_socket(0, xsk.fd()).expect("register");
            let tx = PacketSocket::new(tx_if);
            // A frame sent before the kernel's linkwatch has activated the
            // veth's qdisc is silently dropped: wait for operstate UP.
            wait_up("ntpx0");
            wait_up("ntpx1");

            let frame = request4();
            let before = clock_tai_ns();
            tx.send(&frame);
            let (meta, got) = xsk.recv(Duration::from_secs(2)).unwrap_or_else(|| {
                panic!(
                    "{mode:?}: no frame on the AF_XDP socket; counters: {:?}",
                    prog.counters()
                )
            });
            let after = clock_tai_ns();
            assert_eq!(got, frame, "{mode:?}");
            let m = Meta::parse(&meta).unwrap_or_else(|| {
                panic!("{mode:?}: no metadata in front of the frame: {meta:02x?}")
            });
            assert!(
                (before..=after).contains(&m.rx_sw_tai_ns),
                "{mode:?}: stamp outside [{before}, {after}]"
            );

            // A frame for the kernel is not redirected.
            tx.send(&udp4(SERVER_V4, CLIENT_PORT, 53, &request()));
            assert!(xsk.recv(Duration::from_millis(200)).is_none(), "{mode:?}");

            let c = prog.counters().unwrap();
            assert_eq!(c.redirected, 1, "{mode:?}: {c:?}");
            assert_eq!(c.meta_failed, 0, "{mode:?}: {c:?}");
            assert_eq!(c.pass_other_port, 1, "{mode:?}: {c:?}");
            // IPv6 router/neighbour chatter on a fresh link may add to `seen`.
            assert!(c.seen >= 2, "{mode:?}: {c:?}");
        });
    }
}
