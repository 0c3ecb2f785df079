//! `GET /v1/alerts`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::Serialize;
use shared::http::{self, ApiError, Cursor, Response};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{Ctx, Page, sql};

#[derive(Serialize)]
struct Alert {
    id: Uuid,
    rule_id: Uuid,
    device_id: Uuid,
    metric: String,
    status: String,
    value: String,
    triggered_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            rule_id: row.get(1),
            device_id: row.get(2),
            metric: row.get(3),
            status: row.get(4),
            value: row.get(5),
            triggered_at: row.get(6),
            resolved_at: row.get(7),
        }
    }
}

/// `?status=firing|resolved&device_id=&limit=&cursor=`. A `device_id` that is not yours (or
/// does not exist) simply matches no alerts.
pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let status = match http::query_param(ctx.req, "status").as_deref() {
        None => None,
        Some(status @ ("firing" | "resolved")) => Some(status.to_owned()),
        Some(_) => {
            return Err(ApiError::validation(
                "status",
                "status is firing or resolved",
            ));
        }
    };
    let device_id = match http::query_param(ctx.req, "device_id") {
        None => None,
        Some(text) => Some(
            Uuid::parse_str(&text)
                .map_err(|_| http::bad_query("device_id", "device_id must be a UUID"))?,
        ),
    };
    let limit = http::limit(ctx.req, 50, 200)?;
    let cursor = Cursor::from_request(ctx.req)?;
    let rows = ctx
        .db
        .query_typed(
            &sql::LIST_ALERTS,
            &[
                (&ctx.caller.as_str(), Type::TEXT),
                (&status, Type::TEXT),
                (&device_id, Type::UUID),
                (&cursor.at, Type::TIMESTAMPTZ),
                (&cursor.id, Type::UUID),
                (&(limit + 1), Type::INT8),
            ],
        )
        .await?;
    let alerts = rows.iter().map(Alert::from_row).collect();
    let page = Page::new(alerts, limit, |a: &Alert| Cursor {
        at: a.triggered_at,
        id: a.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}
