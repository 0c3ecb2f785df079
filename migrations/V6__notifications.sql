-- Notifications (channels, the event outbox, deliveries), acknowledgement and silences.
--
-- The outbox is written by triggers: every statement that fires, resolves or acknowledges an
-- alert, or flips a device offline or online, writes its event and the event's deliveries in the
-- same statement, whichever function runs it (ingest's one statement included). No producer can
-- forget it, and nothing is written when the user has no channel the event matches.

-- Acknowledgement: the first one is kept.
ALTER TABLE alerts
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN comment text;

-- When the evaluation pass marked the device offline (its clock): the `device.offline` event's time.
ALTER TABLE devices ADD COLUMN offline_since timestamptz;

CREATE TABLE channels (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id       text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    type           text NOT NULL CHECK (type IN ('webhook', 'slack', 'email')),
    target         jsonb NOT NULL,                   -- {"url"} or {"to"}
    events         text[] NOT NULL,
    device_ids     uuid[],                           -- NULL: all the owner's devices
    enabled        boolean NOT NULL DEFAULT true,
    -- A webhook's Standard Webhooks key (whsec_…). It signs, so it is kept as it is (not hashed);
    -- it is shown once, in the answer that creates the channel.
    signing_secret text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'webhook') = (signing_secret IS NOT NULL))
);
CREATE INDEX channels_owner_created ON channels (owner_id, created_at DESC, id DESC);

CREATE TABLE silences (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     text NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    device_id    uuid REFERENCES devices (id) ON DELETE CASCADE,
    rule_id      uuid REFERENCES alert_rules (id) ON DELETE CASCADE,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz,                         -- a one-off silence
    weekdays     text[],                              -- a weekly window: days it starts on,
    window_start time,                                -- its wall-clock start and end
    window_end   time,
    timezone     text,                                -- in this IANA zone
    comment      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((ends_at IS NULL) = (timezone IS NOT NULL)),
    CHECK ((timezone IS NULL) = (weekdays IS NULL) AND (timezone IS NULL) = (window_start IS NULL)
           AND (timezone IS NULL) = (window_end IS NULL)),
    CHECK (window_start IS DISTINCT FROM window_end OR window_start IS NULL)
);
CREATE INDEX silences_owner_created ON silences (owner_id, created_at DESC, id DESC);

-- No foreign keys: an event is written by statements that must not fail or wait because its
-- user, device or rule is being deleted at that moment. Its payload is the event JSON as sent
-- (a snapshot taken when it happened). `seq` orders the events of one channel.
CREATE TABLE notification_events (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    owner_id    text NOT NULL,
    type        text NOT NULL,
    device_id   uuid,
    rule_id     uuid,
    occurred_at timestamptz NOT NULL,
    payload     jsonb NOT NULL
);
CREATE INDEX notification_events_owner ON notification_events (owner_id);
CREATE INDEX notification_events_occurred ON notification_events (occurred_at);

-- One event to one channel. No foreign key to the channel either (a channel deleted while a pass
-- writes must not fail the pass): deleting a channel deletes its deliveries, and a delivery whose
-- channel is gone is never sent and is removed by the pass.
CREATE TABLE deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id         uuid NOT NULL REFERENCES notification_events (id) ON DELETE CASCADE,
    channel_id       uuid NOT NULL,
    event_seq        bigint NOT NULL,                 -- the event's, so a channel's go in order
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    -- Pending: when it may be tried next. A pass that takes it moves this past its own end (a
    -- lease), so overlapping passes never send the same attempt twice, and a pass that dies
    -- leaves it to be taken again when the lease ends.
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    UNIQUE (event_id, channel_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The due ones, channel by channel (the pass walks the channels, then takes a few of each).
CREATE INDEX deliveries_pending ON deliveries (channel_id, next_attempt_at, event_seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_channel_created ON deliveries (channel_id, created_at DESC, id DESC);

-- Times in the event JSON as the API writes them: RFC 3339 in UTC.
CREATE FUNCTION api_time(at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Whether a weekly window covers the wall-clock time `local`: it starts at `w_start` on one of
-- `weekdays` and ends at `w_end`, the next day when it crosses midnight.
CREATE FUNCTION in_weekly_window(weekdays text[], w_start time, w_end time, local timestamp)
RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN w_start < w_end
        THEN to_char(local, 'dy') = ANY (weekdays) AND local::time >= w_start AND local::time < w_end
        ELSE (to_char(local, 'dy') = ANY (weekdays) AND local::time >= w_start)
          OR (to_char(local - interval '1 day', 'dy') = ANY (weekdays) AND local::time < w_end)
    END
$$;

-- Whether an event of `owner` about `device` (and `rule`) at `at` falls under one of their
-- silences. A window follows the wall clock of its zone (Postgres's IANA database), so a
-- daylight-saving change moves it with local time.
CREATE FUNCTION is_silenced(owner text, device uuid, rule uuid, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM silences s
        WHERE s.owner_id = owner
          AND (s.device_id IS NULL OR s.device_id = device)
          AND (s.rule_id IS NULL OR s.rule_id = rule)
          AND s.starts_at <= at
          AND CASE WHEN s.timezone IS NULL THEN at < s.ends_at
                   ELSE in_weekly_window(s.weekdays, s.window_start, s.window_end,
                                         at AT TIME ZONE s.timezone)
              END
    )
$$;

-- Writes one event and a delivery for each of the owner's enabled channels that it matches
-- (`suppressed` under a silence; `test` events are written by the channel test itself). Nothing
-- when no channel matches. Returns the event's id.
CREATE FUNCTION notify(owner text, kind text, device uuid, rule uuid, at timestamptz, body jsonb)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    event uuid := gen_random_uuid();
    silenced boolean;
    seq bigint;
BEGIN
    PERFORM 1 FROM channels c
    WHERE c.owner_id = owner AND c.enabled AND kind = ANY (c.events)
      AND (c.device_ids IS NULL OR device = ANY (c.device_ids));
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    silenced := is_silenced(owner, device, rule, at);
    INSERT INTO notification_events (id, owner_id, type, device_id, rule_id, occurred_at, payload)
    VALUES (event, owner, kind, device, rule, at,
            jsonb_build_object('id', event, 'type', kind, 'occurred_at', api_time(at)) || body)
    RETURNING notification_events.seq INTO seq;
    INSERT INTO deliveries (event_id, channel_id, event_seq, status, next_attempt_at, created_at)
    SELECT event, c.id, seq, CASE WHEN silenced THEN 'suppressed' ELSE 'pending' END,
           CASE WHEN silenced THEN NULL ELSE at END, at
    FROM channels c
    WHERE c.owner_id = owner AND c.enabled AND kind = ANY (c.events)
      AND (c.device_ids IS NULL OR device = ANY (c.device_ids));
    RETURN event;
END
$$;

-- An alert as GET /v1/alerts shows it; `as_firing` shows it as it was when it fired.
CREATE FUNCTION alert_json(a alerts, as_firing boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.id, 'rule_id', a.rule_id, 'device_id', a.device_id, 'metric', a.metric,
        'status', CASE WHEN as_firing THEN 'firing' ELSE a.status END,
        'value', a.value::text,
        'triggered_at', api_time(a.triggered_at),
        'resolved_at', CASE WHEN as_firing THEN NULL ELSE api_time(a.resolved_at) END,
        'fired_reading_at', api_time(a.fired_reading_at),
        'resolved_reading_at', CASE WHEN as_firing THEN NULL ELSE api_time(a.resolved_reading_at) END,
        'acknowledged_at', api_time(a.acknowledged_at),
        'acknowledged_by', a.acknowledged_by,
        'comment', a.comment)
$$;

-- The device and the rule of an alert event, as the API shows them (NULL when already deleted).
CREATE FUNCTION alert_context(a alerts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'device', coalesce((SELECT jsonb_build_object('id', d.id, 'name', d.name)
                            FROM devices d WHERE d.id = a.device_id),
                           jsonb_build_object('id', a.device_id, 'name', NULL)),
        'rule', (SELECT jsonb_build_object(
                    'id', r.id, 'device_id', r.device_id, 'metric', r.metric,
                    'comparator', r.comparator, 'threshold', r.threshold::text,
                    'for_seconds', r.for_seconds, 'clear_threshold', r.clear_threshold::text,
                    'created_at', api_time(r.created_at), 'updated_at', api_time(r.updated_at))
                 FROM alert_rules r WHERE r.id = a.rule_id))
$$;

CREATE FUNCTION alerts_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    context jsonb := alert_context(NEW);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM notify(NEW.owner_id, 'alert.firing', NEW.device_id, NEW.rule_id, NEW.triggered_at,
                       context || jsonb_build_object('alert', alert_json(NEW, true)));
    END IF;
    -- Inserted already resolved (an episode that began and ended within one fold), or resolved now.
    IF NEW.status = 'resolved' AND (TG_OP = 'INSERT' OR OLD.status = 'firing') THEN
        PERFORM notify(NEW.owner_id, 'alert.resolved', NEW.device_id, NEW.rule_id, NEW.resolved_at,
                       context || jsonb_build_object('alert', alert_json(NEW, false)));
    END IF;
    IF NEW.acknowledged_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.acknowledged_at IS NULL) THEN
        PERFORM notify(NEW.owner_id, 'alert.acknowledged', NEW.device_id, NEW.rule_id,
                       NEW.acknowledged_at,
                       context || jsonb_build_object('alert', alert_json(NEW, false)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alerts_notify_insert AFTER INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION alerts_notify();
CREATE TRIGGER alerts_notify_update AFTER UPDATE OF status, acknowledged_at ON alerts
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.acknowledged_at IS DISTINCT FROM NEW.acknowledged_at)
    EXECUTE FUNCTION alerts_notify();

-- A device that goes offline (the pass, at its clock) or comes back (ingest, at the server's).
CREATE FUNCTION devices_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notify(NEW.owner_id, 'device.' || NEW.status, NEW.id, NULL,
                   CASE WHEN NEW.status = 'offline' THEN coalesce(NEW.offline_since, now())
                        ELSE now() END,
                   jsonb_build_object('device', jsonb_build_object('id', NEW.id, 'name', NEW.name)));
    RETURN NULL;
END
$$;

-- Ingest sets `status` on every request: the WHEN clause is checked without calling the
-- function, which runs only when the status really changes.
CREATE TRIGGER devices_notify AFTER UPDATE OF status ON devices
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION devices_notify();
