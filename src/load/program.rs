//! The load generator's XDP programs (`bpf/load.bpf.c`) and their loader.
//!
//! # What the programs do
//!
//! Both walk a frame like the server's program (Ethernet, up to two
//! 802.1Q/802.1ad tags, IPv4 with any IHL >= 5, IPv6 with UDP directly after
//! the fixed header; `bpf/frame.h`) and differ in what they keep:
//!
//! | program                        | frame                                   | verdict        | counter          |
//! |--------------------------------|-----------------------------------------|----------------|------------------|
//! | [`ClientProgramKind::Redirect`] | UDP from `server_port`, socket on queue | `XDP_REDIRECT` | `redirected`     |
//! | [`ClientProgramKind::Redirect`] | UDP from `server_port`, no socket       | `XDP_PASS`     | `no_socket`      |
//! | [`ClientProgramKind::Sink`]     | UDP to `server_port`                    | `XDP_DROP`     | `sunk`, `sunk_bytes` |
//! | either                         | UDP, other port                         | `XDP_PASS`     | `pass_other_port` |
//!
//! Everything else is passed with a reason counter (`pass_not_ip`,
//! `pass_not_udp`, `pass_fragment` for IPv4 UDP fragments,
//! `pass_truncated`); `seen` counts every frame.
//!
//! `Redirect` runs on the generator's own interface and hands the server's
//! replies to the generator's AF_XDP sockets with the same [`Meta`] in
//! front of each frame as the server's program writes (a
//! `bpf_ktime_get_tai_ns()` stamp; `meta_failed` if the driver has no room
//! for it). It deliberately does not look at the NTP header or the UDP
//! length: the generator validates every reply itself and must see the
//! broken ones to count them.
//!
//! `Sink` runs where the server would and drops the generator's requests,
//! counting packets and bytes (Ethernet header on, no FCS): the rate the
//! generator can offer when nothing answers. [`run_sink`] is `ntpx sink`.
//!
//! Loading, attaching (through a BPF link, detached on drop), the socket map
//! and `BPF_PROG_TEST_RUN` work as for the server's
//! steering program: both use the loader toolkit of `sys::bpf`, whose
//! errors, modes and [`TestRun`] they share.
//!
//! [`Meta`]: crate::sys::xsk::meta::Meta

use std::fmt;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapHandle, ProgramHandle};

use crate::sys::bpf::skel::load::{LoadSkelBuilder, OpenLoadSkel};
use crate::sys::bpf::{
    AttachMode, LinkSlot, ProgramError, TestRun, XdpMode, counter_struct, load_logged,
    register_xsk, rodata, sum_percpu, test_run, unregister_xsk,
};

/// `NTPX_LOAD_COUNTERS`: number of counters.
pub const CLIENT_COUNTERS: usize = 12;

/// Which of the two programs to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientProgramKind {
    /// `ntpx_load_rx`: the server's replies (UDP from the server port) to
    /// the AF_XDP socket of their queue.
    Redirect,
    /// `ntpx_sink`: count and drop UDP to the server port.
    Sink,
    /// `ntpx_reflect`: send UDP to the server port straight back (XDP_TX),
    /// addresses and ports swapped: the link's ceiling.
    Reflect,
}

impl fmt::Display for ClientProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redirect => "redirect",
            Self::Sink => "sink",
            Self::Reflect => "reflect",
        })
    }
}

counter_struct! {
    /// The counters of a [`ClientProgram`], summed over CPUs, one field per
    /// `enum ntpx_load_counter` entry of `bpf/load.h` (same order,
    /// `NTPX_LOAD_` prefix dropped, snake case). Each program bumps only the
    /// fields it uses.
    pub struct ClientCounters[CLIENT_COUNTERS] for "enum ntpx_load_counter" {
        /// Every frame the program ran on.
        seen,
        /// Redirect: a reply handed to the AF_XDP socket of its queue.
        redirected,
        /// Redirect: a reply, but no AF_XDP socket on its queue (passed).
        no_socket,
        /// Redirect: redirected without metadata.
        meta_failed,
        /// Not IPv4/IPv6 (ARP, LLDP, more than two VLAN tags, ...).
        pass_not_ip,
        /// IP but not UDP (ICMP, TCP, IPv6 extension headers).
        pass_not_udp,
        /// UDP, but not from (redirect) / to (sink) the server port.
        pass_other_port,
        /// IPv4 UDP fragment: the kernel reassembles.
        pass_fragment,
        /// Headers cut short or malformed.
        pass_truncated,
        /// Sink: UDP to the server port, dropped.
        sunk,
        /// Sink: the bytes of the `sunk` frames, from the Ethernet header on.
        sunk_bytes,
        /// Reflect: UDP to the server port, sent back.
        reflected,
    }
}

/// One of the load generator's programs, loaded, with its maps and, once
/// attached, its link.
///
/// Holds only file descriptors, so it is `Send + Sync`. Dropping it detaches
/// the program.
#[derive(Debug)]
pub struct ClientProgram {
    kind: ClientProgramKind,
    prog: ProgramHandle,
    /// The XSKMAP; only [`ClientProgramKind::Redirect`] has one.
    xsks: Option<MapHandle>,
    counters: MapHandle,
    link: LinkSlot,
}

impl ClientProgram {
    /// Opens the embedded BPF object, sets the server's UDP port (host
    /// order, normally 123) and loads the program of `kind` through the
    /// verifier (the other one stays unloaded). Needs CAP_BPF (or root).
    pub fn load(kind: ClientProgramKind, server_port: u16) -> Result<Self, ProgramError> {
        let redirect = kind == ClientProgramKind::Redirect;
        let mut storage = MaybeUninit::uninit();
        let mut open: OpenLoadSkel<'_> = LoadSkelBuilder::default()
            .open(&mut storage)
            .map_err(|e| ProgramError::libbpf("open the embedded XDP object", e))?;
        rodata(open.maps.rodata_data.as_deref_mut())?.server_port = server_port;
        open.progs.ntpx_load_rx.set_autoload(redirect);
        open.progs
            .ntpx_sink
            .set_autoload(kind == ClientProgramKind::Sink);
        open.progs
            .ntpx_reflect
            .set_autoload(kind == ClientProgramKind::Reflect);
        // Only the redirect program has a socket map.
        open.maps
            .xsks
            .set_autocreate(redirect)
            .map_err(|e| ProgramError::libbpf("configure the XDP object", e))?;

        let skel = load_logged(
            open,
            match kind {
                ClientProgramKind::Redirect => "ntpx_load_rx",
                ClientProgramKind::Sink => "ntpx_sink",
                ClientProgramKind::Reflect => "ntpx_reflect",
            },
        )?;
        let prog = match kind {
            ClientProgramKind::Redirect => ProgramHandle::try_from(&skel.progs.ntpx_load_rx),
            ClientProgramKind::Sink => ProgramHandle::try_from(&skel.progs.ntpx_sink),
            ClientProgramKind::Reflect => ProgramHandle::try_from(&skel.progs.ntpx_reflect),
        }
        .map_err(|e| ProgramError::libbpf("take the XDP program's fd", e))?;
        let counters = MapHandle::try_from(&skel.maps.counters)
            .map_err(|e| ProgramError::libbpf("take the counters map's fd", e))?;
        let xsks = redirect
            .then(|| MapHandle::try_from(&skel.maps.xsks))
            .transpose()
            .map_err(|e| ProgramError::libbpf("take the xsks map's fd", e))?;
        // Only the duplicated fds in the handles are kept, not the object.
        drop(skel);
        Ok(Self {
            kind,
            prog,
            xsks,
            counters,
            link: LinkSlot::default(),
        })
    }

    /// Which program this is.
    pub fn kind(&self) -> ClientProgramKind {
        self.kind
    }

    /// Attaches the program to interface `ifindex` through a BPF link and
    /// returns the mode it got ([`AttachMode::Auto`]: native, else generic).
    pub fn attach(&mut self, ifindex: u32, mode: AttachMode) -> Result<XdpMode, ProgramError> {
        self.link.attach(&self.prog, ifindex, mode)
    }

    /// Detaches the program (no-op if it is not attached). Dropping the
    /// [`ClientProgram`] does the same.
    pub fn detach(&mut self) -> Result<(), ProgramError> {
        self.link.detach()
    }

    /// Where the program is attached: `(ifindex, mode)`.
    pub fn attached(&self) -> Option<(u32, XdpMode)> {
        self.link.attached()
    }

    /// The kernel's id of the loaded program (as `bpftool prog` shows it).
    pub fn id(&self) -> u32 {
        self.prog.id()
    }

    /// `xsks[queue] = xsk_fd`: hand replies arriving on `queue` to this
    /// AF_XDP socket (bound to that queue, with an RX ring). Only for
    /// [`ClientProgramKind::Redirect`]; the sink has no socket map.
    pub fn register_socket(&self, queue: u32, xsk_fd: RawFd) -> Result<(), ProgramError> {
        register_xsk(self.xsks()?, queue, xsk_fd)
    }

    /// Removes the socket of `queue` (no-op if there is none); its replies
    /// then go to the kernel (`no_socket`). Only for
    /// [`ClientProgramKind::Redirect`].
    pub fn unregister_socket(&self, queue: u32) -> Result<(), ProgramError> {
        unregister_xsk(self.xsks()?, queue)
    }

    fn xsks(&self) -> Result<&MapHandle, ProgramError> {
        self.xsks.as_ref().ok_or_else(|| ProgramError::Os {
            op: "register an AF_XDP socket",
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "the sink program drops what it keeps and has no socket map; load \
                 ClientProgramKind::Redirect to receive frames on AF_XDP sockets",
            ),
        })
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<ClientCounters, ProgramError> {
        sum_percpu(&self.counters).map(ClientCounters::from_array)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (receive
    /// queue 0, no interface). Counters count as for a real frame. For
    /// `Redirect`, a reply gives `XDP_PASS` and `no_socket` while no socket
    /// is registered for queue 0, and `XDP_REDIRECT` with metadata in front
    /// of the frame once one is (the redirect itself is not carried out).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, ProgramError> {
        test_run(&self.prog, frame)
    }
}

// ---------------------------------------------------------------------------
// `ntpx sink`
// ---------------------------------------------------------------------------

/// How [`run_sink`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkOptions {
    /// UDP destination port to drop (the server port the generator aims at).
    pub port: u16,
    /// Attach mode.
    pub mode: AttachMode,
    /// Stop after this long (`None`: only when `stop` is set).
    pub duration: Option<Duration>,
    /// Time between rate lines.
    pub report_every: Duration,
    /// Send the frames back (`ntpx_reflect`) instead of dropping them.
    pub reflect: bool,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            port: 123,
            mode: AttachMode::Auto,
            duration: None,
            report_every: Duration::from_secs(1),
            reflect: false,
        }
    }
}

/// What a [`run_sink`] run dropped (or reflected). Its `Display` is the
/// final line: `sink total: N packets, B bytes in S s (R pkt/s)`, or
/// `reflect total: N packets in S s (R pkt/s)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkTotals {
    /// Frames dropped (`sunk`) or sent back (`reflected`).
    pub packets: u64,
    /// The dropped frames' bytes (`sunk_bytes`); 0 when reflecting.
    pub bytes: u64,
    /// Reflected rather than dropped.
    pub reflected: bool,
    /// From attach to detach.
    pub elapsed: Duration,
    /// The mode the sink ran in.
    pub mode: XdpMode,
}

impl SinkTotals {
    /// Packets per second over the whole run.
    pub fn rate(&self) -> f64 {
        per_second(self.packets, self.elapsed)
    }
}

impl fmt::Display for SinkTotals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reflected {
            return write!(
                f,
                "reflect total: {} packets in {:.2} s ({:.0} pkt/s)",
                self.packets,
                self.elapsed.as_secs_f64(),
                self.rate()
            );
        }
        write!(
            f,
            "sink total: {} packets, {} bytes in {:.2} s ({:.0} pkt/s)",
            self.packets,
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// Longest sleep of the [`run_sink`] loop between looks at `stop`.
const SINK_TICK: Duration = Duration::from_millis(50);

fn per_second(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// `ntpx sink`: loads the sink for `opts.port`, attaches it to `ifindex`
/// and, every `opts.report_every`, writes `sink: R pkt/s  (total N)` to
/// `out`, until `stop` is set (e.g. by a signal handler) or
/// `opts.duration` has passed. Then detaches, writes the [`SinkTotals`]
/// line and returns the totals. On an error the program is detached too.
pub fn run_sink(
    ifindex: u32,
    opts: &SinkOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> anyhow::Result<SinkTotals> {
    let kind = if opts.reflect {
        ClientProgramKind::Reflect
    } else {
        ClientProgramKind::Sink
    };
    let taken = |c: &ClientCounters| if opts.reflect { c.reflected } else { c.sunk };
    let label = if opts.reflect { "reflect" } else { "sink" };
    let mut prog = ClientProgram::load(kind, opts.port)?;
    let mode = prog.attach(ifindex, opts.mode)?;
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let every = opts.report_every.max(SINK_TICK);
    let (mut last_at, mut last_total) = (start, 0u64);
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now.duration_since(last_at) >= every {
            let total = taken(&prog.counters()?);
            let rate = per_second(total.wrapping_sub(last_total), now.duration_since(last_at));
            writeln!(out, "{label}: {rate:.0} pkt/s  (total {total})")
                .and_then(|()| out.flush())
                .context("writing the sink's rate line")?;
            (last_at, last_total) = (now, total);
        }
        let wake = deadline.map_or(last_at + every, |d| d.min(last_at + every));
        std::thread::sleep(wake.saturating_duration_since(now).min(SINK_TICK));
    }
    prog.detach()?;
    let elapsed = start.elapsed();
    // Detached: nothing counts any more, the totals are final.
    let c = prog.counters()?;
    let totals = SinkTotals {
        packets: taken(&c),
        bytes: c.sunk_bytes,
        reflected: opts.reflect,
        elapsed,
        mode,
    };
    writeln!(out, "{totals}")
        .and_then(|()| out.flush())
        .context("writing the sink's totals")?;
    if let Some(r) = crate::sys::bpf::run_stats(prog.id()).filter(|r| r.runs > 0) {
        writeln!(out, "{label} program run time: {r}")
            .and_then(|()| out.flush())
            .context("writing the sink's totals")?;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::bpf::{c_enum_names, skel};

    const HEADER: &str = include_str!("../../bpf/load.h");

    /// The counter names here must match `bpf/load.h`.
    #[test]
    fn matches_header() {
        let names = c_enum_names(HEADER, "ntpx_load_counter", "NTPX_LOAD_");
        assert_eq!(names, ClientCounters::NAMES);
        // `server_port` and nothing else.
        assert_eq!(size_of::<skel::load::types::rodata>(), 2);
    }

    #[test]
    fn counters_roundtrip() {
        let mut values = [0u64; CLIENT_COUNTERS];
        for (v, i) in values.iter_mut().zip(1u64..) {
            *v = i;
        }
        let c = ClientCounters::from_array(values);
        assert_eq!((c.seen, c.no_socket), (1, 3));
        assert_eq!(c.sunk_bytes, 11);
        assert_eq!(c.reflected, CLIENT_COUNTERS as u64);
        assert_eq!(c.to_array(), values);
        assert_eq!(c.fields()[9], ("sunk", 10));
        assert_eq!(c.since(&c), ClientCounters::default());
    }

    #[test]
    fn totals_line() {
        let t = SinkTotals {
            packets: 3_000_000,
            bytes: 270_000_000,
            reflected: false,
            elapsed: Duration::from_millis(2500),
            mode: XdpMode::Native,
        };
        assert_eq!(t.rate(), 1_200_000.0);
        assert_eq!(
            t.to_string(),
            "sink total: 3000000 packets, 270000000 bytes in 2.50 s (1200000 pkt/s)"
        );
        let zero = SinkTotals {
            elapsed: Duration::ZERO,
            ..t
        };
        assert_eq!(zero.rate(), 0.0);
        let r = SinkTotals {
            bytes: 0,
            reflected: true,
            ..t
        };
        assert_eq!(
            r.to_string(),
            "reflect total: 3000000 packets in 2.50 s (1200000 pkt/s)"
        );
    }
}
