//! The scheduled evaluation of every alert rule (function `alert-eval`), once a minute.
//!
//! One pass, one SQL statement over all rules (see `sql.rs` for the semantics and
//! `rule.rs` for the same logic in plain Rust). Overlapping passes are harmless: there is never
//! more than one firing alert per rule, and a pass over unchanged data changes nothing.

pub mod rule;
pub mod sql;

use std::time::{Duration, Instant};

use serde::Serialize;
use shared::config::Config;
use shared::db::{Db, DbError, Timeouts};

/// A pass over 100k rules takes well under a second; give it most of the function's 60 s.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(50);

/// Built once per cold start.
pub struct State {
    pub db: Db,
    pub offline_after: Duration,
}

impl State {
    pub fn new(config: &Config) -> Result<Self, DbError> {
        let timeouts = Timeouts {
            statement: PASS_TIMEOUT,
            ..Timeouts::default()
        };
        Ok(Self {
            db: Db::with_timeouts(&config.database_url, timeouts)?,
            offline_after: config.offline_after,
        })
    }
}

/// What one pass did; returned to the caller and logged.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rules_evaluated: i64,
    pub fired: i64,
    pub resolved: i64,
    pub devices_offline: i64,
    pub duration_ms: u64,
}

/// Takes the EventBridge scheduled event, or any JSON (a manual `cargo lambda invoke`): the
/// event's content does not matter, the pass always evaluates "now".
pub async fn handle(state: &State, _event: serde_json::Value) -> Result<Summary, DbError> {
    let started = Instant::now();
    let evaluated = sql::evaluate(&state.db, state.offline_after).await?;
    let summary = Summary {
        rules_evaluated: evaluated.rules_evaluated,
        fired: evaluated.fired,
        resolved: evaluated.resolved,
        devices_offline: evaluated.devices_offline,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        rules_evaluated = summary.rules_evaluated,
        fired = summary.fired,
        resolved = summary.resolved,
        devices_offline = summary.devices_offline,
        duration_ms = summary.duration_ms,
        "alert evaluation"
    );
    Ok(summary)
}
