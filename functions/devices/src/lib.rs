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
use shared::config::{Config, Limits};
use shared::db::Db;
use shared::http::{self, ApiError, Response};
use uuid::Uuid;

/// Bodies here are a name or a rule: a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub auth: Authenticator,
    pub limits: Limits,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
            auth: Authenticator::from_config(config)?,
            limits: config.limits,
        })
    }
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(state: &State, req: Request) -> Response {
    http::respond(route(state, &req).await)
}

/// The routes of this function.
pub const ROUTES: &http::Routes = &[
    ("/v1/devices", "GET, POST"),
    ("/v1/devices/{id}", "GET, PATCH, DELETE"),
    ("/v1/devices/{id}/keys", "POST"),
    ("/v1/devices/{id}/rules", "GET, POST"),
    ("/v1/devices/{id}/rules/{rule_id}", "GET, PATCH, DELETE"),
    ("/v1/alerts", "GET"),
];

async fn route(state: &State, req: &Request) -> Result<Response, ApiError> {
    // The path and method are checked before the caller: a wrong method is 405 whoever asks.
    let (route, params) = http::route(ROUTES, req)?;
    let caller = state.auth.authenticate(&state.db, req).await?;
    let ctx = Ctx {
        db: &state.db,
        limits: &state.limits,
        caller: &caller,
        req,
    };
    let ids = params
        .iter()
        .map(|p| path_id(p))
        .collect::<Result<Vec<Uuid>, ApiError>>()?;
    match (req.method().as_str(), route, ids.as_slice()) {
        ("POST", "/v1/devices", []) => devices::create(ctx).await,
        ("GET", "/v1/devices", []) => devices::list(ctx).await,
        ("GET", "/v1/devices/{id}", [id]) => devices::get(ctx, *id).await,
        ("PATCH", "/v1/devices/{id}", [id]) => devices::rename(ctx, *id).await,
        ("DELETE", "/v1/devices/{id}", [id]) => devices::delete(ctx, *id).await,
        ("POST", "/v1/devices/{id}/keys", [id]) => devices::rotate_key(ctx, *id).await,
        ("POST", "/v1/devices/{id}/rules", [id]) => rules::create(ctx, *id).await,
        ("GET", "/v1/devices/{id}/rules", [id]) => rules::list(ctx, *id).await,
        ("GET", "/v1/devices/{id}/rules/{rule_id}", [id, rule]) => {
            rules::get(ctx, *id, *rule).await
        }
        ("PATCH", "/v1/devices/{id}/rules/{rule_id}", [id, rule]) => {
            rules::update(ctx, *id, *rule).await
        }
        ("DELETE", "/v1/devices/{id}/rules/{rule_id}", [id, rule]) => {
            rules::delete(ctx, *id, *rule).await
        }
        ("GET", "/v1/alerts", []) => alerts::list(ctx).await,
        _ => Err(ApiError::internal()),
    }
}

/// What every route needs: the connection, the verified caller, the request.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    db: &'a Db,
    limits: &'a Limits,
    caller: &'a UserId,
    req: &'a Request,
}

/// An id in the path that is not a UUID names nothing: `404`.
fn path_id(segment: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(segment).map_err(|_| ApiError::not_found())
}
