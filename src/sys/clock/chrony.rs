//! chronyd's tracking report, read from its command socket: what the daemon
//! that disciplines this host's clock says about it (stratum, reference ID
//! and time, leap status, root delay and dispersion).
//!
//! The command protocol (version 6, the one chrony has spoken since 2.x) is
//! a fixed binary format over a datagram socket; the tracking request is a
//! 20-byte header padded to the reply's length (chronyd refuses shorter
//! requests, so that the protocol cannot amplify). Written here from the
//! protocol's description: the crates that implement it are GPL-licensed,
//! and ntpx needs one request and one reply. Over the Unix socket
//! (`/run/chrony/chronyd.sock`) chronyd answers without any `cmdallow`
//! line; the client binds a socket of its own next to nothing, in a
//! private directory, and makes it writable for chronyd (which runs as its
//! own user).

use crate::proto::ntp::server::DISPERSION_PPM;
use crate::proto::ntp::{Leap, NtpShort, NtpTimestamp};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// chronyd's command socket on Debian and most distributions.
pub const DEFAULT_SOCKET: &str = "/run/chrony/chronyd.sock";

const PROTO_VERSION: u8 = 6;
const PKT_TYPE_REQUEST: u8 = 1;
const PKT_TYPE_REPLY: u8 = 2;
const REQ_TRACKING: u16 = 33;
const RPY_TRACKING: u16 = 5;
const STT_SUCCESS: u16 = 0;
/// Reply header: version, type, 2 reserved, command, reply, status, 3 pad
/// halfwords, sequence, 2 pad words.
const REPLY_HEADER: usize = 28;
/// The tracking report: ref_id, IPAddr (16 + family + pad), stratum,
/// leap, Timespec (12), nine Floats.
const TRACKING_LEN: usize = 4 + 20 + 2 + 2 + 12 + 9 * 4;
/// A tracking reply, and so the padded tracking request.
pub const TRACKING_REPLY_LEN: usize = REPLY_HEADER + TRACKING_LEN;
/// `tv_sec_high` of a 32-bit time.
const TV_NOHIGHSEC: u32 = 0x7fff_ffff;

/// What `chronyc tracking` shows, as far as an NTP server's header needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tracking {
    /// Reference ID (the upstream's IPv4 address, a hash of its IPv6
    /// address, or a refclock's name; `LOCL` for `local`).
    pub ref_id: [u8; 4],
    /// chronyd's own stratum (what it would serve).
    pub stratum: u8,
    /// Leap status; [`Leap::Unsynchronized`] when chronyd is not synchronised.
    pub leap: Leap,
    /// When the clock was last updated.
    pub ref_time: NtpTimestamp,
    /// Root delay, seconds.
    pub root_delay: f64,
    /// Root dispersion at `ref_time`, seconds.
    pub root_dispersion: f64,
}

impl Tracking {
    /// Root delay in NTP short format (rounded up, saturating).
    pub fn root_delay_short(&self) -> NtpShort {
        NtpShort::from_nanos_ceil(secs_to_nanos(self.root_delay))
    }

    /// Root dispersion `elapsed_ns` after `ref_time`, grown at 15 ppm as an
    /// NTP server ages its own (RFC 5905's PHI), in NTP short format.
    pub fn root_dispersion_after(&self, elapsed_ns: u64) -> NtpShort {
        let grown = elapsed_ns.saturating_mul(DISPERSION_PPM) / 1_000_000;
        NtpShort::from_nanos_ceil(secs_to_nanos(self.root_dispersion).saturating_add(grown))
    }
}

fn secs_to_nanos(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1e9).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// The tracking request with sequence number `seq`: a 20-byte header
/// (version, type, 2 reserved, command, attempt, sequence, 2 pad words)
/// and no data, padded with zeros to the reply's length.
pub fn tracking_request(seq: u32) -> [u8; TRACKING_REPLY_LEN] {
    let mut b = [0u8; TRACKING_REPLY_LEN];
    b[0] = PROTO_VERSION;
    b[1] = PKT_TYPE_REQUEST;
    b[4..6].copy_from_slice(&REQ_TRACKING.to_be_bytes());
    b[8..12].copy_from_slice(&seq.to_be_bytes());
    b
}

/// Why a reply is not a tracking report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    /// Too short, or not a version 6 reply to our tracking request.
    #[error("not a chronyd tracking reply: {0}")]
    Malformed(&'static str),
    /// chronyd answered with a status other than success.
    #[error("chronyd refused the tracking request (status {0})")]
    Status(u16),
}

/// Parses a reply to [`tracking_request`]`(seq)`.
pub fn parse_tracking(reply: &[u8], seq: u32) -> Result<Tracking, ReplyError> {
    use ReplyError::Malformed;
    if reply.len() < REPLY_HEADER {
        return Err(Malformed("shorter than a reply header"));
    }
    if reply[0] != PROTO_VERSION || reply[1] != PKT_TYPE_REPLY {
        return Err(Malformed("not a version 6 reply"));
    }
    let u16_at = |i: usize| u16::from_be_bytes([reply[i], reply[i + 1]]);
    let u32_at =
        |i: usize| u32::from_be_bytes([reply[i], reply[i + 1], reply[i + 2], reply[i + 3]]);
    if u16_at(4) != REQ_TRACKING || u32_at(16) != seq {
        return Err(Malformed("a reply to another request"));
    }
    let status = u16_at(8);
    if status != STT_SUCCESS {
        return Err(ReplyError::Status(status));
    }
    if u16_at(6) != RPY_TRACKING || reply.len() < TRACKING_REPLY_LEN {
        return Err(Malformed("not a tracking report"));
    }
    let d = REPLY_HEADER;
    let ref_id = u32_at(d).to_be_bytes();
    let stratum = u8::try_from(u16_at(d + 24)).unwrap_or(u8::MAX);
    let leap = Leap::from_bits(u16_at(d + 26).min(3) as u8);
    let (high, low, nsec) = (u32_at(d + 28), u32_at(d + 32), u32_at(d + 36));
    let secs = if high == TV_NOHIGHSEC {
        u64::from(low)
    } else {
        u64::from(high) << 32 | u64::from(low)
    };
    let ref_time = if secs == 0 && nsec == 0 {
        NtpTimestamp::ZERO
    } else {
        NtpTimestamp::from_unix_nanos(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(u64::from(nsec.min(999_999_999))),
        )
    };
    // Floats from d + 40: correction, last offset, rms offset, freq,
    // residual freq, skew, root delay, root dispersion, update interval.
    let float = |i: usize| chrony_float(u32_at(d + 40 + 4 * i));
    Ok(Tracking {
        ref_id,
        stratum,
        leap,
        ref_time,
        root_delay: float(6),
        root_dispersion: float(7),
    })
}

/// chrony's 32-bit float: a 7-bit signed exponent above a 25-bit signed
/// coefficient, worth coef × 2^(exp − 25).
pub fn chrony_float(x: u32) -> f64 {
    const COEF_BITS: u32 = 25;
    let mut exp = (x >> COEF_BITS) as i32;
    if exp >= 1 << 6 {
        exp -= 1 << 7;
    }
    let mut coef = (x & ((1 << COEF_BITS) - 1)) as i32;
    if coef >= 1 << (COEF_BITS - 1) {
        coef -= 1 << COEF_BITS;
    }
    f64::from(coef) * 2f64.powi(exp - COEF_BITS as i32)
}

/// Keeps asking chronyd over its command socket.
#[derive(Debug)]
pub struct ChronyClient {
    server: PathBuf,
    sock: UnixDatagram,
    dir: PathBuf,
    seq: u32,
}

impl ChronyClient {
    /// A client of the chronyd listening on `server`, with a socket of its
    /// own in a fresh directory under `dir` (e.g. `/run`).
    pub fn new(server: &Path, dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let own = dir.join(format!("ntpx-chrony.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&own);
        std::fs::create_dir_all(&own)?;
        // chronyd runs as its own user: it must reach our socket to answer.
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o711))?;
        let path = own.join("client.sock");
        let sock = UnixDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(ChronyClient {
            server: server.to_owned(),
            sock,
            dir: own,
            seq: fastrand::u32(..),
        })
    }

    /// One tracking report (a lost datagram or a silent chronyd is an
    /// error after 200 ms; the caller asks again next time).
    pub fn tracking(&mut self) -> io::Result<Tracking> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock.send_to(&tracking_request(seq), &self.server)?;
        let mut buf = [0u8; 512];
        loop {
            let n = self.sock.recv(&mut buf)?;
            match parse_tracking(&buf[..n], seq) {
                // A late reply to an earlier request: wait for ours.
                Err(ReplyError::Malformed("a reply to another request")) => continue,
                r => return r.map_err(io::Error::other),
            }
        }
    }
}

impl Drop for ChronyClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chrony Float from a value (the inverse of `chrony_float`, for
    /// building test replies).
    fn to_float(v: f64) -> u32 {
        if v == 0.0 {
            return 0;
        }
        let mut exp = v.abs().log2().floor() as i32 + 1;
        let mut coef = (v * 2f64.powi(24 - exp)).round() as i64;
        if coef >= 1 << 24 {
            coef >>= 1;
            exp += 1;
        }
        let e = ((exp + 1) & 0x7f) as u32;
        (e << 25) | (coef as u32 & 0x1ff_ffff)
    }

    fn reply(seq: u32, status: u16) -> Vec<u8> {
        let mut b = vec![0u8; TRACKING_REPLY_LEN];
        b[0] = 6;
        b[1] = 2;
        b[4..6].copy_from_slice(&33u16.to_be_bytes());
        b[6..8].copy_from_slice(&5u16.to_be_bytes());
        b[8..10].copy_from_slice(&status.to_be_bytes());
        b[16..20].copy_from_slice(&seq.to_be_bytes());
        let d = 28;
        b[d..d + 4].copy_from_slice(&[192, 0, 2, 7]);
        b[d + 24..d + 26].copy_from_slice(&3u16.to_be_bytes());
        b[d + 26..d + 28].copy_from_slice(&1u16.to_be_bytes());
        b[d + 28..d + 32].copy_from_slice(&0u32.to_be_bytes());
        b[d + 32..d + 36].copy_from_slice(&1_700_000_000u32.to_be_bytes());
        b[d + 36..d + 40].copy_from_slice(&500_000_000u32.to_be_bytes());
        b[d + 40 + 24..d + 40 + 28].copy_from_slice(&to_float(0.012).to_be_bytes());
        b[d + 40 + 28..d + 40 + 32].copy_from_slice(&to_float(0.0005).to_be_bytes());
        b
    }

    #[test]
    fn request_is_padded_to_the_reply() {
        let r = tracking_request(0x0102_0304);
        assert_eq!(r.len(), 104);
        assert_eq!(r[..12], [6, 1, 0, 0, 0, 33, 0, 0, 1, 2, 3, 4]);
        assert!(r[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn floats_decode() {
        assert_eq!(chrony_float(0), 0.0);
        // Exponent 2, coefficient 2^23: 2^23 × 2^(2 − 25) = 1.
        assert_eq!(chrony_float((2 << 25) | (1 << 23)), 1.0);
        // Coefficient 2^24 is the sign bit: −2^24 × 2^(1 − 25) = −1.
        assert_eq!(chrony_float((1 << 25) | (1 << 24)), -1.0);
        for v in [1e-9, 3.5e-6, 0.012, 0.5, 1.0, 123.25, -0.25] {
            let got = chrony_float(to_float(v));
            assert!((got - v).abs() <= v.abs() * 1e-7, "{v} -> {got}");
        }
    }

    #[test]
    fn tracking_reply_parses() {
        let t = parse_tracking(&reply(9, 0), 9).unwrap();
        assert_eq!(t.ref_id, [192, 0, 2, 7]);
        assert_eq!(t.stratum, 3);
        assert_eq!(t.leap, Leap::Insert);
        assert_eq!(
            t.ref_time,
            NtpTimestamp::from_unix_nanos(1_700_000_000_500_000_000)
        );
        assert!((t.root_delay - 0.012).abs() < 1e-9);
        assert!((t.root_dispersion - 0.0005).abs() < 1e-9);
        // 0.5 ms + 15 ppm of 10 s = 0.65 ms, in 2^-16 s units, rounded up.
        let d = t.root_dispersion_after(10_000_000_000);
        assert_eq!(d.to_bits(), (0.00065f64 * 65536.0).ceil() as u32);
    }

    #[test]
    fn wrong_replies_are_refused() {
        assert_eq!(
            parse_tracking(&reply(9, 0), 8),
            Err(ReplyError::Malformed("a reply to another request"))
        );
        assert_eq!(parse_tracking(&reply(9, 2), 9), Err(ReplyError::Status(2)));
        assert!(parse_tracking(&reply(9, 0)[..60], 9).is_err());
        let mut r = reply(9, 0);
        r[0] = 5;
        assert!(parse_tracking(&r, 9).is_err());
        for len in 0..TRACKING_REPLY_LEN {
            // Never a panic, whatever the length.
            let _ = parse_tracking(&reply(9, 0)[..len], 9);
        }
    }
}
