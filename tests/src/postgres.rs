//! A throwaway PostgreSQL cluster, run as the `postgres` user, on a free
//! 127.0.0.1 port with a socket dir of its own; stopped by its PID when
//! dropped (also when the test fails). Used by the end-to-end tests and by
//! the agent's integration tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::Host;
use crate::process::{Proc, free_port, wait_until};

/// Debian's PostgreSQL 15 binaries; `RUNWAY_PG_BIN` overrides.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The PostgreSQL bin dir in use.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("RUNWAY_PG_BIN").map_or_else(|| PathBuf::from(PG_BIN), PathBuf::from)
}

pub struct Postgres {
    pub port: u16,
    /// The address it listens on.
    pub ip: String,
    pub socket_dir: PathBuf,
    /// The cluster's own dir (data, socket, log); free for a test's files too.
    pub root: PathBuf,
    /// Set when the superuser authenticates with a password (scram-sha-256).
    password: Option<String>,
    proc: Proc,
    /// A temp dir this cluster owns; removed after the server stopped.
    _owned: Option<tempfile::TempDir>,
}

/// uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a postgres user exists (apt-get install postgresql-15)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().expect("uid"), fields[3].parse().expect("gid"))
}

fn as_postgres(program: &str) -> Command {
    let (uid, gid) = postgres_ids();
    let mut command = Command::new(pg_bin().join(program));
    command.uid(uid).gid(gid);
    command
}

/// `program` as the postgres user on `host`: entering a namespace needs
/// root, so there `setpriv` drops to postgres after `ip netns exec`.
fn as_postgres_on(host: &Host, program: &str) -> Command {
    if host.ns.is_none() {
        return as_postgres(program);
    }
    let (uid, gid) = postgres_ids();
    let mut command = host.command("setpriv");
    command
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(pg_bin().join(program));
    command
}

impl Postgres {
    /// A trust-auth cluster under `dir`.
    pub fn start(dir: &Path) -> Postgres {
        Self::start_in(dir, &Host::loopback(), None, None)
    }

    /// A trust-auth cluster under `dir`, listening on `host`.
    pub fn start_on(dir: &Path, host: &Host) -> Postgres {
        Self::start_in(dir, host, None, None)
    }

    /// A trust-auth cluster in a temp dir of its own.
    pub fn start_temp() -> Postgres {
        let dir = tempfile::Builder::new().prefix("runway-pg-").tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        Self::start_in(&path, &Host::loopback(), None, Some(dir))
    }

    /// A cluster whose superuser needs `password` (to test secret handling),
    /// in a temp dir of its own.
    pub fn start_temp_with_password(password: &str) -> Postgres {
        let dir = tempfile::Builder::new().prefix("runway-pg-").tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        Self::start_in(&path, &Host::loopback(), Some(password), Some(dir))
    }

    fn start_in(
        dir: &Path,
        host: &Host,
        password: Option<&str>,
        owned: Option<tempfile::TempDir>,
    ) -> Postgres {
        let bin = pg_bin();
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL is not installed at {} (see deploy/install-deps.sh)",
            bin.display()
        );
        let (uid, gid) = postgres_ids();
        let root = dir.join("pg");
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create pg dirs");
        // Temp dirs are root's and 0700; postgres must reach its own dirs.
        let mut p = Some(root.as_path());
        while let Some(path) = p {
            if path == Path::new("/") || path == Path::new("/tmp") {
                break;
            }
            let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755));
            p = path.parent();
        }
        std::os::unix::fs::chown(&root, Some(uid), Some(gid)).expect("chown pg root");
        std::os::unix::fs::chown(&socket_dir, Some(uid), Some(gid)).expect("chown socket dir");
        let mut initdb = as_postgres("initdb");
        initdb.args(["--no-sync", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"]);
        match password {
            Some(password) => {
                let pwfile = root.join("pwfile");
                std::fs::write(&pwfile, password).expect("write pwfile");
                std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown pwfile");
                initdb.arg("--auth=scram-sha-256").arg("--pwfile").arg(pwfile);
            }
            None => {
                initdb.args(["-A", "trust"]);
            }
        }
        let out = initdb.arg("-D").arg(&data).output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if host.ns.is_some() {
            // Other test hosts reach this one over the test subnet.
            let method = if password.is_some() { "scram-sha-256" } else { "trust" };
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            text.push_str(&format!("host all all 10.213.0.0/16 {method}\n"));
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        let port = free_port();
        let proc = Proc::spawn(
            "postgres",
            as_postgres_on(host, "postgres")
                .arg("-D")
                .arg(&data)
                .arg("-c")
                .arg(format!("listen_addresses={}", host.ip))
                .arg("-c")
                .arg(format!("unix_socket_directories={}", socket_dir.display()))
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .args(["-c", "max_connections=50", "-p"])
                .arg(port.to_string()),
            &root,
        );
        let pg = Postgres {
            port,
            ip: host.ip.clone(),
            socket_dir,
            root,
            password: password.map(str::to_owned),
            proc,
            _owned: owned,
        };
        wait_until("postgres to accept connections", Duration::from_secs(30), || {
            pg.try_psql("postgres", "select 1").ok()
        });
        pg
    }

    /// A URL for `database` (TCP; with the password when there is one).
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(password) => format!("postgres://postgres:{password}@{}:{}/{database}", self.ip, self.port),
            None => format!("postgres://postgres@{}:{}/{database}", self.ip, self.port),
        }
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(name)
    }

    /// Runs `sql` with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(pg_bin().join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", &self.ip, "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", database, "-c", sql])
            .env("PGPASSWORD", self.password.as_deref().unwrap_or(""))
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster takes its backends down with it.
        self.proc.signal_and_wait("QUIT", Duration::from_secs(5));
    }
}
