//! Fuzzing on stable Rust with proptest, for everything runway reads from
//! outside: each target takes bytes, turns them into its input (a bundle,
//! a migrations folder, SQL, a manifest, a config file, a wire message) and
//! must return (an error is fine) without panicking or hanging.
//!
//! Each target's inputs are a proptest strategy ([`inputs`]): documents
//! built the way the format is built (SQL from its keywords, migration
//! folders as files, JSON and TOML documents from the valid seed with
//! values replaced, keys removed and added, protobuf messages with
//! generated fields), and the valid seeds with a few byte edits, so cases
//! both reach the code behind the first syntax check and break that check.
//! A case that panics is shrunk by proptest to a minimal one, saved under
//! `tests/fuzz/<target>/` and replayed by the `fuzz_regressions` test from
//! then on; `tests/benches/fuzz.rs` runs the long campaign.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::strategy::BoxedStrategy;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

pub mod inputs;
mod targets;
pub use targets::all;

/// One thing runway reads from outside.
pub struct Target {
    pub name: &'static str,
    /// What it is fed: generated, and shrunk when a case fails.
    pub inputs: BoxedStrategy<Vec<u8>>,
    /// Reads `input`; must not panic or hang, whatever it is.
    pub run: fn(&[u8], &Path),
}

/// What a campaign on one target found.
#[derive(Debug, Default)]
pub struct Found {
    /// Cases run, shrinking steps included.
    pub cases: u64,
    /// Saved panicking inputs, each shrunk (new ones only).
    pub crashes: Vec<PathBuf>,
    /// The slowest case.
    pub slowest: Duration,
}

/// Cases per proptest run: a campaign is runs of this many until its
/// count or time is up, each with an RNG drawn from the campaign's seed.
const CHUNK: u64 = 2_000;

/// Where a target's saved crash cases live.
pub fn crash_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(target)
}

/// Runs `target` on `input` in `scratch`; `Err` with the panic's message.
pub fn run_case(target: &Target, input: &[u8], scratch: &Path) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input, scratch))).map_err(|panic| panic_message(&*panic))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Fuzzes `target` until `cases` ran or `budget` passed, from `seed` (the
/// same seed runs the same cases); saves each new crash case, shrunk,
/// under [`crash_dir`]. Panics are silenced while it runs.
pub fn campaign(target: &Target, cases: u64, budget: Duration, seed: u64) -> Found {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv(target.name.as_bytes()).to_le_bytes());
    let mut seeds =
        TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let (ran, slowest) = (Cell::new(0u64), Cell::new(Duration::ZERO));
    let mut crashes = Vec::new();
    let started = Instant::now();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while ran.get() < cases && started.elapsed() < budget {
        let config = Config {
            cases: u32::try_from((cases - ran.get()).min(CHUNK)).expect("a chunk fits u32"),
            failure_persistence: None,
            max_shrink_iters: 20_000,
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, seeds.new_rng());
        let result = runner.run(&target.inputs, |input| {
            ran.set(ran.get() + 1);
            let case = Instant::now();
            (target.run)(&input, scratch.path());
            slowest.set(slowest.get().max(case.elapsed()));
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(_, input)) => {
                let dir = crash_dir(target.name);
                std::fs::create_dir_all(&dir).expect("create the crash dir");
                let path = dir.join(format!("crash-{:016x}", fnv(&input)));
                if !path.exists() {
                    std::fs::write(&path, &input).expect("save the crash case");
                    crashes.push(path);
                }
            }
            Err(TestError::Abort(why)) => panic!("{}: proptest gave up: {why}", target.name),
        }
    }
    std::panic::set_hook(hook);
    Found { cases: ran.get(), crashes, slowest: slowest.get() }
}

/// FNV-1a: names a crash case by its bytes, and keys a target's RNG.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The manifest seed (a valid manifest), for the seed check.
pub fn targets_manifest() -> &'static str {
    targets::MANIFEST
}

/// The rollout record seed (a valid record), for the seed check.
pub fn targets_record() -> &'static str {
    targets::RECORD
}
