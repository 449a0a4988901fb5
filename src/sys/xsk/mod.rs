//! One AF_XDP socket with its UMEM and four rings, bound to one NIC queue.
//!
//! Built on the `xdp` crate (pure Rust, no libxdp). What it does not
//! offer is written here: reading the XDP program's metadata in front of
//! a received frame, the bare TX kick (`sendto`), the zero-copy query
//! (`XDP_OPTIONS`), busy-poll socket options, and the EBUSY retry on bind.
//!
//! Frames cycle without copies: fill ring → (kernel) → RX ring → worker
//! rewrites the frame in place → TX ring → (kernel) → completion ring →
//! free list → fill ring.

pub mod meta;

use meta::{META_LEN, Meta};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};
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
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            frames: 4096,
            ring_size: 2048,
            bind_mode: BindMode::Auto,
            busy_poll_budget: 0,
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
/// Frames handed to the fill ring per reservation.
const FILL_CHUNK: usize = 64;
/// Descriptors the kernel sends per kick in copy mode (its default TX
/// budget, `max_tx_budget`).
const COPY_TX_BUDGET: usize = 32;
/// Extra kicks before replies that find the TX ring full are dropped.
const TX_RETRIES: usize = 4;

/// An open, bound AF_XDP socket and its rings.
pub struct XskQueue {
    queue: u32,
    // Field order is drop order: rings and socket go before the UMEM they
    // point into.
    fill: WakableFillRing,
    rx: RxRing,
    completion: CompletionRing,
    tx: WakableTxRing,
    socket: XdpSocket,
    umem: Umem,
    zerocopy: bool,
    /// Descriptors on the TX ring not yet seen on the completion ring.
    tx_outstanding: u32,
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

impl XskQueue {
    /// Creates the UMEM and rings and binds to `ifindex` / `queue`,
    /// retrying EBUSY for up to a second (a queue whose previous socket
    /// just closed stays busy for ~100 ms).
    pub fn open(ifindex: u32, queue: u32, opts: &QueueOptions) -> Result<Self, QueueError> {
        let umem_cfg = UmemCfgBuilder {
            frame_size: FrameSize::TwoK,
            head_room: HEADROOM,
            frame_count: opts.frames,
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
                    // SAFETY: the UMEM is owned by this struct and outlives
                    // the socket (field order above).
                    unsafe { fill.enqueue(&mut umem, initial, false) }
                        .map_err(|e| setup_err(queue, format!("filling the fill ring: {e}")))?;
                    let zerocopy = sys::is_zerocopy(socket.raw_fd()).unwrap_or(false);
                    if opts.busy_poll_budget > 0 {
                        sys::enable_busy_poll(socket.raw_fd(), opts.busy_poll_budget)
                            .map_err(|e| setup_err(queue, format!("busy poll: {e}")))?;
                    }
                    return Ok(XskQueue {
                        queue,
                        fill,
                        rx,
                        completion: rings.completion_ring,
                        tx,
                        socket,
                        umem,
                        zerocopy,
                        tx_outstanding: 0,
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

    /// Moves finished TX frames back to the free list, then gives free
    /// frames to the fill ring.
    pub fn recycle(&mut self) {
        self.recycle_keeping(0);
    }

    /// Like [`Self::recycle`], but keeps `keep` free frames out of the fill
    /// ring for [`Self::alloc`] (a sender that builds its own frames).
    pub fn recycle_keeping(&mut self, keep: usize) {
        self.reap_completions();
        // The crate reserves ring slots all-or-nothing: asking for more
        // frames than the ring has free slots gets none, and the fill ring
        // would starve. Ask for less until the ring takes what it can.
        let mut free = self.umem.allocatable().saturating_sub(keep);
        let mut chunk = FILL_CHUNK;
        while free > 0 && chunk > 0 {
            // SAFETY: the UMEM outlives the socket (field order).
            let n =
                unsafe { self.fill.enqueue(&mut self.umem, free.min(chunk), false) }.unwrap_or(0);
            if n == 0 {
                chunk /= 2;
            }
            free -= n;
        }
    }

    /// Moves frames the kernel has finished sending back to the free list.
    pub fn reap_completions(&mut self) {
        let done = self
            .completion
            .dequeue(&mut self.umem, self.tx_outstanding as usize);
        self.tx_outstanding -= done as u32;
    }

    /// A free frame to build an outgoing frame in (empty: grow it with
    /// `adjust_tail`), or `None` when every frame is in use.
    pub fn alloc(&mut self) -> Option<Packet> {
        // SAFETY: the packet points into our UMEM; the caller hands it to
        // `send` or `release` before this queue is dropped (the worker
        // loops own both and drop the queue last).
        unsafe { self.umem.alloc() }
    }

    /// Free frames (not on any ring, not held by the caller).
    pub fn free_frames(&self) -> usize {
        self.umem.allocatable()
    }

    /// Takes up to the slab's free space of received frames.
    pub fn receive(&mut self, slab: &mut xdp::slab::HeapSlab) -> usize {
        // SAFETY: the packets point into our UMEM; the worker returns each
        // one to `send` or `release` before this queue is dropped.
        unsafe { self.rx.recv(&self.umem, slab) }
    }

    /// Returns a frame that will not be sent to the free list.
    pub fn release(&mut self, packet: Packet) {
        self.umem.free_packet(packet);
    }

    /// Puts the slab's frames on the TX ring and kicks the kernel. The
    /// crate queues a slab all-or-nothing, so when the ring is too full the
    /// kernel is kicked (and completions reaped) a few times to make room.
    /// Returns how many were queued; the rest stay in the slab.
    pub fn send(&mut self, slab: &mut xdp::slab::HeapSlab) -> usize {
        let mut queued = 0;
        for attempt in 0..=TX_RETRIES {
            // SAFETY: the UMEM outlives the socket (field order).
            let n = unsafe { self.tx.send(slab, false) }.unwrap_or(0);
            queued += n;
            self.tx_outstanding += n as u32;
            // Copy mode moves a limited budget of descriptors per kick: kick
            // once per budget's worth, or they pile up on the TX ring, hold
            // their frames, and the fill ring runs dry.
            let kicks = if self.zerocopy {
                1
            } else {
                n.div_ceil(COPY_TX_BUDGET).max(1)
            };
            if self.tx_outstanding > 0 {
                for _ in 0..kicks {
                    self.kick();
                }
            }
            if slab.is_empty() || attempt == TX_RETRIES {
                break;
            }
            self.reap_completions();
        }
        queued
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

    /// The counters now.
    pub fn read(&self) -> std::io::Result<xdp::libc::xdp::XdpStatistics> {
        sys::statistics(std::os::fd::AsRawFd::as_raw_fd(&self.fd))
    }
}

/// Reads and consumes the XDP program's metadata in front of `packet`.
/// The magic is cleared so that a recycled frame cannot show a stale
/// stamp if the program ever fails to write one.
pub fn take_meta(packet: &mut Packet) -> Option<Meta> {
    let n = META_LEN as i32;
    packet.adjust_head(-n).ok()?;
    let meta = Meta::parse(&packet[..META_LEN]);
    if meta.is_some() {
        Meta::clear(&mut packet[..META_LEN]);
    }
    // Cannot fail: we just moved the head down by n.
    let _ = packet.adjust_head(n);
    meta
}

/// The raw syscalls the `xdp` crate does not wrap.
mod sys {
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
        // SAFETY: XdpStatistics is a plain C struct of u64s; all-zero is a
        // valid value.
        let mut stats: xdp::libc::xdp::XdpStatistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `stats`, a
        // live value of that size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                SOL_XDP,
                XDP_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stats)
    }

    pub fn is_zerocopy(fd: RawFd) -> std::io::Result<bool> {
        let mut opts: u32 = 0;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `opts`, which
        // is a live u32 of that size.
        let r =
            unsafe { libc::getsockopt(fd, SOL_XDP, XDP_OPTIONS, (&raw mut opts).cast(), &mut len) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(opts & XDP_OPTIONS_ZEROCOPY != 0)
    }

    fn set_int(fd: RawFd, name: libc::c_int, v: libc::c_int) -> std::io::Result<()> {
        // SAFETY: setsockopt reads size_of::<c_int>() bytes from `v`, a
        // live c_int.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn enable_busy_poll(fd: RawFd, budget: u32) -> std::io::Result<()> {
        set_int(fd, SO_PREFER_BUSY_POLL, 1)?;
        set_int(fd, libc::SO_BUSY_POLL, 20)?;
        set_int(
            fd,
            SO_BUSY_POLL_BUDGET,
            budget.min(i32::MAX as u32) as libc::c_int,
        )
    }
}
