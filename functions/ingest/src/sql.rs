//! The ingest statements: the whole request in one round trip.

use chrono::{DateTime, Utc};
use const_format::concatcp;
use rust_decimal::Decimal;
use shared::config::Limits;
use shared::db::{Db, DbError, Param, Sql};
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::Reading;

/// The batch: `$2` metrics, `$3` values, `$4` times, by position (`ord`, from 1).
const INPUT: &str = "input AS (
         SELECT i.ord, i.metric, i.value, i.recorded_at
         FROM unnest($2::text[], $3::numeric[], $4::timestamptz[])
              WITH ORDINALITY AS i(metric, value, recorded_at, ord)
     )";

/// The device whose current key is `$1`, else the device whose previous key is `$1` and has not
/// expired: two plain unique-index probes, the second only when the first finds nothing. (An `OR`
/// of both conditions is planned as a bitmap scan, which, unlike a plain index scan, never marks
/// the index entries of dead row versions as dead, and every ingest rewrites the device row.)
const KEY_DEVICE: &str = "coalesce(
             (SELECT k.id FROM devices k WHERE k.device_key_hash = $1),
             (SELECT k.id FROM devices k
              WHERE k.previous_key_hash = $1 AND k.previous_key_expires_at > now()))";

/// That row, with the key re-checked on it (it may have been rotated meanwhile).
const KEY_MATCHES: &str = concatcp!(
    "d.id = ",
    KEY_DEVICE,
    "
           AND (d.device_key_hash = $1
                OR (d.previous_key_hash = $1 AND d.previous_key_expires_at > now()))"
);

/// Its rate-limit bucket refilled to now: `$5` tokens per second, at most `$6` (NULL when the
/// rate is 0, i.e. off).
const TOKENS: &str = "CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
             d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
         END";

/// The device the key names, admitted and touched by one `UPDATE` (no separate lock, no second
/// write, no join of derived sets: the cheapest statement to plan, which is what a one-reading
/// request mostly costs). It updates the row only when the request may write: a token is left
/// (one is taken), and the batch's new metrics (`$8`, its distinct metrics in batch order,
/// compared in memory with the `metrics` array on the row by `metrics_new`, migration V5: no
/// other table, nothing history-sized) fit under the limit `$7` (they are appended; the array is
/// not rewritten when the batch holds none). The device goes online and its `last_seen_at` never
/// moves backwards. Ingests of one device take turns on its row, and each is judged on the row as
/// the one before left it (the conditions are re-checked on the newest version). Nothing is
/// written otherwise: `device` is then empty, and `known` says whether the key was valid (see
/// [`WHY_REFUSED`]).
const DEVICE: &str = concatcp!(
    "device AS (
         UPDATE devices d
         SET status = 'online', last_seen_at = greatest(d.last_seen_at, now()),
             rate_tokens = ",
    TOKENS,
    " - 1,
             rate_at = greatest(d.rate_at, now()),
             metrics = CASE WHEN $8::text[] <@ d.metrics THEN d.metrics
                            ELSE d.metrics || metrics_new(d.metrics, $8)
                       END
         WHERE ",
    KEY_MATCHES,
    "
           AND coalesce(",
    TOKENS,
    " >= 1, true)
           AND ($8::text[] <@ d.metrics
                OR cardinality(d.metrics) + cardinality(metrics_new(d.metrics, $8)) <= $7::int4)
         RETURNING d.id
     )"
);

/// The readings this statement stored (`inserted`: metric, recorded_at, value), added to their
/// hours' aggregates (migration V8): one upsert per (metric, hour) of the batch. Sums, counts,
/// minima and maxima add up in any order; first/last are the values at the earliest/latest time,
/// and no two readings of a series share a time. A data-modifying CTE runs whether or not the
/// final `SELECT` reads it.
const HOURS: &str = "hours AS (
         INSERT INTO reading_hours AS h (device_id, metric, hour, count, sum, min, max,
                                        first_at, first_value, last_at, last_value)
         SELECT device.id, n.metric,
                date_bin('1 hour', n.recorded_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                count(*), sum(n.value), min(n.value), max(n.value),
                min(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at))[1],
                max(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at DESC))[1]
         FROM device CROSS JOIN inserted n
         GROUP BY 1, 2, 3
         ON CONFLICT (device_id, metric, hour) DO UPDATE SET
             count = h.count + excluded.count,
             sum = h.sum + excluded.sum,
             min = least(h.min, excluded.min),
             max = greatest(h.max, excluded.max),
             first_at = least(h.first_at, excluded.first_at),
             first_value = CASE WHEN excluded.first_at < h.first_at
                                THEN excluded.first_value ELSE h.first_value END,
             last_at = greatest(h.last_at, excluded.last_at),
             last_value = CASE WHEN excluded.last_at > h.last_at
                               THEN excluded.last_value ELSE h.last_value END
     )";

/// What every ingest statement answers besides its counts: the admitted device, or, when none
/// was, whether the key names a device at all (looked up only then).
const ADMISSION_COLUMNS: &str = concatcp!(
    "(SELECT id FROM device) AS device_id,
            CASE WHEN NOT EXISTS (SELECT 1 FROM device) THEN ",
    KEY_DEVICE,
    " IS NOT NULL END AS known"
);

/// The common case, a batch whose readings all have different identities. Resolves the key,
/// admits the request (rate limit, metrics limit), stores the batch, tells duplicates from
/// conflicts and marks the device online, in one statement:
///
/// - [`DEVICE`] admits the request and touches the device, or writes nothing at all.
/// - `inserted` stores the batch with `ON CONFLICT DO NOTHING`: each reading costs one probe of
///   the primary key, whatever the device's history.
/// - [`HOURS`] adds what was stored to the hourly aggregates.
/// - `refused`, only for readings that were not stored now: the value stored before this
///   statement (one primary-key probe each; `LIMIT 1` keeps the planner from joining the whole
///   history), compared as a number: duplicate or conflict. No value visible means another
///   request stored it after this statement's snapshot was taken (only under concurrency on one
///   device): "unknown", which the caller looks up with [`stored_values`].
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times, `$5` rate, `$6` burst, `$7` metrics
/// limit, `$8` the batch's distinct metrics, `$9`/`$10` its earliest and latest time (redundant
/// in the lookups, but what lets the planner keep only the batch's months of the partitioned
/// table instead of planning a probe of every month); not admitted → `device_id` NULL. Safe to
/// repeat: a repeat finds its own readings stored and calls them duplicates (and takes another
/// token).
pub const INGEST: Sql = Sql::idempotent(concatcp!(
    "WITH ",
    INPUT,
    ",
     ",
    DEVICE,
    ",
     inserted AS (
         INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         SELECT device.id, i.metric, i.value, i.recorded_at
         FROM device
         CROSS JOIN input i
         ORDER BY i.ord
         ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
         RETURNING metric, recorded_at, value
     ),
     ",
    HOURS,
    ",
     refused AS (
         SELECT i.ord, i.value = stored.value AS same
         FROM device
         CROSS JOIN input i
         LEFT JOIN LATERAL (
             SELECT r.value FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = i.metric AND r.recorded_at = i.recorded_at
               AND r.recorded_at BETWEEN $9 AND $10
             LIMIT 1
         ) stored ON true
         WHERE NOT EXISTS (
             SELECT 1 FROM inserted n WHERE n.metric = i.metric AND n.recorded_at = i.recorded_at
         )
     )
     SELECT ",
    ADMISSION_COLUMNS,
    ",
            (SELECT count(*) FROM inserted) AS accepted,
            (SELECT count(*) FROM refused WHERE same) AS duplicates,
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE NOT same), '{}') AS conflicts,
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE same IS NULL), '{}') AS unknown"
));

/// The same for a batch that holds one identity more than once: the first of them is the one
/// stored (or compared), the later ones are compared with it. One statement:
///
/// - [`DEVICE`] as above, then `existing` probes the primary key once per reading (`LIMIT 1` keeps the planner from
///   turning it into a join over the device's whole history), so the cost does not grow with
///   the history.
/// - `inserted` stores what is new, in batch order, so the first of two equal keys wins.
/// - The final row counts, per input position: accepted (inserted now), duplicate (same value
///   as stored, as a number), conflict (another value), or unknown: a reading another request
///   stored after this statement's snapshot was taken (only under concurrency on one device),
///   which the caller looks up with [`stored_values`].
///
/// Parameters and answer as [`INGEST`].
pub const INGEST_WITH_REPEATS: Sql = Sql::idempotent(concatcp!(
    "WITH ",
    INPUT,
    ",
     firsts AS (
         SELECT i.*, min(i.ord) OVER (PARTITION BY i.metric, i.recorded_at) AS first_ord
         FROM input i
     ),
     ",
    DEVICE,
    ",
     existing AS (
         SELECT i.ord, s.value
         FROM device
         CROSS JOIN firsts i
         CROSS JOIN LATERAL (
             SELECT r.value FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = i.metric AND r.recorded_at = i.recorded_at
               AND r.recorded_at BETWEEN $9 AND $10
             LIMIT 1
         ) s
         WHERE i.ord = i.first_ord
     ),
     inserted AS (
         INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         SELECT device.id, i.metric, i.value, i.recorded_at
         FROM device
         CROSS JOIN firsts i
         WHERE i.ord = i.first_ord AND NOT EXISTS (SELECT 1 FROM existing e WHERE e.ord = i.ord)
         ORDER BY i.ord
         ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
         RETURNING metric, recorded_at, value
     ),
     ",
    HOURS,
    ",
     verdict AS (
         SELECT i.ord,
                CASE
                    WHEN i.ord = i.first_ord AND n.metric IS NOT NULL THEN 'accepted'
                    WHEN coalesce(n.value, e.value) IS NULL THEN 'unknown'
                    WHEN coalesce(n.value, e.value) = i.value THEN 'duplicate'
                    ELSE 'conflict'
                END AS verdict
         FROM device
         CROSS JOIN firsts i
         LEFT JOIN inserted n ON n.metric = i.metric AND n.recorded_at = i.recorded_at
         LEFT JOIN existing e ON e.ord = i.first_ord
     )
     SELECT ",
    ADMISSION_COLUMNS,
    ", counts.*
     FROM (
         SELECT count(*) FILTER (WHERE verdict = 'accepted') AS accepted,
                count(*) FILTER (WHERE verdict = 'duplicate') AS duplicates,
                coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'conflict'), '{}') AS conflicts,
                coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'unknown'), '{}') AS unknown
         FROM verdict
     ) counts"
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

/// Why a valid key's request was not admitted, read only then (a refused request writes
/// nothing): the bucket and the metrics as the row holds them now. `$1`, `$5` and `$6` as in
/// [`INGEST`]; `$2` to `$4` are declared but unused (the batch is not sent again).
const WHY_REFUSED: Sql = Sql::idempotent(concatcp!(
    "SELECT ",
    TOKENS,
    " AS tokens, d.metrics FROM devices d WHERE ",
    KEY_MATCHES
));

/// What the ingest statement answered for a key that names a device.
pub enum Ingested {
    Stored(Stored),
    /// Nothing written: the device is out of tokens for `retry_after` seconds.
    RateLimited {
        retry_after: u32,
    },
    /// Nothing written: this metric, new to the device, is past its limit (the first such, in
    /// batch order).
    TooManyMetrics {
        metric: String,
    },
}

/// Admits and stores the batch in one statement; `None` when no valid key is this one. A
/// refused request (rate or metrics limit) takes one more read, to say why.
pub async fn ingest(
    db: &Db,
    key_hash: &[u8; 32],
    readings: &[Reading],
    limits: &Limits,
) -> Result<Option<Ingested>, DbError> {
    let key_hash = key_hash.as_slice();
    let metrics: Vec<&str> = readings.iter().map(|r| r.metric.as_str()).collect();
    let values: Vec<Decimal> = readings.iter().map(|r| r.value).collect();
    let times: Vec<DateTime<Utc>> = readings.iter().map(|r| r.recorded_at).collect();
    let earliest = times.iter().min();
    let latest = times.iter().max();
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&str> = metrics
        .iter()
        .copied()
        .filter(|m| seen.insert(*m))
        .collect();
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
    let params: &[Param<'_>] = &[
        (&key_hash, Type::BYTEA),
        (&metrics, Type::TEXT_ARRAY),
        (&values, Type::NUMERIC_ARRAY),
        (&times, Type::TIMESTAMPTZ_ARRAY),
        (&limits.ingest_rate_per_device, Type::FLOAT8),
        (&limits.ingest_burst_per_device, Type::FLOAT8),
        (&limits.metrics_per_device, Type::INT4),
        (&distinct, Type::TEXT_ARRAY),
        (&earliest, Type::TIMESTAMPTZ),
        (&latest, Type::TIMESTAMPTZ),
    ];
    let row = db.query_typed_one(statement, params).await?;
    if let Some(device_id) = row.try_get("device_id")? {
        return Ok(Some(Ingested::Stored(Stored {
            device_id,
            accepted: row.try_get("accepted")?,
            duplicates: row.try_get("duplicates")?,
            conflicts: row.try_get("conflicts")?,
            unknown: row.try_get("unknown")?,
        })));
    }
    if !row.try_get::<_, Option<bool>>("known")?.unwrap_or(false) {
        return Ok(None);
    }
    let (no_metrics, no_values, no_times) = (
        None::<Vec<&str>>,
        None::<Vec<Decimal>>,
        None::<Vec<DateTime<Utc>>>,
    );
    let why_params: &[Param<'_>] = &[
        (&key_hash, Type::BYTEA),
        (&no_metrics, Type::TEXT_ARRAY),
        (&no_values, Type::NUMERIC_ARRAY),
        (&no_times, Type::TIMESTAMPTZ_ARRAY),
        (&limits.ingest_rate_per_device, Type::FLOAT8),
        (&limits.ingest_burst_per_device, Type::FLOAT8),
    ];
    let Some(why) = db.query_typed_opt(&WHY_REFUSED, why_params).await? else {
        return Ok(None);
    };
    let tokens: Option<f64> = why.try_get("tokens")?;
    if let Some(tokens) = tokens.filter(|t| *t < 1.0) {
        let wait = ((1.0 - tokens) / limits.ingest_rate_per_device).ceil();
        return Ok(Some(Ingested::RateLimited {
            retry_after: (wait as u32).max(1),
        }));
    }
    let known: Vec<String> = why.try_get("metrics")?;
    let new: Vec<&str> = distinct
        .into_iter()
        .filter(|m| !known.iter().any(|k| k == m))
        .collect();
    let room =
        usize::try_from(i64::from(limits.metrics_per_device) - known.len() as i64).unwrap_or(0);
    Ok(Some(match new.get(room) {
        Some(metric) => Ingested::TooManyMetrics {
            metric: (*metric).to_owned(),
        },
        // Refused a moment ago, admissible now: the row changed in between (tokens came back).
        None => Ingested::RateLimited { retry_after: 1 },
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
