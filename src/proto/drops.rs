//! Why a packet got no reply: one counter per reason, so that every
//! dropped packet is accounted for.

#![forbid(unsafe_code)]

use crate::proto::ntp::Reject;

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident => $label:literal,)*) => {
        /// A reason for dropping a packet.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];

            /// The label used in stats output.
            pub const fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }
        }
    };
}

reasons! {
    /// Frame too short for the headers it announces.
    Truncated => "truncated",
    /// Not IPv4 or IPv6.
    NotIp => "not_ip",
    /// Sent to a multicast or broadcast MAC address.
    NonUnicast => "non_unicast",
    /// Sent to another host's MAC address: the kernel would have dropped
    /// it (`PACKET_OTHERHOST`), and a reply would claim that host's MAC.
    OtherHost => "other_host",
    /// Sent from a broadcast, multicast or all-zero MAC address: a reply
    /// would go to a whole segment, or nowhere.
    BadSourceMac => "bad_src_mac",
    /// IP version / header length field invalid.
    BadIpHeader => "bad_ip_header",
    /// IPv4 header checksum wrong.
    BadIpChecksum => "bad_ip_checksum",
    /// IP length field disagrees with the frame.
    BadIpLength => "bad_ip_length",
    /// An IPv4 fragment, or (socket datapath) a datagram the kernel
    /// reassembled from fragments.
    Fragment => "fragment",
    /// An IPv4 source route option (loose or strict): the kernel drops
    /// these on a host.
    SourceRoute => "source_route",
    /// Malformed IPv4 options (a length of 0 or past the header, a pointer
    /// out of range, a repeated option), or a CIPSO label.
    BadIpOptions => "bad_ip_options",
    /// Not UDP.
    NotUdp => "not_udp",
    /// Destination is not one of the server's addresses.
    NotOurAddress => "not_our_address",
    /// Source address can never be a client (unspecified, loopback,
    /// multicast, broadcast, reserved, IPv4-mapped).
    BadSource => "bad_source",
    /// Source address is one of ours (a loop).
    OwnSource => "own_source",
    /// Source address is the network or broadcast address of one of the
    /// interface's IPv4 prefixes (a directed broadcast).
    DirectedBroadcast => "directed_broadcast",
    /// UDP length field disagrees with the IP length (or, on the socket
    /// datapath, cannot be checked: IPv6 extension headers before UDP).
    BadUdpLength => "bad_udp_length",
    /// UDP checksum wrong, or zero over IPv6.
    BadUdpChecksum => "bad_udp_checksum",
    /// UDP to another port.
    OtherPort => "other_port",
    /// Source port 0.
    SrcPortZero => "src_port_zero",
    /// Source port of a loop-prone service (echo, daytime, qotd, chargen, time).
    LoopPort => "loop_port",
    /// NTP payload shorter than 48 bytes.
    NtpTooShort => "ntp_too_short",
    /// NTP payload length not a multiple of 4.
    NtpBadLength => "ntp_bad_length",
    /// NTP version 0 or above 4.
    NtpVersion => "ntp_version",
    /// NTP mode other than client.
    NtpMode => "ntp_mode",
    /// Carries a legacy MAC.
    NtpMac => "ntp_mac",
    /// Carries an NTS field.
    NtpNts => "ntp_nts",
    /// Malformed extension fields.
    NtpBadExtension => "ntp_bad_extension",
    /// The TX ring (or socket send buffer) had no room for the reply.
    TxFull => "tx_full",
    /// The kernel refused to send the reply (socket datapath).
    SendError => "send_error",
    /// The kernel dropped it on the socket (socket datapath; read with
    /// `SO_MEMINFO`, which does not say why): the receive buffer was full,
    /// or the datagram was empty, or its UDP checksum was wrong and it was
    /// longer than the kernel checks before the socket (76 bytes).
    SocketKernelDrop => "socket_kernel_drop",
    /// The AF_XDP RX ring was full: the kernel dropped it before a worker
    /// saw it (the worker fell behind).
    RxRingFull => "rx_ring_full",
    /// The kernel could not hand it to the AF_XDP socket: no free frame on
    /// the fill ring (copy mode), or a frame larger than a UMEM frame.
    XskRxDropped => "xsk_rx_dropped",
    /// A reply sent from the XDP program (`XDP_TX`) that the driver dropped
    /// after the program returned (read from the driver's statistics; on a
    /// veth: its peer runs no XDP program to receive it).
    XdpTxError => "xdp_tx_error",
    /// The reply would have left more than the configured bound
    /// (`max_residence_us`) after its request arrived: the worker fell
    /// behind. Dropped, because a client takes a late T3 at its word.
    Late => "late",
    /// The server's state says unsynchronised and `on_unsync = "drop"`: no
    /// reply rather than one with LI 3.
    Unsynchronized => "unsynchronized",
    /// The source is refused by the access lists (`[access]`, action
    /// `ignore`), or a refused request that could not be answered with a
    /// KoD DENY.
    Access => "access",
    /// Over its client's rate limit, and neither leaked nor answered with
    /// a KoD RATE.
    RateLimited => "rate_limited",
    /// Over the global reply ceiling (`[rate_limit] ceiling`).
    Ceiling => "ceiling",
    /// The source has no route back (`[access] reverse_path = "loose"`),
    /// or none through the interface the request came in on (`"strict"`).
    ReversePath => "reverse_path",
    /// The server is out of service, saying nothing (`ntpx drain on
    /// --mode stop`).
    Draining => "draining",
}

/// How many reasons there are (the length of a counter array).
pub const COUNT: usize = DropReason::ALL.len();

impl From<Reject> for DropReason {
    fn from(r: Reject) -> Self {
        match r {
            Reject::TooShort => DropReason::NtpTooShort,
            Reject::BadLength => DropReason::NtpBadLength,
            Reject::Version => DropReason::NtpVersion,
            Reject::Mode => DropReason::NtpMode,
            Reject::Mac => DropReason::NtpMac,
            Reject::Nts => DropReason::NtpNts,
            Reject::BadExtension => DropReason::NtpBadExtension,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminants_index_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), COUNT);
    }
}
