//! The socket-datapath worker loop: the same checks and reply as the
//! AF_XDP worker, over a kernel UDP socket. The kernel has already
//! checked IP and UDP checksums, IPv4 options and the frame's MAC, and
//! reassembled fragments; the socket marks reassembled datagrams and UDP
//! lengths the kernel let through (see `crate::sys::udp_server`); the source
//! checks and everything NTP are ours.

use super::WorkerCtx;
use crate::proto::drops::DropReason;
use crate::proto::ntp::interleave::fold;
use crate::proto::ntp::{self, NtpTimestamp};
use crate::proto::policy::Verdict;
use crate::proto::respond::{
    check_addresses, check_source_port, check_synchronized, reply_stamping,
};
use crate::server::state::Drain;
use crate::server::stats::WorkerStats;
use crate::sys::BATCH;
use crate::sys::clock::{Clock, StampSource};
use crate::sys::udp_server::BatchSocket;
use std::sync::atomic::Ordering::Relaxed;

/// Runs until `ctx.running` is cleared.
pub fn run<C: Clock>(mut sock: BatchSocket, ctx: WorkerCtx<C>) {
    if !crate::sys::cpu::pin(ctx.cpu) {
        tracing::warn!(cpu = ?ctx.cpu, "could not pin worker");
    }
    let mut stats = WorkerStats::new(ctx.published.clone());
    let mut rng = fastrand::Rng::new();
    let cfg = &*ctx.responder;
    let mut replies = [(0usize, 0usize, false); BATCH];
    let mut store = ctx.xleave.as_deref().map(|t| t.store());
    while ctx.running.load(Relaxed) {
        let n = match sock.recv() {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if n == 0 {
            // Idle (the receive timed out): hand the histogram over when
            // due (see xsk_loop).
            stats.publish(ctx.clock.now_unix_nanos());
            continue;
        }
        stats.rx(n as u64);
        let snap = ctx.state.load();
        // The policy for this batch (a reload swaps it between batches).
        let policy = ctx.limiter.as_ref().map(|l| (l, l.current()));
        let batch_now = ctx.clock.now_unix_nanos();
        // The header as of this batch: aged, or LI 3 if the control
        // thread stopped refreshing it.
        let header = snap.header_at(batch_now, ctx.clock.now_tai_nanos());
        let mut k = 0;
        for i in 0..n {
            let r = sock.received(i);
            let (rx_ns, stamp) = if r.rx_ns != 0 {
                (r.rx_ns, StampSource::Kernel)
            } else {
                (batch_now, StampSource::Worker)
            };
            let checked = (|| {
                // Out of service, saying nothing (`ntpx drain on --mode
                // stop`).
                if snap.drain == Drain::Stop {
                    return Err(DropReason::Draining);
                }
                if r.truncated {
                    return Err(DropReason::Truncated);
                }
                if r.fragment {
                    return Err(DropReason::Fragment);
                }
                // The socket filter's sign of a UDP length that disagreed
                // with the IP header (crate::sys::udp_server).
                if r.len == 0 {
                    return Err(DropReason::BadUdpLength);
                }
                // The self-probe comes from this host (one of our
                // addresses, over loopback): past the source checks and
                // the policy, judged as any request from here on.
                let probe = ctx.self_probe.is_some_and(|p| {
                    p.port() == r.src.port() && p.ip() == r.src.ip().to_canonical()
                });
                if !probe {
                    check_source_port(r.src.port(), cfg.drop_loop_ports)?;
                }
                let dst = r.dst.ok_or(DropReason::NotOurAddress)?;
                if !probe {
                    check_addresses(cfg, r.src.ip(), dst)?;
                }
                // The client mix, of everything with a header (as XDP).
                if r.len >= ntp::HEADER_LEN {
                    let v6 = r.src.ip().to_canonical().is_ipv6();
                    stats.clients.count(&sock.buf_mut(i)[..r.len], v6);
                    if rng.u32(..).is_multiple_of(crate::server::talkers::SAMPLE) {
                        stats.sample_talker(r.src.ip());
                    }
                }
                let req = ntp::parse_request(&sock.buf_mut(i)[..r.len])?;
                // The policy, then the last check, as in the XDP program.
                let verdict = match &policy {
                    Some((l, p)) if !probe => l.decide_with(
                        p,
                        r.src.ip(),
                        rx_ns,
                        [rng.u32(..), rng.u32(..)],
                        &mut stats.policy,
                    ),
                    _ => Verdict::Answer,
                };
                match verdict {
                    Verdict::Drop(reason) => return Err(reason),
                    Verdict::Kiss(code) => return Ok((req, Some(code))),
                    Verdict::Answer => {}
                }
                check_synchronized(&cfg.policy, &header)?;
                Ok((req, None))
            })();
            let client = r.src.ip();
            let (req, kiss) = match checked {
                Ok(x) => x,
                Err(reason) => {
                    stats.drop(reason, 1);
                    continue;
                }
            };
            let mut tx_ns = 0;
            let now = || {
                tx_ns = ctx.clock.now_unix_nanos();
                NtpTimestamp::from_unix_nanos(tx_ns)
            };
            let rx = NtpTimestamp::from_unix_nanos(rx_ns);
            // Interleaved mode: T2's mark, and what an interleaved client
            // is owed (the kernel's transmit stamp of our previous reply).
            let client = fold(client);
            let (stamping, candidate) = reply_stamping(cfg, &req, client, &mut store, kiss);
            if let Some((t2, t3)) = ntp::write_reply_with(
                &mut sock.buf_mut(i)[..],
                &req,
                &header,
                &cfg.policy,
                rx,
                now,
                rng.u64(..),
                stamping,
            ) {
                if let Some(code) = kiss {
                    // No time in it: no residence bound, no service time.
                    stats.policy.kissed(code);
                    replies[k] = (i, ntp::HEADER_LEN, false);
                    k += 1;
                    continue;
                }
                // Wrong time is worse than none (see the AF_XDP loop); an
                // interleaved reply's T3 was not read now.
                if stamping.previous_tx.is_none() && ctx.too_late(rx_ns, tx_ns) {
                    stats.drop(DropReason::Late, 1);
                    continue;
                }
                if stamping.previous_tx.is_some() {
                    // T3 was not read: the time to send is the clock's now.
                    tx_ns = ctx.clock.now_unix_nanos();
                }
                stats.service_ns(tx_ns.saturating_sub(rx_ns), stamp);
                // An interleaved client will ask when this reply left.
                let stamp = candidate && store.as_mut().is_some_and(|st| st.record(t2, client, t3));
                replies[k] = (i, ntp::HEADER_LEN, stamp);
                k += 1;
            } else {
                // Never: the buffer holds a whole request.
                stats.drop(DropReason::Truncated, 1);
            }
        }
        let out = sock.send(&replies[..k]);
        stats.tx(out.sent as u64);
        stats.drop(DropReason::SendError, out.failed as u64);
        if let Some(st) = store.as_mut() {
            // The kernel stamps a datagram as the driver takes it, within
            // the send above; what is queued now is read now (one that
            // comes later, at the next batch that asks for one: a batch
            // that asked for none makes no error-queue call). Each
            // looped-back reply ends with its 48 bytes of NTP: its T2 and
            // T3 name the table entry and the reply.
            let asked = replies[..k].iter().any(|r| r.2);
            if asked {
                sock.tx_stamps(|frame, ns| {
                    let ntp = frame
                        .len()
                        .checked_sub(ntp::HEADER_LEN)
                        .map(|at| &frame[at..]);
                    if let (Some(p), true) = (ntp.and_then(ntp::Packet::new_checked), ns != 0) {
                        st.stamp(p.receive(), p.transmit(), NtpTimestamp::from_unix_nanos(ns));
                    }
                });
            }
            stats.xleave(std::mem::take(&mut st.counts));
        }
        stats.publish(batch_now);
    }
    stats.publish(0);
    stats.flush_histogram();
}
