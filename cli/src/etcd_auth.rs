//! `runway etcd init-auth`: etcd for coordinators only.
//!
//! etcd runs with `--client-cert-auth` and the runway CA as its trusted CA,
//! so every certificate of that CA gets through TLS: agents' and
//! operators' too. Without more, any of them could read and write all of
//! runway's keys (approvals, rollout records, the election key). This
//! command turns on etcd's own authentication so that only coordinators
//! can:
//!
//! - user `root` (role `root`), the administrator: whoever holds a
//!   certificate with the common name `root` (`runway certs etcd-root`);
//! - role `runway-coordinator`: read and write on `PREFIX/` and every key
//!   under it, nothing else;
//! - one user per coordinator, named as its certificate's common name
//!   (`coordinator NAME`), with that role;
//! - then `auth enable`.
//!
//! No user has a password: with `--client-cert-auth`, etcd takes the
//! client certificate's common name (CN) as the user name of a request
//! that carries no token (etcd 3.4 docs, op-guide/authentication.md,
//! "Using TLS Common Name"). runway's CA writes the holder's kind into
//! the CN (`coordinator c1`, `agent db-1 (staging)`, `operator alice`) and
//! names cannot contain a space, so no agent or operator certificate can
//! carry a coordinator's or root's user name: such a client is no etcd
//! user, and every read, write, watch, delete and lease revoke on runway's
//! keys is refused. With your own PKI, give coordinator certificates the
//! CN `coordinator NAME` and nobody else a CN that is an etcd user name.
//!
//! Why etcd's RBAC rather than a separate CA for etcd's clients: it needs
//! no second certificate per coordinator and also keeps coordinators
//! inside their prefix (two installations can share one etcd). It works
//! with etcd 3.4 and the etcd-client crate as they are: the coordinator
//! presents its certificate as before and sends no credentials.
//!
//! What etcd 3.4 leaves open to any certificate of the trusted CA (checked
//! against etcd 3.4.23): granting leases, listing them, a lease's
//! time-to-live with the names (not values) of its keys, keeping any
//! lease alive, and compaction. None reads or writes a value; keeping a
//! dead leader's lease alive delays a failover, it cannot make a second
//! leader write (writes stay fenced). A CA of its own for etcd's clients
//! (etcd's `--trusted-ca-file`) closes those as well.
//!
//! Every step is idempotent: running the command again (say, with one
//! more `--coordinator`) adds what is missing and changes nothing else.

use std::path::PathBuf;

use etcd_client::{Certificate, Client, ConnectOptions, Identity as TlsIdentity, Permission, TlsOptions};
use runway_identity::{Identity, check_name};
use serde::Serialize;

use crate::exit::Exit;
use crate::output::{Failure, Output};

/// The role coordinators get.
pub const COORDINATOR_ROLE: &str = "runway-coordinator";

/// `runway etcd <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum EtcdCommand {
    /// Turn on etcd's authentication so that only coordinators can use
    /// runway's keys: user root (certificate CN "root", from `runway certs
    /// etcd-root`), a role with read-write on PREFIX/ only, one user per
    /// --coordinator with that role (certificate CN "coordinator NAME",
    /// as `runway certs coordinator` issues it). Agent and operator
    /// certificates get nothing. Safe to run again, e.g. with one more
    /// coordinator.
    InitAuth(InitAuth),
}

/// `runway etcd init-auth`.
#[derive(clap::Args, Debug)]
pub struct InitAuth {
    /// etcd's client URLs (https://HOST:2379), comma-separated or repeated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The CA that signed etcd's server certificate.
    #[arg(long)]
    ca: PathBuf,
    /// A certificate whose common name is `root` (`runway certs etcd-root`).
    #[arg(long)]
    cert: PathBuf,
    /// Its key.
    #[arg(long)]
    key: PathBuf,
    /// The coordinators' `etcd_prefix`.
    #[arg(long, default_value = "/runway")]
    prefix: String,
    /// A coordinator's name (runway://coordinator/NAME); repeatable.
    #[arg(long = "coordinator", required = true)]
    coordinators: Vec<String>,
}

/// What was set up, for `--output json`.
#[derive(Serialize)]
struct Done {
    role: &'static str,
    /// The key range the role may read and write: this key and every key
    /// starting with it.
    prefix: String,
    /// The coordinators' etcd user names.
    users: Vec<String>,
}

pub async fn run(output: Output, command: EtcdCommand) -> Result<Exit, Failure> {
    match command {
        EtcdCommand::InitAuth(args) => init_auth(output, args).await,
    }
}

async fn init_auth(output: Output, args: InitAuth) -> Result<Exit, Failure> {
    args.coordinators.iter().try_for_each(|name| check_name(name).map_err(Failure::invalid))?;
    let prefix = key_prefix(&args.prefix)?;
    let users: Vec<String> = args.coordinators.iter().map(|name| user_name(name)).collect();
    let mut auth = connect(&args).await?.auth_client();

    let step = |what: String| move |e: etcd_client::Error| failure(&what, e);
    tolerate(auth.user_add("root", "", Some(no_password())).await, "already exists")
        .map_err(step("adding user root".into()))?;
    tolerate(auth.role_add("root").await, "already exists").map_err(step("adding role root".into()))?;
    auth.user_grant_role("root", "root").await.map_err(step("granting role root to root".into()))?;
    tolerate(auth.role_add(COORDINATOR_ROLE).await, "already exists")
        .map_err(step(format!("adding role {COORDINATOR_ROLE}")))?;
    auth.role_grant_permission(COORDINATOR_ROLE, Permission::read_write(prefix.clone()).with_prefix())
        .await
        .map_err(step(format!("granting {COORDINATOR_ROLE} read-write on {prefix}")))?;
    for user in &users {
        tolerate(auth.user_add(user.as_str(), "", Some(no_password())).await, "already exists")
            .map_err(step(format!("adding user {user:?}")))?;
        auth.user_grant_role(user.as_str(), COORDINATOR_ROLE)
            .await
            .map_err(step(format!("granting role {COORDINATOR_ROLE} to {user:?}")))?;
    }
    auth.auth_enable().await.map_err(step("enabling authentication".into()))?;

    let text = format!(
        "etcd authentication is on: {} read-write on {prefix}* for {}; agent and operator certificates get nothing",
        COORDINATOR_ROLE,
        users.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
    );
    output.result(text, &Done { role: COORDINATOR_ROLE, prefix, users });
    Ok(Exit::Success)
}

/// A coordinator's etcd user: the common name `runway certs coordinator`
/// gives its certificate.
pub fn user_name(coordinator: &str) -> String {
    Identity::Coordinator { name: coordinator.to_owned() }.to_string()
}

/// `/runway` → `/runway/`: the coordinators keep their keys under
/// `<etcd_prefix>/` (a trailing `/` in the config is ignored), so the role
/// covers exactly those, not `/runway2/…`.
fn key_prefix(prefix: &str) -> Result<String, Failure> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(Failure::invalid(
            "--prefix must name the coordinators' etcd_prefix, e.g. /runway (the whole key space is not granted)",
        ));
    }
    Ok(format!("{trimmed}/"))
}

fn no_password() -> etcd_client::UserAddOptions {
    etcd_client::UserAddOptions::new().with_no_pwd()
}

/// `Ok` also when etcd answers that what was to be added is there already
/// (running the command again).
fn tolerate<T>(result: Result<T, etcd_client::Error>, already: &str) -> Result<(), etcd_client::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains(already) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn connect(args: &InitAuth) -> Result<Client, Failure> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&args.ca)?))
        .identity(TlsIdentity::from_pem(read(&args.cert)?, read(&args.key)?));
    let options = ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_timeout(std::time::Duration::from_secs(10))
        .with_tls(tls);
    Client::connect(&args.endpoints, Some(options)).await.map_err(|e| {
        Failure::new(
            Exit::Unreachable,
            format!("cannot connect to etcd at {}: {e}", args.endpoints.join(",")),
        )
    })
}

/// etcd refused `what`: a certificate that is not root's (once
/// authentication is on, only root may change it) is denied; anything
/// else is etcd being unreachable or failing.
fn failure(what: &str, error: etcd_client::Error) -> Failure {
    // etcd's own words, without the gRPC wrapping around them.
    let text = match &error {
        etcd_client::Error::GRpcStatus(status) if !status.message().is_empty() => status.message().to_owned(),
        other => other.to_string(),
    };
    if text.contains("permission denied") || text.contains("user name not found") {
        Failure::new(
            Exit::Denied,
            format!(
                "{what}: etcd refused it ({text}); --cert must be root's certificate (common name root, \
                 `runway certs etcd-root`) once authentication is on"
            ),
        )
    } else {
        Failure::new(Exit::Unreachable, format!("{what}: {text}; check --endpoints and that etcd is up"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_covers_the_prefix_and_its_keys_only() {
        assert_eq!(key_prefix("/runway").unwrap(), "/runway/");
        assert_eq!(key_prefix("/runway/").unwrap(), "/runway/");
        assert!(key_prefix("/").is_err());
        assert!(key_prefix("").is_err());
    }

    #[test]
    fn coordinator_users_are_the_common_names_runway_certs_writes() {
        assert_eq!(user_name("coord-1"), "coordinator coord-1");
    }
}
