//! How many refused calls reach the audit log: the first refusal of each
//! caller's action (`start`, `approve`, …) per [`REFUSALS_EVERY`] is
//! written; the ones after it in that window are counted, and the count
//! goes into the next entry of that caller and action
//! (`refusals_not_recorded`). A caller who holds a certificate but no role
//! could otherwise write an etcd key per call until etcd is full; now it
//! writes at most one per action a minute, and a person reading the log
//! still sees each kind of thing that was refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One audit entry per caller per this long, at most, for refusals.
pub const REFUSALS_EVERY: Duration = Duration::from_secs(60);

/// The callers tracked before idle ones are forgotten.
const TRACKED: usize = 4096;

/// Per-caller windows of refusals; see the module docs.
#[derive(Default)]
pub struct RefusalLimiter {
    /// By caller and action.
    callers: Mutex<HashMap<String, Window>>,
}

struct Window {
    /// When this caller's last refusal was written.
    written: Instant,
    /// Refusals since then, not written.
    held_back: u64,
}

/// Whether to write a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it, saying how many of this caller's refusals before it were not written.
    Write { held_back: u64 },
    /// Count it only.
    Skip,
}

impl RefusalLimiter {
    /// Decides about a refusal of `actor`'s `action` now.
    pub fn refused(&self, actor: &str, action: &str) -> Verdict {
        let now = Instant::now();
        let key = format!("{actor}\n{action}");
        let mut callers = self.callers.lock().expect("refusals lock");
        if let Some(window) = callers.get_mut(&key) {
            if now.duration_since(window.written) < REFUSALS_EVERY {
                window.held_back += 1;
                return Verdict::Skip;
            }
            let held_back = std::mem::take(&mut window.held_back);
            window.written = now;
            return Verdict::Write { held_back };
        }
        if callers.len() >= TRACKED {
            // Forget callers whose window has passed with nothing held back.
            callers.retain(|_, w| w.held_back > 0 || now.duration_since(w.written) < REFUSALS_EVERY);
            if callers.len() >= TRACKED {
                // Thousands of distinct callers refused within a minute: count, write nothing new.
                return Verdict::Skip;
            }
        }
        callers.insert(key, Window { written: now, held_back: 0 });
        Verdict::Write { held_back: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_entry_per_caller_per_window_and_the_rest_counted_in_the_next() {
        let limiter = RefusalLimiter::default();
        assert_eq!(limiter.refused("mallory", "start"), Verdict::Write { held_back: 0 });
        for _ in 0..1000 {
            assert_eq!(limiter.refused("mallory", "start"), Verdict::Skip);
        }
        // Another caller, or another action, has a window of its own.
        assert_eq!(limiter.refused("bob", "start"), Verdict::Write { held_back: 0 });
        assert_eq!(limiter.refused("mallory", "approve"), Verdict::Write { held_back: 0 });
        tokio::time::advance(REFUSALS_EVERY - Duration::from_secs(1)).await;
        assert_eq!(limiter.refused("mallory", "start"), Verdict::Skip);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.refused("mallory", "start"), Verdict::Write { held_back: 1001 });
        assert_eq!(limiter.refused("mallory", "start"), Verdict::Skip);
        tokio::time::advance(REFUSALS_EVERY).await;
        assert_eq!(limiter.refused("mallory", "start"), Verdict::Write { held_back: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn many_distinct_callers_stay_bounded() {
        let limiter = RefusalLimiter::default();
        let written = (0..TRACKED * 2)
            .filter(|i| limiter.refused(&format!("caller-{i}"), "start") != Verdict::Skip)
            .count();
        assert_eq!(written, TRACKED, "past the table's size, nothing more is written in the window");
        assert!(limiter.callers.lock().unwrap().len() <= TRACKED);
        tokio::time::advance(REFUSALS_EVERY).await;
        assert_eq!(
            limiter.refused("newcomer", "start"),
            Verdict::Write { held_back: 0 },
            "idle callers are forgotten"
        );
    }
}
