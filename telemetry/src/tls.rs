//! TLS to the OTLP receiver. An `https://` endpoint is reached over TLS
//! (rustls with ring, through tonic), trusting the CA file when one is
//! set and the system's roots otherwise; a client certificate and key make
//! it mutual TLS. Files come from the config (or the CLI's flags), else
//! from the standard `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`,
//! `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` variables, and every error
//! names the setting that pointed at the file.

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::otlp::Error;

/// A file named by a setting, and that setting's name (a config key, a
/// flag or a variable) for the errors about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    pub path: PathBuf,
    pub key: String,
}

impl FileSetting {
    /// `path` as set by `key`; `None` when unset.
    pub fn named(key: &str, path: Option<&std::path::Path>) -> Option<Self> {
        path.map(|path| Self { path: path.to_owned(), key: key.to_owned() })
    }

    /// The file's PEM bytes; an error naming the setting when it cannot be
    /// read or holds no PEM block labelled `label`.
    fn read_pem(&self, label: &'static str) -> Result<Vec<u8>, Error> {
        let bytes = std::fs::read(&self.path).map_err(|e| Error::Unreadable {
            key: self.key.clone(),
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let labelled = text.lines().any(|line| line.starts_with("-----BEGIN ") && line.contains(label));
        if !labelled {
            return Err(Error::NotPem { key: self.key.clone(), path: self.path.clone(), label });
        }
        Ok(bytes)
    }
}

/// The files that secure the connection to the receiver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) the receiver's certificate must chain to;
    /// unset: the system's roots.
    pub ca: Option<FileSetting>,
    /// This process's certificate (PEM), for a receiver that asks for one.
    pub client_cert: Option<FileSetting>,
    /// Its private key (PEM).
    pub client_key: Option<FileSetting>,
}

impl TlsFiles {
    /// Each file not set here from its standard variable (the traces one
    /// first), if set.
    pub(crate) fn or_env(self) -> Self {
        let env = |names: [&str; 2]| {
            names.into_iter().find_map(|name| {
                let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
                Some(FileSetting { path: value.into(), key: name.to_owned() })
            })
        };
        Self {
            ca: self
                .ca
                .or_else(|| env(["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"])),
            client_cert: self.client_cert.or_else(|| {
                env(["OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"])
            }),
            client_key: self
                .client_key
                .or_else(|| env(["OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"])),
        }
    }

    fn first_set(&self) -> Option<&FileSetting> {
        self.ca.as_ref().or(self.client_cert.as_ref()).or(self.client_key.as_ref())
    }

    /// How to reach `endpoint`: `None` for `http://` (plain gRPC), TLS for
    /// `https://`. Files set for an `http://` endpoint are an error rather
    /// than spans sent in the clear to a receiver meant to be secured.
    pub(crate) fn client_config(&self, endpoint: &str) -> Result<Option<ClientTlsConfig>, Error> {
        let https = endpoint.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        if !https {
            return match self.first_set() {
                Some(set) => Err(Error::NotHttps { key: set.key.clone(), endpoint: endpoint.to_owned() }),
                None => Ok(None),
            };
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(ca.read_pem("CERTIFICATE")?)),
            None => tls.with_native_roots(),
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let identity =
                    Identity::from_pem(cert.read_pem("CERTIFICATE")?, key.read_pem("PRIVATE KEY")?);
                tls = tls.identity(identity);
            }
            (Some(set), None) => {
                return Err(Error::HalfIdentity { set: set.key.clone(), missing: "client key" });
            }
            (None, Some(set)) => {
                return Err(Error::HalfIdentity { set: set.key.clone(), missing: "client certificate" });
            }
            (None, None) => {}
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &std::path::Path, name: &str, text: &str) -> Option<FileSetting> {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        FileSetting::named(&format!("[telemetry] {name}"), Some(&path))
    }

    #[test]
    fn plain_http_needs_no_files_and_refuses_them() {
        let none = TlsFiles::default();
        assert!(none.client_config("http://127.0.0.1:4317").unwrap().is_none());
        let ca = TlsFiles { ca: FileSetting::named("[telemetry] otlp_ca_file", Some("/x".as_ref())), ..none };
        let error = ca.client_config("http://127.0.0.1:4317").unwrap_err().to_string();
        assert!(error.contains("[telemetry] otlp_ca_file") && error.contains("not https://"), "{error}");
    }

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let dir = std::env::temp_dir().join(format!("runway-telemetry-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = TlsFiles {
            ca: FileSetting::named("OTEL_EXPORTER_OTLP_CERTIFICATE", Some(&dir.join("nope.pem"))),
            ..TlsFiles::default()
        };
        let error = missing.client_config("https://collector:4317").unwrap_err().to_string();
        assert!(error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && error.contains("nope.pem"), "{error}");

        let not_pem = TlsFiles { ca: file(&dir, "otlp_ca_file", "hello"), ..TlsFiles::default() };
        let error = not_pem.client_config("https://collector:4317").unwrap_err().to_string();
        assert!(error.contains("[telemetry] otlp_ca_file") && error.contains("CERTIFICATE"), "{error}");

        let cert = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        let half = TlsFiles { client_cert: file(&dir, "otlp_client_cert_file", cert), ..TlsFiles::default() };
        let error = half.client_config("https://collector:4317").unwrap_err().to_string();
        assert!(
            error.contains("[telemetry] otlp_client_cert_file") && error.contains("client key"),
            "{error}"
        );

        let whole = TlsFiles {
            ca: file(&dir, "ca.pem", cert),
            client_cert: file(&dir, "client.pem", cert),
            client_key: file(
                &dir,
                "client.key",
                "-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n",
            ),
        };
        assert!(whole.client_config("HTTPS://collector:4317").unwrap().is_some());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
