//! `runway backup list|show|verify|restore --env` end to end: the real CLI
//! asks the leader coordinator, which runs the command on the real DB agent
//! against a real PostgreSQL; backups come from real rollouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_tests::cluster::{Cluster, DB, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::moto::{Moto, SECRET_ACCESS_KEY};
use runway_tests::process::{Proc, wait_until};

/// A migration on top of [`SHOP`], so a second rollout backs up seeded data.
const CAROL: (&str, &str) = (
    "20240104000000_carol",
    "INSERT INTO \"User\" (\"email\", \"name\") VALUES ('carol@example.com', 'Carol');\n",
);

/// Exit code, stdout, stderr of one `runway` run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("stdout is not one JSON object ({e}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn runway(cluster: &Cluster, args: &[&str]) -> Run {
    let out = cluster.runway(args);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn rollout(cluster: &Cluster, environment: &str, migrations: &Path) {
    let run = runway(
        cluster,
        &["rollout", "start", "--env", environment, "--migrations", migrations.to_str().unwrap(), "--watch"],
    );
    assert_eq!(run.code, 0, "rollout to {environment} failed: {run:?}");
}

/// Two rollouts to `environment`: SHOP, then CAROL. The second rollout's
/// backup holds SHOP's seeded rows (2 users, 2 orders).
fn two_rollouts(cluster: &Cluster, environment: &str) {
    let migrations = cluster.path().join(format!("migrations-{environment}"));
    write_migrations(&migrations, SHOP);
    rollout(cluster, environment, &migrations);
    write_migrations(&migrations, &[CAROL]);
    rollout(cluster, environment, &migrations);
}

/// Rows of `table` in the manifest of a backup.
fn manifest_rows(manifest: &serde_json::Value, table: &str) -> i64 {
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .and_then(|t| t["rows"].as_i64())
        .unwrap_or_else(|| panic!("manifest lacks table {table}: {manifest}"))
}

/// Backup folders in the DB agent's backup dir, oldest first.
fn backups_on_disk(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut found: Vec<(String, serde_json::Value)> = std::fs::read_dir(dir)
        .expect("backup dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("manifest.json").is_file())
        .map(|e| {
            let manifest =
                serde_json::from_slice(&std::fs::read(e.path().join("manifest.json")).unwrap()).unwrap();
            (e.file_name().to_string_lossy().into_owned(), manifest)
        })
        .collect();
    found.sort_by(|a, b| a.1["started_at"].as_str().cmp(&b.1["started_at"].as_str()));
    found
}

fn count_in(cluster: &Cluster, database: &str, table: &str) -> i64 {
    cluster.pg.psql(database, &format!("SELECT count(*) FROM \"{table}\"")).trim().parse().expect("a count")
}

fn count(cluster: &Cluster, table: &str) -> i64 {
    count_in(cluster, DB, table)
}

/// Flips one bit in the middle of `file`; returns the original bytes.
fn corrupt(file: &Path) -> Vec<u8> {
    let original = std::fs::read(file).expect("read dump");
    let mut bytes = original.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(file, &bytes).expect("write corrupt dump");
    original
}

#[test]
fn backups_are_listed_shown_verified_and_restored_through_the_coordinator() {
    let cluster =
        Cluster::start(Options { coordinators: 2, app_hosts: 0, db_host: true, ..Options::default() });
    let backup_dir: PathBuf = cluster.db.as_ref().expect("db host").backup_dir.clone();

    // Two rollouts; the second one's backup holds the first one's data.
    two_rollouts(&cluster, ENV);
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (3, 2));

    let on_disk = backups_on_disk(&backup_dir);
    assert_eq!(on_disk.len(), 2, "expected one backup per rollout: {on_disk:?}");
    let (name, manifest) = on_disk[1].clone();
    let rows_in = |table: &str| manifest_rows(&manifest, table);
    assert_eq!((rows_in("User"), rows_in("Order")), (2, 2), "the second backup holds the seeded rows");

    // list: both backups, as on disk, oldest first.
    let list = runway(&cluster, &["backup", "list", "--env", ENV, "--output", "json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let listed = list.json();
    assert_eq!(listed["ok"], true);
    assert_eq!(listed["host"], "db-1");
    let ids: Vec<&str> =
        listed["result"]["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = on_disk.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ids, expected);
    let second = &listed["result"]["backups"][1];
    assert_eq!(second["sha256"], manifest["sha256"]);
    assert_eq!(second["local"], true);
    assert_eq!(second["rollout_id"], manifest["rollout_id"]);
    let text = runway(&cluster, &["backup", "list", "--env", ENV]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(expected.iter().all(|n| text.stdout.contains(n)), "{text:?}");

    // show: the manifest.
    let show = runway(&cluster, &["backup", "show", &name, "--env", ENV, "--output", "json"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert_eq!(show.json()["result"], manifest, "show returned another manifest than the one on disk");
    let show = runway(&cluster, &["backup", "show", &name, "--env", ENV]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains(manifest["sha256"].as_str().unwrap()), "{show:?}");
    assert!(show.stdout.contains("public.User"), "{show:?}");

    // verify: intact, with progress streamed.
    let verify = runway(&cluster, &["backup", "verify", &name, "--env", ENV]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert!(verify.stdout.contains(&format!("backup {name} is intact")), "{verify:?}");
    assert!(verify.stderr.contains("[checksum]"), "no progress streamed: {verify:?}");

    // verify --test-restore: restored into a scratch database on the agent's server.
    let verify =
        runway(&cluster, &["backup", "verify", &name, "--env", ENV, "--test-restore", "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let tested = &verify.json()["result"]["test_restore"];
    let total: i64 = manifest["tables"].as_array().unwrap().iter().map(|t| t["rows"].as_i64().unwrap()).sum();
    assert_eq!(tested["rows"].as_i64(), Some(total), "{verify:?}");

    // A follower sends the CLI on to the leader.
    let rollouts = runway(&cluster, &["rollout", "list", "--output", "json"]);
    let first: serde_json::Value = serde_json::from_str(rollouts.stdout.lines().next().unwrap()).unwrap();
    let leader = first["coordinator"].as_str().unwrap();
    let follower = cluster.coordinators.iter().find(|c| c.name != leader).expect("a follower");
    let via_follower = runway(&cluster, &["backup", "list", "--env", ENV, "--coordinator", &follower.addr]);
    assert_eq!(via_follower.code, 0, "{via_follower:?}");
    assert!(via_follower.stdout.contains(&name), "{via_follower:?}");

    // restore without --yes: refused before anything is sent.
    let unconfirmed = runway(&cluster, &["backup", "restore", &name, "--env", ENV]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed:?}");
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (3, 2));

    // One flipped bit: verify fails, restore is refused, the database is untouched.
    let dump = backup_dir.join(&name).join(manifest["dump"].as_str().unwrap());
    let original = corrupt(&dump);
    let verify = runway(&cluster, &["backup", "verify", &name, "--env", ENV]);
    assert_eq!(verify.code, 6, "a corrupt backup is an integrity failure: {verify:?}");
    assert!(verify.stderr.contains("checksum"), "{verify:?}");
    let restore = runway(&cluster, &["backup", "restore", &name, "--env", ENV, "--yes", "--output", "json"]);
    assert_eq!(restore.code, 6, "a corrupt backup is an integrity failure: {restore:?}");
    let refused = restore.json();
    assert_eq!(refused["ok"], false);
    assert!(refused["error"].as_str().unwrap().contains("checksum"), "{restore:?}");
    assert!(!restore.stderr.contains("[restore]"), "pg_restore ran on a corrupt backup: {restore:?}");
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (3, 2), "a refused restore changed data");
    std::fs::write(&dump, original).expect("repair dump");

    // A good backup brings back the row counts it recorded.
    cluster.sql(
        "DELETE FROM \"Order\"; INSERT INTO \"User\" (\"email\") VALUES ('x@example.com'), ('y@example.com')",
    );
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (5, 0));
    let restore = runway(&cluster, &["backup", "restore", &name, "--env", ENV, "--yes", "--output", "json"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    let report = restore.json();
    assert_eq!(report["result"]["backup"], name.as_str());
    assert!(restore.stderr.contains("[restore]") && restore.stderr.contains("[done]"), "{restore:?}");
    for table in ["User", "Order", "_prisma_migrations"] {
        assert_eq!(count(&cluster, table), rows_in(table), "{table} after the restore");
    }

    // Clear refusals.
    let unknown_env = runway(&cluster, &["backup", "list", "--env", "nowhere"]);
    assert_eq!(unknown_env.code, 2, "{unknown_env:?}");
    assert!(unknown_env.stderr.contains("unknown environment"), "{unknown_env:?}");
    let no_agent = runway(&cluster, &["backup", "list", "--env", "production"]);
    assert_eq!(no_agent.code, 2, "{no_agent:?}");
    assert!(no_agent.stderr.contains("no agent with the db role"), "{no_agent:?}");
    for missing in ["app-19990101T000000000Z", "../db-1-state"] {
        let show = runway(&cluster, &["backup", "show", missing, "--env", ENV]);
        assert_eq!(show.code, 2, "an unknown backup is bad input: {show:?}");
        assert!(show.stderr.contains(&format!("backup {missing} not found")), "{show:?}");
    }

    // The audit log holds each verify and restore as asked, then how it
    // ended on the agent (list and show are reads: not recorded).
    let audit = runway(&cluster, &["audit", "--env", ENV, "--output", "json"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    let entries: Vec<serde_json::Value> =
        audit.stdout.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let about_backup: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["parameters"]["backup"] == name.as_str() && e["action"] != "rollout_ended")
        .map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        about_backup,
        [
            ("backup_verify", "accepted"),
            ("backup_ended", "succeeded"),
            ("backup_verify", "accepted"),
            ("backup_ended", "succeeded"),
            ("backup_verify", "accepted"),
            ("backup_ended", "failed"),
            ("backup_restore", "accepted"),
            ("backup_ended", "failed"),
            ("backup_restore", "accepted"),
            ("backup_ended", "succeeded"),
        ],
        "{entries:#?}"
    );
    let restored = entries.iter().rfind(|e| e["action"] == "backup_restore").unwrap();
    assert_eq!(
        (restored["actor"].as_str(), restored["parameters"]["confirmed"].as_str()),
        (Some("ops"), Some("true"))
    );
}

/// A DB agent in `production` whose backups are also copied to object
/// storage (moto); its database is `prod` on the cluster's PostgreSQL.
/// `backup_keys` go into its `[backup]` table (e.g. `keep = 2`).
fn start_object_store_agent(cluster: &Cluster, moto: &Moto, backup_keys: &str) -> (Proc, PathBuf) {
    moto.create_bucket("runway-backups");
    let extra = format!("{backup_keys}\n{}", moto.agent_config("runway-backups", "prod"));
    cluster.start_extra_db_agent("db-prod", "production", "prod", &extra)
}

#[test]
fn a_backup_only_in_object_storage_is_listed_shown_and_restored() {
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 0, db_host: false, ..Options::default() });
    let moto = Moto::start(cluster.path());
    let (_agent, backup_dir) = start_object_store_agent(&cluster, &moto, "");
    two_rollouts(&cluster, "production");
    let on_disk = backups_on_disk(&backup_dir);
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    let (name, manifest) = on_disk[1].clone();

    // Only the bucket has it now.
    std::fs::remove_dir_all(backup_dir.join(&name)).expect("remove the local copy");
    let list = runway(&cluster, &["backup", "list", "--env", "production", "--output", "json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let listed = list.json();
    assert_eq!(listed["result"]["bucket"], "runway-backups");
    let backups = listed["result"]["backups"].as_array().unwrap();
    let where_: Vec<(&str, bool, bool)> = backups
        .iter()
        .map(|b| (b["id"].as_str().unwrap(), b["local"] == true, b["remote"] == true))
        .collect();
    assert_eq!(where_, [(on_disk[0].0.as_str(), true, true), (name.as_str(), false, true)]);

    let show = runway(&cluster, &["backup", "show", &name, "--env", "production", "--output", "json"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert_eq!(show.json()["result"], manifest, "the bucket's manifest differs from the one written locally");

    // Restore downloads it (checksums checked) and brings back its row counts.
    cluster.pg.psql("prod", "DELETE FROM \"Order\"; DELETE FROM \"User\"");
    let restore = runway(&cluster, &["backup", "restore", &name, "--env", "production", "--yes"]);
    assert_eq!(restore.code, 0, "{restore:?}");
    assert!(restore.stderr.contains("[download]"), "not downloaded: {restore:?}");
    for table in ["User", "Order", "_prisma_migrations"] {
        assert_eq!(
            count_in(&cluster, "prod", table),
            manifest_rows(&manifest, table),
            "{table} after the restore"
        );
    }
    assert!(backup_dir.join(&name).join("manifest.json").is_file(), "the download was not kept");
    for run in [&list, &show, &restore] {
        assert!(!format!("{run:?}").contains(SECRET_ACCESS_KEY), "the object-store secret leaked: {run:?}");
    }
}

/// Rollout backups are pinned only while their rollout runs: once it ends
/// (no rollback window configured), `keep = 2` prunes them like any other,
/// locally and in object storage.
#[test]
fn keep_prunes_the_backups_of_ended_rollouts_locally_and_in_object_storage() {
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 0, db_host: false, ..Options::default() });
    let moto = Moto::start(cluster.path());
    let (_agent, backup_dir) = start_object_store_agent(&cluster, &moto, "keep = 2");
    let migrations = cluster.path().join("migrations-keep");
    write_migrations(&migrations, SHOP);
    for _ in 0..5 {
        rollout(&cluster, "production", &migrations);
    }
    let on_disk = backups_on_disk(&backup_dir);
    assert_eq!(on_disk.len(), 2, "local backups after five rollouts with keep = 2: {on_disk:?}");
    let list = runway(&cluster, &["backup", "list", "--env", "production", "--output", "json"]);
    assert_eq!(list.code, 0, "{list:?}");
    let listed = list.json();
    let remote: Vec<&str> = listed["result"]["backups"]
        .as_array()
        .expect("a backup list")
        .iter()
        .filter(|b| b["remote"] == true)
        .filter_map(|b| b["id"].as_str())
        .collect();
    let local: Vec<&str> = on_disk.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(remote, local, "object storage keeps the same newest two");
    // Every rollout ended, so no pin is left (the last release follows the
    // last rollout's end by a moment).
    wait_until("the last rollout's backup to be released", Duration::from_secs(10), || {
        let pins = std::fs::read_dir(backup_dir.join(".pins")).map(|d| d.count()).unwrap_or(0);
        (pins == 0).then_some(())
    });
}

/// Every path under `root`, except those that change by themselves while a
/// cluster runs (logs, etcd's and PostgreSQL's data).
fn paths_under(root: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") || name.ends_with("-data") || path == root.join("pg") {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            found.insert(path);
        }
    }
    found
}

/// A manifest as someone with write access to the bucket could plant it:
/// complete and well-formed, but naming `dump` and `file` as given.
fn planted_manifest(id: &str, format: &str, dump: &str, file: &str) -> Vec<u8> {
    let manifest = serde_json::json!({
        "manifest_version": 1, "id": id, "database": "prod", "path": "/var/backups/runway/x/dump",
        "dump": dump, "format": format,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "bytes": 0,
        "files": [{ "name": file, "bytes": 0,
                    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" }],
        "database_bytes": 1, "server_version": "15", "pg_dump_version": "pg_dump 15", "jobs": 1,
        "started_at": "2025-03-01T10:00:00Z", "finished_at": "2025-03-01T10:00:01Z",
        "rollout_id": "", "label": "", "migrations": [], "tables": [],
    });
    serde_json::to_vec_pretty(&manifest).expect("JSON")
}

/// A bucket manifest that names files outside its backup (`../../etc/x` as
/// a file of a directory-format dump, or as the dump itself) is refused by
/// restore and verify with a clear error, before anything is written:
/// no file appears anywhere under the test's root.
#[test]
fn a_bucket_manifest_naming_files_outside_its_backup_is_refused() {
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 0, db_host: false, ..Options::default() });
    let moto = Moto::start(cluster.path());
    let (_agent, backup_dir) = start_object_store_agent(&cluster, &moto, "");
    let planted = [
        ("planted-dir", planted_manifest("planted-dir", "directory", "dump", "../../etc/x")),
        ("planted-dump", planted_manifest("planted-dump", "custom", "../../etc/x", "")),
    ];
    for (id, manifest) in &planted {
        moto.put_object("runway-backups", &format!("prod/{id}/manifest.json"), manifest);
    }
    let before = paths_under(cluster.path());

    for (id, _) in &planted {
        for action in [&["restore", id, "--yes"][..], &["verify", id][..]] {
            let mut args = vec!["backup"];
            args.extend_from_slice(action);
            args.extend_from_slice(&["--env", "production", "--output", "json"]);
            let run = runway(&cluster, &args);
            assert_eq!(run.code, 6, "a manifest leaving its backup is an integrity failure: {run:?}");
            let error = run.json()["error"].as_str().expect("an error").to_owned();
            assert!(
                error.contains(&format!("prod/{id}/manifest.json"))
                    && error.contains("\"../../etc/x\"")
                    && error.contains("outside its backup"),
                "the error must name the manifest, the name and the reason: {error}"
            );
            assert!(!run.stderr.contains("[download]"), "a download started: {run:?}");
        }
    }
    // Listing shows the planted manifest too: loudly, not silently skipped.
    let list = runway(&cluster, &["backup", "list", "--env", "production"]);
    assert_eq!(list.code, 6, "{list:?}");
    assert!(list.stderr.contains("prod/planted-"), "{list:?}");

    let after = paths_under(cluster.path());
    // The agent remembers each operator signature it acted on (one use
    // each): that file is its own state, not something a manifest placed.
    let written: Vec<&PathBuf> =
        after.difference(&before).filter(|p| !p.ends_with("signed-uses.json")).collect();
    assert!(written.is_empty(), "refused restores wrote files: {written:?}");
    for path in [cluster.path().join("etc"), backup_dir.join("etc")] {
        assert!(!path.exists(), "{} was created", path.display());
    }
}
