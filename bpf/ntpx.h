/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The contract between the XDP program (bpf/ntpx.bpf.c) and the Rust side
 * (src/server/program.rs reads the counters and writes the server state,
 * src/sys/xsk/meta.rs reads the metadata). Change both sides together.
 */
#ifndef NTPX_H
#define NTPX_H

/* "NTPX": marks metadata that the program wrote for this frame. */
#define NTPX_META_MAGIC 0x4e545058u

/* ntpx_meta.flags: answer with a Kiss-o'-Death (bpf/policy.h). */
#define NTPX_META_KOD_RATE 1
#define NTPX_META_KOD_DENY 2

/*
 * Written by bpf_xdp_adjust_meta() directly in front of each redirected
 * frame, so `magic` is the last 4 bytes before the Ethernet header.
 * All fields are in host byte order.
 */
struct ntpx_meta {
	__u64 rx_sw_tai_ns; /* bpf_ktime_get_tai_ns() when the program ran */
	__u64 rx_hw_ns;     /* the NIC's hardware receive stamp, mapped from
	                     * its clock (PHC) to CLOCK_TAI; 0 = none */
	__u32 flags;        /* NTPX_META_KOD_*: the policy's verdict, for
	                     * the worker to carry out; 0: answer */
	__u32 magic;        /* NTPX_META_MAGIC */
};

/* Per-CPU counters, one slot each in the `counters` map. */
enum ntpx_counter {
	NTPX_SEEN = 0,            /* every frame the program ran on */
	NTPX_REDIRECTED,          /* handed to the AF_XDP socket of its queue */
	NTPX_PASS_NOT_IP,         /* ARP, LLDP, ... (not IPv4/IPv6) */
	NTPX_PASS_NOT_UDP,        /* IP but not UDP (ICMP, TCP, IPv6 ext headers) */
	NTPX_PASS_OTHER_PORT,     /* UDP to another port */
	NTPX_PASS_NOT_OURS,       /* NTP port, destination not a server address */
	NTPX_PASS_FRAGMENT,       /* a fragment of something not ours, or not
	                           * the first: the kernel reassembles */
	NTPX_PASS_TRUNCATED,      /* headers up to UDP cut short or malformed
	                           * (IHL < 5): the kernel decides */
	NTPX_PASS_SERVER_REPLY,   /* mode 4: a reply to the host's own client */
	NTPX_PASS_NO_SOCKET,      /* no AF_XDP socket on this queue */
	NTPX_META_FAILED,         /* redirected without metadata */
	NTPX_DROPPED,             /* judged here and dropped: the reason is
	                           * counted in the `drops` map */
	NTPX_REPLIED,             /* answered here (XDP_TX) */
	NTPX_REPLIED_PARTIAL,     /* ... of which the request's UDP checksum
	                           * was in the partial form (veth) */
	NTPX_REPLIED_STALE,       /* ... of which with LI 3 because the server
	                           * state was older than its bound */
	NTPX_TRIM_FAILED,         /* a reply whose padding could not be cut
	                           * (bpf_xdp_adjust_tail): dropped, counted
	                           * under truncated */
	NTPX_LATE,                /* a reply whose T3 - T2 passed the bound
	                           * (the CPU was taken away meanwhile):
	                           * dropped, DropReason::Late on the Rust side */
	NTPX_INTERLEAVED,         /* redirected because the origin carries our
	                           * mark: an interleaved client (RFC 9769),
	                           * whose state the workers keep */
	NTPX_HW_RX_MISSING,       /* device-bound: the driver gave no hardware
	                           * receive stamp (an error, or 0): the
	                           * software stamp was used */
	NTPX_HW_RX_UNMAPPED,      /* a hardware stamp, but no usable PHC -> TAI
	                           * mapping: the software stamp was used */
	NTPX_PASS_KERNEL_MODE,    /* mode 1, 2 or 6 that the configuration
	                           * leaves to the host's own daemon */
	NTPX_KOD_RATE,            /* answered with a Kiss-o'-Death RATE */
	NTPX_KOD_DENY,            /* answered with a Kiss-o'-Death DENY */
	NTPX_RL_LIMITED,          /* requests over their client's limit (then
	                           * leaked, a KoD, or dropped rate_limited) */
	NTPX_RL_LEAKED,           /* ... of which answered anyway (the leak) */
	NTPX_RL_CLIENTS,          /* clients that went over their limit (once
	                           * per episode, until they slow down) */
	NTPX_RL_SPEEDUP,          /* limited clients that went on to ask twice
	                           * as fast (once per episode) */
	NTPX_RL_NEW,              /* clients entered into the table (each
	                           * eviction makes room for one) */
	NTPX_RP_UNCHECKED,        /* reverse path on, but the route lookup
	                           * failed (not a verdict): answered */
	NTPX_REPLIED_HW,          /* of the replied: T2 the NIC's hardware
	                           * receive stamp (else the software one) */
	NTPX_TALKER_LOST,         /* top-talker samples the full ring dropped */
	NTPX_COUNTERS             /* number of counters */
};

/* The most devices stacked on the interface that the strict reverse-path
 * check accepts as the way back (RP_UPPERS in src/server/program.rs). */
#define NTPX_RP_UPPERS 8

/* The reverse-path check's modes (rp_mode; ReversePath in Rust). */
enum ntpx_rp {
	NTPX_RP_OFF = 0,
	NTPX_RP_LOOSE = 1,  /* the source has a route back */
	NTPX_RP_STRICT = 2, /* ... through the interface it came in on */
};

/*
 * Why a request judged in XDP got no reply: the index into the per-CPU
 * `drops` map. The same reasons in the same order as the Rust side's
 * DropReason (src/proto/drops.rs), so that the two sum slot by slot; a
 * test checks the names. The program uses only some of them.
 */
enum ntpx_drop {
	NTPX_DROP_TRUNCATED = 0,
	NTPX_DROP_NOT_IP,
	NTPX_DROP_NON_UNICAST,
	NTPX_DROP_OTHER_HOST,
	NTPX_DROP_BAD_SRC_MAC,
	NTPX_DROP_BAD_IP_HEADER,
	NTPX_DROP_BAD_IP_CHECKSUM,
	NTPX_DROP_BAD_IP_LENGTH,
	NTPX_DROP_FRAGMENT,
	NTPX_DROP_SOURCE_ROUTE,
	NTPX_DROP_BAD_IP_OPTIONS,
	NTPX_DROP_NOT_UDP,
	NTPX_DROP_NOT_OUR_ADDRESS,
	NTPX_DROP_BAD_SOURCE,
	NTPX_DROP_OWN_SOURCE,
	NTPX_DROP_DIRECTED_BROADCAST,
	NTPX_DROP_BAD_UDP_LENGTH,
	NTPX_DROP_BAD_UDP_CHECKSUM,
	NTPX_DROP_OTHER_PORT,
	NTPX_DROP_SRC_PORT_ZERO,
	NTPX_DROP_LOOP_PORT,
	NTPX_DROP_NTP_TOO_SHORT,
	NTPX_DROP_NTP_BAD_LENGTH,
	NTPX_DROP_NTP_VERSION,
	NTPX_DROP_NTP_MODE,
	NTPX_DROP_NTP_MAC,
	NTPX_DROP_NTP_NTS,
	NTPX_DROP_NTP_BAD_EXTENSION,
	NTPX_DROP_TX_FULL,
	NTPX_DROP_SEND_ERROR,
	NTPX_DROP_SOCKET_KERNEL_DROP,
	NTPX_DROP_RX_RING_FULL,
	NTPX_DROP_XSK_RX_DROPPED,
	NTPX_DROP_XDP_TX_ERROR,
	NTPX_DROP_LATE,
	NTPX_DROP_UNSYNCHRONIZED,
	NTPX_DROP_ACCESS,
	NTPX_DROP_RATE_LIMITED,
	NTPX_DROP_CEILING,
	NTPX_DROP_REVERSE_PATH,
	NTPX_DROP_DRAINING,
	NTPX_DROP_REASONS         /* size of the `drops` map */
};

/*
 * The server state that replies sent from XDP carry: one entry of the
 * `server_state` array map, rewritten by the control thread about once a
 * second (src/server/program.rs, XdpProgram::publish_state). Host byte
 * order throughout.
 */
struct ntpx_state {
	__u64 written_tai_ns; /* CLOCK_TAI when written; 0: never written */
	__u64 max_age_ns;     /* older than this: answer LI 3, stratum 0 */
	__u64 ref_time;       /* reference time, NTP format */
	__s64 tai_offset_s;   /* TAI - UTC, seconds */
	__u32 root_delay;     /* NTP short format */
	__u32 root_dispersion;/* NTP short format, aged here at 15 ppm */
	__u8 ref_id[4];
	__u8 leap;            /* 0-3; 3 = unsynchronised */
	__u8 stratum;
	__s8 precision;
	__u8 reply_in_xdp;    /* 1: answer plain requests here (XDP_TX);
	                       * 0: hand them to the AF_XDP workers */
	__u8 partial_to_workers; /* 1 (generic mode): a request whose UDP
	                          * checksum is partial goes to the workers */
	__u8 draining;        /* 1: out of service, answering nothing: every
	                       * request for the server is dropped */
	__u8 pad[6];
	__u64 leap_tai_ns;    /* CLOCK_TAI instant from which tai_offset_after_s
	                       * applies (a leap second); 0: none pending */
	__s64 tai_offset_after_s;
	/* The NIC clock (PHC) -> CLOCK_TAI mapping (phc_to_tai() in reply.h);
	 * phc_tai_ref_ns 0: none. */
	__u64 phc_ref_ns;
	__u64 phc_tai_ref_ns;
	__s64 phc_rate_q32;   /* TAI ns per PHC ns, minus 1, times 2^32 */
};

/* The client mix (src/proto/ntp/mix.rs): packets for the server by
 * ipv6 << 6 | version << 3 | mode, and mode-3 requests by poll
 * exponent, clamped to NTPX_MIN_POLL .. NTPX_MIN_POLL + NTPX_POLLS - 1. */
#define NTPX_KINDS 128
#define NTPX_POLLS 32
#define NTPX_MIN_POLL -8

/* Buckets of the service-time histogram (see hist_bucket() in reply.h). */
#define NTPX_HIST_SUB_BITS 3
#define NTPX_HIST_BUCKETS 256

/* Which access lists hold prefixes, and what a refused client gets: the
 * single entry of the `acl` map, which a reload rewrites (after adding a
 * list's prefixes, before removing them). */
struct ntpx_acl {
	__u8 deny_v4;
	__u8 deny_v6;
	__u8 allow_v4;
	__u8 allow_v6;
	__u8 kod;     /* 1: a KoD DENY; 0: nothing (ignored) */
	__u8 pad[3];
};

/* The rate limits and the ceiling: the single entry of the `limits` map,
 * which a reload rewrites (Limits in src/proto/policy/limit.rs). All
 * zero: no limit. A request that meets a rewrite half done sees some old
 * fields and some new ones, which is a limit between the two. */
struct ntpx_limits {
	__u64 interval_ns;         /* per client; 0: off */
	__u64 burst_ns;            /* interval * burst */
	__u64 kod_gap_ns;          /* at most one KoD RATE per client per this */
	__u64 ceiling_interval_ns; /* between replies, over all; 0: off */
	__u64 ceiling_burst_ns;    /* ceiling interval * its burst */
	__u32 mask_v4;             /* a client is its address under these */
	__u32 mask_v6[4];          /* masks (network order) */
	__u32 leak;                /* 1 in `leak` limited requests answered */
	__u32 kod;                 /* 1 in `kod` of the rest: a KoD RATE */
	__u32 pad;
};

/* Top talkers (src/server/talkers.rs): 1 in NTPX_TALKER_SAMPLE requests
 * for the server goes into the `talkers` ring as its source's prefix,
 * /24 for IPv4 (addr[0]) and /48 for IPv6 (network order). */
#define NTPX_TALKER_SAMPLE 64
struct ntpx_talker {
	__u32 family; /* 4 or 6 */
	__u32 addr[4];
};

/* A key of the access-list tries (BPF_MAP_TYPE_LPM_TRIE): IPv4 uses
 * addr[0] and a prefix length up to 32, IPv6 all four words (network
 * order) and up to 128. */
struct ntpx_lpm_key {
	__u32 prefixlen;
	__u32 addr[4];
};

/* A client of the rate limiter: its address cut to the configured
 * prefix (network order; IPv4 in addr[0], the rest 0). */
struct ntpx_client_key {
	__u32 family; /* 4 or 6 */
	__u32 addr[4];
};

/* Its bucket and history (Bucket in src/proto/policy/limit.rs, which
 * explains episodes and windows); CLOCK_TAI nanoseconds. */
struct ntpx_client {
	__u64 tat;       /* when its bucket is full again (GCRA's theoretical
	                  * arrival time) */
	__u64 last;      /* its last request */
	__u64 win_start; /* the current window of its episode over the limit;
	                  * 0: no episode */
	__u64 counts;    /* requests in the window (low 32 bits), in the
	                  * episode's first window (high 32; 0 until known,
	                  * NTPX_SPED_UP once counted) */
	__u64 kod_at;    /* its last Kiss-o'-Death */
};

#define NTPX_SPED_UP 0xffffffffu
#define NTPX_WINDOW_NS 1000000000ull

#define NTPX_MAX_ADDRS 16
#define NTPX_MAX_OWN 64
#define NTPX_MAX_QUEUES 256

#endif
