//! `ntpx serve`: set up the datapath, run the workers, refresh the clock
//! state and print stats until SIGINT/SIGTERM (or `--duration`), then shut
//! down cleanly: stop redirecting, join the workers, detach the program.
//! Meanwhile the stats socket (`crate::server::stats_socket`) answers `ntpx stats`.

use super::control::{
    DriverTxErrors, LogSetter, Reloader, Run, SocketKernelCounts, Upstreams, Watched,
    WorkerWatchdog, XdpKernelCounts, XdpLive, control_loop, upstream_summary,
};
use super::path::ReplyPath;
use crate::proto::ntp::Marker;
use crate::proto::respond::Responder;
use crate::server::config::{Datapath, HwTimestamps, Replies, Settings};
use crate::server::interleave::XleaveTable;
use crate::server::metrics::MetricsEndpoint;
use crate::server::policy_config::ReversePath;
use crate::server::probe::SelfProbe;
use crate::server::program::{MAX_ADDRS, MAX_OWN, ProgramConfig, XdpMode, XdpProgram};
use crate::server::state::SharedState;
use crate::server::stats::{Collector, Published, Totals};
use crate::server::stats_socket::StatsSocket;
use crate::server::worker::{self, WorkerCtx};
use crate::sys::BATCH;
use crate::sys::bpf::AttachMode;
use crate::sys::clock::{self, Clock as _, SystemClock, SystemKernelClock};
use crate::sys::netif;
use crate::sys::udp_server::{BatchSocket, BindError};
use crate::sys::xsk::{QueueOptions, XskQueue};
use anyhow::{Context, bail};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use super::control::RunOptions;

fn cpu_for(settings: &Settings, worker: usize) -> Option<usize> {
    match &settings.cpus {
        Some(c) if !c.is_empty() => Some(c[worker % c.len()]),
        // By default spread the workers over the CPUs this process may use.
        _ => crate::sys::cpu::allowed().map(|ids| ids[worker % ids.len()]),
    }
}

/// The addresses to serve, checked: the configured ones, else the
/// interface's (loopback addresses left out), at most [`MAX_ADDRS`] of a
/// family.
fn served_addresses(
    settings: &Settings,
    local: &netif::Addresses,
) -> anyhow::Result<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)> {
    if !settings.v4.is_empty() || !settings.v6.is_empty() {
        return Ok((settings.v4.clone(), settings.v6.clone()));
    }
    let Some(iface) = &settings.interface else {
        bail!("no addresses to answer for: give --address (or [server] addresses)");
    };
    let v4: Vec<Ipv4Addr> = local
        .v4
        .iter()
        .map(|n| n.addr())
        .filter(|a| !a.is_loopback())
        .collect();
    let v6: Vec<Ipv6Addr> = local
        .v6
        .iter()
        .map(|n| n.addr())
        .filter(|a| !a.is_loopback())
        .collect();
    if v4.is_empty() && v6.is_empty() {
        bail!(
            "{iface} has no addresses to answer for (loopback addresses are never served): \
             add one, or give --address"
        );
    }
    for (family, n) in [(4, v4.len()), (6, v6.len())] {
        if n > MAX_ADDRS {
            bail!(
                "{iface} has {n} IPv{family} addresses, and ntpx serves at most {MAX_ADDRS} of a \
                 family: choose the ones to serve with --address (or [server] addresses)"
            );
        }
    }
    Ok((v4, v6))
}

/// A random key for the interleaved-mode marks, from the OS's entropy:
/// std's `RandomState` is seeded from it (getrandom), which spares a
/// dependency for two words read once at start.
fn random_key() -> [u64; 2] {
    use std::hash::{BuildHasher, Hasher};
    let word = |i: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.finish()
    };
    [word(0), word(1)]
}

/// The responder's view of this host: the interface's MAC, the served
/// addresses, the host's own addresses and prefixes (the interface's for
/// the XDP datapath, every interface's for the socket datapath, whose
/// socket listens on all of them), and the reply policy.
fn responder_for(settings: &Settings, precision: i8) -> anyhow::Result<Responder> {
    let iface = settings.interface.as_deref();
    if let Some(iface) = iface {
        netif::ifindex(iface)?;
    }
    let (mac, local) = match (settings.datapath, iface) {
        (Datapath::Xdp, Some(iface)) => (netif::mac(iface)?, netif::addresses(Some(iface))?),
        (Datapath::Xdp, None) => bail!("the xdp datapath needs --iface"),
        // The kernel addresses the socket datapath's frames.
        (Datapath::Socket, _) => ([0; 6], netif::addresses(None)?),
    };
    let served_from = match (settings.datapath, iface) {
        (Datapath::Socket, Some(iface)) => netif::addresses(Some(iface))?,
        _ => local.clone(),
    };
    let (v4, v6) = served_addresses(settings, &served_from)?;
    let mut cfg = Responder::new(mac, v4, v6);
    cfg.add_local_prefixes(&local.v4, &local.v6);
    cfg.port = settings.port;
    cfg.drop_loop_ports = settings.drop_loop_ports;
    cfg.policy = crate::proto::ntp::ReplyPolicy {
        min_poll: settings.min_poll,
        drop_unsynchronized: settings.drop_unsynchronized,
    };
    if let (Datapath::Xdp, Some(iface)) = (settings.datapath, iface)
        && netif::is_veth(iface)
    {
        // A veth's peer hands over its stack's frames unfinished when it
        // offloads checksums (the default): see README, "Checksums on a veth".
        cfg.accept_partial_checksum = true;
        tracing::info!(
            interface = iface,
            "veth: accepting UDP checksums left partial by the peer's offload (counted as partial_checksum)"
        );
    }
    if settings.interleave_slots > 0 {
        cfg.interleave = Some(Marker::new(random_key(), precision));
    }
    Ok(cfg)
}

/// Runs the server until signalled. Returns the final totals.
pub fn run(
    mut settings: Settings,
    opts: RunOptions,
    reload: Option<Reloader>,
    log: Option<LogSetter>,
) -> anyhow::Result<Totals> {
    let start = Instant::now();
    if let Some(set) = &log {
        set(&settings.log_level)?;
    }
    let configured = settings.clone();
    let precision = clock::measure_precision(&SystemClock);
    let responder = Arc::new(responder_for(&settings, precision)?);
    settings.v4.clone_from(&responder.v4);
    settings.v6.clone_from(&responder.v6);
    // Bound before anything else is set up, so that a second server fails
    // early; removed again on every way out (the guard's Drop).
    let stats_socket = settings
        .stats_socket
        .as_deref()
        .map(StatsSocket::bind)
        .transpose()?;
    let metrics = settings.metrics.map(MetricsEndpoint::bind).transpose()?;
    let leap_list = settings
        .leap_seconds_list
        .as_deref()
        .map(clock::LeapList::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("leap_seconds_list: {e}"))?;
    if let Some(l) = &leap_list
        && l.expired(SystemClock.now_unix_nanos())
    {
        tracing::warn!(
            "leap_seconds_list has expired: a leap second announced since may be missed (update tzdata)"
        );
    }
    let state = Arc::new(
        SharedState::new(settings.clock, precision, &SystemKernelClock, &SystemClock)
            .context("reading the kernel clock state (adjtimex)")?
            .with_leap_list(leap_list),
    );
    // Drained before the first reply, if the drain file says so (a
    // drained server that restarts stays drained).
    if let Some(f) = &settings.drain_file {
        let d = match crate::server::drain::read(f) {
            Ok(Ok(d)) => d,
            Ok(Err(_)) | Err(_) => crate::server::state::Drain::Unsync,
        };
        if d != crate::server::state::Drain::Off {
            tracing::warn!(
                mode = d.name(),
                "starting drained (the drain file is there)"
            );
            state.set_drain(d);
        }
    }
    // The daemon's state before the first reply, not only the kernel's.
    Upstreams::default().refresh(&state, &settings);
    let snap = state.load();
    tracing::info!(
        leap = ?snap.ntp.leap, stratum = snap.ntp.stratum, precision, source = ?settings.clock.source,
        "clock state"
    );
    if snap.ntp.leap == crate::proto::ntp::Leap::Unsynchronized {
        tracing::warn!(
            "the kernel clock is not synchronised: replies carry LI 3 / stratum 0 until a time daemon disciplines it"
        );
    }
    let running = Arc::new(AtomicBool::new(true));
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone()).context("installing signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing signal handlers")?;
    let xleave = (settings.interleave_slots > 0)
        .then(|| Arc::new(XleaveTable::new(settings.interleave_slots)));
    let limiter = (settings.datapath == Datapath::Socket).then(|| {
        Arc::new(crate::server::limiter::Limiter::new(
            settings.policy.clone(),
        ))
    });
    let ctx = |published: Arc<Published>, cpu| WorkerCtx {
        xleave: xleave.clone(),
        limiter: limiter.clone(),
        responder: responder.clone(),
        state: state.clone(),
        running: running.clone(),
        published,
        clock: SystemClock,
        cpu,
        max_residence_ns: settings.max_residence_us.saturating_mul(1000),
        spin: Duration::from_micros(settings.spin_us),
        self_probe: None,
    };
    let run = Run {
        settings: &settings,
        opts,
        state: &state,
        term: &term,
        running: &running,
        start,
        stats_socket: Cell::new(stats_socket),
        metrics: Cell::new(metrics),
        hup: &hup,
        reload,
        configured,
        limiter: limiter.clone(),
        log,
        failure: Cell::new(None),
    };
    match settings.datapath {
        Datapath::Xdp => run_xdp(&run, &responder, ctx),
        Datapath::Socket => run_socket(&run, &responder, ctx),
    }
}

fn run_xdp(
    run: &Run,
    responder: &Responder,
    ctx: impl Fn(Arc<Published>, Option<usize>) -> WorkerCtx<SystemClock>,
) -> anyhow::Result<Totals> {
    let settings = run.settings;
    let iface = settings
        .interface
        .as_deref()
        .context("the xdp datapath needs --iface")?;
    let index = netif::ifindex(iface)?;
    let available = netif::rx_queue_count(iface)?;
    let queues: Vec<u32> = match &settings.queues {
        Some(q) => q.clone(),
        None => (0..available).collect(),
    };
    if let Some(bad) = queues.iter().find(|&&q| q >= available) {
        bail!(
            "{iface} has {available} RX queue(s), numbered 0 to {}: there is no queue {bad} \
             (see `ethtool -l {iface}`)",
            available - 1
        );
    }
    let mut program_cfg = ProgramConfig::for_responder(responder);
    if let Some(j) = program_cfg.judge.as_mut() {
        j.max_residence_ns = settings.max_residence_us.saturating_mul(1000);
    }
    program_cfg.policy = Some(settings.policy.clone());
    program_cfg.kernel_modes = settings.kernel_modes;
    // Never 0, which means no probe.
    program_cfg.probe_key = settings.self_probe.map_or(0, |_| random_key()[0] | 1);
    program_cfg.reverse_path = settings.reverse_path;
    if settings.reverse_path != ReversePath::Off {
        program_cfg.rp_uppers = reverse_path_uppers(iface, settings.reverse_path)?;
        let off = netif::lo_forwarding_off()?;
        if !off.is_empty() {
            bail!(
                "[access] reverse_path = \"{}\" needs forwarding on lo, and {} {} 0: the XDP \
                 program looks up the route back to each source with bpf_fib_lookup(), which \
                 refuses a device that does not forward. lo carries only this host's own \
                 packets, so this routes nothing. Set `sysctl -w {}` (and in /etc/sysctl.d to \
                 keep it), or reverse_path = \"off\"",
                settings.reverse_path.name(),
                off.join(" and "),
                if off.len() == 1 { "is" } else { "are" },
                off.iter()
                    .map(|s| format!("{s}=1"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    let judging = program_cfg.judge.is_some();
    if !judging && settings.replies == Replies::Xdp {
        bail!(
            "replies = xdp, but {iface}'s host has more own addresses than the XDP program can \
             judge against ({MAX_OWN} of a family): use replies = workers"
        );
    }
    // Hardware receive stamps: a device-bound program, if the NIC offers
    // them (auto falls back to the unbound one if it will not load).
    let plan = super::hw_rx::choose(settings, iface, index)?;
    program_cfg.hw_rx_ifindex = plan.as_ref().map(|_| index);
    let auto_hw = settings.hw_timestamps == HwTimestamps::Auto;
    let mut program = match XdpProgram::load(&program_cfg) {
        Err(e) if plan.is_some() && auto_hw => {
            tracing::warn!(error = %e, "the device-bound program did not load: no hardware receive stamps");
            program_cfg.hw_rx_ifindex = None;
            XdpProgram::load(&program_cfg)?
        }
        r => r?,
    };
    let qopts = QueueOptions {
        frames: settings.frames,
        ring_size: settings.ring_size,
        bind_mode: settings.bind_mode,
        busy_poll_budget: settings.busy_poll,
        tx_timestamps: settings.interleave_slots > 0,
    };
    // Sockets first, then the program: a queue without a socket falls back
    // to the kernel, so nothing is lost while this runs.
    let mut sockets = Vec::new();
    for &q in &queues {
        let xsk = XskQueue::open(index, q, &qopts)?;
        program.register_socket(q, xsk.fd())?;
        sockets.push(xsk);
    }
    // The state first (replies still go to the workers), then the program
    // on the interface, then the reply path, which may depend on the mode.
    // Before any reply can leave from XDP: what the driver counted earlier
    // is not ours.
    let driver = Arc::new(DriverTxErrors::new(iface));
    let mut live = XdpLive {
        counters: program.counters_reader()?,
        writer: program.state_writer()?,
        path: ReplyPath::new(Replies::Workers, judging, iface, index, XdpMode::Generic),
        driver: driver.clone(),
        driver_seen: 0,
        phc: None,
        rp_unchecked_seen: 0,
        rp_warned: None,
        policy: Some(program.policy_maps()?),
        talkers: talker_ring(&program),
        iface: iface.to_owned(),
        ifindex: index,
        queues: available,
        watchdog: None,
    };
    live.publish(run.state);
    // A device-bound program attaches natively or not at all.
    let bound = program_cfg.hw_rx_ifindex.is_some();
    let mode = match program.attach(
        index,
        if bound {
            AttachMode::Native
        } else {
            settings.xdp_mode
        },
    ) {
        Err(e) if bound && auto_hw => {
            tracing::warn!(error = %e, "the device-bound program did not attach natively: no hardware receive stamps");
            program_cfg.hw_rx_ifindex = None;
            program = XdpProgram::load(&program_cfg)?;
            for (&q, xsk) in queues.iter().zip(&sockets) {
                program.register_socket(q, xsk.fd())?;
            }
            live.counters = program.counters_reader()?;
            live.writer = program.state_writer()?;
            live.policy = Some(program.policy_maps()?);
            live.talkers = talker_ring(&program);
            live.publish(run.state);
            program.attach(index, settings.xdp_mode)?
        }
        r => r?,
    };
    if program_cfg.hw_rx_ifindex.is_some() {
        tracing::info!(
            interface = iface,
            "hardware receive stamps asked of the driver (device-bound program)"
        );
        live.phc = plan
            .and_then(|p| p.ptp)
            .map(|ptp| super::control::PhcFollower {
                sampler: crate::sys::clock::phc::PhcSampler::new(ptp),
                tracker: crate::sys::clock::phc::PhcTracker::new(),
                failures: 0,
            });
    }
    live.path = ReplyPath::new(settings.replies, judging, iface, index, mode);
    live.publish(run.state);
    tracing::info!(
        interface = iface, %mode, queues = ?queues,
        zerocopy = sockets.iter().all(XskQueue::is_zerocopy),
        addresses = ?addresses(settings), port = settings.port,
        "serving NTP over AF_XDP"
    );
    tracing::info!(
        in_xdp = live.path.in_xdp(),
        "plain requests answered {}: {}",
        if live.path.in_xdp() {
            "in XDP (XDP_TX)"
        } else {
            "by the AF_XDP workers"
        },
        live.path.why()
    );
    let kernel = XdpKernelCounts {
        program: program.counters_reader()?,
        clients: u64::from(crate::server::xdp_policy::client_table_size(
            &settings.policy,
        )),
        sockets: sockets
            .iter()
            .map(XskQueue::stats_reader)
            .collect::<Result<_, _>>()
            .context("duplicating an AF_XDP socket for its counters")?,
        driver,
    };
    let mut published = Vec::new();
    let mut handles = Vec::new();
    let mut watched = Vec::new();
    for (i, xsk) in sockets.into_iter().enumerate() {
        let p = Arc::new(Published::named(format!("q{}", xsk.queue())));
        published.push(p.clone());
        watched.push(Watched {
            socket: xsk
                .stats_reader()
                .context("duplicating an AF_XDP socket for the watchdog")?,
            published: p.clone(),
            last_beat: 0,
            since: Instant::now(),
            off: false,
        });
        let c = ctx(p, cpu_for(settings, i));
        let h = std::thread::Builder::new()
            .name(format!("ntpx-q{}", xsk.queue()))
            .spawn(move || worker::xsk_loop::run(xsk, c))
            .context("spawning a worker")?;
        handles.push(h);
    }
    live.watchdog = Some(WorkerWatchdog {
        map: program.xsk_map()?,
        workers: watched,
    });
    let counts = Arc::new(Collector::new(published, Some(Box::new(kernel))));
    let probe = match settings.self_probe {
        // Without the judge every request goes to the workers, the probe
        // too, and a test run does not carry out the redirect.
        Some(_) if !judging => {
            tracing::info!(
                "self-probe off: the program does not judge requests here (more own addresses or subnets than it holds)"
            );
            None
        }
        Some(_) if program_cfg.hw_rx_ifindex.is_some() => {
            tracing::info!(
                "self-probe off: a device-bound program (hardware receive stamps) cannot be test-run"
            );
            None
        }
        Some(every) => {
            let p = SelfProbe::xdp(program.prober(program_cfg.probe_key)?, responder, every);
            if p.is_none() {
                tracing::warn!("self-probe off: no served address to probe");
            }
            p
        }
        None => None,
    };
    let control_summary = control_loop(run, &counts, Some(live), probe);
    run.running.store(false, Ordering::Relaxed);
    // Stop redirecting before the sockets close.
    let _ = program.detach();
    let mut socket_stats = Vec::new();
    for h in handles {
        match h.join() {
            Ok(q) => {
                let _ = program.unregister_socket(q.queue());
                socket_stats.push((q.queue(), q.kernel_stats()));
            }
            Err(_) => tracing::error!("a worker panicked"),
        }
    }
    let totals = counts.totals();
    let mut out = totals.summary();
    out.push_str(&upstream_summary(run));
    out.push_str(&control_summary);
    if let Ok(c) = program.counters() {
        out.push_str("XDP program:");
        for (name, v) in c.fields() {
            if v > 0 {
                out.push_str(&format!(" {name}={v}"));
            }
        }
        out.push('\n');
    }
    if let Some(r) = crate::sys::bpf::run_stats(program.id()).filter(|r| r.runs > 0) {
        out.push_str(&format!("XDP program run time: {r}\n"));
    }
    for (q, s) in socket_stats {
        if let Some(s) = s {
            out.push_str(&format!(
                "AF_XDP queue {q}: rx_dropped={} rx_ring_full={} fill_ring_empty={} tx_invalid={} tx_ring_empty={}\n",
                s.rx_dropped, s.rx_ring_full, s.rx_fill_ring_empty_descs, s.tx_invalid_descs, s.tx_ring_empty_descs
            ));
        }
    }
    println!("{out}");
    if let Some(why) = run.failure.take() {
        bail!(why);
    }
    Ok(totals)
}

fn run_socket(
    run: &Run,
    responder: &Responder,
    ctx: impl Fn(Arc<Published>, Option<usize>) -> WorkerCtx<SystemClock>,
) -> anyhow::Result<Totals> {
    let settings = run.settings;
    let n = settings
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let sockets = BatchSocket::bind_shared(settings.port, n, BATCH, Duration::from_millis(100))
        .map_err(|e| match e {
            BindError::InUse { .. } => anyhow::anyhow!(
                "{e}: stop it first (with --datapath xdp, ntpx leaves the kernel's port to \
                 the host's own daemon and needs no such thing)"
            ),
            BindError::Os { ref source, .. } if source.raw_os_error() == Some(libc::EACCES) => {
                anyhow::anyhow!("{e} (ports below 1024 need root or CAP_NET_BIND_SERVICE)")
            }
            e => anyhow::Error::new(e),
        })?;
    let drops = sockets[0].drops_reader();
    // The self-probe, from this host to the first served address.
    let served = responder
        .v4
        .first()
        .map(|&a| IpAddr::V4(a))
        .or_else(|| responder.v6.first().map(|&a| IpAddr::V6(a)));
    let probe = match (settings.self_probe, served) {
        (Some(every), Some(to)) => Some(
            SelfProbe::socket(SocketAddr::new(to, settings.port), every)
                .context("the self-probe's socket")?,
        ),
        (Some(_), None) => {
            tracing::warn!("self-probe off: no served address to probe");
            None
        }
        (None, _) => None,
    };
    let probe_from = probe.as_ref().and_then(SelfProbe::local_addr);
    let mut published = Vec::new();
    let mut handles = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let p = Arc::new(Published::named(format!("s{i}")));
        published.push(p.clone());
        let mut c = ctx(p, cpu_for(settings, i));
        c.self_probe = probe_from;
        handles.push(
            std::thread::Builder::new()
                .name(format!("ntpx-s{i}"))
                .spawn(move || worker::udp_loop::run(sock, c))
                .context("spawning a worker")?,
        );
    }
    tracing::info!(workers = n, addresses = ?addresses(settings), port = settings.port, "serving NTP over kernel UDP sockets");
    let counts = Arc::new(Collector::new(
        published,
        Some(Box::new(SocketKernelCounts(drops, run.limiter.clone()))),
    ));
    control_loop(run, &counts, None, probe);
    run.running.store(false, Ordering::Relaxed);
    for h in handles {
        if h.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    let totals = counts.totals();
    println!("{}{}", totals.summary(), upstream_summary(run));
    Ok(totals)
}

/// The program's ring of top-talker samples, or none (logged: the server
/// serves without them).
fn talker_ring(program: &XdpProgram) -> Option<crate::server::talkers::TalkerRing> {
    let ring = program
        .talker_ring()
        .map_err(anyhow::Error::new)
        .and_then(|m| crate::server::talkers::TalkerRing::new(m).map_err(anyhow::Error::new));
    match ring {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "top talkers off: their ring cannot be read");
            None
        }
    }
}

/// The devices stacked on `iface` whose routes the strict reverse-path
/// check accepts as the way back; refuses an interface in a VRF, whose
/// table a lookup from lo would not use.
fn reverse_path_uppers(iface: &str, mode: ReversePath) -> anyhow::Result<Vec<u32>> {
    let stacked = netif::stacked_devices(iface, crate::server::program::RP_UPPERS)
        .with_context(|| format!("[access] reverse_path: the devices stacked on {iface}"))?;
    if let Some((vrf, _)) = stacked
        .iter()
        .find(|(name, _)| netif::driver(name).is_ok_and(|d| d == "vrf"))
    {
        bail!(
            "[access] reverse_path: {iface} is in the VRF {vrf}, whose routing table a lookup \
             from lo does not use: set reverse_path = \"off\" and use the kernel's rp_filter"
        );
    }
    if !stacked.is_empty() {
        tracing::info!(
            stacked = ?stacked.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "reverse_path: routes back through devices stacked on {iface} count as through {iface}"
        );
    }
    Ok(if mode == ReversePath::Strict {
        stacked.into_iter().map(|(_, i)| i).collect()
    } else {
        Vec::new()
    })
}

fn addresses(s: &Settings) -> Vec<IpAddr> {
    s.v4.iter()
        .map(|&a| IpAddr::V4(a))
        .chain(s.v6.iter().map(|&a| IpAddr::V6(a)))
        .collect()
}
