//! The rollups function: rollups checked against a recomputation, bucket edges, pagination,
//! latest values, plans on a large table, and what it refuses.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rollups::Bucket;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tests::Expect::{BadParam, Invalid, NotFound, Unauthorized, WrongMethod};
use tests::{Event, Functions, TestDb, body_json, check_refusals};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

const OWNER: &str = "user_owner";

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `%2B` for `+`: query strings decode `+` as a space.
fn q(t: DateTime<Utc>) -> String {
    rfc(t).replace('+', "%2B")
}

struct Fixture {
    test: TestDb,
    functions: Functions,
    device: Uuid,
    key: String,
}

async fn fixture() -> Fixture {
    let test = TestDb::new().await;
    let (device, key) = test.device(OWNER).await;
    let functions = Functions::new(&test.config(&[]));
    Fixture {
        test,
        functions,
        device,
        key,
    }
}

impl Fixture {
    async fn get(&self, view: &str, query: &str) -> (u16, Value) {
        self.get_as(OWNER, self.device, view, query).await
    }

    async fn get_as(&self, user: &str, device: Uuid, view: &str, query: &str) -> (u16, Value) {
        let event = Event::load("rollups")
            .as_user(user)
            .at("GET", &format!("/v1/devices/{device}/{view}"))
            .query(query);
        self.functions.call(event).await
    }

    /// Through the real ingest handler, in batches of up to 1000.
    async fn ingest(&self, readings: &[(String, Decimal, DateTime<Utc>)]) {
        let state = ingest::State::new(&self.test.config(&[])).unwrap();
        for chunk in readings.chunks(1000) {
            let body = json!({"readings": chunk.iter().map(|(m, v, at)| json!({
                "metric": m, "value": v.to_string(), "recorded_at": rfc(*at)
            })).collect::<Vec<_>>()});
            let event = Event::load("ingest")
                .header("authorization", &format!("Bearer {}", self.key))
                .json_body(&body);
            let response = ingest::handle(&state, event.request()).await;
            assert_eq!(response.status(), 200, "{}", body_json(&response));
        }
    }
}

/// The contract's rollup of `readings` (already deduplicated) recomputed plainly in Rust.
struct Expected {
    count: i64,
    min: Decimal,
    max: Decimal,
    sum: Decimal,
    first: Decimal,
    last: Decimal,
}

fn recompute(
    readings: &BTreeMap<(String, DateTime<Utc>), Decimal>,
    metric: &str,
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> BTreeMap<DateTime<Utc>, Expected> {
    let mut out: BTreeMap<DateTime<Utc>, Expected> = BTreeMap::new();
    // BTreeMap order is (metric, time): each bucket sees its readings oldest first.
    for ((m, at), value) in readings {
        if m != metric || *at < from || *at >= to {
            continue;
        }
        let e = out.entry(bucket.start_of(*at)).or_insert(Expected {
            count: 0,
            min: *value,
            max: *value,
            sum: Decimal::ZERO,
            first: *value,
            last: *value,
        });
        e.count += 1;
        e.min = e.min.min(*value);
        e.max = e.max.max(*value);
        e.sum += *value;
        e.last = *value;
    }
    out
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string, got {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn rollups_equal_a_recomputation_on_random_data() {
    let f = fixture().await;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = t("2026-11-20T00:00:00Z");
    let metrics = ["temperature", "humidity", "co2"];
    let mut stored: BTreeMap<(String, DateTime<Utc>), Decimal> = BTreeMap::new();
    let mut sent = Vec::new();
    while stored.len() < 1500 {
        let metric = metrics[rng.usize(..metrics.len())].to_owned();
        // Half the readings sit on or right next to bucket edges.
        let at = match rng.u8(..4) {
            0 => start + Duration::minutes(rng.i64(0..3 * 1440)),
            1 => start + Duration::minutes(rng.i64(0..3 * 1440)) - Duration::microseconds(1),
            _ => start + Duration::microseconds(rng.i64(0..3 * 86_400_000_000)),
        };
        let value = Decimal::new(rng.i64(-10_000_000..10_000_000), rng.u32(0..7));
        if let std::collections::btree_map::Entry::Vacant(slot) = stored.entry((metric.clone(), at))
        {
            slot.insert(value);
            sent.push((metric, value, at));
        }
    }
    // Half first, folded into days by a pass; then late readings (older and newer than what is
    // there, into hours and days that already have aggregates) in two parts around a second
    // pass, and a random third again: duplicates change nothing. Checked with days partly
    // folded (some of their hours changed since), and again once all are folded.
    let (early, late): (Vec<_>, Vec<_>) = sent.iter().cloned().partition(|_| rng.bool());
    let (late, later): (Vec<_>, Vec<_>) = late.into_iter().partition(|_| rng.bool());
    f.ingest(&early).await;
    assert!(
        f.test.pass().await.days_folded > 0,
        "seed {seed}: days folded"
    );
    f.ingest(&late).await;
    let so_far: BTreeMap<_, _> = (early.iter().chain(&late))
        .map(|(m, v, at)| ((m.clone(), *at), *v))
        .collect();
    check_random_rollups(&f, &so_far, &mut rng, &format!("seed {seed}, late")).await;
    f.test.pass().await;
    f.ingest(&later).await;
    let again: Vec<_> = sent.iter().filter(|_| rng.u8(..3) == 0).cloned().collect();
    f.ingest(&again).await;
    check_random_rollups(&f, &stored, &mut rng, &format!("seed {seed}, later")).await;
    f.test.pass().await;
    let unfolded: i64 = f
        .test
        .direct
        .query_one("SELECT count(*) FROM reading_hours WHERE NOT folded", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unfolded, 0, "seed {seed}: every past day folded");
    check_random_rollups(&f, &stored, &mut rng, &format!("seed {seed}, folded")).await;
}

/// 30 rollups of random metrics, buckets (every other one a day or a week) and ranges around
/// the random data's three days, each equal to the recomputation from `stored`.
async fn check_random_rollups(
    f: &Fixture,
    stored: &BTreeMap<(String, DateTime<Utc>), Decimal>,
    rng: &mut fastrand::Rng,
    stage: &str,
) {
    let start = t("2026-11-20T00:00:00Z");
    let metrics = ["temperature", "humidity", "co2"];
    for i in 0..30 {
        let metric = metrics[rng.usize(..metrics.len())];
        let bucket = if i % 2 == 0 {
            Bucket::ALL[rng.usize(..Bucket::ALL.len())]
        } else {
            [Bucket::D1, Bucket::W1][rng.usize(..2)]
        };
        let from = start + Duration::seconds(rng.i64(-3600..2 * 86_400));
        let to = from + Duration::seconds(rng.i64(1..86_400 * 3));
        let (status, body) = f
            .get(
                "rollups",
                &format!(
                    "metric={metric}&bucket={}&from={}&to={}",
                    bucket.name(),
                    q(from),
                    q(to)
                ),
            )
            .await;
        assert_eq!(status, 200, "{stage}: {body}");
        let expected = recompute(stored, metric, bucket, from, to);
        let points = body["points"].as_array().unwrap();
        let context = format!("{stage}, {metric} {} [{from}, {to})", bucket.name());
        assert_eq!(
            points.len(),
            expected.len(),
            "{context}: empty buckets are left out, others present"
        );
        for (point, (start, e)) in points.iter().zip(&expected) {
            assert_eq!(point["t"], rfc(*start), "{context}");
            assert_eq!(point["count"], e.count, "{context}");
            assert_eq!(dec(&point["min"]), e.min, "{context}");
            assert_eq!(dec(&point["max"]), e.max, "{context}");
            assert_eq!(dec(&point["sum"]), e.sum, "{context}");
            assert_eq!(dec(&point["first"]), e.first, "{context}");
            assert_eq!(dec(&point["last"]), e.last, "{context}");
            // avg is the exact mean rounded to 12 places: |avg·n − sum| ≤ n · 0.5e-12.
            let avg = dec(&point["avg"]);
            assert!(avg.scale() <= 12, "{context}: {avg}");
            let error = (avg * Decimal::from(e.count) - e.sum).abs();
            assert!(
                error <= Decimal::from(e.count) * Decimal::new(5, 13),
                "{context}: avg {avg}"
            );
        }
        assert_eq!(body["metric"], metric);
        assert_eq!(body["bucket"], bucket.name());
        assert_eq!(body["device_id"], f.device.to_string());
    }
}

/// Ingests of one device take turns on its row, and each adds exactly what it stored to the
/// hour's aggregate: 8 clients, each with its own connection, sending into the same hour at once
/// (some readings twice) add up to the readings stored.
#[tokio::test]
async fn concurrent_batches_into_one_hour_add_up_in_its_aggregate() {
    let f = fixture().await;
    let start = t("2026-11-25T10:00:00Z");
    let clients = (0..8i64).map(|c| {
        let state = ingest::State::new(&f.test.config(&[("INGEST_RATE_PER_DEVICE", "0")])).unwrap();
        let key = f.key.clone();
        async move {
            for round in 0..10i64 {
                // Each client's readings are its own; rounds 5.. repeat round 0..5's (duplicates).
                let k = round % 5;
                let readings: Vec<Value> = (0..20i64)
                    .map(|i| {
                        let n = (k * 20 + i) * 8 + c;
                        json!({"metric": "t", "value": Decimal::new(n * 7 - 300, 1).to_string(),
                               "recorded_at": rfc(start + Duration::seconds(n))})
                    })
                    .collect();
                let event = Event::load("ingest")
                    .header("authorization", &format!("Bearer {key}"))
                    .json_body(&json!({ "readings": readings }));
                let response = ingest::handle(&state, event.request()).await;
                assert_eq!(response.status(), 200, "{}", body_json(&response));
            }
        }
    });
    futures::future::join_all(clients).await;

    let n = 5 * 20 * 8;
    let values: Vec<Decimal> = (0..n).map(|n| Decimal::new(n * 7 - 300, 1)).collect();
    let (status, body) = f
        .get(
            "rollups",
            &format!(
                "metric=t&bucket=1h&from={}&to={}",
                q(start),
                q(start + Duration::hours(1))
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let point = &body["points"][0];
    assert_eq!(point["count"], n);
    assert_eq!(dec(&point["sum"]), values.iter().sum::<Decimal>());
    assert_eq!(dec(&point["min"]), values[0]);
    assert_eq!(dec(&point["max"]), values[values.len() - 1]);
    assert_eq!(dec(&point["first"]), values[0]);
    assert_eq!(dec(&point["last"]), values[values.len() - 1]);
    let stored: i64 = f
        .test
        .direct
        .query_one("SELECT count FROM reading_hours", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, n);
}

/// Late readings into a past day while passes fold it, over and over: whatever the order in
/// which an ingest and a fold meet on an hour, the day's rollup is the readings' (before the
/// last fold, from its hours or its row; after it, from its row).
#[tokio::test]
async fn late_readings_while_passes_fold_their_day_add_up() {
    let f = fixture().await;
    let day = t("2026-11-24T00:00:00Z");
    let (clients, rounds, per_batch) = (4i64, 12i64, 25i64);
    let sending = (0..clients).map(|c| {
        let state = ingest::State::new(&f.test.config(&[("INGEST_RATE_PER_DEVICE", "0")])).unwrap();
        let key = f.key.clone();
        async move {
            for round in 0..rounds {
                // Every batch touches hours all over the day, some of them already folded.
                let readings: Vec<Value> = (0..per_batch)
                    .map(|i| {
                        let n = (round * per_batch + i) * clients + c;
                        json!({"metric": "t", "value": Decimal::new(n * 3 - 500, 2).to_string(),
                               "recorded_at": rfc(day + Duration::seconds(n * 71))})
                    })
                    .collect();
                let event = Event::load("ingest")
                    .header("authorization", &format!("Bearer {key}"))
                    .json_body(&json!({ "readings": readings }));
                let response = ingest::handle(&state, event.request()).await;
                assert_eq!(response.status(), 200, "{}", body_json(&response));
            }
        }
    });
    let done = std::sync::atomic::AtomicBool::new(false);
    let folding = async {
        let mut folded = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            folded += f.test.pass().await.days_folded;
        }
        folded
    };
    let sent = async {
        futures::future::join_all(sending).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (folded, ()) = futures::join!(folding, sent);
    assert!(folded > 0, "passes folded the day while readings arrived");

    let n = clients * rounds * per_batch;
    let values: Vec<Decimal> = (0..n).map(|n| Decimal::new(n * 3 - 500, 2)).collect();
    let expected = json!([{
        "t": rfc(day), "count": n,
        "min": values[0].to_string(), "max": values[values.len() - 1].to_string(),
        "avg": (values.iter().sum::<Decimal>() / Decimal::from(n)).normalize().to_string(),
        "sum": values.iter().sum::<Decimal>().to_string(),
        "first": values[0].to_string(), "last": values[values.len() - 1].to_string(),
    }]);
    let query = format!(
        "metric=t&bucket=1d&from={}&to={}",
        q(day),
        q(day + Duration::days(1))
    );
    let (status, body) = f.get("rollups", &query).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["points"], expected, "before the last fold");
    f.test.pass().await;
    let (_, body) = f.get("rollups", &query).await;
    assert_eq!(body["points"], expected, "after it");
    let row = f
        .test
        .direct
        .query_one(
            "SELECT count, (SELECT count(*) FROM reading_hours WHERE NOT folded)
             FROM reading_days",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (n, 0));
}

#[tokio::test]
async fn bucket_edges_from_is_inclusive_and_to_exclusive() {
    let f = fixture().await;
    let r = |at: &str, v: i64| ("t".to_owned(), Decimal::from(v), t(at));
    f.ingest(&[
        r("2026-11-26T09:59:59.999999Z", 1),
        r("2026-11-26T10:00:00Z", 2),
        r("2026-11-26T10:59:59.999999Z", 3),
        r("2026-11-26T11:00:00Z", 4),
        r("2026-11-26T12:00:00Z", 5),
    ])
    .await;
    let (_, body) = f
        .get(
            "rollups",
            "metric=t&bucket=1h&from=2026-11-26T10:00:00Z&to=2026-11-26T12:00:00Z",
        )
        .await;
    assert_eq!(
        body["points"],
        json!([
            {"t": "2026-11-26T10:00:00Z", "count": 2, "min": "2", "max": "3", "avg": "2.5", "sum": "5", "first": "2", "last": "3"},
            {"t": "2026-11-26T11:00:00Z", "count": 1, "min": "4", "max": "4", "avg": "4", "sum": "4", "first": "4", "last": "4"}
        ])
    );
    assert_eq!(body["from"], "2026-11-26T10:00:00Z");
    assert_eq!(body["to"], "2026-11-26T12:00:00Z");

    // A range starting mid-bucket: the first bucket is partial, labelled by its aligned start.
    let (_, body) = f
        .get(
            "rollups",
            "metric=t&bucket=1d&from=2026-11-26T10:00:00Z&to=2026-11-26T11:00:00.000001Z",
        )
        .await;
    assert_eq!(body["points"][0]["t"], "2026-11-26T00:00:00Z");
    assert_eq!(body["points"][0]["count"], 3);
    let (_, body) = f
        .get(
            "rollups",
            "metric=t&bucket=1h&from=2026-11-26T13:00:00Z&to=2026-11-26T14:00:00Z",
        )
        .await;
    assert_eq!(body["points"], json!([]));
}

#[tokio::test]
async fn readings_are_paged_oldest_first_without_gaps_or_repeats() {
    let f = fixture().await;
    let start = t("2026-11-25T00:00:00Z");
    // 2500 readings over two metrics, many sharing a timestamp (the tie is broken by metric).
    let readings: Vec<_> = (0..2500)
        .map(|i| {
            let metric = if i % 2 == 0 { "a" } else { "b" };
            (
                metric.to_owned(),
                Decimal::from(i),
                start + Duration::seconds(i / 2),
            )
        })
        .collect();
    f.ingest(&readings).await;
    let range = format!("from={}&to={}", q(start), q(start + Duration::days(1)));

    for (filter, expected_total) in [("", 2500), ("&metric=b", 1250)] {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = f
                .get("readings", &format!("limit=1000&{range}{filter}{cursor}"))
                .await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().unwrap();
            sizes.push(items.len());
            seen.extend(items.iter().map(|r| {
                (
                    r["recorded_at"].as_str().unwrap().to_owned(),
                    r["metric"].as_str().unwrap().to_owned(),
                )
            }));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), expected_total, "{filter}: {sizes:?}");
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "{filter}: no repeats");
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, seen, "{filter}: oldest first, ties by metric");
        if filter.is_empty() {
            assert_eq!(sizes, [1000, 1000, 500]);
        }
    }
    let (_, page) = f
        .get("readings", &format!("limit=2&metric=a&{range}"))
        .await;
    assert_eq!(
        page["items"],
        json!([
            {"metric": "a", "value": "0", "recorded_at": "2026-11-25T00:00:00Z"},
            {"metric": "a", "value": "2", "recorded_at": "2026-11-25T00:00:01Z"}
        ])
    );
}

/// A readings request answered as CSV: the status, the headers that matter and the body.
async fn csv(
    f: &Fixture,
    path_and_query: &str,
    accept: Option<&str>,
) -> (u16, String, Option<String>, String) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut event = Event::load("rollups")
        .as_user(OWNER)
        .at("GET", path)
        .query(query);
    if let Some(accept) = accept {
        event = event.header("accept", accept);
    }
    let response = f.functions.handle(event.request()).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("vary").as_deref(), Some("Accept"));
    let body = match response.body() {
        lambda_http::Body::Text(text) => text.clone(),
        other => panic!("a text body, not {other:?}"),
    };
    (
        response.status().as_u16(),
        header("content-type").unwrap_or_default(),
        header("link"),
        body,
    )
}

#[tokio::test]
async fn readings_as_csv_equal_the_json_items_and_link_pages_cover_each_once() {
    let f = fixture().await;
    let start = t("2026-11-25T00:00:00Z");
    let readings: Vec<_> = (0..2500)
        .map(|i| {
            let metric = if i % 2 == 0 { "a" } else { "b.c" };
            (
                metric.to_owned(),
                Decimal::new(i * 7 - 3000, 2),
                start + Duration::milliseconds(i / 2 * 1500),
            )
        })
        .collect();
    f.ingest(&readings).await;
    let range = format!("from={}&to={}", q(start), q(start + Duration::days(1)));

    // Every reading as JSON, in one walk of pages.
    let mut json_rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = f
            .get("readings", &format!("limit=1000&{range}{cursor}"))
            .await;
        json_rows.extend(page["items"].as_array().unwrap().iter().map(|r| {
            format!(
                "{},{},{}",
                r["metric"].as_str().unwrap(),
                r["value"].as_str().unwrap(),
                r["recorded_at"].as_str().unwrap()
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(json_rows.len(), 2500);

    // The same as CSV pages of 1000, asked for by Accept and then followed by Link alone.
    let mut csv_rows = Vec::new();
    let mut next = Some(format!(
        "/v1/devices/{}/readings?limit=1000&{range}",
        f.device
    ));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let accept = (pages == 0).then_some("text/csv");
        let (status, content_type, link, body) = csv(&f, &url, accept).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/csv; charset=utf-8");
        assert!(body.ends_with("\r\n"), "CRLF line ends");
        let mut lines = body.lines();
        assert_eq!(lines.next(), Some("metric,value,recorded_at"));
        csv_rows.extend(lines.map(str::to_owned));
        pages += 1;
        next = link.map(|link| {
            let (url, rel) = link.split_once("; ").unwrap();
            assert_eq!(rel, "rel=\"next\"");
            url.trim_start_matches('<').trim_end_matches('>').to_owned()
        });
    }
    assert_eq!(pages, 3);
    assert_eq!(
        csv_rows, json_rows,
        "the same readings, once each, in the same order"
    );

    // One metric; the format parameter wins over Accept; JSON is preferred unless CSV is.
    let url = format!(
        "/v1/devices/{}/readings?format=csv&metric=b.c&{range}",
        f.device
    );
    let (_, content_type, link, body) = csv(&f, &url, Some("application/json")).await;
    assert!(content_type.starts_with("text/csv"));
    let lines: Vec<&str> = body.lines().skip(1).collect();
    assert_eq!(lines.len(), 1000, "a CSV page holds 1000 by default");
    assert!(lines.iter().all(|l| l.starts_with("b.c,")));
    let link = link.expect("1250 readings: a next page");
    assert!(
        link.contains("metric=b.c&") && link.contains("&format=csv&cursor="),
        "{link}"
    );
    for (accept, is_csv) in [
        ("text/csv", true),
        ("text/csv;q=0.9, application/json", false),
        ("application/json;q=0.5, text/csv", true),
        ("application/json, text/csv", false),
        ("text/csv, application/json", true),
        ("text/csv;q=0", false),
        ("*/*", false),
    ] {
        let url = format!("/v1/devices/{}/readings?limit=1&{range}", f.device);
        let (_, content_type, _, _) = csv(&f, &url, Some(accept)).await;
        assert_eq!(content_type.starts_with("text/csv"), is_csv, "{accept}");
    }
    // Nothing in range: the header line alone, no Link.
    let url = format!(
        "/v1/devices/{}/readings?format=csv&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        f.device
    );
    let (status, _, link, body) = csv(&f, &url, None).await;
    assert_eq!(
        (status, link, body.as_str()),
        (200, None, "metric,value,recorded_at\r\n")
    );
}

#[tokio::test]
async fn latest_has_the_newest_reading_of_each_metric() {
    let f = fixture().await;
    let (status, body) = f.get("latest", "").await;
    assert_eq!((status, body), (200, json!({"metrics": []})));
    let r = |m: &str, at: &str, v: &str| (m.to_owned(), v.parse().unwrap(), t(at));
    f.ingest(&[
        r("temperature", "2026-11-26T10:00:00Z", "21.5"),
        r("temperature", "2026-11-26T10:05:00Z", "22.25"),
        r("humidity", "2026-11-26T09:00:00Z", "40.125"),
        r("co2", "2026-11-26T10:01:00Z", "415"),
        r("pressure", "2026-11-26T05:59:59Z", "1013"),
    ])
    .await;
    // Heard from in the newest hour (10:00), the hour before and earlier: one walk each for the
    // first two, a probe for the last (migration V11). Late readings, older than what is there: they do not become "latest".
    f.ingest(&[
        r("temperature", "2026-11-26T08:00:00Z", "99"),
        r("co2", "2026-11-26T10:00:59Z", "1"),
    ])
    .await;
    let (_, body) = f.get("latest", "").await;
    assert_eq!(
        body,
        json!({"metrics": [
            {"metric": "co2", "value": "415", "recorded_at": "2026-11-26T10:01:00Z"},
            {"metric": "humidity", "value": "40.125", "recorded_at": "2026-11-26T09:00:00Z"},
            {"metric": "pressure", "value": "1013", "recorded_at": "2026-11-26T05:59:59Z"},
            {"metric": "temperature", "value": "22.25", "recorded_at": "2026-11-26T10:05:00Z"}
        ]})
    );
}

#[tokio::test]
async fn other_users_and_unknown_devices_are_not_found() {
    let f = fixture().await;
    f.ingest(&[("t".into(), Decimal::ONE, t("2026-11-26T10:00:00Z"))])
        .await;
    let functions = &f.functions;
    let get = |user: &str, device: &str, view: &str| {
        let path = format!("/v1/devices/{device}/{view}");
        Event::load("rollups")
            .as_user(user)
            .at("GET", &path)
            .query("metric=t")
    };
    let (device, unknown) = (f.device.to_string(), Uuid::new_v4().to_string());
    let mut cases = Vec::new();
    for view in ["rollups", "readings", "latest"] {
        cases.push((get("user_other", &device, view), NotFound));
        cases.push((get(OWNER, &unknown, view), NotFound));
        cases.push((get(OWNER, "not-a-uuid", view), NotFound));
        cases.push((
            get(OWNER, &device, view).without_header("authorization"),
            Unauthorized,
        ));
    }
    check_refusals(functions, cases).await;
}

#[tokio::test]
async fn bad_parameters_are_refused() {
    let f = fixture().await;
    // A cursor of the right shape whose time (about 10,000 BC) Postgres cannot hold.
    let mut bytes = (-377_000_000_000_000_000i64).to_be_bytes().to_vec();
    bytes.extend_from_slice(b"t");
    let ancient = format!("cursor={}", URL_SAFE_NO_PAD.encode(bytes));
    // A cursor whose metric holds NUL, which Postgres cannot take (it was a 500).
    let mut bytes = 1_795_687_200_000_000i64.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"t\0");
    let nul_metric = format!("cursor={}", URL_SAFE_NO_PAD.encode(bytes));
    let functions = &f.functions;
    let get = |view: &str, query: &str| {
        let path = format!("/v1/devices/{}/{view}", f.device);
        Event::load("rollups")
            .as_user(OWNER)
            .at("GET", &path)
            .query(query)
    };
    let rollups = |query: &str| get("rollups", query);
    let readings = |query: &str| get("readings", query);
    #[rustfmt::skip]
    let cases = [
        (rollups("bucket=1h"), Invalid("metric")),
        (rollups("metric=a%20b"), Invalid("metric")),
        (rollups("metric=t&bucket=2h"), Invalid("bucket")),
        (rollups("metric=t&from=2026-11-26T10:00:00Z&to=2026-11-26T10:00:00Z"), Invalid("from")),
        (rollups("metric=t&from=2026-11-27T00:00:00Z&to=2026-11-26T00:00:00Z"), Invalid("from")),
        (rollups("metric=t&bucket=1m&from=2026-11-01T00:00:00Z&to=2026-11-08T00:00:00Z"), Invalid("bucket")),
        (rollups("metric=t&from=yesterday"), BadParam("from")),
        (rollups("metric=t&to=2026-11-26T10:00:00"), BadParam("to")),
        (readings("limit=ten"), BadParam("limit")),
        (readings("limit=1001"), Invalid("limit")),
        (readings("limit=0"), Invalid("limit")),
        (readings("format=xml"), Invalid("format")),
        (readings("format=csv&limit=10001"), Invalid("limit")),
        (readings("cursor=%%%"), BadParam("cursor")),
        (readings(&ancient), BadParam("cursor")),
        (readings(&nul_metric), BadParam("cursor")),
        // Unix milliseconds reach past what RFC 3339 (and, before 4713 BC, Postgres) can hold.
        (readings("from=-377000000000000"), Invalid("from")),
        (readings("from=0&to=253402300800000"), Invalid("to")),
        (rollups("metric=t&bucket=1d&from=-62167219200001&to=0"), Invalid("from")),
        (readings("from=2026-13-01T00:00:00Z"), BadParam("from")),
        (get("latest", "").at("POST", &format!("/v1/devices/{}/latest", f.device)), WrongMethod),
    ];
    check_refusals(functions, cases).await;
    // 10,000 one-minute buckets is the limit, not past it; a `+` offset that arrived as a space
    // is forgiven.
    let (status, _) = f
        .get(
            "rollups",
            "metric=t&bucket=1m&from=2026-11-01T00:00:00Z&to=2026-11-07T22:40:00Z",
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = f
        .get(
            "rollups",
            "metric=t&from=2026-11-26T10:00:00+01:00&to=1795687200000",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "2026-11-26T09:00:00Z");
    assert_eq!(body["to"], "2026-11-26T10:00:00Z");
}

/// The plan of a statement with these parameters, one line per node.
async fn plan(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> String {
    db.query_typed(&format!("EXPLAIN (COSTS OFF) {sql}"), params)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn rollups_and_latest_use_the_index_on_a_large_table() {
    let f = fixture().await;
    // 1.2M readings: 12 devices (ours among them) × 10 metrics × 10,000 readings.
    f.test
        .direct
        .batch_execute(&format!(
            r#"INSERT INTO devices (id, owner_id, name, device_key_hash)
               SELECT gen_random_uuid(), '{OWNER}', 'other ' || g, sha256(g::text::bytea)
               FROM generate_series(1, 11) g;
               INSERT INTO sensor_readings (device_id, metric, value, recorded_at)
               SELECT d.id, 'm' || m, g % 1000, timestamptz '2026-11-01' + g * interval '10 seconds'
               FROM devices d, generate_series(1, 10) m, generate_series(1, 10000) g;
               UPDATE devices SET metrics = ARRAY(SELECT 'm' || m FROM generate_series(1, 10) m);
               ANALYZE sensor_readings;"#
        ))
        .await
        .unwrap();
    assert!(f.test.count("sensor_readings").await >= 1_000_000);
    f.test.aggregate(None).await;
    let db = &f.test.direct;
    let (week, metric, hour) = (
        (t("2026-11-01T00:00:00Z"), t("2026-11-08T00:00:00Z")),
        "m3",
        "3600 seconds",
    );
    let rollup_plan = plan(
        db,
        rollups::sql::ROLLUP.text(),
        &[
            (&f.device, Type::UUID),
            (&OWNER, Type::TEXT),
            (&metric, Type::TEXT),
            (&hour, Type::TEXT),
            (&week.0, Type::TIMESTAMPTZ),
            (&week.1, Type::TIMESTAMPTZ),
        ],
    )
    .await;
    let latest_plan = tests::plans_run(
        f.test.direct_url().expose(),
        rollups::sql::LATEST.text(),
        &[&f.device, &OWNER],
    )
    .await;
    // A week of hourly points from the aggregates, the range starting and ending mid-hour: the
    // hours' primary key, and the raw readings only for the partial hours at the ends.
    let half = chrono::TimeDelta::minutes(30);
    let hours_plan = plan(
        db,
        rollups::sql::ROLLUP_FROM_HOURS.text(),
        &[
            (&f.device, Type::UUID),
            (&OWNER, Type::TEXT),
            (&metric, Type::TEXT),
            (&hour, Type::TEXT),
            (&(week.0 + half), Type::TIMESTAMPTZ),
            (&(week.1 + half), Type::TIMESTAMPTZ),
            (&(week.0 + half + half), Type::TIMESTAMPTZ),
            (&week.1, Type::TIMESTAMPTZ),
        ],
    )
    .await;
    assert!(
        hours_plan.contains("using reading_hours_pkey"),
        "{hours_plan}"
    );
    assert!(!hours_plan.contains("Seq Scan"), "{hours_plan}");
    assert!(
        !rollup_plan.contains("Seq Scan on sensor_readings_2026_11"),
        "{rollup_plan}"
    );
    assert!(
        rollup_plan.contains("_pkey on sensor_readings_2026_11"),
        "{rollup_plan}"
    );
    // Only the range's month is read.
    assert!(
        !rollup_plan.contains("sensor_readings_2026_10"),
        "{rollup_plan}"
    );
    // `latest`: every metric reported in the newest hour, so one walk of that hour's
    // aggregates (found by one descent), no probe per metric, no readings at all.
    assert!(
        latest_plan.contains("Index Scan using reading_hours_device_hour"),
        "{latest_plan}"
    );
    assert!(!latest_plan.contains("reading_hours_pkey"), "{latest_plan}");
    assert!(!latest_plan.contains("sensor_readings"), "{latest_plan}");
    // And the answers are right on that table.
    let (_, body) = f.get("latest", "").await;
    assert_eq!(body["metrics"].as_array().unwrap().len(), 10);
    assert_eq!(
        body["metrics"][0],
        json!({"metric": "m1", "value": "0", "recorded_at": "2026-11-02T03:46:40Z"})
    );
}
