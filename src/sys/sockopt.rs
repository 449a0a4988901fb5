//! Plain-value socket options: `setsockopt` / `getsockopt` of an integer,
//! an array of them or a struct of them, for every socket here (the
//! server's UDP socket, AF_XDP sockets). Options that carry pointers (a
//! socket filter) are not plain and keep their own call.
//!
//! The socket is a raw descriptor, as the syscalls take it: a wrong or
//! closed one gets an error (or acts on another socket), and puts no
//! memory at stake.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;

/// A value the kernel may read or write as raw bytes: no pointers, and
/// every bit pattern (all zeroes included) valid.
///
/// # Safety
///
/// Implement only for types without pointers or references, for which
/// any bytes the kernel writes are a valid value.
pub(crate) unsafe trait Plain: Sized {
    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: the trait's contract: all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: integers, arrays of them and xdp_statistics (u64s only) have no
// pointers, and every bit pattern is a valid value.
unsafe impl Plain for libc::c_int {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl<const N: usize> Plain for [u32; N] {}
// SAFETY: as above.
unsafe impl Plain for xdp::libc::xdp::XdpStatistics {}

/// `setsockopt(fd, level, name, &v, sizeof v)`.
pub(crate) fn set<T: Plain>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: T,
) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<T>() bytes from `v`, a live value
    // without pointers (Plain).
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const v).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `getsockopt(fd, level, name)` into a `T`; also returns the length the
/// kernel reported (it may have written less than a whole `T`, the rest
/// staying zero).
pub(crate) fn get<T: Plain>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    let mut v = T::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, a live value
    // of that size for which any bytes are valid (Plain), and updates
    // `len`.
    let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((v, len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn set_and_get_round_trip() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        set(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY, 3).unwrap();
        let (v, len): (libc::c_int, usize) =
            get(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY).unwrap();
        assert_eq!((v, len), (3, size_of::<libc::c_int>()));
        let err = set(s.as_raw_fd(), libc::SOL_SOCKET, -1, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
