//! Fuzz target: `props::kiss` (tests/props/mod.rs) on structured input.
#![no_main]

#[path = "../../tests/props/mod.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let _ = props::kiss(&mut u);
});
