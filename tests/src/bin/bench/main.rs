//! The benchmark: `scripts/bench [--scale tiny|small|large]` (which starts PostgreSQL behind
//! the transaction-mode PgBouncer and runs `cargo run --release -p tests --bin bench`).
//!
//! Every figure is measured next to its floor, in the same run, through the same pooler, on
//! the same table (and for the ingest figures the same connection), so the ratio survives a
//! noisy machine. It prints a table and writes `target/bench/results.json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use shared::db::{Idempotence, Sql};
use tests::{Event, TestDb, clerk};
use tokio_postgres::types::{ToSql, Type};

use tests::runtime_api::RuntimeApi;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scale {
    Tiny,
    Small,
    Large,
}

/// How big each data set is and how often each figure is repeated.
struct Sizes {
    scale: Scale,
    /// Readings already stored for the ingest device.
    history: i64,
    /// Rows in the readings table for the rollup and latest figures.
    table: i64,
    /// Readings per metric of the `/latest` device (10 metrics).
    latest_per_metric: i64,
    /// (rules, readings) of the alert evaluation figure, and the smaller runs it is compared to.
    rules: i64,
    rules_small: i64,
    eval_readings: i64,
    eval_readings_small: i64,
    repetitions: usize,
    single_requests: usize,
    cold_starts: usize,
    invocations: usize,
}

impl Sizes {
    fn of(scale: Scale) -> Self {
        match scale {
            Scale::Tiny => Self {
                scale,
                history: 20_000,
                table: 100_000,
                latest_per_metric: 1_000,
                rules: 200,
                rules_small: 20,
                eval_readings: 20_000,
                eval_readings_small: 2_000,
                repetitions: 3,
                single_requests: 20,
                cold_starts: 2,
                invocations: 20,
            },
            Scale::Small => Self {
                scale,
                history: 1_000_000,
                table: 1_000_000,
                latest_per_metric: 100_000,
                rules: 10_000,
                rules_small: 1_000,
                eval_readings: 1_000_000,
                eval_readings_small: 100_000,
                repetitions: 15,
                single_requests: 500,
                cold_starts: 10,
                invocations: 1_000,
            },
            Scale::Large => Self {
                scale,
                history: 1_000_000,
                table: 10_000_000,
                latest_per_metric: 100_000,
                rules: 100_000,
                rules_small: 10_000,
                eval_readings: 10_000_000,
                eval_readings_small: 1_000_000,
                repetitions: 25,
                single_requests: 1_000,
                cold_starts: 15,
                invocations: 1_000,
            },
        }
    }
}

#[derive(Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    floor: Option<f64>,
    ratio: Option<f64>,
    goal: String,
    met: Option<bool>,
}

struct Report {
    figures: Vec<Figure>,
    scale: Scale,
}

impl Report {
    /// `floor` is the floor and the ratio against it, where the figure has one.
    fn add(
        &mut self,
        name: &str,
        value: f64,
        unit: &'static str,
        floor: Option<(f64, f64)>,
        goal: &str,
        met: Option<bool>,
    ) {
        let figure = Figure {
            name: name.to_owned(),
            value: round(value),
            unit,
            floor: floor.map(|(f, _)| round(f)),
            ratio: floor.map(|(_, r)| (r * 1000.0).round() / 1000.0),
            goal: goal.to_owned(),
            met,
        };
        eprintln!(
            "  {:<34} {:>12} {:<10} floor {:>10} ratio {:>7} goal {:<22} {}",
            figure.name,
            figure.value,
            figure.unit,
            figure.floor.map_or("-".into(), |f| f.to_string()),
            figure.ratio.map_or("-".into(), |r| r.to_string()),
            figure.goal,
            match figure.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "",
            }
        );
        self.figures.push(figure);
    }
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        v.round()
    } else {
        (v * 100.0).round() / 100.0
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    shared::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let scale = match args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
    {
        None | Some("small") => Scale::Small,
        Some("tiny") => Scale::Tiny,
        Some("large") => Scale::Large,
        Some(other) => {
            eprintln!("bench: unknown scale {other} (tiny, small, large)");
            std::process::exit(2);
        }
    };
    let sizes = Sizes::of(scale);
    let mut report = Report {
        figures: Vec::new(),
        scale,
    };
    let started = Instant::now();
    eprintln!(
        "bench: scale {scale:?}, {} repetitions per figure (medians)",
        sizes.repetitions
    );

    ingest_figures(&sizes, &mut report).await;
    series_figures(&sizes, &mut report).await;
    alert_eval_figures(&sizes, &mut report).await;
    process_figures(&sizes, &mut report).await;

    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("create target/bench");
    // The smoke run of scripts/test must not overwrite a real run's results.
    let path = out.join(if scale == Scale::Tiny {
        "results-tiny.json"
    } else {
        "results.json"
    });
    let json = json!({
        "scale": format!("{:?}", report.scale).to_lowercase(),
        "repetitions": sizes.repetitions,
        "machine": machine(),
        "figures": report.figures,
    });
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("serialize"),
    )
    .expect("write results");
    let missing: Vec<&str> = report
        .figures
        .iter()
        .filter(|f| !f.value.is_finite())
        .map(|f| f.name.as_str())
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: figures without a value: {}", missing.join(", "));
        std::process::exit(1);
    }
    let unmet: Vec<&str> = report
        .figures
        .iter()
        .filter(|f| f.met == Some(false))
        .map(|f| f.name.as_str())
        .collect();
    eprintln!(
        "bench: {} figures in {:.0} s, written to {}; goals not met: {}",
        report.figures.len(),
        started.elapsed().as_secs_f64(),
        path.display(),
        if unmet.is_empty() {
            "none".into()
        } else {
            unmet.join(", ")
        }
    );
}

/// `target/` of this build: the benchmark binary lives in `target/<profile>/`.
fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/release"))
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores, {cpu}")
}

/// `n` readings of one metric for `device`, 10 s apart from `start`, generated in the server.
async fn fill(test: &TestDb, device: uuid::Uuid, metric: &str, n: i64, start: &str) {
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, $2, round((g % 1000)::numeric / 10, 1), $4::text::timestamptz + g * interval '10 seconds'
             FROM generate_series(0, $3::int8 - 1) g",
            &[&device, &metric, &n, &start],
        )
        .await
        .expect("generate readings");
}

async fn analyze(test: &TestDb) {
    test.direct
        .batch_execute("VACUUM ANALYZE sensor_readings")
        .await
        .expect("analyze");
}

/// A batch of `n` readings of `metric`, one second apart from `start` seconds after 2025-01-01.
fn batch(metric: &str, start: i64, n: i64) -> Vec<(String, rust_decimal::Decimal, DateTime<Utc>)> {
    let base = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
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

async fn ingest_figures(sizes: &Sizes, report: &mut Report) {
    eprintln!("bench: ingest (device history {} readings)", sizes.history);
    let test = TestDb::new().await;
    let (history_device, history_key) = test.device("user_bench").await;
    let (empty_device, empty_key) = test.device("user_bench").await;
    fill(
        &test,
        history_device,
        "batch",
        sizes.history,
        "2020-01-01T00:00:00Z",
    )
    .await;
    analyze(&test).await;
    let state = ingest::State::new(&test.config(&[])).expect("ingest state");
    // Warm the connection.
    let warm = ingest::handle(&state, ingest_request(&history_key, &batch("warm", 0, 10))).await;
    assert_eq!(warm.status(), 200);

    // Batches of 1000: through the handler into the long history and into an empty device
    // (interleaved, so drift hits both alike), and the floor: binary COPY of the same rows in a
    // transaction, on the same connection and table.
    let (mut into_history, mut into_empty, mut copies) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.repetitions as i64 {
        let readings = batch("batch", round * 1000, 1000);
        for (key, samples) in [
            (&history_key, &mut into_history),
            (&empty_key, &mut into_empty),
        ] {
            let request = ingest_request(key, &readings);
            let started = Instant::now();
            let response = ingest::handle(&state, request).await;
            samples.push(started.elapsed());
            assert_eq!(response.status(), 200);
        }
        let copy = batch("copy", round * 1000, 1000);
        let started = Instant::now();
        state
            .db
            .transaction(Idempotence::Once, |tx| {
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
            })
            .await
            .expect("copy");
        copies.push(started.elapsed());
    }
    let (handler, copy, empty) = (median(into_history), median(copies), median(into_empty));
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
    let (mut requests, mut inserts) = (Vec::new(), Vec::new());
    for i in 0..sizes.single_requests as i64 {
        let one = batch("single", 10_000_000 + i, 1);
        let request = ingest_request(&history_key, &one);
        let started = Instant::now();
        let response = ingest::handle(&state, request).await;
        requests.push(started.elapsed());
        assert_eq!(response.status(), 200);
        let (metric, value, at) = &batch("bare", 10_000_000 + i, 1)[0];
        let started = Instant::now();
        state
            .db
            .execute_typed(
                &BARE_INSERT,
                &[
                    (&history_device, Type::UUID),
                    (metric, Type::TEXT),
                    (value, Type::NUMERIC),
                    (at, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .expect("bare insert");
        inserts.push(started.elapsed());
    }
    let (request, insert) = (median(requests), median(inserts));
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
            ingest_request(&history_key, &batch("stats", 20_000_000 + i * 1000, 1000)),
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

async fn series_figures(sizes: &Sizes, report: &mut Report) {
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
    let token = clerk::sign(
        &{
            let mut c = clerk::claims("user_bench");
            c["exp"] = json!(clerk::now() + 3600);
            c
        },
        &clerk::dev_signing_key(),
        Some("dev"),
    );
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
    let (mut rollup, mut range_floor, mut latest, mut probe) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.repetitions {
        let request = get(rollup_path.clone(), range);
        let started = Instant::now();
        let response = rollups::handle(&state, request).await;
        rollup.push(started.elapsed());
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        state
            .db
            .query_typed_one(
                &RANGE_FLOOR,
                &[
                    (&rollup_device, Type::UUID),
                    (&"temperature", Type::TEXT),
                    (&from, Type::TIMESTAMPTZ),
                    (&to, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .expect("range floor");
        range_floor.push(started.elapsed());
        let request = get(latest_path.clone(), "");
        let started = Instant::now();
        let response = rollups::handle(&state, request).await;
        latest.push(started.elapsed());
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        state
            .db
            .query_typed_opt(
                &PROBE_FLOOR,
                &[
                    (&latest_device, Type::UUID),
                    (&"metric_3", Type::TEXT),
                    (&probe_at, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .expect("probe floor");
        probe.push(started.elapsed());
    }
    let (rollup, range_floor) = (median(rollup), median(range_floor));
    let ratio = rollup.as_secs_f64() / range_floor.as_secs_f64();
    report.add(
        "rollup_7d_1h_ms",
        ms(rollup),
        "ms (p50)",
        Some((ms(range_floor), ratio)),
        "ratio <= 1.5",
        Some(ratio <= 1.5),
    );
    let (latest, probe) = (median(latest), median(probe));
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

/// A database with `rules` rules (10 per device, one per metric, half with `for_seconds`)
/// over `readings` readings spread evenly across the rules' series.
async fn alert_data(rules: i64, readings: i64) -> TestDb {
    let test = TestDb::new().await;
    let devices = (rules / 10).max(1);
    let per_series = (readings / (devices * 10)).max(1);
    test.direct
        .execute(
            r#"WITH u AS (INSERT INTO "user" (id) VALUES ('user_eval'))
               INSERT INTO devices (owner_id, name, device_key_hash, status, last_seen_at)
               SELECT 'user_eval', 'device ' || g, sha256(('eval' || g)::bytea), 'online', now()
               FROM generate_series(1, $1::int8) g"#,
            &[&devices],
        )
        .await
        .expect("devices");
    test.direct
        .batch_execute(
            "INSERT INTO alert_rules (device_id, metric, comparator, threshold, for_seconds)
             SELECT d.id, 'm' || m, CASE WHEN m % 2 = 0 THEN 'gt' ELSE 'lte' END, 50,
                    CASE WHEN m % 3 = 0 THEN 300 ELSE 0 END
             FROM devices d, generate_series(0, 9) m",
        )
        .await
        .expect("rules");
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT d.id, 'm' || m, (g * 7 + m) % 100, now() - (g * interval '30 seconds')
             FROM devices d, generate_series(0, 9) m, generate_series(0, $1::int8 - 1) g",
            &[&per_series],
        )
        .await
        .expect("readings");
    analyze(&test).await;
    test
}

/// The median of `passes` evaluation passes after one warm-up pass (which fires the alerts).
async fn eval_time(test: &TestDb, passes: usize) -> Duration {
    let state = alert_eval::State::new(&test.config(&[])).expect("alert-eval state");
    let event = Event::load("alert-eval-schedule").json().clone();
    alert_eval::handle(&state, event.clone())
        .await
        .expect("warm-up pass");
    let mut samples = Vec::new();
    for _ in 0..passes {
        let started = Instant::now();
        alert_eval::handle(&state, event.clone())
            .await
            .expect("pass");
        samples.push(started.elapsed());
    }
    median(samples)
}

async fn alert_eval_figures(sizes: &Sizes, report: &mut Report) {
    let passes = sizes.repetitions.clamp(3, 5);
    eprintln!(
        "bench: alert evaluation ({} rules over {} readings; {passes} passes)",
        sizes.rules, sizes.eval_readings
    );
    let big = alert_data(sizes.rules, sizes.eval_readings).await;
    let full = eval_time(&big, passes).await;
    let goal_applies = sizes.scale == Scale::Large;
    report.add(
        &format!("alert_eval_{}_rules_ms", sizes.rules),
        ms(full),
        "ms (p50)",
        None,
        "<= 2000 ms (100k rules)",
        goal_applies.then_some(ms(full) <= 2000.0),
    );
    // Fewer rules over the same readings.
    big.direct
        .execute("DELETE FROM alert_rules WHERE id NOT IN (SELECT id FROM alert_rules ORDER BY id LIMIT $1)", &[&sizes.rules_small])
        .await
        .expect("drop rules");
    let fewer = eval_time(&big, passes).await;
    let ratio = full.as_secs_f64() / fewer.as_secs_f64();
    let rules_factor = (sizes.rules / sizes.rules_small) as f64;
    report.add(
        "alert_eval_scaling_rules",
        ratio,
        "x",
        Some((ms(fewer), ratio)),
        &format!("<= {:.1} ({}x rules)", rules_factor * 1.2, rules_factor),
        Some(ratio <= rules_factor * 1.2),
    );
    drop(big);
    // The same rules over fewer readings.
    let small = alert_data(sizes.rules, sizes.eval_readings_small).await;
    let fewer_readings = eval_time(&small, passes).await;
    let ratio = full.as_secs_f64() / fewer_readings.as_secs_f64();
    report.add(
        "alert_eval_scaling_readings",
        ratio,
        "x",
        Some((ms(fewer_readings), ratio)),
        &format!(
            "<= 1.5 ({}x readings)",
            sizes.eval_readings / sizes.eval_readings_small
        ),
        Some(ratio <= 1.5),
    );
}

/// What each function binary gets: its events, and the configuration.
struct Function {
    name: &'static str,
    event: String,
}

async fn process_figures(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: processes ({} cold starts each, {} invocations for memory)",
        sizes.cold_starts, sizes.invocations
    );
    let dir = profile_dir();
    let release = dir.ends_with("release");
    let test = TestDb::new().await;
    let (device, key) = test.device("user_bench").await;
    let token = clerk::sign(
        &{
            let mut c = clerk::claims("user_bench");
            c["exp"] = json!(clerk::now() + 3600);
            c
        },
        &clerk::dev_signing_key(),
        Some("dev"),
    );
    let webhook = clerk::webhook(
        "clerk-webhook-user-updated",
        &clerk::payload("clerk-webhook-user-updated"),
        "msg_bench",
        clerk::now(),
    );
    let functions = [
        Function {
            name: "ingest",
            event: Event::load("ingest")
                .header("authorization", &format!("Bearer {key}"))
                .json()
                .to_string(),
        },
        Function {
            name: "devices",
            event: Event::load("devices-list")
                .header("authorization", &format!("Bearer {token}"))
                .json()
                .to_string(),
        },
        Function {
            name: "rollups",
            event: Event::load("rollups")
                .header("authorization", &format!("Bearer {token}"))
                .at("GET", &format!("/v1/devices/{device}/latest"))
                .json()
                .to_string(),
        },
        Function {
            name: "clerk-webhook",
            event: webhook.json().to_string(),
        },
        Function {
            name: "alert-eval",
            event: Event::load("alert-eval-schedule").json().to_string(),
        },
    ];
    let env = vec![
        (
            "DATABASE_URL".to_owned(),
            test.pooled_url().expose().to_owned(),
        ),
        ("CLERK_JWT_KEY".to_owned(), clerk::dev_public_key()),
        (
            "CLERK_WEBHOOK_SECRET".to_owned(),
            clerk::WEBHOOK_SECRET.to_owned(),
        ),
    ];

    let hello = dir.join("hello-lambda");
    let mut floor = Vec::new();
    for _ in 0..sizes.cold_starts {
        floor.push(cold_start(&hello, "hello-lambda", &env).await);
    }
    let floor = median(floor);
    for function in &functions {
        let binary = dir.join(function.name);
        let mut starts = Vec::new();
        for _ in 0..sizes.cold_starts {
            starts.push(cold_start(&binary, function.name, &env).await);
        }
        let start = median(starts);
        let ratio = start.as_secs_f64() / floor.as_secs_f64();
        report.add(
            &format!("cold_start_init_ms.{}", function.name),
            ms(start),
            "ms (p50)",
            Some((ms(floor), ratio)),
            "<= 30 ms, ratio <= 2",
            release.then_some(ms(start) <= 30.0 && ratio <= 2.0),
        );
        let (first, peak) = invocations(&binary, function, &env, sizes.invocations).await;
        report.add(
            &format!("first_invoke_ms.{}", function.name),
            ms(first),
            "ms",
            None,
            "report",
            None,
        );
        report.add(
            &format!("peak_rss_mb.{}", function.name),
            peak,
            "MB",
            None,
            "<= 25 MB",
            release.then_some(peak <= 25.0),
        );
        let size = std::fs::metadata(&binary)
            .map(|m| m.len() as f64 / 1_048_576.0)
            .unwrap_or(f64::NAN);
        report.add(
            &format!("binary_mb.{}", function.name),
            size,
            "MB",
            None,
            "<= 8 MB (stripped release)",
            release.then_some(size <= 8.0),
        );
    }
}

fn spawn(
    binary: &Path,
    name: &str,
    api: &RuntimeApi,
    env: &[(String, String)],
) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it first: cargo build --bins)",
                binary.display()
            )
        })
}

/// Spawn → the function's first `GET /runtime/invocation/next`.
async fn cold_start(binary: &Path, name: &str, env: &[(String, String)]) -> Duration {
    let api = RuntimeApi::start().await;
    let started = Instant::now();
    let mut child = spawn(binary, name, &api, env);
    let first = tokio::time::timeout(Duration::from_secs(30), api.first_next())
        .await
        .expect("the function polled the runtime API");
    let _ = child.kill().await;
    first - started
}

/// The first invocation's time (connect included) and the peak RSS after `n` invocations.
async fn invocations(
    binary: &Path,
    function: &Function,
    env: &[(String, String)],
    n: usize,
) -> (Duration, f64) {
    let api = RuntimeApi::start().await;
    let mut child = spawn(binary, function.name, &api, env);
    for _ in 0..n {
        api.push(function.event.clone()).await;
    }
    let answers = tokio::time::timeout(Duration::from_secs(300), api.answers(n))
        .await
        .expect("all invocations answered");
    for (_, _, body) in &answers {
        let answer: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let status = answer
            .get("statusCode")
            .and_then(Value::as_u64)
            .unwrap_or(200);
        assert!(
            answer.get("errorType").is_none() && status < 300,
            "{}: {body}",
            function.name
        );
    }
    let first = answers[0].1 - answers[0].0;
    let pid = child.id().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let _ = child.kill().await;
    (first, peak_kb / 1024.0)
}
