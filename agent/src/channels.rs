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
