//! Hostile input that a schema-driven generator misses: huge and deeply nested bodies, invalid
//! UTF-8, duplicate keys, 10,000-digit numbers, lying content types, metacharacters, odd header
//! case. Never a 500, never a partial write, and strings come back exactly as sent.

use serde_json::{Value, json};
use tests::{Event, Functions, TestDb, assert_error, body_json};

const USER: &str = "user_hostile";

struct Api {
    test: TestDb,
    functions: Functions,
    key: String,
}

async fn api() -> Api {
    let test = TestDb::new().await;
    let (_, key) = test.device(USER).await;
    Api {
        functions: Functions::new(&test.config(&[])),
        test,
        key,
    }
}

impl Api {
    async fn create(&self, event: Event) -> (u16, Value) {
        self.functions.call(event.as_user(USER)).await
    }

    async fn ingest(&self, event: Event) -> (u16, Value) {
        let event = event.header("authorization", &format!("Bearer {}", self.key));
        self.functions.call(event).await
    }
}

#[tokio::test]
async fn bodies_that_are_too_big_or_too_deep_or_not_text() {
    let api = api().await;
    let ten_mb = format!(r#"{{"name": "{}"}}"#, "x".repeat(10 * 1024 * 1024));
    // 5000 levels fit in the devices route's 16 KiB; serde_json stops at 128.
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let deep_object = format!(
        r#"{{"readings": {}1{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let cases: Vec<(&str, Event, u16)> = vec![
        ("10 MB", Event::load("devices-create").body(&ten_mb), 413),
        (
            "deep arrays",
            Event::load("devices-create").body(&format!(r#"{{"name": {deep}}}"#)),
            400,
        ),
        (
            "invalid UTF-8",
            Event::load("devices-create").binary_body(b"{\"name\": \"\xff\xfe\"}"),
            400,
        ),
    ];
    for (what, event, status) in cases {
        let (got, body) = api.create(event).await;
        assert_eq!(got, status, "{what}: {body}");
    }
    for (what, event, status) in [
        ("10 MB", Event::load("ingest").body(&ten_mb), 413),
        ("deep arrays", Event::load("ingest").body(&deep_object), 422),
    ] {
        let (got, body) = api.ingest(event).await;
        assert_eq!(got, status, "{what}: {body}");
    }
    let response = api
        .functions
        .handle(
            Event::load("clerk-webhook-user-created")
                .body(&ten_mb)
                .request(),
        )
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        api.test.count("devices").await,
        1,
        "only the fixture's device"
    );
    assert_eq!(api.test.count("sensor_readings").await, 0);
}

/// The tables a body could write to, counted.
async fn counts(test: &TestDb) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in ["\"user\"", "devices", "alert_rules", "sensor_readings"] {
        counts.push(test.count(table).await);
    }
    counts
}

/// `cargo lambda watch` cannot carry such a body (it answers 500 itself), so scripts/schemathesis
/// leaves them out; this is what API Gateway sends instead: the bytes, base64-encoded.
#[tokio::test]
async fn every_route_with_a_body_refuses_invalid_utf8() {
    let test = TestDb::new().await;
    let (device, key) = test.device(USER).await;
    let api = Functions::new(&test.config(&[]));
    let rules = format!("/v1/devices/{device}/rules");
    let created = api
        .handle(
            Event::load("rules-create")
                .as_user(USER)
                .at("POST", &rules)
                .json_body(&json!({"metric": "t", "comparator": "gt", "threshold": 1}))
                .request(),
        )
        .await;
    assert_eq!(created.status(), 201);
    let rule = body_json(&created)["id"].as_str().unwrap().to_owned();
    let before = counts(&test).await;

    let bytes = b"{\"name\": \"\xff\xfe\"}";
    // Svix signs text only (its `sign` refuses these bytes), so no signature can be right here.
    let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    let cases = [
        Event::load("devices-create").as_user(USER),
        Event::load("devices-update")
            .as_user(USER)
            .at("PATCH", &format!("/v1/devices/{device}")),
        Event::load("rules-create").as_user(USER).at("POST", &rules),
        Event::load("rules-update")
            .as_user(USER)
            .at("PATCH", &format!("{rules}/{rule}")),
        Event::load("ingest").header("authorization", &format!("Bearer {key}")),
        Event::load("clerk-webhook-user-created")
            .header("svix-id", "msg_utf8")
            .header("svix-timestamp", &tests::clerk::now().to_string())
            .header("svix-signature", signature),
    ];
    for event in cases {
        let request = event.binary_body(bytes).request();
        let route = format!("{} {}", request.method(), request.uri().path());
        let response = api.handle(request).await;
        assert_eq!(response.status(), 400, "{route}: {}", body_json(&response));
        assert_error(&response, 400, "bad_request", None);
    }
    assert_eq!(counts(&test).await, before, "nothing was written");
}

#[tokio::test]
async fn duplicate_keys_huge_numbers_and_lying_content_types_are_refused() {
    let api = api().await;
    let digits = "9".repeat(10_000);
    for (what, body, status) in [
        (
            "duplicate key",
            r#"{"name": "a", "name": "b"}"#.to_owned(),
            400,
        ),
        // Too big for any JSON number type: the body does not parse at all.
        ("number as name", format!(r#"{{"name": {digits}}}"#), 400),
    ] {
        let (got, answer) = api.create(Event::load("devices-create").body(&body)).await;
        assert_eq!(got, status, "{what}: {answer}");
    }
    for (what, body, status) in [
        (
            "10,000-digit value",
            format!(r#"{{"readings": [{{"metric": "t", "value": {digits}}}]}}"#),
            422,
        ),
        (
            "10,000-digit string value",
            format!(r#"{{"readings": [{{"metric": "t", "value": "{digits}"}}]}}"#),
            422,
        ),
        (
            "10,000-digit time",
            format!(r#"{{"readings": [{{"metric": "t", "value": 1, "recorded_at": {digits}}}]}}"#),
            422,
        ),
        (
            "duplicate key in a reading",
            r#"{"readings": [{"metric": "t", "metric": "u", "value": 1}]}"#.to_owned(),
            422,
        ),
    ] {
        let (got, answer) = api.ingest(Event::load("ingest").body(&body)).await;
        assert_eq!(got, status, "{what}: {answer}");
    }
    let limit = Event::load("devices-list")
        .as_user(USER)
        .query(&format!("limit={digits}"));
    assert_eq!(api.functions.handle(limit.request()).await.status(), 400);
    // JSON sent under another content type is refused, on every route that reads a body.
    let good = json!({"readings": [{"metric": "t", "value": 1}]});
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (got, _) = api
            .ingest(
                Event::load("ingest")
                    .json_body(&good)
                    .header("content-type", content_type),
            )
            .await;
        assert_eq!(got, 400, "{content_type}");
        let event = Event::load("devices-create")
            .body(r#"{"name": "x"}"#)
            .header("content-type", content_type);
        assert_eq!(api.create(event).await.0, 400, "{content_type}");
    }
    // Charset parameters and +json types are JSON.
    let (got, _) = api
        .ingest(
            Event::load("ingest")
                .json_body(&good)
                .header("content-type", "application/json; charset=utf-8"),
        )
        .await;
    assert_eq!(got, 200);
    assert_eq!(api.test.count("devices").await, 1);
    assert_eq!(api.test.count("sensor_readings").await, 1);
}

#[tokio::test]
async fn metacharacters_are_stored_and_returned_literally() {
    let api = api().await;
    for name in [
        "'; DROP TABLE devices; --",
        "$(rm -rf /) `id` && echo pwned | sh",
        r#"\" OR 1=1 -- \\ %s %n {{7*7}} ${jndi:ldap://x}"#,
        "<script>alert(1)</script>",
        "名前 😀 Ünïcödé",
    ] {
        let (status, created) = api
            .create(Event::load("devices-create").json_body(&json!({ "name": name })))
            .await;
        assert_eq!(status, 201, "{name}: {created}");
        assert_eq!(created["name"], name);
        let id = created["id"].as_str().unwrap();
        let got = api
            .functions
            .handle(
                Event::load("devices-get")
                    .as_user(USER)
                    .at("GET", &format!("/v1/devices/{id}"))
                    .request(),
            )
            .await;
        assert_eq!(body_json(&got)["name"], name);
    }
    assert_eq!(
        api.test.count("devices").await,
        6,
        "the table is still there"
    );
}

#[tokio::test]
async fn header_names_in_odd_case_still_count() {
    let api = api().await;
    let token = tests::clerk::token(USER);
    // API Gateway lower-cases header names; a direct caller may not.
    let mut event = Event::load("devices-list").without_header("authorization");
    event = event.header("AUTHORIZATION", &format!("Bearer {token}"));
    let request = event.request();
    assert_eq!(api.functions.handle(request).await.status(), 200);
    let raw = Event::load("devices-list")
        .without_header("authorization")
        .json()
        .clone();
    let mut raw = raw;
    raw["headers"]["Authorization"] = format!("Bearer {token}").into();
    let request = lambda_http::request::from_str(&raw.to_string()).unwrap();
    assert_eq!(api.functions.handle(request).await.status(), 200);
    // A session cookie beside a bad Authorization header does not rescue it.
    let event = Event::load("devices-list")
        .header("authorization", "Bearer garbage")
        .header("cookie", &format!("__session={token}"));
    assert_eq!(api.functions.handle(event.request()).await.status(), 401);
}
