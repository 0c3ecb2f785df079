//! The statements on `user` rows that more than one function runs, each with its parameters and
//! row decoding.

use tokio_postgres::types::Type;

use crate::db::{Db, DbError, Sql, Tx};

/// A placeholder row (id only, `updated_at` NULL) so foreign keys resolve before the webhook
/// has told us about the user; the webhook fills it in later. Nothing for a tombstoned id.
const INSERT_PLACEHOLDER: Sql = Sql::idempotent(
    r#"INSERT INTO "user" (id)
       SELECT $1
       WHERE NOT EXISTS (SELECT 1 FROM user_tombstones WHERE id = $1)
       ON CONFLICT (id) DO NOTHING"#,
);

pub async fn insert_placeholder(tx: &Tx, user_id: &str) -> Result<(), DbError> {
    tx.execute_typed(&INSERT_PLACEHOLDER, &[(&user_id, Type::TEXT)])
        .await?;
    Ok(())
}

const IS_TOMBSTONED: Sql =
    Sql::idempotent("SELECT EXISTS (SELECT 1 FROM user_tombstones WHERE id = $1) AS tombstoned");

/// Whether the user was deleted (a read: works on a replica).
pub async fn is_tombstoned(db: &Db, user_id: &str) -> Result<bool, DbError> {
    let row = db
        .query_typed_one(&IS_TOMBSTONED, &[(&user_id, Type::TEXT)])
        .await?;
    Ok(row.try_get("tombstoned")?)
}

const DROP_IF_TOMBSTONED: Sql = Sql::idempotent(
    r#"WITH tombstone AS (SELECT 1 FROM user_tombstones WHERE id = $1),
            dropped AS (DELETE FROM "user" WHERE id = $1 AND EXISTS (SELECT 1 FROM tombstone))
       SELECT EXISTS (SELECT 1 FROM tombstone) AS tombstoned"#,
);

/// Drops the user's row if a tombstone is visible now; whether there was one.
pub async fn drop_if_tombstoned(tx: &Tx, user_id: &str) -> Result<bool, DbError> {
    let row = tx
        .query_typed_one(&DROP_IF_TOMBSTONED, &[(&user_id, Type::TEXT)])
        .await?;
    Ok(row.try_get("tombstoned")?)
}
