//! The Debian packages: `deploy/debian/build.sh` builds `runway`,
//! `runway-agent` and `runway-coordinator` with cargo-deb, and they install
//! like infrastructure.
//!
//! One test builds them once (a release build of the three binaries: the
//! cost of this test) and extracts them into a throwaway root with
//! `dpkg-deb` (no maintainer script runs, so nothing outside that root
//! changes). Then, on what dpkg would install:
//!
//! - the files and their modes: binaries, units, configs (0640), polkit
//!   rule, sysusers.d files, completions, man pages;
//! - the control files: the configs are conffiles, the depends;
//! - the postinst runs sysusers, gives each config to its group, and
//!   neither enables nor starts a unit; run for real (in a mount namespace
//!   whose `/etc` is the throwaway root's), it creates the users and groups
//!   the installed units run as, and each config ends root:GROUP 0640;
//! - `systemd-analyze verify --root` accepts the installed units with the
//!   installed binaries (and refuses one whose binary is missing);
//! - the installed binaries run: the CLI's man page renders with the exit
//!   codes, the agent's `--check-config` (the units' `ExecStartPre=`)
//!   refuses the shipped example for its missing TLS files, naming them;
//! - `lintian` passes every package (its output is printed).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use runway_tests::manual::{assert_exit_codes, man};
use runway_tests::process::{in_ci, workspace_root};

/// Whether `program` runs here; in CI a missing one fails the test
/// (`deploy/install-deps.sh` installs them), elsewhere it skips.
fn available(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found || !in_ci(), "{program} is missing; deploy/install-deps.sh installs it");
    if !found {
        eprintln!("skipping: {program} is not installed (deploy/install-deps.sh installs it)");
    }
    found
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The three .deb files, in the order runway, runway-agent, runway-coordinator.
fn build() -> Vec<PathBuf> {
    let started = Instant::now();
    let out = run(Command::new("bash").arg(workspace_root().join("deploy/debian/build.sh")));
    eprintln!("deploy/debian/build.sh took {:.0?}", started.elapsed());
    let debs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(debs.len(), 3, "{}", text(&out));
    for (deb, name) in debs.iter().zip(["runway_", "runway-agent_", "runway-coordinator_"]) {
        let file = deb.file_name().expect("file name").to_string_lossy();
        assert!(file.starts_with(name) && file.ends_with(".deb"), "{}", deb.display());
    }
    debs
}

/// Each package's files into `root` (`dpkg-deb --extract`: what dpkg
/// installs, modes included) and its control files (conffiles, postinst)
/// into `control/PACKAGE/`. No maintainer script runs.
fn extract(root: &Path, control: &Path, debs: &[PathBuf]) {
    std::fs::create_dir_all(control).expect("control dir");
    for (deb, package) in debs.iter().zip(PACKAGES) {
        run(Command::new("dpkg-deb").arg("--extract").arg(deb).arg(root));
        run(Command::new("dpkg-deb").arg("--control").arg(deb).arg(control.join(package)));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode()
        & 0o7777
}

/// The packages, in the order `build` returns them.
const PACKAGES: [&str; 3] = ["runway", "runway-agent", "runway-coordinator"];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_three_packages_build_install_into_a_throwaway_root_and_pass_lintian() {
    for program in ["cargo-deb", "lintian", "dpkg", "systemd-analyze", "systemd-sysusers", "man", "unshare"] {
        if !available(program) {
            return;
        }
    }
    // Running the postinsts in a mount namespace of their own needs root.
    if !rustix::process::geteuid().is_root() {
        assert!(!in_ci(), "CI runs as root");
        eprintln!("skipping: the postinsts run in a mount namespace, which needs root");
        return;
    }
    let debs = build();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let control = dir.path().join("control");
    extract(&root, &control, &debs);

    files_and_modes(&root);
    control_files(&control, &debs);
    postinst(&control);
    run_postinsts(&root, &control, dir.path());
    users_and_config_owners(&root);
    units_verify(&root);
    binaries_run(&root);
    lintian(&debs);
}

fn files_and_modes(root: &Path) {
    for (path, expected) in [
        ("usr/bin/runway", 0o755),
        ("usr/bin/runway-agent", 0o755),
        ("usr/bin/runway-coordinator", 0o755),
        ("usr/lib/systemd/system/runway-agent.service", 0o644),
        ("usr/lib/systemd/system/runway-coordinator.service", 0o644),
        ("usr/lib/sysusers.d/runway-agent.conf", 0o644),
        ("usr/lib/sysusers.d/runway-coordinator.conf", 0o644),
        // Readable by root and (after postinst's chgrp) the service's group only.
        ("etc/runway/agent.toml", 0o640),
        ("etc/runway/coordinator.toml", 0o640),
        ("etc/polkit-1/rules.d/50-runway.rules", 0o644),
        ("usr/share/doc/runway-agent/examples/agent-app.toml", 0o644),
        ("usr/share/doc/runway-agent/examples/agent-db.toml", 0o644),
        ("usr/share/bash-completion/completions/runway", 0o644),
        ("usr/share/zsh/vendor-completions/_runway", 0o644),
        ("usr/share/fish/vendor_completions.d/runway.fish", 0o644),
        ("usr/share/man/man1/runway.1.gz", 0o644),
        ("usr/share/man/man1/runway-rollout-start.1.gz", 0o644),
        ("usr/share/lintian/overrides/runway-agent", 0o644),
        ("usr/share/doc/runway/copyright", 0o644),
    ] {
        assert_eq!(mode(&root.join(path)), expected, "mode of /{path}");
    }
    // The shipped configs are the examples in deploy/, byte for byte.
    assert_eq!(
        read(&root.join("etc/runway/agent.toml")),
        read(&workspace_root().join("deploy/agent-db.toml"))
    );
    assert_eq!(
        read(&root.join("etc/runway/coordinator.toml")),
        read(&workspace_root().join("deploy/coordinator.toml"))
    );
    // The units are deploy/systemd's: the state directory, the config check first.
    let agent = read(&root.join("usr/lib/systemd/system/runway-agent.service"));
    assert_eq!(agent, read(&workspace_root().join("deploy/systemd/runway-agent.service")));
    for line in [
        "StateDirectory=runway-agent",
        "ExecStartPre=/usr/bin/runway-agent --check-config --config /etc/runway/agent.toml",
        "ExecStart=/usr/bin/runway-agent --config /etc/runway/agent.toml",
    ] {
        assert!(agent.lines().any(|l| l == line), "{line} in the agent unit");
    }
    let coordinator = read(&root.join("usr/lib/systemd/system/runway-coordinator.service"));
    assert!(
        coordinator.lines().any(|l| l
            == "ExecStartPre=/usr/bin/runway-coordinator --check-config --config /etc/runway/coordinator.toml"),
        "{coordinator}"
    );
    // Installed, not enabled: no wants/ symlink in the package.
    assert!(!root.join("etc/systemd/system/multi-user.target.wants").exists(), "a unit was enabled");
    // The completion script is what `runway completions bash` prints.
    let bash = read(&root.join("usr/share/bash-completion/completions/runway"));
    assert!(bash.contains("complete -F _runway") && bash.contains("skip-files"), "{bash:.300}");
}

/// `dpkg-deb --field DEB FIELD`.
fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn control_files(control: &Path, debs: &[PathBuf]) {
    // The configs are conffiles: dpkg never overwrites an edited one.
    let conffiles = |package: &str| read(&control.join(package).join("conffiles"));
    let agent = conffiles("runway-agent");
    for file in ["/etc/runway/agent.toml", "/etc/polkit-1/rules.d/50-runway.rules"] {
        assert!(agent.lines().any(|l| l == file), "{file} is a conffile of runway-agent: {agent}");
    }
    assert_eq!(conffiles("runway-coordinator").trim(), "/etc/runway/coordinator.toml");
    assert!(!control.join("runway/conffiles").exists(), "the CLI has no config");

    let [cli, agent, coordinator] = [&debs[0], &debs[1], &debs[2]];
    let agent_depends = field(agent, "Depends");
    for needle in ["libc6", "postgresql-client", "systemd | systemd-standalone-sysusers"] {
        assert!(agent_depends.contains(needle), "{needle} in runway-agent's Depends: {agent_depends}");
    }
    assert!(field(coordinator, "Depends").contains("libc6"));
    assert!(!field(cli, "Depends").contains("systemd"), "the CLI needs no systemd");
    // The units never need the CLI package: the daemons check their own config.
    for deb in [agent, coordinator] {
        let depends = field(deb, "Depends");
        assert!(!depends.split([',', '|']).any(|d| d.trim().starts_with("runway ")), "{depends}");
    }
}

/// Runs each package's postinst as dpkg does on a first install
/// (`postinst configure`), in a mount namespace of its own where `/etc`
/// is the throwaway root's, `/usr/lib/sysusers.d` the package's and
/// `/var/lib/systemd` (deb-systemd-helper's state) an empty directory: the
/// users, groups and config ownership it makes land in the throwaway root.
fn run_postinsts(root: &Path, control: &Path, scratch: &Path) {
    const IN_NAMESPACE: &str = r#"set -e
mount --bind "$1/etc" /etc
mount --bind "$1/usr/lib/sysusers.d" /usr/lib/sysusers.d
mount --bind "$2" /var/lib/systemd
exec "$3" configure
"#;
    for package in ["runway-agent", "runway-coordinator"] {
        let state = scratch.join(format!("systemd-state-{package}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let out = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", IN_NAMESPACE, "sh"])
            .arg(root)
            .arg(&state)
            .arg(control.join(package).join("postinst")));
        eprintln!("{package}.postinst configure: {}", text(&out));
    }
}

/// After the postinsts: the users and groups the units run as, and each
/// config readable by its service's group only.
fn users_and_config_owners(root: &Path) {
    let passwd = read(&root.join("etc/passwd"));
    let group = read(&root.join("etc/group"));
    let user = |name: &str| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f[0] == name)
            .unwrap_or_else(|| panic!("no user {name} in:\n{passwd}"))
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let runway = user("runway");
    assert_eq!((runway[5].as_str(), runway[6].as_str()), ("/var/lib/runway-agent", "/usr/sbin/nologin"));
    let coordinator = user("runway-coordinator");
    assert_eq!(coordinator[6], "/usr/sbin/nologin");
    for u in [&runway, &coordinator] {
        let uid: u32 = u[2].parse().expect("uid");
        assert!(uid < 1000, "{} is a system user: {uid}", u[0]);
    }
    // The users and groups the installed units run as, each owning its config.
    for (unit, name, config) in [
        ("runway-agent", "runway", "etc/runway/agent.toml"),
        ("runway-coordinator", "runway-coordinator", "etc/runway/coordinator.toml"),
    ] {
        let text = read(&root.join(format!("usr/lib/systemd/system/{unit}.service")));
        assert!(text.lines().any(|l| l == format!("User={name}")), "{unit}");
        assert!(text.lines().any(|l| l == format!("Group={name}")), "{unit}");
        let gid: u32 = group
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:x:"))?.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no group {name} in:\n{group}"));
        let meta = std::fs::metadata(root.join(config)).expect("config");
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, gid, 0o640), "owner of /{config}");
    }
}

fn postinst(control: &Path) {
    for (package, conf, config, group) in [
        ("runway-agent", "runway-agent.conf", "/etc/runway/agent.toml", "runway"),
        (
            "runway-coordinator",
            "runway-coordinator.conf",
            "/etc/runway/coordinator.toml",
            "runway-coordinator",
        ),
    ] {
        let path = control.join(package).join("postinst");
        assert_eq!(mode(&path), 0o755, "{package}.postinst");
        let script = read(&path);
        run(Command::new("sh").arg("-n").arg(&path));
        let sysusers = script.find(&format!("systemd-sysusers ${{DPKG_ROOT:+--root=\"$DPKG_ROOT\"}} {conf}"));
        let chgrp = script.find(&format!("chgrp {group} {config}"));
        assert!(
            sysusers.is_some() && chgrp.is_some() && sysusers < chgrp,
            "{package}.postinst creates the user, then gives it {config}:\n{script}"
        );
        assert!(script.contains(&format!("chmod 0640 {config}")), "{script}");
        assert!(!script.contains("#DEBHELPER#"), "cargo-deb filled in #DEBHELPER#:\n{script}");
        // Installed, not enabled or started: enable only what was enabled before an upgrade.
        for starts in ["deb-systemd-invoke start", "deb-systemd-invoke restart", "systemctl start"] {
            assert!(!script.contains(starts), "{package}.postinst runs {starts}:\n{script}");
        }
        let enable = script.find("deb-systemd-helper enable").expect("re-enable after upgrade");
        let was_enabled = script.find("deb-systemd-helper --quiet was-enabled").expect("was-enabled check");
        assert!(was_enabled < enable, "{package}.postinst enables unconditionally:\n{script}");
    }
}

fn units_verify(root: &Path) {
    // The units' dependencies (sysinit.target, network-online.target, …)
    // are systemd's own: from this host, beside the packages' units.
    let units = root.join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("read systemd's units") {
        let path = entry.expect("unit").path();
        if path.extension().is_some_and(|e| e == "target") {
            std::fs::copy(&path, units.join(path.file_name().expect("name"))).expect("copy target");
        }
    }
    // `ExecReload=/bin/kill -HUP $MAINPID`: `kill` comes from procps, which
    // both daemon packages depend on; from this host, like the targets.
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create bin");
    std::fs::copy("/bin/kill", bin.join("kill")).expect("copy /bin/kill");
    let verify = |unit: &str| {
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(unit)
            .output()
            .expect("run systemd-analyze verify")
    };
    for unit in ["runway-agent.service", "runway-coordinator.service"] {
        let out = verify(unit);
        assert!(out.status.success() && out.stderr.is_empty(), "verify {unit}: {}", text(&out));
    }
    // The control: verify looks for ExecStartPre=/ExecStart= in this root.
    let binary = root.join("usr/bin/runway-coordinator");
    let aside = root.join("usr/bin/runway-coordinator.aside");
    std::fs::rename(&binary, &aside).expect("move the binary aside");
    let out = verify("runway-coordinator.service");
    std::fs::rename(&aside, &binary).expect("move the binary back");
    assert!(
        !out.status.success() && text(&out).contains("/usr/bin/runway-coordinator is not executable"),
        "verify without the binary: {}",
        text(&out)
    );
}

fn binaries_run(root: &Path) {
    let out = run(Command::new(root.join("usr/bin/runway")).arg("--version"));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("runway "), "{}", text(&out));
    let page = man(&root.join("usr/share/man/man1/runway.1.gz"));
    assert_exit_codes(&page);

    // What ExecStartPre= runs, on the shipped config: its keys are right,
    // the TLS files it names are not on this host (the operator adds them).
    let config = root.join("etc/runway/agent.toml");
    let out = Command::new(root.join("usr/bin/runway-agent"))
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run runway-agent --check-config");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    let problems: Vec<&str> =
        log.lines().filter(|l| l.starts_with(&format!("{}: ", config.display()))).collect();
    assert!(!problems.is_empty(), "{log}");
    assert!(
        problems.iter().all(|l| l.contains(": [tls] ") || l.contains(": [backup] ")),
        "only this host's files may be missing:\n{log}"
    );
    assert!(problems.iter().any(|l| l.contains("/etc/runway/tls/")), "{log}");
}

fn lintian(debs: &[PathBuf]) {
    // Errors and warnings fail; info tags are printed too. (Overridden
    // tags, each explained in deploy/debian/PACKAGE.lintian-overrides, are
    // not shown: with --show-overrides lintian counts them as failing.)
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-info"])
        .args(debs)
        .output()
        .expect("run lintian");
    let report = text(&out);
    eprintln!("lintian:\n{report}");
    assert!(out.status.success(), "lintian fails the packages:\n{report}");
}
