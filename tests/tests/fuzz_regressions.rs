//! The fuzz targets in the test suite: the seeds are valid inputs (so the
//! campaigns start from somewhere meaningful), every crash case a campaign
//! ever saved under `tests/fuzz/<target>/` runs clean now, and a short
//! campaign per target finds nothing new. The long campaign is
//! `cargo bench -p runway-tests --bench fuzz`.

use std::time::Duration;

use runway_tests::fuzz::{self, campaign, crash_dir, run_case};

#[test]
fn the_seeds_are_valid_inputs() {
    use runway_coordinator::model::RolloutRecord;
    assert!(
        runway_engine::backup::Manifest::from_slice(fuzz::targets_manifest().as_bytes(), "m".as_ref())
            .is_ok()
    );
    assert!(serde_json::from_str::<RolloutRecord>(fuzz::targets_record()).is_ok());
}

#[test]
fn saved_crash_cases_run_clean() {
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for target in fuzz::all() {
        let Ok(entries) = std::fs::read_dir(crash_dir(target.name)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            if let Err(panic) = run_case(&target, &input, scratch.path()) {
                failures.push(format!("{}: {panic}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "crash cases that still panic:\n{}", failures.join("\n"));
}

#[test]
fn a_short_campaign_per_target_finds_nothing_new() {
    for target in fuzz::all() {
        let found = campaign(&target, 2_000, Duration::from_secs(10), 0x5eed);
        assert!(found.crashes.is_empty(), "{}: new crash cases {:?}", target.name, found.crashes);
        assert!(found.slowest < Duration::from_secs(5), "{}: a case took {:?}", target.name, found.slowest);
    }
}
