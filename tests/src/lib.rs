//! The integration-test harness: a fresh database per test (a copy of the migrated template)
//! reached through the hostile PgBouncer that `scripts/test` started, and real-shaped Lambda
//! events built from the files in `events/`.

use std::collections::HashMap;
use std::path::PathBuf;

pub mod clerk;
pub mod receiver;
pub mod runtime_api;

use lambda_http::Body;
use shared::config::{Config, Secret};
use shared::db::{Db, Timeouts};
use tokio_postgres::{Client, NoTls};

/// Where `scripts/test` put things; a clear message when a test is run without it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts PostgreSQL and PgBouncer")
    })
}

/// A database of its own for one test, migrated, reachable directly and through the pooler.
pub struct TestDb {
    pub name: String,
    /// A direct connection (not through the pooler) for setting up and checking.
    pub direct: Client,
}

impl TestDb {
    /// A fresh copy of the migrated template.
    pub async fn new() -> Self {
        Self::create(Some(&env("TEST_TEMPLATE_DB"))).await
    }

    /// A fresh database with no schema at all.
    pub async fn empty() -> Self {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(&format!("{}/postgres", env("TEST_DIRECT_BASE"))).await;
        let from = template.map_or(String::new(), |t| format!(" TEMPLATE {t}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}{from}"))
            .await
            .expect("create test database");
        if let Some(template) = template {
            copy_database_settings(&admin, template, &name).await;
        }
        let direct = connect(&format!("{}/{name}", env("TEST_DIRECT_BASE"))).await;
        // Setting up and checking may bulk-load millions of rows: not under the API's bounds.
        direct
            .batch_execute(
                "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0",
            )
            .await
            .expect("lift the bounds for the direct connection");
        Self { name, direct }
    }

    /// The URL through PgBouncer (transaction mode, DISCARD ALL): what the functions get.
    pub fn pooled_url(&self) -> Secret {
        self.pooled_url_via("TEST_POOLED_BASE")
    }

    /// The URL through the pooler whose base URL the variable `base` holds (`TEST_POOLED_BASE`,
    /// or `TEST_NEON_POOLED_BASE`: one configured like Neon's, without the reset).
    pub fn pooled_url_via(&self, base: &str) -> Secret {
        Secret::new(format!("{}/{}?sslmode=disable", env(base), self.name))
    }

    /// This database on the streaming replica, through the replica's PgBouncer: what
    /// `DATABASE_URL_READ` names.
    pub fn replica_url(&self) -> Secret {
        Secret::new(format!(
            "{}/{}?sslmode=disable",
            env("TEST_REPLICA_BASE"),
            self.name
        ))
    }

    /// The direct URL, as migrations get it.
    pub fn direct_url(&self) -> Secret {
        Secret::new(format!(
            "{}/{}?sslmode=disable",
            env("TEST_DIRECT_BASE"),
            self.name
        ))
    }

    /// A new `shared::db::Db` through the pooler: one simulated Lambda instance.
    pub fn db(&self) -> Db {
        Db::new(&self.pooled_url()).expect("pooled URL parses")
    }

    pub fn db_with(&self, timeouts: Timeouts) -> Db {
        Db::with_timeouts(&self.pooled_url(), timeouts).expect("pooled URL parses")
    }

    /// The configuration a function would load, pointing at this database through the pooler,
    /// with the development `CLERK_JWT_KEY` and Svix's test webhook secret unless `extra` says
    /// otherwise.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("CLERK_JWT_KEY".to_owned(), clerk::dev_public_key()),
            (
                "CLERK_WEBHOOK_SECRET".to_owned(),
                clerk::WEBHOOK_SECRET.to_owned(),
            ),
            ("RETENTION_DAYS".to_owned(), retention_days().to_string()),
        ]);
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        vars.insert("DATABASE_URL".into(), self.pooled_url().expose().to_owned());
        vars.insert(
            "DATABASE_URL_DIRECT".into(),
            self.direct_url().expose().to_owned(),
        );
        Config::from_vars(&vars).expect("test configuration is complete")
    }

    /// One pass of the scheduled function at the real clock (evaluation, partitions, purges,
    /// daily aggregates).
    pub async fn pass(&self) -> alert_eval::Summary {
        let state = alert_eval::State::new(&self.config(&[])).expect("alert-eval starts");
        alert_eval::handle(&state, serde_json::json!({}))
            .await
            .expect("a pass")
    }

    /// The hourly aggregates of one series (device, metric), or of every series (`None`),
    /// recomputed from the readings as ingest would have kept them, none folded into days yet
    /// (its daily aggregates are deleted; a pass folds them again): for readings inserted
    /// directly, bypassing ingest.
    pub async fn aggregate(&self, series: Option<(uuid::Uuid, &str)>) {
        let (device, metric) = series.unzip();
        self.aggregate_where(device, metric).await;
    }

    /// The same for every series of one device.
    pub async fn aggregate_device(&self, device: uuid::Uuid) {
        self.aggregate_where(Some(device), None).await;
    }

    async fn aggregate_where(&self, device: Option<uuid::Uuid>, metric: Option<&str>) {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&device, &metric];
        const SERIES: &str =
            "($1::uuid IS NULL OR device_id = $1) AND ($2::text IS NULL OR metric = $2)";
        for table in ["reading_hours", "reading_days"] {
            self.direct
                .execute(&format!("DELETE FROM {table} WHERE {SERIES}"), &params)
                .await
                .expect("the aggregates");
        }
        self.direct
            .execute(
                &format!(
                    "INSERT INTO reading_hours
                     SELECT device_id, metric,
                            date_bin('1 hour', recorded_at, TIMESTAMPTZ '2000-01-03 00:00:00+00'),
                            count(*), sum(value), min(value), max(value),
                            min(recorded_at), (array_agg(value ORDER BY recorded_at))[1],
                            max(recorded_at), (array_agg(value ORDER BY recorded_at DESC))[1]
                     FROM sensor_readings WHERE {SERIES}
                     GROUP BY 1, 2, 3"
                ),
                &params,
            )
            .await
            .expect("the hourly aggregates");
        self.direct
            .batch_execute("ANALYZE reading_hours")
            .await
            .expect("analyze");
    }

    /// A user with one device, made directly; returns the device id and its key.
    pub async fn device(&self, owner: &str) -> (uuid::Uuid, String) {
        let key = shared::domain::DeviceKey::generate();
        let hash = key.hash().to_vec();
        let row = self
            .direct
            .query_one(
                r#"WITH u AS (
                       INSERT INTO "user" (id, device_count) VALUES ($1, 1)
                       ON CONFLICT (id) DO UPDATE SET device_count = "user".device_count + 1
                   ),
                   d AS (
                       INSERT INTO devices (owner_id, name, device_key_hash)
                       VALUES ($1, 'test device', $2)
                       RETURNING id
                   )
                   SELECT id FROM d"#,
                &[&owner, &hash],
            )
            .await
            .expect("seed a device");
        (row.get(0), key.reveal().to_owned())
    }

    /// `SELECT count(*) FROM <table>`, directly.
    pub async fn count(&self, table: &str) -> i64 {
        self.direct
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count rows")
            .get(0)
    }
}

/// `CREATE DATABASE … TEMPLATE` copies the schema but not the settings the migrations set for
/// the database (`ALTER DATABASE … SET`: jit, statement_timeout, …); copy them, so that each
/// test's database behaves like the deployed one.
async fn copy_database_settings(admin: &Client, template: &str, name: &str) {
    let rows = admin
        .query(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s
             JOIN pg_database d ON d.oid = s.setdatabase
             WHERE d.datname = $1 AND s.setrole = 0",
            &[&template],
        )
        .await
        .expect("read the template's settings");
    for row in rows {
        let setting: String = row.get(0);
        let (key, value) = setting.split_once('=').expect("name=value");
        admin
            .batch_execute(&format!("ALTER DATABASE {name} SET {key} = '{value}'"))
            .await
            .expect("copy a database setting");
    }
}

/// A plain client (direct or admin), with its connection driven in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Runs `sql` once on a direct connection of its own and returns the plans `auto_explain`
/// reported for it and for every statement run inside it: what a server-side function (whose
/// plans `EXPLAIN` does not show) actually did.
pub async fn plans_run(
    url: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    let (plans, mut logged) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = plans.send(notice.message().to_owned());
            }
        }
    });
    client
        .batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;
             SET auto_explain.log_nested_statements = on; SET client_min_messages = log",
        )
        .await
        .expect("auto_explain");
    client.query(sql, params).await.expect("the statement");
    // The notices arrive before the statement's answer: all here once it has answered.
    let mut plan = Vec::new();
    while let Ok(message) = logged.try_recv() {
        plan.push(message);
    }
    plan.join("\n")
}

/// Runs a command on PgBouncer's admin console (`SHOW POOLS`, `KILL db`, …), which speaks only
/// the simple query protocol.
pub async fn bouncer_admin(command: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
    let admin = connect(&env("TEST_BOUNCER_ADMIN_URL")).await;
    admin
        .simple_query(command)
        .await
        .unwrap_or_else(|e| panic!("pgbouncer admin `{command}`: {e}"))
}

/// The repository's `events/` folder.
pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// A real-shaped API Gateway HTTP API (payload 2.0) event, loaded from `events/` and adjusted.
#[derive(Debug, Clone)]
pub struct Event(serde_json::Value);

impl Event {
    /// `events/<name>.json`.
    pub fn load(name: &str) -> Self {
        let path = events_dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The raw JSON, as Lambda would deliver it.
    pub fn json(&self) -> &serde_json::Value {
        &self.0
    }

    /// Method and path, keeping the route key as API Gateway would set it (`ANY /v1/…`).
    pub fn at(mut self, method: &str, path: &str) -> Self {
        self.0["rawPath"] = path.into();
        self.0["requestContext"]["http"]["method"] = method.into();
        self.0["requestContext"]["http"]["path"] = path.into();
        self
    }

    /// Signed in as `user` (a fresh development-key session token).
    pub fn as_user(self, user: &str) -> Self {
        self.header("authorization", &format!("Bearer {}", clerk::token(user)))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0["headers"][name.to_ascii_lowercase()] = value.into();
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        if let Some(headers) = self.0["headers"].as_object_mut() {
            headers.remove(&name.to_ascii_lowercase());
        }
        self
    }

    /// A text body (API Gateway sends text bodies as they are).
    pub fn body(mut self, body: &str) -> Self {
        self.0["body"] = body.into();
        self.0["isBase64Encoded"] = false.into();
        self
    }

    /// A binary body, base64-encoded as API Gateway sends non-text bodies.
    pub fn binary_body(mut self, bytes: &[u8]) -> Self {
        use base64::Engine;
        self.0["body"] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
        self.0["isBase64Encoded"] = true.into();
        self
    }

    pub fn json_body(self, body: &serde_json::Value) -> Self {
        self.body(&body.to_string())
    }

    /// The raw query string, e.g. `limit=10&cursor=abc`, also split as API Gateway does.
    pub fn query(mut self, query: &str) -> Self {
        self.0["rawQueryString"] = query.into();
        let mut params = serde_json::Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(k.into(), v.into());
        }
        self.0["queryStringParameters"] = params.into();
        self
    }

    /// `METHOD /path?query body`, for a failing assertion's message (the body cut short).
    pub fn describe(&self) -> String {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let mut body = text(&self.0["body"]);
        if body.len() > 120 {
            let end = (0..=120)
                .rev()
                .find(|&i| body.is_char_boundary(i))
                .unwrap_or(0);
            body.truncate(end);
            body.push('…');
        }
        format!(
            "{} {}?{} {body}",
            text(&self.0["requestContext"]["http"]["method"]),
            text(&self.0["rawPath"]),
            text(&self.0["rawQueryString"]),
        )
    }

    /// The request lambda_http builds from this event, exactly as in Lambda.
    pub fn request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.0.to_string())
            .expect("event is a valid API Gateway v2 event")
    }
}

/// A response's body as JSON (`null` when empty).
pub fn body_json(response: &lambda_http::Response<Body>) -> serde_json::Value {
    match response.body() {
        Body::Empty => serde_json::Value::Null,
        Body::Text(text) => serde_json::from_str(text).expect("JSON body"),
        Body::Binary(bytes) => serde_json::from_slice(bytes).expect("JSON body"),
        _ => panic!("unexpected body kind"),
    }
}

/// What a refused request must answer: a status, its code and (where one field is at fault) the
/// field. One line per case in the refusal tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `400 bad_request` about the body or the request as a whole.
    Bad,
    /// `400 bad_request` naming a query parameter that does not parse.
    BadParam(&'static str),
    /// `401 unauthorized`.
    Unauthorized,
    /// `404 not_found`.
    NotFound,
    /// `405 method_not_allowed`.
    WrongMethod,
    /// `409 limit_reached`.
    AtLimit,
    /// `413 payload_too_large`.
    TooLarge,
    /// `422 validation_failed` naming the field.
    Invalid(&'static str),
}

impl Expect {
    /// Asserts the response is this refusal (see [`assert_error`]).
    pub fn check(self, response: &lambda_http::Response<Body>, case: &str) {
        let (status, code, field) = match self {
            Self::Bad => (400, "bad_request", None),
            Self::BadParam(field) => (400, "bad_request", Some(field)),
            Self::Unauthorized => (401, "unauthorized", None),
            Self::NotFound => (404, "not_found", None),
            Self::WrongMethod => (405, "method_not_allowed", None),
            Self::AtLimit => (409, "limit_reached", None),
            Self::TooLarge => (413, "payload_too_large", None),
            Self::Invalid(field) => (422, "validation_failed", Some(field)),
        };
        assert_eq!(
            response.status().as_u16(),
            status,
            "{case}: {}",
            body_json(response)
        );
        assert_error(response, status, code, field);
    }
}

/// Sends every case to the function that serves its path and checks its refusal. (That nothing
/// was written is the caller's to check, once, after all of them.)
pub async fn check_refusals(
    functions: &Functions,
    cases: impl IntoIterator<Item = (Event, Expect)>,
) {
    for (event, expect) in cases {
        let response = functions.handle(event.request()).await;
        expect.check(&response, &event.describe());
    }
}

/// Asserts an error response: status, `error.code`, and `error.field` (when given).
pub fn assert_error(
    response: &lambda_http::Response<Body>,
    status: u16,
    code: &str,
    field: Option<&str>,
) {
    let body = body_json(response);
    assert_eq!(response.status().as_u16(), status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "error code; body: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "error message; body: {body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "error field; body: {body}"),
        None => assert!(
            body["error"].get("field").is_none(),
            "no field; body: {body}"
        ),
    }
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("application/json")
    );
}

/// A binary of this workspace, built in this test's profile (`scripts/test` builds them all
/// before the tests run).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run scripts/test (or cargo build --workspace --bins)",
        binary.display()
    );
    binary
}

/// The four HTTP functions built from one configuration, and routed as API Gateway routes them:
/// by path, each to the function whose route table has it (the method is the function's
/// business, as every route is `ANY`).
/// The suite's fixed dates lie in 2026 and later (the template database has partitions from
/// 2026-01-01, `scripts/lib/stack.sh`): the retention the tests run with reaches back to then,
/// and at least the default 400 days.
pub const FIXED_DATES_FROM: &str = "2026-01-01T00:00:00Z";

pub fn retention_days() -> i64 {
    let from = chrono::DateTime::parse_from_rfc3339(FIXED_DATES_FROM).expect("constant");
    ((chrono::Utc::now() - from.to_utc()).num_days() + 2).max(400)
}

pub struct Functions {
    pub ingest: ingest::State,
    pub devices: devices::State,
    pub rollups: rollups::State,
    pub webhook: clerk_webhook::State,
}

impl Functions {
    pub fn new(config: &Config) -> Self {
        Self {
            ingest: ingest::State::new(config).expect("ingest starts"),
            devices: devices::State::new(config).expect("devices starts"),
            rollups: rollups::State::new(config).expect("rollups starts"),
            webhook: clerk_webhook::State::new(config).expect("clerk-webhook starts"),
        }
    }

    /// Calls the function that serves the event's path: the status and the body as JSON.
    pub async fn call(&self, event: Event) -> (u16, serde_json::Value) {
        let response = self.handle(event.request()).await;
        (response.status().as_u16(), body_json(&response))
    }

    pub async fn handle(&self, request: lambda_http::Request) -> lambda_http::Response<Body> {
        // A path is a function's when its table matches it: answered, or refused with 405.
        let serves = |routes: &shared::http::Routes| match shared::http::route(routes, &request) {
            Ok(_) => true,
            Err(error) => error.status() == 405,
        };
        if serves(ingest::ROUTES) {
            ingest::handle(&self.ingest, request).await
        } else if serves(devices::ROUTES) {
            devices::handle(&self.devices, request).await
        } else if serves(rollups::ROUTES) {
            rollups::handle(&self.rollups, request).await
        } else if serves(clerk_webhook::ROUTES) {
            clerk_webhook::handle(&self.webhook, request).await
        } else {
            panic!(
                "no function serves {}: API Gateway would answer 404",
                request.uri().path()
            )
        }
    }
}
