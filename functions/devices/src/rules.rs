//! `/v1/devices/{id}/rules` and `/v1/devices/{id}/rules/{rule_id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use shared::domain::{Comparator, DecimalValue, ForSeconds, Metric};
use shared::http::{self, ApiError, Response};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{BODY_LIMIT, Ctx, sql};

#[derive(Serialize)]
struct Rule {
    id: Uuid,
    device_id: Uuid,
    metric: String,
    comparator: String,
    threshold: String,
    for_seconds: i32,
    clear_threshold: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Rule {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            device_id: row.get(1),
            metric: row.get(2),
            comparator: row.get(3),
            threshold: row.get(4),
            for_seconds: row.get(5),
            clear_threshold: row.get(6),
            created_at: row.get(7),
            updated_at: row.get(8),
        }
    }
}

#[derive(Serialize)]
struct Items {
    items: Vec<Rule>,
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

/// The fields of a body, each parsed; `None` where the body did not give it.
struct RuleFields {
    metric: Option<Metric>,
    comparator: Option<Comparator>,
    threshold: Option<Decimal>,
    for_seconds: Option<ForSeconds>,
    clear_threshold: Option<Option<Decimal>>,
}

impl RuleFields {
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

pub async fn create(ctx: Ctx<'_>, device_id: Uuid) -> Result<Response, ApiError> {
    let fields = RuleFields::parse(ctx.req)?;
    let metric = required(fields.metric, "metric")?;
    let comparator = required(fields.comparator, "comparator")?;
    let threshold = required(fields.threshold, "threshold")?;
    let for_seconds = fields.for_seconds.unwrap_or_default();
    let clear_threshold = fields.clear_threshold.flatten();
    if let Some(clear) = clear_threshold {
        comparator
            .check_clear_threshold(threshold, clear)
            .map_err(|e| e.at("clear_threshold"))?;
    }
    let row = ctx
        .db
        .query_typed_opt(
            &sql::CREATE_RULE,
            &[
                (&device_id, Type::UUID),
                (&ctx.caller.as_str(), Type::TEXT),
                (&metric.as_str(), Type::TEXT),
                (&comparator.as_str(), Type::TEXT),
                (&threshold, Type::NUMERIC),
                (&for_seconds.get(), Type::INT4),
                (&clear_threshold, Type::NUMERIC),
            ],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::CREATED, &Rule::from_row(&row)))
}

pub async fn list(ctx: Ctx<'_>, device_id: Uuid) -> Result<Response, ApiError> {
    let rows = ctx
        .db
        .query_typed(
            &sql::LIST_RULES,
            &[(&device_id, Type::UUID), (&ctx.caller.as_str(), Type::TEXT)],
        )
        .await?;
    if rows.is_empty() {
        return Err(ApiError::not_found());
    }
    let items: Vec<Rule> = rows
        .iter()
        .filter(|row| row.get::<_, Option<Uuid>>(0).is_some())
        .map(Rule::from_row)
        .collect();
    Ok(http::json(StatusCode::OK, &Items { items }))
}

pub async fn get(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    let row = ctx
        .db
        .query_typed_opt(
            &sql::GET_RULE,
            &[
                (&rule_id, Type::UUID),
                (&device_id, Type::UUID),
                (&ctx.caller.as_str(), Type::TEXT),
            ],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &Rule::from_row(&row)))
}

pub async fn update(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    let fields = RuleFields::parse(ctx.req)?;
    let metric = fields.metric.as_ref().map(Metric::as_str);
    let comparator = fields.comparator.map(Comparator::as_str);
    let for_seconds = fields.for_seconds.map(ForSeconds::get);
    let clear_given = fields.clear_threshold.is_some();
    let clear_threshold = fields.clear_threshold.flatten();
    let result = ctx
        .db
        .query_typed_opt(
            &sql::UPDATE_RULE,
            &[
                (&rule_id, Type::UUID),
                (&device_id, Type::UUID),
                (&ctx.caller.as_str(), Type::TEXT),
                (&metric, Type::TEXT),
                (&comparator, Type::TEXT),
                (&fields.threshold, Type::NUMERIC),
                (&for_seconds, Type::INT4),
                (&clear_given, Type::BOOL),
                (&clear_threshold, Type::NUMERIC),
            ],
        )
        .await;
    let row = match result {
        Ok(row) => row.ok_or_else(ApiError::not_found)?,
        Err(error) => return Err(clear_side_error(&error).unwrap_or_else(|| error.into())),
    };
    Ok(http::json(StatusCode::OK, &Rule::from_row(&row)))
}

pub async fn delete(ctx: Ctx<'_>, device_id: Uuid, rule_id: Uuid) -> Result<Response, ApiError> {
    let deleted = ctx
        .db
        .execute_typed(
            &sql::DELETE_RULE,
            &[
                (&rule_id, Type::UUID),
                (&device_id, Type::UUID),
                (&ctx.caller.as_str(), Type::TEXT),
            ],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::not_found());
    }
    Ok(http::no_content())
}
