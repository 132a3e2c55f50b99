//! The agents connected to this (leader) coordinator, and those that went
//! away while it led (for `runway status`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use runway_proto::v1::{AgentInfo, CoordinatorMessage};
use tokio::sync::mpsc;

/// What goes down one agent's stream. Boxed: a channel allocates its slots
/// in blocks of 32, and 32 unboxed messages are 7.5 KiB per attached agent.
pub type Outgoing = Result<Box<CoordinatorMessage>, tonic::Status>;

/// One agent's stream, as the coordinator writes to it; cheap to clone.
/// It remembers when it last carried a message, so the session's
/// heartbeat goes only down a stream that was quiet for half an interval
/// (`runway_proto::heartbeat_due`): any message tells the agent that its
/// coordinator is alive.
#[derive(Clone)]
pub struct AgentSender {
    tx: mpsc::Sender<Outgoing>,
    /// When a message was last queued, in ms since [`monotonic_ms`]'s start.
    last_sent_ms: Arc<AtomicU64>,
}

impl AgentSender {
    pub fn new(tx: mpsc::Sender<Outgoing>) -> Self {
        Self { tx, last_sent_ms: Arc::new(AtomicU64::new(monotonic_ms())) }
    }

    /// Queues `message`; `Err` when the stream is gone.
    pub async fn send(&self, message: Outgoing) -> Result<(), mpsc::error::SendError<Outgoing>> {
        self.last_sent_ms.store(monotonic_ms(), Ordering::Relaxed);
        self.tx.send(message).await
    }

    /// How long nothing was queued.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(monotonic_ms().saturating_sub(self.last_sent_ms.load(Ordering::Relaxed)))
    }
}

/// Milliseconds on a monotonic clock (since its first use).
fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Name and roles of a connected agent: what planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub name: String,
    pub roles: Vec<String>,
    /// The app version the agent registered with (what runs there now).
    pub app_version: String,
    /// Its labels (`restart.select` chooses hosts by them).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The databases a DB agent serves (empty from an agent too old to say).
    pub databases: Vec<String>,
}

impl AgentSnapshot {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

struct Connected {
    /// As registered; `last_seen_unix_ms` is kept in `last_seen` instead.
    info: AgentInfo,
    tx: AgentSender,
    session: u64,
    /// The last message heard, in Unix ms: written by the session on every
    /// message without taking the registry's lock.
    last_seen: Arc<AtomicI64>,
}

impl Connected {
    fn info(&self) -> AgentInfo {
        AgentInfo { last_seen_unix_ms: self.last_seen.load(Ordering::Relaxed), ..self.info.clone() }
    }
}

/// A registered session: its id, and where it records each message heard.
pub struct Session {
    pub id: u64,
    last_seen: Arc<AtomicI64>,
}

impl Session {
    /// A message came from the agent now.
    pub fn heard(&self) {
        self.last_seen.store(runway_proto::unix_ms_now(), Ordering::Relaxed);
    }
}

/// An agent that disconnected: what it registered as, and when it left.
#[derive(Debug, Clone, PartialEq)]
pub struct Departed {
    /// As registered; `last_seen_unix_ms` is the last message heard from it.
    pub info: AgentInfo,
    /// When its session ended.
    pub left_unix_ms: i64,
}

/// Shared registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    agents: Arc<Mutex<HashMap<String, Connected>>>,
    /// Agents whose session ended and that have not come back, kept in
    /// memory only: a new leader (or a restarted one) knows only agents
    /// that left while it led. Never pruned: the set of hosts is small.
    departed: Arc<Mutex<HashMap<String, Departed>>>,
    next_session: Arc<AtomicU64>,
}

impl Registry {
    /// Adds an agent's session, or replaces the session of the same agent
    /// (same name and environment: it reconnected before its old stream was
    /// noticed gone); returns the session id. Another agent with a name
    /// that is attached is refused (`Err` says who holds it).
    pub fn register(&self, info: AgentInfo, tx: AgentSender) -> Result<Session, String> {
        let mut agents = self.agents.lock().expect("registry lock");
        if let Some(attached) = agents.get(&info.name) {
            if attached.info.environment != info.environment {
                return Err(format!(
                    "agent name {} is taken: agent {} ({}) is attached; refusing agent {} ({})",
                    info.name, info.name, attached.info.environment, info.name, info.environment
                ));
            }
            tracing::info!(agent = %info.name, "agent reconnected; replacing its old session");
        }
        let session = self.next_session.fetch_add(1, Ordering::SeqCst) + 1;
        self.departed.lock().expect("departed lock").remove(&info.name);
        let metrics = crate::metrics::get();
        let name = info.name.clone();
        let last_seen = Arc::new(AtomicI64::new(info.last_seen_unix_ms));
        let connected = Connected { info, tx, session, last_seen: Arc::clone(&last_seen) };
        if let Some(old) = agents.insert(name.clone(), connected) {
            metrics.agent_left(&old.info.environment, &old.info.name, &old.info.roles);
        }
        let new = &agents[&name].info;
        metrics.agent_attached(&new.environment, &new.name, &new.roles);
        Ok(Session { id: session, last_seen })
    }

    /// Removes the agent if `session` is still its current one.
    pub fn unregister(&self, name: &str, session: u64) {
        let mut agents = self.agents.lock().expect("registry lock");
        if agents.get(name).is_some_and(|c| c.session == session)
            && let Some(gone) = agents.remove(name)
        {
            crate::metrics::get().agent_left(&gone.info.environment, &gone.info.name, &gone.info.roles);
            let departed = Departed { info: gone.info(), left_unix_ms: runway_proto::unix_ms_now() };
            self.departed.lock().expect("departed lock").insert(name.to_owned(), departed);
        }
    }

    /// Records that `name` now runs app version `version` (after a restart
    /// it reported as done), so the next rollout knows what to bring back.
    pub fn set_app_version(&self, name: &str, version: &str) {
        if let Some(c) = self.agents.lock().expect("registry lock").get_mut(name) {
            c.info.app_version = version.to_owned();
        }
    }

    /// Connected agents, optionally of one environment, sorted by name.
    pub fn list(&self, environment: Option<&str>) -> Vec<AgentInfo> {
        let agents = self.agents.lock().expect("registry lock");
        let mut list: Vec<AgentInfo> = agents
            .values()
            .filter(|c| environment.is_none_or(|e| c.info.environment == e))
            .map(Connected::info)
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Agents that went away while this coordinator led and have not come
    /// back, optionally of one environment, sorted by name.
    pub fn departed(&self, environment: Option<&str>) -> Vec<Departed> {
        let departed = self.departed.lock().expect("departed lock");
        let mut list: Vec<Departed> = departed
            .values()
            .filter(|d| environment.is_none_or(|e| d.info.environment == e))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        list
    }

    pub fn snapshot(&self, environment: &str) -> Vec<AgentSnapshot> {
        self.list(Some(environment))
            .into_iter()
            .map(|a| AgentSnapshot {
                name: a.name,
                roles: a.roles,
                app_version: a.app_version,
                labels: a.labels.into_iter().collect(),
                databases: a.databases,
            })
            .collect()
    }

    pub fn sender(&self, name: &str) -> Option<AgentSender> {
        self.agents.lock().expect("registry lock").get(name).map(|c| c.tx.clone())
    }

    pub fn is_connected(&self, name: &str) -> bool {
        self.agents.lock().expect("registry lock").contains_key(name)
    }

    /// Drops every session (the leader stepped down), and the memory of
    /// agents that went away: a later term starts afresh.
    pub fn clear(&self) {
        let mut agents = self.agents.lock().expect("registry lock");
        for (_, gone) in agents.drain() {
            crate::metrics::get().agent_left(&gone.info.environment, &gone.info.name, &gone.info.roles);
        }
        self.departed.lock().expect("departed lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentInfo {
        AgentInfo { name: name.into(), environment: "staging".into(), ..AgentInfo::default() }
    }

    #[test]
    fn an_agent_that_leaves_is_remembered_until_it_comes_back() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel(1);
        let tx = AgentSender::new(tx);
        let session = registry.register(agent("db-1"), tx.clone()).unwrap().id;
        assert!(registry.departed(None).is_empty());
        // A stale session ending changes nothing.
        registry.unregister("db-1", session + 100);
        assert!(registry.is_connected("db-1"));
        registry.unregister("db-1", session);
        let departed = registry.departed(Some("staging"));
        assert_eq!(departed.len(), 1);
        assert_eq!(departed[0].info.name, "db-1");
        assert!(departed[0].left_unix_ms > 0);
        assert!(registry.departed(Some("production")).is_empty());
        registry.register(agent("db-1"), tx).unwrap();
        assert!(registry.departed(None).is_empty(), "back again");
    }

    #[tokio::test]
    async fn a_stream_is_quiet_since_its_last_message_and_last_seen_needs_no_lock() {
        let registry = Registry::default();
        let (tx, mut rx) = mpsc::channel(4);
        let tx = AgentSender::new(tx);
        let session = registry.register(agent("app-1"), tx.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(tx.quiet_for() >= Duration::from_millis(30));
        // What the dispatcher sends through its clone counts for the session's heartbeat.
        let sender = registry.sender("app-1").unwrap();
        sender.send(Ok(Box::default())).await.unwrap();
        assert!(tx.quiet_for() < Duration::from_millis(30), "{:?}", tx.quiet_for());
        assert!(rx.recv().await.is_some());

        assert_eq!(registry.list(None)[0].last_seen_unix_ms, 0);
        session.heard();
        assert!(registry.list(None)[0].last_seen_unix_ms > 0);
        registry.unregister("app-1", session.id);
        assert!(registry.departed(None)[0].info.last_seen_unix_ms > 0, "kept when it leaves");
    }
}
