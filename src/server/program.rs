//! The XDP steering program and its loader.
//!
//! # What the program does
//!
//! `bpf/ntpx.bpf.c` runs on every frame received by the interface it is
//! attached to. It walks Ethernet (with up to two 802.1Q/802.1ad tags), IPv4
//! (any IHL >= 5) or IPv6 (UDP directly after the fixed header) and UDP, and
//! for UDP to the configured NTP port and to one of the server addresses
//! (any address when none are configured) it looks at the first NTP byte:
//!
//! | frame                                       | verdict        | counter               |
//! |---------------------------------------------|----------------|-----------------------|
//! | first fragment of a request                 | `XDP_DROP`     | `drop_fragment`       |
//! | source port 0                               | `XDP_DROP`     | `drop_src_port_zero`  |
//! | UDP length > frame, or < 8 (worker drops)   | `XDP_REDIRECT` | `redirected`          |
//! | UDP payload < 48 bytes                      | `XDP_DROP`     | `drop_short`          |
//! | mode 4 (a reply to the host's own client)   | `XDP_PASS`     | `pass_server_reply`   |
//! | mode other than 3                           | `XDP_DROP`     | `drop_mode`           |
//! | version 0 or > 4                            | `XDP_DROP`     | `drop_version`        |
//! | client request, no AF_XDP socket on queue   | `XDP_PASS`     | `pass_no_socket`      |
//! | client request                              | `XDP_REDIRECT` | `redirected`          |
//!
//! Everything else is passed to the kernel with a reason counter
//! (`pass_not_ip`, `pass_not_udp`, `pass_other_port`, `pass_not_ours`,
//! `pass_fragment` for fragments other than a request's first,
//! `pass_truncated`). `seen` counts
//! every frame. A redirected frame carries a [`Meta`](crate::sys::xsk::meta::Meta) (the `struct ntpx_meta`
//! of `bpf/ntpx.h`) directly in front of its Ethernet header, with the
//! `bpf_ktime_get_tai_ns()` stamp taken when the program started on the
//! frame; if the driver has no metadata room it is redirected without, and
//! `meta_failed` is counted.
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

use crate::sys::bpf::skel::ntpx::{NtpxSkelBuilder, OpenNtpxSkel};
pub use crate::sys::bpf::{AttachMode, ProgramError, TestRun, XdpMode};
use crate::sys::bpf::{
    LinkSlot, counter_struct, load_logged, register_xsk, rodata, sum_percpu, test_run,
    unregister_xsk,
};
use libbpf_rs::MapHandle;
use libbpf_rs::ProgramHandle;
use libbpf_rs::skel::SkelBuilder;

/// `NTPX_MAX_ADDRS`: the most server addresses of one family.
pub const MAX_ADDRS: usize = 16;
pub use crate::sys::bpf::MAX_QUEUES;
/// `NTPX_COUNTERS`: number of counters.
pub const COUNTERS: usize = 16;

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
}

impl Default for ProgramConfig {
    fn default() -> Self {
        Self {
            port: 123,
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
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
        /// UDP payload shorter than 48 bytes.
        drop_short,
        /// Mode other than 3 (and 4, passed).
        drop_mode,
        /// Version 0 or > 4.
        drop_version,
        /// Source port 0.
        drop_src_port_zero,
        /// The first fragment of a request (so that the kernel never
        /// reassembles it).
        drop_fragment,
    }
}

impl XdpCounters {
    /// The requests the program dropped itself, under the reasons the
    /// workers use for the same requests.
    pub fn request_drops(&self) -> [(crate::proto::drops::DropReason, u64); 5] {
        use crate::proto::drops::DropReason;
        [
            (DropReason::NtpTooShort, self.drop_short),
            (DropReason::NtpMode, self.drop_mode),
            (DropReason::NtpVersion, self.drop_version),
            (DropReason::SrcPortZero, self.drop_src_port_zero),
            (DropReason::Fragment, self.drop_fragment),
        ]
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
        for (slot, addr) in rodata.v4_addrs.iter_mut().zip(&cfg.v4) {
            // Network order in memory: the octets as they are on the wire.
            *slot = u32::from_ne_bytes(addr.octets());
        }
        for (slot, addr) in rodata.v6_addrs.iter_mut().zip(&cfg.v6) {
            let o = addr.octets();
            for (word, chunk) in slot.iter_mut().zip(o.chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }

        let skel = load_logged(open, "ntpx_xdp")?;
        let prog = ProgramHandle::try_from(&skel.progs.ntpx_xdp)
            .map_err(|e| ProgramError::libbpf("take the XDP program's fd", e))?;
        let xsks = MapHandle::try_from(&skel.maps.xsks)
            .map_err(|e| ProgramError::libbpf("take the xsks map's fd", e))?;
        let counters = MapHandle::try_from(&skel.maps.counters)
            .map_err(|e| ProgramError::libbpf("take the counters map's fd", e))?;
        // The handles hold duplicated fds; the libbpf object can go.
        drop(skel);

        Ok(Self {
            prog,
            xsks,
            counters,
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

    /// A reader of the counters for another thread, on a descriptor of its
    /// own.
    pub fn counters_reader(&self) -> Result<CountersReader, ProgramError> {
        MapHandle::try_from(&self.counters)
            .map(CountersReader)
            .map_err(|e| ProgramError::libbpf("duplicate the counters map's fd", e))
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

/// Reads the program's counters (see [`XdpProgram::counters_reader`]).
#[derive(Debug)]
pub struct CountersReader(MapHandle);

impl CountersReader {
    /// The counters, summed over CPUs.
    pub fn read(&self) -> Result<XdpCounters, ProgramError> {
        sum_percpu(&self.0).map(XdpCounters::from_array)
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
        assert_eq!(
            size_of::<skel::ntpx::types::rodata>(),
            2 + 2 + 4 + 4 + 4 * MAX_ADDRS + 16 * MAX_ADDRS
        );
    }

    #[test]
    fn counters_roundtrip() {
        let mut values = [0u64; COUNTERS];
        for (v, i) in values.iter_mut().zip(1u64..) {
            *v = i;
        }
        let c = XdpCounters::from_array(values);
        assert_eq!(c.seen, 1);
        assert_eq!(c.drop_src_port_zero, COUNTERS as u64 - 1);
        assert_eq!(c.drop_fragment, COUNTERS as u64);
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
