//! Talking to the coordinators: find the leader, follow redirects, ride out
//! a failover.

use std::time::{Duration, Instant};

use runway_proto::v1::operator_client::OperatorClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// `--coordinator` and `--leader-timeout`: how to reach the coordinators.
#[derive(clap::Args, Debug, Clone)]
pub struct Coordinators {
    /// Coordinator addresses, comma-separated; the leader is found among them.
    #[arg(long, global = true, env = "RUNWAY_COORDINATOR", default_value = "http://127.0.0.1:7400")]
    pub coordinator: String,
    /// Seconds to keep looking for a leader (covers a failover) before giving up.
    #[arg(long, global = true, env = "RUNWAY_LEADER_TIMEOUT", default_value_t = 20)]
    pub leader_timeout: u64,
}

impl Coordinators {
    pub fn remote(&self) -> Remote {
        Remote::new(&self.coordinator, Duration::from_secs(self.leader_timeout))
    }
}

/// The coordinators a CLI may talk to.
#[derive(Clone, Debug)]
pub struct Remote {
    addrs: Vec<String>,
    /// How long a call keeps looking for a leader before giving up.
    find_leader_for: Duration,
}

/// Why a call failed, for the exit code.
#[derive(Debug)]
pub enum CallError {
    /// No coordinator answered as leader in time.
    Unreachable(String),
    /// The coordinator refused or failed the request.
    Status(Status),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "{m}"),
            CallError::Status(s) => write!(f, "{}", s.message()),
        }
    }
}

impl Remote {
    pub fn new(addrs: &str, find_leader_for: Duration) -> Self {
        let addrs = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| if a.contains("://") { a.to_owned() } else { format!("http://{a}") })
            .collect();
        Self { addrs, find_leader_for }
    }

    async fn client(addr: &str) -> Result<OperatorClient<Channel>, String> {
        let endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| format!("invalid coordinator address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(3));
        let channel =
            endpoint.connect().await.map_err(|e| format!("{addr}: {}", runway_engine::errors::chain(&e)))?;
        Ok(OperatorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Runs `call` against the leader: tries every address, follows the
    /// leader hint of followers, and retries while no leader is elected.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: Fn(OperatorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut hint: Option<String> = None;
        let mut problems = Vec::new();
        let mut round = 0usize;
        loop {
            let candidates: Vec<String> = hint.take().into_iter().chain(self.addrs.iter().cloned()).collect();
            for addr in candidates {
                let client = match Self::client(&addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                match call(client).await {
                    Ok(value) => return Ok(value),
                    Err(status) if status.code() == Code::Unavailable => {
                        if let Some(leader) = runway_proto::leader_hint(&status) {
                            hint = Some(leader);
                            break;
                        }
                        problems.push(format!("{addr}: {}", status.message()));
                    }
                    Err(status) => return Err(CallError::Status(status)),
                }
            }
            if hint.is_some() && round < 50 {
                round += 1;
                continue;
            }
            if start.elapsed() > self.find_leader_for {
                problems.dedup();
                let tail: Vec<String> = problems.iter().rev().take(3).cloned().collect();
                return Err(CallError::Unreachable(format!(
                    "no leader coordinator answered within {} s (tried {}); last errors: {}",
                    self.find_leader_for.as_secs(),
                    self.addrs.join(", "),
                    tail.join("; ")
                )));
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
