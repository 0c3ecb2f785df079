//! The scheduled evaluation of every alert rule (function `alert-eval`), once a minute.
//!
//! A pass is a few kinds of short statements (see `sql.rs` for the algorithm and `rule.rs` for
//! the same logic in plain Rust): build the state of new and changed rules, fold the readings that
//! arrived since the previous pass into the rules' states (raising and resolving alerts at the
//! readings where conditions begin and end), fire `absent` rules, mark quiet devices offline,
//! keep the readings' monthly partitions (ahead of time, and dropped past retention), purge the
//! readings of deleted devices, fold the hourly aggregates of whole days into daily ones, and
//! deliver the notifications that are due.
//! Each step works in bounded chunks, each its own transaction, within a time budget; what does
//! not fit is left for the next pass and counted in `rules_pending`. Overlapping passes take turns
//! chunk by chunk and add up to what one pass would do.

pub mod rule;
pub mod sql;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc};
use serde::Serialize;
use shared::config::Config;
use shared::db::{Db, DbError, Idempotence, Sql, Timeouts, Tx};
use shared::notify::Notifier;
use shared::notify::deliver::{self, Sent};
use tokio_postgres::error::SqlState;

pub use shared::notify::Clock;

/// How a pass spends its invocation (the function's timeout is 60 s).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// No new chunk starts after this much of the invocation.
    pub time: Duration,
    /// One chunk, on the server (`statement_timeout`, raised for the chunk's transaction only);
    /// the client waits a little longer (`Timeouts::statement`), so that an overlong chunk is
    /// cancelled cleanly by the server (and retried smaller) rather than cut off by the client.
    pub chunk_timeout: Duration,
    /// Rules built per chunk at first; halved after a slow or cancelled chunk, doubled after a quick one.
    pub build_chunk: i64,
    /// Readings folded per chunk.
    pub arrival_chunk: i64,
    /// Readings of deleted devices purged per chunk.
    pub purge_chunk: i64,
    /// Unfolded hours whose days are folded into daily aggregates per chunk.
    pub fold_chunk: i32,
    /// Arrivals are folded up to this long before now (and never past the database's clock less
    /// this): every ingest statement that began before then has finished (the server bounds it at
    /// 12 s), so no reading becomes visible behind the progress mark. `absent` rules are judged as
    /// of then too.
    pub arrival_margin: Duration,
    /// No notification attempt starts after this much of the invocation (an attempt that has
    /// started ends within its 5 s timeout, well inside the function's 60 s).
    pub deliver_until: Duration,
    pub delivery: deliver::Plan,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            time: Duration::from_secs(35),
            chunk_timeout: Duration::from_secs(15),
            build_chunk: 2_000,
            arrival_chunk: 50_000,
            purge_chunk: 10_000,
            fold_chunk: 20_000,
            arrival_margin: Duration::from_secs(15),
            deliver_until: Duration::from_secs(48),
            delivery: deliver::Plan::default(),
        }
    }
}

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub offline_after: Duration,
    pub retention_days: i32,
    pub aggregate_retention_days: Option<i32>,
    pub budget: Budget,
    pub clock: Clock,
    pub notifier: Notifier,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, BoxError> {
        let notifier = Notifier::new(&config.notify);
        Self::with(config, Budget::default(), Arc::new(Utc::now), notifier)
    }

    pub fn with(
        config: &Config,
        budget: Budget,
        clock: Clock,
        notifier: Notifier,
    ) -> Result<Self, BoxError> {
        let timeouts = Timeouts {
            statement: budget.chunk_timeout + Duration::from_secs(2),
            ..Timeouts::default()
        };
        Ok(Self {
            db: Db::with_timeouts(&config.database_url, timeouts)?,
            offline_after: config.offline_after,
            retention_days: config.retention_days,
            aggregate_retention_days: config.aggregate_retention_days,
            budget,
            clock,
            notifier,
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one pass did; returned to the caller and logged.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rules whose verdict this pass brought up to date (built, or with new readings).
    pub rules_evaluated: i64,
    pub fired: i64,
    pub resolved: i64,
    pub devices_offline: i64,
    /// Rules left for the next pass (not built yet, or with readings not folded yet).
    pub rules_pending: i64,
    /// Notifications delivered and failed for good in this pass, and the whole count
    /// (attempted, delivered, failed, retrying), of this pass's events and earlier ones due.
    pub notifications_sent: i64,
    pub notifications_failed: i64,
    pub notifications: Sent,
    /// Rows of deleted devices (readings and their hourly and daily aggregates) removed in this
    /// pass.
    pub purged_rows: i64,
    /// Daily aggregates written from the hours of whole days (new days, and days that took late
    /// readings).
    pub days_folded: i64,
    pub duration_ms: u64,
}

impl Summary {
    fn add(&mut self, step: sql::Step) {
        self.rules_evaluated += step.rules;
        self.fired += step.fired;
        self.resolved += step.resolved;
    }
}

/// Takes the EventBridge scheduled event, or any JSON (a manual `cargo lambda invoke`): the
/// event's content does not matter, the pass always evaluates "now".
pub async fn handle(state: &State, _event: serde_json::Value) -> Result<Summary, DbError> {
    let started = Instant::now();
    let now = (state.clock)();
    let budget = state.budget;
    let horizon = now - TimeDelta::from_std(budget.arrival_margin).unwrap_or_default();
    let in_time = || started.elapsed() < budget.time;
    let mut summary = Summary::default();
    let mut complete = true;

    // First the readings that arrived since the previous pass.
    while in_time() {
        let step = chunked(state, "arrivals", |tx| async move {
            let after = sql::lock_progress(&tx).await?;
            sql::fold_arrivals(
                &tx,
                after,
                horizon,
                budget.arrival_chunk,
                now,
                budget.arrival_margin,
            )
            .await
        })
        .await?;
        match step {
            Some(step) => {
                summary.add(step);
                if !step.full {
                    break;
                }
            }
            None => {
                complete = false;
                break;
            }
        }
    }
    // Then new and changed rules, cheapest first, in chunks sized by how long the last one took
    // (after the arrivals, so that rebuilding an expensive rule delays nobody's new readings).
    let mut chunk = budget.build_chunk;
    loop {
        if !in_time() {
            complete = false;
            break;
        }
        let step_started = Instant::now();
        let step = chunked(state, "build", |tx| async move {
            sql::lock_progress(&tx).await?;
            sql::build(&tx, now, chunk).await
        })
        .await?;
        let Some(step) = step else {
            if chunk == 1 {
                // One rule's window is more than a chunk can scan: leave it for the next pass.
                complete = false;
                break;
            }
            chunk = (chunk / 2).max(1);
            continue;
        };
        summary.add(step);
        chunk = resize(chunk, step_started.elapsed(), budget.build_chunk);
        if !step.full {
            break;
        }
    }

    if !in_time() {
        complete = false;
    }

    // Silences can only be judged once every arrival up to the horizon is folded.
    if complete {
        summary.fired += chunked(state, "absent", |tx| async move {
            sql::absent(&tx, now, horizon).await
        })
        .await?
        .unwrap_or_default();
    }
    summary.devices_offline += chunked(state, "offline", |tx| async move {
        sql::offline(&tx, now, state.offline_after).await
    })
    .await?
    .unwrap_or_default();
    // States of deleted rules are harmless (everything that reads a state joins its rule), and
    // finding them is an anti-join over every state (43 ms at 100k rules): every tenth minute.
    if now.minute().is_multiple_of(10) {
        chunked(state, "forget deleted rules", |tx| async move {
            sql::forget_deleted(&tx).await
        })
        .await?;
    }
    chunked(state, "forget old events", |tx| async move {
        sql::forget_old_events(&tx, now).await
    })
    .await?;
    if !complete {
        summary.rules_pending = chunked(state, "pending", |tx| async move {
            sql::pending(&tx, horizon).await
        })
        .await?
        .unwrap_or_default();
    }

    // The data's lifecycle: partitions ahead and past retention, then what deleted devices left.
    let step = |statement: &'static Sql, what| {
        chunked(state, what, move |tx| async move {
            sql::partitions(&tx, statement, now, state.retention_days).await
        })
    };
    let made = step(&sql::MAKE_PARTITIONS, "make partitions").await?;
    let dropped = step(&sql::DROP_PARTITIONS, "drop partitions").await?;
    let (made, dropped) = (made.unwrap_or_default(), dropped.unwrap_or_default());
    if made + dropped > 0 {
        tracing::info!(made, dropped, "reading partitions");
    }
    if let Some(days) = state.aggregate_retention_days {
        let before = midnight(now - TimeDelta::days(days.into()));
        chunked(state, "forget old aggregates", |tx| async move {
            sql::forget_old_aggregates(&tx, before).await
        })
        .await?;
    }
    while in_time() {
        let purged = chunked(state, "purge", |tx| async move {
            sql::purge(&tx, budget.purge_chunk).await
        })
        .await?;
        match purged {
            Some(Some(rows)) => summary.purged_rows += rows,
            _ => break,
        }
    }
    // Then the whole days with hours not yet in their day's row (late readings included).
    while in_time() {
        let folded = chunked(state, "fold days", |tx| async move {
            sql::fold_days(&tx, now, budget.fold_chunk).await
        })
        .await?;
        match folded {
            Some(days) if days > 0 => summary.days_folded += i64::from(days),
            _ => break,
        }
    }

    // Then what is due to be sent, this pass's events and any earlier ones (including those of
    // a pass that ended before it could send them).
    summary.notifications = deliver::deliver_due(
        &state.db,
        &state.notifier,
        &state.clock,
        budget.delivery,
        started + budget.deliver_until,
    )
    .await?;
    summary.notifications_sent = summary.notifications.delivered;
    summary.notifications_failed = summary.notifications.failed;

    summary.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        rules_evaluated = summary.rules_evaluated,
        fired = summary.fired,
        resolved = summary.resolved,
        devices_offline = summary.devices_offline,
        rules_pending = summary.rules_pending,
        notifications_sent = summary.notifications_sent,
        notifications_failed = summary.notifications_failed,
        notifications_retrying = summary.notifications.retrying,
        purged_rows = summary.purged_rows,
        days_folded = summary.days_folded,
        duration_ms = summary.duration_ms,
        "alert evaluation"
    );
    Ok(summary)
}

/// The UTC midnight that starts `t`'s day.
fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// One chunk in its own transaction with the raised statement bound. A chunk that meets a
/// deadlock, a serialization failure or a lock wait past `lock_timeout` is tried once more; if it
/// fails again, or runs past its bound (cancelled by the server), the step is left for the next
/// pass (`Ok(None)`; a build then goes on with smaller chunks) instead of losing the whole pass.
/// Any other error is a bug and ends the pass.
async fn chunked<T, F, Fut>(state: &State, what: &str, work: F) -> Result<Option<T>, DbError>
where
    F: Fn(Tx) -> Fut,
    Fut: Future<Output = Result<T, DbError>>,
{
    for attempt in 1..=2 {
        let result = state
            .db
            .transaction(Idempotence::Idempotent, |tx| {
                let work = &work;
                async move {
                    sql::raise_timeout(&tx, state.budget.chunk_timeout).await?;
                    work(tx).await
                }
            })
            .await;
        match result {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.code() == Some(&SqlState::QUERY_CANCELED) => {
                tracing::warn!(%error, step = what, "evaluation chunk ran past its bound");
                return Ok(None);
            }
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, attempt, step = what, "evaluation chunk failed, retrying once");
            }
            Err(error) => return Err(error),
        }
    }
    tracing::warn!(
        step = what,
        "evaluation chunk failed twice, left for the next pass"
    );
    Ok(None)
}

fn is_transient(error: &DbError) -> bool {
    [
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::LOCK_NOT_AVAILABLE,
    ]
    .iter()
    .any(|code| error.code() == Some(code))
}

/// The next build chunk: half after a chunk that took over 2 s, double (up to the configured
/// size) after one under half a second.
fn resize(chunk: i64, took: Duration, max: i64) -> i64 {
    if took > Duration::from_secs(2) {
        (chunk / 2).max(1)
    } else if took < Duration::from_millis(500) {
        (chunk * 2).min(max)
    } else {
        chunk
    }
}
