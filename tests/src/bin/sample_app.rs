//! A tiny HTTP app for the quick start and the end-to-end tests.
//!
//! `GET /health` answers 200 with the version and PID (503 while `--dir`
//! holds a file `unhealthy-version` naming this version: a release that
//! never becomes healthy, or one that turns unhealthy when a test writes
//! the file); `GET /` answers 503 while the maintenance flag file exists in
//! `--dir`, 500 while `--dir` holds a file `broken-page-version` naming this
//! version (a release whose pages fail though its health check passes),
//! else 200. Both files are read on every request.
//!
//! For the analysis tests it misbehaves by version, too: a line
//! `VERSION PERCENT` in `error-share-version` makes that version answer
//! 500 to that share of its pages, and a line `VERSION MS` in
//! `slow-version` makes it take that long per page. `GET /metrics` serves
//! Prometheus metrics of the pages served (not `/health` or `/metrics`):
//! `http_requests_total{code,version}` and the latency histogram
//! `http_request_duration_seconds{version}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Args {
    addr: String,
    port: u16,
    dir: PathBuf,
    version: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut port = None;
    let mut addr = String::from("127.0.0.1");
    let mut dir = None;
    let mut version = String::from("unknown");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => addr = value,
            "--port" => port = Some(value.parse()?),
            "--dir" => dir = Some(PathBuf::from(value)),
            "--version" => version = value,
            other => anyhow::bail!("unknown flag {other}; use --addr, --port, --dir, --version"),
        }
    }
    Ok(Args {
        addr,
        port: port.ok_or_else(|| anyhow::anyhow!("--port is required"))?,
        dir: dir.ok_or_else(|| anyhow::anyhow!("--dir is required"))?,
        version,
    })
}

/// Latency buckets, in seconds.
const BUCKETS: [f64; 13] = [0.01, 0.05, 0.1, 0.125, 0.15, 0.175, 0.2, 0.225, 0.25, 0.3, 0.5, 1.0, 2.5];

/// What `/metrics` reports.
#[derive(Default)]
struct Metrics {
    ok: AtomicU64,
    errors: AtomicU64,
    maintenance: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Metrics {
    fn observe(&self, seconds: f64) {
        for (bucket, le) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, version: &str) -> String {
        let mut text = String::from("# TYPE http_requests_total counter\n");
        for (code, n) in [("200", &self.ok), ("500", &self.errors), ("503", &self.maintenance)] {
            let n = n.load(Ordering::Relaxed);
            text.push_str(&format!("http_requests_total{{code=\"{code}\",version=\"{version}\"}} {n}\n"));
        }
        text.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (bucket, le) in self.buckets.iter().zip(BUCKETS) {
            let n = bucket.load(Ordering::Relaxed);
            text.push_str(&format!(
                "http_request_duration_seconds_bucket{{version=\"{version}\",le=\"{le}\"}} {n}\n"
            ));
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        text.push_str(&format!(
            "http_request_duration_seconds_bucket{{version=\"{version}\",le=\"+Inf\"}} {count}\n\
             http_request_duration_seconds_sum{{version=\"{version}\"}} {sum}\n\
             http_request_duration_seconds_count{{version=\"{version}\"}} {count}\n"
        ));
        text
    }
}

/// The number on this version's line of `file` in `dir` (`VERSION N`).
fn per_version(dir: &Path, file: &str, version: &str) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == version).then_some(())?;
        words.next()?.parse().ok()
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let listener = tokio::net::TcpListener::bind((args.addr.as_str(), args.port)).await?;
    eprintln!(
        "sample app {} listening on {}:{} as pid {}",
        args.version,
        args.addr,
        args.port,
        std::process::id()
    );
    let names_this_version =
        |file: &str| std::fs::read_to_string(args.dir.join(file)).is_ok_and(|v| v.trim() == args.version);
    let metrics = Arc::new(Metrics::default());
    let served = Arc::new(AtomicU64::new(0));
    loop {
        let (mut socket, _) = listener.accept().await?;
        let maintenance = args.dir.join("maintenance").exists();
        let broken = names_this_version("unhealthy-version");
        let broken_page = names_this_version("broken-page-version");
        let error_share = per_version(&args.dir, "error-share-version", &args.version).unwrap_or(0);
        let slow_ms = per_version(&args.dir, "slow-version", &args.version).unwrap_or(0);
        let version = args.version.clone();
        let (metrics, served) = (Arc::clone(&metrics), Arc::clone(&served));
        tokio::spawn(async move {
            // Read the whole request head: closing a socket with unread
            // bytes makes the kernel reset the connection.
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let started = std::time::Instant::now();
            // The n-th page fails when the share's running total passes a whole request.
            let page = matches!(path, "/health" | "/metrics")
                .then_some(0)
                .unwrap_or_else(|| served.fetch_add(1, Ordering::Relaxed) + 1);
            let injected = page > 0 && (page * error_share) / 100 > ((page - 1) * error_share) / 100;
            if page > 0 && !maintenance && slow_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(slow_ms)).await;
            }
            let (status, body) = match path {
                "/health" if broken => ("503 Service Unavailable", format!("version {version} is broken")),
                "/health" => ("200 OK", format!("ok version={version} pid={}", std::process::id())),
                "/metrics" => ("200 OK", metrics.render(&version)),
                _ if maintenance => ("503 Service Unavailable", "down for maintenance".to_owned()),
                _ if broken_page || injected => {
                    ("500 Internal Server Error", format!("version {version} fails to render"))
                }
                _ => ("200 OK", format!("hello from version {version}")),
            };
            if page > 0 {
                let counter = match status.as_bytes()[0] {
                    b'2' => &metrics.ok,
                    _ if maintenance => &metrics.maintenance,
                    _ => &metrics.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if !maintenance {
                    metrics.observe(started.elapsed().as_secs_f64());
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
