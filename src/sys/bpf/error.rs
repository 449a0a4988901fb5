//! Why loading, attaching or using a BPF program failed, with what to do
//! about it.

use std::io;

use std::os::fd::RawFd;

use libbpf_rs::ErrorKind;

use super::{VERIFIER_LOG_TAIL_LINES, XdpMode};

const PERM_HINT: &str = "run as root, or give the binary CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and \
     CAP_NET_RAW (`setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep PATH`; the systemd unit \
     grants exactly these); a kernel in lockdown mode refuses BPF entirely";

/// Why loading, attaching or using the program failed.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// More addresses of one family than the program has room for.
    #[error(
        "{count} IPv{family} server addresses configured, the XDP program holds at most {max}: \
         choose the ones to serve with --address"
    )]
    TooManyAddresses {
        /// 4 or 6.
        family: u8,
        /// How many were given.
        count: usize,
        /// The program's limit.
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
    /// Attaching a program that is already attached.
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
        /// [`MAX_QUEUES`](super::MAX_QUEUES).
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
    /// A frame [`test_run`](super::test_run) cannot run.
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
    pub fn libbpf(op: &'static str, source: libbpf_rs::Error) -> Self {
        if source.kind() == ErrorKind::PermissionDenied {
            Self::PermissionDenied {
                op,
                source: Box::new(source),
            }
        } else {
            Self::Libbpf { op, source }
        }
    }

    pub fn os(op: &'static str, source: io::Error) -> Self {
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

/// Whether this process holds CAP_PERFMON (bit 38 of `CapEff` in
/// `/proc/self/status`); unknown counts as yes.
fn has_perfmon() -> bool {
    const CAP_PERFMON: u32 = 38;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_none_or(|caps| caps & (1 << CAP_PERFMON) != 0)
}

pub(super) fn load_error(err: libbpf_rs::Error, log: &[u8]) -> ProgramError {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(log.get(..end).unwrap_or_default());
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return ProgramError::libbpf("load the XDP program", err);
    }
    let tail = lines
        .get(lines.len().saturating_sub(VERIFIER_LOG_TAIL_LINES)..)
        .unwrap_or_default();
    // Without CAP_PERFMON the verifier refuses what a privileged loader
    // may do (comparing packet pointers, first of all): a missing
    // capability, not a bug.
    if tail.iter().any(|l| l.contains("prohibited")) && !has_perfmon() {
        return ProgramError::PermissionDenied {
            op: "load the XDP program (the verifier allows packet pointer checks only with CAP_PERFMON)",
            source: Box::new(err),
        };
    }
    ProgramError::VerifierRejected {
        log_tail: tail.join("\n"),
        source: err,
    }
}
