//! The 48-byte NTP header (RFC 5905 §7.3).

use super::timestamp::{NtpShort, NtpTimestamp};

/// Length of the NTP header, and of every reply ntpx sends.
pub const HEADER_LEN: usize = 48;

mod field {
    use std::ops::Range;
    pub const LI_VN_MODE: usize = 0;
    pub const STRATUM: usize = 1;
    pub const POLL: usize = 2;
    pub const PRECISION: usize = 3;
    pub const ROOT_DELAY: Range<usize> = 4..8;
    pub const ROOT_DISPERSION: Range<usize> = 8..12;
    pub const REF_ID: Range<usize> = 12..16;
    pub const REF_TIME: Range<usize> = 16..24;
    pub const ORIGIN: Range<usize> = 24..32;
    pub const RECEIVE: Range<usize> = 32..40;
    pub const TRANSMIT: Range<usize> = 40..48;
}

/// Leap indicator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Leap {
    /// No leap second pending.
    None = 0,
    /// The last minute of the day has 61 seconds.
    Insert = 1,
    /// The last minute of the day has 59 seconds.
    Delete = 2,
    /// The clock is not synchronised.
    Unsynchronized = 3,
}

impl Leap {
    /// From the two LI bits.
    pub const fn from_bits(b: u8) -> Leap {
        match b & 3 {
            0 => Leap::None,
            1 => Leap::Insert,
            2 => Leap::Delete,
            _ => Leap::Unsynchronized,
        }
    }
}

/// Association mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Reserved (0).
    Reserved = 0,
    /// Symmetric active (1).
    SymmetricActive = 1,
    /// Symmetric passive (2).
    SymmetricPassive = 2,
    /// Client (3).
    Client = 3,
    /// Server (4).
    Server = 4,
    /// Broadcast (5).
    Broadcast = 5,
    /// NTP control message (6).
    Control = 6,
    /// Private use, e.g. ntpd's monlist (7).
    Private = 7,
}

impl Mode {
    /// From the three mode bits.
    pub const fn from_bits(b: u8) -> Mode {
        match b & 7 {
            0 => Mode::Reserved,
            1 => Mode::SymmetricActive,
            2 => Mode::SymmetricPassive,
            3 => Mode::Client,
            4 => Mode::Server,
            5 => Mode::Broadcast,
            6 => Mode::Control,
            _ => Mode::Private,
        }
    }
}

/// A view of an NTP header over a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn ts(b: &[u8], r: std::ops::Range<usize>) -> NtpTimestamp {
    let mut a = [0; 8];
    a.copy_from_slice(&b[r]);
    NtpTimestamp::from_bytes(a)
}

fn short(b: &[u8], r: std::ops::Range<usize>) -> NtpShort {
    let mut a = [0; 4];
    a.copy_from_slice(&b[r]);
    NtpShort::from_bits(u32::from_be_bytes(a))
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Option<Self> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(Packet { buffer })
    }

    /// Leap indicator.
    pub fn leap(&self) -> Leap {
        Leap::from_bits(self.buffer.as_ref()[field::LI_VN_MODE] >> 6)
    }
    /// Version number (0–7).
    pub fn version(&self) -> u8 {
        (self.buffer.as_ref()[field::LI_VN_MODE] >> 3) & 7
    }
    /// Mode.
    pub fn mode(&self) -> Mode {
        Mode::from_bits(self.buffer.as_ref()[field::LI_VN_MODE])
    }
    /// Stratum.
    pub fn stratum(&self) -> u8 {
        self.buffer.as_ref()[field::STRATUM]
    }
    /// Poll exponent (log2 seconds).
    pub fn poll(&self) -> i8 {
        self.buffer.as_ref()[field::POLL] as i8
    }
    /// Precision exponent (log2 seconds).
    pub fn precision(&self) -> i8 {
        self.buffer.as_ref()[field::PRECISION] as i8
    }
    /// Root delay.
    pub fn root_delay(&self) -> NtpShort {
        short(self.buffer.as_ref(), field::ROOT_DELAY)
    }
    /// Root dispersion.
    pub fn root_dispersion(&self) -> NtpShort {
        short(self.buffer.as_ref(), field::ROOT_DISPERSION)
    }
    /// Reference ID.
    pub fn ref_id(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::REF_ID]);
        a
    }
    /// Reference timestamp.
    pub fn ref_time(&self) -> NtpTimestamp {
        ts(self.buffer.as_ref(), field::REF_TIME)
    }
    /// Origin timestamp (T1 in a reply).
    pub fn origin(&self) -> NtpTimestamp {
        ts(self.buffer.as_ref(), field::ORIGIN)
    }
    /// Receive timestamp (T2 in a reply).
    pub fn receive(&self) -> NtpTimestamp {
        ts(self.buffer.as_ref(), field::RECEIVE)
    }
    /// Transmit timestamp (T1 in a request, T3 in a reply).
    pub fn transmit(&self) -> NtpTimestamp {
        ts(self.buffer.as_ref(), field::TRANSMIT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets LI, VN and mode.
    pub fn set_li_vn_mode(&mut self, leap: Leap, version: u8, mode: Mode) {
        self.buffer.as_mut()[field::LI_VN_MODE] =
            (leap as u8) << 6 | (version & 7) << 3 | mode as u8;
    }
    /// Sets the stratum.
    pub fn set_stratum(&mut self, v: u8) {
        self.buffer.as_mut()[field::STRATUM] = v;
    }
    /// Sets the poll exponent.
    pub fn set_poll(&mut self, v: i8) {
        self.buffer.as_mut()[field::POLL] = v as u8;
    }
    /// Sets the precision exponent.
    pub fn set_precision(&mut self, v: i8) {
        self.buffer.as_mut()[field::PRECISION] = v as u8;
    }
    /// Sets the root delay.
    pub fn set_root_delay(&mut self, v: NtpShort) {
        self.buffer.as_mut()[field::ROOT_DELAY].copy_from_slice(&v.to_bits().to_be_bytes());
    }
    /// Sets the root dispersion.
    pub fn set_root_dispersion(&mut self, v: NtpShort) {
        self.buffer.as_mut()[field::ROOT_DISPERSION].copy_from_slice(&v.to_bits().to_be_bytes());
    }
    /// Sets the reference ID.
    pub fn set_ref_id(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::REF_ID].copy_from_slice(&v);
    }
    /// Sets the reference timestamp.
    pub fn set_ref_time(&mut self, v: NtpTimestamp) {
        self.buffer.as_mut()[field::REF_TIME].copy_from_slice(&v.to_bytes());
    }
    /// Sets the origin timestamp.
    pub fn set_origin(&mut self, v: NtpTimestamp) {
        self.buffer.as_mut()[field::ORIGIN].copy_from_slice(&v.to_bytes());
    }
    /// Sets the receive timestamp.
    pub fn set_receive(&mut self, v: NtpTimestamp) {
        self.buffer.as_mut()[field::RECEIVE].copy_from_slice(&v.to_bytes());
    }
    /// Sets the transmit timestamp.
    pub fn set_transmit(&mut self, v: NtpTimestamp) {
        self.buffer.as_mut()[field::TRANSMIT].copy_from_slice(&v.to_bytes());
    }
}
