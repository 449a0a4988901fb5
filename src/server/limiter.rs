//! The policy's state on the socket datapath, where no XDP program
//! decides: the rate limiter's client table, the global ceiling, and the
//! policy counters of both datapaths ([`PolicyCounts`]).
//!
//! The table is fixed-size and never grows: `clients` slots rounded up to
//! a power of two, in sets of [`WAYS`]; a new client takes the slot of its
//! set that was used least recently. Keys are hashed with
//! `std`'s SipHash under a key drawn at random when the table is made (so
//! for each start): a spoofer cannot aim many addresses at one set without
//! knowing it. (`std`'s `HashMap` would grow, and take a lock to share;
//! the XDP datapath uses the kernel's LRU hash map for the same job.)
//!
//! Workers share the table without locks: each field is an atomic, and a
//! request reads its slot, decides, and writes it back. Two workers that
//! update one client at once may let a request or two more through than
//! the bucket allows; never fewer, and never anything unsafe.

use crate::proto::policy::access::Action;
use crate::proto::policy::limit::{Bucket, ClientKey, Limits};
use crate::proto::policy::{Decision, Entry, KissCode, Policy, Verdict};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots per set.
pub const WAYS: usize = 4;
/// Compare-and-swap tries on the ceiling's bucket (`NTPX_CEILING_TRIES`).
const CEILING_TRIES: usize = 4;

/// What the policy did, counted: on the socket datapath by the workers,
/// on the XDP datapath by the program (its `kod_*` and `rl_*` counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyCounts {
    /// Kiss-o'-Death RATE replies sent.
    pub kod_rate: u64,
    /// Kiss-o'-Death DENY replies sent.
    pub kod_deny: u64,
    /// Requests over their client's limit.
    pub limited: u64,
    /// ... of which answered anyway (the leak).
    pub leaked: u64,
    /// Clients that went over their limit (once per episode).
    pub limited_clients: u64,
    /// Limited clients that went on to ask twice as fast.
    pub speedups: u64,
    /// Clients entered into the table.
    pub entered: u64,
    /// Requests the reverse-path check could not judge (its route lookup
    /// failed), answered unchecked.
    #[serde(default)]
    pub rp_unchecked: u64,
}

impl PolicyCounts {
    /// How many fields.
    pub const LEN: usize = 8;

    /// The fields in order.
    pub fn to_array(self) -> [u64; Self::LEN] {
        [
            self.kod_rate,
            self.kod_deny,
            self.limited,
            self.leaked,
            self.limited_clients,
            self.speedups,
            self.entered,
            self.rp_unchecked,
        ]
    }

    /// The inverse of [`Self::to_array`].
    pub fn from_array(a: [u64; Self::LEN]) -> PolicyCounts {
        PolicyCounts {
            kod_rate: a[0],
            kod_deny: a[1],
            limited: a[2],
            leaked: a[3],
            limited_clients: a[4],
            speedups: a[5],
            entered: a[6],
            rp_unchecked: a[7],
        }
    }

    /// Adds `o`.
    pub fn add(&mut self, o: PolicyCounts) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(o.to_array()) {
            *x += y;
        }
        *self = PolicyCounts::from_array(a);
    }

    /// Counts one decision (a KoD is counted when it is sent).
    pub fn count(&mut self, d: &Decision, new_client: bool) {
        self.entered += u64::from(new_client);
        if let Some(o) = d.outcome {
            self.limited += u64::from(!o.within);
            self.limited_clients += u64::from(o.new_episode);
            self.speedups += u64::from(o.sped_up);
        }
        self.leaked += u64::from(d.leaked);
    }

    /// Counts a KoD sent.
    pub fn kissed(&mut self, code: KissCode) {
        if code == KissCode::DENY {
            self.kod_deny += 1;
        } else {
            self.kod_rate += 1;
        }
    }

    /// The summary lines (empty when the policy did nothing).
    pub fn lines(&self) -> String {
        let mut s = String::new();
        if self.limited + self.kod_rate + self.kod_deny > 0 {
            s = format!(
                "  rate limited: {} requests from {} clients ({} of them sped up), {} leaked; KoD RATE {}, KoD DENY {}\n",
                self.limited,
                self.limited_clients,
                self.speedups,
                self.leaked,
                self.kod_rate,
                self.kod_deny
            );
        }
        if self.rp_unchecked > 0 {
            s.push_str(&format!(
                "  reverse path: {} requests unchecked: the route lookup failed (are net.ipv4.conf.lo.forwarding and net.ipv6.conf.lo.forwarding still 1? setting net.ipv4.ip_forward or net.ipv6.conf.all.forwarding resets them)\n",
                self.rp_unchecked
            ));
        }
        s
    }
}

/// One slot: the client's hashed key (0: empty) and its bucket.
#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    fields: [AtomicU64; 5],
}

impl Slot {
    fn load(&self) -> Bucket {
        let f = |i: usize| self.fields[i].load(Relaxed);
        Bucket {
            tat: f(0),
            last: f(1),
            win_start: f(2),
            counts: f(3),
            kod_at: f(4),
        }
    }

    fn store(&self, b: &Bucket) {
        for (a, v) in self
            .fields
            .iter()
            .zip([b.tat, b.last, b.win_start, b.counts, b.kod_at])
        {
            a.store(v, Relaxed);
        }
    }
}

/// The socket datapath's policy state, shared by its workers.
#[derive(Debug)]
pub struct Limiter {
    /// Swapped whole by a reload; loaded once per batch of requests
    /// ([`Limiter::current`]), without a lock.
    policy: arc_swap::ArcSwap<Policy>,
    slots: Box<[Slot]>,
    /// Slots ever taken: the table's fill (a slot is never emptied, only
    /// taken over by another client).
    filled: AtomicU64,
    hasher: RandomState,
    ceiling: AtomicU64,
}

impl Limiter {
    /// Empty state for `policy`, with a table of `policy.limits.clients`
    /// (rounded up to a power of two, at least one set), made even when
    /// the per-client limit is off so that a reload can turn it on (as
    /// the XDP program's table).
    pub fn new(policy: Policy) -> Limiter {
        let n = (policy.limits.clients as usize)
            .next_power_of_two()
            .max(WAYS);
        Limiter {
            policy: arc_swap::ArcSwap::from_pointee(policy),
            slots: (0..n).map(|_| Slot::default()).collect(),
            filled: AtomicU64::new(0),
            hasher: RandomState::new(),
            ceiling: AtomicU64::new(0),
        }
    }

    /// The policy now.
    pub fn policy(&self) -> Policy {
        Policy::clone(&self.policy.load())
    }

    /// The client table's fill: slots in use, and slots.
    pub fn fill(&self) -> (u64, u64) {
        (self.filled.load(Relaxed), self.slots.len() as u64)
    }

    /// Replaces the policy (a reload): the access lists and the limits;
    /// the table and its clients stay, so its size cannot change.
    pub fn set_policy(&self, policy: Policy) -> anyhow::Result<()> {
        if policy.limits.clients != self.policy.load().limits.clients {
            anyhow::bail!("[rate_limit] clients cannot change while ntpx serves (restart it)");
        }
        self.policy.store(std::sync::Arc::new(policy));
        Ok(())
    }

    fn hash(&self, k: ClientKey) -> u64 {
        // Never 0, which marks an empty slot.
        self.hasher.hash_one(k) | 1
    }

    /// The verdict on a request from `client` at `now_ns` (any clock that
    /// only moves forward), counted into `counts`. `random`: two fresh
    /// random numbers.
    pub fn decide(
        &self,
        client: IpAddr,
        now_ns: u64,
        random: [u32; 2],
        counts: &mut PolicyCounts,
    ) -> Verdict {
        self.decide_with(&self.current(), client, now_ns, random, counts)
    }

    /// The policy now: what a worker loads once per batch for
    /// [`Self::decide_with`] (a reload swaps it between batches).
    pub fn current(&self) -> arc_swap::Guard<std::sync::Arc<Policy>> {
        self.policy.load()
    }

    /// [`Self::decide`] under `policy` ([`Self::current`]).
    pub fn decide_with(
        &self,
        policy: &Policy,
        client: IpAddr,
        now_ns: u64,
        random: [u32; 2],
        counts: &mut PolicyCounts,
    ) -> Verdict {
        let limits = &policy.limits;
        let ceiling = || self.take_ceiling(limits, now_ns);
        let refused = policy.access.refuses(client);
        // An ignored source never takes a slot (as in the XDP program,
        // which drops it before its LRU map).
        if !limits.per_client() || (refused && policy.access.action == Action::Ignore) {
            let d = policy.decide(refused, now_ns, Entry::Off, ceiling, random, true);
            counts.count(&d, false);
            return d.verdict;
        }
        let h = self.hash(limits.key(client));
        // The set from the hash's other bits: its lowest is always 1 (a
        // set index from it would leave half the sets unused).
        let set = ((h >> 1) as usize & (self.slots.len() / WAYS - 1)) * WAYS;
        let ways = &self.slots[set..set + WAYS];
        let (d, new) = match ways.iter().find(|s| s.key.load(Relaxed) == h) {
            Some(slot) => {
                let mut b = slot.load();
                let d = policy.decide(refused, now_ns, Entry::Found(&mut b), ceiling, random, true);
                slot.store(&b);
                (d, false)
            }
            None => {
                // The least recently used slot of the set (an empty one
                // has never been used).
                let victim = ways
                    .iter()
                    .min_by_key(|s| (s.key.load(Relaxed) != 0, s.fields[1].load(Relaxed)))
                    .unwrap_or(&ways[0]);
                victim.store(&Bucket::new(now_ns, limits));
                // Of workers racing for one empty slot, one sees it empty.
                if victim.key.swap(h, Relaxed) == 0 {
                    self.filled.fetch_add(1, Relaxed);
                }
                let d = policy.decide(refused, now_ns, Entry::New, ceiling, random, true);
                (d, true)
            }
        };
        counts.count(&d, new);
        d.verdict
    }

    /// One reply from the global ceiling: false when there is none left.
    fn take_ceiling(&self, limits: &Limits, now: u64) -> bool {
        if limits.ceiling_interval_ns == 0 {
            return true;
        }
        // A few tries, as in the XDP program; a reply that cannot take
        // its place (the others keep winning) is not sent.
        for _ in 0..CEILING_TRIES {
            let old = self.ceiling.load(Relaxed);
            let Some(new) = limits.ceiling_step(old, now) else {
                return false;
            };
            if self
                .ceiling
                .compare_exchange(old, new, Relaxed, Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::drops::DropReason;
    use crate::proto::policy::access::{Access, Action, Prefixes};

    const MS: u64 = 1_000_000;

    fn limiter(limits: Limits) -> Limiter {
        Limiter::new(Policy {
            access: Access::default(),
            limits,
        })
    }

    #[test]
    fn a_flood_from_one_address_is_cut_to_about_the_leak() {
        let l = limiter(Limits::default());
        let mut c = PolicyCounts::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        // 10,000 requests/s for 10 s.
        let answered = (0..100_000u64)
            .filter(|i| {
                l.decide(victim, i * 100_000, [rng.u32(..), rng.u32(..)], &mut c) == Verdict::Answer
            })
            .count() as f64;
        // 64/s within the limit plus a quarter of the rest.
        let expected = 256.0 + 640.0 + (100_000.0 - 896.0) / 4.0;
        assert!(
            (answered / expected - 1.0).abs() < 0.03,
            "{answered} vs {expected}"
        );
        assert_eq!(c.limited_clients, 1);
        assert_eq!(c.entered, 1);
        assert_eq!(c.speedups, 0);
        // KoDs: at most one a second.
        assert!(c.kod_rate == 0, "counted only when sent");
        assert!(c.leaked > 20_000);
    }

    #[test]
    fn a_nat_of_well_behaved_clients_is_never_limited() {
        let l = limiter(Limits::default());
        let mut c = PolicyCounts::default();
        let nat: IpAddr = "198.51.100.7".parse().unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        // 2,000 clients polling every 64 s, at random moments: ~31/s, for
        // ten minutes.
        let mut times: Vec<u64> = (0..2000u64)
            .flat_map(|_| {
                let phase = rng.u64(..64_000 * MS);
                (0..10).map(move |k| phase + k * 64_000 * MS)
            })
            .collect();
        times.sort_unstable();
        for t in times {
            assert_eq!(l.decide(nat, t, [1, 1], &mut c), Verdict::Answer);
        }
        assert_eq!(c.limited, 0);
    }

    #[test]
    fn the_table_never_grows_and_evicts_the_idle() {
        let l = limiter(Limits {
            clients: 16,
            ..Limits::default()
        });
        let mut c = PolicyCounts::default();
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.decide(ip, u64::from(i) * MS, [1, 1], &mut c);
        }
        assert_eq!(l.slots.len(), 16);
        assert_eq!(c.entered, 10_000);
        assert_eq!(l.fill(), (16, 16));
    }

    #[test]
    fn access_and_ceiling() {
        let l = Limiter::new(Policy {
            access: Access {
                deny: Prefixes::new(&["192.0.2.0/24".parse().unwrap()]),
                allow: Prefixes::default(),
                action: Action::Deny,
            },
            limits: Limits {
                ceiling_interval_ns: MS,
                ceiling_burst: 2,
                ..Limits::default()
            },
        });
        let mut c = PolicyCounts::default();
        let v =
            |ip: &str, t: u64, c: &mut PolicyCounts| l.decide(ip.parse().unwrap(), t, [1, 1], c);
        assert_eq!(v("192.0.2.9", 0, &mut c), Verdict::Kiss(KissCode::DENY));
        assert_eq!(v("203.0.113.1", 0, &mut c), Verdict::Answer);
        assert_eq!(
            v("203.0.113.1", 0, &mut c),
            Verdict::Drop(DropReason::Ceiling)
        );
        assert_eq!(v("203.0.113.1", MS, &mut c), Verdict::Answer);
        let off = limiter(Limits {
            interval_ns: 0,
            ..Limits::default()
        });
        let before = c.entered;
        assert_eq!(
            off.decide("192.0.2.1".parse().unwrap(), 0, [1, 1], &mut c),
            Verdict::Answer
        );
        assert_eq!(c.entered, before, "no client entered when off");
    }

    #[test]
    fn a_reload_changes_the_limits_but_not_the_table() {
        let l = limiter(Limits {
            interval_ns: 0,
            ..Limits::default()
        });
        let mut c = PolicyCounts::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let answered = |l: &Limiter, c: &mut PolicyCounts| {
            (0..20)
                .filter(|_| l.decide(ip, 0, [1, 1], c) == Verdict::Answer)
                .count()
        };
        assert_eq!(answered(&l, &mut c), 20);
        assert_eq!(l.fill().0, 0, "no client entered while off");
        // On, with a burst of 4 and no leak: 4 of 20 at once.
        let tight = Limits {
            burst: 4,
            leak: 0,
            ..Limits::default()
        };
        let mut p = l.policy();
        p.limits = tight;
        l.set_policy(p.clone()).unwrap();
        assert_eq!(answered(&l, &mut c), 4);
        assert_eq!(l.fill().0, 1);
        p.limits.clients *= 2;
        let e = l.set_policy(p).unwrap_err().to_string();
        assert!(e.contains("clients cannot change"), "{e}");
        assert_eq!(l.policy().limits, tight, "the policy stays");
    }
}
