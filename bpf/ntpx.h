/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The contract between the XDP program (bpf/ntpx.bpf.c) and the Rust side
 * (src/server/program.rs reads the counters, src/sys/xsk/meta.rs the metadata).
 * Change both sides together.
 */
#ifndef NTPX_H
#define NTPX_H

/* "NTPX": marks metadata that the program wrote for this frame. */
#define NTPX_META_MAGIC 0x4e545058u

/*
 * Written by bpf_xdp_adjust_meta() directly in front of each redirected
 * frame, so `magic` is the last 4 bytes before the Ethernet header.
 * All fields are in host byte order.
 */
struct ntpx_meta {
	__u64 rx_sw_tai_ns; /* bpf_ktime_get_tai_ns() when the program ran */
	__u64 rx_hw_ns;     /* NIC hardware receive stamp; 0 = none */
	__u32 flags;        /* reserved, 0 */
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
	NTPX_DROP_SHORT,          /* UDP payload < 48 bytes */
	NTPX_DROP_MODE,           /* mode other than 3 (and 4, passed) */
	NTPX_DROP_VERSION,        /* version 0 or > 4 */
	NTPX_DROP_SRC_PORT_ZERO,  /* source port 0 */
	NTPX_DROP_FRAGMENT,       /* the first fragment of a request: dropped so
	                           * that the kernel never reassembles it */
	NTPX_COUNTERS             /* number of counters */
};

#define NTPX_MAX_ADDRS 16
#define NTPX_MAX_QUEUES 256

#endif
