//! Failpoints: faults the fault-injection tests switch on through
//! environment variables.
//!
//! They exist only in builds with the `failpoints` feature, which only the
//! test crate (`runway-tests`) turns on; a production build (`cargo build
//! --release -p runway-coordinator`) has no such switch: every function
//! here is then a constant "off" and the variables' names are not even in
//! the binary. With the feature, an unset variable (the default) costs one
//! lookup at first use and changes nothing.
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
//! - `RUNWAY_FAILPOINT_TAMPER_BUNDLE=1`: see [`tamper_bundle`].
//! - `RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES=1`: see
//!   [`forward_unchecked_signatures`].

use std::time::Duration;

/// Whether this build has failpoints (the `failpoints` feature); the
/// coordinator says so in a warning at start.
pub const BUILT_IN: bool = cfg!(feature = "failpoints");

/// The value of failpoint variable `$var`, read once; `None` without the
/// `failpoints` feature, where `$var` does not even appear in the binary.
macro_rules! switch {
    ($var:literal, $parse:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            static VALUE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
            VALUE.get_or_init(|| std::env::var($var).ok()).as_deref().and_then($parse)
        }
        #[cfg(not(feature = "failpoints"))]
        {
            None::<&str>.and_then($parse)
        }
    }};
}

/// A positive number of milliseconds.
fn millis(value: &str) -> Option<Duration> {
    value.parse().ok().filter(|ms| *ms > 0).map(Duration::from_millis)
}

/// `1` switches it on.
fn on(value: &str) -> Option<()> {
    (value == "1").then_some(())
}

pub fn pause_before_dispatch() -> Option<Duration> {
    switch!("RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS", millis)
}

pub fn stall_main_loop_after() -> Option<Duration> {
    switch!("RUNWAY_FAILPOINT_STALL_MAIN_LOOP_AFTER_MS", millis)
}

pub fn pause_after_notification() -> Option<Duration> {
    switch!("RUNWAY_FAILPOINT_PAUSE_AFTER_NOTIFICATION_MS", millis)
}

pub fn skip_db_preflight() -> bool {
    switch!("RUNWAY_FAILPOINT_SKIP_DB_PREFLIGHT", on).is_some()
}

pub fn ignore_lease_loss() -> bool {
    switch!("RUNWAY_FAILPOINT_IGNORE_LEASE_LOSS", on).is_some()
}

/// `RUNWAY_FAILPOINT_TAMPER_BUNDLE=1`: after checking the operator's
/// signature, the coordinator changes one byte of the first migration of
/// every rollout it accepts and restamps the bundle's digest, as a
/// compromised or buggy coordinator could. Only the DB agent's signature
/// check stands in the way. Without the feature the tampering code is not
/// compiled at all.
pub fn tamper_bundle(bundle: &mut runway_proto::v1::Bundle) {
    #[cfg(feature = "failpoints")]
    if switch!("RUNWAY_FAILPOINT_TAMPER_BUNDLE", on).is_some() {
        tamper(bundle);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = bundle;
}

#[cfg(feature = "failpoints")]
fn tamper(bundle: &mut runway_proto::v1::Bundle) {
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
    switch!("RUNWAY_FAILPOINT_FORWARD_UNCHECKED_SIGNATURES", on).is_some()
}
