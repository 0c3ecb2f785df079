//! Devices, their alert rules, and alerts: `/v1/devices…`, `/v1/alerts`.

use lambda_http::Request;
use shared::config::Config;
use shared::db::{Db, DbError};
use shared::http::{self, ApiError, Response};

/// Built once per cold start.
pub struct State {
    pub db: Db,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, DbError> {
        Ok(Self {
            db: Db::new(&config.database_url)?,
        })
    }
}

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(_state: &State, req: Request) -> Response {
    let segments = http::path_segments(&req);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method();
    http::respond(match segments.as_slice() {
        ["v1", "devices"] => http::allow(method, "GET, POST").and(Err(ApiError::not_found())),
        ["v1", "devices", _] => {
            http::allow(method, "GET, PATCH, DELETE").and(Err(ApiError::not_found()))
        }
        ["v1", "devices", _, "rules"] => {
            http::allow(method, "GET, POST").and(Err(ApiError::not_found()))
        }
        ["v1", "devices", _, "rules", _] => {
            http::allow(method, "GET, PATCH, DELETE").and(Err(ApiError::not_found()))
        }
        ["v1", "alerts"] => http::allow(method, "GET").and(Err(ApiError::not_found())),
        _ => Err(ApiError::not_found()),
    })
}
