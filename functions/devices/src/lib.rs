//! Devices, their alert rules, and alerts: `/v1/devices…`, `/v1/alerts` (function `devices`).
//!
//! Every route authenticates the caller with a Clerk session token and every statement is scoped
//! to them: another user's device, rule or alert answers `404`, exactly like a missing one.

mod alerts;
mod devices;
mod rules;
mod sql;

use lambda_http::Request;
use shared::auth::{Authenticator, UserId};
use shared::config::Config;
use shared::db::Db;
use shared::http::{self, ApiError, Response};
use uuid::Uuid;

/// Bodies here are a name or a rule: a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub auth: Authenticator,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
            auth: Authenticator::from_config(config)?,
        })
    }
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(state: &State, req: Request) -> Response {
    http::respond(route(state, &req).await)
}

async fn route(state: &State, req: &Request) -> Result<Response, ApiError> {
    let segments = http::path_segments(req);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().as_str();
    // The method is checked before the caller: a wrong method is 405 whoever asks.
    let allowed = match segments.as_slice() {
        ["v1", "devices"] | ["v1", "devices", _, "rules"] => "GET, POST",
        ["v1", "devices", _] | ["v1", "devices", _, "rules", _] => "GET, PATCH, DELETE",
        ["v1", "alerts"] => "GET",
        _ => return Err(ApiError::not_found()),
    };
    http::allow(req.method(), allowed)?;
    let caller = state.auth.authenticate(&state.db, req.headers()).await?;
    let ctx = Ctx {
        db: &state.db,
        caller: &caller,
        req,
    };
    match (method, segments.as_slice()) {
        ("POST", ["v1", "devices"]) => devices::create(ctx).await,
        ("GET", ["v1", "devices"]) => devices::list(ctx).await,
        ("GET", ["v1", "devices", id]) => devices::get(ctx, path_id(id)?).await,
        ("PATCH", ["v1", "devices", id]) => devices::rename(ctx, path_id(id)?).await,
        ("DELETE", ["v1", "devices", id]) => devices::delete(ctx, path_id(id)?).await,
        ("POST", ["v1", "devices", id, "rules"]) => rules::create(ctx, path_id(id)?).await,
        ("GET", ["v1", "devices", id, "rules"]) => rules::list(ctx, path_id(id)?).await,
        ("GET", ["v1", "devices", id, "rules", rule]) => {
            rules::get(ctx, path_id(id)?, path_id(rule)?).await
        }
        ("PATCH", ["v1", "devices", id, "rules", rule]) => {
            rules::update(ctx, path_id(id)?, path_id(rule)?).await
        }
        ("DELETE", ["v1", "devices", id, "rules", rule]) => {
            rules::delete(ctx, path_id(id)?, path_id(rule)?).await
        }
        ("GET", ["v1", "alerts"]) => alerts::list(ctx).await,
        _ => Err(ApiError::not_found()),
    }
}

/// What every route needs: the connection, the verified caller, the request.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    db: &'a Db,
    caller: &'a UserId,
    req: &'a Request,
}

/// An id in the path that is not a UUID names nothing: `404`.
fn path_id(segment: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(segment).map_err(|_| ApiError::not_found())
}

/// `{"items": [...], "next_cursor": ...}`.
#[derive(serde::Serialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` holds up to `limit + 1` items; the extra one only says another page follows.
    fn new(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> http::Cursor) -> Self {
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = more
            .then(|| items.last().map(|last| cursor_of(last).encode()))
            .flatten();
        Self { items, next_cursor }
    }
}
