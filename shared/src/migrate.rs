//! The schema in `migrations/`, embedded at build time and applied with refinery over the
//! direct (non-pooled) URL: refinery keeps state in a session, which a transaction-mode pooler
//! does not promise.

use crate::config::Secret;
use crate::db;

refinery::embed_migrations!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("could not connect for migrations: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// Applies the migrations not applied yet; returns the names of those it applied (none when
/// the database is current, so running it twice is a no-op).
pub async fn run(url: &Secret) -> Result<Vec<String>, MigrateError> {
    run_to(url, None).await
}

/// Like [`run`], stopping after migration `version` when one is given (to test a migration
/// against data written by the schema before it).
pub async fn run_to(
    url: &Secret,
    version: Option<refinery::SchemaVersion>,
) -> Result<Vec<String>, MigrateError> {
    let mut client = db::connect_direct(url)
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))?;
    // The database's own bounds (V4) are for the API's short statements; a migration may rewrite
    // a large table. This is a direct session, so a session setting is fine here.
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0")
        .await
        .map_err(|e| MigrateError::Connect(e.to_string()))?;
    let target = version.map_or(refinery::Target::Latest, refinery::Target::Version);
    let report = migrations::runner()
        .set_target(target)
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}
