//! A simulated fleet against real coordinators: what one leader costs per
//! attached agent, and how it copes when all of them act at once.
//!
//! Real etcd, two real coordinator processes (leader + follower, mTLS, the
//! coordinators' default lease TTL) and N simulated app agents plus one
//! simulated DB agent (see `runway_tests::fleet`), each with its own
//! connection to each coordinator and its own certificate, in child
//! processes of this binary (as many as the open-file limit needs).
//! Measurement starts once the fleet has settled: every agent attached and
//! holding its connection to the follower too. Measured, on the leader:
//!
//! - RSS per attached agent: (RSS with every agent attached − RSS before) / agents;
//! - CPU at idle with heartbeats flowing, over `--idle-secs`;
//! - a rollout whose preflight reaches every host (the DB agent then fails
//!   it, so the rollout ends there, nothing changed): per command, the time
//!   from the step's dispatch (its `step_started` event) to its result
//!   saved (the result event's time, stamped just before the write that
//!   saves it), and the fenced etcd transactions the step used (the
//!   leader's `runway_etcd_request_duration_seconds{op="put_fenced"}`),
//!   and the CPU each process on this machine used meanwhile. A CLI
//!   watches the rollout (`--watch --output json`); it and the thread of
//!   this benchmark that reads it run at the lowest priority;
//! - a leader SIGKILL: the time until every agent is attached to the new leader.
//!
//! The whole fleet shares this machine's two cores with what it measures;
//! real agents bring their own.
//!
//! `cargo build --release -p runway-coordinator -p runway-cli --bins &&
//!  cargo bench -p runway-tests --bench fleet -- --agents 10000 --heartbeat-secs 5 [--work-ms 0] [--idle-secs 20]`

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options, http_get};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::fleet::{
    Fleet, FleetOptions, SimAgent, connections_to, cpu_time, raise_fd_limit, rss_kib, serve_part_if_asked,
};
use runway_tests::process::wait_until;
use runway_tests::watch::Watch;
use serde_json::Value;

/// The simulated fleet allocates as the coordinator does: glibc's malloc
/// took a tenth of the fleet's CPU, CPU the coordinator under test shares.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The coordinator's default lease TTL (see `coordinator/src/config.rs`).
const LEASE_TTL_SECS: u64 = 5;

struct Args {
    agents: usize,
    work_ms: u64,
    idle_secs: u64,
    /// The coordinators' `heartbeat` in seconds (default 2, theirs): a large
    /// fleet sets it higher, since a session ends after three silent beats.
    heartbeat_secs: u64,
    insecure: bool,
}

fn args() -> Args {
    let mut parsed = Args { agents: 1000, work_ms: 0, idle_secs: 20, heartbeat_secs: 2, insecure: false };
    let mut args = runway_tests::bench::args().skip(1);
    let number = |v: Option<String>, flag: &str| -> u64 {
        v.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{flag} N"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => parsed.agents = number(args.next(), "--agents") as usize,
            "--work-ms" => parsed.work_ms = number(args.next(), "--work-ms"),
            "--idle-secs" => parsed.idle_secs = number(args.next(), "--idle-secs"),
            "--heartbeat-secs" => parsed.heartbeat_secs = number(args.next(), "--heartbeat-secs").max(1),
            "--insecure" => parsed.insecure = true,
            _ => {
                eprintln!(
                    "usage: cargo bench -p runway-tests --bench fleet -- [--agents N] [--work-ms MS] \
                     [--idle-secs S] [--heartbeat-secs S] [--insecure]   (defaults 1000, 0, 20, 2; --insecure: no mTLS)"
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// The leader's fenced etcd writes so far: how many, and their total time.
fn fenced_writes(cluster: &Cluster, leader: usize) -> (u64, Duration) {
    let c = &cluster.coordinators[leader];
    let port = c.metrics.expect("coordinators serve metrics");
    let (_, body) = http_get(&c.host.ip, port, "/metrics").expect("the leader's /metrics answers");
    let value = |name: &str| {
        let prefix = format!("runway_etcd_request_duration_seconds_{name}{{op=\"put_fenced\"}}");
        body.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("count") as u64, Duration::from_secs_f64(value("sum")))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    // This binary is also each process of the simulated fleet.
    serve_part_if_asked();
    let args = args();
    // A coordinator holds a socket per agent; each fleet process two per agent.
    let needed = args.agents as u64 + 200;
    let fds = raise_fd_limit(needed);
    assert!(fds >= needed, "{} agents need about {needed} open files; the limit is {fds}", args.agents);
    let parts = (2 * args.agents as u64 + 200).div_ceil(fds) as usize;

    let mut cluster = Cluster::start(Options {
        app_hosts: 0,
        db_host: false,
        lease_ttl_secs: LEASE_TTL_SECS,
        heartbeat_secs: args.heartbeat_secs,
        metrics: true,
        tls: !args.insecure,
        // Every simulated agent connects from 127.0.0.1: the caps must fit the fleet.
        coordinator_toml: format!(
            "[server]\nmax_connections = {needed}\nmax_connections_per_peer = {needed}\n"
        ),
        ..Options::default()
    });
    let leader = cluster.leader().expect("a leader");
    let pid = cluster.coordinators[leader].proc.pid();
    let coordinators: Vec<String> = cluster.coordinators.iter().map(|c| c.addr.clone()).collect();

    let mut agents: Vec<SimAgent> = (1..=args.agents)
        .map(|i| SimAgent { name: format!("sim-app-{i:05}"), roles: vec!["app".into()], fails: false })
        .collect();
    agents.push(SimAgent { name: "sim-db".into(), roles: vec!["db".into()], fails: true });
    let total = agents.len();
    let options = FleetOptions {
        coordinators,
        environment: ENV.into(),
        work: Duration::from_millis(args.work_ms),
        threads: (2 / parts).max(1),
    };
    let issuing = Instant::now();
    let prepared = Fleet::prepare(cluster.path(), &options, &agents, cluster.pki.as_ref(), parts);
    eprintln!("issued {total} agent certificates in {:.1} s", issuing.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss_kib(pid);
    let attaching = Instant::now();
    let fleet = prepared.start();
    wait_until("every simulated agent to attach", Duration::from_secs(60 + total as u64 / 50), || {
        (fleet.summary().attached() == total).then_some(())
    });
    let attach_secs = attaching.elapsed().as_secs_f64();
    // Settled: each agent also holds its connection to the follower (its
    // who-leads probe opens it three heartbeats after registering), so no
    // handshake wave falls into what is measured next.
    let ports: Vec<u16> = cluster
        .coordinators
        .iter()
        .map(|c| c.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("address with a port"))
        .collect();
    // Polled once a second: the kernel writes a line per socket.
    let settling = Instant::now();
    while !ports.iter().all(|port| connections_to(*port) >= total) {
        assert!(settling.elapsed() < Duration::from_secs(120), "agents never connected to every coordinator");
        std::thread::sleep(Duration::from_secs(1));
    }
    let settle_secs = attaching.elapsed().as_secs_f64() - attach_secs;
    let ended = || fleet.summary().sessions_ended;
    let ended_attaching = ended();
    // Let the attach burst's buffers settle before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let rss_after = rss_kib(pid);
    let per_agent = (rss_after.saturating_sub(rss_before)) as f64 / total as f64;
    eprintln!(
        "{total} agents attached in {attach_secs:.1} s, connected to every coordinator {settle_secs:.1} s later"
    );

    let cpu_before = cpu_time(pid);
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let idle_cpu = (cpu_time(pid) - cpu_before).as_secs_f64() / idle_started.elapsed().as_secs_f64() * 100.0;
    let rss_idle = rss_kib(pid);
    let ended_idle = ended() - ended_attaching;
    eprintln!("RSS per attached agent {per_agent:.1} KiB; idle CPU {idle_cpu:.1}% of one core");

    // One rollout; its preflight reaches every host.
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let dir = migrations.to_str().expect("UTF-8 path");
    let mut watch = Watch::start(
        &cluster,
        &["rollout", "start", "--env", ENV, "--migrations", dir, "--watch", "--output", "json"],
    );
    // The observer yields to what it observes: the CLI printing the events
    // and this thread reading them take only CPU that the coordinators,
    // etcd and the fleet leave over (an operator watches from elsewhere).
    let lowest = |pid: Option<rustix::process::Pid>| {
        rustix::process::setpriority_process(pid, 19).expect("lower the watcher's priority")
    };
    lowest(rustix::process::Pid::from_raw(watch.pid() as i32));
    lowest(None);
    let (mut writes_before, mut writes_after) = ((0, Duration::ZERO), (0, Duration::ZERO));
    let etcd_pid = cluster.etcd.members[0].pid();
    let follower_pid = cluster.coordinators[1 - leader].proc.pid();
    // What the step costs each process on this machine: the leader, etcd,
    // the simulated fleet, the follower, and the watcher (the CLI and this
    // benchmark, which reads its JSON).
    let watch_pid = watch.pid();
    let cpu_now = || {
        let fleet = fleet.pids().into_iter().map(cpu_time).sum::<Duration>();
        let watcher = cpu_time(watch_pid) + cpu_time(std::process::id());
        [cpu_time(pid), cpu_time(etcd_pid), fleet, cpu_time(follower_pid), watcher]
    };
    let step_cpu = cpu_now();
    let mut step_cpu_used = [Duration::ZERO; 5];
    while let Some(event) = watch.next(Duration::from_secs(600)) {
        let preflight = event["step"] == "preflight";
        if preflight && event["kind"] == "step_started" {
            // For a profiler attached from outside: who works now.
            eprintln!("preflight dispatched; leader pid {pid}, fleet pids {:?}", fleet.pids());
            writes_before = fenced_writes(&cluster, leader);
        }
        if preflight && (event["kind"] == "step_failed" || event["kind"] == "step_succeeded") {
            writes_after = fenced_writes(&cluster, leader);
            let now = cpu_now();
            step_cpu_used = std::array::from_fn(|i| now[i] - step_cpu[i]);
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (_, events, _) = watch.finish(Duration::from_secs(60));
    // Back to normal for the failover's clock (root may raise it again).
    let _ = rustix::process::setpriority_process(None, 0);
    let at = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["step"] == "preflight")
            .and_then(|e| e["unix_ms"].as_i64())
            .unwrap_or_else(|| panic!("no preflight {kind} event"))
    };
    let dispatched = at("step_started");
    let step_ended = events
        .iter()
        .find(|e| e["step"] == "preflight" && (e["kind"] == "step_failed" || e["kind"] == "step_succeeded"))
        .and_then(|e| e["unix_ms"].as_i64())
        .expect("the preflight ended");
    let is_result = |e: &&Value| {
        e["step"] == "preflight" && (e["kind"] == "command_succeeded" || e["kind"] == "command_failed")
    };
    let mut latencies: Vec<i64> = events
        .iter()
        .filter(is_result)
        .filter_map(|e| e["unix_ms"].as_i64())
        .map(|t| t - dispatched)
        .collect();
    latencies.sort_unstable();
    let step_events = events.iter().filter(|e| e["step"] == "preflight").count();
    assert_eq!(latencies.len(), total, "one saved result per host");
    eprintln!(
        "preflight: p99 {} ms from dispatch to result saved, {} fenced transactions",
        percentile(&latencies, 0.99),
        writes_after.0.saturating_sub(writes_before.0)
    );

    let ended_step = ended() - ended_attaching - ended_idle;

    // Failover: SIGKILL the leader; every agent must find the new one.
    let old_token = fleet.summary().max_token();
    let killed = Instant::now();
    cluster.coordinators[leader].proc.kill();
    let first = wait_until("a new leader to accept an agent", Duration::from_secs(60), || {
        (fleet.summary().max_token() > old_token).then(|| killed.elapsed())
    });
    let all = wait_until("every agent on the new leader", Duration::from_secs(120), || {
        let now = fleet.summary();
        (now.attached_with(now.max_token()) == total).then(|| killed.elapsed())
    });
    let new_leader = 1 - leader;
    let new_rss = rss_kib(cluster.coordinators[new_leader].proc.pid());

    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "fleet: {total} simulated agents ({} app + 1 db) in {parts} process(es), work {} ms, mTLS {}",
        args.agents, args.work_ms, !args.insecure
    );
    println!(
        "  attach: all {total} in {attach_secs:.1} s (connected to both coordinators {settle_secs:.1} s later); \
         leader RSS {} before, {} attached, {} after {} s idle",
        kib(rss_before),
        kib(rss_after),
        kib(rss_idle),
        args.idle_secs
    );
    println!(
        "  RSS per attached agent: {per_agent:.1} KiB (target <= 64 KiB: {})",
        verdict(per_agent <= 64.0)
    );
    println!(
        "  idle CPU with heartbeats every {} s: {idle_cpu:.1}% of one core over {} s (target <= 25%: {})",
        args.heartbeat_secs,
        args.idle_secs,
        verdict(idle_cpu <= 25.0)
    );
    println!(
        "  preflight to all {total}: dispatch to result saved p10 {} ms, p50 {} ms, p90 {} ms, p99 {} ms, max {} ms \
         (target p99 <= 2000 ms: {}); step saved as ended after {} ms",
        percentile(&latencies, 0.10),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        verdict(percentile(&latencies, 0.99) <= 2000),
        step_ended - dispatched,
    );
    println!(
        "  preflight: {step_events} events saved in {} fenced etcd transactions ({:.0} ms in etcd calls); CPU during \
         the step: leader {:.1} s, etcd {:.1} s, simulated fleet {:.1} s, follower {:.1} s, watcher {:.1} s",
        writes_after.0.saturating_sub(writes_before.0),
        (writes_after.1.saturating_sub(writes_before.1)).as_secs_f64() * 1000.0,
        step_cpu_used[0].as_secs_f64(),
        step_cpu_used[1].as_secs_f64(),
        step_cpu_used[2].as_secs_f64(),
        step_cpu_used[3].as_secs_f64(),
        step_cpu_used[4].as_secs_f64()
    );
    println!(
        "  leader SIGKILL (lease TTL {LEASE_TTL_SECS} s): first agent on the new leader after {:.1} s, all {total} after {:.1} s \
         (target <= 10 s: {}); new leader RSS {}",
        first.as_secs_f64(),
        all.as_secs_f64(),
        verdict(all <= Duration::from_secs(10)),
        kib(new_rss)
    );
    println!(
        "  agent sessions ended (refusals by the follower included): {ended_attaching} while attaching, \
         {ended_idle} at idle, {ended_step} during the rollout"
    );
    drop(fleet);
}
