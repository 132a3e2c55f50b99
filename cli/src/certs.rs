//! `runway certs`: a small certificate authority for the quick start and
//! small installations. Larger ones issue certificates from their own PKI
//! with the same URI SANs (see docs/src/security.md).

use std::path::{Path, PathBuf};

use runway_identity::issue::{Authority, Issued};
use runway_identity::{Identity, check_name};
use serde::Serialize;

use crate::exit::Exit;
use crate::output::{Failure, Output};

mod revoke;

/// `runway certs <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the runway CA: DIR/ca.pem (give it to every part) and
    /// DIR/ca.key (keep it off the servers).
    Init {
        /// Where the CA is written.
        #[arg(long, default_value = "runway-pki")]
        dir: PathBuf,
        /// Validity of the CA in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a coordinator's certificate (runway://coordinator/NAME); it
    /// serves gRPC and is etcd's client.
    Coordinator {
        name: String,
        /// Host names or IP addresses it is reached at (also as DNS/IP SANs).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Issue an agent's certificate (runway://agent/ENV/NAME): it may
    /// register only as NAME in ENV.
    Agent {
        name: String,
        #[arg(long = "env")]
        environment: String,
        #[command(flatten)]
        common: Common,
    },
    /// Issue an operator's certificate (runway://operator/NAME). Roles come
    /// from the coordinator config; --deploy ENV lets the certificate sign
    /// migrations for ENV, which DB agents check before running any SQL;
    /// --restore ENV lets it sign restores, rollbacks and backup verifies
    /// there, which DB agents check before acting on them.
    Operator {
        name: String,
        /// An environment this operator may sign migrations for (repeatable).
        #[arg(long = "deploy")]
        deploy: Vec<String>,
        /// An environment this operator may sign restores, rollbacks and
        /// backup verifies for (repeatable).
        #[arg(long = "restore")]
        restore: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Issue etcd's administrator certificate (common name root, client
    /// only) for `runway etcd init-auth`; keep it off the servers.
    EtcdRoot {
        #[command(flatten)]
        common: Common,
    },
    /// Issue a plain server certificate (no runway identity), e.g. for etcd.
    Server {
        name: String,
        /// Host names or IP addresses it is reached at.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke certificates: add them to the CA's revocation list DIR/ca.crl
    /// (point `[tls] crl` at it); coordinators and agents refuse them from
    /// their next reload on, without a restart.
    Revoke(revoke::Revoke),
}

/// Flags every `certs` command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Where the CA lives and certificates are written.
    #[arg(long, default_value = "runway-pki")]
    dir: PathBuf,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    days: u32,
}

/// What was written, for `--output json`.
#[derive(Serialize)]
struct Written {
    identity: String,
    cert: PathBuf,
    key: PathBuf,
}

pub fn run(output: Output, command: CertsCommand) -> Result<Exit, Failure> {
    let (common, stem, issued, identity) = match command {
        CertsCommand::Revoke(args) => return revoke::run(output, args),
        CertsCommand::Init { dir, days } => {
            let issued = Authority::create(days).map_err(fail)?.own().clone();
            (Common { dir, days }, "ca".to_owned(), issued, "runway CA".to_owned())
        }
        CertsCommand::Coordinator { name, hosts, common } => {
            checked(&[&name])?;
            let identity = Identity::Coordinator { name: name.clone() };
            let issued = authority(&common.dir)?.issue(&identity, &hosts, common.days).map_err(fail)?;
            (common, format!("coordinator-{name}"), issued, identity.uris().join(" "))
        }
        CertsCommand::Agent { name, environment, common } => {
            checked(&[&name, &environment])?;
            let identity = Identity::Agent { environment: environment.clone(), name: name.clone() };
            let issued = authority(&common.dir)?.issue(&identity, &[], common.days).map_err(fail)?;
            (common, format!("agent-{environment}-{name}"), issued, identity.uris().join(" "))
        }
        CertsCommand::Operator { name, deploy, restore, common } => {
            let names = std::iter::once(&name).chain(&deploy).chain(&restore);
            checked(&names.map(String::as_str).collect::<Vec<_>>())?;
            let identity = Identity::Operator { name: name.clone(), deploy, restore };
            let issued = authority(&common.dir)?.issue(&identity, &[], common.days).map_err(fail)?;
            (common, format!("operator-{name}"), issued, identity.uris().join(" "))
        }
        CertsCommand::EtcdRoot { common } => {
            let issued = authority(&common.dir)?.issue_client("root", common.days).map_err(fail)?;
            (common, "etcd-root".to_owned(), issued, "etcd user root".to_owned())
        }
        CertsCommand::Server { name, hosts, common } => {
            checked(&[&name])?;
            let issued = authority(&common.dir)?.issue_server(&name, &hosts, common.days).map_err(fail)?;
            (common, name.clone(), issued, format!("server {}", hosts.join(", ")))
        }
    };
    let written = write(&common.dir, &stem, &issued, identity)?;
    output.result(
        format!(
            "{}\n  certificate: {}\n  key:         {}",
            written.identity,
            written.cert.display(),
            written.key.display()
        ),
        &written,
    );
    Ok(Exit::Success)
}

fn checked(names: &[&str]) -> Result<(), Failure> {
    names.iter().try_for_each(|name| check_name(name).map_err(Failure::invalid))
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure::invalid(e.to_string())
}

/// The CA in `dir`, made by `runway certs init`.
fn authority(dir: &Path) -> Result<Authority, Failure> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).map_err(|e| {
            Failure::invalid(format!(
                "cannot read {}: {e}; create the CA first with `runway certs init --dir {}`",
                dir.join(file).display(),
                dir.display()
            ))
        })
    };
    Authority::load(&read("ca.pem")?, &read("ca.key")?).map_err(fail)
}

/// Writes `<stem>.pem` and `<stem>.key` (owner-only), never over existing files.
fn write(dir: &Path, stem: &str, issued: &Issued, identity: String) -> Result<Written, Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::invalid(format!("cannot create {}: {e}", dir.display())))?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    for (path, content, mode) in [(&key, &issued.key_pem, 0o600), (&cert, &issued.cert_pem, 0o644)] {
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
                Failure::invalid(format!(
                    "cannot write {}: {e} (existing files are never overwritten)",
                    path.display()
                ))
            })?;
        file.write_all(content.as_bytes())
            .map_err(|e| Failure::new(Exit::Failed, format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(Written { identity, cert, key })
}
