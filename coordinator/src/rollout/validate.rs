//! What an operator may put in a rollout request, checked before anything
//! is saved or sent.
//!
//! The app version reaches every app host's restart hook as
//! `RUNWAY_APP_VERSION`, and hooks are shell scripts that may put it in a
//! path, a URL or a command line; the other strings end up in logs and
//! events. So they are held to a small alphabet and length here, and a
//! request that breaks the rules is refused with `INVALID_ARGUMENT` and the
//! rule it broke.
//!
//! # Rules
//!
//! - `app_version`: empty (keep each host's current version), or at most
//!   [`MAX_APP_VERSION`] bytes of `A-Z a-z 0-9 . _ + - : @ /`, starting with
//!   a letter or digit (never an option `-x`, an absolute path `/x` or a
//!   hidden name `.x`) and without `..` (a hook building a path from it
//!   cannot climb out). `2024.06.2`, `v1.2.3-rc.1+build.5`,
//!   `registry.example.com/app:1.2@sha256:ab12` pass.
//! - `started_by`: at most [`MAX_STARTED_BY`] characters, no control
//!   characters (no forged log lines or terminal escapes).
//! - `allow_danger`: lint rule names, `a-z 0-9 -`, at most
//!   [`MAX_RULE_NAME`] bytes each.
//! - `rollout_id` (chosen by the CLI, bound by the signature): empty, or a
//!   name (`A-Z a-z 0-9 . _ -`, 1–64 characters: it becomes an etcd key
//!   and a path segment of the agents' state).
//! - the bundle: at most `max_bundle_bytes`, then every check of
//!   [`runway_proto::bundle::migrations`] (see [`bundle`]).

use runway_proto::bundle::{BundleError, MigrationFile};
use runway_proto::v1::{Bundle, StartRolloutRequest};

/// Checks a request's bundle: its size against `limit` first (cheap), then
/// its digest and layout, off the async runtime (hashing and checking tens
/// of MiB takes a while). Returns the bundle and its migrations in order.
pub async fn bundle(bundle: Bundle, limit: usize) -> Result<(Bundle, Vec<MigrationFile>), BundleError> {
    runway_proto::bundle::check_size(&bundle, limit)?;
    tokio::task::spawn_blocking(move || runway_proto::bundle::migrations(&bundle).map(|m| (bundle, m)))
        .await
        .expect("checking a bundle does not panic")
}

/// Longest accepted `app_version`, in bytes.
pub const MAX_APP_VERSION: usize = 128;
/// Longest accepted `started_by`, in characters.
pub const MAX_STARTED_BY: usize = 128;
/// Longest accepted lint rule name in `allow_danger`, in bytes.
pub const MAX_RULE_NAME: usize = 64;

/// Characters of a value quoted in an error (the value itself may be huge).
const QUOTED: usize = 40;

/// A request field that breaks its rule. Retrying the same request fails
/// the same way: fix the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error(
        "app version {value} {problem}; use at most {MAX_APP_VERSION} characters of A-Z a-z 0-9 . _ + - : @ /, \
         starting with a letter or digit, without \"..\" (e.g. 2024.06.2 or v1.2.3-rc.1)"
    )]
    AppVersion { value: String, problem: &'static str },
    #[error("started-by {value} {problem}; use at most {MAX_STARTED_BY} printable characters")]
    StartedBy { value: String, problem: &'static str },
    #[error(
        "--allow-danger {value} is not a lint rule name (a-z, 0-9 and -, at most {MAX_RULE_NAME} characters)"
    )]
    AllowDanger { value: String },
    #[error("rollout id {value} is not a name: {why}")]
    RolloutId { value: String, why: String },
}

/// The message, for an API error that carries text (`INVALID_ARGUMENT`).
impl From<InvalidRequest> for String {
    fn from(error: InvalidRequest) -> Self {
        error.to_string()
    }
}

/// Checks every operator string of a `StartRollout` request.
pub fn start_request(request: &StartRolloutRequest) -> Result<(), InvalidRequest> {
    app_version(&request.app_version)?;
    started_by(&request.started_by)?;
    if !request.rollout_id.is_empty() {
        runway_identity::check_name(&request.rollout_id)
            .map_err(|why| InvalidRequest::RolloutId { value: quote(&request.rollout_id), why })?;
    }
    request.allow_danger.iter().try_for_each(|rule| rule_name(rule))
}

/// Checks an app version (see the module's rules).
pub fn app_version(version: &str) -> Result<(), InvalidRequest> {
    let problem = if version.is_empty() {
        None
    } else if version.len() > MAX_APP_VERSION {
        Some("is too long")
    } else if !version.chars().all(|c| c.is_ascii_alphanumeric() || "._+-:@/".contains(c)) {
        Some("holds a character that is not allowed")
    } else if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("does not start with a letter or digit")
    } else if version.contains("..") {
        Some("holds \"..\"")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(InvalidRequest::AppVersion { value: quote(version), problem }),
        None => Ok(()),
    }
}

fn started_by(who: &str) -> Result<(), InvalidRequest> {
    let problem = if who.chars().count() > MAX_STARTED_BY {
        Some("is too long")
    } else if who.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(InvalidRequest::StartedBy { value: quote(who), problem }),
        None => Ok(()),
    }
}

fn rule_name(rule: &str) -> Result<(), InvalidRequest> {
    let valid = !rule.is_empty()
        && rule.len() <= MAX_RULE_NAME
        && rule.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid { Ok(()) } else { Err(InvalidRequest::AllowDanger { value: quote(rule) }) }
}

/// `value` for an error message: escaped (no control characters reach a
/// terminal or a log) and cut to [`QUOTED`] characters.
fn quote(value: &str) -> String {
    let cut: String = value.chars().take(QUOTED).collect();
    let ellipsis = if cut.len() < value.len() { "…" } else { "" };
    format!("{:?}{ellipsis}", cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bundle_over_the_coordinators_limit_is_refused_before_it_is_checked() {
        let files = vec![runway_proto::v1::BundleFile {
            path: "1_init/migration.sql".into(),
            content: b"select 1;".to_vec(),
        }];
        let good = runway_proto::bundle::pack(files).unwrap();
        let size = runway_proto::bundle::size(&good);
        let (_, migrations) = bundle(good.clone(), size).await.unwrap();
        assert_eq!(migrations.len(), 1);
        let refused = bundle(good, size - 1).await.unwrap_err();
        assert_eq!(refused, BundleError::BundleTooLarge { size, limit: size - 1 });
        let mut tampered = runway_proto::bundle::pack(vec![runway_proto::v1::BundleFile {
            path: "1_init/migration.sql".into(),
            content: b"select 1;".to_vec(),
        }])
        .unwrap();
        tampered.files[0].content = b"select 2;".to_vec();
        assert!(matches!(bundle(tampered, 1 << 20).await, Err(BundleError::DigestMismatch { .. })));
    }

    #[test]
    fn usual_versions_pass() {
        for version in [
            "",
            "2024.06.2",
            "v1.2.3-rc.1+build.5",
            "registry.example.com/app:1.2@sha256:ab12",
            "3f2a9c1",
            "release_42",
            &"a".repeat(MAX_APP_VERSION),
        ] {
            assert_eq!(app_version(version), Ok(()), "{version}");
        }
    }

    #[test]
    fn versions_a_hook_could_misuse_are_refused() {
        for (version, problem) in [
            ("1.0; rm -rf /", "not allowed"),
            ("$(reboot)", "not allowed"),
            ("1.0\nINFO forged log line", "not allowed"),
            ("a b", "not allowed"),
            ("-rf", "start with a letter or digit"),
            ("/etc/passwd", "start with a letter or digit"),
            (".hidden", "start with a letter or digit"),
            ("v1/../../etc", "\"..\""),
            ("é1.0", "not allowed"),
        ] {
            let err = app_version(version).expect_err(version).to_string();
            assert!(err.contains(problem), "{version:?}: {err}");
            assert!(!err.contains('\n'), "the message must not carry the raw value: {err}");
        }
        let err = app_version(&"a".repeat(MAX_APP_VERSION + 1)).unwrap_err().to_string();
        assert!(err.contains("too long") && err.contains('…'), "{err}");
    }

    #[test]
    fn the_whole_request_is_checked() {
        let ok = StartRolloutRequest {
            environment: "staging".into(),
            bundle: None,
            app_version: "1.2.3".into(),
            allow_danger: vec!["drop-column".into()],
            started_by: "alice@laptop".into(),
            signature: None,
            traceparent: String::new(),
            override_requires: false,
            skip_hosts: vec!["app-2".into()],
            rollout_id: "19a2b3c4-abc123".into(),
        };
        assert_eq!(start_request(&ok), Ok(()));
        let bad = |f: &dyn Fn(&mut StartRolloutRequest)| {
            let mut request = ok.clone();
            f(&mut request);
            start_request(&request).unwrap_err()
        };
        assert!(matches!(bad(&|r| r.app_version = "`id`".into()), InvalidRequest::AppVersion { .. }));
        assert!(matches!(bad(&|r| r.started_by = "eve\r\nroot".into()), InvalidRequest::StartedBy { .. }));
        assert!(matches!(bad(&|r| r.started_by = "x".repeat(200)), InvalidRequest::StartedBy { .. }));
        assert!(matches!(
            bad(&|r| r.allow_danger = vec!["Drop Column".into()]),
            InvalidRequest::AllowDanger { .. }
        ));
        assert!(matches!(bad(&|r| r.rollout_id = "../r1".into()), InvalidRequest::RolloutId { .. }));
    }
}
