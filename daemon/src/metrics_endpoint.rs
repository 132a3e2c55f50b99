//! The opt-in `/metrics` listener: plain HTTP/1, one task per connection,
//! the text the daemon's registry renders on every scrape: OpenMetrics when
//! the scraper asks for it (Prometheus does), else the Prometheus text
//! format 0.0.4 (see [`crate::metrics`]).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Registry, accepts_openmetrics};

/// Binds `addr` (when set) and serves `registry` at `/metrics` there until
/// `shutdown`, as a task on `tracker`.
pub async fn start(
    addr: Option<std::net::SocketAddr>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    registry: &'static Registry,
) -> std::io::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
    tracker.spawn(serve(listener, tracker.clone(), shutdown, registry));
    Ok(())
}

/// Answers `GET /metrics` on `listener` until `shutdown`; one task per
/// connection on `tracker`.
pub async fn serve(
    listener: TcpListener,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    registry: &'static Registry,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};

    let respond = move |request: hyper::Request<hyper::body::Incoming>| async move {
        let response = if request.uri().path() == "/metrics" {
            let accept = request.headers().get(hyper::header::ACCEPT).and_then(|a| a.to_str().ok());
            let (content_type, text) = if accept.is_some_and(accepts_openmetrics) {
                ("application/openmetrics-text; version=1.0.0; charset=utf-8", registry.openmetrics())
            } else {
                ("text/plain; version=0.0.4; charset=utf-8", registry.prometheus_text())
            };
            Response::builder().header("content-type", content_type).body(Full::new(Bytes::from(text)))
        } else {
            Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from("try /metrics\n")))
        };
        Ok::<_, std::convert::Infallible>(response.expect("a valid response"))
    };
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper::service::service_fn(respond));
            tokio::select! {
                _ = shutdown.cancelled() => {}
                served = connection => if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics: connection ended with an error");
                }
            }
        });
    }
}
