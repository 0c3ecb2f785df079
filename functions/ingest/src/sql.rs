//! The ingest statements: the whole request in one round trip.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use shared::config::Limits;
use shared::db::{Db, DbError, Param, Sql};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::Reading;

/// The whole request in one statement: a call of the server-side function `ingest_readings`
/// (its SQL, and what each part does: migrations/V10__ingest_function.sql, changed by
/// V12__daily_aggregates_and_plain_inserts.sql and V13__ingest_as_plain_statements.sql). It
/// resolves the key, admits the request (rate limit, metrics limit) by one `UPDATE` of the
/// device row, stores the batch (by a plain `INSERT` when the device's hourly aggregates show
/// that nothing stored lies within its span, with `ON CONFLICT DO NOTHING` otherwise), adds
/// what it stored to the hourly aggregates and marks the device online; only when a reading was
/// not stored does it compare values, to tell duplicates from conflicts. A function rather than
/// the statements themselves because PL/pgSQL keeps its statements' plans on the server
/// connection: behind a pooler that does not reset connections (Neon's) they are not parsed and
/// planned again on every request.
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times, `$5` rate, `$6` burst, `$7` metrics
/// limit, `$8` the batch's distinct metrics, `$9`/`$10` its earliest and latest time, `$11` for
/// each reading the position of the batch's first reading with the same identity (NULL when
/// all differ; sent anyway, after a unique violation, to make the function take its careful
/// path). Not admitted → `device_id` NULL (nothing written), `known` says whether the key
/// names a device, and for one that does, `tokens` (its bucket refilled to now, NULL when the
/// rate limit is off) and `device_metrics` say why. Safe to repeat: a repeat finds its own readings stored and calls them duplicates
/// (and takes another token).
pub const INGEST: Sql = Sql::idempotent(
    "SELECT device_id, known, tokens, device_metrics, accepted, duplicates, conflicts, unknown
     FROM ingest_readings($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
);

/// What the ingest statement did, by input position (1-based `ord`s).
pub struct Stored {
    pub device_id: Uuid,
    pub accepted: i64,
    pub duplicates: i64,
    pub conflicts: Vec<i64>,
    /// Not stored now, and gone by the time they were compared: their device was deleted
    /// meanwhile.
    pub unknown: Vec<i64>,
}

/// What the ingest statement answered for a key that names a device.
pub enum Ingested {
    Stored(Stored),
    /// Nothing written: the device is out of tokens for `retry_after` seconds.
    RateLimited {
        retry_after: u32,
    },
    /// Nothing written: this metric, new to the device, is past its limit (the first such, in
    /// batch order).
    TooManyMetrics {
        metric: String,
    },
}

/// Admits and stores the batch in one statement; `None` when no valid key is this one. For a
/// refused request (rate or metrics limit) the same statement says why.
pub async fn ingest(
    db: &Db,
    key_hash: &[u8; 32],
    readings: &[Reading],
    limits: &Limits,
) -> Result<Option<Ingested>, DbError> {
    let key_hash = key_hash.as_slice();
    let metrics: Vec<&str> = readings.iter().map(|r| r.metric.as_str()).collect();
    let values: Vec<Decimal> = readings.iter().map(|r| r.value).collect();
    let times: Vec<DateTime<Utc>> = readings.iter().map(|r| r.recorded_at).collect();
    let earliest = times.iter().min();
    let latest = times.iter().max();
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&str> = metrics
        .iter()
        .copied()
        .filter(|m| seen.insert(*m))
        .collect();
    // For each reading, the position of the first with its identity; most batches hold each
    // identity once and send none.
    let mut firsts = std::collections::HashMap::with_capacity(readings.len());
    let first_ords: Vec<i64> = (1..)
        .zip(readings)
        .map(|(ord, r)| {
            *firsts
                .entry((r.metric.as_str(), r.recorded_at))
                .or_insert(ord)
        })
        .collect();
    let mut sent_ords = (firsts.len() < readings.len()).then_some(first_ords.as_slice());
    let row = loop {
        let params: &[Param<'_>] = &[
            (&key_hash, Type::BYTEA),
            (&metrics, Type::TEXT_ARRAY),
            (&values, Type::NUMERIC_ARRAY),
            (&times, Type::TIMESTAMPTZ_ARRAY),
            (&limits.ingest_rate_per_device, Type::FLOAT8),
            (&limits.ingest_burst_per_device, Type::FLOAT8),
            (&limits.metrics_per_device, Type::INT4),
            (&distinct, Type::TEXT_ARRAY),
            (&earliest, Type::TIMESTAMPTZ),
            (&latest, Type::TIMESTAMPTZ),
            (&sent_ords, Type::INT8_ARRAY),
        ];
        match db.query_typed_one(&INGEST, params).await {
            // The plain INSERT met a stored reading the hourly aggregates did not show (one
            // stored by hand): nothing was written. Once more, with the positions sent, which
            // makes the function take its careful path.
            Err(e) if sent_ords.is_none() && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                sent_ords = Some(first_ords.as_slice());
            }
            answer => break answer?,
        }
    };
    if let Some(device_id) = row.try_get("device_id")? {
        return Ok(Some(Ingested::Stored(Stored {
            device_id,
            accepted: row.try_get("accepted")?,
            duplicates: row.try_get("duplicates")?,
            conflicts: row.try_get("conflicts")?,
            unknown: row.try_get("unknown")?,
        })));
    }
    if !row.try_get::<_, Option<bool>>("known")?.unwrap_or(false) {
        return Ok(None);
    }
    // Refused: the function said why, from the row as it is now.
    let tokens: Option<f64> = row.try_get("tokens")?;
    if let Some(tokens) = tokens.filter(|t| *t < 1.0) {
        let wait = ((1.0 - tokens) / limits.ingest_rate_per_device).ceil();
        return Ok(Some(Ingested::RateLimited {
            retry_after: (wait as u32).max(1),
        }));
    }
    let known: Vec<String> = row.try_get("device_metrics")?;
    let new: Vec<&str> = distinct
        .into_iter()
        .filter(|m| !known.iter().any(|k| k == m))
        .collect();
    let room =
        usize::try_from(i64::from(limits.metrics_per_device) - known.len() as i64).unwrap_or(0);
    Ok(Some(match new.get(room) {
        Some(metric) => Ingested::TooManyMetrics {
            metric: (*metric).to_owned(),
        },
        // Refused, yet admissible as the row was read a moment later: another request changed
        // it in between.
        None => Ingested::RateLimited { retry_after: 1 },
    }))
}
