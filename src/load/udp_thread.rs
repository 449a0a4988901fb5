//! The kernel-socket generator thread (`ntpx load --datapath socket`): the
//! same [`Engine`] and schedule as the AF_XDP thread (`load::xsk_thread`), over
//! ordinary UDP sockets, to compare the two datapaths and to load-test
//! from hosts without XDP.
//!
//! Each thread owns a set of UDP sockets; each socket is one client
//! identity (the kernel picks its source address and an ephemeral port).
//! Open loop: each paced batch (≤ [`BATCH`]) goes out through the next
//! socket, round robin, in one `sendmmsg`. Ping mode: one socket per
//! client, so one `sendmmsg` of one request per request (as real clients
//! do). Replies: an `epoll` set says which sockets have data, and each is
//! drained with non-blocking `recvmmsg` batches; T4 is the kernel's
//! software receive stamp (`SO_TIMESTAMPNS`), else the clock when the
//! batch was picked up.
//!
//! The sockets are **connected** to the server:
//! - that is what real clients do (chrony connects its client sockets), so
//!   the kernel drops any datagram not from the server's address and port,
//!   and the generator measures the path such a client sees;
//! - a connected socket caches its route: no route lookup per request;
//! - `getsockname` then returns the exact source address and port the
//!   kernel put in every request (no guess from a throwaway socket), and
//!   the kernel delivers only datagrams sent to that address, so that
//!   pair is the identity both for building requests and for checking
//!   replies ([`Engine::on_datagram`]'s `to`);
//! - `sendmmsg` needs no per-message addresses.
//!
//! The price: a reply from the wrong address or port never reaches the
//! generator (the kernel drops it), so it counts as lost rather than as a
//! `wrong_address` rejection as over AF_XDP; and an ICMP error from the
//! server's host surfaces once as `ECONNREFUSED` on a later call, which the
//! loop treats as a batch that was not sent (or nothing received).
//!
//! The sockets themselves, and their batch buffers, are
//! [`ClientSockets`] in the system layer.
//!
//! Per packet nothing is allocated or locked; the syscalls are one
//! `sendmmsg` per batch, one `epoll_wait` per loop turn and one `recvmmsg`
//! per socket with replies.

use super::engine::Engine;
use super::live::Live;
use super::sched::{Sched, Schedule};
use super::tally::Tally;
use crate::sys::BATCH;
use crate::sys::clock::Clock;
use crate::sys::udp_client::REQUEST_LEN;
pub use crate::sys::udp_client::{ClientSockets, raise_fd_limit};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Sockets (client identities) per thread in open loop.
pub const SOCKETS_PER_THREAD: usize = 16;
/// Most ping-mode clients (one socket each) over all threads.
pub const MAX_PING_SOCKETS: usize = 4096;
/// Runs one thread's generator until its schedule is over (or `stop` is
/// set, which ends the sending at once and drains); returns the sockets
/// (for their drop counts) and the per-step tallies. Steps, pacing, drain
/// and live numbers are those of the AF_XDP thread ([`Sched`]).
pub fn run<C: Clock>(
    mut socks: ClientSockets,
    mut e: Engine,
    s: &Schedule,
    clock: &C,
    live: &Arc<Live>,
    stop: &AtomicBool,
) -> (ClientSockets, Vec<Tally>) {
    if !crate::sys::cpu::pin(s.cpu) {
        tracing::warn!(cpu = ?s.cpu, "could not pin generator thread");
    }
    let mut tx = [[0u8; REQUEST_LEN]; BATCH];
    let idents: Vec<(IpAddr, u16)> = (0..socks.len())
        .filter_map(|k| socks.local(k))
        .map(|a| (a.ip(), a.port()))
        .collect();
    let mut next_sock = 0;
    let mut sched = Sched::new(s);
    sched.wait_start(clock);
    loop {
        let now = clock.now_unix_nanos();
        if !sched.advance(now, &mut e, stop) {
            break;
        }
        let due = sched.due(now, &mut e, BATCH);
        let mut built = 0;
        if s.ping {
            // One socket per client: each request is its own send, stamped
            // just before it.
            for _ in 0..due {
                // The engine has exactly one client per socket.
                let Some((c, &id)) = e.ping_ready(now).and_then(|c| Some((c, idents.get(c)?)))
                else {
                    break;
                };
                let Some(n) = e.next_payload(&mut tx[0], now, id) else {
                    break;
                };
                built += 1;
                e.stamp_batch(clock.now_unix_nanos());
                let sent = socks.send(c, &tx[..1]);
                sched.sent(sent as u64);
                if sent == 0 {
                    e.unsend(&tx[0][..n]);
                    break;
                }
            }
        } else {
            let k = next_sock;
            while built < due && e.next_payload(&mut tx[built], now, idents[k]).is_some() {
                built += 1;
            }
            if built > 0 {
                next_sock = (k + 1) % idents.len();
                e.stamp_batch(clock.now_unix_nanos());
                let sent = socks.send(k, &tx[..built]);
                sched.sent(sent as u64);
                for p in &tx[sent..built] {
                    e.unsend(p);
                }
            }
        }
        let mut ready = socks.wait(None);
        if ready == 0
            && built == 0
            && let Some(wait) = sched.idle_wait(now)
        {
            ready = socks.wait(Some(wait));
        }
        if ready > 0 {
            socks.drain(
                || clock.now_unix_nanos(),
                |r| {
                    let from = r.from.map_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |f| {
                        (f.ip(), f.port())
                    });
                    e.on_datagram(r.payload, from, (r.to.ip(), r.to.port()), r.rx_ns);
                },
            );
        }
        sched.publish(now, &e, live);
    }
    let tallies = sched.finish(e, live);
    (socks, tallies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::engine::EngineConfig;
    use crate::load::spec::parse_prefix;
    use crate::proto::request::Target;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn sockets_are_connected_clients_with_their_own_ports() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = ClientSockets::open(server.local_addr().unwrap(), 4, None).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.local_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut ports: Vec<u16> = (0..s.len())
            .filter_map(|k| s.local(k))
            .map(|a| a.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        assert_eq!(s.rx_dropped(), 0);
    }

    /// A whole run against a tiny NTP responder on loopback: every request
    /// answered and validated, the kernel's stamps used.
    #[test]
    fn loopback_run_all_good() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let state = crate::proto::ntp::ServerState {
                leap: crate::proto::ntp::Leap::None,
                stratum: 2,
                ref_id: *b"TEST",
                ..crate::proto::ntp::ServerState::unsynchronized(-20)
            };
            while !d.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = server.recv_from(&mut buf) else {
                    continue;
                };
                let req = crate::proto::ntp::parse_request(&buf[..n]).unwrap();
                let now = crate::sys::clock::SystemClock.now();
                crate::proto::ntp::write_reply(
                    &mut buf,
                    &req,
                    &state,
                    &Default::default(),
                    now,
                    || crate::sys::clock::SystemClock.now(),
                    0,
                )
                .unwrap();
                server.send_to(&buf[..48], from).unwrap();
            }
        });
        let socks = ClientSockets::open(addr, 3, None).unwrap();
        let e = Engine::new(&EngineConfig {
            target: Target {
                src_mac: [0; 6],
                dst_mac: [0; 6],
                addr: addr.ip(),
                port: addr.port(),
                version: 4,
            },
            sources: parse_prefix("127.0.0.1").unwrap(),
            timeout_ns: 1_000_000_000,
            slot_bits: 12,
            thread: 0,
            seed: 1,
            ping: None,
            accept_partial_checksum: false,
            echo: false,
            xleave: false,
        });
        let clock = crate::sys::clock::SystemClock;
        let s = Schedule {
            start_ns: clock.now_unix_nanos() + 10_000_000,
            step_ns: 200_000_000,
            rates: vec![1000.0],
            ping: false,
            drain_ns: 1_000_000_000,
            cpu: None,
            tai_offset_s: 0,
        };
        let live = Arc::new(Live::default());
        let (socks, tallies) = run(socks, e, &s, &clock, &live, &AtomicBool::new(false));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        responder.join().unwrap();
        let t = &tallies[0];
        // 1000/s for 200 ms; a send due at the step's very end may miss it
        // when the thread is preempted there (never a timing assertion).
        assert!((190..=200).contains(&t.sent), "{t:?}");
        assert_eq!((t.good, t.lost, t.invalid), (t.sent, 0, 0));
        assert!(t.rejected_list().is_empty());
        assert_eq!(socks.rx_dropped(), 0);
        assert_eq!(socks.send_errors(), 0);
    }
}
