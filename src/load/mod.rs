//! `ntpx load`: the bundled load generator.
//!
//! ```text
//!  pinned thread per queue                          server under test
//!  ┌──────────────────────────────┐
//!  │ Pacer ─► Engine::next_request │─ TX ring ─► NIC ──────► ntpx / chronyd
//!  │ (template + client + nonce)   │                               │
//!  │ Engine::on_frame ◄─ RX ring ◄─│◄─ XDP ntpx_load_rx ◄── NIC ◄──┘
//!  │ (check, tracker, tally)       │   (replies from port 123, stamped)
//!  └──────────────────────────────┘
//! ```
//!
//! Pure parts: [`spec`] (what the user asks for), request frames
//! ([`crate::proto::request`], shared with the server's self-probe),
//! [`check`] (reply validation), [`track`] (outstanding nonces),
//! [`tally`] (outcomes and histograms), [`pace`] (open-loop schedule),
//! [`sched`] (steps, pacing and drain, shared by the datapaths),
//! [`engine`] (all of it together, I/O-free).
//!
//! Datapaths: [`xsk_thread`] (AF_XDP, the default, above; its XDP programs in
//! [`program`]) and [`udp_thread`] (`--datapath socket`: the same engine over
//! connected kernel UDP sockets with `sendmmsg`/`recvmmsg`, to compare
//! against, or where XDP is missing).

#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod engine;
pub mod live;
pub mod pace;
pub mod plot;
pub mod program;
pub mod report;
pub mod run;
pub mod sched;
pub mod spec;
pub mod tally;
pub mod track;
pub mod udp_thread;
pub mod xsk_thread;
