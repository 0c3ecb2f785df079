-- Device keys that can be rotated without downtime, the per-tenant limits, and the per-device
-- ingest rate limit (functions/ingest/src/sql.rs and functions/devices/src/sql.rs use them).

-- Key rotation: beside the current key's hash, the previous key's, valid until
-- previous_key_expires_at (already past after a rotation with no grace). A rotation moves the
-- current key to previous, so a device has at most two valid keys and rotating again ends the
-- older one. Two columns of the row ingest locks anyway rather than a table of keys: a second
-- relation in the ingest statement measured +0.06 to +0.17 ms per request (planning, locking and
-- opening it); the second unique index costs nothing measurable.
ALTER TABLE devices
    ADD COLUMN previous_key_hash bytea UNIQUE CHECK (octet_length(previous_key_hash) = 32),
    ADD COLUMN previous_key_expires_at timestamptz,
    ADD CONSTRAINT devices_previous_key_expires CHECK (
        (previous_key_hash IS NULL) = (previous_key_expires_at IS NULL)
    );

-- What the limits count, kept on the row that the statement which writes locks anyway (the
-- owner's row for devices, the device's for rules and metrics), so that a limit is exact under
-- concurrency and costs no count over the children.
ALTER TABLE "user" ADD COLUMN device_count integer NOT NULL DEFAULT 0;

ALTER TABLE devices
    ADD COLUMN key_created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN rule_count integer NOT NULL DEFAULT 0,
    -- The metrics the device has ever sent, in the order it first sent them: ingest compares a
    -- batch's distinct metrics with it in memory (no probe of another table) and appends new ones.
    ADD COLUMN metrics text[] NOT NULL DEFAULT '{}',
    -- The ingest token bucket: tokens left at rate_at (NULL: full, as a new device starts).
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_at timestamptz;

-- The metrics of `batch` (in its order) that are not in `known`: what ingest appends to a
-- device's `metrics`. PL/pgSQL, so that the ingest statement, planned afresh on every request,
-- plans one function call instead of two subqueries over arrays.
CREATE FUNCTION metrics_new(known text[], batch text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m text;
    added text[] := '{}';
BEGIN
    FOREACH m IN ARRAY batch LOOP
        IF NOT (m = ANY (known)) THEN
            added := added || m;
        END IF;
    END LOOP;
    RETURN added;
END
$$;

UPDATE devices d SET
    key_created_at = d.created_at,
    rule_count = (SELECT count(*) FROM alert_rules r WHERE r.device_id = d.id),
    metrics = coalesce((
        SELECT array_agg(m.metric ORDER BY m.first_received, m.metric)
        FROM (
            SELECT r.metric, min(r.received_at) AS first_received
            FROM sensor_readings r WHERE r.device_id = d.id GROUP BY r.metric
        ) m
    ), '{}');

UPDATE "user" u SET device_count = (SELECT count(*) FROM devices d WHERE d.owner_id = u.id);
