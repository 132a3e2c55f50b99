//! A whole runway installation on one machine: etcd, PostgreSQL,
//! coordinators, a DB agent and app agents each fronting a sample app.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::etcd::Etcd;
use crate::netns::{Host, Net};
use crate::pki::{OPERATORS, Pki, TlsPaths, environments_toml};
use crate::postgres::Postgres;
use crate::process::{Proc, bin, free_port, kill_pid, wait_until, workspace_root};

/// The environment every test cluster uses.
pub const ENV: &str = "staging";
/// The application database.
pub const DB: &str = "app";

pub struct Coordinator {
    pub name: String,
    pub addr: String,
    pub host: Host,
    config: PathBuf,
    env: Vec<(String, String)>,
    /// The binary it runs ([`Options::coordinator_bin`]).
    bin: PathBuf,
    pub proc: Proc,
    /// The port of its plain-HTTP `/metrics` on `host.ip`, with [`Options::metrics`].
    pub metrics: Option<u16>,
}

pub struct AppHost {
    pub name: String,
    pub host: Host,
    /// The sample app's state dir (pid, port, maintenance flag).
    pub dir: PathBuf,
    pub port: u16,
    pub state_dir: PathBuf,
    /// Its agent's config file; [`Cluster::restart_app_agent`] reads it again.
    pub config: PathBuf,
    /// Extra environment its agent runs with (failpoints); used again on restart.
    pub env: Vec<(String, String)>,
    pub agent: Proc,
}

impl AppHost {
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("pid")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// With [`Options::log_hooks`]: `(unix ms, "start" | "end", action)`
    /// of every hook call so far.
    pub fn hook_log(&self) -> Vec<(i64, String, String)> {
        let text = std::fs::read_to_string(self.dir.join("hooks.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let ms = words.next()?.parse().ok()?;
                Some((ms, words.next()?.to_owned(), words.next()?.to_owned()))
            })
            .collect()
    }

    pub fn in_maintenance(&self) -> bool {
        self.dir.join("maintenance").exists()
    }

    /// The body of `GET /health`, if it answers 200.
    pub fn health(&self) -> Option<String> {
        http_get(&self.host.ip, self.port, "/health").filter(|(code, _)| *code == 200).map(|(_, body)| body)
    }
}

impl Drop for AppHost {
    fn drop(&mut self) {
        let pid = self.pid();
        if pid > 0 {
            kill_pid(pid);
        }
    }
}

pub struct DbHost {
    pub host: Host,
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    /// Its config file; [`Cluster::restart_db_agent`] reads it again.
    pub config: PathBuf,
    /// Extra environment it runs with (failpoints); used again on restart.
    pub env: Vec<(String, String)>,
    pub agent: Proc,
    /// The port of its plain-HTTP `/metrics` on `host.ip`, with [`Options::metrics`].
    pub metrics: Option<u16>,
}

/// Options for [`Cluster::start`].
pub struct Options {
    pub coordinators: usize,
    pub app_hosts: usize,
    pub db_host: bool,
    /// The coordinators' `lease_ttl`, in seconds.
    pub lease_ttl_secs: u64,
    /// etcd members (more than one needs `netns`).
    pub etcd_members: usize,
    /// Every etcd member, coordinator, agent and PostgreSQL in a network
    /// namespace of its own (see [`crate::netns`]).
    pub netns: bool,
    /// Extra environment of every coordinator (failpoints).
    pub coordinator_env: Vec<(String, String)>,
    /// Extra environment of every agent (failpoints).
    pub agent_env: Vec<(String, String)>,
    /// The coordinators' `agent_grace`, in seconds (how long `runway
    /// backup` calls wait for an away DB agent).
    pub agent_grace_secs: u64,
    /// The coordinators' `step_deadline`, in seconds; `None` keeps their default
    /// (hours: longer than any test).
    pub step_deadline_secs: Option<u64>,
    /// mTLS between every part, etcd included (the default); `false` runs
    /// everything in insecure mode.
    pub tls: bool,
    /// Extra `key = value` lines for every `[environments.NAME]` table of
    /// the coordinators (e.g. `approvals = 1`).
    pub environment_policy: String,
    /// Extra lines for one environment's table only: `(environment, lines)`
    /// (e.g. `("production", "requires = { … }")`).
    pub environment_policies: Vec<(String, String)>,
    /// Every coordinator and the DB agent serve `/metrics` on a free port
    /// (`[telemetry] metrics_listen`).
    pub metrics: bool,
    /// Extra tables at the end of every coordinator's config (e.g. `[retention]`).
    pub coordinator_toml: String,
    /// The coordinators' `heartbeat`, in seconds (1: failures show fast in tests).
    pub heartbeat_secs: u64,
    /// The app agents run the sample hook through a wrapper that appends
    /// `<unix ms> start|end <action> [exit code]` to `<app dir>/hooks.log`
    /// (see [`AppHost::hook_log`]).
    pub log_hooks: bool,
    /// The coordinators run this binary instead of the workspace's
    /// `runway-coordinator` (e.g. one built without the test switches).
    pub coordinator_bin: Option<PathBuf>,
    /// With TLS: the CA keeps a revocation list (`pki/ca.crl`) that every
    /// coordinator and agent config names (see [`Pki::with_revocation`]).
    pub revocation: bool,
    /// The app agents run these hooks instead of the sample app's, and the
    /// harness starts no sample app (the test runs its own app).
    pub app_hooks: Option<AppHooks>,
}

/// An app agent's `[app]` hooks other than the sample app's
/// ([`Options::app_hooks`]).
#[derive(Clone, Debug, Default)]
pub struct AppHooks {
    pub maintenance_on: Vec<String>,
    pub maintenance_off: Vec<String>,
    pub restart: Vec<String>,
    pub health_url: String,
    /// More lines for the `[app]` table (`hook_env`, `version_command`, `version`).
    pub app_toml: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            coordinators: 2,
            app_hosts: 2,
            db_host: true,
            lease_ttl_secs: 3,
            etcd_members: 1,
            netns: false,
            coordinator_env: Vec::new(),
            agent_env: Vec::new(),
            agent_grace_secs: 20,
            step_deadline_secs: None,
            tls: true,
            environment_policy: String::new(),
            environment_policies: Vec::new(),
            metrics: false,
            coordinator_toml: String::new(),
            heartbeat_secs: 1,
            log_hooks: false,
            coordinator_bin: None,
            revocation: false,
            app_hooks: None,
        }
    }
}

// Fields drop in declaration order: agents before coordinators before
// etcd and PostgreSQL, then the namespaces, and the temp dir last.
pub struct Cluster {
    pub apps: Vec<AppHost>,
    pub db: Option<DbHost>,
    pub coordinators: Vec<Coordinator>,
    pub pg: Postgres,
    pub etcd: Etcd,
    /// The CA and certificates, with TLS.
    pub pki: Option<Pki>,
    /// The operator `runway_command` acts as (`ops`, every role), with TLS.
    pub operator: Option<TlsPaths>,
    /// Every operator of [`OPERATORS`], by name, with TLS.
    operators: Vec<(String, TlsPaths)>,
    pub net: Option<Net>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let dir = tempfile::Builder::new().prefix("runway-e2e-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let net = options.netns.then(Net::create);
        let host = |name: &str| net.as_ref().map_or_else(Host::loopback, |net| net.host(name));
        assert!(options.etcd_members == 1 || net.is_some(), "several etcd members need netns");
        let etcd_hosts: Vec<Host> = (0..options.etcd_members).map(|i| host(&format!("etcd{i}"))).collect();
        let pki = options
            .tls
            .then(|| if options.revocation { Pki::with_revocation(&root) } else { Pki::create(&root) });
        let names: Vec<String> = (1..=options.coordinators).map(|i| format!("coord-{i}")).collect();
        let etcd = Etcd::start_on(&root, &etcd_hosts, pki.as_ref(), &names);
        let pg = Postgres::start_on(&root, &host("pg"));
        pg.create_database(DB);

        let coordinators: Vec<Coordinator> = names
            .iter()
            .map(|name| start_coordinator(&root, name, host(name), &etcd.endpoints, &options, pki.as_ref()))
            .collect();
        let addrs: Vec<String> = coordinators.iter().map(|c| c.addr.clone()).collect();

        let db = options
            .db_host
            .then(|| start_db_agent(&root, host("db-1"), &addrs, &pg.url(DB), &options, pki.as_ref()));
        let apps = (1..=options.app_hosts)
            .map(|i| {
                let name = format!("app-{i}");
                start_app_host(&root, &name, host(&name), &addrs, &options, pki.as_ref())
            })
            .collect();
        // Every operator's certificate, issued once (`ops` is the default).
        let operators: Vec<(String, TlsPaths)> = pki
            .iter()
            .flat_map(|pki| {
                OPERATORS
                    .iter()
                    .map(|(name, _)| (name.to_string(), pki.operator(name, &["staging", "production"])))
            })
            .collect();
        let operator = operators.iter().find(|(name, _)| name == "ops").map(|(_, tls)| tls.clone());
        let cluster = Cluster { apps, db, coordinators, pg, etcd, pki, operator, operators, net, dir };
        let expected = options.app_hosts + usize::from(options.db_host);
        wait_until("every agent to register with the leader", Duration::from_secs(30), || {
            let out = cluster.runway(&["agents", "--output", "json"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == expected)
                .then_some(())
        });
        cluster
    }

    /// Comma-separated coordinator addresses, as the CLI takes them.
    pub fn coordinator_addrs(&self) -> String {
        self.coordinators.iter().map(|c| c.addr.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The `runway` CLI, set up for this cluster, acting as operator `ops`.
    pub fn runway_command(&self) -> Command {
        self.runway_command_as(self.operator.as_ref())
    }

    /// The `runway` CLI acting with `tls` (`None`: no certificate at all;
    /// in an insecure cluster, `--insecure`).
    pub fn runway_command_as(&self, tls: Option<&TlsPaths>) -> Command {
        let mut command = Command::new(bin("runway"));
        command
            .env("RUNWAY_COORDINATOR", self.coordinator_addrs())
            .env_remove("DATABASE_URL")
            .env_remove("RUNWAY_CA")
            .env_remove("RUNWAY_CERT")
            .env_remove("RUNWAY_KEY")
            .env_remove("RUNWAY_INSECURE");
        match tls {
            Some(tls) => command.envs(tls.cli_env()),
            None if self.pki.is_none() => command.env("RUNWAY_INSECURE", "true"),
            None => &mut command,
        };
        command
    }

    /// The `[tls]` table of an extra agent's config (`insecure = true`
    /// without TLS).
    pub fn agent_tls_toml(&self, environment: &str, name: &str) -> String {
        tls_toml(self.pki.as_ref().map(|pki| pki.agent(environment, name)))
    }

    /// Starts one more DB agent, `name` in `environment`, over the cluster's
    /// PostgreSQL: its `[database]` is a new database `database`, its
    /// backups go to `<root>/<environment>-<name>-backups` (returned), and `extra` is
    /// appended to its config (e.g. `[backup.remote]` keys). Returns once
    /// it is the only agent `runway agents --env environment` lists and it
    /// has recorded the leader's fencing token (its journal exists), so no
    /// file it writes later comes from registering.
    pub fn start_extra_db_agent(
        &self,
        name: &str,
        environment: &str,
        database: &str,
        extra: &str,
    ) -> (Proc, PathBuf) {
        let root = self.path();
        let url = self.pg.create_database(database);
        // Files by environment too: names are unique only within one.
        let stem = format!("{environment}-{name}");
        let backup_dir = root.join(format!("{stem}-backups"));
        let config = root.join(format!("{stem}.toml"));
        let coordinators: Vec<String> = self.coordinators.iter().map(|c| c.addr.clone()).collect();
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nenvironment = \"{environment}\"\ncoordinators = {}\nroles = [\"db\"]\n\
                 state_dir = {:?}\nheartbeat = \"1s\"\n[database]\nurl = \"{url}\"\n[backup]\ndir = {:?}\npg_bin_dir = \"{}\"\n{extra}\n{}",
                toml_list(&coordinators),
                root.join(format!("{stem}-state")).display().to_string(),
                backup_dir.display().to_string(),
                crate::postgres::PG_BIN,
                self.agent_tls_toml(environment, name),
            ),
        )
        .expect("write agent config");
        let agent = Proc::spawn(&stem, Command::new(bin("runway-agent")).arg("--config").arg(&config), root);
        wait_until(&format!("{name} to register with the leader"), Duration::from_secs(30), || {
            let out = self.runway(&["agents", "--env", environment, "--output", "json"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 1).then_some(())
        });
        let journal = root.join(format!("{stem}-state")).join("journal.json");
        wait_until(&format!("{name} to record the leader's token"), Duration::from_secs(30), || {
            journal.exists().then_some(())
        });
        (agent, backup_dir)
    }

    /// `runway rollout start --watch --output json` of `history` (written
    /// as migrations folder `version`) with app version `version` and
    /// `extra` arguments: the run and its events.
    pub fn roll_out(
        &self,
        version: &str,
        history: &[(&str, &str)],
        extra: &[&str],
    ) -> (Output, Vec<serde_json::Value>) {
        let migrations = self.path().join(version);
        crate::fixtures::write_migrations(&migrations, history);
        let mut args = crate::fixtures::rollout_start_args(&migrations, version);
        args.extend_from_slice(extra);
        let out = self.runway(&args);
        let events = crate::watch::json_lines(&out.stdout);
        (out, events)
    }

    /// Runs the `runway` CLI as `operator`: one of [`OPERATORS`] (issued
    /// at start), or any other name, issued now and granted no role.
    pub fn runway_as(&self, operator: &str, args: &[&str]) -> Output {
        let pki = self.pki.as_ref().expect("operators need a TLS cluster");
        let tls = match self.operators.iter().find(|(name, _)| name == operator) {
            Some((_, tls)) => tls.clone(),
            None => pki.operator(operator, &["staging", "production"]),
        };
        self.runway_command_as(Some(&tls)).args(args).output().expect("run runway")
    }

    /// Runs the `runway` CLI against this cluster.
    pub fn runway(&self, args: &[&str]) -> Output {
        self.runway_command().args(args).output().expect("run runway")
    }

    /// Rollout `id` as `runway rollout show --output json` prints it, or
    /// `None` when the CLI printed no rollout (no leader answered yet).
    pub fn try_show_rollout(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.runway(&["rollout", "show", id, "--output", "json"]);
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Rollout `id` as `runway rollout show --output json` prints it;
    /// panics with the CLI's output when it failed (its JSON error is not
    /// a rollout).
    pub fn show_rollout(&self, id: &str) -> serde_json::Value {
        let out = self.runway(&["rollout", "show", id, "--output", "json"]);
        assert!(out.status.success(), "rollout show {id}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rollout show {id}: not JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The application database's schema as `pg_dump --schema-only` prints
    /// it, and every column of `_prisma_migrations`: what "unchanged" and
    /// "back to the pre-rollout state" compare.
    pub fn database_state(&self) -> (String, String) {
        let schema = Command::new(format!("{}/pg_dump", crate::postgres::PG_BIN))
            .args(["--schema-only", "--no-owner", "-d", &self.pg.url(DB)])
            .output()
            .expect("run pg_dump");
        assert!(schema.status.success(), "pg_dump: {}", String::from_utf8_lossy(&schema.stderr));
        // pg_dump ≥ 15.14 brackets its output with `\restrict KEY` /
        // `\unrestrict KEY`, a random key per run: everything else must match.
        let schema: String = String::from_utf8(schema.stdout)
            .expect("UTF-8 schema")
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(|l| format!("{l}\n"))
            .collect();
        (schema, self.sql("SELECT * FROM _prisma_migrations ORDER BY migration_name"))
    }

    /// psql against the application database.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(DB, sql)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The coordinator whose election key is oldest in etcd: the leader
    /// (or, for a lease TTL after it died, the dead leader).
    pub fn leader(&self) -> Option<usize> {
        let addr = self.etcd.oldest_value("/runway/leader")?;
        self.coordinators.iter().position(|c| c.addr == addr)
    }

    /// SIGKILLs the leader and starts it again at once (it comes back as a
    /// follower); returns its name.
    pub fn kill_and_restart_leader(&mut self) -> String {
        let leader = self.leader().expect("a leader");
        self.restart_coordinator(leader);
        self.coordinators[leader].name.clone()
    }

    /// Changes coordinator `i`'s config file with `edit` (read again by
    /// [`Cluster::restart_coordinator`]).
    pub fn edit_coordinator_config(&self, i: usize, edit: impl FnOnce(String) -> String) {
        let path = &self.coordinators[i].config;
        let text = std::fs::read_to_string(path).expect("read coordinator config");
        std::fs::write(path, edit(text)).expect("write coordinator config");
    }

    /// SIGKILLs coordinator `i` and starts it again with its old config.
    pub fn restart_coordinator(&mut self, i: usize) {
        let c = &mut self.coordinators[i];
        c.proc.kill();
        c.proc = spawn_coordinator(self.dir.path(), &c.name, &c.host, &c.config, &c.env, &c.bin);
    }

    /// Starts the DB agent again (after a kill), with its old config.
    pub fn restart_db_agent(&mut self) {
        let db = self.db.as_mut().expect("a DB host");
        db.agent.kill();
        db.agent = spawn_agent(self.dir.path(), "db-1", &db.host, &db.config, &db.env);
    }

    /// Starts app agent `i` again (after a kill), with its config as it is
    /// on disk now.
    pub fn restart_app_agent(&mut self, i: usize) {
        let app = &mut self.apps[i];
        app.agent.kill();
        app.agent = spawn_agent(self.dir.path(), &app.name, &app.host, &app.config, &app.env);
    }

    /// The journal entries of every agent, as JSON.
    pub fn journals(&self) -> Vec<(String, serde_json::Value)> {
        let dirs = self
            .db
            .iter()
            .map(|d| ("db-1".to_owned(), d.state_dir.clone()))
            .chain(self.apps.iter().map(|a| (a.name.clone(), a.state_dir.clone())));
        let mut entries = Vec::new();
        for (name, dir) in dirs {
            let journal: serde_json::Value = match std::fs::read(dir.join("journal.json")) {
                Ok(bytes) => serde_json::from_slice(&bytes).expect("journal is JSON"),
                Err(_) => continue,
            };
            for entry in journal["commands"].as_object().expect("journal commands").values() {
                entries.push((name.clone(), entry.clone()));
            }
        }
        entries
    }
}

fn start_coordinator(
    root: &Path,
    name: &str,
    host: Host,
    etcd: &[String],
    options: &Options,
    pki: Option<&Pki>,
) -> Coordinator {
    let port = free_port();
    let scheme = if pki.is_some() { "https" } else { "http" };
    let addr = format!("{scheme}://{}:{port}", host.ip);
    let config = root.join(format!("{name}.toml"));
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"{}:{port}\"\nadvertise = \"{addr}\"\netcd_endpoints = {}\n\
         lease_ttl = \"{}s\"\nheartbeat = \"{}s\"\nagent_grace = \"{}s\"\n",
        host.ip,
        toml_list(etcd),
        options.lease_ttl_secs,
        options.heartbeat_secs,
        options.agent_grace_secs,
    );
    if let Some(secs) = options.step_deadline_secs {
        text.push_str(&format!("step_deadline = \"{secs}s\"\n"));
    }
    for env in ["staging", "production"] {
        let own =
            options.environment_policies.iter().filter(|(e, _)| e == env).map(|(_, lines)| lines.as_str());
        let policy =
            std::iter::once(options.environment_policy.as_str()).chain(own).collect::<Vec<_>>().join("\n");
        text.push_str(&environments_toml(&[env], &policy));
    }
    text.push_str(&tls_toml(pki.map(|pki| pki.coordinator(name, &host.ip))));
    let metrics = options.metrics.then(free_port);
    text.push_str(&telemetry_toml(&host, metrics));
    text.push_str(&options.coordinator_toml);
    std::fs::write(&config, text).expect("write coordinator config");
    let env = options.coordinator_env.clone();
    let bin = options.coordinator_bin.clone().unwrap_or_else(|| bin("runway-coordinator"));
    let proc = spawn_coordinator(root, name, &host, &config, &env, &bin);
    Coordinator { name: name.to_owned(), addr, host, config, env, bin, proc, metrics }
}

fn spawn_coordinator(
    root: &Path,
    name: &str,
    host: &Host,
    config: &Path,
    env: &[(String, String)],
    bin: &Path,
) -> Proc {
    let mut command = host.command(bin);
    command.arg("--config").arg(config).env("RUST_LOG", "info").envs(env.iter().cloned());
    Proc::spawn(name, &mut command, root)
}

fn spawn_agent(root: &Path, name: &str, host: &Host, config: &Path, env: &[(String, String)]) -> Proc {
    let mut command = host.command(bin("runway-agent"));
    command.arg("--config").arg(config).envs(env.iter().cloned());
    Proc::spawn(name, &mut command, root)
}

/// A config's `[telemetry]` table: metrics on `port`, if any.
fn telemetry_toml(host: &Host, port: Option<u16>) -> String {
    port.map(|port| format!("[telemetry]\nmetrics_listen = \"{}:{port}\"\n", host.ip)).unwrap_or_default()
}

/// A config's `[tls]` table: the holder's files, or insecure mode.
fn tls_toml(tls: Option<TlsPaths>) -> String {
    tls.map_or_else(|| "[tls]\ninsecure = true\n".into(), |tls| tls.toml())
}

fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

fn start_db_agent(
    root: &Path,
    host: Host,
    coordinators: &[String],
    url: &str,
    options: &Options,
    pki: Option<&Pki>,
) -> DbHost {
    let metrics = options.metrics.then(free_port);
    let state_dir = root.join("db-1-state");
    let backup_dir = root.join("db-1-backups");
    let config = root.join("db-1.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"db-1\"\nenvironment = \"{ENV}\"\ncoordinators = {}\nroles = [\"db\"]\nstate_dir = {:?}\nheartbeat = \"1s\"\n\
             [database]\nurl = \"{url}\"\n[backup]\ndir = {:?}\npg_bin_dir = \"{}\"\n",
            toml_list(coordinators),
            state_dir.display().to_string(),
            backup_dir.display().to_string(),
            crate::postgres::PG_BIN,
        ) + &tls_toml(pki.map(|pki| pki.agent(ENV, "db-1")))
            + &telemetry_toml(&host, metrics),
    )
    .expect("write db agent config");
    let env = options.agent_env.clone();
    let agent = spawn_agent(root, "db-1", &host, &config, &env);
    DbHost { host, state_dir, backup_dir, config, env, agent, metrics }
}

/// The sample app's hook script in deploy/.
pub fn hook_script() -> PathBuf {
    workspace_root().join("deploy/sample-app/hook.sh")
}

fn start_app_host(
    root: &Path,
    name: &str,
    host: Host,
    coordinators: &[String],
    options: &Options,
    pki: Option<&Pki>,
) -> AppHost {
    let env = &options.agent_env;
    let dir = root.join(format!("{name}-app"));
    std::fs::create_dir_all(&dir).expect("create app dir");
    let (hooks, port) = match &options.app_hooks {
        Some(hooks) => (hooks.clone(), 0),
        None => start_sample_app(root, &dir, &host, options.log_hooks),
    };
    let config = root.join(format!("{name}.toml"));
    let state_dir = root.join(format!("{name}-state"));
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nenvironment = \"{ENV}\"\ncoordinators = {}\nroles = [\"app\"]\nstate_dir = {:?}\nheartbeat = \"1s\"\n\
             [app]\nmaintenance_on = {}\nmaintenance_off = {}\nrestart = {}\nhealth_url = \"{}\"\n\
             health_timeout = \"20s\"\n{}\n",
            toml_list(coordinators),
            state_dir.display().to_string(),
            toml_list(&hooks.maintenance_on),
            toml_list(&hooks.maintenance_off),
            toml_list(&hooks.restart),
            hooks.health_url,
            hooks.app_toml,
        ) + &tls_toml(pki.map(|pki| pki.agent(ENV, name))),
    )
    .expect("write app agent config");
    let agent = spawn_agent(root, name, &host, &config, env);
    AppHost { name: name.to_owned(), host, dir, port, state_dir, config, env: env.to_vec(), agent }
}

/// Starts the sample app at v1 in `dir` on a free port of `host`; its
/// hooks (`hook.sh ACTION DIR`, through [`logged_hook`] with `log_hooks`)
/// and port.
fn start_sample_app(root: &Path, dir: &Path, host: &Host, log_hooks: bool) -> (AppHooks, u16) {
    let port = free_port();
    std::fs::write(dir.join("port"), port.to_string()).expect("write port");
    std::fs::write(dir.join("addr"), &host.ip).expect("write addr");
    std::fs::write(dir.join("bin"), bin("runway-sample-app").display().to_string()).expect("write bin");
    let hook = hook_script();
    let status = host
        .command(&hook)
        .arg("restart")
        .arg(dir)
        .env("RUNWAY_APP_VERSION", "v1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("start sample app");
    assert!(status.success(), "sample app did not start");
    wait_until("sample app to answer", Duration::from_secs(10), || http_get(&host.ip, port, "/health"));

    let hook = if log_hooks { logged_hook(root, &hook) } else { hook };
    let argv = |action: &str| vec![hook.display().to_string(), action.to_owned(), dir.display().to_string()];
    let hooks = AppHooks {
        maintenance_on: argv("maintenance-on"),
        maintenance_off: argv("maintenance-off"),
        restart: argv("restart"),
        health_url: format!("http://{}:{port}/health", host.ip),
        app_toml: "version = \"v1\"".to_owned(),
    };
    (hooks, port)
}

/// A wrapper around `hook` that logs each call's start and end, with the
/// time in Unix ms, to `hooks.log` in the app dir (the hook's second argument).
fn logged_hook(root: &Path, hook: &Path) -> PathBuf {
    let wrapper = root.join("hook-logged.sh");
    let script = format!(
        "#!/bin/sh\nlog=\"$2/hooks.log\"\necho \"$(date +%s%3N) start $1\" >>\"$log\"\n\"{}\" \"$@\"\nrc=$?\n\
         echo \"$(date +%s%3N) end $1 $rc\" >>\"$log\"\nexit $rc\n",
        hook.display()
    );
    std::fs::write(&wrapper, script).expect("write hook wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod hook wrapper");
    wrapper
}

/// A minimal HTTP GET: `(status code, body)`.
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((ip, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}
