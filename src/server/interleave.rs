//! The interleaved-mode table: for replies to interleaved clients, our
//! receive timestamp (T2) → the precise time the reply left (RFC 9769).
//!
//! Fixed size (sized in config, 64 bytes a slot, allocated once at start,
//! never grown) and
//! shared by every worker, so a client finds its state whichever queue or
//! socket its next request arrives on. Lock-free: each slot is a seqlock
//! whose writers claim it with a compare-and-swap and give up rather than
//! wait, and whose readers retry nothing: a slot being written, or
//! overwritten since, reads as empty, and the client gets a basic reply.
//! Slots are chosen by a hash of T2, so a newer reply evicts whichever
//! older one shared its slot ("table full" also means "basic reply").
//!
//! Only requests whose origin carries our mark (`proto::ntp::interleave`)
//! touch it: basic clients never do.

use crate::proto::ntp::{NtpTimestamp, TxStore};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, fence};

/// One slot: a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU64,
    /// Our T2 (marked; never 0 once written).
    t2: AtomicU64,
    /// The client's folded address.
    client: AtomicU64,
    /// The reply's own transmit field (T3, as sent): which of the replies
    /// that carried this T2 a stamp belongs to.
    reply: AtomicU64,
    /// The precise transmit time (NTP, UTC); 0: not known (yet);
    /// [`POISON`]: two replies carried this T2 (see [`XleaveTable::record`]).
    tx: AtomicU64,
    /// The T2 of the last record that could not claim the slot (another
    /// worker was writing it): no entry of that T2 is given out, since the
    /// reply that carried it went unrecorded.
    contested: AtomicU64,
}

/// `tx` of a slot whose T2 was sent in two replies.
const POISON: u64 = u64::MAX;
/// Tries to claim a slot before a record gives up (the writers' critical
/// sections are a few stores).
const CLAIM_TRIES: usize = 64;

/// What is in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    t2: u64,
    client: u64,
    reply: u64,
    tx: u64,
}

impl Slot {
    fn read(&self) -> Option<Entry> {
        let s1 = self.seq.load(Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let e = Entry {
            t2: self.t2.load(Relaxed),
            client: self.client.load(Relaxed),
            reply: self.reply.load(Relaxed),
            tx: self.tx.load(Relaxed),
        };
        fence(Acquire);
        (self.seq.load(Relaxed) == s1).then_some(e)
    }

    /// Writes `f(current)` if the slot can be claimed at once and `f`
    /// wants to (returns `Some`); false if it was busy or `f` declined.
    fn update(&self, f: impl FnOnce(Entry) -> Option<Entry>) -> bool {
        let s = self.seq.load(Relaxed);
        if s & 1 == 1
            || self
                .seq
                .compare_exchange(s, s + 1, Acquire, Relaxed)
                .is_err()
        {
            return false;
        }
        // Claimed: no other writer until the release below.
        fence(Release);
        let cur = Entry {
            t2: self.t2.load(Relaxed),
            client: self.client.load(Relaxed),
            reply: self.reply.load(Relaxed),
            tx: self.tx.load(Relaxed),
        };
        let done = match f(cur) {
            Some(e) => {
                self.t2.store(e.t2, Relaxed);
                self.client.store(e.client, Relaxed);
                self.reply.store(e.reply, Relaxed);
                self.tx.store(e.tx, Relaxed);
                true
            }
            None => false,
        };
        self.seq.store(s + 2, Release);
        done
    }
}

/// Counts of what the table did, for the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableCounts {
    /// Replies recorded (awaiting or holding their transmit time).
    pub recorded: u64,
    /// Transmit times stored.
    pub stamped: u64,
    /// Interleaved replies given.
    pub hits: u64,
    /// Marked requests that found nothing (first exchange, evicted, lost
    /// stamp, spoofed origin): answered in basic mode.
    pub misses: u64,
}

impl TableCounts {
    /// Adds `o`.
    pub fn add(&mut self, o: TableCounts) {
        self.recorded += o.recorded;
        self.stamped += o.stamped;
        self.hits += o.hits;
        self.misses += o.misses;
    }

    /// The summary line (empty when interleaved mode saw nothing).
    pub fn line(&self) -> String {
        if self.recorded + self.hits + self.misses == 0 {
            return String::new();
        }
        format!(
            "  interleaved: {} replies, {} basic to interleaved clients; {} transmit times of {} replies recorded\n",
            self.hits, self.misses, self.stamped, self.recorded
        )
    }

    /// As `[recorded, stamped, hits, misses]`.
    pub fn to_array(self) -> [u64; 4] {
        [self.recorded, self.stamped, self.hits, self.misses]
    }

    /// The inverse of [`Self::to_array`].
    pub fn from_array(a: [u64; 4]) -> TableCounts {
        TableCounts {
            recorded: a[0],
            stamped: a[1],
            hits: a[2],
            misses: a[3],
        }
    }
}

/// The shared table. `slots` is a power of two.
pub struct XleaveTable {
    slots: Box<[Slot]>,
    mask: usize,
}

impl std::fmt::Debug for XleaveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XleaveTable")
            .field("slots", &self.slots.len())
            .finish()
    }
}

fn slot_of(t2: u64, mask: usize) -> usize {
    // The bits of T2 that vary fastest sit in the fraction; mix them all.
    let x = t2.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as usize & mask
}

impl XleaveTable {
    /// A table of `slots` entries, rounded up to a power of two (at least
    /// 1).
    pub fn new(slots: usize) -> XleaveTable {
        let n = slots.max(1).next_power_of_two();
        XleaveTable {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never: a table has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Records a reply that carried `t2` to `client`, its transmit time
    /// still unknown. False if it is not recorded (the client then gets a
    /// basic reply next time).
    ///
    /// A reply is told from another only by its T2, and an interleaved
    /// client only by the T2 it echoes and its address. Two replies with
    /// the same T2 (requests in one clock quantum from one address, e.g.
    /// behind a NAT, or a batch's shared fallback stamp) could not be told
    /// apart, neither when their stamps come back nor when their clients
    /// ask: the slot keeps a tombstone for that T2 and neither is ever
    /// given out. A record that cannot claim the slot at all marks its T2
    /// contested, with the same effect.
    ///
    /// `reply` is the reply's own transmit field (T3 as sent): a transmit
    /// stamp is stored only for the reply it names ([`Self::stamp`]), so
    /// the late stamp of an evicted reply never lands on a newer one that
    /// carried the same T2.
    pub fn record(&self, t2: NtpTimestamp, client: u64, reply: NtpTimestamp) -> bool {
        let bits = t2.to_bits();
        let slot = &self.slots[slot_of(bits, self.mask)];
        for _ in 0..CLAIM_TRIES {
            let mut recorded = false;
            let claimed = slot.update(|cur| {
                if cur.t2 == bits {
                    return Some(Entry {
                        t2: bits,
                        client: 0,
                        reply: 0,
                        tx: POISON,
                    });
                }
                recorded = true;
                Some(Entry {
                    t2: bits,
                    client,
                    reply: reply.to_bits(),
                    tx: 0,
                })
            });
            if claimed {
                return recorded;
            }
            std::hint::spin_loop();
        }
        slot.contested.store(bits, Release);
        false
    }

    /// Stores the transmit time of the reply recorded under `t2` whose own
    /// transmit field was `reply`, if it is still there and not yet
    /// stamped. False if it was evicted, replaced, poisoned or busy.
    pub fn stamp(&self, t2: NtpTimestamp, reply: NtpTimestamp, tx: NtpTimestamp) -> bool {
        self.slots[slot_of(t2.to_bits(), self.mask)].update(|e| {
            (e.t2 == t2.to_bits() && e.reply == reply.to_bits() && e.tx == 0).then_some(Entry {
                tx: tx.to_bits(),
                ..e
            })
        })
    }

    /// The transmit time of the reply that carried `t2` to `client`, once:
    /// the slot is emptied.
    pub fn take(&self, t2: NtpTimestamp, client: u64) -> Option<NtpTimestamp> {
        let bits = t2.to_bits();
        let s = &self.slots[slot_of(bits, self.mask)];
        let e = s.read()?;
        if e.t2 != bits || e.client != client || e.tx == 0 || e.tx == POISON {
            return None;
        }
        if s.contested.load(Acquire) == bits {
            return None;
        }
        let mut got = None;
        s.update(|cur| {
            (cur == e).then(|| {
                got = Some(NtpTimestamp::from_bits(cur.tx));
                Entry {
                    t2: 0,
                    client: 0,
                    reply: 0,
                    tx: 0,
                }
            })
        });
        got
    }

    /// A worker's view: a [`TxStore`] that counts.
    pub fn store(&self) -> Store<'_> {
        Store {
            table: self,
            counts: TableCounts::default(),
        }
    }
}

/// The table as one worker uses it, counting hits and misses.
#[derive(Debug)]
pub struct Store<'a> {
    table: &'a XleaveTable,
    /// What this worker saw.
    pub counts: TableCounts,
}

impl Store<'_> {
    /// See [`XleaveTable::record`].
    pub fn record(&mut self, t2: NtpTimestamp, client: u64, reply: NtpTimestamp) -> bool {
        let done = self.table.record(t2, client, reply);
        self.counts.recorded += u64::from(done);
        done
    }

    /// See [`XleaveTable::stamp`].
    pub fn stamp(&mut self, t2: NtpTimestamp, reply: NtpTimestamp, tx: NtpTimestamp) {
        self.counts.stamped += u64::from(self.table.stamp(t2, reply, tx));
    }
}

impl TxStore for Store<'_> {
    fn take(&mut self, t2: NtpTimestamp, client: u64) -> Option<NtpTimestamp> {
        let got = self.table.take(t2, client);
        if got.is_some() {
            self.counts.hits += 1;
        } else {
            self.counts.misses += 1;
        }
        got
    }
}

/// No table (basic mode only, or a queue without transmit stamps).
impl TxStore for Option<Store<'_>> {
    fn take(&mut self, t2: NtpTimestamp, client: u64) -> Option<NtpTimestamp> {
        self.as_mut()?.take(t2, client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply's own transmit field, for tests where one reply per T2.
    const R: NtpTimestamp = NtpTimestamp::from_bits(0x5555);

    fn ts(b: u64) -> NtpTimestamp {
        NtpTimestamp::from_bits(b)
    }

    #[test]
    fn record_stamp_take_once() {
        let t = XleaveTable::new(1000);
        assert_eq!(t.len(), 1024);
        assert!(t.record(ts(0xe9a0_0000_1234_5679), 7, R));
        // No transmit time yet: nothing to give.
        assert_eq!(t.take(ts(0xe9a0_0000_1234_5679), 7), None);
        assert!(t.stamp(ts(0xe9a0_0000_1234_5679), R, ts(0xe9a0_0000_2000_0000)));
        // Stamped once only.
        assert!(!t.stamp(ts(0xe9a0_0000_1234_5679), R, ts(0xe9a0_0000_3000_0000)));
        // Another client (spoofed origin): nothing.
        assert_eq!(t.take(ts(0xe9a0_0000_1234_5679), 8), None);
        assert_eq!(
            t.take(ts(0xe9a0_0000_1234_5679), 7),
            Some(ts(0xe9a0_0000_2000_0000))
        );
        // Given out once.
        assert_eq!(t.take(ts(0xe9a0_0000_1234_5679), 7), None);
    }

    #[test]
    fn a_full_table_evicts_and_answers_basic() {
        let t = XleaveTable::new(1);
        assert!(t.record(ts(0x1001), 1, R));
        t.stamp(ts(0x1001), R, ts(0x2000));
        // The one slot is taken by the next record: the first is lost.
        assert!(t.record(ts(0x3001), 2, R));
        assert_eq!(t.take(ts(0x1001), 1), None);
        // A late stamp for the evicted reply does not land on the new one.
        assert!(!t.stamp(ts(0x1001), R, ts(0x2000)));
        assert!(t.stamp(ts(0x3001), R, ts(0x4000)));
        assert_eq!(t.take(ts(0x3001), 2), Some(ts(0x4000)));
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_entry() {
        // Small enough that the threads keep colliding in slots.
        let t = std::sync::Arc::new(XleaveTable::new(64));
        let threads: Vec<_> = (0..2u64)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut got = 0u64;
                    for i in 1..200_000u64 {
                        // Each entry's tx is its t2 + 1 + client: a torn
                        // read, or one given to the wrong client, would
                        // break that.
                        let t2 = ts((i << 8) | (w << 1) | 1);
                        if t.record(t2, w, R) {
                            t.stamp(t2, R, ts(t2.to_bits() + 1 + w));
                        }
                        // Recent entries of this thread (the other one
                        // writes into the same slots meanwhile): for
                        // their own client, and for the other one.
                        for back in [1u64, 3] {
                            let probe = ts((i.saturating_sub(back) << 8) | (w << 1) | 1);
                            assert_eq!(t.take(probe, 1 - w), None, "given to the wrong client");
                            if let Some(tx) = t.take(probe, w) {
                                assert_eq!(tx.to_bits(), probe.to_bits() + 1 + w);
                                got += 1;
                            }
                        }
                    }
                    got
                })
            })
            .collect();
        let got: u64 = threads.into_iter().map(|th| th.join().unwrap()).sum();
        // Many probes find their entry (the other thread evicts some).
        assert!(got > 10_000, "{got}");
    }

    #[test]
    fn two_replies_with_the_same_t2_are_never_told_apart() {
        let t = XleaveTable::new(16);
        let t2 = ts(0xe9a0_0000_0000_0101);
        assert!(t.record(t2, 1, R));
        // The same T2 to another client (or the same address behind a
        // NAT) before the first was stamped: neither is kept, and a third
        // with that T2 does not revive the slot for a late stamp.
        assert!(!t.record(t2, 2, R));
        assert!(!t.record(t2, 3, R));
        assert!(!t.stamp(t2, R, ts(0xe9a0_0000_0000_2000)));
        for c in 1..=3 {
            assert_eq!(t.take(t2, c), None);
        }
        // The same once the first was stamped: the second reply cannot
        // take its place.
        let t2 = ts(0xe9a0_0000_0000_0303);
        assert!(t.record(t2, 1, R));
        assert!(t.stamp(t2, R, ts(0xe9a0_0000_0000_2000)));
        assert!(!t.record(t2, 1, R));
        assert!(!t.stamp(t2, R, ts(0xe9a0_0000_0000_3000)));
        assert_eq!(t.take(t2, 1), None);
        // The late stamp of an evicted reply does not land on a newer
        // reply that carried the same T2: it names its own reply.
        let t = XleaveTable::new(1);
        let (a, b) = (ts(0x7001), ts(0x7003));
        let t2 = ts(0xe9a0_0000_0000_0707);
        assert!(t.record(t2, 1, a));
        assert!(t.record(ts(0x9009), 5, R)); // evicts it
        assert!(t.record(t2, 1, b));
        assert!(!t.stamp(t2, a, ts(0xe9a0_0000_0000_2000)));
        assert!(t.stamp(t2, b, ts(0xe9a0_0000_0000_3000)));
        assert_eq!(t.take(t2, 1), Some(ts(0xe9a0_0000_0000_3000)));
        let t = XleaveTable::new(16);
        // A record that cannot claim its slot contests its T2.
        let t2 = ts(0xe9a0_0000_0000_0505);
        assert!(t.record(t2, 1, R));
        assert!(t.stamp(t2, R, ts(0xe9a0_0000_0000_2000)));
        let slot = &t.slots[slot_of(t2.to_bits(), t.mask)];
        slot.seq.fetch_add(1, Relaxed); // a writer holds it
        assert!(!t.record(t2, 2, R));
        slot.seq.fetch_add(1, Relaxed);
        assert_eq!(t.take(t2, 1), None);
    }
}
