//! The policy: which clients get time, a Kiss-o'-Death, or nothing,
//! before any reply is written.
//!
//! - [`access`]: allow and deny prefix lists, with their action;
//! - [`limit`]: the per-client token bucket, its leak and KoD RATE, and
//!   the global reply ceiling.
//!
//! The XDP program decides the same way for both of its datapaths
//! (`bpf/policy.h` mirrors these types field for field); the socket
//! datapath calls [`Policy::decide`] with a client table of its own
//! (kept by the server layer). Pure: times and random numbers come in as
//! arguments.

#![forbid(unsafe_code)]

pub mod access;
pub mod limit;

use crate::proto::drops::DropReason;
use access::{Access, Action};
use limit::{Bucket, Limited, Limits, Outcome};

pub use crate::proto::ntp::KissCode;

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The time.
    Answer,
    /// A Kiss-o'-Death, no time.
    Kiss(KissCode),
    /// Nothing, counted under this reason.
    Drop(DropReason),
}

/// The whole policy: access lists and rate limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Who is refused, and how.
    pub access: Access,
    /// Per-client limits and the ceiling.
    pub limits: Limits,
}

/// A client's entry in the limiter's table, as found for one request.
#[derive(Debug)]
pub enum Entry<'a> {
    /// No per-client limit.
    Off,
    /// The client was not in the table: entered now, with a full bucket.
    New,
    /// Its bucket.
    Found(&'a mut Bucket),
}

/// A verdict and what the limiter saw on the way, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What the request gets.
    pub verdict: Verdict,
    /// The limiter's outcome, where the client was in the table.
    pub outcome: Option<Outcome>,
    /// Over the limit, and answered anyway.
    pub leaked: bool,
}

impl Policy {
    /// The verdict on a request at `now_ns` from a client the access
    /// lists refuse or not (`refused`: [`Access::refuses`], which the
    /// caller asks once), whose limiter entry is `entry`; `ceiling` takes one reply from the global
    /// ceiling, false when there is none left. `random`: two fresh
    /// random numbers (the leak's draw and the KoD's); `kiss_ok`: the
    /// request can be answered with a KoD. The order of `policy()` in
    /// `bpf/policy.h`: access, the client's limit, the ceiling.
    pub fn decide(
        &self,
        refused: bool,
        now_ns: u64,
        entry: Entry<'_>,
        ceiling: impl FnOnce() -> bool,
        random: [u32; 2],
        kiss_ok: bool,
    ) -> Decision {
        let mut d = Decision {
            verdict: Verdict::Answer,
            outcome: None,
            leaked: false,
        };
        if refused && (self.access.action == Action::Ignore || !kiss_ok) {
            d.verdict = Verdict::Drop(DropReason::Access);
            return d;
        }
        if let Entry::Found(b) = entry {
            let outcome = b.admit(now_ns, &self.limits);
            d.outcome = Some(outcome);
            if !outcome.within {
                d.verdict = match b.limited(now_ns, &self.limits, random, kiss_ok) {
                    Limited::Leak => {
                        d.leaked = true;
                        Verdict::Answer
                    }
                    Limited::Kiss => Verdict::Kiss(KissCode::RATE),
                    Limited::Drop => Verdict::Drop(DropReason::RateLimited),
                };
            }
        }
        if d.verdict == Verdict::Answer && refused {
            d.verdict = Verdict::Kiss(KissCode::DENY);
        }
        if !matches!(d.verdict, Verdict::Drop(_)) && !ceiling() {
            d.verdict = Verdict::Drop(DropReason::Ceiling);
        }
        d
    }
}
