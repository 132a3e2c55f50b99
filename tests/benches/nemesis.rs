//! The nemesis soak for as long as you like: many small rollouts,
//! rollbacks and backup verifies against three etcd members, three
//! coordinators, two DB agents (two environments) and three app agents,
//! all in network namespaces, while a seeded nemesis SIGKILLs and SIGSTOPs
//! coordinators and agents, restarts etcd members (quorum kept and briefly
//! lost) and cuts links. Prints runs, faults by kind, refusals and
//! violations (each with the seed), and exits 1 on a violation.
//!
//! `cargo bench --bench nemesis -- --seed 7 --minutes 20` (needs root for
//! the namespaces; `--small` runs the CI shape on loopback instead).

use std::time::Duration;

use clap::Parser;
use runway_tests::nemesis::Soak;

#[derive(Parser)]
struct Args {
    /// The seed of operations and faults; a violation prints it to replay.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long operations and faults go on, in minutes (checks come after).
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// The CI shape (one etcd member, two coordinators, two app agents, on
    /// loopback; leader kills, agent stops, DB agent restarts).
    #[arg(long)]
    small: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let soak = if args.small { Soak::ci(args.seed, duration) } else { Soak::full(args.seed, duration) };
    if soak.netns && !runway_tests::netns::available() {
        eprintln!("the full soak needs root for network namespaces; try --small");
        return std::process::ExitCode::from(2);
    }
    eprintln!("nemesis soak: {soak:?}");
    let report = soak.run();
    println!("{report}");
    if report.violation_count() > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
