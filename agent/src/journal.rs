//! The agent's command journal: fencing and exactly-once execution.
//!
//! Two facts survive restarts, in one JSON file in the state dir that is
//! replaced atomically (write, fsync, rename, fsync the dir):
//!
//! - the highest fencing token seen: a command with a lower token comes
//!   from a deposed leader and is refused;
//! - every command by `command_id`: running, or finished with its result.
//!   A command sent again is not started again: if it runs, the caller
//!   waits for the running one; if it finished, the recorded result is
//!   returned. A command found `running` at start-up was cut off by a
//!   restart and is reported as interrupted, never as succeeded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use runway_proto::v1::{CommandOutcome, CommandResult};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// How many finished commands the journal remembers.
const KEEP_FINISHED: usize = 2000;

/// The journal file could not be read or written. Retrying is safe; a
/// persistent error needs the state dir fixed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("command journal {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("command journal {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// One journaled command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub command_id: String,
    pub rollout_id: String,
    /// Fencing token the command came with.
    pub token: u64,
    /// Coordinator that issued it.
    pub issued_by: String,
    /// Which action: `backup`, `migrate`, …
    pub action: String,
    pub state: EntryState,
    /// Set once finished.
    pub outcome: Option<i32>,
    pub error: String,
    pub detail_json: String,
    /// A preflight's typed plan (`CommandResult.plan`), protobuf as hex;
    /// empty when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan: String,
    pub started_unix_ms: i64,
    pub finished_unix_ms: Option<i64>,
    /// Insertion order, to forget the oldest first.
    pub order: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Running,
    Finished,
}

impl Entry {
    pub fn result(&self) -> CommandResult {
        CommandResult {
            command_id: self.command_id.clone(),
            outcome: self.outcome.unwrap_or(CommandOutcome::Interrupted as i32),
            error: self.error.clone(),
            detail_json: self.detail_json.clone(),
            // Written by `finish` from a valid message; a damaged one is
            // reported as no plan rather than a refused result.
            plan: hex::decode(&self.plan).ok().and_then(|b| prost::Message::decode(b.as_slice()).ok()),
            work_ms: self
                .finished_unix_ms
                .map_or(0, |end| u64::try_from(end - self.started_unix_ms).unwrap_or(0)),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    highest_token: u64,
    next_order: u64,
    commands: BTreeMap<String, Entry>,
}

/// What to do with an incoming command.
#[derive(Debug)]
pub enum Admission {
    /// New: it is journaled as running; execute it.
    Start,
    /// Already running in this process; its result will follow.
    AlreadyRunning,
    /// Already finished (or interrupted by a restart): here is the result.
    Finished(CommandResult),
    /// Its token is lower than one already seen: it comes from a deposed
    /// leader. `known` says whether the id was journaled before (a stale
    /// re-send) or is new (a step the deposed leader tried to start).
    Stale { token: u64, highest: u64, known: bool },
}

/// Handle to the journal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    path: Arc<PathBuf>,
    state: Arc<Mutex<State>>,
}

/// What the journal needs to know about a command to admit it.
pub struct Incoming<'a> {
    pub command_id: &'a str,
    pub rollout_id: &'a str,
    pub token: u64,
    pub issued_by: &'a str,
    pub action: &'a str,
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir`. Commands left running
    /// by a previous process become interrupted.
    pub async fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let path = state_dir.join("journal.json");
        let io = |error| JournalError::Io { path: path.clone(), error };
        tokio::fs::create_dir_all(state_dir).await.map_err(io)?;
        let mut state = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| JournalError::Corrupt { path: path.clone(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(e)),
        };
        let now = runway_proto::unix_ms_now();
        let mut changed = false;
        for entry in state.commands.values_mut().filter(|e| e.state == EntryState::Running) {
            entry.state = EntryState::Finished;
            entry.outcome = Some(CommandOutcome::Interrupted as i32);
            entry.error = format!("the agent restarted while {} ran; it did not finish", entry.action);
            entry.finished_unix_ms = Some(now);
            changed = true;
        }
        let journal = Journal { path: Arc::new(path), state: Arc::new(Mutex::new(state)) };
        if changed {
            let state = journal.state.lock().await;
            journal.persist(&state).await?;
        }
        Ok(journal)
    }

    /// Decides whether `cmd` runs, and journals it as running if so. The
    /// entry is on disk before this returns [`Admission::Start`].
    pub async fn admit(&self, cmd: Incoming<'_>) -> Result<Admission, JournalError> {
        let mut state = self.state.lock().await;
        let known = state.commands.contains_key(cmd.command_id);
        if cmd.token < state.highest_token {
            return Ok(Admission::Stale { token: cmd.token, highest: state.highest_token, known });
        }
        let raised = cmd.token > state.highest_token;
        state.highest_token = cmd.token;
        if let Some(entry) = state.commands.get(cmd.command_id) {
            let admission = match entry.state {
                EntryState::Running => Admission::AlreadyRunning,
                EntryState::Finished => Admission::Finished(entry.result()),
            };
            if raised {
                self.persist(&state).await?;
            }
            return Ok(admission);
        }
        let order = state.next_order;
        state.next_order += 1;
        state.commands.insert(
            cmd.command_id.to_owned(),
            Entry {
                command_id: cmd.command_id.to_owned(),
                rollout_id: cmd.rollout_id.to_owned(),
                token: cmd.token,
                issued_by: cmd.issued_by.to_owned(),
                action: cmd.action.to_owned(),
                state: EntryState::Running,
                outcome: None,
                error: String::new(),
                detail_json: String::new(),
                plan: String::new(),
                started_unix_ms: runway_proto::unix_ms_now(),
                finished_unix_ms: None,
                order,
            },
        );
        forget_oldest(&mut state);
        if let Err(e) = self.persist(&state).await {
            // Not on disk, so not admitted: a command must never stay
            // "running" in memory with nothing running it. (The raised
            // token may stay: fencing only gets stricter.)
            state.commands.remove(cmd.command_id);
            return Err(e);
        }
        Ok(Admission::Start)
    }

    /// Checks the token of a coordinator that says it leads, and raises the
    /// highest token seen to it (on disk before this returns). False when a
    /// higher token was seen already: that coordinator was deposed.
    pub async fn observe_token(&self, token: u64) -> Result<bool, JournalError> {
        let mut state = self.state.lock().await;
        if token < state.highest_token {
            return Ok(false);
        }
        if token > state.highest_token {
            state.highest_token = token;
            self.persist(&state).await?;
        }
        Ok(true)
    }

    /// Whether `command_id` was admitted before (running or finished).
    pub async fn knows(&self, command_id: &str) -> bool {
        self.state.lock().await.commands.contains_key(command_id)
    }

    /// The highest fencing token seen.
    pub async fn highest_token(&self) -> u64 {
        self.state.lock().await.highest_token
    }

    /// Records a command's result.
    pub async fn finish(&self, result: &CommandResult) -> Result<(), JournalError> {
        let mut state = self.state.lock().await;
        if let Some(entry) = state.commands.get_mut(&result.command_id) {
            entry.state = EntryState::Finished;
            entry.outcome = Some(result.outcome);
            entry.error = result.error.clone();
            entry.detail_json = result.detail_json.clone();
            entry.plan = result
                .plan
                .as_ref()
                .map(|p| hex::encode(prost::Message::encode_to_vec(p)))
                .unwrap_or_default();
            entry.finished_unix_ms = Some(runway_proto::unix_ms_now());
        }
        self.persist(&state).await
    }

    /// Every journaled command, oldest first.
    pub async fn entries(&self) -> Vec<Entry> {
        let state = self.state.lock().await;
        let mut entries: Vec<Entry> = state.commands.values().cloned().collect();
        entries.sort_by_key(|e| e.order);
        entries
    }

    async fn persist(&self, state: &State) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec_pretty(state).expect("journal state serializes");
        let path = Arc::clone(&self.path);
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .expect("journal write task does not panic");
        result.map_err(|error| JournalError::Io { path: self.path.to_path_buf(), error })
    }
}

fn forget_oldest(state: &mut State) {
    while state.commands.len() > KEEP_FINISHED {
        let oldest = state
            .commands
            .values()
            .filter(|e| e.state == EntryState::Finished)
            .min_by_key(|e| e.order)
            .map(|e| e.command_id.clone());
        match oldest {
            Some(id) => state.commands.remove(&id),
            None => break,
        };
    }
}

/// Replaces `path` with `bytes`: write a temp file, fsync, rename, fsync the dir.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a journal file without opening it for writing (tests, tooling).
pub fn read_entries(state_dir: &Path) -> Result<Vec<Entry>, JournalError> {
    let path = state_dir.join("journal.json");
    let bytes = std::fs::read(&path).map_err(|error| JournalError::Io { path: path.clone(), error })?;
    let state: State = serde_json::from_slice(&bytes)
        .map_err(|e| JournalError::Corrupt { path: path.clone(), message: e.to_string() })?;
    let mut entries: Vec<Entry> = state.commands.into_values().collect();
    entries.sort_by_key(|e| e.order);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runway_proto::v1;

    fn incoming<'a>(id: &'a str, token: u64) -> Incoming<'a> {
        Incoming { command_id: id, rollout_id: "r1", token, issued_by: "c1", action: "backup" }
    }

    #[tokio::test]
    async fn refuses_lower_tokens_and_never_runs_twice() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        assert!(matches!(journal.admit(incoming("a", 5)).await.unwrap(), Admission::Start));
        assert!(matches!(journal.admit(incoming("a", 5)).await.unwrap(), Admission::AlreadyRunning));
        assert!(matches!(
            journal.admit(incoming("b", 4)).await.unwrap(),
            Admission::Stale { token: 4, highest: 5, known: false }
        ));
        let result = CommandResult {
            command_id: "a".into(),
            outcome: CommandOutcome::Succeeded as i32,
            error: String::new(),
            detail_json: "{}".into(),
            plan: Some(Box::new(v1::MigrationPlan { pending: vec!["2_add".into()], ..Default::default() })),
            work_ms: 0,
        };
        journal.finish(&result).await.unwrap();
        match journal.admit(incoming("a", 6)).await.unwrap() {
            Admission::Finished(r) => assert_eq!(CommandResult { work_ms: 0, ..r }, result),
            other => panic!("expected the recorded result, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_restart_marks_running_commands_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        journal.admit(incoming("a", 7)).await.unwrap();
        drop(journal);
        let reopened = Journal::open(dir.path()).await.unwrap();
        match reopened.admit(incoming("a", 7)).await.unwrap() {
            Admission::Finished(r) => assert_eq!(r.outcome, CommandOutcome::Interrupted as i32),
            other => panic!("expected interrupted, got {other:?}"),
        }
        assert!(matches!(reopened.admit(incoming("b", 6)).await.unwrap(), Admission::Stale { .. }));
    }

    #[tokio::test]
    async fn a_newer_leader_raises_the_token_and_the_old_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        journal.admit(incoming("a", 5)).await.unwrap();
        // The new leader re-sends the running command: it attaches and
        // raises the token, so the old leader's re-send is refused.
        assert!(matches!(journal.admit(incoming("a", 9)).await.unwrap(), Admission::AlreadyRunning));
        assert!(matches!(
            journal.admit(incoming("a", 5)).await.unwrap(),
            Admission::Stale { token: 5, highest: 9, known: true }
        ));
        assert!(!journal.observe_token(8).await.unwrap());
        assert!(journal.observe_token(12).await.unwrap());
        drop(journal);
        let reopened = Journal::open(dir.path()).await.unwrap();
        assert_eq!(reopened.highest_token().await, 12, "the raised token is on disk");
    }

    #[tokio::test]
    async fn a_failed_journal_write_leaves_no_command_running() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        // A directory where the temp file goes makes the write fail (even as root).
        std::fs::create_dir(dir.path().join("journal.json.tmp")).unwrap();
        assert!(journal.admit(incoming("r1/migrate/db/1", 7)).await.is_err());
        assert!(journal.entries().await.is_empty(), "nothing may stay running");
        std::fs::remove_dir(dir.path().join("journal.json.tmp")).unwrap();
        // The re-send starts it for real, instead of waiting for a run that never began.
        assert!(matches!(journal.admit(incoming("r1/migrate/db/1", 7)).await.unwrap(), Admission::Start));
    }
}
