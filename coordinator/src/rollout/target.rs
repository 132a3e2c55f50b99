//! What a DB step runs against: a DB agent and one of its databases.
//!
//! A step's `hosts` hold targets as text. `db-1` is the agent's only
//! database (the command names none, as before databases had names);
//! `db-2/orders` is database `orders` of agent `db-2`, which serves
//! several. The text is parsed here and nowhere else. Agent names and
//! database names never hold a `/` (checked at registration).

/// A host, and the database on it when the agent serves several.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// The agent's name: where the command is dispatched.
    pub host: String,
    /// The database's name; empty for the agent's only database.
    pub database: String,
}

impl Target {
    /// The agent's only database (or an app host).
    pub fn host(host: &str) -> Self {
        Self { host: host.to_owned(), database: String::new() }
    }

    /// Database `database` of agent `host`.
    pub fn database(host: &str, database: &str) -> Self {
        Self { host: host.to_owned(), database: database.to_owned() }
    }

    /// Reads a step's host entry: `host` or `host/database`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((host, database)) => Self::database(host, database),
            None => Self::host(text),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.database.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.database)
        }
    }
}

/// Most databases one agent may register.
const MAX_DATABASES: usize = 1024;

/// Longest database name (PostgreSQL's own limit is 63 bytes).
const MAX_NAME: usize = 63;

/// Why an agent's name or database names cannot be targets.
pub fn check_names(agent: &str, databases: &[String]) -> Result<(), String> {
    if agent.contains('/') {
        return Err(format!("agent name {agent:?} must not hold a `/`"));
    }
    if databases.len() > MAX_DATABASES {
        return Err(format!(
            "agent {agent} registered {} databases; at most {MAX_DATABASES}",
            databases.len()
        ));
    }
    let unfit =
        |d: &String| d.is_empty() || d.len() > MAX_NAME || d.contains('/') || d.chars().any(char::is_control);
    if let Some(bad) = databases.iter().find(|d| unfit(d)) {
        return Err(format!(
            "agent {agent} registered database name {bad:?}; names are 1 to {MAX_NAME} bytes, without `/` or \
             control characters"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = databases.iter().find(|d| !seen.insert(d.as_str())) {
        return Err(format!("agent {agent} registered database {twice:?} twice"));
    }
    Ok(())
}

/// The agents of `targets`, each once, in order: where per-agent work
/// (releasing a rollout's backups) goes.
pub fn hosts_of(targets: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for target in targets {
        let host = Target::parse(target).host;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_back_what_they_print() {
        for text in ["db-1", "db-2/orders"] {
            assert_eq!(Target::parse(text).to_string(), text);
        }
        assert_eq!(Target::parse("db-1"), Target::host("db-1"));
        assert_eq!(Target::parse("db-2/orders"), Target::database("db-2", "orders"));
        assert_eq!(hosts_of(&["db-2/orders".into(), "db-1".into(), "db-2/billing".into()]), ["db-2", "db-1"]);
    }

    #[test]
    fn names_with_a_slash_are_refused() {
        assert!(check_names("db-1", &["orders".into()]).is_ok());
        assert!(check_names("a/b", &[]).unwrap_err().contains("\"a/b\""));
        assert!(check_names("db-1", &["x/y".into()]).unwrap_err().contains("\"x/y\""));
        assert!(check_names("db-1", &[String::new()]).is_err());
        assert!(check_names("db-1", &["x".repeat(64)]).unwrap_err().contains("1 to 63 bytes"));
        assert!(check_names("db-1", &["a".into(), "a".into()]).unwrap_err().contains("twice"));
    }
}
