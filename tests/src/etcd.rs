//! A throwaway single-member etcd.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Proc, free_port, wait_until};

pub struct Etcd {
    pub endpoint: String,
    pub proc: Proc,
}

impl Etcd {
    pub fn start(dir: &Path) -> Etcd {
        let client = free_port();
        let peer = free_port();
        let data = dir.join("etcd-data");
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let proc = Proc::spawn(
            "etcd",
            Command::new(etcd_binary())
                .arg("--name=test")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={endpoint}"))
                .arg(format!("--advertise-client-urls={endpoint}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=test={peer_url}"))
                .arg("--unsafe-no-fsync")
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH),
            dir,
        );
        let health = format!("127.0.0.1:{client}");
        wait_until("etcd to accept connections", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&health).ok()
        });
        Etcd { endpoint, proc }
    }
}

fn etcd_binary() -> String {
    for candidate in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("etcd is not installed: `apt-get install -y etcd-server` (see .ci/run)")
}
