//! [`MigrateError`]: everything that can go wrong while migrating, and
//! whether trying again is safe.

use runway_proto::bundle::BundleError;

/// Why a migrations command failed.
///
/// Every message names the migration or object concerned and carries the
/// database's own error text where there is one; none carries a password
/// (connection errors go through [`crate::redact::redact_urls`]).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database could not be reached or refused the login.
    /// Retry is safe: nothing was done.
    #[error("cannot connect to the database: {0}")]
    Connect(String),

    /// The database URL could not be understood. Retry is pointless: fix the URL.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),

    /// A migration's SQL failed. Its `_prisma_migrations` row is left failed
    /// with the error in `logs`. Retry is NOT safe until someone looks at the
    /// database, fixes the migration and runs `resolve --rolled-back` (or
    /// `--applied` if they finished it by hand).
    #[error(
        "migration {name} failed{at}: {error}\nThe migration is recorded as failed; fix it, then run \
         `runway migrate resolve --rolled-back {name:?}` (or `--applied` if you completed it by hand) before deploying again",
        at = line.map(|l| format!(" at line {l}")).unwrap_or_default()
    )]
    Failed {
        /// The migration (folder) name.
        name: String,
        /// 1-based line of the failing statement in `migration.sql`, when known.
        line: Option<usize>,
        /// SQLSTATE of the error, `none` when the server sent none.
        code: String,
        /// The database's error text (message, detail, hint).
        error: String,
        /// Whether this deploy changed the database before it failed:
        /// earlier migrations of the run were applied, or part of the failed
        /// file was committed (it ran in parts, or has its own COMMIT). When
        /// false, the database is as it was before the deploy, apart from
        /// the failed row in `_prisma_migrations`.
        database_changed: bool,
    },

    /// `_prisma_migrations` has failed migrations that nobody resolved; like
    /// Prisma (P3009), deploy refuses to run. Retry is pointless until they
    /// are resolved.
    #[error(
        "found failed migrations in the target database; new migrations will not be applied until they are resolved \
         with `runway migrate resolve --rolled-back NAME` or `--applied NAME`:\n{details}"
    )]
    FailedMigrationsPresent {
        /// The names of the failed migrations.
        names: Vec<String>,
        /// One line per failed migration with its logs.
        details: String,
    },

    /// Another runner (runway or Prisma) holds Prisma's advisory lock.
    /// Retry is safe once it has finished.
    #[error(
        "another migration runner holds the migrations advisory lock (key 72707369); waited {waited_secs}s. Held by: {holder}"
    )]
    LockTimeout {
        /// How long we waited.
        waited_secs: u64,
        /// Who holds it, from `pg_locks` and `pg_stat_activity`.
        holder: String,
    },

    /// The schema has tables but no `_prisma_migrations` (Prisma's P3005).
    /// Retry is pointless: baseline first.
    #[error(
        "the database schema is not empty ({tables}) but has no _prisma_migrations table; baseline it first: \
         mark the migrations already reflected in the database with `runway migrate resolve --applied NAME`"
    )]
    SchemaNotEmpty {
        /// Some of the tables found.
        tables: String,
    },

    /// `resolve` named a migration that is not in the migrations folder
    /// (Prisma's P3017). Retry is pointless.
    #[error("migration {name} is not in the migrations folder")]
    NotFound {
        /// The requested name.
        name: String,
    },

    /// `resolve --applied` on a migration that already finished (P3008).
    #[error("migration {name} is already recorded as applied in the database")]
    AlreadyApplied {
        /// The migration.
        name: String,
    },

    /// `resolve --rolled-back` on a migration that is not failed (P3011/P3012).
    #[error("migration {name} cannot be marked rolled back: {reason}")]
    NotFailed {
        /// The migration.
        name: String,
        /// Never applied, or applied successfully.
        reason: &'static str,
    },

    /// A down script (`down.sql`) failed while undoing a migration. The
    /// migration stays applied in `_prisma_migrations`; the downs undone
    /// before it are marked rolled back. Retry is NOT safe until someone
    /// looks: restore the backup, or fix the down and undo again.
    #[error(
        "the down of migration {name} failed{at}: {error}",
        at = line.map(|l| format!(" at line {l} of down.sql")).unwrap_or_default()
    )]
    DownFailed {
        /// The migration whose down failed.
        name: String,
        /// 1-based line in `down.sql`, when known.
        line: Option<usize>,
        /// The database's error text.
        error: String,
        /// Whether the database changed before it failed (earlier downs
        /// ran, or part of this one committed).
        database_changed: bool,
    },

    /// The pending migrations hold Danger statements whose rules the
    /// operator did not accept (see [`super::gate`]); nothing was applied
    /// or written. Retry is pointless as is: accept the rules when starting
    /// the rollout (`--allow-danger`), or change the migration.
    #[error("{}", super::gate::refusal(findings))]
    Dangerous {
        /// Each unaccepted finding: migration, line, statement, rule.
        findings: Vec<super::gate::Unaccepted>,
    },

    /// Undoing by migration was refused before anything ran: a migration
    /// has no down, its down is not proven, or it cannot be undone safely.
    /// Retry is pointless as is: write or fix the down, or restore.
    #[error("cannot roll back by migration: {0}")]
    CannotUndo(String),

    /// After the downs ran, the schema is not the one before the rollout.
    /// The downs are marked rolled back; the database needs the restore.
    #[error("the schema after the downs is not the schema before the rollout: {diff}")]
    SchemaDiffers {
        /// The objects that differ, e.g. `missing TABLE public.Post`.
        diff: String,
    },

    /// A PostgreSQL tool (`pg_dump`) failed or could not be started. Retry
    /// is safe: the tools only read.
    #[error("{tool}: {error}")]
    Tool {
        /// The tool's path.
        tool: String,
        /// Its error output, passwords removed.
        error: String,
    },

    /// The migrations bundle is malformed. Retry is pointless: fix the input.
    #[error(transparent)]
    Bundle(#[from] BundleError),

    /// A bookkeeping or inspection query failed (not a migration's own SQL).
    /// Retry is usually safe: these queries change at most one
    /// `_prisma_migrations` row each.
    #[error("{context}: {error}")]
    Database {
        /// What we were doing.
        context: String,
        /// The database's error text.
        error: String,
    },
}

impl MigrateError {
    /// Whether running the same command again, unchanged, may succeed
    /// without anyone touching the database or the migrations.
    pub fn retry_is_safe(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::LockTimeout { .. } | Self::Database { .. } | Self::Tool { .. }
        )
    }

    /// Whether the failed command changed the database: `Some(false)` when
    /// it certainly did not (it failed before running any migration SQL, or
    /// a migration failed inside its own transaction as the first of the
    /// run), `None` when that is not known (a bookkeeping query failed,
    /// possibly after migrations were applied). What a rollback decides on.
    pub fn database_changed(&self) -> Option<bool> {
        match self {
            Self::Failed { database_changed, .. } | Self::DownFailed { database_changed, .. } => {
                Some(*database_changed)
            }
            Self::SchemaDiffers { .. } => Some(true),
            Self::Database { .. } => None,
            _ => Some(false),
        }
    }

    /// Wraps a driver error from a bookkeeping query.
    pub(crate) fn db(context: impl Into<String>, error: sqlx::Error) -> Self {
        Self::Database { context: context.into(), error: crate::redact::redact_urls(&error.to_string()) }
    }
}
