//! Time series: a week's hourly rollup beside `count`+`sum` over the same range, a year of daily
//! points beside the week, `latest` beside one primary-key probe (10 metrics) and beside one index
//! walk that returns as many rows (1,000 metrics).

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
    }
    const RANGE_FLOOR: Sql = Sql::idempotent(
        "SELECT count(*), sum(value) FROM sensor_readings
         WHERE device_id = $1 AND metric = $2 AND recorded_at >= $3 AND recorded_at < $4",
    );
    let from = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    let to = DateTime::parse_from_rfc3339("2026-11-08T00:00:00Z")
        .expect("constant")
        .to_utc();
    let (mut rollup, mut range_floor) = (Samples::default(), Samples::default());
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
    }
    let (rollup, range_floor) = (rollup.median(), range_floor.median());
    let ratio = rollup.as_secs_f64() / range_floor.as_secs_f64();
    report.add(
        "rollup_7d_1h_ms",
        ms(rollup),
        "ms (p50)",
        Some((ms(range_floor), ratio)),
        "ratio <= 1.2",
        Some(ratio <= 1.2),
    );

    // A year of daily points (from the daily aggregates), beside the week of hourly ones.
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
    // The scheduled function folds the whole days' hours into daily aggregates (of every
    // series in the table: timed, beside the rows it wrote).
    let started = std::time::Instant::now();
    let folded = test.pass().await.days_folded;
    let took = started.elapsed();
    assert!(
        folded >= 365,
        "a year of days folded, and the other series' days"
    );
    report.add(
        "fold_days_per_s",
        folded as f64 / took.as_secs_f64(),
        "day rows/s (a pass)",
        None,
        "report",
        None,
    );
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
    // A device with 1,000 metrics, each heard from over the last hour.
    let (wide_device, _) = test.device("user_bench").await;
    let per_metric = (sizes.latest_per_metric / 100).clamp(10, 360);
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, 'm' || lpad(m::text, 4, '0'), round((g % 1000)::numeric / 10, 1),
                    timestamptz '2026-11-20 00:00:00+00' + g * interval '10 seconds'
             FROM generate_series(0, 999) m, generate_series(0, $2::int8 - 1) g",
            &[&wide_device, &per_metric],
        )
        .await
        .expect("readings of 1,000 metrics");
    test.direct
        .execute(
            "UPDATE devices SET metrics = ARRAY(
                 SELECT 'm' || lpad(m::text, 4, '0') FROM generate_series(0, 999) m)
             WHERE id = $1",
            &[&wide_device],
        )
        .await
        .expect("the device's metrics");
    test.aggregate_device(wide_device).await;
    analyze(&test).await;

    // `latest` (a server-side function, migration V11) through both poolers: 10 metrics beside
    // one primary-key probe, 1,000 metrics beside one walk of an index returning 1,000 rows (the
    // device's newest hour of aggregates).
    const PROBE_FLOOR: Sql = Sql::idempotent(
        "SELECT value FROM sensor_readings WHERE device_id = $1 AND metric = $2 AND recorded_at = $3",
    );
    const WALK_FLOOR: Sql = Sql::idempotent(
        "SELECT h.metric, h.last_value::text, h.last_at FROM reading_hours h
         WHERE h.device_id = $1
           AND h.hour = (SELECT hour FROM reading_hours WHERE device_id = $1 ORDER BY hour DESC LIMIT 1)",
    );
    let probe_at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    let wide_path = format!("/v1/devices/{wide_device}/latest");
    let mut config = test.config(&[]);
    for (suffix, base) in crate::PROFILES {
        config.database_url = test.pooled_url_via(base);
        let state = rollups::State::new(&config).expect("rollups state");
        let latest = |path: &String| rollups::handle(&state, get(path.clone(), ""));
        // Warm: connection, caches, and the function's plans where they survive.
        for _ in 0..6 {
            assert_eq!(latest(&latest_path).await.status(), 200);
            assert_eq!(latest(&wide_path).await.status(), 200);
        }
        let response = latest(&wide_path).await;
        let items = serde_json::from_slice::<serde_json::Value>(response.body().as_ref())
            .expect("latest is JSON")["metrics"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(items, 1000, "latest names every metric");
        let (mut narrow, mut probe, mut wide, mut walk) = (
            Samples::default(),
            Samples::default(),
            Samples::default(),
            Samples::default(),
        );
        for _ in 0..sizes.repetitions {
            let response = narrow.time(latest(&latest_path)).await;
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
            let response = wide.time(latest(&wide_path)).await;
            assert_eq!(response.status(), 200);
            let rows = walk
                .time(
                    state
                        .db
                        .query_typed(&WALK_FLOOR, &[(&wide_device, Type::UUID)]),
                )
                .await
                .expect("walk floor");
            assert_eq!(rows.len(), 1000);
        }
        for (name, figure, floor) in [
            ("latest_ms", narrow, probe),
            ("latest_1000_metrics_ms", wide, walk),
        ] {
            let (figure, floor) = (figure.median(), floor.median());
            let ratio = figure.as_secs_f64() / floor.as_secs_f64();
            report.add(
                &format!("{name}{suffix}"),
                ms(figure),
                "ms (p50)",
                Some((ms(floor), ratio)),
                "ratio <= 2",
                Some(ratio <= 2.0),
            );
        }
    }
}
