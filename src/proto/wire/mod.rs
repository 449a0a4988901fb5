//! Zero-copy views of the headers a request frame carries: Ethernet (with up
//! to two VLAN tags), IPv4, IPv6 and UDP, and the Internet checksum.
//!
//! Pure code: no I/O, no clocks, no `unsafe`. Each view wraps a byte buffer
//! (`T: AsRef<[u8]>`, mutable with `AsMut<[u8]>`); `new_checked` verifies
//! that the fixed part of the header fits, after which the getters and
//! setters cannot panic. There is no unchecked constructor: a view exists
//! only over a buffer long enough for it.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod ethernet;
pub mod ip;
pub mod udp;

/// A buffer was too short for the header it should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("buffer too short for the header")
    }
}

impl std::error::Error for Truncated {}

/// Reads a big-endian u16 at `at` (caller checked the length).
#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes a big-endian u16 at `at` (caller checked the length).
#[inline]
fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
