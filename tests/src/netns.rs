//! Several hosts on one machine: one network namespace per host, all on a
//! bridge in a private test subnet (`10.213.N.0/24`).
//!
//! The bridge holds `10.213.N.1` in the root namespace, so the kernel routes
//! the subnet locally and test traffic never leaves the machine. Bridge,
//! namespaces and veth pairs are named after `N`, which is unique while the
//! bridge exists (creating it is the lock) plus a random tag, and removed
//! on drop.
//!
//! A [`Host`] runs commands inside its namespace; [`Host::cut`] drops
//! traffic to and from a peer with iptables rules inside the namespace.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::Mutex;

/// Where a process runs: the machine's loopback, or a test namespace.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace, `None` for the root namespace.
    pub ns: Option<String>,
    /// The address the host's servers listen on.
    pub ip: String,
}

impl Host {
    pub fn loopback() -> Host {
        Host { ns: None, ip: "127.0.0.1".into() }
    }

    /// `program` to run on this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.ns {
            None => Command::new(program),
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
        }
    }

    /// Drops every packet between this host and `peer` (both directions).
    pub fn cut(&self, peer: &Host) {
        for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
            self.iptables(&["-I", rule[0], rule[1], &peer.ip, "-j", "DROP"]);
        }
    }

    /// Removes every cut made on this host.
    pub fn heal(&self) {
        self.iptables(&["-F", "INPUT"]);
        self.iptables(&["-F", "OUTPUT"]);
    }

    fn iptables(&self, args: &[&str]) {
        assert!(self.ns.is_some(), "cuts are only made inside test namespaces");
        run(self.command("iptables").args(args));
    }
}

/// A bridge and the namespaces on it; everything is removed on drop.
pub struct Net {
    subnet: u8,
    /// Distinguishes this net's interface and namespace names from those of
    /// an earlier net on the same subnet that the kernel still tears down.
    tag: String,
    bridge: String,
    namespaces: Mutex<Vec<String>>,
}

impl Net {
    /// Creates the bridge on the first free subnet.
    pub fn create() -> Net {
        assert!(is_root(), "network namespace tests need root");
        for subnet in 1..=250u8 {
            let bridge = format!("rwbr{subnet}");
            let created = Command::new("ip")
                .args(["link", "add", &bridge, "type", "bridge"])
                .output()
                .expect("run ip")
                .status
                .success();
            if !created {
                continue;
            }
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let tag = format!("{:04x}", (nanos.subsec_nanos() ^ std::process::id()) & 0xffff);
            let net = Net { subnet, tag, bridge, namespaces: Mutex::default() };
            run(Command::new("ip").args([
                "addr",
                "add",
                &format!("10.213.{subnet}.1/24"),
                "dev",
                &net.bridge,
            ]));
            run(Command::new("ip").args(["link", "set", &net.bridge, "up"]));
            return net;
        }
        panic!("no free test subnet 10.213.1-250.0/24 (stale rwbr* bridges?)");
    }

    /// A new namespace on the bridge, named `name` in logs.
    pub fn host(&self, name: &str) -> Host {
        let mut namespaces = self.namespaces.lock().expect("netns lock");
        let index = namespaces.len() + 2;
        assert!(index < 250, "too many hosts");
        let ns = format!("rw{}-{name}", self.tag);
        let veth = format!("rw{}v{index}", self.tag);
        let peer = format!("rw{}p{index}", self.tag);
        let ip = format!("10.213.{}.{index}", self.subnet);
        run(Command::new("ip").args(["netns", "add", &ns]));
        namespaces.push(ns.clone());
        run(Command::new("ip").args(["link", "add", &veth, "type", "veth", "peer", "name", &peer]));
        run(Command::new("ip").args(["link", "set", &veth, "master", &self.bridge, "up"]));
        run(Command::new("ip").args(["link", "set", &peer, "netns", &ns]));
        let host = Host { ns: Some(ns), ip: ip.clone() };
        run(host.command("ip").args(["addr", "add", &format!("{ip}/24"), "dev", &peer]));
        run(host.command("ip").args(["link", "set", &peer, "up"]));
        run(host.command("ip").args(["link", "set", "lo", "up"]));
        host
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // A namespace goes away lazily, with its veth end: delete our ends
        // first so the names are free at once for the next test.
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for index in 0..namespaces.len() + 2 {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("rw{}v{index}", self.tag)])
                .stderr(std::process::Stdio::null())
                .status();
        }
        for ns in namespaces {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

/// Whether tests that can run either way should put each process in a
/// namespace of its own: yes when root (as in CI), else loopback.
pub fn usable() -> bool {
    is_root()
}

/// Whether namespace tests can run here (they need root). Outside CI a
/// test skips with a message when not; in CI (`CI` set) it must run.
pub fn available() -> bool {
    if is_root() {
        return true;
    }
    assert!(!crate::process::in_ci(), "network namespace tests need root, and CI must run them");
    eprintln!("SKIPPED: network namespace tests need root");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
