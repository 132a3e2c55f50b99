//! What restoring a backup over the live database would lose, for a
//! person deciding how to roll back: per table, the rows there are now
//! against the rows the backup's manifest counted. (Updates since the
//! backup are lost too; counts cannot show them.)

use super::error::{BackupError, TableDiff};
use super::manifest::Manifest;
use super::snapshot;
use crate::database::Database;

/// Every table whose row count now differs from `manifest`'s, and every
/// table created since (`expected: None`).
pub async fn restore_loss(manifest: &Manifest, database_url: &str) -> Result<Vec<TableDiff>, BackupError> {
    let database = Database::parse(database_url)?;
    let mut conn = snapshot::connect(&database).await?;
    let now = snapshot::count_tables(&mut conn, database.name()).await;
    let _ = sqlx::Connection::close(conn).await;
    Ok(snapshot::compare_counts(&manifest.tables, &now?))
}
