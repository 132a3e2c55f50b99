//! `runway backup list|show|verify|restore … --env ENV`: backup operations
//! run on an environment's DB agent through the leader coordinator.
//!
//! The agent's progress is relayed to stderr; the result goes to stdout
//! (JSON: `{"ok":true,"host":…,"command_id":…,"result":…}`).

use runway_identity::signature::Operation;
use runway_proto::v1::{
    BackupCommandRequest, CommandOutcome, CommandResult, backup_command_request::Action,
    backup_command_update::Kind,
};
use serde_json::{Value, json};

use super::RemoteBackup;
use crate::exit::Exit;
use crate::output::{self, Failure, Output, Reporter, Table};

/// Runs `command` on the DB agent.
pub async fn run(output: Output, command: RemoteBackup) -> Result<Exit, Failure> {
    let RemoteBackup { coordinators, environment, database, mut action, confirmed, queue } = command;
    if let Action::Restore(restore) = &action
        && !confirmed
    {
        return Err(Failure::invalid(format!(
            "restoring backup {} replaces the contents of {environment}'s database; \
             add --yes to confirm (nothing was sent)",
            restore.name
        )));
    }
    let what = what(&action);
    let remote = coordinators.remote()?;
    // A verify or restore carries the operator's signature over it: the
    // DB agent acts on nothing less (and on each signature once).
    match &mut action {
        Action::Verify(verify) => {
            verify.signature =
                crate::signing::operation(&remote, Operation::Verify, &environment, &verify.name)?;
        }
        Action::Restore(restore) => {
            restore.signature =
                crate::signing::operation(&remote, Operation::Restore, &environment, &restore.name)?;
        }
        _ => {}
    }
    let request = BackupCommandRequest {
        environment,
        database,
        action: Some(action),
        requested_by: crate::rollout::operator(),
    };
    let mut stream = remote
        .call_queued(
            queue,
            |note| eprintln!("{note}"),
            |mut c| {
                let r = request.clone();
                async move { c.run_backup_command(r).await.map(|r| r.into_inner()) }
            },
        )
        .await?;
    let progress = Reporter::stderr();
    let mut host = String::new();
    let result = loop {
        match stream.message().await {
            Ok(Some(update)) => match update.kind {
                Some(Kind::Started(started)) => {
                    progress.line(&format!("{what} on {} ({})", started.host, started.command_id));
                    host = started.host;
                }
                Some(Kind::Event(event)) => progress.phase(
                    &event.phase,
                    &event.message,
                    event.counters.as_ref().map(|c| (c.done, c.total, c.unit.as_str())),
                ),
                Some(Kind::Result(result)) => break result,
                None => {}
            },
            Ok(None) => return Err(lost("the coordinator ended the stream before the result arrived")),
            Err(status) => return Err(lost(status.message())),
        }
    };
    progress.finish();
    finish(output, &host, &request, &result)
}

/// Prints the result. A command the agent refused before anything ran
/// (e.g. an unknown backup name) is bad input; any other failure on the
/// agent is a failure, except a backup that is corrupt or does not match its
/// manifest (the agent's result detail says `integrity`), which is exit 6
/// as in local mode.
fn finish(
    output: Output,
    host: &str,
    request: &BackupCommandRequest,
    result: &CommandResult,
) -> Result<Exit, Failure> {
    if result.outcome != CommandOutcome::Succeeded as i32 {
        let outcome = CommandOutcome::try_from(result.outcome).unwrap_or(CommandOutcome::Unspecified);
        let integrity = serde_json::from_str::<Value>(&result.detail_json)
            .is_ok_and(|d| d["integrity"] == Value::Bool(true));
        let exit = match outcome {
            CommandOutcome::Refused => Exit::Invalid,
            _ if integrity => Exit::Integrity,
            _ => Exit::Failed,
        };
        return Err(Failure::new(exit, format!("{host}: {}", result.error))
            .with("host", host)
            .with("command_id", result.command_id.as_str())
            .with("outcome", outcome.as_str_name()));
    }
    let detail: Value = serde_json::from_str(&result.detail_json).unwrap_or(Value::Null);
    let text = match &request.action {
        Some(Action::List(_)) => list_text(output, &detail),
        Some(Action::Show(_)) => manifest_text(&detail),
        Some(Action::Verify(_)) => verify_line(&detail),
        Some(Action::Restore(_)) => format!(
            "restored backup {} into {}: {} tables, {} rows match the manifest",
            text(&detail["backup"]),
            text(&detail["database"]),
            detail["tables"],
            detail["rows"]
        ),
        None => detail.to_string(),
    };
    output.result(
        text,
        &json!({ "ok": true, "host": host, "command_id": result.command_id, "result": detail }),
    );
    Ok(Exit::Success)
}

fn what(action: &Action) -> String {
    match action {
        Action::List(_) => "listing backups".into(),
        Action::Show(s) => format!("reading the manifest of backup {}", s.name),
        Action::Verify(v) => format!("verifying backup {}", v.name),
        Action::Restore(r) => format!("restoring backup {}", r.name),
    }
}

/// The stream broke after the command was sent: the agent may still run it.
fn lost(why: &str) -> Failure {
    Failure::new(
        Exit::Unreachable,
        format!(
            "lost the coordinator while the command ran ({why}); the DB agent finishes it on its own, \
             check with `runway backup list` / `show`"
        ),
    )
}

/// A JSON string without quotes; other values as JSON.
fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// A JSON byte count as a size.
fn size(value: &Value) -> String {
    value.as_u64().map_or_else(|| text(value), output::bytes)
}

/// The backups as a table; an empty list says so on stderr.
fn list_text(output: Output, detail: &Value) -> String {
    let backups = detail["backups"].as_array().cloned().unwrap_or_default();
    if backups.is_empty() {
        let place = match detail["bucket"].as_str() {
            Some(bucket) => format!("{} and bucket {bucket}", text(&detail["dir"])),
            None => text(&detail["dir"]),
        };
        output.note(format!("no backups in {place}"));
        return String::new();
    }
    let mut table = Table::new(["name", "size", "tables", "rows", "where", "rollout"]).right(&[1, 2, 3]);
    for b in &backups {
        let places: Vec<&str> = [("local", b["local"] == true), ("remote", b["remote"] == true)]
            .into_iter()
            .filter(|p| p.1)
            .map(|p| p.0)
            .collect();
        table.row([
            text(&b["id"]),
            size(&b["bytes"]),
            text(&b["tables"]),
            text(&b["rows"]),
            places.join(","),
            text(&b["rollout_id"]),
        ]);
    }
    table.render()
}

fn manifest_text(m: &Value) -> String {
    let mut text_ = format!(
        "backup       {}\ndatabase     {} ({})\nformat       {}\nsize         {} ({} bytes)\nsha256       {}\ntaken        {} … {}\n",
        text(&m["id"]),
        text(&m["database"]),
        text(&m["server_version"]),
        text(&m["format"]),
        size(&m["bytes"]),
        m["bytes"],
        text(&m["sha256"]),
        text(&m["started_at"]),
        text(&m["finished_at"]),
    );
    if m["rollout_id"].as_str().is_some_and(|r| !r.is_empty()) {
        text_.push_str(&format!("rollout      {}\n", text(&m["rollout_id"])));
    }
    if m["label"].as_str().is_some_and(|l| !l.is_empty()) {
        text_.push_str(&format!("label        {}\n", text(&m["label"])));
    }
    let migrations = m["migrations"].as_array().map_or(0, Vec::len);
    text_.push_str(&format!("migrations   {migrations} applied\n\n"));
    let mut tables = Table::new(["table", "rows"]).right(&[1]);
    for t in m["tables"].as_array().into_iter().flatten() {
        tables.row([format!("{}.{}", text(&t["schema"]), text(&t["table"])), text(&t["rows"])]);
    }
    text_.push_str(&tables.render());
    text_
}

fn verify_line(v: &Value) -> String {
    let test_restore = match &v["test_restore"] {
        Value::Null => String::new(),
        t => format!("; test restore: {} tables, {} rows match the manifest", t["tables"], t["rows"]),
    };
    format!(
        "backup {} is intact: {} file(s), {} ({} bytes), {} archive entries{test_restore}",
        text(&v["backup"]),
        v["files"],
        size(&v["bytes"]),
        v["bytes"],
        v["toc_entries"]
    )
}
