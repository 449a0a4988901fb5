//! Property tests (arbtest, on stable Rust, under `cargo test`): the
//! reply builder, the NTP parser, the interleaved-mode mark and table, and
//! the clock conversions, on arbitrary input. Each property runs for
//! arbtest's time budget with a fresh seed; a failure prints the seed that
//! reproduces it (`arbtest(..).seed(0x…)`).
//!
//! For the reply builder, the frames are built from arbitrary headers
//! around a request (so that most of them get through the checks and
//! reach the reply), then have arbitrary bytes overwritten or appended:
//! whatever the input, `respond_with` must not panic, and a reply must be
//! no longer than its request, a well-formed frame with valid checksums,
//! addressed back to the client, whose NTP origin is the request's
//! transmit timestamp (or, interleaved, its receive timestamp) bit for bit,
//! and which carries nothing of the request beyond what it echoes.

mod props;

use arbtest::arbtest;
use ntpx::proto::ntp::interleave::{fold, unflag};
use ntpx::proto::ntp::{Leap, Marker, NtpTimestamp};
use ntpx::server::interleave::XleaveTable;
use ntpx::sys::clock::TaiScale;
use ntpx::sys::clock::phc::PhcMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[test]
fn replies_are_well_formed_never_longer_and_echo_the_origin() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static TRIED: AtomicUsize = AtomicUsize::new(0);
    static ANSWERED: AtomicUsize = AtomicUsize::new(0);
    arbtest(|u| {
        TRIED.fetch_add(1, Relaxed);
        if props::reply(u)? {
            ANSWERED.fetch_add(1, Relaxed);
        }
        Ok(())
    })
    .budget_ms(1000)
    .run();
    // The frames reach the reply often enough to mean something.
    let (tried, answered) = (TRIED.load(Relaxed), ANSWERED.load(Relaxed));
    println!("{answered} of {tried} frames answered");
    // About a quarter get through; a tenth is far below any chance dip.
    assert!(answered * 10 >= tried, "{answered} of {tried}");
}

#[test]
fn kiss_o_death_replies_give_no_time_away() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static KISSED: AtomicUsize = AtomicUsize::new(0);
    arbtest(|u| {
        if props::kiss(u)? {
            KISSED.fetch_add(1, Relaxed);
        }
        Ok(())
    })
    .budget_ms(500)
    .run();
    assert!(KISSED.load(Relaxed) > 0);
}

#[test]
fn the_ntp_parser_accepts_only_client_requests() {
    arbtest(props::parser);
}

/// The fuzz targets' seed corpus (`fuzz/corpus/`), run here too: every
/// file through the property of its target.
#[test]
fn the_fuzz_corpus_holds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for target in ["respond", "respond_raw", "kiss", "parse_request"] {
        let dir = root.join(target);
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for f in files {
            let data = std::fs::read(f.unwrap().path()).unwrap();
            let mut u = arbitrary::Unstructured::new(&data);
            match target {
                "respond" => drop(props::reply(&mut u)),
                "respond_raw" => drop(props::raw_frame(&data)),
                "kiss" => drop(props::kiss(&mut u)),
                _ => drop(props::parser(&mut u)),
            }
            n += 1;
        }
    }
    assert!(n >= 20, "{n} corpus files");
}

#[test]
fn marks_verify_for_their_client_and_t3_never_looks_marked() {
    arbtest(|u| {
        let m = Marker::new(u.arbitrary()?, u.int_in_range(-32..=-10)?);
        let t = NtpTimestamp::from_bits(u.arbitrary()?);
        let a = fold(IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?)));
        let b = fold(IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?)));
        let marked = m.mark(t, a);
        assert!(m.is_marked(marked, a));
        assert_eq!(marked.to_bits() >> m.bits, t.to_bits() >> m.bits);
        assert!(!m.is_marked(unflag(marked), a));
        assert!(!m.is_marked(unflag(t), b));
        Ok(())
    });
}

/// The table against a model of the replies it was told of: whatever the
/// sequence of records (colliding slots, T2s reused, several replies to
/// one address), stamps (of any recorded reply, late or not) and takes, a
/// take returns only the transmit time stamped for a reply that carried
/// that very T2 to that very client, and each at most once. Replies to one
/// address with one T2 cannot be told apart by the protocol itself (the
/// client echoes only the T2): among those, any may be the one.
#[test]
fn the_table_never_hands_out_a_stamp_it_was_not_given_for_that_client() {
    arbtest(|u| {
        let t = XleaveTable::new(u.int_in_range(1..=8)?);
        // Reply n: (T2, client); its own transmit field is n + 1, and the
        // stamp given for it is (n + 1) << 8.
        let mut replies: Vec<(u64, u64)> = Vec::new();
        let mut handed: std::collections::HashSet<u64> = Default::default();
        for _ in 0..u.int_in_range(0..=64)? {
            match u.int_in_range(0..=2)? {
                0 => {
                    let t2 = u.int_in_range(1..=6u64)? << 1 | 1;
                    let client = u.int_in_range(0..=2u64)?;
                    let n = replies.len() as u64;
                    t.record(
                        NtpTimestamp::from_bits(t2),
                        client,
                        NtpTimestamp::from_bits(n + 1),
                    );
                    replies.push((t2, client));
                }
                1 if !replies.is_empty() => {
                    let n = u.choose_index(replies.len())?;
                    let t2 = replies[n].0;
                    t.stamp(
                        NtpTimestamp::from_bits(t2),
                        NtpTimestamp::from_bits(n as u64 + 1),
                        NtpTimestamp::from_bits((n as u64 + 1) << 8),
                    );
                }
                _ => {
                    let t2 = u.int_in_range(1..=6u64)? << 1 | 1;
                    let client = u.int_in_range(0..=2u64)?;
                    if let Some(tx) = t.take(NtpTimestamp::from_bits(t2), client) {
                        let n = (tx.to_bits() >> 8) as usize;
                        assert!(n >= 1 && n <= replies.len(), "a stamp never given: {tx:?}");
                        assert_eq!(replies[n - 1], (t2, client), "another reply's stamp");
                        assert!(handed.insert(tx.to_bits()), "given twice");
                    }
                }
            }
        }
        Ok(())
    });
}

#[test]
fn clock_conversions_never_panic() {
    arbtest(|u| {
        let m = PhcMap {
            phc_ref_ns: u.arbitrary()?,
            tai_ref_ns: u.arbitrary()?,
            rate_q32: u.arbitrary()?,
        };
        let _ = m.to_tai(u.arbitrary()?);
        let _ = m.to_tai(
            m.phc_ref_ns
                .wrapping_add(u.int_in_range(0..=8_000_000_000u64)?),
        );
        let leap =
            [Leap::None, Leap::Insert, Leap::Delete, Leap::Unsynchronized][u.choose_index(4)?];
        // Edge values as often as arbitrary ones.
        let off = if u.arbitrary()? {
            [i32::MIN, i32::MAX, 0, -1][u.choose_index(4)?]
        } else {
            u.arbitrary()?
        };
        let now = if u.arbitrary()? {
            [0, u64::MAX][u.choose_index(2)?]
        } else {
            u.arbitrary()?
        };
        let s = TaiScale::for_leap(leap, off, now, u.arbitrary()?);
        let _ = s.to_unix_nanos(u.arbitrary()?);
        let _ = s.leap_over_tai_ns();
        Ok(())
    });
}
