//! Outstanding requests: which nonce went out when, and in which step.
//!
//! Every request carries a fresh nonce as its transmit timestamp. The low
//! bits of the nonce index a slot in a table owned by one generator
//! thread; the next bits name that thread; the rest are random. A reply's
//! origin finds its slot in O(1) and must match the whole stored nonce,
//! so a corrupted or replayed origin matches nothing, and a duplicate
//! reply finds the slot already closed.
//!
//! A slot reused while its request is still open closes that request as
//! lost. The table is sized so that this happens only to requests far
//! older than the reply timeout.

#![forbid(unsafe_code)]

use crate::proto::ntp::NtpTimestamp;

/// Bits of the nonce that name the generator thread.
pub const THREAD_BITS: u32 = 4;
/// Most generator threads.
pub const MAX_THREADS: usize = 1 << THREAD_BITS;
/// Largest table: 2²² slots (96 MiB).
pub const MAX_SLOT_BITS: u32 = 22;
/// Smallest table.
pub const MIN_SLOT_BITS: u32 = 12;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// 0 = free.
    nonce: u64,
    /// T1, Unix nanoseconds.
    sent_ns: u64,
    step: u32,
    client: u64,
}

/// A request that a reply (or the end of the run) closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// When it was sent (T1, Unix ns).
    pub sent_ns: u64,
    /// The step it belongs to.
    pub step: u32,
    /// Its slot (the client, in ping mode).
    pub slot: usize,
    /// The client identity it was sent from (see [`client_key`]).
    pub client: u64,
}

/// A compact client identity: the low 32 bits of the source address and
/// the source port. A reply must come back to the identity that asked.
pub fn client_key(addr: std::net::IpAddr, port: u16) -> u64 {
    let low = match addr {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(a) => u128::from(a) as u32,
    };
    u64::from(low) << 16 | u64::from(port)
}

impl Slot {
    fn closed(&self, slot: usize) -> Closed {
        Closed {
            sent_ns: self.sent_ns,
            step: self.step,
            slot,
            client: self.client,
        }
    }
}

/// One thread's table of outstanding requests.
#[derive(Debug)]
pub struct Tracker {
    slots: Vec<Slot>,
    slot_bits: u32,
    thread: u64,
    rng: fastrand::Rng,
    open: usize,
}

/// Slot-table bits for `rate` requests/s outstanding up to `timeout_s`:
/// room for four timeouts' worth, within the table limits.
pub fn slot_bits_for(rate: f64, timeout_s: f64) -> u32 {
    let need = (rate * timeout_s.max(0.001) * 4.0).max(1.0);
    (need.log2().ceil() as u32).clamp(MIN_SLOT_BITS, MAX_SLOT_BITS)
}

impl Tracker {
    /// A table of 2^`slot_bits` slots for thread `thread` (< [`MAX_THREADS`]).
    pub fn new(slot_bits: u32, thread: usize, seed: u64) -> Tracker {
        let slot_bits = slot_bits.clamp(1, MAX_SLOT_BITS);
        Tracker {
            slots: vec![Slot::default(); 1 << slot_bits],
            slot_bits,
            thread: (thread % MAX_THREADS) as u64,
            rng: fastrand::Rng::with_seed(seed),
            open: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Requests sent and not yet closed.
    pub fn open(&self) -> usize {
        self.open
    }

    /// True if the slot holds an open request.
    pub fn is_open(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.nonce != 0)
    }

    /// Opens `slot` (taken modulo the capacity) for a request sent at
    /// `sent_ns` in `step` and returns its nonce. If the slot still held
    /// an open request, that one is returned as closed (lost).
    pub fn open_slot(
        &mut self,
        slot: usize,
        sent_ns: u64,
        step: u32,
        client: u64,
    ) -> (NtpTimestamp, Option<Closed>) {
        let slot = slot & (self.slots.len() - 1);
        let random = self.rng.u64(..) << (self.slot_bits + THREAD_BITS);
        // Top bit set: never zero, and the nonce never equals a free slot.
        let nonce = random | 1 << 63 | self.thread << self.slot_bits | slot as u64;
        let s = &mut self.slots[slot];
        let evicted = (s.nonce != 0).then(|| s.closed(slot));
        if evicted.is_none() {
            self.open += 1;
        }
        *s = Slot {
            nonce,
            sent_ns,
            step,
            client,
        };
        (NtpTimestamp::from_bits(nonce), evicted)
    }

    /// Closes the request whose nonce is `origin`; `None` if no open
    /// request has it (corrupted, duplicate, another thread's, or evicted).
    pub fn close(&mut self, origin: NtpTimestamp) -> Option<Closed> {
        let bits = origin.to_bits();
        let slot = (bits & ((1 << self.slot_bits) - 1)) as usize;
        let s = self.slots.get_mut(slot)?;
        if s.nonce == 0 || s.nonce != bits {
            return None;
        }
        s.nonce = 0;
        self.open -= 1;
        Some(s.closed(slot))
    }

    /// Sets the send time of the open request in `slot` (the batch's T1,
    /// read just before the frames leave).
    pub fn restamp(&mut self, slot: usize, sent_ns: u64) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.sent_ns = sent_ns;
        }
    }

    /// Closes `slot` if its request is open and was sent before `cutoff_ns`.
    pub fn expire_slot(&mut self, slot: usize, cutoff_ns: u64) -> Option<Closed> {
        let s = self.slots.get_mut(slot)?;
        if s.nonce == 0 || s.sent_ns >= cutoff_ns {
            return None;
        }
        s.nonce = 0;
        self.open -= 1;
        Some(s.closed(slot))
    }

    /// Closes every open request (the run is over: they are lost).
    pub fn close_all(&mut self, mut f: impl FnMut(Closed)) {
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.nonce != 0 {
                s.nonce = 0;
                f(s.closed(slot));
            }
        }
        self.open = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_once() {
        let mut t = Tracker::new(4, 3, 1);
        let (n, ev) = t.open_slot(5, 1000, 2, 77);
        assert_eq!(ev, None);
        assert_eq!(t.open(), 1);
        assert_eq!(n.to_bits() & 0xf, 5);
        assert_eq!(n.to_bits() >> 4 & 0xf, 3);
        assert_ne!(n.to_bits(), 0);
        assert_eq!(
            t.close(n),
            Some(Closed {
                sent_ns: 1000,
                step: 2,
                slot: 5,
                client: 77
            })
        );
        // A duplicate reply finds the slot closed.
        assert_eq!(t.close(n), None);
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn corrupted_origin_matches_nothing() {
        let mut t = Tracker::new(8, 0, 2);
        let (n, _) = t.open_slot(9, 1, 0, 0);
        for bit in 0..64 {
            let bad = NtpTimestamp::from_bits(n.to_bits() ^ 1 << bit);
            assert_eq!(t.close(bad), None, "bit {bit}");
        }
        assert!(t.is_open(9));
        assert_eq!(t.close(NtpTimestamp::ZERO), None);
    }

    #[test]
    fn reuse_evicts_and_expiry() {
        let mut t = Tracker::new(2, 0, 3);
        let (old, _) = t.open_slot(1, 10, 0, 1);
        let (_, ev) = t.open_slot(5, 20, 1, 2); // 5 mod 4 == 1
        assert_eq!(
            ev,
            Some(Closed {
                sent_ns: 10,
                step: 0,
                slot: 1,
                client: 1
            })
        );
        assert_eq!(t.close(old), None);
        assert_eq!(t.open(), 1);
        assert_eq!(t.expire_slot(1, 20), None);
        t.restamp(1, 25);
        assert_eq!(t.expire_slot(1, 25), None);
        assert_eq!(t.expire_slot(1, 26).map(|c| c.step), Some(1));
        t.open_slot(2, 30, 4, 3);
        t.open_slot(3, 31, 4, 3);
        let mut lost = vec![];
        t.close_all(|c| lost.push(c.slot));
        assert_eq!((lost, t.open()), (vec![2, 3], 0));
    }

    #[test]
    fn sizing() {
        assert_eq!(slot_bits_for(10.0, 1.0), MIN_SLOT_BITS);
        assert_eq!(slot_bits_for(1e6, 1.0), 22);
        assert_eq!(slot_bits_for(100e6, 10.0), MAX_SLOT_BITS);
        assert_eq!(1 << slot_bits_for(100e3, 1.0), 1 << 19);
    }
}
