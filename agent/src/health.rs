//! Health checks: polling an app's health URL until it answers 2xx.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use runway_engine::progress::Progress;

/// Time between two probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Time one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The app did not become healthy. Retrying the restart may help; the last
/// probe's answer says why.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("health URL {url} is not a valid URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("{url} did not answer healthy within {secs} s; last probe: {last}")]
    Unhealthy { url: String, secs: u64, last: String },
}

/// Probes `url` once: `Ok(status line)` on 2xx, `Err(why)` otherwise.
pub async fn probe(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(PROBE_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = tokio::time::timeout(PROBE_TIMEOUT, response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect::<String>())
        .unwrap_or_default();
    let line = format!("HTTP {} {}", status.as_u16(), body.trim());
    if status.is_success() { Ok(line) } else { Err(line) }
}

/// Polls `url` until it answers 2xx or `timeout` passes.
pub async fn wait_healthy(url: &str, timeout: Duration, progress: &Progress) -> Result<String, HealthError> {
    url.parse::<hyper::Uri>()
        .map_err(|e| HealthError::BadUrl { url: url.to_owned(), message: e.to_string() })?;
    let start = Instant::now();
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let last = match probe(url).await {
            Ok(line) => {
                progress.emit("health", format!("{url} healthy after {attempts} probe(s): {line}"));
                return Ok(line);
            }
            Err(why) => why,
        };
        if start.elapsed() >= timeout {
            return Err(HealthError::Unhealthy { url: url.to_owned(), secs: timeout.as_secs(), last });
        }
        if attempts % 8 == 1 {
            progress.emit("health", format!("waiting for {url}: {last}"));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
