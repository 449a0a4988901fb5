//! The `ntpx load` command line: arguments, validation, and the run from
//! start to printed report.

use super::report;
use super::run::{LoadConfig, Plan};
use super::spec::{Prefix, parse_duration, parse_prefix, parse_ramp, parse_rate};
use crate::sys::Datapath;
use crate::sys::bpf::parse_xdp_mode;
use crate::sys::netif::parse_mac;
use crate::sys::xsk::BindMode;
use crate::sys::xsk::parse_bind_mode;
use anyhow::{Context, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `ntpx load` arguments.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("pattern").args(["rate", "ramp", "ping"])))]
pub struct LoadArgs {
    /// The server's address (IPv4 or IPv6).
    pub server: IpAddr,
    /// Interface to send from: required with --datapath xdp (AF_XDP; needs
    /// root); with --datapath socket the sockets are bound to it if given.
    #[arg(long, short)]
    pub iface: Option<String>,
    /// How to send: xdp (AF_XDP frames built by the generator) or socket
    /// (kernel UDP sockets: connected, 16 client identities per thread,
    /// sendmmsg/recvmmsg batches, kernel receive stamps).
    #[arg(long, value_enum, default_value = "xdp", hide_possible_values = true)]
    pub datapath: Datapath,
    /// The server's UDP port.
    #[arg(long, default_value_t = 123)]
    pub port: u16,
    /// The server's (or next hop's) MAC; default: learnt from one probe
    /// request through the kernel (xdp only).
    #[arg(long, value_parser = parse_mac_arg)]
    pub mac: Option<[u8; 6]>,
    /// Source addresses, e.g. 198.19.0.0/16: each request comes from a
    /// random one (and a random port). The server must route the prefix
    /// back to this host. Default: the interface's own address. Only with
    /// --datapath xdp.
    #[arg(long, value_parser = parse_prefix)]
    pub sources: Option<Prefix>,
    /// Open loop at a constant rate, e.g. 250k (the default pattern, 10k).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open-loop ramp, ntpperf style: FROM..TO xFACTOR, e.g. '10k..2M x1.5'.
    #[arg(long, value_parser = parse_ramp_arg)]
    pub ramp: Option<Ramp>,
    /// Closed loop: this many clients, each with one request in flight
    /// (with --datapath socket, one socket each, at most 4096).
    #[arg(long, value_name = "CLIENTS")]
    pub ping: Option<usize>,
    /// Ping mode: pause between a reply and the client's next request.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub interval: Duration,
    /// Length of a --rate or --ping run.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Length of each --ramp step.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub step: Duration,
    /// Replies later than this count as late (and the run waits twice this
    /// long for the last replies).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub timeout: Duration,
    /// NIC queues to send from, one pinned thread each (comma separated);
    /// with --datapath socket just the number of threads.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub queues: Vec<u32>,
    /// CPUs to pin the threads to, in queue order.
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// XDP attach mode: auto, native or generic (xdp only).
    #[arg(long, default_value = "auto")]
    pub xdp_mode: String,
    /// AF_XDP bind mode: auto, copy or zerocopy (xdp only).
    #[arg(long, value_parser = parse_bind_mode, default_value = "auto")]
    pub bind_mode: BindMode,
    /// NTP version of the requests (1-4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub ntp_version: u8,
    /// The target is a reflector (`ntpx sink --reflect`), not an NTP
    /// server: a request that comes back is its answer, and only round
    /// trips are measured. For the link's ceiling.
    #[arg(long)]
    pub reflector: bool,
    /// Interleaved mode (RFC 9769, with --ping): each client echoes the
    /// server's last receive timestamp, and interleaved replies (whose
    /// transmit time is when the previous reply really left) get offset
    /// and delay histograms of their own.
    #[arg(long, requires = "ping")]
    pub xleave: bool,
    /// Print the JSON summary to stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Write summary.json, .hgrm files and SVG plots into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of this run in plots.
    #[arg(long, default_value = "ntpx load")]
    pub label: String,
    /// No live progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The rates of a ramp (a newtype: clap would take a bare `Vec` for a
/// repeated argument).
#[derive(Clone, Debug, PartialEq)]
pub struct Ramp(pub Vec<f64>);

fn parse_ramp_arg(s: &str) -> Result<Ramp, String> {
    parse_ramp(s).map(Ramp)
}

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    parse_mac(s).map_err(|e| e.to_string())
}

impl LoadArgs {
    /// Checks the arguments together and builds the run's config.
    pub fn config(&self) -> anyhow::Result<LoadConfig> {
        let nonzero = |d: Duration, what: &str| {
            if d.is_zero() {
                bail!("{what} must be longer than 0");
            }
            Ok(d)
        };
        let (plan, step) = match (&self.rate, &self.ramp, self.ping) {
            (_, Some(r), _) => (Plan::Rates(r.0.clone()), nonzero(self.step, "--step")?),
            (_, _, Some(n)) => {
                if n == 0 || n > super::engine::MAX_PING_CLIENTS {
                    bail!(
                        "--ping takes 1 to {} clients",
                        super::engine::MAX_PING_CLIENTS
                    );
                }
                (
                    Plan::Ping {
                        clients: n,
                        gap: self.interval,
                    },
                    nonzero(self.duration, "--duration")?,
                )
            }
            (r, _, _) => (
                Plan::Rates(vec![r.unwrap_or(10e3)]),
                nonzero(self.duration, "--duration")?,
            ),
        };
        if let Some(p) = self.sources
            && p.addr.is_ipv4() != self.server.is_ipv4()
        {
            bail!(
                "--sources {p} is not of the server's address family ({})",
                self.server
            );
        }
        if self.queues.is_empty() {
            bail!("--queues needs at least one queue");
        }
        if let Some(dup) = self
            .queues
            .iter()
            .enumerate()
            .find_map(|(i, q)| self.queues[..i].contains(q).then_some(q))
        {
            bail!("--queues lists queue {dup} twice (one thread sends from each)");
        }
        if self.port == 0 {
            bail!("--port must be 1 to 65535 (no server listens on port 0)");
        }
        match self.datapath {
            Datapath::Xdp => {
                if self.iface.is_none() {
                    bail!("--datapath xdp needs --iface (the interface to send from)");
                }
            }
            Datapath::Socket => {
                if let Some(p) = self.sources {
                    bail!(
                        "--sources {p} is not supported with --datapath socket: the kernel \
                         sends only from addresses configured on this host (use --datapath xdp)"
                    );
                }
                let xdp_only = [
                    ("--mac", self.mac.is_some()),
                    ("--xdp-mode", self.xdp_mode != "auto"),
                    ("--bind-mode", self.bind_mode != BindMode::Auto),
                ];
                if let Some((flag, _)) = xdp_only.iter().find(|(_, set)| *set) {
                    bail!("{flag} applies only to --datapath xdp");
                }
                if let Plan::Ping { clients, .. } = plan
                    && clients > super::udp_thread::MAX_PING_SOCKETS
                {
                    bail!(
                        "--datapath socket opens one socket per --ping client: at most {}",
                        super::udp_thread::MAX_PING_SOCKETS
                    );
                }
            }
        }
        Ok(LoadConfig {
            datapath: self.datapath,
            iface: self.iface.clone(),
            server: SocketAddr::new(self.server, self.port),
            mac: self.mac,
            sources: self.sources,
            plan,
            step,
            timeout: nonzero(self.timeout, "--timeout")?,
            queues: self.queues.clone(),
            cpus: self.cpus.clone(),
            xdp_mode: parse_xdp_mode(&self.xdp_mode)?,
            bind_mode: self.bind_mode,
            version: self.ntp_version,
            echo: self.reflector,
            xleave: self.xleave,
            progress: !self.quiet && !self.json,
        })
    }
}

/// Runs `ntpx load`.
pub fn main(args: &LoadArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    if !args.json {
        match cfg.datapath {
            Datapath::Xdp => eprintln!(
                "ntpx load: {} from {} ({}), queues {:?}, timeout {:?}",
                cfg.server,
                cfg.iface.as_deref().unwrap_or("?"),
                cfg.sources
                    .map_or("the interface's address".to_owned(), |p| p.to_string()),
                cfg.queues,
                cfg.timeout,
            ),
            Datapath::Socket => eprintln!(
                "ntpx load: {} over kernel UDP sockets{}, {} thread(s), timeout {:?}",
                cfg.server,
                cfg.iface
                    .as_deref()
                    .map_or(String::new(), |i| format!(" bound to {i}")),
                cfg.queues.len(),
                cfg.timeout,
            ),
        }
    }
    let result = super::run::run(&cfg, &stop)?;
    let summary = report::summary(&result, &cfg.server.to_string(), cfg.datapath.label());
    if let Some(dir) = &args.out {
        report::write_files(dir, &result, &summary, &args.label)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        match (result.server_mac, &result.xdp_mode) {
            (Some(mac), Some(mode)) => println!(
                "server MAC {}, XDP {mode} mode",
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => println!(
                "kernel UDP sockets: {} (connected, one client each)",
                result.sockets
            ),
        }
        print!("{}", report::text(&result));
        if let Some(dir) = &args.out {
            println!(
                "wrote summary.json, *.hgrm and SVG plots to {}",
                dir.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<LoadConfig> {
        let cmd = Cmd::try_parse_from(std::iter::once("load").chain(args.iter().copied()))?;
        cmd.args.config()
    }

    #[test]
    fn datapath_choices_and_their_flags() {
        let c = config(&["198.18.0.1", "-i", "eth0"]).unwrap();
        assert_eq!(
            (c.datapath, c.iface.as_deref()),
            (Datapath::Xdp, Some("eth0"))
        );
        let err = config(&["198.18.0.1"]).unwrap_err().to_string();
        assert!(err.contains("needs --iface"), "{err}");
        let c = config(&["198.18.0.1", "--datapath", "socket", "--queues", "0,1"]).unwrap();
        assert_eq!(
            (c.datapath, c.iface, c.queues.len()),
            (Datapath::Socket, None, 2)
        );
        for (extra, want) in [
            (
                &["--sources", "198.19.0.0/16"][..],
                "--sources 198.19.0.0/16 is not supported",
            ),
            (&["--mac", "02:00:00:00:00:01"], "--mac applies only"),
            (&["--xdp-mode", "native"], "--xdp-mode applies only"),
            (&["--bind-mode", "copy"], "--bind-mode applies only"),
            (&["--ping", "5000"], "at most 4096"),
        ] {
            let mut a = vec!["198.18.0.1", "--datapath", "socket"];
            a.extend_from_slice(extra);
            let err = config(&a).unwrap_err().to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        assert!(config(&["198.18.0.1", "--datapath", "socket", "--ping", "4096"]).is_ok());
        assert!(config(&["198.18.0.1", "--datapath", "dpdk"]).is_err());
    }
}
