//! Rate limiting: a token bucket per client, with a leak and a KoD RATE
//! for those over their limit, and a global reply ceiling.
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket):
//! one timestamp per client, the theoretical arrival time `tat`, at which
//! its bucket would be full again. A request at `now` is within the limit
//! when `max(tat, now) + interval - now <= interval * burst`; then `tat`
//! moves on by one interval. So a client may send `burst` requests at
//! once, then one per `interval`. `bpf/policy.h` (admit(), limited(),
//! under_ceiling()) is the same arithmetic in C.
//!
//! Clients are keyed by address, IPv4 cut to `prefix_v4` bits (32) and
//! IPv6 to `prefix_v6` (64): never by port, so a host that rotates its
//! source ports is one client.

#![forbid(unsafe_code)]

use std::net::IpAddr;

/// The limits, as configured (`[rate_limit]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Mean time a client must leave between requests, ns; 0: no
    /// per-client limit.
    pub interval_ns: u64,
    /// Requests a client may send at once.
    pub burst: u32,
    /// Bits of an IPv4 address that name a client.
    pub prefix_v4: u8,
    /// Bits of an IPv6 address that name a client.
    pub prefix_v6: u8,
    /// 1 in `leak` limited requests is answered anyway (0: none).
    pub leak: u32,
    /// 1 in `kod` of the other limited requests gets a KoD RATE (0: none).
    pub kod: u32,
    /// At most one KoD per client per this many ns.
    pub kod_gap_ns: u64,
    /// Entries of the client table.
    pub clients: u32,
    /// Mean time between replies over the whole server, ns; 0: no
    /// ceiling.
    pub ceiling_interval_ns: u64,
    /// Replies the ceiling lets through at once.
    pub ceiling_burst: u32,
}

impl Default for Limits {
    /// The defaults: 64 requests/s per client with a burst of 256 (a NAT
    /// of 2,000 clients polling every 64 s sends about 32/s), 1 in 4 over
    /// it answered, 1 in 8 of the rest a KoD, at most one a second; 65,536
    /// clients; no ceiling.
    fn default() -> Self {
        Limits {
            interval_ns: 1_000_000_000 / 64,
            burst: 256,
            prefix_v4: 32,
            prefix_v6: 64,
            leak: 4,
            kod: 8,
            kod_gap_ns: 1_000_000_000,
            clients: 65_536,
            ceiling_interval_ns: 0,
            ceiling_burst: 0,
        }
    }
}

/// A client of the limiter: its address cut to the configured prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// 4 or 6.
    pub family: u8,
    /// The address bits (IPv4 in the low 32), the rest zero.
    pub addr: u128,
}

/// The window over which a limited client's rate is measured, ns.
pub const WINDOW_NS: u64 = 1_000_000_000;
/// `base` of a client counted as speeding up in this episode.
pub const SPED_UP: u32 = u32::MAX;

/// One client's bucket and history (`struct ntpx_client` in
/// `bpf/ntpx.h`); times in ns on one clock.
///
/// An *episode* begins with a client's first request over its limit and
/// ends when a request finds its bucket at least half full again. During
/// one, the client's requests are counted in one-second windows: the first
/// window's count is its base rate, and a later window with twice as many
/// counts it, once, as speeding up (a broken client that asks faster when
/// not answered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When its bucket is full again.
    pub tat: u64,
    /// Its last request.
    pub last: u64,
    /// When the current window of its episode began; 0: no episode.
    pub win_start: u64,
    /// Requests in the current window (low 32 bits) and in its episode's
    /// first window (high 32: 0 until that window is over, [`SPED_UP`]
    /// once counted).
    pub counts: u64,
    /// Its last KoD.
    pub kod_at: u64,
}

/// What [`Bucket::admit`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Within the limit.
    pub within: bool,
    /// Over it, for the first time since the client's last episode ended.
    pub new_episode: bool,
    /// A window of the client's episode closed with twice the requests of
    /// its first one (once per episode; the request itself may be within).
    pub sped_up: bool,
}

/// What becomes of a limited request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limited {
    /// Answered anyway.
    Leak,
    /// A KoD RATE.
    Kiss,
    /// Nothing.
    Drop,
}

impl Limits {
    /// The limiter is on.
    pub fn per_client(&self) -> bool {
        self.interval_ns != 0
    }

    /// `interval * burst`: how far ahead of now a bucket may run.
    pub fn burst_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(u64::from(self.burst))
    }

    /// The client `ip` belongs to.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(a) => ClientKey {
                family: 4,
                addr: u128::from(u32::from(a) & mask32(self.prefix_v4)),
            },
            IpAddr::V6(a) => ClientKey {
                family: 6,
                addr: u128::from(a) & mask128(self.prefix_v6),
            },
        }
    }

    /// 1 in `n` from the random number `r`, as `one_in()` in C.
    fn one_in(n: u32, r: u32) -> bool {
        n != 0 && r.is_multiple_of(n)
    }

    /// The global ceiling's bucket `tat` at `now`: the new `tat` if one
    /// more reply is within the ceiling, `None` if not.
    pub fn ceiling_step(&self, tat: u64, now: u64) -> Option<u64> {
        if self.ceiling_interval_ns == 0 {
            return Some(tat);
        }
        let burst = self
            .ceiling_interval_ns
            .saturating_mul(u64::from(self.ceiling_burst));
        // Further ahead than the burst: the clock was stepped back.
        let t = if tat > now.saturating_add(burst) {
            now
        } else {
            tat.max(now)
        };
        (t + self.ceiling_interval_ns - now <= burst).then_some(t + self.ceiling_interval_ns)
    }
}

fn mask32(bits: u8) -> u32 {
    match bits {
        0 => 0,
        b if b >= 32 => u32::MAX,
        b => u32::MAX << (32 - b),
    }
}

fn mask128(bits: u8) -> u128 {
    match bits {
        0 => 0,
        b if b >= 128 => u128::MAX,
        b => u128::MAX << (128 - b),
    }
}

impl Bucket {
    /// A client's first request at `now`: a full bucket, less this one.
    pub fn new(now: u64, limits: &Limits) -> Bucket {
        Bucket {
            tat: now + limits.interval_ns,
            last: now,
            win_start: 0,
            counts: 0,
            kod_at: now.wrapping_sub(limits.kod_gap_ns),
        }
    }

    /// One more request at `now`.
    pub fn admit(&mut self, now: u64, limits: &Limits) -> Outcome {
        // A bucket further ahead than its burst can only come from a clock
        // stepped back (a time server's clock is stepped now and then):
        // start it afresh rather than limit the client until the clock
        // catches up.
        if self.tat > now.saturating_add(limits.burst_ns()) {
            self.tat = now;
            self.win_start = 0;
            self.kod_at = now.wrapping_sub(limits.kod_gap_ns);
        }
        self.last = now;
        let mut out = Outcome {
            sped_up: self.count_in_window(now),
            ..Outcome::default()
        };
        let tat = self.tat.max(now);
        if tat + limits.interval_ns - now <= limits.burst_ns() {
            self.tat = tat + limits.interval_ns;
            // The episode, if any, ends once the bucket is half full.
            if self.tat - now <= limits.burst_ns() / 2 {
                self.win_start = 0;
            }
            out.within = true;
            return out;
        }
        out.new_episode = self.win_start == 0;
        if out.new_episode {
            self.win_start = now.max(1);
            self.counts = 1;
        }
        out
    }

    /// Counts a request of an episode in its window; true when a window
    /// closes with twice the first one's count (once per episode).
    fn count_in_window(&mut self, now: u64) -> bool {
        if self.win_start == 0 {
            return false;
        }
        let (n, base) = (self.counts as u32, (self.counts >> 32) as u32);
        if now.saturating_sub(self.win_start) < WINDOW_NS {
            self.counts = (u64::from(base) << 32) | u64::from(n.saturating_add(1));
            return false;
        }
        let (base, sped) = if base == 0 {
            (n.max(1), false)
        } else if base != SPED_UP && u64::from(n) >= 2 * u64::from(base) {
            (SPED_UP, true)
        } else {
            (base, false)
        };
        self.win_start = now.max(1);
        self.counts = (u64::from(base) << 32) | 1;
        sped
    }

    /// A limited request at `now`: leaked (draw `random[0]`), else a KoD
    /// (`kiss_ok`, the client's KoD gap past, draw `random[1]`), else
    /// dropped.
    pub fn limited(
        &mut self,
        now: u64,
        limits: &Limits,
        random: [u32; 2],
        kiss_ok: bool,
    ) -> Limited {
        if Limits::one_in(limits.leak, random[0]) {
            return Limited::Leak;
        }
        if kiss_ok
            && now.wrapping_sub(self.kod_at) >= limits.kod_gap_ns
            && Limits::one_in(limits.kod, random[1])
        {
            self.kod_at = now;
            return Limited::Kiss;
        }
        Limited::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits(interval_ms: u64, burst: u32) -> Limits {
        Limits {
            interval_ns: interval_ms * MS,
            burst,
            ..Limits::default()
        }
    }

    /// Requests at `every` ns for `n` requests, from `start`: how many
    /// were within.
    fn run(b: &mut Bucket, l: &Limits, start: u64, every: u64, n: u64) -> u64 {
        (0..n)
            .filter(|i| b.admit(start + i * every, l).within)
            .count() as u64
    }

    #[test]
    fn burst_then_one_per_interval() {
        let l = limits(100, 8);
        let mut b = Bucket::new(0, &l);
        // 7 more at the same instant fill the burst of 8; the 9th is over.
        assert_eq!(run(&mut b, &l, 0, 0, 7), 7);
        let o = b.admit(0, &l);
        assert!(!o.within && o.new_episode, "{o:?}");
        // Then one per 100 ms, for 10 s: all within.
        assert_eq!(run(&mut b, &l, 100 * MS, 100 * MS, 100), 100);
        // Twice as fast for 10 s: half of them within.
        let within = run(&mut b, &l, 10_100 * MS, 50 * MS, 200);
        assert!((99..=101).contains(&within), "{within}");
    }

    #[test]
    fn an_idle_client_gets_its_burst_back() {
        let l = limits(10, 4);
        let mut b = Bucket::new(0, &l);
        assert_eq!(run(&mut b, &l, 0, 0, 10), 3);
        assert_eq!(run(&mut b, &l, 40 * MS, 0, 10), 4);
    }

    #[test]
    fn a_client_that_speeds_up_is_counted_once() {
        let l = limits(100, 8);
        let count = |plan: &[(u64, u64)]| {
            let mut b = Bucket::new(0, &l);
            let mut t = 0;
            let (mut episodes, mut speedups) = (0, 0);
            for &(every, n) in plan {
                for _ in 0..n {
                    t += every;
                    let o = b.admit(t, &l);
                    episodes += u32::from(o.new_episode);
                    speedups += u32::from(o.sped_up);
                }
            }
            (episodes, speedups)
        };
        // 20 ms apart (over the limit) for 4 s, then 5 ms apart for 4 s.
        assert_eq!(count(&[(20 * MS, 200), (5 * MS, 800)]), (1, 1));
        // A steady flood, with the bursty gaps of a real sender: limited,
        // one episode, never counted as speeding up.
        assert_eq!(count(&[(MS / 10, 50), (5 * MS, 1)].repeat(2000)), (1, 0));
        // Within the limit: no episode at all.
        assert_eq!(count(&[(200 * MS, 100)]), (0, 0));
    }

    #[test]
    fn a_clock_stepped_back_does_not_limit_everyone() {
        let l = limits(100, 8);
        let mut b = Bucket::new(1_000_000 * MS, &l);
        for i in 0..8 {
            b.admit(1_000_000 * MS + i, &l);
        }
        // Ten seconds back: the client is not limited for ten seconds.
        assert!(b.admit(999_990 * MS, &l).within);
        assert!(b.admit(999_990 * MS, &l).within);
        let c = Limits {
            ceiling_interval_ns: 10,
            ceiling_burst: 3,
            ..Limits::default()
        };
        assert_eq!(c.ceiling_step(1_000_000, 500), Some(510));
    }

    #[test]
    fn leak_kod_and_drop() {
        let l = Limits {
            leak: 4,
            kod: 2,
            kod_gap_ns: 1000,
            ..Limits::default()
        };
        let mut b = Bucket::new(0, &l);
        assert_eq!(b.limited(10, &l, [8, 0], true), Limited::Leak);
        assert_eq!(b.limited(10, &l, [1, 0], true), Limited::Kiss);
        // The next KoD waits for the gap; meanwhile, dropped.
        assert_eq!(b.limited(500, &l, [1, 0], true), Limited::Drop);
        assert_eq!(b.limited(1010, &l, [1, 1], true), Limited::Drop);
        assert_eq!(b.limited(1010, &l, [1, 2], true), Limited::Kiss);
        assert_eq!(b.limited(5000, &l, [1, 2], false), Limited::Drop);
        let none = Limits {
            leak: 0,
            kod: 0,
            ..l
        };
        assert_eq!(b.limited(9000, &none, [0, 0], true), Limited::Drop);
    }

    #[test]
    fn keys_group_by_prefix() {
        let l = Limits {
            prefix_v4: 24,
            ..Limits::default()
        };
        let k = |s: &str| l.key(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("192.0.2.200"));
        assert_ne!(k("192.0.2.1"), k("192.0.3.1"));
        assert_eq!(k("2001:db8::1"), k("2001:db8::ffff:1"));
        assert_ne!(k("2001:db8::1"), k("2001:db8:0:1::1"));
        // A v4 and a v6 address with the same bits are different clients.
        assert_ne!(k("0.0.0.1"), k("::1"));
        assert_eq!(
            Limits::default().key("192.0.2.7".parse().unwrap()).addr,
            0xc000_0207
        );
        assert_eq!(mask32(0), 0);
        assert_eq!(mask128(128), u128::MAX);
    }

    #[test]
    fn ceiling() {
        let l = Limits {
            ceiling_interval_ns: 10,
            ceiling_burst: 3,
            ..Limits::default()
        };
        let mut tat = 0;
        let mut ok = 0;
        for _ in 0..10 {
            if let Some(t) = l.ceiling_step(tat, 100) {
                tat = t;
                ok += 1;
            }
        }
        assert_eq!(ok, 3);
        assert_eq!(l.ceiling_step(tat, 110), Some(140));
        assert_eq!(Limits::default().ceiling_step(5, 0), Some(5));
    }
}
