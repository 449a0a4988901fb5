//! The kernel-socket generator thread (`ntpx load --datapath socket`): the
//! same [`Engine`] and schedule as the AF_XDP thread (`load::xdp`), over
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
//! - `nix`'s safe `sendmmsg` needs no per-message addresses.
//!
//! The price: a reply from the wrong address or port never reaches the
//! generator (the kernel drops it), so it counts as lost rather than as a
//! `wrong_address` rejection as over AF_XDP; and an ICMP error from the
//! server's host surfaces once as `ECONNREFUSED` on a later call, which the
//! loop treats as a batch that was not sent (or nothing received).
//!
//! `recvmmsg` goes through `libc`: `nix`'s `recvmmsg` does not reset each
//! header's control-buffer length between calls, so a batch without a
//! `SO_RXQ_OVFL` message would truncate the control data of later ones.
//!
//! Per packet nothing is allocated or locked; the syscalls are one
//! `sendmmsg` per batch, one `epoll_wait` per loop turn and one `recvmmsg`
//! per socket with replies.

use super::engine::Engine;
use super::live::Live;
use super::sched::{Sched, Schedule};
use super::tally::Tally;
use crate::clock::Clock;
use crate::socket::{CMSG_SPACE, CmsgBuf, meminfo_drops};
use nix::errno::Errno;
use nix::sys::socket::{
    self as nsock, AddressFamily, MsgFlags, MultiHeaders, SockFlag, SockProtocol, SockType,
    SockaddrStorage, sockopt,
};
use std::io::{self, IoSlice};
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Requests per `sendmmsg`, replies per `recvmmsg`.
pub const BATCH: usize = 64;
/// Sockets (client identities) per thread in open loop.
pub const SOCKETS_PER_THREAD: usize = 16;
/// Most ping-mode clients (one socket each) over all threads.
pub const MAX_PING_SOCKETS: usize = 4096;
/// Longest reply read (a reply is 48 bytes; longer ones are cut here).
const RX_LEN: usize = 256;
/// Receive and send buffer asked for per socket (bytes).
const SOCKET_BUF: usize = 1 << 20;

/// One client: a UDP socket connected to the server.
#[derive(Debug)]
struct ClientSocket {
    fd: OwnedFd,
    /// The source address and port of its requests.
    local: SocketAddr,
    /// The kernel's count of datagrams it dropped on this socket (buffer
    /// full), as last reported with a received datagram.
    drops: u32,
}

/// One generator thread's sockets and their `epoll` set.
#[derive(Debug)]
pub struct ThreadSockets {
    socks: Vec<ClientSocket>,
    epoll: OwnedFd,
    server: SocketAddr,
    send_errors: u64,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*a)))
    } else {
        s.as_sockaddr_in6()
            .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
    }
}

/// Raises the soft limit of open files to at least `need` (up to the hard
/// limit) so that many ping clients fit; opening the sockets reports what
/// still does not.
pub fn raise_fd_limit(need: u64) {
    // SAFETY: plain C struct; all-zero is a valid value.
    let mut lim: libc::rlimit = unsafe { zeroed() };
    // SAFETY: getrlimit writes one rlimit into the live struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= need {
        return;
    }
    lim.rlim_cur = need.min(lim.rlim_max);
    // SAFETY: setrlimit reads one live rlimit; a failure changes nothing.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

impl ThreadSockets {
    /// Opens `count` UDP sockets of the server's family, each bound to the
    /// wildcard address and an ephemeral port, then connected to `server`
    /// (see the module docs), bound to `iface` if given, with kernel
    /// receive stamps and drop counts on; and an `epoll` set over them.
    pub fn open(server: SocketAddr, count: usize, iface: Option<&str>) -> io::Result<Self> {
        // SAFETY: plain epoll_create1 call; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ep` is a fresh fd that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut socks = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let s = Self::open_one(server, iface)?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: both fds are open (owned); epoll_ctl reads one live
            // epoll_event.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    s.fd.as_raw_fd(),
                    &mut ev,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
            socks.push(s);
        }
        Ok(ThreadSockets {
            socks,
            epoll,
            server,
            send_errors: 0,
        })
    }

    fn open_one(server: SocketAddr, iface: Option<&str>) -> io::Result<ClientSocket> {
        let (family, wildcard) = match server {
            SocketAddr::V4(_) => (AddressFamily::Inet, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (AddressFamily::Inet6, IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        };
        let fd = nsock::socket(
            family,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::Udp,
        )
        .map_err(io_err)?;
        if server.is_ipv6() {
            nsock::setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(io_err)?;
        }
        nsock::setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map_err(io_err)?;
        nsock::setsockopt(&fd, sockopt::RxqOvfl, &1).map_err(io_err)?;
        // FORCE lifts rmem_max/wmem_max for root; otherwise the kernel caps
        // the plain request.
        if nsock::setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUF).is_err() {
            nsock::setsockopt(&fd, sockopt::RcvBuf, &SOCKET_BUF).map_err(io_err)?;
        }
        if nsock::setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUF).is_err() {
            nsock::setsockopt(&fd, sockopt::SndBuf, &SOCKET_BUF).map_err(io_err)?;
        }
        if let Some(iface) = iface {
            nsock::setsockopt(&fd, sockopt::BindToDevice, &iface.into()).map_err(io_err)?;
        }
        let any = SockaddrStorage::from(SocketAddr::new(wildcard, 0));
        nsock::bind(fd.as_raw_fd(), &any).map_err(io_err)?;
        nsock::connect(fd.as_raw_fd(), &SockaddrStorage::from(server)).map_err(io_err)?;
        let local = nsock::getsockname::<SockaddrStorage>(fd.as_raw_fd()).map_err(io_err)?;
        let local = to_socket_addr(&local)
            .ok_or_else(|| io::Error::other("getsockname: not an IP socket"))?;
        Ok(ClientSocket {
            fd,
            local,
            drops: 0,
        })
    }

    /// Number of sockets (clients).
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    /// Always false: a thread has at least one socket.
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// The source address the kernel gave the requests (the same for
    /// every socket: one route to the server).
    pub fn local_ip(&self) -> IpAddr {
        self.socks[0].local.ip()
    }

    /// `sendmmsg` calls that failed with something other than a full
    /// buffer (`EAGAIN`).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Replies the kernel dropped on these sockets because a receive
    /// buffer was full: the generator, not the server, lost them. The
    /// sockets' `SO_RXQ_OVFL` counts, brought up to date with
    /// `SO_MEMINFO` (the same counter, also counting drops after the last
    /// datagram received).
    pub fn rx_dropped(&self) -> u64 {
        self.socks
            .iter()
            .map(|s| u64::from(s.drops.max(meminfo_drops(&s.fd).unwrap_or(0))))
            .sum()
    }

    /// Sends `payloads` through socket `k` in one `sendmmsg`; returns how
    /// many the kernel took (0 on any error).
    fn send(&mut self, hdrs: &mut MultiHeaders<()>, k: usize, payloads: &[[u8; 48]]) -> usize {
        let n = payloads.len().min(BATCH);
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(payloads.get(i).map_or(&[][..], |p| &p[..]))]);
        // Connected: no address per message.
        const NO_ADDRS: [Option<()>; BATCH] = [None; BATCH];
        let fd = self.socks[k].fd.as_raw_fd();
        let no_cmsgs: [nsock::ControlMessage<'_>; 0] = [];
        match nsock::sendmmsg(
            fd,
            hdrs,
            &iovs[..n],
            NO_ADDRS,
            no_cmsgs,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(done) => done.count(),
            Err(Errno::EAGAIN) => 0,
            Err(e) => {
                if self.send_errors == 0 {
                    tracing::warn!(error = %e, server = %self.server, "sendmmsg failed (further failures only counted)");
                }
                self.send_errors += 1;
                0
            }
        }
    }

    /// Waits up to `timeout` (`None`: not at all) for sockets with
    /// replies; returns how many `events` it filled.
    fn ready(&self, events: &mut [libc::epoll_event], timeout: Option<Duration>) -> usize {
        let ms = timeout.map_or(0, |t| t.as_millis().clamp(1, 1000) as libc::c_int);
        // SAFETY: the epoll fd is open; epoll_wait writes at most
        // `events.len()` entries into the live slice.
        let r = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                ms,
            )
        };
        r.max(0) as usize
    }
}

/// One received datagram's metadata.
#[derive(Clone, Copy, Debug)]
struct Got {
    from: Option<SocketAddr>,
    len: usize,
    /// Kernel receive stamp (Unix ns), 0 if none.
    rx_ns: u64,
    /// The socket's drop count, if the kernel attached it.
    drops: Option<u32>,
}

/// Receive buffers and `recvmmsg` headers, created on the generator thread
/// and never moved off it (the headers point into the buffers).
struct RxBatch {
    bufs: Box<[[u8; RX_LEN]]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    got: Box<[Got]>,
}

impl RxBatch {
    fn new() -> RxBatch {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs
        // for which all-zero bytes are valid values.
        let (name, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        RxBatch {
            bufs: vec![[0u8; RX_LEN]; BATCH].into_boxed_slice(),
            names: vec![name; BATCH].into_boxed_slice(),
            cmsgs: vec![CmsgBuf([0; CMSG_SPACE]); BATCH].into_boxed_slice(),
            iovs: vec![iov; BATCH].into_boxed_slice(),
            hdrs: vec![hdr; BATCH].into_boxed_slice(),
            got: vec![
                Got {
                    from: None,
                    len: 0,
                    rx_ns: 0,
                    drops: None,
                };
                BATCH
            ]
            .into_boxed_slice(),
        }
    }

    /// One non-blocking `recvmmsg` on `fd`; returns how many datagrams.
    fn recv(&mut self, fd: &OwnedFd) -> usize {
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: RX_LEN,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_controllen = CMSG_SPACE;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (names,
        // iovecs → bufs, cmsgs) with the lengths stated; they stay alive
        // and unaliased for the call. The fd is open.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        // EAGAIN (nothing there), EINTR, or a pending ICMP error
        // (ECONNREFUSED, reported once): nothing received.
        let got = r.max(0) as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            // SAFETY: recvmmsg filled this header; its control buffer is
            // `self.cmsgs[i]`, live and aligned for cmsghdr (CmsgBuf),
            // with msg_controllen set by the kernel.
            let (rx_ns, drops) = unsafe { parse_cmsgs(&h.msg_hdr) };
            self.got[i] = Got {
                from: from_storage(&self.names[i]),
                len: (h.msg_len as usize).min(RX_LEN),
                rx_ns,
                drops,
            };
        }
        got
    }
}

/// The address in a `sockaddr_storage` the kernel filled.
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let p = (s as *const libc::sockaddr_storage).cast::<u8>();
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in,
            // which it is large and aligned enough for.
            let a = unsafe { std::ptr::read(p.cast::<libc::sockaddr_in>()) };
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { std::ptr::read(p.cast::<libc::sockaddr_in6>()) };
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// Reads SCM_TIMESTAMPNS and SO_RXQ_OVFL from a received header, with
/// the server's socket datapath's parser.
///
/// # Safety
///
/// As for [`crate::socket::parse_cmsgs`].
unsafe fn parse_cmsgs(h: &libc::msghdr) -> (u64, Option<u32>) {
    // SAFETY: the caller meets parse_cmsgs's contract.
    let c = unsafe { crate::socket::parse_cmsgs(h) };
    (c.rx_ns, c.drops)
}

/// Runs one thread's generator until its schedule is over (or `stop` is
/// set, which ends the sending at once and drains); returns the sockets
/// (for their drop counts) and the per-step tallies. Steps, pacing, drain
/// and live numbers are those of the AF_XDP thread ([`Sched`]).
pub fn run<C: Clock>(
    mut socks: ThreadSockets,
    mut e: Engine,
    s: &Schedule,
    clock: &C,
    live: &Arc<Live>,
    stop: &AtomicBool,
) -> (ThreadSockets, Vec<Tally>) {
    if !crate::worker::pin(s.cpu) {
        tracing::warn!(cpu = ?s.cpu, "could not pin generator thread");
    }
    let mut tx = [[0u8; 48]; BATCH];
    let mut hdrs = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut rx = RxBatch::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let idents: Vec<(IpAddr, u16)> = socks
        .socks
        .iter()
        .map(|c| (c.local.ip(), c.local.port()))
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
                let sent = socks.send(&mut hdrs, c, &tx[..1]);
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
                let sent = socks.send(&mut hdrs, k, &tx[..built]);
                sched.sent(sent as u64);
                for p in &tx[sent..built] {
                    e.unsend(p);
                }
            }
        }
        let mut ready = socks.ready(&mut events, None);
        if ready == 0
            && built == 0
            && let Some(wait) = sched.idle_wait(now)
        {
            ready = socks.ready(&mut events, Some(wait));
        }
        for ev in &events[..ready] {
            let k = ev.u64 as usize;
            let Some(sock) = socks.socks.get_mut(k) else {
                continue;
            };
            let n = rx.recv(&sock.fd);
            let fallback = clock.now_unix_nanos();
            let to = (sock.local.ip(), sock.local.port());
            for (buf, g) in rx.bufs.iter().zip(&rx.got[..n]) {
                if let Some(d) = g.drops {
                    sock.drops = d;
                }
                let from = g.from.map_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), |f| {
                    (f.ip(), f.port())
                });
                let t4 = if g.rx_ns != 0 { g.rx_ns } else { fallback };
                e.on_datagram(&buf[..g.len], from, to, t4);
            }
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
    use crate::load::frame::Target;
    use crate::load::spec::parse_prefix;
    use std::net::UdpSocket;

    #[test]
    fn sockets_are_connected_clients_with_their_own_ports() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = ThreadSockets::open(server.local_addr().unwrap(), 4, None).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.local_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut ports: Vec<u16> = s.socks.iter().map(|c| c.local.port()).collect();
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
            let state = crate::ntp::ServerState {
                leap: crate::ntp::Leap::None,
                stratum: 2,
                ref_id: *b"TEST",
                ..crate::ntp::ServerState::unsynchronized(-20)
            };
            while !d.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = server.recv_from(&mut buf) else {
                    continue;
                };
                let req = crate::ntp::parse_request(&buf[..n]).unwrap();
                let now = crate::clock::SystemClock.now();
                crate::ntp::write_reply(
                    &mut buf,
                    &req,
                    &state,
                    &Default::default(),
                    now,
                    || crate::clock::SystemClock.now(),
                    0,
                )
                .unwrap();
                server.send_to(&buf[..48], from).unwrap();
            }
        });
        let socks = ThreadSockets::open(addr, 3, None).unwrap();
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
        });
        let clock = crate::clock::SystemClock;
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
        assert_eq!((t.sent, t.good, t.lost, t.invalid), (200, 200, 0, 0));
        assert!(t.rejected_list().is_empty());
        assert_eq!(socks.rx_dropped(), 0);
        assert_eq!(socks.send_errors(), 0);
    }
}
