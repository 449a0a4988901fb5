//! The XDP program and its loader.
//!
//! # What the program does
//!
//! `bpf/ntpx.bpf.c` runs on every frame received by the interface it is
//! attached to. It walks Ethernet (with up to two 802.1Q/802.1ad tags), IPv4
//! (any IHL >= 5) or IPv6 (UDP directly after the fixed header) and UDP.
//! UDP to the configured NTP port and to one of the server addresses (any
//! address when none are configured) is for the server:
//!
//! | frame for the server                          | verdict        | counter               |
//! |-----------------------------------------------|----------------|-----------------------|
//! | mode 4 (a reply to the host's own client)     | `XDP_PASS`     | `pass_server_reply`   |
//! | plain request, fails a check                  | `XDP_DROP`     | `dropped` + reason    |
//! | plain request, replies in XDP on              | `XDP_TX`       | `replied`             |
//! | any other request (IPv4 options, extension fields, fragments, odd lengths), or a good plain one with replies in XDP off | `XDP_REDIRECT` | `redirected` |
//! | ... with no AF_XDP socket on the queue        | `XDP_PASS`     | `pass_no_socket`      |
//!
//! A *plain* request is IPv4 without options or IPv6 without extension
//! headers, not a fragment, carrying exactly 48 bytes of NTP: what almost
//! every client sends. The program judges it with every check of the Rust
//! responder ([`crate::proto::respond`]), in the same order, and counts a
//! drop under the same [`DropReason`] in its `drops` map; it
//! writes the same reply bytes (`bpf/reply.h`; `tests/xdp_reply.rs` holds
//! the two to that). Everything else for the server goes to the worker,
//! which judges it with the Rust responder: nothing sent to the server's
//! address and port is the kernel's to answer. Judging needs the
//! responder's whole view of the host ([`Judge`]); without it every request
//! goes to the workers.
//!
//! Everything not for the server is passed to the kernel with a reason
//! counter (`pass_not_ip`, `pass_not_udp`, `pass_other_port`,
//! `pass_not_ours`, `pass_fragment` for fragments other than a request's
//! first, `pass_truncated`). `seen` counts every frame. A redirected frame
//! carries a [`Meta`](crate::sys::xsk::meta::Meta) (the `struct ntpx_meta`
//! of `bpf/ntpx.h`) directly in front of its Ethernet header, with the
//! `bpf_ktime_get_tai_ns()` stamp taken when the program started on the
//! frame; if the driver has no metadata room it is redirected without, and
//! `meta_failed` is counted.
//!
//! # Replies in XDP
//!
//! Whether good plain requests are answered in XDP or redirected is part
//! of the server state ([`XdpState`]) that the control thread writes into
//! the `server_state` map about once a second with
//! a [`StateWriter`], so it can change while serving. A reply's
//! receive stamp (T2) is the program's first clock read, its transmit stamp
//! (T3) the last before the UDP checksum; both are `CLOCK_TAI`, converted
//! to UTC with the state's TAI offset. The state carries the time it was
//! written: the program grows its root dispersion at 15 ppm with its age,
//! and once it is older than its bound (a hung or stopped process) answers
//! LI 3, stratum 0 (`replied_stale`). Each reply's RX→TX time goes into a
//! log-linear histogram map ([`hist_bucket_range`]).
//!
//! # Loading and attaching
//!
//! [`XdpProgram::load`] opens the embedded BPF object (built by
//! `bpf/build.rs`), writes the port and addresses into its `.rodata` and
//! loads it through the verifier. [`XdpProgram::attach`] attaches it with a
//! BPF link (`BPF_LINK_CREATE`), so the attachment lives exactly as long as
//! the link's file descriptor: when the process exits or crashes, or the
//! [`XdpProgram`] is dropped, the program is detached by the kernel and
//! nothing is left behind on the interface.
//!
//! # Testing without an interface
//!
//! [`XdpProgram::test_run`] runs the program on one frame with
//! `BPF_PROG_TEST_RUN`. The kernel returns the output buffer starting at
//! `data_meta`, i.e. *including* any metadata the program wrote, and reports
//! the metadata length in the output context; [`TestRun`] keeps both and
//! decodes the metadata.

use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use crate::proto::drops::DropReason;
use crate::proto::ntp::mix::{ClientMix, KINDS, POLLS};
use crate::proto::ntp::{Marker, ServerState};
use crate::proto::policy::Policy;
use crate::proto::respond::Responder;
use crate::server::policy_config::ReversePath;
use crate::sys::bpf::skel::ntpx::{NtpxSkelBuilder, OpenNtpxSkel};
pub use crate::sys::bpf::{AttachMode, ProgramError, TestRun, XdpMode};
use crate::sys::bpf::{
    LinkSlot, counter_struct, load_logged, register_xsk, rodata, sum_percpu, test_run,
    unregister_xsk,
};
use crate::sys::clock::TaiScale;
use crate::sys::clock::phc::PhcMap;
use libbpf_rs::MapHandle;
use libbpf_rs::ProgramHandle;
use libbpf_rs::skel::SkelBuilder;
use libbpf_rs::{MapCore, MapFlags};

/// `NTPX_MAX_ADDRS`: the most server addresses of one family.
pub const MAX_ADDRS: usize = 16;
pub use crate::sys::bpf::MAX_QUEUES;
/// `NTPX_MAX_OWN`: the most own addresses (and subnet edges) of a family
/// that the program can judge against.
pub const MAX_OWN: usize = 64;
/// `NTPX_COUNTERS`: number of counters.
pub const COUNTERS: usize = 31;
/// `NTPX_RP_UPPERS`: the most devices stacked on the interface that the
/// strict reverse-path check knows.
pub const RP_UPPERS: usize = 8;
/// `NTPX_DROP_REASONS`: slots of the `drops` map, the [`DropReason`]s in
/// order.
pub const DROP_REASONS: usize = 41;
/// `NTPX_HIST_BUCKETS`: buckets of the service-time histogram.
pub const HIST_BUCKETS: usize = 256;
/// `NTPX_HIST_SUB_BITS`: each power of two splits into 2^this buckets.
const HIST_SUB_BITS: u32 = 3;
/// The longest bound on the server state's age that the program takes
/// (its arithmetic is exact up to there).
pub const MAX_STATE_AGE_NS: u64 = 3_600_000_000_000;

/// What the program steers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramConfig {
    /// UDP destination port of the server (123).
    pub port: u16,
    /// IPv4 server addresses, at most [`MAX_ADDRS`].
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 server addresses, at most [`MAX_ADDRS`].
    ///
    /// When both lists are empty every destination address matches.
    pub v6: Vec<Ipv6Addr>,
    /// What the program needs to judge plain requests itself; `None`: every
    /// request goes to the workers.
    pub judge: Option<Judge>,
    /// Load device-bound to this interface (`BPF_F_XDP_DEV_BOUND_ONLY`)
    /// and ask its driver for each request's hardware receive stamp. Such
    /// a program attaches in native mode only, and `BPF_PROG_TEST_RUN`
    /// refuses it; the same source, unbound, is what the tests run.
    pub hw_rx_ifindex: Option<u32>,
    /// Access lists, rate limits and the ceiling (`bpf/policy.h`); `None`:
    /// none.
    pub policy: Option<Policy>,
    /// Modes passed to the host's own daemon: bit m for mode m (1, 2, 6).
    pub kernel_modes: u8,
    /// The reverse-path check of sources.
    pub reverse_path: ReversePath,
    /// For a strict check: the devices stacked on the interface (their
    /// indexes), through which the route back may leave too; the program
    /// holds the first [`RP_UPPERS`].
    pub rp_uppers: Vec<u32>,
    /// The self-probe's key (`probe_key` in `bpf/ntpx.bpf.c`): a request
    /// run with it in its metadata is answered past the policy; 0: none.
    pub probe_key: u64,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self {
            port: 123,
            v4: Vec::new(),
            v6: Vec::new(),
            judge: None,
            hw_rx_ifindex: None,
            policy: None,
            kernel_modes: 0,
            reverse_path: ReversePath::Off,
            rp_uppers: Vec::new(),
            probe_key: 0,
        }
    }
}

/// The responder's view of the host, for judging in XDP (the fields of
/// [`Responder`] that the checks read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judge {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// This host's IPv4 addresses, at most [`MAX_OWN`].
    pub own_v4: Vec<Ipv4Addr>,
    /// This host's IPv6 addresses, at most [`MAX_OWN`].
    pub own_v6: Vec<Ipv6Addr>,
    /// Network and broadcast addresses of its IPv4 prefixes, at most
    /// [`MAX_OWN`].
    pub subnet_edges: Vec<Ipv4Addr>,
    /// Drop requests from the loop-prone ports.
    pub drop_loop_ports: bool,
    /// Accept a partial UDP checksum (veth).
    pub accept_partial_checksum: bool,
    /// Replies carry at least this poll exponent.
    pub min_poll: i8,
    /// Drop a reply whose T3 − T2 would pass this (ns); 0: no bound.
    pub max_residence_ns: u64,
    /// While the state says unsynchronised, drop rather than answer LI 3.
    pub drop_unsynchronized: bool,
    /// Interleaved mode: mark T2 alike, send marked requests to the
    /// workers.
    pub interleave: Option<Marker>,
}

impl ProgramConfig {
    /// The program that judges exactly as `r` does. Judging is left to the
    /// workers (`judge: None`) when the host has more own addresses than
    /// the program holds ([`MAX_OWN`]) or no served address: the caller
    /// can tell from [`ProgramConfig::judge`].
    pub fn for_responder(r: &Responder) -> Self {
        let fits = r.own_v4.len() <= MAX_OWN
            && r.own_v6.len() <= MAX_OWN
            && r.subnet_edges.len() <= MAX_OWN
            && (!r.v4.is_empty() || !r.v6.is_empty());
        ProgramConfig {
            port: r.port,
            v4: r.v4.clone(),
            v6: r.v6.clone(),
            judge: fits.then(|| Judge {
                mac: r.mac,
                own_v4: r.own_v4.clone(),
                own_v6: r.own_v6.clone(),
                subnet_edges: r.subnet_edges.clone(),
                drop_loop_ports: r.drop_loop_ports,
                accept_partial_checksum: r.accept_partial_checksum,
                min_poll: r.policy.min_poll,
                max_residence_ns: 0,
                drop_unsynchronized: r.policy.drop_unsynchronized,
                interleave: r.interleave,
            }),
            hw_rx_ifindex: None,
            policy: None,
            kernel_modes: 0,
            reverse_path: ReversePath::Off,
            rp_uppers: Vec::new(),
            probe_key: 0,
        }
    }
}

/// Bytes of `struct ntpx_state`.
const STATE_LEN: usize = 96;

/// The server state as the program reads it (`struct ntpx_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpState {
    /// The header fields.
    pub ntp: ServerState,
    /// TAI − UTC, and the instant a pending leap second changes it.
    pub tai: TaiScale,
    /// The NIC clock → `CLOCK_TAI` mapping, for hardware receive stamps.
    pub phc: Option<PhcMap>,
    /// `CLOCK_TAI` when this was written (0: never).
    pub written_tai_ns: u64,
    /// Older than this, replies say LI 3 (at most [`MAX_STATE_AGE_NS`]).
    pub max_age_ns: u64,
    /// Answer good plain requests in XDP (else redirect them).
    pub reply_in_xdp: bool,
    /// Send requests whose UDP checksum is partial to the workers even so:
    /// in generic mode, where `XDP_TX` sends the request's own skb with
    /// its `CHECKSUM_PARTIAL` mark, which a later hop would apply to the
    /// full checksum written in XDP.
    pub partial_to_workers: bool,
    /// Out of service, saying nothing: every request is dropped
    /// (`draining`).
    pub draining: bool,
}

impl XdpState {
    /// The map value: `struct ntpx_state`, host byte order.
    fn to_bytes(self) -> [u8; STATE_LEN] {
        let n = &self.ntp;
        let mut b = [0u8; STATE_LEN];
        b[0..8].copy_from_slice(&self.written_tai_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.max_age_ns.min(MAX_STATE_AGE_NS).to_ne_bytes());
        b[16..24].copy_from_slice(&n.ref_time.to_bits().to_ne_bytes());
        b[24..32].copy_from_slice(&i64::from(self.tai.offset_s).to_ne_bytes());
        b[32..36].copy_from_slice(&n.root_delay.to_bits().to_ne_bytes());
        b[36..40].copy_from_slice(&n.root_dispersion.to_bits().to_ne_bytes());
        b[40..44].copy_from_slice(&n.ref_id);
        b[44] = n.leap as u8;
        b[45] = n.stratum;
        b[46] = n.precision as u8;
        b[47] = u8::from(self.reply_in_xdp);
        b[48] = u8::from(self.partial_to_workers);
        b[49] = u8::from(self.draining);
        b[56..64].copy_from_slice(&self.tai.leap_tai_ns.to_ne_bytes());
        b[64..72].copy_from_slice(&i64::from(self.tai.offset_after_s).to_ne_bytes());
        if let Some(m) = self.phc {
            b[72..80].copy_from_slice(&m.phc_ref_ns.to_ne_bytes());
            b[80..88].copy_from_slice(&m.tai_ref_ns.to_ne_bytes());
            b[88..96].copy_from_slice(&m.rate_q32.to_ne_bytes());
        }
        b
    }
}

/// The values bucket `b` of the service-time histogram holds: `lo..=hi`
/// nanoseconds (see `hist_bucket()` in `bpf/reply.h`).
pub fn hist_bucket_range(b: usize) -> (u64, u64) {
    let sub = 1u64 << HIST_SUB_BITS;
    let b = b as u64;
    if b < sub {
        return (b, b);
    }
    let shift = b / sub - 1;
    let lo = (sub + b % sub) << shift;
    (lo, ((sub + b % sub + 1) << shift) - 1)
}

counter_struct! {
    /// The program's counters, summed over CPUs, one field per
    /// `enum ntpx_counter` entry (same order, `NTPX_` prefix dropped,
    /// snake case).
    pub struct XdpCounters[COUNTERS] for "enum ntpx_counter" {
        /// Every frame the program ran on.
        seen,
        /// Handed to the AF_XDP socket of its queue.
        redirected,
        /// Not IPv4/IPv6 (ARP, LLDP, more than two VLAN tags, ...).
        pass_not_ip,
        /// IP but not UDP (ICMP, TCP, IPv6 extension headers).
        pass_not_udp,
        /// UDP to another port.
        pass_other_port,
        /// NTP port, destination not a server address.
        pass_not_ours,
        /// A fragment of something not ours, or not the first one: the
        /// kernel reassembles (or, without the first, discards).
        pass_fragment,
        /// Headers cut short or malformed: the kernel decides.
        pass_truncated,
        /// Mode 4: a reply to the host's own NTP client.
        pass_server_reply,
        /// No AF_XDP socket on this queue.
        pass_no_socket,
        /// Redirected without metadata.
        meta_failed,
        /// Judged here and dropped (the reasons are in the `drops` map).
        dropped,
        /// Answered here (`XDP_TX`).
        replied,
        /// ... of which the request's UDP checksum was partial (veth).
        replied_partial,
        /// ... of which with LI 3: the server state was too old.
        replied_stale,
        /// Replies dropped because their padding could not be cut
        /// (counted under `truncated` too).
        trim_failed,
        /// Replies dropped because their T3 − T2 passed the bound.
        late,
        /// Of the redirected: requests from interleaved clients (their
        /// origin carries our mark), whose state the workers keep.
        interleaved,
        /// Device-bound: requests the driver gave no hardware receive
        /// stamp for (an error, or 0 as on a veth); the software stamp
        /// served.
        hw_rx_missing,
        /// A hardware stamp, but no usable PHC → TAI mapping; the software
        /// stamp served.
        hw_rx_unmapped,
        /// Mode 1, 2 or 6, left by the configuration (`kernel_modes`) to
        /// the host's own daemon.
        pass_kernel_mode,
        /// Answered here with a Kiss-o'-Death RATE.
        kod_rate,
        /// Answered here with a Kiss-o'-Death DENY.
        kod_deny,
        /// Requests over their client's limit (each then leaked, answered
        /// with a KoD, or dropped as `rate_limited`).
        rl_limited,
        /// ... of which answered anyway: the leak.
        rl_leaked,
        /// Clients that went over their limit, once per episode (until
        /// they are within it again).
        rl_clients,
        /// Limited clients that went on to ask twice as fast, once per
        /// episode.
        rl_speedup,
        /// Clients entered into the rate limiter's table.
        rl_new,
        /// The reverse-path check is on but its route lookup failed (lo's
        /// forwarding turned off since the start): answered unchecked.
        rp_unchecked,
        /// Of the replied: T2 was the NIC's hardware receive stamp (else
        /// the program's software one).
        replied_hw,
        /// Top-talker samples dropped: their ring was full.
        talker_lost,
    }
}

/// The loaded program, its maps and, once attached, its link.
///
/// Holds only file descriptors (no libbpf object), so it is `Send + Sync`.
/// Dropping it detaches the program.
#[derive(Debug)]
pub struct XdpProgram {
    prog: ProgramHandle,
    xsks: MapHandle,
    counters: MapHandle,
    drops: MapHandle,
    hist: MapHandle,
    mix: MapHandle,
    polls: MapHandle,
    state: MapHandle,
    state_slot: MapHandle,
    talkers: MapHandle,
    access: super::xdp_policy::PolicyMaps,
    attachment: LinkSlot,
}

impl XdpProgram {
    /// Opens the embedded BPF object, configures it and loads it through
    /// the verifier. Needs CAP_BPF (or root).
    pub fn load(cfg: &ProgramConfig) -> Result<Self, ProgramError> {
        if cfg.v4.len() > MAX_ADDRS {
            return Err(ProgramError::TooManyAddresses {
                family: 4,
                count: cfg.v4.len(),
                max: MAX_ADDRS,
            });
        }
        if cfg.v6.len() > MAX_ADDRS {
            return Err(ProgramError::TooManyAddresses {
                family: 6,
                count: cfg.v6.len(),
                max: MAX_ADDRS,
            });
        }

        let mut storage = MaybeUninit::uninit();
        let mut open: OpenNtpxSkel<'_> = NtpxSkelBuilder::default()
            .open(&mut storage)
            .map_err(|e| ProgramError::libbpf("open the embedded XDP object", e))?;

        let rodata = rodata(open.maps.rodata_data.as_deref_mut())?;
        rodata.ntp_port = cfg.port;
        // Lengths were checked against MAX_ADDRS (16) above.
        rodata.n_v4 = u32::try_from(cfg.v4.len()).unwrap_or(0);
        rodata.n_v6 = u32::try_from(cfg.v6.len()).unwrap_or(0);
        put_v4(&mut rodata.v4_addrs, &cfg.v4);
        put_v6(&mut rodata.v6_addrs, &cfg.v6);

        if let Some(j) = &cfg.judge {
            for (family, n) in [
                (4, j.own_v4.len()),
                (6, j.own_v6.len()),
                (4, j.subnet_edges.len()),
            ] {
                if n > MAX_OWN {
                    return Err(ProgramError::TooManyAddresses {
                        family,
                        count: n,
                        max: MAX_OWN,
                    });
                }
            }
            rodata.judge = 1;
            rodata.our_mac = j.mac;
            rodata.n_own_v4 = u32::try_from(j.own_v4.len()).unwrap_or(0);
            rodata.n_own_v6 = u32::try_from(j.own_v6.len()).unwrap_or(0);
            rodata.n_edges = u32::try_from(j.subnet_edges.len()).unwrap_or(0);
            put_v4(&mut rodata.own_v4_addrs, &j.own_v4);
            put_v4(&mut rodata.subnet_edges, &j.subnet_edges);
            put_v6(&mut rodata.own_v6_addrs, &j.own_v6);
            rodata.drop_loop_ports = u8::from(j.drop_loop_ports);
            rodata.accept_partial_checksum = u8::from(j.accept_partial_checksum);
            rodata.min_poll = j.min_poll;
            rodata.max_residence_ns = j.max_residence_ns;
            rodata.drop_unsync = u8::from(j.drop_unsynchronized);
            if let Some(m) = j.interleave {
                rodata.xleave_bits = m.bits;
                rodata.xleave_k0 = m.key[0];
                rodata.xleave_k1 = m.key[1];
            }
        }

        rodata.kernel_modes = cfg.kernel_modes;
        rodata.probe_key = cfg.probe_key;
        rodata.rp_mode = cfg.reverse_path as u8;
        // More than RP_UPPERS: `serve` refuses them before (see the field).
        for (slot, &i) in rodata.rp_uppers.iter_mut().zip(&cfg.rp_uppers) {
            *slot = i;
        }
        if let Some(p) = &cfg.policy {
            super::xdp_policy::size_maps(&mut open, p)?;
        }

        // One of the two variants (bpf/ntpx.bpf.c): device-bound, asking
        // for hardware receive stamps, or not.
        let name = match cfg.hw_rx_ifindex {
            Some(ifindex) => {
                open.progs.ntpx_xdp.set_autoload(false);
                open.progs.ntpx_xdp_hw.set_ifindex(ifindex);
                open.progs
                    .ntpx_xdp_hw
                    .set_flags(crate::sys::bpf::XDP_DEV_BOUND_ONLY);
                "ntpx_xdp_hw"
            }
            None => {
                open.progs.ntpx_xdp_hw.set_autoload(false);
                "ntpx_xdp"
            }
        };
        let skel = load_logged(open, name)?;
        let loaded = if cfg.hw_rx_ifindex.is_some() {
            &skel.progs.ntpx_xdp_hw
        } else {
            &skel.progs.ntpx_xdp
        };
        let prog = ProgramHandle::try_from(loaded)
            .map_err(|e| ProgramError::libbpf("take the XDP program's fd", e))?;
        let take = |map: &libbpf_rs::Map<'_>, what: &'static str| {
            MapHandle::try_from(map).map_err(|e| ProgramError::libbpf(what, e))
        };
        let xsks = take(&skel.maps.xsks, "take the xsks map's fd")?;
        let counters = take(&skel.maps.counters, "take the counters map's fd")?;
        let drops = take(&skel.maps.drops, "take the drops map's fd")?;
        let hist = take(&skel.maps.service_hist, "take the service_hist map's fd")?;
        let mix = take(&skel.maps.mix, "take the mix map's fd")?;
        let polls = take(&skel.maps.polls, "take the polls map's fd")?;
        let state = take(&skel.maps.server_state, "take the server_state map's fd")?;
        let state_slot = take(&skel.maps.state_slot, "take the state_slot map's fd")?;
        let talkers = take(&skel.maps.talkers, "take the talkers ring's fd")?;
        let access = super::xdp_policy::PolicyMaps::of(&skel.maps)?;
        if let Some(p) = &cfg.policy {
            access.apply(None, p)?;
        }
        // The handles hold duplicated fds; the libbpf object can go.
        drop(skel);

        Ok(Self {
            prog,
            xsks,
            counters,
            drops,
            hist,
            mix,
            polls,
            state,
            state_slot,
            talkers,
            access,
            attachment: LinkSlot::default(),
        })
    }

    /// Attaches the program to interface `ifindex` through a BPF link and
    /// returns the mode it got.
    pub fn attach(&mut self, ifindex: u32, mode: AttachMode) -> Result<XdpMode, ProgramError> {
        self.attachment.attach(&self.prog, ifindex, mode)
    }

    /// Detaches the program (no-op if it is not attached). Dropping the
    /// [`XdpProgram`] does the same.
    pub fn detach(&mut self) -> Result<(), ProgramError> {
        self.attachment.detach()
    }

    /// Where the program is attached: `(ifindex, mode)`.
    pub fn attached(&self) -> Option<(u32, XdpMode)> {
        self.attachment.attached()
    }

    /// The kernel's id of the loaded program (as `bpftool prog` shows it).
    pub fn id(&self) -> u32 {
        self.prog.id()
    }

    /// `xsks[queue] = xsk_fd`: redirect requests arriving on `queue` to this
    /// AF_XDP socket (which must be bound to that queue with an RX ring).
    pub fn register_socket(&self, queue: u32, xsk_fd: RawFd) -> Result<(), ProgramError> {
        register_xsk(&self.xsks, queue, xsk_fd)
    }

    /// Removes the socket of `queue` (no-op if there is none); its requests
    /// then go to the kernel (`pass_no_socket`).
    pub fn unregister_socket(&self, queue: u32) -> Result<(), ProgramError> {
        unregister_xsk(&self.xsks, queue)
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, ProgramError> {
        sum_percpu(&self.counters).map(XdpCounters::from_array)
    }

    /// The program for the self-probe: runs a frame through it with
    /// `BPF_PROG_TEST_RUN`, `key` in its metadata (on a descriptor of its
    /// own, for the control thread).
    pub fn prober(&self, key: u64) -> Result<Prober, ProgramError> {
        let prog = ProgramHandle::try_from(&self.prog)
            .map_err(|e| ProgramError::libbpf("duplicate the program's fd", e))?;
        Ok(Prober { prog, key })
    }

    /// The top talkers' ring of samples (`struct ntpx_talker`), on a
    /// descriptor of its own.
    pub fn talker_ring(&self) -> Result<MapHandle, ProgramError> {
        MapHandle::try_from(&self.talkers)
            .map_err(|e| ProgramError::libbpf("duplicate the talkers ring's fd", e))
    }

    /// The live policy's maps for another thread (a reload changes them).
    pub fn policy_maps(&self) -> Result<super::xdp_policy::PolicyMaps, ProgramError> {
        self.access.dup()
    }

    /// The queue → socket map for another thread (the watchdog), on a
    /// descriptor of its own.
    pub fn xsk_map(&self) -> Result<XskMap, ProgramError> {
        MapHandle::try_from(&self.xsks)
            .map(XskMap)
            .map_err(|e| ProgramError::libbpf("duplicate the socket map's fd", e))
    }

    /// A reader of the counters, drops and histogram for another thread,
    /// on descriptors of its own.
    pub fn counters_reader(&self) -> Result<CountersReader, ProgramError> {
        let dup = |m: &MapHandle| {
            MapHandle::try_from(m)
                .map_err(|e| ProgramError::libbpf("duplicate a counters map's fd", e))
        };
        Ok(CountersReader {
            counters: dup(&self.counters)?,
            drops: dup(&self.drops)?,
            hist: dup(&self.hist)?,
            mix: dup(&self.mix)?,
            polls: dup(&self.polls)?,
        })
    }

    /// The writer of the server state. One at a time: each writes the slot
    /// that was not current when it was made, then flips.
    pub fn state_writer(&self) -> Result<StateWriter, ProgramError> {
        let dup = |m: &MapHandle| {
            MapHandle::try_from(m)
                .map_err(|e| ProgramError::libbpf("duplicate a server state map's fd", e))
        };
        // Write the slot the program is not reading now.
        let current = self
            .state_slot
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| v.get(..4)?.try_into().ok().map(u32::from_ne_bytes))
            .unwrap_or(0);
        Ok(StateWriter {
            slots: dup(&self.state)?,
            current: dup(&self.state_slot)?,
            next: (current & 1) ^ 1,
        })
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (receive
    /// queue 0, no interface). Counters count as for a real frame. With no
    /// socket registered for queue 0 a valid request gives `XDP_PASS` and
    /// `pass_no_socket`; with one, `XDP_REDIRECT` and metadata in front of
    /// the frame (the redirect itself is not carried out).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, ProgramError> {
        test_run(&self.prog, frame)
    }
}

/// IPv4 addresses into `.rodata` slots, network order in memory: the
/// octets as they are on the wire, compared word for word with the packet.
fn put_v4(slots: &mut [u32], addrs: &[Ipv4Addr]) {
    for (slot, addr) in slots.iter_mut().zip(addrs) {
        *slot = u32::from_ne_bytes(addr.octets());
    }
}

/// IPv6 addresses into `.rodata` slots of four 32-bit words each, network
/// order in memory.
fn put_v6(slots: &mut [[u32; 4]], addrs: &[Ipv6Addr]) {
    for (slot, addr) in slots.iter_mut().zip(addrs) {
        let o = addr.octets();
        for (word, chunk) in slot.iter_mut().zip(o.chunks_exact(4)) {
            *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
}

/// Runs frames through the live program for the self-probe (see
/// [`XdpProgram::prober`]).
#[derive(Debug)]
pub struct Prober {
    prog: ProgramHandle,
    key: u64,
}

impl Prober {
    /// Runs `frame` with the key in its metadata: what the program made of
    /// it (a reply in the frame, for `XDP_TX`).
    pub fn run(&self, frame: &[u8]) -> Result<TestRun, ProgramError> {
        crate::sys::bpf::test_run_with_meta(&self.prog, &self.key.to_ne_bytes(), frame)
    }
}

/// Reads the program's counters (see [`XdpProgram::counters_reader`]).
#[derive(Debug)]
pub struct CountersReader {
    counters: MapHandle,
    drops: MapHandle,
    hist: MapHandle,
    mix: MapHandle,
    polls: MapHandle,
}

impl CountersReader {
    /// The counters, summed over CPUs.
    pub fn read(&self) -> Result<XdpCounters, ProgramError> {
        sum_percpu(&self.counters).map(XdpCounters::from_array)
    }

    /// The client mix the program counted, summed over CPUs.
    pub fn client_mix(&self) -> Result<ClientMix, ProgramError> {
        Ok(ClientMix {
            kinds: sum_percpu::<KINDS>(&self.mix)?,
            polls: sum_percpu::<POLLS>(&self.polls)?,
        })
    }

    /// The requests judged and dropped in XDP, by reason, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(DropReason, u64)>, ProgramError> {
        let counts: [u64; DROP_REASONS] = sum_percpu(&self.drops)?;
        Ok(DropReason::ALL.iter().copied().zip(counts).collect())
    }

    /// The replies' RX→TX service times: `(bucket, count)` for every
    /// non-empty bucket (read with [`hist_bucket_range`]).
    pub fn service_buckets(&self) -> Result<Vec<(usize, u64)>, ProgramError> {
        let counts: [u64; HIST_BUCKETS] = sum_percpu(&self.hist)?;
        Ok(counts
            .into_iter()
            .enumerate()
            .filter(|&(_, n)| n > 0)
            .collect())
    }
}

/// The program's queue → AF_XDP socket map (`xsks`): a queue without a
/// socket in it goes to the kernel (`pass_no_socket`).
#[derive(Debug)]
pub struct XskMap(MapHandle);

impl XskMap {
    /// Steers `queue` to the socket `xsk_fd` again.
    pub fn register(&self, queue: u32, xsk_fd: RawFd) -> Result<(), ProgramError> {
        register_xsk(&self.0, queue, xsk_fd)
    }

    /// Leaves `queue` to the kernel.
    pub fn unregister(&self, queue: u32) -> Result<(), ProgramError> {
        unregister_xsk(&self.0, queue)
    }
}

/// Writes the server state that replies from XDP carry (see
/// [`XdpProgram::state_writer`]).
#[derive(Debug)]
pub struct StateWriter {
    slots: MapHandle,
    current: MapHandle,
    next: u32,
}

impl StateWriter {
    /// Replaces the state: writes the slot the program is not reading, then
    /// points it there, so that it never sees a half-written state.
    pub fn publish(&mut self, s: &XdpState) -> Result<(), ProgramError> {
        let slot = self.next;
        self.slots
            .update(&slot.to_ne_bytes(), &s.to_bytes(), MapFlags::ANY)
            .map_err(|e| ProgramError::libbpf("write the server state", e))?;
        self.current
            .update(&0u32.to_ne_bytes(), &slot.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| ProgramError::libbpf("switch the server state", e))?;
        self.next = slot ^ 1;
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::bpf::{c_enum_names, skel};
    use crate::sys::xsk::meta::META_MAGIC;

    const HEADER: &str = include_str!("../../bpf/ntpx.h");

    fn define(name: &str) -> Option<&'static str> {
        HEADER.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("#define") && w.next() == Some(name))
                .then(|| w.next())
                .flatten()
        })
    }

    /// The counter names and constants here must match `bpf/ntpx.h`.
    #[test]
    fn matches_header() {
        let names = c_enum_names(HEADER, "ntpx_counter", "NTPX_");
        assert_eq!(names, XdpCounters::NAMES);
        // The drop reasons: DropReason's first DROP_REASONS, in order.
        let drops: Vec<String> = HEADER
            .split("enum ntpx_drop {")
            .nth(1)
            .and_then(|s| s.split("};").next())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().split([',', ' ', '=']).next())
            .filter(|n| n.starts_with("NTPX_DROP_") && *n != "NTPX_DROP_REASONS")
            .map(|n| n.trim_start_matches("NTPX_DROP_").to_ascii_lowercase())
            .collect();
        let labels: Vec<&str> = DropReason::ALL[..DROP_REASONS]
            .iter()
            .map(|r| r.label())
            .collect();
        assert_eq!(drops, labels);
        for (name, value) in [
            ("NTPX_MAX_OWN", MAX_OWN),
            ("NTPX_HIST_BUCKETS", HIST_BUCKETS),
            ("NTPX_HIST_SUB_BITS", HIST_SUB_BITS as usize),
            (
                "NTPX_META_KOD_RATE",
                crate::sys::xsk::meta::META_KOD_RATE as usize,
            ),
            (
                "NTPX_META_KOD_DENY",
                crate::sys::xsk::meta::META_KOD_DENY as usize,
            ),
            ("NTPX_RP_UPPERS", RP_UPPERS),
            ("NTPX_KINDS", KINDS),
            (
                "NTPX_TALKER_SAMPLE",
                crate::server::talkers::SAMPLE as usize,
            ),
            ("NTPX_POLLS", POLLS),
        ] {
            assert_eq!(define(name), Some(value.to_string().as_str()), "{name}");
        }
        assert_eq!(
            define("NTPX_MAX_ADDRS"),
            Some(MAX_ADDRS.to_string().as_str())
        );
        assert_eq!(
            define("NTPX_MAX_QUEUES"),
            Some(MAX_QUEUES.to_string().as_str())
        );
        assert_eq!(
            define("NTPX_META_MAGIC"),
            Some(format!("{META_MAGIC:#x}u").as_str())
        );
        assert_eq!(size_of::<skel::ntpx::types::ntpx_state>(), STATE_LEN);
        assert_eq!(
            define("NTPX_MIN_POLL"),
            Some(crate::proto::ntp::mix::MIN_POLL.to_string().as_str())
        );
        // ReversePath's values are enum ntpx_rp's.
        let rp = HEADER
            .split("enum ntpx_rp {")
            .nth(1)
            .and_then(|s| s.split("};").next())
            .unwrap_or_default();
        for (name, mode) in [
            ("NTPX_RP_OFF", ReversePath::Off),
            ("NTPX_RP_LOOSE", ReversePath::Loose),
            ("NTPX_RP_STRICT", ReversePath::Strict),
        ] {
            let line = rp.lines().find(|l| l.trim().starts_with(name));
            let want = format!("{name} = {},", mode as u8);
            assert!(
                line.is_some_and(|l| l.trim().starts_with(&want)),
                "{name}: {line:?}"
            );
        }
    }

    #[test]
    fn state_bytes_follow_the_c_layout() {
        use crate::proto::ntp::{Leap, NtpShort, NtpTimestamp};
        let s = XdpState {
            ntp: ServerState {
                leap: Leap::Delete,
                stratum: 3,
                precision: -20,
                root_delay: NtpShort::from_bits(0x1122_3344),
                root_dispersion: NtpShort::from_bits(0x5566_7788),
                ref_id: *b"GPS\0",
                ref_time: NtpTimestamp::from_bits(0x0102_0304_0506_0708),
            },
            tai: TaiScale {
                offset_s: -37,
                leap_tai_ns: 0x0a0b_0c0d_0e0f_1011,
                offset_after_s: -36,
            },
            phc: Some(PhcMap {
                phc_ref_ns: 0x1112_1314_1516_1718,
                tai_ref_ns: 0x2122_2324_2526_2728,
                rate_q32: -5,
            }),
            written_tai_ns: 9,
            max_age_ns: u64::MAX,
            reply_in_xdp: true,
            partial_to_workers: true,
            draining: true,
        };
        let b = s.to_bytes();
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        let st = skel::ntpx::types::ntpx_state::default();
        let base = std::ptr::addr_of!(st) as usize;
        let off = |p: *const u8| p as usize - base;
        assert_eq!(off(std::ptr::addr_of!(st.written_tai_ns).cast()), 0);
        assert_eq!(u64_at(0), 9);
        assert_eq!(off(std::ptr::addr_of!(st.max_age_ns).cast()), 8);
        assert_eq!(u64_at(8), MAX_STATE_AGE_NS, "the bound is capped");
        assert_eq!(off(std::ptr::addr_of!(st.ref_time).cast()), 16);
        assert_eq!(u64_at(16), 0x0102_0304_0506_0708);
        assert_eq!(off(std::ptr::addr_of!(st.tai_offset_s).cast()), 24);
        assert_eq!(u64_at(24) as i64, -37);
        assert_eq!(off(std::ptr::addr_of!(st.root_delay).cast()), 32);
        assert_eq!(u32_at(32), 0x1122_3344);
        assert_eq!(off(std::ptr::addr_of!(st.root_dispersion).cast()), 36);
        assert_eq!(u32_at(36), 0x5566_7788);
        assert_eq!(off(std::ptr::addr_of!(st.ref_id).cast()), 40);
        assert_eq!(&b[40..44], b"GPS\0");
        assert_eq!(off(std::ptr::addr_of!(st.leap)), 44);
        assert_eq!(b[44..48], [2, 3, (-20i8) as u8, 1]);
        assert_eq!(off(std::ptr::addr_of!(st.reply_in_xdp)), 47);
        assert_eq!(off(std::ptr::addr_of!(st.partial_to_workers)), 48);
        assert_eq!(b[48], 1);
        assert_eq!(off(std::ptr::addr_of!(st.draining)), 49);
        assert_eq!(b[49], 1);
        assert_eq!(off(std::ptr::addr_of!(st.leap_tai_ns).cast()), 56);
        assert_eq!(u64_at(56), 0x0a0b_0c0d_0e0f_1011);
        assert_eq!(off(std::ptr::addr_of!(st.tai_offset_after_s).cast()), 64);
        assert_eq!(u64_at(64) as i64, -36);
        assert_eq!(off(std::ptr::addr_of!(st.phc_ref_ns).cast()), 72);
        assert_eq!(u64_at(72), 0x1112_1314_1516_1718);
        assert_eq!(off(std::ptr::addr_of!(st.phc_tai_ref_ns).cast()), 80);
        assert_eq!(u64_at(80), 0x2122_2324_2526_2728);
        assert_eq!(off(std::ptr::addr_of!(st.phc_rate_q32).cast()), 88);
        assert_eq!(u64_at(88) as i64, -5);
        assert_eq!(std::mem::size_of_val(&st), STATE_LEN);
    }

    #[test]
    fn histogram_buckets_tile_the_line() {
        // Contiguous, each starting where the last ended, up to 2^32 ns.
        let mut next = 0;
        for b in 0..HIST_BUCKETS {
            let (lo, hi) = hist_bucket_range(b);
            if lo >= 1 << 32 {
                break;
            }
            assert_eq!(lo, next, "bucket {b}");
            assert!(hi >= lo);
            // At most 1/8 wide: a service time is off by at most 12.5 %.
            assert!((hi - lo) * 8 <= lo.max(8), "bucket {b}: {lo}..={hi}");
            next = hi + 1;
        }
        assert_eq!(next, 1 << 32);
        assert_eq!(hist_bucket_range(8), (8, 8));
        assert_eq!(hist_bucket_range(16), (16, 17));
    }

    #[test]
    fn counters_roundtrip() {
        let mut values = [0u64; COUNTERS];
        for (v, i) in values.iter_mut().zip(1u64..) {
            *v = i;
        }
        let c = XdpCounters::from_array(values);
        assert_eq!(c.seen, 1);
        assert_eq!(c.trim_failed, 16);
        assert_eq!(c.late, 17);
        assert_eq!(c.interleaved, 18);
        assert_eq!(c.hw_rx_unmapped, 20);
        assert_eq!(c.pass_kernel_mode, 21);
        assert_eq!(c.rl_new, COUNTERS as u64 - 3);
        assert_eq!(c.rp_unchecked, COUNTERS as u64 - 2);
        assert_eq!(c.replied_hw, COUNTERS as u64 - 1);
        assert_eq!(c.talker_lost, COUNTERS as u64);
        assert_eq!(c.to_array(), values);
        assert_eq!(c.fields()[2], ("pass_not_ip", 3));
        assert_eq!(c.since(&c), XdpCounters::default());
    }

    #[test]
    fn too_many_addresses() {
        let cfg = ProgramConfig {
            v4: vec![Ipv4Addr::LOCALHOST; MAX_ADDRS + 1],
            ..Default::default()
        };
        assert!(matches!(
            XdpProgram::load(&cfg),
            Err(ProgramError::TooManyAddresses {
                family: 4,
                count: 17,
                max: MAX_ADDRS
            })
        ));
    }
}
