//! The AF_XDP worker loop: RX batch → reply in place → TX batch →
//! completions back to the fill ring.

use super::{BATCH, WorkerCtx};
use crate::proto::drops::DropReason;
use crate::proto::ntp::NtpTimestamp;
use crate::proto::respond::respond;
use crate::server::stats::WorkerStats;
use crate::sys::clock::{self, Clock};
use crate::sys::xsk::{XskQueue, take_meta};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use xdp::slab::{HeapSlab, Slab as _};

/// How long an idle worker sleeps in poll() before re-checking shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Runs until `ctx.running` is cleared; returns the queue (so its socket
/// closes after the program stops redirecting to it).
pub fn run<C: Clock>(mut q: XskQueue, ctx: WorkerCtx<C>) -> XskQueue {
    if !crate::sys::cpu::pin(ctx.cpu) {
        tracing::warn!(queue = q.queue(), cpu = ?ctx.cpu, "could not pin worker");
    }
    let mut stats = WorkerStats::new(ctx.published.clone());
    let mut rx_slab = HeapSlab::with_capacity(BATCH);
    let mut tx_slab = HeapSlab::with_capacity(BATCH);
    let mut rng = fastrand::Rng::new();
    let cfg = &*ctx.frame_cfg;
    while ctx.running.load(Relaxed) {
        q.recycle();
        let n = q.receive(&mut rx_slab);
        if n == 0 {
            if q.tx_pending() {
                q.kick();
            } else {
                q.wait(IDLE_WAIT);
            }
            continue;
        }
        stats.rx(n as u64);
        let snap = ctx.state.load();
        // Receive time for a frame without the program's stamp: now, the
        // earliest we know of it.
        let batch_now = ctx.clock.now_unix_nanos();
        while let Some(mut packet) = rx_slab.pop_back() {
            let (hw, sw) = take_meta(&mut packet).map_or((0, 0), |m| (m.rx_hw_ns, m.rx_sw_tai_ns));
            let rx_ns = clock::receive_time(hw, sw, snap.tai_offset_s, batch_now);
            let mut tx_ns = 0;
            let now = || {
                tx_ns = ctx.clock.now_unix_nanos();
                NtpTimestamp::from_unix_nanos(tx_ns)
            };
            let len = packet.len();
            match respond(
                &mut packet[..],
                cfg,
                &snap.ntp,
                NtpTimestamp::from_unix_nanos(rx_ns),
                now,
                rng.u64(..),
            ) {
                // The reply is never longer than the request, so the
                // shrink cannot fail.
                Ok(reply) if packet.adjust_tail(reply.len as i32 - len as i32).is_ok() => {
                    stats.service_ns(tx_ns.saturating_sub(rx_ns));
                    if reply.partial_checksum {
                        stats.partial_checksum();
                    }
                    // Cannot fail: tx_slab has BATCH slots and rx took ≤ BATCH.
                    if let Some(p) = tx_slab.push_front(packet) {
                        stats.drop(DropReason::TxFull, 1);
                        q.release(p);
                    }
                }
                Ok(_) => {
                    stats.drop(DropReason::Truncated, 1);
                    q.release(packet);
                }
                Err(reason) => {
                    stats.drop(reason, 1);
                    q.release(packet);
                }
            }
        }
        let queued = q.send(&mut tx_slab);
        stats.tx(queued as u64);
        while let Some(p) = tx_slab.pop_back() {
            stats.drop(DropReason::TxFull, 1);
            q.release(p);
        }
        stats.publish(batch_now);
    }
    stats.publish(0);
    stats.flush_histogram();
    q
}
