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

-- The metrics a device has ever sent: what the metrics-per-device limit counts. Ingest probes it
-- once per distinct metric of a batch (not per reading, not the history) and adds a row only for
-- a metric the device never sent before.
CREATE TABLE device_metrics (
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, metric)
);

INSERT INTO device_metrics (device_id, metric, created_at)
SELECT device_id, metric, min(received_at) FROM sensor_readings GROUP BY device_id, metric;

-- Counters that the statements which create and delete things keep, so that a limit is checked on
-- the row the statement locks anyway (the owner's row for devices, the device's for rules and
-- metrics): exact under concurrency, with no count over the children.
ALTER TABLE "user" ADD COLUMN device_count integer NOT NULL DEFAULT 0;

ALTER TABLE devices
    DROP COLUMN device_key_hash,
    ADD COLUMN key_created_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN previous_key_expires_at timestamptz,
    ADD COLUMN rule_count integer NOT NULL DEFAULT 0,
    ADD COLUMN metric_count integer NOT NULL DEFAULT 0,
    -- The ingest token bucket: tokens left at rate_at (NULL: full, as a new device starts).
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_at timestamptz;

UPDATE devices d SET
    key_created_at = d.created_at,
    rule_count = (SELECT count(*) FROM alert_rules r WHERE r.device_id = d.id),
    metric_count = (SELECT count(*) FROM device_metrics m WHERE m.device_id = d.id);

UPDATE "user" u SET device_count = (SELECT count(*) FROM devices d WHERE d.owner_id = u.id);
