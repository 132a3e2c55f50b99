//! `[environments.NAME.databases]`: how a rollout goes through an
//! environment's databases when there are several (see
//! `rollout::databases`).
//!
//! ```toml
//! [environments.production.databases]
//! canary = 1          # databases migrated first, alone; a failure stops the rest
//! parallel = 4        # then batches of this many (backups run this many at a time too)
//! max_failures = 0    # failed databases tolerated; one more stops later batches
//! uniform = true      # on a stop, restore the databases already migrated too
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[environments.NAME.databases]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatabasePolicy {
    /// Databases migrated first, together, before any other; a canary that
    /// fails stops the migrate step whatever `max_failures` says.
    pub canary: u32,
    /// How many databases back up or migrate together after the canaries.
    pub parallel: u32,
    /// Databases whose migration may fail before later batches stop. A
    /// failed database is restored from this rollout's backup either way.
    pub max_failures: u32,
    /// When the migrate step stops: restore the databases already migrated
    /// as well (`true`, every database stays on one schema), or leave them
    /// migrated and report them (`false`).
    pub uniform: bool,
}

impl Default for DatabasePolicy {
    /// One canary, then four at a time, no failure tolerated, kept uniform.
    fn default() -> Self {
        Self { canary: 1, parallel: 4, max_failures: 0, uniform: true }
    }
}

/// Refuses a policy that cannot run; the error names the key.
pub fn check(environment: &str, policy: &DatabasePolicy) -> Result<(), String> {
    if policy.parallel == 0 {
        return Err(format!(
            "[environments.{environment}.databases] parallel must be at least 1 (databases migrated together)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, JsonSchema)]
    struct T {
        databases: DatabasePolicy,
    }

    #[test]
    fn the_issue_example_reads_and_unset_keys_keep_their_default() {
        let text = "[databases]\ncanary = 2\nparallel = 3\nmax_failures = 1\nuniform = false\n";
        let policy = toml::from_str::<T>(text).unwrap().databases;
        assert_eq!(policy, DatabasePolicy { canary: 2, parallel: 3, max_failures: 1, uniform: false });
        let policy = toml::from_str::<T>("[databases]\nparallel = 2\n").unwrap().databases;
        assert_eq!(policy, DatabasePolicy { parallel: 2, ..DatabasePolicy::default() });
        check("prod", &policy).unwrap();
    }

    #[test]
    fn bad_policies_are_refused_naming_the_key() {
        let error = check("prod", &DatabasePolicy { parallel: 0, ..DatabasePolicy::default() }).unwrap_err();
        assert!(error.contains("[environments.prod.databases] parallel"), "{error}");
        let error = toml::from_str::<T>("[databases]\nparalel = 2\n").err().unwrap().to_string();
        assert!(error.contains("paralel"), "{error}");
        let error = toml::from_str::<T>("[databases]\ncanary = -1\n").err().unwrap().to_string();
        assert!(error.contains("canary"), "{error}");
    }
}
