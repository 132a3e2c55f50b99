//! Who is who in runway.
//!
//! Every runway certificate names its holder in a URI subject alternative
//! name, and TLS proves the peer holds the key:
//!
//! | holder | URI SAN |
//! |---|---|
//! | coordinator `c1` | `runway://coordinator/c1` |
//! | agent `db-1` in `production` | `runway://agent/production/db-1` |
//! | operator `alice` | `runway://operator/alice` |
//! | ... who may sign SQL for `production` | `runway://deploy/production` (on the operator's certificate) |
//! | ... who may sign restores, rollbacks and verifies there | `runway://restore/production` (likewise) |
//!
//! - [`Identity`]: that name, read from a certificate.
//! - [`tls`]: the mTLS settings every binary loads, the server config and
//!   the client connector that only talks to coordinators.
//! - [`signature`]: an operator's signature over what changes a database.
//! - [`issue`]: a small certificate authority for the quick start and small
//!   installations.

pub mod issue;
pub mod signature;
pub mod tls;
mod verify;

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The scheme of every runway identity URI.
const SCHEME: &str = "runway://";

/// Who holds a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A coordinator.
    Coordinator { name: String },
    /// An agent, bound to one environment.
    Agent { environment: String, name: String },
    /// A person (or a CI job) driving runway; `deploy` lists the
    /// environments the certificate lets them sign SQL for, `restore` those
    /// where it lets them sign restores, rollbacks and backup verifies.
    Operator { name: String, deploy: Vec<String>, restore: Vec<String> },
}

/// A certificate that names no runway identity, or names it wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the certificate names no runway identity (a URI SAN like runway://operator/NAME)")]
    Missing,
    #[error("the certificate names more than one runway identity: {0}")]
    Several(String),
    #[error("bad runway identity URI {uri:?}: {why}")]
    Malformed { uri: String, why: String },
}

impl Identity {
    /// The holder's name.
    pub fn name(&self) -> &str {
        match self {
            Identity::Coordinator { name }
            | Identity::Agent { name, .. }
            | Identity::Operator { name, .. } => name,
        }
    }

    /// The URI SANs a certificate for this identity carries.
    pub fn uris(&self) -> Vec<String> {
        match self {
            Identity::Coordinator { name } => vec![format!("{SCHEME}coordinator/{name}")],
            Identity::Agent { environment, name } => vec![format!("{SCHEME}agent/{environment}/{name}")],
            Identity::Operator { name, deploy, restore } => {
                std::iter::once(format!("{SCHEME}operator/{name}"))
                    .chain(deploy.iter().map(|env| format!("{SCHEME}deploy/{env}")))
                    .chain(restore.iter().map(|env| format!("{SCHEME}restore/{env}")))
                    .collect()
            }
        }
    }

    /// Reads the identity a DER certificate names. Does not check who
    /// signed the certificate: TLS (or [`signature`]) does that.
    pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let uris: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(uri.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(IdentityError::Unparsable(e.to_string())),
        };
        Self::from_uris(&uris)
    }

    /// The identity named by a certificate's runway URIs.
    pub fn from_uris(uris: &[String]) -> Result<Identity, IdentityError> {
        let mut holder = None;
        let mut deploy = Vec::new();
        let mut restore = Vec::new();
        for uri in uris {
            let path = uri.strip_prefix(SCHEME).unwrap_or(uri);
            let parts: Vec<&str> = path.split('/').collect();
            let malformed = |why: &str| IdentityError::Malformed { uri: uri.clone(), why: why.into() };
            for part in &parts[1..] {
                check_name(part).map_err(|why| malformed(&why))?;
            }
            let found = match parts.as_slice() {
                ["coordinator", name] => Identity::Coordinator { name: (*name).into() },
                ["agent", environment, name] => {
                    Identity::Agent { environment: (*environment).into(), name: (*name).into() }
                }
                ["operator", name] => {
                    Identity::Operator { name: (*name).into(), deploy: Vec::new(), restore: Vec::new() }
                }
                ["deploy", environment] => {
                    deploy.push((*environment).to_string());
                    continue;
                }
                ["restore", environment] => {
                    restore.push((*environment).to_string());
                    continue;
                }
                _ => {
                    return Err(malformed(
                        "expected coordinator/NAME, agent/ENV/NAME, operator/NAME, deploy/ENV or restore/ENV",
                    ));
                }
            };
            if let Some(first) = holder.replace(found) {
                return Err(IdentityError::Several(format!("{first} and {}", holder.expect("just set"))));
            }
        }
        match holder {
            Some(Identity::Operator { name, .. }) => Ok(Identity::Operator { name, deploy, restore }),
            Some(_) if !deploy.is_empty() || !restore.is_empty() => Err(IdentityError::Malformed {
                uri: match deploy.first() {
                    Some(env) => format!("{SCHEME}deploy/{env}"),
                    None => format!("{SCHEME}restore/{}", restore[0]),
                },
                why: "only operator certificates carry deploy and restore grants".into(),
            }),
            Some(identity) => Ok(identity),
            None => Err(IdentityError::Missing),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Coordinator { name } => write!(f, "coordinator {name}"),
            Identity::Agent { environment, name } => write!(f, "agent {name} ({environment})"),
            Identity::Operator { name, .. } => write!(f, "operator {name}"),
        }
    }
}

/// Names of holders and environments: 1–64 of `A-Z a-z 0-9 . _ -`, so they
/// fit a URI path segment, an etcd key and a log line unchanged.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters long"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{name:?} contains {c:?}; use letters, digits, '.', '_' and '-'"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uris(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identities_round_trip_through_their_uris() {
        for identity in [
            Identity::Coordinator { name: "c1".into() },
            Identity::Agent { environment: "production".into(), name: "db-1".into() },
            Identity::Operator {
                name: "alice".into(),
                deploy: vec!["staging".into(), "production".into()],
                restore: vec!["production".into()],
            },
        ] {
            assert_eq!(Identity::from_uris(&identity.uris()), Ok(identity));
        }
    }

    #[test]
    fn ambiguous_or_malformed_identities_are_refused() {
        assert_eq!(Identity::from_uris(&[]), Err(IdentityError::Missing));
        assert!(matches!(
            Identity::from_uris(&uris(&["runway://operator/a", "runway://coordinator/c"])),
            Err(IdentityError::Several(_))
        ));
        assert!(matches!(
            Identity::from_uris(&uris(&["runway://agent/production/../x"])),
            Err(IdentityError::Malformed { .. })
        ));
        assert!(matches!(
            Identity::from_uris(&uris(&["runway://agent/db-1"])),
            Err(IdentityError::Malformed { .. })
        ));
        assert!(matches!(
            Identity::from_uris(&uris(&["runway://agent/production/db-1", "runway://deploy/production"])),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
