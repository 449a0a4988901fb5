//! The AF_XDP worker loop: RX batch → reply in place → TX batch →
//! completions back to the fill ring.

use super::WorkerCtx;
use crate::proto::drops::DropReason;
use crate::proto::ntp::KissCode;
use crate::proto::ntp::NtpTimestamp;
use crate::proto::respond::{respond_kiss, respond_with};
use crate::server::state::Drain;
use crate::server::stats::WorkerStats;
use crate::sys::clock::{self, Clock};
use crate::sys::xsk::meta::{META_KOD_DENY, META_KOD_RATE};
use crate::sys::xsk::{TxTag, Verdict, XskQueue};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// How long an idle worker sleeps in poll() before re-checking shutdown.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Runs until `ctx.running` is cleared; returns the queue (so its socket
/// closes after the program stops redirecting to it).
pub fn run<C: Clock>(mut q: XskQueue, ctx: WorkerCtx<C>) -> XskQueue {
    if !crate::sys::cpu::pin(ctx.cpu) {
        tracing::warn!(queue = q.queue(), cpu = ?ctx.cpu, "could not pin worker");
    }
    let mut stats = WorkerStats::new(ctx.published.clone());
    let mut rng = fastrand::Rng::new();
    let cfg = &*ctx.responder;
    // Interleaved mode needs the kernel's transmit stamps of replies.
    let table = ctx.xleave.as_deref().filter(|_| q.tx_stamps_usable());
    if ctx.xleave.is_some() && table.is_none() {
        tracing::warn!(
            queue = q.queue(),
            zerocopy = q.is_zerocopy(),
            "no usable AF_XDP transmit timestamps on this queue: basic mode only"
        );
    }
    let mut store = table.map(|t| t.store());
    // When the RX ring last ran dry: the worker polls it for `ctx.spin`
    // before it sleeps, so that the next request does not wait for a
    // wake-up (tens of microseconds to milliseconds).
    let mut idle_since: Option<Instant> = None;
    // The TAI scale the completion stamps convert with: the last batch's
    // (it changes at a refresh), not a state load per turn of the loop.
    let mut tai = ctx.state.load().tai;
    while ctx.running.load(Relaxed) {
        match store.as_mut() {
            // The transmit times of replies owed to interleaved clients:
            // the kernel's CLOCK_TAI stamps, as UTC.
            Some(st) => {
                q.recycle_with(|tag, tai_ns| {
                    if tai_ns != 0 {
                        let utc = tai.to_unix_nanos(tai_ns);
                        st.stamp(
                            NtpTimestamp::from_bits(tag.t2),
                            NtpTimestamp::from_bits(tag.t3),
                            NtpTimestamp::from_unix_nanos(utc),
                        );
                    }
                });
            }
            None => q.recycle(),
        }
        let n = q.receive();
        if n == 0 {
            if q.tx_pending() {
                q.kick();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < ctx.spin {
                stats.beat();
                std::hint::spin_loop();
            } else {
                // Idle: hand the histogram over when due, or the service
                // times of the last requests before a lull would wait
                // for the next busy spell to reach `ntpx stats`.
                stats.publish(ctx.clock.now_unix_nanos());
                q.wait(IDLE_WAIT);
                idle_since = None;
            }
            continue;
        }
        idle_since = None;
        stats.rx(n as u64);
        let snap = ctx.state.load();
        tai = snap.tai;
        // Receive time for a frame without the program's stamp: now, the
        // earliest we know of it.
        let batch_now = ctx.clock.now_unix_nanos();
        // The header as of this batch: aged, or LI 3 if the control
        // thread stopped refreshing it.
        let header = snap.header_at(batch_now, ctx.clock.now_tai_nanos());
        let done = q.reply(|frame| {
            // Out of service, saying nothing (`ntpx drain on --mode stop`).
            if snap.drain == Drain::Stop {
                stats.drop(DropReason::Draining, 1);
                return Verdict::Release;
            }
            // The program's stamps: the NIC's (mapped to CLOCK_TAI in XDP,
            // 0 without one) and its own software stamp.
            let meta = frame.take_meta();
            // The program's policy may have asked for a Kiss-o'-Death.
            let kiss = meta.and_then(|m| kiss_code(m.flags));
            let (hw, sw) = meta.map_or((0, 0), |m| (m.rx_hw_ns, m.rx_sw_tai_ns));
            let (rx_ns, stamp) = clock::receive_stamp(hw, sw, &snap.tai, batch_now);
            let mut tx_ns = 0;
            let now = || {
                tx_ns = ctx.clock.now_unix_nanos();
                NtpTimestamp::from_unix_nanos(tx_ns)
            };
            let reply = match kiss {
                Some(code) => respond_kiss(frame.bytes_mut(), cfg, &header, code),
                None => respond_with(
                    frame.bytes_mut(),
                    cfg,
                    &header,
                    NtpTimestamp::from_unix_nanos(rx_ns),
                    now,
                    rng.u64(..),
                    &mut store,
                ),
            };
            if let Ok(r) = &reply
                && r.interleaved
            {
                // Its T3 was not read from the clock: when it is sent is
                // what the service time measures.
                tx_ns = ctx.clock.now_unix_nanos();
            }
            match reply {
                // The reply is never longer than the request, so the
                // shrink cannot fail.
                // Wrong time is worse than none: a reply that would leave
                // more than the bound after its request arrived (the
                // worker fell behind, or woke late) is dropped. Not an
                // interleaved one: its T3 was not read now, but stamped
                // when the previous reply really left.
                Ok(r) if kiss.is_none() && !r.interleaved && ctx.too_late(rx_ns, tx_ns) => {
                    stats.drop(DropReason::Late, 1);
                    Verdict::Release
                }
                Ok(reply) if frame.set_len(reply.len) => {
                    if let Some(code) = kiss {
                        // No time in it: no service time, no record.
                        stats.policy.kissed(code);
                        return Verdict::Transmit;
                    }
                    // An interleaved client will ask for this reply's
                    // transmit time: record it, and have the kernel stamp
                    // it (only replies that go out are recorded).
                    if let (Some(ex), Some(st)) = (reply.record, store.as_mut())
                        && st.record(ex.t2, ex.client, reply.transmit)
                    {
                        frame.request_tx_stamp(TxTag {
                            t2: ex.t2.to_bits(),
                            t3: reply.transmit.to_bits(),
                        });
                    }
                    stats.service_ns(tx_ns.saturating_sub(rx_ns), stamp);
                    if reply.partial_checksum {
                        stats.partial_checksum();
                    }
                    Verdict::Transmit
                }
                Ok(_) => {
                    stats.drop(DropReason::Truncated, 1);
                    Verdict::Release
                }
                Err(reason) => {
                    stats.drop(reason, 1);
                    Verdict::Release
                }
            }
        });
        stats.tx(done.sent as u64);
        stats.drop(DropReason::TxFull, done.tx_full as u64);
        // Never, with replies from `respond` (longer than any header).
        stats.drop(DropReason::Truncated, done.too_short as u64);
        if let Some(st) = store.as_mut() {
            stats.xleave(std::mem::take(&mut st.counts));
        }
        stats.publish(batch_now);
    }
    stats.publish(0);
    stats.flush_histogram();
    q
}

/// The Kiss-o'-Death the program's metadata flags ask for, if any.
fn kiss_code(flags: u32) -> Option<KissCode> {
    match flags {
        META_KOD_RATE => Some(KissCode::RATE),
        META_KOD_DENY => Some(KissCode::DENY),
        _ => None,
    }
}
