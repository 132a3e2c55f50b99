//! A throwaway etcd: one member on loopback, or one member per host.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::netns::Host;
use crate::process::{Proc, free_port, wait_until};

pub struct Etcd {
    /// Client URLs, one per member.
    pub endpoints: Vec<String>,
    pub members: Vec<Proc>,
}

impl Etcd {
    /// One member on 127.0.0.1.
    pub fn start(dir: &Path) -> Etcd {
        Self::start_on(dir, &[Host::loopback()])
    }

    /// One member per host, as one cluster.
    pub fn start_on(dir: &Path, hosts: &[Host]) -> Etcd {
        let urls: Vec<(String, String)> = hosts
            .iter()
            .map(|h| (format!("http://{}:{}", h.ip, free_port()), format!("http://{}:{}", h.ip, free_port())))
            .collect();
        let initial_cluster = urls
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("etcd-{i}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = hosts
            .iter()
            .zip(&urls)
            .enumerate()
            .map(|(i, (host, (client, peer)))| {
                let name = format!("etcd-{i}");
                Proc::spawn(
                    &name,
                    host.command(etcd_binary())
                        .arg(format!("--name={name}"))
                        .arg(format!("--data-dir={}", dir.join(format!("{name}-data")).display()))
                        .arg(format!("--listen-client-urls={client}"))
                        .arg(format!("--advertise-client-urls={client}"))
                        .arg(format!("--listen-peer-urls={peer}"))
                        .arg(format!("--initial-advertise-peer-urls={peer}"))
                        .arg(format!("--initial-cluster={initial_cluster}"))
                        .arg("--initial-cluster-state=new")
                        .arg("--unsafe-no-fsync")
                        .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH),
                    dir,
                )
            })
            .collect();
        let endpoints: Vec<String> = urls.into_iter().map(|(client, _)| client).collect();
        let etcd = Etcd { endpoints, members };
        wait_until("etcd to be healthy", Duration::from_secs(30), || etcd.healthy().then_some(()));
        etcd
    }

    /// Whether the cluster has a leader and answers on every member.
    pub fn healthy(&self) -> bool {
        Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(["endpoint", "health", "--command-timeout=2s"])
            .env("ETCDCTL_API", "3")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `etcdctl get --prefix PREFIX`'s first value by create revision: the
    /// leader of an election under `prefix`.
    pub fn oldest_value(&self, prefix: &str) -> Option<String> {
        let out = Command::new(etcdctl_binary())
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .args(["get", "--prefix", prefix, "--sort-by=CREATE", "--order=ASCEND", "--limit=1"])
            .arg("--print-value-only")
            .env("ETCDCTL_API", "3")
            .output()
            .ok()?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !value.is_empty()).then_some(value)
    }
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
