//! The `ntpx` command.

#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use ntpx::server::config::{ConfigFile, Datapath, Replies, Settings};
use ntpx::server::state::Source;
use ntpx::sys::xsk::BindMode;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ntpx",
    version,
    about = "Kernel-bypass NTP server (XDP + AF_XDP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve NTP on an interface (needs root for the xdp datapath).
    Serve(Box<ServeArgs>),
    /// Load-test an NTP server over AF_XDP (needs root) or kernel sockets:
    /// open-loop rate, ramp or closed-loop ping; every reply validated;
    /// latency histograms.
    Load(Box<ntpx::load::cli::LoadArgs>),
    /// Plot several `ntpx load --json` ramps side by side (SVG).
    Plot(ntpx::load::plot::PlotArgs),
    /// Count and drop UDP to the NTP port with XDP where a server would
    /// answer: the load generator's own ceiling (needs root).
    Sink(SinkArgs),
    /// Attach a pass-through XDP program to the client end of a veth test
    /// link (a veth accepts frames its peer sends from XDP only if it runs
    /// XDP itself). Not needed on real NICs.
    XdpPass {
        /// The interface (the peer of the one ntpx serves).
        #[arg(long, short)]
        iface: String,
    },
    /// Validate a config file and print the settings it gives.
    CheckConfig {
        /// The TOML file.
        config: PathBuf,
    },
    /// Print a running `ntpx serve`'s counters and RX->TX service-time
    /// percentiles, read from its stats socket.
    Stats(StatsArgs),
    /// Take a running `ntpx serve` out of service for maintenance, or put
    /// it back (writes or removes its drain file).
    Drain(DrainArgs),
    /// Say whether a running `ntpx serve` serves: exit 0 if it answers on
    /// its stats socket, is in service, synchronised and its state fresh;
    /// else exit 1 and say why (for health checks: anycast, monitoring).
    Health {
        /// The stats socket of the server.
        #[arg(long, value_name = "PATH", default_value = ntpx::server::stats_socket::DEFAULT_PATH)]
        socket: PathBuf,
    },
    /// Make a running `ntpx serve` read its config again (SIGHUP; found
    /// through its stats socket): the clock state options and the access
    /// lists change live, anything else is refused with a message in its
    /// log and the running config stays.
    Reload {
        /// The stats socket of the server.
        #[arg(long, value_name = "PATH", default_value = ntpx::server::stats_socket::DEFAULT_PATH)]
        socket: PathBuf,
    },
    /// Write the manual pages, ntpx(8) and ntpx-SUBCOMMAND(8), as roff
    /// into DIR (the package installs them).
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct DrainArgs {
    /// on: out of service; off: back in service.
    #[arg(value_parser = ["on", "off"])]
    state: String,
    /// What a drained server does: unsync (replies say LI 3, stratum 0)
    /// or stop (no replies).
    #[arg(long, value_enum, default_value = "unsync")]
    mode: ntpx::server::state::Drain,
    /// The server's drain file.
    #[arg(long, value_name = "PATH", default_value = ntpx::server::drain::DEFAULT_PATH)]
    file: PathBuf,
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// TOML config file; flags override it (see scripts/ntpx.example.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Measure the XDP program's run time (the kernel's BPF run statistics,
    /// on for this process's life) and print it in the exit summary. Costs
    /// every run of every BPF program two clock reads: for benchmarks.
    #[arg(long)]
    bpf_stats: bool,
    /// Interface to serve on.
    #[arg(long, short)]
    iface: Option<String>,
    /// Datapath: xdp (AF_XDP kernel bypass) or socket (kernel UDP).
    #[arg(long, value_enum)]
    datapath: Option<Datapath>,
    /// UDP port.
    #[arg(long)]
    port: Option<u16>,
    /// Address to answer for (repeat for several); default: the interface's.
    #[arg(long = "address", value_name = "IP")]
    addresses: Vec<IpAddr>,
    /// NIC queues to serve, comma separated (default: all).
    #[arg(long, value_delimiter = ',')]
    queues: Option<Vec<u32>>,
    /// CPUs to pin workers to, comma separated, in worker order.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Socket-datapath workers (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// XDP attach mode: auto, native or generic.
    #[arg(long)]
    xdp_mode: Option<String>,
    /// Where plain requests are answered: xdp (in the XDP program), workers
    /// (AF_XDP) or auto (xdp unless a veth's peer cannot take XDP_TX).
    #[arg(long, value_enum)]
    replies: Option<Replies>,
    /// AF_XDP bind mode.
    #[arg(long, value_parser = ntpx::sys::xsk::parse_bind_mode)]
    bind_mode: Option<BindMode>,
    /// UMEM frames per queue.
    #[arg(long)]
    frames: Option<u32>,
    /// AF_XDP ring size.
    #[arg(long)]
    ring_size: Option<u32>,
    /// Busy-poll budget (0 = off).
    #[arg(long)]
    busy_poll: Option<u32>,
    /// Microseconds an idle AF_XDP worker keeps polling its ring before it
    /// sleeps (default 50; 0: sleep at once).
    #[arg(long, value_name = "US")]
    spin_us: Option<u64>,
    /// Drop replies that would leave more than this many microseconds after
    /// their request arrived, counted as late (default 500; 0: off).
    #[arg(long, value_name = "US")]
    max_residence_us: Option<u64>,
    /// Slots of the interleaved-mode table (RFC 9769; default 65536, 0:
    /// basic mode only).
    #[arg(long, value_name = "N")]
    interleave_slots: Option<usize>,
    /// Clock state source: kernel (adjtimex), chrony (chronyd's tracking
    /// report, the kernel while chronyd is silent), ntp (a query to the
    /// local NTP daemon, --upstream-ntp) or local (always synchronised;
    /// isolated test networks only).
    #[arg(long, value_parser = parse_source)]
    clock: Option<Source>,
    /// Stratum to advertise when synchronised.
    #[arg(long)]
    stratum: Option<u8>,
    /// chronyd's command socket (with --clock chrony; default
    /// /run/chrony/chronyd.sock).
    #[arg(long, value_name = "PATH")]
    chrony_socket: Option<String>,
    /// The local NTP daemon to follow (with --clock ntp; default
    /// 127.0.0.1:123).
    #[arg(long, value_name = "ADDR:PORT")]
    upstream_ntp: Option<std::net::SocketAddr>,
    /// An IETF leap-seconds.list (e.g. /usr/share/zoneinfo/leap-seconds.list)
    /// whose leap seconds replies announce on their day, besides the time
    /// daemon's and the kernel's.
    #[arg(long, value_name = "PATH")]
    leap_seconds_list: Option<String>,
    /// Hardware receive stamps from the NIC: auto (where the driver offers
    /// them to XDP; the program is then device-bound and attaches
    /// natively), on (required), off.
    #[arg(long, value_parser = ntpx::server::config::parse_hw_timestamps)]
    hw_timestamps: Option<ntpx::server::config::HwTimestamps>,
    /// Reference ID (1-4 ASCII characters, or an IPv4 address).
    #[arg(long)]
    ref_id: Option<String>,
    /// Seconds after which a server state that was not refreshed (a hung
    /// or stopped process) makes replies say LI 3 (2 to 3600; default 10).
    #[arg(long, value_name = "SECONDS")]
    max_state_age: Option<f64>,
    /// Seconds between stats lines (0 = off).
    #[arg(long)]
    stats_interval: Option<u64>,
    /// Unix socket that `ntpx stats` reads (default /run/ntpx.sock; '' = off).
    #[arg(long, value_name = "PATH")]
    stats_socket: Option<String>,
    /// No stats socket (the same as --stats-socket '').
    #[arg(long, conflicts_with = "stats_socket")]
    no_stats_socket: bool,
    /// Serve Prometheus/OpenMetrics metrics over HTTP at ADDR:PORT, or at
    /// PORT on loopback (`[server] metrics`; default off).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// The drain file `ntpx drain` writes (default /run/ntpx.drain; ''
    /// = none).
    #[arg(long, value_name = "PATH")]
    drain_file: Option<String>,
    /// Seconds between self-probes: the server asks itself for the time
    /// through its live path and reports what it saw (default 2; 0 = off).
    #[arg(long, value_name = "SECONDS")]
    self_probe: Option<f64>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    #[command(flatten)]
    policy: ntpx::server::policy_config::PolicyFlags,
}

#[derive(Args)]
struct StatsArgs {
    /// The stats socket of the server to ask.
    #[arg(long, value_name = "PATH", default_value = ntpx::server::stats_socket::DEFAULT_PATH)]
    socket: PathBuf,
    /// Print the server's JSON document as it came.
    #[arg(long)]
    json: bool,
    /// Also write the service-time percentile distribution (HdrHistogram
    /// .hgrm text, microseconds) to FILE.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// A live view: ask again every SECS seconds (default 1) and show the
    /// rates since the last time; with --json, one document per line.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_seconds, conflicts_with = "hgrm")]
    watch: Option<Duration>,
    /// With --watch: stop after N views (default: until interrupted).
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

#[derive(Args)]
struct SinkArgs {
    /// Interface to attach the sink to.
    #[arg(long, short)]
    iface: String,
    /// UDP destination port to count and drop.
    #[arg(long, default_value_t = 123)]
    port: u16,
    /// XDP attach mode: auto, native or generic.
    #[arg(long, default_value = "auto")]
    xdp_mode: String,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Send each frame straight back (XDP_TX, addresses and ports swapped)
    /// instead of dropping it: the link's XDP_TX ceiling, for `ntpx load
    /// --reflector`.
    #[arg(long)]
    reflect: bool,
    /// Measure the program's run time (BPF run statistics) and print it
    /// with the totals.
    #[arg(long)]
    bpf_stats: bool,
}

/// The longest `--duration` (a year): long enough for any run, short
/// enough that every time computed from it fits.
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a positive number of seconds, at most [`MAX_DURATION`].
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_DURATION)
        .ok_or_else(|| {
            format!(
                "must be more than 0 and at most {} seconds, not {s}",
                MAX_DURATION.as_secs()
            )
        })
}

impl SinkArgs {
    /// `ntpx sink`; the run loop is `ntpx::load::program::run_sink`.
    fn run(&self) -> anyhow::Result<()> {
        if self.port == 0 {
            anyhow::bail!("--port must be 1 to 65535");
        }
        let opts = ntpx::load::program::SinkOptions {
            port: self.port,
            mode: ntpx::sys::bpf::parse_xdp_mode(&self.xdp_mode)?,
            duration: self.duration,
            reflect: self.reflect,
            ..Default::default()
        };
        let ifindex = ntpx::sys::netif::ifindex(&self.iface)?;
        let _stats = run_stats(self.bpf_stats)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
                .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
        }
        ntpx::load::program::run_sink(ifindex, &opts, &stop, &mut std::io::stdout().lock())?;
        Ok(())
    }
}

fn parse_source(s: &str) -> Result<Source, String> {
    match s {
        "kernel" => Ok(Source::Kernel),
        "local" => Ok(Source::Local),
        "chrony" => Ok(Source::Chrony),
        "ntp" => Ok(Source::Ntp),
        _ => Err(format!("expected kernel, chrony, ntp or local, not {s:?}")),
    }
}

impl ServeArgs {
    /// The config file with the flags laid over it.
    fn merged(&self) -> anyhow::Result<ConfigFile> {
        let mut f = match &self.config {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let s = &mut f.server;
        macro_rules! over {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = Some(v);
                }
            };
        }
        over!(s.interface, self.iface);
        over!(s.datapath, self.datapath);
        over!(s.port, self.port);
        if !self.addresses.is_empty() {
            s.addresses = Some(self.addresses.clone());
        }
        over!(s.queues, self.queues);
        over!(s.cpus, self.cpus);
        over!(s.workers, self.workers);
        over!(s.xdp_mode, self.xdp_mode);
        over!(s.replies, self.replies);
        over!(s.bind_mode, self.bind_mode);
        over!(s.frames, self.frames);
        over!(s.ring_size, self.ring_size);
        over!(s.busy_poll, self.busy_poll);
        over!(s.spin_us, self.spin_us);
        over!(s.max_residence_us, self.max_residence_us);
        over!(s.interleave_slots, self.interleave_slots);
        over!(s.stats_interval, self.stats_interval);
        over!(s.stats_socket, self.stats_socket);
        over!(s.metrics, self.metrics);
        over!(s.drain_file, self.drain_file);
        over!(s.self_probe, self.self_probe);
        if self.no_stats_socket {
            s.stats_socket = Some(String::new());
        }
        self.policy
            .apply(&mut f.access, &mut f.rate_limit, &mut f.server.kernel_modes);
        let c = &mut f.clock;
        over!(c.source, self.clock);
        over!(c.stratum, self.stratum);
        over!(c.ref_id, self.ref_id);
        over!(c.max_state_age_s, self.max_state_age);
        over!(c.chrony_socket, self.chrony_socket);
        over!(c.upstream_ntp, self.upstream_ntp);
        over!(c.leap_seconds_list, self.leap_seconds_list);
        over!(c.hw_timestamps, self.hw_timestamps);
        Ok(f)
    }
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt, reload};
    // NTPX_LOG, if set, rules; else `log_level` from the config, which a
    // reload may change (through the handle).
    let from_env = EnvFilter::try_from_env("NTPX_LOG").ok();
    let env_rules = from_env.is_some();
    let (filter, handle) = reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new("info")));
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // Under systemd, stderr goes to the journal, which stamps each line
    // itself: no second timestamp, no module paths.
    let logs = if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.without_time().with_target(false).boxed()
    } else {
        logs.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .init();
    let set_log: ntpx::server::control::LogSetter = Box::new(move |level: &str| {
        if env_rules {
            return Ok(());
        }
        let f =
            EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log_level {level:?}: {e}"))?;
        handle
            .reload(f)
            .map_err(|e| anyhow::anyhow!("setting the log level: {e}"))
    });
    // libbpf's own messages (verifier chatter, attach errors) go to the log
    // instead of straight to stderr; ntpx reports the errors that matter.
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, libbpf_log)));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args, set_log),
        Command::Sink(args) => args.run(),
        Command::Load(args) => ntpx::load::cli::main(&args),
        Command::Plot(args) => ntpx::load::plot::main(&args),
        Command::XdpPass { iface } => ntpx::sys::netif::ifindex(&iface).and_then(|i| {
            ntpx::sys::bpf::pass::attach_pass_through(i).map_err(|e| {
                anyhow::anyhow!("cannot attach the pass-through program to {iface}: {e}")
            })
        }),
        Command::CheckConfig { config } => ConfigFile::load(&config)
            .and_then(|f| Settings::from_file(&f))
            .map(|s| println!("{s:#?}")),
        Command::Stats(args) => stats(&args),
        Command::Man { dir } => man_pages(&dir),
        Command::Health { socket } => {
            ntpx::server::stats_socket::fetch(&socket).and_then(|(_, doc)| {
                match doc.state.as_ref().map_or(
                    Some("it reports no state (an older ntpx?)".to_owned()),
                    |s| s.unhealthy(),
                ) {
                    None => {
                        println!("serving");
                        Ok(())
                    }
                    Some(why) => Err(anyhow::anyhow!("not serving: {why}")),
                }
            })
        }
        Command::Reload { socket } => {
            ntpx::server::stats_socket::fetch(&socket).and_then(|(_, doc)| {
                ntpx::sys::signal::hang_up(doc.pid)?;
                println!(
                    "asked ntpx serve (pid {}) to reload; its log says what it did",
                    doc.pid
                );
                Ok(())
            })
        }
        Command::Drain(args) => {
            use ntpx::server::state::Drain;
            match (args.state.as_str(), args.mode) {
                ("on", Drain::Off) => Err(anyhow::anyhow!(
                    "ntpx drain on: --mode is unsync or stop (ntpx drain off puts it back)"
                )),
                ("on", d) => Ok(d),
                _ => Ok(Drain::Off),
            }
            .and_then(|d| ntpx::server::drain::write(&args.file, d).map(|()| d))
            .map(|d| {
                println!(
                    "drain {} ({}): a running server follows within a second",
                    d.name(),
                    args.file.display()
                );
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ntpx: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only if the text before it does not
/// already say it (many errors quote their source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn libbpf_log(level: libbpf_rs::PrintLevel, msg: String) {
    let msg = msg.trim_end();
    match level {
        libbpf_rs::PrintLevel::Warn => tracing::debug!(target: "libbpf", "{msg}"),
        libbpf_rs::PrintLevel::Info | libbpf_rs::PrintLevel::Debug => {
            tracing::trace!(target: "libbpf", "{msg}")
        }
    }
}

/// Run statistics for this process's life, if asked for.
fn run_stats(on: bool) -> anyhow::Result<Option<std::os::fd::OwnedFd>> {
    on.then(ntpx::sys::bpf::enable_run_stats)
        .transpose()
        .map_err(|e| anyhow::anyhow!("turning on BPF run statistics (--bpf-stats): {e}"))
}

fn serve(args: &ServeArgs, set_log: ntpx::server::control::LogSetter) -> anyhow::Result<()> {
    let settings = Settings::from_file(&args.merged()?)?;
    let _stats = run_stats(args.bpf_stats)?;
    // A reload reads the file again, with the same flags over it.
    let again = args.clone();
    ntpx::server::serve::run(
        settings,
        ntpx::server::serve::RunOptions {
            duration: args.duration,
        },
        Some(Box::new(move || Settings::from_file(&again.merged()?))),
        Some(set_log),
    )?;
    Ok(())
}

/// Writes ntpx(8) and a page per subcommand, ntpx-serve(8) and so on, as
/// the top page's SUBCOMMANDS section names them.
fn man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let write = |name: &str, cmd: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.8"));
        let mut f = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        clap_mangen::Man::new(cmd)
            .title(name)
            .section("8")
            .render(&mut f)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ntpx-{}", sub.get_name());
        let bin = format!("ntpx {}", sub.get_name());
        write(&name, sub.clone().display_name(name.clone()).bin_name(bin))?;
    }
    write("ntpx", cmd)
}

/// `ntpx stats --watch`: a view every `every`, of the rates since the last.
fn watch_stats(args: &StatsArgs, every: Duration) -> anyhow::Result<()> {
    use std::io::{IsTerminal as _, Write as _};
    if every < Duration::from_millis(100) {
        anyhow::bail!("--watch: at least 0.1 s between views");
    }
    let fetch = || ntpx::server::stats_socket::fetch(&args.socket);
    let terminal = std::io::stdout().is_terminal();
    let (_, mut prev) = fetch()?;
    let mut shown = 0u64;
    while args.count.is_none_or(|n| shown < n) {
        std::thread::sleep(every);
        let (text, doc) = fetch()?;
        let view = if args.json {
            format!("{}\n", text.trim_end().replace('\n', ""))
        } else {
            doc.render_since(&prev)?
        };
        let mut out = std::io::stdout().lock();
        if terminal && !args.json {
            // Home and clear, so that the view stays in place.
            write!(out, "\x1b[H\x1b[2J")?;
        } else if !args.json && shown > 0 {
            writeln!(out)?;
        }
        out.write_all(view.as_bytes())?;
        out.flush()?;
        prev = doc;
        shown += 1;
    }
    Ok(())
}

fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    if let Some(every) = args.watch {
        return watch_stats(args, every);
    }
    let (text, doc) = ntpx::server::stats_socket::fetch(&args.socket)?;
    if let Some(path) = &args.hgrm {
        let hist = doc.histogram()?;
        let named = ntpx::report::NamedHist {
            name: "RX->TX service time",
            hist: &hist,
            bias_ns: 0,
        };
        let write = || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
            ntpx::report::write_hgrm(&mut w, &named, 1000.0)?;
            std::io::Write::flush(&mut w)
        };
        write().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", text.trim_end());
    } else {
        print!("{}", doc.render()?);
    }
    Ok(())
}
