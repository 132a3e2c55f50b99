//! `runway backup list|show|verify|restore --env` end to end: the real CLI
//! asks the leader coordinator, which runs the command on the real DB agent
//! against a real PostgreSQL; backups come from real rollouts.

use std::path::{Path, PathBuf};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};

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

fn rollout(cluster: &Cluster, migrations: &Path) {
    let run = runway(
        cluster,
        &["rollout", "start", "--env", ENV, "--migrations", migrations.to_str().unwrap(), "--watch"],
    );
    assert_eq!(run.code, 0, "rollout failed: {run:?}");
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

fn count(cluster: &Cluster, table: &str) -> i64 {
    cluster.sql(&format!("SELECT count(*) FROM \"{table}\"")).trim().parse().expect("a count")
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
    let cluster = Cluster::start(Options { coordinators: 2, app_hosts: 0, db_host: true });
    let backup_dir: PathBuf = cluster.db.as_ref().expect("db host").backup_dir.clone();

    // Two rollouts; the second one's backup holds the first one's data.
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    rollout(&cluster, &migrations);
    write_migrations(
        &migrations,
        &[(
            "20240104000000_carol",
            "INSERT INTO \"User\" (\"email\", \"name\") VALUES ('carol@example.com', 'Carol');\n",
        )],
    );
    rollout(&cluster, &migrations);
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (3, 2));

    let on_disk = backups_on_disk(&backup_dir);
    assert_eq!(on_disk.len(), 2, "expected one backup per rollout: {on_disk:?}");
    let (name, manifest) = on_disk[1].clone();
    let rows_in = |table: &str| {
        manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .and_then(|t| t["rows"].as_i64())
            .unwrap_or_else(|| panic!("manifest of {name} lacks table {table}: {manifest}"))
    };
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

    // restore without --yes: refused before anything is sent.
    let unconfirmed = runway(&cluster, &["backup", "restore", &name, "--env", ENV]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    assert!(unconfirmed.stderr.contains("--yes"), "{unconfirmed:?}");
    assert_eq!((count(&cluster, "User"), count(&cluster, "Order")), (3, 2));

    // One flipped bit: verify fails, restore is refused, the database is untouched.
    let dump = backup_dir.join(&name).join(manifest["dump"].as_str().unwrap());
    let original = corrupt(&dump);
    let verify = runway(&cluster, &["backup", "verify", &name, "--env", ENV]);
    assert_eq!(verify.code, 1, "{verify:?}");
    assert!(verify.stderr.contains("checksum"), "{verify:?}");
    let restore = runway(&cluster, &["backup", "restore", &name, "--env", ENV, "--yes", "--output", "json"]);
    assert_eq!(restore.code, 1, "{restore:?}");
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
        assert_eq!(show.code, 1, "{show:?}");
        assert!(show.stderr.contains(&format!("backup {missing} not found")), "{show:?}");
    }
}
