//! What one step (or a whole run) of the generator counted: every request
//! ends in exactly one outcome, every rejected frame is counted under its
//! reason, and the good replies fill four HdrHistograms.
//!
//! Outcomes per request: `good`, `kod` (a Kiss-o'-Death), `late` (a valid
//! reply after the timeout), `invalid` (a reply that echoed our nonce but
//! failed a check), `lost` (no reply echoed it). So
//! `sent = good + kod + late + invalid + lost` once the run is over.

#![forbid(unsafe_code)]

use super::check::{INVALID_COUNT, Invalid};
use crate::report::new_histogram;
use hdrhistogram::Histogram;

/// The histograms of good replies (nanoseconds).
#[derive(Clone, Debug)]
pub struct Hists {
    /// T4 − T1: round-trip time seen by the client.
    pub rtt: Histogram<u64>,
    /// T3 − T2: time the server held the request.
    pub residence: Histogram<u64>,
    /// |((T2 − T1) + (T3 − T4)) / 2|: the offset's magnitude. Client and
    /// server on one host share one clock, so this is the error of the
    /// server's timestamps (plus path asymmetry). A histogram of signed
    /// values offset by a bias would lose the precision that matters
    /// (3 digits of 1 s + 5 µs); the sign lives in `offset_sum_ns`.
    pub offset: Histogram<u64>,
    /// Sum of the signed offsets (for the mean).
    pub offset_sum_ns: i128,
    /// (T4 − T1) − (T3 − T2): the network part of the round trip.
    pub delay: Histogram<u64>,
}

impl Default for Hists {
    fn default() -> Self {
        Hists {
            rtt: new_histogram(),
            residence: new_histogram(),
            offset: new_histogram(),
            offset_sum_ns: 0,
            delay: new_histogram(),
        }
    }
}

impl Hists {
    /// Records one good reply from its four timestamps (Unix ns).
    pub fn record(&mut self, t1: u64, t2: i64, t3: i64, t4: u64) {
        let (t1s, t4s) = (t1 as i64, t4 as i64);
        let rtt = t4s - t1s;
        let residence = t3 - t2;
        let offset = ((t2 - t1s) + (t3 - t4s)) / 2;
        // Values outside the histograms' range are clamped, never dropped.
        let clamp = |h: &mut Histogram<u64>, v: i64| {
            let v = v.clamp(0, h.high() as i64) as u64;
            h.saturating_record(v);
        };
        clamp(&mut self.rtt, rtt);
        clamp(&mut self.residence, residence);
        clamp(&mut self.offset, offset.saturating_abs());
        self.offset_sum_ns += i128::from(offset);
        clamp(&mut self.delay, rtt - residence);
    }

    /// Records the round trip of a request a reflector sent back (no
    /// server times: the other histograms stay as they are).
    pub fn record_rtt(&mut self, t1: u64, t4: u64) {
        let rtt = (t4 as i64 - t1 as i64).clamp(0, self.rtt.high() as i64) as u64;
        self.rtt.saturating_record(rtt);
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Hists) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.rtt.add(&other.rtt);
        let _ = self.residence.add(&other.residence);
        let _ = self.offset.add(&other.offset);
        let _ = self.delay.add(&other.delay);
        self.offset_sum_ns += other.offset_sum_ns;
    }

    /// Mean signed offset (ns); 0 without samples.
    pub fn mean_offset_ns(&self) -> f64 {
        if self.offset.is_empty() {
            0.0
        } else {
            self.offset_sum_ns as f64 / self.offset.len() as f64
        }
    }
}

/// Counters and histograms of one step.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub sent: u64,
    /// Valid replies within the timeout.
    pub good: u64,
    /// Kiss-o'-Death replies.
    pub kod: u64,
    /// Valid replies after the timeout.
    pub late: u64,
    /// Replies that echoed our nonce but failed a check.
    pub invalid: u64,
    /// Requests no reply answered.
    pub lost: u64,
    /// Frames rejected, by reason (received during this step).
    pub rejected: [u64; INVALID_COUNT],
    /// Replies accepted with a UDP checksum left partial by the server's
    /// stack (veth only; received during this step).
    pub partial_checksum: u64,
    /// The good replies' histograms (basic mode).
    pub hists: Hists,
    /// Good interleaved replies (RFC 9769): each is a sample of the
    /// previous exchange, with the precise transmit time.
    pub interleaved: u64,
    /// The interleaved samples' histograms.
    pub xhists: Hists,
}

impl Tally {
    /// Requests some reply answered (any outcome but lost).
    pub fn answered(&self) -> u64 {
        self.good + self.kod + self.late + self.invalid
    }

    /// All rejected frames.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Counts a rejected frame.
    pub fn reject(&mut self, why: Invalid) {
        self.rejected[why as usize] += 1;
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.good += other.good;
        self.kod += other.kod;
        self.late += other.late;
        self.invalid += other.invalid;
        self.lost += other.lost;
        self.partial_checksum += other.partial_checksum;
        for (a, b) in self.rejected.iter_mut().zip(&other.rejected) {
            *a += b;
        }
        self.hists.add(&other.hists);
        self.interleaved += other.interleaved;
        self.xhists.add(&other.xhists);
    }

    /// `reason=n` for each non-zero rejection reason.
    pub fn rejected_list(&self) -> Vec<(&'static str, u64)> {
        Invalid::ALL
            .iter()
            .filter(|r| self.rejected[**r as usize] > 0)
            .map(|r| (r.label(), self.rejected[*r as usize]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_timestamps() {
        let mut h = Hists::default();
        // Server clock 5 µs ahead, 10 µs each way, 2 µs inside the server.
        let t1 = 1_000_000_000u64;
        let t2 = t1 as i64 + 10_000 + 5_000;
        let t3 = t2 + 2_000;
        let t4 = t1 + 10_000 + 2_000 + 10_000;
        h.record(t1, t2, t3, t4);
        assert_eq!(h.rtt.max(), h.rtt.highest_equivalent(22_000));
        assert_eq!(
            h.residence.value_at_quantile(0.5),
            h.residence.highest_equivalent(2_000)
        );
        assert!(h.offset.equivalent(h.offset.max(), 5_000));
        assert_eq!(h.mean_offset_ns(), 5_000.0);
        assert_eq!(h.delay.len(), 1);
        assert!(h.delay.equivalent(h.delay.max(), 20_000));
        // Negative offset, and values out of range are clamped.
        h.record(t1, t1 as i64 - 3_000, t1 as i64 - 3_000, t1 + 2_000);
        assert_eq!(h.mean_offset_ns(), (5_000.0 - 4_000.0) / 2.0);
        h.record(t1, 0, 0, t1 + 100_000_000_000);
        assert!(h.rtt.max() >= 60_000_000_000);
        assert_eq!(h.rtt.len(), 3);
    }

    #[test]
    fn tally_sums() {
        let mut a = Tally {
            sent: 10,
            good: 6,
            kod: 1,
            late: 1,
            invalid: 1,
            lost: 1,
            ..Tally::default()
        };
        a.reject(Invalid::UnknownOrigin);
        let mut b = Tally {
            sent: 5,
            good: 5,
            ..Tally::default()
        };
        b.reject(Invalid::UnknownOrigin);
        b.reject(Invalid::Mode);
        a.add(&b);
        assert_eq!((a.sent, a.answered(), a.lost), (15, 14, 1));
        assert_eq!(a.rejected_total(), 3);
        assert_eq!(a.rejected_list(), vec![("mode", 1), ("unknown_origin", 2)]);
    }
}
