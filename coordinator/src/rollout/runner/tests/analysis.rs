//! Analysis in the runner with fake agents and a fake Prometheus (a local
//! HTTP listener answering `/api/v1/query` with a number the test sets).
//! On real time with spans of a few hundred milliseconds: the queries are
//! real HTTP, which paused time would cut short with their own timeouts.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::model::MonitorState;

/// A Prometheus that answers every query with the value in `value` (f64 bits).
async fn fake_prometheus(value: Arc<AtomicU64>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let value = f64::from_bits(value.load(AtomicOrdering::SeqCst));
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

async fn leader_with(policy: &str, url: &str, script: Script) -> Coordinator {
    let kv = Arc::new(MemoryKv::new());
    let config: Config = toml::from_str(&format!(
        "[prometheus]\nurl = \"{url}\"\ntimeout = \"1s\"\n[environments.{ENVIRONMENT}]\n{policy}\n"
    ))
    .expect("a valid policy");
    let leader = Coordinator::configured(&kv, "coordinator-a", config);
    leader.connect("db", "db", script).await;
    for app in ["app-1", "app-2"] {
        leader.connect(app, "app", script).await;
    }
    leader
}

/// The canary's restart is never answered: only the analysis can end its batch.
fn hold_canary(agent: &str, command: &v1::Command) -> Answer {
    match (agent, step_of(command)) {
        ("app-1", "restart") => Answer::Hold,
        _ => Answer::Succeed,
    }
}

const CHECK: &str =
    "analysis = [{ name = \"errors\", query = 'x{host=~\"{{hosts}}\"}', max = 0.01, interval = \"100ms\" }]";

/// Waits until `r1`'s saved record satisfies `done`.
async fn saved_when(leader: &Coordinator, done: impl Fn(&RolloutRecord) -> bool) -> RolloutRecord {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(record) = leader.store.get_rollout("r1").await.unwrap().filter(|r| done(r)) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the record got there in time")
}

#[tokio::test]
async fn a_canary_measured_above_its_limit_rolls_back_before_the_next_batch() {
    let value = Arc::new(AtomicU64::new(0.05f64.to_bits()));
    let url = fake_prometheus(Arc::clone(&value)).await;
    let policy =
        format!("restart = {{ canary = 1, min_healthy = \"1s\", healthy_deadline = \"5s\" }}\n{CHECK}");
    let leader = leader_with(&policy, &url, hold_canary).await;
    let (_, saved) = leader.lead_r1_to_end().await;
    assert_eq!(saved.state, RolloutState::RolledBack, "{}", saved.error);
    assert!(saved.error.contains("analysis errors failed during the canary"), "{}", saved.error);
    assert!(saved.error.contains("last value 0.05, limit ≤ 0.01"), "{}", saved.error);
    let tally = &saved.analysis.tallies[0];
    assert_eq!((tally.phase.as_str(), tally.measurements, tally.failed), ("canary", 1, 1));
}

#[tokio::test]
async fn a_failed_check_while_monitoring_notifies_and_changes_nothing_with_on_monitor_failure_notify() {
    let value = Arc::new(AtomicU64::new(0.0f64.to_bits()));
    let url = fake_prometheus(Arc::clone(&value)).await;
    let policy = format!("monitor = \"30s\"\non_monitor_failure = \"notify\"\n{CHECK}");
    let leader = leader_with(&policy, &url, always_succeed).await;
    let (last, saved) = leader.lead_r1_to_end().await;
    assert_eq!(last.kind, "rollout_succeeded", "{}", saved.error);
    assert!(last.message.contains("monitoring its analysis for 30 s"), "{}", last.message);
    assert!(saved.analysis.monitoring(), "{:?}", saved.analysis);
    // Healthy measurements for a while, then the regression.
    saved_when(&leader, |r| r.analysis.tallies.iter().any(|t| t.phase == "monitor" && t.measurements >= 3))
        .await;
    value.store(0.5f64.to_bits(), AtomicOrdering::SeqCst);
    let degraded = saved_when(&leader, |r| {
        r.analysis.monitor.as_ref().is_some_and(|m| m.state == MonitorState::Degraded)
    })
    .await;
    assert_eq!(degraded.state, RolloutState::Succeeded, "notify changes nothing");
    let reason = &degraded.analysis.monitor.as_ref().unwrap().reason;
    assert!(reason.contains("on_monitor_failure = \"notify\": nothing is changed"), "{reason}");
    let events = leader.store.events("r1", 1).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"monitor_degraded"), "{kinds:?}");
    assert!(
        !events.iter().any(|e| e.kind == "step_started" && e.message.contains("recovery")),
        "nothing rolls back"
    );
}
