//! The NTP protocol core: time types, the header view, and the server's
//! decision — which requests get a reply, and what the reply says.
//!
//! Pure code: no I/O, no clocks, no `unsafe`. The receive and transmit
//! times come in as arguments, so every rule can be tested byte for byte.

#![forbid(unsafe_code)]

pub mod interleave;
pub mod mix;
pub mod packet;
pub mod server;
pub mod timestamp;

pub use interleave::{Marker, NoStore, TxStore};
pub use packet::{HEADER_LEN, Leap, Mode, Packet};
pub use server::{
    KissCode, Reject, ReplyPolicy, Request, ServerState, Stamping, parse_request, write_reply,
    write_reply_with,
};
pub use timestamp::{NtpShort, NtpTimestamp};
