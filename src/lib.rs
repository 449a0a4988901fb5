//! ntpx: a kernel-bypass NTP server, and the load generator that measures it.
//!
//! The path of a request:
//!
//! ```text
//!  NIC queue n ──► XDP program (bpf/ntpx.bpf.c) ──► AF_XDP RX ring n ──► worker n
//!                  │ not NTP → kernel stack          [xdp::socket]       [worker::xdp]
//!                  │ junk → dropped, counted                              │ respond():
//!                  │ stamp (TAI) in the metadata                          │ checks, reply
//!                                                                         ▼ in place
//!  client ◄── NIC queue n ◄── AF_XDP TX ring n (the same UMEM frame) ◄────┘
//! ```
//!
//! Layers, from the bottom:
//!
//! - pure protocol and wire code, no I/O, no clocks, no `unsafe`:
//!   [`wire`] (Ethernet/VLAN/IPv4/IPv6/UDP views, checksum), [`ntp`]
//!   (timestamps, the header, the server's decision), [`respond`] (one
//!   frame in, its reply out), [`drops`];
//! - the datapath: [`xdp`] (the programs, AF_XDP sockets), [`socket`]
//!   (kernel UDP batches), [`worker`] (the pinned loops), [`clock`],
//!   [`state`] (what the server says about its clock);
//! - running it: [`config`], [`serve`], [`stats`] and [`control`] (`ntpx
//!   stats` over a local socket);
//! - measuring it: [`load`] (`ntpx load`, whose engine reuses the wire and
//!   NTP code) and [`report`] (percentile tables, `.hgrm`, SVG plots).
//!
//! The protocol code never calls into the datapath; the datapath, the
//! clocks and the generator use it.
pub mod clock;
pub mod config;
pub mod control;
pub mod drops;
pub mod load;
pub mod ntp;
pub mod report;
pub mod respond;
pub mod serve;
pub mod socket;
pub mod state;
pub mod stats;
pub mod sys;
pub mod wire;
pub mod worker;
pub mod xdp;
