//! Ingest: batches of 1000 beside binary `COPY`, single readings beside a bare `INSERT`, growth
//! with the device's history, statements per request.

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::db::{Idempotence, Sql};
use tests::{Event, TestDb};
use tokio_postgres::types::{ToSql, Type};

use crate::{Report, Samples, Sizes, analyze, fill, rfc};

/// A batch of `n` readings of `metric`, one second apart from `start` seconds after 2026-06-01
/// (after the history, within the retention the tests and the benchmark run with).
fn batch(metric: &str, start: i64, n: i64) -> Vec<(String, rust_decimal::Decimal, DateTime<Utc>)> {
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

fn ingest_request(
    key: &str,
    readings: &[(String, rust_decimal::Decimal, DateTime<Utc>)],
) -> lambda_http::Request {
    let body = json!({"readings": readings.iter().map(|(m, v, at)| json!({
        "metric": m, "value": v.to_string(), "recorded_at": rfc(*at)
    })).collect::<Vec<_>>()});
    Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&body)
        .request()
}

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    eprintln!("bench: ingest (device history {} readings)", sizes.history);
    let test = TestDb::new().await;
    let (history_device, history_key) = test.device("user_bench").await;
    let (empty_device, empty_key) = test.device("user_bench").await;
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
    let config = test.config(&[
        ("INGEST_RATE_PER_DEVICE", "1000000"),
        ("INGEST_BURST_PER_DEVICE", "1000000"),
    ]);
    let state = ingest::State::new(&config).expect("ingest state");
    // Warm the connection.
    let warm = ingest::handle(&state, ingest_request(&history_key, &batch("warm", 0, 10))).await;
    assert_eq!(warm.status(), 200);

    // Batches of 1000: through the handler into the long history and into an empty device
    // (interleaved, so drift hits both alike), and the floor: binary COPY of the same rows in a
    // transaction, on the same connection and table.
    let (mut into_history, mut into_empty, mut copies) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..sizes.repetitions as i64 {
        let readings = batch("batch", round * 1000, 1000);
        for (key, samples) in [
            (&history_key, &mut into_history),
            (&empty_key, &mut into_empty),
        ] {
            let request = ingest_request(key, &readings);
            let response = samples.time(ingest::handle(&state, request)).await;
            assert_eq!(response.status(), 200);
        }
        let copy = batch("copy", round * 1000, 1000);
        copies
            .time(state.db.transaction(Idempotence::Once, |tx| {
                let copy = &copy;
                async move {
                    let rows: Vec<Vec<&(dyn ToSql + Sync)>> = copy
                        .iter()
                        .map(|(m, v, at)| vec![&history_device as &(dyn ToSql + Sync), m, v, at])
                        .collect();
                    tx.copy_in(
                        "COPY sensor_readings (device_id, metric, value, recorded_at) FROM STDIN BINARY",
                        &[Type::UUID, Type::TEXT, Type::NUMERIC, Type::TIMESTAMPTZ],
                        &rows,
                    )
                    .await
                }
            }))
            .await
            .expect("copy");
    }
    let (handler, copy, empty) = (into_history.median(), copies.median(), into_empty.median());
    let rps = 1000.0 / handler.as_secs_f64();
    let copy_rps = 1000.0 / copy.as_secs_f64();
    let ratio = rps / copy_rps;
    report.add(
        "ingest_batch1000_rps",
        rps,
        "readings/s",
        Some((copy_rps, ratio)),
        "ratio >= 0.6",
        Some(ratio >= 0.6),
    );
    let growth = handler.as_secs_f64() / empty.as_secs_f64();
    report.add(
        "ingest_history_growth",
        growth,
        "x",
        None,
        "<= 1.2",
        Some(growth <= 1.2),
    );

    // One reading per request vs one bare single-row INSERT round trip.
    const BARE_INSERT: Sql = Sql::once(
        "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    );
    let (mut requests, mut inserts) = (Samples::default(), Samples::default());
    for i in 0..sizes.single_requests as i64 {
        let one = batch("single", 10_000_000 + i, 1);
        let request = ingest_request(&history_key, &one);
        let response = requests.time(ingest::handle(&state, request)).await;
        assert_eq!(response.status(), 200);
        let (metric, value, at) = &batch("bare", 10_000_000 + i, 1)[0];
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
    report.add(
        "ingest_batch1_rps",
        1.0 / request.as_secs_f64(),
        "requests/s",
        Some((1.0 / insert.as_secs_f64(), ratio)),
        "ratio >= 0.7",
        Some(ratio >= 0.7),
    );

    // Statements the server executed for one request (top-level, PgBouncer's own excluded).
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
    let _ = empty_device;
    report.add(
        "ingest_statements_per_request",
        per_request,
        "statements",
        None,
        "exactly 1",
        Some(per_request == 1.0),
    );
}
