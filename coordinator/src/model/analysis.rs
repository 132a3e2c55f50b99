//! What a rollout's analysis counted so far, saved with the rollout so a
//! new leader continues counting where the old one stopped: each
//! measurement's event and the count it changed are one etcd transaction.

use serde::{Deserialize, Serialize};

/// The analysis of one rollout: a tally per phase and check, and the
/// `monitor` phase after success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tallies: Vec<AnalysisTally>,
    /// Set when the rollout succeeded in an environment with `monitor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorRecord>,
}

/// The measurements of one check in one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisTally {
    /// `canary`, `watch` or `monitor`.
    pub phase: String,
    /// The check's name.
    pub check: String,
    /// Measurements taken and saved.
    pub measurements: u32,
    /// Failed ones (inconclusive ones too with `inconclusive = "fail"`).
    pub failed: u32,
    /// Inconclusive ones (no data, NaN, an error, Prometheus unreachable).
    pub inconclusive: u32,
    /// Inconclusive ones since the last conclusive one.
    pub consecutive_inconclusive: u32,
    /// When the last one was taken; the next is due an interval later.
    pub last_unix_ms: i64,
}

/// Where the `monitor` phase after success stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorState {
    /// Measuring until `until_unix_ms`.
    #[default]
    Monitoring,
    /// The whole phase passed.
    Passed,
    /// An analysis failed: webhooks were told (`degraded`), and with
    /// `on_monitor_failure = "rollback"` the rollout rolled back.
    Degraded,
    /// A newer rollout in the environment ended it.
    Superseded,
}

impl MonitorState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Monitoring => "monitoring",
            Self::Passed => "passed",
            Self::Degraded => "degraded",
            Self::Superseded => "superseded",
        }
    }
}

/// The `monitor` phase of a succeeded rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorRecord {
    pub state: MonitorState,
    pub started_unix_ms: i64,
    pub until_unix_ms: i64,
    /// Why it ended degraded or superseded.
    #[serde(default)]
    pub reason: String,
}

impl AnalysisRecord {
    /// The tally of `check` in `phase`, added when missing.
    pub fn tally(&mut self, phase: &str, check: &str) -> &mut AnalysisTally {
        let at = match self.tallies.iter().position(|t| t.phase == phase && t.check == check) {
            Some(at) => at,
            None => {
                self.tallies.push(AnalysisTally {
                    phase: phase.to_owned(),
                    check: check.to_owned(),
                    ..AnalysisTally::default()
                });
                self.tallies.len() - 1
            }
        };
        &mut self.tallies[at]
    }

    /// Whether the rollout is in its `monitor` phase now.
    pub fn monitoring(&self) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.state == MonitorState::Monitoring)
    }

    pub fn is_empty(&self) -> bool {
        self.tallies.is_empty() && self.monitor.is_none()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{AnalysisTally, MonitorRecord, MonitorState, RolloutRecord};

    /// The counts are saved with the rollout; a record written before
    /// analysis existed reads with none.
    #[test]
    fn counts_and_the_monitor_survive_a_save() {
        let mut record =
            RolloutRecord { id: "r1".into(), environment: "prod".into(), ..RolloutRecord::default() };
        let before = serde_json::to_string(&record).unwrap();
        assert!(!before.contains("analysis"), "nothing written without analysis: {before}");
        *record.analysis.tally("canary", "errors") = AnalysisTally {
            phase: "canary".into(),
            check: "errors".into(),
            measurements: 3,
            failed: 2,
            ..AnalysisTally::default()
        };
        record.analysis.tally("canary", "errors").measurements += 1;
        assert_eq!(record.analysis.tallies.len(), 1, "one tally per phase and check");
        record.analysis.monitor = Some(MonitorRecord {
            state: MonitorState::Monitoring,
            started_unix_ms: 1,
            until_unix_ms: 2,
            reason: String::new(),
        });
        let json = serde_json::to_string(&record).unwrap();
        let read: RolloutRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(read, record);
        assert!(read.analysis.monitoring());
        assert_eq!(read.analysis.tallies[0].measurements, 4);
        let old: RolloutRecord = serde_json::from_str(&before).unwrap();
        assert!(old.analysis.is_empty());
        let hostile = json.replace("\"failed\":2", "\"failed\":\"two\"");
        assert!(
            serde_json::from_str::<RolloutRecord>(&hostile).is_err(),
            "a bad count is an error, not a panic"
        );
    }
}
