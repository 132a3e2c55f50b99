//! Failpoints: faults the fault-injection tests switch on through
//! environment variables. Unset (the default) they cost one lookup at
//! first use and change nothing.
//!
//! - `RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS`: after a step is saved as
//!   running and before its commands go out, the leader stalls this long,
//!   blind to losing its term, as a paused process would.
//! - `RUNWAY_FAILPOINT_IGNORE_LEASE_LOSS=1`: the leader does not step down
//!   when its lease cannot be renewed — a deposed leader that does not know
//!   it yet. Only fencing (etcd's and the agents') keeps it harmless.
//! - `RUNWAY_FAILPOINT_STALL_MAIN_LOOP_AFTER_MS`: this long after start,
//!   the loop that reports to systemd (see [`crate::systemd`]) hangs, as a
//!   deadlocked main loop would: `WATCHDOG=1` pings stop, the gRPC server
//!   goes on.
//! - `RUNWAY_FAILPOINT_PAUSE_AFTER_NOTIFICATION_MS`: after a notification's
//!   delivery is saved, the leader waits this long before the next one to
//!   the same webhook: a window with no request on its way, for a test
//!   that kills the leader between two notifications.
//! - `RUNWAY_FAILPOINT_SKIP_DB_PREFLIGHT=1`: the leader never sends a DB
//!   target its preflight and counts it as passed, as a compromised or
//!   buggy coordinator could: the danger gate there never runs. Only the
//!   DB agent's own gate at migrate stands in the way.

use std::sync::OnceLock;
use std::time::Duration;

fn millis(var: &str) -> Option<Duration> {
    std::env::var(var).ok()?.parse().ok().filter(|ms| *ms > 0).map(Duration::from_millis)
}

pub fn pause_before_dispatch() -> Option<Duration> {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    *PAUSE.get_or_init(|| millis("RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS"))
}

pub fn stall_main_loop_after() -> Option<Duration> {
    static STALL: OnceLock<Option<Duration>> = OnceLock::new();
    *STALL.get_or_init(|| millis("RUNWAY_FAILPOINT_STALL_MAIN_LOOP_AFTER_MS"))
}

pub fn pause_after_notification() -> Option<Duration> {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    *PAUSE.get_or_init(|| millis("RUNWAY_FAILPOINT_PAUSE_AFTER_NOTIFICATION_MS"))
}

pub fn skip_db_preflight() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var("RUNWAY_FAILPOINT_SKIP_DB_PREFLIGHT").is_ok_and(|v| v == "1"))
}

pub fn ignore_lease_loss() -> bool {
    static IGNORE: OnceLock<bool> = OnceLock::new();
    *IGNORE.get_or_init(|| std::env::var("RUNWAY_FAILPOINT_IGNORE_LEASE_LOSS").is_ok_and(|v| v == "1"))
}

/// `RUNWAY_FAILPOINT_TAMPER_BUNDLE=1`: after checking the operator's
/// signature, the coordinator changes one byte of the first migration of
/// every rollout it accepts and restamps the bundle's digest, as a
/// compromised or buggy coordinator could. Only the DB agent's signature
/// check stands in the way.
pub fn tamper_bundle(bundle: &mut runway_proto::v1::Bundle) {
    static TAMPER: OnceLock<bool> = OnceLock::new();
    if !*TAMPER.get_or_init(|| std::env::var("RUNWAY_FAILPOINT_TAMPER_BUNDLE").is_ok_and(|v| v == "1")) {
        return;
    }
    let Some(file) = bundle
        .files
        .iter_mut()
        .filter(|f| f.path.ends_with("migration.sql"))
        .min_by(|a, b| a.path.cmp(&b.path))
    else {
        return;
    };
    // A space becomes a tab: the SQL still parses and does the same thing,
    // so nothing but the signature can tell.
    if let Some(byte) = file.content.iter_mut().find(|b| **b == b' ') {
        *byte = b'\t';
    }
    tracing::warn!(path = %file.path, "FAILPOINT: changed one byte of the bundle after the operator signed it");
    bundle.digest = runway_proto::bundle::digest(&bundle.files);
}

/// `RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES=1`: the coordinator does
/// not check operators' signatures on rollbacks, restores and verifies
/// (nor that one is there) and passes on whatever the request carries, as
/// a compromised coordinator could. Only the DB agent's checks stand in
/// the way.
pub fn forward_unchecked_signatures() -> bool {
    static FORWARD: OnceLock<bool> = OnceLock::new();
    *FORWARD.get_or_init(|| {
        std::env::var("RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES").is_ok_and(|v| v == "1")
    })
}
