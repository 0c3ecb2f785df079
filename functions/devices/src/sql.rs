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
use crate::channels::{Channel, ChannelFields, Delivery};
use crate::devices::Device;
use crate::rules::{NewRule, Rule, RuleChange};
use crate::silences::{Recurrence, Silence, SilenceSpec};

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

/// Rules and alerts go with it (foreign keys cascade) and its key stops working, at once; its
/// readings, however many, stay stored but unreachable (every read goes through the device row)
/// until the scheduled function purges them in chunks (the trigger of migration V7 queues it).
/// Its place under the owner's limit is free at once. The owner's row is locked first, as [`CREATE_DEVICE`] does.
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
    children(&rows, rule)
}

/// The rows of a list under a parent (`parent LEFT JOIN LATERAL (children)`): `None` when there
/// is no row (the parent is not the caller's), else the children, the single row of NULLs of a
/// parent without any decoding to none.
fn children<T>(
    rows: &[Row],
    decode: fn(&Row) -> Result<T, DbError>,
) -> Result<Option<Vec<T>>, DbError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
            items.push(decode(row)?);
        }
    }
    Ok(Some(items))
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

/// Newest first by `triggered_at`, optionally one status, one device and acknowledged or not,
/// after the keyset cursor `($4, $5)`. Walks the (owner_id, triggered_at, id) index.
const LIST_ALERTS: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    ALERT,
    " FROM alerts a
     WHERE a.owner_id = $1
       AND ($2::text IS NULL OR a.status = $2)
       AND ($3::uuid IS NULL OR a.device_id = $3)
       AND ($7::bool IS NULL OR (a.acknowledged_at IS NOT NULL) = $7)
       AND (a.triggered_at, a.id) < ($4, $5)
     ORDER BY a.triggered_at DESC, a.id DESC
     LIMIT $6"
));

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
            (&filter.acknowledged, Type::BOOL),
        ],
    )
    .await?
    .iter()
    .map(alert)
    .collect()
}

/// An alert as every statement returns it (`a` is the `alerts` row).
const ALERT: &str = "a.id, a.rule_id, a.device_id, a.metric, a.status, a.value::text AS value,
     a.triggered_at, a.resolved_at, a.fired_reading_at, a.resolved_reading_at, a.acknowledged_at,
     a.acknowledged_by, a.comment";

fn alert(row: &Row) -> Result<Alert, DbError> {
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
        acknowledged_at: row.try_get("acknowledged_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        comment: row.try_get("comment")?,
    })
}

/// The first acknowledgement is kept: acknowledging again changes nothing (and the trigger of
/// migration V6 writes `alert.acknowledged` only when `acknowledged_at` goes from NULL to set).
const ACKNOWLEDGE: Sql = Sql::idempotent(concatcp!(
    "UPDATE alerts a
     SET acknowledged_at = coalesce(a.acknowledged_at, now()),
         acknowledged_by = CASE WHEN a.acknowledged_at IS NULL THEN $2 ELSE a.acknowledged_by END,
         comment = CASE WHEN a.acknowledged_at IS NULL THEN $3 ELSE a.comment END
     WHERE a.id = $1 AND a.owner_id = $2
     RETURNING ",
    ALERT
));

/// `None` when the alert is not the caller's.
pub async fn acknowledge(
    db: &Db,
    owner: &UserId,
    id: Uuid,
    comment: Option<&str>,
) -> Result<Option<Alert>, DbError> {
    db.query_typed_opt(
        &ACKNOWLEDGE,
        &[
            (&id, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&comment, Type::TEXT),
        ],
    )
    .await?
    .as_ref()
    .map(alert)
    .transpose()
}

/// A channel as every statement returns it (`c` is the `channels` row).
const CHANNEL: &str =
    "c.id, c.name, c.type, c.target, c.events, c.device_ids, c.enabled, c.created_at";

fn channel(row: &Row) -> Result<Channel, DbError> {
    Ok(Channel {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: row.try_get("type")?,
        target: row.try_get("target")?,
        events: row.try_get("events")?,
        device_ids: row.try_get("device_ids")?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
    })
}

pub struct NewChannel<'a> {
    pub name: &'a DeviceName,
    pub kind: &'a str,
    pub target: &'a serde_json::Value,
    pub events: &'a [String],
    pub device_ids: Option<&'a [Uuid]>,
    pub enabled: bool,
    pub signing_secret: Option<&'a str>,
}

/// What a write that names devices found.
pub enum Checked<T> {
    Done(T),
    /// A `device_ids` entry is not one of the owner's devices: nothing written.
    NotYourDevices,
    /// The owner's row is gone (a stale token).
    NoOwner,
}

/// Whether every id in `$6` (NULL: all devices) is a device of the owner `$1`.
const DEVICES_CHECKED: &str = "checked AS (
         SELECT $6::uuid[] IS NULL
             OR (SELECT count(*) FROM devices d WHERE d.owner_id = $1 AND d.id = ANY ($6::uuid[]))
                = cardinality($6::uuid[]) AS ok
     )";

/// The owner's row is held (`FOR KEY SHARE`) so that a user deleted meanwhile waits for it.
const CREATE_CHANNEL: Sql = Sql::once(concatcp!(
    r#"WITH owner AS (SELECT u.id FROM "user" u WHERE u.id = $1 FOR KEY SHARE),
     "#,
    DEVICES_CHECKED,
    ",
     c AS (
         INSERT INTO channels (owner_id, name, type, target, events, device_ids, enabled,
                               signing_secret)
         SELECT owner.id, $2, $3, $4, $5, $6, $7, $8 FROM owner, checked WHERE checked.ok
         RETURNING *
     )
     SELECT checked.ok AS devices_ok, EXISTS (SELECT 1 FROM owner) AS owner_ok, ",
    CHANNEL,
    " FROM checked LEFT JOIN c ON true"
));

fn checked_channel(row: &Row) -> Result<Checked<Channel>, DbError> {
    Ok(if !row.try_get::<_, bool>("devices_ok")? {
        Checked::NotYourDevices
    } else if !row.try_get::<_, bool>("owner_ok")? {
        Checked::NoOwner
    } else {
        Checked::Done(channel(row)?)
    })
}

pub async fn create_channel(
    db: &Db,
    owner: &UserId,
    new: &NewChannel<'_>,
) -> Result<Checked<Channel>, DbError> {
    let row = db
        .query_typed_one(
            &CREATE_CHANNEL,
            &[
                (&owner.as_str(), Type::TEXT),
                (&new.name.as_str(), Type::TEXT),
                (&new.kind, Type::TEXT),
                (new.target, Type::JSONB),
                (&new.events, Type::TEXT_ARRAY),
                (&new.device_ids, Type::UUID_ARRAY),
                (&new.enabled, Type::BOOL),
                (&new.signing_secret, Type::TEXT),
            ],
        )
        .await?;
    checked_channel(&row)
}

const LIST_CHANNELS: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    CHANNEL,
    " FROM channels c
     WHERE c.owner_id = $1 AND (c.created_at, c.id) < ($2, $3)
     ORDER BY c.created_at DESC, c.id DESC
     LIMIT $4"
));

pub async fn list_channels(
    db: &Db,
    owner: &UserId,
    page: &PageRequest<TimeId>,
) -> Result<Vec<Channel>, DbError> {
    let after = TimeId::or_start(page.after);
    db.query_typed(
        &LIST_CHANNELS,
        &[
            (&owner.as_str(), Type::TEXT),
            (&after.at, Type::TIMESTAMPTZ),
            (&after.id, Type::UUID),
            (&page.fetch(), Type::INT8),
        ],
    )
    .await?
    .iter()
    .map(channel)
    .collect()
}

const GET_CHANNEL: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    CHANNEL,
    " FROM channels c WHERE c.id = $1 AND c.owner_id = $2"
));

pub async fn get_channel(db: &Db, owner: &UserId, id: Uuid) -> Result<Option<Channel>, DbError> {
    db.query_typed_opt(
        &GET_CHANNEL,
        &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
    )
    .await?
    .as_ref()
    .map(channel)
    .transpose()
}

/// Sets the given fields (`$7`: whether `device_ids` was given, as NULL means "all"). A channel
/// turned off fails its pending deliveries: a disabled channel is sent nothing.
const UPDATE_CHANNEL: Sql = Sql::idempotent(concatcp!(
    "WITH ",
    DEVICES_CHECKED,
    ",
     c AS (
         UPDATE channels c
         SET name = coalesce($3, c.name), target = coalesce($4, c.target),
             events = coalesce($5, c.events),
             device_ids = CASE WHEN $7 THEN $6 ELSE c.device_ids END,
             enabled = coalesce($8, c.enabled)
         FROM checked
         WHERE c.id = $2 AND c.owner_id = $1 AND checked.ok
         RETURNING c.*
     ),
     muted AS (
         UPDATE deliveries SET status = 'failed', next_attempt_at = NULL,
                               last_error = 'channel disabled'
         WHERE channel_id IN (SELECT id FROM c WHERE NOT enabled) AND status = 'pending'
     )
     SELECT checked.ok AS devices_ok, c.id IS NOT NULL AS owner_ok, ",
    CHANNEL,
    " FROM checked LEFT JOIN c ON true"
));

/// `None` when the channel is not the caller's.
pub async fn update_channel(
    db: &Db,
    owner: &UserId,
    id: Uuid,
    change: &ChannelFields,
) -> Result<Option<Checked<Channel>>, DbError> {
    let ids = change.device_ids.clone().flatten();
    let row = db
        .query_typed_one(
            &UPDATE_CHANNEL,
            &[
                (&owner.as_str(), Type::TEXT),
                (&id, Type::UUID),
                (&change.name.as_ref().map(|n| n.as_str()), Type::TEXT),
                (&change.target, Type::JSONB),
                (&change.events, Type::TEXT_ARRAY),
                (&ids, Type::UUID_ARRAY),
                (&change.device_ids.is_some(), Type::BOOL),
                (&change.enabled, Type::BOOL),
            ],
        )
        .await?;
    Ok(match checked_channel(&row)? {
        Checked::NoOwner => None,
        other => Some(other),
    })
}

/// The channel and its deliveries (which have no foreign key to it, see migration V6).
const DELETE_CHANNEL: Sql = Sql::once(
    "WITH c AS (DELETE FROM channels WHERE id = $1 AND owner_id = $2 RETURNING id),
     d AS (DELETE FROM deliveries WHERE channel_id IN (SELECT id FROM c))
     SELECT count(*) AS deleted FROM c",
);

pub async fn delete_channel(db: &Db, owner: &UserId, id: Uuid) -> Result<bool, DbError> {
    let row = db
        .query_typed_one(
            &DELETE_CHANNEL,
            &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
        )
        .await?;
    Ok(row.try_get::<_, i64>("deleted")? > 0)
}

/// A `test` event (id `$3`, no device) and its one delivery to the channel, due now.
const CREATE_TEST_DELIVERY: Sql = Sql::once(
    "WITH c AS (SELECT id, owner_id FROM channels WHERE id = $1 AND owner_id = $2),
     e AS (
         INSERT INTO notification_events (id, owner_id, type, occurred_at, payload)
         SELECT $3, c.owner_id, 'test', now(),
                jsonb_build_object('id', $3::uuid, 'type', 'test', 'occurred_at', api_time(now()))
         FROM c
         RETURNING id, seq, occurred_at
     ),
     d AS (
         INSERT INTO deliveries (event_id, channel_id, event_seq, status, next_attempt_at,
                                 created_at)
         SELECT e.id, $1, e.seq, 'pending', e.occurred_at, e.occurred_at FROM e
         RETURNING id
     )
     SELECT id FROM d",
);

/// The delivery's id; `None` when the channel is not the caller's.
pub async fn create_test_delivery(
    db: &Db,
    owner: &UserId,
    channel: Uuid,
    event: Uuid,
) -> Result<Option<Uuid>, DbError> {
    db.query_typed_opt(
        &CREATE_TEST_DELIVERY,
        &[
            (&channel, Type::UUID),
            (&owner.as_str(), Type::TEXT),
            (&event, Type::UUID),
        ],
    )
    .await?
    .map(|row| row.try_get("id"))
    .transpose()
    .map_err(DbError::from)
}

/// A delivery as every statement returns it (`dl` the delivery, `e` its event).
const DELIVERY: &str = "dl.id, dl.event_id, e.type AS event_type, dl.status, dl.attempts,
     dl.last_status_code, dl.last_error, dl.next_attempt_at, dl.created_at, dl.delivered_at";

fn delivery(row: &Row) -> Result<Delivery, DbError> {
    Ok(Delivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        last_status_code: row.try_get("last_status_code")?,
        last_error: row.try_get("last_error")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

const GET_DELIVERY: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    DELIVERY,
    " FROM deliveries dl
     JOIN channels c ON c.id = dl.channel_id AND c.owner_id = $2
     JOIN notification_events e ON e.id = dl.event_id
     WHERE dl.id = $1"
));

pub async fn get_delivery(db: &Db, owner: &UserId, id: Uuid) -> Result<Option<Delivery>, DbError> {
    db.query_typed_opt(
        &GET_DELIVERY,
        &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
    )
    .await?
    .as_ref()
    .map(delivery)
    .transpose()
}

/// Newest first after the keyset cursor `($4, $5)`, optionally one status: one row per delivery,
/// or one row of NULLs for a channel of the caller's with none; no row when it is not theirs.
const LIST_DELIVERIES: Sql = Sql::idempotent(concatcp!(
    "SELECT x.*
     FROM channels c
     LEFT JOIN LATERAL (
         SELECT ",
    DELIVERY,
    " FROM deliveries dl
         JOIN notification_events e ON e.id = dl.event_id
         WHERE dl.channel_id = c.id AND ($3::text IS NULL OR dl.status = $3)
           AND (dl.created_at, dl.id) < ($4, $5)
         ORDER BY dl.created_at DESC, dl.id DESC
         LIMIT $6
     ) x ON true
     WHERE c.id = $1 AND c.owner_id = $2
     ORDER BY x.created_at DESC, x.id DESC"
));

/// `None` when the channel is not the caller's.
pub async fn list_deliveries(
    db: &Db,
    owner: &UserId,
    channel: Uuid,
    status: Option<&str>,
    page: &PageRequest<TimeId>,
) -> Result<Option<Vec<Delivery>>, DbError> {
    let after = TimeId::or_start(page.after);
    let rows = db
        .query_typed(
            &LIST_DELIVERIES,
            &[
                (&channel, Type::UUID),
                (&owner.as_str(), Type::TEXT),
                (&status, Type::TEXT),
                (&after.at, Type::TIMESTAMPTZ),
                (&after.id, Type::UUID),
                (&page.fetch(), Type::INT8),
            ],
        )
        .await?;
    children(&rows, delivery)
}

/// A silence as every statement returns it (`s` is the `silences` row).
const SILENCE: &str = "s.id, s.device_id, s.rule_id, s.starts_at, s.ends_at, s.weekdays,
     s.window_start, s.window_end, s.timezone, s.comment, s.created_at";

fn silence(row: &Row) -> Result<Silence, DbError> {
    let timezone: Option<String> = row.try_get("timezone")?;
    let recurrence = match timezone {
        None => None,
        Some(timezone) => Some(Recurrence {
            weekdays: row.try_get("weekdays")?,
            start: row.try_get("window_start")?,
            end: row.try_get("window_end")?,
            timezone,
        }),
    };
    Ok(Silence {
        id: row.try_get("id")?,
        device_id: row.try_get("device_id")?,
        rule_id: row.try_get("rule_id")?,
        starts_at: row.try_get("starts_at")?,
        ends_at: row.try_get("ends_at")?,
        recurrence,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Why a silence was not saved.
pub enum SilenceCheck {
    UnknownZone,
    NotYourDevice,
    NotYourRule,
    /// The owner's row (create) or the silence (update) is gone.
    Gone,
}

/// Creates (`$2` NULL) or replaces (`$2` the silence) a silence of the owner `$1`, after the
/// checks only the database can make: the zone `$10` is one of Postgres's IANA zones (the ones
/// the events are judged in), the device `$3` and the rule `$4` (on that device, when both are
/// given) are the owner's.
const SAVE_SILENCE: Sql = Sql::idempotent(concatcp!(
    r#"WITH owner AS (SELECT u.id FROM "user" u WHERE u.id = $1 FOR KEY SHARE),
     zone AS (
         SELECT $10::text IS NULL
             OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $10::text) AS ok
     ),
     dev AS (
         SELECT $3::uuid IS NULL
             OR EXISTS (SELECT 1 FROM devices d WHERE d.id = $3 AND d.owner_id = $1) AS ok
     ),
     rul AS (
         SELECT $4::uuid IS NULL
             OR EXISTS (SELECT 1 FROM alert_rules r JOIN devices d ON d.id = r.device_id
                        WHERE r.id = $4 AND d.owner_id = $1
                          AND ($3::uuid IS NULL OR r.device_id = $3)) AS ok
     ),
     valid AS (SELECT zone.ok AND dev.ok AND rul.ok AS ok FROM zone, dev, rul),
     created AS (
         INSERT INTO silences (owner_id, device_id, rule_id, starts_at, ends_at, weekdays,
                               window_start, window_end, timezone, comment)
         SELECT owner.id, $3, $4, coalesce($5, now()), $6, $7, $8, $9, $10, $11
         FROM owner, valid WHERE valid.ok AND $2::uuid IS NULL
         RETURNING *
     ),
     updated AS (
         UPDATE silences s
         SET device_id = $3, rule_id = $4, starts_at = coalesce($5, s.starts_at), ends_at = $6,
             weekdays = $7, window_start = $8, window_end = $9, timezone = $10, comment = $11
         FROM valid
         WHERE s.id = $2 AND s.owner_id = $1 AND valid.ok
         RETURNING s.*
     )
     SELECT zone.ok AS zone_ok, dev.ok AS device_ok, rul.ok AS rule_ok, "#,
    SILENCE,
    " FROM zone, dev, rul
     LEFT JOIN (SELECT * FROM created UNION ALL SELECT * FROM updated) s ON true"
));

pub async fn save_silence(
    db: &Db,
    owner: &UserId,
    id: Option<Uuid>,
    spec: &SilenceSpec,
) -> Result<Result<Silence, SilenceCheck>, DbError> {
    let window = spec.recurrence.as_ref();
    let row = db
        .query_typed_one(
            &SAVE_SILENCE,
            &[
                (&owner.as_str(), Type::TEXT),
                (&id, Type::UUID),
                (&spec.device_id, Type::UUID),
                (&spec.rule_id, Type::UUID),
                (&spec.starts_at, Type::TIMESTAMPTZ),
                (&spec.ends_at, Type::TIMESTAMPTZ),
                (&window.map(|w| w.weekdays.clone()), Type::TEXT_ARRAY),
                (&window.map(|w| w.start), Type::TIME),
                (&window.map(|w| w.end), Type::TIME),
                (&window.map(|w| w.timezone.as_str()), Type::TEXT),
                (&spec.comment, Type::TEXT),
            ],
        )
        .await?;
    Ok(if !row.try_get::<_, bool>("zone_ok")? {
        Err(SilenceCheck::UnknownZone)
    } else if !row.try_get::<_, bool>("device_ok")? {
        Err(SilenceCheck::NotYourDevice)
    } else if !row.try_get::<_, bool>("rule_ok")? {
        Err(SilenceCheck::NotYourRule)
    } else if row.try_get::<_, Option<Uuid>>("id")?.is_none() {
        Err(SilenceCheck::Gone)
    } else {
        Ok(silence(&row)?)
    })
}

const LIST_SILENCES: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    SILENCE,
    " FROM silences s
     WHERE s.owner_id = $1 AND (s.created_at, s.id) < ($2, $3)
     ORDER BY s.created_at DESC, s.id DESC
     LIMIT $4"
));

pub async fn list_silences(
    db: &Db,
    owner: &UserId,
    page: &PageRequest<TimeId>,
) -> Result<Vec<Silence>, DbError> {
    let after = TimeId::or_start(page.after);
    db.query_typed(
        &LIST_SILENCES,
        &[
            (&owner.as_str(), Type::TEXT),
            (&after.at, Type::TIMESTAMPTZ),
            (&after.id, Type::UUID),
            (&page.fetch(), Type::INT8),
        ],
    )
    .await?
    .iter()
    .map(silence)
    .collect()
}

const GET_SILENCE: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    SILENCE,
    " FROM silences s WHERE s.id = $1 AND s.owner_id = $2"
));

pub async fn get_silence(db: &Db, owner: &UserId, id: Uuid) -> Result<Option<Silence>, DbError> {
    db.query_typed_opt(
        &GET_SILENCE,
        &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
    )
    .await?
    .as_ref()
    .map(silence)
    .transpose()
}

const DELETE_SILENCE: Sql = Sql::once("DELETE FROM silences WHERE id = $1 AND owner_id = $2");

pub async fn delete_silence(db: &Db, owner: &UserId, id: Uuid) -> Result<bool, DbError> {
    Ok(db
        .execute_typed(
            &DELETE_SILENCE,
            &[(&id, Type::UUID), (&owner.as_str(), Type::TEXT)],
        )
        .await?
        > 0)
}
