//! The long fuzz campaign: every target in `runway_tests::fuzz` (proptest
//! strategies) for `--cases N` cases or `--minutes M` each, whichever comes
//! first. Prints cases, cases per second and the slowest case per target;
//! new crash cases, shrunk by proptest, are saved under
//! `tests/fuzz/<target>/` (commit them: the `fuzz_regressions` test replays
//! them) and make it exit 1. The same `--seed` runs the same cases.
//!
//! `cargo bench -p runway-tests --bench fuzz -- --cases 1000000 --minutes 10 [--target NAME] [--seed S]`

use std::time::{Duration, Instant};

use runway_tests::fuzz::{all, campaign};

fn main() {
    let (mut cases, mut minutes, mut only, mut seed) = (1_000_000u64, 10u64, None::<String>, 1u64);
    let mut args = runway_tests::bench::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--cases" => cases = value().parse().unwrap_or_else(|_| usage()),
            "--minutes" => minutes = value().parse().unwrap_or_else(|_| usage()),
            "--target" => only = Some(value()),
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let mut crashed = false;
    for target in all().into_iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name)) {
        let started = Instant::now();
        let found = campaign(&target, cases, Duration::from_secs(minutes * 60), seed);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<20} {:>9} cases in {:>6.0} s ({:>7.0}/s), slowest {:>6.1} ms, new crashes {}",
            target.name,
            found.cases,
            secs,
            found.cases as f64 / secs,
            found.slowest.as_secs_f64() * 1000.0,
            found.crashes.len()
        );
        for path in &found.crashes {
            println!("  saved {}", path.display());
        }
        crashed |= !found.crashes.is_empty();
    }
    std::process::exit(i32::from(crashed));
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench -p runway-tests --bench fuzz -- [--cases N] [--minutes M] [--target NAME] [--seed S]"
    );
    std::process::exit(2)
}
