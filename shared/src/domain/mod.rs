//! Types that parse instead of validate: once you hold a `Metric`, it is a valid metric.
//! Each `parse` says what is wrong in a sentence fit for the `message` of a `422`.

mod decimal;
mod device_key;
mod device_name;
mod metric;
mod rule;

pub use decimal::DecimalValue;
pub use device_key::DeviceKey;
pub use device_name::DeviceName;
pub use metric::Metric;
pub use rule::{Comparator, Condition, ForSeconds};

/// `t` to whole microseconds: what a Postgres `timestamptz` keeps, so that what the API reports
/// is what is stored.
pub fn whole_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Whether `t` is a time the API takes and gives: years 0000 to 9999, what RFC 3339 can write.
/// Unix milliseconds and cursors can name times far outside it, some of them before the earliest
/// one Postgres keeps (4713 BC).
pub fn in_rfc3339_range(t: chrono::DateTime<chrono::Utc>) -> bool {
    (0..=9999).contains(&chrono::Datelike::year(&t))
}

/// Why a value was refused; becomes the `message` of a `422 validation_failed`
/// (`Invalid::at`, in `http`: the domain knows nothing of HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub std::borrow::Cow<'static, str>);

impl Invalid {
    pub fn new(message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
