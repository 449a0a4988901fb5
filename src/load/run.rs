//! Setting up and running a load test: over AF_XDP the interface, the
//! XDP program and one AF_XDP socket per queue, and the server's MAC (from
//! a probe); over kernel sockets a set of connected UDP sockets per
//! thread; then one pinned thread per queue, the progress line, and the
//! merged results.

use super::check::{self, Expect};
use super::engine::{Engine, EngineConfig};
use super::live::Live;
use super::sched::Schedule;
use super::spec::{Prefix, fmt_rate};
use super::tally::Tally;
use super::track::{MAX_THREADS, slot_bits_for};
use super::udp_thread::{self as load_socket, ClientSockets};
use super::xsk_thread as load_xdp;
use crate::load::program::{ClientProgram, ClientProgramKind};
use crate::proto::ntp::{Leap, Mode, NtpTimestamp};
use crate::proto::request::Target;
use crate::proto::wire::ethernet::Frame;
use crate::report::fmt_ns;
use crate::sys::Datapath;
use crate::sys::bpf::AttachMode;
use crate::sys::clock::{Clock, KernelClock, SystemClock, SystemKernelClock};
use crate::sys::netif;
use crate::sys::xsk::{BindMode, QueueOptions, XskQueue};
use anyhow::{Context, bail};
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Open loop at fixed rates, or closed-loop ping.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// One step per rate (requests/s, all threads together).
    Rates(Vec<f64>),
    /// `clients` clients, one request each in flight; `gap` between a
    /// reply and the client's next request.
    Ping {
        /// Clients (identities).
        clients: usize,
        /// Pause after each reply.
        gap: Duration,
    },
}

/// Everything `ntpx load` needs.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// How to send and receive.
    pub datapath: Datapath,
    /// Interface to send from (required over AF_XDP; kernel sockets are
    /// bound to it if given).
    pub iface: Option<String>,
    /// The server.
    pub server: SocketAddr,
    /// The server's (or next hop's) MAC; `None`: learn it from a probe
    /// (AF_XDP only).
    pub mac: Option<[u8; 6]>,
    /// Source addresses; `None`: the interface's own address (AF_XDP
    /// only; kernel sockets send from the address the route gives).
    pub sources: Option<Prefix>,
    /// What to send.
    pub plan: Plan,
    /// Length of each step (of the whole run, for ping).
    pub step: Duration,
    /// Replies later than this are late; also how long to wait at the end.
    pub timeout: Duration,
    /// NIC queues (one thread each; over kernel sockets only their count
    /// matters).
    pub queues: Vec<u32>,
    /// CPUs to pin the threads to, in queue order.
    pub cpus: Vec<usize>,
    /// XDP attach mode.
    pub xdp_mode: AttachMode,
    /// AF_XDP bind mode.
    pub bind_mode: BindMode,
    /// NTP version of the requests.
    pub version: u8,
    /// The target reflects requests (`--reflector`): see
    /// `check::Expect::echo`.
    pub echo: bool,
    /// Interleaved requests (ping mode): see `engine::EngineConfig::xleave`.
    pub xleave: bool,
    /// Print a live progress line (on a terminal).
    pub progress: bool,
}

/// One step's merged results.
#[derive(Clone, Debug)]
pub struct StepResult {
    /// Asked-for rate (requests/s), 0 for ping.
    pub target_rate: f64,
    /// When the step started (Unix seconds).
    pub start_unix_s: f64,
    /// Length of the step (s).
    pub seconds: f64,
    /// What happened.
    pub tally: Tally,
}

impl StepResult {
    /// Requests actually sent per second.
    pub fn sent_rate(&self) -> f64 {
        self.tally.sent as f64 / self.seconds.max(1e-9)
    }

    /// Valid answers (good) per second.
    pub fn good_rate(&self) -> f64 {
        self.tally.good as f64 / self.seconds.max(1e-9)
    }

    /// Fraction of sent requests without a good reply.
    pub fn loss(&self) -> f64 {
        if self.tally.sent == 0 {
            0.0
        } else {
            1.0 - self.tally.good as f64 / self.tally.sent as f64
        }
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Per step.
    pub steps: Vec<StepResult>,
    /// Everything.
    pub total: Tally,
    /// How the generator sent and received.
    pub datapath: Datapath,
    /// The server's MAC used (AF_XDP only).
    pub server_mac: Option<[u8; 6]>,
    /// XDP attach mode used (AF_XDP only).
    pub xdp_mode: Option<String>,
    /// Kernel UDP sockets (client identities) over all threads; 0 over
    /// AF_XDP.
    pub sockets: usize,
    /// Queues (threads).
    pub queues: Vec<u32>,
    /// Frames the XDP program passed to the kernel for lack of a socket
    /// (replies that arrived on a queue without a generator thread).
    pub no_socket: u64,
    /// Replies the kernel could not hand to the generator: over AF_XDP
    /// the RX ring was full or no frame free, over kernel sockets a
    /// socket's receive buffer was full (`SO_RXQ_OVFL`). Non-zero means
    /// the generator, not the server, lost them.
    pub generator_rx_dropped: u64,
}

/// The interface's address of the server's family: the default source.
fn own_address(iface: &str, server: IpAddr) -> anyhow::Result<IpAddr> {
    let local = netif::addresses(Some(iface))?;
    let found = match server {
        IpAddr::V4(_) => local.v4.first().map(|a| IpAddr::V4(a.addr())),
        IpAddr::V6(_) => local
            .v6
            .iter()
            .find(|a| !a.addr().is_unicast_link_local())
            .map(|a| IpAddr::V6(a.addr())),
    };
    found.with_context(|| {
        format!("{iface} has no address of the server's family: add one or pass --sources")
    })
}

/// Learns the MAC that the server's replies come from: one NTP request
/// through the kernel's UDP stack, whose reply the XDP program then hands
/// to one of our AF_XDP sockets, Ethernet header and all. Proves on the
/// way that the server answers at all.
fn probe_mac(
    queues: &mut [XskQueue],
    server: SocketAddr,
    version: u8,
    accept_partial_checksum: bool,
    echo: bool,
) -> anyhow::Result<[u8; 6]> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind).context("opening the probe socket")?;
    let nonce = NtpTimestamp::from_bits(fastrand::u64(..) | 1 << 63);
    let mut req = [0u8; crate::proto::ntp::HEADER_LEN];
    if let Some(mut p) = crate::proto::ntp::Packet::new_checked(&mut req[..]) {
        p.set_li_vn_mode(Leap::None, version, Mode::Client);
        p.set_transmit(nonce);
    }
    let expect = Expect {
        server: server.ip(),
        port: server.port(),
        version,
        accept_partial_checksum,
        echo,
        xleave: false,
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_send {
            sock.send_to(&req, server)
                .with_context(|| format!("sending the probe to {server}"))?;
            next_send = Instant::now() + Duration::from_millis(500);
        }
        for q in queues.iter_mut() {
            q.recycle();
            q.wait(Duration::from_millis(20));
            q.receive();
            let mut found = None;
            q.consume(|frame| {
                // The same checks as every reply of the run.
                let answered =
                    check::parse_reply(frame.bytes(), &expect).is_ok_and(|r| r.origin == nonce);
                if let (true, Ok(f)) = (answered, Frame::new_checked(frame.bytes())) {
                    found.get_or_insert(f.src());
                }
            });
            if let Some(mac) = found {
                return Ok(mac);
            }
        }
    }
    bail!(
        "the server {server} did not answer a probe within 3 s, so its MAC address is unknown: \
         check that it runs and is reachable, or pass --mac"
    )
}

/// One generator thread's I/O.
#[expect(
    clippy::large_enum_variant,
    reason = "one per thread, moved a few times per run"
)]
enum ThreadIo {
    Xdp(XskQueue),
    Socket(ClientSockets),
}

impl ThreadIo {
    /// Runs the thread's generator loop (see `load::xsk_thread`, `load::udp_thread`).
    fn run(
        self,
        e: Engine,
        s: &Schedule,
        live: &Arc<Live>,
        stop: &AtomicBool,
    ) -> (ThreadIo, Vec<Tally>) {
        match self {
            ThreadIo::Xdp(q) => {
                let (q, t) = load_xdp::run(q, e, s, &SystemClock, live, stop);
                (ThreadIo::Xdp(q), t)
            }
            ThreadIo::Socket(k) => {
                let (k, t) = load_socket::run(k, e, s, &SystemClock, live, stop);
                (ThreadIo::Socket(k), t)
            }
        }
    }

    /// Replies the generator itself dropped on this thread.
    fn rx_dropped(&self) -> u64 {
        match self {
            ThreadIo::Xdp(q) => q
                .kernel_stats()
                .map_or(0, |st| st.rx_dropped + st.rx_ring_full),
            ThreadIo::Socket(k) => k.rx_dropped(),
        }
    }
}

/// What a datapath's set-up hands to the common part of [`run`].
struct Setup {
    ios: Vec<ThreadIo>,
    target: Target,
    sources: Prefix,
    server_mac: Option<[u8; 6]>,
    /// The attached XDP program (kept until the end) and its mode.
    xdp: Option<(ClientProgram, String)>,
    tai_offset_s: i32,
    sockets: usize,
    /// Replies may carry a UDP checksum left partial by the server's stack:
    /// the generator's interface is a veth.
    partial_checksums: bool,
}

/// AF_XDP: the XDP program, one AF_XDP socket per queue, the server's MAC.
fn setup_xdp(cfg: &LoadConfig) -> anyhow::Result<Setup> {
    let Some(iface) = cfg.iface.as_deref() else {
        bail!("--datapath xdp needs --iface");
    };
    let ifindex = netif::ifindex(iface)?;
    let src_mac = netif::mac(iface)?;
    let sources = match cfg.sources {
        Some(p) => p,
        None => super::spec::parse_prefix(&own_address(iface, cfg.server.ip())?.to_string())
            .map_err(anyhow::Error::msg)?,
    };
    if sources.addr.is_ipv4() != cfg.server.is_ipv4() {
        bail!(
            "--sources {sources} and the server {} are of different address families",
            cfg.server.ip()
        );
    }
    let mut prog = ClientProgram::load(ClientProgramKind::Redirect, cfg.server.port())?;
    let mode = prog.attach(ifindex, cfg.xdp_mode)?;
    let opts = QueueOptions {
        frames: 8192,
        ring_size: 2048,
        bind_mode: cfg.bind_mode,
        busy_poll_budget: 0,
        tx_timestamps: false,
    };
    let mut queues = Vec::new();
    for &q in &cfg.queues {
        let xq = XskQueue::open(ifindex, q, &opts)?;
        prog.register_socket(q, xq.fd())?;
        queues.push(xq);
    }
    // A veth hands over what its peer's stack sent: with the kernel's
    // default offloads, checksums left for hardware that is not there.
    let partial_checksums = netif::is_veth(iface);
    let server_mac = match cfg.mac {
        Some(m) => m,
        None => probe_mac(
            &mut queues,
            cfg.server,
            cfg.version,
            partial_checksums,
            cfg.echo,
        )?,
    };
    let tai_offset_s = SystemKernelClock.discipline().map_or(0, |d| d.tai_offset_s);
    Ok(Setup {
        ios: queues.into_iter().map(ThreadIo::Xdp).collect(),
        target: Target {
            src_mac,
            dst_mac: server_mac,
            addr: cfg.server.ip(),
            port: cfg.server.port(),
            version: cfg.version,
        },
        sources,
        server_mac: Some(server_mac),
        xdp: Some((prog, mode.to_string())),
        tai_offset_s,
        sockets: 0,
        partial_checksums,
    })
}

/// Kernel sockets: `per_thread` connected UDP sockets for each thread.
fn setup_socket(cfg: &LoadConfig, per_thread: usize) -> anyhow::Result<Setup> {
    if let Some(p) = cfg.sources {
        bail!(
            "--sources {p} needs --datapath xdp: kernel sockets send only from addresses \
             configured on this host"
        );
    }
    if per_thread * cfg.queues.len() > load_socket::MAX_PING_SOCKETS {
        bail!(
            "--datapath socket opens one socket per --ping client: at most {}",
            load_socket::MAX_PING_SOCKETS
        );
    }
    // Every socket is a file (plus an epoll set per thread).
    load_socket::raise_fd_limit((per_thread * cfg.queues.len()) as u64 + 256);
    let mut ios = Vec::new();
    for _ in &cfg.queues {
        let socks =
            ClientSockets::open(cfg.server, per_thread, cfg.iface.as_deref()).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EMFILE) {
                    " (raise the open-file limit, ulimit -n, or use fewer --ping clients)"
                } else {
                    ""
                };
                anyhow::anyhow!(
                    "opening {per_thread} UDP sockets to {}{}: {e}{hint}",
                    cfg.server,
                    cfg.iface
                        .as_deref()
                        .map_or(String::new(), |i| format!(" on {i}"))
                )
            })?;
        ios.push(ThreadIo::Socket(socks));
    }
    let local = match ios.first() {
        Some(ThreadIo::Socket(k)) => k.local_ip(),
        _ => bail!("use 1 to {MAX_THREADS} queues"),
    };
    Ok(Setup {
        ios,
        target: Target {
            // The kernel writes the headers: no MACs needed.
            src_mac: [0; 6],
            dst_mac: [0; 6],
            addr: cfg.server.ip(),
            port: cfg.server.port(),
            version: cfg.version,
        },
        // Unused by the socket datapath (each socket is its own identity);
        // the engine wants a prefix of the server's family.
        sources: super::spec::parse_prefix(&local.to_string()).map_err(anyhow::Error::msg)?,
        server_mac: None,
        xdp: None,
        tai_offset_s: 0,
        sockets: per_thread * cfg.queues.len(),
        // The kernel checks the checksums of what reaches a socket.
        partial_checksums: false,
    })
}

/// Each thread's rates (steps) and, in ping mode, its clients and gap.
fn split_plan(plan: &Plan, threads: usize) -> (Vec<f64>, Option<(usize, u64)>) {
    match plan {
        Plan::Rates(r) => (
            r.iter().map(|r| r / threads as f64).collect::<Vec<_>>(),
            None,
        ),
        Plan::Ping { clients, gap } => (
            vec![0.0],
            Some(((clients / threads).max(1), gap.as_nanos() as u64)),
        ),
    }
}

/// Runs a load test; see the module docs.
pub fn run(cfg: &LoadConfig, stop: &Arc<AtomicBool>) -> anyhow::Result<LoadResult> {
    if cfg.queues.is_empty() || cfg.queues.len() > MAX_THREADS {
        bail!("use 1 to {MAX_THREADS} queues");
    }
    let threads = cfg.queues.len();
    let (rates, ping) = split_plan(&cfg.plan, threads);
    let Setup {
        mut ios,
        target,
        sources,
        server_mac,
        xdp,
        tai_offset_s,
        sockets,
        partial_checksums,
    } = match cfg.datapath {
        Datapath::Xdp => setup_xdp(cfg)?,
        Datapath::Socket => setup_socket(
            cfg,
            ping.map_or(load_socket::SOCKETS_PER_THREAD, |(n, _)| n),
        )?,
    };
    let max_rate = rates.iter().cloned().fold(0.0, f64::max);
    let clock = SystemClock;
    let schedule = Schedule {
        start_ns: clock.now_unix_nanos() + 50_000_000,
        step_ns: cfg.step.as_nanos() as u64,
        rates: rates.clone(),
        ping: ping.is_some(),
        // Twice the timeout: replies a little late are counted as late,
        // not lost.
        drain_ns: 2 * cfg.timeout.as_nanos() as u64,
        cpu: None,
        tai_offset_s,
    };
    let lives: Vec<Arc<Live>> = (0..threads).map(|_| Arc::new(Live::default())).collect();
    let seed = fastrand::u64(..);
    let results = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (i, io) in ios.drain(..).enumerate() {
            let engine = Engine::new(&EngineConfig {
                target,
                sources,
                timeout_ns: cfg.timeout.as_nanos() as u64,
                slot_bits: slot_bits_for(max_rate, cfg.timeout.as_secs_f64()),
                thread: i,
                seed: seed.wrapping_add(i as u64),
                ping,
                accept_partial_checksum: partial_checksums,
                echo: cfg.echo,
                xleave: cfg.xleave,
            });
            let s = Schedule {
                cpu: cfg.cpus.get(i).copied(),
                ..schedule.clone()
            };
            let live = lives[i].clone();
            let stop: &AtomicBool = stop;
            let h = std::thread::Builder::new()
                .name(format!("ntpx-load-{i}"))
                .spawn_scoped(scope, move || io.run(engine, &s, &live, stop))
                .context("starting a generator thread")?;
            handles.push(h);
        }
        let stopped_at = progress_loop(cfg, &schedule, &lives, &handles, stop);
        let mut out = Vec::new();
        for h in handles {
            out.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a generator thread panicked"))?,
            );
        }
        Ok::<_, anyhow::Error>((out, stopped_at))
    });
    let (results, stopped_at) = results?;
    let no_socket = xdp
        .as_ref()
        .map_or(0, |(p, _)| p.counters().map_or(0, |c| c.no_socket));
    let generator_rx_dropped = results.iter().map(|(io, _)| io.rx_dropped()).sum();
    let xdp_mode = xdp.map(|(prog, mode)| {
        drop(prog);
        mode
    });
    // A run stopped early has a short last step and empty ones after it.
    let sending_end = stopped_at
        .unwrap_or(schedule.end_ns())
        .min(schedule.end_ns());
    let mut steps: Vec<StepResult> = rates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let from = schedule.start_ns + i as u64 * schedule.step_ns;
            let ns = sending_end.saturating_sub(from).min(schedule.step_ns);
            StepResult {
                target_rate: if ping.is_some() {
                    0.0
                } else {
                    r * threads as f64
                },
                start_unix_s: from as f64 / 1e9,
                seconds: ns as f64 / 1e9,
                tally: Tally::default(),
            }
        })
        .collect();
    for (_q, tallies) in &results {
        for (s, t) in steps.iter_mut().zip(tallies) {
            s.tally.add(t);
        }
    }
    let mut total = Tally::default();
    for s in &steps {
        total.add(&s.tally);
    }
    Ok(LoadResult {
        steps,
        total,
        datapath: cfg.datapath,
        server_mac,
        xdp_mode,
        sockets,
        queues: cfg.queues.clone(),
        no_socket,
        generator_rx_dropped,
    })
}

/// Prints the progress line about once a second until every thread is
/// done; returns when sending was stopped early (Unix ns), if it was.
fn progress_loop<T>(
    cfg: &LoadConfig,
    schedule: &Schedule,
    lives: &[Arc<Live>],
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    stop: &AtomicBool,
) -> Option<u64> {
    let tty = cfg.progress && std::io::stderr().is_terminal();
    let steps = schedule.rates.len();
    let mut stopped_at = None;
    let mut last = (Instant::now(), Live::view(lives));
    let mut printed = false;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if stopped_at.is_none() && stop.load(Relaxed) {
            stopped_at = Some(SystemClock.now_unix_nanos());
        }
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64();
        if !tty || secs < 1.0 {
            continue;
        }
        let v = Live::view(lives);
        let sent = (v.sent - last.1.sent) as f64 / secs;
        let answered = (v.answered - last.1.answered) as f64 / secs;
        let loss = if sent > 0.0 {
            (1.0 - answered / sent).max(0.0) * 100.0
        } else {
            0.0
        };
        let step = (v.step as usize + 1).min(steps);
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[2Kstep {step}/{steps}  sent {}/s  answered {}/s  loss {loss:.2}%  rejected {}  rtt p99 {}",
            fmt_rate(sent),
            fmt_rate(answered),
            v.rejected,
            fmt_ns(v.rtt_p99),
        );
        printed = true;
        last = (now, v);
    }
    if printed {
        let _ = writeln!(std::io::stderr());
    }
    stopped_at
}
