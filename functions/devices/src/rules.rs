//! `/v1/devices/{id}/rules` and `/v1/devices/{id}/rules/{rule_id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use shared::domain::{Comparator, DecimalValue, ForSeconds, Metric};
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::{BODY_LIMIT, Ctx, sql};

#[derive(Serialize)]
pub struct Rule {
    pub id: Uuid,
    pub device_id: Uuid,
    pub metric: String,
    pub comparator: String,
    pub threshold: String,
    pub for_seconds: i32,
    pub clear_threshold: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rule to create, every field checked.
pub struct NewRule {
    pub metric: Metric,
    pub comparator: Comparator,
    pub threshold: Decimal,
    pub for_seconds: ForSeconds,
    pub clear_threshold: Option<Decimal>,
}

/// The fields a `PATCH` changes, each parsed; `None` where the body did not give it.
/// `clear_threshold: Some(None)` removes the hysteresis.
pub struct RuleChange {
    pub metric: Option<Metric>,
    pub comparator: Option<Comparator>,
    pub threshold: Option<Decimal>,
    pub for_seconds: Option<ForSeconds>,
    pub clear_threshold: Option<Option<Decimal>>,
}

/// A rule body as sent: every field optional here, required ones are checked by the route.
/// A field that is present is `Some`, even when it is `null`: `null` is a bad metric, comparator,
/// threshold or for_seconds (`422`), never "not given".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    #[serde(default, deserialize_with = "present")]
    metric: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    comparator: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    threshold: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    for_seconds: Option<Value>,
    /// Absent: `None`; `null`: `Some(None)` (remove the hysteresis); a value: `Some(Some(_))`.
    #[serde(default, deserialize_with = "present")]
    clear_threshold: Option<Option<Box<RawValue>>>,
}

/// A field that is in the body, whatever its value (`Option`'s own deserializer maps `null` to
/// `None`, as if the field were absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl RuleChange {
    /// Checks the fields in the order of the contract; the first bad one is the `422`.
    fn parse(req: &lambda_http::Request) -> Result<Self, ApiError> {
        let body: RuleBody = http::json_body(req, BODY_LIMIT)?;
        let text = |value: &Value, field: &'static str| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::validation(field, format!("{field} must be a string")))
        };
        let metric = match &body.metric {
            Some(v) => Some(Metric::parse(&text(v, "metric")?).map_err(|e| e.at("metric"))?),
            None => None,
        };
        let comparator = match &body.comparator {
            Some(v) => {
                Some(Comparator::parse(&text(v, "comparator")?).map_err(|e| e.at("comparator"))?)
            }
            None => None,
        };
        let decimal = |raw: &RawValue, field: &str| {
            DecimalValue::from_json(raw)
                .map(DecimalValue::get)
                .map_err(|e| e.at(field))
        };
        let threshold = match &body.threshold {
            Some(raw) => Some(decimal(raw, "threshold")?),
            None => None,
        };
        let for_seconds = match &body.for_seconds {
            Some(v) => Some(ForSeconds::parse(v).map_err(|e| e.at("for_seconds"))?),
            None => None,
        };
        let clear_threshold = match &body.clear_threshold {
            Some(Some(raw)) => Some(Some(decimal(raw, "clear_threshold")?)),
            Some(None) => Some(None),
            None => None,
        };
        Ok(Self {
            metric,
            comparator,
            threshold,
            for_seconds,
            clear_threshold,
        })
    }
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::validation(field, format!("{field} is required")))
}

/// The table's CHECK on the merged rule: the clear threshold is on the wrong side.
fn clear_side_error(error: &shared::db::DbError) -> Option<ApiError> {
    (error.code() == Some(&SqlState::CHECK_VIOLATION)).then(|| {
        ApiError::validation(
            "clear_threshold",
            "clear_threshold must be below threshold for gt/gte rules and above it for lt/lte rules",
        )
    })
}

impl NewRule {
    /// A `POST` body: the required fields present, the clear threshold on the right side.
    fn parse(req: &lambda_http::Request) -> Result<Self, ApiError> {
        let fields = RuleChange::parse(req)?;
        let new = Self {
            metric: required(fields.metric, "metric")?,
            comparator: required(fields.comparator, "comparator")?,
            threshold: required(fields.threshold, "threshold")?,
            for_seconds: fields.for_seconds.unwrap_or_default(),
            clear_threshold: fields.clear_threshold.flatten(),
        };
        if let Some(clear) = new.clear_threshold {
            new.comparator
                .check_clear_threshold(new.threshold, clear)
                .map_err(|e| e.at("clear_threshold"))?;
        }
        Ok(new)
    }
}

pub async fn create(ctx: Ctx<'_>, device_id: Uuid) -> Result<Response, ApiError> {
    let new = NewRule::parse(ctx.req)?;
    let rule = sql::create_rule(ctx.db, ctx.caller, device_id, &new)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::CREATED, &rule))
}

/// Newest first, paged like every list.
pub async fn list(ctx: Ctx<'_>, device_id: Uuid) -> Result<Response, ApiError> {
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let rules = sql::list_rules(ctx.db, ctx.caller, device_id, &page)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let page = Page::new(rules, page.limit, |r: &Rule| TimeId {
        at: r.created_at,
        id: r.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

pub async fn get(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    let rule = sql::get_rule(ctx.db, ctx.caller, device_id, rule_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &rule))
}

pub async fn update(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    let change = RuleChange::parse(ctx.req)?;
    let rule = sql::update_rule(ctx.db, ctx.caller, device_id, rule_id, &change)
        .await
        .map_err(|error| clear_side_error(&error).unwrap_or_else(|| error.into()))?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &rule))
}

pub async fn delete(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    if !sql::delete_rule(ctx.db, ctx.caller, device_id, rule_id).await? {
        return Err(ApiError::not_found());
    }
    Ok(http::no_content())
}
