//! The signals that stop a daemon: `SIGTERM` (systemd's stop, `kill`) and
//! `SIGINT` (Ctrl-C in a terminal). Both mean the same: finish in order
//! and exit. `SIGHUP` is not one of them (see [`crate::reload`]).

use tokio::signal::unix::{SignalKind, signal};

/// Resolves at the first `SIGTERM` or `SIGINT`, and logs which arrived.
/// Takes both over from their defaults (ending the process at once) from
/// the first call on; must run inside a tokio runtime.
pub async fn terminated() {
    let mut term = signal(SignalKind::terminate()).expect("a tokio runtime can listen for SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("a tokio runtime can listen for SIGINT");
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutdown signal received");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustix::process::{Signal, getpid, kill_process};

    #[tokio::test]
    async fn sigterm_ends_the_wait() {
        let mut stopped = Box::pin(super::terminated());
        // Polled once, so that it listens, before the signal is sent.
        tokio::select! {
            biased;
            () = &mut stopped => panic!("no signal was sent yet"),
            () = std::future::ready(()) => {}
        }
        kill_process(getpid(), Signal::TERM).expect("signal this process");
        tokio::time::timeout(Duration::from_secs(5), stopped).await.expect("SIGTERM ends the wait");
    }
}
