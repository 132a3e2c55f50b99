//! Both daemons speak systemd's notify protocol: with `NOTIFY_SOCKET`
//! pointing at a unix datagram socket this test binds (what systemd does
//! for a `Type=notify` unit), a real coordinator and a real agent send
//! `READY=1` once they serve or have registered, `STATUS=` lines about
//! leadership and the link, `WATCHDOG=1` at half of `WATCHDOG_USEC`, and
//! `STOPPING=1` on SIGTERM. A coordinator whose main loop hangs (the
//! `RUNWAY_FAILPOINT_STALL_MAIN_LOOP_AFTER_MS` failpoint) stops pinging
//! while its gRPC server goes on: what systemd's watchdog is there to catch.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runway_tests::cluster::{Cluster, Options};
use runway_tests::process::wait_until;

/// `WATCHDOG_USEC` for both daemons: a ping every 200 ms.
const WATCHDOG_USEC: u64 = 400_000;
const PING_EVERY: Duration = Duration::from_millis(200);
/// The coordinator's main loop hangs this long after it starts.
const STALL_AFTER_MS: u64 = 6_000;

/// What arrived on one notify socket, each message with when it arrived.
struct NotifySocket {
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (messages, stop) = (Arc::clone(&messages), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        messages.lock().expect("messages").push((Instant::now(), text));
                    }
                }
            })
        };
        NotifySocket { messages, stop, reader: Some(reader) }
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.messages.lock().expect("messages").clone()
    }

    /// When the first message `matches` arrived, waiting up to `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, matches: impl Fn(&str) -> bool) -> (Instant, String) {
        wait_until(what, timeout, || self.all().into_iter().find(|(_, m)| matches(m)))
    }

    /// Arrival times of `WATCHDOG=1` pings.
    fn pings(&self) -> Vec<Instant> {
        self.all().into_iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(at, _)| at).collect()
    }

    fn statuses(&self) -> Vec<String> {
        self.all().into_iter().filter_map(|(_, m)| m.strip_prefix("STATUS=").map(str::to_owned)).collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The gaps between consecutive pings, sorted.
fn gaps(pings: &[Instant]) -> Vec<Duration> {
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    gaps
}

/// Asserts pings came at the configured rate: enough of them, and the
/// median gap within 25% of it.
fn assert_rate(who: &str, pings: &[Instant]) {
    assert!(pings.len() >= 5, "{who}: only {} watchdog pings", pings.len());
    let gaps = gaps(pings);
    let median = gaps[gaps.len() / 2];
    eprintln!("{who}: {} pings, median gap {median:?} (configured {PING_EVERY:?})", pings.len());
    assert!(
        median >= PING_EVERY * 3 / 4 && median <= PING_EVERY * 5 / 4,
        "{who}: pings every {median:?}, not every {PING_EVERY:?}: {gaps:?}"
    );
}

#[test]
fn both_daemons_report_readiness_status_watchdog_and_stopping() {
    let sockets = tempfile::tempdir().expect("temp dir");
    let coordinator_socket = sockets.path().join("coordinator.sock");
    let agent_socket = sockets.path().join("agent.sock");
    let coordinator = NotifySocket::bind(&coordinator_socket);
    let agent = NotifySocket::bind(&agent_socket);
    let env = |socket: &Path| {
        vec![
            ("NOTIFY_SOCKET".to_owned(), socket.display().to_string()),
            ("WATCHDOG_USEC".to_owned(), WATCHDOG_USEC.to_string()),
        ]
    };
    let mut coordinator_env = env(&coordinator_socket);
    coordinator_env
        .push(("RUNWAY_FAILPOINT_STALL_MAIN_LOOP_AFTER_MS".to_owned(), STALL_AFTER_MS.to_string()));
    let mut cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        db_host: false,
        coordinator_env,
        agent_env: env(&agent_socket),
        ..Options::default()
    });
    let coordinator_addr = cluster.coordinators[0].addr.clone();

    // The coordinator: ready once it serves, then leader.
    let (ready_at, _) =
        coordinator.wait_for("coordinator READY=1", Duration::from_secs(10), |m| m == "READY=1");
    coordinator.wait_for("coordinator STATUS=leader", Duration::from_secs(10), |m| {
        m.starts_with("STATUS=leader (token ")
    });
    // The agent: ready once registered with that leader, attached to it.
    agent.wait_for("agent READY=1", Duration::from_secs(10), |m| m == "READY=1");
    agent.wait_for("agent STATUS=attached", Duration::from_secs(10), |m| {
        m == format!("STATUS=attached to {coordinator_addr}")
    });
    let agent_log = cluster.apps[0].agent.log_text();
    assert!(agent_log.contains("registered"), "READY=1 before the agent registered:\n{agent_log}");

    // Pings at the configured rate from both, for a couple of seconds.
    std::thread::sleep(Duration::from_secs(2));
    assert_rate("agent", &agent.pings());
    let stall_at = ready_at + Duration::from_millis(STALL_AFTER_MS);
    let before_stall: Vec<Instant> = coordinator.pings().into_iter().filter(|at| *at < stall_at).collect();
    assert_rate("coordinator", &before_stall);

    // The stalled main loop: pings stop, the server still answers.
    let now = Instant::now();
    if now < stall_at + Duration::from_secs(1) {
        std::thread::sleep(stall_at + Duration::from_secs(1) - now);
    }
    let pings_then = coordinator.pings().len();
    std::thread::sleep(Duration::from_secs(2));
    let last_ping = *coordinator.pings().last().expect("pings");
    assert_eq!(coordinator.pings().len(), pings_then, "the coordinator pinged after its main loop stalled");
    assert!(last_ping.elapsed() >= Duration::from_secs(2), "last ping only {:?} ago", last_ping.elapsed());
    let agents = cluster.runway(&["agents", "--output", "json"]);
    assert!(agents.status.success(), "the stalled coordinator should still serve: {agents:?}");
    assert!(cluster.coordinators[0].proc.log_text().contains("FAILPOINT: the main loop hangs"));

    // SIGTERM: the coordinator says it is stopping; its agent reconnects.
    let exit = cluster.coordinators[0].proc.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(exit.is_some(), "the coordinator did not exit within 20 s of SIGTERM");
    coordinator.wait_for("coordinator STOPPING=1", Duration::from_secs(5), |m| m == "STOPPING=1");
    agent.wait_for("agent STATUS=reconnecting", Duration::from_secs(15), |m| {
        m.starts_with("STATUS=reconnecting: ")
    });

    // SIGTERM the agent: a drain begins, announced, and it exits cleanly.
    let exit = cluster.apps[0].agent.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(exit.is_some_and(|s| s.success()), "the agent did not exit cleanly: {exit:?}");
    agent.wait_for("agent STOPPING=1", Duration::from_secs(5), |m| m == "STOPPING=1");
    eprintln!("coordinator statuses: {:?}", coordinator.statuses());
    eprintln!("agent statuses: {:?}", agent.statuses());
}
