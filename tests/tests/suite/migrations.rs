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
            "V4__incremental_evaluation"
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
    for table in ["devices", "sensor_readings", "alert_rules", "alerts"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
}
