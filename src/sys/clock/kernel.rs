//! The kernel's clock discipline, read with `adjtimex(2)` (modes = 0: read
//! only, never adjusts anything).

use crate::proto::ntp::Leap;

/// What the kernel says about its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discipline {
    /// False when the kernel flags the clock unsynchronised (`STA_UNSYNC`
    /// or `TIME_ERROR`): nobody is disciplining it.
    pub synchronized: bool,
    /// A leap second the kernel will apply at the end of the UTC day.
    pub leap: Leap,
    /// Maximum error estimate (µs); grows by 500 ppm per second unless a
    /// time daemon refreshes it.
    pub maxerror_us: i64,
    /// TAI − UTC in seconds (0 if nobody set it, which makes CLOCK_TAI
    /// read the same as CLOCK_REALTIME).
    pub tai_offset_s: i32,
    /// The inserted second is running (`TIME_OOP`): the kernel has already
    /// stepped UTC back and moved `tai_offset_s` to its new value.
    pub leap_in_progress: bool,
    /// UTC as the kernel read it with this state (Unix ns; 0: unknown):
    /// consistent with the leap fields, where a clock read made apart
    /// could fall on the other side of a leap.
    pub time_unix_ns: u64,
}

/// Reads the kernel's clock discipline.
pub trait KernelClock {
    /// The current discipline state.
    fn discipline(&self) -> std::io::Result<Discipline>;
}

/// The real kernel, through `adjtimex`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemKernelClock;

impl KernelClock for SystemKernelClock {
    fn discipline(&self) -> std::io::Result<Discipline> {
        // SAFETY: timex is plain data for which all-zero is a valid value.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        tx.modes = 0; // read only
        // SAFETY: adjtimex reads and writes only the struct we pass, which
        // lives for the duration of the call; modes = 0 changes nothing.
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut d = from_timex(state, tx.status, tx.maxerror, tx.tai);
        // The time the kernel read with that state, already corrected for
        // a leap second in progress (tv_usec holds ns with STA_NANO).
        let frac = tx.time.tv_usec.max(0) as u64;
        let frac_ns = if tx.status & libc::STA_NANO != 0 {
            frac
        } else {
            frac.saturating_mul(1000)
        };
        d.time_unix_ns = (tx.time.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(frac_ns);
        Ok(d)
    }
}

/// Interprets adjtimex's return value and fields (pure, for tests).
pub fn from_timex(state: i32, status: i32, maxerror: libc::c_long, tai: i32) -> Discipline {
    let synchronized = state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0;
    // TIME_WAIT: the leap of today is done (the daemon has not cleared
    // STA_INS / STA_DEL yet); TIME_OOP: the inserted second is running.
    let leap = if state == libc::TIME_WAIT {
        Leap::None
    } else if state == libc::TIME_INS || state == libc::TIME_OOP || status & libc::STA_INS != 0 {
        Leap::Insert
    } else if state == libc::TIME_DEL || status & libc::STA_DEL != 0 {
        Leap::Delete
    } else {
        Leap::None
    };
    Discipline {
        synchronized,
        leap,
        maxerror_us: maxerror,
        tai_offset_s: tai,
        leap_in_progress: state == libc::TIME_OOP,
        time_unix_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsync_flag_or_time_error() {
        assert!(!from_timex(libc::TIME_OK, libc::STA_UNSYNC, 0, 0).synchronized);
        assert!(!from_timex(libc::TIME_ERROR, 0, 0, 0).synchronized);
        assert!(from_timex(libc::TIME_OK, libc::STA_PLL, 1000, 37).synchronized);
    }

    #[test]
    fn pending_leaps() {
        assert_eq!(from_timex(libc::TIME_INS, 0, 0, 0).leap, Leap::Insert);
        assert_eq!(
            from_timex(libc::TIME_OK, libc::STA_DEL, 0, 0).leap,
            Leap::Delete
        );
        assert_eq!(from_timex(libc::TIME_OK, 0, 0, 0).leap, Leap::None);
        // The inserted second running; then done, STA_INS not yet cleared.
        let oop = from_timex(libc::TIME_OOP, libc::STA_INS, 0, 0);
        assert!(oop.leap == Leap::Insert && oop.leap_in_progress);
        assert!(!from_timex(libc::TIME_INS, libc::STA_INS, 0, 0).leap_in_progress);
        assert_eq!(
            from_timex(libc::TIME_WAIT, libc::STA_INS, 0, 0).leap,
            Leap::None
        );
    }

    #[test]
    fn real_kernel_answers() {
        let d = SystemKernelClock.discipline().unwrap();
        assert!(d.maxerror_us >= 0);
    }
}
