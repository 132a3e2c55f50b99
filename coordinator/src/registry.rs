//! The agents connected to this (leader) coordinator, and those that went
//! away while it led (for `runway status`).
//!
//! An agent is known by its environment and its name ([`AgentKey`]):
//! `staging/app-1` and `production/app-1` are two agents. One agent has at
//! most one session: a second registration under the same key (a cloned
//! host, a unit started twice, or the same agent reconnecting before its
//! old stream was noticed gone) replaces the first, whose stream is then
//! closed ([`Session::closed`]), so the process behind it reconnects
//! rather than running on unheard.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use runway_proto::v1::{AgentInfo, CoordinatorMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Replacements of one agent's session within this window, past
/// [`FLAPPING_AFTER`], mean two processes hold its identity.
const FLAPPING_WINDOW: Duration = Duration::from_secs(60);
const FLAPPING_AFTER: usize = 3;

/// An agent's identity: its name is unique within its environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentKey {
    pub environment: String,
    pub name: String,
}

impl AgentKey {
    pub fn new(environment: &str, name: &str) -> Self {
        Self { environment: environment.to_owned(), name: name.to_owned() }
    }

    fn of(info: &AgentInfo) -> Self {
        Self::new(&info.environment, &info.name)
    }
}

impl fmt::Display for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.environment, self.name)
    }
}

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
    /// Where the session comes from (the peer's address).
    peer: String,
    /// Cancelled when another session replaces this one.
    closed: CancellationToken,
    /// When this agent's earlier sessions were replaced, within
    /// [`FLAPPING_WINDOW`].
    replacements: Vec<Instant>,
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
    /// Cancelled when a newer session of the same agent replaces this one:
    /// the session then ends and its stream is closed.
    pub closed: CancellationToken,
    /// The session this one replaced, if any.
    pub replaced: Option<Replaced>,
}

/// A session that a new registration of the same agent replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// Where the replaced session came from.
    pub peer: String,
    /// The agent's sessions were replaced [`FLAPPING_AFTER`] times within
    /// [`FLAPPING_WINDOW`]: two processes hold its identity and keep
    /// taking it from each other.
    pub flapping: bool,
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
    agents: Arc<Mutex<HashMap<AgentKey, Connected>>>,
    /// Agents whose session ended and that have not come back, kept in
    /// memory only: a new leader (or a restarted one) knows only agents
    /// that left while it led. Never pruned: the set of hosts is small.
    departed: Arc<Mutex<HashMap<AgentKey, Departed>>>,
    next_session: Arc<AtomicU64>,
}

impl Registry {
    /// Adds an agent's session, or replaces the session of the same agent
    /// (same environment and name), closing the old one. `peer` is where
    /// the new session comes from.
    pub fn register(&self, info: AgentInfo, tx: AgentSender, peer: &str) -> Session {
        let key = AgentKey::of(&info);
        let mut agents = self.agents.lock().expect("registry lock");
        let session = self.next_session.fetch_add(1, Ordering::SeqCst) + 1;
        self.departed.lock().expect("departed lock").remove(&key);
        let metrics = crate::metrics::get();
        let last_seen = Arc::new(AtomicI64::new(info.last_seen_unix_ms));
        let closed = CancellationToken::new();
        let mut replacements = Vec::new();
        let mut replaced = None;
        if let Some(old) = agents.remove(&key) {
            old.closed.cancel();
            metrics.agent_left(&old.info.environment, &old.info.name, &old.info.roles);
            let now = Instant::now();
            replacements = old.replacements;
            replacements.retain(|at| now.duration_since(*at) < FLAPPING_WINDOW);
            replacements.push(now);
            replaced = Some(Replaced { peer: old.peer, flapping: replacements.len() >= FLAPPING_AFTER });
        }
        metrics.agent_attached(&info.environment, &info.name, &info.roles);
        let connected = Connected {
            info,
            tx,
            session,
            last_seen: Arc::clone(&last_seen),
            peer: peer.to_owned(),
            closed: closed.clone(),
            replacements,
        };
        agents.insert(key, connected);
        Session { id: session, last_seen, closed, replaced }
    }

    /// Removes the agent if `session` is still its current one: only a
    /// session's own end removes it, never an older session's.
    pub fn unregister(&self, key: &AgentKey, session: u64) {
        let mut agents = self.agents.lock().expect("registry lock");
        if agents.get(key).is_some_and(|c| c.session == session)
            && let Some(gone) = agents.remove(key)
        {
            crate::metrics::get().agent_left(&gone.info.environment, &gone.info.name, &gone.info.roles);
            let departed = Departed { info: gone.info(), left_unix_ms: runway_proto::unix_ms_now() };
            self.departed.lock().expect("departed lock").insert(key.clone(), departed);
        }
    }

    /// Records that `key` now runs app version `version` (after a restart
    /// it reported as done), so the next rollout knows what to bring back.
    pub fn set_app_version(&self, key: &AgentKey, version: &str) {
        if let Some(c) = self.agents.lock().expect("registry lock").get_mut(key) {
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
        list.sort_by(|a, b| (&a.environment, &a.name).cmp(&(&b.environment, &b.name)));
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
        list.sort_by(|a, b| (&a.info.environment, &a.info.name).cmp(&(&b.info.environment, &b.info.name)));
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

    pub fn sender(&self, key: &AgentKey) -> Option<AgentSender> {
        self.agents.lock().expect("registry lock").get(key).map(|c| c.tx.clone())
    }

    pub fn is_connected(&self, key: &AgentKey) -> bool {
        self.agents.lock().expect("registry lock").contains_key(key)
    }

    /// Drops every session (the leader stepped down), and the memory of
    /// agents that went away: a later term starts afresh.
    pub fn clear(&self) {
        let mut agents = self.agents.lock().expect("registry lock");
        for (_, gone) in agents.drain() {
            gone.closed.cancel();
            crate::metrics::get().agent_left(&gone.info.environment, &gone.info.name, &gone.info.roles);
        }
        self.departed.lock().expect("departed lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(environment: &str, name: &str) -> AgentInfo {
        AgentInfo { name: name.into(), environment: environment.into(), ..AgentInfo::default() }
    }

    fn sender() -> AgentSender {
        AgentSender::new(mpsc::channel(1).0)
    }

    #[test]
    fn an_agent_that_leaves_is_remembered_until_it_comes_back() {
        let registry = Registry::default();
        let key = AgentKey::new("staging", "db-1");
        let session = registry.register(agent("staging", "db-1"), sender(), "10.0.0.1:1").id;
        assert!(registry.departed(None).is_empty());
        // A stale session ending changes nothing.
        registry.unregister(&key, session + 100);
        assert!(registry.is_connected(&key));
        registry.unregister(&key, session);
        let departed = registry.departed(Some("staging"));
        assert_eq!(departed.len(), 1);
        assert_eq!(departed[0].info.name, "db-1");
        assert!(departed[0].left_unix_ms > 0);
        assert!(registry.departed(Some("production")).is_empty());
        registry.register(agent("staging", "db-1"), sender(), "10.0.0.1:2");
        assert!(registry.departed(None).is_empty(), "back again");
    }

    #[test]
    fn the_same_name_in_two_environments_is_two_agents() {
        let registry = Registry::default();
        registry.register(agent("staging", "app-1"), sender(), "a");
        let production = registry.register(agent("production", "app-1"), sender(), "b");
        assert!(production.replaced.is_none());
        assert!(registry.is_connected(&AgentKey::new("staging", "app-1")));
        assert!(registry.is_connected(&AgentKey::new("production", "app-1")));
        assert_eq!(registry.list(Some("production")).len(), 1);
        registry.unregister(&AgentKey::new("staging", "app-1"), 1);
        assert!(registry.is_connected(&AgentKey::new("production", "app-1")));
    }

    #[test]
    fn a_replaced_session_is_closed_and_its_end_removes_nothing() {
        let registry = Registry::default();
        let key = AgentKey::new("production", "db-1");
        let first = registry.register(agent("production", "db-1"), sender(), "10.0.0.1:5000");
        let second = registry.register(agent("production", "db-1"), sender(), "10.0.0.2:6000");
        assert!(first.closed.is_cancelled(), "the replaced session is told to close");
        assert!(!second.closed.is_cancelled());
        assert_eq!(second.replaced, Some(Replaced { peer: "10.0.0.1:5000".into(), flapping: false }));
        // The replaced session ends: the agent stays listed under its new one.
        registry.unregister(&key, first.id);
        assert!(registry.is_connected(&key));
        // The two keep taking the identity from each other: reported as flapping.
        let third = registry.register(agent("production", "db-1"), sender(), "10.0.0.1:5001");
        assert_eq!(third.replaced.as_ref().map(|r| r.flapping), Some(false));
        let fourth = registry.register(agent("production", "db-1"), sender(), "10.0.0.2:6001");
        assert_eq!(fourth.replaced, Some(Replaced { peer: "10.0.0.1:5001".into(), flapping: true }));
    }

    #[tokio::test]
    async fn a_stream_is_quiet_since_its_last_message_and_last_seen_needs_no_lock() {
        let registry = Registry::default();
        let key = AgentKey::new("staging", "app-1");
        let (tx, mut rx) = mpsc::channel(4);
        let tx = AgentSender::new(tx);
        let session = registry.register(agent("staging", "app-1"), tx.clone(), "peer");
        std::thread::sleep(Duration::from_millis(30));
        assert!(tx.quiet_for() >= Duration::from_millis(30));
        // What the dispatcher sends through its clone counts for the session's heartbeat.
        let sender = registry.sender(&key).unwrap();
        sender.send(Ok(Box::default())).await.unwrap();
        assert!(tx.quiet_for() < Duration::from_millis(30), "{:?}", tx.quiet_for());
        assert!(rx.recv().await.is_some());

        assert_eq!(registry.list(None)[0].last_seen_unix_ms, 0);
        session.heard();
        assert!(registry.list(None)[0].last_seen_unix_ms > 0);
        registry.unregister(&key, session.id);
        assert!(registry.departed(None)[0].info.last_seen_unix_ms > 0, "kept when it leaves");
    }
}
