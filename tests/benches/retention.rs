//! Retention under load: does etcd stay small after thousands of rollouts?
//!
//! Runs `--rollouts N` real rollouts (CLI → leader → DB agents →
//! PostgreSQL, real etcd) with `[retention] keep_rollouts = --keep`, pruning
//! every `--every` seconds, over `--envs` DB-only environments at once (one
//! DB agent and database each, so rollouts run side by side). Every rollout
//! carries a bundle of its own (the same migration, a comment of its own),
//! so bundles come and go as often as rollouts, and every rollout leaves
//! the same amount behind: what grows is what retention fails to delete. Every 250 rollouts it prints etcd's key count
//! (total and by kind) and database size (`dbSize` on disk, `dbSizeInUse`),
//! and ends with a table. `--no-compact` turns the leader's compaction off
//! (`[retention] compact = false`) to show what history alone does.
//!
//! `cargo build --release --workspace --bins && nice -n 10 cargo bench -p runway-tests --bench retention -- --rollouts 2000 --keep 100`
//! (the bench starts the binaries next to it: `target/release`)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::write_migrations;
use runway_tests::process::{Proc, bin, wait_until};

const USAGE: &str = "usage: cargo bench -p runway-tests --bench retention -- [--rollouts N] [--keep K] \
                     [--keep-audit A] [--envs E] [--every SECS] [--sample-every N] [--no-compact]";

struct Args {
    rollouts: usize,
    keep: usize,
    /// `[retention] keep_audit_entries` (default: two per kept rollout,
    /// what a rollout writes).
    keep_audit: Option<usize>,
    envs: usize,
    every_secs: u64,
    sample_every: usize,
    compact: bool,
}

fn args() -> Args {
    let mut parsed = Args {
        rollouts: 2000,
        keep: 100,
        keep_audit: None,
        envs: 4,
        every_secs: 2,
        sample_every: 250,
        compact: true,
    };
    let mut args = runway_tests::bench::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rollouts" => parsed.rollouts = number(&mut args, "--rollouts"),
            "--keep" => parsed.keep = number(&mut args, "--keep"),
            "--keep-audit" => parsed.keep_audit = Some(number(&mut args, "--keep-audit")),
            "--envs" => parsed.envs = number(&mut args, "--envs"),
            "--every" => parsed.every_secs = number(&mut args, "--every") as u64,
            "--sample-every" => parsed.sample_every = number(&mut args, "--sample-every"),
            "--no-compact" => parsed.compact = false,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// The number after `flag`; exits 2 with the usage when there is none.
fn number(args: &mut impl Iterator<Item = String>, flag: &str) -> usize {
    args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or_else(|| {
        eprintln!("{flag} takes a number ≥ 1\n{USAGE}");
        std::process::exit(2)
    })
}

/// etcd as one sample saw it.
struct Sample {
    rollouts: usize,
    secs: f64,
    keys: u64,
    kept_rollouts: u64,
    events: u64,
    bundles: u64,
    audit: u64,
    db_size: u64,
    db_in_use: u64,
}

impl Sample {
    fn take(cluster: &Cluster, rollouts: usize, started: Instant) -> Sample {
        let etcd = &cluster.etcd;
        let (db_size, db_in_use) = etcd.db_size();
        Sample {
            rollouts,
            secs: started.elapsed().as_secs_f64(),
            keys: etcd.count("/runway/"),
            kept_rollouts: etcd.count("/runway/rollouts/"),
            events: etcd.count("/runway/events/"),
            bundles: etcd.count("/runway/bundles/"),
            audit: etcd.count("/runway/audit/"),
            db_size,
            db_in_use,
        }
    }

    fn row(&self) -> String {
        format!(
            "{:>8} {:>7.0} {:>7} {:>8} {:>7} {:>8} {:>6} {:>9.1} {:>10.1}",
            self.rollouts,
            self.secs,
            self.keys,
            self.kept_rollouts,
            self.events,
            self.bundles,
            self.audit,
            mib(self.db_size),
            mib(self.db_in_use)
        )
    }
}

const HEADER: &str = "rollouts  time s    keys rollouts  events  bundles  audit  dbSize MiB  inUse MiB";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The environments: the cluster's own (`staging`, its DB agent started by
/// the harness) and `bench-2…` with agents started here.
fn environments(count: usize) -> Vec<String> {
    std::iter::once(ENV.to_owned()).chain((2..=count).map(|i| format!("bench-{i}"))).collect()
}

/// A DB agent for `environment`, on a database of its own.
fn start_db_agent(cluster: &Cluster, environment: &str) -> Proc {
    let name = format!("db-{environment}");
    let database = environment.replace('-', "_");
    let url = cluster.pg.create_database(&database);
    let state_dir = cluster.path().join(format!("{name}-state"));
    let backup_dir = cluster.path().join(format!("{name}-backups"));
    let config = cluster.path().join(format!("{name}.toml"));
    let coordinators: Vec<String> = cluster.coordinators.iter().map(|c| format!("{:?}", c.addr)).collect();
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nenvironment = \"{environment}\"\ncoordinators = [{}]\nroles = [\"db\"]\n\
             state_dir = {:?}\nheartbeat = \"1s\"\n[database]\nurl = \"{url}\"\n[backup]\ndir = {:?}\n\
             pg_bin_dir = \"{}\"\n{}",
            coordinators.join(", "),
            state_dir.display().to_string(),
            backup_dir.display().to_string(),
            runway_tests::postgres::PG_BIN,
            cluster.agent_tls_toml(environment, &name),
        ),
    )
    .expect("write agent config");
    let mut command = std::process::Command::new(bin("runway-agent"));
    command.arg("--config").arg(&config);
    Proc::spawn(&name, &mut command, cluster.path())
}

/// Rollout `n` of `environment`: the same one migration every time (applied
/// by the environment's first rollout) and a lock file with a comment of
/// its own, so
/// every rollout has a bundle (digest) of its own while records, events and
/// bundles stay the same size from the first rollout to the last.
fn roll_out(cluster: &Cluster, dir: &Path, environment: &str, n: usize) {
    let migrations = dir.join(format!("r{n}"));
    write_migrations(&migrations, &[("20250101000000_init", "CREATE TABLE \"Bench\" (\"id\" INTEGER);\n")]);
    // The lock file travels in the bundle (notes next to a migration do not).
    let lock = migrations.join("migration_lock.toml");
    std::fs::write(lock, format!("# released by rollout {n}\nprovider = \"postgresql\"\n"))
        .expect("write the lock file");
    let path = migrations.to_str().expect("temp paths are UTF-8");
    let out = cluster.runway(&["rollout", "start", "--env", environment, "--migrations", path, "--watch"]);
    assert!(
        out.status.success(),
        "rollout {n} in {environment}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&migrations);
}

fn main() {
    let args = args();
    let envs = environments(args.envs);
    let extra_envs: String =
        envs[1..].iter().map(|e| runway_tests::pki::environments_toml(&[e], "")).collect();
    let keep_audit = args.keep_audit.unwrap_or(2 * args.keep);
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 0,
        tls: false,
        coordinator_toml: format!(
            "[retention]\nkeep_rollouts = {}\nkeep_audit_entries = {keep_audit}\nevery = \"{}s\"\ncompact = {}\n{extra_envs}",
            args.keep, args.every_secs, args.compact
        ),
        ..Options::default()
    });
    let _agents: Vec<Proc> = envs[1..].iter().map(|e| start_db_agent(&cluster, e)).collect();
    wait_until("every DB agent to register", Duration::from_secs(30), || {
        let out = cluster.runway(&["agents", "--output", "json"]);
        (String::from_utf8_lossy(&out.stdout).lines().count() == envs.len()).then_some(())
    });
    println!(
        "{} rollouts over {} environments, keep_rollouts = {}, keep_audit_entries = {keep_audit}, every = {}s, compact = {}",
        args.rollouts,
        envs.len(),
        args.keep,
        args.every_secs,
        args.compact
    );
    println!("{HEADER}");

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut samples = vec![Sample::take(&cluster, 0, started)];
    println!("{}", samples[0].row());
    std::thread::scope(|scope| {
        for environment in &envs {
            let (cluster, next, done) = (&cluster, Arc::clone(&next), Arc::clone(&done));
            let dir = cluster.path().join(format!("bundles-{environment}"));
            scope.spawn(move || {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= args.rollouts {
                        return;
                    }
                    roll_out(cluster, &dir, environment, n);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let mut checkpoint = args.sample_every;
        while checkpoint <= args.rollouts {
            if done.load(Ordering::SeqCst) >= checkpoint {
                let sample = Sample::take(&cluster, checkpoint, started);
                println!("{}", sample.row());
                samples.push(sample);
                checkpoint += args.sample_every;
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    // Two more prunes (the second compacts what the first deleted).
    std::thread::sleep(Duration::from_secs(2 * args.every_secs + 1));
    let settled = Sample::take(&cluster, args.rollouts, started);

    println!("\n{HEADER}");
    for sample in &samples {
        println!("{}", sample.row());
    }
    println!("{}   (after two more prunes)", settled.row());
    let per_rollout = started.elapsed().as_secs_f64() / args.rollouts as f64;
    println!(
        "\n{} rollouts in {:.0} s ({:.2} s each over {} environments); etcd keeps {} rollouts, {} event keys, \
         {} bundle keys; {} audit entries; dbSize {:.1} MiB, in use {:.1} MiB",
        args.rollouts,
        started.elapsed().as_secs_f64(),
        per_rollout,
        envs.len(),
        settled.kept_rollouts,
        settled.events,
        settled.bundles,
        settled.audit,
        mib(settled.db_size),
        mib(settled.db_in_use)
    );
}
