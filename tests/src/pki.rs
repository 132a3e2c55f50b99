//! A throwaway runway CA and the certificates a test installation needs:
//! etcd's server certificate and its root user's, one per coordinator and
//! agent, and operators.

use std::path::{Path, PathBuf};

use runway_identity::Identity;
use runway_identity::issue::Authority;

/// Days every test certificate is valid.
const DAYS: u32 = 2;

/// Operators every TLS test cluster knows, with their roles in both
/// environments: `ops` may do everything, the others one thing each.
pub const OPERATORS: &[(&str, &[&str])] = &[
    ("ops", &["view", "deploy", "restore", "approve"]),
    ("viewer", &["view"]),
    ("deployer", &["view", "deploy"]),
    ("approver", &["view", "approve"]),
];

/// A CA written to `dir`, and what it issued.
pub struct Pki {
    dir: PathBuf,
    ca: Authority,
    /// The revocation list every holder's `[tls] crl` names, when on.
    crl: Option<PathBuf>,
}

/// The three files of one holder.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The revocation list, when the PKI keeps one ([`Pki::with_revocation`]).
    pub crl: Option<PathBuf>,
}

impl TlsPaths {
    /// These files loaded as a client or server loads them.
    pub fn security(&self) -> runway_identity::tls::Security {
        runway_identity::tls::TlsFiles {
            ca: Some(self.ca.clone()),
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ..runway_identity::tls::TlsFiles::default()
        }
        .load("test")
        .expect("test certificates load")
    }

    /// A `[tls]` table for a config file.
    pub fn toml(&self) -> String {
        let crl = self.crl.as_ref().map(|crl| format!("crl = {crl:?}\n")).unwrap_or_default();
        format!("[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n{crl}", self.ca, self.cert, self.key)
    }

    /// `RUNWAY_CA`, `RUNWAY_CERT`, `RUNWAY_KEY` for the CLI.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        vec![
            ("RUNWAY_CA".into(), self.ca.display().to_string()),
            ("RUNWAY_CERT".into(), self.cert.display().to_string()),
            ("RUNWAY_KEY".into(), self.key.display().to_string()),
        ]
    }

    /// etcdctl's flags for a TLS etcd.
    pub fn etcdctl_args(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.ca.display()),
            format!("--cert={}", self.cert.display()),
            format!("--key={}", self.key.display()),
        ]
    }
}

impl Pki {
    /// A new CA in `dir/pki`.
    pub fn create(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("create pki dir");
        let ca = Authority::create(DAYS).expect("create CA");
        std::fs::write(dir.join("ca.pem"), &ca.own().cert_pem).expect("write CA");
        Pki { dir, ca, crl: None }
    }

    /// Like [`Pki::create`], laid out as `runway certs` keeps its CA (the
    /// key in `ca.key`, so `runway certs revoke --dir` works on it) with
    /// an empty revocation list `ca.crl` that every config names.
    pub fn with_revocation(dir: &Path) -> Pki {
        let mut pki = Pki::create(dir);
        std::fs::write(pki.dir.join("ca.key"), &pki.ca.own().key_pem).expect("write CA key");
        let crl = pki.dir.join("ca.crl");
        std::fs::write(&crl, pki.ca.revocation_list(&[], DAYS).expect("sign a CRL")).expect("write CRL");
        pki.crl = Some(crl);
        pki
    }

    /// Where the CA and the certificates are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues and writes a certificate for `identity` (file stem `stem`).
    pub fn issue(&self, stem: &str, identity: &Identity, hosts: &[String]) -> TlsPaths {
        let issued = self.ca.issue(identity, hosts, DAYS).expect("issue certificate");
        self.write(stem, &issued.cert_pem, &issued.key_pem)
    }

    /// A plain server certificate (etcd) for `hosts`.
    pub fn server(&self, stem: &str, hosts: &[String]) -> TlsPaths {
        let issued = self.ca.issue_server(stem, hosts, DAYS).expect("issue server certificate");
        self.write(stem, &issued.cert_pem, &issued.key_pem)
    }

    /// etcd's administrator (`runway certs etcd-root`: common name `root`),
    /// what `runway etcd init-auth` and the tests' etcdctl act as.
    pub fn etcd_root(&self) -> TlsPaths {
        let issued = self.ca.issue_client("root", DAYS).expect("issue etcd root certificate");
        self.write("etcd-root", &issued.cert_pem, &issued.key_pem)
    }

    pub fn coordinator(&self, name: &str, ip: &str) -> TlsPaths {
        self.issue(name, &Identity::Coordinator { name: name.into() }, &[ip.to_owned()])
    }

    pub fn agent(&self, environment: &str, name: &str) -> TlsPaths {
        self.issue(
            &format!("agent-{environment}-{name}"),
            &Identity::Agent { environment: environment.into(), name: name.into() },
            &[],
        )
    }

    /// An operator who may sign SQL for `deploy` environments and, when
    /// [`OPERATORS`] gives them the restore role, sign restores, rollbacks
    /// and verifies there too.
    pub fn operator(&self, name: &str, deploy: &[&str]) -> TlsPaths {
        let restores = OPERATORS.iter().any(|(who, roles)| *who == name && roles.contains(&"restore"));
        self.operator_with(name, deploy, if restores { deploy } else { &[] })
    }

    /// An operator whose certificate grants exactly `deploy` and `restore`.
    pub fn operator_with(&self, name: &str, deploy: &[&str], restore: &[&str]) -> TlsPaths {
        let list = |envs: &[&str]| envs.iter().map(|e| e.to_string()).collect();
        let identity = Identity::Operator { name: name.into(), deploy: list(deploy), restore: list(restore) };
        self.issue(&format!("operator-{name}"), &identity, &[])
    }

    fn write(&self, stem: &str, cert_pem: &str, key_pem: &str) -> TlsPaths {
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert, cert_pem).expect("write certificate");
        std::fs::write(&key, key_pem).expect("write key");
        TlsPaths { ca: self.ca_path(), cert, key, crl: self.crl.clone() }
    }
}

/// `[environments.NAME]` tables granting [`OPERATORS`] their roles, with
/// `policy` (extra `key = value` lines) in each.
pub fn environments_toml(environments: &[&str], policy: &str) -> String {
    let roles = OPERATORS
        .iter()
        .map(|(name, roles)| {
            format!("{name} = [{}]", roles.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    environments
        .iter()
        .map(|env| format!("[environments.{env}]\nroles = {{ {roles} }}\n{policy}\n"))
        .collect()
}
