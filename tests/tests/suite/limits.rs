//! The per-tenant limits, each enforced by the statement that writes (exact under concurrency),
//! and the per-device ingest rate limit.

use serde_json::{Value, json};
use tests::Expect::{AtLimit, Invalid};
use tests::{Event, Functions, TestDb, assert_error, body_json, check_refusals};

const ALICE: &str = "user_alice";

fn create_device_event(user: &str, name: &str) -> Event {
    Event::load("devices-create")
        .as_user(user)
        .json_body(&json!({ "name": name }))
}

fn create_rule_event(device: &str) -> Event {
    Event::load("rules-create")
        .as_user(ALICE)
        .at("POST", &format!("/v1/devices/{device}/rules"))
        .json_body(&json!({"metric": "t", "comparator": "gt", "threshold": 1}))
}

fn ingest_event(key: &str, readings: Value) -> Event {
    Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&json!({ "readings": readings }))
}

/// `n` simulated Lambda instances (each its own connection through the pooler) with `config`.
fn instances(test: &TestDb, n: usize, config: &[(&str, &str)]) -> Vec<Functions> {
    (0..n)
        .map(|_| Functions::new(&test.config(config)))
        .collect()
}

/// Sends one event per instance at once; the statuses.
async fn all_at_once(instances: &[Functions], event: impl Fn(usize) -> Event) -> Vec<u16> {
    let calls = instances
        .iter()
        .enumerate()
        .map(|(i, functions)| functions.call(event(i)));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

/// The first device's row as text: unchanged means not written.
async fn device_row(test: &TestDb) -> String {
    test.direct
        .query_one(
            "SELECT d::text FROM devices d ORDER BY created_at LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn devices_per_user_is_exact_under_concurrency_and_a_delete_frees_a_place() {
    let test = TestDb::new().await;
    let config = [("LIMIT_DEVICES_PER_USER", "5")];
    let functions = Functions::new(&test.config(&config));
    // Another user's devices do not count.
    assert_eq!(
        functions
            .call(create_device_event("user_other", "x"))
            .await
            .0,
        201
    );

    let racers = instances(&test, 20, &config);
    let statuses = all_at_once(&racers, |i| create_device_event(ALICE, &format!("d{i}"))).await;
    assert_eq!(
        (count(&statuses, 201), count(&statuses, 409)),
        (5, 15),
        "{statuses:?}"
    );
    assert_eq!(test.count("devices WHERE owner_id = 'user_alice'").await, 5);

    let response = functions
        .handle(create_device_event(ALICE, "one more").request())
        .await;
    AtLimit.check(&response, "the sixth device");
    let message = body_json(&response)["error"]["message"].to_string();
    assert!(
        message.contains("devices per user") && message.contains('5'),
        "{message}"
    );
    assert_eq!(test.count("devices WHERE owner_id = 'user_alice'").await, 5);
    assert_eq!(
        test.count(r#""user" WHERE id = 'user_alice' AND device_count = 5"#)
            .await,
        1,
        "the counter is the count"
    );

    // A deleted device frees its place at once.
    let (_, list) = functions
        .call(Event::load("devices-list").as_user(ALICE))
        .await;
    let id = list["items"][0]["id"].as_str().unwrap();
    let delete = Event::load("devices-delete")
        .as_user(ALICE)
        .at("DELETE", &format!("/v1/devices/{id}"));
    assert_eq!(functions.call(delete).await.0, 204);
    assert_eq!(
        functions.call(create_device_event(ALICE, "again")).await.0,
        201
    );
    assert_eq!(
        functions
            .call(create_device_event(ALICE, "too many"))
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn rules_per_device_is_exact_under_concurrency_and_a_delete_frees_a_place() {
    let test = TestDb::new().await;
    let config = [("LIMIT_RULES_PER_DEVICE", "3")];
    let functions = Functions::new(&test.config(&config));
    let (_, device) = functions.call(create_device_event(ALICE, "boiler")).await;
    let id = device["id"].as_str().unwrap().to_owned();
    let (_, other) = functions.call(create_device_event(ALICE, "other")).await;
    let other = other["id"].as_str().unwrap().to_owned();

    let racers = instances(&test, 20, &config);
    let statuses = all_at_once(&racers, |_| create_rule_event(&id)).await;
    assert_eq!(
        (count(&statuses, 201), count(&statuses, 409)),
        (3, 17),
        "{statuses:?}"
    );
    assert_eq!(test.count("alert_rules").await, 3);

    check_refusals(&functions, [(create_rule_event(&id), AtLimit)]).await;
    assert_eq!(test.count("alert_rules").await, 3);
    // Another device has its own limit.
    assert_eq!(functions.call(create_rule_event(&other)).await.0, 201);

    let (_, rules) = functions
        .call(
            Event::load("rules-list")
                .as_user(ALICE)
                .at("GET", &format!("/v1/devices/{id}/rules")),
        )
        .await;
    let rule = rules["items"][0]["id"].as_str().unwrap();
    let delete = Event::load("rules-delete")
        .as_user(ALICE)
        .at("DELETE", &format!("/v1/devices/{id}/rules/{rule}"));
    assert_eq!(functions.call(delete).await.0, 204);
    assert_eq!(functions.call(create_rule_event(&id)).await.0, 201);
    assert_eq!(functions.call(create_rule_event(&id)).await.0, 409);
}

#[tokio::test]
async fn a_batch_with_a_new_metric_past_the_limit_is_refused_whole() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[("LIMIT_METRICS_PER_DEVICE", "3")]));
    let (device, key) = test.device(ALICE).await;
    let reading = |metric: &str, second: i64| json!({"metric": metric, "value": 1, "recorded_at": 1_795_687_200_000_i64 + second * 1000});
    let ok = functions
        .call(ingest_event(
            &key,
            json!([reading("a", 0), reading("b", 0), reading("a", 1)]),
        ))
        .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let seen = device_row(&test).await;

    #[rustfmt::skip]
    let cases = [
        // c is the third metric (allowed), d the fourth: the first reading with d is named.
        (ingest_event(&key, json!([reading("a", 2), reading("c", 2), reading("c", 3), reading("d", 2), reading("e", 2)])), Invalid("readings[3].metric")),
        (ingest_event(&key, json!([reading("e", 2), reading("f", 2)])), Invalid("readings[1].metric")),
    ];
    check_refusals(&functions, cases).await;
    assert_eq!(test.count("sensor_readings").await, 3, "nothing written");
    assert_eq!(
        device_row(&test).await,
        seen,
        "the device row was not touched"
    );

    // Up to the limit is fine, known metrics stay fine past it, and a new one is refused.
    assert_eq!(
        functions
            .call(ingest_event(&key, json!([reading("c", 5)])))
            .await
            .0,
        200
    );
    assert_eq!(
        functions
            .call(ingest_event(
                &key,
                json!([reading("a", 6), reading("c", 6)])
            ))
            .await
            .0,
        200
    );
    let response = functions
        .handle(ingest_event(&key, json!([reading("b", 7), reading("z", 7)])).request())
        .await;
    assert_error(
        &response,
        422,
        "validation_failed",
        Some("readings[1].metric"),
    );
    let row = test
        .direct
        .query_one("SELECT metrics FROM devices WHERE id = $1", &[&device])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Vec<String>>(0),
        ["a", "b", "c"],
        "in the order first sent"
    );
    assert_eq!(test.count("sensor_readings").await, 6);
}

#[tokio::test]
async fn a_burst_past_the_bucket_is_429_and_writes_nothing_and_the_bucket_refills() {
    let test = TestDb::new().await;
    // One token every 100 s: however slow the machine, no token comes back by itself during the
    // test; time is moved by moving the bucket's clock.
    let config = [
        ("INGEST_RATE_PER_DEVICE", "0.01"),
        ("INGEST_BURST_PER_DEVICE", "3"),
    ];
    let functions = Functions::new(&test.config(&config));
    let (device, key) = test.device(ALICE).await;
    let (_, other_key) = test.device("user_other").await;
    let reading =
        |i: i64| json!([{"metric": "t", "value": i, "recorded_at": 1_795_687_200_000_i64 + i}]);

    // A new device's bucket starts full: three requests at once, then a refusal.
    for i in 0..3 {
        assert_eq!(functions.call(ingest_event(&key, reading(i))).await.0, 200);
    }
    let response = functions
        .handle(ingest_event(&key, reading(3)).request())
        .await;
    assert_error(&response, 429, "rate_limited", None);
    let retry_after: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (99..=100).contains(&retry_after),
        "the next token is 100 s away: {retry_after}"
    );
    assert_eq!(test.count("sensor_readings").await, 3, "nothing written");
    let before = device_row(&test).await;
    assert_eq!(functions.call(ingest_event(&key, reading(4))).await.0, 429);
    assert_eq!(
        device_row(&test).await,
        before,
        "a refused request does not touch the row"
    );

    // Other devices are not affected.
    assert_eq!(
        functions.call(ingest_event(&other_key, reading(0))).await.0,
        200
    );

    // 200 s later (the clock moved by moving the bucket's time back): two more tokens.
    test.direct
        .execute(
            "UPDATE devices SET rate_at = rate_at - interval '200 seconds' WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    assert_eq!(functions.call(ingest_event(&key, reading(5))).await.0, 200);
    assert_eq!(functions.call(ingest_event(&key, reading(6))).await.0, 200);
    assert_eq!(functions.call(ingest_event(&key, reading(7))).await.0, 429);
    assert_eq!(test.count("sensor_readings").await, 6);
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_limit_off() {
    let test = TestDb::new().await;
    let config = [
        ("INGEST_RATE_PER_DEVICE", "0"),
        ("INGEST_BURST_PER_DEVICE", "1"),
    ];
    let functions = Functions::new(&test.config(&config));
    let (_, key) = test.device(ALICE).await;
    for i in 0..10 {
        let readings =
            json!([{"metric": "t", "value": i, "recorded_at": 1_795_687_200_000_i64 + i}]);
        assert_eq!(functions.call(ingest_event(&key, readings)).await.0, 200);
    }
}

/// Requests of one device take turns on its row, and each one judges the metrics as the one before
/// it left them: at a limit of 3, ten concurrent requests each with a new metric store exactly 3.
#[tokio::test]
async fn concurrent_new_metrics_never_pass_the_limit() {
    let test = TestDb::new().await;
    let config = [("LIMIT_METRICS_PER_DEVICE", "3")];
    let (device, key) = test.device(ALICE).await;
    let racers = instances(&test, 10, &config);
    let statuses = all_at_once(&racers, |i| {
        ingest_event(&key, json!([{"metric": format!("m{i}"), "value": 1}]))
    })
    .await;
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 422)),
        (3, 7),
        "{statuses:?}"
    );
    let row = test
        .direct
        .query_one(
            "SELECT cardinality(metrics) FROM devices WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(test.count("sensor_readings").await, 3);
}
