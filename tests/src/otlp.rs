//! A real OTLP/gRPC trace receiver for the tests: the collector's own
//! `TraceService` (from `opentelemetry-proto`) served by tonic on loopback,
//! keeping every span it is sent; in plain gRPC, or over TLS (and mTLS)
//! with certificates from [`crate::pki`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// One span as received, with its resource's `service.name` and `host.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub host: String,
    pub name: String,
    /// Hex, as trace viewers show them; `parent` is empty for a root span.
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or_default()
    }
}

type Received = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT` (`https://` over TLS), for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    received: Received,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("receiver lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource = attributes(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    service: resource.get("service.name").cloned().unwrap_or_default(),
                    host: resource.get("host.name").cloned().unwrap_or_default(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent: hex::encode(span.parent_span_id),
                    attributes: attributes(span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attributes(list: Vec<KeyValue>) -> BTreeMap<String, String> {
    list.into_iter().map(|kv| (kv.key, kv.value.map(text).unwrap_or_default())).collect()
}

fn text(value: AnyValue) -> String {
    match value.value {
        Some(any_value::Value::StringValue(s)) => s,
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl OtlpReceiver {
    /// Listens on a free loopback port, on a thread of its own, in plain gRPC.
    pub fn start() -> Self {
        Self::serve(None)
    }

    /// Listens over TLS with `server`'s certificate (issued for
    /// `127.0.0.1`); with `client_ca`, only clients whose certificate
    /// chains to it are served (mTLS).
    pub fn start_tls(server: &crate::pki::TlsPaths, client_ca: Option<&std::path::Path>) -> Self {
        let read = |path: &std::path::Path| std::fs::read(path).expect("read a receiver TLS file");
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(read(&server.cert), read(&server.key)));
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)));
        }
        Self::serve(Some(tls))
    }

    fn serve(tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://{}", listener.local_addr().expect("receiver address"));
        let received = Received::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(Collector(Arc::clone(&received)));
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut server = tonic::transport::Server::builder();
                if let Some(tls) = tls {
                    server = server.tls_config(tls).expect("receiver TLS config");
                }
                server
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("OTLP receiver runs");
            });
        });
        Self { endpoint, received, stop: Some(stop), thread: Some(thread) }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// Waits until `done` holds for the spans received (panics after `timeout`).
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        let until = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < until, "the spans waited for never arrived; received: {spans:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
