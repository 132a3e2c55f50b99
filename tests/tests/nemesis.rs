//! The nemesis soak in CI: a small cluster (one etcd member on loopback,
//! two coordinators, staging's DB agent and two app agents, production's
//! DB agent) for about 90 seconds on a fixed seed, with leader kills, agent
//! SIGSTOPs and DB agent restarts; every invariant must hold (see
//! `runway_tests::nemesis`). The long version is `benches/nemesis.rs`.

use std::time::Duration;

use runway_tests::nemesis::Soak;

#[test]
fn rollouts_under_a_nemesis_keep_every_invariant() {
    let report = Soak::ci(20_251_207, Duration::from_secs(75)).run();
    println!("{report}");
    assert!(report.ops.started.len() >= 3, "too few rollouts ran to check anything:\n{report}");
    assert!(report.faults.injected.values().sum::<u64>() >= 3, "too few faults:\n{report}");
    assert_eq!(report.violation_count(), 0, "{report}");
}
