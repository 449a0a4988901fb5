//! The stats socket: a running `ntpx serve` answers every connection on a
//! local Unix socket (default [`DEFAULT_PATH`], mode 0600) with one JSON
//! document, a [`StatsDoc`], and closes it; `ntpx stats` reads it.
//!
//! The document holds the totals the exit summary prints (requests, replies,
//! drops by reason) and the whole RX→TX service-time histogram, serialized
//! with HdrHistogram's V2 format (not deflated) and base64-encoded, so a
//! client gets every percentile, not just the few a log line shows.
//!
//! The server side runs on its own thread ([`StatsSocket::serve`]), never on
//! a worker: it sums the workers' published counters and the kernel's the
//! same way the control loop does ([`Collector::totals`]; workers merge their histograms
//! under `try_lock`, so a reader never blocks them). It waits in `poll(2)`
//! on the listener and on a wake-up socket, so it costs nothing while idle
//! and stops as soon as [`StatsServer`] is dropped. It answers one client at
//! a time, and gives each at most [`WRITE_DEADLINE`] to take its document.
//!
//! [`StatsSocket::bind`] refuses to take over a socket a live server still
//! answers on, replaces a stale one left by a crash, and never deletes
//! anything that is not a socket. The socket file is removed when the
//! [`StatsSocket`] is dropped (clean exit and error paths alike), unless
//! another process has put its own socket at that path meanwhile.

use crate::proto::drops::DropReason;
use crate::report::quantile_list;
use crate::server::interleave::TableCounts;
use crate::server::limiter::PolicyCounts;
use crate::server::stats::{Collector, Totals};
use crate::sys::Datapath;
use anyhow::{Context, bail};
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The version of the [`StatsDoc`] format. Adding a field keeps it;
/// changing or removing one bumps it.
pub const FORMAT_VERSION: u32 = 1;

/// Where `ntpx serve` listens and `ntpx stats` connects by default.
pub const DEFAULT_PATH: &str = "/run/ntpx.sock";

/// How long the server waits, in all, for one client to take its document.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(1);

/// How long `ntpx stats` waits for the document.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest document `ntpx stats` accepts (a full histogram is well
/// under a megabyte).
const MAX_DOC: u64 = 16 << 20;

/// The document a server sends on its stats socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsDoc {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// The server's process ID (what `ntpx reload` signals; 0 from a
    /// server that did not say).
    #[serde(default)]
    pub pid: u32,
    /// The datapath: `xdp` or `socket`.
    pub datapath: String,
    /// Requests received.
    pub rx: u64,
    /// Replies sent.
    pub tx: u64,
    /// Packets that got no reply, all reasons.
    pub dropped: u64,
    /// Drops by reason ([`DropReason::label`] → count), non-zero ones only.
    pub drops: BTreeMap<String, u64>,
    /// Requests answered although their UDP checksum was in the partial
    /// form a veth peer's offload leaves (0 elsewhere).
    #[serde(default)]
    pub partial_checksum: u64,
    /// Interleaved mode (RFC 9769): replies recorded for interleaved
    /// clients, their transmit times stored, interleaved replies given,
    /// and marked requests answered in basic mode.
    #[serde(default)]
    pub interleave: TableCounts,
    /// What the access lists and rate limits did: KoDs sent, requests over
    /// their client's limit and how many of those leaked, limited
    /// clients, clients that sped up when limited, clients entered in the
    /// table, requests the reverse-path check could not judge.
    #[serde(default)]
    pub policy: PolicyCounts,
    /// What replies say now, and whether the server is in service.
    #[serde(default)]
    pub state: Option<StateDoc>,
    /// The client mix: packets by family, version and mode, requests by
    /// poll.
    #[serde(default)]
    pub clients: crate::proto::ntp::mix::ClientMix,
    /// Replies with time by the source of their receive stamp
    /// ([`StampSource::label`](crate::sys::clock::StampSource::label) →
    /// count), non-zero ones only.
    #[serde(default)]
    pub stamps: BTreeMap<String, u64>,
    /// The fill of the server's tables: name → (entries, capacity).
    #[serde(default)]
    pub tables: BTreeMap<String, (u64, u64)>,
    /// The top talkers (sampled), most first.
    #[serde(default)]
    pub talkers: Vec<crate::server::talkers::Talker>,
    /// RX→TX service time in ns: the HdrHistogram V2 serialization (not
    /// deflated), base64 (standard alphabet, padded). See
    /// [`encode_histogram`] / [`decode_histogram`].
    pub service_ns_hist: String,
}

/// The server's state in a [`StatsDoc`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    /// LI of replies now (3: unsynchronised).
    pub leap: u8,
    /// Stratum of replies now.
    pub stratum: u8,
    /// `off`, `unsync` or `stop` (`ntpx drain`).
    pub drain: String,
    /// Seconds since the state was computed (about 1 while the control
    /// thread turns; more: it is stuck, and so is what replies say).
    pub age_s: f64,
    /// What the self-probe saw (None: no probe).
    #[serde(default)]
    pub probe: Option<crate::server::probe::ProbeDoc>,
}

impl StateDoc {
    /// The state of `shared` now.
    pub fn of(shared: &crate::server::state::SharedState) -> StateDoc {
        use crate::sys::clock::Clock as _;
        let snap = shared.load();
        let now_ns = crate::sys::clock::SystemClock.now_unix_nanos();
        let now = crate::proto::ntp::NtpTimestamp::from_unix_nanos(now_ns);
        StateDoc {
            leap: snap.ntp.leap as u8,
            stratum: snap.ntp.stratum,
            drain: snap.drain.name().to_owned(),
            age_s: now.signed_nanos_since(snap.computed) as f64 / 1e9,
            probe: shared
                .probe()
                .map(|p| crate::server::probe::ProbeDoc::of(&p, now_ns)),
        }
    }

    /// Why a server in this state should not be announced (anycast), or
    /// `None` if it serves: out of service, unsynchronised, its state not
    /// refreshed for 5 s (a stuck control thread), or its self-probe
    /// unanswered or answered with the wrong time.
    pub fn unhealthy(&self) -> Option<String> {
        if self.drain != "off" {
            Some(format!("draining ({})", self.drain))
        } else if self.leap == 3 {
            Some("unsynchronised (LI 3)".to_owned())
        } else if self.age_s > 5.0 {
            Some(format!(
                "its state is {:.1} s old: the control thread is stuck",
                self.age_s
            ))
        } else {
            self.probe.as_ref().and_then(|p| p.unhealthy())
        }
    }
}

/// Serializes a histogram (HdrHistogram V2, not deflated) and base64-encodes it.
pub fn encode_histogram(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serializing the histogram: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The inverse of [`encode_histogram`].
pub fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("the histogram is not valid base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("the histogram is not a valid HdrHistogram V2 encoding: {e}"))
}

impl StatsDoc {
    /// The document for `totals` of a server up for `uptime`.
    pub fn new(totals: &Totals, uptime: Duration, datapath: Datapath) -> anyhow::Result<StatsDoc> {
        let drops = DropReason::ALL
            .iter()
            .map(|&r| (r.label().to_owned(), totals.drops[r as usize]))
            .filter(|&(_, n)| n > 0)
            .collect();
        Ok(StatsDoc {
            version: FORMAT_VERSION,
            uptime_s: uptime.as_secs_f64(),
            pid: std::process::id(),
            datapath: datapath.label().to_owned(),
            rx: totals.rx,
            tx: totals.tx,
            dropped: totals.dropped(),
            drops,
            partial_checksum: totals.partial_checksum,
            interleave: totals.xleave,
            policy: totals.policy,
            state: None,
            clients: totals.clients.clone(),
            stamps: crate::sys::clock::StampSource::ALL
                .iter()
                .zip(totals.stamps)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.label().to_owned(), n))
                .collect(),
            talkers: Vec::new(),
            tables: totals
                .tables
                .iter()
                .map(|f| (f.name.to_owned(), (f.entries, f.capacity)))
                .collect(),
            service_ns_hist: encode_histogram(&totals.service)?,
        })
    }

    /// Parses a document, refusing other format versions.
    pub fn from_json(text: &str) -> anyhow::Result<StatsDoc> {
        // Look at the version first: a document of another version may not
        // have the fields this one needs.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let v: Version =
            serde_json::from_str(text).context("the server's answer is not a stats document")?;
        if v.version != FORMAT_VERSION {
            bail!(
                "the server speaks stats format version {}, this ntpx reads version {FORMAT_VERSION} \
                 (use the ntpx binary that matches the server)",
                v.version
            );
        }
        serde_json::from_str(text).context("the server's answer is not a stats document")
    }

    /// The service-time histogram (ns).
    pub fn histogram(&self) -> anyhow::Result<Histogram<u64>> {
        decode_histogram(&self.service_ns_hist)
    }

    /// The text `ntpx stats` prints: uptime, totals, each non-zero drop
    /// reason and the percentile table of the service time (the same lines
    /// as `ntpx serve`'s exit summary).
    pub fn render(&self) -> anyhow::Result<String> {
        let hist = self.histogram()?;
        let mut s = format!(
            "ntpx serve ({} datapath), up {}\n",
            self.datapath,
            fmt_uptime(self.uptime_s)
        );
        let _ = writeln!(
            s,
            "requests {}  replies {}  dropped {}",
            self.rx, self.tx, self.dropped
        );
        // Known reasons in counter order, then any this ntpx does not know
        // (from a newer server).
        let known = |l: &str| DropReason::ALL.iter().any(|r| r.label() == l);
        let ordered = DropReason::ALL
            .iter()
            .filter_map(|r| self.drops.get_key_value(r.label()))
            .chain(self.drops.iter().filter(|(l, _)| !known(l)));
        for (label, n) in ordered {
            if *n > 0 {
                let _ = writeln!(s, "  drop {label:<20} {n}");
            }
        }
        if self.partial_checksum > 0 {
            let _ = writeln!(
                s,
                "  answered with a partial UDP checksum (veth peer's offload): {}",
                self.partial_checksum
            );
        }
        s.push_str(&self.interleave.line());
        s.push_str(&self.policy.lines());
        s.push_str(&self.clients.lines());
        s.push_str(&self.stamp_line());
        s.push_str(&self.table_lines());
        s.push_str(&crate::server::talkers::line(&self.talkers));
        if let Some(st) = &self.state {
            let _ = writeln!(
                s,
                "  replies say LI {}, stratum {}; drain {}; state {:.1} s old",
                st.leap, st.stratum, st.drain, st.age_s
            );
            if let Some(p) = &st.probe {
                s.push_str(&p.line());
            }
        }
        s.push_str(&quantile_list("RX->TX service time", &hist));
        Ok(s)
    }
}

impl StatsDoc {
    /// The receive stamps' line (empty before any reply with time).
    fn stamp_line(&self) -> String {
        let total: u64 = self.stamps.values().sum();
        if total == 0 {
            return String::new();
        }
        let shares: Vec<String> = self
            .stamps
            .iter()
            .map(|(k, n)| format!("{k} {:.1}%", 100.0 * *n as f64 / total as f64))
            .collect();
        format!("  receive stamps (T2): {}\n", shares.join(", "))
    }

    /// The tables' fill lines.
    fn table_lines(&self) -> String {
        let mut s = String::new();
        for (name, (n, cap)) in &self.tables {
            let _ = writeln!(
                s,
                "  table {name}: {n} of {cap} ({:.1}%)",
                100.0 * *n as f64 / (*cap).max(1) as f64
            );
        }
        s
    }

    /// The live view `ntpx stats --watch` prints: what happened since
    /// `prev` (an earlier document of the same server) as rates, then the
    /// totals. Like `chronyc serverstats`, for people.
    pub fn render_since(&self, prev: &StatsDoc) -> anyhow::Result<String> {
        if self.uptime_s < prev.uptime_s || self.pid != prev.pid {
            // Another server, or the same one restarted: no rates yet.
            return Ok(format!(
                "the server restarted: rates from the next view on\n{}",
                self.render()?
            ));
        }
        let secs = (self.uptime_s - prev.uptime_s).max(1e-3);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let mut s = format!(
            "ntpx serve ({} datapath), up {}; the last {secs:.1} s:\n",
            self.datapath,
            fmt_uptime(self.uptime_s)
        );
        let _ = writeln!(
            s,
            "  requests {:>12.1}/s   replies {:>12.1}/s   dropped {:>10.1}/s",
            rate(self.rx, prev.rx),
            rate(self.tx, prev.tx),
            rate(self.dropped, prev.dropped)
        );
        for (label, n) in &self.drops {
            let then = prev.drops.get(label).copied().unwrap_or(0);
            if *n > then {
                let _ = writeln!(s, "    drop {label:<20} {:>10.1}/s", rate(*n, then));
            }
        }
        let (p, q) = (&self.policy, &prev.policy);
        if p.limited > q.limited || p.kod_rate + p.kod_deny > q.kod_rate + q.kod_deny {
            let _ = writeln!(
                s,
                "  rate limited {:.1}/s (leaked {:.1}/s), KoD {:.1}/s",
                rate(p.limited, q.limited),
                rate(p.leaked, q.leaked),
                rate(p.kod_rate + p.kod_deny, q.kod_rate + q.kod_deny)
            );
        }
        let mut hist = self.histogram()?;
        let before = prev.histogram()?;
        // The interval's own service times: the later histogram less the
        // earlier (counts only grow, so this cannot fail but for a
        // restarted server, whose whole histogram is then shown).
        if hist.subtract(&before).is_err() {
            hist = self.histogram()?;
        }
        s.push_str(&quantile_list("  RX->TX service time", &hist));
        let _ = writeln!(
            s,
            "totals: requests {}  replies {}  dropped {}",
            self.rx, self.tx, self.dropped
        );
        Ok(s)
    }
}

/// Seconds as `5.2s`, `4m05s`, `3h04m05s` or `2d03h04m05s`.
pub fn fmt_uptime(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_owned();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let t = secs as u64;
    let (d, h, m, s) = (t / 86_400, t / 3600 % 24, t / 60 % 60, t % 60);
    match (d, h) {
        (0, 0) => format!("{m}m{s:02}s"),
        (0, _) => format!("{h}h{m:02}m{s:02}s"),
        _ => format!("{d}d{h:02}h{m:02}m{s:02}s"),
    }
}

/// Reads one document from the server listening on `path`: the raw JSON
/// text and the parsed document.
pub fn fetch(path: &Path) -> anyhow::Result<(String, StatsDoc)> {
    let shown = path.display();
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "no ntpx serve is listening on {shown} (is it running? does it use --stats-socket?)"
        ),
        io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "cannot connect to {shown}: permission denied (the stats socket is mode 0600: \
             run ntpx stats as the user that runs ntpx serve)"
        ),
        _ => anyhow::anyhow!("cannot connect to {shown}: {e}"),
    })?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .context("setting a read timeout")?;
    let mut text = String::new();
    stream
        .take(MAX_DOC)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the stats document from {shown}"))?;
    if text.is_empty() {
        bail!("the server on {shown} closed the connection without sending its stats");
    }
    let doc = StatsDoc::from_json(&text)?;
    Ok((text, doc))
}

/// A bound stats socket. Dropping it removes the socket file (if it is
/// still the one this bound).
#[derive(Debug)]
pub struct StatsSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, to recognise it on drop.
    id: (u64, u64),
}

impl StatsSocket {
    /// Binds a listener at `path` with mode 0600. A stale socket there (no
    /// one accepts on it) is replaced; a live one or anything that is not a
    /// socket is an error.
    pub fn bind(path: &Path) -> anyhow::Result<StatsSocket> {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => bail!(
                    "another ntpx serve is using {shown} (use --stats-socket to pick another path)"
                ),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %shown, "removing a stale stats socket");
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            bail!("cannot remove the stale stats socket {shown}: {e}")
                        }
                    }
                }
                Err(e) => bail!(
                    "{shown} exists and cannot be checked ({e}); remove it or use --stats-socket to pick another path"
                ),
            },
            Ok(_) => bail!(
                "{shown} exists and is not a socket; not replacing it (use --stats-socket to pick another path)"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot check the stats socket path {shown}: {e}"),
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the stats socket {shown}: {e} (pick another path with \
                 --stats-socket PATH, or turn it off with --no-stats-socket)"
            )
        })?;
        // From here on the file is ours: remove it again on any error.
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("checking the new stats socket {shown}"));
        let sock = match meta {
            Ok(m) => StatsSocket {
                listener,
                path: path.to_owned(),
                id: (m.dev(), m.ino()),
            },
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting mode 0600 on {shown}"))?;
        sock.listener
            .set_nonblocking(true)
            .context("making the stats socket non-blocking")?;
        Ok(sock)
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts answering on a thread of its own: each client gets the
    /// [`StatsDoc`] of what `counts` has counted. The thread stops (and
    /// the socket file goes) when the returned [`StatsServer`] is dropped.
    pub fn serve(
        self,
        counts: Arc<Collector>,
        state: Option<Arc<crate::server::state::SharedState>>,
        datapath: Datapath,
        start: Instant,
    ) -> anyhow::Result<StatsServer> {
        let (wake, wake_rx) = UnixStream::pair().context("creating the stats thread's wake-up")?;
        let thread = std::thread::Builder::new()
            .name("ntpx-stats".into())
            .spawn(move || {
                self.accept_loop(&wake_rx, || {
                    let totals = counts.totals();
                    let mut doc = StatsDoc::new(&totals, start.elapsed(), datapath)?;
                    doc.state = state.as_deref().map(StateDoc::of);
                    doc.talkers = state.as_deref().map(|s| s.talkers()).unwrap_or_default();
                    Ok(doc)
                })
            })
            .context("spawning the stats thread")?;
        Ok(StatsServer {
            wake,
            thread: Some(thread),
        })
    }

    /// Answers clients until `wake` becomes readable (or hangs up).
    fn accept_loop(&self, wake: &UnixStream, doc: impl Fn() -> anyhow::Result<StatsDoc>) {
        loop {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll on the stats socket failed; stats socket stopped");
                    return;
                }
            }
            let woke = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            if woke(&fds[1]) {
                return;
            }
            if !woke(&fds[0]) {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = answer(stream, &doc) {
                        tracing::debug!(error = %format!("{e:#}"), "stats client");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // E.g. out of file descriptors: do not spin on it.
                    tracing::warn!(error = %e, "accepting on the stats socket failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Sends one document to one client, within [`WRITE_DEADLINE`].
fn answer(
    mut stream: UnixStream,
    doc: impl Fn() -> anyhow::Result<StatsDoc>,
) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    let bytes = serde_json::to_vec(&doc()?)?;
    let deadline = Instant::now() + WRITE_DEADLINE;
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the client did not take its document within {WRITE_DEADLINE:?}");
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(rest) {
            Ok(0) => bail!("the client went away"),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Drop for StatsSocket {
    fn drop(&mut self) {
        // Only our own socket: if someone replaced it, it is theirs now.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the stats socket");
        }
    }
}

/// The running stats thread. Dropping it stops the thread promptly and
/// removes the socket file.
#[derive(Debug)]
pub struct StatsServer {
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl StatsServer {
    /// Stops the thread and removes the socket (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        // The other end becomes readable (EOF): poll returns at once.
        let _ = self.wake.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the stats thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::stats::{Published, WorkerStats};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ntpx-control-{what}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn sock(&self) -> PathBuf {
            self.0.join("s.sock")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// One worker's published numbers: 1000 replies with service times
    /// spread over 1 µs .. 1 ms, and a few drops.
    fn published() -> Arc<Published> {
        let p = Arc::new(Published::default());
        let mut w = WorkerStats::new(p.clone());
        w.rx(1010);
        w.tx(1000);
        w.drop(DropReason::NtpMode, 7);
        w.drop(DropReason::BadSource, 3);
        for i in 1..=1000u64 {
            w.service_ns(i * 1000, crate::sys::clock::StampSource::Xdp);
        }
        w.publish(u64::MAX / 2);
        w.flush_histogram();
        p
    }

    #[test]
    fn document_round_trip() {
        let totals = Totals::collect(&[published()]);
        let doc = StatsDoc::new(&totals, Duration::from_millis(62_500), Datapath::Socket).unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        // The field names are the wire format.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in [
            "version",
            "uptime_s",
            "datapath",
            "rx",
            "tx",
            "dropped",
            "drops",
            "service_ns_hist",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(v["version"], 1);
        assert_eq!(v["datapath"], "socket");
        assert_eq!(v["drops"]["ntp_mode"], 7);
        assert_eq!(v["drops"].as_object().unwrap().len(), 2, "non-zero only");

        let back = StatsDoc::from_json(&json).unwrap();
        assert_eq!(back, doc);
        assert_eq!((back.rx, back.tx, back.dropped), (1010, 1000, 10));
        assert_eq!(back.drops["bad_source"], 3);

        let h = back.histogram().unwrap();
        assert_eq!(h.len(), totals.service.len());
        assert_eq!(h.len(), 1000);
        assert_eq!(h.min(), totals.service.min());
        assert_eq!(h.max(), totals.service.max());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                h.value_at_quantile(q),
                totals.service.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(h, totals.service);

        let text = back.render().unwrap();
        assert!(text.contains("up 1m02s"), "{text}");
        assert_eq!(back.stamps["xdp"], 1000);
        assert!(text.contains("receive stamps (T2): xdp 100.0%"), "{text}");
        assert!(
            text.contains("requests 1010  replies 1000  dropped 10"),
            "{text}"
        );
        assert!(text.contains("drop ntp_mode"), "{text}");
        assert!(text.contains("(1000 samples)"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
    }

    #[test]
    fn empty_histogram_round_trips() {
        let totals = Totals::collect(&[]);
        let doc = StatsDoc::new(&totals, Duration::ZERO, Datapath::Xdp).unwrap();
        let back = StatsDoc::from_json(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(back.histogram().unwrap().len(), 0);
        assert!(back.drops.is_empty());
        assert!(back.render().unwrap().contains("(0 samples)"));
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let totals = Totals::collect(&[]);
        let mut doc = StatsDoc::new(&totals, Duration::ZERO, Datapath::Xdp).unwrap();
        doc.version = 2;
        let e = StatsDoc::from_json(&serde_json::to_string(&doc).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(StatsDoc::from_json("not json").is_err());
        assert!(decode_histogram("!!!").is_err());
        assert!(decode_histogram("AAAA").is_err());
    }

    #[test]
    fn uptimes() {
        assert_eq!(fmt_uptime(5.25), "5.2s");
        assert_eq!(fmt_uptime(245.0), "4m05s");
        assert_eq!(fmt_uptime(3.0 * 3600.0 + 245.0), "3h04m05s");
        assert_eq!(
            fmt_uptime(2.0 * 86_400.0 + 3.0 * 3600.0 + 245.0),
            "2d03h04m05s"
        );
    }

    #[test]
    fn serves_documents_then_cleans_up() {
        let dir = TempDir::new("serve");
        let path = dir.sock();
        let sock = StatsSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let server = sock
            .serve(
                Arc::new(Collector::new(vec![published()], None)),
                None,
                Datapath::Socket,
                Instant::now(),
            )
            .unwrap();
        // A client that connects and never reads must not stop the others.
        let _idle = UnixStream::connect(&path).unwrap();
        for _ in 0..3 {
            let (text, doc) = fetch(&path).unwrap();
            assert!(text.starts_with('{'), "{text}");
            assert_eq!((doc.rx, doc.tx), (1010, 1000));
            assert_eq!(doc.histogram().unwrap().len(), 1000);
        }
        let t = Instant::now();
        server.stop();
        assert!(t.elapsed() < Duration::from_millis(500), "stops promptly");
        assert!(!path.exists(), "socket removed on stop");
        let e = fetch(&path).unwrap_err().to_string();
        assert!(e.contains("no ntpx serve is listening on"), "{e}");
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = TempDir::new("stale");
        let path = dir.sock();
        // A socket file nobody listens on, as a crash leaves it.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(fetch(&path).is_err());
        let sock = StatsSocket::bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok(), "the new socket listens");
        drop(sock);
        assert!(!path.exists(), "removed on drop");
    }

    #[test]
    fn live_socket_is_refused() {
        let dir = TempDir::new("live");
        let path = dir.sock();
        let first = StatsSocket::bind(&path).unwrap();
        let e = StatsSocket::bind(&path).unwrap_err().to_string();
        assert!(e.contains("another ntpx serve is using"), "{e}");
        assert!(e.contains("--stats-socket"), "{e}");
        assert!(path.exists(), "the live socket is left alone");
        assert!(UnixStream::connect(&path).is_ok(), "and still listens");
        drop(first);
        assert!(!path.exists());
    }

    #[test]
    fn non_socket_path_is_refused() {
        let dir = TempDir::new("file");
        let path = dir.sock();
        std::fs::write(&path, "precious").unwrap();
        let e = StatsSocket::bind(&path).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        let sub = dir.0.join("d");
        std::fs::create_dir(&sub).unwrap();
        let e = StatsSocket::bind(&sub).unwrap_err().to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert!(sub.is_dir());
    }

    #[test]
    fn a_replaced_socket_is_not_removed() {
        let dir = TempDir::new("replaced");
        let path = dir.sock();
        let ours = StatsSocket::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        drop(ours);
        assert!(path.exists(), "someone else's socket stays");
        drop(theirs);
    }

    #[test]
    fn unbindable_path_is_a_clear_error() {
        let dir = TempDir::new("nodir");
        let path = dir.0.join("missing/s.sock");
        let e = StatsSocket::bind(&path).unwrap_err().to_string();
        assert!(e.contains("cannot create the stats socket"), "{e}");
        assert!(e.contains("--no-stats-socket"), "{e}");
    }
}
