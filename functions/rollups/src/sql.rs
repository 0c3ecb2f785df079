//! The time-series statements, each a typed function owning its SQL, parameters and row
//! decoding. Each statement starts from the caller's device (`owner_id`) and LEFT JOINs the
//! readings: no row at all means "not your device" (`None`, a `404`); a row of NULLs means "your
//! device, nothing in range". Every readings access walks the primary key
//! (device_id, metric, recorded_at). Decimals leave as text: exact, whatever their size.

use chrono::{DateTime, Utc};
use const_format::concatcp;
use shared::auth::UserId;
use shared::db::{Db, DbError, Param, Sql};
use shared::domain::Metric;
use shared::paging::PageRequest;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{Bucket, Point, Reading, ReadingCursor};

/// Buckets of `$4` (whole seconds, so bucket arithmetic is absolute whatever the session time
/// zone) aligned to UTC (`date_bin` from 2000-01-03T00:00Z, a Monday midnight), over [`$5`, `$6`),
/// from the raw readings: the buckets under an hour (see [`ROLLUP_FROM_HOURS`] for the others).
///
/// - `span`: the first and last reading in range, two primary-key probes; no readings, no buckets.
/// - `buckets`: one primary-key range scan per bucket between them, aggregated on its own. The
///   readings arrive in key order, so nothing is sorted (grouping all readings by `date_bin`
///   sorted them, and the sort spilled to disk at the default `work_mem` on a week of 10 s data);
///   an empty bucket costs one index descent.
/// - `first`/`last` are the values at each bucket's earliest/latest time, fetched by two
///   primary-key probes per bucket instead of aggregating arrays of every value.
/// - Every readings access also says `recorded_at` in [`$5`, `$6`), redundant for the answer but
///   what lets the planner leave out the months (partitions) outside the range.
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
             date_bin($4::interval, span.first_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
             span.last_at, $4::interval) AS g(t)
         CROSS JOIN LATERAL (
             SELECT count(*) AS n, min(r.value) AS min, max(r.value) AS max, sum(r.value) AS sum,
                    min(r.recorded_at) AS first_at, max(r.recorded_at) AS last_at
             FROM sensor_readings r
             WHERE r.device_id = device.id AND r.metric = $3
               AND r.recorded_at >= greatest(g.t, $5)
               AND r.recorded_at < least(g.t + $4::interval, $6)
               AND r.recorded_at >= $5 AND r.recorded_at < $6
         ) a
         WHERE a.n > 0
     )
     SELECT b.t, b.n AS count, b.min::text AS min, b.max::text AS max,
            trim_scale(round(b.sum::numeric(1000, 40) / b.n, 12))::text AS avg, b.sum::text AS sum,
            (SELECT f.value::text FROM sensor_readings f
             WHERE f.device_id = device.id AND f.metric = $3 AND f.recorded_at = b.first_at
               AND f.recorded_at >= $5 AND f.recorded_at < $6) AS first,
            (SELECT l.value::text FROM sensor_readings l
             WHERE l.device_id = device.id AND l.metric = $3 AND l.recorded_at = b.last_at
               AND l.recorded_at >= $5 AND l.recorded_at < $6) AS last
     FROM device
     LEFT JOIN buckets b ON true
     ORDER BY b.t",
);

/// One metric's readings, oldest first, after the cursor time `$4`, within [`$5`, `$6`).
const READINGS_OF_METRIC: Sql = Sql::idempotent(
    "SELECT r.metric, r.value, r.recorded_at
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
const READINGS_OF_ALL: Sql = Sql::idempotent(
    "SELECT r.metric, r.value, r.recorded_at
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

/// The newest reading of each metric without reading the history: the server-side function
/// `latest_readings` (migrations/V11__latest_from_one_walk.sql, redefined by
/// V14__latest_newest_hour_by_one_descent.sql), which reads the `last_value` of each metric's
/// newest hourly aggregate, in one index walk of the device's newest hour when every metric
/// reported within it. No row: not the caller's device; one row of NULLs: nothing
/// stored. In no particular order.
pub const LATEST: Sql =
    Sql::idempotent("SELECT metric, value, recorded_at FROM latest_readings($1, $2)");

/// The raw readings of the partial hours at either end of [`$5`, `$6`): [`$5`, `$7`) and
/// [`$8`, `$6`), each reading a part of its own (less than an hour each).
const PARTIAL_HOURS: &str = "SELECT r.recorded_at, 1, r.value, r.value, r.value,
                r.recorded_at, r.value, r.recorded_at, r.value
         FROM device JOIN sensor_readings r
           ON r.device_id = device.id AND r.metric = $3 AND r.recorded_at >= $5 AND r.recorded_at < $7
         UNION ALL
         SELECT r.recorded_at, 1, r.value, r.value, r.value,
                r.recorded_at, r.value, r.recorded_at, r.value
         FROM device JOIN sensor_readings r
           ON r.device_id = device.id AND r.metric = $3 AND r.recorded_at >= $8 AND r.recorded_at < $6";

/// An hourly aggregate `h` as a part of [`BUCKETS_OF_PARTS`].
const HOUR_PART: &str = "h.hour AS at, h.count, h.sum, h.min, h.max,
                h.first_at, h.first_value, h.last_at, h.last_value";

/// The buckets of `$4` from `parts` (at, count, sum, min, max, first_at, first_value, last_at,
/// last_value), merged exactly: counts and sums add, minima and maxima compare, `first`/`last`
/// are the values at the earliest/latest time; and the answer, as [`ROLLUP`]'s.
const BUCKETS_OF_PARTS: &str = "buckets AS (
         SELECT date_bin($4::interval, p.at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS t,
                sum(p.count)::int8 AS n, min(p.min) AS min, max(p.max) AS max, sum(p.sum) AS sum,
                (array_agg(p.first_value ORDER BY p.first_at))[1] AS first,
                (array_agg(p.last_value ORDER BY p.last_at DESC))[1] AS last
         FROM parts p
         GROUP BY 1
     )
     SELECT b.t, b.n AS count, b.min::text AS min, b.max::text AS max,
            trim_scale(round(b.sum::numeric(1000, 40) / b.n, 12))::text AS avg, b.sum::text AS sum,
            b.first::text AS first, b.last::text AS last
     FROM device
     LEFT JOIN buckets b ON true
     ORDER BY b.t";

/// Hourly buckets over [`$5`, `$6`), `$4` = 1 hour, from the hourly aggregates (migration V8)
/// for the whole hours in [`$7`, `$8`), each a bucket, and from the raw readings for the partial
/// hours at either end ([`PARTIAL_HOURS`]; `$7` = `$8` = `$6` when the range holds no whole hour).
/// Each part is a range of a primary key, and a week reads 168 hour rows, not every reading,
/// and gives the numbers the readings give.
pub const ROLLUP_FROM_HOURS: Sql = Sql::idempotent(concatcp!(
    "WITH device AS (
         SELECT id FROM devices WHERE id = $1 AND owner_id = $2
     ),
     parts AS (
         SELECT ",
    HOUR_PART,
    " FROM device JOIN reading_hours h
           ON h.device_id = device.id AND h.metric = $3 AND h.hour >= $7 AND h.hour < $8
         UNION ALL
         ",
    PARTIAL_HOURS,
    "
     ),
     ",
    BUCKETS_OF_PARTS
));

/// Buckets of `$4` longer than an hour and shorter than a day (`6h`), parameters as
/// [`ROLLUP_FROM_HOURS`]. Each bucket's whole hours are aggregated on their own, over a range of
/// the hours' primary key, with `first`/`last` from the bucket's first and last hour by one probe
/// each; the partial hours at the ends are merged as there. So a year of 6-hour buckets
/// aggregates 1,460 ranges of 6 rows without sorting the 8,760 hours (sorting and grouping them
/// took 2.4× as long).
pub const ROLLUP_FROM_HOURS_BY_BUCKET: Sql = Sql::idempotent(concatcp!(
    "WITH device AS (
         SELECT id FROM devices WHERE id = $1 AND owner_id = $2
     ),
     parts AS (
         SELECT g.t AS at, a.count, a.sum, a.min, a.max,
                f.first_at, f.first_value, l.last_at, l.last_value
         FROM device
         CROSS JOIN generate_series(
             date_bin($4::interval, $7, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
             $8 - interval '1 microsecond', $4::interval) AS g(t)
         CROSS JOIN LATERAL (
             SELECT sum(h.count)::int8 AS count, sum(h.sum) AS sum, min(h.min) AS min,
                    max(h.max) AS max, min(h.hour) AS first_hour, max(h.hour) AS last_hour
             FROM reading_hours h
             WHERE h.device_id = device.id AND h.metric = $3
               AND h.hour >= greatest(g.t, $7) AND h.hour < least(g.t + $4::interval, $8)
         ) a
         JOIN reading_hours f
           ON f.device_id = device.id AND f.metric = $3 AND f.hour = a.first_hour
         JOIN reading_hours l
           ON l.device_id = device.id AND l.metric = $3 AND l.hour = a.last_hour
         UNION ALL
         ",
    PARTIAL_HOURS,
    "
     ),
     ",
    BUCKETS_OF_PARTS
));

/// Buckets of a day or a week (`1d`, `1w` from Monday), parameters as [`ROLLUP_FROM_HOURS`] and
/// `$9`/`$10` the whole UTC days within the whole hours (`$9` = `$10` = `$8` when there are none).
/// A whole day is its daily aggregate (migration V12) when all its hours are folded into it, and
/// its hours otherwise (`unfolded`: today, or a day that took a late reading since the scheduled
/// function's last pass, found in the small index of unfolded hours); the whole hours outside the
/// whole days and the partial hours at the ends as there. So a year of days reads 365 rows of
/// one primary-key range, and the answer is the hours' answer whatever has been folded.
pub const ROLLUP_FROM_DAYS: Sql = Sql::idempotent(concatcp!(
    "WITH device AS (
         SELECT id FROM devices WHERE id = $1 AND owner_id = $2
     ),
     unfolded AS (
         SELECT DISTINCT date_bin('1 day', u.hour, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS day
         FROM device JOIN reading_hours u
           ON u.device_id = device.id AND u.metric = $3 AND u.hour >= $9 AND u.hour < $10
          AND NOT u.folded
     ),
     parts AS (
         SELECT d.day AS at, d.count, d.sum, d.min, d.max,
                d.first_at, d.first_value, d.last_at, d.last_value
         FROM device JOIN reading_days d
           ON d.device_id = device.id AND d.metric = $3 AND d.day >= $9 AND d.day < $10
         WHERE d.day NOT IN (SELECT day FROM unfolded)
         UNION ALL
         SELECT ",
    HOUR_PART,
    " FROM device CROSS JOIN unfolded JOIN reading_hours h
           ON h.device_id = device.id AND h.metric = $3
          AND h.hour >= unfolded.day AND h.hour < unfolded.day + interval '24 hours'
         UNION ALL
         SELECT ",
    HOUR_PART,
    " FROM device JOIN reading_hours h
           ON h.device_id = device.id AND h.metric = $3 AND h.hour >= $7 AND h.hour < $9
         UNION ALL
         SELECT ",
    HOUR_PART,
    " FROM device JOIN reading_hours h
           ON h.device_id = device.id AND h.metric = $3 AND h.hour >= $10 AND h.hour < $8
         UNION ALL
         ",
    PARTIAL_HOURS,
    "
     ),
     ",
    BUCKETS_OF_PARTS
));

/// The whole buckets of `size` in [from, to) as [start, end), or `None` when it holds none.
fn whole(
    size: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first = size.start_of(from);
    let start = if first == from {
        from
    } else {
        first + chrono::TimeDelta::seconds(size.seconds())
    };
    let end = size.start_of(to);
    (start < end).then_some((start, end))
}

/// The points of one metric's rollup; `None` when the device is not the caller's.
pub async fn rollup(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    metric: &Metric,
    bucket: Bucket,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Option<Vec<Point>>, DbError> {
    let size = format!("{} seconds", bucket.seconds());
    let (hours_from, hours_to) = whole(Bucket::H1, from, to).unwrap_or((to, to));
    let (days_from, days_to) =
        whole(Bucket::D1, hours_from, hours_to).unwrap_or((hours_to, hours_to));
    let (owner, metric) = (owner.as_str(), metric.as_str());
    let mut params: Vec<Param<'_>> = vec![
        (&device, Type::UUID),
        (&owner, Type::TEXT),
        (&metric, Type::TEXT),
        (&size, Type::TEXT),
        (&from, Type::TIMESTAMPTZ),
        (&to, Type::TIMESTAMPTZ),
    ];
    let statement = if bucket.from_hours() {
        params.push((&hours_from, Type::TIMESTAMPTZ));
        params.push((&hours_to, Type::TIMESTAMPTZ));
        match bucket {
            Bucket::H1 => &ROLLUP_FROM_HOURS,
            Bucket::D1 | Bucket::W1 => {
                params.push((&days_from, Type::TIMESTAMPTZ));
                params.push((&days_to, Type::TIMESTAMPTZ));
                &ROLLUP_FROM_DAYS
            }
            _ => &ROLLUP_FROM_HOURS_BY_BUCKET,
        }
    } else {
        &ROLLUP
    };
    let rows = db.query_typed(statement, &params).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut points = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(t) = row.try_get("t")? else { continue };
        points.push(Point {
            t,
            count: row.try_get("count")?,
            min: row.try_get("min")?,
            max: row.try_get("max")?,
            avg: row.try_get("avg")?,
            sum: row.try_get("sum")?,
            first: row.try_get("first")?,
            last: row.try_get("last")?,
        });
    }
    Ok(Some(points))
}

/// Which readings a `/readings` request walks: one metric or all, within [from, to).
pub struct ReadingsQuery {
    pub metric: Option<Metric>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Up to `page.fetch()` readings, oldest first (ties by metric), after the page's cursor;
/// `None` when the device is not the caller's.
pub async fn readings(
    db: &Db,
    owner: &UserId,
    device: Uuid,
    query: &ReadingsQuery,
    page: &PageRequest<ReadingCursor>,
) -> Result<Option<Vec<Reading>>, DbError> {
    // Without a cursor, start just before `from`.
    let (after_at, after_metric) = match &page.after {
        Some(c) => (c.at, c.metric.as_str()),
        None => (query.from - chrono::TimeDelta::microseconds(1), ""),
    };
    let rows = match &query.metric {
        Some(metric) => {
            db.query_typed(
                &READINGS_OF_METRIC,
                &[
                    (&device, Type::UUID),
                    (&owner.as_str(), Type::TEXT),
                    (&metric.as_str(), Type::TEXT),
                    (&after_at, Type::TIMESTAMPTZ),
                    (&query.from, Type::TIMESTAMPTZ),
                    (&query.to, Type::TIMESTAMPTZ),
                    (&page.fetch(), Type::INT8),
                ],
            )
            .await?
        }
        None => {
            db.query_typed(
                &READINGS_OF_ALL,
                &[
                    (&device, Type::UUID),
                    (&owner.as_str(), Type::TEXT),
                    (&after_at, Type::TIMESTAMPTZ),
                    (&after_metric, Type::TEXT),
                    (&query.from, Type::TIMESTAMPTZ),
                    (&query.to, Type::TIMESTAMPTZ),
                    (&page.fetch(), Type::INT8),
                ],
            )
            .await?
        }
    };
    readings_of(&rows)
}

/// The newest reading of each metric, by metric name; `None` when the device is not the caller's.
pub async fn latest(
    db: &Db,
    owner: &UserId,
    device: Uuid,
) -> Result<Option<Vec<Reading>>, DbError> {
    let rows = db
        .query_typed(
            &LATEST,
            &[(&device, Type::UUID), (&owner.as_str(), Type::TEXT)],
        )
        .await?;
    let mut latest = readings_of(&rows)?;
    // By name, byte by byte: whatever the database's collation, and no sort in the statement.
    if let Some(latest) = &mut latest {
        latest.sort_unstable_by(|a, b| a.metric.cmp(&b.metric));
    }
    Ok(latest)
}

/// Rows of (metric, value, recorded_at) behind the device check: none, not the caller's device;
/// one of NULLs, nothing to show.
fn readings_of(rows: &[Row]) -> Result<Option<Vec<Reading>>, DbError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut readings = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(metric) = row.try_get("metric")? else {
            continue;
        };
        readings.push(Reading {
            metric,
            value: row.try_get("value")?,
            recorded_at: row.try_get("recorded_at")?,
        });
    }
    Ok(Some(readings))
}
