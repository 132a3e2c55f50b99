//! Leader election in etcd.
//!
//! Every coordinator campaigns; the winner's election key has a create
//! revision that no earlier leader's key can have. That revision is the
//! [`FencingToken`]: every etcd write of the leader compares it, and every
//! command carries it to the agents.
//!
//! The lease is renewed every TTL/3. A renewal that fails, or does not
//! succeed within the renew deadline (2/3 of the TTL), makes the leader step
//! down at once — before the lease can have expired and a follower can have
//! taken over (client-go's RenewDeadline idea). A write that etcd refuses
//! because the leader key changed ends the term at once as well.

use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Election, Leadership};
use crate::fencing::{FencingToken, Term};

/// Errors from the election. Always retried by the campaign loop.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("etcd: {0}")]
    Etcd(etcd_client::Error),
    #[error("campaign returned no leader key")]
    NoLeaderKey,
}

/// By hand, not `#[from]`: the message already holds etcd's error, so it
/// is not also the `source()` a reporter would print a second time.
impl From<etcd_client::Error> for ElectionError {
    fn from(error: etcd_client::Error) -> Self {
        ElectionError::Etcd(error)
    }
}

/// Handle to the election tasks; cheap to clone.
#[derive(Clone)]
pub struct EtcdElection {
    rx: watch::Receiver<Leadership>,
}

impl EtcdElection {
    /// Starts campaigning with `value` (our advertised address) under
    /// `name`. Runs until `shutdown`.
    pub fn start(
        client: Client,
        name: String,
        value: String,
        ttl: Duration,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (tx, rx) = watch::channel(Leadership::Follower { leader: None, token: None });
        tracker.spawn(observe_leader(client.clone(), name.clone(), tx.clone(), shutdown.clone()));
        tracker.spawn(campaign_loop(client, name, value, ttl, tx, shutdown));
        Self { rx }
    }
}

impl Election for EtcdElection {
    fn current(&self) -> Leadership {
        self.rx.borrow().clone()
    }

    fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    /// Ends the term; the campaign task then steps down, revokes the lease
    /// (so a follower takes over without waiting for the TTL) and campaigns
    /// again.
    fn resign(&self) {
        if let Leadership::Leader(term) = &*self.rx.borrow() {
            term.cancel.cancel();
        }
    }
}

async fn campaign_loop(
    client: Client,
    name: String,
    value: String,
    ttl: Duration,
    tx: watch::Sender<Leadership>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        // one_term watches `shutdown` itself so that it always steps down
        // (cancels the term) before returning.
        if let Err(e) = one_term(client.clone(), &name, &value, ttl, &tx, &shutdown).await {
            tracing::warn!(error = %e, "election attempt ended; campaigning again");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

/// Grants a lease, campaigns, leads until the lease cannot be renewed.
async fn one_term(
    mut client: Client,
    name: &str,
    value: &str,
    ttl: Duration,
    tx: &watch::Sender<Leadership>,
    shutdown: &CancellationToken,
) -> Result<(), ElectionError> {
    let lease = client.lease_grant(ttl.as_secs() as i64, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let renew_every = ttl / 3;
    let renew_deadline = ttl * 2 / 3;
    let term_cancel = shutdown.child_token();

    // Keep the lease alive while campaigning and while leading.
    let keep_alive = async {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(renew_every).await;
            let remaining = renew_deadline.saturating_sub(last_renewed.elapsed());
            let renewed = tokio::time::timeout(remaining, async {
                keeper.keep_alive().await?;
                match responses.message().await? {
                    Some(r) if r.ttl() > 0 => Ok(()),
                    _ => Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
                }
            })
            .await;
            match renewed {
                Ok(Ok(())) => last_renewed = Instant::now(),
                _ if crate::failpoint::ignore_lease_loss() => {
                    tracing::warn!("failpoint: lease not renewed; acting as leader anyway");
                }
                Ok(Err(e)) => return ElectionError::Etcd(e),
                Err(_) => {
                    return ElectionError::Etcd(etcd_client::Error::LeaseKeepAliveError(format!(
                        "no renewal within the {} ms renew deadline",
                        renew_deadline.as_millis()
                    )));
                }
            }
        }
    };
    let campaign_and_lead = async {
        let mut election = client.election_client();
        let response = election.campaign(name, value, lease).await?;
        let key = response.leader().ok_or(ElectionError::NoLeaderKey)?;
        let term = Term {
            token: FencingToken(key.rev() as u64),
            key: key.key().to_vec(),
            cancel: term_cancel.clone(),
        };
        tracing::info!(token = %term.token, "became leader");
        tx.send_replace(Leadership::Leader(term));
        std::future::pending::<Result<(), ElectionError>>().await
    };

    let result = tokio::select! {
        // Also fires when a fenced write was refused (see `store`).
        _ = term_cancel.cancelled() => Ok(()),
        e = keep_alive => Err(e),
        r = campaign_and_lead => r,
    };
    // Step down before anything else: stop dispatching, close agent streams.
    term_cancel.cancel();
    if matches!(&*tx.borrow(), Leadership::Leader(_)) {
        tracing::warn!("stepping down as leader");
        tx.send_replace(Leadership::Follower { leader: None, token: None });
    }
    // Best effort: let a follower take over without waiting for the TTL.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    result
}

/// Tracks who leads, for the address followers hand out.
async fn observe_leader(
    mut client: Client,
    name: String,
    tx: watch::Sender<Leadership>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let (leader, token) = match client.leader(name.as_str()).await {
            Ok(r) => match r.kv() {
                Some(kv) => {
                    (kv.value_str().ok().map(str::to_owned), Some(FencingToken(kv.create_revision() as u64)))
                }
                None => (None, None),
            },
            Err(_) => (None, None),
        };
        tx.send_if_modified(|state| match state {
            Leadership::Follower { leader: current, token: current_token }
                if *current != leader || *current_token != token =>
            {
                *current = leader.clone();
                *current_token = token;
                true
            }
            _ => false,
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
