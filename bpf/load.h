/* SPDX-License-Identifier: MIT OR GPL-2.0 */
/*
 * The contract between the load generator's XDP programs (bpf/load.bpf.c)
 * and their loader (src/load/program.rs reads the counters). Change both
 * sides together. The metadata in front of redirected frames is
 * struct ntpx_meta of bpf/ntpx.h, the same as the server's.
 */
#ifndef NTPX_LOAD_H
#define NTPX_LOAD_H

/*
 * Per-CPU counters, one slot each in the `counters` map. ntpx_load_rx,
 * ntpx_sink and ntpx_reflect share the enum; each program bumps only the
 * slots it uses.
 */
enum ntpx_load_counter {
	NTPX_LOAD_SEEN = 0,         /* every frame the program ran on */
	NTPX_LOAD_REDIRECTED,       /* rx: reply handed to the AF_XDP socket of its queue */
	NTPX_LOAD_NO_SOCKET,        /* rx: reply, but no AF_XDP socket on this queue (passed) */
	NTPX_LOAD_META_FAILED,      /* rx: redirected without metadata */
	NTPX_LOAD_PASS_NOT_IP,      /* ARP, LLDP, > 2 VLAN tags, ... (not IPv4/IPv6) */
	NTPX_LOAD_PASS_NOT_UDP,     /* IP but not UDP (ICMP, TCP, IPv6 ext headers) */
	NTPX_LOAD_PASS_OTHER_PORT,  /* UDP, but rx: source / sink: destination port is
	                             * not server_port */
	NTPX_LOAD_PASS_FRAGMENT,    /* IPv4 UDP fragment: the kernel reassembles */
	NTPX_LOAD_PASS_TRUNCATED,   /* headers cut short or malformed */
	NTPX_LOAD_SUNK,             /* sink: UDP to server_port, dropped */
	NTPX_LOAD_SUNK_BYTES,       /* sink: their bytes from the Ethernet header on */
	NTPX_LOAD_REFLECTED,        /* reflect: UDP to server_port, sent back (XDP_TX) */
	NTPX_LOAD_COUNTERS          /* number of counters */
};

#endif
