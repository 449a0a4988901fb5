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
use crate::sys::BATCH;
use crate::sys::clock::{self, Clock};
use crate::sys::xsk::XskQueue;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

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
        let built = q.build(due, len, |frame| e.next_request(frame, now).is_some());
        if built > 0 {
            e.stamp_batch(clock.now_unix_nanos());
            let queued = q.send_built(|unsent| e.unsend(unsent));
            sched.sent(queued as u64);
        }
        let n = q.receive();
        if n > 0 {
            let fallback = clock.now_unix_nanos();
            q.consume(|frame| {
                let sw = frame.take_meta().map_or(0, |m| m.rx_sw_tai_ns);
                // No hardware stamp: `rx_hw_ns` is on the NIC clock's timescale,
                // and there is no PHC→UTC mapping yet (the programs write 0).
                let hw = 0;
                let t4 =
                    clock::receive_time(hw, sw, &clock::TaiScale::fixed(s.tai_offset_s), fallback);
                e.on_frame(frame.bytes(), t4);
            });
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
