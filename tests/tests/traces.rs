//! OpenTelemetry traces end to end: every process sends its spans over
//! OTLP/gRPC to a real receiver started here, and one rollout is one trace
//! with spans from the CLI, the coordinator and all three agents, parented
//! as the rollout ran (CLI → rollout → step → command on the coordinator →
//! command on the agent → each migration). After a leader SIGKILL, the new
//! leader's spans continue the same trace under the same rollout span, and
//! no span is left without its parent, even when the leader dies with a
//! migration running. Spans also reach a receiver that requires (mutual)
//! TLS, and an exporter that does not trust its certificate sends none.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runway_tests::cluster::{Cluster, Options};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::otlp::{OtlpReceiver, ReceivedSpan};
use runway_tests::pki::Pki;
use runway_tests::watch::Watch;

/// Every span of `trace` once the rollout span has arrived (the last one a
/// coordinator sends) and every process had time to send what it ended.
fn trace_of(receiver: &OtlpReceiver, trace: &str) -> Vec<ReceivedSpan> {
    let ended = |spans: &[ReceivedSpan]| spans.iter().any(|s| s.trace_id == trace && s.name == "rollout");
    receiver.wait_for(Duration::from_secs(30), ended);
    // The agents' last batches are sent within their 0.5 s schedule.
    std::thread::sleep(Duration::from_secs(2));
    receiver.spans().into_iter().filter(|s| s.trace_id == trace).collect()
}

/// The trace id the CLI printed with the rollout id (`rollout_started`).
fn printed_trace_id(events: &[serde_json::Value]) -> String {
    let started = events.iter().find(|e| e["kind"] == "rollout_started").expect("a rollout_started event");
    let message = started["message"].as_str().unwrap_or_default();
    message
        .split("(trace ")
        .nth(1)
        .and_then(|rest| rest.get(..32))
        .unwrap_or_else(|| panic!("no trace id in {message:?}"))
        .to_owned()
}

fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == id)
}

fn start_traced<'a>(receiver: &'a OtlpReceiver, migrations: &'a std::path::Path) -> Vec<&'a str> {
    let mut args = rollout_start_args(migrations, "v2");
    args.extend(["--leader-timeout", "60", "--otlp-endpoint", &receiver.endpoint]);
    args
}

/// Every span of the trace hangs under a span of the trace, but its one
/// root (the CLI's); each step and each coordinator command has one span
/// id. A span id arrives twice only after a failover (`killed`): the dead
/// leader sent a step's spans and died before it saved the step's end, so
/// the leader that resumed the step sent them again, under the same ids
/// and parents (at least once: never a span without its parent).
fn assert_no_orphan_and_each_once(spans: &[ReceivedSpan], killed: Option<&str>) {
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    assert_eq!(roots[0].service, "runway-cli");
    let orphans: Vec<&ReceivedSpan> =
        spans.iter().filter(|s| !s.parent.is_empty() && by_id(spans, &s.parent).is_none()).collect();
    assert!(orphans.is_empty(), "spans whose parent never arrived: {orphans:#?}");
    let mut copies: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.service == "runway-coordinator" && s.name != "rollout.run") {
        copies.entry(span.span_id.as_str()).or_default().push(span);
    }
    for sent in copies.values().filter(|c| c.len() > 1) {
        let resent_after_failover = sent.len() == 2
            && killed.is_some_and(|k| sent[0].host == k && sent[1].host != k)
            && sent[0].parent == sent[1].parent
            && sent[0].name == sent[1].name;
        assert!(resent_after_failover, "sent twice, not by a dead leader and its successor: {sent:#?}");
    }
    let mut steps: BTreeMap<(&str, &str, &str), BTreeSet<&str>> = BTreeMap::new();
    for step in spans.iter().filter(|s| s.name == "step") {
        let key = (step.attribute("step"), step.attribute("recovery"), step.attribute("attempt"));
        steps.entry(key).or_default().insert(&step.span_id);
    }
    for (key, ids) in &steps {
        assert_eq!(ids.len(), 1, "two spans for step {key:?}: {ids:?}");
    }
    let mut commands: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for command in spans.iter().filter(|s| s.service == "runway-coordinator" && s.name == "command") {
        commands.entry(command.attribute("command_id")).or_default().insert(&command.span_id);
    }
    for (command, ids) in &commands {
        assert_eq!(ids.len(), 1, "two spans for command {command}: {ids:?}");
    }
}

#[test]
fn one_rollout_is_one_trace_across_every_process_and_a_failover() {
    let receiver = OtlpReceiver::start();
    let otlp = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), receiver.endpoint.clone())];
    let mut cluster = Cluster::start(Options {
        lease_ttl_secs: 2,
        coordinator_env: otlp.clone(),
        agent_env: otlp,
        ..Options::default()
    });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);

    // One rollout, nothing in the way.
    let (status, events, stderr) =
        Watch::start(&cluster, &start_traced(&receiver, &migrations)).finish(Duration::from_secs(120));
    assert!(status.success(), "rollout failed ({status}): {stderr}\n{events:#?}");
    let rollout_id = events[0]["rollout_id"].as_str().expect("a rollout id").to_owned();
    let cli = receiver.wait_for(Duration::from_secs(10), |s| s.iter().any(|s| s.service == "runway-cli"));
    let cli = cli.iter().find(|s| s.service == "runway-cli").expect("the CLI's span").clone();
    assert_eq!(cli.name, "rollout start");
    assert!(cli.parent.is_empty(), "the CLI starts the trace: {cli:#?}");
    assert_eq!(printed_trace_id(&events), cli.trace_id, "the CLI prints the rollout's trace id");
    let spans = trace_of(&receiver, &cli.trace_id);

    let rollout = spans.iter().find(|s| s.name == "rollout").expect("the rollout span");
    assert_eq!(rollout.parent, cli.span_id, "the rollout span is under the CLI's");
    assert_eq!(rollout.attribute("runway.rollout.id"), rollout_id);
    assert_eq!(rollout.attribute("runway.rollout.state"), "Succeeded");
    let steps: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "step").collect();
    let names: BTreeSet<&str> = steps.iter().map(|s| s.attribute("step")).collect();
    for step in ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"] {
        assert!(names.contains(step), "no span for step {step}: {names:?}");
    }
    assert!(steps.iter().all(|s| s.parent == rollout.span_id), "steps hang under the rollout: {steps:#?}");

    // Every agent command is under a coordinator command, itself under a step
    // (but the backup's release, sent when the rollout ended).
    let agent_commands: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "runway-agent" && !s.attribute("command_id").is_empty())
        .collect();
    let hosts: BTreeSet<&str> = agent_commands.iter().map(|s| s.host.as_str()).collect();
    let mut expected: BTreeSet<&str> = cluster.apps.iter().map(|a| a.name.as_str()).collect();
    expected.insert("db-1");
    assert_eq!(hosts, expected, "spans from all three agents");
    for command in &agent_commands {
        if command.attribute("command_id").contains("/release_backup/") {
            // Sent once the rollout ended, outside any step.
            assert_eq!(command.parent, rollout.span_id, "{command:#?}");
            continue;
        }
        let sent = by_id(&spans, &command.parent)
            .unwrap_or_else(|| panic!("agent command without its coordinator span: {command:#?}"));
        assert_eq!((sent.service.as_str(), sent.name.as_str()), ("runway-coordinator", "command"));
        assert_eq!(sent.attribute("command_id"), command.attribute("command_id"));
        assert_eq!(sent.attribute("host.name"), command.host);
        let step = by_id(&spans, &sent.parent).expect("the command's step span");
        assert_eq!(step.name, "step");
    }

    // Each migration is a span under the DB agent's migrate command.
    let migrate = agent_commands
        .iter()
        .find(|s| s.attribute("command_id").contains("/migrate/"))
        .expect("the DB agent's migrate span");
    let applied: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "migration").collect();
    assert_eq!(applied.len(), SHOP.len(), "one span per migration: {applied:#?}");
    for m in &applied {
        assert_eq!(m.parent, migrate.span_id, "{m:#?}");
        assert_eq!(m.attribute("db.system"), "postgresql");
        assert_eq!(m.attribute("db.namespace"), "app");
    }
    for (name, _) in SHOP {
        assert!(applied.iter().any(|m| m.attribute("runway.migration") == *name), "no span for {name}");
    }
    // The backup's work shows up under the DB agent's backup command.
    let backup =
        agent_commands.iter().find(|s| s.attribute("command_id").contains("/backup/")).expect("backup");
    let under_backup: BTreeSet<&str> =
        spans.iter().filter(|s| s.parent == backup.span_id).map(|s| s.name.as_str()).collect();
    assert!(under_backup.contains("pg_dump") && under_backup.contains("verify"), "{under_backup:?}");
    // No credentials in any attribute.
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("postgres://") && !value.contains("password"),
                "{key}={value} in {span:#?}"
            );
        }
    }

    // A second rollout; the leader is SIGKILLed once its first step ended.
    write_migrations(
        &migrations,
        &[("20240301000000_notes", "CREATE TABLE \"Note\" (\"id\" SERIAL PRIMARY KEY, \"text\" TEXT);\n")],
    );
    let mut watch = Watch::start(&cluster, &start_traced(&receiver, &migrations));
    let mut killed = None;
    while let Some(event) = watch.next(Duration::from_secs(90)) {
        if killed.is_none() && event["kind"] == "step_succeeded" {
            killed = Some(cluster.kill_and_restart_leader());
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "rollout failed ({status}): {stderr}\n{events:#?}");
    let killed = killed.expect("the leader was killed");
    let trace = printed_trace_id(&events);
    let spans = trace_of(&receiver, &trace);
    let rollout = spans.iter().find(|s| s.name == "rollout").expect("the rollout span");
    assert_ne!(rollout.host, killed, "the new leader ends the rollout");
    let after: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "step" && s.service == "runway-coordinator" && s.host != killed)
        .collect();
    let names: BTreeSet<&str> = after.iter().map(|s| s.attribute("step")).collect();
    assert!(names.contains("migrate") && names.contains("maintenance_off"), "new leader's steps: {names:?}");
    let all_steps = spans.iter().filter(|s| s.name == "step");
    assert!(all_steps.clone().all(|s| s.parent == rollout.span_id), "{:#?}", all_steps.collect::<Vec<_>>());
    let agents: BTreeSet<&str> =
        spans.iter().filter(|s| s.service == "runway-agent").map(|s| s.host.as_str()).collect();
    assert_eq!(agents.len(), 3, "all three agents' spans are on the trace after the failover: {agents:?}");
    let migration = spans.iter().find(|s| s.name == "migration").expect("the new migration's span");
    assert_eq!(migration.attribute("runway.migration"), "20240301000000_notes");
    assert_no_orphan_and_each_once(&spans, Some(&killed));
}

/// The leader is SIGKILLed as the migrate step starts: the DB agent is
/// applying the migrations the dead leader sent, the backup step has just
/// ended. The new leader re-attaches to the migration and ends the step;
/// every span of the trace arrives with its parent, each step and command
/// span once.
#[test]
fn a_leader_killed_as_migrate_starts_leaves_no_span_without_its_parent() {
    let receiver = OtlpReceiver::start();
    let otlp = vec![("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), receiver.endpoint.clone())];
    let mut agent_env = otlp.clone();
    // The migration is still running on the DB host when its leader dies.
    agent_env.push(("RUNWAY_FAILPOINT_HOLD_MS".to_owned(), "1500".to_owned()));
    let mut cluster =
        Cluster::start(Options { lease_ttl_secs: 2, coordinator_env: otlp, agent_env, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let mut watch = Watch::start(&cluster, &start_traced(&receiver, &migrations));
    let mut killed = None;
    while let Some(event) = watch.next(Duration::from_secs(120)) {
        if killed.is_none() && event["step"] == "migrate" && event["kind"] == "progress" {
            killed = Some(cluster.kill_and_restart_leader());
        }
        if event["terminal"] == true {
            break;
        }
    }
    let (status, events, stderr) = watch.finish(Duration::from_secs(30));
    assert!(status.success(), "rollout failed ({status}): {stderr}\n{events:#?}");
    let killed = killed.expect("the leader was killed as migrate started");
    let spans = trace_of(&receiver, &printed_trace_id(&events));
    assert_no_orphan_and_each_once(&spans, Some(&killed));

    // The DB agent's migrate command hangs under the coordinator's span for
    // it, which the new leader ended; the backup's, under the dead leader's.
    let agent = |step: &str| {
        spans
            .iter()
            .find(|s| s.service == "runway-agent" && s.attribute("command_id").contains(&format!("/{step}/")))
            .unwrap_or_else(|| panic!("the DB agent's {step} span: {spans:#?}"))
    };
    let migrate = by_id(&spans, &agent("migrate").parent).expect("the migrate command's span");
    assert_eq!((migrate.name.as_str(), migrate.service.as_str()), ("command", "runway-coordinator"));
    assert_ne!(migrate.host, killed, "the new leader ends the migrate command");
    let backup = by_id(&spans, &agent("backup").parent).expect("the backup command's span");
    assert_eq!(backup.host, killed, "the dead leader ended the backup and sent its span before it died");
    let under_migrate =
        spans.iter().filter(|s| s.name == "migration" && s.parent == agent("migrate").span_id);
    assert_eq!(under_migrate.count(), SHOP.len(), "each migration under the DB agent's migrate span");
    for step in ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"] {
        assert!(spans.iter().any(|s| s.name == "step" && s.attribute("step") == step), "no span for {step}");
    }
}

/// Every binary sends its spans to a receiver that requires mutual TLS:
/// the coordinators through `[telemetry] otlp_*` keys, the agents through
/// the standard variables, the CLI through its flags. A CLI that trusts
/// another CA sends nothing, and the rollout runs all the same.
#[test]
fn spans_reach_a_receiver_that_requires_tls_and_a_wrong_ca_sends_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::create(dir.path());
    let other = Pki::create(&dir.path().join("other"));
    let server = pki.server("otlp-receiver", &["127.0.0.1".to_owned()]);
    let client = pki.server("otlp-client", &["otlp-client".to_owned()]);
    let receiver = OtlpReceiver::start_tls(&server, Some(&pki.ca_path()));
    assert!(receiver.endpoint.starts_with("https://"), "{}", receiver.endpoint);
    let path = |p: &std::path::Path| p.display().to_string();
    let coordinator_toml = format!(
        "[telemetry]\notlp_endpoint = {:?}\notlp_ca_file = {:?}\notlp_client_cert_file = {:?}\notlp_client_key_file = {:?}\n",
        receiver.endpoint,
        path(&pki.ca_path()),
        path(&client.cert),
        path(&client.key),
    );
    let agent_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), receiver.endpoint.clone()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE".to_owned(), path(&pki.ca_path())),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".to_owned(), path(&client.cert)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY".to_owned(), path(&client.key)),
    ];
    let cluster = Cluster::start(Options { coordinator_toml, agent_env, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let cli_tls = |ca: &std::path::Path| {
        vec![
            "--otlp-ca-file".to_owned(),
            path(ca),
            "--otlp-client-cert-file".to_owned(),
            path(&client.cert),
            "--otlp-client-key-file".to_owned(),
            path(&client.key),
        ]
    };

    let trusted = cli_tls(&pki.ca_path());
    let mut args = start_traced(&receiver, &migrations);
    args.extend(trusted.iter().map(String::as_str));
    let (status, events, stderr) = Watch::start(&cluster, &args).finish(Duration::from_secs(120));
    assert!(status.success(), "rollout failed ({status}): {stderr}\n{events:#?}");
    let spans = trace_of(&receiver, &printed_trace_id(&events));
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, BTreeSet::from(["runway-agent", "runway-cli", "runway-coordinator"]), "over TLS");
    let agents: BTreeSet<&str> =
        spans.iter().filter(|s| s.service == "runway-agent").map(|s| s.host.as_str()).collect();
    assert_eq!(agents.len(), 3, "all three agents' spans arrive over TLS: {agents:?}");
    assert_no_orphan_and_each_once(&spans, None);

    // The CLI trusts another CA: its span never arrives; the others do.
    write_migrations(
        &migrations,
        &[("20240301000000_notes", "CREATE TABLE \"Note\" (\"id\" SERIAL PRIMARY KEY);\n")],
    );
    let untrusting = cli_tls(&other.ca_path());
    let mut args = start_traced(&receiver, &migrations);
    args.extend(untrusting.iter().map(String::as_str));
    let (status, events, stderr) = Watch::start(&cluster, &args).finish(Duration::from_secs(120));
    assert!(status.success(), "rollout failed ({status}): {stderr}\n{events:#?}");
    let spans = trace_of(&receiver, &printed_trace_id(&events));
    let rollout = spans.iter().find(|s| s.name == "rollout").expect("the coordinator's rollout span");
    assert!(!rollout.parent.is_empty(), "the rollout continues the CLI's trace");
    assert!(
        spans.iter().all(|s| s.service != "runway-cli"),
        "a CLI that does not trust the receiver's CA delivered a span: {spans:#?}"
    );
}
