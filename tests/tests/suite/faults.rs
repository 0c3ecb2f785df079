//! Acknowledged means stored, under faults: concurrent ingest clients (each its own
//! connection, as Lambda instances) while a private stack's PgBouncer is restarted and then
//! PostgreSQL is restarted (fast shutdown). During the outages requests answer 503 with
//! Retry-After, never 500 and never past the Lambda timeout; afterwards every instance recovers
//! by itself; every acknowledged reading is stored exactly once and no failed request is
//! half-written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use tests::{Event, connect};
use tokio_postgres::types::Type;

const CLIENTS: usize = 6;
const READINGS: i64 = 5;

fn stack(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
    let output = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("scripts/stack");
    assert!(
        output.status.success(),
        "scripts/stack {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One request's fate: its readings' times, its status, whether it said Retry-After, how long.
struct Outcome {
    times: Vec<DateTime<Utc>>,
    status: u16,
    retry_after: bool,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_readings_survive_pooler_and_database_restarts() {
    let vars: HashMap<String, String> = stack(&["start"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dir = vars["STACK_DIR"].clone();
    let _stop = StopStack(dir.clone());
    let direct_base = format!("postgres://postgres@127.0.0.1:{}", vars["PG_PORT"]);
    let admin = connect(&format!("{direct_base}/postgres")).await;
    admin.batch_execute("CREATE DATABASE app").await.unwrap();
    let direct_url = shared::config::Secret::new(format!("{direct_base}/app?sslmode=disable"));
    shared::migrate::run(&direct_url).await.unwrap();
    let db = connect(direct_url.expose()).await;
    let mut keys = Vec::new();
    for _ in 0..CLIENTS {
        let key = shared::domain::DeviceKey::generate();
        db.execute(
            r#"WITH u AS (INSERT INTO "user" (id) VALUES ('user_faults') ON CONFLICT DO NOTHING)
               INSERT INTO devices (owner_id, name, device_key_hash) VALUES ('user_faults', 'd', $1)"#,
            &[&key.hash().to_vec()],
        )
        .await
        .unwrap();
        keys.push(key.reveal().to_owned());
    }
    let pooled = format!(
        "postgres://postgres@127.0.0.1:{}/app?sslmode=disable",
        vars["BOUNCER_PORT"]
    );
    // Each client sends as fast as it can: no rate limit here (that is `limits.rs`'s subject).
    let config = shared::config::Config::from_vars(&HashMap::from([
        ("DATABASE_URL".to_owned(), pooled),
        ("INGEST_RATE_PER_DEVICE".to_owned(), "0".to_owned()),
    ]))
    .unwrap();

    let started = Instant::now();
    let run_for = Duration::from_secs(14);
    // Each client's readings in its own stretch of the last 200 days (within retention).
    let first_ms = (Utc::now() - chrono::TimeDelta::days(200)).timestamp_millis();
    let clients = keys.into_iter().enumerate().map(|(client, key)| {
        let state = ingest::State::new(&config).unwrap();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut n: i64 = 0;
            while started.elapsed() < run_for {
                let base = first_ms + client as i64 * 1_000_000_000;
                let times: Vec<DateTime<Utc>> = (0..READINGS)
                    .map(|i| DateTime::from_timestamp_millis(base + (n * READINGS + i) * 1000).unwrap())
                    .collect();
                n += 1;
                let readings: Vec<_> = times
                    .iter()
                    .map(|t| json!({"metric": "t", "value": 1, "recorded_at": t.to_rfc3339_opts(SecondsFormat::Millis, true)}))
                    .collect();
                let event = Event::load("ingest")
                    .header("authorization", &format!("Bearer {key}"))
                    .json_body(&json!({ "readings": readings }));
                let sent = Instant::now();
                let response = ingest::handle(&state, event.request()).await;
                outcomes.push(Outcome {
                    times,
                    status: response.status().as_u16(),
                    retry_after: response.headers().contains_key("retry-after"),
                    took: sent.elapsed(),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (outcomes, state.db.generation().await)
        })
    });
    let clients: Vec<_> = clients.collect();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = dir.clone();
    tokio::task::spawn_blocking(move || stack(&["restart-bouncer", &d]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let d = dir.clone();
    tokio::task::spawn_blocking(move || stack(&["restart-postgres", &d]))
        .await
        .unwrap();

    let mut outcomes = Vec::new();
    for client in futures::future::join_all(clients).await {
        let (client, connections) = client.unwrap();
        // The faults reached every instance: each had to open a new connection.
        assert!(
            connections >= 2,
            "an instance kept its first connection through the faults"
        );
        outcomes.push(client);
    }

    let db = connect(direct_url.expose()).await;
    let stored_at = |times: Vec<DateTime<Utc>>| {
        let db = &db;
        async move {
            db.query_typed_one(
                "SELECT count(*) FROM sensor_readings WHERE recorded_at = ANY($1)",
                &[(&times, Type::TIMESTAMPTZ_ARRAY)],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let (mut ok, mut unavailable, mut acknowledged) = (0, 0, 0i64);
    for client in &outcomes {
        // Every instance recovered by itself: its last request went through.
        assert_eq!(
            client.last().map(|o| o.status),
            Some(200),
            "an instance did not recover"
        );
        for outcome in client {
            assert!(
                outcome.took < Duration::from_secs(15),
                "a request took {:?}",
                outcome.took
            );
            let stored = stored_at(outcome.times.clone()).await;
            match outcome.status {
                200 => {
                    ok += 1;
                    acknowledged += READINGS;
                    assert_eq!(stored, READINGS, "an acknowledged batch is stored");
                }
                503 => {
                    unavailable += 1;
                    assert!(outcome.retry_after, "503 without Retry-After");
                    assert!(
                        stored == 0 || stored == READINGS,
                        "half-written: {stored} of {READINGS}"
                    );
                }
                other => panic!("status {other} during a fault"),
            }
        }
    }
    let total: i64 = db
        .query_one("SELECT count(*) FROM sensor_readings", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        total >= acknowledged,
        "{total} stored, {acknowledged} acknowledged"
    );
    assert!(
        unavailable > 0,
        "the faults were felt (otherwise this test proves nothing)"
    );
    eprintln!(
        "faults: {} requests, {ok} answered 200, {unavailable} answered 503, 0 answered 500; {acknowledged} readings acknowledged, all stored once ({total} in the table)",
        ok + unavailable
    );
}

/// Stops the private stack however the test ends.
struct StopStack(String);

impl Drop for StopStack {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack"))
            .args(["stop", &self.0])
            .output();
    }
}
