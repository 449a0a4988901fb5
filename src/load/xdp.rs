//! The AF_XDP generator thread: build a paced batch of requests in free
//! UMEM frames → TX ring → kick; take replies off the RX ring (stamped by
//! the XDP program `ntpx_load_rx`) → engine → free list.
//!
//! Per packet nothing is allocated, locked or called into the kernel; the
//! ring kicks and, when idle, a short `poll` are the only syscalls.

use super::engine::Engine;
use super::live::Live;
use super::pace::Pacer;
use super::tally::Tally;
use crate::clock::{self, Clock};
use crate::xdp::socket::{XskQueue, take_meta};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use xdp::slab::{HeapSlab, Slab as _};

/// Frames per TX or RX batch.
pub const BATCH: usize = 64;
/// Publish live numbers this often.
const PUBLISH_NS: u64 = 200_000_000;
/// Sleep in poll() instead of spinning when the next send is further off.
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

/// Runs one queue's generator until its schedule is over (or `stop` is
/// set, which ends the sending at once and drains); returns the queue and
/// the per-step tallies.
pub fn run<C: Clock>(
    mut q: XskQueue,
    mut e: Engine,
    s: &Schedule,
    clock: &C,
    live: &Arc<Live>,
    stop: &AtomicBool,
) -> (XskQueue, Vec<Tally>) {
    if !crate::worker::pin(s.cpu) {
        tracing::warn!(queue = q.queue(), cpu = ?s.cpu, "could not pin generator thread");
    }
    let mut tx = HeapSlab::with_capacity(BATCH);
    let mut rx = HeapSlab::with_capacity(BATCH);
    // Half the frames stay out of the fill ring for requests.
    let keep = q.free_frames() / 2;
    let len = e.frame_len();
    let mut step = 0usize;
    let mut pacer = Pacer::new(s.rates[0], s.start_ns);
    let mut step_end = s.start_ns + s.step_ns;
    let mut sending = true;
    let mut drain_end = 0;
    let mut next_publish = 0;
    while clock.now_unix_nanos() < s.start_ns {
        std::hint::spin_loop();
    }
    loop {
        let now = clock.now_unix_nanos();
        // A step ends once everything due by its end is sent (the last
        // request of a step is due exactly at its end).
        if sending
            && ((now >= step_end && (s.ping || pacer.due(step_end) == 0)) || stop.load(Relaxed))
        {
            if step + 1 < s.rates.len() && !stop.load(Relaxed) {
                step += 1;
                e.set_step(step as u32);
                pacer = Pacer::new(s.rates[step], step_end);
                step_end += s.step_ns;
            } else {
                sending = false;
                drain_end = now + s.drain_ns;
            }
        }
        if !sending && (now >= drain_end || e.open() == 0) {
            break;
        }
        q.recycle_keeping(keep);
        let due = if !sending {
            0
        } else if s.ping {
            e.expire(now, BATCH);
            BATCH
        } else {
            pacer.due(now.min(step_end)).min(BATCH as u64) as usize
        };
        for _ in 0..due {
            let Some(mut p) = q.alloc() else { break };
            if p.adjust_tail(len as i32).is_err() || e.next_request(&mut p[..], now).is_none() {
                q.release(p);
                break;
            }
            // Cannot fail: the slab holds BATCH and we build ≤ BATCH.
            if let Some(p) = tx.push_front(p) {
                e.unsend(&p[..]);
                q.release(p);
            }
        }
        let built = tx.len();
        if built > 0 {
            e.stamp_batch(clock.now_unix_nanos());
            let queued = q.send(&mut tx);
            pacer.sent(queued as u64);
            while let Some(p) = tx.pop_back() {
                e.unsend(&p[..]);
                q.release(p);
            }
        }
        let n = q.receive(&mut rx);
        if n > 0 {
            let fallback = clock.now_unix_nanos();
            while let Some(mut p) = rx.pop_back() {
                let (hw, sw) = take_meta(&mut p).map_or((0, 0), |m| (m.rx_hw_ns, m.rx_sw_tai_ns));
                let t4 = clock::receive_time(hw, sw, s.tai_offset_s, fallback);
                e.on_frame(&p[..], t4);
                q.release(p);
            }
        } else if built == 0 {
            if q.tx_pending() {
                q.kick();
            } else {
                let wait = if s.ping || !sending {
                    1_000_000
                } else {
                    pacer.wait_ns(now)
                };
                if wait > SLEEP_OVER_NS || !sending {
                    q.wait(Duration::from_nanos(wait.min(10_000_000)));
                }
            }
        }
        if now >= next_publish {
            live.publish(e.tallies(), e.step());
            next_publish = now + PUBLISH_NS;
        }
    }
    let tallies = e.finish();
    live.publish(&tallies, step as u32);
    (q, tallies)
}
