//! The Prometheus HTTP API client: `GET /api/v1/query?query=…`, one number
//! back. Every query has a timeout (`[prometheus] timeout`, connecting
//! included), so an unreachable or hung server gives an inconclusive
//! measurement, never a stuck rollout. Credentials are read at start from
//! files or the environment and never appear in a log line, event or error.

use std::time::Duration;

use crate::config::PrometheusConfig;

/// Why a query gave no number: each is an inconclusive measurement.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Could not connect or send (refused, DNS, TLS).
    #[error("prometheus unreachable: {0}")]
    Unreachable(String),
    /// No answer within the timeout.
    #[error("prometheus did not answer within {0:?}")]
    TimedOut(Duration),
    /// An HTTP status other than 200 with no API error in the body.
    #[error("prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The API refused the query (e.g. a PromQL syntax error).
    #[error("prometheus refused the query ({kind}): {error}")]
    Refused { kind: String, error: String },
    /// The query matched nothing.
    #[error("no data: the query matched no series")]
    NoData,
    /// The value is NaN (e.g. 0/0: no traffic).
    #[error("no data: the value is NaN")]
    NotANumber,
    /// Several series: the query must aggregate them to one.
    #[error("the query gave {0} series; aggregate them to one (sum, max, histogram_quantile)")]
    Ambiguous(usize),
    /// Not the API's JSON.
    #[error("prometheus answered something that is not its API's JSON: {0}")]
    Malformed(String),
}

/// The client could not be set up from `[prometheus]`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("[prometheus] {key}: cannot read {path}: {error}")]
    Read { key: &'static str, path: String, error: std::io::Error },
    #[error("[prometheus] {key}: environment variable {var} is not set")]
    Env { key: &'static str, var: String },
    #[error("[prometheus] ca_file: {0}")]
    Ca(String),
    #[error("[prometheus] url: {0}")]
    Url(String),
    #[error("cannot build the Prometheus HTTP client: {0}")]
    Client(String),
}

enum Auth {
    None,
    Bearer(String),
    Basic { user: String, password: String },
}

/// A Prometheus server to ask. Cheap to clone.
#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    endpoint: url::Url,
    timeout: Duration,
    auth: std::sync::Arc<Auth>,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").field("endpoint", &self.endpoint.as_str()).finish_non_exhaustive()
    }
}

fn secret(
    key: &'static str,
    file: Option<&std::path::Path>,
    env: (&'static str, Option<&str>),
) -> Result<Option<String>, SetupError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|error| SetupError::Read {
            key,
            path: path.display().to_string(),
            error,
        })?;
        return Ok(Some(text.trim().to_owned()));
    }
    if let Some(var) = env.1 {
        let value = std::env::var(var).map_err(|_| SetupError::Env { key: env.0, var: var.to_owned() })?;
        return Ok(Some(value.trim().to_owned()));
    }
    Ok(None)
}

impl Prometheus {
    /// A client for `config`: its CA, its credentials (read now), its timeout.
    pub fn new(config: &PrometheusConfig) -> Result<Self, SetupError> {
        let mut endpoint = url::Url::parse(&config.url).map_err(|e| SetupError::Url(e.to_string()))?;
        let path = format!("{}/api/v1/query", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|error| SetupError::Read {
                key: "ca_file",
                path: ca.display().to_string(),
                error,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SetupError::Ca(e.to_string()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| SetupError::Client(e.to_string()))?;
        let token = secret(
            "bearer_token_file",
            config.bearer_token_file.as_deref(),
            ("bearer_token_env", config.bearer_token_env.as_deref()),
        )?;
        let password = secret(
            "password_file",
            config.password_file.as_deref(),
            ("password_env", config.password_env.as_deref()),
        )?;
        let auth = match (token, &config.username, password) {
            (Some(token), _, _) => Auth::Bearer(token),
            (None, Some(user), Some(password)) => Auth::Basic { user: user.clone(), password },
            _ => Auth::None,
        };
        Ok(Self { client, endpoint, timeout: config.timeout.0, auth: std::sync::Arc::new(auth) })
    }

    /// The value of `promql` now.
    pub async fn query(&self, promql: &str) -> Result<f64, QueryError> {
        let mut request = self.client.get(self.endpoint.clone()).query(&[("query", promql)]);
        request = match self.auth.as_ref() {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        // The client's own timeout covers the request; this one also the body.
        let answer = tokio::time::timeout(self.timeout, async {
            let response = request.send().await.map_err(|e| self.send_error(e))?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| self.send_error(e))?;
            Ok::<_, QueryError>((status, body))
        })
        .await
        .map_err(|_| QueryError::TimedOut(self.timeout))??;
        parse(answer.0, &answer.1)
    }

    fn send_error(&self, e: reqwest::Error) -> QueryError {
        if e.is_timeout() {
            return QueryError::TimedOut(self.timeout);
        }
        // Without the URL: it may carry a query string, never credentials,
        // but the message reads better without it.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        QueryError::Unreachable(text)
    }
}

/// The number in the API's answer `body` with HTTP `status`.
pub fn parse(status: u16, body: &str) -> Result<f64, QueryError> {
    let json: serde_json::Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) if status != 200 => {
            return Err(QueryError::Status { status, body: body.chars().take(200).collect() });
        }
        Err(e) => return Err(QueryError::Malformed(e.to_string())),
    };
    if json["status"] != "success" {
        return Err(QueryError::Refused {
            kind: json["errorType"].as_str().unwrap_or("unknown").to_owned(),
            error: json["error"].as_str().unwrap_or("").chars().take(300).collect(),
        });
    }
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result =
                data["result"].as_array().ok_or_else(|| QueryError::Malformed("no result".into()))?;
            match result.len() {
                0 => return Err(QueryError::NoData),
                1 => &result[0]["value"],
                n => return Err(QueryError::Ambiguous(n)),
            }
        }
        other => {
            return Err(QueryError::Malformed(format!(
                "result type {}; the query must give a scalar or an instant vector",
                other.unwrap_or("missing")
            )));
        }
    };
    let text =
        sample.get(1).and_then(|v| v.as_str()).ok_or_else(|| QueryError::Malformed("no value".into()))?;
    let value = match text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        text => text.parse().map_err(|_| QueryError::Malformed(format!("value {text:?}")))?,
    };
    if value.is_nan() {
        return Err(QueryError::NotANumber);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_one_number_or_say_why_not() {
        let vector = |result: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":{result}}}}}"#)
        };
        assert_eq!(parse(200, &vector(r#"[{"metric":{},"value":[1.5,"0.05"]}]"#)), Ok(0.05));
        assert_eq!(parse(200, &vector("[]")), Err(QueryError::NoData));
        assert_eq!(
            parse(200, &vector(r#"[{"metric":{},"value":[1.5,"NaN"]}]"#)),
            Err(QueryError::NotANumber)
        );
        assert_eq!(
            parse(
                200,
                &vector(r#"[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]"#)
            ),
            Err(QueryError::Ambiguous(2))
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#;
        assert_eq!(parse(200, scalar), Ok(f64::INFINITY));
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(
            matches!(parse(400, refused), Err(QueryError::Refused { ref kind, .. }) if kind == "bad_data")
        );
        assert!(matches!(parse(502, "Bad Gateway"), Err(QueryError::Status { status: 502, .. })));
        assert!(matches!(parse(200, "<html>"), Err(QueryError::Malformed(_))));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(parse(200, matrix), Err(QueryError::Malformed(_))));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_within_the_timeout() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config: PrometheusConfig =
            toml::from_str(&format!("url = \"http://{addr}\"\ntimeout = \"300ms\"")).unwrap();
        let prometheus = Prometheus::new(&config).unwrap();
        let started = std::time::Instant::now();
        let error = prometheus.query("up").await.unwrap_err();
        assert!(matches!(error, QueryError::TimedOut(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        hold.abort();
        // Nothing listens on a closed port: unreachable.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let config: PrometheusConfig = toml::from_str(&format!("url = \"http://{closed}\"")).unwrap();
        let error = Prometheus::new(&config).unwrap().query("up").await.unwrap_err();
        assert!(matches!(error, QueryError::Unreachable(_)), "{error}");
    }
}
