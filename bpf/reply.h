/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * Replies in XDP: the judgement of a plain client request and its reply,
 * written in place for XDP_TX. Included by bpf/ntpx.bpf.c after its
 * configuration and maps, which it uses.
 *
 * "Plain" is the request that almost every client sends: IPv4 without
 * options (IHL 5) or IPv6 with UDP right after the fixed header, not a
 * fragment, and a UDP datagram of exactly 56 bytes (the 48-byte NTP header,
 * no extension fields, no MAC) that the IP length agrees with. For those,
 * judge_plain() makes every check of the Rust responder
 * (src/proto/respond.rs and src/proto/ntp/server.rs), in the same order and
 * under the same reasons, and write_reply() writes the same bytes: the
 * differential test (tests/xdp_reply.rs) holds the two sides to that.
 * Anything else for the server goes to an AF_XDP worker, which runs the
 * Rust responder itself.
 *
 * The NTP header's 4- and 8-byte fields sit at unaligned offsets (42 +
 * VLAN tags): loaded and stored as they are, which the verifier allows
 * where the CPU handles unaligned access well (x86-64, arm64). An
 * architecture without that runs the verifier in strict-alignment mode
 * and refuses the program: ntpx then fails to start, it never misbehaves.
 */
#ifndef NTPX_REPLY_H
#define NTPX_REPLY_H

#define NTPX_NSEC 1000000000ull
#define NTPX_UNIX_TO_NTP 2208988800ull /* seconds from 1900 to 1970 */
#define NTPX_UDP_LEN 56                /* UDP header + 48 bytes of NTP */
#define NTPX_REPLY_TTL 64
#define NTPX_DISP_PPM 15               /* root dispersion growth, RFC 5905 PHI */

/* judge_plain() results that are not a drop reason (enum ntpx_drop). */
#define NTPX_ANSWER -1
#define NTPX_TO_WORKER -2

/* ---- Internet checksum (RFC 1071) ----
 * Words are summed as they lie in memory (little-endian loads): the one's
 * complement sum does not care about byte order as long as the result is
 * stored back the same way, nor about the word size once folded.
 */

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Sum of the 32-bit words at p (n words, n a constant). */
#define CSUM_WORDS(sum, p, n)                                                  \
	do {                                                                   \
		_Pragma("unroll") for (int _i = 0; _i < (n); _i++)             \
			(sum) += ((const __u32 *)(p))[_i];                     \
	} while (0)

/* The pseudo-header of a 56-byte UDP datagram between two addresses of
 * `words` 32-bit words each (1 for IPv4, 4 for IPv6). */
static __always_inline __u64 pseudo_sum(const void *src, const void *dst, int words)
{
	__u64 s = bpf_htons(NTPX_IPPROTO_UDP) + bpf_htons(NTPX_UDP_LEN);

	if (words == 1) {
		CSUM_WORDS(s, src, 1);
		CSUM_WORDS(s, dst, 1);
	} else {
		CSUM_WORDS(s, src, 4);
		CSUM_WORDS(s, dst, 4);
	}
	return s;
}

/* ---- the plain request ---- */

struct plain {
	struct ethhdr *eth;
	struct udphdr *udp;
	__u8 *ntp;       /* the 48-byte NTP header */
	__u32 reply_len; /* the reply frame's length: up to the end of the NTP header */
};

/*
 * Fills `p` and returns 1 if the request for the server at `h` is plain
 * (see the top of this file); returns 0 if it is not, for a worker.
 */
static __always_inline int find_plain(struct xdp_md *ctx, const struct ntpx_headers *h,
				      struct plain *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct udphdr *udp = h->udp;
	__u8 *ntp = (__u8 *)(udp + 1);

	if ((void *)(ntp + NTPX_NTP_HEADER_LEN) > end)
		return 0;
	if (udp->len != bpf_htons(NTPX_UDP_LEN))
		return 0;
	if (h->family == 4) {
		struct iphdr *ip = h->ip4;

		if (ip->ihl != 5 || ip->tot_len != bpf_htons(20 + NTPX_UDP_LEN) ||
		    (ip->frag_off & bpf_htons(NTPX_IP_MF | NTPX_IP_OFFSET)))
			return 0;
	} else {
		struct ipv6hdr *ip6 = h->ip6;

		if (ip6->nexthdr != NTPX_IPPROTO_UDP || ip6->payload_len != bpf_htons(NTPX_UDP_LEN))
			return 0;
	}
	p->eth = data;
	if ((void *)(p->eth + 1) > end)
		return 0;
	p->udp = udp;
	p->ntp = ntp;
	p->reply_len = (void *)(ntp + NTPX_NTP_HEADER_LEN) - data;
	return 1;
}

static __always_inline int mac_is_group(const __u8 *mac)
{
	return mac[0] & 1;
}

static __always_inline int bad_source_v4(__be32 saddr)
{
	__u8 first = ((const __u8 *)&saddr)[0];

	return first == 0 || first == 127 || first >= 224;
}

static __always_inline int bad_source_v6(const struct in6_addr *a)
{
	__u32 w0 = a->in6_u.u6_addr32[0], w1 = a->in6_u.u6_addr32[1];
	__u32 w2 = a->in6_u.u6_addr32[2], w3 = a->in6_u.u6_addr32[3];

	if (a->in6_u.u6_addr8[0] == 0xff) /* multicast */
		return 1;
	if (w0 == 0 && w1 == 0) {
		if (w2 == 0 && (w3 == 0 || w3 == bpf_htonl(1))) /* :: and ::1 */
			return 1;
		if (w2 == bpf_htonl(0xffff)) /* IPv4-mapped */
			return 1;
	}
	return 0;
}

static __always_inline int in_v4_list(__be32 a, const volatile __be32 *list, __u32 n)
{
	for (__u32 i = 0; i < NTPX_MAX_OWN; i++) {
		if (i >= n)
			break;
		if (list[i] == a)
			return 1;
	}
	return 0;
}

static __always_inline int own_v6(const struct in6_addr *a)
{
	for (__u32 i = 0; i < NTPX_MAX_OWN; i++) {
		if (i >= n_own_v6)
			break;
		if (own_v6_addrs[i][0] == a->in6_u.u6_addr32[0] &&
		    own_v6_addrs[i][1] == a->in6_u.u6_addr32[1] &&
		    own_v6_addrs[i][2] == a->in6_u.u6_addr32[2] &&
		    own_v6_addrs[i][3] == a->in6_u.u6_addr32[3])
			return 1;
	}
	return 0;
}

static __always_inline int is_loop_port(__be16 port)
{
	return port == bpf_htons(7) || port == bpf_htons(13) || port == bpf_htons(17) ||
	       port == bpf_htons(19) || port == bpf_htons(37);
}

/*
 * The Rust responder's checks on a plain request, in its order. Returns
 * NTPX_ANSWER, or the enum ntpx_drop reason. Sets *partial when the UDP
 * checksum was accepted in its partial form.
 */
static __always_inline int judge_plain(const struct ntpx_headers *h, const struct plain *p,
				       int *partial)
{
	const __u8 *dst = p->eth->h_dest, *src = p->eth->h_source;
	struct udphdr *udp = p->udp;
	__u64 pseudo, sum = 0;
	__u16 field;

	if (mac_is_group(dst))
		return NTPX_DROP_NON_UNICAST;
	if (dst[0] != our_mac[0] || dst[1] != our_mac[1] || dst[2] != our_mac[2] ||
	    dst[3] != our_mac[3] || dst[4] != our_mac[4] || dst[5] != our_mac[5])
		return NTPX_DROP_OTHER_HOST;
	if (mac_is_group(src) ||
	    (src[0] | src[1] | src[2] | src[3] | src[4] | src[5]) == 0)
		return NTPX_DROP_BAD_SRC_MAC;

	if (h->family == 4) {
		struct iphdr *ip = h->ip4;

		CSUM_WORDS(sum, ip, 5);
		if (csum_fold(sum) != 0xffff)
			return NTPX_DROP_BAD_IP_CHECKSUM;
		if (bad_source_v4(ip->saddr))
			return NTPX_DROP_BAD_SOURCE;
		if (in_v4_list(ip->saddr, own_v4_addrs, n_own_v4))
			return NTPX_DROP_OWN_SOURCE;
		if (in_v4_list(ip->saddr, subnet_edges, n_edges))
			return NTPX_DROP_DIRECTED_BROADCAST;
		pseudo = pseudo_sum(&ip->saddr, &ip->daddr, 1);
	} else {
		struct ipv6hdr *ip6 = h->ip6;

		if (bad_source_v6(&ip6->saddr))
			return NTPX_DROP_BAD_SOURCE;
		if (own_v6(&ip6->saddr))
			return NTPX_DROP_OWN_SOURCE;
		pseudo = pseudo_sum(&ip6->saddr, &ip6->daddr, 4);
	}

	if (udp->source == 0)
		return NTPX_DROP_SRC_PORT_ZERO;
	if (drop_loop_ports && is_loop_port(udp->source))
		return NTPX_DROP_LOOP_PORT;
	field = udp->check;
	*partial = 0;
	if (field == 0) {
		/* No checksum: allowed over IPv4 only (RFC 8200 section 8.1). */
		if (h->family == 6)
			return NTPX_DROP_BAD_UDP_CHECKSUM;
	} else {
		sum = pseudo;
		CSUM_WORDS(sum, udp, NTPX_UDP_LEN / 4);
		if (csum_fold(sum) != 0xffff) {
			/* The partial form: the field holds the folded
			 * pseudo-header sum only (a veth peer's offload). */
			if (!accept_partial_checksum || field != csum_fold(pseudo))
				return NTPX_DROP_BAD_UDP_CHECKSUM;
			*partial = 1;
		}
	}

	/* LI (2 bits) | VN (3 bits) | mode (3 bits); mode 4 was passed on. */
	if (((p->ntp[0] >> 3) & 7) == 0 || ((p->ntp[0] >> 3) & 7) > 4)
		return NTPX_DROP_NTP_VERSION;
	if ((p->ntp[0] & 7) != 3)
		return NTPX_DROP_NTP_MODE;
	return NTPX_ANSWER;
}

/* ---- time ---- */

/*
 * 2^32 / 10^9 in 2^-29 fixed point (2305843009.21...): an NTP fraction
 * from nanoseconds with a multiply and a shift. BPF has no multiply-high,
 * so a division by a constant stays a real division (tens of cycles in the
 * JIT); this is exact to within one unit of 2^-32 s for any n < 2^32.
 */
#define NTPX_FRAC_PER_NS_Q29 2305843009ull

static __always_inline __u64 frac_from_ns(__u64 n)
{
	return (n * NTPX_FRAC_PER_NS_Q29) >> 29;
}

/* A CLOCK_TAI reading as an NTP timestamp (UTC), like the Rust side's
 * NtpTimestamp::from_unix_nanos(tai_to_unix_nanos(..)) but for the lowest
 * bit of the fraction. One division. */
static __always_inline __u64 ntp_from_tai(__u64 tai_ns, __s64 tai_offset_s)
{
	__u64 unix_ns = tai_ns - (__u64)(tai_offset_s * (__s64)NTPX_NSEC);
	__u64 secs = unix_ns / NTPX_NSEC;
	__u64 sub = unix_ns - secs * NTPX_NSEC;

	return ((secs + NTPX_UNIX_TO_NTP) << 32) + frac_from_ns(sub);
}

/* `base` (an NTP timestamp read at `base_tai`) moved on to `tai`: no
 * division while the two are less than 2^32 ns (4.3 s) apart. */
static __always_inline __u64 ntp_after(__u64 base, __u64 base_tai, __u64 tai, __s64 tai_offset_s)
{
	__u64 d = tai - base_tai;

	if (tai >= base_tai && d < (1ull << 32))
		return base + frac_from_ns(d);
	return ntp_from_tai(tai, tai_offset_s);
}

/* Random bits below the precision, as the Rust side's fuzz(). */
static __always_inline __u64 fuzz(__u64 ts, __s8 precision)
{
	__s32 bits = 32 + precision;
	__u64 mask;

	if (bits <= 0)
		return ts;
	mask = bits >= 32 ? 0xffffffffull : (1ull << bits) - 1;
	return (ts & ~mask) | ((__u64)bpf_get_prandom_u32() & mask);
}

/* ---- interleaved mode: the mark in T2 (src/proto/ntp/interleave.rs) ---- */

/* The client's address folded to 64 bits: IPv4 as its value, IPv6 as the
 * XOR of its halves (interleave::fold). */
static __always_inline __u64 client_fold(const struct ntpx_headers *h)
{
	if (h->family == 4)
		return bpf_ntohl(h->ip4->saddr);
	return bpf_be64_to_cpu(*(__u64 *)&h->ip6->saddr.s6_addr[0]) ^
	       bpf_be64_to_cpu(*(__u64 *)&h->ip6->saddr.s6_addr[8]);
}

/* Marker::value(): the flag bit and the keyed hash above it. */
static __always_inline __u64 xleave_value(__u64 above, __u64 client)
{
	__u64 x = (above ^ xleave_k0) * 0x9e3779b97f4a7c15ull;

	x ^= x >> 29;
	x = (x ^ client ^ xleave_k1) * 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return ((x << 1) | 1) & ((1ull << xleave_bits) - 1);
}

/* Marker::mark(): T2 with the mark for `client` in its low bits. */
static __always_inline __u64 xleave_mark(__u64 t2, __u64 client)
{
	__u64 above;

	if (!xleave_bits)
		return t2;
	above = t2 >> xleave_bits;
	return (above << xleave_bits) | xleave_value(above, client);
}

/* Request::may_be_interleaved() and Marker::is_marked() on the origin:
 * 1 for a request from an interleaved client. */
static __always_inline int xleave_request(const struct ntpx_headers *h, const struct plain *p)
{
	__u64 origin, receive, transmit;

	if (!xleave_bits || ((p->ntp[0] >> 3) & 7) != 4)
		return 0;
	origin = bpf_be64_to_cpu(*(__u64 *)(p->ntp + 24));
	receive = *(__u64 *)(p->ntp + 32);
	transmit = *(__u64 *)(p->ntp + 40);
	if (!(origin & 1) || receive == transmit)
		return 0;
	return (origin & ((1ull << xleave_bits) - 1)) ==
	       xleave_value(origin >> xleave_bits, client_fold(h));
}

/* a later than b, in NTP's wrapping arithmetic */
static __always_inline int ts_after(__u64 a, __u64 b)
{
	return (__s64)(a - b) > 0;
}

/* Root dispersion grown at 15 ppm over `age_ns`, in NTP short format. */
static __always_inline __u32 aged_dispersion(__u32 disp, __u64 age_ns)
{
	__u64 grown;

	/* Young (the usual case): less than one unit of 2^-16 s, no division. */
	if (age_ns < 1000000000ull)
		return disp;
	/* age_ns is bounded by max_age_ns (at most an hour, by the loader),
	 * so neither product overflows. */
	grown = age_ns * NTPX_DISP_PPM / 1000000 * 65536 / NTPX_NSEC;
	__u64 sum = disp + grown;

	return sum > 0xffffffffull ? 0xffffffffu : (__u32)sum;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	*(__u32 *)p = bpf_htonl(v);
}

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	*(__u64 *)p = bpf_cpu_to_be64(v);
}

/* ---- the reply ---- */

/* The PHC -> CLOCK_TAI mapping (PhcMap::to_tai() in
 * src/sys/clock/phc.rs): 0 if there is none or `phc` is more than 4 s
 * from its reference (a stale mapping). */
#define NTPX_PHC_MAX_DELTA_NS 4000000000ll
/* A hardware stamp this far from the software one is not believed
 * (HW_SW_MAX_NS in src/sys/clock/mod.rs). */
#define NTPX_HW_SW_MAX_NS 10000000ull

static __always_inline __u64 phc_to_tai(const struct ntpx_state *st, __u64 phc)
{
	__s64 d;

	if (!st->phc_tai_ref_ns || !phc)
		return 0;
	d = (__s64)(phc - st->phc_ref_ns);
	if (d > NTPX_PHC_MAX_DELTA_NS || d < -NTPX_PHC_MAX_DELTA_NS)
		return 0;
	return st->phc_tai_ref_ns + (__u64)(d + ((d * st->phc_rate_q32) >> 32));
}

/* TAI - UTC at the CLOCK_TAI instant `tai`: TaiScale::offset_at() in
 * src/sys/clock/tai.rs (a leap second changes it at an exact instant). */
static __always_inline __s64 tai_offset_at(const struct ntpx_state *st, __u64 tai)
{
	return (st->leap_tai_ns && tai >= st->leap_tai_ns) ? st->tai_offset_after_s
							     : st->tai_offset_s;
}

/* TaiScale::leap_over_tai_ns(): from then on, replies no longer announce
 * the leap (the end of an inserted second, the instant of a deleted one). */
static __always_inline int leap_over(const struct ntpx_state *st, __u64 tai)
{
	__u64 end = st->leap_tai_ns;

	if (!end)
		return 0;
	if (st->tai_offset_after_s > st->tai_offset_s)
		end += NTPX_NSEC;
	return tai >= end;
}

/* The state's age at `now` into *age; returns 1 if it is stale: never
 * written, or older than its bound (then it no longer vouches for the
 * time). Read once per reply, by reply(). */
static __always_inline int state_stale(const struct ntpx_state *st, __u64 now, __u64 *age)
{
	*age = now > st->written_tai_ns ? now - st->written_tai_ns : 0;
	return st->written_tai_ns == 0 || *age > st->max_age_ns;
}

/*
 * Turns the frame at `p` around, as the Rust responder's respond_v4 /
 * respond_v6 do: MAC addresses (the request's source, then ours), a fresh
 * IP header with the addresses swapped, UDP ports swapped and the UDP
 * checksum zeroed (the caller writes it last).
 */
static __always_inline void turn_around(const struct ntpx_headers *h, struct plain *p)
{
	__u64 sum;

	/* Ethernet: back to the request's source, from our address. */
	__builtin_memcpy(p->eth->h_dest, p->eth->h_source, ETH_ALEN);
	p->eth->h_source[0] = our_mac[0];
	p->eth->h_source[1] = our_mac[1];
	p->eth->h_source[2] = our_mac[2];
	p->eth->h_source[3] = our_mac[3];
	p->eth->h_source[4] = our_mac[4];
	p->eth->h_source[5] = our_mac[5];

	if (h->family == 4) {
		struct iphdr *ip = h->ip4;
		__be32 a = ip->saddr;

		/* version, IHL, TOS, total length stay (0x45, -, 76) */
		ip->tos = 0;
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000); /* DF */
		ip->ttl = NTPX_REPLY_TTL;
		ip->check = 0;
		ip->saddr = ip->daddr;
		ip->daddr = a;
		sum = 0;
		CSUM_WORDS(sum, ip, 5);
		ip->check = ~csum_fold(sum);
	} else {
		struct ipv6hdr *ip6 = h->ip6;
		struct in6_addr a = ip6->saddr;

		*(__u32 *)ip6 = bpf_htonl(0x60000000); /* version 6, no class/flow */
		ip6->hop_limit = NTPX_REPLY_TTL;
		ip6->saddr = ip6->daddr;
		ip6->daddr = a;
	}

	p->udp->dest = p->udp->source;
	p->udp->source = bpf_htons(ntp_port);
	p->udp->check = 0;
}

/* The UDP checksum of the reply at `p` (its field zeroed by
 * turn_around()), written last. */
static __always_inline void fill_udp_checksum(const struct ntpx_headers *h, struct plain *p)
{
	__u64 sum;
	__u16 c;

	if (h->family == 4)
		sum = pseudo_sum(&h->ip4->saddr, &h->ip4->daddr, 1);
	else
		sum = pseudo_sum(&h->ip6->saddr, &h->ip6->daddr, 4);
	CSUM_WORDS(sum, p->udp, NTPX_UDP_LEN / 4);
	c = ~csum_fold(sum);
	p->udp->check = c ? c : 0xffff;
}

/*
 * Rewrites the plain request at `p` into its reply, as the Rust
 * responder's respond_v4/respond_v6 and write_reply() do: MAC addresses
 * (the request's source, then ours), a fresh IP header, ports swapped, the
 * NTP reply, then T3 and the UDP checksum last. `rx_tai` is the receive
 * stamp (T2); `stale` and `age` say how old the state is (state_stale()).
 * Returns the transmit stamp read (CLOCK_TAI).
 */
static __always_inline __u64 write_reply(const struct ntpx_headers *h, struct plain *p,
					 const struct ntpx_state *st, __u64 rx_tai, int stale,
					 __u64 age)
{
	__u8 *ntp = p->ntp;
	__u64 origin, t2, t2_exact, t3, t3_tai, ref_time;
	__u8 version = (ntp[0] >> 3) & 7, leap = st->leap, stratum = st->stratum;
	__s8 poll = (__s8)ntp[2];
	__u32 disp;
	/* The client's address for the mark, before the addresses swap. */
	__u64 client = xleave_bits ? client_fold(h) : 0;

	if (stale)
		leap = 3;
	else if ((leap == 1 || leap == 2) && leap_over(st, rx_tai))
		leap = 0;
	disp = aged_dispersion(st->root_dispersion, stale ? 0 : age);

	turn_around(h, p);

	/* NTP: every field under the rule of write_reply() in
	 * src/proto/ntp/server.rs. The origin is the request's transmit
	 * timestamp, all 64 bits, taken before its place is overwritten. */
	origin = *(__u64 *)(ntp + 40);
	ntp[0] = (leap << 6) | (version << 3) | 4;
	ntp[1] = leap == 3 ? 0 : stratum;
	ntp[2] = (poll < min_poll) ? (__u8)min_poll : (__u8)poll;
	ntp[3] = (__u8)st->precision;
	put_be32(ntp + 4, st->root_delay);
	put_be32(ntp + 8, disp);
	__builtin_memcpy(ntp + 12, st->ref_id, 4);
	*(__u64 *)(ntp + 24) = origin;
	t2_exact = ntp_from_tai(rx_tai, tai_offset_at(st, rx_tai));
	t2 = xleave_mark(fuzz(t2_exact, st->precision), client);
	put_be64(ntp + 32, t2);

	/* T3, read as late as possible: only the reference time, the
	 * transmit field and the UDP checksum remain. */
	t3_tai = bpf_ktime_get_tai_ns();
	/* Its lowest bit clear: never taken for a marked T2. */
	t3 = tai_offset_at(st, t3_tai) == tai_offset_at(st, rx_tai)
		     ? ntp_after(t2_exact, rx_tai, t3_tai, tai_offset_at(st, t3_tai))
		     : ntp_from_tai(t3_tai, tai_offset_at(st, t3_tai));
	t3 = fuzz(t3, st->precision) & ~1ull;
	if (!ts_after(t3, t2))
		t3 = (t2 + 2) & ~1ull;
	if (t3 == bpf_be64_to_cpu(origin) || t3 == t2)
		t3 += 2;
	ref_time = ts_after(st->ref_time, t3) ? t3 : st->ref_time;
	put_be64(ntp + 16, ref_time);
	put_be64(ntp + 40, t3);

	fill_udp_checksum(h, p);
	return t3_tai;
}

/* ---- service-time histogram ----
 * Log-linear buckets: values below 8 ns have one bucket each; above, each
 * power of two is split into 8. Bucket b >= 8 holds [(8 + b % 8) << (b / 8 - 1),
 * (9 + b % 8) << (b / 8 - 1)); the Rust side (src/server/program.rs,
 * hist_bucket_range) reads them back.
 */
static __always_inline __u32 hist_bucket(__u64 v)
{
	__u32 msb = 0;
	__u64 x;

	if (v >= (1ull << 32))
		v = (1ull << 32) - 1;
	if (v < (1u << NTPX_HIST_SUB_BITS))
		return (__u32)v;
	x = v;
	if (x >> 16) { x >>= 16; msb += 16; }
	if (x >> 8) { x >>= 8; msb += 8; }
	if (x >> 4) { x >>= 4; msb += 4; }
	if (x >> 2) { x >>= 2; msb += 2; }
	if (x >> 1) { msb += 1; }
	/* msb >= 3 here */
	return ((msb - 2) << NTPX_HIST_SUB_BITS) |
	       ((__u32)(v >> (msb - NTPX_HIST_SUB_BITS)) & ((1u << NTPX_HIST_SUB_BITS) - 1));
}

#endif
