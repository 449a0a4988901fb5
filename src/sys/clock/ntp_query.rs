//! The state of a local NTP daemon that has no command socket ntpx speaks
//! (ntpd, ntpd-rs): one NTP client query on loopback, whose reply's header
//! is what that daemon would serve.
//!
//! The daemon must answer queries from 127.0.0.1 (chronyd: `allow
//! 127.0.0.1`; ntpd: no `restrict 127.0.0.1 ... noquery`-style refusal)
//! and must not rate-limit one query a second. With the XDP datapath the
//! kernel's port 123 is the daemon's, and loopback never passes through
//! ntpx's XDP program.

use super::chrony::Tracking;
use crate::proto::ntp::{HEADER_LEN, Leap, Mode, Packet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Asks one NTP server (the host's own daemon) for its header.
#[derive(Debug)]
pub struct NtpQuery {
    sock: UdpSocket,
}

impl NtpQuery {
    /// A client of the NTP server at `server` (e.g. `127.0.0.1:123`).
    pub fn new(server: SocketAddr) -> io::Result<Self> {
        let any: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(any)?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(NtpQuery { sock })
    }

    /// One query: the reply's header as a report (an error after 200 ms
    /// without a matching reply).
    pub fn report(&mut self) -> io::Result<Tracking> {
        let mut req = [0u8; HEADER_LEN];
        // LI 0, version 4, mode 3; a random transmit timestamp to match
        // the reply by (clients need not send their clock).
        req[0] = 0x23;
        let nonce = fastrand::u64(..);
        req[40..48].copy_from_slice(&nonce.to_be_bytes());
        self.sock.send(&req)?;
        let mut buf = [0u8; 512];
        loop {
            let n = self.sock.recv(&mut buf)?;
            if let Some(t) = parse_reply(&buf[..n], nonce) {
                return Ok(t);
            }
        }
    }
}

/// The report in a server reply to the request whose transmit timestamp
/// was `nonce`; `None` for anything else.
pub fn parse_reply(reply: &[u8], nonce: u64) -> Option<Tracking> {
    let p = Packet::new_checked(reply)?;
    if p.mode() != Mode::Server || p.origin().to_bits() != nonce {
        return None;
    }
    let leap = p.leap();
    // Stratum 0 is a Kiss-o'-Death or "unspecified": no time to follow.
    let stratum = p.stratum();
    Some(Tracking {
        ref_id: p.ref_id(),
        stratum,
        leap: if stratum == 0 || stratum > 15 {
            Leap::Unsynchronized
        } else {
            leap
        },
        ref_time: p.ref_time(),
        root_delay: p.root_delay().to_nanos() as f64 / 1e9,
        root_dispersion: p.root_dispersion().to_nanos() as f64 / 1e9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ntp::{NtpShort, NtpTimestamp};

    fn reply(first: u8, stratum: u8, origin: u64) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_li_vn_mode(Leap::from_bits(first >> 6), 4, Mode::from_bits(first & 7));
        p.set_stratum(stratum);
        p.set_root_delay(NtpShort::from_bits(0x0000_8000));
        p.set_root_dispersion(NtpShort::from_bits(0x0000_0100));
        p.set_ref_id([192, 0, 2, 9]);
        p.set_ref_time(NtpTimestamp::from_bits(0xe000_0000_0000_0000));
        p.set_origin(NtpTimestamp::from_bits(origin));
        b
    }

    #[test]
    fn server_replies_to_our_request_become_reports() {
        let t = parse_reply(&reply(0x44, 3, 77), 77).unwrap();
        assert_eq!(
            (t.leap, t.stratum, t.ref_id),
            (Leap::Insert, 3, [192, 0, 2, 9])
        );
        assert_eq!(t.ref_time, NtpTimestamp::from_bits(0xe000_0000_0000_0000));
        assert!((t.root_delay - 0.5).abs() < 1e-9);
        // Someone else's reply, a client packet, a short one: nothing.
        assert_eq!(parse_reply(&reply(0x44, 3, 77), 78), None);
        assert_eq!(parse_reply(&reply(0x43, 3, 77), 77), None);
        assert_eq!(parse_reply(&reply(0x44, 3, 77)[..47], 77), None);
        // A Kiss-o'-Death (stratum 0): unsynchronised.
        assert_eq!(
            parse_reply(&reply(0x04, 0, 77), 77).unwrap().leap,
            Leap::Unsynchronized
        );
    }
}
