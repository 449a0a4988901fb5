//! Maintenance without a restart: the drain file. `ntpx drain on` writes
//! it (its contents: `unsync` or `stop`, see [`Drain`]), `ntpx drain off`
//! removes it; scripts may do the same. A running server reads it four
//! times a second ([`DrainWatch`]) and applies it at once: replies say
//! LI 3, stratum 0, or there are none (counted as `draining`). A file
//! whose contents are neither, or that cannot be read, means drain,
//! `unsync`, with a warning: a file that is there at all says "out of
//! service". A server that starts with the file there starts drained.

use crate::server::state::{Drain, SharedState};
use anyhow::Context;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `ntpx serve` looks by default.
pub const DEFAULT_PATH: &str = "/run/ntpx.drain";

/// How often the server looks.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// What the file at `path` says: [`Drain::Off`] when there is none;
/// `Err(contents)` when its contents name no mode.
pub fn read(path: &Path) -> io::Result<Result<Drain, String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(match text.trim() {
            "" | "unsync" => Ok(Drain::Unsync),
            "stop" => Ok(Drain::Stop),
            other => Err(other.chars().take(40).collect()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ok(Drain::Off)),
        Err(e) => Err(e),
    }
}

/// Writes `d` to `path` (removes it for [`Drain::Off`]); whole or not at
/// all (a temporary file renamed over it).
pub fn write(path: &Path, d: Drain) -> anyhow::Result<()> {
    let shown = path.display();
    if d == Drain::Off {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing the drain file {shown}"))
            }
            _ => Ok(()),
        };
    }
    // A fresh name, created (never followed if someone put a link there),
    // readable by the server whatever the umask, then renamed over.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{:016x}.tmp", fastrand::u64(..)));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            use std::io::Write as _;
            f.write_all(format!("{}\n", d.name()).as_bytes())
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing the drain file {shown}"))
}

/// The server's side: follows the file into the shared state.
#[derive(Debug)]
pub struct DrainWatch {
    path: PathBuf,
    last_check: Option<Instant>,
    warned: bool,
}

impl DrainWatch {
    /// Watches `path`.
    pub fn new(path: PathBuf) -> DrainWatch {
        DrainWatch {
            path,
            last_check: None,
            warned: false,
        }
    }

    /// Looks at the file when due; true when the drain changed (the state
    /// is then to be refreshed at once).
    pub fn poll(&mut self, state: &SharedState) -> bool {
        if self.last_check.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return false;
        }
        self.last_check = Some(Instant::now());
        let now = match read(&self.path) {
            Ok(Ok(d)) => d,
            Ok(Err(text)) => {
                if !self.warned {
                    tracing::warn!(path = %self.path.display(), contents = %text,
                        "the drain file says neither unsync nor stop: draining, unsync");
                    self.warned = true;
                }
                Drain::Unsync
            }
            // There, but unreadable: it says out of service all the same.
            Err(e) => {
                if !self.warned {
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot read the drain file: draining, unsync");
                    self.warned = true;
                }
                Drain::Unsync
            }
        };
        if now == state.drain() {
            return false;
        }
        self.warned = false;
        state.set_drain(now);
        match now {
            Drain::Off => tracing::info!("drain off: back in service"),
            Drain::Unsync => tracing::warn!("draining: replies say LI 3, stratum 0"),
            Drain::Stop => tracing::warn!("draining: no replies (counted as draining)"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("ntpx-drain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("drain");
        assert_eq!(read(&f).unwrap(), Ok(Drain::Off));
        write(&f, Drain::Stop).unwrap();
        assert_eq!(read(&f).unwrap(), Ok(Drain::Stop));
        write(&f, Drain::Unsync).unwrap();
        assert_eq!(read(&f).unwrap(), Ok(Drain::Unsync));
        std::fs::write(&f, "").unwrap();
        assert_eq!(read(&f).unwrap(), Ok(Drain::Unsync), "an empty file drains");
        std::fs::write(&f, "maintenance\n").unwrap();
        assert_eq!(read(&f).unwrap(), Err("maintenance".to_owned()));
        write(&f, Drain::Off).unwrap();
        assert_eq!(read(&f).unwrap(), Ok(Drain::Off));
        write(&f, Drain::Off).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
