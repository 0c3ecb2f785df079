//! The devices function's statements: each one a typed function that owns its SQL, its
//! parameters and the decoding of its rows (columns by name). Every statement is scoped to the
//! caller (`owner_id`), so another user's device, rule or alert is indistinguishable from one
//! that does not exist. Decimals leave the database as text: exact, whatever their size.

use const_format::concatcp;
use shared::auth::UserId;
use shared::db::{Db, DbError, Sql};
use shared::domain::DeviceName;
use shared::paging::{PageRequest, TimeId};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::alerts::{Alert, AlertFilter};
use crate::devices::Device;
use crate::rules::{NewRule, Rule, RuleChange};

/// A device as every statement returns it (`d` is the `devices` row).
const DEVICE: &str = "d.id, d.name, d.status, d.last_seen_at, d.created_at, d.key_created_at,
     d.previous_key_expires_at";

fn device(row: &Row) -> Result<Device, DbError> {
    Ok(Device {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        last_seen_at: row.try_get("last_seen_at")?,
        created_at: row.try_get("created_at")?,
        key_created_at: row.try_get("key_created_at")?,
        previous_key_expires_at: row.try_get("previous_key_expires_at")?,
    })
}

/// What a statement that creates something under a limit did.
pub enum Bounded<T> {
    Created(T),
    /// Nothing written: the parent is at its limit.
    AtLimit,
}

impl<T> Bounded<T> {
    /// From the row of a bounded create: its `room` column, and the created thing when there was.
    fn from_row(row: &Row, created: fn(&Row) -> Result<T, DbError>) -> Result<Self, DbError> {
        Ok(if row.try_get("room")? {
            Self::Created(created(row)?)
        } else {
            Self::AtLimit
        })
    }
}

/// The owner's row, locked first (so that creates for one owner take turns and read the newest
/// counter), whether it has room under the limit `$4`, and the counter taken only when it has:
/// the limit is exact however many creates run at once. Then the device with its key; no row at
/// all when the owner's row is gone (the user was deleted: their token is stale). Creating twice
/// makes two devices: never retried.
const CREATE_DEVICE: Sql = Sql::once(concatcp!(
    r#"WITH owner AS (
         SELECT u.id, u.device_count < $4 AS room FROM "user" u WHERE u.id = $1
         FOR NO KEY UPDATE
     ),
     counted AS (
         UPDATE "user" u SET device_count = u.device_count + 1
         FROM owner WHERE u.id = owner.id AND owner.room
         RETURNING u.id
     ),
     d AS (
         INSERT INTO devices (owner_id, name, device_key_hash) SELECT id, $2, $3 FROM counted
         RETURNING *
     )
     SELECT owner.room, "#,
    DEVICE,
    " FROM owner LEFT JOIN d ON true"
));

/// `None` when the owner's row is gone.
pub async fn create_device(
    db: &Db,
    owner: &UserId,
    name: &DeviceName,
    key_hash: &[u8],
    limit: i32,
) -> Result<Option<Bounded<Device>>, DbError> {
    db.query_typed_opt(
        &CREATE_DEVICE,
        &[
            (&owner.as_str(), Type::TEXT),
            (&name.as_str(), Type::TEXT),
            (&key_hash, Type::BYTEA),
            (&limit, Type::INT4),
        ],
    )
    .await?
    .map(|row| Bounded::from_row(&row, device))
    .transpose()
}

/// Newest first, after the keyset cursor `($2, $3)`.
const LIST_DEVICES: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    DEVICE,
    " FROM devices d
     WHERE d.owner_id = $1 AND (d.created_at, d.id) < ($2, $3)
     ORDER BY d.created_at DESC, d.id DESC
     LIMIT $4"
));

pub async fn list_devices(
    db: &Db,
    owner: &UserId,
    page: &PageRequest<TimeId>,
) -> Result<Vec<Device>, DbError> {
    let after = TimeId::or_start(page.after);
    db.query_typed(
        &LIST_DEVICES,
        &[
            (&owner.as_str(), Type::TEXT),
            (&after.at, Type::TIMESTAMPTZ),
            (&after.id, Type::UUID),
            (&page.fetch(), Type::INT8),
        ],
    )
    .await?
    .iter()
    .map(device)
    .collect()
}

const GET_DEVICE: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    DEVICE,
    " FROM devices d WHERE d.id = $1 AND d.owner_id = $2"
));

pub async fn get_device(db: &Db, owner: &UserId, id: Uuid) -> Result<Option<Device>, DbError> {
    db.query_typed_opt(
        &GET_DEVICE,
        &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
    )
    .await?
    .as_ref()
    .map(device)
    .transpose()
}

const RENAME_DEVICE: Sql = Sql::idempotent(concatcp!(
    "UPDATE devices d SET name = $3
     WHERE d.id = $1 AND d.owner_id = $2
     RETURNING ",
    DEVICE
));

pub async fn rename_device(
    db: &Db,
    owner: &UserId,
    id: Uuid,
    name: &DeviceName,
) -> Result<Option<Device>, DbError> {
    db.query_typed_opt(
        &RENAME_DEVICE,
        &[
            (&id, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&name.as_str(), Type::TEXT),
        ],
    )
    .await?
    .as_ref()
    .map(device)
    .transpose()
}

/// Readings, rules and alerts go with it (foreign keys cascade), and its place under the
/// owner's limit is free at once. The owner's row is locked first, as [`CREATE_DEVICE`] does.
/// `once`: a retry after a lost reply would find nothing and answer 404 for a delete that
/// succeeded.
const DELETE_DEVICE: Sql = Sql::once(
    r#"WITH owner AS (SELECT id FROM "user" WHERE id = $2 FOR NO KEY UPDATE),
     gone AS (
         DELETE FROM devices d USING owner WHERE d.id = $1 AND d.owner_id = owner.id
         RETURNING d.owner_id
     ),
     counted AS (
         UPDATE "user" u SET device_count = u.device_count - 1 FROM gone WHERE u.id = gone.owner_id
     )
     SELECT count(*) AS deleted FROM gone"#,
);

/// Whether the caller had such a device.
pub async fn delete_device(db: &Db, owner: &UserId, id: Uuid) -> Result<bool, DbError> {
    let row = db
        .query_typed_one(
            &DELETE_DEVICE,
            &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(row.try_get::<_, i64>("deleted")? > 0)
}

/// A new current key `$3`; the current one until now becomes the previous key, valid for `$4`
/// more seconds; an older previous key, if any, ends at once. One row: concurrent rotations take
/// turns on it, each moving the key the one before it left.
const ROTATE_KEY: Sql = Sql::once(concatcp!(
    "UPDATE devices d
     SET previous_key_hash = d.device_key_hash,
         previous_key_expires_at = now() + make_interval(secs => $4),
         device_key_hash = $3,
         key_created_at = now()
     WHERE d.id = $1 AND d.owner_id = $2
     RETURNING ",
    DEVICE
));

/// `None` when the device is not the caller's.
pub async fn rotate_key(
    db: &Db,
    owner: &UserId,
    id: Uuid,
    key_hash: &[u8],
    grace_seconds: i32,
) -> Result<Option<Device>, DbError> {
    db.query_typed_opt(
        &ROTATE_KEY,
        &[
            (&id, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&key_hash, Type::BYTEA),
            (&f64::from(grace_seconds), Type::FLOAT8),
        ],
    )
    .await?
    .as_ref()
    .map(device)
    .transpose()
}

/// A rule as every statement returns it (`r` is the `alert_rules` row).
const RULE: &str = "r.id, r.device_id, r.metric, r.comparator, r.threshold::text AS threshold,
     r.for_seconds, r.clear_threshold::text AS clear_threshold, r.created_at, r.updated_at";

fn rule(row: &Row) -> Result<Rule, DbError> {
    Ok(Rule {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        metric: row.try_get("metric")?,
        comparator: row.try_get("comparator")?,
        threshold: row.try_get("threshold")?,
        for_seconds: row.try_get("for_seconds")?,
        clear_threshold: row.try_get("clear_threshold")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The device, locked first (creates on one device take turns and read its newest counter), and
/// the rule only when the device has room under the limit `$8`, as [`CREATE_DEVICE`] does for
/// devices. No row when the device is not the caller's.
const CREATE_RULE: Sql = Sql::once(concatcp!(
    "WITH device AS (
         SELECT d.id, d.rule_count < $8 AS room FROM devices d WHERE d.id = $1 AND d.owner_id = $2
         FOR NO KEY UPDATE
     ),
     counted AS (
         UPDATE devices d SET rule_count = d.rule_count + 1
         FROM device WHERE d.id = device.id AND device.room
         RETURNING d.id
     ),
     r AS (
         INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds, clear_threshold)
         SELECT id, $3, $4, $5, $6, $7 FROM counted
         RETURNING *
     )
     SELECT device.room, ",
    RULE,
    " FROM device LEFT JOIN r ON true"
));

/// `None` when the device is not the caller's.
pub async fn create_rule(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    new: &NewRule,
    limit: i32,
) -> Result<Option<Bounded<Rule>>, DbError> {
    db.query_typed_opt(
        &CREATE_RULE,
        &[
            (&device, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&new.metric.as_str(), Type::TEXT),
            (&new.comparator.as_str(), Type::TEXT),
            (&new.threshold, Type::NUMERIC),
            (&new.for_seconds.get(), Type::INT4),
            (&new.clear_threshold, Type::NUMERIC),
            (&limit, Type::INT4),
        ],
    )
    .await?
    .map(|row| Bounded::from_row(&row, rule))
    .transpose()
}

/// Newest first after the keyset cursor `($3, $4)`: one row per rule, or a single row of NULLs
/// for a device of the caller's with no rules (left); no row at all when the device is not theirs.
const LIST_RULES: Sql = Sql::idempotent(concatcp!(
    "SELECT r.*
     FROM devices d
     LEFT JOIN LATERAL (
         SELECT ",
    RULE,
    " FROM alert_rules r
         WHERE r.device_id = d.id AND (r.created_at, r.id) < ($3, $4)
         ORDER BY r.created_at DESC, r.id DESC
         LIMIT $5
     ) r ON true
     WHERE d.id = $1 AND d.owner_id = $2
     ORDER BY r.created_at DESC, r.id DESC"
));

/// `None` when the device is not the caller's.
pub async fn list_rules(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    page: &PageRequest<TimeId>,
) -> Result<Option<Vec<Rule>>, DbError> {
    let after = TimeId::or_start(page.after);
    let rows = db
        .query_typed(
            &LIST_RULES,
            &[
                (&device, Type::UUID),
                (&owner.as_str(), Type::TEXT),
                (&after.at, Type::TIMESTAMPTZ),
                (&after.id, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut rules = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
            rules.push(rule(row)?);
        }
    }
    Ok(Some(rules))
}

const GET_RULE: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    RULE,
    " FROM alert_rules r
     JOIN devices d ON d.id = r.device_id
     WHERE r.id = $1 AND r.device_id = $2 AND d.owner_id = $3"
));

pub async fn get_rule(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    id: Uuid,
) -> Result<Option<Rule>, DbError> {
    db.query_typed_opt(
        &GET_RULE,
        &[
            (&id, Type::UUID),
            (&device, Type::UUID),
            (&owner.as_str(), Type::TEXT),
        ],
    )
    .await?
    .as_ref()
    .map(rule)
    .transpose()
}

/// A NULL parameter keeps the field; `$8` says whether `clear_threshold` was given at all (it
/// may be set to NULL). The table's CHECK keeps the merged rule's clear threshold on the right
/// side of its threshold (`23514`, which the caller turns into a `422`).
const UPDATE_RULE: Sql = Sql::idempotent(concatcp!(
    "UPDATE alert_rules r
     SET metric = coalesce($4, r.metric),
         comparator = coalesce($5, r.comparator),
         threshold = coalesce($6, r.threshold),
         for_seconds = coalesce($7, r.for_seconds),
         clear_threshold = CASE WHEN $8 THEN $9 ELSE r.clear_threshold END,
         updated_at = now()
     FROM devices d
     WHERE r.id = $1 AND r.device_id = $2 AND d.id = r.device_id AND d.owner_id = $3
     RETURNING ",
    RULE
));

pub async fn update_rule(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    id: Uuid,
    change: &RuleChange,
) -> Result<Option<Rule>, DbError> {
    let metric = change.metric.as_ref().map(|m| m.as_str());
    let comparator = change.comparator.map(|c| c.as_str());
    let for_seconds = change.for_seconds.map(|f| f.get());
    let clear_given = change.clear_threshold.is_some();
    let clear_threshold = change.clear_threshold.flatten();
    db.query_typed_opt(
        &UPDATE_RULE,
        &[
            (&id, Type::UUID),
            (&device, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&metric, Type::TEXT),
            (&comparator, Type::TEXT),
            (&change.threshold, Type::NUMERIC),
            (&for_seconds, Type::INT4),
            (&clear_given, Type::BOOL),
            (&clear_threshold, Type::NUMERIC),
        ],
    )
    .await?
    .as_ref()
    .map(rule)
    .transpose()
}

/// The device is locked first, as [`CREATE_RULE`] does, and its place under the limit is free at
/// once. `once`, like [`DELETE_DEVICE`].
const DELETE_RULE: Sql = Sql::once(
    "WITH device AS (
         SELECT d.id FROM devices d WHERE d.id = $2 AND d.owner_id = $3 FOR NO KEY UPDATE
     ),
     gone AS (
         DELETE FROM alert_rules r USING device WHERE r.id = $1 AND r.device_id = device.id
         RETURNING r.device_id
     ),
     counted AS (
         UPDATE devices d SET rule_count = d.rule_count - 1 FROM gone WHERE d.id = gone.device_id
     )
     SELECT count(*) AS deleted FROM gone",
);

/// Whether the caller had such a rule on such a device.
pub async fn delete_rule(db: &Db, owner: &UserId, device: Uuid, id: Uuid) -> Result<bool, DbError> {
    let row = db
        .query_typed_one(
            &DELETE_RULE,
            &[
                (&id, Type::UUID),
                (&device, Type::UUID),
                (&owner.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(row.try_get::<_, i64>("deleted")? > 0)
}

/// Newest first by `triggered_at`, optionally one status and one device, after the keyset
/// cursor `($4, $5)`. Walks the (owner_id, triggered_at, id) index.
const LIST_ALERTS: Sql = Sql::idempotent(
    "SELECT a.id, a.rule_id, a.device_id, a.metric, a.status, a.value::text AS value,
            a.triggered_at, a.resolved_at, a.fired_reading_at, a.resolved_reading_at
     FROM alerts a
     WHERE a.owner_id = $1
       AND ($2::text IS NULL OR a.status = $2)
       AND ($3::uuid IS NULL OR a.device_id = $3)
       AND (a.triggered_at, a.id) < ($4, $5)
     ORDER BY a.triggered_at DESC, a.id DESC
     LIMIT $6",
);

pub async fn list_alerts(
    db: &Db,
    owner: &UserId,
    filter: &AlertFilter,
    page: &PageRequest<TimeId>,
) -> Result<Vec<Alert>, DbError> {
    let after = TimeId::or_start(page.after);
    let status = filter.status.map(|s| s.as_str());
    db.query_typed(
        &LIST_ALERTS,
        &[
            (&owner.as_str(), Type::TEXT),
            (&status, Type::TEXT),
            (&filter.device_id, Type::UUID),
            (&after.at, Type::TIMESTAMPTZ),
            (&after.id, Type::UUID),
            (&page.fetch(), Type::INT8),
        ],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Alert {
            id: row.try_get("id")?,
            rule_id: row.try_get("rule_id")?,
            device_id: row.try_get("device_id")?,
            metric: row.try_get("metric")?,
            status: row.try_get("status")?,
            value: row.try_get("value")?,
            triggered_at: row.try_get("triggered_at")?,
            resolved_at: row.try_get("resolved_at")?,
            fired_reading_at: row.try_get("fired_reading_at")?,
            resolved_reading_at: row.try_get("resolved_reading_at")?,
        })
    })
    .collect()
}
