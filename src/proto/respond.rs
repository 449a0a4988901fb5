//! The per-packet function: a request frame in, its reply out, in place.
//!
//! [`respond`] parses Ethernet (+ VLAN) / IPv4 or IPv6 / UDP / NTP, applies
//! every check that the kernel's receive path would have made for us (and
//! the ones a public NTP server must add), and rewrites the same buffer
//! into the reply: addressed back to the request's source MAC from the
//! interface's own, addresses swapped, fixed TTL / hop limit, DF, fresh IP
//! and UDP headers with checksums computed afresh, and the 48-byte NTP
//! reply. IPv4 options and NTP extension fields are not echoed: the reply
//! is never longer than the request.
//!
//! Pure code: no I/O, no clocks (the transmit time comes from a closure),
//! no `unsafe`, no allocation, no panics on any input.

#![forbid(unsafe_code)]

use crate::proto::drops::DropReason;
use crate::proto::ntp::interleave::{self, Marker, NoStore, TxStore};
use crate::proto::ntp::{self, NtpTimestamp, ReplyPolicy, ServerState, Stamping};
use crate::proto::wire::checksum;
use crate::proto::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use crate::proto::wire::ip::{
    IPV4_MIN_LEN, IPV6_HEADER_LEN, Ipv4, Ipv6, OptionsError, PROTO_UDP, check_options,
};
use crate::proto::wire::udp::{self, ChecksumState, Udp};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// IPv6's fragment header (next header 44).
const PROTO_FRAGMENT: u8 = 44;

/// TTL / hop limit of every reply.
pub const REPLY_TTL: u8 = 64;

/// Source ports of services that answer anything (echo, daytime, qotd,
/// chargen, time): a spoofed request "from" them starts a loop.
pub const LOOP_PORTS: [u16; 5] = [7, 13, 17, 19, 37];

/// The server as the responder sees it: who it is (port, MAC, addresses),
/// which sources can never be clients, and how it answers. Built once at
/// start from the config and the interface, shared by every worker.
#[derive(Clone, Debug)]
pub struct Responder {
    /// The NTP port (123).
    pub port: u16,
    /// The interface's MAC address: only frames addressed to it are
    /// answered, and replies are sent from it.
    pub mac: [u8; 6],
    /// The server's IPv4 addresses: only requests to these are answered.
    pub v4: Vec<Ipv4Addr>,
    /// The server's IPv6 addresses.
    pub v6: Vec<Ipv6Addr>,
    /// Addresses of this host that no client can have: the served ones
    /// and the other addresses of the interface (or, for the socket
    /// datapath, of every interface). A request from one is a loop.
    pub own_v4: Vec<Ipv4Addr>,
    /// IPv6 addresses of this host (see `own_v4`).
    pub own_v6: Vec<Ipv6Addr>,
    /// The network and broadcast addresses of this host's IPv4 prefixes
    /// (those of /30 and shorter: /31 and /32 have none). A request from
    /// one is a directed broadcast in disguise.
    pub subnet_edges: Vec<Ipv4Addr>,
    /// Drop requests from [`LOOP_PORTS`].
    pub drop_loop_ports: bool,
    /// Accept a UDP checksum field that holds only the pseudo-header sum
    /// (see [`Udp::checksum_is_partial`]). True only on a veth, whose peer
    /// hands over frames its own stack has not finished; never on a NIC,
    /// where it would let corruption through.
    pub accept_partial_checksum: bool,
    /// Reply knobs.
    pub policy: ReplyPolicy,
    /// Interleaved mode (RFC 9769): the mark every T2 carries, so that an
    /// interleaved client's next request is recognised ([`Marker`]); `None`:
    /// basic mode only.
    pub interleave: Option<Marker>,
}

impl Responder {
    /// A config for an interface with MAC `mac` serving the given
    /// addresses, with the defaults: port 123, loop ports dropped, full
    /// checksums required, the request's poll echoed. The own addresses
    /// are the served ones; add the interface's prefixes with
    /// [`Responder::add_local_prefixes`].
    pub fn new(mac: [u8; 6], v4: Vec<Ipv4Addr>, v6: Vec<Ipv6Addr>) -> Self {
        Responder {
            port: 123,
            mac,
            own_v4: v4.clone(),
            own_v6: v6.clone(),
            v4,
            v6,
            subnet_edges: Vec::new(),
            drop_loop_ports: true,
            accept_partial_checksum: false,
            policy: ReplyPolicy::default(),
            interleave: None,
        }
    }

    /// Adds this host's addresses with their prefixes: each becomes an
    /// own address, and each IPv4 prefix of /30 or shorter adds its
    /// network and broadcast addresses to the subnet edges.
    pub fn add_local_prefixes(&mut self, v4: &[Ipv4Net], v6: &[Ipv6Net]) {
        for net in v4 {
            push_new(&mut self.own_v4, net.addr());
            if net.prefix_len() <= 30 {
                push_new(&mut self.subnet_edges, net.network());
                push_new(&mut self.subnet_edges, net.broadcast());
            }
        }
        for net in v6 {
            push_new(&mut self.own_v6, net.addr());
        }
    }
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// A reply ready to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Length of the reply frame (the start of the buffer).
    pub len: usize,
    /// The transmit timestamp it carries.
    pub transmit: NtpTimestamp,
    /// The request's UDP checksum was in the partial form (accepted only
    /// with [`Responder::accept_partial_checksum`]; counted apart).
    pub partial_checksum: bool,
    /// The request came from an interleaved client (its origin carries our
    /// mark): the precise transmit time of this reply should be recorded
    /// for its next request, under this T2 and client.
    pub record: Option<Exchange>,
    /// The reply is interleaved: its T3 is the precise transmit time of
    /// our previous reply to this client.
    pub interleaved: bool,
}

/// A reply whose precise transmit time an interleaved client will ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The receive timestamp (T2) it carries, marked.
    pub t2: NtpTimestamp,
    /// The client's address, folded ([`interleave::fold`]).
    pub client: u64,
}

/// True if an IPv4 source can never be a legitimate client:
/// 0/8, 127/8, 224/4 (multicast), 240/4 (reserved, broadcast).
pub fn bad_source_v4(a: Ipv4Addr) -> bool {
    let o = a.octets()[0];
    o == 0 || o == 127 || o >= 224
}

/// True if an IPv6 source can never be a legitimate client: `::`, `::1`,
/// `ff00::/8`, and IPv4-mapped `::ffff:0:0/96` (never valid on the wire).
pub fn bad_source_v6(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some()
}

/// Checks a request's source port.
pub fn check_source_port(port: u16, drop_loop_ports: bool) -> Result<(), DropReason> {
    if port == 0 {
        Err(DropReason::SrcPortZero)
    } else if drop_loop_ports && LOOP_PORTS.contains(&port) {
        Err(DropReason::LoopPort)
    } else {
        Ok(())
    }
}

/// Checks a request's addresses (either family, as seen by the socket
/// datapath too): the destination must be ours; the source must not be a
/// martian, one of ours, or a subnet's network or broadcast address.
pub fn check_addresses(
    cfg: &Responder,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
) -> Result<(), DropReason> {
    use std::net::IpAddr::{V4, V6};
    match (src, dst) {
        (V4(s), V4(d)) => {
            if !cfg.v4.contains(&d) {
                Err(DropReason::NotOurAddress)
            } else if bad_source_v4(s) {
                Err(DropReason::BadSource)
            } else if cfg.own_v4.contains(&s) {
                Err(DropReason::OwnSource)
            } else if cfg.subnet_edges.contains(&s) {
                Err(DropReason::DirectedBroadcast)
            } else {
                Ok(())
            }
        }
        (V6(s), V6(d)) => {
            if !cfg.v6.contains(&d) {
                Err(DropReason::NotOurAddress)
            } else if bad_source_v6(s) {
                Err(DropReason::BadSource)
            } else if cfg.own_v6.contains(&s) {
                Err(DropReason::OwnSource)
            } else {
                Ok(())
            }
        }
        _ => Err(DropReason::BadIpHeader),
    }
}

/// Turns the request in `frame` into its reply, in place.
///
/// `rx` is the request's receive time (T2). `now` is called once, as late
/// as possible, for the transmit time (T3). `noise` gives random bits for
/// the timestamps' sub-precision bits. On `Ok`, `frame[..reply.len]` is the
/// reply; on `Err` the buffer may have been partly rewritten and must not
/// be sent.
pub fn respond(
    frame: &mut [u8],
    cfg: &Responder,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
) -> Result<Reply, DropReason> {
    respond_with(frame, cfg, state, rx, now, noise, &mut NoStore)
}

/// [`respond`], in interleaved mode where [`Responder::interleave`] is set:
/// T2 is marked, and a request from an interleaved client gets the precise
/// transmit time of our previous reply from `store` when it has one
/// (else a basic reply); [`Reply::record`] says when this reply's own
/// transmit time should be recorded.
pub fn respond_with(
    frame: &mut [u8],
    cfg: &Responder,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    store: &mut impl TxStore,
) -> Result<Reply, DropReason> {
    respond_any(frame, cfg, state, rx, now, noise, store, None)
}

/// [`respond`]'s checks, then a Kiss-o'-Death with `code` instead of the
/// time (the XDP program's policy asked for one: `crate::proto::policy`).
/// The clock is not read.
pub fn respond_kiss(
    frame: &mut [u8],
    cfg: &Responder,
    state: &ServerState,
    code: ntp::KissCode,
) -> Result<Reply, DropReason> {
    let never = || NtpTimestamp::ZERO;
    respond_any(
        frame,
        cfg,
        state,
        NtpTimestamp::ZERO,
        never,
        0,
        &mut NoStore,
        Some(code),
    )
}

#[allow(clippy::too_many_arguments)]
fn respond_any(
    frame: &mut [u8],
    cfg: &Responder,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    store: &mut impl TxStore,
    kiss: Option<ntp::KissCode>,
) -> Result<Reply, DropReason> {
    let eth = Frame::new_checked(&*frame).map_err(|_| DropReason::Truncated)?;
    if eth.dst_is_group() {
        return Err(DropReason::NonUnicast);
    }
    if eth.dst() != cfg.mac {
        return Err(DropReason::OtherHost);
    }
    if eth.src_is_not_a_station() {
        return Err(DropReason::BadSourceMac);
    }
    let l3 = eth.l3().map_err(|_| DropReason::Truncated)?;
    match l3.ethertype {
        ETHERTYPE_IPV4 => respond_v4(frame, l3.offset, cfg, state, rx, now, noise, store, kiss),
        ETHERTYPE_IPV6 => respond_v6(frame, l3.offset, cfg, state, rx, now, noise, store, kiss),
        _ => Err(DropReason::NotIp),
    }
}

/// A request that passed [`check_udp`].
struct Checked {
    client_port: u16,
    req: ntp::Request,
    partial_checksum: bool,
}

/// The checks on a UDP datagram (header + payload, exactly as long as its
/// IP header says) that both IP versions share. Returns the client's port,
/// the parsed request and whether its checksum was in the partial form.
fn check_udp(
    datagram: &[u8],
    cfg: &Responder,
    pseudo: u32,
    checksum_required: bool,
) -> Result<Checked, DropReason> {
    let u = Udp::new_checked(datagram).map_err(|_| DropReason::BadUdpLength)?;
    if usize::from(u.len_field()) != datagram.len() {
        return Err(DropReason::BadUdpLength);
    }
    if u.dst_port() != cfg.port {
        return Err(DropReason::OtherPort);
    }
    check_source_port(u.src_port(), cfg.drop_loop_ports)?;
    let partial_checksum = match u.checksum_state(pseudo, cfg.accept_partial_checksum) {
        ChecksumState::Absent if checksum_required => return Err(DropReason::BadUdpChecksum),
        ChecksumState::Wrong => return Err(DropReason::BadUdpChecksum),
        ChecksumState::Absent | ChecksumState::Full => false,
        ChecksumState::Partial => true,
    };
    let req = ntp::parse_request(&datagram[udp::HEADER_LEN..])?;
    Ok(Checked {
        client_port: u.src_port(),
        req,
        partial_checksum,
    })
}

/// The last check, after every check of the request (both datapaths):
/// with `drop_unsynchronized`, an unsynchronised server sends no reply.
pub fn check_synchronized(policy: &ReplyPolicy, state: &ServerState) -> Result<(), DropReason> {
    if policy.drop_unsynchronized && state.leap == ntp::Leap::Unsynchronized {
        Err(DropReason::Unsynchronized)
    } else {
        Ok(())
    }
}

/// Interleaved mode's part of the reply to `req` from `client` (folded):
/// T2's mark when [`Responder::interleave`] is set, and, for a request
/// that echoes one of our marked T2s (an interleaved client), the precise
/// transmit time of that earlier reply if `store` has it. The flag says
/// the request is such a one: the reply's own transmit time should be
/// recorded. Only those touch the store: basic clients echo T3, whose
/// flag bit is clear. Both datapaths' workers use it.
pub fn interleave_stamping(
    cfg: &Responder,
    req: &ntp::Request,
    client: u64,
    store: &mut impl TxStore,
) -> (Stamping, bool) {
    let Some(marker) = cfg.interleave else {
        return (Stamping::default(), false);
    };
    let candidate = req.may_be_interleaved() && marker.is_marked(req.origin, client);
    let stamping = Stamping {
        mark: Some((marker, client)),
        kiss: None,
        previous_tx: if candidate {
            store.take(req.origin, client)
        } else {
            None
        },
    };
    (stamping, candidate)
}

/// [`interleave_stamping`], or a Kiss-o'-Death with `kiss` (which marks
/// nothing and records nothing). Both datapaths' workers use it.
pub fn reply_stamping(
    cfg: &Responder,
    req: &ntp::Request,
    client: u64,
    store: &mut impl TxStore,
    kiss: Option<ntp::KissCode>,
) -> (Stamping, bool) {
    match kiss {
        Some(code) => (
            Stamping {
                kiss: Some(code),
                ..Stamping::default()
            },
            false,
        ),
        None => interleave_stamping(cfg, req, client, store),
    }
}

/// Length of a reply's UDP datagram: header and 48 bytes of NTP.
const REPLY_UDP_LEN: usize = udp::HEADER_LEN + ntp::HEADER_LEN;

#[allow(clippy::too_many_arguments)]
fn respond_v4(
    frame: &mut [u8],
    off: usize,
    cfg: &Responder,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    store: &mut impl TxStore,
    kiss: Option<ntp::KissCode>,
) -> Result<Reply, DropReason> {
    let ip = Ipv4::new_checked(&frame[off..]).map_err(|_| DropReason::Truncated)?;
    let ihl = ip.header_len();
    if ip.version() != 4 || ihl < IPV4_MIN_LEN {
        return Err(DropReason::BadIpHeader);
    }
    if !ip.checksum_ok() {
        return Err(DropReason::BadIpChecksum);
    }
    let total = usize::from(ip.total_len());
    if total < ihl + udp::HEADER_LEN || off + total > frame.len() {
        return Err(DropReason::BadIpLength);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    check_options(ip.options()).map_err(|e| match e {
        OptionsError::SourceRoute => DropReason::SourceRoute,
        OptionsError::Malformed => DropReason::BadIpOptions,
    })?;
    if ip.protocol() != PROTO_UDP {
        return Err(DropReason::NotUdp);
    }
    let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
    check_addresses(cfg, Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into())?;
    let datagram = &frame[off + ihl..off + total];
    let pseudo = checksum::pseudo_v4(src, dst, datagram.len() as u16);
    let checked = check_udp(datagram, cfg, pseudo, false)?;
    // A KoD gives no time: it goes out synchronised or not, as from the
    // XDP program and the socket datapath.
    if kiss.is_none() {
        check_synchronized(&cfg.policy, state)?;
    }
    let client = interleave::fold(Ipv4Addr::from(src).into());

    // The reply: a 20-byte IP header (request options dropped), then UDP
    // and NTP written fresh behind it. The request was at least
    // ihl + 8 + 48 >= 76 bytes long, so the reply fits in its buffer.
    let udp_at = off + IPV4_MIN_LEN;
    let end = udp_at + REPLY_UDP_LEN;
    let reply_frame = &mut frame[..end];
    Frame::new_checked(&mut *reply_frame)
        .map_err(|_| DropReason::Truncated)?
        .set_reply_addresses(cfg.mac);
    Ipv4::new_checked(&mut reply_frame[off..])
        .map_err(|_| DropReason::Truncated)?
        .emit_reply_header((IPV4_MIN_LEN + REPLY_UDP_LEN) as u16, REPLY_TTL, dst, src);
    let pseudo = checksum::pseudo_v4(dst, src, REPLY_UDP_LEN as u16);
    finish_udp(
        &mut reply_frame[udp_at..],
        cfg,
        &checked,
        state,
        rx,
        now,
        noise,
        pseudo,
        client,
        store,
        kiss,
    )
    .map(|written| Reply {
        len: end,
        partial_checksum: checked.partial_checksum,
        ..written
    })
}

#[allow(clippy::too_many_arguments)]
fn respond_v6(
    frame: &mut [u8],
    off: usize,
    cfg: &Responder,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    store: &mut impl TxStore,
    kiss: Option<ntp::KissCode>,
) -> Result<Reply, DropReason> {
    let ip = Ipv6::new_checked(&frame[off..]).map_err(|_| DropReason::Truncated)?;
    if ip.version() != 6 {
        return Err(DropReason::BadIpHeader);
    }
    let payload = usize::from(ip.payload_len());
    let udp_at = off + IPV6_HEADER_LEN;
    if udp_at + payload > frame.len() {
        return Err(DropReason::BadIpLength);
    }
    if ip.next_header() == PROTO_FRAGMENT {
        // The first fragment of a request (the XDP program passes the
        // others to the kernel): never answered, never reassembled.
        return Err(DropReason::Fragment);
    }
    if ip.next_header() != PROTO_UDP {
        return Err(DropReason::NotUdp);
    }
    let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
    check_addresses(cfg, Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into())?;
    let datagram = &frame[udp_at..udp_at + payload];
    let pseudo = checksum::pseudo_v6(src, dst, payload as u16);
    // A zero UDP checksum is invalid over IPv6 (RFC 8200 §8.1).
    let checked = check_udp(datagram, cfg, pseudo, true)?;
    // A KoD gives no time: it goes out synchronised or not, as from the
    // XDP program and the socket datapath.
    if kiss.is_none() {
        check_synchronized(&cfg.policy, state)?;
    }
    let client = interleave::fold(Ipv6Addr::from(src).into());

    let end = udp_at + REPLY_UDP_LEN;
    let reply_frame = &mut frame[..end];
    Frame::new_checked(&mut *reply_frame)
        .map_err(|_| DropReason::Truncated)?
        .set_reply_addresses(cfg.mac);
    Ipv6::new_checked(&mut reply_frame[off..udp_at])
        .map_err(|_| DropReason::Truncated)?
        .emit_reply_header(REPLY_UDP_LEN as u16, REPLY_TTL, dst, src);
    let pseudo = checksum::pseudo_v6(dst, src, REPLY_UDP_LEN as u16);
    finish_udp(
        &mut reply_frame[udp_at..],
        cfg,
        &checked,
        state,
        rx,
        now,
        noise,
        pseudo,
        client,
        store,
        kiss,
    )
    .map(|written| Reply {
        len: end,
        partial_checksum: checked.partial_checksum,
        ..written
    })
}

/// Writes the UDP header and NTP reply into `datagram` (exactly
/// [`REPLY_UDP_LEN`] bytes) and, after the transmit time is read, the UDP
/// checksum. Returns the reply's NTP side: transmit time, and what
/// interleaved mode made of it (`len` is left for the caller).
#[allow(clippy::too_many_arguments)]
fn finish_udp(
    datagram: &mut [u8],
    cfg: &Responder,
    checked: &Checked,
    state: &ServerState,
    rx: NtpTimestamp,
    now: impl FnOnce() -> NtpTimestamp,
    noise: u64,
    pseudo: u32,
    client: u64,
    store: &mut impl TxStore,
    kiss: Option<ntp::KissCode>,
) -> Result<Reply, DropReason> {
    let req = &checked.req;
    let (stamping, candidate) = reply_stamping(cfg, req, client, store, kiss);
    let mut u = Udp::new_checked(&mut *datagram).map_err(|_| DropReason::Truncated)?;
    u.emit_reply_header(cfg.port, checked.client_port, REPLY_UDP_LEN as u16);
    let payload = &mut datagram[udp::HEADER_LEN..];
    let (t2, t3) =
        ntp::write_reply_with(payload, req, state, &cfg.policy, rx, now, noise, stamping)
            .ok_or(DropReason::Truncated)?;
    Udp::new_checked(datagram)
        .map_err(|_| DropReason::Truncated)?
        .fill_checksum(pseudo);
    Ok(Reply {
        len: 0,
        transmit: t3,
        partial_checksum: false,
        record: candidate.then_some(Exchange { t2, client }),
        interleaved: stamping.previous_tx.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_edges_come_from_prefixes_of_30_and_shorter() {
        let mut cfg = Responder::new(
            [2, 0, 0, 0, 0, 1],
            vec!["192.0.2.1".parse().unwrap()],
            vec![],
        );
        cfg.add_local_prefixes(
            &[
                "192.0.2.1/24".parse().unwrap(),
                "198.51.100.9/30".parse().unwrap(),
                "203.0.113.0/31".parse().unwrap(),
                "203.0.113.7/32".parse().unwrap(),
                "192.0.2.1/24".parse().unwrap(), // listed twice
            ],
            &["2001:db8::5/64".parse().unwrap()],
        );
        let edges: Vec<String> = cfg.subnet_edges.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            edges,
            ["192.0.2.0", "192.0.2.255", "198.51.100.8", "198.51.100.11"]
        );
        assert_eq!(cfg.own_v4.len(), 4);
        assert_eq!(cfg.own_v6, vec!["2001:db8::5".parse::<Ipv6Addr>().unwrap()]);
        // Both addresses of a /31 are hosts (RFC 3021).
        let check =
            |s: &str| check_addresses(&cfg, s.parse().unwrap(), "192.0.2.1".parse().unwrap());
        assert_eq!(check("203.0.113.1"), Ok(()));
        assert_eq!(check("192.0.2.255"), Err(DropReason::DirectedBroadcast));
        assert_eq!(check("198.51.100.11"), Err(DropReason::DirectedBroadcast));
        assert_eq!(check("203.0.113.7"), Err(DropReason::OwnSource));
    }
}
