//! The version an app host ran before a rollout is a fact, not a guess:
//! the app agent records the version its restart hook deployed and
//! registers with it, also after it restarts (whatever `[app] version`
//! says, or when it says nothing), so a rollback brings back the version
//! that really ran before. When nobody knows that version, the rollback
//! is refused rather than restarting the new one and calling it rolled
//! back. The sample app's own log (`app.log`, appended by the restart
//! hook) shows which version each restart started.
//!
//! Real etcd, PostgreSQL, a coordinator, a DB agent and an app agent as
//! processes.

use std::time::Duration;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::SHOP;
use runway_tests::process::{now_ms, wait_until};
use runway_tests::watch::{json_lines, rollout_id};

/// A migration on top of [`SHOP`], so a second rollout has something to do.
const NOTE: (&str, &str) = ("20240105000000_note", "ALTER TABLE \"User\" ADD COLUMN \"note\" TEXT;\n");

/// Sets app-1's `[app] version` line (`None`: no line at all).
fn configure_version(cluster: &Cluster, version: Option<&str>) {
    let path = &cluster.apps[0].config;
    let text = std::fs::read_to_string(path).expect("read the app agent's config");
    let mut lines: Vec<String> =
        text.lines().filter(|l| !l.starts_with("version = ")).map(str::to_owned).collect();
    if let Some(version) = version {
        let at = lines.iter().position(|l| l == "[app]").expect("an [app] table") + 1;
        lines.insert(at, format!("version = {version:?}"));
    }
    std::fs::write(path, lines.join("\n") + "\n").expect("write the app agent's config");
}

/// Restarts app-1's agent and returns the app version it registered with.
fn restart_agent(cluster: &mut Cluster) -> String {
    let since = now_ms();
    cluster.restart_app_agent(0);
    wait_until("app-1 to register again", Duration::from_secs(30), || {
        let out = cluster.runway(&["agents", "--output", "json"]);
        json_lines(&out.stdout)
            .into_iter()
            .find(|a| a["name"] == "app-1" && a["connected_unix_ms"].as_i64().is_some_and(|t| t >= since))
            .map(|a| a["app_version"].as_str().unwrap_or_default().to_owned())
    })
}

/// The versions the sample app was started with, in order.
fn started(cluster: &Cluster) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.apps[0].dir.join("app.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.strip_prefix("sample app "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_version_before_a_rollout_is_the_one_deployed_and_a_rollback_without_it_is_refused() {
    let mut cluster = Cluster::start(Options { coordinators: 1, app_hosts: 1, ..Options::default() });
    assert_eq!(started(&cluster), ["v1"], "the harness starts the sample app at v1");

    // 1. No `version` in the config, nothing deployed yet: it claims none.
    configure_version(&cluster, None);
    assert_eq!(restart_agent(&mut cluster), "", "an agent that cannot know claimed a version");

    // 2. Rollout A deploys v2 over a version nobody knew.
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "rollout A failed: {}", text(&out));
    let a = rollout_id(&events);
    assert_eq!(started(&cluster), ["v1", "v2"]);

    // 3. Restarted, the agent reports what it deployed, not nothing.
    assert_eq!(restart_agent(&mut cluster), "v2", "after a restart the agent forgot what it deployed");

    // 4. Rollout B deploys v3; a stale `version = "v1"` in the config does
    //    not override what was deployed.
    let history: Vec<(&str, &str)> = SHOP.iter().copied().chain([NOTE]).collect();
    let (out, events) = cluster.roll_out("v3", &history, &[]);
    assert!(out.status.success(), "rollout B failed: {}", text(&out));
    let b = rollout_id(&events);
    configure_version(&cluster, Some("v1"));
    assert_eq!(restart_agent(&mut cluster), "v3", "the agent reported the stale configured version");

    // 5. Rolling B back brings back v2, the version that ran before it.
    let back = cluster.runway(&["rollout", "rollback", &b, "--yes", "--watch", "--output", "json"]);
    let back_events = json_lines(&back.stdout);
    let last = back_events.last().unwrap_or_else(|| panic!("no events: {}", text(&back)));
    assert_eq!(last["rollout_state"], "rolled_back", "{}", text(&back));
    assert_eq!(started(&cluster), ["v1", "v2", "v3", "v2"], "the rollback did not start v2");
    let health = cluster.apps[0].health().unwrap_or_default();
    assert!(health.contains("version=v2"), "{health}");
    assert_eq!(restart_agent(&mut cluster), "v2");

    // 6. Rolling A back would need the version before v2, which nobody
    //    knew: refused, naming the host, and nothing changes.
    let refused = cluster.runway(&["rollout", "rollback", &a, "--yes", "--output", "json"]);
    let said = text(&refused);
    assert_ne!(refused.status.code(), Some(0), "{said}");
    let names = format!("rollout {a} cannot be rolled back on app-1");
    for needle in [names.as_str(), "unknown", "nothing was changed"] {
        assert!(said.contains(needle), "the refusal does not say {needle:?}: {said}");
    }
    assert_eq!(started(&cluster), ["v1", "v2", "v3", "v2"], "a refused rollback restarted the app");
    assert!(!cluster.apps[0].in_maintenance(), "a refused rollback turned maintenance mode on");
    let show = cluster.runway(&["rollout", "show", &a, "--output", "json"]);
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap_or_default();
    assert_eq!(show["state"], "succeeded", "{show:#}");
}
