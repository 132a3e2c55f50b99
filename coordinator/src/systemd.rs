//! What the coordinator tells systemd (`Type=notify`, `WatchdogSec=`):
//! `READY=1` once the gRPC server accepts connections
//! ([`ready_when_accepting`]), and, while it runs ([`report_while`]),
//! `STATUS=leader (token N)` or `STATUS=follower (leader ADDR)` at every
//! leadership change and `WATCHDOG=1` at half of `WATCHDOG_USEC`. The loop
//! that sends both is the one the stall failpoint hangs: when it stops,
//! the pings stop and systemd restarts the coordinator.
//!
//! `STOPPING=1` is sent by `main` when the shutdown signal arrives.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::time::{Interval, MissedTickBehavior};

use crate::failpoint;
use crate::leadership::{Election, Leadership};

/// `incoming`, sending `READY=1` when the server first asks it for a
/// connection: from then on the coordinator serves.
pub fn ready_when_accepting<S: Stream + Unpin>(mut incoming: S) -> impl Stream<Item = S::Item> {
    let mut ready = true;
    futures::stream::poll_fn(move |cx| {
        if std::mem::take(&mut ready) {
            runway_daemon::notify::ready();
        }
        incoming.poll_next_unpin(cx)
    })
}

/// Runs `work` to its end, reporting leadership and pinging the watchdog
/// meanwhile; returns what `work` returns.
pub async fn report_while<T>(election: Arc<dyn Election>, work: impl Future<Output = T>) -> T {
    tokio::select! {
        out = work => out,
        never = report(election, runway_daemon::notify::watchdog_interval_from_env()) => match never {},
    }
}

/// The one line `systemctl status` shows for `leadership`.
pub fn describe(leadership: &Leadership) -> String {
    match leadership {
        Leadership::Leader(term) => format!("leader (token {})", term.token),
        Leadership::Follower { leader: Some(leader), .. } if !leader.is_empty() => {
            format!("follower (leader {leader})")
        }
        Leadership::Follower { .. } => "follower (no leader elected yet)".to_owned(),
    }
}

async fn report(election: Arc<dyn Election>, watchdog: Option<Duration>) -> Infallible {
    let started = Instant::now();
    let mut changes = election.subscribe();
    let mut following = true;
    let mut pings = watchdog.map(|every| {
        let mut pings = tokio::time::interval(every);
        pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
        pings
    });
    runway_daemon::notify::status(&describe(&changes.borrow_and_update()));
    loop {
        tokio::select! {
            changed = changes.changed(), if following => match changed {
                Ok(()) => runway_daemon::notify::status(&describe(&changes.borrow_and_update())),
                // The election ended (shutting down): keep pinging until the work ends.
                Err(_) => following = false,
            },
            () = tick(&mut pings) => {
                if let Some(after) = failpoint::stall_main_loop_after()
                    && started.elapsed() >= after
                {
                    tracing::warn!("FAILPOINT: the main loop hangs; systemd's watchdog pings stop");
                    std::future::pending::<()>().await;
                }
                runway_daemon::notify::watchdog();
            }
        }
    }
}

/// The next watchdog tick; never, without a watchdog.
async fn tick(pings: &mut Option<Interval>) {
    match pings {
        Some(pings) => {
            pings.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fencing::{FencingToken, Term};

    #[test]
    fn statuses_name_the_role_and_the_token_or_the_leader() {
        let term = Term {
            token: FencingToken(42),
            key: b"k".to_vec(),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        assert_eq!(describe(&Leadership::Leader(term)), "leader (token 42)");
        assert_eq!(
            describe(&Leadership::Follower {
                leader: Some("https://c1:7400".into()),
                token: Some(FencingToken(42))
            }),
            "follower (leader https://c1:7400)"
        );
        assert_eq!(
            describe(&Leadership::Follower { leader: None, token: None }),
            "follower (no leader elected yet)"
        );
    }
}
