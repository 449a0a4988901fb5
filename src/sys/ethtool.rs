//! A driver's own statistics (what `ethtool -S` prints), through the
//! `SIOCETHTOOL` ioctl: the names (`ETHTOOL_GSTRINGS`) and values
//! (`ETHTOOL_GSTATS`) of its `ETH_SS_STATS` set.
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
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any driver has (mlx5 has a few thousand).
const MAX_STATS: usize = 1 << 16;

/// The driver statistics of `iface`: `(name, value)` in the driver's order.
pub fn stats(iface: &str) -> io::Result<Vec<(String, u64)>> {
    let sock: OwnedFd = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO).to_le();
    info[1] = 1u64 << ETH_SS_STATS;
    ethtool(&sock, iface, &mut info)?;
    let n = if info[1] & (1 << ETH_SS_STATS) == 0 {
        0
    } else {
        (info[2] as u32) as usize
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_STATS {
        return Err(io::Error::other(format!("{iface}: {n} driver statistics")));
    }
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[]; }:
    // 12 bytes of header, then the names; u64 words keep it aligned.
    let mut names = vec![0u64; (12 + n * ETH_GSTRING_LEN).div_ceil(8)];
    set_u32s(&mut names, &[ETHTOOL_GSTRINGS, ETH_SS_STATS, n as u32]);
    ethtool(&sock, iface, &mut names)?;
    // struct ethtool_stats { u32 cmd, n_stats; u64 data[]; }
    let mut values = vec![0u64; 1 + n];
    set_u32s(&mut values, &[ETHTOOL_GSTATS, n as u32]);
    ethtool(&sock, iface, &mut values)?;
    let bytes: Vec<u8> = names.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let got = (u32_at(&values, 1) as usize).min(n);
    Ok((0..got)
        .map(|i| {
            let raw = &bytes[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            (
                String::from_utf8_lossy(&raw[..end]).into_owned(),
                values[1 + i],
            )
        })
        .collect())
}

/// Frames sent with `XDP_TX` that the driver of `iface` dropped: the sum
/// of its statistics named like `xdp_tx_err` (veth: `rx_queue_N_xdp_tx_errors`;
/// mlx5: `rx_xdp_tx_err`). 0 for a driver that counts none.
pub fn xdp_tx_errors(iface: &str) -> io::Result<u64> {
    Ok(stats(iface)?
        .into_iter()
        .filter(|(name, _)| name.contains("xdp_tx_err"))
        .map(|(_, v)| v)
        .fold(0, u64::wrapping_add))
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

/// One `SIOCETHTOOL` request on `iface` with the command struct in `buf`
/// (one of the three above; refused unless `buf` holds every element its
/// count field asks the kernel to write).
fn ethtool(sock: &OwnedFd, iface: &str, buf: &mut [u64]) -> io::Result<()> {
    let bytes = buf.len() * 8;
    let needed = match u32_at(buf, 0) {
        // One set asked for: the header and one u32.
        ETHTOOL_GSSET_INFO if buf.len() >= 2 && buf[1].count_ones() == 1 => 20,
        ETHTOOL_GSTRINGS => 12 + u32_at(buf, 2) as usize * ETH_GSTRING_LEN,
        ETHTOOL_GSTATS => 8 + u32_at(buf, 1) as usize * 8,
        _ => usize::MAX,
    };
    if needed > bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ethtool request larger than its buffer",
        ));
    }
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
    ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: `ifr` names the interface and points at `buf`, which holds
    // the command's struct; the kernel writes at most the elements its
    // count field names, and `buf` was checked above to hold them. `buf`
    // outlives the call; `sock` is an open socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_fields_in_u64_words() {
        let mut b = [0u64; 2];
        set_u32s(&mut b, &[1, 2, 3]);
        assert_eq!((u32_at(&b, 0), u32_at(&b, 1), u32_at(&b, 2)), (1, 2, 3));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(stats("").is_err());
        assert!(stats("a-name-far-too-long-for-ifreq").is_err());
        assert!(stats("no-such-if0").is_err());
    }
}
