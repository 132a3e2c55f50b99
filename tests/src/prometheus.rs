//! A throwaway Prometheus (Debian's `prometheus`) scraping the sample apps
//! every second, and a small bounded load generator for them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::{AppHost, http_get};
use crate::process::{Proc, free_port, wait_until};

/// A Prometheus server on 127.0.0.1, killed on drop.
pub struct Prometheus {
    pub port: u16,
    pub proc: Proc,
}

impl Prometheus {
    /// The port a Prometheus started later will listen on, so coordinators
    /// can be configured with its URL first.
    pub fn pick_port() -> u16 {
        free_port()
    }

    /// `[prometheus]` of a coordinator config asking the server on `port`.
    pub fn coordinator_toml(port: u16) -> String {
        format!("[prometheus]\nurl = \"http://127.0.0.1:{port}\"\ntimeout = \"2s\"\n")
    }

    /// Starts Prometheus on `port` with its data under `dir`, scraping each
    /// app's `/metrics` every second with a `host` label naming the app.
    pub fn start(dir: &Path, port: u16, apps: &[AppHost]) -> Prometheus {
        let data = dir.join("prometheus-data");
        std::fs::create_dir_all(&data).expect("prometheus data dir");
        let targets: String = apps
            .iter()
            .map(|app| {
                format!(
                    "      - targets: [\"{}:{}\"]\n        labels: {{ host: \"{}\" }}\n",
                    app.host.ip, app.port, app.name
                )
            })
            .collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    \
                 scrape_interval: 1s\n    scrape_timeout: 900ms\n    static_configs:\n{targets}"
            ),
        )
        .expect("write prometheus.yml");
        let mut command = std::process::Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn("prometheus", &mut command, dir);
        let prometheus = Prometheus { port, proc };
        wait_until("prometheus to be ready", Duration::from_secs(30), || {
            http_get("127.0.0.1", port, "/-/ready").filter(|(code, _)| *code == 200)
        });
        prometheus
    }

    /// The value of `promql` now, if it gives one number.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b => format!("%{b:02X}"),
            })
            .collect();
        let body = get_1_0(self.port, &format!("/api/v1/query?query={encoded}"))?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// `GET path` from 127.0.0.1:`port` as HTTP/1.0, so the body is never chunked.
fn get_1_0(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// Requests `GET /` to every app, about `per_second` each (one thread per
/// app, so a slow app does not slow the others), until dropped or `limit`
/// has passed: bounded either way.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(apps: &[AppHost], per_second: u32, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let pause = Duration::from_secs(1) / per_second.max(1);
        let threads = apps
            .iter()
            .map(|app| {
                let (ip, port) = (app.host.ip.clone(), app.port);
                let (stopping, counting) = (Arc::clone(&stop), Arc::clone(&sent));
                std::thread::spawn(move || {
                    let started = Instant::now();
                    while !stopping.load(Ordering::Relaxed) && started.elapsed() < limit {
                        let round = Instant::now();
                        let _ = http_get(&ip, port, "/");
                        counting.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(pause.saturating_sub(round.elapsed()));
                    }
                })
            })
            .collect();
        Load { stop, sent, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
