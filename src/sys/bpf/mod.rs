//! The BPF loader toolkit that the server's and the generator's XDP
//! programs share: the generated skeletons, loading through the verifier
//! with its log kept, attaching through a BPF link (detached on drop),
//! the AF_XDP socket map, per-CPU counter maps and `BPF_PROG_TEST_RUN`.
//!
//! The programs themselves, and what they mean, live with their users in
//! the layers above: the server's steering program and the generator's
//! receive and sink programs. Only this module touches libbpf's raw API.

mod error;
mod link;
pub mod pass;
pub mod skel;

pub use error::ProgramError;
use error::load_error;
pub use link::LinkSlot;

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sys::xsk::meta::{META_LEN, Meta};
use libbpf_rs::skel::OpenSkel;
use libbpf_rs::{AsRawLibbpf, ErrorKind, MapCore, MapFlags, MapHandle, ProgramHandle, libbpf_sys};

/// Slots in the programs' AF_XDP socket maps (`NTPX_MAX_QUEUES`, and
/// the generator's `LOAD_MAX_QUEUES`): queue ids `0..MAX_QUEUES`.
pub const MAX_QUEUES: u32 = 256;

/// `BPF_F_XDP_DEV_BOUND_ONLY`: a program bound to one device, whose
/// driver's metadata kfuncs (receive stamps) it may call.
pub const XDP_DEV_BOUND_ONLY: u32 = libbpf_rs::libbpf_sys::BPF_F_XDP_DEV_BOUND_ONLY;

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

/// Parses `auto|native|generic`.
pub fn parse_xdp_mode(s: &str) -> anyhow::Result<AttachMode> {
    match s {
        "auto" => Ok(AttachMode::Auto),
        "native" => Ok(AttachMode::Native),
        "generic" => Ok(AttachMode::Generic),
        _ => anyhow::bail!("xdp_mode must be auto, native or generic, not {s:?}"),
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

/// The mode to ask for when attaching a program.
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

/// Defines a struct of `u64` counters that mirrors a C counter enum: one
/// field per entry, in enum order, with `NAMES`, `fields()`, `from_array()`,
/// `to_array()` and `since()`. Used by the server's and the generator's
/// program counters.
macro_rules! counter_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident[$len:ident] for $cenum:literal {
            $($(#[$doc:meta])* $field:ident,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$doc])* pub $field: u64,)+
        }

        impl $name {
            #[doc = concat!("Field names in `", $cenum, "` order.")]
            pub const NAMES: [&'static str; $len] = [$(stringify!($field)),+];

            #[doc = concat!("`(name, value)` pairs in `", $cenum, "` order, for printing.")]
            pub fn fields(&self) -> [(&'static str, u64); $len] {
                [$((stringify!($field), self.$field)),+]
            }

            #[doc = concat!("Builds the struct from values in `", $cenum, "` order.")]
            pub fn from_array(values: [u64; $len]) -> Self {
                let [$($field),+] = values;
                Self { $($field),+ }
            }

            #[doc = concat!("The values in `", $cenum, "` order.")]
            pub fn to_array(&self) -> [u64; $len] {
                [$(self.$field),+]
            }

            /// Per-field difference `self - earlier` (wrapping), e.g. for rates or
            /// for what one test frame did.
            pub fn since(&self, earlier: &Self) -> Self {
                let now = self.to_array();
                let before = earlier.to_array();
                let mut out = [0u64; $len];
                for ((o, n), b) in out.iter_mut().zip(now).zip(before) {
                    *o = n.wrapping_sub(b);
                }
                Self::from_array(out)
            }
        }
    };
}
pub(crate) use counter_struct;

/// The result of [`test_run`].
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

/// The skeleton's `.rodata`, which must be mmap-able for the loader to
/// write the configuration into it.
pub fn rodata<T>(data: Option<&mut T>) -> Result<&mut T, ProgramError> {
    data.ok_or_else(|| ProgramError::Os {
        op: "configure the XDP program",
        source: io::Error::other("the BPF object has no mmap-able .rodata"),
    })
}

/// The open skeletons [`load_logged`] accepts: the generated ones, whose
/// `open_object()` is the object that `load()` loads. Sealed (the trait
/// cannot be named outside this module), because a hand-written
/// `OpenSkel` could answer `open_object()` with another object and leave
/// that one holding a freed log buffer.
mod sealed {
    pub trait GeneratedSkel {}
    impl GeneratedSkel for super::skel::ntpx::OpenNtpxSkel<'_> {}
    impl GeneratedSkel for super::skel::load::OpenLoadSkel<'_> {}
}

/// Loads `open` through the verifier. `prog` names the program (of `open`)
/// whose verifier log is kept: if loading fails, the end of that log comes
/// back in [`ProgramError::VerifierRejected`].
pub fn load_logged<'obj, O: OpenSkel<'obj> + sealed::GeneratedSkel>(
    open: O,
    prog: &str,
) -> Result<O::Output, ProgramError> {
    // libbpf loads without a log first and, if that fails, retries with log
    // level 1 into this buffer. Recent kernels keep the end of the log when
    // it overflows, which is where the error is.
    let mut log = vec![0u8; VERIFIER_LOG_LEN];
    // Looked up in `open` itself, so the log can only be given to a
    // program that `open.load()` below loads.
    let Some(prog_ptr) = open
        .open_object()
        .progs()
        .find(|p| p.name() == prog)
        .map(|p| p.as_libbpf_object())
    else {
        return Err(ProgramError::Os {
            op: "set up the verifier log",
            source: io::Error::other(format!("the BPF object has no program {prog}")),
        });
    };
    // SAFETY: `prog_ptr` is a live bpf_program of `open`'s object (found in
    // it above), and `open` is a generated skeleton (sealed), whose load()
    // loads exactly that object. libbpf only stores the pointer and length
    // of `log` and writes at most `log.len()` bytes into it while loading,
    // which happens in `open.load()` below, while `log` is alive. `open` is
    // consumed there and libbpf refuses a second load, so the stored
    // pointer is never used after `log` is freed.
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
    open.load().map_err(|err| load_error(err, &log))
}

/// What the kernel measured of a program's runs while run statistics were
/// on ([`enable_run_stats`], or `kernel.bpf_stats_enabled=1`); nothing
/// otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Runs counted.
    pub runs: u64,
    /// Their total run time (ns).
    pub run_time_ns: u64,
}

impl RunStats {
    /// Mean run time (ns); `None` without counted runs.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_time_ns as f64 / self.runs as f64)
    }
}

impl fmt::Display for RunStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ns_per_run() {
            Some(ns) => write!(f, "{ns:.0} ns per run over {} runs", self.runs),
            None => f.write_str("not measured (run statistics off)"),
        }
    }
}

/// Turns on the kernel's run statistics of BPF programs
/// (`BPF_ENABLE_STATS`) for as long as the returned descriptor is open,
/// without touching the `kernel.bpf_stats_enabled` sysctl: they end with
/// the process, however it ends. They cost every program run two clock
/// reads, so they are for measuring, not for serving.
pub fn enable_run_stats() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; no pointers involved.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The run statistics of the loaded program with kernel id `id`, through
/// libbpf-rs's program query (which walks the loaded programs: for the
/// end of a run, not for a hot path). `None` if it is not found.
pub fn run_stats(id: u32) -> Option<RunStats> {
    libbpf_rs::query::ProgInfoIter::default()
        .find(|p| p.id == id)
        .map(|p| RunStats {
            runs: p.run_cnt,
            run_time_ns: p.run_time_ns,
        })
}

/// `xsks[queue] = xsk_fd` in an XSKMAP.
pub fn register_xsk(map: &MapHandle, queue: u32, xsk_fd: RawFd) -> Result<(), ProgramError> {
    check_queue(queue)?;
    let value = u32::try_from(xsk_fd).map_err(|_| ProgramError::RegisterSocket {
        queue,
        fd: xsk_fd,
        source: libbpf_rs::Error::from_raw_os_error(libc::EBADF),
    })?;
    map.update(&queue.to_ne_bytes(), &value.to_ne_bytes(), MapFlags::ANY)
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

/// Removes `queue` from an XSKMAP (no-op if it is not there).
pub fn unregister_xsk(map: &MapHandle, queue: u32) -> Result<(), ProgramError> {
    check_queue(queue)?;
    match map.delete(&queue.to_ne_bytes()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProgramError::libbpf("unregister an AF_XDP socket", e)),
    }
}

/// Slots `0..N` of a per-CPU array of `u64`, each summed over CPUs.
pub fn sum_percpu<const N: usize>(map: &MapHandle) -> Result<[u64; N], ProgramError> {
    let mut values = [0u64; N];
    for (key, value) in (0u32..).zip(values.iter_mut()) {
        let per_cpu = map
            .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| ProgramError::libbpf("read the XDP counters", e))?
            .unwrap_or_default();
        *value = per_cpu
            .iter()
            .filter_map(|b| b.get(..8)?.try_into().ok().map(u64::from_ne_bytes))
            .fold(0u64, u64::wrapping_add);
    }
    Ok(values)
}

/// Runs XDP program `prog` once on `frame` with `BPF_PROG_TEST_RUN`
/// (receive queue 0, no interface). The kernel returns the output buffer
/// starting at `data_meta`, metadata included; [`TestRun`] keeps both.
pub fn test_run(prog: &ProgramHandle, frame: &[u8]) -> Result<TestRun, ProgramError> {
    test_run_with_meta(prog, &[], frame)
}

/// [`test_run`] with `meta` (a multiple of 4 bytes, at most 32) as the
/// metadata in front of the frame, where the program finds it at
/// `data_meta`.
pub fn test_run_with_meta(
    prog: &ProgramHandle,
    meta: &[u8],
    frame: &[u8],
) -> Result<TestRun, ProgramError> {
    if frame.len() < MIN_TEST_FRAME {
        return Err(ProgramError::TestFrameTooShort {
            len: frame.len(),
            min: MIN_TEST_FRAME,
        });
    }
    let too_big = || ProgramError::Os {
        op: "run the XDP program on a test frame",
        source: io::Error::from_raw_os_error(libc::E2BIG),
    };
    if !meta.len().is_multiple_of(4) || meta.len() > 32 {
        return Err(too_big());
    }
    let input = [meta, frame].concat();
    let size_in = u32::try_from(input.len()).map_err(|_| too_big())?;
    let mut out = vec![0u8; input.len() + TEST_RUN_SLACK];
    // The kernel insists on data_end == the input size and data_meta = 0;
    // `data` is the metadata's length (the input starts with it). It
    // writes the output context back with `data` = the metadata length
    // and `data_end` = metadata + frame.
    let ctx_in = libbpf_sys::xdp_md {
        data: meta.len() as u32,
        data_end: size_in,
        ..Default::default()
    };
    let mut ctx_out = libbpf_sys::xdp_md::default();
    let mut opts = libbpf_sys::bpf_test_run_opts {
        sz: size_of::<libbpf_sys::bpf_test_run_opts>() as _,
        data_in: input.as_ptr().cast(),
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
    // exactly the size given next to it (`input`, `out`, `ctx_in`,
    // `ctx_out`), none of which is touched until the call returns; the
    // program fd is valid (borrowed from `prog`).
    let rc = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog.as_fd().as_raw_fd(), &mut opts) };
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

fn check_queue(queue: u32) -> Result<(), ProgramError> {
    if queue >= MAX_QUEUES {
        return Err(ProgramError::QueueOutOfRange {
            queue,
            max: MAX_QUEUES,
        });
    }
    Ok(())
}

/// The entries of C enum `enum_name` in `header` that start with `prefix`,
/// without the prefix and the final `{prefix}COUNTERS`, in snake case: the
/// field names of the matching counter struct.
#[cfg(test)]
pub fn c_enum_names(header: &str, enum_name: &str, prefix: &str) -> Vec<String> {
    let count = format!("{prefix}COUNTERS");
    let body = header
        .split(&format!("enum {enum_name} {{"))
        .nth(1)
        .and_then(|s| s.split("};").next())
        .unwrap_or_default();
    body.lines()
        .filter_map(|l| l.trim().split([',', ' ', '=']).next())
        .filter(|n| n.starts_with(prefix) && *n != count)
        .map(|n| n.trim_start_matches(prefix).to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::skel::SkelBuilder;

    #[test]
    fn run_stats_read_as_ns_per_run() {
        let r = RunStats {
            runs: 4,
            run_time_ns: 250,
        };
        assert_eq!(r.ns_per_run(), Some(62.5));
        assert_eq!(r.to_string(), "62 ns per run over 4 runs");
        assert_eq!(RunStats::default().ns_per_run(), None);
        assert!(RunStats::default().to_string().contains("off"));
        // Any program id that is not loaded: nothing to read.
        assert_eq!(run_stats(u32::MAX), None);
    }

    /// The verifier log goes only to a program of the object being loaded:
    /// a name the object does not have is refused before anything loads.
    #[test]
    fn the_logged_program_must_be_the_objects() {
        let mut storage = std::mem::MaybeUninit::uninit();
        let open = skel::ntpx::NtpxSkelBuilder::default()
            .open(&mut storage)
            .expect("open the embedded object");
        let Err(err) = load_logged(open, "ntpx_sink") else {
            panic!("loaded with the log on a program the object does not have");
        };
        assert!(err.to_string().contains("no program ntpx_sink"), "{err}");
    }
}
