//! Never worse than the runbook when things happen at once, end to end on
//! one cluster (real etcd, PostgreSQL, two coordinators, agents as
//! processes):
//!
//! - names are per environment: production's `db-1` attaches while
//!   staging's is attached, and each environment's rollouts reach only its
//!   own database;
//! - one change per environment: a second rollout (or a backup verify)
//!   while one is under way is refused with the holder's id, exit 2, also
//!   by a new leader; `--queue` waits and then runs; another environment is
//!   not held;
//! - an inventory: with a known app agent away a rollout refuses to start
//!   (exit 3, naming it) unless `--skip-host` leaves it out (recorded and
//!   shown); `runway agents forget` removes it for good;
//! - one identity, one session: a second process with db-1's identity
//!   replaces the session, the replaced agent is told and reconnects, the
//!   pair is reported loudly, and once the second process is gone the real
//!   db-1 is attached and rolls out.
//!
//! On the code before these fixes: production's db-1 was refused ("agent
//! name db-1 is taken"); the second rollout was accepted and ran
//! interleaved; the rollout with app-2 away succeeded without it; and
//! after the clone left, db-1 was missing until it was restarted.

use std::process::{Command, Output};
use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::{Proc, bin, wait_until};
use runway_tests::watch::{Watch, json_lines};

const PRODUCTION: &str = "production";

/// What a run said: stderr, and stdout (with `--output json` errors are
/// JSON lines there).
fn stderr(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout))
}

/// `runway rollout start` (no watch) in `environment` with `extra` flags.
fn start(cluster: &Cluster, environment: &str, version: &str, extra: &[&str]) -> Output {
    let migrations = cluster.path().join(format!("shop-{environment}"));
    write_migrations(&migrations, SHOP);
    let mut args = vec![
        "rollout",
        "start",
        "--env",
        environment,
        "--migrations",
        migrations.to_str().unwrap(),
        "--app-version",
        version,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    cluster.runway(&args)
}

/// The id of the rollout a `rollout start` printed.
fn started_id(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    json_lines(&out.stdout)[0]["id"].as_str().expect("rollout id").to_owned()
}

fn wait_state(cluster: &Cluster, id: &str, state: &str) {
    wait_until(&format!("{id} to be {state}"), Duration::from_secs(60), || {
        (cluster.show_rollout(id)["state"] == state).then_some(())
    });
}

/// Names of the agents `runway agents --env` lists as connected.
fn connected(cluster: &Cluster, environment: &str) -> Vec<String> {
    let out = cluster.runway(&["agents", "--env", environment, "--output", "json"]);
    json_lines(&out.stdout).iter().filter_map(|a| a["name"].as_str().map(str::to_owned)).collect()
}

#[test]
fn one_change_per_environment_known_agents_and_one_session_per_identity() {
    let mut cluster = Cluster::start(Options {
        environment_policies: vec![(PRODUCTION.into(), "approvals = 1".into())],
        ..Options::default()
    });

    // Names per environment.
    let (_production_db, _) = cluster.start_extra_db_agent("db-1", PRODUCTION, "production_app", "");
    assert!(connected(&cluster, ENV).contains(&"db-1".to_owned()), "staging's db-1 is still attached");
    assert_eq!(connected(&cluster, PRODUCTION), ["db-1"]);

    // One change per environment: A waits for its approval, holding production.
    let a = started_id(&start(&cluster, PRODUCTION, "v2", &[]));
    wait_state(&cluster, &a, "awaiting_approval");
    let refused = start(&cluster, PRODUCTION, "v2", &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("production is busy"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(&a), "names the holder: {}", stderr(&refused));
    let verify = cluster.runway(&["backup", "verify", "any-backup", "--env", PRODUCTION]);
    assert_eq!(verify.status.code(), Some(2), "{}", stderr(&verify));
    assert!(stderr(&verify).contains(&a), "{}", stderr(&verify));
    // Another environment is not held: staging rolls out, to its own database.
    let staging = started_id(&start(&cluster, ENV, "v2", &[]));
    wait_state(&cluster, &staging, "succeeded");
    assert_eq!(cluster.sql("SELECT count(*) FROM _prisma_migrations"), SHOP.len().to_string());
    let production_tables =
        cluster.pg.psql("production_app", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(production_tables.trim(), "0", "staging's rollout never reached production's database");

    // A new leader sees the same holder.
    cluster.kill_and_restart_leader();
    let refused = wait_until("the new leader to answer", Duration::from_secs(60), || {
        let out = start(&cluster, PRODUCTION, "v2", &[]);
        (out.status.code() != Some(3)).then_some(out)
    });
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(&a), "{}", stderr(&refused));

    // --queue waits for the holder to end, then starts.
    let migrations = cluster.path().join("shop-production");
    let queued = Watch::start(
        &cluster,
        &[
            "rollout",
            "start",
            "--env",
            PRODUCTION,
            "--migrations",
            migrations.to_str().unwrap(),
            "--output",
            "json",
            "--queue",
        ],
    );
    std::thread::sleep(Duration::from_secs(4));
    let cancel = cluster.runway(&["rollout", "cancel", &a]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let (status, lines, queue_log) = queued.finish(Duration::from_secs(60));
    assert!(status.success(), "{queue_log}");
    let shown = cluster.show_rollout(&a);
    assert!(
        queue_log.contains("queued:") && queue_log.contains(&a),
        "{queue_log} B created {} A {} updated {} error {}",
        lines[0]["created_unix_ms"],
        shown["state"],
        shown["updated_unix_ms"],
        shown["error"]
    );
    let b = lines[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(b, a);
    wait_state(&cluster, &a, "cancelled");
    assert_eq!(cluster.runway(&["rollout", "cancel", &b]).status.code(), Some(0));
    wait_state(&cluster, &b, "cancelled");

    // An inventory: a known app agent away refuses the rollout.
    cluster.apps[1].agent.kill();
    wait_until("app-2 to be gone", Duration::from_secs(30), || {
        (!connected(&cluster, ENV).contains(&"app-2".to_owned())).then_some(())
    });
    let refused = start(&cluster, ENV, "v3", &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("app-2 (app)"), "{}", stderr(&refused));
    let agents = cluster.runway(&["agents", "--env", ENV]);
    assert!(
        stderr(&agents).contains("known but away") && stderr(&agents).contains("app-2"),
        "{}",
        stderr(&agents)
    );
    let skipped = started_id(&start(&cluster, ENV, "v3", &["--skip-host", "app-2"]));
    wait_state(&cluster, &skipped, "succeeded");
    let record = cluster.show_rollout(&skipped);
    assert_eq!(record["skipped_hosts"], serde_json::json!(["app-2"]));
    let restart =
        record["steps"].as_array().unwrap().iter().find(|s| s["name"] == "restart").unwrap().clone();
    assert!(!restart["hosts"].to_string().contains("app-2"), "{restart}");
    let text = cluster.runway(&["rollout", "show", &skipped]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("skipped      app-2"));
    let forget = cluster.runway(&["agents", "forget", "app-1", "--env", ENV]);
    assert_eq!(forget.status.code(), Some(2), "a connected agent is not forgotten: {}", stderr(&forget));
    let forget = cluster.runway(&["agents", "forget", "app-2", "--env", ENV]);
    assert!(forget.status.success(), "{}", stderr(&forget));
    let after = started_id(&start(&cluster, ENV, "v4", &[]));
    wait_state(&cluster, &after, "succeeded");
    let audit = cluster.runway(&["audit", "--output", "json"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("forget_agent"));

    // One identity, one session: a clone of db-1 (its own disk, same
    // certificate and name).
    let db = cluster.db.as_ref().unwrap();
    let config = std::fs::read_to_string(&db.config)
        .unwrap()
        .replace("db-1-state", "db-1-clone-state")
        .replace("db-1-backups", "db-1-clone-backups");
    let clone_config = cluster.path().join("db-1-clone.toml");
    std::fs::write(&clone_config, config).unwrap();
    let mut command = Command::new(bin("runway-agent"));
    command.arg("--config").arg(&clone_config).envs(db.env.iter().cloned());
    let mut clone = Proc::spawn("db-1-clone", &mut command, cluster.path());
    let leader_log = |cluster: &Cluster| {
        cluster.coordinators.iter().map(|c| c.proc.log_text()).collect::<Vec<_>>().join("\n")
    };
    wait_until("the pair to be reported", Duration::from_secs(60), || {
        leader_log(&cluster).contains("keep replacing each other's session").then_some(())
    });
    let real = cluster.db.as_ref().unwrap().agent.log_text();
    assert!(
        real.contains("another process registered as agent staging/db-1"),
        "the replaced agent is told:\n{real}"
    );
    clone.kill();
    // The real db-1 is attached again and rolls out.
    wait_until("db-1 to be attached", Duration::from_secs(30), || {
        connected(&cluster, ENV).contains(&"db-1".to_owned()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(connected(&cluster, ENV).contains(&"db-1".to_owned()), "db-1 stays attached");
    let last = started_id(&start(&cluster, ENV, "v5", &[]));
    wait_state(&cluster, &last, "succeeded");
}
