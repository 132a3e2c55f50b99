//! A whole runway installation on one machine: etcd, PostgreSQL,
//! coordinators, a DB agent and app agents each fronting a sample app.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::etcd::Etcd;
use crate::postgres::Postgres;
use crate::process::{Proc, bin, free_port, kill_pid, wait_until, workspace_root};

/// The environment every test cluster uses.
pub const ENV: &str = "staging";
/// The application database.
pub const DB: &str = "app";

pub struct Coordinator {
    pub name: String,
    pub addr: String,
    pub proc: Proc,
}

pub struct AppHost {
    pub name: String,
    /// The sample app's state dir (pid, port, maintenance flag).
    pub dir: PathBuf,
    pub port: u16,
    pub agent: Proc,
}

impl AppHost {
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("pid")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    pub fn in_maintenance(&self) -> bool {
        self.dir.join("maintenance").exists()
    }

    /// The body of `GET /health`, if it answers 200.
    pub fn health(&self) -> Option<String> {
        http_get(self.port, "/health").filter(|(code, _)| *code == 200).map(|(_, body)| body)
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
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub agent: Proc,
}

/// Options for [`Cluster::start`].
pub struct Options {
    pub coordinators: usize,
    pub app_hosts: usize,
    pub db_host: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { coordinators: 2, app_hosts: 2, db_host: true }
    }
}

// Fields drop in declaration order: agents before coordinators before
// etcd and PostgreSQL, and the temp dir last.
pub struct Cluster {
    pub apps: Vec<AppHost>,
    pub db: Option<DbHost>,
    pub coordinators: Vec<Coordinator>,
    pub pg: Postgres,
    pub etcd: Etcd,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(options: Options) -> Cluster {
        let dir = tempfile::Builder::new().prefix("runway-e2e-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let etcd = Etcd::start(&root);
        let pg = Postgres::start(&root);
        pg.create_database(DB);

        let coordinators: Vec<Coordinator> = (1..=options.coordinators)
            .map(|i| start_coordinator(&root, &format!("coord-{i}"), &etcd.endpoint))
            .collect();
        let addrs: Vec<String> = coordinators.iter().map(|c| c.addr.clone()).collect();

        let db = options.db_host.then(|| start_db_agent(&root, &addrs, &pg.url(DB)));
        let apps =
            (1..=options.app_hosts).map(|i| start_app_host(&root, &format!("app-{i}"), &addrs)).collect();
        let cluster = Cluster { apps, db, coordinators, pg, etcd, dir };
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

    /// Runs the `runway` CLI against this cluster.
    pub fn runway(&self, args: &[&str]) -> Output {
        Command::new(bin("runway"))
            .args(args)
            .env("RUNWAY_COORDINATOR", self.coordinator_addrs())
            .env_remove("DATABASE_URL")
            .output()
            .expect("run runway")
    }

    /// psql against the application database.
    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(DB, sql)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn start_coordinator(root: &Path, name: &str, etcd: &str) -> Coordinator {
    let port = free_port();
    let config = root.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\netcd_endpoints = [\"{etcd}\"]\n\
             lease_ttl_secs = 3\nenvironments = [\"staging\", \"production\"]\nheartbeat_secs = 1\nagent_grace_secs = 20\n"
        ),
    )
    .expect("write coordinator config");
    let proc = Proc::spawn(
        name,
        Command::new(bin("runway-coordinator")).arg("--config").arg(&config).env("RUST_LOG", "info"),
        root,
    );
    Coordinator { name: name.to_owned(), addr: format!("http://127.0.0.1:{port}"), proc }
}

fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

fn start_db_agent(root: &Path, coordinators: &[String], url: &str) -> DbHost {
    let state_dir = root.join("db-1-state");
    let backup_dir = root.join("db-1-backups");
    let config = root.join("db-1.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"db-1\"\nenvironment = \"{ENV}\"\ncoordinators = {}\nroles = [\"db\"]\nstate_dir = {:?}\nheartbeat_secs = 1\n\
             [database]\nurl = \"{url}\"\n[backup]\ndir = {:?}\npg_bin_dir = \"{}\"\n",
            toml_list(coordinators),
            state_dir.display().to_string(),
            backup_dir.display().to_string(),
            crate::postgres::PG_BIN,
        ),
    )
    .expect("write db agent config");
    let agent = Proc::spawn("db-1", Command::new(bin("runway-agent")).arg("--config").arg(&config), root);
    DbHost { state_dir, backup_dir, agent }
}

/// The sample app's hook script in deploy/.
pub fn hook_script() -> PathBuf {
    workspace_root().join("deploy/sample-app/hook.sh")
}

fn start_app_host(root: &Path, name: &str, coordinators: &[String]) -> AppHost {
    let dir = root.join(format!("{name}-app"));
    std::fs::create_dir_all(&dir).expect("create app dir");
    let port = free_port();
    std::fs::write(dir.join("port"), port.to_string()).expect("write port");
    std::fs::write(dir.join("bin"), bin("runway-sample-app").display().to_string()).expect("write bin");
    let hook = hook_script();
    let status = Command::new(&hook)
        .arg("restart")
        .arg(&dir)
        .env("RUNWAY_APP_VERSION", "v1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("start sample app");
    assert!(status.success(), "sample app did not start");
    wait_until("sample app to answer", Duration::from_secs(10), || http_get(port, "/health"));

    let argv =
        |action: &str| toml_list(&[hook.display().to_string(), action.to_owned(), dir.display().to_string()]);
    let config = root.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nenvironment = \"{ENV}\"\ncoordinators = {}\nroles = [\"app\"]\nstate_dir = {:?}\nheartbeat_secs = 1\n\
             [app]\nmaintenance_on = {}\nmaintenance_off = {}\nrestart = {}\nhealth_url = \"http://127.0.0.1:{port}/health\"\n\
             health_timeout_secs = 20\nversion = \"v1\"\n",
            toml_list(coordinators),
            root.join(format!("{name}-state")).display().to_string(),
            argv("maintenance-on"),
            argv("maintenance-off"),
            argv("restart"),
        ),
    )
    .expect("write app agent config");
    let agent = Proc::spawn(name, Command::new(bin("runway-agent")).arg("--config").arg(&config), root);
    AppHost { name: name.to_owned(), dir, port, agent }
}

/// A minimal HTTP GET: `(status code, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}
