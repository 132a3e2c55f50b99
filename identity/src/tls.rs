//! mTLS settings, loaded the same way by every runway binary.
//!
//! TLS is on unless a config says `insecure = true`. With TLS on, every
//! server asks for a client certificate from the runway CA, and every
//! client of a coordinator ([`Security::connect`]) accepts only a peer whose
//! certificate names a coordinator identity: not the host name, which
//! the runway CA does not vouch for, but the `runway://coordinator/NAME`
//! SAN. An agent's or operator's certificate cannot pose as a coordinator
//! even though the same CA issued it.
//!
//! A revocation list (`[tls] crl`, PEM CRLs from any CA tool, or the one
//! `runway certs revoke` keeps) is checked on both sides: a server refuses
//! a revoked client at the handshake, a client refuses a revoked
//! coordinator. Long-running holders load the files again when told to
//! ([`Security::adopt`] for clients, [`ServerTls`] for the coordinator's
//! server), so revoking or rotating a certificate needs no restart.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, ServerTlsConfig, Uri};

use crate::Identity;
use crate::verify::CoordinatorsOnly;

/// `[tls]` in a config, or the CLI's `--ca`, `--cert`, `--key`, `--insecure`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file with the runway CA certificate(s) peers must chain to.
    pub ca: Option<PathBuf>,
    /// PEM file with this holder's certificate (and any intermediates).
    pub cert: Option<PathBuf>,
    /// PEM file with this holder's private key (PKCS#8, SEC1 or PKCS#1).
    pub key: Option<PathBuf>,
    /// PEM file with certificate revocation lists (one per CA, any
    /// number): a certificate listed there is refused at the handshake.
    /// Read again on reload, like the other files.
    pub crl: Option<PathBuf>,
    /// Plain-text gRPC without certificates: for throwaway test setups only.
    pub insecure: bool,
}

/// Whether a binary talks mTLS, and with what.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plain text, nobody identified: every caller is trusted.
    Insecure,
    /// mTLS with these credentials.
    Mutual(Arc<Credentials>),
}

/// A holder's certificate, key and CA, loaded and checked.
pub struct Credentials {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    /// From `[tls] crl`; empty without one.
    crls: Vec<CertificateRevocationListDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    identity: Identity,
    /// The client side, built once: every dial to a coordinator reuses it.
    connector: CoordinatorConnector,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key, not even its length.
        f.debug_struct("Credentials").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// TLS settings that cannot be used; says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS is on by default and needs {hint}: the runway CA, this holder's certificate and its key \
         (`runway certs` makes them), or insecure mode for a plain-text test setup"
    )]
    NotConfigured { hint: String },
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{} holds no usable PEM {kind}", path.display())]
    NoPem { path: PathBuf, kind: &'static str },
    #[error("{}: {error}", path.display())]
    Identity { path: PathBuf, error: crate::IdentityError },
    #[error("{} does not chain to the CA in {}: {why}", cert.display(), ca.display())]
    NotFromCa { cert: PathBuf, ca: PathBuf, why: String },
    #[error("{} is not the key of {}: {why}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf, why: String },
    #[error("{} holds no usable certificate revocation list: {why}", path.display())]
    Crl { path: PathBuf, why: String },
    #[error("cannot build the TLS server config: {0}")]
    Server(String),
    #[error("bad address {address:?}: {why}")]
    Address { address: String, why: String },
}

impl TlsFiles {
    /// Checks `addr` as a coordinator address in this mode without reading
    /// any file: whether [`Security::endpoint`] will take it once the files
    /// are loaded (the scheme matches the mode, the rest is `HOST:PORT`).
    pub fn check_address(&self, addr: &str) -> Result<(), TlsError> {
        endpoint(if self.insecure { "http" } else { "https" }, addr).map(drop)
    }

    /// Loads and checks the files. `hint` names where they are set
    /// (e.g. "`[tls] ca, cert and key`"), for the error when they are not.
    pub fn load(&self, hint: &str) -> Result<Security, TlsError> {
        if self.insecure {
            return Ok(Security::Insecure);
        }
        let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
            return Err(TlsError::NotConfigured { hint: hint.to_owned() });
        };
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let ca_certs = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or(TlsError::NoPem { path: ca.clone(), kind: "certificate" })?;
        let mut roots = RootCertStore::empty();
        for der in ca_certs {
            roots.add(der).map_err(|_| TlsError::NoPem { path: ca.clone(), kind: "CA certificate" })?;
        }
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or(TlsError::NoPem { path: cert.clone(), kind: "certificate" })?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoPem { path: key.clone(), kind: "private key" })?;
        let identity = Identity::from_der(&chain[0])
            .map_err(|error| TlsError::Identity { path: cert.clone(), error })?;
        crate::verify::chains_to(&roots, &chain).map_err(|why| TlsError::NotFromCa {
            cert: cert.clone(),
            ca: ca.clone(),
            why,
        })?;
        let crls = match &self.crl {
            Some(path) => read_crls(path, &roots)?,
            None => Vec::new(),
        };
        let roots = Arc::new(roots);
        let connector = CoordinatorConnector::new(&roots, &crls, chain.clone(), key_der)
            .map_err(|why| TlsError::KeyMismatch { key: key.clone(), cert: cert.clone(), why })?;
        Ok(Security::Mutual(Arc::new(Credentials {
            ca_pem,
            cert_pem,
            key_pem,
            roots,
            crls,
            chain,
            identity,
            connector,
        })))
    }
}

/// The CRLs in `path`: at least one, each parseable (an empty or garbled
/// file is an error, never "nothing revoked").
fn read_crls(
    path: &Path,
    roots: &RootCertStore,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let wrong = |why: String| TlsError::Crl { path: path.to_owned(), why };
    let crls = CertificateRevocationListDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| wrong(e.to_string()))?;
    if crls.is_empty() {
        return Err(wrong(
            "no PEM `X509 CRL` block (`runway certs revoke --dir DIR` writes an empty one)".into(),
        ));
    }
    // The verifier parses them; building one here reports a bad CRL now
    // rather than at the first handshake.
    WebPkiClientVerifier::builder(Arc::new(roots.clone()))
        .with_crls(crls.iter().cloned())
        .build()
        .map_err(|e| wrong(e.to_string()))?;
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read { path: path.to_owned(), error })
}

/// `addr` with `scheme` added when it has none (see [`Security::address`]).
fn address(scheme: &'static str, addr: &str) -> Result<String, TlsError> {
    let addr = addr.trim();
    let wrong = |why: String| TlsError::Address { address: addr.to_owned(), why };
    match addr.split_once("://") {
        None => Ok(format!("{scheme}://{addr}")),
        Some((given, _)) if given == scheme => Ok(addr.to_owned()),
        Some(("http", _)) => Err(wrong(
            "TLS is on, so coordinators are reached over https://; plain http:// needs insecure mode".into(),
        )),
        Some(("https", _)) => Err(wrong(
            "insecure mode talks plain text, so an https:// address cannot work; configure TLS instead"
                .into(),
        )),
        Some((given, _)) => Err(wrong(format!("unknown scheme {given:?}; use https://HOST:PORT"))),
    }
}

/// A plain endpoint for `addr` in the mode of `scheme` (see [`Security::endpoint`]).
fn endpoint(scheme: &'static str, addr: &str) -> Result<Endpoint, TlsError> {
    let addr = address(scheme, addr)?;
    let plain = format!("http://{}", &addr[scheme.len() + "://".len()..]);
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|e| TlsError::Address { address: addr.clone(), why: e.to_string() })?;
    // The URI parser takes any port text (`HOST:notaport`); dialing it fails later.
    let authority = endpoint.uri().authority().map_or("", |a| a.as_str());
    if let Some((_, port)) = authority.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(TlsError::Address { address: addr, why: format!("invalid port number {port:?}") });
    }
    Ok(endpoint)
}

impl Credentials {
    /// Who these credentials say we are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The trusted CA certificates.
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// This holder's certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// This holder's private key, PEM (for signing).
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// The server side of these credentials: our certificate, a client
    /// certificate required, chaining to the CA and not revoked.
    pub fn server_tls(&self) -> Result<ServerTls, TlsError> {
        let verifier = client_verifier(&self.roots, &self.crls)?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::Server(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(Arc::clone(&verifier))
            .with_single_cert(self.chain.clone(), key)
            .map_err(|e| TlsError::Server(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ServerTls { config: Arc::new(config), verifier })
    }
}

/// Client certificates from `roots`, checked against `crls`. A CA
/// without a CRL in the file is not an error (its certificates' status is
/// unknown, and accepted), so one CRL need not cover every CA.
fn client_verifier(
    roots: &Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder(Arc::clone(roots))
        .with_crls(crls.iter().cloned())
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Server(e.to_string()))
}

/// A TLS server's config, and the check it makes of client certificates,
/// so a server that reloads can ask whether the peers of its open
/// connections would still be let in ([`ServerTls::admits`]).
#[derive(Clone)]
pub struct ServerTls {
    /// For `tokio_rustls::TlsAcceptor`: ALPN `h2`, client certificates required.
    pub config: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `Err(why)` when a handshake with `chain` (end entity first) would be
    /// refused now: not from the CA, revoked, expired.
    pub fn admits(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let (end_entity, intermediates) = chain.split_first().ok_or("no client certificate")?;
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl Security {
    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        match self {
            Security::Insecure => "http",
            Security::Mutual(_) => "https",
        }
    }

    /// The credentials, with TLS.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        match self {
            Security::Insecure => None,
            Security::Mutual(credentials) => Some(credentials),
        }
    }

    /// `addr` with this mode's scheme added when it has none. An address
    /// whose scheme disagrees with the mode is refused rather than
    /// silently downgraded or upgraded.
    pub fn address(&self, addr: &str) -> Result<String, TlsError> {
        address(self.scheme(), addr)
    }

    /// An endpoint for a coordinator at `addr` (see [`Security::address`]).
    /// With TLS the endpoint itself is plain: [`Security::connect`] runs TLS
    /// in its own connector, which checks the coordinator identity.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TlsError> {
        endpoint(self.scheme(), addr)
    }

    /// Connects to a coordinator (see [`Security::endpoint`]).
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Security::Insecure => endpoint.connect().await,
            Security::Mutual(credentials) => {
                endpoint.connect_with_connector(credentials.connector.clone()).await
            }
        }
    }

    /// Like [`Security::connect`], connecting on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Security::Insecure => endpoint.connect_lazy(),
            Security::Mutual(credentials) => {
                endpoint.connect_with_connector_lazy(credentials.connector.clone())
            }
        }
    }

    /// Makes connections opened from now on use `fresh`'s certificate, key,
    /// CA and CRLs (connections already open keep theirs). `fresh` must be
    /// in the same mode and name the same identity: a reload rotates
    /// credentials, it does not turn one holder into another. What else
    /// these credentials hold (the CA for signatures, the signing key)
    /// stays as loaded.
    pub fn adopt(&self, fresh: &Security) -> Result<(), String> {
        match (self, fresh) {
            (Security::Insecure, Security::Insecure) => Ok(()),
            (Security::Mutual(old), Security::Mutual(new)) if old.identity == new.identity => {
                let config = new.connector.current();
                *old.connector.config.write().expect("connector lock") = config;
                Ok(())
            }
            (Security::Mutual(old), Security::Mutual(new)) => Err(format!(
                "the new certificate names {}, not {}: a different identity needs a restart",
                new.identity, old.identity
            )),
            _ => Err("TLS cannot be switched on or off without a restart".into()),
        }
    }

    /// Why the coordinator at `addr` refuses our TLS, if that is what it
    /// does: for a call that failed on a connection that broke without
    /// saying why. With TLS 1.3 a server refuses a client certificate
    /// after the client thinks the handshake is done, and the alert that
    /// says why (revoked, unknown CA) can be lost with the connection; this
    /// dials once more and reads that alert, waiting a few seconds at most.
    pub async fn diagnose(&self, addr: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        use tower_service::Service;
        let Security::Mutual(credentials) = self else { return None };
        let uri = self.endpoint(addr).ok()?.uri().clone();
        let mut connector = credentials.connector.clone();
        let wait = std::time::Duration::from_secs(3);
        let mut tls = match tokio::time::timeout(wait, connector.call(uri)).await {
            Ok(Ok(io)) => io.into_inner(),
            Ok(Err(e)) => return handshake_failure(e.as_ref()),
            Err(_) => return None,
        };
        let mut byte = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_secs(1), tls.read(&mut byte)).await {
            Ok(Err(e)) => handshake_failure(&e),
            _ => None,
        }
    }

    /// The gRPC server's TLS: our certificate, client certificates required
    /// and checked against the CA. Which identity may call what is the
    /// services' business.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let credentials = self.credentials()?;
        Some(
            ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&credentials.cert_pem, &credentials.key_pem))
                .client_ca_root(Certificate::from_pem(&credentials.ca_pem)),
        )
    }

    /// TLS for a plain client of a server that proves its host name, such
    /// as etcd: the CA, and our certificate as the client's.
    pub fn client_by_host_name(&self) -> Option<ClientTlsConfig> {
        let credentials = self.credentials()?;
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
                .identity(tonic::transport::Identity::from_pem(&credentials.cert_pem, &credentials.key_pem)),
        )
    }
}

/// TCP, then TLS that accepts only a coordinator's certificate. Clones
/// share the config, which [`Security::adopt`] replaces for the
/// connections made after it.
#[derive(Clone)]
struct CoordinatorConnector {
    config: Arc<RwLock<Arc<rustls::ClientConfig>>>,
}

impl CoordinatorConnector {
    /// `Err` when the key does not match the certificate.
    fn new(
        roots: &Arc<RootCertStore>,
        crls: &[CertificateRevocationListDer<'static>],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, String> {
        let verifier = CoordinatorsOnly::new(Arc::clone(roots), crls).map_err(|e| e.to_string())?;
        let mut config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { config: Arc::new(RwLock::new(Arc::new(config))) })
    }

    fn current(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.config.read().expect("connector lock"))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for CoordinatorConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.current();
        Box::pin(async move {
            let host = uri.host().ok_or("address without a host")?.trim_matches(['[', ']']).to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// If `error` (or any error it wraps) is a TLS failure, says what it means
/// for a runway client in one sentence. Such a failure is final: retrying
/// the same certificates against the same coordinator cannot help.
pub fn handshake_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error as Tls};
    fn in_io(io: &std::io::Error) -> Option<&rustls::Error> {
        io.get_ref()?.downcast_ref::<rustls::Error>()
    }
    let mut next = Some(error);
    while let Some(current) = next {
        // h2's error hides the I/O error it wraps from `source()`.
        let tls = current
            .downcast_ref::<Tls>()
            .or_else(|| current.downcast_ref::<std::io::Error>().and_then(in_io))
            .or_else(|| current.downcast_ref::<h2::Error>()?.get_io().and_then(in_io));
        if let Some(tls) = tls {
            return Some(match tls {
                Tls::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
                    "TLS: the coordinator's certificate is not from the runway CA given as the CA (--ca / [tls] ca)".into()
                }
                Tls::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
                    "TLS: the coordinator's certificate has expired".into()
                }
                Tls::InvalidCertificate(other) => format!("TLS: the coordinator's certificate is refused: {other}"),
                Tls::AlertReceived(AlertDescription::CertificateRevoked) => {
                    "TLS: the coordinator refused our client certificate: it is revoked (on the revocation list \
                     in the coordinator's [tls] crl); ask for a new one"
                        .into()
                }
                Tls::AlertReceived(
                    alert @ (AlertDescription::CertificateRequired
                    | AlertDescription::BadCertificate
                    | AlertDescription::UnknownCA
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::DecryptError
                    | AlertDescription::AccessDenied),
                ) => format!(
                    "TLS: the coordinator refused our client certificate ({alert:?}): it must be issued by the runway CA \
                     the coordinator trusts"
                ),
                other => format!("TLS handshake failed: {other}"),
            });
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests;
