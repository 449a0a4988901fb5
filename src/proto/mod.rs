//! The protocol layer: what a request is and what its reply must be, as
//! pure functions of bytes and times.
//!
//! - [`wire`]: zero-copy views of Ethernet (with VLAN tags), IPv4, IPv6
//!   and UDP headers, and the Internet checksum;
//! - [`ntp`]: NTP timestamps, the header, and the server's decision (which
//!   requests get a reply, and what it says);
//! - [`respond`]: one request frame in, its reply written over it (or the
//!   reason it gets none);
//! - [`policy`]: access lists and rate limits: who gets time, a
//!   Kiss-o'-Death, or nothing;
//! - [`request`]: client request frames (the load generator's, the
//!   server's self-probe);
//! - [`drops`]: every reason a request is not answered.
//!
//! No I/O, no clocks, no syscalls, no `unsafe`, and nothing else of the
//! crate: receive and transmit times come in as arguments, so every rule
//! is tested byte for byte.

#![forbid(unsafe_code)]

pub mod drops;
pub mod ntp;
pub mod policy;
pub mod request;
pub mod respond;
pub mod wire;
