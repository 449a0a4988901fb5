//! Control messages (`cmsghdr` records) of the batched UDP sockets, for
//! the server's socket datapath and the generator alike.
//!
//! A [`CmsgBuf`] is the control buffer of one message: aligned for
//! `cmsghdr`, owned, and handed to the kernel only through
//! `CmsgBuf::as_control` while a `msghdr` is built for one syscall. What
//! the kernel wrote is read back by [`parse`], a safe function over the
//! buffer's bytes and the length the kernel reported: it walks the records
//! with bounds checks (the `CMSG_FIRSTHDR` / `CMSG_NXTHDR` rules, written
//! out), so no length the kernel — or a bug — leaves behind can make it
//! read outside the buffer. [`write_pktinfo`] builds the one message the
//! server sends (the reply's source address) the same way.
//!
//! The shape follows quinn-udp's `cmsg` module (an aligned buffer type and
//! an encoder/decoder over it); this one needs no `unsafe` because it
//! reads and writes the records as bytes at the offsets `libc` gives.

use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv6Addr};

/// Bytes of control space per message: room for every message we ask for
/// (`CMSG_SPACE` of pktinfo 40, timestamp 32, drop count 24, fragment size
/// 24, and on kernels without `SOF_TIMESTAMPING_OPT_RX_FILTER` a receive
/// `SCM_TIMESTAMPING` 64: 184; on the error queue `SCM_TIMESTAMPING` 64 and
/// the extended error with its address 64).
pub const SPACE: usize = 256;

/// One message's control buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct CmsgBuf([u8; SPACE]);

const _: () = assert!(std::mem::align_of::<CmsgBuf>() >= std::mem::align_of::<libc::cmsghdr>());

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; SPACE])
    }
}

impl std::fmt::Debug for CmsgBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CmsgBuf")
    }
}

impl CmsgBuf {
    /// `(msg_control, msg_controllen)` for a `msghdr` that lets the kernel
    /// write up to the whole buffer (receive) or read its first `len`
    /// bytes (send; `len` is clamped to the buffer).
    pub(crate) fn as_control(&mut self, len: usize) -> (*mut libc::c_void, usize) {
        (self.0.as_mut_ptr().cast(), len.min(SPACE))
    }
}

/// What the control messages of one received datagram said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cmsgs {
    /// `IPV6_PKTINFO`: the local address it was sent to (IPv4 unmapped).
    pub dst: Option<IpAddr>,
    /// `SCM_TIMESTAMPNS`: the kernel's receive stamp (Unix ns), 0 if none.
    pub rx_ns: u64,
    /// `SO_RXQ_OVFL`: the socket's drop count so far, if the kernel said.
    pub drops: Option<u32>,
    /// `IP_RECVFRAGSIZE` / `IPV6_RECVFRAGSIZE`: it was reassembled.
    pub fragment: bool,
    /// `SCM_TIMESTAMPING`'s software stamp (Unix ns), 0 if none: on the
    /// error queue, when a datagram that asked for it was handed to the
    /// driver.
    pub sw_stamp_ns: u64,
}

/// `CMSG_ALIGN`: records start at multiples of the size of `cmsg_len`.
const fn align(n: usize) -> usize {
    let a = size_of::<usize>();
    (n + a - 1) & !(a - 1)
}

/// `CMSG_LEN(0)`: where a record's payload starts.
const HDR: usize = align(size_of::<libc::cmsghdr>());

fn read_usize(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from_ne_bytes(
        b.get(at..at + size_of::<usize>())?.try_into().ok()?,
    ))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One record: level, type and payload.
struct Record<'a> {
    level: i32,
    kind: i32,
    data: &'a [u8],
}

/// The records in `b`, as `CMSG_FIRSTHDR` / `CMSG_NXTHDR` walk them: a
/// record whose header does not fit, or whose length is shorter than its
/// header or runs past the end, ends the walk.
fn records(b: &[u8]) -> impl Iterator<Item = Record<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at + HDR > b.len() {
            return None;
        }
        let len = read_usize(b, at + offset_of!(libc::cmsghdr, cmsg_len))?;
        let level = read_i32(b, at + offset_of!(libc::cmsghdr, cmsg_level))?;
        let kind = read_i32(b, at + offset_of!(libc::cmsghdr, cmsg_type))?;
        if len < HDR || len > b.len() - at {
            return None;
        }
        let data = &b[at + HDR..at + len];
        at += align(len);
        Some(Record { level, kind, data })
    })
}

/// Reads `IPV6_PKTINFO`, `SCM_TIMESTAMPNS`, `SO_RXQ_OVFL` and the fragment
/// sizes from the first `len` bytes of `buf` (the `msg_controllen` the
/// kernel returned; anything longer than the buffer is clamped). A message
/// shorter than its type's payload is passed over; unknown ones are
/// ignored.
pub fn parse(buf: &CmsgBuf, len: usize) -> Cmsgs {
    let mut out = Cmsgs::default();
    for r in records(&buf.0[..len.min(SPACE)]) {
        match (r.level, r.kind) {
            // struct in6_pktinfo { struct in6_addr ipi6_addr; int ifindex; }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                if r.data.len() >= size_of::<libc::in6_pktinfo>() =>
            {
                let mut a = [0u8; 16];
                a.copy_from_slice(&r.data[..16]);
                out.dst = Some(unmap(Ipv6Addr::from(a)));
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                // struct timespec { time_t tv_sec; long tv_nsec; }, both 64-bit here.
                const _: () = assert!(size_of::<libc::timespec>() == 16);
                if let (Some(s), Some(ns)) = (read_i64(r.data, 0), read_i64(r.data, 8)) {
                    out.rx_ns = (s as u64)
                        .wrapping_mul(1_000_000_000)
                        .wrapping_add(ns as u64);
                }
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                // struct scm_timestamping { struct timespec ts[3]; }: [0]
                // is the software stamp.
                if let (Some(s), Some(ns)) = (read_i64(r.data, 0), read_i64(r.data, 8)) {
                    out.sw_stamp_ns = (s as u64)
                        .wrapping_mul(1_000_000_000)
                        .wrapping_add(ns as u64);
                }
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                out.drops = r
                    .data
                    .get(..4)
                    .and_then(|d| d.try_into().ok())
                    .map(u32::from_ne_bytes);
            }
            (libc::IPPROTO_IP, libc::IP_RECVFRAGSIZE)
            | (libc::IPPROTO_IPV6, libc::IPV6_RECVFRAGSIZE) => out.fragment = true,
            _ => {}
        }
    }
    out
}

/// Writes one record (`level`, `kind`, `data`) at `at` (the control
/// length written so far); returns the new length, or `at` unchanged if
/// there is no room.
fn append_record(buf: &mut CmsgBuf, at: usize, level: i32, kind: i32, data: &[u8]) -> usize {
    let len = HDR + data.len();
    let space = align(len);
    let Some(b) = buf.0.get_mut(at..at + space) else {
        return at;
    };
    b.fill(0);
    let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(b, offset_of!(libc::cmsghdr, cmsg_len), &len.to_ne_bytes());
    put(
        b,
        offset_of!(libc::cmsghdr, cmsg_level),
        &level.to_ne_bytes(),
    );
    put(b, offset_of!(libc::cmsghdr, cmsg_type), &kind.to_ne_bytes());
    put(b, HDR, data);
    at + space
}

/// Writes one `IPV6_PKTINFO` message selecting `src` as the reply's source
/// address (IPv4 as a mapped address, which the kernel accepts on a
/// dual-stack socket). Returns the control length to send, 0 if none.
pub fn write_pktinfo(buf: &mut CmsgBuf, src: Option<IpAddr>) -> usize {
    let Some(src) = src else { return 0 };
    let addr = match src {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    // ipi6_addr, then ipi6_ifindex 0: the kernel picks the interface by
    // routing.
    let mut info = [0u8; size_of::<libc::in6_pktinfo>()];
    info[..16].copy_from_slice(&addr.octets());
    append_record(buf, 0, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info)
}

/// `SOF_TIMESTAMPING_TX_SOFTWARE` (linux/net_tstamp.h).
pub const SOF_TIMESTAMPING_TX_SOFTWARE: u32 = 1 << 1;

/// Appends, at `at` (the length written so far), a `SO_TIMESTAMPING`
/// message asking for this datagram's software transmit stamp (on the
/// socket's error queue). Returns the new control length; `at` unchanged
/// if there is no room.
pub fn append_tx_stamp_request(buf: &mut CmsgBuf, at: usize) -> usize {
    append_record(
        buf,
        at,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        &SOF_TIMESTAMPING_TX_SOFTWARE.to_ne_bytes(),
    )
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
pub fn unmap(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a buffer with the kernel's own macros (libc's CMSG_*), the
    /// reference the byte walker must agree with.
    fn with_libc(msgs: &[(i32, i32, &[u8])]) -> (CmsgBuf, usize) {
        let mut buf = CmsgBuf::default();
        let total: usize = msgs
            .iter()
            // SAFETY: CMSG_SPACE is arithmetic.
            .map(|m| unsafe { libc::CMSG_SPACE(m.2.len() as u32) } as usize)
            .sum();
        assert!(total <= SPACE);
        // SAFETY: a zeroed msghdr is valid; its control buffer is `buf`,
        // live and aligned, `total` bytes long; each record written fits
        // (CMSG_NXTHDR returns null past the end, checked).
        unsafe {
            let mut h: libc::msghdr = std::mem::zeroed();
            h.msg_control = buf.0.as_mut_ptr().cast();
            h.msg_controllen = total;
            let mut c = libc::CMSG_FIRSTHDR(&h);
            for (level, kind, data) in msgs {
                assert!(!c.is_null());
                (*c).cmsg_level = *level;
                (*c).cmsg_type = *kind;
                (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
                c = libc::CMSG_NXTHDR(&h, c);
            }
        }
        (buf, total)
    }

    #[test]
    fn reads_what_libc_macros_wrote() {
        let mut pkt = [0u8; 20];
        pkt[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        ts[8..].copy_from_slice(&123_456_789i64.to_ne_bytes());
        let (buf, len) = with_libc(&[
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts),
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pkt),
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes()),
            (
                libc::IPPROTO_IP,
                libc::IP_RECVFRAGSIZE,
                &1480u32.to_ne_bytes(),
            ),
        ]);
        assert_eq!(
            parse(&buf, len),
            Cmsgs {
                dst: Some("2001:db8::7".parse().unwrap()),
                rx_ns: 1_700_000_000_123_456_789,
                drops: Some(7),
                fragment: true,
                sw_stamp_ns: 0,
            }
        );
    }

    #[test]
    fn pktinfo_written_is_what_libc_writes() {
        let mut ours = CmsgBuf::default();
        let n = write_pktinfo(&mut ours, Some("192.0.2.1".parse().unwrap()));
        let mut info = [0u8; 20];
        info[..16].copy_from_slice(&"::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets());
        let (theirs, len) = with_libc(&[(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info)]);
        assert_eq!(n, len);
        assert_eq!(ours.0[..n], theirs.0[..len]);
        assert_eq!(parse(&ours, n).dst, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(write_pktinfo(&mut ours, None), 0);
    }

    #[test]
    fn short_payloads_are_passed_over() {
        let (buf, len) = with_libc(&[
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &[1, 2, 3]),
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &[0; 8]),
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &[9]),
        ]);
        assert_eq!(parse(&buf, len), Cmsgs::default());
    }

    /// Any bytes and any reported length: never a panic, never a read past
    /// the buffer (the walk is bounds-checked slices).
    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut buf = CmsgBuf::default();
            rng.fill(&mut buf.0);
            // Plausible lengths now and then, so that walks go deep.
            if rng.bool() {
                let l = rng.usize(0..48);
                buf.0[..8].copy_from_slice(&l.to_ne_bytes());
            }
            let _ = parse(&buf, rng.usize(0..2 * SPACE));
        }
    }
}
