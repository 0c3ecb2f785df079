-- Hourly aggregates of the readings, kept exact by the ingest statement itself, so that rollups
-- with buckets of an hour or more read one row per hour instead of every reading (a year of
-- daily points: 8,760 rows instead of 3 million for a device reporting every 10 s).
--
-- Maintained where the readings are written (functions/ingest/src/sql.rs): the statement adds
-- exactly the readings it stored (duplicates and conflicts are not stored, so not counted) to
-- their hours with one upsert per (metric, hour) of the batch. Late and out-of-order readings
-- need nothing special: count, sum, min and max add up in any order, and first/last are the
-- values at the earliest/latest time, which no two readings of a series share (the readings'
-- primary key). Ingests of one device take turns on its row, and an upsert always sees the
-- newest version of the hour, so concurrent batches add up too.
--
-- No foreign key and no partitioning: small (one row per series and hour), kept past the
-- readings' retention (AGGREGATE_RETENTION_DAYS, default forever), purged with a deleted
-- device's readings.
CREATE TABLE reading_hours (
    device_id   uuid NOT NULL,
    metric      text NOT NULL,
    hour        timestamptz NOT NULL,                 -- the UTC hour's start
    count       bigint NOT NULL,
    sum         numeric NOT NULL,
    min         numeric NOT NULL,
    max         numeric NOT NULL,
    first_at    timestamptz NOT NULL,
    first_value numeric NOT NULL,
    last_at     timestamptz NOT NULL,
    last_value  numeric NOT NULL,
    PRIMARY KEY (device_id, metric, hour)
);

-- Hours past AGGREGATE_RETENTION_DAYS (when set) are found by the scheduled function through a
-- BRIN index: hours are mostly written in time order, and a BRIN entry costs ingest next to
-- nothing (a B-tree entry per new hour row would not).
CREATE INDEX reading_hours_hour ON reading_hours USING brin (hour) WITH (autosummarize = on);

-- The readings already stored.
INSERT INTO reading_hours
SELECT device_id, metric, date_bin('1 hour', recorded_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour,
       count(*), sum(value), min(value), max(value),
       min(recorded_at), (array_agg(value ORDER BY recorded_at))[1],
       max(recorded_at), (array_agg(value ORDER BY recorded_at DESC))[1]
FROM sensor_readings
GROUP BY 1, 2, 3;
