//! Time series of one device (function `rollups`): `GET /v1/devices/{id}/rollups`, `/readings`
//! and `/latest`, for the device's owner.

pub mod sql;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use lambda_http::Request;
use lambda_http::http::StatusCode;
use lambda_http::http::header::{self, HeaderValue};
use serde::Serialize;
use shared::auth::{Authenticator, UserId};
use shared::config::Config;
use shared::db::Db;
use shared::domain::{Metric, in_rfc3339_range, whole_micros};
use shared::http::{self, ApiError, Response};
use shared::paging::{self, Cursor, Page, PageRequest};
use uuid::Uuid;

/// More buckets than this in one answer is `422`.
pub const MAX_BUCKETS: i64 = 10_000;
/// When `from` is not given, it is `to` minus this.
pub const DEFAULT_RANGE: TimeDelta = TimeDelta::hours(24);

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub auth: Authenticator,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            // The replica when there is one: everything here reads.
            db: Db::new(config.read_url())?,
            auth: Authenticator::from_config(config)?,
        })
    }
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(state: &State, req: Request) -> Response {
    http::respond(route(state, &req).await)
}

/// The routes of this function.
pub const ROUTES: &http::Routes = &[
    ("/v1/devices/{id}/rollups", "GET"),
    ("/v1/devices/{id}/readings", "GET"),
    ("/v1/devices/{id}/latest", "GET"),
];

async fn route(state: &State, req: &Request) -> Result<Response, ApiError> {
    let (route, params) = http::route(ROUTES, req)?;
    let caller = state.auth.authenticate_reader(&state.db, req).await?;
    let device = Uuid::parse_str(&params[0]).map_err(|_| ApiError::not_found())?;
    match route {
        "/v1/devices/{id}/rollups" => rollups(&state.db, &caller, device, req).await,
        "/v1/devices/{id}/readings" => readings(&state.db, &caller, device, req).await,
        "/v1/devices/{id}/latest" => latest(&state.db, &caller, device).await,
        _ => Err(ApiError::internal()),
    }
}

/// The bucket sizes, as the query parameter names them. Buckets are aligned to UTC: days at
/// midnight, weeks at Monday midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    M1,
    M5,
    M15,
    H1,
    H6,
    D1,
    W1,
}

/// 1970-01-05T00:00Z, a Monday, in microseconds: the origin every bucket is aligned to (the
/// smaller sizes divide a day, so for them it is the same as midnight of any day).
const MONDAY_MICROS: i64 = 4 * 86_400 * 1_000_000;

impl Bucket {
    pub const ALL: [Bucket; 7] = [
        Self::M1,
        Self::M5,
        Self::M15,
        Self::H1,
        Self::H6,
        Self::D1,
        Self::W1,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::M1 => "1m",
            Self::M5 => "5m",
            Self::M15 => "15m",
            Self::H1 => "1h",
            Self::H6 => "6h",
            Self::D1 => "1d",
            Self::W1 => "1w",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::M1 => 60,
            Self::M5 => 300,
            Self::M15 => 900,
            Self::H1 => 3600,
            Self::H6 => 6 * 3600,
            Self::D1 => 86_400,
            Self::W1 => 7 * 86_400,
        }
    }

    /// The start of the UTC-aligned bucket holding `t`.
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let size = self.seconds() * 1_000_000;
        let micros = t.timestamp_micros();
        DateTime::from_timestamp_micros(micros - (micros - MONDAY_MICROS).rem_euclid(size))
            .unwrap_or(t)
    }

    /// How many buckets [from, to) touches.
    pub fn count(self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let size = self.seconds() * 1_000_000;
        let last = (to.timestamp_micros() - 1 - MONDAY_MICROS).div_euclid(size);
        let first = (from.timestamp_micros() - MONDAY_MICROS).div_euclid(size);
        last - first + 1
    }

    /// Answered from the aggregates (hourly; daily for days and weeks): a whole number of hours.
    pub fn from_hours(self) -> bool {
        self.seconds() % 3600 == 0
    }
}

/// A time in a query parameter: RFC 3339 with offset (a `+` that arrived as a space is
/// forgiven) or whole Unix milliseconds. Anything else is `400`; a time outside the years
/// 0000 to 9999 is `422`.
fn time_param(req: &Request, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(text) = http::query_param(req, name) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(&text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .map(|t| t.to_utc())
        .ok()
        .or_else(|| {
            text.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
        });
    let parsed = parsed.map(whole_micros).ok_or_else(|| {
        ApiError::bad_query(
            name,
            format!("{name} is an RFC 3339 time with offset or Unix milliseconds"),
        )
    })?;
    if !in_rfc3339_range(parsed) {
        return Err(ApiError::validation(
            name,
            format!("{name} must be in the years 0000 to 9999"),
        ));
    }
    Ok(Some(parsed))
}

/// `from`/`to` with their defaults (`to` now, `from` 24 h before); `from ≥ to` is `422`.
fn range(req: &Request) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = time_param(req, "to")?.unwrap_or_else(|| whole_micros(Utc::now()));
    let from = time_param(req, "from")?.unwrap_or(to - DEFAULT_RANGE);
    if from >= to {
        return Err(ApiError::validation("from", "from must be before to"));
    }
    Ok((from, to))
}

fn metric_param(req: &Request) -> Result<Option<Metric>, ApiError> {
    http::query_param(req, "metric")
        .map(|m| Metric::parse(&m).map_err(|e| e.at("metric")))
        .transpose()
}

#[derive(Serialize)]
pub struct Point {
    pub t: DateTime<Utc>,
    pub count: i64,
    pub min: String,
    pub max: String,
    pub avg: String,
    pub sum: String,
    pub first: String,
    pub last: String,
}

#[derive(Serialize)]
struct Rollup {
    device_id: Uuid,
    metric: String,
    bucket: &'static str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    points: Vec<Point>,
}

async fn rollups(
    db: &Db,
    caller: &UserId,
    device: Uuid,
    req: &Request,
) -> Result<Response, ApiError> {
    let metric =
        metric_param(req)?.ok_or_else(|| ApiError::validation("metric", "metric is required"))?;
    let bucket = match http::query_param(req, "bucket") {
        None => Bucket::H1,
        Some(text) => Bucket::parse(&text).ok_or_else(|| {
            ApiError::validation("bucket", "bucket is one of 1m, 5m, 15m, 1h, 6h, 1d, 1w")
        })?,
    };
    let (from, to) = range(req)?;
    if bucket.count(from, to) > MAX_BUCKETS {
        return Err(ApiError::validation(
            "bucket",
            "the range needs more than 10000 buckets: use a larger bucket or a shorter range",
        ));
    }
    let points = sql::rollup(db, caller, device, &metric, bucket, (from, to))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let rollup = Rollup {
        device_id: device,
        metric: metric.into_string(),
        bucket: bucket.name(),
        from,
        to,
        points,
    };
    Ok(http::json(StatusCode::OK, &rollup))
}

#[derive(Serialize)]
pub struct Reading {
    pub metric: String,
    pub value: String,
    pub recorded_at: DateTime<Utc>,
}

/// The position after one reading in the oldest-first walk: its time and metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingCursor {
    pub at: DateTime<Utc>,
    pub metric: String,
}

impl Cursor for ReadingCursor {
    fn encode(&self) -> String {
        let mut bytes = self.at.timestamp_micros().to_be_bytes().to_vec();
        bytes.extend_from_slice(self.metric.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (micros, metric) = bytes.split_at_checked(8)?;
        // Only a metric this API could have stored (a forged one may hold NUL, which Postgres
        // refuses: that would be a 500).
        let metric = Metric::parse(std::str::from_utf8(metric).ok()?).ok()?;
        Some(Self {
            at: paging::micros_time(micros)?,
            metric: metric.into_string(),
        })
    }
}

async fn readings(
    db: &Db,
    caller: &UserId,
    device: Uuid,
    req: &Request,
) -> Result<Response, ApiError> {
    let csv = wants_csv(req)?;
    let metric = metric_param(req)?;
    let page = if csv {
        PageRequest::from_request(req, CSV_PAGE, CSV_PAGE_MAX)?
    } else {
        PageRequest::from_request(req, 100, 1000)?
    };
    let (from, to) = range(req)?;
    let query = sql::ReadingsQuery { metric, from, to };
    let readings = sql::readings(db, caller, device, &query, &page)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let limit = page.limit;
    let page = Page::new(readings, limit, |r: &Reading| ReadingCursor {
        at: r.recorded_at,
        metric: r.metric.clone(),
    });
    let mut response = if csv {
        csv_page(req.uri().path(), &query, limit, &page)
    } else {
        http::json(StatusCode::OK, &page)
    };
    // The answer depends on Accept: caches must key on it.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

/// A CSV page holds up to this many readings by default, and at most `CSV_PAGE_MAX` (a reading
/// is at most about 160 bytes of CSV, so a page stays far below Lambda's 6 MB answer limit).
pub const CSV_PAGE: i64 = 1_000;
pub const CSV_PAGE_MAX: i64 = 10_000;

/// CSV when `?format=csv`, or without `format` when `Accept` prefers `text/csv` to
/// `application/json` (by q-value, then by order); JSON otherwise.
fn wants_csv(req: &Request) -> Result<bool, ApiError> {
    match http::query_param(req, "format").as_deref() {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(_) => return Err(ApiError::validation("format", "format is csv or json")),
        None => {}
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(false);
    };
    // (q, position) of the best entry naming each type; the higher q, then the earlier, wins.
    let mut csv: Option<(f32, usize)> = None;
    let mut json: Option<(f32, usize)> = None;
    for (position, entry) in accept.split(',').enumerate() {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "text/csv" => &mut csv,
            "application/json" => &mut json,
            _ => continue,
        };
        if slot.is_none_or(|(best, _)| q > best) {
            *slot = Some((q, position));
        }
    }
    Ok(match (csv, json) {
        (Some((q, _)), None) => q > 0.0,
        (Some((cq, cp)), Some((jq, jp))) => cq > 0.0 && (cq > jq || (cq == jq && cp < jp)),
        _ => false,
    })
}

/// `metric,value,recorded_at`, a header line first, lines ended by CRLF (RFC 4180). No field
/// needs quoting: metrics are `[A-Za-z0-9_.:/-]`, values decimals, times RFC 3339. The next
/// page, if any, is in `Link: <…>; rel="next"`: the same query with `from`/`to` pinned (so a
/// default `to` of "now" does not move between pages), `limit`, `format=csv` and the cursor.
fn csv_page(path: &str, query: &sql::ReadingsQuery, limit: i64, page: &Page<Reading>) -> Response {
    let mut text = String::with_capacity(32 + page.items.len() * 64);
    text.push_str("metric,value,recorded_at\r\n");
    for reading in &page.items {
        text.push_str(&reading.metric);
        text.push(',');
        text.push_str(&reading.value);
        text.push(',');
        text.push_str(&api_time(reading.recorded_at));
        text.push_str("\r\n");
    }
    let mut response = lambda_http::Response::new(lambda_http::Body::Text(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(cursor) = &page.next_cursor {
        let metric = query
            .metric
            .as_ref()
            .map(|m| format!("metric={}&", m.as_str()))
            .unwrap_or_default();
        let link = format!(
            "<{path}?{metric}from={}&to={}&limit={limit}&format=csv&cursor={cursor}>; rel=\"next\"",
            api_time(query.from),
            api_time(query.to),
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// A time as every answer writes it: RFC 3339 UTC, `Z`, up to microseconds.
fn api_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

async fn latest(db: &Db, caller: &UserId, device: Uuid) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Latest {
        metrics: Vec<Reading>,
    }
    let metrics = sql::latest(db, caller, device)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &Latest { metrics }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn buckets_are_utc_aligned() {
        assert_eq!(
            Bucket::H6.start_of(t("2026-11-26T13:59:59Z")),
            t("2026-11-26T12:00:00Z")
        );
        assert_eq!(
            Bucket::D1.start_of(t("2026-11-26T23:59:59.999999Z")),
            t("2026-11-26T00:00:00Z")
        );
        assert_eq!(
            Bucket::M15.start_of(t("2026-11-26T10:15:00Z")),
            t("2026-11-26T10:15:00Z")
        );
        assert_eq!(
            Bucket::M1.start_of(t("1969-12-31T23:59:30Z")),
            t("1969-12-31T23:59:00Z")
        );
        // Weeks start on Monday at midnight UTC (2026-11-23 is a Monday).
        assert_eq!(
            Bucket::W1.start_of(t("2026-11-29T23:59:59Z")),
            t("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            Bucket::W1.start_of(t("2026-11-30T00:00:00Z")),
            t("2026-11-30T00:00:00Z")
        );
        assert_eq!(
            Bucket::W1.start_of(t("1970-01-01T00:00:00Z")),
            t("1969-12-29T00:00:00Z")
        );
    }

    #[test]
    fn bucket_counts_include_partial_ends() {
        let from = t("2026-11-26T10:30:00Z");
        assert_eq!(Bucket::H1.count(from, t("2026-11-26T11:00:00Z")), 1);
        assert_eq!(Bucket::H1.count(from, t("2026-11-26T11:00:00.000001Z")), 2);
        assert_eq!(
            Bucket::M1.count(t("2026-11-26T00:00:00Z"), t("2026-11-26T00:00:00.000001Z")),
            1
        );
        assert_eq!(
            Bucket::M1.count(t("2026-11-19T00:00:00Z"), t("2026-11-26T00:00:00Z")),
            10_080
        );
        // Sunday to Tuesday touches two weeks.
        assert_eq!(
            Bucket::W1.count(t("2026-11-29T00:00:00Z"), t("2026-12-01T00:00:00Z")),
            2
        );
    }

    #[test]
    fn bucket_names() {
        for bucket in Bucket::ALL {
            assert_eq!(Bucket::parse(bucket.name()), Some(bucket));
        }
        assert_eq!(Bucket::parse("2h"), None);
    }

    #[test]
    fn reading_cursors_round_trip() {
        let cursor = ReadingCursor {
            at: t("2026-11-26T10:00:00.123456Z"),
            metric: "env/temp:c".into(),
        };
        let back = ReadingCursor::decode(&cursor.encode()).unwrap();
        assert_eq!((back.at, back.metric.as_str()), (cursor.at, "env/temp:c"));
        assert!(ReadingCursor::decode("short").is_none());
        assert!(ReadingCursor::decode("!!").is_none());
        let nul = ReadingCursor {
            at: cursor.at,
            metric: "a\0b".into(),
        };
        assert!(
            ReadingCursor::decode(&nul.encode()).is_none(),
            "NUL is no metric"
        );
    }
}
