//! The AF_XDP generator thread: build a paced batch of requests in free
//! UMEM frames → TX ring → kick; take replies off the RX ring (stamped by
//! the XDP program `ntpx_load_rx`) → engine → free list.
//!
//! Per packet nothing is allocated, locked or called into the kernel; the
//! ring kicks and, when idle, a short `poll` are the only syscalls.

use super::engine::Engine;
use super::live::Live;
use super::sched::Sched;
pub use super::sched::Schedule;
use super::tally::Tally;
use crate::sys::clock::{self, Clock};
use crate::sys::xsk::{XskQueue, take_meta};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use xdp::slab::{HeapSlab, Slab as _};

/// Frames per TX or RX batch.
pub const BATCH: usize = 64;

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
    if !crate::sys::cpu::pin(s.cpu) {
        tracing::warn!(queue = q.queue(), cpu = ?s.cpu, "could not pin generator thread");
    }
    let mut tx = HeapSlab::with_capacity(BATCH);
    let mut rx = HeapSlab::with_capacity(BATCH);
    // Half the frames stay out of the fill ring for requests.
    let keep = q.free_frames() / 2;
    let len = e.frame_len();
    let mut sched = Sched::new(s);
    sched.wait_start(clock);
    loop {
        let now = clock.now_unix_nanos();
        if !sched.advance(now, &mut e, stop) {
            break;
        }
        q.recycle_keeping(keep);
        let due = sched.due(now, &mut e, BATCH);
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
            sched.sent(queued as u64);
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
            } else if let Some(wait) = sched.idle_wait(now) {
                q.wait(wait);
            }
        }
        sched.publish(now, &e, live);
    }
    let tallies = sched.finish(e, live);
    (q, tallies)
}
