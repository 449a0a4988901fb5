//! Counters and latency histograms.
//!
//! Each worker counts into plain local fields (no atomics per packet) and
//! publishes them once per batch with relaxed stores. Its RX→TX service
//! times go into a local HdrHistogram, merged about once a second into a
//! shared one under `try_lock` — never blocking, never on the per-packet
//! path; if the control thread happens to hold the lock, the merge waits
//! for the next batch.

use crate::proto::drops::{COUNT, DropReason};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Highest service time the histograms track (60 s, in ns).
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Merge the local histogram into the shared one this often.
const MERGE_EVERY_NS: u64 = 500_000_000;

/// A new, empty service-time histogram (ns, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here
    // would be a bug caught by every test.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// One worker's published numbers.
#[derive(Debug)]
pub struct Published {
    rx: AtomicU64,
    tx: AtomicU64,
    partial_checksum: AtomicU64,
    drops: [AtomicU64; COUNT],
    hist: Mutex<Histogram<u64>>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            partial_checksum: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            hist: Mutex::new(new_histogram()),
        }
    }
}

/// A worker's own counters; lives on the worker thread.
#[derive(Debug)]
pub struct WorkerStats {
    rx: u64,
    tx: u64,
    partial_checksum: u64,
    drops: [u64; COUNT],
    hist: Histogram<u64>,
    last_merge_ns: u64,
    published: std::sync::Arc<Published>,
}

impl WorkerStats {
    /// Counters that publish into `published`.
    pub fn new(published: std::sync::Arc<Published>) -> Self {
        WorkerStats {
            rx: 0,
            tx: 0,
            partial_checksum: 0,
            drops: [0; COUNT],
            hist: new_histogram(),
            last_merge_ns: 0,
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

    /// Counts dropped packets.
    #[inline]
    pub fn drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }

    /// Records one RX→TX service time.
    #[inline]
    pub fn service_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Publishes the counters (every batch) and, at most every half second,
    /// merges the histogram. `now_ns` is any monotonic-enough time in ns.
    pub fn publish(&mut self, now_ns: u64) {
        let p = &*self.published;
        p.rx.store(self.rx, Relaxed);
        p.tx.store(self.tx, Relaxed);
        p.partial_checksum.store(self.partial_checksum, Relaxed);
        for (a, v) in p.drops.iter().zip(self.drops) {
            a.store(v, Relaxed);
        }
        if now_ns.wrapping_sub(self.last_merge_ns) >= MERGE_EVERY_NS && !self.hist.is_empty() {
            self.flush_histogram();
            self.last_merge_ns = now_ns;
        }
    }

    /// Merges the histogram now if the lock is free (also on exit).
    pub fn flush_histogram(&mut self) {
        if let Ok(mut shared) = self.published.hist.try_lock() {
            // Same bounds on both sides, so `add` cannot fail or allocate.
            if shared.add(&self.hist).is_ok() {
                self.hist.reset();
            }
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
    /// RX→TX service time (ns), all workers merged.
    pub service: Histogram<u64>,
}

impl Totals {
    /// Sums the workers' published numbers.
    pub fn collect(workers: &[std::sync::Arc<Published>]) -> Totals {
        let mut t = Totals {
            rx: 0,
            tx: 0,
            partial_checksum: 0,
            drops: [0; COUNT],
            service: new_histogram(),
        };
        for w in workers {
            t.rx += w.rx.load(Relaxed);
            t.tx += w.tx.load(Relaxed);
            t.partial_checksum += w.partial_checksum.load(Relaxed);
            for (d, a) in t.drops.iter_mut().zip(&w.drops) {
                *d += a.load(Relaxed);
            }
            let h = w.hist.lock().unwrap_or_else(|e| e.into_inner());
            let _ = t.service.add(&*h);
        }
        t
    }

    /// Counts `n` requests that the kernel dropped for `reason` before a
    /// worker saw them: requests, and drops.
    pub fn add_kernel(&mut self, reason: DropReason, n: u64) {
        self.rx += n;
        self.drops[reason as usize] += n;
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
        s.push_str(&percentile_table("RX->TX service time", &self.service));
        s
    }
}

/// A percentile table (p50 … max) of a nanosecond histogram.
pub fn percentile_table(title: &str, h: &Histogram<u64>) -> String {
    let mut s = format!("{title} ({} samples)\n", h.len());
    if h.is_empty() {
        return s;
    }
    for (label, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ] {
        let _ = writeln!(s, "  {label:<7} {}", fmt_ns(h.value_at_quantile(q)));
    }
    let _ = writeln!(s, "  {:<7} {}", "max", fmt_ns(h.max()));
    s
}

/// Nanoseconds with a readable unit.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
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
            wa.service_ns(ns * 1000);
        }
        wa.publish(MERGE_EVERY_NS);
        wb.publish(MERGE_EVERY_NS);
        let t = Totals::collect(&[a, b]);
        assert_eq!((t.rx, t.tx, t.dropped()), (15, 13, 2));
        assert_eq!(t.drops[DropReason::NtpMode as usize], 2);
        assert_eq!(t.service.len(), 100);
        let p50 = t.service.value_at_quantile(0.5);
        assert!((49_900..=50_100).contains(&p50), "{p50}");
        assert!(t.summary().contains("ntp_mode"));
        assert!(t.line(&t, 1.0).contains("rx 0/s"));
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

    #[test]
    fn formatting() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1500), "1.5us");
        assert_eq!(fmt_ns(2_500_000), "2.50ms");
    }
}
