//! Property tests (arbtest, on stable Rust, under `cargo test`): the
//! reply builder, the NTP parser, the interleaved-mode mark and table, and
//! the clock conversions, on arbitrary input. Each property runs for
//! arbtest's time budget with a fresh seed; a failure prints the seed that
//! reproduces it (`arbtest(..).seed(0x…)`).
//!
//! For the reply builder, the frames are built from arbitrary headers
//! around a request (so that most of them get through the checks and
//! reach the reply), then have arbitrary bytes overwritten or appended:
//! whatever the input, `respond_with` must not panic, and a reply must be
//! no longer than its request, a well-formed frame with valid checksums,
//! addressed back to the client, whose NTP origin is the request's
//! transmit timestamp (or, interleaved, its receive timestamp) bit for bit,
//! and which carries nothing of the request beyond what it echoes.

use arbitrary::Unstructured;
use arbtest::arbtest;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use ntpx::proto::ntp::interleave::{fold, unflag};
use ntpx::proto::ntp::{
    Leap, Marker, NtpShort, NtpTimestamp, Packet, ServerState, TxStore, parse_request,
};
use ntpx::proto::respond::{Responder, respond_with};
use ntpx::server::interleave::XleaveTable;
use ntpx::sys::clock::TaiScale;
use ntpx::sys::clock::phc::PhcMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SRV4: [u8; 4] = [198, 18, 0, 1];
const SRV6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn responder(u: &mut Unstructured<'_>) -> arbitrary::Result<Responder> {
    let mut r = Responder::new(SRV_MAC, vec![SRV4.into()], vec![SRV6.into()]);
    r.accept_partial_checksum = u.arbitrary()?;
    r.drop_loop_ports = u.arbitrary()?;
    if u.arbitrary()? {
        r.interleave = Some(Marker::new(u.arbitrary()?, u.int_in_range(-32..=-10)?));
    }
    Ok(r)
}

fn state(u: &mut Unstructured<'_>) -> arbitrary::Result<ServerState> {
    Ok(ServerState {
        leap: [Leap::None, Leap::Insert, Leap::Delete, Leap::Unsynchronized][u.choose_index(4)?],
        stratum: u.int_in_range(1..=15)?,
        precision: u.int_in_range(-32..=-10)?,
        root_delay: NtpShort::from_bits(u.arbitrary()?),
        root_dispersion: NtpShort::from_bits(u.arbitrary()?),
        ref_id: u.arbitrary()?,
        ref_time: NtpTimestamp::from_bits(u.arbitrary()?),
    })
}

/// A request frame to the server from an arbitrary client, with arbitrary
/// NTP bytes (a plausible first byte most of the time), then perhaps
/// damaged or extended.
fn frame(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    let mut ntp: Vec<u8> = (0..48).map(|_| u.arbitrary()).collect::<Result<_, _>>()?;
    if u.ratio(3, 4)? {
        ntp[0] = (u.int_in_range(0..=3)? << 6) | (u.int_in_range(1..=4)? << 3) | 3;
    }
    // Extension fields or junk behind the header, now and then.
    for _ in 0..if u.ratio(1, 4)? {
        u.int_in_range(1..=2)?
    } else {
        0
    } {
        ntp.extend(std::iter::repeat_n(
            u.arbitrary::<u8>()?,
            4 * u.int_in_range(1..=8)?,
        ));
    }
    let mut src_mac: [u8; 6] = u.arbitrary()?;
    if u.ratio(7, 8)? {
        // A station's address, most of the time.
        src_mac[0] = (src_mac[0] & 0xfe) | 0x02;
    }
    let sport: u16 = u.arbitrary()?;
    let b = PacketBuilder::ethernet2(src_mac, SRV_MAC);
    let mut f = Vec::new();
    if u.arbitrary()? {
        b.ipv4(u.arbitrary::<[u8; 4]>()?, SRV4, u.arbitrary()?)
            .udp(sport, 123)
            .write(&mut f, &ntp)
            .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    } else {
        b.ipv6(u.arbitrary::<[u8; 16]>()?, SRV6, u.arbitrary()?)
            .udp(sport, 123)
            .write(&mut f, &ntp)
            .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    }
    // Damage: overwrite a few bytes, cut, or append.
    for _ in 0..u.int_in_range(0..=3)? {
        if u.ratio(1, 3)? && !f.is_empty() {
            let i = u.choose_index(f.len())?;
            f[i] = u.arbitrary()?;
        }
    }
    if u.ratio(1, 10)? {
        let n = u.int_in_range(0..=f.len())?;
        f.truncate(n);
    }
    if u.ratio(1, 10)? {
        for _ in 0..u.int_in_range(1..=32)? {
            f.push(u.arbitrary()?);
        }
    }
    Ok(f)
}

/// A store that answers some interleaved requests with an arbitrary
/// transmit time.
struct Arb(Option<NtpTimestamp>);
impl TxStore for Arb {
    fn take(&mut self, _: NtpTimestamp, _: u64) -> Option<NtpTimestamp> {
        self.0.take()
    }
}

#[test]
fn replies_are_well_formed_never_longer_and_echo_the_origin() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static TRIED: AtomicUsize = AtomicUsize::new(0);
    static ANSWERED: AtomicUsize = AtomicUsize::new(0);
    arbtest(|u| {
        TRIED.fetch_add(1, Relaxed);
        let cfg = responder(u)?;
        let st = state(u)?;
        let req = frame(u)?;
        let mut buf = req.clone();
        let (t2, t3) = (
            NtpTimestamp::from_bits(u.arbitrary()?),
            NtpTimestamp::from_bits(u.arbitrary()?),
        );
        let mut store = Arb(if u.arbitrary()? {
            Some(NtpTimestamp::from_bits(u.arbitrary()?))
        } else {
            None
        });
        let Ok(r) = respond_with(&mut buf, &cfg, &st, t2, || t3, u.arbitrary()?, &mut store) else {
            return Ok(());
        };
        ANSWERED.fetch_add(1, Relaxed);
        assert!(
            r.len <= req.len(),
            "reply {} > request {}",
            r.len,
            req.len()
        );
        let out = &buf[..r.len];
        let p = SlicedPacket::from_ethernet(out).expect("the reply parses");
        let (udp, src, dst) = match (p.net, p.transport) {
            (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                assert_eq!(h.options.len(), 0, "no IPv4 options in a reply");
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv4(&h, udp.payload())
                    .unwrap();
                assert_eq!(udp.checksum(), sum, "UDP checksum");
                (udp, IpAddr::from(h.source), IpAddr::from(h.destination))
            }
            (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(udp))) => {
                let h = ip.header().to_header();
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv6(&h, udp.payload())
                    .unwrap();
                assert_eq!(udp.checksum(), sum, "UDP checksum");
                (udp, IpAddr::from(h.source), IpAddr::from(h.destination))
            }
            other => panic!("not UDP over IP: {other:?}"),
        };
        // Nothing behind the 48 bytes of NTP: no extension field, no
        // padding, no byte of the request beyond what is echoed.
        assert_eq!(udp.payload().len(), 48);
        assert_eq!(udp.length(), 56);
        assert_eq!(udp.source_port(), 123);
        let q = SlicedPacket::from_ethernet(&req).expect("an answered request parses");
        let (qsrc, qdst) = match q.net {
            Some(NetSlice::Ipv4(ip)) => (
                IpAddr::from(ip.header().source_addr()),
                IpAddr::from(ip.header().destination_addr()),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                IpAddr::from(ip.header().source_addr()),
                IpAddr::from(ip.header().destination_addr()),
            ),
            _ => unreachable!(),
        };
        let Some(TransportSlice::Udp(qudp)) = q.transport else {
            unreachable!()
        };
        assert_eq!((src, dst), (qdst, qsrc), "addresses swapped");
        assert_eq!(udp.destination_port(), qudp.source_port());
        let qn = &qudp.payload()[..48];
        let n = Packet::new_checked(udp.payload()).unwrap();
        let origin = if r.interleaved {
            &qn[32..40]
        } else {
            &qn[40..48]
        };
        assert_eq!(n.origin().to_bytes(), origin, "origin echoed bit for bit");
        assert_eq!(n.transmit().to_bits() & 1, 0, "T3's flag bit is clear");
        assert_eq!(n.version(), (qn[0] >> 3) & 7);
        assert!(r.record.is_none() || cfg.interleave.is_some());
        if let Some(m) = cfg.interleave {
            assert!(m.is_marked(n.receive(), fold(qsrc)), "T2 is marked");
        }
        Ok(())
    })
    .budget_ms(1000)
    .run();
    // The frames reach the reply often enough to mean something.
    let (tried, answered) = (TRIED.load(Relaxed), ANSWERED.load(Relaxed));
    println!("{answered} of {tried} frames answered");
    // About a quarter get through; a tenth is far below any chance dip.
    assert!(answered * 10 >= tried, "{answered} of {tried}");
}

#[test]
fn the_ntp_parser_accepts_only_client_requests() {
    arbtest(|u| {
        let len = u.int_in_range(0..=200)?;
        let mut b: Vec<u8> = (0..len).map(|_| u.arbitrary()).collect::<Result<_, _>>()?;
        if u.arbitrary()? && !b.is_empty() {
            b[0] = (b[0] & 0xc0) | (u.int_in_range(1..=4)? << 3) | 3;
        }
        if let Ok(r) = parse_request(&b) {
            assert!(b.len() >= 48 && b.len().is_multiple_of(4));
            assert!((1..=4).contains(&r.version) && b[0] & 7 == 3);
            assert_eq!(r.transmit.to_bytes(), b[40..48]);
            assert_eq!(r.origin.to_bytes(), b[24..32]);
            assert_eq!(r.receive.to_bytes(), b[32..40]);
        }
        Ok(())
    });
}

#[test]
fn marks_verify_for_their_client_and_t3_never_looks_marked() {
    arbtest(|u| {
        let m = Marker::new(u.arbitrary()?, u.int_in_range(-32..=-10)?);
        let t = NtpTimestamp::from_bits(u.arbitrary()?);
        let a = fold(IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)));
        let b = fold(IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?)));
        let marked = m.mark(t, a);
        assert!(m.is_marked(marked, a));
        assert_eq!(marked.to_bits() >> m.bits, t.to_bits() >> m.bits);
        assert!(!m.is_marked(unflag(marked), a));
        assert!(!m.is_marked(unflag(t), b));
        Ok(())
    });
}

/// The table against a model of the replies it was told of: whatever the
/// sequence of records (colliding slots, T2s reused, several replies to
/// one address), stamps (of any recorded reply, late or not) and takes, a
/// take returns only the transmit time stamped for a reply that carried
/// that very T2 to that very client, and each at most once. Replies to one
/// address with one T2 cannot be told apart by the protocol itself (the
/// client echoes only the T2): among those, any may be the one.
#[test]
fn the_table_never_hands_out_a_stamp_it_was_not_given_for_that_client() {
    arbtest(|u| {
        let t = XleaveTable::new(u.int_in_range(1..=8)?);
        // Reply n: (T2, client); its own transmit field is n + 1, and the
        // stamp given for it is (n + 1) << 8.
        let mut replies: Vec<(u64, u64)> = Vec::new();
        let mut handed: std::collections::HashSet<u64> = Default::default();
        for _ in 0..u.int_in_range(0..=64)? {
            match u.int_in_range(0..=2)? {
                0 => {
                    let t2 = u.int_in_range(1..=6u64)? << 1 | 1;
                    let client = u.int_in_range(0..=2u64)?;
                    let n = replies.len() as u64;
                    t.record(
                        NtpTimestamp::from_bits(t2),
                        client,
                        NtpTimestamp::from_bits(n + 1),
                    );
                    replies.push((t2, client));
                }
                1 if !replies.is_empty() => {
                    let n = u.choose_index(replies.len())?;
                    let t2 = replies[n].0;
                    t.stamp(
                        NtpTimestamp::from_bits(t2),
                        NtpTimestamp::from_bits(n as u64 + 1),
                        NtpTimestamp::from_bits((n as u64 + 1) << 8),
                    );
                }
                _ => {
                    let t2 = u.int_in_range(1..=6u64)? << 1 | 1;
                    let client = u.int_in_range(0..=2u64)?;
                    if let Some(tx) = t.take(NtpTimestamp::from_bits(t2), client) {
                        let n = (tx.to_bits() >> 8) as usize;
                        assert!(n >= 1 && n <= replies.len(), "a stamp never given: {tx:?}");
                        assert_eq!(replies[n - 1], (t2, client), "another reply's stamp");
                        assert!(handed.insert(tx.to_bits()), "given twice");
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn clock_conversions_never_panic() {
    arbtest(|u| {
        let m = PhcMap {
            phc_ref_ns: u.arbitrary()?,
            tai_ref_ns: u.arbitrary()?,
            rate_q32: u.arbitrary()?,
        };
        let _ = m.to_tai(u.arbitrary()?);
        let _ = m.to_tai(
            m.phc_ref_ns
                .wrapping_add(u.int_in_range(0..=8_000_000_000u64)?),
        );
        let leap =
            [Leap::None, Leap::Insert, Leap::Delete, Leap::Unsynchronized][u.choose_index(4)?];
        // Edge values as often as arbitrary ones.
        let off = if u.arbitrary()? {
            [i32::MIN, i32::MAX, 0, -1][u.choose_index(4)?]
        } else {
            u.arbitrary()?
        };
        let now = if u.arbitrary()? {
            [0, u64::MAX][u.choose_index(2)?]
        } else {
            u.arbitrary()?
        };
        let s = TaiScale::for_leap(leap, off, now, u.arbitrary()?);
        let _ = s.to_unix_nanos(u.arbitrary()?);
        let _ = s.leap_over_tai_ns();
        Ok(())
    });
}
