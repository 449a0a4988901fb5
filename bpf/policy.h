/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * Policy in XDP: access lists, per-client rate limiting and the global
 * reply ceiling, decided before either datapath answers (a reply here or
 * a redirect to a worker). Included by bpf/ntpx.bpf.c after its
 * configuration and maps. The socket datapath decides the same way in
 * Rust (src/proto/policy/); the rules and their defaults are in
 * README.md, "Defence".
 *
 * A plain request is judged first (judge_plain()) and then meets the
 * policy; a request only a worker can judge meets it first, and a KoD
 * verdict travels to the worker in the metadata. The modes passed to the
 * host's daemon (kernel_modes) meet the access lists and the rate limit
 * too, a KoD verdict being a drop there.
 *
 * Order, for a request to the server that the program did not drop:
 *   0. reverse path (rp_mode, off by default): a source with no route
 *      back (loose), or none through the interface the request came in
 *      on (strict), is dropped (`reverse_path`);
 *   1. access: a source in the deny list, or (when there is an allow
 *      list) not in it, gets `acl_action`: ignored (dropped, `access`)
 *      or a Kiss-o'-Death DENY (still subject to 2 and 3);
 *   2. rate limit, per client (IPv4 address or IPv6 /64, by default):
 *      a token bucket (GCRA); a request over the client's limit is still
 *      answered 1 time in `leak` (so that a spoofed victim is never
 *      cut off), else gets a KoD RATE 1 time in `kod` (at most one
 *      per client per `kod_gap_ns`), else is dropped (`rate_limited`);
 *   3. the global ceiling: at most `ceiling_interval_ns` apart on
 *      average over all CPUs, with a burst; over it, dropped (`ceiling`).
 * The limits (struct ntpx_limits) are read from the `limits` map once per
 * request, so that a reload changes them live.
 */
#ifndef NTPX_POLICY_H
#define NTPX_POLICY_H

/* Compare-and-swap tries on the ceiling's bucket (CEILING_TRIES in
 * src/server/limiter.rs). */
#define NTPX_CEILING_TRIES 4

/* policy() results other than a drop reason (enum ntpx_drop). */
#define NTPX_POLICY_ANSWER -1
#define NTPX_POLICY_KOD_RATE -3
#define NTPX_POLICY_KOD_DENY -4

/* 1 in `n` (n = 0: never, n = 1: always), from a fresh random number. */
static __always_inline int one_in(__u32 n)
{
	if (!n)
		return 0;
	return bpf_get_prandom_u32() % n == 0;
}

/* ---- access lists ---- */

static __always_inline int in_trie(void *map, const struct ntpx_headers *h)
{
	struct ntpx_lpm_key k = {};

	if (h->family == 4) {
		k.prefixlen = 32;
		k.addr[0] = h->ip4->saddr;
	} else {
		k.prefixlen = 128;
		k.addr[0] = h->ip6->saddr.in6_u.u6_addr32[0];
		k.addr[1] = h->ip6->saddr.in6_u.u6_addr32[1];
		k.addr[2] = h->ip6->saddr.in6_u.u6_addr32[2];
		k.addr[3] = h->ip6->saddr.in6_u.u6_addr32[3];
	}
	return bpf_map_lookup_elem(map, &k) != NULL;
}

/* 1 if the source is refused: in the deny list, or outside a non-empty
 * allow list. */
static __always_inline int refused(const struct ntpx_acl *a, const struct ntpx_headers *h)
{
	if (h->family == 4) {
		if (a->deny_v4 && in_trie(&deny_v4, h))
			return 1;
		return a->allow_v4 && !in_trie(&allow_v4, h);
	}
	if (a->deny_v6 && in_trie(&deny_v6, h))
		return 1;
	return a->allow_v6 && !in_trie(&allow_v6, h);
}

/* ---- rate limiting ---- */

/* The client's key: its address cut to the configured prefix. */
static __always_inline void client_key(const struct ntpx_limits *l, const struct ntpx_headers *h,
				       struct ntpx_client_key *k)
{
	if (h->family == 4) {
		k->family = 4;
		k->addr[0] = h->ip4->saddr & l->mask_v4;
	} else {
		k->family = 6;
		k->addr[0] = h->ip6->saddr.in6_u.u6_addr32[0] & l->mask_v6[0];
		k->addr[1] = h->ip6->saddr.in6_u.u6_addr32[1] & l->mask_v6[1];
		k->addr[2] = h->ip6->saddr.in6_u.u6_addr32[2] & l->mask_v6[2];
		k->addr[3] = h->ip6->saddr.in6_u.u6_addr32[3] & l->mask_v6[3];
	}
}

/* Counts a request of an episode in its window (Bucket::count_in_window):
 * a window that closes with twice the first one's count is a client
 * speeding up, counted once per episode. */
static __always_inline void count_in_window(struct ntpx_client *e, __u64 now)
{
	__u32 n = (__u32)e->counts, base = (__u32)(e->counts >> 32);

	if (!e->win_start)
		return;
	if (now < e->win_start || now - e->win_start < NTPX_WINDOW_NS) {
		if (n != 0xffffffffu)
			n++;
		e->counts = ((__u64)base << 32) | n;
		return;
	}
	if (!base) {
		base = n ? n : 1;
	} else if (base != NTPX_SPED_UP && (__u64)n >= 2 * (__u64)base) {
		base = NTPX_SPED_UP;
		count(NTPX_RL_SPEEDUP);
	}
	e->win_start = now ? now : 1;
	e->counts = ((__u64)base << 32) | 1;
}

/*
 * One request from the client in `e` at `now`: 1 if it is within its
 * limit. The mirror of Bucket::admit() in src/proto/policy/limit.rs,
 * field for field. Two CPUs may update one entry at once: the bucket
 * then lets a request or two more through, never fewer.
 */
static __always_inline int admit(const struct ntpx_limits *l, struct ntpx_client *e, __u64 now)
{
	__u64 tat;

	/* Further ahead than its burst: the clock was stepped back. Start
	 * afresh rather than limit the client until the clock catches up. */
	if (e->tat > now + l->burst_ns) {
		e->tat = now;
		e->win_start = 0;
		e->kod_at = now - l->kod_gap_ns;
	}
	e->last = now;
	count_in_window(e, now);
	tat = e->tat > now ? e->tat : now;
	if (tat + l->interval_ns - now <= l->burst_ns) {
		e->tat = tat + l->interval_ns;
		/* The episode, if any, ends once the bucket is half full. */
		if (e->tat - now <= l->burst_ns / 2)
			e->win_start = 0;
		return 1;
	}
	count(NTPX_RL_LIMITED);
	if (!e->win_start) {
		e->win_start = now ? now : 1;
		e->counts = 1;
		count(NTPX_RL_CLIENTS);
	}
	return 0;
}

/* What a limited request gets: NTPX_POLICY_ANSWER (the leak),
 * NTPX_POLICY_KOD_RATE, or the drop reason. `kod_ok`: a KoD can be
 * written (a plain request). */
static __always_inline int limited(const struct ntpx_limits *l, struct ntpx_client *e, __u64 now,
				   int kod_ok)
{
	if (one_in(l->leak)) {
		count(NTPX_RL_LEAKED);
		return NTPX_POLICY_ANSWER;
	}
	if (kod_ok && now - e->kod_at >= l->kod_gap_ns && one_in(l->kod)) {
		e->kod_at = now;
		return NTPX_POLICY_KOD_RATE;
	}
	return NTPX_DROP_RATE_LIMITED;
}

static __always_inline int rate_limit(const struct ntpx_limits *l, const struct ntpx_headers *h,
				      __u64 now, int kod_ok)
{
	struct ntpx_client_key k = {};
	struct ntpx_client *e, fresh = {};

	if (!l->interval_ns)
		return NTPX_POLICY_ANSWER;
	client_key(l, h, &k);
	e = bpf_map_lookup_elem(&clients, &k);
	if (!e) {
		/* A first request: a full bucket, less this one. The kernel
		 * evicts the least recently used client when the table is
		 * full; it never grows. */
		fresh.tat = now + l->interval_ns;
		fresh.last = now;
		fresh.kod_at = now - l->kod_gap_ns;
		count(NTPX_RL_NEW);
		bpf_map_update_elem(&clients, &k, &fresh, BPF_ANY);
		return NTPX_POLICY_ANSWER;
	}
	if (admit(l, e, now))
		return NTPX_POLICY_ANSWER;
	return limited(l, e, now, kod_ok);
}

/* ---- the global ceiling ---- */

static __always_inline int under_ceiling(const struct ntpx_limits *l, __u64 now)
{
	__u32 zero = 0;
	__u64 *tat, old, t;

	if (!l->ceiling_interval_ns)
		return 1;
	tat = bpf_map_lookup_elem(&ceiling, &zero);
	if (!tat)
		return 1;
	/* A few tries; a reply that cannot take its place (other CPUs keep
	 * winning) is not sent. Limits::ceiling_step() in Rust. */
	for (int i = 0; i < NTPX_CEILING_TRIES; i++) {
		old = *tat;
		if (old > now + l->ceiling_burst_ns) /* the clock was stepped back */
			t = now;
		else
			t = old > now ? old : now;
		if (t + l->ceiling_interval_ns - now > l->ceiling_burst_ns)
			return 0;
		if (__sync_val_compare_and_swap(tat, old, t + l->ceiling_interval_ns) == old)
			return 1;
	}
	return 0;
}

/* ---- reverse path ---- */

/* 1 if the route back leaves by `oif`: the interface the request came in
 * on (`iif`), or a device stacked on it. */
static __always_inline int rp_our_way(__u32 oif, __u32 iif)
{
	if (oif == iif)
		return 1;
	for (int i = 0; i < NTPX_RP_UPPERS; i++)
		if (rp_uppers[i] && rp_uppers[i] == oif)
			return 1;
	return 0;
}

/* 1 if the IPv6 address is link-local (fe80::/10). */
static __always_inline int link_local6(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/*
 * The reverse-path check (rp_mode), as the kernel's rp_filter does it for
 * IPv4: the route back to the source, looked up in the host's routing
 * tables and rules (from our address, with the request's TOS, protocol
 * and ports swapped, as the reply would leave) as if from lo, since
 * bpf_fib_lookup() refuses to look up from a device that does not forward
 * (hence the forwarding sysctl on lo that ntpx asks for; README.md,
 * "Defence"). Loose: there is a unicast route back; strict: it leaves
 * through the interface the request came in on, or a device stacked on
 * it. No route, or an unreachable, blackhole or prohibit one: dropped
 * (`reverse_path`). IPv6 link-local sources are on the link by definition
 * and pass. A lookup that fails for any other reason (lo's forwarding
 * turned off since the start), or a strict check of a route the helper
 * cannot follow (an encapsulation), decides nothing: the request goes on,
 * counted `rp_unchecked`.
 */
static __always_inline int reverse_path_ok(struct xdp_md *ctx, const struct ntpx_headers *h)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	if (rp_mode == NTPX_RP_OFF)
		return 1;
	fib.ifindex = 1; /* lo */
	fib.l4_protocol = 17; /* IPPROTO_UDP */
	fib.sport = h->udp->dest;
	fib.dport = h->udp->source;
	if (h->family == 4) {
		fib.family = 2; /* AF_INET */
		fib.tos = h->ip4->tos;
		fib.ipv4_src = h->ip4->daddr;
		fib.ipv4_dst = h->ip4->saddr;
	} else {
		const __u8 *src = h->ip6->saddr.in6_u.u6_addr8;
		const __u8 *dst = h->ip6->daddr.in6_u.u6_addr8;

		if (link_local6(src))
			return 1;
		fib.family = 10; /* AF_INET6 */
		__builtin_memcpy(fib.ipv6_dst, src, sizeof(fib.ipv6_dst));
		/* Our address, for source-specific routes, unless link-local
		 * (the helper would not route from it). */
		if (!link_local6(dst))
			__builtin_memcpy(fib.ipv6_src, dst, sizeof(fib.ipv6_src));
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		return rp_mode != NTPX_RP_STRICT || rp_our_way(fib.ifindex, ctx->ingress_ifindex);
	case BPF_FIB_LKUP_RET_UNSUPP_LWT: /* a route back, through an encapsulation */
		if (rp_mode != NTPX_RP_STRICT)
			return 1;
		count(NTPX_RP_UNCHECKED);
		return 1;
	case BPF_FIB_LKUP_RET_BLACKHOLE:
	case BPF_FIB_LKUP_RET_UNREACHABLE:
	case BPF_FIB_LKUP_RET_PROHIBIT:
	case BPF_FIB_LKUP_RET_NOT_FWDED: /* no route, or not a unicast one */
		return 0;
	default:
		count(NTPX_RP_UNCHECKED);
		return 1;
	}
}

/*
 * The policy for a request from the source in `h`, received at `now`:
 * NTPX_POLICY_ANSWER, NTPX_POLICY_KOD_RATE / _DENY, or a drop reason.
 * `kod_ok`: the request can be answered with a KoD (an NTP request, here
 * or by a worker); for the modes passed to the kernel, a KoD verdict is
 * a drop.
 */
static __always_inline int policy(struct xdp_md *ctx, const struct ntpx_headers *h, __u64 now,
				  int kod_ok)
{
	const struct ntpx_limits *l;
	const struct ntpx_acl *a;
	__u32 zero = 0;
	int deny = 0, v;

	if (!reverse_path_ok(ctx, h))
		return NTPX_DROP_REVERSE_PATH;
	a = bpf_map_lookup_elem(&acl, &zero);
	if (a && refused(a, h)) {
		if (!a->kod || !kod_ok)
			return NTPX_DROP_ACCESS;
		deny = 1;
	}
	l = bpf_map_lookup_elem(&limits, &zero);
	if (!l) /* never: an array's only entry */
		return deny ? NTPX_POLICY_KOD_DENY : NTPX_POLICY_ANSWER;
	v = rate_limit(l, h, now, kod_ok);
	if (v == NTPX_POLICY_ANSWER && deny)
		v = NTPX_POLICY_KOD_DENY;
	if (v >= 0)
		return v;
	if (!under_ceiling(l, now))
		return NTPX_DROP_CEILING;
	return v;
}

/*
 * Rewrites the plain request at `p` into a Kiss-o'-Death with the ASCII
 * `code` ("RATE", "DENY"), as kod() in src/proto/ntp/server.rs: LI 3,
 * the request's version, mode 4, stratum 0, the request's poll, no time
 * given away (origin, receive and transmit all the request's transmit
 * timestamp), 48 bytes. Addresses and checksums as write_reply().
 */
static __always_inline void write_kod(const struct ntpx_headers *h, struct plain *p,
				      __u32 code)
{
	__u8 *ntp = p->ntp;
	__u64 xmt = *(__u64 *)(ntp + 40);
	__u8 version = (ntp[0] >> 3) & 7;

	turn_around(h, p);
	ntp[0] = (3 << 6) | (version << 3) | 4;
	ntp[1] = 0;
	ntp[3] = 0;
	*(__u32 *)(ntp + 4) = 0;
	*(__u32 *)(ntp + 8) = 0;
	put_be32(ntp + 12, code);
	*(__u64 *)(ntp + 16) = 0;
	*(__u64 *)(ntp + 24) = xmt;
	*(__u64 *)(ntp + 32) = xmt;
	/* transmit (40..48) stays the request's */
	fill_udp_checksum(h, p);
}

#endif
