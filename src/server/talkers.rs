//! Top talkers: which networks send the most requests, bounded and
//! sampled, never a single client's address.
//!
//! One request in [`SAMPLE`] for the server is sampled at random (by the
//! XDP program into a ring buffer, by the socket workers into a bounded
//! queue each; a full ring or queue drops samples, it never blocks), its
//! source cut to a /24 (IPv4) or /48 (IPv6). The control thread feeds the
//! samples to a Filtered Space-Saving summary (the `topk` crate) of
//! [`TRACKED`] prefixes per window of [`WINDOW`]: the prefixes that sent
//! the most in the last complete window, with their rates, are what
//! `ntpx stats` and the metrics show ([`SHOWN`] of them).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use topk::FilteredSpaceSaving;

/// One request in this many is sampled (`NTPX_TALKER_SAMPLE`).
pub const SAMPLE: u32 = 64;
/// Prefixes the summary tracks at once.
pub const TRACKED: usize = 256;
/// Prefixes shown.
pub const SHOWN: usize = 10;
/// The window the rates are over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// A prefix is shown only with at least this many samples that the
/// summary guarantees (its estimate less its possible error): a flood from
/// random spoofed sources, no network of which sends much, shows nothing
/// rather than a new series per minute.
pub const MIN_SAMPLES: u64 = 3;
/// Bits of an IPv4 and an IPv6 source that make its prefix.
pub const PREFIX_V4: u8 = 24;
pub const PREFIX_V6: u8 = 48;

/// The prefix a source belongs to.
pub fn prefix_of(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(a) => Ipv4Net::new(a, PREFIX_V4).map(|n| IpNet::V4(n.trunc())),
        IpAddr::V6(a) => Ipv6Net::new(a, PREFIX_V6).map(|n| IpNet::V6(n.trunc())),
    }
    // Cannot fail: the prefix lengths are valid.
    .unwrap_or_else(|_| IpNet::from(ip))
}

/// One top talker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Talker {
    /// The prefix (`192.0.2.0/24`, `2001:db8:1::/48`).
    pub prefix: String,
    /// Its requests per second over the window (estimated from samples).
    pub rate: f64,
    /// Its share of all sampled requests in the window.
    pub share: f64,
}

/// The summary, fed by the control thread.
pub struct Talkers {
    current: FilteredSpaceSaving<IpNet>,
    started: Instant,
    /// The last complete window's top talkers.
    last: Vec<Talker>,
}

impl Default for Talkers {
    fn default() -> Self {
        Talkers {
            current: FilteredSpaceSaving::new(TRACKED),
            started: Instant::now(),
            last: Vec::new(),
        }
    }
}

impl Talkers {
    /// One sampled request from `prefix`.
    pub fn sample(&mut self, prefix: IpNet) {
        self.current.insert(prefix, 1);
    }

    /// Closes the window when it is over (true then): its top talkers
    /// become what [`Self::top`] shows.
    pub fn rotate(&mut self, now: Instant) -> bool {
        let over = now.duration_since(self.started);
        if over < WINDOW {
            return false;
        }
        let done = std::mem::replace(&mut self.current, FilteredSpaceSaving::new(TRACKED));
        self.last = Self::top_of(done, over);
        self.started = now;
        true
    }

    /// The top talkers: the last complete window's, or the current one's
    /// until there is one.
    pub fn top(&self, now: Instant) -> Vec<Talker> {
        if !self.last.is_empty() {
            return self.last.clone();
        }
        let mut copy = FilteredSpaceSaving::new(TRACKED);
        // Cannot fail: both track TRACKED prefixes.
        let _ = copy.merge(&self.current);
        Self::top_of(copy, now.duration_since(self.started))
    }

    fn top_of(summary: FilteredSpaceSaving<IpNet>, over: Duration) -> Vec<Talker> {
        let total = summary.count().max(1) as f64;
        let secs = over.as_secs_f64().max(1.0);
        summary
            .into_sorted_vec()
            .into_iter()
            .filter(|(_, c)| c.estimated_count() - c.associated_error() >= MIN_SAMPLES)
            .take(SHOWN)
            .map(|(p, c)| {
                let n = c.estimated_count() as f64;
                Talker {
                    prefix: p.to_string(),
                    rate: n * f64::from(SAMPLE) / secs,
                    share: n / total,
                }
            })
            .collect()
    }
}

/// The `ntpx stats` line (empty without talkers).
pub fn line(top: &[Talker]) -> String {
    if top.is_empty() {
        return String::new();
    }
    let list: Vec<String> = top
        .iter()
        .take(5)
        .map(|t| format!("{} {:.0}/s ({:.1}%)", t.prefix, t.rate, 100.0 * t.share))
        .collect();
    format!("  top talkers (sampled): {}\n", list.join(", "))
}

/// The XDP program's ring of samples, read by the control thread.
pub struct TalkerRing {
    ring: libbpf_rs::RingBuffer<'static>,
    got: std::rc::Rc<std::cell::RefCell<Vec<IpNet>>>,
    // The ring's map, open while the ring is read.
    _map: libbpf_rs::MapHandle,
}

impl TalkerRing {
    /// Reads `map` (the program's `talkers` ring).
    pub fn new(map: libbpf_rs::MapHandle) -> libbpf_rs::Result<TalkerRing> {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let sink = got.clone();
        let mut b = libbpf_rs::RingBufferBuilder::new();
        b.add(&map, move |data: &[u8]| {
            if let Some(p) = parse_sample(data) {
                sink.borrow_mut().push(p);
            }
            0
        })?;
        let ring = b.build()?;
        Ok(TalkerRing {
            ring,
            got,
            _map: map,
        })
    }

    /// Feeds what the ring holds to `t`, without waiting.
    pub fn drain_into(&self, t: &mut Talkers) {
        let _ = self.ring.consume();
        for p in self.got.borrow_mut().drain(..) {
            t.sample(p);
        }
    }
}

/// A `struct ntpx_talker` (host-order family, network-order address).
fn parse_sample(b: &[u8]) -> Option<IpNet> {
    let family = u32::from_ne_bytes(b.get(..4)?.try_into().ok()?);
    let addr: [u8; 16] = b.get(4..20)?.try_into().ok()?;
    let ip = match family {
        4 => IpAddr::from([addr[0], addr[1], addr[2], addr[3]]),
        6 => IpAddr::from(addr),
        _ => return None,
    };
    Some(prefix_of(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix_of("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            prefix_of("::ffff:198.51.100.9".parse().unwrap()).to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            prefix_of("2001:db8:7:8::1".parse().unwrap()).to_string(),
            "2001:db8:7::/48"
        );
    }

    #[test]
    fn the_heaviest_come_first_with_their_rates() {
        let mut t = Talkers::default();
        let start = t.started;
        // 60 s of samples: one /24 with 600, one with 300, 1,000 others
        // with one each (more than the summary tracks).
        for _ in 0..600 {
            t.sample(prefix_of("192.0.2.1".parse().unwrap()));
        }
        for i in 0..1000u32 {
            t.sample(prefix_of(IpAddr::from(std::net::Ipv4Addr::from(
                0x0a00_0000 + (i << 8),
            ))));
            if i % 10 < 3 {
                t.sample(prefix_of("2001:db8:1::9".parse().unwrap()));
            }
        }
        let mid = t.top(start + Duration::from_secs(30));
        assert_eq!(mid[0].prefix, "192.0.2.0/24");
        assert!(!t.rotate(start + Duration::from_secs(59)));
        assert!(t.rotate(start + WINDOW));
        let top = t.top(start + WINDOW);
        // The 1,000 networks with one sample each are not shown.
        assert_eq!(top.len(), 2, "{top:?}");
        assert_eq!(top[0].prefix, "192.0.2.0/24");
        assert_eq!(top[1].prefix, "2001:db8:1::/48");
        // 600 samples of 1 in 64 over 60 s: 640 requests/s.
        assert!((top[0].rate - 640.0).abs() < 1.0, "{top:?}");
        assert!((top[0].share - 600.0 / 1900.0).abs() < 0.01, "{top:?}");
        assert!(line(&top).starts_with("  top talkers (sampled): 192.0.2.0/24 640/s"));
        // The next window starts empty, and the last stays shown.
        assert_eq!(t.top(start + WINDOW + Duration::from_secs(1)), top);
    }
}
