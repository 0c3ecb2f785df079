//! Environment (and, when `APP_SECRET_ARN` is set, one Secrets Manager secret) → one typed
//! [`Config`], built once per cold start. Missing values fail here, at start-up, naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A value that must never reach a log line: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to read the value; grep for it to audit where secrets go.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required configuration variable {0}")]
    Missing(&'static str),
    #[error("configuration variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("could not read secret {arn} from Secrets Manager: {reason}")]
    Secret { arn: String, reason: String },
}

/// Everything the functions are configured with (see the configuration table in the README).
#[derive(Debug, Clone)]
pub struct Config {
    /// Pooled URL (Neon `-pooler` host): everything at run time goes through it.
    pub database_url: Secret,
    /// Direct URL, for migrations only.
    pub database_url_direct: Option<Secret>,
    /// A read-only replica (through its own pooler), for the `rollups` function; unset: the
    /// pooled URL.
    pub database_url_read: Option<Secret>,
    pub clerk_jwt_key: Option<Secret>,
    pub clerk_jwks_url: Option<String>,
    pub clerk_issuer: Option<String>,
    pub clerk_authorized_parties: Vec<String>,
    pub clerk_webhook_secret: Option<Secret>,
    pub offline_after: Duration,
    /// Readings older than this many days are refused by ingest and dropped, a month at a time,
    /// by the scheduled function (`RETENTION_DAYS`).
    pub retention_days: i32,
    /// Hourly aggregates older than this many days are deleted (`AGGREGATE_RETENTION_DAYS`;
    /// unset: kept forever). Never less than `retention_days`.
    pub aggregate_retention_days: Option<i32>,
    pub limits: Limits,
    pub notify: Notify,
    /// Running in AWS Lambda itself: no development shortcuts. `AWS_LAMBDA_FUNCTION_NAME` and
    /// `AWS_LAMBDA_LOG_GROUP_NAME` are both set (`cargo lambda watch`, the local emulator, sets
    /// the first but not the second).
    pub in_lambda: bool,
}

pub const DEFAULT_OFFLINE_AFTER_SECONDS: u64 = 300;
pub const DEFAULT_RETENTION_DAYS: i32 = 400;

/// The per-tenant limits (`LIMIT_*`, `INGEST_*`), each enforced by the statement that writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub devices_per_user: i32,
    pub rules_per_device: i32,
    pub metrics_per_device: i32,
    /// Ingest requests per second a device may sustain; 0 turns the rate limit off.
    pub ingest_rate_per_device: f64,
    /// Requests a device may send at once after a quiet spell (the bucket's size).
    pub ingest_burst_per_device: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            devices_per_user: 1_000,
            rules_per_device: 100,
            metrics_per_device: 1_000,
            ingest_rate_per_device: 20.0,
            ingest_burst_per_device: 100.0,
        }
    }
}

/// How alerts reach people (`NOTIFY_*`).
#[derive(Debug, Clone, Default)]
pub struct Notify {
    /// The sender of email notifications (an SES-verified identity); email channels are refused
    /// (`422`) while it is unset.
    pub email_from: Option<String>,
    /// Local development and tests only: lets webhook and Slack targets be `http` and resolve to
    /// loopback and private addresses.
    pub allow_private_targets: bool,
    /// The AWS access SES is called with (the variables Lambda sets), when they are set.
    pub aws: Option<AwsAccess>,
}

/// Region, credentials and an optional endpoint for one AWS service, from the environment.
#[derive(Debug, Clone)]
pub struct AwsAccess {
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub endpoint_url: Option<String>,
}

impl AwsAccess {
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`), the execution role's keys, and the endpoint in
    /// `endpoint_var` or `AWS_ENDPOINT_URL` (a local stand-in such as moto).
    pub fn from_vars(
        vars: &HashMap<String, String>,
        endpoint_var: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            region: non_empty(vars, "AWS_REGION")
                .or_else(|| non_empty(vars, "AWS_DEFAULT_REGION"))
                .ok_or(ConfigError::Missing("AWS_REGION"))?
                .to_owned(),
            access_key_id: non_empty(vars, "AWS_ACCESS_KEY_ID")
                .ok_or(ConfigError::Missing("AWS_ACCESS_KEY_ID"))?
                .to_owned(),
            secret_access_key: non_empty(vars, "AWS_SECRET_ACCESS_KEY")
                .map(Secret::new)
                .ok_or(ConfigError::Missing("AWS_SECRET_ACCESS_KEY"))?,
            session_token: non_empty(vars, "AWS_SESSION_TOKEN").map(Secret::new),
            endpoint_url: non_empty(vars, endpoint_var)
                .or_else(|| non_empty(vars, "AWS_ENDPOINT_URL"))
                .map(str::to_owned),
        })
    }
}

/// Keys a Secrets Manager secret may fill in; anything else in it is ignored.
const KNOWN_KEYS: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_URL_DIRECT",
    "DATABASE_URL_READ",
    "CLERK_JWT_KEY",
    "CLERK_JWKS_URL",
    "CLERK_ISSUER",
    "CLERK_AUTHORIZED_PARTIES",
    "CLERK_WEBHOOK_SECRET",
    "OFFLINE_AFTER_SECONDS",
    "RETENTION_DAYS",
    "AGGREGATE_RETENTION_DAYS",
    "LIMIT_DEVICES_PER_USER",
    "LIMIT_RULES_PER_DEVICE",
    "LIMIT_METRICS_PER_DEVICE",
    "INGEST_RATE_PER_DEVICE",
    "INGEST_BURST_PER_DEVICE",
    "NOTIFY_EMAIL_FROM",
    "NOTIFY_ALLOW_PRIVATE_TARGETS",
];

impl Config {
    /// The process environment, overlaid with the secret at `APP_SECRET_ARN` when that is set.
    pub async fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::vars().collect()).await
    }

    /// Like [`Config::load`], from the given variables (the AWS ones included).
    pub async fn load_from(mut vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        if let Some(arn) = non_empty(&vars, "APP_SECRET_ARN").map(str::to_owned) {
            let client = secrets_client(&vars)?;
            vars.extend(read_secret(&client, &arn).await?);
        }
        Self::from_vars(&vars)
    }

    /// Parses the variables; only `DATABASE_URL` is required by every function.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let secret = |name| non_empty(vars, name).map(Secret::new);
        let offline_after = whole(vars, "OFFLINE_AFTER_SECONDS", 1, 7 * 86_400)?
            .unwrap_or(DEFAULT_OFFLINE_AFTER_SECONDS as i64);
        let retention_days =
            whole(vars, "RETENTION_DAYS", 1, 36_500)?.map_or(DEFAULT_RETENTION_DAYS, |n| n as i32);
        let aggregate_retention_days =
            whole(vars, "AGGREGATE_RETENTION_DAYS", 1, 36_500)?.map(|n| n as i32);
        if aggregate_retention_days.is_some_and(|days| days < retention_days) {
            return Err(ConfigError::Invalid {
                name: "AGGREGATE_RETENTION_DAYS",
                reason: "must not be less than RETENTION_DAYS (rollups of the readings kept read the aggregates)".into(),
            });
        }
        let default = Limits::default();
        let limit = |name, default: i32| -> Result<i32, ConfigError> {
            Ok(whole(vars, name, 1, 1_000_000)?.map_or(default, |n| n as i32))
        };
        let limits = Limits {
            devices_per_user: limit("LIMIT_DEVICES_PER_USER", default.devices_per_user)?,
            rules_per_device: limit("LIMIT_RULES_PER_DEVICE", default.rules_per_device)?,
            metrics_per_device: limit("LIMIT_METRICS_PER_DEVICE", default.metrics_per_device)?,
            ingest_rate_per_device: rate(vars, "INGEST_RATE_PER_DEVICE")?
                .unwrap_or(default.ingest_rate_per_device),
            ingest_burst_per_device: whole(vars, "INGEST_BURST_PER_DEVICE", 1, 1_000_000)?
                .map_or(default.ingest_burst_per_device, |n| n as f64),
        };
        let in_lambda = non_empty(vars, "AWS_LAMBDA_FUNCTION_NAME").is_some()
            && non_empty(vars, "AWS_LAMBDA_LOG_GROUP_NAME").is_some();
        let allow_private_targets = flag(vars, "NOTIFY_ALLOW_PRIVATE_TARGETS")?;
        if in_lambda && allow_private_targets {
            return Err(ConfigError::Invalid {
                name: "NOTIFY_ALLOW_PRIVATE_TARGETS",
                reason: "is for local development and tests only, never in Lambda".into(),
            });
        }
        Ok(Self {
            database_url: secret("DATABASE_URL").ok_or(ConfigError::Missing("DATABASE_URL"))?,
            database_url_direct: secret("DATABASE_URL_DIRECT"),
            database_url_read: secret("DATABASE_URL_READ"),
            clerk_jwt_key: secret("CLERK_JWT_KEY"),
            clerk_jwks_url: non_empty(vars, "CLERK_JWKS_URL").map(str::to_owned),
            clerk_issuer: non_empty(vars, "CLERK_ISSUER").map(str::to_owned),
            clerk_authorized_parties: non_empty(vars, "CLERK_AUTHORIZED_PARTIES")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            clerk_webhook_secret: secret("CLERK_WEBHOOK_SECRET"),
            offline_after: Duration::from_secs(offline_after as u64),
            retention_days,
            aggregate_retention_days,
            limits,
            notify: Notify {
                email_from: non_empty(vars, "NOTIFY_EMAIL_FROM").map(str::to_owned),
                allow_private_targets,
                aws: AwsAccess::from_vars(vars, "AWS_ENDPOINT_URL_SESV2").ok(),
            },
            in_lambda,
        })
    }

    /// For the webhook function, which cannot start without it.
    pub fn require_clerk_webhook_secret(&self) -> Result<&Secret, ConfigError> {
        self.clerk_webhook_secret
            .as_ref()
            .ok_or(ConfigError::Missing("CLERK_WEBHOOK_SECRET"))
    }

    /// For the functions that only read (`rollups`): the replica, else the pooled URL.
    pub fn read_url(&self) -> &Secret {
        self.database_url_read
            .as_ref()
            .unwrap_or(&self.database_url)
    }

    /// For the migrate command: the direct URL, else the pooled one.
    pub fn migration_url(&self) -> &Secret {
        self.database_url_direct
            .as_ref()
            .unwrap_or(&self.database_url)
    }
}

/// An optional rate per second: a decimal from 0 to 1,000,000 (`0.1` is one every 10 s).
fn rate(vars: &HashMap<String, String>, name: &'static str) -> Result<Option<f64>, ConfigError> {
    non_empty(vars, name)
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1_000_000.0).contains(r))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: "expected a number of requests per second from 0 to 1000000".into(),
                })
        })
        .transpose()
}

/// An optional whole number in `min..=max`; anything else stops the function naming `name`.
fn whole(
    vars: &HashMap<String, String>,
    name: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    non_empty(vars, name)
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("expected a whole number between {min} and {max}"),
                })
        })
        .transpose()
}

/// An optional `true` or `false` (default `false`).
fn flag(vars: &HashMap<String, String>, name: &'static str) -> Result<bool, ConfigError> {
    match non_empty(vars, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            name,
            reason: "expected true or false".into(),
        }),
    }
}

fn non_empty<'a>(vars: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A Secrets Manager client from the variables Lambda sets (`AWS_REGION` and the execution
/// role's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and
/// `AWS_ENDPOINT_URL` for a local stand-in. No credential-provider chain: it would cost cold-start
/// time and binary size for sources a Lambda function never uses.
fn secrets_client(
    vars: &HashMap<String, String>,
) -> Result<aws_sdk_secretsmanager::Client, ConfigError> {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let access = AwsAccess::from_vars(vars, "AWS_ENDPOINT_URL_SECRETS_MANAGER")?;
    let credentials = Credentials::new(
        access.access_key_id,
        access.secret_access_key.expose(),
        access.session_token.map(|t| t.expose().to_owned()),
        None,
        "environment",
    );
    let mut config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(access.region))
        .credentials_provider(credentials);
    if let Some(url) = access.endpoint_url {
        config = config.endpoint_url(url);
    }
    Ok(aws_sdk_secretsmanager::Client::from_conf(config.build()))
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<HashMap<String, String>, ConfigError> {
    let fail = |reason: String| ConfigError::Secret {
        arn: arn.to_owned(),
        reason,
    };
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    let text = output
        .secret_string()
        .ok_or_else(|| fail("the secret has no SecretString".into()))?;
    parse_secret(text).map_err(fail)
}

/// A secret is a JSON object; its string (or number) values for known keys become variables.
fn parse_secret(text: &str) -> Result<HashMap<String, String>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| "the secret is not a JSON object".to_owned())?;
    let mut vars = HashMap::new();
    for (key, value) in object {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("the value of {key} must be a string")),
        };
        vars.insert(key, value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn database_url_is_required_and_named() {
        let err = Config::from_vars(&vars(&[("DATABASE_URL", "  ")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required configuration variable DATABASE_URL"
        );
    }

    #[test]
    fn defaults_and_lists() {
        let config = Config::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://u:p@h/db"),
            (
                "CLERK_AUTHORIZED_PARTIES",
                "https://a.example, https://b.example,,",
            ),
        ]))
        .unwrap();
        assert_eq!(config.offline_after, Duration::from_secs(300));
        assert_eq!(
            config.clerk_authorized_parties,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.migration_url().expose(), "postgres://u:p@h/db");
        assert!(matches!(
            config.require_clerk_webhook_secret(),
            Err(ConfigError::Missing("CLERK_WEBHOOK_SECRET"))
        ));
    }

    #[test]
    fn bad_offline_after_is_named() {
        let err = Config::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("OFFLINE_AFTER_SECONDS", "soon"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("OFFLINE_AFTER_SECONDS"), "{err}");
    }

    #[test]
    fn reads_go_to_the_replica_when_there_is_one() {
        let base = ("DATABASE_URL", "postgres://primary/db");
        let config = Config::from_vars(&vars(&[base])).unwrap();
        assert_eq!(config.read_url().expose(), "postgres://primary/db");
        let config = Config::from_vars(&vars(&[
            base,
            ("DATABASE_URL_READ", "postgres://replica/db"),
        ]))
        .unwrap();
        assert_eq!(config.read_url().expose(), "postgres://replica/db");
    }

    #[test]
    fn retention_defaults_to_400_days_and_a_bad_one_is_named() {
        let base = ("DATABASE_URL", "postgres://h/db");
        assert_eq!(
            Config::from_vars(&vars(&[base])).unwrap().retention_days,
            400
        );
        let config = Config::from_vars(&vars(&[base, ("RETENTION_DAYS", "30")])).unwrap();
        assert_eq!(config.retention_days, 30);
        for bad in ["0", "forever", "36501"] {
            let err = Config::from_vars(&vars(&[base, ("RETENTION_DAYS", bad)])).unwrap_err();
            assert!(err.to_string().contains("RETENTION_DAYS"), "{err}");
        }
        assert_eq!(
            Config::from_vars(&vars(&[base]))
                .unwrap()
                .aggregate_retention_days,
            None
        );
        let config = Config::from_vars(&vars(&[base, ("AGGREGATE_RETENTION_DAYS", "3650")]));
        assert_eq!(config.unwrap().aggregate_retention_days, Some(3650));
        let err =
            Config::from_vars(&vars(&[base, ("AGGREGATE_RETENTION_DAYS", "30")])).unwrap_err();
        assert!(
            err.to_string().contains("AGGREGATE_RETENTION_DAYS"),
            "{err}"
        );
    }

    #[test]
    fn limits_default_and_bad_ones_are_named() {
        let config = Config::from_vars(&vars(&[("DATABASE_URL", "postgres://h/db")])).unwrap();
        assert_eq!(config.limits, Limits::default());
        let config = Config::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("LIMIT_RULES_PER_DEVICE", "5"),
            ("INGEST_RATE_PER_DEVICE", "0"),
        ]))
        .unwrap();
        assert_eq!(config.limits.rules_per_device, 5);
        assert_eq!(config.limits.ingest_rate_per_device, 0.0);
        for (name, value) in [
            ("LIMIT_DEVICES_PER_USER", "0"),
            ("LIMIT_METRICS_PER_DEVICE", "many"),
            ("INGEST_BURST_PER_DEVICE", "0"),
            ("INGEST_RATE_PER_DEVICE", "-1"),
            ("INGEST_RATE_PER_DEVICE", "NaN"),
            ("INGEST_RATE_PER_DEVICE", "fast"),
        ] {
            let err =
                Config::from_vars(&vars(&[("DATABASE_URL", "postgres://h/db"), (name, value)]))
                    .unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn private_targets_are_off_by_default_and_refused_in_lambda() {
        let base = [("DATABASE_URL", "postgres://h/db")];
        let config = Config::from_vars(&vars(&base)).unwrap();
        assert!(!config.notify.allow_private_targets);
        let allowed = [base[0], ("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")];
        assert!(
            Config::from_vars(&vars(&allowed))
                .unwrap()
                .notify
                .allow_private_targets
        );
        let vague = [base[0], ("NOTIFY_ALLOW_PRIVATE_TARGETS", "yes")];
        let err = Config::from_vars(&vars(&vague)).unwrap_err();
        assert!(
            err.to_string().contains("NOTIFY_ALLOW_PRIVATE_TARGETS"),
            "{err}"
        );
        let in_lambda = [
            allowed[0],
            allowed[1],
            ("AWS_LAMBDA_FUNCTION_NAME", "devices"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/devices"),
        ];
        let err = Config::from_vars(&vars(&in_lambda)).unwrap_err();
        assert!(
            err.to_string().contains("NOTIFY_ALLOW_PRIVATE_TARGETS"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::from_vars(&vars(&[
            ("DATABASE_URL", "postgres://user:hunter2@host/db"),
            ("CLERK_WEBHOOK_SECRET", "whsec_topsecret"),
        ]))
        .unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("topsecret"),
            "{shown}"
        );
    }

    #[test]
    fn secret_json_fills_known_keys_only() {
        let parsed = parse_secret(
            r#"{"DATABASE_URL":"postgres://x","OFFLINE_AFTER_SECONDS":60,"OTHER":"y"}"#,
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["OFFLINE_AFTER_SECONDS"], "60");
        assert!(parse_secret("not json").is_err());
        assert!(parse_secret(r#"{"DATABASE_URL":{"nested":1}}"#).is_err());
    }
}
