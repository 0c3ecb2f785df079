//! `POST /v1/ingest`: devices push readings (function `ingest`), the hot path.
//!
//! The device key is checked for shape, the whole batch is parsed and validated, and only then
//! does one SQL statement resolve the key, admit the request (rate and metrics limits), store the
//! readings, tell duplicates from conflicts and mark the device online.

pub mod sql;

use std::borrow::Cow;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shared::auth::bearer;
use shared::config::{Config, Limits};
use shared::db::{Db, DbError};
use shared::domain::{DecimalValue, DeviceKey, Metric, whole_micros};
use shared::http::{self, ApiError, Response};
use uuid::Uuid;

use crate::sql::Ingested;

/// At most 1 MiB of body and 1000 readings per request.
pub const BODY_LIMIT: usize = 1024 * 1024;
pub const MAX_READINGS: usize = 1000;
/// A reading may be stamped at most this far ahead of the server clock.
pub const MAX_FUTURE: TimeDelta = TimeDelta::minutes(5);

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub limits: Limits,
    pub retention_days: i32,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, DbError> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
            limits: config.limits,
            retention_days: config.retention_days,
        })
    }
}

/// The one route of this function.
pub const ROUTES: &http::Routes = &[("/v1/ingest", "POST")];

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(state: &State, req: Request) -> Response {
    http::respond(ingest(state, &req).await)
}

/// One reading, validated; `recorded_at` is whole microseconds (what Postgres keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub metric: Metric,
    pub value: Decimal,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub accepted: i64,
    pub duplicates: i64,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub index: usize,
    pub metric: String,
    pub recorded_at: String,
}

async fn ingest(state: &State, req: &Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    http::route(ROUTES, req)?;
    let key = req
        .headers()
        .get(lambda_http::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .and_then(DeviceKey::parse)
        .ok_or_else(ApiError::unauthorized)?;
    http::require_json(req)?;
    let body = http::body_bytes(req);
    if body.len() > BODY_LIMIT {
        return Err(ApiError::payload_too_large(BODY_LIMIT));
    }
    let readings = parse_batch(body, Utc::now(), state.retention_days)?;
    let (device_id, outcome) = store(state, &key, &readings).await?;
    tracing::info!(
        %device_id,
        readings = readings.len(),
        accepted = outcome.accepted,
        duplicates = outcome.duplicates,
        conflicts = outcome.conflicts.len(),
        duration_ms = started.elapsed().as_millis() as u64,
        "ingest"
    );
    Ok(http::json(StatusCode::OK, &outcome))
}

/// The common case, read in one pass: each reading an object with a string `metric`, a `value`
/// and an optional `recorded_at`, nothing else. A body of any other shape is read again by the
/// careful pass below ([`Batch`], [`RawReading`]), which names the first bad field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainBatch<'a> {
    #[serde(borrow)]
    readings: Vec<PlainReading<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainReading<'a> {
    /// Borrowed from the body unless it holds an escape.
    #[serde(borrow)]
    metric: Cow<'a, str>,
    /// `null` reads as absent (here and in the careful pass), and is refused as such.
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    /// `null` reads as absent, as in the careful pass.
    #[serde(borrow, default)]
    recorded_at: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow, default)]
    readings: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReading<'a> {
    #[serde(borrow, default)]
    metric: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    /// `null` reads as absent: the arrival time.
    #[serde(borrow, default)]
    recorded_at: Option<&'a RawValue>,
}

/// Parses and validates the whole batch; the first bad reading is the `422`, naming its field.
/// `now` is when the request arrived: the default `recorded_at`, and the clock for "future" and
/// for the retention horizon (`retention_days` before it: older readings would be dropped soon).
pub fn parse_batch(
    body: &[u8],
    now: DateTime<Utc>,
    retention_days: i32,
) -> Result<Vec<Reading>, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let now = whole_micros(now);
    let horizon = now - TimeDelta::days(retention_days.into());
    if let Ok(batch) = serde_json::from_str::<PlainBatch>(text)
        && (1..=MAX_READINGS).contains(&batch.readings.len())
    {
        return batch
            .readings
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let field = Fields(index);
                let metric = Metric::parse(&r.metric).map_err(|e| e.at(field.of("metric")))?;
                validated(field, metric, r.value, r.recorded_at, now, horizon)
            })
            .collect();
    }
    parse_carefully(text, now, horizon)
}

/// The careful pass: each level read on its own, so that the first bad field is named.
fn parse_carefully(
    text: &str,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Result<Vec<Reading>, ApiError> {
    let batch: Batch = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid batch: {e}")))?;
    let raw = batch
        .readings
        .ok_or_else(|| ApiError::validation("readings", "readings is required"))?;
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::validation("readings", "readings must be an array"))?;
    if items.is_empty() || items.len() > MAX_READINGS {
        return Err(ApiError::validation(
            "readings",
            "a batch holds 1 to 1000 readings",
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, raw)| parse_reading(raw, index, now, horizon))
        .collect()
}

/// The names of reading `index`'s fields in a `422`.
#[derive(Clone, Copy)]
struct Fields(usize);

impl Fields {
    fn of(self, name: &str) -> String {
        format!("readings[{}].{name}", self.0)
    }
}

fn parse_reading(
    raw: &RawValue,
    index: usize,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Result<Reading, ApiError> {
    let field = Fields(index);
    let reading: RawReading = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::validation(
            format!("readings[{index}]"),
            "a reading is an object with metric, value and an optional recorded_at",
        )
    })?;
    let metric = match reading
        .metric
        .map(|m| serde_json::from_str::<String>(m.get()))
    {
        Some(Ok(text)) => Metric::parse(&text).map_err(|e| e.at(field.of("metric")))?,
        Some(Err(_)) => {
            return Err(ApiError::validation(
                field.of("metric"),
                "metric must be a string",
            ));
        }
        None => {
            return Err(ApiError::validation(
                field.of("metric"),
                "metric is required",
            ));
        }
    };
    validated(
        field,
        metric,
        reading.value,
        reading.recorded_at,
        now,
        horizon,
    )
}

/// The rest of a reading, its metric parsed: its value and time, checked against `now` and the
/// retention `horizon`.
fn validated(
    field: Fields,
    metric: Metric,
    value: Option<&RawValue>,
    recorded_at: Option<&RawValue>,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Result<Reading, ApiError> {
    let value =
        value.ok_or_else(|| ApiError::validation(field.of("value"), "value is required"))?;
    let value = DecimalValue::from_json(value)
        .map_err(|e| ApiError::validation(field.of("value"), format!("value {e}")))?
        .get();
    let recorded_at = match recorded_at {
        None => now,
        Some(raw) => parse_time(raw)
            .map_err(|message| ApiError::validation(field.of("recorded_at"), message))?,
    };
    if recorded_at > now + MAX_FUTURE {
        return Err(ApiError::validation(
            field.of("recorded_at"),
            "recorded_at is more than 5 minutes in the future",
        ));
    }
    if recorded_at < horizon {
        return Err(ApiError::validation(
            field.of("recorded_at"),
            "recorded_at is older than the retention period",
        ));
    }
    Ok(Reading {
        metric,
        value,
        recorded_at,
    })
}

/// RFC 3339 with an offset, or whole Unix milliseconds (not before 1970).
fn parse_time(raw: &RawValue) -> Result<DateTime<Utc>, &'static str> {
    const MESSAGE: &str = "recorded_at is an RFC 3339 time with offset or whole Unix milliseconds";
    let text = raw.get();
    let parsed = if text.starts_with('"') {
        let s: String = serde_json::from_str(text).map_err(|_| MESSAGE)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| MESSAGE)?
    } else {
        let ms: i64 = text.parse().map_err(|_| MESSAGE)?;
        if ms < 0 {
            return Err("recorded_at may not be before 1970");
        }
        DateTime::from_timestamp_millis(ms).ok_or(MESSAGE)?
    };
    if parsed.timestamp() < 0 {
        return Err("recorded_at may not be before 1970");
    }
    Ok(whole_micros(parsed))
}

/// One statement; an unknown or expired key is `401`, a device out of tokens `429`, a new metric
/// past the device's limit `422`: nothing written for any of them.
async fn store(
    state: &State,
    key: &DeviceKey,
    readings: &[Reading],
) -> Result<(Uuid, Outcome), ApiError> {
    let db = &state.db;
    let limits = &state.limits;
    let stored = match sql::ingest(db, &key.hash(), readings, limits).await? {
        None => return Err(ApiError::unauthorized()),
        Some(Ingested::RateLimited { retry_after }) => {
            return Err(ApiError::rate_limited(retry_after));
        }
        Some(Ingested::TooManyMetrics { metric }) => {
            let index = readings
                .iter()
                .position(|r| r.metric.as_str() == metric)
                .unwrap_or_default();
            return Err(ApiError::validation(
                format!("readings[{index}].metric"),
                format!(
                    "a device may send at most {} distinct metrics; this one would be one more",
                    limits.metrics_per_device
                ),
            ));
        }
        Some(Ingested::Stored(stored)) => stored,
    };
    let mut outcome = Outcome {
        accepted: stored.accepted,
        duplicates: stored.duplicates,
        conflicts: Vec::new(),
    };
    if !stored.unknown.is_empty() {
        // Not stored now and gone when compared: the device was deleted meanwhile.
        let device_id = stored.device_id;
        tracing::warn!(%device_id, missing = stored.unknown.len(), "readings vanished during ingest");
        outcome.duplicates += stored.unknown.len() as i64;
    }
    outcome.conflicts = stored
        .conflicts
        .into_iter()
        .filter_map(|ord| usize::try_from(ord - 1).ok())
        .filter_map(|index| {
            readings.get(index).map(|r| Conflict {
                index,
                metric: r.metric.as_str().to_owned(),
                recorded_at: r.recorded_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            })
        })
        .collect();
    Ok((stored.device_id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// `None` when accepted, else (status, field).
    fn refusal(body: &str) -> Option<(u16, Option<String>)> {
        parse_batch(body.as_bytes(), now(), 400)
            .err()
            .map(|e| (e.status().as_u16(), e.field().map(str::to_owned)))
    }

    #[test]
    fn parses_numbers_strings_and_both_time_forms() {
        let body = r#"{"readings": [
            {"metric": "temperature", "value": 21.5, "recorded_at": "2026-11-26T10:00:00Z"},
            {"metric": "humidity", "value": "40.125", "recorded_at": 1795687200000},
            {"metric": "pressure", "value": 1e3, "recorded_at": "2026-11-26T11:00:00.123456789+01:00"},
            {"metric": "battery", "value": "-0.000001"}
        ]}"#;
        let readings = parse_batch(body.as_bytes(), now(), 400).unwrap();
        assert_eq!(readings.len(), 4);
        assert_eq!(readings[0].value.to_string(), "21.5");
        assert_eq!(
            readings[1].recorded_at.to_rfc3339(),
            "2026-11-26T10:00:00+00:00"
        );
        assert_eq!(readings[2].value.to_string(), "1000");
        assert_eq!(
            readings[2]
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "2026-11-26T10:00:00.123456Z",
            "UTC, whole microseconds"
        );
        assert_eq!(
            readings[3].recorded_at,
            now(),
            "defaults to the arrival time"
        );
    }

    #[test]
    fn the_first_bad_reading_is_named() {
        let cases = [
            (
                r#"{"readings": [{"metric": "ok", "value": 1}, {"metric": "bad one", "value": 1}]}"#,
                "readings[1].metric",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": true}]}"#,
                "readings[0].value",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": null}]}"#,
                "readings[0].value",
            ),
            (r#"{"readings": [{"metric": "t"}]}"#, "readings[0].value"),
            (r#"{"readings": [{"value": 1}]}"#, "readings[0].metric"),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": "yesterday"}]}"#,
                "readings[0].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": "2026-11-26T10:00:00"}]}"#,
                "readings[0].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": 1.5}]}"#,
                "readings[0].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": -1}]}"#,
                "readings[0].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": "2026-11-26T10:06:00.6Z"}]}"#,
                "readings[0].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 2}, {"metric": "t", "value": 1, "recorded_at": "2025-10-22T10:00:00.4Z"}]}"#,
                "readings[1].recorded_at",
            ),
            (
                r#"{"readings": [{"metric": "t", "value": 1, "unit": "C"}]}"#,
                "readings[0]",
            ),
            (r#"{"readings": [7]}"#, "readings[0]"),
            (r#"{"readings": []}"#, "readings"),
            (r#"{"readings": {}}"#, "readings"),
            (r#"{}"#, "readings"),
        ];
        for (body, field) in cases {
            assert_eq!(refusal(body), Some((422, Some(field.to_owned()))), "{body}");
        }
        // Exactly five minutes ahead is still fine, and exactly 400 days back.
        assert!(refusal(r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": "2026-11-26T10:05:00.5Z"}]}"#).is_none());
        assert!(refusal(r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": "2025-10-22T10:00:00.5Z"}]}"#).is_none());
    }

    /// The one-pass read accepts only what the careful pass accepts, with the same readings, and
    /// leaves every refusal to it.
    #[test]
    fn both_passes_read_alike() {
        let bodies = [
            r#"{"readings": [{"metric": "t", "value": 1}, {"metric": "bad one", "value": 1}]}"#,
            r#"{"readings": [{"metric": "t", "value": null}]}"#,
            r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": null}]}"#,
            r#"{"readings": [{"metric": "t\u0041", "value": "4\u0030.5"}]}"#,
            r#"{"readings": [{"metric": "t", "value": "1e3"}, {"metric": "t", "value": -0.5e-2}]}"#,
            r#"{"readings": [{"metric": "t", "value": "01"}]}"#,
            r#"{"readings": [{"metric": "t", "value": 1, "recorded_at": 1795687200000}]}"#,
            r#"{"readings": [{"metric": "t", "value": 1, "metric": "u"}]}"#,
            r#"{"readings": [{"metric": 5, "value": 1}]}"#,
            r#"{"readings": [{"metric": "t", "value": 1}], "readings": []}"#,
        ];
        let horizon = now() - TimeDelta::days(400);
        for body in bodies {
            assert_eq!(
                parse_batch(body.as_bytes(), now(), 400),
                parse_carefully(body, now(), horizon),
                "{body}"
            );
        }
    }

    #[test]
    fn the_shape_of_the_body_is_400() {
        for body in [
            "",
            "[]",
            "not json",
            r#"{"readings": [], "extra": 1}"#,
            "{\"readings\": [}",
        ] {
            assert_eq!(refusal(body), Some((400, None)), "{body}");
        }
    }
}
