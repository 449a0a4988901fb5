//! Shared helpers for the end-to-end tests (`mod common;` in tests/*.rs).
//!
//! - [`require_root`] / [`require_tool`]: skip (or, under `CI=true`, fail) a test
//!   whose environment is missing.
//! - [`Topology`]: a veth pair between two fresh network namespaces, made by
//!   `scripts/netns up` and removed again on drop (also when the test panics).
//! - [`run_ok`] / [`run_with_timeout`]: run a command, with useful panics.
//! - [`Capture`] / [`tshark_ntp_fields`]: capture with tshark inside a namespace
//!   and decode the NTP packets with tshark's own dissector.
//!
//! Capture on the CLIENT side veth: frames that native XDP on the server side
//! redirects into AF_XDP never reach the server side's packet taps.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/netns` of this repository.
pub fn netns_script() -> PathBuf {
    repo_root().join("scripts/netns")
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip_or_panic(test: &str, why: &str) -> bool {
    if under_ci() {
        panic!("{test}: {why}, and CI=true: end-to-end tests must not skip under CI");
    }
    // Straight to fd 2: libtest's capture would hide an eprintln! of a passing test.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
    false
}

/// True when running as root (euid 0). Otherwise prints `SKIP {test}: needs root`
/// and returns false, or panics when env `CI` is `true`.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0 || skip_or_panic(test, "needs root")
}

/// `(bit, name)` of the capabilities the BPF tests need.
const BPF_CAPS: [(u32, &str); 4] = [
    (39, "CAP_BPF"),
    (12, "CAP_NET_ADMIN"),
    (13, "CAP_NET_RAW"),
    (21, "CAP_SYS_ADMIN"),
];

/// Why this process cannot load XDP programs and make namespaces, if it
/// cannot (read from the effective capability set).
fn missing_bpf_privileges() -> Option<String> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot read /proc/self/status: {e}")),
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Some("no CapEff line in /proc/self/status".to_owned());
    };
    let missing: Vec<&str> = BPF_CAPS
        .iter()
        .filter(|&&(bit, _)| eff & (1u64 << bit) == 0)
        .map(|&(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| format!("needs root (missing {})", missing.join(", ")))
}

/// True when the calling test (named by its thread) may load BPF programs;
/// otherwise prints why it skips, or panics when env `CI` is `true`.
pub fn require_bpf_privileges() -> bool {
    let Some(why) = missing_bpf_privileges() else {
        return true;
    };
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    skip_or_panic(&test, &why)
}

/// True when `tool` is an executable on PATH. Otherwise prints
/// `SKIP {test}: needs {tool} on PATH` and returns false, or panics under `CI=true`.
pub fn require_tool(test: &str, tool: &str) -> bool {
    which(tool).is_some() || skip_or_panic(test, &format!("needs {tool} on PATH"))
}

/// Full path of `tool` found on PATH, if any.
pub fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn failure_report(what: &str, cmd: &Command, out: &Output) -> String {
    format!(
        "{what}: `{}` ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to completion and returns its stdout. Panics with the command
/// line, exit status, stdout and stderr when it cannot start or exits non-zero.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    if !out.status.success() {
        panic!("{}", failure_report("command failed", cmd, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_all_in_thread(r: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Sends `sig` to the process group `pgid` (a group this module created).
fn kill_group(pgid: u32, sig: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill has no memory-safety preconditions; a negative pid
        // addresses the process group we created with process_group(0).
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Runs `cmd` with stdout/stderr captured, for at most `secs` seconds. On
/// timeout the command's whole process group is killed (SIGKILL) and the
/// returned `Output` has a signal status (`status.code() == None`) and whatever
/// it printed until then. Panics only when the command cannot be started.
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(cmd)));
    let out_t = read_all_in_thread(child.stdout.take());
    let err_t = read_all_in_thread(child.stderr.take());
    let status = wait_timeout(&mut child, Duration::from_secs(secs)).unwrap_or_else(|| {
        kill_group(child.id(), libc::SIGKILL);
        child.wait().expect("wait for killed child")
    });
    // Grandchildren that escaped the process group could keep the pipes open;
    // the SIGKILL above covers everything that stayed in it.
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("try_wait: {e}"),
        }
    }
}

static TEMPDIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let n = TEMPDIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------

/// Names of all network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    run_ok(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// True when the named network namespace exists.
pub fn netns_exists(ns: &str) -> bool {
    netns_list().iter().any(|n| n == ns)
}

/// Runs `f` on a new thread that has joined the network namespace `ns`, and
/// returns its result (a panic in `f` is propagated). Sockets created inside
/// `f` live in that namespace, even after they are returned.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: `file` is an open namespace fd for the duration of the
            // call; setns(CLONE_NEWNET) only changes this (new) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn base36(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = vec![b'0'; width];
    for slot in s.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(s).expect("ascii")
}

static TOPOLOGY_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A server and a client namespace joined by a veth pair (see `scripts/netns`).
///
/// Server: `srv_ns`, interface `srv_if`, 198.18.0.1/24 and 2001:db8::1/64.
/// Client: `cli_ns`, interface `cli_if`, 198.18.0.2/24 and 2001:db8::2/64,
/// pfifo root qdisc. Offloads as `ip link add` leaves them (partial UDP
/// checksums cross the link), unless made with
/// [`Topology::up_full_checksums`]. No XDP program is attached; a
/// veth only accepts XDP-transmitted frames if its PEER has one, so the tests
/// that use XDP TX must attach a pass-through program on `cli_if` themselves.
///
/// Dropping it runs `scripts/netns down NAME` (also during a panic's unwind),
/// which kills anything still running in the namespaces.
#[derive(Debug)]
pub struct Topology {
    pub name: String,
    pub srv_ns: String,
    pub cli_ns: String,
    pub srv_if: String,
    pub cli_if: String,
    pub srv_v4: Ipv4Addr,
    pub cli_v4: Ipv4Addr,
    pub srv_v6: Ipv6Addr,
    pub cli_v6: Ipv6Addr,
}

impl Topology {
    /// Creates a fresh topology with a name unique to this process and call:
    /// 4 base36 digits of the pid, 2 of a per-process counter.
    pub fn up() -> Topology {
        Self::up_with_queues(1)
    }

    /// Like [`Topology::up`], with `srv_queues` RX/TX queues on the server
    /// veth (the client end keeps one, so only server queue 0 gets frames).
    pub fn up_with_queues(srv_queues: u32) -> Topology {
        Self::up_with(srv_queues, 1, true)
    }

    /// Like [`Topology::up`], with `queues` RX/TX queues on both ends: a
    /// frame sent from the client's TX queue q lands on the server's RX
    /// queue q.
    pub fn up_multiqueue(queues: u32) -> Topology {
        Self::up_with(queues, queues, true)
    }

    /// Like [`Topology::up`], with TX checksum offload off on both ends:
    /// full checksums, as a real NIC delivers them.
    pub fn up_full_checksums() -> Topology {
        Self::up_with(1, 1, false)
    }

    fn up_with(srv_queues: u32, cli_queues: u32, csum_offload: bool) -> Topology {
        let n = TOPOLOGY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}{}",
            base36(std::process::id() % 36u32.pow(4), 4),
            base36(n % 36u32.pow(2), 2)
        );
        let topo = Topology {
            srv_ns: format!("ntpx-{name}-srv"),
            cli_ns: format!("ntpx-{name}-cli"),
            srv_if: format!("nx-{name}-s"),
            cli_if: format!("nx-{name}-c"),
            srv_v4: Ipv4Addr::new(198, 18, 0, 1),
            cli_v4: Ipv4Addr::new(198, 18, 0, 2),
            srv_v6: "2001:db8::1".parse().expect("v6"),
            cli_v6: "2001:db8::2".parse().expect("v6"),
            name,
        };
        // From here on Drop cleans up, also if `up` itself fails half-way.
        run_ok(
            Command::new(netns_script())
                .args(["up", &topo.name])
                .env("NTPX_SRV_QUEUES", srv_queues.to_string())
                .env("NTPX_CLI_QUEUES", cli_queues.to_string())
                .env("NTPX_TX_CSUM", if csum_offload { "on" } else { "off" }),
        );
        topo
    }

    /// `ip netns exec SRV_NS prog`; add arguments with `.arg()/.args()`.
    pub fn srv_cmd(&self, prog: impl AsRef<OsStr>) -> Command {
        ns_cmd(&self.srv_ns, prog.as_ref())
    }

    /// `ip netns exec CLI_NS prog`; add arguments with `.arg()/.args()`.
    pub fn cli_cmd(&self, prog: impl AsRef<OsStr>) -> Command {
        ns_cmd(&self.cli_ns, prog.as_ref())
    }

    /// Runs `f` on a thread inside the server namespace (see [`in_netns`]).
    pub fn in_srv<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.srv_ns, f)
    }

    /// Runs `f` on a thread inside the client namespace (see [`in_netns`]).
    pub fn in_cli<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        in_netns(&self.cli_ns, f)
    }

    /// Starts a tshark capture on the client veth (`filter`: capture filter,
    /// e.g. `"udp port 123"`). See [`Capture`].
    pub fn capture_cli(&self, filter: &str) -> Capture {
        Capture::start(&self.cli_ns, &self.cli_if, filter)
    }

    /// Starts a tshark capture on the server veth. It sees only what the
    /// kernel stack sees: not frames that XDP redirects or drops.
    pub fn capture_srv(&self, filter: &str) -> Capture {
        Capture::start(&self.srv_ns, &self.srv_if, filter)
    }
}

fn ns_cmd(ns: &str, prog: &OsStr) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

impl Drop for Topology {
    fn drop(&mut self) {
        let res = Command::new(netns_script())
            .args(["down", &self.name])
            .stdin(Stdio::null())
            .output();
        match res {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: scripts/netns down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run scripts/netns down {}: {e}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------
// tshark
// ---------------------------------------------------------------------------

static CAPTURE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running `tshark -i IFACE -f FILTER -w FILE.pcap` inside a namespace.
///
/// [`Capture::start`] returns once tshark says "Capturing on" AND its socket
/// is really live (see `capture_socket_ready`). [`Capture::stop`]
/// ends it and returns the pcap path. The temp dir holding the pcap is removed
/// on drop, except while panicking (then its path is printed, for inspection).
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    dir: PathBuf,
    pcap: PathBuf,
    stderr: Option<JoinHandle<String>>,
}

impl Capture {
    /// Starts tshark in namespace `ns` on interface `iface` with capture
    /// filter `filter` (BPF syntax, e.g. `udp port 123`). Panics if tshark
    /// does not report "Capturing on" within 20 s.
    pub fn start(ns: &str, iface: &str, filter: &str) -> Capture {
        let dir = std::env::temp_dir().join(format!(
            "ntpx-capture-{}-{}",
            std::process::id(),
            CAPTURE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create capture dir");
        let pcap = dir.join(format!("{iface}.pcap"));
        let mut child = ns_cmd(ns, OsStr::new("tshark"))
            .args(["-q", "-n", "-i", iface, "-f", filter, "-F", "pcap", "-w"])
            .arg(&pcap)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn tshark");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut cap = Capture {
            child: Some(child),
            dir,
            pcap,
            stderr: Some(stderr),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let log = cap.finish(libc::SIGKILL);
            panic!("tshark in {ns} on {iface} did not start capturing:\n{log}");
        }
        // tshark says "Capturing on" when dumpcap has only just created its
        // packet socket: not yet bound to all protocols, no filter attached,
        // and frames sent in the next ~20 ms are lost. Wait until `ss` shows
        // the socket bound (`*:IFACE`) with the compiled capture filter.
        while !capture_socket_ready(ns, iface, !filter.trim().is_empty()) {
            if Instant::now() >= deadline {
                let log = cap.finish(libc::SIGKILL);
                panic!("tshark in {ns} on {iface}: capture socket never became ready:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cap
    }

    /// Path of the pcap file (complete only after [`Capture::stop`]).
    pub fn path(&self) -> &Path {
        &self.pcap
    }

    /// Stops tshark (after a short grace period for frames still in flight)
    /// and returns the path of the finished pcap file.
    pub fn stop(&mut self) -> PathBuf {
        if self.child.is_some() {
            std::thread::sleep(Duration::from_millis(300));
            let log = self.finish(libc::SIGINT);
            assert!(
                self.pcap.exists(),
                "tshark wrote no {}:\n{log}",
                self.pcap.display()
            );
        }
        self.pcap.clone()
    }

    /// Signals tshark, waits (SIGKILL after 10 s), returns its stderr.
    fn finish(&mut self, sig: libc::c_int) -> String {
        if let Some(mut child) = self.child.take() {
            // tshark runs dumpcap as its child, both in the group we created.
            kill_group(child.id(), sig);
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                kill_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
            }
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// True when `ss -0 -b -p` in `ns` shows a dumpcap packet socket bound to
/// `iface` for all protocols and, if `with_filter`, carrying a BPF filter of
/// more than one instruction (libpcap first installs a 1-instruction
/// drop-all filter while it drains the socket).
fn capture_socket_ready(ns: &str, iface: &str, with_filter: bool) -> bool {
    let Ok(out) = ns_cmd(ns, OsStr::new("ss"))
        .args(["-0", "-b", "-p", "-H"])
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    // One record per socket; the filter comes on an indented continuation line.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut records: Vec<String> = Vec::new();
    for line in text.lines() {
        match records.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => last.push_str(line),
            _ => records.push(line.to_owned()),
        }
    }
    let bound = format!("*:{iface} ");
    records.iter().any(|r| {
        r.contains(&bound)
            && r.contains("\"dumpcap\"")
            && (!with_filter
                || r.split("bpf filter (")
                    .nth(1)
                    .and_then(|rest| rest.split(')').next())
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 1))
    })
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish(libc::SIGKILL);
        if std::thread::panicking() {
            eprintln!("capture kept for inspection: {}", self.pcap.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One NTP packet as decoded by tshark's dissector (plus the raw payload).
///
/// Header fields come from tshark's `ntp.*` fields; a field tshark did not
/// produce (e.g. in a control message) reads as 0. The four timestamps are
/// the raw 64-bit NTP values (seconds << 32 | fraction) read from the UDP
/// payload bytes, because tshark only prints them as rounded dates; tshark's
/// text for them is kept in the `*_text` fields ("NULL" for zero).
#[derive(Debug, Clone, PartialEq)]
pub struct NtpDecoded {
    /// `frame.number` (1-based).
    pub frame: u32,
    /// `frame.time_epoch`: capture time, Unix seconds.
    pub time_epoch: f64,
    /// `ip.src` or `ipv6.src`.
    pub src: IpAddr,
    /// `ip.dst` or `ipv6.dst`.
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// `udp.length`: UDP header + payload.
    pub udp_len: u16,
    pub li: u8,
    pub vn: u8,
    pub mode: u8,
    pub stratum: u8,
    /// `ntp.ppoll`, as the signed log2 seconds value.
    pub ppoll: i8,
    /// `ntp.precision` (tshark prints the raw byte, e.g. 232 for -24).
    pub precision: i8,
    /// `ntp.rootdelay`, raw 16.16 fixed point.
    pub root_delay: u32,
    /// `ntp.rootdispersion`, raw 16.16 fixed point.
    pub root_dispersion: u32,
    /// `ntp.refid`, raw bytes.
    pub refid: Vec<u8>,
    pub reftime: u64,
    pub org: u64,
    pub rec: u64,
    pub xmt: u64,
    pub reftime_text: String,
    pub org_text: String,
    pub rec_text: String,
    pub xmt_text: String,
    /// tshark flagged the frame as malformed (`_ws.malformed`).
    pub malformed: bool,
    /// First expert-info message (`_ws.expert.message`), if tshark had any.
    pub expert: Option<String>,
    /// `udp.payload`: the whole NTP message.
    pub payload: Vec<u8>,
}

impl NtpDecoded {
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
    /// Mode 3 (client).
    pub fn is_request(&self) -> bool {
        self.mode == 3
    }
    /// Mode 4 (server).
    pub fn is_reply(&self) -> bool {
        self.mode == 4
    }
    /// Not malformed, and no expert info beyond the traceroute port guess.
    pub fn clean(&self) -> bool {
        // Wireshark's UDP dissector flags any destination port in
        // 33434..=33534 as "Possible traceroute"; an ephemeral client
        // port lands there now and then. That says nothing about NTP.
        let traceroute_guess = self
            .expert
            .as_deref()
            .is_some_and(|e| e.starts_with("Possible traceroute"));
        !self.malformed && (self.expert.is_none() || traceroute_guess)
    }
}

/// The tshark fields read by [`tshark_ntp_fields`], in output order (names as
/// in tshark 4.0; check `tshark -G fields | grep -i ntp` on another version).
pub const TSHARK_NTP_FIELDS: &[&str] = &[
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "ntp.flags.li",
    "ntp.flags.vn",
    "ntp.flags.mode",
    "ntp.stratum",
    "ntp.ppoll",
    "ntp.precision",
    "ntp.rootdelay",
    "ntp.rootdispersion",
    "ntp.refid",
    "ntp.reftime",
    "ntp.org",
    "ntp.rec",
    "ntp.xmt",
    "_ws.malformed",
    "_ws.expert",
    "_ws.expert.message",
    "udp.payload",
];

/// Decodes every NTP packet in `pcap` with `tshark -r FILE -Y ntp -T fields`
/// (ICMP errors quoting NTP packets are left out). Panics if tshark fails or
/// prints something unparsable.
pub fn tshark_ntp_fields(pcap: &Path) -> Vec<NtpDecoded> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(pcap)
        .args(["-Y", "ntp && !icmp && !icmpv6", "-T", "fields"])
        .args(["-E", "header=n", "-E", "separator=/t", "-E", "occurrence=f"]);
    for f in TSHARK_NTP_FIELDS {
        cmd.args(["-e", f]);
    }
    let out = run_ok(&mut cmd);
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_tshark_line(l).unwrap_or_else(|e| panic!("tshark line {l:?}: {e}")))
        .collect()
}

fn parse_tshark_line(line: &str) -> Result<NtpDecoded, String> {
    let cols: Vec<&str> = line.split('\t').collect();
    if cols.len() != TSHARK_NTP_FIELDS.len() {
        return Err(format!(
            "{} columns, expected {}",
            cols.len(),
            TSHARK_NTP_FIELDS.len()
        ));
    }
    let col = |name: &str| -> &str {
        let i = TSHARK_NTP_FIELDS
            .iter()
            .position(|f| *f == name)
            .expect("known field");
        cols[i].trim()
    };
    fn num<T: TryFrom<i64>>(name: &str, s: &str) -> Result<T, String> {
        if s.is_empty() {
            return T::try_from(0).map_err(|_| format!("{name}: zero does not fit"));
        }
        let v: i64 = s.parse().map_err(|e| format!("{name}={s:?}: {e}"))?;
        T::try_from(v).map_err(|_| format!("{name}={s:?}: out of range"))
    }
    // tshark prints the signed bytes (poll, precision) as unsigned 0..=255;
    // accept a signed rendering too.
    fn signed_byte(name: &str, s: &str) -> Result<i8, String> {
        let v: i64 = num(name, s)?;
        match v {
            -128..=127 => Ok(v as i8),
            128..=255 => Ok((v - 256) as i8),
            _ => Err(format!("{name}={s:?}: not a byte")),
        }
    }
    // Raw 16.16 in tshark 4.0; newer versions may print seconds.
    fn short_fmt(name: &str, s: &str) -> Result<u32, String> {
        if let Ok(v) = num::<u32>(name, s) {
            return Ok(v);
        }
        let secs: f64 = s
            .trim_end_matches(" seconds")
            .parse()
            .map_err(|e| format!("{name}={s:?}: {e}"))?;
        Ok((secs * 65536.0).round() as u32)
    }
    let addr = |v4: &str, v6: &str| -> Result<IpAddr, String> {
        let (a, b) = (col(v4), col(v6));
        let s = if a.is_empty() { b } else { a };
        s.parse().map_err(|e| format!("{v4}/{v6}={s:?}: {e}"))
    };
    let payload = hex(col("udp.payload"))?;
    let ts = |off: usize| -> u64 {
        payload
            .get(off..off + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0)
    };
    let expert = [col("_ws.expert.message"), col("_ws.expert")]
        .into_iter()
        .find(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(NtpDecoded {
        frame: num("frame.number", col("frame.number"))?,
        time_epoch: col("frame.time_epoch")
            .parse()
            .map_err(|e| format!("frame.time_epoch: {e}"))?,
        src: addr("ip.src", "ipv6.src")?,
        dst: addr("ip.dst", "ipv6.dst")?,
        src_port: num("udp.srcport", col("udp.srcport"))?,
        dst_port: num("udp.dstport", col("udp.dstport"))?,
        udp_len: num("udp.length", col("udp.length"))?,
        li: num("ntp.flags.li", col("ntp.flags.li"))?,
        vn: num("ntp.flags.vn", col("ntp.flags.vn"))?,
        mode: num("ntp.flags.mode", col("ntp.flags.mode"))?,
        stratum: num("ntp.stratum", col("ntp.stratum"))?,
        ppoll: signed_byte("ntp.ppoll", col("ntp.ppoll"))?,
        precision: signed_byte("ntp.precision", col("ntp.precision"))?,
        root_delay: short_fmt("ntp.rootdelay", col("ntp.rootdelay"))?,
        root_dispersion: short_fmt("ntp.rootdispersion", col("ntp.rootdispersion"))?,
        refid: hex(col("ntp.refid"))?,
        reftime: ts(16),
        org: ts(24),
        rec: ts(32),
        xmt: ts(40),
        reftime_text: col("ntp.reftime").to_owned(),
        org_text: col("ntp.org").to_owned(),
        rec_text: col("ntp.rec").to_owned(),
        xmt_text: col("ntp.xmt").to_owned(),
        malformed: !col("_ws.malformed").is_empty(),
        expert,
        payload,
    })
}

/// Parses tshark's FT_BYTES rendering: plain hex, optionally with ':' separators.
pub fn hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| *c != ':').collect();
    if !clean.len().is_multiple_of(2) {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).map_err(|e| format!("hex {s:?}: {e}")))
        .collect()
}

/// Seconds between the NTP era-0 epoch (1900) and the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A raw 64-bit NTP timestamp (era 0) as Unix seconds.
pub fn ntp_to_unix(ts: u64) -> f64 {
    (ts >> 32) as f64 - NTP_UNIX_OFFSET as f64 + (ts & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// The ntpx binary under test.
pub const NTPX: &str = env!("CARGO_BIN_EXE_ntpx");

/// A running `ntpx serve`, stopped with SIGTERM (and its output kept) on
/// drop.
pub struct Server {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Server {
    /// ntpx on the socket datapath of `topo`'s server end, with `workers`
    /// workers; `extra` flags after.
    pub fn start_socket(topo: &Topology, workers: u32, extra: &[&str]) -> Server {
        let workers = workers.to_string();
        let mut args = vec![
            "--iface",
            topo.srv_if.as_str(),
            "--datapath",
            "socket",
            "--workers",
            workers.as_str(),
        ];
        args.extend_from_slice(extra);
        Server::start(topo, &args)
    }

    /// `ntpx serve` in `topo`'s server namespace with `extra` flags, once
    /// it says it serves.
    pub fn start(topo: &Topology, extra: &[&str]) -> Server {
        Server::start_logging(topo, extra, Some("info"))
    }

    /// [`Server::start`] with `NTPX_LOG` set to `ntpx_log`, or not set at all
    /// (`None`: the config's `log_level` rules).
    pub fn start_logging(topo: &Topology, extra: &[&str], ntpx_log: Option<&str>) -> Server {
        let log =
            std::env::temp_dir().join(format!("ntpx-e2e-{}-{}.log", topo.name, std::process::id()));
        let out = std::fs::File::create(&log).expect("log file");
        // No stats lines unless the test asks for them.
        let quiet: &[&str] = if extra.contains(&"--stats-interval") {
            &[]
        } else {
            &["--stats-interval", "0"]
        };
        // A stats socket of this topology's own, unless the test picks one:
        // tests that run at once must not share /run/ntpx.sock.
        let stats_socket = std::env::temp_dir()
            .join(format!("ntpx-{}.sock", topo.name))
            .to_string_lossy()
            .into_owned();
        // Tests of delivery count every reply; on this shared 2-core VM a
        // worker that wakes late (scheduling tails of a millisecond and
        // more, at any rate) would lose ~1 % of them to the default
        // residence bound (500 µs). They run without it unless they set
        // it; `late_replies_are_dropped_and_counted` (tests/e2e.rs) tests
        // the bound itself.
        let bound: &[&str] = if extra.contains(&"--max-residence-us") {
            &[]
        } else {
            &["--max-residence-us", "0"]
        };
        // Tests of delivery send thousands of requests a second from one
        // address: the per-client rate limit (default 64/s) is off unless
        // the test sets it (tests/defence.rs runs with the defaults).
        let limit: &[&str] = if extra.iter().any(|a| a.starts_with("--rate-")) {
            &[]
        } else {
            &["--rate-interval", "0"]
        };
        // Tests that count every request count no self-probes: they are
        // off unless the test sets them (tests/self_probe.rs).
        let probe: &[&str] = if extra.contains(&"--self-probe") {
            &[]
        } else {
            &["--self-probe", "0"]
        };
        let own_socket: Vec<&str> = if extra
            .iter()
            .any(|a| *a == "--stats-socket" || *a == "--no-stats-socket")
        {
            Vec::new()
        } else {
            vec!["--stats-socket", &stats_socket]
        };
        // A synchronised stratum-1 clock (this machine's kernel says
        // unsynchronised), unless the test picks the source.
        let clock: &[&str] = if extra.contains(&"--clock") {
            &[]
        } else {
            &["--clock", "local", "--stratum", "1", "--ref-id", "XDPT"]
        };
        let child = topo
            .srv_cmd(NTPX)
            .arg("serve")
            .args(clock)
            .args(quiet)
            .args(bound)
            .args(limit)
            .args(probe)
            .args(&own_socket)
            .args(extra)
            .env_remove("NTPX_LOG")
            .envs(ntpx_log.map(|l| ("NTPX_LOG", l)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn ntpx serve");
        let mut s = Server {
            child: Some(child),
            log,
        };
        s.wait_ready();
        s
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id, while it runs (`ip netns exec` execs it:
    /// the same pid).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `sig` to the server (`ip netns exec` execs it: same pid).
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn wait_ready(&mut self) {
        for _ in 0..100 {
            let out = self.output();
            if out.contains("serving NTP") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("ntpx serve exited early ({status}):\n{out}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ntpx serve did not start:\n{}", self.output());
    }

    /// Waits up to `secs` for the server to exit on its own: its exit code
    /// (`None`: still running, or killed by a signal).
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Stops the server and returns everything it printed.
    pub fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if c.try_wait().ok().flatten().is_some() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("ntpx serve ignored SIGTERM:\n{}", self.output());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.output()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Attaches a pass-through XDP program to the client's veth: a veth only
/// accepts frames sent from XDP on its peer if it runs XDP itself.
pub fn peer_pass(topo: &Topology) {
    run_ok(
        topo.cli_cmd(NTPX)
            .args(["xdp-pass", "--iface", &topo.cli_if]),
    );
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

impl Topology {
    /// The MAC address of the server's (`"srv"`) or the client's (`"cli"`)
    /// veth end, read with `ip -br link`.
    pub fn mac(&self, side: &str) -> [u8; 6] {
        let (ns, iface) = match side {
            "srv" => (&self.srv_ns, &self.srv_if),
            "cli" => (&self.cli_ns, &self.cli_if),
            _ => panic!("side must be srv or cli, not {side}"),
        };
        let out = run_ok(Command::new("ip").args(["-n", ns, "-br", "link", "show", "dev", iface]));
        let text = out
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in `ip -br link`: {out}"));
        let mut mac = [0u8; 6];
        for (m, part) in mac.iter_mut().zip(text.split(':')) {
            *m = u8::from_str_radix(part, 16).unwrap_or_else(|_| panic!("MAC {text}"));
        }
        mac
    }
}

/// An `AF_PACKET` socket on the client's veth end: sends frames exactly as
/// the test crafted them (any MAC, any header byte) and receives every
/// frame the client end gets, whoever it is addressed to.
pub struct RawLink {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl RawLink {
    /// Opens the socket inside the client namespace, bound to `cli_if`.
    pub fn open(topo: &Topology) -> RawLink {
        let iface = topo.cli_if.clone();
        topo.in_cli(move || {
            use std::os::fd::FromRawFd;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the result is checked.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
            assert!(
                raw >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh fd nothing else owns.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            let name = std::ffi::CString::new(iface.as_str()).expect("name");
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            assert!(ifindex > 0, "no interface {iface}");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            // SAFETY: bind reads a live sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            // SAFETY: reads a live timeval of the size given.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            RawLink { fd, ifindex }
        })
    }

    /// Sends one frame as it is.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto reads `frame` and a live sockaddr_ll.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            frame.len() as isize,
            "send a {}-byte frame: {}",
            frame.len(),
            std::io::Error::last_os_error()
        );
    }

    /// Sends `frames` as fast as the kernel takes them (`sendmmsg`, 256 a
    /// call: fewer than the receiving end's backlog queue holds, so that the
    /// frames get as far as they can before the next call). Returns how
    /// many it took.
    pub fn send_burst(&self, frames: &[Vec<u8>]) -> usize {
        let mut sent = 0;
        for chunk in frames.chunks(256) {
            let mut iovs: Vec<libc::iovec> = chunk
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr().cast_mut().cast(),
                    iov_len: f.len(),
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .map(|iov| {
                    // SAFETY: all-zero is a valid mmsghdr.
                    let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            let mut at = 0;
            while at < hdrs.len() {
                // SAFETY: each header points at one iovec, which points at a
                // frame; all outlive the call. The socket is bound to the
                // interface, so no address is needed.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        hdrs[at..].as_mut_ptr(),
                        (hdrs.len() - at) as u32,
                        0,
                    )
                };
                if r <= 0 {
                    return sent;
                }
                at += r as usize;
                sent += r as usize;
            }
        }
        sent
    }

    /// Receives frames until `until` returns true for one (true) or
    /// `timeout` passes (false). Frames this socket sent itself are skipped.
    pub fn recv_until(&self, timeout: Duration, mut until: impl FnMut(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom writes at most buf.len() bytes into `buf` and
            // at most `len` bytes into `from`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut len,
                )
            };
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            if until(&buf[..n as usize]) {
                return true;
            }
        }
        false
    }
}

// ---------------------------------------------------------------------------
// Live numbers
// ---------------------------------------------------------------------------

/// A running server's live numbers: `ntpx stats --json` on its stats
/// socket, run in the server namespace.
pub fn live_stats(topo: &Topology, socket: &Path) -> serde_json::Value {
    let out = run_ok(
        topo.srv_cmd(NTPX)
            .args(["stats", "--json", "--socket"])
            .arg(socket),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ntpx stats --json: {e}\n{out}"))
}

/// [`live_stats`] once requests and replies stop changing (the workers
/// have drained), or after 20 s.
pub fn settled_stats(topo: &Topology, socket: &Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = live_stats(topo, socket);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = live_stats(topo, socket);
        if now["rx"] == last["rx"] && now["tx"] == last["tx"]
            || std::time::Instant::now() > deadline
        {
            return now;
        }
        last = now;
    }
}

/// Runs `ntpx load --json` in the client namespace against `server` and
/// parses its summary; on one CPU unless `extra` picks them (`--cpus`
/// given twice would join the lists).
pub fn ntpx_load(topo: &Topology, server: &str, extra: &[&str]) -> ntpx::load::report::Summary {
    let cpus: &[&str] = if extra.contains(&"--cpus") {
        &[]
    } else {
        &["--cpus", "0"]
    };
    let out = run_with_timeout(
        topo.cli_cmd(NTPX)
            .args(["load", server, "--iface", &topo.cli_if, "--json"])
            .args(cpus)
            .args(extra),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ntpx load failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{stdout}"))
}

/// The drops by reason of a stats document.
pub fn drops_of(doc: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    doc["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// chronyd
// ---------------------------------------------------------------------------

/// A chronyd run by `cmd` (in a namespace, or not) with `directives`, its
/// config, pid file and any socket or log in `dir` (made 0700: chronyd
/// wants a private directory for its command socket), in the foreground,
/// never touching the clock (`-x`). Killed on drop; the directory stays
/// (a test may restart chronyd in it) until the test removes it.
pub struct Chronyd {
    child: Child,
    dir: PathBuf,
}

impl Chronyd {
    pub fn start(mut cmd: Command, dir: &Path, directives: &str) -> Chronyd {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let conf = dir.join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "{directives}\ncmdport 0\npidfile {0}/chronyd.pid\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = cmd
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chronyd");
        Chronyd {
            child,
            dir: dir.to_owned(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits (up to 5 s) for its command socket `chronyd.sock` to appear.
    pub fn wait_for_socket(self) -> Chronyd {
        let sock = self.dir.join("chronyd.sock");
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(sock.exists(), "chronyd made no command socket");
        self
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("chronyd.sock"));
    }
}

/// One NTP query from the client namespace with a socket of its own:
/// `(LI, stratum, root dispersion, reference ID)` of the reply, or `None`
/// without one within 3 s.
pub fn header_of(topo: &Topology, server: &str) -> Option<(u8, u8, u32, u32)> {
    const CLIENT: &str = "import socket, sys\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.settimeout(3)\n\
req = bytearray(48); req[0] = 0x23; req[40:48] = bytes(range(1, 9))\n\
s.sendto(req, (sys.argv[1], 123))\n\
d = s.recv(200)\n\
print(d[0] >> 6, d[1], int.from_bytes(d[8:12], 'big'), int.from_bytes(d[12:16], 'big'))\n";
    let out = topo
        .cli_cmd("python3")
        .args(["-c", CLIENT, server])
        .output()
        .ok()?;
    let v: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v.len() == 4).then(|| (v[0] as u8, v[1] as u8, v[2], v[3]))
}

/// Queries `server` until its reply's header satisfies `want` (printing
/// how long that took: times are reported, never asserted), failing after
/// `secs` seconds.
pub fn until_header(
    topo: &Topology,
    server: &str,
    what: &str,
    secs: u64,
    want: impl Fn((u8, u8, u32, u32)) -> bool,
) -> (u8, u8, u32, u32) {
    let start = Instant::now();
    loop {
        let got = header_of(topo, server);
        if let Some(h) = got.filter(|&h| want(h)) {
            println!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: still {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// A prober: a request a millisecond, each reply's time and stratum
// ---------------------------------------------------------------------------

/// Sends a request every millisecond from the client namespace and prints
/// `unix_time stratum` for each reply, until `secs` have passed; with a
/// third argument N, from N sockets in turn (N source ports).
pub const PROBER: &str = r#"
import socket, struct, sys, time, select
dst, secs = sys.argv[1], float(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
for s in socks:
    s.setblocking(False)
end = time.time() + secs
nxt = time.time()
i = 0
while time.time() < end:
    now = time.time()
    if now >= nxt:
        req = bytearray(48); req[0] = 0x23
        req[40:48] = struct.pack(">d", now)
        try:
            socks[i % n].sendto(bytes(req), (dst, 123))
        except OSError:
            pass
        i += 1
        nxt = now + 0.001
    r, _, _ = select.select(socks, [], [], 0.0005)
    for s in r:
        while True:
            try:
                d = s.recv(512)
            except (BlockingIOError, OSError):
                break
            if len(d) >= 48:
                print("%.6f %d" % (time.time(), d[1]), flush=True)
"#;

/// The prober's replies: `(unix time, stratum)`.
pub fn probe_replies(stdout: &[u8]) -> Vec<(f64, u8)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// What the prober saw around a fallback to a daemon behind ntpx: the
/// replies from ntpx (`ours`) before `lost_at`; how long after `lost_at`
/// the first reply from the daemon (`theirs`) came; how long after
/// `back_at` the first from ntpx again.
pub fn fallback_times(
    replies: &[(f64, u8)],
    (ours, theirs): (u8, u8),
    lost_at: f64,
    back_at: f64,
) -> (usize, Option<f64>, Option<f64>) {
    let first = |from: f64, stratum: u8| {
        replies
            .iter()
            .find(|&&(t, s)| t >= from && s == stratum)
            .map(|&(t, _)| t - from)
    };
    let before = replies
        .iter()
        .filter(|&&(t, s)| t < lost_at && s == ours)
        .count();
    (before, first(lost_at, theirs), first(back_at, ours))
}

/// Now, as the prober stamps its replies.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

// ---------------------------------------------------------------------------
// Freezing one thread (cgroup v1 freezer)
// ---------------------------------------------------------------------------

pub const FREEZER: &str = "/sys/fs/cgroup/freezer";

/// One thread in a frozen cgroup of its own; thawed and put back on drop,
/// also when the test fails.
pub struct Frozen {
    dir: PathBuf,
    tid: String,
}

impl Frozen {
    pub fn new(name: &str, tid: &str) -> Frozen {
        let dir = PathBuf::from(FREEZER).join(name);
        std::fs::create_dir_all(&dir).expect("a freezer cgroup");
        let f = Frozen {
            dir,
            tid: tid.to_owned(),
        };
        std::fs::write(f.dir.join("tasks"), tid).expect("move the thread");
        std::fs::write(f.dir.join("freezer.state"), "FROZEN").expect("freeze");
        f
    }

    pub fn thaw(&self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        let _ = std::fs::write(PathBuf::from(FREEZER).join("tasks"), &self.tid);
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The thread of `pid` named `comm`.
pub fn thread_named(pid: u32, comm: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// True if the cgroup v1 freezer is there; false (skip) with a printed
/// reason if not, which fails under CI=true.
pub fn require_freezer(test: &str) -> bool {
    if std::path::Path::new(FREEZER).join("tasks").exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no cgroup v1 freezer at {FREEZER}"
    );
    println!("{test}: skipped: no cgroup v1 freezer at {FREEZER}");
    false
}
