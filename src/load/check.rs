//! Reply validation: everything a careful NTP client checks before it
//! believes a reply, on the raw frame.
//!
//! [`parse_reply`] checks the headers and checksums, that the reply comes
//! from the server we asked, and the NTP header (mode 4, our version,
//! stratum, leap, T2 ≤ T3). Whether the origin echoes an outstanding
//! request's nonce is the tracker's job (`track`): a reply can be
//! well-formed and still answer nothing we sent.
//!
//! Pure code: no I/O, no clocks, no `unsafe`, no panics on any input.

#![forbid(unsafe_code)]

use crate::proto::ntp::{Leap, Mode, NtpTimestamp, Packet};
use crate::proto::wire::checksum;
use crate::proto::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use crate::proto::wire::ip::{Ipv4, Ipv6, PROTO_UDP};
use crate::proto::wire::udp::{self, ChecksumState, Udp};
use std::net::IpAddr;

macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident = $label:literal,)+) => {
        /// Why a received frame is not a valid reply.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Invalid {
            $($(#[doc = $doc])* $name,)+
        }

        impl Invalid {
            /// Every reason, in counter order.
            pub const ALL: &'static [Invalid] = &[$(Invalid::$name),+];

            /// Short snake_case name for counters and JSON.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Invalid::$name => $label,)+
                }
            }
        }
    };
}

reasons! {
    /// Headers cut short, an IPv4 fragment, not UDP, or a length field
    /// that disagrees with the frame.
    Malformed = "malformed",
    /// IPv4 header checksum wrong.
    IpChecksum = "ip_checksum",
    /// UDP checksum wrong (or missing over IPv6).
    UdpChecksum = "udp_checksum",
    /// Not from the server's address and port, or not to ours.
    WrongAddress = "wrong_address",
    /// UDP payload shorter than the NTP header.
    Short = "short",
    /// Mode is not 4 (server).
    Mode = "mode",
    /// Version differs from the request's.
    Version = "version",
    /// Leap 3 (unsynchronised) or stratum 16 and up.
    Unsynchronized = "unsynchronized",
    /// Receive or transmit timestamp is zero, or transmit before receive.
    Timestamps = "timestamps",
    /// The origin matches no outstanding request (corrupted, duplicated,
    /// or answering a request long given up).
    UnknownOrigin = "unknown_origin",
}

/// Number of [`Invalid`] reasons.
pub const INVALID_COUNT: usize = Invalid::ALL.len();

/// What the generator expects of every reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The server's address.
    pub server: IpAddr,
    /// The server's port.
    pub port: u16,
    /// The version the requests carry.
    pub version: u8,
    /// Accept a UDP checksum left partial by the server's stack (see
    /// [`Udp::checksum_is_partial`]): only on a veth, like the server.
    pub accept_partial_checksum: bool,
    /// The "server" is a reflector (`ntpx sink --reflect`): the answer to
    /// a request is the request itself, sent back with addresses and ports
    /// swapped (mode 3, our version, the nonce still in the transmit
    /// field), carrying no server times. See [`check_echo`].
    pub echo: bool,
    /// Interleaved mode: an interleaved reply's T3 is the previous reply's
    /// transmit time and precedes its T2, so the order is not checked
    /// here (the engine checks it on basic replies).
    pub xleave: bool,
}

/// A reply that passed every header check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyInfo {
    /// Our address it was sent to.
    pub client: IpAddr,
    /// Our port it was sent to.
    pub client_port: u16,
    /// Origin timestamp: must be one of our nonces (for a reflected
    /// request, its transmit timestamp; the server times are then zero).
    pub origin: NtpTimestamp,
    /// T2, the server's receive time.
    pub receive: NtpTimestamp,
    /// T3, the server's transmit time.
    pub transmit: NtpTimestamp,
    /// Stratum (0 = Kiss-o'-Death).
    pub stratum: u8,
    /// The Kiss-o'-Death code (ASCII reference ID) when stratum is 0.
    pub kiss_code: Option<[u8; 4]>,
    /// Its UDP checksum was in the partial form (accepted, counted apart).
    pub partial_checksum: bool,
}

/// A frame that is not a valid reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub reason: Invalid,
    /// Its origin timestamp, when the frame got as far as the NTP header
    /// (the request it answers can then be closed as answered-invalid).
    pub origin: Option<NtpTimestamp>,
}

impl From<Invalid> for Rejected {
    fn from(reason: Invalid) -> Self {
        Rejected {
            reason,
            origin: None,
        }
    }
}

/// Judges a received frame; see the module docs.
pub fn parse_reply(frame: &[u8], expect: &Expect) -> Result<ReplyInfo, Rejected> {
    parse_headers(frame, expect)
        .map_err(Rejected::from)
        .and_then(|(client, client_port, payload, partial_checksum)| {
            let p = Packet::new_checked(payload).ok_or(Invalid::Short)?;
            if expect.echo {
                let nonce = check_echo(&p, expect).map_err(Rejected::from)?;
                return Ok(ReplyInfo {
                    client,
                    client_port,
                    origin: nonce,
                    receive: NtpTimestamp::ZERO,
                    transmit: NtpTimestamp::ZERO,
                    stratum: 0,
                    kiss_code: None,
                    partial_checksum,
                });
            }
            let (receive, transmit, stratum, kiss_code) =
                check_ntp(&p, expect).map_err(|reason| Rejected {
                    reason,
                    origin: Some(p.origin()),
                })?;
            Ok(ReplyInfo {
                client,
                client_port,
                origin: p.origin(),
                receive,
                transmit,
                stratum,
                kiss_code,
                partial_checksum,
            })
        })
}

/// Checks Ethernet / IP / UDP; returns our address and port, the UDP
/// payload, and whether the checksum was in the partial form.
fn parse_headers<'a>(
    frame: &'a [u8],
    expect: &Expect,
) -> Result<(IpAddr, u16, &'a [u8], bool), Invalid> {
    let eth = Frame::new_checked(frame).map_err(|_| Invalid::Malformed)?;
    let l3 = eth.l3().map_err(|_| Invalid::Malformed)?;
    let ip_bytes = &frame[l3.offset..];
    let (src, dst, datagram, pseudo) = match l3.ethertype {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4::new_checked(ip_bytes).map_err(|_| Invalid::Malformed)?;
            let hl = ip.header_len();
            let total = usize::from(ip.total_len());
            if ip.version() != 4
                || hl < 20
                || total < hl
                || total > ip_bytes.len()
                || ip.is_fragment()
                || ip.protocol() != PROTO_UDP
            {
                return Err(Invalid::Malformed);
            }
            if !ip.checksum_ok() {
                return Err(Invalid::IpChecksum);
            }
            let datagram = &ip_bytes[hl..total];
            let len = u16::try_from(datagram.len()).map_err(|_| Invalid::Malformed)?;
            let pseudo = checksum::pseudo_v4(ip.src_bytes(), ip.dst_bytes(), len);
            (IpAddr::V4(ip.src()), IpAddr::V4(ip.dst()), datagram, pseudo)
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6::new_checked(ip_bytes).map_err(|_| Invalid::Malformed)?;
            let end = 40 + usize::from(ip.payload_len());
            if ip.version() != 6 || ip.next_header() != PROTO_UDP || end > ip_bytes.len() {
                return Err(Invalid::Malformed);
            }
            let datagram = &ip_bytes[40..end];
            let len = u16::try_from(datagram.len()).map_err(|_| Invalid::Malformed)?;
            let pseudo = checksum::pseudo_v6(ip.src_bytes(), ip.dst_bytes(), len);
            (IpAddr::V6(ip.src()), IpAddr::V6(ip.dst()), datagram, pseudo)
        }
        _ => return Err(Invalid::Malformed),
    };
    let u = Udp::new_checked(datagram).map_err(|_| Invalid::Malformed)?;
    // The UDP length must cover exactly what the IP header says it
    // carries (the pseudo-header sum above used that length).
    if usize::from(u.len_field()) != datagram.len() || datagram.len() < udp::HEADER_LEN {
        return Err(Invalid::Malformed);
    }
    // IPv4 allows "no checksum" (0); IPv6 does not.
    let partial = match u.checksum_state(pseudo, expect.accept_partial_checksum) {
        ChecksumState::Absent if src.is_ipv4() => false,
        ChecksumState::Full => false,
        ChecksumState::Partial => true,
        ChecksumState::Absent | ChecksumState::Wrong => return Err(Invalid::UdpChecksum),
    };
    if src != expect.server || u.src_port() != expect.port || dst.is_ipv4() != src.is_ipv4() {
        return Err(Invalid::WrongAddress);
    }
    Ok((dst, u.dst_port(), &datagram[udp::HEADER_LEN..], partial))
}

/// A reflected request ([`Expect::echo`]): mode 3 and our version; returns
/// the nonce it carries in its transmit field (the tracker matches it like
/// a reply's origin).
pub fn check_echo(p: &Packet<&[u8]>, expect: &Expect) -> Result<NtpTimestamp, Invalid> {
    if p.mode() != Mode::Client {
        return Err(Invalid::Mode);
    }
    if p.version() != expect.version {
        return Err(Invalid::Version);
    }
    Ok(p.transmit())
}

/// T2, T3, stratum and the Kiss-o'-Death code of a reply that passed.
pub type NtpFields = (NtpTimestamp, NtpTimestamp, u8, Option<[u8; 4]>);

/// The NTP header checks alone (for datagrams from kernel sockets).
pub fn check_ntp(p: &Packet<&[u8]>, expect: &Expect) -> Result<NtpFields, Invalid> {
    if p.mode() != Mode::Server {
        return Err(Invalid::Mode);
    }
    if p.version() != expect.version {
        return Err(Invalid::Version);
    }
    let stratum = p.stratum();
    if stratum == 0 {
        // Kiss-o'-Death (RFC 5905 §7.4): the timestamps mean nothing.
        return Ok((p.receive(), p.transmit(), 0, Some(p.ref_id())));
    }
    if p.leap() == Leap::Unsynchronized || stratum >= 16 {
        return Err(Invalid::Unsynchronized);
    }
    let (t2, t3) = (p.receive(), p.transmit());
    if t2 == NtpTimestamp::ZERO || t3 == NtpTimestamp::ZERO || (!expect.xleave && t2.is_after(t3)) {
        return Err(Invalid::Timestamps);
    }
    Ok((t2, t3, stratum, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ntp::{NtpShort, ServerState};
    use crate::proto::request::{RequestTemplate, Target};
    use crate::proto::respond::{Responder, respond};

    const SERVER: &str = "198.18.0.1";
    const NONCE: NtpTimestamp = NtpTimestamp::from_bits(0xdead_beef_0000_0042);

    fn expect(server: &str) -> Expect {
        Expect {
            server: server.parse().unwrap(),
            port: 123,
            version: 4,
            accept_partial_checksum: false,
            echo: false,
            xleave: false,
        }
    }

    /// A real reply from ntpx's responder to a generated request.
    fn reply(server: &str, client: &str) -> Vec<u8> {
        let t = RequestTemplate::new(&Target {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            addr: server.parse().unwrap(),
            port: 123,
            version: 4,
        });
        let mut buf = vec![0u8; 128];
        let n = t
            .write(&mut buf, client.parse().unwrap(), 40000, NONCE, 1, None)
            .unwrap();
        let cfg = Responder::new(
            [2, 0, 0, 0, 0, 1],
            vec![SERVER.parse().unwrap()],
            vec!["2001:db8::1".parse().unwrap()],
        );
        let state = ServerState {
            leap: Leap::None,
            stratum: 1,
            ref_id: *b"TEST",
            root_delay: NtpShort::ZERO,
            ..ServerState::unsynchronized(-20)
        };
        let t2 = NtpTimestamp::from_unix_nanos(1_800_000_000_000_000_000);
        let r = respond(
            &mut buf[..n],
            &cfg,
            &state,
            t2,
            || t2.wrapping_add_units(100),
            0,
        )
        .unwrap();
        buf.truncate(r.len);
        buf
    }

    fn ntp_at(frame: &[u8]) -> usize {
        frame.len() - 48
    }

    #[test]
    fn good_replies_v4_v6() {
        for (server, client) in [(SERVER, "198.19.0.7"), ("2001:db8::1", "2001:db8:1::7")] {
            let r = parse_reply(&reply(server, client), &expect(server)).unwrap();
            assert_eq!(r.origin, NONCE);
            assert_eq!(r.client, client.parse::<IpAddr>().unwrap());
            assert_eq!(r.client_port, 40000);
            assert_eq!(r.stratum, 1);
            assert_eq!(r.kiss_code, None);
            assert!(r.transmit.is_after(r.receive));
        }
    }

    #[test]
    fn partial_checksums_only_on_a_veth() {
        // The reply as a server's stack with checksum offload hands it to
        // a veth: the field holds the folded pseudo-header sum.
        let mut r = reply(SERVER, "198.19.0.7");
        let pseudo = checksum::pseudo_v4([198, 18, 0, 1], [198, 19, 0, 7], 56);
        r[40..42].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
        assert_eq!(
            parse_reply(&r, &expect(SERVER)),
            Err(Invalid::UdpChecksum.into())
        );
        let veth = Expect {
            accept_partial_checksum: true,
            echo: false,
            ..expect(SERVER)
        };
        let got = parse_reply(&r, &veth).unwrap();
        assert!(got.partial_checksum);
        assert!(
            !parse_reply(&reply(SERVER, "198.19.0.7"), &veth)
                .unwrap()
                .partial_checksum
        );
        // Neither full nor partial: refused even there.
        r[41] ^= 1;
        assert_eq!(parse_reply(&r, &veth), Err(Invalid::UdpChecksum.into()));
    }

    /// Rewrites the NTP header with `f` and fixes the UDP checksum, so the
    /// NTP check (not the checksum) is what fails.
    fn edited(f: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut r = reply(SERVER, "198.19.0.7");
        let at = ntp_at(&r);
        f(&mut r[at..]);
        let pseudo = checksum::pseudo_v4([198, 18, 0, 1], [198, 19, 0, 7], 56);
        Udp::new_checked(&mut r[34..])
            .unwrap()
            .fill_checksum(pseudo);
        r
    }

    #[test]
    fn each_check_fires() {
        let e = expect(SERVER);
        let mut r = reply(SERVER, "198.19.0.7");
        r[24] ^= 1; // IPv4 header byte (TTL)
        assert_eq!(parse_reply(&r, &e), Err(Invalid::IpChecksum.into()));
        let mut r = reply(SERVER, "198.19.0.7");
        let at = ntp_at(&r);
        r[at + 30] ^= 1; // origin, checksum not fixed
        assert_eq!(parse_reply(&r, &e), Err(Invalid::UdpChecksum.into()));
        assert_eq!(
            parse_reply(&reply(SERVER, "198.19.0.7"), &expect("198.18.0.9")),
            Err(Invalid::WrongAddress.into())
        );
        type Edit = fn(&mut [u8]);
        let cases: [(Edit, Invalid); 6] = [
            (|n| n[0] = (n[0] & !7) | 3, Invalid::Mode),
            (|n| n[0] = (n[0] & !0x38) | (3 << 3), Invalid::Version),
            (|n| n[0] |= 0xc0, Invalid::Unsynchronized),
            (|n| n[1] = 16, Invalid::Unsynchronized),
            (|n| n[32..40].fill(0), Invalid::Timestamps),
            (|n| n[40..48].fill(0), Invalid::Timestamps),
        ];
        for (f, want) in cases {
            let got = parse_reply(&edited(f), &e).unwrap_err();
            // The header was fine, so the request it answers is known.
            assert_eq!(
                got,
                Rejected {
                    reason: want,
                    origin: Some(NONCE)
                }
            );
        }
        // T3 before T2.
        let r = edited(|n| {
            let (t2, t3) = (n[32..40].to_vec(), n[40..48].to_vec());
            n[32..40].copy_from_slice(&t3);
            n[40..48].copy_from_slice(&t2);
        });
        assert_eq!(parse_reply(&r, &e).unwrap_err().reason, Invalid::Timestamps);
    }

    #[test]
    fn kiss_of_death() {
        let r = edited(|n| {
            n[1] = 0;
            n[12..16].copy_from_slice(b"RATE");
        });
        let info = parse_reply(&r, &expect(SERVER)).unwrap();
        assert_eq!((info.stratum, info.kiss_code), (0, Some(*b"RATE")));
    }

    #[test]
    fn never_panics_on_prefixes_and_flips() {
        let r = reply("2001:db8::1", "2001:db8:1::7");
        let e = expect("2001:db8::1");
        for n in 0..r.len() {
            assert!(parse_reply(&r[..n], &e).is_err());
        }
        for bit in 0..r.len() * 8 {
            let mut f = r.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            // Any outcome but a panic.
            let _ = parse_reply(&f, &e);
        }
        let labels: Vec<_> = Invalid::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), INVALID_COUNT);
        assert!(labels.contains(&"unknown_origin"));
    }
}
