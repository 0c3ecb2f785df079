//! The ingest function: exact storage, idempotence, concurrency, validation, one round trip.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};
use tests::Expect::{Bad, Invalid, TooLarge, Unauthorized, WrongMethod};
use tests::{Event, Functions, TestDb, check_refusals, connect, env};

fn state(test: &TestDb) -> Functions {
    Functions::new(&test.config(&[]))
}

fn batch_event(key: &str, body: &Value) -> Event {
    Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(body)
}

async fn send(functions: &Functions, key: &str, body: &Value) -> (u16, Value) {
    functions.call(batch_event(key, body)).await
}

fn at(base: DateTime<Utc>, seconds: i64) -> String {
    (base + Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
        .unwrap()
        .to_utc()
}

/// `n` readings, 10 s apart from `start`, alternating two metrics; value = index / 10.
fn readings(start: i64, n: i64) -> Vec<Value> {
    (start..start + n)
        .map(|i| {
            json!({
                "metric": if i % 2 == 0 { "temperature" } else { "humidity" },
                "value": format!("{}.{}", i / 10, i % 10),
                "recorded_at": at(base(), i * 10),
            })
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_stored_once_and_resending_it_is_harmless() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let state = state(&test);
    let batch = json!({ "readings": readings(0, 1000) });

    let (status, body) = send(&state, &key, &batch).await;
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({"accepted": 1000, "duplicates": 0, "conflicts": []})
        )
    );
    assert_eq!(test.count("sensor_readings").await, 1000);

    let (_, body) = send(&state, &key, &batch).await;
    assert_eq!(
        body,
        json!({"accepted": 0, "duplicates": 1000, "conflicts": []})
    );

    // One value changed: that one is a conflict and the first value stays.
    let mut changed = batch.clone();
    changed["readings"][417]["value"] = json!("999.5");
    let (_, body) = send(&state, &key, &changed).await;
    assert_eq!(
        body,
        json!({"accepted": 0, "duplicates": 999, "conflicts": [
            {"index": 417, "metric": "humidity", "recorded_at": "2026-11-20T01:09:30Z"}
        ]})
    );
    let stored: String = test
        .direct
        .query_one(
            "SELECT value::text FROM sensor_readings WHERE device_id = $1 AND recorded_at = $2",
            &[&device, &(base() + Duration::seconds(4170))],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "41.7");

    // Values compare as numbers: 41.70 is the same reading as 41.7.
    let same = json!({"readings": [{"metric": "humidity", "value": "41.70", "recorded_at": "2026-11-20T01:09:30Z"}]});
    let (_, body) = send(&state, &key, &same).await;
    assert_eq!(
        body,
        json!({"accepted": 0, "duplicates": 1, "conflicts": []})
    );
    assert_eq!(test.count("sensor_readings").await, 1000);
}

#[tokio::test]
async fn duplicates_inside_one_batch_follow_the_same_rule() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_a").await;
    let r =
        |value: &str| json!({"metric": "t", "value": value, "recorded_at": "2026-11-20T00:00:00Z"});
    let (_, body) = send(
        &state(&test),
        &key,
        &json!({"readings": [r("1"), r("1.0"), r("2"), r("1")]}),
    )
    .await;
    assert_eq!(
        body,
        json!({"accepted": 1, "duplicates": 2, "conflicts": [
            {"index": 2, "metric": "t", "recorded_at": "2026-11-20T00:00:00Z"}
        ]})
    );
    let stored: String = test
        .direct
        .query_one("SELECT value::text FROM sensor_readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "1", "the first value stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overlapping_batches_store_each_reading_once() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_a").await;
    // Request i sends readings [50 i, 50 i + 100): each overlaps its neighbours by half.
    let tasks = (0..20).map(|i| {
        let state = state(&test);
        let key = key.clone();
        tokio::spawn(async move {
            let mut batch = readings(i * 50, 100);
            batch.reverse(); // different orders, same keys: no deadlock
            send(&state, &key, &json!({ "readings": batch })).await
        })
    });
    let mut accepted = 0;
    for result in futures::future::join_all(tasks).await {
        let (status, body) = result.unwrap();
        assert_eq!(status, 200, "{body}");
        let duplicates = body["duplicates"].as_i64().unwrap();
        let this = body["accepted"].as_i64().unwrap();
        assert_eq!(body["conflicts"], json!([]));
        assert_eq!(
            this + duplicates,
            100,
            "every reading of the request is accounted for"
        );
        accepted += this;
    }
    let unique = 19 * 50 + 100;
    assert_eq!(accepted, unique, "accepted counts add up to what is stored");
    assert_eq!(test.count("sensor_readings").await, unique);
}

/// A single reading is stored at once with `ON CONFLICT DO NOTHING` (V15), and told apart from
/// what is stored when it was not: by the value its first request stored, by a value stored
/// without an aggregate, and among concurrent requests sending it. Its hour counts it once.
#[tokio::test]
async fn a_single_reading_is_stored_once_and_told_apart_after() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let functions = state(&test);
    let one = |value: &str, seconds: i64| json!({"readings": [{"metric": "t", "value": value, "recorded_at": at(base(), seconds)}]});
    let counts = |answer: &Value| {
        (
            answer["accepted"].as_i64().unwrap_or(-1),
            answer["duplicates"].as_i64().unwrap_or(-1),
            answer["conflicts"].as_array().map_or(0, Vec::len),
        )
    };

    let (status, answer) = send(&functions, &key, &one("1.5", 0)).await;
    assert_eq!((status, counts(&answer)), (200, (1, 0, 0)), "{answer}");
    let (_, answer) = send(&functions, &key, &one("1.50", 0)).await;
    assert_eq!(counts(&answer), (0, 1, 0), "a retry: {answer}");
    let (_, answer) = send(&functions, &key, &one("2.5", 0)).await;
    assert_eq!(
        answer,
        json!({"accepted": 0, "duplicates": 0, "conflicts": [
            {"index": 0, "metric": "t", "recorded_at": at(base(), 0)}
        ]})
    );

    // Stored without an aggregate (by hand): told apart all the same.
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             VALUES ($1, 't', 7, $2)",
            &[&device, &(base() + Duration::seconds(10))],
        )
        .await
        .unwrap();
    let (_, answer) = send(&functions, &key, &one("8", 10)).await;
    assert_eq!(counts(&answer), (0, 0, 1), "{answer}");
    let (_, answer) = send(&functions, &key, &one("7.0", 10)).await;
    assert_eq!(counts(&answer), (0, 1, 0), "{answer}");

    // The same new reading from four requests at once, each on a connection of its own.
    let tasks = (0..4).map(|_| {
        let (state, key, body) = (state(&test), key.clone(), one("3", 20));
        tokio::spawn(async move { send(&state, &key, &body).await })
    });
    let mut stored = (0, 0, 0);
    for result in futures::future::join_all(tasks).await {
        let (status, answer) = result.unwrap();
        assert_eq!(status, 200, "{answer}");
        let (accepted, duplicates, conflicts) = counts(&answer);
        stored = (
            stored.0 + accepted,
            stored.1 + duplicates,
            stored.2 + conflicts,
        );
    }
    assert_eq!(stored, (1, 3, 0));

    assert_eq!(test.count("sensor_readings").await, 3);
    let hour = test
        .direct
        .query_one("SELECT count, sum::text FROM reading_hours", &[])
        .await
        .unwrap();
    assert_eq!(
        (hour.get::<_, i64>(0), hour.get::<_, String>(1)),
        (2, "4.5".to_owned()),
        "the two readings ingest stored, once each"
    );
}

/// A batch is stored by a plain INSERT when the device's hourly aggregates show nothing stored
/// within its span. Readings they do not show (stored by hand) make that INSERT fail; the
/// request is then sent once more down the careful path, and answers as if it had taken it at
/// once. Readings a concurrent request stored while this one waited for the device row are
/// shown (the aggregates are read after that wait).
#[tokio::test]
async fn readings_the_aggregates_do_not_show_are_still_told_apart() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let functions = state(&test);
    let stored_by_hand = |from: i64, n: i64, hours: bool| {
        let test = &test;
        async move {
            // A transaction on a connection of its own, left open for the caller to commit.
            let tx = connect(test.direct_url().expose()).await;
            tx.batch_execute("BEGIN").await.unwrap();
            tx.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&device])
                .await
                .unwrap();
            tx.execute(
                "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                 SELECT $1, 't', g, $2::timestamptz + g * interval '10 seconds'
                 FROM generate_series($3::int8, $3 + $4 - 1) g",
                &[&device, &base(), &from, &n],
            )
            .await
            .unwrap();
            if hours {
                tx.execute(
                    "INSERT INTO reading_hours
                     SELECT $1, 't', date_bin('1 hour', min(recorded_at), '2000-01-03'),
                            count(*), sum(value), min(value), max(value), min(recorded_at),
                            min(value), max(recorded_at), max(value)
                     FROM sensor_readings WHERE recorded_at >= $2::timestamptz + $3::int8 * interval '10 seconds'",
                    &[&device, &base(), &from],
                )
                .await
                .unwrap();
            }
            tx
        }
    };
    let batch = |from: i64, n: i64| {
        json!({"readings": (from..from + n).map(|g| json!({
            "metric": "t", "value": g, "recorded_at": at(base(), g * 10)
        })).collect::<Vec<_>>()})
    };

    // Stored by hand, without aggregates: the same ten readings, the fourth with another value.
    let by_hand = stored_by_hand(0, 10, false).await;
    by_hand.batch_execute("COMMIT").await.unwrap();
    let mut body = batch(0, 10);
    body["readings"][3]["value"] = json!(99);
    let (status, answer) = send(&functions, &key, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["accepted"],
            &answer["duplicates"],
            &answer["conflicts"][0]["index"]
        ),
        (&json!(0), &json!(9), &json!(3))
    );

    // A request that waits for the device row while another stores the same readings and their
    // hour (two hours later): the call began before that one committed.
    let other = stored_by_hand(720, 10, true).await;
    let waiting = tokio::spawn({
        let functions = state(&test);
        let (key, body) = (key.clone(), batch(720, 10));
        async move { send(&functions, &key, &body).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits for the device row");
    other.batch_execute("COMMIT").await.unwrap();
    let (status, answer) = waiting.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            &answer["accepted"],
            &answer["duplicates"],
            &answer["conflicts"]
        ),
        (&json!(0), &json!(10), &json!([]))
    );
    assert_eq!(test.count("sensor_readings").await, 20);
    let counted: i64 = test
        .direct
        .query_one("SELECT sum(count)::int8 FROM reading_hours", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        counted, 10,
        "nothing added to the hours by the failed INSERT"
    );
}

#[tokio::test]
async fn decimals_round_trip_exactly() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_a").await;
    // The exact text a device sends (serde_json would print 1e3 as 1000.0).
    let body = r#"{"readings": [
        {"metric": "a", "value": 0.1, "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "b", "value": "123456789.123456789", "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "c", "value": -0.000001, "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "d", "value": 1e3, "recorded_at": "2026-11-20T00:00:00Z"}
    ]}"#;
    let event = Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .body(body);
    let (status, _) = state(&test).call(event).await;
    assert_eq!(status, 200);
    let stored: Vec<String> = test
        .direct
        .query(
            "SELECT value::text FROM sensor_readings ORDER BY metric",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["0.1", "123456789.123456789", "-0.000001", "1000"]);
}

/// A batch's hourly sums are added up by the ingest function's caller, in `Decimal`s; sums past
/// what a `Decimal` holds exactly (28–29 digits) are left to the server, whose `numeric` has no
/// such limit, and come out exact either way.
#[tokio::test]
async fn hourly_sums_past_a_decimals_digits_are_exact() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_a").await;
    let body = r#"{"readings": [
        {"metric": "big", "value": "70000000000000000000000000000", "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "big", "value": "70000000000000000000000000000", "recorded_at": "2026-11-20T00:00:01Z"},
        {"metric": "fine", "value": "10000000000000000000000000000", "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "fine", "value": "0.1", "recorded_at": "2026-11-20T00:00:01Z"},
        {"metric": "small", "value": "1.5", "recorded_at": "2026-11-20T00:00:00Z"},
        {"metric": "small", "value": "2.50", "recorded_at": "2026-11-20T00:00:01Z"}
    ]}"#;
    let event = Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .body(body);
    let (status, answer) = state(&test).call(event).await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(6)));
    let sums: Vec<(String, i64, String)> = test
        .direct
        .query(
            "SELECT metric, count, sum::text FROM reading_hours ORDER BY metric",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("big", 2, "140000000000000000000000000000"),
        ("fine", 2, "10000000000000000000000000000.1"),
        ("small", 2, "4.00"),
    ];
    let expected: Vec<(String, i64, String)> = expected
        .iter()
        .map(|(m, c, s)| (m.to_string(), *c, s.to_string()))
        .collect();
    assert_eq!(sums, expected);
}

#[tokio::test]
async fn every_bad_input_is_refused_and_writes_nothing() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let state = state(&test);
    let one = |reading: Value| json!({ "readings": [reading] });
    let ok = json!({"metric": "t", "value": 1, "recorded_at": "2026-11-20T00:00:00Z"});
    let with = |field: &str, value: Value| {
        let mut reading = ok.clone();
        reading[field] = value;
        one(reading)
    };
    let future = |minutes: i64| (Utc::now() + Duration::minutes(minutes)).to_rfc3339();
    let auth = format!("Bearer {key}");
    let event = |body: &str| {
        Event::load("ingest")
            .header("authorization", &auth)
            .body(body)
    };
    let json_event = |body: &Value| event(&body.to_string());
    let huge = format!(
        r#"{{"readings": [{{"metric": "t", "value": "1", "pad": "{}"}}]}}"#,
        "x".repeat(1024 * 1024)
    );

    let with_key = |key: &str| json_event(&one(ok.clone())).header("authorization", key);
    let session = format!("Bearer {}", tests::clerk::token("user_a"));
    let invalid_utf8 = b"{\"readings\": [{\"metric\": \"\xff\", \"value\": 1}]}";
    let third_bad = json!({"readings": [ok.clone(), ok.clone(), {"metric": "t", "value": "x"}]});
    #[rustfmt::skip]
    let cases = [
        (event("readings: 1"), Bad),
        (event("[]"), Bad),
        (event("").binary_body(invalid_utf8), Bad),
        (json_event(&json!({})), Invalid("readings")),
        (json_event(&json!({"readings": []})), Invalid("readings")),
        (json_event(&json!({"readings": vec![ok.clone(); 1001]})), Invalid("readings")),
        (event(&huge), TooLarge),
        (json_event(&with("metric", json!(""))), Invalid("readings[0].metric")),
        (json_event(&with("metric", json!("m".repeat(65)))), Invalid("readings[0].metric")),
        (json_event(&with("metric", json!("room temp"))), Invalid("readings[0].metric")),
        (json_event(&with("value", json!(true))), Invalid("readings[0].value")),
        (json_event(&with("value", Value::Null)), Invalid("readings[0].value")),
        (json_event(&with("value", json!("abc"))), Invalid("readings[0].value")),
        (json_event(&with("value", json!("NaN"))), Invalid("readings[0].value")),
        (event(r#"{"readings": [{"metric": "t", "value": 1e400}]}"#), Invalid("readings[0].value")),
        (json_event(&with("recorded_at", json!("yesterday"))), Invalid("readings[0].recorded_at")),
        (json_event(&with("recorded_at", json!("2026-11-20T00:00:00"))), Invalid("readings[0].recorded_at")),
        (json_event(&with("recorded_at", json!(future(6)))), Invalid("readings[0].recorded_at")),
        // The bad one is named, not the first.
        (json_event(&third_bad), Invalid("readings[2].value")),
        (with_key("Bearer dk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), Unauthorized),
        (with_key("Bearer hunter2"), Unauthorized),
        (with_key(&session), Unauthorized),
        (json_event(&one(ok.clone())).without_header("authorization"), Unauthorized),
        (json_event(&one(ok.clone())).at("GET", "/v1/ingest"), WrongMethod),
    ];
    check_refusals(&Functions::new(&test.config(&[])), cases).await;
    assert_eq!(test.count("sensor_readings").await, 0);
    let row = test
        .direct
        .query_one(
            "SELECT status, last_seen_at IS NULL FROM devices WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("offline".into(), true)
    );

    // Five minutes ahead is the limit, not past it.
    let (status, _) = send(&state, &key, &with("recorded_at", json!(future(4)))).await;
    assert_eq!(status, 200);
}

async fn device_state(test: &TestDb, device: uuid::Uuid) -> (String, DateTime<Utc>) {
    let row = test
        .direct
        .query_one(
            "SELECT status, last_seen_at FROM devices WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn ingest_marks_the_device_online_and_last_seen_never_moves_back() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let state = state(&test);
    let before = Utc::now();
    send(&state, &key, &json!({"readings": readings(0, 2)})).await;
    let (status, first) = device_state(&test, device).await;
    assert_eq!(status, "online");
    assert!(first >= before - Duration::seconds(1));

    // A later request carrying old readings still moves it forward, never back.
    test.direct
        .execute(
            "UPDATE devices SET last_seen_at = now() + interval '1 hour' WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    let (_, ahead) = device_state(&test, device).await;
    send(&state, &key, &json!({"readings": readings(100, 2)})).await;
    assert_eq!(device_state(&test, device).await.1, ahead);
}

#[tokio::test]
async fn one_request_is_one_statement() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_a").await;
    let state = state(&test);
    let stats = connect(&format!("{}/postgres", env("TEST_DIRECT_BASE"))).await;
    // Top-level statements executed in this database, by text; not PgBouncer's own
    // `DISCARD ALL` (its reset) nor the `SET`s it sends to align a server connection's
    // parameters with the client's.
    let statements = || async {
        stats
            .query(
                "SELECT s.query, s.calls
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = $1 AND s.toplevel
                   AND s.query !~* '^\\s*(DISCARD ALL|SET |SELECT 1\\s*$)'",
                &[&test.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<std::collections::HashMap<_, _>>()
    };
    // Warm up: the first request connects.
    send(&state, &key, &json!({"readings": readings(0, 10)})).await;
    let before = statements().await;
    let (status, _) = send(&state, &key, &json!({"readings": readings(10, 1000)})).await;
    assert_eq!(status, 200);
    let after = statements().await;
    let executed: Vec<(&String, i64)> = after
        .iter()
        .map(|(query, calls)| (query, calls - before.get(query).copied().unwrap_or(0)))
        .filter(|(_, calls)| *calls > 0)
        .collect();
    assert_eq!(executed.len(), 1, "{executed:#?}");
    assert_eq!(
        executed[0].1, 1,
        "one statement for a whole batch: {executed:#?}"
    );
    assert!(
        executed[0].0.contains("FROM ingest_readings("),
        "{executed:#?}"
    );
}

#[tokio::test]
async fn the_duplicate_check_probes_only_the_batch_keys() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    // A long history for the device, so that a plan joining it would show.
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, m, g, timestamptz '2026-11-01' + g * interval '10 seconds'
             FROM generate_series(1, 100000) g, (VALUES ('temperature'), ('humidity')) AS m(m)",
            &[&device],
        )
        .await
        .unwrap();
    test.direct
        .batch_execute("ANALYZE sensor_readings")
        .await
        .unwrap();
    let hash = shared::domain::DeviceKey::parse(&key)
        .unwrap()
        .hash()
        .to_vec();
    let batch: Vec<(String, rust_decimal::Decimal, DateTime<Utc>)> = (0..1000)
        .map(|i| {
            (
                "temperature".to_owned(),
                rust_decimal::Decimal::from(i),
                base() + Duration::seconds(i),
            )
        })
        .collect();
    let metrics: Vec<&str> = batch.iter().map(|b| b.0.as_str()).collect();
    let values: Vec<rust_decimal::Decimal> = batch.iter().map(|b| b.1).collect();
    let times: Vec<DateTime<Utc>> = batch.iter().map(|b| b.2).collect();
    // The batch's hours, as the ingest function sums them: one, the batch lies within 00:00.
    let hour = [base()];
    let (count, sum) = ([1000i64], [rust_decimal::Decimal::from(499_500)]);
    let (min, max) = ([values[0]], [values[999]]);
    let (first, last) = ([times[0]], [times[999]]);
    // New readings, then the same again (duplicates), then the same with every reading's first
    // position spelled out (the statement for batches with repeats).
    let each_its_own = Some((1..=1000).collect::<Vec<i64>>());
    for (round, first_ords) in [None, None, each_its_own].into_iter().enumerate() {
        // The plans of the function's statements, as auto_explain reports them.
        let plan = tests::plans_run(
            test.direct_url().expose(),
            "SELECT * FROM ingest_readings($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                           $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
            &[
                &hash,
                &metrics,
                &values,
                &times,
                &20.0f64,
                &100.0f64,
                &1000i32,
                &vec!["temperature"],
                &times[0],
                &times[999],
                &first_ords,
                &["temperature"].as_slice(),
                &hour.as_slice(),
                &count.as_slice(),
                &sum.as_slice(),
                &min.as_slice(),
                &max.as_slice(),
                &first.as_slice(),
                &min.as_slice(),
                &last.as_slice(),
                &max.as_slice(),
            ],
        )
        .await;
        assert!(plan.contains("Insert on sensor_readings"), "{plan}");
        assert!(!plan.contains("Seq Scan on sensor_readings"), "{plan}");
        if round == 0 {
            // All new: stored by a plain INSERT, and nothing else read.
            assert!(!plan.contains("Scan using sensor_readings"), "{plan}");
            assert!(!plan.contains("Conflict Resolution: NOTHING"), "{plan}");
            continue;
        }
        assert!(plan.contains("Conflict Resolution: NOTHING"), "{plan}");
        // All stored before: compared with what is stored. The history and the batch lie in
        // November: only that month is probed (the others pruned as the plan starts), once per
        // reading.
        assert!(!plan.contains("sensor_readings_2026_10"), "{plan}");
        assert!(
            plan.contains("Index Scan using sensor_readings_2026_11_pkey")
                || plan.contains("Index Only Scan using sensor_readings_2026_11_pkey"),
            "{plan}"
        );
        assert!(plan.contains("Limit"), "one probe per reading: {plan}");
    }
}

/// Behind a pooler that hands server connections on as they are (Neon's), the plans of the ingest
/// function's statements outlive the transaction. They must follow the months the scheduled
/// function adds and drops: a month dropped and made again under them changes nothing.
#[tokio::test]
async fn kept_plans_follow_the_months_behind_a_pooler_that_keeps_them() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let mut config = test.config(&[]);
    config.database_url = test.pooled_url_via("TEST_NEON_POOLED_BASE");
    let functions = Functions::new(&config);
    let october = |i: i64| json!({"metric": "t", "value": format!("{i}"), "recorded_at": format!("2026-10-10T00:00:{:02}Z", i % 60)});
    // More calls than PostgreSQL needs before it keeps one plan for all: new readings in
    // November, then the same again (duplicates, the second statement).
    for round in 0..8 {
        let batch = json!({"readings": readings(round * 2, 2)});
        for verdict in ["accepted", "duplicates"] {
            let (status, body) = send(&functions, &key, &batch).await;
            assert_eq!((status, body[verdict].clone()), (200, json!(2)), "{body}");
        }
    }
    // October, dropped and made again, as retention and the pass that makes months would.
    test.direct
        .batch_execute(
            "DROP TABLE sensor_readings_2026_10;
             DELETE FROM reading_partitions WHERE name = 'sensor_readings_2026_10';
             SELECT create_reading_partitions('2026-10-01', '2026-10-31')",
        )
        .await
        .unwrap();
    for round in 0..3 {
        let batch = json!({"readings": [october(round)]});
        let (status, body) = send(&functions, &key, &batch).await;
        assert_eq!(
            (status, body["accepted"].clone()),
            (200, json!(1)),
            "{body}"
        );
        let (status, body) = send(&functions, &key, &batch).await;
        assert_eq!(
            (status, body["duplicates"].clone()),
            (200, json!(1)),
            "{body}"
        );
        let changed = json!({"readings": [{"metric": "t", "value": "-1", "recorded_at": october(round)["recorded_at"]}]});
        let (status, body) = send(&functions, &key, &changed).await;
        assert_eq!(
            (status, body["conflicts"].as_array().map(Vec::len)),
            (200, Some(1)),
            "{body}"
        );
    }
    let stored: i64 = test
        .direct
        .query_one(
            "SELECT count(*) FROM sensor_readings_2026_10 WHERE device_id = $1",
            &[&device],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 3);
}
