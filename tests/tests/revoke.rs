//! Revoking certificates without restarting anything (real etcd, two
//! coordinators and two app agents as processes, all on mTLS, every
//! config naming the CA's revocation list `pki/ca.crl`).
//!
//! 1. Operator `viewer` lists agents. `runway certs revoke operator-viewer`
//!    adds its certificate to the list; SIGHUP to both coordinators: each
//!    logs a reload caused by the signal, and `viewer`'s next call is
//!    refused at the handshake: the CLI and the coordinator's log say the
//!    certificate is revoked. Other operators are not affected.
//! 2. `runway certs revoke agent-staging-app-2`, no signal: the
//!    coordinators notice the changed file by themselves, the leader
//!    closes app-2's connection, `runway agents` shows app-2 away, and it
//!    stays away (each reconnect is refused at the handshake) while app-1
//!    stays attached. The agents reload the changed list too.
//!
//! 3. A revocation list that cannot be read: every coordinator logs the
//!    failed reload and keeps the old list (`viewer` is still refused,
//!    others are not).
//!
//! No process is restarted: the test checks every PID is the one it
//! started.

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::process::{bin, wait_until};

fn runway_certs_revoke(cluster: &Cluster, name: &str) {
    let pki = cluster.pki.as_ref().expect("a TLS cluster");
    let out = std::process::Command::new(bin("runway"))
        .args(["certs", "revoke", name, "--dir"])
        .arg(pki.dir())
        .output()
        .expect("run runway certs revoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "runway certs revoke {name}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 certificate(s) revoked now"), "{stdout}");
}

/// Every process's PID, to show none was restarted.
fn pids(cluster: &Cluster) -> Vec<u32> {
    cluster.coordinators.iter().map(|c| c.proc.pid()).chain(cluster.apps.iter().map(|a| a.pid())).collect()
}

fn connected_agents(cluster: &Cluster) -> Vec<String> {
    let out = cluster.runway(&["agents", "--env", ENV, "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    runway_tests::watch::json_lines(&out.stdout)
        .iter()
        .map(|agent| agent["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_revoked_operator_is_refused_and_a_revoked_agent_disconnected_without_a_restart() {
    let cluster = Cluster::start(Options {
        coordinators: 2,
        app_hosts: 2,
        db_host: false,
        revocation: true,
        ..Options::default()
    });
    let started = pids(&cluster);

    // 1. An operator, revoked, SIGHUP.
    let before = cluster.runway_as("viewer", &["agents", "--env", ENV]);
    assert!(before.status.success(), "{}", String::from_utf8_lossy(&before.stderr));
    runway_certs_revoke(&cluster, "operator-viewer");
    let reloads_before: Vec<usize> = cluster
        .coordinators
        .iter()
        .map(|c| c.proc.log_text().matches("reloaded certificates").count())
        .collect();
    for coordinator in &cluster.coordinators {
        coordinator.proc.signal("HUP");
    }
    for (coordinator, before) in cluster.coordinators.iter().zip(reloads_before) {
        wait_until(&format!("{} to reload on SIGHUP", coordinator.name), Duration::from_secs(10), || {
            let log = coordinator.proc.log_text();
            let by_signal =
                log.lines().filter(|l| l.contains("reloaded certificates") && l.contains("SIGHUP"));
            (log.matches("reloaded certificates").count() > before && by_signal.count() >= 1).then_some(())
        });
    }
    let refused = cluster.runway_as("viewer", &["agents", "--env", ENV]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a revoked operator's call went through");
    assert!(stderr.contains("it is revoked"), "the CLI says why: {stderr}");
    wait_until("a coordinator to log the revoked certificate it refused", Duration::from_secs(5), || {
        let said = cluster
            .coordinators
            .iter()
            .any(|c| c.proc.log_text().contains("invalid peer certificate: Revoked"));
        said.then_some(())
    });
    let others = cluster.runway_as("approver", &["agents", "--env", ENV]);
    assert!(others.status.success(), "{}", String::from_utf8_lossy(&others.stderr));

    // 2. An agent, revoked, no signal.
    assert_eq!(connected_agents(&cluster), ["app-1", "app-2"]);
    let revoked_at = Instant::now();
    runway_certs_revoke(&cluster, &format!("agent-{ENV}-app-2"));
    wait_until("app-2 to be disconnected", Duration::from_secs(15), || {
        (connected_agents(&cluster) == ["app-1"]).then_some(())
    });
    println!(
        "app-2 disconnected {:?} after its certificate was revoked, without a signal",
        revoked_at.elapsed()
    );
    let text = cluster.runway(&["agents", "--env", ENV]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned() + &String::from_utf8_lossy(&text.stderr);
    assert!(text.contains("known but away") && text.contains("app-2"), "{text}");
    let changed = cluster.coordinators.iter().any(|c| {
        c.proc.log_text().lines().any(|l| l.contains("reloaded certificates") && l.contains("ca.crl changed"))
    });
    assert!(changed, "the coordinators saw the file change by themselves");
    let leader = &cluster.coordinators[cluster.leader().expect("a leader")];
    assert!(
        leader.proc.log_text().contains("closing a connection whose certificate is no longer accepted"),
        "the leader closed app-2's connection"
    );

    // The agents read the changed list too (for the coordinators' certificates).
    wait_until("app-1 to reload its certificates", Duration::from_secs(10), || {
        let log = cluster.apps[0].agent.log_text();
        log.lines().any(|l| l.contains("reloaded certificates") && l.contains("ca.crl changed")).then_some(())
    });

    // It keeps trying, and every try is refused at the handshake.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(connected_agents(&cluster), ["app-1"], "app-2 came back with a revoked certificate");
    let app2 = cluster.apps[1].agent.log_text();
    assert!(app2.contains("CertificateRevoked"), "app-2's log says its certificate is revoked:\n{app2}");
    assert_eq!(pids(&cluster), started, "no process was restarted");
    for coordinator in &cluster.coordinators {
        let log = coordinator.proc.log_text();
        assert!(!log.contains("cannot reload certificates"), "{}: {log}", coordinator.name);
    }

    // 3. A list that cannot be read (a half-copied file, a wrong one):
    // the reload fails, the old list stays, nothing else changes.
    let crl = cluster.pki.as_ref().expect("a TLS cluster").dir().join("ca.crl");
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\nnot a list\n-----END X509 CRL-----\n")
        .expect("spoil the CRL");
    for coordinator in &cluster.coordinators {
        wait_until(
            &format!("{} to refuse the spoiled list", coordinator.name),
            Duration::from_secs(10),
            || {
                coordinator
                    .proc
                    .log_text()
                    .contains("cannot reload certificates, keeping the old ones")
                    .then_some(())
            },
        );
    }
    let still = cluster.runway_as("viewer", &["agents", "--env", ENV]);
    assert!(!still.status.success(), "the old list, which revokes viewer, still holds");
    let others = cluster.runway_as("approver", &["agents", "--env", ENV]);
    assert!(others.status.success(), "{}", String::from_utf8_lossy(&others.stderr));
    assert_eq!(connected_agents(&cluster), ["app-1"]);
    assert_eq!(pids(&cluster), started, "no process was restarted");
}
