//! The evaluation pass, in short statements whose cost is bounded by the rules and by the readings
//! that arrived since the previous pass, never by `for_seconds` × reading density.
//!
//! **The verdict.** For a threshold rule and the readings of its series, let L be the newest
//! reading time, N the newest time of a reading that does *not* breach, and P the newest reading
//! time at or before L − `for_seconds`. The rule is breaching when the reading at L breaches, P
//! exists and N < P: then every reading from P to L breaches, so the breaching run started at or
//! before L − `for_seconds` (exactly the contract's condition, and `rule::evaluate`'s). L and N only
//! grow as readings arrive, whatever their order, so they are kept per rule in `rule_state` and
//! advanced from new readings; P is one backwards index probe.
//!
//! **Build** ([`build`]): a rule that is new or was changed gets its state from the table once:
//! L, P and N over [P, L] (a scan bounded by the rule's own window, done once, in bounded chunks,
//! cheapest rules first), and is judged on its latest reading.
//!
//! **Arrivals** ([`fold_arrivals`]): readings are found by arrival time (`received_at`, BRIN), in
//! chunks of at most a given count, up to a horizon a little in the past (every ingest statement
//! that began before it has finished, see `Budget::arrival_margin`). The fold runs before any
//! build in a pass. Per rule, the readings newer than
//! L are replayed in reading-time order: each one is a moment at which the rule is judged, so an
//! alert fires (and resolves) at the reading where the condition began (and ended), whether the
//! readings came live, an hour late in one batch, or in any order within a pass. Readings older
//! than L cannot rewrite alerts already raised; they count for N, as a full recomputation would.
//! An `absent` rule's alert resolves when a reading of its metric arrives.
//!
//! **Absent** ([`absent`]): fires for rules whose metric has had no arrival for `for_seconds`
//! (judged as of the arrival horizon, up to which every arrival is folded).
//!
//! Writers of `rule_state` take turns on the `evaluation_progress` row (one short transaction per
//! chunk, [`lock_progress`]): overlapping passes share the work and never replay a reading twice.
//! Alerts are written only for rules whose rule, device and user rows the statement could lock
//! (`FOR KEY SHARE … SKIP LOCKED`, taken only for the rules whose alerts change): a rule, device or
//! user being deleted is skipped (its state is marked for rebuilding, in case the delete rolls
//! back) instead of failing the pass on a foreign key.

use chrono::{DateTime, Utc};
use shared::db::{DbError, Sql, Tx};
use tokio_postgres::types::Type;

/// Raises the database's 12 s statement bound for this transaction only (`set_config(…, true)`
/// is transaction-scoped, so safe behind the pooler).
const RAISE_TIMEOUT: Sql = Sql::idempotent("SELECT set_config('statement_timeout', $1, true)");

pub async fn raise_timeout(tx: &Tx, timeout: std::time::Duration) -> Result<(), DbError> {
    let value = format!("{}ms", timeout.as_millis());
    tx.query_typed(&RAISE_TIMEOUT, &[(&value, Type::TEXT)])
        .await?;
    Ok(())
}

/// The single writer's turn: waits (up to `lock_timeout`) while another pass's chunk holds it.
const LOCK_PROGRESS: Sql =
    Sql::idempotent("SELECT arrivals_through FROM evaluation_progress WHERE id = 1 FOR UPDATE");

/// How far arrivals have been folded, with the writer's lock held until the transaction ends.
/// The statements after it see what the previous writer committed (a new snapshot each).
pub async fn lock_progress(tx: &Tx) -> Result<DateTime<Utc>, DbError> {
    let row = tx.query_typed_one(&LOCK_PROGRESS, &[]).await?;
    Ok(row.try_get("arrivals_through")?)
}

/// Builds the state of up to `$2` rules that have none or whose rule changed since, cheapest
/// (shortest window) first, and raises or resolves their alerts on their latest reading
/// (stamped with that reading's time). `$1` is the pass's clock. `built_at` tells the fold which
/// arrivals the build already saw: those stamped 15 s before it (an ingest statement still in
/// flight then, which the server bounds at 12 s, may not have been visible; folding it again is
/// harmless).
const BUILD: Sql = Sql::idempotent(
    r#"WITH stale AS (
         SELECT r.id
         FROM alert_rules r
         LEFT JOIN rule_state s ON s.rule_id = r.id
         WHERE s.rule_id IS NULL OR s.basis IS DISTINCT FROM r.updated_at
         ORDER BY r.for_seconds, r.id
         LIMIT $2
     ),
     rules AS (
         SELECT r.id, r.device_id, d.owner_id, r.metric, r.comparator, r.threshold,
                r.clear_threshold, r.for_seconds, r.created_at, r.updated_at,
                fa.id IS NOT NULL AS firing
         FROM alert_rules r
         JOIN devices d ON d.id = r.device_id
         LEFT JOIN alerts fa ON fa.rule_id = r.id AND fa.status = 'firing'
         WHERE r.id IN (SELECT id FROM stale)
     ),
     built AS (
         SELECT r.*, latest.recorded_at AS latest_at, latest.value AS latest_value,
                latest.received_at AS latest_received, clear.at AS last_clear_at,
                r.comparator <> 'absent' AND latest.recorded_at IS NOT NULL
                    AND reading_breaches(r.comparator, latest.value, r.threshold)
                    AND window_start.at IS NOT NULL
                    AND (clear.at IS NULL OR clear.at < window_start.at) AS breaching,
                r.comparator <> 'absent' AND latest.recorded_at IS NOT NULL
                    AND CASE WHEN r.clear_threshold IS NULL
                             THEN NOT reading_breaches(r.comparator, latest.value, r.threshold)
                             ELSE reading_clears(r.comparator, latest.value, r.clear_threshold)
                        END AS clears
         FROM rules r
         LEFT JOIN LATERAL (
             SELECT s.recorded_at, s.value, s.received_at FROM sensor_readings s
             WHERE s.device_id = r.device_id AND s.metric = r.metric
             ORDER BY s.recorded_at DESC
             LIMIT 1
         ) latest ON true
         LEFT JOIN LATERAL (
             SELECT max(s.recorded_at) AS at FROM sensor_readings s
             WHERE s.device_id = r.device_id AND s.metric = r.metric
               AND s.recorded_at <= latest.recorded_at - make_interval(secs => r.for_seconds)
         ) window_start ON r.comparator <> 'absent'
         LEFT JOIN LATERAL (
             SELECT max(s.recorded_at) AS at FROM sensor_readings s
             WHERE s.device_id = r.device_id AND s.metric = r.metric
               AND s.recorded_at >= coalesce(window_start.at, '-infinity')
               AND s.recorded_at <= latest.recorded_at
               AND NOT reading_breaches(r.comparator, s.value, r.threshold)
         ) clear ON r.comparator <> 'absent'
     ),
     writers AS (
         SELECT r.id
         FROM alert_rules r
         JOIN devices d ON d.id = r.device_id
         JOIN "user" u ON u.id = d.owner_id
         WHERE r.id IN (SELECT id FROM built WHERE (clears AND firing) OR (breaching AND NOT firing))
         FOR KEY SHARE OF r, d, u SKIP LOCKED
     ),
     blocked AS (
         SELECT id FROM built WHERE (clears AND firing) OR (breaching AND NOT firing)
         EXCEPT
         SELECT id FROM writers
     ),
     resolved AS (
         UPDATE alerts a SET status = 'resolved', resolved_at = $1, resolved_reading_at = b.latest_at
         FROM built b
         WHERE a.rule_id = b.id AND a.status = 'firing' AND b.clears
           AND b.id NOT IN (SELECT id FROM blocked)
         RETURNING a.id
     ),
     fired AS (
         INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at,
                             fired_reading_at)
         SELECT b.id, b.device_id, b.owner_id, b.metric, 'firing', b.latest_value, $1, b.latest_at
         FROM built b
         WHERE b.breaching AND NOT b.firing AND b.id NOT IN (SELECT id FROM blocked)
         ON CONFLICT DO NOTHING
         RETURNING id
     ),
     saved AS (
         INSERT INTO rule_state (rule_id, basis, latest_at, latest_value, last_clear_at,
                                 last_arrival_at, built_at)
         SELECT b.id, b.updated_at, b.latest_at, b.latest_value, b.last_clear_at,
                greatest(b.created_at, b.latest_received), now() - interval '15 seconds'
         FROM built b
         WHERE b.id NOT IN (SELECT id FROM blocked)
         ON CONFLICT (rule_id) DO UPDATE
            SET basis = excluded.basis, latest_at = excluded.latest_at,
                latest_value = excluded.latest_value, last_clear_at = excluded.last_clear_at,
                last_arrival_at = greatest(rule_state.last_arrival_at, excluded.last_arrival_at),
                built_at = excluded.built_at
         RETURNING rule_id
     )
     SELECT (SELECT count(*) FROM stale) AS stale,
            (SELECT count(*) FROM saved) AS built,
            (SELECT count(*) FROM fired) AS fired,
            (SELECT count(*) FROM resolved) AS resolved"#,
);

/// What one statement of the pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Rules whose verdict this step brought up to date.
    pub rules: i64,
    pub fired: i64,
    pub resolved: i64,
    /// The step took all it was allowed (a full chunk): more may be waiting.
    pub full: bool,
}

/// Builds up to `chunk` stale rules. Call with the progress lock held.
pub async fn build(tx: &Tx, now: DateTime<Utc>, chunk: i64) -> Result<Step, DbError> {
    let row = tx
        .query_typed_one(&BUILD, &[(&now, Type::TIMESTAMPTZ), (&chunk, Type::INT8)])
        .await?;
    Ok(Step {
        rules: row.try_get("built")?,
        fired: row.try_get("fired")?,
        resolved: row.try_get("resolved")?,
        full: row.try_get::<_, i64>("stale")? >= chunk,
    })
}

/// Where the chunk of arrivals after `$1` (the progress so far) ends, how many it holds, and
/// how to plan folding it, for this transaction only:
///
/// - `horizon`: `$2` (the pass's clock less the margin `$4`), but never past the database's own
///   clock less the margin: arrivals are stamped by the database, and a progress mark ahead of it
///   would pass over readings still to come.
/// - `through`: the chunk ends at the arrival time of about the `$3`-th reading after `$1` (all
///   readings of one ingest statement share it, so a batch is never split), or at the horizon. It
///   reads at most 2 × `$3` + 1 arrivals in table order (readings are appended in arrival order)
///   and takes the `$3`-th smallest, so a chunk costs the same whatever the backlog behind it.
///   `more`: arrivals may remain after this chunk (the sample was cut short, or holds later ones);
///   when the sample held every arrival up to the horizon, the pass does not ask again.
/// - The plan: [`FOLD_ARRIVALS`] is planned for a handful of arrivals unless told otherwise:
///   nested loops of index probes (device, rules, state, firing alert) per arrival and sorts
///   sized for a few rows. That is right for an ordinary minute, and 40% slower than hashing when
///   most series report at once (100k arrivals on 100k rules: ~4 µs of probes per arrival
///   against one scan of each table). From a tenth as many arrivals as rules (the planner's count,
///   `reltuples`) nested loops are turned off, so a chunk costs one scan of the rules tables, at
///   most ten times its arrivals; `work_mem` is raised so that the chunk's sorts (about 15 MB at
///   100k arrivals) and the arrivals' bitmap stay in memory (only one pass runs at a time).
const CHUNK: Sql = Sql::idempotent(
    "WITH horizon AS (
         SELECT least($2::timestamptz, now() - make_interval(secs => $4)) AS at
     ),
     sample AS (
         SELECT s.received_at FROM sensor_readings s
         WHERE s.received_at > $1 AND s.received_at <= (SELECT at FROM horizon)
         LIMIT 2 * $3 + 1
     ),
     sampled AS (
         SELECT count(*) AS n FROM sample
     ),
     bound AS (
         SELECT coalesce(
             CASE WHEN (SELECT n FROM sampled) > $3
                  THEN (SELECT received_at FROM sample ORDER BY received_at OFFSET $3 LIMIT 1)
             END,
             (SELECT at FROM horizon)) AS through
     ),
     chunk AS (
         SELECT bound.through,
                (SELECT count(*) FROM sample WHERE received_at <= bound.through) AS arrivals,
                (SELECT n FROM sampled) > 2 * $3
                  OR EXISTS (SELECT 1 FROM sample WHERE received_at > bound.through) AS more,
                (SELECT greatest(reltuples, 0)::int8 FROM pg_class
                 WHERE oid = 'alert_rules'::regclass) AS rules
         FROM bound
     )
     SELECT through, arrivals, more,
            set_config('work_mem', '32MB', true) AS work_mem,
            set_config('enable_nestloop', CASE WHEN arrivals * 10 >= rules THEN 'off' ELSE 'on' END,
                       true) AS nestloop
     FROM chunk",
);

/// Folds the readings that arrived after `$1` (the progress so far) up to `$2` (the end of the
/// chunk, from [`CHUNK`]) into the states of their series' rules, replaying the newer ones in
/// reading-time order (see the module's documentation), and moves the progress on. `$3` is the
/// pass's clock.
///
/// - `rules`: the rules of the series that received readings, with a current state, and how many
///   readings their series received in this chunk (`n`).
/// - `pairs`: each rule with the arrivals its state does not reflect yet (its build saw the rest);
///   `ordered`: the newer ones in order, each with the newest non-breaching time up to it (a
///   running maximum over all of the rule's arrivals, the older ones included). No join between
///   these derived sets: the planner cannot estimate them and nests loops over them.
/// - `single`: the common case, a series with one new reading, takes a short way: the same
///   verdict as below from that one reading, without the window functions (three sorts of every
///   pair) or the per-rule grouping in `folded`; and a firing rule's breaching reading needs no
///   window start (whether it counts as `fire` or as nothing, the alert stays as it is), which
///   saves a probe into the readings per firing rule with a `for_seconds` and pass. Everything
///   from `ordered` to `events` is for series with several, except the `calm` rules: firing,
///   and every newer reading breaches, so nothing can change. Most are seen in `rules` already,
///   from the series' aggregates (every arrival newer than the state and the build, and the
///   lowest or highest value past the threshold): those get no pairs at all and are folded from
///   the aggregates, so a dense series that keeps its rules firing costs O(rules + readings),
///   not O(rules × readings); the others (late readings among them) are found in `calm`.
/// - `steps` → `events`: per rule, each newer reading's verdict: `fire` (breaching: it breaches,
///   and the window's start, the newest reading at or before its time − `for_seconds` among those
///   arrived so far, is newer than the last non-breaching reading up to it), `clear` (it clears),
///   or nothing. The window start is probed once per series, reading and `for_seconds` (many
///   rules on one series share it: in `probed` one row of each does the probe and `steps` hands
///   the result to the others, with window functions rather than a join, which the planner made
///   a nested loop that probed once per rule and reading again), and only where the last
///   non-breaching reading is older than the window (else the rule cannot be breaching).
/// - `transitions`: where the kind changes, starting from the rule's alert state. They alternate,
///   so each `fire` pairs with the next `clear`: one alert per episode, resolved within the same
///   statement when the episode ended within these readings. The first `clear` of a firing rule
///   resolves its existing alert (`resolved_existing`, which the insert waits for so that the
///   one-firing-alert-per-rule index never sees two).
/// - `writers`: the rules whose alerts change, locked (rule, device and user rows, `FOR KEY SHARE
///   SKIP LOCKED`) so that one being deleted right now is skipped instead of failing the statement
///   on a foreign key; only these are locked, as a tuple lock is a write. `blocked` (the others)
///   keep their old state, marked for rebuilding (`skipped`) in case the delete rolls back. The
///   writes filter with `NOT IN (… blocked)`, a hashed lookup in a set that is nearly always
///   empty: `IN (… writers)` was planned as a nested loop over two large derived sets.
/// - `folded`: L, its value, N and the last arrival, by `greatest`; a rule counts as evaluated when
///   its latest reading moved forward (older readings change no verdict now, only later ones).
const FOLD_ARRIVALS: Sql = Sql::idempotent(
    r#"WITH arrivals AS (
         SELECT s.device_id, s.metric, s.recorded_at AS t, s.value AS v, s.received_at
         FROM sensor_readings s
         WHERE s.received_at > $1 AND s.received_at <= $2
     ),
     series AS (
         SELECT device_id, metric, count(*) AS n, min(t) AS first_t, max(t) AS last_t,
                min(v) AS min_v, max(v) AS max_v,
                min(received_at) AS first_received, max(received_at) AS last_received
         FROM arrivals
         GROUP BY device_id, metric
     ),
     rules AS (
         SELECT r.id, r.device_id, r.metric, r.comparator, r.threshold,
                r.clear_threshold, r.for_seconds, st.latest_at, st.last_clear_at, st.built_at,
                fa.id IS NOT NULL AS firing, s.n, s.last_t, s.last_received,
                coalesce(fa.id IS NOT NULL AND s.n > 1
                         AND (st.latest_at IS NULL OR s.first_t > st.latest_at)
                         AND (st.built_at IS NULL OR s.first_received > st.built_at)
                         AND CASE r.comparator
                                 WHEN 'gt' THEN s.min_v > r.threshold
                                 WHEN 'gte' THEN s.min_v >= r.threshold
                                 WHEN 'lt' THEN s.max_v < r.threshold
                                 WHEN 'lte' THEN s.max_v <= r.threshold
                             END, false) AS calm
         FROM alert_rules r
         JOIN series s ON s.device_id = r.device_id AND s.metric = r.metric
         JOIN rule_state st ON st.rule_id = r.id AND st.basis = r.updated_at
         LEFT JOIN alerts fa ON fa.rule_id = r.id AND fa.status = 'firing'
     ),
     pairs AS (
         SELECT r.id, r.device_id, r.metric, r.comparator, r.threshold,
                r.clear_threshold, r.for_seconds, r.latest_at, r.last_clear_at, r.firing, r.n,
                a.t, a.v, a.received_at,
                reading_breaches(r.comparator, a.v, r.threshold) AS breaches
         FROM rules r
         JOIN arrivals a ON a.device_id = r.device_id AND a.metric = r.metric
         WHERE NOT r.calm AND (r.built_at IS NULL OR a.received_at > r.built_at)
     ),
     single AS (
         SELECT x.id, x.device_id, x.metric, x.t, x.v, x.firing,
                CASE
                    WHEN x.breaches AND (x.for_seconds = 0 OR x.firing OR CASE
                        WHEN coalesce(x.clear_upto, '-infinity')
                             < x.t - make_interval(secs => x.for_seconds)
                        THEN (SELECT max(p.recorded_at) FROM sensor_readings p
                              WHERE p.device_id = x.device_id AND p.metric = x.metric
                                AND p.recorded_at <= x.t - make_interval(secs => x.for_seconds)
                                AND p.received_at <= $2)
                             > coalesce(x.clear_upto, '-infinity')
                        END)
                        THEN 'fire'
                    WHEN CASE WHEN x.clear_threshold IS NULL THEN NOT x.breaches
                              ELSE reading_clears(x.comparator, x.v, x.clear_threshold)
                         END
                        THEN 'clear'
                END AS kind
         FROM (
             SELECT p.*,
                    greatest(p.last_clear_at, CASE WHEN NOT p.breaches THEN p.t END) AS clear_upto
             FROM pairs p
             WHERE p.n = 1 AND p.comparator <> 'absent'
               AND (p.latest_at IS NULL OR p.t > p.latest_at)
         ) x
     ),
     calm AS (
         SELECT p.id
         FROM pairs p
         WHERE p.n > 1 AND p.firing AND (p.latest_at IS NULL OR p.t > p.latest_at)
         GROUP BY p.id
         HAVING bool_and(p.breaches)
     ),
     ordered AS (
         SELECT x.*
         FROM (
             SELECT p.*,
                    greatest(p.last_clear_at, max(p.t) FILTER (WHERE NOT p.breaches)
                        OVER (PARTITION BY p.id ORDER BY p.t ROWS UNBOUNDED PRECEDING)) AS clear_upto
             FROM pairs p
             WHERE p.n > 1 AND p.comparator <> 'absent' AND p.id NOT IN (SELECT id FROM calm)
         ) x
         WHERE x.latest_at IS NULL OR x.t > x.latest_at
     ),
     probed AS (
         SELECT o.*,
                CASE WHEN o.needs_start AND row_number() OVER (
                              PARTITION BY o.device_id, o.metric, o.t, o.for_seconds, o.needs_start) = 1
                     THEN (SELECT max(p.recorded_at) FROM sensor_readings p
                           WHERE p.device_id = o.device_id AND p.metric = o.metric
                             AND p.recorded_at <= o.t - make_interval(secs => o.for_seconds)
                             AND p.received_at <= $2)
                END AS own_start
         FROM (
             SELECT o.*,
                    o.breaches AND o.for_seconds > 0
                    AND coalesce(o.clear_upto, '-infinity')
                        < o.t - make_interval(secs => o.for_seconds) AS needs_start
             FROM ordered o
         ) o
     ),
     steps AS (
         SELECT p.*,
                max(p.own_start) OVER (PARTITION BY p.device_id, p.metric, p.t, p.for_seconds)
                    AS window_start
         FROM probed p
     ),
     events AS (
         SELECT e.*,
                lag(e.kind, 1, CASE WHEN e.firing THEN 'fire' ELSE 'clear' END)
                    OVER (PARTITION BY e.id ORDER BY e.t) AS before
         FROM (
             SELECT s.id, s.device_id, s.metric, s.t, s.v, s.firing,
                    CASE
                        WHEN s.breaches AND (s.for_seconds = 0
                                             OR s.window_start > coalesce(s.clear_upto, '-infinity'))
                            THEN 'fire'
                        WHEN CASE WHEN s.clear_threshold IS NULL THEN NOT s.breaches
                                  ELSE reading_clears(s.comparator, s.v, s.clear_threshold)
                             END
                            THEN 'clear'
                    END AS kind
             FROM steps s
         ) e
         WHERE e.kind IS NOT NULL
     ),
     transitions AS (
         SELECT e.id, e.device_id, e.metric, e.t, e.v, e.kind,
                row_number() OVER (PARTITION BY e.id ORDER BY e.t) AS n,
                lead(e.t) OVER (PARTITION BY e.id ORDER BY e.t) AS ended_at
         FROM events e
         WHERE e.kind <> e.before
         UNION ALL
         SELECT s.id, s.device_id, s.metric, s.t, s.v, s.kind, 1, NULL
         FROM single s
         WHERE s.kind <> CASE WHEN s.firing THEN 'fire' ELSE 'clear' END
     ),
     arrived AS (
         SELECT DISTINCT ON (p.id) p.id, p.t
         FROM pairs p
         WHERE p.comparator = 'absent' AND p.firing
         ORDER BY p.id, p.received_at, p.t
     ),
     writers AS (
         SELECT r.id
         FROM alert_rules r
         JOIN devices d ON d.id = r.device_id
         JOIN "user" u ON u.id = d.owner_id
         WHERE r.id IN (SELECT id FROM transitions UNION SELECT id FROM arrived)
         FOR KEY SHARE OF r, d, u SKIP LOCKED
     ),
     blocked AS (
         SELECT id FROM transitions UNION SELECT id FROM arrived
         EXCEPT
         SELECT id FROM writers
     ),
     skipped AS (
         UPDATE rule_state st SET basis = NULL
         WHERE st.rule_id IN (SELECT id FROM blocked)
         RETURNING st.rule_id
     ),
     resolved_existing AS (
         UPDATE alerts a SET status = 'resolved', resolved_at = $3, resolved_reading_at = x.t
         FROM (SELECT id, t FROM transitions WHERE n = 1 AND kind = 'clear'
               UNION ALL
               SELECT id, t FROM arrived) x
         WHERE a.rule_id = x.id AND a.status = 'firing' AND x.id NOT IN (SELECT id FROM blocked)
         RETURNING a.id
     ),
     fired AS (
         INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at,
                             fired_reading_at, resolved_at, resolved_reading_at)
         SELECT tr.id, tr.device_id, (SELECT d.owner_id FROM devices d WHERE d.id = tr.device_id),
                tr.metric,
                CASE WHEN tr.ended_at IS NULL THEN 'firing' ELSE 'resolved' END,
                tr.v, $3, tr.t,
                CASE WHEN tr.ended_at IS NULL THEN NULL ELSE $3::timestamptz END, tr.ended_at
         FROM transitions tr
         WHERE tr.kind = 'fire' AND tr.id NOT IN (SELECT id FROM blocked)
           AND (SELECT count(*) FROM resolved_existing) >= 0
         ON CONFLICT DO NOTHING
         RETURNING status
     ),
     folded AS (
         UPDATE rule_state st
         SET latest_at = greatest(st.latest_at, f.latest_at),
             latest_value = CASE WHEN st.latest_at IS NULL OR f.latest_at > st.latest_at
                                 THEN f.latest_value ELSE st.latest_value END,
             last_clear_at = greatest(st.last_clear_at, f.last_clear_at),
             last_arrival_at = greatest(st.last_arrival_at, f.last_arrival_at)
         FROM (
             SELECT p.id, p.latest_at IS NULL OR p.t > p.latest_at AS advanced,
                    p.t AS latest_at, p.v AS latest_value,
                    CASE WHEN p.comparator <> 'absent' AND NOT p.breaches THEN p.t END
                        AS last_clear_at,
                    p.received_at AS last_arrival_at
             FROM pairs p
             WHERE p.n = 1
             UNION ALL
             SELECT p.id, bool_or(p.latest_at IS NULL OR p.t > p.latest_at) AS advanced,
                    max(p.t) AS latest_at,
                    (array_agg(p.v ORDER BY p.t DESC))[1] AS latest_value,
                    max(p.t) FILTER (WHERE p.comparator <> 'absent' AND NOT p.breaches)
                        AS last_clear_at,
                    max(p.received_at) AS last_arrival_at
             FROM pairs p
             WHERE p.n > 1
             GROUP BY p.id
             UNION ALL
             SELECT r.id, r.latest_at IS NULL OR r.last_t > r.latest_at, r.last_t,
                    (SELECT l.value FROM sensor_readings l
                     WHERE l.device_id = r.device_id AND l.metric = r.metric
                       AND l.recorded_at = r.last_t),
                    NULL, r.last_received
             FROM rules r
             WHERE r.calm
         ) f
         WHERE st.rule_id = f.id AND f.id NOT IN (SELECT id FROM blocked)
         RETURNING st.rule_id, f.advanced
     ),
     progressed AS (  -- runs although nothing reads it: a data-modifying CTE always does
         UPDATE evaluation_progress SET arrivals_through = $2
         WHERE id = 1
     )
     SELECT (SELECT count(*) FROM folded WHERE advanced) AS rules,
            (SELECT count(*) FROM skipped) AS skipped,
            (SELECT count(*) FROM fired) AS fired,
            (SELECT count(*) FROM resolved_existing)
              + (SELECT count(*) FROM fired WHERE status = 'resolved') AS resolved"#,
);

/// Folds up to about `chunk` readings that arrived after `after`, up to `horizon`. Call with the
/// progress lock held; `after` is what [`lock_progress`] returned.
pub async fn fold_arrivals(
    tx: &Tx,
    after: DateTime<Utc>,
    horizon: DateTime<Utc>,
    chunk: i64,
    now: DateTime<Utc>,
    margin: std::time::Duration,
) -> Result<Step, DbError> {
    let bound = tx
        .query_typed_one(
            &CHUNK,
            &[
                (&after, Type::TIMESTAMPTZ),
                (&horizon, Type::TIMESTAMPTZ),
                (&chunk, Type::INT8),
                (&margin.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    let through: DateTime<Utc> = bound.try_get("through")?;
    let row = tx
        .query_typed_one(
            &FOLD_ARRIVALS,
            &[
                (&after, Type::TIMESTAMPTZ),
                (&through, Type::TIMESTAMPTZ),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
        .await?;
    let skipped: i64 = row.try_get("skipped")?;
    if skipped > 0 {
        tracing::info!(skipped, "rules being deleted were skipped");
    }
    let step = Step {
        rules: row.try_get("rules")?,
        fired: row.try_get("fired")?,
        resolved: row.try_get("resolved")?,
        full: bound.try_get("more")?,
    };
    Ok(step)
}

/// Fires the `absent` rules whose metric has had no arrival for `for_seconds` before `$2` (the
/// pass's clock less the arrival margin: arrivals up to then are folded, so every silence it
/// reports really lasted `for_seconds`), once per silence. `$1` is the pass's clock.
const ABSENT: Sql = Sql::idempotent(
    r#"WITH silent AS (
         SELECT r.id, r.device_id, d.owner_id, r.metric
         FROM alert_rules r
         JOIN devices d ON d.id = r.device_id
         JOIN "user" u ON u.id = d.owner_id
         JOIN rule_state st ON st.rule_id = r.id AND st.basis = r.updated_at
         WHERE r.comparator = 'absent'
           AND st.last_arrival_at <= $2 - make_interval(secs => r.for_seconds)
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.rule_id = r.id AND a.status = 'firing')
         FOR KEY SHARE OF r, d, u SKIP LOCKED
     ),
     fired AS (
         INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
         SELECT s.id, s.device_id, s.owner_id, s.metric, 'firing', NULL, $1
         FROM silent s
         ON CONFLICT DO NOTHING
         RETURNING id
     )
     SELECT (SELECT count(*) FROM fired) AS fired"#,
);

pub async fn absent(tx: &Tx, now: DateTime<Utc>, judged_at: DateTime<Utc>) -> Result<i64, DbError> {
    let row = tx
        .query_typed_one(
            &ABSENT,
            &[(&now, Type::TIMESTAMPTZ), (&judged_at, Type::TIMESTAMPTZ)],
        )
        .await?;
    Ok(row.try_get("fired")?)
}

/// Online devices not heard from for `$2` seconds before `$1` go offline (at `$1`, the time of
/// their `device.offline` event).
const OFFLINE: Sql = Sql::idempotent(
    "WITH offline AS (
         UPDATE devices SET status = 'offline', offline_since = $1
         WHERE status = 'online' AND last_seen_at < $1 - make_interval(secs => $2)
         RETURNING id
     )
     SELECT count(*) AS devices_offline FROM offline",
);

pub async fn offline(
    tx: &Tx,
    now: DateTime<Utc>,
    offline_after: std::time::Duration,
) -> Result<i64, DbError> {
    let row = tx
        .query_typed_one(
            &OFFLINE,
            &[
                (&now, Type::TIMESTAMPTZ),
                (&offline_after.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    Ok(row.try_get("devices_offline")?)
}

/// States of deleted rules (rule_state has no foreign key, see the migration).
const FORGET_DELETED: Sql = Sql::idempotent(
    "DELETE FROM rule_state s WHERE NOT EXISTS (SELECT 1 FROM alert_rules r WHERE r.id = s.rule_id)",
);

pub async fn forget_deleted(tx: &Tx) -> Result<u64, DbError> {
    tx.execute_typed(&FORGET_DELETED, &[]).await
}

/// Notification events (and their deliveries) are kept 30 days for the delivery log; older ones
/// go, a bounded number per pass.
const FORGET_OLD_EVENTS: Sql = Sql::idempotent(
    "DELETE FROM notification_events
     WHERE id IN (SELECT id FROM notification_events
                  WHERE occurred_at < $1 - interval '30 days'
                  ORDER BY occurred_at LIMIT 5000)",
);

pub async fn forget_old_events(tx: &Tx, now: DateTime<Utc>) -> Result<u64, DbError> {
    tx.execute_typed(&FORGET_OLD_EVENTS, &[(&now, Type::TIMESTAMPTZ)])
        .await
}

/// The monthly partitions of `sensor_readings` from the retention horizon to two months ahead
/// (migration V7; nearly always nothing to do). How many were made.
pub const MAKE_PARTITIONS: Sql = Sql::idempotent("SELECT make_reading_partitions($1, $2) AS n");

/// The months wholly past the horizon, dropped, in a transaction of their own: a drop that
/// cannot get its lock must not undo the months made ahead. How many were dropped.
pub const DROP_PARTITIONS: Sql = Sql::idempotent("SELECT drop_old_reading_partitions($1, $2) AS n");

/// Runs one of the partition steps above for the pass's clock and retention.
pub async fn partitions(
    tx: &Tx,
    step: &Sql,
    now: DateTime<Utc>,
    retention_days: i32,
) -> Result<i32, DbError> {
    let row = tx
        .query_typed_one(
            step,
            &[(&now, Type::TIMESTAMPTZ), (&retention_days, Type::INT4)],
        )
        .await?;
    Ok(row.try_get("n")?)
}

/// One chunk of a deleted device's readings and of its hourly and daily aggregates (`$1` rows of
/// each at most), oldest deletion first; the device leaves the queue with its last chunk. A device being purged by an overlapping pass is
/// skipped, so passes share the work instead of waiting on each other.
const PURGE: Sql = Sql::idempotent(
    "WITH queued AS (
         SELECT device_id FROM device_purges
         ORDER BY deleted_at, device_id
         LIMIT 1
         FOR UPDATE SKIP LOCKED
     ),
     chunk AS (
         SELECT r.device_id, r.metric, r.recorded_at
         FROM queued q JOIN sensor_readings r ON r.device_id = q.device_id
         LIMIT $1
     ),
     gone AS (
         DELETE FROM sensor_readings r USING chunk c
         WHERE r.device_id = c.device_id AND r.metric = c.metric AND r.recorded_at = c.recorded_at
         RETURNING 1
     ),
     hours AS (
         SELECT h.device_id, h.metric, h.hour
         FROM queued q JOIN reading_hours h ON h.device_id = q.device_id
         LIMIT $1
     ),
     hours_gone AS (
         DELETE FROM reading_hours h USING hours c
         WHERE h.device_id = c.device_id AND h.metric = c.metric AND h.hour = c.hour
         RETURNING 1
     ),
     days AS (
         SELECT d.device_id, d.metric, d.day
         FROM queued q JOIN reading_days d ON d.device_id = q.device_id
         LIMIT $1
     ),
     days_gone AS (
         DELETE FROM reading_days d USING days c
         WHERE d.device_id = c.device_id AND d.metric = c.metric AND d.day = c.day
         RETURNING 1
     ),
     finished AS (
         DELETE FROM device_purges p USING queued q
         WHERE p.device_id = q.device_id
           AND (SELECT count(*) FROM gone) < $1 AND (SELECT count(*) FROM hours_gone) < $1
           AND (SELECT count(*) FROM days_gone) < $1
     )
     SELECT EXISTS (SELECT 1 FROM queued) AS found,
            (SELECT count(*) FROM gone) + (SELECT count(*) FROM hours_gone)
                + (SELECT count(*) FROM days_gone) AS purged",
);

/// For [`PURGE`]'s transaction only: walk the device's primary-key range and stop at the chunk.
/// The planner cannot know which device the chunk is for, so it guesses a share of the table
/// and, for a device that holds much of a month, picks a sequential or bitmap scan that reads
/// the whole month (or all the device's index entries) for every chunk: a purge quadratic in
/// the history (seen: a bitmap scan of 500,000 entries for each 10,000-row chunk).
const WALK_THE_INDEX: Sql = Sql::idempotent(
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)",
);

/// Rows purged (readings, hours and days), or `None` when no deleted device is waiting (or all are
/// being purged).
pub async fn purge(tx: &Tx, chunk: i64) -> Result<Option<i64>, DbError> {
    tx.execute_typed(&WALK_THE_INDEX, &[]).await?;
    let row = tx.query_typed_one(&PURGE, &[(&chunk, Type::INT8)]).await?;
    let found: bool = row.try_get("found")?;
    Ok(found.then(|| row.try_get("purged")).transpose()?)
}

/// Hourly and daily aggregates before `$1` (AGGREGATE_RETENTION_DAYS, a UTC midnight, so that a
/// day's row never outlives some of its hours), a bounded number of each per pass.
const FORGET_OLD_AGGREGATES: Sql = Sql::idempotent(
    "WITH hours AS (
         DELETE FROM reading_hours h
         USING (SELECT device_id, metric, hour FROM reading_hours WHERE hour < $1 LIMIT 10000) old
         WHERE h.device_id = old.device_id AND h.metric = old.metric AND h.hour = old.hour
     )
     DELETE FROM reading_days d
     USING (SELECT device_id, metric, day FROM reading_days WHERE day < $1 LIMIT 10000) old
     WHERE d.device_id = old.device_id AND d.metric = old.metric AND d.day = old.day",
);

pub async fn forget_old_aggregates(tx: &Tx, before: DateTime<Utc>) -> Result<u64, DbError> {
    tx.execute_typed(&FORGET_OLD_AGGREGATES, &[(&before, Type::TIMESTAMPTZ)])
        .await
}

/// The whole UTC days before `$1`'s day that have hours not folded into their day's row yet, folded
/// (migration V12): the days of the next `$2` such hours. How many day rows were written.
const FOLD_DAYS: Sql = Sql::idempotent("SELECT fold_reading_days($1, $2) AS n");

pub async fn fold_days(tx: &Tx, before: DateTime<Utc>, hours: i32) -> Result<i32, DbError> {
    let row = tx
        .query_typed_one(
            &FOLD_DAYS,
            &[(&before, Type::TIMESTAMPTZ), (&hours, Type::INT4)],
        )
        .await?;
    Ok(row.try_get("n")?)
}

/// What is left for the next pass: rules without a current state, and rules whose series have
/// arrivals after the progress (up to the horizon `$1`).
const PENDING: Sql = Sql::idempotent(
    "SELECT count(*) AS pending
     FROM alert_rules r
     LEFT JOIN rule_state s ON s.rule_id = r.id
     WHERE s.rule_id IS NULL OR s.basis IS DISTINCT FROM r.updated_at
        OR (r.device_id, r.metric) IN (
            SELECT DISTINCT a.device_id, a.metric FROM sensor_readings a
            WHERE a.received_at > (SELECT arrivals_through FROM evaluation_progress WHERE id = 1)
              AND a.received_at <= $1)",
);

pub async fn pending(tx: &Tx, horizon: DateTime<Utc>) -> Result<i64, DbError> {
    let row = tx
        .query_typed_one(&PENDING, &[(&horizon, Type::TIMESTAMPTZ)])
        .await?;
    Ok(row.try_get("pending")?)
}
