//! The nemesis: faults by kind, chosen by a seeded generator, each undone
//! before the next (a stopped process continued, a cut healed, an etcd
//! member started again), so the cluster is whole when the soak ends.

use std::collections::BTreeMap;
use std::time::Instant;

use super::rng::Rng;
use crate::cluster::Cluster;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL the leader coordinator and start it again at once.
    KillLeader,
    /// SIGSTOP an agent (DB or app) for 1–5 s, then SIGCONT.
    StopAgent,
    /// SIGKILL the DB agent and start it again.
    RestartDbAgent,
    /// SIGKILL one etcd member for 1–4 s, then start it again (quorum kept).
    RestartEtcdMember,
    /// SIGKILL two of three etcd members for 1–3 s (quorum lost), then
    /// start both again.
    LoseEtcdQuorum,
    /// Cut a link with iptables for 2–6 s, then heal: the leader from
    /// every etcd member, or an agent from every coordinator.
    CutLink,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "SIGKILL+restart leader",
            Fault::StopAgent => "SIGSTOP/SIGCONT agent",
            Fault::RestartDbAgent => "restart DB agent",
            Fault::RestartEtcdMember => "restart etcd member (quorum kept)",
            Fault::LoseEtcdQuorum => "stop 2 of 3 etcd members (quorum lost)",
            Fault::CutLink => "cut link (iptables)",
        }
    }
}

/// Faults injected, by kind, and notes on faults skipped.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub injected: BTreeMap<&'static str, u64>,
    pub skipped: BTreeMap<String, u64>,
}

/// Injects faults of `kinds` until `deadline`, one every `pause` (a
/// random time in that range), then returns what it did.
pub fn run(
    cluster: &mut Cluster,
    kinds: &[Fault],
    seed: u64,
    pause: (u64, u64),
    deadline: Instant,
) -> FaultLog {
    let mut rng = Rng::new(seed);
    let mut log = FaultLog::default();
    loop {
        let wait = rng.millis(pause.0, pause.1);
        if Instant::now() + wait >= deadline || kinds.is_empty() {
            break;
        }
        std::thread::sleep(wait);
        let fault = *rng.pick(kinds);
        match inject(cluster, fault, &mut rng) {
            Ok(what) => {
                eprintln!("[nemesis] {}: {what}", fault.name());
                *log.injected.entry(fault.name()).or_default() += 1;
            }
            Err(why) => *log.skipped.entry(format!("{}: {why}", fault.name())).or_default() += 1,
        }
    }
    log
}

fn inject(cluster: &mut Cluster, fault: Fault, rng: &mut Rng) -> Result<String, &'static str> {
    match fault {
        Fault::KillLeader => {
            let leader = cluster.leader().ok_or("no leader")?;
            cluster.restart_coordinator(leader);
            Ok(cluster.coordinators[leader].name.clone())
        }
        Fault::StopAgent => {
            let apps = cluster.apps.len();
            let target = rng.below(apps as u64 + 1) as usize;
            let down = rng.millis(1000, 5000);
            let proc = match target {
                0 => &cluster.db.as_ref().ok_or("no DB agent")?.agent,
                i => &cluster.apps[i - 1].agent,
            };
            proc.signal("STOP");
            std::thread::sleep(down);
            proc.signal("CONT");
            Ok(format!("{} for {down:?}", proc.name))
        }
        Fault::RestartDbAgent => {
            cluster.db.as_ref().ok_or("no DB agent")?;
            cluster.restart_db_agent();
            Ok("db-1".into())
        }
        Fault::RestartEtcdMember => {
            let members = cluster.etcd.members.len();
            if members < 3 {
                return Err("needs 3 etcd members");
            }
            let i = rng.below(members as u64) as usize;
            let down = rng.millis(1000, 4000);
            cluster.etcd.restart_member(i, down);
            Ok(format!("etcd-{i} away {down:?}"))
        }
        Fault::LoseEtcdQuorum => {
            let members = cluster.etcd.members.len();
            if members < 3 {
                return Err("needs 3 etcd members");
            }
            let keep = rng.below(members as u64) as usize;
            let down = rng.millis(1000, 3000);
            let stopped: Vec<usize> = (0..members).filter(|&i| i != keep).collect();
            for &i in &stopped {
                cluster.etcd.stop_member(i);
            }
            std::thread::sleep(down);
            for &i in &stopped {
                cluster.etcd.start_member(i);
            }
            Ok(format!("etcd-{stopped:?} away {down:?}"))
        }
        Fault::CutLink => cut_link(cluster, rng),
    }
}

fn cut_link(cluster: &mut Cluster, rng: &mut Rng) -> Result<String, &'static str> {
    if cluster.net.is_none() {
        return Err("needs network namespaces");
    }
    let down = rng.millis(2000, 6000);
    let (host, peers, what) = if rng.chance(50) {
        let leader = cluster.leader().ok_or("no leader")?;
        let c = &cluster.coordinators[leader];
        (c.host.clone(), cluster.etcd.hosts.clone(), format!("{} from etcd", c.name))
    } else {
        let target = rng.below(cluster.apps.len() as u64 + 1) as usize;
        let (host, name) = match target {
            0 => (cluster.db.as_ref().ok_or("no DB agent")?.host.clone(), "db-1".to_owned()),
            i => (cluster.apps[i - 1].host.clone(), cluster.apps[i - 1].name.clone()),
        };
        let peers = cluster.coordinators.iter().map(|c| c.host.clone()).collect();
        (host, peers, format!("{name} from every coordinator"))
    };
    for peer in &peers {
        host.cut(peer);
    }
    std::thread::sleep(down);
    host.heal();
    Ok(format!("{what} for {down:?}"))
}

/// A pause between faults that a test can pass as `pause`.
pub const CI_PAUSE: (u64, u64) = (4000, 9000);
