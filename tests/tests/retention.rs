//! Retention against real etcd: with `keep_rollouts = 1` the leader
//! deletes every finished rollout but the newest, with its events, and the
//! bundles nobody refers to any more; the audit log stays.

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};

#[test]
fn the_leader_prunes_finished_rollouts_their_events_and_unused_bundles() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_toml: "[retention]\nkeep_rollouts = 1\nevery = \"1s\"\n".into(),
        ..Options::default()
    });
    let mut ids = Vec::new();
    for round in 0..3 {
        // Each round a new bundle (one more migration), so each has its own digest.
        let migrations = cluster.path().join(format!("round-{round}"));
        let extra = format!("CREATE TABLE \"R{round}\" (\"id\" INTEGER);\n");
        let name = format!("2025010100000{round}_r");
        let mut files: Vec<(&str, &str)> = SHOP.to_vec();
        files.push((&name, &extra));
        write_migrations(&migrations, &files);
        let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
        assert!(out.status.success(), "rollout {round}: {}", String::from_utf8_lossy(&out.stderr));
        let events = runway_tests::watch::json_lines(&out.stdout);
        ids.push(events[0]["rollout_id"].as_str().expect("a rollout id").to_owned());
    }
    let newest = ids.last().expect("three rollouts");
    let prefix = |p: &str| format!("/runway/{p}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rollouts = cluster.etcd.keys(&prefix("rollouts"));
        let bundles = cluster.etcd.keys(&prefix("bundles"));
        // A bundle is its chunks and a meta under `bundles/<digest>/`.
        let digests: std::collections::BTreeSet<&str> =
            bundles.iter().filter_map(|k| k.strip_prefix("/runway/bundles/")?.split('/').next()).collect();
        if rollouts.len() == 1 && digests.len() == 1 {
            assert!(bundles.iter().any(|k| k.ends_with("/meta")), "committed by its meta: {bundles:?}");
            assert!(rollouts[0].ends_with(newest.as_str()), "the newest is kept: {rollouts:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not pruned: {rollouts:?} {bundles:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let events = cluster.etcd.keys(&prefix("events"));
    assert!(!events.is_empty() && events.iter().all(|k| k.contains(newest.as_str())), "{events:?}");
    // Each rollout's start and end stay in the audit log.
    let audit = cluster.etcd.keys(&prefix("audit"));
    assert!(audit.len() >= 2 * ids.len(), "the audit log is kept: {audit:?}");
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    assert!(list.status.success());
    assert_eq!(runway_tests::watch::json_lines(&list.stdout).len(), 1, "rollout list shows the kept one");
}
