//! Configuration: the TOML file (`--config`), overridden by command-line
//! flags, validated into [`Settings`] with messages that say what is wrong
//! and what would be right. Every option is documented in
//! `scripts/ntpx.example.toml`.

use crate::proto::ntp::NtpShort;
use crate::proto::policy::Policy;
use crate::proto::policy::limit::Limits;
use crate::server::policy_config::{AccessFile, RateLimitFile, ReversePath};
use crate::server::program::{MAX_ADDRS, MAX_QUEUES};
use crate::server::state::{Source, StateConfig};
pub use crate::sys::Datapath;
use crate::sys::bpf::{AttachMode, parse_xdp_mode};
use crate::sys::xsk::BindMode;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The `[server]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Network interface (required for the XDP datapath).
    pub interface: Option<String>,
    /// `xdp` (default) or `socket`.
    pub datapath: Option<Datapath>,
    /// UDP port (default 123).
    pub port: Option<u16>,
    /// Addresses to answer for (default: the interface's addresses).
    pub addresses: Option<Vec<IpAddr>>,
    /// NIC queues to serve (default: all).
    pub queues: Option<Vec<u32>>,
    /// CPUs to pin workers to, in worker order (default: worker i on CPU i
    /// modulo the CPU count).
    pub cpus: Option<Vec<usize>>,
    /// Socket-datapath workers (default: one per CPU).
    pub workers: Option<usize>,
    /// `auto`, `native` or `generic`.
    pub xdp_mode: Option<String>,
    /// Where plain requests are answered: `xdp`, `workers` or `auto`.
    pub replies: Option<Replies>,
    /// `auto`, `copy` or `zerocopy`.
    pub bind_mode: Option<BindMode>,
    /// UMEM frames per queue (default 4096).
    pub frames: Option<u32>,
    /// Ring entries (default 2048, power of two).
    pub ring_size: Option<u32>,
    /// Busy-poll budget, 0 = off.
    pub busy_poll: Option<u32>,
    /// Microseconds an idle AF_XDP worker polls before it sleeps.
    pub spin_us: Option<u64>,
    /// Drop replies whose residence would exceed this (µs); 0 = off.
    pub max_residence_us: Option<u64>,
    /// Slots of the interleaved-mode table (0: basic mode only).
    pub interleave_slots: Option<usize>,
    /// Drop requests from ports 7, 13, 17, 19, 37 (default true).
    pub drop_loop_ports: Option<bool>,
    /// Minimum poll exponent put in replies.
    pub min_poll: Option<i8>,
    /// NTP modes passed to the host's own daemon (1, 2, 6; default none).
    pub kernel_modes: Option<Vec<u8>>,
    /// Seconds between stats lines (default 10, 0 = off).
    pub stats_interval: Option<u64>,
    /// What to log: a level (`info`, `debug`, ...) or tracing directives
    /// (default `info`; `NTPX_LOG` in the environment overrides it).
    pub log_level: Option<String>,
    /// Unix socket that `ntpx stats` reads (default `/run/ntpx.sock`,
    /// `""` = off).
    pub stats_socket: Option<String>,
    /// Where the metrics endpoint listens: `ADDR:PORT`, or a port on
    /// loopback (default: off; `""` = off).
    pub metrics: Option<String>,
    /// The drain file (default `/run/ntpx.drain`, `""` = none).
    pub drain_file: Option<String>,
    /// Seconds between self-probes (default 2, 0 = off).
    pub self_probe: Option<f64>,
}

/// Where the XDP datapath answers plain requests (the others always go to
/// the AF_XDP workers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Replies {
    /// In the XDP program (`XDP_TX`): the fastest, where the link can take
    /// `XDP_TX`.
    Xdp,
    /// In the AF_XDP workers.
    Workers,
    /// In XDP unless the interface is a veth whose peer has no XDP program
    /// (there the kernel drops `XDP_TX` frames): checked at start and every
    /// few seconds while serving.
    Auto,
}

/// The `[clock]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockFile {
    /// `kernel`, `chrony`, `ntp` or `local` (default: `chrony` where
    /// chronyd's command socket exists, else `kernel`).
    pub source: Option<Source>,
    /// Stratum when synchronised (default 2 for kernel, 1 for local).
    pub stratum: Option<u8>,
    /// Reference ID: up to 4 ASCII characters (stratum 1) or an IPv4
    /// address (stratum ≥ 2).
    pub ref_id: Option<String>,
    /// Root delay in milliseconds.
    pub root_delay_ms: Option<f64>,
    /// Root dispersion (added to the kernel's max error) in milliseconds.
    pub root_dispersion_ms: Option<f64>,
    /// Seconds after which an unrefreshed state answers LI 3 (default 10).
    pub max_state_age_s: Option<f64>,
    /// chronyd's command socket (source = "chrony").
    pub chrony_socket: Option<String>,
    /// Replies say LI 3 when the root distance passes this (ms; default
    /// 3000).
    pub max_root_distance_ms: Option<f64>,
    /// Seconds between refreshes of the clock state (default 1).
    pub refresh_s: Option<f64>,
    /// While unsynchronised: `flag` (answer with LI 3, the default) or
    /// `drop` (no reply).
    pub on_unsync: Option<OnUnsync>,
    /// The local NTP daemon queried with `source = "ntp"` (default
    /// 127.0.0.1:123).
    pub upstream_ntp: Option<std::net::SocketAddr>,
    /// An IETF `leap-seconds.list` whose leaps are announced too.
    pub leap_seconds_list: Option<String>,
    /// Hardware receive stamps: `auto`, `on`, `off`.
    pub hw_timestamps: Option<HwTimestamps>,
}

/// Whether the XDP program asks the NIC for hardware receive stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HwTimestamps {
    /// Where the NIC offers them to XDP and the program attaches natively.
    Auto,
    /// Required: fail to start without them.
    On,
    /// Never.
    Off,
}

/// Parses `auto`, `on` or `off`, for the CLI.
pub fn parse_hw_timestamps(s: &str) -> Result<HwTimestamps, String> {
    match s {
        "auto" => Ok(HwTimestamps::Auto),
        "on" => Ok(HwTimestamps::On),
        "off" => Ok(HwTimestamps::Off),
        _ => Err(format!("expected auto, on or off, not {s:?}")),
    }
}

/// What an unsynchronised server does with requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnsync {
    /// Answer with LI 3, stratum 0: clients see why and look elsewhere.
    Flag,
    /// Send no reply (counted as `unsynchronized`).
    Drop,
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerFile,
    /// `[clock]`.
    #[serde(default)]
    pub clock: ClockFile,
    /// `[access]`.
    #[serde(default)]
    pub access: AccessFile,
    /// `[rate_limit]`.
    #[serde(default)]
    pub rate_limit: RateLimitFile,
}

impl ConfigFile {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid config: {e}"))
    }
}

/// Validated settings for `ntpx serve`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interface (XDP datapath).
    pub interface: Option<String>,
    /// Datapath.
    pub datapath: Datapath,
    /// Port.
    pub port: u16,
    /// Configured addresses (empty: take the interface's).
    pub v4: Vec<Ipv4Addr>,
    /// Configured IPv6 addresses.
    pub v6: Vec<Ipv6Addr>,
    /// Queues (None: all).
    pub queues: Option<Vec<u32>>,
    /// CPUs for workers.
    pub cpus: Option<Vec<usize>>,
    /// Socket workers.
    pub workers: Option<usize>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// Where plain requests are answered (XDP datapath).
    pub replies: Replies,
    /// AF_XDP bind mode.
    pub bind_mode: BindMode,
    /// UMEM frames per queue.
    pub frames: u32,
    /// Ring size.
    pub ring_size: u32,
    /// Busy-poll budget.
    pub busy_poll: u32,
    /// Idle AF_XDP workers poll this long before sleeping (µs).
    pub spin_us: u64,
    /// Replies with a longer residence are dropped as late (µs; 0: off).
    pub max_residence_us: u64,
    /// Slots of the interleaved-mode table (RFC 9769); 0: basic mode only.
    pub interleave_slots: usize,
    /// Drop loop-prone source ports.
    pub drop_loop_ports: bool,
    /// Minimum poll in replies.
    pub min_poll: i8,
    /// Stats interval (0 = off).
    pub stats_interval: u64,
    /// The log filter (tracing directives), changed live by a reload.
    pub log_level: String,
    /// The stats socket for `ntpx stats` (None: off).
    pub stats_socket: Option<PathBuf>,
    /// The metrics endpoint's address (None: off).
    pub metrics: Option<std::net::SocketAddr>,
    /// The drain file the server follows (None: none).
    pub drain_file: Option<PathBuf>,
    /// How often the server probes itself (None: never).
    pub self_probe: Option<std::time::Duration>,
    /// Clock state config.
    pub clock: StateConfig,
    /// chronyd's command socket, read with `source = "chrony"`.
    pub chrony_socket: PathBuf,
    /// How often the control thread refreshes the clock state.
    pub refresh: std::time::Duration,
    /// Drop requests while unsynchronised (`on_unsync = "drop"`).
    pub drop_unsynchronized: bool,
    /// The NTP daemon queried with `source = "ntp"`.
    pub upstream_ntp: std::net::SocketAddr,
    /// `leap-seconds.list` to announce leaps from, if configured.
    pub leap_seconds_list: Option<PathBuf>,
    /// Hardware receive stamps.
    pub hw_timestamps: HwTimestamps,
    /// Access lists and rate limits.
    pub policy: Policy,
    /// Modes passed to the host's daemon: bit m for mode m.
    pub kernel_modes: u8,
    /// The reverse-path check of sources (XDP datapath only).
    pub reverse_path: ReversePath,
}

/// How long an idle AF_XDP worker polls its ring before sleeping (µs).
pub const DEFAULT_SPIN_US: u64 = 50;
/// The default bound on a reply's residence, T3 − T2 (µs).
pub const DEFAULT_MAX_RESIDENCE_US: u64 = 500;
/// Default slots of the interleaved-mode table: 65,536 × 64 bytes = 4 MiB,
/// room for as many interleaved clients polling at once.
pub const DEFAULT_INTERLEAVE_SLOTS: usize = 65_536;
/// At most 2^24 slots (1 GiB).
pub const MAX_INTERLEAVE_SLOTS: usize = 1 << 24;

/// The most socket-datapath workers (they share one socket: more than
/// the CPUs only adds contention).
pub const MAX_WORKERS: usize = 1024;

/// The `min_poll` values accepted: RFC 5905's poll range up to its
/// MAXPOLL (17, about 36 hours), from 1 s.
pub const MIN_POLL_RANGE: std::ops::RangeInclusive<i8> = 0..=17;

fn listed(v4: &[Ipv4Addr], v6: &[Ipv6Addr], a: IpAddr) -> bool {
    match a {
        IpAddr::V4(x) => v4.contains(&x),
        IpAddr::V6(x) => v6.contains(&x),
    }
}

/// CPUs online on this machine (not just those in this process's affinity
/// mask: `taskset` must not make valid CPU numbers look invalid).
pub fn online_cpus() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(1)
        .max(1)
}

/// Parses a reference ID: an IPv4 address, or 1–4 printable ASCII
/// characters (padded with NULs).
pub fn parse_ref_id(s: &str) -> anyhow::Result<[u8; 4]> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Ok(a.octets());
    }
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "ref_id must be an IPv4 address or 1 to 4 ASCII characters (e.g. \"GPS\"), not {s:?}"
        );
    }
    let mut id = [0u8; 4];
    id[..s.len()].copy_from_slice(s.as_bytes());
    Ok(id)
}

/// Longest path a Unix socket can be bound at (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Validates `stats_socket`: `""` turns it off.
fn stats_socket(s: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    let path = s.unwrap_or(crate::server::stats_socket::DEFAULT_PATH);
    if path.is_empty() {
        return Ok(None);
    }
    if path.len() > MAX_SOCKET_PATH || path.contains('\0') {
        anyhow::bail!(
            "stats_socket must be a path of at most {MAX_SOCKET_PATH} bytes without NUL, not {path:?}"
        );
    }
    Ok(Some(PathBuf::from(path)))
}

fn ms_to_short(ms: f64, what: &str) -> anyhow::Result<NtpShort> {
    if !(0.0..=60_000.0).contains(&ms) {
        anyhow::bail!("{what} must be between 0 and 60000 ms, not {ms}");
    }
    Ok(NtpShort::from_nanos_ceil((ms * 1e6) as u64))
}

impl Settings {
    /// What a reload from `self` (the running settings) to `new` changes:
    /// the tables it may change while serving (`[clock]` but its source,
    /// and `[access]` but `reverse_path`), or an error naming the first
    /// settings it may not change, which need a restart.
    pub fn live_changes(&self, new: &Settings) -> anyhow::Result<Vec<&'static str>> {
        let mut changed = Vec::new();
        if self.clock.source != new.clock.source {
            anyhow::bail!("[clock] source cannot change while ntpx serves (restart it)");
        }
        if self.clock != new.clock {
            changed.push("[clock]");
        }
        if self.policy.access != new.policy.access {
            changed.push("[access]");
        }
        if self.policy.limits != new.policy.limits {
            changed.push("[rate_limit]");
        }
        if self.log_level != new.log_level {
            changed.push("log_level");
        }
        // Everything else must be as it is: compared field by field through
        // their Debug text, so that a setting added later is refused live
        // until someone decides otherwise.
        let mut b = new.clone();
        b.clock = self.clock;
        b.policy.access = self.policy.access.clone();
        // The client table is sized at the start.
        b.policy.limits = Limits {
            clients: b.policy.limits.clients,
            ..self.policy.limits
        };
        b.log_level.clone_from(&self.log_level);
        let (was, is) = (format!("{self:#?}"), format!("{b:#?}"));
        if was != is {
            let fields: Vec<String> = was
                .lines()
                .zip(is.lines())
                .filter(|(x, y)| x != y)
                .filter_map(|(_, y)| y.trim().split(':').next().map(str::to_owned))
                .take(4)
                .collect();
            anyhow::bail!(
                "{} cannot change while ntpx serves (restart it); live: [clock] (but its source), \
                 [access] (but reverse_path), [rate_limit] (but clients) and log_level",
                fields.join(", ")
            );
        }
        Ok(changed)
    }

    /// Validates a parsed file (with command-line overrides already
    /// merged into it).
    pub fn from_file(f: &ConfigFile) -> anyhow::Result<Settings> {
        let s = &f.server;
        let datapath = s.datapath.unwrap_or(Datapath::Xdp);
        if datapath == Datapath::Xdp && s.interface.is_none() {
            anyhow::bail!(
                "the xdp datapath needs an interface: --iface IF (or [server] interface = \"IF\")"
            );
        }
        let port = s.port.unwrap_or(123);
        if port == 0 {
            anyhow::bail!("port must be 1 to 65535, not 0 (no client can send to port 0)");
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in s.addresses.iter().flatten() {
            match a {
                IpAddr::V4(x) if x.is_unspecified() || x.is_multicast() || x.is_broadcast() => {
                    anyhow::bail!("address {x} is not a unicast address")
                }
                IpAddr::V6(x) if x.is_unspecified() || x.is_multicast() => {
                    anyhow::bail!("address {x} is not a unicast address")
                }
                _ if a.is_loopback() => anyhow::bail!(
                    "address {a} is a loopback address, which no client can reach \
                     (an anycast service address configured on lo is fine)"
                ),
                _ if listed(&v4, &v6, *a) => anyhow::bail!("address {a} is listed twice"),
                IpAddr::V4(x) => v4.push(*x),
                IpAddr::V6(x) => v6.push(*x),
            }
        }
        for (family, n) in [(4, v4.len()), (6, v6.len())] {
            if n > MAX_ADDRS {
                anyhow::bail!(
                    "{n} IPv{family} addresses given: ntpx serves at most {MAX_ADDRS} of a family"
                );
            }
        }
        let ring_size = s.ring_size.unwrap_or(2048);
        if !ring_size.is_power_of_two() || !(64..=65536).contains(&ring_size) {
            anyhow::bail!("ring_size must be a power of two from 64 to 65536, not {ring_size}");
        }
        let frames = s.frames.unwrap_or(4096);
        if frames < 2 * ring_size.min(1024) || frames > 1 << 20 {
            anyhow::bail!(
                "frames must be at least 2 x min(ring_size, 1024) and at most 1048576, not {frames}"
            );
        }
        if let Some(q) = &s.queues {
            if q.is_empty() {
                anyhow::bail!("queues must not be empty (leave it out to serve all queues)");
            }
            if let Some(bad) = q.iter().find(|&&q| q >= MAX_QUEUES) {
                anyhow::bail!(
                    "queue {bad} is out of range: queues are numbered 0 to {}",
                    MAX_QUEUES - 1
                );
            }
            if let Some(dup) = q
                .iter()
                .enumerate()
                .find_map(|(i, x)| q[..i].contains(x).then_some(x))
            {
                anyhow::bail!("queue {dup} is listed twice (one worker serves each queue)");
            }
        }
        if let Some(c) = &s.cpus {
            let n = online_cpus();
            if let Some(bad) = c.iter().find(|&&c| c >= n) {
                anyhow::bail!(
                    "cpu {bad} does not exist (this machine has CPUs 0..{})",
                    n - 1
                );
            }
        }
        if let Some(w) = s.workers
            && !(1..=MAX_WORKERS).contains(&w)
        {
            anyhow::bail!("workers must be 1 to {MAX_WORKERS}, not {w}");
        }
        let min_poll = match s.min_poll {
            None => i8::MIN,
            Some(p) if MIN_POLL_RANGE.contains(&p) => p,
            Some(p) => anyhow::bail!(
                "min_poll must be {} to {} (log2 seconds: 1 s to 36 h), not {p}",
                MIN_POLL_RANGE.start(),
                MIN_POLL_RANGE.end()
            ),
        };
        let spin_us = s.spin_us.unwrap_or(DEFAULT_SPIN_US);
        if spin_us > 1_000_000 {
            anyhow::bail!("spin_us must be 0 to 1000000 (one second), not {spin_us}");
        }
        let max_residence_us = s.max_residence_us.unwrap_or(DEFAULT_MAX_RESIDENCE_US);
        if max_residence_us > 10_000_000 {
            anyhow::bail!(
                "max_residence_us must be 0 (off) to 10000000 (ten seconds), not {max_residence_us}"
            );
        }
        let interleave_slots = s.interleave_slots.unwrap_or(DEFAULT_INTERLEAVE_SLOTS);
        if interleave_slots > MAX_INTERLEAVE_SLOTS {
            anyhow::bail!(
                "interleave_slots must be 0 (basic mode only) to {MAX_INTERLEAVE_SLOTS}, not {interleave_slots}"
            );
        }
        let kernel_modes = crate::server::policy_config::kernel_modes(s.kernel_modes.as_deref())?;
        if kernel_modes != 0 && datapath == Datapath::Socket {
            anyhow::bail!(
                "kernel_modes needs the xdp datapath: on the socket datapath ntpx holds the port, \
                 and no other daemon can receive on it"
            );
        }
        let policy = crate::server::policy_config::policy(&f.access, &f.rate_limit)?;
        let reverse_path = f.access.reverse_path.unwrap_or_default();
        if reverse_path != ReversePath::Off && datapath == Datapath::Socket {
            anyhow::bail!(
                "[access] reverse_path needs the xdp datapath: on the socket datapath the kernel \
                 checks sources itself, with net.ipv4.conf.<interface>.rp_filter (1: strict, 2: \
                 loose) for IPv4 and an nftables `fib saddr . iif oif missing drop` rule for IPv6"
            );
        }
        let c = &f.clock;
        let chrony_socket = PathBuf::from(
            c.chrony_socket
                .as_deref()
                .unwrap_or(crate::sys::clock::chrony::DEFAULT_SOCKET),
        );
        // Follow chronyd where it runs (its command socket is there), else
        // the kernel.
        let source = c.source.unwrap_or(if chrony_socket.exists() {
            Source::Chrony
        } else {
            Source::Kernel
        });
        let stratum = c
            .stratum
            .unwrap_or(if source == Source::Local { 1 } else { 2 });
        if !(1..=15).contains(&stratum) {
            anyhow::bail!("stratum must be 1 to 15, not {stratum}");
        }
        let max_age_s = c.max_state_age_s.unwrap_or(10.0);
        if !(2.0..=3600.0).contains(&max_age_s) {
            anyhow::bail!(
                "max_state_age_s must be 2 to 3600 seconds (the state is refreshed every second), \
                 not {max_age_s}"
            );
        }
        let refresh_s = c.refresh_s.unwrap_or(1.0);
        if !(0.1..=60.0).contains(&refresh_s) || refresh_s * 2.0 > max_age_s {
            anyhow::bail!(
                "refresh_s must be 0.1 to 60 seconds and at most half of max_state_age_s \
                 ({max_age_s}), not {refresh_s}"
            );
        }
        let max_root_distance_ms = c.max_root_distance_ms.unwrap_or(3000.0);
        if !(1.0..=16_000.0).contains(&max_root_distance_ms) {
            anyhow::bail!(
                "max_root_distance_ms must be 1 to 16000 (NTP's 16 s), not {max_root_distance_ms}"
            );
        }
        let ref_id = match &c.ref_id {
            Some(r) => parse_ref_id(r)?,
            None if source == Source::Local => *b"LOCL",
            None => [0; 4],
        };
        Ok(Settings {
            interface: s.interface.clone(),
            datapath,
            port,
            v4,
            v6,
            queues: s.queues.clone(),
            cpus: s.cpus.clone(),
            workers: s.workers,
            xdp_mode: parse_xdp_mode(s.xdp_mode.as_deref().unwrap_or("auto"))?,
            replies: s.replies.unwrap_or(Replies::Auto),
            bind_mode: s.bind_mode.unwrap_or(BindMode::Auto),
            frames,
            ring_size,
            busy_poll: s.busy_poll.unwrap_or(0),
            spin_us,
            max_residence_us,
            interleave_slots,
            drop_loop_ports: s.drop_loop_ports.unwrap_or(true),
            min_poll,
            stats_interval: s.stats_interval.unwrap_or(10),
            log_level: {
                let l = s.log_level.clone().unwrap_or_else(|| "info".to_owned());
                if let Err(e) = tracing_subscriber::EnvFilter::try_new(&l) {
                    anyhow::bail!(
                        "log_level {l:?} is not a level (error, warn, info, debug, trace) or a \
                         tracing filter: {e}"
                    );
                }
                l
            },
            stats_socket: stats_socket(s.stats_socket.as_deref())?,
            metrics: s
                .metrics
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(crate::server::metrics::parse_listen)
                .transpose()?,
            drain_file: match s
                .drain_file
                .as_deref()
                .unwrap_or(crate::server::drain::DEFAULT_PATH)
            {
                "" => None,
                p if p.contains('\0') => anyhow::bail!("drain_file must be a path without NUL"),
                p => Some(PathBuf::from(p)),
            },
            self_probe: match s.self_probe.unwrap_or(2.0) {
                0.0 => None,
                x if (0.1..=3600.0).contains(&x) => Some(std::time::Duration::from_secs_f64(x)),
                x => anyhow::bail!("self_probe must be 0 (off) or 0.1 to 3600 seconds, not {x}"),
            },
            clock: StateConfig {
                source,
                stratum,
                ref_id,
                root_delay: ms_to_short(c.root_delay_ms.unwrap_or(0.0), "root_delay_ms")?,
                root_dispersion: ms_to_short(
                    c.root_dispersion_ms.unwrap_or(0.0),
                    "root_dispersion_ms",
                )?,
                max_age_ns: (max_age_s * 1e9) as u64,
                max_root_distance_ns: (max_root_distance_ms * 1e6) as u64,
            },
            chrony_socket,
            refresh: std::time::Duration::from_secs_f64(refresh_s),
            drop_unsynchronized: c.on_unsync == Some(OnUnsync::Drop),
            upstream_ntp: c
                .upstream_ntp
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 123))),
            leap_seconds_list: c
                .leap_seconds_list
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            hw_timestamps: c.hw_timestamps.unwrap_or(HwTimestamps::Auto),
            policy,
            kernel_modes,
            reverse_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_validates() {
        let text = include_str!("../../scripts/ntpx.example.toml");
        let f = ConfigFile::parse(text).unwrap();
        let s = Settings::from_file(&f).unwrap();
        assert_eq!(s.port, 123);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ConfigFile::parse("[server]\ninterfce = \"eth0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("interfce"), "{e}");
    }

    #[test]
    fn xdp_needs_interface() {
        let e = Settings::from_file(&ConfigFile::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--iface"), "{e}");
    }

    #[test]
    fn bad_values_get_clear_errors() {
        let cases = [
            (
                "[server]\ndatapath = \"socket\"\nring_size = 1000\n",
                "power of two",
            ),
            (
                "[server]\ndatapath = \"socket\"\naddresses = [\"224.0.0.1\"]\n",
                "unicast",
            ),
            (
                "[server]\ndatapath = \"socket\"\n[clock]\nstratum = 16\n",
                "stratum",
            ),
            (
                "[server]\ndatapath = \"socket\"\n[clock]\nref_id = \"TOOLONG\"\n",
                "ref_id",
            ),
            (
                "[server]\ndatapath = \"socket\"\nxdp_mode = \"fast\"\n",
                "xdp_mode",
            ),
            (
                "[server]\ndatapath = \"socket\"\ncpus = [4096]\n",
                "cpu 4096",
            ),
            (
                "[server]\ndatapath = \"socket\"\nport = 0\n",
                "port must be 1 to 65535",
            ),
            (
                "[server]\ndatapath = \"socket\"\naddresses = [\"127.0.0.1\"]\n",
                "loopback",
            ),
            (
                "[server]\ndatapath = \"socket\"\naddresses = [\"127.1.2.3\"]\n",
                "loopback",
            ),
            (
                "[server]\ndatapath = \"socket\"\naddresses = [\"::1\"]\n",
                "loopback",
            ),
            (
                "[server]\ndatapath = \"socket\"\naddresses = [\"192.0.2.1\", \"192.0.2.1\"]\n",
                "listed twice",
            ),
            (
                "[server]\ndatapath = \"socket\"\nmin_poll = 127\n",
                "min_poll must be 0 to 17",
            ),
            (
                "[server]\ndatapath = \"socket\"\nmin_poll = -1\n",
                "min_poll must be 0 to 17",
            ),
            (
                "[server]\ndatapath = \"socket\"\nqueues = [0, 0]\n",
                "queue 0 is listed twice",
            ),
            (
                "[server]\ndatapath = \"socket\"\nqueues = [256]\n",
                "queue 256 is out of range",
            ),
            (
                "[server]\ndatapath = \"socket\"\nworkers = 0\n",
                "workers must be 1 to 1024",
            ),
            (
                "[server]\ndatapath = \"socket\"\nworkers = 100000\n",
                "workers must be 1 to 1024",
            ),
            (
                "[server]\ndatapath = \"socket\"\n[clock]\nroot_delay_ms = nan\n",
                "root_delay_ms",
            ),
            (
                "[server]\ndatapath = \"socket\"\n[clock]\nroot_dispersion_ms = inf\n",
                "root_dispersion_ms",
            ),
        ];
        for (text, needle) in cases {
            let f = ConfigFile::parse(text).unwrap();
            let e = Settings::from_file(&f).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(ConfigFile::parse("[server]\nport = 70000\n").is_err());
        assert!(ConfigFile::parse("[server]\nframes = -1\n").is_err());
        assert!(ConfigFile::parse("[server]\nring_size = 1e300\n").is_err());
        let many: Vec<String> = (1..=17).map(|i| format!("\"192.0.2.{i}\"")).collect();
        let text = format!(
            "[server]\ndatapath = \"socket\"\naddresses = [{}]\n",
            many.join(", ")
        );
        let e = Settings::from_file(&ConfigFile::parse(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("17 IPv4 addresses given: ntpx serves at most 16"),
            "{e}"
        );
        assert!(ConfigFile::parse("[server]\ndatapath = \"dpdk\"\n").is_err());
    }

    #[test]
    fn stats_socket_default_path_and_off() {
        let s = |text: &str| Settings::from_file(&ConfigFile::parse(text).unwrap());
        let on = s("[server]\ndatapath = \"socket\"\n").unwrap();
        assert_eq!(on.stats_socket, Some(PathBuf::from("/run/ntpx.sock")));
        let off = s("[server]\ndatapath = \"socket\"\nstats_socket = \"\"\n").unwrap();
        assert_eq!(off.stats_socket, None);
        let other = s("[server]\ndatapath = \"socket\"\nstats_socket = \"/tmp/x.sock\"\n").unwrap();
        assert_eq!(other.stats_socket, Some(PathBuf::from("/tmp/x.sock")));
        let long = format!(
            "[server]\ndatapath = \"socket\"\nstats_socket = \"/{}\"\n",
            "a".repeat(200)
        );
        let e = s(&long).unwrap_err().to_string();
        assert!(e.contains("stats_socket"), "{e}");
    }

    #[test]
    fn ref_ids() {
        assert_eq!(parse_ref_id("GPS").unwrap(), *b"GPS\0");
        assert_eq!(parse_ref_id("192.0.2.1").unwrap(), [192, 0, 2, 1]);
        assert!(parse_ref_id("").is_err());
    }

    #[test]
    fn what_a_reload_may_change() {
        let s = |text: &str| Settings::from_file(&ConfigFile::parse(text).unwrap()).unwrap();
        let base = "[server]\ndatapath = \"socket\"\n[clock]\nsource = \"local\"\nstratum = 2\n";
        let old = s(base);
        assert!(old.live_changes(&s(base)).unwrap().is_empty());
        let more = format!("{base}[access]\ndeny = [\"192.0.2.0/24\"]\n");
        let changed = old
            .live_changes(&s(&more.replace("stratum = 2", "stratum = 3")))
            .unwrap();
        assert_eq!(changed, ["[clock]", "[access]"]);
        let e = old
            .live_changes(&s(&base.replace("\n[clock]", "\nport = 124\n[clock]")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("port cannot change"), "{e}");
        let e = old
            .live_changes(&s(&base.replace("local", "kernel")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[clock] source"), "{e}");
        let changed = old
            .live_changes(&s(&format!(
                "{base}[rate_limit]\nburst = 9\nprefix_v4 = 24\nceiling = 5\n"
            )))
            .unwrap();
        assert_eq!(changed, ["[rate_limit]"]);
        let e = old
            .live_changes(&s(&format!("{base}[rate_limit]\nclients = 1024\n")))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("clients cannot change"), "{e}");
    }
}
