//! Service hooks: the configured programs that turn maintenance mode on and
//! off and deploy + restart the application.
//!
//! A hook is an argv array from the agent's own config, run without a shell.
//! Its output is kept (the tail goes into the error when it fails).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use runway_engine::progress::Progress;
use runway_engine::redact::redact_urls;

/// Lines of hook output kept for an error message.
const TAIL_LINES: usize = 20;

/// A hook that did not succeed. Whether a retry is safe depends on the hook;
/// runway's own hooks are written to be idempotent.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {name} ({program}) could not start: {source}")]
    Spawn { name: String, program: String, source: std::io::Error },
    #[error("hook {name} ({program}) exited with {status}; last output:\n{tail}")]
    Failed { name: String, program: String, status: String, tail: String },
    #[error("hook {name} ({program}) did not finish within {secs} s and was killed")]
    Timeout { name: String, program: String, secs: u64 },
}

/// Runs `argv` with `env` added, reporting each output line as progress.
pub async fn run_hook(
    name: &str,
    argv: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
    progress: &Progress,
) -> Result<(), HookError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    command
        .args(&argv[1..])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        name: name.to_owned(),
        program: program.clone(),
        source,
    })?;
    progress.emit(name, format!("running {program}"));

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let run = async {
        while let Some(line) = rx.recv().await {
            let line = redact_urls(&line);
            progress.emit(name, line.clone());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(HookError::Spawn { name: name.to_owned(), program, source });
        }
        Err(_) => {
            return Err(HookError::Timeout { name: name.to_owned(), program, secs: timeout.as_secs() });
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            name: name.to_owned(),
            program,
            status: status.to_string(),
            tail: Vec::from(tail).join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn passes_env_and_reports_output() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress = Progress::new(move |u| sink.lock().unwrap().push(u.message));
        run_hook(
            "restart",
            &argv(&["sh", "-c", "echo version=$RUNWAY_APP_VERSION"]),
            &[("RUNWAY_APP_VERSION", "1.2.3")],
            Duration::from_secs(5),
            &progress,
        )
        .await
        .unwrap();
        assert!(seen.lock().unwrap().iter().any(|m| m == "version=1.2.3"));
    }

    #[tokio::test]
    async fn failure_carries_the_output_tail() {
        let err = run_hook(
            "maintenance_on",
            &argv(&["sh", "-c", "echo nginx reload failed >&2; exit 3"]),
            &[],
            Duration::from_secs(5),
            &Progress::discard(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status: 3") && err.contains("nginx reload failed"), "{err}");
    }

    #[tokio::test]
    async fn a_hung_hook_times_out() {
        let err = run_hook(
            "restart",
            &argv(&["sleep", "10"]),
            &[],
            Duration::from_millis(200),
            &Progress::discard(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }));
    }
}
