//! Clerk as the tests see it: session tokens signed with the development key (or another), and
//! webhook deliveries signed the way Svix signs them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::Event;

/// Svix's published test secret; the webhook tests configure it.
pub const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn repo_file(path: &str) -> String {
    let full = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// The public half of the development key: the local default `CLERK_JWT_KEY`.
pub fn dev_public_key() -> String {
    repo_file("shared/dev/clerk-dev-key.pub.pem")
}

pub fn other_public_key() -> String {
    repo_file("tests/fixtures/other-key.pub.pem")
}

pub fn dev_signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(repo_file("shared/dev/clerk-dev-key.pem").as_bytes()).unwrap()
}

pub fn other_signing_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(repo_file("tests/fixtures/other-key.pem").as_bytes()).unwrap()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a fresh Clerk session token for `sub`.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "sub": sub, "iat": now, "nbf": now - 2, "exp": now + 60,
        "azp": "http://localhost:3000", "iss": "https://clerk.dev.localhost", "sid": "sess_test",
    })
}

/// An RS256 token with `kid`, signed with `key`.
pub fn sign(claims: &Value, key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A valid session token for `sub`, signed with the development key.
pub fn token(sub: &str) -> String {
    sign(&claims(sub), &dev_signing_key(), Some("dev"))
}

/// A token with any header, unsigned (for `alg: none` and friends).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A webhook delivery from `events/<name>.json` with `body` as its payload, signed with
/// [`WEBHOOK_SECRET`] at `timestamp` (seconds), as Svix delivers it.
pub fn webhook(name: &str, body: &Value, msg_id: &str, timestamp: i64) -> Event {
    let text = body.to_string();
    let signature = svix::webhooks::Webhook::new(WEBHOOK_SECRET)
        .unwrap()
        .sign(msg_id, timestamp, text.as_bytes())
        .unwrap();
    Event::load(name)
        .body(&text)
        .header("svix-id", msg_id)
        .header("svix-timestamp", &timestamp.to_string())
        .header("svix-signature", &signature)
}

/// The payload stored in `events/<name>.json`.
pub fn payload(name: &str) -> Value {
    let event = Event::load(name);
    serde_json::from_str(event.json()["body"].as_str().unwrap()).unwrap()
}
