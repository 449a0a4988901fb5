/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The load generator's XDP programs (`ntpx load`, `ntpx sink`), loaded by
 * src/load/program.rs. One object, two programs; the loader loads only the
 * one it needs.
 *
 * ntpx_load_rx runs on the generator's (client's) interface and steers the
 * server's replies, i.e. UDP from source port `server_port`, into the
 * AF_XDP socket of the receive queue, with struct ntpx_meta (bpf/ntpx.h) in
 * front of the frame. It does not look at the NTP header or the UDP length:
 * the generator validates replies itself and counts the broken ones.
 *
 * ntpx_sink runs where a server would, and drops every UDP frame to
 * `server_port`, counting packets and bytes: the generator's own ceiling.
 *
 * ntpx_reflect also runs where a server would, and sends every UDP frame to
 * `server_port` straight back (XDP_TX) with Ethernet addresses, IP
 * addresses and UDP ports swapped; nothing else changes, so every checksum
 * stays valid. No NTP logic at all: the link's XDP_TX ceiling, which a
 * server answering in XDP can approach but not pass.
 *
 * Both walk the frame like bpf/ntpx.bpf.c (bpf/frame.h: Ethernet, <= 2 VLAN
 * tags, IPv4 any IHL / no fragments, IPv6 with UDP right after the fixed
 * header) and pass everything else to the kernel. Each frame bumps
 * NTPX_LOAD_SEEN plus exactly one reason counter (see load.h); a redirected
 * frame may bump NTPX_LOAD_META_FAILED as well, a sunk one
 * NTPX_LOAD_SUNK_BYTES by its length.
 */
#include "frame.h"
#include "ntpx.h"
#include "load.h"

/* ---- load-time configuration (.rodata, set by the loader) ---- */

/* The NTP server's UDP port, host byte order. */
const volatile __u16 server_port = 123;

/* ---- maps ---- */

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, NTPX_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_LOAD_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

/* The pass counter for a frame ntpx_parse_udp() did not take to UDP. */
static __always_inline __u32 pass_reason(enum ntpx_parse r)
{
	switch (r) {
	case NTPX_PARSE_NOT_IP:
		return NTPX_LOAD_PASS_NOT_IP;
	case NTPX_PARSE_NOT_UDP:
		return NTPX_LOAD_PASS_NOT_UDP;
	case NTPX_PARSE_FRAGMENT:
	case NTPX_PARSE_FIRST_FRAGMENT:
		return NTPX_LOAD_PASS_FRAGMENT;
	default:
		return NTPX_LOAD_PASS_TRUNCATED;
	}
}

/*
 * Walks the frame to its UDP header. Returns it, or NULL after counting
 * why the frame is not UDP (the caller passes it on).
 */
static __always_inline struct udphdr *udp_or_count(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct ntpx_headers h = {};
	enum ntpx_parse r = ntpx_parse_udp(&c, &h);

	if (r != NTPX_PARSE_UDP) {
		count(pass_reason(r));
		return NULL;
	}
	return h.udp;
}

SEC("xdp")
int ntpx_load_rx(struct xdp_md *ctx)
{
	/* The earliest software receive stamp we can get: take it first. */
	__u64 now = bpf_ktime_get_tai_ns();
	struct udphdr *udp;
	__u32 queue;

	count(NTPX_LOAD_SEEN);
	udp = udp_or_count(ctx);
	if (!udp)
		return XDP_PASS;
	if (udp->source != bpf_htons(server_port)) {
		count(NTPX_LOAD_PASS_OTHER_PORT);
		return XDP_PASS;
	}

	queue = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		count(NTPX_LOAD_NO_SOCKET);
		return XDP_PASS;
	}
	if (ntpx_write_meta(ctx, now, 0, 0))
		count(NTPX_LOAD_META_FAILED);
	count(NTPX_LOAD_REDIRECTED);
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

SEC("xdp")
int ntpx_sink(struct xdp_md *ctx)
{
	struct udphdr *udp;

	count(NTPX_LOAD_SEEN);
	udp = udp_or_count(ctx);
	if (!udp)
		return XDP_PASS;
	if (udp->dest != bpf_htons(server_port)) {
		count(NTPX_LOAD_PASS_OTHER_PORT);
		return XDP_PASS;
	}
	count(NTPX_LOAD_SUNK);
	count_n(NTPX_LOAD_SUNK_BYTES, bpf_xdp_get_buff_len(ctx));
	return XDP_DROP;
}

/* Swaps `n` bytes at `a` and `b` (n a small constant). */
static __always_inline void swap_bytes(void *a, void *b, __u32 n)
{
	__u8 t[16];

	__builtin_memcpy(t, a, n);
	__builtin_memcpy(a, b, n);
	__builtin_memcpy(b, t, n);
}

SEC("xdp")
int ntpx_reflect(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct ntpx_headers h = {};
	struct ethhdr *eth = (void *)(long)ctx->data;
	enum ntpx_parse r;
	__u16 port;

	count(NTPX_LOAD_SEEN);
	r = ntpx_parse_udp(&c, &h);
	if (r != NTPX_PARSE_UDP) {
		count(pass_reason(r));
		return XDP_PASS;
	}
	if (h.udp->dest != bpf_htons(server_port)) {
		count(NTPX_LOAD_PASS_OTHER_PORT);
		return XDP_PASS;
	}
	/* The parser took the Ethernet header: it is there. */
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return XDP_PASS;
	swap_bytes(eth->h_dest, eth->h_source, ETH_ALEN);
	if (h.family == 4 && h.ip4)
		swap_bytes(&h.ip4->saddr, &h.ip4->daddr, 4);
	else if (h.family == 6 && h.ip6)
		swap_bytes(&h.ip6->saddr, &h.ip6->daddr, 16);
	else
		return XDP_PASS;
	port = h.udp->source;
	h.udp->source = h.udp->dest;
	h.udp->dest = port;
	count(NTPX_LOAD_REFLECTED);
	return XDP_TX;
}

/* The kernel's spelling of the SPDX line above: GPL-compatible, as the
 * kernel requires of programs that call kfuncs. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
