//! The policy into the XDP program (`bpf/policy.h`): the size of its
//! client table (fixed at the load), and the access lists (LPM tries and
//! the `acl` map of their flags) and the rate limits (the `limits` map),
//! which a reload changes live.

use crate::proto::policy::Policy;
use crate::proto::policy::access::{Access, Action};
use crate::proto::policy::limit::Limits;
use crate::sys::bpf::ProgramError;
use crate::sys::bpf::skel::ntpx::OpenNtpxSkel;
use ipnet::IpNet;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

/// Bytes of `struct ntpx_lpm_key`.
const LPM_KEY_LEN: usize = 20;

/// Bytes of `struct ntpx_limits`.
const LIMITS_LEN: usize = 72;

/// `struct ntpx_limits` for `l`: the limits, the masks.
fn limits_value(l: &Limits) -> [u8; LIMITS_LEN] {
    let mut b = [0u8; LIMITS_LEN];
    let ceiling_burst_ns = l
        .ceiling_interval_ns
        .saturating_mul(u64::from(l.ceiling_burst));
    for (i, v) in [
        l.interval_ns,
        l.burst_ns(),
        l.kod_gap_ns,
        l.ceiling_interval_ns,
        ceiling_burst_ns,
    ]
    .into_iter()
    .enumerate()
    {
        b[8 * i..8 * i + 8].copy_from_slice(&v.to_ne_bytes());
    }
    // The masks lie in network order, as the addresses they cut.
    let m4 = l.key(std::net::Ipv4Addr::BROADCAST.into()).addr as u32;
    b[40..44].copy_from_slice(&m4.to_be_bytes());
    let m6 = l.key(std::net::Ipv6Addr::from(u128::MAX).into()).addr;
    b[44..60].copy_from_slice(&m6.to_be_bytes());
    b[60..64].copy_from_slice(&l.leak.to_ne_bytes());
    b[64..68].copy_from_slice(&l.kod.to_ne_bytes());
    b
}

/// Entries of the program's client table for `p` (fixed at the load).
pub fn client_table_size(p: &Policy) -> u32 {
    p.limits.clients.max(1)
}

/// Sizes the client table (before the load). The tries hold up to
/// [`MAX_PREFIXES`](crate::server::policy_config::MAX_PREFIXES) each
/// (`bpf/ntpx.bpf.c`), allocated as they fill.
pub fn size_maps(open: &mut OpenNtpxSkel<'_>, p: &Policy) -> Result<(), ProgramError> {
    open.maps
        .clients
        .set_max_entries(client_table_size(p))
        .map_err(|e| ProgramError::libbpf("size the policy maps", e))
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

/// `struct ntpx_acl` for `a`.
fn acl_value(a: &Access) -> [u8; 8] {
    [
        u8::from(a.deny.has(false)),
        u8::from(a.deny.has(true)),
        u8::from(a.allow.has(false)),
        u8::from(a.allow.has(true)),
        u8::from(a.action == Action::Deny),
        0,
        0,
        0,
    ]
}

/// The program's live policy: the four access-list tries, the `acl` map
/// of their flags and the `limits` map, on descriptors of their own (the
/// control thread changes them on a reload).
#[derive(Debug)]
pub struct PolicyMaps {
    deny_v4: MapHandle,
    deny_v6: MapHandle,
    allow_v4: MapHandle,
    allow_v6: MapHandle,
    acl: MapHandle,
    limits: MapHandle,
}

impl PolicyMaps {
    /// Takes the maps of a loaded program.
    pub fn of(
        maps: &crate::sys::bpf::skel::ntpx::NtpxMaps<'_>,
    ) -> Result<PolicyMaps, ProgramError> {
        let take = |m: &libbpf_rs::MapMut<'_>| MapHandle::try_from(m);
        Self::take(
            [
                &maps.deny_v4,
                &maps.deny_v6,
                &maps.allow_v4,
                &maps.allow_v6,
                &maps.acl,
                &maps.limits,
            ]
            .map(take),
        )
    }

    /// A second set of descriptors, for another thread.
    pub fn dup(&self) -> Result<PolicyMaps, ProgramError> {
        let d = |m: &MapHandle| MapHandle::try_from(m);
        Self::take(
            [
                &self.deny_v4,
                &self.deny_v6,
                &self.allow_v4,
                &self.allow_v6,
                &self.acl,
                &self.limits,
            ]
            .map(d),
        )
    }

    fn take(h: [libbpf_rs::Result<MapHandle>; 6]) -> Result<PolicyMaps, ProgramError> {
        let [deny_v4, deny_v6, allow_v4, allow_v6, acl, limits] = h;
        let e = |e| ProgramError::libbpf("take a policy map's fd", e);
        Ok(PolicyMaps {
            deny_v4: deny_v4.map_err(e)?,
            deny_v6: deny_v6.map_err(e)?,
            allow_v4: allow_v4.map_err(e)?,
            allow_v6: allow_v6.map_err(e)?,
            acl: acl.map_err(e)?,
            limits: limits.map_err(e)?,
        })
    }

    fn trie(&self, deny: bool, net: &IpNet) -> &MapHandle {
        match (deny, matches!(net, IpNet::V6(_))) {
            (true, false) => &self.deny_v4,
            (true, true) => &self.deny_v6,
            (false, false) => &self.allow_v4,
            (false, true) => &self.allow_v6,
        }
    }

    /// Makes the maps say `new`, where they said `old` (nothing, at the
    /// load): its access lists and its limits (the client table's size
    /// is fixed at the load: `clients` is not read here).
    pub fn apply(&self, old: Option<&Policy>, new: &Policy) -> Result<(), ProgramError> {
        // The lists first: if they fail, the limits stay as they were.
        self.apply_access(old.map(|p| &p.access), &new.access)?;
        self.limits
            .update(
                &0u32.to_ne_bytes(),
                &limits_value(&new.limits),
                MapFlags::ANY,
            )
            .map_err(|e| ProgramError::libbpf("set the rate limits", e))
    }

    /// The access lists. Never refuses a client that neither list
    /// refuses, and never lets one through that both refuse, at any
    /// moment in between: the new prefixes go in first, then the flags
    /// change, then the old prefixes go.
    fn apply_access(&self, old: Option<&Access>, new: &Access) -> Result<(), ProgramError> {
        let lists = |a: &Access| {
            let mut v: Vec<(bool, IpNet)> = Vec::new();
            v.extend(a.deny.list().iter().map(|n| (true, *n)));
            v.extend(a.allow.list().iter().map(|n| (false, *n)));
            v
        };
        let (before, after) = (old.map(lists).unwrap_or_default(), lists(new));
        for (deny, net) in &after {
            self.trie(*deny, net)
                .update(&lpm_key(net), &[1u8], MapFlags::ANY)
                .map_err(|e| ProgramError::libbpf("fill the access lists", e))?;
        }
        self.acl
            .update(&0u32.to_ne_bytes(), &acl_value(new), MapFlags::ANY)
            .map_err(|e| ProgramError::libbpf("set the access lists' flags", e))?;
        for (deny, net) in before.iter().filter(|x| !after.contains(x)) {
            match self.trie(*deny, net).delete(&lpm_key(net)) {
                Err(e) if e.kind() != libbpf_rs::ErrorKind::NotFound => {
                    return Err(ProgramError::libbpf("empty the access lists", e));
                }
                _ => {}
            }
        }
        Ok(())
    }
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

    #[test]
    fn limits_bytes_follow_the_c_layout() {
        use crate::sys::bpf::skel::ntpx::types::ntpx_limits as L;
        use std::mem::offset_of;
        assert_eq!(size_of::<L>(), LIMITS_LEN);
        let l = Limits {
            interval_ns: 1000,
            burst: 3,
            prefix_v4: 24,
            prefix_v6: 48,
            leak: 5,
            kod: 7,
            kod_gap_ns: 11,
            clients: 9,
            ceiling_interval_ns: 13,
            ceiling_burst: 2,
        };
        let b = limits_value(&l);
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(u64_at(offset_of!(L, interval_ns)), 1000);
        assert_eq!(u64_at(offset_of!(L, burst_ns)), 3000);
        assert_eq!(u64_at(offset_of!(L, kod_gap_ns)), 11);
        assert_eq!(u64_at(offset_of!(L, ceiling_interval_ns)), 13);
        assert_eq!(u64_at(offset_of!(L, ceiling_burst_ns)), 26);
        let m4 = offset_of!(L, mask_v4);
        assert_eq!(&b[m4..m4 + 4], &[255, 255, 255, 0]);
        let m6 = offset_of!(L, mask_v6);
        assert_eq!(&b[m6..m6 + 16], &[&[255u8; 6][..], &[0; 10]].concat()[..]);
        assert_eq!(u32_at(offset_of!(L, leak)), 5);
        assert_eq!(u32_at(offset_of!(L, kod)), 7);
    }
}
