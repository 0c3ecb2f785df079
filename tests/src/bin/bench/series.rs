//! Time series: a week's hourly rollup beside `count`+`sum` over the same range, `latest` beside
//! one primary-key probe.

use chrono::DateTime;
use shared::db::Sql;
use tests::{Event, TestDb};
use tokio_postgres::types::Type;

use crate::{Report, Samples, Sizes, analyze, fill, fill_every, ms, session_token};

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: rollups and latest (table of {} readings)",
        sizes.table.max(10 * sizes.latest_per_metric)
    );
    let test = TestDb::new().await;
    let (rollup_device, _) = test.device("user_bench").await;
    let (latest_device, _) = test.device("user_bench").await;
    // 7 days of 10 s readings for the rollup, 10 metrics for latest, and other devices' data
    // around them up to the table size.
    let week = 7 * 24 * 360;
    fill(
        &test,
        rollup_device,
        "temperature",
        week,
        "2026-11-01T00:00:00Z",
    )
    .await;
    for m in 0..10 {
        fill(
            &test,
            latest_device,
            &format!("metric_{m}"),
            sizes.latest_per_metric,
            "2026-01-01T00:00:00Z",
        )
        .await;
    }
    let mut stored = week + 10 * sizes.latest_per_metric;
    while stored < sizes.table {
        let (other, _) = test.device("user_other").await;
        let n = (sizes.table - stored).min(1_000_000);
        fill(&test, other, "temperature", n, "2026-11-01T00:00:00Z").await;
        stored += n;
    }
    analyze(&test).await;
    let state = rollups::State::new(&test.config(&[])).expect("rollups state");
    let token = session_token();
    let get = |path: String, query: &str| {
        Event::load("rollups")
            .header("authorization", &format!("Bearer {token}"))
            .at("GET", &path)
            .query(query)
            .request()
    };
    let range = "metric=temperature&bucket=1h&from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z";
    let rollup_path = format!("/v1/devices/{rollup_device}/rollups");
    let latest_path = format!("/v1/devices/{latest_device}/latest");
    // Warm: connection, user check, caches.
    for _ in 0..2 {
        let response = rollups::handle(&state, get(rollup_path.clone(), range)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            rollups::handle(&state, get(latest_path.clone(), ""))
                .await
                .status(),
            200
        );
    }
    const RANGE_FLOOR: Sql = Sql::idempotent(
        "SELECT count(*), sum(value) FROM sensor_readings
         WHERE device_id = $1 AND metric = $2 AND recorded_at >= $3 AND recorded_at < $4",
    );
    const PROBE_FLOOR: Sql = Sql::idempotent(
        "SELECT value FROM sensor_readings WHERE device_id = $1 AND metric = $2 AND recorded_at = $3",
    );
    let from = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    let to = DateTime::parse_from_rfc3339("2026-11-08T00:00:00Z")
        .expect("constant")
        .to_utc();
    let probe_at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    let (mut rollup, mut range_floor, mut latest, mut probe) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for _ in 0..sizes.repetitions {
        let request = get(rollup_path.clone(), range);
        let response = rollup.time(rollups::handle(&state, request)).await;
        assert_eq!(response.status(), 200);
        range_floor
            .time(state.db.query_typed_one(
                &RANGE_FLOOR,
                &[
                    (&rollup_device, Type::UUID),
                    (&"temperature", Type::TEXT),
                    (&from, Type::TIMESTAMPTZ),
                    (&to, Type::TIMESTAMPTZ),
                ],
            ))
            .await
            .expect("range floor");
        let request = get(latest_path.clone(), "");
        let response = latest.time(rollups::handle(&state, request)).await;
        assert_eq!(response.status(), 200);
        probe
            .time(state.db.query_typed_opt(
                &PROBE_FLOOR,
                &[
                    (&latest_device, Type::UUID),
                    (&"metric_3", Type::TEXT),
                    (&probe_at, Type::TIMESTAMPTZ),
                ],
            ))
            .await
            .expect("probe floor");
    }
    let (rollup, range_floor) = (rollup.median(), range_floor.median());
    let ratio = rollup.as_secs_f64() / range_floor.as_secs_f64();
    report.add(
        "rollup_7d_1h_ms",
        ms(rollup),
        "ms (p50)",
        Some((ms(range_floor), ratio)),
        "ratio <= 1.5",
        Some(ratio <= 1.5),
    );

    // A year of daily points (from the hourly aggregates), beside the week of hourly ones.
    let (year_device, _) = test.device("user_bench").await;
    let every = 365 * 86_400 / sizes.year_readings;
    fill_every(
        &test,
        year_device,
        "temperature",
        sizes.year_readings,
        "2025-12-01T00:00:00Z",
        every,
    )
    .await;
    analyze(&test).await;
    let year_path = format!("/v1/devices/{year_device}/rollups");
    let year = "metric=temperature&bucket=1d&from=2025-12-01T00:00:00Z&to=2026-12-01T00:00:00Z";
    let response = rollups::handle(&state, get(year_path.clone(), year)).await;
    assert_eq!(response.status(), 200);
    let mut samples = Samples::default();
    for _ in 0..sizes.repetitions {
        let response = samples
            .time(rollups::handle(&state, get(year_path.clone(), year)))
            .await;
        assert_eq!(response.status(), 200);
    }
    let year = samples.median();
    let ratio = year.as_secs_f64() / rollup.as_secs_f64();
    eprintln!(
        "bench: a year of {} readings, one every {every} s",
        sizes.year_readings
    );
    report.add(
        "rollup_365d_1d_ms",
        ms(year),
        "ms (p50)",
        Some((ms(rollup), ratio)),
        "<= 3x rollup_7d_1h_ms",
        Some(ratio <= 3.0),
    );
    let (latest, probe) = (latest.median(), probe.median());
    let ratio = latest.as_secs_f64() / probe.as_secs_f64();
    report.add(
        "latest_ms",
        ms(latest),
        "ms (p50)",
        Some((ms(probe), ratio)),
        "ratio <= 3",
        Some(ratio <= 3.0),
    );
}
