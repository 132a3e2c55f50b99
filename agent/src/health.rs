//! Health checks: polling an app's health URL until it answers 2xx.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{ConstantBuilder, Retryable};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use runway_engine::progress::Progress;

/// Time between two probes: a probe is one local HTTP GET, and every
/// interval the app is healthy but not yet probed is maintenance time.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
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
    let (status, body) = get(url, PROBE_TIMEOUT).await?;
    let line = format!("HTTP {status} {}", body.chars().take(200).collect::<String>().trim());
    if (200..300).contains(&status) { Ok(line) } else { Err(line) }
}

/// The most of a body kept.
const BODY_LIMIT: usize = 64 * 1024;

/// `GET url`: `(status, body)` within `timeout` (the body cut at 64 KiB).
/// What health probes and smoke checks send.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = async {
        let response = client.get(uri).await.map_err(|e| format!("GET {url} failed: {e}"))?;
        let status = response.status().as_u16();
        let body =
            response.into_body().collect().await.map_err(|e| format!("reading {url}: {e}"))?.to_bytes();
        let body = String::from_utf8_lossy(&body[..body.len().min(BODY_LIMIT)]).into_owned();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| format!("GET {url}: no answer within {} ms", timeout.as_millis()))?
}

/// Polls `url` until it answers 2xx or `timeout` passes.
pub async fn wait_healthy(url: &str, timeout: Duration, progress: &Progress) -> Result<String, HealthError> {
    url.parse::<hyper::Uri>()
        .map_err(|e| HealthError::BadUrl { url: url.to_owned(), message: e.to_string() })?;
    let attempts = AtomicU64::new(0);
    let last = Mutex::new(String::from("no probe finished"));
    let polling = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        probe(url)
    })
    .retry(ConstantBuilder::new().with_delay(PROBE_INTERVAL).without_max_times())
    .notify(|why: &String, _| {
        // About once a second.
        if attempts.load(Ordering::Relaxed) % 20 == 1 {
            progress.emit("health", format!("waiting for {url}: {why}"));
        }
        *last.lock().expect("health poll lock") = why.clone();
    });
    match tokio::time::timeout(timeout, polling).await {
        Ok(Ok(line)) => {
            progress
                .emit("health", format!("{url} healthy after {} probe(s): {line}", attempts.into_inner()));
            Ok(line)
        }
        // The retries never stop by themselves (`without_max_times`): the deadline ends them.
        Ok(Err(why)) => {
            Err(HealthError::Unhealthy { url: url.to_owned(), secs: timeout.as_secs(), last: why })
        }
        Err(_) => Err(HealthError::Unhealthy {
            url: url.to_owned(),
            secs: timeout.as_secs(),
            last: last.into_inner().expect("health poll lock"),
        }),
    }
}

/// A fake app for unit tests of health probes and smoke checks.
#[cfg(test)]
pub(crate) mod fake_app {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An app on a free port whose answers are `answers` in turn (the last
    /// repeats): `(status line, body)`. Returns its health URL.
    pub async fn app(answers: Vec<(&'static str, &'static str)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for served in 0.. {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let (status, body) = answers[served.min(answers.len() - 1)];
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        format!("http://{addr}/health")
    }
}

#[cfg(test)]
mod tests {
    use super::fake_app::app;
    use super::*;

    const STARTING: (&str, &str) = ("503 Service Unavailable", "starting");

    #[tokio::test]
    async fn waits_through_unhealthy_answers() {
        let url = app(vec![STARTING, STARTING, STARTING, ("200 OK", "ok")]).await;
        let line = wait_healthy(&url, Duration::from_secs(10), &Progress::discard()).await.expect("healthy");
        assert_eq!(line, "HTTP 200 ok");
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_answer() {
        let url = app(vec![STARTING]).await;
        let err = wait_healthy(&url, Duration::from_millis(800), &Progress::discard())
            .await
            .expect_err("never healthy");
        let text = err.to_string();
        assert!(text.contains("HTTP 503 starting"), "{text}");
    }
}
