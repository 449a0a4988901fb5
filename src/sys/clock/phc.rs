//! The NIC's clock (PTP hardware clock, `/dev/ptpN`) and its mapping to
//! the system's `CLOCK_TAI`.
//!
//! A NIC stamps received frames with its own clock: TAI when ptp4l
//! disciplines it, UTC under some set-ups, or free-running from whenever
//! the NIC was reset. Whatever it runs, ntpx measures it against the
//! system clock every second ([`PhcSampler`]: the kernel's
//! `PTP_SYS_OFFSET_PRECISE` where the device has a cross-timestamp, else
//! `PTP_SYS_OFFSET_EXTENDED`, else `PTP_SYS_OFFSET`) and fits a line
//! through the recent samples ([`PhcTracker`]: offset and frequency,
//! samples with a wide read window rejected, a step restarting the fit).
//! The result, [`PhcMap`], converts a hardware stamp to `CLOCK_TAI` with a
//! multiply and a shift, here and in the XDP program (`phc_to_tai()` in
//! `bpf/reply.h`), which gets it with the server state. Mapping to TAI,
//! not UTC, keeps a leap second out of the fit: [`super::TaiScale`] turns
//! the result into UTC like any other stamp.
//!
//! The ioctls are behind [`PtpDevice`], so the choice among them and the
//! mathematics are tested with a fake device: this machine has no PHC.

use std::collections::VecDeque;
use std::io;

const NS: i128 = 1_000_000_000;
/// A stamp further than this from the mapping's reference is not
/// converted (the XDP program's `NTPX_PHC_MAX_DELTA_NS`): the mapping is
/// refreshed every second, so only a stalled control thread gets there.
pub const MAX_DELTA_NS: i64 = 4_000_000_000;

/// PHC time → `CLOCK_TAI`: `tai = tai_ref + d + (d · rate_q32) >> 32`
/// with `d = phc − phc_ref`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhcMap {
    /// A PHC reading...
    pub phc_ref_ns: u64,
    /// ...and the `CLOCK_TAI` time it corresponds to (never 0).
    pub tai_ref_ns: u64,
    /// TAI nanoseconds per PHC nanosecond, minus one, times 2^32.
    pub rate_q32: i64,
}

impl PhcMap {
    /// The `CLOCK_TAI` time of PHC reading `phc_ns`; `None` for 0 (no
    /// stamp) or one more than [`MAX_DELTA_NS`] from the reference. The
    /// same integer sums as the XDP program.
    pub fn to_tai(&self, phc_ns: u64) -> Option<u64> {
        if phc_ns == 0 || self.tai_ref_ns == 0 {
            return None;
        }
        let d = phc_ns.wrapping_sub(self.phc_ref_ns) as i64;
        if !(-MAX_DELTA_NS..=MAX_DELTA_NS).contains(&d) {
            return None;
        }
        Some(
            self.tai_ref_ns
                .wrapping_add((d + (d.wrapping_mul(self.rate_q32) >> 32)) as u64),
        )
    }
}

/// One comparison of the PHC with the system clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhcSample {
    /// The PHC's reading.
    pub phc_ns: u64,
    /// `CLOCK_TAI` at the same instant (the middle of the read window).
    pub tai_ns: u64,
    /// How long the system clock reads around it took (0 for a device
    /// cross-timestamp): the sample's uncertainty.
    pub window_ns: u64,
}

/// Keeps [`PhcMap`] from a window of samples.
#[derive(Debug, Default)]
pub struct PhcTracker {
    samples: VecDeque<PhcSample>,
    map: Option<PhcMap>,
    /// Samples dropped for a read window much wider than the others'.
    pub rejected: u64,
    /// Fits restarted because the PHC (or the system clock) stepped.
    pub steps: u64,
}

/// Samples the fit uses.
const WINDOW: usize = 16;
/// A sample whose read window is this many times the narrowest one's (and
/// at least 2 µs wider) is an outlier: the reads were interrupted.
const OUTLIER_FACTOR: u64 = 4;
/// A sample this far from the current fit means a step: start again.
const STEP_NS: i64 = 1_000_000;
/// A fitted frequency beyond this (1000 ppm) is no clock: start again.
const MAX_RATE: f64 = 1e-3;

impl PhcTracker {
    /// A tracker with no samples.
    pub fn new() -> PhcTracker {
        PhcTracker::default()
    }

    /// The current mapping (none before the first sample).
    pub fn map(&self) -> Option<PhcMap> {
        self.map
    }

    /// Adds a sample and refits; returns the mapping.
    pub fn add(&mut self, s: PhcSample) -> Option<PhcMap> {
        let narrowest = self.samples.iter().map(|x| x.window_ns).min();
        if let Some(n) = narrowest
            && s.window_ns > n.saturating_mul(OUTLIER_FACTOR)
            && s.window_ns > n + 2_000
        {
            self.rejected += 1;
            return self.map;
        }
        if let Some(m) = self.map {
            let off = m.to_tai(s.phc_ns).map(|t| t.wrapping_sub(s.tai_ns) as i64);
            if off.is_none_or(|o| o.unsigned_abs() > STEP_NS as u64 + s.window_ns) {
                self.steps += 1;
                self.samples.clear();
            }
        }
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
        self.map = self.fit();
        if self.map.is_none() {
            self.steps += 1;
            self.samples.clear();
            self.samples.push_back(s);
            self.map = self.fit();
        }
        self.map
    }

    /// Least squares of (TAI − PHC) against PHC, relative to the newest
    /// sample; `None` if the slope is implausible.
    fn fit(&self) -> Option<PhcMap> {
        let last = *self.samples.back()?;
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|x| {
                let dx = x.phc_ns.wrapping_sub(last.phc_ns) as i64 as f64;
                let dy = (i128::from(x.tai_ns) - i128::from(x.phc_ns))
                    - (i128::from(last.tai_ns) - i128::from(last.phc_ns));
                (dx, dy as f64)
            })
            .collect();
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = if pts.len() < 2 || sxx == 0.0 {
            0.0
        } else {
            sxy / sxx
        };
        if !slope.is_finite() || slope.abs() > MAX_RATE {
            return None;
        }
        // The fitted TAI at the newest sample's PHC reading: its own TAI,
        // moved onto the line.
        let at_last = my - slope * mx;
        let tai_ref = i128::from(last.tai_ns) + at_last.round() as i128;
        let tai_ref = u64::try_from(tai_ref).ok().filter(|&t| t != 0)?;
        Some(PhcMap {
            phc_ref_ns: last.phc_ns,
            tai_ref_ns: tai_ref,
            rate_q32: (slope * 4_294_967_296.0).round() as i64,
        })
    }
}

/// The three ways the kernel compares a PHC with the system clock
/// (`linux/ptp_clock.h`). System times are `CLOCK_REALTIME` nanoseconds.
pub trait PtpDevice {
    /// `PTP_SYS_OFFSET_PRECISE`: a cross-timestamp from the device,
    /// `(phc, realtime)`.
    fn precise(&mut self) -> io::Result<(u64, u64)>;
    /// `PTP_SYS_OFFSET_EXTENDED`: `n` triples `[realtime before, phc,
    /// realtime after]`.
    fn extended(&mut self, n: usize) -> io::Result<Vec<[u64; 3]>>;
    /// `PTP_SYS_OFFSET`: `n` PHC reads between `n + 1` system reads:
    /// `[sys, phc, sys, phc, ..., sys]`.
    fn basic(&mut self, n: usize) -> io::Result<Vec<u64>>;
}

/// Which comparison a device answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `PTP_SYS_OFFSET_PRECISE`.
    Precise,
    /// `PTP_SYS_OFFSET_EXTENDED`.
    Extended,
    /// `PTP_SYS_OFFSET`.
    Basic,
}

/// Reads within one comparison; the narrowest window wins.
const READS: usize = 9;

/// Samples a PHC with the best comparison its driver offers.
#[derive(Debug)]
pub struct PhcSampler<D> {
    dev: D,
    method: Option<Method>,
}

impl<D: PtpDevice> PhcSampler<D> {
    /// A sampler of `dev`; the method is found by the first sample.
    pub fn new(dev: D) -> Self {
        PhcSampler { dev, method: None }
    }

    /// The method in use, once one worked.
    pub fn method(&self) -> Option<Method> {
        self.method
    }

    /// One sample, with `CLOCK_TAI` = `CLOCK_REALTIME` + `tai_offset_s`.
    /// Tries the methods in order of quality the first time (a driver
    /// without one says `EOPNOTSUPP`), then keeps to the one that worked.
    pub fn sample(&mut self, tai_offset_s: i32) -> io::Result<PhcSample> {
        let order: &[Method] = match self.method {
            Some(Method::Precise) => &[Method::Precise],
            Some(Method::Extended) => &[Method::Extended],
            Some(Method::Basic) => &[Method::Basic],
            None => &[Method::Precise, Method::Extended, Method::Basic],
        };
        let mut last = io::Error::from_raw_os_error(libc::EOPNOTSUPP);
        for &m in order {
            match self.sample_with(m) {
                Ok((phc, realtime, window)) => {
                    self.method = Some(m);
                    let tai = (i128::from(realtime) + i128::from(tai_offset_s) * NS).max(1);
                    return Ok(PhcSample {
                        phc_ns: phc,
                        tai_ns: u64::try_from(tai).unwrap_or(u64::MAX),
                        window_ns: window,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `(phc, realtime, window)` by method `m`.
    fn sample_with(&mut self, m: Method) -> io::Result<(u64, u64, u64)> {
        let bad = || io::Error::other("the PHC comparison returned no usable reads");
        match m {
            Method::Precise => self.dev.precise().map(|(p, r)| (p, r, 0)),
            Method::Extended => {
                let t = self.dev.extended(READS)?;
                t.iter()
                    .filter(|x| x[2] >= x[0])
                    .min_by_key(|x| x[2] - x[0])
                    .map(|x| (x[1], x[0] + (x[2] - x[0]) / 2, x[2] - x[0]))
                    .ok_or_else(bad)
            }
            Method::Basic => {
                let v = self.dev.basic(READS)?;
                (0..v.len().saturating_sub(1) / 2)
                    .map(|i| (v[2 * i], v[2 * i + 1], v[2 * i + 2]))
                    .filter(|&(a, _, b)| b >= a)
                    .min_by_key(|&(a, _, b)| b - a)
                    .map(|(a, p, b)| (p, a + (b - a) / 2, b - a))
                    .ok_or_else(bad)
            }
        }
    }
}

/// A real PHC character device.
#[derive(Debug)]
pub struct SystemPtp {
    file: std::fs::File,
}

impl SystemPtp {
    /// Opens `/dev/ptp<index>` read-only (the comparisons change nothing).
    pub fn open(index: u32) -> io::Result<SystemPtp> {
        let file = std::fs::File::open(format!("/dev/ptp{index}"))?;
        Ok(SystemPtp { file })
    }
}

/// `struct ptp_clock_time`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PtpTime {
    sec: i64,
    nsec: u32,
    reserved: u32,
}

impl PtpTime {
    fn ns(self) -> u64 {
        (self.sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(self.nsec))
    }
}

/// `struct ptp_sys_offset_precise`.
#[repr(C)]
#[derive(Default)]
struct OffsetPrecise {
    device: PtpTime,
    sys_realtime: PtpTime,
    sys_monoraw: PtpTime,
    rsv: [u32; 4],
}

const PTP_MAX_SAMPLES: usize = 25;

/// `struct ptp_sys_offset_extended`.
#[repr(C)]
struct OffsetExtended {
    n_samples: u32,
    clockid: i32,
    rsv: [u32; 2],
    ts: [[PtpTime; 3]; PTP_MAX_SAMPLES],
}

/// `struct ptp_sys_offset`.
#[repr(C)]
struct Offset {
    n_samples: u32,
    rsv: [u32; 3],
    ts: [PtpTime; 2 * PTP_MAX_SAMPLES + 1],
}

/// `_IOC(dir, '=', nr, size)`.
const fn ptp_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'=' as u64) << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const PTP_SYS_OFFSET: u64 = ptp_ioc(IOC_WRITE, 5, std::mem::size_of::<Offset>());
const PTP_SYS_OFFSET_PRECISE: u64 = ptp_ioc(
    IOC_READ | IOC_WRITE,
    8,
    std::mem::size_of::<OffsetPrecise>(),
);
const PTP_SYS_OFFSET_EXTENDED: u64 = ptp_ioc(
    IOC_READ | IOC_WRITE,
    9,
    std::mem::size_of::<OffsetExtended>(),
);

impl SystemPtp {
    /// # Safety
    ///
    /// `arg` must be the struct that `req` names (its size is encoded in
    /// `req`), live and exclusively borrowed for the call.
    unsafe fn ioctl<T>(&self, req: u64, arg: &mut T) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the caller passes the struct `req` encodes; the kernel
        // reads and writes only within its size.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, std::ptr::from_mut(arg)) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl PtpDevice for SystemPtp {
    fn precise(&mut self) -> io::Result<(u64, u64)> {
        let mut o = OffsetPrecise::default();
        // SAFETY: PTP_SYS_OFFSET_PRECISE takes a ptp_sys_offset_precise.
        unsafe { self.ioctl(PTP_SYS_OFFSET_PRECISE, &mut o) }?;
        Ok((o.device.ns(), o.sys_realtime.ns()))
    }

    fn extended(&mut self, n: usize) -> io::Result<Vec<[u64; 3]>> {
        let n = n.clamp(1, PTP_MAX_SAMPLES);
        let mut o = OffsetExtended {
            n_samples: n as u32,
            clockid: libc::CLOCK_REALTIME,
            rsv: [0; 2],
            ts: [[PtpTime::default(); 3]; PTP_MAX_SAMPLES],
        };
        // SAFETY: PTP_SYS_OFFSET_EXTENDED takes a ptp_sys_offset_extended.
        unsafe { self.ioctl(PTP_SYS_OFFSET_EXTENDED, &mut o) }?;
        Ok(o.ts[..n]
            .iter()
            .map(|t| [t[0].ns(), t[1].ns(), t[2].ns()])
            .collect())
    }

    fn basic(&mut self, n: usize) -> io::Result<Vec<u64>> {
        let n = n.clamp(1, PTP_MAX_SAMPLES);
        let mut o = Offset {
            n_samples: n as u32,
            rsv: [0; 3],
            ts: [PtpTime::default(); 2 * PTP_MAX_SAMPLES + 1],
        };
        // SAFETY: PTP_SYS_OFFSET takes a ptp_sys_offset.
        unsafe { self.ioctl(PTP_SYS_OFFSET, &mut o) }?;
        Ok(o.ts[..2 * n + 1].iter().map(|t| t.ns()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A PHC that runs at `1 + ppb·10⁻⁹` the system clock's rate from
    /// `base` (its reading at system TAI `t0`), stepped by `step` from
    /// system TAI `step_at`; the system's realtime is TAI − 37 s. Offers
    /// only the methods in `methods`.
    struct FakePtp {
        now_tai: u64,
        t0: u64,
        base: u64,
        ppb: i64,
        step_at: u64,
        step: i64,
        methods: &'static [Method],
        read_ns: u64,
    }

    impl FakePtp {
        fn phc_at(&self, tai: u64) -> u64 {
            let d = tai as i128 - self.t0 as i128;
            let mut p = self.base as i128 + d + d * self.ppb as i128 / 1_000_000_000;
            if tai >= self.step_at {
                p += self.step as i128;
            }
            p as u64
        }
        fn realtime(&self, tai: u64) -> u64 {
            tai - 37 * S
        }
        fn refuse(&self, m: Method) -> io::Result<()> {
            if self.methods.contains(&m) {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
            }
        }
    }

    impl PtpDevice for FakePtp {
        fn precise(&mut self) -> io::Result<(u64, u64)> {
            self.refuse(Method::Precise)?;
            Ok((self.phc_at(self.now_tai), self.realtime(self.now_tai)))
        }
        fn extended(&mut self, n: usize) -> io::Result<Vec<[u64; 3]>> {
            self.refuse(Method::Extended)?;
            Ok((0..n as u64)
                .map(|i| {
                    // Every third read is slow (interrupted).
                    let w = if i % 3 == 1 { 100 } else { 900 + 50 * i };
                    let t = self.now_tai + i * 10_000;
                    [
                        self.realtime(t),
                        self.phc_at(t + w / 2),
                        self.realtime(t + w),
                    ]
                })
                .collect())
        }
        fn basic(&mut self, n: usize) -> io::Result<Vec<u64>> {
            self.refuse(Method::Basic)?;
            let mut v = Vec::new();
            let mut t = self.now_tai;
            for _ in 0..n {
                v.push(self.realtime(t));
                v.push(self.phc_at(t + self.read_ns / 2));
                t += self.read_ns;
            }
            v.push(self.realtime(t));
            Ok(v)
        }
    }

    fn fake(base: u64, ppb: i64, methods: &'static [Method]) -> FakePtp {
        FakePtp {
            now_tai: 1_800_000_037 * S,
            t0: 1_800_000_037 * S,
            base,
            ppb,
            step_at: u64::MAX,
            step: 0,
            methods,
            read_ns: 600,
        }
    }

    const ALL: &[Method] = &[Method::Precise, Method::Extended, Method::Basic];

    /// Runs a sampler and tracker for `secs` seconds, one sample a second;
    /// returns the worst error of the mapping at the sample instants
    /// after the first `settle` samples (ns).
    fn run(dev: FakePtp, secs: u64, settle: u64) -> (PhcTracker, PhcSampler<FakePtp>, i64) {
        let mut sampler = PhcSampler::new(dev);
        let mut tr = PhcTracker::new();
        let mut worst = 0i64;
        for i in 0..secs {
            sampler.dev.now_tai = sampler.dev.t0 + i * S;
            let s = sampler.sample(37).unwrap();
            let m = tr.add(s).unwrap();
            // Check a stamp half a second later, against the truth.
            let tai = sampler.dev.now_tai + S / 2;
            let got = m.to_tai(sampler.dev.phc_at(tai)).unwrap();
            if i >= settle {
                worst = worst.max((got as i64 - tai as i64).abs());
            }
        }
        (tr, sampler, worst)
    }

    #[test]
    fn offset_and_drift_whatever_the_phc_runs() {
        let t0 = 1_800_000_037 * S;
        // TAI, UTC (37 s behind) and free-running (since a reset): each
        // with a drift of +40 ppm and -7 ppm.
        for base in [t0, t0 - 37 * S, 123_456_789_012] {
            for ppb in [40_000, -7_000] {
                let (tr, s, worst) = run(fake(base, ppb, ALL), 20, 2);
                assert_eq!(s.method(), Some(Method::Precise));
                assert!(worst <= 2, "base {base} ppb {ppb}: {worst} ns off");
                let m = tr.map().unwrap();
                let fitted_ppb = m.rate_q32 as f64 / 4_294_967_296.0 * 1e9;
                // TAI ns per PHC ns: the inverse of the PHC's drift.
                assert!((fitted_ppb + ppb as f64).abs() < 5.0, "{fitted_ppb}");
                assert_eq!((tr.steps, tr.rejected), (0, 0));
            }
        }
    }

    #[test]
    fn the_ioctls_fall_back_in_order() {
        let t0 = 1_800_000_037 * S;
        let (_, s, worst) = run(fake(t0, 1000, &[Method::Extended, Method::Basic]), 10, 2);
        assert_eq!(s.method(), Some(Method::Extended));
        // The narrowest window of each comparison: within its half.
        assert!(worst <= 100, "{worst}");
        let (_, s, worst) = run(fake(t0, 1000, &[Method::Basic]), 10, 2);
        assert_eq!(s.method(), Some(Method::Basic));
        assert!(worst <= 300, "{worst}");
        let mut none = PhcSampler::new(fake(t0, 0, &[]));
        let e = none.sample(37).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(none.method(), None);
    }

    #[test]
    fn a_step_restarts_the_fit_and_outliers_are_dropped() {
        let t0 = 1_800_000_037 * S;
        let mut dev = fake(t0, 3000, ALL);
        dev.step_at = t0 + 10 * S + S / 4;
        dev.step = -(S as i64) / 3;
        let (tr, _, worst) = run(dev, 20, 12);
        assert_eq!(tr.steps, 1);
        assert!(worst <= 2, "{worst}");
        // A wide-window sample is rejected, a narrow one kept.
        let mut tr = PhcTracker::new();
        let s = |phc: u64, tai: u64, w: u64| PhcSample {
            phc_ns: phc,
            tai_ns: tai,
            window_ns: w,
        };
        tr.add(s(1000 * S, 2000 * S, 500));
        tr.add(s(1001 * S, 2001 * S, 600));
        tr.add(s(1002 * S, 2002 * S + 40_000, 50_000));
        assert_eq!(tr.rejected, 1);
        assert_eq!(tr.map().unwrap().to_tai(1002 * S), Some(2002 * S));
    }

    #[test]
    fn the_ioctl_numbers_are_the_kernels() {
        use linux_raw_sys::ioctl as k;
        assert_eq!(PTP_SYS_OFFSET, u64::from(k::PTP_SYS_OFFSET));
        assert_eq!(PTP_SYS_OFFSET_PRECISE, u64::from(k::PTP_SYS_OFFSET_PRECISE));
        assert_eq!(
            PTP_SYS_OFFSET_EXTENDED,
            u64::from(k::PTP_SYS_OFFSET_EXTENDED)
        );
    }

    #[test]
    fn stamps_far_from_the_reference_or_zero_are_not_converted() {
        let m = PhcMap {
            phc_ref_ns: 100 * S,
            tai_ref_ns: 5000 * S,
            rate_q32: 4295, // ~1 ppm
        };
        assert_eq!(m.to_tai(0), None);
        assert_eq!(m.to_tai(100 * S + 4 * S + 1), None);
        assert_eq!(m.to_tai(100 * S - 4 * S - 1), None);
        assert_eq!(m.to_tai(101 * S), Some(5001 * S + 1000));
        assert_eq!(m.to_tai(99 * S), Some(4999 * S - 1001));
        assert_eq!(PhcMap::default().to_tai(5), None);
    }

    #[test]
    fn mapped_stamps_past_the_ntp_era_wrap() {
        use crate::proto::ntp::NtpTimestamp;
        // 2036-02-07 06:28:16 UTC is NTP era 1's second 0; TAI 37 s later.
        let wrap_unix = 2_085_978_496u64;
        let t0 = (wrap_unix - 5 + 37) * S;
        let dev = FakePtp {
            now_tai: t0,
            ..fake(t0, 25_000, ALL)
        };
        let (tr, _, worst) = run(FakePtp { t0, ..dev }, 7, 2);
        assert!(worst <= 2, "{worst}");
        let m = tr.map().unwrap();
        // A stamp 0.25 s into era 1, mapped, then UTC, then NTP.
        let tai = (wrap_unix + 37) * S + S / 4;
        let phc = t0 + (tai - t0) + (tai - t0) * 25_000 / 1_000_000_000;
        let unix = super::super::tai_to_unix_nanos(m.to_tai(phc).unwrap(), 37);
        let ntp = NtpTimestamp::from_unix_nanos(unix);
        assert_eq!(ntp.seconds(), 0);
        assert!((ntp.fraction() as i64 - (1i64 << 30)).abs() < 20);
    }
}
