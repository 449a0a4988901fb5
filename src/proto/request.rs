//! Request frames: Ethernet / IPv4 or IPv6 / UDP / a 48-byte NTP client
//! request (mode 3), written straight into a TX buffer: the load
//! generator's requests, and the server's self-probe.
//!
//! Everything that does not change between requests (MACs, the server's
//! address and port, the NTP header) is laid out once in a template;
//! each request then patches in its client identity (source address and
//! port), its nonce (the transmit timestamp, which the reply must echo as
//! its origin) and fresh checksums.
//!
//! Pure code: no I/O, no clocks, no `unsafe`.

use crate::proto::ntp::{self, Leap, Mode, NtpTimestamp};
use crate::proto::wire::checksum;
use crate::proto::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::proto::wire::ip::{IPV4_MIN_LEN, IPV6_HEADER_LEN, PROTO_UDP};
use crate::proto::wire::udp::{self, Udp};
use std::net::IpAddr;

/// UDP length of a request (header + NTP header).
const UDP_LEN: usize = udp::HEADER_LEN + ntp::HEADER_LEN;
/// Longest request frame (IPv6).
pub const MAX_FRAME_LEN: usize = ethernet::HEADER_LEN + IPV6_HEADER_LEN + UDP_LEN;
/// TTL / hop limit of requests.
const TTL: u8 = 64;
/// Poll exponent the requests announce (64 s, what chrony sends by default).
const POLL: i8 = 6;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The generator's MAC (the interface it sends from).
    pub src_mac: [u8; 6],
    /// The server's MAC (or the next hop's).
    pub dst_mac: [u8; 6],
    /// The server's address; the family of every source must match.
    pub addr: IpAddr,
    /// The server's UDP port.
    pub port: u16,
    /// NTP version the requests carry (1–4).
    pub version: u8,
}

/// A prepared request frame; see the module docs.
#[derive(Clone, Debug)]
pub struct RequestTemplate {
    frame: [u8; MAX_FRAME_LEN],
    len: usize,
    v6: bool,
    dst: IpAddr,
}

/// Offsets inside the frame.
const IP: usize = ethernet::HEADER_LEN;

impl RequestTemplate {
    /// Lays out the constant part of every request to `t`.
    pub fn new(t: &Target) -> RequestTemplate {
        let mut frame = [0u8; MAX_FRAME_LEN];
        frame[0..6].copy_from_slice(&t.dst_mac);
        frame[6..12].copy_from_slice(&t.src_mac);
        let v6 = t.addr.is_ipv6();
        let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip_len = if v6 { IPV6_HEADER_LEN } else { IPV4_MIN_LEN };
        let udp_at = IP + ip_len;
        match t.addr {
            IpAddr::V4(dst) => {
                let ip = &mut frame[IP..udp_at];
                ip[0] = 0x45; // version 4, IHL 5
                let total = (IPV4_MIN_LEN + UDP_LEN) as u16;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[6] = 0x40; // DF
                ip[8] = TTL;
                ip[9] = PROTO_UDP;
                ip[16..20].copy_from_slice(&dst.octets());
            }
            IpAddr::V6(dst) => {
                let ip = &mut frame[IP..udp_at];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(UDP_LEN as u16).to_be_bytes());
                ip[6] = PROTO_UDP;
                ip[7] = TTL;
                ip[24..40].copy_from_slice(&dst.octets());
            }
        }
        let u = &mut frame[udp_at..udp_at + udp::HEADER_LEN];
        u[2..4].copy_from_slice(&t.port.to_be_bytes());
        u[4..6].copy_from_slice(&(UDP_LEN as u16).to_be_bytes());
        let ntp_at = udp_at + udp::HEADER_LEN;
        // Cannot fail: the slice is exactly the header's length.
        if let Some(mut p) = ntp::Packet::new_checked(&mut frame[ntp_at..ntp_at + ntp::HEADER_LEN])
        {
            p.set_li_vn_mode(Leap::None, t.version, Mode::Client);
            p.set_poll(POLL);
        }
        RequestTemplate {
            frame,
            len: udp_at + UDP_LEN,
            v6,
            dst: t.addr,
        }
    }

    /// Length of every request frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a request has a fixed, non-zero length.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes one request into `out` (at least [`Self::len`] bytes) from
    /// `src`:`src_port` carrying `nonce`; returns the frame length, or
    /// `None` if `out` is too short or `src` is of the wrong family.
    /// `ident` becomes the IPv4 identification field.
    pub fn write(
        &self,
        out: &mut [u8],
        src: IpAddr,
        src_port: u16,
        nonce: NtpTimestamp,
        ident: u16,
        xleave: Option<Xleave>,
    ) -> Option<usize> {
        let out = out.get_mut(..self.len)?;
        out.copy_from_slice(&self.frame[..self.len]);
        let (ip, rest) = out[IP..].split_at_mut(if self.v6 {
            IPV6_HEADER_LEN
        } else {
            IPV4_MIN_LEN
        });
        let pseudo = match (src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                ip[4..6].copy_from_slice(&ident.to_be_bytes());
                ip[12..16].copy_from_slice(&s.octets());
                let c = checksum::checksum(ip);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                checksum::pseudo_v4(s.octets(), d.octets(), UDP_LEN as u16)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                ip[8..24].copy_from_slice(&s.octets());
                checksum::pseudo_v6(s.octets(), d.octets(), UDP_LEN as u16)
            }
            _ => return None,
        };
        rest[0..2].copy_from_slice(&src_port.to_be_bytes());
        let ntp_at = udp::HEADER_LEN;
        rest[ntp_at + 40..ntp_at + 48].copy_from_slice(&nonce.to_bytes());
        if let Some(x) = xleave {
            x.write(&mut rest[ntp_at..ntp_at + ntp::HEADER_LEN]);
        }
        // Cannot fail: the slice holds the whole datagram.
        if let Ok(mut u) = Udp::new_checked(&mut rest[..UDP_LEN]) {
            u.fill_checksum(pseudo);
        }
        Some(self.len)
    }
    /// Writes only the NTP part of a request carrying `nonce` (the UDP
    /// payload, for a datapath whose kernel adds the headers) into `out`;
    /// returns its length, or `None` if `out` is too short.
    pub fn write_payload(
        &self,
        out: &mut [u8],
        nonce: NtpTimestamp,
        xleave: Option<Xleave>,
    ) -> Option<usize> {
        let out = out.get_mut(..ntp::HEADER_LEN)?;
        out.copy_from_slice(&self.frame[self.len - ntp::HEADER_LEN..self.len]);
        out[40..48].copy_from_slice(&nonce.to_bytes());
        if let Some(x) = xleave {
            x.write(out);
        }
        Some(ntp::HEADER_LEN)
    }
}

/// The fields of an interleaved-mode request (RFC 9769) besides the
/// nonce: the server's receive timestamp of the previous exchange as the
/// origin (zero at first), and a receive timestamp that the server echoes
/// as the origin of an interleaved reply. The generator puts its nonce
/// with the lowest bit flipped there: it must differ from the transmit
/// timestamp, and it tells an interleaved reply from a basic one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xleave {
    /// The request's origin timestamp.
    pub origin: NtpTimestamp,
    /// The request's receive timestamp.
    pub receive: NtpTimestamp,
}

impl Xleave {
    fn write(self, ntp: &mut [u8]) {
        ntp[24..32].copy_from_slice(&self.origin.to_bytes());
        ntp[32..40].copy_from_slice(&self.receive.to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ntp::{ReplyPolicy, ServerState};
    use crate::proto::respond::{Responder, respond};

    fn target(addr: &str) -> Target {
        Target {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            addr: addr.parse().unwrap(),
            port: 123,
            version: 4,
        }
    }

    /// The responder (written against the RFC, tested against real
    /// clients' captures) accepts our requests and answers the nonce.
    #[test]
    fn ntpx_answers_template_requests() {
        for (dst, src) in [
            ("198.18.0.1", "198.19.3.4"),
            ("2001:db8::1", "2001:db8:1::9"),
        ] {
            let t = RequestTemplate::new(&target(dst));
            let mut buf = [0u8; 256];
            let nonce = NtpTimestamp::from_bits(0x1234_5678_9abc_def0);
            let n = t
                .write(&mut buf, src.parse().unwrap(), 40000, nonce, 7, None)
                .unwrap();
            assert_eq!(n, t.len());
            let cfg = Responder {
                policy: ReplyPolicy::default(),
                ..Responder::new(
                    [2, 0, 0, 0, 0, 1],
                    vec!["198.18.0.1".parse().unwrap()],
                    vec!["2001:db8::1".parse().unwrap()],
                )
            };
            let state = ServerState {
                leap: Leap::None,
                stratum: 1,
                ref_id: *b"TEST",
                ..ServerState::unsynchronized(-20)
            };
            let rx = NtpTimestamp::from_unix_nanos(1_700_000_000_000_000_000);
            let reply = respond(&mut buf[..n], &cfg, &state, rx, || rx, 0).unwrap();
            let ntp_at = reply.len - 48;
            assert_eq!(&buf[ntp_at + 24..ntp_at + 32], &nonce.to_bytes());
        }
    }

    #[test]
    fn payload_is_the_frames_ntp_part() {
        for dst in ["198.18.0.1", "2001:db8::1"] {
            let t = RequestTemplate::new(&target(dst));
            let src = if dst.contains(':') {
                "2001:db8::2"
            } else {
                "198.18.0.2"
            };
            let nonce = NtpTimestamp::from_bits(0x8123_4567_89ab_cdef);
            let mut frame = [0u8; 256];
            let n = t
                .write(&mut frame, src.parse().unwrap(), 4000, nonce, 1, None)
                .unwrap();
            let mut payload = [0u8; 64];
            assert_eq!(t.write_payload(&mut payload, nonce, None), Some(48));
            assert_eq!(&payload[..48], &frame[n - 48..n]);
            assert!(t.write_payload(&mut payload[..47], nonce, None).is_none());
            // Interleaved: origin and receive set, in both, alike.
            let x = Xleave {
                origin: NtpTimestamp::from_bits(0xe900_0000_0000_0011),
                receive: NtpTimestamp::from_bits(nonce.to_bits() ^ 1),
            };
            let n = t
                .write(&mut frame, src.parse().unwrap(), 4000, nonce, 1, Some(x))
                .unwrap();
            assert_eq!(t.write_payload(&mut payload, nonce, Some(x)), Some(48));
            assert_eq!(&payload[..48], &frame[n - 48..n]);
            assert_eq!(payload[24..32], x.origin.to_bytes());
            assert_eq!(payload[32..40], x.receive.to_bytes());
        }
    }

    #[test]
    fn wrong_family_or_short_buffer() {
        let t = RequestTemplate::new(&target("198.18.0.1"));
        let mut buf = [0u8; 256];
        let n = NtpTimestamp::from_bits(1);
        assert!(
            t.write(&mut buf, "2001:db8::2".parse().unwrap(), 1, n, 0, None)
                .is_none()
        );
        assert!(
            t.write(&mut buf[..40], "198.18.0.2".parse().unwrap(), 1, n, 0, None)
                .is_none()
        );
        assert_eq!(t.len(), 90);
        assert_eq!(
            RequestTemplate::new(&target("2001:db8::1")).len(),
            MAX_FRAME_LEN
        );
    }
}
