//! The Clerk webhook: Svix signatures, upserts that converge, deletions that stick.

use serde_json::{Value, json};
use tests::clerk::{WEBHOOK_SECRET, now, payload, webhook};
use tests::{Event, Functions, TestDb, assert_error};

const CREATED: &str = "clerk-webhook-user-created";
const UPDATED: &str = "clerk-webhook-user-updated";
const DELETED: &str = "clerk-webhook-user-deleted";
const ADA: &str = "user_2g7oPQm3DiJ8zTt1Zq8bV0AdA";

fn state(test: &TestDb) -> Functions {
    Functions::new(&test.config(&[("CLERK_WEBHOOK_SECRET", WEBHOOK_SECRET)]))
}

async fn deliver(functions: &Functions, event: Event) -> (u16, Value) {
    functions.call(event).await
}

/// The stored user: (email, first_name, last_name, image_url, updated_at in ms).
async fn stored(
    test: &TestDb,
    id: &str,
) -> Option<(
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
)> {
    test.direct
        .query_opt(
            r#"SELECT email, first_name, last_name, image_url,
                      (extract(epoch FROM updated_at) * 1000)::int8
               FROM "user" WHERE id = $1"#,
            &[&id],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

#[tokio::test]
async fn created_then_updated_then_stale_then_deleted() {
    let test = TestDb::new().await;
    let state = state(&test);

    let (status, body) = deliver(&state, webhook(CREATED, &payload(CREATED), "msg_1", now())).await;
    assert_eq!((status, body), (200, json!({"ok": true, "changed": true})));
    let (email, first, last, image, updated) = stored(&test, ADA).await.unwrap();
    assert_eq!(
        email.as_deref(),
        Some("ada@example.org"),
        "the primary address, not the first"
    );
    assert_eq!(
        (first.as_deref(), last.as_deref()),
        (Some("Ada"), Some("Lovelace"))
    );
    assert_eq!(
        image.as_deref(),
        Some("https://img.clerk.com/eyJ0eXBlIjoicHJveHkifQ")
    );
    assert_eq!(updated, Some(1_795_686_000_000));

    // The same delivery again (Svix retries): nothing changes.
    let (status, body) = deliver(&state, webhook(CREATED, &payload(CREATED), "msg_1", now())).await;
    assert_eq!((status, body), (200, json!({"ok": true, "changed": false})));

    let (_, body) = deliver(&state, webhook(UPDATED, &payload(UPDATED), "msg_2", now())).await;
    assert_eq!(body, json!({"ok": true, "changed": true}));
    assert_eq!(
        stored(&test, ADA).await.unwrap().1.as_deref(),
        Some("Augusta Ada")
    );

    // The older event arriving late changes nothing.
    let (_, body) = deliver(&state, webhook(CREATED, &payload(CREATED), "msg_1", now())).await;
    assert_eq!(body, json!({"ok": true, "changed": false}));
    assert_eq!(
        stored(&test, ADA).await.unwrap().1.as_deref(),
        Some("Augusta Ada")
    );

    // Give Ada a device with a reading, a rule and an alert: deletion takes all of it.
    test.direct
        .batch_execute(&format!(
            r#"INSERT INTO devices (id, owner_id, name, device_key_hash)
                 VALUES ('00000000-0000-0000-0000-0000000000d1', '{ADA}', 'boiler', sha256('dk_a'));
               INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
                 VALUES ('00000000-0000-0000-0000-0000000000d1', 't', 1, now());
               INSERT INTO alert_rules (id, device_id, metric, comparator, threshold)
                 VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000d1', 't', 'gt', 0);
               INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
                 VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000d1',
                         '{ADA}', 't', 'firing', 1, now());"#
        ))
        .await
        .unwrap();
    let (_, body) = deliver(&state, webhook(DELETED, &payload(DELETED), "msg_3", now())).await;
    assert_eq!(body, json!({"ok": true, "changed": true}));
    assert!(stored(&test, ADA).await.is_none());
    for table in ["devices", "alert_rules", "alerts"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    // The readings are unreachable at once and purged by the next pass.
    assert_eq!(test.count("device_purges").await, 1);
    assert_eq!(test.pass().await.purged_rows, 1);
    for table in ["sensor_readings", "device_purges"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    assert_eq!(test.count("user_tombstones").await, 1);

    // Late and replayed events for a deleted user: 200 (so Svix stops), ignored.
    for (name, id) in [(UPDATED, "msg_2"), (CREATED, "msg_1"), (DELETED, "msg_3")] {
        let (status, body) = deliver(&state, webhook(name, &payload(name), id, now())).await;
        assert_eq!(status, 200);
        assert!(
            body["changed"] == json!(false) || body["ignored"] == json!(true),
            "{body}"
        );
    }
    let mut newer = payload(UPDATED);
    newer["data"]["updated_at"] = json!(4_102_444_800_000i64); // year 2100
    let (_, body) = deliver(&state, webhook(UPDATED, &newer, "msg_9", now())).await;
    assert_eq!(body, json!({"ok": true, "ignored": true}));
    assert!(stored(&test, ADA).await.is_none());
}

/// Postgres text cannot hold NUL; a name with one is stored without it, not refused with a 500
/// that Svix would retry for days.
#[tokio::test]
async fn nul_characters_in_names_are_dropped() {
    let test = TestDb::new().await;
    let state = state(&test);
    let mut body = payload(CREATED);
    body["data"]["first_name"] = json!("A\u{0}da");
    body["data"]["last_name"] = json!("\u{0}Lovelace\u{0}");
    body["data"]["image_url"] = json!("https://img.clerk.com/\u{0}x");
    body["data"]["email_addresses"][1]["email_address"] = json!("ada@\u{0}example.org");
    let (status, answer) = deliver(&state, webhook(CREATED, &body, "msg_nul", now())).await;
    assert_eq!(
        (status, answer),
        (200, json!({"ok": true, "changed": true}))
    );
    let (email, first, last, image, _) = stored(&test, ADA).await.unwrap();
    assert_eq!(email.as_deref(), Some("ada@example.org"));
    assert_eq!(
        (first.as_deref(), last.as_deref()),
        (Some("Ada"), Some("Lovelace"))
    );
    assert_eq!(image.as_deref(), Some("https://img.clerk.com/x"));
}

#[tokio::test]
async fn a_placeholder_is_filled_in_by_the_first_event() {
    let test = TestDb::new().await;
    test.direct
        .batch_execute(&format!(r#"INSERT INTO "user" (id) VALUES ('{ADA}')"#))
        .await
        .unwrap();
    let (_, body) = deliver(
        &state(&test),
        webhook(UPDATED, &payload(UPDATED), "msg_1", now()),
    )
    .await;
    assert_eq!(body, json!({"ok": true, "changed": true}));
    assert_eq!(
        stored(&test, ADA).await.unwrap().0.as_deref(),
        Some("ada@example.org")
    );
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_ignored() {
    let test = TestDb::new().await;
    let body = json!({"type": "session.created", "object": "event", "timestamp": 1,
                      "data": {"id": "sess_1", "user_id": ADA}});
    let (status, body) = deliver(&state(&test), webhook(CREATED, &body, "msg_s", now())).await;
    assert_eq!((status, body), (200, json!({"ok": true, "ignored": true})));
    assert_eq!(test.count(r#""user""#).await, 0);
}

#[tokio::test]
async fn bad_signatures_are_400_and_write_nothing() {
    let test = TestDb::new().await;
    let state = state(&test);
    let signed_at = now();
    let good = webhook(CREATED, &payload(CREATED), "msg_1", signed_at);
    let text = good.json()["body"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, Event)> = vec![
        (
            "a changed byte",
            good.clone().body(&text.replacen("Ada", "Eve", 1)),
        ),
        (
            "a changed timestamp",
            good.clone()
                .header("svix-timestamp", &(now() - 1).to_string()),
        ),
        (
            "another message id",
            good.clone().header("svix-id", "msg_other"),
        ),
        ("signed with another secret", {
            let sig = svix::webhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
                .unwrap()
                .sign("msg_1", now(), text.as_bytes())
                .unwrap();
            good.clone().header("svix-signature", &sig)
        }),
        (
            "301 s old",
            webhook(CREATED, &payload(CREATED), "msg_1", now() - 301),
        ),
        (
            "6 minutes ahead",
            webhook(CREATED, &payload(CREATED), "msg_1", now() + 360),
        ),
        (
            "no signature",
            good.clone().without_header("svix-signature"),
        ),
        (
            "no timestamp",
            good.clone().without_header("svix-timestamp"),
        ),
        ("no id", good.clone().without_header("svix-id")),
        (
            "a v2 signature",
            good.clone().header("svix-signature", "v2,AAAA"),
        ),
    ];
    for (what, event) in cases {
        let response = state.handle(event.request()).await;
        assert_eq!(response.status(), 400, "{what}");
        assert_error(&response, 400, "bad_request", None);
    }
    assert_eq!(test.count(r#""user""#).await, 0);

    // Within 5 minutes is fine, and one valid signature among several invalid ones is enough
    // (Svix sends several during secret rotation).
    let valid = webhook(CREATED, &payload(CREATED), "msg_1", now() - 290);
    let signature = valid.json()["headers"]["svix-signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = valid.header(
        "svix-signature",
        &format!("v1,Zm9yZ2VkIHNpZ25hdHVyZQ== {signature} v1,YW5vdGhlciBvbmU="),
    );
    let (status, _) = deliver(&state, rotated).await;
    assert_eq!(status, 200);
    assert_eq!(test.count(r#""user""#).await, 1);
}

#[tokio::test]
async fn signed_but_malformed_payloads_are_400() {
    let test = TestDb::new().await;
    let state = state(&test);
    for (what, body) in [
        ("not JSON", Value::String("not json".into())),
        ("no type", json!({"data": {}})),
        (
            "a user without id",
            json!({"type": "user.created", "data": {"updated_at": 1}}),
        ),
        (
            "a user without updated_at",
            json!({"type": "user.updated", "data": {"id": "user_x"}}),
        ),
        (
            "a deletion without id",
            json!({"type": "user.deleted", "data": {"deleted": true}}),
        ),
        (
            "a user id with NUL",
            json!({"type": "user.created", "data": {"id": "user_\u{0}x", "updated_at": 1}}),
        ),
        // Milliseconds that name a time Postgres cannot hold (about 10,000 BC).
        (
            "updated_at out of range",
            json!({"type": "user.updated", "data": {"id": "user_x", "updated_at": -377_000_000_000_000i64}}),
        ),
        (
            "a deletion timestamp out of range",
            json!({"type": "user.deleted", "timestamp": -377_000_000_000_000i64, "data": {"id": "user_x", "deleted": true}}),
        ),
    ] {
        let event = match &body {
            Value::String(text) => {
                let sig = svix::webhooks::Webhook::new(WEBHOOK_SECRET)
                    .unwrap()
                    .sign("msg_x", now(), text.as_bytes())
                    .unwrap();
                Event::load(CREATED)
                    .body(text)
                    .header("svix-id", "msg_x")
                    .header("svix-timestamp", &now().to_string())
                    .header("svix-signature", &sig)
            }
            _ => webhook(CREATED, &body, "msg_x", now()),
        };
        let response = state.handle(event.request()).await;
        assert_eq!(response.status(), 400, "{what}");
        assert_error(&response, 400, "bad_request", None);
    }
    assert_eq!(test.count(r#""user""#).await, 0);
    assert_eq!(test.count("user_tombstones").await, 0);
}

/// 20 versions of one user, each delivered twice, shuffled, from 20 concurrent "instances"
/// (each its own connection through the pooler). With `delete_at` set, a `user.deleted` is mixed
/// in after that version.
async fn deliver_storm(test: &TestDb, delete_after: Option<usize>) -> Vec<Event> {
    let base = payload(UPDATED);
    let start = 1_795_687_200_000i64;
    let mut events = Vec::new();
    for version in 0..20usize {
        let mut body = base.clone();
        body["data"]["first_name"] = json!(format!("v{version}"));
        body["data"]["updated_at"] = json!(start + version as i64 * 1000);
        events.push(webhook(UPDATED, &body, &format!("msg_v{version}"), now()));
    }
    if let Some(after) = delete_after {
        let mut body = payload(DELETED);
        body["timestamp"] = json!(start + after as i64 * 1000 + 500);
        events.push(webhook(DELETED, &body, "msg_del", now()));
    }
    let mut deliveries: Vec<Event> = events.iter().chain(events.iter()).cloned().collect();
    fastrand::shuffle(&mut deliveries);

    let chunks: Vec<Vec<Event>> = deliveries
        .chunks(deliveries.len().div_ceil(20))
        .map(<[Event]>::to_vec)
        .collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let state = state(test);
        tokio::spawn(async move {
            for event in chunk {
                let (status, body) = deliver(&state, event).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_duplicated_concurrent_updates_converge_on_the_newest() {
    let test = TestDb::new().await;
    deliver_storm(&test, None).await;
    let (email, first, _, _, updated) = stored(&test, ADA).await.unwrap();
    assert_eq!(first.as_deref(), Some("v19"));
    assert_eq!(updated, Some(1_795_687_200_000 + 19_000));
    assert_eq!(email.as_deref(), Some("ada@example.org"));
    assert_eq!(test.count(r#""user""#).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deletion_in_the_stream_wins_and_stays() {
    let test = TestDb::new().await;
    let events = deliver_storm(&test, Some(9)).await;
    assert!(
        stored(&test, ADA).await.is_none(),
        "deleted, whatever the order"
    );
    assert_eq!(test.count("user_tombstones").await, 1);

    // Every event replayed once more, concurrently: still gone.
    let state = state(&test);
    let replays = events.into_iter().map(|event| deliver(&state, event));
    for (status, _) in futures::future::join_all(replays).await {
        assert_eq!(status, 200);
    }
    assert!(stored(&test, ADA).await.is_none());
}
