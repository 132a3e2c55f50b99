//! `runway certs revoke`: the built-in CA's revocation list, `DIR/ca.crl`.
//!
//! The list is the only record: revoking reads it, adds the certificates'
//! serial numbers and signs it again, written whole under a temporary
//! name and renamed, so a daemon polling the file never reads half of it.
//! Coordinators and agents whose `[tls] crl` points at (a copy of) it
//! refuse those certificates from the next handshake on, and coordinators
//! close the connections they already have.

use std::path::{Path, PathBuf};

use runway_identity::issue::{Revoked, read_revocation_list, serial_number};
use serde::Serialize;

use super::{authority, fail};
use crate::exit::Exit;
use crate::output::{Failure, Output};

/// The list's file name in the CA's directory.
pub const CRL_FILE: &str = "ca.crl";

/// `runway certs revoke [NAME…]`.
#[derive(clap::Args, Debug)]
pub struct Revoke {
    /// Certificates to revoke: as `runway certs` named their files
    /// (`operator-alice` for DIR/operator-alice.pem), or a path to a PEM
    /// certificate. With none, the list is written (empty the first time)
    /// or signed again as it is.
    names: Vec<String>,
    /// Where the CA lives.
    #[arg(long, default_value = "runway-pki")]
    dir: PathBuf,
    /// How long the list is valid, in days, for checkers that enforce its
    /// next-update time (runway's do not).
    #[arg(long, default_value_t = 365)]
    days: u32,
}

/// What was written, for `--output json`.
#[derive(Serialize)]
struct Written {
    crl: PathBuf,
    /// Serial numbers (hex) this call added.
    revoked: Vec<String>,
    /// How many certificates the list names now.
    listed: usize,
}

pub fn run(output: Output, args: Revoke) -> Result<Exit, Failure> {
    let ca = authority(&args.dir)?;
    let path = args.dir.join(CRL_FILE);
    let mut listed = match std::fs::read(&path) {
        Ok(pem) => {
            let listed = read_revocation_list(&pem).map_err(|e| fail(format!("{}: {e}", path.display())))?;
            if listed.is_empty() && !String::from_utf8_lossy(&pem).contains("X509 CRL") {
                return Err(fail(format!("{} holds no revocation list; move it away first", path.display())));
            }
            listed
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(fail(format!("cannot read {}: {e}", path.display()))),
    };
    let mut added = Vec::new();
    for name in &args.names {
        let cert = certificate_path(&args.dir, name);
        let pem = std::fs::read(&cert).map_err(|e| {
            fail(format!(
                "cannot read {}: {e}; name a certificate `runway certs` wrote in {}",
                cert.display(),
                args.dir.display()
            ))
        })?;
        let serial = serial_number(&pem).map_err(|e| fail(format!("{}: {e}", cert.display())))?;
        if listed.iter().any(|r| r.serial == serial) {
            continue;
        }
        added.push(serial.iter().map(|b| format!("{b:02x}")).collect());
        listed.push(Revoked::now(serial));
    }
    let pem = ca.revocation_list(&listed, args.days).map_err(fail)?;
    write_atomically(&path, pem.as_bytes())?;
    let written = Written { crl: path, revoked: added, listed: listed.len() };
    output.result(
        format!(
            "{} certificate(s) revoked now, {} on the list in {}\n  \
             daemons with `[tls] crl` on this file reload it within seconds (or at once on SIGHUP)",
            written.revoked.len(),
            written.listed,
            written.crl.display()
        ),
        &written,
    );
    Ok(Exit::Success)
}

/// `DIR/NAME.pem` for a bare name, else `name` as a path.
fn certificate_path(dir: &Path, name: &str) -> PathBuf {
    if name.contains('/') || name.ends_with(".pem") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.pem"))
    }
}

/// Writes `path` whole or not at all.
fn write_atomically(path: &Path, content: &[u8]) -> Result<(), Failure> {
    let failed =
        |e: std::io::Error| Failure::new(Exit::Failed, format!("cannot write {}: {e}", path.display()));
    let temporary = path.with_extension("crl.new");
    std::fs::write(&temporary, content).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}
