//! What the agent tells systemd (`Type=notify`, `WatchdogSec=`):
//! `READY=1` once it has registered with a leader, `STATUS=attached to
//! ADDR` or `STATUS=reconnecting: WHY` as its link comes and goes,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` from the agent's main task
//! ([`report_while`]), and `STOPPING=1` when a drain begins.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// Registered with the leader at `addr`: the agent takes commands now.
pub fn attached(addr: &str) {
    runway_daemon::notify::ready();
    runway_daemon::notify::status(&format!("attached to {addr}"));
}

/// The link ended with `why`; the agent is dialling again.
pub fn reconnecting(why: &dyn std::fmt::Display) {
    runway_daemon::notify::status(&format!("reconnecting: {why}"));
}

/// The drain began: `running` commands finish before the agent leaves.
pub fn stopping(running: usize) {
    runway_daemon::notify::stopping();
    runway_daemon::notify::status(&format!("stopping: finishing {running} running command(s)"));
}

/// Runs `work` to its end (the drain included: it may take as long as the
/// longest command), pinging the watchdog meanwhile from the same task, so
/// a task that stops being polled stops the pings too.
pub async fn report_while<T>(work: impl Future<Output = T>) -> T {
    tokio::select! {
        out = work => out,
        never = ping(runway_daemon::notify::watchdog_interval_from_env()) => match never {},
    }
}

async fn ping(every: Option<Duration>) -> Infallible {
    let Some(every) = every else {
        return std::future::pending().await;
    };
    let mut pings = tokio::time::interval(every);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        pings.tick().await;
        runway_daemon::notify::watchdog();
    }
}
