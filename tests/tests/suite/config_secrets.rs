//! Configuration from a Secrets Manager secret, through the real SDK against moto: the same
//! `Config::load_from` path a function takes at start-up, with Lambda's AWS variables.

use std::collections::HashMap;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use shared::config::{Config, ConfigError};

/// What Lambda puts in a function's environment, pointed at moto.
fn aws_vars() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "eu-west-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_SESSION_TOKEN", "testing".into()),
        ("AWS_ENDPOINT_URL", tests::env("TEST_MOTO_URL")),
    ]
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    aws_vars()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect()
}

async fn create_secret(value: &str) -> String {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url(tests::env("TEST_MOTO_URL"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .build();
    let client = aws_sdk_secretsmanager::Client::from_conf(config);
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

#[tokio::test]
async fn the_secret_fills_and_overrides_the_environment() {
    let arn = create_secret(
        r#"{"DATABASE_URL":"postgres://app:from-secret@db.example/app?sslmode=require",
            "CLERK_WEBHOOK_SECRET":"whsec_fromsecret","OFFLINE_AFTER_SECONDS":120}"#,
    )
    .await;
    let config = Config::load_from(vars(&[
        ("APP_SECRET_ARN", &arn),
        ("DATABASE_URL", "postgres://from-env/app"),
        ("CLERK_ISSUER", "https://clerk.example.com"),
    ]))
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
    let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:does-not-exist-AbCdEf";
    let error = Config::load_from(vars(&[("APP_SECRET_ARN", arn)]))
        .await
        .unwrap_err();
    assert!(matches!(error, ConfigError::Secret { .. }), "{error:?}");
    assert!(error.to_string().contains("does-not-exist"), "{error}");
}

#[tokio::test]
async fn a_secret_without_a_required_key_names_it() {
    let arn = create_secret(r#"{"CLERK_WEBHOOK_SECRET":"whsec_x"}"#).await;
    let error = Config::load_from(vars(&[("APP_SECRET_ARN", &arn)]))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "missing required configuration variable DATABASE_URL"
    );
}

#[tokio::test]
async fn a_secret_that_is_not_a_json_object_is_refused() {
    let arn = create_secret("postgres://just-a-url").await;
    let error = Config::load_from(vars(&[("APP_SECRET_ARN", &arn)]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a JSON object"), "{error}");
    assert!(
        !error.to_string().contains("just-a-url"),
        "the value is not echoed: {error}"
    );
}

#[tokio::test]
async fn without_aws_credentials_the_secret_cannot_be_read_and_says_why() {
    let mut vars = vars(&[(
        "APP_SECRET_ARN",
        "arn:aws:secretsmanager:eu-west-1:1:secret:x",
    )]);
    vars.remove("AWS_ACCESS_KEY_ID");
    let error = Config::load_from(vars).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "missing required configuration variable AWS_ACCESS_KEY_ID"
    );
}
