//! A simulated fleet for the benchmarks: N agents in one process, each
//! with its own connection and (with TLS) its own client certificate,
//! against real coordinators. Not shipped; `benches/fleet.rs` drives it.
//!
//! Each simulated agent does what `agent/src/connection.rs` does on the
//! wire: it dials a coordinator, registers, heartbeats at the interval the
//! coordinator names, answers every command with a progress event and,
//! after the configured work time, a result, and keeps those results in a
//! journal of its own (in memory), so a command re-sent after a failover
//! gets the recorded result (or re-attaches to the running one) rather
//! than running twice. When the stream ends it redials like the real
//! agent: the leader a follower named, at once and only once in a row,
//! else the configured addresses in turn, with backoff from 200 ms to 1 s.
//! Like the real agent it keeps one connection per coordinator
//! (`runway_agent::channels`) and, while attached, asks the other
//! coordinators every three heartbeats who leads, over those connections;
//! an answer naming a newer leader moves it there. What it leaves out: the
//! real executor (nothing runs) and the on-disk journal.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_agent::channels::Channels;
use runway_agent::connection::watch_for_newer_leader;
use runway_identity::tls::Security;
use runway_proto::v1::agent_channel_client::AgentChannelClient;
use runway_proto::v1::{
    AgentMessage, CommandEvent, CommandOutcome, CommandResult, Heartbeat, LeaderInfo, Register,
    agent_message, coordinator_message,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

mod processes;

pub use processes::{Fleet, Summary, serve_part_if_asked};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One simulated host.
#[derive(Clone, Debug)]
pub struct SimAgent {
    pub name: String,
    /// `db` and/or `app`.
    pub roles: Vec<String>,
    /// Answers every command with a failure (e.g. a DB host that refuses
    /// the preflight, so a benchmark rollout ends after one step).
    pub fails: bool,
}

/// How the fleet behaves.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Every coordinator's address, as agents are configured with them.
    pub coordinators: Vec<String>,
    pub environment: String,
    /// How long each command "works" between its progress event and its result.
    pub work: Duration,
    /// Worker threads of the fleet's own runtime.
    pub threads: usize,
}

/// What the fleet saw, readable while it runs.
#[derive(Default)]
pub struct FleetStats {
    /// Per agent: the fencing token of the leader it is registered with
    /// now, 0 while it is not attached.
    tokens: Vec<AtomicU64>,
    /// Commands answered with a result (re-sent results included).
    pub results: AtomicUsize,
    /// Sessions that ended (any reason, refusals by followers included).
    pub sessions_ended: AtomicUsize,
}

impl FleetStats {
    /// What the fleet looks like now.
    pub fn summary(&self) -> Summary {
        let mut tokens = BTreeMap::new();
        for token in &self.tokens {
            *tokens.entry(token.load(Ordering::Relaxed)).or_default() += 1;
        }
        Summary {
            tokens,
            results: self.results.load(Ordering::Relaxed),
            sessions_ended: self.sessions_ended.load(Ordering::Relaxed),
        }
    }
}

/// A simulated fleet running in this process; dropping it stops every agent.
pub struct LocalFleet {
    pub stats: Arc<FleetStats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl LocalFleet {
    /// Starts every agent of `agents` (with `security[i]` for agent `i`)
    /// on a runtime of its own.
    pub fn start(options: FleetOptions, agents: Vec<SimAgent>, security: Vec<Security>) -> LocalFleet {
        assert_eq!(agents.len(), security.len(), "one set of credentials per agent");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .enable_all()
            .build()
            .expect("fleet runtime");
        let stats = Arc::new(FleetStats {
            tokens: agents.iter().map(|_| AtomicU64::new(0)).collect(),
            ..FleetStats::default()
        });
        let options = Arc::new(options);
        for (index, (agent, security)) in agents.into_iter().zip(security).enumerate() {
            let channels = Channels::new(security);
            let sim =
                Sim { index, agent, channels, options: Arc::clone(&options), stats: Arc::clone(&stats) };
            runtime.spawn(sim.run());
        }
        LocalFleet { stats, runtime: Some(runtime) }
    }
}

/// A command's state in a simulated agent's journal.
enum Entry {
    Running,
    Done(CommandResult),
}

struct Sim {
    index: usize,
    agent: SimAgent,
    channels: Channels,
    options: Arc<FleetOptions>,
    stats: Arc<FleetStats>,
}

/// How a session ended, for the redial decision.
enum Ended {
    /// A follower refused and named the leader.
    Hint(String),
    Other,
}

impl Sim {
    /// Keeps the agent attached, redialling as `agent/src/connection.rs` does.
    async fn run(self) {
        // Results of finished work wait here across sessions, like the real
        // agent's outbox.
        let (outbox_tx, mut outbox) = mpsc::unbounded_channel::<AgentMessage>();
        let journal: Arc<Mutex<HashMap<String, Entry>>> = Arc::default();
        // Spread the first dials over ten seconds, as hosts booting do (a
        // failover, measured later, is when they all come at once).
        let spread = Duration::from_millis((self.index as u64 * 7919) % 10_000);
        tokio::time::sleep(spread).await;
        let mut next = self.index;
        let mut hint: Option<String> = None;
        let mut hopped = false;
        let mut delay = MIN_BACKOFF;
        loop {
            let addr = hint.take().unwrap_or_else(|| {
                let coordinators = &self.options.coordinators;
                next += 1;
                coordinators[next % coordinators.len()].clone()
            });
            let started = Instant::now();
            let ended = self.session(&addr, &outbox_tx, &mut outbox, &journal).await;
            self.stats.tokens[self.index].store(0, Ordering::Relaxed);
            self.stats.sessions_ended.fetch_add(1, Ordering::Relaxed);
            if let Ended::Hint(leader) = ended {
                hint = Some(leader);
            }
            if hint.is_some() && !hopped {
                hopped = true;
                continue;
            }
            hopped = false;
            if started.elapsed() > Duration::from_secs(10) {
                delay = MIN_BACKOFF;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(
        &self,
        addr: &str,
        outbox_tx: &mpsc::UnboundedSender<AgentMessage>,
        outbox: &mut mpsc::UnboundedReceiver<AgentMessage>,
        journal: &Arc<Mutex<HashMap<String, Entry>>>,
    ) -> Ended {
        let Ok(channel) = self.channels.get(addr) else { return Ended::Other };
        let mut client = AgentChannelClient::new(channel);
        let (tx, rx) = mpsc::channel::<AgentMessage>(16);
        let register = Register {
            name: self.agent.name.clone(),
            environment: self.options.environment.clone(),
            roles: self.agent.roles.clone(),
            labels: HashMap::new(),
            runway_version: "sim".into(),
            app_version: "v1".into(),
            databases: Vec::new(),
        };
        tx.send(AgentMessage { kind: Some(agent_message::Kind::Register(register)) })
            .await
            .expect("fresh channel has room");
        let mut inbound = match client.attach(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return runway_proto::leader_hint(&status).map_or(Ended::Other, Ended::Hint),
        };
        let mut interval = Duration::from_secs(2);
        let mut ticker = tokio::time::interval(interval);
        let mut last_heard = Instant::now();
        // As the real agent: a heartbeat only when one is due.
        let mut last_sent = Instant::now();
        // Who leads, as the other coordinators say it (after Registered).
        let (newer_tx, mut newer) = mpsc::channel::<(String, LeaderInfo)>(1);
        // Aborted when the session ends.
        let mut probing: Option<AbortOnDropHandle<()>> = None;
        loop {
            tokio::select! {
                Some((_, leader)) = newer.recv() => {
                    return if leader.address.is_empty() { Ended::Other } else { Ended::Hint(leader.address) };
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        last_heard = Instant::now();
                        match message.kind {
                            Some(coordinator_message::Kind::Registered(r)) => {
                                self.stats.tokens[self.index].store(r.fencing_token, Ordering::Relaxed);
                                if r.heartbeat_interval_secs > 0 {
                                    interval = Duration::from_secs(u64::from(r.heartbeat_interval_secs));
                                    ticker = tokio::time::interval(interval);
                                }
                                let peers: Vec<String> = self.options.coordinators.iter().filter(|a| *a != addr).cloned().collect();
                                let probe = watch_for_newer_leader(self.channels.clone(), peers, r.fencing_token, interval * 3, newer_tx.clone(), CancellationToken::new());
                                // A second Registered replaces (aborts) the first probe.
                                drop(probing.replace(AbortOnDropHandle::new(tokio::spawn(probe))));
                            }
                            Some(coordinator_message::Kind::Command(command)) => {
                                self.accept(command.command_id, outbox_tx, journal);
                            }
                            Some(coordinator_message::Kind::Heartbeat(_)) | None => {}
                        }
                    }
                    Ok(None) => return Ended::Other,
                    Err(status) => return runway_proto::leader_hint(&status).map_or(Ended::Other, Ended::Hint),
                },
                Some(message) = outbox.recv() => {
                    if tx.send(message).await.is_err() {
                        return Ended::Other;
                    }
                    last_sent = Instant::now();
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > interval * 3 {
                        return Ended::Other;
                    }
                    if !runway_proto::heartbeat_due(last_sent.elapsed(), interval) {
                        continue;
                    }
                    last_sent = Instant::now();
                    let beat = Heartbeat { unix_ms: runway_proto::unix_ms_now() };
                    if tx.send(AgentMessage { kind: Some(agent_message::Kind::Heartbeat(beat)) }).await.is_err() {
                        return Ended::Other;
                    }
                }
            }
        }
    }

    /// A command arrived: a new one "works" (progress, then the result
    /// after the work time); a running one is left to finish; a finished
    /// one gets its recorded result again.
    fn accept(
        &self,
        command_id: String,
        outbox: &mpsc::UnboundedSender<AgentMessage>,
        journal: &Arc<Mutex<HashMap<String, Entry>>>,
    ) {
        let mut entries = journal.lock().expect("journal lock");
        match entries.get(&command_id) {
            Some(Entry::Done(result)) => {
                let _ = outbox.send(AgentMessage { kind: Some(agent_message::Kind::Result(result.clone())) });
                self.stats.results.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Entry::Running) => return,
            None => {}
        }
        entries.insert(command_id.clone(), Entry::Running);
        let (outbox, journal, stats) = (outbox.clone(), Arc::clone(journal), Arc::clone(&self.stats));
        let (work, fails) = (self.options.work, self.agent.fails);
        tokio::spawn(async move {
            let started = Instant::now();
            let event = CommandEvent {
                command_id: command_id.clone(),
                seq: 1,
                phase: "simulated".into(),
                message: "working".into(),
                counters: None,
                unix_ms: runway_proto::unix_ms_now(),
            };
            let _ = outbox.send(AgentMessage { kind: Some(agent_message::Kind::Event(event)) });
            // A no-op answers at once: its progress and result leave together.
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            let (outcome, error) = if fails {
                (CommandOutcome::Failed, "simulated failure: this host fails every command".to_owned())
            } else {
                (CommandOutcome::Succeeded, String::new())
            };
            let result = CommandResult {
                command_id: command_id.clone(),
                outcome: outcome as i32,
                error,
                detail_json: String::new(),
                plan: None,
                work_ms: started.elapsed().as_millis() as u64,
            };
            journal.lock().expect("journal lock").insert(command_id, Entry::Done(result.clone()));
            let _ = outbox.send(AgentMessage { kind: Some(agent_message::Kind::Result(result)) });
            stats.results.fetch_add(1, Ordering::Relaxed);
        });
    }
}

/// Raises this process's open-file limit to at least `needed` if it may
/// (root may raise the hard limit too), else to the hard limit; children
/// started afterwards, such as the coordinators, inherit it. Every
/// simulated agent holds a socket per coordinator, and a coordinator one
/// per agent. Returns the new soft limit.
pub fn raise_fd_limit(needed: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed
        && setrlimit(Resource::Nofile, Rlimit { current: Some(needed), maximum: Some(needed) }).is_ok()
    {
        return needed;
    }
    setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })
        .expect("raise RLIMIT_NOFILE to its hard limit");
    hard
}

/// Established TCP connections in this process's network namespace whose
/// remote end is `port` (`/proc/self/net/tcp`): with the coordinators
/// elsewhere, the fleet's connections to the coordinator on that port.
pub fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("read /proc/self/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields.get(2).and_then(|r| r.rsplit_once(':')).map(|(_, p)| p);
            fields.get(3) == Some(&"01")
                && remote_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
        .count()
}

/// Resident memory of process `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time process `pid` has used so far, user plus system (fields 14
/// and 15 of /proc/PID/stat, in clock ticks).
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    let per_second = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}
