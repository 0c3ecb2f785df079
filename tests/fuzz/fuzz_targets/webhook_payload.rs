//! The webhook's handling of a delivery: signature verification over arbitrary headers and
//! bytes, then the payload parser. Neither may panic, and a forged delivery never verifies.
#![no_main]

use std::sync::OnceLock;

use lambda_http::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use svix::webhooks::Webhook;

/// Configured as the function would be (Svix's published test secret).
fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("a valid secret")
    })
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
    let _ = clerk_webhook::parse_event(body);
});
