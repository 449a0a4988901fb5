//! Signals to another process: `ntpx reload` asks a running server to read
//! its config again.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends SIGHUP to `pid` (a running `ntpx serve`).
pub fn hang_up(pid: u32) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).ok().filter(|&p| p > 1).ok_or_else(|| {
        anyhow::anyhow!("the server did not give a usable process ID ({pid}): is it an older ntpx?")
    })?;
    kill(Pid::from_raw(raw), Signal::SIGHUP)
        .map_err(|e| anyhow::anyhow!("cannot signal ntpx serve (pid {pid}): {e}"))
}
