//! The time-series SQL. Each statement starts from the caller's device (`owner_id`) and
//! LEFT JOINs the readings: no row at all means "not your device" (`404`); a row of NULLs means
//! "your device, nothing in range". Every readings access walks the primary key
//! (device_id, metric, recorded_at). Decimals leave as text: exact, whatever their size.

use shared::db::Sql;

/// Buckets of `$4` (whole seconds, so bucket arithmetic is absolute whatever the session time
/// zone) aligned to UTC (`date_bin` from 2000-01-01T00:00Z, a midnight), over [`$5`, `$6`).
///
/// - `span`: the first and last reading in range, two primary-key probes; no readings, no buckets.
/// - `buckets`: one primary-key range scan per bucket between them, aggregated on its own. The
///   readings arrive in key order, so nothing is sorted (grouping all readings by `date_bin`
///   sorted them, and the sort spilled to disk at the default `work_mem` on a week of 10 s data);
///   an empty bucket costs one index descent.
/// - `first`/`last` are the values at each bucket's earliest/latest time, fetched by two
///   primary-key probes per bucket instead of aggregating arrays of every value.
/// - `avg` is the exact mean rounded to 12 decimal places (the sum is widened first so the
///   division cannot lose digits), trailing zeros trimmed.
pub const ROLLUP: Sql = Sql::idempotent(
    "WITH device AS (
         SELECT id FROM devices WHERE id = $1 AND owner_id = $2
     ),
     span AS (
         SELECT (SELECT min(r.recorded_at) FROM sensor_readings r
                 WHERE r.device_id = device.id AND r.metric = $3
                   AND r.recorded_at >= $5 AND r.recorded_at < $6) AS first_at,
                (SELECT max(r.recorded_at) FROM sensor_readings r
                 WHERE r.device_id = device.id AND r.metric = $3
                   AND r.recorded_at >= $5 AND r.recorded_at < $6) AS last_at
         FROM device
     ),
     buckets AS (
         SELECT g.t, a.n, a.min, a.max, a.sum, a.first_at, a.last_at
         FROM device
         CROSS JOIN span
         CROSS JOIN generate_series(
             date_bin($4::interval, span.first_at, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
             span.last_at, $4::interval) AS g(t)
         CROSS JOIN LATERAL (
             SELECT count(*) AS n, min(r.value) AS min, max(r.value) AS max, sum(r.value) AS sum,
                    min(r.recorded_at) AS first_at, max(r.recorded_at) AS last_at
             FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = $3
               AND r.recorded_at >= greatest(g.t, $5)
               AND r.recorded_at < least(g.t + $4::interval, $6)
         ) a
         WHERE a.n > 0
     )
     SELECT device.id, b.t, b.n, b.min::text, b.max::text,
            trim_scale(round(b.sum::numeric(1000, 40) / b.n, 12))::text, b.sum::text,
            (SELECT f.value::text FROM sensor_readings f
             WHERE f.device_id = device.id AND f.metric = $3 AND f.recorded_at = b.first_at),
            (SELECT l.value::text FROM sensor_readings l
             WHERE l.device_id = device.id AND l.metric = $3 AND l.recorded_at = b.last_at)
     FROM device
     LEFT JOIN buckets b ON true
     ORDER BY b.t",
);

/// One metric's readings, oldest first, after the cursor time `$4`, within [`$5`, `$6`).
pub const READINGS_OF_METRIC: Sql = Sql::idempotent(
    "SELECT d.id, r.metric, r.value, r.recorded_at
     FROM devices d
     LEFT JOIN LATERAL (
         SELECT metric, value::text AS value, recorded_at
         FROM sensor_readings
         WHERE device_id = d.id AND metric = $3
           AND recorded_at > $4 AND recorded_at >= $5 AND recorded_at < $6
         ORDER BY recorded_at
         LIMIT $7
     ) r ON true
     WHERE d.id = $1 AND d.owner_id = $2
     ORDER BY r.recorded_at",
);

/// All metrics' readings, oldest first (ties by metric), after the cursor (`$3`, `$4`), within
/// [`$5`, `$6`).
pub const READINGS_OF_ALL: Sql = Sql::idempotent(
    "SELECT d.id, r.metric, r.value, r.recorded_at
     FROM devices d
     LEFT JOIN LATERAL (
         SELECT metric, value::text AS value, recorded_at
         FROM sensor_readings
         WHERE device_id = d.id
           AND (recorded_at, metric) > ($3, $4) AND recorded_at >= $5 AND recorded_at < $6
         ORDER BY recorded_at, metric
         LIMIT $7
     ) r ON true
     WHERE d.id = $1 AND d.owner_id = $2
     ORDER BY r.recorded_at, r.metric",
);

/// The newest reading of each metric without reading the history: a loose index scan walks
/// the distinct metrics (one primary-key probe each), then one backwards probe per metric.
/// (The walk uses `$1` directly; its rows only come out through the owner check on `d`.)
pub const LATEST: Sql = Sql::idempotent(
    "SELECT d.id, l.metric, l.value, l.recorded_at
     FROM devices d
     LEFT JOIN LATERAL (
         WITH RECURSIVE metrics AS (
             (SELECT metric FROM sensor_readings WHERE device_id = $1 ORDER BY metric LIMIT 1)
             UNION ALL
             SELECT (SELECT r.metric FROM sensor_readings r
                     WHERE r.device_id = $1 AND r.metric > m.metric
                     ORDER BY r.metric LIMIT 1)
             FROM metrics m
             WHERE m.metric IS NOT NULL
         )
         SELECT m.metric, newest.value::text AS value, newest.recorded_at
         FROM metrics m
         CROSS JOIN LATERAL (
             SELECT value, recorded_at FROM sensor_readings r
             WHERE r.device_id = d.id AND r.metric = m.metric
             ORDER BY recorded_at DESC
             LIMIT 1
         ) newest
         WHERE m.metric IS NOT NULL
     ) l ON true
     WHERE d.id = $1 AND d.owner_id = $2
     ORDER BY l.metric",
);
