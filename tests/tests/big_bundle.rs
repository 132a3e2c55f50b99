//! A bundle far over etcd's 1.5 MiB value limit and tonic's 4 MiB default
//! message size rolls out: 2,000 migrations, 20 MiB in all, from the CLI
//! through the leader (which stores it in etcd as chunks) to the DB agent,
//! which applies every migration.

use std::time::Instant;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{rollout_start_args, write_migrations};

/// etcd's default request limit (`--max-request-bytes`): every value the
/// coordinator writes must stay below it.
const ETCD_REQUEST_LIMIT: usize = 1536 * 1024;

/// `count` migrations of about `bytes_each` bytes: the first creates a
/// table, every other inserts one row, each followed by a long comment (a
/// migration history that carries its documentation along).
fn history(count: usize, bytes_each: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let statement = if i == 0 {
                "CREATE TABLE \"Big\" (\"n\" INTEGER NOT NULL);\n".to_owned()
            } else {
                format!("INSERT INTO \"Big\" (\"n\") VALUES ({i});\n")
            };
            let line = format!("-- migration {i:04}: notes on why this change exists and how to undo it.\n");
            let comment = line.repeat((bytes_each.saturating_sub(statement.len()) / line.len()) + 1);
            (format!("{:014}_m{i:04}", 20250101000000u64 + i as u64), statement + &comment)
        })
        .collect()
}

#[test]
fn a_20_mib_bundle_of_2000_migrations_rolls_out_and_is_stored_in_chunks() {
    let cluster = Cluster::start(Options { coordinators: 1, app_hosts: 0, ..Options::default() });
    let files = history(2000, 10_600);
    let total: usize = files.iter().map(|(_, sql)| sql.len()).sum();
    assert!(total >= 20 * 1024 * 1024, "the bundle is {total} bytes");
    let migrations = cluster.path().join("migrations");
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    write_migrations(&migrations, &refs);

    let started = Instant::now();
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    let took = started.elapsed();
    let events = runway_tests::watch::json_lines(&out.stdout);
    assert!(out.status.success(), "rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events.last().expect("events")["kind"], "rollout_succeeded");
    eprintln!("rollout of {total} bytes in {} migrations took {took:.1?}", files.len());

    let applied = cluster.sql("SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL");
    assert_eq!(applied, "2000", "every migration is recorded as applied");
    assert_eq!(cluster.sql("SELECT count(*) FROM \"Big\""), "1999");

    // Stored once, as chunks below etcd's limit, committed by a meta.
    let bundles = cluster.etcd.keys("/runway/bundles/");
    let chunks: Vec<&String> = bundles.iter().filter(|k| k.contains("/chunks/")).collect();
    assert!(chunks.len() >= 20, "a 20 MiB bundle in 1 MiB chunks: {bundles:?}");
    assert_eq!(bundles.iter().filter(|k| k.ends_with("/meta")).count(), 1, "{bundles:?}");
    let mut stored = 0;
    for key in &chunks {
        let size = cluster.etcd.value(key).len();
        assert!(size > 0 && size < ETCD_REQUEST_LIMIT, "{key} is {size} bytes");
        stored += size;
    }
    assert!(stored >= total, "the chunks hold the whole bundle: {stored} of at least {total} bytes");
}
