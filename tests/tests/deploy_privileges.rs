//! The agent runs unprivileged, and its hooks get exactly the privilege
//! they need: `deploy/systemd/runway-agent.service` runs it as `runway`
//! with `NoNewPrivileges` and the rest of systemd's hardening, and
//! `deploy/polkit/50-runway.rules` lets that user start, stop and restart
//! the app's unit and nothing else.
//!
//! No polkit daemon or system bus runs here, so the rule is checked by
//! reading it and by evaluating it the way polkit does (its rules are
//! JavaScript): with `node` and a stand-in for polkit's `addRule`,
//! `action` and `subject` objects. Both units (the agent's and the
//! coordinator's, also hardened and unprivileged) are checked with
//! `systemd-analyze verify` and `systemd-analyze security --offline=yes`,
//! whose exposure scores the tests print.

use std::path::{Path, PathBuf};
use std::process::Command;

use runway_tests::process::{in_ci, workspace_root};

fn rule_file() -> PathBuf {
    workspace_root().join("deploy/polkit/50-runway.rules")
}

fn unit_path(name: &str) -> PathBuf {
    workspace_root().join(format!("deploy/systemd/{name}.service"))
}

/// Whether `program` runs here; in CI a missing one fails the test (see
/// `deploy/install-deps.sh`), elsewhere the test says so and skips.
fn available(program: &str, version_flag: &str) -> bool {
    let found = Command::new(program).arg(version_flag).output().is_ok_and(|o| o.status.success());
    assert!(found || !in_ci(), "{program} is missing; deploy/install-deps.sh installs it");
    if !found {
        eprintln!("skipping: {program} is not installed (deploy/install-deps.sh installs it)");
    }
    found
}

/// The rule's code without its comments.
fn rule_code() -> String {
    std::fs::read_to_string(rule_file())
        .expect("read the polkit rule")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_polkit_rule_names_the_action_the_user_and_the_unit() {
    let code = rule_code();
    for needle in [
        "polkit.addRule(",
        "\"org.freedesktop.systemd1.manage-units\"",
        "subject.user == user",
        "var user = \"runway\"",
        "\"myapp.service\"",
        "action.lookup(\"unit\")",
        "action.lookup(\"verb\")",
        "polkit.Result.YES",
    ] {
        assert!(code.contains(needle), "the rule lacks {needle}:\n{code}");
    }
    for broad in ["Result.AUTH_", "isInGroup", "manage-unit-files"] {
        assert!(!code.contains(broad), "the rule grants more than it should ({broad}):\n{code}");
    }
    let chapter = workspace_root().join("docs/src/hooks-and-privileges.md");
    let book =
        std::fs::read_to_string(&chapter).unwrap_or_else(|e| panic!("read {}: {e}", chapter.display()));
    assert!(book.contains("deploy/polkit/50-runway.rules"), "{} does not show the rule", chapter.display());
}

/// What polkit does with the rule file: run it with `polkit.addRule`, then
/// ask every rule in order, the first answer wins. Prints one answer per
/// case (`"yes"`, or `null` when no rule answers).
const POLKIT_STAND_IN: &str = r#"
const [rules_file, cases_json] = process.argv.slice(1);
const rules = [];
const polkit = {
    Result: { YES: "yes", NO: "no", AUTH_SELF: "auth_self", AUTH_ADMIN: "auth_admin",
              AUTH_SELF_KEEP: "auth_self_keep", AUTH_ADMIN_KEEP: "auth_admin_keep", NOT_HANDLED: "not_handled" },
    addRule: (rule) => rules.push(rule),
    addAdminRule: () => {},
    log: () => {},
    spawn: () => { throw new Error("the rule must not run programs"); },
};
new Function("polkit", require("fs").readFileSync(rules_file, "utf8"))(polkit);
const answers = JSON.parse(cases_json).map(([user, id, unit, verb]) => {
    const action = { id, lookup: (key) => ({ unit, verb })[key] };
    const subject = { user, groups: [user], local: false, active: false, pid: 4242,
                      isInGroup: (g) => g == user, isInNetGroup: () => false };
    for (const rule of rules) {
        const answer = rule(action, subject);
        if (answer !== undefined) return answer;
    }
    return null;
});
console.log(JSON.stringify(answers));
"#;

#[test]
fn the_polkit_rule_lets_runway_manage_only_the_apps_unit() {
    if !available("node", "--version") {
        return;
    }
    const MANAGE: &str = "org.freedesktop.systemd1.manage-units";
    let cases: &[(&str, &str, &str, &str, Option<&str>)] = &[
        ("runway", MANAGE, "myapp.service", "restart", Some("yes")),
        ("runway", MANAGE, "myapp.service", "start", Some("yes")),
        ("runway", MANAGE, "myapp.service", "stop", Some("yes")),
        // Other verbs, units, users and actions: no answer, polkit's default (denied).
        ("runway", MANAGE, "myapp.service", "kill", None),
        ("runway", MANAGE, "myapp.service", "set-property", None),
        ("runway", MANAGE, "sshd.service", "restart", None),
        ("runway", MANAGE, "postgresql.service", "stop", None),
        ("runway", MANAGE, "myapp.service.d", "restart", None),
        ("myapp", MANAGE, "myapp.service", "restart", None),
        ("root2", MANAGE, "myapp.service", "restart", None),
        ("runway", "org.freedesktop.systemd1.manage-unit-files", "myapp.service", "enable", None),
        ("runway", "org.freedesktop.systemd1.reload-daemon", "", "", None),
        ("runway", "org.freedesktop.login1.reboot", "", "", None),
    ];
    let json: Vec<[&str; 4]> = cases.iter().map(|(u, a, unit, verb, _)| [*u, *a, *unit, *verb]).collect();
    let out = Command::new("node")
        .arg("-e")
        .arg(POLKIT_STAND_IN)
        .arg(rule_file())
        .arg(serde_json::to_string(&json).expect("JSON"))
        .output()
        .expect("run node");
    assert!(out.status.success(), "the rule does not run: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Option<String>> = serde_json::from_slice(&out.stdout).expect("answers as JSON");
    for ((user, action, unit, verb, expected), answer) in cases.iter().zip(&answers) {
        assert_eq!(answer.as_deref(), *expected, "{user} asking {action} {verb} {unit}");
    }
    assert_eq!(answers.len(), cases.len());
}

/// `key=value` lines of the unit's `[Service]` section.
fn service_settings(unit: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(unit).expect("read the unit");
    let mut in_service = false;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            settings.push((key.to_owned(), value.to_owned()));
        }
    }
    settings
}

#[test]
fn the_agent_unit_runs_unprivileged_and_hardened() {
    let settings = service_settings(&unit_path("runway-agent"));
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("User", "runway"),
        ("Group", "runway"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "runway-agent"),
        ("RestrictSUIDSGID", "yes"),
    ] {
        assert!(has(key, value), "the agent unit lacks {key}={value}: {settings:?}");
    }
    assert!(
        !settings.iter().any(|(k, _)| k == "DynamicUser"),
        "the agent needs a fixed user, the one the polkit rule names: {settings:?}"
    );
    assert!(
        settings.iter().filter(|(k, _)| k == "AmbientCapabilities").all(|(_, v)| v.is_empty()),
        "the agent needs no capabilities: {settings:?}"
    );

    assert_notify_and_watchdog(&settings, "agent");
    if let Some(exposure) = analyze("runway-agent") {
        // The issue's threshold; today it scores about 1.7.
        assert!(exposure <= 2.5, "agent unit exposure {exposure} is above 2.5");
    }
}

#[test]
fn the_coordinator_unit_runs_unprivileged_and_hardened() {
    let settings = service_settings(&unit_path("runway-coordinator"));
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [
        ("User", "runway-coordinator"),
        ("Group", "runway-coordinator"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(has(key, value), "the coordinator unit lacks {key}={value}: {settings:?}");
    }
    assert_notify_and_watchdog(&settings, "coordinator");
    if let Some(exposure) = analyze("runway-coordinator") {
        assert!(exposure <= 2.0, "coordinator unit exposure {exposure} is above 2.0");
    }
}

/// Both daemons speak sd_notify (see `tests/tests/notify.rs`): the units
/// must wait for READY=1 and kill one whose watchdog pings stop.
fn assert_notify_and_watchdog(settings: &[(String, String)], who: &str) {
    let has = |key: &str, value: &str| settings.iter().any(|(k, v)| k == key && v == value);
    for (key, value) in [("Type", "notify"), ("NotifyAccess", "main"), ("WatchdogSec", "30s")] {
        assert!(has(key, value), "the {who} unit lacks {key}={value}: {settings:?}");
    }
}

/// Runs `systemd-analyze verify` and `security --offline=yes` on
/// `deploy/systemd/NAME.service`; returns the overall exposure (printed),
/// or `None` when systemd-analyze is missing outside CI.
fn analyze(name: &str) -> Option<f64> {
    if !available("systemd-analyze", "--version") {
        return None;
    }
    // `verify` checks that ExecStart and ExecStartPre exist: point them at
    // a binary that does, under the unit's own name.
    let dir = tempfile::tempdir().expect("temp dir");
    let unit = dir.path().join(format!("{name}.service"));
    let text = std::fs::read_to_string(unit_path(name)).expect("read the unit");
    let exec = format!("=/usr/bin/{name} ");
    assert!(text.contains(&format!("ExecStart{exec}")), "unexpected ExecStart in {name}.service");
    std::fs::write(&unit, text.replace(&exec, "=/bin/true ")).expect("write the unit copy");
    let verify =
        Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("run systemd-analyze");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {name}.service: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&security.stdout);
    let prefix = format!("Overall exposure level for {name}.service: ");
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once(prefix.as_str()))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    // systemd's scale: below 2 is "OK" (Debian's etcd.service scores 9.2).
    eprintln!("systemd-analyze security: {name}.service exposure {exposure}");
    Some(exposure)
}
