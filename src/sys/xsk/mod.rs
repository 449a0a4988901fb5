//! One AF_XDP socket with its UMEM and four rings, bound to one NIC queue.
//!
//! Built on the `xdp` crate (pure Rust, no libxdp). What it does not
//! offer is written here: reading the XDP program's metadata in front of
//! a received frame, the bare TX kick (`sendto`), the zero-copy query
//! (`XDP_OPTIONS`), busy-poll socket options, and the EBUSY retry on bind.
//!
//! Frames cycle without copies: fill ring → (kernel) → RX ring → worker
//! rewrites the frame in place → TX ring → (kernel) → completion ring →
//! free list → fill ring. The frames never leave the [`XskQueue`] that
//! owns their UMEM: callers see them only on loan ([`XskFrame`]), so the
//! `xdp` crate's contracts (a frame must not outlive its UMEM, and goes
//! back only to the UMEM it came from) hold by construction.

pub mod meta;

use super::BATCH;
use meta::{META_LEN, Meta};
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};
use xdp::slab::HeapSlab;
use xdp::slab::Slab as _;
use xdp::socket::{XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{
    CompletionRing, Packet, RingConfigBuilder, RxRing, Umem, WakableFillRing, WakableTxRing,
};

/// Copy or zero-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindMode {
    /// Zero-copy where the driver supports it, else copy (the kernel picks).
    Auto,
    /// Force copy mode.
    Copy,
    /// Force zero-copy (fails where unsupported).
    Zerocopy,
}

/// Parses an AF_XDP bind mode (`auto`, `copy`, `zerocopy`), for the CLIs.
pub fn parse_bind_mode(s: &str) -> Result<BindMode, String> {
    match s {
        "auto" => Ok(BindMode::Auto),
        "copy" => Ok(BindMode::Copy),
        "zerocopy" => Ok(BindMode::Zerocopy),
        _ => Err(format!("expected auto, copy or zerocopy, not {s:?}")),
    }
}

/// Sizes and options of one queue's socket.
#[derive(Clone, Copy, Debug)]
pub struct QueueOptions {
    /// UMEM frames (2 KiB each).
    pub frames: u32,
    /// Entries in each ring (power of two).
    pub ring_size: u32,
    /// Copy / zero-copy.
    pub bind_mode: BindMode,
    /// Busy-poll budget (SO_PREFER_BUSY_POLL + SO_BUSY_POLL_BUDGET), 0 = off.
    pub busy_poll_budget: u32,
    /// Register the UMEM with room for TX metadata, so that replies can ask
    /// for a completion timestamp ([`XskFrame::request_tx_stamp`]). Kernels
    /// before 6.11 refuse it: the queue then opens without.
    pub tx_timestamps: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            frames: 4096,
            ring_size: 2048,
            bind_mode: BindMode::Auto,
            busy_poll_budget: 0,
            tx_timestamps: false,
        }
    }
}

/// Errors opening a queue's socket.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Setting up UMEM or rings failed.
    #[error("AF_XDP setup for queue {queue} failed: {what}")]
    Setup {
        /// The queue.
        queue: u32,
        /// What failed.
        what: String,
    },
    /// bind() failed.
    #[error("cannot bind an AF_XDP socket to queue {queue}: {source}{hint}")]
    Bind {
        /// The queue.
        queue: u32,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// UMEM headroom in front of each received frame: room for the XDP
/// program's metadata (and what later metadata may need).
const HEADROOM: u32 = 64;
const _: () = assert!(META_LEN as u32 <= HEADROOM);
/// Frames a zero-copy refill offers beyond the tracked room (see
/// [`XskQueue::recycle_keeping`]).
const FILL_CHUNK: usize = 64;
/// Shortest frame put on the TX ring (an Ethernet header): the kernel
/// rejects shorter descriptors without a completion.
const MIN_TX_LEN: usize = 14;
/// Descriptors the kernel sends per kick in copy mode by default (its
/// `max_tx_budget`), where `XDP_MAX_TX_SKB_BUDGET` cannot raise it.
const COPY_TX_BUDGET: usize = 32;
/// What copy mode's per-kick budget is raised to where the kernel allows
/// (6.17+): one batch, so one kick sends a whole batch of replies.
const WANT_TX_BUDGET: usize = BATCH;
/// Extra kicks before replies that find the TX ring full are dropped.
const TX_RETRIES: usize = 4;
/// Completions read back per round when tagged frames are outstanding.
const COMPLETION_CHUNK: usize = 64;
/// Transmit stamps kept between two [`XskQueue::recycle_with`] calls.
pub const STAMPS_HELD: usize = 1024;

/// The TX metadata area in front of a frame as the `xdp` crate registers
/// it (`tx_metadata_len` = 16: `flags`, then the completion timestamp; the
/// kernel's 6.15+ `launch_time` lies beyond and is never requested).
const TX_META_LEN: usize = 16;
/// Our tag in front of that: magic, 4 bytes unused, T2, T3 (24 bytes). Inside the UMEM
/// headroom, which the kernel never writes on transmit.
const TAG_LEN: usize = 24;
const TAG_MAGIC: u32 = 0x5854_4147;
const _: () = assert!((TX_META_LEN + TAG_LEN) as u32 <= HEADROOM);

/// What a reply that asked for its transmit time carries until its
/// completion: its receive and transmit fields, which name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxTag {
    /// The reply's receive timestamp (raw NTP bits).
    pub t2: u64,
    /// The reply's own transmit field (raw NTP bits).
    pub t3: u64,
}

/// The four rings of a bound socket.
struct Rings {
    fill: WakableFillRing,
    rx: RxRing,
    completion: CompletionRing,
    tx: WakableTxRing,
}

/// An open, bound AF_XDP socket, its rings and its UMEM.
///
/// UMEM frames never leave it: received frames are lent to a callback
/// ([`XskQueue::reply`], [`XskQueue::consume`]) as an [`XskFrame`] that
/// borrows the queue, and outgoing ones are built in place
/// ([`XskQueue::build`]). No caller can hold a frame past the queue's
/// life, nor hand it a frame of another UMEM.
pub struct XskQueue {
    queue: u32,
    // The crate's contract: the UMEM outlives the socket and its rings
    // (they point into it). `Drop` below drops them in that order; the
    // field order does not matter.
    rings: ManuallyDrop<Rings>,
    socket: ManuallyDrop<XdpSocket>,
    umem: ManuallyDrop<Umem>,
    /// Frames taken off the RX ring, not yet handed back (at most BATCH).
    rx_slab: HeapSlab,
    /// Frames bound for the TX ring (at most BATCH).
    tx_slab: HeapSlab,
    zerocopy: bool,
    /// Descriptors one kick sends in copy mode.
    tx_budget: usize,
    ring_size: u32,
    /// Descriptors on the TX ring not yet seen on the completion ring.
    tx_outstanding: u32,
    /// The UMEM has TX metadata room (see [`QueueOptions::tx_timestamps`]).
    tx_metadata: bool,
    /// Tagged frames on the TX ring not yet seen on the completion ring
    /// (an upper bound: while 0, completions are reaped without looking).
    tagged_outstanding: u32,
    /// Frames read back from completions while their tags are read.
    compl_slab: HeapSlab,
    /// Tags and stamps read, not yet handed to `recycle_with`'s callback
    /// (capacity [`STAMPS_HELD`], allocated at open).
    stamps: Vec<(TxTag, u64)>,
    /// Frames given to the fill ring and not yet back on the RX ring: on
    /// the fill ring, or held by the kernel to receive into. The fill ring
    /// has at least `ring_size - in_kernel` free slots (see
    /// [`XskQueue::recycle_keeping`]).
    in_kernel: u32,
}

// SAFETY: the frames in `rx_slab` and `tx_slab` (raw pointers, hence not
// `Send`) point into the UMEM owned by the same XskQueue and are reached
// only through `&mut self`; moving the whole queue to another thread moves
// the UMEM, the rings and the frames together. The other fields are `Send`.
unsafe impl Send for XskQueue {}

impl Drop for XskQueue {
    fn drop(&mut self) {
        // Frames in the slabs are plain pointers without `Drop`; they go
        // with the UMEM.
        // SAFETY: each field is dropped exactly once, here, and never used
        // again: rings and socket first, the UMEM they point into last.
        unsafe {
            ManuallyDrop::drop(&mut self.rings);
            ManuallyDrop::drop(&mut self.socket);
            ManuallyDrop::drop(&mut self.umem);
        }
    }
}

impl std::fmt::Debug for XskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskQueue")
            .field("queue", &self.queue)
            .field("zerocopy", &self.zerocopy)
            .finish()
    }
}

fn setup_err(queue: u32, what: impl std::fmt::Display) -> QueueError {
    QueueError::Setup {
        queue,
        what: what.to_string(),
    }
}

/// What a frame lent to [`XskQueue::reply`]'s callback is to become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it back out on the TX ring, as it now is.
    Transmit,
    /// Return it to the free list.
    Release,
}

/// How a batch went in [`XskQueue::reply`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replied {
    /// Frames the callback saw.
    pub seen: usize,
    /// Frames put on the TX ring.
    pub sent: usize,
    /// Frames to transmit that the TX ring had no room for (freed).
    pub tx_full: usize,
    /// Frames to transmit that were shorter than an Ethernet header
    /// (freed: the kernel would reject them and never complete them).
    pub too_short: usize,
}

/// A UMEM frame on loan for one callback: its bytes can be read and
/// rewritten in place, its length changed within the frame, and the XDP
/// program's metadata in front of it taken. The frame itself stays with
/// its queue.
pub struct XskFrame<'a> {
    packet: &'a mut Packet,
    /// Set by [`XskFrame::request_tx_stamp`].
    tagged: bool,
}

impl std::fmt::Debug for XskFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskFrame")
            .field("len", &self.packet.len())
            .finish()
    }
}

impl XskFrame<'_> {
    /// The frame (Ethernet header first).
    pub fn bytes(&self) -> &[u8] {
        &self.packet[..]
    }

    /// The frame, to rewrite in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.packet[..]
    }

    /// The frame's length.
    pub fn len(&self) -> usize {
        self.packet.len()
    }

    /// True for an empty frame.
    pub fn is_empty(&self) -> bool {
        self.packet.is_empty()
    }

    /// Makes the frame `len` bytes long: shorter, or longer into the free
    /// room of its UMEM frame (the new bytes are whatever the frame held).
    /// False, and unchanged, if that does not fit.
    pub fn set_len(&mut self, len: usize) -> bool {
        let Ok(diff) = i32::try_from(len as i64 - self.packet.len() as i64) else {
            return false;
        };
        self.packet.adjust_tail(diff).is_ok()
    }

    /// Asks the kernel for this frame's transmit time, reported with
    /// `tag` by [`XskQueue::recycle_with`] when the frame completes. False
    /// (nothing asked) if the queue was opened without TX metadata.
    pub fn request_tx_stamp(&mut self, tag: TxTag) -> bool {
        if self
            .packet
            .set_tx_metadata(xdp::packet::CsumOffload::None, true)
            .is_err()
        {
            return false;
        }
        let mut b = [0u8; TAG_LEN];
        b[0..4].copy_from_slice(&TAG_MAGIC.to_ne_bytes());
        b[8..16].copy_from_slice(&tag.t2.to_ne_bytes());
        b[16..24].copy_from_slice(&tag.t3.to_ne_bytes());
        self.tagged = write_before(self.packet, TX_META_LEN + TAG_LEN, &b);
        self.tagged
    }

    /// Reads and consumes the XDP program's metadata in front of the
    /// frame. The magic is cleared so that a recycled frame cannot show a
    /// stale stamp if the program ever fails to write one.
    pub fn take_meta(&mut self) -> Option<Meta> {
        let n = META_LEN as i32;
        self.packet.adjust_head(-n).ok()?;
        let meta = Meta::parse(&self.packet[..META_LEN]);
        if meta.is_some() {
            Meta::clear(&mut self.packet[..META_LEN]);
        }
        // Cannot fail: we just moved the head down by n.
        let _ = self.packet.adjust_head(n);
        meta
    }
}

/// Writes `b` at `back` bytes in front of the packet's data (inside its
/// headroom); false if there is not that much room.
fn write_before(packet: &mut Packet, back: usize, b: &[u8]) -> bool {
    let n = back as i32;
    if packet.adjust_head(-n).is_err() {
        return false;
    }
    packet[..b.len()].copy_from_slice(b);
    // Cannot fail: we just moved the head down by n.
    let _ = packet.adjust_head(n);
    true
}

/// The tag and completion timestamp in front of a completed frame, if it
/// was tagged; the tag is cleared so that the frame, reused, cannot show
/// it again.
fn take_tag(packet: &mut Packet) -> Option<(TxTag, u64)> {
    let n = (TX_META_LEN + TAG_LEN) as i32;
    packet.adjust_head(-n).ok()?;
    let b = &mut packet[..TAG_LEN + TX_META_LEN];
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |b: &[u8], i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let got = (u32_at(b, 0) == TAG_MAGIC).then(|| {
        let tag = TxTag {
            t2: u64_at(b, 8),
            t3: u64_at(b, 16),
        };
        // flags (8 bytes), then the kernel's completion timestamp.
        (tag, u64_at(b, TAG_LEN + 8))
    });
    if got.is_some() {
        b[0..4].fill(0);
    }
    let _ = packet.adjust_head(n);
    got
}

/// Clears a tag a frame will never complete with (it was not sent).
fn drop_tag(packet: &mut Packet) {
    let _ = write_before(packet, TX_META_LEN + TAG_LEN, &[0u8; 4]);
}

impl XskQueue {
    /// Creates the UMEM and rings and binds to `ifindex` / `queue`,
    /// retrying EBUSY for up to a second (a queue whose previous socket
    /// just closed stays busy for ~100 ms).
    pub fn open(ifindex: u32, queue: u32, opts: &QueueOptions) -> Result<Self, QueueError> {
        match Self::open_once(ifindex, queue, opts) {
            Err(QueueError::Setup { what, .. }) if opts.tx_timestamps => {
                tracing::warn!(queue, %what, "AF_XDP without TX metadata (kernel before 6.11?): no transmit timestamps");
                let opts = QueueOptions {
                    tx_timestamps: false,
                    ..*opts
                };
                Self::open_once(ifindex, queue, &opts)
            }
            r => r,
        }
    }

    fn open_once(ifindex: u32, queue: u32, opts: &QueueOptions) -> Result<Self, QueueError> {
        let umem_cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            head_room: HEADROOM,
            frame_count: opts.frames,
            tx_timestamp: opts.tx_timestamps,
            ..Default::default()
        }
        .build()
        .map_err(|e| setup_err(queue, e))?;
        let mut umem =
            Umem::map(umem_cfg).map_err(|e| setup_err(queue, format!("mapping UMEM: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let mut builder = XdpSocketBuilder::new().map_err(|e| setup_err(queue, e))?;
            let ring_cfg = RingConfigBuilder {
                rx_count: opts.ring_size,
                tx_count: opts.ring_size,
                fill_count: opts.ring_size,
                completion_count: opts.ring_size,
            }
            .build()
            .map_err(|e| setup_err(queue, e))?;
            let (rings, mut flags) = builder
                .build_wakable_rings(&umem, ring_cfg)
                .map_err(|e| setup_err(queue, e))?;
            match opts.bind_mode {
                BindMode::Auto => {}
                BindMode::Copy => flags.force_copy(),
                BindMode::Zerocopy => flags.force_zerocopy(),
            }
            let bound = builder.bind(xdp::nic::NicIndex::new(ifindex), queue, flags);
            match bound {
                Ok(socket) => {
                    let (Some(rx), Some(tx)) = (rings.rx_ring, rings.tx_ring) else {
                        return Err(setup_err(queue, "rings missing"));
                    };
                    let mut fill = rings.fill_ring;
                    // Hand the kernel half the frames to receive into; the
                    // rest cover frames in flight on the TX side.
                    let initial = (opts.frames / 2).min(opts.ring_size) as usize;
                    // SAFETY: the UMEM goes into the same XskQueue as the
                    // rings and socket, whose Drop drops it last.
                    let filled = unsafe { fill.enqueue(&mut umem, initial, false) }
                        .map_err(|e| setup_err(queue, format!("filling the fill ring: {e}")))?;
                    let zerocopy = sys::is_zerocopy(socket.raw_fd()).unwrap_or(false);
                    // Older kernels refuse the option (ENOPROTOOPT): keep
                    // their budget and kick more often.
                    let want = WANT_TX_BUDGET.min(opts.ring_size as usize);
                    let tx_budget = if !zerocopy
                        && want > COPY_TX_BUDGET
                        && sys::set_max_tx_budget(socket.raw_fd(), want as u32).is_ok()
                    {
                        want
                    } else {
                        COPY_TX_BUDGET
                    };
                    if opts.busy_poll_budget > 0 {
                        sys::enable_busy_poll(socket.raw_fd(), opts.busy_poll_budget)
                            .map_err(|e| setup_err(queue, format!("busy poll: {e}")))?;
                    }
                    return Ok(XskQueue {
                        queue,
                        rings: ManuallyDrop::new(Rings {
                            fill,
                            rx,
                            completion: rings.completion_ring,
                            tx,
                        }),
                        socket: ManuallyDrop::new(socket),
                        umem: ManuallyDrop::new(umem),
                        rx_slab: HeapSlab::with_capacity(BATCH),
                        tx_slab: HeapSlab::with_capacity(BATCH),
                        zerocopy,
                        tx_budget,
                        ring_size: opts.ring_size,
                        tx_outstanding: 0,
                        tx_metadata: opts.tx_timestamps,
                        tagged_outstanding: 0,
                        compl_slab: HeapSlab::with_capacity(COMPLETION_CHUNK),
                        stamps: Vec::with_capacity(STAMPS_HELD),
                        in_kernel: filled as u32,
                    });
                }
                Err(xdp::socket::SocketError::Bind(e)) => {
                    if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    let hint = match e.raw_os_error() {
                        Some(libc::EBUSY) => " (another AF_XDP socket holds this queue)",
                        Some(libc::EPERM) => " (needs root or CAP_NET_RAW + CAP_NET_ADMIN)",
                        Some(libc::EINVAL) => {
                            " (no such queue on this interface? see `ethtool -l IF`)"
                        }
                        Some(libc::EOPNOTSUPP) => {
                            " (the driver does not support zero-copy: use --bind-mode copy)"
                        }
                        _ => "",
                    };
                    return Err(QueueError::Bind {
                        queue,
                        source: e,
                        hint,
                    });
                }
                Err(e) => return Err(setup_err(queue, e)),
            }
        }
    }

    /// The socket's fd, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.socket.raw_fd()
    }

    /// The NIC queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// True if bound in zero-copy mode.
    pub fn is_zerocopy(&self) -> bool {
        self.zerocopy
    }

    /// Descriptors one kick hands to the kernel in copy mode: a batch
    /// where the kernel lets it be raised (`XDP_MAX_TX_SKB_BUDGET`), else
    /// its default of 32.
    pub fn tx_budget(&self) -> usize {
        self.tx_budget
    }

    /// Moves finished TX frames back to the free list, then gives free
    /// frames to the fill ring.
    pub fn recycle(&mut self) {
        self.recycle_keeping(0);
    }

    /// True if replies can carry a transmit-time request
    /// ([`XskFrame::request_tx_stamp`]) whose stamp is the kernel's
    /// `CLOCK_TAI` (copy mode: a software stamp taken when the kernel frees
    /// the frame after handing it to the driver). In zero-copy mode the
    /// stamp is the NIC's clock, which needs a PHC mapping: not offered.
    pub fn tx_stamps_usable(&self) -> bool {
        self.tx_metadata && !self.zerocopy
    }

    /// [`Self::recycle`], showing each completed tagged frame's tag and
    /// kernel transmit timestamp (`CLOCK_TAI` ns in copy mode; 0: none) to
    /// `stamped`: those reaped now, and those reaped since the last call
    /// (while replies were sent).
    pub fn recycle_with(&mut self, mut stamped: impl FnMut(TxTag, u64)) {
        self.recycle_keeping(0);
        for (tag, ts) in self.stamps.drain(..) {
            stamped(tag, ts);
        }
    }

    /// Reaps completions while tagged frames are out, keeping their tags
    /// and stamps for [`Self::recycle_with`] (up to [`STAMPS_HELD`]; more
    /// are lost: those clients get a basic reply). The `xdp` crate returns
    /// completed frames to its free list without saying which they were,
    /// but it keeps that list last-in first-out: the frames just reaped are
    /// the next ones allocated. So each chunk is reaped, then allocated
    /// back (their bytes, and the tag and kernel timestamp in front of
    /// them, still in place), read and freed. Should that order ever
    /// change, the tags read are other frames' (cleared ones: nothing is
    /// reported) or stale ones whose T2 no longer matches the table:
    /// replies fall back to basic mode, never to a wrong time.
    fn reap_tagged(&mut self) {
        while self.tagged_outstanding > 0 && self.tx_outstanding > 0 {
            let want = (self.tx_outstanding as usize).min(COMPLETION_CHUNK);
            let done = self.rings.completion.dequeue(&mut self.umem, want);
            self.tx_outstanding -= done as u32;
            for _ in 0..done {
                // SAFETY: the frame goes into `compl_slab`, owned by this
                // queue, and back to the UMEM just below.
                let Some(p) = (unsafe { self.umem.alloc() }) else {
                    break;
                };
                if let Some(p) = self.compl_slab.push_front(p) {
                    self.umem.free_packet(p);
                    break;
                }
            }
            while let Some(mut p) = self.compl_slab.pop_back() {
                if let Some(stamp) = take_tag(&mut p) {
                    self.tagged_outstanding = self.tagged_outstanding.saturating_sub(1);
                    if self.stamps.len() < STAMPS_HELD {
                        self.stamps.push(stamp);
                    }
                }
                self.umem.free_packet(p);
            }
            if done < want {
                break;
            }
        }
        if self.tx_outstanding == 0 {
            self.tagged_outstanding = 0;
        }
    }

    /// Like [`Self::recycle`], but keeps `keep` free frames out of the fill
    /// ring for [`Self::build`] (a sender that builds its own frames).
    ///
    /// How much the fill ring can take is known without asking the
    /// kernel: frames given to it and not yet received are at most
    /// `in_kernel`, so at least `ring_size - in_kernel` slots are free, and
    /// in steady state (everything in the kernel's hands) there is nothing
    /// to do and nothing is tried. The crate reserves all or nothing, and
    /// the kernel publishes its consumer index lazily, so a reservation of
    /// that room can still come up short for a moment: then half is tried,
    /// and so on. In zero-copy mode the driver's own ring holds frames
    /// outside the fill ring, so there the fill ring is also offered one
    /// chunk beyond the tracked room, to keep it topped up as before.
    pub fn recycle_keeping(&mut self, keep: usize) {
        self.reap_completions();
        let free = self.umem.allocatable().saturating_sub(keep);
        let room = self.ring_size.saturating_sub(self.in_kernel) as usize;
        // Zero-copy, no tracked room: one offer, not a probe (when the
        // ring is full, one failed reservation per call, as before).
        let (mut ask, halve) = if room > 0 {
            (free.min(room), true)
        } else if self.zerocopy {
            (free.min(FILL_CHUNK), false)
        } else {
            (0, false)
        };
        while ask > 0 {
            // SAFETY: the UMEM outlives the socket and rings (Drop order).
            let n = unsafe { self.rings.fill.enqueue(&mut self.umem, ask, false) }.unwrap_or(0);
            if n > 0 || !halve {
                self.in_kernel += n as u32;
                break;
            }
            ask /= 2;
        }
    }

    /// Moves frames the kernel has finished sending back to the free list.
    pub fn reap_completions(&mut self) {
        // Tagged frames' completions carry stamps: read them first.
        if self.tagged_outstanding > 0 {
            self.reap_tagged();
        }
        let done = self
            .rings
            .completion
            .dequeue(&mut self.umem, self.tx_outstanding as usize);
        self.tx_outstanding -= done as u32;
        if self.tx_outstanding == 0 {
            self.tagged_outstanding = 0;
        }
    }

    /// Free frames (not on any ring, not in a batch).
    pub fn free_frames(&self) -> usize {
        self.umem.allocatable()
    }

    /// Takes up to [`BATCH`] received frames off the RX ring (fewer if
    /// frames of an earlier batch are still unhandled); returns how many
    /// wait for [`Self::reply`] or [`Self::consume`].
    pub fn receive(&mut self) -> usize {
        // SAFETY: the frames go into `rx_slab`, owned by this queue, and
        // never leave it (see the type's docs); the UMEM outlives them.
        let n = unsafe { self.rings.rx.recv(&self.umem, &mut self.rx_slab) };
        self.in_kernel = self.in_kernel.saturating_sub(n as u32);
        self.rx_slab.len()
    }

    /// Lends each received frame to `f`, oldest first; the frames `f`
    /// marks [`Verdict::Transmit`] go out on the TX ring (with a kick),
    /// the others back to the free list.
    pub fn reply(&mut self, mut f: impl FnMut(&mut XskFrame<'_>) -> Verdict) -> Replied {
        let mut out = Replied::default();
        while let Some(mut packet) = self.rx_slab.pop_back() {
            out.seen += 1;
            let mut frame = XskFrame {
                packet: &mut packet,
                tagged: false,
            };
            let verdict = f(&mut frame);
            // An upper bound (a tagged frame may yet be refused): it only
            // decides whether completions are read for tags.
            self.tagged_outstanding += u32::from(frame.tagged);
            match verdict {
                Verdict::Transmit if packet.len() < MIN_TX_LEN => {
                    out.too_short += 1;
                    self.free_unsent(packet);
                }
                Verdict::Transmit => {
                    if let Some(p) = self.tx_slab.push_front(packet) {
                        out.tx_full += 1;
                        self.free_unsent(p);
                    }
                }
                Verdict::Release => self.free_unsent(packet),
            }
        }
        if !self.tx_slab.is_empty() {
            let (sent, refused) = self.flush_tx(|_| {});
            out.sent = sent;
            out.tx_full += refused;
        }
        out
    }

    /// Frees a frame that was not sent, clearing any tag it was given.
    fn free_unsent(&mut self, mut packet: Packet) {
        if self.tx_metadata {
            drop_tag(&mut packet);
        }
        self.umem.free_packet(packet);
    }

    /// Lends each received frame to `f`, oldest first, then frees it.
    pub fn consume(&mut self, mut f: impl FnMut(&mut XskFrame<'_>)) -> usize {
        let mut n = 0;
        while let Some(mut packet) = self.rx_slab.pop_back() {
            n += 1;
            f(&mut XskFrame {
                packet: &mut packet,
                tagged: false,
            });
            self.umem.free_packet(packet);
        }
        n
    }

    /// Builds up to `n` new frames of `len` bytes each (no more than the
    /// batch has room for, or than there are free frames; none shorter
    /// than an Ethernet header): `f` writes each one and returns false to
    /// stop (that frame is not kept).
    /// Returns how many are built; [`Self::send_built`] sends them.
    pub fn build(&mut self, n: usize, len: usize, mut f: impl FnMut(&mut [u8]) -> bool) -> usize {
        let mut built = 0;
        while built < n && self.tx_slab.available() > 0 {
            // SAFETY: the frame goes into `tx_slab` or back to the UMEM
            // below, never out of this queue; the UMEM outlives it.
            let Some(mut packet) = (unsafe { self.umem.alloc() }) else {
                break;
            };
            let mut frame = XskFrame {
                packet: &mut packet,
                tagged: false,
            };
            if len < MIN_TX_LEN || !frame.set_len(len) || !f(frame.bytes_mut()) {
                self.umem.free_packet(packet);
                break;
            }
            // Cannot fail: room was checked above.
            if let Some(p) = self.tx_slab.push_front(packet) {
                self.umem.free_packet(p);
                break;
            }
            built += 1;
        }
        built
    }

    /// Puts the frames made by [`Self::build`] on the TX ring and kicks the
    /// kernel. Frames the ring has no room for are shown to `unsent` and
    /// freed. Returns how many were queued.
    pub fn send_built(&mut self, unsent: impl FnMut(&[u8])) -> usize {
        self.flush_tx(unsent).0
    }

    /// Puts `tx_slab` on the TX ring. The crate queues a slab all-or-
    /// nothing, so when the ring is too full the kernel is kicked (and
    /// completions reaped) a few times to make room. Returns (queued,
    /// refused); refused frames are shown to `unsent` and freed.
    fn flush_tx(&mut self, mut unsent: impl FnMut(&[u8])) -> (usize, usize) {
        let mut queued = 0;
        for attempt in 0..=TX_RETRIES {
            // SAFETY: the UMEM outlives the socket and rings (Drop order);
            // the frames are ours (built or received by this queue).
            let n = unsafe { self.rings.tx.send(&mut self.tx_slab, false) }.unwrap_or(0);
            queued += n;
            self.tx_outstanding += n as u32;
            // Copy mode moves a limited budget of descriptors per kick: kick
            // once per budget's worth, or they pile up on the TX ring, hold
            // their frames, and the fill ring runs dry.
            let kicks = if self.zerocopy {
                1
            } else {
                n.div_ceil(self.tx_budget).max(1)
            };
            if self.tx_outstanding > 0 {
                for _ in 0..kicks {
                    self.kick();
                }
            }
            if self.tx_slab.is_empty() || attempt == TX_RETRIES {
                break;
            }
            self.reap_completions();
        }
        let mut refused = 0;
        while let Some(p) = self.tx_slab.pop_back() {
            unsent(&p[..]);
            self.free_unsent(p);
            refused += 1;
        }
        (queued, refused)
    }

    /// True if frames wait on the TX ring. In copy mode the kernel moves at
    /// most a few dozen per kick, so the worker must keep kicking while
    /// this holds, or completions stop and the fill ring starves.
    pub fn tx_pending(&self) -> bool {
        self.tx_outstanding > 0
    }

    /// Asks the kernel to process the TX ring (one `sendto`, the ring kick).
    pub fn kick(&self) {
        sys::kick_tx(self.socket.raw_fd());
    }

    /// Waits up to `timeout` for received frames (poll), so that an idle
    /// worker sleeps instead of spinning.
    pub fn wait(&self, timeout: Duration) {
        let _ = self
            .socket
            .poll_read(xdp::socket::PollTimeout::new(Some(timeout)));
    }

    /// The kernel's counters for this socket (drops for lack of fill-ring
    /// frames, full RX ring, invalid descriptors).
    pub fn kernel_stats(&self) -> Option<xdp::libc::xdp::XdpStatistics> {
        self.socket.statistics().ok()
    }

    /// A reader of this socket's kernel counters for another thread (the
    /// control thread's live stats), on a duplicate of its descriptor.
    pub fn stats_reader(&self) -> std::io::Result<XskStatsReader> {
        // SAFETY: the socket's descriptor is open for as long as `self`
        // lives, which covers this call; the duplicate is a new, owned
        // descriptor of the same socket.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.socket.raw_fd()) }
            .try_clone_to_owned()?;
        Ok(XskStatsReader {
            queue: self.queue,
            fd,
        })
    }
}

/// Reads an AF_XDP socket's kernel counters (`XDP_STATISTICS`) through a
/// descriptor of its own: valid for as long as it lives, also after the
/// worker has closed the socket's other descriptor.
#[derive(Debug)]
pub struct XskStatsReader {
    queue: u32,
    fd: std::os::fd::OwnedFd,
}

impl XskStatsReader {
    /// The NIC queue of the socket.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The socket's descriptor (this reader's own): what the XSKMAP takes
    /// to steer the queue to the socket again.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }

    /// The counters now.
    pub fn read(&self) -> std::io::Result<xdp::libc::xdp::XdpStatistics> {
        sys::statistics(std::os::fd::AsRawFd::as_raw_fd(&self.fd))
    }
}

/// The raw syscalls the `xdp` crate does not wrap.
mod sys {
    use crate::sys::sockopt;
    use std::os::fd::RawFd;

    const SOL_XDP: libc::c_int = 283;
    const XDP_OPTIONS: libc::c_int = 8;
    const XDP_OPTIONS_ZEROCOPY: u32 = 1;
    // Not in Debian bookworm's 6.1 headers / older libc crates.
    const SO_PREFER_BUSY_POLL: libc::c_int = 69;
    const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

    /// The TX kick. EAGAIN / EBUSY / ENOBUFS / ENETDOWN mean "try again
    /// later" and are ignored, as libxdp does.
    pub fn kick_tx(fd: RawFd) {
        // SAFETY: a zero-length sendto with null buffer and address is the
        // documented AF_XDP TX wakeup; it touches no memory of ours.
        let _ = unsafe {
            libc::sendto(
                fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }

    const XDP_STATISTICS: libc::c_int = 7;

    pub fn statistics(fd: RawFd) -> std::io::Result<xdp::libc::xdp::XdpStatistics> {
        sockopt::get(fd, SOL_XDP, XDP_STATISTICS).map(|(s, _)| s)
    }

    pub fn is_zerocopy(fd: RawFd) -> std::io::Result<bool> {
        let (opts, _): (u32, _) = sockopt::get(fd, SOL_XDP, XDP_OPTIONS)?;
        Ok(opts & XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, 6.17+): descriptors one
    /// copy-mode send takes, 32 to the TX ring's size.
    const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

    pub fn set_max_tx_budget(fd: RawFd, budget: u32) -> std::io::Result<()> {
        // The kernel wants exactly an unsigned int.
        sockopt::set(fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, budget)
    }

    pub fn enable_busy_poll(fd: RawFd, budget: u32) -> std::io::Result<()> {
        let set = |name, v: libc::c_int| sockopt::set(fd, libc::SOL_SOCKET, name, v);
        set(SO_PREFER_BUSY_POLL, 1)?;
        set(libc::SO_BUSY_POLL, 20)?;
        set(
            SO_BUSY_POLL_BUDGET,
            budget.min(i32::MAX as u32) as libc::c_int,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `reap_tagged` relies on: the UMEM's free list is last-in
    /// first-out, and a frame's bytes (in front of its data too) survive a
    /// free and the next allocation.
    #[test]
    fn the_umem_free_list_is_last_in_first_out() {
        let cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            head_room: HEADROOM,
            frame_count: 8,
            tx_timestamp: true,
            ..Default::default()
        }
        .build()
        .unwrap();
        let mut umem = Umem::map(cfg).unwrap();
        let take = |umem: &mut Umem| {
            // SAFETY: the packets are freed back to `umem` below, before it
            // is dropped.
            unsafe { umem.alloc() }.unwrap()
        };
        let mut a = take(&mut umem);
        let mut b = take(&mut umem);
        assert!(write_before(&mut a, TX_META_LEN + TAG_LEN, b"frame a"));
        assert!(write_before(&mut b, TX_META_LEN + TAG_LEN, b"frame b"));
        umem.free_packet(a);
        umem.free_packet(b);
        let read = |p: &mut Packet| {
            p.adjust_head(-((TX_META_LEN + TAG_LEN) as i32)).unwrap();
            let got = p[..7].to_vec();
            p.adjust_head((TX_META_LEN + TAG_LEN) as i32).unwrap();
            got
        };
        let mut first = take(&mut umem);
        let mut second = take(&mut umem);
        assert_eq!(read(&mut first), b"frame b");
        assert_eq!(read(&mut second), b"frame a");
        umem.free_packet(first);
        umem.free_packet(second);
    }
}
