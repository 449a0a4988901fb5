//! The server's decision: which requests get a reply, and the reply itself.
//!
//! [`parse_request`] judges a UDP payload; [`write_reply`] writes the 48
//! reply bytes, setting every field once under the rule that defines it
//! (RFC 5905 §9.2, and what a public server must and must never do: the
//! README's "What ntpx drops, and why"). Neither can panic on any
//! input: lengths are checked before any access.

use super::interleave::{Marker, unflag};
use super::packet::{HEADER_LEN, Leap, Mode, Packet};
use super::timestamp::{NtpShort, NtpTimestamp};

/// What the server says about its own clock; refreshed by the control
/// thread, read by the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// Leap indicator; [`Leap::Unsynchronized`] makes every reply LI 3,
    /// stratum 0.
    pub leap: Leap,
    /// Stratum when synchronised (1–15).
    pub stratum: u8,
    /// log2 of the clock-read precision in seconds.
    pub precision: i8,
    /// Round-trip delay to the primary reference.
    pub root_delay: NtpShort,
    /// Error bound relative to the primary reference.
    pub root_dispersion: NtpShort,
    /// Reference ID: four ASCII characters at stratum 1, else the upstream
    /// address (or hash).
    pub ref_id: [u8; 4],
    /// When the clock was last set or corrected.
    pub ref_time: NtpTimestamp,
}

/// How fast the root dispersion grows between updates: 15 ppm (RFC 5905's
/// PHI), as parts per million.
pub const DISPERSION_PPM: u64 = 15;

impl ServerState {
    /// This state `age_ns` after it was computed: the root dispersion grown
    /// at [`DISPERSION_PPM`]; past `max_age_ns` the state no longer vouches
    /// for the time and replies say LI 3 (stratum 0), whatever it said.
    /// The XDP program does the same sums (`write_reply()` in
    /// `bpf/reply.h`), so both paths age alike.
    pub fn aged(mut self, age_ns: u64, max_age_ns: u64) -> ServerState {
        if age_ns > max_age_ns {
            self.leap = Leap::Unsynchronized;
            return self;
        }
        // Bounded so that the products cannot overflow (about 6.7 days).
        let age = age_ns.min(1 << 49);
        let grown = age * DISPERSION_PPM / 1_000_000 * 65_536 / 1_000_000_000;
        let disp = u64::from(self.root_dispersion.to_bits()) + grown;
        self.root_dispersion = NtpShort::from_bits(u32::try_from(disp).unwrap_or(u32::MAX));
        self
    }

    /// The state of a server that has no time to give: LI 3, stratum 0.
    pub const fn unsynchronized(precision: i8) -> Self {
        ServerState {
            leap: Leap::Unsynchronized,
            stratum: 0,
            precision,
            root_delay: NtpShort::ZERO,
            root_dispersion: NtpShort::ZERO,
            ref_id: [0; 4],
            ref_time: NtpTimestamp::ZERO,
        }
    }
}

/// Reply policy knobs that do not come from the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyPolicy {
    /// Replies carry `max(request poll, min_poll)`: a way to ask clients to
    /// slow down. `i8::MIN` echoes the request's poll.
    pub min_poll: i8,
    /// While the server's state says unsynchronised, send no reply at all
    /// (`on_unsync = "drop"`) instead of one with LI 3 (`"flag"`).
    pub drop_unsynchronized: bool,
}

impl Default for ReplyPolicy {
    fn default() -> Self {
        ReplyPolicy {
            min_poll: i8::MIN,
            drop_unsynchronized: false,
        }
    }
}

/// Why a UDP payload gets no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than the 48-byte header.
    TooShort,
    /// Length not a multiple of 4.
    BadLength,
    /// Version 0 or above 4.
    Version,
    /// Not a client request (mode ≠ 3).
    Mode,
    /// Carries a legacy MAC (key id + digest): we have no keys.
    Mac,
    /// Carries an NTS extension field: NTS is not served.
    Nts,
    /// Trailing bytes that are neither extension fields nor a MAC.
    BadExtension,
}

/// The parts of a request that the reply needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request's version (1–4), echoed in the reply.
    pub version: u8,
    /// The request's poll exponent.
    pub poll: i8,
    /// The request's transmit timestamp: opaque (clients may send random
    /// bits), echoed bit for bit as the reply's origin.
    pub transmit: NtpTimestamp,
    /// The request's origin timestamp: zero from a basic client's first
    /// request, else our last T3 (basic) or T2 (interleaved, RFC 9769).
    pub origin: NtpTimestamp,
    /// The request's receive timestamp: in interleaved mode, when the
    /// client received our previous reply (echoed as the origin).
    pub receive: NtpTimestamp,
}

impl Request {
    /// True if the request may be interleaved: NTPv4 (as chrony requires),
    /// and receive ≠ transmit (a basic client that copies one into the
    /// other is not asking for it).
    pub fn may_be_interleaved(&self) -> bool {
        self.version == 4 && self.receive != self.transmit
    }
}

/// How [`write_reply_with`] stamps a reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamping {
    /// Mark T2 for this client (the marker and the client's
    /// [`fold`](super::interleave::fold)): interleaved mode is on.
    pub mark: Option<(Marker, u64)>,
    /// The precise transmit time of our previous reply to this client:
    /// answer in interleaved mode (T3 = this, origin = the request's
    /// receive timestamp) instead of reading the clock.
    pub previous_tx: Option<NtpTimestamp>,
    /// Answer with this Kiss-o'-Death instead of the time (the policy's
    /// verdict): everything else is ignored.
    pub kiss: Option<KissCode>,
}

/// A Kiss-o'-Death code (RFC 5905 §7.4): the four ASCII bytes of the
/// reference ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KissCode(pub [u8; 4]);

impl KissCode {
    /// "RATE": the client asks too often.
    pub const RATE: KissCode = KissCode(*b"RATE");
    /// "DENY": the server refuses this client.
    pub const DENY: KissCode = KissCode(*b"DENY");
}

/// Writes a Kiss-o'-Death: LI 3, the request's version, mode 4, stratum 0,
/// the request's poll, precision 0, no root delay or dispersion, the code
/// as the reference ID, no reference time, and no time given away: origin,
/// receive and transmit all the request's transmit timestamp. 48 bytes.
/// `write_kod()` in `bpf/policy.h` writes the same.
fn write_kiss(p: &mut Packet<&mut [u8]>, req: &Request, code: KissCode) -> NtpTimestamp {
    p.set_li_vn_mode(Leap::Unsynchronized, req.version, Mode::Server);
    p.set_stratum(0);
    p.set_poll(req.poll);
    p.set_precision(0);
    p.set_root_delay(NtpShort::ZERO);
    p.set_root_dispersion(NtpShort::ZERO);
    p.set_ref_id(code.0);
    p.set_ref_time(NtpTimestamp::ZERO);
    p.set_origin(req.transmit);
    p.set_receive(req.transmit);
    p.set_transmit(req.transmit);
    req.transmit
}

/// NTS extension field types (RFC 8915 §5.7).
const NTS_FIELD_TYPES: [u16; 4] = [0x0104, 0x0204, 0x0304, 0x0404];
/// Legacy MAC lengths: 4-byte key id + MD5 (16) or SHA-1 (20) digest.
const MAC_LENGTHS: [usize; 2] = [20, 24];
/// RFC 7822: an extension field is at least 16 bytes...
const EF_MIN_LEN: usize = 16;
/// ...and the last one, when no MAC follows, at least 28.
const EF_LAST_MIN_LEN: usize = 28;

/// Judges a UDP payload: `Ok` for a client request that gets a reply.
pub fn parse_request(payload: &[u8]) -> Result<Request, Reject> {
    let Some(packet) = Packet::new_checked(payload) else {
        return Err(Reject::TooShort);
    };
    if !payload.len().is_multiple_of(4) {
        return Err(Reject::BadLength);
    }
    let version = packet.version();
    if !(1..=4).contains(&version) {
        return Err(Reject::Version);
    }
    if packet.mode() != Mode::Client {
        return Err(Reject::Mode);
    }
    check_trailer(&payload[HEADER_LEN..], version)?;
    Ok(Request {
        version,
        poll: packet.poll(),
        transmit: packet.transmit(),
        origin: packet.origin(),
        receive: packet.receive(),
    })
}

/// Walks what follows the header: RFC 7822 extension fields (NTPv4 only),
/// optionally ending in a legacy MAC. Extension fields are ignored (never
/// echoed); a MAC or an NTS field means no reply.
fn check_trailer(mut rest: &[u8], version: u8) -> Result<(), Reject> {
    loop {
        if rest.is_empty() {
            return Ok(());
        }
        if MAC_LENGTHS.contains(&rest.len()) {
            return Err(Reject::Mac);
        }
        if version < 4 || rest.len() < EF_MIN_LEN {
            return Err(Reject::BadExtension);
        }
        let field_type = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < EF_MIN_LEN || !len.is_multiple_of(4) || len > rest.len() {
            return Err(Reject::BadExtension);
        }
        if len == rest.len() && len < EF_LAST_MIN_LEN {
            return Err(Reject::BadExtension);
        }
        if NTS_FIELD_TYPES.contains(&field_type) {
            return Err(Reject::Nts);
        }
        rest = &rest[len..];
    }
}

/// Random bits below the advertised precision (chrony does the same), so
/// that the low bits of our timestamps cannot be predicted.
fn fuzz(ts: NtpTimestamp, precision: i8, noise: u32) -> NtpTimestamp {
    let bits = (32 + i32::from(precision)).clamp(0, 32) as u32;
    let mask = if bits == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << bits) - 1
    };
    NtpTimestamp::from_bits((ts.to_bits() & !mask) | (u64::from(noise) & mask))
}

/// Writes the basic-mode reply to `req` into `out[..48]` (`out` may be
/// the request's own buffer: everything needed from the request is in
/// `req`).
///
/// `rx` is when the request arrived (T2). `now` is called last, after
/// every other field is written, to read the transmit time (T3) as late
/// as possible. `noise` supplies random bits for the low-order bits below
/// the precision. Returns the transmit timestamp written, or `None` (and
/// writes nothing) if `out` is shorter than 48 bytes.
pub fn write_reply(
    out: &mut [u8],
    req: &Request,
    state: &ServerState,
    policy: &ReplyPolicy,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
) -> Option<NtpTimestamp> {
    write_reply_with(out, req, state, policy, rx, now, noise, Stamping::default()).map(|(_, t3)| t3)
}

/// [`write_reply`], with T2 marked for interleaved mode and, given the
/// precise transmit time of our previous reply, an interleaved reply
/// (`now` is then not called). Every T3 has its lowest bit clear. Returns
/// the receive and transmit timestamps written (T2, T3).
#[allow(clippy::too_many_arguments)]
pub fn write_reply_with(
    out: &mut [u8],
    req: &Request,
    state: &ServerState,
    policy: &ReplyPolicy,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    stamping: Stamping,
) -> Option<(NtpTimestamp, NtpTimestamp)> {
    let mut p = Packet::new_checked(out)?;
    if let Some(code) = stamping.kiss {
        let t = write_kiss(&mut p, req, code);
        return Some((t, t));
    }
    let synced = state.leap != Leap::Unsynchronized;
    // LI: the server's leap state, 3 when not synchronised. VN: copied
    // from the request. Mode: 4 (server).
    p.set_li_vn_mode(state.leap, req.version, Mode::Server);
    // Stratum: 0 ("unspecified or invalid") when not synchronised.
    p.set_stratum(if synced { state.stratum } else { 0 });
    // Poll: the request's, raised to our minimum interval if configured.
    p.set_poll(req.poll.max(policy.min_poll));
    p.set_precision(state.precision);
    p.set_root_delay(state.root_delay);
    p.set_root_dispersion(state.root_dispersion);
    p.set_ref_id(state.ref_id);
    // Origin (T1): the request's transmit timestamp, all 64 bits; in
    // interleaved mode its receive timestamp (when the client received
    // our previous reply, whose transmit time this reply carries).
    let origin = match stamping.previous_tx {
        Some(_) => req.receive,
        None => req.transmit,
    };
    p.set_origin(origin);
    // Receive (T2): when the request arrived; its bits below the precision
    // random, or our mark in interleaved mode.
    let mut t2 = fuzz(rx, state.precision, noise as u32);
    if let Some((marker, client)) = stamping.mark {
        t2 = marker.mark(t2, client);
    }
    p.set_receive(t2);
    // Transmit (T3): read last, or our previous reply's. It must differ
    // from T1 and T2 (a client takes an echo of either as a bogus or
    // replayed packet); a basic T3 must not precede T2. Its lowest bit is
    // clear: an echo of it is never taken for a marked T2.
    let mut t3 = match stamping.previous_tx {
        Some(prev) => unflag(fuzz(prev, state.precision, (noise >> 32) as u32)),
        None => {
            let t = unflag(fuzz(now(), state.precision, (noise >> 32) as u32));
            if t.is_after(t2) {
                t
            } else {
                unflag(t2.wrapping_add_units(2))
            }
        }
    };
    if t3 == origin || t3 == t2 {
        t3 = t3.wrapping_add_units(2);
    }
    // Reference time: never later than the transmit time.
    let ref_time = if state.ref_time.is_after(t3) {
        t3
    } else {
        state.ref_time
    };
    p.set_ref_time(ref_time);
    p.set_transmit(t3);
    Some((t2, t3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(first: u8, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        if len > 0 {
            b[0] = first;
        }
        if len >= 48 {
            b[2] = 6;
            b[40..48].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        }
        b
    }

    fn synced() -> ServerState {
        ServerState {
            leap: Leap::None,
            stratum: 1,
            precision: -24,
            root_delay: NtpShort::from_bits(0),
            root_dispersion: NtpShort::from_bits(0x10),
            ref_id: *b"GPS\0",
            ref_time: NtpTimestamp::from_bits(0xe000_0000_0000_0000),
        }
    }

    #[test]
    fn aging_grows_dispersion_then_gives_up() {
        let s = synced();
        assert_eq!(s.aged(0, 10_000_000_000), s);
        // Just under one unit (2^-16 s = 15.26 µs) after ~1 s at 15 ppm.
        assert_eq!(s.aged(1_000_000_000, 10_000_000_000), s);
        let after_100s = s.aged(100_000_000_000, 1_000_000_000_000);
        // 100 s × 15 ppm = 1.5 ms = 98.3 units.
        assert_eq!(after_100s.root_dispersion.to_bits(), 0x10 + 98);
        assert_eq!(after_100s.leap, Leap::None);
        let stale = s.aged(11_000_000_000, 10_000_000_000);
        assert_eq!(stale.leap, Leap::Unsynchronized);
        assert_eq!(stale.root_dispersion, s.root_dispersion);
    }

    #[test]
    fn first_byte_all_256_values() {
        for b in 0..=255u8 {
            let r = parse_request(&request(b, 48));
            let version = (b >> 3) & 7;
            let mode = b & 7;
            let expected = if !(1..=4).contains(&version) {
                Err(Reject::Version)
            } else if mode != 3 {
                Err(Reject::Mode)
            } else {
                Ok(())
            };
            assert_eq!(r.map(|_| ()), expected, "first byte {b:#04x}");
            if let Ok(req) = r {
                assert_eq!(req.version, version);
            }
        }
    }

    #[test]
    fn every_length_0_to_100() {
        for len in 0..=100 {
            let r = parse_request(&request(0x23, len));
            let expected = match len {
                0..48 => Err(Reject::TooShort),
                _ if len % 4 != 0 => Err(Reject::BadLength),
                48 => Ok(()),
                // 68/72: a 20/24-byte MAC.
                68 | 72 => Err(Reject::Mac),
                // Zeros after the header: a "field" of type 0, length 0.
                _ => Err(Reject::BadExtension),
            };
            assert_eq!(r.map(|_| ()), expected, "length {len}");
        }
    }

    fn with_field(base: &[u8], ftype: u16, len: usize) -> Vec<u8> {
        let mut b = base.to_vec();
        b.extend_from_slice(&ftype.to_be_bytes());
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend(std::iter::repeat_n(0xab, len - 4));
        b
    }

    #[test]
    fn extension_fields() {
        let base = request(0x23, 48);
        // A 28-byte unknown field is fine (chrony answers it with 48 bytes).
        assert!(parse_request(&with_field(&base, 0x2005, 28)).is_ok());
        // A 16-byte field alone is too short to be the last one.
        assert_eq!(
            parse_request(&with_field(&base, 0x2005, 16)),
            Err(Reject::BadExtension)
        );
        // ...but fine when another follows.
        let two = with_field(&with_field(&base, 0x2005, 16), 0x2006, 28);
        assert!(parse_request(&two).is_ok());
        // A field followed by a MAC: no reply.
        let mut mac = with_field(&base, 0x2005, 28);
        mac.extend_from_slice(&[0; 20]);
        assert_eq!(parse_request(&mac), Err(Reject::Mac));
        // NTS unique identifier: no reply.
        assert_eq!(
            parse_request(&with_field(&base, 0x0104, 36)),
            Err(Reject::Nts)
        );
        // A length running past the end.
        let mut bad = with_field(&base, 0x2005, 28);
        bad[50..52].copy_from_slice(&64u16.to_be_bytes());
        assert_eq!(parse_request(&bad), Err(Reject::BadExtension));
        // A length not a multiple of 4.
        let mut bad = with_field(&base, 0x2005, 32);
        bad[50..52].copy_from_slice(&30u16.to_be_bytes());
        assert_eq!(parse_request(&bad), Err(Reject::BadExtension));
        // NTPv3 has no extension fields.
        let v3 = request(0x1b, 48);
        assert_eq!(
            parse_request(&with_field(&v3, 0x2005, 28)),
            Err(Reject::BadExtension)
        );
        let mut v3mac = v3.clone();
        v3mac.extend_from_slice(&[0; 24]);
        assert_eq!(parse_request(&v3mac), Err(Reject::Mac));
    }

    #[test]
    fn reply_fields() {
        let mut buf = request(0x23, 48);
        let req = parse_request(&buf).unwrap();
        let rx = NtpTimestamp::from_bits(0xe100_0000_1234_5600);
        let tx = NtpTimestamp::from_bits(0xe100_0000_1234_9900);
        let t3 = write_reply(
            &mut buf,
            &req,
            &synced(),
            &ReplyPolicy::default(),
            rx,
            || tx,
            0,
        )
        .unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.leap(), Leap::None);
        assert_eq!(p.version(), 4);
        assert_eq!(p.mode(), Mode::Server);
        assert_eq!(p.stratum(), 1);
        assert_eq!(p.poll(), 6);
        assert_eq!(p.precision(), -24);
        assert_eq!(p.root_dispersion().to_bits(), 0x10);
        assert_eq!(p.ref_id(), *b"GPS\0");
        assert_eq!(p.origin().to_bytes(), [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        // Low 8 bits (below 2^-24 s) replaced by noise (0 here).
        assert_eq!(p.receive().to_bits(), 0xe100_0000_1234_5600);
        assert_eq!(p.transmit(), t3);
        assert_eq!(t3.to_bits(), 0xe100_0000_1234_9900);
        assert_eq!(p.ref_time().to_bits(), 0xe000_0000_0000_0000);
    }

    #[test]
    fn unsynchronized_reply_is_flagged() {
        let mut buf = request(0x1b, 48); // NTPv3
        let req = parse_request(&buf).unwrap();
        let state = ServerState {
            leap: Leap::Unsynchronized,
            ..synced()
        };
        let rx = NtpTimestamp::from_bits(1 << 40);
        write_reply(
            &mut buf,
            &req,
            &state,
            &ReplyPolicy::default(),
            rx,
            || rx,
            0,
        )
        .unwrap();
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.leap(), Leap::Unsynchronized);
        assert_eq!(p.stratum(), 0);
        assert_eq!(p.version(), 3);
    }

    #[test]
    fn transmit_never_equals_origin_or_receive() {
        let mut buf = request(0x23, 48);
        let req = parse_request(&buf).unwrap();
        let state = ServerState {
            precision: -32,
            ..synced()
        };
        // Clock reads the same as T2 and as the client's T1.
        let same = req.transmit;
        let t3 = write_reply(
            &mut buf,
            &req,
            &state,
            &ReplyPolicy::default(),
            same,
            || same,
            0,
        )
        .unwrap();
        assert_ne!(t3, req.transmit);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_ne!(p.transmit(), p.receive());
        assert_ne!(p.transmit(), p.origin());
        assert!(p.transmit().is_after(p.receive()));
        // A clock that went backwards still gives T3 after T2.
        let back = NtpTimestamp::from_bits(same.to_bits() - 1000);
        let t3 = write_reply(
            &mut buf,
            &req,
            &state,
            &ReplyPolicy::default(),
            same,
            || back,
            0,
        )
        .unwrap();
        assert!(t3.is_after(same));
    }

    #[test]
    fn ref_time_never_after_transmit() {
        let mut buf = request(0x23, 48);
        let req = parse_request(&buf).unwrap();
        let state = ServerState {
            ref_time: NtpTimestamp::from_bits(u64::MAX >> 1),
            ..synced()
        };
        let now = NtpTimestamp::from_bits(0x1000_0000_0000_0000);
        let t3 = write_reply(
            &mut buf,
            &req,
            &state,
            &ReplyPolicy::default(),
            now,
            || now,
            0,
        )
        .unwrap();
        assert_eq!(Packet::new_checked(&buf[..]).unwrap().ref_time(), t3);
    }

    #[test]
    fn low_bits_are_fuzzed_below_precision_only() {
        let ts = NtpTimestamp::from_bits(0x1111_2222_3333_4444);
        assert_eq!(fuzz(ts, -24, 0xffff_ffff).to_bits(), 0x1111_2222_3333_44ff);
        assert_eq!(fuzz(ts, -20, 0).to_bits(), 0x1111_2222_3333_4000);
        assert_eq!(fuzz(ts, -40, 0xffff_ffff), ts);
        assert_eq!(fuzz(ts, 5, 0).to_bits(), 0x1111_2222_0000_0000);
    }

    #[test]
    fn min_poll_raises_poll() {
        let mut buf = request(0x23, 48);
        let req = parse_request(&buf).unwrap();
        let policy = ReplyPolicy {
            min_poll: 8,
            ..ReplyPolicy::default()
        };
        let t = NtpTimestamp::from_bits(1 << 40);
        write_reply(&mut buf, &req, &synced(), &policy, t, || t, 0).unwrap();
        assert_eq!(Packet::new_checked(&buf[..]).unwrap().poll(), 8);
    }

    #[test]
    fn short_output_buffer_is_refused() {
        let req = parse_request(&request(0x23, 48)).unwrap();
        let t = NtpTimestamp::ZERO;
        let mut small = [0u8; 47];
        assert!(
            write_reply(
                &mut small,
                &req,
                &synced(),
                &ReplyPolicy::default(),
                t,
                || t,
                0
            )
            .is_none()
        );
        assert_eq!(small, [0; 47]);
    }
}
