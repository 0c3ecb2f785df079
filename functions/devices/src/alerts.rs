//! `GET /v1/alerts` and `POST /v1/alerts/{id}/ack`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::Serialize;
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::rules::present;
use crate::{BODY_LIMIT, Ctx, sql};

#[derive(Serialize)]
pub struct Alert {
    pub id: Uuid,
    pub rule_id: Uuid,
    pub device_id: Uuid,
    pub metric: String,
    pub status: String,
    /// The reading that fired it; `None` for an `absent` rule's alert.
    pub value: Option<String>,
    /// When the evaluation raised and resolved it (server time).
    pub triggered_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The reading times at which its condition began and ended (device time): the same
    /// readings give the same alerts whenever they arrive. `None` for an `absent` rule's firing.
    pub fired_reading_at: Option<DateTime<Utc>>,
    pub resolved_reading_at: Option<DateTime<Utc>>,
    /// The first acknowledgement: when, by whom (the user id) and their comment.
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Which alerts a list shows.
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub device_id: Option<Uuid>,
    pub acknowledged: Option<bool>,
}

impl AlertFilter {
    fn parse(req: &lambda_http::Request) -> Result<Self, ApiError> {
        let status = match http::query_param(req, "status").as_deref() {
            None => None,
            Some("firing") => Some(AlertStatus::Firing),
            Some("resolved") => Some(AlertStatus::Resolved),
            Some(_) => {
                return Err(ApiError::validation(
                    "status",
                    "status is firing or resolved",
                ));
            }
        };
        let device_id = http::query_param(req, "device_id")
            .map(|text| {
                Uuid::parse_str(&text)
                    .map_err(|_| ApiError::bad_query("device_id", "device_id must be a UUID"))
            })
            .transpose()?;
        let acknowledged = match http::query_param(req, "acknowledged").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(ApiError::validation(
                    "acknowledged",
                    "acknowledged is true or false",
                ));
            }
        };
        Ok(Self {
            status,
            device_id,
            acknowledged,
        })
    }
}

/// `?status=firing|resolved&device_id=&limit=&cursor=`. A `device_id` that is not yours (or
/// does not exist) simply matches no alerts.
pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let filter = AlertFilter::parse(ctx.req)?;
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let alerts = sql::list_alerts(ctx.db, ctx.caller, &filter, &page).await?;
    let page = Page::new(alerts, page.limit, |a: &Alert| TimeId {
        at: a.triggered_at,
        id: a.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default, deserialize_with = "present")]
    comment: Option<serde_json::Value>,
}

const MAX_COMMENT_CHARS: usize = 500;

/// `200` with the alert as acknowledged. The first acknowledgement is kept (a second one answers
/// with it and emits no second `alert.acknowledged`). The body is optional.
pub async fn acknowledge(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let body: AckBody = if http::body_bytes(ctx.req)
        .iter()
        .all(u8::is_ascii_whitespace)
    {
        http::require_json(ctx.req)?;
        AckBody { comment: None }
    } else {
        http::json_body(ctx.req, BODY_LIMIT)?
    };
    let comment = match body.comment {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text))
            if text.chars().count() <= MAX_COMMENT_CHARS && !text.contains('\0') =>
        {
            Some(text)
        }
        Some(_) => {
            return Err(ApiError::validation(
                "comment",
                "comment is a string of at most 500 characters",
            ));
        }
    };
    let alert = sql::acknowledge(ctx.db, ctx.caller, id, comment.as_deref())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &alert))
}
