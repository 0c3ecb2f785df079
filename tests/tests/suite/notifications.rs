//! Notifications: events written with the state changes that cause them, delivered by the pass
//! to real local receivers (and to SES through moto), retried, isolated, silenced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alert_eval::{Budget, Summary};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use shared::notify::Notifier;
use tests::receiver::{Receiver, Reply};
use tests::{Event, Expect, Functions, TestDb, check_refusals};
use uuid::Uuid;

const OWNER: &str = "user_notified";

fn config(test: &TestDb) -> shared::config::Config {
    test.config(&[("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")])
}

/// A pass whose clock says `now`, sending with a short attempt timeout.
fn pass_state(test: &TestDb, now: DateTime<Utc>, deliver_for: Duration) -> alert_eval::State {
    let config = config(test);
    let notifier = Notifier::with_timeout(&config.notify, Duration::from_secs(2));
    let budget = Budget {
        arrival_margin: Duration::ZERO,
        deliver_until: deliver_for,
        ..Budget::default()
    };
    alert_eval::State::with(&config, budget, Arc::new(move || now), notifier).unwrap()
}

async fn pass(test: &TestDb, now: DateTime<Utc>) -> Summary {
    alert_eval::handle(&pass_state(test, now, Duration::from_secs(20)), json!({}))
        .await
        .unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// A device of `owner` and a rule `t gt 80` on it, made directly.
async fn device_with_rule(test: &TestDb, owner: &str) -> (Uuid, String, Uuid) {
    let (device, key) = test.device(owner).await;
    let rule: Uuid = test
        .direct
        .query_one(
            "INSERT INTO alert_rules (device_id, metric, comparator, threshold)
             VALUES ($1, 't', 'gt', 80) RETURNING id",
            &[&device],
        )
        .await
        .unwrap()
        .get(0);
    (device, key, rule)
}

/// An alert of the rule fired at `now` (as the pass writes it; the outbox trigger does the rest).
async fn fire(test: &TestDb, rule: Uuid, now: DateTime<Utc>) -> Uuid {
    test.direct
        .query_one(
            "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at,
                                 fired_reading_at)
             SELECT r.id, r.device_id, d.owner_id, r.metric, 'firing', 81, $2, $2
             FROM alert_rules r JOIN devices d ON d.id = r.device_id WHERE r.id = $1
             RETURNING id",
            &[&rule, &now],
        )
        .await
        .unwrap()
        .get(0)
}

async fn create_channel(functions: &Functions, owner: &str, body: Value) -> Value {
    let (status, answer) = functions
        .call(
            Event::load("channels-create")
                .as_user(owner)
                .json_body(&body),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn webhook(functions: &Functions, owner: &str, receiver: &Receiver) -> Value {
    create_channel(
        functions,
        owner,
        json!({"name": "hook", "type": "webhook", "target": {"url": receiver.url("/hook")}}),
    )
    .await
}

/// (status, attempts, last_status_code) of a channel's deliveries, oldest first.
async fn deliveries(test: &TestDb, channel: &Value) -> Vec<(String, i32, Option<i32>)> {
    let id = Uuid::parse_str(channel["id"].as_str().unwrap()).unwrap();
    test.direct
        .query(
            "SELECT status, attempts, last_status_code FROM deliveries WHERE channel_id = $1
             ORDER BY event_seq",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn verify(received: &tests::receiver::Received, secret: &str) {
    let verifier = svix::webhooks::Webhook::new(secret).unwrap();
    verifier
        .verify(received.body.as_bytes(), &received.header_map())
        .expect("a Standard Webhooks verifier accepts the signature");
}

#[tokio::test]
async fn a_rule_firing_and_resolving_reaches_a_receiver_signed() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = webhook(&functions, OWNER, &receiver).await;
    let secret = channel["signing_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{channel}");
    let (device, key, rule) = device_with_rule(&test, OWNER).await;

    // Readings through ingest, the pass at the real clock: it fires, and sends.
    let send = |value: &'static str| {
        let key = key.clone();
        let functions = &functions;
        async move {
            let body = json!({"readings": [{"metric": "t", "value": value,
                "recorded_at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)}]});
            let (status, answer) = functions
                .call(
                    Event::load("ingest")
                        .header("authorization", &format!("Bearer {key}"))
                        .json_body(&body),
                )
                .await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    send("85").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let summary = pass(&test, Utc::now()).await;
    assert_eq!(summary.fired, 1);
    send("20").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let summary = pass(&test, Utc::now()).await;
    assert_eq!(summary.resolved, 1);

    let received = receiver.received();
    let kinds: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    // The device came online on its first reading: that event came first.
    assert_eq!(kinds, ["device.online", "alert.firing", "alert.resolved"]);
    for request in &received {
        verify(request, &secret);
        assert_eq!(
            request.header("webhook-id"),
            request.json()["id"].as_str(),
            "webhook-id is the event id"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let firing = received[1].json();
    assert_eq!(firing["device"]["id"], device.to_string());
    assert_eq!(firing["rule"]["id"], rule.to_string());
    assert_eq!(firing["alert"]["status"], "firing");
    assert_eq!(firing["alert"]["value"], "85");
    assert_eq!(received[2].json()["alert"]["status"], "resolved");
    assert_eq!(received[2].json()["alert"]["id"], firing["alert"]["id"]);
    // A wrong secret is refused by the same verifier.
    let wrong = shared::notify::new_signing_secret();
    let verifier = svix::webhooks::Webhook::new(&wrong).unwrap();
    assert!(
        verifier
            .verify(received[1].body.as_bytes(), &received[1].header_map())
            .is_err()
    );
}

/// An alert event is written only for a channel that wants it: none without channels, and per
/// event type and device filter with them (fired, resolved and acknowledged alike).
#[tokio::test]
async fn alert_events_are_written_only_when_a_channel_wants_them() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let (device, _, rule) = device_with_rule(&test, OWNER).await;
    let (other_device, _) = test.device(OWNER).await;
    let events = || async {
        let rows = test
            .direct
            .query("SELECT type FROM notification_events ORDER BY seq", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
    };
    let resolve_and_ack = |alert: Uuid| {
        let direct = &test.direct;
        async move {
            direct
                .execute(
                    "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE id = $1",
                    &[&alert],
                )
                .await
                .unwrap();
            direct
                .execute(
                    "UPDATE alerts SET acknowledged_at = now(), acknowledged_by = 'x' WHERE id = $1",
                    &[&alert],
                )
                .await
                .unwrap();
        }
    };
    resolve_and_ack(fire(&test, rule, at("2026-11-26T10:00:00Z")).await).await;
    assert_eq!(events().await, Vec::<String>::new(), "no channel, no event");

    // A channel for resolutions of another device only: still nothing.
    create_channel(
        &functions,
        OWNER,
        json!({"name": "other", "type": "slack", "target": {"url": "http://127.0.0.1:9/x"},
               "events": ["alert.resolved"], "device_ids": [other_device]}),
    )
    .await;
    resolve_and_ack(fire(&test, rule, at("2026-11-26T11:00:00Z")).await).await;
    assert_eq!(
        events().await,
        Vec::<String>::new(),
        "another device's channel"
    );

    // One for this device's resolutions and acknowledgements: those two, not the firing.
    create_channel(
        &functions,
        OWNER,
        json!({"name": "this", "type": "slack", "target": {"url": "http://127.0.0.1:9/y"},
               "events": ["alert.resolved", "alert.acknowledged"], "device_ids": [device]}),
    )
    .await;
    resolve_and_ack(fire(&test, rule, at("2026-11-26T12:00:00Z")).await).await;
    assert_eq!(events().await, ["alert.resolved", "alert.acknowledged"]);
}

#[tokio::test]
async fn failures_are_retried_on_schedule_with_the_same_event_id_until_delivered_once() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500), Reply::status(503), Reply::status(500)]);
    let channel = webhook(&functions, OWNER, &receiver).await;
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;

    pass(&test, t0).await; // 500: next in 30 s
    pass(&test, t0 + TimeDelta::seconds(20)).await; // not yet
    assert_eq!(receiver.received().len(), 1);
    pass(&test, t0 + TimeDelta::seconds(31)).await; // 503: next in 2 min
    pass(&test, t0 + TimeDelta::seconds(31 + 121)).await; // 500: next in 10 min
    assert_eq!(
        deliveries(&test, &channel).await,
        [("pending".into(), 3, Some(500))]
    );
    let summary = pass(&test, t0 + TimeDelta::seconds(31 + 121 + 601)).await;
    assert_eq!(summary.notifications.delivered, 1);
    pass(&test, t0 + TimeDelta::hours(2)).await; // nothing more
    assert_eq!(
        deliveries(&test, &channel).await,
        [("delivered".into(), 4, Some(200))]
    );
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let secret = channel["signing_secret"].as_str().unwrap();
    received.iter().for_each(|r| verify(r, secret));
}

#[tokio::test]
async fn a_receiver_down_across_passes_gets_the_event_when_it_returns() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = webhook(&functions, OWNER, &receiver).await;
    let port = receiver.stop();
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;
    pass(&test, t0).await;
    pass(&test, t0 + TimeDelta::seconds(31)).await;
    assert_eq!(
        deliveries(&test, &channel).await,
        [("pending".into(), 2, None)]
    );
    let back = Receiver::on(port).await;
    pass(&test, t0 + TimeDelta::seconds(31 + 121)).await;
    assert_eq!(back.received().len(), 1);
    assert_eq!(
        deliveries(&test, &channel).await,
        [("delivered".into(), 3, Some(200))]
    );
}

#[tokio::test]
async fn an_event_whose_pass_never_sent_it_is_sent_by_the_next_pass() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = webhook(&functions, OWNER, &receiver).await;
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    // A pass that committed its evaluation and was cut off before its delivery step.
    fire(&test, rule, t0).await;
    let cut_off = pass_state(&test, t0, Duration::ZERO);
    let summary = alert_eval::handle(&cut_off, json!({})).await.unwrap();
    assert_eq!(summary.notifications.attempted, 0);
    assert!(receiver.received().is_empty());
    pass(&test, t0 + TimeDelta::seconds(60)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(
        deliveries(&test, &channel).await,
        [("delivered".into(), 1, Some(200))]
    );
}

#[tokio::test]
async fn overlapping_passes_send_each_event_once_per_channel() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::status(200).after(Duration::from_millis(20)));
    webhook(&functions, OWNER, &receiver).await;
    webhook(&functions, OWNER, &receiver).await;
    let t0 = at("2026-12-01T10:00:00Z");
    for _ in 0..15 {
        let (_, _, rule) = device_with_rule(&test, OWNER).await;
        fire(&test, rule, t0).await;
    }
    let states: Vec<_> = (0..5)
        .map(|_| pass_state(&test, t0 + TimeDelta::seconds(1), Duration::from_secs(20)))
        .collect();
    futures::future::join_all(states.iter().map(|s| alert_eval::handle(s, json!({})))).await;
    let mut seen: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|r| {
            (
                r.header("webhook-id").unwrap().to_owned(),
                r.header("webhook-signature").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 30, "15 events × 2 channels");
    // Each event once per channel: an event id appears exactly twice (signed with each
    // channel's own secret, so the two differ).
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30);
    let mut ids: Vec<String> = seen.into_iter().map(|(id, _)| id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 15);
}

#[tokio::test]
async fn a_hanging_receiver_delays_nobody_else_and_the_pass_keeps_its_budget() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let hanging = Receiver::start().await;
    hanging.otherwise(Reply::status(200).after(Duration::from_secs(30)));
    let healthy = Receiver::start().await;
    webhook(&functions, "user_slow", &hanging).await;
    let fine = webhook(&functions, OWNER, &healthy).await;
    let t0 = at("2026-12-01T10:00:00Z");
    for owner in ["user_slow", "user_slow", "user_slow", OWNER] {
        let (_, _, rule) = device_with_rule(&test, owner).await;
        fire(&test, rule, t0).await;
    }
    let started = Instant::now();
    let state = pass_state(&test, t0, Duration::from_secs(4));
    let summary = alert_eval::handle(&state, json!({})).await.unwrap();
    let took = started.elapsed();
    // The budget (4 s) plus one attempt's timeout (2 s here, 5 s in Lambda), with room.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        deliveries(&test, &fine).await,
        [("delivered".into(), 1, Some(200))]
    );
    assert_eq!(summary.notifications.delivered, 1);
    // The slow channel: one attempt (timed out), its other two wait behind it.
    assert_eq!(hanging.received().len(), 1);
    assert_eq!(summary.notifications.retrying, 1);
}

#[tokio::test]
async fn retry_after_410_400_and_a_day_of_failures() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let t0 = at("2026-12-01T10:00:00Z");
    let (_, _, rule) = device_with_rule(&test, OWNER).await;

    let limited = Receiver::start().await;
    limited.script([Reply::status(429).with_header("retry-after", "120")]);
    let gone = Receiver::start().await;
    gone.otherwise(Reply::status(410));
    let bad = Receiver::start().await;
    bad.otherwise(Reply::status(400));
    let dead = Receiver::start().await;
    dead.otherwise(Reply::status(503));
    let limited_channel = webhook(&functions, OWNER, &limited).await;
    let gone_channel = webhook(&functions, OWNER, &gone).await;
    let bad_channel = webhook(&functions, OWNER, &bad).await;
    let dead_channel = webhook(&functions, OWNER, &dead).await;
    fire(&test, rule, t0).await;

    pass(&test, t0).await;
    // 429 + Retry-After 120: not at 60 s (the backoff alone would say 30 s), but after 120 s.
    pass(&test, t0 + TimeDelta::seconds(60)).await;
    assert_eq!(limited.received().len(), 1);
    pass(&test, t0 + TimeDelta::seconds(121)).await;
    assert_eq!(limited.received().len(), 2);
    assert_eq!(
        deliveries(&test, &limited_channel).await,
        [("delivered".into(), 2, Some(200))]
    );
    // 410: failed, the channel disabled, nothing more sent to it, not even a new event.
    assert_eq!(
        deliveries(&test, &gone_channel).await,
        [("failed".into(), 1, Some(410))]
    );
    let (status, shown) = functions
        .call(Event::load("channels-get").as_user(OWNER).at(
            "GET",
            &format!("/v1/channels/{}", gone_channel["id"].as_str().unwrap()),
        ))
        .await;
    assert_eq!((status, &shown["enabled"]), (200, &json!(false)));
    // 400: failed at once.
    assert_eq!(
        deliveries(&test, &bad_channel).await,
        [("failed".into(), 1, Some(400))]
    );
    // 503 for a day: retried, then failed once 24 h have passed.
    let mut now = t0 + TimeDelta::seconds(121);
    while now < t0 + TimeDelta::hours(25) {
        now += TimeDelta::minutes(61);
        pass(&test, now).await;
    }
    let dead_log = deliveries(&test, &dead_channel).await;
    assert_eq!(dead_log.len(), 1);
    assert_eq!(dead_log[0].0, "failed");
    assert!((20..30).contains(&dead_log[0].1), "{dead_log:?}");
    let attempts = dead.received().len();
    pass(&test, now + TimeDelta::hours(1)).await;
    assert_eq!(
        dead.received().len(),
        attempts,
        "no attempt after giving up"
    );
    assert_eq!(gone.received().len(), 1);
    assert_eq!(bad.received().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let elsewhere = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.otherwise(Reply::status(302).with_header("location", &elsewhere.url("/x")));
    let channel = webhook(&functions, OWNER, &redirecting).await;
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;
    pass(&test, t0).await;
    assert_eq!(
        deliveries(&test, &channel).await,
        [("failed".into(), 1, Some(302))]
    );
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn private_and_plain_http_targets_are_refused_without_the_override() {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[]));
    let hook = |url: &str| {
        Event::load("channels-create")
            .as_user(OWNER)
            .json_body(&json!({"name": "x", "type": "webhook", "target": {"url": url}}))
    };
    #[rustfmt::skip]
    check_refusals(&functions, [
        (hook("https://127.0.0.1/x"), Expect::Invalid("target.url")),
        (hook("https://10.0.0.1/x"), Expect::Invalid("target.url")),
        (hook("https://[::1]/x"), Expect::Invalid("target.url")),
        (hook("https://169.254.169.254/latest/meta-data"), Expect::Invalid("target.url")),
        (hook("https://[fd00:ec2::254]/"), Expect::Invalid("target.url")),
        (hook("https://localhost/x"), Expect::Invalid("target.url")),
        (hook("http://hooks.example.com/x"), Expect::Invalid("target.url")),
    ]).await;
    assert_eq!(test.count("channels").await, 0);

    // And at send time: a channel saved while allowed, sent without the override, fails.
    let allowed = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = webhook(&allowed, OWNER, &receiver).await;
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;
    let strict = test.config(&[]);
    let notifier = Notifier::new(&strict.notify);
    let state = alert_eval::State::with(&strict, Budget::default(), Arc::new(move || t0), notifier)
        .unwrap();
    alert_eval::handle(&state, json!({})).await.unwrap();
    assert_eq!(
        deliveries(&test, &channel).await,
        [("failed".into(), 1, None)]
    );
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn channel_bodies_are_checked_and_nothing_is_written() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let (other_device, _) = test.device("user_someone_else").await;
    let create = |body: Value| {
        Event::load("channels-create")
            .as_user(OWNER)
            .json_body(&body)
    };
    let ok =
        json!({"name": "n", "type": "webhook", "target": {"url": "https://hooks.example.com"}});
    let with = |key: &str, value: Value| {
        let mut body = ok.clone();
        body[key] = value;
        create(body)
    };
    #[rustfmt::skip]
    check_refusals(&functions, [
        (create(json!({"type": "webhook", "target": {"url": "https://a.example"}})), Expect::Invalid("name")),
        (with("name", json!("")), Expect::Invalid("name")),
        (with("type", json!("pager")), Expect::Invalid("type")),
        (with("type", json!("email")), Expect::Invalid("type")),
        (with("target", json!("https://a.example")), Expect::Invalid("target")),
        (with("target", json!({"to": "a@b.example"})), Expect::Invalid("target")),
        (with("target", json!({"url": 5})), Expect::Invalid("target.url")),
        (with("target", json!({"url": "ftp://a.example"})), Expect::Invalid("target.url")),
        (with("events", json!([])), Expect::Invalid("events")),
        (with("events", json!(["alert.exploded"])), Expect::Invalid("events")),
        (with("device_ids", json!(["not-a-uuid"])), Expect::Invalid("device_ids")),
        (with("device_ids", json!([other_device.to_string()])), Expect::Invalid("device_ids")),
        (with("device_ids", json!([Uuid::new_v4().to_string()])), Expect::Invalid("device_ids")),
        (with("enabled", json!("yes")), Expect::Invalid("enabled")),
        (with("secret", json!("mine")), Expect::Bad),
        (create(json!({"name": "n", "type": "slack", "target": {"url": "https://hooks.example.com"}, "events": null})), Expect::Invalid("events")),
    ]).await;
    assert_eq!(test.count("channels").await, 0);

    // A channel's type cannot change; its target is checked as its type's.
    let channel = create_channel(&functions, OWNER, ok.clone()).await;
    let path = format!("/v1/channels/{}", channel["id"].as_str().unwrap());
    let patch = |body: Value| {
        Event::load("channels-update")
            .as_user(OWNER)
            .at("PATCH", &path)
            .json_body(&body)
    };
    #[rustfmt::skip]
    check_refusals(&functions, [
        (patch(json!({"type": "slack"})), Expect::Invalid("type")),
        (patch(json!({"target": {"to": "a@b.example"}})), Expect::Invalid("target")),
        (patch(json!({"device_ids": [other_device.to_string()]})), Expect::Invalid("device_ids")),
    ]).await;
    let (_, shown) = functions
        .call(Event::load("channels-get").as_user(OWNER).at("GET", &path))
        .await;
    assert_eq!(
        shown["target"],
        json!({"url": "https://hooks.example.com/"})
    );
    assert!(
        shown.get("signing_secret").is_none(),
        "the secret is shown once"
    );
}

#[tokio::test]
async fn silences_mute_deliveries_never_alerts_and_windows_follow_the_wall_clock() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = webhook(&functions, OWNER, &receiver).await;
    let (device, _, rule) = device_with_rule(&test, OWNER).await;

    // A one-off silence of the device for an hour: the alert fires, its delivery is suppressed.
    let t0 = at("2026-12-01T10:00:00Z");
    let (status, one_off) = functions
        .call(Event::load("silences-create").as_user(OWNER).json_body(&json!({
            "device_id": device, "starts_at": "2026-12-01T09:30:00Z", "ends_at": "2026-12-01T11:00:00Z"
        })))
        .await;
    assert_eq!(status, 201, "{one_off}");
    assert_eq!(one_off["recurrence"], Value::Null);
    let alert = fire(&test, rule, t0).await;
    pass(&test, t0).await;
    assert_eq!(
        deliveries(&test, &channel).await,
        [("suppressed".into(), 0, None)]
    );
    let firing: i64 = test
        .direct
        .query_one("SELECT count(*) FROM alerts WHERE status = 'firing'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(firing, 1, "evaluation is never muted");

    // After it ends, an acknowledgement is delivered (and a second one is not another event).
    let ack = || {
        Event::load("alerts-ack")
            .as_user(OWNER)
            .at("POST", &format!("/v1/alerts/{alert}/ack"))
    };
    let (status, acked) = functions
        .call(ack().json_body(&json!({"comment": "on it"})))
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acknowledged_by"], OWNER);
    assert_eq!(acked["comment"], "on it");
    let (_, again) = functions
        .call(ack().json_body(&json!({"comment": "again"})))
        .await;
    assert_eq!(again["comment"], "on it");
    assert_eq!(again["acknowledged_at"], acked["acknowledged_at"]);
    pass(&test, Utc::now() + TimeDelta::seconds(1)).await;
    let kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["alert.acknowledged"]);
    assert_eq!(receiver.received()[0].json()["alert"]["comment"], "on it");
    let (_, unacked) = functions
        .call(
            Event::load("alerts-list")
                .as_user(OWNER)
                .query("acknowledged=false"),
        )
        .await;
    assert_eq!(unacked["items"], json!([]));

    // A weekly window, Sundays 02:00–04:00 in Berlin, judged at each event's time: on the
    // Sunday the clocks go forward (29 March 2026, 02:00 CET → 03:00 CEST) it covers 03:00–04:00
    // local, 01:00–02:00 UTC; a week before, 02:00–04:00 CET, 01:00–03:00 UTC.
    let (status, window) = functions
        .call(Event::load("silences-create").as_user(OWNER).json_body(&json!({
            "rule_id": rule,
            "recurrence": {"weekdays": ["sun"], "start": "02:00", "end": "04:00", "timezone": "Europe/Berlin"}
        })))
        .await;
    assert_eq!(status, 201, "{window}");
    assert_eq!(window["recurrence"]["start"], "02:00");
    let silenced = |at: &str| {
        let test = &test;
        let at = self::at(at);
        async move {
            let row = test
                .direct
                .query_one(
                    "SELECT is_silenced($1, $2, $3, $4) AS silenced",
                    &[&OWNER, &device, &rule, &at],
                )
                .await
                .unwrap();
            row.get::<_, bool>(0)
        }
    };
    // (The window was created now, so it applies from now on: judge times after it.)
    test.direct
        .execute(
            "UPDATE silences SET starts_at = '2026-01-01' WHERE timezone IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert!(!silenced("2026-03-22T00:59:00Z").await); // 01:59 CET
    assert!(silenced("2026-03-22T01:00:00Z").await); // 02:00 CET
    assert!(silenced("2026-03-22T02:59:00Z").await); // 03:59 CET
    assert!(!silenced("2026-03-22T03:00:00Z").await); // 04:00 CET
    assert!(!silenced("2026-03-29T00:59:00Z").await); // 01:59 CET
    assert!(silenced("2026-03-29T01:00:00Z").await); // 03:00 CEST (02:00 does not exist)
    assert!(silenced("2026-03-29T01:59:00Z").await); // 03:59 CEST
    assert!(!silenced("2026-03-29T02:00:00Z").await); // 04:00 CEST
    assert!(!silenced("2026-03-28T01:30:00Z").await); // a Saturday
    // And end to end: an alert fired inside the window, from the pass's clock.
    test.direct
        .execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = triggered_at",
            &[],
        )
        .await
        .unwrap();
    let before = receiver.received().len();
    let inside = at("2026-03-29T01:30:00Z");
    fire(&test, rule, inside).await;
    pass(&test, inside).await;
    // (The resolution written above fell under the one-off silence, this firing under the window.)
    assert_eq!(receiver.received().len(), before);
    let log = deliveries(&test, &channel).await;
    assert_eq!(log.last().unwrap().0, "suppressed");

    #[rustfmt::skip]
    check_refusals(&functions, [
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({})), Expect::Invalid("ends_at")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"ends_at": "2026-12-01T11:00:00Z", "recurrence": window["recurrence"]})), Expect::Invalid("ends_at")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"starts_at": "2026-12-01T11:00:00Z", "ends_at": "2026-12-01T10:00:00Z"})), Expect::Invalid("ends_at")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"recurrence": {"weekdays": ["sun"], "start": "02:00", "end": "02:00", "timezone": "UTC"}})), Expect::Invalid("recurrence.end")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"recurrence": {"weekdays": ["someday"], "start": "02:00", "end": "03:00", "timezone": "UTC"}})), Expect::Invalid("recurrence.weekdays")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"recurrence": {"weekdays": ["mon"], "start": "2am", "end": "03:00", "timezone": "UTC"}})), Expect::Invalid("recurrence.start")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"recurrence": {"weekdays": ["mon"], "start": "02:00", "end": "03:00", "timezone": "Mars/Olympus"}})), Expect::Invalid("recurrence.timezone")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"device_id": Uuid::new_v4(), "ends_at": "2026-12-01T11:00:00Z"})), Expect::Invalid("device_id")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"rule_id": Uuid::new_v4(), "ends_at": "2026-12-01T11:00:00Z"})), Expect::Invalid("rule_id")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"ends_at": "tomorrow"})), Expect::Invalid("ends_at")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"ends_at": "2026-12-01T11:00:00Z", "comment": "a\u{0}b"})), Expect::Invalid("comment")),
        (Event::load("silences-create").as_user(OWNER).json_body(&json!({"recurrence": {"weekdays": ["mon"], "start": "02:00", "end": "03:00", "timezone": "Europe/\u{0}"}})), Expect::Invalid("recurrence.timezone")),
        (ack().json_body(&json!({"comment": 5})), Expect::Invalid("comment")),
        (ack().json_body(&json!({"comment": "\u{0}"})), Expect::Invalid("comment")),
    ]).await;
    assert_eq!(test.count("silences").await, 2);
}

#[tokio::test]
async fn the_channel_test_sends_at_once_and_the_log_shows_it() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(500)]);
    let channel = webhook(&functions, OWNER, &receiver).await;
    let id = channel["id"].as_str().unwrap();
    let test_event = || {
        Event::load("channels-test")
            .as_user(OWNER)
            .at("POST", &format!("/v1/channels/{id}/test"))
    };
    let (status, first) = functions.call(test_event()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["last_status_code"], 500);
    assert_eq!(first["attempts"], 1);
    let (_, second) = functions.call(test_event()).await;
    assert_eq!(second["status"], "delivered");
    assert_eq!(second["event_type"], "test");
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert!(
        received[1].json().get("device").is_none(),
        "a test event has no device"
    );
    verify(&received[1], channel["signing_secret"].as_str().unwrap());

    let log = |query: &str| {
        Event::load("channels-deliveries")
            .as_user(OWNER)
            .at("GET", &format!("/v1/channels/{id}/deliveries"))
            .query(query)
    };
    let (_, all) = functions.call(log("limit=1")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    assert_eq!(all["items"][0]["id"], second["id"], "newest first");
    let cursor = all["next_cursor"].as_str().unwrap();
    let (_, rest) = functions
        .call(log(&format!("limit=1&cursor={cursor}")))
        .await;
    assert_eq!(rest["items"][0]["id"], first["id"]);
    let (_, pending) = functions.call(log("status=delivered")).await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let (status, _) = functions.call(log("status=lost")).await;
    assert_eq!(status, 422);
    let (status, _) = functions
        .call(
            Event::load("channels-test")
                .as_user("user_other")
                .at("POST", &format!("/v1/channels/{id}/test")),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn slack_gets_incoming_webhook_json_with_text_and_escaped_blocks() {
    let test = TestDb::new().await;
    let functions = Functions::new(&config(&test));
    let receiver = Receiver::start().await;
    let channel = create_channel(
        &functions,
        OWNER,
        json!({"name": "ops", "type": "slack", "target": {"url": receiver.url("/services/T/B/x")}}),
    )
    .await;
    assert!(
        channel.get("signing_secret").is_none() || channel["signing_secret"].is_null(),
        "only webhooks are signed: {channel}"
    );
    let (device, _, rule) = device_with_rule(&test, OWNER).await;
    test.direct
        .execute(
            "UPDATE devices SET name = 'Boiler <room> & co' WHERE id = $1",
            &[&device],
        )
        .await
        .unwrap();
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;
    pass(&test, t0 + TimeDelta::seconds(60)).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/services/T/B/x");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-signature"), None);
    let body = request.json();
    assert_eq!(
        body["text"], "Firing on Boiler <room> & co: t: t > 80 (value 81)",
        "the plain text is the notification fallback"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[0]["text"]["text"],
        "*Firing on Boiler &lt;room&gt; &amp; co: t*\nt &gt; 80 (value 81)"
    );
    assert_eq!(blocks[1]["type"], "context");
    assert!(
        blocks[1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("alert.firing · 2026-12-01T10:00:00"),
        "{body}"
    );
    assert_eq!(
        deliveries(&test, &channel).await,
        [("delivered".into(), 1, Some(200))]
    );
}

#[tokio::test]
async fn email_goes_through_ses_with_recipient_subject_and_body() {
    let Ok(moto) = std::env::var("TEST_MOTO_URL") else {
        panic!("TEST_MOTO_URL is set by scripts/test (moto, a local AWS API)");
    };
    let test = TestDb::new().await;
    let aws = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", moto.as_str()),
        ("NOTIFY_EMAIL_FROM", "alerts@example.com"),
    ];
    let config = test.config(&aws);
    // moto, like SES, sends only from a verified identity.
    let ses = aws_sdk_sesv2::Client::from_conf(
        aws_sdk_sesv2::Config::builder()
            .behavior_version(aws_sdk_sesv2::config::BehaviorVersion::latest())
            .region(aws_sdk_sesv2::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_sesv2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(&moto)
            .build(),
    );
    ses.create_email_identity()
        .email_identity("alerts@example.com")
        .send()
        .await
        .unwrap();
    let functions = Functions::new(&config);
    let to = format!("ops+{}@example.com", Uuid::new_v4().simple());
    create_channel(
        &functions,
        OWNER,
        json!({"name": "ops", "type": "email", "target": {"to": to}}),
    )
    .await;
    let (_, _, rule) = device_with_rule(&test, OWNER).await;
    let t0 = at("2026-12-01T10:00:00Z");
    fire(&test, rule, t0).await;
    let notifier = Notifier::new(&config.notify);
    let state = alert_eval::State::with(&config, Budget::default(), Arc::new(move || t0), notifier)
        .unwrap();
    let summary = alert_eval::handle(&state, json!({})).await.unwrap();
    assert_eq!(summary.notifications.delivered, 1, "{summary:?}");

    let data: Value = reqwest::get(format!("{moto}/moto-api/data.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = data["ses"]["Message"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sent: Vec<&Value> = messages
        .iter()
        .filter(|m| m["destinations"]["ToAddresses"][0] == to.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "{data}");
    assert_eq!(sent[0]["source"], "alerts@example.com");
    assert_eq!(sent[0]["subject"], "Firing on test device: t");
    // moto keeps the HTML part when there is one.
    assert!(
        sent[0]["body"]
            .as_str()
            .unwrap()
            .contains("t &gt; 80 (value 81)"),
        "{}",
        sent[0]
    );
}
