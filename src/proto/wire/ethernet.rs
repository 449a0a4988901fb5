//! Ethernet II frames with up to two 802.1Q / 802.1ad VLAN tags.

use super::{Truncated, be16};

/// Length of the untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q (customer) VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad (service) VLAN tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// How many VLAN tags are followed before giving up.
pub const MAX_VLAN_TAGS: usize = 2;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the network layer starts, after any VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    /// The innermost EtherType.
    pub ethertype: u16,
    /// Offset of the network header in the frame.
    pub offset: usize,
    /// How many VLAN tags were skipped.
    pub vlan_tags: u8,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer that holds at least the untagged header.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Truncated);
        }
        Ok(Frame { buffer })
    }

    /// Destination MAC address.
    pub fn dst(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Source MAC address.
    pub fn src(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// The outer EtherType (a VLAN TPID if tagged).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Follows up to [`MAX_VLAN_TAGS`] VLAN tags to the network header.
    /// A third tag, or a tag cut short, is `Truncated`.
    pub fn l3(&self) -> Result<L3, Truncated> {
        let b = self.buffer.as_ref();
        let mut ethertype = self.ethertype();
        let mut offset = HEADER_LEN;
        let mut vlan_tags = 0;
        while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            if usize::from(vlan_tags) == MAX_VLAN_TAGS || b.len() < offset + 4 {
                return Err(Truncated);
            }
            ethertype = be16(b, offset + 2);
            offset += 4;
            vlan_tags += 1;
        }
        Ok(L3 {
            ethertype,
            offset,
            vlan_tags,
        })
    }

    /// True if the destination is a group (multicast or broadcast) address.
    pub fn dst_is_group(&self) -> bool {
        is_group(&self.buffer.as_ref()[field::DST])
    }

    /// True if the source could not be a single station: a group
    /// (multicast or broadcast) address, or all zeros. A reply sent back to
    /// it would reach every station of the group, or none.
    pub fn src_is_not_a_station(&self) -> bool {
        let src = &self.buffer.as_ref()[field::SRC];
        is_group(src) || src.iter().all(|&b| b == 0)
    }
}

/// True for a group address: the I/G bit (the lowest bit of the first
/// octet) is set, as in broadcast, `01:00:5e:…` and `33:33:…`.
fn is_group(mac: &[u8]) -> bool {
    mac[0] & 1 == 1
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Swaps source and destination MAC addresses (the reply goes back the
    /// way the request came).
    pub fn swap_addresses(&mut self) {
        let b = self.buffer.as_mut();
        let (dst, rest) = b.split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }

    /// Addresses a reply: the destination becomes the request's source,
    /// and the source `ours` (the interface's own address, never a value
    /// copied from the request).
    pub fn set_reply_addresses(&mut self, ours: [u8; 6]) {
        let b = self.buffer.as_mut();
        b.copy_within(field::SRC, field::DST.start);
        b[field::SRC].copy_from_slice(&ours);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertypes: &[u16]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for (i, t) in ethertypes.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < ethertypes.len() {
                f.extend_from_slice(&[0, 7]); // TCI
            }
        }
        f.extend_from_slice(&[0; 20]);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[ETHERTYPE_IPV4]);
        let l3 = Frame::new_checked(&f[..]).unwrap().l3().unwrap();
        assert_eq!(
            l3,
            L3 {
                ethertype: ETHERTYPE_IPV4,
                offset: 14,
                vlan_tags: 0
            }
        );
    }

    #[test]
    fn one_and_two_tags() {
        let f = frame(&[ETHERTYPE_VLAN, ETHERTYPE_IPV6]);
        let l3 = Frame::new_checked(&f[..]).unwrap().l3().unwrap();
        assert_eq!(
            l3,
            L3 {
                ethertype: ETHERTYPE_IPV6,
                offset: 18,
                vlan_tags: 1
            }
        );
        let f = frame(&[ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETHERTYPE_IPV4]);
        let l3 = Frame::new_checked(&f[..]).unwrap().l3().unwrap();
        assert_eq!(
            l3,
            L3 {
                ethertype: ETHERTYPE_IPV4,
                offset: 22,
                vlan_tags: 2
            }
        );
    }

    #[test]
    fn three_tags_rejected() {
        let f = frame(&[
            ETHERTYPE_VLAN,
            ETHERTYPE_VLAN,
            ETHERTYPE_VLAN,
            ETHERTYPE_IPV4,
        ]);
        assert_eq!(Frame::new_checked(&f[..]).unwrap().l3(), Err(Truncated));
    }

    #[test]
    fn short_buffers() {
        assert!(Frame::new_checked(&[0u8; 13][..]).is_err());
        let f = frame(&[ETHERTYPE_VLAN]);
        assert_eq!(Frame::new_checked(&f[..16]).unwrap().l3(), Err(Truncated));
    }

    #[test]
    fn swap() {
        let mut f = frame(&[ETHERTYPE_IPV4]);
        let mut v = Frame::new_checked(&mut f[..]).unwrap();
        v.swap_addresses();
        assert_eq!(v.dst(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(v.src(), [2, 0, 0, 0, 0, 1]);
        assert!(!v.dst_is_group());
        v.set_reply_addresses([2, 0, 0, 0, 0, 9]);
        assert_eq!(v.dst(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(v.src(), [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn group_and_zero_addresses() {
        let f = |dst: [u8; 6], src: [u8; 6]| {
            let mut b = frame(&[ETHERTYPE_IPV4]);
            b[..6].copy_from_slice(&dst);
            b[6..12].copy_from_slice(&src);
            b
        };
        let unicast = [2, 0, 0, 0, 0, 1];
        for group in [
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
            [0x33, 0x33, 0, 0, 0, 1],
        ] {
            let b = f(group, unicast);
            assert!(Frame::new_checked(&b[..]).unwrap().dst_is_group());
            let b = f(unicast, group);
            assert!(Frame::new_checked(&b[..]).unwrap().src_is_not_a_station());
        }
        let b = f(unicast, [0; 6]);
        assert!(Frame::new_checked(&b[..]).unwrap().src_is_not_a_station());
        let b = f(unicast, unicast);
        let v = Frame::new_checked(&b[..]).unwrap();
        assert!(!v.src_is_not_a_station() && !v.dst_is_group());
    }
}
