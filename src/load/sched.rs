//! The step and pacing state machine that every generator datapath runs:
//! when a step ends and the next begins, how many requests are due, when
//! sending stops and the drain ends, how long an idle thread may sleep,
//! and when to publish live numbers. The datapaths (`load::xsk_thread`,
//! `load::udp_thread`) only move packets.
//!
//! No I/O: the caller passes the time in.

#![forbid(unsafe_code)]

use super::engine::Engine;
use super::live::Live;
use super::pace::Pacer;
use super::tally::Tally;
use crate::sys::clock::Clock;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

/// Publish live numbers this often.
const PUBLISH_NS: u64 = 200_000_000;
/// Sleep instead of spinning when the next send is further off.
const SLEEP_OVER_NS: u64 = 2_000_000;

/// A thread's schedule: steps of equal length from `start_ns`.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// When step 0 starts (Unix ns), the same for every thread.
    pub start_ns: u64,
    /// Length of each step.
    pub step_ns: u64,
    /// This thread's rate in each step (requests/s); for ping mode one
    /// entry whose value is ignored.
    pub rates: Vec<f64>,
    /// Ping mode: no pacing, clients send when their reply is in.
    pub ping: bool,
    /// After the last step, keep receiving this long.
    pub drain_ns: u64,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// TAI − UTC (s), to turn the XDP program's stamps into Unix time.
    pub tai_offset_s: i32,
}

impl Schedule {
    /// When the last step ends.
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.step_ns * self.rates.len() as u64
    }
}

/// One thread's progress through its [`Schedule`].
#[derive(Debug)]
pub struct Sched<'a> {
    s: &'a Schedule,
    step: usize,
    pacer: Pacer,
    step_end: u64,
    sending: bool,
    drain_end: u64,
    next_publish: u64,
}

impl<'a> Sched<'a> {
    /// At the start of step 0 (which may lie in the future).
    pub fn new(s: &'a Schedule) -> Sched<'a> {
        Sched {
            s,
            step: 0,
            pacer: Pacer::new(s.rates[0], s.start_ns),
            step_end: s.start_ns + s.step_ns,
            sending: true,
            drain_end: 0,
            next_publish: 0,
        }
    }

    /// Spins until step 0 starts (every thread starts together).
    pub fn wait_start(&self, clock: &impl Clock) {
        while clock.now_unix_nanos() < self.s.start_ns {
            std::hint::spin_loop();
        }
    }

    /// Moves on to the next step, or from sending to draining, as `now`
    /// and `stop` say; false once the thread is done (drained, or nothing
    /// left open after the last step).
    pub fn advance(&mut self, now: u64, e: &mut Engine, stop: &AtomicBool) -> bool {
        let s = self.s;
        // Steps end on time, sent or not: a generator that falls behind
        // shows it as a lower sent rate, never as a longer step.
        if self.sending && (now >= self.step_end || stop.load(Relaxed)) {
            if self.step + 1 < s.rates.len() && !stop.load(Relaxed) {
                self.step += 1;
                e.set_step(self.step as u32);
                self.pacer = Pacer::new(s.rates[self.step], self.step_end);
                self.step_end += s.step_ns;
            } else {
                self.sending = false;
                self.drain_end = now + s.drain_ns;
            }
        }
        self.sending || (now < self.drain_end && e.open() > 0)
    }

    /// True until the last step is over (then the thread only receives).
    pub fn sending(&self) -> bool {
        self.sending
    }

    /// How many requests (at most `batch`) to build now. In ping mode this
    /// is `batch` (the engine says which clients may send) after expiring
    /// up to `batch` timed-out requests.
    pub fn due(&mut self, now: u64, e: &mut Engine, batch: usize) -> usize {
        if !self.sending {
            0
        } else if self.s.ping {
            e.expire(now, batch);
            batch
        } else {
            self.pacer.due(now).min(batch as u64) as usize
        }
    }

    /// Records `n` requests handed to the kernel.
    pub fn sent(&mut self, n: u64) {
        self.pacer.sent(n);
    }

    /// When nothing was sent or received: how long the thread may sleep
    /// waiting for replies, or `None` to spin (the next send is close).
    pub fn idle_wait(&self, now: u64) -> Option<Duration> {
        let wait = if self.s.ping || !self.sending {
            1_000_000
        } else {
            self.pacer.wait_ns(now)
        };
        (wait > SLEEP_OVER_NS || !self.sending).then(|| Duration::from_nanos(wait.min(10_000_000)))
    }

    /// Publishes the engine's numbers if it is time to.
    pub fn publish(&mut self, now: u64, e: &Engine, live: &Live) {
        if now >= self.next_publish {
            live.publish(e.tallies(), e.step());
            self.next_publish = now + PUBLISH_NS;
        }
    }

    /// Ends the run: the engine's final tallies, published one last time.
    pub fn finish(self, e: Engine, live: &Live) -> Vec<Tally> {
        let tallies = e.finish();
        live.publish(&tallies, self.step as u32);
        tallies
    }
}
