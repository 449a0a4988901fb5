//! UDP header (RFC 768).

use super::{Truncated, be16, checksum, set_be16};

/// UDP header length.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// What a datagram's checksum field says, judged by
/// [`Udp::checksum_state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumState {
    /// The field is 0: no checksum (allowed over IPv4 only).
    Absent,
    /// It verifies over the whole datagram.
    Full,
    /// It holds only the folded pseudo-header sum (see
    /// [`Udp::checksum_is_partial`]), and that form was accepted.
    Partial,
    /// Anything else.
    Wrong,
}

/// A view of a UDP datagram (header and payload).
#[derive(Debug, Clone)]
pub struct Udp<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Udp<T> {
    /// Wraps a buffer holding at least the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(Udp { buffer })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    pub fn len_field(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum field (0 = none, allowed over IPv4 only).
    pub fn checksum_field(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// True if the datagram verifies against the pseudo-header sum
    /// (`checksum::pseudo_v4` / `pseudo_v6`). The whole buffer is summed,
    /// so it must end where the UDP length field says.
    pub fn checksum_ok(&self, pseudo: u32) -> bool {
        checksum::finish(checksum::accumulate(pseudo, self.buffer.as_ref())) == 0
    }

    /// True if the checksum field holds only the folded pseudo-header sum:
    /// the form a sender that offloads its checksum leaves for the NIC to
    /// finish (the kernel's `CHECKSUM_PARTIAL`). A veth forwards such
    /// frames as they are, and XDP sees them before anything finishes the
    /// sum. The field then covers the addresses, protocol and length, not
    /// the payload.
    pub fn checksum_is_partial(&self, pseudo: u32) -> bool {
        self.checksum_field() == !checksum::finish(pseudo)
    }

    /// Judges the checksum field against the pseudo-header sum; the
    /// partial form counts only if `accept_partial` (a veth). The datagram
    /// is summed once.
    pub fn checksum_state(&self, pseudo: u32, accept_partial: bool) -> ChecksumState {
        if self.checksum_field() == 0 {
            ChecksumState::Absent
        } else if self.checksum_ok(pseudo) {
            ChecksumState::Full
        } else if accept_partial && self.checksum_is_partial(pseudo) {
            ChecksumState::Partial
        } else {
            ChecksumState::Wrong
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Udp<T> {
    /// Writes the header of a reply: ports swapped from the request's,
    /// the length, and a zero checksum (fill it with [`Udp::fill_checksum`]
    /// once the payload is final).
    pub fn emit_reply_header(&mut self, src_port: u16, dst_port: u16, len: u16) {
        let b = self.buffer.as_mut();
        set_be16(b, field::SRC_PORT, src_port);
        set_be16(b, field::DST_PORT, dst_port);
        set_be16(b, field::LENGTH, len);
        set_be16(b, field::CHECKSUM, 0);
    }

    /// Computes and stores the checksum over the whole buffer (which must
    /// be exactly the datagram) with the given pseudo-header sum. A result
    /// of 0 is sent as 0xffff (RFC 768: 0 means "no checksum").
    pub fn fill_checksum(&mut self, pseudo: u32) {
        let b = self.buffer.as_mut();
        set_be16(b, field::CHECKSUM, 0);
        let c = checksum::finish(checksum::accumulate(pseudo, b));
        set_be16(b, field::CHECKSUM, if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checksum() {
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(b"ntpx");
        let pseudo = checksum::pseudo_v4([198, 18, 0, 1], [198, 18, 0, 2], 12);
        let mut u = Udp::new_checked(&mut b[..]).unwrap();
        u.emit_reply_header(123, 40000, 12);
        u.fill_checksum(pseudo);
        assert_eq!(u.src_port(), 123);
        assert_eq!(u.dst_port(), 40000);
        assert_eq!(u.len_field(), 12);
        assert_ne!(u.checksum_field(), 0);
        assert!(u.checksum_ok(pseudo));
        let wrong = checksum::pseudo_v4([198, 18, 0, 1], [198, 18, 0, 3], 12);
        assert!(!u.checksum_ok(wrong));
    }

    #[test]
    fn partial_checksum_is_the_folded_pseudo_header() {
        // A frame captured on a veth with TX checksum offload on (the
        // kernel's defaults): 10.9.0.1 -> 10.9.0.2, 48 bytes of payload,
        // checksum field 0x145e.
        let pseudo = checksum::pseudo_v4([10, 9, 0, 1], [10, 9, 0, 2], 56);
        let mut b = [0u8; 56];
        b[4..6].copy_from_slice(&56u16.to_be_bytes());
        b[6..8].copy_from_slice(&0x145eu16.to_be_bytes());
        let u = Udp::new_checked(&b[..]).unwrap();
        assert!(u.checksum_is_partial(pseudo));
        assert!(!u.checksum_ok(pseudo));
        let other = checksum::pseudo_v4([10, 9, 0, 1], [10, 9, 0, 3], 56);
        assert!(!u.checksum_is_partial(other));
    }

    #[test]
    fn too_short() {
        assert!(Udp::new_checked(&[0u8; 7][..]).is_err());
    }
}
