//! After a restart and after maintenance off: is the app really well?
//!
//! - [`healthy_for`]: the health URL answers 2xx and keeps answering for
//!   the policy's `min_healthy`, within its healthy deadline.
//! - [`run_checks`]: smoke checks, each with its own timeout and retries:
//!   an HTTP `GET` of a path on the app's own origin (that of
//!   `app.health_url`) with an expected status and, optionally, a body
//!   substring or a JSON field; or a command from this agent's own
//!   `[app] smoke_commands` (the coordinator only names it).
//! - [`watch`]: the watch window: health and smoke checks every interval
//!   for a duration, counting down; the first failure ends it.

use std::time::Duration;

use runway_engine::progress::Progress;
use runway_proto::v1::{self, smoke_check};
use tokio::time::Instant;

use crate::config::{AppConfig, Config};
use crate::{health, hooks};

/// Time between two health probes while a host must stay healthy.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Time between two tries of a smoke check.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The app is not well. Retrying the restart may help; the message says
/// what was seen last.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error(transparent)]
    Health(#[from] health::HealthError),
    #[error(
        "{url} did not stay healthy for {min_healthy_ms} ms within the healthy deadline of {deadline_ms} ms; last: {last}"
    )]
    Unsteady { url: String, min_healthy_ms: u64, deadline_ms: u64, last: String },
    #[error("smoke check {name:?} failed after {tries} try(ies): {last}")]
    Check { name: String, tries: u32, last: String },
    #[error(
        "smoke check {name:?} names command {command:?}, which is not in this agent's [app] smoke_commands"
    )]
    UnknownCommand { name: String, command: String },
    #[error("watch window: {url} unhealthy {after_secs} s into the window: {why}")]
    WatchUnhealthy { url: String, after_secs: u64, why: String },
    #[error("health URL {0} has no scheme and host to send smoke checks to")]
    BadOrigin(String),
}

/// Waits until `url` answers 2xx and then keeps answering 2xx for
/// `min_healthy`, all within `deadline`. An unhealthy answer during the
/// stay starts the wait again.
pub async fn healthy_for(
    url: &str,
    deadline: Duration,
    min_healthy: Duration,
    progress: &Progress,
) -> Result<String, SmokeError> {
    let started = Instant::now();
    let end = started + deadline;
    let mut last = String::from("no probe finished");
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = health::wait_healthy(url, left, progress).await?;
        if min_healthy.is_zero() {
            return Ok(line);
        }
        let streak = Instant::now();
        let steady = loop {
            if streak.elapsed() >= min_healthy {
                break true;
            }
            if Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(PROBE_INTERVAL.min(min_healthy)).await;
            match health::probe(url).await {
                Ok(line) => last = line,
                Err(why) => {
                    progress.emit(
                        "health",
                        format!("{url} unhealthy again after {} ms: {why}", streak.elapsed().as_millis()),
                    );
                    last = why;
                    break false;
                }
            }
        };
        if steady {
            progress.emit("health", format!("{url} stayed healthy for {} ms", min_healthy.as_millis()));
            return Ok(last);
        }
        if Instant::now() >= end {
            return Err(SmokeError::Unsteady {
                url: url.to_owned(),
                min_healthy_ms: millis(min_healthy),
                deadline_ms: millis(deadline),
                last,
            });
        }
    }
}

/// Runs every check once, each with its retries; the first that fails
/// ends the run. Returns what each check saw.
pub async fn run_checks(
    checks: &[v1::SmokeCheck],
    config: &Config,
    app: &AppConfig,
    progress: &Progress,
) -> Result<Vec<serde_json::Value>, SmokeError> {
    let mut seen = Vec::with_capacity(checks.len());
    for check in checks {
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            match run_once(check, config, app, progress).await {
                Ok(answer) => break answer,
                Err(SmokeError::Check { last, .. }) if tries <= check.retries => {
                    progress.emit("smoke", format!("{}: try {tries} failed: {last}; retrying", check.name));
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(SmokeError::Check { name, last, .. }) => {
                    return Err(SmokeError::Check { name, tries, last });
                }
                Err(other) => return Err(other),
            }
        };
        progress.emit("smoke", format!("{} passed: {answer}", check.name));
        seen.push(serde_json::json!({ "check": check.name, "answer": answer }));
    }
    Ok(seen)
}

/// One try of `check`; `SmokeError::Check` says why it failed.
async fn run_once(
    check: &v1::SmokeCheck,
    config: &Config,
    app: &AppConfig,
    progress: &Progress,
) -> Result<String, SmokeError> {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    let failed = |last: String| SmokeError::Check { name: check.name.clone(), tries: 1, last };
    match &check.check {
        Some(smoke_check::Check::Http(http)) => {
            let url = format!("{}{}", origin(&app.health_url)?, http.path);
            let (status, body) = health::get(&url, timeout).await.map_err(failed)?;
            judge(http, status, &body).map_err(|why| failed(format!("GET {url}: {why}")))?;
            Ok(format!("GET {url}: HTTP {status}"))
        }
        Some(smoke_check::Check::Command(command)) => {
            let argv = app.smoke_commands.get(command).ok_or_else(|| SmokeError::UnknownCommand {
                name: check.name.clone(),
                command: command.clone(),
            })?;
            let env = app.hook_environment(config, "smoke", &[("RUNWAY_SMOKE_CHECK", &check.name)]);
            let hook = hooks::Hook { name: "smoke", argv, env: &env, timeout };
            hooks::run_hook(&hook, progress).await.map_err(|e| failed(e.to_string()))?;
            Ok(format!("command {command} succeeded"))
        }
        None => Err(failed("the check has neither a path nor a command (the coordinator is newer)".into())),
    }
}

/// Whether an answer passes an HTTP check; `Err(why)` otherwise.
fn judge(check: &v1::HttpCheck, status: u16, body: &str) -> Result<(), String> {
    let quoted = || body.chars().take(200).collect::<String>();
    if u32::from(status) != check.status {
        return Err(format!("HTTP {status}, expected {}: {}", check.status, quoted()));
    }
    if !check.body_contains.is_empty() && !body.contains(&check.body_contains) {
        return Err(format!("the body does not contain {:?}: {}", check.body_contains, quoted()));
    }
    if !check.json_field.is_empty() {
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("the body is not JSON ({e}): {}", quoted()))?;
        let field = check.json_field.split('.').try_fold(&json, |value, key| match value {
            serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            value => value.get(key),
        });
        let found = match field {
            None => return Err(format!("the JSON has no field {:?}: {}", check.json_field, quoted())),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        if found != check.json_equals {
            return Err(format!(
                "JSON field {} is {found:?}, expected {:?}",
                check.json_field, check.json_equals
            ));
        }
    }
    Ok(())
}

/// `http://host:port` of `url`.
fn origin(url: &str) -> Result<String, SmokeError> {
    let uri: hyper::Uri = url.parse().map_err(|_| SmokeError::BadOrigin(url.to_owned()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => Ok(format!("{scheme}://{authority}")),
        _ => Err(SmokeError::BadOrigin(url.to_owned())),
    }
}

/// The watch window: every `interval_ms` the health URL and `checks`, for
/// `duration_ms`; the first failure ends it. Progress counts the seconds
/// of the window (`done` of `total`).
pub async fn watch(
    window: &v1::Watch,
    config: &Config,
    app: &AppConfig,
    progress: &Progress,
) -> Result<serde_json::Value, SmokeError> {
    let duration = Duration::from_millis(window.duration_ms);
    let interval = Duration::from_millis(window.interval_ms.max(100));
    let started = Instant::now();
    let mut rounds = 0u64;
    loop {
        let elapsed = started.elapsed();
        health::probe(&app.health_url).await.map_err(|why| SmokeError::WatchUnhealthy {
            url: app.health_url.clone(),
            after_secs: elapsed.as_secs(),
            why,
        })?;
        run_checks(&window.checks, config, app, &Progress::discard()).await?;
        rounds += 1;
        let elapsed = started.elapsed().min(duration);
        let left = duration - elapsed;
        progress.emit_counted(
            "watch",
            format!(
                "watch window: {} s left; healthy, {} smoke check(s) passed",
                left.as_secs_f64().ceil() as u64,
                window.checks.len()
            ),
            elapsed.as_secs(),
            duration.as_secs(),
            "s",
        );
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(interval.min(left)).await;
    }
    Ok(serde_json::json!({ "watched_ms": millis(duration), "rounds": rounds }))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake_app::app;

    fn config(health_url: &str) -> Config {
        toml::from_str(&format!(
            "name = \"app-1\"\nenvironment = \"staging\"\ncoordinators = [\"http://127.0.0.1:1\"]\n\
             roles = [\"app\"]\nstate_dir = \"/tmp/x\"\n[app]\nmaintenance_on = [\"true\"]\n\
             maintenance_off = [\"true\"]\nrestart = [\"true\"]\nhealth_url = \"{health_url}\"\n\
             smoke_commands = {{ queue = [\"sh\", \"-c\", \"test \\\"$RUNWAY_SMOKE_CHECK\\\" = queue-check\"], \
             broken = [\"sh\", \"-c\", \"echo queue stuck; exit 1\"] }}\n"
        ))
        .expect("a valid agent config")
    }

    fn command_check(name: &str, command: &str, retries: u32) -> v1::SmokeCheck {
        v1::SmokeCheck {
            name: name.into(),
            check: Some(smoke_check::Check::Command(command.into())),
            timeout_ms: 5000,
            retries,
        }
    }

    #[tokio::test]
    async fn checks_run_the_agents_own_commands_and_http_with_retries() {
        let url =
            app(vec![("503 Service Unavailable", "starting"), ("200 OK", r#"{"db":{"ok":true}}"#)]).await;
        let config = config(&url);
        let app_config = config.app.as_ref().expect("an app config");
        let http = v1::SmokeCheck {
            name: "api".into(),
            check: Some(smoke_check::Check::Http(http(200, "", "db.ok", "true"))),
            timeout_ms: 2000,
            retries: 1,
        };
        let progress = Progress::discard();
        let seen =
            run_checks(&[http, command_check("queue-check", "queue", 0)], &config, app_config, &progress)
                .await
                .expect("the second try of api passes, and the queue command exits 0");
        assert_eq!(seen.len(), 2);

        let error = run_checks(&[command_check("stuck", "broken", 1)], &config, app_config, &progress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"stuck\" failed after 2 try(ies)") && error.contains("queue stuck"),
            "{error}"
        );
        let error = run_checks(&[command_check("x", "rm-rf", 3)], &config, app_config, &progress)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("not in this agent's [app] smoke_commands"), "{error}");
    }

    #[tokio::test]
    async fn a_host_must_stay_healthy_for_min_healthy() {
        // Healthy once, then unhealthy, then healthy for good.
        let url =
            app(vec![("200 OK", "ok"), ("503 Service Unavailable", "flapping"), ("200 OK", "ok")]).await;
        let progress = Progress::discard();
        let started = std::time::Instant::now();
        healthy_for(&url, Duration::from_secs(10), Duration::from_millis(600), &progress)
            .await
            .expect("steady");
        assert!(started.elapsed() >= Duration::from_millis(600));
        let never = app(vec![("200 OK", "ok"), ("503 Service Unavailable", "flapping")]).await;
        let error = healthy_for(&never, Duration::from_millis(1500), Duration::from_secs(1), &progress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("did not stay healthy") || error.contains("did not answer healthy"),
            "{error}"
        );
    }

    fn http(status: u32, body_contains: &str, json_field: &str, json_equals: &str) -> v1::HttpCheck {
        v1::HttpCheck {
            path: "/".into(),
            status,
            body_contains: body_contains.into(),
            json_field: json_field.into(),
            json_equals: json_equals.into(),
        }
    }

    #[test]
    fn answers_are_judged_by_status_body_and_json_field() {
        assert!(judge(&http(200, "", "", ""), 200, "").is_ok());
        assert!(judge(&http(200, "", "", ""), 503, "down").unwrap_err().contains("HTTP 503, expected 200"));
        assert!(judge(&http(200, "hello", "", ""), 200, "hello from v2").is_ok());
        assert!(judge(&http(200, "hello", "", ""), 200, "bye").unwrap_err().contains("does not contain"));
        let body = r#"{"db": {"ok": true, "name": "main"}, "queues": [{"lag": 3}]}"#;
        assert!(judge(&http(200, "", "db.ok", "true"), 200, body).is_ok());
        assert!(judge(&http(200, "", "db.name", "main"), 200, body).is_ok());
        assert!(judge(&http(200, "", "queues.0.lag", "3"), 200, body).is_ok());
        assert!(judge(&http(200, "", "db.ok", "false"), 200, body).unwrap_err().contains("is \"true\""));
        assert!(judge(&http(200, "", "db.missing", "x"), 200, body).unwrap_err().contains("no field"));
        assert!(judge(&http(200, "", "db.ok", "true"), 200, "nope").unwrap_err().contains("not JSON"));
        assert_eq!(origin("http://10.0.0.5:8080/health").unwrap(), "http://10.0.0.5:8080");
    }
}
