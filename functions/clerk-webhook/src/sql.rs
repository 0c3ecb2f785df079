//! The webhook's SQL. See `shared::users` for why creation and deletion each take two steps.

use shared::db::Sql;

/// `user.created` / `user.updated`: insert, or overwrite a row whose stored event is older
/// (placeholders have none). An event older than or equal to the stored one changes nothing.
/// Tombstoned ids are skipped here and, if a deletion races this, dropped by the recheck.
pub const UPSERT_USER: Sql = Sql::idempotent(
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
pub const TOMBSTONE_AND_LOCK_USER: Sql = Sql::idempotent(
    r#"WITH tombstone AS (
           INSERT INTO user_tombstones (id, deleted_at) VALUES ($1, $2)
           ON CONFLICT (id) DO NOTHING
           RETURNING id
       )
       INSERT INTO "user" (id) VALUES ($1)
       ON CONFLICT (id) DO UPDATE SET id = excluded.id
       RETURNING EXISTS (SELECT 1 FROM tombstone)"#,
);

/// `user.deleted`, step two: the row goes, and with it (cascade) devices, readings, rules and
/// alerts. Returns whether a real (not placeholder-for-locking) row went.
pub const DELETE_USER: Sql =
    Sql::idempotent(r#"DELETE FROM "user" WHERE id = $1 RETURNING updated_at IS NOT NULL"#);
