//! The properties that both `tests/properties.rs` (arbtest, under `cargo
//! test`) and the cargo-fuzz targets in `fuzz/` check: each takes its
//! input from an [`Unstructured`] (or raw bytes) and panics when a property
//! fails. Included with `#[path]` by the fuzz targets, so it uses only
//! `ntpx`, `arbitrary` and `etherparse`.

#![allow(dead_code)]

use arbitrary::Unstructured;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use ntpx::proto::ntp::interleave::fold;
use ntpx::proto::ntp::{
    KissCode, Leap, Marker, NtpShort, NtpTimestamp, Packet, ServerState, TxStore, parse_request,
};
use ntpx::proto::respond::{Reply, Responder, respond, respond_kiss, respond_with};
use std::net::IpAddr;

pub const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SRV4: [u8; 4] = [198, 18, 0, 1];
const SRV6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

pub fn responder(u: &mut Unstructured<'_>) -> arbitrary::Result<Responder> {
    let mut r = Responder::new(SRV_MAC, vec![SRV4.into()], vec![SRV6.into()]);
    r.accept_partial_checksum = u.arbitrary()?;
    r.drop_loop_ports = u.arbitrary()?;
    if u.arbitrary()? {
        r.interleave = Some(Marker::new(u.arbitrary()?, u.int_in_range(-32..=-10)?));
    }
    Ok(r)
}

pub fn state(u: &mut Unstructured<'_>) -> arbitrary::Result<ServerState> {
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
pub fn frame(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
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
pub struct Arb(pub Option<NtpTimestamp>);
impl TxStore for Arb {
    fn take(&mut self, _: NtpTimestamp, _: u64) -> Option<NtpTimestamp> {
        self.0.take()
    }
}

/// The reply builder on a frame built by [`frame`]: see [`check_reply`].
/// Returns whether the frame was answered.
pub fn reply(u: &mut Unstructured<'_>) -> arbitrary::Result<bool> {
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
        return Ok(false);
    };
    check_reply(&cfg, &req, &buf[..r.len], &r, false);
    Ok(true)
}

/// The reply builder on raw bytes taken as a frame, with a fixed server
/// (the fuzz corpus holds frames captured from real clients).
pub fn raw_frame(data: &[u8]) -> bool {
    let cfg = Responder::new(SRV_MAC, vec![SRV4.into()], vec![SRV6.into()]);
    let st = fixed_state();
    let mut buf = data.to_vec();
    let t2 = NtpTimestamp::from_bits(0xe9b0_0000_0000_0001);
    let t3 = NtpTimestamp::from_bits(0xe9b0_0000_0100_0000);
    match respond(&mut buf, &cfg, &st, t2, || t3, 0x1234_5678_9abc_def0) {
        Ok(r) => {
            check_reply(&cfg, data, &buf[..r.len], &r, false);
            true
        }
        Err(_) => false,
    }
}

/// A Kiss-o'-Death for a frame built by [`frame`]: answered exactly when
/// the time would be by a synchronised server (the same checks), no longer than the request, well
/// formed, and no time given away: origin, receive and transmit are all the
/// request's transmit timestamp, stratum 0, LI 3, the code as reference ID.
pub fn kiss(u: &mut Unstructured<'_>) -> arbitrary::Result<bool> {
    let mut cfg = responder(u)?;
    // A KoD gives no time: it is sent unsynchronised too, even where the
    // time would not be (`on_unsync = "drop"`).
    cfg.policy.drop_unsynchronized = u.arbitrary()?;
    let mut time_cfg = cfg.clone();
    time_cfg.policy.drop_unsynchronized = false;
    let st = state(u)?;
    let req = frame(u)?;
    let code = if u.arbitrary()? {
        KissCode::RATE
    } else {
        KissCode::DENY
    };
    let mut time = req.clone();
    let answered = respond(
        &mut time,
        &time_cfg,
        &st,
        NtpTimestamp::from_bits(5),
        || NtpTimestamp::from_bits(9),
        0,
    )
    .is_ok();
    let mut buf = req.clone();
    let Ok(r) = respond_kiss(&mut buf, &cfg, &st, code) else {
        assert!(!answered, "the time is given where a KoD is refused");
        return Ok(false);
    };
    assert!(answered, "a KoD where the time is refused");
    let q = SlicedPacket::from_ethernet(&req).expect("an answered request parses");
    let Some(TransportSlice::Udp(qudp)) = q.transport else {
        unreachable!()
    };
    let xmt = &qudp.payload()[40..48];
    check_reply(&cfg, &req, &buf[..r.len], &r, true);
    let n = &buf[r.len - 48..r.len];
    assert_eq!(n[0] >> 6, 3, "LI 3");
    assert_eq!(n[0] & 7, 4, "mode 4");
    assert_eq!(n[1], 0, "stratum 0");
    assert_eq!(&n[12..16], &code.0, "the code");
    assert_eq!(&n[24..32], xmt);
    assert_eq!(&n[32..40], xmt);
    assert_eq!(&n[40..48], xmt);
    assert_eq!(&n[16..24], &[0; 8], "no reference time");
    Ok(true)
}

fn fixed_state() -> ServerState {
    ServerState {
        leap: Leap::None,
        stratum: 2,
        precision: -20,
        root_delay: NtpShort::from_bits(0x10),
        root_dispersion: NtpShort::from_bits(0x20),
        ref_id: [192, 0, 2, 1],
        ref_time: NtpTimestamp::from_bits(0xe9af_0000_0000_0000),
    }
}

/// What every reply `out` to `req` must be: no longer than its request, a
/// well-formed frame with valid checksums, addressed back to the client,
/// its NTP origin the request's transmit timestamp (or, interleaved, its
/// receive timestamp) bit for bit, nothing of the request beyond what it
/// echoes. A KoD (`kiss`) carries no time: its timestamps are not
/// checked here.
pub fn check_reply(cfg: &Responder, req: &[u8], out: &[u8], r: &Reply, kiss: bool) {
    assert!(
        out.len() <= req.len(),
        "reply {} > request {}",
        out.len(),
        req.len()
    );
    assert!(
        r.len <= req.len(),
        "reply {} > request {}",
        r.len,
        req.len()
    );
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
    let q = SlicedPacket::from_ethernet(req).expect("an answered request parses");
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
    assert_eq!(n.version(), (qn[0] >> 3) & 7);
    if kiss {
        // A KoD's timestamps are all the request's transmit timestamp.
        return;
    }
    assert_eq!(n.transmit().to_bits() & 1, 0, "T3's flag bit is clear");
    assert!(r.record.is_none() || cfg.interleave.is_some());
    if let Some(m) = cfg.interleave {
        assert!(m.is_marked(n.receive(), fold(qsrc)), "T2 is marked");
    }
}

/// The NTP parser: accepts only client requests, and reads their fields
/// where they are.
pub fn parser(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
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
}
