//! TAI and UTC across a leap second, and the IETF `leap-seconds.list`.
//!
//! The XDP program stamps with `CLOCK_TAI`, which runs on through a leap
//! second; `CLOCK_REALTIME` (UTC) is stepped by the kernel at the end of
//! the UTC day: back by one second for an inserted leap (23:59:59 is
//! seen twice, which is also how NTP timestamps repeat it), forward for a
//! deleted one, while the kernel's TAI − UTC offset moves by one. A
//! conversion with an offset refreshed once a second would be a whole
//! second wrong for up to a second after the leap. [`TaiScale`] carries
//! the exact instant (on the `CLOCK_TAI` scale) and the offsets on both
//! sides of it, so every stamp converts with the offset in force when it
//! was taken: in the workers here, and in the XDP program (the same sums in
//! `bpf/reply.h`).

use crate::proto::ntp::Leap;

const NS: u64 = 1_000_000_000;
const DAY_S: u64 = 86_400;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_TO_UNIX_S: u64 = 2_208_988_800;

/// TAI − UTC now, and where a pending leap second changes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaiScale {
    /// TAI − UTC in seconds, before any pending leap.
    pub offset_s: i32,
    /// The `CLOCK_TAI` instant (ns) from which `offset_after_s` applies; 0:
    /// no leap pending.
    pub leap_tai_ns: u64,
    /// TAI − UTC after the leap.
    pub offset_after_s: i32,
}

impl TaiScale {
    /// No leap pending.
    pub const fn fixed(offset_s: i32) -> TaiScale {
        TaiScale {
            offset_s,
            leap_tai_ns: 0,
            offset_after_s: offset_s,
        }
    }

    /// The scale for a leap the kernel applies at the end of the UTC day
    /// that `now_unix_ns` falls in (what `STA_INS` / `STA_DEL` mean), with
    /// `offset_s` the kernel's offset now. During an inserted second
    /// (`in_progress`: the kernel's `TIME_OOP`) the kernel has already
    /// stepped UTC back, so "now" is again in the last second of the day,
    /// and already moved its offset to the new value: the same instant,
    /// with the offset before it one less.
    pub fn for_leap(leap: Leap, offset_s: i32, now_unix_ns: u64, in_progress: bool) -> TaiScale {
        let offset_s = if in_progress && leap == Leap::Insert {
            offset_s.saturating_sub(1)
        } else {
            offset_s
        };
        let midnight = (now_unix_ns / NS / DAY_S + 1) * DAY_S;
        let at_tai = |unix_s: u64| {
            unix_s
                .saturating_add_signed(i64::from(offset_s))
                .saturating_mul(NS)
        };
        match leap {
            // 23:59:60 starts when UTC would read midnight.
            Leap::Insert => TaiScale {
                offset_s,
                leap_tai_ns: at_tai(midnight),
                offset_after_s: offset_s.saturating_add(1),
            },
            // 23:59:59 never comes.
            Leap::Delete => TaiScale {
                offset_s,
                leap_tai_ns: at_tai(midnight - 1),
                offset_after_s: offset_s.saturating_sub(1),
            },
            Leap::None | Leap::Unsynchronized => TaiScale::fixed(offset_s),
        }
    }

    /// TAI − UTC at the `CLOCK_TAI` instant `tai_ns`.
    #[inline]
    pub fn offset_at(&self, tai_ns: u64) -> i32 {
        if self.leap_tai_ns != 0 && tai_ns >= self.leap_tai_ns {
            self.offset_after_s
        } else {
            self.offset_s
        }
    }

    /// A `CLOCK_TAI` reading as UTC Unix nanoseconds (the inserted second
    /// reads as a repeat of 23:59:59, as `CLOCK_REALTIME` does).
    #[inline]
    pub fn to_unix_nanos(&self, tai_ns: u64) -> u64 {
        super::tai_to_unix_nanos(tai_ns, self.offset_at(tai_ns))
    }

    /// From this `CLOCK_TAI` instant on, the leap is over and replies no
    /// longer announce it: the end of an inserted second, the instant of a
    /// deleted one. `u64::MAX` when none is pending.
    pub fn leap_over_tai_ns(&self) -> u64 {
        match self.leap_tai_ns {
            0 => u64::MAX,
            t if self.offset_after_s > self.offset_s => t.saturating_add(NS),
            t => t,
        }
    }
}

/// The IETF/IERS `leap-seconds.list` (as shipped in tzdata): when each
/// TAI − UTC offset took effect, and when the list expires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeapList {
    /// `(NTP seconds, TAI − UTC from then on)`, in order.
    pub entries: Vec<(u64, i32)>,
    /// NTP seconds after which the list may miss announced leaps.
    pub expires_ntp_s: Option<u64>,
}

impl LeapList {
    /// Parses the file's text: `#@ expiry`, then lines `NTP-seconds offset
    /// [# comment]`; other `#` lines are comments.
    pub fn parse(text: &str) -> Result<LeapList, String> {
        let mut list = LeapList::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(exp) = line.strip_prefix("#@") {
                let v = exp.split_whitespace().next().unwrap_or("");
                list.expires_ntp_s = Some(
                    v.parse()
                        .map_err(|_| format!("line {}: bad expiry {v:?}", n + 1))?,
                );
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split('#').next().unwrap_or("").split_whitespace();
            let (Some(at), Some(off)) = (f.next(), f.next()) else {
                return Err(format!("line {}: expected 'NTP-seconds offset'", n + 1));
            };
            let at: u64 = at
                .parse()
                .map_err(|_| format!("line {}: bad time {at:?}", n + 1))?;
            let off: i32 = off
                .parse()
                .map_err(|_| format!("line {}: bad offset {off:?}", n + 1))?;
            if list.entries.last().is_some_and(|&(t, _)| t >= at) {
                return Err(format!("line {}: times out of order", n + 1));
            }
            list.entries.push((at, off));
        }
        if list.entries.is_empty() {
            return Err("no entries".to_owned());
        }
        Ok(list)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<LeapList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        LeapList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The leap that takes effect at the end of the UTC day of
    /// `now_unix_ns`, if the list has one: insert or delete.
    pub fn leap_today(&self, now_unix_ns: u64) -> Leap {
        let midnight_ntp = (now_unix_ns / NS / DAY_S + 1) * DAY_S + NTP_TO_UNIX_S;
        let Some(i) = self.entries.iter().position(|&(t, _)| t == midnight_ntp) else {
            return Leap::None;
        };
        match i.checked_sub(1).map(|p| self.entries[p].1) {
            Some(before) if self.entries[i].1 > before => Leap::Insert,
            Some(before) if self.entries[i].1 < before => Leap::Delete,
            _ => Leap::None,
        }
    }

    /// True if the list has expired at `now_unix_ns`.
    pub fn expired(&self, now_unix_ns: u64) -> bool {
        self.expires_ntp_s
            .is_some_and(|e| now_unix_ns / NS + NTP_TO_UNIX_S > e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2016-12-31 23:59:58 UTC: the last leap second was inserted after
    /// 23:59:59 that day (TAI − UTC 36 → 37).
    const BEFORE: u64 = 1_483_228_798 * NS;
    const MIDNIGHT: u64 = 1_483_228_800;

    #[test]
    fn an_inserted_second_repeats_23_59_59_and_only_then_the_offset_moves() {
        let s = TaiScale::for_leap(Leap::Insert, 36, BEFORE, false);
        assert_eq!(s.leap_tai_ns, (MIDNIGHT + 36) * NS);
        assert_eq!(s.offset_after_s, 37);
        let tai = |unix_s: u64, off: u64| (unix_s + off) * NS;
        // 23:59:59.5 UTC, first time.
        assert_eq!(
            s.to_unix_nanos(tai(MIDNIGHT - 1, 36) + NS / 2),
            (MIDNIGHT - 1) * NS + NS / 2
        );
        // One ns before the leap: still the old offset.
        assert_eq!(s.to_unix_nanos(s.leap_tai_ns - 1), MIDNIGHT * NS - 1);
        // The leap second: 23:59:59 again.
        assert_eq!(s.to_unix_nanos(s.leap_tai_ns), (MIDNIGHT - 1) * NS);
        assert_eq!(
            s.to_unix_nanos(s.leap_tai_ns + NS / 2),
            (MIDNIGHT - 1) * NS + NS / 2
        );
        // Midnight, and on.
        assert_eq!(s.to_unix_nanos(s.leap_tai_ns + NS), MIDNIGHT * NS);
        assert_eq!(s.to_unix_nanos(tai(MIDNIGHT + 5, 37)), (MIDNIGHT + 5) * NS);
        // Announced until the inserted second is over.
        assert_eq!(s.leap_over_tai_ns(), s.leap_tai_ns + NS);
        // Computed during the inserted second (UTC reads 23:59:59 again,
        // TIME_OOP, and the kernel's offset is already 37): the same
        // instant and offsets, not tomorrow's.
        assert_eq!(
            TaiScale::for_leap(Leap::Insert, 37, (MIDNIGHT - 1) * NS + 3, true),
            s
        );
    }

    #[test]
    fn a_deleted_second_skips_23_59_59() {
        let s = TaiScale::for_leap(Leap::Delete, 37, BEFORE, false);
        assert_eq!(s.offset_after_s, 36);
        assert_eq!(s.leap_tai_ns, (MIDNIGHT - 1 + 37) * NS);
        assert_eq!(s.to_unix_nanos(s.leap_tai_ns - 1), (MIDNIGHT - 1) * NS - 1);
        assert_eq!(s.to_unix_nanos(s.leap_tai_ns), MIDNIGHT * NS);
        assert_eq!(s.leap_over_tai_ns(), s.leap_tai_ns);
    }

    #[test]
    fn no_leap_no_change() {
        let s = TaiScale::for_leap(Leap::None, 37, BEFORE, false);
        assert_eq!(s, TaiScale::fixed(37));
        assert_eq!(s.to_unix_nanos(u64::MAX / 2), u64::MAX / 2 - 37 * NS);
        assert_eq!(s.leap_over_tai_ns(), u64::MAX);
    }

    const LIST: &str = "#\tleap-seconds.list (excerpt)\n\
#$\t 3929093437\n\
#@\t3960057600\n\
2272060800\t10\t# 1 Jan 1972\n\
3644697600\t36\t# 1 Jul 2015\n\
3692217600\n";

    #[test]
    fn the_list_announces_the_leap_on_its_day_only() {
        assert!(LeapList::parse(LIST).is_err(), "a line without an offset");
        let text = "#@\t3960057600\n2272060800\t10\n3692217600\t36\n3692217600 37\n";
        assert!(LeapList::parse(text).unwrap_err().contains("out of order"));
        let l = LeapList::parse(
            "#@\t3960057600\n2272060800\t10\t# 1 Jan 1972\n3644697600\t36\t# 1 Jul 2015\n3692217600\t37\t# 1 Jan 2017\n",
        )
        .unwrap();
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.expires_ntp_s, Some(3_960_057_600));
        // 3692217600 NTP = 2017-01-01 00:00:00 UTC.
        assert_eq!(l.leap_today(BEFORE), Leap::Insert);
        assert_eq!(l.leap_today(BEFORE - DAY_S * NS), Leap::None);
        assert_eq!(l.leap_today(BEFORE + 3 * NS), Leap::None);
        assert!(!l.expired(BEFORE));
        assert!(l.expired((3_960_057_601 - NTP_TO_UNIX_S) * NS));
        // A real file, where the system has one.
        for p in ["/usr/share/zoneinfo/leap-seconds.list"] {
            if let Ok(l) = LeapList::load(std::path::Path::new(p)) {
                assert!(l.entries.len() >= 28, "{p}");
                assert_eq!(l.leap_today(BEFORE), Leap::Insert);
            }
        }
    }
}
