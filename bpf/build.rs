//! Build script: compiles the XDP program (bpf/ntpx.bpf.c) with clang and
//! generates its libbpf-rs skeleton into `$OUT_DIR/ntpx.skel.rs`, which
//! src/sys/bpf/skel.rs `include!`s. The BPF object is embedded in the
//! skeleton, so the binary carries its own program. The load generator's
//! programs (bpf/load.bpf.c) go the same way into `$OUT_DIR/load.skel.rs`,
//! for src/load/program.rs.
//!
//! Needs `clang` (with the BPF target) on PATH, or in `$NTPX_CLANG`, and the
//! Linux uapi headers (Debian: `linux-libc-dev`). libbpf's own headers
//! (bpf_helpers.h, bpf_endian.h) come from libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/ntpx.bpf.c";
// Every header ntpx.bpf.c includes: a change to any rebuilds the program.
const HEADERS: [&str; 4] = ["bpf/ntpx.h", "bpf/reply.h", "bpf/policy.h", "bpf/frame.h"];
const LOAD_SRC: &str = "bpf/load.bpf.c";
const LOAD_HEADERS: [&str; 2] = ["bpf/load.h", "bpf/frame.h"];

fn main() {
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo"),
    );
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));

    // `clang -target bpf` does not search the multiarch include directory,
    // where Debian keeps asm/types.h and friends.
    let mut clang_args = vec![
        format!("-I{}", manifest_dir.join("bpf").display()),
        "-mcpu=v3".to_owned(),
        "-Wall".to_owned(),
        "-Werror".to_owned(),
    ];
    let arch =
        env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.to_owned());
    let multiarch = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    if multiarch.join("asm/types.h").exists() {
        clang_args.push(format!("-I{}", multiarch.display()));
    }

    let mut builder = SkeletonBuilder::new();
    builder
        .source(manifest_dir.join(SRC))
        .clang_args(&clang_args);
    if let Some(clang) = env::var_os("NTPX_CLANG") {
        builder.clang(clang);
    }
    if let Err(err) = builder.build_and_generate(out_dir.join("ntpx.skel.rs")) {
        // `{:#}` prints the whole chain, including clang's diagnostics.
        panic!("building the XDP program failed: {err:#}");
    }

    let mut load = SkeletonBuilder::new();
    load.source(manifest_dir.join(LOAD_SRC))
        .clang_args(&clang_args);
    if let Some(clang) = env::var_os("NTPX_CLANG") {
        load.clang(clang);
    }
    if let Err(err) = load.build_and_generate(out_dir.join("load.skel.rs")) {
        panic!("building the load generator's XDP programs failed: {err:#}");
    }

    println!("cargo:rerun-if-changed={SRC}");
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-changed={LOAD_SRC}");
    for header in LOAD_HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    println!("cargo:rerun-if-changed=bpf/build.rs");
    println!("cargo:rerun-if-env-changed=NTPX_CLANG");
}
