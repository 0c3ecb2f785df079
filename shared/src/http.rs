//! JSON responses, the one error type (it knows its status), body limits and path routing.
//! Lists and their cursors are in [`crate::paging`].

use std::borrow::Cow;

use lambda_http::http::{HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::DbError;
use crate::domain::Invalid;

pub type Response = lambda_http::Response<Body>;

/// Seconds a caller is asked to wait after a `503`.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// Every error a caller can see: `{"error": {"code", "message", "field"?}}` with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    field: Option<String>,
    allow: Option<&'static str>,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            allow: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Never says which part of the credentials was wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid credentials",
        )
    }

    /// A query parameter that does not parse; `field` names it.
    pub fn bad_query(field: &str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::bad_request(message)
        }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// `allow` is the `Allow` header: the methods the path does accept, e.g. `"GET, POST"`.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this path accepts {allow}"),
            )
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body must be at most {limit} bytes"),
        )
    }

    /// A well-formed value that breaks a rule; `field` names it, e.g. `readings[3].value`.
    pub fn validation(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message,
            )
        }
    }

    /// The account or device is at one of the documented limits; `message` names it.
    pub fn limit_reached(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "limit_reached", message)
    }

    /// The device sent more than its ingest rate allows; `Retry-After` is `seconds`.
    pub fn rate_limited(seconds: u32) -> Self {
        Self {
            retry_after: Some(seconds.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this device sends faster than its ingest rate allows; retry later",
            )
        }
    }

    /// A bug: the caller learns nothing more, the log has the details.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn unavailable() -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable, retry later",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        let envelope = Envelope {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = json(self.status, &envelope);
        let headers = response.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Invalid {
    /// The `422` naming `field`.
    pub fn at(self, field: impl Into<String>) -> ApiError {
        ApiError::validation(field, self.0)
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Unavailable(reason) => {
                tracing::warn!(%reason, "answering 503");
                Self::unavailable()
            }
            other => {
                tracing::error!(error = %other, "database error");
                Self::internal()
            }
        }
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    // Text, not Binary: lambda_http would base64-encode a binary body for API Gateway.
    match serde_json::to_string(body) {
        Ok(text) => build(status, Body::Text(text), Some("application/json")),
        Err(error) => {
            tracing::error!(%error, "response did not serialize");
            build(
                StatusCode::INTERNAL_SERVER_ERROR,
                Body::Text(r#"{"error":{"code":"internal","message":"internal error"}}"#.into()),
                Some("application/json"),
            )
        }
    }
}

/// A JSON response that carries a secret (a device key): no cache, shared or private, keeps it.
pub fn json_no_store<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = json(status, body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `204 No Content`.
pub fn no_content() -> Response {
    build(StatusCode::NO_CONTENT, Body::Empty, None)
}

fn build(status: StatusCode, body: Body, content_type: Option<&'static str>) -> Response {
    let mut response = lambda_http::Response::new(body);
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// Turns a handler's result into the response Lambda returns; errors are answers too.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

/// The raw body bytes (API Gateway's base64 already decoded).
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// A `Content-Type` other than JSON is `400`; none at all is read as JSON (small device HTTP
/// stacks often send none).
pub fn require_json(req: &Request) -> Result<(), ApiError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = content_type
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "Content-Type must be application/json",
        ))
    }
}

/// Parses a JSON object body of at most `limit` bytes into `T` (the content type as
/// [`require_json`] says).
pub fn json_body<T: DeserializeOwned>(req: &Request, limit: usize) -> Result<T, ApiError> {
    require_json(req)?;
    let bytes = body_bytes(req);
    if bytes.len() > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    // Every body of this API is an object (serde would also read a struct from an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("the body is not valid JSON for this route: {e}"))
    })
}

/// A function's routes: the path as API Gateway writes it (`{name}` for a parameter) and the
/// methods it accepts (`"GET, POST"`, also the `Allow` header of a `405`). Each function keeps
/// its table in one constant, which its router, the SAM template and the OpenAPI document are
/// checked against.
pub type Routes = [(&'static str, &'static str)];

/// Finds the request's route: its path template and the path parameters in order. A path that
/// is not in the table is `404`; a known path with another method is `405`.
pub fn route(routes: &Routes, req: &Request) -> Result<(&'static str, Vec<String>), ApiError> {
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (template, allowed) in routes {
        let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let matched = parts.iter().zip(&segments).all(|(part, segment)| {
            if part.starts_with('{') {
                params.push((*segment).to_owned());
                true
            } else {
                part == segment
            }
        });
        if matched {
            allow(req.method(), allowed)?;
            return Ok((template, params));
        }
    }
    Err(ApiError::not_found())
}

/// For a path that exists: the method is either one of `allowed` or a `405`.
fn allow(method: &Method, allowed: &'static str) -> Result<(), ApiError> {
    let ok = allowed
        .split(',')
        .map(str::trim)
        .any(|m| m.eq_ignore_ascii_case(method.as_str()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allowed))
    }
}

/// The first value of a query-string parameter, decoded.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|params| params.first(name))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &Response) -> serde_json::Value {
        match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            Body::Binary(b) => serde_json::from_slice(b).unwrap(),
            Body::Empty => serde_json::Value::Null,
            _ => unreachable!(),
        }
    }

    #[test]
    fn json_bodies_are_text_so_lambda_does_not_base64_them() {
        let response = json(StatusCode::OK, &serde_json::json!({"a": 1}));
        assert!(matches!(response.body(), Body::Text(t) if t == r#"{"a":1}"#));
    }

    #[test]
    fn validation_error_names_the_field() {
        let response = ApiError::validation("readings[3].value", "not a decimal").into_response();
        assert_eq!(response.status(), 422);
        assert_eq!(
            body_json(&response),
            serde_json::json!({"error": {"code": "validation_failed", "message": "not a decimal", "field": "readings[3].value"}})
        );
    }

    #[test]
    fn unavailable_sets_retry_after_and_405_sets_allow() {
        let response = ApiError::unavailable().into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = ApiError::method_not_allowed("GET, POST").into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        assert!(body_json(&response)["error"].get("field").is_none());
    }

    #[test]
    fn db_errors_do_not_leak() {
        let error: ApiError = DbError::RowCount(3).into();
        assert_eq!(error, ApiError::internal());
        let error: ApiError = DbError::Unavailable("host db.internal:5432 refused".into()).into();
        let body = body_json(&error.into_response());
        assert!(!body.to_string().contains("db.internal"));
    }

    #[test]
    fn allow_matches_methods_case_insensitively() {
        assert!(allow(&Method::GET, "GET, POST").is_ok());
        assert_eq!(
            allow(&Method::DELETE, "GET, POST").unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
