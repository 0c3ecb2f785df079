//! Configuration from a Secrets Manager secret, through the real SDK against moto.

use std::collections::HashMap;

use aws_sdk_secretsmanager::config::{Credentials, Region};
use shared::config::{Config, ConfigError};

async fn moto_client() -> aws_sdk_secretsmanager::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(tests::env("TEST_MOTO_URL"))
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&sdk)
}

async fn create_secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let name = format!("iot-telemetry/test-{}", uuid::Uuid::new_v4().simple());
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("moto creates the secret");
    created.arn().expect("an ARN").to_owned()
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_secret_fills_and_overrides_the_environment() {
    let client = moto_client().await;
    let arn = create_secret(
        &client,
        r#"{"DATABASE_URL":"postgres://app:from-secret@db.example/app?sslmode=require",
            "CLERK_WEBHOOK_SECRET":"whsec_fromsecret","OFFLINE_AFTER_SECONDS":120}"#,
    )
    .await;
    let config = Config::load_with(
        vars(&[
            ("APP_SECRET_ARN", &arn),
            ("DATABASE_URL", "postgres://from-env/app"),
            ("CLERK_ISSUER", "https://clerk.example.com"),
        ]),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(
        config.database_url.expose(),
        "postgres://app:from-secret@db.example/app?sslmode=require"
    );
    assert_eq!(
        config.require_clerk_webhook_secret().unwrap().expose(),
        "whsec_fromsecret"
    );
    assert_eq!(config.offline_after.as_secs(), 120);
    assert_eq!(
        config.clerk_issuer.as_deref(),
        Some("https://clerk.example.com")
    );
    assert!(!format!("{config:?}").contains("from-secret"));
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_start_up_error() {
    let client = moto_client().await;
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:does-not-exist-AbCdEf";
    let error = Config::load_with(vars(&[("APP_SECRET_ARN", arn)]), &client)
        .await
        .unwrap_err();
    assert!(matches!(error, ConfigError::Secret { .. }), "{error:?}");
    assert!(error.to_string().contains("does-not-exist"), "{error}");
}

#[tokio::test]
async fn a_secret_without_a_required_key_names_it() {
    let client = moto_client().await;
    let arn = create_secret(&client, r#"{"CLERK_WEBHOOK_SECRET":"whsec_x"}"#).await;
    let error = Config::load_with(vars(&[("APP_SECRET_ARN", &arn)]), &client)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "missing required configuration variable DATABASE_URL"
    );
}

#[tokio::test]
async fn a_secret_that_is_not_a_json_object_is_refused() {
    let client = moto_client().await;
    let arn = create_secret(&client, "postgres://just-a-url").await;
    let error = Config::load_with(vars(&[("APP_SECRET_ARN", &arn)]), &client)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a JSON object"), "{error}");
    assert!(
        !error.to_string().contains("just-a-url"),
        "the value is not echoed: {error}"
    );
}
