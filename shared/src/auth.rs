//! Clerk session tokens → the caller's user id, verified the way Clerk's own `verifyToken` does:
//! RS256 only; `exp` required; `exp`, `nbf` and `iat` with 5 s of clock skew; `sub` required;
//! `azp` pinned when `CLERK_AUTHORIZED_PARTIES` is set; `iss` pinned when `CLERK_ISSUER` is set.
//! Every failure is the same `401`; the reason is logged at debug level only. A JWKS that cannot
//! be fetched is a `503` (the caller's token may be fine), remembered for a few seconds so that
//! requests do not each wait for the fetch to time out.
//!
//! The `__session` cookie is sent by the browser on its own, so a request that changes state with
//! it must show that it comes from the application: an `Origin` among `CLERK_AUTHORIZED_PARTIES`
//! and, for `POST`/`PUT`/`PATCH`, `Content-Type: application/json` (which a cross-site form or a
//! "simple" `fetch` cannot send without a CORS preflight). Bearer tokens are not sent by the
//! browser on its own: no such check.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lambda_http::Request;
use lambda_http::http::{HeaderMap, Method, header};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{Config, ConfigError};
use crate::db::Db;
use crate::http::{self, ApiError};
use crate::users::{self, UserState};

/// Clock skew allowed on `exp`, `nbf` and `iat`, as Clerk's SDK allows.
pub const CLOCK_SKEW_SECONDS: u64 = 5;
/// An unknown `kid` refetches the JWKS at most this often (key rotation, without a stampede).
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// A user already seen is not looked up again for this long (tombstone check, placeholder row).
const KNOWN_USER_TTL: Duration = Duration::from_secs(60);
/// A JWKS fetch that failed is not tried again for this long: requests answer `503` at once.
const JWKS_FAILURE_TTL: Duration = Duration::from_secs(10);
/// The development key pair's public half (`shared/dev/`): public, so never trusted in Lambda.
const DEV_PUBLIC_KEY: &str = include_str!("../dev/clerk-dev-key.pub.pem");

/// The verified caller: a Clerk user id (`sub`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a token was refused; never shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("malformed or unsupported token: {0}")]
    Malformed(String),
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("the JWKS could not be fetched: {0}")]
    Jwks(String),
}

/// What the caller's function does with the database: a writer makes sure the user has a row
/// (the foreign keys need it); a reader only checks the user was not deleted.
#[derive(Clone, Copy)]
enum Access {
    Write,
    Read,
}

/// Verifies session tokens. Built once per cold start.
pub struct Authenticator {
    keys: Keys,
    validation: Validation,
    authorized_parties: HashSet<String>,
    known_users: StdMutex<HashMap<String, Instant>>,
}

enum Keys {
    /// `CLERK_JWT_KEY`: one PEM public key, no network.
    Static(DecodingKey),
    /// `CLERK_JWKS_URL`: keys by `kid`, fetched on first use and on an unknown `kid`.
    Jwks(Jwks),
}

struct Jwks {
    url: String,
    http: reqwest::Client,
    /// How long a failed fetch is remembered ([`JWKS_FAILURE_TTL`]).
    failure_ttl: Duration,
    cache: Mutex<JwksCache>,
}

#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, DecodingKey>,
    loaded: bool,
    /// The last refetch caused by an unknown `kid`.
    refetched_at: Option<Instant>,
    /// The last fetch that failed (remembered for `Jwks::failure_ttl`).
    failed_at: Option<Instant>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
}

impl Authenticator {
    /// Needs `CLERK_JWT_KEY` or `CLERK_JWKS_URL` (the PEM key wins when both are set).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let keys = if let Some(pem) = &config.clerk_jwt_key {
            // Environment variables often carry the PEM with literal `\n`s.
            let pem = pem.expose().replace("\\n", "\n");
            if config.in_lambda && is_dev_key(&pem) {
                return Err(ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: "this is the repository's public development key: anyone can sign \
                             tokens for it; configure your Clerk instance's key"
                        .into(),
                });
            }
            Keys::Static(DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                ConfigError::Invalid {
                    name: "CLERK_JWT_KEY",
                    reason: format!("not an RSA public key in PEM form ({e})"),
                }
            })?)
        } else if let Some(url) = &config.clerk_jwks_url {
            crate::install_crypto_provider();
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| ConfigError::Invalid {
                    name: "CLERK_JWKS_URL",
                    reason: e.to_string(),
                })?;
            Keys::Jwks(Jwks {
                url: url.clone(),
                http,
                failure_ttl: JWKS_FAILURE_TTL,
                cache: Mutex::new(JwksCache::default()),
            })
        } else {
            return Err(ConfigError::Missing("CLERK_JWT_KEY or CLERK_JWKS_URL"));
        };

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = CLOCK_SKEW_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Clerk session tokens carry no audience by default; one that does is not refused for it.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(issuer) = &config.clerk_issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        }
        Ok(Self {
            keys,
            validation,
            authorized_parties: config.clerk_authorized_parties.iter().cloned().collect(),
            known_users: StdMutex::new(HashMap::new()),
        })
    }

    /// How long a failed JWKS fetch is remembered (tests shorten it).
    pub fn remember_jwks_failure_for(mut self, ttl: Duration) -> Self {
        if let Keys::Jwks(jwks) = &mut self.keys {
            jwks.failure_ttl = ttl;
        }
        self
    }

    /// The caller of a user route: a request that may use its credentials (see the module's
    /// note on cookies), a verified token, and a user who has not been deleted (a placeholder
    /// `user` row is made for a user the webhook has not told us about yet).
    pub async fn authenticate(&self, db: &Db, req: &Request) -> Result<UserId, ApiError> {
        self.authenticate_for(db, req, Access::Write).await
    }

    /// The same for a function that only reads (`rollups`, perhaps on a read replica): the
    /// deleted-user check is a read and no placeholder row is written.
    pub async fn authenticate_reader(&self, db: &Db, req: &Request) -> Result<UserId, ApiError> {
        self.authenticate_for(db, req, Access::Read).await
    }

    async fn authenticate_for(
        &self,
        db: &Db,
        req: &Request,
        access: Access,
    ) -> Result<UserId, ApiError> {
        let headers = req.headers();
        let by_cookie =
            !headers.contains_key(header::AUTHORIZATION) && session_token(headers).is_some();
        if by_cookie && !req.method().is_safe() {
            self.check_cookie_write(req)?;
        }
        let user = match self.verify_headers(headers).await {
            Ok(user) => user,
            Err(AuthError::Jwks(reason)) => {
                tracing::warn!(%reason, "answering 503: the JWKS is unavailable");
                return Err(ApiError::unavailable());
            }
            Err(reason) => {
                tracing::debug!(%reason, "session token refused");
                return Err(ApiError::unauthorized());
            }
        };
        if self.recently_seen(&user) {
            return Ok(user);
        }
        let state = match access {
            Access::Write => users::ensure(db, user.as_str()).await?,
            Access::Read => users::check(db, user.as_str()).await?,
        };
        if state == UserState::Deleted {
            tracing::debug!(user = user.as_str(), "session token of a deleted user");
            return Err(ApiError::unauthorized());
        }
        self.remember(&user);
        Ok(user)
    }

    /// A state-changing request authenticated by the cookie: from an authorized party's page, as
    /// JSON. Refused before anything is looked up or written.
    fn check_cookie_write(&self, req: &Request) -> Result<(), ApiError> {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| self.authorized_parties.contains(o)) {
            tracing::info!(
                ?origin,
                "cookie-authenticated write from an origin not authorized"
            );
            return Err(ApiError::unauthorized());
        }
        let sends_body = [Method::POST, Method::PUT, Method::PATCH].contains(req.method());
        if sends_body && req.headers().get(header::CONTENT_TYPE).is_none() {
            return Err(ApiError::bad_request(
                "Content-Type must be application/json",
            ));
        }
        http::require_json(req)
    }

    /// The token from `Authorization: Bearer …`, or from the `__session` cookie when there is no
    /// Authorization header, verified.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<UserId, AuthError> {
        let token = session_token(headers).ok_or(AuthError::Missing)?;
        self.verify(token).await
    }

    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Malformed(format!("alg {:?}", header.alg)));
        }
        if header.typ.as_deref().is_some_and(|typ| typ != "JWT") {
            return Err(AuthError::Malformed("typ is not JWT".into()));
        }
        let claims = match &self.keys {
            Keys::Static(key) => self.decode(token, key)?,
            Keys::Jwks(jwks) => {
                let key = jwks.key(header.kid.as_deref()).await?;
                self.decode(token, &key)?
            }
        };
        let now = jsonwebtoken::get_current_timestamp() as f64;
        if claims
            .iat
            .is_some_and(|iat| iat > now + CLOCK_SKEW_SECONDS as f64)
        {
            return Err(AuthError::Invalid("issued in the future".into()));
        }
        if !self.authorized_parties.is_empty()
            && !claims
                .azp
                .as_ref()
                .is_some_and(|azp| self.authorized_parties.contains(azp))
        {
            return Err(AuthError::Invalid("azp is not an authorized party".into()));
        }
        // A user id is stored as Postgres text, which cannot hold NUL.
        if claims.sub.is_empty() || claims.sub.contains('\0') {
            return Err(AuthError::Invalid("empty sub, or one with NUL".into()));
        }
        Ok(UserId(claims.sub))
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    fn recently_seen(&self, user: &UserId) -> bool {
        self.known_users.lock().is_ok_and(|known| {
            known
                .get(user.as_str())
                .is_some_and(|at| at.elapsed() < KNOWN_USER_TTL)
        })
    }

    fn remember(&self, user: &UserId) {
        if let Ok(mut known) = self.known_users.lock() {
            known.retain(|_, at| at.elapsed() < KNOWN_USER_TTL);
            known.insert(user.0.clone(), Instant::now());
        }
    }
}

impl Jwks {
    /// The key for `kid`. The set is fetched on first use; an unknown `kid` refetches it (Clerk
    /// rotated its keys), at most once a minute so that junk tokens cannot hammer Clerk.
    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let kid = kid.ok_or(AuthError::UnknownKey(None))?;
        let mut cache = self.cache.lock().await;
        if !cache.loaded {
            cache.keys = self.fetch_noting_failure(&mut cache).await?;
            cache.loaded = true;
        }
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_refetch = cache
            .refetched_at
            .is_none_or(|at| at.elapsed() >= JWKS_REFETCH_INTERVAL);
        if may_refetch {
            cache.refetched_at = Some(Instant::now());
            cache.keys = self.fetch_noting_failure(&mut cache).await?;
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::UnknownKey(Some(kid.to_owned())))
    }

    /// [`Jwks::fetch`], unless one failed less than `failure_ttl` ago.
    async fn fetch_noting_failure(
        &self,
        cache: &mut JwksCache,
    ) -> Result<HashMap<String, DecodingKey>, AuthError> {
        if let Some(at) = cache.failed_at.filter(|at| at.elapsed() < self.failure_ttl) {
            return Err(AuthError::Jwks(format!(
                "the last fetch failed {} ms ago",
                at.elapsed().as_millis()
            )));
        }
        let fetched = self.fetch().await;
        cache.failed_at = fetched.is_err().then(Instant::now);
        fetched
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| AuthError::Jwks(e.to_string()))?;
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| AuthError::Jwks(e.to_string()))?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, key))
            })
            .collect();
        tracing::info!(keys = keys.len(), "fetched JWKS");
        Ok(keys)
    }
}

/// Whether `pem` is the committed development public key (whatever its line breaks).
fn is_dev_key(pem: &str) -> bool {
    let body = |text: &str| -> String { text.split_whitespace().collect() };
    body(pem) == body(DEV_PUBLIC_KEY)
}

/// `Authorization: Bearer <token>`; without an Authorization header, the `__session` cookie.
/// An Authorization header of another scheme is not a session token (no cookie fallback then).
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return bearer(value.to_str().ok()?);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "__session")
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The credential of `Bearer <credential>` (scheme case-insensitive).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, credential) = authorization.trim().split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_wins_over_cookie() {
        let h = headers(&[("authorization", "Bearer abc"), ("cookie", "__session=xyz")]);
        assert_eq!(session_token(&h), Some("abc"));
        let h = headers(&[("authorization", "bEaReR   abc ")]);
        assert_eq!(session_token(&h), Some("abc"));
    }

    #[test]
    fn cookie_is_used_without_authorization() {
        let h = headers(&[("cookie", "theme=dark; __session=xyz; other=1")]);
        assert_eq!(session_token(&h), Some("xyz"));
        let h = headers(&[
            ("cookie", "__session_other=1"),
            ("cookie", "__session=second"),
        ]);
        assert_eq!(session_token(&h), Some("second"));
    }

    #[test]
    fn other_schemes_and_empty_values_are_nothing() {
        assert_eq!(
            session_token(&headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(
            session_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(session_token(&headers(&[("cookie", "__session=")])), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
        // An Authorization header of another scheme does not fall back to the cookie.
        let h = headers(&[("authorization", "Basic x"), ("cookie", "__session=xyz")]);
        assert_eq!(session_token(&h), None);
    }
}
