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
use uuid::Uuid;

use super::sql::{self, Record};
use super::{Attempt, Clock, Notifier, Outbound, Outcome};
use crate::db::{Db, DbError};

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
        let claimed = sql::claim(db, now, lease_until, plan.per_channel, plan.channels).await?;
        if claimed.is_empty() {
            break;
        }
        let mut channels: Vec<VecDeque<Outbound>> = Vec::new();
        for out in claimed {
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
        let again = channels.len() as i64 >= plan.channels
            || channels.iter().any(|q| q.len() as i64 >= plan.per_channel);
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
    sql::record(db, &records).await?;
    if let Some(channel) = gone {
        sql::disable(db, channel).await?;
    }
    Ok(sent)
}

/// Sends one delivery now (a channel's `test`), if it is still pending.
pub async fn deliver_one(
    db: &Db,
    notifier: &Notifier,
    now: DateTime<Utc>,
    delivery: Uuid,
) -> Result<(), DbError> {
    let lease_until = now + TimeDelta::from_std(Plan::default().lease).unwrap_or(TimeDelta::MAX);
    let Some(out) = sql::claim_one(db, delivery, lease_until).await? else {
        return Ok(());
    };
    let attempt = notifier.send(&out).await;
    sql::record(db, &[Record::of(&out, &attempt, now)]).await?;
    if attempt.outcome == Outcome::Gone {
        sql::disable(db, out.channel_id).await?;
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
