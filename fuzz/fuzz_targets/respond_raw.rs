//! Fuzz target: the reply builder on raw bytes taken as a frame
//! (`props::raw_frame`, tests/props/mod.rs); the corpus starts from
//! requests captured from real clients.
#![no_main]

#[path = "../../tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    props::raw_frame(data);
});
