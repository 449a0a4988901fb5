//! Attaching an XDP program through a BPF link, which the kernel removes
//! with the link's last descriptor: a crashed process leaves nothing on
//! the interface.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::{ProgramHandle, libbpf_sys};

use super::{AttachMode, ProgramError, XdpMode};

/// An XDP attachment: the BPF link keeps the program on the interface.
#[derive(Debug)]
struct Attachment {
    link: OwnedFd,
    ifindex: u32,
    ifname: String,
    mode: XdpMode,
}

/// Where a loaded program is attached, if anywhere: the attach / detach
/// logic shared by the server's and the generator's programs.
/// Dropping it detaches.
#[derive(Debug, Default)]
pub struct LinkSlot(Option<Attachment>);

impl LinkSlot {
    /// Attaches `prog` to interface `ifindex` through a BPF link and
    /// returns the mode it got: native, or with [`AttachMode::Auto`]
    /// generic where native is not supported.
    pub fn attach(
        &mut self,
        prog: &ProgramHandle,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<XdpMode, ProgramError> {
        if let Some(a) = &self.0 {
            return Err(ProgramError::AttachedTwice {
                ifname: a.ifname.clone(),
            });
        }
        let ifname = interface_name(ifindex).ok_or(ProgramError::NoSuchInterface { ifindex })?;

        let (link, got) = match mode {
            AttachMode::Native => (
                link_create(prog, ifindex, &ifname, XdpMode::Native)?,
                XdpMode::Native,
            ),
            AttachMode::Generic => (
                link_create(prog, ifindex, &ifname, XdpMode::Generic)?,
                XdpMode::Generic,
            ),
            AttachMode::Auto => match link_create(prog, ifindex, &ifname, XdpMode::Native) {
                Ok(link) => (link, XdpMode::Native),
                Err(ProgramError::XdpUnsupported { .. }) => (
                    link_create(prog, ifindex, &ifname, XdpMode::Generic)?,
                    XdpMode::Generic,
                ),
                Err(e) => return Err(e),
            },
        };
        self.0 = Some(Attachment {
            link,
            ifindex,
            ifname,
            mode: got,
        });
        Ok(got)
    }

    /// Detaches (no-op if not attached).
    pub fn detach(&mut self) -> Result<(), ProgramError> {
        let Some(a) = self.0.take() else {
            return Ok(());
        };
        // SAFETY: plain syscall wrapper on a link fd we own.
        let rc = unsafe { libbpf_sys::bpf_link_detach(a.link.as_raw_fd()) };
        // Closing the fd (drop of `a`) releases the link in any case.
        drop(a);
        if rc < 0 {
            return Err(ProgramError::os(
                "detach the XDP program",
                io::Error::from_raw_os_error(-rc),
            ));
        }
        Ok(())
    }

    /// `(ifindex, mode)` while attached.
    pub fn attached(&self) -> Option<(u32, XdpMode)> {
        self.0.as_ref().map(|a| (a.ifindex, a.mode))
    }
}

impl Drop for LinkSlot {
    fn drop(&mut self) {
        // Closing the link fd detaches; detach() first so that a link fd
        // leaked into a child process cannot keep the program attached.
        let _ = self.detach();
    }
}

fn link_create(
    prog: &ProgramHandle,
    ifindex: u32,
    ifname: &str,
    mode: XdpMode,
) -> Result<OwnedFd, ProgramError> {
    let target = i32::try_from(ifindex).map_err(|_| ProgramError::NoSuchInterface { ifindex })?;
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        flags: mode.flags(),
        ..Default::default()
    };
    // SAFETY: plain syscall wrapper: the program fd is valid for the call
    // (borrowed from `prog`), `opts` is a fully initialised
    // bpf_link_create_opts whose `sz` matches its type.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_fd().as_raw_fd(), target, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        let source = io::Error::from_raw_os_error(-fd);
        let ifname = ifname.to_owned();
        return Err(match -fd {
            libc::EOPNOTSUPP | libc::EINVAL => ProgramError::XdpUnsupported {
                ifname,
                mode,
                source,
            },
            libc::EBUSY | libc::EEXIST => ProgramError::AlreadyAttached { ifname, source },
            _ => ProgramError::os("attach the XDP program", source),
        });
    }
    // SAFETY: `fd` is a new link fd returned by BPF_LINK_CREATE, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The name of interface `ifindex`, or `None` if there is no such interface.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname() may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname() wrote a NUL-terminated name into
    // `buf`, which lives until the end of this function.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
