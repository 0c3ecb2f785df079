-- Readings in monthly time partitions, retention by dropping whole partitions, and deletes of
-- devices (and of users) that commit at once whatever the history holds: the readings are purged
-- afterwards, in bounded chunks, by the scheduled function (functions/alert-eval).
--
-- Why monthly: at the default retention (400 days) that is 14 live partitions. Each query that
-- names a time range reads only its months (pruned when planned); one that cannot but walks the
-- time order (newest first) stops at the first month that has a row (an ordered Append, possible
-- because there is no default partition). Fewer partitions keep the
-- planning of every statement cheap (ingest plans afresh on every request); the price is that a
-- reading outlives the retention horizon by up to one month, until its whole month is past it.

-- Readings no longer refer to their device: deleting a device must not delete its history in the
-- same transaction. Ingest still cannot store a reading for a device that is gone: its statement
-- inserts only for the device row it has just updated (locked), and a deleted row updates nothing.
ALTER TABLE sensor_readings DROP CONSTRAINT sensor_readings_device_id_fkey;

-- The partitions of sensor_readings that exist, so that the scheduled function can tell, without
-- taking any lock, whether one is missing or past the horizon.
CREATE TABLE reading_partitions (
    name    text PRIMARY KEY,
    from_at timestamptz NOT NULL,
    to_at   timestamptz NOT NULL CHECK (from_at < to_at)
);

-- The table, partitioned. The existing table, if it holds readings, becomes one partition as it
-- is (no row copied, its indexes kept): everything up to the end of the current month. It is
-- dropped, like any partition, once all of it is past the retention horizon.
ALTER TABLE sensor_readings RENAME TO sensor_readings_before_v7;
ALTER INDEX sensor_readings_pkey RENAME TO sensor_readings_before_v7_pkey;
ALTER INDEX sensor_readings_received RENAME TO sensor_readings_before_v7_received;

CREATE TABLE sensor_readings (
    device_id   uuid NOT NULL,
    metric      text NOT NULL CONSTRAINT sensor_readings_metric_check
                               CHECK (metric ~ '^[A-Za-z0-9_.:/-]{1,64}$'),
    value       numeric NOT NULL,
    recorded_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, metric, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX sensor_readings_received ON sensor_readings USING brin (received_at)
    WITH (pages_per_range = 32, autosummarize = on);

-- Monthly partitions (UTC months) covering [from_at, to_at), each created unless some partition
-- already covers part of its month. A partition is made empty and then attached, which locks the
-- parent only in SHARE UPDATE EXCLUSIVE mode: readings go on being written and read meanwhile
-- (CREATE TABLE … PARTITION OF would lock out every reader and writer). Overlapping callers take
-- turns on an advisory lock. Returns how many were created.
CREATE FUNCTION create_reading_partitions(from_at timestamptz, to_at timestamptz) RETURNS integer
LANGUAGE plpgsql SET TimeZone = 'UTC' AS $$
DECLARE
    month timestamptz := date_trunc('month', from_at);
    next timestamptz;
    name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('reading_partitions'));
    WHILE month < to_at LOOP
        next := month + interval '1 month';
        IF NOT EXISTS (SELECT 1 FROM reading_partitions p WHERE p.from_at < next AND p.to_at > month) THEN
            name := 'sensor_readings_' || to_char(month, 'YYYY_MM');
            EXECUTE format('CREATE TABLE %I (LIKE sensor_readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
            EXECUTE format('ALTER TABLE sensor_readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           name, month, next);
            INSERT INTO reading_partitions (name, from_at, to_at) VALUES (name, month, next);
            created := created + 1;
        END IF;
        month := next;
    END LOOP;
    RETURN created;
END
$$;

-- What the scheduled function runs every pass, as two steps in two transactions, so that a drop
-- that cannot get its lock never holds back the months ingest needs:
--
-- 1. The months from the retention horizon's (`now` − `retention_days`) to two whole months
--    ahead: one catalog-free lookup when they exist (nearly every pass). When another pass is
--    at it, returns at once (that pass does the work). Returns how many were made.
CREATE FUNCTION make_reading_partitions(now timestamptz, retention_days integer) RETURNS integer
LANGUAGE plpgsql SET TimeZone = 'UTC' SET lock_timeout = '200ms' AS $$
DECLARE
    horizon timestamptz := now - make_interval(days => retention_days);
    ahead timestamptz := date_trunc('month', now) + interval '3 months';
BEGIN
    IF NOT EXISTS (
           SELECT 1
           FROM generate_series(date_trunc('month', horizon), ahead - interval '1 month',
                                interval '1 month') m
           WHERE NOT EXISTS (SELECT 1 FROM reading_partitions p
                             WHERE p.from_at < m + interval '1 month' AND p.to_at > m))
       OR NOT pg_try_advisory_xact_lock(hashtext('reading_partitions')) THEN
        RETURN 0;
    END IF;
    RETURN create_reading_partitions(horizon, ahead);
END
$$;

-- 2. The months wholly past the horizon, dropped. Dropping a partition locks the whole table for
--    a moment: `lock_timeout` keeps ingest from queueing behind it for long (the pass tries
--    again next time). Returns how many were dropped.
CREATE FUNCTION drop_old_reading_partitions(now timestamptz, retention_days integer) RETURNS integer
LANGUAGE plpgsql SET TimeZone = 'UTC' SET lock_timeout = '200ms' AS $$
DECLARE
    horizon timestamptz := now - make_interval(days => retention_days);
    old record;
    dropped integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM reading_partitions WHERE to_at <= horizon)
       OR NOT pg_try_advisory_xact_lock(hashtext('reading_partitions')) THEN
        RETURN 0;
    END IF;
    FOR old IN SELECT p.name FROM reading_partitions p WHERE p.to_at <= horizon ORDER BY p.from_at LOOP
        EXECUTE format('DROP TABLE %I', old.name);
        DELETE FROM reading_partitions p WHERE p.name = old.name;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- (ATTACH scans the table once to check that every row lies before the bound; the renames above
-- hold its lock until the migration commits anyway.)
DO $$
DECLARE
    newest timestamptz := (SELECT max(recorded_at) FROM sensor_readings_before_v7);
    upper_bound timestamptz := date_trunc('month', greatest(now(), newest), 'UTC') + interval '1 month';
BEGIN
    IF newest IS NOT NULL THEN
        EXECUTE format('ALTER TABLE sensor_readings ATTACH PARTITION sensor_readings_before_v7
                        FOR VALUES FROM (MINVALUE) TO (%L)', upper_bound);
        INSERT INTO reading_partitions (name, from_at, to_at)
        VALUES ('sensor_readings_before_v7', '-infinity', upper_bound);
    ELSE
        DROP TABLE sensor_readings_before_v7;
    END IF;
END
$$;

-- The default retention's months (and two ahead) exist from the start; the scheduled function
-- keeps them coming and follows RETENTION_DAYS.
SELECT create_reading_partitions(now() - interval '400 days', date_trunc('month', now(), 'UTC') + interval '3 months');

-- Devices deleted (by the API, or with their user) whose readings are still stored. A trigger
-- fills it, so every way a device row goes (a cascade from its user included) is covered; the
-- scheduled function purges the readings in chunks and then the row.
CREATE TABLE device_purges (
    device_id  uuid PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION devices_purge_later() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_purges (device_id) SELECT id FROM gone ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_purge_later AFTER DELETE ON devices
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION devices_purge_later();
