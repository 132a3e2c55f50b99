//! How a [`RolloutRecord`] is written as JSON: every host named once.
//!
//! A rollout to ten thousand app hosts names each of them in four steps
//! (preflight, maintenance on, restart, maintenance off) and in
//! `previous_versions`: 850 KB of JSON at 10,000 hosts, written and read
//! back (by the leader's feeds) at every transition, and over etcd's 1.5 MiB
//! value limit at about 18,000 hosts. So the record keeps one table of
//! host names (`hosts`), each step names its hosts as index ranges into it
//! (`host_ids`, e.g. `"0-9999,10001"`), and the previous app versions are
//! grouped by version (`previous_version_hosts`, version to index ranges).
//!
//! Records written before (steps with a `hosts` list, `previous_versions`
//! by host) still read the same; the next write uses the table.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    AnalysisRecord, ApprovalGate, DatabaseRecord, RolloutRecord, RolloutState, SignatureRecord, StepKind,
    StepRecord, StepState, TraceRecord,
};

/// Host names in first-seen order, and each one's index.
#[derive(Default)]
struct HostTable<'a> {
    names: Vec<&'a str>,
    index: std::collections::HashMap<&'a str, usize>,
}

impl<'a> HostTable<'a> {
    /// `hosts` as index ranges, adding names not seen yet.
    fn ids(&mut self, hosts: impl IntoIterator<Item = &'a str>) -> String {
        let indices = hosts.into_iter().map(|host| {
            let next = self.names.len();
            *self.index.entry(host).or_insert_with(|| {
                self.names.push(host);
                next
            })
        });
        ranges(indices)
    }
}

/// `0,1,2,5` as `0-2,5`.
fn ranges(indices: impl IntoIterator<Item = usize>) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in indices {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    let run = |&(start, end): &(usize, usize)| {
        if start == end { start.to_string() } else { format!("{start}-{end}") }
    };
    runs.iter().map(run).collect::<Vec<_>>().join(",")
}

/// The names `ids` (as [`ranges`] writes them) stand for in `table`.
fn names(ids: &str, table: &[String]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for run in ids.split(',').filter(|r| !r.is_empty()) {
        let number = |n: &str| n.parse::<usize>().map_err(|_| format!("bad host range {run:?}"));
        let (start, end) = match run.split_once('-') {
            Some((start, end)) => (number(start)?, number(end)?),
            None => (number(run)?, number(run)?),
        };
        let named = table.get(start..=end).ok_or_else(|| {
            format!("host range {run:?} is outside the record's {} host names", table.len())
        })?;
        names.extend(named.iter().cloned());
    }
    Ok(names)
}

#[derive(Serialize)]
struct StepOut<'a> {
    kind: StepKind,
    host_ids: String,
    state: StepState,
    attempt: u32,
    error: &'a str,
    recovery: bool,
}

/// The record as written: the fields of [`RolloutRecord`] (with its serde
/// attributes), the host table, and steps and versions naming hosts by index.
#[derive(Serialize)]
struct RecordOut<'a> {
    id: &'a str,
    environment: &'a str,
    bundle_digest: &'a str,
    app_version: &'a str,
    state: RolloutState,
    hosts: Vec<&'a str>,
    steps: Vec<StepOut<'a>>,
    error: &'a str,
    created_unix_ms: i64,
    updated_unix_ms: i64,
    coordinator: &'a str,
    cancel_requested: bool,
    allow_danger: &'a [String],
    started_by: &'a str,
    /// The typed plan, protobuf as hex.
    #[serde(skip_serializing_if = "String::is_empty")]
    plan: String,
    backup: &'a str,
    refused: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    previous_version_hosts: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: &'a Option<ApprovalGate>,
    signature: &'a Option<SignatureRecord>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notify: &'a [String],
    trace: &'a TraceRecord,
    #[serde(skip_serializing_if = "<[DatabaseRecord]>::is_empty")]
    databases: &'a [DatabaseRecord],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    skipped_hosts: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_signature: &'a Option<SignatureRecord>,
    #[serde(skip_serializing_if = "AnalysisRecord::is_empty")]
    analysis: &'a AnalysisRecord,
}

impl Serialize for RolloutRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Every field, so a new one does not compile until it is written here.
        let RolloutRecord {
            id,
            environment,
            bundle_digest,
            app_version,
            state,
            steps,
            error,
            created_unix_ms,
            updated_unix_ms,
            coordinator,
            cancel_requested,
            allow_danger,
            started_by,
            plan,
            backup,
            refused,
            previous_versions,
            approval,
            signature,
            notify,
            trace,
            databases,
            skipped_hosts,
            rollback_signature,
            analysis,
        } = self;
        let mut table = HostTable::default();
        let steps = steps
            .iter()
            .map(|s| StepOut {
                kind: s.kind,
                host_ids: table.ids(s.hosts.iter().map(String::as_str)),
                state: s.state,
                attempt: s.attempt,
                error: &s.error,
                recovery: s.recovery,
            })
            .collect();
        let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (host, version) in previous_versions {
            by_version.entry(version).or_default().push(host);
        }
        let previous_version_hosts =
            by_version.into_iter().map(|(version, hosts)| (version, table.ids(hosts))).collect();
        RecordOut {
            id,
            environment,
            bundle_digest,
            app_version,
            state: *state,
            hosts: table.names,
            steps,
            error,
            created_unix_ms: *created_unix_ms,
            updated_unix_ms: *updated_unix_ms,
            coordinator,
            cancel_requested: *cancel_requested,
            allow_danger,
            started_by,
            plan: plan.as_ref().map(|p| hex::encode(prost::Message::encode_to_vec(p))).unwrap_or_default(),
            backup,
            refused: *refused,
            previous_version_hosts,
            approval,
            signature,
            notify,
            trace,
            databases,
            skipped_hosts,
            rollback_signature,
            analysis,
        }
        .serialize(serializer)
    }
}

#[derive(Deserialize)]
struct StepIn {
    kind: StepKind,
    /// Written before the host table.
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    host_ids: Option<String>,
    state: StepState,
    attempt: u32,
    error: String,
    recovery: bool,
}

/// The record as read: either form.
#[derive(Deserialize)]
struct RecordIn {
    id: String,
    environment: String,
    bundle_digest: String,
    app_version: String,
    state: RolloutState,
    #[serde(default)]
    hosts: Vec<String>,
    steps: Vec<StepIn>,
    error: String,
    created_unix_ms: i64,
    updated_unix_ms: i64,
    coordinator: String,
    cancel_requested: bool,
    #[serde(default)]
    allow_danger: Vec<String>,
    #[serde(default)]
    started_by: String,
    /// The typed plan, protobuf as hex. (Records written before it had a
    /// JSON `plan_json`, read as no plan.)
    #[serde(default)]
    plan: String,
    #[serde(default)]
    backup: String,
    #[serde(default)]
    refused: bool,
    /// Written before the host table: version by host.
    #[serde(default)]
    previous_versions: BTreeMap<String, String>,
    #[serde(default)]
    previous_version_hosts: BTreeMap<String, String>,
    #[serde(default)]
    approval: Option<ApprovalGate>,
    #[serde(default)]
    signature: Option<SignatureRecord>,
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default)]
    trace: TraceRecord,
    #[serde(default)]
    databases: Vec<DatabaseRecord>,
    #[serde(default)]
    skipped_hosts: Vec<String>,
    #[serde(default)]
    rollback_signature: Option<SignatureRecord>,
    #[serde(default)]
    analysis: AnalysisRecord,
}

impl<'de> Deserialize<'de> for RolloutRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let RecordIn {
            id,
            environment,
            bundle_digest,
            app_version,
            state,
            hosts: table,
            steps,
            error,
            created_unix_ms,
            updated_unix_ms,
            coordinator,
            cancel_requested,
            allow_danger,
            started_by,
            plan,
            backup,
            refused,
            mut previous_versions,
            previous_version_hosts,
            approval,
            signature,
            notify,
            trace,
            databases,
            skipped_hosts,
            rollback_signature,
            analysis,
        } = RecordIn::deserialize(deserializer)?;
        let steps = steps
            .into_iter()
            .map(|s| {
                let hosts = match &s.host_ids {
                    Some(ids) => names(ids, &table).map_err(D::Error::custom)?,
                    None => s.hosts,
                };
                Ok(StepRecord {
                    kind: s.kind,
                    hosts,
                    state: s.state,
                    attempt: s.attempt,
                    error: s.error,
                    recovery: s.recovery,
                })
            })
            .collect::<Result<_, D::Error>>()?;
        for (version, ids) in previous_version_hosts {
            for host in names(&ids, &table).map_err(D::Error::custom)? {
                previous_versions.insert(host, version.clone());
            }
        }
        let plan = match plan.as_str() {
            "" => None,
            text => {
                let bytes = hex::decode(text).map_err(|e| D::Error::custom(format!("plan: {e}")))?;
                Some(
                    prost::Message::decode(bytes.as_slice())
                        .map_err(|e| D::Error::custom(format!("plan: {e}")))?,
                )
            }
        };
        Ok(RolloutRecord {
            id,
            environment,
            bundle_digest,
            app_version,
            state,
            steps,
            error,
            created_unix_ms,
            updated_unix_ms,
            coordinator,
            cancel_requested,
            allow_danger,
            started_by,
            plan,
            backup,
            refused,
            previous_versions,
            approval,
            signature,
            notify,
            trace,
            databases,
            skipped_hosts,
            rollback_signature,
            analysis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: StepKind, hosts: &[String]) -> StepRecord {
        StepRecord {
            kind,
            hosts: hosts.to_vec(),
            state: StepState::Pending,
            attempt: 1,
            error: String::new(),
            recovery: false,
        }
    }

    fn fleet(apps: usize) -> RolloutRecord {
        let apps: Vec<String> = (1..=apps).map(|i| format!("app-{i:05}")).collect();
        let mut everyone = apps.clone();
        everyone.push("db-1/orders".into());
        RolloutRecord {
            id: "r1".into(),
            steps: vec![
                step(StepKind::Preflight, &everyone),
                step(StepKind::MaintenanceOn, &apps),
                step(StepKind::Migrate, &everyone[apps.len()..]),
                step(StepKind::Restart, &apps),
            ],
            previous_versions: apps
                .iter()
                .enumerate()
                .map(|(i, host)| (host.clone(), if i % 3 == 0 { "v1" } else { "v2" }.to_owned()))
                .collect(),
            notify: vec!["chat".into()],
            ..RolloutRecord::default()
        }
    }

    #[test]
    fn ids_are_ranges_and_read_back() {
        let table: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
        assert_eq!(ranges([0, 1, 2, 5, 7, 6]), "0-2,5,7,6");
        assert_eq!(ranges([]), "");
        assert_eq!(names("0-2,5,7,6", &table).unwrap(), ["h0", "h1", "h2", "h5", "h7", "h6"]);
        assert_eq!(names("", &table).unwrap(), Vec::<String>::new());
        assert!(names("3-9", &table).unwrap_err().contains("outside the record's 8 host names"));
        assert!(names("x", &table).unwrap_err().contains("bad host range"));
    }

    #[test]
    fn a_record_names_each_host_once_and_reads_back_the_same() {
        let record = fleet(10_000);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<RolloutRecord>(&json).unwrap(), record);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["hosts"].as_array().unwrap().len(), 10_001);
        assert_eq!(value["steps"][1]["host_ids"], "0-9999");
        assert_eq!(value["steps"][2]["host_ids"], "10000");
        // 10,001 names of 11 bytes, written once: not four times over.
        assert!(json.len() < 200_000, "{} bytes", json.len());
    }

    #[test]
    fn a_record_written_before_the_host_table_reads_the_same() {
        let record = fleet(3);
        // The derived form of the fields, as records were written before.
        let mut old = serde_json::to_value(&record).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("hosts");
        object.remove("previous_version_hosts");
        object.insert("steps".into(), serde_json::to_value(&record.steps).unwrap());
        object.insert("previous_versions".into(), serde_json::to_value(&record.previous_versions).unwrap());
        assert_eq!(serde_json::from_value::<RolloutRecord>(old).unwrap(), record);
    }

    #[test]
    fn step_spans_read_back_and_records_without_them_still_read() {
        let mut record = fleet(2);
        record.trace = TraceRecord::start(None);
        let span = super::super::SpanRecord { span: record.trace.span.clone(), started_unix_ms: 7 };
        record.trace.steps.insert("migrate/1".into(), span);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["trace"]["steps"]["migrate/1"]["started_unix_ms"], 7);
        assert_eq!(serde_json::from_value::<RolloutRecord>(json.clone()).unwrap(), record);
        // Saved before step spans were: no `steps` in the trace.
        let mut old = json.clone();
        old["trace"].as_object_mut().unwrap().remove("steps");
        assert!(serde_json::from_value::<RolloutRecord>(old).unwrap().trace.steps.is_empty());
        // Hostile input is an error, never a panic; an unreadable span is no span.
        for bad in [
            serde_json::json!("x"),
            serde_json::json!({"migrate/1": 3}),
            serde_json::json!({"a": {"span": 1}}),
        ] {
            let mut hostile = json.clone();
            hostile["trace"]["steps"] = bad;
            assert!(serde_json::from_value::<RolloutRecord>(hostile).is_err());
        }
        let mut garbage = json;
        garbage["trace"]["steps"]["migrate/1"] =
            serde_json::json!({"span": "00-zz", "started_unix_ms": i64::MAX});
        let read = serde_json::from_value::<RolloutRecord>(garbage).unwrap();
        assert_eq!(read.trace.steps["migrate/1"].context(), None);
        let _ = read.trace.steps["migrate/1"].started();
    }

    #[test]
    fn a_range_outside_the_table_is_an_error_not_a_panic() {
        let mut value = serde_json::to_value(fleet(3)).unwrap();
        value["steps"][0]["host_ids"] = "0-40".into();
        let error = serde_json::from_value::<RolloutRecord>(value).unwrap_err().to_string();
        assert!(error.contains("outside the record's 4 host names"), "{error}");
    }
}
