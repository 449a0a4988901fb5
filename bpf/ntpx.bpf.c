/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * ntpx XDP program: answers plain NTP client requests itself (XDP_TX) or
 * steers them into the AF_XDP socket of the receive queue, drops what it
 * judged bad, and hands everything else to the kernel untouched.
 *
 * Frame walk: Ethernet, at most two VLAN tags (802.1Q / 802.1ad), IPv4 (any
 * IHL >= 5) or IPv6 (UDP directly after the fixed header), UDP to
 * `ntp_port` and to one of the configured server addresses, then the first
 * byte of the NTP header. Mode 4 (a reply to the host's own client) goes to
 * the kernel. A plain request (bpf/reply.h) is judged here with every check
 * of the Rust responder: dropped under its reason, or answered here when
 * the server state says so (`reply_in_xdp`), else redirected to the
 * worker. Every other request for the server (IPv4 options, extension
 * fields, fragments, odd lengths) goes to the worker, which judges it with
 * the Rust responder; nothing sent to the server's address and port is the
 * kernel's to answer. The walk up to the UDP header is ntpx_parse_udp() in
 * frame.h, shared with the load generator's programs.
 *
 * Each frame bumps NTPX_SEEN plus exactly one fate counter (see ntpx.h:
 * a pass reason, NTPX_REDIRECTED, NTPX_DROPPED with its reason in `drops`,
 * or NTPX_REPLIED); a redirected frame may bump NTPX_META_FAILED as well,
 * a reply NTPX_REPLIED_PARTIAL and NTPX_REPLIED_STALE.
 *
 * Configuration lives in .rodata and is written by the loader
 * (src/server/program.rs) between open and load, so the verifier sees it as
 * constants; the server state, which changes, is in the `server_state` map.
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
/*
 * 1: judge plain requests here (the loader sets it when it has the
 * responder's whole view: MAC and every own address). 0: send every
 * request to the workers.
 */
const volatile __u8 judge = 0;
/* The interface's MAC address. */
const volatile __u8 our_mac[6] = {};
/* This host's addresses (no client has them) and the network/broadcast
 * addresses of its IPv4 prefixes, network byte order like v4_addrs. */
const volatile __u32 n_own_v4 = 0;
const volatile __be32 own_v4_addrs[NTPX_MAX_OWN] = {};
const volatile __u32 n_own_v6 = 0;
const volatile __u32 own_v6_addrs[NTPX_MAX_OWN][4] = {};
const volatile __u32 n_edges = 0;
const volatile __be32 subnet_edges[NTPX_MAX_OWN] = {};
/* Drop requests from ports 7, 13, 17, 19, 37. */
const volatile __u8 drop_loop_ports = 1;
/* Accept a UDP checksum left in its partial form (veth only). */
const volatile __u8 accept_partial_checksum = 0;
/* Replies carry at least this poll exponent. */
const volatile __s8 min_poll = -128;
/* 1: while the state says unsynchronised, drop instead of answering LI 3. */
const volatile __u8 drop_unsync = 0;
/* A reply whose T3 - T2 would pass this is dropped (NTPX_LATE); 0: none. */
const volatile __u64 max_residence_ns = 0;
/* Interleaved mode (src/proto/ntp/interleave.rs): bits of the mark in T2's
 * low bits (0: off) and its key. */
const volatile __u8 xleave_bits = 0;

const volatile __u64 xleave_k0 = 0;
const volatile __u64 xleave_k1 = 0;
/* Modes (bit m for mode m: only 1, 2 and 6) passed to the host's own
 * daemon instead of being dropped. */
const volatile __u8 kernel_modes = 0;

/* The self-probe's key (src/server/probe.rs): the control thread runs
 * a request through this program with BPF_PROG_TEST_RUN, this key in the
 * metadata in front of it; 0: no probe. No frame from a NIC comes with
 * metadata ahead of this program, and one from a program chained before
 * it would not carry the key, drawn at random for each start. */
const volatile __u64 probe_key = 0;

/* Policy (bpf/policy.h): the access lists and the rate limits are in
 * maps (below), which a reload rewrites. */
/* Reverse-path check of the source (enum ntpx_rp, like the kernel's
 * rp_filter): off, loose or strict. */
const volatile __u8 rp_mode = 0;
/* For strict: the devices stacked on the interface (a bridge it is a port
 * of, a macvlan on it, ...), through which the route back may leave too;
 * 0: none. */
const volatile __u32 rp_uppers[NTPX_RP_UPPERS] = {};

/* The driver's receive stamp (the NIC clock's raw time). */
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym;

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

/* Why judged requests were dropped: enum ntpx_drop. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* The client mix: packets for the server by kind, requests by poll. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} mix SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_POLLS);
	__type(key, __u32);
	__type(value, __u64);
} polls SEC(".maps");

/* RX->TX service time of the replies sent from here (hist_bucket()). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NTPX_HIST_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} service_hist SEC(".maps");

/* Which access lists hold prefixes, and their action (struct ntpx_acl). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ntpx_acl);
} acl SEC(".maps");

/* The rate limits and the ceiling (struct ntpx_limits). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ntpx_limits);
} limits SEC(".maps");

/* The access lists: keys are struct ntpx_lpm_key, values unused. The
 * loader fills them, a reload changes them (nodes are allocated as
 * prefixes come: a large max_entries costs nothing). */
#define ACL_TRIE(name)                                                         \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);                           \
		__uint(max_entries, 1 << 20);                                  \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, struct ntpx_lpm_key);                              \
		__type(value, __u8);                                           \
	} name SEC(".maps")
ACL_TRIE(deny_v4);
ACL_TRIE(deny_v6);
ACL_TRIE(allow_v4);
ACL_TRIE(allow_v6);

/* The rate limiter's clients, least recently used evicted first; sized by
 * the loader (`clients`). The kernel hashes keys with a seed of its own,
 * random for each map, so for each start of the server. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct ntpx_client_key);
	__type(value, struct ntpx_client);
} clients SEC(".maps");

/* Sampled sources for the top talkers (struct ntpx_talker), read by the
 * control thread every 50 ms: 256 KiB hold 10,922 samples, 218,000/s or
 * 14 million requests/s; a full ring drops samples (counted). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} talkers SEC(".maps");

/* The global ceiling's bucket: its theoretical arrival time. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ceiling SEC(".maps");

/*
 * The server state (struct ntpx_state), written by the control thread:
 * two slots, and `state_slot` says which one is current. The writer fills
 * the other slot, then flips the index (one aligned 4-byte store), so the
 * program never reads a half-written state.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct ntpx_state);
} server_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} state_slot SEC(".maps");

static __always_inline void count_in(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);

	if (v)
		*v += 1;
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

#include "reply.h" /* judge_plain(), write_reply(): uses the configuration above */
#include "policy.h" /* policy(), write_kod() */

/* classify()'s verdict for a plain request (not a counter). */
#define NTPX_PLAIN (NTPX_COUNTERS + 1)

/*
 * Walks the headers into `h` and returns the counter that names the frame's
 * fate: a NTPX_PASS_* reason, NTPX_REDIRECTED for a request for a worker,
 * or NTPX_PLAIN for a plain request (bpf/reply.h), to be judged here.
 */
static __always_inline __u32 classify(struct xdp_md *ctx, struct ntpx_headers *h,
				      struct plain *plain)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct udphdr *udp;
	__u8 *ntp;
	__u16 ulen;
	int ours, fragment = 0;

	switch (ntpx_parse_udp(&c, h)) {
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
	udp = h->udp;
	if (udp->dest != bpf_htons(ntp_port))
		return fragment ? NTPX_PASS_FRAGMENT : NTPX_PASS_OTHER_PORT;
	if (h->family == 4) {
		ours = v4_is_ours(h->ip4->daddr);
	} else {
		__u32 daddr[4];

		daddr[0] = h->ip6->daddr.in6_u.u6_addr32[0];
		daddr[1] = h->ip6->daddr.in6_u.u6_addr32[1];
		daddr[2] = h->ip6->daddr.in6_u.u6_addr32[2];
		daddr[3] = h->ip6->daddr.in6_u.u6_addr32[3];
		ours = v6_is_ours(daddr);
	}
	if (!ours)
		return fragment ? NTPX_PASS_FRAGMENT : NTPX_PASS_NOT_OURS;
	/*
	 * From here on the frame is for the server: the kernel never gets it
	 * (it might answer it, or reassemble a fragment for the host's own
	 * daemon), except a mode 4 reply. A first fragment, a UDP length
	 * that does not fit, anything but a plain request: the worker judges
	 * it with the Rust responder and counts it under its reason.
	 */
	if (fragment)
		return NTPX_REDIRECTED;
	ulen = bpf_ntohs(udp->len);
	if (ulen < sizeof(*udp) + NTPX_NTP_HEADER_LEN || (void *)udp + ulen > c.end)
		return NTPX_REDIRECTED;
	ntp = cursor_take(&c, NTPX_NTP_HEADER_LEN);
	if (!ntp) /* cannot happen after the length checks; keeps the verifier happy */
		return NTPX_REDIRECTED;
	/* First byte: LI (2 bits) | VN (3 bits) | mode (3 bits). */
	if ((ntp[0] & 0x7) == 4)
		return NTPX_PASS_SERVER_REPLY;
	/* The client mix, of everything for the server with a header (the
	 * socket datapath counts the same way). */
	count_in(&mix, (h->family == 6 ? 64 : 0) | (ntp[0] & 0x3f));
	if ((ntp[0] & 0x7) == 3) {
		__s32 poll = (__s8)ntp[2];

		if (poll < NTPX_MIN_POLL)
			poll = NTPX_MIN_POLL;
		if (poll > NTPX_MIN_POLL + NTPX_POLLS - 1)
			poll = NTPX_MIN_POLL + NTPX_POLLS - 1;
		count_in(&polls, (__u32)(poll - NTPX_MIN_POLL));
	}
	if (kernel_modes & (1u << (ntp[0] & 0x7)))
		return NTPX_PASS_KERNEL_MODE;
	if (judge && find_plain(ctx, h, plain))
		return NTPX_PLAIN;
	return NTPX_REDIRECTED;
}

/* The request's hardware receive stamp on CLOCK_TAI, or 0 (then the
 * software stamp serves, and the reason is counted). `hw` is a constant of
 * each program variant (see the end of this file): 0 removes the kfunc
 * call at compile time, which the verifier refuses outside a device-bound
 * program. */
static __always_inline __u64 hw_rx_tai(struct xdp_md *ctx, const struct ntpx_state *st,
				       __u64 now, const int hw)
{
	__u64 raw = 0, tai;

	if (!hw)
		return 0;
	if (bpf_xdp_metadata_rx_timestamp(ctx, &raw) || !raw) {
		count(NTPX_HW_RX_MISSING);
		return 0;
	}
	tai = st ? phc_to_tai(st, raw) : 0;
	/* A mapped stamp further than this from the software one means a
	 * mapping gone wrong (a PHC stepped since it was fitted): unused. */
	if (tai && (tai > now ? tai - now : now - tai) > NTPX_HW_SW_MAX_NS)
		tai = 0;
	if (!tai)
		count(NTPX_HW_RX_UNMAPPED);
	return tai;
}

static __always_inline int drop(__u32 reason)
{
	count(NTPX_DROPPED);
	count_in(&drops, reason);
	return XDP_DROP;
}

/* The drop reason of a KoD verdict that cannot be carried out. */
static __always_inline __u32 kod_reason(__u32 flags)
{
	return flags == NTPX_META_KOD_RATE ? NTPX_DROP_RATE_LIMITED : NTPX_DROP_ACCESS;
}

/* Hands the request to the AF_XDP socket of its queue, with its receive
 * stamps and `flags` (NTPX_META_KOD_*) in front; to the kernel if the
 * queue has none. A KoD verdict that cannot reach a worker (no socket, no
 * metadata) is a drop: the host's daemon, or a worker without the flag,
 * would answer with the time. */
static __always_inline int redirect(struct xdp_md *ctx, __u64 now, const struct ntpx_state *st,
				    const int hw, __u32 flags)
{
	__u32 queue = ctx->rx_queue_index;

	if (!bpf_map_lookup_elem(&xsks, &queue)) {
		if (flags)
			return drop(kod_reason(flags));
		count(NTPX_PASS_NO_SOCKET);
		return XDP_PASS;
	}
	if (ntpx_write_meta(ctx, now, hw_rx_tai(ctx, st, now, hw), flags)) {
		count(NTPX_META_FAILED);
		if (flags)
			return drop(kod_reason(flags));
	}
	count(NTPX_REDIRECTED);
	return bpf_redirect_map(&xsks, queue, XDP_PASS);
}

/* Cuts Ethernet padding behind a request whose reply ends with its NTP
 * header; 0 if it could not (then it was dropped and counted). Every
 * packet pointer is invalid after this. */
static __always_inline int trim(struct xdp_md *ctx, const struct plain *plain)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	int by = (int)plain->reply_len - (int)(end - data);

	if (by < 0 && bpf_xdp_adjust_tail(ctx, by)) {
		count(NTPX_TRIM_FAILED);
		drop(NTPX_DROP_TRUNCATED);
		return 0;
	}
	return 1;
}

/* Answers the plain request at `plain` (judged good) in place. */
static __always_inline int reply(struct xdp_md *ctx, struct ntpx_headers *h,
				 struct plain *plain, const struct ntpx_state *st,
				 __u64 now, int partial, int hw_stamp)
{
	__u64 t3, age;
	int stale = state_stale(st, now, &age);

	if (drop_unsync && (stale || st->leap == 3))
		return drop(NTPX_DROP_UNSYNCHRONIZED);
	t3 = write_reply(h, plain, st, now, stale, age);
	/* Wrong time is worse than none, as in the workers. */
	if (max_residence_ns && t3 - now > max_residence_ns) {
		count(NTPX_LATE);
		return XDP_DROP;
	}
	if (!trim(ctx, plain))
		return XDP_DROP;
	count(NTPX_REPLIED);
	if (hw_stamp)
		count(NTPX_REPLIED_HW);
	if (partial)
		count(NTPX_REPLIED_PARTIAL);
	if (stale)
		count(NTPX_REPLIED_STALE);
	count_in(&service_hist, hist_bucket(t3 - now));
	return XDP_TX;
}

/*
 * In generic mode a request with a partial checksum comes in an skb
 * marked CHECKSUM_PARTIAL, and XDP_TX sends that same skb, mark
 * included: whoever finishes the checksum on the way out (a NIC the
 * peer forwards to) would spoil the full one written here. The workers'
 * copy-mode transmit builds a fresh skb. 1: answer here.
 */
static __always_inline int in_xdp(const struct ntpx_state *st, int partial)
{
	return st && st->reply_in_xdp && !(partial && st->partial_to_workers);
}

/* The metadata flags of a policy verdict. */
static __always_inline __u32 kod_flags(int verdict)
{
	if (verdict == NTPX_POLICY_KOD_RATE)
		return NTPX_META_KOD_RATE;
	if (verdict == NTPX_POLICY_KOD_DENY)
		return NTPX_META_KOD_DENY;
	return 0;
}

/* A Kiss-o'-Death for the plain request at `plain`: written here, or by
 * the worker where replies do not leave from here. */
static __always_inline int kod(struct xdp_md *ctx, struct ntpx_headers *h, struct plain *plain,
			       const struct ntpx_state *st, __u64 now, int partial,
			       const int hw_rx, int rate)
{
	if (!in_xdp(st, partial))
		return redirect(ctx, now, st, hw_rx,
				rate ? NTPX_META_KOD_RATE : NTPX_META_KOD_DENY);
	write_kod(h, plain, rate ? 0x52415445u /* "RATE" */ : 0x44454e59u /* "DENY" */);
	if (!trim(ctx, plain))
		return XDP_DROP;
	count(rate ? NTPX_KOD_RATE : NTPX_KOD_DENY);
	return XDP_TX;
}

/* 1 in NTPX_TALKER_SAMPLE requests: its source's prefix into the ring.
 * Which ones: the top bits of the receive stamp's nanoseconds, mixed (a
 * sender cannot time its packets to the nanosecond; no helper call per
 * request). The ring is polled: no wakeup. */
static __always_inline void sample_talker(const struct ntpx_headers *h, __u64 now)
{
	struct ntpx_talker t = {};

	if ((now * 0x9e3779b97f4a7c15ull) >> 58 >= 64 / NTPX_TALKER_SAMPLE)
		return;
	if (h->family == 4) {
		t.family = 4;
		t.addr[0] = h->ip4->saddr & bpf_htonl(0xffffff00);
	} else {
		t.family = 6;
		t.addr[0] = h->ip6->saddr.in6_u.u6_addr32[0];
		t.addr[1] = h->ip6->saddr.in6_u.u6_addr32[1] & bpf_htonl(0xffff0000);
	}
	if (bpf_ringbuf_output(&talkers, &t, sizeof(t), BPF_RB_NO_WAKEUP))
		count(NTPX_TALKER_LOST);
}

/* 1 for the self-probe's request (probe_key in the metadata). */
static __always_inline int is_probe(struct xdp_md *ctx)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;

	if (!probe_key || meta + sizeof(__u64) > data)
		return 0;
	return *(__u64 *)meta == probe_key;
}

/* The program; `hw_rx` (a constant) says whether it asks the driver for
 * hardware receive stamps. */
static __always_inline int ntpx_main(struct xdp_md *ctx, const int hw_rx)
{
	/* The earliest software receive stamp we can get: take it first. */
	__u64 now = bpf_ktime_get_tai_ns();
	struct ntpx_headers h = {};
	struct plain plain = {};
	const struct ntpx_state *st = NULL;
	__u32 zero = 0, fate, *slot;
	int verdict, partial = 0;
	__u64 hw;

	count(NTPX_SEEN);
	fate = classify(ctx, &h, &plain);
	if (fate != NTPX_PLAIN && fate != NTPX_REDIRECTED) {
		/* The modes left to the host's daemon pass the access lists and
		 * the rate limit first. */
		if (fate == NTPX_PASS_KERNEL_MODE) {
			verdict = policy(ctx, &h, now, 0);
			if (verdict >= 0)
				return drop((__u32)verdict);
		}
		count(fate);
		return XDP_PASS;
	}
	sample_talker(&h, now);
	slot = bpf_map_lookup_elem(&state_slot, &zero);
	if (slot) {
		__u32 i = *slot & 1;

		st = bpf_map_lookup_elem(&server_state, &i);
	}
	/* Out of service, saying nothing (ntpx drain on --mode stop). */
	if (st && st->draining)
		return drop(NTPX_DROP_DRAINING);
	if (fate == NTPX_REDIRECTED) {
		/* The workers judge it; the policy applies first (before the
		 * checks, which only the worker can make), and a KoD verdict
		 * goes with it for the worker to carry out. */
		verdict = policy(ctx, &h, now, 1);
		if (verdict >= 0)
			return drop((__u32)verdict);
		return redirect(ctx, now, st, hw_rx, kod_flags(verdict));
	}
	verdict = judge_plain(&h, &plain, &partial);
	if (verdict >= 0)
		return drop((__u32)verdict);
	/* The self-probe: answered here from the live state whatever path
	 * the clients' requests take, past the policy (it is no client's).
	 * Counted as any request. */
	if (st && is_probe(ctx))
		return reply(ctx, &h, &plain, st, now, partial, 0);
	verdict = policy(ctx, &h, now, 1);
	if (verdict >= 0)
		return drop((__u32)verdict);
	if (verdict != NTPX_POLICY_ANSWER)
		return kod(ctx, &h, &plain, st, now, partial, hw_rx,
			   verdict == NTPX_POLICY_KOD_RATE);
	/* An interleaved client echoing one of our marked T2s: the workers
	 * hold what it is owed. */
	if (xleave_request(&h, &plain)) {
		count(NTPX_INTERLEAVED);
		return redirect(ctx, now, st, hw_rx, 0);
	}
	if (!in_xdp(st, partial))
		return redirect(ctx, now, st, hw_rx, 0);
	/* The NIC's stamp, where there is one, is the better T2. */
	hw = hw_rx_tai(ctx, st, now, hw_rx);
	return reply(ctx, &h, &plain, st, hw ? hw : now, partial, hw != 0);
}

/* The two variants, from one source: the loader loads one of them. */
SEC("xdp")
int ntpx_xdp(struct xdp_md *ctx)
{
	return ntpx_main(ctx, 0);
}

/* Device-bound (BPF_F_XDP_DEV_BOUND_ONLY, loaded for one NIC whose driver
 * offers receive stamps): the same program, asking for them. It cannot
 * run in generic mode nor under BPF_PROG_TEST_RUN, so the tests run the
 * unbound variant above, which differs only where hw_rx is tested. */
SEC("xdp")
int ntpx_xdp_hw(struct xdp_md *ctx)
{
	return ntpx_main(ctx, 1);
}

/* The kernel's spelling of the SPDX line above: GPL-compatible, as the
 * kernel requires of programs that call kfuncs. */
char LICENSE[] SEC("license") = "Dual MIT/GPL";
