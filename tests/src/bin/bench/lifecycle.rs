//! The data's lifecycle: deleting a device with a long history answers at once; the purge that
//! follows, in the scheduled function, and its rate.

use std::time::Instant;

use serde_json::json;
use tests::{Event, TestDb};

use crate::{Report, Sizes, analyze, fill, ms, session_token};

pub async fn figures(sizes: &Sizes, report: &mut Report) {
    let n = sizes.history;
    eprintln!("bench: deleting a device with {n} readings, then purging them");
    let test = TestDb::new().await;
    let config = test.config(&[]);
    let devices = devices::State::new(&config).expect("devices state");
    let token = session_token();
    let delete = |id: uuid::Uuid| {
        Event::load("devices-delete")
            .header("authorization", &format!("Bearer {token}"))
            .at("DELETE", &format!("/v1/devices/{id}"))
            .request()
    };
    // A warm instance: the connection and the user row exist, as for any request.
    let (warm, _) = test.device("user_bench").await;
    assert_eq!(devices::handle(&devices, delete(warm)).await.status(), 204);
    let (device, _) = test.device("user_bench").await;
    fill(&test, device, "temperature", n, "2026-01-01T00:00:00Z").await;
    analyze(&test).await;

    let started = Instant::now();
    let response = devices::handle(&devices, delete(device)).await;
    let answered = started.elapsed();
    assert_eq!(response.status(), 204);
    report.add(
        "delete_device_1m_ms",
        ms(answered),
        "ms",
        None,
        "<= 50 (device of 1M readings)",
        (n >= 1_000_000).then_some(ms(answered) <= 50.0),
    );

    let state = alert_eval::State::new(&config).expect("alert-eval state");
    let started = Instant::now();
    let mut purged = 0;
    while purged < n {
        let summary = alert_eval::handle(&state, json!({})).await.expect("a pass");
        assert!(summary.purged_rows > 0, "a pass purges");
        purged += summary.purged_rows;
    }
    let rate = purged as f64 / started.elapsed().as_secs_f64();
    report.add("purge_rows_per_s", rate, "rows/s", None, "report", None);
}
