//! NTP time values: the 64-bit timestamp and the 32-bit short format.
//!
//! An [`NtpTimestamp`] is seconds since 1900-01-01 in the high 32 bits and a
//! binary fraction of a second in the low 32 bits (RFC 5905 §6). The seconds
//! field wraps every 2^32 s (136 years): era 0 ends on 2036-02-07 06:28:16
//! UTC, and a timestamp does not say its era. All arithmetic here therefore
//! wraps, and differences are read as signed 64-bit values, which is right
//! whenever the two timestamps are within 68 years of each other — the
//! rule RFC 5905 gives for comparing timestamps across an era boundary.

use std::fmt;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const UNIX_EPOCH_OFFSET: u64 = 2_208_988_800;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A 64-bit NTP timestamp (32.32 fixed point seconds, era-less).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    /// The all-zero timestamp, which NTP uses for "unknown".
    pub const ZERO: NtpTimestamp = NtpTimestamp(0);

    /// From the raw 64-bit value (seconds << 32 | fraction).
    pub const fn from_bits(bits: u64) -> Self {
        NtpTimestamp(bits)
    }

    /// The raw 64-bit value.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// From the 8 bytes on the wire (big endian).
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        NtpTimestamp(u64::from_be_bytes(bytes))
    }

    /// The 8 bytes on the wire (big endian).
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Seconds field (era-less).
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction field, in units of 2^-32 s.
    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// From nanoseconds since the Unix epoch. Any era: the seconds are taken
    /// modulo 2^32, which is what puts 2036-02-07 06:28:16 at seconds 0.
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        let secs = nanos / NANOS_PER_SEC + UNIX_EPOCH_OFFSET;
        let sub = nanos % NANOS_PER_SEC;
        // sub < 1e9 < 2^30, so sub << 32 fits in 62 bits; the quotient is
        // < 2^32 and rounds down (never reports a time later than read).
        let frac = (sub << 32) / NANOS_PER_SEC;
        NtpTimestamp((secs << 32) | frac)
    }

    /// Nanoseconds since the Unix epoch, taking the era from `pivot`: the
    /// answer is the one within 68 years of `pivot` (Unix nanoseconds).
    pub fn to_unix_nanos_near(self, pivot: u64) -> u64 {
        let pivot_ts = NtpTimestamp::from_unix_nanos(pivot);
        let diff = self.signed_nanos_since(pivot_ts);
        pivot.wrapping_add_signed(diff)
    }

    /// `self - earlier` as signed nanoseconds, era-wrap safe (see module docs).
    pub fn signed_nanos_since(self, earlier: NtpTimestamp) -> i64 {
        let d = self.0.wrapping_sub(earlier.0) as i64;
        // d is in 2^-32 s units; scale to ns in i128 to avoid overflow.
        ((d as i128 * NANOS_PER_SEC as i128) >> 32) as i64
    }

    /// Adds a signed number of 2^-32 s units, wrapping at the era boundary.
    pub const fn wrapping_add_units(self, units: i64) -> Self {
        NtpTimestamp(self.0.wrapping_add_signed(units))
    }

    /// True if `self` is later than `other` (era-wrap safe).
    pub const fn is_after(self, other: NtpTimestamp) -> bool {
        (self.0.wrapping_sub(other.0) as i64) > 0
    }
}

impl fmt::Debug for NtpTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NtpTimestamp({}.{:08x})",
            self.seconds(),
            self.fraction()
        )
    }
}

/// The 32-bit NTP short format (16.16 fixed point seconds): root delay and
/// root dispersion.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct NtpShort(u32);

impl NtpShort {
    /// Zero seconds.
    pub const ZERO: NtpShort = NtpShort(0);

    /// From the raw value.
    pub const fn from_bits(bits: u32) -> Self {
        NtpShort(bits)
    }

    /// The raw value.
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// From nanoseconds, rounded up (a dispersion is a bound: never
    /// understate it) and saturating at the largest value (65536 s).
    pub const fn from_nanos_ceil(nanos: u64) -> Self {
        let units = ((nanos as u128) << 16).div_ceil(NANOS_PER_SEC as u128);
        if units > u32::MAX as u128 {
            NtpShort(u32::MAX)
        } else {
            NtpShort(units as u32)
        }
    }

    /// As nanoseconds.
    pub const fn to_nanos(self) -> u64 {
        ((self.0 as u64) * NANOS_PER_SEC) >> 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_epoch_maps_to_ntp_seconds() {
        let ts = NtpTimestamp::from_unix_nanos(0);
        assert_eq!(ts.seconds() as u64, UNIX_EPOCH_OFFSET);
        assert_eq!(ts.fraction(), 0);
    }

    #[test]
    fn fraction_of_half_a_second() {
        let ts = NtpTimestamp::from_unix_nanos(500_000_000);
        assert_eq!(ts.fraction(), 0x8000_0000);
    }

    #[test]
    fn fraction_never_rounds_up_to_next_second() {
        let ts = NtpTimestamp::from_unix_nanos(999_999_999);
        assert_eq!(ts.seconds() as u64, UNIX_EPOCH_OFFSET);
        assert!(ts.fraction() > 0xffff_ff00);
    }

    #[test]
    fn era_wraps_in_2036() {
        // 2036-02-07 06:28:16 UTC = 2085978496 Unix seconds = NTP 2^32.
        let wrap = 2_085_978_496u64 * NANOS_PER_SEC;
        let before = NtpTimestamp::from_unix_nanos(wrap - 1);
        let at = NtpTimestamp::from_unix_nanos(wrap);
        assert_eq!(before.seconds(), u32::MAX);
        assert_eq!(at.seconds(), 0);
        assert_eq!(at.fraction(), 0);
        assert!(at.is_after(before));
        assert!(!before.is_after(at));
        assert_eq!(at.signed_nanos_since(before), 1); // 1 ns apart
        let second_later = NtpTimestamp::from_unix_nanos(wrap + NANOS_PER_SEC);
        assert_eq!(second_later.signed_nanos_since(before), 1_000_000_001);
        assert_eq!(before.signed_nanos_since(second_later), -1_000_000_002);
    }

    #[test]
    fn unix_nanos_round_trip_across_eras() {
        for unix_s in [
            0u64,
            1_700_000_000,
            2_085_978_495,
            2_085_978_496,
            4_000_000_000,
        ] {
            let nanos = unix_s * NANOS_PER_SEC + 123_456_789;
            let ts = NtpTimestamp::from_unix_nanos(nanos);
            let back = ts.to_unix_nanos_near(nanos + 10 * NANOS_PER_SEC);
            assert!(back.abs_diff(nanos) <= 1, "{unix_s}: {back} vs {nanos}");
        }
    }

    #[test]
    fn bytes_are_big_endian() {
        let ts = NtpTimestamp::from_bits(0x0102_0304_0506_0708);
        assert_eq!(ts.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(NtpTimestamp::from_bytes(ts.to_bytes()), ts);
    }

    #[test]
    fn short_format() {
        assert_eq!(
            NtpShort::from_nanos_ceil(1_000_000_000).to_bits(),
            0x0001_0000
        );
        assert_eq!(NtpShort::from_nanos_ceil(1).to_bits(), 1); // rounds up
        assert_eq!(NtpShort::from_nanos_ceil(u64::MAX).to_bits(), u32::MAX);
        assert_eq!(NtpShort::from_bits(0x0000_8000).to_nanos(), 500_000_000);
    }
}
