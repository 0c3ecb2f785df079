//! A local HTTP receiver for webhook and Slack deliveries: a real server on 127.0.0.1 that
//! records every request and answers from a script (then `200`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// The headers as an `http::HeaderMap`, for a Standard Webhooks verifier.
    pub fn header_map(&self) -> lambda_http::http::HeaderMap {
        let mut map = lambda_http::http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                lambda_http::http::HeaderName::from_bytes(name.as_bytes()),
                value.parse(),
            ) {
                map.insert(name, value);
            }
        }
        map
    }
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Waits this long before answering (a slow or hanging receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::on(0).await
    }

    /// On a given port (to come back where a stopped one was).
    pub async fn on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("its address").port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { port, inner, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next requests are answered with these, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().expect("receiver").script.extend(replies);
    }

    /// Every request after the script is answered with this (default `200`).
    pub fn otherwise(&self, reply: Reply) {
        self.inner.lock().expect("receiver").default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver").received.clone()
    }

    pub fn stop(self) -> u16 {
        self.task.abort();
        self.port
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, inner: Arc<Mutex<Inner>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
    let reply = {
        let mut inner = inner.lock().expect("receiver");
        inner.received.push(Received {
            path,
            headers,
            body,
        });
        let fallback = inner.default.clone().unwrap_or_else(|| Reply::status(200));
        inner.script.pop_front().unwrap_or(fallback)
    };
    tokio::time::sleep(reply.delay).await;
    let mut text = format!(
        "HTTP/1.1 {} X\r\ncontent-length: 2\r\nconnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\nok");
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}
