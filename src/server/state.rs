//! The server's view of its own clock (stratum, leap, dispersion, ...),
//! computed by the control thread once a second and read by the workers
//! without locks.

use crate::proto::ntp::{Leap, NtpShort, NtpTimestamp, ServerState};
use crate::sys::clock::chrony::{ChronyClient, Tracking};
use crate::sys::clock::{Clock, Discipline, KernelClock, LeapList, TaiScale};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

/// Where the server's time quality comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The kernel's clock discipline (`adjtimex`), kept by a time daemon
    /// such as chronyd on this host: unsynchronised → LI 3, stratum 0;
    /// pending leap → LI 1/2; maxerror → root dispersion.
    Kernel,
    /// Claim to be synchronised at the configured stratum whatever the
    /// kernel says, like chrony's `local` directive. For isolated test
    /// networks only: never on a public address.
    Local,
    /// chronyd's tracking report from its command socket: its leap status,
    /// stratum, reference ID and time, root delay and dispersion, as
    /// chronyd itself would serve them. While chronyd does not answer, the
    /// kernel's discipline (as `kernel`), counted as a fallback.
    Chrony,
    /// The header of a local NTP daemon's reply to a query on loopback
    /// (`upstream_ntp`), for daemons without a command socket ntpx speaks
    /// (ntpd, ntpd-rs); the kernel's discipline while it does not answer.
    Ntp,
}

/// Where the state of an upstream daemon comes from (chronyd's command
/// socket; a fake in tests).
pub trait Upstream {
    /// The daemon's tracking report now.
    fn tracking(&mut self) -> std::io::Result<Tracking>;
}

impl Upstream for ChronyClient {
    fn tracking(&mut self) -> std::io::Result<Tracking> {
        ChronyClient::tracking(self)
    }
}

impl Upstream for crate::sys::clock::ntp_query::NtpQuery {
    fn tracking(&mut self) -> std::io::Result<Tracking> {
        self.report()
    }
}

/// The configured part of the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// Where synchronisation status comes from.
    pub source: Source,
    /// Stratum to advertise when synchronised.
    pub stratum: u8,
    /// Reference ID to advertise.
    pub ref_id: [u8; 4],
    /// Root delay of the upstream path.
    pub root_delay: NtpShort,
    /// Dispersion added to the kernel's maximum error (or used alone with
    /// the local source).
    pub root_dispersion: NtpShort,
    /// Past this age (nanoseconds since it was computed) a state no longer
    /// vouches for the time: replies say LI 3. The control thread
    /// recomputes it every second, so only a hung or stopped process gets
    /// there.
    pub max_age_ns: u64,
    /// A state whose root distance ([`root_distance_ns`]) passes this no
    /// longer vouches for the time either: replies say LI 3.
    pub max_root_distance_ns: u64,
}

/// What the workers read: the NTP state and the TAI scale they need to
/// convert the XDP program's stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The fields that go into replies.
    pub ntp: ServerState,
    /// TAI − UTC, and where a leap second the kernel applies changes it.
    pub tai: TaiScale,
    /// When it was computed.
    pub computed: NtpTimestamp,
    /// See [`StateConfig::max_age_ns`].
    pub max_age_ns: u64,
    /// Taken out of service for maintenance (`ntpx drain`).
    pub drain: Drain,
}

/// Out of service for maintenance (`ntpx drain on`, or the drain file):
/// the server says it has no time, or says nothing. Its values are the
/// drain file's contents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Drain {
    /// In service.
    #[default]
    Off = 0,
    /// Replies say LI 3, stratum 0: clients look elsewhere, and see why.
    Unsync = 1,
    /// No replies (counted as `draining`).
    Stop = 2,
}

impl Drain {
    /// Its name (the drain file's contents, `ntpx stats`, logs).
    pub fn name(self) -> &'static str {
        match self {
            Drain::Off => "off",
            Drain::Unsync => "unsync",
            Drain::Stop => "stop",
        }
    }

    fn from_u8(v: u8) -> Drain {
        match v {
            1 => Drain::Unsync,
            2 => Drain::Stop,
            _ => Drain::Off,
        }
    }
}

/// RFC 5905's root distance: half the root delay plus the root dispersion.
pub fn root_distance_ns(s: &ServerState) -> u64 {
    s.root_delay.to_nanos() / 2 + s.root_dispersion.to_nanos()
}

impl Snapshot {
    /// The header fields for a reply at `now_unix_ns` (`now_tai_ns` on
    /// `CLOCK_TAI`): aged since the snapshot was computed
    /// ([`ServerState::aged`]); once a pending leap second is over, no
    /// longer announcing it (the next refresh would say so up to a second
    /// later).
    #[inline]
    pub fn header_at(&self, now_unix_ns: u64, now_tai_ns: u64) -> ServerState {
        let age = NtpTimestamp::from_unix_nanos(now_unix_ns).signed_nanos_since(self.computed);
        let mut h = self
            .ntp
            .aged(u64::try_from(age).unwrap_or(0), self.max_age_ns);
        if matches!(h.leap, Leap::Insert | Leap::Delete)
            && now_tai_ns >= self.tai.leap_over_tai_ns()
        {
            h.leap = Leap::None;
        }
        h
    }
}

/// Computes the snapshot from config, the kernel's discipline, the
/// upstream daemon's report (if it gave one) and now.
pub fn compute(
    cfg: &StateConfig,
    precision: i8,
    d: &Discipline,
    upstream: Option<&Tracking>,
    now_unix_ns: u64,
) -> Snapshot {
    let now = NtpTimestamp::from_unix_nanos(now_unix_ns);
    let ntp = match (cfg.source, upstream) {
        (Source::Chrony | Source::Ntp, Some(t)) if t.leap == Leap::Unsynchronized => {
            ServerState::unsynchronized(precision)
        }
        (Source::Chrony | Source::Ntp, Some(t)) => {
            let since_update = now.signed_nanos_since(t.ref_time).max(0) as u64;
            ServerState {
                leap: t.leap,
                stratum: t.stratum.clamp(1, 15),
                precision,
                root_delay: t.root_delay_short(),
                root_dispersion: t.root_dispersion_after(since_update),
                ref_id: t.ref_id,
                ref_time: if t.ref_time.is_after(now) {
                    now
                } else {
                    t.ref_time
                },
            }
        }
        (Source::Kernel | Source::Chrony | Source::Ntp, _) if !d.synchronized => {
            ServerState::unsynchronized(precision)
        }
        (Source::Kernel | Source::Chrony | Source::Ntp, _) => {
            let maxerror_ns = u64::try_from(d.maxerror_us)
                .unwrap_or(0)
                .saturating_mul(1000);
            let disp = NtpShort::from_nanos_ceil(
                maxerror_ns.saturating_add(cfg.root_dispersion.to_nanos()),
            );
            ServerState {
                leap: d.leap,
                stratum: cfg.stratum,
                precision,
                root_delay: cfg.root_delay,
                root_dispersion: disp,
                ref_id: cfg.ref_id,
                ref_time: now,
            }
        }
        (Source::Local, _) => ServerState {
            leap: Leap::None,
            stratum: cfg.stratum,
            precision,
            root_delay: cfg.root_delay,
            root_dispersion: cfg.root_dispersion,
            ref_id: cfg.ref_id,
            ref_time: now,
        },
    };
    // An error bound this wide is no time to serve: unsynchronised.
    let ntp =
        if ntp.leap != Leap::Unsynchronized && root_distance_ns(&ntp) > cfg.max_root_distance_ns {
            ServerState::unsynchronized(precision)
        } else {
            ntp
        };
    Snapshot {
        ntp,
        // The kernel steps UTC at a leap it was told of (STA_INS/STA_DEL),
        // whoever announces it; the leap's day from the kernel's own
        // reading taken with that state (a clock read apart could fall on
        // the other side of midnight).
        tai: TaiScale::for_leap(
            d.leap,
            d.tai_offset_s,
            if d.time_unix_ns != 0 {
                d.time_unix_ns
            } else {
                now_unix_ns
            },
            d.leap_in_progress,
        ),
        computed: now,
        max_age_ns: cfg.max_age_ns,
        drain: Drain::Off,
    }
}

/// The shared, lock-free-readable state.
#[derive(Debug)]
pub struct SharedState {
    current: ArcSwap<Snapshot>,
    /// The configured part (the control thread's; changed by a reload).
    cfg: std::sync::Mutex<StateConfig>,
    precision: i8,
    /// Refreshes from the upstream daemon's report, and those that fell
    /// back to the kernel because it did not answer.
    from_upstream: AtomicU64,
    held: AtomicU64,
    fallbacks: AtomicU64,
    /// The last report and when it came (control thread only).
    last_report: std::sync::Mutex<Option<(Tracking, NtpTimestamp)>>,
    /// `leap-seconds.list`, if configured: announces leaps too.
    leap_list: Option<LeapList>,
    /// [`Drain`], as set by the control thread.
    drain: AtomicU8,
    /// What the self-probe saw (control thread; None: no probe).
    probe: std::sync::Mutex<Option<crate::server::probe::ProbeStatus>>,
    /// The top talkers (control thread).
    talkers: std::sync::Mutex<Vec<crate::server::talkers::Talker>>,
}

/// How long a chronyd report stands in for missing ones before the kernel
/// takes over: one lost query must not change what the replies say.
pub const HOLD_REPORT_NS: i64 = 5_000_000_000;

impl SharedState {
    /// Creates the state and computes its first value.
    pub fn new(
        cfg: StateConfig,
        precision: i8,
        kernel: &impl KernelClock,
        clock: &impl Clock,
    ) -> std::io::Result<Self> {
        let first = compute(
            &cfg,
            precision,
            &kernel.discipline()?,
            None,
            clock.now_unix_nanos(),
        );
        Ok(SharedState {
            current: ArcSwap::from_pointee(first),
            cfg: std::sync::Mutex::new(cfg),
            precision,
            from_upstream: AtomicU64::new(0),
            held: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            last_report: std::sync::Mutex::new(None),
            leap_list: None,
            drain: AtomicU8::new(Drain::Off as u8),
            probe: std::sync::Mutex::new(None),
            talkers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Announces the leaps of `list` too (on their day, when neither the
    /// daemon nor the kernel does).
    pub fn with_leap_list(mut self, list: Option<LeapList>) -> Self {
        self.leap_list = list;
        self
    }

    /// Recomputes from the kernel (control thread, once a second).
    pub fn refresh(&self, kernel: &impl KernelClock, clock: &impl Clock) -> std::io::Result<()> {
        self.refresh_from(kernel, clock, None)
    }

    /// Recomputes from the upstream daemon when the source is `chrony`
    /// and it answers, else from the kernel.
    pub fn refresh_from(
        &self,
        kernel: &impl KernelClock,
        clock: &impl Clock,
        upstream: Option<&mut dyn Upstream>,
    ) -> std::io::Result<()> {
        let now_ns = clock.now_unix_nanos();
        let now = NtpTimestamp::from_unix_nanos(now_ns);
        let cfg = self.config();
        let report = match (cfg.source, upstream) {
            (Source::Chrony | Source::Ntp, u) => {
                let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
                match u.map(|u| u.tracking()) {
                    Some(Ok(t)) => {
                        self.from_upstream.fetch_add(1, Relaxed);
                        *last = Some((t, now));
                        Some(t)
                    }
                    failed => {
                        let held = last
                            .filter(|(_, at)| now.signed_nanos_since(*at) <= HOLD_REPORT_NS)
                            .map(|(t, _)| t);
                        if held.is_some() {
                            self.held.fetch_add(1, Relaxed);
                        } else if self.fallbacks.fetch_add(1, Relaxed) == 0 {
                            let why = match failed {
                                Some(Err(e)) => e.to_string(),
                                _ => "no socket to ask it".to_owned(),
                            };
                            tracing::warn!(error = %why, "the time daemon does not answer: following the kernel's clock state until it does");
                        }
                        held
                    }
                }
            }
            _ => None,
        };
        let discipline = match kernel.discipline() {
            Ok(d) => d,
            Err(e) => {
                // No new state; a drain still applies to the old one.
                let mut cur = **self.current.load();
                if cur.drain != self.drain() && self.drain() != Drain::Off {
                    cur.drain = self.drain();
                    cur.ntp = ServerState::unsynchronized(self.precision);
                    self.current.store(Arc::new(cur));
                }
                return Err(e);
            }
        };
        let mut next = compute(&cfg, self.precision, &discipline, report.as_ref(), now_ns);
        // A leap the list knows of and nobody announced yet.
        if let Some(list) = &self.leap_list
            && next.ntp.leap == Leap::None
        {
            next.ntp.leap = list.leap_today(now_ns);
        }
        // Out of service: no time to give, whatever the clock says.
        next.drain = self.drain();
        if next.drain != Drain::Off {
            next.ntp = ServerState::unsynchronized(self.precision);
        }
        if **self.current.load() != next {
            self.current.store(Arc::new(next));
        }
        Ok(())
    }

    /// The configured part.
    pub fn config(&self) -> StateConfig {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the configured part (a reload), from the next refresh on.
    pub fn set_config(&self, cfg: StateConfig) {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
    }

    /// Takes the server out of service, or puts it back, from the next
    /// refresh on.
    pub fn set_drain(&self, d: Drain) {
        self.drain.store(d as u8, Relaxed);
    }

    /// The drain the next refresh applies.
    pub fn drain(&self) -> Drain {
        Drain::from_u8(self.drain.load(Relaxed))
    }

    /// Keeps what the self-probe saw (control thread).
    pub fn set_probe(&self, s: crate::server::probe::ProbeStatus) {
        if let Ok(mut p) = self.probe.lock() {
            *p = Some(s);
        }
    }

    /// Keeps the top talkers (control thread).
    pub fn set_talkers(&self, t: Vec<crate::server::talkers::Talker>) {
        if let Ok(mut p) = self.talkers.lock() {
            *p = t;
        }
    }

    /// The top talkers now.
    pub fn talkers(&self) -> Vec<crate::server::talkers::Talker> {
        self.talkers.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// What the self-probe saw so far; None: no probe.
    pub fn probe(&self) -> Option<crate::server::probe::ProbeStatus> {
        self.probe.lock().ok().and_then(|p| p.clone())
    }

    /// The current snapshot (workers: once per batch; no lock, no
    /// allocation).
    #[inline]
    pub fn load(&self) -> Snapshot {
        **self.current.load()
    }

    /// `(refreshes from the upstream daemon's reports, refreshes that held
    /// its last report over a missed one, fallbacks to the kernel)`.
    pub fn upstream_counts(&self) -> (u64, u64, u64) {
        (
            self.from_upstream.load(Relaxed),
            self.held.load(Relaxed),
            self.fallbacks.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(source: Source) -> StateConfig {
        StateConfig {
            source,
            stratum: 2,
            ref_id: [198, 18, 0, 9],
            root_delay: NtpShort::from_bits(0x100),
            root_dispersion: NtpShort::from_bits(0x10000),
            max_age_ns: 10_000_000_000,
            max_root_distance_ns: 3_000_000_000,
        }
    }

    fn disc(synchronized: bool, leap: Leap) -> Discipline {
        Discipline {
            synchronized,
            leap,
            maxerror_us: 500_000,
            tai_offset_s: 37,
            leap_in_progress: false,
            time_unix_ns: 0,
        }
    }

    #[test]
    fn kernel_unsynchronized_means_li3_stratum0() {
        let s = compute(&cfg(Source::Kernel), -24, &disc(false, Leap::None), None, 0);
        assert_eq!(s.ntp.leap, Leap::Unsynchronized);
        assert_eq!(s.ntp.stratum, 0);
        assert_eq!(s.tai, TaiScale::fixed(37));
    }

    #[test]
    fn kernel_synchronized_carries_leap_and_maxerror() {
        let s = compute(
            &cfg(Source::Kernel),
            -24,
            &disc(true, Leap::Insert),
            None,
            0,
        );
        assert_eq!(s.ntp.leap, Leap::Insert);
        assert_eq!(s.ntp.stratum, 2);
        // 1 s configured + 0.5 s maxerror.
        assert_eq!(s.ntp.root_dispersion.to_bits(), 0x18000);
        assert_eq!(s.ntp.root_delay.to_bits(), 0x100);
    }

    #[test]
    fn snapshots_age_and_expire() {
        let t0 = 1_700_000_000_000_000_000u64;
        let s = compute(&cfg(Source::Local), -24, &disc(true, Leap::None), None, t0);
        assert_eq!(s.header_at(t0, t0), s.ntp);
        // A clock read a little before the snapshot's own time: no aging.
        assert_eq!(s.header_at(t0 - 1000, t0), s.ntp);
        let later = s.header_at(t0 + 5_000_000_000, t0);
        assert!(later.root_dispersion.to_bits() > s.ntp.root_dispersion.to_bits());
        assert_eq!(later.leap, Leap::None);
        assert_eq!(
            s.header_at(t0 + 10_000_001_000, t0).leap,
            Leap::Unsynchronized
        );
    }

    struct FakeChrony(Option<Tracking>);
    impl Upstream for FakeChrony {
        fn tracking(&mut self) -> std::io::Result<Tracking> {
            self.0.ok_or_else(|| std::io::Error::other("silent"))
        }
    }

    #[test]
    fn chrony_report_makes_the_header_and_the_kernel_is_the_fallback() {
        let t0 = 1_700_000_000_000_000_000u64;
        let clock = FakeClock(t0);
        // The kernel (fake) says synchronised, TAI offset 37.
        let k = FakeKernel(std::cell::Cell::new(true));
        let s = SharedState::new(cfg(Source::Chrony), -24, &k, &clock).unwrap();
        let report = Tracking {
            ref_id: [192, 0, 2, 123],
            stratum: 3,
            leap: Leap::Delete,
            ref_time: NtpTimestamp::from_unix_nanos(t0 - 10_000_000_000),
            root_delay: 0.002,
            root_dispersion: 0.0005,
        };
        s.refresh_from(&k, &clock, Some(&mut FakeChrony(Some(report))))
            .unwrap();
        let n = s.load().ntp;
        assert_eq!(
            (n.leap, n.stratum, n.ref_id),
            (Leap::Delete, 3, [192, 0, 2, 123])
        );
        assert_eq!(n.ref_time, report.ref_time);
        assert_eq!(n.root_delay, report.root_delay_short());
        // Aged for the 10 s since chronyd's last update.
        assert_eq!(
            n.root_dispersion,
            report.root_dispersion_after(10_000_000_000)
        );
        assert_eq!(s.load().tai, TaiScale::fixed(37));
        // chronyd unsynchronised: LI 3, stratum 0.
        let unsync = Tracking {
            leap: Leap::Unsynchronized,
            ..report
        };
        s.refresh_from(&k, &clock, Some(&mut FakeChrony(Some(unsync))))
            .unwrap();
        assert_eq!(s.load().ntp, ServerState::unsynchronized(-24));
        // One missed report: the last one stands in (unsynchronised here).
        s.refresh_from(&k, &clock, Some(&mut FakeChrony(None)))
            .unwrap();
        assert_eq!(s.load().ntp, ServerState::unsynchronized(-24));
        s.refresh_from(&k, &clock, Some(&mut FakeChrony(Some(report))))
            .unwrap();
        let later = FakeClock(t0 + 4_000_000_000);
        s.refresh_from(&k, &later, Some(&mut FakeChrony(None)))
            .unwrap();
        assert_eq!((s.load().ntp.leap, s.load().ntp.stratum), (Leap::Delete, 3));
        // Silent for longer than the hold: the kernel's state
        // (synchronised, configured stratum), counted; then the kernel
        // says unsynchronised: LI 3.
        let much_later = FakeClock(t0 + 6_000_000_000);
        s.refresh_from(&k, &much_later, Some(&mut FakeChrony(None)))
            .unwrap();
        assert_eq!((s.load().ntp.leap, s.load().ntp.stratum), (Leap::None, 2));
        k.0.set(false);
        s.refresh_from(&k, &much_later, None).unwrap();
        assert_eq!(s.load().ntp.leap, Leap::Unsynchronized);
        assert_eq!(s.upstream_counts(), (3, 2, 2));
    }

    /// A fake clock crossing the leap second inserted at the end of
    /// 2016-12-31 (TAI − UTC 36 → 37; here 37 → 38 to be sure the offset
    /// comes from the kernel, not a table), a request every 50 ms: each
    /// reply's LI says "insert" until the inserted second is over and
    /// nothing after, and its T2 and T3 are the UTC the kernel's stepped
    /// clock reads (23:59:59 twice), never a second off.
    #[test]
    fn replies_through_a_leap_second() {
        use crate::proto::ntp::Packet;
        use crate::proto::respond::{Responder, respond};
        const NS: u64 = 1_000_000_000;
        let midnight = 1_483_228_800u64;
        let mut d = disc(true, Leap::Insert);
        d.tai_offset_s = 37;
        let snap = compute(&cfg(Source::Kernel), -24, &d, None, (midnight - 2) * NS);
        assert_eq!(snap.tai.leap_tai_ns, (midnight + 37) * NS);
        // A refresh during the inserted second (TIME_OOP: UTC stepped back,
        // the kernel's offset already 38) sees the same leap.
        let oop = Discipline {
            tai_offset_s: 38,
            leap_in_progress: true,
            ..d
        };
        let during = compute(
            &cfg(Source::Kernel),
            -24,
            &oop,
            None,
            (midnight - 1) * NS + NS / 3,
        );
        assert_eq!(during.tai, snap.tai);
        // The same when the clock read apart still says 00:00:00 (the
        // step not yet seen) but the kernel's own reading, taken with its
        // state, says 23:59:59 again.
        let racing = compute(
            &cfg(Source::Kernel),
            -24,
            &Discipline {
                time_unix_ns: (midnight - 1) * NS + NS / 10,
                ..oop
            },
            None,
            midnight * NS + NS / 10,
        );
        assert_eq!(racing.tai, snap.tai);
        // And one after it (TIME_WAIT: no leap, offset 38).
        let after = compute(
            &cfg(Source::Kernel),
            -24,
            &Discipline {
                leap: Leap::None,
                tai_offset_s: 38,
                ..d
            },
            None,
            midnight * NS + NS / 3,
        );
        assert_eq!(after.tai, TaiScale::fixed(38));
        let r = Responder::new([2, 0, 0, 0, 0, 1], vec![[198, 18, 0, 1].into()], vec![]);
        let (mut announced, mut after) = (0, 0);
        let start_tai = (midnight - 2 + 37) * NS;
        for i in 0..100u64 {
            let tai = start_tai + i * 50_000_000;
            // The kernel's UTC: stepped back a second at the leap.
            let unix = if tai < (midnight + 37) * NS {
                tai - 37 * NS
            } else {
                tai - 38 * NS
            };
            let h = snap.header_at(unix, tai);
            let rx = crate::sys::clock::receive_time(0, tai, &snap.tai, 0);
            assert_eq!(rx, unix, "T2 at TAI {tai}");
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
                .ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
                .udp(40000, 123)
                .write(&mut f, &{
                    let mut q = [0u8; 48];
                    q[0] = 0x23;
                    q
                })
                .unwrap();
            let n = respond(
                &mut f,
                &r,
                &h,
                NtpTimestamp::from_unix_nanos(rx),
                || NtpTimestamp::from_unix_nanos(unix + 1000),
                0,
            )
            .unwrap()
            .len;
            let p = Packet::new_checked(&f[n - 48..n]).unwrap();
            let over = tai >= (midnight + 38) * NS;
            assert_eq!(
                p.leap(),
                if over { Leap::None } else { Leap::Insert },
                "LI at TAI {tai}"
            );
            if over {
                after += 1;
            } else {
                announced += 1;
            }
            let want = NtpTimestamp::from_unix_nanos(unix);
            assert!(
                p.receive().signed_nanos_since(want).abs() < 100,
                "T2 at TAI {tai}"
            );
            assert!(
                (0..2000).contains(&p.transmit().signed_nanos_since(want)),
                "T3 at TAI {tai}"
            );
        }
        assert_eq!((announced, after), (60, 40));
    }

    struct FakeClock(u64);
    impl Clock for FakeClock {
        fn now_unix_nanos(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_root_distance_past_the_bound_is_unsynchronised() {
        let mut c = cfg(Source::Kernel);
        // 1 s configured + 0.5 s maxerror = 1.5 s dispersion, + half the
        // root delay (0x100 units = 3.9 ms).
        c.max_root_distance_ns = 1_400_000_000;
        let s = compute(&c, -24, &disc(true, Leap::None), None, 0);
        assert_eq!(s.ntp, ServerState::unsynchronized(-24));
        c.max_root_distance_ns = 1_600_000_000;
        let s = compute(&c, -24, &disc(true, Leap::None), None, 0);
        assert_eq!((s.ntp.leap, s.ntp.stratum), (Leap::None, 2));
    }

    #[test]
    fn local_ignores_the_kernel() {
        let s = compute(
            &cfg(Source::Local),
            -24,
            &disc(false, Leap::Delete),
            None,
            0,
        );
        assert_eq!(s.ntp.leap, Leap::None);
        assert_eq!(s.ntp.stratum, 2);
    }

    struct FakeKernel(std::cell::Cell<bool>);
    impl KernelClock for FakeKernel {
        fn discipline(&self) -> std::io::Result<Discipline> {
            Ok(disc(self.0.get(), Leap::None))
        }
    }

    #[test]
    fn refresh_publishes_changes() {
        let k = FakeKernel(std::cell::Cell::new(false));
        let s = SharedState::new(
            cfg(Source::Kernel),
            -24,
            &k,
            &crate::sys::clock::SystemClock,
        )
        .unwrap();
        assert_eq!(s.load().ntp.leap, Leap::Unsynchronized);
        k.0.set(true);
        s.refresh(&k, &crate::sys::clock::SystemClock).unwrap();
        assert_eq!(s.load().ntp.leap, Leap::None);
    }
}
