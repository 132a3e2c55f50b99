//! Many databases in one environment, end to end (real etcd, PostgreSQL,
//! a coordinator, an app agent and two DB agents as processes): `db-1`
//! serves one database (`app`, the single `[database]` form), `db-2`
//! serves two (`[databases.billing]`, `[databases.orders]`), all three in
//! one PostgreSQL server under different names. The environment's policy
//! is `databases = { canary = 1, parallel = 1, max_failures = 0, uniform =
//! true }`, so the targets migrate in the order db-1 (canary), db-2/billing,
//! db-2/orders.
//!
//! - A: a rollout migrates all three, the canary first (from the events),
//!   and every database has the migrations in `_prisma_migrations`; the
//!   app restarts only after the last database. `rollout plan` shows the
//!   order first.
//! - B: a migration that fails on `billing` only (a table there conflicts)
//!   after changing it: billing is restored from its backup, exactly as
//!   before; the canary, already migrated, is restored too (uniform);
//!   orders is never started and stays untouched; `rollout show` gives each
//!   database's state, and `runway backup list --database orders` finds
//!   orders' backups on db-2.

use std::process::Command;
use std::time::Duration;

use runway_tests::cluster::{Cluster, DB, ENV, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::{Proc, bin, wait_until};
use runway_tests::watch::json_lines;

/// Adds a column everywhere: changes every database it reaches.
const NOTE: (&str, &str) = ("20240111000000_note", "ALTER TABLE \"Order\" ADD COLUMN \"note\" TEXT;\n");
/// Creates `Invoice`: fails where the table exists already (billing).
const INVOICE: (&str, &str) = (
    "20240112000000_invoice",
    "CREATE TABLE \"Invoice\" (\"id\" SERIAL NOT NULL, CONSTRAINT \"Invoice_pkey\" PRIMARY KEY (\"id\"));\n",
);

/// The three targets, in plan order.
const TARGETS: [&str; 3] = ["db-1", "db-2/billing", "db-2/orders"];

/// The database of each target in the PostgreSQL server.
fn database_of(target: &str) -> &str {
    match target {
        "db-1" => DB,
        other => other.trim_start_matches("db-2/"),
    }
}

/// Schema (`pg_dump --schema-only`) and `_prisma_migrations` of `database`:
/// what "as before" compares.
fn state(cluster: &Cluster, database: &str) -> (String, String) {
    let schema = Command::new(format!("{}/pg_dump", runway_tests::postgres::PG_BIN))
        .args(["--schema-only", "--no-owner", "-d", &cluster.pg.url(database)])
        .output()
        .expect("run pg_dump");
    assert!(schema.status.success(), "pg_dump: {}", String::from_utf8_lossy(&schema.stderr));
    // pg_dump brackets its output with a random `\restrict KEY` per run.
    let schema = String::from_utf8_lossy(&schema.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .collect::<Vec<_>>()
        .join("\n");
    (schema, migrations(cluster, database))
}

/// Every column of `_prisma_migrations`, by name.
fn migrations(cluster: &Cluster, database: &str) -> String {
    cluster.pg.psql(database, "SELECT * FROM _prisma_migrations ORDER BY migration_name")
}

/// The finished migrations of `database`, by name.
fn applied(cluster: &Cluster, database: &str) -> Vec<String> {
    cluster
        .pg
        .psql(
            database,
            "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL \
             ORDER BY migration_name",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Starts `db-2`, serving `billing` and `orders`, and waits until it registered them.
fn start_db_2(cluster: &Cluster) -> Proc {
    for database in ["billing", "orders"] {
        cluster.pg.create_database(database);
    }
    let root = cluster.path();
    let coordinators = cluster.coordinators.iter().map(|c| format!("{:?}", c.addr)).collect::<Vec<_>>();
    let config = root.join("db-2.toml");
    let text = format!(
        "name = \"db-2\"\nenvironment = \"{ENV}\"\ncoordinators = [{}]\nroles = [\"db\"]\nstate_dir = {:?}\n\
         heartbeat = \"1s\"\n[databases.billing]\nurl = \"{}\"\n[databases.orders]\nurl = \"{}\"\n\
         [backup]\ndir = {:?}\npg_bin_dir = \"{}\"\n{}",
        coordinators.join(", "),
        root.join("db-2-state").display().to_string(),
        cluster.pg.url("billing"),
        cluster.pg.url("orders"),
        root.join("db-2-backups").display().to_string(),
        runway_tests::postgres::PG_BIN,
        cluster.agent_tls_toml(ENV, "db-2"),
    );
    std::fs::write(&config, text).expect("write db-2 config");
    let agent = Proc::spawn("db-2", Command::new(bin("runway-agent")).arg("--config").arg(&config), root);
    wait_until("db-2 to register its two databases", Duration::from_secs(30), || {
        let out = cluster.runway(&["agents", "--output", "json"]);
        json_lines(&out.stdout)
            .iter()
            .any(|a| a["name"] == "db-2" && a["databases"] == serde_json::json!(["billing", "orders"]))
            .then_some(())
    });
    agent
}

/// Index of the first event matching `f`.
fn position(events: &[serde_json::Value], what: &str, f: impl Fn(&serde_json::Value) -> bool) -> usize {
    events.iter().position(f).unwrap_or_else(|| panic!("no event for {what}: {events:#?}"))
}

/// `(host, database, state, migrations applied)` of each database in
/// `rollout show ID --output json`.
fn shown(cluster: &Cluster, id: &str) -> Vec<(String, String, String, u64)> {
    let out = cluster.runway(&["rollout", "show", id, "--output", "json"]);
    assert!(out.status.success(), "rollout show: {}", String::from_utf8_lossy(&out.stderr));
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rollout show prints JSON");
    rollout["databases"]
        .as_array()
        .expect("a rollout lists its databases")
        .iter()
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (text("host"), text("database"), text("state"), d["migrations_applied"].as_u64().unwrap_or(99))
        })
        .collect()
}

fn row(host: &str, database: &str, state: &str, applied: u64) -> (String, String, String, u64) {
    (host.into(), database.into(), state.into(), applied)
}

#[test]
fn three_databases_migrate_canary_first_and_a_failure_restores_per_policy() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        environment_policy: "databases = { canary = 1, parallel = 1, max_failures = 0, uniform = true }"
            .into(),
        ..Options::default()
    });
    let _db_2 = start_db_2(&cluster);

    // The plan names every database and the order the policy gives them.
    let plan_dir = cluster.path().join("plan");
    write_migrations(&plan_dir, SHOP);
    let plan =
        cluster.runway(&["rollout", "plan", "--env", ENV, "--migrations", plan_dir.to_str().expect("UTF-8")]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("migrate order: canary [db-1] → [db-2/billing] → [db-2/orders]"), "{plan}");
    for target in TARGETS {
        assert!(
            plan.lines().any(|l| l.starts_with(target) || l.contains(&format!(" {target} "))),
            "{target}:\n{plan}"
        );
    }

    // A: every database migrates, the canary first, the app restart after the last.
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "rollout A failed: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let migrate_done = |target: &'static str| {
        move |e: &serde_json::Value| {
            e["step"] == "migrate" && e["host"] == target && e["kind"] == "command_succeeded"
        }
    };
    let migrate_started = |target: &'static str| {
        move |e: &serde_json::Value| e["step"] == "migrate" && e["host"] == target && e["kind"] == "progress"
    };
    let canary_done = position(&events, "the canary's migration", migrate_done("db-1"));
    for later in &TARGETS[1..] {
        let started = position(&events, later, migrate_started(later));
        assert!(canary_done < started, "{later} started migrating before the canary ended: {events:#?}");
    }
    let billing_done = position(&events, "billing's migration", migrate_done("db-2/billing"));
    assert!(billing_done < position(&events, "orders", migrate_started("db-2/orders")), "parallel = 1");
    let last_done = position(&events, "orders' migration", migrate_done("db-2/orders"));
    let restart = position(&events, "the restart", |e| e["kind"] == "step_started" && e["step"] == "restart");
    assert!(last_done < restart, "the app restarted before every database was migrated");
    let canary_batch =
        position(&events, "the canary batch", |e| e["kind"] == "batch_started" && e["step"] == "migrate");
    assert_eq!(events[canary_batch]["detail"]["canary"], true);
    assert_eq!(events[canary_batch]["detail"]["hosts"], serde_json::json!(["db-1"]));
    let shop: Vec<String> = SHOP.iter().map(|(name, _)| (*name).to_owned()).collect();
    for target in TARGETS {
        assert_eq!(applied(&cluster, database_of(target)), shop, "{target} lacks the migrations");
    }
    let id_a = events[0]["rollout_id"].as_str().expect("a rollout id").to_owned();
    assert_eq!(
        shown(&cluster, &id_a),
        [
            row("db-1", DB, "migrated", 3),
            row("db-2", "billing", "migrated", 3),
            row("db-2", "orders", "migrated", 3)
        ]
    );

    // B: a table only billing has makes its second migration fail after the first changed it.
    cluster.pg.psql("billing", "CREATE TABLE \"Invoice\" (\"id\" INTEGER)");
    let before: Vec<(String, String)> = TARGETS.iter().map(|t| state(&cluster, database_of(t))).collect();
    let mut history = SHOP.to_vec();
    history.extend([NOTE, INVOICE]);
    let (out, events) = cluster.roll_out("v3", &history, &[]);
    assert_eq!(out.status.code(), Some(1), "a rolled-back rollout exits 1: {events:#?}");
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "rollout_rolled_back", "{events:#?}");
    let billing_failed = position(&events, "billing's failure", |e| {
        e["step"] == "migrate" && e["host"] == "db-2/billing" && e["kind"] == "command_failed"
    });
    assert!(
        events[billing_failed]["message"].as_str().is_some_and(|m| m.contains("Invoice")),
        "billing must fail on the conflicting table: {}",
        events[billing_failed]
    );
    assert!(
        !events.iter().any(|e| e["host"] == "db-2/orders" && e["step"] == "migrate"),
        "orders must never start migrating (max_failures = 0)"
    );
    let restored: Vec<&str> = events
        .iter()
        .filter(|e| e["step"] == "restore" && e["kind"] == "command_succeeded")
        .filter_map(|e| e["host"].as_str())
        .collect();
    assert_eq!(restored.len(), 2, "billing and the migrated canary are restored: {restored:?}");
    assert!(restored.contains(&"db-1") && restored.contains(&"db-2/billing"), "{restored:?}");
    let lifted = position(&events, "maintenance off", |e| {
        e["kind"] == "step_started" && e["step"] == "maintenance_off"
    });
    let restores_end = events
        .iter()
        .rposition(|e| e["step"] == "restore" && e["kind"] == "command_succeeded")
        .expect("restores");
    assert!(restores_end < lifted, "maintenance was lifted before the restores ended");
    for (target, before) in TARGETS.iter().zip(&before) {
        assert_eq!(&state(&cluster, database_of(target)), before, "{target} is not as before the rollout");
    }
    assert_eq!(cluster.pg.psql("billing", "SELECT count(*) FROM \"Invoice\""), "0", "billing's own table");
    let id_b = last["rollout_id"].as_str().expect("a rollout id").to_owned();
    assert_eq!(
        shown(&cluster, &id_b),
        [
            row("db-1", DB, "restored", 2),
            row("db-2", "billing", "restored", 0),
            row("db-2", "orders", "skipped", 0)
        ]
    );
    let text = cluster.runway(&["rollout", "show", &id_b]);
    let text = String::from_utf8_lossy(&text.stdout);
    for (host, database, state) in
        [("db-1", DB, "restored"), ("db-2", "billing", "restored"), ("db-2", "orders", "skipped")]
    {
        assert!(
            text.lines().any(|l| l.contains(host) && l.contains(database) && l.contains(state)),
            "rollout show has no line for {host} {database} {state}:\n{text}"
        );
    }
    // Backups through the coordinator name their database once there are several.
    let list = cluster.runway(&["backup", "list", "--env", ENV, "--database", "orders", "--output", "json"]);
    assert!(
        list.status.success(),
        "backup list --database orders: {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).expect("backup list prints JSON");
    assert_eq!(listed["host"], "db-2");
    let orders = listed["result"]["backups"].as_array().expect("a list of backups");
    assert_eq!(orders.len(), 2, "one backup of orders per rollout: {listed}");
    assert!(orders.iter().all(|b| b["database"] == "orders"), "{listed}");
    let unnamed = cluster.runway(&["backup", "list", "--env", ENV]);
    let error = String::from_utf8_lossy(&unnamed.stderr);
    assert!(!unnamed.status.success() && error.contains("db-1, db-2"), "{error}");
    let status = cluster.runway(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(&format!("databases of rollout {id_b}")), "{status}");
    assert!(status.lines().any(|l| l.contains("orders") && l.contains("skipped")), "{status}");
}
