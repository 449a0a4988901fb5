//! One `recvmmsg` batch: the headers, the buffers they point into, and
//! what the kernel said about each message. Shared by the server's socket
//! and the generator's, which use it.
//!
//! Allocated once; each [`RecvBatch::recv`] rewrites every header before
//! the call (so a header never points at anything but this batch's own
//! buffers) and reads back lengths, flags, source addresses and control
//! messages ([`super::cmsg`]) after it. Through `libc`: `nix`'s `recvmmsg`
//! does not reset each header's control-buffer length between calls, so a
//! batch without some control message would truncate those of later ones.

use super::cmsg::{self, CmsgBuf, Cmsgs, unmap};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Buffers and headers for up to `n` datagrams of up to `LEN` bytes.
pub(crate) struct RecvBatch<const LEN: usize> {
    bufs: Box<[[u8; LEN]]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` point only into boxed
// buffers owned by the same batch (their heap addresses do not change when
// the struct moves), are rewritten before every syscall, and are never read
// otherwise. Moving the whole batch to another thread is sound.
unsafe impl<const LEN: usize> Send for RecvBatch<LEN> {}

impl<const LEN: usize> RecvBatch<LEN> {
    /// Room for `n` datagrams (at least one).
    pub(crate) fn new(n: usize) -> Self {
        let n = n.max(1);
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs
        // for which all-zero bytes are valid values.
        let (name, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        RecvBatch {
            bufs: vec![[0u8; LEN]; n].into_boxed_slice(),
            names: vec![name; n].into_boxed_slice(),
            cmsgs: vec![CmsgBuf::default(); n].into_boxed_slice(),
            iovs: vec![iov; n].into_boxed_slice(),
            hdrs: vec![hdr; n].into_boxed_slice(),
        }
    }

    /// One `recvmmsg` on `fd` with `flags`; returns how many datagrams
    /// arrived (the OS error as it is, for the caller to judge).
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<usize> {
        let n = self.hdrs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: LEN,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut self.names[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iovs[i];
            h.msg_iovlen = 1;
            (h.msg_control, h.msg_controllen) = self.cmsgs[i].as_control(cmsg::SPACE);
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` (names,
        // iovecs → bufs, cmsgs) with the lengths stated, alive and
        // unaliased for the call; the fd is borrowed, so open.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((r as usize).min(n))
    }

    /// The length of datagram `i` (cut at `LEN`).
    pub(crate) fn len(&self, i: usize) -> usize {
        (self.hdrs[i].msg_len as usize).min(LEN)
    }

    /// True if datagram `i` did not fit in its buffer.
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The control messages of datagram `i`.
    pub(crate) fn cmsgs(&self, i: usize) -> Cmsgs {
        cmsg::parse(&self.cmsgs[i], self.hdrs[i].msg_hdr.msg_controllen)
    }

    /// Where datagram `i` came from (an IPv4-mapped address as IPv4), if
    /// the kernel said.
    pub(crate) fn source(&self, i: usize) -> Option<SocketAddr> {
        // The kernel sets the length to what it wrote: 0 means no address
        // (and the storage would still hold an earlier one).
        (self.hdrs[i].msg_hdr.msg_namelen > 0)
            .then(|| from_storage(&self.names[i]))
            .flatten()
    }

    /// The buffer of datagram `i`.
    pub(crate) fn buf(&self, i: usize) -> &[u8; LEN] {
        &self.bufs[i]
    }

    /// The buffer of datagram `i`, to write a reply over it.
    pub(crate) fn buf_mut(&mut self, i: usize) -> &mut [u8; LEN] {
        &mut self.bufs[i]
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
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match unmap(ip) {
                IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), port),
                IpAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, a.sin6_scope_id)),
            })
        }
        _ => None,
    }
}
