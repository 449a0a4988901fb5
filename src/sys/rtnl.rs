//! rtnetlink questions about links: whether a veth's peer, which may live
//! in another network namespace, runs an XDP program of its own.
//!
//! That decides whether `XDP_TX` works on the veth: the kernel hands an
//! `XDP_TX` frame to the peer's NAPI ring, which exists only while the peer
//! has a native XDP program (or GRO on); otherwise it drops the frame and
//! counts it in the veth's `xdp_tx_errors`, after the program has returned.
//!
//! Two `RTM_GETLINK` requests: our end gives the peer's index
//! (`IFLA_LINK`) and, when the peer is in another namespace, that
//! namespace's id as seen from ours (`IFLA_LINK_NETNSID`, which the kernel
//! assigns on demand); the peer, asked for in its namespace
//! (`IFLA_TARGET_NETNSID`), gives its `IFLA_XDP` state. Needs
//! CAP_NET_ADMIN in the peer's namespace. Built on the rust-netlink crates
//! (message types and a blocking socket): no hand-written attribute
//! parsing.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;

/// What a veth's peer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerXdp {
    /// A native (driver-mode) XDP program: `XDP_TX` reaches the peer.
    Native,
    /// A generic (skb-mode) program only, or none: `XDP_TX` frames from
    /// a native program on our end are dropped.
    NoNative,
}

/// Whether the peer of veth `ifindex` runs a native XDP program. An error
/// if `ifindex` is not a veth, its peer is gone, or netlink refuses.
pub fn veth_peer_xdp(ifindex: u32) -> io::Result<PeerXdp> {
    let nl = Rtnl::new()?;
    let me = nl.get_link(ifindex, None)?;
    let is_veth = me.attributes.iter().any(|a| {
        matches!(a, LinkAttribute::LinkInfo(infos) if infos.contains(&LinkInfo::Kind(InfoKind::Veth)))
    });
    if !is_veth {
        return Err(io::Error::other(format!(
            "interface {ifindex} is not a veth"
        )));
    }
    let (mut peer, mut nsid) = (None, None);
    for a in &me.attributes {
        match a {
            LinkAttribute::Link(i) => peer = Some(*i),
            LinkAttribute::LinkNetNsId(id) => nsid = Some(*id),
            _ => {}
        }
    }
    // IFLA_LINK is 0 while the peer is being torn down; an nsid below 0
    // (not assigned) cannot be addressed. The peer's index means nothing
    // without its namespace: never ask for it in ours by mistake.
    let peer = peer
        .filter(|&i| i != 0)
        .ok_or_else(|| io::Error::other("the veth has no peer"))?;
    if nsid.is_some_and(|id| id < 0) {
        return Err(io::Error::other("the peer's namespace has no id here"));
    }
    let theirs = nl.get_link(peer, nsid)?;
    let xdp = theirs
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Xdp(x) => Some(x.as_slice()),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("the peer's link carries no XDP state"))?;
    Ok(native(xdp))
}

/// Reads a nested `IFLA_XDP`: is a driver-mode program among those attached?
fn native(xdp: &[LinkXdp]) -> PeerXdp {
    let mut attached = XdpAttached::None;
    let mut drv_id = 0;
    for x in xdp {
        match x {
            LinkXdp::Attached(m) => attached = *m,
            LinkXdp::DrvProgId(id) => drv_id = *id,
            _ => {}
        }
    }
    // One mode: IFLA_XDP_ATTACHED names it. Several: only per-mode ids.
    if attached == XdpAttached::Driver || (attached == XdpAttached::Multiple && drv_id != 0) {
        PeerXdp::Native
    } else {
        PeerXdp::NoNative
    }
}

struct Rtnl {
    sock: Socket,
}

impl Rtnl {
    fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { sock })
    }

    /// One `RTM_GETLINK` for `index`, in the namespace whose id (as seen
    /// from ours) is `nsid`, or in ours.
    fn get_link(&self, index: u32, nsid: Option<i32>) -> io::Result<LinkMessage> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(id) = nsid {
            // IFLA_IF_NETNSID, alias IFLA_TARGET_NETNSID.
            msg.attributes.push(LinkAttribute::IfNetnsId(id));
        }
        const SEQ: u32 = 1;
        let mut req = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(msg)),
        );
        req.header.flags = NLM_F_REQUEST;
        req.header.sequence_number = SEQ;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut off = 0;
            while off < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                    .map_err(|e| io::Error::other(format!("undecodable netlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == SEQ {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                            return Ok(m);
                        }
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_driver_mode_program_counts() {
        use LinkXdp::*;
        assert_eq!(native(&[Attached(XdpAttached::None)]), PeerXdp::NoNative);
        assert_eq!(
            native(&[Attached(XdpAttached::Driver), ProgId(5)]),
            PeerXdp::Native
        );
        assert_eq!(
            native(&[Attached(XdpAttached::SocketBuffer), ProgId(5)]),
            PeerXdp::NoNative
        );
        assert_eq!(
            native(&[Attached(XdpAttached::Multiple), SkbProgId(3), DrvProgId(4)]),
            PeerXdp::Native
        );
        assert_eq!(
            native(&[Attached(XdpAttached::Multiple), SkbProgId(3), HwProgId(4)]),
            PeerXdp::NoNative
        );
    }

    #[test]
    fn loopback_is_not_a_veth() {
        match veth_peer_xdp(1) {
            Err(e) => assert!(e.to_string().contains("not a veth"), "{e}"),
            Ok(p) => panic!("lo reported as a veth: {p:?}"),
        }
    }
}
