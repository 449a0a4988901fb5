//! The codec on golden requests captured from real clients (chronyd,
//! ntpdate, sntp, ntpsec's ntpd: see `tests/fixtures/requests.rs` and
//! `scripts/capture-requests`): each gets a 48-byte reply with the right
//! fields, and etherparse — an implementation nobody here wrote —
//! verifies the reply frame's lengths and checksums.

#[path = "fixtures/requests.rs"]
mod fixtures;

use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use fixtures::*;
use ntpx::proto::ntp::{self, Leap, Mode, NtpShort, NtpTimestamp, Packet, ServerState};
use ntpx::proto::respond::{Responder, respond};

/// The server as captured: `mac` is the server's MAC in the captured frame.
fn cfg(mac: [u8; 6]) -> Responder {
    Responder::new(
        mac,
        vec!["198.18.0.1".parse().unwrap()],
        vec!["2001:db8::1".parse().unwrap()],
    )
}

fn state() -> ServerState {
    ServerState {
        leap: Leap::None,
        stratum: 1,
        precision: -24,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_bits(0x20),
        ref_id: *b"GPS\0",
        ref_time: NtpTimestamp::from_bits(0xecd1_0000_0000_0000),
    }
}

const RX: NtpTimestamp = NtpTimestamp::from_bits(0xecd1_2345_1000_0000);
const TX: NtpTimestamp = NtpTimestamp::from_bits(0xecd1_2345_1000_4000);

#[test]
fn every_captured_request_is_accepted() {
    for (name, payload) in ALL_REQUESTS {
        let req = ntp::parse_request(payload).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let p = Packet::new_checked(*payload).unwrap();
        assert_eq!(req.version, p.version(), "{name}");
        assert_eq!(req.transmit, p.transmit(), "{name}");
    }
}

#[test]
fn replies_to_captured_frames() {
    let frames: [(&str, &[u8], &[u8]); 5] = [
        ("chrony", CHRONY_REQUEST_FRAME, CHRONY_REQUEST),
        ("ntpdate", NTPDATE_REQUEST_FRAME, NTPDATE_REQUEST),
        ("sntp", SNTP_REQUEST_FRAME, SNTP_REQUEST),
        ("sntp -6", SNTP_V6_REQUEST_FRAME, SNTP_V6_REQUEST),
        ("ntpd", NTPD_REQUEST_FRAME, NTPD_REQUEST),
    ];
    for (name, frame, payload) in frames {
        let request = PacketHeaders::from_ethernet_slice(frame).unwrap();
        let Some(TransportHeader::Udp(req_udp)) = &request.transport else {
            panic!("{name}: udp")
        };
        let mut buf = frame.to_vec();
        let server_mac: [u8; 6] = frame[..6].try_into().unwrap();
        let reply = respond(&mut buf, &cfg(server_mac), &state(), RX, || TX, 0)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let out = &buf[..reply.len];
        assert!(
            out.len() <= frame.len(),
            "{name}: reply larger than request"
        );
        assert_eq!(&out[..6], &frame[6..12], "{name}: back to the client's MAC");
        assert_eq!(&out[6..12], &server_mac, "{name}: from the server's MAC");

        let h = PacketHeaders::from_ethernet_slice(out).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("{name}: udp")
        };
        let ntp_bytes = h.payload.slice();
        assert_eq!(ntp_bytes.len(), 48, "{name}");
        assert_eq!(udp.source_port, 123, "{name}");
        assert_eq!(
            udp.destination_port, req_udp.source_port,
            "{name}: back to the client's port"
        );
        match (&h.net, &request.net) {
            (Some(NetHeaders::Ipv4(ip, _)), Some(NetHeaders::Ipv4(rq, _))) => {
                assert_eq!(
                    (ip.source, ip.destination),
                    (rq.destination, rq.source),
                    "{name}"
                );
                assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "{name}");
                assert_eq!(
                    udp.checksum,
                    udp.calc_checksum_ipv4(ip, ntp_bytes).unwrap(),
                    "{name}"
                );
            }
            (Some(NetHeaders::Ipv6(ip, _)), Some(NetHeaders::Ipv6(rq, _))) => {
                assert_eq!(
                    (ip.source, ip.destination),
                    (rq.destination, rq.source),
                    "{name}"
                );
                assert_eq!(
                    udp.checksum,
                    udp.calc_checksum_ipv6(ip, ntp_bytes).unwrap(),
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }

        let req = Packet::new_checked(payload).unwrap();
        let rep = Packet::new_checked(ntp_bytes).unwrap();
        assert_eq!(rep.mode(), Mode::Server, "{name}");
        assert_eq!(rep.version(), req.version(), "{name}: version echoed");
        assert_eq!(rep.leap(), Leap::None, "{name}");
        assert_eq!(rep.stratum(), 1, "{name}");
        assert_eq!(rep.poll(), req.poll(), "{name}: poll echoed");
        assert_eq!(rep.ref_id(), *b"GPS\0", "{name}");
        assert_eq!(
            rep.origin().to_bytes(),
            req.transmit().to_bytes(),
            "{name}: origin = client transmit, bit for bit"
        );
        assert_eq!(rep.receive().to_bits() >> 8, RX.to_bits() >> 8, "{name}");
        assert_eq!(rep.transmit(), reply.transmit, "{name}");
        assert_eq!(rep.transmit().to_bits() >> 8, TX.to_bits() >> 8, "{name}");
    }
}

#[test]
fn a_real_chronyd_reply_has_the_shape_of_ours() {
    // chronyd's own reply to chronyd's request: same length, mode, version
    // echo and origin echo as ntpx's.
    let theirs = Packet::new_checked(CHRONY_REPLY).unwrap();
    let req = Packet::new_checked(CHRONY_REQUEST).unwrap();
    assert_eq!(CHRONY_REPLY.len(), ntp::HEADER_LEN);
    assert_eq!(theirs.mode(), Mode::Server);
    assert_eq!(theirs.version(), req.version());
    // A request is never answered: replies are not requests.
    assert_eq!(ntp::parse_request(CHRONY_REPLY), Err(ntp::Reject::Mode));
    let mut buf = CHRONY_REPLY_FRAME.to_vec();
    let client_mac: [u8; 6] = buf[..6].try_into().unwrap();
    let cfg = Responder::new(client_mac, vec!["198.18.0.2".parse().unwrap()], vec![]);
    assert!(respond(&mut buf, &cfg, &state(), RX, || TX, 0).is_err());
}
