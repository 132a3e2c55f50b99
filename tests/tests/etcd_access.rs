//! etcd for coordinators only, as the quick start sets it up: etcd trusts
//! the runway CA (`--client-cert-auth`), and `runway etcd init-auth` (run
//! by the harness, see `runway_tests::etcd`) turns on etcd's own
//! authentication with read-write on `/runway/` for the coordinators'
//! users only.
//!
//! With the cluster's own certificates, real `etcdctl`:
//! - an app agent's and a view operator's certificate (both from the CA
//!   etcd trusts) are refused a get, a put and a delete under `/runway/`;
//!   so are certificates whose *names* are `root` or a coordinator's (their
//!   common names carry their kind: `operator root`);
//! - root's certificate (the control) reads the same keys, so the refusals
//!   are etcd's answer and not a broken call;
//! - a coordinator's certificate reads under `/runway/` and may write
//!   nothing outside it;
//! - the coordinators work as before: a rollout succeeds, and nothing the
//!   refused clients tried left a trace.

use std::path::Path;
use std::process::{Command, Output};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::SHOP;
use runway_tests::pki::TlsPaths;

/// etcdctl against the cluster's etcd with `tls`'s certificate.
fn etcdctl(cluster: &Cluster, tls: &TlsPaths, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .arg(format!("--endpoints={}", cluster.etcd.endpoints.join(",")))
        .args(tls.etcdctl_args())
        .args(["--command-timeout=3s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl")
}

/// The files `runway certs` (and the harness) wrote for `stem` in the
/// cluster's PKI dir.
fn holder(cluster: &Cluster, stem: &str) -> TlsPaths {
    let dir = cluster.path().join("pki");
    let paths = TlsPaths {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        crl: None,
    };
    assert!(Path::new(&paths.cert).exists(), "{} exists", paths.cert.display());
    paths
}

fn refused(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} must be refused; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("permission denied") || stderr.contains("user name not found"),
        "{what}: refused by etcd's authentication, not for another reason: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("/runway/"), "{what}: no key names leak");
}

#[test]
fn only_coordinators_can_read_or_write_runways_etcd_keys() {
    let cluster = Cluster::start(Options { coordinators: 2, app_hosts: 1, ..Options::default() });
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "the coordinators work as before: {events:?}");

    let root = holder(&cluster, "etcd-root");
    let keys = |tls: &TlsPaths| etcdctl(&cluster, tls, &["get", "--prefix", "/runway/", "--keys-only"]);
    let before = keys(&root);
    assert!(before.status.success(), "root reads: {}", String::from_utf8_lossy(&before.stderr));
    let listed = String::from_utf8_lossy(&before.stdout).into_owned();
    assert!(listed.contains("/runway/leader/") && listed.contains("/runway/rollouts/"), "{listed}");
    let leader_key =
        listed.lines().find(|l| l.starts_with("/runway/leader/")).expect("a leader key").to_owned();

    let pki = cluster.pki.as_ref().expect("TLS by default");
    let outsiders = [
        ("app agent app-1", holder(&cluster, &format!("agent-{ENV}-app-1"))),
        ("view operator viewer", holder(&cluster, "operator-viewer")),
        // Names cannot make a certificate an etcd user: the CN says the kind.
        ("operator named root", pki.operator("root", &[])),
        ("operator named coord-1", pki.operator("coord-1", &[ENV])),
        ("agent named root", pki.agent(ENV, "root")),
    ];
    for (who, tls) in &outsiders {
        refused(&format!("{who}: get"), &keys(tls));
        refused(&format!("{who}: get the leader key"), &etcdctl(&cluster, tls, &["get", &leader_key]));
        refused(
            &format!("{who}: put an approval"),
            &etcdctl(&cluster, tls, &["put", "/runway/approvals/forged", "yes"]),
        );
        refused(&format!("{who}: delete the election key"), &etcdctl(&cluster, tls, &["del", &leader_key]));
    }

    // A coordinator's certificate reaches runway's keys and nothing else.
    let coordinator = holder(&cluster, "coord-1");
    let read = keys(&coordinator);
    assert!(read.status.success(), "a coordinator reads /runway/: {}", String::from_utf8_lossy(&read.stderr));
    refused("coord-1: put outside /runway/", &etcdctl(&cluster, &coordinator, &["put", "/elsewhere", "x"]));
    refused("coord-1: put /runway2", &etcdctl(&cluster, &coordinator, &["put", "/runway2", "x"]));

    let after = keys(&root);
    assert_eq!(String::from_utf8_lossy(&after.stdout), listed, "the refused clients changed nothing");
    let (again, events) = cluster.roll_out("v3", SHOP, &[]);
    assert!(again.status.success(), "and the coordinators still work: {events:?}");
}
