//! A `runway` CLI run in the background whose `--output json` events a test
//! reads as they arrive, to act at a given point of a rollout (kill the
//! leader, cut a link) while the CLI keeps watching.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

/// `kind step` of each step-level event, in order.
pub fn milestones(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("step_")))
        .map(|e| format!("{} {}", e["kind"].as_str().unwrap_or(""), e["step"].as_str().unwrap_or("")))
        .collect()
}

/// A finished CLI run's `--output json` stdout: one JSON value per line.
/// The rollout id the first of a rollout's `events` names.
pub fn rollout_id(events: &[serde_json::Value]) -> String {
    events.first().and_then(|e| e["rollout_id"].as_str()).expect("a rollout id").to_owned()
}

pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `(name, state)` of every step of a rollout as `rollout show --output
/// json` prints it.
pub fn step_states(rollout: &serde_json::Value) -> Vec<(&str, &str)> {
    let steps = rollout["steps"].as_array().expect("a rollout has steps");
    steps
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or_default(), s["state"].as_str().unwrap_or_default()))
        .collect()
}

/// The CLI's events so far and its exit, once it ended.
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Every event read so far, in order.
    pub events: Vec<serde_json::Value>,
}

impl Watch {
    /// Runs `runway ARGS` (which should include `--watch --output json`).
    pub fn start(cluster: &Cluster, args: &[&str]) -> Watch {
        let mut child = cluster
            .runway_command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runway");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        Watch { child, lines, stderr: Some(stderr), events: Vec::new() }
    }

    /// The CLI's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next event, or `None` when the CLI ended or `timeout` passed.
    pub fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("runway printed a non-JSON line ({e}): {line}"));
        self.events.push(event.clone());
        Some(event)
    }

    /// Reads the remaining events and waits for the CLI to exit.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<serde_json::Value>, String) {
        let deadline = Instant::now() + timeout;
        while self.next(deadline.saturating_duration_since(Instant::now())).is_some() {}
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for runway") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("runway did not exit within {timeout:?}; events: {:#?}", self.events);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
        (status, std::mem::take(&mut self.events), stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
