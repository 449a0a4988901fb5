//! The metadata the XDP program writes in front of each redirected frame
//! (`struct ntpx_meta` in `bpf/ntpx.h`): its software receive stamp and,
//! later, the NIC's hardware stamp.

#![forbid(unsafe_code)]

/// Size of `struct ntpx_meta`.
pub const META_LEN: usize = 24;
/// `NTPX_META_MAGIC`.
pub const META_MAGIC: u32 = 0x4e54_5058;

/// `NTPX_META_KOD_RATE`: answer with a Kiss-o'-Death RATE.
pub const META_KOD_RATE: u32 = 1;
/// `NTPX_META_KOD_DENY`: answer with a Kiss-o'-Death DENY.
pub const META_KOD_DENY: u32 = 2;

/// A parsed `struct ntpx_meta` (host byte order, like the program wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// `bpf_ktime_get_tai_ns()` when the program ran.
    pub rx_sw_tai_ns: u64,
    /// The NIC's hardware receive stamp, mapped by the program from the
    /// NIC's clock to `CLOCK_TAI` (`sys::clock::phc::PhcMap`); 0 = none.
    pub rx_hw_ns: u64,
    /// The program's policy verdict: [`META_KOD_RATE`], [`META_KOD_DENY`],
    /// or 0 (answer).
    pub flags: u32,
}

impl Meta {
    /// Parses the [`META_LEN`] bytes in front of a frame; `None` unless
    /// the magic is there.
    pub fn parse(b: &[u8]) -> Option<Meta> {
        let b: &[u8; META_LEN] = b.get(..META_LEN)?.try_into().ok()?;
        let u64_at = |i: usize| {
            u64::from_ne_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (u32_at(20) == META_MAGIC).then(|| Meta {
            rx_sw_tai_ns: u64_at(0),
            rx_hw_ns: u64_at(8),
            flags: u32_at(16),
        })
    }

    /// Clears the magic so the bytes no longer parse.
    pub fn clear(b: &mut [u8]) {
        if let Some(m) = b.get_mut(20..24) {
            m.fill(0);
        }
    }

    /// Serialises (for tests and fakes).
    pub fn to_bytes(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(&self.rx_sw_tai_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.rx_hw_ns.to_ne_bytes());
        b[16..20].copy_from_slice(&self.flags.to_ne_bytes());
        b[20..24].copy_from_slice(&META_MAGIC.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear() {
        let m = Meta {
            rx_sw_tai_ns: 1_700_000_037_123_456_789,
            rx_hw_ns: 0,
            flags: 0,
        };
        let mut b = m.to_bytes();
        assert_eq!(Meta::parse(&b), Some(m));
        Meta::clear(&mut b);
        assert_eq!(Meta::parse(&b), None);
        assert_eq!(Meta::parse(&b[..10]), None);
    }
}
