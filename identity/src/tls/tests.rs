use super::*;

#[test]
fn coordinator_addresses_are_checked_without_reading_a_file() {
    let tls = TlsFiles::default();
    for good in ["https://10.0.0.5:7400", "10.0.0.5:7400", "https://[::1]:7400", "https://coord-1"] {
        tls.check_address(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let wrong_scheme = tls.check_address("http://10.0.0.5:7400").unwrap_err().to_string();
    assert!(wrong_scheme.contains("TLS is on"), "{wrong_scheme}");
    let bad_port = tls.check_address("https://10.0.0.5:notaport").unwrap_err().to_string();
    assert!(bad_port.contains("invalid port number \"notaport\""), "{bad_port}");
    let insecure = TlsFiles { insecure: true, ..TlsFiles::default() };
    insecure.check_address("http://127.0.0.1:7400").unwrap();
    assert!(insecure.check_address("https://127.0.0.1:7400").is_err());
    assert_eq!(Security::Insecure.address("127.0.0.1:7400").unwrap(), "http://127.0.0.1:7400");
}

#[test]
fn a_reload_rotates_the_connector_of_the_same_identity_only() {
    use crate::issue::Authority;
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::create(1).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.own().cert_pem).unwrap();
    let load = |stem: &str, identity: &Identity| {
        let issued = ca.issue(identity, &[], 1).unwrap();
        let (cert, key) = (dir.path().join(format!("{stem}.pem")), dir.path().join(format!("{stem}.key")));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let files = TlsFiles {
            ca: Some(dir.path().join("ca.pem")),
            cert: Some(cert),
            key: Some(key),
            ..TlsFiles::default()
        };
        files.load("test").unwrap()
    };
    let agent = Identity::Agent { environment: "staging".into(), name: "db-1".into() };
    let running = load("db-1", &agent);
    let clone = running.clone();
    let rotated = load("db-1-rotated", &agent);
    let connector = |security: &Security| security.credentials().unwrap().connector.current();
    assert!(!Arc::ptr_eq(&connector(&running), &connector(&rotated)));
    running.adopt(&rotated).unwrap();
    assert!(Arc::ptr_eq(&connector(&clone), &connector(&rotated)), "every clone dials with the new files");
    let other = load("db-2", &Identity::Agent { environment: "staging".into(), name: "db-2".into() });
    let why = running.adopt(&other).unwrap_err();
    assert!(why.contains("a different identity needs a restart"), "{why}");
    assert!(running.adopt(&Security::Insecure).is_err());
    assert!(Arc::ptr_eq(&connector(&running), &connector(&rotated)), "a refused reload changes nothing");
}

#[test]
fn a_revoked_client_is_refused_after_a_reload_and_the_others_are_not() {
    use crate::issue::{Authority, Revoked, serial_number};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    let ca = Authority::create(1).unwrap();
    let server = ca.issue(&Identity::Coordinator { name: "c1".into() }, &[], 1).unwrap();
    let alice = ca
        .issue(&Identity::Operator { name: "alice".into(), deploy: vec![], restore: vec![] }, &[], 1)
        .unwrap();
    let bob = ca
        .issue(&Identity::Operator { name: "bob".into(), deploy: vec![], restore: vec![] }, &[], 1)
        .unwrap();
    let chain = |pem: &str| vec![CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()];
    let files = TlsFiles {
        ca: write("ca.pem", &ca.own().cert_pem),
        cert: write("c1.pem", &server.cert_pem),
        key: write("c1.key", &server.key_pem),
        crl: write("ca.crl", &ca.revocation_list(&[], 30).unwrap()),
        ..TlsFiles::default()
    };
    let before = files.load("test").unwrap().credentials().unwrap().server_tls().unwrap();
    before.admits(&chain(&alice.cert_pem)).unwrap();

    let revoked = Revoked {
        serial: serial_number(alice.cert_pem.as_bytes()).unwrap(),
        at: time::OffsetDateTime::now_utc(),
    };
    write("ca.crl", &ca.revocation_list(&[revoked], 30).unwrap());
    let after = files.load("test").unwrap().credentials().unwrap().server_tls().unwrap();
    let why = after.admits(&chain(&alice.cert_pem)).unwrap_err();
    assert!(why.contains("Revoked"), "{why}");
    after.admits(&chain(&bob.cert_pem)).unwrap();

    write("ca.crl", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
    let garbled = files.load("test").unwrap_err().to_string();
    assert!(garbled.contains("ca.crl holds no usable certificate revocation list"), "{garbled}");
    write("ca.crl", "");
    assert!(files.load("test").is_err(), "an empty file is not an empty list");
}

#[test]
fn an_unreadable_file_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ca.pem");
    let files = TlsFiles {
        ca: Some(missing.clone()),
        cert: Some(missing.clone()),
        key: Some(missing.clone()),
        ..TlsFiles::default()
    };
    let error = files.load("test").unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with(&format!("cannot read {}: ", missing.display())), "{message}");
    // The cause is in the message, so it is not also the source a
    // reporter walking the chain would print again.
    assert!(std::error::Error::source(&error).is_none(), "{message}");
}
