//! Configs are checked at start-up: an agent or a coordinator whose config
//! has a URL that does not parse, a file it cannot read or a hook it cannot
//! run exits at once with exit 2, every problem named by file, table and
//! key, before it binds, connects or writes anything. `runway config check`
//! runs the same checks alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::pki::{Pki, environments_toml};
use runway_tests::postgres::PG_BIN;
use runway_tests::process::{Proc, bin, free_port, workspace_root};

/// A refused config's exit code: "bad input" in `runway --help`'s table.
const INVALID: i32 = 2;

/// How long a daemon may take to refuse its config: it reads a file and
/// looks at a few more; anything close to this means it went on to start.
const REFUSES_WITHIN: Duration = Duration::from_secs(10);

/// `runway ARGS`, without the environment the checks read.
fn runway(args: &[&str]) -> Output {
    Command::new(bin("runway"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUNWAY_ETCD_ENDPOINTS")
        .output()
        .expect("run runway")
}

/// Starts `daemon --config CONFIG` and waits for it to exit by itself:
/// its exit code (`None`: still running after [`REFUSES_WITHIN`]) and log.
fn start_and_wait(daemon: &str, config: &Path, dir: &Path) -> (Option<i32>, String) {
    let mut command = Command::new(bin(daemon));
    command.arg("--config").arg(config).env_remove("DATABASE_URL").env_remove("RUNWAY_ETCD_ENDPOINTS");
    let mut proc = Proc::spawn(daemon, &mut command, dir);
    let status = proc.wait_for_exit(REFUSES_WITHIN);
    (status.and_then(|s| s.code()), proc.log_text())
}

/// The lines of `text` about `file`: one per problem.
fn problems<'a>(text: &'a str, file: &Path) -> Vec<&'a str> {
    let prefix = format!("{}: ", file.display());
    text.lines().filter(|line| line.starts_with(&prefix)).collect()
}

#[test]
fn an_agent_whose_database_url_does_not_parse_exits_at_once_and_never_registers() {
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 0, db_host: false, ..Options::default() });
    let root = cluster.path();
    let config = root.join("db-9.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"db-9\"\nenvironment = \"{ENV}\"\ncoordinators = [{:?}]\nroles = [\"db\"]\nstate_dir = {:?}\n\
             heartbeat = \"1s\"\n[databases.app]\nurl = \"postgres://runway:hunter2@127.0.0.1:notaport/app\"\n\
             [backup]\ndir = {:?}\npg_bin_dir = \"{PG_BIN}\"\n{}",
            cluster.coordinators[0].addr,
            root.join("db-9-state"),
            root.join("db-9-backups"),
            cluster.agent_tls_toml(ENV, "db-9"),
        ),
    )
    .expect("write agent config");

    let (code, log) = start_and_wait("runway-agent", &config, root);
    assert_eq!(code, Some(INVALID), "the agent must refuse its config at start-up:\n{log}");
    // The one problem, named by file, table and key; never the password.
    assert_eq!(
        problems(&log, &config),
        [format!("{}: [databases.app] url: invalid port number", config.display())],
        "{log}"
    );
    assert!(log.contains("runway config check --agent"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    // It wrote nothing and never registered.
    assert!(!root.join("db-9-state").exists(), "the journal dir was created");
    let agents = cluster.runway(&["agents", "--output", "json"]);
    assert!(agents.status.success(), "{}", String::from_utf8_lossy(&agents.stderr));
    assert!(!String::from_utf8_lossy(&agents.stdout).contains("db-9"), "db-9 registered");
}

#[test]
fn a_coordinator_with_a_missing_tls_file_exits_naming_every_key_before_listening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::create(dir.path());
    let tls = pki.coordinator("coord-9", "127.0.0.1");
    std::fs::remove_file(&tls.key).expect("remove the key");
    let port = free_port();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"coord-9\"\nlisten = \"127.0.0.1:{port}\"\netcd_endpoints = [\"http://127.0.0.1:notaport\"]\n{}\
             [[environments.staging.webhooks]]\nname = \"chat\"\nformat = \"slack\"\n\
             url = \"https://hooks.example:notaport/SECRET\"\n{}",
            environments_toml(&["staging"], ""),
            tls.toml(),
        ),
    )
    .expect("write coordinator config");

    let (code, log) = start_and_wait("runway-coordinator", &config, dir.path());
    assert_eq!(code, Some(INVALID), "the coordinator must refuse its config at start-up:\n{log}");
    let found = problems(&log, &config);
    for needle in [
        format!("[tls] key: cannot read {}", tls.key.display()),
        "etcd_endpoints: \"http://127.0.0.1:notaport\" is not an etcd endpoint".to_owned(),
        "[environments.staging] webhook \"chat\": `url` is not an http:// or https:// URL".to_owned(),
    ] {
        assert_eq!(found.iter().filter(|line| line.contains(&needle)).count(), 1, "{needle:?} in:\n{log}");
    }
    assert_eq!(found.len(), 3, "{log}");
    assert!(!log.contains("SECRET"), "a webhook URL is a secret:\n{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "it bound its port");
}

#[test]
fn config_check_refuses_a_bad_config_naming_every_key_as_the_agent_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_executable = dir.path().join("restart.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("write hook");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"app-9\"\nenvironment = \"{ENV}\"\ncoordinators = [\"http://127.0.0.1:1\"]\nroles = [\"db\", \"app\"]\n\
             state_dir = {:?}\n[databases.app]\nurl = \"postgres://runway@127.0.0.1:notaport/app\"\n\
             [backup]\ndir = {:?}\npg_bin_dir = \"{PG_BIN}\"\n[app]\nmaintenance_on = [{:?}]\n\
             maintenance_off = [\"/bin/true\"]\nrestart = [{:?}]\nhealth_url = \"http://127.0.0.1:1/health\"\n\
             [tls]\ninsecure = true\n",
            dir.path().join("state"),
            dir.path().join("backups"),
            dir.path().join("missing-hook"),
            not_executable,
        ),
    )
    .expect("write agent config");
    let file = config.to_str().expect("UTF-8 path");

    let out = runway(&["config", "check", "--agent", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(INVALID), "{stdout}{stderr}");
    let expected = [
        format!("{file}: [databases.app] url: invalid port number"),
        format!("{file}: [app] maintenance_on: {}: No such file", dir.path().join("missing-hook").display()),
        format!("{file}: [app] restart: {} is not executable", not_executable.display()),
    ];
    let found = problems(&stdout, &config);
    assert_eq!(found.len(), expected.len(), "{stdout}");
    for line in &expected {
        assert_eq!(
            found.iter().filter(|found| found.starts_with(line.as_str())).count(),
            1,
            "{line:?} in:\n{stdout}"
        );
    }
    assert!(stderr.contains("error: 1 of 1 config file(s) have problems"), "{stderr}");

    // The agent itself refuses the same config with the same lines.
    let (code, log) = start_and_wait("runway-agent", &config, dir.path());
    assert_eq!(code, Some(INVALID), "{log}");
    assert_eq!(problems(&log, &config), found, "runway config check and the agent disagree:\n{log}");

    // For scripts: one JSON object per file, then the failure envelope.
    let out = runway(&["config", "check", "--agent", file, "--output", "json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0]["kind"].as_str(), lines[0]["ok"].as_bool()), (Some("agent"), Some(false)));
    assert_eq!(lines[0]["problems"].as_array().map(Vec::len), Some(expected.len()), "{lines:?}");
    assert_eq!(lines[1]["exit_code"], INVALID, "{lines:?}");
}

#[test]
fn config_check_passes_the_example_configs_in_deploy() {
    let deploy = workspace_root().join("deploy");
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&deploy)
        .expect("read deploy/")
        .map(|entry| entry.expect("deploy/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    let names: Vec<String> =
        examples.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        ["agent-app.toml", "agent-db.toml", "coordinator.toml"],
        "the example configs in deploy/"
    );
    let mut args = vec!["config".to_owned(), "check".to_owned()];
    for path in &examples {
        let kind = if path.ends_with("coordinator.toml") { "--coordinator" } else { "--agent" };
        args.extend([kind.to_owned(), path.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Their keys are right. The files they name are those of a real
    // installation (/etc/runway/tls/…, /usr/local/bin/app-…), not this host's.
    let out = runway(&[&args[..], &["--skip-files"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for path in &examples {
        assert_eq!(problems(&stdout, path).len(), 1, "{stdout}");
        assert!(stdout.contains(&format!("{}: OK (", path.display())), "{stdout}");
    }

    // Without --skip-files those files are checked here, and only they fail.
    let out = runway(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(INVALID), "{stdout}");
    let tls = problems(&stdout, &deploy.join("coordinator.toml"));
    assert!(tls.iter().all(|line| line.contains(": [tls] ")) && !tls.is_empty(), "{stdout}");
    let hooks = problems(&stdout, &deploy.join("agent-app.toml"));
    assert!(
        hooks.iter().any(|line| line.contains(": [app] maintenance_on: /usr/local/bin/app-maintenance")),
        "{stdout}"
    );

    let help = runway(&["config", "check", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in
        ["without starting anything", "--agent <FILE>", "--coordinator <FILE>", "--skip-files", "Exit codes"]
    {
        assert!(help.contains(needle), "{needle:?} in:\n{help}");
    }
}

/// `DAEMON --check-config --config CONFIG` (what the systemd units run as
/// `ExecStartPre=`): its exit code and output; `None` when it went on to
/// start instead of exiting.
fn check_config(daemon: &str, config: &Path, dir: &Path) -> (Option<i32>, String) {
    let mut command = Command::new(bin(daemon));
    command
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .env_remove("DATABASE_URL")
        .env_remove("RUNWAY_ETCD_ENDPOINTS");
    let mut proc = Proc::spawn(daemon, &mut command, dir);
    let status = proc.wait_for_exit(REFUSES_WITHIN);
    (status.and_then(|s| s.code()), proc.log_text())
}

#[test]
fn the_daemons_check_config_flag_refuses_a_wrong_key_naming_it_and_passes_a_good_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::create(dir.path());

    // The agent: a DB host's config, every file it names present here.
    let agent = dir.path().join("agent.toml");
    let good_agent = format!(
        "name = \"db-9\"\nenvironment = \"{ENV}\"\ncoordinators = [\"https://127.0.0.1:1\"]\nroles = [\"db\"]\n\
         state_dir = {:?}\n[databases.app]\nurl = \"postgres://runway@127.0.0.1:5432/app\"\n\
         [backup]\ndir = {:?}\npg_bin_dir = \"{PG_BIN}\"\n{}",
        dir.path().join("state"),
        dir.path().join("backups"),
        pki.agent(ENV, "db-9").toml(),
    );
    std::fs::write(&agent, &good_agent).expect("write agent config");
    let (code, log) = check_config("runway-agent", &agent, dir.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(&format!("{}: OK (agent config)", agent.display())), "{log}");
    assert!(!dir.path().join("state").exists(), "a check wrote the journal dir");

    // The same config with a misspelt key (`heartbeat_sec`): refused, named.
    std::fs::write(&agent, good_agent.replacen("roles = ", "heartbeat_sec = 1\nroles = ", 1)).expect("write");
    let (code, log) = check_config("runway-agent", &agent, dir.path());
    assert_eq!(code, Some(INVALID), "{log}");
    assert!(
        log.contains(&agent.display().to_string()) && log.contains("unknown field `heartbeat_sec`"),
        "{log}"
    );
    // `runway config check` says the same of it.
    let out = runway(&["config", "check", "--agent", agent.to_str().expect("UTF-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(INVALID), "{stdout}");
    assert!(stdout.contains("unknown field `heartbeat_sec`"), "{stdout}");

    // The coordinator, likewise; it does not listen.
    let port = free_port();
    let coordinator = dir.path().join("coordinator.toml");
    let good = format!(
        "name = \"coord-9\"\nlisten = \"127.0.0.1:{port}\"\netcd_endpoints = [\"https://127.0.0.1:1\"]\n{}{}",
        environments_toml(&[ENV], ""),
        pki.coordinator("coord-9", "127.0.0.1").toml(),
    );
    std::fs::write(&coordinator, &good).expect("write coordinator config");
    let (code, log) = check_config("runway-coordinator", &coordinator, dir.path());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(&format!("{}: OK (coordinator config)", coordinator.display())), "{log}");
    std::fs::write(&coordinator, good.replacen("listen = ", "listen_addr = \"127.0.0.1:1\"\nlisten = ", 1))
        .expect("write");
    let (code, log) = check_config("runway-coordinator", &coordinator, dir.path());
    assert_eq!(code, Some(INVALID), "{log}");
    assert!(log.contains("unknown field `listen_addr`"), "{log}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "it bound its port");
}

#[test]
fn old_secs_keys_are_read_with_a_warning_and_both_spellings_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let coordinator = dir.path().join("coordinator.toml");
    let old = "lease_ttl_secs = 3\nheartbeat_secs = 1\n[environments.production]\napproval_timeout_secs = 600\n\
               [tls]\ninsecure = true\n";
    std::fs::write(&coordinator, old).expect("write coordinator config");
    let file = coordinator.to_str().expect("UTF-8 path");
    let out = runway(&["config", "check", "--skip-files", "--coordinator", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for needle in [
        format!("{file}: warning: lease_ttl_secs = 3 is deprecated; write `lease_ttl = \"3s\"` instead"),
        format!(
            "{file}: warning: [environments.production] approval_timeout_secs = 600 is deprecated; write \
             `approval_timeout = \"10m\"` instead"
        ),
        format!("{file}: OK (coordinator config)"),
    ] {
        assert!(stdout.contains(&needle), "{needle:?} in:\n{stdout}");
    }

    std::fs::write(&coordinator, format!("lease_ttl = \"3s\"\n{old}")).expect("write");
    let out = runway(&["config", "check", "--skip-files", "--coordinator", file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(INVALID), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{file}: lease_ttl_secs: both `lease_ttl` and its old spelling `lease_ttl_secs` are set"
        )),
        "{stdout}"
    );
}
