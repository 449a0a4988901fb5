//! Who holds a UDP port: the sockets `/proc/net/udp` and `/proc/net/udp6`
//! list for this network namespace, and the processes whose file
//! descriptors point at them. Used to keep the socket datapath's port to
//! ntpx alone, and to name whoever else has it.

use std::io;

/// The inode numbers of the UDP sockets (IPv4 and IPv6) bound to local
/// `port` in this process's network namespace.
pub fn udp_sockets_on(port: u16) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => out.extend(inodes_on_port(&text, port)),
            // A kernel without IPv6 has no udp6 table.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The inodes of the rows of a `/proc/net/udp{,6}` table whose local port
/// is `port`. Rows look like
/// `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ...`
/// with `local_address` as `HEXADDR:HEXPORT`.
pub fn inodes_on_port(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let p = u16::from_str_radix(local_port, 16).ok()?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            (p == port && inode != 0).then_some(inode)
        })
        .collect()
}

/// The processes that hold sockets with these inodes, as `name (pid N)`
/// (best effort: processes that cannot be read are left out).
pub fn holders(inodes: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let holds = fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                socket_inode(&target.to_string_lossy()).is_some_and(|i| inodes.contains(&i))
            })
        });
        if holds {
            let name = std::fs::read_to_string(p.path().join("comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            out.push(format!("{name} (pid {pid})"));
        }
    }
    out
}

/// The inode of a `socket:[12345]` link target.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_udp() {
        let table = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  259: 00000000:007B 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 25149 2 0000000000000000 0
  260: 0100007F:0143 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 777 2 0000000000000000 0
  261: 00000000:007B 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 0
";
        assert_eq!(inodes_on_port(table, 123), vec![25149]);
        assert_eq!(inodes_on_port(table, 323), vec![777]);
        assert!(inodes_on_port(table, 124).is_empty());
        assert!(inodes_on_port("garbage\nmore garbage x y\n", 123).is_empty());
        assert_eq!(socket_inode("socket:[25149]"), Some(25149));
        assert_eq!(socket_inode("pipe:[1]"), None);
    }

    #[test]
    fn finds_our_own_socket_and_ourselves() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let inodes = udp_sockets_on(port).unwrap();
        assert_eq!(inodes.len(), 1);
        let who = holders(&inodes);
        assert_eq!(
            who,
            vec![format!("{} (pid {})", comm(), std::process::id())]
        );
    }

    fn comm() -> String {
        std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_owned()
    }
}
