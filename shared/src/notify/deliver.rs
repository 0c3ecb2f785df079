//! Delivering what is due: claim, send, record.
//!
//! A claim walks the channels that have due deliveries and takes a few of each (`per_channel`,
//! oldest event first), locked with `FOR UPDATE SKIP LOCKED` and leased (their `next_attempt_at`
//! moved past the end of the invocation) in the same statement: overlapping passes never take
//! the same attempt, and a pass that dies leaves its claims to be taken again when the lease ends.
//! Each channel then sends its deliveries one after another, channels side by side up to
//! `concurrency`; a channel stops at its first failure (its later deliveries wait for the failed
//! one's retry, keeping their order), so one slow or dead receiver holds one slot for at most one
//! attempt's timeout and delays nobody else. What one channel sent is recorded in one statement.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Attempt, Clock, Notifier, Outbound, Outcome, Target};
use crate::db::{Db, DbError, Sql};

/// How a delivery run spends its time.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Channels sending at once.
    pub concurrency: usize,
    /// Deliveries taken per channel per claim.
    pub per_channel: i64,
    /// Channels per claim.
    pub channels: i64,
    /// How long a claim keeps others off (longer than any invocation).
    pub lease: Duration,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            concurrency: 32,
            per_channel: 50,
            channels: 500,
            lease: Duration::from_secs(300),
        }
    }
}

/// What a delivery run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub attempted: i64,
    pub delivered: i64,
    /// Failed for good (a 4xx, a refused target, 24 h of failures, a 410).
    pub failed: i64,
    /// Failed this time, to be retried.
    pub retrying: i64,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retrying += other.retrying;
    }
}

/// The retry schedule after the n-th failed attempt (about 30 s, 2 min, 10 min, 30 min, 1 h,
/// then hourly); a receiver's `Retry-After` may push it later, up to an hour.
const BACKOFF: [u64; 5] = [30, 120, 600, 1_800, 3_600];
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3_600);
/// A delivery not made within this long of its event is `failed`.
const GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(24);

/// When to try again after the `attempts`-th attempt failed, or `None`: give up.
pub fn next_attempt(
    now: DateTime<Utc>,
    created_at: DateTime<Utc>,
    attempts: i32,
    retry_after: Option<Duration>,
) -> Option<DateTime<Utc>> {
    let step = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
    let backoff = Duration::from_secs(*BACKOFF.get(step).unwrap_or(&3_600));
    let wait = backoff.max(retry_after.unwrap_or_default().min(RETRY_AFTER_CAP));
    let next = now + TimeDelta::from_std(wait).ok()?;
    (next <= created_at + GIVE_UP_AFTER).then_some(next)
}

/// Walks the channels with due deliveries (`$1`, the clock) — an index probe per channel, at most
/// `$4` of them — and takes up to `$3` of each enabled channel's, leasing them until `$2`.
/// Pending deliveries of a channel that is gone or disabled are failed on the way.
const CLAIM: Sql = Sql::idempotent(
    "WITH RECURSIVE walk AS (
         (SELECT d.channel_id FROM deliveries d
          WHERE d.status = 'pending' AND d.next_attempt_at <= $1
          ORDER BY d.channel_id LIMIT 1)
         UNION ALL
         SELECT (SELECT d.channel_id FROM deliveries d
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1
                   AND d.channel_id > w.channel_id
                 ORDER BY d.channel_id LIMIT 1)
         FROM walk w WHERE w.channel_id IS NOT NULL
     ),
     walked AS (
         SELECT w.channel_id, c.id IS NOT NULL AS open
         FROM (SELECT channel_id FROM walk WHERE channel_id IS NOT NULL LIMIT $4) w
         LEFT JOIN channels c ON c.id = w.channel_id AND c.enabled
     ),
     closed AS (
         UPDATE deliveries d
         SET status = 'failed', next_attempt_at = NULL, last_error = 'channel deleted or disabled'
         WHERE d.status = 'pending'
           AND d.channel_id IN (SELECT channel_id FROM walked WHERE NOT open)
     ),
     claimed AS (
         SELECT x.id
         FROM walked w
         CROSS JOIN LATERAL (
             SELECT d.id FROM deliveries d
             WHERE d.channel_id = w.channel_id AND d.status = 'pending'
               AND d.next_attempt_at <= $1
             ORDER BY d.next_attempt_at, d.event_seq
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         ) x
         WHERE w.open
     ),
     taken AS (
         UPDATE deliveries d SET next_attempt_at = $2
         FROM claimed WHERE d.id = claimed.id
         RETURNING d.id, d.channel_id, d.event_id, d.event_seq, d.attempts, d.created_at
     )
     SELECT t.id, t.channel_id, t.event_id, t.attempts, t.created_at,
            c.type, c.target, c.signing_secret, e.payload
     FROM taken t
     JOIN channels c ON c.id = t.channel_id
     JOIN notification_events e ON e.id = t.event_id
     ORDER BY t.channel_id, t.event_seq",
);

/// One delivery, taken the same way as [`CLAIM`] (a channel's `test`): `$1` the delivery.
const CLAIM_ONE: Sql = Sql::idempotent(
    "WITH taken AS (
         UPDATE deliveries d SET next_attempt_at = $2
         WHERE d.id = (SELECT id FROM deliveries WHERE id = $1 AND status = 'pending'
                       FOR UPDATE SKIP LOCKED)
         RETURNING d.id, d.channel_id, d.event_id, d.attempts, d.created_at
     )
     SELECT t.id, t.channel_id, t.event_id, t.attempts, t.created_at,
            c.type, c.target, c.signing_secret, e.payload
     FROM taken t
     JOIN channels c ON c.id = t.channel_id
     JOIN notification_events e ON e.id = t.event_id",
);

fn outbound(row: &Row) -> Result<Option<Outbound>, DbError> {
    let kind: String = row.try_get("type")?;
    let target: serde_json::Value = row.try_get("target")?;
    let Some(target) = Target::from_columns(&kind, &target, row.try_get("signing_secret")?) else {
        return Ok(None);
    };
    Ok(Some(Outbound {
        delivery_id: row.try_get("id")?,
        channel_id: row.try_get("channel_id")?,
        event_id: row.try_get("event_id")?,
        payload: row.try_get("payload")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        target,
    }))
}

/// The outcome of each delivery a channel took: attempted ones count an attempt; the others
/// (`attempted` false) go back to pending at `next_at`.
const RECORD: Sql = Sql::idempotent(
    "UPDATE deliveries d
     SET attempts = d.attempts + CASE WHEN o.attempted THEN 1 ELSE 0 END,
         status = o.status,
         last_status_code = CASE WHEN o.attempted THEN o.code ELSE d.last_status_code END,
         last_error = CASE WHEN o.attempted THEN o.error ELSE d.last_error END,
         next_attempt_at = o.next_at,
         delivered_at = o.delivered_at
     FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::int4[], $5::text[], $6::timestamptz[],
                 $7::timestamptz[]) AS o(id, attempted, status, code, error, next_at, delivered_at)
     WHERE d.id = o.id AND d.status = 'pending'",
);

/// `410 Gone`: the channel is disabled and its other pending deliveries fail.
const DISABLE: Sql = Sql::idempotent(
    "WITH off AS (UPDATE channels SET enabled = false WHERE id = $1)
     UPDATE deliveries SET status = 'failed', next_attempt_at = NULL,
                           last_error = 'channel disabled: the receiver answered 410 Gone'
     WHERE channel_id = $1 AND status = 'pending'",
);

/// What to write for one delivery.
#[derive(Debug)]
struct Record {
    id: Uuid,
    attempted: bool,
    status: &'static str,
    code: Option<i32>,
    error: Option<String>,
    next_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
}

impl Record {
    fn of(out: &Outbound, attempt: &Attempt, now: DateTime<Utc>) -> Self {
        let (status, next_at) = match attempt.outcome {
            Outcome::Delivered => ("delivered", None),
            Outcome::Failed | Outcome::Gone => ("failed", None),
            Outcome::Retry { after } => {
                match next_attempt(now, out.created_at, out.attempts + 1, after) {
                    Some(next) => ("pending", Some(next)),
                    None => ("failed", None),
                }
            }
        };
        Self {
            id: out.delivery_id,
            attempted: true,
            status,
            code: attempt.status_code,
            error: attempt.error.clone(),
            next_at,
            delivered_at: (status == "delivered").then_some(now),
        }
    }

    fn released(out: &Outbound, at: DateTime<Utc>) -> Self {
        Self {
            id: out.delivery_id,
            attempted: false,
            status: "pending",
            code: None,
            error: None,
            next_at: Some(at),
            delivered_at: None,
        }
    }
}

async fn record(db: &Db, records: &[Record]) -> Result<(), DbError> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let attempted: Vec<bool> = records.iter().map(|r| r.attempted).collect();
    let status: Vec<&str> = records.iter().map(|r| r.status).collect();
    let code: Vec<Option<i32>> = records.iter().map(|r| r.code).collect();
    let error: Vec<Option<&str>> = records.iter().map(|r| r.error.as_deref()).collect();
    let next_at: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.next_at).collect();
    let delivered_at: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.delivered_at).collect();
    db.execute_typed(
        &RECORD,
        &[
            (&ids, Type::UUID_ARRAY),
            (&attempted, Type::BOOL_ARRAY),
            (&status, Type::TEXT_ARRAY),
            (&code, Type::INT4_ARRAY),
            (&error, Type::TEXT_ARRAY),
            (&next_at, Type::TIMESTAMPTZ_ARRAY),
            (&delivered_at, Type::TIMESTAMPTZ_ARRAY),
        ],
    )
    .await?;
    Ok(())
}

/// Sends what is due until nothing is or `deadline` passes (no attempt starts after it; one that
/// started ends within its timeout).
pub async fn deliver_due(
    db: &Db,
    notifier: &Notifier,
    clock: &Clock,
    plan: Plan,
    deadline: Instant,
) -> Result<Sent, DbError> {
    let mut sent = Sent::default();
    while Instant::now() < deadline {
        let now = clock();
        let lease_until = now + TimeDelta::from_std(plan.lease).unwrap_or(TimeDelta::MAX);
        let rows = db
            .query_typed(
                &CLAIM,
                &[
                    (&now, Type::TIMESTAMPTZ),
                    (&lease_until, Type::TIMESTAMPTZ),
                    (&plan.per_channel, Type::INT8),
                    (&plan.channels, Type::INT8),
                ],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        let mut channels: Vec<VecDeque<Outbound>> = Vec::new();
        for row in &rows {
            let Some(out) = outbound(row)? else { continue };
            match channels.last_mut() {
                Some(queue)
                    if queue
                        .front()
                        .is_some_and(|o| o.channel_id == out.channel_id) =>
                {
                    queue.push_back(out);
                }
                _ => channels.push(VecDeque::from([out])),
            }
        }
        // Another claim only if this one may have left due deliveries behind: more channels
        // than one claim walks, or a channel with more than `per_channel`.
        let again =
            channels.len() as i64 >= plan.channels || rows_hit_channel_cap(&rows, plan.per_channel);
        let results: Vec<Result<Sent, DbError>> = futures::stream::iter(channels)
            .map(|queue| send_channel(db, notifier, clock, queue, deadline))
            .buffer_unordered(plan.concurrency.max(1))
            .collect()
            .await;
        for result in results {
            sent.add(result?);
        }
        if !again {
            break;
        }
    }
    Ok(sent)
}

fn rows_hit_channel_cap(rows: &[Row], per_channel: i64) -> bool {
    let mut count = 0_i64;
    let mut last: Option<Uuid> = None;
    for row in rows {
        let channel: Option<Uuid> = row.try_get("channel_id").ok();
        if channel == last {
            count += 1;
        } else {
            last = channel;
            count = 1;
        }
        if count >= per_channel {
            return true;
        }
    }
    false
}

/// One channel's deliveries in order, stopping at the first that must be retried or at the
/// deadline; then one statement records them all.
async fn send_channel(
    db: &Db,
    notifier: &Notifier,
    clock: &Clock,
    mut queue: VecDeque<Outbound>,
    deadline: Instant,
) -> Result<Sent, DbError> {
    let mut sent = Sent::default();
    let mut records = Vec::with_capacity(queue.len());
    let mut gone = None;
    while let Some(out) = queue.pop_front() {
        if Instant::now() >= deadline {
            records.push(Record::released(&out, clock()));
            continue;
        }
        let attempt = notifier.send(&out).await;
        let record = Record::of(&out, &attempt, clock());
        sent.attempted += 1;
        match record.status {
            "delivered" => sent.delivered += 1,
            "failed" => sent.failed += 1,
            _ => sent.retrying += 1,
        }
        let held_until = record.next_at;
        let stop = matches!(attempt.outcome, Outcome::Retry { .. } | Outcome::Gone);
        if attempt.outcome == Outcome::Gone {
            gone = Some(out.channel_id);
        }
        records.push(record);
        if stop {
            // The rest wait for this one's retry (or, when it gave up, go on next pass).
            let at = held_until.unwrap_or_else(|| clock());
            records.extend(queue.drain(..).map(|o| Record::released(&o, at)));
        }
    }
    record(db, &records).await?;
    if let Some(channel) = gone {
        db.execute_typed(&DISABLE, &[(&channel, Type::UUID)])
            .await?;
    }
    Ok(sent)
}

/// Sends one delivery now (a channel's `test`), if it is still pending.
pub async fn deliver_one(
    db: &Db,
    notifier: &Notifier,
    now: DateTime<Utc>,
    delivery: Uuid,
    lease: Duration,
) -> Result<(), DbError> {
    let lease_until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
    let Some(row) = db
        .query_typed_opt(
            &CLAIM_ONE,
            &[(&delivery, Type::UUID), (&lease_until, Type::TIMESTAMPTZ)],
        )
        .await?
    else {
        return Ok(());
    };
    let Some(out) = outbound(&row)? else {
        return Ok(());
    };
    let attempt = notifier.send(&out).await;
    record(db, &[Record::of(&out, &attempt, now)]).await?;
    if attempt.outcome == Outcome::Gone {
        db.execute_typed(&DISABLE, &[(&out.channel_id, Type::UUID)])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_then_hourly_then_give_up_after_a_day() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let after = |now: DateTime<Utc>, n, ra| next_attempt(now, t0, n, ra).map(|t| t - now);
        assert_eq!(after(t0, 1, None), Some(TimeDelta::seconds(30)));
        assert_eq!(after(t0, 2, None), Some(TimeDelta::seconds(120)));
        assert_eq!(after(t0, 5, None), Some(TimeDelta::hours(1)));
        assert_eq!(after(t0, 9, None), Some(TimeDelta::hours(1)));
        // Retry-After pushes later, capped at an hour; it never makes it sooner.
        assert_eq!(
            after(t0, 1, Some(Duration::from_secs(120))),
            Some(TimeDelta::seconds(120))
        );
        assert_eq!(
            after(t0, 1, Some(Duration::from_secs(86_400))),
            Some(TimeDelta::hours(1))
        );
        assert_eq!(
            after(t0, 3, Some(Duration::from_secs(5))),
            Some(TimeDelta::seconds(600))
        );
        let late = t0 + TimeDelta::hours(23) + TimeDelta::minutes(30);
        assert_eq!(after(late, 20, None), None);
    }
}
