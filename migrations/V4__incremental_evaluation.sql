-- Alert evaluation whose cost is bounded by the rules and the readings that arrived since the
-- previous pass (functions/alert-eval/src/sql.rs explains the algorithm), `absent` rules, and
-- server-side time limits.

-- What arrived since the previous pass is found by arrival time. Readings are appended in arrival
-- order, so a BRIN index is tight and costs ingest almost nothing (a B-tree would cost an index
-- insert per reading); the newest, not yet summarized block ranges are always scanned, and those
-- are exactly the recent arrivals.
CREATE INDEX sensor_readings_received ON sensor_readings USING brin (received_at)
    WITH (pages_per_range = 32, autosummarize = on);

-- The rules of a series (device, metric): what the pass looks up for each series with new readings.
CREATE INDEX alert_rules_series ON alert_rules (device_id, metric);

-- `absent` rules: no threshold; fire when no reading of the metric has arrived for for_seconds.
ALTER TABLE alert_rules ALTER COLUMN threshold DROP NOT NULL;
ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_comparator_check;
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_comparator_check
    CHECK (comparator IN ('gt', 'lt', 'gte', 'lte', 'absent'));
ALTER TABLE alert_rules ADD CONSTRAINT alert_rules_absent_shape CHECK (
    CASE WHEN comparator = 'absent'
         THEN threshold IS NULL AND clear_threshold IS NULL AND for_seconds >= 60
         ELSE threshold IS NOT NULL
    END
);

-- Per rule, what the evaluation knows, so that a pass advances it from new readings instead of
-- rereading the for_seconds window. Built (or rebuilt) for the rule as it was at `basis`
-- (its updated_at); a changed rule is rebuilt. No foreign key: a rule deleted while a pass runs
-- must not make the pass wait or fail; orphans are removed by the pass.
CREATE TABLE rule_state (
    rule_id         uuid PRIMARY KEY,
    basis           timestamptz,            -- the rule's updated_at this state is for; NULL: rebuild
    latest_at       timestamptz,            -- L: the newest reading time evaluated
    latest_value    numeric,
    last_clear_at   timestamptz,            -- N: the newest reading time (>= the window's start) that did not breach
    last_arrival_at timestamptz,            -- absent rules: server time of the newest arrival, or the rule's creation
    built_at        timestamptz             -- arrivals before this are in the state since its build
) WITH (fillfactor = 50);                   -- updated every pass a reading arrives: room for HOT updates

-- How far the arrivals (by received_at) have been folded into rule_state. One row; its lock
-- makes one pass at a time the writer of rule_state (overlapping passes take turns chunk by chunk).
CREATE TABLE evaluation_progress (
    id               integer PRIMARY KEY CHECK (id = 1),
    arrivals_through timestamptz NOT NULL
);
-- Readings stored before this migration are known to every rule through its first build.
INSERT INTO evaluation_progress VALUES (1, now());

-- Alerts say at which reading they fired and resolved (reading time, device clock), so that the
-- same readings give the same alerts whenever they arrive. `absent` alerts have no value and no
-- firing reading.
ALTER TABLE alerts ALTER COLUMN value DROP NOT NULL;
ALTER TABLE alerts ADD COLUMN fired_reading_at timestamptz;
ALTER TABLE alerts ADD COLUMN resolved_reading_at timestamptz;

-- Server-side bounds, set for the database so that they survive the pooler's DISCARD ALL (a
-- session SET would not): a statement the function gave up on (client bound 10 s) is cancelled
-- by the server a little later instead of running on, holding locks. The evaluation pass raises
-- them for its own transactions with set_config(..., true). Migrations lift them for their session.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '12s');
    EXECUTE format('ALTER DATABASE %I SET lock_timeout = %L', current_database(), '5s');
    EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', current_database(), '15s');
END
$$;
