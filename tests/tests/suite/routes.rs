//! Every function answers unknown paths with 404 and known paths with the wrong method with 405,
//! as JSON errors, from real-shaped API Gateway events.

use tests::{Event, Functions, TestDb, assert_error};

#[tokio::test]
async fn http_functions_route_paths_and_methods() {
    let test = TestDb::new().await;
    let config = test.config(&[]);
    let Functions {
        ingest,
        devices,
        rollups,
        webhook,
    } = Functions::new(&config);

    let response = ingest::handle(
        &ingest,
        Event::load("ingest").at("GET", "/v1/ingest").request(),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", None);
    assert_eq!(response.headers()["allow"], "POST");
    let response = ingest::handle(
        &ingest,
        Event::load("ingest").at("POST", "/v1/nothing").request(),
    )
    .await;
    assert_error(&response, 404, "not_found", None);

    let response = devices::handle(
        &devices,
        Event::load("devices-list")
            .at("PUT", "/v1/devices")
            .request(),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", None);
    assert_eq!(response.headers()["allow"], "GET, POST");
    let response = devices::handle(
        &devices,
        Event::load("devices-list")
            .at("POST", "/v1/alerts")
            .request(),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", None);
    let response = devices::handle(
        &devices,
        Event::load("devices-list")
            .at("GET", "/v1/devices/x/y/z/w")
            .request(),
    )
    .await;
    assert_error(&response, 404, "not_found", None);

    let response = rollups::handle(
        &rollups,
        Event::load("rollups")
            .at("DELETE", "/v1/devices/abc/latest")
            .request(),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", None);

    let response = clerk_webhook::handle(
        &webhook,
        Event::load("ingest").at("GET", "/webhooks/clerk").request(),
    )
    .await;
    assert_error(&response, 405, "method_not_allowed", None);
}

#[tokio::test]
async fn the_webhook_function_does_not_start_without_its_secret() {
    let test = TestDb::new().await;
    let error = clerk_webhook::State::new(&test.config(&[("CLERK_WEBHOOK_SECRET", "")]))
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        "missing required configuration variable CLERK_WEBHOOK_SECRET"
    );
}

#[tokio::test]
async fn alert_eval_accepts_the_scheduled_event_and_any_json() {
    let test = TestDb::new().await;
    let state = alert_eval::State::new(&test.config(&[])).unwrap();
    let event = tests::Event::load("alert-eval-schedule").json().clone();
    let summary = alert_eval::handle(&state, event).await.unwrap();
    assert_eq!(summary.rules_evaluated, 0);
    let summary = alert_eval::handle(&state, serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(summary.fired, 0);
}
