//! Live numbers a generator thread publishes for the progress line: plain
//! counters with relaxed atomics, written a few times a second, never per
//! packet.

use super::tally::Tally;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One thread's running totals (all steps).
#[derive(Debug, Default)]
pub struct Live {
    sent: AtomicU64,
    answered: AtomicU64,
    rejected: AtomicU64,
    /// p99 of the current step's round-trip time (ns).
    rtt_p99: AtomicU64,
    step: AtomicU64,
}

/// A snapshot of [`Live`] (summed over threads).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LiveView {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (any outcome but lost).
    pub answered: u64,
    /// Frames rejected.
    pub rejected: u64,
    /// Highest p99 RTT among threads (ns).
    pub rtt_p99: u64,
    /// Step the slowest thread is in.
    pub step: u64,
}

impl Live {
    /// Publishes a thread's tallies.
    pub fn publish(&self, tallies: &[Tally], step: u32) {
        let (mut sent, mut answered, mut rejected) = (0, 0, 0);
        for t in tallies {
            sent += t.sent;
            answered += t.answered();
            rejected += t.rejected_total();
        }
        self.sent.store(sent, Relaxed);
        self.answered.store(answered, Relaxed);
        self.rejected.store(rejected, Relaxed);
        if let Some(t) = tallies.get(step as usize) {
            self.rtt_p99
                .store(t.hists.rtt.value_at_quantile(0.99), Relaxed);
        }
        self.step.store(u64::from(step), Relaxed);
    }

    /// Sums several threads' numbers.
    pub fn view(all: &[std::sync::Arc<Live>]) -> LiveView {
        let mut v = LiveView {
            step: u64::MAX,
            ..LiveView::default()
        };
        for l in all {
            v.sent += l.sent.load(Relaxed);
            v.answered += l.answered.load(Relaxed);
            v.rejected += l.rejected.load(Relaxed);
            v.rtt_p99 = v.rtt_p99.max(l.rtt_p99.load(Relaxed));
            v.step = v.step.min(l.step.load(Relaxed));
        }
        if all.is_empty() {
            v.step = 0;
        }
        v
    }
}
