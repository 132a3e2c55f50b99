//! One measurement's verdict, and the count that fails an analysis.
//!
//! As Argo Rollouts counts: a check fails once its failed measurements
//! exceed `failure_limit` (0: the first failure fails it). A measurement
//! without a usable value (no data, NaN, an error, Prometheus unreachable)
//! is inconclusive: with `inconclusive = "fail"` it counts as failed; with
//! `"ignore"` it does not, until more than `consecutive_error_limit` come
//! in a row.

use super::QueryError;
use crate::config::{AnalysisCheck, Compare};
use crate::model::AnalysisTally;

/// What one measurement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Inconclusive,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// One measurement of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub outcome: Outcome,
    /// The value measured (the canaries' with `compare = "baseline"`).
    pub value: Option<f64>,
    /// The baseline's value, with `compare = "baseline"`.
    pub baseline: Option<f64>,
    /// The limit it was held to, as text (`≤ 0.01`, `≤ 0.2 (baseline 0.1 × 2 + 0)`).
    pub limit: String,
    /// Why it is inconclusive.
    pub error: Option<String>,
}

/// Judges `value` (and with `compare = "baseline"` the `baseline`'s) by
/// `check`'s limits.
pub fn judge(
    check: &AnalysisCheck,
    value: Result<f64, QueryError>,
    baseline: Option<Result<f64, QueryError>>,
) -> Measurement {
    let inconclusive = |value: Option<f64>, baseline: Option<f64>, error: &QueryError, limit: String| {
        Measurement { outcome: Outcome::Inconclusive, value, baseline, limit, error: Some(error.to_string()) }
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => return inconclusive(None, None, &e, check.limit()),
    };
    if check.compare == Some(Compare::Baseline) {
        let base = match baseline {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                let e = QueryError::Unreachable(format!("baseline: {e}"));
                return inconclusive(Some(value), None, &e, check.limit());
            }
            None => {
                let e = QueryError::Malformed("no baseline: every host of the rollout restarted".into());
                return inconclusive(Some(value), None, &e, check.limit());
            }
        };
        let limit = base * check.factor.0 + check.margin.0;
        let outcome = if value > limit { Outcome::Failed } else { Outcome::Passed };
        return Measurement {
            outcome,
            value: Some(value),
            baseline: Some(base),
            limit: format!(
                "≤ {} (baseline {} × {} + {})",
                round(limit),
                round(base),
                check.factor,
                check.margin
            ),
            error: None,
        };
    }
    let above = check.max.is_some_and(|max| value > max.0);
    let below = check.min.is_some_and(|min| value < min.0);
    Measurement {
        outcome: if above || below { Outcome::Failed } else { Outcome::Passed },
        value: Some(value),
        baseline: None,
        limit: check.limit(),
        error: None,
    }
}

/// A number as people read it in an event: 6 significant digits.
pub fn round(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return value.to_string();
    }
    let digits = 6 - 1 - value.abs().log10().floor() as i32;
    if digits <= 0 {
        return format!("{value:.0}");
    }
    let text = format!("{value:.*}", digits as usize);
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// Counts `measurement` in `tally`; `Some(why)` when the check failed by it.
pub fn count(check: &AnalysisCheck, tally: &mut AnalysisTally, measurement: &Measurement) -> Option<String> {
    tally.measurements += 1;
    match measurement.outcome {
        Outcome::Passed => tally.consecutive_inconclusive = 0,
        Outcome::Failed => {
            tally.consecutive_inconclusive = 0;
            tally.failed += 1;
        }
        Outcome::Inconclusive => {
            tally.inconclusive += 1;
            tally.consecutive_inconclusive += 1;
            if check.inconclusive == crate::config::Inconclusive::Fail {
                tally.failed += 1;
            }
        }
    }
    if tally.failed > check.failure_limit {
        return Some(format!(
            "{} failed measurement(s), more than failure_limit = {}",
            tally.failed, check.failure_limit
        ));
    }
    if check.inconclusive == crate::config::Inconclusive::Ignore
        && tally.consecutive_inconclusive > check.consecutive_error_limit
    {
        return Some(format!(
            "{} inconclusive measurements in a row, more than consecutive_error_limit = {}",
            tally.consecutive_inconclusive, check.consecutive_error_limit
        ));
    }
    None
}

/// A sentence for the measurement's event: check, query, value, limit, verdict.
pub fn describe(check: &AnalysisCheck, query: &str, m: &Measurement, tally: &AnalysisTally) -> String {
    let value = match (m.value, &m.error) {
        (_, Some(error)) => format!("no value ({error})"),
        (Some(v), None) => round(v),
        (None, None) => "no value".to_owned(),
    };
    let counted = match (m.outcome, check.inconclusive) {
        (Outcome::Inconclusive, crate::config::Inconclusive::Fail) => {
            " (inconclusive = \"fail\": counted as failed)"
        }
        (Outcome::Inconclusive, crate::config::Inconclusive::Ignore) => {
            " (inconclusive = \"ignore\": not counted)"
        }
        _ => "",
    };
    format!(
        "analysis {} {}{counted}: value {value}, limit {}; {} of {} measurement(s) failed (failure_limit {}); query: {query}",
        check.name,
        m.outcome.name(),
        m.limit,
        tally.failed,
        tally.measurements,
        check.failure_limit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> AnalysisCheck {
        toml::from_str(&format!("name = \"errors\"\nquery = \"q\"\n{text}")).unwrap()
    }

    #[test]
    fn limits_and_baselines_decide_each_measurement() {
        let max = check("max = 0.01");
        assert_eq!(judge(&max, Ok(0.05), None).outcome, Outcome::Failed);
        assert_eq!(judge(&max, Ok(0.01), None).outcome, Outcome::Passed);
        let min = check("min = 0.99");
        assert_eq!(judge(&min, Ok(0.95), None).outcome, Outcome::Failed);
        let none = judge(&max, Err(QueryError::NoData), None);
        assert_eq!(
            (none.outcome, none.error.as_deref()),
            (Outcome::Inconclusive, Some("no data: the query matched no series"))
        );
        let baseline = check("compare = \"baseline\"\nfactor = 1.5\nmargin = 0.01");
        let slow = judge(&baseline, Ok(0.2), Some(Ok(0.1)));
        assert_eq!(slow.outcome, Outcome::Failed, "twice as slow is above 0.1 × 1.5 + 0.01");
        assert_eq!(slow.limit, "≤ 0.16 (baseline 0.1 × 1.5 + 0.01)");
        assert_eq!(judge(&baseline, Ok(0.12), Some(Ok(0.1))).outcome, Outcome::Passed);
        assert_eq!(judge(&baseline, Ok(0.12), None).outcome, Outcome::Inconclusive);
        assert_eq!(judge(&baseline, Ok(0.12), Some(Err(QueryError::NoData))).outcome, Outcome::Inconclusive);
    }

    fn run(check: &AnalysisCheck, outcomes: &[Outcome]) -> (AnalysisTally, Option<(usize, String)>) {
        let mut tally = AnalysisTally::default();
        for (i, outcome) in outcomes.iter().enumerate() {
            let m = Measurement {
                outcome: *outcome,
                value: None,
                baseline: None,
                limit: String::new(),
                error: None,
            };
            if let Some(why) = count(check, &mut tally, &m) {
                return (tally, Some((i, why)));
            }
        }
        (tally, None)
    }

    #[test]
    fn failure_limit_and_inconclusive_count_like_argo() {
        use Outcome::*;
        let strict = check("max = 1");
        assert_eq!(
            run(&strict, &[Passed, Passed, Failed]).1.map(|f| f.0),
            Some(2),
            "failure_limit 0: the first failure"
        );
        let lenient = check("max = 1\nfailure_limit = 2");
        let (tally, failed) = run(&lenient, &[Failed, Passed, Failed, Passed, Failed]);
        assert_eq!(failed.map(|f| f.0), Some(4));
        assert_eq!((tally.measurements, tally.failed), (5, 3));
        assert_eq!(
            run(&strict, &[Passed, Inconclusive]).1.map(|f| f.0),
            Some(1),
            "inconclusive = fail counts"
        );
        let mut ignore = check("max = 1\ninconclusive = \"ignore\"\nconsecutive_error_limit = 2");
        assert_eq!(ignore.inconclusive, crate::config::Inconclusive::Ignore);
        let (tally, failed) = run(&ignore, &[Inconclusive, Inconclusive, Passed, Inconclusive, Inconclusive]);
        assert_eq!((failed, tally.inconclusive, tally.failed), (None, 4, 0), "never more than 2 in a row");
        let (_, failed) = run(&ignore, &[Inconclusive, Inconclusive, Inconclusive]);
        assert!(failed.unwrap().1.contains("3 inconclusive measurements in a row"));
        ignore.consecutive_error_limit = 0;
        assert_eq!(run(&ignore, &[Inconclusive]).1.map(|f| f.0), Some(0));
    }

    #[test]
    fn the_event_names_query_value_and_limit() {
        let check = check("max = 0.01");
        let mut tally = AnalysisTally::default();
        let m = judge(&check, Ok(0.0512345678), None);
        count(&check, &mut tally, &m);
        let text = describe(&check, "sum(x)", &m, &tally);
        assert_eq!(
            text,
            "analysis errors failed: value 0.0512346, limit ≤ 0.01; 1 of 1 measurement(s) failed (failure_limit 0); query: sum(x)"
        );
        let m = judge(&check, Err(QueryError::Unreachable("connection refused".into())), None);
        let text = describe(&check, "sum(x)", &m, &tally);
        assert!(text.contains("inconclusive (inconclusive = \"fail\": counted as failed): value no value (prometheus unreachable: connection refused)"), "{text}");
    }
}
