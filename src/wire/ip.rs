//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers.

use super::{Truncated, be16, checksum, set_be16};
use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol / next-header number of UDP.
pub const PROTO_UDP: u8 = 17;

/// IPv4 header view.
#[derive(Debug, Clone)]
pub struct Ipv4<T: AsRef<[u8]>> {
    buffer: T,
}

mod v4 {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// Length of an IPv4 header without options.
pub const IPV4_MIN_LEN: usize = 20;
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

impl<T: AsRef<[u8]>> Ipv4<T> {
    /// Wraps a buffer holding at least the fixed 20-byte header and the
    /// options its IHL announces. The version and IHL are not judged here.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let b = buffer.as_ref();
        if b.len() < IPV4_MIN_LEN || b.len() < usize::from(b[v4::VER_IHL] & 0x0f) * 4 {
            return Err(Truncated);
        }
        Ok(Ipv4 { buffer })
    }

    /// IP version field (4 for a valid header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[v4::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[v4::VER_IHL] & 0x0f) * 4
    }

    /// Total length field: header plus payload.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), v4::TOTAL_LEN)
    }

    /// True if this datagram is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        let f = be16(self.buffer.as_ref(), v4::FLAGS_FRAG);
        f & FLAG_MF != 0 || f & FRAG_OFFSET_MASK != 0
    }

    /// Protocol field.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[v4::PROTOCOL]
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[v4::TTL]
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// Source address bytes.
    pub fn src_bytes(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[v4::SRC], b[v4::SRC + 1], b[v4::SRC + 2], b[v4::SRC + 3]]
    }

    /// Destination address bytes.
    pub fn dst_bytes(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[v4::DST], b[v4::DST + 1], b[v4::DST + 2], b[v4::DST + 3]]
    }

    /// True if the header checksum verifies (over IHL × 4 bytes).
    pub fn checksum_ok(&self) -> bool {
        checksum::verifies(&self.buffer.as_ref()[..self.header_len()])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    /// Writes a fresh 20-byte reply header: version 4, IHL 5, TOS 0, the
    /// given total length, ID 0 (RFC 6864 allows any ID on atomic
    /// datagrams), DF, no fragment offset, `ttl`, UDP, the given addresses
    /// and a correct header checksum.
    pub fn emit_reply_header(&mut self, total_len: u16, ttl: u8, src: [u8; 4], dst: [u8; 4]) {
        let b = self.buffer.as_mut();
        b[v4::VER_IHL] = 0x45;
        b[v4::TOS] = 0;
        set_be16(b, v4::TOTAL_LEN, total_len);
        set_be16(b, v4::IDENT, 0);
        set_be16(b, v4::FLAGS_FRAG, FLAG_DF);
        b[v4::TTL] = ttl;
        b[v4::PROTOCOL] = PROTO_UDP;
        set_be16(b, v4::CHECKSUM, 0);
        b[v4::SRC..v4::SRC + 4].copy_from_slice(&src);
        b[v4::DST..v4::DST + 4].copy_from_slice(&dst);
        let c = checksum::checksum(&b[..IPV4_MIN_LEN]);
        set_be16(b, v4::CHECKSUM, c);
    }
}

/// IPv6 fixed header view.
#[derive(Debug, Clone)]
pub struct Ipv6<T: AsRef<[u8]>> {
    buffer: T,
}

mod v6 {
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// Length of the IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;

impl<T: AsRef<[u8]>> Ipv6<T> {
    /// Wraps a buffer holding at least the 40-byte fixed header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < IPV6_HEADER_LEN {
            return Err(Truncated);
        }
        Ok(Ipv6 { buffer })
    }

    /// IP version field (6 for a valid header).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), v6::PAYLOAD_LEN)
    }

    /// Next header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[v6::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[v6::HOP_LIMIT]
    }

    /// Source address bytes.
    pub fn src_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[v6::SRC..v6::SRC + 16]);
        a
    }

    /// Destination address bytes.
    pub fn dst_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[v6::DST..v6::DST + 16]);
        a
    }

    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6<T> {
    /// Writes a fresh reply header: version 6, traffic class and flow label
    /// 0, the payload length, next header UDP, `hop_limit`, the addresses.
    pub fn emit_reply_header(
        &mut self,
        payload_len: u16,
        hop_limit: u8,
        src: [u8; 16],
        dst: [u8; 16],
    ) {
        let b = self.buffer.as_mut();
        b[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        set_be16(b, v6::PAYLOAD_LEN, payload_len);
        b[v6::NEXT_HEADER] = PROTO_UDP;
        b[v6::HOP_LIMIT] = hop_limit;
        b[v6::SRC..v6::SRC + 16].copy_from_slice(&src);
        b[v6::DST..v6::DST + 16].copy_from_slice(&dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_reply_header_verifies_and_reads_back() {
        let mut b = [0u8; 20];
        b[0] = 0x45;
        let mut ip = Ipv4::new_checked(&mut b[..]).unwrap();
        ip.emit_reply_header(76, 64, [198, 18, 0, 1], [198, 18, 0, 2]);
        assert!(ip.checksum_ok());
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.total_len(), 76);
        assert_eq!(ip.ttl(), 64);
        assert!(!ip.is_fragment());
        assert_eq!(ip.src(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(ip.dst(), Ipv4Addr::new(198, 18, 0, 2));
    }

    #[test]
    fn ipv4_checked_respects_ihl() {
        let mut b = [0u8; 24];
        b[0] = 0x46; // 24-byte header fits
        assert!(Ipv4::new_checked(&b[..]).is_ok());
        b[0] = 0x47; // 28 does not
        assert!(Ipv4::new_checked(&b[..]).is_err());
        assert!(Ipv4::new_checked(&b[..19]).is_err());
    }

    #[test]
    fn ipv4_fragments() {
        let mut b = [0u8; 20];
        b[0] = 0x45;
        b[6] = 0x20; // MF
        assert!(Ipv4::new_checked(&b[..]).unwrap().is_fragment());
        b[6] = 0x00;
        b[7] = 0x01; // offset 8
        assert!(Ipv4::new_checked(&b[..]).unwrap().is_fragment());
        b[6] = 0x40; // DF only
        b[7] = 0;
        assert!(!Ipv4::new_checked(&b[..]).unwrap().is_fragment());
    }

    #[test]
    fn ipv6_reply_header() {
        let mut b = [0xaau8; 40];
        let mut ip = Ipv6::new_checked(&mut b[..]).unwrap();
        let a: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let c: [u8; 16] = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        ip.emit_reply_header(56, 64, a, c);
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.payload_len(), 56);
        assert_eq!(ip.next_header(), PROTO_UDP);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_bytes(), a);
        assert_eq!(ip.dst_bytes(), c);
        assert_eq!(&b[..4], &[0x60, 0, 0, 0]);
    }
}
