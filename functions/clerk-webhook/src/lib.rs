//! `POST /webhooks/clerk`: Clerk's user events, Svix-signed, mirrored into the `user` table.
//!
//! - `user.created` / `user.updated` upsert the row; an event older than (or as old as) the
//!   stored one changes nothing, so duplicate, late and concurrent deliveries converge.
//! - `user.deleted` removes the user and everything they own and leaves a tombstone: a late or
//!   replayed event for that id is answered `200` and ignored, so Svix stops retrying.
//! - Other event types: `200 {"ok":true,"ignored":true}`.

mod sql;

use chrono::{DateTime, Utc};
use lambda_http::Request;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::json;
use shared::config::Config;
use shared::db::{Db, DbError, Idempotence};
use shared::domain::in_rfc3339_range;
use shared::http::{self, ApiError, Response};
use shared::users::{self, UserState};

/// Clerk user events are a few KiB; anything this large is not one.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Built once per cold start; without a valid `CLERK_WEBHOOK_SECRET` the function does not start.
pub struct State {
    pub db: Db,
    webhook: svix::webhooks::Webhook,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let secret = config.require_clerk_webhook_secret()?;
        let webhook = svix::webhooks::Webhook::new(secret.expose()).map_err(|_| {
            shared::config::ConfigError::Invalid {
                name: "CLERK_WEBHOOK_SECRET",
                reason: "expected whsec_ followed by base64".into(),
            }
        })?;
        Ok(Self {
            db: Db::new(&config.database_url)?,
            webhook,
        })
    }
}

/// The one route of this function.
pub const ROUTES: &http::Routes = &[("/webhooks/clerk", "POST")];

#[tracing::instrument(skip_all, fields(method = %req.method(), path = req.uri().path()))]
pub async fn handle(state: &State, req: Request) -> Response {
    http::respond(receive(state, &req).await)
}

/// The envelope of every Clerk event.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: serde_json::Value,
    /// Milliseconds since the epoch: when Clerk emitted the event.
    #[serde(default, deserialize_with = "optional_millis")]
    timestamp: Option<DateTime<Utc>>,
}

/// The parts of Clerk's user object we keep.
#[derive(Debug, Deserialize)]
pub struct ClerkUser {
    #[serde(deserialize_with = "id")]
    id: String,
    #[serde(default)]
    email_addresses: Vec<EmailAddress>,
    #[serde(default)]
    primary_email_address_id: Option<String>,
    #[serde(default, deserialize_with = "optional_text")]
    first_name: Option<String>,
    #[serde(default, deserialize_with = "optional_text")]
    last_name: Option<String>,
    #[serde(default, deserialize_with = "optional_text")]
    image_url: Option<String>,
    /// Milliseconds since the epoch: the version of this user, and our staleness key.
    #[serde(deserialize_with = "millis")]
    updated_at: DateTime<Utc>,
}

/// Unix milliseconds, as a time Postgres can keep: years 0000 to 9999 (a signed payload that
/// names another time is malformed, `400`, not a `500` from the database).
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let ms = i64::deserialize(d)?;
    DateTime::from_timestamp_millis(ms)
        .filter(|&t| in_rfc3339_range(t))
        .ok_or_else(|| D::Error::custom(format!("{ms} ms is not in the years 0000 to 9999")))
}

fn optional_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Millis(#[serde(deserialize_with = "millis")] DateTime<Utc>);
    Ok(Option::<Millis>::deserialize(d)?.map(|Millis(t)| t))
}

#[derive(Debug, Deserialize)]
struct EmailAddress {
    id: String,
    #[serde(deserialize_with = "text")]
    email_address: String,
}

#[derive(Deserialize)]
struct DeletedUser {
    #[serde(deserialize_with = "id")]
    id: String,
}

// Postgres text cannot hold NUL (U+0000): a user id with one is malformed (`400`); the stored
// display fields drop it rather than lose the whole update to a `500` that Svix would retry.

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    if id.contains('\0') {
        return Err(D::Error::custom("a user id cannot hold NUL"));
    }
    Ok(id)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let mut text = String::deserialize(d)?;
    text.retain(|c| c != '\0');
    Ok(text)
}

fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Text(#[serde(deserialize_with = "text")] String);
    Ok(Option::<Text>::deserialize(d)?.map(|Text(t)| t))
}

async fn receive(state: &State, req: &Request) -> Result<Response, ApiError> {
    http::route(ROUTES, req)?;
    let body = http::body_bytes(req);
    if body.len() > BODY_LIMIT {
        return Err(ApiError::payload_too_large(BODY_LIMIT));
    }
    // The signature covers the raw bytes: verify before parsing anything.
    if let Err(reason) = state.webhook.verify(body, req.headers()) {
        tracing::info!(%reason, "webhook signature refused");
        return Err(ApiError::bad_request("invalid webhook signature"));
    }
    let (kind, change) = parse_event(body)?;
    let outcome = match change {
        Change::Upsert(user) => upsert(&state.db, &user).await?,
        Change::Delete { id, at } => delete(&state.db, &id, at).await?,
        Change::Ignore => Outcome::Ignored,
    };
    tracing::info!(kind, ?outcome, "clerk event");
    Ok(http::json(
        lambda_http::http::StatusCode::OK,
        &match outcome {
            Outcome::Ignored => json!({"ok": true, "ignored": true}),
            Outcome::Applied { changed } => json!({"ok": true, "changed": changed}),
        },
    ))
}

/// What a verified delivery asks for.
#[derive(Debug)]
pub enum Change {
    Upsert(ClerkUser),
    Delete { id: String, at: DateTime<Utc> },
    Ignore,
}

/// Parses a verified delivery: the event type and what it asks for. Malformed is `400`.
pub fn parse_event(body: &[u8]) -> Result<(String, Change), ApiError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("not a Clerk event: {e}")))?;
    let change = match event.kind.as_str() {
        "user.created" | "user.updated" => Change::Upsert(
            serde_json::from_value(event.data)
                .map_err(|e| ApiError::bad_request(format!("not a Clerk user: {e}")))?,
        ),
        "user.deleted" => {
            let user: DeletedUser = serde_json::from_value(event.data)
                .map_err(|e| ApiError::bad_request(format!("not a deleted Clerk user: {e}")))?;
            let at = event.timestamp.unwrap_or_else(Utc::now);
            Change::Delete { id: user.id, at }
        }
        _ => Change::Ignore,
    };
    Ok((event.kind, change))
}

#[derive(Debug)]
enum Outcome {
    Applied {
        changed: bool,
    },
    /// Not a user event, or an event for a deleted user.
    Ignored,
}

async fn upsert(db: &Db, user: &ClerkUser) -> Result<Outcome, DbError> {
    let email = user.primary_email_address_id.as_ref().and_then(|primary| {
        user.email_addresses
            .iter()
            .find(|address| &address.id == primary)
            .map(|address| address.email_address.as_str())
    });
    db.transaction(Idempotence::Idempotent, |tx| async move {
        let changed = sql::upsert_user(&tx, user, email).await?;
        Ok(match users::drop_if_tombstoned(&tx, &user.id).await? {
            UserState::Deleted => Outcome::Ignored,
            UserState::Active => Outcome::Applied { changed },
        })
    })
    .await
}

async fn delete(db: &Db, user_id: &str, at: DateTime<Utc>) -> Result<Outcome, DbError> {
    db.transaction(Idempotence::Idempotent, |tx| async move {
        let new_tombstone = sql::tombstone_and_lock_user(&tx, user_id, at).await?;
        sql::delete_user(&tx, user_id).await?;
        Ok(Outcome::Applied {
            changed: new_tombstone,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use lambda_http::http::{HeaderMap, HeaderValue};
    use svix::webhooks::Webhook;

    // Svix's published test vector.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: &str = "1649367553";
    const BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("svix-id", HeaderValue::from_str(id).unwrap());
        map.insert("svix-timestamp", HeaderValue::from_str(timestamp).unwrap());
        map.insert("svix-signature", HeaderValue::from_str(signature).unwrap());
        map
    }

    #[test]
    fn the_published_test_vector_verifies() {
        let webhook = Webhook::new(SECRET).unwrap();
        let good = headers(ID, TIMESTAMP, SIGNATURE);
        webhook
            .verify_ignoring_timestamp(BODY.as_bytes(), &good)
            .unwrap();
        // With the 5-minute tolerance (as the handler verifies), a 2022 timestamp is refused.
        assert!(webhook.verify(BODY.as_bytes(), &good).is_err());
    }

    #[test]
    fn any_change_breaks_it() {
        let webhook = Webhook::new(SECRET).unwrap();
        let changed_body = BODY.replace("test_user", "test_usex");
        assert!(
            webhook
                .verify_ignoring_timestamp(
                    changed_body.as_bytes(),
                    &headers(ID, TIMESTAMP, SIGNATURE)
                )
                .is_err()
        );
        assert!(
            webhook
                .verify_ignoring_timestamp(BODY.as_bytes(), &headers(ID, "1649367554", SIGNATURE))
                .is_err()
        );
        assert!(
            webhook
                .verify_ignoring_timestamp(
                    BODY.as_bytes(),
                    &headers("msg_other", TIMESTAMP, SIGNATURE)
                )
                .is_err()
        );
        let other = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(
            other
                .verify_ignoring_timestamp(BODY.as_bytes(), &headers(ID, TIMESTAMP, SIGNATURE))
                .is_err()
        );
    }

    #[test]
    fn one_valid_signature_among_invalid_ones_is_enough() {
        let webhook = Webhook::new(SECRET).unwrap();
        let list = format!(
            "v1,Zm9yZ2Vk v2,{} {SIGNATURE} v1,YW5vdGhlcg==",
            &SIGNATURE[3..]
        );
        webhook
            .verify_ignoring_timestamp(BODY.as_bytes(), &headers(ID, TIMESTAMP, &list))
            .unwrap();
        let only_invalid = "v1,Zm9yZ2Vk v1,YW5vdGhlcg==";
        assert!(
            webhook
                .verify_ignoring_timestamp(BODY.as_bytes(), &headers(ID, TIMESTAMP, only_invalid))
                .is_err()
        );
    }

    /// Found by the webhook_payload fuzz target (before the fix, 179568600000022222 ms, past
    /// what chrono can hold, became 1970-01-01 and was stored as the user's version).
    #[test]
    fn times_postgres_cannot_store_are_malformed() {
        for (kind, data) in [
            (
                "user.updated",
                r#"{"id": "user_x", "updated_at": 179568600000022222}"#,
            ),
            (
                "user.updated",
                r#"{"id": "user_x", "updated_at": 253402300800000}"#,
            ),
            (
                "user.created",
                r#"{"id": "user_x", "updated_at": -377000000000000}"#,
            ),
        ] {
            let body = format!(r#"{{"type": "{kind}", "data": {data}}}"#);
            let error = super::parse_event(body.as_bytes()).unwrap_err();
            assert_eq!(error.status(), 400, "{body}");
        }
        let deletion = r#"{"type": "user.deleted", "timestamp": 179568600000022222, "data": {"id": "user_x"}}"#;
        assert!(super::parse_event(deletion.as_bytes()).is_err());
        // The edges of the range are fine.
        for ms in [-62_167_219_200_000i64, 253_402_300_799_999] {
            let body = format!(
                r#"{{"type": "user.updated", "data": {{"id": "user_x", "updated_at": {ms}}}}}"#
            );
            assert!(super::parse_event(body.as_bytes()).is_ok(), "{ms}");
        }
    }
}
