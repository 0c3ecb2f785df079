//! `/v1/devices` and `/v1/devices/{id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::domain::{DeviceKey, DeviceName};
use shared::http::{self, ApiError, Cursor, Response};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

use crate::{BODY_LIMIT, Ctx, Page, sql};

#[derive(Serialize)]
pub struct Device {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Device {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            name: row.get(1),
            status: row.get(2),
            last_seen_at: row.get(3),
            created_at: row.get(4),
        }
    }
}

/// The body of `POST /v1/devices` and `PATCH /v1/devices/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    #[serde(default)]
    name: Option<serde_json::Value>,
}

fn parse_name(req: &lambda_http::Request) -> Result<DeviceName, ApiError> {
    let body: NameBody = http::json_body(req, BODY_LIMIT)?;
    match body.name {
        Some(serde_json::Value::String(name)) => DeviceName::parse(&name).map_err(|e| e.at("name")),
        Some(_) => Err(ApiError::validation("name", "name must be a string")),
        None => Err(ApiError::validation("name", "name is required")),
    }
}

/// `201` with the device and its key: the only time the key is ever shown.
pub async fn create(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Created {
        #[serde(flatten)]
        device: Device,
        device_key: String,
    }
    let name = parse_name(ctx.req)?;
    let key = DeviceKey::generate();
    let hash = key.hash().to_vec();
    let row = ctx
        .db
        .query_typed_one(
            &sql::CREATE_DEVICE,
            &[
                (&ctx.caller.as_str(), Type::TEXT),
                (&name.as_str(), Type::TEXT),
                (&hash, Type::BYTEA),
            ],
        )
        .await?;
    let created = Created {
        device: Device::from_row(&row),
        device_key: key.reveal().to_owned(),
    };
    tracing::info!(device_id = %created.device.id, "device created");
    Ok(http::json(StatusCode::CREATED, &created))
}

pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let limit = http::limit(ctx.req, 50, 200)?;
    let cursor = Cursor::from_request(ctx.req)?;
    let rows = ctx
        .db
        .query_typed(
            &sql::LIST_DEVICES,
            &[
                (&ctx.caller.as_str(), Type::TEXT),
                (&cursor.at, Type::TIMESTAMPTZ),
                (&cursor.id, Type::UUID),
                (&(limit + 1), Type::INT8),
            ],
        )
        .await?;
    let devices = rows.iter().map(Device::from_row).collect();
    let page = Page::new(devices, limit, |d: &Device| Cursor {
        at: d.created_at,
        id: d.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

pub async fn get(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let row = ctx
        .db
        .query_typed_opt(
            &sql::GET_DEVICE,
            &[(&id, Type::UUID), (&ctx.caller.as_str(), Type::TEXT)],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &Device::from_row(&row)))
}

pub async fn rename(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let name = parse_name(ctx.req)?;
    let row = ctx
        .db
        .query_typed_opt(
            &sql::RENAME_DEVICE,
            &[
                (&id, Type::UUID),
                (&ctx.caller.as_str(), Type::TEXT),
                (&name.as_str(), Type::TEXT),
            ],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &Device::from_row(&row)))
}

pub async fn delete(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let deleted = ctx
        .db
        .execute_typed(
            &sql::DELETE_DEVICE,
            &[(&id, Type::UUID), (&ctx.caller.as_str(), Type::TEXT)],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::not_found());
    }
    tracing::info!(device_id = %id, "device deleted");
    Ok(http::no_content())
}
