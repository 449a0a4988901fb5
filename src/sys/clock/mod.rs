//! Clocks: reading the time, converting the XDP program's TAI stamps, and
//! asking the kernel how well disciplined its clock is.
//!
//! Everything that reads a clock or calls `adjtimex` lives here, behind
//! small traits ([`Clock`], [`KernelClock`]) so that the datapath and the
//! state logic can be tested with fakes. The hardware-timestamp paths to
//! come plug in the same way.

pub mod chrony;
pub mod kernel;
pub mod ntp_query;
pub mod phc;
pub mod tai;

pub use kernel::{Discipline, KernelClock, SystemKernelClock};
pub use tai::{LeapList, TaiScale};

use crate::proto::ntp::NtpTimestamp;

/// A source of "now" for transmit timestamps.
pub trait Clock {
    /// The current UTC time as Unix nanoseconds.
    fn now_unix_nanos(&self) -> u64;

    /// The current time as an NTP timestamp.
    fn now(&self) -> NtpTimestamp {
        NtpTimestamp::from_unix_nanos(self.now_unix_nanos())
    }

    /// The current `CLOCK_TAI` time in nanoseconds (the XDP program's
    /// clock), for decisions that must not repeat with UTC's inserted
    /// second. By default UTC: right for a clock whose TAI offset is 0.
    fn now_tai_nanos(&self) -> u64 {
        self.now_unix_nanos()
    }
}

/// The system's `CLOCK_REALTIME`, read through the vDSO (no syscall).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_unix_nanos(&self) -> u64 {
        // std's SystemTime::now() is clock_gettime(CLOCK_REALTIME), which
        // the vDSO answers without entering the kernel.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    #[inline]
    fn now_tai_nanos(&self) -> u64 {
        tai_now_ns()
    }
}

/// `CLOCK_TAI` now, in nanoseconds: the clock of the XDP program's stamps
/// (`bpf_ktime_get_tai_ns`). 0 if it cannot be read.
pub fn tai_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_TAI).map_or(0, |t| {
        (t.tv_sec() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec() as u64)
    })
}

/// Converts a `CLOCK_TAI` reading (what `bpf_ktime_get_tai_ns` returns) to
/// UTC Unix nanoseconds, given the kernel's TAI−UTC offset in seconds.
#[inline]
pub fn tai_to_unix_nanos(tai_ns: u64, tai_offset_s: i32) -> u64 {
    tai_ns.wrapping_sub((i64::from(tai_offset_s) * 1_000_000_000) as u64)
}

/// A hardware stamp further than this (10 ms) from the software stamp of
/// the same frame is not believed: its PHC mapping has gone wrong (the
/// PHC was stepped since the fit). The XDP program applies the same bound
/// (`NTPX_HW_SW_MAX_NS`).
pub const HW_SW_MAX_NS: u64 = 10_000_000;

/// Where a reply's receive time (T2) came from, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampSource {
    /// The NIC's hardware receive stamp (through the XDP program).
    Hardware = 0,
    /// The XDP program's software stamp, as it ran on the frame.
    Xdp = 1,
    /// The kernel's software stamp (`SO_TIMESTAMPNS`, socket datapath).
    Kernel = 2,
    /// The worker's clock read as it picked the batch up (no stamp).
    Worker = 3,
}

impl StampSource {
    /// How many.
    pub const COUNT: usize = 4;
    /// All, in order.
    pub const ALL: [StampSource; Self::COUNT] = [
        StampSource::Hardware,
        StampSource::Xdp,
        StampSource::Kernel,
        StampSource::Worker,
    ];

    /// Its name in metrics and `ntpx stats`.
    pub fn label(self) -> &'static str {
        match self {
            StampSource::Hardware => "hardware",
            StampSource::Xdp => "xdp",
            StampSource::Kernel => "kernel",
            StampSource::Worker => "worker",
        }
    }
}

/// The receive time of a request: the earliest and most precise stamp
/// there is, as UTC Unix nanoseconds. A hardware stamp wins: the NIC's
/// clock (PHC) reading, which the XDP program has already mapped to
/// `CLOCK_TAI` (`sys::clock::phc::PhcMap`) into the metadata's
/// `rx_hw_ns`. Else the XDP program's software stamp (`CLOCK_TAI`). Both
/// convert with the kernel's offset in force when they were taken (see
/// [`TaiScale`]). Else `fallback` (the worker's own clock read when it
/// picked up the batch, already UTC). Zero means "no stamp" (veth's
/// hardware-stamp kfunc succeeds with 0).
#[inline]
pub fn receive_time(hw_tai_ns: u64, sw_tai_ns: u64, tai: &TaiScale, fallback: u64) -> u64 {
    receive_stamp(hw_tai_ns, sw_tai_ns, tai, fallback).0
}

/// [`receive_time`], and where it came from.
#[inline]
pub fn receive_stamp(
    hw_tai_ns: u64,
    sw_tai_ns: u64,
    tai: &TaiScale,
    fallback: u64,
) -> (u64, StampSource) {
    if hw_tai_ns != 0 && (sw_tai_ns == 0 || hw_tai_ns.abs_diff(sw_tai_ns) <= HW_SW_MAX_NS) {
        (tai.to_unix_nanos(hw_tai_ns), StampSource::Hardware)
    } else if sw_tai_ns != 0 {
        (tai.to_unix_nanos(sw_tai_ns), StampSource::Xdp)
    } else {
        (fallback, StampSource::Worker)
    }
}

/// Measures the clock-read precision as NTP's log2 seconds: the smallest
/// non-zero step between two consecutive reads (at least one read's cost),
/// rounded up to a power of two. Typically −24 or −25 on a modern x86.
pub fn measure_precision(clock: &impl Clock) -> i8 {
    let mut best = u64::MAX;
    let mut last = clock.now_unix_nanos();
    for _ in 0..10_000 {
        let t = clock.now_unix_nanos();
        if t > last {
            best = best.min(t - last);
        }
        last = t;
    }
    precision_from_nanos(best)
}

/// log2 of `nanos` nanoseconds in seconds, rounded up; clamped to the
/// range −32 (233 ps) .. 0 (1 s).
pub fn precision_from_nanos(nanos: u64) -> i8 {
    let mut p: i8 = 0;
    // Halve one second until the next halving would be smaller than `nanos`.
    let mut step = 1_000_000_000f64;
    while p > -32 && step / 2.0 >= nanos as f64 {
        step /= 2.0;
        p -= 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_examples() {
        assert_eq!(precision_from_nanos(59), -24); // 2^-24 s = 59.6 ns
        assert_eq!(precision_from_nanos(60), -23); // rounds up
        assert_eq!(precision_from_nanos(20), -25);
        assert_eq!(precision_from_nanos(1_000_000_000), 0);
        assert_eq!(precision_from_nanos(u64::MAX), 0);
        assert_eq!(precision_from_nanos(0), -32);
    }

    #[test]
    fn receive_time_prefers_hardware_then_software() {
        let off = &TaiScale::fixed(37);
        let tai = 1_700_000_037_000_000_000u64;
        assert_eq!(
            receive_time(tai + 5, tai - 3, off, 9),
            1_700_000_000_000_000_005
        );
        assert_eq!(receive_time(0, tai, off, 9), 1_700_000_000_000_000_000);
        assert_eq!(receive_time(0, 0, off, 9), 9);
        assert_eq!(
            receive_stamp(tai + 5, tai - 3, off, 9).1,
            StampSource::Hardware
        );
        // A hardware stamp too far from the software one is not believed.
        assert_eq!(
            receive_stamp(tai + HW_SW_MAX_NS + 1, tai, off, 9).1,
            StampSource::Xdp
        );
        assert_eq!(receive_stamp(0, 0, off, 9).1, StampSource::Worker);
    }

    #[test]
    fn system_precision_is_sane() {
        let p = measure_precision(&SystemClock);
        assert!((-32..=-10).contains(&p), "{p}");
    }
}
