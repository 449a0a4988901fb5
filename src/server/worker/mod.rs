//! The workers: one pinned thread per NIC queue (AF_XDP) or per socket
//! (kernel UDP), each turning batches of requests into replies.
//!
//! Per packet a worker allocates nothing, takes no lock and makes no
//! syscall; per batch it reads the shared state once (lock-free), and the
//! ring kicks are its only syscalls.

pub mod udp_loop;
pub mod xsk_loop;

use crate::proto::respond::Responder;
use crate::server::interleave::XleaveTable;
use crate::server::limiter::Limiter;
use crate::server::state::SharedState;
use crate::server::stats::Published;
use crate::sys::clock::Clock;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What every worker shares.
#[derive(Clone)]
pub struct WorkerCtx<C: Clock> {
    /// Addresses, port and reply policy.
    pub responder: Arc<Responder>,
    /// The server's clock state.
    pub state: Arc<SharedState>,
    /// Cleared to stop the worker.
    pub running: Arc<AtomicBool>,
    /// Where this worker publishes its counters.
    pub published: Arc<Published>,
    /// The clock for transmit stamps.
    pub clock: C,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// Replies whose residence (T3 − T2) would exceed this are dropped as
    /// late; 0: no bound.
    pub max_residence_ns: u64,
    /// How long an idle AF_XDP worker keeps polling its ring before it
    /// sleeps.
    pub spin: std::time::Duration,
    /// The interleaved-mode table (None: basic mode only).
    pub xleave: Option<Arc<XleaveTable>>,
    /// The socket datapath's access lists and rate limits (the XDP
    /// datapath's are in its program); None: no policy.
    pub limiter: Option<Arc<Limiter>>,
    /// The socket datapath's self-probe (its source, IPv4 as IPv4): let
    /// through without the source checks and the policy.
    pub self_probe: Option<std::net::SocketAddr>,
}

impl<C: Clock> WorkerCtx<C> {
    /// True if a reply received at `rx_ns` and stamped at `tx_ns` would
    /// leave later than the residence bound (and one is set).
    #[inline]
    pub fn too_late(&self, rx_ns: u64, tx_ns: u64) -> bool {
        self.max_residence_ns > 0 && tx_ns.saturating_sub(rx_ns) > self.max_residence_ns
    }
}
