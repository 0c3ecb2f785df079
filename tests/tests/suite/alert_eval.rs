//! Alert evaluation: comparators, durations in reading time, hysteresis, overlapping passes,
//! offline devices, and the SQL agreeing with the plain-Rust rule logic on random histories.

use std::sync::Arc;

use alert_eval::rule::{Episode, Replay, Rule};
use alert_eval::{Budget, Summary};
use chrono::{DateTime, Duration, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use shared::domain::Comparator;
use tests::{Event, TestDb, body_json};
use uuid::Uuid;

fn schedule() -> Value {
    Event::load("alert-eval-schedule").json().clone()
}

/// The tests send readings and evaluate at once: no arrival margin (in Lambda it covers ingest
/// statements still in flight, see `Budget::arrival_margin`).
fn budget() -> Budget {
    Budget {
        arrival_margin: std::time::Duration::ZERO,
        ..Budget::default()
    }
}

fn state_at(test: &TestDb, now: Option<DateTime<Utc>>, budget: Budget) -> alert_eval::State {
    let clock: alert_eval::Clock = match now {
        Some(now) => Arc::new(move || now),
        None => Arc::new(Utc::now),
    };
    let config = test.config(&[]);
    let notifier = shared::notify::Notifier::new(&config.notify);
    alert_eval::State::with(&config, budget, clock, notifier).unwrap()
}

async fn evaluate(test: &TestDb) -> Summary {
    alert_eval::handle(&state_at(test, None, budget()), schedule())
        .await
        .unwrap()
}

/// A pass whose clock says `now`.
async fn evaluate_at(test: &TestDb, now: DateTime<Utc>) -> Summary {
    alert_eval::handle(&state_at(test, Some(now), budget()), schedule())
        .await
        .unwrap()
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
            "SELECT status, coalesce(value::text, 'null') FROM alerts WHERE rule_id = $1
             ORDER BY triggered_at, fired_reading_at, id",
            &[&rule],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A rule's alerts as episodes: the reading times they fired and resolved at, and the value.
async fn episodes_of(test: &TestDb, rule: Uuid) -> Vec<Episode> {
    test.direct
        .query(
            "SELECT fired_reading_at, value::text, resolved_reading_at FROM alerts
             WHERE rule_id = $1 ORDER BY fired_reading_at",
            &[&rule],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Episode {
            fired_at: r.get(0),
            value: r.get::<_, String>(1).parse().unwrap(),
            resolved_at: r.get(2),
        })
        .collect()
}

/// Three hours ago, to the microsecond (what Postgres keeps, so the model's times match).
fn base() -> DateTime<Utc> {
    shared::domain::whole_micros(Utc::now() - Duration::hours(3))
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

/// Two breaching episodes and the readings between them: 40 readings a minute apart.
fn episodes_scenario(t0: DateTime<Utc>) -> Vec<(DateTime<Utc>, Decimal)> {
    let values = [
        70, 81, 85, 90, 88, 79, 86, 84, 82,
        78, // from 81 (t=1), 3 min later: fires at 88 (t=4)
        76, 74, 70, 72, 81, 83, 60, 81, 82,
        83, // 74 resolves (t=11); 81, 83 too short; 60 breaks
        84, 85, 86, 75, 70, 69, 68, 90, 91, 92, // fires at 84 (t=20); 75 resolves (t=23)
        93, 94, 95, 96, 97, 98, 99, 80, 81, 82, // fires at 93 (t=30), still firing at the end
    ];
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (t0 + Duration::minutes(i as i64), Decimal::from(*v)))
        .collect()
}

#[tokio::test]
async fn the_same_readings_give_the_same_alerts_however_late_or_out_of_order_they_arrive() {
    let test = TestDb::new().await;
    let t0 = base();
    let readings = episodes_scenario(t0);
    let rule = Rule {
        comparator: Comparator::Gt,
        threshold: Decimal::from(80),
        for_seconds: 180,
        clear_threshold: Some(Decimal::from(75)),
    };
    let mut expected = Replay::new(rule);
    expected.pass(&[]);
    for reading in &readings {
        expected.pass(std::slice::from_ref(reading));
    }
    assert_eq!(expected.episodes.len(), 3, "{:?}", expected.episodes);

    let as_request = |chunk: &[(DateTime<Utc>, Decimal)]| -> Vec<(String, DateTime<Utc>)> {
        chunk.iter().map(|(at, v)| (v.to_string(), *at)).collect()
    };
    // Each plan: groups of readings (one request each) with or without a pass after each.
    let live: Vec<_> = readings.chunks(1).map(|c| (as_request(c), true)).collect();
    let live_every_5: Vec<_> = readings.chunks(5).map(|c| (as_request(c), true)).collect();
    let late_one_batch = vec![(as_request(&readings), true)];
    let mut reversed: Vec<_> = readings.chunks(5).map(|c| (as_request(c), false)).collect();
    reversed.reverse();
    for group in &mut reversed {
        group.0.reverse();
    }
    reversed.last_mut().unwrap().1 = true;
    for (name, plan) in [
        ("live, a pass after each reading", live),
        ("live, a pass after every 5 readings", live_every_5),
        ("an hour late, in one batch", late_one_batch),
        ("in reverse order, 8 requests, then a pass", reversed),
    ] {
        let (device, key) = test.device("user_late").await;
        let rule_id = add_rule(&test, device, "t", "gt", "80", 180, Some("75")).await;
        evaluate(&test).await;
        for (group, pass) in plan {
            let batch: Vec<_> = group.iter().map(|(v, at)| ("t", v.as_str(), *at)).collect();
            send(&test, &key, &batch).await;
            if pass {
                evaluate(&test).await;
            }
        }
        assert_eq!(
            episodes_of(&test, rule_id).await,
            expected.episodes,
            "{name}"
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
    // Overlapping passes share the work: each rule is judged by exactly one of them.
    assert_eq!(total(|s| s.rules_evaluated), 30, "{summaries:?}");
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

/// Readings of one metric, as (recorded_at, value).
type History = Vec<(DateTime<Utc>, Decimal)>;

/// Random rules and histories, delivered in random groups and orders with passes at random
/// moments: after every pass each rule's alerts are exactly what the plain-Rust model raises,
/// episode by episode, and whether it is firing agrees with a from-scratch evaluation's verdict
/// history. Prints its seed.
#[tokio::test]
async fn the_sql_agrees_with_the_rust_model_on_random_histories_arrivals_and_passes() {
    let test = TestDb::new().await;
    let seed = std::env::var("EVAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (EVAL_SEED={seed} to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let comparators = [
        ("gt", Comparator::Gt),
        ("gte", Comparator::Gte),
        ("lt", Comparator::Lt),
        ("lte", Comparator::Lte),
    ];
    let t0 = base() - Duration::hours(2);
    let mut cases = Vec::new();
    for _ in 0..40 {
        let (device, key) = test.device("user_p").await;
        let (name, comparator) = comparators[rng.usize(..4)];
        let threshold = rng.i64(40..60);
        let for_seconds = [0, 30, 60, 300][rng.usize(..4)];
        let clear = match (rng.bool(), comparator) {
            (false, _) => None,
            (true, Comparator::Gt | Comparator::Gte) => Some(threshold - rng.i64(1..10)),
            (true, _) => Some(threshold + rng.i64(1..10)),
        };
        // A random walk around the threshold, at irregular times (some exactly for_seconds apart).
        let mut history = Vec::new();
        let mut at = t0;
        let mut value = threshold + rng.i64(-8..8);
        for _ in 0..rng.usize(0..30) {
            at += Duration::seconds(if rng.u8(..4) == 0 {
                for_seconds.max(1) as i64
            } else {
                rng.i64(1..120)
            });
            value += rng.i64(-4..5);
            history.push((at, Decimal::from(value)));
        }
        // Delivery: mostly in order, some groups late or reversed; a pass after some groups.
        let mut groups: Vec<Vec<(DateTime<Utc>, Decimal)>> = Vec::new();
        let mut rest = history.as_slice();
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(6));
            let mut group = rest[..n].to_vec();
            if rng.u8(..4) == 0 {
                group.reverse();
            }
            groups.push(group);
            rest = &rest[n..];
        }
        for i in 0..groups.len() {
            if rng.u8(..5) == 0 {
                let j = rng.usize(i..groups.len());
                groups.swap(i, j);
            }
        }
        let plan: Vec<(History, bool)> = groups.into_iter().map(|g| (g, rng.bool())).collect();
        let rule = Rule {
            comparator,
            threshold: Decimal::from(threshold),
            for_seconds: for_seconds.into(),
            clear_threshold: clear.map(Decimal::from),
        };
        // Built before any reading, or on the first groups.
        let built_first = rng.bool();
        let shape = (
            name,
            threshold.to_string(),
            for_seconds,
            clear.map(|c| c.to_string()),
        );
        cases.push((device, shape, key, rule, plan, built_first));
    }

    // One case at a time, its rule created when it starts (every pass builds every new rule).
    for (device, (name, threshold, for_seconds, clear), key, rule, plan, built_first) in cases {
        let rule_id = add_rule(
            &test,
            device,
            "t",
            name,
            &threshold,
            for_seconds,
            clear.as_deref(),
        )
        .await;
        let mut model = Replay::new(rule);
        let mut arrived = Vec::new();
        if built_first {
            evaluate(&test).await;
            model.pass(&[]);
        }
        let last = plan.len();
        let shown: Vec<String> = plan
            .iter()
            .map(|(group, pass)| {
                let readings: Vec<String> = group
                    .iter()
                    .map(|(at, v)| format!("{}s={v}", (*at - t0).num_seconds()))
                    .collect();
                format!(
                    "[{}]{}",
                    readings.join(" "),
                    if *pass { " pass" } else { "" }
                )
            })
            .collect();
        for (i, (group, pass)) in plan.into_iter().enumerate() {
            let values: Vec<String> = group.iter().map(|(_, v)| v.to_string()).collect();
            let batch: Vec<(&str, &str, DateTime<Utc>)> = group
                .iter()
                .zip(&values)
                .map(|((at, _), v)| ("t", v.as_str(), *at))
                .collect();
            send(&test, &key, &batch).await;
            arrived.extend(group);
            if pass || i + 1 == last {
                evaluate(&test).await;
                model.pass(&std::mem::take(&mut arrived));
                assert_eq!(
                    episodes_of(&test, rule_id).await,
                    model.episodes,
                    "seed {seed}: {rule:?}, built first: {built_first}, after group {i} of {}",
                    shown.join(", ")
                );
            }
        }
        if last == 0 {
            evaluate(&test).await;
            assert!(episodes_of(&test, rule_id).await.is_empty(), "seed {seed}");
        }
    }
}

/// An `absent` rule on `device`, made directly.
async fn add_absent_rule(test: &TestDb, device: Uuid, metric: &str, for_seconds: i32) -> Uuid {
    test.direct
        .query_one(
            "INSERT INTO alert_rules (device_id, metric, comparator, for_seconds)
             VALUES ($1, $2, 'absent', $3) RETURNING id",
            &[&device, &metric, &for_seconds],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn absent_rules_fire_after_for_seconds_of_silence_and_resolve_on_the_next_reading() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let rule = add_absent_rule(&test, device, "heartbeat", 120).await;
    // Made an hour ago, so that the passes' clocks below stay behind the real arrivals.
    let created: DateTime<Utc> = test
        .direct
        .query_one(
            "UPDATE alert_rules SET created_at = now() - interval '1 hour' WHERE id = $1
             RETURNING created_at",
            &[&rule],
        )
        .await
        .unwrap()
        .get(0);
    let after = |seconds: i64| created + Duration::seconds(seconds);

    // Counted from the rule's creation, since nothing ever arrived.
    assert_eq!(evaluate_at(&test, after(0)).await.fired, 0);
    assert_eq!(evaluate_at(&test, after(119)).await.fired, 0);
    let summary = evaluate_at(&test, after(121)).await;
    assert_eq!(summary.fired, 1);
    assert_eq!(
        alerts_of(&test, rule).await,
        [("firing".into(), "null".into())]
    );
    assert_eq!(
        evaluate_at(&test, after(300)).await.fired,
        0,
        "one alert per silence"
    );

    // The next reading resolves it, at that reading's time.
    let at = base();
    send(&test, &key, &[("heartbeat", "1", at)]).await;
    let arrived: DateTime<Utc> = test
        .direct
        .query_one("SELECT max(received_at) FROM sensor_readings", &[])
        .await
        .unwrap()
        .get(0);
    let summary = evaluate_at(&test, arrived + Duration::seconds(10)).await;
    assert_eq!((summary.resolved, summary.fired), (1, 0), "{summary:?}");
    let resolved_reading: Option<DateTime<Utc>> = test
        .direct
        .query_one(
            "SELECT resolved_reading_at FROM alerts WHERE rule_id = $1",
            &[&rule],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(resolved_reading, Some(at));
    // Other metrics do not count as a sign of life, and a new silence is a new alert.
    send(&test, &key, &[("temperature", "20", Utc::now())]).await;
    assert_eq!(
        evaluate_at(&test, arrived + Duration::seconds(119))
            .await
            .fired,
        0
    );
    assert_eq!(
        evaluate_at(&test, arrived + Duration::seconds(121))
            .await
            .fired,
        1
    );
    assert_eq!(
        alerts_of(&test, rule).await,
        [
            ("resolved".into(), "null".into()),
            ("firing".into(), "null".into())
        ]
    );
}

/// A rule that breaches for Alice and one for Bob, each with a new reading; then a transaction
/// deletes Alice's rule, device or user and stays open while a pass runs.
#[tokio::test]
async fn a_pass_survives_rules_devices_and_users_deleted_while_it_runs() {
    for (what, delete) in [
        (
            "rule",
            "DELETE FROM alert_rules WHERE device_id IN (SELECT id FROM devices WHERE owner_id = 'user_alice')",
        ),
        (
            "device",
            "DELETE FROM devices WHERE owner_id = 'user_alice'",
        ),
        ("user", r#"DELETE FROM "user" WHERE id = 'user_alice'"#),
    ] {
        for built_before in [false, true] {
            let test = TestDb::new().await;
            let (alice, alice_key) = test.device("user_alice").await;
            let (bob, bob_key) = test.device("user_bob").await;
            let alice_rule = add_rule(&test, alice, "t", "gt", "0", 0, None).await;
            let bob_rule = add_rule(&test, bob, "t", "gt", "0", 0, None).await;
            if built_before {
                evaluate(&test).await;
            }
            send(&test, &alice_key, &[("t", "5", base())]).await;
            send(&test, &bob_key, &[("t", "5", base())]).await;

            let deleter = tests::connect(test.direct_url().expose()).await;
            deleter
                .batch_execute(&format!("BEGIN; {delete}"))
                .await
                .unwrap();
            let pass = tokio::time::timeout(std::time::Duration::from_secs(30), evaluate(&test));
            let summary = pass.await.expect("the pass does not wait for the delete");
            let case = format!("{what} deleted, rules built before: {built_before}: {summary:?}");
            assert_eq!(summary.fired, 1, "{case}");
            assert_eq!(
                alerts_of(&test, bob_rule).await,
                [("firing".into(), "5".into())],
                "{case}"
            );
            assert!(alerts_of(&test, alice_rule).await.is_empty(), "{case}");
            deleter.batch_execute("COMMIT").await.unwrap();
            let again = evaluate(&test).await;
            assert_eq!((again.fired, again.resolved), (0, 0), "{case}: {again:?}");
            assert!(alerts_of(&test, alice_rule).await.is_empty(), "{case}");
        }
    }
}

#[tokio::test]
async fn a_rolled_back_delete_leaves_the_rule_to_be_rebuilt() {
    let test = TestDb::new().await;
    let (device, key) = test.device("user_a").await;
    let rule = add_rule(&test, device, "t", "gt", "0", 0, None).await;
    evaluate(&test).await;
    send(&test, &key, &[("t", "5", base())]).await;
    let deleter = tests::connect(test.direct_url().expose()).await;
    deleter
        .batch_execute(&format!(
            "BEGIN; DELETE FROM alert_rules WHERE id = '{rule}'"
        ))
        .await
        .unwrap();
    assert_eq!(
        evaluate(&test).await.fired,
        0,
        "skipped while being deleted"
    );
    deleter.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(evaluate(&test).await.fired, 1, "rebuilt from the table");
    assert_eq!(
        alerts_of(&test, rule).await,
        [("firing".into(), "5".into())]
    );
}

/// The states of deleted rules go every tenth minute of the pass's clock, not every pass.
#[tokio::test]
async fn states_of_deleted_rules_are_forgotten_every_tenth_minute() {
    let test = TestDb::new().await;
    let (device, _) = test.device("user_a").await;
    let rule = add_rule(&test, device, "t", "gt", "0", 0, None).await;
    let at = |minute: u32| {
        let now = Utc::now();
        now.with_minute(minute).unwrap() - Duration::hours(1)
    };
    evaluate_at(&test, at(3)).await;
    let states = || async {
        let row = test
            .direct
            .query_one(
                "SELECT count(*) FROM rule_state WHERE rule_id = $1",
                &[&rule],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(states().await, 1, "built");
    test.direct
        .execute("DELETE FROM alert_rules WHERE id = $1", &[&rule])
        .await
        .unwrap();
    evaluate_at(&test, at(7)).await;
    assert_eq!(states().await, 1, "left at :07");
    evaluate_at(&test, at(10)).await;
    assert_eq!(states().await, 0, "forgotten at :10");
}

#[tokio::test]
async fn work_that_does_not_fit_the_budget_is_left_for_the_next_pass() {
    let test = TestDb::new().await;
    for _ in 0..10 {
        let (device, key) = test.device("user_a").await;
        add_rule(&test, device, "t", "gt", "0", 0, None).await;
        send(&test, &key, &[("t", "5", base())]).await;
    }
    let no_time = Budget {
        time: std::time::Duration::ZERO,
        ..budget()
    };
    let summary = alert_eval::handle(&state_at(&test, None, no_time), schedule())
        .await
        .unwrap();
    assert_eq!(
        (summary.fired, summary.rules_pending),
        (0, 10),
        "{summary:?}"
    );
    let small_chunks = Budget {
        build_chunk: 3,
        ..budget()
    };
    let summary = alert_eval::handle(&state_at(&test, None, small_chunks), schedule())
        .await
        .unwrap();
    assert_eq!(
        (
            summary.fired,
            summary.rules_evaluated,
            summary.rules_pending
        ),
        (10, 10, 0),
        "{summary:?}"
    );
}
