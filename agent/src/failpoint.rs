//! Failpoints: faults the fault-injection tests switch on through
//! environment variables. Unset (the default) they change nothing.
//!
//! - `RUNWAY_FAILPOINT_HOLD_MS`: every command, once its work is done,
//!   holds its result this long before journaling and reporting it, so a
//!   test can kill a coordinator (or cut a link) while the command runs.

use std::sync::OnceLock;
use std::time::Duration;

pub fn hold_result() -> Option<Duration> {
    static HOLD: OnceLock<Option<Duration>> = OnceLock::new();
    *HOLD.get_or_init(|| {
        std::env::var("RUNWAY_FAILPOINT_HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}
