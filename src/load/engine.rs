//! The generator's logic, apart from any I/O: which client sends next,
//! what its request says, and what each received frame means.
//!
//! A datapath (AF_XDP in `load::xsk_thread`, kernel sockets in `load::udp_thread`, or
//! a test's in-memory loop) asks [`Engine::next_request`] for frames,
//! stamps the batch with [`Engine::stamp_batch`] just before it leaves,
//! feeds every received frame to [`Engine::on_frame`] (or datagram to
//! [`Engine::on_datagram`]) with its receive time, and collects the
//! per-step [`Tally`]s from [`Engine::finish`].
//!
//! Two patterns: open loop (every request from a fresh random identity
//! out of the source prefix, paced by the caller) and ping (a fixed set of
//! clients, each with one request in flight, the next sent when the reply
//! arrives or the timeout passes).

#![forbid(unsafe_code)]

use super::check::{self, Expect, Invalid};
use super::spec::Prefix;
use super::tally::Tally;
use super::track::{Closed, Tracker, client_key};
use crate::proto::ntp::{self, NtpTimestamp};
use crate::proto::request::{RequestTemplate, Target, Xleave};
use std::collections::VecDeque;
use std::net::IpAddr;

/// Lowest source port used (above the well-known ports).
const PORT_MIN: u16 = 1024;

/// Most ping-mode clients per thread.
pub const MAX_PING_CLIENTS: usize = 1 << 20;

/// How one generator thread behaves.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where requests go.
    pub target: Target,
    /// Source addresses (one identity per request in open loop).
    pub sources: Prefix,
    /// Replies later than this are `late`.
    pub timeout_ns: u64,
    /// log2 of the outstanding-request table size (open loop).
    pub slot_bits: u32,
    /// This thread's index (goes into every nonce).
    pub thread: usize,
    /// Seed of the thread's random numbers.
    pub seed: u64,
    /// `Some(n)`: ping mode with `n` clients and this gap between a
    /// client's reply and its next request.
    pub ping: Option<(usize, u64)>,
    /// Accept replies whose UDP checksum the server's stack left partial
    /// (on a veth only; see `check::Expect`).
    pub accept_partial_checksum: bool,
    /// The target is a reflector: requests coming back are the answers
    /// (see `check::Expect::echo`); only round-trip times are measured.
    pub echo: bool,
    /// Ping mode: interleaved requests (RFC 9769); interleaved replies
    /// fill histograms of their own ([`Tally::xhists`]).
    pub xleave: bool,
}

/// What an answer to one of our requests carried.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// A server's reply: its receive and transmit times, its stratum (0:
    /// Kiss-o'-Death).
    Ntp {
        t2: NtpTimestamp,
        t3: NtpTimestamp,
        stratum: u8,
    },
    /// The request itself, back from a reflector.
    Echo,
}

/// The nonce with its lowest bit flipped: what interleaved requests carry
/// as their receive timestamp.
fn flipped(ts: NtpTimestamp) -> NtpTimestamp {
    NtpTimestamp::from_bits(ts.to_bits() ^ 1)
}

/// Ping mode's clients.
#[derive(Debug)]
struct Ping {
    addrs: Vec<IpAddr>,
    ports: Vec<u16>,
    /// Clients that may send at the given time, in time order.
    ready: VecDeque<(usize, u64)>,
    gap_ns: u64,
    next_expiry_scan: usize,
    /// Interleaved mode: each client's last exchange (empty otherwise).
    xl: Vec<LastExchange>,
}

/// A ping client's last answered exchange, for interleaved mode: its own
/// send and receive times and the server's receive timestamp, which the
/// next request echoes as its origin and whose precise transmit time an
/// interleaved reply brings.
#[derive(Clone, Copy, Debug, Default)]
struct LastExchange {
    t1_ns: u64,
    t4_ns: u64,
    t2: NtpTimestamp,
}

/// One thread's generator state; see the module docs.
#[derive(Debug)]
pub struct Engine {
    template: RequestTemplate,
    expect: Expect,
    sources: Prefix,
    timeout_ns: u64,
    tracker: Tracker,
    rng: fastrand::Rng,
    tallies: Vec<Tally>,
    step: u32,
    seq: u64,
    batch: Vec<usize>,
    ping: Option<Ping>,
}

impl Engine {
    /// A new engine. Ping mode caps the clients at [`MAX_PING_CLIENTS`].
    pub fn new(cfg: &EngineConfig) -> Engine {
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let ping = cfg.ping.map(|(n, gap_ns)| {
            let n = n.clamp(1, MAX_PING_CLIENTS);
            let hosts = cfg.sources.hosts();
            Ping {
                addrs: (0..n).map(|i| cfg.sources.host(i as u64 % hosts)).collect(),
                ports: (0..n).map(|_| rng.u16(PORT_MIN..)).collect(),
                ready: (0..n).map(|i| (i, 0)).collect(),
                gap_ns,
                next_expiry_scan: 0,
                xl: if cfg.xleave {
                    vec![LastExchange::default(); n]
                } else {
                    Vec::new()
                },
            }
        });
        let slot_bits = match &ping {
            Some(p) => (p.addrs.len() as f64).log2().ceil() as u32,
            None => cfg.slot_bits,
        };
        Engine {
            template: RequestTemplate::new(&cfg.target),
            expect: Expect {
                server: cfg.target.addr,
                port: cfg.target.port,
                version: cfg.target.version,
                accept_partial_checksum: cfg.accept_partial_checksum,
                echo: cfg.echo,
                xleave: cfg.xleave && cfg.ping.is_some(),
            },
            sources: cfg.sources,
            timeout_ns: cfg.timeout_ns,
            tracker: Tracker::new(slot_bits.max(1), cfg.thread, rng.u64(..)),
            rng,
            tallies: vec![Tally::default()],
            step: 0,
            seq: 0,
            batch: Vec::with_capacity(256),
            ping,
        }
    }

    /// Length of every request frame.
    pub fn frame_len(&self) -> usize {
        self.template.len()
    }

    /// Moves on to step `step`: requests sent from now on belong to it.
    pub fn set_step(&mut self, step: u32) {
        self.step = step;
        while self.tallies.len() <= step as usize {
            self.tallies.push(Tally::default());
        }
    }

    /// The current step.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Requests in flight.
    pub fn open(&self) -> usize {
        self.tracker.open()
    }

    /// The tally of the current step so far (for progress lines).
    pub fn current(&self) -> &Tally {
        &self.tallies[self.step as usize]
    }

    /// All steps' tallies so far.
    pub fn tallies(&self) -> &[Tally] {
        &self.tallies
    }

    /// Writes the next request into `buf` at `now_ns`; `None` if no client
    /// may send now (ping mode) or `buf` is too short.
    pub fn next_request(&mut self, buf: &mut [u8], now_ns: u64) -> Option<usize> {
        let (slot, addr, port) = match &mut self.ping {
            None => {
                let hosts = self.sources.hosts();
                let addr = self.sources.host(self.rng.u64(..hosts));
                (self.seq as usize, addr, self.rng.u16(PORT_MIN..))
            }
            Some(p) => match p.ready.front() {
                Some(&(c, at)) if at <= now_ns => {
                    p.ready.pop_front();
                    (c, p.addrs[c], p.ports[c])
                }
                _ => return None,
            },
        };
        if buf.len() < self.template.len() {
            return None;
        }
        let (slot, nonce) = self.open_request(slot, now_ns, addr, port);
        let xl = self.xleave_fields(slot, nonce);
        let n = self
            .template
            .write(buf, addr, port, nonce, self.seq as u16, xl)?;
        self.count_built(slot);
        Some(n)
    }

    /// Ping mode: the client whose request [`Engine::next_payload`] would
    /// build at `now_ns`, if one may send; always `None` in open loop.
    pub fn ping_ready(&self, now_ns: u64) -> Option<usize> {
        match self.ping.as_ref()?.ready.front() {
            Some(&(c, at)) if at <= now_ns => Some(c),
            _ => None,
        }
    }

    /// Writes the next request's NTP payload (48 bytes, no headers) into
    /// `buf` at `now_ns`, for a datapath whose kernel adds the headers and
    /// picks the source: `client` is the address and port the request
    /// will leave from (a reply must come back to it). Open loop: the
    /// request is the next of the paced stream. Ping mode: it is the
    /// request of client [`Engine::ping_ready`], which must be sent from
    /// that client's own `client` identity. `None` if no client may send
    /// now (ping mode), `buf` is shorter than 48 bytes, or `client` is
    /// not of the server's address family.
    pub fn next_payload(
        &mut self,
        buf: &mut [u8],
        now_ns: u64,
        client: (IpAddr, u16),
    ) -> Option<usize> {
        if buf.len() < ntp::HEADER_LEN || client.0.is_ipv4() != self.expect.server.is_ipv4() {
            return None;
        }
        let slot = match &mut self.ping {
            None => self.seq as usize,
            Some(p) => match p.ready.front() {
                Some(&(c, at)) if at <= now_ns => {
                    p.ready.pop_front();
                    c
                }
                _ => return None,
            },
        };
        let (slot, nonce) = self.open_request(slot, now_ns, client.0, client.1);
        let xl = self.xleave_fields(slot, nonce);
        let n = self.template.write_payload(buf, nonce, xl)?;
        self.count_built(slot);
        Some(n)
    }

    /// Opens `slot` in the tracker for a request from `addr`:`port` sent
    /// in the current step (counting an evicted request as lost); returns
    /// the slot index and the request's nonce.
    fn open_request(
        &mut self,
        slot: usize,
        now_ns: u64,
        addr: IpAddr,
        port: u16,
    ) -> (usize, NtpTimestamp) {
        let (nonce, evicted) =
            self.tracker
                .open_slot(slot, now_ns, self.step, client_key(addr, port));
        if let Some(c) = evicted {
            self.tallies[c.step as usize].lost += 1;
        }
        self.seq += 1;
        (slot & (self.tracker.capacity() - 1), nonce)
    }

    /// Interleaved mode: ping client `slot`'s origin (the server's last
    /// T2 to it) and the receive field an interleaved reply echoes.
    fn xleave_fields(&self, slot: usize, nonce: NtpTimestamp) -> Option<Xleave> {
        let last = self.ping.as_ref()?.xl.get(slot)?;
        Some(Xleave {
            origin: last.t2,
            receive: flipped(nonce),
        })
    }

    /// Counts a built request as sent and remembers its slot for
    /// [`Engine::stamp_batch`].
    fn count_built(&mut self, slot: usize) {
        self.tallies[self.step as usize].sent += 1;
        self.batch.push(slot);
    }

    /// Sets T1 of every request built since the last call to `t1_ns`.
    pub fn stamp_batch(&mut self, t1_ns: u64) {
        for &slot in &self.batch {
            self.tracker.restamp(slot, t1_ns);
        }
        self.batch.clear();
    }

    /// Takes back a request (frame or payload: the nonce is its last 8
    /// bytes) that was built but could not be sent.
    pub fn unsend(&mut self, frame: &[u8]) {
        let Some(nonce) = frame.len().checked_sub(8).map(|at| {
            let mut b = [0; 8];
            b.copy_from_slice(&frame[at..]);
            NtpTimestamp::from_bytes(b)
        }) else {
            return;
        };
        if let Some(c) = self.tracker.close(nonce) {
            self.tallies[c.step as usize].sent -= 1;
            self.batch.retain(|&s| s != c.slot);
            if let Some(p) = &mut self.ping {
                p.ready.push_front((c.slot, 0));
            }
        }
    }

    /// Handles a received frame (Ethernet and up), received at `t4_ns`.
    pub fn on_frame(&mut self, frame: &[u8], t4_ns: u64) {
        match check::parse_reply(frame, &self.expect) {
            Ok(r) => {
                if r.partial_checksum {
                    self.tallies[self.step as usize].partial_checksum += 1;
                }
                let key = client_key(r.client, r.client_port);
                let answer = if self.expect.echo {
                    Answer::Echo
                } else {
                    Answer::Ntp {
                        t2: r.receive,
                        t3: r.transmit,
                        stratum: r.stratum,
                    }
                };
                self.on_reply(r.origin, key, answer, t4_ns);
            }
            Err(rej) => self.on_rejected(rej.reason, rej.origin, t4_ns),
        }
    }

    /// Handles a UDP payload that the kernel received from `from` to our
    /// `to` (the kernel already checked the IP and UDP headers).
    pub fn on_datagram(
        &mut self,
        payload: &[u8],
        from: (IpAddr, u16),
        to: (IpAddr, u16),
        t4_ns: u64,
    ) {
        if from != (self.expect.server, self.expect.port) {
            return self.on_rejected(Invalid::WrongAddress, None, t4_ns);
        }
        let Some(p) = ntp::Packet::new_checked(payload) else {
            return self.on_rejected(Invalid::Short, None, t4_ns);
        };
        if self.expect.echo {
            return match check::check_echo(&p, &self.expect) {
                Ok(nonce) => self.on_reply(nonce, client_key(to.0, to.1), Answer::Echo, t4_ns),
                Err(why) => self.on_rejected(why, None, t4_ns),
            };
        }
        match check::check_ntp(&p, &self.expect) {
            Ok((t2, t3, stratum, _)) => self.on_reply(
                p.origin(),
                client_key(to.0, to.1),
                Answer::Ntp { t2, t3, stratum },
                t4_ns,
            ),
            Err(why) => self.on_rejected(why, Some(p.origin()), t4_ns),
        }
    }

    fn on_rejected(&mut self, why: Invalid, origin: Option<NtpTimestamp>, t4_ns: u64) {
        self.tallies[self.step as usize].reject(why);
        // The header made sense: if it echoes a request of ours, that
        // request was answered, wrongly.
        if let Some(c) = origin.and_then(|o| self.tracker.close(o)) {
            self.tallies[c.step as usize].invalid += 1;
            self.requeue(c, t4_ns);
        }
    }

    /// Closes the request `origin` answers and counts the answer.
    fn on_reply(&mut self, origin: NtpTimestamp, key: u64, answer: Answer, t4_ns: u64) {
        // An interleaved reply echoes the receive field: the nonce with its
        // lowest bit flipped.
        let xl = self.expect.xleave;
        let (c, interleaved) = match self.tracker.close(origin) {
            Some(c) => (c, false),
            None => match self.tracker.close(flipped(origin)).filter(|_| xl) {
                Some(c) => (c, true),
                None => return self.tallies[self.step as usize].reject(Invalid::UnknownOrigin),
            },
        };
        self.requeue(c, t4_ns);
        let t = &mut self.tallies[c.step as usize];
        if c.client != key {
            t.invalid += 1;
            return self.tallies[self.step as usize].reject(Invalid::WrongAddress);
        }
        match answer {
            Answer::Ntp { stratum: 0, .. } => t.kod += 1,
            _ if t4_ns.saturating_sub(c.sent_ns) > self.timeout_ns => t.late += 1,
            // A basic reply must not say it left before it arrived (the
            // check leaves that to us in interleaved mode).
            Answer::Ntp { t2, t3, .. } if xl && !interleaved && t2.is_after(t3) => {
                t.invalid += 1;
                self.tallies[self.step as usize].reject(Invalid::Timestamps);
            }
            Answer::Ntp { t2, t3, .. } => {
                let last = self
                    .ping
                    .as_mut()
                    .and_then(|p| p.xl.get_mut(c.slot))
                    .map(|l| {
                        let prev = *l;
                        *l = LastExchange {
                            t1_ns: c.sent_ns,
                            t4_ns,
                            t2,
                        };
                        prev
                    });
                match last {
                    // An interleaved reply to a client that had no previous
                    // exchange: nothing it could be the transmit time of.
                    Some(prev) if interleaved && prev.t2 == NtpTimestamp::ZERO => {
                        t.invalid += 1;
                    }
                    // T3 is when our previous reply left: the sample is the
                    // previous exchange's, with its T1, T2 and T4.
                    Some(prev) if interleaved => {
                        t.good += 1;
                        t.interleaved += 1;
                        let t2 = prev.t2.to_unix_nanos_near(prev.t1_ns) as i64;
                        let t3 = t3.to_unix_nanos_near(prev.t1_ns) as i64;
                        t.xhists.record(prev.t1_ns, t2, t3, prev.t4_ns);
                    }
                    _ => {
                        t.good += 1;
                        let t2 = t2.to_unix_nanos_near(c.sent_ns) as i64;
                        let t3 = t3.to_unix_nanos_near(c.sent_ns) as i64;
                        t.hists.record(c.sent_ns, t2, t3, t4_ns);
                    }
                }
            }
            // A request back from a reflector: a round trip and nothing
            // else to measure.
            Answer::Echo => {
                t.good += 1;
                t.hists.record_rtt(c.sent_ns, t4_ns);
            }
        }
    }

    /// Ping mode: the client whose request closed may send again.
    fn requeue(&mut self, c: Closed, now_ns: u64) {
        if let Some(p) = &mut self.ping {
            p.ready.push_back((c.slot, now_ns + p.gap_ns));
        }
    }

    /// Ping mode: gives up on up to `budget` clients' requests older than
    /// the timeout (counted lost; the clients send again). Call it often
    /// with a small budget; it walks the clients round robin.
    pub fn expire(&mut self, now_ns: u64, budget: usize) {
        let Some(p) = &mut self.ping else { return };
        let cutoff = now_ns.saturating_sub(self.timeout_ns);
        let n = p.addrs.len();
        for _ in 0..budget.min(n) {
            let c = p.next_expiry_scan;
            p.next_expiry_scan = (c + 1) % n;
            if let Some(closed) = self.tracker.expire_slot(c, cutoff) {
                self.tallies[closed.step as usize].lost += 1;
                p.ready.push_back((c, now_ns));
            }
        }
    }

    /// Ends the run: whatever is still open is lost.
    pub fn finish(mut self) -> Vec<Tally> {
        let tallies = &mut self.tallies;
        self.tracker
            .close_all(|c| tallies[c.step as usize].lost += 1);
        self.tallies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::spec::parse_prefix;
    use crate::proto::ntp::{Leap, ServerState};
    use crate::proto::respond::{Responder, respond};

    const BASE: u64 = 1_800_000_000_000_000_000;

    fn engine(ping: Option<(usize, u64)>) -> Engine {
        Engine::new(&engine_cfg(ping))
    }

    fn engine_cfg(ping: Option<(usize, u64)>) -> EngineConfig {
        EngineConfig {
            target: Target {
                src_mac: [2, 0, 0, 0, 0, 2],
                dst_mac: [2, 0, 0, 0, 0, 1],
                addr: "198.18.0.1".parse().unwrap(),
                port: 123,
                version: 4,
            },
            sources: parse_prefix("198.19.0.0/16").unwrap(),
            timeout_ns: 1_000_000,
            slot_bits: 12,
            thread: 1,
            seed: 7,
            ping,
            accept_partial_checksum: false,
            echo: false,
            xleave: false,
        }
    }

    /// The server the in-memory tests answer with (ntpx's responder).
    fn responder() -> Responder {
        Responder::new(
            [2, 0, 0, 0, 0, 1],
            vec!["198.18.0.1".parse().unwrap()],
            vec![],
        )
    }

    fn state() -> ServerState {
        ServerState {
            leap: Leap::None,
            stratum: 2,
            ref_id: *b"TEST",
            ..ServerState::unsynchronized(-20)
        }
    }

    /// Recomputes the UDP checksum of an edited IPv4 reply frame, so that
    /// the NTP checks (not the checksum) judge it.
    fn fix_udp_checksum(frame: &mut [u8]) {
        let pseudo = crate::proto::wire::checksum::pseudo_v4(
            frame[26..30].try_into().unwrap(),
            frame[30..34].try_into().unwrap(),
            56,
        );
        crate::proto::wire::udp::Udp::new_checked(&mut frame[34..])
            .unwrap()
            .fill_checksum(pseudo);
    }

    /// What the fake server does to the i-th request.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        Drop,
        CorruptOrigin,
        Late,
        Duplicate,
        BadMode,
        Kiss,
    }

    /// Runs `n` requests through ntpx's responder, 10 µs each way, with
    /// `fault` applied to every tenth.
    fn run(n: usize, fault: Fault) -> Tally {
        let mut e = engine(None);
        let cfg = responder();
        let state = state();
        let mut buf = [0u8; 128];
        for i in 0..n {
            let t1 = BASE + i as u64 * 1_000_000;
            let len = e.next_request(&mut buf, t1).unwrap();
            e.stamp_batch(t1);
            let t2 = NtpTimestamp::from_unix_nanos(t1 + 10_000);
            let t3 = NtpTimestamp::from_unix_nanos(t1 + 11_000);
            let r = respond(&mut buf[..len], &cfg, &state, t2, || t3, 0).unwrap();
            let ntp_at = r.len - 48;
            let this = if i % 10 == 9 { fault } else { Fault::None };
            let mut t4 = t1 + 21_000;
            match this {
                Fault::Drop => continue,
                Fault::CorruptOrigin => buf[ntp_at + 27] ^= 0x10,
                Fault::Late => t4 += 5_000_000,
                Fault::BadMode => buf[ntp_at] = (buf[ntp_at] & !7) | 5,
                Fault::Kiss => {
                    buf[ntp_at + 1] = 0;
                    buf[ntp_at + 12..ntp_at + 16].copy_from_slice(b"RATE");
                }
                Fault::None | Fault::Duplicate => {}
            }
            if this != Fault::None {
                // Keep the checksum right: the NTP check must catch it.
                fix_udp_checksum(&mut buf[..r.len]);
            }
            e.on_frame(&buf[..r.len], t4);
            if this == Fault::Duplicate {
                e.on_frame(&buf[..r.len], t4 + 1);
            }
        }
        let mut t = e.finish().remove(0);
        t.hists = Default::default();
        t
    }

    #[test]
    fn clean_server_all_good() {
        let t = run(100, Fault::None);
        assert_eq!(
            (t.sent, t.good, t.lost, t.rejected_total()),
            (100, 100, 0, 0)
        );
    }

    #[test]
    fn faults_are_counted_where_they_belong() {
        let t = run(100, Fault::Drop);
        assert_eq!(
            (t.sent, t.good, t.lost, t.rejected_total()),
            (100, 90, 10, 0)
        );
        let t = run(100, Fault::CorruptOrigin);
        assert_eq!(
            (t.good, t.lost, t.rejected_list()),
            (90, 10, vec![("unknown_origin", 10)])
        );
        let t = run(100, Fault::Late);
        assert_eq!((t.good, t.late, t.lost), (90, 10, 0));
        let t = run(100, Fault::Duplicate);
        assert_eq!(
            (t.good, t.lost, t.rejected_list()),
            (100, 0, vec![("unknown_origin", 10)])
        );
        let t = run(100, Fault::BadMode);
        assert_eq!(
            (t.good, t.invalid, t.lost, t.rejected_list()),
            (90, 10, 0, vec![("mode", 10)])
        );
        let t = run(100, Fault::Kiss);
        assert_eq!((t.good, t.kod, t.lost), (90, 10, 0));
    }

    /// What `ntpx sink --reflect` does to a frame: Ethernet addresses, IP
    /// addresses and UDP ports swapped, nothing else.
    fn reflect(frame: &mut [u8]) {
        let (a, b) = frame.split_at_mut(6);
        a.swap_with_slice(&mut b[..6]);
        // IPv4 without options behind a plain Ethernet header.
        let (a, b) = frame[26..].split_at_mut(4);
        a.swap_with_slice(&mut b[..4]);
        let (a, b) = frame[34..].split_at_mut(2);
        a.swap_with_slice(&mut b[..2]);
    }

    /// Against a reflector, a request that comes back is answered: good,
    /// with a round trip and no server times; one that comes back changed
    /// (a real reply, a mangled nonce) is not.
    #[test]
    fn reflected_requests_are_answers() {
        let mut e = Engine::new(&EngineConfig {
            echo: true,
            ..engine_cfg(None)
        });
        let mut buf = [0u8; 128];
        let len = e.next_request(&mut buf, BASE).unwrap();
        e.stamp_batch(BASE + 500);
        let mut back = buf;
        reflect(&mut back[..len]);
        e.on_frame(&back[..len], BASE + 20_500);
        // A real server's reply is not an echo: mode 4.
        let len2 = e.next_request(&mut buf, BASE + 1_000).unwrap();
        e.stamp_batch(BASE + 1_000);
        let r = respond(
            &mut buf[..len2],
            &responder(),
            &state(),
            NtpTimestamp::from_unix_nanos(BASE + 2_000),
            || NtpTimestamp::from_unix_nanos(BASE + 3_000),
            0,
        )
        .unwrap();
        e.on_frame(&buf[..r.len], BASE + 4_000);
        let t = e.finish().remove(0);
        assert_eq!((t.sent, t.good, t.lost, t.invalid), (2, 1, 1, 0));
        assert_eq!(t.rejected_list(), vec![("mode", 1)]);
        assert_eq!(t.hists.rtt.len(), 1);
        assert!(t.hists.rtt.equivalent(t.hists.rtt.max(), 20_000));
        assert!(t.hists.residence.is_empty() && t.hists.offset.is_empty());
    }

    #[test]
    fn good_replies_fill_histograms() {
        let mut e = engine(None);
        let mut buf = [0u8; 128];
        let cfg = responder();
        let state = state();
        let len = e.next_request(&mut buf, BASE).unwrap();
        e.stamp_batch(BASE + 500);
        let t2 = NtpTimestamp::from_unix_nanos(BASE + 10_500);
        let t3 = NtpTimestamp::from_unix_nanos(BASE + 12_500);
        let r = respond(&mut buf[..len], &cfg, &state, t2, || t3, 0).unwrap();
        e.on_frame(&buf[..r.len], BASE + 22_500);
        let t = e.finish().remove(0);
        assert_eq!(t.good, 1);
        // NTP fractions are 1/2^32 s: conversions may be off by a ns.
        // The responder fills the bits below its precision (2^-20 s here)
        // of T2 and T3: allow for that.
        let near = |h: &hdrhistogram::Histogram<u64>, want: u64| {
            h.equivalent(h.max(), want) || h.lowest_equivalent(h.max()).abs_diff(want) <= 954
        };
        assert!(near(&t.hists.rtt, 22_000), "{}", t.hists.rtt.max());
        assert!(
            near(&t.hists.residence, 2_000),
            "{}",
            t.hists.residence.max()
        );
        assert!(near(&t.hists.delay, 20_000), "{}", t.hists.delay.max());
        assert!(t.hists.offset.max() <= 954, "{}", t.hists.offset.max());
    }

    /// Interleaved mode against ntpx's responder and a store of transmit
    /// times (the server's table, in memory): the first two replies are
    /// basic, the rest interleaved. Legs of 10 µs each way; each reply
    /// really leaves 4 µs after the server read its basic T3. So basic
    /// samples are off by the 2 µs that reading T3 early costs, and the
    /// interleaved ones (the previous exchange, with the precise T3) by
    /// nothing.
    #[test]
    fn interleaved_replies_fill_their_own_histograms() {
        use crate::proto::ntp::{Marker, TxStore};
        use crate::proto::respond::respond_with;
        struct Store(std::collections::HashMap<u64, NtpTimestamp>);
        impl TxStore for Store {
            fn take(&mut self, t2: NtpTimestamp, _: u64) -> Option<NtpTimestamp> {
                self.0.remove(&t2.to_bits())
            }
        }
        let mut store = Store(Default::default());
        let mut e = Engine::new(&EngineConfig {
            xleave: true,
            ..engine_cfg(Some((1, 0)))
        });
        let mut cfg = responder();
        cfg.interleave = Some(Marker::new([1, 2], -20));
        let state = state();
        let mut buf = [0u8; 128];
        let ts = NtpTimestamp::from_unix_nanos;
        for i in 0..10u64 {
            let t1 = BASE + i * 1_000_000;
            let len = e.next_request(&mut buf, t1).unwrap();
            e.stamp_batch(t1);
            let (t2, t3, left) = (t1 + 10_000, t1 + 11_000, t1 + 15_000);
            let r = respond_with(
                &mut buf[..len],
                &cfg,
                &state,
                ts(t2),
                || ts(t3),
                0,
                &mut store,
            )
            .unwrap();
            assert_eq!(r.interleaved, i >= 2, "reply {i}");
            if let Some(ex) = r.record {
                store.0.insert(ex.t2.to_bits(), ts(left));
            }
            e.on_frame(&buf[..r.len], left + 10_000);
        }
        let t = e.finish().remove(0);
        assert_eq!((t.good, t.interleaved), (10, 8));
        let near = |h: &hdrhistogram::Histogram<u64>, want: u64| {
            h.lowest_equivalent(h.max()).abs_diff(want) <= 954
                && h.lowest_equivalent(h.min()).abs_diff(want) <= 954
        };
        assert!(near(&t.hists.offset, 2_000), "{}", t.hists.offset.max());
        assert_eq!(t.hists.offset.len(), 2);
        assert!(near(&t.xhists.offset, 0), "{}", t.xhists.offset.max());
        assert!(near(&t.xhists.delay, 20_000), "{}", t.xhists.delay.max());
        assert_eq!(t.xhists.offset.len(), 8);
    }

    #[test]
    fn reply_to_another_identity_is_invalid() {
        let mut e = engine(None);
        let mut buf = [0u8; 128];
        let cfg = responder();
        let state = state();
        let len = e.next_request(&mut buf, BASE).unwrap();
        e.stamp_batch(BASE);
        let ts = NtpTimestamp::from_unix_nanos(BASE + 1);
        let r = respond(&mut buf[..len], &cfg, &state, ts, || ts, 0).unwrap();
        // Send it to another port of ours, checksum fixed.
        buf[36] ^= 0x40;
        fix_udp_checksum(&mut buf[..r.len]);
        e.on_frame(&buf[..r.len], BASE + 2);
        let t = e.finish().remove(0);
        assert_eq!(
            (t.good, t.invalid, t.rejected_list()),
            (0, 1, vec![("wrong_address", 1)])
        );
    }

    #[test]
    fn unsent_requests_are_taken_back() {
        let mut e = engine(None);
        let mut buf = [0u8; 128];
        let len = e.next_request(&mut buf, BASE).unwrap();
        e.unsend(&buf[..len]);
        e.stamp_batch(BASE);
        assert_eq!(e.open(), 0);
        let t = e.finish().remove(0);
        assert_eq!((t.sent, t.lost), (0, 0));
    }

    #[test]
    fn ping_mode_one_in_flight_per_client() {
        let mut e = engine(Some((3, 1000)));
        let mut buf = [0u8; 128];
        let mut frames = vec![];
        while let Some(n) = e.next_request(&mut buf, BASE) {
            frames.push(buf[..n].to_vec());
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(e.open(), 3);
        // Nobody answers: after the timeout each is lost and may resend.
        e.expire(BASE + 500_000, 10);
        assert!(e.next_request(&mut buf, BASE + 500_000).is_none());
        e.expire(BASE + 2_000_001, 10);
        assert_eq!(e.open(), 0);
        assert!(e.next_request(&mut buf, BASE + 2_000_001).is_some());
        let t = e.finish().remove(0);
        assert_eq!((t.sent, t.lost), (4, 4));
    }
    /// What a kernel-socket server would send back for `payload`.
    fn socket_reply(payload: &[u8], t2_ns: u64, t3_ns: u64) -> [u8; 48] {
        let req = ntp::parse_request(payload).unwrap();
        let state = state();
        let mut out = [0u8; 48];
        ntp::write_reply(
            &mut out,
            &req,
            &state,
            &Default::default(),
            NtpTimestamp::from_unix_nanos(t2_ns),
            || NtpTimestamp::from_unix_nanos(t3_ns),
            0,
        )
        .unwrap();
        out
    }

    const SERVER: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1)), 123);
    const ME: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 2)), 40_000);

    #[test]
    fn payload_is_a_client_request_with_the_nonce() {
        let mut e = engine(None);
        let mut buf = [0u8; 64];
        let n = e.next_payload(&mut buf, BASE, ME).unwrap();
        assert_eq!(n, 48);
        let p = ntp::Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.mode(), ntp::Mode::Client);
        let req = ntp::parse_request(&buf[..n]).unwrap();
        assert_eq!(req.version, 4);
        // The nonce is the tracker's: it closes the open request.
        assert_eq!(e.open(), 1);
        let c = e.tracker.close(req.transmit).unwrap();
        assert_eq!(c.client, client_key(ME.0, ME.1));
        // Each request carries a fresh nonce.
        let mut other = [0u8; 48];
        e.next_payload(&mut other, BASE, ME).unwrap();
        assert_ne!(other[40..48], buf[40..48]);
        // Short buffers and the wrong family build nothing.
        assert!(e.next_payload(&mut buf[..47], BASE, ME).is_none());
        let v6 = ("2001:db8::2".parse().unwrap(), 1);
        assert!(e.next_payload(&mut buf, BASE, v6).is_none());
        assert_eq!(e.finish().remove(0).sent, 2);
    }

    #[test]
    fn datagram_reply_to_the_payload_is_good() {
        let mut e = engine(None);
        let mut buf = [0u8; 48];
        let n = e.next_payload(&mut buf, BASE, ME).unwrap();
        e.stamp_batch(BASE + 500);
        let reply = socket_reply(&buf[..n], BASE + 10_500, BASE + 12_500);
        e.on_datagram(&reply, SERVER, ME, BASE + 22_500);
        assert_eq!(e.open(), 0);
        let t = e.finish().remove(0);
        assert_eq!((t.sent, t.good, t.invalid, t.lost), (1, 1, 0, 0));
        assert!(t.rejected_list().is_empty());
        let rtt = t.hists.rtt.max();
        assert!(t.hists.rtt.equivalent(rtt, 22_000), "{rtt}");
    }

    #[test]
    fn datagram_reply_to_another_port_or_from_elsewhere() {
        let mut e = engine(None);
        let mut buf = [0u8; 48];
        // Answered, but to another of our ports: invalid, wrong_address.
        e.next_payload(&mut buf, BASE, ME).unwrap();
        e.stamp_batch(BASE);
        let reply = socket_reply(&buf, BASE + 1, BASE + 2);
        e.on_datagram(&reply, SERVER, (ME.0, ME.1 + 1), BASE + 3);
        assert_eq!(e.open(), 0);
        // From another port of the server: rejected, the request stays
        // open (and is lost at the end).
        e.next_payload(&mut buf, BASE, ME).unwrap();
        e.stamp_batch(BASE);
        let reply = socket_reply(&buf, BASE + 1, BASE + 2);
        e.on_datagram(&reply, (SERVER.0, 1123), ME, BASE + 3);
        assert_eq!(e.open(), 1);
        // Too short to be NTP.
        e.on_datagram(&reply[..40], SERVER, ME, BASE + 4);
        let t = e.finish().remove(0);
        assert_eq!(
            (t.sent, t.good, t.invalid, t.lost),
            (2, 0, 1, 1),
            "{:?}",
            t.rejected_list()
        );
        assert_eq!(t.rejected_list(), vec![("wrong_address", 2), ("short", 1)]);
    }

    #[test]
    fn ping_mode_payloads_follow_ready_clients() {
        let mut e = engine(Some((2, 1000)));
        let me = |c: usize| (ME.0, 50_000 + c as u16);
        let mut buf = [0u8; 48];
        let mut sent = vec![];
        while let Some(c) = e.ping_ready(BASE) {
            let n = e.next_payload(&mut buf, BASE, me(c)).unwrap();
            sent.push((c, buf[..n].to_vec()));
        }
        assert_eq!(sent.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!(e.next_payload(&mut buf, BASE, me(0)).is_none());
        e.stamp_batch(BASE);
        // Client 1's reply comes in; it may send again after the gap.
        let reply = socket_reply(&sent[1].1, BASE + 1, BASE + 2);
        e.on_datagram(&reply, SERVER, me(1), BASE + 10);
        assert_eq!(e.ping_ready(BASE + 10), None);
        assert_eq!(e.ping_ready(BASE + 1010), Some(1));
        // A payload that could not be sent puts its client back in front.
        let n = e.next_payload(&mut buf, BASE + 1010, me(1)).unwrap();
        e.unsend(&buf[..n]);
        assert_eq!(e.ping_ready(BASE + 1010), Some(1));
        let t = e.finish().remove(0);
        assert_eq!((t.sent, t.good, t.lost), (2, 1, 1));
    }
}
