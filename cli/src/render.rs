//! How rollout progress is shown: a live progress bar on a terminal, plain
//! lines otherwise, one JSON object per line with `--output json`.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use runway_proto::v1::{Counters, Rollout, RolloutEvent, RolloutState, StepState};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable; a progress bar when stderr is a terminal.
    Text,
    /// One JSON object per line on stdout.
    Json,
}

/// Prints rollout events as they arrive.
pub struct EventPrinter {
    format: Format,
    bar: Option<ProgressBar>,
}

impl EventPrinter {
    pub fn new(format: Format) -> Self {
        let bar = (format == Format::Text && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Self { format, bar }
    }

    pub fn event(&self, event: &RolloutEvent) {
        match self.format {
            Format::Json => println!("{}", event_json(event)),
            Format::Text => {
                let line = event_line(event);
                match &self.bar {
                    Some(bar) => {
                        if !event.step.is_empty() {
                            bar.set_prefix(event.step.clone());
                        }
                        if let Some(c) = event.counters.as_ref().filter(|c| c.total > 0) {
                            bar.set_length(c.total);
                            bar.set_position(c.done);
                        }
                        bar.set_message(event.message.chars().take(80).collect::<String>());
                        if event.kind != "progress" || event.counters.is_none() {
                            bar.println(line);
                        }
                    }
                    None => println!("{line}"),
                }
            }
        }
        let _ = std::io::stdout().flush();
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn event_line(e: &RolloutEvent) -> String {
    let time = chrono::DateTime::from_timestamp_millis(e.unix_ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%H:%M:%S").to_string())
        .unwrap_or_default();
    let place = match (e.step.as_str(), e.host.as_str()) {
        ("", _) => String::new(),
        (step, "") => format!("{step}: "),
        (step, host) => format!("{step} {host}: "),
    };
    format!("{time} #{:<4} {place}{}{}", e.seq, e.message, counters(e.counters.as_ref()))
}

/// ` [done/total unit]` (or ` [done unit]`), empty when nothing was counted.
pub fn counters(counters: Option<&Counters>) -> String {
    counters
        .filter(|c| c.total > 0 || c.done > 0)
        .map(|c| {
            if c.total > 0 {
                format!(" [{}/{} {}]", c.done, c.total, c.unit)
            } else {
                format!(" [{} {}]", c.done, c.unit)
            }
        })
        .unwrap_or_default()
}

pub fn event_json(e: &RolloutEvent) -> serde_json::Value {
    serde_json::json!({
        "rollout_id": e.rollout_id,
        "seq": e.seq,
        "unix_ms": e.unix_ms,
        "kind": e.kind,
        "step": e.step,
        "host": e.host,
        "command_id": e.command_id,
        "phase": e.phase,
        "message": e.message,
        "counters": e.counters.as_ref().map(|c| serde_json::json!({"done": c.done, "total": c.total, "unit": c.unit})),
        "terminal": e.terminal,
        "detail": serde_json::from_str::<serde_json::Value>(&e.detail_json).unwrap_or(serde_json::Value::Null),
        "rollout_state": state_name(e.rollout_state),
    })
}

pub fn state_name(state: i32) -> &'static str {
    match RolloutState::try_from(state) {
        Ok(RolloutState::Pending) => "pending",
        Ok(RolloutState::Running) => "running",
        Ok(RolloutState::Succeeded) => "succeeded",
        Ok(RolloutState::Failed) => "failed",
        Ok(RolloutState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn step_state_name(state: i32) -> &'static str {
    match StepState::try_from(state) {
        Ok(StepState::Pending) => "pending",
        Ok(StepState::Running) => "running",
        Ok(StepState::Succeeded) => "succeeded",
        Ok(StepState::Failed) => "failed",
        Ok(StepState::Skipped) => "skipped",
        _ => "unknown",
    }
}

pub fn rollout_json(r: &Rollout) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "environment": r.environment,
        "bundle_digest": r.bundle_digest,
        "app_version": r.app_version,
        "state": state_name(r.state),
        "error": r.error,
        "created_unix_ms": r.created_unix_ms,
        "updated_unix_ms": r.updated_unix_ms,
        "coordinator": r.coordinator,
        "steps": r.steps.iter().map(|s| serde_json::json!({
            "name": s.name, "state": step_state_name(s.state), "hosts": s.hosts, "error": s.error, "attempt": s.attempt,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_rollout(r: &Rollout) {
    println!("rollout      {}", r.id);
    println!("environment  {}", r.environment);
    println!("bundle       {}", r.bundle_digest);
    if !r.app_version.is_empty() {
        println!("app version  {}", r.app_version);
    }
    println!("state        {}", state_name(r.state));
    if !r.error.is_empty() {
        println!("error        {}", r.error);
    }
    println!("steps:");
    for s in &r.steps {
        let error = if s.error.is_empty() { String::new() } else { format!("  {}", s.error) };
        println!("  {:<16} {:<10} {}{error}", s.name, step_state_name(s.state), s.hosts.join(","));
    }
}
