//! What the kernel says about a network interface: its index, MAC
//! address, addresses with their prefixes, RX queue count and driver.
//!
//! Read once at start by the server and the load generator; ntpx never
//! changes an interface's settings.

use anyhow::{Context, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The interface index of `name`, with a clear error.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| match e {
        nix::errno::Errno::ENODEV => anyhow::anyhow!("no such interface: {name} (see `ip link`)"),
        e => anyhow::anyhow!("cannot look up interface {name}: {e}"),
    })
}

/// Unicast addresses with their prefixes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    /// IPv4 addresses and prefix lengths.
    pub v4: Vec<Ipv4Net>,
    /// IPv6 addresses and prefix lengths.
    pub v6: Vec<Ipv6Net>,
}

/// The addresses configured on `iface`, or on every interface of this
/// network namespace when `iface` is `None`.
pub fn addresses(iface: Option<&str>) -> anyhow::Result<Addresses> {
    let mut out = Addresses::default();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        if iface.is_some_and(|name| ifa.interface_name != name) {
            continue;
        }
        let (Some(addr), mask) = (ifa.address, ifa.netmask) else {
            continue;
        };
        if let Some(a) = addr.as_sockaddr_in() {
            let len = mask
                .and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip()).leading_ones()))
                .unwrap_or(32);
            // leading_ones() of a u32 is at most 32: always a valid length.
            if let Ok(net) = Ipv4Net::new(a.ip(), len as u8) {
                out.v4.push(net);
            }
        } else if let Some(a) = addr.as_sockaddr_in6() {
            let len = mask
                .and_then(|m| {
                    m.as_sockaddr_in6()
                        .map(|m| u128::from(m.ip()).leading_ones())
                })
                .unwrap_or(128);
            if let Ok(net) = Ipv6Net::new(a.ip(), len as u8) {
                out.v6.push(net);
            }
        }
    }
    Ok(out)
}

/// The MAC address of `iface`.
pub fn mac(iface: &str) -> anyhow::Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_mac(s.trim()).with_context(|| format!("{path} holds no Ethernet MAC address"))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("invalid MAC address {s:?}: expected six hex bytes like 02:00:5e:10:00:01");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() <= 2)
            .with_context(|| format!("invalid MAC address {s:?}"))?;
    }
    Ok(mac)
}

/// How many RX queues `name` has (from sysfs).
pub fn rx_queue_count(name: &str) -> anyhow::Result<u32> {
    let dir = format!("/sys/class/net/{name}/queues");
    let n = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {dir}"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(n.max(1) as u32)
}

/// `ETHTOOL_GDRVINFO` (linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

/// `struct ethtool_drvinfo` (linux/ethtool.h); the libc crate does not
/// define it.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union: the name and a
/// pointer, padded to the kernel's 40 bytes.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}
const _: () = assert!(size_of::<IfreqData>() == 40);

/// The name of the driver behind `iface` (`veth`, `mlx5_core`, ...), as
/// `ethtool -i` shows it.
pub fn driver(iface: &str) -> io::Result<String> {
    let name = iface.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {iface:?}"),
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut info).cast(),
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name);
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name and a
    // pointer) and writes at most size_of::<EthtoolDrvinfo>() bytes through
    // that pointer into `info`, which lives until the call returns.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// True if `iface` is one end of a veth pair.
pub fn is_veth(iface: &str) -> bool {
    driver(iface).is_ok_and(|d| d == "veth")
}

/// True if `ifindex`'s driver offers XDP programs its receive stamps
/// (netdev netlink's `xdp-rx-metadata-features` has `timestamp`), asked
/// through the `xdp` crate's netdev query.
pub fn xdp_rx_timestamp_offered(ifindex: u32) -> io::Result<bool> {
    Ok(xdp::nic::NicIndex::new(ifindex)
        .query_capabilities()?
        .rx_metadata
        .timestamp())
}

/// The devices stacked on `iface`, and on those, and so on (a bridge it is
/// a port of, a macvlan or VLAN on it, a VRF it is enslaved to): their
/// names and interface indexes, nearest first, from the `upper_*` links in
/// `/sys/class/net`. At most `max` of them; more is an error.
pub fn stacked_devices(iface: &str, max: usize) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out: Vec<(String, u32)> = Vec::new();
    let mut todo = vec![iface.to_owned()];
    while let Some(dev) = todo.pop() {
        let dir = format!("/sys/class/net/{dev}");
        let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
        for e in entries {
            let name = e.with_context(|| format!("reading {dir}"))?.file_name();
            let Some(upper) = name.to_str().and_then(|n| n.strip_prefix("upper_")) else {
                continue;
            };
            if upper == iface || out.iter().any(|(n, _)| n == upper) {
                continue;
            }
            if out.len() == max {
                bail!("{iface} has more than {max} devices stacked on it");
            }
            out.push((upper.to_owned(), ifindex(upper)?));
            todo.push(upper.to_owned());
        }
    }
    Ok(out)
}

/// The sysctls on lo that a routing lookup from XDP needs
/// (`bpf_fib_lookup()` refuses a device without forwarding) and are off:
/// `net.ipv4.conf.lo.forwarding`, and `net.ipv6.conf.lo.forwarding` when
/// the kernel has IPv6. Empty when both are on.
pub fn lo_forwarding_off() -> io::Result<Vec<&'static str>> {
    let mut off = Vec::new();
    for (name, path, required) in [
        (
            "net.ipv4.conf.lo.forwarding",
            "/proc/sys/net/ipv4/conf/lo/forwarding",
            true,
        ),
        (
            "net.ipv6.conf.lo.forwarding",
            "/proc/sys/net/ipv6/conf/lo/forwarding",
            false,
        ),
    ] {
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() != "0" => {}
            Ok(_) => off.push(name),
            // A kernel without IPv6 has no net.ipv6.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        let a = addresses(Some("lo")).unwrap();
        assert!(
            a.v4.iter()
                .any(|n| n.addr() == std::net::Ipv4Addr::LOCALHOST && n.prefix_len() == 8),
            "{a:?}"
        );
        assert!(ifindex("lo").unwrap() >= 1);
        assert_eq!(mac("lo").unwrap(), [0; 6]);
        assert!(!is_veth("lo"));
        assert!(driver("no-such-if0").is_err());
        assert!(driver("").is_err());
        let all = addresses(None).unwrap();
        assert!(all.v4.len() >= a.v4.len());
        assert!(
            ifindex("no-such-if0")
                .unwrap_err()
                .to_string()
                .contains("no such interface")
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:0a").unwrap(),
            [2, 0, 0x5e, 0x10, 0, 10]
        );
        assert!(parse_mac("02:00:5e:10:00").is_err());
        assert!(parse_mac("02:00:5e:10:00:100").is_err());
        assert!(parse_mac("zz:00:5e:10:00:01").is_err());
    }
}
