//! Sending notifications (feature `notify`: the `alert-eval` and `devices` functions).
//!
//! Events and their deliveries are written by the database in the statements that cause them
//! (migration V6, the outbox). This module sends them: [`deliver`] claims what is due and records
//! each attempt; [`Notifier::send`] makes one attempt at one channel (a signed webhook, a Slack
//! message or an SES email) and says what came of it; [`guard`] decides where a request may go.

pub mod deliver;
pub mod guard;
mod sql;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Notify;

/// Where "now" comes from: the system clock in Lambda, a chosen time in tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Every attempt gives up after this long (the contract's 5 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a channel sends, as stored (`type`, `target`, `signing_secret`).
#[derive(Debug, Clone)]
pub enum Target {
    Webhook { url: String, secret: String },
    Slack { url: String },
    Email { to: String },
}

impl Target {
    /// From a channel row's columns; `None` for a row that does not make sense (never written).
    pub fn from_columns(kind: &str, target: &Value, secret: Option<String>) -> Option<Self> {
        let field = |name: &str| target.get(name)?.as_str().map(str::to_owned);
        Some(match kind {
            "webhook" => Self::Webhook {
                url: field("url")?,
                secret: secret?,
            },
            "slack" => Self::Slack { url: field("url")? },
            "email" => Self::Email { to: field("to")? },
            _ => return None,
        })
    }
}

/// A new webhook signing secret, the Standard Webhooks way: `whsec_` and 32 random bytes in base64.
pub fn new_signing_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source works");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// One event on its way to one channel.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub delivery_id: Uuid,
    pub channel_id: Uuid,
    pub event_id: Uuid,
    /// The event JSON, exactly as the webhook body carries it.
    pub payload: Value,
    /// Attempts made before this one.
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub target: Target,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Timeout, connection error, 5xx, 408 or 429: try again later (not before `after`, the
    /// receiver's `Retry-After`, when it gave one).
    Retry {
        after: Option<Duration>,
    },
    /// Any other 4xx, a 3xx (never followed), or a target that may not be reached.
    Failed,
    /// `410 Gone`: failed, and the channel is disabled.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

impl Attempt {
    fn error(outcome: Outcome, error: impl Into<String>) -> Self {
        Self {
            outcome,
            status_code: None,
            error: Some(error.into()),
        }
    }
}

/// Built once per cold start: one HTTP client (guarded resolver, no redirects, no proxy, 5 s per
/// attempt) and, when email is configured, one SES client.
/// The HTTP and SES clients are built on first use, not at start-up: building them (the TLS
/// roots, the SDK's configuration) cost a cold start of `devices` and `alert-eval` about 10 ms,
/// which most invocations never use.
pub struct Notifier {
    http: OnceLock<Result<reqwest::Client, String>>,
    timeout: Duration,
    allow_private: bool,
    email: Option<Email>,
}

struct Email {
    aws: crate::config::AwsAccess,
    client: OnceLock<aws_sdk_sesv2::Client>,
    from: String,
}

impl Notifier {
    pub fn new(config: &Notify) -> Self {
        Self::with_timeout(config, ATTEMPT_TIMEOUT)
    }

    /// Tests shorten the attempt timeout; everything else is as in Lambda.
    pub fn with_timeout(config: &Notify, timeout: Duration) -> Self {
        let email = match (&config.email_from, &config.aws) {
            (Some(from), Some(aws)) => Some(Email {
                aws: aws.clone(),
                client: OnceLock::new(),
                from: from.clone(),
            }),
            _ => None,
        };
        Self {
            http: OnceLock::new(),
            timeout,
            allow_private: config.allow_private_targets,
            email,
        }
    }

    /// The guarded HTTP client, built once.
    fn http(&self) -> Result<&reqwest::Client, &str> {
        self.http
            .get_or_init(|| {
                crate::install_crypto_provider();
                reqwest::Client::builder()
                    .dns_resolver(guard::GuardedResolver {
                        allow_private: self.allow_private,
                    })
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout)
                    .user_agent("iot-telemetry-notifications/1")
                    .build()
                    .map_err(|e| format!("the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// One attempt. Never fails: what went wrong is in the [`Attempt`].
    pub async fn send(&self, out: &Outbound) -> Attempt {
        let message = Message::of(&out.payload);
        match &out.target {
            Target::Webhook { url, secret } => {
                let body = out.payload.to_string();
                let timestamp = Utc::now().timestamp();
                let signature = match svix::webhooks::Webhook::new(secret)
                    .and_then(|w| w.sign(&out.event_id.to_string(), timestamp, body.as_bytes()))
                {
                    Ok(signature) => signature,
                    Err(e) => return Attempt::error(Outcome::Failed, format!("signing: {e}")),
                };
                let mut headers = HeaderMap::new();
                let values = [
                    ("webhook-id", out.event_id.to_string()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ];
                for (name, value) in values {
                    if let Ok(value) = value.parse() {
                        headers.insert(name, value);
                    }
                }
                self.post(url, headers, body).await
            }
            Target::Slack { url } => {
                let body = json!({
                    "text": format!("{}: {}", message.title, message.detail),
                    "blocks": [
                        {"type": "section", "text": {"type": "mrkdwn",
                            "text": format!("*{}*\n{}", slack_escape(&message.title),
                                            slack_escape(&message.detail))}},
                        {"type": "context", "elements": [{"type": "mrkdwn",
                            "text": format!("{} · {}", message.kind, message.at)}]}
                    ]
                });
                self.post(url, HeaderMap::new(), body.to_string()).await
            }
            Target::Email { to } => self.email(to, &message).await,
        }
    }

    async fn post(&self, url: &str, mut headers: HeaderMap, body: String) -> Attempt {
        // The scheme and a literal address are checked here; names by the resolver.
        let url = match guard::check_url(url, self.allow_private) {
            Ok(url) => url,
            Err(e) => return Attempt::error(Outcome::Failed, e.to_string()),
        };
        headers.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let http = match self.http() {
            Ok(http) => http,
            Err(e) => return Attempt::error(Outcome::Retry { after: None }, e.to_owned()),
        };
        let response = match http.post(url).headers(headers).body(body).send().await {
            Ok(response) => response,
            Err(e) => return request_error(&e),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Attempt {
            outcome: classify(status, retry_after),
            status_code: Some(i32::from(status.as_u16())),
            error: (!status.is_success()).then(|| {
                if status.is_redirection() {
                    format!("{status}: redirects are not followed")
                } else {
                    status.to_string()
                }
            }),
        }
    }

    async fn email(&self, to: &str, message: &Message) -> Attempt {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as Mail};
        let Some(email) = &self.email else {
            return Attempt::error(
                Outcome::Failed,
                "email is not configured (NOTIFY_EMAIL_FROM)",
            );
        };
        let content = |text: String| Content::builder().data(text).charset("UTF-8").build();
        let html = format!(
            "<p><strong>{}</strong></p><p>{}</p><p style=\"color:#555\">{} · {}</p>",
            html_escape(&message.title),
            html_escape(&message.detail),
            html_escape(&message.kind),
            html_escape(&message.at)
        );
        let text = format!(
            "{}\n\n{}\n\n{} · {}\n",
            message.title, message.detail, message.kind, message.at
        );
        let (Ok(subject), Ok(text), Ok(html)) =
            (content(message.title.clone()), content(text), content(html))
        else {
            return Attempt::error(Outcome::Failed, "could not build the email");
        };
        let mail = Mail::builder()
            .subject(subject)
            .body(Body::builder().text(text).html(html).build())
            .build();
        let sent = email
            .client
            .get_or_init(|| ses_client(&email.aws))
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().to_addresses(to).build())
            .content(EmailContent::builder().simple(mail).build())
            .send()
            .await;
        match sent {
            Ok(_) => Attempt {
                outcome: Outcome::Delivered,
                status_code: None,
                error: None,
            },
            Err(e) => {
                let permanent = e.as_service_error().is_some_and(|s| {
                    s.is_message_rejected()
                        || s.is_bad_request_exception()
                        || s.is_mail_from_domain_not_verified_exception()
                        || s.is_account_suspended_exception()
                        || s.is_sending_paused_exception()
                });
                let outcome = if permanent {
                    Outcome::Failed
                } else {
                    Outcome::Retry { after: None }
                };
                Attempt::error(
                    outcome,
                    aws_sdk_sesv2::error::DisplayErrorContext(e).to_string(),
                )
            }
        }
    }
}

/// A request that got no answer: a refused target fails for good; anything else (timeout,
/// connection refused or reset, TLS) is retried.
fn request_error(error: &reqwest::Error) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<guard::TargetError>() {
            return Attempt::error(Outcome::Failed, refused.to_string());
        }
        source = e.source();
    }
    let what = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        format!("could not connect: {}", innermost(error))
    } else {
        innermost(error)
    };
    Attempt::error(Outcome::Retry { after: None }, what)
}

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The contract's rules for an answer.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        410 => Outcome::Gone,
        408 | 429 | 500..=599 => Outcome::Retry { after: retry_after },
        _ => Outcome::Failed,
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// The words of a notification (Slack and email), from the event JSON.
struct Message {
    kind: String,
    at: String,
    title: String,
    detail: String,
}

impl Message {
    fn of(event: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let kind = text(&event["type"]).unwrap_or_default();
        let at = text(&event["occurred_at"]).unwrap_or_default();
        let device = text(&event["device"]["name"])
            .or_else(|| text(&event["device"]["id"]))
            .unwrap_or_else(|| "a device".into());
        let alert = &event["alert"];
        let rule = &event["rule"];
        let metric = text(&alert["metric"]).unwrap_or_default();
        let condition = match (
            text(&rule["comparator"]).as_deref(),
            text(&rule["threshold"]),
        ) {
            (Some("absent"), _) => format!(
                "no reading of {metric} for {} s",
                rule["for_seconds"].as_i64().unwrap_or_default()
            ),
            (Some(op), Some(threshold)) => {
                let sign = match op {
                    "gt" => ">",
                    "gte" => "≥",
                    "lt" => "<",
                    "lte" => "≤",
                    other => other,
                };
                let held = rule["for_seconds"].as_i64().unwrap_or_default();
                let held = if held > 0 {
                    format!(" for {held} s")
                } else {
                    String::new()
                };
                format!("{metric} {sign} {threshold}{held}")
            }
            _ => metric.clone(),
        };
        let value = text(&alert["value"])
            .map(|v| format!(" (value {v})"))
            .unwrap_or_default();
        let (title, detail) = match kind.as_str() {
            "alert.firing" => (
                format!("Firing on {device}: {metric}"),
                format!("{condition}{value}"),
            ),
            "alert.resolved" => (
                format!("Resolved on {device}: {metric}"),
                format!("{condition} no longer holds"),
            ),
            "alert.acknowledged" => (
                format!("Acknowledged on {device}: {metric}"),
                match text(&alert["comment"]) {
                    Some(comment) => format!("{condition}. Comment: {comment}"),
                    None => condition,
                },
            ),
            "device.offline" => (
                format!("{device} is offline"),
                "No reading arrived for a while.".into(),
            ),
            "device.online" => (
                format!("{device} is back online"),
                "Readings are arriving again.".into(),
            ),
            _ => (
                "Test notification".into(),
                "This channel works: notifications will arrive here.".into(),
            ),
        };
        Self {
            kind,
            at,
            title,
            detail,
        }
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ses_client(aws: &crate::config::AwsAccess) -> aws_sdk_sesv2::Client {
    use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
    let credentials = Credentials::new(
        aws.access_key_id.clone(),
        aws.secret_access_key.expose().to_owned(),
        aws.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "environment",
    );
    let mut config = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(aws.region.clone()))
        .credentials_provider(credentials);
    if let Some(url) = &aws.endpoint_url {
        config = config.endpoint_url(url);
    }
    aws_sdk_sesv2::Client::from_conf(config.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        let code = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(classify(code(204), None), Outcome::Delivered);
        assert_eq!(classify(code(410), None), Outcome::Gone);
        assert_eq!(classify(code(400), None), Outcome::Failed);
        assert_eq!(classify(code(302), None), Outcome::Failed);
        assert_eq!(classify(code(500), None), Outcome::Retry { after: None });
        assert_eq!(classify(code(408), None), Outcome::Retry { after: None });
        let two_minutes = Some(Duration::from_secs(120));
        assert_eq!(
            classify(code(429), two_minutes),
            Outcome::Retry { after: two_minutes }
        );
        assert_eq!(parse_retry_after("120"), two_minutes);
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn messages_read_well() {
        let event = json!({
            "type": "alert.firing", "occurred_at": "2026-12-03T10:00:00.000000Z",
            "device": {"id": "d", "name": "Boiler"},
            "alert": {"metric": "temperature", "value": "81.5"},
            "rule": {"comparator": "gt", "threshold": "80", "for_seconds": 60}
        });
        let m = Message::of(&event);
        assert_eq!(m.title, "Firing on Boiler: temperature");
        assert_eq!(m.detail, "temperature > 80 for 60 s (value 81.5)");
        let test = Message::of(&json!({"type": "test"}));
        assert_eq!(test.title, "Test notification");
    }
}
