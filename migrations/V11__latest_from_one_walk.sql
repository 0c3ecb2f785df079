-- `GET /v1/devices/{id}/latest` from one walk of the device's newest hourly aggregates (issue 19;
-- called by functions/rollups/src/sql.rs, LATEST).
--
-- The newest reading of each metric is the `last_at`/`last_value` of the metric's newest hour
-- (exact, kept by ingest with every reading it stores; aggregates outlive the readings'
-- retention, so a metric silent for longer than that still shows its last reading). Until now
-- that was one backwards probe of the primary key per metric: 1,000 descents for a device with
-- 1,000 metrics. Now:
--
-- - the metrics heard from in the device's newest hour come from one range of this index, the
--   newest hour found by one backwards descent: a device whose metrics all report within the
--   hour is read whole by that walk, however many metrics it has, and nothing else runs;
-- - only when some of the device's metrics (the row's `metrics`, kept by ingest) are missing, the
--   hour before is walked for them, and any still missing are probed one by one.
--
-- Ingest pays one index entry per new (metric, hour) row; its updates of an hour's row change no
-- indexed column and stay HOT.
CREATE INDEX reading_hours_device_hour ON reading_hours (device_id, hour);

-- A function, in steps, rather than one statement: the steps after the first run only when
-- needed, and each is a short statement whose plan PL/pgSQL keeps on the server connection
-- (behind Neon's pooler: planned once per connection; one statement that does all of it with
-- CTEs took longer to plan than a probe takes to run). `$1` the device, `$2` the caller: no row
-- when the device is not the caller's, one row of NULLs when it is and nothing was stored.
-- In no particular order (the caller sorts).
CREATE FUNCTION latest_readings(_device uuid, _owner text)
RETURNS TABLE (metric text, value text, recorded_at timestamptz)
LANGUAGE plpgsql STABLE AS $function$
#variable_conflict use_column
DECLARE
    known text[];
    newest timestamptz;
    returned bigint;
    more bigint;
BEGIN
    SELECT d.metrics INTO known FROM devices d WHERE d.id = $1 AND d.owner_id = $2;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    newest := (SELECT max(n.hour) FROM reading_hours n WHERE n.device_id = $1);
    RETURN QUERY
        SELECT h.metric, h.last_value::text, h.last_at
        FROM reading_hours h
        WHERE h.device_id = $1 AND h.hour = newest;
    GET DIAGNOSTICS returned = ROW_COUNT;
    IF returned < cardinality(known) THEN
        RETURN QUERY
            WITH missing AS (
                SELECT m.metric FROM unnest(known) AS m(metric)
                WHERE m.metric NOT IN (SELECT t.metric FROM reading_hours t
                                       WHERE t.device_id = $1 AND t.hour = newest)
            ),
            previous AS (
                SELECT h.metric, h.last_value, h.last_at
                FROM reading_hours h
                WHERE h.device_id = $1 AND h.hour = newest - interval '1 hour'
                  AND h.metric IN (SELECT m.metric FROM missing m)
            )
            SELECT p.metric, p.last_value::text, p.last_at FROM previous p
            UNION ALL
            SELECT m.metric, o.last_value::text, o.last_at
            FROM missing m
            CROSS JOIN LATERAL (
                SELECT h.last_value, h.last_at FROM reading_hours h
                WHERE h.device_id = $1 AND h.metric = m.metric
                ORDER BY h.hour DESC
                LIMIT 1
            ) o
            WHERE m.metric NOT IN (SELECT p.metric FROM previous p);
        GET DIAGNOSTICS more = ROW_COUNT;
        returned := returned + more;
    END IF;
    IF returned = 0 THEN
        -- The caller's device, with nothing stored (or nothing left).
        RETURN NEXT;
    END IF;
END
$function$;
