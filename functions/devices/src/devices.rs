//! `/v1/devices` and `/v1/devices/{id}`.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::domain::{DeviceKey, DeviceName};
use shared::http::{self, ApiError, Response};
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::sql::{self, Bounded};
use crate::{BODY_LIMIT, Ctx};

#[derive(Serialize)]
pub struct Device {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the current key was issued (at creation, then at each rotation).
    pub key_created_at: DateTime<Utc>,
    /// Until when the key before the current one still works; `null` until the first rotation.
    pub previous_key_expires_at: Option<DateTime<Utc>>,
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

/// `201` with the device and its key: the only time the key is ever shown (and no cache keeps
/// it). `409` when the caller has as many devices as the limit allows; `401` when the caller's
/// user was deleted since their token was checked.
pub async fn create(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct WithKey {
        #[serde(flatten)]
        device: Device,
        device_key: String,
    }
    let name = parse_name(ctx.req)?;
    let key = DeviceKey::generate();
    let limit = ctx.limits.devices_per_user;
    let device = match sql::create_device(ctx.db, ctx.caller, &name, &key.hash(), limit).await? {
        None => return Err(ApiError::unauthorized()),
        Some(Bounded::AtLimit) => {
            return Err(ApiError::limit_reached(format!(
                "devices per user: an account may have at most {limit} devices"
            )));
        }
        Some(Bounded::Created(device)) => device,
    };
    tracing::info!(device_id = %device.id, "device created");
    let created = WithKey {
        device,
        device_key: key.reveal().to_owned(),
    };
    Ok(http::json_no_store(StatusCode::CREATED, &created))
}

/// The body of `POST /v1/devices/{id}/keys`; an empty body takes the default grace.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default, deserialize_with = "crate::rules::present")]
    grace_seconds: Option<serde_json::Value>,
}

/// How long the key in use until now keeps working after a rotation.
pub const DEFAULT_GRACE_SECONDS: i32 = 86_400;
pub const MAX_GRACE_SECONDS: i32 = 604_800;

fn parse_grace(req: &lambda_http::Request) -> Result<i32, ApiError> {
    let body: RotateBody = if http::body_bytes(req).iter().all(u8::is_ascii_whitespace) {
        http::require_json(req)?;
        RotateBody {
            grace_seconds: None,
        }
    } else {
        http::json_body(req, BODY_LIMIT)?
    };
    match body.grace_seconds {
        // Absent takes the default; `null` is a bad value, as everywhere but clear_threshold.
        None => Ok(DEFAULT_GRACE_SECONDS),
        Some(value) => value
            .as_i64()
            .filter(|s| (0..=i64::from(MAX_GRACE_SECONDS)).contains(s))
            .map(|s| s as i32)
            .ok_or_else(|| {
                ApiError::validation(
                    "grace_seconds",
                    "grace_seconds must be a whole number of seconds from 0 to 604800",
                )
            }),
    }
}

/// `201` with a new key, shown once: the key in use until now keeps working until
/// `previous_key_expires_at`; a key older than that stops at once.
pub async fn rotate_key(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Rotated {
        device_key: String,
        previous_key_expires_at: Option<DateTime<Utc>>,
    }
    let grace = parse_grace(ctx.req)?;
    let key = DeviceKey::generate();
    let device = sql::rotate_key(ctx.db, ctx.caller, id, &key.hash(), grace)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tracing::info!(device_id = %device.id, grace, "device key rotated");
    let rotated = Rotated {
        device_key: key.reveal().to_owned(),
        previous_key_expires_at: device.previous_key_expires_at,
    };
    Ok(http::json_no_store(StatusCode::CREATED, &rotated))
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
