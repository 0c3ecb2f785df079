//! `/v1/devices` and `/v1/devices/{id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::domain::{DeviceKey, DeviceName};
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::{BODY_LIMIT, Ctx, sql};

#[derive(Serialize)]
pub struct Device {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
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
    let device = sql::create_device(ctx.db, ctx.caller, &name, &key.hash()).await?;
    tracing::info!(device_id = %device.id, "device created");
    let created = Created {
        device,
        device_key: key.reveal().to_owned(),
    };
    Ok(http::json(StatusCode::CREATED, &created))
}

pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let devices = sql::list_devices(ctx.db, ctx.caller, &page).await?;
    let page = Page::new(devices, page.limit, |d: &Device| TimeId {
        at: d.created_at,
        id: d.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

pub async fn get(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let device = sql::get_device(ctx.db, ctx.caller, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &device))
}

pub async fn rename(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let name = parse_name(ctx.req)?;
    let device = sql::rename_device(ctx.db, ctx.caller, id, &name)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &device))
}

pub async fn delete(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    if !sql::delete_device(ctx.db, ctx.caller, id).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(device_id = %id, "device deleted");
    Ok(http::no_content())
}
