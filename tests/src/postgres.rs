//! A throwaway PostgreSQL cluster, run as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, free_port, wait_until};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    pub port: u16,
    pub socket_dir: PathBuf,
    proc: Proc,
}

/// uid and gid of the `postgres` user.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("a postgres user exists (apt-get install postgresql)");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().expect("uid"), fields[3].parse().expect("gid"))
}

fn as_postgres(program: &str) -> Command {
    let (uid, gid) = postgres_ids();
    let mut command = Command::new(Path::new(PG_BIN).join(program));
    command.uid(uid).gid(gid);
    command
}

impl Postgres {
    pub fn start(dir: &Path) -> Postgres {
        let (uid, gid) = postgres_ids();
        let root = dir.join("pg");
        let data = root.join("data");
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create pg dirs");
        // The test dir is root's; postgres must be able to reach its own dirs.
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
        let status = as_postgres("initdb")
            .args(["--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let port = free_port();
        let proc = Proc::spawn(
            "postgres",
            as_postgres("postgres")
                .arg("-D")
                .arg(&data)
                .args(["-c", "listen_addresses=127.0.0.1", "-c"])
                .arg(format!("unix_socket_directories={}", socket_dir.display()))
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-p"])
                .arg(port.to_string()),
            dir,
        );
        let pg = Postgres { port, socket_dir, proc };
        wait_until("postgres to accept connections", Duration::from_secs(30), || {
            pg.try_psql("postgres", "select 1").ok()
        });
        pg
    }

    /// A URL for `database` (TCP, trust auth).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs `sql` with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(Path::new(PG_BIN).join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", database, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster takes its backends down with it.
        self.proc.signal_and_wait("QUIT", Duration::from_secs(5));
    }
}
