//! The load generator's XDP programs (bpf/load.bpf.c, loaded through
//! `ntpx::load::program`): the reply-steering program and the sink on crafted
//! frames through `BPF_PROG_TEST_RUN`, each test with a freshly loaded
//! program (the verifier runs every time) and exact counter deltas; then
//! both programs live on a veth pair in a throwaway network namespace,
//! including the `ntpx sink` run loop.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, and CAP_SYS_ADMIN for
//! the namespaces). Without it every test says why and skips; with
//! `CI=true` it fails instead.

mod common;

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpHeaders, IpNumber, Ipv4Header,
    PacketBuilder, PacketBuilderStep, UdpHeader, VlanId,
};
use ntpx::load::program::{
    ClientCounters, ClientProgram, ClientProgramKind, SinkOptions, run_sink,
};
use ntpx::sys::bpf::{
    AttachMode, ProgramError, TestRun, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, XdpMode,
};
use ntpx::sys::xsk::meta::{META_LEN, META_MAGIC};
use ntpx::sys::xsk::{BindMode, QueueOptions, XskQueue};

// ---------------------------------------------------------------------------
// Who may run this
// ---------------------------------------------------------------------------

macro_rules! root_only {
    () => {
        if !common::require_bpf_privileges() {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Frames between the server (192.0.2.1 / 2001:db8::1, port 123) and the
// load generator (192.0.2.50 / 2001:db8::50, an ephemeral port)
// ---------------------------------------------------------------------------

const SRV_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0, 0, 0x01];
const GEN_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0, 0, 0x50];
const SRV_V4: [u8; 4] = [192, 0, 2, 1];
const GEN_V4: [u8; 4] = [192, 0, 2, 50];
const SRV_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];
const GEN_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50,
];
const NTP: u16 = 123;
const GEN_PORT: u16 = 50_123;
/// Ethernet + IPv4 (no options) headers: where the UDP header starts.
const UDP4_AT: usize = 14 + 20;

/// An NTP packet of `len` bytes: version 4, `mode`, the rest zero.
fn ntp(mode: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if let Some(first) = p.first_mut() {
        *first = (4 << 3) | mode;
    }
    p
}

/// A server reply (mode 4, 48 bytes).
fn reply_payload() -> Vec<u8> {
    ntp(4, 48)
}

type EthStep = PacketBuilderStep<etherparse::Ethernet2Header>;

/// Ethernet from the server to the generator.
fn srv_to_gen() -> EthStep {
    PacketBuilder::ethernet2(SRV_MAC, GEN_MAC)
}

/// Ethernet from the generator to the server.
fn gen_to_srv() -> EthStep {
    PacketBuilder::ethernet2(GEN_MAC, SRV_MAC)
}

fn serialize(step: PacketBuilderStep<UdpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(step.size(payload.len()));
    step.write(&mut frame, payload)
        .expect("serialize the frame");
    frame
}

/// IPv4 UDP, server → generator.
fn reply4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    serialize(
        srv_to_gen().ipv4(SRV_V4, GEN_V4, 64).udp(sport, dport),
        payload,
    )
}

/// IPv6 UDP, server → generator.
fn reply6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    serialize(
        srv_to_gen().ipv6(SRV_V6, GEN_V6, 64).udp(sport, dport),
        payload,
    )
}

/// IPv4 UDP, generator → server.
fn request4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    serialize(
        gen_to_srv().ipv4(GEN_V4, SRV_V4, 64).udp(sport, dport),
        payload,
    )
}

/// IPv6 UDP, generator → server.
fn request6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    serialize(
        gen_to_srv().ipv6(GEN_V6, SRV_V6, 64).udp(sport, dport),
        payload,
    )
}

fn vlan(id: u16) -> VlanId {
    VlanId::try_new(id).expect("VLAN id")
}

/// The standard reply, behind one 802.1Q tag and behind an 802.1ad + 802.1Q
/// pair.
fn tagged_replies() -> [Vec<u8>; 2] {
    let payload = reply_payload();
    [
        serialize(
            srv_to_gen()
                .single_vlan(vlan(10))
                .ipv4(SRV_V4, GEN_V4, 64)
                .udp(NTP, GEN_PORT),
            &payload,
        ),
        serialize(
            srv_to_gen()
                .double_vlan(vlan(20), vlan(30))
                .ipv6(SRV_V6, GEN_V6, 64)
                .udp(NTP, GEN_PORT),
            &payload,
        ),
    ]
}

/// The same request, behind one 802.1Q tag.
fn tagged_request() -> Vec<u8> {
    serialize(
        gen_to_srv()
            .single_vlan(vlan(10))
            .ipv4(GEN_V4, SRV_V4, 64)
            .udp(GEN_PORT, NTP),
        &ntp(3, 48),
    )
}

/// A third tag in front of two: beyond what the programs walk.
fn three_tags(double_tagged: &[u8]) -> Vec<u8> {
    let mut f = double_tagged.to_vec();
    f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    f
}

/// IPv4 UDP with its header adjusted by `tune` (fragment fields).
fn udp4_tuned(
    eth: EthStep,
    addrs: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
    tune: impl FnOnce(&mut Ipv4Header),
) -> Vec<u8> {
    let mut ip = Ipv4Header::new(0, 64, IpNumber::UDP, addrs.0, addrs.1).expect("IPv4 header");
    tune(&mut ip);
    serialize(
        eth.ip(IpHeaders::Ipv4(ip, Default::default()))
            .udp(ports.0, ports.1),
        &reply_payload(),
    )
}

/// First and later fragments of a UDP datagram between `addrs` / `ports`.
fn fragments(eth: fn() -> EthStep, addrs: ([u8; 4], [u8; 4]), ports: (u16, u16)) -> [Vec<u8>; 2] {
    [
        udp4_tuned(eth(), addrs, ports, |ip| ip.more_fragments = true),
        udp4_tuned(eth(), addrs, ports, |ip| {
            ip.fragment_offset = 100u16.try_into().expect("fragment offset");
        }),
    ]
}

fn arp() -> Vec<u8> {
    let packet = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &SRV_MAC,
        &SRV_V4,
        &[0; 6],
        &GEN_V4,
    )
    .expect("ARP packet");
    let step = PacketBuilder::ethernet2(SRV_MAC, [0xff; 6]).arp(packet);
    let mut frame = Vec::with_capacity(step.size());
    step.write(&mut frame).expect("serialize ARP");
    frame
}

/// TCP between the server's port 123 and the generator, in `dir`ection.
fn tcp4(from_server: bool) -> Vec<u8> {
    let step = if from_server {
        srv_to_gen()
            .ipv4(SRV_V4, GEN_V4, 64)
            .tcp(NTP, GEN_PORT, 1, 1024)
    } else {
        gen_to_srv()
            .ipv4(GEN_V4, SRV_V4, 64)
            .tcp(GEN_PORT, NTP, 1, 1024)
    };
    let mut frame = Vec::with_capacity(step.size(0));
    step.write(&mut frame, &[]).expect("serialize TCP");
    frame
}

/// `frame` with its IPv6 next-header set to hop-by-hop options (0): an
/// extension header, which the programs do not walk.
fn with_ipv6_ext_header(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 6] = 0;
    f
}

/// Frames whose headers stop short or do not parse, built from `full`
/// (an untagged IPv4 UDP frame) and `full6` (IPv6).
fn broken_headers(full: &[u8], full6: &[u8], tagged: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut ihl4 = full.to_vec();
    ihl4[14] = 0x44;
    let mut v6_in_v4 = full.to_vec();
    v6_in_v4[14] = 0x65;
    let mut v4_in_v6 = full6.to_vec();
    v4_in_v6[14] = 0x40;
    vec![
        ("ethernet only", full[..14].to_vec()),
        ("IPv4 header cut", full[..14 + 12].to_vec()),
        ("UDP header cut (IPv4)", full[..UDP4_AT + 6].to_vec()),
        ("UDP header cut (IPv6)", full6[..14 + 40 + 4].to_vec()),
        ("IPv6 header cut", full6[..14 + 30].to_vec()),
        ("VLAN tag cut", tagged[..16].to_vec()),
        ("IHL 4", ihl4),
        ("version 6 in an IPv4 frame", v6_in_v4),
        ("version 4 in an IPv6 frame", v4_in_v6),
    ]
}

// ---------------------------------------------------------------------------
// Running frames and checking what the program did
// ---------------------------------------------------------------------------

fn load(kind: ClientProgramKind, port: u16) -> ClientProgram {
    ClientProgram::load(kind, port)
        .unwrap_or_else(|e| panic!("loading the {kind} program failed: {e}"))
}

/// Counter deltas of one frame: `seen` 1, the fields given 1 (or `= n`),
/// everything else 0.
macro_rules! delta {
    (@value) => { 1 };
    (@value $n:expr) => { $n };
    ($($field:ident $(= $n:expr)?),* $(,)?) => {
        ClientCounters {
            seen: 1,
            $($field: delta!(@value $($n)?),)*
            ..ClientCounters::default()
        }
    };
}

fn verdict(v: u32) -> &'static str {
    match v {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_REDIRECT => "XDP_REDIRECT",
        XDP_TX => "XDP_TX",
        _ => "other",
    }
}

/// Runs `frame` once and checks the verdict and the exact counter deltas. A
/// frame that is not redirected comes back unchanged, without metadata.
fn expect(
    prog: &ClientProgram,
    what: &str,
    frame: &[u8],
    want: u32,
    deltas: ClientCounters,
) -> TestRun {
    let before = prog.counters().expect("read the counters");
    let run = prog
        .test_run(frame)
        .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN: {e}"));
    let did = prog.counters().expect("read the counters").since(&before);
    assert_eq!(
        (verdict(run.verdict), did),
        (verdict(want), deltas),
        "{what} ({} bytes)",
        frame.len()
    );
    if want != XDP_REDIRECT {
        assert_eq!(
            run.meta_len, 0,
            "{what}: metadata on a frame not redirected"
        );
        assert_eq!(run.frame(), frame, "{what}: frame changed");
    }
    run
}

fn tai_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_TAI).expect("CLOCK_TAI");
    u64::try_from(ts.tv_sec()).expect("after 1970") * 1_000_000_000
        + u64::try_from(ts.tv_nsec()).expect("nanoseconds")
}

// ---------------------------------------------------------------------------
// A throwaway network namespace
// ---------------------------------------------------------------------------

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, panics with its stderr if it fails, returns its stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ntpxbl-PID-N`) for one test. Dropping it
/// deletes the namespace, also while a failed test unwinds.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let name = format!(
            "ntpxbl-{}-{}",
            std::process::id(),
            NETNS_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        // Exists from here on: Drop deletes it whatever happens next.
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A veth pair `a` / `b` with one queue on each end, so that every frame
    /// arrives on queue 0, both ends up.
    fn veth(&self, a: &str, b: &str) {
        let one_queue = ["numtxqueues", "1", "numrxqueues", "1"];
        let mut args = vec!["link", "add", a];
        args.extend(one_queue);
        args.extend(["type", "veth", "peer", "name", b]);
        args.extend(one_queue);
        self.ip(&args);
        for dev in [a, b] {
            self.ip(&["link", "set", dev, "up"]);
        }
    }

    /// Waits until `dev` is operationally up: frames sent earlier are
    /// dropped by the not yet activated qdisc.
    fn wait_up(&self, dev: &str) {
        wait_for(&format!("{dev} up"), || {
            let brief = self.ip(&["-br", "link", "show", "dev", dev]);
            brief.split_whitespace().nth(1) == Some("UP")
        });
    }

    /// The id of the XDP program attached to `dev`, if any.
    fn xdp_prog_id(&self, dev: &str) -> Option<u32> {
        let detail = self.ip(&["-d", "-o", "link", "show", "dev", dev]);
        let at = detail.find("prog/xdp")?;
        let mut words = detail[at..].split_whitespace().skip_while(|w| *w != "id");
        words.next()?;
        words.next()?.parse().ok()
    }

    /// Runs `f` on a thread that has entered the namespace (threads it
    /// spawns are in it too) and returns its result; a panic in `f` goes on
    /// in the caller.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        let handle = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `handle` is an open namespace file for the whole
                // call; setns(CLONE_NEWNET) moves only this new thread.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Also runs while a failed test unwinds: report, never panic here.
        match Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "cannot delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot delete netns {}: {e}", self.name),
        }
    }
}

/// Polls `ready` every 10 ms for up to 5 s.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ifindex(name: &str) -> u32 {
    ntpx::sys::netif::ifindex(name).expect("interface index")
}

/// Writes whole Ethernet frames out of one interface: an AF_PACKET socket
/// bound to it.
struct Wire(File);

impl Wire {
    fn open(ifindex: u32) -> Self {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let to = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: 0, // send only
            sll_ifindex: i32::try_from(ifindex).expect("ifindex"),
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `to` is a complete sockaddr_ll and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        Self(File::from(fd))
    }

    fn send(&mut self, frame: &[u8]) {
        let n = self.0.write(frame).expect("send a frame");
        assert_eq!(n, frame.len(), "short send");
    }
}

/// A copy-mode AF_XDP socket on queue 0 of `ifindex`, small rings.
fn xsk(ifindex: u32) -> XskQueue {
    let opts = QueueOptions {
        frames: 64,
        ring_size: 64,
        bind_mode: BindMode::Copy,
        busy_poll_budget: 0,
        tx_timestamps: false,
    };
    XskQueue::open(ifindex, 0, &opts).expect("bind an AF_XDP socket to queue 0")
}

/// Waits up to `timeout` for frames on `xsk`; returns the first batch
/// received (empty if none came): each frame with the metadata the
/// program left in front of it (if any).
fn receive_batch(
    xsk: &mut XskQueue,
    timeout: Duration,
) -> Vec<(Option<ntpx::sys::xsk::meta::Meta>, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while Instant::now() < deadline && got.is_empty() {
        xsk.wait(Duration::from_millis(20));
        xsk.receive();
        xsk.consume(|frame| got.push((frame.take_meta(), frame.bytes().to_vec())));
    }
    got
}

// ---------------------------------------------------------------------------
// ntpx_load_rx through BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------

#[test]
fn replies_pass_while_no_socket_is_registered() {
    root_only!();
    let prog = load(ClientProgramKind::Redirect, NTP);
    let payload = reply_payload();
    expect(
        &prog,
        "IPv4 reply",
        &reply4(NTP, GEN_PORT, &payload),
        XDP_PASS,
        delta!(no_socket),
    );
    expect(
        &prog,
        "IPv6 reply",
        &reply6(NTP, GEN_PORT, &payload),
        XDP_PASS,
        delta!(no_socket),
    );
    let [single, double] = tagged_replies();
    expect(&prog, "802.1Q reply", &single, XDP_PASS, delta!(no_socket));
    expect(&prog, "QinQ reply", &double, XDP_PASS, delta!(no_socket));
    expect(
        &prog,
        "3 tags",
        &three_tags(&double),
        XDP_PASS,
        delta!(pass_not_ip),
    );
    assert_eq!(
        prog.counters().unwrap(),
        ClientCounters {
            seen: 5,
            no_socket: 4,
            pass_not_ip: 1,
            ..Default::default()
        }
    );
}

#[test]
fn redirect_passes_other_ports() {
    root_only!();
    let prog = load(ClientProgramKind::Redirect, NTP);
    let payload = reply_payload();
    for (what, frame) in [
        ("from port 124", reply4(NTP + 1, GEN_PORT, &payload)),
        ("IPv6 from port 53", reply6(53, GEN_PORT, &payload)),
        // The generator's own requests go *to* 123: not replies.
        ("request to 123", request4(GEN_PORT, NTP, &ntp(3, 48))),
        ("IPv6 request to 123", request6(GEN_PORT, NTP, &ntp(3, 48))),
    ] {
        expect(&prog, what, &frame, XDP_PASS, delta!(pass_other_port));
    }
}

#[test]
fn redirect_server_port_is_configurable() {
    root_only!();
    let prog = load(ClientProgramKind::Redirect, 10_123);
    let payload = reply_payload();
    expect(
        &prog,
        "from 123",
        &reply4(NTP, GEN_PORT, &payload),
        XDP_PASS,
        delta!(pass_other_port),
    );
    expect(
        &prog,
        "from 10123",
        &reply4(10_123, GEN_PORT, &payload),
        XDP_PASS,
        delta!(no_socket),
    );
    expect(
        &prog,
        "IPv6 from 10123",
        &reply6(10_123, GEN_PORT, &payload),
        XDP_PASS,
        delta!(no_socket),
    );
}

#[test]
fn redirect_passes_what_is_not_udp() {
    root_only!();
    let prog = load(ClientProgramKind::Redirect, NTP);
    expect(&prog, "ARP", &arp(), XDP_PASS, delta!(pass_not_ip));
    expect(
        &prog,
        "TCP from 123",
        &tcp4(true),
        XDP_PASS,
        delta!(pass_not_udp),
    );
    let ext = with_ipv6_ext_header(&reply6(NTP, GEN_PORT, &reply_payload()));
    expect(
        &prog,
        "IPv6 extension header",
        &ext,
        XDP_PASS,
        delta!(pass_not_udp),
    );
    let [first, later] = fragments(srv_to_gen, (SRV_V4, GEN_V4), (NTP, GEN_PORT));
    expect(
        &prog,
        "first fragment",
        &first,
        XDP_PASS,
        delta!(pass_fragment),
    );
    expect(
        &prog,
        "later fragment",
        &later,
        XDP_PASS,
        delta!(pass_fragment),
    );
    // Don't-fragment is not a fragment.
    let df = udp4_tuned(srv_to_gen(), (SRV_V4, GEN_V4), (NTP, GEN_PORT), |ip| {
        ip.dont_fragment = true;
    });
    expect(&prog, "DF set", &df, XDP_PASS, delta!(no_socket));
}

#[test]
fn redirect_passes_truncated_headers() {
    root_only!();
    let prog = load(ClientProgramKind::Redirect, NTP);
    let payload = reply_payload();
    let [tagged, _] = tagged_replies();
    for (what, frame) in broken_headers(
        &reply4(NTP, GEN_PORT, &payload),
        &reply6(NTP, GEN_PORT, &payload),
        &tagged,
    ) {
        expect(&prog, what, &frame, XDP_PASS, delta!(pass_truncated));
    }
}

#[test]
fn registered_socket_gets_every_reply_with_metadata() {
    root_only!();
    let ns = Netns::new();
    ns.enter(|| {
        let prog = load(ClientProgramKind::Redirect, NTP);
        let xsk = xsk(ifindex("lo"));
        prog.register_socket(0, xsk.fd())
            .expect("register the socket");

        let reply = reply4(NTP, GEN_PORT, &reply_payload());
        let before = tai_ns();
        let run = expect(
            &prog,
            "IPv4 reply",
            &reply,
            XDP_REDIRECT,
            delta!(redirected),
        );
        let after = tai_ns();
        // The output buffer starts at data_meta: struct ntpx_meta, then the
        // untouched frame.
        assert_eq!(run.meta_len, META_LEN);
        assert_eq!(run.data.len(), META_LEN + reply.len());
        assert_eq!(&run.data[META_LEN - 4..META_LEN], &META_MAGIC.to_ne_bytes());
        assert_eq!(run.frame(), &reply[..]);
        let meta = run.meta.expect("metadata");
        assert_eq!((meta.rx_hw_ns, meta.flags), (0, 0));
        assert!(
            (before..=after).contains(&meta.rx_sw_tai_ns),
            "stamp {} outside [{before}, {after}] (CLOCK_TAI)",
            meta.rx_sw_tai_ns
        );

        // No NTP checks: whatever comes from port 123 goes to the generator,
        // which counts the broken ones itself.
        let mut bad_udp_len = reply.clone();
        bad_udp_len[UDP4_AT + 4..UDP4_AT + 6].copy_from_slice(&9999u16.to_be_bytes());
        let [single, double] = tagged_replies();
        for (what, frame) in [
            ("IPv6 reply", reply6(NTP, GEN_PORT, &reply_payload())),
            ("mode 3 from port 123", reply4(NTP, GEN_PORT, &ntp(3, 48))),
            ("mode 0, IPv6", reply6(NTP, GEN_PORT, &ntp(0, 48))),
            ("empty payload", reply4(NTP, GEN_PORT, &[])),
            ("3-byte payload", reply4(NTP, GEN_PORT, &[0x24, 1, 2])),
            ("1000-byte payload", reply6(NTP, GEN_PORT, &ntp(4, 1000))),
            ("UDP length beyond the frame", bad_udp_len),
            (
                "source port 123 to port 123",
                reply4(NTP, NTP, &reply_payload()),
            ),
            ("802.1Q reply", single),
            ("QinQ reply", double),
        ] {
            let run = expect(&prog, what, &frame, XDP_REDIRECT, delta!(redirected));
            assert!(run.meta.is_some(), "{what}: no metadata");
            assert_eq!(run.frame(), &frame[..], "{what}");
        }

        // The rest still goes to the kernel.
        expect(
            &prog,
            "other port",
            &reply4(NTP + 1, GEN_PORT, &reply_payload()),
            XDP_PASS,
            delta!(pass_other_port),
        );
        expect(&prog, "ARP", &arp(), XDP_PASS, delta!(pass_not_ip));

        prog.unregister_socket(0).expect("unregister");
        prog.unregister_socket(0)
            .expect("unregistering twice is fine");
        expect(
            &prog,
            "after unregister",
            &reply,
            XDP_PASS,
            delta!(no_socket),
        );
        assert_eq!(prog.counters().unwrap().meta_failed, 0);
    });
}

#[test]
fn socket_map_errors() {
    root_only!();
    let redirect = load(ClientProgramKind::Redirect, NTP);
    let err = redirect.register_socket(256, 3).unwrap_err();
    assert!(
        matches!(err, ProgramError::QueueOutOfRange { queue: 256, .. }),
        "{err}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let err = redirect.register_socket(0, udp.as_raw_fd()).unwrap_err();
    assert!(
        matches!(err, ProgramError::RegisterSocket { queue: 0, .. }),
        "{err}"
    );

    let sink = load(ClientProgramKind::Sink, NTP);
    assert_eq!(sink.kind(), ClientProgramKind::Sink);
    for err in [
        sink.register_socket(0, udp.as_raw_fd()).unwrap_err(),
        sink.unregister_socket(0).unwrap_err(),
    ] {
        assert!(
            err.to_string().contains("ClientProgramKind::Redirect"),
            "{err}"
        );
    }
}

#[test]
fn test_run_needs_an_ethernet_header() {
    root_only!();
    let prog = load(ClientProgramKind::Sink, NTP);
    let err = prog.test_run(&[0u8; 13]).unwrap_err();
    assert!(
        matches!(err, ProgramError::TestFrameTooShort { len: 13, .. }),
        "{err}"
    );
    assert_eq!(prog.counters().unwrap(), ClientCounters::default());
}

// ---------------------------------------------------------------------------
// ntpx_reflect through BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------

/// Every request to the port goes straight back: the output is, byte for
/// byte, the frame etherparse builds from the server to the generator with
/// the same payload (so every checksum is still right); everything else
/// passes untouched, counted as the sink counts it.
#[test]
fn reflect_sends_requests_back_with_endpoints_swapped() {
    root_only!();
    let prog = load(ClientProgramKind::Reflect, NTP);
    let payload = ntp(3, 48);
    let tagged_back = serialize(
        srv_to_gen()
            .single_vlan(vlan(10))
            .ipv4(SRV_V4, GEN_V4, 64)
            .udp(NTP, GEN_PORT),
        &payload,
    );
    let cases = [
        (
            "IPv4",
            request4(GEN_PORT, NTP, &payload),
            reply4(NTP, GEN_PORT, &payload),
        ),
        (
            "IPv6",
            request6(GEN_PORT, NTP, &payload),
            reply6(NTP, GEN_PORT, &payload),
        ),
        ("802.1Q", tagged_request(), tagged_back),
        (
            "1400-byte payload",
            request4(GEN_PORT, NTP, &ntp(3, 1400)),
            reply4(NTP, GEN_PORT, &ntp(3, 1400)),
        ),
    ];
    for (what, frame, back) in &cases {
        let before = prog.counters().expect("counters");
        let run = prog.test_run(frame).expect("BPF_PROG_TEST_RUN");
        let did = prog.counters().expect("counters").since(&before);
        assert_eq!(
            (verdict(run.verdict), did),
            (verdict(XDP_TX), delta!(reflected)),
            "{what}"
        );
        assert_eq!(run.frame(), &back[..], "{what}: not the swapped frame");
    }
    expect(
        &prog,
        "reply from 123",
        &reply4(NTP, GEN_PORT, &reply_payload()),
        XDP_PASS,
        delta!(pass_other_port),
    );
    expect(&prog, "ARP", &arp(), XDP_PASS, delta!(pass_not_ip));
    for (i, frag) in fragments(gen_to_srv, (GEN_V4, SRV_V4), (GEN_PORT, NTP))
        .iter()
        .enumerate()
    {
        expect(
            &prog,
            &format!("fragment {i}"),
            frag,
            XDP_PASS,
            delta!(pass_fragment),
        );
    }
    let c = prog.counters().unwrap();
    assert_eq!(
        (c.reflected, c.sunk, c.redirected),
        (cases.len() as u64, 0, 0)
    );
}

// ---------------------------------------------------------------------------
// ntpx_sink through BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------------

#[test]
fn sink_drops_and_counts_udp_to_the_port() {
    root_only!();
    let prog = load(ClientProgramKind::Sink, NTP);
    let frames = [
        ("IPv4 request", request4(GEN_PORT, NTP, &ntp(3, 48))),
        ("IPv6 request", request6(GEN_PORT, NTP, &ntp(3, 48))),
        ("802.1Q request", tagged_request()),
        // Whatever the payload: the sink only counts.
        ("1-byte payload", request4(GEN_PORT, NTP, &[0xe3])),
        ("mode 4 to 123", request6(NTP, NTP, &reply_payload())),
        ("1400-byte payload", request4(GEN_PORT, NTP, &ntp(3, 1400))),
    ];
    let mut bytes = 0;
    for (what, frame) in &frames {
        let len = frame.len() as u64;
        expect(&prog, what, frame, XDP_DROP, delta!(sunk, sunk_bytes = len));
        bytes += len;
    }
    let n = frames.len() as u64;
    assert_eq!(
        prog.counters().unwrap(),
        ClientCounters {
            seen: n,
            sunk: n,
            sunk_bytes: bytes,
            ..Default::default()
        }
    );
}

#[test]
fn sink_passes_everything_else() {
    root_only!();
    let prog = load(ClientProgramKind::Sink, NTP);
    let payload = ntp(3, 48);
    // Replies come *from* 123: not for the sink.
    expect(
        &prog,
        "reply from 123",
        &reply4(NTP, GEN_PORT, &reply_payload()),
        XDP_PASS,
        delta!(pass_other_port),
    );
    expect(
        &prog,
        "to port 124",
        &request6(GEN_PORT, NTP + 1, &payload),
        XDP_PASS,
        delta!(pass_other_port),
    );
    expect(&prog, "ARP", &arp(), XDP_PASS, delta!(pass_not_ip));
    expect(
        &prog,
        "TCP to 123",
        &tcp4(false),
        XDP_PASS,
        delta!(pass_not_udp),
    );
    let ext = with_ipv6_ext_header(&request6(GEN_PORT, NTP, &payload));
    expect(
        &prog,
        "IPv6 extension header",
        &ext,
        XDP_PASS,
        delta!(pass_not_udp),
    );
    for (i, frag) in fragments(gen_to_srv, (GEN_V4, SRV_V4), (GEN_PORT, NTP))
        .iter()
        .enumerate()
    {
        expect(
            &prog,
            &format!("fragment {i}"),
            frag,
            XDP_PASS,
            delta!(pass_fragment),
        );
    }
    for (what, frame) in broken_headers(
        &request4(GEN_PORT, NTP, &payload),
        &request6(GEN_PORT, NTP, &payload),
        &tagged_request(),
    ) {
        expect(&prog, what, &frame, XDP_PASS, delta!(pass_truncated));
    }
    let c = prog.counters().unwrap();
    assert_eq!(
        (c.sunk, c.sunk_bytes, c.redirected, c.no_socket),
        (0, 0, 0, 0)
    );
}

#[test]
fn sink_port_is_configurable() {
    root_only!();
    let prog = load(ClientProgramKind::Sink, 4_123);
    let to_123 = request4(GEN_PORT, NTP, &ntp(3, 48));
    let to_4123 = request4(GEN_PORT, 4_123, &ntp(3, 48));
    expect(&prog, "to 123", &to_123, XDP_PASS, delta!(pass_other_port));
    let len = to_4123.len() as u64;
    expect(
        &prog,
        "to 4123",
        &to_4123,
        XDP_DROP,
        delta!(sunk, sunk_bytes = len),
    );
}

// ---------------------------------------------------------------------------
// Live, on a veth pair
// ---------------------------------------------------------------------------

#[test]
fn sink_attaches_detaches_and_runs_on_veth() {
    root_only!();
    let ns = Netns::new();
    ns.veth("bls0", "bls1");
    ns.enter(|| {
        let (sink_if, peer_if) = (ifindex("bls0"), ifindex("bls1"));

        let mut prog = load(ClientProgramKind::Sink, NTP);
        assert_eq!(
            prog.attach(sink_if, AttachMode::Auto).expect("attach"),
            XdpMode::Native
        );
        assert_eq!(prog.attached(), Some((sink_if, XdpMode::Native)));
        assert_eq!(ns.xdp_prog_id("bls0"), Some(prog.id()));
        let err = prog.attach(sink_if, AttachMode::Generic).unwrap_err();
        assert!(matches!(err, ProgramError::AttachedTwice { .. }), "{err}");
        // Someone else's program on the interface: busy.
        let mut other = load(ClientProgramKind::Redirect, NTP);
        let err = other.attach(sink_if, AttachMode::Native).unwrap_err();
        assert!(matches!(err, ProgramError::AlreadyAttached { .. }), "{err}");
        prog.detach().expect("detach");
        prog.detach().expect("detaching twice is fine");
        assert_eq!((prog.attached(), ns.xdp_prog_id("bls0")), (None, None));
        assert_eq!(
            prog.attach(sink_if, AttachMode::Generic).expect("attach"),
            XdpMode::Generic
        );
        assert_eq!(ns.xdp_prog_id("bls0"), Some(prog.id()));
        drop(prog);
        assert_eq!(ns.xdp_prog_id("bls0"), None, "dropping detaches");

        // `ntpx sink`: frames sent into the peer end are dropped and counted.
        ns.wait_up("bls0");
        ns.wait_up("bls1");
        let request = request4(GEN_PORT, NTP, &ntp(3, 48));
        let opts = SinkOptions {
            report_every: Duration::from_millis(100),
            ..SinkOptions::default()
        };
        let stop = AtomicBool::new(false);
        let (totals, printed) = std::thread::scope(|s| {
            let sink = s.spawn(|| {
                let mut out = Vec::new();
                (run_sink(sink_if, &opts, &stop, &mut out), out)
            });
            wait_for("the sink to attach", || ns.xdp_prog_id("bls0").is_some());
            let mut wire = Wire::open(peer_if);
            for _ in 0..25 {
                wire.send(&request);
            }
            for _ in 0..3 {
                wire.send(&request4(GEN_PORT, 53, &ntp(3, 48)));
            }
            std::thread::sleep(Duration::from_millis(350));
            stop.store(true, Ordering::Relaxed);
            sink.join().expect("sink thread")
        });
        let totals = totals.expect("run_sink");
        let bytes = 25 * request.len() as u64;
        assert_eq!(
            (totals.packets, totals.bytes, totals.mode),
            (25, bytes, XdpMode::Native)
        );
        assert_eq!(ns.xdp_prog_id("bls0"), None, "run_sink detaches");
        let printed = String::from_utf8(printed).expect("UTF-8 output");
        let lines: Vec<&str> = printed.lines().collect();
        let (last, rates) = lines.split_last().expect("output");
        assert!(!rates.is_empty(), "no rate line in {printed:?}");
        for line in rates {
            assert!(
                line.starts_with("sink: ") && line.contains(" pkt/s  (total "),
                "{line:?}"
            );
        }
        assert!(
            rates.last().is_some_and(|l| l.ends_with("(total 25)")),
            "{printed}"
        );
        assert!(
            last.starts_with(&format!("sink total: 25 packets, {bytes} bytes in "))
                && last.ends_with(" pkt/s)"),
            "{last:?}"
        );
        assert_eq!(*last, totals.to_string());

        // --duration ends the run by itself.
        let opts = SinkOptions {
            mode: AttachMode::Generic,
            duration: Some(Duration::from_millis(200)),
            ..SinkOptions::default()
        };
        let mut out = Vec::new();
        let t = run_sink(sink_if, &opts, &AtomicBool::new(false), &mut out).expect("run_sink");
        assert_eq!((t.packets, t.mode), (0, XdpMode::Generic));
        assert!(
            t.elapsed >= Duration::from_millis(200) && t.elapsed < Duration::from_secs(3),
            "{t:?}"
        );
        assert!(String::from_utf8_lossy(&out).starts_with("sink total: 0 packets, 0 bytes in "));
        assert_eq!(ns.xdp_prog_id("bls0"), None);
    });
}

#[test]
fn replies_reach_an_af_xdp_socket_over_veth() {
    root_only!();
    for mode in [XdpMode::Native, XdpMode::Generic] {
        let ns = Netns::new();
        ns.veth("blr0", "blr1");
        ns.enter(|| {
            let (gen_if, srv_if) = (ifindex("blr0"), ifindex("blr1"));
            let mut prog = load(ClientProgramKind::Redirect, NTP);
            let ask = match mode {
                XdpMode::Native => AttachMode::Native,
                XdpMode::Generic => AttachMode::Generic,
            };
            assert_eq!(prog.attach(gen_if, ask).expect("attach"), mode);
            let mut xsk = xsk(gen_if);
            // This kernel (6.18) lets copy mode send a whole batch (the
            // socket's 64-entry ring) per kick.
            assert_eq!(xsk.tx_budget(), 64, "{mode}");
            prog.register_socket(0, xsk.fd())
                .expect("register the socket");
            ns.wait_up("blr0");
            ns.wait_up("blr1");

            let mut wire = Wire::open(srv_if);
            let reply = reply4(NTP, GEN_PORT, &reply_payload());
            let before = tai_ns();
            wire.send(&reply4(NTP + 1, GEN_PORT, &reply_payload()));
            wire.send(&reply);
            let mut got = receive_batch(&mut xsk, Duration::from_secs(2));
            assert!(
                got.len() == 1,
                "{mode}: {} frames on the socket, not 1; {:?}",
                got.len(),
                prog.counters()
            );
            let (meta, frame) = got.remove(0);
            let after = tai_ns();
            assert_eq!(frame, reply, "{mode}");
            let meta = meta.unwrap_or_else(|| panic!("{mode}: no metadata"));
            assert!(
                (before..=after).contains(&meta.rx_sw_tai_ns),
                "{mode}: stamp {meta:?}"
            );
            assert!(
                receive_batch(&mut xsk, Duration::from_millis(200)).is_empty(),
                "{mode}: only the reply"
            );

            let c = prog.counters().expect("counters");
            assert_eq!(
                (c.redirected, c.pass_other_port, c.no_socket, c.meta_failed),
                (1, 1, 0, 0),
                "{mode}: {c:?}"
            );
            // Link-local chatter of a fresh link may add to `seen`.
            assert!(c.seen >= 2, "{mode}: {c:?}");
        });
    }
}
