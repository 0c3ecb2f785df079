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
const DEVICE: &str = "d.id, d.name, d.status, d.last_seen_at, d.created_at";

fn device(row: &Row) -> Result<Device, DbError> {
    Ok(Device {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        last_seen_at: row.try_get("last_seen_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Creating twice makes two devices: never retried.
const CREATE_DEVICE: Sql = Sql::once(concatcp!(
    "INSERT INTO devices AS d (owner_id, name, device_key_hash)
     VALUES ($1, $2, $3)
     RETURNING ",
    DEVICE
));

pub async fn create_device(
    db: &Db,
    owner: &UserId,
    name: &DeviceName,
    key_hash: &[u8],
) -> Result<Device, DbError> {
    let row = db
        .query_typed_one(
            &CREATE_DEVICE,
            &[
                (&owner.as_str(), Type::TEXT),
                (&name.as_str(), Type::TEXT),
                (&key_hash, Type::BYTEA),
            ],
        )
        .await?;
    device(&row)
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

/// Readings, rules and alerts go with it (foreign keys cascade). `once`: a retry after a lost
/// reply would find nothing and answer 404 for a delete that succeeded.
const DELETE_DEVICE: Sql = Sql::once("DELETE FROM devices WHERE id = $1 AND owner_id = $2");

/// Whether the caller had such a device.
pub async fn delete_device(db: &Db, owner: &UserId, id: Uuid) -> Result<bool, DbError> {
    let deleted = db
        .execute_typed(
            &DELETE_DEVICE,
            &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(deleted > 0)
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

/// The ownership check is the `SELECT` the row comes from: no device of yours, no row.
const CREATE_RULE: Sql = Sql::once(concatcp!(
    "INSERT INTO alert_rules AS r (device_id, metric, comparator, threshold, for_seconds, clear_threshold)
     SELECT d.id, $3, $4, $5, $6, $7
     FROM devices d
     WHERE d.id = $1 AND d.owner_id = $2
     RETURNING ",
    RULE
));

/// `None` when the device is not the caller's.
pub async fn create_rule(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    new: &NewRule,
) -> Result<Option<Rule>, DbError> {
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
        ],
    )
    .await?
    .as_ref()
    .map(rule)
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

/// `once`, like [`DELETE_DEVICE`].
const DELETE_RULE: Sql = Sql::once(
    "DELETE FROM alert_rules r
     USING devices d
     WHERE r.id = $1 AND r.device_id = $2 AND d.id = r.device_id AND d.owner_id = $3",
);

/// Whether the caller had such a rule on such a device.
pub async fn delete_rule(db: &Db, owner: &UserId, device: Uuid, id: Uuid) -> Result<bool, DbError> {
    let deleted = db
        .execute_typed(
            &DELETE_RULE,
            &[
                (&id, Type::UUID),
                (&device, Type::UUID),
                (&owner.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(deleted > 0)
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
