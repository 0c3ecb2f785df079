//! `/v1/devices/{id}/rules` and `/v1/devices/{id}/rules/{rule_id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use shared::db::DbError;
use shared::domain::{Condition, DecimalValue, ForSeconds, Metric};
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::sql::{self, Bounded};
use crate::{BODY_LIMIT, Ctx};

#[derive(Serialize)]
pub struct Rule {
    pub id: Uuid,
    pub device_id: Uuid,
    pub metric: String,
    pub comparator: String,
    /// `None` for an `absent` rule.
    pub threshold: Option<String>,
    pub for_seconds: i32,
    pub clear_threshold: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A rule to create, every field checked: a threshold rule has a threshold (and perhaps a clear
/// threshold on its safe side); an `absent` rule has neither and waits at least 60 s.
pub struct NewRule {
    pub metric: Metric,
    pub comparator: Condition,
    pub threshold: Option<Decimal>,
    pub for_seconds: ForSeconds,
    pub clear_threshold: Option<Decimal>,
}

/// The fields a `PATCH` changes, each parsed; `None` where the body did not give it.
/// `clear_threshold: Some(None)` removes the hysteresis.
pub struct RuleChange {
    pub metric: Option<Metric>,
    pub comparator: Option<Condition>,
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
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
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
                Some(Condition::parse(&text(v, "comparator")?).map_err(|e| e.at("comparator"))?)
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

/// The table's CHECKs on the merged rule of a `PATCH`, as the `422` a caller can act on.
fn merged_rule_error(error: &DbError, change: &RuleChange) -> Option<ApiError> {
    match error.constraint()? {
        "alert_rules_clear_side" => Some(ApiError::validation(
            "clear_threshold",
            "clear_threshold must be below threshold for gt/gte rules and above it for lt/lte rules",
        )),
        "alert_rules_absent_shape" => {
            let field = if change.comparator.is_some() {
                "comparator"
            } else if change.threshold.is_some() {
                "threshold"
            } else if change.clear_threshold.is_some() {
                "clear_threshold"
            } else {
                "for_seconds"
            };
            Some(ApiError::validation(
                field,
                "an absent rule has no threshold or clear_threshold and a for_seconds of at least 60; \
                 a rule does not change between absent and a threshold comparator (create a new one)",
            ))
        }
        _ => None,
    }
}

impl NewRule {
    /// A `POST` body: the required fields present, and the shape its comparator asks for.
    fn parse(req: &lambda_http::Request) -> Result<Self, ApiError> {
        let fields = RuleChange::parse(req)?;
        let metric = required(fields.metric, "metric")?;
        let comparator = required(fields.comparator, "comparator")?;
        let clear_threshold = fields.clear_threshold.flatten();
        let new = match comparator {
            Condition::Absent => {
                if fields.threshold.is_some() {
                    return Err(ApiError::validation(
                        "threshold",
                        "an absent rule has no threshold",
                    ));
                }
                if clear_threshold.is_some() {
                    return Err(ApiError::validation(
                        "clear_threshold",
                        "an absent rule has no clear_threshold",
                    ));
                }
                let for_seconds = fields
                    .for_seconds
                    .filter(|f| f.get() >= ForSeconds::MIN_ABSENT)
                    .ok_or_else(|| {
                        ApiError::validation(
                            "for_seconds",
                            "an absent rule needs for_seconds of at least 60",
                        )
                    })?;
                Self {
                    metric,
                    comparator,
                    threshold: None,
                    for_seconds,
                    clear_threshold: None,
                }
            }
            Condition::Threshold(threshold_comparator) => {
                let threshold = required(fields.threshold, "threshold")?;
                if let Some(clear) = clear_threshold {
                    threshold_comparator
                        .check_clear_threshold(threshold, clear)
                        .map_err(|e| e.at("clear_threshold"))?;
                }
                Self {
                    metric,
                    comparator,
                    threshold: Some(threshold),
                    for_seconds: fields.for_seconds.unwrap_or_default(),
                    clear_threshold,
                }
            }
        };
        Ok(new)
    }
}

pub async fn create(ctx: Ctx<'_>, device_id: Uuid) -> Result<Response, ApiError> {
    let new = NewRule::parse(ctx.req)?;
    let limit = ctx.limits.rules_per_device;
    match sql::create_rule(ctx.db, ctx.caller, device_id, &new, limit).await? {
        None => Err(ApiError::not_found()),
        Some(Bounded::AtLimit) => Err(ApiError::limit_reached(format!(
            "rules per device: a device may have at most {limit} rules"
        ))),
        Some(Bounded::Created(rule)) => Ok(http::json(StatusCode::CREATED, &rule)),
    }
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
        .map_err(|error| merged_rule_error(&error, &change).unwrap_or_else(|| error.into()))?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &rule))
}

pub async fn delete(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    if !sql::delete_rule(ctx.db, ctx.caller, device_id, rule_id).await? {
        return Err(ApiError::not_found());
    }
    Ok(http::no_content())
}
