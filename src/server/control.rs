//! The control thread's loop while the workers serve: refreshes the
//! clock state every `refresh_s` (a second), logs a stats line every `stats_interval`,
//! serves the stats socket, and adds what the kernel counted (requests no
//! worker saw) to the workers' numbers.

use super::config::Settings;
use super::metrics::MetricsEndpoint;
use super::path::ReplyPath;
use super::program::{CountersReader, StateWriter, XdpState, hist_bucket_range};
use super::state::{SharedState, Source, Upstream};
use super::stats::{Collector, KernelCounts, Published, TableFill, Totals};
use super::stats_socket::StatsSocket;
use crate::proto::drops::DropReason;
use crate::server::limiter::PolicyCounts;
use crate::sys::clock::chrony::ChronyClient;
use crate::sys::clock::ntp_query::NtpQuery;
use crate::sys::clock::phc::{PhcSampler, PhcTracker, SystemPtp};
use crate::sys::clock::{self, Clock, StampSource, SystemClock, SystemKernelClock};
use crate::sys::ethtool;
use crate::sys::notify;
use crate::sys::udp_server::SocketDrops;
use crate::sys::xsk::XskStatsReader;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

/// Runtime options that are not part of the config file.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop after this long (tests, demo).
    pub duration: Option<Duration>,
}

/// What both datapaths' set-up and shutdown share.
pub(super) struct Run<'a> {
    pub(super) settings: &'a Settings,
    pub(super) opts: RunOptions,
    pub(super) state: &'a Arc<SharedState>,
    /// Set by SIGINT/SIGTERM.
    pub(super) term: &'a AtomicBool,
    /// Cleared to stop the workers.
    pub(super) running: &'a AtomicBool,
    /// When `run` began (the stats socket's uptime).
    pub(super) start: Instant,
    /// The bound stats socket, taken by the control loop to serve it.
    pub(super) stats_socket: Cell<Option<StatsSocket>>,
    /// The bound metrics endpoint, taken by the control loop to serve it.
    pub(super) metrics: Cell<Option<MetricsEndpoint>>,
    /// Set by SIGHUP: reload the config.
    pub(super) hup: &'a AtomicBool,
    /// Reads the config again (the file, with the command line's flags
    /// over it), for a reload.
    pub(super) reload: Option<Reloader>,
    /// The settings as configured (before the interface's addresses were
    /// filled in), what a reload compares with.
    pub(super) configured: Settings,
    /// The socket datapath's policy, which a reload changes.
    pub(super) limiter: Option<Arc<crate::server::limiter::Limiter>>,
    /// The log filter's setter, which a reload uses.
    pub(super) log: Option<LogSetter>,
    /// Why the control loop stopped the server on its own, if it did.
    pub(super) failure: Cell<Option<String>>,
}

/// Reads the settings again, for a reload.
pub type Reloader = Box<dyn Fn() -> anyhow::Result<Settings> + Send>;

/// Sets the log filter (`log_level`), at the start and on a reload.
pub type LogSetter = Box<dyn Fn(&str) -> anyhow::Result<()> + Send>;

/// A reload (SIGHUP, `ntpx reload`): reads the config again and applies
/// what may change live, or refuses the whole of it with a message that
/// names what may not (the running config stays). True if anything was
/// applied.
fn reload(run: &Run, current: &mut Settings, xdp: Option<&mut XdpLive>) -> bool {
    let Some(read) = &run.reload else {
        tracing::warn!("reload asked for, but this server has no config to read again");
        return false;
    };
    notify::reloading();
    let result = read().and_then(|new| current.live_changes(&new).map(|c| (new, c)));
    let applied = match result {
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload refused: the running config stays");
            false
        }
        Ok((_, changed)) if changed.is_empty() => {
            tracing::info!("reload: nothing changed");
            false
        }
        Ok((new, changed)) => {
            let policy = new.policy != current.policy;
            let applied = if !policy {
                Ok(())
            } else if let Some(maps) = xdp.and_then(|x| x.policy.as_ref()) {
                maps.apply(Some(&current.policy), &new.policy)
                    .map_err(anyhow::Error::new)
            } else if let Some(l) = &run.limiter {
                l.set_policy(new.policy.clone())
            } else {
                Ok(())
            };
            let applied = applied.and_then(|()| match &run.log {
                Some(set) if new.log_level != current.log_level => set(&new.log_level),
                _ => Ok(()),
            });
            match applied {
                Ok(()) => {
                    run.state.set_config(new.clock);
                    tracing::info!(changed = ?changed, "reload: applied");
                    *current = new;
                    true
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload: could not be applied; the running config stays");
                    false
                }
            }
        }
    };
    notify::ready(&status_line(run.state, current.datapath));
    applied
}

/// The service manager's status line: serving, or draining.
fn status_line(state: &SharedState, datapath: crate::sys::Datapath) -> String {
    match state.drain() {
        crate::server::state::Drain::Off => {
            format!("serving NTP ({} datapath)", datapath.label())
        }
        d => format!("draining ({})", d.name()),
    }
}

/// What the kernel counted on the XDP datapath about requests no worker
/// saw: the program's replies (with their service times) and drops, and
/// each AF_XDP socket's ring drops.
pub(super) struct XdpKernelCounts {
    pub(super) program: CountersReader,
    /// Entries of the program's rate-limiter table.
    pub(super) clients: u64,
    pub(super) sockets: Vec<XskStatsReader>,
    pub(super) driver: Arc<DriverTxErrors>,
}

/// The driver's count of `XDP_TX` frames it dropped, since the start.
pub(super) struct DriverTxErrors {
    iface: String,
    /// The driver's count when we started (what it counted before is not
    /// ours); taken at the first good read.
    base: OnceLock<u64>,
    /// The highest count read so far: a failed read repeats it, so the
    /// totals never go back.
    last: AtomicU64,
}

impl DriverTxErrors {
    /// Starts counting on `iface`.
    pub(super) fn new(iface: &str) -> Self {
        let d = DriverTxErrors {
            iface: iface.to_owned(),
            base: OnceLock::new(),
            last: AtomicU64::new(0),
        };
        d.read();
        d
    }

    /// Dropped since the start.
    pub(super) fn read(&self) -> u64 {
        match ethtool::xdp_tx_errors(&self.iface) {
            Ok(now) => {
                let base = *self.base.get_or_init(|| now);
                let n = now.saturating_sub(base);
                self.last.fetch_max(n, Ordering::Relaxed).max(n)
            }
            Err(_) => self.last.load(Ordering::Relaxed),
        }
    }
}

impl KernelCounts for XdpKernelCounts {
    fn add_to(&self, t: &mut Totals) {
        if let Ok(c) = self.program.read() {
            t.add_kernel_replies(c.replied, c.replied_partial);
            // The kernel's LRU table is never emptied, only evicted from
            // once full: its fill is the clients entered, up to its size
            // (it may evict a little before, per CPU).
            t.tables.push(TableFill {
                name: "rate_limit_clients",
                entries: c.rl_new.min(self.clients),
                capacity: self.clients,
            });
            t.stamps[StampSource::Hardware as usize] += c.replied_hw;
            t.stamps[StampSource::Xdp as usize] += c.replied.saturating_sub(c.replied_hw);
            // Kiss-o'-Death replies sent from XDP: replies too.
            t.add_kernel_replies(c.kod_rate + c.kod_deny, 0);
            t.breakdown.xdp_replies = c.replied + c.kod_rate + c.kod_deny;
            t.breakdown.xdp_events = c.fields().to_vec();
            t.add_kernel(DropReason::Late, c.late);
            t.policy.add(PolicyCounts {
                kod_rate: c.kod_rate,
                kod_deny: c.kod_deny,
                limited: c.rl_limited,
                leaked: c.rl_leaked,
                limited_clients: c.rl_clients,
                speedups: c.rl_speedup,
                entered: c.rl_new,
                rp_unchecked: c.rp_unchecked,
            });
        }
        if let Ok(m) = self.program.client_mix() {
            t.clients.add(&m);
        }
        if let Ok(drops) = self.program.drops() {
            for (reason, n) in drops {
                t.add_kernel(reason, n);
            }
        }
        // After the replies: these are replies the driver dropped.
        t.add_driver_tx_errors(self.driver.read());
        if let Ok(buckets) = self.program.service_buckets() {
            for (b, n) in buckets {
                // The bucket's top: a service time is never understated.
                t.add_service(hist_bucket_range(b).1, n);
            }
        }
        // In copy mode rx_dropped counts the frames lost for an empty fill
        // ring; in zero-copy mode the driver drops those and counts them in
        // its own statistics (fill_ring_empty in the exit summary says
        // that it happened).
        for s in &self.sockets {
            if let Ok(k) = s.read() {
                t.add_kernel(DropReason::RxRingFull, k.rx_ring_full);
                t.add_kernel(DropReason::XskRxDropped, k.rx_dropped);
                t.breakdown.sockets.push((
                    s.queue(),
                    vec![
                        ("rx_dropped", k.rx_dropped),
                        ("rx_invalid_descs", k.rx_invalid_descs),
                        ("tx_invalid_descs", k.tx_invalid_descs),
                        ("rx_ring_full", k.rx_ring_full),
                        ("rx_fill_ring_empty_descs", k.rx_fill_ring_empty_descs),
                        ("tx_ring_empty_descs", k.tx_ring_empty_descs),
                    ],
                ));
            }
        }
    }
}

/// What the kernel dropped on the socket datapath's socket: requests that
/// no worker saw.
pub(super) struct SocketKernelCounts(
    pub(super) SocketDrops,
    pub(super) Option<Arc<crate::server::limiter::Limiter>>,
);

impl KernelCounts for SocketKernelCounts {
    fn add_to(&self, t: &mut Totals) {
        if let Some(n) = self.0.total() {
            t.add_kernel(DropReason::SocketKernelDrop, n);
        }
        if let Some(l) = &self.1 {
            let (entries, capacity) = l.fill();
            t.tables.push(TableFill {
                name: "rate_limit_clients",
                entries,
                capacity,
            });
        }
    }
}

/// The XDP program while it serves: the server state it answers with, and
/// where plain requests are answered.
pub(super) struct XdpLive {
    pub(super) counters: CountersReader,
    pub(super) writer: StateWriter,
    pub(super) path: ReplyPath,
    /// The driver's drops of `XDP_TX` frames (the same counter the totals
    /// read), and the last count seen.
    pub(super) driver: Arc<DriverTxErrors>,
    pub(super) driver_seen: u64,
    /// The NIC's clock, where hardware receive stamps are on: sampled at
    /// every publish, its mapping published with the state.
    pub(super) phc: Option<PhcFollower>,
    /// Requests the reverse-path check let through unchecked, as last
    /// seen, and when that was last warned about.
    pub(super) rp_unchecked_seen: u64,
    pub(super) rp_warned: Option<Instant>,
    /// The program's access lists and rate limits, which a reload changes.
    pub(super) policy: Option<crate::server::xdp_policy::PolicyMaps>,
    /// The program's ring of sampled sources (top talkers).
    pub(super) talkers: Option<crate::server::talkers::TalkerRing>,
    /// The interface served, its index and RX queue count at the start:
    /// watched, so that its disappearance ends the server with a message
    /// instead of leaving it serving nothing.
    pub(super) iface: String,
    pub(super) ifindex: u32,
    pub(super) queues: u32,
    /// Each worker's sign of life, and its queue's way back to it.
    pub(super) watchdog: Option<WorkerWatchdog>,
}

/// How long a worker may go without turning its loop (an idle one turns
/// it at least every 50 ms) before its queue is left to the kernel.
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// Watches the AF_XDP workers: one whose loop stops turning (stuck, or
/// starved of its CPU) has its socket taken out of the program's map, so
/// that its queue's requests go to the kernel (and a daemon there, such as
/// a chronyd behind ntpx, answers them); it is put back as soon as the
/// worker turns again.
pub(super) struct WorkerWatchdog {
    pub(super) map: crate::server::program::XskMap,
    pub(super) workers: Vec<Watched>,
}

/// One watched worker.
pub(super) struct Watched {
    pub(super) socket: XskStatsReader,
    pub(super) published: Arc<Published>,
    pub(super) last_beat: u64,
    pub(super) since: Instant,
    pub(super) off: bool,
}

impl WorkerWatchdog {
    /// Looks at every worker once.
    pub(super) fn check(&mut self) {
        for w in &mut self.workers {
            let q = w.socket.queue();
            let beat = w.published.beat();
            if beat != w.last_beat {
                w.last_beat = beat;
                w.since = Instant::now();
                if w.off {
                    match self.map.register(q, w.socket.raw_fd()) {
                        Ok(()) => {
                            w.off = false;
                            w.published.set_stalled(false);
                            tracing::warn!(
                                queue = q,
                                "the worker turns again: its queue is back on AF_XDP"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(queue = q, error = %e, "cannot give the queue back to its worker")
                        }
                    }
                }
            } else if !w.off && w.since.elapsed() >= STALL_AFTER {
                match self.map.unregister(q) {
                    Ok(()) => {
                        w.off = true;
                        w.published.set_stalled(true);
                        tracing::error!(
                            queue = q,
                            stalled_ms = w.since.elapsed().as_millis() as u64,
                            "a worker stopped making progress: its queue goes to the kernel until it recovers"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(queue = q, error = %e, "cannot take the queue from its stalled worker")
                    }
                }
            }
        }
    }
}

impl XdpLive {
    /// Checks that the interface is still the one the program is attached
    /// to; says so when its queue count changed. `Err`: why ntpx must stop.
    fn check_interface(&mut self) -> Result<(), String> {
        match crate::sys::netif::ifindex(&self.iface) {
            Ok(i) if i == self.ifindex => {}
            Ok(i) => {
                return Err(format!(
                    "{} was replaced (interface index {} is now {i}): the XDP program went with \
                     the old one; start ntpx again to serve the new one",
                    self.iface, self.ifindex
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{} disappeared: the XDP program went with it, nothing is served; ntpx stops",
                    self.iface
                ));
            }
        }
        if let Ok(n) = crate::sys::netif::rx_queue_count(&self.iface)
            && n != self.queues
        {
            tracing::warn!(
                interface = %self.iface,
                was = self.queues,
                now = n,
                "the interface's RX queue count changed: queues without a worker go to the kernel; \
                 restart ntpx to serve them all"
            );
            self.queues = n;
        }
        Ok(())
    }

    /// Says so, at most once a minute, when the reverse-path check lets
    /// requests through unchecked: its route lookups fail, most likely
    /// because forwarding on lo was reset (writing `net.ipv4.ip_forward`
    /// or `net.ipv6.conf.all.forwarding` sets every device's).
    fn warn_rp_unchecked(&mut self) {
        let Ok(n) = self.counters.read().map(|c| c.rp_unchecked) else {
            return;
        };
        if n > self.rp_unchecked_seen
            && self
                .rp_warned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!(
                unchecked = n - self.rp_unchecked_seen,
                "reverse_path: route lookups fail, requests pass unchecked (rp_unchecked); \
                 is forwarding on lo still 1 (net.ipv4.conf.lo.forwarding, \
                 net.ipv6.conf.lo.forwarding)? writing net.ipv4.ip_forward or \
                 net.ipv6.conf.all.forwarding resets it"
            );
            self.rp_unchecked_seen = n;
            self.rp_warned = Some(Instant::now());
        }
    }
}

/// Follows the NIC's clock (PHC) against the system clock.
pub(super) struct PhcFollower {
    pub(super) sampler: PhcSampler<SystemPtp>,
    pub(super) tracker: PhcTracker,
    /// Samples that failed (counted; the mapping ages out after 4 s).
    pub(super) failures: u64,
}

impl PhcFollower {
    /// One comparison, unless a leap second is near: the comparisons
    /// return UTC, which repeats a second then, and converting it with
    /// either offset would show the fit a one-second step.
    fn sample(&mut self, tai: &clock::TaiScale) {
        let now = clock::tai_now_ns();
        if tai.leap_tai_ns != 0 && now.abs_diff(tai.leap_tai_ns) < 2_000_000_000 {
            return;
        }
        match self.sampler.sample(tai.offset_at(now)) {
            Ok(s) => {
                self.tracker.add(s);
            }
            Err(e) => {
                if self.failures == 0 {
                    tracing::warn!(error = %e, "cannot compare the NIC's clock with the system clock: hardware receive stamps unused until it works");
                }
                self.failures += 1;
            }
        }
    }

    /// The summary line.
    pub(super) fn summary(&self) -> String {
        format!(
            "NIC clock: compared by {:?}, {} steps, {} samples rejected, {} failed\n",
            self.sampler.method(),
            self.tracker.steps,
            self.tracker.rejected,
            self.failures
        )
    }
}

impl XdpLive {
    /// Writes the current snapshot and reply path into the program's state
    /// map, stamped with the `CLOCK_TAI` time the snapshot was computed.
    pub(super) fn publish(&mut self, state: &SharedState) {
        let snap = state.load();
        if let Some(p) = self.phc.as_mut() {
            p.sample(&snap.tai);
        }
        let age = clock::SystemClock
            .now()
            .signed_nanos_since(snap.computed)
            .max(0) as u64;
        let tai = clock::tai_now_ns();
        if tai == 0 {
            // Written as "never": the program answers LI 3 until it works.
            tracing::warn!("cannot read CLOCK_TAI: replies from XDP say unsynchronised");
        }
        let s = XdpState {
            ntp: snap.ntp,
            tai: snap.tai,
            phc: self.phc.as_ref().and_then(|p| p.tracker.map()),
            written_tai_ns: tai.saturating_sub(age),
            max_age_ns: snap.max_age_ns,
            reply_in_xdp: self.path.in_xdp(),
            partial_to_workers: self.path.partial_to_workers(),
            draining: snap.drain == crate::server::state::Drain::Stop,
        };
        if let Err(e) = self.writer.publish(&s) {
            tracing::warn!(error = %e, "could not update the XDP program's server state");
        }
    }
}

/// The sockets that ask the time daemon (`source = "chrony"` or
/// `"ntp"`), made when first needed and again after a failure to make them
/// (e.g. /run not yet writable).
#[derive(Default)]
pub(super) struct Upstreams {
    chrony: Option<ChronyClient>,
    ntp: Option<NtpQuery>,
}

impl Upstreams {
    /// Refreshes `state` from the daemon the settings name, else (or while
    /// it is silent) from the kernel.
    pub(super) fn refresh(&mut self, state: &SharedState, settings: &Settings) {
        let source = settings.clock.source;
        if source == Source::Chrony && self.chrony.is_none() {
            // Under systemd, /run is read-only and /tmp private: the
            // service's own runtime directory is where chronyd can answer.
            let runtime = std::env::var_os("RUNTIME_DIRECTORY").map(std::path::PathBuf::from);
            self.chrony = runtime
                .map_or_else(
                    || Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
                    |d| ChronyClient::new(&settings.chrony_socket, &d),
                )
                .or_else(|_| {
                    ChronyClient::new(&settings.chrony_socket, std::path::Path::new("/run"))
                })
                .or_else(|_| ChronyClient::new(&settings.chrony_socket, &std::env::temp_dir()))
                .map_err(|e| tracing::warn!(error = %e, "cannot make a socket to ask chronyd"))
                .ok();
        }
        if source == Source::Ntp && self.ntp.is_none() {
            self.ntp = NtpQuery::new(settings.upstream_ntp)
                .map_err(
                    |e| tracing::warn!(error = %e, "cannot make a socket to ask the NTP daemon"),
                )
                .ok();
        }
        let upstream = match source {
            Source::Chrony => self.chrony.as_mut().map(|c| c as &mut dyn Upstream),
            Source::Ntp => self.ntp.as_mut().map(|c| c as &mut dyn Upstream),
            _ => None,
        };
        if let Err(e) = state.refresh_from(&SystemKernelClock, &SystemClock, upstream) {
            tracing::warn!(error = %e, "adjtimex failed; keeping the previous clock state");
        }
    }
}

/// The exit summary's line about the upstream daemon (`source = "chrony"`).
pub(super) fn upstream_summary(run: &Run) -> String {
    let daemon = match run.settings.clock.source {
        Source::Chrony => "chronyd".to_owned(),
        Source::Ntp => format!("the NTP daemon at {}", run.settings.upstream_ntp),
        _ => return String::new(),
    };
    let (ok, held, fallbacks) = run.state.upstream_counts();
    format!(
        "clock state: {ok} reports from {daemon}, {held} held over a missed one, \
         {fallbacks} from the kernel while it was silent\n"
    )
}

/// Refreshes the clock state every second and logs stats every
/// `stats_interval` seconds, until a signal or the duration ends.
/// Runs until asked to stop; returns the summary lines of what it kept
/// (the NIC clock's).
pub(super) fn control_loop(
    run: &Run,
    counts: &Arc<Collector>,
    mut xdp: Option<XdpLive>,
    mut probe: Option<crate::server::probe::SelfProbe>,
) -> String {
    let Run {
        settings,
        opts,
        state,
        term,
        ..
    } = *run;
    // Answers `ntpx stats` until this function returns (the guard's Drop
    // stops the thread and removes the socket).
    let _stats_server = run.stats_socket.take().and_then(|s| {
        let path = s.path().display().to_string();
        match s.serve(
            counts.clone(),
            Some(run.state.clone()),
            settings.datapath,
            run.start,
        ) {
            Ok(server) => {
                tracing::info!(path, "stats socket ready (ntpx stats)");
                Some(server)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "stats socket disabled");
                None
            }
        }
    });
    // Answers scrapes until this function returns.
    let _metrics_server = run.metrics.take().and_then(|m| {
        let addr = m.addr();
        match m.serve(
            counts.clone(),
            run.state.clone(),
            settings.datapath,
            run.start,
        ) {
            Ok(server) => {
                tracing::info!(%addr, "metrics endpoint ready (GET /metrics)");
                Some(server)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "metrics endpoint disabled");
                None
            }
        }
    });
    let start = Instant::now();
    // chronyd's command socket, with `source = "chrony"` (made again after
    // a failure, e.g. /run not yet writable).
    let mut upstreams = Upstreams::default();
    // The first refresh at once (`serve` made one before serving too);
    // a reload or a drain asks for one at once too.
    let mut last_state = Instant::now();
    let mut refresh_now = true;
    let mut last_stats = Instant::now();
    let mut prev = counts.totals();
    let mut drain = settings
        .drain_file
        .clone()
        .map(crate::server::drain::DrainWatch::new);
    // Everything serves from here on: tell a service manager (systemd's
    // Type=notify), and keep its watchdog fed while this loop turns (it
    // refreshes the state every reply carries: a stuck loop is a server
    // whose replies go stale).
    notify::ready(&status_line(state, settings.datapath));
    let mut watchdog = notify::Watchdog::from_env();
    if watchdog.enabled() {
        tracing::info!("feeding the service manager's watchdog");
    }
    let mut current = run.configured.clone();
    let mut talkers = crate::server::talkers::Talkers::default();
    let mut talkers_shown = Instant::now();
    while !term.load(Ordering::Relaxed) {
        watchdog.tick();
        if run.hup.swap(false, Ordering::Relaxed) && reload(run, &mut current, xdp.as_mut()) {
            // What changed shows in replies from the next refresh: now.
            refresh_now = true;
        }
        if let Some(w) = xdp.as_mut().and_then(|x| x.watchdog.as_mut()) {
            w.check();
        }
        if let Some(p) = probe.as_mut()
            && p.tick()
        {
            state.set_probe(p.status().clone());
        }
        if opts.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        counts.merge_histograms();
        // The top talkers' samples, from the program's ring or the
        // workers' queues; shown anew every second.
        if let Some(ring) = xdp.as_ref().and_then(|x| x.talkers.as_ref()) {
            ring.drain_into(&mut talkers);
        }
        counts.drain_talkers(|ip| talkers.sample(crate::server::talkers::prefix_of(ip)));
        let now = Instant::now();
        if talkers.rotate(now) || now.duration_since(talkers_shown) >= Duration::from_secs(1) {
            state.set_talkers(talkers.top(now));
            talkers_shown = now;
        }
        // A drain that changed is applied at once: refresh now.
        if drain.as_mut().is_some_and(|d| d.poll(state)) {
            refresh_now = true;
            notify::status(&status_line(state, settings.datapath));
        }
        if refresh_now || last_state.elapsed() >= settings.refresh {
            refresh_now = false;
            upstreams.refresh(state, settings);
            if let Some(x) = xdp.as_mut() {
                // Replies the driver dropped: say so, and make `auto` look
                // again at once (a veth's peer may have lost its program).
                let errors = x.driver.read();
                let fresh = errors > x.driver_seen;
                if fresh {
                    tracing::warn!(
                        dropped = errors - x.driver_seen,
                        "the driver dropped replies sent with XDP_TX (xdp_tx_error)"
                    );
                    x.driver_seen = errors;
                }
                if x.path.recheck(fresh) {
                    tracing::warn!(
                        in_xdp = x.path.in_xdp(),
                        "reply path changed: {}",
                        x.path.why()
                    );
                }
                x.warn_rp_unchecked();
                if let Err(why) = x.check_interface() {
                    tracing::error!("{why}");
                    run.failure.set(Some(why));
                    break;
                }
                x.publish(state);
            }
            last_state = Instant::now();
        }
        let every = settings.stats_interval;
        if every > 0 && last_stats.elapsed() >= Duration::from_secs(every) {
            let now = counts.totals();
            let mut line = now.line(&prev, last_stats.elapsed().as_secs_f64());
            if let Some(c) = xdp.as_ref().and_then(|x| x.counters.read().ok()) {
                line.push_str(&format!(
                    " | xdp replied {} redirected {} passed-no-socket {}",
                    c.replied, c.redirected, c.pass_no_socket
                ));
            }
            tracing::info!("{line}");
            prev = now;
            last_stats = Instant::now();
        }
    }
    notify::stopping();
    xdp.and_then(|x| x.phc)
        .map(|p| p.summary())
        .unwrap_or_default()
}
