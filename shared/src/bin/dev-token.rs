//! `cargo run -p shared --bin dev-token -- <user_id> [ttl_seconds]`: prints a Clerk-shaped
//! session token for local use, signed with the development key in `shared/dev/`, whose public
//! half is the local default `CLERK_JWT_KEY` of `scripts/dev`.
//!
//! The development key is public (it is in the repository): never configure it anywhere real.

use std::process::ExitCode;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

const DEV_PRIVATE_KEY: &str = include_str!("../../dev/clerk-dev-key.pem");

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    azp: &'a str,
    sid: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(user) = args
        .first()
        .filter(|u| !u.is_empty() && !u.starts_with('-'))
    else {
        eprintln!("usage: dev-token <user_id> [ttl_seconds]   (e.g. dev-token user_123)");
        return ExitCode::FAILURE;
    };
    let ttl = match args.get(1).map(|t| t.parse::<u64>()) {
        None => 3600,
        Some(Ok(ttl)) if ttl > 0 => ttl,
        Some(_) => {
            eprintln!("dev-token: ttl_seconds must be a positive whole number");
            return ExitCode::FAILURE;
        }
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: user,
        iss: "https://clerk.dev.localhost",
        azp: "http://localhost:3000",
        sid: "sess_dev",
        iat: now,
        nbf: now,
        exp: now + ttl,
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("dev".into());
    let token = EncodingKey::from_rsa_pem(DEV_PRIVATE_KEY.as_bytes())
        .and_then(|key| jsonwebtoken::encode(&header, &claims, &key));
    match token {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("dev-token: {error}");
            ExitCode::FAILURE
        }
    }
}
