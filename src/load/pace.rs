//! Open-loop pacing: how many requests are due by now at a constant rate.
//!
//! The count is computed from the step's start, not from the last send, so
//! rounding and late wake-ups never accumulate into drift: a sender that
//! falls behind sends the backlog (in batches) and is back on schedule.
//! Request k (from 0) is due at `start + k / rate`, so a step of length d
//! holds exactly `rate × d` of them, the last one before its end.

#![forbid(unsafe_code)]

/// A constant-rate schedule.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    start_ns: u64,
    rate: f64,
    sent: u64,
}

impl Pacer {
    /// `rate` requests per second from `start_ns`.
    pub fn new(rate: f64, start_ns: u64) -> Pacer {
        Pacer {
            start_ns,
            rate,
            sent: 0,
        }
    }

    /// Requests due at `now_ns` that have not been sent.
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let elapsed = (now_ns - self.start_ns) as f64;
        ((elapsed * self.rate / 1e9) as u64 + 1).saturating_sub(self.sent)
    }

    /// Nanoseconds from `now_ns` until the next request is due (0 if one is).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        let next_at = self.start_ns as f64 + self.sent as f64 * 1e9 / self.rate;
        (next_at - now_ns as f64).max(0.0) as u64
    }

    /// Records `n` requests sent.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Requests sent since the start.
    pub fn total(&self) -> u64 {
        self.sent
    }

    /// The rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_drift() {
        let mut p = Pacer::new(1000.0, 5_000);
        assert_eq!(p.due(4_999), 0);
        assert_eq!(p.wait_ns(4_000), 1_000);
        // The first request is due at the start, the next 1 ms later.
        assert_eq!(p.due(5_000), 1);
        p.sent(1);
        assert_eq!(p.due(5_999), 0);
        assert_eq!(p.wait_ns(5_000), 1_000_000);
        // A 1 s step holds exactly 1000 (the last at 999 ms).
        assert_eq!(p.due(5_000 + 999_000_000), 999);
        assert_eq!(p.due(5_000 + 999_999_999), 999);
        // Polled at odd moments, the total stays on the line.
        let mut now = 5_000;
        for step in [333_333, 1_700_001, 10, 2_999_999, 123_456_789] {
            now += step;
            let d = p.due(now);
            p.sent(d);
        }
        let elapsed = now - 5_000;
        assert_eq!(p.total(), elapsed * 1000 / 1_000_000_000 + 1);
        // A sender that stalls gets the whole backlog.
        assert_eq!(p.due(now + 1_000_000_000), 1000);
        assert_eq!(p.wait_ns(now + 1_000_000_000), 0);
        assert_eq!(p.rate(), 1000.0);
    }
}
