//! `runway rollout plan`: the plan a rollout's preflight computes, through
//! the leader and the environment's real agents, without changing anything.
//!
//! One cluster (real etcd, PostgreSQL, a coordinator, a DB agent and two
//! app agents with sample apps) applies a history with a normal rollout,
//! then plans three bundles on top of it: a safe one (exit 0), one with a
//! `DROP COLUMN` (the danger gate would refuse: exit 2), and the same with
//! `--allow-danger drop-column` (not refused; 7 or 0 as the plan says).
//! Afterwards it proves that nothing changed: only preflight ran for the
//! plan's command ids, no maintenance hook, no backup, `_prisma_migrations`
//! and the schema as before, and no rollout recorded. Last, an unresolved
//! failed migration makes deploy refuse: exit 8.

use std::process::Output;
use std::time::Instant;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{DROP_NAME, SHOP, rollout_start_args, write_migrations};

const COUPONS: (&str, &str) = (
    "20240104000000_coupons",
    "-- CreateTable\nCREATE TABLE \"Coupon\" (\n    \"id\" SERIAL NOT NULL,\n    \"code\" TEXT NOT NULL,\n    CONSTRAINT \"Coupon_pkey\" PRIMARY KEY (\"id\")\n);\n",
);

/// Writes `history` under `name` and runs `runway rollout plan` for it; the
/// run and how long it took.
fn plan(cluster: &Cluster, name: &str, history: &[(&str, &str)], extra: &[&str]) -> Output {
    let migrations = cluster.path().join(name);
    write_migrations(&migrations, history);
    let mut args = vec![
        "rollout",
        "plan",
        "--env",
        "staging",
        "--migrations",
        migrations.to_str().expect("temp paths are UTF-8"),
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = cluster.runway(&args);
    eprintln!("rollout plan {name} {extra:?}: exit {:?} in {:?}", out.status.code(), started.elapsed());
    out
}

/// The one JSON object `--output json` prints.
fn object(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one JSON object on stdout:\n{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Everything in the DB host's backup dir, by name.
fn backup_dir(cluster: &Cluster) -> Vec<String> {
    let dir = &cluster.db.as_ref().expect("a DB host").backup_dir;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn rollout_plan_shows_the_preflight_plan_and_changes_nothing() {
    let cluster = Cluster::start(Options { coordinators: 1, ..Options::default() });

    // An applied history, through a normal rollout.
    let v1 = cluster.path().join("v1");
    write_migrations(&v1, SHOP);
    let out = cluster.runway(&rollout_start_args(&v1, "v1"));
    assert!(out.status.success(), "the first rollout failed: {}", String::from_utf8_lossy(&out.stderr));
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    let first = object(&list)["id"].as_str().expect("the first rollout's id").to_owned();
    let before = cluster.database_state();
    let backups_before = backup_dir(&cluster);
    let hosts: Vec<String> =
        std::iter::once("db-1".to_owned()).chain(cluster.apps.iter().map(|a| a.name.clone())).collect();

    // 1. One more migration, a new table: safe, exit 0, listed as pending.
    let mut safe = SHOP.to_vec();
    safe.push(COUPONS);
    let out = plan(&cluster, "safe", &safe, &["--output", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json = object(&out);
    assert_eq!(out.status.code(), Some(0), "a safe plan exits 0: {stderr}\n{json:#}");
    assert_eq!(json["verdict"], "safe", "{json:#}");
    assert_eq!(names(&json["pending"]), [COUPONS.0], "{json:#}");
    assert_eq!(json["maintenance_needed"], false, "{json:#}");
    let steps: Vec<String> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(steps, ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"]);
    assert_eq!(names(&json["steps"][0]["hosts"]), hosts, "preflight runs on every host");
    let answered: Vec<(String, String)> = json["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| (h["host"].as_str().unwrap_or("").to_owned(), h["answer"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(answered, hosts.iter().map(|h| (h.clone(), "ok".to_owned())).collect::<Vec<_>>());
    assert!(json["space"]["free_bytes"].as_u64().is_some_and(|b| b > 0), "no disk check: {json:#}");
    assert!(json["space"]["needed_bytes"].as_u64().is_some(), "no disk check: {json:#}");

    // 2. A DROP COLUMN: the danger gate would refuse, exit 2, and the
    //    finding is named with its table; in text too, with the flag.
    let mut dangerous = SHOP.to_vec();
    dangerous.push(DROP_NAME);
    let out = plan(&cluster, "dangerous", &dangerous, &["--output", "json"]);
    let json = object(&out);
    assert_eq!(out.status.code(), Some(2), "the danger gate refuses (exit 2): {json:#}");
    assert_eq!(json["verdict"], "danger_refused", "{json:#}");
    assert_eq!(names(&json["pending"]), [DROP_NAME.0]);
    assert_eq!(json["unaccepted_dangers"][0]["rule"], "drop-column", "{json:#}");
    let findings = json["plan"]["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == "drop-column" && f["table"] == "User" && f["severity"] == "danger"),
        "{findings:#?}"
    );
    let out = plan(&cluster, "dangerous-text", &dangerous, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "the danger gate would refuse",
        "20240110000000_drop_name line 2: drop-column on User (",
        "--allow-danger drop-column",
        "SIZE",
    ] {
        assert!(text.contains(needle), "the text plan does not show {needle:?}:\n{text}");
    }

    // 3. Accepted: not refused; the exit code is what the plan says about
    //    maintenance mode, and the disk was checked.
    let out = plan(&cluster, "accepted", &dangerous, &["--allow-danger", "drop-column", "--output", "json"]);
    let json = object(&out);
    let needs_maintenance =
        json["maintenance_needed"].as_bool().expect("the plan says whether maintenance is needed");
    let (verdict, code) = if needs_maintenance { ("needs_maintenance", 7) } else { ("safe", 0) };
    assert_eq!(out.status.code(), Some(code), "{json:#}");
    assert_eq!(json["verdict"], verdict, "{json:#}");
    assert!(
        needs_maintenance,
        "dropping a column breaks running code, so the plan should need maintenance: {json:#}"
    );
    assert_eq!(json["unaccepted_dangers"], serde_json::json!([]), "{json:#}");
    assert!(json["space"]["free_bytes"].as_u64().is_some(), "no disk check: {json:#}");

    // Nothing changed. Every plan call reached every host with a preflight
    // of its own id, and nothing else ran for those ids.
    let plan_commands: Vec<(String, serde_json::Value)> = cluster
        .journals()
        .into_iter()
        .filter(|(_, e)| e["command_id"].as_str().is_some_and(|id| id.starts_with("plan-")))
        .collect();
    assert_eq!(
        plan_commands.len(),
        4 * hosts.len(),
        "one preflight per host per plan call: {plan_commands:#?}"
    );
    for (host, entry) in &plan_commands {
        assert_eq!(entry["action"], "preflight", "{host} ran more than preflight for a plan: {entry}");
        let id = entry["command_id"].as_str().unwrap_or("");
        assert!(id.ends_with(&format!("/preflight/{host}/1")), "{id}");
        assert_eq!(entry["rollout_id"], "", "a plan's command belongs to no rollout: {entry}");
    }
    for app in &cluster.apps {
        assert!(!app.in_maintenance(), "{} is in maintenance mode after a plan", app.name);
    }
    assert_eq!(backup_dir(&cluster), backups_before, "a plan left something in the backup dir");
    assert_eq!(cluster.database_state(), before, "a plan changed the schema or _prisma_migrations");
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("rollout JSON")["id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(ids, [first], "a plan recorded a rollout");

    // 4. A migration that failed earlier and is unresolved (the row a failed
    //    deploy leaves): deploy would refuse, exit 8, whatever is accepted.
    cluster.sql(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, applied_steps_count) \
         VALUES ('00000000-0000-0000-0000-000000000001', 'x', '20240103500000_failed', now(), 0)",
    );
    let out = plan(&cluster, "blocked", &safe, &["--allow-danger", "drop-column", "--output", "json"]);
    let json = object(&out);
    assert_eq!(out.status.code(), Some(8), "an unresolved failed migration blocks the rollout: {json:#}");
    assert_eq!(json["verdict"], "blocked", "{json:#}");
    let reasons = json["reasons"].to_string();
    assert!(
        reasons.contains("20240103500000_failed"),
        "the reason does not name the failed migration: {reasons}"
    );
}
