//! The ingest statements: the whole request in one round trip.

use chrono::{DateTime, Utc};
use const_format::concatcp;
use rust_decimal::Decimal;
use shared::db::{Db, DbError, Sql};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::Reading;

/// The device the key names, locked first, so ingests of one device take turns (no deadlock
/// between overlapping batches, and the `UPDATE` of `touched` cannot wait on anyone).
const DEVICE: &str =
    "device AS (SELECT id FROM devices WHERE device_key_hash = $1 FOR NO KEY UPDATE)";

/// The device is online, and its `last_seen_at` never moves backwards.
const TOUCHED: &str = "touched AS (
         UPDATE devices d SET status = 'online', last_seen_at = greatest(d.last_seen_at, now())
         FROM device
         WHERE d.id = device.id
         RETURNING d.id
     )";

/// The common case, a batch whose readings all have different identities. Resolves the key,
/// stores the batch, tells duplicates from conflicts and marks the device online, in one
/// statement:
///
/// - [`DEVICE`], then `inserted` stores the batch with `ON CONFLICT DO NOTHING`: each reading costs one probe of
///   the primary key, whatever the device's history.
/// - `refused`, only for readings that were not stored now: the value stored before this
///   statement (one primary-key probe each; `LIMIT 1` keeps the planner from joining the whole
///   history), compared as a number: duplicate or conflict. No value visible means another
///   request stored it after this statement's snapshot was taken (only under concurrency on one
///   device): "unknown", which the caller looks up with [`stored_values`].
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times; no device → `device_id` NULL.
/// Safe to repeat: a repeat finds its own readings stored and calls them duplicates.
pub const INGEST: Sql = Sql::idempotent(concatcp!(
    "WITH ",
    DEVICE,
    ",
     input AS (
         SELECT i.ord, i.metric, i.value, i.recorded_at
         FROM unnest($2::text[], $3::numeric[], $4::timestamptz[])
              WITH ORDINALITY AS i(metric, value, recorded_at, ord)
     ),
     inserted AS (
         INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         SELECT device.id, i.metric, i.value, i.recorded_at
         FROM device
         CROSS JOIN input i
         ORDER BY i.ord
         ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
         RETURNING metric, recorded_at
     ),
     ",
    TOUCHED,
    ",
     refused AS (
         SELECT i.ord, i.value = stored.value AS same
         FROM device
         CROSS JOIN input i
         LEFT JOIN LATERAL (
             SELECT r.value FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = i.metric AND r.recorded_at = i.recorded_at
             LIMIT 1
         ) stored ON true
         WHERE NOT EXISTS (
             SELECT 1 FROM inserted n WHERE n.metric = i.metric AND n.recorded_at = i.recorded_at
         )
     )
     SELECT (SELECT id FROM touched) AS device_id,
            (SELECT count(*) FROM inserted) AS accepted,
            (SELECT count(*) FROM refused WHERE same) AS duplicates,
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE NOT same), '{}') AS conflicts,
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE same IS NULL), '{}') AS unknown"
));

/// The same for a batch that holds one identity more than once: the first of them is the one
/// stored (or compared), the later ones are compared with it. One statement:
///
/// - [`DEVICE`], then `existing` probes the primary key once per reading (`LIMIT 1` keeps the planner from
///   turning it into a join over the device's whole history), so the cost does not grow with
///   the history.
/// - `inserted` stores what is new, in batch order, so the first of two equal keys wins.
/// - The final row counts, per input position: accepted (inserted now), duplicate (same value
///   as stored, as a number), conflict (another value), or unknown: a reading another request
///   stored after this statement's snapshot was taken (only under concurrency on one device),
///   which the caller looks up with [`stored_values`].
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times; no device → `device_id` NULL.
/// Safe to repeat: a repeat finds its own readings stored and calls them duplicates.
pub const INGEST_WITH_REPEATS: Sql = Sql::idempotent(concatcp!(
    "WITH ",
    DEVICE,
    ",
     input AS (
         SELECT i.ord, i.metric, i.value, i.recorded_at,
                min(i.ord) OVER (PARTITION BY i.metric, i.recorded_at) AS first_ord
         FROM unnest($2::text[], $3::numeric[], $4::timestamptz[])
              WITH ORDINALITY AS i(metric, value, recorded_at, ord)
     ),
     existing AS (
         SELECT i.ord, s.value
         FROM device
         CROSS JOIN input i
         CROSS JOIN LATERAL (
             SELECT r.value FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = i.metric AND r.recorded_at = i.recorded_at
             LIMIT 1
         ) s
         WHERE i.ord = i.first_ord
     ),
     inserted AS (
         INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         SELECT device.id, i.metric, i.value, i.recorded_at
         FROM device
         CROSS JOIN input i
         WHERE i.ord = i.first_ord AND NOT EXISTS (SELECT 1 FROM existing e WHERE e.ord = i.ord)
         ORDER BY i.ord
         ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
         RETURNING metric, recorded_at, value
     ),
     ",
    TOUCHED,
    ",
     verdict AS (
         SELECT i.ord,
                CASE
                    WHEN i.ord = i.first_ord AND n.metric IS NOT NULL THEN 'accepted'
                    WHEN coalesce(n.value, e.value) IS NULL THEN 'unknown'
                    WHEN coalesce(n.value, e.value) = i.value THEN 'duplicate'
                    ELSE 'conflict'
                END AS verdict
         FROM input i
         LEFT JOIN inserted n ON n.metric = i.metric AND n.recorded_at = i.recorded_at
         LEFT JOIN existing e ON e.ord = i.first_ord
     )
     SELECT (SELECT id FROM touched) AS device_id,
            count(*) FILTER (WHERE verdict = 'accepted') AS accepted,
            count(*) FILTER (WHERE verdict = 'duplicate') AS duplicates,
            coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'conflict'), '{}') AS conflicts,
            coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'unknown'), '{}') AS unknown
     FROM verdict"
));

/// The stored values of some of a device's readings (see the unknown verdict above).
const STORED_VALUES: Sql = Sql::idempotent(
    "SELECT k.ord, r.value = k.value AS same
     FROM unnest($2::text[], $3::numeric[], $4::timestamptz[], $5::int8[])
          AS k(metric, value, recorded_at, ord)
     JOIN sensor_readings r
       ON r.device_id = $1 AND r.metric = k.metric AND r.recorded_at = k.recorded_at",
);

/// What the ingest statement did, by input position (1-based `ord`s).
pub struct Stored {
    pub device_id: Uuid,
    pub accepted: i64,
    pub duplicates: i64,
    pub conflicts: Vec<i64>,
    /// Stored by another request after this statement's snapshot: see [`stored_values`].
    pub unknown: Vec<i64>,
}

/// Stores the batch in one statement; `None` when no device has this key.
pub async fn ingest(
    db: &Db,
    key_hash: &[u8; 32],
    readings: &[Reading],
) -> Result<Option<Stored>, DbError> {
    let key_hash = key_hash.as_slice();
    let metrics: Vec<&str> = readings.iter().map(|r| r.metric.as_str()).collect();
    let values: Vec<Decimal> = readings.iter().map(|r| r.value).collect();
    let times: Vec<DateTime<Utc>> = readings.iter().map(|r| r.recorded_at).collect();
    // Most batches hold each identity once and take the simpler statement.
    let mut identities = std::collections::HashSet::with_capacity(readings.len());
    let repeats = !readings
        .iter()
        .all(|r| identities.insert((r.metric.as_str(), r.recorded_at)));
    let statement = if repeats {
        &INGEST_WITH_REPEATS
    } else {
        &INGEST
    };
    let row = db
        .query_typed_one(
            statement,
            &[
                (&key_hash, Type::BYTEA),
                (&metrics, Type::TEXT_ARRAY),
                (&values, Type::NUMERIC_ARRAY),
                (&times, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    let Some(device_id) = row.try_get("device_id")? else {
        return Ok(None);
    };
    Ok(Some(Stored {
        device_id,
        accepted: row.try_get("accepted")?,
        duplicates: row.try_get("duplicates")?,
        conflicts: row.try_get("conflicts")?,
        unknown: row.try_get("unknown")?,
    }))
}

/// For readings (by `ord`) that another request stored meanwhile: whether the stored value is
/// the same, as a number. A reading that is gone (its device deleted meanwhile) is left out.
pub async fn stored_values(
    db: &Db,
    device_id: Uuid,
    picked: &[(i64, &Reading)],
) -> Result<Vec<(i64, bool)>, DbError> {
    let metrics: Vec<&str> = picked.iter().map(|(_, r)| r.metric.as_str()).collect();
    let values: Vec<Decimal> = picked.iter().map(|(_, r)| r.value).collect();
    let times: Vec<DateTime<Utc>> = picked.iter().map(|(_, r)| r.recorded_at).collect();
    let ords: Vec<i64> = picked.iter().map(|(ord, _)| *ord).collect();
    db.query_typed(
        &STORED_VALUES,
        &[
            (&device_id, Type::UUID),
            (&metrics, Type::TEXT_ARRAY),
            (&values, Type::NUMERIC_ARRAY),
            (&times, Type::TIMESTAMPTZ_ARRAY),
            (&ords, Type::INT8_ARRAY),
        ],
    )
    .await?
    .iter()
    .map(|row| Ok((row.try_get("ord")?, row.try_get("same")?)))
    .collect()
}
