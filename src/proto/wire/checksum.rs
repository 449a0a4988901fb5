//! The Internet checksum (RFC 1071): one's complement sum of 16-bit words.

/// Adds `data` to a running one's complement accumulator. Bytes are taken
/// as big-endian 16-bit words; an odd last byte is padded with zero.
/// Callers must only chain calls whose earlier pieces had even lengths.
///
/// Sums 32-bit words into a 64-bit register and folds once at the end:
/// one's complement addition does not care about the word size, and the
/// independent adds run several times faster than folding after every
/// 16-bit word. The result is folded below 2^17, so chaining never
/// overflows.
#[inline]
pub fn accumulate(acc: u32, data: &[u8]) -> u32 {
    let mut sum = u64::from(acc);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    match *words.remainder() {
        [a] => sum += u64::from(a) << 8,
        [a, b] => sum += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => sum += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => {}
    }
    // 64 → 32 → 17 bits.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u32
}

/// Folds a running accumulator into the final 16-bit checksum (the one's
/// complement of the folded sum).
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone (e.g. an IPv4 header).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// True if `data`, which contains its own checksum field, verifies.
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    checksum(data) == 0
}

/// Pseudo-header sum for UDP over IPv4 (RFC 768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], udp_len: u16) -> u32 {
    let acc = accumulate(0, &src);
    let acc = accumulate(acc, &dst);
    acc + 17 + u32::from(udp_len)
}

/// Pseudo-header sum for UDP over IPv6 (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], udp_len: u16) -> u32 {
    let acc = accumulate(0, &src);
    let acc = accumulate(acc, &dst);
    acc + 17 + u32::from(udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(accumulate(0, &data)), !0xddf2);
    }

    /// The definition, word by word, as RFC 1071 states it.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn matches_the_word_by_word_definition() {
        let mut x = 0x9e37_79b9u32;
        for len in 0..300 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert_eq!(checksum(&data), reference(&data), "len {len}");
            // Chained over an even split, as the UDP code does.
            let cut = (len / 2) & !1;
            assert_eq!(
                finish(accumulate(accumulate(0, &data[..cut]), &data[cut..])),
                reference(&data),
                "len {len}"
            );
        }
        assert_eq!(checksum(&[0xff; 4096]), reference(&[0xff; 4096]));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), checksum(&[0x12, 0x00]));
    }

    #[test]
    fn data_with_its_checksum_verifies() {
        let mut data = [
            0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(&data));
        data[3] ^= 1;
        assert!(!verifies(&data));
    }
}
