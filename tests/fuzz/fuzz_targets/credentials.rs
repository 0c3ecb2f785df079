//! Bearer and cookie extraction, and session-token verification, on arbitrary header values:
//! never a panic, and never a verified caller from bytes not signed with the key.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use lambda_http::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use shared::auth::Authenticator;
use shared::config::Config;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let vars = HashMap::from([
            ("DATABASE_URL".to_owned(), "postgres://unused@127.0.0.1/unused".to_owned()),
            (
                "CLERK_JWT_KEY".to_owned(),
                include_str!("../../../shared/dev/clerk-dev-key.pub.pem").to_owned(),
            ),
        ]);
        Authenticator::from_config(&Config::from_vars(&vars).expect("config")).expect("authenticator")
    })
}

fuzz_target!(|data: &[u8]| {
    // Up to a 0 byte: the Authorization header; after it: the Cookie header.
    let (authorization, cookie) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        if !authorization.is_empty() {
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    if let Ok(value) = HeaderValue::from_bytes(cookie) {
        headers.insert(header::COOKIE, value);
    }
    if let Some(token) = shared::auth::session_token(&headers) {
        // Arbitrary bytes are never a token signed with the development key.
        let verdict = futures::executor::block_on(authenticator().verify(token));
        assert!(verdict.is_err(), "forged token accepted: {token:?}");
    }
    if let Ok(text) = std::str::from_utf8(authorization) {
        let _ = shared::auth::bearer(text);
        let _ = shared::domain::DeviceKey::parse(text);
    }
});
