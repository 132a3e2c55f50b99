//! Reading certificates again without a restart: on `SIGHUP`, and when one
//! of the files changed on disk (polled: a rotated certificate or a new
//! revocation list takes effect within one poll even if nobody signals).
//!
//! A reload that fails keeps what was loaded before and says why in the
//! log; the files are read again at the next signal or change.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the files are looked at, unless a caller says otherwise.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// What a file looked like at the last poll: a write changes its time or
/// size, an atomic replacement (rename) its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// Why a reload is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// `SIGHUP` arrived.
    Signal,
    /// This file changed (or appeared, or went away) since the last poll.
    Changed(PathBuf),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Signal => write!(f, "SIGHUP"),
            Cause::Changed(path) => write!(f, "{} changed", path.display()),
        }
    }
}

/// Fires on `SIGHUP` or when a watched file changes.
pub struct Trigger {
    files: Vec<(PathBuf, Option<Stamp>)>,
    every: Duration,
    hup: Signal,
}

impl Trigger {
    /// Watches `files` every `every`, and takes over `SIGHUP` (whose
    /// default would end the process). Must run inside a tokio runtime.
    pub fn new(files: Vec<PathBuf>, every: Duration) -> std::io::Result<Trigger> {
        let hup = signal(SignalKind::hangup())?;
        let files = files
            .into_iter()
            .map(|path| {
                let seen = stamp(&path);
                (path, seen)
            })
            .collect();
        Ok(Trigger { files, every, hup })
    }

    /// Waits for the next reason to reload.
    pub async fn next(&mut self) -> Cause {
        let mut poll = tokio::time::interval(self.every);
        poll.tick().await;
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    // Whatever changed is read now; no second reload for it.
                    for (path, seen) in &mut self.files {
                        *seen = stamp(path);
                    }
                    return Cause::Signal;
                }
                _ = poll.tick() => {
                    let mut changed = None;
                    for (path, seen) in &mut self.files {
                        let now = stamp(path);
                        if now != *seen {
                            *seen = now;
                            changed.get_or_insert_with(|| path.clone());
                        }
                    }
                    if let Some(path) = changed {
                        return Cause::Changed(path);
                    }
                }
            }
        }
    }
}

/// Runs `reload` at every [`Trigger`] until `shutdown`, logging what it
/// answers: `Ok(summary)` as done, `Err(why)` as kept the old `what`.
pub fn spawn<F, Fut>(
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    mut trigger: Trigger,
    what: &'static str,
    mut reload: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    tracker.spawn(async move {
        loop {
            let cause = tokio::select! {
                _ = shutdown.cancelled() => return,
                cause = trigger.next() => cause,
            };
            match reload().await {
                Ok(summary) => tracing::info!(%cause, "reloaded {what}: {summary}"),
                Err(why) => tracing::warn!(%cause, "cannot reload {what}, keeping the old ones: {why}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_changed_file_fires_and_an_unchanged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("ca.crl");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&crl, "one").unwrap();
        std::fs::write(&cert, "cert").unwrap();
        let mut trigger = Trigger::new(vec![cert.clone(), crl.clone()], Duration::from_millis(20)).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(100), trigger.next()).await;
        assert!(quiet.is_err(), "nothing changed: {quiet:?}");
        // Replaced the way `runway certs revoke` does it: a new file renamed over the old.
        let next = dir.path().join("ca.crl.new");
        std::fs::write(&next, "two").unwrap();
        std::fs::rename(&next, &crl).unwrap();
        let cause = tokio::time::timeout(Duration::from_secs(2), trigger.next()).await.unwrap();
        assert_eq!(cause, Cause::Changed(crl.clone()));
        let quiet = tokio::time::timeout(Duration::from_millis(100), trigger.next()).await;
        assert!(quiet.is_err(), "seen once: {quiet:?}");
        std::fs::remove_file(&cert).unwrap();
        let cause = tokio::time::timeout(Duration::from_secs(2), trigger.next()).await.unwrap();
        assert_eq!(cause, Cause::Changed(cert), "a file that went away fires too");
    }
}
