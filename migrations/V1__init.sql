-- The whole schema. Enumerations are text + CHECK, never Postgres enum types: a custom type in a
-- result column makes tokio-postgres prepare a named statement to look it up, which a
-- transaction-mode pooler (Neon's PgBouncer) cannot keep.

-- Mirror of Clerk's users, kept by the clerk-webhook function. A row with updated_at NULL is a
-- placeholder made when a signed-in user called the API before the webhook arrived.
CREATE TABLE "user" (
    id          text PRIMARY KEY,                 -- Clerk user id, e.g. user_2abc…
    email       text,
    first_name  text,
    last_name   text,
    image_url   text,
    updated_at  timestamptz,                      -- Clerk's updated_at of the newest event applied
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Users Clerk deleted: no late or replayed event may bring them back.
CREATE TABLE user_tombstones (
    id          text PRIMARY KEY,
    deleted_at  timestamptz NOT NULL
);

CREATE TABLE devices (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id        text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    device_key_hash bytea NOT NULL UNIQUE CHECK (octet_length(device_key_hash) = 32), -- SHA-256; never the key
    status          text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    last_seen_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- A user's devices, newest first (keyset pagination on (created_at, id)).
CREATE INDEX devices_owner_created ON devices (owner_id, created_at DESC, id DESC);
-- The offline sweep looks only at devices that are online.
CREATE INDEX devices_online_last_seen ON devices (last_seen_at) WHERE status = 'online';

-- Append-only. The primary key is the idempotency key of a reading and the index every
-- time-series query walks: (device, metric, time). No surrogate id.
CREATE TABLE sensor_readings (
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric ~ '^[A-Za-z0-9_.:/-]{1,64}$'),
    value       numeric NOT NULL,
    recorded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, metric, recorded_at)
);

CREATE TABLE alert_rules (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    device_id       uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric          text NOT NULL CHECK (metric ~ '^[A-Za-z0-9_.:/-]{1,64}$'),
    comparator      text NOT NULL CHECK (comparator IN ('gt', 'lt', 'gte', 'lte')),
    threshold       numeric NOT NULL,
    for_seconds     integer NOT NULL DEFAULT 0 CHECK (for_seconds BETWEEN 0 AND 86400),
    clear_threshold numeric,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Hysteresis lies on the safe side of the threshold: below it for gt/gte, above for lt/lte.
    CONSTRAINT alert_rules_clear_side CHECK (
        clear_threshold IS NULL
        OR (comparator IN ('gt', 'gte') AND clear_threshold < threshold)
        OR (comparator IN ('lt', 'lte') AND clear_threshold > threshold)
    )
);
CREATE INDEX alert_rules_device ON alert_rules (device_id, created_at DESC, id DESC);

CREATE TABLE alerts (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    rule_id      uuid NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    device_id    uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- Denormalised from the device (owners never change) so a user's alerts list is one index range.
    owner_id     text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    metric       text NOT NULL,                   -- the rule's metric when it fired
    status       text NOT NULL CHECK (status IN ('firing', 'resolved')),
    value        numeric NOT NULL,                -- the reading that made it fire
    triggered_at timestamptz NOT NULL,
    resolved_at  timestamptz,
    CONSTRAINT alerts_resolved_at_iff_resolved CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
-- At most one firing alert per rule, however many evaluations overlap.
CREATE UNIQUE INDEX alerts_one_firing_per_rule ON alerts (rule_id) WHERE status = 'firing';
-- A user's alerts, newest first (keyset pagination on (triggered_at, id)).
CREATE INDEX alerts_owner_triggered ON alerts (owner_id, triggered_at DESC, id DESC);
CREATE INDEX alerts_device_triggered ON alerts (device_id, triggered_at DESC, id DESC);
CREATE INDEX alerts_rule ON alerts (rule_id);
