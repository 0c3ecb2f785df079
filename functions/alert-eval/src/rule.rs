//! The rule logic in plain Rust: a metric's reading history and a rule → what the evaluation
//! does ([`evaluate`]), and what a sequence of passes does as readings arrive ([`Replay`]). The
//! SQL in `sql.rs` computes the same thing set-based and incrementally; the tests check they agree.

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;
use shared::domain::Comparator;

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub comparator: Comparator,
    pub threshold: Decimal,
    pub for_seconds: i64,
    pub clear_threshold: Option<Decimal>,
}

/// What one evaluation concludes about a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The condition holds on the latest reading and has held for `for_seconds` of reading
    /// time: a rule without a firing alert fires, with this value.
    pub breaching: Option<Decimal>,
    /// The latest reading is back (past `clear_threshold` when there is one): a firing alert
    /// resolves.
    pub clears: bool,
}

/// `history` is one metric's readings in ascending time. No readings: nothing happens.
///
/// The rule is breaching when the latest reading breaches and the unbroken run of breaching
/// readings that ends with it started at least `for_seconds` before it (reading time, so a
/// late upload of old readings decides exactly as if they had arrived live).
pub fn evaluate(history: &[(DateTime<Utc>, Decimal)], rule: &Rule) -> Verdict {
    let Some(&(latest_at, latest)) = history.last() else {
        return Verdict {
            breaching: None,
            clears: false,
        };
    };
    let breaches = |v: Decimal| rule.comparator.breaches(v, rule.threshold);
    let run_start = history
        .iter()
        .rev()
        .take_while(|(_, value)| breaches(*value))
        .last()
        .map(|(at, _)| *at);
    let held =
        run_start.is_some_and(|start| start <= latest_at - TimeDelta::seconds(rule.for_seconds));
    let clears = match rule.clear_threshold {
        Some(clear) => rule.comparator.cleared(latest, clear),
        None => !breaches(latest),
    };
    Verdict {
        breaching: held.then_some(latest),
        clears,
    }
}

/// An alert as the passes raise it: the reading times at which it fired and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    pub fired_at: DateTime<Utc>,
    pub value: Decimal,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What a sequence of evaluation passes does for one rule, as readings arrive in any order and
/// grouping: the first pass judges the rule on its latest reading; every later pass replays, in
/// reading-time order, the readings newer than any it had judged, each judged on the readings
/// present up to its time. Readings older than that only count for later judgements.
#[derive(Debug, Clone)]
pub struct Replay {
    rule: Rule,
    present: Vec<(DateTime<Utc>, Decimal)>,
    latest: Option<DateTime<Utc>>,
    built: bool,
    pub episodes: Vec<Episode>,
}

impl Replay {
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            present: Vec::new(),
            latest: None,
            built: false,
            episodes: Vec::new(),
        }
    }

    /// The readings that arrived since the previous pass, then the pass.
    pub fn pass(&mut self, arrived: &[(DateTime<Utc>, Decimal)]) {
        self.present.extend_from_slice(arrived);
        self.present.sort_by_key(|(at, _)| *at);
        if !self.built {
            // The first pass builds the rule's state on what is there: one judgement, at the latest.
            self.built = true;
            if let Some(&(at, _)) = self.present.last() {
                self.judge(at);
            }
            return;
        }
        let mut newer: Vec<DateTime<Utc>> = arrived
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| self.latest.is_none_or(|latest| *at > latest))
            .collect();
        newer.sort();
        for at in newer {
            self.judge(at);
        }
    }

    pub fn firing(&self) -> bool {
        self.episodes
            .last()
            .is_some_and(|e| e.resolved_at.is_none())
    }

    /// Judges the rule with the reading at `at` as the latest.
    fn judge(&mut self, at: DateTime<Utc>) {
        let upto = self.present.partition_point(|(t, _)| *t <= at);
        let verdict = evaluate(&self.present[..upto], &self.rule);
        let firing = self.firing();
        match (firing, verdict.breaching) {
            (false, Some(value)) => self.episodes.push(Episode {
                fired_at: at,
                value,
                resolved_at: None,
            }),
            (true, _) if verdict.clears => {
                if let Some(open) = self.episodes.last_mut() {
                    open.resolved_at = Some(at);
                }
            }
            _ => {}
        }
        self.latest = Some(self.latest.map_or(at, |latest| latest.max(at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_687_200 + seconds, 0).unwrap()
    }

    fn history(points: &[(i64, i64)]) -> Vec<(DateTime<Utc>, Decimal)> {
        points
            .iter()
            .map(|(s, v)| (at(*s), Decimal::from(*v)))
            .collect()
    }

    fn gt(threshold: i64, for_seconds: i64, clear: Option<i64>) -> Rule {
        Rule {
            comparator: Comparator::Gt,
            threshold: Decimal::from(threshold),
            for_seconds,
            clear_threshold: clear.map(Decimal::from),
        }
    }

    #[test]
    fn no_readings_do_nothing() {
        let v = evaluate(&[], &gt(80, 0, None));
        assert_eq!(
            v,
            Verdict {
                breaching: None,
                clears: false
            }
        );
    }

    #[test]
    fn for_seconds_is_measured_in_reading_time() {
        let rule = gt(80, 300, None);
        assert_eq!(
            evaluate(&history(&[(0, 81), (299, 82)]), &rule).breaching,
            None,
            "299 s"
        );
        assert_eq!(
            evaluate(&history(&[(0, 81), (300, 82)]), &rule).breaching,
            Some(Decimal::from(82))
        );
        // One non-breaching reading in between restarts the run.
        assert_eq!(
            evaluate(&history(&[(0, 81), (100, 80), (150, 81), (400, 82)]), &rule).breaching,
            None
        );
        assert_eq!(
            evaluate(&history(&[(0, 81), (100, 80), (150, 81), (450, 82)]), &rule).breaching,
            Some(Decimal::from(82))
        );
    }

    #[test]
    fn hysteresis() {
        let rule = gt(80, 0, Some(75));
        assert_eq!(
            evaluate(&history(&[(0, 81)]), &rule).breaching,
            Some(Decimal::from(81))
        );
        let v = evaluate(&history(&[(0, 81), (60, 78)]), &rule);
        assert_eq!(
            v,
            Verdict {
                breaching: None,
                clears: false
            },
            "78 keeps it firing"
        );
        assert!(evaluate(&history(&[(0, 81), (60, 78), (120, 75)]), &rule).clears);
        // Without a clear threshold, back across the threshold resolves.
        assert!(evaluate(&history(&[(0, 81), (60, 80)]), &gt(80, 0, None)).clears);
    }
}
