//! What every failover test asserts after a rollout: it succeeded, its
//! event stream is complete, and nothing ran twice.

use std::path::{Path, PathBuf};

use crate::cluster::Cluster;

pub const PLAN: [&str; 6] =
    ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"];

/// `CommandOutcome::Succeeded` as journaled.
const SUCCEEDED: i64 = 1;

/// Events numbered 1..=n without gaps or repeats, each step started and
/// succeeded exactly once, ending in `rollout_succeeded`.
pub fn assert_complete_stream(events: &[serde_json::Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "event sequence has gaps or repeats");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rollout_succeeded", "last event: {last}");
    for kind in ["step_started", "step_succeeded"] {
        let steps: Vec<&str> =
            events.iter().filter(|e| e["kind"] == kind).map(|e| e["step"].as_str().unwrap_or("")).collect();
        assert_eq!(steps, PLAN, "{kind} events");
    }
}

/// The backup was taken once, each migration applied once, and the DB
/// agent's journal agrees with `_prisma_migrations`.
pub fn assert_exactly_once(cluster: &Cluster, migrations: &[(&str, &str)]) {
    let db = cluster.db.as_ref().expect("a DB host");
    let manifests: Vec<PathBuf> =
        walk(&db.backup_dir).into_iter().filter(|p| p.ends_with("manifest.json")).collect();
    assert_eq!(manifests.len(), 1, "expected exactly one backup, found {manifests:?}");

    let rows = cluster.sql(
        "SELECT migration_name || '|' || (finished_at IS NOT NULL) || '|' || (rolled_back_at IS NULL) \
         FROM _prisma_migrations ORDER BY migration_name",
    );
    let expected: Vec<String> = migrations.iter().map(|(name, _)| format!("{name}|true|true")).collect();
    assert_eq!(rows.lines().collect::<Vec<_>>(), expected, "_prisma_migrations rows");

    let journal: Vec<serde_json::Value> =
        cluster.journals().into_iter().filter(|(host, _)| host == "db-1").map(|(_, e)| e).collect();
    for action in ["backup", "migrate"] {
        let runs: Vec<&serde_json::Value> = journal.iter().filter(|e| e["action"] == action).collect();
        assert_eq!(runs.len(), 1, "the DB agent ran {action} {} times: {runs:#?}", runs.len());
        assert_eq!(runs[0]["outcome"].as_i64(), Some(SUCCEEDED), "{action}: {}", runs[0]);
    }
    let migrate = journal.iter().find(|e| e["action"] == "migrate").expect("migrate entry");
    let detail: serde_json::Value =
        serde_json::from_str(migrate["detail_json"].as_str().unwrap_or("")).expect("migrate result JSON");
    let applied: Vec<&str> =
        detail["applied"].as_array().expect("applied list").iter().filter_map(|v| v.as_str()).collect();
    let names: Vec<&str> = migrations.iter().map(|(name, _)| *name).collect();
    assert_eq!(applied, names, "the journal's applied migrations differ from the migration table");
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
