//! The registry every daemon metric goes into, and its text in both
//! formats a scraper may ask for.
//!
//! [`Registry`] wraps prometheus-client's and refuses a metric without a
//! HELP text (or with one that would break the exposition format), so a
//! metric added later cannot reach a scrape undocumented.
//!
//! prometheus-client writes only OpenMetrics, where a counter's family is
//! named without `_total` and its samples with it. A reader of the older
//! Prometheus text format 0.0.4 (`promtool check metrics`, `curl` piped
//! into a script, a scraper that does not ask for OpenMetrics) takes those
//! samples for a family of their own, without HELP or TYPE. So `/metrics`
//! answers OpenMetrics to whoever asks for it (Prometheus does) and the
//! 0.0.4 text, [`prometheus_text`], to everyone else, as the Go client does.

pub use prometheus_client::registry::Unit;
use prometheus_client::registry::{Metric, Registry as Inner};

/// A registry whose every metric has a HELP text; see the module doc.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Inner,
}

impl Registry {
    /// A registry whose metric names all start with `prefix_`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self { inner: Inner::with_prefix(prefix) }
    }

    /// Registers `metric` as `name` with `help` (one line; the encoder adds
    /// the full stop). Panics when `help` is missing or malformed: the
    /// registry is built at start-up, where the daemon's tests see the panic.
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.inner.register(name, check(name, help), metric);
    }

    /// [`Registry::register`] with a unit, which becomes the name's suffix
    /// (`_seconds`, `_bytes`).
    pub fn register_with_unit(&mut self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.inner.register_with_unit(name, check(name, help), unit, metric);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn openmetrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner)
            .expect("writing to a String cannot fail");
        text
    }

    /// The metrics in the Prometheus text format 0.0.4.
    pub fn prometheus_text(&self) -> String {
        prometheus_text(&self.openmetrics())
    }
}

/// `help` without a full stop of its own; panics unless `name` is a metric
/// name and `help` a HELP text that reads the same in both formats.
fn check<'a>(name: &str, help: &'a str) -> &'a str {
    let name_ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    assert!(name_ok, "metric {name:?}: a name is lower-case letters, digits and underscores");
    assert!(
        !name.ends_with("_total"),
        "metric {name:?}: counters get their `_total` suffix from the encoder; register the name without it"
    );
    let text = help.trim().trim_end_matches('.').trim_end();
    assert!(!text.is_empty(), "metric {name:?} has no HELP text: say what it counts and by which labels");
    assert!(
        !text.contains(['\n', '\r', '\\']),
        "metric {name:?}: its HELP text must be one line without backslashes"
    );
    text
}

/// `openmetrics` (as prometheus-client writes it) in the Prometheus text
/// format 0.0.4: each family's HELP and TYPE name what its samples are
/// named (`_total` for a counter, `_info` for an info metric), types
/// that format lacks become their nearest one, and `# UNIT`, `# EOF` and
/// exemplars are left out. Samples are the same in both formats.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "stateset" => ("", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some(text) = help.take().and_then(|h| h.strip_prefix(name)?.strip_prefix(' ')) {
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    out
}

/// A sample line without its ` # {…} value` exemplar, if it has one. The
/// exemplar starts at the first ` # ` after the labels (whose quoted
/// values may hold anything).
fn without_exemplar(line: &str) -> &str {
    let mut labels_end = 0;
    if let Some(open) = line.find(['{', ' ']).filter(|i| line.as_bytes()[*i] == b'{') {
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in line[open..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    labels_end = open + i;
                    break;
                }
                _ => {}
            }
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

/// Whether a request's `Accept` header asks for OpenMetrics (with a
/// non-zero quality).
pub fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()) == Some(0.0));
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        state: String,
    }

    #[test]
    fn counters_keep_help_and_type_in_the_older_format() {
        let mut r = Registry::with_prefix("runway");
        let ended = Family::<Labels, Counter>::default();
        ended.get_or_create(&Labels { state: "a # value}".into() }).inc();
        r.register("rollouts_ended", "Rollouts ended, by state.", ended);
        let gauge = Gauge::<i64>::default();
        gauge.set(3);
        r.register_with_unit("backup_size", "Size of the last backup", Unit::Bytes, gauge);
        let histogram = Histogram::new([1.0]);
        histogram.observe(0.5);
        r.register_with_unit("step_duration", "How long steps took", Unit::Seconds, histogram);
        r.register("build", "The build", Info::new(vec![("version".to_owned(), "1".to_owned())]));

        let open = r.openmetrics();
        assert!(open.contains("# TYPE runway_rollouts_ended counter\n"), "{open}");
        assert!(open.ends_with("# EOF\n"), "{open}");
        let text = r.prometheus_text();
        for line in [
            "# HELP runway_rollouts_ended_total Rollouts ended, by state.\n",
            "# TYPE runway_rollouts_ended_total counter\n",
            "runway_rollouts_ended_total{state=\"a # value}\"} 1\n",
            "# HELP runway_backup_size_bytes Size of the last backup.\n",
            "# TYPE runway_backup_size_bytes gauge\nrunway_backup_size_bytes 3\n",
            "# TYPE runway_step_duration_seconds histogram\n",
            "runway_step_duration_seconds_bucket{le=\"1.0\"} 1\n",
            "# HELP runway_build_info The build.\n# TYPE runway_build_info gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        assert!(!text.contains("# UNIT") && !text.contains("# EOF"), "{text}");
    }

    #[test]
    fn exemplars_are_cut_after_the_labels() {
        assert_eq!(
            without_exemplar("a_total{x=\"1 # 2\"} 3 # {trace_id=\"f\"} 1.0"),
            "a_total{x=\"1 # 2\"} 3"
        );
        assert_eq!(without_exemplar("a_total 3 # {trace_id=\"f\"} 1.0"), "a_total 3");
        assert_eq!(without_exemplar("a{x=\"\\\"}\"} 3"), "a{x=\"\\\"}\"} 3");
    }

    #[test]
    #[should_panic(expected = "has no HELP text")]
    fn a_metric_without_help_is_refused() {
        Registry::default().register("rollouts_ended", " ", Counter::<u64>::default());
    }

    #[test]
    #[should_panic(expected = "get their `_total` suffix")]
    fn a_name_with_the_counter_suffix_is_refused() {
        Registry::default().register("rollouts_ended_total", "Rollouts", Counter::<u64>::default());
    }

    #[test]
    #[should_panic(expected = "one line")]
    fn a_help_of_two_lines_is_refused() {
        Registry::default().register("rollouts", "Rollouts\nrunning", Gauge::<i64>::default());
    }

    #[test]
    fn openmetrics_only_for_who_asks() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(accepts_openmetrics(prometheus));
        assert!(!accepts_openmetrics("*/*"));
        assert!(!accepts_openmetrics("text/plain"));
        assert!(!accepts_openmetrics("application/openmetrics-text;q=0, text/plain"));
    }
}
