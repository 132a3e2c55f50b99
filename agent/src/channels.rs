//! One connection per coordinator, kept for the agent's life.
//!
//! The session with the leader and the who-leads probes of the other
//! coordinators (see `connection`) share these channels, so an agent that
//! has been attached a while already holds a live TLS connection to every
//! coordinator. When the leader dies, the agent opens its new session over
//! the connection its probes keep to the next leader: a stream on an open
//! HTTP/2 connection, not a TCP and TLS handshake. Ten thousand agents
//! moving at once would otherwise cost the new leader ten thousand
//! handshakes on the failover's critical path.
//!
//! A channel connects on first use and reconnects on the use after its
//! connection broke; a coordinator that cannot be reached fails the call
//! (with the transport error as its source), not the lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_identity::tls::{Security, TlsError};
use tonic::transport::Channel;

/// How long dialling a coordinator may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// TCP keepalive on every connection, so a vanished peer is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);

/// The agent's channels by coordinator address. Cheap to clone.
#[derive(Clone)]
pub struct Channels {
    security: Security,
    open: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    pub fn new(security: Security) -> Self {
        Self { security, open: Arc::default() }
    }

    /// The channel to `addr`, made (unconnected) on first ask.
    pub fn get(&self, addr: &str) -> Result<Channel, TlsError> {
        let mut open = self.open.lock().expect("channels lock");
        if let Some(channel) = open.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint =
            self.security.endpoint(addr)?.connect_timeout(CONNECT_TIMEOUT).tcp_keepalive(Some(TCP_KEEPALIVE));
        let channel = self.security.connect_lazy(endpoint);
        open.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Whether a failed call never reached a coordinator (the connection
/// could not be made or broke): tonic gives such a status the transport
/// error as its source, which a coordinator's own answer never has.
pub fn unreachable(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use runway_proto::v1::agent_channel_client::AgentChannelClient;
    use runway_proto::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
    use runway_proto::v1::{AgentMessage, CoordinatorMessage, LeaderInfo, LeaderRequest};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    /// A coordinator that only says who leads.
    struct Answers;

    #[tonic::async_trait]
    impl AgentChannel for Answers {
        type AttachStream = tokio_stream::Empty<Result<CoordinatorMessage, Status>>;

        async fn attach(
            &self,
            _: Request<Streaming<AgentMessage>>,
        ) -> Result<Response<Self::AttachStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn leader(&self, _: Request<LeaderRequest>) -> Result<Response<LeaderInfo>, Status> {
            Ok(Response::new(LeaderInfo { fencing_token: 7, ..LeaderInfo::default() }))
        }
    }

    /// Serves [`Answers`] on loopback; counts the connections it accepts.
    async fn coordinator() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let incoming = futures::stream::unfold(listener, move |listener| {
            let counter = Arc::clone(&counter);
            async move {
                let stream = listener.accept().await.map(|(stream, _)| stream);
                counter.fetch_add(1, Ordering::SeqCst);
                Some((stream, listener))
            }
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentChannelServer::new(Answers))
                .serve_with_incoming(incoming),
        );
        (addr, accepted)
    }

    async fn ask(channels: &Channels, addr: &str) -> u64 {
        let mut client = AgentChannelClient::new(channels.get(addr).unwrap());
        client.leader(LeaderRequest {}).await.unwrap().into_inner().fencing_token
    }

    #[tokio::test]
    async fn every_use_of_a_coordinator_shares_one_connection() {
        let (addr, accepted) = coordinator().await;
        let channels = Channels::new(Security::Insecure);
        for _ in 0..3 {
            assert_eq!(ask(&channels, &addr).await, 7);
        }
        // A clone (the probe's) shares it too.
        assert_eq!(ask(&channels.clone(), &addr).await, 7);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for every call");
        // Another agent's channels are another connection.
        assert_eq!(ask(&Channels::new(Security::Insecure), &addr).await, 7);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_coordinator_that_is_not_there_fails_the_call_as_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let channels = Channels::new(Security::Insecure);
        let mut client = AgentChannelClient::new(channels.get(&addr).unwrap());
        let status = client.leader(LeaderRequest {}).await.unwrap_err();
        assert!(unreachable(&status), "{status:?}");
        // A coordinator's own refusal is not.
        assert!(!unreachable(&Status::unavailable("not the leader")));
    }
}
