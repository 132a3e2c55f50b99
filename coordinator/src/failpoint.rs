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

use std::sync::OnceLock;
use std::time::Duration;

fn millis(var: &str) -> Option<Duration> {
    std::env::var(var).ok()?.parse().ok().filter(|ms| *ms > 0).map(Duration::from_millis)
}

pub fn pause_before_dispatch() -> Option<Duration> {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    *PAUSE.get_or_init(|| millis("RUNWAY_FAILPOINT_PAUSE_BEFORE_DISPATCH_MS"))
}

pub fn ignore_lease_loss() -> bool {
    static IGNORE: OnceLock<bool> = OnceLock::new();
    *IGNORE.get_or_init(|| std::env::var("RUNWAY_FAILPOINT_IGNORE_LEASE_LOSS").is_ok_and(|v| v == "1"))
}
