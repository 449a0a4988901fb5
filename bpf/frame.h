/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * Frame walking shared by the XDP programs (bpf/ntpx.bpf.c, bpf/load.bpf.c):
 * a bounds-checked cursor, the walk from Ethernet to the UDP header, and the
 * metadata write in front of a redirected frame.
 *
 * The walk: Ethernet, at most two VLAN tags (802.1Q / 802.1ad), IPv4 (any
 * IHL >= 5) or IPv6 (UDP directly after the fixed header, or after a
 * fragment header; other extension headers count as "not UDP"), then the
 * 8-byte UDP header. Fragments are reported; of a first fragment, the UDP
 * header is read too. The UDP length field is not looked at: each program
 * decides what it needs from it.
 *
 * Everything here is __always_inline: the verifier sees one flat program.
 */
#ifndef NTPX_FRAME_H
#define NTPX_FRAME_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ntpx.h"

#define NTPX_IPPROTO_UDP 17
#define NTPX_IPPROTO_FRAGMENT 44
#define NTPX_IP_MF 0x2000
#define NTPX_IP_OFFSET 0x1fff
#define NTPX_IP6_OFFSET 0xfff8 /* fragment offset in the fragment header */
#define NTPX_MAX_VLANS 2

/* Not in the uapi headers (struct vlan_hdr is kernel-internal). */
struct ntpx_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* The IPv6 fragment header (RFC 8200 section 4.5). */
struct ntpx_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M flag */
	__be32 identification;
};

/* ---- bounds-checked header cursor ---- */

struct cursor {
	void *pos;
	void *end;
};

/*
 * Returns a pointer to the next `len` bytes and advances past them, or NULL
 * (cursor unchanged) if fewer than `len` bytes are left in the frame.
 */
static __always_inline void *cursor_take(struct cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

/* ---- Ethernet / VLAN / IP / UDP ---- */

/* How far ntpx_parse_udp() got. */
enum ntpx_parse {
	NTPX_PARSE_UDP = 0,   /* the UDP header is in the frame */
	NTPX_PARSE_NOT_IP,    /* not IPv4/IPv6 (ARP, LLDP, > 2 VLAN tags, ...) */
	NTPX_PARSE_NOT_UDP,   /* IP but not UDP (ICMP, TCP, IPv6 ext headers) */
	NTPX_PARSE_FRAGMENT,  /* a UDP fragment that is not the first, or any
	                       * IPv6 fragment of something else */
	NTPX_PARSE_FIRST_FRAGMENT, /* the first fragment of a UDP datagram: `h`
	                            * is filled in, UDP header included */
	NTPX_PARSE_TRUNCATED, /* headers cut short, or IP version / IHL wrong */
};

/*
 * The headers ntpx_parse_udp() found; the pointers point into the frame.
 * Branch on `family`, not on the pointers: the verifier cannot tell that a
 * packet pointer is non-NULL, and would follow the wrong family's branch.
 */
struct ntpx_headers {
	__u32 family;        /* 4 or 6 */
	struct iphdr *ip4;   /* family 4: the IPv4 header */
	struct ipv6hdr *ip6; /* family 6: the IPv6 header */
	struct udphdr *udp;  /* the UDP header */
};

/*
 * Walks the frame at `c` up to and including the UDP header. On
 * NTPX_PARSE_UDP and NTPX_PARSE_FIRST_FRAGMENT `h` is filled in (`family`
 * and its header, `udp`) and the cursor stands right after the UDP header;
 * otherwise `h` is left partly filled and must not be used.
 */
static __always_inline enum ntpx_parse ntpx_parse_udp(struct cursor *c,
						      struct ntpx_headers *h)
{
	struct ethhdr *eth;
	__u16 proto;
	int first_fragment = 0;
	int i;

	eth = cursor_take(c, sizeof(*eth));
	if (!eth)
		return NTPX_PARSE_TRUNCATED;
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < NTPX_MAX_VLANS; i++) {
		struct ntpx_vlan_hdr *vlan;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = cursor_take(c, sizeof(*vlan));
		if (!vlan)
			return NTPX_PARSE_TRUNCATED;
		proto = vlan->encap_proto;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = c->pos;
		__u32 hlen;

		if ((void *)(iph + 1) > c->end)
			return NTPX_PARSE_TRUNCATED;
		if (iph->version != 4 || iph->ihl < 5)
			return NTPX_PARSE_TRUNCATED;
		hlen = iph->ihl * 4;
		if (!cursor_take(c, hlen))
			return NTPX_PARSE_TRUNCATED;
		if (iph->protocol != NTPX_IPPROTO_UDP)
			return NTPX_PARSE_NOT_UDP;
		if (iph->frag_off & bpf_htons(NTPX_IP_OFFSET))
			return NTPX_PARSE_FRAGMENT;
		first_fragment = (iph->frag_off & bpf_htons(NTPX_IP_MF)) != 0;
		h->family = 4;
		h->ip4 = iph;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = cursor_take(c, sizeof(*ip6h));

		if (!ip6h)
			return NTPX_PARSE_TRUNCATED;
		if (ip6h->version != 6)
			return NTPX_PARSE_TRUNCATED;
		if (ip6h->nexthdr == NTPX_IPPROTO_FRAGMENT) {
			struct ntpx_frag_hdr *fh = cursor_take(c, sizeof(*fh));

			if (!fh)
				return NTPX_PARSE_TRUNCATED;
			if (fh->nexthdr != NTPX_IPPROTO_UDP ||
			    (fh->frag_off & bpf_htons(NTPX_IP6_OFFSET)))
				return NTPX_PARSE_FRAGMENT;
			first_fragment = 1;
		} else if (ip6h->nexthdr != NTPX_IPPROTO_UDP) {
			return NTPX_PARSE_NOT_UDP;
		}
		h->family = 6;
		h->ip6 = ip6h;
	} else {
		return NTPX_PARSE_NOT_IP;
	}

	h->udp = cursor_take(c, sizeof(struct udphdr));
	if (!h->udp)
		return NTPX_PARSE_TRUNCATED;
	return first_fragment ? NTPX_PARSE_FIRST_FRAGMENT : NTPX_PARSE_UDP;
}

/* ---- metadata ---- */

/*
 * Puts struct ntpx_meta (bpf/ntpx.h) in front of the frame. Returns 0 on
 * success. Invalidates every packet pointer the caller holds.
 */
static __always_inline int ntpx_write_meta(struct xdp_md *ctx, __u64 rx_sw_tai_ns,
					   __u64 rx_hw_tai_ns, __u32 flags)
{
	struct ntpx_meta *meta;
	void *data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct ntpx_meta)))
		return -1;
	/* adjust_meta invalidated every packet pointer: reload and re-check. */
	data = (void *)(long)ctx->data;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > data)
		return -1;
	meta->rx_sw_tai_ns = rx_sw_tai_ns;
	meta->rx_hw_ns = rx_hw_tai_ns;
	meta->flags = flags;
	meta->magic = NTPX_META_MAGIC;
	return 0;
}

#endif
