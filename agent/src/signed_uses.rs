//! What the agent has done under each operator signature, so a signature
//! is good for what it was given for and no more.
//!
//! Next to the command journal, one JSON file in the state dir, replaced
//! atomically like it (write, fsync, rename, fsync the dir):
//!
//! - a **use**: one signature acting once on one database, keyed by the
//!   signature's one-use name (an operation's nonce, or the rollout id a
//!   deploy signature binds), the database and the action, with the
//!   command that used it. The same command again (a re-send after a
//!   failover) is the same use; another command is a replay and refused.
//! - an **ended** rollout: the coordinator said it ended (`ReleaseBackup`).
//!   From then on its own deploy signature no longer covers restoring its
//!   backup or running its downs: that takes an operator's signed rollback.
//!
//! Entries older than the agent's `signature_max_age` (plus the clock
//! skew) are dropped: a signature that old is refused by its age anyway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::journal::write_atomically;

/// The file, in the state dir.
const FILE: &str = "signed-uses.json";

/// Why a signature cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum UseError {
    #[error(
        "replayed signature: it was already used by command {earlier} ({what}); an operator signature is good \
         for one use: sign again"
    )]
    Replayed { what: String, earlier: String },
    #[error("signature journal {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("signature journal {path} is corrupt: {message}; move it away to start a new one")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// Use key → (command id, Unix seconds of the first use).
    #[serde(default)]
    uses: BTreeMap<String, (String, i64)>,
    /// Rollout id → Unix seconds it was seen to end.
    #[serde(default)]
    ended: BTreeMap<String, i64>,
}

/// The agent's memory of signature uses; cheap to clone.
#[derive(Clone)]
pub struct SignedUses {
    path: PathBuf,
    /// How long an entry matters, seconds (0: forever).
    keep_secs: u64,
    /// `None` until first read.
    state: Arc<Mutex<Option<Saved>>>,
}

impl SignedUses {
    /// The memory kept in `state_dir`, entries kept `keep_secs` (0: forever).
    pub fn new(state_dir: &Path, keep_secs: u64) -> Self {
        Self { path: state_dir.join(FILE), keep_secs, state: Arc::default() }
    }

    /// Records that `command_id` uses the signature named `key` (see the
    /// module doc); refuses when another command used it before.
    pub async fn claim(&self, key: &str, command_id: &str, now: i64) -> Result<(), UseError> {
        let mut guard = self.state.lock().await;
        let saved = self.loaded(&mut guard)?;
        if let Some((earlier, _)) = saved.uses.get(key) {
            if earlier == command_id {
                return Ok(());
            }
            return Err(UseError::Replayed { what: key.to_owned(), earlier: earlier.clone() });
        }
        saved.uses.insert(key.to_owned(), (command_id.to_owned(), now));
        self.prune(saved, now);
        self.save(saved)
    }

    /// Records that rollout `rollout_id` ended.
    pub async fn mark_ended(&self, rollout_id: &str, now: i64) -> Result<(), UseError> {
        let mut guard = self.state.lock().await;
        let saved = self.loaded(&mut guard)?;
        if saved.ended.contains_key(rollout_id) {
            return Ok(());
        }
        saved.ended.insert(rollout_id.to_owned(), now);
        self.prune(saved, now);
        self.save(saved)
    }

    /// Whether rollout `rollout_id` was seen to end.
    pub async fn ended(&self, rollout_id: &str) -> Result<bool, UseError> {
        let mut guard = self.state.lock().await;
        Ok(self.loaded(&mut guard)?.ended.contains_key(rollout_id))
    }

    fn loaded<'a>(&self, guard: &'a mut Option<Saved>) -> Result<&'a mut Saved, UseError> {
        if guard.is_none() {
            let saved = match std::fs::read(&self.path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| UseError::Corrupt { path: self.path.clone(), message: e.to_string() })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
                Err(error) => return Err(UseError::Io { path: self.path.clone(), error }),
            };
            *guard = Some(saved);
        }
        Ok(guard.as_mut().expect("just loaded"))
    }

    fn prune(&self, saved: &mut Saved, now: i64) {
        if self.keep_secs == 0 {
            return;
        }
        let keep = i64::try_from(self.keep_secs).unwrap_or(i64::MAX / 2)
            + runway_identity::signature::CLOCK_SKEW_SECS;
        let oldest = now.saturating_sub(keep);
        saved.uses.retain(|_, (_, at)| *at >= oldest);
        saved.ended.retain(|_, at| *at >= oldest);
    }

    fn save(&self, saved: &Saved) -> Result<(), UseError> {
        let bytes = serde_json::to_vec(saved).expect("the signature journal serializes");
        write_atomically(&self.path, &bytes).map_err(|error| UseError::Io { path: self.path.clone(), error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signature_is_good_for_one_command_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let uses = SignedUses::new(dir.path(), 3600);
        uses.claim("nonce/n1/orders/restore", "c1", 1000).await.unwrap();
        uses.claim("nonce/n1/orders/restore", "c1", 1001).await.expect("a re-send is the same use");
        uses.claim("nonce/n1/users/restore", "c2", 1001).await.expect("another database is another use");

        let again = SignedUses::new(dir.path(), 3600);
        let replay = again.claim("nonce/n1/orders/restore", "c9", 1002).await.unwrap_err();
        assert!(matches!(&replay, UseError::Replayed { earlier, .. } if earlier == "c1"), "{replay}");

        again.mark_ended("r1", 1002).await.unwrap();
        assert!(SignedUses::new(dir.path(), 3600).ended("r1").await.unwrap());
        assert!(!again.ended("r2").await.unwrap());

        // Long after, the old entries are gone (their signatures are too old to pass).
        let later = 1000 + 3600 + runway_identity::signature::CLOCK_SKEW_SECS + 1;
        again.claim("nonce/n2/orders/restore", "c3", later).await.unwrap();
        again.claim("nonce/n1/orders/restore", "c9", later).await.expect("pruned");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let uses = SignedUses::new(dir.path(), 0);
        assert!(matches!(uses.claim("k", "c", 1).await, Err(UseError::Corrupt { .. })));
    }
}
