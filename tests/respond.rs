//! The frame responder against an independent implementation: requests
//! built and replies checked with `etherparse` (headers, lengths,
//! checksums), plus every check that must drop a frame.

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanId};
use ntpx::proto::drops::DropReason;
use ntpx::proto::ntp::{Leap, Mode, NtpShort, NtpTimestamp, Packet, ServerState};
use ntpx::proto::respond::{Responder, respond};
use std::net::{Ipv4Addr, Ipv6Addr};

const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const CLI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const SRV4: [u8; 4] = [198, 18, 0, 1];
const CLI4: [u8; 4] = [198, 18, 0, 2];
const SRV6: &str = "2001:db8::1";
const CLI6: &str = "2001:db8::2";
const CLIENT_XMT: [u8; 8] = [0xe9, 0x1b, 0x2c, 0x3d, 0x11, 0x22, 0x33, 0x44];

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

fn ntp_request(first: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = first;
    p[2] = 6;
    p[3] = 0xe9;
    if len >= 48 {
        p[40..48].copy_from_slice(&CLIENT_XMT);
    }
    p
}

fn cfg() -> Responder {
    let mut c = Responder::new(
        SRV_MAC,
        vec![Ipv4Addr::from(SRV4)],
        vec![SRV6.parse().unwrap()],
    );
    // The interface's prefixes: 198.18.0.0/24 (and another address on
    // it), 2001:db8::/64.
    c.add_local_prefixes(
        &[
            "198.18.0.1/24".parse().unwrap(),
            "198.18.0.3/24".parse().unwrap(),
        ],
        &["2001:db8::1/64".parse().unwrap()],
    );
    c
}

fn state() -> ServerState {
    ServerState {
        leap: Leap::None,
        stratum: 2,
        precision: -24,
        root_delay: NtpShort::from_bits(0x20),
        root_dispersion: NtpShort::from_bits(0x40),
        ref_id: [198, 18, 0, 99],
        ref_time: NtpTimestamp::from_bits(0xe91b_0000_0000_0000),
    }
}

const RX: NtpTimestamp = NtpTimestamp::from_bits(0xe91b_2c3d_8000_0000);
const TX: NtpTimestamp = NtpTimestamp::from_bits(0xe91b_2c3d_8000_1000);

fn build_v4(builder_vlan: u8, sport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLI_MAC, SRV_MAC);
    let mut out = Vec::new();
    match builder_vlan {
        0 => b
            .ipv4(CLI4, SRV4, 64)
            .udp(sport, 123)
            .write(&mut out, payload),
        1 => b
            .single_vlan(VlanId::try_new(10).unwrap())
            .ipv4(CLI4, SRV4, 64)
            .udp(sport, 123)
            .write(&mut out, payload),
        _ => b
            .double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap())
            .ipv4(CLI4, SRV4, 64)
            .udp(sport, 123)
            .write(&mut out, payload),
    }
    .unwrap();
    out
}

fn build_v6(sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLI_MAC, SRV_MAC)
        .ipv6(v6(CLI6), v6(SRV6), 64)
        .udp(sport, 123)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Checks a reply frame with etherparse and returns its NTP payload.
fn check_reply(frame: &[u8], vlan_tags: usize) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the reply");
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = &h.link else {
        panic!("no ethernet")
    };
    assert_eq!(eth.source, SRV_MAC);
    assert_eq!(eth.destination, CLI_MAC);
    assert_eq!(h.link_exts.len(), vlan_tags);
    let payload = h.payload.slice().to_vec();
    assert_eq!(payload.len(), 48, "reply is exactly 48 bytes of NTP");
    let Some(TransportHeader::Udp(udp)) = &h.transport else {
        panic!("no udp")
    };
    assert_eq!(udp.source_port, 123);
    assert_eq!(udp.destination_port, 40000);
    assert_eq!(udp.length, 56);
    match &h.net {
        Some(NetHeaders::Ipv4(ip, ext)) => {
            assert!(ext.is_empty());
            assert_eq!(ip.source, SRV4);
            assert_eq!(ip.destination, CLI4);
            assert_eq!(ip.time_to_live, 64);
            assert!(ip.dont_fragment);
            assert!(!ip.more_fragments);
            assert_eq!(ip.total_len, 76);
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv4(ip, &payload).unwrap(),
                "UDP checksum"
            );
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(ip.source, v6(SRV6));
            assert_eq!(ip.destination, v6(CLI6));
            assert_eq!(ip.hop_limit, 64);
            assert_eq!(ip.payload_length, 56);
            assert_ne!(udp.checksum, 0);
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv6(ip, &payload).unwrap(),
                "UDP checksum"
            );
        }
        other => panic!("unexpected network layer {other:?}"),
    }
    payload
}

fn check_ntp(payload: &[u8], version: u8) {
    let p = Packet::new_checked(payload).unwrap();
    assert_eq!(p.leap(), Leap::None);
    assert_eq!(p.version(), version);
    assert_eq!(p.mode(), Mode::Server);
    assert_eq!(p.stratum(), 2);
    assert_eq!(p.poll(), 6);
    assert_eq!(p.precision(), -24);
    assert_eq!(p.ref_id(), [198, 18, 0, 99]);
    assert_eq!(p.origin().to_bytes(), CLIENT_XMT);
    assert_eq!(p.receive().to_bits() >> 8, RX.to_bits() >> 8);
    assert_eq!(p.transmit().to_bits() >> 8, TX.to_bits() >> 8);
}

fn run(frame: &mut [u8]) -> Result<usize, DropReason> {
    respond(frame, &cfg(), &state(), RX, || TX, 0x1234_5678_9abc_def0).map(|r| r.len)
}

#[test]
fn ipv4_untagged_single_and_double_vlan() {
    for tags in 0..=2 {
        let mut f = build_v4(tags, 40000, &ntp_request(0x23, 48));
        let len = run(&mut f).unwrap();
        let payload = check_reply(&f[..len], tags as usize);
        check_ntp(&payload, 4);
    }
}

#[test]
fn ipv6_request() {
    let mut f = build_v6(40000, &ntp_request(0x23, 48));
    let len = run(&mut f).unwrap();
    check_ntp(&check_reply(&f[..len], 0), 4);
}

#[test]
fn version_is_echoed() {
    for v in 1..=4u8 {
        let mut f = build_v4(0, 40000, &ntp_request(v << 3 | 3, 48));
        let len = run(&mut f).unwrap();
        check_ntp(&check_reply(&f[..len], 0), v);
    }
}

#[test]
fn extension_fields_are_not_echoed() {
    let mut payload = ntp_request(0x23, 48);
    payload.extend_from_slice(&[0x20, 0x05, 0, 28]);
    payload.extend_from_slice(&[0xee; 24]);
    let mut f = build_v4(0, 40000, &payload);
    let request_len = f.len();
    let len = run(&mut f).unwrap();
    assert!(len < request_len);
    check_ntp(&check_reply(&f[..len], 0), 4);
}

/// An untagged IPv4 request with `options` (a multiple of 4 bytes)
/// spliced into its header, lengths and IP checksum fixed.
fn with_options(options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let f = build_v4(0, 40000, &ntp_request(0x23, 48));
    let mut g = f[..34].to_vec();
    g.extend_from_slice(options);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x45 + (options.len() / 4) as u8;
    let total = (g.len() - 14) as u16;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    g[24..26].copy_from_slice(&[0, 0]);
    let c = ntpx::proto::wire::checksum::checksum(&g[14..34 + options.len()]);
    g[24..26].copy_from_slice(&c.to_be_bytes());
    g
}

#[test]
fn ipv4_options_are_dropped_from_the_reply() {
    // NOPs and an end of list; record route, timestamp and router alert:
    // accepted, as the kernel does, and never echoed.
    for options in [
        &[1, 1, 1, 0][..],
        &[7, 7, 4, 0, 0, 0, 0, 0],
        &[68, 8, 5, 0, 0, 0, 0, 0],
        &[148, 4, 0, 0],
    ] {
        let mut g = with_options(options);
        let len = run(&mut g).unwrap_or_else(|e| panic!("{options:?}: {e:?}"));
        assert_eq!(len, 14 + 20 + 8 + 48);
        check_ntp(&check_reply(&g[..len], 0), 4);
    }
}

#[test]
fn source_routes_and_malformed_ipv4_options_are_dropped() {
    let cases: &[(&str, &[u8], DropReason)] = &[
        (
            "LSRR",
            &[131, 7, 4, 198, 18, 0, 9, 0],
            DropReason::SourceRoute,
        ),
        (
            "SSRR",
            &[137, 7, 4, 198, 18, 0, 9, 0],
            DropReason::SourceRoute,
        ),
        (
            "NOP then LSRR",
            &[1, 131, 7, 4, 198, 18, 0, 9],
            DropReason::SourceRoute,
        ),
        ("length 0", &[25, 0, 0, 0], DropReason::BadIpOptions),
        ("length 1", &[25, 1, 0, 0], DropReason::BadIpOptions),
        (
            "length past the header",
            &[25, 12, 0, 0, 0, 0, 0, 0],
            DropReason::BadIpOptions,
        ),
        (
            "record route pointer 0",
            &[7, 7, 0, 0, 0, 0, 0, 0],
            DropReason::BadIpOptions,
        ),
        (
            "CIPSO",
            &[134, 6, 0, 0, 0, 1, 0, 0],
            DropReason::BadIpOptions,
        ),
    ];
    for (name, options, reason) in cases {
        let mut g = with_options(options);
        assert_eq!(run(&mut g), Err(*reason), "{name}");
    }
}

/// Sets the MACs of an untagged frame (destination, source).
fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

#[test]
fn layer_2_reflection_is_refused() {
    let good = build_v4(0, 40000, &ntp_request(0x23, 48));
    let good6 = build_v6(40000, &ntp_request(0x23, 48));
    let other_host = [0x02, 0, 0, 0, 0, 0x77];
    for (family, f) in [("v4", &good), ("v6", &good6)] {
        for src in [
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
            [0x03, 0, 0, 0, 0, 1],
            [0; 6],
        ] {
            let mut g = with_macs(f.clone(), SRV_MAC, src);
            assert_eq!(
                run(&mut g),
                Err(DropReason::BadSourceMac),
                "{family} {src:02x?}"
            );
        }
        let mut g = with_macs(f.clone(), other_host, CLI_MAC);
        assert_eq!(run(&mut g), Err(DropReason::OtherHost), "{family}");
        let mut g = with_macs(f.clone(), [0xff; 6], CLI_MAC);
        assert_eq!(run(&mut g), Err(DropReason::NonUnicast), "{family}");
    }
    // The reply comes from the interface's MAC, whatever the request's
    // destination held: only our own MAC is accepted there, so the two
    // agree, and check_reply() checks both MACs.
    let mut g = good.clone();
    let len = run(&mut g).unwrap();
    check_reply(&g[..len], 0);
}

#[test]
fn subnet_broadcast_and_own_sources_are_refused() {
    let good = build_v4(0, 40000, &ntp_request(0x23, 48));
    let from = |src: [u8; 4]| {
        let mut f = good.clone();
        f[26..30].copy_from_slice(&src);
        fix_ip(&mut f);
        // The UDP checksum covers the addresses: recompute it too.
        fix_udp_v4(&mut f);
        f
    };
    for (src, want) in [
        ([198, 18, 0, 255], Err(DropReason::DirectedBroadcast)),
        ([198, 18, 0, 0], Err(DropReason::DirectedBroadcast)),
        ([198, 18, 0, 3], Err(DropReason::OwnSource)),
        ([198, 18, 0, 1], Err(DropReason::OwnSource)),
        ([198, 18, 1, 255], Ok(())), // another /24: an ordinary host
        ([198, 18, 0, 254], Ok(())),
    ] {
        let mut f = from(src);
        assert_eq!(run(&mut f).map(|_| ()), want, "{src:?}");
    }
}

#[test]
fn partial_checksums_only_where_accepted() {
    // A veth peer that offloads its checksum leaves the folded
    // pseudo-header sum in the field.
    let partial = |mut f: Vec<u8>, v6: bool| {
        let (udp_at, pseudo) = if v6 {
            let s: [u8; 16] = f[22..38].try_into().unwrap();
            let d: [u8; 16] = f[38..54].try_into().unwrap();
            (54, ntpx::proto::wire::checksum::pseudo_v6(s, d, 56))
        } else {
            let s: [u8; 4] = f[26..30].try_into().unwrap();
            let d: [u8; 4] = f[30..34].try_into().unwrap();
            (34, ntpx::proto::wire::checksum::pseudo_v4(s, d, 56))
        };
        let field = !ntpx::proto::wire::checksum::finish(pseudo);
        f[udp_at + 6..udp_at + 8].copy_from_slice(&field.to_be_bytes());
        f
    };
    let mut accepting = cfg();
    accepting.accept_partial_checksum = true;
    for v6 in [false, true] {
        let f = if v6 {
            partial(build_v6(40000, &ntp_request(0x23, 48)), true)
        } else {
            partial(build_v4(0, 40000, &ntp_request(0x23, 48)), false)
        };
        let mut g = f.clone();
        assert_eq!(
            run(&mut g),
            Err(DropReason::BadUdpChecksum),
            "v6 {v6}: refused by default"
        );
        let mut g = f.clone();
        let r = respond(&mut g, &accepting, &state(), RX, || TX, 1).unwrap();
        assert!(r.partial_checksum, "v6 {v6}: counted apart");
        // The reply's checksum is computed afresh, in full.
        check_ntp(&check_reply(&g[..r.len], 0), 4);
        // A field that is neither full nor partial is still refused.
        let mut g = f.clone();
        let at = if v6 { 60 } else { 40 };
        g[at + 1] ^= 1;
        assert_eq!(
            respond(&mut g, &accepting, &state(), RX, || TX, 1),
            Err(DropReason::BadUdpChecksum),
            "v6 {v6}"
        );
        // A full checksum is not counted as partial.
        let mut g = if v6 {
            build_v6(40000, &ntp_request(0x23, 48))
        } else {
            build_v4(0, 40000, &ntp_request(0x23, 48))
        };
        let r = respond(&mut g, &accepting, &state(), RX, || TX, 1).unwrap();
        assert!(!r.partial_checksum);
    }
}

#[test]
fn ethernet_padding_is_tolerated() {
    let mut f = build_v4(0, 40000, &ntp_request(0x23, 48));
    f.extend_from_slice(&[0; 6]);
    let len = run(&mut f).unwrap();
    check_ntp(&check_reply(&f[..len], 0), 4);
}

#[test]
fn drops() {
    let good = build_v4(0, 40000, &ntp_request(0x23, 48));
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("short frame", good[..20].to_vec(), DropReason::Truncated),
        (
            "src port 0",
            build_v4(0, 0, &ntp_request(0x23, 48)),
            DropReason::SrcPortZero,
        ),
        (
            "chargen",
            build_v4(0, 19, &ntp_request(0x23, 48)),
            DropReason::LoopPort,
        ),
        (
            "mode 4",
            build_v4(0, 40000, &ntp_request(0x24, 48)),
            DropReason::NtpMode,
        ),
        (
            "mode 7 monlist",
            build_v4(0, 40000, &ntp_request(0x17, 48)),
            DropReason::NtpMode,
        ),
        (
            "version 5",
            build_v4(0, 40000, &ntp_request(0x2b, 48)),
            DropReason::NtpVersion,
        ),
        (
            "47 bytes",
            build_v4(0, 40000, &ntp_request(0x23, 47)),
            DropReason::NtpTooShort,
        ),
        (
            "MAC",
            build_v4(0, 40000, &ntp_request(0x23, 68)),
            DropReason::NtpMac,
        ),
        (
            "v6 MAC",
            build_v6(40000, &ntp_request(0x23, 72)),
            DropReason::NtpMac,
        ),
        (
            "group MAC",
            {
                let mut f = good.clone();
                f[0] = 0x01;
                f
            },
            DropReason::NonUnicast,
        ),
        (
            "bad ip csum",
            {
                let mut f = good.clone();
                f[24] ^= 0xff;
                f
            },
            DropReason::BadIpChecksum,
        ),
        (
            "bad udp csum",
            {
                let mut f = good.clone();
                f[40] ^= 0xff;
                f
            },
            DropReason::BadUdpChecksum,
        ),
        (
            "payload flipped",
            {
                let mut f = good.clone();
                f[60] ^= 0x01;
                f
            },
            DropReason::BadUdpChecksum,
        ),
        (
            "ip length too long",
            {
                let mut f = good.clone();
                f[17] += 4;
                fix_ip(&mut f);
                f
            },
            DropReason::BadIpLength,
        ),
        (
            "udp length",
            {
                let mut f = good.clone();
                f[39] -= 4;
                f
            },
            DropReason::BadUdpLength,
        ),
        (
            "fragment",
            {
                let mut f = good.clone();
                f[20] = 0x20;
                fix_ip(&mut f);
                f
            },
            DropReason::Fragment,
        ),
        (
            "not udp",
            {
                let mut f = good.clone();
                f[23] = 6;
                fix_ip(&mut f);
                f
            },
            DropReason::NotUdp,
        ),
        (
            "not ours",
            {
                let mut f = good.clone();
                f[33] = 9;
                fix_ip(&mut f);
                f
            },
            DropReason::NotOurAddress,
        ),
        (
            "from loopback",
            {
                let mut f = good.clone();
                f[26] = 127;
                fix_ip(&mut f);
                f
            },
            DropReason::BadSource,
        ),
        (
            "from broadcast",
            {
                let mut f = good.clone();
                f[26..30].copy_from_slice(&[255; 4]);
                fix_ip(&mut f);
                f
            },
            DropReason::BadSource,
        ),
        (
            "from ourselves",
            {
                let mut f = good.clone();
                f[26..30].copy_from_slice(&SRV4);
                fix_ip(&mut f);
                f
            },
            DropReason::OwnSource,
        ),
        (
            "other port",
            {
                let mut f = good.clone();
                f[37] = 124;
                f
            },
            DropReason::OtherPort,
        ),
        (
            "arp",
            {
                let mut f = good.clone();
                f[12..14].copy_from_slice(&[0x08, 0x06]);
                f
            },
            DropReason::NotIp,
        ),
        (
            "v6 zero csum",
            {
                let mut f = build_v6(40000, &ntp_request(0x23, 48));
                f[60..62].copy_from_slice(&[0, 0]);
                f
            },
            DropReason::BadUdpChecksum,
        ),
        (
            "v6 from ::1",
            {
                let mut f = build_v6(40000, &ntp_request(0x23, 48));
                f[22..38].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
                f
            },
            DropReason::BadSource,
        ),
        (
            "v6 not ours",
            {
                let mut f = build_v6(40000, &ntp_request(0x23, 48));
                f[53] = 9;
                f
            },
            DropReason::NotOurAddress,
        ),
    ];
    for (name, mut frame, reason) in cases {
        assert_eq!(run(&mut frame), Err(reason), "{name}");
    }
}

/// Recomputes the IPv4 header checksum of an untagged frame.
fn fix_ip(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let c = ntpx::proto::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the UDP checksum of an untagged IPv4 frame without options.
fn fix_udp_v4(f: &mut [u8]) {
    use ntpx::proto::wire::checksum;
    let s: [u8; 4] = f[26..30].try_into().unwrap();
    let d: [u8; 4] = f[30..34].try_into().unwrap();
    let len = u16::from_be_bytes([f[38], f[39]]);
    f[40..42].copy_from_slice(&[0, 0]);
    let c = checksum::finish(checksum::accumulate(
        checksum::pseudo_v4(s, d, len),
        &f[34..],
    ));
    f[40..42].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn zero_udp_checksum_is_accepted_over_ipv4() {
    let mut f = build_v4(0, 40000, &ntp_request(0x23, 48));
    f[40..42].copy_from_slice(&[0, 0]);
    let len = run(&mut f).unwrap();
    check_ntp(&check_reply(&f[..len], 0), 4);
}

#[test]
fn never_panics_and_never_grows_on_any_prefix_or_byte_flip() {
    let base = build_v4(1, 40000, &ntp_request(0x23, 48));
    for cut in 0..=base.len() {
        let mut f = base[..cut].to_vec();
        if let Ok(len) = run(&mut f) {
            assert!(len <= cut);
        }
    }
    for i in 0..base.len() {
        for bit in 0..8 {
            let mut f = base.clone();
            f[i] ^= 1 << bit;
            if let Ok(len) = run(&mut f) {
                assert!(len <= base.len());
            }
        }
    }
}

/// The first fragment of an IPv6 request (a fragment header where UDP
/// would be) is a fragment, as over IPv4, not "not UDP".
#[test]
fn ipv6_first_fragment_is_a_fragment() {
    let good = build_v6(40123, &ntp_request(0x23, 48));
    let at = 14 + 40;
    let mut f = good[..at].to_vec();
    f[14 + 6] = 44;
    let payload = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0x12, 0x34]);
    f.extend_from_slice(&good[at..]);
    assert_eq!(run(&mut f), Err(DropReason::Fragment));
}

/// `on_unsync = "drop"`: an unsynchronised state sends no reply (after
/// every check of the request); a synchronised one answers as before.
#[test]
fn unsynchronised_requests_are_dropped_when_asked() {
    let mut c = cfg();
    c.policy.drop_unsynchronized = true;
    let good = build_v6(40123, &ntp_request(0x23, 48));
    let now = NtpTimestamp::from_unix_nanos(1_700_000_000_000_000_000);
    let mut f = good.clone();
    let unsync = ServerState::unsynchronized(-20);
    assert_eq!(
        respond(&mut f, &c, &unsync, now, || now, 0),
        Err(DropReason::Unsynchronized)
    );
    let mut f = good.clone();
    assert!(respond(&mut f, &c, &state(), now, || now, 0).is_ok());
    // A bad request is still dropped under its own reason.
    let mut f = build_v6(0, &ntp_request(0x23, 48));
    assert_eq!(
        respond(&mut f, &c, &unsync, now, || now, 0),
        Err(DropReason::SrcPortZero)
    );
}

/// Interleaved mode (RFC 9769) as an interleaved client plays it (chrony's
/// `xleave`), through the responder and the server's table: the client's
/// first request (origin 0) and second (origin = our first T2, which no
/// table holds) get basic replies, the second is recorded; once its
/// transmit time is stamped, the third gets it as T3, with the client's
/// receive timestamp as origin. Lost stamp, evicted slot (table full),
/// spoofed source, a basic client echoing T3: basic replies.
#[test]
fn interleaved_exchanges_through_the_table() {
    use ntpx::proto::ntp::Marker;
    use ntpx::proto::respond::respond_with;
    use ntpx::server::interleave::XleaveTable;

    let mut c = cfg();
    c.interleave = Some(Marker::new([11, 22], -24));
    let table = XleaveTable::new(16);
    let mut store = table.store();
    let t = |s: u64, f: u64| NtpTimestamp::from_bits((0xe91b_2c00 + s) << 32 | f);
    // One exchange: the client sends `origin`/`receive`/`transmit`; the
    // server receives at `rx` and, for a basic reply, reads `tx`.
    let exchange = |store: &mut ntpx::server::interleave::Store<'_>,
                    src: [u8; 4],
                    origin: NtpTimestamp,
                    receive: NtpTimestamp,
                    n: u64| {
        let mut req = ntp_request(0x23, 48);
        req[24..32].copy_from_slice(&origin.to_bytes());
        req[32..40].copy_from_slice(&receive.to_bytes());
        req[40..48].copy_from_slice(&t(n, 0x4000_0000).to_bytes());
        let mut f = Vec::new();
        PacketBuilder::ethernet2(CLI_MAC, SRV_MAC)
            .ipv4(src, SRV4, 64)
            .udp(40000, 123)
            .write(&mut f, &req)
            .unwrap();
        let r = respond_with(
            &mut f,
            &c,
            &state(),
            t(n, 0x8000_0000),
            || t(n, 0x8010_0000),
            0,
            store,
        )
        .expect("answered");
        let p = Packet::new_checked(&f[r.len - 48..r.len]).unwrap();
        (r, p.origin(), p.receive(), p.transmit())
    };
    let stamp = |store: &mut ntpx::server::interleave::Store<'_>,
                 r: &ntpx::proto::respond::Reply,
                 n: u64| {
        let ex = r.record.expect("recorded");
        assert!(store.record(ex.t2, ex.client, r.transmit), "slot");
        // When the reply really left: after the basic T3.
        store.stamp(ex.t2, r.transmit, t(n, 0x8020_0000));
    };

    // 1: origin 0.
    let (r1, _, t2_1, t3_1) = exchange(&mut store, CLI4, NtpTimestamp::ZERO, NtpTimestamp::ZERO, 1);
    assert!(!r1.interleaved && r1.record.is_none());
    assert_eq!(t2_1.to_bits() & 1, 1, "T2 marked");
    assert_eq!(t3_1.to_bits() & 1, 0, "T3 not");
    // 2: origin = T2 of 1: nothing recorded yet, basic; recorded now.
    let (r2, o2, t2_2, _) = exchange(&mut store, CLI4, t2_1, t(1, 0x9000_0000), 2);
    assert!(!r2.interleaved);
    assert_eq!(
        o2,
        t(2, 0x4000_0000),
        "basic: origin = the request's transmit"
    );
    stamp(&mut store, &r2, 2);
    // 3: origin = T2 of 2: interleaved.
    let (r3, o3, t2_3, t3_3) = exchange(&mut store, CLI4, t2_2, t(2, 0x9000_0000), 3);
    assert!(r3.interleaved, "{r3:?}");
    assert_eq!(
        o3,
        t(2, 0x9000_0000),
        "interleaved: origin = the request's receive"
    );
    assert_eq!(
        t3_3.to_bits() >> 8,
        t(2, 0x8020_0000).to_bits() >> 8,
        "T3 = when reply 2 left"
    );
    assert!(t3_3.to_bits() & 1 == 0 && t2_3.to_bits() & 1 == 1);
    // Given once: the same origin again gets a basic reply.
    let (again, ..) = exchange(&mut store, CLI4, t2_2, t(2, 0x9000_0000), 4);
    assert!(!again.interleaved);
    // Lost stamp: recorded, never stamped → basic.
    let (r5, _, t2_5, _) = exchange(&mut store, CLI4, t2_3, t(3, 0x9000_0000), 5);
    assert!(!r5.interleaved);
    let ex = r5.record.unwrap();
    assert!(store.record(ex.t2, ex.client, r5.transmit));
    let (r6, ..) = exchange(&mut store, CLI4, t2_5, t(5, 0x9000_0000), 6);
    assert!(!r6.interleaved);
    // Spoofed: another source with a good origin → basic (and its mark
    // does not verify, so nothing is recorded).
    stamp(&mut store, &r6, 6);
    let t2_6 = ntpx::proto::ntp::NtpTimestamp::from_bits(r6.record.unwrap().t2.to_bits());
    let (spoof, ..) = exchange(&mut store, [198, 18, 0, 77], t2_6, t(6, 0x9000_0000), 7);
    assert!(!spoof.interleaved && spoof.record.is_none());
    // A basic client echoing our T3: never touches the table.
    let before = store.counts;
    let (basic, ..) = exchange(&mut store, CLI4, t3_3, t(3, 0x9000_0000), 8);
    assert!(!basic.interleaved && basic.record.is_none());
    assert_eq!(
        store.counts.hits + store.counts.misses,
        before.hits + before.misses
    );
    // Table full: sixteen newer records evict reply 6's slot → basic.
    for i in 0..64u64 {
        store.record(t(100 + i, 0x8000_0001), 1, t(0, 1));
    }
    let (evicted, ..) = exchange(&mut store, CLI4, t2_6, t(6, 0x9000_0000), 9);
    assert!(!evicted.interleaved);
}
