//! The benchmark: `scripts/bench [--scale tiny|small|large]` (which starts PostgreSQL behind
//! the transaction-mode PgBouncer and runs `cargo run --release -p tests --bin bench`).
//!
//! Every figure is measured next to its floor, in the same run, through the same pooler, on
//! the same table (and for the ingest figures the same connection), so the ratio survives a
//! noisy machine. It prints a table and writes `target/bench/results.json`. One module per area:
//! `ingest`, `series` (rollups and latest), `alerts` (evaluation), `lifecycle` (deletes and purges),
//! `notify` (deliveries), `process` (the binaries).

mod alerts;
mod ingest;
mod lifecycle;
mod notify;
mod process;
mod series;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::json;
use tests::{TestDb, clerk};

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
    /// A year of readings of one series, for the year of daily points.
    year_readings: i64,
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
                year_readings: 8_760,
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
                year_readings: 525_600,
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
                year_readings: 3_153_600,
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

/// The two poolers the ingest and `latest` figures are measured through, by the variable that
/// holds each one's base URL, with the suffix of their figures' names: the tests' one (DISCARD
/// ALL after every transaction: nothing survives on a server connection) and one like Neon's
/// (no reset query: PL/pgSQL's plans survive).
const PROFILES: [(&str, &str); 2] = [("", "TEST_POOLED_BASE"), ("_neon", "TEST_NEON_POOLED_BASE")];

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

/// The durations of repeated runs of one thing; the figure is their median.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    /// Runs `work`, keeps how long it took, and hands back what it returned.
    async fn time<T>(&mut self, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = work.await;
        self.0.push(started.elapsed());
        output
    }

    /// A duration measured elsewhere (a process's start, seen by the runtime API).
    fn add(&mut self, duration: Duration) {
        self.0.push(duration);
    }

    fn median(mut self) -> Duration {
        self.0.sort();
        self.0[self.0.len() / 2]
    }
}

/// A development session token for `user_bench`, valid for an hour (the runs outlast 60 s).
fn session_token() -> String {
    let mut claims = clerk::claims("user_bench");
    claims["exp"] = json!(clerk::now() + 3600);
    clerk::sign(&claims, &clerk::dev_signing_key(), Some("dev"))
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

    // `--only ingest|series|alerts|lifecycle|notify|process`: one area (a quicker look at what one change did).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    let runs = |area: &str| only.is_none_or(|only| only == area);
    if runs("ingest") {
        ingest::figures(&sizes, &mut report).await;
    }
    if runs("series") {
        series::figures(&sizes, &mut report).await;
    }
    if runs("alerts") {
        alerts::figures(&sizes, &mut report).await;
    }
    if runs("lifecycle") {
        lifecycle::figures(&sizes, &mut report).await;
    }
    if runs("notify") {
        notify::figures(&sizes, &mut report).await;
    }
    if runs("process") {
        process::figures(&sizes, &mut report).await;
    }

    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).expect("create target/bench");
    // The smoke run of scripts/test, or a run of one area, must not overwrite a real run's results.
    let path = out.join(match (scale, only) {
        (Scale::Tiny, _) => "results-tiny.json".to_owned(),
        (_, Some(area)) => format!("results-{area}.json"),
        (_, None) => "results.json".to_owned(),
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

/// `n` readings of one metric for `device`, 10 s apart from `start`, generated in the server
/// (their months' partitions made first), with the hourly aggregates and the device's list of
/// metrics as ingest would have kept them.
async fn fill(test: &TestDb, device: uuid::Uuid, metric: &str, n: i64, start: &str) {
    fill_every(test, device, metric, n, start, 10).await;
}

/// The same, `every` seconds apart.
async fn fill_every(
    test: &TestDb,
    device: uuid::Uuid,
    metric: &str,
    n: i64,
    start: &str,
    every: i64,
) {
    let every = format!("{every} seconds");
    test.direct
        .execute(
            "SELECT create_reading_partitions($1::text::timestamptz,
                                              $1::text::timestamptz + $2::int8 * $3::text::interval)",
            &[&start, &n, &every],
        )
        .await
        .expect("partitions");
    test.direct
        .execute(
            "INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
             SELECT $1, $2, round((g % 1000)::numeric / 10, 1),
                    $4::text::timestamptz + g * $5::text::interval
             FROM generate_series(0, $3::int8 - 1) g",
            &[&device, &metric, &n, &start, &every],
        )
        .await
        .expect("generate readings");
    test.direct
        .execute(
            "UPDATE devices SET metrics = metrics || $2::text WHERE id = $1 AND NOT $2 = ANY (metrics)",
            &[&device, &metric],
        )
        .await
        .expect("the device's metrics");
    test.aggregate(Some((device, metric))).await;
}

async fn analyze(test: &TestDb) {
    test.direct
        .batch_execute("VACUUM ANALYZE sensor_readings, reading_hours, reading_days")
        .await
        .expect("analyze");
}
