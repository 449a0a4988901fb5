//! A driver's own statistics (what `ethtool -S` prints), through the
//! `SIOCETHTOOL` ioctl: the names (`ETHTOOL_GSTRINGS`) and values
//! (`ETHTOOL_GSTATS`) of its `ETH_SS_STATS` set; its timestamping
//! capabilities and clock (`ETHTOOL_GET_TS_INFO`, what `ethtool -T`
//! prints); and the NIC-wide hardware timestamping setting
//! (`SIOCGHWTSTAMP` / `SIOCSHWTSTAMP`), which ntpx only ever widens.
//!
//! ntpx reads the drivers' XDP transmit errors from it: a frame the XDP
//! program sent with `XDP_TX` that the driver then dropped (on a veth: the
//! peer has no NAPI ring to take it) is counted nowhere else. The ioctl is
//! three small structs; the maintained netlink crate for ethtool is
//! asynchronous (tokio), which nothing else here needs.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GET_TS_INFO: u32 = 0x41;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any driver has (mlx5 has a few thousand).
const MAX_STATS: usize = 1 << 16;

/// The driver statistics of `iface`: `(name, value)` in the driver's order.
pub fn stats(iface: &str) -> io::Result<Vec<(String, u64)>> {
    let sock = dgram_socket()?;
    // A driver's count can change between the calls (channels added):
    // the kernel then writes its new count (the guard page stops it), or
    // reports it; ask again.
    for _ in 0..3 {
        if let Some(stats) = stats_once(&sock, iface)? {
            return Ok(stats);
        }
    }
    Err(io::Error::other(format!(
        "{iface}: the driver's statistics kept changing"
    )))
}

/// One try: `None` if the count changed underway.
fn stats_once(sock: &OwnedFd, iface: &str) -> io::Result<Option<Vec<(String, u64)>>> {
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
    let mut info = Guarded::new(3)?;
    set_u32s(info.words(), &[ETHTOOL_GSSET_INFO, 0]);
    info.words()[1] = 1u64 << ETH_SS_STATS;
    ethtool(sock, iface, &mut info)?;
    let n = if info.words()[1] & (1 << ETH_SS_STATS) == 0 {
        0
    } else {
        u32_at(info.words(), 4) as usize
    };
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    if n > MAX_STATS {
        return Err(io::Error::other(format!("{iface}: {n} driver statistics")));
    }
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[]; }:
    // 12 bytes of header, then the names.
    let mut names = Guarded::new((12 + n * ETH_GSTRING_LEN).div_ceil(8))?;
    set_u32s(names.words(), &[ETHTOOL_GSTRINGS, ETH_SS_STATS, n as u32]);
    ethtool(sock, iface, &mut names)?;
    // struct ethtool_stats { u32 cmd, n_stats; u64 data[]; }
    let mut values = Guarded::new(1 + n)?;
    set_u32s(values.words(), &[ETHTOOL_GSTATS, n as u32]);
    ethtool(sock, iface, &mut values)?;
    if u32_at(names.words(), 2) as usize != n || u32_at(values.words(), 1) as usize != n {
        return Ok(None);
    }
    let bytes: Vec<u8> = names.words().iter().flat_map(|w| w.to_ne_bytes()).collect();
    let values = values.words();
    Ok(Some(
        (0..n)
            .map(|i| {
                let raw = &bytes[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                (
                    String::from_utf8_lossy(&raw[..end]).into_owned(),
                    values[1 + i],
                )
            })
            .collect(),
    ))
}

/// Frames sent with `XDP_TX` that the driver of `iface` dropped, from its
/// statistics named like `xdp_tx_err` (veth: `rx_queue_N_xdp_tx_errors`;
/// mlx5: `rx_xdp_tx_err`, and per channel `rxN_xdp_tx_err`): the total
/// where the driver has one (a name without digits), else the sum over
/// its queues. 0 for a driver that counts none.
pub fn xdp_tx_errors(iface: &str) -> io::Result<u64> {
    let (mut total, mut queues) = (None::<u64>, 0u64);
    for (name, v) in stats(iface)? {
        if !name.contains("xdp_tx_err") {
            continue;
        }
        if name.bytes().any(|b| b.is_ascii_digit()) {
            queues = queues.wrapping_add(v);
        } else {
            total = Some(total.unwrap_or(0).wrapping_add(v));
        }
    }
    Ok(total.unwrap_or(queues))
}

/// A buffer of u64 words that ends where an inaccessible page begins.
///
/// The kernel writes a driver's *current* number of names or values,
/// whatever count the request carried: if it grew since we asked, the
/// write runs into the guard page, the kernel's copy faults and the ioctl
/// fails with `EFAULT`, instead of overwriting our memory.
struct Guarded {
    map: std::ptr::NonNull<libc::c_void>,
    map_len: usize,
    /// Bytes before the guard page.
    body: usize,
    words: usize,
}

impl Guarded {
    fn new(words: usize) -> io::Result<Self> {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        let body = (words * 8).div_ceil(page).max(1) * page;
        let map_len = body + page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = std::ptr::NonNull::new(p).ok_or_else(io::Error::last_os_error)?;
        // Unmapped by Drop from here on, also on the error below.
        let g = Guarded {
            map,
            map_len,
            body,
            words,
        };
        // SAFETY: the last page of the mapping just made (`body` is inside
        // it); nothing refers to it.
        let rc = unsafe { libc::mprotect(p.cast::<u8>().add(body).cast(), page, libc::PROT_NONE) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(g)
    }

    /// The words, ending right at the guard page (zeroed at first).
    fn words(&mut self) -> &mut [u64] {
        // SAFETY: the `words` u64s end at `body`, the start of the guard
        // page, and start inside the mapping (`body` >= words * 8); that
        // part is readable and writable, 8-aligned (a page-aligned end,
        // whole words), and lives as long as `self`; `&mut self` makes
        // this the only reference.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map
                    .as_ptr()
                    .cast::<u8>()
                    .add(self.body - self.words * 8)
                    .cast::<u64>(),
                self.words,
            )
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no reference
        // into it outlives `self` (`words` borrows `self`).
        unsafe { libc::munmap(self.map.as_ptr(), self.map_len) };
    }
}

/// Writes native-endian u32 fields at the start of a u64 buffer.
fn set_u32s(buf: &mut [u64], fields: &[u32]) {
    for (i, f) in fields.iter().enumerate() {
        let word = &mut buf[i / 2];
        let mut b = word.to_ne_bytes();
        b[(i % 2) * 4..(i % 2) * 4 + 4].copy_from_slice(&f.to_ne_bytes());
        *word = u64::from_ne_bytes(b);
    }
}

fn u32_at(buf: &[u64], i: usize) -> u32 {
    let b = buf[i / 2].to_ne_bytes();
    u32::from_ne_bytes([
        b[(i % 2) * 4],
        b[(i % 2) * 4 + 1],
        b[(i % 2) * 4 + 2],
        b[(i % 2) * 4 + 3],
    ])
}

/// What `ETHTOOL_GET_TS_INFO` says about an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsInfo {
    /// `SOF_TIMESTAMPING_*` capabilities.
    pub so_timestamping: u32,
    /// The PHC, `/dev/ptp<index>`, if the NIC has one.
    pub phc_index: Option<u32>,
    /// `HWTSTAMP_FILTER_*` receive filters it supports (bit = filter).
    pub rx_filters: u32,
}

fn dgram_socket() -> io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// The timestamping capabilities and clock of `iface`.
pub fn ts_info(iface: &str) -> io::Result<TsInfo> {
    // struct ethtool_ts_info: cmd, so_timestamping, phc_index (s32),
    // tx_types, tx_reserved[3], rx_filters, rx_reserved[3]: 11 u32.
    let sock = dgram_socket()?;
    let mut b = Guarded::new(6)?;
    set_u32s(b.words(), &[ETHTOOL_GET_TS_INFO]);
    ethtool(&sock, iface, &mut b)?;
    let w = b.words();
    Ok(TsInfo {
        so_timestamping: u32_at(w, 1),
        phc_index: u32::try_from(u32_at(w, 2) as i32).ok(),
        rx_filters: u32_at(w, 7),
    })
}

/// `HWTSTAMP_FILTER_NONE`, `_ALL` and `_NTP_ALL` (linux/net_tstamp.h).
pub const HWTSTAMP_FILTER_NONE: i32 = 0;
/// Every packet.
pub const HWTSTAMP_FILTER_ALL: i32 = 1;
/// Every NTP packet.
pub const HWTSTAMP_FILTER_NTP_ALL: i32 = 15;

/// The receive filter to set so that NTP requests are stamped, given the
/// current one and the filters the NIC supports (bit = filter): `None`
/// when the current one already covers NTP (ALL, NTP_ALL) or nothing
/// wider is supported. Never a narrower one: a PTP filter that ptp4l (or
/// chronyd's `hwtimestamp`) set becomes ALL, which still covers PTP; only
/// NONE may become NTP_ALL.
pub fn widen_rx_filter(current: i32, supported: u32) -> Option<i32> {
    let has = |f: i32| supported & (1 << f) != 0;
    match current {
        HWTSTAMP_FILTER_ALL | HWTSTAMP_FILTER_NTP_ALL => None,
        HWTSTAMP_FILTER_NONE if has(HWTSTAMP_FILTER_NTP_ALL) => Some(HWTSTAMP_FILTER_NTP_ALL),
        _ if has(HWTSTAMP_FILTER_ALL) => Some(HWTSTAMP_FILTER_ALL),
        _ => None,
    }
}

/// Makes `iface` stamp received NTP packets in hardware, widening its
/// receive filter if needed and leaving its transmit setting as it is.
/// Returns the filter now in force. The setting is the NIC's, shared with
/// every other user (ptp4l, chronyd's `hwtimestamp`): it is never
/// narrowed, and never reset when ntpx exits.
pub fn enable_rx_hw_timestamps(iface: &str, info: &TsInfo) -> io::Result<i32> {
    let sock = dgram_socket()?;
    // struct hwtstamp_config { int flags; int tx_type; int rx_filter; }
    let mut cfg = Guarded::new(2)?;
    hwtstamp(&sock, iface, libc::SIOCGHWTSTAMP, &mut cfg)?;
    let current = u32_at(cfg.words(), 2) as i32;
    let Some(want) = widen_rx_filter(current, info.rx_filters) else {
        return Ok(current);
    };
    // Flags (e.g. HWTSTAMP_FLAG_BONDED_PHC_INDEX) and the transmit type as
    // they were: only the receive filter changes.
    let (flags, tx_type) = (u32_at(cfg.words(), 0), u32_at(cfg.words(), 1));
    set_u32s(cfg.words(), &[flags, tx_type, want as u32]);
    hwtstamp(&sock, iface, libc::SIOCSHWTSTAMP, &mut cfg)?;
    // The driver may have chosen a wider filter than asked.
    Ok(u32_at(cfg.words(), 2) as i32)
}

/// `SIOCGHWTSTAMP` / `SIOCSHWTSTAMP` on `iface` with the config in `buf`.
fn hwtstamp(sock: &OwnedFd, iface: &str, req: libc::c_ulong, buf: &mut Guarded) -> io::Result<()> {
    ifreq_ioctl(sock, iface, req, buf)
}

/// One `SIOCETHTOOL` request on `iface` with the command struct in `buf`
/// (one of the three above). A kernel that writes more than `buf` holds
/// hits its guard page: `EFAULT`.
fn ethtool(sock: &OwnedFd, iface: &str, buf: &mut Guarded) -> io::Result<()> {
    ifreq_ioctl(sock, iface, libc::SIOCETHTOOL, buf)
}

/// An interface ioctl whose `ifreq` points at the struct in `buf`.
fn ifreq_ioctl(
    sock: &OwnedFd,
    iface: &str,
    req: libc::c_ulong,
    buf: &mut Guarded,
) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= ifr.ifr_name.len() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {iface:?}"),
        ));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = buf.words().as_mut_ptr().cast();
    // SAFETY: `ifr` names the interface and points at `buf`'s words, which
    // hold the request's struct (the callers: SIOCETHTOOL's commands,
    // SIOCGHWTSTAMP / SIOCSHWTSTAMP's hwtstamp_config; all of them read
    // and write only through `ifr_data`). Whatever the kernel writes lands in those
    // words or faults on the guard page right behind them (the kernel
    // checks its user copies: EFAULT, never a stray write), so no memory
    // but `buf`'s own can change. `buf` outlives the call; `sock` is an
    // open socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rx_filter_is_only_ever_widened() {
        let all = 1 << HWTSTAMP_FILTER_ALL;
        let ntp = 1 << HWTSTAMP_FILTER_NTP_ALL;
        let ptp_v2_event = 12;
        assert_eq!(widen_rx_filter(0, all | ntp), Some(HWTSTAMP_FILTER_NTP_ALL));
        assert_eq!(widen_rx_filter(0, all), Some(HWTSTAMP_FILTER_ALL));
        // ptp4l's PTP filter: ALL covers it and NTP; NTP_ALL would not.
        assert_eq!(
            widen_rx_filter(ptp_v2_event, all | ntp),
            Some(HWTSTAMP_FILTER_ALL)
        );
        assert_eq!(widen_rx_filter(ptp_v2_event, ntp), None);
        assert_eq!(widen_rx_filter(HWTSTAMP_FILTER_ALL, all | ntp), None);
        assert_eq!(widen_rx_filter(HWTSTAMP_FILTER_NTP_ALL, all | ntp), None);
        assert_eq!(widen_rx_filter(0, 0), None);
    }

    #[test]
    fn a_veth_has_no_clock() {
        // Loopback: no PHC, no hardware stamps.
        let i = ts_info("lo").unwrap();
        assert_eq!(i.phc_index, None);
    }

    #[test]
    fn u32_fields_in_u64_words() {
        let mut b = [0u64; 2];
        set_u32s(&mut b, &[1, 2, 3]);
        assert_eq!((u32_at(&b, 0), u32_at(&b, 1), u32_at(&b, 2)), (1, 2, 3));
    }

    #[test]
    fn guarded_words_end_at_the_guard_page() {
        for words in [1, 3, 512, 513, 2000] {
            let mut g = Guarded::new(words).unwrap();
            let w = g.words();
            assert_eq!(w.len(), words);
            assert!(w.iter().all(|&x| x == 0));
            w[words - 1] = 7;
            let end = w.as_ptr() as usize + words * 8;
            assert_eq!(end % 4096, 0, "ends on a page boundary");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(stats("").is_err());
        assert!(stats("a-name-far-too-long-for-ifreq").is_err());
        assert!(stats("no-such-if0").is_err());
    }
}
