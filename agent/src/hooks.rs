//! Service hooks: the configured programs that turn maintenance mode on and
//! off and deploy + restart the application.
//!
//! A hook is an argv array from the agent's own config, run without a shell,
//! with a cleared environment: only what `[app] hook_env` declares (a sane
//! `PATH` by default) plus the documented `RUNWAY_*` variables. The agent's
//! own environment holds `DATABASE_URL` and object-store keys; a hook never
//! sees it.
//!
//! Each hook runs in a process group of its own. When it does not finish in
//! time, or the agent stops waiting for it, the whole group is killed, so a
//! background child a hook started (`sleep`, a stuck `curl`) does not
//! outlive it. A hook that exits normally keeps its background children: a
//! restart hook may legitimately leave the app running.
//! Its output is kept (the tail goes into the error when it fails).

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
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
    #[error("hook {name} has an empty command; set `app.{name}` to an argv array in the agent config")]
    Empty { name: String },
    #[error("hook {name} ({program}) could not start: {error}")]
    Spawn { name: String, program: String, error: std::io::Error },
    #[error("hook {name} ({program}) exited with {status}; last output:\n{tail}")]
    Failed { name: String, program: String, status: String, tail: String },
    #[error(
        "hook {name} ({program}) did not finish within {secs} s and was killed with its process group \
         (raise `[app] hook_timeout` if it needs longer)"
    )]
    Timeout { name: String, program: String, secs: u64 },
}

/// One hook to run.
pub struct Hook<'a> {
    /// The config key it comes from (`restart`, `maintenance_on`, …).
    pub name: &'a str,
    /// Program and arguments.
    pub argv: &'a [String],
    /// The hook's whole environment; nothing else is inherited.
    pub env: &'a [(String, String)],
    /// Longest run before the process group is killed.
    pub timeout: Duration,
}

/// Kills a hook's process group when dropped, unless the hook ended on its
/// own: covers a timeout and a caller that stops waiting (agent shutdown).
struct GroupGuard {
    group: Option<Pid>,
}

impl GroupGuard {
    /// The hook exited by itself; whatever it left running may stay.
    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            // ESRCH (the group is gone already) is the good outcome.
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

/// Runs `hook`, reporting each output line (redacted) as progress.
pub async fn run_hook(hook: &Hook<'_>, progress: &Progress) -> Result<(), HookError> {
    run(hook, progress).await.map(drop)
}

/// Runs `hook` for what it prints: its last lines of output (redacted),
/// stdout and stderr together.
pub async fn hook_output(hook: &Hook<'_>) -> Result<Vec<String>, HookError> {
    run(hook, &Progress::discard()).await
}

/// Runs `hook`; on success, the tail of its output.
async fn run(hook: &Hook<'_>, progress: &Progress) -> Result<Vec<String>, HookError> {
    let name = hook.name;
    let Some((program, args)) = hook.argv.split_first() else {
        return Err(HookError::Empty { name: name.to_owned() });
    };
    let program = program.clone();
    let mut command = Command::new(&program);
    command
        .args(args)
        .env_clear()
        .envs(hook.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group (pgid = its pid), so a timeout can kill
        // everything it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|error| HookError::Spawn {
        name: name.to_owned(),
        program: program.clone(),
        error,
    })?;
    let mut guard =
        GroupGuard { group: child.id().and_then(|id| i32::try_from(id).ok()).and_then(Pid::from_raw) };
    progress.emit(name, format!("running {program}"));

    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>, Box::new(stderr)] {
        let tx = tx.clone();
        // Ends at EOF, which killing the group brings at the latest.
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

    let mut tail = VecDeque::with_capacity(TAIL_LINES);
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
    let status = match tokio::time::timeout(hook.timeout, run).await {
        Ok(Ok(status)) => {
            guard.disarm();
            status
        }
        Ok(Err(error)) => {
            return Err(HookError::Spawn { name: name.to_owned(), program, error });
        }
        Err(_) => {
            drop(guard);
            // Reap the hook itself; its group is already gone.
            let _ = child.wait().await;
            return Err(HookError::Timeout { name: name.to_owned(), program, secs: hook.timeout.as_secs() });
        }
    };
    if status.success() {
        Ok(Vec::from(tail))
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
    use std::sync::{Arc, Mutex};

    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const PATH: (&str, &str) = ("PATH", "/usr/local/bin:/usr/bin:/bin");

    /// Runs a hook, returning its result and every progress message.
    async fn run(
        argv: &[String],
        env: &[(String, String)],
        timeout: Duration,
    ) -> (Result<(), HookError>, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let progress = Progress::new(move |u| sink.lock().unwrap().push(u.message));
        let result = run_hook(&Hook { name: "restart", argv, env, timeout }, &progress).await;
        let messages = seen.lock().unwrap().clone();
        (result, messages)
    }

    #[tokio::test]
    async fn passes_env_and_reports_output() {
        let (result, seen) = run(
            &argv(&["sh", "-c", "echo version=$RUNWAY_APP_VERSION"]),
            &env(&[PATH, ("RUNWAY_APP_VERSION", "1.2.3")]),
            Duration::from_secs(5),
        )
        .await;
        result.unwrap();
        assert!(seen.iter().any(|m| m == "version=1.2.3"), "{seen:?}");
    }

    /// `env` (no shell, which would add PWD and friends) prints exactly what
    /// the hook got: the declared variables, nothing of the agent's own
    /// environment (which, running under `cargo test`, has plenty).
    #[tokio::test]
    async fn the_agents_environment_does_not_reach_a_hook() {
        let agent_vars: Vec<String> =
            std::env::vars().map(|(k, _)| k).filter(|k| k != "PATH" && k != "HOME").collect();
        assert!(!agent_vars.is_empty(), "the test needs some variable in its own environment");
        let declared = env(&[PATH, ("HOME", "/var/lib/app"), ("RUNWAY_HOOK", "restart")]);
        let (result, seen) = run(&argv(&["env"]), &declared, Duration::from_secs(5)).await;
        result.unwrap();
        let printed: Vec<&str> = seen.iter().skip(1).map(String::as_str).collect();
        let mut expected: Vec<String> = declared.iter().map(|(k, v)| format!("{k}={v}")).collect();
        expected.sort();
        let mut got: Vec<String> = printed.iter().map(|s| s.to_string()).collect();
        got.sort();
        assert_eq!(got, expected, "the hook saw more (or less) than declared");
        for var in &agent_vars {
            assert!(
                !printed.iter().any(|line| line.starts_with(&format!("{var}="))),
                "{var} leaked into the hook"
            );
        }
    }

    #[tokio::test]
    async fn failure_carries_the_output_tail() {
        let (result, _) = run(
            &argv(&["sh", "-c", "echo nginx reload failed >&2; exit 3"]),
            &env(&[PATH]),
            Duration::from_secs(5),
        )
        .await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("exit status: 3") && err.contains("nginx reload failed"), "{err}");
    }

    #[tokio::test]
    async fn an_empty_command_is_refused() {
        let (result, _) = run(&[], &env(&[PATH]), Duration::from_secs(5)).await;
        assert!(matches!(result, Err(HookError::Empty { .. })), "{result:?}");
    }

    /// Processes of process group `pgid` that are still running (zombies,
    /// which only wait for their parent to reap them, do not count).
    fn alive_in_group(pgid: i32) -> Vec<String> {
        let mut alive = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid pgrp …; comm may hold spaces, so split after ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else { continue };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
                alive.push(format!("{head}) {}", fields[0]));
            }
        }
        alive
    }

    #[tokio::test]
    async fn a_hung_hook_is_killed_with_everything_it_started() {
        // The hook starts a background `sleep` that holds its stdout, then
        // hangs itself; `$$` is the hook's pid, which is its group id.
        let (result, seen) = run(
            &argv(&["sh", "-c", "sleep 30 & echo group=$$; sleep 30"]),
            &env(&[PATH]),
            Duration::from_millis(500),
        )
        .await;
        assert!(matches!(result, Err(HookError::Timeout { .. })), "{result:?}");
        assert!(result.unwrap_err().to_string().contains("process group"));
        let pgid: i32 = seen
            .iter()
            .find_map(|m| m.strip_prefix("group="))
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("the hook did not print its group: {seen:?}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let alive = alive_in_group(pgid);
            if alive.is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still alive in group {pgid}: {alive:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_hook_that_ends_keeps_its_background_children() {
        // A restart hook may leave the app running (here: detached from the
        // hook's output, as a real restart hook must).
        let (result, seen) = run(
            &argv(&["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo group=$$"]),
            &env(&[PATH]),
            Duration::from_secs(5),
        )
        .await;
        result.unwrap();
        let pgid: i32 = seen
            .iter()
            .find_map(|m| m.strip_prefix("group="))
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("the hook did not print its group: {seen:?}"));
        let alive = alive_in_group(pgid);
        // Clean up what the test started before asserting.
        let _ = kill_process_group(Pid::from_raw(pgid).expect("a pid"), Signal::KILL);
        assert!(!alive.is_empty(), "the background child of a finished hook was killed");
    }
}
