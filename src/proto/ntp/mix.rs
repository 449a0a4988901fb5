//! The client mix: what kinds of NTP packets come to the server (address
//! family × version × mode) and how often its clients say they poll,
//! counted without ever naming a client. The XDP program (`bpf/ntpx.bpf.c`, maps `mix` and
//! `polls`) and the socket datapath's workers index their counters the
//! same way.

use serde::{Deserialize, Serialize};

/// Counters of family × version × mode: `ipv6 << 6 | version << 3 |
/// mode`.
pub const KINDS: usize = 128;
/// Counters of the poll exponents of mode-3 requests: −8 to 23.
pub const POLLS: usize = 32;
/// The least poll exponent counted on its own (lower ones count here).
pub const MIN_POLL: i8 = -8;

/// The kind counter of a packet whose first byte is `first` (LI, VN,
/// mode), which came over IPv6 or not.
pub fn kind(first: u8, ipv6: bool) -> usize {
    usize::from(ipv6) << 6 | usize::from(first & 0x3f)
}

/// The poll counter of a request's poll field (clamped to −8..=23).
pub fn poll_bucket(poll: i8) -> usize {
    (poll.clamp(MIN_POLL, MIN_POLL + POLLS as i8 - 1) - MIN_POLL) as usize
}

/// What the counters hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMix {
    /// Packets for the server by kind ([`kind`]).
    #[serde(with = "serde_big_array")]
    pub kinds: [u64; KINDS],
    /// Mode-3 requests by poll exponent ([`poll_bucket`]).
    pub polls: [u64; POLLS],
}

impl Default for ClientMix {
    fn default() -> Self {
        ClientMix {
            kinds: [0; KINDS],
            polls: [0; POLLS],
        }
    }
}

/// Serde for `[u64; KINDS]` (serde derives arrays up to 32 only): as a
/// list.
mod serde_big_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &[u64; super::KINDS], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(a.iter())
    }

    /// Also takes the 64 counters of a server from before the family was
    /// counted (as IPv4: `ntpx stats` and `ntpx health` keep working while
    /// a package upgrade waits for the restart).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; super::KINDS], D::Error> {
        let v = Vec::<u64>::deserialize(d)?;
        let mut a = [0u64; super::KINDS];
        match v.len() {
            n if n == super::KINDS || n == super::KINDS / 2 => a[..n].copy_from_slice(&v),
            n => {
                return Err(serde::de::Error::invalid_length(
                    n,
                    &"128 counters (64 from an older server)",
                ));
            }
        }
        Ok(a)
    }
}

impl ClientMix {
    /// Adds `o`.
    pub fn add(&mut self, o: &ClientMix) {
        for (a, b) in self.kinds.iter_mut().zip(o.kinds) {
            *a += b;
        }
        for (a, b) in self.polls.iter_mut().zip(o.polls) {
            *a += b;
        }
    }

    /// Counts a packet for the server (at least an NTP header long), which
    /// came over IPv6 or not.
    #[inline]
    pub fn count(&mut self, header: &[u8], ipv6: bool) {
        let (Some(&first), Some(&poll)) = (header.first(), header.get(2)) else {
            return;
        };
        self.kinds[kind(first, ipv6)] += 1;
        if first & 7 == 3 {
            self.polls[poll_bucket(poll as i8)] += 1;
        }
    }

    /// The non-zero kinds: `(family (4 or 6), version, mode, count)`,
    /// most first.
    pub fn kinds(&self) -> Vec<(u8, u8, u8, u64)> {
        let mut v: Vec<(u8, u8, u8, u64)> = (0..KINDS)
            .filter(|&k| self.kinds[k] > 0)
            .map(|k| {
                let family = if k >> 6 == 1 { 6 } else { 4 };
                (family, (k >> 3 & 7) as u8, (k & 7) as u8, self.kinds[k])
            })
            .collect();
        v.sort_by_key(|k| std::cmp::Reverse(k.3));
        v
    }

    /// Packets for the server over IPv4 and over IPv6.
    pub fn by_family(&self) -> [u64; 2] {
        let (v4, v6) = self.kinds.split_at(KINDS / 2);
        [v4.iter().sum(), v6.iter().sum()]
    }

    /// The non-zero poll exponents: `(poll, count)`, in order (the first
    /// and last may stand for lower or higher ones).
    pub fn polls(&self) -> Vec<(i8, u64)> {
        (0..POLLS)
            .filter(|&b| self.polls[b] > 0)
            .map(|b| (MIN_POLL + b as i8, self.polls[b]))
            .collect()
    }

    /// The `ntpx stats` lines (empty when nothing was counted).
    pub fn lines(&self) -> String {
        let total: u64 = self.kinds.iter().sum();
        if total == 0 {
            return String::new();
        }
        let pct = |n: u64, of: u64| 100.0 * n as f64 / of.max(1) as f64;
        let kinds: Vec<String> = self
            .kinds()
            .iter()
            .take(5)
            .map(|(f, v, m, n)| format!("IPv{f} v{v} mode {m} {:.1}%", pct(*n, total)))
            .collect();
        let mut s = format!("  packets by family/version/mode: {}\n", kinds.join(", "));
        let polled: u64 = self.polls.iter().sum();
        if polled > 0 {
            let polls: Vec<String> = self
                .polls()
                .iter()
                .map(|(p, n)| format!("{p}: {:.1}%", pct(*n, polled)))
                .collect();
            s.push_str(&format!("  client poll (log2 s): {}\n", polls.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_polls() {
        let mut m = ClientMix::default();
        m.count(&[0x23, 0, 6, 0], false); // v4 mode 3, poll 6
        m.count(&[0x1b, 0, 10, 0], false); // v3 mode 3, poll 10
        m.count(&[0x23, 0, 0x80, 0], false); // poll -128: the lowest bucket
        m.count(&[0x17, 0, 0, 0], true); // v2 mode 7 (monlist), over IPv6
        m.count(&[0x23], false); // too short: not counted
        assert_eq!(m.kinds(), vec![(4, 4, 3, 2), (4, 3, 3, 1), (6, 2, 7, 1)]);
        assert_eq!(m.by_family(), [3, 1]);
        assert_eq!(m.polls(), vec![(-8, 1), (6, 1), (10, 1)]);
        assert_eq!(poll_bucket(23), POLLS - 1);
        assert_eq!(poll_bucket(127), POLLS - 1);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ClientMix>(&text).unwrap(), m);
        // An older server's 64 counters read as IPv4.
        let old = format!(
            "{{\"kinds\":[{}],\"polls\":[{}]}}",
            ["1"; 64].join(","),
            ["0"; 32].join(",")
        );
        let older: ClientMix = serde_json::from_str(&old).unwrap();
        assert_eq!(older.by_family(), [64, 0]);
        assert!(serde_json::from_str::<ClientMix>(&old.replacen("1,", "", 1)).is_err());
        assert!(m.lines().contains("IPv4 v4 mode 3 50.0%"), "{}", m.lines());
        assert!(m.lines().contains("IPv6 v2 mode 7 25.0%"), "{}", m.lines());
    }
}
