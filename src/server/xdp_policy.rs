//! The policy into the XDP program (`bpf/policy.h`): its `.rodata`
//! constants, the size of its client table, and the access lists (LPM
//! tries and the `acl` map of their flags), which a reload changes live.

use crate::proto::policy::Policy;
use crate::proto::policy::access::{Access, Action};
use crate::sys::bpf::ProgramError;
use crate::sys::bpf::skel::ntpx::{OpenNtpxSkel, types};
use ipnet::IpNet;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

/// Bytes of `struct ntpx_lpm_key`.
const LPM_KEY_LEN: usize = 20;

/// A 32-bit word as it lies in memory in network order.
fn net_word(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// The constants: the limits, the masks.
pub fn configure(rodata: &mut types::rodata, p: &Policy) {
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

/// Sizes the client table (before the load). The tries hold up to
/// [`MAX_PREFIXES`](crate::server::policy_config::MAX_PREFIXES) each
/// (`bpf/ntpx.bpf.c`), allocated as they fill.
pub fn size_maps(open: &mut OpenNtpxSkel<'_>, p: &Policy) -> Result<(), ProgramError> {
    open.maps
        .clients
        .set_max_entries(p.limits.clients.max(1))
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

/// The program's access lists: the four tries and the `acl` map of their
/// flags, on descriptors of their own (the control thread changes them on
/// a reload).
#[derive(Debug)]
pub struct AccessMaps {
    deny_v4: MapHandle,
    deny_v6: MapHandle,
    allow_v4: MapHandle,
    allow_v6: MapHandle,
    acl: MapHandle,
}

impl AccessMaps {
    /// Takes the maps of a loaded program.
    pub fn of(
        maps: &crate::sys::bpf::skel::ntpx::NtpxMaps<'_>,
    ) -> Result<AccessMaps, ProgramError> {
        let take = |m: &libbpf_rs::Map<'_>| {
            MapHandle::try_from(m)
                .map_err(|e| ProgramError::libbpf("take an access list map's fd", e))
        };
        Ok(AccessMaps {
            deny_v4: take(&maps.deny_v4)?,
            deny_v6: take(&maps.deny_v6)?,
            allow_v4: take(&maps.allow_v4)?,
            allow_v6: take(&maps.allow_v6)?,
            acl: take(&maps.acl)?,
        })
    }

    /// A second set of descriptors, for another thread.
    pub fn dup(&self) -> Result<AccessMaps, ProgramError> {
        let d = |m: &MapHandle| {
            MapHandle::try_from(m)
                .map_err(|e| ProgramError::libbpf("duplicate an access list map's fd", e))
        };
        Ok(AccessMaps {
            deny_v4: d(&self.deny_v4)?,
            deny_v6: d(&self.deny_v6)?,
            allow_v4: d(&self.allow_v4)?,
            allow_v6: d(&self.allow_v6)?,
            acl: d(&self.acl)?,
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
    /// load). Never refuses a client that neither list refuses, and never
    /// lets one through that both refuse, at any moment in between: the
    /// new prefixes go in first, then the flags change, then the old
    /// prefixes go.
    pub fn apply(&self, old: Option<&Access>, new: &Access) -> Result<(), ProgramError> {
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
}
