//! The runbook's environment policies, end to end, on one cluster: real
//! etcd, PostgreSQL, a coordinator, `staging` with a DB agent and two app
//! agents (`maintenance = "auto"`), and `production` with a DB agent of
//! its own (`requires = { environment = "staging", soak = "8s" }`).
//!
//! - Staging first: production refuses a bundle that has not succeeded on
//!   staging (exit 2, naming the rule; `rollout plan` says so too, and an
//!   override needs the approve role); after a staging rollout of the same
//!   digest it is still refused until the soak has passed, then it runs; a
//!   different digest is refused again.
//! - Maintenance only when needed: with `maintenance = "auto"`, a bundle
//!   that only adds a nullable column and a concurrent index runs without
//!   maintenance mode (no maintenance command reaches an app host), and one
//!   that rewrites a table keeps it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::watch::{json_lines, step_states};

const SOAK_SECS: u64 = 8;

/// Adds a nullable column and an index built concurrently: safe while the
/// app runs.
const ONLINE: &[(&str, &str)] = &[
    ("20240104000000_nickname", "ALTER TABLE \"User\" ADD COLUMN \"nickname\" TEXT;\n"),
    (
        "20240105000000_order_user_idx",
        "CREATE INDEX CONCURRENTLY \"Order_userId_idx\" ON \"Order\"(\"userId\");\n",
    ),
];

/// Rewrites `Order` (a column's type changes): needs maintenance mode.
const REWRITE: (&str, &str) =
    ("20240106000000_total_bigint", "ALTER TABLE \"Order\" ALTER COLUMN \"total\" TYPE BIGINT;\n");

/// A port of 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    runway_tests::process::free_port()
}

fn folder(cluster: &Cluster, name: &str, migrations: &[(&str, &str)]) -> PathBuf {
    let dir = cluster.path().join(name);
    write_migrations(&dir, migrations);
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("temp paths are UTF-8")
}

/// `runway rollout start --watch --output json` as `operator`.
fn start(cluster: &Cluster, operator: &str, env: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "rollout",
        "start",
        "--env",
        env,
        "--migrations",
        path(dir),
        "--app-version",
        "v2",
        "--watch",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = cluster.runway_as(operator, &args);
    eprintln!("rollout start --env {env} {} {extra:?}: exit {:?}", dir.display(), out.status.code());
    out
}

/// What the CLI said: stderr, then stdout (`--output json` prints an
/// error there as `{"error": …}`).
fn stderr(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let errors = stdout.lines().filter_map(|l| {
        serde_json::from_str::<serde_json::Value>(l).ok()?["error"].as_str().map(str::to_owned)
    });
    format!("{}{}\n{stdout}", String::from_utf8_lossy(&out.stderr), errors.collect::<Vec<_>>().join("\n"))
}

/// `runway rollout plan --output json`: the exit code and the object.
fn plan(cluster: &Cluster, env: &str, dir: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut args = vec!["rollout", "plan", "--env", env, "--migrations", path(dir), "--output", "json"];
    args.extend_from_slice(extra);
    let out = cluster.runway(&args);
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rollout plan printed no JSON ({e}): {}", stderr(&out)));
    (out.status.code(), json)
}

fn lines(value: &serde_json::Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The rollout's id, from its `--watch --output json` events.
fn rollout_id(out: &Output) -> String {
    let events = json_lines(&out.stdout);
    events.first().and_then(|e| e["rollout_id"].as_str()).expect("the rollout's events").to_owned()
}

/// The agents' journaled commands of rollout `id` with `action`.
fn commands(cluster: &Cluster, id: &str, action: &str) -> usize {
    cluster.journals().iter().filter(|(_, e)| e["rollout_id"] == id && e["action"] == action).count()
}

#[test]
fn staging_first_and_maintenance_only_when_needed() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        environment_policies: vec![
            ("staging".into(), "maintenance = \"auto\"".into()),
            (
                "production".into(),
                // A webhook nobody answers: notifications never hold up a rollout.
                format!(
                    "requires = {{ environment = \"staging\", soak = \"{SOAK_SECS}s\" }}\n\
                     webhooks = [{{ name = \"down\", format = \"json\", url = \"http://127.0.0.1:{}/hook\" }}]",
                    closed_port()
                ),
            ),
        ],
        ..Options::default()
    });
    let _production = cluster.start_extra_db_agent("db-prod", "production", "prod", "");
    let shop = folder(&cluster, "shop", SHOP);

    // 1. Production refuses a bundle that never ran on staging, before
    //    anything changes, naming the rule.
    let out = start(&cluster, "ops", "production", &shop, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let refusal = stderr(&out);
    assert!(
        refusal.contains("[environments.production] requires = { environment = \"staging\", soak = \"8s\" }")
            && refusal.contains("has not succeeded in staging"),
        "{refusal}"
    );
    let (code, json) = plan(&cluster, "production", &shop, &[]);
    assert_eq!((code, json["verdict"].as_str()), (Some(2), Some("policy_refused")), "{json:#}");
    assert!(lines(&json["policies"]).contains("requires: NOT met"), "{json:#}");
    // Overriding is an approver's call: a deployer may not.
    let out = start(&cluster, "deployer", "production", &shop, &["--override-requires"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("--override-requires needs the approve role"), "{}", stderr(&out));
    assert_eq!(cluster.pg.psql("prod", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");

    // 2. On staging it runs; production still waits for the soak.
    let out = start(&cluster, "ops", "staging", &shop, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let staging_id = rollout_id(&out);
    let out = start(&cluster, "ops", "production", &shop, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("(rollout {staging_id},")) && stderr(&out).contains("of soak left")
    );

    // 3. After the soak it runs.
    std::thread::sleep(Duration::from_secs(SOAK_SECS));
    let (code, json) = plan(&cluster, "production", &shop, &[]);
    assert_ne!(json["verdict"], "policy_refused", "{json:#}");
    assert!(
        lines(&json["policies"])
            .contains(&format!("requires: met: succeeded in staging by rollout {staging_id}"))
    );
    assert!(matches!(code, Some(0 | 7)), "{json:#}");
    assert!(lines(&json["policies"]).contains("webhooks: down (json: every event)"), "{json:#}");
    let out = start(&cluster, "ops", "production", &shop, &[]);
    assert!(out.status.success(), "production refused a bundle that soaked on staging: {}", stderr(&out));
    assert_eq!(cluster.pg.psql("prod", "SELECT count(*) FROM \"User\""), "2");
    let log = std::fs::read_to_string(&cluster.coordinators[0].proc.log).unwrap_or_default();
    assert!(log.contains("notification not delivered"), "the webhook that is down was never tried");

    // 4. A different digest is refused again.
    let mut online = SHOP.to_vec();
    online.extend_from_slice(ONLINE);
    let online = folder(&cluster, "online", &online);
    let out = start(&cluster, "ops", "production", &online, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("has not succeeded in staging"), "{}", stderr(&out));

    // 5. maintenance = "auto": a nullable column and a concurrent index run
    //    with the apps serving; `rollout plan` says so first.
    let (code, json) = plan(&cluster, "staging", &online, &[]);
    assert_eq!((code, json["verdict"].as_str()), (Some(0), Some("safe")), "{json:#}");
    let skipped: Vec<&str> = json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["skipped"] == true)
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(skipped, ["maintenance_on", "maintenance_off"], "{json:#}");
    assert!(lines(&json["policies"]).contains("maintenance on and off are skipped"), "{json:#}");
    let out = start(&cluster, "ops", "staging", &online, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = rollout_id(&out);
    let events = json_lines(&out.stdout);
    let why =
        events.iter().find(|e| e["kind"] == "maintenance_skipped").expect("a maintenance_skipped event");
    assert!(
        why["message"].as_str().unwrap().contains("every pending statement is safe with the app running")
    );
    assert_eq!(
        (commands(&cluster, &id, "maintenance_on"), commands(&cluster, &id, "maintenance_off")),
        (0, 0)
    );
    assert_eq!(commands(&cluster, &id, "restart"), cluster.apps.len(), "the apps still restart");
    let rollout = cluster.show_rollout(&id);
    let states = step_states(&rollout);
    assert!(
        states.contains(&("maintenance_on", "skipped")) && states.contains(&("maintenance_off", "skipped")),
        "{states:?}"
    );
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_indexes WHERE indexname = 'Order_userId_idx'"), "1");

    // 6. A table rewrite keeps maintenance mode, and says why.
    let mut rewrite = SHOP.to_vec();
    rewrite.extend_from_slice(ONLINE);
    rewrite.push(REWRITE);
    let rewrite = folder(&cluster, "rewrite", &rewrite);
    let accept = ["--allow-danger", "alter-column-type"];
    let (code, json) = plan(&cluster, "staging", &rewrite, &accept);
    assert_eq!((code, json["verdict"].as_str()), (Some(7), Some("needs_maintenance")), "{json:#}");
    assert!(lines(&json["policies"]).contains("maintenance mode goes on"), "{json:#}");
    let out = start(&cluster, "ops", "staging", &rewrite, &accept);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = rollout_id(&out);
    let events = json_lines(&out.stdout);
    let why = events.iter().find(|e| e["kind"] == "maintenance_needed").expect("a maintenance_needed event");
    assert!(why["message"].as_str().unwrap().contains("alter-column-type"), "{why}");
    assert_eq!(
        (commands(&cluster, &id, "maintenance_on"), commands(&cluster, &id, "maintenance_off")),
        (cluster.apps.len(), cluster.apps.len())
    );
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()));
}
