//! Where plain requests are answered: in the XDP program (`XDP_TX`) or in
//! the AF_XDP workers, chosen at start and, in `auto`, checked again while
//! serving.
//!
//! `XDP_TX` sends a frame back out of the interface it came in on, from
//! the driver. Every driver with native XDP supports it, and a generic
//! (skb-mode) program's `XDP_TX` goes through the kernel's normal transmit
//! path. The exception is a veth in native mode: the frame is handed to
//! the peer's NAPI ring, which exists only while the peer runs a native
//! XDP program (or has GRO on, which no netlink message shows); otherwise
//! the kernel drops it after the program has returned. AF_XDP copy-mode
//! transmit reaches such a peer, so there `auto` answers in the workers
//! until the peer's program is confirmed ([`crate::sys::rtnl`]).

use crate::server::config::Replies;
use crate::sys::bpf::XdpMode;
use crate::sys::netif;
use crate::sys::rtnl::{self, PeerXdp};
use std::time::{Duration, Instant};

/// How often `auto` asks again about a veth's peer.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// How long `auto` stays with the workers after the driver dropped
/// replies sent from XDP, before it trusts the peer's program again.
pub const HOLD_OFF: Duration = Duration::from_secs(30);

/// The choice and what it rests on.
#[derive(Debug)]
pub struct ReplyPath {
    replies: Replies,
    /// The program judges plain requests (it holds every own address).
    judging: bool,
    ifindex: u32,
    /// A veth attached in native mode: the peer decides.
    native_veth: bool,
    /// Attached in generic mode.
    generic: bool,
    in_xdp: bool,
    why: String,
    checked: Instant,
    /// No XDP before this (after driver drops).
    hold_until: Option<Instant>,
}

impl ReplyPath {
    /// Decides for interface `iface` (index `ifindex`), attached in `mode`.
    pub fn new(replies: Replies, judging: bool, iface: &str, ifindex: u32, mode: XdpMode) -> Self {
        let mut p = ReplyPath {
            replies,
            judging,
            ifindex,
            native_veth: mode == XdpMode::Native && netif::is_veth(iface),
            generic: mode == XdpMode::Generic,
            in_xdp: false,
            why: String::new(),
            checked: Instant::now(),
            hold_until: None,
        };
        (p.in_xdp, p.why) = p.decide();
        p
    }

    /// True: answer plain requests in XDP.
    pub fn in_xdp(&self) -> bool {
        self.in_xdp
    }

    /// In generic mode, requests with a partial UDP checksum go to the
    /// workers (see `XdpState::partial_to_workers`).
    pub fn partial_to_workers(&self) -> bool {
        self.generic
    }

    /// Why, for the log.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// In `auto` on a native veth, asks again every [`RECHECK_EVERY`];
    /// returns true when the choice changed. `driver_dropped` (the driver
    /// dropped `XDP_TX` frames since the last call) moves the replies to
    /// the workers at once, for [`HOLD_OFF`] at least: the peer may run a
    /// program and still not take them (it is down, say).
    pub fn recheck(&mut self, driver_dropped: bool) -> bool {
        if self.replies != Replies::Auto || !self.native_veth || !self.judging {
            return false;
        }
        if driver_dropped {
            self.hold_until = Some(Instant::now() + HOLD_OFF);
            let changed = self.in_xdp;
            self.in_xdp = false;
            self.why = format!(
                "auto: the driver dropped replies sent with XDP_TX; the AF_XDP workers answer \
                 for {} s before XDP is tried again",
                HOLD_OFF.as_secs()
            );
            return changed;
        }
        if self.hold_until.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        if self.checked.elapsed() < RECHECK_EVERY {
            return false;
        }
        self.checked = Instant::now();
        let (in_xdp, why) = self.decide();
        let changed = in_xdp != self.in_xdp;
        (self.in_xdp, self.why) = (in_xdp, why);
        changed
    }

    fn decide(&self) -> (bool, String) {
        if !self.judging {
            return (
                false,
                "the XDP program cannot judge requests here (more own addresses than it holds)"
                    .into(),
            );
        }
        match self.replies {
            Replies::Workers => (false, "configured (workers)".into()),
            Replies::Xdp if self.native_veth => match rtnl::veth_peer_xdp(self.ifindex) {
                Ok(PeerXdp::Native) => (true, "configured (xdp); the veth's peer runs XDP".into()),
                _ => (
                    true,
                    "configured (xdp), but the veth's peer is not known to run a native XDP program: \
                     the kernel drops XDP_TX frames unless it does (or has GRO on)"
                        .into(),
                ),
            },
            Replies::Xdp => (true, "configured (xdp)".into()),
            Replies::Auto if !self.native_veth => (
                true,
                "auto: XDP_TX works on this interface and attach mode".into(),
            ),
            Replies::Auto => match rtnl::veth_peer_xdp(self.ifindex) {
                Ok(PeerXdp::Native) => (
                    true,
                    "auto: the veth's peer runs a native XDP program, which XDP_TX needs".into(),
                ),
                Ok(PeerXdp::NoNative) => (
                    false,
                    "auto: the veth's peer runs no native XDP program, so the kernel would drop \
                     XDP_TX frames; the AF_XDP workers answer"
                        .into(),
                ),
                Err(e) => (
                    false,
                    format!("auto: cannot tell whether the veth's peer runs XDP ({e}); the AF_XDP workers answer"),
                ),
            },
        }
    }
}
