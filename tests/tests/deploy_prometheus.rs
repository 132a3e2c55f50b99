//! `deploy/prometheus/alerts.yml` is valid for Prometheus (`promtool check
//! rules`), and its no-leader and maintenance alerts fire when they should
//! (`promtool test rules deploy/prometheus/alerts_test.yml`). That its alerts use only metrics runway registers is checked
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
    let dir = workspace_root().join("deploy/prometheus");
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]] {
        let out = Command::new("promtool").args(args).current_dir(&dir).output().expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
