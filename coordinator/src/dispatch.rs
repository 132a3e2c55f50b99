//! Sending commands to agents and routing their events and results back.
//!
//! A dispatched command stays pending until its result arrives. While the
//! agent is away it waits; when the agent (re)registers, every pending
//! command for it is sent again. That is safe because agents journal
//! commands by id: a re-sent command attaches to the running one or
//! returns the recorded result.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use runway_proto::v1::{self, CommandEvent, CommandResult, CoordinatorMessage, coordinator_message};
use tokio::sync::{mpsc, oneshot};

use crate::registry::{AgentKey, Registry};

struct Pending {
    host: AgentKey,
    command: v1::Command,
    events: mpsc::UnboundedSender<CommandEvent>,
    result: oneshot::Sender<CommandResult>,
    /// Highest event sequence number delivered, to drop repeats.
    last_seq: u64,
}

/// A command on its way: its progress events and, at the end, its result.
pub struct InFlight {
    pub command_id: String,
    /// The agent was connected when the command was dispatched (it went
    /// out at once rather than waiting for the agent).
    pub sent: bool,
    pub events: mpsc::UnboundedReceiver<CommandEvent>,
    pub result: oneshot::Receiver<CommandResult>,
    dispatcher: Dispatcher,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.dispatcher.pending.lock().expect("dispatch lock").remove(&self.command_id);
    }
}

/// Pending commands by id, and their ids by host: an agent that registers
/// finds its own without a scan of every command (ten thousand agents
/// coming back to a new leader mid-step would otherwise scan ten thousand
/// commands each).
#[derive(Default)]
struct PendingCommands {
    by_id: HashMap<String, Pending>,
    by_host: HashMap<AgentKey, HashSet<String>>,
}

impl PendingCommands {
    fn insert(&mut self, id: String, pending: Pending) {
        self.remove(&id);
        self.by_host.entry(pending.host.clone()).or_default().insert(id.clone());
        self.by_id.insert(id, pending);
    }

    fn remove(&mut self, id: &str) -> Option<Pending> {
        let pending = self.by_id.remove(id)?;
        if let Some(ids) = self.by_host.get_mut(&pending.host) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_host.remove(&pending.host);
            }
        }
        Some(pending)
    }

    fn of_host(&self, host: &AgentKey) -> impl Iterator<Item = &Pending> {
        self.by_host.get(host).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }
}

/// Shared dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    registry: Registry,
    pending: Arc<Mutex<PendingCommands>>,
}

impl Dispatcher {
    pub fn new(registry: Registry) -> Self {
        Self { registry, pending: Arc::default() }
    }

    /// Sends `command` to `host` now if it is connected, else when it is.
    pub async fn dispatch(&self, host: &AgentKey, command: v1::Command) -> InFlight {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (result_tx, result) = oneshot::channel();
        let command_id = command.command_id.clone();
        self.pending.lock().expect("dispatch lock").insert(
            command_id.clone(),
            Pending {
                host: host.clone(),
                command: command.clone(),
                events: events_tx,
                result: result_tx,
                last_seq: 0,
            },
        );
        let sent = self.send(host, command).await;
        InFlight { command_id, sent, events, result, dispatcher: self.clone() }
    }

    /// Re-sends every pending command of `host` (it just registered).
    pub async fn resend_for(&self, host: &AgentKey) {
        let commands: Vec<v1::Command> =
            self.pending.lock().expect("dispatch lock").of_host(host).map(|p| p.command.clone()).collect();
        for command in commands {
            tracing::info!(%host, command_id = %command.command_id, "re-sending pending command");
            self.send(host, command).await;
        }
    }

    /// Sends `command` down `host`'s stream; `false` when the agent is not
    /// connected (the command waits for it to register).
    async fn send(&self, host: &AgentKey, command: v1::Command) -> bool {
        let Some(tx) = self.registry.sender(host) else {
            tracing::info!(%host, command_id = %command.command_id, "agent not connected; command waits for it");
            return false;
        };
        let message = CoordinatorMessage { kind: Some(coordinator_message::Kind::Command(command)) };
        if tx.send(Ok(Box::new(message))).await.is_err() {
            tracing::info!(%host, "agent stream closed while sending; command waits for the agent to return");
            return false;
        }
        true
    }

    /// Routes a progress event from `host` to its command.
    pub fn on_event(&self, host: &AgentKey, event: CommandEvent) {
        let mut pending = self.pending.lock().expect("dispatch lock");
        match pending.by_id.get_mut(&event.command_id) {
            Some(p) if p.host == *host && event.seq > p.last_seq => {
                p.last_seq = event.seq;
                let _ = p.events.send(event);
            }
            Some(_) => {}
            None => {
                tracing::debug!(%host, command_id = %event.command_id, "event for a command nobody waits for")
            }
        }
    }

    /// Routes a result from `host` to its command.
    pub fn on_result(&self, host: &AgentKey, result: CommandResult) {
        let mut pending = self.pending.lock().expect("dispatch lock");
        if pending.by_id.get(&result.command_id).is_some_and(|p| p.host == *host) {
            let p = pending.remove(&result.command_id).expect("just checked");
            let _ = p.result.send(result);
        } else {
            tracing::debug!(%host, command_id = %result.command_id, "result for a command nobody waits for");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str) -> AgentKey {
        AgentKey::new("staging", host)
    }

    fn pending(host: &str) -> Pending {
        let (events, _) = mpsc::unbounded_channel();
        let (result, _) = oneshot::channel();
        Pending { host: key(host), command: v1::Command::default(), events, result, last_seq: 0 }
    }

    fn ids(commands: &PendingCommands, host: &str) -> Vec<String> {
        let mut ids: Vec<String> = commands.by_host.get(&key(host)).into_iter().flatten().cloned().collect();
        ids.sort();
        ids
    }

    #[test]
    fn pending_commands_are_found_by_host_and_forgotten_with_their_command() {
        let mut commands = PendingCommands::default();
        commands.insert("r1/preflight/app-1/1".into(), pending("app-1"));
        commands.insert("r1/preflight/app-2/1".into(), pending("app-2"));
        commands.insert("r1/restart/app-1/1".into(), pending("app-1"));
        assert_eq!(commands.of_host(&key("app-1")).count(), 2);
        assert_eq!(ids(&commands, "app-1"), ["r1/preflight/app-1/1", "r1/restart/app-1/1"]);
        // Sent again under the same id: still one.
        commands.insert("r1/restart/app-1/1".into(), pending("app-1"));
        assert_eq!(commands.of_host(&key("app-1")).count(), 2);
        assert!(commands.remove("r1/preflight/app-1/1").is_some());
        assert!(commands.remove("r1/preflight/app-1/1").is_none());
        assert_eq!(ids(&commands, "app-1"), ["r1/restart/app-1/1"]);
        commands.remove("r1/restart/app-1/1");
        assert!(!commands.by_host.contains_key(&key("app-1")), "no empty entries left behind");
        assert_eq!(commands.of_host(&key("app-2")).count(), 1);
    }
}
