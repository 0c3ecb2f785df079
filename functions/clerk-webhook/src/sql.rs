//! The webhook's statements, each a typed function owning its SQL, parameters and row decoding.
//! See `shared::users` for why creation and deletion each take two steps.

use chrono::{DateTime, Utc};
use shared::db::{DbError, Sql, Tx};
use tokio_postgres::types::Type;

use crate::ClerkUser;

/// `user.created` / `user.updated`: insert, or overwrite a row whose stored event is older
/// (placeholders have none). An event older than or equal to the stored one changes nothing.
/// Tombstoned ids are skipped here and, if a deletion races this, dropped by the recheck.
const UPSERT_USER: Sql = Sql::idempotent(
    r#"INSERT INTO "user" (id, email, first_name, last_name, image_url, updated_at)
       SELECT $1, $2, $3, $4, $5, $6
       WHERE NOT EXISTS (SELECT 1 FROM user_tombstones WHERE id = $1)
       ON CONFLICT (id) DO UPDATE
          SET email = excluded.email,
              first_name = excluded.first_name,
              last_name = excluded.last_name,
              image_url = excluded.image_url,
              updated_at = excluded.updated_at
        WHERE "user".updated_at IS NULL OR "user".updated_at < excluded.updated_at"#,
);

/// `user.deleted`, step one: the tombstone (kept at the first deletion's time), then the row's
/// key taken with an upsert, which waits for any creation of this user still in flight.
/// Returns whether the tombstone is new.
const TOMBSTONE_AND_LOCK_USER: Sql = Sql::idempotent(
    r#"WITH tombstone AS (
           INSERT INTO user_tombstones (id, deleted_at) VALUES ($1, $2)
           ON CONFLICT (id) DO NOTHING
           RETURNING id
       )
       INSERT INTO "user" (id) VALUES ($1)
       ON CONFLICT (id) DO UPDATE SET id = excluded.id
       RETURNING EXISTS (SELECT 1 FROM tombstone) AS new_tombstone"#,
);

/// `user.deleted`, step two: the row goes, and with it (cascade) devices, rules, alerts,
/// channels and silences (the devices' readings are queued for purging, migration V7); and their notification events and deliveries, which have no
/// foreign key (see migration V6; one written by a pass at this very moment is removed with the
/// events older than 30 days).
const DELETE_USER: Sql = Sql::idempotent(
    r#"WITH gone AS (DELETE FROM "user" WHERE id = $1)
     DELETE FROM notification_events WHERE owner_id = $1"#,
);

/// Whether the row was written (an older or equal event changes nothing).
pub async fn upsert_user(tx: &Tx, user: &ClerkUser, email: Option<&str>) -> Result<bool, DbError> {
    let changed = tx
        .execute_typed(
            &UPSERT_USER,
            &[
                (&user.id, Type::TEXT),
                (&email, Type::TEXT),
                (&user.first_name, Type::TEXT),
                (&user.last_name, Type::TEXT),
                (&user.image_url, Type::TEXT),
                (&user.updated_at, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    Ok(changed > 0)
}

/// Whether the tombstone is new (the first deletion of this user).
pub async fn tombstone_and_lock_user(
    tx: &Tx,
    user_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbError> {
    let row = tx
        .query_typed_one(
            &TOMBSTONE_AND_LOCK_USER,
            &[(&user_id, Type::TEXT), (&at, Type::TIMESTAMPTZ)],
        )
        .await?;
    Ok(row.try_get("new_tombstone")?)
}

pub async fn delete_user(tx: &Tx, user_id: &str) -> Result<(), DbError> {
    tx.execute_typed(&DELETE_USER, &[(&user_id, Type::TEXT)])
        .await?;
    Ok(())
}
