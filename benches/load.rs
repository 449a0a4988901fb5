//! Per-packet cost of the load generator's engine, in memory: building a
//! request frame (template copy, client identity, nonce, checksums, slot
//! bookkeeping) and checking a reply (headers, checksums, NTP checks, nonce
//! match, four-timestamp histograms). Together they bound how many
//! requests per second one generator core can drive before the kernel's
//! share (ring kicks, copies) is counted.
//!
//! Run: `cargo bench --bench load -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ntpx::load::engine::{Engine, EngineConfig};
use ntpx::load::spec::parse_prefix;
use ntpx::proto::ntp::{Leap, NtpTimestamp, ServerState};
use ntpx::proto::request::Target;
use ntpx::proto::respond::{Responder, respond};
use std::hint::black_box;

use ntpx::sys::BATCH;
const BASE_NS: u64 = 1_800_000_000_000_000_000;

fn engine() -> Engine {
    Engine::new(&EngineConfig {
        target: Target {
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
            addr: "198.18.0.1".parse().expect("address"),
            port: 123,
            version: 4,
        },
        sources: parse_prefix("198.19.0.0/16").expect("prefix"),
        timeout_ns: 1_000_000_000,
        slot_bits: 16,
        thread: 0,
        seed: 1,
        ping: None,
        accept_partial_checksum: false,
        echo: false,
        xleave: false,
    })
}

fn bench_engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.throughput(Throughput::Elements(BATCH as u64));

    let mut e = engine();
    let mut bufs = vec![[0u8; 128]; BATCH];
    let mut now = BASE_NS;
    g.bench_function("build_batch64", |b| {
        b.iter(|| {
            for buf in bufs.iter_mut() {
                black_box(e.next_request(black_box(buf), now));
            }
            e.stamp_batch(now);
            now += 1000;
        })
    });

    // Replies made by ntpx's own responder, fed back each iteration to a
    // fresh batch of requests (so every reply matches an open request).
    let cfg = Responder::new(
        [2, 0, 0, 0, 0, 1],
        vec!["198.18.0.1".parse().expect("address")],
        vec![],
    );
    let state = ServerState {
        leap: Leap::None,
        stratum: 1,
        ref_id: *b"BNCH",
        ..ServerState::unsynchronized(-20)
    };
    let mut e = engine();
    let mut replies = vec![[0u8; 128]; BATCH];
    let mut lens = [0usize; BATCH];
    g.bench_function("build_and_check_batch64", |b| {
        b.iter(|| {
            for (i, buf) in replies.iter_mut().enumerate() {
                let n = e.next_request(buf, now).unwrap_or(0);
                let t = NtpTimestamp::from_unix_nanos(now + 10_000);
                lens[i] = respond(&mut buf[..n], &cfg, &state, t, || t, 7).map_or(0, |r| r.len);
            }
            e.stamp_batch(now);
            for (buf, &len) in replies.iter().zip(&lens) {
                e.on_frame(black_box(&buf[..len]), now + 20_000);
            }
            now += 1000;
        })
    });
    g.finish();
    let t = &e.tallies()[0];
    assert_eq!(t.good, t.sent, "every reply must be good: {t:?}");
}

criterion_group!(benches, bench_engine);
criterion_main!(benches);
