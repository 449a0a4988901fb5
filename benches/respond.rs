//! Per-packet cost of the hot path: `respond` on a request frame, its
//! pieces (UDP checksum, NTP parse / reply) and the clock read.
//!
//! `respond` rewrites its frame in place, so each iteration first copies a
//! pristine request into the buffer; `respond/copy_only` measures that copy
//! alone so it can be subtracted.
//!
//! Run: `cargo bench --bench respond -- --warm-up-time 1 --measurement-time 3`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{PacketBuilder, VlanId};
use ntpx::proto::ntp::{
    self, Leap, NtpShort, NtpTimestamp, ReplyPolicy, ServerState, parse_request, write_reply,
};
use ntpx::proto::respond::{Responder, respond};
use ntpx::proto::wire::checksum;
use ntpx::server::stats::{Published, Totals, WorkerStats};
use ntpx::sys::clock::{Clock, SystemClock};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SRV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const CLI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const SRV4: [u8; 4] = [198, 18, 0, 1];
const CLI4: [u8; 4] = [198, 18, 0, 2];
const SRV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const CLI6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const CLIENT_PORT: u16 = 40_123;
const CLIENT_XMT: [u8; 8] = [0xe9, 0x1b, 0x2c, 0x3d, 0x11, 0x22, 0x33, 0x44];

/// Receive (T2) and transmit (T3) times for the fixed-clock benches.
const RX: NtpTimestamp = NtpTimestamp::from_bits(0xe91b_2c3d_8000_0000);
const TX: NtpTimestamp = NtpTimestamp::from_bits(0xe91b_2c3d_8000_1000);
const NOISE: u64 = 0x0123_4567_89ab_cdef;

/// Frames are copied into a fixed buffer this large (every request fits).
const BUF_LEN: usize = 128;
use ntpx::sys::BATCH;

/// A 48-byte NTPv4 client request (LI 0, VN 4, mode 3).
fn ntp_request() -> [u8; 48] {
    let mut p = [0u8; 48];
    p[0] = 0x23;
    p[2] = 6; // poll
    p[3] = 0xe9; // precision
    p[40..48].copy_from_slice(&CLIENT_XMT);
    p
}

fn build_v4(vlan: bool, sport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLI_MAC, SRV_MAC);
    let mut out = Vec::new();
    let payload = ntp_request();
    if vlan {
        b.single_vlan(VlanId::try_new(10).unwrap())
            .ipv4(CLI4, SRV4, 64)
            .udp(sport, 123)
            .write(&mut out, &payload)
    } else {
        b.ipv4(CLI4, SRV4, 64)
            .udp(sport, 123)
            .write(&mut out, &payload)
    }
    .unwrap();
    out
}

fn build_v6() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLI_MAC, SRV_MAC)
        .ipv6(CLI6.octets(), SRV6.octets(), 64)
        .udp(CLIENT_PORT, 123)
        .write(&mut out, &ntp_request())
        .unwrap();
    out
}

fn cfg() -> Responder {
    Responder::new(SRV_MAC, vec![Ipv4Addr::from(SRV4)], vec![SRV6])
}

fn state() -> ServerState {
    ServerState {
        leap: Leap::None,
        stratum: 1,
        precision: -24,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::ZERO,
        ref_id: *b"GPS\0",
        ref_time: NtpTimestamp::from_bits(0xe91b_2c00_0000_0000),
    }
}

/// Panics unless `respond` answers `request` (so no bench measures the
/// drop path by accident).
fn assert_answers(request: &[u8], cfg: &Responder, state: &ServerState) {
    let mut buf = request.to_vec();
    let reply = respond(&mut buf, cfg, state, RX, || TX, NOISE);
    let reply = reply.unwrap_or_else(|e| panic!("request dropped: {e:?}"));
    assert_eq!(reply.len, request.len(), "reply length");
}

fn bench_respond(c: &mut Criterion) {
    let cfg = cfg();
    let state = state();
    let mut g = c.benchmark_group("respond");
    g.throughput(Throughput::Elements(1));

    let v4 = build_v4(false, CLIENT_PORT);
    let frames = [
        ("ipv4", v4.clone()),
        ("ipv6", build_v6()),
        ("vlan", build_v4(true, CLIENT_PORT)),
    ];
    for (name, request) in &frames {
        assert_answers(request, &cfg, &state);
        let len = request.len();
        let mut buf = [0u8; BUF_LEN];
        g.bench_function(*name, |b| {
            b.iter(|| {
                buf[..len].copy_from_slice(black_box(request));
                black_box(respond(
                    black_box(&mut buf[..len]),
                    &cfg,
                    &state,
                    black_box(RX),
                    || black_box(TX),
                    black_box(NOISE),
                ))
            })
        });
    }

    // The per-iteration copy alone (IPv4 frame; the others are 4 / 20
    // bytes longer, within the same couple of cache lines).
    let mut buf = [0u8; BUF_LEN];
    let len = v4.len();
    g.bench_function("copy_only", |b| {
        b.iter(|| {
            buf[..len].copy_from_slice(black_box(&v4));
            black_box(&mut buf);
        })
    });

    // A worker-sized batch: one clock read for the batch's receive time,
    // then per packet a real clock read for T3 and fresh noise, as in
    // `server::worker::xsk_loop`. Distinct source ports so the checksums differ.
    let requests: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| build_v4(false, CLIENT_PORT + i as u16))
        .collect();
    for r in &requests {
        assert_answers(r, &cfg, &state);
    }
    let mut bufs = vec![[0u8; BUF_LEN]; BATCH];
    let mut rng = fastrand::Rng::with_seed(1);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("batch64_ipv4", |b| {
        b.iter(|| {
            let rx = SystemClock.now();
            let mut answered = 0u32;
            for (buf, request) in bufs.iter_mut().zip(&requests) {
                let len = request.len();
                buf[..len].copy_from_slice(black_box(request));
                let r = respond(
                    black_box(&mut buf[..len]),
                    &cfg,
                    &state,
                    rx,
                    || SystemClock.now(),
                    rng.u64(..),
                );
                answered += u32::from(r.is_ok());
            }
            black_box(answered)
        })
    });
    g.bench_function("batch64_copy_only", |b| {
        b.iter(|| {
            for (buf, request) in bufs.iter_mut().zip(&requests) {
                buf[..request.len()].copy_from_slice(black_box(request));
            }
            black_box(&mut bufs);
        })
    });
    g.finish();

    // Sanity check outside the timing: the batch path answers every frame.
    let rx = SystemClock.now();
    for (buf, request) in bufs.iter_mut().zip(&requests) {
        let len = request.len();
        buf[..len].copy_from_slice(request);
        let r = respond(&mut buf[..len], &cfg, &state, rx, || SystemClock.now(), 7);
        assert!(r.is_ok(), "batch frame dropped: {r:?}");
    }
}

fn bench_checksum(c: &mut Criterion) {
    let frame = build_v4(false, CLIENT_PORT);
    // Ethernet (14) + IPv4 (20), then UDP header + NTP: 56 bytes.
    let datagram = &frame[34..];
    assert_eq!(datagram.len(), 56);
    let len = datagram.len() as u16;
    // Over a datagram carrying its checksum, a valid sum is zero.
    let sum = checksum::finish(checksum::accumulate(
        checksum::pseudo_v4(CLI4, SRV4, len),
        datagram,
    ));
    assert_eq!(sum, 0, "etherparse's UDP checksum does not verify");

    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Elements(1));
    g.bench_function("udp_ipv4_56", |b| {
        b.iter(|| {
            let pseudo = checksum::pseudo_v4(black_box(CLI4), black_box(SRV4), black_box(len));
            checksum::finish(checksum::accumulate(pseudo, black_box(datagram)))
        })
    });
    g.finish();
}

fn bench_ntp(c: &mut Criterion) {
    let payload = ntp_request();
    let req = parse_request(&payload).expect("request rejected");
    let state = state();
    let policy = ReplyPolicy::default();
    assert!(
        write_reply(
            &mut [0u8; ntp::HEADER_LEN],
            &req,
            &state,
            &policy,
            RX,
            || TX,
            NOISE
        )
        .is_some()
    );

    let mut g = c.benchmark_group("ntp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_request", |b| {
        b.iter(|| parse_request(black_box(&payload)))
    });
    let mut out = [0u8; ntp::HEADER_LEN];
    g.bench_function("write_reply", |b| {
        b.iter(|| {
            black_box(write_reply(
                black_box(&mut out),
                black_box(&req),
                &state,
                &policy,
                black_box(RX),
                || black_box(TX),
                black_box(NOISE),
            ))
        })
    });
    g.finish();
}

/// The worker's side of publishing its service-time histogram, at the
/// half-second boundary where it hands the histogram over: only the
/// worker's `publish` is timed; the collector's side (`Totals::collect`,
/// on the control thread in the server) runs untimed between iterations.
fn bench_stats(c: &mut Criterion) {
    let mut g = c.benchmark_group("stats");
    g.bench_function("publish_histogram", |b| {
        b.iter_custom(|iters| {
            let published = Arc::new(Published::default());
            let mut stats = WorkerStats::new(published.clone());
            let mut now = 0u64;
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                for k in 0..BATCH as u64 {
                    stats.service_ns(
                        1_000 + (i * 64 + k) % 50_000,
                        ntpx::sys::clock::StampSource::Xdp,
                    );
                }
                now += 500_000_000;
                let t0 = Instant::now();
                stats.publish(black_box(now));
                spent += t0.elapsed();
                black_box(Totals::collect(std::slice::from_ref(&published)));
            }
            spent
        })
    });
    g.finish();
}

fn bench_clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.throughput(Throughput::Elements(1));
    g.bench_function("now", |b| b.iter(|| SystemClock.now()));
    g.finish();
}

criterion_group!(
    benches,
    bench_respond,
    bench_checksum,
    bench_ntp,
    bench_stats,
    bench_clock
);
criterion_main!(benches);
