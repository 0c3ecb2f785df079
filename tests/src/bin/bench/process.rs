//! The release binaries as processes, under a fake Lambda Runtime API: cold start beside a
//! hello-world function, first invocation, peak memory, binary size.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::runtime_api::RuntimeApi;
use tests::{Event, TestDb, clerk};

use crate::{Report, Samples, Sizes, ms, profile_dir};

/// What each function binary gets: its events, and the configuration.
struct Function {
    name: &'static str,
    event: String,
}

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    eprintln!(
        "bench: processes ({} cold starts each, {} invocations for memory)",
        sizes.cold_starts, sizes.invocations
    );
    let dir = profile_dir();
    let release = dir.ends_with("release");
    let test = TestDb::new().await;
    let (device, key) = test.device("user_bench").await;
    // Started as in Lambda (`AWS_LAMBDA_FUNCTION_NAME` set), the functions refuse the public
    // development key: the tests' other key pair stands in for a Clerk instance's.
    let mut claims = clerk::claims("user_bench");
    claims["exp"] = serde_json::json!(clerk::now() + 3600);
    let token = clerk::sign(&claims, &clerk::other_signing_key(), Some("bench"));
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
        ("CLERK_JWT_KEY".to_owned(), clerk::other_public_key()),
        (
            "CLERK_WEBHOOK_SECRET".to_owned(),
            clerk::WEBHOOK_SECRET.to_owned(),
        ),
        // A thousand invocations of one device's ingest: past any burst. What the rate limit
        // costs is in the ingest figures; here it would only answer 429.
        ("INGEST_RATE_PER_DEVICE".to_owned(), "0".to_owned()),
    ];

    let hello = dir.join("hello-lambda");
    let mut floor = Samples::default();
    for _ in 0..sizes.cold_starts {
        floor.add(cold_start(&hello, "hello-lambda", &env).await);
    }
    let floor = floor.median();
    for function in &functions {
        let binary = dir.join(function.name);
        let mut starts = Samples::default();
        for _ in 0..sizes.cold_starts {
            starts.add(cold_start(&binary, function.name, &env).await);
        }
        let start = starts.median();
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
    api.command(binary, name)
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
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
