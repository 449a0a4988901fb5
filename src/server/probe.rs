//! The self-probe: every few seconds (`[server] self_probe`, 2 s) the
//! control thread asks the server for the time as a client would, through
//! the path that answers clients, and keeps what it saw: the offset of the
//! reply's time from the host's clock, the round trip, LI and stratum.
//! It is the operator's proof that what leaves the NIC is right
//! (`ntpx_self_probe_*` metrics, `ntpx stats`, `ntpx health`).
//!
//! - XDP datapath: the request frame runs through the *attached* program
//!   with `BPF_PROG_TEST_RUN`, a key of this start in the metadata in front
//!   of it (`probe_key` in `bpf/ntpx.bpf.c`). The program answers it in
//!   XDP from the live state map, past the policy (the probe is no
//!   client), whatever path clients' requests take; the workers have the
//!   watchdog. The device-bound program (hardware receive stamps) cannot
//!   be test-run: no probe there.
//! - Socket datapath: a UDP socket of the host, bound to loopback, sends
//!   to the first served address; a worker answers it like any client,
//!   except that its source (exactly that loopback address and port, which
//!   the kernel never accepts from the wire) skips the source checks and
//!   the policy.
//!
//! The probe runs on the control thread: a stuck control thread stops it,
//! and the age of its last answer grows ([`ProbeDoc::answered_age_s`]).
//! Probes are counted like any request.

use crate::proto::ntp::{self, Mode, NtpTimestamp};
use crate::proto::request::{RequestTemplate, Target};
use crate::proto::respond::{Responder, check_addresses};
use crate::server::program::Prober;
use crate::sys::bpf::XDP_TX;
use crate::sys::clock::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long a socket probe waits for its reply.
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long the control thread blocks for a socket probe's reply right
/// after sending it (T4 is taken when it is read: a reply read at the next
/// turn of the loop would add up to a turn to the delay); a later reply is
/// taken at a later turn, without blocking.
const WAIT: Duration = Duration::from_millis(20);
/// Beyond this offset, `ntpx health` calls the server unhealthy: the time
/// it sends is wrong (a wrong TAI offset shows as whole seconds).
pub const MAX_OFFSET_S: f64 = 0.1;
/// The probe's UDP source port in the XDP frame.
const SPORT: u16 = 40_123;
/// The probe's source MAC in the XDP frame (RFC 7042's documentation
/// range).
const SRC_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01];

/// One answered probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answer {
    /// When it came (Unix ns, the host's clock).
    pub at_unix_ns: u64,
    /// ((T2 − T1) + (T3 − T4)) / 2, ns: the reply's time less the host's.
    pub offset_ns: i64,
    /// (T4 − T1) − (T3 − T2), ns.
    pub delay_ns: i64,
    /// The reply's LI (3: unsynchronised).
    pub leap: u8,
    /// The reply's stratum.
    pub stratum: u8,
}

/// What the probes saw, kept in the shared state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeStatus {
    /// Time between probes.
    pub every: Duration,
    /// Probes sent, and those that got no valid answer.
    pub probes: u64,
    pub failures: u64,
    /// The last valid answer.
    pub last: Option<Answer>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
}

/// The probe's status as `ntpx stats --json` and `ntpx health` read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeDoc {
    /// Seconds between probes.
    pub every_s: f64,
    /// Probes sent, and those without a valid answer.
    pub probes: u64,
    pub failures: u64,
    /// Of the last valid answer: offset and delay (s), LI, stratum.
    pub offset_s: Option<f64>,
    pub delay_s: Option<f64>,
    pub leap: Option<u8>,
    pub stratum: Option<u8>,
    /// Seconds since the last valid answer.
    pub answered_age_s: Option<f64>,
    /// Why the last probe failed, if it did.
    pub error: Option<String>,
}

impl ProbeDoc {
    /// The `ntpx stats` line.
    pub fn line(&self) -> String {
        let seen = match (self.offset_s, self.delay_s, self.answered_age_s) {
            (Some(o), Some(d), Some(age)) => format!(
                "offset {:+.1} µs, delay {:.1} µs, LI {}, stratum {}, {age:.1} s ago",
                o * 1e6,
                d * 1e6,
                self.leap.unwrap_or(3),
                self.stratum.unwrap_or(0)
            ),
            _ => "no valid answer yet".to_owned(),
        };
        let failed = self
            .error
            .as_deref()
            .map(|e| format!("; the last failed: {e}"))
            .unwrap_or_default();
        format!(
            "  self-probe: {seen} ({} sent, {} failed){failed}\n",
            self.probes, self.failures
        )
    }

    /// The status `s` at `now_unix_ns`.
    pub fn of(s: &ProbeStatus, now_unix_ns: u64) -> ProbeDoc {
        let a = s.last;
        ProbeDoc {
            every_s: s.every.as_secs_f64(),
            probes: s.probes,
            failures: s.failures,
            offset_s: a.map(|a| a.offset_ns as f64 / 1e9),
            delay_s: a.map(|a| a.delay_ns as f64 / 1e9),
            leap: a.map(|a| a.leap),
            stratum: a.map(|a| a.stratum),
            answered_age_s: a.map(|a| now_unix_ns.saturating_sub(a.at_unix_ns) as f64 / 1e9),
            error: s.error.clone(),
        }
    }

    /// Why the probe says the server is not serving right, or `None`: no
    /// valid answer for three probes' time (at least 3 s), an answer that
    /// says unsynchronised (LI 3), or the time it answered off by more
    /// than [`MAX_OFFSET_S`].
    pub fn unhealthy(&self) -> Option<String> {
        let late = (3.0 * self.every_s).max(3.0);
        match (self.answered_age_s, self.offset_s) {
            (None, _) if self.probes == 0 => None,
            (Some(age), _) if age > late => Some(format!(
                "its self-probe has had no valid answer for {age:.1} s{}",
                self.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )),
            (None, _) if self.probes >= 3 => Some(format!(
                "its self-probe has never had a valid answer ({})",
                self.error.as_deref().unwrap_or("?")
            )),
            _ if self.leap == Some(3) => {
                Some("its self-probe's reply says unsynchronised (LI 3)".to_owned())
            }
            (_, Some(off)) if off.abs() > MAX_OFFSET_S => Some(format!(
                "its self-probe saw the time it sends off by {off:+.3} s"
            )),
            _ => None,
        }
    }
}

/// Checks the NTP part of a reply to the probe that carried `nonce`, sent
/// at `t1` and back at `t4` (Unix ns, the host's clock).
pub fn evaluate(reply: &[u8], nonce: NtpTimestamp, t1: u64, t4: u64) -> Result<Answer, String> {
    let p = ntp::Packet::new_checked(reply).ok_or("the reply is shorter than an NTP header")?;
    if p.mode() != Mode::Server {
        return Err(format!("the reply is mode {:?}, not 4", p.mode()));
    }
    if p.origin() != nonce {
        return Err("the reply's origin is not the request's transmit time".into());
    }
    // A Kiss-o'-Death (what ntpx sends: RATE, DENY); an unsynchronised
    // reply (LI 3, stratum 0, no code) is an answer, and says so.
    let id = p.ref_id();
    if p.stratum() == 0 && [*b"RATE", *b"DENY", *b"RSTR"].contains(&id) {
        return Err(format!(
            "the reply is a Kiss-o'-Death {}",
            String::from_utf8_lossy(&id)
        ));
    }
    let t2 = p.receive().to_unix_nanos_near(t1) as i128;
    let t3 = p.transmit().to_unix_nanos_near(t1) as i128;
    let (t1, t4) = (i128::from(t1), i128::from(t4));
    let clamp = |x: i128| x.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
    Ok(Answer {
        at_unix_ns: t4 as u64,
        offset_ns: clamp(((t2 - t1) + (t3 - t4)) / 2),
        delay_ns: clamp((t4 - t1) - (t3 - t2)),
        leap: p.leap() as u8,
        stratum: p.stratum(),
    })
}

/// How the probe reaches the server.
enum Way {
    Xdp {
        prober: Prober,
        template: Box<RequestTemplate>,
        src: IpAddr,
    },
    Socket {
        sock: UdpSocket,
    },
}

/// A probe on its way (socket datapath).
struct Pending {
    nonce: NtpTimestamp,
    t1: u64,
    sent: Instant,
}

/// The prober, turned by the control loop.
pub struct SelfProbe {
    way: Way,
    status: ProbeStatus,
    next: Instant,
    pending: Option<Pending>,
    rng: fastrand::Rng,
}

/// The probe's source address for the XDP datapath: a documentation
/// address that the program's source checks let through to `dst`.
fn probe_source(responder: &Responder, dst: IpAddr) -> Option<IpAddr> {
    let candidates: [IpAddr; 6] = [
        [192, 0, 2, 1].into(),
        [198, 51, 100, 1].into(),
        [203, 0, 113, 1].into(),
        "2001:db8::1".parse().ok()?,
        "2001:db8:1::1".parse().ok()?,
        "2001:db8:2::1".parse().ok()?,
    ];
    candidates
        .into_iter()
        .find(|&src| check_addresses(responder, src, dst).is_ok())
}

impl SelfProbe {
    /// A probe through the XDP program, to the first served address
    /// (IPv4 first); `None` if the server has none.
    pub fn xdp(prober: Prober, responder: &Responder, every: Duration) -> Option<SelfProbe> {
        let dst: IpAddr = match (responder.v4.first(), responder.v6.first()) {
            (Some(a), _) => (*a).into(),
            (None, Some(a)) => (*a).into(),
            (None, None) => return None,
        };
        let src = probe_source(responder, dst)?;
        let template = Box::new(RequestTemplate::new(&Target {
            src_mac: SRC_MAC,
            dst_mac: responder.mac,
            addr: dst,
            port: responder.port,
            version: 4,
        }));
        Some(Self::new(
            Way::Xdp {
                prober,
                template,
                src,
            },
            every,
        ))
    }

    /// A probe over a UDP socket to `server` (a served address) from
    /// loopback; the socket's own address, which the workers must let
    /// through, is [`Self::local_addr`]. Loopback, because the kernel
    /// drops a loopback source that comes from the wire, in both families:
    /// nobody outside can send as the probe.
    pub fn socket(server: SocketAddr, every: Duration) -> std::io::Result<SelfProbe> {
        let lo: IpAddr = if server.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        let sock = UdpSocket::bind((lo, 0))?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(WAIT))?;
        Ok(Self::new(Way::Socket { sock }, every))
    }

    fn new(way: Way, every: Duration) -> SelfProbe {
        SelfProbe {
            way,
            status: ProbeStatus {
                every,
                ..ProbeStatus::default()
            },
            next: Instant::now(),
            pending: None,
            rng: fastrand::Rng::new(),
        }
    }

    /// The socket probe's source, as a worker sees it (IPv4 as IPv4).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.way {
            Way::Socket { sock } => sock
                .local_addr()
                .ok()
                .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())),
            Way::Xdp { .. } => None,
        }
    }

    /// The status so far.
    pub fn status(&self) -> &ProbeStatus {
        &self.status
    }

    /// Sends a probe when one is due and takes its answer; true when the
    /// status changed.
    pub fn tick(&mut self) -> bool {
        let mut changed = self.collect();
        if self.pending.is_none() && Instant::now() >= self.next {
            self.next = Instant::now() + self.status.every;
            self.send();
            self.collect();
            changed = true;
        }
        changed
    }

    fn send(&mut self) {
        self.status.probes += 1;
        let nonce = NtpTimestamp::from_bits(self.rng.u64(..));
        let t1 = SystemClock.now_unix_nanos();
        match &self.way {
            Way::Xdp {
                prober,
                template,
                src,
            } => {
                let mut frame = [0u8; crate::proto::request::MAX_FRAME_LEN];
                let Some(n) = template.write(&mut frame, *src, SPORT, nonce, 0, None) else {
                    return self.record(Err("could not build the request".into()));
                };
                let run = prober.run(&frame[..n]);
                let t4 = SystemClock.now_unix_nanos();
                let result = match run {
                    Err(e) => Err(format!("the program could not be run: {e}")),
                    Ok(r) if r.verdict != XDP_TX => Err(format!(
                        "the program did not answer (XDP verdict {}; see the drop counters)",
                        r.verdict
                    )),
                    Ok(r) => {
                        let f = r.frame();
                        let at = f.len().saturating_sub(ntp::HEADER_LEN);
                        evaluate(&f[at..], nonce, t1, t4)
                    }
                };
                self.record(result);
            }
            Way::Socket { sock } => {
                let mut req = [0u8; ntp::HEADER_LEN];
                req[0] = 0x23; // LI 0, v4, mode 3
                req[40..48].copy_from_slice(&nonce.to_bytes());
                match sock.set_nonblocking(false).and_then(|()| sock.send(&req)) {
                    Ok(_) => {
                        self.pending = Some(Pending {
                            nonce,
                            t1,
                            sent: Instant::now(),
                        })
                    }
                    Err(e) => self.record(Err(format!("could not send: {e}"))),
                }
            }
        }
    }

    /// A socket probe's answer, if it came, or its timeout.
    fn collect(&mut self) -> bool {
        let (Way::Socket { sock }, Some(p)) = (&self.way, &self.pending) else {
            return false;
        };
        let mut buf = [0u8; 128];
        // Bounded: the answers to earlier probes that are skipped here are
        // few, but the loop must end whatever comes.
        for _ in 0..64 {
            let got = sock.recv(&mut buf);
            // Blocking (for WAIT) only right after the send.
            let _ = sock.set_nonblocking(true);
            match got {
                Ok(n) => {
                    let t4 = SystemClock.now_unix_nanos();
                    let got = evaluate(&buf[..n], p.nonce, p.t1, t4);
                    // A late answer to an earlier probe: not this one's.
                    if matches!(&got, Err(e) if e.contains("origin")) {
                        continue;
                    }
                    self.pending = None;
                    self.record(got);
                    return true;
                }
                Err(_) if p.sent.elapsed() >= TIMEOUT => {
                    self.pending = None;
                    self.record(Err(format!("no reply within {TIMEOUT:?}")));
                    return true;
                }
                Err(_) => return false,
            }
        }
        if p.sent.elapsed() >= TIMEOUT {
            self.pending = None;
            self.record(Err(format!("no valid reply within {TIMEOUT:?}")));
            return true;
        }
        false
    }

    fn record(&mut self, r: Result<Answer, String>) {
        match r {
            Ok(a) => {
                self.status.last = Some(a);
                self.status.error = None;
            }
            Err(e) => {
                self.status.failures += 1;
                self.status.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ntp::{Leap, Packet};

    fn reply(nonce: NtpTimestamp, t2: u64, t3: u64, stratum: u8) -> [u8; 48] {
        let mut b = [0u8; 48];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_li_vn_mode(Leap::None, 4, Mode::Server);
        p.set_stratum(stratum);
        p.set_origin(nonce);
        p.set_receive(NtpTimestamp::from_unix_nanos(t2));
        p.set_transmit(NtpTimestamp::from_unix_nanos(t3));
        b
    }

    const T: u64 = 1_800_000_000_000_000_000;

    #[test]
    fn offset_and_delay() {
        let n = NtpTimestamp::from_bits(0x1234);
        // Sent at T, answered 5 µs into a 40 µs trip by a clock 2 ms ahead.
        let a = evaluate(
            &reply(n, T + 20_000 + 2_000_000, T + 25_000 + 2_000_000, 2),
            n,
            T,
            T + 45_000,
        )
        .unwrap();
        assert!((a.offset_ns - 2_000_000).abs() < 2, "{a:?}");
        assert!((a.delay_ns - 40_000).abs() < 2, "{a:?}");
        assert_eq!((a.leap, a.stratum, a.at_unix_ns), (0, 2, T + 45_000));
    }

    #[test]
    fn wrong_answers_are_errors() {
        let n = NtpTimestamp::from_bits(0x1234);
        let other = NtpTimestamp::from_bits(0x9999);
        let e = evaluate(&reply(other, T, T, 2), n, T, T).unwrap_err();
        assert!(e.contains("origin"), "{e}");
        let mut kod = reply(n, T, T, 0);
        kod[12..16].copy_from_slice(b"RATE");
        let e = evaluate(&kod, n, T, T).unwrap_err();
        assert!(e.ends_with("Kiss-o'-Death RATE"), "{e}");
        assert!(evaluate(&[0u8; 20], n, T, T).is_err());
        // Unsynchronised: an answer, which says so.
        let mut unsync = reply(n, T, T, 0);
        unsync[0] = 0xe4; // LI 3, v4, mode 4
        let a = evaluate(&unsync, n, T, T).unwrap();
        assert_eq!((a.leap, a.stratum), (3, 0));
    }

    #[test]
    fn health() {
        let mut s = ProbeStatus {
            every: Duration::from_secs(2),
            ..ProbeStatus::default()
        };
        assert_eq!(ProbeDoc::of(&s, T).unhealthy(), None, "no probe yet");
        s.probes = 3;
        s.failures = 3;
        s.error = Some("no reply within 1s".into());
        let why = ProbeDoc::of(&s, T).unhealthy().unwrap();
        assert!(why.contains("never") && why.contains("no reply"), "{why}");
        s.last = Some(Answer {
            at_unix_ns: T,
            offset_ns: 30_000,
            delay_ns: 50_000,
            leap: 0,
            stratum: 2,
        });
        s.error = None;
        assert_eq!(ProbeDoc::of(&s, T + 5_000_000_000).unhealthy(), None);
        let why = ProbeDoc::of(&s, T + 7_000_000_000).unhealthy().unwrap();
        assert!(why.contains("7.0 s"), "{why}");
        s.last = s.last.map(|a| Answer {
            offset_ns: -37_000_000_000,
            ..a
        });
        let why = ProbeDoc::of(&s, T).unhealthy().unwrap();
        assert!(why.contains("-37.000 s"), "{why}");
        s.last = s.last.map(|a| Answer {
            offset_ns: 0,
            leap: 3,
            ..a
        });
        let why = ProbeDoc::of(&s, T).unhealthy().unwrap();
        assert!(why.contains("LI 3"), "{why}");
    }
}
