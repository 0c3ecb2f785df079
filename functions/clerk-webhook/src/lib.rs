//! `POST /webhooks/clerk`: Clerk's user events, Svix-signed.

use lambda_http::Request;
use shared::config::{Config, Secret};
use shared::db::Db;
use shared::http::{self, ApiError, Response};

/// Built once per cold start; without `CLERK_WEBHOOK_SECRET` the function does not start.
pub struct State {
    pub db: Db,
    pub webhook_secret: Secret,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
            webhook_secret: config.require_clerk_webhook_secret()?.clone(),
        })
    }
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(_state: &State, req: Request) -> Response {
    let segments = http::path_segments(&req);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    http::respond(match segments.as_slice() {
        ["webhooks", "clerk"] => http::allow(req.method(), "POST").and(Err(ApiError::not_found())),
        _ => Err(ApiError::not_found()),
    })
}
