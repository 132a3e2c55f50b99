//! Must-show 2 of issue 11: after a rollout, the leader's and the DB
//! agent's `/metrics` parse as Prometheus text and count the rollout, its
//! steps, the backup and the migrations right. Issue 27: both scrapes pass
//! Prometheus's own lint (`promtool check metrics`: every metric has its
//! HELP text, names follow the conventions), and the daemons, their output
//! redirected to files, wrote plain text there (no ANSI escape codes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runway_tests::cluster::{Cluster, DB, Options, http_get};
use runway_tests::fixtures::{SHOP, rollout_start_args, write_migrations};
use runway_tests::process::{in_ci, wait_until, workspace_root};

/// One sample: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus / OpenMetrics text format (samples only: `#`
/// lines are metadata). Panics on a line that is not a valid sample.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("not a sample: {line:?}"),
        };
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            loop {
                match chars.peek() {
                    Some(&(i, '}')) => {
                        rest = &body[i + 1..];
                        break;
                    }
                    None => panic!("unclosed labels in {line:?}"),
                    _ => {}
                }
                let key: String = chars.by_ref().map(|(_, c)| c).take_while(|c| *c != '=').collect();
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value is quoted in {line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap_or_else(|| panic!("unclosed label value in {line:?}")).1 {
                        '"' => break,
                        '\\' => match chars.next().expect("an escaped character").1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if let Some((_, ',')) = chars.peek() {
                    chars.next();
                }
            }
        }
        let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

/// The sum of the samples named `name` whose labels include `labels`;
/// `None` when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The text of `/metrics` for a client that does not ask for OpenMetrics
/// (`curl`, `promtool`): the Prometheus text format 0.0.4.
fn scrape(ip: &str, port: u16) -> String {
    let (code, body) = http_get(ip, port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("# EOF"), "not OpenMetrics unless asked for:\n{body}");
    body
}

/// The text of `/metrics` asked for as Prometheus asks: OpenMetrics.
fn scrape_openmetrics(ip: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((ip, port)).expect("connect to /metrics");
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let request =
        format!("GET /metrics HTTP/1.1\r\nhost: {ip}\r\naccept: {accept}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.to_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF:\n{body}");
    body.to_owned()
}

/// What `promtool check metrics` says about `text` (empty: no problem),
/// or `None` when promtool is missing outside CI.
fn promtool(text: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                !in_ci(),
                "promtool is missing ({e}); deploy/install-deps.sh installs it (Debian's prometheus)"
            );
            eprintln!("skipping the lint: promtool is not installed (deploy/install-deps.sh installs it)");
            return None;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.success(), said.trim().is_empty(), "promtool's exit and output disagree: {said}");
    Some(said)
}

/// The metric families a scrape declares (`# TYPE NAME KIND`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The metric families `coordinator/src/metrics.rs` and
/// `agent/src/metrics.rs` register: `r.register("NAME", …)` and
/// `r.register_with_unit("NAME", …, Unit::UNIT, …)`, prefixed `runway_`.
/// (A scrape declares only families that have samples.)
fn registered() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["coordinator/src/metrics.rs", "agent/src/metrics.rs"] {
        let source = std::fs::read_to_string(workspace_root().join(file)).expect("read metrics.rs");
        for (call, with_unit) in [("r.register(", false), ("r.register_with_unit(", true)] {
            for (at, _) in source.match_indices(call) {
                let args = &source[at + call.len()..];
                let name = args.split('"').nth(1).expect("a name literal");
                let unit = with_unit.then(|| {
                    let unit = args.split("Unit::").nth(1).expect("a unit");
                    let unit: String = unit.chars().take_while(char::is_ascii_alphabetic).collect();
                    format!("_{}", unit.to_lowercase())
                });
                names.insert(format!("runway_{name}{}", unit.unwrap_or_default()));
            }
        }
    }
    names
}

/// Every `runway_…` name in `text` (PromQL in a dashboard or rules file)
/// that is not one of `families`, with its sample suffixes.
fn unknown_names(text: &str, families: &BTreeSet<String>) -> Vec<String> {
    let mut unknown = Vec::new();
    for (start, _) in text.match_indices("runway_") {
        if text[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String =
            text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let known = std::iter::once(name.as_str())
            .chain(["_bucket", "_sum", "_count", "_total"].iter().filter_map(|s| name.strip_suffix(s)))
            .any(|base| families.contains(base));
        if !known {
            unknown.push(name);
        }
    }
    unknown
}

#[test]
fn the_parser_reads_labels_escapes_and_histograms() {
    let samples = parse(
        "# TYPE a counter\na_total{x=\"1\",y=\"q\\\"uote\"} 3\nb 2.5\nc_bucket{le=\"+Inf\"} 4\n# EOF\n",
    );
    assert_eq!(value(&samples, "a_total", &[("y", "q\"uote")]), Some(3.0));
    assert_eq!(value(&samples, "b", &[]), Some(2.5));
    assert_eq!(value(&samples, "c_bucket", &[("le", "+Inf")]), Some(4.0));
}

#[test]
fn after_a_rollout_the_leader_and_the_db_agent_count_it() {
    let cluster = Cluster::start(Options { metrics: true, ..Options::default() });
    let migrations = cluster.path().join("migrations");
    write_migrations(&migrations, SHOP);
    let out = cluster.runway(&rollout_start_args(&migrations, "v2"));
    assert!(out.status.success(), "rollout failed: {}", String::from_utf8_lossy(&out.stderr));

    let leader = &cluster.coordinators[cluster.leader().expect("a leader")];
    let port = leader.metrics.expect("the leader serves metrics");
    // The CLI sees the end event a moment before the leader counts it.
    let leader_text = wait_until("the leader to count the ended rollout", Duration::from_secs(10), || {
        let text = scrape(&leader.host.ip, port);
        (value(&parse(&text), "runway_rollouts_ended_total", &[("state", "succeeded")]) == Some(1.0))
            .then_some(text)
    });
    let m = parse(&leader_text);
    let get = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    assert_eq!(get("runway_leader", &[]), Some(1.0));
    assert!(get("runway_fencing_token", &[]).unwrap_or(0.0) > 0.0, "no fencing token");
    assert_eq!(get("runway_rollouts_ended_total", &[("environment", "staging")]), Some(1.0));
    assert_eq!(get("runway_rollouts", &[]).unwrap_or(0.0), 0.0, "no rollout runs any more");
    for step in ["preflight", "maintenance_on", "backup", "migrate", "restart", "maintenance_off"] {
        let labels = [("kind", step), ("outcome", "succeeded")];
        assert_eq!(get("runway_step_duration_seconds_count", &labels), Some(1.0), "step {step}");
        assert_eq!(get("runway_step_duration_seconds_count", &[("kind", step)]), Some(1.0), "step {step}");
    }
    let apps = cluster.apps.len() as f64;
    let commands =
        |kind| get("runway_command_duration_seconds_count", &[("kind", kind), ("outcome", "succeeded")]);
    assert_eq!(commands("preflight"), Some(apps + 1.0), "preflight runs on every host");
    assert_eq!(commands("restart"), Some(apps));
    assert_eq!(commands("migrate"), Some(1.0));
    assert_eq!(get("runway_command_duration_seconds_count", &[("outcome", "failed")]), None);
    assert_eq!(get("runway_maintenance_duration_seconds_count", &[("environment", "staging")]), Some(1.0));
    assert_eq!(get("runway_maintenance_started_timestamp_seconds", &[]), None, "maintenance is off");
    assert_eq!(get("runway_agents_connected", &[("environment", "staging"), ("role", "app")]), Some(apps));
    assert_eq!(get("runway_agents_connected", &[("environment", "staging"), ("role", "db")]), Some(1.0));
    assert_eq!(get("runway_agent_connected", &[("agent", "db-1")]), Some(1.0));
    assert!(get("runway_etcd_request_duration_seconds_count", &[("op", "put_fenced")]).unwrap_or(0.0) > 0.0);

    let db = cluster.db.as_ref().expect("a DB host");
    let agent_port = db.metrics.expect("the DB agent serves metrics");
    let agent_text = scrape(&db.host.ip, agent_port);
    let m = parse(&agent_text);
    let get = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    let migrations = SHOP.len() as f64;
    assert_eq!(get("runway_migrations_applied_total", &[]), Some(migrations));
    assert_eq!(get("runway_migration_duration_seconds_count", &[]), Some(migrations));
    assert!(get("runway_backup_size_bytes", &[("database", DB)]).unwrap_or(0.0) > 0.0, "no backup bytes");
    assert_eq!(get("runway_backup_duration_seconds_count", &[("database", DB)]), Some(1.0));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let last = get("runway_backup_last_success_timestamp_seconds", &[("database", DB)]).unwrap_or(0.0);
    assert!(now - last < 600.0 && last <= now + 1.0, "last backup success at {last}, now {now}");
    let agent_commands = |kind| {
        get("runway_agent_command_duration_seconds_count", &[("kind", kind), ("outcome", "succeeded")])
    };
    assert_eq!(agent_commands("preflight"), Some(1.0));
    assert_eq!(agent_commands("backup"), Some(1.0));
    assert_eq!(agent_commands("migrate"), Some(1.0));

    // Prometheus's own lint finds no problem in either scrape. It reads the
    // 0.0.4 format; OpenMetrics (what Prometheus itself asks for) names a
    // counter's family without `_total`, which promtool takes for samples
    // without HELP: the lint does see HELP lines.
    let leader_open = scrape_openmetrics(&leader.host.ip, port);
    let agent_open = scrape_openmetrics(&db.host.ip, agent_port);
    if let Some(said) = promtool(&leader_text) {
        assert_eq!(said, "", "promtool check metrics on the leader's scrape:\n{leader_text}");
        let said = promtool(&agent_text).unwrap();
        assert_eq!(said, "", "promtool check metrics on the DB agent's scrape:\n{agent_text}");
        let said = promtool(&leader_open).unwrap();
        assert!(said.contains("runway_rollouts_ended_total no help text"), "the lint reads HELP: {said}");
    }
    // Both formats carry the same samples.
    for (text, open) in [(&leader_text, &leader_open), (&agent_text, &agent_open)] {
        let names = |t: &str| parse(t).into_iter().map(|s| s.name).collect::<BTreeSet<_>>();
        assert_eq!(names(text), names(open));
    }

    // Every daemon, its output redirected to a file, wrote plain lines there.
    let logs = cluster
        .coordinators
        .iter()
        .map(|c| &c.proc)
        .chain([&db.agent])
        .chain(cluster.apps.iter().map(|a| &a.agent));
    for proc in logs {
        let text = proc.log_text();
        assert!(text.contains(" INFO "), "{} logged nothing at INFO:\n{text}", proc.name);
        assert!(!text.contains('\x1b'), "{} wrote ANSI escape codes to {}", proc.name, proc.log.display());
    }

    // The alerts and the dashboard use only metrics that exist.
    let known = registered();
    let scraped: BTreeSet<String> = families(&leader_open).union(&families(&agent_open)).cloned().collect();
    assert!(scraped.is_subset(&known), "registered() misreads the sources: {scraped:?} vs {known:?}");
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/runway.json"] {
        let text = std::fs::read_to_string(workspace_root().join(file)).expect("read deploy file");
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect("the dashboard is JSON");
        }
        assert_eq!(
            unknown_names(&text, &known),
            Vec::<String>::new(),
            "{file} names unknown metrics; known: {known:?}"
        );
    }

    // Not /metrics: a 404, not the metrics.
    assert_eq!(http_get(&db.host.ip, db.metrics.unwrap(), "/").map(|(code, _)| code), Some(404));
}
