//! Issue 27, must-show 6: a daemon whose output goes to a file (as under
//! systemd, or the test harness) writes plain text there, no ANSI escape
//! codes; on a terminal it colours, unless `NO_COLOR` is set. The terminal
//! is a real pseudo-terminal from `script` (util-linux); the coordinator
//! needs no etcd to log its first lines (the insecure-mode warning).

use std::process::Command;
use std::time::Duration;

use runway_tests::process::{Proc, bin, free_port, kill_pid, wait_until};

/// Starts `runway-coordinator` (its output to `<name>.log`), on a terminal
/// when `tty`, with `env`; returns what it wrote once it warned of the
/// insecure mode, and kills it by its PID (which the shell prints before it
/// `exec`s the coordinator). Should the test fail first, killing `script`
/// hangs up the terminal, which ends the coordinator too.
fn first_lines(dir: &std::path::Path, name: &str, tty: bool, env: &[(&str, &str)]) -> String {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\netcd_endpoints = [\"http://127.0.0.1:{}\"]\n\
             [tls]\ninsecure = true\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let coordinator =
        format!("echo pid $$; exec {} --config {}", bin("runway-coordinator").display(), config.display());
    let mut command = if tty {
        let mut c = Command::new("script");
        c.args(["--quiet", "--flush", "--return", "--command", &coordinator, "/dev/null"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &coordinator]);
        c
    };
    command.env_remove("NO_COLOR").envs(env.iter().copied()).env("RUST_LOG", "info");
    let mut proc = Proc::spawn(name, &mut command, dir);
    let text = wait_until(&format!("{name} to warn of the insecure mode"), Duration::from_secs(15), || {
        let text = proc.log_text();
        text.contains("INSECURE MODE").then_some(text)
    });
    let pid = text.split_whitespace().skip_while(|w| *w != "pid").nth(1).and_then(|p| p.parse().ok());
    kill_pid(pid.expect("the shell printed the coordinator's PID"));
    proc.kill();
    text
}

#[test]
fn colour_on_a_terminal_only_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let file = first_lines(dir.path(), "to-file", false, &[]);
    assert!(!file.contains('\x1b'), "escape codes in a log file:\n{file:?}");
    assert!(file.contains(" WARN "), "a plain level: {file:?}");

    let tty = first_lines(dir.path(), "on-tty", true, &[]);
    assert!(tty.contains("\x1b["), "a terminal gets colour: {tty:?}");

    let no_color = first_lines(dir.path(), "no-color", true, &[("NO_COLOR", "1")]);
    assert!(!no_color.contains('\x1b'), "NO_COLOR is honoured on a terminal too:\n{no_color:?}");
}
