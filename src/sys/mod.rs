//! The system layer: what ntpx asks of the kernel outside the datapath's
//! rings and sockets.
//!
//! - [`netif`]: an interface's index, MAC, addresses and prefixes, queue
//!   count and driver.
//! - [`procnet`]: which sockets, and which processes, hold a UDP port.
pub mod netif;
pub mod procnet;
