//! A mutation fuzzer on stable Rust for everything runway reads from
//! outside: each target takes bytes, turns them into its input (a bundle,
//! a migrations folder, SQL, a manifest, a config file, a wire message) and
//! must return (an error is fine) without panicking or hanging.
//!
//! Inputs are valid seeds changed by a few random byte-level mutations
//! (flips, interesting bytes, inserted tokens of the format, deletions,
//! duplications, splices with another seed), so most cases get past the
//! first syntax check and reach the code behind it. A case that panics is
//! saved under `tests/fuzz/<target>/` and replayed by the
//! `fuzz_regressions` test from then on; `tests/benches/fuzz.rs` runs the
//! long campaign.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One thing runway reads from outside.
pub struct Target {
    pub name: &'static str,
    /// Valid inputs the mutations start from.
    pub seeds: Vec<Vec<u8>>,
    /// Words of the format worth inserting (keywords, delimiters).
    pub tokens: &'static [&'static str],
    /// Reads `input`; must not panic or hang, whatever it is.
    pub run: fn(&[u8], &Path),
}

/// What a campaign on one target found.
#[derive(Debug, Default)]
pub struct Found {
    pub cases: u64,
    /// Saved panicking inputs (new ones only).
    pub crashes: Vec<PathBuf>,
    /// The slowest case.
    pub slowest: Duration,
}

/// A small, fast, seedable PRNG (xorshift64*): the fuzzer needs speed and
/// reproducible runs, not cryptographic quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

const INTERESTING: &[u8] =
    &[0, 0x7f, 0x80, 0xff, b'"', b'\'', b'\\', b'\n', b'[', b']', b'{', b'}', b'/', b'.', b'-'];

/// `seed` changed by one to eight random mutations.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8], tokens: &[&str]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if !tokens.is_empty() => {
                let token = tokens[rng.below(tokens.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            3 if !data.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(64)).min(data.len());
                let copy = data[start..end].to_vec();
                data.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(256)).min(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[start..end]);
            }
            _ => {
                let byte = rng.next_u64() as u8;
                data.insert(at, byte);
            }
        }
    }
    data
}

/// Where a target's saved crash cases live.
pub fn crash_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(target)
}

/// Runs `target` on `input` in `scratch`; `Err` with the panic's message.
pub fn run_case(target: &Target, input: &[u8], scratch: &Path) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input, scratch))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Fuzzes `target` until `cases` ran or `budget` passed; saves new crash
/// cases under [`crash_dir`]. Panics are silenced while it runs.
pub fn campaign(target: &Target, cases: u64, budget: Duration, seed: u64) -> Found {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut rng = Rng::new(seed ^ fnv(target.name.as_bytes()));
    let mut found = Found::default();
    let started = Instant::now();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while found.cases < cases && started.elapsed() < budget {
        let seed = &target.seeds[rng.below(target.seeds.len())];
        let other = &target.seeds[rng.below(target.seeds.len())];
        let input = mutate(&mut rng, seed, other, target.tokens);
        let case = Instant::now();
        let result = run_case(target, &input, scratch.path());
        found.slowest = found.slowest.max(case.elapsed());
        found.cases += 1;
        if result.is_err() {
            let dir = crash_dir(target.name);
            std::fs::create_dir_all(&dir).expect("create the crash dir");
            let path = dir.join(format!("crash-{:016x}", fnv(&input)));
            if !path.exists() {
                std::fs::write(&path, &input).expect("save the crash case");
                found.crashes.push(path);
            }
        }
    }
    std::panic::set_hook(hook);
    found
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

mod targets;
pub use targets::all;

/// The manifest seed (a valid manifest), for the seed check.
pub fn targets_manifest() -> &'static str {
    targets::MANIFEST
}

/// The rollout record seed (a valid record), for the seed check.
pub fn targets_record() -> &'static str {
    targets::RECORD
}
