//! Counters and latency histograms.
//!
//! Each worker counts into plain local fields (no atomics per packet) and
//! publishes them once per batch with relaxed stores. Its RX→TX service
//! times go into a histogram of its own. About every half second it hands
//! that whole histogram over and carries on with an empty one: one pointer
//! swap and two lock-free queue operations on the packet thread, nothing
//! else. The control thread, when it next collects the totals, merges the
//! handed-over histogram into the worker's running total, resets it (the
//! 27,648 buckets' worth of memory traffic, off the packet path) and
//! queues it back as the worker's next empty one. Two histograms circulate
//! per worker; when the control thread has not returned one yet, the worker
//! simply keeps recording into the one it has.

use crate::proto::drops::{COUNT, DropReason};
use crate::proto::ntp::mix::{self, ClientMix};
use crate::report::{fmt_ns, new_histogram, quantile_list};
use crate::server::interleave::TableCounts;
use crate::server::limiter::PolicyCounts;
use crate::sys::clock::StampSource;
use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Hand the histogram over this often.
const HAND_OVER_EVERY_NS: u64 = 500_000_000;
/// Room in each hand-over queue: the two circulating histograms, and one
/// more that a worker may make on exit.
const HAND_OVER_SLOTS: usize = 3;

type Hist = Box<Histogram<u64>>;

/// Room for sampled sources between two turns of the control loop (50 ms:
/// 80,000 samples/s, 5 million requests/s per worker at 1 in 64).
const TALKER_SLOTS: usize = 4096;

/// One worker's published numbers.
#[derive(Debug)]
pub struct Published {
    /// The worker's name in metrics: its thread's, less `ntpx-` (`q0`,
    /// `s1`).
    name: String,
    /// Counts the worker's turns of its loop (busy, spinning or waking
    /// from an idle wait): the watchdog's sign of life.
    beat: AtomicU64,
    /// Set by the watchdog while the worker is stalled (its queue left to
    /// the kernel), and how many times that happened.
    stalled: AtomicU64,
    stalls: AtomicU64,
    rx: AtomicU64,
    tx: AtomicU64,
    partial_checksum: AtomicU64,
    drops: [AtomicU64; COUNT],
    /// The interleaved-mode table's counts: recorded, stamped, hits, misses.
    xleave: [AtomicU64; 4],
    /// The policy's counts ([`PolicyCounts::to_array`]).
    policy: [AtomicU64; PolicyCounts::LEN],
    /// Replies with time by the source of their receive stamp
    /// ([`StampSource`] order).
    stamps: [AtomicU64; StampSource::COUNT],
    /// The client mix (socket datapath: on the XDP datapath the program
    /// counts it), published with the histogram.
    kinds: [AtomicU64; mix::KINDS],
    polls: [AtomicU64; mix::POLLS],
    /// Sampled sources for the top talkers (socket datapath), taken by
    /// the control thread; a full queue drops samples.
    talkers: ArrayQueue<std::net::IpAddr>,
    /// Histograms the worker has handed over, to be merged.
    full: ArrayQueue<Hist>,
    /// Emptied histograms, for the worker to take.
    spare: ArrayQueue<Hist>,
    /// Everything merged so far (touched by collecting threads only).
    merged: Mutex<Histogram<u64>>,
}

impl Default for Published {
    fn default() -> Self {
        let spare = ArrayQueue::new(HAND_OVER_SLOTS);
        // Cannot fail: the queue is empty.
        let _ = spare.push(Box::new(new_histogram()));
        Published {
            name: String::new(),
            beat: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            partial_checksum: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            xleave: std::array::from_fn(|_| AtomicU64::new(0)),
            policy: std::array::from_fn(|_| AtomicU64::new(0)),
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            kinds: std::array::from_fn(|_| AtomicU64::new(0)),
            polls: std::array::from_fn(|_| AtomicU64::new(0)),
            talkers: ArrayQueue::new(TALKER_SLOTS),
            full: ArrayQueue::new(HAND_OVER_SLOTS),
            spare,
            merged: Mutex::new(new_histogram()),
        }
    }
}

impl Published {
    /// The worker's last sign of life (see [`WorkerStats::publish`]); it
    /// changes at least every idle wait while the worker's loop turns.
    pub fn beat(&self) -> u64 {
        self.beat.load(Relaxed)
    }

    /// The watchdog's verdict: stalled (its queue left to the kernel) or
    /// not; each stall is counted.
    pub fn set_stalled(&self, stalled: bool) {
        let was = self.stalled.swap(u64::from(stalled), Relaxed) != 0;
        if stalled && !was {
            self.stalls.fetch_add(1, Relaxed);
        }
    }

    /// A worker's numbers, under `name` in metrics.
    pub fn named(name: String) -> Published {
        Published {
            name,
            ..Published::default()
        }
    }

    /// Merges the histograms handed over so far into the running total
    /// and returns the emptied ones to the worker.
    fn merge_pending(&self, merged: &mut Histogram<u64>) {
        while let Some(mut h) = self.full.pop() {
            // Same bounds on both sides, so `add` cannot fail.
            let _ = merged.add(&*h);
            h.reset();
            // Cannot fail: at most HAND_OVER_SLOTS histograms exist.
            let _ = self.spare.push(h);
        }
    }

    /// [`Self::merge_pending`], then adds the running total to `into`.
    fn merge_into(&self, into: &mut Histogram<u64>) {
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        self.merge_pending(&mut merged);
        let _ = into.add(&*merged);
    }
}

/// A worker's own counters; lives on the worker thread.
#[derive(Debug)]
pub struct WorkerStats {
    rx: u64,
    tx: u64,
    partial_checksum: u64,
    drops: [u64; COUNT],
    xleave: TableCounts,
    /// The policy's counts (socket datapath; KoDs on both).
    pub policy: PolicyCounts,
    /// The client mix (socket datapath).
    pub clients: ClientMix,
    stamps: [u64; StampSource::COUNT],
    hist: Hist,
    last_hand_over_ns: u64,
    last_mix_ns: u64,
    beats: u64,
    published: std::sync::Arc<Published>,
}

impl WorkerStats {
    /// A sign of life for the watchdog: the loop turned (a plain store,
    /// no read-modify-write; also called while the worker spins idle).
    #[inline]
    pub fn beat(&mut self) {
        self.beats = self.beats.wrapping_add(1);
        self.published.beat.store(self.beats, Relaxed);
    }

    /// Counters that publish into `published`.
    pub fn new(published: std::sync::Arc<Published>) -> Self {
        WorkerStats {
            rx: 0,
            tx: 0,
            partial_checksum: 0,
            drops: [0; COUNT],
            xleave: TableCounts::default(),
            policy: PolicyCounts::default(),
            // The worker's first histogram; the spare waits in `published`.
            hist: Box::new(new_histogram()),
            last_hand_over_ns: 0,
            last_mix_ns: 0,
            beats: 0,
            clients: ClientMix::default(),
            stamps: [0; StampSource::COUNT],
            published,
        }
    }

    /// Counts received requests.
    #[inline]
    pub fn rx(&mut self, n: u64) {
        self.rx += n;
    }

    /// Counts sent replies.
    #[inline]
    pub fn tx(&mut self, n: u64) {
        self.tx += n;
    }

    /// Counts a request answered although its UDP checksum was in the
    /// partial form (a veth peer's offload).
    #[inline]
    pub fn partial_checksum(&mut self) {
        self.partial_checksum += 1;
    }

    /// Adds what the interleaved-mode table did for this worker.
    #[inline]
    pub fn xleave(&mut self, c: TableCounts) {
        self.xleave.add(c);
    }

    /// Counts dropped packets.
    #[inline]
    pub fn drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Samples a request's source for the top talkers (one in
    /// [`SAMPLE`](crate::server::talkers::SAMPLE), drawn by the caller):
    /// no allocation, dropped when the queue is full.
    #[inline]
    pub fn sample_talker(&mut self, src: std::net::IpAddr) {
        let _ = self.published.talkers.push(src);
    }

    /// Records one reply with time: its RX→TX service time, and where
    /// its receive stamp came from.
    #[inline]
    pub fn service_ns(&mut self, ns: u64, stamp: StampSource) {
        self.hist.saturating_record(ns.max(1));
        self.stamps[stamp as usize] += 1;
    }

    /// Publishes the counters (every batch) and, at most every half second,
    /// hands the histogram over. `now_ns` is any monotonic-enough time in
    /// ns.
    pub fn publish(&mut self, now_ns: u64) {
        // Hand over before storing the counters: a reader that sees this
        // batch's counters then also finds, when a hand-over was due, the
        // histogram with their service times.
        if now_ns.wrapping_sub(self.last_hand_over_ns) >= HAND_OVER_EVERY_NS
            && !self.hist.is_empty()
        {
            // No spare back yet (the control thread returns them within a
            // tick): keep recording into this one.
            if let Some(empty) = self.published.spare.pop() {
                let full = std::mem::replace(&mut self.hist, empty);
                // At most HAND_OVER_SLOTS histograms exist, so the push
                // succeeds; should it not, the samples stay here.
                if let Err(full) = self.published.full.push(full) {
                    let empty = std::mem::replace(&mut self.hist, full);
                    let _ = self.published.spare.push(empty);
                }
            }
            self.last_hand_over_ns = now_ns;
        }
        // The client mix, every half second too (96 stores).
        if now_ns.wrapping_sub(self.last_mix_ns) >= HAND_OVER_EVERY_NS {
            self.last_mix_ns = now_ns;
            let p = &*self.published;
            for (a, v) in p.kinds.iter().zip(self.clients.kinds) {
                a.store(v, Relaxed);
            }
            for (a, v) in p.polls.iter().zip(self.clients.polls) {
                a.store(v, Relaxed);
            }
        }
        self.beat();
        let p = &*self.published;
        p.rx.store(self.rx, Relaxed);
        p.tx.store(self.tx, Relaxed);
        p.partial_checksum.store(self.partial_checksum, Relaxed);
        for (a, v) in p.drops.iter().zip(self.drops) {
            a.store(v, Relaxed);
        }
        for (a, v) in p.xleave.iter().zip(self.xleave.to_array()) {
            a.store(v, Relaxed);
        }
        for (a, v) in p.policy.iter().zip(self.policy.to_array()) {
            a.store(v, Relaxed);
        }
        for (a, v) in p.stamps.iter().zip(self.stamps) {
            a.store(v, Relaxed);
        }
    }

    /// Hands the histogram over for good (the worker is stopping): with a
    /// spare if one is back, else with a new one (an allocation, once).
    pub fn flush_histogram(&mut self) {
        if self.hist.is_empty() {
            return;
        }
        let empty = self
            .published
            .spare
            .pop()
            .unwrap_or_else(|| Box::new(new_histogram()));
        let full = std::mem::replace(&mut self.hist, empty);
        if let Err(full) = self.published.full.push(full) {
            // No room (cannot happen with one worker per `Published`):
            // keep the samples rather than lose them.
            self.hist = full;
        }
    }
}

/// What the kernel counted about requests no worker saw: the XDP
/// program's own drops and the AF_XDP sockets' ring drops (XDP datapath),
/// or the drops on the socket (socket datapath). Added to the workers'
/// counters so that every request for the server shows, live, under
/// requests and a reason.
pub trait KernelCounts: Send + Sync {
    /// Adds the counts to `totals` with [`Totals::add_kernel`].
    fn add_to(&self, totals: &mut Totals);
}

/// The sources of the server's numbers: the workers' published counters
/// and the kernel's. The periodic stats line, the
/// stats socket and the exit summary all read [`Collector::totals`].
pub struct Collector {
    workers: Vec<std::sync::Arc<Published>>,
    kernel: Option<Box<dyn KernelCounts>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("workers", &self.workers.len())
            .field("kernel", &self.kernel.is_some())
            .finish()
    }
}

impl Collector {
    /// Sums `workers`, plus what `kernel` counted.
    pub fn new(
        workers: Vec<std::sync::Arc<Published>>,
        kernel: Option<Box<dyn KernelCounts>>,
    ) -> Collector {
        Collector { workers, kernel }
    }

    /// Takes the workers' sampled sources (the control thread).
    pub fn drain_talkers(&self, mut f: impl FnMut(std::net::IpAddr)) {
        for w in &self.workers {
            while let Some(ip) = w.talkers.pop() {
                f(ip);
            }
        }
    }

    /// Merges the histograms the workers have handed over and gives them
    /// back emptied: the control thread calls this every tick, so that a
    /// worker always finds a spare when its next hand-over is due.
    pub fn merge_histograms(&self) {
        for w in &self.workers {
            let mut merged = w.merged.lock().unwrap_or_else(|e| e.into_inner());
            w.merge_pending(&mut merged);
        }
    }

    /// Everything counted so far.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::collect(&self.workers);
        if let Some(k) = &self.kernel {
            k.add_to(&mut t);
        }
        t
    }
}

/// Everything all workers have counted, summed.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Requests received.
    pub rx: u64,
    /// Replies sent.
    pub tx: u64,
    /// Requests answered whose UDP checksum was in the partial form.
    pub partial_checksum: u64,
    /// Drops by reason (indexed by `DropReason as usize`).
    pub drops: [u64; COUNT],
    /// Interleaved mode: replies recorded, stamped, given (hits), and
    /// marked requests answered in basic mode (misses).
    pub xleave: TableCounts,
    /// What the access lists and rate limits did (workers and XDP).
    pub policy: PolicyCounts,
    /// RX→TX service time (ns), all workers merged.
    pub service: Histogram<u64>,
    /// The client mix (the program's or the socket workers').
    pub clients: ClientMix,
    /// Replies with time by the source of their receive stamp
    /// ([`StampSource`] order): the workers' and the XDP program's.
    pub stamps: [u64; StampSource::COUNT],
    /// The fill of the server's tables.
    pub tables: Vec<TableFill>,
    /// The same numbers by where they were counted, for metrics.
    pub breakdown: Breakdown,
}

/// How full one of the server's fixed-size tables is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFill {
    /// Its name in metrics (`rate_limit_clients`).
    pub name: &'static str,
    /// Entries in use.
    pub entries: u64,
    /// Entries it holds at most.
    pub capacity: u64,
}

/// One worker's numbers in the [`Breakdown`].
#[derive(Clone, Debug, Default)]
pub struct WorkerTotals {
    /// Its name (see [`Published::named`]).
    pub name: String,
    /// Requests it received.
    pub rx: u64,
    /// Replies it sent.
    pub tx: u64,
    /// Stalled now (the watchdog left its queue to the kernel).
    pub stalled: bool,
    /// Times it stalled.
    pub stalls: u64,
}

/// Where the totals were counted: each worker, the XDP program, each
/// AF_XDP socket.
#[derive(Clone, Debug, Default)]
pub struct Breakdown {
    /// Each worker, in start order.
    pub workers: Vec<WorkerTotals>,
    /// Replies the XDP program sent (time and Kiss-o'-Death).
    pub xdp_replies: u64,
    /// The XDP program's counters, by name (empty on the socket
    /// datapath).
    pub xdp_events: Vec<(&'static str, u64)>,
    /// Each AF_XDP socket's kernel statistics: its queue, and its
    /// counters by name.
    pub sockets: Vec<(u32, Vec<(&'static str, u64)>)>,
}

impl Totals {
    /// Sums the workers' published numbers.
    pub fn collect(workers: &[std::sync::Arc<Published>]) -> Totals {
        let mut t = Totals {
            rx: 0,
            tx: 0,
            partial_checksum: 0,
            drops: [0; COUNT],
            xleave: TableCounts::default(),
            policy: PolicyCounts::default(),
            service: new_histogram(),
            breakdown: Breakdown::default(),
            clients: ClientMix::default(),
            stamps: [0; StampSource::COUNT],
            tables: Vec::new(),
        };
        for w in workers {
            t.clients.add(&ClientMix {
                kinds: w.kinds.each_ref().map(|a| a.load(Relaxed)),
                polls: w.polls.each_ref().map(|a| a.load(Relaxed)),
            });
            t.breakdown.workers.push(WorkerTotals {
                name: w.name.clone(),
                rx: w.rx.load(Relaxed),
                tx: w.tx.load(Relaxed),
                stalled: w.stalled.load(Relaxed) != 0,
                stalls: w.stalls.load(Relaxed),
            });
            t.xleave.add(TableCounts::from_array(
                w.xleave.each_ref().map(|a| a.load(Relaxed)),
            ));
            t.policy.add(PolicyCounts::from_array(
                w.policy.each_ref().map(|a| a.load(Relaxed)),
            ));
            for (s, a) in t.stamps.iter_mut().zip(&w.stamps) {
                *s += a.load(Relaxed);
            }
            t.rx += w.rx.load(Relaxed);
            t.tx += w.tx.load(Relaxed);
            t.partial_checksum += w.partial_checksum.load(Relaxed);
            for (d, a) in t.drops.iter_mut().zip(&w.drops) {
                *d += a.load(Relaxed);
            }
            w.merge_into(&mut t.service);
        }
        t
    }

    /// Counts `n` requests that the kernel dropped for `reason` before a
    /// worker saw them: requests, and drops.
    pub fn add_kernel(&mut self, reason: DropReason, n: u64) {
        self.rx += n;
        self.drops[reason as usize] += n;
    }

    /// Counts `n` requests answered before any worker saw them (in the
    /// XDP program), `partial` of them with a partial UDP checksum: requests
    /// and replies.
    pub fn add_kernel_replies(&mut self, n: u64, partial: u64) {
        self.rx += n;
        self.tx += n;
        self.partial_checksum += partial;
    }

    /// Counts `n` replies that the driver dropped after the XDP program
    /// sent them: not sent after all, and dropped.
    pub fn add_driver_tx_errors(&mut self, n: u64) {
        let n = n.min(self.tx);
        self.tx -= n;
        self.drops[DropReason::XdpTxError as usize] += n;
    }

    /// Adds `n` service times of `ns` each (clamped to the histogram's
    /// range).
    pub fn add_service(&mut self, ns: u64, n: u64) {
        let v = ns.clamp(self.service.low(), self.service.high());
        // In range by the clamp, so this cannot fail.
        let _ = self.service.record_n(v, n);
    }

    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The non-zero drop counters as `reason=n` pairs.
    pub fn drop_list(&self) -> String {
        let mut s = String::new();
        for r in DropReason::ALL {
            let n = self.drops[*r as usize];
            if n > 0 {
                let _ = write!(s, " {}={}", r.label(), n);
            }
        }
        s
    }

    /// One line for the periodic log: rates since `prev` over `secs`.
    pub fn line(&self, prev: &Totals, secs: f64) -> String {
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs.max(1e-9);
        format!(
            "rx {:.0}/s tx {:.0}/s drop {:.0}/s | total rx {} tx {} drop {}{} | service p50 {} p99 {}",
            rate(self.rx, prev.rx),
            rate(self.tx, prev.tx),
            rate(self.dropped(), prev.dropped()),
            self.rx,
            self.tx,
            self.dropped(),
            if self.dropped() > 0 {
                format!(" ({} )", self.drop_list().trim_start())
            } else {
                String::new()
            },
            fmt_ns(self.service.value_at_quantile(0.5)),
            fmt_ns(self.service.value_at_quantile(0.99)),
        )
    }

    /// The multi-line summary printed on exit.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "requests {}  replies {}  dropped {}\n",
            self.rx,
            self.tx,
            self.dropped()
        );
        for r in DropReason::ALL {
            let n = self.drops[*r as usize];
            if n > 0 {
                let _ = writeln!(s, "  drop {:<20} {n}", r.label());
            }
        }
        if self.partial_checksum > 0 {
            let _ = writeln!(
                s,
                "  answered with a partial UDP checksum (veth peer's offload): {}",
                self.partial_checksum
            );
        }
        s.push_str(&self.xleave.line());
        s.push_str(&self.policy.lines());
        s.push_str(&quantile_list("RX->TX service time", &self.service));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_publish_and_sum() {
        let a = Arc::new(Published::default());
        let b = Arc::new(Published::default());
        let mut wa = WorkerStats::new(a.clone());
        let mut wb = WorkerStats::new(b.clone());
        wa.rx(10);
        wa.tx(8);
        wa.drop(DropReason::NtpMode, 2);
        wb.rx(5);
        wb.tx(5);
        for ns in 1..=100 {
            wa.service_ns(ns * 1000, StampSource::Xdp);
        }
        wa.publish(HAND_OVER_EVERY_NS);
        wb.publish(HAND_OVER_EVERY_NS);
        let t = Totals::collect(&[a, b]);
        assert_eq!((t.rx, t.tx, t.dropped()), (15, 13, 2));
        assert_eq!(t.drops[DropReason::NtpMode as usize], 2);
        assert_eq!(t.service.len(), 100);
        let p50 = t.service.value_at_quantile(0.5);
        assert!((49_900..=50_100).contains(&p50), "{p50}");
        assert!(t.summary().contains("ntp_mode"));
        assert!(t.line(&t, 1.0).contains("rx 0/s"));
    }

    /// The hand-over loses nothing: rounds where the collector does not
    /// come (the worker keeps its histogram), rounds where it does, and
    /// the final flush.
    #[test]
    fn histograms_handed_over_lose_no_sample() {
        let p = Arc::new(Published::default());
        let mut w = WorkerStats::new(p.clone());
        let mut now = 0;
        let mut recorded = 0u64;
        for round in 0..20u64 {
            for k in 0..=round {
                w.service_ns(1_000 + k, StampSource::Worker);
                recorded += 1;
            }
            now += HAND_OVER_EVERY_NS;
            w.publish(now);
            if round % 3 == 0 {
                assert_eq!(Totals::collect(std::slice::from_ref(&p)).service.len(), {
                    // Everything but what the worker still holds.
                    recorded - w.hist.len()
                });
            }
        }
        // At most two histograms ever circulated (one with the worker).
        assert!(p.full.len() + p.spare.len() <= 1);
        w.service_ns(5, StampSource::Worker);
        w.flush_histogram();
        assert!(w.hist.is_empty());
        let t = Totals::collect(std::slice::from_ref(&p));
        assert_eq!(t.service.len(), recorded + 1);
        assert_eq!(t.service.min(), 5);
        // Collecting again counts nothing twice.
        assert_eq!(Totals::collect(&[p]).service.len(), recorded + 1);
    }

    /// With the control thread merging every tick, every hand-over finds a
    /// spare: the worker never holds more than half a second of samples.
    #[test]
    fn merged_every_tick_hands_over_every_time() {
        let p = Arc::new(Published::default());
        let c = Collector::new(vec![p.clone()], None);
        let mut w = WorkerStats::new(p.clone());
        for round in 1..=10u64 {
            w.service_ns(round * 1_000, StampSource::Worker);
            w.publish(round * HAND_OVER_EVERY_NS);
            assert!(w.hist.is_empty(), "round {round}: handed over");
            c.merge_histograms();
            assert_eq!(p.full.len(), 0);
            assert_eq!(p.spare.len(), 1);
        }
        assert_eq!(c.totals().service.len(), 10);
    }

    #[test]
    fn kernel_counts_are_requests_and_drops() {
        struct Ring;
        impl KernelCounts for Ring {
            fn add_to(&self, t: &mut Totals) {
                t.add_kernel(DropReason::RxRingFull, 7);
            }
        }
        let a = Arc::new(Published::default());
        let mut w = WorkerStats::new(a.clone());
        w.rx(10);
        w.tx(10);
        w.publish(0);
        let t = Collector::new(vec![a], Some(Box::new(Ring))).totals();
        assert_eq!((t.rx, t.tx, t.dropped()), (17, 10, 7));
        assert!(
            t.line(&Totals::collect(&[]), 1.0)
                .contains("rx_ring_full=7")
        );
    }
}
