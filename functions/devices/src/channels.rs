//! `/v1/channels…`: where a user's alert events are delivered, the channel test and the delivery log.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::domain::DeviceName;
use shared::http::{self, ApiError, Response};
use shared::notify::guard;
use shared::paging::{Page, PageRequest, TimeId};
use uuid::Uuid;

use crate::rules::present;
use crate::sql;
use crate::{BODY_LIMIT, Ctx};

/// The events a channel may ask for; `test` always goes through.
pub const EVENTS: [&str; 5] = [
    "alert.firing",
    "alert.resolved",
    "alert.acknowledged",
    "device.offline",
    "device.online",
];
/// At most this many devices in a channel's `device_ids`.
const MAX_DEVICE_IDS: usize = 100;

#[derive(Serialize)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: Value,
    pub events: Vec<String>,
    pub device_ids: Option<Vec<Uuid>>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A channel's fields, each checked (a `PATCH` gives some of them).
#[derive(Default)]
pub struct ChannelFields {
    pub name: Option<DeviceName>,
    pub kind: Option<String>,
    pub target: Option<Value>,
    pub events: Option<Vec<String>>,
    /// `Some(None)`: every device of the owner's.
    pub device_ids: Option<Option<Vec<Uuid>>>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<Value>,
    #[serde(default, rename = "type", deserialize_with = "present")]
    kind: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    target: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    events: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    device_ids: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    enabled: Option<Value>,
}

impl ChannelFields {
    /// Checks the body's fields in the contract's order; `kind` is the stored type for a `PATCH`
    /// (whose body cannot change it).
    async fn parse(
        ctx: &Ctx<'_>,
        body: ChannelBody,
        stored_kind: Option<&str>,
    ) -> Result<Self, ApiError> {
        let mut fields = Self::default();
        if let Some(name) = body.name {
            let name = name
                .as_str()
                .ok_or_else(|| ApiError::validation("name", "name must be a string"))?;
            fields.name = Some(DeviceName::parse(name).map_err(|e| e.at("name"))?);
        }
        if let Some(kind) = body.kind {
            if stored_kind.is_some() {
                return Err(ApiError::validation(
                    "type",
                    "a channel's type cannot be changed: create another channel",
                ));
            }
            let kind = match kind.as_str() {
                Some(k @ ("webhook" | "slack" | "email")) => k.to_owned(),
                _ => {
                    return Err(ApiError::validation(
                        "type",
                        "type is webhook, slack or email",
                    ));
                }
            };
            if kind == "email" && ctx.notify.email_from.is_none() {
                return Err(ApiError::validation(
                    "type",
                    "email channels are not configured on this deployment (NOTIFY_EMAIL_FROM)",
                ));
            }
            fields.kind = Some(kind);
        }
        if let Some(target) = body.target {
            let kind = stored_kind.or(fields.kind.as_deref()).unwrap_or("webhook");
            fields.target = Some(parse_target(ctx, kind, &target).await?);
        }
        if let Some(events) = body.events {
            fields.events = Some(parse_events(&events)?);
        }
        if let Some(ids) = body.device_ids {
            fields.device_ids = Some(parse_device_ids(&ids)?);
        }
        if let Some(enabled) = body.enabled {
            fields.enabled =
                Some(enabled.as_bool().ok_or_else(|| {
                    ApiError::validation("enabled", "enabled must be true or false")
                })?);
        }
        Ok(fields)
    }
}

/// `{"url"}` for webhook and Slack (https, resolving only to public addresses), `{"to"}` for email.
async fn parse_target(ctx: &Ctx<'_>, kind: &str, target: &Value) -> Result<Value, ApiError> {
    let object = target.as_object().ok_or_else(|| {
        ApiError::validation("target", "target must be an object: {\"url\"} or {\"to\"}")
    })?;
    let key = if kind == "email" { "to" } else { "url" };
    if object.len() != 1 || !object.contains_key(key) {
        return Err(ApiError::validation(
            "target",
            format!("a {kind} channel's target is {{\"{key}\": …}}"),
        ));
    }
    let field = format!("target.{key}");
    let text = object[key]
        .as_str()
        .ok_or_else(|| ApiError::validation(field.clone(), format!("{key} must be a string")))?;
    if kind == "email" {
        return if is_email(text) {
            Ok(json!({ "to": text }))
        } else {
            Err(ApiError::validation(field, "to must be one email address"))
        };
    }
    if text.len() > 2_000 {
        return Err(ApiError::validation(
            field,
            "url is at most 2000 characters",
        ));
    }
    let url = guard::check_target(text, ctx.notify.allow_private_targets)
        .await
        .map_err(|e| ApiError::validation(field, e.to_string()))?;
    Ok(json!({ "url": url.as_str() }))
}

fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    text.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',' || c == ';')
        && !domain.contains('@')
}

fn parse_events(value: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::validation(
            "events",
            "events is a non-empty list of alert.firing, alert.resolved, alert.acknowledged, \
             device.offline, device.online",
        )
    };
    let list = value.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
    let mut events: Vec<String> = Vec::new();
    for item in list {
        let name = item
            .as_str()
            .filter(|n| EVENTS.contains(n))
            .ok_or_else(bad)?;
        if !events.iter().any(|e| e == name) {
            events.push(name.to_owned());
        }
    }
    Ok(events)
}

fn parse_device_ids(value: &Value) -> Result<Option<Vec<Uuid>>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let bad = || {
        ApiError::validation(
            "device_ids",
            "device_ids is null (every device) or a non-empty list of at most 100 device ids",
        )
    };
    let list = value
        .as_array()
        .filter(|l| !l.is_empty() && l.len() <= MAX_DEVICE_IDS)
        .ok_or_else(bad)?;
    let mut ids = Vec::with_capacity(list.len());
    for item in list {
        let id = item
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(bad)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(Some(ids))
}

/// The `422` for `device_ids` that name a device that is not the caller's.
fn not_your_devices() -> ApiError {
    ApiError::validation("device_ids", "device_ids names a device you do not have")
}

/// `201` with the channel; a webhook's signing secret is in this answer only.
pub async fn create(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Created {
        #[serde(flatten)]
        channel: Channel,
        #[serde(skip_serializing_if = "Option::is_none")]
        signing_secret: Option<String>,
    }
    let body: ChannelBody = http::json_body(ctx.req, BODY_LIMIT)?;
    let fields = ChannelFields::parse(&ctx, body, None).await?;
    let name = fields
        .name
        .ok_or_else(|| ApiError::validation("name", "name is required"))?;
    let kind = fields
        .kind
        .ok_or_else(|| ApiError::validation("type", "type is required"))?;
    let target = fields
        .target
        .ok_or_else(|| ApiError::validation("target", "target is required"))?;
    let events = fields
        .events
        .unwrap_or_else(|| EVENTS.iter().map(|e| (*e).to_owned()).collect());
    let device_ids = fields.device_ids.flatten();
    let secret = (kind == "webhook").then(shared::notify::new_signing_secret);
    let new = sql::NewChannel {
        name: &name,
        kind: &kind,
        target: &target,
        events: &events,
        device_ids: device_ids.as_deref(),
        enabled: fields.enabled.unwrap_or(true),
        signing_secret: secret.as_deref(),
    };
    let channel = match sql::create_channel(ctx.db, ctx.caller, &new).await? {
        sql::Checked::Done(channel) => channel,
        sql::Checked::NotYourDevices => return Err(not_your_devices()),
        sql::Checked::NoOwner => return Err(ApiError::unauthorized()),
    };
    tracing::info!(channel_id = %channel.id, kind, "channel created");
    let created = Created {
        channel,
        signing_secret: secret,
    };
    Ok(http::json_no_store(StatusCode::CREATED, &created))
}

pub async fn list(ctx: Ctx<'_>) -> Result<Response, ApiError> {
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let channels = sql::list_channels(ctx.db, ctx.caller, &page).await?;
    let page = Page::new(channels, page.limit, |c: &Channel| TimeId {
        at: c.created_at,
        id: c.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}

pub async fn get(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let channel = sql::get_channel(ctx.db, ctx.caller, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &channel))
}

/// Changes any of `name`, `target`, `events`, `device_ids` and `enabled` (not `type`).
pub async fn update(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let body: ChannelBody = http::json_body(ctx.req, BODY_LIMIT)?;
    // The stored type decides what the target must be: read it first (404 before any 422).
    let stored = sql::get_channel(ctx.db, ctx.caller, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let fields = ChannelFields::parse(&ctx, body, Some(&stored.kind)).await?;
    match sql::update_channel(ctx.db, ctx.caller, id, &fields).await? {
        Some(sql::Checked::Done(channel)) => Ok(http::json(StatusCode::OK, &channel)),
        Some(sql::Checked::NotYourDevices) => Err(not_your_devices()),
        Some(sql::Checked::NoOwner) | None => Err(ApiError::not_found()),
    }
}

pub async fn delete(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    if !sql::delete_channel(ctx.db, ctx.caller, id).await? {
        return Err(ApiError::not_found());
    }
    tracing::info!(channel_id = %id, "channel deleted");
    Ok(http::no_content())
}

/// Sends a `test` event to the channel now, enabled or not, and answers with the delivery after
/// that first attempt (`pending` if it is to be retried by the next passes).
pub async fn test(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let now = Utc::now();
    let delivery = sql::create_test_delivery(ctx.db, ctx.caller, id, Uuid::new_v4())
        .await?
        .ok_or_else(ApiError::not_found)?;
    shared::notify::deliver::deliver_one(ctx.db, ctx.notifier, now, delivery).await?;
    let delivery = sql::get_delivery(ctx.db, ctx.caller, delivery)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(http::json(StatusCode::OK, &delivery))
}

/// `?status=pending|delivered|failed|suppressed&limit&cursor`, newest first.
pub async fn deliveries(ctx: Ctx<'_>, id: Uuid) -> Result<Response, ApiError> {
    let status = match http::query_param(ctx.req, "status").as_deref() {
        None => None,
        Some(s @ ("pending" | "delivered" | "failed" | "suppressed")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::validation(
                "status",
                "status is pending, delivered, failed or suppressed",
            ));
        }
    };
    let page = PageRequest::from_request(ctx.req, 50, 200)?;
    let deliveries = sql::list_deliveries(ctx.db, ctx.caller, id, status.as_deref(), &page)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let page = Page::new(deliveries, page.limit, |d: &Delivery| TimeId {
        at: d.created_at,
        id: d.id,
    });
    Ok(http::json(StatusCode::OK, &page))
}
