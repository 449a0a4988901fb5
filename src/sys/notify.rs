//! The service manager's notification socket (systemd's `Type=notify`,
//! through the `sd-notify` crate): ready, stopping, status lines, and the
//! watchdog's keep-alive. Everything here is a no-op when ntpx does not run
//! under a service manager (no `NOTIFY_SOCKET`).

use sd_notify::NotifyState;
use std::time::{Duration, Instant};

/// Says the server is serving, with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Says the server is reloading its config (systemd 253 and later want
/// the monotonic time with it); [`ready`] ends the reload.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(t) = NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    send(&states);
}

/// Says the server is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A status line (`systemctl status` shows it).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The watchdog's keep-alive, when the service manager asks for one
/// (`WatchdogSec=`, passed as `WATCHDOG_USEC`): sent at half its interval
/// by whoever calls [`Watchdog::tick`], which must only do so while the
/// server is healthy.
#[derive(Debug)]
pub struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// From the environment.
    pub fn from_env() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: None,
        }
    }

    /// Whether the service manager asked for keep-alives.
    pub fn enabled(&self) -> bool {
        self.every.is_some()
    }

    /// Sends a keep-alive when one is due.
    pub fn tick(&mut self) {
        let Some(every) = self.every else { return };
        if self.last.is_none_or(|t| t.elapsed() >= every) {
            send(&[NotifyState::Watchdog]);
            self.last = Some(Instant::now());
        }
    }
}
