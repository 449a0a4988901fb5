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
//! | source port 0                               | `XDP_DROP`     | `drop_src_port_zero`  |
//! | UDP length > frame, or < 8                  | `XDP_PASS`     | `pass_truncated`      |
//! | UDP payload < 48 bytes                      | `XDP_DROP`     | `drop_short`          |
//! | mode 4 (a reply to the host's own client)   | `XDP_PASS`     | `pass_server_reply`   |
//! | mode other than 3                           | `XDP_DROP`     | `drop_mode`           |
//! | version 0 or > 4                            | `XDP_DROP`     | `drop_version`        |
//! | client request, no AF_XDP socket on queue   | `XDP_PASS`     | `pass_no_socket`      |
//! | client request                              | `XDP_REDIRECT` | `redirected`          |
//!
//! Everything else is passed to the kernel with a reason counter
//! (`pass_not_ip`, `pass_not_udp`, `pass_other_port`, `pass_not_ours`,
//! `pass_fragment` for IPv4 UDP fragments, `pass_truncated`). `seen` counts
//! every frame. A redirected frame carries a [`Meta`] (the `struct ntpx_meta`
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

use std::ffi::{CStr, c_void};
use std::fmt;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use super::meta::{META_LEN, Meta};
use libbpf_rs::{AsRawLibbpf, ErrorKind, MapCore, MapFlags, MapHandle, ProgramHandle, libbpf_sys};

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    unreachable_pub
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/ntpx.skel.rs"));
}

use skel::{NtpxSkelBuilder, OpenNtpxSkel};

/// `NTPX_MAX_ADDRS`: the most server addresses of one family.
pub const MAX_ADDRS: usize = 16;
/// `NTPX_MAX_QUEUES`: slots in the `xsks` map (queue ids `0..MAX_QUEUES`).
pub const MAX_QUEUES: u32 = 256;
/// `NTPX_COUNTERS`: number of counters.
pub const COUNTERS: usize = 15;

/// `XDP_ABORTED`: the program failed.
pub const XDP_ABORTED: u32 = 0;
/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`: to the kernel's stack.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT`: to the AF_XDP socket.
pub const XDP_REDIRECT: u32 = 4;

/// Size of the buffer that receives the verifier log if loading fails.
const VERIFIER_LOG_LEN: usize = 1 << 20;
/// Lines of the verifier log kept in [`ProgramError::VerifierRejected`].
const VERIFIER_LOG_TAIL_LINES: usize = 30;
/// Room beyond the input frame for what the program may add in test runs.
const TEST_RUN_SLACK: usize = 512;
/// Smallest frame `BPF_PROG_TEST_RUN` accepts for XDP (`ETH_HLEN`).
const MIN_TEST_FRAME: usize = 14;

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

/// The mode the program ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// After the skb is built (`XDP_FLAGS_SKB_MODE`), works on any device.
    Generic,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            Self::Native => libbpf_sys::XDP_FLAGS_DRV_MODE,
            Self::Generic => libbpf_sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// The mode to ask for in [`XdpProgram::attach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native, falling back to generic if the driver refuses native XDP
    /// (`EOPNOTSUPP` or `EINVAL`).
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

macro_rules! xdp_counters {
    ($($(#[$doc:meta])* $field:ident,)+) => {
        /// The program's counters, summed over CPUs, one field per
        /// `enum ntpx_counter` entry (same order, `NTPX_` prefix dropped,
        /// snake case).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct XdpCounters {
            $($(#[$doc])* pub $field: u64,)+
        }

        impl XdpCounters {
            /// Field names in `enum ntpx_counter` order.
            pub const NAMES: [&'static str; COUNTERS] = [$(stringify!($field)),+];

            /// `(name, value)` pairs in `enum ntpx_counter` order, for printing.
            pub fn fields(&self) -> [(&'static str, u64); COUNTERS] {
                [$((stringify!($field), self.$field)),+]
            }

            /// Builds the struct from values in `enum ntpx_counter` order.
            pub fn from_array(values: [u64; COUNTERS]) -> Self {
                let [$($field),+] = values;
                Self { $($field),+ }
            }

            /// The values in `enum ntpx_counter` order.
            pub fn to_array(&self) -> [u64; COUNTERS] {
                [$(self.$field),+]
            }
        }
    };
}

xdp_counters! {
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
    /// IPv4 UDP fragment: the kernel reassembles.
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
}

impl XdpCounters {
    /// Per-field difference `self - earlier` (wrapping), e.g. for rates or
    /// for what one test frame did.
    pub fn since(&self, earlier: &Self) -> Self {
        let now = self.to_array();
        let before = earlier.to_array();
        let mut out = [0u64; COUNTERS];
        for ((o, n), b) in out.iter_mut().zip(now).zip(before) {
            *o = n.wrapping_sub(b);
        }
        Self::from_array(out)
    }
}

/// The result of [`XdpProgram::test_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value, an `XDP_*` action ([`XDP_PASS`], ...).
    pub verdict: u32,
    /// The output buffer as the kernel returns it: it starts at `data_meta`,
    /// so any metadata the program wrote comes first (`meta_len` bytes),
    /// followed by the (possibly modified) frame.
    pub data: Vec<u8>,
    /// Bytes of metadata at the start of `data` (0 or [`META_LEN`]).
    pub meta_len: usize,
    /// The decoded metadata, if the program wrote `struct ntpx_meta`.
    pub meta: Option<Meta>,
    /// How long the run took, as measured by the kernel.
    pub duration: Duration,
}

impl TestRun {
    /// The output frame without the metadata.
    pub fn frame(&self) -> &[u8] {
        self.data.get(self.meta_len..).unwrap_or_default()
    }
}

const PERM_HINT: &str = "run as root, or give the binary CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW \
     (`setcap cap_bpf,cap_net_admin,cap_net_raw+ep PATH`); a kernel in lockdown mode refuses BPF \
     entirely";

/// Why loading, attaching or using the program failed.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// More than [`MAX_ADDRS`] addresses of one family.
    #[error(
        "{count} IPv{family} server addresses configured, the XDP program holds at most {max}; \
         hint: leave the address lists empty to serve every address on the interface"
    )]
    TooManyAddresses {
        /// 4 or 6.
        family: u8,
        /// How many were given.
        count: usize,
        /// [`MAX_ADDRS`].
        max: usize,
    },
    /// `EPERM`/`EACCES` outside the verifier.
    #[error("cannot {op}: permission denied ({source}); hint: {PERM_HINT}")]
    PermissionDenied {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The kernel verifier refused the program.
    #[error(
        "the kernel verifier rejected the XDP program ({source}); this is a bug in ntpx or a \
         kernel too old for it (needs 6.1+); verifier log, last lines:\n{log_tail}"
    )]
    VerifierRejected {
        /// The last lines of the verifier log.
        log_tail: String,
        /// The underlying error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// No interface with that index.
    #[error("no network interface with index {ifindex}; hint: list interfaces with `ip link`")]
    NoSuchInterface {
        /// The index asked for.
        ifindex: u32,
    },
    /// The interface refuses XDP in that mode.
    #[error(
        "{ifname}: XDP in {mode} mode is not supported ({source}); hint: {}",
        match mode {
            XdpMode::Native => "use generic mode (attach mode auto or generic), or check the \
                                 driver's native XDP support and the MTU (native XDP often needs \
                                 MTU <= ~3500)",
            XdpMode::Generic => "generic XDP should work on any device; check `dmesg` and that \
                                  the kernel has CONFIG_XDP_SOCKETS and CONFIG_BPF_SYSCALL",
        }
    )]
    XdpUnsupported {
        /// The interface name (or index, if it has no name).
        ifname: String,
        /// The mode that was refused.
        mode: XdpMode,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another XDP program is attached to the interface (`EBUSY`/`EEXIST`).
    #[error(
        "{ifname}: another XDP program is already attached ({source}); hint: see it with \
         `ip link show dev {ifname}` or `bpftool net`, remove it with `ip link set dev {ifname} \
         xdp off` (`xdpgeneric off` for a generic-mode one), or stop the process that owns its \
         link"
    )]
    AlreadyAttached {
        /// The interface name (or index, if it has no name).
        ifname: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`XdpProgram::attach`] on a program that is already attached.
    #[error("this XDP program is already attached to {ifname}; detach it first")]
    AttachedTwice {
        /// Where it is attached.
        ifname: String,
    },
    /// A queue id outside the `xsks` map.
    #[error("queue {queue} is out of range: the XDP program handles queues 0..{max}")]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
        /// [`MAX_QUEUES`].
        max: u32,
    },
    /// Putting a socket into the `xsks` map failed.
    #[error(
        "cannot register the AF_XDP socket (fd {fd}) for queue {queue}: {source}; hint: the fd \
         must be an AF_XDP socket that has an RX ring and is bound to a queue"
    )]
    RegisterSocket {
        /// The queue.
        queue: u32,
        /// The socket's fd.
        fd: RawFd,
        /// The underlying error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A frame [`XdpProgram::test_run`] cannot run.
    #[error("test frame of {len} bytes is too short: BPF_PROG_TEST_RUN needs at least {min}")]
    TestFrameTooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Any other libbpf failure.
    #[error("cannot {op}: {source}")]
    Libbpf {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// Any other system call failure.
    #[error("cannot {op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ProgramError {
    fn libbpf(op: &'static str, source: libbpf_rs::Error) -> Self {
        if source.kind() == ErrorKind::PermissionDenied {
            Self::PermissionDenied {
                op,
                source: Box::new(source),
            }
        } else {
            Self::Libbpf { op, source }
        }
    }

    fn os(op: &'static str, source: io::Error) -> Self {
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            Self::PermissionDenied {
                op,
                source: Box::new(source),
            }
        } else {
            Self::Os { op, source }
        }
    }
}

/// An XDP attachment: the BPF link keeps the program on the interface.
#[derive(Debug)]
struct Attachment {
    link: OwnedFd,
    ifindex: u32,
    ifname: String,
    mode: XdpMode,
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
    attachment: Option<Attachment>,
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

        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| ProgramError::Os {
                op: "configure the XDP program",
                source: io::Error::other("the BPF object has no mmap-able .rodata"),
            })?;
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

        // libbpf loads without a log first and, if that fails, retries with
        // log level 1 into this buffer. Recent kernels keep the end of the
        // log when it overflows, which is where the error is.
        let mut log = vec![0u8; VERIFIER_LOG_LEN];
        let prog_ptr = open.progs.ntpx_xdp.as_libbpf_object();
        // SAFETY: `prog_ptr` is the live bpf_program of `open`; libbpf only
        // stores the pointer and length of `log` and writes at most
        // `log.len()` bytes into it during `load()` below. `log` is declared
        // before the skeleton objects and so outlives every use.
        let rc = unsafe {
            libbpf_sys::bpf_program__set_log_buf(
                prog_ptr.as_ptr(),
                log.as_mut_ptr().cast(),
                log.len() as _,
            )
        };
        if rc != 0 {
            return Err(ProgramError::Os {
                op: "set up the verifier log",
                source: io::Error::from_raw_os_error(-rc),
            });
        }

        let skel = match open.load() {
            Ok(skel) => skel,
            Err(err) => return Err(load_error(err, &log)),
        };
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
            attachment: None,
        })
    }

    /// Attaches the program to interface `ifindex` through a BPF link and
    /// returns the mode it got.
    pub fn attach(&mut self, ifindex: u32, mode: AttachMode) -> Result<XdpMode, ProgramError> {
        if let Some(a) = &self.attachment {
            return Err(ProgramError::AttachedTwice {
                ifname: a.ifname.clone(),
            });
        }
        let ifname = interface_name(ifindex).ok_or(ProgramError::NoSuchInterface { ifindex })?;

        let (link, got) = match mode {
            AttachMode::Native => (
                self.link_create(ifindex, &ifname, XdpMode::Native)?,
                XdpMode::Native,
            ),
            AttachMode::Generic => (
                self.link_create(ifindex, &ifname, XdpMode::Generic)?,
                XdpMode::Generic,
            ),
            AttachMode::Auto => match self.link_create(ifindex, &ifname, XdpMode::Native) {
                Ok(link) => (link, XdpMode::Native),
                Err(ProgramError::XdpUnsupported { .. }) => (
                    self.link_create(ifindex, &ifname, XdpMode::Generic)?,
                    XdpMode::Generic,
                ),
                Err(e) => return Err(e),
            },
        };
        self.attachment = Some(Attachment {
            link,
            ifindex,
            ifname,
            mode: got,
        });
        Ok(got)
    }

    fn link_create(
        &self,
        ifindex: u32,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<OwnedFd, ProgramError> {
        let target =
            i32::try_from(ifindex).map_err(|_| ProgramError::NoSuchInterface { ifindex })?;
        let opts = libbpf_sys::bpf_link_create_opts {
            sz: size_of::<libbpf_sys::bpf_link_create_opts>() as _,
            flags: mode.flags(),
            ..Default::default()
        };
        // SAFETY: plain syscall wrapper: the program fd is valid for the
        // call (borrowed from `self.prog`), `opts` is a fully initialised
        // bpf_link_create_opts whose `sz` matches its type.
        let fd = unsafe {
            libbpf_sys::bpf_link_create(
                self.prog.as_fd().as_raw_fd(),
                target,
                libbpf_sys::BPF_XDP,
                &opts,
            )
        };
        if fd < 0 {
            let source = io::Error::from_raw_os_error(-fd);
            let ifname = ifname.to_owned();
            return Err(match -fd {
                libc::EOPNOTSUPP | libc::EINVAL => ProgramError::XdpUnsupported {
                    ifname,
                    mode,
                    source,
                },
                libc::EBUSY | libc::EEXIST => ProgramError::AlreadyAttached { ifname, source },
                _ => ProgramError::os("attach the XDP program", source),
            });
        }
        // SAFETY: `fd` is a new link fd returned by BPF_LINK_CREATE, owned
        // by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Detaches the program (no-op if it is not attached). Dropping the
    /// [`XdpProgram`] does the same.
    pub fn detach(&mut self) -> Result<(), ProgramError> {
        let Some(a) = self.attachment.take() else {
            return Ok(());
        };
        // SAFETY: plain syscall wrapper on a link fd we own.
        let rc = unsafe { libbpf_sys::bpf_link_detach(a.link.as_raw_fd()) };
        // Closing the fd (drop of `a`) releases the link in any case.
        drop(a);
        if rc < 0 {
            return Err(ProgramError::os(
                "detach the XDP program",
                io::Error::from_raw_os_error(-rc),
            ));
        }
        Ok(())
    }

    /// Where the program is attached: `(ifindex, mode)`.
    pub fn attached(&self) -> Option<(u32, XdpMode)> {
        self.attachment.as_ref().map(|a| (a.ifindex, a.mode))
    }

    /// The kernel's id of the loaded program (as `bpftool prog` shows it).
    pub fn id(&self) -> u32 {
        self.prog.id()
    }

    /// `xsks[queue] = xsk_fd`: redirect requests arriving on `queue` to this
    /// AF_XDP socket (which must be bound to that queue with an RX ring).
    pub fn register_socket(&self, queue: u32, xsk_fd: RawFd) -> Result<(), ProgramError> {
        check_queue(queue)?;
        let value = u32::try_from(xsk_fd).map_err(|_| ProgramError::RegisterSocket {
            queue,
            fd: xsk_fd,
            source: libbpf_rs::Error::from_raw_os_error(libc::EBADF),
        })?;
        self.xsks
            .update(&queue.to_ne_bytes(), &value.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| {
                if source.kind() == ErrorKind::PermissionDenied {
                    ProgramError::PermissionDenied {
                        op: "register an AF_XDP socket",
                        source: Box::new(source),
                    }
                } else {
                    ProgramError::RegisterSocket {
                        queue,
                        fd: xsk_fd,
                        source,
                    }
                }
            })
    }

    /// Removes the socket of `queue` (no-op if there is none); its requests
    /// then go to the kernel (`pass_no_socket`).
    pub fn unregister_socket(&self, queue: u32) -> Result<(), ProgramError> {
        check_queue(queue)?;
        match self.xsks.delete(&queue.to_ne_bytes()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProgramError::libbpf("unregister an AF_XDP socket", e)),
        }
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, ProgramError> {
        let mut values = [0u64; COUNTERS];
        for (key, value) in (0u32..).zip(values.iter_mut()) {
            let per_cpu = self
                .counters
                .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| ProgramError::libbpf("read the XDP counters", e))?
                .unwrap_or_default();
            *value = per_cpu
                .iter()
                .filter_map(|b| b.get(..8)?.try_into().ok().map(u64::from_ne_bytes))
                .fold(0u64, u64::wrapping_add);
        }
        Ok(XdpCounters::from_array(values))
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (receive
    /// queue 0, no interface). Counters count as for a real frame. With no
    /// socket registered for queue 0 a valid request gives `XDP_PASS` and
    /// `pass_no_socket`; with one, `XDP_REDIRECT` and metadata in front of
    /// the frame (the redirect itself is not carried out).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, ProgramError> {
        if frame.len() < MIN_TEST_FRAME {
            return Err(ProgramError::TestFrameTooShort {
                len: frame.len(),
                min: MIN_TEST_FRAME,
            });
        }
        let size_in = u32::try_from(frame.len()).map_err(|_| ProgramError::Os {
            op: "run the XDP program on a test frame",
            source: io::Error::from_raw_os_error(libc::E2BIG),
        })?;
        let mut out = vec![0u8; frame.len() + TEST_RUN_SLACK];
        // The kernel insists on data_end == the input size and no metadata
        // in the input context; it writes the output context back with
        // `data` = the metadata length and `data_end` = metadata + frame.
        let ctx_in = libbpf_sys::xdp_md {
            data_end: size_in,
            ..Default::default()
        };
        let mut ctx_out = libbpf_sys::xdp_md::default();
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            data_in: frame.as_ptr().cast(),
            data_size_in: size_in,
            data_out: out.as_mut_ptr().cast(),
            data_size_out: u32::try_from(out.len()).unwrap_or(u32::MAX),
            ctx_in: (&raw const ctx_in).cast::<c_void>(),
            ctx_size_in: size_of::<libbpf_sys::xdp_md>() as u32,
            ctx_out: (&raw mut ctx_out).cast::<c_void>(),
            ctx_size_out: size_of::<libbpf_sys::xdp_md>() as u32,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: every pointer in `opts` refers to a live local buffer of
        // exactly the size given next to it (`frame`, `out`, `ctx_in`,
        // `ctx_out`), none of which is touched until the call returns; the
        // program fd is valid (borrowed from `self.prog`).
        let rc =
            unsafe { libbpf_sys::bpf_prog_test_run_opts(self.prog.as_fd().as_raw_fd(), &mut opts) };
        if rc < 0 {
            return Err(ProgramError::os(
                "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                io::Error::from_raw_os_error(-rc),
            ));
        }
        out.truncate((opts.data_size_out as usize).min(out.len()));
        let meta_len = (ctx_out.data as usize).min(out.len());
        // The metadata ends where the frame starts.
        let meta = if meta_len >= META_LEN {
            out.get(meta_len - META_LEN..meta_len).and_then(Meta::parse)
        } else {
            None
        };
        Ok(TestRun {
            verdict: opts.retval,
            data: out,
            meta_len,
            meta,
            duration: Duration::from_nanos(opts.duration.into()),
        })
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        // Closing the link fd detaches; detach() first so that a link fd
        // leaked into a child process cannot keep the program attached.
        let _ = self.detach();
    }
}

fn check_queue(queue: u32) -> Result<(), ProgramError> {
    if queue >= MAX_QUEUES {
        return Err(ProgramError::QueueOutOfRange {
            queue,
            max: MAX_QUEUES,
        });
    }
    Ok(())
}

/// The name of interface `ifindex`, or `None` if there is no such interface.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname() may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname() wrote a NUL-terminated name into
    // `buf`, which lives until the end of this function.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn load_error(err: libbpf_rs::Error, log: &[u8]) -> ProgramError {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default());
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return ProgramError::libbpf("load the XDP program", err);
    }
    let tail = lines
        .get(lines.len().saturating_sub(VERIFIER_LOG_TAIL_LINES)..)
        .unwrap_or_default();
    ProgramError::VerifierRejected {
        log_tail: tail.join("\n"),
        source: err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::meta::META_MAGIC;

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
        let body = HEADER
            .split("enum ntpx_counter {")
            .nth(1)
            .and_then(|s| s.split("};").next())
            .unwrap();
        let names: Vec<String> = body
            .lines()
            .filter_map(|l| l.trim().split([',', ' ', '=']).next())
            .filter(|n| n.starts_with("NTPX_") && *n != "NTPX_COUNTERS")
            .map(|n| n.trim_start_matches("NTPX_").to_ascii_lowercase())
            .collect();
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
            size_of::<skel::types::rodata>(),
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
        assert_eq!(c.drop_src_port_zero, COUNTERS as u64);
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
