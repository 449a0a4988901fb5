//! A pass-through XDP program for the *peer* of a veth that ntpx serves.
//!
//! A veth delivers frames that its peer transmits from XDP (XDP_TX,
//! redirects, AF_XDP TX) only if it runs an XDP program itself. On a real
//! NIC this is never needed; on the veth links of tests and the demo the
//! client end gets this two-instruction program (`r0 = XDP_PASS; exit`),
//! attached through netlink so that it stays after `ntpx xdp-pass` exits
//! and goes away with the interface.

use libbpf_rs::libbpf_sys;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `r0 = 2 (XDP_PASS); exit` as raw eBPF instruction words (little endian:
/// opcode, registers, offset, immediate).
const PASS_INSNS: [u64; 2] = [
    0x0000_0002_0000_00b7, // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2
    0x0000_0000_0000_0095, // BPF_JMP | BPF_EXIT
];
const _: () = assert!(std::mem::size_of::<libbpf_sys::bpf_insn>() == 8);

/// Loads the pass-through program and attaches it to `ifindex` (native
/// mode, falling back to generic), replacing nothing: it fails if another
/// program is attached.
pub fn attach_pass_through(ifindex: u32) -> io::Result<()> {
    // SAFETY: PASS_INSNS is 2 valid 8-byte eBPF instructions laid out like
    // `struct bpf_insn` (size checked above); name and license are
    // NUL-terminated; libbpf copies everything it needs during the call.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"ntpx_pass".as_ptr(),
            c"Dual MIT/GPL".as_ptr(),
            PASS_INSNS.as_ptr().cast(),
            PASS_INSNS.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a new program fd that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut last = 0;
    for flags in [
        libbpf_sys::XDP_FLAGS_DRV_MODE,
        libbpf_sys::XDP_FLAGS_SKB_MODE,
    ] {
        // SAFETY: plain netlink attach of a live program fd; null opts are
        // allowed. The kernel holds its own reference after this returns.
        let r = unsafe {
            libbpf_sys::bpf_xdp_attach(
                ifindex as i32,
                std::os::fd::AsRawFd::as_raw_fd(&prog),
                flags | libbpf_sys::XDP_FLAGS_UPDATE_IF_NOEXIST,
                std::ptr::null(),
            )
        };
        if r == 0 {
            return Ok(());
        }
        last = -r;
    }
    Err(io::Error::from_raw_os_error(last))
}
