//! The policy into the XDP program (`bpf/policy.h`): its `.rodata`
//! constants, the sizes of its maps, and the access lists' LPM tries.

use crate::proto::policy::Policy;
use crate::sys::bpf::ProgramError;
use crate::sys::bpf::skel::ntpx::{NtpxSkel, OpenNtpxSkel, types};
use ipnet::IpNet;
use libbpf_rs::MapCore;

/// Bytes of `struct ntpx_lpm_key`.
const LPM_KEY_LEN: usize = 20;

/// A 32-bit word as it lies in memory in network order.
fn net_word(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// The constants: which lists hold entries, the limits, the masks.
pub fn configure(rodata: &mut types::rodata, p: &Policy) {
    let a = &p.access;
    rodata.acl_on = u8::from(a.is_on());
    rodata.acl_deny_v4 = u8::from(a.deny.has(false));
    rodata.acl_deny_v6 = u8::from(a.deny.has(true));
    rodata.acl_allow_v4 = u8::from(a.allow.has(false));
    rodata.acl_allow_v6 = u8::from(a.allow.has(true));
    rodata.acl_kod = u8::from(a.action == crate::proto::policy::access::Action::Deny);
    let l = &p.limits;
    rodata.rl_interval_ns = l.interval_ns;
    rodata.rl_burst_ns = l.burst_ns();
    let m4 = l.key(std::net::Ipv4Addr::BROADCAST.into()).addr as u32;
    rodata.rl_mask_v4 = net_word(m4.to_be_bytes());
    let m6 = l
        .key(std::net::Ipv6Addr::from(u128::MAX).into())
        .addr
        .to_be_bytes();
    for (i, w) in rodata.rl_mask_v6.iter_mut().enumerate() {
        *w = net_word([m6[4 * i], m6[4 * i + 1], m6[4 * i + 2], m6[4 * i + 3]]);
    }
    rodata.rl_leak = l.leak;
    rodata.rl_kod = l.kod;
    rodata.rl_kod_gap_ns = l.kod_gap_ns;
    rodata.ceiling_interval_ns = l.ceiling_interval_ns;
    rodata.ceiling_burst_ns = l
        .ceiling_interval_ns
        .saturating_mul(u64::from(l.ceiling_burst));
}

/// Sizes the client table and the tries (before the load).
pub fn size_maps(open: &mut OpenNtpxSkel<'_>, p: &Policy) -> Result<(), ProgramError> {
    let count = |v6: bool, list: &[IpNet]| {
        let n = list
            .iter()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX).max(1)
    };
    let (deny, allow) = (p.access.deny.list(), p.access.allow.list());
    let sizes = [
        (&mut open.maps.deny_v4, count(false, deny)),
        (&mut open.maps.deny_v6, count(true, deny)),
        (&mut open.maps.allow_v4, count(false, allow)),
        (&mut open.maps.allow_v6, count(true, allow)),
        (&mut open.maps.clients, p.limits.clients.max(1)),
    ];
    for (map, n) in sizes {
        map.set_max_entries(n)
            .map_err(|e| ProgramError::libbpf("size the policy maps", e))?;
    }
    Ok(())
}

/// `struct ntpx_lpm_key` for `net`.
fn lpm_key(net: &IpNet) -> [u8; LPM_KEY_LEN] {
    let mut k = [0u8; LPM_KEY_LEN];
    k[..4].copy_from_slice(&u32::from(net.prefix_len()).to_ne_bytes());
    match net {
        IpNet::V4(n) => k[4..8].copy_from_slice(&n.network().octets()),
        IpNet::V6(n) => k[4..20].copy_from_slice(&n.network().octets()),
    }
    k
}

/// Fills the tries (after the load).
pub fn fill(skel: &NtpxSkel<'_>, p: &Policy) -> Result<(), ProgramError> {
    let lists = [
        (&p.access.deny, &skel.maps.deny_v4, &skel.maps.deny_v6),
        (&p.access.allow, &skel.maps.allow_v4, &skel.maps.allow_v6),
    ];
    for (list, v4, v6) in lists {
        for net in list.list() {
            let map = if matches!(net, IpNet::V6(_)) { v6 } else { v4 };
            map.update(&lpm_key(net), &[1u8], libbpf_rs::MapFlags::ANY)
                .map_err(|e| ProgramError::libbpf("fill the access lists", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_keys_are_prefix_length_then_address() {
        let k = lpm_key(&"192.0.2.77/24".parse().unwrap());
        assert_eq!(&k[..4], &24u32.to_ne_bytes());
        assert_eq!(&k[4..8], &[192, 0, 2, 0]);
        assert_eq!(&k[8..], &[0; 12]);
        let k = lpm_key(&"2001:db8::/32".parse().unwrap());
        assert_eq!(&k[4..8], &[0x20, 0x01, 0x0d, 0xb8]);
    }
}
