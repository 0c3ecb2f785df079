//! Clerk session tokens: the matrix of what Clerk's own `verifyToken` accepts and refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shared::auth::{AuthError, Authenticator};
use shared::config::Config;
use tests::Expect::{Bad, Unauthorized};
use tests::clerk::{self, claims, dev_signing_key, now, other_signing_key, sign};
use tests::{Event, Functions, TestDb, assert_error, check_refusals};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: std::collections::HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    vars.insert(
        "DATABASE_URL".into(),
        "postgres://unused@127.0.0.1/unused".into(),
    );
    Config::from_vars(&vars).unwrap()
}

/// Pinned like a production deployment: key, issuer and authorized parties.
fn pinned() -> Authenticator {
    let key = clerk::dev_public_key();
    Authenticator::from_config(&config(&[
        ("CLERK_JWT_KEY", &key),
        ("CLERK_ISSUER", "https://clerk.dev.localhost"),
        (
            "CLERK_AUTHORIZED_PARTIES",
            "https://app.example.com, http://localhost:3000",
        ),
    ]))
    .unwrap()
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

async fn verdict(auth: &Authenticator, token: &str) -> Result<String, AuthError> {
    auth.verify(token).await.map(|u| u.as_str().to_owned())
}

#[tokio::test]
async fn a_valid_token_yields_its_subject() {
    let token = clerk::token("user_valid");
    assert_eq!(verdict(&pinned(), &token).await.unwrap(), "user_valid");
}

#[tokio::test]
async fn time_claims_allow_five_seconds_of_skew_and_no_more() {
    let auth = pinned();
    let key = dev_signing_key();
    // (claim, seconds from now or no value, accepted?). Each case reads the clock right before
    // it signs and verifies: on a loaded machine seconds can pass between cases, and 6 s ahead
    // would turn into 4. Within a case the clock is read in whole seconds and can cross a second
    // before the check, so a claim ahead is refused at 7 s (6 s could look like 5).
    let cases = [
        ("exp", Some(-6), false, "expired by 6 s"),
        ("exp", Some(-3), true, "expired by 3 s, within skew"),
        ("nbf", Some(7), false, "nbf 7 s ahead"),
        ("nbf", Some(3), true, "nbf 3 s ahead"),
        ("iat", Some(7), false, "iat 7 s ahead"),
        ("iat", Some(3), true, "iat 3 s ahead"),
        ("exp", None, false, "no exp"),
    ];
    for (claim, offset, accepted, what) in cases {
        let changes = json!({ claim: offset.map(|seconds| now() + seconds) });
        let token = sign(&with(claims("user_t"), changes), &key, Some("dev"));
        assert_eq!(verdict(&auth, &token).await.is_ok(), accepted, "{what}");
    }
}

#[tokio::test]
async fn pinned_claims_are_enforced() {
    let auth = pinned();
    let key = dev_signing_key();
    let cases = [
        (
            json!({"azp": "https://evil.example.com"}),
            false,
            "wrong azp",
        ),
        (
            json!({"azp": null}),
            false,
            "missing azp while parties are configured",
        ),
        (
            json!({"azp": "https://app.example.com"}),
            true,
            "the other authorized party",
        ),
        (
            json!({"iss": "https://clerk.evil.example"}),
            false,
            "wrong iss",
        ),
        (
            json!({"iss": null}),
            false,
            "missing iss while an issuer is pinned",
        ),
        (json!({"sub": null}), false, "no sub"),
        (json!({"sub": ""}), false, "empty sub"),
        (
            json!({"sub": "user_\u{0}x"}),
            false,
            "a sub with NUL (Postgres text cannot hold it)",
        ),
        (
            json!({"aud": "some-audience"}),
            true,
            "an aud alone is no reason to refuse",
        ),
    ];
    for (changes, accepted, what) in cases {
        let token = sign(&with(claims("user_p"), changes), &key, Some("dev"));
        assert_eq!(verdict(&auth, &token).await.is_ok(), accepted, "{what}");
    }
    // Without parties configured, a token without azp is fine.
    let key_pem = clerk::dev_public_key();
    let open = Authenticator::from_config(&config(&[("CLERK_JWT_KEY", &key_pem)])).unwrap();
    let token = sign(
        &with(claims("user_p"), json!({"azp": null})),
        &key,
        Some("dev"),
    );
    assert_eq!(verdict(&open, &token).await.unwrap(), "user_p");
}

#[tokio::test]
async fn forgeries_and_garbage_are_refused() {
    let auth = pinned();
    let body = claims("user_f");

    let wrong_key = sign(&body, &other_signing_key(), Some("dev"));
    assert!(matches!(
        verdict(&auth, &wrong_key).await,
        Err(AuthError::Invalid(_))
    ));

    // HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(clerk::dev_public_key().as_bytes()),
    )
    .unwrap();
    assert!(verdict(&auth, &hs256).await.is_err(), "HS256 forgery");

    let none = clerk::unsigned(&json!({"alg": "none", "typ": "JWT"}), &body);
    assert!(verdict(&auth, &none).await.is_err(), "alg none");

    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    let odd_typ = jsonwebtoken::encode(&header, &body, &dev_signing_key()).unwrap();
    assert!(
        verdict(&auth, &odd_typ).await.is_err(),
        "typ other than JWT"
    );

    for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "...."] {
        assert!(verdict(&auth, garbage).await.is_err(), "{garbage:?}");
    }
}

#[tokio::test]
async fn the_cookie_is_used_only_without_an_authorization_header() {
    let auth = pinned();
    let good = clerk::token("user_cookie");
    let request = Event::load("devices-list")
        .without_header("authorization")
        .header("cookie", &format!("theme=dark; __session={good}"))
        .request();
    let user = auth.verify_headers(request.headers()).await.unwrap();
    assert_eq!(user.as_str(), "user_cookie");

    // A bad Authorization header is not rescued by a good cookie.
    let request = Event::load("devices-list")
        .header("authorization", "Bearer not-a-token")
        .header("cookie", &format!("__session={good}"))
        .request();
    assert!(auth.verify_headers(request.headers()).await.is_err());
}

/// A JWKS endpoint on loopback that counts its requests; what it serves can be changed, and it
/// can be made to fail (`500`).
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    served: Arc<std::sync::Mutex<String>>,
    failing: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(set: &JwkSet) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let hits = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(std::sync::Mutex::new(serde_json::to_string(set).unwrap()));
        let failing = Arc::new(AtomicBool::new(false));
        let (h, s, f) = (hits.clone(), served.clone(), failing.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                h.fetch_add(1, Ordering::SeqCst);
                let (status, body) = if f.load(Ordering::SeqCst) {
                    ("500 Internal Server Error", "{}".to_owned())
                } else {
                    ("200 OK", s.lock().unwrap().clone())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        Self {
            url,
            hits,
            served,
            failing,
        }
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn serve(&self, set: &JwkSet) {
        *self.served.lock().unwrap() = serde_json::to_string(set).unwrap();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwk(key: &EncodingKey, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk
}

#[tokio::test]
async fn jwks_keys_are_chosen_by_kid_cached_and_refetched_once_on_an_unknown_kid() {
    let (dev, other) = (dev_signing_key(), other_signing_key());
    let server = JwksServer::start(&JwkSet {
        keys: vec![jwk(&dev, "ins_key_1"), jwk(&other, "ins_key_2")],
    })
    .await;
    let auth = Authenticator::from_config(&config(&[("CLERK_JWKS_URL", &server.url)])).unwrap();

    let body = claims("user_jwks");
    assert!(
        verdict(&auth, &sign(&body, &other, Some("ins_key_2")))
            .await
            .is_ok()
    );
    assert!(
        verdict(&auth, &sign(&body, &dev, Some("ins_key_1")))
            .await
            .is_ok()
    );
    // The right kid with the wrong key's signature is still a forgery.
    assert!(
        verdict(&auth, &sign(&body, &dev, Some("ins_key_2")))
            .await
            .is_err()
    );
    assert_eq!(server.hits(), 1, "fetched once, then cached");

    // Clerk rotates: a new kid appears, and the first token signed with it refetches.
    server.serve(&JwkSet {
        keys: vec![jwk(&dev, "ins_key_1"), jwk(&other, "ins_key_3")],
    });
    assert!(
        verdict(&auth, &sign(&body, &other, Some("ins_key_3")))
            .await
            .is_ok()
    );
    assert_eq!(server.hits(), 2);

    // An unknown kid right after that does not refetch again (at most once a minute).
    let unknown = verdict(&auth, &sign(&body, &other, Some("ins_key_9"))).await;
    assert!(
        matches!(unknown, Err(AuthError::UnknownKey(_))),
        "{unknown:?}"
    );
    assert_eq!(server.hits(), 2);
    assert!(
        verdict(&auth, &sign(&body, &other, None)).await.is_err(),
        "no kid"
    );
}

#[tokio::test]
async fn a_missing_key_configuration_is_a_start_up_error() {
    let error = Authenticator::from_config(&config(&[])).err().unwrap();
    assert!(error.to_string().contains("CLERK_JWT_KEY"), "{error}");
    let error = Authenticator::from_config(&config(&[("CLERK_JWT_KEY", "not a pem")]))
        .err()
        .unwrap();
    assert!(error.to_string().contains("CLERK_JWT_KEY"), "{error}");
}

#[tokio::test]
async fn a_new_user_gets_a_placeholder_row_and_a_deleted_one_is_refused() {
    let test = TestDb::new().await;
    let db = test.db();
    let auth = pinned();
    let request = |user: &str| {
        Event::load("devices-list")
            .header("authorization", &format!("Bearer {}", clerk::token(user)))
            .request()
    };

    let user = auth.authenticate(&db, &request("user_new")).await.unwrap();
    assert_eq!(user.as_str(), "user_new");
    let row = test
        .direct
        .query_one(
            r#"SELECT email, updated_at IS NULL FROM "user" WHERE id = 'user_new'"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert!(row.get::<_, bool>(1), "a placeholder has no version yet");

    test.direct
        .batch_execute("INSERT INTO user_tombstones (id, deleted_at) VALUES ('user_gone', now())")
        .await
        .unwrap();
    let refused = auth
        .authenticate(&db, &request("user_gone"))
        .await
        .unwrap_err();
    assert_error(&refused.into_response(), 401, "unauthorized", None);
    assert_eq!(test.count(r#""user" WHERE id = 'user_gone'"#).await, 0);

    let refused = auth
        .authenticate(
            &db,
            &Event::load("devices-list")
                .without_header("authorization")
                .request(),
        )
        .await
        .unwrap_err();
    assert_error(&refused.into_response(), 401, "unauthorized", None);
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_is_503_for_a_moment_then_recovers() {
    let server = JwksServer::start(&JwkSet {
        keys: vec![jwk(&dev_signing_key(), "ins_key_1")],
    })
    .await;
    server.fail(true);
    let test = TestDb::new().await;
    let config = test.config(&[("CLERK_JWT_KEY", ""), ("CLERK_JWKS_URL", &server.url)]);
    let mut state = devices::State::new(&config).unwrap();
    // The failure is remembered for 10 s in production; here for 1.5 s (long enough for the
    // second request to come within it on a loaded machine).
    state.auth = Authenticator::from_config(&config)
        .unwrap()
        .remember_jwks_failure_for(Duration::from_millis(1500));
    let token = sign(
        &claims("user_jwks_down"),
        &dev_signing_key(),
        Some("ins_key_1"),
    );
    let request = || {
        Event::load("devices-list")
            .header("authorization", &format!("Bearer {token}"))
            .request()
    };

    let response = devices::handle(&state, request()).await;
    assert_error(&response, 503, "unavailable", None);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(server.hits(), 1);
    // Remembered: the next request does not wait for another fetch.
    let response = devices::handle(&state, request()).await;
    assert_error(&response, 503, "unavailable", None);
    assert_eq!(server.hits(), 1);

    server.fail(false);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(devices::handle(&state, request()).await.status(), 200);
    assert_eq!(devices::handle(&state, request()).await.status(), 200);
    assert_eq!(server.hits(), 2, "fetched again once, then cached");
}

#[tokio::test]
async fn a_user_deleted_after_their_token_was_checked_cannot_write() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[]));
    let user = "user_leaving";
    let (status, device) = functions
        .call(
            Event::load("devices-create")
                .as_user(user)
                .json_body(&json!({"name": "d"})),
        )
        .await;
    assert_eq!(status, 201);
    // Clerk deletes the user (what the webhook does); this instance still knows them as active.
    test.direct
        .batch_execute(&format!(
            r#"INSERT INTO user_tombstones (id, deleted_at) VALUES ('{user}', now());
               DELETE FROM "user" WHERE id = '{user}';"#
        ))
        .await
        .unwrap();
    let id = device["id"].as_str().unwrap();
    #[rustfmt::skip]
    let cases = [
        (Event::load("devices-create").as_user(user).json_body(&json!({"name": "again"})), Unauthorized),
        (Event::load("rules-create").as_user(user).at("POST", &format!("/v1/devices/{id}/rules")), tests::Expect::NotFound),
    ];
    check_refusals(&functions, cases).await;
    assert_eq!(test.count("devices").await, 0);
    assert_eq!(test.count(r#""user""#).await, 0);
}

/// The cross-site request of the security review: a page on the same site posts with the
/// victim's cookie and no Content-Type (no CORS preflight for that).
#[tokio::test]
async fn cookie_writes_need_an_authorized_origin_and_json() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[(
        "CLERK_AUTHORIZED_PARTIES",
        "https://app.example.com,http://localhost:3000",
    )]));
    let token = clerk::token("user_cookie");
    let by_cookie = |event: &str| {
        Event::load(event)
            .without_header("authorization")
            .header("cookie", &format!("__session={token}"))
    };
    let create = || {
        by_cookie("devices-create")
            .without_header("content-type")
            .body(r#"{"name":"x"}"#)
    };
    const APP: &str = "https://app.example.com";
    #[rustfmt::skip]
    let cases = [
        (create(), Unauthorized),
        (create().header("origin", APP), Bad),
        (create().header("origin", APP).header("content-type", "text/plain"), Bad),
        (create().header("origin", APP).header("content-type", "application/x-www-form-urlencoded"), Bad),
        (create().header("origin", "https://evil.example").header("content-type", "application/json"), Unauthorized),
        (create().header("origin", "null").header("content-type", "application/json"), Unauthorized),
    ];
    check_refusals(&functions, cases).await;
    assert_eq!(test.count("devices").await, 0);
    assert_eq!(
        test.count(r#""user""#).await,
        0,
        "refused before anything was written"
    );

    let (status, created) = functions
        .call(
            create()
                .header("origin", APP)
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // Reads need no Origin; bearer-token calls are unaffected.
    assert_eq!(functions.call(by_cookie("devices-list")).await.0, 200);
    let bearer = Event::load("devices-create")
        .as_user("user_cookie")
        .without_header("content-type")
        .body(r#"{"name":"y"}"#);
    assert_eq!(functions.call(bearer).await.0, 201);
    // A delete by cookie needs the Origin too.
    let path = format!("/v1/devices/{}", created["id"].as_str().unwrap());
    let delete = || by_cookie("devices-delete").at("DELETE", &path);
    check_refusals(&functions, [(delete(), Unauthorized)]).await;
    assert_eq!(functions.call(delete().header("origin", APP)).await.0, 204);
}

#[tokio::test]
async fn the_committed_development_key_is_refused_in_lambda() {
    let dev = clerk::dev_public_key();
    let escaped = dev.replace('\n', "\\n");
    let lambda = [
        ("AWS_LAMBDA_FUNCTION_NAME", "devices"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/devices"),
    ];
    for key in [dev.as_str(), escaped.as_str()] {
        let in_lambda = config(&[("CLERK_JWT_KEY", key), lambda[0], lambda[1]]);
        let error = Authenticator::from_config(&in_lambda).err().unwrap();
        assert!(error.to_string().contains("CLERK_JWT_KEY"), "{error}");
        assert!(devices::State::new(&in_lambda).is_err());
        // Locally (scripts/dev, tests; `cargo lambda watch` sets the function name) it is the
        // point of it.
        assert!(Authenticator::from_config(&config(&[("CLERK_JWT_KEY", key)])).is_ok());
        let watch = config(&[("CLERK_JWT_KEY", key), lambda[0]]);
        assert!(Authenticator::from_config(&watch).is_ok());
    }
    let other = clerk::other_public_key();
    let in_lambda = config(&[("CLERK_JWT_KEY", &other), lambda[0], lambda[1]]);
    assert!(Authenticator::from_config(&in_lambda).is_ok());
}
