//! Network partitions between hosts: every etcd member, coordinator, agent
//! and PostgreSQL in a network namespace of its own, links cut with
//! iptables inside the namespaces (see `runway_tests::netns`).

use std::time::{Duration, Instant};

use runway_tests::checks::{assert_complete_stream, assert_exactly_once};
use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, write_migrations};
use runway_tests::process::{now_ms, wait_until};
use runway_tests::watch::Watch;

fn env(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_owned(), value.to_owned())]
}

fn start_args(migrations: &str, watch: bool) -> Vec<&str> {
    let mut args =
        vec!["rollout", "start", "--env", "staging", "--migrations", migrations, "--app-version", "v2"];
    if watch {
        args.push("--watch");
    }
    args.extend(["--output", "json", "--leader-timeout", "60"]);
    args
}

/// The leader loses etcd (not the agents) while the backup runs: it stops
/// dispatching within its renew deadline, a follower takes over, and the
/// rollout completes with everything run once. Three etcd members.
#[test]
fn a_leader_cut_off_from_etcd_steps_down_and_a_follower_finishes() {
    if !runway_tests::netns::available() {
        return;
    }
    let mut cluster = Cluster::start(Options {
        netns: true,
        etcd_members: 3,
        app_hosts: 1,
        lease_ttl_secs: 3,
        agent_env: env("RUNWAY_FAILPOINT_HOLD_MS", "3000"),
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let mut watch = Watch::start(&cluster, &start_args(migrations.to_str().unwrap(), true));

    let mut cut: Option<(usize, i64)> = None;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if cut.is_none() && event["kind"] == "progress" && event["step"] == "backup" {
            let leader = cluster.leader().expect("a leader");
            for member in &cluster.etcd.hosts {
                cluster.coordinators[leader].host.cut(member);
            }
            eprintln!("cut {} off from etcd", cluster.coordinators[leader].name);
            cut = Some((leader, now_ms()));
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    let (old, cut_at) = cut.expect("the backup step streamed progress");
    assert!(status.success(), "rollout did not succeed: {stderr}\n{events:#?}");
    assert_complete_stream(&events);
    assert_exactly_once(&cluster, SHOP);

    let old_leader = &mut cluster.coordinators[old];
    let log = old_leader.proc.log_text();
    assert!(log.contains("stepping down"), "the cut-off leader did not step down:\n{log}");
    // It stopped dispatching: nothing it issued started after its lease
    // (3 s) could have expired; the rest came from the new leader.
    let name = old_leader.name.clone();
    let journals = cluster.journals();
    let late: Vec<_> = journals
        .iter()
        .filter(|(_, e)| {
            e["issued_by"] == name.as_str() && e["started_unix_ms"].as_i64().unwrap() > cut_at + 3000
        })
        .collect();
    assert!(late.is_empty(), "the deposed leader dispatched after losing its lease: {late:#?}");
    assert!(
        journals.iter().any(|(_, e)| e["issued_by"] != name.as_str()),
        "no command came from the new leader"
    );
}

/// A deposed leader that does not know it (a failpoint keeps it acting
/// after its lease is lost, as a paused process would): once agents have
/// seen the new leader's token they refuse it, and nothing it sends runs.
#[test]
fn agents_refuse_a_deposed_leader_by_its_fencing_token() {
    if !runway_tests::netns::available() {
        return;
    }
    let cluster = with_a_leader_blind_to_lease_loss("4000");
    let id = start_rollout(&cluster);

    // While the backup is held on the DB agent, cut the leader off from
    // etcd and from the agents.
    let old_token = wait_until("the backup to run", Duration::from_secs(60), || {
        cluster.journals().into_iter().find(|(_, e)| e["action"] == "backup" && e["state"] == "running")
    })
    .1["token"]
        .as_u64()
        .unwrap();
    let old = cluster.leader().expect("a leader");
    let new = 1 - old;
    let (old_host, new_host) =
        (cluster.coordinators[old].host.clone(), cluster.coordinators[new].host.clone());
    let agents = [cluster.db.as_ref().unwrap().host.clone(), cluster.apps[0].host.clone()];
    for peer in cluster.etcd.hosts.iter().chain(&agents) {
        old_host.cut(peer);
    }
    let cut_at = now_ms();

    // The follower takes over and every agent learns its token.
    let state_dirs = [cluster.db.as_ref().unwrap().state_dir.clone(), cluster.apps[0].state_dir.clone()];
    let highest = |dir: &std::path::Path| -> u64 {
        std::fs::read(dir.join("journal.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|journal| journal["highest_token"].as_u64())
            .unwrap_or(0)
    };
    wait_until("every agent to see the new leader's token", Duration::from_secs(30), || {
        state_dirs.iter().all(|dir| highest(dir) > old_token).then_some(())
    });

    // Now the agents can reach only the deposed leader, which still
    // thinks it leads. They must refuse it.
    old_host.heal();
    for member in &cluster.etcd.hosts {
        old_host.cut(member);
    }
    for agent in &agents {
        new_host.cut(agent);
    }
    let db_log = || cluster.db.as_ref().unwrap().agent.log_text();
    wait_until("the DB agent to refuse the deposed leader", Duration::from_secs(20), || {
        db_log().contains("not taking commands from it").then_some(())
    });
    new_host.heal();

    let state = wait_for_end(&cluster, new, &id);
    assert_eq!(state, "succeeded", "{:#}\n{}", show(&cluster, new, &id), db_log());

    // Nothing the deposed leader sent after the cut ran anywhere.
    let late: Vec<_> = cluster
        .journals()
        .into_iter()
        .filter(|(_, e)| {
            e["token"].as_u64() == Some(old_token) && e["started_unix_ms"].as_i64().unwrap() > cut_at
        })
        .collect();
    assert!(late.is_empty(), "commands of the deposed leader ran: {late:#?}");
    assert_complete_stream(&events(&cluster, new, &id));
    assert_exactly_once(&cluster, SHOP);
}

/// A deposed leader that does not know it keeps the agents' streams (only
/// its link to etcd is cut). The agents ask the other coordinator who
/// leads, see a newer token and move, and the rollout completes.
#[test]
fn agents_leave_a_deposed_leader_that_still_holds_their_streams() {
    if !runway_tests::netns::available() {
        return;
    }
    let cluster = with_a_leader_blind_to_lease_loss("3000");
    let id = start_rollout(&cluster);
    wait_until("the backup to run", Duration::from_secs(60), || {
        cluster.journals().into_iter().find(|(_, e)| e["action"] == "backup" && e["state"] == "running")
    });
    let old = cluster.leader().expect("a leader");
    let new = 1 - old;
    for member in &cluster.etcd.hosts {
        cluster.coordinators[old].host.cut(member);
    }

    let state = wait_for_end(&cluster, new, &id);
    let db_log = cluster.db.as_ref().unwrap().agent.log_text();
    assert_eq!(state, "succeeded", "{:#}\n{db_log}", show(&cluster, new, &id));
    assert!(
        db_log.contains("reports a newer leader"),
        "the DB agent did not notice the newer leader:\n{db_log}"
    );
    assert_complete_stream(&events(&cluster, new, &id));
    assert_exactly_once(&cluster, SHOP);
}

/// Every process in its own namespace; coordinators that keep acting as
/// leader after losing their lease (failpoint), and agents that hold every
/// result `hold_ms` so a step can be caught while it runs.
fn with_a_leader_blind_to_lease_loss(hold_ms: &str) -> Cluster {
    Cluster::start(Options {
        netns: true,
        app_hosts: 1,
        lease_ttl_secs: 3,
        coordinator_env: env("RUNWAY_FAILPOINT_IGNORE_LEASE_LOSS", "1"),
        agent_env: env("RUNWAY_FAILPOINT_HOLD_MS", hold_ms),
        ..Options::default()
    })
}

/// Starts a rollout of `SHOP` without watching it; returns its id.
fn start_rollout(cluster: &Cluster) -> String {
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&start_args(migrations.to_str().unwrap(), false));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rollout: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rollout JSON");
    rollout["id"].as_str().expect("rollout id").to_owned()
}

/// `runway ARGS` against coordinator `i` alone.
fn runway_via(cluster: &Cluster, i: usize, args: &[&str]) -> std::process::Output {
    cluster
        .runway_command()
        .env("RUNWAY_COORDINATOR", &cluster.coordinators[i].addr)
        .args(args)
        .output()
        .unwrap()
}

fn show(cluster: &Cluster, i: usize, id: &str) -> serde_json::Value {
    let out = runway_via(cluster, i, &["rollout", "show", id, "--output", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Waits for the rollout's terminal state, asking coordinator `i`.
fn wait_for_end(cluster: &Cluster, i: usize, id: &str) -> String {
    wait_until("the rollout to end", Duration::from_secs(90), || {
        let r = show(cluster, i, id);
        r["state"].as_str().filter(|s| ["succeeded", "failed", "cancelled"].contains(s)).map(str::to_owned)
    })
}

/// Every event of the rollout, from coordinator `i`.
fn events(cluster: &Cluster, i: usize, id: &str) -> Vec<serde_json::Value> {
    let out = runway_via(cluster, i, &["rollout", "watch", id, "--output", "json"]);
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The DB agent loses both coordinators while a long migration runs; when
/// the link heals, the finished result reaches the leader and nothing ran
/// twice.
#[test]
fn an_agent_cut_off_during_a_long_command_delivers_its_result_once() {
    if !runway_tests::netns::available() {
        return;
    }
    const SLOW: &str = "20240104000000_slow";
    let mut history = SHOP.to_vec();
    history.push((SLOW, "CREATE TABLE \"SlowMarker\" (id int);\nSELECT pg_sleep(5);\n"));
    let cluster = Cluster::start(Options { netns: true, app_hosts: 1, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, &history);
    let mut watch = Watch::start(&cluster, &start_args(migrations.to_str().unwrap(), true));

    let db = cluster.db.as_ref().unwrap();
    let applying = format!("applying {SLOW}");
    let mut healed_at = None;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if healed_at.is_none() && event["message"].as_str().is_some_and(|m| m.starts_with(&applying)) {
            for c in &cluster.coordinators {
                db.host.cut(&c.host);
            }
            // Longer than the three missed heartbeats that end a session,
            // long enough for the migration to finish while cut off.
            std::thread::sleep(Duration::from_secs(7));
            db.host.heal();
            healed_at = Some(Instant::now());
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(healed_at.is_some(), "the slow migration never started");
    assert!(status.success(), "rollout did not succeed: {stderr}\n{events:#?}");
    assert_complete_stream(&events);
    assert_exactly_once(&cluster, &history);
    let log = db.agent.log_text();
    assert!(
        log.contains("went silent") || log.contains("closed"),
        "the agent never lost its session:\n{log}"
    );
}
