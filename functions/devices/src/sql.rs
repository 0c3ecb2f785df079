//! The devices function's SQL. Every statement is scoped to the caller (`owner_id`), so another
//! user's device, rule or alert is indistinguishable from one that does not exist. Decimals leave
//! the database as text: exact, whatever their size.

use shared::db::Sql;

/// Creating twice makes two devices: never retried.
pub const CREATE_DEVICE: Sql = Sql::once(
    "INSERT INTO devices (owner_id, name, device_key_hash)
     VALUES ($1, $2, $3)
     RETURNING id, name, status, last_seen_at, created_at",
);

/// Newest first; `($2, $3)` is the keyset cursor. Fetches one more row than the page holds to
/// tell whether another page follows.
pub const LIST_DEVICES: Sql = Sql::idempotent(
    "SELECT id, name, status, last_seen_at, created_at
     FROM devices
     WHERE owner_id = $1 AND (created_at, id) < ($2, $3)
     ORDER BY created_at DESC, id DESC
     LIMIT $4",
);

pub const GET_DEVICE: Sql = Sql::idempotent(
    "SELECT id, name, status, last_seen_at, created_at
     FROM devices
     WHERE id = $1 AND owner_id = $2",
);

pub const RENAME_DEVICE: Sql = Sql::idempotent(
    "UPDATE devices SET name = $3
     WHERE id = $1 AND owner_id = $2
     RETURNING id, name, status, last_seen_at, created_at",
);

/// Readings, rules and alerts go with it (foreign keys cascade). Not retried: a retry after a
/// lost reply would answer 404 for a delete that succeeded.
pub const DELETE_DEVICE: Sql = Sql::once("DELETE FROM devices WHERE id = $1 AND owner_id = $2");

/// The ownership check is the `SELECT` the row comes from: no device of yours, no row, `404`.
pub const CREATE_RULE: Sql = Sql::once(
    "INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds, clear_threshold)
     SELECT d.id, $3, $4, $5, $6, $7
     FROM devices d
     WHERE d.id = $1 AND d.owner_id = $2
     RETURNING id, device_id, metric, comparator, threshold::text, for_seconds,
               clear_threshold::text, created_at, updated_at",
);

/// One row per rule, or a single row of NULLs for a device of yours without rules; no row at
/// all when the device is not yours.
pub const LIST_RULES: Sql = Sql::idempotent(
    "SELECT r.id, d.id, r.metric, r.comparator, r.threshold::text, r.for_seconds,
            r.clear_threshold::text, r.created_at, r.updated_at
     FROM devices d
     LEFT JOIN alert_rules r ON r.device_id = d.id
     WHERE d.id = $1 AND d.owner_id = $2
     ORDER BY r.created_at DESC, r.id DESC",
);

pub const GET_RULE: Sql = Sql::idempotent(
    "SELECT r.id, r.device_id, r.metric, r.comparator, r.threshold::text, r.for_seconds,
            r.clear_threshold::text, r.created_at, r.updated_at
     FROM alert_rules r
     JOIN devices d ON d.id = r.device_id
     WHERE r.id = $1 AND r.device_id = $2 AND d.owner_id = $3",
);

/// A NULL parameter keeps the field; `$8` says whether `clear_threshold` was given at all (it
/// may be set to NULL). The table's CHECK keeps the merged rule's clear threshold on the right
/// side of its threshold.
pub const UPDATE_RULE: Sql = Sql::idempotent(
    "UPDATE alert_rules r
     SET metric = coalesce($4, r.metric),
         comparator = coalesce($5, r.comparator),
         threshold = coalesce($6, r.threshold),
         for_seconds = coalesce($7, r.for_seconds),
         clear_threshold = CASE WHEN $8 THEN $9 ELSE r.clear_threshold END,
         updated_at = now()
     FROM devices d
     WHERE r.id = $1 AND r.device_id = $2 AND d.id = r.device_id AND d.owner_id = $3
     RETURNING r.id, r.device_id, r.metric, r.comparator, r.threshold::text, r.for_seconds,
               r.clear_threshold::text, r.created_at, r.updated_at",
);

pub const DELETE_RULE: Sql = Sql::once(
    "DELETE FROM alert_rules r
     USING devices d
     WHERE r.id = $1 AND r.device_id = $2 AND d.id = r.device_id AND d.owner_id = $3",
);

/// Newest first by `triggered_at`, optionally one status and one device; `($4, $5)` is the
/// keyset cursor. Walks the (owner_id, triggered_at, id) index.
pub const LIST_ALERTS: Sql = Sql::idempotent(
    "SELECT id, rule_id, device_id, metric, status, value::text, triggered_at, resolved_at
     FROM alerts
     WHERE owner_id = $1
       AND ($2::text IS NULL OR status = $2)
       AND ($3::uuid IS NULL OR device_id = $3)
       AND (triggered_at, id) < ($4, $5)
     ORDER BY triggered_at DESC, id DESC
     LIMIT $6",
);
