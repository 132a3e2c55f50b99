//! mTLS and identities end to end: real etcd (with client-certificate
//! auth), a real coordinator and agents, all talking TLS; clients that
//! must be refused are real clients (the `runway` CLI, or a gRPC client
//! in this process holding a real certificate).
//!
//! 1. Refused, each with a clear error: a client without a certificate, a
//!    certificate from another CA (both ways), an agent certificate for
//!    `db-1` registering as `db-2` or in another environment, a second
//!    `db-1` with another identity while the first is attached, an agent
//!    started with a certificate naming someone else. Then nothing has
//!    changed: the real `db-1` is still attached and a rollout through it
//!    succeeds.
//! 2. A "who leads" answer with the highest token from a peer without a
//!    coordinator identity leaves an agent's saved token unchanged; the
//!    same answer from a peer with one (the control) raises it.
//! 3. A coordinator that changes one byte of the bundle after the operator
//!    signed it: the DB agent refuses it before any SQL runs.

use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::time::Duration;

use runway_identity::tls::handshake_failure;
use runway_proto::v1::agent_channel_client::AgentChannelClient;
use runway_proto::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
use runway_proto::v1::operator_client::OperatorClient;
use runway_proto::v1::{
    AgentMessage, CoordinatorMessage, LeaderInfo, LeaderRequest, ListAgentsRequest, Register, agent_message,
};
use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::pki::{Pki, TlsPaths};
use runway_tests::process::{Proc, bin, free_port, wait_until};
use tonic::{Request, Response, Status};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn leader_addr(cluster: &Cluster) -> String {
    let leader = cluster.leader().expect("a leader");
    cluster.coordinators[leader].addr.clone()
}

/// Registers as agent `name` in `environment` with `tls`'s certificate;
/// `Ok` once the coordinator says Registered.
async fn register(addr: &str, tls: &TlsPaths, name: &str, environment: &str) -> Result<(), Status> {
    let security = tls.security();
    let channel = security
        .connect(security.endpoint(addr).unwrap())
        .await
        .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = Register {
        name: name.into(),
        environment: environment.into(),
        roles: vec!["db".into()],
        ..Register::default()
    };
    tx.send(AgentMessage { kind: Some(agent_message::Kind::Register(register)) }).await.unwrap();
    let mut inbound = AgentChannelClient::new(channel)
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(_) => Ok(()),
        None => Err(Status::unknown("stream closed without an answer")),
    }
}

/// `ListAgents` from a plain tonic client trusting `ca` and presenting
/// `identity`'s certificate (none: no client certificate at all).
async fn list_agents_with(addr: &str, ca: &Path, identity: Option<&TlsPaths>) -> Result<(), String> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some(identity) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(&identity.cert).unwrap(),
            std::fs::read(&identity.key).unwrap(),
        ));
    }
    let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    OperatorClient::new(channel)
        .list_agents(ListAgentsRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| handshake_failure(&status).unwrap_or_else(|| format!("{status:?}")))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn identities_are_checked_on_every_hop_and_refusals_change_nothing() {
    let cluster = Cluster::start(Options { coordinators: 1, app_hosts: 1, ..Options::default() });
    let pki = cluster.pki.as_ref().expect("TLS by default");
    let addr = leader_addr(&cluster);
    let rt = runtime();

    // A client with the right CA but no certificate of its own.
    let no_cert = rt.block_on(list_agents_with(&addr, &pki.ca_path(), None));
    // The TLS layer drops it: no gRPC answer at all, so no service code ran.
    let why = no_cert.expect_err("a client without a certificate must be refused");
    eprintln!("no certificate: {why}");
    assert!(
        ["CertificateRequired", "certificate", "transport error", "broken pipe"]
            .iter()
            .any(|w| why.contains(w)),
        "{why}"
    );

    // An operator certificate from another CA. The CLI checks its own files
    // first and says so; a client that sends it anyway is refused by the
    // coordinator's TLS.
    let other = Pki::create(&cluster.path().join("other"));
    let forged = other.operator("ops", &[ENV]);
    let mixed = TlsPaths { ca: pki.ca_path(), ..forged.clone() };
    let out = cluster.runway_command_as(Some(&mixed)).args(["agents"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not chain to the CA"), "{}", stderr(&out));
    let refused = rt.block_on(list_agents_with(&addr, &pki.ca_path(), Some(&forged)));
    eprintln!("another CA's certificate: {:?}", refused);
    assert!(refused.is_err(), "a certificate from another CA must be refused");
    // A whole other PKI: the CLI refuses the coordinator's certificate.
    let out = cluster.runway_command_as(Some(&forged)).args(["agents"]).output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("not from the runway CA"), "{}", stderr(&out));

    // Agent certificates used for someone else.
    let db1 = pki.agent(ENV, "db-1");
    let status =
        rt.block_on(register(&addr, &db1, "db-2", ENV)).expect_err("db-1's certificate registering as db-2");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("names agent db-1 (staging)"), "{status:?}");
    let prod_db1 = pki.agent("production", "db-1");
    let status = rt
        .block_on(register(&addr, &prod_db1, "db-1", ENV))
        .expect_err("a production certificate in staging");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // production's db-1 is another agent than staging's: it attaches (and
    // leaves) while staging's stays attached.
    rt.block_on(register(&addr, &prod_db1, "db-1", "production"))
        .expect("production/db-1 is an agent of its own");

    // The agent itself refuses to start with a certificate naming another agent.
    let config = cluster.path().join("db-2.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"db-2\"\nenvironment = \"{ENV}\"\ncoordinators = [\"{addr}\"]\nroles = [\"app\"]\nstate_dir = {:?}\n\
             [app]\nmaintenance_on = [\"/bin/true\"]\nmaintenance_off = [\"/bin/true\"]\nrestart = [\"/bin/true\"]\n\
             health_url = \"http://127.0.0.1:1/health\"\n{}",
            cluster.path().join("db-2-state"),
            db1.toml()
        ),
    )
    .unwrap();
    let out = Command::new(bin("runway-agent")).arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("names agent db-1 (staging), but this agent is configured as db-2"),
        "{}",
        stderr(&out)
    );

    // Nothing changed: the real db-1 is attached, no rollout exists, and a
    // rollout through it works.
    let agents = cluster.runway(&["agents", "--output", "json"]);
    assert!(String::from_utf8_lossy(&agents.stdout).contains("\"db-1\""));
    let list = cluster.runway(&["rollout", "list", "--output", "json"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "", "no rollout was started");
    let migrations = cluster.path().join("shop");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(cluster.sql("SELECT count(*) FROM _prisma_migrations"), "3");
}

/// Answers every "who leads" with itself and the highest possible token.
struct Impostor {
    addr: String,
}

#[tonic::async_trait]
impl AgentChannel for Impostor {
    type AttachStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

    async fn attach(
        &self,
        _: Request<tonic::Streaming<AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        Err(Status::unavailable("not taking agents"))
    }

    async fn leader(&self, _: Request<LeaderRequest>) -> Result<Response<LeaderInfo>, Status> {
        Ok(Response::new(LeaderInfo {
            address: self.addr.clone(),
            fencing_token: u64::MAX,
            ..LeaderInfo::default()
        }))
    }
}

/// Serves an [`Impostor`] with `tls`'s certificate on a free port; its address.
fn serve_impostor(rt: &tokio::runtime::Runtime, tls: &TlsPaths) -> String {
    let port = free_port();
    let addr = format!("https://127.0.0.1:{port}");
    let server = tls.security().server().expect("TLS server config");
    let impostor = Impostor { addr: addr.clone() };
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(server)
            .unwrap()
            .add_service(AgentChannelServer::new(impostor))
            .serve(format!("127.0.0.1:{port}").parse().unwrap())
            .await
    });
    addr
}

/// An app agent `name` whose coordinators are `coordinators`.
fn probe_agent(cluster: &Cluster, name: &str, coordinators: &[&str]) -> (Proc, std::path::PathBuf) {
    let pki = cluster.pki.as_ref().unwrap();
    let state = cluster.path().join(format!("{name}-state"));
    let config = cluster.path().join(format!("{name}.toml"));
    let list = coordinators.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nenvironment = \"{ENV}\"\ncoordinators = [{list}]\nroles = [\"app\"]\nstate_dir = {state:?}\nheartbeat = \"1s\"\n\
             [app]\nmaintenance_on = [\"/bin/true\"]\nmaintenance_off = [\"/bin/true\"]\nrestart = [\"/bin/true\"]\n\
             health_url = \"http://127.0.0.1:1/health\"\n{}",
            pki.agent(ENV, name).toml()
        ),
    )
    .unwrap();
    let proc =
        Proc::spawn(name, Command::new(bin("runway-agent")).arg("--config").arg(&config), cluster.path());
    (proc, state)
}

fn highest_token(state: &Path) -> u64 {
    std::fs::read(state.join("journal.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|journal| journal["highest_token"].as_u64())
        .unwrap_or(0)
}

#[test]
fn an_agent_takes_leader_tokens_only_from_coordinator_identities() {
    let cluster =
        Cluster::start(Options { coordinators: 1, app_hosts: 0, db_host: false, ..Options::default() });
    let pki = cluster.pki.as_ref().unwrap();
    let addr = leader_addr(&cluster);
    let rt = runtime();
    // Same CA, but an operator's certificate: not a coordinator.
    let impostor = serve_impostor(&rt, &pki.operator("mallory", &[ENV]));
    // The control: a certificate with a coordinator identity.
    let rogue = serve_impostor(&rt, &pki.coordinator("rogue", "127.0.0.1"));
    let (_probe, probe_state) = probe_agent(&cluster, "probe-1", &[&addr, &impostor]);
    let (_control, control_state) = probe_agent(&cluster, "probe-2", &[&addr, &rogue]);

    let token = wait_until("probe-1 to register", Duration::from_secs(20), || {
        Some(highest_token(&probe_state)).filter(|t| *t > 0)
    });
    assert!(token < u64::MAX);
    // The control proves the probe runs and would be believed.
    wait_until("probe-2 to believe the rogue coordinator", Duration::from_secs(20), || {
        (highest_token(&control_state) == u64::MAX).then_some(())
    });
    // probe-1 asked the impostor as often (every 3 s); its token stands.
    assert_eq!(highest_token(&probe_state), token, "an answer from a non-coordinator raised the token");
    let agents = cluster.runway(&["agents", "--output", "json"]);
    assert!(String::from_utf8_lossy(&agents.stdout).contains("\"probe-1\""), "probe-1 stays attached");
}

#[test]
fn a_bundle_changed_after_the_operator_signed_it_runs_no_sql() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_env: vec![("RUNWAY_FAILPOINT_TAMPER_BUNDLE".into(), "1".into())],
        ..Options::default()
    });
    let migrations = cluster.path().join("shop");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    let events = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "a tampered bundle must not roll out:\n{events}");
    assert!(
        events.contains("signature does not match this request"),
        "the DB agent says why: {events}\n{}",
        stderr(&out)
    );
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0", "no SQL ran");
    assert!(!cluster.apps[0].in_maintenance());
    let migrate_sent = cluster.journals().iter().any(|(_, entry)| entry.to_string().contains("/migrate/"));
    assert!(!migrate_sent, "the rollout stopped at preflight, before any migrate command");
}
