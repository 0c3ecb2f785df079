//! A fake Lambda Runtime API (the HTTP interface a Lambda function polls) on loopback, enough to
//! start a real function binary, hand it events, and time what it does (the benchmark, the
//! freeze-and-thaw test).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Notify};

#[derive(Default)]
struct Inner {
    events: VecDeque<String>,
    first_next_at: Option<Instant>,
    /// When each event was handed out and when its answer came back, in order.
    handed_out: Vec<Instant>,
    answered: Vec<(Instant, String)>,
}

#[derive(Clone)]
pub struct RuntimeApi {
    pub address: String,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address").to_string();
        let api = Self {
            address,
            inner: Arc::default(),
            changed: Arc::default(),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let api = server.clone();
                tokio::spawn(async move { api.serve(socket).await });
            }
        });
        api
    }

    /// A command that starts `binary` as Lambda does function `name`, polling this API: a clean
    /// environment with Lambda's own variables. The caller adds the function's configuration.
    pub fn command(&self, binary: &std::path::Path, name: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &self.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .kill_on_drop(true);
        command
    }

    pub async fn push(&self, event: String) {
        self.inner.lock().await.events.push_back(event);
        self.changed.notify_waiters();
    }

    /// Waits until the function first asks for an event.
    pub async fn first_next(&self) -> Instant {
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self.inner.lock().await.first_next_at {
                return at;
            }
            notified.await;
        }
    }

    /// Waits for `n` answers; returns (handed out, answered, body) of each.
    pub async fn answers(&self, n: usize) -> Vec<(Instant, Instant, String)> {
        loop {
            let notified = self.changed.notified();
            {
                let inner = self.inner.lock().await;
                if inner.answered.len() >= n {
                    return inner
                        .handed_out
                        .iter()
                        .zip(&inner.answered)
                        .map(|(out, (at, body))| (*out, *at, body.clone()))
                        .collect();
                }
            }
            notified.await;
        }
    }

    async fn serve(&self, socket: tokio::net::TcpStream) {
        let (read, mut write) = socket.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut request_line = String::new();
            if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                return;
            }
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    content_length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; content_length];
            if read.read_exact(&mut body).await.is_err() {
                return;
            }
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let response = if method == "GET" && path.ends_with("/runtime/invocation/next") {
                let event = self.next_event().await;
                let id = uuid::Uuid::new_v4();
                let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nlambda-runtime-aws-request-id: {id}\r\n\
                     lambda-runtime-deadline-ms: {deadline}\r\n\
                     lambda-runtime-invoked-function-arn: arn:aws:lambda:eu-west-1:123456789012:function:bench\r\n\
                     lambda-runtime-trace-id: Root=1-6745a1c0-3f1e2d4c5b6a798012345678;Sampled=0\r\n\
                     content-length: {}\r\n\r\n{event}",
                    event.len()
                )
            } else {
                if method == "POST" && (path.ends_with("/response") || path.ends_with("/error")) {
                    let mut inner = self.inner.lock().await;
                    inner
                        .answered
                        .push((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
                    drop(inner);
                    self.changed.notify_waiters();
                }
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"status\":\"OK\"}"
                    .to_owned()
            };
            if write.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// The next event, waiting (as Lambda does) until there is one.
    async fn next_event(&self) -> String {
        loop {
            let notified = self.changed.notified();
            {
                let mut inner = self.inner.lock().await;
                if inner.first_next_at.is_none() {
                    inner.first_next_at = Some(Instant::now());
                    self.changed.notify_waiters();
                }
                if let Some(event) = inner.events.pop_front() {
                    inner.handed_out.push(Instant::now());
                    return event;
                }
            }
            notified.await;
        }
    }
}

/// An API Gateway event for `ingest`, as the Runtime API hands it out: one reading at
/// 2026-11-26T10:`minute`:00Z, sent with `key`.
pub fn ingest_event(key: &str, minute: u32) -> String {
    let body = serde_json::json!({"readings": [{"metric": "t", "value": minute, "recorded_at": format!("2026-11-26T10:{minute:02}:00Z")}]});
    crate::Event::load("ingest")
        .header("authorization", &format!("Bearer {key}"))
        .json_body(&body)
        .json()
        .to_string()
}

/// The HTTP status of a function's answer to an API Gateway event (0 when it has none).
pub fn status_of(answer: &str) -> u64 {
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap_or_default();
    answer["statusCode"].as_u64().unwrap_or(0)
}
