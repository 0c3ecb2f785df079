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

mod sql;

use crate::db::{Db, DbError, Idempotence, Tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Deleted,
}

/// Makes sure a signed-in user has a row, unless they were deleted.
pub async fn ensure(db: &Db, user_id: &str) -> Result<UserState, DbError> {
    db.transaction(Idempotence::Idempotent, |tx| async move {
        sql::insert_placeholder(&tx, user_id).await?;
        drop_if_tombstoned(&tx, user_id).await
    })
    .await
}

/// Whether a signed-in user may read: not deleted. Writes nothing, so it works on a read replica
/// (a user without a row yet owns nothing to read).
pub async fn check(db: &Db, user_id: &str) -> Result<UserState, DbError> {
    Ok(if sql::is_tombstoned(db, user_id).await? {
        UserState::Deleted
    } else {
        UserState::Active
    })
}

/// The second half of every creation: on a fresh snapshot, a tombstone wins over the row.
pub async fn drop_if_tombstoned(tx: &Tx, user_id: &str) -> Result<UserState, DbError> {
    Ok(if sql::drop_if_tombstoned(tx, user_id).await? {
        UserState::Deleted
    } else {
        UserState::Active
    })
}
