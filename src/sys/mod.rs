//! The system layer: what ntpx asks of the kernel outside the datapath's
//! rings and sockets.
//!
//! - [`netif`]: an interface's index, MAC, addresses and prefixes, queue
//!   count and driver.
pub mod netif;
