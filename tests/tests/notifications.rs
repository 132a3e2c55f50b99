//! Webhook notifications, end to end: a receiver started here gets every
//! notification of a rollout exactly once and in order, in all three
//! formats (Slack, runway's JSON, a status-page template), although it
//! answers 500 to the first request on each path and the leader is
//! SIGKILLed between two notifications. The webhook URL, a secret, is in
//! no coordinator log.

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::watch::Watch;
use runway_tests::webhook::{Received, Receiver};

/// In the Slack webhook's URL: must never be logged.
const SECRET: &str = "T000-SECRET-b7f3c1";

/// What every webhook gets for a rollout with app hosts, in order.
const EXPECTED: [&str; 4] = ["started", "maintenance_on", "maintenance_off", "succeeded"];

fn webhooks_toml(receiver: &Receiver) -> String {
    format!(
        "[[environments.{ENV}.webhooks]]\nname = \"chat\"\nformat = \"slack\"\nurl = \"{}\"\n\
         link = \"https://dash.example/rollouts/{{{{rollout_id}}}}\"\n\
         [[environments.{ENV}.webhooks]]\nname = \"generic\"\nformat = \"json\"\nurl = \"{}\"\n\
         [[environments.{ENV}.webhooks]]\nname = \"status-page\"\nformat = \"template\"\nurl = \"{}\"\nmethod = \"PUT\"\n\
         headers = {{ Authorization = \"OAuth status-token\" }}\n\
         body = '{{\"maintenance\": {{\"name\": \"{{{{environment}}}} rollout {{{{rollout_id}}}}\", \"status\": \"{{{{status}}}}\", \"event\": \"{{{{event}}}}\"}}}}'\n\
         status = {{ maintenance_off = \"completed\" }}\n",
        receiver.url(&format!("/slack/{SECRET}")),
        receiver.url("/json"),
        receiver.url("/status"),
    )
}

/// The requests on `path` the receiver answered 200.
fn delivered(receiver: &Receiver, path: &str) -> Vec<Received> {
    receiver.on(path).into_iter().filter(|r| r.status == 200).collect()
}

#[test]
fn every_notification_arrives_once_in_order_across_a_leader_kill_and_a_500() {
    let receiver = Receiver::start();
    let mut cluster = Cluster::start(Options {
        lease_ttl_secs: 2,
        // A quiet window after each delivery, to kill the leader in.
        coordinator_env: vec![("RUNWAY_FAILPOINT_PAUSE_AFTER_NOTIFICATION_MS".into(), "3000".into())],
        environment_policies: vec![(ENV.into(), webhooks_toml(&receiver))],
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let mut args = rollout_start_args(&migrations, "v2");
    args.extend(["--leader-timeout", "60"]);
    let mut watch = Watch::start(&cluster, &args);

    // Kill the leader once the JSON webhook has taken two notifications
    // (the first after a 500 and a retry), inside the pause after it.
    let started = Instant::now();
    let delivered_before_kill = loop {
        let got = delivered(&receiver, "/json");
        if got.len() >= 2 {
            std::thread::sleep(Duration::from_millis(500));
            let leader = cluster.kill_and_restart_leader();
            eprintln!("SIGKILLed the leader {leader} after {} notification(s)", got.len());
            break got.len();
        }
        assert!(started.elapsed() < Duration::from_secs(90), "no notifications: {:#?}", receiver.received());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(delivered_before_kill < EXPECTED.len(), "the kill came after the last notification");

    let mut events = Vec::new();
    while let Some(event) = watch.next(Duration::from_secs(120)) {
        let terminal = event["terminal"] == true;
        events.push(event);
        if terminal {
            break;
        }
    }
    let (status, _, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "the rollout did not succeed ({status}): {stderr}\n{events:#?}");
    let rollout_id = events[0]["rollout_id"].as_str().expect("rollout id").to_owned();

    // Every webhook catches up; then nothing more comes.
    let deadline = Instant::now() + Duration::from_secs(90);
    while ["/json", &format!("/slack/{SECRET}"), "/status"].iter().any(|p| delivered(&receiver, p).len() < 4)
    {
        assert!(Instant::now() < deadline, "webhooks did not catch up: {:#?}", receiver.received());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));

    for path in ["/json", &format!("/slack/{SECRET}"), "/status"] {
        let all = receiver.on(path);
        let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [500, 200, 200, 200, 200], "{path}: one 500, then each once: {all:#?}");
        let events: Vec<&str> = all.iter().filter_map(|r| r.header("x-runway-event")).collect();
        assert_eq!(events[1..], EXPECTED, "{path}: in order, each once");
        assert_eq!(events[0], "started", "{path}: the 500 was the first notification");
        let keys: Vec<&str> = all.iter().filter_map(|r| r.header("idempotency-key")).collect();
        assert_eq!(keys[0], keys[1], "{path}: a retry keeps its idempotency key");
        let unique: std::collections::BTreeSet<&str> = keys[1..].iter().copied().collect();
        assert_eq!(unique.len(), 4, "{path}: {keys:?}");
        assert!(keys.iter().all(|k| k.starts_with(&format!("{rollout_id}/"))), "{keys:?}");
    }

    // Each delivery is recorded in etcd, the retry with it, none in flight.
    let cursor =
        cluster.etcd.oldest_value(&format!("/runway/notify/{rollout_id}/generic")).expect("a saved cursor");
    let cursor: serde_json::Value = serde_json::from_str(&cursor).expect("cursor JSON");
    let deliveries: Vec<(&str, &str, u64)> = cursor["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap_or(""),
                d["outcome"].as_str().unwrap_or(""),
                d["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        deliveries,
        [
            ("started", "delivered", 2),
            ("maintenance_on", "delivered", 1),
            ("maintenance_off", "delivered", 1),
            ("succeeded", "delivered", 1)
        ],
        "{cursor:#}"
    );
    assert!(cursor["sending"].is_null(), "{cursor:#}");

    // `rollout show` lists them per webhook, without URLs.
    let show = cluster.runway(&["rollout", "show", &rollout_id, "--output", "json"]);
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("rollout JSON");
    let listed: Vec<(&str, &str, &str, u64)> = shown["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            let field = |k: &str| n[k].as_str().unwrap_or("");
            (field("webhook"), field("event"), field("outcome"), n["attempts"].as_u64().unwrap_or(0))
        })
        .collect();
    let mut expected = Vec::new();
    for webhook in ["chat", "generic", "status-page"] {
        for (i, event) in EXPECTED.iter().enumerate() {
            expected.push((webhook, *event, "delivered", if i == 0 { 2 } else { 1 }));
        }
    }
    assert_eq!(listed, expected, "{shown:#}");
    let text = cluster.runway(&["rollout", "show", &rollout_id]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("notifications:") && !text.contains(SECRET), "{text}");

    // runway's JSON: rollout, environment, digest, step, links.
    let json: Vec<serde_json::Value> = delivered(&receiver, "/json").iter().map(Received::json).collect();
    let digest = json[0]["bundle_digest"].as_str().expect("bundle digest").to_owned();
    assert_eq!(digest.len(), 64, "{json:#?}");
    for (body, event) in json.iter().zip(EXPECTED) {
        assert_eq!(body["event"], event);
        assert_eq!(body["rollout_id"], rollout_id.as_str());
        assert_eq!(body["environment"], ENV);
        assert_eq!(body["bundle_digest"], digest.as_str());
        assert_eq!(body["error"], "");
        assert_eq!(body["links"]["show"], format!("runway rollout show {rollout_id}"));
    }
    assert_eq!(json[1]["step"], "maintenance_on");
    assert_eq!(json[2]["step"], "maintenance_off");

    // Slack: one line of text with the link.
    let slack: Vec<String> = delivered(&receiver, &format!("/slack/{SECRET}"))
        .iter()
        .map(|r| r.json()["text"].as_str().expect("slack text").to_owned())
        .collect();
    assert!(slack[1].contains(&format!("rollout {rollout_id} of bundle {}", &digest[..12])), "{slack:#?}");
    assert!(slack[1].contains("maintenance mode ON"), "{slack:#?}");
    assert!(
        slack[3].contains("succeeded") && slack[3].contains(&format!("dash.example/rollouts/{rollout_id}"))
    );

    // The status page's template: method, secret header, filled-in body.
    let status = delivered(&receiver, "/status");
    assert!(
        status.iter().all(|r| r.method == "PUT" && r.header("authorization") == Some("OAuth status-token"))
    );
    let statuses: Vec<String> =
        status.iter().map(|r| r.json()["maintenance"]["status"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(statuses, ["scheduled", "in_progress", "completed", "completed"]);
    assert_eq!(status[0].json()["maintenance"]["name"], format!("{ENV} rollout {rollout_id}"));

    // URLs are secrets: not in any coordinator's log.
    for c in &cluster.coordinators {
        let log = std::fs::read_to_string(&c.proc.log).unwrap_or_default();
        assert!(!log.contains(SECRET), "{} logged a webhook URL", c.name);
        assert!(!log.contains("status-token"), "{} logged a webhook header", c.name);
    }
    let logs: String = cluster
        .coordinators
        .iter()
        .map(|c| std::fs::read_to_string(&c.proc.log).unwrap_or_default())
        .collect();
    assert!(logs.contains("notification delivered"), "the coordinators' logs say nothing about deliveries");

    // A rollout that fails in its first migration: the same way through,
    // ending `failed` with the step and the error.
    let mut broken = SHOP.to_vec();
    broken.push((
        "20240105000000_broken",
        "CREATE TABLE \"Thing\" (id int);\nALTER TABLE \"Nope\" ADD COLUMN \"x\" INTEGER;\n",
    ));
    let broken_dir = cluster.path().join("broken");
    write_migrations(&broken_dir, &broken);
    let out = cluster.runway(&rollout_start_args(&broken_dir, "v3"));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(90);
    while delivered(&receiver, "/json").len() < 8 {
        assert!(Instant::now() < deadline, "the failed rollout's notifications: {:#?}", receiver.received());
        std::thread::sleep(Duration::from_millis(200));
    }
    let json: Vec<serde_json::Value> = delivered(&receiver, "/json").iter().map(Received::json).collect();
    let events: Vec<&str> = json[4..].iter().map(|b| b["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["started", "maintenance_on", "maintenance_off", "failed"], "{json:#?}");
    assert_eq!(json[7]["step"], "migrate", "{:#}", json[7]);
    assert!(json[7]["error"].as_str().unwrap_or("").contains("\"Nope\" does not exist"), "{:#}", json[7]);
    assert_ne!(json[7]["rollout_id"], rollout_id.as_str(), "a new rollout");
}
