//! The restart phase as policy, end to end (real etcd, PostgreSQL, a
//! coordinator, a DB agent and app agents fronting sample apps):
//!
//! - restarts in batches with a canary: the order and overlap the events
//!   show match `batch = 2, canary = 1`; a host that never becomes healthy
//!   with `max_failures = 0` stops the rollout before the last batch, and
//!   the hosts already restarted get the previous version back;
//! - a smoke test that fails after maintenance off, and a health failure
//!   inside the watch window, each end the rollout `rolled_back` with the
//!   previous app version running; a rollout without failure ends
//!   `succeeded` only after the window.

use std::collections::BTreeMap;
use std::time::Duration;

use runway_tests::cluster::{AppHost, Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::{Watch, milestones};

/// The hosts of each `batch_started` event, in order.
fn batches(events: &[serde_json::Value]) -> Vec<Vec<String>> {
    events
        .iter()
        .filter(|e| e["kind"] == "batch_started")
        .map(|e| {
            e["detail"]["hosts"]
                .as_array()
                .expect("a batch names its hosts")
                .iter()
                .map(|h| h.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .collect()
}

/// For each host, when its restart began (its first progress event of the
/// restart step) and ended (its command's result), in ms, from the events.
fn restart_spans(events: &[serde_json::Value]) -> BTreeMap<String, (i64, i64)> {
    let mut spans: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let ended = |e: &&serde_json::Value| {
        e["step"] == "restart" && (e["kind"] == "step_succeeded" || e["kind"] == "step_failed")
    };
    // The rollout's own restart step, not a recovery restart after it.
    let restart = events.iter().take_while(|e| !ended(e));
    for e in restart.filter(|e| e["step"] == "restart") {
        let (Some(host), Some(at)) = (e["host"].as_str().filter(|h| !h.is_empty()), e["unix_ms"].as_i64())
        else {
            continue;
        };
        let span = spans.entry(host.to_owned()).or_insert((i64::MAX, i64::MAX));
        match e["kind"].as_str() {
            Some("progress") => span.0 = span.0.min(at),
            Some("command_succeeded" | "command_failed") => span.1 = at,
            _ => {}
        }
    }
    spans
}

fn health(app: &AppHost) -> String {
    app.health().unwrap_or_else(|| panic!("{} is not healthy", app.name))
}

#[test]
fn restarts_run_in_batches_after_a_canary_and_stop_at_a_host_that_never_becomes_healthy() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 5,
        environment_policy: "restart = { batch = 2, canary = 1, min_healthy = \"2s\", healthy_deadline = \"8s\", max_failures = 0 }".into(),
        ..Options::default()
    });

    // `rollout plan` shows the order the policy gives these hosts.
    let migrations = cluster.path().join("plan");
    write_migrations(&migrations, SHOP);
    let plan = cluster.runway(&[
        "rollout",
        "plan",
        "--env",
        "staging",
        "--migrations",
        migrations.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("restart order: canary [app-1] → [app-2, app-3] → [app-4, app-5]"),
        "rollout plan does not show the restart order:\n{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(text.contains("staying healthy for 2s; failures tolerated: 0"), "{text}");

    // 1. All healthy: canary alone, then two batches of two, in order.
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(batches(&events), [vec!["app-1"], vec!["app-2", "app-3"], vec!["app-4", "app-5"]]);
    let spans = restart_spans(&events);
    let span = |host: &str| *spans.get(host).unwrap_or_else(|| panic!("no restart of {host}: {spans:?}"));
    let order = [vec!["app-1"], vec!["app-2", "app-3"], vec!["app-4", "app-5"]];
    for batch in &order {
        for host in batch {
            let (start, end) = span(host);
            assert!(
                end - start >= 2000,
                "{host} counted healthy after {} ms, before min_healthy",
                end - start
            );
        }
    }
    // Within a batch the hosts overlap: each began before the other ended.
    let ((a_start, a_end), (b_start, b_end)) = (span("app-2"), span("app-3"));
    assert!(a_start < b_end && b_start < a_end, "app-2 and app-3 did not restart together: {spans:?}");
    let ((a_start, a_end), (b_start, b_end)) = (span("app-4"), span("app-5"));
    assert!(a_start < b_end && b_start < a_end, "app-4 and app-5 did not restart together: {spans:?}");
    // Across batches no overlap: a batch begins once the previous one ended.
    for pair in order.windows(2) {
        let ended = pair[0].iter().map(|h| span(h).1).max().unwrap();
        let began = pair[1].iter().map(|h| span(h).0).min().unwrap();
        assert!(began >= ended, "{:?} began before {:?} ended: {spans:?}", pair[1], pair[0]);
    }
    for app in &cluster.apps {
        assert!(health(app).contains("version=v2"), "{}: {}", app.name, health(app));
    }

    // 2. app-3 never becomes healthy on v3, and no failure is tolerated:
    //    the canary and the second batch ran, the last batch never started,
    //    and app-1..3 get v2 back.
    let untouched: Vec<u32> = cluster.apps[3..].iter().map(AppHost::pid).collect();
    std::fs::write(cluster.apps[2].dir.join("unhealthy-version"), "v3").unwrap();
    let mut history = SHOP.to_vec();
    history.push(("20240112000000_nickname", "ALTER TABLE \"User\" ADD COLUMN \"nickname\" TEXT;\n"));
    let (out, events) = cluster.roll_out("v3", &history, &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");
    assert_eq!(batches(&events), [vec!["app-1"], vec!["app-2", "app-3"]], "the last batch must not start");
    let stopped = events.iter().find(|e| e["kind"] == "batches_stopped").expect("a batches_stopped event");
    assert!(stopped["message"].as_str().unwrap().contains("more than max_failures = 0"), "{stopped}");
    let failed = events
        .iter()
        .find(|e| e["kind"] == "command_failed" && e["step"] == "restart")
        .expect("a failed restart");
    assert_eq!(failed["host"], "app-3");
    let steps = milestones(&events);
    let tail: Vec<&str> =
        steps.iter().map(String::as_str).skip_while(|s| *s != "step_started restart").collect();
    assert_eq!(
        tail,
        [
            "step_started restart",
            "step_failed restart",
            "step_started restart",
            "step_succeeded restart",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
        ],
        "compatible migrations: the apps are reverted, the database is not restored"
    );
    let reverted = events
        .iter()
        .find(|e| {
            e["kind"] == "step_started"
                && e["step"] == "restart"
                && e["message"].as_str().unwrap().contains("recovery")
        })
        .expect("a recovery restart");
    assert!(
        reverted["message"].as_str().unwrap().ends_with("on app-1, app-2, app-3"),
        "only the hosts already restarted are reverted: {reverted}"
    );
    for app in &cluster.apps[..3] {
        assert!(health(app).contains("version=v2"), "{} was not reverted: {}", app.name, health(app));
        assert!(!app.in_maintenance(), "{} left in maintenance", app.name);
    }
    for (app, pid) in cluster.apps[3..].iter().zip(&untouched) {
        assert_eq!(app.pid(), *pid, "{} was restarted though its batch never started", app.name);
        assert!(health(app).contains("version=v2"), "{}: {}", app.name, health(app));
        assert!(!app.in_maintenance(), "{} left in maintenance", app.name);
    }
}

#[test]
fn a_failing_smoke_test_and_a_failure_in_the_watch_window_roll_back() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 2,
        environment_policy: [
            "smoke = [",
            "  { name = \"health-body\", path = \"/health\", body_contains = \"ok version=\" },",
            "  { name = \"home\", path = \"/\", status = 200, body_contains = \"hello\", retries = 1, after = \"maintenance_off\" },",
            "]",
            "watch = { duration = \"5s\", interval = \"500ms\" }",
        ]
        .join("\n"),
        ..Options::default()
    });

    // 1. v2's pages fail on app-1 (its health check passes): the smoke test
    //    after maintenance off fails and both hosts get v1 back.
    std::fs::write(cluster.apps[0].dir.join("broken-page-version"), "v2").unwrap();
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "rollout_rolled_back", "{events:#?}");
    assert!(last["message"].as_str().unwrap().contains("smoke check \"home\" failed"), "{last}");
    assert_eq!(
        milestones(&events)[8..],
        [
            "step_started restart",
            "step_succeeded restart",
            "step_started maintenance_off",
            "step_succeeded maintenance_off",
            "step_started smoke",
            "step_failed smoke",
            "step_started restart",
            "step_succeeded restart",
        ]
    );
    for app in &cluster.apps {
        assert!(health(app).contains("version=v1"), "{}: {}", app.name, health(app));
        assert!(!app.in_maintenance(), "{} left in maintenance", app.name);
    }

    // 2. v3 turns unhealthy on app-2 inside the watch window: rolled back
    //    before the window is over, both hosts on v1.
    let migrations = cluster.path().join("v3");
    write_migrations(&migrations, SHOP);
    let mut watch = Watch::start(&cluster, &rollout_start_args(&migrations, "v3"));
    let mut broke_at = None;
    while let Some(event) = watch.next(Duration::from_secs(120)) {
        if broke_at.is_none() && event["kind"] == "step_started" && event["step"] == "watch" {
            std::fs::write(cluster.apps[1].dir.join("unhealthy-version"), "v3").unwrap();
            broke_at = event["unix_ms"].as_i64();
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(broke_at.is_some(), "the watch window never started: {events:#?}");
    assert_eq!(status.code(), Some(1), "{stderr}\n{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "rollout_rolled_back", "{events:#?}");
    let message = last["message"].as_str().unwrap();
    assert!(message.contains("watch window"), "{last}");
    assert!(
        message.contains("run their previous version again") && !message.contains("was restored"),
        "without watch.restore the database is kept: {last}"
    );
    let watch_failed = events.iter().find(|e| e["kind"] == "step_failed" && e["step"] == "watch").unwrap();
    let failed_after = watch_failed["unix_ms"].as_i64().unwrap() - broke_at.unwrap();
    assert!(failed_after < 5000, "the failure waited for the window's end ({failed_after} ms)");
    assert!(
        milestones(&events)
            .ends_with(&["step_started restart".to_owned(), "step_succeeded restart".to_owned()])
    );
    for app in &cluster.apps {
        assert!(health(app).contains("version=v1"), "{}: {}", app.name, health(app));
        assert!(!app.in_maintenance(), "{} left in maintenance", app.name);
    }

    // 3. v4 is well: the rollout ends succeeded, and only after the window,
    //    which counted down in the events.
    let (out, events) = cluster.roll_out("v4", SHOP, &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let at = |kind: &str, step: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["step"] == step)
            .and_then(|e| e["unix_ms"].as_i64())
            .unwrap()
    };
    let succeeded = events.last().unwrap();
    assert_eq!(succeeded["kind"], "rollout_succeeded");
    let watched = succeeded["unix_ms"].as_i64().unwrap() - at("step_started", "watch");
    assert!(watched >= 5000, "the rollout succeeded {watched} ms into a 5 s window");
    let countdown: Vec<&str> = events
        .iter()
        .filter(|e| e["step"] == "watch" && e["kind"] == "progress" && e["counters"]["unit"] == "s")
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(countdown.len() >= 4, "the window did not count down: {countdown:?}");
    assert!(countdown.iter().any(|m| m.contains("s left")), "{countdown:?}");
    for app in &cluster.apps {
        assert!(health(app).contains("version=v4"), "{}: {}", app.name, health(app));
    }
}
