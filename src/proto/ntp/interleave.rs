//! Interleaved client/server mode (RFC 9769): the marks that let a server
//! recognise an interleaved request without remembering every client.
//!
//! In interleaved mode a client puts the server's receive timestamp (T2)
//! of the previous exchange in its request's origin field; the server
//! answers with the precise transmit time of its previous reply (known
//! only after that reply left) as T3, and the request's receive field as
//! the origin. Keeping (T2 → precise T3) for every reply would cost a
//! table write per packet. Instead every T2 we send carries a *mark* in
//! its bits below the precision: the lowest bit set, and above it a few
//! bits of a keyed hash of the rest of T2 and the client's address. Every
//! T3 has its lowest bit clear. A basic client echoes our T3 (lowest bit
//! clear): never a table access. A request whose origin carries a valid
//! mark for its source is an interleaved client echoing our T2: only then
//! is the table looked up, and only then is the precise transmit time of
//! the reply recorded. (chrony uses the lowest bit alone; the keyed bits
//! make a forged flag from a client that never saw our replies fail all
//! but one time in 2^(bits−1).)
//!
//! The XDP program computes the same mark (`xleave_mark()` in
//! `bpf/reply.h`) and sends marked requests to the workers, which hold the
//! table. Pure code: the key comes in from the caller.

#![forbid(unsafe_code)]

use super::timestamp::NtpTimestamp;
use std::net::IpAddr;

/// At most this many bits below the precision carry the mark.
pub const MAX_MARK_BITS: u8 = 8;

const MUL1: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL2: u64 = 0xbf58_476d_1ce4_e5b9;

/// The keyed mark in the low bits of our receive timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Key, chosen at random at start (shared with the XDP program).
    pub key: [u64; 2],
    /// Bits of the mark, 1..=[`MAX_MARK_BITS`]: the lowest is the flag, the
    /// rest the keyed hash.
    pub bits: u8,
}

impl Marker {
    /// A marker using the bits below `precision` (at least the lowest bit,
    /// at most [`MAX_MARK_BITS`]), so that the mark changes no timestamp by
    /// more than the precision the server advertises.
    pub fn new(key: [u64; 2], precision: i8) -> Marker {
        let below = (32 + i32::from(precision)).clamp(1, i32::from(MAX_MARK_BITS));
        Marker {
            key,
            bits: below as u8,
        }
    }

    fn mask(&self) -> u64 {
        (1u64 << self.bits.clamp(1, MAX_MARK_BITS)) - 1
    }

    /// The mark for a timestamp whose bits above the mark are `above` sent
    /// to `client` (see [`fold`]): flag bit set, keyed hash above it.
    fn value(&self, above: u64, client: u64) -> u64 {
        let mut x = (above ^ self.key[0]).wrapping_mul(MUL1);
        x ^= x >> 29;
        x = (x ^ client ^ self.key[1]).wrapping_mul(MUL2);
        x ^= x >> 32;
        ((x << 1) | 1) & self.mask()
    }

    /// `t2` with its low bits replaced by the mark for `client`.
    pub fn mark(&self, t2: NtpTimestamp, client: u64) -> NtpTimestamp {
        let bits = self.bits.clamp(1, MAX_MARK_BITS);
        let above = t2.to_bits() >> bits;
        NtpTimestamp::from_bits((above << bits) | self.value(above, client))
    }

    /// True if `ts` (a request's origin) carries our mark for `client`:
    /// it is one of our receive timestamps sent to that address.
    pub fn is_marked(&self, ts: NtpTimestamp, client: u64) -> bool {
        let bits = self.bits.clamp(1, MAX_MARK_BITS);
        let b = ts.to_bits();
        b & 1 == 1 && b & self.mask() == self.value(b >> bits, client)
    }
}

/// A transmit timestamp with its lowest bit cleared: never mistaken for a
/// marked receive timestamp.
pub fn unflag(t3: NtpTimestamp) -> NtpTimestamp {
    NtpTimestamp::from_bits(t3.to_bits() & !1)
}

/// A client's address folded to 64 bits (the XDP program folds alike):
/// IPv4 as its 32-bit value, IPv6 as the XOR of its two 64-bit halves.
pub fn fold(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let o = a.octets();
            let hi = u64::from_be_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]);
            let lo = u64::from_be_bytes([o[8], o[9], o[10], o[11], o[12], o[13], o[14], o[15]]);
            hi ^ lo
        }
    }
}

/// Where the precise transmit times of earlier replies are kept: the
/// server's table, or [`NoStore`].
pub trait TxStore {
    /// The precise transmit time of our reply that carried receive
    /// timestamp `t2` to `client`, if one was recorded; it is forgotten, so
    /// each is given out once.
    fn take(&mut self, t2: NtpTimestamp, client: u64) -> Option<NtpTimestamp>;
}

/// No store: every reply is basic (but T2 still carries the mark, so the
/// client's next request can find a path that has a store).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl TxStore for NoStore {
    fn take(&mut self, _: NtpTimestamp, _: u64) -> Option<NtpTimestamp> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_verify_only_for_their_client_and_timestamp() {
        let m = Marker::new([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210], -25);
        assert_eq!(m.bits, 7);
        let a = fold("192.0.2.7".parse().unwrap());
        let b = fold("192.0.2.8".parse().unwrap());
        let mut forged_a = 0;
        let mut forged_b = 0;
        for i in 0..10_000u64 {
            let t2 = NtpTimestamp::from_bits(0xe9a0_0000_0000_0000 + i * 0x1_2345_6789);
            let marked = m.mark(t2, a);
            // Changes nothing above the precision, sets the flag.
            assert_eq!(marked.to_bits() >> 7, t2.to_bits() >> 7);
            assert_eq!(marked.to_bits() & 1, 1);
            assert!(m.is_marked(marked, a));
            forged_b += usize::from(m.is_marked(marked, b));
            // A transmit timestamp is never marked.
            assert!(!m.is_marked(unflag(marked), a));
            // Any other low bits (with the flag) pass at the hash's rate.
            let other = NtpTimestamp::from_bits(marked.to_bits() ^ 0x2);
            forged_a += usize::from(m.is_marked(other, a));
        }
        assert_eq!(forged_a, 0, "one flipped bit of the mark always fails");
        // 6 keyed bits: 1 in 64 by chance, about 156 of 10,000.
        assert!((60..300).contains(&forged_b), "{forged_b}");
    }

    #[test]
    fn mark_bits_follow_the_precision() {
        assert_eq!(Marker::new([1, 2], -20).bits, MAX_MARK_BITS);
        assert_eq!(Marker::new([1, 2], -29).bits, 3);
        assert_eq!(Marker::new([1, 2], -32).bits, 1);
        // One bit: the flag alone (what chrony does).
        let m = Marker::new([1, 2], -32);
        let t = m.mark(NtpTimestamp::from_bits(0x1234_5678_9abc_def0), 5);
        assert_eq!(t.to_bits(), 0x1234_5678_9abc_def1);
        assert!(m.is_marked(t, 99));
    }

    #[test]
    fn folds_addresses_like_the_program() {
        assert_eq!(fold("1.2.3.4".parse().unwrap()), 0x0102_0304);
        assert_eq!(
            fold("2001:db8::1:0:0:5".parse().unwrap()),
            0x2001_0db8_0000_0000 ^ 0x0001_0000_0000_0005
        );
    }
}
