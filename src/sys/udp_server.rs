//! The kernel UDP socket of the socket datapath: one dual-stack socket on
//! the NTP port, shared by the workers (each with its own batch buffers),
//! batches through `recvmmsg` / `sendmmsg`, the kernel's software receive
//! stamp (`SO_TIMESTAMPNS`), and the request's destination address
//! (`IPV6_PKTINFO`) so that each reply leaves from the address its request
//! was sent to.
//!
//! # The port is ours alone
//!
//! The socket sets neither `SO_REUSEPORT` nor `SO_REUSEADDR`, so the
//! kernel lets no other socket bind the port while ntpx holds it, in
//! either family, to any address or device, and ntpx's bind fails with
//! `EADDRINUSE` while anyone else holds it ([`BindError::InUse`] names the
//! holders, found through `/proc`). A group of `SO_REUSEPORT` sockets, one
//! per worker, would spread the load over CPUs in the kernel, but cannot be
//! kept to ntpx: any process of the same user may join such a group (chronyd
//! sets `SO_REUSEPORT`), or bind the port in the other family or to one
//! address, where the kernel's lookup prefers its socket, and answer in
//! ntpx's place. One socket costs the workers a shared receive queue; the
//! XDP datapath is the one that scales.
//!
//! # What the kernel checks, and what we add
//!
//! The kernel has checked IP and UDP checksums and lengths, dropped
//! source-routed and malformed IPv4 options and frames for other hosts,
//! and reassembled fragments before a datagram reaches the socket. Two
//! things it accepts that a public NTP server must not answer are caught
//! here:
//!
//! - a reassembled datagram: `IP_RECVFRAGSIZE` / `IPV6_RECVFRAGSIZE` put
//!   a control message on those, and the worker drops them as `fragment`;
//! - a UDP length that disagrees with the IP payload length (the kernel
//!   trims the datagram to the UDP length, or for IPv6 takes a length of 0
//!   as "the rest of the packet"), or that cannot be checked (IPv6 with
//!   extension headers before UDP). A classic BPF socket filter sees the
//!   IP header and the length as the kernel left it, and delivers such a
//!   datagram cut to its UDP header: the worker receives an empty datagram
//!   and drops it as `bad_udp_length`. Genuinely empty datagrams are
//!   dropped by the filter itself, so an empty datagram means exactly
//!   that; the kernel counts those with its other drops on the socket,
//!   which [`SocketDrops`] reads.
//!
//! The batch buffers are allocated once; `recv` and `send` are one syscall
//! each (more only when a message fails). `nix` is used for socket set-up;
//! the mmsg calls are made with `libc` directly because `nix::sendmmsg`
//! shares one set of control messages across a batch, and each reply needs
//! its own source address.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use super::cmsg::{self, CmsgBuf};
use super::mmsg::RecvBatch;
use super::sockopt;

/// Largest request read (longer datagrams are truncated and dropped).
pub const BUF_LEN: usize = 1024;
/// Requested socket receive buffer (bytes).
const RCVBUF: libc::c_int = 4 << 20;

/// `SO_ATTACH_FILTER` (asm-generic/socket.h; not in the libc crate for
/// this target).
const SO_ATTACH_FILTER: libc::c_int = 26;

/// One received request.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Where it came from (IPv4 shown as IPv4, not mapped).
    pub src: SocketAddr,
    /// The local address it was sent to, if the kernel said.
    pub dst: Option<IpAddr>,
    /// Kernel software receive stamp (Unix ns), 0 if none.
    pub rx_ns: u64,
    /// Payload length (0..=BUF_LEN); longer than BUF_LEN is flagged. 0
    /// means the socket filter found the UDP length wrong (see the module
    /// docs).
    pub len: usize,
    /// The datagram did not fit in the buffer.
    pub truncated: bool,
    /// The kernel reassembled it from fragments.
    pub fragment: bool,
}

/// How a batch of replies went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Replies the kernel took.
    pub sent: usize,
    /// Replies it refused (each skipped; the rest of the batch still went).
    pub failed: usize,
}

/// Why a group of sockets could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another socket holds the port.
    #[error("UDP port {port} is in use{}", holders_text(holders))]
    InUse {
        /// The port.
        port: u16,
        /// The processes that hold it, as `name (pid N)`, if found.
        holders: Vec<String>,
    },
    /// Any other failure.
    #[error("UDP port {port}: {what}: {source}")]
    Os {
        /// The port.
        port: u16,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn holders_text(holders: &[String]) -> String {
    if holders.is_empty() {
        String::new()
    } else {
        format!(" by {}", holders.join(", "))
    }
}

/// One worker's handle on the shared socket, with its own preallocated
/// batch buffers: the received requests, over which the replies are
/// written, and the `sendmmsg` headers that send them back.
pub struct BatchSocket {
    fd: Arc<OwnedFd>,
    rx: RecvBatch<BUF_LEN>,
    received: Box<[Received]>,
    tx_names: Box<[libc::sockaddr_in6]>,
    tx_cmsgs: Box<[CmsgBuf]>,
    tx_iovs: Box<[libc::iovec]>,
    tx_hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside `tx_iovs` and `tx_hdrs` point only into
// boxed buffers owned by the same BatchSocket (their heap addresses do not
// change when the struct moves), are rewritten before every syscall and
// never read otherwise; `rx` is `Send` on the same grounds. No other thread
// can reach them, so moving the whole struct to another thread is sound.
unsafe impl Send for BatchSocket {}

impl std::fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSocket").field("fd", &self.fd).finish()
    }
}

/// Attaches a classic BPF program with `setsockopt(SOL_SOCKET, opt)`.
fn attach_cbpf(fd: &OwnedFd, opt: libc::c_int, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        // The kernel copies the program during the call and never writes it.
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: setsockopt reads the sock_fprog, and through it `len`
    // instructions from `prog`, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One classic BPF instruction.
const fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The socket filter that catches the UDP lengths the kernel lets
/// through (see the module docs). It returns how many bytes of the
/// datagram to keep: all of them; or its 8-byte header alone when the UDP
/// length disagrees with the IP header's payload length (an IPv4 datagram
/// the kernel trimmed to a shorter UDP length; an IPv6 UDP length of 0, or
/// one that differs from the payload length), or cannot be checked (IPv6
/// with extension headers before UDP, which the kernel accepts and the XDP
/// datapath never answers either); or none (a drop) when the datagram is
/// genuinely empty. At this
/// point the kernel has trimmed the datagram to its UDP length (or, for an
/// IPv6 length of 0, left it whole): `len` is that, header included, and
/// the network header is read at `SKF_NET_OFF`.
#[rustfmt::skip] // one instruction a line, numbered: the jumps count lines
fn length_filter() -> [libc::sock_filter; 26] {
    use libc::{
        BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_LEN,
        BPF_LSH, BPF_MISC, BPF_RET, BPF_RSH, BPF_TAX, BPF_W, BPF_X,
    };
    let net = |off: i32| (libc::SKF_NET_OFF + off) as u32;
    const KEEP: u32 = u32::MAX;
    const CUT: u32 = 8;
    // A jump's offsets count the instructions after it: target = pc + 1 + off.
    [
        /*  0 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net(0)),
        /*  1 */ op(BPF_ALU | BPF_RSH | BPF_K, 0, 0, 4),     // IP version
        /*  2 */ op(BPF_JMP | BPF_JEQ | BPF_K, 10, 0, 6),    // 6 -> 13
        /*  3 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 19, 4),    // 4 -> 4, else -> 23 keep
        // IPv4: header length + datagram length = total length?
        /*  4 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net(0)),
        /*  5 */ op(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0x0f),
        /*  6 */ op(BPF_ALU | BPF_LSH | BPF_K, 0, 0, 2),
        /*  7 */ op(BPF_MISC | BPF_TAX, 0, 0, 0),
        /*  8 */ op(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        /*  9 */ op(BPF_ALU | BPF_ADD | BPF_X, 0, 0, 0),
        /* 10 */ op(BPF_MISC | BPF_TAX, 0, 0, 0),
        /* 11 */ op(BPF_LD | BPF_H | BPF_ABS, 0, 0, net(2)),
        /* 12 */ op(BPF_JMP | BPF_JEQ | BPF_X, 8, 11, 0),    // -> 21 empty?, else -> 24 cut
        // IPv6: UDP right after the fixed header (else: cut), and UDP
        // length (not 0) = datagram length = payload length?
        /* 13 */ op(BPF_LD | BPF_B | BPF_ABS, 0, 0, net(6)),
        /* 14 */ op(BPF_JMP | BPF_JEQ | BPF_K, 0, 9, 17),    // UDP -> 15, else -> 24 cut
        /* 15 */ op(BPF_LD | BPF_H | BPF_ABS, 0, 0, 4),      // the UDP length field
        /* 16 */ op(BPF_JMP | BPF_JEQ | BPF_K, 7, 0, 0),     // 0 -> 24 cut
        /* 17 */ op(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        /* 18 */ op(BPF_MISC | BPF_TAX, 0, 0, 0),
        /* 19 */ op(BPF_LD | BPF_H | BPF_ABS, 0, 0, net(4)),
        /* 20 */ op(BPF_JMP | BPF_JEQ | BPF_X, 0, 3, 0),     // -> 21, else -> 24 cut
        // Empty?
        /* 21 */ op(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),
        /* 22 */ op(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 8),     // header only -> 25 drop
        /* 23 */ op(BPF_RET | BPF_K, 0, 0, KEEP),
        /* 24 */ op(BPF_RET | BPF_K, 0, 0, CUT),
        /* 25 */ op(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

/// Opens a dual-stack UDP socket with the datapath's options, not bound.
fn open_socket(timeout: std::time::Duration) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    sockopt::set(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    sockopt::set(
        fd.as_raw_fd(),
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVPKTINFO,
        1,
    )?;
    sockopt::set(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    // Report software stamps, for the transmit stamps that replies to
    // interleaved clients ask for one by one (BatchSocket::send); receive
    // stamps stay SO_TIMESTAMPNS's (OPT_RX_FILTER, 6.12+: no second copy
    // on every request; older kernels add one, which is ignored).
    const SOFTWARE: u32 = 1 << 4;
    const OPT_RX_FILTER: u32 = 1 << 17;
    let ts = |flags: u32| {
        sockopt::set(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            flags,
        )
    };
    if ts(SOFTWARE | OPT_RX_FILTER).is_err() {
        ts(SOFTWARE)?;
    }
    // Mark reassembled datagrams (IPv4 ones arrive on this IPv6 socket
    // too, and take the IPv4-level option).
    sockopt::set(fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVFRAGSIZE, 1)?;
    sockopt::set(
        fd.as_raw_fd(),
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVFRAGSIZE,
        1,
    )?;
    attach_cbpf(&fd, SO_ATTACH_FILTER, &length_filter())?;
    // A deep receive buffer absorbs bursts (FORCE lifts rmem_max for
    // root; otherwise the kernel caps the plain request).
    if sockopt::set(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        RCVBUF,
    )
    .is_err()
    {
        sockopt::set(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF)?;
    }
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: reads a live timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Binds `fd` to `[::]:port`.
fn bind_any(fd: &OwnedFd, port: u16) -> io::Result<()> {
    let addr = sockaddr6(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    // SAFETY: bind reads a live sockaddr_in6 of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn local_port_of(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
    let mut a: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `a`.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut a).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u16::from_be(a.sin6_port))
}

impl BatchSocket {
    /// A socket on `port` (0: a free one) that no other socket may share,
    /// with batch buffers for `batch` messages and a receive timeout of
    /// `timeout` (for shutdown checks). The same as [`BatchSocket::bind_shared`]
    /// for one worker.
    pub fn bind(port: u16, batch: usize, timeout: std::time::Duration) -> Result<Self, BindError> {
        let mut g = Self::bind_shared(port, 1, batch, timeout)?;
        Ok(g.remove(0))
    }

    /// One socket on `port` (0: a free one) that no other socket may share,
    /// and `n` handles on it, one per worker. Fails with
    /// [`BindError::InUse`], naming the holders, if another socket holds
    /// the port.
    pub fn bind_shared(
        port: u16,
        n: usize,
        batch: usize,
        timeout: std::time::Duration,
    ) -> Result<Vec<Self>, BindError> {
        let os = |what, source| BindError::Os { port, what, source };
        let fd = open_socket(timeout).map_err(|e| os("opening a socket", e))?;
        if let Err(e) = bind_any(&fd, port) {
            return Err(if e.raw_os_error() == Some(libc::EADDRINUSE) {
                let holders = crate::sys::procnet::udp_sockets_on(port)
                    .map(|inodes| crate::sys::procnet::holders(&inodes))
                    .unwrap_or_default();
                BindError::InUse { port, holders }
            } else {
                os("binding", e)
            });
        }
        let fd = Arc::new(fd);
        Ok((0..n.max(1))
            .map(|_| Self::with_buffers(fd.clone(), batch))
            .collect())
    }

    fn with_buffers(fd: Arc<OwnedFd>, batch: usize) -> Self {
        let batch = batch.max(1);
        // SAFETY: sockaddr_in6, iovec and mmsghdr are plain C structs for
        // which all-zero bytes are valid values.
        let (name, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_in6>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        BatchSocket {
            fd,
            rx: RecvBatch::new(batch),
            tx_names: vec![name; batch].into_boxed_slice(),
            tx_cmsgs: vec![CmsgBuf::default(); batch].into_boxed_slice(),
            tx_iovs: vec![iov; batch].into_boxed_slice(),
            tx_hdrs: vec![hdr; batch].into_boxed_slice(),
            received: vec![
                Received {
                    src: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
                    dst: None,
                    rx_ns: 0,
                    len: 0,
                    truncated: false,
                    fragment: false,
                };
                batch
            ]
            .into_boxed_slice(),
        }
    }

    /// The bound local port.
    pub fn local_port(&self) -> io::Result<u16> {
        local_port_of(&self.fd)
    }

    /// Receives up to a batch (blocks up to the timeout for the first).
    /// Returns how many; 0 on timeout or interruption.
    pub fn recv(&mut self) -> io::Result<usize> {
        let got = match self.rx.recv(self.fd.as_fd(), libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(e),
                };
            }
        };
        for i in 0..got {
            let c = self.rx.cmsgs(i);
            self.received[i] = Received {
                // A dual-stack socket always says where from.
                src: self
                    .rx
                    .source(i)
                    .unwrap_or(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::UNSPECIFIED,
                        0,
                        0,
                        0,
                    ))),
                dst: c.dst,
                rx_ns: c.rx_ns,
                len: self.rx.len(i),
                truncated: self.rx.truncated(i),
                fragment: c.fragment,
            };
        }
        Ok(got)
    }

    /// A reader of the datagrams the kernel has dropped on the socket, for
    /// the control thread.
    pub fn drops_reader(&self) -> SocketDrops {
        SocketDrops {
            fd: self.fd.clone(),
            last: Mutex::new((0, 0)),
        }
    }

    /// Metadata of received message `i` (of the last `recv`).
    pub fn received(&self, i: usize) -> Received {
        self.received[i]
    }

    /// The buffer of message `i`: holds the request after `recv`; the
    /// worker writes the reply over it.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8; BUF_LEN] {
        self.rx.buf_mut(i)
    }

    /// Sends replies: for each `(i, len, stamp)` in `replies`, the first
    /// `len` bytes of buffer `i` go back to message `i`'s source, from its
    /// destination address; with `stamp`, the kernel's software transmit
    /// stamp is queued for [`Self::tx_stamps`]. A reply the kernel refuses
    /// (no route, a broadcast address) is skipped and counted; the ones
    /// after it are still sent.
    pub fn send(&mut self, replies: &[(usize, usize, bool)]) -> SendOutcome {
        debug_assert!(
            replies.len() <= self.tx_hdrs.len(),
            "more replies than a batch"
        );
        let mut out = SendOutcome::default();
        let mut k = 0;
        for &(i, len, stamp) in replies.iter().take(self.tx_hdrs.len()) {
            let Some(rec) = self.received.get(i).copied() else {
                debug_assert!(
                    false,
                    "reply to message {i} of a batch of {}",
                    self.received.len()
                );
                out.failed += 1;
                continue;
            };
            // sendmmsg only reads through this pointer.
            self.tx_iovs[k] = libc::iovec {
                iov_base: self.rx.buf(i).as_ptr().cast_mut().cast(),
                iov_len: len.min(BUF_LEN),
            };
            self.tx_names[k] = sockaddr6(&to_v6(rec.src));
            let mut clen = cmsg::write_pktinfo(&mut self.tx_cmsgs[k], rec.dst);
            if stamp {
                clen = cmsg::append_tx_stamp_request(&mut self.tx_cmsgs[k], clen);
            }
            let h = &mut self.tx_hdrs[k].msg_hdr;
            h.msg_name = (&raw mut self.tx_names[k]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            h.msg_iov = &raw mut self.tx_iovs[k];
            h.msg_iovlen = 1;
            (h.msg_control, h.msg_controllen) = if clen > 0 {
                self.tx_cmsgs[k].as_control(clen)
            } else {
                (std::ptr::null_mut(), 0)
            };
            h.msg_flags = 0;
            k += 1;
        }
        let mut at = 0;
        while at < k {
            // SAFETY: headers at..k (all rewritten above) point at live
            // buffers owned by `self` (tx names, iovecs → the receive
            // batch's buffers, tx cmsgs) with correct lengths.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.tx_hdrs[at..].as_mut_ptr(),
                    (k - at) as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                out.sent += r as usize;
                at += r as usize;
                continue;
            }
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // sendmmsg stops at the first message the kernel refuses and
            // returns how many went before it; sent again, that message
            // fails again (its error is returned this time), and is
            // skipped alone. (0, which the kernel does not return for a
            // non-empty batch, is handled the same way, so the loop ends.)
            out.failed += 1;
            at += 1;
        }
        out
    }
}

impl BatchSocket {
    /// Reads the transmit stamps waiting on the socket's error queue
    /// (without blocking): for each, the datagram as the kernel looped it
    /// back (link, IP and UDP headers, then the reply) and its software
    /// stamp in Unix ns. Overwrites the receive batch: call it after
    /// [`Self::send`]. Returns how many were read. The queue is the
    /// socket's, shared by the workers: any of them may read a stamp of
    /// another's reply.
    pub fn tx_stamps(&mut self, mut f: impl FnMut(&[u8], u64)) -> usize {
        let mut total = 0;
        loop {
            let got = self
                .rx
                .recv(self.fd.as_fd(), libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
                .unwrap_or(0);
            for i in 0..got {
                let ns = self.rx.cmsgs(i).sw_stamp_ns;
                let len = self.rx.len(i).min(BUF_LEN);
                f(&self.rx.buf(i)[..len], ns);
            }
            total += got;
            if got < self.tx_hdrs.len() {
                return total;
            }
        }
    }
}

/// `SO_MEMINFO` (asm-generic/socket.h; not in the libc crate for this
/// target) and the length of what it returns (linux/sock_diag.h).
const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_VARS: usize = 9;

/// `SK_MEMINFO_DROPS` of a socket: every datagram it dropped so far (the
/// kernel's 32-bit counter), or `None` if the kernel would not say. Used
/// by the server's socket datapath and the load generator's sockets.
pub(crate) fn meminfo_drops(fd: &OwnedFd) -> Option<u32> {
    let (info, len) =
        sockopt::get::<[u32; SK_MEMINFO_VARS]>(fd.as_raw_fd(), libc::SOL_SOCKET, SO_MEMINFO)
            .ok()?;
    // Any other length: not the array we know (another kernel or arch).
    (len == size_of_val(&info)).then_some(info[libc::SK_MEMINFO_DROPS as usize])
}

/// The datagrams the kernel dropped on the socket (`SO_MEMINFO`): for a
/// full receive buffer, a bad checksum, or an empty datagram (see the
/// module docs). Read by the control thread, never on the hot path.
#[derive(Debug)]
pub struct SocketDrops {
    fd: Arc<OwnedFd>,
    /// The kernel's 32-bit counter as last read, and the 64-bit total.
    last: Mutex<(u32, u64)>,
}

impl SocketDrops {
    /// All drops so far (the kernel's 32-bit counter, followed across its
    /// wraps as long as it is read more often than it wraps).
    pub fn total(&self) -> Option<u64> {
        let now = meminfo_drops(&self.fd)?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let total = last.1 + u64::from(now.wrapping_sub(last.0));
        *last = (now, total);
        Some(total)
    }
}

fn sockaddr6(a: &SocketAddrV6) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
    let mut s: libc::sockaddr_in6 = unsafe { zeroed() };
    s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    s.sin6_port = a.port().to_be();
    s.sin6_addr.s6_addr = a.ip().octets();
    s.sin6_scope_id = a.scope_id();
    s
}

fn to_v6(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        SocketAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::clock::Clock as _;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn loopback_round_trip_with_pktinfo_and_timestamps() {
        let mut s = BatchSocket::bind(0, 8, Duration::from_millis(500)).unwrap();
        let port = s.local_port().unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        c.send_to(b"world!", ("127.0.0.1", port)).unwrap();
        let mut got = 0;
        let mut replies = Vec::new();
        while got < 2 {
            let n = s.recv().unwrap();
            assert!(n > 0, "timed out");
            for i in 0..n {
                let r = s.received(i);
                assert_eq!(r.src, c.local_addr().unwrap());
                assert_eq!(r.dst, Some("127.0.0.1".parse().unwrap()));
                assert!(r.rx_ns > 1_600_000_000_000_000_000);
                let len = r.len;
                s.buf_mut(i)[..len].make_ascii_uppercase();
                replies.push((i, len, false));
            }
            assert_eq!(
                s.send(&replies),
                SendOutcome {
                    sent: replies.len(),
                    failed: 0
                }
            );
            got += n;
            replies.clear();
        }
        let mut b = [0u8; 16];
        let (n, from) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"HELLO");
        assert_eq!(from.port(), port);
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"WORLD!");
    }

    /// Drops in the kernel's per-CPU input queues so far (the second
    /// column of /proc/net/softnet_stat, summed): loopback traffic the
    /// kernel could not get to a socket.
    fn backlog_drops() -> u64 {
        std::fs::read_to_string("/proc/net/softnet_stat")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter_map(|v| u64::from_str_radix(v, 16).ok())
            .sum()
    }

    #[test]
    fn every_datagram_is_received_or_counted() {
        let mut h = BatchSocket::bind_shared(0, 2, 64, Duration::from_millis(200)).unwrap();
        let port = h[0].local_port().unwrap();
        let drops = h[1].drops_reader();
        assert_eq!(drops.total().expect("SO_MEMINFO"), 0);
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let backlog_before = backlog_drops();
        // Far more than the receive buffer holds, none read meanwhile.
        const FLOOD: u64 = 60_000;
        for _ in 0..FLOOD {
            c.send_to(&[0u8; 48], ("127.0.0.1", port)).unwrap();
        }
        let mut received = 0u64;
        for s in &mut h {
            loop {
                let n = s.recv().unwrap() as u64;
                if n == 0 {
                    break;
                }
                received += n;
            }
        }
        let dropped = drops.total().expect("SO_MEMINFO");
        assert!(dropped > 0);
        // Each datagram reached the socket (received, or dropped there and
        // counted) or, when the kernel deferred its softirq work, perhaps
        // died in the input queue before it: never counted twice.
        let before_socket = backlog_drops() - backlog_before;
        assert!(received + dropped <= FLOOD, "{received} + {dropped}");
        assert!(
            received + dropped + before_socket >= FLOOD,
            "{received} + {dropped} + {before_socket}"
        );
        assert_eq!(
            drops.total().expect("SO_MEMINFO"),
            dropped,
            "read again: the same"
        );
    }

    /// Receives `want` datagrams in one batch (they were sent before; a
    /// short wait lets the kernel finish delivering them); returns their
    /// (index, len, no stamp) triples.
    fn recv_n(s: &mut BatchSocket, want: usize) -> Vec<(usize, usize, bool)> {
        std::thread::sleep(Duration::from_millis(50));
        let n = s.recv().unwrap();
        assert_eq!(n, want, "all in one batch");
        (0..n).map(|i| (i, s.received(i).len, false)).collect()
    }

    #[test]
    fn a_stamped_reply_leaves_its_transmit_stamp_on_the_error_queue() {
        let mut s = BatchSocket::bind(0, 8, Duration::from_millis(500)).unwrap();
        let port = s.local_port().unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for m in [b"stamp me", b"not me!!"] {
            c.send_to(m, ("127.0.0.1", port)).unwrap();
        }
        let mut replies = recv_n(&mut s, 2);
        replies[0].2 = true;
        let before = crate::sys::clock::SystemClock.now_unix_nanos();
        assert_eq!(s.send(&replies).sent, 2);
        let after = crate::sys::clock::SystemClock.now_unix_nanos();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.is_empty() && std::time::Instant::now() < deadline {
            s.tx_stamps(|frame, ns| got.push((frame.to_vec(), ns)));
        }
        // One stamp, for the reply that asked, with the reply at the end
        // of the looped-back frame, taken while it was sent.
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].0.ends_with(b"stamp me"), "{:?}", got[0].0);
        assert!(
            (before..=after).contains(&got[0].1),
            "{before} {} {after}",
            got[0].1
        );
    }

    #[test]
    fn one_refused_reply_does_not_drop_the_rest() {
        let mut s = BatchSocket::bind(0, 8, Duration::from_millis(500)).unwrap();
        let port = s.local_port().unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for m in [b"one", b"two", b"thr"] {
            c.send_to(m, ("127.0.0.1", port)).unwrap();
        }
        // One recvmmsg takes all three (they are queued before it runs).
        let replies = recv_n(&mut s, 3);
        assert_eq!(replies.len(), 3);
        // The second reply goes to a broadcast address, which the kernel
        // refuses (no SO_BROADCAST): only it may be lost.
        s.received[1].src = "255.255.255.255:123".parse().unwrap();
        assert_eq!(s.send(&replies), SendOutcome { sent: 2, failed: 1 });
        let mut b = [0u8; 8];
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"one");
        let (n, _) = c.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"thr", "the reply after the refused one was sent");
    }

    /// A socket of another program on the same port, made as such a
    /// program would (`SO_REUSEPORT` and/or `SO_REUSEADDR`).
    fn try_foreign(addr: &str, reuseport: bool, reuseaddr: bool) -> nix::Result<OwnedFd> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket, sockopt,
        };
        let addr: SocketAddr = addr.parse().unwrap();
        let family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
        if addr.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
        }
        setsockopt(&fd, sockopt::ReusePort, &reuseport)?;
        setsockopt(&fd, sockopt::ReuseAddr, &reuseaddr)?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
        Ok(fd)
    }

    fn foreign(addr: &str, reuseport: bool, reuseaddr: bool) -> OwnedFd {
        try_foreign(addr, reuseport, reuseaddr).unwrap()
    }

    /// How other programs bind a port: chronyd's way (SO_REUSEPORT, IPv4
    /// and IPv6 apart), both options, none, one address only.
    const FOREIGN_WAYS: [(&str, bool, bool); 6] = [
        ("[::]", true, false),
        ("0.0.0.0", true, false),
        ("0.0.0.0", true, true),
        ("0.0.0.0", false, false),
        ("127.0.0.1", true, true),
        ("[::1]", true, true),
    ];

    fn free_port() -> u16 {
        UdpSocket::bind("[::]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_port_held_by_another_socket_is_refused() {
        let me = format!("(pid {})", std::process::id());
        for (addr, reuseport, reuseaddr) in FOREIGN_WAYS {
            let port = free_port();
            let _held = foreign(&format!("{addr}:{port}"), reuseport, reuseaddr);
            let e = BatchSocket::bind_shared(port, 2, 8, Duration::from_millis(100))
                .expect_err("the port is held");
            match &e {
                BindError::InUse { port: p, holders } => {
                    assert_eq!(*p, port);
                    assert!(holders.iter().any(|h| h.ends_with(&me)), "{holders:?}");
                }
                other => panic!("{addr}: {other}"),
            }
            assert!(e.to_string().contains("is in use by"), "{e}");
        }
    }

    #[test]
    fn no_other_socket_can_bind_the_port_and_every_worker_receives() {
        let mut h = BatchSocket::bind_shared(0, 2, 4, Duration::from_millis(50)).unwrap();
        let port = h[0].local_port().unwrap();
        for (addr, reuseport, reuseaddr) in FOREIGN_WAYS {
            let r = try_foreign(&format!("{addr}:{port}"), reuseport, reuseaddr);
            assert_eq!(
                r.err(),
                Some(nix::errno::Errno::EADDRINUSE),
                "{addr} reuseport {reuseport} reuseaddr {reuseaddr}"
            );
        }
        // One queue, taken by whichever worker asks: IPv4 and IPv6.
        let c4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c6 = UdpSocket::bind("[::1]:0").unwrap();
        for _ in 0..4 {
            c4.send_to(b"ntp", ("127.0.0.1", port)).unwrap();
            c6.send_to(b"ntp", ("::1", port)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut each = [0; 2];
        for turn in 0..8 {
            each[turn % 2] += h[turn % 2].recv().unwrap();
            if each[0] + each[1] == 8 {
                break;
            }
        }
        assert_eq!(each[0] + each[1], 8, "{each:?}");
        assert!(each[0] > 0 && each[1] > 0, "both took some: {each:?}");
    }

    #[test]
    fn empty_datagrams_are_dropped_by_the_filter() {
        let mut s = BatchSocket::bind(0, 8, Duration::from_millis(500)).unwrap();
        let port = s.local_port().unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(&[], ("127.0.0.1", port)).unwrap();
        c.send_to(&[7u8; 48], ("127.0.0.1", port)).unwrap();
        assert_eq!(s.recv().unwrap(), 1);
        let r = s.received(0);
        assert_eq!((r.len, r.fragment, r.truncated), (48, false, false));
        assert_eq!(
            s.drops_reader().total().expect("SO_MEMINFO"),
            1,
            "the kernel counts the filter's drop"
        );
    }
}
