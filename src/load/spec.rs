//! What the user asks `ntpx load` for, parsed from the command line: rates
//! (`250k`, `1.5M`), a ramp (`10k..2M x1.5`), durations (`2s`, `500ms`) and
//! source prefixes (`198.19.0.0/16`, `2001:db8:1::/64`).
//!
//! Pure code: every parser returns a clear error message for bad input.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

/// Highest rate the generator accepts (requests per second).
pub const MAX_RATE: f64 = 100e6;
/// Most steps a ramp may have.
pub const MAX_STEPS: usize = 64;

/// Parses a rate: a positive number with an optional `k` (×10³) or `M`
/// (×10⁶) suffix, e.g. `500`, `250k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1e3),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate '{s}': expected e.g. 500, 250k or 1.5M"))?;
    let rate = v * mult;
    if !rate.is_finite() || rate < 1.0 {
        return Err(format!("invalid rate '{s}': must be at least 1 request/s"));
    }
    if rate > MAX_RATE {
        return Err(format!(
            "rate '{s}' is above the maximum of 100M requests/s"
        ));
    }
    Ok(rate)
}

/// Formats a rate the way [`parse_rate`] reads it (`250k`, `1.5M`).
pub use crate::report::fmt_rate;

/// Parses a ramp, ntpperf style: `FROM..TO xFACTOR` (e.g. `10k..2M x1.5`).
/// The rates go from FROM, each step FACTOR times the last, up to TO
/// (inclusive: the last step is TO even if the factor overshoots it).
pub fn parse_ramp(s: &str) -> Result<Vec<f64>, String> {
    let err = |why: &str| format!("invalid ramp '{s}': {why} (expected e.g. '10k..2M x1.5')");
    let (range, factor) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| err("missing 'xFACTOR'"))?;
    let (from, to) = range
        .trim()
        .split_once("..")
        .ok_or_else(|| err("missing 'FROM..TO'"))?;
    let from = parse_rate(from).map_err(|e| err(&e))?;
    let to = parse_rate(to).map_err(|e| err(&e))?;
    let factor: f64 = factor
        .trim()
        .parse()
        .map_err(|_| err("the factor is not a number"))?;
    if from > to {
        return Err(err("FROM is above TO"));
    }
    if !(factor > 1.0 && factor.is_finite()) {
        return Err(err("the factor must be above 1"));
    }
    let mut rates = vec![from];
    let mut r = from;
    while r < to {
        r = (r * factor).min(to);
        rates.push(r);
        if rates.len() > MAX_STEPS {
            return Err(err(&format!("more than {MAX_STEPS} steps")));
        }
    }
    Ok(rates)
}

/// Parses a duration: a number with a unit `ns`, `us`, `ms`, `s` or `m`
/// (`2s`, `500ms`, `1.5s`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 2s or 500ms"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "ns" => v / 1e9,
        "m" => v * 60.0,
        _ => return Err(format!("invalid duration '{s}': unknown unit '{unit}'")),
    };
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("invalid duration '{s}': from 0 to 366 days"))
}

/// The longest duration accepted (366 days): every time computed from it
/// fits in 64-bit nanoseconds, even times the most ramp steps.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// An address prefix that client source addresses are drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Usable host addresses, capped at 2³² (plenty of client identities).
    /// An IPv4 prefix shorter than /31 loses its network and broadcast
    /// addresses.
    pub fn hosts(&self) -> u64 {
        let bits = u32::from(self.bits() - self.len).min(32);
        let n = 1u64 << bits;
        if self.addr.is_ipv4() && self.len < 31 {
            n - 2
        } else {
            n
        }
    }

    fn bits(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// The `i`-th usable host address (`i < hosts()`).
    pub fn host(&self, i: u64) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let skip = u32::from(self.len < 31);
                IpAddr::V4((u32::from(a) + i as u32 + skip).into())
            }
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + u128::from(i)).into()),
        }
    }

    /// True if `a` lies inside the prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Parses `ADDR/LEN`; host bits must be zero (catches typos like
/// `10.124.1.0/16`). A bare address is a /32 or /128.
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("invalid prefix '{s}': '{a}' is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("invalid prefix '{s}': length must be 0..={max}"))?,
        None => max,
    };
    let min = if addr.is_ipv4() { 8 } else { 64 };
    if len < min {
        return Err(format!(
            "prefix '{s}' is too wide: use at most a /8 (IPv4) or /64 (IPv6) of addresses you route to this host"
        ));
    }
    let p = Prefix { addr, len };
    if !p.contains(addr) {
        return Err(format!("invalid prefix '{s}': host bits are set"));
    }
    if p.hosts() == 0 {
        return Err(format!("prefix '{s}' has no host addresses"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500").unwrap(), 500.0);
        assert_eq!(parse_rate("250k").unwrap(), 250_000.0);
        assert_eq!(parse_rate("1.5M").unwrap(), 1_500_000.0);
        for bad in ["", "k", "-5", "0", "0.5", "1e12", "fast", "1G"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_rate(1_500_000.0), "1.5M");
        assert_eq!(fmt_rate(10_000.0), "10k");
        assert_eq!(fmt_rate(22_781.25), "22.78k");
        assert_eq!(fmt_rate(999.0), "999");
    }

    #[test]
    fn ramps() {
        let r = parse_ramp("10k..40k x2").unwrap();
        assert_eq!(r, vec![10e3, 20e3, 40e3]);
        // The last step is clamped to TO.
        let r = parse_ramp("10k..2M x1.5").unwrap();
        assert_eq!(r.first(), Some(&10e3));
        assert_eq!(r.last(), Some(&2e6));
        assert_eq!(r.len(), 15);
        assert!(r.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(parse_ramp("5k..5k x2").unwrap(), vec![5e3]);
        for bad in [
            "10k..2M",
            "10k x2",
            "2M..10k x2",
            "1..2 x1",
            "1..2 xq",
            "1..1M x1.01",
        ] {
            assert!(parse_ramp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in [
            "", "s", "2h", "-1s", "1..2s", "1e300", "1e300s", "NaN", "inf", "31622401",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("31622400").unwrap(), MAX_DURATION);
    }

    #[test]
    fn prefixes() {
        let p = parse_prefix("198.19.0.0/16").unwrap();
        assert_eq!(p.hosts(), 65534);
        assert_eq!(p.host(0).to_string(), "198.19.0.1");
        assert_eq!(p.host(65533).to_string(), "198.19.255.254");
        assert!(p.contains("198.19.7.7".parse().unwrap()));
        assert!(!p.contains("198.18.7.7".parse().unwrap()));
        let one = parse_prefix("198.18.0.2").unwrap();
        assert_eq!(
            (one.hosts(), one.host(0).to_string().as_str()),
            (1, "198.18.0.2")
        );
        let p31 = parse_prefix("198.18.0.2/31").unwrap();
        assert_eq!(p31.hosts(), 2);
        let v6 = parse_prefix("2001:db8:1::/64").unwrap();
        assert_eq!(v6.hosts(), 1 << 32);
        assert_eq!(v6.host(5).to_string(), "2001:db8:1::5");
        let v6_120 = parse_prefix("2001:db8:1::/120").unwrap();
        assert_eq!(v6_120.hosts(), 256);
        for bad in [
            "198.19.1.0/16",
            "198.19.0.0/33",
            "10.0.0.0/4",
            "2001:db8::/48",
            "nonsense/8",
            "1.2.3.4/x",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }
}
