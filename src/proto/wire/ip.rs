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

    /// The options: the header's bytes after the fixed 20 (empty for
    /// IHL 5; also empty for an invalid IHL below 5).
    pub fn options(&self) -> &[u8] {
        let end = self.header_len();
        self.buffer.as_ref().get(IPV4_MIN_LEN..end).unwrap_or(&[])
    }
}

/// Why IPv4 options were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionsError {
    /// A loose or strict source route (LSRR, SSRR).
    SourceRoute,
    /// An option whose length or pointer is out of bounds, a second
    /// record-route or timestamp option, or a CIPSO security label.
    Malformed,
}

/// IPv4 option types (RFC 791, RFC 2113; the copied, class and number
/// bits together, as on the wire).
mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const RECORD_ROUTE: u8 = 7;
    pub const TIMESTAMP: u8 = 68;
    pub const LSRR: u8 = 131;
    pub const CIPSO: u8 = 134;
    pub const SSRR: u8 = 137;
    pub const ROUTER_ALERT: u8 = 148;
    /// Timestamp flags (the low nibble of the fourth byte): address and
    /// timestamp pairs; prespecified addresses. Any other value takes
    /// 4-byte timestamps.
    pub const TS_AND_ADDR: u8 = 1;
    pub const TS_PRESPEC: u8 = 3;
}

/// Judges a request's IPv4 options as the kernel's receive path does
/// (`ip_options_compile`, then `ip_rcv_options` on a host, where
/// `accept_source_route` is off): source routes are refused, and so is
/// every malformed option. Accepted: end of list (the rest is padding),
/// no-operation, record route and timestamp (once each, with a pointer in
/// range), router alert, and any other option that is well formed. CIPSO
/// labels are refused: the kernel refuses them on a host with no CIPSO
/// configuration. Options are never copied into a reply.
pub fn check_options(options: &[u8]) -> Result<(), OptionsError> {
    use OptionsError::{Malformed, SourceRoute};
    let (mut seen_rr, mut seen_ts) = (false, false);
    let mut rest = options;
    while let Some(&kind) = rest.first() {
        match kind {
            opt::END => return Ok(()),
            opt::NOP => {
                rest = &rest[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(*rest.get(1).ok_or(Malformed)?);
        if len < 2 || len > rest.len() {
            return Err(Malformed);
        }
        let o = &rest[..len];
        // The pointer (third byte) counts from 1, at the option's type.
        let pointer = o.get(2).map(|&p| usize::from(p));
        match kind {
            opt::LSRR | opt::SSRR => return Err(SourceRoute),
            opt::CIPSO => return Err(Malformed),
            opt::RECORD_ROUTE => {
                let p = pointer.ok_or(Malformed)?;
                if seen_rr || p < 4 || (p <= len && p + 3 > len) {
                    return Err(Malformed);
                }
                seen_rr = true;
            }
            opt::TIMESTAMP => {
                let p = pointer.ok_or(Malformed)?;
                let flags = *o.get(3).ok_or(Malformed)?;
                if seen_ts || p < 5 {
                    return Err(Malformed);
                }
                if p <= len {
                    let room = match flags & 0x0f {
                        opt::TS_AND_ADDR | opt::TS_PRESPEC => 7,
                        _ => 3,
                    };
                    if p + room > len {
                        return Err(Malformed);
                    }
                } else if flags & 0x0f != opt::TS_PRESPEC && flags >> 4 == 0x0f {
                    // Full, and its overflow counter already at its maximum.
                    return Err(Malformed);
                }
                seen_ts = true;
            }
            opt::ROUTER_ALERT if len < 4 => return Err(Malformed),
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
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
    fn ipv4_options() {
        use OptionsError::{Malformed, SourceRoute};
        let cases: &[(&[u8], Result<(), OptionsError>)] = &[
            (&[], Ok(())),
            (&[1, 1, 1, 0], Ok(())),
            (&[0, 0xff, 0xff, 0xff], Ok(())), // after the end: padding
            (&[7, 7, 4, 0, 0, 0, 0, 0], Ok(())), // record route, 1 slot
            (&[7, 3, 4, 0], Ok(())),          // record route, full
            (&[7, 7, 3, 0, 0, 0, 0, 0], Err(Malformed)), // pointer < 4
            (&[7, 6, 4, 0, 0, 0], Err(Malformed)), // slot cut short
            (&[7, 3, 4, 7, 3, 4, 0, 0], Err(Malformed)), // twice
            (&[68, 8, 5, 0, 0, 0, 0, 0], Ok(())), // timestamp, 1 slot
            (&[68, 8, 5, 1, 0, 0, 0, 0], Err(Malformed)), // addr+ts needs 8
            (&[68, 4, 5, 0xf0], Err(Malformed)), // full, overflow maxed
            (&[68, 4, 5, 0x10], Ok(())),      // full, overflow counted
            (&[68, 8, 4, 0, 0, 0, 0, 0], Err(Malformed)), // pointer < 5
            (&[148, 4, 0, 0], Ok(())),        // router alert
            (&[148, 2, 1, 0], Err(Malformed)),
            (&[131, 7, 4, 10, 0, 0, 1, 0], Err(SourceRoute)), // LSRR
            (&[137, 7, 4, 10, 0, 0, 1, 0], Err(SourceRoute)), // SSRR
            (&[1, 131, 3, 4], Err(SourceRoute)),
            (&[134, 6, 0, 0, 0, 1, 0, 0], Err(Malformed)), // CIPSO
            (&[130, 4, 0, 0], Ok(())),                     // security: kernel ignores
            (&[25, 0, 0, 0], Err(Malformed)),              // length 0
            (&[25, 1, 0, 0], Err(Malformed)),              // length 1
            (&[25, 9, 0, 0], Err(Malformed)),              // past the header
            (&[1, 1, 1, 25], Err(Malformed)),              // no room for the length
        ];
        for (o, want) in cases {
            assert_eq!(check_options(o), *want, "{o:?}");
        }
        // 65,000 four-byte lists spread over all values, and their
        // prefixes: never a panic.
        for v in 0..=u32::MAX / 65_521 {
            let b = v.wrapping_mul(65_521).to_be_bytes();
            for cut in 0..=4 {
                let _ = check_options(&b[..cut]);
            }
        }
    }

    #[test]
    fn ipv4_options_view() {
        let mut b = [0u8; 24];
        b[0] = 0x46;
        b[20..].copy_from_slice(&[1, 1, 1, 0]);
        assert_eq!(Ipv4::new_checked(&b[..]).unwrap().options(), &[1, 1, 1, 0]);
        b[0] = 0x45;
        assert!(Ipv4::new_checked(&b[..]).unwrap().options().is_empty());
        b[0] = 0x43;
        assert!(Ipv4::new_checked(&b[..]).unwrap().options().is_empty());
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
