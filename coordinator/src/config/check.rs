//! The coordinator's start-up checks of what its config says about other
//! places: its own advertised address, etcd's endpoints, the trace
//! endpoint, and with [`Files::Check`] the `[tls]` files (readable, loading,
//! naming a coordinator). The policy keys are checked next to their types.

use runway_daemon::config_check::{self, Files, Problems};
use runway_identity::Identity;
use runway_identity::tls::Security;

use super::Config;

/// Adds every problem of `config`'s addresses and files to `problems`.
pub(super) fn addresses_and_files(config: &Config, files: Files, problems: &mut Problems) {
    // Followers hand it to agents and CLIs as the leader's address.
    problems.check("advertise", config.tls.check_address(&config.advertise));
    if config.etcd_endpoints.is_empty() {
        problems.add("etcd_endpoints", "must list at least one endpoint, e.g. [\"https://10.0.0.21:2379\"]");
    }
    for endpoint in &config.etcd_endpoints {
        problems.check("etcd_endpoints", etcd_endpoint(endpoint));
    }
    if let Some(endpoint) = config.telemetry.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        problems.check("[telemetry] otlp_endpoint", config_check::http_url(endpoint));
    }
    if files == Files::Check {
        problems.check("[telemetry]", config.telemetry.check_tls());
    }
    if let Some(prometheus) = &config.prometheus {
        super::analysis::check_prometheus(prometheus, files, problems);
    }
    if let Some(Security::Mutual(credentials)) = config_check::tls(&config.tls, files, problems) {
        problems.check("[tls] cert", names_a_coordinator(credentials.identity()));
    }
}

/// An etcd client endpoint: `HOST:PORT`, or an `http://` or `https://`
/// URL of one, as the etcd client reads it.
fn etcd_endpoint(endpoint: &str) -> Result<(), String> {
    let url = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    config_check::http_url(&url).map_err(|_| {
        let why = url::Url::parse(&url).err().map_or_else(|| "not HOST:PORT".to_owned(), |e| e.to_string());
        format!("{endpoint:?} is not an etcd endpoint (http(s)://HOST:PORT): {why}")
    })?;
    Ok(())
}

/// Agents accept only a coordinator whose certificate names one.
pub fn names_a_coordinator(identity: &Identity) -> Result<(), String> {
    match identity {
        Identity::Coordinator { .. } => Ok(()),
        other => Err(format!(
            "the certificate names {other}; a coordinator needs one naming runway://coordinator/NAME"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::ConfigError;

    fn check(text: &str, files: Files) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).unwrap();
        config.check(Some(Path::new("coordinator.toml")), files).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn addresses_are_checked_and_every_problem_named() {
        let error = check(
            "name = \"\"\nadvertise = \"https://10.0.0.1:notaport\"\n\
             etcd_endpoints = [\"127.0.0.1:2379\", \"http://127.0.0.1:notaport\"]\n\
             [telemetry]\notlp_endpoint = \"collector:4317\"\n[tls]\ninsecure = true\n",
            Files::Skip,
        )
        .unwrap_err();
        let lines: Vec<&str> = error.lines().collect();
        for needle in [
            "coordinator.toml: name: must not be empty",
            "coordinator.toml: advertise: bad address \"https://10.0.0.1:notaport\": insecure mode",
            "coordinator.toml: etcd_endpoints: \"http://127.0.0.1:notaport\" is not an etcd endpoint",
            "coordinator.toml: [telemetry] otlp_endpoint: ",
        ] {
            assert_eq!(lines.iter().filter(|l| l.starts_with(needle)).count(), 1, "{needle:?} in:\n{error}");
        }
        assert_eq!(lines.len(), 4, "{error}");
    }

    #[test]
    fn tls_files_are_named_by_key_when_they_cannot_be_read() {
        let text = "[tls]\nca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/coordinator.pem\"\n\
                    key = \"/nonexistent/coordinator.key\"\n[environments.staging]\n";
        check(text, Files::Skip).unwrap();
        let error = check(text, Files::Check).unwrap_err();
        for key in ["ca", "cert", "key"] {
            assert!(
                error.contains(&format!("coordinator.toml: [tls] {key}: cannot read")),
                "{key} in:\n{error}"
            );
        }
        let mut config: Config = toml::from_str("[environments.staging]\n").unwrap();
        let Err(ConfigError::Invalid(problems)) = config.check(None, Files::Skip) else {
            panic!("TLS without files must be refused");
        };
        assert!(
            problems.to_string().starts_with("coordinator config (defaults): [tls]: ca, cert, key not set")
        );
    }
}
