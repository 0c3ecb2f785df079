//! Devices, their alert rules, alerts, notification channels and silences: `/v1/devices…`,
//! `/v1/alerts…`, `/v1/channels…`, `/v1/silences…` (function `devices`).
//!
//! Every route authenticates the caller with a Clerk session token and every statement is scoped
//! to them: another user's device, rule or alert answers `404`, exactly like a missing one.

mod alerts;
mod channels;
mod devices;
mod rules;
mod silences;
mod sql;

use lambda_http::Request;
use shared::auth::{Authenticator, UserId};
use shared::config::{Config, Limits, Notify};
use shared::db::Db;
use shared::http::{self, ApiError, Response};
use shared::notify::Notifier;
use uuid::Uuid;

/// Bodies here are a name or a rule: a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub auth: Authenticator,
    pub limits: Limits,
    pub notify: Notify,
    /// Sends a channel's `test`.
    pub notifier: Notifier,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
            auth: Authenticator::from_config(config)?,
            limits: config.limits,
            notify: config.notify.clone(),
            notifier: Notifier::new(&config.notify),
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
    ("/v1/alerts/{id}/ack", "POST"),
    ("/v1/channels", "GET, POST"),
    ("/v1/channels/{id}", "GET, PATCH, DELETE"),
    ("/v1/channels/{id}/test", "POST"),
    ("/v1/channels/{id}/deliveries", "GET"),
    ("/v1/silences", "GET, POST"),
    ("/v1/silences/{id}", "GET, PATCH, DELETE"),
];

async fn route(state: &State, req: &Request) -> Result<Response, ApiError> {
    // The path and method are checked before the caller: a wrong method is 405 whoever asks.
    let (route, params) = http::route(ROUTES, req)?;
    let caller = state.auth.authenticate(&state.db, req).await?;
    let ctx = Ctx {
        db: &state.db,
        limits: &state.limits,
        notify: &state.notify,
        notifier: &state.notifier,
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
        ("POST", "/v1/alerts/{id}/ack", [id]) => alerts::acknowledge(ctx, *id).await,
        ("POST", "/v1/channels", []) => channels::create(ctx).await,
        ("GET", "/v1/channels", []) => channels::list(ctx).await,
        ("GET", "/v1/channels/{id}", [id]) => channels::get(ctx, *id).await,
        ("PATCH", "/v1/channels/{id}", [id]) => channels::update(ctx, *id).await,
        ("DELETE", "/v1/channels/{id}", [id]) => channels::delete(ctx, *id).await,
        ("POST", "/v1/channels/{id}/test", [id]) => channels::test(ctx, *id).await,
        ("GET", "/v1/channels/{id}/deliveries", [id]) => channels::deliveries(ctx, *id).await,
        ("POST", "/v1/silences", []) => silences::create(ctx).await,
        ("GET", "/v1/silences", []) => silences::list(ctx).await,
        ("GET", "/v1/silences/{id}", [id]) => silences::get(ctx, *id).await,
        ("PATCH", "/v1/silences/{id}", [id]) => silences::update(ctx, *id).await,
        ("DELETE", "/v1/silences/{id}", [id]) => silences::delete(ctx, *id).await,
        _ => Err(ApiError::internal()),
    }
}

/// What every route needs: the connection, the verified caller, the request.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    db: &'a Db,
    limits: &'a Limits,
    notify: &'a Notify,
    notifier: &'a Notifier,
    caller: &'a UserId,
    req: &'a Request,
}

/// An id in the path that is not a UUID names nothing: `404`.
fn path_id(segment: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(segment).map_err(|_| ApiError::not_found())
}
