//! The data's lifecycle: monthly partitions made ahead by the scheduled function, retention by
//! whole months, and deletes that commit at once with the readings purged afterwards.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Months, SecondsFormat, TimeDelta, Utc};
use serde_json::json;
use shared::notify::Notifier;
use tests::{Event, Functions, TestDb};
use uuid::Uuid;

const OWNER: &str = "user_lifecycle";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// A pass whose clock says `now`, with the given retention.
async fn pass_at(
    test: &TestDb,
    now: DateTime<Utc>,
    retention_days: &str,
    budget: alert_eval::Budget,
) -> alert_eval::Summary {
    let config = test.config(&[("RETENTION_DAYS", retention_days)]);
    let notifier = Notifier::new(&config.notify);
    let state = alert_eval::State::with(&config, budget, Arc::new(move || now), notifier).unwrap();
    alert_eval::handle(&state, json!({})).await.unwrap()
}

/// The partitions attached to sensor_readings, by name, and what the bookkeeping table says.
async fn partitions(test: &TestDb) -> (Vec<String>, Vec<String>) {
    let names = |sql: &str| {
        let sql = sql.to_owned();
        async move {
            test.direct
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    (
        names(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'sensor_readings'::regclass ORDER BY 1",
        )
        .await,
        names("SELECT name FROM reading_partitions ORDER BY 1").await,
    )
}

async fn ingest(
    functions: &Functions,
    key: &str,
    readings: serde_json::Value,
) -> (u16, serde_json::Value) {
    functions
        .call(
            Event::load("ingest")
                .header("authorization", &format!("Bearer {key}"))
                .json_body(&json!({ "readings": readings })),
        )
        .await
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn readings_far_back_within_retention_and_just_now_land_in_their_months() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[("RETENTION_DAYS", "400")]));
    let (device, key) = test.device(OWNER).await;
    let now = Utc::now();
    let old = now - TimeDelta::days(399);
    let (status, body) = ingest(
        &functions,
        &key,
        json!([
            {"metric": "t", "value": 1, "recorded_at": rfc(old)},
            {"metric": "t", "value": 2, "recorded_at": rfc(now)},
        ]),
    )
    .await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );
    let homes: Vec<String> = test
        .direct
        .query(
            "SELECT tableoid::regclass::text FROM sensor_readings WHERE device_id = $1
             ORDER BY recorded_at",
            &[&device],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let month = |t: DateTime<Utc>| format!("sensor_readings_{}", t.format("%Y_%m"));
    assert_eq!(homes, [month(old), month(now)]);
}

#[tokio::test]
async fn a_reading_older_than_retention_is_422_and_nothing_is_written() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[("RETENTION_DAYS", "30")]));
    let (device, key) = test.device(OWNER).await;
    let now = Utc::now();
    let (status, body) = ingest(
        &functions,
        &key,
        json!([
            {"metric": "t", "value": 1, "recorded_at": rfc(now - TimeDelta::days(29))},
            {"metric": "t", "value": 2, "recorded_at": rfc(now - TimeDelta::days(31))},
        ]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["field"], "readings[1].recorded_at");
    assert_eq!(test.count("sensor_readings").await, 0);
    let seen: Option<DateTime<Utc>> = test
        .direct
        .query_one("SELECT last_seen_at FROM devices WHERE id = $1", &[&device])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, None, "the device was not touched");
}

#[tokio::test]
async fn overlapping_passes_make_the_months_ahead_once() {
    let test = TestDb::new().await;
    // A year from now, with 30 days of retention: the months from the horizon to two ahead are
    // new, and every month before the horizon's goes.
    let now = Utc::now() + TimeDelta::days(365);
    let passes = (0..5).map(|_| pass_at(&test, now, "30", alert_eval::Budget::default()));
    futures::future::join_all(passes).await;
    let (attached, recorded) = partitions(&test).await;
    assert_eq!(attached, recorded, "the bookkeeping matches the catalog");
    // Every month from the horizon's through the second after now's, each once.
    let horizon = now - TimeDelta::days(30);
    let mut want = vec![];
    let mut month = horizon.date_naive().with_day(1).unwrap();
    let last = now.date_naive().with_day(1).unwrap() + Months::new(2);
    while month <= last {
        want.push(format!("sensor_readings_{}", month.format("%Y_%m")));
        month = month + Months::new(1);
    }
    assert_eq!(attached, want);
    // Another pass has nothing to do.
    pass_at(&test, now, "30", alert_eval::Budget::default()).await;
    assert_eq!(partitions(&test).await.0, want);
}

/// New months are attached without locking out writers: with an ingest-like transaction open on
/// the readings table (it holds the lock every insert takes), a pass still makes the months it
/// needs (`CREATE TABLE … PARTITION OF` would wait for that transaction, past the pass's
/// `lock_timeout`, and make nothing).
#[tokio::test]
async fn months_are_made_while_readings_are_being_written() {
    let test = TestDb::new().await;
    let (device, _) = test.device(OWNER).await;
    let writer = tests::connect(test.direct_url().expose()).await;
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             VALUES ($1, 't', 1, now())",
            &[&device],
        )
        .await
        .unwrap();
    let before = partitions(&test).await.0.len();
    let later = Utc::now() + TimeDelta::days(120);
    pass_at(&test, later, "400", alert_eval::Budget::default()).await;
    let (attached, recorded) = partitions(&test).await;
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(attached, recorded);
    assert!(attached.len() >= before + 3, "{before} → {attached:?}");
    let last =
        (later.date_naive().with_day(1).unwrap() + Months::new(2)).format("sensor_readings_%Y_%m");
    assert_eq!(attached.last(), Some(&last.to_string()));
    assert_eq!(test.count("sensor_readings").await, 1);
}

#[tokio::test]
async fn a_month_wholly_past_retention_is_dropped_by_a_pass() {
    let test = TestDb::new().await;
    let (device, _) = test.device(OWNER).await;
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             VALUES ($1, 't', 1, '2026-02-27T00:00:00Z'), ($1, 't', 2, '2026-03-02T00:00:00Z')",
            &[&device],
        )
        .await
        .unwrap();
    // The horizon is 2026-03-01T12:00Z: February is wholly past it, March is not.
    let now = at("2026-03-31T12:00:00Z");
    pass_at(&test, now, "30", alert_eval::Budget::default()).await;
    let (attached, _) = partitions(&test).await;
    assert!(
        !attached.contains(&"sensor_readings_2026_02".to_owned()),
        "{attached:?}"
    );
    assert!(
        attached.contains(&"sensor_readings_2026_03".to_owned()),
        "{attached:?}"
    );
    assert_eq!(
        attached.first().map(String::as_str),
        Some("sensor_readings_2026_03")
    );
    let left: Vec<String> = test
        .direct
        .query("SELECT value::text FROM sensor_readings", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["2"]);
}

/// Hourly and daily aggregates before the UTC midnight that starts the day of the horizon
/// (now − `AGGREGATE_RETENTION_DAYS`) are deleted by a pass, whether they were folded or not;
/// those after it stay.
#[tokio::test]
async fn aggregates_past_their_retention_are_deleted_by_whole_days() {
    let test = TestDb::new().await;
    let (device, _) = test.device(OWNER).await;
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             VALUES ($1, 't', 1, '2026-04-15T23:00:00Z'), ($1, 't', 2, '2026-04-16T01:00:00Z'),
                    ($1, 't', 3, '2026-04-17T00:00:00Z')",
            &[&device],
        )
        .await
        .unwrap();
    test.aggregate(None).await;
    let pass = |now: DateTime<Utc>| {
        let config = test.config(&[("RETENTION_DAYS", "30"), ("AGGREGATE_RETENTION_DAYS", "60")]);
        async move {
            let notifier = Notifier::new(&config.notify);
            let state = alert_eval::State::with(
                &config,
                alert_eval::Budget::default(),
                Arc::new(move || now),
                notifier,
            )
            .unwrap();
            alert_eval::handle(&state, json!({})).await.unwrap()
        }
    };
    let kept = |table: &'static str| {
        let test = &test;
        async move {
            test.direct
                .query(
                    &format!(
                        "SELECT to_char(hour, 'MM-DD\"T\"HH24') FROM (
                             SELECT {} AS hour FROM {table}) t ORDER BY 1",
                        if table == "reading_days" {
                            "day"
                        } else {
                            "hour"
                        }
                    ),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    // Horizon 2026-04-16T12:00Z: aggregates before 2026-04-16T00:00Z go; the day of April 16th
    // keeps all of its hours (its row could not be cut at noon).
    let summary = pass(at("2026-06-15T12:00:00Z")).await;
    assert_eq!(summary.days_folded, 2, "April 16th and 17th");
    assert_eq!(kept("reading_hours").await, ["04-16T01", "04-17T00"]);
    assert_eq!(kept("reading_days").await, ["04-16T00", "04-17T00"]);
    // A day later, April 16th goes, folded or not.
    pass(at("2026-06-16T12:00:00Z")).await;
    assert_eq!(kept("reading_hours").await, ["04-17T00"]);
    assert_eq!(kept("reading_days").await, ["04-17T00"]);
}

/// `n` readings of `metric`, 10 s apart, ending a little before now.
async fn history(test: &TestDb, device: Uuid, metric: &str, n: i64) {
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, $2, g, now() - interval '1 hour' - g * interval '10 seconds'
             FROM generate_series(1, $3::int8) g",
            &[&device, &metric, &n],
        )
        .await
        .unwrap();
    test.direct
        .execute(
            "UPDATE devices SET metrics = metrics || $2::text WHERE id = $1",
            &[&device, &metric],
        )
        .await
        .unwrap();
}

async fn readings_of(test: &TestDb, device: Uuid) -> i64 {
    test.direct
        .query_one(
            "SELECT count(*) FROM sensor_readings WHERE device_id = $1",
            &[&device],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_deleted_device_is_gone_at_once_and_its_readings_are_purged_in_chunks() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[]));
    let (device, key) = test.device(OWNER).await;
    let (other, other_key) = test.device(OWNER).await;
    history(&test, device, "t", 120_000).await;
    history(&test, other, "t", 1_000).await;
    test.aggregate(None).await;
    let hours_of = |device: Uuid| {
        let test = &test;
        async move {
            test.direct
                .query_one(
                    "SELECT count(*) FROM reading_hours WHERE device_id = $1",
                    &[&device],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let days_of = |device: Uuid| {
        let test = &test;
        async move {
            test.direct
                .query_one(
                    "SELECT count(*) FROM reading_days WHERE device_id = $1",
                    &[&device],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (hours, other_hours) = (hours_of(device).await, hours_of(other).await);
    assert!(hours > 300 && other_hours > 0, "{hours} {other_hours}");
    // Its whole days are folded into daily aggregates, purged with the rest.
    test.pass().await;
    let (days, other_days) = (days_of(device).await, days_of(other).await);
    assert!(days >= 13, "{days}");

    let path = format!("/v1/devices/{device}");
    let (status, _) = functions
        .call(
            Event::load("devices-delete")
                .as_user(OWNER)
                .at("DELETE", &path),
        )
        .await;
    assert_eq!(status, 204);
    // Gone from every answer and its key refused, while every reading is still stored.
    assert_eq!(readings_of(&test, device).await, 120_000);
    for (view, query) in [
        ("rollups", "metric=t"),
        ("readings", "metric=t"),
        ("latest", ""),
    ] {
        let (status, _) = functions
            .call(
                Event::load("rollups")
                    .as_user(OWNER)
                    .at("GET", &format!("{path}/{view}"))
                    .query(query),
            )
            .await;
        assert_eq!(status, 404, "{view}");
    }
    let (status, _) = functions
        .call(Event::load("devices-get").as_user(OWNER).at("GET", &path))
        .await;
    assert_eq!(status, 404);
    let (status, _) = ingest(&functions, &key, json!([{"metric": "t", "value": 1}])).await;
    assert_eq!(status, 401);

    // Two overlapping passes share the purge, 50,000 rows per statement.
    let budget = alert_eval::Budget {
        purge_chunk: 50_000,
        ..alert_eval::Budget::default()
    };
    let now = Utc::now();
    let (a, b) = tokio::join!(
        pass_at(&test, now, "400", budget),
        pass_at(&test, now, "400", budget)
    );
    assert_eq!(a.purged_rows + b.purged_rows, 120_000 + hours + days);
    assert_eq!(readings_of(&test, device).await, 0);
    assert_eq!(hours_of(device).await, 0);
    assert_eq!(days_of(device).await, 0);
    assert_eq!(hours_of(other).await, other_hours);
    assert_eq!(days_of(other).await, other_days);
    assert_eq!(test.count("device_purges").await, 0);
    // Nothing else was touched.
    assert_eq!(readings_of(&test, other).await, 1_000);
    let (status, _) = ingest(&functions, &other_key, json!([{"metric": "t", "value": 1}])).await;
    assert_eq!(status, 200);
    assert_eq!(test.pass().await.purged_rows, 0);
}

/// Without the readings' foreign key, ingest still cannot store anything for a device that is
/// gone: its statement writes only for the device row it has just locked.
#[tokio::test]
async fn ingest_racing_a_delete_leaves_nothing_after_the_purge() {
    let test = TestDb::new().await;
    let functions = Arc::new(Functions::new(&test.config(&[])));
    for _ in 0..5 {
        let (device, key) = test.device(OWNER).await;
        let sends = (0..20).map(|i| {
            let functions = functions.clone();
            let key = key.clone();
            tokio::spawn(async move {
                ingest(&functions, &key, json!([{"metric": "t", "value": i}]))
                    .await
                    .0
            })
        });
        let sends: Vec<_> = sends.collect();
        let path = format!("/v1/devices/{device}");
        let (status, _) = functions
            .call(
                Event::load("devices-delete")
                    .as_user(OWNER)
                    .at("DELETE", &path),
            )
            .await;
        assert_eq!(status, 204);
        for send in sends {
            let status = send.await.unwrap();
            assert!(status == 200 || status == 401, "{status}");
        }
        test.pass().await;
        assert_eq!(readings_of(&test, device).await, 0);
    }
    assert_eq!(test.count("device_purges").await, 0);
}
