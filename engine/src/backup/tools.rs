//! Running `pg_dump` / `pg_restore`: environment from [`Database`], stderr
//! captured (bounded, redacted) for error messages, killed when dropped.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::config::BackupConfig;
use super::error::BackupError;
use crate::database::Database;
use crate::redact::{redact_secret, redact_urls};

/// Keep at most this much of a tool's stderr for the error message.
const STDERR_LIMIT: usize = 16 * 1024;

/// A `pg_dump`/`pg_restore` command with the connection in its environment.
pub fn command(config: &BackupConfig, tool: &str, conn: Option<&Database>) -> Command {
    let mut cmd = Command::new(config.tool(tool));
    if let Some(conn) = conn {
        conn.apply_env(&mut cmd);
    }
    cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// Starts `cmd`; the error names the tool.
pub fn spawn(config: &BackupConfig, tool: &str, cmd: &mut Command) -> Result<Child, BackupError> {
    cmd.spawn().map_err(|e| BackupError::Spawn { tool: config.tool(tool), error: e.to_string() })
}

/// Reads a tool's stderr to the end, keeping the last [`STDERR_LIMIT`] bytes.
pub async fn collect_stderr(stderr: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stderr) = stderr else { return String::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_LIMIT {
                    kept.drain(..kept.len() - STDERR_LIMIT);
                }
            }
        }
    }
    if kept.len() > STDERR_LIMIT {
        kept.drain(..kept.len() - STDERR_LIMIT);
    }
    String::from_utf8_lossy(&kept).trim().to_owned()
}

/// Turns a finished tool into `Ok` or a [`BackupError::Tool`] with its
/// (redacted) stderr.
pub fn check_status(
    tool: &str,
    status: ExitStatus,
    stderr: &str,
    conn: Option<&Database>,
    hint: &'static str,
) -> Result<(), BackupError> {
    if status.success() {
        return Ok(());
    }
    let mut text = redact_urls(stderr);
    if let Some(password) = conn.and_then(Database::password) {
        text = redact_secret(&text, password);
    }
    if text.is_empty() {
        text = "no error output".to_owned();
    }
    Err(BackupError::Tool { tool: tool.to_owned(), status: status.to_string(), stderr: text, hint })
}

/// `pg_dump --version` → `pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)`.
pub async fn version(config: &BackupConfig, tool: &str) -> Result<String, BackupError> {
    let output = command(config, tool, None)
        .arg("--version")
        .stdout(Stdio::piped())
        .output()
        .await
        .map_err(|e| BackupError::Spawn { tool: config.tool(tool), error: e.to_string() })?;
    check_status(tool, output.status, &String::from_utf8_lossy(&output.stderr), None, "")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `pg_restore --list <dump>`: parses the archive's table of contents and
/// returns how many entries it has.
pub async fn restore_list(config: &BackupConfig, dump: &Path) -> Result<usize, BackupError> {
    let output = command(config, "pg_restore", None)
        .arg("--list")
        .arg(dump)
        .stdout(Stdio::piped())
        .output()
        .await
        .map_err(|e| BackupError::Spawn { tool: config.tool("pg_restore"), error: e.to_string() })?;
    check_status(
        "pg_restore --list",
        output.status,
        &String::from_utf8_lossy(&output.stderr),
        None,
        "; if it fails again the archive is damaged",
    )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(listing.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).count())
}
