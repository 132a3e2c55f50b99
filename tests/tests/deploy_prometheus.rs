//! `deploy/prometheus/alerts.yml` is valid for Prometheus (`promtool check
//! rules`). That its alerts use only metrics runway registers is checked
//! in `tests/metrics.rs`, next to a real scrape.

use std::process::Command;

use runway_tests::process::{in_ci, workspace_root};

#[test]
fn promtool_accepts_the_alert_rules() {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found || !in_ci(),
        "promtool is missing; deploy/install-deps.sh installs it (Debian's prometheus)"
    );
    if !found {
        eprintln!("skipping: promtool is not installed (deploy/install-deps.sh installs it)");
        return;
    }
    let rules = workspace_root().join("deploy/prometheus/alerts.yml");
    let out = Command::new("promtool").arg("check").arg("rules").arg(&rules).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
