//! The webhook's handling of a delivery: signature verification over arbitrary headers and
//! bytes, then the payload parser. Neither may panic, a forged delivery never verifies, and what
//! the parser accepts Postgres can store (a user id without NUL, times in the years 0000-9999).
#![no_main]

use std::sync::OnceLock;

use lambda_http::http::{HeaderMap, HeaderValue};
use chrono::DateTime;
use clerk_webhook::Change;
use libfuzzer_sys::fuzz_target;
use shared::domain::in_rfc3339_range;
use svix::webhooks::Webhook;

/// Configured as the function would be (Svix's published test secret).
fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("a valid secret")
    })
}

#[derive(serde::Deserialize)]
struct Data {
    data: serde_json::Value,
}

fuzz_target!(|data: &[u8]| {
    // Up to a 0 byte: the svix-signature header; after it: the body.
    let (signature, body) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let mut headers = HeaderMap::new();
    headers.insert("svix-id", HeaderValue::from_static("msg_fuzz"));
    headers.insert("svix-timestamp", HeaderValue::from_static("1795687200"));
    if let Ok(value) = HeaderValue::from_bytes(signature) {
        headers.insert("svix-signature", value);
    }
    assert!(
        webhook().verify_ignoring_timestamp(body, &headers).is_err(),
        "a forged delivery verified"
    );
    // What the handler does with a body once it is verified.
    match clerk_webhook::parse_event(body) {
        Ok((_, Change::Upsert(_))) => {
            // Read `data` as the parser did (other fields skipped unchecked), and look at it.
            let event: Data = serde_json::from_slice(body).expect("it parsed");
            let id = event.data["id"].as_str().expect("an accepted user has an id");
            assert!(!id.contains('\0'), "an accepted user id holds NUL");
            let updated_at = event.data["updated_at"].as_i64().expect("and an updated_at");
            assert!(
                DateTime::from_timestamp_millis(updated_at).is_some_and(in_rfc3339_range),
                "an accepted updated_at Postgres cannot store: {updated_at}"
            );
        }
        Ok((_, Change::Delete { id, at })) => {
            assert!(!id.contains('\0'), "an accepted user id holds NUL");
            assert!(in_rfc3339_range(at), "an accepted deletion time out of range: {at}");
        }
        Ok((_, Change::Ignore)) | Err(_) => {}
    }
});
