//! Processes started by a test: found, started with logs, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A directory of the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // A test is target/debug/deps/<test>; a bench binary target/debug/<bin>.
    let dir = exe.parent().expect("binary dir");
    if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir }.to_path_buf()
}

/// Path of one of the workspace's binaries; panics with a hint if missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `true` in CI (`CI` set), where a missing tool or privilege must fail a
/// test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Milliseconds since the Unix epoch, comparable with the agents' journal.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis()
        as i64
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process that is killed (SIGKILL) when dropped. Its stdout and
/// stderr go to `<name>.log` in the test dir, printed if the test fails.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name: name.to_owned(), child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT") and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = self.child.as_ref() {
            let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
            assert!(status.is_ok_and(|s| s.success()), "cannot send SIG{signal} to {}", self.name);
        }
    }

    /// Sends `signal` (e.g. "QUIT") and waits up to `timeout` for exit.
    /// Returns how it exited, or `None` when it had to be SIGKILLed.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(child) = self.child.as_ref() {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
        }
        let status = self.wait_for_exit(timeout);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// Waits up to `timeout` for it to exit by itself: how it exited, or
    /// `None` while it still runs (it is killed on drop as ever).
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!(
                "----- last lines of {} ({}) -----\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// Kills a process we did not spawn directly (e.g. an app started by a
/// hook) by its PID.
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}
