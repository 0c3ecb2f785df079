//! The evaluation pass: one statement over all rules.

use std::time::Duration;

use shared::db::{Db, DbError, Sql};
use tokio_postgres::types::Type;

/// Evaluates every rule, resolves, fires and marks devices offline, and counts what it did.
///
/// - `evaluation`: per rule, the latest reading of its metric (one backwards primary-key probe)
///   and the verdict. A rule "held" its condition for `for_seconds` when no reading in
///   [latest − for_seconds, latest] fails it and the newest reading at or before
///   latest − for_seconds breaches too (then the breaching run reaches back that far). Both
///   are index range scans bounded by `for_seconds` of history, so the cost grows with the
///   number of rules, not with the readings stored. Rules without readings do nothing.
/// - `resolved`: firing alerts whose rule clears. A concurrent pass that got there first has
///   already changed the row, and this one's re-check of `status = 'firing'` skips it.
/// - `fired`: one alert per breaching rule without a firing one; the partial unique index and
///   `ON CONFLICT DO NOTHING` keep it to one even when passes overlap.
/// - `offline`: online devices not heard from for `$1` seconds.
///
/// Safe to repeat: a second pass over the same data changes nothing.
const EVALUATE: Sql = Sql::idempotent(
    "WITH evaluation AS (
         SELECT r.id AS rule_id, r.device_id, d.owner_id, r.metric, latest.value,
                CASE
                    WHEN latest.value IS NULL THEN false
                    WHEN NOT reading_breaches(r.comparator, latest.value, r.threshold) THEN false
                    WHEN r.for_seconds = 0 THEN true
                    ELSE NOT EXISTS (
                             SELECT 1 FROM sensor_readings w
                             WHERE w.device_id = r.device_id AND w.metric = r.metric
                               AND w.recorded_at >= latest.recorded_at - make_interval(secs => r.for_seconds)
                               AND w.recorded_at <= latest.recorded_at
                               AND NOT reading_breaches(r.comparator, w.value, r.threshold)
                         )
                         AND coalesce((
                             SELECT reading_breaches(r.comparator, p.value, r.threshold)
                             FROM sensor_readings p
                             WHERE p.device_id = r.device_id AND p.metric = r.metric
                               AND p.recorded_at <= latest.recorded_at - make_interval(secs => r.for_seconds)
                             ORDER BY p.recorded_at DESC
                             LIMIT 1
                         ), false)
                END AS breaching,
                CASE
                    WHEN latest.value IS NULL THEN false
                    WHEN r.clear_threshold IS NULL
                        THEN NOT reading_breaches(r.comparator, latest.value, r.threshold)
                    ELSE reading_clears(r.comparator, latest.value, r.clear_threshold)
                END AS clears
         FROM alert_rules r
         JOIN devices d ON d.id = r.device_id
         LEFT JOIN LATERAL (
             SELECT s.value, s.recorded_at FROM sensor_readings s
             WHERE s.device_id = r.device_id AND s.metric = r.metric
             ORDER BY s.recorded_at DESC
             LIMIT 1
         ) latest ON true
     ),
     resolved AS (
         UPDATE alerts a SET status = 'resolved', resolved_at = now()
         FROM evaluation e
         WHERE a.rule_id = e.rule_id AND a.status = 'firing' AND e.clears
         RETURNING a.id
     ),
     fired AS (
         INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
         SELECT e.rule_id, e.device_id, e.owner_id, e.metric, 'firing', e.value, now()
         FROM evaluation e
         WHERE e.breaching
           AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.rule_id = e.rule_id AND a.status = 'firing')
         ON CONFLICT (rule_id) WHERE status = 'firing' DO NOTHING
         RETURNING id
     ),
     offline AS (
         UPDATE devices SET status = 'offline'
         WHERE status = 'online' AND last_seen_at < now() - make_interval(secs => $1)
         RETURNING id
     )
     SELECT (SELECT count(*) FROM evaluation) AS rules_evaluated,
            (SELECT count(*) FROM fired) AS fired,
            (SELECT count(*) FROM resolved) AS resolved,
            (SELECT count(*) FROM offline) AS devices_offline",
);

/// What one pass changed.
pub struct Evaluated {
    pub rules_evaluated: i64,
    pub fired: i64,
    pub resolved: i64,
    pub devices_offline: i64,
}

/// One pass; devices not heard from for `offline_after` go offline.
pub async fn evaluate(db: &Db, offline_after: Duration) -> Result<Evaluated, DbError> {
    let row = db
        .query_typed_one(&EVALUATE, &[(&offline_after.as_secs_f64(), Type::FLOAT8)])
        .await?;
    Ok(Evaluated {
        rules_evaluated: row.try_get("rules_evaluated")?,
        fired: row.try_get("fired")?,
        resolved: row.try_get("resolved")?,
        devices_offline: row.try_get("devices_offline")?,
    })
}
