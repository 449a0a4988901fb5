//! The load generator's kernel UDP sockets (`ntpx load --datapath
//! socket`): a set of UDP sockets connected to the server, one client
//! identity each, sent to in `sendmmsg` batches and drained with
//! non-blocking `recvmmsg` batches when an `epoll` set says they have
//! replies. Why connected sockets, and what that costs, is told with the
//! generator's socket thread (`ntpx load --datapath socket`).
//!
//! The batch buffers are allocated once per set; each call is one syscall.
//! The mmsg calls go through `libc`: `nix`'s `recvmmsg` does not reset each
//! header's control-buffer length between calls (a batch without a
//! `SO_RXQ_OVFL` message would truncate the control data of later ones),
//! and its `sendmmsg` needs headers that point into themselves.

use super::BATCH;
use super::mmsg::RecvBatch;
use super::udp_server::meminfo_drops;
use nix::errno::Errno;
use nix::sys::socket::{
    self as nsock, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage, sockopt,
};
use std::io;
use std::mem::zeroed;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Longest reply read (a reply is 48 bytes; longer ones are cut here).
pub(crate) const RX_LEN: usize = 256;
/// Receive and send buffer asked for per socket (bytes).
const SOCKET_BUF: usize = 1 << 20;
/// Length of every request sent (an NTP header).
pub const REQUEST_LEN: usize = 48;

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

/// One generator thread's sockets, their `epoll` set and batch buffers.
pub struct ClientSockets {
    socks: Vec<ClientSocket>,
    epoll: OwnedFd,
    server: SocketAddr,
    send_errors: u64,
    tx: TxBatch,
    rx: RecvBatch<RX_LEN>,
    events: Box<[libc::epoll_event]>,
    ready: usize,
}

impl std::fmt::Debug for ClientSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSockets")
            .field("sockets", &self.socks.len())
            .field("server", &self.server)
            .finish()
    }
}

// SAFETY: the raw pointers inside the batch headers (`tx`, `rx`) point only
// into boxed buffers owned by the same ClientSockets or, while a send is in
// progress, into the caller's borrowed payloads; they are rewritten before
// every syscall and never read otherwise. No other thread can reach them,
// so moving the whole set to another thread is sound.
unsafe impl Send for ClientSockets {}

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

impl ClientSockets {
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
        Ok(ClientSockets {
            socks,
            epoll,
            server,
            send_errors: 0,
            tx: TxBatch::new(),
            rx: RecvBatch::new(BATCH),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH].into_boxed_slice(),
            ready: 0,
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

    /// The source address and port of socket `k`'s requests: the
    /// identity the kernel gave that client.
    pub fn local(&self, k: usize) -> Option<SocketAddr> {
        self.socks.get(k).map(|s| s.local)
    }

    /// Sends `payloads` (at most [`BATCH`]) through socket `k` in one
    /// `sendmmsg`; returns how many the kernel took (0 on any error, or
    /// for a socket that does not exist).
    pub fn send(&mut self, k: usize, payloads: &[[u8; REQUEST_LEN]]) -> usize {
        let Some(sock) = self.socks.get(k) else {
            return 0;
        };
        match self.tx.send(&sock.fd, payloads) {
            Ok(n) => n,
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
    /// replies; returns how many have some. [`Self::drain`] reads them.
    pub fn wait(&mut self, timeout: Option<Duration>) -> usize {
        self.ready = self.ready(timeout);
        self.ready
    }

    /// Reads every socket that the last [`Self::wait`] found ready (one
    /// non-blocking `recvmmsg` each) and hands each reply to `f`. `now` is
    /// read once after each `recvmmsg` that got something: the receive
    /// time of replies without a kernel stamp.
    pub fn drain(&mut self, mut now: impl FnMut() -> u64, mut f: impl FnMut(Reply<'_>)) {
        let ready = std::mem::take(&mut self.ready);
        for ev in &self.events[..ready] {
            let Some(sock) = self.socks.get_mut(ev.u64 as usize) else {
                continue;
            };
            // EAGAIN (nothing there), EINTR, or a pending ICMP error
            // (ECONNREFUSED, reported once): nothing received.
            let n = self
                .rx
                .recv(sock.fd.as_fd(), libc::MSG_DONTWAIT)
                .unwrap_or(0);
            if n == 0 {
                continue;
            }
            let fallback = now();
            for i in 0..n {
                let c = self.rx.cmsgs(i);
                if let Some(d) = c.drops {
                    sock.drops = d;
                }
                f(Reply {
                    payload: &self.rx.buf(i)[..self.rx.len(i)],
                    from: self.rx.source(i),
                    to: sock.local,
                    rx_ns: if c.rx_ns != 0 { c.rx_ns } else { fallback },
                });
            }
        }
    }

    /// `epoll_wait` into `self.events`; returns how many it filled.
    fn ready(&mut self, timeout: Option<Duration>) -> usize {
        let ms = timeout.map_or(0, |t| t.as_millis().clamp(1, 1000) as libc::c_int);
        // SAFETY: the epoll fd is open; epoll_wait writes at most
        // `events.len()` entries into the live slice.
        let r = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                ms,
            )
        };
        r.max(0) as usize
    }
}

/// One reply, as [`ClientSockets::drain`] hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The UDP payload (cut at 256 bytes).
    pub payload: &'a [u8],
    /// Where it came from, if the kernel said.
    pub from: Option<SocketAddr>,
    /// The socket's own address and port (the request's source).
    pub to: SocketAddr,
    /// The kernel's software receive stamp (Unix ns), else the `now` that
    /// [`ClientSockets::drain`] read right after the batch came in.
    pub rx_ns: u64,
}

/// `sendmmsg` headers for one batch of requests on a connected socket (no
/// addresses, no control messages), rewritten before every call.
struct TxBatch {
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl TxBatch {
    fn new() -> TxBatch {
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
        // bytes are valid values.
        let (iov, hdr) = unsafe { (zeroed::<libc::iovec>(), zeroed::<libc::mmsghdr>()) };
        TxBatch {
            iovs: vec![iov; BATCH].into_boxed_slice(),
            hdrs: vec![hdr; BATCH].into_boxed_slice(),
        }
    }

    /// One non-blocking `sendmmsg` of up to [`BATCH`] payloads on `fd`.
    fn send(&mut self, fd: &OwnedFd, payloads: &[[u8; REQUEST_LEN]]) -> Result<usize, Errno> {
        let n = payloads.len().min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        for (i, p) in payloads[..n].iter().enumerate() {
            // The kernel only reads through this pointer (a send).
            self.iovs[i] = libc::iovec {
                iov_base: p.as_ptr().cast_mut().cast(),
                iov_len: REQUEST_LEN,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: headers 0..n point at iovecs owned by `self`, and those at
        // `payloads`, borrowed for the call, each REQUEST_LEN bytes long;
        // the kernel only reads them. The fd is open.
        let r = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        }
    }
}
