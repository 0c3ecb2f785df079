//! Nothing secret reaches the logs: a full session (webhook, session tokens good and bad, a
//! device key, a database URL with a password, a failing database) logged at DEBUG, and none
//! of those values in the output. And a real binary logs as Lambda's logging controls say
//! (shared/src/logging.rs).

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use shared::config::Secret;
use shared::db::{Db, Sql};
use tests::runtime_api::{RuntimeApi, ingest_event, status_of};
use tests::{Event, TestDb, body_json, clerk, workspace_binary};

/// Every log line of this test binary from the moment it is first called, at DEBUG.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        buffer
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_session_logs_no_secret() {
    let logs = captured();
    let test = TestDb::new().await;
    // The pooler trusts local connections, so a password in the URL is accepted and ignored.
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = test
        .pooled_url()
        .expose()
        .replacen("postgres@", &format!("postgres:{password}@"), 1);
    let config = test.config(&[("DATABASE_URL", &url)]);
    let devices = devices::State::new(&config).unwrap();
    let ingest = ingest::State::new(&config).unwrap();
    let rollups = rollups::State::new(&config).unwrap();
    let webhook = clerk_webhook::State::new(&config).unwrap();
    let alert_eval = alert_eval::State::new(&config).unwrap();

    let token = clerk::token("user_logs");
    let created = devices::handle(
        &devices,
        Event::load("devices-create").as_user("user_logs").request(),
    )
    .await;
    let device = body_json(&created);
    let key = device["device_key"].as_str().unwrap().to_owned();
    let id = device["id"].as_str().unwrap().to_owned();
    let readings = json!({"readings": [{"metric": "t", "value": 21.5}]});
    let pushed = ingest::handle(
        &ingest,
        Event::load("ingest")
            .header("authorization", &format!("Bearer {key}"))
            .json_body(&readings)
            .request(),
    )
    .await;
    assert_eq!(pushed.status(), 200);
    // A rotated key is shown once, and used.
    let rotated = devices::handle(
        &devices,
        Event::load("devices-keys")
            .as_user("user_logs")
            .at("POST", &format!("/v1/devices/{id}/keys"))
            .request(),
    )
    .await;
    let rotated_key = body_json(&rotated)["device_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let pushed = ingest::handle(
        &ingest,
        Event::load("ingest")
            .header("authorization", &format!("Bearer {rotated_key}"))
            .json_body(&readings)
            .request(),
    )
    .await;
    assert_eq!(pushed.status(), 200);
    // Refused credentials are logged (at debug) without the credential.
    let wrong_key = key.replacen("dk_", "dk_x", 1);
    for bad in [wrong_key.as_str(), &token[..token.len() - 4]] {
        let event = Event::load("ingest")
            .header("authorization", &format!("Bearer {bad}"))
            .json_body(&readings);
        assert_eq!(ingest::handle(&ingest, event.request()).await.status(), 401);
        let event = Event::load("devices-list").header("authorization", &format!("Bearer {bad}"));
        assert_eq!(
            devices::handle(&devices, event.request()).await.status(),
            401
        );
    }
    let latest = Event::load("rollups")
        .as_user("user_logs")
        .at("GET", &format!("/v1/devices/{id}/latest"));
    assert_eq!(
        rollups::handle(&rollups, latest.request()).await.status(),
        200
    );
    let delivery = clerk::webhook(
        "clerk-webhook-user-created",
        &clerk::payload("clerk-webhook-user-created"),
        "msg_logs",
        clerk::now(),
    );
    assert_eq!(
        clerk_webhook::handle(&webhook, delivery.request())
            .await
            .status(),
        200
    );
    let forged = delivery.clone().header("svix-signature", "v1,Zm9yZ2Vk");
    assert_eq!(
        clerk_webhook::handle(&webhook, forged.request())
            .await
            .status(),
        400
    );
    alert_eval::handle(&alert_eval, json!({})).await.unwrap();
    // A database that is not there, with a password in its URL.
    let gone = Db::new(&Secret::new(format!(
        "postgres://postgres:{password}@127.0.0.1:1/x?sslmode=disable"
    )))
    .unwrap();
    assert!(
        gone.query_typed(&Sql::idempotent("SELECT 1"), &[])
            .await
            .is_err()
    );

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("\"message\":\"ingest\""),
        "the session was logged: {text}"
    );
    assert!(
        text.contains("session token refused"),
        "debug lines were captured"
    );
    for (what, secret) in [
        ("device key", key.as_str()),
        ("device key body", &key[3..]),
        ("rotated device key", &rotated_key[3..]),
        ("session token", token.as_str()),
        ("session token signature", token.rsplit('.').next().unwrap()),
        ("database password", password.as_str()),
        ("webhook secret", clerk::WEBHOOK_SECRET),
        ("webhook secret body", &clerk::WEBHOOK_SECRET[6..]),
    ] {
        assert!(!text.contains(secret), "the {what} is in the logs");
    }
}

/// What the real `ingest` binary writes to standard output for one request (a reading at
/// `minute`), as Lambda starts it with these logging variables.
async fn binary_output(
    test: &TestDb,
    key: &str,
    minute: u32,
    logging: &[(&str, &str)],
) -> Vec<String> {
    let api = RuntimeApi::start().await;
    let mut child = api
        .command(&workspace_binary("ingest"), "ingest")
        .env("DATABASE_URL", test.pooled_url().expose())
        .envs(logging.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the ingest binary");
    api.push(ingest_event(key, minute)).await;
    let answers = tokio::time::timeout(Duration::from_secs(30), api.answers(1))
        .await
        .expect("an answer within 30 s");
    assert_eq!(status_of(&answers[0].2), 200, "{}", answers[0].2);
    // The request's log lines are written before its answer (standard output is line-buffered).
    child.start_kill().expect("stop the binary");
    let output = child.wait_with_output().await.expect("its output");
    String::from_utf8(output.stdout)
        .expect("UTF-8 logs")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_binaries_log_json_lines_at_lambdas_level() {
    let test = TestDb::new().await;
    let (_, key) = test.device("user_log_lines").await;

    // As the template configures Lambda: JSON, INFO.
    let lines = binary_output(
        &test,
        &key,
        1,
        &[
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ],
    )
    .await;
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("every line is a JSON object"))
        .collect();
    let ingest = events
        .iter()
        .find(|e| e["fields"]["message"] == "ingest")
        .unwrap_or_else(|| panic!("the request's line: {lines:?}"));
    assert_eq!(ingest["level"], "INFO");
    assert_eq!(ingest["fields"]["accepted"], 1);
    assert!(events.iter().all(|e| e["level"] != "DEBUG"), "{lines:?}");

    // At WARN, nothing (the request went well). `RUST_LOG` by module; text without JSON.
    let lines = binary_output(&test, &key, 2, &[("AWS_LAMBDA_LOG_LEVEL", "WARN")]).await;
    assert!(lines.is_empty(), "{lines:?}");
    let lines = binary_output(&test, &key, 3, &[("RUST_LOG", "warn,ingest=info")]).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("ingest")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.starts_with('{')), "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains("database connected")),
        "{lines:?}"
    );
    assert_eq!(test.count("sensor_readings").await, 3);
}
