use rust_decimal::Decimal;

use super::Invalid;

/// How a rule compares a reading with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Comparator {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "gt" => Ok(Self::Gt),
            "lt" => Ok(Self::Lt),
            "gte" => Ok(Self::Gte),
            "lte" => Ok(Self::Lte),
            _ => Err(Invalid::new("comparator is one of gt, lt, gte, lte")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gt => "gt",
            Self::Lt => "lt",
            Self::Gte => "gte",
            Self::Lte => "lte",
        }
    }

    /// Whether `value` breaches `threshold`.
    pub fn breaches(self, value: Decimal, threshold: Decimal) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Lt => value < threshold,
            Self::Gte => value >= threshold,
            Self::Lte => value <= threshold,
        }
    }

    /// Whether `value` is back at or past `clear_threshold` (hysteresis).
    pub fn cleared(self, value: Decimal, clear_threshold: Decimal) -> bool {
        match self {
            Self::Gt | Self::Gte => value <= clear_threshold,
            Self::Lt | Self::Lte => value >= clear_threshold,
        }
    }

    /// A clear threshold must lie on the safe side: below the threshold for gt/gte, above it
    /// for lt/lte.
    pub fn check_clear_threshold(self, threshold: Decimal, clear: Decimal) -> Result<(), Invalid> {
        match self {
            Self::Gt | Self::Gte if clear >= threshold => Err(Invalid::new(
                "for gt and gte rules, clear_threshold must be below threshold",
            )),
            Self::Lt | Self::Lte if clear <= threshold => Err(Invalid::new(
                "for lt and lte rules, clear_threshold must be above threshold",
            )),
            _ => Ok(()),
        }
    }
}

/// What a rule watches: a reading compared with a threshold, or the absence of readings
/// (`absent`: none of the metric has arrived for `for_seconds` of server time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Threshold(Comparator),
    Absent,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "absent" => Ok(Self::Absent),
            _ => Comparator::parse(text)
                .map(Self::Threshold)
                .map_err(|_| Invalid::new("comparator is one of gt, lt, gte, lte, absent")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold(comparator) => comparator.as_str(),
            Self::Absent => "absent",
        }
    }
}

/// How long, in the readings' own time, a condition must hold before it fires: 0–86400 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForSeconds(i32);

impl ForSeconds {
    pub const MAX: i64 = 86_400;

    pub fn parse(value: &serde_json::Value) -> Result<Self, Invalid> {
        value
            .as_i64()
            .filter(|s| (0..=Self::MAX).contains(s))
            .and_then(|s| i32::try_from(s).ok())
            .map(Self)
            .ok_or_else(|| Invalid::new("for_seconds is a whole number from 0 to 86400"))
    }

    pub fn get(self) -> i32 {
        self.0
    }

    /// An `absent` rule waits at least a minute (one evaluation pass) for a reading.
    pub const MIN_ABSENT: i32 = 60;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn each_comparator_at_below_and_above_the_threshold() {
        let t = d("80");
        let cases = [
            (Comparator::Gt, [false, false, true]),
            (Comparator::Gte, [false, true, true]),
            (Comparator::Lt, [true, false, false]),
            (Comparator::Lte, [true, true, false]),
        ];
        for (comparator, expected) in cases {
            let got = [d("79.999"), d("80.000"), d("80.001")].map(|v| comparator.breaches(v, t));
            assert_eq!(got, expected, "{comparator:?}");
        }
    }

    #[test]
    fn clear_threshold_side() {
        assert!(
            Comparator::Gt
                .check_clear_threshold(d("80"), d("75"))
                .is_ok()
        );
        assert!(
            Comparator::Gt
                .check_clear_threshold(d("80"), d("80"))
                .is_err()
        );
        assert!(
            Comparator::Lte
                .check_clear_threshold(d("10"), d("12"))
                .is_ok()
        );
        assert!(
            Comparator::Lte
                .check_clear_threshold(d("10"), d("9"))
                .is_err()
        );
        assert!(Comparator::Gt.cleared(d("75"), d("75")));
        assert!(!Comparator::Gt.cleared(d("75.1"), d("75")));
        assert!(Comparator::Lt.cleared(d("12"), d("12")));
    }

    #[test]
    fn parsing() {
        assert_eq!(Comparator::parse("gte").unwrap().as_str(), "gte");
        for bad in ["", "GT", "eq", "gt "] {
            assert!(Comparator::parse(bad).is_err());
        }
        assert_eq!(ForSeconds::parse(&json!(300)).unwrap().get(), 300);
        for bad in [
            json!(-1),
            json!(86401),
            json!(1.5),
            json!("300"),
            json!(null),
        ] {
            assert!(ForSeconds::parse(&bad).is_err(), "{bad}");
        }
    }
}
