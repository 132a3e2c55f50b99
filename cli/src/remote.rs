//! Talking to the coordinators: find the leader, follow redirects, ride out
//! a failover.
//!
//! One search round tries every address and follows a follower's leader
//! hint at once; rounds repeat (via `backon`) every `ROUND_PAUSE` until
//! `--leader-timeout` has passed.

use std::time::{Duration, Instant};

use backon::{ConstantBuilder, Retryable};
use runway_proto::v1::agent_channel_client::AgentChannelClient;
use runway_proto::v1::operator_client::OperatorClient;
use runway_proto::v1::{LeaderInfo, LeaderRequest};
use std::path::PathBuf;

use runway_identity::tls::{Credentials, Security, TlsError, TlsFiles, handshake_failure};
use tonic::transport::Channel;

use crate::output::Failure;
use tonic::{Code, Status};

/// Pause between two search rounds while no leader answers.
const ROUND_PAUSE: Duration = Duration::from_millis(300);

/// How often a queued call (`--queue`) asks again while another change
/// holds the environment.
const QUEUE_PAUSE: Duration = Duration::from_secs(2);
/// Leader hints followed in one round, so that two coordinators pointing at
/// each other during an election cannot keep the CLI busy.
const MAX_HOPS: usize = 5;
/// How many of the last errors an Unreachable error quotes.
const ERRORS_SHOWN: usize = 3;

/// `--coordinator`, `--leader-timeout` and the TLS flags: how to reach the
/// coordinators, and who we are to them.
#[derive(clap::Args, Debug, Clone)]
pub struct Coordinators {
    /// Coordinator addresses, comma-separated; the leader is found among
    /// them. `https://` is added where no scheme is given (`http://` with
    /// --insecure).
    #[arg(long, global = true, env = "RUNWAY_COORDINATOR", default_value = "127.0.0.1:7400")]
    pub coordinator: String,
    /// Seconds to keep looking for a leader (covers a failover) before giving up.
    #[arg(long, global = true, env = "RUNWAY_LEADER_TIMEOUT", default_value_t = 20)]
    pub leader_timeout: u64,
    /// The runway CA certificate (PEM) the coordinators' certificates chain to.
    #[arg(long, global = true, env = "RUNWAY_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Your operator certificate (PEM, naming runway://operator/NAME); it
    /// identifies you to the coordinator and signs the migrations you deploy.
    #[arg(long, global = true, env = "RUNWAY_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, global = true, env = "RUNWAY_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Plain-text gRPC without certificates, for coordinators running with
    /// `[tls] insecure = true` (throwaway test setups only).
    #[arg(long, global = true, env = "RUNWAY_INSECURE")]
    pub insecure: bool,
}

impl Coordinators {
    /// The coordinators these flags name, with the TLS files loaded.
    pub fn remote(&self) -> Result<Remote, Failure> {
        let files = TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure: self.insecure,
            ..TlsFiles::default()
        };
        let security = files
            .load("--ca, --cert and --key (or RUNWAY_CA, RUNWAY_CERT, RUNWAY_KEY)")
            .map_err(|e| Failure::invalid(e.to_string()))?;
        if matches!(security, Security::Insecure) {
            eprintln!("warning: --insecure: talking plain text to the coordinators, without identities");
        }
        Remote::new(&self.coordinator, Duration::from_secs(self.leader_timeout), security)
            .map_err(|e| Failure::invalid(e.to_string()))
    }
}

/// The coordinators a CLI may talk to.
#[derive(Clone, Debug)]
pub struct Remote {
    addrs: Vec<String>,
    security: Security,
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
    /// TLS failed: our certificate or the coordinator's was refused.
    Tls(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "{m}"),
            CallError::Status(s) => write!(f, "{}", s.message()),
            CallError::Tls(m) => write!(f, "{m}"),
        }
    }
}

/// How one search round ended without an answer.
#[derive(Debug)]
enum Miss {
    /// Nobody answered as leader; what each address said. Worth another round.
    NoLeader(Vec<String>),
    /// The leader answered with an error: final.
    Refused(Status),
    /// TLS failed (a certificate refused either way): final.
    Tls(String),
}

impl Remote {
    /// `addrs` comma-separated; the scheme of `security` is added where
    /// none is given, and a scheme that disagrees with it is refused.
    pub fn new(addrs: &str, find_leader_for: Duration, security: Security) -> Result<Self, TlsError> {
        let addrs = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| security.address(a))
            .collect::<Result<_, _>>()?;
        Ok(Self { addrs, security, find_leader_for })
    }

    /// Our credentials (`None` in insecure mode).
    pub fn credentials(&self) -> Option<&std::sync::Arc<Credentials>> {
        self.security.credentials()
    }

    async fn client(&self, addr: &str) -> Result<OperatorClient<Channel>, Miss> {
        let endpoint = self
            .security
            .endpoint(addr)
            .map_err(|e| Miss::Tls(e.to_string()))?
            .connect_timeout(Duration::from_secs(3));
        let channel = self.security.connect(endpoint).await.map_err(|e| match handshake_failure(&e) {
            Some(tls) => Miss::Tls(format!("{addr}: {tls}")),
            None => Miss::NoLeader(vec![format!("{addr}: {}", runway_engine::errors::chain(&e))]),
        })?;
        let limit = runway_proto::bundle::MAX_MESSAGE_BYTES;
        Ok(OperatorClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit))
    }

    /// Every address, as given (with its scheme).
    pub fn addresses(&self) -> &[String] {
        &self.addrs
    }

    /// What each coordinator says about who leads (`AgentChannel.Leader`),
    /// asked of all at once, in the order of `--coordinator`; an error says
    /// why one did not answer. Never follows a hint and never retries: this
    /// is each one's own view, as it is now.
    pub async fn views(&self) -> Vec<(String, Result<LeaderInfo, String>)> {
        let tasks: Vec<_> = self
            .addrs
            .iter()
            .map(|addr| {
                let (remote, addr) = (self.clone(), addr.clone());
                tokio::spawn(async move {
                    let answer = remote.view(&addr).await;
                    (addr, answer)
                })
            })
            .collect();
        let mut views = Vec::new();
        for (task, addr) in tasks.into_iter().zip(&self.addrs) {
            views.push(task.await.unwrap_or_else(|e| (addr.clone(), Err(format!("asking failed: {e}")))));
        }
        views
    }

    async fn view(&self, addr: &str) -> Result<LeaderInfo, String> {
        let endpoint = self
            .security
            .endpoint(addr)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        let channel = self.security.connect(endpoint).await.map_err(|e| match handshake_failure(&e) {
            Some(tls) => tls,
            None => runway_engine::errors::chain(&e),
        })?;
        let answer = AgentChannelClient::new(channel).leader(LeaderRequest {}).await;
        answer.map(tonic::Response::into_inner).map_err(|status| status.message().to_owned())
    }

    /// Runs `call` against the leader: tries every address, follows the
    /// leader hint of followers, and retries while no leader is elected.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: Fn(OperatorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.find_leader_for;
        let call = &call;
        let result = (|| self.round(call))
            .retry(ConstantBuilder::new().with_delay(ROUND_PAUSE).without_max_times())
            .when(|miss| matches!(miss, Miss::NoLeader(_)) && Instant::now() < deadline)
            .await;
        result.map_err(|miss| match miss {
            Miss::Refused(status) => CallError::Status(status),
            Miss::Tls(message) => CallError::Tls(message),
            Miss::NoLeader(mut problems) => {
                problems.dedup();
                let start = problems.len().saturating_sub(ERRORS_SHOWN);
                CallError::Unreachable(format!(
                    "no leader coordinator answered within {} s (tried {}); last errors: {}",
                    self.find_leader_for.as_secs(),
                    self.addrs.join(", "),
                    problems[start..].join("; ")
                ))
            }
        })
    }

    /// As [`Self::call`]; with `queue`, a refusal because another change
    /// holds the environment is waited out: `note` says what it waits for
    /// (each time the holder changes), and the call is made again every
    /// [`QUEUE_PAUSE`] until it is accepted or refused for another reason.
    pub async fn call_queued<T, F, Fut>(
        &self,
        queue: bool,
        note: impl Fn(&str),
        call: F,
    ) -> Result<T, CallError>
    where
        F: Fn(OperatorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut last = String::new();
        loop {
            match self.call(&call).await {
                Err(CallError::Status(status))
                    if queue
                        && runway_proto::refusal_reason(&status)
                            == Some(runway_proto::REASON_ENVIRONMENT_BUSY) =>
                {
                    if status.message() != last {
                        last = status.message().to_owned();
                        note(&format!("queued: {last}"));
                    }
                    tokio::time::sleep(QUEUE_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// One search round: every address in turn, each follower's hint right away.
    async fn round<T, F, Fut>(&self, call: &F) -> Result<T, Miss>
    where
        F: Fn(OperatorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut problems = Vec::new();
        for first in &self.addrs {
            let mut addr = first.clone();
            for _ in 0..=MAX_HOPS {
                let client = match self.client(&addr).await {
                    Ok(client) => client,
                    Err(Miss::NoLeader(mut why)) => {
                        problems.append(&mut why);
                        break;
                    }
                    Err(final_miss) => return Err(final_miss),
                };
                match call(client).await {
                    Ok(value) => return Ok(value),
                    Err(status) => {
                        // A certificate refused on the first call (TLS 1.3
                        // reports the client's only then) is final.
                        if let Some(tls) = handshake_failure(&status) {
                            return Err(Miss::Tls(format!("{addr}: {tls}")));
                        }
                        // The connection broke after connecting, without a
                        // reason (not Unavailable: nothing answered): ask TLS once more.
                        if std::error::Error::source(&status).is_some()
                            && matches!(status.code(), Code::Unknown | Code::Cancelled)
                            && let Some(tls) = self.security.diagnose(&addr).await
                        {
                            return Err(Miss::Tls(format!("{addr}: {tls}")));
                        }
                        if status.code() != Code::Unavailable {
                            return Err(Miss::Refused(status));
                        }
                        match runway_proto::leader_hint(&status).filter(|leader| *leader != addr) {
                            Some(leader) => addr = leader,
                            None => {
                                problems.push(format!("{addr}: {}", status.message()));
                                break;
                            }
                        }
                    }
                }
            }
        }
        Err(Miss::NoLeader(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_after_the_leader_timeout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remote =
            Remote::new(&format!("127.0.0.1:{port}"), Duration::from_secs(1), Security::Insecure).unwrap();
        let started = Instant::now();
        let rounds = std::sync::atomic::AtomicUsize::new(0);
        let error = remote
            .call(|mut client| {
                rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move { client.list_agents(runway_proto::v1::ListAgentsRequest::default()).await }
            })
            .await
            .expect_err("nobody listens");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(rounds.into_inner(), 0, "never connected, so never called");
        let CallError::Unreachable(message) = error else { panic!("{error:?}") };
        assert!(message.contains(&format!("tried http://127.0.0.1:{port}")), "{message}");
        assert!(message.contains("last errors: http://127.0.0.1:"), "{message}");
    }
}
