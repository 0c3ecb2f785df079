//! Alert evaluation: comparators, durations in reading time, hysteresis, overlapping passes,
//! offline devices, and the SQL agreeing with the plain-Rust rule logic on random histories.

use alert_eval::rule::{self, Rule};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use shared::domain::Comparator;
use tests::{Event, TestDb, body_json};
use uuid::Uuid;

fn schedule() -> Value {
    Event::load("alert-eval-schedule").json().clone()
}

async fn evaluate(test: &TestDb) -> alert_eval::Summary {
    let state = alert_eval::State::new(&test.config(&[])).unwrap();
    alert_eval::handle(&state, schedule()).await.unwrap()
}

/// A rule on `device`, made directly.
async fn add_rule(
    test: &TestDb,
    device: Uuid,
    metric: &str,
    comparator: &str,
    threshold: &str,
    for_seconds: i32,
    clear: Option<&str>,
) -> Uuid {
    test.direct
        .query_one(
            "INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds, clear_threshold)
             VALUES ($1, $2, $3, $4::text::numeric, $5, $6::text::numeric) RETURNING id",
            &[&device, &metric, &comparator, &threshold, &for_seconds, &clear],
        )
        .await
        .unwrap()
        .get(0)
}

/// Readings through the real ingest handler.
async fn send(test: &TestDb, key: &str, readings: &[(&str, &str, DateTime<Utc>)]) {
    let state = ingest::State::new(&test.config(&[])).unwrap();
    let body = json!({"readings": readings.iter().map(|(m, v, at)| json!({
        "metric": m, "value": v, "recorded_at": at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    })).collect::<Vec<_>>()});
    let event = Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&body);
    let response = ingest::handle(&state, event.request()).await;
    assert_eq!(response.status(), 200, "{}", body_json(&response));
}

/// (status, value) of a rule's alerts, oldest first.
async fn alerts_of(test: &TestDb, rule: Uuid) -> Vec<(String, String)> {
    test.direct
        .query(
            "SELECT status, value::text FROM alerts WHERE rule_id = $1 ORDER BY triggered_at, id",
            &[&rule],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn base() -> DateTime<Utc> {
    Utc::now() - Duration::hours(3)
}

#[tokio::test]
async fn each_comparator_at_just_below_and_just_above_the_threshold() {
    let test = TestDb::new().await;
    let mut cases = Vec::new();
    for (value, fires) in [
        ("79.999", [false, false, true, true]),
        ("80", [false, true, false, true]),
        ("80.001", [true, true, false, false]),
    ] {
        let (device, key) = test.device("user_a").await;
        for (comparator, fires) in ["gt", "gte", "lt", "lte"].into_iter().zip(fires) {
            let rule = add_rule(&test, device, comparator, comparator, "80", 0, None).await;
            send(&test, &key, &[(comparator, value, base())]).await;
            cases.push((rule, comparator, value, fires));
        }
    }
    let summary = evaluate(&test).await;
    assert_eq!(summary.rules_evaluated, 12);
    assert_eq!(summary.fired, 6);
    for (rule, comparator, value, fires) in cases {
        let alerts = alerts_of(&test, rule).await;
        let expected = if fires {
            vec![("firing".to_owned(), value.to_owned())]
        } else {
            vec![]
        };
        assert_eq!(alerts, expected, "{value} {comparator} 80");
    }
}

#[tokio::test]
async fn for_seconds_counts_reading_time_and_late_uploads_decide_alike() {
    let test = TestDb::new().await;
    let t0 = base();
    let s = |seconds: i64| t0 + Duration::seconds(seconds);
    // (readings as (seconds, value), fires?)
    let scenarios: [(&[(i64, &str)], bool); 4] = [
        (&[(0, "81"), (299, "82")], false),
        (&[(0, "81"), (300, "82")], true),
        (&[(0, "81"), (100, "80"), (150, "81"), (400, "82")], false),
        (&[(0, "81"), (100, "80"), (150, "81"), (450, "82")], true),
    ];
    let mut live = Vec::new();
    let mut late = Vec::new();
    for (readings, fires) in scenarios {
        // Live: one reading per request, in order, evaluating after each.
        let (device, key) = test.device("user_live").await;
        let rule = add_rule(&test, device, "t", "gt", "80", 300, None).await;
        for (seconds, value) in readings {
            send(&test, &key, &[("t", value, s(*seconds))]).await;
            evaluate(&test).await;
        }
        live.push((rule, fires));
        // Late: the same readings an hour later, in one batch, newest first.
        let (device, key) = test.device("user_late").await;
        let rule = add_rule(&test, device, "t", "gt", "80", 300, None).await;
        let batch: Vec<_> = readings
            .iter()
            .rev()
            .map(|(seconds, value)| ("t", *value, s(*seconds)))
            .collect();
        send(&test, &key, &batch).await;
        late.push((rule, fires));
    }
    evaluate(&test).await;
    for (i, ((live_rule, fires), (late_rule, _))) in live.into_iter().zip(late).enumerate() {
        let firing =
            |alerts: Vec<(String, String)>| alerts.iter().any(|(status, _)| status == "firing");
        assert_eq!(
            firing(alerts_of(&test, live_rule).await),
            fires,
            "scenario {i}, live"
        );
        assert_eq!(
            firing(alerts_of(&test, late_rule).await),
            fires,
            "scenario {i}, delivered late"
        );
    }
}

#[tokio::test]
async fn hysteresis_keeps_firing_until_the_clear_threshold() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let rule = add_rule(&test, device, "t", "gt", "80", 0, Some("75")).await;
    let t0 = base();
    let step = |n: i64| t0 + Duration::minutes(n);
    let firing = || ("firing".to_owned(), "81".to_owned());
    let resolved = || ("resolved".to_owned(), "81".to_owned());

    send(&test, &key, &[("t", "81", step(0))]).await;
    assert_eq!(evaluate(&test).await.fired, 1);
    assert_eq!(alerts_of(&test, rule).await, [firing()]);

    send(&test, &key, &[("t", "78", step(1))]).await;
    let summary = evaluate(&test).await;
    assert_eq!(
        (summary.fired, summary.resolved),
        (0, 0),
        "78 keeps it firing"
    );
    assert_eq!(alerts_of(&test, rule).await, [firing()]);

    send(&test, &key, &[("t", "75", step(2))]).await;
    assert_eq!(evaluate(&test).await.resolved, 1, "75 resolves");
    assert_eq!(alerts_of(&test, rule).await, [resolved()]);
    let resolved_at: Option<DateTime<Utc>> = test
        .direct
        .query_one(
            "SELECT resolved_at FROM alerts WHERE rule_id = $1",
            &[&rule],
        )
        .await
        .unwrap()
        .get(0);
    assert!(resolved_at.is_some());

    send(&test, &key, &[("t", "90", step(3))]).await;
    assert_eq!(
        evaluate(&test).await.fired,
        1,
        "a new breach is a new alert"
    );
    assert_eq!(
        alerts_of(&test, rule).await,
        [resolved(), ("firing".to_owned(), "90".to_owned())]
    );

    // Without a clear threshold, back across the threshold resolves at once.
    let plain = add_rule(&test, device, "u", "lt", "10", 0, None).await;
    send(&test, &key, &[("u", "9", step(4))]).await;
    evaluate(&test).await;
    send(&test, &key, &[("u", "10", step(5))]).await;
    evaluate(&test).await;
    assert_eq!(
        alerts_of(&test, plain).await,
        [("resolved".to_owned(), "9".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_passes_fire_once_and_add_up_to_one_pass() {
    let test = TestDb::new().await;
    let t0 = base();
    let mut breaching = Vec::new();
    for i in 0..30 {
        let (device, key) = test.device("user_a").await;
        let rule = add_rule(&test, device, "t", "gt", "50", 0, None).await;
        send(
            &test,
            &key,
            &[("t", if i % 3 == 0 { "10" } else { "60" }, t0)],
        )
        .await;
        if i % 3 != 0 {
            breaching.push(rule);
        }
    }
    // Five devices that went quiet, and firing alerts that should resolve.
    test.direct
        .batch_execute(
            "UPDATE devices SET status = 'online', last_seen_at = now() - interval '10 minutes'
             WHERE id IN (SELECT id FROM devices ORDER BY id LIMIT 5);
             INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
             SELECT r.id, r.device_id, 'user_a', 't', 'firing', 99, now() - interval '1 hour'
             FROM alert_rules r JOIN sensor_readings s ON s.device_id = r.device_id AND s.value = 10;",
        )
        .await
        .unwrap();
    let passes = (0..10).map(|_| {
        let state = alert_eval::State::new(&test.config(&[])).unwrap();
        tokio::spawn(async move { alert_eval::handle(&state, schedule()).await.unwrap() })
    });
    let summaries: Vec<alert_eval::Summary> = futures::future::join_all(passes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let total = |f: fn(&alert_eval::Summary) -> i64| summaries.iter().map(f).sum::<i64>();
    assert_eq!(total(|s| s.fired), 20, "{summaries:?}");
    assert_eq!(total(|s| s.resolved), 10);
    assert_eq!(total(|s| s.devices_offline), 5);
    assert!(summaries.iter().all(|s| s.rules_evaluated == 30));
    for rule in breaching {
        assert_eq!(
            alerts_of(&test, rule).await,
            [("firing".to_owned(), "60".to_owned())]
        );
    }
    let firing: i64 = test
        .direct
        .query_one("SELECT count(*) FROM alerts WHERE status = 'firing'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(firing, 20);
    // And one more pass changes nothing.
    let again = evaluate(&test).await;
    assert_eq!(
        (again.fired, again.resolved, again.devices_offline),
        (0, 0, 0)
    );
}

async fn status(test: &TestDb, device: Uuid) -> String {
    test.direct
        .query_one("SELECT status FROM devices WHERE id = $1", &[&device])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn quiet_devices_go_offline_and_come_back_with_the_next_reading() {
    let test = TestDb::new().await;
    let (quiet, quiet_key) = test.device("user_a").await;
    let (recent, _) = test.device("user_a").await;
    let (never, _) = test.device("user_a").await;
    test.direct
        .execute(
            "UPDATE devices SET status = 'online', last_seen_at = now() - CASE WHEN id = $1
                 THEN interval '301 seconds' ELSE interval '100 seconds' END
             WHERE id = ANY($2)",
            &[&quiet, &vec![quiet, recent]],
        )
        .await
        .unwrap();
    assert_eq!(evaluate(&test).await.devices_offline, 1);
    assert_eq!(status(&test, quiet).await, "offline");
    assert_eq!(status(&test, recent).await, "online");
    assert_eq!(
        status(&test, never).await,
        "offline",
        "never seen: offline from the start"
    );
    send(&test, &quiet_key, &[("t", "1", Utc::now())]).await;
    assert_eq!(status(&test, quiet).await, "online");

    // OFFLINE_AFTER_SECONDS is honoured.
    let strict = alert_eval::State::new(&test.config(&[("OFFLINE_AFTER_SECONDS", "60")])).unwrap();
    assert_eq!(
        alert_eval::handle(&strict, schedule())
            .await
            .unwrap()
            .devices_offline,
        1
    );
    assert_eq!(status(&test, recent).await, "offline");
}

#[tokio::test]
async fn the_sql_agrees_with_the_rust_rule_logic_on_random_histories() {
    let test = TestDb::new().await;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let comparators = [
        ("gt", Comparator::Gt),
        ("gte", Comparator::Gte),
        ("lt", Comparator::Lt),
        ("lte", Comparator::Lte),
    ];
    let t0 = base() - Duration::hours(2);
    let mut cases = Vec::new();
    for _ in 0..60 {
        let (device, key) = test.device("user_p").await;
        let (name, comparator) = comparators[rng.usize(..4)];
        let threshold = rng.i64(40..60);
        let for_seconds = [0, 30, 60, 300][rng.usize(..4)];
        let clear = match (rng.bool(), comparator) {
            (false, _) => None,
            (true, Comparator::Gt | Comparator::Gte) => Some(threshold - rng.i64(1..10)),
            (true, _) => Some(threshold + rng.i64(1..10)),
        };
        let rule_id = add_rule(
            &test,
            device,
            "t",
            name,
            &threshold.to_string(),
            for_seconds,
            clear.map(|c| c.to_string()).as_deref(),
        )
        .await;
        // A random walk around the threshold, at irregular times (some exactly for_seconds apart).
        let mut history = Vec::new();
        let mut at = t0;
        let mut value = threshold + rng.i64(-8..8);
        for _ in 0..rng.usize(0..25) {
            at += Duration::seconds(if rng.u8(..4) == 0 {
                for_seconds.max(1) as i64
            } else {
                rng.i64(1..120)
            });
            value += rng.i64(-4..5);
            history.push((at, Decimal::from(value)));
        }
        if !history.is_empty() {
            let values: Vec<String> = history.iter().map(|(_, v)| v.to_string()).collect();
            let batch: Vec<(&str, &str, DateTime<Utc>)> = history
                .iter()
                .zip(&values)
                .map(|((at, _), v)| ("t", v.as_str(), *at))
                .collect();
            send(&test, &key, &batch).await;
        }
        let rule = Rule {
            comparator,
            threshold: Decimal::from(threshold),
            for_seconds: for_seconds.into(),
            clear_threshold: clear.map(Decimal::from),
        };
        cases.push((rule_id, rule, rule::evaluate(&history, &rule)));
    }

    // Pass one, from no alerts: fires exactly where Rust says it is breaching.
    evaluate(&test).await;
    for (rule_id, rule, verdict) in &cases {
        let alerts = alerts_of(&test, *rule_id).await;
        let expected: Vec<(String, String)> = verdict
            .breaching
            .iter()
            .map(|v| ("firing".to_owned(), v.to_string()))
            .collect();
        assert_eq!(alerts, expected, "seed {seed}: {rule:?}");
    }
    // Pass two, with every rule firing: resolves exactly where Rust says it clears.
    test.direct
        .batch_execute(
            "DELETE FROM alerts;
             INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
             SELECT r.id, r.device_id, 'user_p', r.metric, 'firing', 0, now() FROM alert_rules r;",
        )
        .await
        .unwrap();
    evaluate(&test).await;
    for (rule_id, rule, verdict) in &cases {
        let status = &alerts_of(&test, *rule_id).await[0].0;
        assert_eq!(
            status == "resolved",
            verdict.clears,
            "seed {seed}: {rule:?} {verdict:?}"
        );
    }
}
