//! The frame responder against an independent implementation: requests
//! built and replies checked with `etherparse` (headers, lengths,
//! checksums), plus every check that must drop a frame.

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanId};
use ntpx::drops::DropReason;
use ntpx::ntp::{Leap, Mode, NtpShort, NtpTimestamp, Packet, ServerState};
use ntpx::respond::{FrameConfig, respond};
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

fn cfg() -> FrameConfig {
    FrameConfig::new(vec![Ipv4Addr::from(SRV4)], vec![SRV6.parse().unwrap()])
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

#[test]
fn ipv4_options_are_dropped_from_the_reply() {
    // Build with etherparse, then splice in 4 bytes of options (NOPs... and
    // an end-of-list) and fix lengths and checksum by hand.
    let f = build_v4(0, 40000, &ntp_request(0x23, 48));
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 0]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = (g.len() - 14) as u16;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    g[24..26].copy_from_slice(&[0, 0]);
    let c = ntpx::wire::checksum::checksum(&g[14..38]);
    g[24..26].copy_from_slice(&c.to_be_bytes());
    let len = run(&mut g).unwrap();
    assert_eq!(len, 14 + 20 + 8 + 48);
    check_ntp(&check_reply(&g[..len], 0), 4);
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
    let c = ntpx::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
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
