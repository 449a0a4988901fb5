//! Access lists: prefixes whose clients are refused (deny), and, when
//! there is an allow list, the only prefixes whose clients are served.
//! The deny list is checked first: a client in both is refused. A refused
//! client gets the configured [`Action`]. The XDP program holds the same
//! lists in LPM tries (`deny_v4`, `allow_v6`, ...: `bpf/policy.h`).

#![forbid(unsafe_code)]

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;
use std::net::IpAddr;

/// What a refused client gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing (counted as `access`).
    #[default]
    Ignore,
    /// A Kiss-o'-Death DENY (still rate limited).
    Deny,
}

/// A set of prefixes of both families.
#[derive(Clone, Default)]
pub struct Prefixes {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
    list: Vec<IpNet>,
}

impl std::fmt::Debug for Prefixes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.list).finish()
    }
}

impl PartialEq for Prefixes {
    fn eq(&self, o: &Prefixes) -> bool {
        self.list == o.list
    }
}

impl Eq for Prefixes {}

impl Prefixes {
    /// The set of `nets` (host bits are ignored: 192.0.2.1/24 is
    /// 192.0.2.0/24).
    pub fn new(nets: &[IpNet]) -> Prefixes {
        let mut p = Prefixes::default();
        for n in nets {
            let n = n.trunc();
            match n {
                IpNet::V4(n) => p.v4.insert(n),
                IpNet::V6(n) => p.v6.insert(n),
            };
            if !p.list.contains(&n) {
                p.list.push(n);
            }
        }
        p
    }

    /// `ip` is in one of the prefixes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).is_some(),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).is_some(),
        }
    }

    /// The prefixes, deduplicated, in the order given.
    pub fn list(&self) -> &[IpNet] {
        &self.list
    }

    /// Holds no IPv4 prefix / no IPv6 prefix.
    pub fn has(&self, v6: bool) -> bool {
        self.list.iter().any(|n| matches!(n, IpNet::V6(_)) == v6)
    }
}

/// The access lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Refused, whatever the allow list says.
    pub deny: Prefixes,
    /// When it holds prefixes of a family, clients of that family outside
    /// them are refused; a family it has none of is not restricted.
    pub allow: Prefixes,
    /// What a refused client gets.
    pub action: Action,
}

impl Access {
    /// Any list holds anything.
    pub fn is_on(&self) -> bool {
        !self.deny.list().is_empty() || !self.allow.list().is_empty()
    }

    /// `client` is refused.
    pub fn refuses(&self, client: IpAddr) -> bool {
        if self.deny.contains(client) {
            return true;
        }
        self.allow.has(client.is_ipv6()) && !self.allow.contains(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn deny_first_then_allow_per_family() {
        let a = Access {
            deny: Prefixes::new(&nets(&["192.0.2.128/25", "2001:db8:bad::/48"])),
            allow: Prefixes::new(&nets(&["192.0.2.0/24"])),
            action: Action::Deny,
        };
        let refused = |s: &str| a.refuses(s.parse().unwrap());
        assert!(!refused("192.0.2.1"));
        assert!(refused("192.0.2.200"), "denied inside the allowed /24");
        assert!(refused("198.51.100.1"), "outside the allow list");
        // No IPv6 allow list: IPv6 clients are refused only if denied.
        assert!(!refused("2001:db8::1"));
        assert!(refused("2001:db8:bad:1::1"));
        assert!(a.is_on());
        assert!(!Access::default().is_on());
        assert!(!Access::default().refuses("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn host_bits_are_ignored_and_duplicates_merged() {
        let p = Prefixes::new(&nets(&["10.1.2.3/8", "10.0.0.0/8", "::/0"]));
        assert_eq!(p.list(), &nets(&["10.0.0.0/8", "::/0"])[..]);
        assert!(p.contains("10.200.0.1".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(p.contains("2001:db8::1".parse().unwrap()));
        assert!(p.has(true) && p.has(false));
    }
}
