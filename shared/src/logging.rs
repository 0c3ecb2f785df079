//! Logging to standard output, which Lambda sends to CloudWatch: JSON lines when Lambda's
//! advanced logging controls say `AWS_LAMBDA_LOG_FORMAT=JSON` (template.yaml does), text
//! otherwise; no timestamps or targets (CloudWatch stamps each line).
//!
//! Which events are written:
//! - `AWS_LAMBDA_LOG_LEVEL` (the function's `ApplicationLogLevel`), when set, is the level;
//! - `RUST_LOG` may name levels by module as well, in `tracing`'s `Targets` form:
//!   `warn,shared::db=debug` (a level, then `target=level` pairs, comma-separated). It cannot
//!   filter by span or field, as `EnvFilter` can: that filter needs a regular-expression engine,
//!   which made every binary 0.85 MiB larger;
//! - otherwise `info`.
//!
//! A value that does not parse is ignored (the function still starts, with `info`).

use std::str::FromStr;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the process-wide subscriber, configured from the environment (see the module).
pub fn init() {
    let var = |name| std::env::var(name).ok();
    let filter = filter(
        var("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        var("RUST_LOG").as_deref(),
    );
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_writer(std::io::stdout);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(layer.json()).init();
    } else {
        registry.with(layer).init();
    }
}

/// The filter for `AWS_LAMBDA_LOG_LEVEL` and `RUST_LOG` (see the module).
fn filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let targets = rust_log
        .and_then(|directives| Targets::from_str(directives).ok())
        .unwrap_or_default();
    let lambda_level = lambda_level.and_then(|level| match level.trim() {
        // Lambda's levels are TRACE to FATAL; tracing has no FATAL.
        fatal if fatal.eq_ignore_ascii_case("fatal") => Some(LevelFilter::ERROR),
        level => LevelFilter::from_str(level).ok(),
    });
    let default = lambda_level
        .or(targets.default_level())
        .unwrap_or(LevelFilter::INFO);
    targets.with_default(default)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    /// Whether an event of `target` at `level` is written under `AWS_LAMBDA_LOG_LEVEL` and
    /// `RUST_LOG` as `vars` has them.
    fn writes(vars: (Option<&str>, Option<&str>), target: &str, level: Level) -> bool {
        filter(vars.0, vars.1).would_enable(target, &level)
    }

    #[test]
    fn info_when_nothing_is_set() {
        assert!(writes((None, None), "shared", Level::INFO));
        assert!(!writes((None, None), "shared", Level::DEBUG));
    }

    #[test]
    fn lambdas_level_wins_over_rust_logs_default() {
        assert!(!writes((Some("WARN"), None), "shared", Level::INFO));
        assert!(!writes(
            (Some("warn"), Some("debug")),
            "shared",
            Level::INFO
        ));
        assert!(writes(
            (Some("DEBUG"), None),
            "tokio_postgres",
            Level::DEBUG
        ));
        // Lambda's FATAL is tracing's ERROR.
        assert!(writes((Some("FATAL"), None), "shared", Level::ERROR));
        assert!(!writes((Some("FATAL"), None), "shared", Level::WARN));
    }

    #[test]
    fn rust_log_names_levels_by_module() {
        assert!(writes((None, Some("debug")), "shared", Level::DEBUG));
        let vars = (None, Some("warn,shared::db=debug"));
        assert!(writes(vars, "shared::db", Level::DEBUG));
        assert!(!writes(vars, "shared::auth", Level::INFO));
        // Without a level of its own, INFO for the rest; under Lambda's level, Lambda's.
        let vars = (None, Some("shared::db=trace"));
        assert!(writes(vars, "shared::auth", Level::INFO));
        assert!(!writes(vars, "shared::auth", Level::DEBUG));
        let vars = (Some("ERROR"), Some("shared::db=trace"));
        assert!(writes(vars, "shared::db", Level::TRACE));
        assert!(!writes(vars, "shared::auth", Level::WARN));
    }

    #[test]
    fn what_does_not_parse_is_ignored() {
        let vars = (Some("loud"), Some("shared[span{x=1}]=debug"));
        assert!(writes(vars, "shared", Level::INFO));
        assert!(!writes(vars, "shared", Level::DEBUG));
    }
}
