//! The devices function: lifecycle, tenant isolation, device keys, pagination, validation.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tests::{Event, TestDb, assert_error, body_json};
use uuid::Uuid;

const ALICE: &str = "user_alice";
const BOB: &str = "user_bob";

async fn call(state: &devices::State, event: Event) -> (u16, Value) {
    let response = devices::handle(state, event.request()).await;
    (response.status().as_u16(), body_json(&response))
}

async fn create_device(state: &devices::State, user: &str, name: &str) -> Value {
    let (status, body) = call(
        state,
        Event::load("devices-create")
            .as_user(user)
            .json_body(&json!({ "name": name })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn create_rule(
    state: &devices::State,
    user: &str,
    device: &str,
    rule: Value,
) -> (u16, Value) {
    call(
        state,
        Event::load("rules-create")
            .as_user(user)
            .at("POST", &format!("/v1/devices/{device}/rules"))
            .json_body(&rule),
    )
    .await
}

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'))
}

#[tokio::test]
async fn full_lifecycle() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();

    // Create: the device, and its key, once.
    let created = create_device(&state, ALICE, "  Boiler room  ").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "Boiler room", "trimmed");
    assert_eq!(created["status"], "offline");
    assert_eq!(created["last_seen_at"], Value::Null);
    assert!(is_timestamp(&created["created_at"]));
    assert!(created["device_key"].as_str().unwrap().starts_with("dk_"));
    let keys: HashSet<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        HashSet::from([
            "id",
            "name",
            "status",
            "last_seen_at",
            "created_at",
            "device_key"
        ])
    );

    let device_path = format!("/v1/devices/{id}");
    let (status, got) = call(
        &state,
        Event::load("devices-get")
            .as_user(ALICE)
            .at("GET", &device_path),
    )
    .await;
    assert_eq!(status, 200);
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("device_key");
    assert_eq!(got, expected);

    let (status, list) = call(&state, Event::load("devices-list").as_user(ALICE)).await;
    assert_eq!(status, 200);
    assert_eq!(list, json!({"items": [expected], "next_cursor": null}));

    let (status, renamed) = call(
        &state,
        Event::load("devices-update")
            .as_user(ALICE)
            .at("PATCH", &device_path)
            .json_body(&json!({"name": "Boiler (east)"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "Boiler (east)");
    assert_eq!(renamed["id"], id.as_str());

    // Rules.
    let (status, rule) = create_rule(
        &state,
        ALICE,
        &id,
        json!({"metric": "temperature", "comparator": "gt", "threshold": 80, "for_seconds": 300, "clear_threshold": "75.5"}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    assert_eq!(rule["device_id"], id.as_str());
    assert_eq!(rule["metric"], "temperature");
    assert_eq!(rule["comparator"], "gt");
    assert_eq!(rule["threshold"], "80", "decimals are exact strings");
    assert_eq!(rule["for_seconds"], 300);
    assert_eq!(rule["clear_threshold"], "75.5");
    assert!(is_timestamp(&rule["created_at"]) && is_timestamp(&rule["updated_at"]));

    let (_, second) = create_rule(
        &state,
        ALICE,
        &id,
        json!({"metric": "humidity", "comparator": "lte", "threshold": "0.1"}),
    )
    .await;
    assert_eq!(second["for_seconds"], 0, "default");
    assert_eq!(second["clear_threshold"], Value::Null);
    assert_eq!(second["threshold"], "0.1");

    let rules_path = format!("{device_path}/rules");
    let (status, rules) = call(
        &state,
        Event::load("rules-list")
            .as_user(ALICE)
            .at("GET", &rules_path),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [second["id"].as_str().unwrap(), rule_id.as_str()],
        "newest first"
    );

    let rule_path = format!("{rules_path}/{rule_id}");
    let (status, got) = call(
        &state,
        Event::load("rules-get")
            .as_user(ALICE)
            .at("GET", &rule_path),
    )
    .await;
    assert_eq!((status, &got), (200, &rule));

    let (status, updated) = call(
        &state,
        Event::load("rules-update")
            .as_user(ALICE)
            .at("PATCH", &rule_path)
            .json_body(&json!({"threshold": "85.25", "clear_threshold": null})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["threshold"], "85.25");
    assert_eq!(updated["clear_threshold"], Value::Null);
    assert_eq!(updated["comparator"], "gt", "untouched fields stay");
    assert_eq!(updated["for_seconds"], 300);

    let (status, body) = call(
        &state,
        Event::load("rules-delete")
            .as_user(ALICE)
            .at("DELETE", &rule_path),
    )
    .await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = call(
        &state,
        Event::load("rules-get")
            .as_user(ALICE)
            .at("GET", &rule_path),
    )
    .await;
    assert_eq!(status, 404);

    // Deleting the device takes its readings, rules and alerts along.
    test.direct
        .batch_execute(&format!(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at) VALUES ('{id}', 'humidity', 1, now());
             INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
               VALUES ('{}', '{id}', '{ALICE}', 'humidity', 'firing', 0.05, now());",
            second["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let (status, _) = call(
        &state,
        Event::load("devices-delete")
            .as_user(ALICE)
            .at("DELETE", &device_path),
    )
    .await;
    assert_eq!(status, 204);
    for table in ["devices", "sensor_readings", "alert_rules", "alerts"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    let (status, _) = call(
        &state,
        Event::load("devices-get")
            .as_user(ALICE)
            .at("GET", &device_path),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &state,
        Event::load("devices-delete")
            .as_user(ALICE)
            .at("DELETE", &device_path),
    )
    .await;
    assert_eq!(status, 404);
}

/// Everything in the database, as text, to compare before and after.
async fn snapshot(test: &TestDb) -> Vec<String> {
    let mut all = Vec::new();
    for table in [
        "\"user\"",
        "devices",
        "sensor_readings",
        "alert_rules",
        "alerts",
    ] {
        let rows = test
            .direct
            .query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[])
            .await
            .unwrap();
        all.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    all
}

#[tokio::test]
async fn another_users_things_are_not_found() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    let alice_device = create_device(&state, ALICE, "alice's").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, rule) = create_rule(
        &state,
        ALICE,
        &alice_device,
        json!({"metric": "t", "comparator": "gt", "threshold": 1}),
    )
    .await;
    let alice_rule = rule["id"].as_str().unwrap().to_owned();
    test.direct
        .batch_execute(&format!(
            "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
             VALUES ('{alice_rule}', '{alice_device}', '{ALICE}', 't', 'firing', 2, now())"
        ))
        .await
        .unwrap();
    let bob_device = create_device(&state, BOB, "bob's").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = snapshot(&test).await;

    let d = format!("/v1/devices/{alice_device}");
    let r = format!("{d}/rules/{alice_rule}");
    let via_bob = format!("/v1/devices/{bob_device}/rules/{alice_rule}");
    let rule_body = json!({"metric": "t", "comparator": "lt", "threshold": 0});
    let cases: Vec<(&str, Event)> = vec![
        ("get device", Event::load("devices-get").at("GET", &d)),
        (
            "rename device",
            Event::load("devices-update")
                .at("PATCH", &d)
                .json_body(&json!({"name": "mine now"})),
        ),
        (
            "delete device",
            Event::load("devices-delete").at("DELETE", &d),
        ),
        (
            "list rules",
            Event::load("rules-list").at("GET", &format!("{d}/rules")),
        ),
        (
            "create rule",
            Event::load("rules-create")
                .at("POST", &format!("{d}/rules"))
                .json_body(&rule_body),
        ),
        ("get rule", Event::load("rules-get").at("GET", &r)),
        (
            "update rule",
            Event::load("rules-update")
                .at("PATCH", &r)
                .json_body(&json!({"threshold": 5})),
        ),
        ("delete rule", Event::load("rules-delete").at("DELETE", &r)),
        (
            "get rule via own device",
            Event::load("rules-get").at("GET", &via_bob),
        ),
        (
            "update rule via own device",
            Event::load("rules-update")
                .at("PATCH", &via_bob)
                .json_body(&json!({"threshold": 5})),
        ),
        (
            "delete rule via own device",
            Event::load("rules-delete").at("DELETE", &via_bob),
        ),
    ];
    for (what, event) in cases {
        let response = devices::handle(&state, event.as_user(BOB).request()).await;
        assert_eq!(response.status(), 404, "{what}");
        assert_error(&response, 404, "not_found", None);
    }
    // Bob's alert list shows nothing of Alice's, even when he names her device.
    for query in ["", &format!("device_id={alice_device}"), "status=firing"] {
        let (status, body) =
            call(&state, Event::load("alerts-list").as_user(BOB).query(query)).await;
        assert_eq!(
            (status, body),
            (200, json!({"items": [], "next_cursor": null})),
            "{query}"
        );
    }
    let (_, list) = call(&state, Event::load("devices-list").as_user(BOB)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot(&test).await, before, "nothing of Alice's changed");

    // Alice still sees all of it, alert included.
    let (_, alerts) = call(&state, Event::load("alerts-list").as_user(ALICE).query("")).await;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 1);
    assert_eq!(alerts["items"][0]["value"], "2");
}

#[tokio::test]
async fn the_device_key_is_shown_once_and_stored_only_as_a_hash() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    let first = create_device(&state, ALICE, "one").await;
    let second = create_device(&state, ALICE, "two").await;
    let key = first["device_key"].as_str().unwrap().to_owned();
    assert_ne!(key, second["device_key"].as_str().unwrap());
    assert_eq!(key.len(), 35);

    let id = first["id"].as_str().unwrap();
    let mut later = Vec::new();
    later.push(
        call(
            &state,
            Event::load("devices-get")
                .as_user(ALICE)
                .at("GET", &format!("/v1/devices/{id}")),
        )
        .await
        .1,
    );
    later.push(
        call(&state, Event::load("devices-list").as_user(ALICE))
            .await
            .1,
    );
    later.push(
        call(
            &state,
            Event::load("devices-update")
                .as_user(ALICE)
                .at("PATCH", &format!("/v1/devices/{id}"))
                .json_body(&json!({"name": "uno"})),
        )
        .await
        .1,
    );
    for body in later {
        assert!(!body.to_string().contains(&key), "{body}");
        assert!(!body.to_string().contains("device_key"), "{body}");
    }

    // No column holds the key; the hash column holds its SHA-256.
    let row = test
        .direct
        .query_one(
            "SELECT count(*) FILTER (WHERE t::text LIKE '%' || $1 || '%'),
                    count(*) FILTER (WHERE device_key_hash = sha256(convert_to($2, 'UTF8')))
             FROM devices t",
            &[&&key[3..], &key],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 1);
}

#[tokio::test]
async fn pages_are_complete_and_stable_under_inserts() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    let mut created = HashSet::new();
    for i in 0..120 {
        created.insert(
            create_device(&state, ALICE, &format!("sensor {i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=50&cursor={c}"),
            None => "limit=50".into(),
        };
        let (status, page) = call(
            &state,
            Event::load("devices-list").as_user(ALICE).query(&query),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        // New devices arrive between page requests: they are newer, so they do not shift pages.
        create_device(&state, ALICE, "late arrival").await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [50, 50, 20]);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    assert_eq!(unique, created, "no gaps");
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    // A cursor of the right shape whose time (about 10,000 BC) Postgres cannot hold.
    let mut bytes = (-377_000_000_000_000_000i64).to_be_bytes().to_vec();
    bytes.extend_from_slice(Uuid::nil().as_bytes());
    let ancient = format!("cursor={}", URL_SAFE_NO_PAD.encode(bytes));
    for (route, query, status, code, field) in [
        ("devices-list", "limit=ten", 400, "bad_request", "limit"),
        ("devices-list", "limit=0", 422, "validation_failed", "limit"),
        (
            "devices-list",
            "limit=201",
            422,
            "validation_failed",
            "limit",
        ),
        (
            "devices-list",
            "cursor=garbage",
            400,
            "bad_request",
            "cursor",
        ),
        (
            "alerts-list",
            "status=open",
            422,
            "validation_failed",
            "status",
        ),
        (
            "alerts-list",
            "device_id=42",
            400,
            "bad_request",
            "device_id",
        ),
        ("alerts-list", "limit=-1", 422, "validation_failed", "limit"),
        ("alerts-list", "cursor=%21%21", 400, "bad_request", "cursor"),
        ("devices-list", &ancient, 400, "bad_request", "cursor"),
        ("alerts-list", &ancient, 400, "bad_request", "cursor"),
    ] {
        let response = devices::handle(
            &state,
            Event::load(route).as_user(ALICE).query(query).request(),
        )
        .await;
        assert_error(&response, status, code, Some(field));
    }
    let (status, _) = call(
        &state,
        Event::load("devices-list")
            .as_user(ALICE)
            .query("limit=200"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_invalid_body_is_refused_and_writes_nothing() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    let device = create_device(&state, ALICE, "target").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, rule) = create_rule(
        &state,
        ALICE,
        &device,
        json!({"metric": "t", "comparator": "gt", "threshold": 80, "clear_threshold": 75}),
    )
    .await;
    let rule_path = format!(
        "/v1/devices/{device}/rules/{}",
        rule["id"].as_str().unwrap()
    );
    let before = snapshot(&test).await;

    let create = |body: &str| Event::load("devices-create").as_user(ALICE).body(body);
    let rename = |body: &str| {
        Event::load("devices-update")
            .as_user(ALICE)
            .at("PATCH", &format!("/v1/devices/{device}"))
            .body(body)
    };
    let new_rule = |body: Value| {
        Event::load("rules-create")
            .as_user(ALICE)
            .at("POST", &format!("/v1/devices/{device}/rules"))
            .json_body(&body)
    };
    let patch_rule = |body: Value| {
        Event::load("rules-update")
            .as_user(ALICE)
            .at("PATCH", &rule_path)
            .json_body(&body)
    };
    let ok_rule = json!({"metric": "t", "comparator": "gt", "threshold": 1});
    let with = |changes: Value| {
        let mut body = ok_rule.clone();
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let long_name = format!(r#"{{"name": "{}"}}"#, "n".repeat(101));
    let too_big = format!(r#"{{"name": "{}"}}"#, "n".repeat(20_000));

    let cases: Vec<(&str, Event, u16, &str, Option<&str>)> = vec![
        ("not JSON", create("{name:"), 400, "bad_request", None),
        ("empty body", create(""), 400, "bad_request", None),
        ("an array", create("[]"), 400, "bad_request", None),
        (
            "unknown field",
            create(r#"{"name": "x", "nmae": "y"}"#),
            400,
            "bad_request",
            None,
        ),
        (
            "wrong content type",
            create(r#"{"name": "x"}"#).header("content-type", "text/plain"),
            400,
            "bad_request",
            None,
        ),
        (
            "too large",
            create(&too_big),
            413,
            "payload_too_large",
            None,
        ),
        (
            "no name",
            create("{}"),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "name null",
            create(r#"{"name": null}"#),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "blank name",
            create(r#"{"name": "   "}"#),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "long name",
            create(&long_name),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "control character",
            create(r#"{"name": "a\u0000b"}"#),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "name a number",
            create(r#"{"name": 7}"#),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "rename blank",
            rename(r#"{"name": ""}"#),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "rename unknown field",
            rename(r#"{"name": "x", "status": "online"}"#),
            400,
            "bad_request",
            None,
        ),
        (
            "rule without metric",
            new_rule(json!({"comparator": "gt", "threshold": 1})),
            422,
            "validation_failed",
            Some("metric"),
        ),
        (
            "metric with space",
            new_rule(with(json!({"metric": "a b"}))),
            422,
            "validation_failed",
            Some("metric"),
        ),
        (
            "metric 65 chars",
            new_rule(with(json!({"metric": "m".repeat(65)}))),
            422,
            "validation_failed",
            Some("metric"),
        ),
        (
            "comparator eq",
            new_rule(with(json!({"comparator": "eq"}))),
            422,
            "validation_failed",
            Some("comparator"),
        ),
        (
            "no comparator",
            new_rule(json!({"metric": "t", "threshold": 1})),
            422,
            "validation_failed",
            Some("comparator"),
        ),
        (
            "threshold text",
            new_rule(with(json!({"threshold": "high"}))),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "threshold NaN",
            new_rule(with(json!({"threshold": "NaN"}))),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "threshold bool",
            new_rule(with(json!({"threshold": true}))),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "threshold huge",
            new_rule(json!({"metric": "t", "comparator": "gt", "threshold": "1e400"})),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "no threshold",
            new_rule(json!({"metric": "t", "comparator": "gt"})),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "for_seconds negative",
            new_rule(with(json!({"for_seconds": -1}))),
            422,
            "validation_failed",
            Some("for_seconds"),
        ),
        (
            "for_seconds too long",
            new_rule(with(json!({"for_seconds": 86401}))),
            422,
            "validation_failed",
            Some("for_seconds"),
        ),
        (
            "for_seconds fractional",
            new_rule(with(json!({"for_seconds": 1.5}))),
            422,
            "validation_failed",
            Some("for_seconds"),
        ),
        (
            "for_seconds null",
            new_rule(with(json!({"for_seconds": null}))),
            422,
            "validation_failed",
            Some("for_seconds"),
        ),
        (
            "threshold null",
            new_rule(with(json!({"threshold": null}))),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "clear above gt threshold",
            new_rule(with(json!({"threshold": 80, "clear_threshold": 85}))),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "clear equal",
            new_rule(with(json!({"threshold": 80, "clear_threshold": 80}))),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "clear below lt threshold",
            new_rule(
                json!({"metric": "t", "comparator": "lt", "threshold": 5, "clear_threshold": 4}),
            ),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "rule unknown field",
            new_rule(with(json!({"treshold": 1}))),
            400,
            "bad_request",
            None,
        ),
        (
            "patch clear to wrong side",
            patch_rule(json!({"clear_threshold": 90})),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "patch comparator flips side",
            patch_rule(json!({"comparator": "lt"})),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "patch threshold below clear",
            patch_rule(json!({"threshold": 70})),
            422,
            "validation_failed",
            Some("clear_threshold"),
        ),
        (
            "patch bad metric",
            patch_rule(json!({"metric": ""})),
            422,
            "validation_failed",
            Some("metric"),
        ),
        (
            "patch metric null",
            patch_rule(json!({"metric": null})),
            422,
            "validation_failed",
            Some("metric"),
        ),
        (
            "patch comparator null",
            patch_rule(json!({"comparator": null})),
            422,
            "validation_failed",
            Some("comparator"),
        ),
        (
            "patch threshold null",
            patch_rule(json!({"threshold": null})),
            422,
            "validation_failed",
            Some("threshold"),
        ),
        (
            "patch for_seconds null",
            patch_rule(json!({"for_seconds": null})),
            422,
            "validation_failed",
            Some("for_seconds"),
        ),
        (
            "patch unknown field",
            patch_rule(json!({"device_id": device})),
            400,
            "bad_request",
            None,
        ),
    ];
    for (what, event, status, code, field) in cases {
        let response = devices::handle(&state, event.request()).await;
        assert_eq!(
            response.status().as_u16(),
            status,
            "{what}: {}",
            body_json(&response)
        );
        assert_error(&response, status, code, field);
    }
    assert_eq!(snapshot(&test).await, before, "nothing was written");

    // Ids that are not UUIDs name nothing.
    for path in [
        "/v1/devices/42",
        "/v1/devices/42/rules",
        &format!("/v1/devices/{device}/rules/42"),
    ] {
        let response = devices::handle(
            &state,
            Event::load("devices-get")
                .as_user(ALICE)
                .at("GET", path)
                .request(),
        )
        .await;
        assert_error(&response, 404, "not_found", None);
    }
}

#[tokio::test]
async fn no_or_bad_credentials_are_401_and_write_nothing() {
    let test = TestDb::new().await;
    let state = devices::State::new(&test.config(&[])).unwrap();
    for event in [
        Event::load("devices-create").without_header("authorization"),
        Event::load("devices-create").header("authorization", "Bearer nonsense"),
        Event::load("devices-create").header("authorization", "Basic dXNlcjpwYXNz"),
        Event::load("alerts-list").without_header("authorization"),
    ] {
        let response = devices::handle(&state, event.request()).await;
        assert_error(&response, 401, "unauthorized", None);
    }
    assert_eq!(test.count("devices").await, 0);
    assert_eq!(test.count(r#""user""#).await, 0);
}
