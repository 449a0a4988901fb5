//! The system layer: everything ntpx asks of the kernel, and the only
//! home of `unsafe` in the crate.
//!
//! - [`xsk`]: AF_XDP sockets — UMEM, the four rings, the frames on them;
//! - [`bpf`]: the BPF loader toolkit (skeletons, verifier log, links, maps,
//!   test runs) and the pass-through program for a veth peer;
//! - [`udp_server`]: the server's batched kernel UDP socket (`recvmmsg` /
//!   `sendmmsg`), and [`udp_client`]: the generator's connected sockets;
//! - [`cmsg`]: control messages of both, in an aligned buffer; `mmsg`:
//!   their shared `recvmmsg` batch;
//! - [`clock`]: clock reads and the kernel's discipline state;
//! - [`netif`]: an interface's index, MAC, addresses and queues;
//!   [`ethtool`]: its driver's statistics;
//! - [`rtnl`]: whether a veth's peer runs XDP (rtnetlink);
//! - [`procnet`]: which processes hold a UDP port; [`cpu`]: pinning;
//! - [`notify`]: the service manager's notifications (systemd); [`signal`]:
//!   SIGHUP to a running server.
//!
//! Every `unsafe fn` here states its contract under `# Safety`, every
//! `unsafe` block says why it holds, and no safe function lets its caller
//! break memory safety: the layers above forbid `unsafe` outright.

pub mod bpf;
pub mod clock;
pub mod cmsg;
pub mod cpu;
pub mod ethtool;
mod mmsg;
pub mod netif;
pub mod notify;
pub mod procnet;
pub mod rtnl;
pub mod signal;
mod sockopt;
pub mod udp_client;
pub mod udp_server;
pub mod xsk;

/// Packets per ring batch or batched syscall, on every path (server
/// workers and generator threads, AF_XDP and kernel UDP).
pub const BATCH: usize = 64;

/// Which kernel interface carries the packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// XDP steers port 123 into AF_XDP sockets (the fast path).
    Xdp,
    /// Kernel UDP sockets (hosts without XDP; the baseline).
    Socket,
}

impl Datapath {
    /// The name in summaries and the stats document.
    pub fn label(self) -> &'static str {
        match self {
            Datapath::Xdp => "xdp",
            Datapath::Socket => "socket",
        }
    }
}
