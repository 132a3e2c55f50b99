//! The `runway` CLI as the soak's operations run it: with the cluster's
//! operator identity, a long leader timeout (failovers happen all the
//! time here), and a bound on how long any one run may take.

use std::ffi::OsString;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

/// How to run `runway` against one cluster, without borrowing it (the
/// nemesis holds the cluster mutably while operations run).
#[derive(Clone)]
pub struct Cli {
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Cli {
    pub fn new(cluster: &Cluster) -> Cli {
        let command = cluster.runway_command();
        let mut envs: Vec<(OsString, Option<OsString>)> =
            command.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        envs.push(("RUNWAY_LEADER_TIMEOUT".into(), Some("60".into())));
        Cli { envs }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::process::bin("runway"));
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }

    /// Runs `runway ARGS`; SIGKILLed (its own PID) after `timeout`, when
    /// its status has no code.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Output {
        let mut child = self.command(args).spawn().expect("start runway");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("reap runway");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
    }

    /// `--output json` lines of a run's stdout that parse (a killed run
    /// may end in half a line).
    pub fn json(out: &Output) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// What a run said, stderr then stdout (JSON errors go to stdout).
    pub fn said(out: &Output) -> String {
        format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout))
    }
}
