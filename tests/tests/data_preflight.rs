//! A migration the live data makes fail is refused before any downtime:
//! the DB agent's preflight reads the rows a pending statement would trip
//! over (here NULLs under `SET NOT NULL`), and the rollout ends `refused`
//! in preflight — before approvals, maintenance mode or a backup — with
//! the count, example primary keys and the query that lists the rows.
//! Never another column value: that may be personal data.
//!
//! Real etcd, PostgreSQL, a coordinator, agents and sample apps as processes.

use runway_tests::cluster::{Cluster, DB, ENV, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::{json_lines, milestones};

/// A customer whose name is NULL; its email must never leave the database.
const SENTINEL: &str = "sentinel-personal-data@example.com";

const NAME_REQUIRED: (&str, &str) = (
    "20240204000000_name_required",
    "-- AlterTable\nALTER TABLE \"User\" ALTER COLUMN \"name\" SET NOT NULL;\n",
);

#[test]
fn a_migration_the_data_makes_fail_is_refused_in_preflight_with_keys_only() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        environment_policy: "approvals = 1".into(),
        ..Options::default()
    });
    // The shop history, applied locally; then a customer without a name.
    let shop = cluster.path().join("shop");
    write_migrations(&shop, SHOP);
    let url = cluster.pg.url(DB);
    let deployed = cluster.runway(&[
        "migrate",
        "deploy",
        "--migrations",
        shop.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    cluster.sql(&format!("INSERT INTO \"User\" (email) VALUES ('{SENTINEL}')"));
    let id = cluster.sql(&format!("SELECT id FROM \"User\" WHERE email = '{SENTINEL}'"));
    let before = cluster.database_state();

    let bundle = cluster.path().join("v2");
    let mut history = SHOP.to_vec();
    history.push(NAME_REQUIRED);
    write_migrations(&bundle, &history);

    // The plan says deploy would refuse (exit 8), naming the rows.
    let plan = cluster.runway(&["rollout", "plan", "--env", ENV, "--migrations", bundle.to_str().unwrap()]);
    let plan_text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert_eq!(plan.status.code(), Some(8), "{plan_text}{}", String::from_utf8_lossy(&plan.stderr));
    for needle in [
        format!("will fail: {} line 2: not-null on User (name), 1 row(s)", NAME_REQUIRED.0),
        format!("e.g. id={id}"),
        "find them: SELECT".to_owned(),
    ] {
        assert!(plan_text.contains(&needle), "the plan does not say {needle:?}:\n{plan_text}");
    }

    // The rollout is refused in preflight: exit 8, no approval asked, no
    // maintenance, no backup, nothing applied.
    let out = cluster.runway(&rollout_start_args(&bundle, "v2"));
    let events = json_lines(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(8), "{stderr}\n{events:#?}");
    assert_eq!(milestones(&events), ["step_started preflight", "step_failed preflight"], "{events:#?}");
    assert!(!events.iter().any(|e| e["step"] == "approval"), "an approval was asked for: {events:#?}");
    let rollout = events.first().and_then(|e| e["rollout_id"].as_str()).expect("a rollout id").to_owned();
    let touched: Vec<String> = cluster
        .journals()
        .into_iter()
        .filter(|(_, e)| e["rollout_id"] == rollout.as_str() && e["action"] != "preflight")
        .map(|(host, e)| format!("{host}: {}", e["action"]))
        .collect();
    assert!(touched.is_empty(), "only preflight may run: {touched:?}");
    assert!(cluster.apps.iter().all(|a| !a.in_maintenance()), "maintenance mode went on");
    let backups = std::fs::read_dir(&cluster.db.as_ref().expect("a DB host").backup_dir)
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert_eq!(backups, 0, "a backup was taken");
    assert_eq!(cluster.database_state(), before, "the database changed");

    // `rollout show` keeps the findings.
    let show = cluster.runway(&["rollout", "show", &rollout, "--output", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("rollout JSON");
    assert_eq!(shown["state"], "failed", "{shown:#}");
    assert_eq!(shown["refused"], true);
    let finding = &shown["plan"]["data"][0];
    assert_eq!(finding["certainty"], "will_fail", "{shown:#}");
    assert_eq!(finding["kind"], "not-null");
    assert_eq!(finding["count"], 1);
    assert_eq!(finding["examples"], serde_json::json!([format!("id={id}")]));
    let text = cluster.runway(&["rollout", "show", &rollout]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("WILL FAIL"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // The personal data stayed in the database: not in any output, event or log.
    let mut seen = vec![
        ("plan", plan_text),
        ("rollout start stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("rollout start stderr", stderr),
        ("rollout show", String::from_utf8_lossy(&show.stdout).into_owned()),
        ("rollout show text", String::from_utf8_lossy(&text.stdout).into_owned()),
        ("db agent log", cluster.db.as_ref().expect("a DB host").agent.log_text()),
    ];
    for c in &cluster.coordinators {
        seen.push(("coordinator log", c.proc.log_text()));
    }
    for (what, text) in seen {
        assert!(!text.contains(SENTINEL), "{what} shows another column's value:\n{text}");
    }
}
