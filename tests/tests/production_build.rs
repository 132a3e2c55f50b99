//! A production build has no test switches: the failpoints
//! (`RUNWAY_FAILPOINT_*`, which can turn off fencing or tamper with
//! bundles) exist only with the `failpoints` cargo feature, and tokio's
//! `test-util` only with the crates' dev-dependencies; only this test crate
//! turns them on for the workspace build the end-to-end tests run.
//!
//! 1. How cargo resolves the daemons and the CLI alone (`cargo tree`, no
//!    build): neither `failpoints` nor `test-util` is on. The workspace's
//!    resolution (the control) has both.
//! 2. The release build the packages ship (`cargo build --release -p
//!    runway-cli -p runway-agent -p runway-coordinator`, as
//!    `deploy/debian/build.sh` runs it): neither daemon contains a
//!    `RUNWAY_FAILPOINT_` name, so nothing in them can read one; the
//!    workspace's test build (the control) does.
//! 3. That coordinator, started with `RUNWAY_FAILPOINT_TAMPER_BUNDLE=1` in
//!    a real cluster: the variable changes nothing and the rollout
//!    succeeds, where the test build's coordinator changes the bundle and
//!    the DB agent refuses it (`security.rs`). It does not warn that it is
//!    a test build; the test build's coordinator does.
//!
//! Step 2 shares its build with the package test (`packages.rs`), which
//! cargo runs first: one release build in CI, not two.

use std::path::{Path, PathBuf};
use std::process::Command;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::SHOP;
use runway_tests::process::{bin, bin_dir, workspace_root};

/// The variables' common prefix: a binary without it reads none of them.
const FAILPOINT_PREFIX: &str = "RUNWAY_FAILPOINT_";

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// `cargo tree -e features,no-dev` for `packages` (`--workspace` for
/// all): the features a `cargo build` of them turns on (no dev-dependencies:
/// they pull in this crate).
fn features(packages: &[&str]) -> String {
    let out = cargo()
        .args(["tree", "--locked", "-e", "features,no-dev", "--prefix", "none"])
        .args(packages)
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 tree")
}

#[test]
fn a_production_build_resolves_no_test_switch() {
    let production = features(&["-p", "runway-coordinator", "-p", "runway-agent", "-p", "runway-cli"]);
    let workspace = features(&["--workspace"]);
    for switch in ["feature \"failpoints\"", "tokio feature \"test-util\""] {
        assert!(workspace.contains(switch), "control: the workspace build has {switch}");
        assert!(!production.contains(switch), "a production build has {switch}:\n{production}");
    }
}

/// Whether the file at `path` contains `needle`'s bytes (`grep -a`).
fn contains(path: &Path, needle: &str) -> bool {
    let status = Command::new("grep").args(["-q", "-a", "-F", needle]).arg(path).status().expect("run grep");
    assert!(status.code().is_some_and(|c| c <= 1), "grep failed on {}", path.display());
    status.success()
}

/// The release build the Debian packages ship (`deploy/debian/build.sh`
/// runs the same command; `packages.rs` runs it first, so here it is
/// usually fresh already): the three packages alone, into `target/release`.
fn production_binaries() -> PathBuf {
    let started = std::time::Instant::now();
    let out = cargo()
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "runway-cli",
            "-p",
            "runway-agent",
            "-p",
            "runway-coordinator",
        ])
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("production build: {:.1} s", started.elapsed().as_secs_f64());
    bin_dir().parent().expect("target dir").join("release")
}

#[test]
fn production_binaries_ignore_the_failpoint_variables() {
    let dir = production_binaries();
    for name in ["runway-coordinator", "runway-agent"] {
        assert!(contains(&bin(name), FAILPOINT_PREFIX), "control: the test build of {name} has failpoints");
        assert!(!contains(&dir.join(name), FAILPOINT_PREFIX), "the production {name} names a failpoint");
    }

    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_bin: Some(dir.join("runway-coordinator")),
        coordinator_env: vec![("RUNWAY_FAILPOINT_TAMPER_BUNDLE".into(), "1".into())],
        ..Options::default()
    });
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(out.status.success(), "the bundle went through untouched: {events:?}");
    let log = cluster.coordinators[0].proc.log_text();
    assert!(!log.contains("FAILPOINT"), "{log}");
    assert!(!log.contains("test build"), "a production build does not call itself a test build: {log}");
    let db_log = cluster.db.as_ref().expect("a DB host").agent.log_text();
    assert!(db_log.contains("test build"), "control: the test build's agent warns that it is one");
}
