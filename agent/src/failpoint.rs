//! Failpoints: faults the fault-injection tests switch on through
//! environment variables.
//!
//! They exist only in builds with the `failpoints` feature, which only the
//! test crate (`runway-tests`) turns on; in a production build (`cargo
//! build --release -p runway-agent`) every function here is a constant
//! "off" and the variables' names are not in the binary. With the feature,
//! an unset variable (the default) changes nothing.
//!
//! - `RUNWAY_FAILPOINT_HOLD_MS`: every command, once its work is done,
//!   holds its result this long before journaling and reporting it, so a
//!   test can kill a coordinator (or cut a link) while the command runs.
//!
//! The engine has its own (backups: `runway_engine::failpoint`), switched
//! on by the same feature.

use std::time::Duration;

/// Whether this build has failpoints (the `failpoints` feature); the agent
/// says so in a warning at start.
pub const BUILT_IN: bool = cfg!(feature = "failpoints");

/// `RUNWAY_FAILPOINT_HOLD_MS`, read once.
#[cfg(feature = "failpoints")]
pub fn hold_result() -> Option<Duration> {
    static HOLD: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *HOLD.get_or_init(|| {
        std::env::var("RUNWAY_FAILPOINT_HOLD_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    })
}

/// Never, without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub fn hold_result() -> Option<Duration> {
    None
}
