-- Ingest as one server-side function (issue 19), and a device row that ingest updates in place
-- (at the end). The ingest function sends `SELECT … FROM ingest_readings($1 … $11)`: still one
-- statement per request, one round trip.
--
-- Why a function: PL/pgSQL keeps the plan of each statement it runs for the life of the server
-- connection. Behind Neon's pooler (transaction mode, no reset query between transactions) the
-- ingest statement is parsed, analysed and planned once per server connection instead of on
-- every request, which was most of what a one-reading request cost. Behind a pooler that runs
-- DISCARD ALL after every transaction (the tests' one), the plans are dropped every time and made
-- again on the next call: the work of before, and still correct, which the whole test suite
-- proves; the benchmark reports both pooler profiles (README, Performance). No named prepared
-- statement and no session state: the client sees one plain statement.
--
-- The function runs a second statement only when a reading was not stored (a duplicate or a
-- conflict, mostly a retry): telling which needs the stored value, a probe of the partitioned
-- readings table, and a plan that probes the readings must list their months. The first
-- statement only inserts into that table (routing a row to its month happens at execution), so
-- its plan stays small and the same whatever the batch. Being a statement of its own, the second
-- sees readings that a concurrent request committed while the first waited for it (the first's
-- `ON CONFLICT` waits for such a request to end).
--
-- Parameters: $1 the key's hash, $2 metrics, $3 values, $4 times (the batch, by position), $5 the
-- rate limit in tokens per second (0: off), $6 the burst, $7 the metrics limit, $8 the batch's
-- distinct metrics in batch order, $9/$10 its earliest and latest time (redundant in the probes,
-- but what lets the planner keep only the batch's months), $11 for each reading the position of
-- the first reading of the batch with the same identity (metric, time), or NULL when every
-- reading has an identity of its own (the common case).
--
-- The answer, one row: the admitted device (NULL when not admitted, and then nothing was
-- written) and, only then, `known`: whether the key names a device at all, and if it does, why
-- the request was not admitted: `tokens`, the device's rate-limit bucket refilled to now (NULL
-- when the rate limit is off), and `device_metrics`, the metrics it has; the readings accepted
-- (stored now), duplicates (the same value already stored, compared as numbers), the positions
-- (1-based) of conflicts (another value stored) and of unknowns: readings gone by the time they
-- were compared (their device deleted meanwhile). Safe to repeat: a repeat finds its own readings
-- stored and calls them duplicates (and takes another token).
--
-- The first statement:
-- - `device` admits the request and touches the device in one `UPDATE` (no separate lock, no
--   second write). It updates the row only when the request may write: a token is left (one is
--   taken), and the batch's new metrics ($8, compared in memory with the row's `metrics` by
--   `metrics_new`, V5: no other table, nothing history-sized) fit under the limit $7 (they are
--   appended; the array is not rewritten when the batch holds none). The device goes online and
--   its `last_seen_at` never moves backwards. Ingests of one device take turns on its row, each
--   judged on the row as the one before left it. The key is found by two plain unique-index
--   probes, the previous key's only when the current one finds nothing (an `OR` of both is planned
--   as a bitmap scan, which never marks index entries of dead row versions dead).
-- - `inserted` stores the first reading of each identity with `ON CONFLICT DO NOTHING`: one
--   primary-key probe per reading, whatever the device's history.
-- - `hours` adds what was stored to the hourly aggregates (V8): one upsert per (metric, hour) of
--   the batch. Counts, sums, minima and maxima add up in any order; first/last are the values at
--   the earliest/latest time, and no two readings of a series share a time.
--
-- `#variable_conflict use_column`: the answer's column names (device_id, …) are variables in
-- PL/pgSQL; in the statements they always mean the tables' columns.
CREATE FUNCTION ingest_readings(
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
BEGIN
    WITH input AS (
        SELECT i.ord, coalesce(i.first_ord, i.ord) AS first_ord,
               i.metric, i.value, i.recorded_at
        FROM unnest($2::text[], $3::numeric[], $4::timestamptz[], $11::int8[])
             WITH ORDINALITY AS i(metric, value, recorded_at, first_ord, ord)
    ),
    device AS (
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
    inserted AS (
        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
        SELECT device.id, i.metric, i.value, i.recorded_at
        FROM device
        CROSS JOIN input i
        WHERE i.ord = i.first_ord
        ORDER BY i.ord
        ON CONFLICT (device_id, metric, recorded_at) DO NOTHING
        RETURNING metric, recorded_at, value
    ),
    hours AS (
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
    )
    -- `missed` is looked for only when fewer readings were stored than sent (its subquery is
    -- run only when the CASE needs it).
    SELECT (SELECT id FROM device), stored.n, 0, '{}', '{}',
           CASE WHEN stored.n < cardinality($2::text[]) THEN ARRAY(
               SELECT i.ord FROM input i
               WHERE i.ord <> i.first_ord
                  OR NOT EXISTS (SELECT 1 FROM inserted n
                                 WHERE n.metric = i.metric AND n.recorded_at = i.recorded_at))
           END
    FROM (SELECT count(*) AS n FROM inserted) stored
    INTO device_id, accepted, duplicates, conflicts, unknown, missed;

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
    ELSIF missed IS NOT NULL THEN
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

-- Every ingest updates its device's row (status, last_seen_at, the token bucket). With
-- `last_seen_at` in an index, none of those updates could be HOT: each wrote a new entry into
-- every index of `devices`, and a device sending fast left its key's unique index full of dead
-- entries that every later key lookup stepped over until the next vacuum. Without it, no updated
-- column is indexed and the update stays on its page. The offline sweep (once a minute) reads the
-- table instead: a sequential scan of one small row per device.
DROP INDEX devices_online_last_seen;
