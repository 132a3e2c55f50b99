//! The coordinator's side of a connection, before gRPC sees it: accepting
//! TCP, the connection caps, the TLS handshake and its deadline, and
//! closing the connections of a peer whose certificate a reload revoked.
//!
//! - Caps: at most `[server] max_connections` open at once, and
//!   `max_connections_per_peer` from one IP address. A connection over a
//!   cap is closed at once (a metric, and a warning at most every few
//!   seconds): a flood of idle sockets cannot take the slots of agents and
//!   operators from other addresses.
//! - Every handshake runs in its own task with `handshake_timeout`, so a
//!   client that stalls mid-handshake holds one slot for a bounded time and
//!   never blocks the accept loop.
//! - [`Acceptor::reload`] swaps the TLS config for new handshakes and
//!   closes every open connection whose client certificate the new config
//!   refuses (revoked, or no longer from a trusted CA): every call and
//!   stream on it ends, an agent's session among them.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use runway_identity::Identity;
use runway_identity::tls::ServerTls;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;

use crate::config::ServerLimits;

/// A client's certificate chain, end entity first.
type Chain = Arc<Vec<CertificateDer<'static>>>;

/// A client's chain and the config whose handshake accepted it.
type Checked = (Chain, Arc<tokio_rustls::rustls::ServerConfig>);

/// Accepts connections within the caps; holds the TLS config and the open
/// connections. Cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    limits: ServerLimits,
    /// `None` in insecure mode.
    tls: Arc<RwLock<Option<ServerTls>>>,
    open: Arc<Mutex<Open>>,
    warn: Arc<Mutex<Throttle>>,
    /// Failed handshakes are logged on a throttle of their own, so a flood
    /// of them never hides a warning about the caps, nor the reverse.
    warn_handshake: Arc<Mutex<Throttle>>,
}

/// The open connections.
#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections past their handshake that carry a client certificate.
    certified: HashMap<u64, Certified>,
    next_id: u64,
}

struct Certified {
    chain: Chain,
    peer: SocketAddr,
    close: CancellationToken,
}

/// One connection's place under the caps; given back on drop.
struct Slot {
    id: u64,
    ip: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connections lock");
        open.total -= 1;
        if let Some(count) = open.per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
        open.certified.remove(&self.id);
        crate::metrics::get().connections_open(-1);
    }
}

/// Which cap a connection was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Total,
    Peer,
}

impl Acceptor {
    /// `tls` is `None` in insecure mode.
    pub fn new(limits: ServerLimits, tls: Option<ServerTls>) -> Acceptor {
        Acceptor {
            limits,
            tls: Arc::new(RwLock::new(tls)),
            open: Arc::default(),
            warn: Arc::default(),
            warn_handshake: Arc::default(),
        }
    }

    /// Connections open now (handshaking or established).
    pub fn open_connections(&self) -> usize {
        self.open.lock().expect("connections lock").total
    }

    fn admit(&self, ip: IpAddr) -> Result<Slot, Over> {
        let mut open = self.open.lock().expect("connections lock");
        if open.total >= self.limits.max_connections {
            return Err(Over::Total);
        }
        let from_ip = open.per_ip.entry(ip).or_default();
        if *from_ip >= self.limits.max_connections_per_peer {
            return Err(Over::Peer);
        }
        *from_ip += 1;
        open.total += 1;
        open.next_id += 1;
        crate::metrics::get().connections_open(1);
        Ok(Slot { id: open.next_id, ip, open: Arc::clone(&self.open) })
    }

    /// Uses `tls` for handshakes from now on and closes the open
    /// connections whose client certificate it refuses; returns how many.
    pub fn reload(&self, tls: ServerTls) -> usize {
        // New handshakes first, so nothing revoked gets in while the open
        // connections are checked (outside the lock: accepting goes on).
        *self.tls.write().expect("tls lock") = Some(tls.clone());
        let open: Vec<(Chain, SocketAddr, CancellationToken)> = {
            let open = self.open.lock().expect("connections lock");
            open.certified
                .values()
                .filter(|c| !c.close.is_cancelled())
                .map(|c| (Arc::clone(&c.chain), c.peer, c.close.clone()))
                .collect()
        };
        let mut closed = 0;
        for (chain, peer, close) in open {
            if let Err(why) = tls.admits(&chain) {
                let holder = Identity::from_der(&chain[0])
                    .map_or_else(|e| e.to_string(), |identity| identity.to_string());
                tracing::warn!(%holder, %peer, %why, "closing a connection whose certificate is no longer accepted");
                close.cancel();
                closed += 1;
            }
        }
        closed
    }

    /// Accepts on `listener` until `shutdown`, handing on each connection
    /// once its TLS handshake is done (at once in insecure mode). The
    /// stream ends when `shutdown` fires.
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> ReceiverStream<io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>> {
        let tls = Arc::clone(&self.tls);
        let timeout = self.limits.handshake_timeout;
        self.serve(listener, tracker, shutdown, move |tcp: TcpStream| {
            let config = tls.read().expect("tls lock").as_ref().map(|tls| Arc::clone(&tls.config));
            async move {
                let config = config.ok_or_else(|| io::Error::other("TLS is not configured"))?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config));
                let accepted = tokio::time::timeout(timeout, acceptor.accept(tcp).into_fallible())
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?;
                match accepted {
                    Ok(stream) => {
                        let chain =
                            stream.get_ref().1.peer_certificates().map(|certs| Arc::new(certs.to_vec()));
                        Ok((stream, chain.map(|chain| (chain, config))))
                    }
                    Err((error, tcp)) => {
                        linger(tcp).await;
                        Err(error)
                    }
                }
            }
        })
    }

    /// Like [`Acceptor::serve_tls`], without TLS (insecure mode).
    pub fn serve_plain(
        &self,
        listener: TcpListener,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> ReceiverStream<io::Result<Conn<TcpStream>>> {
        self.serve(listener, tracker, shutdown, |tcp| async move { Ok((tcp, None)) })
    }

    fn serve<IO, H, Fut>(
        &self,
        listener: TcpListener,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
        handshake: H,
    ) -> ReceiverStream<io::Result<Conn<IO>>>
    where
        IO: Send + 'static,
        H: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<(IO, Option<Checked>)>> + Send + 'static,
    {
        // Handshaken connections wait here for the server to take them.
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        let handshakes = tracker.clone();
        tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait for some to close.
                        Self::warn(&this.warn, format_args!("cannot accept a connection: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match this.admit(peer.ip()) {
                    Ok(slot) => slot,
                    Err(over) => {
                        drop(tcp);
                        this.refused(over, peer);
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let handshake = handshake(tcp);
                let (this, tx, shutdown) = (this.clone(), tx.clone(), shutdown.clone());
                handshakes.spawn(async move {
                    let (io, checked) = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        done = handshake => match done {
                            Ok(done) => done,
                            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                                crate::metrics::get().connection_refused("handshake_timeout");
                                return;
                            }
                            Err(e) => {
                                crate::metrics::get().connection_refused("handshake_failed");
                                Self::warn(&this.warn_handshake, format_args!("TLS handshake with {peer} failed: {e}"));
                                return;
                            }
                        },
                    };
                    let close = CancellationToken::new();
                    if let Some((chain, config)) = checked.filter(|(chain, _)| !chain.is_empty()) {
                        let mut open = this.open.lock().expect("connections lock");
                        // A reload during the handshake swept the connections
                        // before this one was listed: check it as the sweep would.
                        if let Some(now) = this.tls.read().expect("tls lock").as_ref()
                            && !Arc::ptr_eq(&now.config, &config)
                            && let Err(why) = now.admits(&chain)
                        {
                            tracing::warn!(%peer, %why, "closing a connection whose certificate a reload during its handshake refused");
                            return;
                        }
                        open.certified.insert(slot.id, Certified { chain, peer, close: close.clone() });
                    }
                    let conn = Conn { io, _slot: slot, closed: Box::pin(close.cancelled_owned()), gone: false };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
        ReceiverStream::new(rx)
    }

    fn refused(&self, over: Over, peer: SocketAddr) {
        let (reason, cap, key) = match over {
            Over::Total => ("total_cap", self.limits.max_connections, "max_connections"),
            Over::Peer => ("peer_cap", self.limits.max_connections_per_peer, "max_connections_per_peer"),
        };
        crate::metrics::get().connection_refused(reason);
        let scope = if over == Over::Total { "in total".to_owned() } else { format!("from {}", peer.ip()) };
        Self::warn(
            &self.warn,
            format_args!(
                "closed a connection from {peer}: {cap} connections are open {scope} (`[server] {key}`)"
            ),
        );
    }

    /// A warning, at most one per [`WARN_EVERY`]; the ones held back are
    /// counted in the next.
    fn warn(throttle: &Mutex<Throttle>, message: std::fmt::Arguments<'_>) {
        let held_back = {
            let mut throttle = throttle.lock().expect("warn lock");
            match throttle.admit(Instant::now()) {
                Some(held_back) => held_back,
                None => return,
            }
        };
        if held_back > 0 {
            tracing::warn!("{message} ({held_back} more like it not logged)");
        } else {
            tracing::warn!("{message}");
        }
    }
}

/// Closes a connection whose handshake failed so that the client reads
/// the alert saying why (a revoked or unknown certificate): with TLS 1.3
/// the client has sent its first request by then, and closing with that
/// unread would reset the connection, and the alert with it. So: our
/// side closed, what the client sent read and dropped, for a second at most.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(1..) = tcp.read(&mut sink).await {}
    })
    .await;
}

/// How often [`Acceptor`] warns about refused connections at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Lets one message through per [`WARN_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    /// `Some(held back since the last one)` when a message may go now.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// An accepted connection as the gRPC server sees it: it holds its slot
/// under the caps while open, and reads end (as if the peer closed) once
/// [`Acceptor::reload`] closes it.
pub struct Conn<IO> {
    io: IO,
    _slot: Slot,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    gone: bool,
}

impl<IO> Conn<IO> {
    /// Whether the connection was closed; registers the waker.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.gone && self.closed.as_mut().poll(cx).is_ready() {
            self.gone = true;
        }
        self.gone
    }
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.poll_gone(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.poll_gone(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.poll_gone(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
