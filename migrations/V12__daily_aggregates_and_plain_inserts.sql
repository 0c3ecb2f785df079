-- Daily aggregates, folded from the hourly ones by the scheduled function (issue 18), so that a
-- year of daily points reads 365 rows instead of 8,760 hours (and a year of weeks the same).
--
-- Where they are maintained: not by ingest. A second upsert in the ingest function would cost
-- every request as much as the hourly one does (~0.06 ms of ~0.45 ms); instead the scheduled
-- function folds the hours of each whole day that has hours not yet folded into that day's row,
-- and ingest only marks an hour it changes as not folded (`folded = false`, in the same upsert
-- it already runs). So a day row is exact whenever its day has no unfolded hour, and a rollup
-- (functions/rollups/src/sql.rs, ROLLUP_FROM_DAYS) reads a day's row only then, and that day's
-- hours otherwise: today, and any day that received a late reading since the last pass. Answers
-- are the hours' answers at any moment, folded or not.
--
-- Why that holds under concurrency:
-- - a fold marks the hours it reads (`UPDATE … SET folded = true … RETURNING`), so it locks
--   them: an ingest that changes one of them afterwards waits for the fold to commit and then
--   marks it unfolded; one that changed it before is seen by the fold (an UPDATE reads the
--   newest version of a row it locks);
-- - an hour that ingest creates is unfolded from the start;
-- - folds take turns (an advisory lock; a pass that finds another folding leaves it the work),
--   so a fold never writes a day from an older snapshot than the one before it did;
-- - a fold locks the device rows it folds for (`FOR KEY SHARE`): a device deleted meanwhile is
--   deleted after the fold commits, so its purge finds the days the fold wrote.
--
-- Storage: one row per series and day (~290 B), outliving the readings like the hours
-- (AGGREGATE_RETENTION_DAYS, both deleted before the same UTC midnight), purged with a deleted
-- device's readings. Ingest pays one entry in the small partial index below per new hour row; its
-- updates of an hour not yet folded leave `folded` as it is and stay HOT (only a late reading
-- into a folded hour changes it).
CREATE TABLE reading_days (
    device_id   uuid NOT NULL,
    metric      text NOT NULL,
    day         timestamptz NOT NULL,                 -- the UTC day's start
    count       bigint NOT NULL,
    sum         numeric NOT NULL,
    min         numeric NOT NULL,
    max         numeric NOT NULL,
    first_at    timestamptz NOT NULL,
    first_value numeric NOT NULL,
    last_at     timestamptz NOT NULL,
    last_value  numeric NOT NULL,
    PRIMARY KEY (device_id, metric, day)
);

-- Whether the hour is counted in its day's row. The hours already stored are not: the pass
-- folds them over its next runs, a bounded number per chunk; until then rollups read hours.
ALTER TABLE reading_hours ADD COLUMN folded boolean NOT NULL DEFAULT false;

-- The hours not folded yet: the newest ones and those that took a late reading since the last
-- pass. Small, whatever the history; read by rollups (which of a range's days to read as hours)
-- and by the fold (what to fold next, in key order).
CREATE INDEX reading_hours_unfolded ON reading_hours (device_id, metric, hour) WHERE NOT folded;

-- Folds the days before `_before`'s UTC day that have hours not folded yet: the days of the first
-- `_max_hours` such hours in key order, each day's row recomputed from all of its hours. Returns
-- how many day rows were written (0: nothing to fold, or another pass is folding).
CREATE FUNCTION fold_reading_days(_before timestamptz, _max_hours integer) RETURNS integer
LANGUAGE plpgsql AS $function$
DECLARE
    written integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('reading_days')) THEN
        RETURN 0;
    END IF;
    -- A statement of its own, after the lock: its snapshot sees what the previous fold wrote.
    WITH next AS (
        SELECT u.device_id, u.metric, u.hour
        FROM reading_hours u
        JOIN devices d ON d.id = u.device_id
        WHERE NOT u.folded
          AND u.hour < date_bin('1 day', _before, TIMESTAMPTZ '2000-01-03 00:00:00+00')
        ORDER BY u.device_id, u.metric, u.hour
        LIMIT _max_hours
    ),
    due AS (
        SELECT DISTINCT n.device_id, n.metric,
               date_bin('1 day', n.hour, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS day
        FROM next n
    ),
    live AS (
        SELECT d.id FROM devices d
        WHERE d.id IN (SELECT due.device_id FROM due)
        FOR KEY SHARE
    ),
    hours AS (
        UPDATE reading_hours h SET folded = true
        FROM due JOIN live ON live.id = due.device_id
        WHERE h.device_id = due.device_id AND h.metric = due.metric
          AND h.hour >= due.day AND h.hour < due.day + interval '24 hours'
        RETURNING h.device_id, h.metric, due.day, h.count, h.sum, h.min, h.max,
                  h.first_at, h.first_value, h.last_at, h.last_value
    ),
    days AS (
        INSERT INTO reading_days AS d (device_id, metric, day, count, sum, min, max,
                                       first_at, first_value, last_at, last_value)
        SELECT s.device_id, s.metric, s.day, sum(s.count)::int8, sum(s.sum), min(s.min), max(s.max),
               min(s.first_at), (array_agg(s.first_value ORDER BY s.first_at))[1],
               max(s.last_at), (array_agg(s.last_value ORDER BY s.last_at DESC))[1]
        FROM hours s
        GROUP BY 1, 2, 3
        ON CONFLICT (device_id, metric, day) DO UPDATE SET
            count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max,
            first_at = excluded.first_at, first_value = excluded.first_value,
            last_at = excluded.last_at, last_value = excluded.last_value
        RETURNING 1
    )
    SELECT count(*) INTO written FROM days;
    RETURN written;
END
$function$;

-- Ingest (V10), changed in two ways.
--
-- 1. The hour upsert marks an hour it changes as not folded into its day (above).
--
-- 2. A batch that nothing stored can collide with is stored by a plain INSERT. `ON CONFLICT DO
--    NOTHING` costs about 2 µs per row on top of the insert (a probe of the primary key before
--    each row, and a speculative insertion confirmed afterwards): a call with a batch of 1000
--    took 7.2–7.8 ms with it and 4.5–5.0 ms without (`pgbench`, plans kept; 4.2–4.4 ms once the
--    hours are added from the batch rather than from the insert's RETURNING). Nothing can collide when the batch holds each
--    identity once (`$11` NULL) and no stored reading of its metrics lies within its span
--    [`$9`, `$10`]: the device's hourly aggregates say so exactly (one probe of their primary key
--    per metric: an hour's stored readings lie within its [first_at, last_at]), without reading
--    the partitioned readings table (whose months the kept plan would then have to list and
--    lock). Then every reading is stored, so the hours are added from the batch itself. That is
--    the common case (readings newer than what is stored); anything else (a retry,
--    a backfill into a stretch that holds readings) takes the careful path, the statement of
--    before, as a second statement.
--
--    The check reads the aggregates as of the statement's start, which may be before a
--    concurrent request for the same device committed (the device row's update waited for it):
--    if that request stored one of these readings, the plain INSERT fails with a unique
--    violation and nothing is written. So do readings stored without their aggregates (by hand).
--    The caller then sends the same request again with `$11` set (every reading its own first),
--    which always takes the careful path (functions/ingest/src/sql.rs).
--
-- Parameters and answer as in V10.
CREATE OR REPLACE FUNCTION ingest_readings(
    _key_hash bytea, _metrics text[], _values numeric[], _times timestamptz[],
    _rate float8, _burst float8, _metrics_limit int4, _distinct_metrics text[],
    _earliest timestamptz, _latest timestamptz, _first_ords int8[],
    OUT device_id uuid, OUT known boolean, OUT tokens float8, OUT device_metrics text[],
    OUT accepted int8, OUT duplicates int8, OUT conflicts int8[], OUT unknown int8[]
) LANGUAGE plpgsql AS $function$
#variable_conflict use_column
DECLARE
    -- The readings (by position) that were not stored now: their first of the same identity
    -- was already there.
    missed int8[];
    -- Whether the batch could be stored by a plain INSERT.
    fresh boolean;
BEGIN
    WITH device AS (
        UPDATE devices d
        SET status = 'online', last_seen_at = greatest(d.last_seen_at, now()),
            rate_tokens = CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
                              d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
                          END - 1,
            rate_at = greatest(d.rate_at, now()),
            metrics = CASE WHEN $8::text[] <@ d.metrics THEN d.metrics
                           ELSE d.metrics || metrics_new(d.metrics, $8)
                      END
        WHERE d.id = coalesce(
                  (SELECT k.id FROM devices k WHERE k.device_key_hash = $1),
                  (SELECT k.id FROM devices k
                   WHERE k.previous_key_hash = $1 AND k.previous_key_expires_at > now()))
          AND (d.device_key_hash = $1
               OR (d.previous_key_hash = $1 AND d.previous_key_expires_at > now()))
          AND coalesce(CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
                           d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
                       END >= 1, true)
          AND ($8::text[] <@ d.metrics
               OR cardinality(d.metrics) + cardinality(metrics_new(d.metrics, $8)) <= $7::int4)
        RETURNING d.id
    ),
    fresh AS (
        SELECT $11::int8[] IS NULL AND NOT EXISTS (
                   SELECT 1 FROM device JOIN reading_hours h
                     ON h.device_id = device.id AND h.metric = ANY ($8::text[])
                    AND h.hour >= date_bin('1 hour', $9::timestamptz, TIMESTAMPTZ '2000-01-03 00:00:00+00')
                    AND h.hour <= $10::timestamptz
                    AND h.first_at <= $10::timestamptz AND h.last_at >= $9::timestamptz) AS yes
    ),
    inserted AS (
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        SELECT device.id, i.metric, i.value, i.recorded_at
        FROM device
        CROSS JOIN fresh
        CROSS JOIN unnest($2::text[], $3::numeric[], $4::timestamptz[]) AS i(metric, value, recorded_at)
        WHERE fresh.yes
    ),
    -- Every reading of the batch is stored here (or the statement fails): the hours are added
    -- from the batch itself, not from the insert's RETURNING (12% of a 1000-reading call).
    hours AS (
        INSERT INTO reading_hours AS h (device_id, metric, hour, count, sum, min, max,
                                       first_at, first_value, last_at, last_value)
        SELECT device.id, n.metric,
               date_bin('1 hour', n.recorded_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               count(*), sum(n.value), min(n.value), max(n.value),
               min(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at))[1],
               max(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at DESC))[1]
        FROM device
        CROSS JOIN fresh
        CROSS JOIN unnest($2::text[], $3::numeric[], $4::timestamptz[]) AS n(metric, value, recorded_at)
        WHERE fresh.yes
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
                              THEN excluded.last_value ELSE h.last_value END,
            folded = false
    )
    SELECT device.id, fresh.yes, CASE WHEN fresh.yes THEN cardinality($2::text[]) ELSE 0 END,
           0, '{}', '{}'
    FROM device CROSS JOIN fresh
    INTO device_id, fresh, accepted, duplicates, conflicts, unknown;

    IF device_id IS NULL THEN
        -- Not admitted, nothing written: does the key name a device, and if so, why was the
        -- request refused (the bucket and the metrics as the row holds them now)?
        SELECT CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
                   d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
               END,
               d.metrics
        INTO tokens, device_metrics
        FROM devices d
        WHERE d.id = coalesce(
                  (SELECT k.id FROM devices k WHERE k.device_key_hash = $1),
                  (SELECT k.id FROM devices k
                   WHERE k.previous_key_hash = $1 AND k.previous_key_expires_at > now()))
          AND (d.device_key_hash = $1
               OR (d.previous_key_hash = $1 AND d.previous_key_expires_at > now()));
        known := FOUND;
        RETURN;
    ELSIF fresh THEN
        RETURN;
    END IF;

    -- The careful path: the first reading of each identity stored unless its identity is
    -- (`ON CONFLICT DO NOTHING`, which waits for a concurrent request storing it to end), what
    -- was stored added to the hours as above; and `missed` looked for only when fewer readings
    -- were stored than sent (its subquery runs only when the CASE needs it).
    WITH input AS (
        SELECT i.ord, coalesce(i.first_ord, i.ord) AS first_ord,
               i.metric, i.value, i.recorded_at
        FROM unnest($2::text[], $3::numeric[], $4::timestamptz[], $11::int8[])
             WITH ORDINALITY AS i(metric, value, recorded_at, first_ord, ord)
    ),
    inserted AS (
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        SELECT ingest_readings.device_id, i.metric, i.value, i.recorded_at
        FROM input i
        WHERE i.ord = i.first_ord
        ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
        RETURNING metric, recorded_at, value
    ),
    hours AS (
        INSERT INTO reading_hours AS h (device_id, metric, hour, count, sum, min, max,
                                       first_at, first_value, last_at, last_value)
        SELECT ingest_readings.device_id, n.metric,
               date_bin('1 hour', n.recorded_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
               count(*), sum(n.value), min(n.value), max(n.value),
               min(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at))[1],
               max(n.recorded_at), (array_agg(n.value ORDER BY n.recorded_at DESC))[1]
        FROM inserted n
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
                              THEN excluded.last_value ELSE h.last_value END,
            folded = false
    )
    SELECT stored.n,
           CASE WHEN stored.n < cardinality($2::text[]) THEN ARRAY(
               SELECT i.ord FROM input i
               WHERE i.ord <> i.first_ord
                  OR NOT EXISTS (SELECT 1 FROM inserted n
                                 WHERE n.metric = i.metric AND n.recorded_at = i.recorded_at))
           END
    FROM (SELECT count(*) AS n FROM inserted) stored
    INTO accepted, missed;

    IF missed IS NOT NULL THEN
        -- Each reading not stored now against the value stored for its identity: the value its
        -- first reading stored now, or the value stored before (one primary-key probe).
        WITH input AS (
            SELECT i.ord, coalesce(i.first_ord, i.ord) AS first_ord,
                   i.metric, i.value, i.recorded_at
            FROM unnest($2::text[], $3::numeric[], $4::timestamptz[], $11::int8[])
                 WITH ORDINALITY AS i(metric, value, recorded_at, first_ord, ord)
        ),
        verdict AS (
            SELECT i.ord,
                   i.value = CASE WHEN i.first_ord = ANY (missed) THEN stored.value
                                  ELSE first.value END AS same
            FROM input i
            JOIN input first ON first.ord = i.first_ord
            LEFT JOIN LATERAL (
                SELECT r.value FROM sensor_readings r
                WHERE r.device_id = ingest_readings.device_id
                  AND r.metric = i.metric AND r.recorded_at = i.recorded_at
                  AND r.recorded_at BETWEEN $9 AND $10
                  AND i.first_ord = ANY (missed)
                LIMIT 1
            ) stored ON true
            WHERE i.ord = ANY (missed)
        )
        SELECT count(*) FILTER (WHERE same),
               coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE NOT same), '{}'),
               coalesce(array_agg(ord ORDER BY ord) FILTER (WHERE same IS NULL), '{}')
        FROM verdict
        INTO duplicates, conflicts, unknown;
    END IF;
END
$function$;
