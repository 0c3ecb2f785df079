//! The ingest statements: the whole request in one round trip.

use shared::db::Sql;

/// The common case, a batch whose readings all have different identities. Resolves the key,
/// stores the batch, tells duplicates from conflicts and marks the device online, in one
/// statement:
///
/// - `device` locks the device row first, so ingests of one device take turns (no deadlock
///   between overlapping batches, and the `UPDATE` below cannot wait on anyone).
/// - `inserted` stores the batch with `ON CONFLICT DO NOTHING`: each reading costs one probe of
///   the primary key, whatever the device's history.
/// - `refused`, only for readings that were not stored now: the value stored before this
///   statement (one primary-key probe each; `LIMIT 1` keeps the planner from joining the whole
///   history), compared as a number: duplicate or conflict. No value visible means another
///   request stored it after this statement's snapshot was taken (only under concurrency on one
///   device): "unknown", which the caller looks up with [`STORED_VALUES`].
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times; no device → `device_id` NULL.
/// Safe to repeat: a repeat finds its own readings stored and calls them duplicates.
pub const INGEST: Sql = Sql::idempotent(
    "WITH device AS (
         SELECT id FROM devices WHERE device_key_hash = $1 FOR NO KEY UPDATE
     ),
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
     touched AS (
         UPDATE devices d SET status = 'online', last_seen_at = greatest(d.last_seen_at, now())
         FROM device
         WHERE d.id = device.id
         RETURNING d.id
     ),
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
     SELECT (SELECT id FROM touched),
            (SELECT count(*) FROM inserted),
            (SELECT count(*) FROM refused WHERE same),
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE NOT same), '{}'),
            coalesce((SELECT array_agg(ord ORDER BY ord) FROM refused WHERE same IS NULL), '{}')",
);

/// The same for a batch that holds one identity more than once: the first of them is the one
/// stored (or compared), the later ones are compared with it. One statement:
///
/// - `device` locks the device row first, so ingests of one device take turns (no deadlock
///   between overlapping batches, and the `UPDATE` below cannot wait on anyone).
/// - `existing` probes the primary key once per reading (`LIMIT 1` keeps the planner from
///   turning it into a join over the device's whole history), so the cost does not grow with
///   the history.
/// - `inserted` stores what is new, in batch order, so the first of two equal keys wins.
/// - The final row counts, per input position: accepted (inserted now), duplicate (same value
///   as stored, as a number), conflict (another value), or unknown: a reading another request
///   stored after this statement's snapshot was taken (only under concurrency on one device),
///   which the caller looks up with [`STORED_VALUES`].
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times; no device → `device_id` NULL.
/// Safe to repeat: a repeat finds its own readings stored and calls them duplicates.
pub const INGEST_WITH_REPEATS: Sql = Sql::idempotent(
    "WITH device AS (
         SELECT id FROM devices WHERE device_key_hash = $1 FOR NO KEY UPDATE
     ),
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
     touched AS (
         UPDATE devices d SET status = 'online', last_seen_at = greatest(d.last_seen_at, now())
         FROM device
         WHERE d.id = device.id
         RETURNING d.id
     ),
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
     SELECT (SELECT id FROM touched),
            count(*) FILTER (WHERE verdict = 'accepted'),
            count(*) FILTER (WHERE verdict = 'duplicate'),
            coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'conflict'), '{}'),
            coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE verdict = 'unknown'), '{}')
     FROM verdict",
);

/// The stored values of some of a device's readings (see the unknown verdict above).
pub const STORED_VALUES: Sql = Sql::idempotent(
    "SELECT k.ord, r.value = k.value
     FROM unnest($2::text[], $3::numeric[], $4::timestamptz[], $5::int8[])
          AS k(metric, value, recorded_at, ord)
     JOIN sensor_readings r
       ON r.device_id = $1 AND r.metric = k.metric AND r.recorded_at = k.recorded_at",
);
