//! `/v1/silences…`: one-off silences and weekly maintenance windows. They mute notifications
//! (deliveries are recorded `suppressed`), never evaluation. Whether an event falls under one is
//! decided by the statement that writes the event (migration V6, `is_silenced`), at the event's
//! time, with Postgres's IANA time-zone database.

use chrono::{DateTime, NaiveTime, Utc};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::rules::present;
use crate::sql;
use crate::{BODY_LIMIT, Ctx};

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MAX_COMMENT_CHARS: usize = 500;

#[derive(Serialize, Clone)]
pub struct Silence {
    pub id: Uuid,
    pub device_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub recurrence: Option<Recurrence>,
    pub comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A weekly window: from `start` on each of `weekdays` to `end` (the next day when it crosses
/// midnight), wall-clock time in `timezone`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Recurrence {
    pub weekdays: Vec<String>,
    #[serde(serialize_with = "hh_mm")]
    pub start: NaiveTime,
    #[serde(serialize_with = "hh_mm")]
    pub end: NaiveTime,
    pub timezone: String,
}

fn hh_mm<S: serde::Serializer>(time: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.format("%H:%M").to_string())
}

/// A silence with every field checked, as it will be stored.
pub struct SilenceSpec {
    pub device_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub recurrence: Option<Recurrence>,
    pub comment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    #[serde(default, deserialize_with = "present")]
    device_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    rule_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    starts_at: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    ends_at: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    recurrence: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    comment: Option<Value>,
}

impl SilenceSpec {
    /// Applies a body's fields (all of a `POST`'s, some of a `PATCH`'s) over `self` and checks
    /// the result: exactly one of `ends_at` and `recurrence`.
    fn apply(mut self, body: SilenceBody) -> Result<Self, ApiError> {
        if let Some(v) = body.device_id {
            self.device_id = optional_id(&v, "device_id")?;
        }
        if let Some(v) = body.rule_id {
            self.rule_id = optional_id(&v, "rule_id")?;
        }
        if let Some(v) = body.starts_at {
            self.starts_at = optional_time(&v, "starts_at")?;
        }
        if let Some(v) = body.ends_at {
            self.ends_at = optional_time(&v, "ends_at")?;
        }
        if let Some(v) = body.recurrence {
            self.recurrence = if v.is_null() {
                None
            } else {
                Some(parse_recurrence(&v)?)
            };
        }
        if let Some(v) = body.comment {
            self.comment = match v {
                Value::Null => None,
                Value::String(text)
                    if text.chars().count() <= MAX_COMMENT_CHARS && !text.contains('\0') =>
                {
                    Some(text)
                }
                _ => {
                    return Err(ApiError::validation(
                        "comment",
                        "comment is a string of at most 500 characters",
                    ));
                }
            };
        }
        if self.ends_at.is_some() == self.recurrence.is_some() {
            return Err(ApiError::validation(
                "ends_at",
                "a silence has exactly one of ends_at (a one-off silence) and recurrence \
                 (a weekly maintenance window)",
            ));
        }
        if let (Some(ends), Some(starts)) = (self.ends_at, self.starts_at)
            && ends <= starts
        {
            return Err(ApiError::validation(
                "ends_at",
                "ends_at must be after starts_at",
            ));
        }
        Ok(self)
    }

    fn empty() -> Self {
        Self {
            device_id: None,
            rule_id: None,
            starts_at: None,
            ends_at: None,
            recurrence: None,
            comment: None,
        }
    }
}

impl From<Silence> for SilenceSpec {
    fn from(s: Silence) -> Self {
        Self {
            device_id: s.device_id,
            rule_id: s.rule_id,
            starts_at: Some(s.starts_at),
            ends_at: s.ends_at,
            recurrence: s.recurrence,
            comment: s.comment,
        }
    }
}

fn optional_id(value: &Value, field: &str) -> Result<Option<Uuid>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Uuid::parse_str(text)
            .map(Some)
            .map_err(|_| ApiError::validation(field, format!("{field} must be an id"))),
        _ => Err(ApiError::validation(
            field,
            format!("{field} must be an id"),
        )),
    }
}

fn optional_time(value: &Value, field: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ApiError::validation(field, format!("{field} must be an RFC 3339 time"))),
        _ => Err(ApiError::validation(
            field,
            format!("{field} must be an RFC 3339 time"),
        )),
    }
}

fn parse_recurrence(value: &Value) -> Result<Recurrence, ApiError> {
    let object = value.as_object().ok_or_else(|| {
        ApiError::validation(
            "recurrence",
            "recurrence is {\"weekdays\", \"start\", \"end\", \"timezone\"}",
        )
    })?;
    if let Some(key) = object
        .keys()
        .find(|k| !["weekdays", "start", "end", "timezone"].contains(&k.as_str()))
    {
        return Err(ApiError::validation(
            format!("recurrence.{key}"),
            "unknown field",
        ));
    }
    let bad_days = || {
        ApiError::validation(
            "recurrence.weekdays",
            "weekdays is a non-empty list of mon, tue, wed, thu, fri, sat, sun",
        )
    };
    let days = object
        .get("weekdays")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .ok_or_else(bad_days)?;
    let mut weekdays = Vec::new();
    for day in days {
        let day = day
            .as_str()
            .filter(|d| WEEKDAYS.contains(d))
            .ok_or_else(bad_days)?;
        if !weekdays.iter().any(|d| d == day) {
            weekdays.push(day.to_owned());
        }
    }
    weekdays.sort_by_key(|d| WEEKDAYS.iter().position(|w| w == d));
    let clock = |name: &str| -> Result<NaiveTime, ApiError> {
        object
            .get(name)
            .and_then(Value::as_str)
            .filter(|t| t.len() == 5)
            .and_then(|t| NaiveTime::parse_from_str(t, "%H:%M").ok())
            .ok_or_else(|| {
                ApiError::validation(
                    format!("recurrence.{name}"),
                    format!("{name} is a wall-clock time like 02:00"),
                )
            })
    };
    let start = clock("start")?;
    let end = clock("end")?;
    if start == end {
        return Err(ApiError::validation(
            "recurrence.end",
            "end must differ from start",
        ));
    }
    let timezone = object
        .get("timezone")
        .and_then(Value::as_str)
        .filter(|z| !z.is_empty() && z.len() <= 64 && z.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::validation(
                "recurrence.timezone",
                "timezone is an IANA time zone such as Europe/Berlin",
            )
        })?
        .to_owned();
    Ok(Recurrence {
        weekdays,
        start,
        end,
        timezone,
    })
}

/// The `422`s the statement finds: a zone Postgres does not know, a device or rule not the caller's.
fn refused(check: sql::SilenceCheck) -> ApiError {
    match check {
        sql::SilenceCheck::UnknownZone => ApiError::validation(
            "recurrence.timezone",
            "timezone is an IANA time zone such as Europe/Berlin",
        ),
        sql::SilenceCheck::NotYourDevice => {
            ApiError::validation("device_id", "device_id names a device you do not have")
        }
        sql::SilenceCheck::NotYourRule => ApiError::validation(
            "rule_id",
            "rule_id names a rule you do not have (on that device)",
        ),
        sql::SilenceCheck::Gone => ApiError::not_found(),
    }
}

pub async fn create(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let body: SilenceBody = http::json_body(ctx.req, BODY_LIMIT)?;
    let spec = SilenceSpec::empty().apply(body)?;
    match sql::save_silence(ctx.db, ctx.caller, None, &spec).await? {
        Ok(silence) => Ok(http::json(StatusCode::CREATED, &silence)),
        Err(sql::SilenceCheck::Gone) => Err(ApiError::unauthorized()),
        Err(check) => Err(refused(check)),
    }
}

pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let silences = sql::list_silences(ctx.db, ctx.caller, &page).await?;
    let page = Page::new(silences, page.limit, |s: &Silence| TimeId {
        at: s.created_at,
        id: s.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

pub async fn get(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let silence = sql::get_silence(ctx.db, ctx.caller, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &silence))
}

/// The given fields replace the stored ones; the result must still be one silence or one window.
pub async fn update(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let body: SilenceBody = http::json_body(ctx.req, BODY_LIMIT)?;
    let stored = sql::get_silence(ctx.db, ctx.caller, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let spec = SilenceSpec::from(stored).apply(body)?;
    match sql::save_silence(ctx.db, ctx.caller, Some(id), &spec).await? {
        Ok(silence) => Ok(http::json(StatusCode::OK, &silence)),
        Err(check) => Err(refused(check)),
    }
}

pub async fn delete(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    if !sql::delete_silence(ctx.db, ctx.caller, id).await? {
        return Err(ApiError::not_found());
    }
    Ok(http::no_content())
}
