//! The Internet checksum (RFC 1071): one's complement sum of 16-bit words.

/// Adds `data` to a running 32-bit one's complement accumulator. Bytes are
/// taken as big-endian 16-bit words; an odd last byte is padded with zero.
/// Callers must only chain calls whose earlier pieces had even lengths.
pub fn accumulate(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Folding as we go keeps the accumulator below 2^17 however many
        // calls are chained, so it can never overflow.
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a running accumulator into the final 16-bit checksum (the one's
/// complement of the folded sum).
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone (e.g. an IPv4 header).
pub fn checksum(data: &[u8]) -> u16 {
    finish(accumulate(0, data))
}

/// True if `data`, which contains its own checksum field, verifies.
pub fn verifies(data: &[u8]) -> bool {
    checksum(data) == 0
}

/// Pseudo-header sum for UDP over IPv4 (RFC 768).
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], udp_len: u16) -> u32 {
    let acc = accumulate(0, &src);
    let acc = accumulate(acc, &dst);
    acc + 17 + u32::from(udp_len)
}

/// Pseudo-header sum for UDP over IPv6 (RFC 8200 §8.1).
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
