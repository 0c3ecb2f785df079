-- Ingest (V13) with a single reading stored by `INSERT … ON CONFLICT DO NOTHING` at once,
-- instead of after a probe of the hourly aggregates that decided whether a plain INSERT was
-- safe (issue 19). Same function, same arguments and answer: the functions deployed with V13
-- call it unchanged.
--
-- A one-reading request (the commonest, from devices that send as they measure) now runs three
-- statements: the admission UPDATE, the reading's INSERT, its hour's upsert when it was stored.
-- The probe was the dearest of V13's statements to plan after DISCARD ALL (0.041 ms, by
-- `pg_stat_statements`, against 0.010 ms for the INSERT), more than the conflict check adds to
-- an INSERT of one row (measured below). A reading that was stored before (a device's retry) is
-- no longer taken down the careful path's statement either: it is compared with what is stored
-- by the same statement as a batch's missed readings.
--
-- `pgbench`, calls of one reading, alternating the two functions on the same database:
--
--                                                 V13                      V15
--   hostile pooler, a new reading (six runs)      0.831–0.979 ms (0.914)   0.772–0.885 ms (0.804)
--   hostile pooler, a retried reading (three)     1.51–2.11 ms             1.17–1.34 ms
--   Neon-like pooler, a new reading (six)         0.317–0.422 ms           0.306–0.350 ms
--   Neon-like pooler, a retried reading (three)   0.38–0.49 ms             0.34–0.40 ms
--
-- (medians in brackets; a bare one-row INSERT took 0.35–0.37 ms through the hostile pooler and
-- 0.18 ms through the Neon-like one in the same hour.)
--
-- Batches are unchanged: the plain path (now for batches only) and the careful path are V13's.
CREATE OR REPLACE FUNCTION ingest_readings(
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

    -- A single reading: stored unless its identity is (`ON CONFLICT DO NOTHING`, which waits
    -- for a concurrent request storing it to end), and added to its hour when it was.
    IF $11::int8[] IS NULL AND $12 IS NULL AND cardinality($2) = 1 THEN
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        VALUES (ingest_readings.device_id, $2[1], $3[1], $4[1])
        ON CONFLICT (device_id, metric, recorded_at) DO NOTHING;
        GET DIAGNOSTICS accepted = ROW_COUNT;
        IF accepted = 1 THEN
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
            RETURN;
        END IF;
        -- Not stored: compared with what is (below).
        missed := '{1}';
    -- A batch with nothing stored that can collide with it: stored by a plain INSERT (V12), and
    -- added to its hours as the caller summed them ($12–$21). A batch sent without them takes
    -- the careful path.
    ELSIF $11::int8[] IS NULL AND $12 IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM reading_hours h
           WHERE h.device_id = ingest_readings.device_id AND h.metric = ANY ($8::text[])
             AND h.hour >= date_bin('1 hour', $9::timestamptz, TIMESTAMPTZ '2000-01-03 00:00:00+00')
             AND h.hour <= $10::timestamptz
             AND h.first_at <= $10::timestamptz AND h.last_at >= $9::timestamptz) THEN
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        SELECT ingest_readings.device_id, i.metric, i.value, i.recorded_at
        FROM unnest($2::text[], $3::numeric[], $4::timestamptz[]) AS i(metric, value, recorded_at);
        GET DIAGNOSTICS accepted = ROW_COUNT;
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
        RETURN;
    ELSE
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
    END IF;

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
