//! Prometheus analysis end to end: real etcd, PostgreSQL, coordinators,
//! agents fronting sample apps that export Prometheus metrics, Debian's
//! `prometheus` scraping them every second, and a bounded load generator.
//!
//! - A release serving 5 % errors is rolled back during the canary's
//!   `min_healthy` (no other host restarted), and the event names the
//!   query, the value and the limit; a healthy release passes with every
//!   measurement shown, in the canary and the watch window.
//! - A canary twice as slow at P99 as the hosts not yet restarted (the
//!   baseline) is rolled back; one within the margin passes.
//! - The leader SIGKILLed while the analysis counts failures: the new
//!   leader continues the count, none lost or counted twice.
//! - Prometheus hung: `inconclusive` decides (ignored: the rollout passes;
//!   failed: it rolls back), the events say so, and nothing hangs.

use std::time::{Duration, Instant};

use runway_tests::cluster::{AppHost, Cluster, Options};
use runway_tests::process::wait_until;
use runway_tests::prometheus::{Load, Prometheus};
use runway_tests::watch::{Watch, rollout_id};

/// The share of `{{hosts}}`' pages that failed over the last 10 s.
const ERRORS: &str = r#"(sum(rate(http_requests_total{host=~"{{hosts}}",code="500"}[10s])) or vector(0)) / sum(rate(http_requests_total{host=~"{{hosts}}"}[10s]))"#;

/// The P99 page latency of `{{hosts}}` over the last 10 s.
const P99: &str = r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{host=~"{{hosts}}"}[10s])))"#;

/// `n` migrations that only create tables: safe with the app serving, so
/// `maintenance = "auto"` leaves the pages up and the analysis sees traffic.
fn history(n: usize) -> Vec<(&'static str, &'static str)> {
    const ALL: [(&str, &str); 4] = [
        ("20240101000000_a", "CREATE TABLE \"A\" (\"id\" INTEGER);\n"),
        ("20240102000000_b", "CREATE TABLE \"B\" (\"id\" INTEGER);\n"),
        ("20240103000000_c", "CREATE TABLE \"C\" (\"id\" INTEGER);\n"),
        ("20240104000000_d", "CREATE TABLE \"D\" (\"id\" INTEGER);\n"),
    ];
    ALL[..n].to_vec()
}

/// The tests here measure latency and error rates of real processes: run
/// side by side on two cores they would measure each other. One at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check(name: &str, query: &str, limits: &str) -> String {
    check_after(name, query, "3s", limits)
}

/// As [`check`], with the first measurement `initial_delay` after a phase starts.
fn check_after(name: &str, query: &str, initial_delay: &str, limits: &str) -> String {
    format!(
        "{{ name = \"{name}\", query = '{query}', interval = \"1s\", initial_delay = \"{initial_delay}\", {limits} }}"
    )
}

fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn batches(events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    of_kind(events, "batch_started").iter().map(|e| e["detail"]["hosts"].clone()).collect()
}

/// Starts Prometheus scraping `cluster`'s apps and waits until it has
/// scraped each of them.
fn prometheus_for(cluster: &Cluster, port: u16) -> Prometheus {
    let prometheus = Prometheus::start(cluster.path(), port, &cluster.apps);
    let apps = cluster.apps.len() as f64;
    wait_until("prometheus to scrape every app", Duration::from_secs(30), || {
        prometheus.query("count(up{job=\"app\"} == 1)").filter(|n| *n == apps)
    });
    prometheus
}

fn pids(apps: &[AppHost]) -> Vec<u32> {
    apps.iter().map(AppHost::pid).collect()
}

/// Three app hosts, restarted canary first (`min_healthy` 10 s) under
/// `maintenance = "auto"` so the canary serves traffic, asking Prometheus
/// on `port`; `policy` adds lines to the environment's policy.
///
/// A restarted canary's series needs two scrapes before `rate` has a
/// value, and a loaded CI machine scrapes late (3 s was seen to be too
/// little): checks here wait 5 s before their first measurement.
fn canary_cluster(port: u16, policy: &[String]) -> Cluster {
    let mut lines = vec![
        "maintenance = \"auto\"".to_owned(),
        "restart = { batch = 2, canary = 1, min_healthy = \"10s\", healthy_deadline = \"15s\" }".to_owned(),
    ];
    lines.extend_from_slice(policy);
    Cluster::start(Options {
        coordinators: 1,
        app_hosts: 3,
        environment_policy: lines.join("\n"),
        coordinator_toml: Prometheus::coordinator_toml(port),
        ..Options::default()
    })
}

fn health(app: &AppHost) -> String {
    app.health().unwrap_or_else(|| panic!("{} is not healthy", app.name))
}

#[test]
fn an_erroring_canary_is_rolled_back_during_min_healthy_and_a_healthy_release_passes() {
    let _serial = one_at_a_time();
    let port = Prometheus::pick_port();
    let cluster = canary_cluster(
        port,
        &[
            "watch = { duration = \"8s\", interval = \"1s\" }".into(),
            format!("analysis = [{}]", check_after("errors", ERRORS, "5s", "max = 0.01")),
        ],
    );
    let _prometheus = prometheus_for(&cluster, port);
    let _load = Load::start(&cluster.apps, 40, Duration::from_secs(150));

    // `rollout plan` shows the checks and where they run.
    let dir = cluster.path().join("plan");
    runway_tests::fixtures::write_migrations(&dir, &history(1));
    let plan =
        cluster.runway(&["rollout", "plan", "--env", "staging", "--migrations", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("analysis runs during the canaries' min_healthy (10s), the watch window (8s)")
            && text.contains("analysis errors: ≤ 0.01 every 1s"),
        "rollout plan does not show the analysis:\n{text}\n{}",
        String::from_utf8_lossy(&plan.stderr)
    );

    // 1. A healthy release: every measurement passes and is shown, in the
    //    canary's min_healthy and through the watch window.
    let (out, events) = cluster.roll_out("v2", &history(1), &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let measured = of_kind(&events, "analysis_measured");
    let phase = |p: &str| measured.iter().filter(|e| e["detail"]["phase"] == p).count();
    assert!(phase("canary") >= 4 && phase("watch") >= 2, "too few measurements: {measured:#?}");
    for m in &measured {
        assert_eq!(m["detail"]["outcome"], "passed", "{m}");
        let message = m["message"].as_str().unwrap();
        assert!(
            message.contains("analysis errors passed: value ") && message.contains("limit ≤ 0.01"),
            "{m}"
        );
    }
    // The canary's query names the canary only; the watch's every host.
    let canary = measured.iter().find(|e| e["detail"]["phase"] == "canary").unwrap();
    assert!(canary["detail"]["query"].as_str().unwrap().contains(r#"host=~"app-1","#), "{canary}");
    let watch = measured.iter().find(|e| e["detail"]["phase"] == "watch").unwrap();
    assert!(watch["detail"]["query"].as_str().unwrap().contains(r#"host=~"app-1|app-2|app-3","#), "{watch}");
    for app in &cluster.apps {
        assert!(health(app).contains("version=v2"), "{}", health(app));
    }

    // 2. v3 fails 5 % of its pages: rolled back while the canary stays
    //    healthy, before any other host restarted.
    for app in &cluster.apps {
        std::fs::write(app.dir.join("error-share-version"), "v3 5\n").unwrap();
    }
    let others = pids(&cluster.apps[1..]);
    let started = Instant::now();
    let (out, events) = cluster.roll_out("v3", &history(2), &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");
    assert_eq!(batches(&events), [serde_json::json!(["app-1"])], "no batch after the canary may start");
    let failed = of_kind(&events, "analysis_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let failed = failed[0];
    let message = failed["message"].as_str().unwrap();
    assert!(message.starts_with("analysis errors failed during the canary: 1 failed measurement(s), more than failure_limit = 0; last value "), "{message}");
    assert!(
        message.contains(
            "limit ≤ 0.01; query: (sum(rate(http_requests_total{host=~\"app-1\",code=\"500\"}[10s]))"
        ),
        "{message}"
    );
    let value = failed["detail"]["value"].as_f64().expect("a value");
    assert!(value > 0.01 && value < 0.2, "the measured share of errors is about 5 %: {value}");
    let stopped = of_kind(&events, "step_failed");
    assert!(stopped[0]["message"].as_str().unwrap().contains("analysis errors failed"), "{stopped:#?}");
    // The canary ran `min_healthy` (10 s) for at most as long as the analysis needed.
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    assert_eq!(pids(&cluster.apps[1..]), others, "hosts after the canary were restarted");
    for app in &cluster.apps {
        assert!(health(app).contains("version=v2"), "{} was not brought back: {}", app.name, health(app));
    }
}

#[test]
fn a_canary_twice_as_slow_as_the_baseline_is_rolled_back_and_one_within_the_margin_passes() {
    let _serial = one_at_a_time();
    let port = Prometheus::pick_port();
    let cluster = canary_cluster(
        port,
        &[format!(
            "analysis = [{}]",
            check_after(
                "p99",
                P99,
                "5s",
                "compare = \"baseline\", factor = 1.5, margin = 0.01, failure_limit = 1"
            )
        )],
    );
    // v1 (running now) takes 100 ms a page; v2 twice that; v3 110 ms. One
    // failed measurement is tolerated: a page delayed by a busy machine
    // can move a P99 over 50 pages, a slower release moves every one.
    for app in &cluster.apps {
        std::fs::write(app.dir.join("slow-version"), "v1 100\nv2 200\nv3 110\n").unwrap();
    }
    let prometheus = prometheus_for(&cluster, port);
    let _load = Load::start(&cluster.apps, 20, Duration::from_secs(150));
    wait_until("a baseline P99", Duration::from_secs(30), || {
        prometheus.query(&P99.replace("{{hosts}}", "app-2|app-3")).filter(|p| *p > 0.1)
    });

    let others = pids(&cluster.apps[1..]);
    let (out, events) = cluster.roll_out("v2", &history(1), &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");
    let failed = of_kind(&events, "analysis_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    let detail = &failed[0]["detail"];
    let (canary, baseline) = (detail["value"].as_f64().unwrap(), detail["baseline"].as_f64().unwrap());
    assert!(canary > baseline * 1.5 + 0.01, "{detail}");
    assert!(baseline > 0.1 && baseline < 0.15, "the baseline is v1 at 100 ms: {detail}");
    assert!(detail["limit"].as_str().unwrap().contains("× 1.5 + 0.01"), "{detail}");
    assert_eq!(pids(&cluster.apps[1..]), others, "hosts after the canary were restarted");
    assert!(health(&cluster.apps[0]).contains("version=v1"));

    // v3 is 10 % slower: within the margin, the rollout passes. (Once
    // app-1's pages at v2 speed have left the 10 s window.)
    wait_until("app-1 back at v1 speed", Duration::from_secs(30), || {
        prometheus.query(&P99.replace("{{hosts}}", "app-1")).filter(|p| *p < 0.15)
    });
    let (out, events) = cluster.roll_out("v3", &history(1), &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let measured = of_kind(&events, "analysis_measured");
    assert!(measured.len() >= 3, "{measured:#?}");
    for m in &measured {
        assert_eq!(m["detail"]["outcome"], "passed", "{m}");
        assert!(m["detail"]["baseline"].as_f64().is_some(), "{m}");
    }
    for app in &cluster.apps {
        assert!(health(app).contains("version=v3"), "{}", health(app));
    }
}

#[test]
fn the_count_of_failed_measurements_continues_across_a_leader_sigkill() {
    let _serial = one_at_a_time();
    let port = Prometheus::pick_port();
    let mut cluster = Cluster::start(Options {
        coordinators: 2,
        app_hosts: 2,
        environment_policy: [
            "maintenance = \"auto\"".to_owned(),
            "restart = { canary = 1, min_healthy = \"40s\", healthy_deadline = \"60s\" }".into(),
            format!("analysis = [{}]", check("errors", ERRORS, "max = 0.01, failure_limit = 4")),
        ]
        .join("\n"),
        coordinator_toml: Prometheus::coordinator_toml(port),
        ..Options::default()
    });
    let _prometheus = prometheus_for(&cluster, port);
    let _load = Load::start(&cluster.apps, 40, Duration::from_secs(150));
    for app in &cluster.apps {
        std::fs::write(app.dir.join("error-share-version"), "v2 30\n").unwrap();
    }
    let migrations = cluster.path().join("v2");
    runway_tests::fixtures::write_migrations(&migrations, &history(1));
    let mut watch = Watch::start(&cluster, &runway_tests::fixtures::rollout_start_args(&migrations, "v2"));
    // Kill the leader after the second failed measurement was saved.
    loop {
        let event = watch.next(Duration::from_secs(60)).expect("an event before the kill");
        if event["kind"] == "analysis_measured" && event["detail"]["failed"] == 2 {
            break;
        }
    }
    let killed = cluster.kill_and_restart_leader();
    let killed_at = runway_tests::process::now_ms();
    let (status, events, stderr) = watch.finish(Duration::from_secs(90));
    assert_eq!(status.code(), Some(1), "{stderr}\n{events:#?}");
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");
    let measured = of_kind(&events, "analysis_measured");
    // Every saved measurement once, counted once: the tally goes up by one
    // measurement each time, and by one failure exactly when one failed.
    let (mut measurements, mut failures) = (0, 0);
    for m in &measured {
        measurements += 1;
        failures += u64::from(m["detail"]["outcome"] != "passed");
        assert_eq!(m["detail"]["measurements"], measurements, "{measured:#?}");
        assert_eq!(m["detail"]["failed"], failures, "{measured:#?}");
    }
    assert_eq!(failures, 5, "failure_limit = 4: the fifth failure ends it: {measured:#?}");
    let after = measured.iter().filter(|m| m["unix_ms"].as_i64().unwrap() > killed_at).count();
    assert!(after >= 1, "no measurement after {killed} was killed: {measured:#?}");
    let failed = of_kind(&events, "analysis_failed");
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("5 failed measurement(s), more than failure_limit = 4")
    );
    assert_eq!(batches(&events).last().unwrap(), &serde_json::json!(["app-1"]));
}

#[test]
fn a_hung_prometheus_is_inconclusive_and_the_policy_decides() {
    let _serial = one_at_a_time();
    // A "Prometheus" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = std::sync::Arc::clone(&stop);
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        hung.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(240);
        while !stopping.load(std::sync::atomic::Ordering::Relaxed)
            && Instant::now() < until
            && held.len() < 1000
        {
            match hung.accept() {
                Ok((socket, _)) => held.push(socket),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let mut cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 2,
        environment_policy: [
            "maintenance = \"auto\"".to_owned(),
            "restart = { canary = 1, min_healthy = \"3s\", healthy_deadline = \"15s\" }".into(),
            "watch = { duration = \"3s\", interval = \"1s\" }".into(),
            format!(
                "analysis = [{}]",
                check(
                    "errors",
                    ERRORS,
                    "max = 0.01, inconclusive = \"ignore\", consecutive_error_limit = 100"
                )
            ),
        ]
        .join("\n"),
        coordinator_toml: format!("[prometheus]\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"1s\"\n"),
        ..Options::default()
    });

    // 1. inconclusive = "ignore": not counted, the rollout passes.
    let started = Instant::now();
    let (out, events) = cluster.roll_out("v2", &history(1), &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let measured = of_kind(&events, "analysis_measured");
    assert!(measured.len() >= 2, "{events:#?}");
    for m in &measured {
        let message = m["message"].as_str().unwrap();
        assert_eq!(m["detail"]["outcome"], "inconclusive", "{m}");
        assert!(message.contains("inconclusive (inconclusive = \"ignore\": not counted)"), "{message}");
        assert!(message.contains("prometheus did not answer within 1s"), "{message}");
        assert!(m["detail"]["query_ms"].as_u64().unwrap() < 2500, "a query outlived its timeout: {m}");
    }
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());

    // 2. inconclusive = "fail": the first measurement fails the canary.
    cluster.edit_coordinator_config(0, |text| {
        text.replace("inconclusive = \"ignore\"", "inconclusive = \"fail\"")
    });
    cluster.restart_coordinator(0);
    wait_until("every agent to register with the new leader", Duration::from_secs(30), || {
        let out = cluster.runway(&["agents", "--output", "json"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 3).then_some(())
    });
    let (out, events) = cluster.roll_out("v3", &history(2), &[]);
    assert_eq!(out.status.code(), Some(1), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(events.last().unwrap()["kind"], "rollout_rolled_back", "{events:#?}");
    let failed = of_kind(&events, "analysis_failed");
    let message = failed[0]["message"].as_str().unwrap();
    assert!(
        message.contains("no value (prometheus did not answer within 1s; inconclusive = \"fail\")"),
        "{message}"
    );
    assert_eq!(of_kind(&events, "analysis_measured").len(), 1, "failure_limit = 0: the first one decides");
    drop(cluster);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = holder.join();
}

#[test]
fn a_regression_after_success_notifies_and_rolls_back_by_migration_and_a_new_rollout_ends_the_monitor() {
    let _serial = one_at_a_time();
    use runway_tests::fixtures::{PROFILE, SHOP, write_with_downs};
    let port = Prometheus::pick_port();
    let hook = runway_tests::webhook::Receiver::start();
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 2,
        environment_policy: [
            "restart = { canary = 1, min_healthy = \"8s\", healthy_deadline = \"15s\" }".to_owned(),
            "monitor = \"90s\"".into(),
            "on_monitor_failure = \"rollback\"".into(),
            format!("webhooks = [{{ name = \"hook\", format = \"json\", url = \"{}\" }}]", hook.url("/hook")),
            // A loaded machine scrapes a restarted canary late: its series
            // needs two scrapes before `rate` has a value. This test is about
            // the monitor, so the canary's first measurement waits longer.
            format!("analysis = [{}]", check_after("errors", ERRORS, "6s", "max = 0.01")),
        ]
        .join("\n"),
        coordinator_toml: Prometheus::coordinator_toml(port),
        ..Options::default()
    });
    let _prometheus = prometheus_for(&cluster, port);
    let _load = Load::start(&cluster.apps, 40, Duration::from_secs(170));

    // 1. v2 succeeds and is monitored.
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let first = rollout_id(&events);
    assert_eq!(cluster.show_rollout(&first)["monitor"]["state"], "monitoring");
    let text = cluster.runway(&["rollout", "show", &first]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("state        monitoring"), "{text:?}");

    // 2. v3 (a column and a table, with proven downs) starts: v2's monitor
    //    ends, superseded; v3 succeeds and is monitored in turn.
    let dir = cluster.path().join("v3");
    write_with_downs(&dir, SHOP, &[PROFILE]);
    let out = cluster.runway(&runway_tests::fixtures::rollout_start_args(&dir, "v3"));
    let events = runway_tests::watch::json_lines(&out.stdout);
    assert!(out.status.success(), "{}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let second = rollout_id(&events);
    wait_until("v2's monitor to end, superseded", Duration::from_secs(20), || {
        (cluster.show_rollout(&first)["monitor"]["state"] == "superseded").then_some(())
    });
    assert_eq!(cluster.show_rollout(&first)["state"], "succeeded");
    assert_eq!(cluster.show_rollout(&second)["monitor"]["state"], "monitoring");

    // 3. Traffic writes to the new schema; then v3 regresses: half its
    //    pages fail. The monitor notices, tells the webhook, and rolls back
    //    by migration: the downs run, the write is kept, v2 runs again.
    cluster
        .sql("INSERT INTO \"User\" (\"email\", \"name\", \"bio\") VALUES ('late@example.com', 'Late', 'hi')");
    let regressed = Instant::now();
    for app in &cluster.apps {
        std::fs::write(app.dir.join("error-share-version"), "v3 50\n").unwrap();
    }
    let rollout = wait_until("the monitor to roll v3 back", Duration::from_secs(90), || {
        let rollout = cluster.show_rollout(&second);
        (rollout["state"] == "rolled_back").then_some(rollout)
    });
    assert!(regressed.elapsed() < Duration::from_secs(60), "{:?}", regressed.elapsed());
    assert_eq!(rollout["monitor"]["state"], "degraded", "{rollout:#}");
    let reason = rollout["monitor"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("analysis errors failed during the monitor")
            && reason.contains("rolling back by migration"),
        "{reason}"
    );
    let steps: Vec<(&str, &str)> = rollout["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("migrate_down", "succeeded")), "{steps:?}");
    assert!(
        !steps.iter().any(|(name, _)| *name == "restore"),
        "never a restore after traffic wrote: {steps:?}"
    );
    assert_eq!(
        cluster.sql("SELECT email FROM \"User\" WHERE email = 'late@example.com'").trim(),
        "late@example.com"
    );
    let bio = cluster.sql(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'User' AND column_name = 'bio'",
    );
    assert_eq!(bio.trim(), "0", "the down dropped the column");
    for app in &cluster.apps {
        assert!(health(app).contains("version=v2"), "{}", health(app));
    }
    let degraded = wait_until("the degraded notification", Duration::from_secs(20), || {
        hook.on("/hook").into_iter().find(|r| r.json()["event"] == "degraded")
    });
    let body = degraded.json();
    assert_eq!(body["rollout_id"], second.as_str(), "{body:#}");
}
