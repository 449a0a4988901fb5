//! Kernel UDP sockets for the socket datapath: one dual-stack
//! `SO_REUSEPORT` socket per worker, batches through `recvmmsg` /
//! `sendmmsg`, the kernel's software receive stamp (`SO_TIMESTAMPNS`), and
//! the request's destination address (`IPV6_PKTINFO`) so that each reply
//! leaves from the address its request was sent to.
//!
//! The batch buffers are allocated once; `recv` and `send` are one syscall
//! each. `nix` is used for socket set-up; the mmsg calls are made with
//! `libc` directly because `nix::sendmmsg` shares one set of control
//! messages across a batch, and each reply needs its own source address.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Largest request read (longer datagrams are truncated and dropped).
pub const BUF_LEN: usize = 1024;
const CMSG_SPACE: usize = 128;
/// Requested socket receive buffer (bytes).
const RCVBUF: libc::c_int = 4 << 20;

/// One received request.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Where it came from (IPv4 shown as IPv4, not mapped).
    pub src: SocketAddr,
    /// The local address it was sent to, if the kernel said.
    pub dst: Option<IpAddr>,
    /// Kernel software receive stamp (Unix ns), 0 if none.
    pub rx_ns: u64,
    /// Payload length (0..=BUF_LEN); longer than BUF_LEN is flagged.
    pub len: usize,
    /// The datagram did not fit in the buffer.
    pub truncated: bool,
}

/// A dual-stack UDP socket with preallocated batch buffers.
pub struct BatchSocket {
    fd: OwnedFd,
    bufs: Box<[[u8; BUF_LEN]]>,
    names: Box<[libc::sockaddr_in6]>,
    cmsgs: Box<[[u8; CMSG_SPACE]]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    received: Box<[Received]>,
    overflows: u32,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` point only into boxed
// buffers owned by the same BatchSocket (their heap addresses do not change
// when the struct moves), and they are rewritten before every syscall. No
// other thread can reach them, so moving the whole struct to another
// thread is sound.
unsafe impl Send for BatchSocket {}

impl std::fmt::Debug for BatchSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSocket").field("fd", &self.fd).finish()
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `v`, a live
    // c_int; the fd is open (owned).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl BatchSocket {
    /// Opens a dual-stack socket on `[::]:port` with `SO_REUSEPORT` (so
    /// that each worker can have its own), a receive timeout of `timeout`
    /// (for shutdown checks), and batch buffers for `batch` messages.
    pub fn bind(port: u16, batch: usize, timeout: std::time::Duration) -> io::Result<Self> {
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
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // Count what the kernel drops for lack of buffer space: each message
        // then carries the socket's cumulative drop count.
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
        // A deep receive buffer absorbs bursts (FORCE lifts rmem_max for
        // root; otherwise the kernel caps the plain request).
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF).is_err() {
            setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF)?;
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
            return Err(io::Error::last_os_error());
        }
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
        Ok(BatchSocket {
            fd,
            bufs: vec![[0u8; BUF_LEN]; batch].into_boxed_slice(),
            names: vec![name; batch].into_boxed_slice(),
            cmsgs: vec![[0u8; CMSG_SPACE]; batch].into_boxed_slice(),
            iovs: vec![iov; batch].into_boxed_slice(),
            hdrs: vec![hdr; batch].into_boxed_slice(),
            received: vec![
                Received {
                    src: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
                    dst: None,
                    rx_ns: 0,
                    len: 0,
                    truncated: false,
                };
                batch
            ]
            .into_boxed_slice(),
            overflows: 0,
        })
    }

    /// The bound local port.
    pub fn local_port(&self) -> io::Result<u16> {
        // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
        let mut a: libc::sockaddr_in6 = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into `a`.
        let r = unsafe { libc::getsockname(self.fd.as_raw_fd(), (&raw mut a).cast(), &mut len) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u16::from_be(a.sin6_port))
    }

    /// Receives up to a batch (blocks up to the timeout for the first).
    /// Returns how many; 0 on timeout or interruption.
    pub fn recv(&mut self) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: BUF_LEN,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = CMSG_SPACE;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (names,
        // iovecs → bufs, cmsgs) with the lengths stated, and they stay
        // alive and unaliased for the duration of the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = r as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            let (dst, rx_ns, overflows) = parse_cmsgs(&h.msg_hdr);
            if let Some(o) = overflows {
                self.overflows = o;
            }
            self.received[i] = Received {
                src: from_sockaddr6(&self.names[i]),
                dst,
                rx_ns,
                len: (h.msg_len as usize).min(BUF_LEN),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            };
        }
        Ok(got)
    }

    /// Requests the kernel has dropped on this socket so far because its
    /// receive buffer was full (as of the last message received).
    pub fn kernel_drops(&self) -> u32 {
        self.overflows
    }

    /// Metadata of received message `i` (of the last `recv`).
    pub fn received(&self, i: usize) -> Received {
        self.received[i]
    }

    /// The buffer of message `i`: holds the request after `recv`; the
    /// worker writes the reply over it.
    pub fn buf_mut(&mut self, i: usize) -> &mut [u8; BUF_LEN] {
        &mut self.bufs[i]
    }

    /// Sends replies: for each `(i, len)` in `replies`, the first `len`
    /// bytes of buffer `i` go back to message `i`'s source, from its
    /// destination address. Returns how many were sent; stops at the
    /// first error the kernel reports for a message.
    pub fn send(&mut self, replies: &[(usize, usize)]) -> io::Result<usize> {
        let mut k = 0;
        for &(i, len) in replies.iter().take(self.hdrs.len()) {
            let rec = self.received[i];
            self.iovs[k] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: len.min(BUF_LEN),
            };
            self.names[k] = sockaddr6(&to_v6(rec.src));
            let clen = write_pktinfo(&mut self.cmsgs[k], rec.dst);
            let h = &mut self.hdrs[k].msg_hdr;
            h.msg_name = (&raw mut self.names[k]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[k];
            h.msg_iovlen = 1;
            h.msg_control = if clen > 0 {
                self.cmsgs[k].as_mut_ptr().cast()
            } else {
                std::ptr::null_mut()
            };
            h.msg_controllen = clen;
            h.msg_flags = 0;
            k += 1;
        }
        let mut sent = 0;
        while sent < k {
            // SAFETY: headers sent..k point at live buffers owned by `self`
            // (names, iovecs → bufs, cmsgs) with correct lengths.
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.hdrs[sent..].as_mut_ptr(),
                    (k - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if sent > 0 { Ok(sent) } else { Err(e) };
            }
            if r == 0 {
                break;
            }
            sent += r as usize;
        }
        Ok(sent)
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

fn unmap(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

fn from_sockaddr6(s: &libc::sockaddr_in6) -> SocketAddr {
    let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
    let port = u16::from_be(s.sin6_port);
    match unmap(ip) {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        IpAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, s.sin6_scope_id)),
    }
}

/// Reads IPV6_PKTINFO, SCM_TIMESTAMPNS and SO_RXQ_OVFL from a received
/// header.
pub(crate) fn parse_cmsgs(h: &libc::msghdr) -> (Option<IpAddr>, u64, Option<u32>) {
    let mut dst = None;
    let mut rx_ns = 0;
    let mut overflows = None;
    // SAFETY: `h` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR walk only
    // within msg_control[..msg_controllen], and each payload is read
    // unaligned with the size its type defines.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Some(unmap(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    rx_ns = (ts.tv_sec as u64)
                        .wrapping_mul(1_000_000_000)
                        .wrapping_add(ts.tv_nsec as u64);
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    overflows = Some(std::ptr::read_unaligned(data.cast::<u32>()));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (dst, rx_ns, overflows)
}

/// Writes an IPV6_PKTINFO control message selecting `src` as the reply's
/// source address (IPv4 as a mapped address, which the kernel accepts on a
/// dual-stack socket). Returns the control length, 0 if none.
fn write_pktinfo(buf: &mut [u8; CMSG_SPACE], src: Option<IpAddr>) -> usize {
    let Some(src) = src else { return 0 };
    let addr = match src {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    // SAFETY: CMSG_SPACE/LEN are pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
    if space > CMSG_SPACE {
        return 0;
    }
    buf[..space].fill(0);
    // SAFETY: a msghdr whose control buffer is `buf[..space]`; the first
    // header fits (space computed above) and the payload is written
    // unaligned within it.
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_control = buf.as_mut_ptr().cast();
        h.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            ipi6_ifindex: 0,
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
    }
    space
}

#[cfg(test)]
mod tests {
    use super::*;
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
                replies.push((i, len));
            }
            assert_eq!(s.send(&replies).unwrap(), replies.len());
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

    #[test]
    fn kernel_drops_are_reported() {
        let mut s = BatchSocket::bind(0, 8, Duration::from_millis(500)).unwrap();
        let port = s.local_port().unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Far more than the receive buffer holds, none read meanwhile.
        for _ in 0..60_000 {
            let _ = c.send_to(&[0u8; 48], ("127.0.0.1", port));
        }
        // Messages queued before the drops carry no count; drain them, then
        // the next one carries the socket's drop total.
        while s.recv().unwrap() > 0 {}
        assert_eq!(s.kernel_drops(), 0);
        c.send_to(&[0u8; 48], ("127.0.0.1", port)).unwrap();
        assert_eq!(s.recv().unwrap(), 1);
        assert!(s.kernel_drops() > 0);
    }
}
