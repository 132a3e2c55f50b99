//! The DB agent enforces what the operator signed for: the Danger rules a
//! rollout accepted are checked again at migrate, over the statements
//! about to run, not only at preflight. A coordinator that skips the
//! preflight (`RUNWAY_FAILPOINT_SKIP_DB_PREFLIGHT`) still cannot get an
//! unaccepted Danger statement applied.
//!
//! Real etcd, PostgreSQL, a coordinator, a DB agent and an app agent as
//! processes, with mTLS and operator signatures.

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{DROP_NAME, SHOP, write_migrations};
use runway_tests::watch::json_lines;

/// `SHOP` then the Danger migration `DROP_NAME`, as folder `name`.
fn with_drop(cluster: &Cluster, name: &str) -> std::path::PathBuf {
    let dir = cluster.path().join(name);
    let history: Vec<(&str, &str)> = SHOP.iter().copied().chain([DROP_NAME]).collect();
    write_migrations(&dir, &history);
    dir
}

fn start(cluster: &Cluster, dir: &std::path::Path, extra: &[&str]) -> (std::process::Output, String) {
    let mut args = runway_tests::fixtures::rollout_start_args(dir, "v2");
    args.extend_from_slice(extra);
    let out = cluster.runway(&args);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

fn name_column_exists(cluster: &Cluster) -> bool {
    cluster.sql(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' AND column_name = 'name'",
    ) == "1"
}

#[test]
fn a_danger_statement_not_accepted_is_refused_at_migrate_even_without_a_preflight() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_env: vec![("RUNWAY_FAILPOINT_SKIP_DB_PREFLIGHT".into(), "1".into())],
        ..Options::default()
    });
    let (out, text) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "the first rollout failed: {text:?}");
    assert!(name_column_exists(&cluster));

    // 1. Signed without --allow-danger; the preflight that would refuse
    //    it never reaches the DB agent. The agent refuses at migrate.
    let dir = with_drop(&cluster, "v2");
    let (out, text) = start(&cluster, &dir, &[]);
    assert_ne!(out.status.code(), Some(0), "an unaccepted drop-column rolled out:\n{text}");
    let events = json_lines(&out.stdout);
    let id = events.first().and_then(|e| e["rollout_id"].as_str()).expect("a rollout id").to_owned();
    let refusal = events
        .iter()
        .find(|e| e["kind"] == "command_failed" && e["step"] == "migrate")
        .unwrap_or_else(|| panic!("no failed migrate command:\n{text}"));
    let message = refusal["message"].as_str().unwrap_or_default();
    for needle in [
        "refused",
        DROP_NAME.0,
        "line 2: drop-column on User",
        "ALTER TABLE \"User\" DROP COLUMN \"name\"",
        "--allow-danger drop-column",
    ] {
        assert!(message.contains(needle), "the refusal does not name {needle:?}: {message}");
    }
    let detail = &refusal["detail"];
    assert_eq!(detail["database_changed"], false, "{detail:#}");
    assert_eq!(detail["unaccepted_dangers"][0]["rule"], "drop-column", "{detail:#}");
    assert!(name_column_exists(&cluster), "the column was dropped");
    let recorded = cluster
        .sql(&format!("SELECT count(*) FROM _prisma_migrations WHERE migration_name = '{}'", DROP_NAME.0));
    assert_eq!(recorded, "0", "the refused migration left a row in _prisma_migrations");
    // Refused, not failed: nothing ran, so maintenance mode is lifted again.
    let (_, entry) = cluster
        .journals()
        .into_iter()
        .find(|(host, e)| host == "db-1" && e["action"] == "migrate" && e["rollout_id"] == id.as_str())
        .unwrap_or_else(|| panic!("the DB agent never got the migrate command:\n{text}"));
    assert_eq!(entry["outcome"], runway_proto::v1::CommandOutcome::Refused as i32, "{entry:#}");
    assert!(!cluster.apps[0].in_maintenance(), "maintenance mode was left on:\n{text}");

    // 2. Accepted and signed so: the same agent applies it.
    let (out, text) = start(&cluster, &dir, &["--allow-danger", "drop-column"]);
    assert!(out.status.success(), "an accepted drop-column was refused:\n{text}");
    assert!(!name_column_exists(&cluster), "the accepted migration did not run");
}
