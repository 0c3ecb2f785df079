//! Ingest: batches of 1000 beside binary `COPY`, single readings beside a bare `INSERT`, both
//! through the hostile pooler and through one configured like Neon's; growth with the device's
//! history; 16 concurrent clients beside the same clients doing `COPY`; statements per request.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::config::Config;
use shared::db::{Db, Idempotence, Sql};
use tests::{Event, TestDb};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::{Report, Samples, Sizes, analyze, fill, rfc};

type Batch = Vec<(String, rust_decimal::Decimal, DateTime<Utc>)>;

/// A batch of `n` readings of `metric`, one second apart from `start` seconds after 2026-06-01
/// (after the history, within the retention the tests and the benchmark run with).
fn batch(metric: &str, start: i64, n: i64) -> Batch {
    let base = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    (0..n)
        .map(|i| {
            (
                metric.to_owned(),
                rust_decimal::Decimal::new(start + i, 1),
                base + chrono::Duration::seconds(start + i),
            )
        })
        .collect()
}

fn ingest_request(key: &str, readings: &Batch) -> lambda_http::Request {
    let body = json!({"readings": readings.iter().map(|(m, v, at)| json!({
        "metric": m, "value": v.to_string(), "recorded_at": rfc(*at)
    })).collect::<Vec<_>>()});
    Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&body)
        .request()
}

/// The floor of a batch: binary `COPY` of the same rows, in a transaction.
async fn copy(db: &Db, device: Uuid, rows: &Batch) {
    db.transaction(Idempotence::Once, |tx| async move {
        let rows: Vec<Vec<&(dyn ToSql + Sync)>> = rows
            .iter()
            .map(|(m, v, at)| vec![&device as &(dyn ToSql + Sync), m, v, at])
            .collect();
        tx.copy_in(
            "COPY sensor_readings (device_id, metric, value, recorded_at) FROM STDIN BINARY",
            &[Type::UUID, Type::TEXT, Type::NUMERIC, Type::TIMESTAMPTZ],
            &rows,
        )
        .await
    })
    .await
    .expect("copy");
}

/// Readings of a device whose id sorts after every other, in the month `rows` fall in: the last
/// keys of that month's primary key, as some device's are in production. Without them, whichever
/// benchmark device sorted last would own the index's rightmost page, whose inserts skip the
/// descent from the root (B-tree's rightmost-page fast path): an empty device with a random id
/// after the long-history one measured 10% faster, or the floor did, by the ids' luck.
async fn neighbour(test: &TestDb, rows: &Batch) {
    let metrics: Vec<&str> = rows.iter().map(|(m, _, _)| m.as_str()).collect();
    let values: Vec<rust_decimal::Decimal> = rows.iter().map(|(_, v, _)| *v).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|(_, _, at)| *at).collect();
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, m, v, t FROM unnest($2::text[], $3::numeric[], $4::timestamptz[]) AS r(m, v, t)",
            &[&Uuid::max(), &metrics, &values, &times],
        )
        .await
        .expect("the neighbour's readings");
}

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    eprintln!("bench: ingest (device history {} readings)", sizes.history);
    let test = TestDb::new().await;
    let (history_device, history_key) = test.device("user_bench").await;
    let (_, empty_key) = test.device("user_bench").await;
    fill(
        &test,
        history_device,
        "batch",
        sizes.history,
        "2026-01-01T00:00:00Z",
    )
    .await;
    analyze(&test).await;
    // The benchmark sends as fast as it can to one device: a bucket it never empties, so that the
    // rate limit is computed on every request (its cost is measured) but never refuses.
    let mut config = test.config(&[
        ("INGEST_RATE_PER_DEVICE", "1000000"),
        ("INGEST_BURST_PER_DEVICE", "1000000"),
    ]);
    for (profile, (suffix, base)) in crate::PROFILES.into_iter().enumerate() {
        config.database_url = test.pooled_url_via(base);
        let state = ingest::State::new(&config).expect("ingest state");
        // Readings of each profile in a time range of their own (all of them in 2026, past).
        let offset = profile as i64 * 1_000_000;
        let warm = batch("warm", offset, 10);
        let warm = ingest::handle(&state, ingest_request(&history_key, &warm)).await;
        assert_eq!(warm.status(), 200);

        // Batches of 1000: through the handler into the long history and into an empty device
        // (interleaved, so drift hits both alike), and the floor: binary COPY of the same rows in
        // a transaction, on the same connection and table. Behind them all in the month's index,
        // a neighbour's readings (see `neighbour`).
        neighbour(&test, &batch("neighbour", offset, 1000)).await;
        let (mut into_history, mut into_empty, mut copies) =
            (Samples::default(), Samples::default(), Samples::default());
        for round in 0..sizes.repetitions as i64 {
            let readings = batch("batch", offset + round * 1000, 1000);
            for (key, samples) in [
                (&history_key, &mut into_history),
                (&empty_key, &mut into_empty),
            ] {
                let request = ingest_request(key, &readings);
                let response = samples.time(ingest::handle(&state, request)).await;
                assert_eq!(response.status(), 200);
            }
            let rows = batch("copy", offset + round * 1000, 1000);
            copies.time(copy(&state.db, history_device, &rows)).await;
        }
        let (handler, floor, empty) = (into_history.median(), copies.median(), into_empty.median());
        let rps = 1000.0 / handler.as_secs_f64();
        let copy_rps = 1000.0 / floor.as_secs_f64();
        let ratio = rps / copy_rps;
        report.add(
            &format!("ingest_batch1000_rps{suffix}"),
            rps,
            "readings/s",
            Some((copy_rps, ratio)),
            "ratio >= 0.85",
            Some(ratio >= 0.85),
        );
        if profile == 0 {
            let growth = handler.as_secs_f64() / empty.as_secs_f64();
            report.add(
                "ingest_history_growth",
                growth,
                "x",
                None,
                "<= 1.1",
                Some(growth <= 1.1),
            );
        }

        // One reading per request vs one bare single-row INSERT round trip.
        const BARE_INSERT: Sql = Sql::once(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        );
        let (mut requests, mut inserts) = (Samples::default(), Samples::default());
        neighbour(&test, &batch("neighbour", offset + 10_000_000, 1000)).await;
        for i in 0..sizes.single_requests as i64 {
            let one = batch("single", offset + 10_000_000 + i, 1);
            let request = ingest_request(&history_key, &one);
            let response = requests.time(ingest::handle(&state, request)).await;
            assert_eq!(response.status(), 200);
            let (metric, value, at) = &batch("bare", offset + 10_000_000 + i, 1)[0];
            inserts
                .time(state.db.execute_typed(
                    &BARE_INSERT,
                    &[
                        (&history_device, Type::UUID),
                        (metric, Type::TEXT),
                        (value, Type::NUMERIC),
                        (at, Type::TIMESTAMPTZ),
                    ],
                ))
                .await
                .expect("bare insert");
        }
        let (request, insert) = (requests.median(), inserts.median());
        let ratio = insert.as_secs_f64() / request.as_secs_f64();
        let goal = if profile == 0 { 0.7 } else { 0.85 };
        report.add(
            &format!("ingest_batch1_rps{suffix}"),
            1.0 / request.as_secs_f64(),
            "requests/s",
            Some((1.0 / insert.as_secs_f64(), ratio)),
            &format!("ratio >= {goal}"),
            Some(ratio >= goal),
        );
    }

    concurrent(sizes, report, &test, &config).await;

    // Statements the server executed for one request (top-level, PgBouncer's own excluded).
    let state = ingest::State::new(&test.config(&[])).expect("ingest state");
    let stats = tests::connect(&format!("{}/postgres", tests::env("TEST_DIRECT_BASE"))).await;
    let count = || async {
        stats
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
                 JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = $1 AND s.toplevel AND s.query !~* '^\\s*(DISCARD ALL|SET |SELECT 1\\s*$)'",
                &[&test.name],
            )
            .await
            .expect("pg_stat_statements")
            .get::<_, i64>(0)
    };
    let before = count().await;
    let requests = 10;
    for i in 0..requests {
        let response = ingest::handle(
            &state,
            ingest_request(&history_key, &batch("stats", 15_000_000 + i * 1000, 1000)),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let per_request = (count().await - before) as f64 / requests as f64;
    report.add(
        "ingest_statements_per_request",
        per_request,
        "statements",
        None,
        "exactly 1",
        Some(per_request == 1.0),
    );
}

/// 16 clients, each with its own connection (a Lambda instance each), through the tests' pool of
/// 4 server connections, sending batches of 100 to 8 devices (two clients per device, taking
/// turns on its row), beside the same 16 clients each doing binary `COPY` of 100 rows. Every
/// request must succeed: no deadlock, no error.
async fn concurrent(sizes: &Sizes, report: &mut Report, test: &TestDb, config: &Config) {
    const CLIENTS: usize = 16;
    const DEVICES: usize = 8;
    const BATCH: i64 = 100;
    let rounds = (sizes.repetitions * 4) as i64;
    let mut config = config.clone();
    config.database_url = test.pooled_url();
    let mut devices = Vec::new();
    for _ in 0..DEVICES {
        devices.push(test.device("user_bench").await);
    }
    let clients: Vec<ingest::State> = (0..CLIENTS)
        .map(|_| ingest::State::new(&config).expect("ingest state"))
        .collect();
    let errors = std::cell::Cell::new(0);
    // Each client sends its own metric, and each run its own times: every reading is new.
    let run = |run: i64, floor: bool| {
        let (clients, devices, errors) = (&clients, &devices, &errors);
        async move {
            let started = Instant::now();
            futures::future::join_all(clients.iter().enumerate().map(|(c, state)| async move {
                let (device, key) = &devices[c % DEVICES];
                let metric = format!("{}{c}", if floor { "copy" } else { "client" });
                for round in 0..rounds {
                    let rows = batch(&metric, 12_000_000 + (run * rounds + round) * BATCH, BATCH);
                    if floor {
                        copy(&state.db, *device, &rows).await;
                    } else {
                        let response = ingest::handle(state, ingest_request(key, &rows)).await;
                        if response.status() != 200 {
                            errors.set(errors.get() + 1);
                        }
                    }
                }
            }))
            .await;
            (CLIENTS as i64 * rounds * BATCH) as f64 / started.elapsed().as_secs_f64()
        }
    };
    // Warm every connection, then measure both three times, interleaved: the medians.
    let _ = run(0, false).await;
    let (mut handler, mut floors) = (Vec::new(), Vec::new());
    for i in 1..=3 {
        handler.push(run(i, false).await);
        floors.push(run(i, true).await);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rps, floor) = (median(handler), median(floors));
    let errors = errors.get();
    if errors > 0 {
        eprintln!("bench: {errors} concurrent ingest requests failed");
    }
    report.add(
        "ingest_concurrent_rps",
        rps,
        "readings/s",
        Some((floor, rps / floor)),
        "no errors (report)",
        Some(errors == 0),
    );
}
