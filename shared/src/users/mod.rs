//! The local `user` rows and their tombstones, as far as more than one function needs them.
//!
//! A deleted user must never come back, not even when a write for them races the deletion. Both
//! sides therefore work in a transaction and look again on a fresh snapshot after writing:
//! - whoever *creates* a row (a placeholder here, an upsert in `clerk-webhook`) inserts, then
//!   drops it again if a tombstone is visible by now ([`drop_if_tombstoned`]);
//! - the deletion (in `clerk-webhook`) writes the tombstone, then takes the row's key with an
//!   `INSERT … ON CONFLICT`, which waits for any creator still in flight, then deletes the row.
//!
//! Whichever commits first, the other sees it: no interleaving leaves a row beside a tombstone.

use tokio_postgres::types::Type;

use crate::db::{Db, DbError, Idempotence, Sql, Tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Deleted,
}

/// A placeholder row (id only, `updated_at` NULL) so foreign keys resolve before the webhook
/// has told us about the user; the webhook fills it in later.
const INSERT_PLACEHOLDER: Sql = Sql::idempotent(
    r#"INSERT INTO "user" (id)
       SELECT $1
       WHERE NOT EXISTS (SELECT 1 FROM user_tombstones WHERE id = $1)
       ON CONFLICT (id) DO NOTHING"#,
);

const DROP_IF_TOMBSTONED: Sql = Sql::idempotent(
    r#"WITH tombstone AS (SELECT 1 FROM user_tombstones WHERE id = $1),
            dropped AS (DELETE FROM "user" WHERE id = $1 AND EXISTS (SELECT 1 FROM tombstone))
       SELECT EXISTS (SELECT 1 FROM tombstone) AS tombstoned"#,
);

/// Makes sure a signed-in user has a row, unless they were deleted.
pub async fn ensure(db: &Db, user_id: &str) -> Result<UserState, DbError> {
    db.transaction(Idempotence::Idempotent, |tx| async move {
        tx.execute_typed(&INSERT_PLACEHOLDER, &[(&user_id, Type::TEXT)])
            .await?;
        drop_if_tombstoned(&tx, user_id).await
    })
    .await
}

/// The second half of every creation: on a fresh snapshot, a tombstone wins over the row.
pub async fn drop_if_tombstoned(tx: &Tx, user_id: &str) -> Result<UserState, DbError> {
    let deleted: bool = tx
        .query_typed_one(&DROP_IF_TOMBSTONED, &[(&user_id, Type::TEXT)])
        .await?
        .try_get("tombstoned")?;
    Ok(if deleted {
        UserState::Deleted
    } else {
        UserState::Active
    })
}
