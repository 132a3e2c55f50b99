//! Secrets never appear in a log, an event, an error or the CLI's output.
//!
//! One end-to-end run uses every kind of secret runway handles: a database
//! password (in `DATABASE_URL`, as `?password=`; on the CLI's command line,
//! as `user:password@`; a wrong one that fails authentication) and
//! object-store keys (secret access key and session token, from the
//! agent's environment as a systemd `EnvironmentFile=` would set them).
//! It runs a full rollout (backup uploaded to a moto bucket, migrations,
//! restarts), a rollout whose migration fails, local CLI commands that fail
//! (a failed migration, a mistyped password in both URL forms) and an agent
//! whose config does not parse on the line holding a password; then it
//! reads every file the
//! run wrote (every process's log, the agents' journals, etcd's data with
//! all rollout events) plus every rollout's events and every CLI output,
//! and looks for each secret.
//!
//! The grep proves it sees what it should: markers that must be there
//! (the failed migration's name and error, the upload, the role name next
//! to where the password was masked) are found in the same text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::moto::{ACCESS_KEY_ID, Moto};
use runway_tests::postgres::{PG_BIN, Postgres};
use runway_tests::process::{Proc, bin, wait_until};

/// The PostgreSQL superuser's password (the harness's; runway never gets it).
const SUPERUSER_PASSWORD: &str = "su-Kq7Vw2-superSecret";
/// The application role's password, handed to runway.
const APP_PASSWORD: &str = "app-Zr5Xc9-databaseSecret";
/// A wrong password an operator mistypes.
const WRONG_PASSWORD: &str = "wrong-Tb3Hn8-mistypedSecret";
/// Object-store credentials of the DB agent.
const SECRET_ACCESS_KEY: &str = "s3-Pm4Jd6-accessKeySecret";
const SESSION_TOKEN: &str = "s3-Lw8Qe1-sessionTokenSecret";
const SECRETS: [&str; 5] =
    [SUPERUSER_PASSWORD, APP_PASSWORD, WRONG_PASSWORD, SECRET_ACCESS_KEY, SESSION_TOKEN];

/// The application role (not a secret; it shows where the password was).
const ROLE: &str = "runway_app";
const BUCKET: &str = "runway-secrets";

/// A migration on top of [`SHOP`] that changes the database, then fails.
const BROKEN: (&str, &str) = (
    "20240111000000_broken_secret_marker",
    "ALTER TABLE \"Order\" ADD COLUMN \"note\" TEXT;\nALTER TABLE \"NoSuchTable\" ADD COLUMN \"x\" INTEGER;\n",
);

/// The DB agent `db-1`, on a PostgreSQL that checks passwords, copying its
/// backups to moto; every secret comes from its environment.
fn start_db_agent(cluster: &Cluster, pg: &Postgres, moto: &Moto) -> Proc {
    let root = cluster.path();
    let coordinators: Vec<String> = cluster.coordinators.iter().map(|c| format!("{:?}", c.addr)).collect();
    let config = root.join("db-1.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"db-1\"\nenvironment = \"{ENV}\"\ncoordinators = [{}]\nroles = [\"db\"]\nstate_dir = {:?}\n\
             heartbeat = \"1s\"\n[database]\n[backup]\ndir = {:?}\npg_bin_dir = \"{PG_BIN}\"\n\
             [backup.object_store]\nbucket = \"{BUCKET}\"\nprefix = \"app\"\nendpoint = \"{}\"\n\
             region = \"us-east-1\"\nallow_http = true\n{}",
            coordinators.join(", "),
            root.join("db-1-state").display().to_string(),
            root.join("db-1-backups").display().to_string(),
            moto.endpoint,
            cluster.agent_tls_toml(ENV, "db-1"),
        ),
    )
    .expect("write agent config");
    let database_url =
        format!("postgres://{ROLE}@{}:{}/app?sslmode=disable&password={APP_PASSWORD}", pg.ip, pg.port);
    let mut command = Command::new(bin("runway-agent"));
    command
        .arg("--config")
        .arg(&config)
        .env("DATABASE_URL", database_url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("RUST_LOG", "debug,sqlx=debug,h2=info,tower=info,hyper=info");
    Proc::spawn("db-1", &mut command, root)
}

/// Every file under `dir`, except databases' own data (PostgreSQL's, and
/// the backups' dumps, which hold table rows, not runway's text).
fn files_under(dir: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

/// Everything a person or a log shipper would see of one CLI run.
fn seen(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn no_secret_reaches_a_log_an_event_or_the_cli() {
    // App agents get the database URL in their environment too: it must
    // not reach their hooks or their logs.
    let pg = Postgres::start_temp_with_password(SUPERUSER_PASSWORD);
    pg.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{APP_PASSWORD}'"));
    pg.psql("postgres", &format!("CREATE DATABASE app OWNER {ROLE}"));
    pg.psql("postgres", &format!("CREATE DATABASE local OWNER {ROLE}"));
    let app_url_env = format!("postgres://{ROLE}:{APP_PASSWORD}@{}:{}/app", pg.ip, pg.port);
    let cluster = Cluster::start(Options {
        coordinators: 2,
        app_hosts: 1,
        db_host: false,
        agent_env: vec![("DATABASE_URL".into(), app_url_env)],
        ..Options::default()
    });
    let moto = Moto::start(cluster.path());
    moto.create_bucket(BUCKET);
    let mut db_agent = start_db_agent(&cluster, &pg, &moto);
    wait_until("db-1 to register with the leader", Duration::from_secs(30), || {
        let out = cluster.runway(&["agents", "--env", ENV, "--output", "json"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 2).then_some(())
    });
    let mut outputs: Vec<(String, Output)> = Vec::new();

    // 1. A full rollout: backup (uploaded to the bucket), migrations, restarts.
    let good = cluster.path().join("good");
    write_migrations(&good, SHOP);
    let out = cluster.runway(&rollout_start_args(&good, "2.0.0"));
    assert!(out.status.success(), "the rollout failed: {}", seen(&out));
    outputs.push(("rollout start (good)".into(), out));

    // 2. A migration that fails after changing the database: restored from the backup.
    let broken = cluster.path().join("broken");
    let mut history = SHOP.to_vec();
    history.push(BROKEN);
    write_migrations(&broken, &history);
    let out = cluster.runway(&rollout_start_args(&broken, "2.1.0"));
    assert_eq!(out.status.code(), Some(1), "the broken migration must fail the rollout: {}", seen(&out));
    outputs.push(("rollout start (broken)".into(), out));

    // 3. Every rollout's events, replayed from the start; lists and details.
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    assert!(list.status.success(), "{}", seen(&list));
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2, "{}", seen(&list));
    outputs.push(("rollout list".into(), list));
    for id in &ids {
        for args in
            [&["rollout", "watch", id, "--output", "json"][..], &["rollout", "show", id, "--output", "json"]]
        {
            let out = cluster.runway(args);
            outputs.push((args.join(" "), out));
        }
    }
    for args in [&["agents", "--output", "json"][..], &["backup", "list", "--env", ENV, "--output", "json"]] {
        let out = cluster.runway(args);
        assert!(out.status.success(), "{}: {}", args.join(" "), seen(&out));
        outputs.push((args.join(" "), out));
    }

    // 4. Local CLI runs with the password in the URL: a failing migration,
    // and a mistyped password the server refuses.
    let local_url = format!("postgres://{ROLE}:{APP_PASSWORD}@{}:{}/local", pg.ip, pg.port);
    let local = cluster.path().join("local");
    write_migrations(&local, &[BROKEN]);
    for (name, args, code) in [
        (
            "migrate deploy (broken)",
            vec!["migrate", "deploy", "--migrations", local.to_str().unwrap(), "--database-url", &local_url],
            1,
        ),
        (
            "migrate status (after the failure, json)",
            vec![
                "migrate",
                "status",
                "--migrations",
                local.to_str().unwrap(),
                "--database-url",
                &local_url,
                "--output",
                "json",
            ],
            8,
        ),
    ] {
        let out = cluster.runway_command().args(&args).output().expect("run runway");
        assert_eq!(out.status.code(), Some(code), "{name}: {}", seen(&out));
        outputs.push((name.into(), out));
    }
    let wrong = format!("postgres://{ROLE}:{WRONG_PASSWORD}@{}:{}/local", pg.ip, pg.port);
    let query = format!("postgres://{ROLE}@{}:{}/local?password={WRONG_PASSWORD}", pg.ip, pg.port);
    for url in [&wrong, &query] {
        let out = cluster
            .runway_command()
            .args(["migrate", "status", "--migrations", local.to_str().unwrap(), "--database-url", url])
            .output()
            .expect("run runway");
        assert_eq!(out.status.code(), Some(3), "a refused login is unreachable: {}", seen(&out));
        outputs.push(("migrate status (wrong password)".into(), out));
    }

    // 5. An agent config with a syntax error on the line holding a password:
    // the error names the line without quoting it.
    let bad_config = cluster.path().join("bad-agent.toml");
    std::fs::write(
        &bad_config,
        format!(
            "name = \"db-9\"\nenvironment = \"{ENV}\"\ncoordinators = [\"http://127.0.0.1:1\"]\nroles = [\"db\"]\n\
             state_dir = \"/nonexistent\"\n[database]\nurl = \"{local_url}\" oops\n"
        ),
    )
    .expect("write bad config");
    let out = Command::new(bin("runway-agent")).arg("--config").arg(&bad_config).output().expect("run agent");
    assert!(!out.status.success() && seen(&out).contains("line 7"), "{}", seen(&out));
    outputs.push(("runway-agent (config that does not parse)".into(), out));
    std::fs::remove_file(&bad_config).expect("remove the bad config, which holds the password");

    // Stop the DB agent so its log is complete.
    db_agent.signal_and_wait("TERM", Duration::from_secs(10));

    // Everything the run wrote, and everything the CLI printed.
    // The CA's dir holds the private keys themselves: skipped, and each
    // key's body is a secret of its own.
    let pki = cluster.path().join("pki");
    let skip = [cluster.path().join("pg"), cluster.path().join("db-1-backups"), pki.clone()];
    let mut texts: Vec<(String, String)> = files_under(cluster.path(), &skip)
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n != "db-1.toml"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            (path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect();
    texts.push(("PostgreSQL's log".into(), pg.log()));
    texts.extend(outputs.iter().map(|(name, out)| (format!("runway {name}"), seen(out))));
    let logs: Vec<&String> =
        texts.iter().filter(|(name, _)| name.ends_with(".log")).map(|(name, _)| name).collect();
    for expected in ["coord-1.log", "coord-2.log", "app-1.log", "db-1.log", "moto.log", "etcd-0.log"] {
        assert!(logs.iter().any(|l| l.ends_with(expected)), "{expected} was not read: {logs:?}");
    }
    // etcd's data holds every rollout event as it was saved.
    let etcd_data: String = texts
        .iter()
        .filter(|(name, _)| name.contains("etcd-0-data"))
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join("\n");

    let key_bodies: Vec<String> = files_under(&pki, &[])
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "key"))
        .map(|path| {
            let pem = std::fs::read_to_string(&path).expect("read key");
            pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
        })
        .collect();
    assert!(key_bodies.len() >= 4, "the TLS cluster's private keys: {}", key_bodies.len());
    // A 40-character piece of each key is enough to find it anywhere.
    let key_pieces: Vec<&str> =
        key_bodies.iter().map(|body| &body[body.len() / 2 - 20..body.len() / 2 + 20]).collect();
    for secret in SECRETS.iter().copied().chain(key_pieces) {
        let found: Vec<&String> =
            texts.iter().filter(|(_, text)| text.contains(secret)).map(|(n, _)| n).collect();
        assert!(found.is_empty(), "secret {secret} found in {found:?}");
    }

    // The grep saw the run: each of these is in the same texts.
    let all: String = texts.iter().map(|(_, text)| text.as_str()).collect::<Vec<_>>().join("\n");
    let db_log = std::fs::read_to_string(cluster.path().join("db-1.log")).expect("db-1.log");
    for (marker, where_) in [
        ("20240111000000_broken_secret_marker", &all),
        ("NoSuchTable", &all),
        ("uploaded and verified", &all),
        ("password authentication failed", &all),
        (ROLE, &all),
        ("20240111000000_broken_secret_marker", &etcd_data),
        ("command failed", &db_log),
        ("20240111000000_broken_secret_marker", &db_log),
    ] {
        assert!(where_.contains(marker), "marker {marker:?} not found: the grep does not see the run");
    }
}
