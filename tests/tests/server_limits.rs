//! A coordinator under a connection flood (real etcd, PostgreSQL, one
//! coordinator on mTLS, a DB agent and two app agents as processes).
//!
//! 1,000 TCP connections that send nothing and 1,000 that send the first
//! bytes of a TLS ClientHello and stall are opened against the
//! coordinator and held. While they are held: the agents stay attached,
//! a full rollout succeeds, and the coordinator's resident memory grows
//! by a bounded amount (printed). Then the per-address cap closes new
//! connections from a flooding address at once, and the handshake
//! deadline closes every flood connection by itself. Ten refused calls by
//! one operator leave one audit entry, not ten.
//!
//! Addresses: the flood comes from 127.0.0.2 to 127.0.0.5 (all loopback),
//! 500 connections each, under the default per-address cap of 512; the
//! agents and the CLI connect from 127.0.0.1, whose own cap the flood
//! does not touch. That is the point of a per-address cap: a flood from
//! some addresses cannot lock out peers at the others.
//!
//! `[server] handshake_timeout` is 30 s here (default 10 s) so the flood
//! is still held when the rollout ends; the test checks it was.

use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, ENV, Options, http_get};
use runway_tests::fixtures::SHOP;
use runway_tests::process::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const FLOOD_ADDRESSES: [&str; 4] = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
const PER_ADDRESS: usize = 500;
const DEFAULT_PER_PEER_CAP: usize = 512;

/// The first bytes of a TLS record carrying a ClientHello of 512 bytes,
/// and 4 of those bytes: the server waits for the rest.
const PARTIAL_CLIENT_HELLO: [u8; 9] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// `name{labels} value` from the coordinator's /metrics, summed over label sets that contain `labels`.
fn metric(cluster: &Cluster, name: &str, labels: &str) -> f64 {
    let coordinator = &cluster.coordinators[0];
    let port = coordinator.metrics.expect("metrics on");
    let (_, body) = http_get(&coordinator.host.ip, port, "/metrics").expect("GET /metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn attached(cluster: &Cluster) -> usize {
    let out = cluster.runway(&["agents", "--env", ENV, "--output", "json"]);
    assert!(out.status.success(), "runway agents: {}", String::from_utf8_lossy(&out.stderr));
    runway_tests::watch::json_lines(&out.stdout).len()
}

async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{ip}:0").parse().expect("address")).expect("bind a loopback source address");
    socket.connect(to).await.expect("connect to the coordinator")
}

/// Whether the peer closed `tcp` within `wait`.
async fn closed(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(wait, tcp.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// Lets this process hold a few thousand sockets.
fn raise_open_files() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = 8192u64.min(limit.maximum.unwrap_or(u64::MAX));
    if limit.current.is_some_and(|soft| soft < wanted) {
        setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: limit.maximum })
            .expect("raise the open-files limit");
    }
}

#[test]
fn two_thousand_idle_and_stalled_connections_leave_agents_attached_and_rollouts_running() {
    raise_open_files();
    let cluster = Cluster::start(Options {
        coordinators: 1,
        metrics: true,
        coordinator_toml: format!("[server]\nhandshake_timeout = \"{}s\"\n", HANDSHAKE_TIMEOUT.as_secs()),
        ..Options::default()
    });
    let coordinator = &cluster.coordinators[0];
    let pid = coordinator.proc.pid();
    let addr: std::net::SocketAddr =
        coordinator.addr.trim_start_matches("https://").parse().expect("coordinator address");
    let agents = attached(&cluster);
    assert_eq!(agents, 3);
    let rss_before = rss_kib(pid);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // The flood: half idle, half stalled mid-handshake.
    let flood_started = Instant::now();
    let mut flood: Vec<TcpStream> = rt.block_on(async {
        // One task per address, so the four connect side by side.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, ip) in FLOOD_ADDRESSES.iter().enumerate() {
            tasks.spawn(async move {
                let mut opened = Vec::new();
                for _ in 0..PER_ADDRESS {
                    let mut tcp = connect_from(ip, addr).await;
                    if i % 2 == 1 {
                        tcp.write_all(&PARTIAL_CLIENT_HELLO).await.expect("send a partial ClientHello");
                    }
                    opened.push(tcp);
                }
                opened
            });
        }
        tasks.join_all().await.into_iter().flatten().collect()
    });
    println!("opened {} flood connections in {:?}", flood.len(), flood_started.elapsed());
    wait_until("the coordinator to hold every flood connection", Duration::from_secs(10), || {
        (metric(&cluster, "runway_connections_open", "") >= flood.len() as f64).then_some(())
    });
    let rss_flooded = rss_kib(pid);

    // The per-address cap: more from a flooding address are closed at once.
    let (admitted, refused) = rt.block_on(async {
        let mut extra = Vec::new();
        for _ in 0..20 {
            extra.push(connect_from(FLOOD_ADDRESSES[0], addr).await);
        }
        let mut refused = 0;
        for tcp in &mut extra {
            if closed(tcp, Duration::from_millis(300)).await {
                refused += 1;
            }
        }
        (extra.len() - refused, refused)
    });
    assert_eq!(
        (admitted, refused),
        (DEFAULT_PER_PEER_CAP - PER_ADDRESS, 20 - (DEFAULT_PER_PEER_CAP - PER_ADDRESS))
    );
    assert!(metric(&cluster, "runway_connections_refused_total", "peer_cap") >= refused as f64);

    // While held: agents attached, a rollout runs through.
    assert_eq!(attached(&cluster), agents, "agents stayed attached");
    let rollout_started = Instant::now();
    let (out, events) = cluster.roll_out("v2", SHOP, &[]);
    assert!(
        out.status.success(),
        "rollout under the flood: {}\n{events:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(events.last().map(|e| e["kind"].clone()), Some("rollout_succeeded".into()));
    println!("rollout under the flood took {:?}", rollout_started.elapsed());
    let rss_after_rollout = rss_kib(pid);
    assert!(
        flood_started.elapsed() < HANDSHAKE_TIMEOUT,
        "the flood was closed by the deadline before the rollout ended; the test proves less than it says"
    );
    let open = metric(&cluster, "runway_connections_open", "");
    assert!(open >= flood.len() as f64, "the flood was held throughout: {open} open");

    // Refused calls do not fill etcd: one audit entry per caller and
    // action a minute, however many calls.
    let id = events.iter().find_map(|e| e["rollout_id"].as_str()).expect("rollout id").to_owned();
    for _ in 0..10 {
        let out = cluster.runway_as("viewer", &["rollout", "approve", &id]);
        assert!(!out.status.success(), "viewer may not approve");
    }
    let audit = cluster.runway(&["audit", "--env", ENV, "--since", "1h", "--output", "json"]);
    let recorded = runway_tests::watch::json_lines(&audit.stdout)
        .iter()
        .filter(|e| e["actor"] == "viewer" && e["action"] == "approve" && e["outcome"] == "refused")
        .count();
    assert_eq!(recorded, 1, "10 refused calls, one audit entry: {}", String::from_utf8_lossy(&audit.stdout));

    // The deadline: every flood connection is closed by the coordinator.
    rt.block_on(async {
        let deadline = flood_started + HANDSHAKE_TIMEOUT + Duration::from_secs(10);
        for tcp in &mut flood {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(closed(tcp, left).await, "a flood connection outlived the handshake deadline");
        }
    });
    println!(
        "the coordinator closed every flood connection {:?} after the flood began",
        flood_started.elapsed()
    );
    assert!(metric(&cluster, "runway_connections_refused_total", "handshake_timeout") >= flood.len() as f64);
    drop(flood);
    wait_until("the flood's slots to be given back", Duration::from_secs(10), || {
        (metric(&cluster, "runway_connections_open", "") < 50.0).then_some(())
    });
    let rss_end = rss_kib(pid);
    println!(
        "coordinator RSS: {rss_before} KiB before, {rss_flooded} KiB holding 2,000 connections, \
         {rss_after_rollout} KiB after a rollout under them, {rss_end} KiB after they were closed"
    );
    let growth = rss_after_rollout.saturating_sub(rss_before);
    assert!(growth < 64 * 1024, "holding 2,000 connections grew the coordinator by {growth} KiB");
    assert_eq!(attached(&cluster), agents, "agents still attached");
}
