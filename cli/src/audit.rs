//! `runway audit`: the coordinators' audit log, oldest first: every
//! operator action (start, approve, reject, cancel, rollback, backup restore
//! and verify) with who, when, what was asked and how it ended, and how each
//! rollout and backup operation ended. Only environments the caller may
//! view. Text is a table; `--output json` is one object per line, for
//! shipping elsewhere.

use runway_proto::v1::{AuditEntry, ListAuditRequest};
use serde_json::{Value, json};

use crate::exit::Exit;
use crate::output::{Failure, Output, Table};
use crate::remote::Remote;

/// `--since`: a time as Unix ms, from `30m`, `12h`, `7d` (ago) or an
/// RFC 3339 time (`2024-05-01T00:00:00Z`).
pub fn since(text: &str) -> Result<i64, String> {
    since_at(text, chrono::Utc::now())
}

fn since_at(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (count, unit) = text.split_at(unit_at);
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    match count.parse::<i64>() {
        Ok(count) if seconds_per > 0 => Ok(now.timestamp_millis() - count.saturating_mul(seconds_per * 1000)),
        _ => Err(format!(
            "{text:?} is neither a duration ago (30m, 12h, 7d; units s, m, h, d, w) nor an RFC 3339 time \
             (2024-05-01T00:00:00Z)"
        )),
    }
}

/// Runs `runway audit` against the coordinators.
pub async fn run(
    remote: &Remote,
    output: Output,
    environment: Option<String>,
    since_unix_ms: Option<i64>,
) -> Result<Exit, Failure> {
    let request = ListAuditRequest {
        environment: environment.unwrap_or_default(),
        since_unix_ms: since_unix_ms.unwrap_or(0),
    };
    let list = remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.list_audit(r).await.map(|r| r.into_inner()) }
        })
        .await?;
    if output.is_json() {
        list.entries.iter().for_each(|e| output.json_line(&entry_json(e)));
    } else if list.entries.is_empty() {
        output.note("no audit entries");
    } else {
        output.text(table(&list.entries));
    }
    Ok(Exit::Success)
}

/// One entry as a JSON object; the field names are a contract with scripts.
pub fn entry_json(e: &AuditEntry) -> Value {
    let parameters: serde_json::Map<String, Value> =
        e.parameters.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "id": e.id,
        "unix_ms": e.unix_ms,
        "time": chrono::DateTime::from_timestamp_millis(e.unix_ms).map(|t| t.to_rfc3339()),
        "actor": e.actor,
        "action": e.action,
        "environment": e.environment,
        "rollout_id": e.rollout_id,
        "parameters": parameters,
        "outcome": e.outcome,
        "error": e.error,
        "coordinator": e.coordinator,
    })
}

/// One row per entry; parameters as `key=value`, sorted, then the error.
pub fn table(entries: &[AuditEntry]) -> Table {
    let mut table = Table::new(["time", "actor", "action", "environment", "rollout", "outcome", "details"]);
    for e in entries {
        let time = chrono::DateTime::from_timestamp_millis(e.unix_ms)
            .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let mut parameters: Vec<(&String, &String)> = e.parameters.iter().collect();
        parameters.sort();
        let mut details: Vec<String> = parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !e.error.is_empty() {
            details.push(format!("error: {}", e.error));
        }
        table.row([
            time,
            e.actor.clone(),
            e.action.clone(),
            e.environment.clone(),
            e.rollout_id.clone(),
            e.outcome.clone(),
            details.join(" "),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_ago_or_a_time() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z").unwrap().to_utc();
        let ms = now.timestamp_millis();
        assert_eq!(since_at("90s", now), Ok(ms - 90_000));
        assert_eq!(since_at("30m", now), Ok(ms - 30 * 60_000));
        assert_eq!(since_at("1h", now), Ok(ms - 3_600_000));
        assert_eq!(since_at("2d", now), Ok(ms - 2 * 86_400_000));
        assert_eq!(since_at("1w", now), Ok(ms - 7 * 86_400_000));
        assert_eq!(since_at("2024-05-01T11:00:00Z", now), Ok(ms - 3_600_000));
        assert_eq!(since_at("2024-05-01T13:00:00+02:00", now), Ok(ms - 3_600_000));
        for bad in ["", "h", "1y", "-1h", "yesterday", "2024-05-01"] {
            let error = since_at(bad, now).unwrap_err();
            assert!(error.contains("30m, 12h, 7d"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn entries_print_as_rows_and_json_lines() {
        let entry = AuditEntry {
            id: "00000000001714564800000-000000000001-abcdef".into(),
            unix_ms: 1_714_564_800_000,
            actor: "deployer".into(),
            action: "start".into(),
            environment: "production".into(),
            rollout_id: "r1".into(),
            parameters: [
                ("app_version".to_owned(), "2.0.0".to_owned()),
                ("allow_danger".to_owned(), "drop-column".to_owned()),
            ]
            .into(),
            outcome: "refused".into(),
            error: "permission denied: operator deployer lacks the deploy role in production".into(),
            coordinator: "coord-1".into(),
        };
        let text = table(std::slice::from_ref(&entry)).render();
        assert!(text.starts_with("TIME"), "{text}");
        for needle in [
            "deployer",
            "start",
            "production",
            "refused",
            "allow_danger=drop-column app_version=2.0.0 error: permission denied",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let json = entry_json(&entry);
        assert_eq!(json["actor"], "deployer");
        assert_eq!(json["outcome"], "refused");
        assert_eq!(json["parameters"]["app_version"], "2.0.0");
        assert_eq!(json["time"], "2024-05-01T12:00:00+00:00");
    }
}
