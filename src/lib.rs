//! ntpx: a kernel-bypass NTP server, and the load generator that measures it.
//!
//! The path of a request, with the module that handles each step:
//!
//! ```text
//!  NIC queue n
//!   │
//!   ▼
//!  XDP program  bpf/ntpx.bpf.c, loaded by server::program (sys::bpf);
//!   │             device-bound where the NIC has receive stamps (server::hw_rx)
//!   │ not NTP, or not for us ──► kernel stack
//!   │ plain request (bpf/reply.h): judged with proto::respond's checks
//!   │   junk ──► dropped, counted under its reason
//!   │   good ──► reply written in place, T2/T3 read in XDP ──► XDP_TX ──► client
//!   │            (server::path decides; the state comes from server::control)
//!   │ an interleaved client (its origin carries our mark, proto::ntp::interleave),
//!   │ or any other request: stamps (TAI; the NIC's, mapped from its PHC by
//!   │ sys::clock::phc) in front of the frame
//!   ▼
//!  AF_XDP RX ring n  sys::xsk
//!   ▼
//!  worker n  server::worker::xsk_loop (pinned thread)
//!   │ proto::respond: checks, the NTP decision (proto::ntp), reply
//!   │ written over the request in place, T3 from sys::clock, or, for an
//!   │ interleaved client, when our previous reply to it left (server::interleave)
//!   ▼
//!  AF_XDP TX ring n (the same UMEM frame), its completion stamp asked for
//!   ▼                                       when an interleaved client will want it
//!  NIC queue n ──► client
//! ```
//!
//! Without XDP (`--datapath socket`) the kernel's UDP stack replaces the
//! program and rings: sys::udp_server batches datagrams with `recvmmsg`, and
//! server::worker::udp_loop answers them with the same `proto::respond` logic.
//!
//! Layers, from the bottom (a test, `tests/layers.rs`, keeps them so):
//!
//! - [`proto`]: pure protocol code — wire views, NTP, the reply decision,
//!   drop reasons. No I/O, no clocks, no `unsafe`, no other module.
//! - [`sys`]: everything asked of the kernel — AF_XDP rings and UMEM, the
//!   BPF loader, batched UDP sockets and control messages, clocks,
//!   interfaces. The only home of `unsafe`.
//! - [`report`]: percentile tables, `.hgrm` files and SVG plots, used by
//!   both tools above it.
//! - [`server`] (`ntpx serve`, `ntpx stats`) and [`load`] (`ntpx load`,
//!   `ntpx sink`), side by side: neither imports the other.
pub mod load;
pub mod proto;
pub mod report;
pub mod server;
pub mod sys;
