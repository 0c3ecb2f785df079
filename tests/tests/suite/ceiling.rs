//! The connection ceiling: 200 Lambda instances, each with its own connection, through a
//! PgBouncer that keeps 10 server connections: no errors, exact totals, and Postgres never
//! sees more than the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tests::{Event, TestDb, env};

const INSTANCES: usize = 200;
const REQUESTS: usize = 50;
const READINGS: usize = 10;
const POOL: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_instances_share_ten_server_connections() {
    let test = TestDb::new().await;
    let url = format!("{}/{}?sslmode=disable", env("TEST_POOL10_BASE"), test.name);
    let config = test.config(&[("DATABASE_URL", &url)]);
    let mut keys = Vec::new();
    for _ in 0..INSTANCES {
        keys.push(test.device("user_ceiling").await.1);
    }

    // Sample the server's client backends for this database while the load runs (all but the
    // test's own direct connection).
    let own: i32 = test
        .direct
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (running, peak) = (running.clone(), peak.clone());
        let direct = tests::connect(&format!("{}/postgres", env("TEST_DIRECT_BASE"))).await;
        let name = test.name.clone();
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let n: i64 = direct
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = $1 AND backend_type = 'client backend' AND pid <> $2",
                        &[&name, &own],
                    )
                    .await
                    .unwrap()
                    .get(0);
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let started = Instant::now();
    let instances = keys.into_iter().enumerate().map(|(instance, key)| {
        let state = ingest::State::new(&config).unwrap();
        tokio::spawn(async move {
            let mut errors = Vec::new();
            for request in 0..REQUESTS {
                let readings: Vec<_> = (0..READINGS)
                    .map(|i| json!({"metric": "t", "value": i, "recorded_at": 1_795_600_000_000i64 + (request * READINGS + i) as i64 * 1000}))
                    .collect();
                let event = Event::load("ingest")
                    .header("authorization", &format!("Bearer {key}"))
                    .json_body(&json!({ "readings": readings }));
                let response = ingest::handle(&state, event.request()).await;
                if response.status() != 200 {
                    errors.push(format!("instance {instance} request {request}: {}", response.status()));
                }
            }
            (errors, state.db.generation().await)
        })
    });
    let results = futures::future::join_all(instances).await;
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();

    let mut errors = Vec::new();
    for result in results {
        let (instance_errors, connections) = result.unwrap();
        errors.extend(instance_errors);
        assert_eq!(connections, 1, "one connection per instance, kept");
    }
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let total = (INSTANCES * REQUESTS * READINGS) as i64;
    assert_eq!(test.count("sensor_readings").await, total);
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        (1..=POOL).contains(&peak),
        "Postgres saw {peak} connections for a pool of {POOL}"
    );
    eprintln!(
        "connection ceiling: {} requests ({total} readings) from {INSTANCES} instances in {:.1} s = {:.0} requests/s, {:.0} readings/s; peak server connections {peak}",
        INSTANCES * REQUESTS,
        elapsed.as_secs_f64(),
        (INSTANCES * REQUESTS) as f64 / elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
    );
}
