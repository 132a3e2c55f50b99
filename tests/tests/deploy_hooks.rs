//! The hook scripts shipped in `deploy/hooks/` (pm2, systemd, docker
//! compose) are valid POSIX sh that shellcheck accepts, executable, and
//! documented with agent config lines that `runway config check` accepts.
//! The pm2 one also runs for real in `pm2_hooks.rs`; the systemd and compose
//! ones cannot here (no systemd as PID 1, no docker): these checks are all
//! they get.

use std::path::PathBuf;
use std::process::Command;

use runway_tests::process::{bin, in_ci, workspace_root};

const KINDS: [&str; 3] = ["pm2", "systemd", "compose"];

fn scripts() -> Vec<PathBuf> {
    KINDS.iter().map(|kind| workspace_root().join("deploy/hooks").join(kind).join("hook.sh")).collect()
}

#[test]
fn every_hook_script_is_executable_posix_sh_that_shellcheck_accepts() {
    use std::os::unix::fs::PermissionsExt;
    for script in scripts() {
        let mode =
            std::fs::metadata(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display())).permissions();
        assert!(mode.mode() & 0o111 == 0o111, "{} is not executable", script.display());
        let text = std::fs::read_to_string(&script).expect("read hook");
        assert!(text.starts_with("#!/bin/sh\n"), "{} is not a POSIX sh script", script.display());
        assert!(text.contains("\nset -eu\n"), "{} does not `set -eu`", script.display());
        let out = Command::new("sh").arg("-n").arg(&script).output().expect("run sh -n");
        assert!(out.status.success(), "sh -n {}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }

    let found = Command::new("shellcheck").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found || !in_ci(),
        "shellcheck is missing; deploy/install-deps.sh installs it (Debian's shellcheck)"
    );
    if !found {
        eprintln!("skipping shellcheck: not installed (deploy/install-deps.sh installs it)");
        return;
    }
    let out = Command::new("shellcheck").arg("--shell=sh").args(scripts()).output().expect("run shellcheck");
    assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_hook_without_an_action_or_its_configuration_says_what_is_missing() {
    for (kind, script) in KINDS.iter().zip(scripts()) {
        // No action at all: the usage, exit 2 (compose first wants its
        // project directory: its every action needs one).
        let out = Command::new(&script).env_clear().env("PATH", "/usr/bin:/bin").output().expect("run hook");
        let said = String::from_utf8_lossy(&out.stderr);
        if *kind == "compose" {
            assert_eq!(out.status.code(), Some(1), "{kind}: {said}");
            assert!(said.contains("HOOK_COMPOSE_DIR is not set"), "{kind}: {said}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{kind}: {said}");
            assert!(
                said.contains("usage: hook.sh maintenance-on|maintenance-off|deploy|version"),
                "{kind}: {said}"
            );
        }
        // A deploy without its required settings: exit 1, naming the variable.
        let out = Command::new(&script)
            .arg("deploy")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("RUNWAY_APP_VERSION", "v2")
            .output()
            .expect("run hook");
        let said = String::from_utf8_lossy(&out.stderr);
        let names = match *kind {
            "pm2" => "HOOK_PM2_APP is not set",
            "systemd" => "HOOK_UNIT is not set",
            _ => "HOOK_COMPOSE_DIR is not set",
        };
        assert_eq!(out.status.code(), Some(1), "{kind}: {said}");
        assert!(said.contains(names), "{kind}: {said}");
    }
}

#[test]
fn the_documented_pm2_agent_config_passes_config_check() {
    let example = workspace_root().join("deploy/hooks/pm2/agent-app.toml");
    let out = Command::new(bin("runway"))
        .args(["config", "check", "--skip-files", "--agent"])
        .arg(&example)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run runway config check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{}: OK (", example.display())), "{stdout}");

    // Every script's actions and variables are in deploy/hooks/README.md.
    let readme =
        std::fs::read_to_string(workspace_root().join("deploy/hooks/README.md")).expect("read README");
    for needle in [
        "hook.sh\", \"maintenance-on\"",
        "hook.sh\", \"deploy\"",
        "hook.sh\", \"version\"",
        "HOOK_PM2_APP",
        "HOOK_UNIT",
        "HOOK_COMPOSE_DIR",
    ] {
        assert!(readme.contains(needle), "deploy/hooks/README.md does not mention {needle:?}");
    }
}
