use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use super::*;

fn limits(total: usize, per_peer: usize) -> ServerLimits {
    ServerLimits {
        handshake_timeout: Duration::from_millis(200),
        max_connections: total,
        max_connections_per_peer: per_peer,
    }
}

/// Whether the server closed `tcp` (within a second).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn connections_past_a_cap_are_closed_at_once_and_slots_come_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(limits(3, 2), None);
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let mut incoming = acceptor.serve_plain(listener, &tracker, shutdown.clone());

    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(addr)
    };
    let mut a1 = from("127.0.0.1").await.unwrap();
    let a1_conn = incoming.next().await.unwrap().unwrap();
    let a2 = from("127.0.0.1").await.unwrap();
    let _a2_conn = incoming.next().await.unwrap().unwrap();
    let mut a3 = from("127.0.0.1").await.unwrap();
    assert!(closed_by_server(&mut a3).await, "the third from one address is over the per-peer cap");
    let b1 = from("127.0.0.2").await.unwrap();
    let _b1_conn = incoming.next().await.unwrap().unwrap();
    let mut b2 = from("127.0.0.2").await.unwrap();
    assert!(closed_by_server(&mut b2).await, "the fourth in all is over the total cap");
    assert_eq!(acceptor.open_connections(), 3);

    // A connection that ends gives its slot back.
    drop(a1_conn);
    assert!(closed_by_server(&mut a1).await);
    assert_eq!(acceptor.open_connections(), 2);
    let mut a4 = from("127.0.0.1").await.unwrap();
    let mut a4_conn = incoming.next().await.unwrap().unwrap();
    a4.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    a4_conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
    drop((a2, b1));
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn a_stalled_handshake_holds_its_slot_only_until_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pki = runway_identity::issue::Authority::create(1).unwrap();
    let coordinator = pki.issue(&Identity::Coordinator { name: "c1".into() }, &[], 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let files = runway_identity::tls::TlsFiles {
        ca: write("ca.pem", &pki.own().cert_pem),
        cert: write("c1.pem", &coordinator.cert_pem),
        key: write("c1.key", &coordinator.key_pem),
        ..Default::default()
    };
    let security = files.load("test").unwrap();
    let tls = security.credentials().unwrap().server_tls().unwrap();
    let acceptor = Acceptor::new(limits(10, 10), Some(tls));
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let _incoming = acceptor.serve_tls(listener, &tracker, shutdown.clone());

    let started = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    // The first bytes of a ClientHello, and nothing more.
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(acceptor.open_connections(), 2);
    assert!(closed_by_server(&mut idle).await);
    assert!(closed_by_server(&mut stalled).await);
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    assert_eq!(acceptor.open_connections(), 0);
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn a_reload_closes_the_connections_of_a_revoked_certificate_and_only_those() {
    use runway_identity::issue::{Authority, Revoked, serial_number};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;

    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let ca = Authority::create(1).unwrap();
    let server = ca.issue(&Identity::Coordinator { name: "c1".into() }, &["localhost".into()], 1).unwrap();
    let operator = |name: &str| {
        ca.issue(&Identity::Operator { name: name.into(), deploy: vec![], restore: vec![] }, &[], 1).unwrap()
    };
    let (alice, bob) = (operator("alice"), operator("bob"));
    let files = runway_identity::tls::TlsFiles {
        ca: write("ca.pem", &ca.own().cert_pem),
        cert: write("c1.pem", &server.cert_pem),
        key: write("c1.key", &server.key_pem),
        crl: write("ca.crl", &ca.revocation_list(&[], 1).unwrap()),
        ..Default::default()
    };
    let server_tls = || files.load("test").unwrap().credentials().unwrap().server_tls().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(limits(10, 10), Some(server_tls()));
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let mut incoming = acceptor.serve_tls(listener, &tracker, shutdown.clone());

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.own().cert_pem.as_bytes()).unwrap())
        .unwrap();
    let roots = Arc::new(roots);
    let dial = |holder: &runway_identity::issue::Issued| {
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(holder.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(holder.key_pem.as_bytes()).unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(chain, key)
            .unwrap();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
        }
    };
    let mut alice_tls = dial(&alice).await.unwrap();
    let mut alice_conn = incoming.next().await.unwrap().unwrap();
    let mut bob_tls = dial(&bob).await.unwrap();
    let mut bob_conn = incoming.next().await.unwrap().unwrap();
    for (client, conn) in [(&mut alice_tls, &mut alice_conn), (&mut bob_tls, &mut bob_conn)] {
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).await.unwrap();
    }

    let revoked = Revoked::now(serial_number(alice.cert_pem.as_bytes()).unwrap());
    write("ca.crl", &ca.revocation_list(&[revoked], 1).unwrap());
    assert_eq!(acceptor.reload(server_tls()), 1, "alice's connection, not bob's");
    let mut got = [0u8; 4];
    assert_eq!(alice_conn.read(&mut got).await.unwrap(), 0, "reads end once the connection is closed");
    assert!(alice_conn.write_all(b"pong").await.is_err());
    bob_tls.write_all(b"ping").await.unwrap();
    bob_tls.flush().await.unwrap();
    bob_conn.read_exact(&mut got).await.unwrap();
    assert_eq!(acceptor.reload(server_tls()), 0, "closed once");

    // New handshakes use the new list: with TLS 1.3 the client learns on its first read.
    let mut again = dial(&alice).await.unwrap();
    let _ = again.write_all(b"ping").await;
    let refused = again.read(&mut got).await;
    assert!(refused.is_err() || matches!(refused, Ok(0)), "{refused:?}");
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

#[test]
fn warnings_are_throttled_and_count_what_they_held_back() {
    let mut throttle = Throttle::default();
    let start = Instant::now();
    assert_eq!(throttle.admit(start), Some(0));
    assert_eq!(throttle.admit(start + Duration::from_secs(1)), None);
    assert_eq!(throttle.admit(start + Duration::from_secs(2)), None);
    assert_eq!(throttle.admit(start + WARN_EVERY), Some(2));
}
