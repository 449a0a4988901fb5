// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * ntpx XDP program: steers NTP client requests (mode 3) into the AF_XDP
 * socket of the receive queue, drops obvious junk aimed at the NTP port and
 * hands everything else to the kernel untouched.
 *
 * Frame walk: Ethernet, at most two VLAN tags (802.1Q / 802.1ad), IPv4 (any
 * IHL >= 5, fragments passed) or IPv6 (UDP directly after the fixed header),
 * UDP to `ntp_port` and to one of the configured server addresses, then the
 * first byte of the NTP header.
 *
 * Each frame bumps NTPX_SEEN plus exactly one reason counter (see ntpx.h);
 * a redirected frame may bump NTPX_META_FAILED as well.
 *
 * Configuration lives in .rodata and is written by the loader
 * (src/xdp/program.rs) between open and load, so the verifier sees it as
 * constants.
 */
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
#define NTPX_IP_MF 0x2000
#define NTPX_IP_OFFSET 0x1fff
#define NTPX_NTP_HEADER_LEN 48
#define NTPX_MAX_VLANS 2

/* ---- load-time configuration (.rodata, set by the loader) ---- */

/* UDP destination port, host byte order. */
const volatile __u16 ntp_port = 123;
/* Number of valid entries in v4_addrs / v6_addrs. Both 0: any address. */
const volatile __u32 n_v4 = 0;
const volatile __u32 n_v6 = 0;
/* IPv4 server addresses, network byte order. */
const volatile __be32 v4_addrs[NTPX_MAX_ADDRS] = {};
/*
 * IPv6 server addresses: 16 bytes each in network order, stored as four
 * 32-bit words so they compare word by word with the packet's address.
 */
const volatile __u32 v6_addrs[NTPX_MAX_ADDRS][4] = {};

/* ---- maps ---- */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, NTPX_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Not in the uapi headers (struct vlan_hdr is kernel-internal). */
struct ntpx_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
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

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline int v4_is_ours(__be32 daddr)
{
	__u32 i;

	if (n_v4 == 0 && n_v6 == 0)
		return 1;
	for (i = 0; i < NTPX_MAX_ADDRS; i++) {
		if (i >= n_v4)
			break;
		if (v4_addrs[i] == daddr)
			return 1;
	}
	return 0;
}

static __always_inline int v6_is_ours(const __u32 daddr[4])
{
	__u32 i;

	if (n_v4 == 0 && n_v6 == 0)
		return 1;
	for (i = 0; i < NTPX_MAX_ADDRS; i++) {
		if (i >= n_v6)
			break;
		if (v6_addrs[i][0] == daddr[0] && v6_addrs[i][1] == daddr[1] &&
		    v6_addrs[i][2] == daddr[2] && v6_addrs[i][3] == daddr[3])
			return 1;
	}
	return 0;
}

/*
 * Walks the headers and returns the counter that names the frame's fate:
 * a NTPX_PASS_* or NTPX_DROP_* reason, or NTPX_REDIRECTED for a well-formed
 * client request that should go to the AF_XDP socket.
 */
static __always_inline __u32 classify(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct ethhdr *eth;
	struct udphdr *udp;
	__u8 *ntp;
	__u16 proto, ulen;
	int ours;
	int i;

	eth = cursor_take(&c, sizeof(*eth));
	if (!eth)
		return NTPX_PASS_TRUNCATED;
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < NTPX_MAX_VLANS; i++) {
		struct ntpx_vlan_hdr *vlan;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		vlan = cursor_take(&c, sizeof(*vlan));
		if (!vlan)
			return NTPX_PASS_TRUNCATED;
		proto = vlan->encap_proto;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = c.pos;
		__u32 hlen;

		if ((void *)(iph + 1) > c.end)
			return NTPX_PASS_TRUNCATED;
		if (iph->version != 4 || iph->ihl < 5)
			return NTPX_PASS_TRUNCATED;
		hlen = iph->ihl * 4;
		if (!cursor_take(&c, hlen))
			return NTPX_PASS_TRUNCATED;
		if (iph->protocol != NTPX_IPPROTO_UDP)
			return NTPX_PASS_NOT_UDP;
		if (iph->frag_off & bpf_htons(NTPX_IP_MF | NTPX_IP_OFFSET))
			return NTPX_PASS_FRAGMENT;
		ours = v4_is_ours(iph->daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = cursor_take(&c, sizeof(*ip6h));
		__u32 daddr[4];

		if (!ip6h)
			return NTPX_PASS_TRUNCATED;
		if (ip6h->version != 6)
			return NTPX_PASS_TRUNCATED;
		if (ip6h->nexthdr != NTPX_IPPROTO_UDP)
			return NTPX_PASS_NOT_UDP;
		daddr[0] = ip6h->daddr.in6_u.u6_addr32[0];
		daddr[1] = ip6h->daddr.in6_u.u6_addr32[1];
		daddr[2] = ip6h->daddr.in6_u.u6_addr32[2];
		daddr[3] = ip6h->daddr.in6_u.u6_addr32[3];
		ours = v6_is_ours(daddr);
	} else {
		return NTPX_PASS_NOT_IP;
	}

	udp = cursor_take(&c, sizeof(*udp));
	if (!udp)
		return NTPX_PASS_TRUNCATED;
	if (udp->dest != bpf_htons(ntp_port))
		return NTPX_PASS_OTHER_PORT;
	if (!ours)
		return NTPX_PASS_NOT_OURS;
	if (udp->source == 0)
		return NTPX_DROP_SRC_PORT_ZERO;

	/*
	 * The UDP length must cover the header and fit in the frame. Less
	 * than the frame is fine (Ethernet padding).
	 */
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || (void *)udp + ulen > c.end)
		return NTPX_PASS_TRUNCATED;
	if (ulen < sizeof(*udp) + NTPX_NTP_HEADER_LEN)
		return NTPX_DROP_SHORT;
	ntp = cursor_take(&c, NTPX_NTP_HEADER_LEN);
	if (!ntp) /* cannot happen after the length checks; keeps the verifier happy */
		return NTPX_PASS_TRUNCATED;

	/* First byte: LI (2 bits) | VN (3 bits) | mode (3 bits). */
	if ((ntp[0] & 0x7) == 4)
		return NTPX_PASS_SERVER_REPLY;
	if ((ntp[0] & 0x7) != 3)
		return NTPX_DROP_MODE;
	if (((ntp[0] >> 3) & 0x7) == 0 || ((ntp[0] >> 3) & 0x7) > 4)
		return NTPX_DROP_VERSION;
	return NTPX_REDIRECTED;
}

static __always_inline int is_drop(__u32 reason)
{
	return reason == NTPX_DROP_SHORT || reason == NTPX_DROP_MODE ||
	       reason == NTPX_DROP_VERSION || reason == NTPX_DROP_SRC_PORT_ZERO;
}

/* Puts struct ntpx_meta in front of the frame. Returns 0 on success. */
static __always_inline int write_meta(struct xdp_md *ctx, __u64 rx_sw_tai_ns)
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
	meta->rx_hw_ns = 0;
	meta->flags = 0;
	meta->magic = NTPX_META_MAGIC;
	return 0;
}

SEC("xdp")
int ntpx_xdp(struct xdp_md *ctx)
{
	/* The earliest software receive stamp we can get: take it first. */
	__u64 now = bpf_ktime_get_tai_ns();
	__u32 reason, queue;

	count(NTPX_SEEN);
	reason = classify(ctx);
	if (reason != NTPX_REDIRECTED) {
		count(reason);
		return is_drop(reason) ? XDP_DROP : XDP_PASS;
	}

	queue = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		count(NTPX_PASS_NO_SOCKET);
		return XDP_PASS;
	}
	if (write_meta(ctx, now))
		count(NTPX_META_FAILED);
	count(NTPX_REDIRECTED);
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
