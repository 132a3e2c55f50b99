//! Keys a config file may still spell the old way.
//!
//! Durations were once whole numbers under a unit-suffixed key
//! (`lease_ttl_secs = 10`); they are now `"10s"`-style strings under the
//! plain name (`lease_ttl = "10s"`, read by `humantime_serde`). A file
//! written for an older runway keeps working: before the config types see
//! the file, [`parse`] rewrites each old key into its new spelling, and
//! says so in a warning naming the file, the table, the old key and what to
//! write instead. A file giving both spellings is refused, naming both.
//!
//! The config types themselves know only the new keys, so
//! `deny_unknown_fields` still refuses every other key by name, and the
//! configuration reference lists each key once (the renames in a table of
//! their own, from the same [`Renamed`] lists).

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Problems;

/// What an old key's number counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Days,
    Seconds,
    Milliseconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Days => "days",
            Unit::Seconds => "seconds",
            Unit::Milliseconds => "milliseconds",
        }
    }
}

/// A key renamed when its value became a duration string: `old = N`
/// (a whole number of `unit`) in `table` is read as `new = "N<unit>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renamed {
    /// The table holding the key, as a dotted path: `""` for the top level,
    /// `"retention"`, `"app"`; `*` stands for every table under its parent
    /// (`"environments.*"`).
    pub table: &'static str,
    /// The deprecated key, e.g. `lease_ttl_secs`.
    pub old: &'static str,
    /// The key to write instead, e.g. `lease_ttl`.
    pub new: &'static str,
    pub unit: Unit,
}

impl Renamed {
    /// `lease_ttl_secs` → `lease_ttl` in the top-level table, seconds.
    pub const fn secs(table: &'static str, old: &'static str, new: &'static str) -> Self {
        Self { table, old, new, unit: Unit::Seconds }
    }

    /// Like [`Renamed::secs`], for a key that counted days.
    pub const fn days(table: &'static str, old: &'static str, new: &'static str) -> Self {
        Self { table, old, new, unit: Unit::Days }
    }

    /// Like [`Renamed::secs`], for a key that counted milliseconds.
    pub const fn millis(table: &'static str, old: &'static str, new: &'static str) -> Self {
        Self { table, old, new, unit: Unit::Milliseconds }
    }

    /// `[environments.NAME] `: the table as a message names it (empty at
    /// the top level).
    pub fn table_label(&self) -> String {
        if self.table.is_empty() { String::new() } else { format!("[{}] ", self.table.replace('*', "NAME")) }
    }

    fn duration(&self, count: u64) -> Duration {
        match self.unit {
            Unit::Days => Duration::from_secs(count.saturating_mul(86_400)),
            Unit::Seconds => Duration::from_secs(count),
            Unit::Milliseconds => Duration::from_millis(count),
        }
    }
}

/// Why a config file could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// Not TOML, or not the config's shape: rendered by [`describe`].
    Toml(toml::de::Error),
    /// An old key that cannot be read: both spellings given, or not a
    /// whole number.
    Renamed(Problems),
}

/// A config parsed from TOML, with a warning for each old key it used.
#[derive(Debug)]
pub struct Parsed<T> {
    pub config: T,
    /// `FILE: warning: [TABLE] OLD is deprecated; write NEW = "…" instead`,
    /// one per old key.
    pub warnings: Vec<String>,
}

/// Parses `text` (the contents of `file`) into `T`, reading the old keys
/// in `renamed` as their new ones (see the module doc).
pub fn parse<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    renamed: &[Renamed],
) -> Result<Parsed<T>, ParseError> {
    let mut document: toml::Table = toml::from_str(text).map_err(ParseError::Toml)?;
    let mut problems = Problems::new(file);
    let warnings = rename(&mut document, renamed, &mut problems)
        .into_iter()
        .map(|warning| format!("{}: warning: {warning}", file.display()))
        .collect::<Vec<_>>();
    problems.into_result().map_err(ParseError::Renamed)?;
    let config = if warnings.is_empty() {
        // From the text, so that errors keep their line and column.
        toml::from_str(text)
    } else {
        toml::Value::Table(document).try_into()
    }
    .map_err(ParseError::Toml)?;
    Ok(Parsed { config, warnings })
}

/// Rewrites every old key of `renamed` found in `document` into its new
/// spelling; returns a warning for each. Old keys that cannot be read go
/// to `problems`.
pub fn rename(document: &mut toml::Table, renamed: &[Renamed], problems: &mut Problems) -> Vec<String> {
    let mut warnings = Vec::new();
    for rename in renamed {
        let path: Vec<&str> =
            if rename.table.is_empty() { Vec::new() } else { rename.table.split('.').collect() };
        for (label, table) in tables(document, &path, String::new()) {
            let Some(value) = table.remove(rename.old) else { continue };
            let key =
                |name: &str| if label.is_empty() { name.to_owned() } else { format!("[{label}] {name}") };
            if table.contains_key(rename.new) {
                problems.add(
                    key(rename.old),
                    format_args!(
                        "both `{}` and its old spelling `{}` are set; keep `{}` only",
                        rename.new, rename.old, rename.new
                    ),
                );
                continue;
            }
            let Some(count) = value.as_integer().and_then(|n| u64::try_from(n).ok()) else {
                problems.add(
                    key(rename.old),
                    format_args!(
                        "is not a whole number of {}; it is deprecated anyway: write `{} = \"30s\"`-style \
                         durations instead",
                        rename.unit.name(),
                        rename.new
                    ),
                );
                continue;
            };
            let spelled = format_duration(rename.duration(count));
            warnings.push(format!(
                "{} = {count} is deprecated; write `{} = {spelled:?}` instead (read as that now)",
                key(rename.old),
                rename.new
            ));
            table.insert(rename.new.to_owned(), toml::Value::String(spelled));
        }
    }
    warnings
}

/// The tables at `path` under `table` (`*` matching every table there),
/// each with its dotted name.
fn tables<'a>(
    table: &'a mut toml::Table,
    path: &[&str],
    label: String,
) -> Vec<(String, &'a mut toml::Table)> {
    let Some((first, rest)) = path.split_first() else {
        return vec![(label, table)];
    };
    let join = |name: &str| if label.is_empty() { name.to_owned() } else { format!("{label}.{name}") };
    table
        .iter_mut()
        .filter(|(name, _)| *first == "*" || name.as_str() == *first)
        .filter_map(|(name, value)| value.as_table_mut().map(|inner| (join(name), inner)))
        .flat_map(|(label, inner)| tables(inner, rest, label))
        .collect()
}

/// A duration as a config spells it, in the largest units that fit and
/// parsed back by `humantime_serde`: `"1d"`, `"1h30m"`, `"10m"`,
/// `"1s500ms"`, `"0s"`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

/// The JSON schema of a duration field (`#[schemars(schema_with = …)]`):
/// a string with format `duration`, which the configuration reference
/// shows as a duration.
pub fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "duration" })
}

/// A container transform (`#[schemars(transform = host_dependent("jobs"))]`)
/// dropping the default of property `key` from the schema: a default read
/// from the host (its name, its cores) that the generated reference must
/// not show as the host it was generated on. The field's doc comment says
/// what the default is.
pub fn host_dependent(key: &'static str) -> impl FnMut(&mut schemars::Schema) {
    move |schema: &mut schemars::Schema| {
        if let Some(property) = schema
            .get_mut("properties")
            .and_then(|properties| properties.get_mut(key))
            .and_then(|property| property.as_object_mut())
        {
            property.remove("default");
        }
    }
}

/// `line L, column C: MESSAGE (key `a.b`)`: where a TOML error is and
/// which key it is about, without quoting the line (which may hold a
/// password, a token or a secret webhook URL).
pub fn describe(text: &str, error: &toml::de::Error) -> String {
    // toml names the key only when it has no text to point into.
    let mut bare = error.clone();
    bare.set_input(None);
    let bare = bare.to_string();
    let key = bare.lines().filter_map(|line| line.strip_prefix("in `")?.strip_suffix('`')).next_back();
    let key = key.map(|key| format!(" (key `{key}`)")).unwrap_or_default();
    let mut message = error.message().to_owned();
    if message.ends_with("expected a duration") {
        message.push_str(" such as \"500ms\", \"30s\", \"5m\", \"1h30m\" or \"7d\"");
    }
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}{key}")
        }
        None => format!("{message}{key}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        #[serde(default, with = "humantime_serde")]
        lease_ttl: Option<Duration>,
        #[serde(default)]
        environments: BTreeMap<String, Environment>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Environment {
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    }

    const RENAMED: [Renamed; 2] = [
        Renamed::secs("", "lease_ttl_secs", "lease_ttl"),
        Renamed::millis("environments.*", "timeout_ms", "timeout"),
    ];

    fn parse(text: &str) -> Result<Parsed<Config>, String> {
        super::parse(Path::new("c.toml"), text, &RENAMED).map_err(|e| match e {
            ParseError::Toml(e) => describe(text, &e),
            ParseError::Renamed(problems) => problems.to_string(),
        })
    }

    #[test]
    fn new_keys_read_humantime_strings_without_warnings() {
        let parsed = parse("lease_ttl = \"1m 30s\"\n[environments.prod]\ntimeout = \"250ms\"\n").unwrap();
        assert_eq!(parsed.config.lease_ttl, Some(Duration::from_secs(90)));
        assert_eq!(parsed.config.environments["prod"].timeout, Duration::from_millis(250));
        assert!(parsed.warnings.is_empty());
    }

    #[test]
    fn old_keys_still_work_with_a_warning_naming_file_table_and_new_spelling() {
        let parsed = parse("lease_ttl_secs = 10\n[environments.prod]\ntimeout_ms = 1500\n").unwrap();
        assert_eq!(parsed.config.lease_ttl, Some(Duration::from_secs(10)));
        assert_eq!(parsed.config.environments["prod"].timeout, Duration::from_millis(1500));
        assert_eq!(
            parsed.warnings,
            [
                "c.toml: warning: lease_ttl_secs = 10 is deprecated; write `lease_ttl = \"10s\"` instead (read as \
                 that now)",
                "c.toml: warning: [environments.prod] timeout_ms = 1500 is deprecated; write `timeout = \"1s500ms\"` \
                 instead (read as that now)",
            ]
        );
    }

    #[test]
    fn both_spellings_or_a_bad_old_value_are_refused_naming_the_keys() {
        let error = parse("lease_ttl_secs = 10\nlease_ttl = \"10s\"\n").unwrap_err();
        assert_eq!(
            error,
            "c.toml: lease_ttl_secs: both `lease_ttl` and its old spelling `lease_ttl_secs` are set; keep \
             `lease_ttl` only"
        );
        let error = parse("[environments.prod]\ntimeout_ms = \"5s\"\n").unwrap_err();
        assert!(
            error.starts_with("c.toml: [environments.prod] timeout_ms: is not a whole number"),
            "{error}"
        );
        let error = parse("lease_ttl_secs = -1\n").unwrap_err();
        assert!(error.starts_with("c.toml: lease_ttl_secs: is not a whole number"), "{error}");
    }

    #[test]
    fn durations_are_spelled_in_the_largest_units_and_read_back() {
        for (secs, spelled) in [(0, "0s"), (90, "1m30s"), (600, "10m"), (86_400, "1d"), (5_400, "1h30m")] {
            let duration = Duration::from_secs(secs);
            assert_eq!(format_duration(duration), spelled);
            assert_eq!(humantime_serde::re::humantime::parse_duration(spelled), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn a_bad_duration_or_an_unknown_key_is_named() {
        let error = parse("lease_ttl = \"10 parsecs\"\n").unwrap_err();
        assert!(
            error.starts_with(
                "line 1, column 13: invalid value: string \"10 parsecs\", expected a duration such as \"500ms\""
            ),
            "{error}"
        );
        assert!(error.ends_with("(key `lease_ttl`)"), "{error}");
        // Also when old keys made the file be read from its table.
        let error = parse("lease_ttl_secs = 5\n[environments.prod]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(
            error.contains("\"soon\"") && error.ends_with("(key `environments.prod.timeout`)"),
            "{error}"
        );
        let error = parse("lease_tll = \"5s\"\n").unwrap_err();
        assert!(error.contains("unknown field `lease_tll`"), "{error}");
    }
}
