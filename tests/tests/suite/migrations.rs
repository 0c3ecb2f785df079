//! The schema: applying it is idempotent, and its constraints hold.

use tests::TestDb;
use tokio_postgres::error::SqlState;

#[tokio::test]
async fn applying_twice_is_a_no_op() {
    let test = TestDb::empty().await;
    let first = shared::migrate::run(&test.direct_url()).await.unwrap();
    assert_eq!(
        first,
        [
            "V1__init",
            "V2__alert_evaluation",
            "V3__no_jit",
            "V4__incremental_evaluation",
            "V5__device_keys_and_limits",
            "V6__notifications",
            "V7__reading_partitions_and_purges",
            "V8__hourly_aggregates",
            "V9__alert_events_only_when_wanted",
            "V10__ingest_function",
            "V11__latest_from_one_walk",
            "V12__daily_aggregates_and_plain_inserts",
            "V13__ingest_as_plain_statements",
            "V14__latest_newest_hour_by_one_descent",
            "V15__ingest_single_reading_without_probe",
        ]
    );
    let second = shared::migrate::run(&test.direct_url()).await.unwrap();
    assert!(second.is_empty(), "{second:?}");
    // JIT is off and statements are bounded for the database itself (that survives DISCARD ALL).
    let settings: Vec<String> = test
        .direct
        .query_one(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
             WHERE d.datname = current_database() AND s.setrole = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        settings,
        [
            "jit=off",
            "statement_timeout=12s",
            "lock_timeout=5s",
            "idle_in_transaction_session_timeout=15s"
        ]
    );
    assert_eq!(test.count("sensor_readings").await, 0);
}

/// V5 fills what the limits count from the data already there; existing devices keep ingesting
/// with the key they have.
#[tokio::test]
async fn limit_counters_are_carried_over_from_existing_data() {
    let test = TestDb::empty().await;
    shared::migrate::run_to(&test.direct_url(), Some(4))
        .await
        .unwrap();
    let key = shared::domain::DeviceKey::generate();
    test.direct
        .execute(
            r#"WITH u AS (INSERT INTO "user" (id) VALUES ('user_old')),
                    d AS (INSERT INTO devices (id, owner_id, name, device_key_hash)
                          VALUES ('00000000-0000-0000-0000-00000000000d', 'user_old', 'old', $1)
                          RETURNING id),
                    other AS (INSERT INTO devices (owner_id, name, device_key_hash)
                              VALUES ('user_old', 'spare', sha256('spare'))),
                    readings AS (
                        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                        SELECT id, m, 1, timestamptz '2026-01-01' + g * interval '1 minute'
                        FROM d, unnest(array['a', 'b', 'c']) m, generate_series(1, 100) g
                    )
               INSERT INTO alert_rules (device_id, metric, comparator, threshold)
               SELECT id, 'a', 'gt', g FROM d, generate_series(1, 4) g"#,
            &[&key.hash().to_vec()],
        )
        .await
        .unwrap();
    let applied = shared::migrate::run(&test.direct_url()).await.unwrap();
    assert_eq!(
        applied,
        [
            "V5__device_keys_and_limits",
            "V6__notifications",
            "V7__reading_partitions_and_purges",
            "V8__hourly_aggregates",
            "V9__alert_events_only_when_wanted",
            "V10__ingest_function",
            "V11__latest_from_one_walk",
            "V12__daily_aggregates_and_plain_inserts",
            "V13__ingest_as_plain_statements",
            "V14__latest_newest_hour_by_one_descent",
            "V15__ingest_single_reading_without_probe"
        ]
    );
    let row = test
        .direct
        .query_one(
            r#"SELECT d.rule_count, cardinality(d.metrics), d.key_created_at = d.created_at,
                      d.previous_key_expires_at IS NULL, u.device_count
               FROM devices d JOIN "user" u ON u.id = d.owner_id
               WHERE d.name = 'old'"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 4);
    assert_eq!(row.get::<_, i32>(1), 3);
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3));
    assert_eq!(row.get::<_, i32>(4), 2);
    assert_eq!(test.count("sensor_readings").await, 300);

    // The old key still ingests, and the device's metrics count toward its limit.
    let functions = tests::Functions::new(&test.config(&[("LIMIT_METRICS_PER_DEVICE", "3")]));
    let send = |metric: &str| {
        tests::Event::load("ingest")
            .header("authorization", &format!("Bearer {}", key.reveal()))
            .json_body(&serde_json::json!({"readings": [{"metric": metric, "value": 2}]}))
    };
    assert_eq!(functions.call(send("a")).await.0, 200);
    assert_eq!(functions.call(send("d")).await.0, 422);
}

/// V7 partitions the readings by month without copying them: the table as it was becomes the
/// partition of everything up to the end of the current month, and months after it are new.
#[tokio::test]
async fn partitioning_keeps_every_reading() {
    let test = TestDb::empty().await;
    shared::migrate::run_to(&test.direct_url(), Some(6))
        .await
        .unwrap();
    let key = shared::domain::DeviceKey::generate();
    // (V8 then sums them up by hour: checked at the end.)
    test.direct
        .execute(
            r#"WITH u AS (INSERT INTO "user" (id) VALUES ('user_old')),
                    d AS (INSERT INTO devices (owner_id, name, device_key_hash, metrics)
                          VALUES ('user_old', 'old', $1, '{a,b}') RETURNING id),
                    far AS (
                        INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                        SELECT id, 'a', g, timestamptz '2020-01-01' + g * interval '1 hour'
                        FROM d, generate_series(1, 50000) g
                    )
               INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
               SELECT id, 'b', g / 7.0, now() - g * interval '1 minute'
               FROM d, generate_series(1, 100) g"#,
            &[&key.hash().to_vec()],
        )
        .await
        .unwrap();
    let summary =
        "SELECT count(*), sum(value)::text, min(recorded_at)::text, max(recorded_at)::text
                   FROM sensor_readings";
    let of = |row: tokio_postgres::Row| -> (i64, String, String, String) {
        (row.get(0), row.get(1), row.get(2), row.get(3))
    };
    let before = of(test.direct.query_one(summary, &[]).await.unwrap());
    let applied = shared::migrate::run(&test.direct_url()).await.unwrap();
    assert_eq!(
        applied,
        [
            "V7__reading_partitions_and_purges",
            "V8__hourly_aggregates",
            "V9__alert_events_only_when_wanted",
            "V10__ingest_function",
            "V11__latest_from_one_walk",
            "V12__daily_aggregates_and_plain_inserts",
            "V13__ingest_as_plain_statements",
            "V14__latest_newest_hour_by_one_descent",
            "V15__ingest_single_reading_without_probe"
        ]
    );
    let after = of(test.direct.query_one(summary, &[]).await.unwrap());
    assert_eq!(after, before);
    assert_eq!(after.0, 50_100);

    let row = test
        .direct
        .query_one(
            "SELECT (SELECT count(*) FROM sensor_readings_before_v7),
                    (SELECT to_at = date_trunc('month', now(), 'UTC') + interval '1 month'
                     FROM reading_partitions WHERE name = 'sensor_readings_before_v7'),
                    (SELECT count(*) FROM reading_partitions)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        50_100,
        "the old table is the first partition"
    );
    assert!(row.get::<_, bool>(1), "it ends with the current month");
    assert_eq!(row.get::<_, i64>(2), 3, "it, and the two months ahead");
    // Next month's readings go to next month's partition; the device still ingests and reads.
    let home: String = test
        .direct
        .query_one(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT id, 'b', 1, date_trunc('month', now(), 'UTC') + interval '1 month 1 day'
             FROM devices RETURNING tableoid::regclass::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(home.starts_with("sensor_readings_20"), "{home}");
    let functions = tests::Functions::new(&test.config(&[]));
    let (status, _) = functions
        .call(
            tests::Event::load("ingest")
                .header("authorization", &format!("Bearer {}", key.reveal()))
                .json_body(&serde_json::json!({"readings": [{"metric": "b", "value": 2}]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(test.count("sensor_readings").await, 50_102);

    // V8 summed up every stored reading by hour (the direct insert above bypassed ingest, so
    // its hour is missing; ingest's reading is in its hour).
    let row = test
        .direct
        .query_one(
            "SELECT sum(count)::int8, sum(sum)::text,
                    (SELECT first_value::text FROM reading_hours
                     WHERE metric = 'a' ORDER BY hour LIMIT 1)
             FROM reading_hours",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50_101);
    let stored_sum: String = test
        .direct
        .query_one(
            "SELECT sum(value)::text FROM sensor_readings
             WHERE recorded_at < date_trunc('month', now(), 'UTC') + interval '1 month'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(row.get::<_, String>(1), stored_sum);
    assert_eq!(
        row.get::<_, String>(2),
        "1",
        "the first reading of the first hour"
    );

    // V12 folded no hour into a day; the passes after it fold every whole day's hours, and the
    // daily rollups read them.
    let folded = test.pass().await.days_folded;
    let days = "SELECT (SELECT count(*) FROM reading_hours
                        WHERE NOT folded AND hour < date_trunc('day', now(), 'UTC')),
                       (SELECT sum(count)::int8 FROM reading_days),
                       (SELECT sum(count)::int8 FROM reading_hours
                        WHERE hour < date_trunc('day', now(), 'UTC'))";
    let row = test.direct.query_one(days, &[]).await.unwrap();
    assert!(
        folded > 2_000,
        "{folded} days of hourly readings since 2020"
    );
    assert_eq!(row.get::<_, i64>(0), 0, "every whole day folded");
    assert_eq!(row.get::<_, i64>(1), row.get::<_, i64>(2));
    let device: uuid::Uuid = test
        .direct
        .query_one("SELECT id FROM devices", &[])
        .await
        .unwrap()
        .get(0);
    let (status, body) = functions
        .call(
            tests::Event::load("rollups")
                .as_user("user_old")
                .at("GET", &format!("/v1/devices/{device}/rollups"))
                .query("metric=a&bucket=1d&from=2020-01-01T00:00:00Z&to=2020-01-03T00:00:00Z"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["points"],
        serde_json::json!([
            {"t": "2020-01-01T00:00:00Z", "count": 23, "min": "1", "max": "23", "avg": "12",
             "sum": "276", "first": "1", "last": "23"},
            {"t": "2020-01-02T00:00:00Z", "count": 24, "min": "24", "max": "47", "avg": "35.5",
             "sum": "852", "first": "24", "last": "47"}
        ])
    );
}

/// One user with one device, one reading, one rule and one firing alert.
async fn seed(test: &TestDb) {
    test.direct
        .batch_execute(
            r#"
            INSERT INTO "user" (id, email) VALUES ('user_a', 'a@example.com');
            INSERT INTO devices (id, owner_id, name, device_key_hash)
                VALUES ('00000000-0000-0000-0000-00000000000d', 'user_a', 'boiler', sha256('dk_x'));
            INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                VALUES ('00000000-0000-0000-0000-00000000000d', 'temperature', 21.5, '2026-11-26T10:00:00Z');
            INSERT INTO alert_rules (id, device_id, metric, comparator, threshold)
                VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000d',
                        'temperature', 'gt', 20);
            INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
                VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000d',
                        'user_a', 'temperature', 'firing', 21.5, now());
            "#,
        )
        .await
        .unwrap();
}

async fn sql_state(test: &TestDb, sql: &str) -> SqlState {
    let error = test.direct.batch_execute(sql).await.expect_err(sql);
    error.code().cloned().expect("a server error")
}

#[tokio::test]
async fn a_reading_is_stored_once_per_device_metric_and_time() {
    let test = TestDb::new().await;
    seed(&test).await;
    let state = sql_state(
        &test,
        "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         VALUES ('00000000-0000-0000-0000-00000000000d', 'temperature', 99, '2026-11-26T10:00:00Z')",
    )
    .await;
    assert_eq!(state, SqlState::UNIQUE_VIOLATION);
    assert_eq!(test.count("sensor_readings").await, 1);
}

#[tokio::test]
async fn a_rule_has_at_most_one_firing_alert() {
    let test = TestDb::new().await;
    seed(&test).await;
    let second =
        "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
        VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000d',
                'user_a', 'temperature', 'firing', 30, now())";
    assert_eq!(sql_state(&test, second).await, SqlState::UNIQUE_VIOLATION);
    // Resolved ones may pile up beside it.
    test.direct
        .batch_execute(
            "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at, resolved_at)
             VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000d',
                     'user_a', 'temperature', 'resolved', 30, now(), now())",
        )
        .await
        .unwrap();
    assert_eq!(test.count("alerts").await, 2);
}

#[tokio::test]
async fn enumerations_and_ranges_are_checked() {
    let test = TestDb::new().await;
    seed(&test).await;
    let rule = |comparator: &str, threshold: &str, clear: &str, for_seconds: &str| {
        format!(
            "INSERT INTO alert_rules (device_id, metric, comparator, threshold, clear_threshold, for_seconds)
             VALUES ('00000000-0000-0000-0000-00000000000d', 'temperature', '{comparator}', {threshold}, {clear}, {for_seconds})"
        )
    };
    for bad in [
        rule("eq", "1", "NULL", "0"),
        rule("gt", "80", "85", "0"),
        rule("lt", "10", "5", "0"),
        rule("gt", "80", "75", "-1"),
        rule("gt", "80", "75", "86401"),
    ] {
        assert_eq!(
            sql_state(&test, &bad).await,
            SqlState::CHECK_VIOLATION,
            "{bad}"
        );
    }
    assert_eq!(test.count("alert_rules").await, 1);
    for bad in [
        "UPDATE devices SET status = 'sleeping'",
        "UPDATE alerts SET status = 'resolved'", // resolved_at must come with it
        "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         VALUES ('00000000-0000-0000-0000-00000000000d', 'has space', 1, now())",
    ] {
        assert_eq!(
            sql_state(&test, bad).await,
            SqlState::CHECK_VIOLATION,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn deleting_a_user_removes_everything_they_own() {
    let test = TestDb::new().await;
    seed(&test).await;
    test.direct
        .batch_execute(r#"DELETE FROM "user" WHERE id = 'user_a'"#)
        .await
        .unwrap();
    for table in ["devices", "alert_rules", "alerts"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    // The readings wait for the scheduled function (tests/tests/suite/lifecycle.rs).
    assert_eq!(test.count("device_purges").await, 1);
}
