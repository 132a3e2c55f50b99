//! Restores and rollbacks act on an operator's signature, checked by the
//! DB agent itself: a compromised coordinator cannot restore an old backup
//! over production or roll a rollout back on its own word.
//!
//! The coordinator here runs with `RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES`
//! (test builds only): it passes on whatever signature a request carries,
//! as a compromised one would, so every refusal below is the DB agent's.
//! Real etcd, PostgreSQL, coordinator, agents and CLI as processes; the
//! requests with bad signatures come from a gRPC client in this process
//! holding the `ops` operator's real certificate.
//!
//! 1. A restore whose signature is missing, forged (another CA), for
//!    another backup, or from an operator without `runway://restore/ENV`
//!    is refused and the database is untouched; the legitimate one runs;
//!    the same signed request again is refused as a replay.
//! 2. A rollback signed for another rollout is refused before its downs or
//!    its restore touch the database; an operator's real rollback (the CLI
//!    signs it) runs and keeps the rows written since.

use std::time::Duration;

use runway_identity::signature::{self, Operation, OperationClaim};
use runway_proto::v1::operator_client::OperatorClient;
use runway_proto::v1::{
    BackupCommandRequest, CommandOutcome, CommandResult, GetRolloutRequest, OperationSignature,
    RestoreBackup, RollbackRolloutRequest, RolloutState, VerifyBackup, backup_command_request,
    backup_command_update,
};
use runway_tests::cluster::{Cluster, ENV, Options};
use runway_tests::fixtures::{PROFILE, SHOP, rollout_start_args, write_with_downs};
use runway_tests::pki::{Pki, TlsPaths};
use runway_tests::watch::{json_lines, rollout_id};

/// `operation` of `subject` in `environment`, signed with `signer`'s key.
fn signed(signer: &TlsPaths, operation: Operation, environment: &str, subject: &str) -> OperationSignature {
    let security = signer.security();
    let credentials = security.credentials().expect("TLS credentials");
    let claim = OperationClaim {
        operation,
        environment: environment.to_owned(),
        subject: subject.to_owned(),
        nonce: signature::new_nonce(),
        signed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    OperationSignature {
        certificate: credentials.certificate().to_vec(),
        signature: signature::sign(credentials.key_pem(), &claim.message()).expect("sign"),
        signed_at: claim.signed_at,
        nonce: claim.nonce,
    }
}

/// A client of the leader as `caller`.
struct Client {
    rt: tokio::runtime::Runtime,
    operator: OperatorClient<tonic::transport::Channel>,
}

impl Client {
    fn new(cluster: &Cluster, caller: &TlsPaths) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let leader = cluster.leader().expect("a leader");
        let addr = cluster.coordinators[leader].addr.clone();
        let security = caller.security();
        let channel = rt.block_on(security.connect(security.endpoint(&addr).unwrap())).expect("connect");
        Client { rt, operator: OperatorClient::new(channel) }
    }

    /// Runs a backup operation and returns the DB agent's result.
    fn backup(&mut self, action: backup_command_request::Action) -> CommandResult {
        let request = BackupCommandRequest {
            environment: ENV.into(),
            action: Some(action),
            ..BackupCommandRequest::default()
        };
        self.rt.block_on(async {
            // The operation before may still hold the environment for a moment.
            let mut tries = 0;
            let mut stream = loop {
                match self.operator.run_backup_command(request.clone()).await {
                    Ok(stream) => break stream.into_inner(),
                    Err(status) if status.message().contains("is busy") && tries < 100 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(status) => panic!("not forwarded: {status:?}"),
                }
            };
            while let Some(update) = stream.message().await.expect("update") {
                if let Some(backup_command_update::Kind::Result(result)) = update.kind {
                    return result;
                }
            }
            panic!("the stream ended without a result")
        })
    }

    fn restore(&mut self, name: &str, signature: Option<OperationSignature>) -> CommandResult {
        let restore = RestoreBackup {
            name: name.into(),
            confirmed: true,
            replace: true,
            signature,
            ..RestoreBackup::default()
        };
        self.backup(backup_command_request::Action::Restore(restore))
    }

    fn state(&mut self, id: &str) -> RolloutState {
        let request = GetRolloutRequest { rollout_id: id.into() };
        let rollout = self.rt.block_on(self.operator.get_rollout(request)).expect("rollout").into_inner();
        RolloutState::try_from(rollout.state).unwrap_or(RolloutState::Unspecified)
    }
}

fn refused(result: &CommandResult, why: &str) {
    assert_eq!(result.outcome, CommandOutcome::Refused as i32, "not refused: {result:?}");
    assert!(result.error.contains(why), "the refusal does not say {why:?}: {}", result.error);
}

fn backup_of(cluster: &Cluster, id: &str) -> String {
    let out = cluster.runway(&["rollout", "show", id, "--output", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rollout show JSON");
    shown["backup"].as_str().filter(|b| !b.is_empty()).expect("the rollout took a backup").to_owned()
}

#[test]
fn restores_and_rollbacks_run_only_on_a_fresh_operator_signature_of_their_own() {
    let cluster = Cluster::start(Options {
        coordinators: 1,
        app_hosts: 1,
        coordinator_env: vec![("RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES".into(), "1".into())],
        ..Options::default()
    });
    let (out, events) = cluster.roll_out("v1", SHOP, &[]);
    assert!(out.status.success(), "rollout v1: {}", String::from_utf8_lossy(&out.stderr));
    let first = rollout_id(&events);
    let backup = backup_of(&cluster, &first);
    cluster.sql("INSERT INTO \"User\" (email, name) VALUES ('late@example.com', 'Signed Up Late')");
    let written = cluster.database_state();

    // 1. Restores: every bad signature is refused by the DB agent, and the
    //    customer who signed up after the backup is still there.
    let pki = cluster.pki.as_ref().expect("a TLS cluster");
    let ops = cluster.operator.clone().expect("the ops operator");
    let mut client = Client::new(&cluster, &ops);
    let other_ca = Pki::create(&cluster.path().join("other-ca"));
    let forger = other_ca.operator_with("ops", &[ENV], &[ENV]);
    let deployer = pki.operator_with("deployer", &[ENV], &[]);
    let cases: [(&str, Option<OperationSignature>, &str); 5] = [
        ("missing", None, "no operator signature"),
        (
            "forged",
            Some(signed(&forger, Operation::Restore, ENV, &backup)),
            "does not chain to the runway CA",
        ),
        ("another backup", Some(signed(&ops, Operation::Restore, ENV, "not-this-backup")), "does not match"),
        ("another operation", Some(signed(&ops, Operation::Verify, ENV, &backup)), "does not match"),
        (
            "no restore grant",
            Some(signed(&deployer, Operation::Restore, ENV, &backup)),
            "grants restore to []",
        ),
    ];
    for (case, signature, why) in cases {
        let result = client.restore(&backup, signature);
        refused(&result, why);
        assert_eq!(
            cluster.database_state(),
            written,
            "a restore with a {case} signature touched the database"
        );
    }
    let verify = VerifyBackup { name: backup.clone(), ..VerifyBackup::default() };
    refused(&client.backup(backup_command_request::Action::Verify(verify)), "no operator signature");

    let legitimate = signed(&ops, Operation::Restore, ENV, &backup);
    let result = client.restore(&backup, Some(legitimate.clone()));
    assert_eq!(result.outcome, CommandOutcome::Succeeded as i32, "the signed restore: {result:?}");
    // The backup was taken before v1 migrated: the restore gives back that empty schema.
    assert_eq!(cluster.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
    cluster.sql("CREATE TABLE written_since (note text); INSERT INTO written_since VALUES ('kept')");
    refused(&client.restore(&backup, Some(legitimate)), "replayed signature");
    assert_eq!(
        cluster.sql("SELECT note FROM written_since"),
        "kept",
        "the replayed restore touched the database"
    );
    cluster.sql("DROP TABLE written_since");

    // 2. Rollbacks: one signed for another rollout runs nothing on the
    //    database; the operator's own (signed by the CLI) runs the downs.
    // The database is back before v1; v2 brings v1's migrations and one more.
    let v2 = cluster.path().join("v2");
    write_with_downs(&v2, SHOP, &[PROFILE]);
    let out = cluster.runway(&rollout_start_args(&v2, "v2"));
    let events = json_lines(&out.stdout);
    assert!(out.status.success(), "rollout v2: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let second = rollout_id(&events);
    cluster.sql("INSERT INTO \"Profile\" (\"userId\", avatar) VALUES (1, 'kept.png')");
    let written = cluster.database_state();
    let request = RollbackRolloutRequest {
        rollout_id: second.clone(),
        confirmed: true,
        signature: Some(signed(&ops, Operation::Rollback, ENV, &first)),
        ..RollbackRolloutRequest::default()
    };
    let answer =
        client.rt.block_on(client.operator.rollback_rollout(request)).expect("forwarded").into_inner();
    let ended =
        runway_tests::process::wait_until("the forged rollback to end", Duration::from_secs(90), || {
            let state = client.state(&second);
            (!matches!(state, RolloutState::Running | RolloutState::Pending)).then_some(state)
        });
    assert_ne!(ended, RolloutState::RolledBack, "a rollback signed for another rollout ran");
    assert_eq!(
        cluster.database_state(),
        written,
        "a rollback signed for another rollout touched the database"
    );
    let from = answer.first_seq.to_string();
    let watched = cluster.runway(&["rollout", "watch", &second, "--from-seq", &from, "--output", "json"]);
    let text = String::from_utf8_lossy(&watched.stdout);
    assert!(text.contains("refused") && text.contains("does not match"), "the DB agent says why:\n{text}");

    let v3 = cluster.path().join("v3");
    write_with_downs(&v3, SHOP, &[PROFILE, runway_tests::fixtures::ORDER_STATUS]);
    let out = cluster.runway(&rollout_start_args(&v3, "v3"));
    let events = json_lines(&out.stdout);
    assert!(out.status.success(), "rollout v3: {}\n{events:#?}", String::from_utf8_lossy(&out.stderr));
    let third = rollout_id(&events);
    let back = cluster.runway(&["rollout", "rollback", &third, "--yes", "--watch", "--output", "json"]);
    let text = String::from_utf8_lossy(&back.stdout);
    assert_eq!(client.state(&third), RolloutState::RolledBack, "the signed rollback:\n{text}");
    assert!(text.contains("rollback of") && text.contains("signed by operator ops"), "{text}");
    assert_eq!(cluster.sql("SELECT avatar FROM \"Profile\""), "kept.png", "the rollback kept the rows");
}
