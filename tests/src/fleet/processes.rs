//! The simulated fleet split over child processes.
//!
//! Each simulated agent keeps a connection to every coordinator, as the
//! real agent does, so ten thousand agents against two coordinators hold
//! twenty thousand sockets: more than one process may open here (the hard
//! `RLIMIT_NOFILE` is 20,000 and cannot be raised without
//! `CAP_SYS_RESOURCE`). So the fleet runs as `parts` children of the
//! benchmark binary itself, each a [`LocalFleet`] over its share of the
//! agents. A child reads its share from a JSON file named in
//! `RUNWAY_FLEET_PART`, prints a [`Summary`] line every 100 ms, and exits
//! when its stdin closes (the benchmark ended or died).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_identity::tls::{Security, TlsFiles};
use serde_json::{Value, json};

use super::{FleetOptions, LocalFleet, SimAgent};
use crate::pki::Pki;

/// The environment variable that makes the benchmark binary a fleet part.
const PART_ENV: &str = "RUNWAY_FLEET_PART";

/// How often a part reports.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// A fleet's state at one moment, summed over its parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Agents by the fencing token of the leader they are registered with
    /// (0: not attached).
    pub tokens: BTreeMap<u64, usize>,
    /// Commands answered with a result (re-sent results included).
    pub results: usize,
    /// Sessions that ended (any reason, refusals by followers included).
    pub sessions_ended: usize,
}

impl Summary {
    /// Agents attached now to a leader with fencing token `token`.
    pub fn attached_with(&self, token: u64) -> usize {
        self.tokens.get(&token).copied().unwrap_or(0)
    }

    /// Agents attached now, to any coordinator.
    pub fn attached(&self) -> usize {
        self.tokens.iter().filter(|(token, _)| **token != 0).map(|(_, n)| n).sum()
    }

    /// The highest fencing token any agent is attached with.
    pub fn max_token(&self) -> u64 {
        self.tokens.keys().copied().max().unwrap_or(0)
    }

    fn add(&mut self, other: &Summary) {
        for (token, n) in &other.tokens {
            *self.tokens.entry(*token).or_default() += n;
        }
        self.results += other.results;
        self.sessions_ended += other.sessions_ended;
    }

    fn to_json(&self) -> Value {
        let tokens: Vec<[u64; 2]> = self.tokens.iter().map(|(t, n)| [*t, *n as u64]).collect();
        json!({ "tokens": tokens, "results": self.results, "sessions_ended": self.sessions_ended })
    }

    fn from_json(line: &str) -> Option<Summary> {
        let v: Value = serde_json::from_str(line).ok()?;
        let tokens = v["tokens"]
            .as_array()?
            .iter()
            .map(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()? as usize)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Summary {
            tokens,
            results: v["results"].as_u64()? as usize,
            sessions_ended: v["sessions_ended"].as_u64()? as usize,
        })
    }
}

/// One child process and the last summary it printed.
struct Part {
    child: Child,
    latest: Arc<Mutex<Summary>>,
}

/// A running simulated fleet in child processes; dropping it stops them.
pub struct Fleet {
    parts: Vec<Part>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for part in &mut self.parts {
            let _ = part.child.kill();
            let _ = part.child.wait();
        }
    }
}

/// A fleet split into parts, each agent's certificate issued, not started.
pub struct Prepared {
    specs: Vec<PathBuf>,
}

impl Prepared {
    /// Starts each part as a child process of this binary (which must call
    /// [`serve_part_if_asked`] first thing).
    pub fn start(&self) -> Fleet {
        let exe = std::env::current_exe().expect("the benchmark binary's path");
        Fleet { parts: self.specs.iter().map(|spec| start_part(&exe, spec)).collect() }
    }
}

impl Fleet {
    /// Splits `agents` evenly into `parts` and issues each agent its own
    /// certificate from `pki` (none: insecure); `dir` holds the parts' specs.
    pub fn prepare(
        dir: &Path,
        options: &FleetOptions,
        agents: &[SimAgent],
        pki: Option<&Pki>,
        parts: usize,
    ) -> Prepared {
        let per_part = agents.len().div_ceil(parts.max(1)).max(1);
        let specs = agents
            .chunks(per_part)
            .enumerate()
            .map(|(i, share)| {
                let spec = dir.join(format!("fleet-part-{i}.json"));
                let json = spec_json(options, share, pki).to_string();
                std::fs::write(&spec, json).expect("write a fleet part's spec");
                spec
            })
            .collect();
        Prepared { specs }
    }

    /// The whole fleet's last reported state.
    pub fn summary(&self) -> Summary {
        let mut total = Summary::default();
        for part in &self.parts {
            total.add(&part.latest.lock().expect("summary lock"));
        }
        total
    }

    /// The children's process ids (to measure their CPU).
    pub fn pids(&self) -> Vec<u32> {
        self.parts.iter().map(|p| p.child.id()).collect()
    }
}

fn spec_json(options: &FleetOptions, agents: &[SimAgent], pki: Option<&Pki>) -> Value {
    let agents: Vec<Value> = agents
        .iter()
        .map(|a| {
            let tls = pki.map(|pki| {
                let paths = pki.agent(&options.environment, &a.name);
                json!({ "ca": paths.ca, "cert": paths.cert, "key": paths.key })
            });
            json!({ "name": a.name, "roles": a.roles, "fails": a.fails, "tls": tls })
        })
        .collect();
    json!({
        "coordinators": options.coordinators,
        "environment": options.environment,
        "work_ms": options.work.as_millis() as u64,
        "threads": options.threads,
        "agents": agents,
    })
}

fn start_part(exe: &Path, spec: &Path) -> Part {
    let mut child = Command::new(exe)
        .env(PART_ENV, spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a fleet part");
    let stdout = child.stdout.take().expect("piped stdout");
    let latest: Arc<Mutex<Summary>> = Arc::default();
    let writer = Arc::clone(&latest);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(summary) = Summary::from_json(&line) {
                *writer.lock().expect("summary lock") = summary;
            }
        }
    });
    Part { child, latest }
}

/// In a child started by [`Fleet::start`]: runs its share of the fleet,
/// reporting, until stdin closes, then exits. Elsewhere: returns at once.
pub fn serve_part_if_asked() {
    let Some(spec) = std::env::var_os(PART_ENV) else { return };
    let spec: Value = serde_json::from_slice(&std::fs::read(&spec).expect("read the fleet part's spec"))
        .expect("a fleet part's spec is JSON");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let options = FleetOptions {
        coordinators: strings(&spec["coordinators"]),
        environment: spec["environment"].as_str().unwrap_or_default().to_owned(),
        work: Duration::from_millis(spec["work_ms"].as_u64().unwrap_or(0)),
        threads: spec["threads"].as_u64().unwrap_or(1) as usize,
    };
    let (mut agents, mut security) = (Vec::new(), Vec::new());
    for a in spec["agents"].as_array().expect("agents") {
        agents.push(SimAgent {
            name: a["name"].as_str().unwrap_or_default().to_owned(),
            roles: strings(&a["roles"]),
            fails: a["fails"].as_bool().unwrap_or(false),
        });
        security.push(match &a["tls"] {
            Value::Null => Security::Insecure,
            tls => {
                let path = |k: &str| Some(PathBuf::from(tls[k].as_str().unwrap_or_default()));
                let files =
                    TlsFiles { ca: path("ca"), cert: path("cert"), key: path("key"), ..TlsFiles::default() };
                files.load("the simulated agent's certificate").expect("load a freshly issued certificate")
            }
        });
    }
    super::raise_fd_limit(2 * agents.len() as u64 + 100);
    let fleet = LocalFleet::start(options, agents, security);
    // Stdin closes when the benchmark ends, however it ends.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    loop {
        println!("{}", fleet.stats.summary().to_json());
        std::thread::sleep(REPORT_EVERY);
    }
}
