//! The authorization matrix, as data: every route × every kind of caller → the status. The
//! table must name exactly the routes the handlers serve, so a new route cannot be added
//! without its row.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tests::{Event, Functions, TestDb, body_json, clerk};

const OWNER: &str = "user_owner";
const OTHER: &str = "user_other";

/// The callers, in the order of the columns below.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Nobody,
    ExpiredToken,
    OtherUser,
    DeviceKey,
    Owner,
}

const CALLERS: [Caller; 5] = [
    Caller::Nobody,
    Caller::ExpiredToken,
    Caller::OtherUser,
    Caller::DeviceKey,
    Caller::Owner,
];

/// (method, path, statuses for: nobody, expired token, other user, device key, owner). Deletes
/// come last so that the owner's device and rule exist for every other row.
const MATRIX: &[(&str, &str, [u16; 5])] = &[
    ("POST", "/v1/devices", [401, 401, 201, 401, 201]),
    ("GET", "/v1/devices", [401, 401, 200, 401, 200]),
    ("GET", "/v1/devices/{id}", [401, 401, 404, 401, 200]),
    ("PATCH", "/v1/devices/{id}", [401, 401, 404, 401, 200]),
    ("POST", "/v1/devices/{id}/rules", [401, 401, 404, 401, 201]),
    ("GET", "/v1/devices/{id}/rules", [401, 401, 404, 401, 200]),
    (
        "GET",
        "/v1/devices/{id}/rules/{rule_id}",
        [401, 401, 404, 401, 200],
    ),
    (
        "PATCH",
        "/v1/devices/{id}/rules/{rule_id}",
        [401, 401, 404, 401, 200],
    ),
    ("GET", "/v1/alerts", [401, 401, 200, 401, 200]),
    ("GET", "/v1/devices/{id}/rollups", [401, 401, 404, 401, 200]),
    (
        "GET",
        "/v1/devices/{id}/readings",
        [401, 401, 404, 401, 200],
    ),
    ("GET", "/v1/devices/{id}/latest", [401, 401, 404, 401, 200]),
    // A user's session token is no device key, and a device key is no session token.
    ("POST", "/v1/ingest", [401, 401, 401, 200, 401]),
    ("POST", "/v1/devices/{id}/keys", [401, 401, 404, 401, 201]),
    // Notifications: another user's channel, log, silence or alert is not found.
    ("POST", "/v1/alerts/{id}/ack", [401, 401, 404, 401, 200]),
    ("POST", "/v1/channels", [401, 401, 201, 401, 201]),
    ("GET", "/v1/channels", [401, 401, 200, 401, 200]),
    ("GET", "/v1/channels/{id}", [401, 401, 404, 401, 200]),
    ("PATCH", "/v1/channels/{id}", [401, 401, 404, 401, 200]),
    ("POST", "/v1/channels/{id}/test", [401, 401, 404, 401, 200]),
    (
        "GET",
        "/v1/channels/{id}/deliveries",
        [401, 401, 404, 401, 200],
    ),
    ("POST", "/v1/silences", [401, 401, 201, 401, 201]),
    ("GET", "/v1/silences", [401, 401, 200, 401, 200]),
    ("GET", "/v1/silences/{id}", [401, 401, 404, 401, 200]),
    ("PATCH", "/v1/silences/{id}", [401, 401, 404, 401, 200]),
    ("DELETE", "/v1/silences/{id}", [401, 401, 404, 401, 204]),
    ("DELETE", "/v1/channels/{id}", [401, 401, 404, 401, 204]),
    // The webhook's only credential is the Svix signature; none of these carries one.
    ("POST", "/webhooks/clerk", [400, 400, 400, 400, 400]),
    (
        "DELETE",
        "/v1/devices/{id}/rules/{rule_id}",
        [401, 401, 404, 401, 204],
    ),
    ("DELETE", "/v1/devices/{id}", [401, 401, 404, 401, 204]),
];

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/devices") | ("PATCH", "/v1/devices/{id}") => Some(json!({"name": "sensor"})),
        ("POST", "/v1/devices/{id}/rules") => {
            Some(json!({"metric": "t", "comparator": "gt", "threshold": 1}))
        }
        ("PATCH", "/v1/devices/{id}/rules/{rule_id}") => Some(json!({"threshold": 90})),
        ("POST", "/v1/ingest") => Some(json!({"readings": [{"metric": "t", "value": 1}]})),
        ("POST", "/v1/devices/{id}/keys") => Some(json!({"grace_seconds": 60})),
        ("POST", "/webhooks/clerk") => Some(clerk::payload("clerk-webhook-user-created")),
        ("POST", "/v1/alerts/{id}/ack") => Some(json!({"comment": "mine"})),
        ("POST", "/v1/channels") => Some(json!({"name": "hook", "type": "webhook",
            "target": {"url": "http://127.0.0.1:9/hook"}})),
        ("PATCH", "/v1/channels/{id}") => Some(json!({"name": "renamed"})),
        ("POST", "/v1/silences") => Some(json!({"ends_at": "2099-01-01T00:00:00Z"})),
        ("PATCH", "/v1/silences/{id}") => Some(json!({"comment": "mine"})),
        _ => None,
    }
}

#[test]
fn the_matrix_names_every_route_and_only_those() {
    let served: BTreeSet<(String, String)> = [
        ingest::ROUTES,
        devices::ROUTES,
        rollups::ROUTES,
        clerk_webhook::ROUTES,
    ]
    .into_iter()
    .flatten()
    .flat_map(|(path, methods)| {
        methods
            .split(',')
            .map(|m| (m.trim().to_owned(), (*path).to_owned()))
    })
    .collect();
    let rows: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(rows, served);
    assert_eq!(rows.len(), MATRIX.len(), "one row per route");
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_matrix_says() {
    let test = TestDb::new().await;
    // A channel to a local port: allowed here, as in local development.
    let config = test.config(&[("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")]);
    let functions = Functions::new(&config);
    let owner_token = clerk::token(OWNER);
    let other_token = clerk::token(OTHER);
    let mut expired = clerk::claims(OWNER);
    expired["exp"] = json!(clerk::now() - 60);
    let expired_token = clerk::sign(&expired, &clerk::dev_signing_key(), Some("dev"));

    // The owner's device (with its key) and rule, made through the API.
    let created = devices::handle(
        &functions.devices,
        Event::load("devices-create").as_user(OWNER).request(),
    )
    .await;
    let device = body_json(&created);
    let (device_id, device_key) = (
        device["id"].as_str().unwrap().to_owned(),
        device["device_key"].as_str().unwrap().to_owned(),
    );
    let rule = devices::handle(
        &functions.devices,
        Event::load("rules-create")
            .as_user(OWNER)
            .at("POST", &format!("/v1/devices/{device_id}/rules"))
            .request(),
    )
    .await;
    let rule_id = body_json(&rule)["id"].as_str().unwrap().to_owned();
    // The owner's alert, channel and silence.
    let alert_id: uuid::Uuid = test
        .direct
        .query_one(
            "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value, triggered_at)
             VALUES ($1::text::uuid, $2::text::uuid, $3, 't', 'firing', 2, now()) RETURNING id",
            &[&rule_id, &device_id, &OWNER],
        )
        .await
        .unwrap()
        .get(0);
    let owned = |event: &str, method: &str, path: &str| {
        let body = body_for(method, path).unwrap();
        Event::load(event).as_user(OWNER).json_body(&body).request()
    };
    let channel = functions
        .handle(owned("channels-create", "POST", "/v1/channels"))
        .await;
    let channel_id = body_json(&channel)["id"].as_str().unwrap().to_owned();
    let silence = functions
        .handle(owned("silences-create", "POST", "/v1/silences"))
        .await;
    let silence_id = body_json(&silence)["id"].as_str().unwrap().to_owned();

    for (method, path, expected) in MATRIX {
        for (caller, status) in CALLERS.into_iter().zip(expected) {
            let id = if path.starts_with("/v1/channels/") {
                channel_id.clone()
            } else if path.starts_with("/v1/silences/") {
                silence_id.clone()
            } else if path.starts_with("/v1/alerts/") {
                alert_id.to_string()
            } else {
                device_id.clone()
            };
            let concrete = path.replace("{id}", &id).replace("{rule_id}", &rule_id);
            let mut event = Event::load("devices-list")
                .at(method, &concrete)
                .without_header("authorization");
            if path.ends_with("/rollups") {
                event = event.query("metric=t");
            }
            if let Some(body) = body_for(method, path) {
                event = event.json_body(&body);
            }
            let credential = match caller {
                Caller::Nobody => None,
                Caller::ExpiredToken => Some(expired_token.clone()),
                Caller::OtherUser => Some(other_token.clone()),
                Caller::DeviceKey => Some(device_key.clone()),
                Caller::Owner => Some(owner_token.clone()),
            };
            if let Some(credential) = credential {
                event = event.header("authorization", &format!("Bearer {credential}"));
            }
            let response = functions.handle(event.request()).await;
            assert_eq!(
                response.status().as_u16(),
                *status,
                "{method} {path} as {caller:?}: {}",
                body_json(&response)
            );
        }
    }
}
