-- Ingest (V12) as a few plain statements instead of one statement of common table expressions,
-- so that planning it again costs less, and a batch's hourly aggregates summed by the caller
-- (issues 17 and 19). A new function beside V12's: the 11 arguments of V12's and the batch's
-- hours ($12–$21). V12's stays for the functions deployed before this migration, until the new
-- ones replace them; a later migration can drop it.
--
-- Behind a pooler that runs DISCARD ALL after every transaction (the tests' one), PL/pgSQL's
-- plans are dropped after every call, and each call analyses and plans its statements again:
-- most of a one-reading request's time on the server went there (`perf`: half of the backend's
-- time in GetCachedPlan, parse analysis and planning of V12's first statement). What it cost
-- (`pgbench`, one reading per call through that pooler, medians of four runs):
--
--   V12's statement                                                      1.05 ms a call
--   the same work as plain statements (below)                            0.94 ms
--   and a single reading added to its hour without an aggregate          0.86 ms
--   and the key's device found without a subquery                        0.82 ms
--   as the function below (ten more arguments, NULL for one reading)     0.84–0.86 ms
--
-- (A bare one-row INSERT through the same pooler: 0.25 ms.) Behind Neon's pooler, which keeps
-- the plans, only execution remains: 0.30 ms a call with the generic plans below.
--
-- A batch's hours: summing 1000 readings into their (metric, hour) rows took the server 0.80 ms
-- of a 1000-reading call's ~4.8 (`pg_stat_statements`, plans kept; the readings' INSERT 3.9 ms);
-- upserting the same rows summed by the caller takes 0.06 ms. The caller (the ingest function,
-- functions/ingest/src/sql.rs, `hours`) sums in `Decimal`s and sends nothing when a sum is not
-- exact there (past 28–29 digits): a batch without its hours takes the careful path, where the
-- server adds up what it stored. The plain path stores every reading of the batch or none, so
-- the batch's hours are what it adds. A single reading sends none: its hour is itself, added
-- from the parameters (sent as ten one-element arrays it cost a one-reading call behind the
-- hostile pooler about 0.05 ms more, 10%).
--
-- What changed, and what did not:
-- - The admission `UPDATE` of the device row is V12's, now a statement of its own, except for
--   how it finds the key's device: by a plain probe of the current keys' unique index (the
--   common case), and only when that admits nothing, by the previous keys' index, and then the
--   same UPDATE once more by that device's current key (the loop below). V12 found it by two
--   subqueries, planned on every call. No bitmap `OR` either (V10: a bitmap scan never marks
--   dead index entries dead, and every ingest rewrites the row). It also sets the answer's
--   defaults (no duplicates, no conflicts) in its RETURNING.
-- - The probe of the hourly aggregates that decides the plain INSERT is V12's, now a statement
--   of its own run after the admission. That statement waited for any request of the same
--   device still in flight (they take turns on the device row), so the probe sees what such a
--   request stored, which V12's probe (of the same statement's snapshot) did not: the plain
--   INSERT now meets a stored reading only when the aggregates do not show it (readings stored
--   by hand); it then fails with a unique violation, nothing is written, and the caller sends the
--   request again with `$11` set, which takes the careful path.
-- - The plain INSERT is V12's, without the joins to the other parts; the hours as above.
-- - The careful path, the refusal (why a request was not admitted) and the answer are V12's.
-- - Generic plans only (`plan_cache_mode`, for the function's own statements). By default a
--   cached plan is planned anew for each call's values for five calls, and then kept only if its
--   generic form is estimated no dearer than those; otherwise every call is planned anew, for
--   good. Which way that goes depends on the statistics: behind the Neon-like pooler one ANALYZE
--   of a database holding a device's half year of hours turned V12's one-reading call from
--   0.34 ms into 0.70 ms (planned every time), and left this one at 0.35 ms where its generic
--   plans take 0.30 ms. Each statement here has one right plan whatever the values (primary and
--   unique keys, in full), so it is pinned. The careful path's probe of the stored values then
--   lists every month of the readings in its plan, locks each when it starts (PostgreSQL 15
--   locks every partition a kept plan names) and skips all but the reading's own. That plan is
--   made once per server connection behind Neon's pooler (where V12 planned the careful path
--   anew on every call); behind one that resets connections, on every careful call: 0.23 ms
--   for 17 months against 0.06 ms for the batch's month only (about 10 µs a month; retention
--   bounds the months).
--
-- Parameters and answer as in V10, and $12–$21: the batch's hours in key order, one element
-- per (metric, UTC hour): metric, hour, count, sum, min, max, first_at, first_value, last_at,
-- last_value (NULL for a single reading).
CREATE FUNCTION ingest_readings(
    _key_hash bytea, _metrics text[], _values numeric[], _times timestamptz[],
    _rate float8, _burst float8, _metrics_limit int4, _distinct_metrics text[],
    _earliest timestamptz, _latest timestamptz, _first_ords int8[],
    _hour_metrics text[], _hours timestamptz[], _counts int8[], _sums numeric[], _mins numeric[],
    _maxs numeric[], _first_ats timestamptz[], _first_values numeric[], _last_ats timestamptz[],
    _last_values numeric[],
    OUT device_id uuid, OUT known boolean, OUT tokens float8, OUT device_metrics text[],
    OUT accepted int8, OUT duplicates int8, OUT conflicts int8[], OUT unknown int8[]
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $function$
#variable_conflict use_column
DECLARE
    -- The readings (by position) that were not stored now: their first of the same identity
    -- was already there.
    missed int8[];
    -- The current key of the device the presented key ($1) names.
    current_key bytea := $1;
BEGIN
    -- Admission: V12's, with the key found without a subquery. The device whose current key
    -- was presented; when none, the device whose previous key it is, not expired, by its current
    -- key, once, with the previous key checked again on the row the UPDATE locks (a rotation may
    -- have ended it meanwhile).
    LOOP
        UPDATE devices d
        SET status = 'online', last_seen_at = greatest(d.last_seen_at, now()),
            rate_tokens = CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
                              d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
                          END - 1,
            rate_at = greatest(d.rate_at, now()),
            metrics = CASE WHEN $8::text[] <@ d.metrics THEN d.metrics
                           ELSE d.metrics || metrics_new(d.metrics, $8)
                      END
        WHERE d.device_key_hash = current_key
          AND (current_key = $1 OR (d.previous_key_hash = $1 AND d.previous_key_expires_at > now()))
          AND coalesce(CASE WHEN $5::float8 > 0 THEN least($6::float8, coalesce(
                           d.rate_tokens + $5 * greatest(0, extract(epoch FROM now() - d.rate_at)), $6))
                       END >= 1, true)
          AND ($8::text[] <@ d.metrics
               OR cardinality(d.metrics) + cardinality(metrics_new(d.metrics, $8)) <= $7::int4)
        RETURNING d.id, 0, '{}'::int8[], '{}'::int8[] INTO device_id, duplicates, conflicts, unknown;
        EXIT WHEN FOUND OR current_key <> $1;
        SELECT k.device_key_hash INTO current_key FROM devices k
        WHERE k.previous_key_hash = $1 AND k.previous_key_expires_at > now();
        EXIT WHEN NOT FOUND;
    END LOOP;

    IF NOT FOUND THEN
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
    END IF;

    -- Nothing stored can collide with the batch: stored by a plain INSERT (V12), and added to
    -- its hours: a single reading from itself, a batch from its hours as the caller summed them
    -- ($12–$21). A batch sent without them takes the careful path.
    IF $11::int8[] IS NULL AND ($12 IS NOT NULL OR cardinality($2) = 1) AND NOT EXISTS (
           SELECT 1 FROM reading_hours h
           WHERE h.device_id = ingest_readings.device_id AND h.metric = ANY ($8::text[])
             AND h.hour >= date_bin('1 hour', $9::timestamptz, TIMESTAMPTZ '2000-01-03 00:00:00+00')
             AND h.hour <= $10::timestamptz
             AND h.first_at <= $10::timestamptz AND h.last_at >= $9::timestamptz) THEN
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        SELECT ingest_readings.device_id, i.metric, i.value, i.recorded_at
        FROM unnest($2::text[], $3::numeric[], $4::timestamptz[]) AS i(metric, value, recorded_at);
        GET DIAGNOSTICS accepted = ROW_COUNT;
        IF $12 IS NULL THEN
            INSERT INTO reading_hours AS h (device_id, metric, hour, count, sum, min, max,
                                           first_at, first_value, last_at, last_value)
            VALUES (ingest_readings.device_id, $2[1],
                    date_bin('1 hour', $4[1], TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                    1, $3[1], $3[1], $3[1], $4[1], $3[1], $4[1], $3[1])
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
                folded = false;
        ELSE
            INSERT INTO reading_hours AS h (device_id, metric, hour, count, sum, min, max,
                                           first_at, first_value, last_at, last_value)
            SELECT ingest_readings.device_id, g.*
            FROM unnest($12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                 AS g(metric, hour, count, sum, min, max, first_at, first_value, last_at, last_value)
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
                folded = false;
        END IF;
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
