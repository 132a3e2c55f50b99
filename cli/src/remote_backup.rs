//! `runway backup list|show|verify|restore … --env ENV`: backup operations
//! run on an environment's DB agent through the leader coordinator.
//!
//! Progress goes to stderr as plain lines as the agent reports it; the
//! result goes to stdout (text, or one JSON object with `--output json`).
//! Exit codes are those of `exit`: 0 ok, 1 failed on the agent, 2 bad input
//! (nothing was sent or changed), 3 no coordinator reachable.

use runway_proto::v1::{
    BackupCommandRequest, CommandEvent, CommandOutcome, CommandResult, ListBackups, RestoreBackup,
    ShowBackup, VerifyBackup, backup_command_request::Action, backup_command_update::Kind,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::exit;
use crate::local_backup::{BackupCommand, Output};
use crate::remote::{CallError, Remote};

/// A backup command bound for the coordinator.
#[derive(Debug)]
pub struct RemoteBackup {
    remote: Remote,
    output: Output,
    environment: String,
    action: Action,
    /// Restore only: the operator passed `--yes`.
    confirmed: bool,
}

/// Where a `runway backup …` command runs.
#[derive(Debug)]
pub enum Route {
    /// On this machine, against a database URL.
    Local(BackupCommand),
    /// On the environment's DB agent, through the coordinator.
    Remote(Box<RemoteBackup>),
}

impl Route {
    /// `list` and `show` always go through the coordinator, `verify` and
    /// `restore` when `--env` is given, `create` never.
    pub fn of(command: BackupCommand) -> Route {
        let remote = |coordinators: &crate::remote::Coordinators, output, environment, action, confirmed| {
            Route::Remote(Box::new(RemoteBackup {
                remote: coordinators.remote(),
                output,
                environment,
                action,
                confirmed,
            }))
        };
        match command {
            BackupCommand::List { environment, coordinators, output } => {
                remote(&coordinators, output, environment, Action::List(ListBackups {}), false)
            }
            BackupCommand::Show { name, environment, coordinators, output } => {
                remote(&coordinators, output, environment, Action::Show(ShowBackup { name }), false)
            }
            BackupCommand::Verify {
                path,
                test_restore,
                environment: Some(environment),
                coordinators,
                common,
                ..
            } => {
                let name = path.to_string_lossy().into_owned();
                remote(
                    &coordinators,
                    common.output,
                    environment,
                    Action::Verify(VerifyBackup { name, test_restore }),
                    false,
                )
            }
            BackupCommand::Restore {
                path,
                yes,
                environment: Some(environment),
                coordinators,
                common,
                ..
            } => {
                let name = path.to_string_lossy().into_owned();
                let action = Action::Restore(RestoreBackup { name, confirmed: yes });
                remote(&coordinators, common.output, environment, action, yes)
            }
            local => Route::Local(local),
        }
    }
}

/// Runs `command` on the DB agent; returns the process exit code.
pub async fn run(command: RemoteBackup) -> i32 {
    let RemoteBackup { remote, output, environment, action, confirmed } = command;
    if let Action::Restore(restore) = &action
        && !confirmed
    {
        return refuse(
            output,
            &format!(
                "restoring backup {} replaces the contents of {environment}'s database; \
                 add --yes to confirm (nothing was sent)",
                restore.name
            ),
        );
    }
    let what = what(&action);
    let request = BackupCommandRequest { environment, action: Some(action) };
    let stream = remote
        .call(|mut c| {
            let r = request.clone();
            async move { c.run_backup_command(r).await.map(|r| r.into_inner()) }
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => return call_failed(output, &e),
    };
    let mut host = String::new();
    let result = loop {
        match stream.message().await {
            Ok(Some(update)) => match update.kind {
                Some(Kind::Started(started)) => {
                    eprintln!("{what} on {} ({})", started.host, started.command_id);
                    host = started.host;
                }
                Some(Kind::Event(event)) => eprintln!("{}", event_line(&event)),
                Some(Kind::Result(result)) => break result,
                None => {}
            },
            Ok(None) => {
                return lost(output, "the coordinator ended the stream before the result arrived");
            }
            Err(status) => return lost(output, status.message()),
        }
    };
    finish(output, &host, &request, &result)
}

/// Prints the result; exit 0 when it succeeded, 2 when the agent refused
/// it before anything ran (e.g. an unknown backup name), 1 otherwise.
fn finish(output: Output, host: &str, request: &BackupCommandRequest, result: &CommandResult) -> i32 {
    if result.outcome != CommandOutcome::Succeeded as i32 {
        let outcome = CommandOutcome::try_from(result.outcome).unwrap_or(CommandOutcome::Unspecified);
        let code = if outcome == CommandOutcome::Refused { exit::INVALID } else { exit::FAILED };
        let error = format!("{host}: {}", result.error);
        eprintln!("error: {error}");
        if output == Output::Json {
            let value = json!({
                "ok": false, "host": host, "command_id": result.command_id, "outcome": outcome.as_str_name(),
                "error": error, "exit_code": code,
            });
            println!("{value}");
        }
        return code;
    }
    let detail: Value = serde_json::from_str(&result.detail_json).unwrap_or(Value::Null);
    match output {
        Output::Json => println!(
            "{}",
            json!({ "ok": true, "host": host, "command_id": result.command_id, "result": detail })
        ),
        Output::Text => match &request.action {
            Some(Action::List(_)) => print_list(&detail),
            Some(Action::Show(_)) => print_manifest(&detail),
            Some(Action::Verify(_)) => println!("{}", verify_line(&detail)),
            Some(Action::Restore(_)) => println!(
                "restored backup {} into {}: {} tables, {} rows match the manifest",
                text(&detail["backup"]),
                text(&detail["database"]),
                detail["tables"],
                detail["rows"]
            ),
            None => println!("{detail}"),
        },
    }
    exit::OK
}

fn what(action: &Action) -> String {
    match action {
        Action::List(_) => "listing backups".into(),
        Action::Show(s) => format!("reading the manifest of backup {}", s.name),
        Action::Verify(v) => format!("verifying backup {}", v.name),
        Action::Restore(r) => format!("restoring backup {}", r.name),
    }
}

/// Refused before anything was sent: exit 2.
fn refuse(output: Output, message: &str) -> i32 {
    eprintln!("error: {message}");
    if output == Output::Json {
        println!("{}", json!({ "ok": false, "error": message, "exit_code": exit::INVALID }));
    }
    exit::INVALID
}

/// The coordinator refused or could not be reached.
fn call_failed(output: Output, error: &CallError) -> i32 {
    let code = match error {
        CallError::Unreachable(_) => exit::UNREACHABLE,
        CallError::Status(s)
            if matches!(s.code(), Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound) =>
        {
            exit::INVALID
        }
        CallError::Status(_) => exit::FAILED,
    };
    eprintln!("error: {error}");
    if output == Output::Json {
        println!("{}", json!({ "ok": false, "error": error.to_string(), "exit_code": code }));
    }
    code
}

/// The stream broke after the command was sent: the agent may still run it.
fn lost(output: Output, why: &str) -> i32 {
    let message = format!(
        "lost the coordinator while the command ran ({why}); the DB agent finishes it on its own, \
         check with `runway backup list` / `show`"
    );
    eprintln!("error: {message}");
    if output == Output::Json {
        println!("{}", json!({ "ok": false, "error": message, "exit_code": exit::UNREACHABLE }));
    }
    exit::UNREACHABLE
}

fn event_line(event: &CommandEvent) -> String {
    format!("[{}] {}{}", event.phase, event.message, crate::render::counters(event.counters.as_ref()))
}

/// A JSON string without quotes; other values as JSON.
fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn print_list(detail: &Value) {
    let backups = detail["backups"].as_array().cloned().unwrap_or_default();
    let place = match detail["bucket"].as_str() {
        Some(bucket) => format!("{} and bucket {bucket}", text(&detail["dir"])),
        None => text(&detail["dir"]),
    };
    if backups.is_empty() {
        eprintln!("no backups in {place}");
        return;
    }
    println!("{:<52} {:>12} {:>7} {:>9}  {:<13} ROLLOUT", "NAME", "BYTES", "TABLES", "ROWS", "WHERE");
    for b in &backups {
        let mut places = Vec::new();
        if b["local"] == true {
            places.push("local");
        }
        if b["remote"] == true {
            places.push("remote");
        }
        println!(
            "{:<52} {:>12} {:>7} {:>9}  {:<13} {}",
            text(&b["id"]),
            text(&b["bytes"]),
            text(&b["tables"]),
            text(&b["rows"]),
            places.join(","),
            text(&b["rollout_id"])
        );
    }
}

fn print_manifest(m: &Value) {
    println!("backup       {}", text(&m["id"]));
    println!("database     {} ({})", text(&m["database"]), text(&m["server_version"]));
    println!("format       {}", text(&m["format"]));
    println!("bytes        {}", m["bytes"]);
    println!("sha256       {}", text(&m["sha256"]));
    println!("taken        {} … {}", text(&m["started_at"]), text(&m["finished_at"]));
    if m["rollout_id"].as_str().is_some_and(|r| !r.is_empty()) {
        println!("rollout      {}", text(&m["rollout_id"]));
    }
    if m["label"].as_str().is_some_and(|l| !l.is_empty()) {
        println!("label        {}", text(&m["label"]));
    }
    let migrations = m["migrations"].as_array().map_or(0, Vec::len);
    println!("migrations   {migrations} applied");
    println!("tables:");
    for t in m["tables"].as_array().into_iter().flatten() {
        println!(
            "  {:<40} {:>12} rows",
            format!("{}.{}", text(&t["schema"]), text(&t["table"])),
            text(&t["rows"])
        );
    }
}

fn verify_line(v: &Value) -> String {
    let test_restore = match &v["test_restore"] {
        Value::Null => String::new(),
        t => format!("; test restore: {} tables, {} rows match the manifest", t["tables"], t["rows"]),
    };
    format!(
        "backup {} is intact: {} file(s), {} bytes, {} archive entries{test_restore}",
        text(&v["backup"]),
        v["files"],
        v["bytes"],
        v["toc_entries"]
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BackupCommand,
    }

    fn route(args: &[&str]) -> Route {
        let mut argv = vec!["runway"];
        argv.extend_from_slice(args);
        Route::of(Cli::try_parse_from(argv).expect("parses").cmd)
    }

    #[test]
    fn env_sends_verify_and_restore_through_the_coordinator() {
        match route(&["restore", "app-1", "--env", "staging", "--yes"]) {
            Route::Remote(r) => {
                assert_eq!(r.environment, "staging");
                assert!(r.confirmed);
                assert!(matches!(&r.action, Action::Restore(x) if x.name == "app-1" && x.confirmed));
            }
            other => panic!("expected remote, got {other:?}"),
        }
        assert!(matches!(route(&["verify", "/b/app-1"]), Route::Local(_)));
        assert!(matches!(route(&["list", "--env", "staging"]), Route::Remote(_)));
        assert!(matches!(
            route(&["restore", "/b/app-1", "--target-url", "postgres://x@y/z"]),
            Route::Local(_)
        ));
    }

    #[test]
    fn remote_and_local_targets_do_not_mix() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["runway"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|_| ())
        };
        assert!(
            parse(&["restore", "app-1", "--env", "staging", "--target-url", "postgres://x@y/z"]).is_err()
        );
        assert!(parse(&["restore", "app-1"]).is_err(), "needs --env or --target-url");
        assert!(parse(&["list"]).is_err(), "list needs --env");
    }

    #[tokio::test]
    async fn restore_without_yes_is_refused_before_anything_is_sent() {
        let Route::Remote(command) =
            route(&["restore", "app-1", "--env", "staging", "--coordinator", "http://127.0.0.1:1"])
        else {
            panic!("expected remote")
        };
        assert_eq!(run(*command).await, exit::INVALID);
    }
}
