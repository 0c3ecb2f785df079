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
/// V12__daily_aggregates_and_plain_inserts.sql, V13__ingest_as_plain_statements.sql and
/// V15__ingest_single_reading_without_probe.sql). It resolves the key, admits the request (rate
/// limit, metrics limit) by one `UPDATE` of the device row, stores the batch (a single reading
/// with `ON CONFLICT DO NOTHING`; a batch by a plain `INSERT` when the device's hourly
/// aggregates show that nothing stored lies within its span, with `ON CONFLICT DO NOTHING`
/// otherwise), adds what it stored to the hourly aggregates and marks the device online; only
/// when a reading was not stored does it compare values, to tell duplicates from conflicts. A
/// function rather than the statements themselves because PL/pgSQL keeps its statements' plans
/// on the server connection: behind a pooler that does not reset connections (Neon's) they are
/// not parsed and planned again on every request.
///
/// `$1` key hash, `$2` metrics, `$3` values, `$4` times, `$5` rate, `$6` burst, `$7` metrics
/// limit, `$8` the batch's distinct metrics, `$9`/`$10` its earliest and latest time, `$11` for
/// each reading the position of the batch's first reading with the same identity (NULL when
/// all differ; sent anyway, after a unique violation, to make the function take its careful
/// path), `$12`–`$21` the batch's [`Hours`] (NULL for a single reading, and for a batch whose
/// sums only the server can add up, which then takes the careful path). Not admitted →
/// `device_id` NULL (nothing written), `known` says whether the key names a device, and for one
/// that does, `tokens` (its bucket refilled to now, NULL when the rate limit is off) and
/// `device_metrics` say why. Safe to repeat: a repeat finds its own readings stored and calls
/// them duplicates (and takes another token).
pub const INGEST: Sql = Sql::idempotent(
    "SELECT device_id, known, tokens, device_metrics, accepted, duplicates, conflicts, unknown
     FROM ingest_readings($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                          $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
);

/// The batch by (metric, UTC hour), as the plain path adds it to `reading_hours` (`$12`–`$21`):
/// what the server would otherwise aggregate from the batch on every request (0.8 ms of server
/// time for 1000 readings; these take 0.06 ms to upsert). Built only for a batch that holds each
/// (metric, time) once, which is the only kind the plain path stores, all of it or nothing.
#[derive(Debug, Default, PartialEq)]
struct Hours<'a> {
    metrics: Vec<&'a str>,
    hours: Vec<DateTime<Utc>>,
    counts: Vec<i64>,
    sums: Vec<Decimal>,
    mins: Vec<Decimal>,
    maxs: Vec<Decimal>,
    first_ats: Vec<DateTime<Utc>>,
    first_values: Vec<Decimal>,
    last_ats: Vec<DateTime<Utc>>,
    last_values: Vec<Decimal>,
}

/// One (metric, hour) of a batch.
struct Hour {
    count: i64,
    sum: Decimal,
    min: Decimal,
    max: Decimal,
    first: (DateTime<Utc>, Decimal),
    last: (DateTime<Utc>, Decimal),
}

const HOUR_MICROS: i64 = 3_600_000_000;

/// The batch's hours (in key order), or `None` when a sum is not exact in a `Decimal` (more than
/// 28 significant digits; Postgres's `numeric` has no such limit): the server adds those up,
/// on the careful path. Hours are UTC hours, as `date_bin('1 hour', …, '2000-01-03')` bins them.
fn hours(readings: &[Reading]) -> Option<Hours<'_>> {
    let mut by_hour: std::collections::BTreeMap<(&str, i64), Hour> = Default::default();
    for r in readings {
        let at = r.recorded_at;
        let hour = at.timestamp_micros().div_euclid(HOUR_MICROS) * HOUR_MICROS;
        let (metric, value) = (r.metric.as_str(), r.value);
        match by_hour.entry((metric, hour)) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(Hour {
                    count: 1,
                    sum: value,
                    min: value,
                    max: value,
                    first: (at, value),
                    last: (at, value),
                });
            }
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                let h = entry.get_mut();
                let sum = h.sum.checked_add(value)?;
                // Exact only if no digit was rounded off to make the sum fit.
                if sum.scale() != h.sum.scale().max(value.scale()) {
                    return None;
                }
                h.count += 1;
                h.sum = sum;
                h.min = h.min.min(value);
                h.max = h.max.max(value);
                if at < h.first.0 {
                    h.first = (at, value);
                }
                if at > h.last.0 {
                    h.last = (at, value);
                }
            }
        }
    }
    let mut out = Hours::default();
    for ((metric, hour), h) in by_hour {
        out.metrics.push(metric);
        out.hours.push(DateTime::from_timestamp_micros(hour)?);
        out.counts.push(h.count);
        out.sums.push(h.sum);
        out.mins.push(h.min);
        out.maxs.push(h.max);
        out.first_ats.push(h.first.0);
        out.first_values.push(h.first.1);
        out.last_ats.push(h.last.0);
        out.last_values.push(h.last.1);
    }
    Some(out)
}

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
    // A batch that repeats an identity takes the careful path (the positions sent), and so does
    // one sent without its hours (sums a `Decimal` cannot hold); any other the plain one when
    // nothing stored is in its way. A single reading is its own hour: the function adds it.
    let repeats = firsts.len() < readings.len();
    let hours = (readings.len() > 1 && !repeats)
        .then(|| hours(readings))
        .flatten();
    let mut sent_ords = repeats.then_some(first_ords.as_slice());
    let h = hours.as_ref();
    let (hour_metrics, hour_starts, counts) = (
        h.map(|h| &h.metrics),
        h.map(|h| &h.hours),
        h.map(|h| &h.counts),
    );
    let (sums, mins, maxs) = (h.map(|h| &h.sums), h.map(|h| &h.mins), h.map(|h| &h.maxs));
    let (first_ats, first_values) = (h.map(|h| &h.first_ats), h.map(|h| &h.first_values));
    let (last_ats, last_values) = (h.map(|h| &h.last_ats), h.map(|h| &h.last_values));
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
            (&hour_metrics, Type::TEXT_ARRAY),
            (&hour_starts, Type::TIMESTAMPTZ_ARRAY),
            (&counts, Type::INT8_ARRAY),
            (&sums, Type::NUMERIC_ARRAY),
            (&mins, Type::NUMERIC_ARRAY),
            (&maxs, Type::NUMERIC_ARRAY),
            (&first_ats, Type::TIMESTAMPTZ_ARRAY),
            (&first_values, Type::NUMERIC_ARRAY),
            (&last_ats, Type::TIMESTAMPTZ_ARRAY),
            (&last_values, Type::NUMERIC_ARRAY),
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use shared::domain::Metric;

    use super::*;

    fn reading(metric: &str, value: &str, at: &str) -> Reading {
        Reading {
            metric: Metric::parse(metric).unwrap(),
            value: Decimal::from_str(value).unwrap(),
            recorded_at: DateTime::parse_from_rfc3339(at).unwrap().to_utc(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    #[test]
    fn a_batch_is_summed_by_metric_and_utc_hour() {
        let batch = [
            reading("t", "2.50", "2026-11-26T10:59:59.999999Z"),
            reading("t", "-1", "2026-11-26T10:00:00Z"),
            reading("h", "40", "2026-11-26T10:30:00Z"),
            reading("t", "7", "2026-11-26T11:00:00Z"),
            reading("t", "0.125", "2026-11-26T10:15:00+05:00"),
        ];
        let hours = hours(&batch).unwrap();
        assert_eq!(hours.metrics, ["h", "t", "t", "t"]);
        assert_eq!(
            hours.hours,
            [
                at("2026-11-26T10:00:00Z"),
                at("2026-11-26T05:00:00Z"),
                at("2026-11-26T10:00:00Z"),
                at("2026-11-26T11:00:00Z")
            ]
        );
        assert_eq!(hours.counts, [1, 1, 2, 1]);
        assert_eq!(hours.sums, [dec("40"), dec("0.125"), dec("1.50"), dec("7")]);
        assert_eq!(
            hours.sums[2].to_string(),
            "1.50",
            "the scale of the inputs kept"
        );
        assert_eq!(hours.mins[2], dec("-1"));
        assert_eq!(hours.maxs[2], dec("2.5"));
        assert_eq!(
            (hours.first_ats[2], hours.first_values[2]),
            (at("2026-11-26T10:00:00Z"), dec("-1"))
        );
        assert_eq!(
            (hours.last_ats[2], hours.last_values[2]),
            (at("2026-11-26T10:59:59.999999Z"), dec("2.50"))
        );
    }

    #[test]
    fn sums_a_decimal_cannot_hold_exactly_are_left_to_the_server() {
        let huge = "70000000000000000000000000000";
        let overflow = [
            reading("t", huge, "2026-11-26T10:00:00Z"),
            reading("t", huge, "2026-11-26T10:00:01Z"),
        ];
        assert_eq!(hours(&overflow), None);
        let rounded = [
            reading("t", "10000000000000000000000000000", "2026-11-26T10:00:00Z"),
            reading("t", "0.1", "2026-11-26T10:00:01Z"),
        ];
        assert_eq!(hours(&rounded), None);
        // In different hours nothing is added up.
        let apart = [
            reading("t", huge, "2026-11-26T10:00:00Z"),
            reading("t", huge, "2026-11-26T11:00:00Z"),
        ];
        assert_eq!(hours(&apart).unwrap().sums, [dec(huge), dec(huge)]);
    }
}
