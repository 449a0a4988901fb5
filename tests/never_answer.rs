//! Frames an attacker would craft, sent byte for byte from the client
//! namespace over a veth to a running `ntpx serve`, on both datapaths.
//!
//! Each crafted frame carries a nonce of its own as its NTP transmit
//! timestamp. After each one, a good request (the sentinel) must be
//! answered: the server is alive and has processed the crafted frame
//! before it. A reply that echoes a crafted frame's nonce must never show
//! up, except where the kernel answers (socket datapath) and the reply is
//! a sound one (to the client's own MAC). At the end, the server's live
//! counters (`ntpx stats --json`) must name each drop under its reason,
//! and requests = replies + drops.
//!
//! Needs root; under `CI=true` these tests fail instead of skipping.

mod common;

use common::*;
use etherparse::PacketBuilder;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// What must become of a crafted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// ntpx drops it, counted under this reason.
    Drop(&'static str),
    /// It never reaches ntpx: the XDP program passes it to the kernel, or
    /// the kernel drops it. Never answered.
    Kernel,
    /// The kernel delivers it and the reply is sound: it goes to the
    /// client's own MAC address (the kernel resolves the next hop from the
    /// IP source, never from the request's MAC).
    AnsweredToClient,
}

struct Case {
    name: &'static str,
    /// The frames (one, or the fragments of one datagram).
    frames: Vec<Vec<u8>>,
    nonce: [u8; 8],
    xdp: Fate,
    socket: Fate,
}

/// The two ends of the link.
#[derive(Clone, Copy)]
struct Ends {
    srv_mac: [u8; 6],
    cli_mac: [u8; 6],
    srv4: Ipv4Addr,
    cli4: Ipv4Addr,
    srv6: Ipv6Addr,
    cli6: Ipv6Addr,
}

impl Ends {
    fn of(topo: &Topology) -> Ends {
        Ends {
            srv_mac: topo.mac("srv"),
            cli_mac: topo.mac("cli"),
            srv4: topo.srv_v4,
            cli4: topo.cli_v4,
            srv6: topo.srv_v6,
            cli6: topo.cli_v6,
        }
    }
}

fn ntp_request(nonce: [u8; 8]) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23; // v4, client
    p[2] = 6;
    p[40..48].copy_from_slice(&nonce);
    p
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An IPv4 request built field by field: `options` go into the IP header,
/// `udp_len` overrides the UDP length field (the checksum then covers that
/// many bytes, as the kernel checks it), `trailer` follows the datagram
/// inside the IP payload.
struct V4 {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    options: Vec<u8>,
    udp_len: Option<u16>,
    trailer: Vec<u8>,
    nonce: [u8; 8],
    /// The UDP payload (default: a good request carrying the nonce).
    payload: Option<Vec<u8>>,
}

impl V4 {
    fn new(e: &Ends, nonce: [u8; 8]) -> V4 {
        V4 {
            src_mac: e.cli_mac,
            dst_mac: e.srv_mac,
            src: e.cli4,
            dst: e.srv4,
            options: Vec::new(),
            udp_len: None,
            trailer: Vec::new(),
            nonce,
            payload: None,
        }
    }

    /// The UDP datagram (header, payload) with its checksum over `len`
    /// bytes, plus the trailer.
    fn ip_payload(&self, sport: u16) -> Vec<u8> {
        let payload = self
            .payload
            .clone()
            .unwrap_or_else(|| ntp_request(self.nonce));
        let real = (8 + payload.len()) as u16;
        let len = self.udp_len.unwrap_or(real);
        let mut d = Vec::new();
        d.extend_from_slice(&sport.to_be_bytes());
        d.extend_from_slice(&123u16.to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&payload);
        let covered = usize::from(len).min(d.len());
        let pseudo = sum16(&self.src.octets()) + sum16(&self.dst.octets()) + 17 + u32::from(len);
        let c = !fold(pseudo + sum16(&d[..covered]));
        d[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        d.extend_from_slice(&self.trailer);
        d
    }

    fn frame(&self) -> Vec<u8> {
        let data = self.ip_payload(40123);
        ipv4_frame(self, 0, 0x4000, &data)
    }
}

/// `frame` with `tags` 802.1Q tags inserted after the MAC addresses.
fn vlan_tagged(frame: &[u8], tags: usize) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    for i in 0..tags {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 10 + i as u8]);
    }
    f.extend_from_slice(&frame[12..]);
    f
}

/// What the server does with an NTP payload, by the parser's own verdict:
/// the drop reason's label, or `None` for a request it answers.
fn ntp_verdict(payload: &[u8]) -> Option<&'static str> {
    ntpx::proto::ntp::parse_request(payload)
        .err()
        .map(|r| ntpx::proto::drops::DropReason::from(r).label())
}

/// An Ethernet + IPv4 frame around `data` with the given IP ID and
/// flags/fragment-offset word.
fn ipv4_frame(v: &V4, id: u16, frag: u16, data: &[u8]) -> Vec<u8> {
    assert_eq!(v.options.len() % 4, 0);
    let ihl = 20 + v.options.len();
    let mut f = Vec::new();
    f.extend_from_slice(&v.dst_mac);
    f.extend_from_slice(&v.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![(0x40 | (ihl / 4)) as u8, 0];
    ip.extend_from_slice(&((ihl + data.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0]);
    ip.extend_from_slice(&v.src.octets());
    ip.extend_from_slice(&v.dst.octets());
    ip.extend_from_slice(&v.options);
    let c = !fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(data);
    f
}

/// A well-formed IPv6 request, MACs as given.
fn v6_frame(e: &Ends, nonce: [u8; 8], src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv6(e.cli6.octets(), e.srv6.octets(), 64)
        .udp(40123, 123)
        .write(&mut out, &ntp_request(nonce))
        .expect("build");
    out
}

/// IPv6 with the UDP length field 0 (the jumbogram form, RFC 2675), its
/// checksum computed over the real length as the kernel checks it.
fn v6_udp_length_zero(e: &Ends, nonce: [u8; 8]) -> Vec<u8> {
    let mut f = v6_frame(e, nonce, e.cli_mac, e.srv_mac);
    f[58..60].copy_from_slice(&[0, 0]);
    f[60..62].copy_from_slice(&[0, 0]);
    let pseudo = sum16(&e.cli6.octets()) + sum16(&e.srv6.octets()) + 17 + 56;
    let c = !fold(pseudo + sum16(&f[54..]));
    f[60..62].copy_from_slice(&c.to_be_bytes());
    f
}

/// An IPv6 request behind a destination options header (PadN), with the
/// UDP length field 0 and the checksum over the real length.
fn v6_with_dest_options(e: &Ends, nonce: [u8; 8]) -> Vec<u8> {
    let plain = v6_udp_length_zero(e, nonce);
    let mut f = plain[..54].to_vec();
    f[18..20].copy_from_slice(&(56u16 + 8).to_be_bytes());
    f[20] = 60; // next header: destination options
    f.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // UDP next; PadN of 4
    f.extend_from_slice(&plain[54..]);
    f
}

/// One IPv6 request in two fragments (RFC 8200 fragment header).
fn v6_fragments(e: &Ends, nonce: [u8; 8]) -> Vec<Vec<u8>> {
    let whole = v6_frame(e, nonce, e.cli_mac, e.srv_mac);
    let datagram = &whole[54..]; // UDP header + payload, checksum done
    let (first, second) = datagram.split_at(32);
    let part = |offset: usize, more: bool, bytes: &[u8]| {
        let mut f = whole[..54].to_vec();
        f[18..20].copy_from_slice(&((8 + bytes.len()) as u16).to_be_bytes());
        f[20] = 44; // next header: fragment
        f.extend_from_slice(&[17, 0]);
        let off = ((offset / 8) as u16) << 3 | u16::from(more);
        f.extend_from_slice(&off.to_be_bytes());
        f.extend_from_slice(&0x6e74_7078u32.to_be_bytes());
        f.extend_from_slice(bytes);
        f
    };
    vec![part(0, true, first), part(32, false, second)]
}

fn nonce(i: u64) -> [u8; 8] {
    (0x6e74_7078_0000_0000 | i).to_be_bytes()
}

fn cases(e: &Ends) -> Vec<Case> {
    use Fate::*;
    let mut n = 0;
    let mut next = || {
        n += 1;
        nonce(n)
    };
    let mut out = Vec::new();
    let mut v4 = |name, edit: &dyn Fn(&mut V4), xdp, socket| {
        let nonce = next();
        let mut v = V4::new(e, nonce);
        edit(&mut v);
        out.push(Case {
            name,
            frames: vec![v.frame()],
            nonce,
            xdp,
            socket,
        });
    };
    let group_sources: [(&str, [u8; 6]); 4] = [
        ("v4 from broadcast MAC", [0xff; 6]),
        (
            "v4 from IPv4 multicast MAC",
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
        ),
        (
            "v4 from IPv6 multicast MAC",
            [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
        ),
        ("v4 from all-zero MAC", [0; 6]),
    ];
    for (name, mac) in group_sources {
        v4(
            name,
            &|v| v.src_mac = mac,
            Drop("bad_src_mac"),
            AnsweredToClient,
        );
    }
    v4(
        "v4 to another host's MAC",
        &|v| v.dst_mac = [0x02, 0x6e, 0x74, 0x70, 0x78, 0x01],
        Drop("other_host"),
        Kernel,
    );
    v4(
        "v4 to broadcast MAC",
        &|v| v.dst_mac = [0xff; 6],
        Drop("non_unicast"),
        AnsweredToClient,
    );
    v4(
        "v4 from the subnet's broadcast address",
        &|v| v.src = Ipv4Addr::new(198, 18, 0, 255),
        Drop("directed_broadcast"),
        Drop("directed_broadcast"),
    );
    v4(
        "v4 from the subnet's network address",
        &|v| v.src = Ipv4Addr::new(198, 18, 0, 0),
        Drop("directed_broadcast"),
        Drop("directed_broadcast"),
    );
    v4(
        "v4 loose source route",
        &|v| v.options = vec![131, 7, 4, 198, 18, 0, 9, 0],
        Drop("source_route"),
        Kernel,
    );
    v4(
        "v4 strict source route",
        &|v| v.options = vec![137, 7, 4, 198, 18, 0, 9, 0],
        Drop("source_route"),
        Kernel,
    );
    v4(
        "v4 option of length 0",
        &|v| v.options = vec![25, 0, 0, 0],
        Drop("bad_ip_options"),
        Kernel,
    );
    v4(
        "v4 option longer than the header",
        &|v| v.options = vec![1, 25, 12, 0],
        Drop("bad_ip_options"),
        Kernel,
    );
    v4(
        "v4 UDP length shorter than the IP payload",
        &|v| {
            v.udp_len = Some(56);
            v.trailer = vec![0xee; 8];
        },
        Drop("bad_udp_length"),
        Drop("bad_udp_length"),
    );
    // A UDP datagram with no payload at all.
    let empty = next();
    let v = V4::new(e, empty);
    let mut udp = Vec::new();
    udp.extend_from_slice(&40123u16.to_be_bytes());
    udp.extend_from_slice(&123u16.to_be_bytes());
    udp.extend_from_slice(&8u16.to_be_bytes());
    let pseudo = sum16(&v.src.octets()) + sum16(&v.dst.octets()) + 17 + 8;
    let c = !fold(pseudo + sum16(&udp));
    udp.extend_from_slice(&c.to_be_bytes());
    out.push(Case {
        name: "v4 empty UDP datagram",
        frames: vec![ipv4_frame(&v, 0, 0x4000, &udp)],
        nonce: empty,
        // The XDP program drops it (and ntpx counts that as a request).
        xdp: Drop("ntp_too_short"),
        // The socket filter drops it; the kernel counts it on the socket.
        socket: Drop("socket_kernel_drop"),
    });
    let bad_sum = next();
    let mut f = V4::new(e, bad_sum).frame();
    let at = f.len() - 1;
    f[at] ^= 0x55; // the last NTP byte: the UDP checksum no longer matches
    out.push(Case {
        name: "v4 bad UDP checksum",
        frames: vec![f],
        nonce: bad_sum,
        xdp: Drop("bad_udp_checksum"),
        // The kernel verifies a datagram this short before it looks for
        // a socket, and drops it there (Udp InCsumErrors).
        socket: Kernel,
    });
    // One datagram in two IPv4 fragments: XDP hands fragments to the
    // kernel; the socket datapath sees the reassembled datagram.
    let nonce4 = next();
    let v = V4::new(e, nonce4);
    let data = v.ip_payload(40123);
    out.push(Case {
        name: "v4 fragments of a request",
        frames: vec![
            ipv4_frame(&v, 0x7878, 0x2000, &data[..32]),
            ipv4_frame(&v, 0x7878, 32 / 8, &data[32..]),
        ],
        nonce: nonce4,
        // The XDP program hands the first fragment to the worker, which
        // drops it, so that the kernel never reassembles the request.
        xdp: Drop("fragment"),
        socket: Drop("fragment"),
    });
    let n6 = next();
    out.push(Case {
        name: "v6 from broadcast MAC",
        frames: vec![v6_frame(e, n6, [0xff; 6], e.srv_mac)],
        nonce: n6,
        xdp: Drop("bad_src_mac"),
        socket: AnsweredToClient,
    });
    let n6 = next();
    out.push(Case {
        name: "v6 to another host's MAC",
        frames: vec![v6_frame(
            e,
            n6,
            e.cli_mac,
            [0x02, 0x6e, 0x74, 0x70, 0x78, 0x02],
        )],
        nonce: n6,
        xdp: Drop("other_host"),
        socket: Kernel,
    });
    let n6 = next();
    out.push(Case {
        name: "v6 UDP length 0",
        frames: vec![v6_udp_length_zero(e, n6)],
        nonce: n6,
        xdp: Drop("bad_udp_length"),
        socket: Drop("bad_udp_length"),
    });
    let n6 = next();
    out.push(Case {
        name: "v6 fragments of a request",
        frames: v6_fragments(e, n6),
        nonce: n6,
        xdp: Drop("fragment"),
        socket: Drop("fragment"),
    });
    let n6 = next();
    out.push(Case {
        name: "v6 behind a destination options header, UDP length 0",
        frames: vec![v6_with_dest_options(e, n6)],
        nonce: n6,
        // Extension headers are not parsed in XDP: the kernel gets it
        // (nothing there answers it here; see README, Limitations).
        xdp: Kernel,
        socket: Drop("bad_udp_length"),
    });

    // Every mode under every version (but the good ones): dropped under
    // the parser's reason; mode 4 goes to the kernel in XDP (a reply to
    // the host's own client), and no daemon there answers it.
    for version in 0..8u8 {
        for mode in 0..8u8 {
            let nonce = next();
            let mut p = ntp_request(nonce);
            p[0] = (version << 3) | mode;
            let Some(reason) = ntp_verdict(&p) else {
                continue;
            };
            let mut v = V4::new(e, nonce);
            v.payload = Some(p);
            out.push(Case {
                name: "v4 mode/version",
                frames: vec![v.frame()],
                nonce,
                xdp: if mode == 4 { Kernel } else { Drop(reason) },
                socket: Drop(reason),
            });
        }
    }
    // Every NTP payload length from 1 to 120 (0 is above): a good header
    // cut short, or followed by zeros (no valid extension field).
    for len in 1..=120usize {
        let nonce = next();
        let mut p = ntp_request(nonce);
        p.resize(len, 0);
        let Some(reason) = ntp_verdict(&p) else {
            continue;
        };
        let mut v = V4::new(e, nonce);
        v.payload = Some(p);
        out.push(Case {
            name: "v4 NTP length",
            frames: vec![v.frame()],
            nonce,
            xdp: Drop(reason),
            socket: Drop(reason),
        });
    }
    // Legacy MACs, NTS fields, malformed extension fields.
    let mut field = |name: &'static str, trailer: Vec<u8>| {
        let nonce = next();
        let mut p = ntp_request(nonce);
        p.extend_from_slice(&trailer);
        let reason = ntp_verdict(&p).expect("never answered");
        let mut v = V4::new(e, nonce);
        v.payload = Some(p);
        out.push(Case {
            name,
            frames: vec![v.frame()],
            nonce,
            xdp: Drop(reason),
            socket: Drop(reason),
        });
    };
    field("v4 MD5 MAC", [&[0, 0, 0, 1][..], &[0xab; 16]].concat());
    field("v4 SHA-1 MAC", [&[0, 0, 0, 1][..], &[0xab; 20]].concat());
    let mut uid = vec![0x01, 0x04, 0, 36];
    uid.resize(36, 0x5a);
    field("v4 NTS unique identifier", uid);
    field(
        "v4 extension field longer than the packet",
        vec![0x00, 0x02, 0x01, 0x00, 0, 0, 0, 0],
    );
    field(
        "v4 extension field of length 6",
        vec![0x00, 0x02, 0x00, 0x06, 0, 0, 0, 0],
    );
    field(
        "v4 last extension field under 28 bytes",
        vec![0x00, 0x02, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );

    // Three VLAN tags: not parsed (the program takes two); the kernel
    // drops the frame (no VLAN device here).
    let n3 = next();
    out.push(Case {
        name: "v4 under three VLAN tags",
        frames: vec![vlan_tagged(&V4::new(e, n3).frame(), 3)],
        nonce: n3,
        xdp: Kernel,
        socket: Kernel,
    });
    // Broadcast and multicast destinations: never answered.
    let mut dest = |name: &'static str, mac: [u8; 6], ip: Ipv4Addr, socket: Fate| {
        let nonce = next();
        let mut v = V4::new(e, nonce);
        v.dst_mac = mac;
        v.dst = ip;
        out.push(Case {
            name,
            frames: vec![v.frame()],
            nonce,
            // Not a served address: the XDP program passes it.
            xdp: Kernel,
            socket,
        });
    };
    dest(
        "v4 to the limited broadcast address",
        [0xff; 6],
        Ipv4Addr::BROADCAST,
        Drop("not_our_address"),
    );
    dest(
        "v4 to the subnet's broadcast address",
        [0xff; 6],
        Ipv4Addr::new(198, 18, 0, 255),
        Drop("not_our_address"),
    );
    dest(
        "v4 to NTP's multicast group",
        [0x01, 0x00, 0x5e, 0x00, 0x01, 0x01],
        Ipv4Addr::new(224, 0, 1, 1),
        Kernel,
    );
    let n6 = next();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(e.cli_mac, [0x33, 0x33, 0, 0, 1, 1])
        .ipv6(
            e.cli6.octets(),
            "ff02::101".parse::<Ipv6Addr>().unwrap().octets(),
            64,
        )
        .udp(40123, 123)
        .write(&mut f, &ntp_request(n6))
        .expect("build");
    // Martian and own sources: the XDP program drops them. The kernel
    // drops most before any socket; 0/8 and 240/4 it takes for unicast
    // (since Linux 5.3 and 2.6.25), and ntpx drops them.
    for (name, src, socket) in [
        (
            "v4 from 0.0.0.0/8",
            Ipv4Addr::new(0, 1, 2, 3),
            Drop("bad_source"),
        ),
        ("v4 from loopback", Ipv4Addr::new(127, 0, 0, 1), Kernel),
        ("v4 from multicast", Ipv4Addr::new(224, 0, 0, 1), Kernel),
        (
            "v4 from 240/4",
            Ipv4Addr::new(240, 0, 0, 1),
            Drop("bad_source"),
        ),
        (
            "v4 from the limited broadcast address",
            Ipv4Addr::BROADCAST,
            Kernel,
        ),
    ] {
        let nonce = next();
        let mut v = V4::new(e, nonce);
        v.src = src;
        out.push(Case {
            name,
            frames: vec![v.frame()],
            nonce,
            xdp: Drop("bad_source"),
            socket,
        });
    }
    let nonce = next();
    let mut v = V4::new(e, nonce);
    v.src = e.srv4;
    out.push(Case {
        name: "v4 from the server's own address",
        frames: vec![v.frame()],
        nonce,
        xdp: Drop("own_source"),
        socket: Kernel,
    });
    for (name, src) in [("v6 from ::1", "::1"), ("v6 from multicast", "ff02::1")] {
        let nonce = next();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(e.cli_mac, e.srv_mac)
            .ipv6(
                src.parse::<Ipv6Addr>().unwrap().octets(),
                e.srv6.octets(),
                64,
            )
            .udp(40123, 123)
            .write(&mut f, &ntp_request(nonce))
            .expect("build");
        out.push(Case {
            name,
            frames: vec![f],
            nonce,
            xdp: Drop("bad_source"),
            socket: Kernel,
        });
    }
    // A hop-by-hop options header (PadN) before UDP, lengths right.
    let nonce = next();
    let plain = v6_frame(e, nonce, e.cli_mac, e.srv_mac);
    let mut hbh = plain[..54].to_vec();
    hbh[18..20].copy_from_slice(&(56u16 + 8).to_be_bytes());
    hbh[20] = 0; // next header: hop-by-hop options
    hbh.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    hbh.extend_from_slice(&plain[54..]);
    out.push(Case {
        name: "v6 behind a hop-by-hop options header",
        frames: vec![hbh],
        nonce,
        xdp: Kernel,
        // The socket filter cannot see the UDP length behind it.
        socket: Drop("bad_udp_length"),
    });
    out.push(Case {
        name: "v6 to NTP's multicast group",
        frames: vec![f],
        nonce: n6,
        xdp: Kernel,
        socket: Kernel,
    });
    out
}

/// The NTP origin timestamp and the destination MAC of a reply frame
/// (UDP from port 123), if `frame` is one.
fn reply_origin(frame: &[u8]) -> Option<([u8; 8], [u8; 6])> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
        return None;
    };
    let payload = udp.payload();
    if udp.source_port() != 123 || payload.len() < 48 {
        return None;
    }
    let origin: [u8; 8] = payload[24..32].try_into().ok()?;
    Some((origin, frame[..6].try_into().ok()?))
}

/// The server's live counters from `ntpx stats --json`.
fn run_corpus(test: &str, socket_datapath: bool) {
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("ntpx-never");
    let stats = dir.path().join("stats.sock");
    let stats_arg = stats.to_string_lossy().into_owned();
    // With the default rate limits on (the harness turns them off unless
    // a `--rate-` flag is given): the corpus and its sentinels stay well
    // within one client's limit.
    let mut args = vec![
        "--iface",
        topo.srv_if.as_str(),
        "--stats-socket",
        &stats_arg,
        "--rate-burst",
        "256",
    ];
    if socket_datapath {
        args.extend(["--datapath", "socket", "--workers", "1"]);
    } else {
        peer_pass(&topo);
        args.extend(["--xdp-mode", "native"]);
    }
    let mut server = Server::start(&topo, &args);
    let e = Ends::of(&topo);
    let link = RawLink::open(&topo);
    let mut sentinel_n = 0xffff_0000u64;
    let mut sentinel = |link: &RawLink| {
        sentinel_n += 1;
        let n = nonce(sentinel_n);
        link.send(&V4::new(&e, n).frame());
        n
    };
    // The first sentinel also lets the kernel learn the client's MAC
    // (socket datapath) before any case counts on it.
    let first = sentinel(&link);
    assert!(
        link.recv_until(Duration::from_secs(5), |f| reply_origin(f)
            .is_some_and(|(o, _)| o == first)),
        "the server never answered a good request:\n{}",
        server.stop()
    );
    let mut sent_requests = 1u64;
    let mut answered = 1u64;
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let all = cases(&e);
    println!("{test}: {} crafted frames", all.len());
    for case in all {
        let fate = if socket_datapath {
            case.socket
        } else {
            case.xdp
        };
        for f in &case.frames {
            link.send(f);
        }
        let s = sentinel(&link);
        sent_requests += 1;
        let mut case_replies = Vec::new();
        let got_sentinel = link.recv_until(Duration::from_secs(3), |f| match reply_origin(f) {
            Some((o, _)) if o == s => true,
            Some((o, dst)) if o == case.nonce => {
                case_replies.push(dst);
                false
            }
            _ => false,
        });
        // Anything still in flight for the case.
        link.recv_until(Duration::from_millis(50), |f| {
            if let Some((o, dst)) = reply_origin(f)
                && o == case.nonce
            {
                case_replies.push(dst);
            }
            false
        });
        if !got_sentinel {
            failures.push(format!(
                "{}: the sentinel after it was not answered",
                case.name
            ));
            continue;
        }
        answered += 1;
        match fate {
            Fate::Drop(reason) => {
                sent_requests += 1;
                *want.entry(reason).or_default() += 1;
                if !case_replies.is_empty() {
                    failures.push(format!("{}: answered (to {case_replies:02x?})", case.name));
                }
            }
            Fate::Kernel => {
                if !case_replies.is_empty() {
                    failures.push(format!("{}: answered (to {case_replies:02x?})", case.name));
                }
            }
            Fate::AnsweredToClient => {
                sent_requests += 1;
                answered += 1;
                if case_replies != [e.cli_mac] {
                    failures.push(format!(
                        "{}: want one reply to the client's MAC, got {case_replies:02x?}",
                        case.name
                    ));
                }
            }
        }
    }
    let doc = live_stats(&topo, &stats);
    let out = server.stop();
    let drops = drops_of(&doc);
    let want: BTreeMap<String, u64> = want.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if drops != want {
        failures.push(format!("live drop counters {drops:?}, want {want:?}"));
    }
    let (rx, tx, dropped) = (
        doc["rx"].as_u64().unwrap_or(0),
        doc["tx"].as_u64().unwrap_or(0),
        doc["dropped"].as_u64().unwrap_or(0),
    );
    if (rx, tx) != (sent_requests, answered) || rx != tx + dropped {
        failures.push(format!(
            "live totals: requests {rx} replies {tx} dropped {dropped}; \
             want requests {sent_requests} replies {answered}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{}\n--- server ---\n{out}",
        failures.join("\n")
    );
}

#[test]
fn xdp_datapath_never_answers_crafted_frames() {
    run_corpus("xdp_datapath_never_answers_crafted_frames", false);
}

#[test]
fn socket_datapath_never_answers_crafted_frames() {
    run_corpus("socket_datapath_never_answers_crafted_frames", true);
}

/// One reply the kernel refuses to send (its request came from a source
/// with no route back) must not take the rest of its `sendmmsg` batch with
/// it. The server is stopped while the requests queue up, so that one
/// `recvmmsg` takes them all and one batch answers them.
#[test]
fn socket_datapath_one_unsendable_reply_loses_no_other() {
    let test = "socket_datapath_one_unsendable_reply_loses_no_other";
    if !require_root(test) {
        return;
    }
    let topo = Topology::up();
    let dir = TempDir::new("ntpx-unsendable");
    let stats = dir.path().join("stats.sock");
    let stats_arg = stats.to_string_lossy().into_owned();
    let mut server = Server::start_socket(&topo, 1, &["--stats-socket", &stats_arg]);
    let e = Ends::of(&topo);
    let link = RawLink::open(&topo);
    // The server's kernel learns the client's MAC first.
    let warm = nonce(0xaaaa_0000);
    link.send(&V4::new(&e, warm).frame());
    assert!(
        link.recv_until(Duration::from_secs(5), |f| reply_origin(f)
            .is_some_and(|(o, _)| o == warm)),
        "no answer to a good request:\n{}",
        server.stop()
    );
    // Good requests around ones from 203.0.113.0/24, which the server's
    // namespace has no route to.
    let mut frames = Vec::new();
    let mut good = Vec::new();
    for i in 0..12u64 {
        let n = nonce(0xbbbb_0000 + i);
        let mut v = V4::new(&e, n);
        if i % 4 == 1 {
            v.src = Ipv4Addr::new(203, 0, 113, 9);
        } else {
            good.push(n);
        }
        frames.push(v.frame());
    }
    server.signal(libc::SIGSTOP);
    assert_eq!(link.send_burst(&frames), frames.len());
    server.signal(libc::SIGCONT);
    let mut answered = Vec::new();
    link.recv_until(Duration::from_secs(3), |f| {
        if let Some((o, _)) = reply_origin(f)
            && good.contains(&o)
            && !answered.contains(&o)
        {
            answered.push(o);
        }
        answered.len() == good.len()
    });
    let doc = live_stats(&topo, &stats);
    let out = server.stop();
    assert_eq!(
        answered.len(),
        good.len(),
        "every good request answered: {doc}\n{out}"
    );
    assert_eq!(doc["drops"]["send_error"], 3, "{doc}\n{out}");
}
