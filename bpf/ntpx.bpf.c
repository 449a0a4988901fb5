/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * ntpx XDP program: steers NTP client requests (mode 3) into the AF_XDP
 * socket of the receive queue, drops obvious junk aimed at the NTP port and
 * hands everything else to the kernel untouched.
 *
 * Frame walk: Ethernet, at most two VLAN tags (802.1Q / 802.1ad), IPv4 (any
 * IHL >= 5) or IPv6 (UDP directly after the fixed header), UDP to
 * `ntp_port` and to one of the configured server addresses, then the first
 * byte of the NTP header. A request whose UDP length disagrees with the
 * frame goes to the worker, which drops it under its reason. The first
 * fragment of a request is dropped, so that the kernel never reassembles
 * it (the host's own daemon might answer it); later fragments carry no
 * port, and without their first one the kernel discards them. The walk
 * up to the UDP header is ntpx_parse_udp() in frame.h, shared with the
 * load generator's programs.
 *
 * Each frame bumps NTPX_SEEN plus exactly one reason counter (see ntpx.h);
 * a redirected frame may bump NTPX_META_FAILED as well.
 *
 * Configuration lives in .rodata and is written by the loader
 * (src/server/program.rs) between open and load, so the verifier sees it as
 * constants.
 */
#include "frame.h" /* header walk and metadata write, shared with bpf/load.bpf.c */
#include "ntpx.h"

#define NTPX_NTP_HEADER_LEN 48

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
	struct ntpx_headers h = {};
	struct udphdr *udp;
	__u8 *ntp;
	__u16 ulen;
	int ours, fragment = 0;

	switch (ntpx_parse_udp(&c, &h)) {
	case NTPX_PARSE_UDP:
		break;
	case NTPX_PARSE_FIRST_FRAGMENT:
		fragment = 1;
		break;
	case NTPX_PARSE_NOT_IP:
		return NTPX_PASS_NOT_IP;
	case NTPX_PARSE_NOT_UDP:
		return NTPX_PASS_NOT_UDP;
	case NTPX_PARSE_FRAGMENT:
		return NTPX_PASS_FRAGMENT;
	default:
		return NTPX_PASS_TRUNCATED;
	}
	udp = h.udp;
	if (udp->dest != bpf_htons(ntp_port))
		return fragment ? NTPX_PASS_FRAGMENT : NTPX_PASS_OTHER_PORT;
	if (h.family == 4) {
		ours = v4_is_ours(h.ip4->daddr);
	} else {
		__u32 daddr[4];

		daddr[0] = h.ip6->daddr.in6_u.u6_addr32[0];
		daddr[1] = h.ip6->daddr.in6_u.u6_addr32[1];
		daddr[2] = h.ip6->daddr.in6_u.u6_addr32[2];
		daddr[3] = h.ip6->daddr.in6_u.u6_addr32[3];
		ours = v6_is_ours(daddr);
	}
	if (!ours)
		return fragment ? NTPX_PASS_FRAGMENT : NTPX_PASS_NOT_OURS;
	if (fragment)
		return NTPX_DROP_FRAGMENT;
	if (udp->source == 0)
		return NTPX_DROP_SRC_PORT_ZERO;

	/*
	 * A UDP length that does not fit the frame, or is shorter than the
	 * UDP header, is the worker's to judge: it drops and counts such
	 * requests (bad_udp_length, bad_ip_length). Passing them to the
	 * kernel would let it answer some (an IPv6 UDP length of 0 means
	 * "up to the end of the packet" there), and nothing sent to the
	 * server's address and port is for anyone else to answer. Shorter
	 * than the frame is fine here (Ethernet padding).
	 */
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) || (void *)udp + ulen > c.end)
		return NTPX_REDIRECTED;
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
	       reason == NTPX_DROP_VERSION || reason == NTPX_DROP_SRC_PORT_ZERO ||
	       reason == NTPX_DROP_FRAGMENT;
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
	if (ntpx_write_meta(ctx, now))
		count(NTPX_META_FAILED);
	count(NTPX_REDIRECTED);
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

/* The kernel's spelling of the SPDX line above: GPL-compatible, as the
 * kernel requires of programs that call kfuncs. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
