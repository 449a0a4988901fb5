//! The libbpf-rs skeletons that `bpf/build.rs` generates: [`ntpx`] (the
//! server's program, `bpf/ntpx.bpf.c`) and [`load`] (the generator's,
//! `bpf/load.bpf.c`). Generated code, with `unsafe` of its own, so it lives
//! here in the system layer; the programs' owners use only its safe API.

// Generated code is not held to the crate's lints.
#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    unreachable_pub
)]

/// The server's program.
pub mod ntpx {
    include!(concat!(env!("OUT_DIR"), "/ntpx.skel.rs"));
}

/// The load generator's programs.
pub mod load {
    include!(concat!(env!("OUT_DIR"), "/load.skel.rs"));
}
