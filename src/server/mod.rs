//! `ntpx serve`: the server, on top of the protocol and system layers.
//!
//! - [`serve`]: start-up (addresses, program, sockets, workers) and
//!   shutdown; [`control`]: the control loop (state refresh, stats lines);
//! - [`program`]: the XDP program (`bpf/ntpx.bpf.c`): its counters, and
//!   the server state it answers with; [`path`]: whether plain requests
//!   are answered in XDP or in the workers;
//! - [`worker`]: the pinned packet loops, one per AF_XDP queue
//!   ([`worker::xsk_loop`]) or kernel-socket handle ([`worker::udp_loop`]);
//! - [`config`]: the config file and flags, validated; [`state`]: what the
//!   server says about its clock; [`interleave`]: what interleaved clients
//!   are owed (the precise transmit times of earlier replies);
//!   [`stats`]: counters and histograms;
//!   [`stats_socket`]: `ntpx stats` over a local socket.

#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod drain;
mod hw_rx;
pub mod interleave;
pub mod limiter;
pub mod metrics;
pub mod path;
pub mod policy_config;
pub mod probe;
pub mod program;
pub mod serve;
pub mod state;
pub mod stats;
pub mod stats_socket;
pub mod talkers;
pub mod worker;
pub mod xdp_policy;
