//! A throwaway etcd: one member on loopback, or one member per host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netns::Host;
use crate::pki::{Pki, TlsPaths};
use crate::process::{Proc, bin, free_port, wait_until};

pub struct Etcd {
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
    /// Where each member runs.
    pub hosts: Vec<Host>,
    pub members: Vec<Proc>,
    /// etcdctl's TLS flags (empty for plain text).
    etcdctl_tls: Vec<String>,
    /// Each member's command-line flags, to start it again.
    specs: Vec<Vec<String>>,
    /// Where the members' data dirs and logs are.
    dir: PathBuf,
}

impl Etcd {
    /// One member per host, as one cluster. With `pki`, clients must
    /// present a certificate from its CA (`--client-cert-auth`) over https,
    /// and etcd's authentication is on as the quick start sets it up
    /// (`runway etcd init-auth`): only `coordinators` (by name) may use
    /// `/runway/`, and etcdctl here acts as root. Peers talk plain text
    /// among themselves.
    pub fn start_on(dir: &Path, hosts: &[Host], pki: Option<&Pki>, coordinators: &[String]) -> Etcd {
        let scheme = if pki.is_some() { "https" } else { "http" };
        let urls: Vec<(String, String)> = hosts
            .iter()
            .map(|h| {
                (format!("{scheme}://{}:{}", h.ip, free_port()), format!("http://{}:{}", h.ip, free_port()))
            })
            .collect();
        let ips: Vec<String> = hosts.iter().map(|h| h.ip.clone()).collect();
        let server = pki.map(|pki| pki.server("etcd", &ips));
        let root = pki.map(Pki::etcd_root);
        let etcdctl_tls = root.as_ref().map(TlsPaths::etcdctl_args).unwrap_or_default();
        let initial_cluster = urls
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("etcd-{i}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let specs: Vec<Vec<String>> = urls
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("etcd-{i}");
                let mut args = Vec::new();
                if let Some(server) = &server {
                    args.push(format!("--cert-file={}", server.cert.display()));
                    args.push(format!("--key-file={}", server.key.display()));
                    args.push(format!("--trusted-ca-file={}", server.ca.display()));
                    args.push("--client-cert-auth".to_owned());
                }
                args.extend([
                    format!("--name={name}"),
                    format!("--data-dir={}", dir.join(format!("{name}-data")).display()),
                    format!("--listen-client-urls={client}"),
                    format!("--advertise-client-urls={client}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster={initial_cluster}"),
                    "--initial-cluster-state=new".to_owned(),
                    "--unsafe-no-fsync".to_owned(),
                ]);
                args
            })
            .collect();
        let members = (0..hosts.len()).map(|i| spawn_member(dir, i, &hosts[i], &specs[i])).collect();
        let endpoints: Vec<String> = urls.into_iter().map(|(client, _)| client).collect();
        let etcd =
            Etcd { endpoints, hosts: hosts.to_vec(), members, etcdctl_tls, specs, dir: dir.to_path_buf() };
        wait_until("etcd to be healthy", Duration::from_secs(30), || etcd.healthy().then_some(()));
        if let Some(root) = &root {
            etcd.init_auth(root, coordinators);
        }
        etcd
    }

    /// `runway etcd init-auth` as root, for `coordinators` on `/runway`.
    fn init_auth(&self, root: &TlsPaths, coordinators: &[String]) {
        let mut command = Command::new(bin("runway"));
        command
            .args(["etcd", "init-auth", "--prefix", "/runway"])
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .arg("--ca")
            .arg(&root.ca)
            .arg("--cert")
            .arg(&root.cert)
            .arg("--key")
            .arg(&root.key);
        for name in coordinators {
            command.args(["--coordinator", name]);
        }
        let out = command.output().expect("run runway etcd init-auth");
        assert!(
            out.status.success(),
            "runway etcd init-auth: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGKILLs member `i` and starts it again over its data dir (it
    /// rejoins the cluster); `down` is how long it stays away.
    pub fn restart_member(&mut self, i: usize, down: Duration) {
        self.stop_member(i);
        std::thread::sleep(down);
        self.start_member(i);
    }

    /// SIGKILLs member `i`.
    pub fn stop_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again over its data dir, after [`Etcd::stop_member`].
    pub fn start_member(&mut self, i: usize) {
        self.members[i] = spawn_member(&self.dir, i, &self.hosts[i], &self.specs[i]);
    }

    /// Whether the cluster has a leader and answers on every member.
    pub fn healthy(&self) -> bool {
        Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(&self.etcdctl_tls)
            .args(["endpoint", "health", "--command-timeout=2s"])
            .env("ETCDCTL_API", "3")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `etcdctl get --prefix PREFIX`'s first value by create revision: the
    /// leader of an election under `prefix`.
    /// Every key under `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(&self.etcdctl_tls)
            .args(["get", "--prefix", prefix, "--keys-only"])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl get: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The bytes stored at `key` (empty when it is absent).
    pub fn value(&self, key: &str) -> Vec<u8> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        // etcdctl ends the value with a newline of its own.
        let mut value = out;
        if value.last() == Some(&b'\n') {
            value.pop();
        }
        value
    }

    /// The first member's database size on disk and in use, in bytes
    /// (`etcdctl endpoint status`: `dbSize` and, from etcd 3.4, `dbSizeInUse`).
    pub fn db_size(&self) -> (u64, u64) {
        let first = &self.endpoints[..1];
        let out = Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", first.join(",")))
            .args(&self.etcdctl_tls)
            .args(["endpoint", "status", "-w", "json"])
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl endpoint status: {}", String::from_utf8_lossy(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        let field = |name: &str| status[0]["Status"][name].as_u64().unwrap_or(0);
        (field("dbSize"), field("dbSizeInUse"))
    }

    /// How many keys lie under `prefix` (a count query: no keys listed).
    pub fn count(&self, prefix: &str) -> u64 {
        let out = self.etcdctl(&["get", "--prefix", prefix, "--keys-only", "--limit=1", "-w", "json"]);
        let answer: serde_json::Value = serde_json::from_slice(&out).expect("count is JSON");
        answer["count"].as_u64().unwrap_or(0)
    }

    fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(&self.etcdctl_tls)
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    pub fn oldest_value(&self, prefix: &str) -> Option<String> {
        let out = Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(&self.etcdctl_tls)
            .args(["get", "--prefix", prefix, "--sort-by=CREATE", "--order=ASCEND", "--limit=1"])
            .arg("--print-value-only")
            .env("ETCDCTL_API", "3")
            .output()
            .ok()?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !value.is_empty()).then_some(value)
    }
}

/// Starts member `i` with its flags; its log `etcd-<i>.log` starts afresh.
fn spawn_member(dir: &Path, i: usize, host: &Host, args: &[String]) -> Proc {
    let mut command = host.command(etcd_binary());
    command.args(args).env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
    Proc::spawn(&format!("etcd-{i}"), &mut command, dir)
}

fn etcd_binary() -> String {
    installed("etcd")
        .unwrap_or_else(|| panic!("etcd is not installed: `apt-get install -y etcd-server` (see .ci/run)"))
}

fn etcdctl_binary() -> String {
    installed("etcdctl")
        .unwrap_or_else(|| panic!("etcdctl is not installed: `apt-get install -y etcd-client`"))
}

fn installed(name: &str) -> Option<String> {
    ["/usr/bin", "/usr/local/bin"].iter().map(|dir| format!("{dir}/{name}")).find(|p| Path::new(p).exists())
}
