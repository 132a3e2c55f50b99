//! Progress on stderr: a live bar when stderr is a terminal, plain lines
//! otherwise (logs, CI, pipes). One [`Reporter`] serves rollout watch, local
//! migrate and backup (through the engine's [`Progress`] handle) and remote
//! backup (the agent's events, relayed by the coordinator).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use runway_engine::progress::{Progress, Update};

use super::counters;

/// One thing that happened, in the shape every source can give.
#[derive(Debug, Clone, Default)]
pub struct Step<'a> {
    /// Where the work is: a phase (`dump`, `migrate`) or a rollout step; the bar's prefix.
    pub phase: &'a str,
    /// What happened, for a person.
    pub message: &'a str,
    /// `(done, total, unit)` when the work is countable; `total` 0 when unknown.
    pub counters: Option<(u64, u64, &'a str)>,
    /// A routine tick of a counter: on a terminal it only moves the bar.
    pub tick: bool,
}

/// Where progress goes; cheap to clone (the bar is shared).
#[derive(Clone, Debug)]
pub struct Reporter {
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        if std::io::stderr().is_terminal() { Self::bar() } else { Self::lines() }
    }

    /// Plain lines on stderr.
    pub fn lines() -> Self {
        Self { bar: None }
    }

    fn bar() -> Self {
        // Cleared when the last clone goes, also when a command returns early.
        let bar = ProgressBar::new(0).with_finish(ProgressFinish::AndClear);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} [{bar:30}] {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar: Some(bar) }
    }

    /// Reports one step. `line` is what a log shows for it (plain mode, or
    /// above the bar); the bar itself shows the phase, counters and message.
    pub fn step(&self, step: &Step<'_>, line: &str) {
        let counted =
            step.counters.map(|(done, total, unit)| counters(done, total, unit)).unwrap_or_default();
        match &self.bar {
            None => eprintln!("{line}"),
            Some(bar) => {
                if !step.phase.is_empty() {
                    bar.set_prefix(step.phase.to_owned());
                }
                match step.counters {
                    Some((done, total, _)) if total > 0 => {
                        bar.set_length(total);
                        bar.set_position(done);
                    }
                    _ => {}
                }
                let message: String = step.message.chars().take(80).collect();
                bar.set_message(format!("{message}{counted}"));
                if !step.tick {
                    bar.println(line);
                }
            }
        }
    }

    /// A line that must stay visible (above the bar on a terminal).
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// A phase of a backup or migration, as `[phase] message [counters]`;
    /// counted updates only move the bar on a terminal.
    pub fn phase(&self, phase: &str, message: &str, counters: Option<(u64, u64, &str)>) {
        let counted =
            counters.map(|(done, total, unit)| super::counters(done, total, unit)).unwrap_or_default();
        let step = Step { phase, message, counters, tick: counters.is_some() };
        self.step(&step, &format!("[{phase}] {message}{counted}"));
    }

    /// The engine's update, as [`Reporter::phase`] shows it.
    pub fn update(&self, update: &Update) {
        self.phase(&update.phase, &update.message, update.counters.map(|c| (c.done, c.total, c.unit)));
    }

    /// A handle for the engine that reports here.
    pub fn engine(&self) -> Progress {
        let reporter = self.clone();
        Progress::new(move |update| reporter.update(&update))
    }

    /// Removes the bar; call before printing the result.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
