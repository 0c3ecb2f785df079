//! Device keys: rotation without downtime (`POST /v1/devices/{id}/keys`).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tests::Expect::{Bad, Invalid, NotFound};
use tests::{Event, Functions, TestDb, check_refusals};

const ALICE: &str = "user_alice";
const BOB: &str = "user_bob";

struct Fixture {
    test: TestDb,
    functions: Functions,
    id: String,
    first_key: String,
}

async fn setup() -> Fixture {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[]));
    let event = Event::load("devices-create")
        .as_user(ALICE)
        .json_body(&json!({"name": "boiler"}));
    let response = functions.handle(event.request()).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created = tests::body_json(&response);
    assert_eq!(created["previous_key_expires_at"], Value::Null);
    assert_eq!(created["key_created_at"], created["created_at"]);
    Fixture {
        test,
        functions,
        id: created["id"].as_str().unwrap().to_owned(),
        first_key: created["device_key"].as_str().unwrap().to_owned(),
    }
}

fn rotate_event(user: &str, id: &str, body: Option<Value>) -> Event {
    let event = Event::load("devices-keys")
        .as_user(user)
        .at("POST", &format!("/v1/devices/{id}/keys"));
    match body {
        Some(body) => event.json_body(&body),
        None => event.body(""),
    }
}

/// Rotates and returns the new key and `previous_key_expires_at`.
async fn rotate(f: &Fixture, body: Option<Value>) -> (String, DateTime<Utc>) {
    let response = f
        .functions
        .handle(rotate_event(ALICE, &f.id, body).request())
        .await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let rotated = tests::body_json(&response);
    assert_eq!(response.status(), 201, "{rotated}");
    assert_eq!(rotated.as_object().unwrap().len(), 2, "{rotated}");
    let expires = rotated["previous_key_expires_at"].as_str().unwrap();
    (
        rotated["device_key"].as_str().unwrap().to_owned(),
        DateTime::parse_from_rfc3339(expires).unwrap().to_utc(),
    )
}

/// The status of one ingest with `key`.
async fn ingest_with(f: &Fixture, key: &str) -> u16 {
    let event = Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&json!({"readings": [{"metric": "t", "value": 1}]}));
    f.functions.call(event).await.0
}

async fn device(f: &Fixture) -> Value {
    let event = Event::load("devices-get")
        .as_user(ALICE)
        .at("GET", &format!("/v1/devices/{}", f.id));
    let (status, body) = f.functions.call(event).await;
    assert_eq!(status, 200);
    body
}

fn seconds_from_now(at: DateTime<Utc>) -> i64 {
    (at - Utc::now()).num_seconds()
}

#[tokio::test]
async fn both_keys_work_during_the_grace_period_and_a_third_rotation_ends_the_oldest() {
    let f = setup().await;
    assert_eq!(ingest_with(&f, &f.first_key).await, 200);

    // Default grace: a day.
    let (second_key, expires) = rotate(&f, None).await;
    assert!((86_390..=86_400).contains(&seconds_from_now(expires)));
    assert_eq!(
        ingest_with(&f, &f.first_key).await,
        200,
        "old key, in grace"
    );
    assert_eq!(ingest_with(&f, &second_key).await, 200, "new key");
    let shown = device(&f).await;
    assert_eq!(
        shown["previous_key_expires_at"]
            .as_str()
            .map(|t| DateTime::parse_from_rfc3339(t).unwrap()),
        Some(expires.into())
    );
    assert_ne!(shown["key_created_at"], shown["created_at"]);

    // A third key: the first, still in its grace period, ends at once.
    let (third_key, _) = rotate(&f, Some(json!({"grace_seconds": 3600}))).await;
    assert_eq!(
        ingest_with(&f, &f.first_key).await,
        401,
        "the oldest key ended"
    );
    assert_eq!(
        ingest_with(&f, &second_key).await,
        200,
        "the previous key, in grace"
    );
    assert_eq!(ingest_with(&f, &third_key).await, 200);

    // When the grace period is over, the previous key stops (time moved by moving the expiry).
    f.test
        .direct
        .execute(
            "UPDATE devices SET previous_key_expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ingest_with(&f, &second_key).await, 401, "grace over");
    assert_eq!(ingest_with(&f, &third_key).await, 200);

    // No later answer shows any key.
    let listed = f
        .functions
        .call(Event::load("devices-list").as_user(ALICE))
        .await
        .1;
    for key in [&f.first_key, &second_key, &third_key] {
        for body in [&listed, &device(&f).await] {
            assert!(!body.to_string().contains(key.as_str()), "{body}");
        }
    }
}

#[tokio::test]
async fn with_no_grace_the_old_key_stops_at_once() {
    let f = setup().await;
    let before = Utc::now();
    let (new_key, expires) = rotate(&f, Some(json!({"grace_seconds": 0}))).await;
    assert!(
        expires >= before - chrono::Duration::seconds(1) && expires <= Utc::now(),
        "the time of the rotation: {expires}"
    );
    assert_eq!(ingest_with(&f, &f.first_key).await, 401);
    assert_eq!(ingest_with(&f, &new_key).await, 200);
}

/// The previous key, in grace, draws on its device's one bucket (the function finds the device
/// by it and updates it by its current key): refused with `429` when the bucket is empty, never
/// `401`, and nothing written.
#[tokio::test]
async fn the_previous_key_shares_its_devices_bucket() {
    let f = setup().await;
    let (new_key, _) = rotate(&f, Some(json!({"grace_seconds": 3600}))).await;
    // One token every 100 s, two at most: none comes back during the test.
    let limited = Functions::new(&f.test.config(&[
        ("INGEST_RATE_PER_DEVICE", "0.01"),
        ("INGEST_BURST_PER_DEVICE", "2"),
    ]));
    let ingest = |key: &str, i: i64| {
        Event::load("ingest")
            .header("authorization", &format!("Bearer {key}"))
            .json_body(&json!({"readings": [
                {"metric": "t", "value": i, "recorded_at": 1_795_687_200_000_i64 + i}
            ]}))
    };
    assert_eq!(limited.call(ingest(&f.first_key, 0)).await.0, 200);
    assert_eq!(limited.call(ingest(&new_key, 1)).await.0, 200);
    let (status, body) = limited.call(ingest(&f.first_key, 2)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    assert_eq!(limited.call(ingest(&new_key, 3)).await.0, 429);
    assert_eq!(f.test.count("sensor_readings").await, 2, "nothing written");
    assert_eq!(limited.call(ingest("not-a-key", 4)).await.0, 401);
}

#[tokio::test]
async fn bad_rotations_are_refused_and_change_nothing() {
    let f = setup().await;
    let id = f.id.as_str();
    let path = format!("/v1/devices/{id}/keys");
    let rotate = |body: &str| rotate_event(ALICE, id, None).body(body);
    #[rustfmt::skip]
    let cases = [
        (rotate(r#"{"grace_seconds": -1}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace_seconds": 604801}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace_seconds": 1.5}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace_seconds": "60"}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace_seconds": true}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace_seconds": null}"#), Invalid("grace_seconds")),
        (rotate(r#"{"grace": 60}"#), Bad),
        (rotate("not json"), Bad),
        (rotate("[]"), Bad),
        (rotate_event(BOB, id, Some(json!({}))), NotFound),
        (rotate_event(ALICE, "00000000-0000-0000-0000-000000000000", None), NotFound),
        (Event::load("devices-keys").as_user(ALICE).at("POST", &path.replace(id, "not-a-uuid")), NotFound),
    ];
    check_refusals(&f.functions, cases).await;
    assert_eq!(
        f.test
            .count("devices WHERE previous_key_hash IS NULL AND key_created_at = created_at")
            .await,
        1
    );
    assert_eq!(
        ingest_with(&f, &f.first_key).await,
        200,
        "still the only key"
    );
    assert_eq!(device(&f).await["previous_key_expires_at"], Value::Null);
}

#[tokio::test]
async fn concurrent_rotations_leave_one_current_key_and_one_previous() {
    let f = setup().await;
    // Each simulated instance has its own connection, so the rotations really overlap.
    let instances: Vec<Functions> = (0..6)
        .map(|_| Functions::new(&f.test.config(&[])))
        .collect();
    let rotations = instances.iter().map(|functions| async {
        let response = functions
            .handle(rotate_event(ALICE, &f.id, Some(json!({"grace_seconds": 600}))).request())
            .await;
        assert_eq!(response.status(), 201);
        tests::body_json(&response)["device_key"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    let keys = futures::future::join_all(rotations).await;
    // The previous key is the one the last rotation replaced: the key of another rotation.
    let row = f
        .test
        .direct
        .query_one(
            "SELECT device_key_hash, previous_key_hash FROM devices",
            &[],
        )
        .await
        .unwrap();
    let hash = |key: &str| {
        shared::domain::DeviceKey::parse(key)
            .unwrap()
            .hash()
            .to_vec()
    };
    let (current, previous): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
    assert!(keys.iter().any(|k| hash(k) == current));
    assert!(keys.iter().any(|k| hash(k) == previous));
    let working = {
        let mut working = 0;
        for key in keys.iter().chain([&f.first_key]) {
            if ingest_with(&f, key).await == 200 {
                working += 1;
            }
        }
        working
    };
    assert_eq!(working, 2, "the last key and the one before it");
}
