//! A check's query with `{{placeholders}}` filled in for one rollout.
//!
//! `{{hosts}}`, `{{canary_hosts}}` and `{{baseline_hosts}}` become a
//! regular expression matching exactly those host names (`app-1|app-2`),
//! escaped for a double-quoted PromQL string: `host=~"{{hosts}}"`.

/// What the placeholders stand for in one measurement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    pub environment: String,
    /// The rollout's hosts in this phase (with `compare = "baseline"`: the
    /// group being measured).
    pub hosts: Vec<String>,
    pub canary_hosts: Vec<String>,
    /// The rollout's hosts not yet restarted.
    pub baseline_hosts: Vec<String>,
    pub version: String,
    pub previous_version: String,
}

/// `hosts` as an anchored alternation, each name's regex metacharacters
/// escaped (twice: once for RE2, once for the PromQL string). No hosts:
/// a pattern no host name matches.
pub fn host_regex(hosts: &[String]) -> String {
    if hosts.is_empty() {
        return "$^".to_owned();
    }
    hosts.iter().map(|h| escape(h)).collect::<Vec<_>>().join("|")
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A version or environment name inside a PromQL string.
fn plain(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `query` with every placeholder filled in (unknown ones, refused at
/// start-up, are left as they are).
pub fn render(query: &str, bindings: &Bindings) -> String {
    crate::placeholders::fill(query, |name| match name {
        "environment" => Some(plain(&bindings.environment)),
        "hosts" => Some(host_regex(&bindings.hosts)),
        "canary_hosts" => Some(host_regex(&bindings.canary_hosts)),
        "baseline_hosts" => Some(host_regex(&bindings.baseline_hosts)),
        "version" => Some(plain(&bindings.version)),
        "previous_version" => Some(plain(&bindings.previous_version)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_host_names_escaped() {
        let bindings = Bindings {
            environment: "prod".into(),
            hosts: vec!["app-1".into(), "web.eu".into()],
            canary_hosts: vec!["app-1".into()],
            baseline_hosts: vec![],
            version: "v2".into(),
            previous_version: "v\"1".into(),
        };
        let query = r#"sum(rate(x{host=~"{{hosts}}",env="{{ environment }}",v="{{version}}",p="{{previous_version}}"}[1m])) / y{host=~"{{canary_hosts}}"} + z{host=~"{{baseline_hosts}}"} {{other}}"#;
        assert_eq!(
            render(query, &bindings),
            r#"sum(rate(x{host=~"app-1|web\\.eu",env="prod",v="v2",p="v\"1"}[1m])) / y{host=~"app-1"} + z{host=~"$^"} {{other}}"#
        );
        assert_eq!(render("a {{ unclosed", &bindings), "a {{ unclosed");
    }
}
