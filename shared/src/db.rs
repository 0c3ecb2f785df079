//! The one Postgres connection of a Lambda instance.
//!
//! Production reaches Neon through its PgBouncer pooler in transaction mode, so:
//! - every statement is sent unnamed with its parameter types (`query_typed`): one round trip,
//!   nothing prepared that a later transaction could miss;
//! - no bare `Client` leaves this module, so nobody can call `Client::query` (named statements)
//!   or set session state by accident;
//! - the connection is checked after the instance was idle (frozen) for a while, because
//!   `is_closed()` does not notice a socket the pooler closed meanwhile, and replaced when dead;
//! - a statement whose connection died is retried once on a fresh connection only when the
//!   [`Sql`] says it is safe to run twice; otherwise the caller gets [`DbError::Unavailable`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, RwLock};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

use crate::config::Secret;

/// A statement and whether running it twice is harmless.
///
/// Each function's `sql.rs` keeps its statements as constants beside the typed function that
/// runs them, so the retry decision sits next to the SQL it is about.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    text: &'static str,
    idempotence: Idempotence,
}

impl Sql {
    /// Reads, and writes whose repetition changes nothing (`ON CONFLICT DO NOTHING`, upserts
    /// guarded by a version): retried once on a fresh connection if the first died.
    pub const fn idempotent(text: &'static str) -> Self {
        Self {
            text,
            idempotence: Idempotence::Idempotent,
        }
    }

    /// Writes that must not happen twice, and writes whose answer would change if repeated (a
    /// delete: run again after a lost reply it finds nothing and the caller would answer `404`
    /// for a delete that succeeded): never retried, a dead connection is a `503`.
    pub const fn once(text: &'static str) -> Self {
        Self {
            text,
            idempotence: Idempotence::Once,
        }
    }

    pub const fn text(&self) -> &'static str {
        self.text
    }
}

/// One statement parameter with its Postgres type, as `query_typed` needs it.
pub type Param<'a> = (&'a (dyn ToSql + Sync), Type);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database (or the pooler) cannot be reached or dropped us: the caller should retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement reached the server and failed there (constraint, bad data, a bug).
    #[error(transparent)]
    Query(#[from] tokio_postgres::Error),
    /// `query_typed_one` / `query_typed_opt` got more (or fewer) rows than the statement promises: a bug.
    #[error("expected one row, got {0}")]
    RowCount(usize),
}

impl DbError {
    /// The constraint the server named, when it refused the statement for one.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Self::Query(e) => e.as_db_error()?.constraint(),
            Self::Unavailable(_) | Self::RowCount(_) => None,
        }
    }

    /// The SQLSTATE, when the server refused the statement.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Query(e) => e.code(),
            Self::Unavailable(_) | Self::RowCount(_) => None,
        }
    }
}

/// Timeouts of the connection; the defaults fit a Lambda function with a 15 s timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS + authentication, all together.
    pub connect: Duration,
    /// One statement, from send to last row; past it the connection is dropped (state unknown).
    pub statement: Duration,
    /// Idle time after which the connection is checked before use (a frozen instance).
    pub idle_check_after: Duration,
    /// How long the liveness check may take before the connection counts as dead.
    pub check: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            statement: Duration::from_secs(10),
            idle_check_after: Duration::from_secs(60),
            check: Duration::from_secs(2),
        }
    }
}

/// The connection of this instance: cheap to share by reference, opened on first use.
pub struct Db {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    timeouts: Timeouts,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    live: Option<Live>,
    /// How many connections this instance has opened so far.
    opened: u64,
}

enum Want {
    Rows,
    Count,
}

enum Outcome {
    Rows(Vec<Row>),
    Count(u64),
}

#[derive(Clone)]
struct Live {
    client: Arc<Client>,
    /// Which connection this is: lets a failed caller drop exactly the connection it saw
    /// fail, not a fresh one another task opened meanwhile.
    generation: u64,
    last_used: Arc<std::sync::Mutex<Instant>>,
    /// Single statements share the connection (pipelined); a transaction has it to itself.
    gate: Arc<RwLock<()>>,
    /// Set when a transaction was abandoned half-way (its future dropped): the connection may
    /// still be inside it, so it is never used again.
    poisoned: Arc<AtomicBool>,
}

impl Db {
    /// Parses the URL; connects on first use. TLS (rustls, webpki roots) is required unless the
    /// URL says `sslmode=disable` (local use): no silent fallback to plain TCP.
    pub fn new(url: &Secret) -> Result<Self, DbError> {
        Self::with_timeouts(url, Timeouts::default())
    }

    pub fn with_timeouts(url: &Secret, timeouts: Timeouts) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = url
            .expose()
            .parse()
            // The parse error may quote the URL, password included: say only that it is bad.
            .map_err(|_| {
                DbError::Unavailable("the database URL is not a valid Postgres URL".into())
            })?;
        config
            .connect_timeout(timeouts.connect)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(timeouts.statement + Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name(
                std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                    .unwrap_or_else(|_| "iot-telemetry".into()),
            );
        }
        let tls = tls_for(&mut config);
        Ok(Self {
            config,
            tls,
            timeouts,
            slot: Mutex::new(Slot::default()),
        })
    }

    /// Rows of a statement.
    pub async fn query_typed(&self, sql: &Sql, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        match self.run(sql, params, Want::Rows).await? {
            Outcome::Rows(rows) => Ok(rows),
            Outcome::Count(_) => unreachable!("rows were asked for"),
        }
    }

    /// The one row of a statement that returns exactly one.
    pub async fn query_typed_one(&self, sql: &Sql, params: &[Param<'_>]) -> Result<Row, DbError> {
        exactly_one(self.query_typed(sql, params).await?)
    }

    /// The row of a statement that returns at most one.
    pub async fn query_typed_opt(
        &self,
        sql: &Sql,
        params: &[Param<'_>],
    ) -> Result<Option<Row>, DbError> {
        let rows = self.query_typed(sql, params).await?;
        if rows.is_empty() {
            Ok(None)
        } else {
            exactly_one(rows).map(Some)
        }
    }

    /// The number of rows a statement changed.
    pub async fn execute_typed(&self, sql: &Sql, params: &[Param<'_>]) -> Result<u64, DbError> {
        match self.run(sql, params, Want::Count).await? {
            Outcome::Count(n) => Ok(n),
            Outcome::Rows(_) => unreachable!("a count was asked for"),
        }
    }

    /// Runs `work` in one transaction (`BEGIN` … `COMMIT`, `ROLLBACK` on error) with the
    /// connection to itself. For work that needs a fresh snapshot between statements or locks
    /// held across them; everything else is one statement.
    ///
    /// If the connection dies, an `Idempotence::Idempotent` transaction is run once more on a
    /// fresh connection (it cannot have half-committed: commit is all or nothing, and a lost
    /// `COMMIT` reply is exactly the case where repeating must be harmless).
    pub async fn transaction<T, Fut>(
        &self,
        idempotence: Idempotence,
        work: impl Fn(Tx) -> Fut,
    ) -> Result<T, DbError>
    where
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let live = self.acquire().await?;
            let result = {
                let _exclusive = live.gate.write().await;
                let abandoned = AbandonGuard(&live.poisoned);
                let tx = Tx {
                    client: live.client.clone(),
                    timeouts: self.timeouts,
                };
                let result = tx.run(&work).await;
                std::mem::forget(abandoned);
                result
            };
            match result {
                Ok(value) => {
                    live.touch();
                    return Ok(value);
                }
                Err(DbError::Unavailable(reason)) => {
                    self.discard(&live).await;
                    tracing::warn!(%reason, attempt, ?idempotence, "transaction lost its connection");
                    if idempotence == Idempotence::Once || attempt > 1 {
                        return Err(DbError::Unavailable(reason));
                    }
                }
                Err(error) => {
                    live.touch();
                    return Err(error);
                }
            }
        }
    }

    /// Which connection is in use (1 for the first, 2 after one replacement, …).
    pub async fn generation(&self) -> u64 {
        self.slot.lock().await.opened
    }

    /// Runs the statement; on a dead connection, reconnects and (if idempotent) runs it again.
    async fn run(&self, sql: &Sql, params: &[Param<'_>], want: Want) -> Result<Outcome, DbError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let live = self.acquire().await?;
            let _shared = live.gate.read().await;
            let statement = async {
                match want {
                    Want::Rows => live
                        .client
                        .query_typed(sql.text, params)
                        .await
                        .map(Outcome::Rows),
                    Want::Count => live
                        .client
                        .execute_typed(sql.text, params)
                        .await
                        .map(Outcome::Count),
                }
            };
            match tokio::time::timeout(self.timeouts.statement, statement).await {
                Ok(Ok(outcome)) => {
                    live.touch();
                    return Ok(outcome);
                }
                Ok(Err(error)) if !is_connection_failure(&error) => {
                    live.touch();
                    return Err(DbError::Query(error));
                }
                Ok(Err(error)) => {
                    self.discard(&live).await;
                    tracing::warn!(%error, attempt, idempotence = ?sql.idempotence, "database connection failed");
                    if sql.idempotence == Idempotence::Once || attempt > 1 {
                        return Err(DbError::Unavailable(error.to_string()));
                    }
                }
                Err(_elapsed) => {
                    // The server may still be working on it: the connection's state is unknown.
                    self.discard(&live).await;
                    return Err(DbError::Unavailable(format!(
                        "statement took longer than {:?}",
                        self.timeouts.statement
                    )));
                }
            }
        }
    }

    /// The live connection, opened or replaced as needed. Holding the lock while connecting
    /// keeps it to one connection per instance, even under concurrent callers.
    async fn acquire(&self) -> Result<Live, DbError> {
        let mut slot = self.slot.lock().await;
        if let Some(live) = slot.live.as_ref() {
            let usable = !live.client.is_closed() && !live.poisoned.load(Ordering::Acquire);
            if usable && self.still_alive(live).await {
                return Ok(live.clone());
            }
            tracing::info!(
                generation = slot.opened,
                "replacing dead database connection"
            );
            slot.live = None;
        }
        let client = self.connect().await?;
        slot.opened += 1;
        let live = Live {
            client: Arc::new(client),
            generation: slot.opened,
            last_used: Arc::new(std::sync::Mutex::new(Instant::now())),
            gate: Arc::new(RwLock::new(())),
            poisoned: Arc::new(AtomicBool::new(false)),
        };
        slot.live = Some(live.clone());
        Ok(live)
    }

    /// After an idle spell (a frozen instance, a suspended Neon compute), one cheap round trip.
    async fn still_alive(&self, live: &Live) -> bool {
        if live.idle_for() < self.timeouts.idle_check_after {
            return true;
        }
        let checked =
            tokio::time::timeout(self.timeouts.check, live.client.check_connection()).await;
        let alive = matches!(checked, Ok(Ok(())));
        if alive {
            live.touch();
        }
        alive
    }

    /// Forgets the connection that failed, unless another caller already replaced it.
    async fn discard(&self, failed: &Live) {
        let mut slot = self.slot.lock().await;
        if slot
            .live
            .as_ref()
            .is_some_and(|live| live.generation == failed.generation)
        {
            slot.live = None;
        }
    }

    async fn connect(&self) -> Result<Client, DbError> {
        let started = Instant::now();
        let client =
            tokio::time::timeout(self.timeouts.connect, open(&self.config, self.tls.as_ref()))
                .await
                .map_err(|_| {
                    DbError::Unavailable(format!(
                        "connect took longer than {:?}",
                        self.timeouts.connect
                    ))
                })?
                .map_err(|e| DbError::Unavailable(e.to_string()))?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database connected"
        );
        Ok(client)
    }
}

/// A plain client on the direct URL, for migrations only: not for the pooled URL.
pub(crate) async fn connect_direct(url: &Secret) -> Result<Client, DbError> {
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|_| DbError::Unavailable("the database URL is not a valid Postgres URL".into()))?;
    let tls = tls_for(&mut config);
    tokio::time::timeout(Timeouts::default().connect, open(&config, tls.as_ref()))
        .await
        .map_err(|_| DbError::Unavailable("connect timed out".into()))?
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Connects and spawns the task that drives the connection.
async fn open(
    config: &tokio_postgres::Config,
    tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<Client, tokio_postgres::Error> {
    match tls {
        Some(tls) => {
            let (client, connection) = config.connect(tls.clone()).await?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
        None => {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
    }
}

/// Whether a statement or transaction may be run a second time after its connection died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    Idempotent,
    Once,
}

/// A transaction in progress, handed to the work of [`Db::transaction`]. It can only run
/// statements; `BEGIN`, `COMMIT` and `ROLLBACK` are the caller's.
#[derive(Clone)]
pub struct Tx {
    client: Arc<Client>,
    timeouts: Timeouts,
}

impl Tx {
    pub async fn query_typed(&self, sql: &Sql, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        self.bounded(self.client.query_typed(sql.text, params))
            .await
    }

    pub async fn query_typed_one(&self, sql: &Sql, params: &[Param<'_>]) -> Result<Row, DbError> {
        exactly_one(self.query_typed(sql, params).await?)
    }

    pub async fn execute_typed(&self, sql: &Sql, params: &[Param<'_>]) -> Result<u64, DbError> {
        self.bounded(self.client.execute_typed(sql.text, params))
            .await
    }

    /// Binary `COPY … FROM STDIN` of `rows` (values of `types`, in order). Only here, inside a
    /// transaction: the pooler keeps the server connection for the whole copy.
    pub async fn copy_in(
        &self,
        sql: &str,
        types: &[Type],
        rows: &[Vec<&(dyn ToSql + Sync)>],
    ) -> Result<u64, DbError> {
        let copy = async {
            let sink = self.client.copy_in::<_, bytes::Bytes>(sql).await?;
            let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
            let mut writer = std::pin::pin!(writer);
            for row in rows {
                writer.as_mut().write(row).await?;
            }
            writer.finish().await
        };
        self.bounded(copy).await
    }

    async fn run<T, Fut>(&self, work: &impl Fn(Tx) -> Fut) -> Result<T, DbError>
    where
        Fut: Future<Output = Result<T, DbError>>,
    {
        self.bounded(self.client.batch_execute("BEGIN")).await?;
        match work(self.clone()).await {
            Ok(value) => {
                self.bounded(self.client.batch_execute("COMMIT")).await?;
                Ok(value)
            }
            Err(error) => {
                // A dead connection rolls back by itself; a live one is told to.
                if !matches!(error, DbError::Unavailable(_)) {
                    self.bounded(self.client.batch_execute("ROLLBACK")).await?;
                }
                Err(error)
            }
        }
    }

    /// One step under the statement timeout; a connection failure becomes `Unavailable`.
    async fn bounded<T>(
        &self,
        step: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.timeouts.statement, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_connection_failure(&error) => {
                Err(DbError::Unavailable(error.to_string()))
            }
            Ok(Err(error)) => Err(DbError::Query(error)),
            Err(_elapsed) => Err(DbError::Unavailable(format!(
                "statement took longer than {:?}",
                self.timeouts.statement
            ))),
        }
    }
}

/// The one row of a statement that promises exactly one; anything else is a bug.
fn exactly_one(mut rows: Vec<Row>) -> Result<Row, DbError> {
    match rows.len() {
        1 => Ok(rows.remove(0)),
        n => Err(DbError::RowCount(n)),
    }
}

/// Poisons the connection if a transaction's future is dropped before it finished.
/// Forgotten (not dropped) when the transaction finishes.
struct AbandonGuard<'a>(&'a AtomicBool);

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Live {
    fn touch(&self) {
        if let Ok(mut at) = self.last_used.lock() {
            *at = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or(Duration::MAX)
    }
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::warn!(%error, "database connection closed");
    }
}

/// TLS unless the URL says `sslmode=disable`: the driver's default (`prefer`) would fall back to
/// plain TCP when the server (or someone in between) declines TLS, so it becomes `require`.
fn tls_for(
    config: &mut tokio_postgres::Config,
) -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
    if config.get_ssl_mode() == SslMode::Disable {
        return None;
    }
    config.ssl_mode(SslMode::Require);
    Some(tls_connector())
}

fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Whether the error means the connection (not the statement) is at fault: the socket is gone,
/// or the server/pooler says it is shutting down or cannot serve us now.
fn is_connection_failure(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No server error: an I/O failure on the socket (conversion errors are bugs, but they
        // never happen on a healthy connection either way and are not retried twice).
        None => std::error::Error::source(error)
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some()),
    }
}
