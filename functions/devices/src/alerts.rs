//! `GET /v1/alerts`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::Serialize;
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::{Ctx, sql};

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
        Ok(Self { status, device_id })
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
