//! The control thread's loop while the workers serve: refreshes the
//! clock state every second, logs a stats line every `stats_interval`,
//! serves the stats socket, and adds what the kernel counted (requests no
//! worker saw) to the workers' numbers.

use super::config::Settings;
use super::program::{CountersReader, XdpProgram};
use super::state::SharedState;
use super::stats::{Collector, KernelCounts, Totals};
use super::stats_socket::StatsSocket;
use crate::proto::drops::DropReason;
use crate::sys::clock::{SystemClock, SystemKernelClock};
use crate::sys::udp_server::SocketDrops;
use crate::sys::xsk::XskStatsReader;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
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
    pub(super) state: &'a SharedState,
    /// Set by SIGINT/SIGTERM.
    pub(super) term: &'a AtomicBool,
    /// Cleared to stop the workers.
    pub(super) running: &'a AtomicBool,
    /// When `run` began (the stats socket's uptime).
    pub(super) start: Instant,
    /// The bound stats socket, taken by the control loop to serve it.
    pub(super) stats_socket: Cell<Option<StatsSocket>>,
}

/// What the kernel counted on the XDP datapath about requests no worker
/// saw: the program's drops, and each AF_XDP socket's ring drops.
pub(super) struct XdpKernelCounts {
    pub(super) program: CountersReader,
    pub(super) sockets: Vec<XskStatsReader>,
}

impl KernelCounts for XdpKernelCounts {
    fn add_to(&self, t: &mut Totals) {
        if let Ok(c) = self.program.read() {
            for (reason, n) in c.request_drops() {
                t.add_kernel(reason, n);
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
            }
        }
    }
}

/// What the kernel dropped on the socket datapath's socket: requests that
/// no worker saw.
pub(super) struct SocketKernelCounts(pub(super) SocketDrops);

impl KernelCounts for SocketKernelCounts {
    fn add_to(&self, t: &mut Totals) {
        if let Some(n) = self.0.total() {
            t.add_kernel(DropReason::SocketKernelDrop, n);
        }
    }
}

/// Refreshes the clock state every second and logs stats every
/// `stats_interval` seconds, until a signal or the duration ends.
pub(super) fn control_loop(run: &Run, counts: &Arc<Collector>, program: Option<&XdpProgram>) {
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
        match s.serve(counts.clone(), settings.datapath, run.start) {
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
    let start = Instant::now();
    let mut last_state = Instant::now();
    let mut last_stats = Instant::now();
    let mut prev = counts.totals();
    while !term.load(Ordering::Relaxed) {
        if opts.duration.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        counts.merge_histograms();
        if last_state.elapsed() >= Duration::from_secs(1) {
            if let Err(e) = state.refresh(&SystemKernelClock, &SystemClock) {
                tracing::warn!(error = %e, "adjtimex failed; keeping the previous clock state");
            }
            last_state = Instant::now();
        }
        let every = settings.stats_interval;
        if every > 0 && last_stats.elapsed() >= Duration::from_secs(every) {
            let now = counts.totals();
            let mut line = now.line(&prev, last_stats.elapsed().as_secs_f64());
            if let Some(c) = program.and_then(|p| p.counters().ok()) {
                line.push_str(&format!(
                    " | xdp redirected {} passed-no-socket {}",
                    c.redirected, c.pass_no_socket
                ));
            }
            tracing::info!("{line}");
            prev = now;
            last_stats = Instant::now();
        }
    }
}
