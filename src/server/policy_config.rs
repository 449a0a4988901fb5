//! The `[access]` and `[rate_limit]` tables, their command-line flags, and
//! `[server] kernel_modes`: validated into a [`Policy`] with messages that
//! say what is wrong. Documented in `scripts/ntpx.example.toml` and in
//! README.md, "Defence".

use crate::proto::policy::Policy;
use crate::proto::policy::access::{Access, Action, Prefixes};
use crate::proto::policy::limit::Limits;
use ipnet::IpNet;
use serde::Deserialize;

/// The `[access]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// Prefixes whose clients are refused (checked first).
    pub deny: Option<Vec<IpNet>>,
    /// When it holds prefixes of a family, only those clients of that
    /// family are served.
    pub allow: Option<Vec<IpNet>>,
    /// `ignore` (default) or `deny` (KoD DENY).
    pub action: Option<Action>,
    /// The reverse-path check of sources: `off` (default), `loose` or
    /// `strict`.
    pub reverse_path: Option<ReversePath>,
}

/// The reverse-path check of a request's source, in the XDP program
/// (`bpf/policy.h`, `reverse_path_ok`), like the kernel's `rp_filter`: the
/// route back to the source, looked up in the host's routing tables.
/// Values as `enum ntpx_rp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum ReversePath {
    /// No check.
    #[default]
    Off = 0,
    /// The source must have a unicast route back, through any interface.
    Loose = 1,
    /// ... through the interface the request came in on.
    Strict = 2,
}

impl ReversePath {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            ReversePath::Off => "off",
            ReversePath::Loose => "loose",
            ReversePath::Strict => "strict",
        }
    }
}

/// The `[rate_limit]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Mean seconds a client leaves between requests (default 1/64; 0:
    /// no per-client limit).
    pub interval: Option<f64>,
    /// Requests a client may send at once (default 256).
    pub burst: Option<u32>,
    /// Bits of an IPv4 address that make a client (default 32).
    pub prefix_v4: Option<u8>,
    /// Bits of an IPv6 address that make a client (default 64).
    pub prefix_v6: Option<u8>,
    /// 1 in `leak` limited requests is answered anyway (default 4; 0:
    /// none).
    pub leak: Option<u32>,
    /// 1 in `kod` of the other limited requests gets a KoD RATE (default
    /// 8; 0: none).
    pub kod: Option<u32>,
    /// At most one KoD per client per this many seconds (default 1).
    pub kod_interval: Option<f64>,
    /// Entries of the client table (default 65536).
    pub clients: Option<u32>,
    /// Replies per second over the whole server (default 0: no ceiling).
    pub ceiling: Option<u64>,
}

/// The policy flags of `ntpx serve` (each overrides its config key).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PolicyFlags {
    /// Refuse clients in PREFIX (repeat for several) (`[access] deny`).
    #[arg(long = "deny", value_name = "PREFIX")]
    pub deny: Vec<IpNet>,
    /// Serve only clients in PREFIX, per address family (repeat for
    /// several) (`[access] allow`).
    #[arg(long = "allow", value_name = "PREFIX")]
    pub allow: Vec<IpNet>,
    /// What refused clients get: ignore (nothing) or deny (KoD DENY).
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub access_action: Option<Action>,
    /// Mean seconds a client must leave between requests (default
    /// 0.015625, 64/s; 0: no per-client limit) (`[rate_limit] interval`).
    #[arg(long, value_name = "SECONDS")]
    pub rate_interval: Option<f64>,
    /// Requests a client may send at once (default 256).
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// 1 in N limited requests is answered anyway (default 4; 0: none).
    #[arg(long, value_name = "N")]
    pub rate_leak: Option<u32>,
    /// 1 in N of the other limited requests gets a KoD RATE (default 8; 0:
    /// none).
    #[arg(long, value_name = "N")]
    pub rate_kod: Option<u32>,
    /// Entries of the rate limiter's client table (default 65536).
    #[arg(long, value_name = "N")]
    pub rate_clients: Option<u32>,
    /// At most this many replies per second over the whole server
    /// (default: no ceiling).
    #[arg(long, value_name = "N")]
    pub ceiling: Option<u64>,
    /// Check each source's route back: off, loose or strict (`[access]
    /// reverse_path`; needs forwarding on lo, see README "Defence").
    #[arg(long, value_name = "MODE")]
    pub reverse_path: Option<ReversePath>,
    /// NTP modes passed to the host's own daemon instead of dropped,
    /// comma separated: 1, 2, 6 (`[server] kernel_modes`).
    #[arg(long, value_name = "MODES", value_delimiter = ',')]
    pub kernel_modes: Option<Vec<u8>>,
}

fn parse_action(s: &str) -> Result<Action, String> {
    match s {
        "ignore" => Ok(Action::Ignore),
        "deny" => Ok(Action::Deny),
        _ => Err(format!("expected ignore or deny, not {s:?}")),
    }
}

impl PolicyFlags {
    /// Lays the flags over the file's tables.
    pub fn apply(
        &self,
        access: &mut AccessFile,
        rate: &mut RateLimitFile,
        kernel_modes: &mut Option<Vec<u8>>,
    ) {
        if !self.deny.is_empty() {
            access.deny = Some(self.deny.clone());
        }
        if !self.allow.is_empty() {
            access.allow = Some(self.allow.clone());
        }
        macro_rules! over {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = Some(v);
                }
            };
        }
        over!(access.action, self.access_action);
        over!(access.reverse_path, self.reverse_path);
        over!(rate.interval, self.rate_interval);
        over!(rate.burst, self.rate_burst);
        over!(rate.leak, self.rate_leak);
        over!(rate.kod, self.rate_kod);
        over!(rate.clients, self.rate_clients);
        over!(rate.ceiling, self.ceiling);
        over!(*kernel_modes, self.kernel_modes);
    }
}

/// The most access-list prefixes of one list and family.
pub const MAX_PREFIXES: usize = 1 << 20;
/// The most rate limiter clients (about 100 MiB in the kernel's table).
pub const MAX_CLIENTS: u32 = 1 << 20;
/// The fewest: below this, a handful of spoofed sources evict everyone.
pub const MIN_CLIENTS: u32 = 1024;

/// Validates the tables into a [`Policy`].
pub fn policy(access: &AccessFile, rate: &RateLimitFile) -> anyhow::Result<Policy> {
    let deny = access.deny.clone().unwrap_or_default();
    let allow = access.allow.clone().unwrap_or_default();
    for (name, list) in [("deny", &deny), ("allow", &allow)] {
        if list.len() > MAX_PREFIXES {
            anyhow::bail!(
                "[access] {name} lists {} prefixes: at most {MAX_PREFIXES}",
                list.len()
            );
        }
    }
    let d = Limits::default();
    let interval = rate.interval.unwrap_or(d.interval_ns as f64 / 1e9);
    if !(0.0..=3600.0).contains(&interval) {
        anyhow::bail!(
            "[rate_limit] interval must be 0 (off) to 3600 seconds, not {interval} \
             (the default, 0.015625, lets a client ask 64 times a second)"
        );
    }
    let burst = rate.burst.unwrap_or(d.burst);
    if !(1..=1_000_000).contains(&burst) {
        anyhow::bail!("[rate_limit] burst must be 1 to 1000000, not {burst}");
    }
    let (prefix_v4, prefix_v6) = (rate.prefix_v4.unwrap_or(32), rate.prefix_v6.unwrap_or(64));
    if !(8..=32).contains(&prefix_v4) || !(16..=128).contains(&prefix_v6) {
        anyhow::bail!(
            "[rate_limit] prefix_v4 must be 8 to 32 and prefix_v6 16 to 128, not {prefix_v4} and {prefix_v6}"
        );
    }
    let kod_interval = rate.kod_interval.unwrap_or(1.0);
    if !(0.0..=3600.0).contains(&kod_interval) {
        anyhow::bail!("[rate_limit] kod_interval must be 0 to 3600 seconds, not {kod_interval}");
    }
    let clients = rate.clients.unwrap_or(d.clients);
    if !(MIN_CLIENTS..=MAX_CLIENTS).contains(&clients) {
        anyhow::bail!("[rate_limit] clients must be {MIN_CLIENTS} to {MAX_CLIENTS}, not {clients}");
    }
    let ceiling = rate.ceiling.unwrap_or(0);
    if ceiling > 1_000_000_000 {
        anyhow::bail!(
            "[rate_limit] ceiling must be 0 (off) to 1000000000 replies/s, not {ceiling}"
        );
    }
    let interval_ns = (interval * 1e9).round() as u64;
    if interval > 0.0 && interval_ns == 0 {
        anyhow::bail!(
            "[rate_limit] interval {interval} is below a nanosecond: use 0 to turn it off"
        );
    }
    Ok(Policy {
        access: Access {
            deny: Prefixes::new(&deny),
            allow: Prefixes::new(&allow),
            action: access.action.unwrap_or_default(),
        },
        limits: Limits {
            interval_ns,
            burst,
            prefix_v4,
            prefix_v6,
            leak: rate.leak.unwrap_or(d.leak),
            kod: rate.kod.unwrap_or(d.kod),
            kod_gap_ns: (kod_interval * 1e9) as u64,
            clients,
            ceiling_interval_ns: 1_000_000_000u64
                .checked_div(ceiling)
                .map_or(0, |i| i.max(1)),
            // A tenth of a second's worth, at least 64 replies.
            ceiling_burst: if ceiling == 0 {
                0
            } else {
                (ceiling / 10).clamp(64, u64::from(u32::MAX)) as u32
            },
        },
    })
}

/// Validates `kernel_modes` into the XDP program's bit mask.
pub fn kernel_modes(modes: Option<&[u8]>) -> anyhow::Result<u8> {
    let mut mask = 0u8;
    for &m in modes.unwrap_or_default() {
        if ![1, 2, 6].contains(&m) {
            anyhow::bail!(
                "kernel_modes may hold 1 (symmetric active), 2 (symmetric passive) and 6 (control), \
                 not {m}: mode 3 is ntpx's, 4 always goes to the kernel, and 0, 5 and 7 are dropped"
            );
        }
        mask |= 1 << m;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = policy(&AccessFile::default(), &RateLimitFile::default()).unwrap();
        assert_eq!(p.limits, Limits::default());
        assert!(!p.access.is_on());
        assert_eq!(kernel_modes(None).unwrap(), 0);
        assert_eq!(kernel_modes(Some(&[1, 6])).unwrap(), 0b0100_0010);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |r: RateLimitFile, what: &str| {
            let e = policy(&AccessFile::default(), &r).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        bad(
            RateLimitFile {
                interval: Some(-1.0),
                ..Default::default()
            },
            "interval",
        );
        bad(
            RateLimitFile {
                burst: Some(0),
                ..Default::default()
            },
            "burst",
        );
        bad(
            RateLimitFile {
                clients: Some(10),
                ..Default::default()
            },
            "clients",
        );
        bad(
            RateLimitFile {
                prefix_v6: Some(130),
                ..Default::default()
            },
            "prefix_v6",
        );
        let e = kernel_modes(Some(&[7])).unwrap_err().to_string();
        assert!(e.contains("not 7"), "{e}");
        let p = policy(
            &AccessFile::default(),
            &RateLimitFile {
                ceiling: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.limits.ceiling_interval_ns, 1_000_000);
        assert_eq!(p.limits.ceiling_burst, 100);
    }
}
