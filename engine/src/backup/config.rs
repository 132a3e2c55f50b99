//! [`BackupConfig`]: the `[backup]` table of the agent config (also built by
//! the CLI's local mode from flags).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::BackupError;

/// `[backup]` in the agent config.
///
/// ```toml
/// [backup]
/// dir = "/var/backups/runway"
/// format = "auto"            # custom | directory | auto (see [`BackupConfig::choose_format`])
/// jobs = 4                   # pg_dump / pg_restore -j for directory format
/// keep = 7                   # newest backups kept per database (locally and remote)
/// test_restore = "auto"      # always | never | background | auto (see [`TestRestore`])
/// test_restore_post_data = "skip"   # skip | restore: indexes and constraints in the window's test restore
///
/// [backup.object_store]
/// bucket = "db-backups"
/// prefix = "app/prod"
/// endpoint = "https://s3.example.net"   # omit for AWS
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = runway_daemon::config_check::host_dependent("jobs"))]
pub struct BackupConfig {
    /// Where backups are written; one folder per backup.
    pub dir: PathBuf,
    /// Folder holding pg_dump / pg_restore; empty searches PATH.
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// Dump format.
    #[serde(default)]
    pub format: DumpFormat,
    /// With `format = "auto"`: databases below this size always use the
    /// custom format (see [`BackupConfig::choose_format`] for the rest).
    #[serde(default = "default_directory_from_bytes")]
    pub directory_from_bytes: u64,
    /// Parallel jobs for directory-format dumps and restores (default: the
    /// cores available, between 2 and 8).
    #[serde(default = "default_jobs")]
    pub jobs: u32,
    /// `pg_dump -Z` compression level (0–9); unset keeps pg_dump's default.
    #[serde(default)]
    pub compress_level: Option<u8>,
    /// A backup starts only if free space ≥ this × `pg_database_size`.
    #[serde(default = "default_free_space_factor")]
    pub free_space_factor: f64,
    /// A test restore (or a replace-mode restore) starts only if the
    /// database server's data directory has free space ≥ this ×
    /// `pg_database_size` of the backed-up database; checked where it can
    /// be known (a server on this host whose `data_directory` this user may
    /// read). 0 turns the check off.
    #[serde(default = "default_scratch_free_space_factor")]
    pub scratch_free_space_factor: f64,
    /// Most bytes all backups together may occupy in `dir` (a quota below the
    /// disk's own free space). Unset: only the disk's free space counts.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Newest backups kept per database, locally and in the object store.
    /// Unset keeps everything. Backups pinned by a running rollout are never deleted.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Whether and when the rollout's backup step proves the backup
    /// restorable by a test restore into a scratch database.
    #[serde(default)]
    pub test_restore: TestRestore,
    /// Whether the test restore in the maintenance window also runs the
    /// archive's post-data section (indexes, constraints, triggers) in the
    /// scratch database. Background and on-demand test restores always do.
    #[serde(default)]
    pub test_restore_post_data: PostData,
    /// With `test_restore = "auto"` in a production-like environment:
    /// databases at least this large are proven after the window
    /// (`background`), smaller ones inside it.
    #[serde(default = "default_background_from_bytes")]
    pub test_restore_background_from_bytes: u64,
    /// Off-host copies; unset disables upload.
    #[serde(default)]
    pub object_store: Option<ObjectStoreConfig>,
}

fn default_directory_from_bytes() -> u64 {
    1 << 30
}

fn default_background_from_bytes() -> u64 {
    32 << 30
}

fn default_jobs() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u32)
}

fn default_free_space_factor() -> f64 {
    2.0
}

/// A restored copy holds the rows without the source's bloat; the margin
/// is for the WAL its index builds write before a checkpoint recycles it.
fn default_scratch_free_space_factor() -> f64 {
    1.2
}

/// Fewest cores (where runway runs) for `format = "auto"` to pick the
/// directory format: each of pg_dump's parallel jobs is a compressing
/// worker plus a server backend, and on the DB host both share its cores.
/// Measured on 2 cores (a 1 GB pgbench database): `-Fd -j2` was 1–15 %
/// slower than `-Fc` in each of four rounds.
pub const DIRECTORY_MIN_CORES: usize = 4;

/// Largest share of the table data one table may hold for `format =
/// "auto"` to pick the directory format: pg_dump's jobs split the work by
/// table, so above it one job dumps most of the data alone.
pub const DIRECTORY_MAX_TABLE_SHARE: f64 = 0.5;

impl BackupConfig {
    /// A config with every default, writing under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            pg_bin_dir: None,
            format: DumpFormat::default(),
            directory_from_bytes: default_directory_from_bytes(),
            jobs: default_jobs(),
            compress_level: None,
            free_space_factor: default_free_space_factor(),
            scratch_free_space_factor: default_scratch_free_space_factor(),
            max_bytes: None,
            keep: None,
            test_restore: TestRestore::default(),
            test_restore_post_data: PostData::default(),
            test_restore_background_from_bytes: default_background_from_bytes(),
            object_store: None,
        }
    }

    /// Checks values serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), BackupError> {
        if self.dir.as_os_str().is_empty() {
            return Err(BackupError::Config { key: "backup.dir", problem: "is empty".into() });
        }
        if self.jobs == 0 {
            return Err(BackupError::Config { key: "backup.jobs", problem: "must be at least 1".into() });
        }
        if self.compress_level.is_some_and(|l| l > 9) {
            return Err(BackupError::Config {
                key: "backup.compress_level", problem: "must be 0–9".into()
            });
        }
        if !(self.free_space_factor.is_finite() && self.free_space_factor >= 0.0) {
            return Err(BackupError::Config {
                key: "backup.free_space_factor",
                problem: "must be a number ≥ 0".into(),
            });
        }
        if !(self.scratch_free_space_factor.is_finite() && self.scratch_free_space_factor >= 0.0) {
            return Err(BackupError::Config {
                key: "backup.scratch_free_space_factor",
                problem: "must be a number ≥ 0".into(),
            });
        }
        if self.keep == Some(0) {
            return Err(BackupError::Config {
                key: "backup.keep",
                problem: "must be at least 1 (unset keeps everything)".into(),
            });
        }
        if let Some(store) = &self.object_store
            && store.bucket.is_empty()
        {
            return Err(BackupError::Config {
                key: "backup.object_store.bucket",
                problem: "is empty".into(),
            });
        }
        Ok(())
    }

    /// Path of a PostgreSQL tool (`pg_dump`, `pg_restore`).
    pub fn tool(&self, name: &str) -> PathBuf {
        match &self.pg_bin_dir {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
            _ => PathBuf::from(name),
        }
    }

    /// The format to dump in, and why. `format = "auto"` takes the one that
    /// is faster where it runs: the directory format's parallel jobs pay
    /// off only with work to split and cores to spare, so it is chosen
    /// only when all of these hold, else the custom format:
    ///
    /// - no test restore streams alongside the dump (only the custom format
    ///   can be restored while it is written: a directory dump's table of
    ///   contents comes last; the restore then takes the core a second job
    ///   would have used);
    /// - the database is at least `directory_from_bytes`;
    /// - this host has at least [`DIRECTORY_MIN_CORES`] cores (as
    ///   `available_parallelism` counts them: CPU affinity and cgroup quota
    ///   included) and `jobs` ≥ 2;
    /// - no table holds more than [`DIRECTORY_MAX_TABLE_SHARE`] of the table
    ///   data (`None`: not known, not a reason against).
    pub fn choose_format(&self, inputs: &FormatInputs) -> FormatChoice {
        let custom = |why: String| FormatChoice { format: DumpFormat::Custom, why };
        match self.format {
            DumpFormat::Auto => {}
            format => return FormatChoice { format, why: "as configured".into() },
        }
        if inputs.streamed_proof {
            return custom(
                "auto: the test restore streams alongside the dump, which only the custom format allows"
                    .into(),
            );
        }
        if inputs.database_bytes < self.directory_from_bytes {
            return custom(format!(
                "auto: the database is below directory_from_bytes ({})",
                super::error::human(self.directory_from_bytes)
            ));
        }
        if inputs.cores < DIRECTORY_MIN_CORES || self.jobs < 2 {
            return custom(format!(
                "auto: {} core(s) here and jobs = {}; parallel jobs pay off from {DIRECTORY_MIN_CORES} cores and 2 jobs",
                inputs.cores, self.jobs
            ));
        }
        if let Some(share) = inputs.largest_table_share
            && share > DIRECTORY_MAX_TABLE_SHARE
        {
            return custom(format!(
                "auto: one table holds {:.0} % of the data; parallel jobs split the work by table",
                share * 100.0
            ));
        }
        FormatChoice {
            format: DumpFormat::Directory,
            why: format!("auto: {} cores here, {} parallel jobs", inputs.cores, self.jobs),
        }
    }

    /// The folder of the backup named `id`.
    pub fn backup_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

/// What [`BackupConfig::choose_format`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct FormatInputs {
    /// `pg_database_size`.
    pub database_bytes: u64,
    /// The largest table's share of all table data (0–1), when known.
    pub largest_table_share: Option<f64>,
    /// Cores available to this process.
    pub cores: usize,
    /// A test restore streams alongside the dump.
    pub streamed_proof: bool,
}

impl FormatInputs {
    /// Cores available to this process (1 when unknown).
    pub fn cores_here() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The format a backup is taken in, and why (for its progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatChoice {
    pub format: DumpFormat,
    pub why: String,
}

/// `pg_dump --format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// One compressed file (`-Fc`), streamed through SHA-256 as pg_dump writes it.
    Custom,
    /// A folder of files (`-Fd`) written by parallel jobs; each file hashed as it grows.
    Directory,
    /// Whichever is faster where it runs (see [`BackupConfig::choose_format`]).
    #[default]
    Auto,
}

impl DumpFormat {
    /// The `--format` value.
    pub fn pg_dump_flag(self) -> &'static str {
        match self {
            Self::Directory => "--format=directory",
            Self::Custom | Self::Auto => "--format=custom",
        }
    }
}

/// When the rollout's backup step proves the backup restorable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestRestore {
    /// In the maintenance window, before the migration: the dump streams
    /// into a scratch database while it is written (custom format), so the
    /// proof costs about max(dump, restore) rather than their sum.
    Always,
    /// No test restore (checksums and the archive's table of contents only).
    Never,
    /// After the window: the migration runs once the backup is written and
    /// checked; the rollout does not finish until a test restore proved the
    /// backup, and fails loudly if it cannot.
    Background,
    /// `never` outside production-like environments (see
    /// [`TestRestore::decide`]); inside them `always` below
    /// `test_restore_background_from_bytes`, `background` from there on.
    #[default]
    Auto,
}

/// When a backup is proven restorable, as decided for one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proof {
    /// In the maintenance window, before the migration.
    InWindow,
    /// After the window, by a later step of the rollout.
    Background,
    /// Not at all.
    None,
}

impl TestRestore {
    /// The proof for a backup of `database_bytes` in `environment`.
    /// `auto` counts environments whose name contains `prod`, `live` or
    /// `stag` as production-like.
    pub fn decide(self, environment: &str, database_bytes: u64, background_from_bytes: u64) -> Proof {
        match self {
            Self::Always => Proof::InWindow,
            Self::Never => Proof::None,
            Self::Background => Proof::Background,
            Self::Auto => {
                let env = environment.to_ascii_lowercase();
                if !["prod", "live", "stag"].iter().any(|w| env.contains(w)) {
                    Proof::None
                } else if database_bytes >= background_from_bytes {
                    Proof::Background
                } else {
                    Proof::InWindow
                }
            }
        }
    }
}

/// Whether the window's test restore runs the post-data section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PostData {
    /// Schema and every row are restored and counted; index and constraint
    /// builds (which only re-run definitions the source database already
    /// holds) are left out of the window.
    #[default]
    Skip,
    /// Indexes, constraints and triggers too, after the data.
    Restore,
}

impl BackupConfig {
    /// The proof for a backup of `database_bytes` in `environment`.
    pub fn proof_for(&self, environment: &str, database_bytes: u64) -> Proof {
        self.test_restore.decide(environment, database_bytes, self.test_restore_background_from_bytes)
    }
}

/// `[backup.object_store]`: S3-compatible storage for off-host copies.
///
/// Credentials and region fall back to the usual AWS environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`) when not set here.
#[derive(Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreConfig {
    /// The bucket backups are uploaded to.
    pub bucket: String,
    /// Key prefix; each backup goes under `<prefix>/<backup id>/`.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL for non-AWS stores (MinIO, Ceph, …).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The store's region (else `AWS_REGION`).
    #[serde(default)]
    pub region: Option<String>,
    /// The access key's id (else `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The access key's secret (else `AWS_SECRET_ACCESS_KEY`). Never
    /// logged or shown in errors.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// A temporary credential's session token (else `AWS_SESSION_TOKEN`).
    /// Never logged or shown in errors.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow `http://` endpoints (test servers, private networks).
    #[serde(default)]
    pub allow_http: bool,
    /// Part size for multipart uploads, in bytes.
    #[serde(default = "default_part_bytes")]
    pub part_bytes: usize,
}

fn default_part_bytes() -> usize {
    16 << 20
}

/// `AWS_*` variables holding secrets the object-store client may read from
/// the environment when the config sets none.
const SECRET_ENV: &[&str] = &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

impl ObjectStoreConfig {
    /// The secret access key and session token, from this config and from
    /// the `AWS_*` environment the client falls back to.
    pub fn secrets(&self) -> Vec<String> {
        let configured = [&self.secret_access_key, &self.session_token].into_iter().flatten().cloned();
        let from_env = SECRET_ENV.iter().filter_map(|var| std::env::var(var).ok());
        configured.chain(from_env).filter(|s| !s.is_empty()).collect()
    }

    /// Masks these secrets (and URL passwords) in text about the store.
    pub fn redactor(&self) -> crate::redact::Redactor {
        crate::redact::Redactor::new(self.secrets())
    }
}

impl std::fmt::Debug for ObjectStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "***"))
            .field("session_token", &self.session_token.as_ref().map(|_| "***"))
            .field("allow_http", &self.allow_http)
            .field("part_bytes", &self.part_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_gets_defaults() {
        let config: BackupConfig = toml::from_str("dir = \"/b\"").expect("parses");
        assert_eq!(config.format, DumpFormat::Auto);
        assert_eq!(config.free_space_factor, 2.0);
        assert_eq!(config.scratch_free_space_factor, 1.2);
        config.validate().expect("valid");
    }

    #[test]
    fn auto_takes_the_directory_format_only_with_work_to_split_and_cores_to_spare() {
        let mut config: BackupConfig = toml::from_str("dir = \"/b\"\njobs = 4").expect("parses");
        let big = FormatInputs {
            database_bytes: 2 << 30,
            largest_table_share: Some(0.3),
            cores: 4,
            streamed_proof: false,
        };
        let pick = |config: &BackupConfig, inputs: FormatInputs| config.choose_format(&inputs).format;
        assert_eq!(pick(&config, big), DumpFormat::Directory);
        assert_eq!(pick(&config, FormatInputs { largest_table_share: None, ..big }), DumpFormat::Directory);
        // Each reason against on its own.
        assert_eq!(pick(&config, FormatInputs { database_bytes: 10, ..big }), DumpFormat::Custom);
        assert_eq!(pick(&config, FormatInputs { cores: 2, ..big }), DumpFormat::Custom);
        assert_eq!(pick(&config, FormatInputs { largest_table_share: Some(0.9), ..big }), DumpFormat::Custom);
        assert_eq!(pick(&config, FormatInputs { streamed_proof: true, ..big }), DumpFormat::Custom);
        let two_cores = config.choose_format(&FormatInputs { cores: 2, ..big });
        assert!(two_cores.why.contains("2 core(s)"), "{}", two_cores.why);
        config.jobs = 1;
        assert_eq!(pick(&config, big), DumpFormat::Custom);
        // A configured format is taken as it is.
        config.format = DumpFormat::Directory;
        assert_eq!(pick(&config, FormatInputs { cores: 1, ..big }), DumpFormat::Directory);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<BackupConfig>("dir = \"/b\"\nfromat = \"custom\"").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let store = ObjectStoreConfig {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok-hunter3".into()),
            ..Default::default()
        };
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
        let mut backup = BackupConfig::new("/b");
        backup.object_store = Some(store.clone());
        assert!(!format!("{backup:?}").contains("hunter"));
        assert_eq!(store.redactor().redact("sig hunter2 tok-hunter3"), "sig *** ***");
    }

    #[test]
    fn auto_test_restore_by_environment_and_size() {
        let gib = 1 << 30;
        assert_eq!(TestRestore::Auto.decide("production", gib, 32 * gib), Proof::InWindow);
        assert_eq!(TestRestore::Auto.decide("staging-eu", 40 * gib, 32 * gib), Proof::Background);
        assert_eq!(TestRestore::Auto.decide("dev", gib, 32 * gib), Proof::None);
        assert_eq!(TestRestore::Always.decide("dev", 40 * gib, 32 * gib), Proof::InWindow);
        assert_eq!(TestRestore::Background.decide("dev", gib, 32 * gib), Proof::Background);
        assert_eq!(TestRestore::Never.decide("production", gib, 32 * gib), Proof::None);
        let config: BackupConfig = toml::from_str(
            "dir = \"/b\"\ntest_restore = \"background\"\ntest_restore_post_data = \"restore\"",
        )
        .expect("parses");
        assert_eq!(
            (config.test_restore, config.test_restore_post_data),
            (TestRestore::Background, PostData::Restore)
        );
    }
}
