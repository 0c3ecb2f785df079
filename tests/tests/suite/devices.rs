//! The devices function: lifecycle, tenant isolation, device keys, pagination, validation.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tests::Expect::{Bad, BadParam, Invalid, NotFound, TooLarge, Unauthorized};
use tests::{Event, Functions, TestDb, check_refusals};
use uuid::Uuid;

const ALICE: &str = "user_alice";
const BOB: &str = "user_bob";

async fn setup() -> (TestDb, Functions) {
    let test = TestDb::new().await;
    let functions = Functions::new(&test.config(&[]));
    (test, functions)
}

/// `events/<event>.json` as `user`, at `method path`.
fn request(event: &str, user: &str, method: &str, path: &str) -> Event {
    Event::load(event).as_user(user).at(method, path)
}

async fn create_device(functions: &Functions, user: &str, name: &str) -> Value {
    let event = Event::load("devices-create")
        .as_user(user)
        .json_body(&json!({ "name": name }));
    let (status, body) = functions.call(event).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn create_rule(functions: &Functions, user: &str, device: &str, rule: Value) -> (u16, Value) {
    let path = format!("/v1/devices/{device}/rules");
    functions
        .call(request("rules-create", user, "POST", &path).json_body(&rule))
        .await
}

fn is_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'))
}

#[tokio::test]
async fn full_lifecycle() {
    let (test, functions) = setup().await;

    // Create: the device, and its key, once.
    let created = create_device(&functions, ALICE, "  Boiler room  ").await;
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
    let expected_keys = [
        "id",
        "name",
        "status",
        "last_seen_at",
        "created_at",
        "key_created_at",
        "previous_key_expires_at",
        "device_key",
    ];
    assert_eq!(keys, HashSet::from(expected_keys));

    let device_path = format!("/v1/devices/{id}");
    let got = functions
        .call(request("devices-get", ALICE, "GET", &device_path))
        .await;
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("device_key");
    assert_eq!(got, (200, expected.clone()));

    let list = functions
        .call(Event::load("devices-list").as_user(ALICE))
        .await;
    assert_eq!(
        list,
        (200, json!({"items": [expected], "next_cursor": null}))
    );

    let rename = request("devices-update", ALICE, "PATCH", &device_path);
    let (status, renamed) = functions
        .call(rename.json_body(&json!({"name": "Boiler (east)"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["name"], "Boiler (east)");
    assert_eq!(renamed["id"], id.as_str());

    // Rules.
    let (status, rule) = create_rule(
        &functions,
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

    let second = json!({"metric": "humidity", "comparator": "lte", "threshold": "0.1"});
    let (_, second) = create_rule(&functions, ALICE, &id, second).await;
    assert_eq!(second["for_seconds"], 0, "default");
    assert_eq!(second["clear_threshold"], Value::Null);
    assert_eq!(second["threshold"], "0.1");

    let rules_path = format!("{device_path}/rules");
    let (status, rules) = functions
        .call(request("rules-list", ALICE, "GET", &rules_path))
        .await;
    assert_eq!(status, 200);
    assert_eq!(rules["items"], json!([second, rule]), "newest first");
    assert_eq!(rules["next_cursor"], Value::Null);

    let rule_path = format!("{rules_path}/{rule_id}");
    let got = functions
        .call(request("rules-get", ALICE, "GET", &rule_path))
        .await;
    assert_eq!(got, (200, rule.clone()));

    let patch = json!({"threshold": "85.25", "clear_threshold": null});
    let update = request("rules-update", ALICE, "PATCH", &rule_path).json_body(&patch);
    let (status, updated) = functions.call(update).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["threshold"], "85.25");
    assert_eq!(updated["clear_threshold"], Value::Null);
    assert_eq!(updated["comparator"], "gt", "untouched fields stay");
    assert_eq!(updated["for_seconds"], 300);

    let deleted = functions
        .call(request("rules-delete", ALICE, "DELETE", &rule_path))
        .await;
    assert_eq!(deleted, (204, Value::Null));
    let (status, _) = functions
        .call(request("rules-get", ALICE, "GET", &rule_path))
        .await;
    assert_eq!(status, 404);

    // Deleting the device takes its rules and alerts along, and its readings after a pass.
    test.direct
        .batch_execute(&format!(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at) VALUES ('{id}', 'humidity', 1, now());
             INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
               VALUES ('{}', '{id}', '{ALICE}', 'humidity', 'firing', 0.05, now());",
            second["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let delete = || request("devices-delete", ALICE, "DELETE", &device_path);
    let (status, _) = functions.call(delete()).await;
    assert_eq!(status, 204);
    for table in ["devices", "alert_rules", "alerts"] {
        assert_eq!(test.count(table).await, 0, "{table}");
    }
    assert_eq!(test.pass().await.purged_rows, 1);
    assert_eq!(test.count("sensor_readings").await, 0);
    let (status, _) = functions
        .call(request("devices-get", ALICE, "GET", &device_path))
        .await;
    assert_eq!(status, 404);
    let (status, _) = functions.call(delete()).await;
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
    let (test, functions) = setup().await;
    let alice_device = create_device(&functions, ALICE, "alice's").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule = json!({"metric": "t", "comparator": "gt", "threshold": 1});
    let (_, rule) = create_rule(&functions, ALICE, &alice_device, rule).await;
    let alice_rule = rule["id"].as_str().unwrap().to_owned();
    test.direct
        .batch_execute(&format!(
            "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
             VALUES ('{alice_rule}', '{alice_device}', '{ALICE}', 't', 'firing', 2, now())"
        ))
        .await
        .unwrap();
    let bob_device = create_device(&functions, BOB, "bob's").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = snapshot(&test).await;

    let d = format!("/v1/devices/{alice_device}");
    let rules = format!("{d}/rules");
    let r = format!("{d}/rules/{alice_rule}");
    // Alice's rule, reached through a device of Bob's.
    let via_bob = format!("/v1/devices/{bob_device}/rules/{alice_rule}");
    let bob = |event, method, path: &str| request(event, BOB, method, path);
    let rule_body = json!({"metric": "t", "comparator": "lt", "threshold": 0});
    let patch = json!({"threshold": 5});
    #[rustfmt::skip]
    let cases = [
        (bob("devices-get", "GET", &d), NotFound),
        (bob("devices-update", "PATCH", &d).json_body(&json!({"name": "mine now"})), NotFound),
        (bob("devices-delete", "DELETE", &d), NotFound),
        (bob("rules-list", "GET", &rules), NotFound),
        (bob("rules-create", "POST", &rules).json_body(&rule_body), NotFound),
        (bob("rules-get", "GET", &r), NotFound),
        (bob("rules-update", "PATCH", &r).json_body(&patch), NotFound),
        (bob("rules-delete", "DELETE", &r), NotFound),
        (bob("rules-get", "GET", &via_bob), NotFound),
        (bob("rules-update", "PATCH", &via_bob).json_body(&patch), NotFound),
        (bob("rules-delete", "DELETE", &via_bob), NotFound),
    ];
    check_refusals(&functions, cases).await;
    // Bob's alert list shows nothing of Alice's, even when he names her device.
    for query in ["", &format!("device_id={alice_device}"), "status=firing"] {
        let list = functions
            .call(Event::load("alerts-list").as_user(BOB).query(query))
            .await;
        assert_eq!(
            list,
            (200, json!({"items": [], "next_cursor": null})),
            "{query}"
        );
    }
    let (_, list) = functions
        .call(Event::load("devices-list").as_user(BOB))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot(&test).await, before, "nothing of Alice's changed");

    // Alice still sees all of it, alert included.
    let (_, alerts) = functions
        .call(Event::load("alerts-list").as_user(ALICE).query(""))
        .await;
    assert_eq!(alerts["items"].as_array().unwrap().len(), 1);
    assert_eq!(alerts["items"][0]["value"], "2");
}

#[tokio::test]
async fn the_device_key_is_shown_once_and_stored_only_as_a_hash() {
    let (test, functions) = setup().await;
    let first = create_device(&functions, ALICE, "one").await;
    let second = create_device(&functions, ALICE, "two").await;
    let key = first["device_key"].as_str().unwrap().to_owned();
    assert_ne!(key, second["device_key"].as_str().unwrap());
    assert_eq!(key.len(), 35);

    let path = format!("/v1/devices/{}", first["id"].as_str().unwrap());
    for event in [
        request("devices-get", ALICE, "GET", &path),
        Event::load("devices-list").as_user(ALICE),
        request("devices-update", ALICE, "PATCH", &path).json_body(&json!({"name": "uno"})),
    ] {
        let (_, body) = functions.call(event).await;
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

/// Walks a list `limit` items at a time, calling `between` after each page: the ids seen, and
/// each page's size.
async fn walk(
    functions: &Functions,
    list: impl Fn(&str) -> Event,
    limit: usize,
    mut between: impl AsyncFnMut(),
) -> (Vec<String>, Vec<usize>) {
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    let mut query = format!("limit={limit}");
    loop {
        let (status, page) = functions.call(list(&query)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned()),
        );
        between().await;
        match page["next_cursor"].as_str() {
            Some(next) => query = format!("limit={limit}&cursor={next}"),
            None => return (seen, sizes),
        }
    }
}

#[tokio::test]
async fn pages_are_complete_and_stable_under_inserts() {
    let (_test, functions) = setup().await;
    let mut created = HashSet::new();
    for i in 0..120 {
        let device = create_device(&functions, ALICE, &format!("sensor {i}")).await;
        created.insert(device["id"].as_str().unwrap().to_owned());
    }
    let list = |query: &str| Event::load("devices-list").as_user(ALICE).query(query);
    // New devices arrive between page requests: they are newer, so they do not shift pages.
    let (seen, sizes) = walk(&functions, list, 50, async || {
        create_device(&functions, ALICE, "late arrival").await;
    })
    .await;
    assert_eq!(sizes, [50, 50, 20]);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats");
    assert_eq!(unique, created, "no gaps");
}

#[tokio::test]
async fn rules_are_paged_like_every_list() {
    let (_test, functions) = setup().await;
    let device = create_device(&functions, ALICE, "many rules").await;
    let device = device["id"].as_str().unwrap();
    let mut created = Vec::new();
    for i in 0..7 {
        let rule = json!({"metric": format!("m{i}"), "comparator": "gt", "threshold": i});
        let (status, rule) = create_rule(&functions, ALICE, device, rule).await;
        assert_eq!(status, 201, "{rule}");
        created.push(rule["id"].as_str().unwrap().to_owned());
    }
    let path = format!("/v1/devices/{device}/rules");
    let list = |query: &str| request("rules-list", ALICE, "GET", &path).query(query);
    let (seen, sizes) = walk(&functions, list, 3, async || {}).await;
    assert_eq!(sizes, [3, 3, 1]);
    created.reverse();
    assert_eq!(seen, created, "newest first, each once");
    let (status, page) = functions.call(list("")).await;
    assert_eq!(
        (status, page["items"].as_array().unwrap().len()),
        (200, 7),
        "50 by default"
    );
}

#[tokio::test]
async fn list_parameters_are_checked() {
    let (_test, functions) = setup().await;
    let device = create_device(&functions, ALICE, "one").await;
    let rules = format!("/v1/devices/{}/rules", device["id"].as_str().unwrap());
    // A cursor of the right shape whose time (about 10,000 BC) Postgres cannot hold.
    let mut bytes = (-377_000_000_000_000_000i64).to_be_bytes().to_vec();
    bytes.extend_from_slice(Uuid::nil().as_bytes());
    let ancient = format!("cursor={}", URL_SAFE_NO_PAD.encode(bytes));
    let devices = |query: &str| Event::load("devices-list").as_user(ALICE).query(query);
    let alerts = |query: &str| Event::load("alerts-list").as_user(ALICE).query(query);
    let rules = |query: &str| request("rules-list", ALICE, "GET", &rules).query(query);
    #[rustfmt::skip]
    let cases = [
        (devices("limit=ten"), BadParam("limit")),
        (devices("limit=0"), Invalid("limit")),
        (devices("limit=201"), Invalid("limit")),
        (devices("cursor=garbage"), BadParam("cursor")),
        (devices(&ancient), BadParam("cursor")),
        (alerts("status=open"), Invalid("status")),
        (alerts("device_id=42"), BadParam("device_id")),
        (alerts("limit=-1"), Invalid("limit")),
        (alerts("cursor=%21%21"), BadParam("cursor")),
        (alerts(&ancient), BadParam("cursor")),
        (rules("limit=1.5"), BadParam("limit")),
        (rules("limit=201"), Invalid("limit")),
        (rules("cursor=nope"), BadParam("cursor")),
        (rules(&ancient), BadParam("cursor")),
    ];
    check_refusals(&functions, cases).await;
    let (status, _) = functions.call(devices("limit=200")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_invalid_body_is_refused_and_writes_nothing() {
    let (test, functions) = setup().await;
    let device = create_device(&functions, ALICE, "target").await;
    let device = device["id"].as_str().unwrap();
    let rule = json!({"metric": "t", "comparator": "gt", "threshold": 80, "clear_threshold": 75});
    let (_, rule) = create_rule(&functions, ALICE, device, rule).await;
    let rule_path = format!(
        "/v1/devices/{device}/rules/{}",
        rule["id"].as_str().unwrap()
    );
    let absent = json!({"metric": "heartbeat", "comparator": "absent", "for_seconds": 600});
    let (status, absent) = create_rule(&functions, ALICE, device, absent).await;
    assert_eq!(status, 201, "{absent}");
    assert_eq!(absent["threshold"], Value::Null);
    assert_eq!(absent["clear_threshold"], Value::Null);
    let absent_path = format!(
        "/v1/devices/{device}/rules/{}",
        absent["id"].as_str().unwrap()
    );
    let before = snapshot(&test).await;

    let create = |body: &str| Event::load("devices-create").as_user(ALICE).body(body);
    let device_path = format!("/v1/devices/{device}");
    let rename = |body: &str| request("devices-update", ALICE, "PATCH", &device_path).body(body);
    let rules_path = format!("{device_path}/rules");
    let new_rule =
        |body: Value| request("rules-create", ALICE, "POST", &rules_path).json_body(&body);
    let patch_rule =
        |body: Value| request("rules-update", ALICE, "PATCH", &rule_path).json_body(&body);
    let patch_absent =
        |body: Value| request("rules-update", ALICE, "PATCH", &absent_path).json_body(&body);
    let absent_with = |changes: Value| {
        let mut body = json!({"metric": "t", "comparator": "absent", "for_seconds": 60});
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        new_rule(body)
    };
    // A valid rule with some fields changed.
    let with = |changes: Value| {
        let mut body = json!({"metric": "t", "comparator": "gt", "threshold": 1});
        for (k, v) in changes.as_object().unwrap() {
            body[k] = v.clone();
        }
        new_rule(body)
    };
    let long_name = format!(r#"{{"name": "{}"}}"#, "n".repeat(101));
    let too_big = format!(r#"{{"name": "{}"}}"#, "n".repeat(20_000));

    #[rustfmt::skip]
    let cases = [
        (create("{name:"), Bad),
        (create(""), Bad),
        (create("[]"), Bad),
        (create(r#"{"name": "x", "nmae": "y"}"#), Bad),
        (create(r#"{"name": "x"}"#).header("content-type", "text/plain"), Bad),
        (create(&too_big), TooLarge),
        (create("{}"), Invalid("name")),
        (create(r#"{"name": null}"#), Invalid("name")),
        (create(r#"{"name": "   "}"#), Invalid("name")),
        (create(&long_name), Invalid("name")),
        (create(r#"{"name": "a\u0000b"}"#), Invalid("name")),
        (create(r#"{"name": 7}"#), Invalid("name")),
        (rename(r#"{"name": ""}"#), Invalid("name")),
        (rename(r#"{"name": "x", "status": "online"}"#), Bad),
        (new_rule(json!({"comparator": "gt", "threshold": 1})), Invalid("metric")),
        (with(json!({"metric": "a b"})), Invalid("metric")),
        (with(json!({"metric": "m".repeat(65)})), Invalid("metric")),
        (with(json!({"comparator": "eq"})), Invalid("comparator")),
        (new_rule(json!({"metric": "t", "threshold": 1})), Invalid("comparator")),
        (with(json!({"threshold": "high"})), Invalid("threshold")),
        (with(json!({"threshold": "NaN"})), Invalid("threshold")),
        (with(json!({"threshold": true})), Invalid("threshold")),
        (with(json!({"threshold": "1e400"})), Invalid("threshold")),
        (new_rule(json!({"metric": "t", "comparator": "gt"})), Invalid("threshold")),
        (with(json!({"for_seconds": -1})), Invalid("for_seconds")),
        (with(json!({"for_seconds": 86401})), Invalid("for_seconds")),
        (with(json!({"for_seconds": 1.5})), Invalid("for_seconds")),
        (with(json!({"for_seconds": null})), Invalid("for_seconds")),
        (with(json!({"threshold": null})), Invalid("threshold")),
        (with(json!({"threshold": 80, "clear_threshold": 85})), Invalid("clear_threshold")),
        (with(json!({"threshold": 80, "clear_threshold": 80})), Invalid("clear_threshold")),
        (with(json!({"comparator": "lt", "threshold": 5, "clear_threshold": 4})), Invalid("clear_threshold")),
        (with(json!({"treshold": 1})), Bad),
        // On the merged rule (threshold 80, clear_threshold 75): each change puts it on the wrong side.
        (patch_rule(json!({"clear_threshold": 90})), Invalid("clear_threshold")),
        (patch_rule(json!({"comparator": "lt"})), Invalid("clear_threshold")),
        (patch_rule(json!({"threshold": 70})), Invalid("clear_threshold")),
        (patch_rule(json!({"metric": ""})), Invalid("metric")),
        (patch_rule(json!({"metric": null})), Invalid("metric")),
        (patch_rule(json!({"comparator": null})), Invalid("comparator")),
        (patch_rule(json!({"threshold": null})), Invalid("threshold")),
        (patch_rule(json!({"for_seconds": null})), Invalid("for_seconds")),
        (patch_rule(json!({"device_id": device})), Bad),
        // `absent`: no threshold, no clear_threshold, at least a minute; never a kind switch.
        (new_rule(json!({"metric": "t", "comparator": "absent"})), Invalid("for_seconds")),
        (absent_with(json!({"for_seconds": 59})), Invalid("for_seconds")),
        (absent_with(json!({"threshold": 1})), Invalid("threshold")),
        (absent_with(json!({"threshold": null})), Invalid("threshold")),
        (absent_with(json!({"clear_threshold": 1})), Invalid("clear_threshold")),
        (absent_with(json!({"comparator": "missing"})), Invalid("comparator")),
        (patch_rule(json!({"comparator": "absent"})), Invalid("comparator")),
        (patch_absent(json!({"comparator": "gt"})), Invalid("comparator")),
        (patch_absent(json!({"threshold": 5})), Invalid("threshold")),
        (patch_absent(json!({"clear_threshold": 5})), Invalid("clear_threshold")),
        (patch_absent(json!({"for_seconds": 30})), Invalid("for_seconds")),
        // Ids that are not UUIDs name nothing.
        (request("devices-get", ALICE, "GET", "/v1/devices/42"), NotFound),
        (request("rules-list", ALICE, "GET", "/v1/devices/42/rules"), NotFound),
        (request("rules-get", ALICE, "GET", &format!("{rules_path}/42")), NotFound),
    ];
    check_refusals(&functions, cases).await;
    assert_eq!(snapshot(&test).await, before, "nothing was written");
}

#[tokio::test]
async fn no_or_bad_credentials_are_401_and_write_nothing() {
    let (test, functions) = setup().await;
    let create = || Event::load("devices-create");
    #[rustfmt::skip]
    let cases = [
        (create().without_header("authorization"), Unauthorized),
        (create().header("authorization", "Bearer nonsense"), Unauthorized),
        (create().header("authorization", "Basic dXNlcjpwYXNz"), Unauthorized),
        (Event::load("alerts-list").without_header("authorization"), Unauthorized),
    ];
    check_refusals(&functions, cases).await;
    assert_eq!(test.count("devices").await, 0);
    assert_eq!(test.count(r#""user""#).await, 0);
}
