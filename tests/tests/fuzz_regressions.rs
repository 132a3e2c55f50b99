//! The fuzz targets in the test suite: the seeds are valid inputs (so the
//! campaigns start from somewhere meaningful), every case saved under
//! `tests/fuzz/<target>/` runs clean now (the crash cases a campaign ever
//! saved, shrunk by proptest, and `edge-*` inputs kept by hand: empty, all
//! NUL, all 0xff), a panicking reader is found and its case shrunk to the
//! minimum, and a short campaign per target finds nothing new. The long
//! campaign is `cargo bench -p runway-tests --bench fuzz`.

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
fn saved_cases_run_clean() {
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for target in fuzz::all() {
        let entries: Vec<_> = std::fs::read_dir(crash_dir(target.name))
            .unwrap_or_else(|e| panic!("{}: no saved cases: {e}", target.name))
            .collect();
        assert!(!entries.is_empty(), "{}: no saved cases", target.name);
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
fn a_panicking_reader_is_reported_and_its_case_shrunk_and_saved() {
    use proptest::prelude::*;
    fn panics_on_x(input: &[u8], _: &std::path::Path) {
        assert!(!input.contains(&b'x'), "found an x");
    }
    let target = fuzz::Target {
        name: "self_check",
        inputs: proptest::collection::vec(prop_oneof![Just(b'x'), any::<u8>()], 0..64).boxed(),
        run: panics_on_x,
    };
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(run_case(&target, b"abc", scratch.path()), Ok(()));
    assert!(run_case(&target, b"axc", scratch.path()).unwrap_err().contains("found an x"));
    let found = campaign(&target, 2_000, Duration::from_secs(10), 1);
    let dir = crash_dir("self_check");
    let saved: Vec<Vec<u8>> = found.crashes.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let cleanup = std::fs::remove_dir_all(&dir);
    assert!(!found.crashes.is_empty(), "the campaign never generated an x");
    assert!(found.crashes.iter().all(|p| p.starts_with(&dir)));
    assert!(saved.iter().all(|case| case == b"x"), "not shrunk to the minimal case: {saved:?}");
    cleanup.unwrap();
}

#[test]
fn a_short_campaign_per_target_finds_nothing_new() {
    for target in fuzz::all() {
        let found = campaign(&target, 2_000, Duration::from_secs(10), 0x5eed);
        assert!(found.crashes.is_empty(), "{}: new crash cases {:?}", target.name, found.crashes);
        assert!(found.slowest < Duration::from_secs(5), "{}: a case took {:?}", target.name, found.slowest);
    }
}
