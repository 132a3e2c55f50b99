//! Bad input gets a clear error, a scriptable exit code, and changes nothing.

use std::process::Command;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::bin;

const INVALID: i32 = 2;

fn assert_rejected(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID), "expected exit {INVALID}; stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn bad_rollout_requests_are_refused_and_change_nothing() {
    // Only app agents: no DB host connected.
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 1, db_host: false, ..Options::default() });
    let good = cluster.path().join("good");
    write_migrations(&good, SHOP);
    let start = |env: &str, dir: &std::path::Path| {
        cluster.runway(&["rollout", "start", "--env", env, "--migrations", dir.to_str().unwrap(), "--watch"])
    };

    let missing = cluster.path().join("does-not-exist");
    assert_rejected(&start("staging", &missing), "does-not-exist");

    let no_sql = cluster.path().join("no-sql");
    write_migrations(&no_sql, &SHOP[..1]);
    std::fs::create_dir_all(no_sql.join("20240102000000_empty")).unwrap();
    std::fs::write(no_sql.join("20240102000000_empty/README.md"), "forgot the SQL").unwrap();
    assert_rejected(&start("staging", &no_sql), "20240102000000_empty");

    assert_rejected(&start("qa", &good), "unknown environment \"qa\"");
    // An app version a restart hook could misuse is refused by the
    // coordinator before anything is saved or sent (INVALID_ARGUMENT).
    for version in ["1.0; rm -rf /", "../../etc", &"9".repeat(129)] {
        let out = cluster.runway(&[
            "rollout",
            "start",
            "--env",
            "staging",
            "--migrations",
            good.to_str().unwrap(),
            "--app-version",
            version,
            "--watch",
        ]);
        assert_rejected(&out, "app version");
    }
    assert_rejected(&start("staging", &good), "no agent with the db role");

    // Nothing was recorded or touched.
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    assert!(list.status.success());
    assert!(
        list.stdout.is_empty(),
        "a refused request left a rollout behind: {}",
        String::from_utf8_lossy(&list.stdout)
    );
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    assert!(!cluster.apps[0].in_maintenance());
}

#[test]
fn an_unreachable_coordinator_is_reported_with_its_own_exit_code() {
    let port = runway_tests::process::free_port();
    let out = Command::new(bin("runway"))
        .args([
            "agents",
            "--insecure",
            "--leader-timeout",
            "2",
            "--coordinator",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no leader coordinator answered"));
}

#[test]
fn an_agent_config_missing_a_field_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "name = \"db-1\"\ncoordinators = [\"http://127.0.0.1:7400\"]\nroles = [\"db\"]\nstate_dir = \"/tmp/x\"\n",
    )
    .unwrap();
    let out = Command::new(bin("runway-agent")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("missing field `environment`") && stderr.contains("agent.toml"), "{stderr}");
}

#[test]
fn an_agent_with_tls_and_a_plain_http_coordinator_address_says_so_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = runway_tests::pki::Pki::create(dir.path());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"app-1\"\nenvironment = \"staging\"\ncoordinators = [\"http://127.0.0.1:7400\"]\nroles = [\"app\"]\n\
             state_dir = {:?}\n[app]\nmaintenance_on = [\"/bin/true\"]\nmaintenance_off = [\"/bin/true\"]\n\
             restart = [\"/bin/true\"]\nhealth_url = \"http://127.0.0.1:1/health\"\n{}",
            dir.path().join("state"),
            pki.agent("staging", "app-1").toml()
        ),
    )
    .unwrap();
    let out = Command::new(bin("runway-agent")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("TLS is on, so coordinators are reached over https://"), "{stderr}");
}
