-- Device keys that can be rotated without downtime, the per-tenant limits, and the per-device
-- ingest rate limit (functions/ingest/src/sql.rs and functions/devices/src/sql.rs use them).

-- A device's keys, by hash (SHA-256 of the key; never the key). The current key has no expiry;
-- after a rotation the previous one expires at `expires_at` (already past with grace 0). A
-- rotation deletes any older previous key, so a device has at most two rows here.
CREATE TABLE device_keys (
    hash        bytea PRIMARY KEY CHECK (octet_length(hash) = 32),
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
CREATE INDEX device_keys_device ON device_keys (device_id);
CREATE UNIQUE INDEX device_keys_one_current ON device_keys (device_id) WHERE expires_at IS NULL;

INSERT INTO device_keys (hash, device_id, created_at)
SELECT device_key_hash, id, created_at FROM devices;

-- What the limits count, kept on the row that the statement which writes locks anyway (the
-- owner's row for devices, the device's for rules and metrics), so that a limit is exact under
-- concurrency and costs no count over the children.
ALTER TABLE "user" ADD COLUMN device_count integer NOT NULL DEFAULT 0;

ALTER TABLE devices
    DROP COLUMN device_key_hash,
    ADD COLUMN key_created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN previous_key_expires_at timestamptz,
    ADD COLUMN rule_count integer NOT NULL DEFAULT 0,
    -- The metrics the device has ever sent, in the order it first sent them: ingest compares a
    -- batch's distinct metrics with it in memory (no probe of another table) and appends new ones.
    ADD COLUMN metrics text[] NOT NULL DEFAULT '{}',
    -- The ingest token bucket: tokens left at rate_at (NULL: full, as a new device starts).
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_at timestamptz;

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
