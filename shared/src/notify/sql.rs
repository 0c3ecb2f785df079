//! The delivery statements: each a typed function with its SQL, its parameters and its row
//! decoding (see `deliver.rs` for how they are used).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Outbound, Target};
use crate::db::{Db, DbError, Sql};

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

/// The claimed deliveries, in channel and event order (a row whose channel makes no sense, never
/// written, is left out).
pub async fn claim(
    db: &Db,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    per_channel: i64,
    channels: i64,
) -> Result<Vec<Outbound>, DbError> {
    let rows = db
        .query_typed(
            &CLAIM,
            &[
                (&now, Type::TIMESTAMPTZ),
                (&lease_until, Type::TIMESTAMPTZ),
                (&per_channel, Type::INT8),
                (&channels, Type::INT8),
            ],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        claimed.extend(outbound(row)?);
    }
    Ok(claimed)
}

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

/// The delivery `delivery` if it is still pending, leased until `lease_until`.
pub async fn claim_one(
    db: &Db,
    delivery: Uuid,
    lease_until: DateTime<Utc>,
) -> Result<Option<Outbound>, DbError> {
    match db
        .query_typed_opt(
            &CLAIM_ONE,
            &[(&delivery, Type::UUID), (&lease_until, Type::TIMESTAMPTZ)],
        )
        .await?
    {
        Some(row) => outbound(&row),
        None => Ok(None),
    }
}

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

/// What to write for one delivery (made in `deliver.rs`).
#[derive(Debug)]
pub struct Record {
    pub id: Uuid,
    pub attempted: bool,
    pub status: &'static str,
    pub code: Option<i32>,
    pub error: Option<String>,
    pub next_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub async fn record(db: &Db, records: &[Record]) -> Result<(), DbError> {
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

/// `410 Gone`: the channel is disabled and its other pending deliveries fail.
const DISABLE: Sql = Sql::idempotent(
    "WITH off AS (UPDATE channels SET enabled = false WHERE id = $1)
     UPDATE deliveries SET status = 'failed', next_attempt_at = NULL,
                           last_error = 'channel disabled: the receiver answered 410 Gone'
     WHERE channel_id = $1 AND status = 'pending'",
);

pub async fn disable(db: &Db, channel: Uuid) -> Result<(), DbError> {
    db.execute_typed(&DISABLE, &[(&channel, Type::UUID)])
        .await?;
    Ok(())
}
